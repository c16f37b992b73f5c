"""BigQueryStore: datasets and tables, and execute(), which binds the REST
queryParameters (scalars, ARRAY, STRUCT), parses and runs one statement.
"""
import json
import threading
import time

from .values import BQError, SCALAR_TYPES, norm_type, parse_value
from .statements import Ctx, Row, Table
from .parser import Parser


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
