"""bqsql -- a small GoogleSQL subset over in-memory tables (test fixture).

Enough of BigQuery's dialect to run syncbridge's registry statements
(parameterized INSERT / UPDATE / DELETE / MERGE / SELECT) against stored
rows, with BigQuery-shaped errors ("... at [line:col]") and BigQuery's
streaming-buffer restriction on UPDATE/DELETE/MERGE.  Row sources: one
table, `UNNEST(array)` (a parameter, GENERATE_ARRAY; STRUCT elements give
one column per field), a parenthesised query in MERGE USING; queries may be
joined by UNION ALL or UNION DISTINCT.  Parameters: scalars, ARRAY and
STRUCT (nested).  No JOIN, GROUP BY, window functions, WITH, or correlated
UNNEST.

Pipeline: tokenize() -> Parser (recursive descent, builds the AST below)
-> statement.run(ctx) which first type-checks ("check") every expression
against the table schemas and parameters, then evaluates ("ev").

No HTTP here; bigquery.py wraps this in REST handlers.
"""

import base64
import bisect
import datetime as _dt
import functools
import json
import re
import threading
import time
import uuid
from decimal import Decimal, InvalidOperation

UTC = _dt.timezone.utc
EPOCH = _dt.datetime(1970, 1, 1, tzinfo=UTC)

STREAMING_BUFFER_MSG = ("UPDATE or DELETE statement over table {table} would "
                        "affect rows in the streaming buffer, which is not "
                        "supported")


class BQError(Exception):
    """A BigQuery error: reason ("invalidQuery", "notFound", ...), message,
    location (ErrorProto.location, "q" for query text errors) and the HTTP
    status the REST layer should use."""

    def __init__(self, reason, message, location="q", status=400):
        super().__init__(message)
        self.reason = reason
        self.message = message
        self.location = location
        self.status = status


def _at(pos):
    return " at [%d:%d]" % pos if pos else ""


def invalid(msg, pos=None):
    return BQError("invalidQuery", msg + _at(pos))


# --------------------------------------------------------------------------
# Types and values
#
# Python representation: INT64 int, FLOAT64 float, NUMERIC Decimal, BOOL bool,
# STRING str, BYTES bytes, DATE date, DATETIME naive datetime, TIMESTAMP
# aware (UTC) datetime, NULL None.  The pseudo-type "NULL" is the type of an
# untyped NULL literal and coerces to anything.

_TYPE_ALIASES = {
    "INTEGER": "INT64", "INT": "INT64", "SMALLINT": "INT64",
    "BIGINT": "INT64", "TINYINT": "INT64", "BYTEINT": "INT64",
    "FLOAT": "FLOAT64", "BOOLEAN": "BOOL", "DECIMAL": "NUMERIC",
    "BIGNUMERIC": "NUMERIC", "BIGDECIMAL": "NUMERIC", "RECORD": "STRUCT",
}
_LEGACY_NAMES = {"INT64": "INTEGER", "FLOAT64": "FLOAT", "BOOL": "BOOLEAN",
                 "STRUCT": "RECORD"}
SCALAR_TYPES = {"INT64", "FLOAT64", "NUMERIC", "BOOL", "STRING", "BYTES",
                "DATE", "DATETIME", "TIMESTAMP"}
_NUM_RANK = {"INT64": 0, "NUMERIC": 1, "FLOAT64": 2}


def norm_type(t):
    t = (t or "STRING").upper()
    return _TYPE_ALIASES.get(t, t)


def legacy_type_name(t):
    """Type name as BigQuery's REST schema spells it (INTEGER, FLOAT...)."""
    return _LEGACY_NAMES.get(t, t)


_DT_RE = re.compile(
    r"^\s*(\d{4})-(\d{1,2})-(\d{1,2})"
    r"(?:[ T](\d{1,2}):(\d{1,2})(?::(\d{1,2})(?:\.(\d{1,9}))?)?)?"
    r"\s*(Z|UTC|[+-]\d{1,2}(?::?\d{2})?)?\s*$", re.I)


def _parse_dt(s, want_tz):
    m = _DT_RE.match(s)
    if not m:
        raise ValueError(s)
    y, mo, d, hh, mi, ss, frac, tz = m.groups()
    micro = int((frac or "0")[:6].ljust(6, "0"))
    dt = _dt.datetime(int(y), int(mo), int(d), int(hh or 0), int(mi or 0),
                      int(ss or 0), micro)
    if tz and not want_tz:
        raise ValueError(s)
    if want_tz:
        off = _dt.timedelta(0)
        if tz and tz.upper() not in ("Z", "UTC"):
            sign = -1 if tz[0] == "-" else 1
            digits = tz[1:].replace(":", "")
            h = int(digits[:-2] if len(digits) > 2 else digits)
            m_ = int(digits[-2:]) if len(digits) > 2 else 0
            off = sign * _dt.timedelta(hours=h, minutes=m_)
        dt = (dt - off).replace(tzinfo=UTC)
    return dt


def parse_timestamp(s):
    return _parse_dt(s, True)


def parse_datetime(s):
    return _parse_dt(s, False)


def parse_date(s):
    m = re.match(r"^\s*(\d{4})-(\d{1,2})-(\d{1,2})\s*$", s)
    if not m:
        raise ValueError(s)
    return _dt.date(*map(int, m.groups()))


def ts_from_epoch(seconds):
    return EPOCH + _dt.timedelta(microseconds=round(float(seconds) * 1e6))


def parse_value(s, typ):
    """Convert the string form of a value (query parameter, CAST, string
    literal coercion) to the Python value of type typ; ValueError if bad."""
    if typ == "STRING":
        return s
    if typ == "INT64":
        t = s.strip()
        if re.fullmatch(r"[+-]?\d+", t):
            v = int(t)
        elif re.fullmatch(r"[+-]?0[xX][0-9a-fA-F]+", t):
            v = int(t, 16)
        else:
            raise ValueError(s)
        if not -2**63 <= v < 2**63:
            raise ValueError(s)
        return v
    if typ == "FLOAT64":
        return float(s)
    if typ == "NUMERIC":
        try:
            v = Decimal(s.strip())
        except InvalidOperation:
            raise ValueError(s) from None
        if not v.is_finite():
            raise ValueError(s)
        return v
    if typ == "BOOL":
        low = s.strip().lower()
        if low in ("true", "false"):
            return low == "true"
        raise ValueError(s)
    if typ == "TIMESTAMP":
        return parse_timestamp(s)
    if typ == "DATETIME":
        return parse_datetime(s)
    if typ == "DATE":
        return parse_date(s)
    if typ == "BYTES":
        return base64.b64decode(s, validate=True)
    raise ValueError(s)


def format_timestamp(v, int64=False):
    micros = (v - EPOCH) // _dt.timedelta(microseconds=1)
    if int64:
        return str(micros)
    # BigQuery's REST rows carry TIMESTAMP as epoch seconds, e.g. "1.7040672E9"
    d = (Decimal(micros).scaleb(-6)).normalize()
    return format(d, "E").replace("E+", "E")


def format_value(v, typ, int64_timestamp=False):
    """Python value -> the string BigQuery puts in {"v": ...} (None=null)."""
    if v is None:
        return None
    if typ == "BOOL":
        return "true" if v else "false"
    if typ == "FLOAT64":
        if v != v:
            return "NaN"
        if v in (float("inf"), float("-inf")):
            return "Infinity" if v > 0 else "-Infinity"
        return repr(float(v))
    if typ == "NUMERIC":
        s = format(Decimal(v), "f")
        if "." in s:
            s = s.rstrip("0").rstrip(".")
        return s
    if typ == "TIMESTAMP":
        return format_timestamp(v, int64_timestamp)
    if typ in ("DATETIME", "DATE"):
        return v.isoformat()
    if typ == "BYTES":
        return base64.b64encode(v).decode("ascii")
    return str(v)


def coerce_value(v, dst):
    """Runtime half of an implicit coercion the checker allowed."""
    if v is None:
        return None
    if isinstance(v, str) and dst != "STRING":
        return parse_value(v, dst)
    if dst == "FLOAT64":
        return float(v)
    if dst == "NUMERIC" and isinstance(v, int):
        return Decimal(v)
    if dst == "DATETIME" and type(v) is _dt.date:
        return _dt.datetime(v.year, v.month, v.day)
    return v


# --------------------------------------------------------------------------
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


# --------------------------------------------------------------------------
# Scopes (check time) and environments (run time)

class Binding:
    """One row source visible to expressions: a table or a subquery."""

    def __init__(self, names, columns):
        self.names = {x.lower() for x in names if x}   # qualifiers
        self.cols = {}                                 # lower -> (name, type)
        for name, typ in columns:
            self.cols.setdefault(name.lower(), (name, typ))


class Scope:
    def __init__(self, bindings=(), parent=None):
        self.bindings = list(bindings)
        self.parent = parent


class Env:
    def __init__(self, rows=(), parent=None):
        self.rows = list(rows)   # one dict per binding, keyed by column name
        self.parent = parent


# --------------------------------------------------------------------------
# Expressions: check(ctx, scope) -> type (and annotates), ev(ctx, env) -> value

class Expr:
    pos = None
    type = None

    def children(self):
        return ()

    def walk(self):
        yield self
        for c in self.children():
            if c is not None:
                yield from c.walk()


class Literal(Expr):
    def __init__(self, value, typ, pos):
        self.value, self.type, self.pos = value, typ, pos

    def check(self, ctx, scope):
        return self.type

    def ev(self, ctx, env):
        return self.value


class Param(Expr):
    def __init__(self, name, index, pos):
        self.name, self.index, self.pos = name, index, pos

    def check(self, ctx, scope):
        self.type, self.value = ctx.param(self)
        return self.type

    def ev(self, ctx, env):
        return self.value


class ColumnRef(Expr):
    def __init__(self, parts):
        self.parts = parts            # [(text, pos)]
        self.pos = parts[0][1]
        self.name = parts[-1][0]

    def check(self, ctx, scope):
        first, fpos = self.parts[0]
        if len(self.parts) > 2:
            raise invalid("Unrecognized name: %s" % first, fpos)
        up, s = 0, scope
        while s is not None:
            if len(self.parts) == 1:
                hits = [i for i, b in enumerate(s.bindings)
                        if first.lower() in b.cols]
                if len(hits) > 1:
                    raise invalid("Column name %s is ambiguous" % first, fpos)
                if hits:
                    return self._bind(up, hits[0], s.bindings[hits[0]], first)
            else:
                for i, b in enumerate(s.bindings):
                    if first.lower() in b.names:
                        col, cpos = self.parts[1]
                        if col.lower() not in b.cols:
                            raise invalid("Name %s not found inside %s"
                                          % (col, first), cpos)
                        return self._bind(up, i, b, col)
            s, up = s.parent, up + 1
        raise invalid("Unrecognized name: %s" % first, fpos)

    def _bind(self, up, idx, binding, col):
        self.up, self.idx = up, idx
        self.col, self.type = binding.cols[col.lower()]
        return self.type

    def ev(self, ctx, env):
        for _ in range(self.up):
            env = env.parent
        return env.rows[self.idx].get(self.col)


class Coerce(Expr):
    """Implicit conversion inserted by the checker (INT64->FLOAT64, string
    literal/parameter -> TIMESTAMP, ...)."""

    def __init__(self, inner, typ):
        self.inner, self.type, self.pos = inner, typ, inner.pos

    def children(self):
        return (self.inner,)

    def check(self, ctx, scope):
        return self.type

    def ev(self, ctx, env):
        v = self.inner.ev(ctx, env)
        try:
            return coerce_value(v, self.type)
        except ValueError:
            raise invalid("Could not cast %s to type %s"
                          % (_quote(v), self.type), self.pos) from None


def _quote(v):
    return '"%s"' % v if isinstance(v, str) else str(v)


def can_coerce(node, src, dst):
    if src == dst or src == "NULL":
        return True
    if src in _NUM_RANK and dst in _NUM_RANK:
        return _NUM_RANK[src] < _NUM_RANK[dst]
    if src == "STRING" and dst in ("DATE", "DATETIME", "TIMESTAMP") and \
            isinstance(node, (Literal, Param)):
        return True
    return src == "DATE" and dst == "DATETIME"


def coerce(node, src, dst):
    if src == dst:
        return node
    if isinstance(node, Literal) and src == "STRING":
        try:
            return Literal(parse_value(node.value, dst), dst, node.pos)
        except ValueError:
            raise invalid('Could not cast literal "%s" to type %s'
                          % (node.value, dst), node.pos) from None
    if isinstance(node, Param) and src == "STRING" and node.value is not None:
        try:    # fail at check time, with the parameter's position
            parse_value(node.value, dst)
        except ValueError:
            raise invalid("Could not cast query parameter %s value \"%s\" "
                          "to type %s" % (node.name or "?", node.value, dst),
                          node.pos) from None
    return Coerce(node, dst)


def unify(a, at, b, bt):
    """Common supertype of two operands, coercing one side; None if none."""
    if at == bt:
        return a, b, at
    if at == "NULL":
        return a, b, bt
    if bt == "NULL":
        return a, b, at
    if can_coerce(a, at, bt):
        return coerce(a, at, bt), b, bt
    if can_coerce(b, bt, at):
        return a, coerce(b, bt, at), at
    return None


def _cmp(a, b):
    return (a > b) - (a < b)


class Compare(Expr):
    def __init__(self, op, left, right, pos):
        self.op, self.left, self.right, self.pos = op, left, right, pos

    def children(self):
        return (self.left, self.right)

    def check(self, ctx, scope):
        lt = self.left.check(ctx, scope)
        rt = self.right.check(ctx, scope)
        u = unify(self.left, lt, self.right, rt)
        if u is None or u[2] in ("STRUCT", "ARRAY"):
            op = "!=" if self.op == "<>" else self.op
            raise invalid("No matching signature for operator %s for argument "
                          "types: %s, %s. Supported signature: ANY %s ANY"
                          % (op, lt, rt, op), self.pos)
        self.left, self.right = u[0], u[1]
        self.type = "BOOL"
        return "BOOL"

    def ev(self, ctx, env):
        a = self.left.ev(ctx, env)
        b = self.right.ev(ctx, env)
        if a is None or b is None:
            return None
        c = _cmp(a, b)
        return {"=": c == 0, "!=": c != 0, "<>": c != 0, "<": c < 0,
                "<=": c <= 0, ">": c > 0, ">=": c >= 0}[self.op]


def _need_bool(node, t, what, pos):
    if t not in ("BOOL", "NULL"):
        raise invalid("No matching signature for operator %s for argument "
                      "types: %s. Supported signature: BOOL %s BOOL"
                      % (what, t, what), pos)


class Logic(Expr):
    def __init__(self, op, left, right, pos):
        self.op, self.left, self.right, self.pos = op, left, right, pos

    def children(self):
        return (self.left, self.right)

    def check(self, ctx, scope):
        for side in (self.left, self.right):
            _need_bool(side, side.check(ctx, scope), self.op, side.pos)
        self.type = "BOOL"
        return "BOOL"

    def ev(self, ctx, env):
        a = self.left.ev(ctx, env)
        if self.op == "AND":
            if a is False:
                return False
            b = self.right.ev(ctx, env)
            if b is False:
                return False
            return None if a is None or b is None else True
        if a is True:
            return True
        b = self.right.ev(ctx, env)
        if b is True:
            return True
        return None if a is None or b is None else False


class Not(Expr):
    def __init__(self, inner, pos):
        self.inner, self.pos = inner, pos

    def children(self):
        return (self.inner,)

    def check(self, ctx, scope):
        _need_bool(self.inner, self.inner.check(ctx, scope), "NOT", self.pos)
        self.type = "BOOL"
        return "BOOL"

    def ev(self, ctx, env):
        v = self.inner.ev(ctx, env)
        return None if v is None else not v


class IsNull(Expr):
    def __init__(self, inner, negate, pos):
        self.inner, self.negate, self.pos = inner, negate, pos

    def children(self):
        return (self.inner,)

    def check(self, ctx, scope):
        self.inner.check(ctx, scope)
        self.type = "BOOL"
        return "BOOL"

    def ev(self, ctx, env):
        return (self.inner.ev(ctx, env) is None) != self.negate


class InList(Expr):
    def __init__(self, inner, items, negate, pos):
        self.inner, self.items, self.negate, self.pos = \
            inner, items, negate, pos

    def children(self):
        return [self.inner] + self.items

    def check(self, ctx, scope):
        t = self.inner.check(ctx, scope)
        for i, item in enumerate(self.items):
            it = item.check(ctx, scope)
            u = unify(self.inner, t, item, it)
            if u is None:
                raise invalid("No matching signature for operator IN for "
                              "argument types %s and {%s}" % (t, it), self.pos)
            self.inner, self.items[i], t = u
        self.type = "BOOL"
        return "BOOL"

    def ev(self, ctx, env):
        v = self.inner.ev(ctx, env)
        if v is None:
            return None
        seen_null = False
        for item in self.items:
            w = item.ev(ctx, env)
            if w is None:
                seen_null = True
            elif _cmp(v, w) == 0:
                return not self.negate
        return None if seen_null else self.negate


class InSubquery(Expr):
    def __init__(self, inner, select, negate, pos):
        self.inner, self.select, self.negate, self.pos = \
            inner, select, negate, pos

    def children(self):
        return (self.inner,)

    def check(self, ctx, scope):
        t = self.inner.check(ctx, scope)
        cols = self.select.check(ctx, scope)
        if len(cols) != 1:
            raise invalid("IN subquery must have exactly one column",
                          self.pos)
        st = cols[0][1]
        if unify(self.inner, t, Literal(None, st, None), st) is None:
            raise invalid("Cannot execute IN subquery with uncomparable "
                          "types %s and %s" % (t, st), self.pos)
        self.sub_type = st
        self.type = "BOOL"
        return "BOOL"

    def ev(self, ctx, env):
        v = self.inner.ev(ctx, env)
        if v is None:
            return None
        _, rows = self.select.run_rows(ctx, env)
        seen_null = False
        for (w,) in rows:
            if w is None:
                seen_null = True
            elif _cmp(coerce_value(v, self.sub_type),
                      coerce_value(w, self.sub_type)) == 0:
                return not self.negate
        return None if seen_null else self.negate


class InArray(Expr):
    """x IN UNNEST(@array_param)"""

    def __init__(self, inner, array, negate, pos):
        self.inner, self.array, self.negate, self.pos = \
            inner, array, negate, pos

    def children(self):
        return (self.inner, self.array)

    def check(self, ctx, scope):
        t = self.inner.check(ctx, scope)
        at = self.array.check(ctx, scope)
        et = at[6:-1] if at.startswith("ARRAY<") else None
        if et is None or unify(self.inner, t, Literal(None, et, None),
                               et) is None:
            raise invalid("No matching signature for operator IN UNNEST for "
                          "argument types: %s, %s" % (t, at), self.pos)
        self.elem_type = et
        self.type = "BOOL"
        return "BOOL"

    def ev(self, ctx, env):
        v = self.inner.ev(ctx, env)
        arr = self.array.ev(ctx, env)
        if v is None or arr is None:
            return None
        v = coerce_value(v, self.elem_type) \
            if self.elem_type in _NUM_RANK else v
        hit = any(w is not None and _cmp(v, w) == 0 for w in arr)
        return hit != self.negate


class Exists(Expr):
    def __init__(self, select, pos):
        self.select, self.pos = select, pos

    def check(self, ctx, scope):
        self.select.check(ctx, scope)
        self.type = "BOOL"
        return "BOOL"

    def ev(self, ctx, env):
        _, rows = self.select.run_rows(ctx, env)
        return bool(rows)


class Like(Expr):
    def __init__(self, inner, pattern, negate, pos):
        self.inner, self.pattern, self.negate, self.pos = \
            inner, pattern, negate, pos

    def children(self):
        return (self.inner, self.pattern)

    def check(self, ctx, scope):
        a = self.inner.check(ctx, scope)
        b = self.pattern.check(ctx, scope)
        if a not in ("STRING", "NULL") or b not in ("STRING", "NULL"):
            raise invalid("No matching signature for operator LIKE for "
                          "argument types: %s, %s" % (a, b), self.pos)
        self.type = "BOOL"
        return "BOOL"

    def ev(self, ctx, env):
        v, p = self.inner.ev(ctx, env), self.pattern.ev(ctx, env)
        if v is None or p is None:
            return None
        rx = "".join(".*" if ch == "%" else "." if ch == "_" else re.escape(ch)
                     for ch in p)
        return (re.fullmatch(rx, v, re.S) is not None) != self.negate


class Between(Expr):
    def __init__(self, inner, lo, hi, negate, pos):
        self.inner, self.lo, self.hi, self.negate, self.pos = \
            inner, lo, hi, negate, pos
        self.c1 = Compare(">=", inner, lo, pos)
        self.c2 = Compare("<=", inner, hi, pos)

    def children(self):
        return (self.inner, self.lo, self.hi)

    def check(self, ctx, scope):
        self.c1.check(ctx, scope)
        self.c2.check(ctx, scope)
        self.type = "BOOL"
        return "BOOL"

    def ev(self, ctx, env):
        a, b = self.c1.ev(ctx, env), self.c2.ev(ctx, env)
        r = None if a is None or b is None else (a and b)
        if a is False or b is False:
            r = False
        return r if r is None else r != self.negate


class Arith(Expr):
    def __init__(self, op, left, right, pos):
        self.op, self.left, self.right, self.pos = op, left, right, pos

    def children(self):
        return (self.left, self.right)

    def check(self, ctx, scope):
        lt = self.left.check(ctx, scope)
        rt = self.right.check(ctx, scope)
        if self.op == "||":
            if lt not in ("STRING", "NULL") or rt not in ("STRING", "NULL"):
                raise invalid("No matching signature for operator || for "
                              "argument types: %s, %s" % (lt, rt), self.pos)
            self.type = "STRING"
            return "STRING"
        u = unify(self.left, lt, self.right, rt)
        if u is None or u[2] not in ("INT64", "NUMERIC", "FLOAT64", "NULL"):
            raise invalid("No matching signature for operator %s for argument "
                          "types: %s, %s" % (self.op, lt, rt), self.pos)
        self.left, self.right, t = u
        if t == "NULL":
            t = "INT64"
        if self.op == "/" and t == "INT64":
            t = "FLOAT64"
        self.type = t
        return t

    def ev(self, ctx, env):
        a, b = self.left.ev(ctx, env), self.right.ev(ctx, env)
        if a is None or b is None:
            return None
        if self.op == "||":
            return a + b
        if self.op == "+":
            r = a + b
        elif self.op == "-":
            r = a - b
        elif self.op == "*":
            r = a * b
        else:
            if b == 0:
                raise BQError("invalidQuery", "division by zero: %s / %s"
                              % (a, b))
            r = a / b if self.type != "INT64" else float(a) / float(b)
        if self.type == "INT64" and not -2**63 <= r < 2**63:
            raise BQError("invalidQuery", "int64 overflow: %s %s %s"
                          % (a, self.op, b))
        return r


class Neg(Expr):
    def __init__(self, inner, pos):
        self.inner, self.pos = inner, pos

    def children(self):
        return (self.inner,)

    def check(self, ctx, scope):
        t = self.inner.check(ctx, scope)
        if t not in ("INT64", "NUMERIC", "FLOAT64", "NULL"):
            raise invalid("No matching signature for operator - for argument "
                          "types: %s" % t, self.pos)
        self.type = "INT64" if t == "NULL" else t
        return self.type

    def ev(self, ctx, env):
        v = self.inner.ev(ctx, env)
        return None if v is None else -v


class Cast(Expr):
    def __init__(self, inner, typ, safe, pos):
        self.inner, self.target, self.safe, self.pos = inner, typ, safe, pos

    def children(self):
        return (self.inner,)

    def check(self, ctx, scope):
        self.src = self.inner.check(ctx, scope)
        if self.target not in SCALAR_TYPES:
            raise invalid("Type not found: %s" % self.target, self.pos)
        self.type = self.target
        return self.type

    def ev(self, ctx, env):
        v = self.inner.ev(ctx, env)
        try:
            return cast_value(v, self.src, self.target)
        except (ValueError, ArithmeticError, TypeError):
            if self.safe:
                return None
            raise BQError("invalidQuery", "Bad %s value: %s"
                          % (self.target, v)) from None


def cast_value(v, src, dst):
    if v is None or src == dst:
        return v
    if dst == "STRING":
        if src == "TIMESTAMP":
            return v.strftime("%Y-%m-%d %H:%M:%S") + \
                (".%06d" % v.microsecond).rstrip("0").rstrip(".") + "+00"
        if src in ("DATETIME", "DATE"):
            return v.isoformat(sep=" ") if src == "DATETIME" else v.isoformat()
        return format_value(v, src)
    if isinstance(v, str):
        return parse_value(v, dst)
    if dst == "INT64":
        if isinstance(v, bool):
            return int(v)
        if isinstance(v, (float, Decimal)):
            return int(Decimal(v).quantize(Decimal(1), "ROUND_HALF_UP"))
    if dst == "FLOAT64":
        return float(v)
    if dst == "NUMERIC":
        return Decimal(v) if not isinstance(v, float) else Decimal(repr(v))
    if dst == "BOOL" and src == "INT64":
        return v != 0
    if dst == "TIMESTAMP" and src == "DATETIME":
        return v.replace(tzinfo=UTC)
    if dst == "TIMESTAMP" and src == "DATE":
        return _dt.datetime(v.year, v.month, v.day, tzinfo=UTC)
    if dst == "DATETIME" and src == "TIMESTAMP":
        return v.astimezone(UTC).replace(tzinfo=None)
    if dst == "DATETIME" and src == "DATE":
        return _dt.datetime(v.year, v.month, v.day)
    if dst == "DATE" and src in ("DATETIME", "TIMESTAMP"):
        return v.date()
    raise TypeError("cannot cast %s to %s" % (src, dst))


class Interval(Expr):
    UNITS = {"MICROSECOND": 1e-6, "MILLISECOND": 1e-3, "SECOND": 1,
             "MINUTE": 60, "HOUR": 3600, "DAY": 86400}

    def __init__(self, amount, unit, pos):
        self.amount, self.unit, self.pos = amount, unit, pos

    def children(self):
        return (self.amount,)

    def check(self, ctx, scope):
        if self.amount.check(ctx, scope) not in ("INT64", "NULL"):
            raise invalid("INTERVAL value must be INT64", self.amount.pos)
        if self.unit not in self.UNITS:
            raise invalid("Unsupported INTERVAL unit %s" % self.unit, self.pos)
        self.type = "INTERVAL"
        return "INTERVAL"

    def ev(self, ctx, env):
        n = self.amount.ev(ctx, env)
        return None if n is None else \
            _dt.timedelta(seconds=n * self.UNITS[self.unit])


class Func(Expr):
    """Scalar functions.  Each entry: (min args, max args)."""
    ARITY = {
        "CURRENT_TIMESTAMP": (0, 0), "CURRENT_DATETIME": (0, 1),
        "CURRENT_DATE": (0, 1), "COALESCE": (1, 99), "IFNULL": (2, 2),
        "TIMESTAMP": (1, 2), "DATETIME": (1, 2), "DATE": (1, 1),
        "TIMESTAMP_ADD": (2, 2), "TIMESTAMP_SUB": (2, 2),
        "DATETIME_ADD": (2, 2), "DATETIME_SUB": (2, 2),
        "CONCAT": (1, 99), "LOWER": (1, 1), "UPPER": (1, 1),
        "LENGTH": (1, 1), "GENERATE_UUID": (0, 0), "GENERATE_ARRAY": (2, 3),
    }

    def __init__(self, name, args, pos):
        self.name, self.args, self.pos = name, args, pos

    def children(self):
        return self.args

    def _bad(self, types):
        return invalid("No matching signature for function %s for argument "
                       "types: %s" % (self.name, ", ".join(types) or "()"),
                       self.pos)

    def check(self, ctx, scope):
        if self.name not in self.ARITY:
            raise invalid("Function not found: %s" % self.name.lower(),
                          self.pos)
        types = [a.check(ctx, scope) for a in self.args]
        lo, hi = self.ARITY[self.name]
        if not lo <= len(types) <= hi:
            raise self._bad(types)
        n = self.name
        if n == "CURRENT_TIMESTAMP":
            t = "TIMESTAMP"
        elif n in ("CURRENT_DATETIME", "CURRENT_DATE"):
            if types and types[0] != "STRING":
                raise self._bad(types)
            t = n[len("CURRENT_"):]
        elif n in ("COALESCE", "IFNULL"):
            t = types[0]
            for i in range(1, len(types)):
                u = unify(self.args[0], t, self.args[i], types[i])
                if u is None:
                    raise self._bad(types)
                t = u[2]
            self.args = [coerce(a, at, t) if at not in (t, "NULL") else a
                         for a, at in zip(self.args, types)]
        elif n in ("TIMESTAMP", "DATETIME", "DATE"):
            if types[0] not in ("STRING", "TIMESTAMP", "DATETIME", "DATE",
                                "NULL") or types[1:] not in ([], ["STRING"]):
                raise self._bad(types)
            t = n
        elif n.endswith(("_ADD", "_SUB")):
            t = n.split("_")[0]
            if types[0] == "STRING" and isinstance(self.args[0],
                                                   (Literal, Param)):
                self.args[0] = coerce(self.args[0], "STRING", t)
                types[0] = t
            if types[0] not in (t, "NULL") or types[1] != "INTERVAL":
                raise self._bad(types)
        elif n == "LENGTH":
            if types[0] not in ("STRING", "BYTES", "NULL"):
                raise self._bad(types)
            t = "INT64"
        elif n == "GENERATE_UUID":
            t = "STRING"
        elif n == "GENERATE_ARRAY":
            if any(x not in ("INT64", "NULL") for x in types):
                raise self._bad(types)
            t = "ARRAY<INT64>"
        else:   # CONCAT LOWER UPPER
            if any(x not in ("STRING", "NULL") for x in types):
                raise self._bad(types)
            t = "STRING"
        self.arg_types = types
        self.type = t
        return t

    def ev(self, ctx, env):
        n = self.name
        if n == "CURRENT_TIMESTAMP":
            return ctx.now_ts
        if n == "CURRENT_DATETIME":
            return ctx.now_ts.replace(tzinfo=None)
        if n == "CURRENT_DATE":
            return ctx.now_ts.date()
        if n == "GENERATE_UUID":
            return str(uuid.uuid4())
        if n in ("COALESCE", "IFNULL"):
            for a in self.args:
                v = a.ev(ctx, env)
                if v is not None:
                    return v
            return None
        vals = [a.ev(ctx, env) for a in self.args]
        if any(v is None for v in vals):
            return None
        if n in ("TIMESTAMP", "DATETIME", "DATE"):
            try:
                return cast_value(vals[0], self.arg_types[0], n)
            except ValueError:
                raise BQError("invalidQuery", "Invalid %s string \"%s\""
                              % (n.lower(), vals[0])) from None
        if n.endswith("_ADD"):
            return vals[0] + vals[1]
        if n.endswith("_SUB"):
            return vals[0] - vals[1]
        if n == "GENERATE_ARRAY":
            step = vals[2] if len(vals) > 2 else 1
            if step == 0:
                raise BQError("invalidQuery", "Sequence step cannot be 0.")
            return list(range(vals[0], vals[1] + (1 if step > 0 else -1), step))
        if n == "CONCAT":
            return "".join(vals)
        if n == "LOWER":
            return vals[0].lower()
        if n == "UPPER":
            return vals[0].upper()
        return len(vals[0])


class Agg(Expr):
    """COUNT(*), COUNT(x), MIN, MAX, SUM -- only directly in a SELECT list
    (no GROUP BY: the whole filtered input is one group)."""

    def __init__(self, name, arg, distinct, pos):
        self.name, self.arg, self.distinct, self.pos = name, arg, distinct, pos
        self.value = None

    def children(self):
        return (self.arg,) if self.arg is not None else ()

    def check(self, ctx, scope):
        if not ctx.agg_ok:
            raise invalid("Aggregate function %s not allowed here"
                          % self.name, self.pos)
        t = self.arg.check(ctx, scope) if self.arg is not None else None
        if self.name == "COUNT":
            self.type = "INT64"
        elif self.name == "SUM":
            if t not in ("INT64", "NUMERIC", "FLOAT64", "NULL"):
                raise invalid("No matching signature for aggregate function "
                              "SUM for argument types: %s" % t, self.pos)
            self.type = t
        else:
            self.type = t
        return self.type

    def compute(self, ctx, envs):
        if self.arg is None:
            self.value = len(envs)
            return
        vals = [v for v in (self.arg.ev(ctx, e) for e in envs)
                if v is not None]
        if self.distinct:
            vals = list(dict.fromkeys(vals))
        if self.name == "COUNT":
            self.value = len(vals)
        elif not vals:
            self.value = None
        else:
            self.value = {"MIN": min, "MAX": max, "SUM": sum}[self.name](vals)

    def ev(self, ctx, env):
        return self.value


# --------------------------------------------------------------------------
# Parser

class TableRef:
    def __init__(self, parts, pos):
        self.parts, self.pos = parts, pos   # list of names


class Unnest:
    """`UNNEST(array expression)` as a row source (FROM, MERGE USING).  The
    array must not depend on the row (parameters, literals, functions)."""

    def __init__(self, expr, pos):
        self.expr, self.pos = expr, pos


def struct_fields(t):
    """'STRUCT<a INT64, b ARRAY<STRING>>' -> [('a', 'INT64'), ('b', ...)]."""
    inner, out, depth, cur = t[7:-1], [], 0, ""
    for ch in inner + ",":
        if ch == "," and depth == 0:
            name, _, typ = cur.strip().partition(" ")
            out.append((name, typ.strip()))
            cur = ""
            continue
        depth += (ch == "<") - (ch == ">")
        cur += ch
    return out


class Derived:
    """The rows of an UNNEST source, shaped like a Table for Select/Merge:
    a STRUCT element gives one column per field, a scalar element one
    column named by the alias (BigQuery's rule for `UNNEST(x) AS a`)."""

    def __init__(self, ctx, src, alias, scope=None):
        self.src, self.alias = src, alias
        at = src.expr.check(ctx, scope or Scope())
        if not at.startswith("ARRAY<"):
            raise invalid("Values referenced in UNNEST must be arrays. "
                          "UNNEST contains expression of type %s" % at,
                          src.pos)
        self.elem = at[6:-1]
        self.struct = self.elem.startswith("STRUCT<")
        if self.struct:
            self.cols = struct_fields(self.elem)
            self.table_id = alias
        else:
            self.cols = [(alias or "f0_", self.elem)]
            self.table_id = None
        self.fqn = "UNNEST"

    def columns(self):
        return list(self.cols)

    def values(self, ctx):
        arr = self.src.expr.ev(ctx, Env()) or []
        if self.struct:
            return [dict(v or {}) for v in arr]
        return [{self.cols[0][0]: v} for v in arr]


class _ValuesRow:
    __slots__ = ("values",)

    def __init__(self, values):
        self.values = values


class Union:
    """`q1 UNION ALL|DISTINCT q2 ...` with an ORDER BY / LIMIT over the
    whole (on output column names, as BigQuery allows)."""

    def __init__(self, parts, distinct, order, limit, offset, pos):
        self.parts, self.distinct = parts, distinct
        self.order, self.limit, self.offset, self.pos = order, limit, offset, pos

    def check(self, ctx, outer=None):
        cols = None
        for q in self.parts:
            c = q.check(ctx, outer)
            if cols is None:
                cols = list(c)
                continue
            if len(c) != len(cols):
                raise invalid("Queries in UNION ALL have mismatched column "
                              "count; query 1 has %d columns, query %d has "
                              "%d columns" % (len(cols),
                                              self.parts.index(q) + 1, len(c)),
                              q.pos)
            for i, ((n, t), (_, u)) in enumerate(zip(cols, c)):
                if t == u or u == "NULL":
                    continue
                if t == "NULL":
                    cols[i] = (n, u)
                elif {t, u} <= set(_NUM_RANK):
                    cols[i] = (n, t if _NUM_RANK[t] >= _NUM_RANK[u] else u)
                else:
                    raise invalid("Column %d in UNION ALL has incompatible "
                                  "types: %s, %s" % (i + 1, t, u), q.pos)
        self.cols = cols
        self.out = [(n, t, None, n) for n, t in cols]
        names = [n.lower() for n, _ in cols]
        self.order_idx = []
        for e, desc in self.order:
            if not (isinstance(e, ColumnRef) and len(e.parts) == 1 and
                    e.name.lower() in names):
                raise invalid("ORDER BY after UNION ALL must name an output "
                              "column", e.pos)
            self.order_idx.append((names.index(e.name.lower()), desc))
        for lim in (self.limit, self.offset):
            if lim is not None and lim.check(ctx, Scope()) != "INT64":
                raise invalid("LIMIT expects an integer literal or parameter",
                              lim.pos)
        return cols

    def run_rows(self, ctx, outer_env=None):
        rows = []
        types = [t for _, t in self.cols]
        for q in self.parts:
            _, r = q.run_rows(ctx, outer_env)
            rows += [[coerce_value(v, t) if v is not None else None
                      for v, t in zip(row, types)] for row in r]
        if self.distinct:
            seen, uniq = set(), []
            for r in rows:
                if tuple(r) not in seen:
                    seen.add(tuple(r))
                    uniq.append(r)
            rows = uniq
        if self.order_idx:
            def key_cmp(a, b):
                for idx, desc in self.order_idx:
                    x, y = a[idx], b[idx]
                    c = (x is not None) - (y is not None) \
                        if x is None or y is None else _cmp(x, y)
                    if c:
                        return -c if desc else c
                return 0
            rows.sort(key=functools.cmp_to_key(key_cmp))
        off = self.offset.ev(ctx, None) if self.offset is not None else 0
        if self.limit is not None:
            lim = self.limit.ev(ctx, None)
            rows = rows[off or 0:(off or 0) + (lim or 0)]
        elif off:
            rows = rows[off:]
        return list(self.cols), rows

    def run(self, ctx):
        self.check(ctx)
        fields, rows = self.run_rows(ctx)
        return QueryResult("SELECT", fields, rows)


class Parser:
    def __init__(self, sql):
        self.toks = tokenize(sql)
        self.i = 0
        self.qmarks = 0

    # -- token helpers
    def peek(self, k=0):
        return self.toks[min(self.i + k, len(self.toks) - 1)]

    def next(self):
        t = self.toks[self.i]
        if t.kind != "EOF":
            self.i += 1
        return t

    def is_kw(self, *words, k=0):
        t = self.peek(k)
        return t.kind == "IDENT" and t.text.upper() in words

    def accept_kw(self, word):
        if self.is_kw(word):
            return self.next()
        return None

    def expect_kw(self, word):
        t = self.accept_kw(word)
        if t is None:
            self.fail("keyword " + word)
        return t

    def is_op(self, op, k=0):
        t = self.peek(k)
        return t.kind == "OP" and t.text == op

    def accept_op(self, op):
        if self.is_op(op):
            return self.next()
        return None

    def expect_op(self, op):
        t = self.accept_op(op)
        if t is None:
            self.fail('"%s"' % op)
        return t

    def fail(self, expected):
        t = self.peek()
        raise invalid("Syntax error: Expected %s but got %s"
                      % (expected, t.describe()), t.pos)

    def unexpected(self):
        t = self.peek()
        raise invalid("Syntax error: Unexpected %s" % t.describe(), t.pos)

    def ident(self):
        t = self.peek()
        if t.kind == "QIDENT" or (t.kind == "IDENT" and
                                  t.text.upper() not in RESERVED):
            return self.next()
        self.fail("identifier")

    # -- statements
    def parse(self):
        if self.is_kw("SELECT"):
            stmt = self.query()
        elif self.is_kw("INSERT"):
            stmt = self.insert()
        elif self.is_kw("UPDATE"):
            stmt = self.update()
        elif self.is_kw("DELETE"):
            stmt = self.delete()
        elif self.is_kw("MERGE"):
            stmt = self.merge()
        else:
            self.unexpected()
        self.accept_op(";")
        if self.peek().kind != "EOF":
            self.fail("end of input")
        return stmt

    def table_ref(self):
        t = self.ident()
        parts = t.value.split(".") if t.kind == "QIDENT" else [t.value]
        while self.is_op(".") and self.peek(1).kind in ("IDENT", "QIDENT"):
            self.next()
            t2 = self.next()
            parts += t2.value.split(".") if t2.kind == "QIDENT" else [t2.value]
        return TableRef(parts, t.pos)

    def alias(self):
        if self.accept_kw("AS"):
            return self.ident().value
        t = self.peek()
        if t.kind == "QIDENT" or (t.kind == "IDENT" and
                                  t.text.upper() not in RESERVED):
            return self.next().value
        return None

    def column_name(self):
        """A SET/INSERT target column, optionally qualified: (name, pos)."""
        t = self.ident()
        if self.accept_op("."):
            t = self.ident()
        return (t.value, t.pos)

    def column_list(self):
        self.expect_op("(")
        cols = [self.column_name()]
        while self.accept_op(","):
            cols.append(self.column_name())
        self.expect_op(")")
        return cols

    def expr_list(self):
        self.expect_op("(")
        items = [self.expr()]
        while self.accept_op(","):
            items.append(self.expr())
        self.expect_op(")")
        return items

    def insert(self):
        pos = self.next().pos
        self.accept_kw("INTO")
        table = self.table_ref()
        cols = self.column_list() if self.is_op("(") else None
        if self.accept_kw("VALUES"):
            rows = [self.expr_list()]
            while self.accept_op(","):
                rows.append(self.expr_list())
            return Insert(table, cols, rows, None, pos)
        if self.is_kw("SELECT"):
            return Insert(table, cols, None, self.query(), pos)
        if self.is_op("(") and self.is_kw("SELECT", k=1):
            self.next()
            sel = self.query()
            self.expect_op(")")
            return Insert(table, cols, None, sel, pos)
        self.fail("keyword VALUES or SELECT")

    def assignments(self):
        self.expect_kw("SET")
        out = []
        while True:
            name, npos = self.column_name()
            self.expect_op("=")
            out.append((name, npos, self.expr()))
            if not self.accept_op(","):
                return out

    def update(self):
        pos = self.next().pos
        table = self.table_ref()
        alias = self.alias()
        sets = self.assignments()
        where = self.expr() if self.accept_kw("WHERE") else None
        return Update(table, alias, sets, where, pos)

    def delete(self):
        pos = self.next().pos
        self.accept_kw("FROM")
        table = self.table_ref()
        alias = self.alias()
        where = self.expr() if self.accept_kw("WHERE") else None
        return Delete(table, alias, where, pos)

    def merge(self):
        pos = self.next().pos
        self.accept_kw("INTO")
        target = self.table_ref()
        talias = self.alias()
        self.expect_kw("USING")
        if self.accept_op("("):
            source = self.query()
            self.expect_op(")")
        elif self.is_kw("UNNEST"):
            source = self.unnest()
        else:
            source = self.table_ref()
        salias = self.alias()
        self.expect_kw("ON")
        on = self.expr()
        clauses = []
        while self.accept_kw("WHEN"):
            wpos = self.peek().pos
            if self.accept_kw("NOT"):
                self.expect_kw("MATCHED")
                kind = "NOT_MATCHED"
                if self.accept_kw("BY"):
                    if self.accept_kw("SOURCE"):
                        kind = "NOT_MATCHED_BY_SOURCE"
                    else:
                        self.expect_kw("TARGET")
            else:
                self.expect_kw("MATCHED")
                kind = "MATCHED"
            cond = self.expr() if self.accept_kw("AND") else None
            self.expect_kw("THEN")
            if kind == "NOT_MATCHED":
                self.expect_kw("INSERT")
                if self.accept_kw("ROW"):
                    action = ("INSERT", None, None)
                else:
                    cols = self.column_list() if self.is_op("(") else None
                    self.expect_kw("VALUES")
                    action = ("INSERT", cols, self.expr_list())
            elif self.accept_kw("DELETE"):
                action = ("DELETE",)
            else:
                self.expect_kw("UPDATE")
                action = ("UPDATE", self.assignments())
            clauses.append(MergeClause(kind, cond, action, wpos))
        if not clauses:
            self.fail("keyword WHEN")
        return Merge(target, talias, source, salias, on, clauses, pos)

    def unnest(self):
        pos = self.expect_kw("UNNEST").pos
        self.expect_op("(")
        e = self.expr()
        self.expect_op(")")
        return Unnest(e, pos)

    def query(self):
        """SELECT ... [UNION ALL|DISTINCT SELECT ...]: the ORDER BY / LIMIT
        the last SELECT parsed belong to the whole union."""
        first = self.select()
        if not self.is_kw("UNION"):
            return first
        parts, kinds = [first], set()
        while self.is_kw("UNION"):
            last = parts[-1]
            if last.order or last.limit is not None:
                self.unexpected()
            upos = self.next().pos
            if self.accept_kw("DISTINCT"):
                kinds.add("DISTINCT")
            elif self.accept_kw("ALL"):
                kinds.add("ALL")
            else:
                self.fail("keyword ALL or keyword DISTINCT")
            if len(kinds) > 1:
                raise invalid("Syntax error: Different set operations cannot "
                              "be used in the same query without using "
                              "parentheses for grouping", upos)
            if self.accept_op("("):
                parts.append(self.query())
                self.expect_op(")")
            else:
                parts.append(self.select())
        last = parts[-1]
        order, limit, offset = last.order, last.limit, last.offset
        if isinstance(last, Select):
            last.order, last.limit, last.offset = [], None, None
        return Union(parts, kinds == {"DISTINCT"}, order, limit, offset,
                     first.pos)

    def select(self):
        pos = self.expect_kw("SELECT").pos
        distinct = bool(self.accept_kw("DISTINCT"))
        self.accept_kw("ALL")
        items = []
        while True:
            t = self.peek()
            if self.accept_op("*"):
                items.append(("*", None, t.pos))
            else:
                e = self.expr()
                items.append((e, self.alias(), t.pos))
            if not self.accept_op(","):
                break
        table = alias = where = None
        order, limit, offset = [], None, None
        if self.accept_kw("FROM"):
            table = self.unnest() if self.is_kw("UNNEST") else \
                self.table_ref()
            alias = self.alias()
        if self.accept_kw("WHERE"):
            where = self.expr()
        if self.accept_kw("ORDER"):
            self.expect_kw("BY")
            while True:
                e = self.expr()
                desc = False
                if self.accept_kw("DESC"):
                    desc = True
                else:
                    self.accept_kw("ASC")
                order.append((e, desc))
                if not self.accept_op(","):
                    break
        if self.accept_kw("LIMIT"):
            limit = self.primary()
            if self.accept_kw("OFFSET"):
                offset = self.primary()
        return Select(items, distinct, table, alias, where, order, limit,
                      offset, pos)

    # -- expressions (lowest to highest precedence)
    def expr(self):
        left = self.and_expr()
        while self.is_kw("OR"):
            pos = self.next().pos
            left = Logic("OR", left, self.and_expr(), left.pos or pos)
        return left

    def and_expr(self):
        left = self.not_expr()
        while self.is_kw("AND"):
            pos = self.next().pos
            left = Logic("AND", left, self.not_expr(), left.pos or pos)
        return left

    def not_expr(self):
        if self.is_kw("NOT"):
            pos = self.next().pos
            return Not(self.not_expr(), pos)
        return self.comparison()

    def comparison(self):
        left = self.additive()
        t = self.peek()
        if t.kind == "OP" and t.text in ("=", "!=", "<>", "<", "<=", ">",
                                         ">="):
            self.next()
            return Compare(t.text, left, self.additive(), left.pos)
        if self.accept_kw("IS"):
            neg = bool(self.accept_kw("NOT"))
            if self.accept_kw("NULL"):
                return IsNull(left, neg, left.pos)
            for word, val in (("TRUE", True), ("FALSE", False)):
                if self.accept_kw(word):
                    # x IS TRUE == COALESCE(x = TRUE, FALSE)
                    e = Func("COALESCE", [Compare("=", left, Literal(
                        val, "BOOL", t.pos), left.pos),
                        Literal(False, "BOOL", t.pos)], left.pos)
                    return Not(e, left.pos) if neg else e
            self.fail("keyword NULL")
        neg = False
        if self.is_kw("NOT") and self.is_kw("IN", "LIKE", "BETWEEN", k=1):
            self.next()
            neg = True
        if self.accept_kw("IN"):
            if self.accept_kw("UNNEST"):
                self.expect_op("(")
                arr = self.expr()
                self.expect_op(")")
                return InArray(left, arr, neg, left.pos)
            if self.is_op("(") and self.is_kw("SELECT", k=1):
                self.next()
                sel = self.select()
                self.expect_op(")")
                return InSubquery(left, sel, neg, left.pos)
            return InList(left, self.expr_list(), neg, left.pos)
        if self.accept_kw("LIKE"):
            return Like(left, self.additive(), neg, left.pos)
        if self.accept_kw("BETWEEN"):
            lo = self.additive()
            self.expect_kw("AND")
            return Between(left, lo, self.additive(), neg, left.pos)
        return left

    def additive(self):
        left = self.multiplicative()
        while self.peek().kind == "OP" and self.peek().text in ("+", "-",
                                                                "||"):
            op = self.next().text
            left = Arith(op, left, self.multiplicative(), left.pos)
        return left

    def multiplicative(self):
        left = self.unary()
        while self.peek().kind == "OP" and self.peek().text in ("*", "/"):
            op = self.next().text
            left = Arith(op, left, self.unary(), left.pos)
        return left

    def unary(self):
        if self.is_op("-"):
            pos = self.next().pos
            inner = self.unary()
            if isinstance(inner, Literal) and inner.type in ("INT64",
                                                             "FLOAT64"):
                return Literal(-inner.value, inner.type, pos)
            return Neg(inner, pos)
        if self.is_op("+"):
            self.next()
            return self.unary()
        return self.primary()

    def primary(self):
        t = self.peek()
        if t.kind == "INT":
            self.next()
            return Literal(t.value, "INT64", t.pos)
        if t.kind == "FLOAT":
            self.next()
            return Literal(t.value, "FLOAT64", t.pos)
        if t.kind == "STRING":
            self.next()
            return Literal(t.value, "STRING", t.pos)
        if t.kind == "PARAM":
            self.next()
            return Param(t.value, None, t.pos)
        if t.kind == "QMARK":
            self.next()
            self.qmarks += 1
            return Param(None, self.qmarks - 1, t.pos)
        if t.kind == "OP" and t.text == "(":
            self.next()
            e = self.expr()
            self.expect_op(")")
            return e
        if t.kind == "QIDENT":
            return self.column_ref()
        if t.kind != "IDENT":
            self.unexpected()
        word = t.text.upper()
        if word == "NULL":
            self.next()
            return Literal(None, "NULL", t.pos)
        if word in ("TRUE", "FALSE"):
            self.next()
            return Literal(word == "TRUE", "BOOL", t.pos)
        if word == "EXISTS":
            self.next()
            self.expect_op("(")
            sel = self.query()
            self.expect_op(")")
            return Exists(sel, t.pos)
        if word in ("CAST", "SAFE_CAST") and self.is_op("(", k=1):
            self.next()
            self.next()
            e = self.expr()
            self.expect_kw("AS")
            typ = norm_type(self.ident().value)
            self.expect_op(")")
            return Cast(e, typ, word == "SAFE_CAST", t.pos)
        if word == "INTERVAL":
            self.next()
            amount = self.additive()
            unit = self.ident().value.upper()
            return Interval(amount, unit, t.pos)
        if word in ("TIMESTAMP", "DATETIME", "DATE", "NUMERIC") and \
                self.peek(1).kind == "STRING":
            self.next()
            s = self.next()
            try:
                return Literal(parse_value(s.value, word), word, t.pos)
            except ValueError:
                raise invalid("Invalid %s literal: %s" % (word, s.text),
                              s.pos) from None
        if word in ("CURRENT_TIMESTAMP", "CURRENT_DATETIME",
                    "CURRENT_DATE") and not self.is_op("(", k=1):
            self.next()
            return Func(word, [], t.pos)
        if word in RESERVED:
            self.unexpected()
        if self.is_op("(", k=1):
            self.next()
            self.next()
            if word in ("COUNT", "MIN", "MAX", "SUM"):
                distinct = bool(self.accept_kw("DISTINCT"))
                if word == "COUNT" and self.accept_op("*"):
                    arg = None
                else:
                    arg = self.expr()
                self.expect_op(")")
                return Agg(word, arg, distinct, t.pos)
            args = []
            if not self.accept_op(")"):
                args.append(self.expr())
                while self.accept_op(","):
                    args.append(self.expr())
                self.expect_op(")")
            return Func(word, args, t.pos)
        return self.column_ref()

    def column_ref(self):
        parts = []
        t = self.next()
        parts += [(p, t.pos) for p in t.value.split(".")] \
            if t.kind == "QIDENT" else [(t.value, t.pos)]
        while self.is_op(".") and self.peek(1).kind in ("IDENT", "QIDENT"):
            self.next()
            t = self.next()
            parts.append((t.value, t.pos))
        return ColumnRef(parts)


# --------------------------------------------------------------------------
# Storage

class Field:
    def __init__(self, name, typ, mode="NULLABLE"):
        self.name, self.type, self.mode = name, norm_type(typ), \
            (mode or "NULLABLE").upper()


class Row:
    __slots__ = ("values", "written_at", "streamed")

    def __init__(self, values, written_at, streamed):
        self.values, self.written_at, self.streamed = \
            values, written_at, streamed


class Table:
    def __init__(self, project, dataset, table_id, fields, resource=None):
        self.project, self.dataset, self.table_id = project, dataset, table_id
        self.fields = [Field(f["name"], f.get("type"), f.get("mode"))
                       for f in fields]
        self.by_lower = {f.name.lower(): f for f in self.fields}
        self.rows = []
        self.resource = resource or {}

    @property
    def fqn(self):
        return "%s.%s.%s" % (self.project, self.dataset, self.table_id)

    def field(self, name):
        return self.by_lower.get(name.lower())

    def columns(self):
        return [(f.name, f.type) for f in self.fields]


class Ctx:
    """Everything one statement execution needs."""

    def __init__(self, store, project, default_dataset, named, positional,
                 now):
        self.store, self.project = store, project
        self.default_dataset = default_dataset
        self.named, self.positional = named, positional
        self.now = now
        self.now_ts = ts_from_epoch(now)
        self.agg_ok = False

    def param(self, node):
        if node.name is not None:
            p = self.named.get(node.name.lower())
            if p is None:
                raise invalid("Query parameter '%s' not found" % node.name,
                              node.pos)
            return p
        if node.index >= len(self.positional):
            raise invalid("Query parameter number %d is not defined"
                          % (node.index + 1), node.pos)
        return self.positional[node.index]

    def table(self, ref):
        parts = ref.parts
        if len(parts) == 3:
            p, d, t = parts
        elif len(parts) == 2:
            p, (d, t) = self.project, parts
        elif len(parts) == 1 and self.default_dataset:
            p, d = self.default_dataset
            t = parts[0]
        elif len(parts) == 1:
            raise invalid('Table "%s" must be qualified with a dataset (e.g. '
                          'dataset.table).' % parts[0], ref.pos)
        else:
            raise invalid("Invalid table name: %s" % ".".join(parts),
                          ref.pos)
        return self.store.get_table(p, d, t)

    def streaming_check(self, table, rows):
        for r in rows:
            if self.store.in_streaming_buffer(r, self.now):
                raise BQError("invalidQuery",
                              STREAMING_BUFFER_MSG.format(table=table.fqn))


def _check_bool(ctx, scope, expr, clause):
    if expr is None:
        return
    t = expr.check(ctx, scope)
    if t not in ("BOOL", "NULL"):
        raise invalid("%s clause should return type BOOL, but returns %s"
                      % (clause, t), expr.pos)


def _check_assign(ctx, scope, table, name, npos, expr, insert=False):
    """Type-check `name = expr` for table; returns (field, coerced expr)."""
    f = table.field(name)
    if f is None:
        if insert:
            raise invalid("Column %s is not present in table %s"
                          % (name, table.fqn), npos)
        raise invalid("Unrecognized name: %s" % name, npos)
    if isinstance(expr, Literal) and expr.type == "NULL" and \
            f.mode == "REQUIRED":
        raise invalid("Cannot assign NULL to REQUIRED field %s" % f.name,
                      expr.pos)
    t = expr.check(ctx, scope)
    return f, _coerce_for(expr, t, f, insert)


def _coerce_for(expr, t, f, insert):
    if not can_coerce(expr, t, f.type):
        if insert:
            raise invalid("Value has type %s which cannot be inserted into "
                          "column %s, which has type %s" % (t, f.name, f.type),
                          expr.pos)
        raise invalid("Value of type %s cannot be assigned to %s, which has "
                      "type %s" % (t, f.name, f.type), expr.pos)
    return coerce(expr, t, f.type) if t != "NULL" else expr


def _required_check(table, values):
    for f in table.fields:
        if f.mode == "REQUIRED" and values.get(f.name) is None:
            raise BQError("invalidQuery", "Required field %s cannot be null"
                          % f.name)


class QueryResult:
    def __init__(self, statement_type, fields=None, rows=None, affected=None,
                 inserted=0, updated=0, deleted=0):
        self.statement_type = statement_type
        self.fields = fields or []          # [(name, type)]
        self.rows = rows or []              # [[value, ...]]
        self.affected = affected            # None for SELECT
        self.inserted, self.updated, self.deleted = inserted, updated, deleted

    @property
    def is_dml(self):
        return self.affected is not None

    def schema_json(self):
        return {"fields": [{"name": n, "type": legacy_type_name(t),
                            "mode": "NULLABLE"} for n, t in self.fields]}

    def rows_json(self, int64_timestamp=False):
        return [{"f": [{"v": format_value(v, t, int64_timestamp)}
                       for v, (_, t) in zip(r, self.fields)]}
                for r in self.rows]

    def dml_stats_json(self):
        return {"insertedRowCount": str(self.inserted),
                "updatedRowCount": str(self.updated),
                "deletedRowCount": str(self.deleted)}


# --------------------------------------------------------------------------
# Statements

class Select:
    def __init__(self, items, distinct, table, alias, where, order, limit,
                 offset, pos):
        self.items, self.distinct = items, distinct
        self.table_ref, self.alias, self.where = table, alias, where
        self.order, self.limit, self.offset, self.pos = \
            order, limit, offset, pos

    def check(self, ctx, outer=None):
        """Type-check in the context of an outer scope; returns the output
        columns [(name, type)]."""
        self.table = None
        bindings = []
        if isinstance(self.table_ref, Unnest):
            self.table = Derived(ctx, self.table_ref, self.alias, outer)
            bindings.append(Binding([self.table.table_id],
                                    self.table.columns()))
        elif self.table_ref is not None:
            self.table = ctx.table(self.table_ref)
            bindings.append(Binding([self.alias or self.table.table_id],
                                    self.table.columns()))
        self.scope = Scope(bindings, outer)
        self.out = []       # (name, type, expr|None, source column)
        self.aggs = []
        anon = 0
        saved, ctx.agg_ok = ctx.agg_ok, True
        for e, alias, pos in self.items:
            if e == "*":
                if self.table is None:
                    raise invalid("SELECT * must have a FROM clause", pos)
                for name, typ in self.table.columns():
                    self.out.append((name, typ, None, name))
                continue
            t = e.check(ctx, self.scope)
            if t == "NULL":
                t = "INT64"
            if alias is None and isinstance(e, ColumnRef):
                alias = e.col
            if alias is None:
                alias, anon = "f%d_" % anon, anon + 1
            self.out.append((alias, t, e, None))
            self.aggs += [n for n in e.walk() if isinstance(n, Agg)]
        ctx.agg_ok = False
        if self.aggs:
            for name, typ, e, src in self.out:
                bad = [n for n in self._outside_aggs(e)
                       if isinstance(n, ColumnRef) and n.up == 0]
                if e is None or bad:
                    col = src if e is None else bad[0].col
                    p = self.pos if e is None else bad[0].pos
                    raise invalid("SELECT list expression references column "
                                  "%s which is neither grouped nor aggregated"
                                  % col, p)
        _check_bool(ctx, self.scope, self.where, "WHERE")
        self.order_keys = []
        for e, desc in self.order:
            idx = None
            if isinstance(e, ColumnRef) and len(e.parts) == 1:
                names = [o[0].lower() for o in self.out]
                if e.name.lower() in names:
                    idx = names.index(e.name.lower())
            if idx is None:
                e.check(ctx, self.scope)
            self.order_keys.append((idx, e, desc))
        ctx.agg_ok = saved
        for lim in (self.limit, self.offset):
            if lim is not None and lim.check(ctx, self.scope) != "INT64":
                raise invalid("LIMIT expects an integer literal or parameter",
                              lim.pos)
        return [(n, t) for n, t, _, _ in self.out]

    @staticmethod
    def _outside_aggs(e):
        if e is None or isinstance(e, Agg):
            return
        yield e
        for c in e.children():
            yield from Select._outside_aggs(c)

    def source_rows(self, ctx):
        if isinstance(self.table, Derived):
            return [_ValuesRow(v) for v in self.table.values(ctx)]
        return self.table.rows if self.table is not None else [None]

    def run_rows(self, ctx, outer_env=None):
        envs = []
        for row in self.source_rows(ctx):
            env = Env([row.values] if row is not None else [], outer_env)
            if self.where is None or self.where.ev(ctx, env) is True:
                envs.append(env)
        if self.aggs:
            for a in self.aggs:
                a.compute(ctx, envs)
            envs = [Env([], outer_env)]
        results = []
        for env in envs:
            vals = [env.rows[0].get(src) if e is None else e.ev(ctx, env)
                    for _, _, e, src in self.out]
            results.append((env, vals))
        if self.order_keys:
            def key_cmp(a, b):
                for idx, e, desc in self.order_keys:
                    x = a[1][idx] if idx is not None else e.ev(ctx, a[0])
                    y = b[1][idx] if idx is not None else e.ev(ctx, b[0])
                    if x is None or y is None:
                        c = (x is not None) - (y is not None)
                    else:
                        c = _cmp(x, y)
                    if c:
                        return -c if desc else c
                return 0
            results.sort(key=functools.cmp_to_key(key_cmp))
        rows = [vals for _, vals in results]
        if self.distinct:
            seen, uniq = set(), []
            for r in rows:
                k = tuple(r)
                if k not in seen:
                    seen.add(k)
                    uniq.append(r)
            rows = uniq
        off = self.offset.ev(ctx, None) if self.offset is not None else 0
        if self.limit is not None:
            lim = self.limit.ev(ctx, None)
            rows = rows[off or 0:(off or 0) + (lim or 0)]
        elif off:
            rows = rows[off:]
        return [(n, t) for n, t, _, _ in self.out], rows

    def run(self, ctx):
        self.check(ctx)
        fields, rows = self.run_rows(ctx)
        return QueryResult("SELECT", fields, rows)


class Insert:
    def __init__(self, table, cols, rows, select, pos):
        self.table_ref, self.cols, self.rows, self.select, self.pos = \
            table, cols, rows, select, pos

    def run(self, ctx):
        table = ctx.table(self.table_ref)
        cols = self.cols
        if cols is None:
            cols = [(f.name, self.table_ref.pos) for f in table.fields]
        fields, seen = [], set()
        for name, npos in cols:
            f = table.field(name)
            if f is None:
                raise invalid("Column %s is not present in table %s"
                              % (name, table.fqn), npos)
            if f.name in seen:
                raise invalid("INSERT has columns with duplicate name: %s"
                              % f.name, npos)
            seen.add(f.name)
            fields.append(f)
        new = []
        if self.rows is not None:
            scope = Scope()
            checked = []
            for exprs in self.rows:
                if len(exprs) != len(fields):
                    raise invalid("Inserted row has wrong column count; Has "
                                  "%d, expected %d" % (len(exprs),
                                                       len(fields)),
                                  exprs[0].pos)
                checked.append([_check_assign(ctx, scope, table, f.name, None,
                                              e, insert=True)[1]
                                for f, e in zip(fields, exprs)])
            for exprs in checked:
                new.append({f.name: e.ev(ctx, Env())
                            for f, e in zip(fields, exprs)})
        else:
            out = self.select.check(ctx)
            if len(out) != len(fields):
                raise invalid("Inserted row has wrong column count; Has %d, "
                              "expected %d" % (len(out), len(fields)),
                              self.select.pos)
            for (_, t, e, _), f in zip(self.select.out, fields):
                _coerce_for(e if e is not None else Literal(None, t, None),
                            t, f, insert=True)
            _, rows = self.select.run_rows(ctx)
            for vals in rows:
                new.append({f.name: coerce_value(v, f.type)
                            for f, v in zip(fields, vals)})
        for values in new:
            for f in table.fields:
                values.setdefault(f.name, None)
            _required_check(table, values)
        table.rows.extend(Row(v, ctx.now, False) for v in new)
        return QueryResult("INSERT", affected=len(new), inserted=len(new))


def _target_binding(table, alias):
    names = [alias] if alias else [table.table_id]
    return Binding(names, table.columns())


def _check_sets(ctx, scope, table, sets):
    out, seen = [], set()
    for name, npos, e in sets:
        f, ce = _check_assign(ctx, scope, table, name, npos, e)
        if f.name in seen:
            raise invalid("Update item %s overlaps with %s"
                          % (f.name, f.name), npos)
        seen.add(f.name)
        out.append((f, ce))
    return out


def _apply_sets(ctx, sets, env, row):
    new = dict(row.values)
    for f, e in sets:
        new[f.name] = e.ev(ctx, env)
    return new


class Update:
    def __init__(self, table, alias, sets, where, pos):
        self.table_ref, self.alias, self.sets, self.where, self.pos = \
            table, alias, sets, where, pos

    def run(self, ctx):
        table = ctx.table(self.table_ref)
        scope = Scope([_target_binding(table, self.alias)])
        sets = _check_sets(ctx, scope, table, self.sets)
        if self.where is None:
            raise invalid("UPDATE must have a WHERE clause", self.pos)
        _check_bool(ctx, scope, self.where, "WHERE")
        hits = [r for r in table.rows
                if self.where.ev(ctx, Env([r.values])) is True]
        ctx.streaming_check(table, hits)
        updates = [(r, _apply_sets(ctx, sets, Env([r.values]), r))
                   for r in hits]
        for r, values in updates:
            _required_check(table, values)
        for r, values in updates:
            r.values = values
        return QueryResult("UPDATE", affected=len(hits), updated=len(hits))


class Delete:
    def __init__(self, table, alias, where, pos):
        self.table_ref, self.alias, self.where, self.pos = \
            table, alias, where, pos

    def run(self, ctx):
        table = ctx.table(self.table_ref)
        scope = Scope([_target_binding(table, self.alias)])
        if self.where is None:
            raise invalid("DELETE must have a WHERE clause", self.pos)
        _check_bool(ctx, scope, self.where, "WHERE")
        hits = [r for r in table.rows
                if self.where.ev(ctx, Env([r.values])) is True]
        ctx.streaming_check(table, hits)
        gone = {id(r) for r in hits}
        table.rows[:] = [r for r in table.rows if id(r) not in gone]
        return QueryResult("DELETE", affected=len(hits), deleted=len(hits))


class MergeClause:
    def __init__(self, kind, cond, action, pos):
        self.kind, self.cond, self.action, self.pos = kind, cond, action, pos


class Merge:
    def __init__(self, target, talias, source, salias, on, clauses, pos):
        self.target_ref, self.talias = target, talias
        self.source, self.salias = source, salias
        self.on, self.clauses, self.pos = on, clauses, pos

    def _check(self, ctx, table):
        if isinstance(self.source, (Select, Union)):
            scols = self.source.check(ctx)
            self.source_names = [self.salias] if self.salias else []
        elif isinstance(self.source, Unnest):
            self.source_table = Derived(ctx, self.source, self.salias)
            scols = self.source_table.columns()
            self.source_names = [self.salias] if self.salias else []
        else:
            stable = ctx.table(self.source)
            scols = stable.columns()
            self.source_table = stable
            self.source_names = [self.salias or stable.table_id]
        tb = _target_binding(table, self.talias)
        sb = Binding(self.source_names, scols)
        self.scols = scols
        _check_bool(ctx, Scope([tb, sb]), self.on, "ON")
        for c in self.clauses:
            if c.kind == "MATCHED":
                scope = Scope([tb, sb])
            elif c.kind == "NOT_MATCHED":
                scope = Scope([Binding([], []), sb])
            else:
                scope = Scope([tb, Binding([], [])])
            _check_bool(ctx, scope, c.cond, "WHEN")
            if c.action[0] == "UPDATE":
                c.sets = _check_sets(ctx, scope, table, c.action[1])
            elif c.action[0] == "INSERT":
                cols, values = c.action[1], c.action[2]
                if values is None:        # INSERT ROW
                    values = []
                    for f in table.fields:
                        ref = ColumnRef([(f.name, c.pos)])
                        values.append(ref)
                    cols = [(f.name, c.pos) for f in table.fields]
                elif cols is None:
                    cols = [(f.name, c.pos) for f in table.fields]
                if len(cols) != len(values):
                    raise invalid("Inserted row has wrong column count; Has "
                                  "%d, expected %d" % (len(values), len(cols)),
                                  values[0].pos if values else c.pos)
                c.inserts = [_check_assign(ctx, scope, table, n, p, e,
                                           insert=True)
                             for (n, p), e in zip(cols, values)]

    def run(self, ctx):
        table = ctx.table(self.target_ref)
        self._check(ctx, table)
        if isinstance(self.source, (Select, Union)):
            _, srows = self.source.run_rows(ctx)
            srows = [{n: v for (n, _), v in zip(self.scols, r)}
                     for r in srows]
        elif isinstance(self.source, Unnest):
            srows = self.source_table.values(ctx)
        else:
            srows = [dict(r.values) for r in self.source_table.rows]
        matches = {}                 # id(target row) -> [source dicts]
        matched_sources = set()
        for r in table.rows:
            for j, s in enumerate(srows):
                if self.on.ev(ctx, Env([r.values, s])) is True:
                    matches.setdefault(id(r), []).append(s)
                    matched_sources.add(j)
        empty = {}
        updates, deletes, inserts = {}, set(), []
        touched = []
        for r in table.rows:
            ms = matches.get(id(r))
            if ms:
                touched.append(r)
                clause_rows = [(c, s) for s in ms for c in
                               self._first(ctx, "MATCHED", Env([r.values, s]))]
                if len(clause_rows) > 1:
                    raise BQError("invalidQuery", "UPDATE/MERGE must match at "
                                  "most one source row for each target row")
                for c, s in clause_rows:
                    self._act(ctx, c, r, Env([r.values, s]), updates, deletes)
            else:
                env = Env([r.values, empty])
                for c in self._first(ctx, "NOT_MATCHED_BY_SOURCE", env):
                    touched.append(r)
                    self._act(ctx, c, r, env, updates, deletes)
        for j, s in enumerate(srows):
            if j in matched_sources:
                continue
            env = Env([empty, s])
            for c in self._first(ctx, "NOT_MATCHED", env):
                values = {f.name: None for f in table.fields}
                for f, e in c.inserts:
                    values[f.name] = e.ev(ctx, env)
                inserts.append(values)
        ctx.streaming_check(table, touched)
        for values in list(updates.values()) + inserts:
            _required_check(table, values)
        by_id = {id(r): r for r in table.rows}
        for rid, values in updates.items():
            by_id[rid].values = values
        table.rows[:] = [r for r in table.rows if id(r) not in deletes]
        table.rows.extend(Row(v, ctx.now, False) for v in inserts)
        n = len(updates) + len(deletes) + len(inserts)
        return QueryResult("MERGE", affected=n, inserted=len(inserts),
                           updated=len(updates), deleted=len(deletes))

    def _first(self, ctx, kind, env):
        for c in self.clauses:
            if c.kind == kind and (c.cond is None or
                                   c.cond.ev(ctx, env) is True):
                return [c]
        return []

    @staticmethod
    def _act(ctx, c, r, env, updates, deletes):
        if c.action[0] == "DELETE":
            deletes.add(id(r))
        else:
            updates[id(r)] = _apply_sets(ctx, c.sets, env, r)


# --------------------------------------------------------------------------
# Store

def _bind_param(p, where):
    label = p.get("name") or "#%d" % (where + 1)
    return _bind_value(p.get("parameterType") or {},
                       p.get("parameterValue") or {}, label)


def _param_type(ptype, label):
    """REST QueryParameterType -> the engine's type string."""
    typ = norm_type(ptype.get("type"))
    if typ == "ARRAY":
        return "ARRAY<%s>" % _param_type(ptype.get("arrayType") or {}, label)
    if typ == "STRUCT":
        fields = ["%s %s" % (f.get("name") or "_field_%d" % (i + 1),
                             _param_type(f.get("type") or {}, label))
                  for i, f in enumerate(ptype.get("structTypes") or [])]
        return "STRUCT<%s>" % ", ".join(fields)
    if typ not in SCALAR_TYPES:
        raise BQError("invalidQuery", "Unsupported query parameter type %s "
                      "for parameter %s" % (typ, label))
    return typ


def _bind_value(ptype, pval, label):
    """(type string, value): ARRAY -> list, STRUCT -> dict by field name."""
    t = _param_type(ptype, label)
    return t, _param_value(ptype, pval, label)


def _param_value(ptype, pval, label):
    typ = norm_type(ptype.get("type"))
    if pval is None:
        return None
    if typ == "ARRAY":
        et = ptype.get("arrayType") or {}
        return [_param_value(et, v, label)
                for v in pval.get("arrayValues") or []]
    if typ == "STRUCT":
        sv = pval.get("structValues") or {}
        out = {}
        for i, f in enumerate(ptype.get("structTypes") or []):
            name = f.get("name") or "_field_%d" % (i + 1)
            out[name] = _param_value(f.get("type") or {}, sv.get(name),
                                     label)
        return out
    return _convert_param(pval.get("value"), typ, label)


def _convert_param(raw, typ, label):
    if raw is None:
        return None
    if isinstance(raw, bool):           # a JSON boolean (the value field takes any scalar)
        raw = "true" if raw else "false"
    try:
        return parse_value(raw if isinstance(raw, str) else json.dumps(raw), typ)
    except ValueError:
        raise BQError("invalidQuery", "Invalid value '%s' for query parameter "
                      "%s of type %s" % (raw, label, typ)) from None


class BigQueryStore:
    """Datasets, tables and rows, plus SQL execution.  Not locked: the
    service layer serializes access."""

    def __init__(self, now=time.time, stream_buffer_seconds=1800,
                 location="US"):
        self.now = now
        self.stream_buffer_seconds = stream_buffer_seconds
        self.location = location
        self.datasets = {}          # (project, dataset) -> resource dict
        self.tables = {}            # (project, dataset, table) -> Table
        self.lock = threading.RLock()

    def in_streaming_buffer(self, row, now=None):
        now = self.now() if now is None else now
        return row.streamed and now - row.written_at < \
            self.stream_buffer_seconds

    def get_dataset(self, project, dataset):
        ds = self.datasets.get((project, dataset))
        if ds is None:
            raise BQError("notFound", "Not found: Dataset %s:%s"
                          % (project, dataset), "", 404)
        return ds

    def get_table(self, project, dataset, table):
        t = self.tables.get((project, dataset, table))
        if t is None:
            if (project, dataset) not in self.datasets:
                raise BQError("notFound", "Not found: Dataset %s:%s was not "
                              "found in location %s"
                              % (project, dataset, self.location), "", 404)
            raise BQError("notFound", "Not found: Table %s:%s.%s was not "
                          "found in location %s"
                          % (project, dataset, table, self.location), "", 404)
        return t

    def create_dataset(self, project, dataset, resource=None):
        res = dict(resource or {})
        res["datasetReference"] = {"projectId": project, "datasetId": dataset}
        self.datasets[(project, dataset)] = res
        return res

    def create_table(self, project, dataset, table, fields, resource=None):
        self.get_dataset(project, dataset)
        t = Table(project, dataset, table, fields, resource)
        self.tables[(project, dataset, table)] = t
        return t

    def execute(self, sql, params=None, project="project",
                default_dataset=None, now=None):
        """Run one GoogleSQL statement.  params: the REST queryParameters
        list.  default_dataset: (project, dataset) or None.  Returns a
        QueryResult; raises BQError.  Atomic: a failing statement changes
        nothing."""
        named, positional = {}, []
        for i, p in enumerate(params or []):
            bound = _bind_param(p, i)
            if p.get("name"):
                named[p["name"].lower()] = bound
            else:
                positional.append(bound)
        stmt = Parser(sql).parse()
        ctx = Ctx(self, project, default_dataset, named, positional,
                  self.now() if now is None else now)
        return stmt.run(ctx)

    def insert_streamed(self, table, values, now=None):
        table.rows.append(Row(values, self.now() if now is None else now,
                              True))
