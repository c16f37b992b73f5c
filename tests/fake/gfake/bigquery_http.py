"""BigQuery v2 over HTTP: wires the pure BigQueryService (bigquery.py, SQL
engine in bqsql/) into the server's route registry.

Every route is registered with its discovery method id, so request bodies
are validated against bigquery-v2.discovery.json before the service sees
them; errors use the v1 shape (``errors[]``), as BigQuery does.  Paths the
service does not implement fall through to a catch-all that lets the
service answer 404/405 in BigQuery's own words.

Config reaching the service: ``stream_buffer_seconds`` (also
``--stream-buffer-seconds``) and ``bq_slow_queries``.  Control:
``GET /_fake/bigquery/table?project=&dataset=&table=[&meta=1]`` dumps rows,
``POST /_fake/bigquery/table`` creates a table (and its dataset).
"""
import datetime
import decimal
import json
import threading

from .bigquery import BigQueryService
from .server import ApiError, Response, json_response

API = 'bigquery-v2'
PFX = '/bigquery/v2/'
P = r'/bigquery/v2/projects/([^/]+)'


def _jsonable(v):
    if isinstance(v, (datetime.datetime, datetime.date, datetime.time)):
        return v.isoformat()
    if isinstance(v, decimal.Decimal):
        return str(v)
    if isinstance(v, bytes):
        import base64
        return base64.b64encode(v).decode()
    return str(v)


# Real BigQuery keeps streamed rows out of DML for up to ~90 minutes
# (cloud.google.com/bigquery/docs/streaming-data-into-bigquery#dataavailability);
# 30 minutes outlasts any test, which must shorten it explicitly
# (POST /_fake/config {"stream_buffer_seconds": N}) to update such rows.
DEFAULT_STREAM_BUFFER_SECONDS = 1800
CONFIG = {'stream_buffer_seconds': ((int, float), DEFAULT_STREAM_BUFFER_SECONDS),
          'bq_slow_queries': (int, 0)}


class BigQueryHttp:
    def __init__(self, app):
        self.app = app
        self.lock = threading.Lock()
        self.svc = None
        self.reset()
        app.config_hooks.append(self.apply_config)

    def reset(self):
        with self.lock:
            self.svc = BigQueryService(stream_buffer_seconds=self.app.config['stream_buffer_seconds'])
            self.svc.iam_held = self.app.iam.held     # dry runs check permissions as BigQuery does
            self.apply_config(self.app.config)

    def apply_config(self, cfg):
        svc = self.svc
        with svc.lock:
            svc.stream_buffer_seconds = cfg['stream_buffer_seconds'] or 0
            svc.slow_queries = int(cfg.get('bq_slow_queries', 0) or 0)

    def handle(self, req, *groups):
        body = req.json() if req.body.strip() else None
        status, obj = self.svc.handle(req.method, req.path[len(PFX):], req.query, body)
        if status == 204:
            return Response(204)
        return json_response(obj, status)

    # ---- control -------------------------------------------------------------
    def _table_args(self, req, body=None):
        src = body if body is not None else {k: req.q(k) for k in ('project', 'dataset', 'table')}
        missing = [k for k in ('project', 'dataset', 'table') if not src.get(k)]
        if missing:
            raise ApiError(400, 'missing: %s' % ', '.join(missing))
        return src['project'], src['dataset'], src['table']

    def ctl_table_get(self, req):
        p, d, t = self._table_args(req)
        if req.q('count') in ('1', 'true'):     # cheap enough to poll while a bench runs
            try:
                with self.svc.lock:
                    n = len(self.svc.store.get_table(p, d, t).rows)
            except Exception as e:
                raise ApiError(404, 'no table %s:%s.%s (%s)' % (p, d, t, getattr(e, 'message', e)))
            return json_response({'rows': n})
        try:
            rows = self.svc.dump_table(p, d, t, with_meta=req.q('meta') in ('1', 'true'))
        except Exception as e:          # bqsql.BQError for an unknown table
            raise ApiError(404, 'no table %s:%s.%s (%s)' % (p, d, t, getattr(e, 'message', e)))
        return Response(200, json.dumps(rows, default=_jsonable), 'application/json; charset=UTF-8')

    def ctl_table_post(self, req):
        body = req.json()
        p, d, t = self._table_args(req, body)
        fields = body.get('fields')
        if not isinstance(fields, list):
            raise ApiError(400, 'fields must be a list of {"name","type","mode"}')
        self.svc.create_table(p, d, t, fields)
        return json_response({'project': p, 'dataset': d, 'table': t})


def install(app):
    bq = BigQueryHttp(app)
    app.bigquery = bq
    app.add_module(bq)
    h = bq.handle

    def r(method, pattern, mid):
        app.route(method, pattern, h, api=API, method_id='bigquery.' + mid, style='v1')
    r('POST', P + r'/datasets/([^/]+)/tables/([^/]+)/insertAll', 'tabledata.insertAll')
    r('GET', P + r'/datasets/([^/]+)/tables/([^/]+)/data', 'tabledata.list')
    r('GET', P + r'/datasets/([^/]+)/tables/([^/]+)', 'tables.get')
    r('DELETE', P + r'/datasets/([^/]+)/tables/([^/]+)', 'tables.delete')
    r('GET', P + r'/datasets/([^/]+)/tables', 'tables.list')
    r('GET', P + r'/datasets', 'datasets.list')
    r('DELETE', P + r'/datasets/([^/]+)', 'datasets.delete')
    r('GET', P + r'/jobs', 'jobs.list')
    r('POST', P + r'/datasets/([^/]+)/tables', 'tables.insert')
    r('GET', P + r'/datasets/([^/]+)', 'datasets.get')
    r('POST', P + r'/datasets', 'datasets.insert')
    r('POST', P + r'/queries', 'jobs.query')
    r('GET', P + r'/queries/([^/]+)', 'jobs.getQueryResults')
    r('POST', P + r'/jobs', 'jobs.insert')
    r('GET', P + r'/jobs/([^/]+)', 'jobs.get')
    r('POST', P + r'/jobs/([^/]+)/cancel', 'jobs.cancel')
    app.route('GET|POST|PUT|PATCH|DELETE', r'/bigquery/v2/.*', h, style='v1')
    app.route('GET', r'/_fake/bigquery/table', bq.ctl_table_get, auth=False)
    app.route('POST', r'/_fake/bigquery/table', bq.ctl_table_post, auth=False)
