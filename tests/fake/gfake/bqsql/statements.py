"""Row sources and statements: table references, UNNEST sources, SELECT,
UNION, INSERT, UPDATE, DELETE and MERGE; the in-memory Table/Row/Field, the
per-statement Ctx (parameters, clock, streaming-buffer rule) and
QueryResult.  Each statement's run(ctx) type-checks, then executes
atomically (a failing statement changes nothing).
"""
import functools

from .values import (BQError, STREAMING_BUFFER_MSG, _NUM_RANK, coerce_value,
                     format_value, invalid, legacy_type_name, norm_type,
                     ts_from_epoch)
from .expressions import (Agg, Binding, Coerce, ColumnRef, Compare, Env,
                          Literal, Logic, Param, Scope, _cmp,
                          can_coerce, coerce)


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


def _conjuncts(e):
    if isinstance(e, Logic) and e.op == "AND":
        return _conjuncts(e.left) + _conjuncts(e.right)
    return [e]


def _side(e):
    """0 (the target) or 1 (the source) when e reads the columns of that
    row only (plain references, implicit coercions, constants); else None."""
    sides = set()
    for n in e.walk():
        if isinstance(n, ColumnRef):
            if n.up != 0:
                return None
            sides.add(n.idx)
        elif not isinstance(n, (Coerce, Literal, Param)):
            return None
    return sides.pop() if len(sides) == 1 else None


def _key(ctx, exprs, env):
    """The tuple of key values, or None when one is NULL (NULL = x is
    never TRUE); raises _NoIndex for a value the index cannot hold."""
    out = []
    for e in exprs:
        v = e.ev(ctx, env)
        if v is None:
            return None
        if isinstance(v, float) and v != v:
            raise _NoIndex()          # NaN: _cmp calls it equal to anything
        out.append(v)
    return tuple(out)


class _NoIndex(Exception):
    pass


def _equi_join(ctx, on, trows, srows):
    """The (target row, source index) pairs that can satisfy ON, found
    through a hash index of the source on ON's equality conjuncts
    (`T.a = S.a AND ...`), so a MERGE costs O(target + source) instead of
    comparing every row with every row.  ON itself is still evaluated on
    each pair, so the result is the nested loop's.  None when ON has no
    such conjunct or a key cannot be hashed: the caller then pairs every
    row with every row (which also raises any evaluation error in the
    nested loop's order)."""
    if not trows or not srows:
        return None
    tk, sk = [], []
    for c in _conjuncts(on):
        if isinstance(c, Compare) and c.op == "=":
            a, b = _side(c.left), _side(c.right)
            if (a, b) == (0, 1):
                tk.append(c.left)
                sk.append(c.right)
            elif (a, b) == (1, 0):
                tk.append(c.right)
                sk.append(c.left)
    if not tk:
        return None
    empty = {}
    try:
        index = {}
        for j, s in enumerate(srows):
            k = _key(ctx, sk, Env([empty, s]))
            if k is not None:
                index.setdefault(k, []).append(j)
        pairs = []
        if all(isinstance(e, ColumnRef) and e.type != "FLOAT64" for e in tk):
            # the usual `T.id = S.id`: read the values straight from the rows
            # (what ColumnRef.ev does), as this walks the whole table; no
            # FLOAT64, so no NaN to look for
            cols = [e.col for e in tk]
            get = index.get
            for r in trows:
                v = r.values
                hit = get(tuple([v.get(c) for c in cols]))
                if hit is not None:
                    pairs.extend([(r, j) for j in hit])
        else:
            for r in trows:
                k = _key(ctx, tk, Env([r.values, empty]))
                if k is not None:
                    pairs.extend((r, j) for j in index.get(k, ()))
    except (_NoIndex, TypeError, BQError):
        return None
    return pairs


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
        matched_rows = []            # in table order
        matched_sources = set()
        empty = {}
        pairs = _equi_join(ctx, self.on, table.rows, srows)
        if pairs is None:
            pairs = ((r, j) for r in table.rows for j in range(len(srows)))
        for r, j in pairs:
            s = srows[j]
            if self.on.ev(ctx, Env([r.values, s])) is True:
                ms = matches.get(id(r))
                if ms is None:
                    ms = matches[id(r)] = []
                    matched_rows.append(r)
                ms.append(s)
                matched_sources.add(j)
        updates, deletes, inserts = {}, set(), []
        touched = []
        # Only a NOT MATCHED BY SOURCE clause needs every target row; else
        # the matched ones (in table order, as the full walk met them).
        by_source = any(c.kind == "NOT_MATCHED_BY_SOURCE" for c in self.clauses)
        for r in (table.rows if by_source else matched_rows):
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
        if updates:
            by_id = {id(r): r for r in touched}
            for rid, values in updates.items():
                by_id[rid].values = values
        if deletes:
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
