"""Recursive-descent parser: tokens -> one statement AST (statements.py,
expressions.py), with BigQuery's "Syntax error: Expected ... but got ..."
messages.
"""
from .values import invalid, norm_type, parse_value
from .lexer import RESERVED, tokenize
from .expressions import (Agg, Arith, Between, Cast, ColumnRef, Compare,
                          Exists, Func, InArray, InList, InSubquery,
                          Interval, IsNull, Like, Literal, Logic, Neg, Not,
                          Param)
from .statements import (Delete, Insert, Merge, MergeClause, Select,
                         TableRef, Union, Unnest, Update)


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
