"""BigQuery v2 REST handlers for the fake, as plain functions (no HTTP).

    svc = BigQueryService(store_clock=time.time, stream_buffer_seconds=1800)
    status, body = svc.handle("POST", "projects/p/queries", {}, {...})

`path` is the part after ".../bigquery/v2/" (a leading "/" or
"bigquery/v2/" is tolerated); `query` is a dict of query-string values
(single values or lists as from urllib.parse.parse_qs); `body` is the
decoded JSON request (dict), raw bytes/str, or None.  The result is
(HTTP status, JSON-able dict).  Every call takes one lock, so the service
can sit behind a threaded HTTP server.

Supported: datasets.get/insert, tables.get/insert, tabledata.insertAll,
jobs.query, jobs.insert, jobs.get, jobs.getQueryResults.
"""

import hashlib
import json
import re
import threading
import time
import uuid
from urllib.parse import unquote

try:
    from . import bqsql
except ImportError:            # imported as a top-level module
    import bqsql

BQError = bqsql.BQError

STANDARD_SQL_HINT = ("[Try using standard SQL (https://cloud.google.com/"
                     "bigquery/docs/reference/standard-sql/"
                     "enabling-standard-sql)].")

_STATUS = {400: "INVALID_ARGUMENT", 403: "PERMISSION_DENIED",
           404: "NOT_FOUND", 405: "METHOD_NOT_ALLOWED",
           409: "ALREADY_EXISTS", 500: "INTERNAL", 501: "UNIMPLEMENTED"}


def error_response(code, message, reason, location=None):
    """(status, body) in BigQuery's v1-style error shape."""
    err = {"message": message, "domain": "global", "reason": reason}
    if location:
        err["location"] = location
        err["locationType"] = "other"
    return code, {"error": {"code": code, "message": message,
                            "errors": [err],
                            "status": _STATUS.get(code, "UNKNOWN")}}


def _bq_error_response(e):
    return error_response(e.status, e.message, e.reason, e.location)


def _error_proto(e):
    d = {"reason": e.reason, "message": e.message}
    if e.location:
        d["location"] = e.location
    return d


def _ms(t):
    return str(int(t * 1000))


class _Job:
    def __init__(self, project, job_id, location, configuration, created,
                 pending_polls):
        self.project, self.job_id, self.location = project, job_id, location
        self.configuration = configuration
        self.created = created
        self.ended = created
        self.pending = pending_polls
        self.result = None          # bqsql.QueryResult
        self.error = None           # BQError

    @property
    def ref(self):
        return {"projectId": self.project, "jobId": self.job_id,
                "location": self.location}

    @property
    def full_id(self):
        return "%s:%s.%s" % (self.project, self.location, self.job_id)

    def poll(self):
        """True when the job is reported complete (slow_queries knob)."""
        if self.pending > 0:
            self.pending -= 1
            return False
        return True

    def resource(self, done):
        status = {"state": "DONE" if done else "RUNNING"}
        stats = {"creationTime": _ms(self.created),
                 "startTime": _ms(self.created)}
        if done:
            stats["endTime"] = _ms(self.ended)
            if self.error is not None:
                status["errorResult"] = _error_proto(self.error)
                status["errors"] = [_error_proto(self.error)]
            elif self.result is not None:
                q = {"statementType": self.result.statement_type,
                     "totalBytesProcessed": "0", "cacheHit": False}
                if self.result.is_dml:
                    q["numDmlAffectedRows"] = str(self.result.affected)
                    q["dmlStats"] = self.result.dml_stats_json()
                else:
                    q["schema"] = self.result.schema_json()
                stats["query"] = q
                stats["totalBytesProcessed"] = "0"
        cfg = dict(self.configuration)
        cfg.setdefault("jobType", "QUERY")
        return {"kind": "bigquery#job", "etag": self.full_id,
                "id": self.full_id,
                "selfLink": "https://bigquery.googleapis.com/bigquery/v2/"
                            "projects/%s/jobs/%s?location=%s"
                            % (self.project, self.job_id, self.location),
                "user_email": "fake@example.com",
                "jobReference": self.ref, "configuration": cfg,
                "status": status, "statistics": stats}


def _first(query, key, default=None):
    v = (query or {}).get(key, default)
    if isinstance(v, (list, tuple)):
        v = v[0] if v else default
    return v


def _page(query, items, key, out):
    """maxResults / pageToken (an offset) over a list answer."""
    start = int(_first(query, "pageToken", None) or 0)
    mr = _first(query, "maxResults", None)
    end = len(items) if mr in (None, "") else start + int(mr)
    if items[start:end]:
        out[key] = items[start:end]
    if end < len(items):
        out["nextPageToken"] = str(end)
    return out


def _truthy(v):
    if isinstance(v, str):
        return v.lower() == "true"
    return bool(v)


class BigQueryService:
    """In-memory BigQuery.  Test knobs (plain attributes):

    slow_queries      int: every new query job answers jobComplete=false
                      (state RUNNING) to this many polls (jobs.query itself
                      counts as the first) before reporting its result.
    stream_buffer_seconds  how long insertAll rows stay in the streaming
                      buffer (UPDATE/DELETE/MERGE over them fails).
    insert_id_ttl     seconds an insertId is remembered (default 60).
    request_id_ttl    seconds a jobs.query requestId is remembered (900).
    query_log         list of (sql, queryParameters) of every query run.
    """

    def __init__(self, store_clock=time.time, stream_buffer_seconds=1800,
                 location="US", insert_id_ttl=60, request_id_ttl=900,
                 slow_queries=0):
        self.clock = store_clock
        self.store = bqsql.BigQueryStore(
            now=store_clock, stream_buffer_seconds=stream_buffer_seconds,
            location=location)
        self.location = location
        self.insert_id_ttl = insert_id_ttl
        self.request_id_ttl = request_id_ttl
        self.slow_queries = slow_queries
        self.lock = threading.RLock()
        self.jobs = {}              # (project, jobId) -> _Job
        self.request_ids = {}       # (project, requestId) -> (t, fp, jobId)
        self.cancelled = []         # job ids, in the order jobs.cancel named them
        self.insert_ids = {}        # (project, ds, table, insertId) -> t
        self.query_log = []
        self.routes = [
            ("POST", r"projects/([^/]+)/datasets/([^/]+)/tables/([^/]+)"
                     r"/insertAll", self.tabledata_insert_all),
            ("GET", r"projects/([^/]+)/datasets/([^/]+)/tables/([^/]+)/data",
             self.tabledata_list),
            ("GET", r"projects/([^/]+)/datasets/([^/]+)/tables/([^/]+)",
             self.tables_get),
            ("DELETE", r"projects/([^/]+)/datasets/([^/]+)/tables/([^/]+)",
             self.tables_delete),
            ("GET", r"projects/([^/]+)/datasets/([^/]+)/tables",
             self.tables_list),
            ("GET", r"projects/([^/]+)/datasets", self.datasets_list),
            ("DELETE", r"projects/([^/]+)/datasets/([^/]+)",
             self.datasets_delete),
            ("GET", r"projects/([^/]+)/jobs", self.jobs_list),
            ("POST", r"projects/([^/]+)/datasets/([^/]+)/tables",
             self.tables_insert),
            ("GET", r"projects/([^/]+)/datasets/([^/]+)", self.datasets_get),
            ("POST", r"projects/([^/]+)/datasets", self.datasets_insert),
            ("POST", r"projects/([^/]+)/queries", self.jobs_query),
            ("GET", r"projects/([^/]+)/queries/([^/]+)",
             self.jobs_get_query_results),
            ("POST", r"projects/([^/]+)/jobs", self.jobs_insert),
            ("GET", r"projects/([^/]+)/jobs/([^/]+)", self.jobs_get),
            ("POST", r"projects/([^/]+)/jobs/([^/]+)/cancel", self.jobs_cancel),
        ]

    # ---- plumbing -----------------------------------------------------
    @property
    def stream_buffer_seconds(self):
        return self.store.stream_buffer_seconds

    @stream_buffer_seconds.setter
    def stream_buffer_seconds(self, v):
        self.store.stream_buffer_seconds = v

    def handle(self, method, path, query=None, body=None):
        path = path.split("?", 1)[0].lstrip("/")
        if path.startswith("bigquery/v2/"):
            path = path[len("bigquery/v2/"):]
        path = path.rstrip("/")
        if isinstance(body, (bytes, bytearray)):
            body = body.decode("utf-8")
        if isinstance(body, str):
            try:
                body = json.loads(body) if body.strip() else None
            except ValueError as e:
                return error_response(400, "Invalid JSON payload received. "
                                      "%s" % e, "parseError")
        if body is not None and not isinstance(body, dict):
            return error_response(400, "Invalid JSON payload received. "
                                  "Expected an object.", "parseError")
        matched_path = False
        for verb, rx, fn in self.routes:
            m = re.fullmatch(rx, path)
            if not m:
                continue
            matched_path = True
            if verb != method.upper():
                continue
            with self.lock:
                try:
                    return fn(*[unquote(g) for g in m.groups()],
                              query=query or {}, body=body or {})
                except BQError as e:
                    return _bq_error_response(e)
        if matched_path:
            return error_response(405, "Method not allowed in fake: %s %s"
                                  % (method, path), "notImplemented")
        return error_response(404, "Not found: URL %s" % path, "notFound")

    # ---- test helpers -------------------------------------------------
    def create_dataset(self, project, dataset):
        with self.lock:
            return self.store.create_dataset(project, dataset)

    def create_table(self, project, dataset, table, fields):
        """fields: [{"name":..., "type":..., "mode":...}]"""
        with self.lock:
            if (project, dataset) not in self.store.datasets:
                self.store.create_dataset(project, dataset)
            # tables.get shows the schema of a table made here, as it does
            # for one made by tables.insert
            res = {"schema": {"fields": [dict(f) for f in fields]},
                   "creationTime": _ms(self.clock()),
                   "lastModifiedTime": _ms(self.clock())}
            return self.store.create_table(project, dataset, table, fields,
                                           res)

    def dump_table(self, project, dataset, table, with_meta=False):
        """Rows as dicts of Python values (int, str, datetime, ...).  With
        with_meta, each dict also has _streamed and _written_at."""
        with self.lock:
            t = self.store.get_table(project, dataset, table)
            out = []
            for r in t.rows:
                d = dict(r.values)
                if with_meta:
                    d["_streamed"] = r.streamed
                    d["_written_at"] = r.written_at
                out.append(d)
            return out

    def execute(self, sql, params=None, project="project"):
        """Run GoogleSQL directly (bypassing REST); returns QueryResult."""
        with self.lock:
            return self.store.execute(sql, params, project)

    # ---- datasets -----------------------------------------------------
    def _dataset_resource(self, project, dataset):
        res = dict(self.store.get_dataset(project, dataset))
        res.update({"kind": "bigquery#dataset",
                    "id": "%s:%s" % (project, dataset),
                    "location": res.get("location", self.location)})
        return res

    def datasets_get(self, project, dataset, query, body):
        return 200, self._dataset_resource(project, dataset)

    def datasets_insert(self, project, query, body):
        ref = body.get("datasetReference") or {}
        ds = ref.get("datasetId")
        if not ds:
            return error_response(400, "Required parameter is missing: "
                                  "datasetReference.datasetId", "required")
        if (project, ds) in self.store.datasets:
            return error_response(409, "Already Exists: Dataset %s:%s"
                                  % (project, ds), "duplicate")
        res = dict(body)
        res["creationTime"] = res["lastModifiedTime"] = _ms(self.clock())
        res.setdefault("location", self.location)
        self.store.create_dataset(project, ds, res)
        return 200, self._dataset_resource(project, ds)

    def datasets_list(self, project, query, body):
        refs = sorted(d for p, d in self.store.datasets if p == project)
        items = [{"kind": "bigquery#dataset", "id": "%s:%s" % (project, d),
                  "datasetReference": {"projectId": project, "datasetId": d},
                  "location": self.location} for d in refs]
        return 200, _page(query, items, "datasets",
                          {"kind": "bigquery#datasetList"})

    def datasets_delete(self, project, dataset, query, body):
        self.store.get_dataset(project, dataset)
        tables = [k for k in self.store.tables if k[:2] == (project, dataset)]
        if tables and not _truthy(_first(query, "deleteContents", False)):
            return error_response(400, "Dataset %s:%s is still in use"
                                  % (project, dataset), "resourceInUse")
        for k in tables:
            del self.store.tables[k]
        del self.store.datasets[(project, dataset)]
        return 204, None

    # ---- tables -------------------------------------------------------
    def tables_list(self, project, dataset, query, body):
        self.store.get_dataset(project, dataset)
        items = [{"kind": "bigquery#table",
                  "id": "%s:%s.%s" % (p, d, t),
                  "tableReference": {"projectId": p, "datasetId": d,
                                     "tableId": t},
                  "type": "TABLE",
                  "creationTime": self.store.tables[(p, d, t)].resource.get(
                      "creationTime", "0")}
                 for (p, d, t) in sorted(self.store.tables)
                 if (p, d) == (project, dataset)]
        return 200, _page(query, items, "tables",
                          {"kind": "bigquery#tableList",
                           "totalItems": len(items)})

    def tables_delete(self, project, dataset, table, query, body):
        self.store.get_table(project, dataset, table)
        del self.store.tables[(project, dataset, table)]
        return 204, None

    def tabledata_list(self, project, dataset, table, query, body):
        """tabledata.list: rows in storage order, streamed ones included
        (the streaming buffer is readable), f/v form, paging by
        startIndex / pageToken / maxResults."""
        self.store.get_table(project, dataset, table)
        r = self.store.execute("SELECT * FROM `%s.%s.%s`"
                               % (project, dataset, table), None, project)
        rows = r.rows_json(_truthy(_first(
            query, "formatOptions.useInt64Timestamp", False)))
        start = int(_first(query, "pageToken", None) or
                    _first(query, "startIndex", 0) or 0)
        mr = _first(query, "maxResults", None)
        end = len(rows) if mr in (None, "") else start + int(mr)
        resp = {"kind": "bigquery#tableDataList", "etag": "fake",
                "totalRows": str(len(rows))}
        if rows[start:end]:
            resp["rows"] = rows[start:end]
        if end < len(rows):
            resp["pageToken"] = str(end)
        return 200, resp

    def _table_resource(self, t):
        now = self.clock()
        res = dict(t.resource)
        buffered = [r for r in t.rows if self.store.in_streaming_buffer(r,
                                                                        now)]
        res.update({
            "kind": "bigquery#table",
            "id": "%s:%s.%s" % (t.project, t.dataset, t.table_id),
            "tableReference": {"projectId": t.project, "datasetId": t.dataset,
                               "tableId": t.table_id},
            "numRows": str(len(t.rows) - len(buffered)),
            "type": "TABLE", "location": self.location,
        })
        if buffered:
            res["streamingBuffer"] = {
                "estimatedRows": str(len(buffered)), "estimatedBytes": "0",
                "oldestEntryTime": _ms(min(r.written_at for r in buffered))}
        return res

    def tables_get(self, project, dataset, table, query, body):
        return 200, self._table_resource(
            self.store.get_table(project, dataset, table))

    def tables_insert(self, project, dataset, query, body):
        ref = body.get("tableReference") or {}
        tid = ref.get("tableId")
        if not tid:
            return error_response(400, "Required parameter is missing: "
                                  "tableReference.tableId", "required")
        if (project, dataset) not in self.store.datasets:
            return error_response(404, "Not found: Dataset %s:%s"
                                  % (project, dataset), "notFound")
        if (project, dataset, tid) in self.store.tables:
            return error_response(409, "Already Exists: Table %s:%s.%s"
                                  % (project, dataset, tid), "duplicate")
        fields = (body.get("schema") or {}).get("fields") or []
        seen = set()
        for f in fields:
            name = f.get("name") or ""
            if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", name):
                return error_response(400, "Invalid field name \"%s\"." % name,
                                      "invalid")
            if name.lower() in seen:
                return error_response(400, "Field %s already exists in schema"
                                      % name, "invalid")
            seen.add(name.lower())
            t = bqsql.norm_type(f.get("type"))
            if t not in bqsql.SCALAR_TYPES | {"STRUCT", "JSON", "TIME",
                                              "GEOGRAPHY"}:
                return error_response(400, "Invalid value for type: %s is not "
                                      "a valid value" % f.get("type"),
                                      "invalid")
        res = dict(body)
        res["creationTime"] = res["lastModifiedTime"] = _ms(self.clock())
        t = self.store.create_table(project, dataset, tid, fields, res)
        return 200, self._table_resource(t)

    # ---- tabledata.insertAll -----------------------------------------
    def tabledata_insert_all(self, project, dataset, table, query, body):
        t = self.store.get_table(project, dataset, table)
        rows = body.get("rows") or []
        if not rows:
            return error_response(400, "No rows present in the request.",
                                  "invalid")
        skip_invalid = _truthy(body.get("skipInvalidRows", False))
        ignore_unknown = _truthy(body.get("ignoreUnknownValues", False))
        now = self.clock()
        for k, ts in list(self.insert_ids.items()):
            if now - ts >= self.insert_id_ttl:
                del self.insert_ids[k]
        accepted, errors = [], []        # accepted: (index, insertId, values)
        for i, row in enumerate(rows):
            values, errs = _convert_row(t, row.get("json") or {},
                                        ignore_unknown)
            if errs:
                errors.append({"index": i, "errors": errs})
            else:
                accepted.append((i, row.get("insertId"), values))
        if errors and not skip_invalid:
            stopped = [{"index": i, "errors": [{"reason": "stopped",
                                                "location": "",
                                                "debugInfo": "",
                                                "message": ""}]}
                       for i, _, _ in accepted]
            return 200, {"kind": "bigquery#tableDataInsertAllResponse",
                         "insertErrors": sorted(errors + stopped,
                                                key=lambda e: e["index"])}
        for _, iid, values in accepted:
            if iid:
                key = (project, dataset, table, iid)
                if key in self.insert_ids:
                    continue             # best-effort de-duplication
                self.insert_ids[key] = now
            self.store.insert_streamed(t, values, now)
        resp = {"kind": "bigquery#tableDataInsertAllResponse"}
        if errors:
            resp["insertErrors"] = errors
        return 200, resp

    # ---- queries and jobs --------------------------------------------
    def _run_query(self, project, q, job_id, location):
        """Create a job running QueryRequest/JobConfigurationQuery q."""
        cfg = {"query": {k: v for k, v in q.items()
                         if k in ("query", "useLegacySql", "parameterMode",
                                  "queryParameters", "defaultDataset",
                                  "destinationTable", "priority",
                                  "useQueryCache")}}
        job = _Job(project, job_id, location or self.location, cfg,
                   self.clock(), int(self.slow_queries or 0))
        self.jobs[(project, job_id)] = job
        sql = q.get("query")
        self.query_log.append((sql, q.get("queryParameters") or []))
        try:
            if not sql:
                raise BQError("invalid", "Required parameter is missing: "
                              "query", None)
            sql = _check_dialect(sql, q.get("useLegacySql"),
                                 bool(q.get("queryParameters")))
            dd = q.get("defaultDataset") or None
            if dd:
                dd = (dd.get("projectId") or project, dd.get("datasetId"))
            if q.get("dryRun"):
                self._dry_run(project, bqsql.Parser(sql).parse(), dd)
                job.result = bqsql.QueryResult("SELECT")
            else:
                job.result = self.store.execute(
                    sql, q.get("queryParameters"), project, dd)
        except BQError as e:
            job.error = e
        job.ended = self.clock()
        return job

    iam_held = None          # set by the HTTP layer: iam.held(permissions, resource)

    def _dry_run(self, project, stmt, default_dataset):
        """What a dry run checks besides the syntax, as BigQuery does: the
        caller may create jobs in the project, every table the statement
        names exists, and the caller may read it (a SELECT) or change it
        (DML).  Nothing runs."""
        held = self.iam_held or (lambda perms, res: perms)
        if not held(["bigquery.jobs.create"], "projects/%s" % project):
            raise BQError("accessDenied", "Access Denied: Project %s: User does not have bigquery.jobs.create "
                          "permission in project %s." % (project, project), "", 403)
        refs = []

        def walk(node, depth=0):
            if depth > 50 or node is None or isinstance(node, (str, int, float, bool, bytes)):
                return
            if isinstance(node, bqsql.statements.TableRef):
                refs.append(node)
                return
            if isinstance(node, (list, tuple)):
                for x in node:
                    walk(x, depth + 1)
                return
            if isinstance(node, dict):
                for x in node.values():
                    walk(x, depth + 1)
                return
            for x in getattr(node, '__dict__', {}).values():
                walk(x, depth + 1)
        walk(stmt)
        perm = "bigquery.tables.getData" if type(stmt).__name__ == "Select" else "bigquery.tables.updateData"
        for ref in refs:
            parts = ref.parts
            if len(parts) == 3:
                p, d, t = parts
            elif len(parts) == 2:
                (p, d), t = (project, parts[0]), parts[1]
            elif default_dataset:
                (p, d), t = default_dataset, parts[0]
            else:
                raise BQError("invalid", 'Table "%s" must be qualified with a dataset (e.g. dataset.table).'
                              % parts[0], "q", 400)
            self.store.get_table(p, d, t)
            if not held([perm], "projects/%s/datasets/%s/tables/%s" % (p, d, t)):
                raise BQError("accessDenied", "Access Denied: Table %s:%s.%s: User does not have permission to %s "
                              "table %s:%s.%s, or perhaps it does not exist." %
                              (p, d, t, "query" if perm.endswith("getData") else "modify", p, d, t), "", 403)

    def _results(self, job, kind, query, count_poll=True):
        done = job.poll() if count_poll else job.pending == 0
        resp = {"kind": kind, "jobReference": job.ref, "jobComplete": done}
        if not done:
            return 200, resp
        if job.error is not None:
            return _bq_error_response(job.error)
        r = job.result
        resp.update({"totalBytesProcessed": "0", "cacheHit": False})
        if kind == "bigquery#queryResponse":
            resp["location"] = job.location
        if r.is_dml:
            resp["numDmlAffectedRows"] = str(r.affected)
            resp["dmlStats"] = r.dml_stats_json()
            resp["schema"] = {"fields": []}
            resp["totalRows"] = "0"
            return 200, resp
        rows = r.rows_json(_truthy(_first(
            query, "formatOptions.useInt64Timestamp", False)))
        start = int(_first(query, "pageToken", None) or
                    _first(query, "startIndex", 0) or 0)
        max_results = _first(query, "maxResults", None)
        end = len(rows) if max_results in (None, "") else \
            start + int(max_results)
        resp["schema"] = r.schema_json()
        resp["totalRows"] = str(len(rows))
        if rows[start:end]:          # BigQuery omits "rows" when empty
            resp["rows"] = rows[start:end]
        if end < len(rows):
            resp["pageToken"] = str(end)
        return 200, resp

    def jobs_query(self, project, query, body):
        if body.get("useLegacySql") is not None and \
                not isinstance(body.get("useLegacySql"), bool):
            return error_response(400, "Invalid value for useLegacySql",
                                  "invalid")
        rid = body.get("requestId")
        now = self.clock()
        fp = None
        if rid and not body.get("dryRun"):
            for k, (ts, _, _) in list(self.request_ids.items()):
                if now - ts >= self.request_id_ttl:
                    del self.request_ids[k]
            fp = hashlib.sha256(json.dumps(
                [body.get(k) for k in ("query", "useLegacySql",
                                       "parameterMode", "queryParameters",
                                       "defaultDataset", "location")],
                sort_keys=True).encode()).hexdigest()
            prev = self.request_ids.get((project, rid))
            if prev is not None and prev[1] == fp:
                job = self.jobs[(project, prev[2])]
                return self._results(job, "bigquery#queryResponse", body)
        params = {"maxResults": body.get("maxResults"),
                  "formatOptions.useInt64Timestamp":
                      (body.get("formatOptions") or {}).get(
                          "useInt64Timestamp", False)}
        job = self._run_query(project, body, "job_" + uuid.uuid4().hex,
                              body.get("location"))
        if rid and fp:
            self.request_ids[(project, rid)] = (now, fp, job.job_id)
        return self._results(job, "bigquery#queryResponse", params)

    def jobs_get_query_results(self, project, job_id, query, body):
        job = self.jobs.get((project, job_id))
        if job is None:
            return error_response(404, "Not found: Job %s:%s.%s"
                                  % (project, _first(query, "location",
                                                     self.location), job_id),
                                  "notFound")
        return self._results(job, "bigquery#getQueryResultsResponse", query)

    def jobs_insert(self, project, query, body):
        ref = body.get("jobReference") or {}
        job_id = ref.get("jobId") or "job_" + uuid.uuid4().hex
        if not re.fullmatch(r"[A-Za-z0-9_-]{1,1024}", job_id):
            return error_response(400, "Invalid job ID \"%s\". Job IDs must "
                                  "be alphanumeric (plus underscores and "
                                  "dashes) and must be at most 1024 "
                                  "characters long." % job_id, "invalid")
        location = ref.get("location") or self.location
        if (project, job_id) in self.jobs:
            return error_response(409, "Already Exists: Job %s:%s.%s"
                                  % (project, location, job_id), "duplicate")
        q = (body.get("configuration") or {}).get("query")
        if q is None:
            return error_response(400, "The fake only supports query jobs",
                                  "invalid")
        q = dict(q)
        if (body.get("configuration") or {}).get("dryRun"):
            q["dryRun"] = True
        job = self._run_query(project, q, job_id, location)
        job.configuration = dict(body.get("configuration") or {})
        return 200, job.resource(job.poll())

    def jobs_cancel(self, project, job_id, query, body):
        """jobs.cancel.  The fake runs a statement when it is submitted, so
        a cancel always comes too late (BigQuery allows that: a cancel is a
        request, and a job that already ended keeps its result): the job
        is reported DONE from now on, with what it did."""
        job = self.jobs.get((project, job_id))
        if job is None:
            return error_response(404, "Not found: Job %s:%s.%s"
                                  % (project, _first(query, "location",
                                                     self.location), job_id),
                                  "notFound")
        job.pending = 0
        self.cancelled.append(job_id)
        return 200, {"kind": "bigquery#jobCancelResponse",
                     "job": job.resource(True)}

    def jobs_list(self, project, query, body):
        """jobs.list: newest first, stateFilter (done/running/pending),
        maxResults/pageToken; the list form of each job."""
        states = (query or {}).get("stateFilter") or []
        if isinstance(states, str):
            states = [states]
        items = []
        for (p, _), job in sorted(self.jobs.items(),
                                  key=lambda kv: -kv[1].created):
            if p != project:
                continue
            res = job.resource(job.pending == 0)
            state = res["status"]["state"]
            if states and state.lower() not in [x.lower() for x in states]:
                continue
            res = {k: res[k] for k in ("id", "kind", "jobReference", "status",
                                       "statistics", "configuration",
                                       "user_email")}
            res["kind"] = "bigquery#job"
            res["state"] = state
            items.append(res)
        return 200, _page(query, items, "jobs",
                          {"kind": "bigquery#jobList", "etag": "fake"})

    def jobs_get(self, project, job_id, query, body):
        job = self.jobs.get((project, job_id))
        if job is None:
            return error_response(404, "Not found: Job %s:%s.%s"
                                  % (project, _first(query, "location",
                                                     self.location), job_id),
                                  "notFound")
        return 200, job.resource(job.poll())


# --------------------------------------------------------------------------
# Legacy SQL: BigQuery's REST default.  We do not implement it; reject the
# GoogleSQL constructs a client would send by mistake, the way BigQuery does.

def _check_dialect(sql, use_legacy, has_params):
    """Return the GoogleSQL text to run, or raise the legacy-SQL error."""
    m = re.match(r"\s*#(standardSQL|legacySQL)[ \t]*(\n|$)", sql, re.I)
    prefix = m.group(1).lower() if m else None
    if prefix == "standardsql":
        if use_legacy is True:
            raise BQError("invalidQuery", "Query text specifies "
                          "use_legacy_sql:false, while API options "
                          "specify:true")
        return sql
    if prefix is None and use_legacy is False:
        return sql
    if prefix == "legacysql" and use_legacy is False:
        raise BQError("invalidQuery", "Query text specifies "
                      "use_legacy_sql:true, while API options specify:false")
    # legacy SQL
    bq = re.search(r"`[^`]*`", sql)
    if bq:
        raise BQError("invalidQuery", "Invalid table name: %s %s"
                      % (bq.group(0), STANDARD_SQL_HINT))
    if has_params:
        raise BQError("invalidQuery", "Query parameters are only supported "
                      "in standard SQL. " + STANDARD_SQL_HINT)
    words = re.findall(r"[A-Za-z_]+", re.sub(r"#[^\n]*", "", sql))
    first = words[0].upper() if words else ""
    if first != "SELECT":
        raise BQError("invalidQuery", "Encountered \" \"%s\" \"%s \"\" at "
                      "line 1, column 1. %s" % (first, first,
                                                STANDARD_SQL_HINT))
    # A plain legacy SELECT: run it with [p:d.t] rewritten as GoogleSQL.
    return re.sub(r"\[([^\]:]+):([^\]]+)\]", r"`\1.\2`", sql)


# --------------------------------------------------------------------------
# insertAll row conversion

def _row_error(field, message):
    return {"reason": "invalid", "location": field, "debugInfo": "",
            "message": message}


def _convert_row(table, obj, ignore_unknown):
    if not isinstance(obj, dict):
        return None, [_row_error("", "Row must be a JSON object.")]
    values, errs = {f.name: None for f in table.fields}, []
    for key, raw in obj.items():
        f = table.field(key)
        if f is None:
            if not ignore_unknown:
                errs.append(_row_error(key, "no such field: %s." % key))
            continue
        if raw is None:
            continue
        try:
            if f.mode == "REPEATED":
                if not isinstance(raw, list):
                    raise ValueError("Array specified for non-repeated "
                                     "field: %s." % f.name)
                values[f.name] = [_convert_json(x, f) for x in raw]
            else:
                values[f.name] = _convert_json(raw, f)
        except ValueError as e:
            errs.append(_row_error(f.name, str(e)))
    for f in table.fields:
        if f.mode == "REQUIRED" and values.get(f.name) is None:
            errs.append(_row_error(f.name, "Missing required field: %s."
                                   % f.name))
    return values, errs


_KIND = {"INT64": "integer", "FLOAT64": "floating point", "BOOL": "boolean",
         "NUMERIC": "numeric", "TIMESTAMP": "timestamp",
         "DATETIME": "datetime", "DATE": "date", "BYTES": "bytes",
         "STRING": "string"}


def _convert_json(raw, f):
    t = f.type
    if t in ("STRUCT", "JSON", "TIME", "GEOGRAPHY"):
        return raw                     # stored as given
    bad = ValueError("Cannot convert value to %s (bad value): %s"
                     % (_KIND.get(t, t.lower()), json.dumps(raw)))
    if isinstance(raw, (dict, list)):
        raise bad
    if t == "STRING":
        if isinstance(raw, bool):
            return "true" if raw else "false"
        return raw if isinstance(raw, str) else json.dumps(raw)
    if isinstance(raw, bool):
        if t == "BOOL":
            return raw
        raise bad
    if isinstance(raw, (int, float)):
        if t == "INT64":
            if isinstance(raw, float) and not raw.is_integer():
                raise bad
            return int(raw)
        if t == "FLOAT64":
            return float(raw)
        if t == "NUMERIC":
            return bqsql.Decimal(repr(raw))
        if t == "TIMESTAMP":
            return bqsql.ts_from_epoch(raw)
        if t == "BOOL":
            if raw in (0, 1):
                return bool(raw)
        raise bad
    try:
        if t == "TIMESTAMP" and re.fullmatch(r"\s*-?\d+(\.\d+)?\s*", raw):
            return bqsql.ts_from_epoch(float(raw))
        if t == "BOOL" and raw.strip() in ("0", "1"):
            return raw.strip() == "1"
        return bqsql.parse_value(raw, t)
    except ValueError:
        raise bad from None
