"""Scopes (check time), environments (run time) and the expression AST.
Each node has check(ctx, scope) -> type (annotating itself: column
bindings, implicit coercions) and ev(ctx, env) -> value.
"""
import datetime as _dt
import re
import uuid
from decimal import Decimal, InvalidOperation

from .values import (BQError, SCALAR_TYPES, UTC, _NUM_RANK, coerce_value,
                     format_value, invalid, parse_value)


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
