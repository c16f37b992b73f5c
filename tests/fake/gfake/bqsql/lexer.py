"""Tokenizer: GoogleSQL text -> [Tok] (identifiers, quoted identifiers,
keywords, numbers, strings, bytes, @named and ? parameters, operators),
each with its position for error messages.
"""
import bisect
import re

from .values import invalid


# Tokenizer

RESERVED = {
    "ALL", "AND", "ANY", "ARRAY", "AS", "ASC", "BETWEEN", "BY", "CASE",
    "CAST", "CROSS", "CURRENT", "DEFAULT", "DESC", "DISTINCT", "ELSE",
    "END", "EXISTS", "FALSE", "FROM", "FULL", "GROUP", "HAVING", "IF", "IN",
    "INNER", "INTERVAL", "INTO", "IS", "JOIN", "LEFT", "LIKE", "LIMIT",
    "MERGE", "NOT", "NULL", "NULLS", "OF", "ON", "OR", "ORDER", "OUTER",
    "RIGHT", "SELECT", "SET", "THEN", "TO", "TRUE", "UNION", "UNNEST",
    "USING", "WHEN", "WHERE", "WITH",
}

_OPS = ["<>", "!=", "<=", ">=", "||", "(", ")", ",", ".", ";", "*", "=",
        "<", ">", "+", "-", "/", "[", "]"]
_ESCAPES = {"n": "\n", "t": "\t", "r": "\r", "\\": "\\", "'": "'",
            '"': '"', "`": "`", "0": "\0", "?": "?", "a": "\a", "b": "\b",
            "f": "\f", "v": "\v"}


class Tok:
    __slots__ = ("kind", "text", "value", "pos")

    # kind: IDENT QIDENT STRING INT FLOAT PARAM QMARK OP EOF
    def __init__(self, kind, text, value, pos):
        self.kind, self.text, self.value, self.pos = kind, text, value, pos

    def describe(self):
        if self.kind == "EOF":
            return "end of input"
        if self.kind == "IDENT":
            if self.text.upper() in RESERVED:
                return "keyword " + self.text.upper()
            return 'identifier "%s"' % self.text
        if self.kind == "QIDENT":
            return "identifier `%s`" % self.text
        if self.kind == "STRING":
            return "string literal %s" % self.text
        if self.kind in ("INT", "FLOAT"):
            return ("integer" if self.kind == "INT" else "floating point") + \
                ' literal "%s"' % self.text
        if self.kind == "PARAM":
            return 'query parameter "%s"' % self.text
        return '"%s"' % self.text


def tokenize(sql):
    line_starts = [0] + [m.end() for m in re.finditer("\n", sql)]

    def pos(i):
        ln = bisect.bisect_right(line_starts, i)
        return (ln, i - line_starts[ln - 1] + 1)

    toks, i, n = [], 0, len(sql)
    while i < n:
        c = sql[i]
        if c.isspace():
            i += 1
        elif c == "#" or sql.startswith("--", i):
            j = sql.find("\n", i)
            i = n if j < 0 else j + 1
        elif sql.startswith("/*", i):
            j = sql.find("*/", i + 2)
            if j < 0:
                raise invalid("Syntax error: Unclosed comment", pos(i))
            i = j + 2
        elif c.isalpha() or c == "_":
            j = i + 1
            while j < n and (sql[j].isalnum() or sql[j] == "_"):
                j += 1
            toks.append(Tok("IDENT", sql[i:j], sql[i:j], pos(i)))
            i = j
        elif c == "`":
            j = sql.find("`", i + 1)
            if j < 0:
                raise invalid("Syntax error: Unclosed identifier literal",
                              pos(i))
            toks.append(Tok("QIDENT", sql[i + 1:j], sql[i + 1:j], pos(i)))
            i = j + 1
        elif c in "'\"":
            j, buf = i + 1, []
            while True:
                if j >= n or sql[j] == "\n":
                    raise invalid("Syntax error: Unclosed string literal",
                                  pos(i))
                if sql[j] == "\\" and j + 1 < n:
                    buf.append(_ESCAPES.get(sql[j + 1], sql[j + 1]))
                    j += 2
                elif sql[j] == c:
                    break
                else:
                    buf.append(sql[j])
                    j += 1
            toks.append(Tok("STRING", sql[i:j + 1], "".join(buf), pos(i)))
            i = j + 1
        elif c.isdigit() or (c == "." and i + 1 < n and sql[i + 1].isdigit()):
            m = re.compile(r"\d*(\.\d*)?([eE][+-]?\d+)?").match(sql, i)
            text = m.group(0)
            if m.group(1) or m.group(2):
                toks.append(Tok("FLOAT", text, float(text), pos(i)))
            else:
                toks.append(Tok("INT", text, int(text), pos(i)))
            i = m.end()
        elif c == "@" and i + 1 < n and (sql[i + 1].isalpha() or
                                         sql[i + 1] in "_`"):
            if sql[i + 1] == "`":
                j = sql.find("`", i + 2)
                if j < 0:
                    raise invalid("Syntax error: Unclosed identifier literal",
                                  pos(i))
                name, end = sql[i + 2:j], j + 1
            else:
                j = i + 1
                while j < n and (sql[j].isalnum() or sql[j] == "_"):
                    j += 1
                name, end = sql[i + 1:j], j
            toks.append(Tok("PARAM", sql[i:end], name, pos(i)))
            i = end
        elif c == "?":
            toks.append(Tok("QMARK", "?", None, pos(i)))
            i += 1
        else:
            for op in _OPS:
                if sql.startswith(op, i):
                    toks.append(Tok("OP", op, op, pos(i)))
                    i += len(op)
                    break
            else:
                raise invalid('Syntax error: Illegal input character "%s"'
                              % c, pos(i))
    toks.append(Tok("EOF", "", None, pos(n)))
    return toks
