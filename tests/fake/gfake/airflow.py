"""Cloud Composer v1 environments.get and the Airflow REST API it points at.

Composer (composer-v1.discovery.json):
    GET /v1/projects/P/locations/L/environments/E  -> the Environment made
        through POST /_fake/composer/environments, else 404 NOT_FOUND.  Its
        state is the one set there (CREATING, RUNNING, UPDATING, DELETING,
        ERROR); config.airflowUri = <the fake's base URL as the client
        reached it>/airflow (or the control call's airflow_uri), shown once
        the environment has been RUNNING, as Composer fills it in when the
        web server exists.

Airflow 2 stable REST API, /airflow/api/v1 (tests/fake/contracts/
airflow/airflow-rest-api-v1.yaml, Airflow 2.10).  The YAML is
read by eye, not parsed (no PyYAML); the schemas used are hand-encoded here:
    DAGRun (yaml components/schemas/DAGRun): loadable fields dag_run_id,
        logical_date, execution_date, data_interval_start/end, conf, note;
        readOnly fields (dag_id, start_date, end_date, state, run_type,
        external_trigger, last_scheduling_decision) are "Unknown field" on
        load, as marshmallow does with dump_only fields.
    UpdateDagRunState: {state: success|failed|queued}
    DAGRunCollection: {dag_runs, total_entries}
    Error (RFC 7807): {type, title, status, detail, instance}
Behaviour of post_dag_run follows Airflow 2.10's dag_run_endpoint: 404 for an
unknown DAG, 400 for schema errors and a logical_date/execution_date
conflict, 409 for an existing dag_run_id *or* logical_date, 400 for a
dag_run_id outside ``^[A-Za-z0-9_.~:+-]+$``, 200 with the DAGRun.

Airflow 3 public API, /airflow/api/v2 (tests/fake/contracts/airflow/
airflow-v2-subset.json, our transcription of the used part of Airflow's
generated v2-rest-api-generated.yaml; tests/fake/test_airflow_contract.py
checks the fake against it):
    TriggerDAGRunPostBody: logical_date required, null allowed; dag_run_id,
        data_interval_start/end, run_after, conf, note, partition_key, all
        nullable; additionalProperties false (pydantic extra_forbidden).
    DAGRunResponse, DAGResponse, DAGRunPatchBody, DAGRunCollectionResponse.
    Errors are FastAPI's, application/json: HTTPExceptionResponse
        {"detail": str | object} (a 409 from the unique constraint on the run
        id carries Airflow's {"reason": "Unique constraint violation", ...}
        object), 422 HTTPValidationError {"detail": [{type, loc, msg, input}]}.
    404 texts as Airflow 3's routes/public/dag_run.py and dags.py word them.

v1 errors are RFC 7807 problem JSON.

Auth: ``Authorization: Bearer <token issued by /token or metadata>`` (or
fake-static-token), as Composer 2/3's composer_auth backend expects; off with
require_auth=false.

Runs start ``queued``.  ``POST /_fake/airflow/advance`` moves them; with
config airflow_auto_seconds = N > 0 a run of an unpaused DAG goes
queued -> running after N s and running -> success N s later (evaluated
lazily whenever runs are read).
"""
import datetime
import json
import re
import threading
import time
import uuid

from .server import ApiError, Response, json_response

RUN_ID_RE = re.compile(r'^[A-Za-z0-9_.~:+-]+$')      # [core] allowed_run_id_pattern, 2.10 default
DOCS = 'https://airflow.apache.org/docs/apache-airflow/2.10.2/stable-rest-api-ref.html#section/Errors/'
DEFAULT_IMAGE = 'composer-2.9.7-airflow-2.10.2'
V1_LOAD_FIELDS = {'dag_run_id', 'logical_date', 'execution_date', 'data_interval_start', 'data_interval_end',
                  'conf', 'note'}
V2_LOAD_FIELDS = {'dag_run_id', 'logical_date', 'data_interval_start', 'data_interval_end', 'run_after',
                  'conf', 'note', 'partition_key'}
TITLES = {400: 'Bad Request', 401: 'Unauthorized', 403: 'Forbidden', 404: 'Not Found', 405: 'Method Not Allowed',
          409: 'Conflict', 422: 'Unprocessable Entity'}
ERROR_NAMES = {400: 'BadRequest', 401: 'Unauthenticated', 403: 'PermissionDenied', 404: 'NotFound',
               409: 'AlreadyExists', 422: 'BadRequest'}
ENV_RE = re.compile(r'^[a-z](?:[a-z0-9-]{0,62}[a-z0-9])?$')


def is_v2(req):
    return req.path.startswith('/airflow/api/v2/')


def problem(req, status, detail, title=None, extra=None):
    if is_v2(req):      # FastAPI: HTTPExceptionResponse {"detail": str | object}
        return ApiError(status, detail if isinstance(detail, str) else json.dumps(detail),
                        body=json.dumps({'detail': detail}).encode(), content_type='application/json')
    body = {'type': DOCS + ERROR_NAMES.get(status, 'Unknown'), 'title': title or TITLES.get(status, 'Error'),
            'status': status, 'detail': detail, 'instance': req.path}
    if extra:
        body.update(extra)
    return ApiError(status, detail, body=json.dumps(body).encode(), content_type='application/problem+json')


def _utc(t):
    return datetime.datetime.fromtimestamp(t, datetime.timezone.utc)


def _iso(dt):
    return dt.isoformat() if dt is not None else None


def _parse_dt(v):
    """RFC 3339 / ISO 8601; naive means UTC.  None for null."""
    if v is None:
        return None
    if not isinstance(v, str):
        raise ValueError('Not a valid datetime.')
    s = v.strip()
    if s.endswith('Z') or s.endswith('z'):
        s = s[:-1] + '+00:00'
    try:
        dt = datetime.datetime.fromisoformat(s)
    except ValueError:
        raise ValueError('Not a valid datetime.') from None
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=datetime.timezone.utc)
    return dt.astimezone(datetime.timezone.utc)


class Run:
    def __init__(self, dag_id, run_id, logical_date, conf, note, dis, die, run_after, api):
        now = _utc(time.time())
        self.dag_id = dag_id
        self.run_id = run_id
        self.logical_date = logical_date
        self.conf = conf
        self.note = note
        self.data_interval_start = dis
        self.data_interval_end = die
        self.queued_at = now
        self.run_after = run_after or logical_date or now
        self.start_date = None
        self.end_date = None
        self.last_scheduling_decision = None
        self.state = 'queued'
        self.api = api
        self.seq = 0
        self.partition_key = None
        self.dag_created = now          # the DAG's one version (v2 dag_versions)

    def set_state(self, state, at=None):
        at = at or _utc(time.time())
        if state == 'queued':
            self.start_date = self.end_date = None
            self.queued_at = at
        elif state == 'running':
            self.start_date = self.start_date or at
            self.end_date = None
        elif state in ('success', 'failed'):
            self.start_date = self.start_date or at
            self.end_date = at
        self.state = state
        self.last_scheduling_decision = at

    def v1(self):
        return {'dag_run_id': self.run_id, 'dag_id': self.dag_id,
                'logical_date': _iso(self.logical_date), 'execution_date': _iso(self.logical_date),
                'start_date': _iso(self.start_date), 'end_date': _iso(self.end_date),
                'data_interval_start': _iso(self.data_interval_start),
                'data_interval_end': _iso(self.data_interval_end),
                'last_scheduling_decision': _iso(self.last_scheduling_decision),
                'run_type': 'manual', 'state': self.state, 'external_trigger': True,
                'conf': self.conf, 'note': self.note}

    def v2(self):
        return {'dag_run_id': self.run_id, 'dag_id': self.dag_id,
                'logical_date': _iso(self.logical_date), 'queued_at': _iso(self.queued_at),
                'start_date': _iso(self.start_date), 'end_date': _iso(self.end_date),
                'data_interval_start': _iso(self.data_interval_start),
                'data_interval_end': _iso(self.data_interval_end),
                'run_after': _iso(self.run_after),
                'last_scheduling_decision': _iso(self.last_scheduling_decision),
                'run_type': 'manual', 'state': self.state, 'triggered_by': 'rest_api',
                'triggering_user_name': None, 'conf': self.conf, 'note': self.note,
                'duration': (self.end_date - self.start_date).total_seconds()
                if self.start_date and self.end_date else None,
                'dag_versions': [{'id': str(uuid.uuid5(uuid.NAMESPACE_URL, 'dag:' + self.dag_id)),
                                  'version_number': 1, 'dag_id': self.dag_id, 'bundle_name': 'dags-folder',
                                  'bundle_version': None, 'created_at': _iso(self.dag_created),
                                  'dag_display_name': self.dag_id, 'bundle_url': None}],
                'bundle_version': None, 'dag_display_name': self.dag_id, 'partition_key': self.partition_key}


class Airflow:
    def __init__(self, app):
        self.app = app
        self.lock = threading.RLock()
        self.reset()

    def reset(self):
        with self.lock:
            self.dags = {}          # dag_id -> {'dag_id', 'is_paused'}
            self.runs = {}          # dag_id -> {run_id: Run}
            self.dag_created = {}   # dag_id -> when first registered
            self.seq = 0

    # ---- helpers -------------------------------------------------------------
    def _auth(self, req):
        from . import auth
        try:
            auth.check_bearer(self.app, req)
        except ApiError as e:
            raise problem(req, 401, e.message)

    def _dag(self, req, dag_id):
        d = self.dags.get(dag_id)
        if d is None:
            raise problem(req, 404, "DAG with dag_id: '%s' not found" % dag_id, title='DAG not found')
        return d

    def _run(self, req, dag_id, run_id):
        if is_v2(req):          # Airflow 3 looks the run up without the DAG
            r = self.runs.get(dag_id, {}).get(run_id)
            if r is None:
                raise problem(req, 404, 'The DagRun with dag_id: `%s` and run_id: `%s` was not found'
                              % (dag_id, run_id))
            return r
        self._dag(req, dag_id)
        r = self.runs.get(dag_id, {}).get(run_id)
        if r is None:
            raise problem(req, 404, "DAGRun with DAG ID: '%s' and DagRun ID: '%s' not found" % (dag_id, run_id),
                          title='DAGRun not found')
        return r

    def _tick(self):
        """airflow_auto_seconds: move runs along by the clock."""
        n = float(self.app.config.get('airflow_auto_seconds') or 0)
        if n <= 0:
            return
        now = time.time()
        for dag_id, runs in self.runs.items():
            if self.dags.get(dag_id, {}).get('is_paused'):
                continue
            for r in runs.values():
                if r.state == 'queued' and now >= r.queued_at.timestamp() + n:
                    r.set_state('running', _utc(r.queued_at.timestamp() + n))
                if r.state == 'running' and now >= r.start_date.timestamp() + n:
                    r.set_state('success', _utc(r.start_date.timestamp() + n))

    def _body(self, req, v2):
        try:
            body = json.loads(req.body) if req.body.strip() else ({} if not v2 else None)
        except ValueError as e:
            if v2:
                raise self._v2_invalid(req, [{'type': 'json_invalid', 'loc': ['body', 0],
                                              'msg': 'JSON decode error', 'input': {}, 'ctx': {'error': str(e)}}])
            raise problem(req, 400, 'Request body is not valid JSON: %s' % e)
        if body is None and v2:
            raise self._v2_invalid(req, [{'type': 'missing', 'loc': ['body'], 'msg': 'Field required',
                                          'input': None}])
        if not isinstance(body, dict):
            if v2:
                raise self._v2_invalid(req, [{'type': 'model_attributes_type', 'loc': ['body'],
                                              'msg': 'Input should be a valid dictionary or object to extract '
                                                     'fields from', 'input': body}])
            raise problem(req, 400, "{'_schema': ['Invalid input type.']}")
        return body

    def _v2_invalid(self, req, errors):
        """FastAPI's 422: HTTPValidationError {"detail": [ValidationError]}."""
        detail = '; '.join('%s: %s' % ('.'.join(str(x) for x in e['loc']), e['msg']) for e in errors)
        return ApiError(422, detail, body=json.dumps({'detail': errors}).encode(), content_type='application/json')

    # ---- trigger -------------------------------------------------------------
    def trigger_v1(self, req, dag_id):
        self._auth(req)
        with self.lock:
            self._dag(req, dag_id)
            body = self._body(req, False)
            errs = {}
            for k in body:
                if k not in V1_LOAD_FIELDS:
                    errs[k] = ['Unknown field.']
            dates = {}
            for k in ('logical_date', 'execution_date', 'data_interval_start', 'data_interval_end'):
                try:
                    dates[k] = _parse_dt(body.get(k))
                except ValueError as e:
                    errs[k] = [str(e)]
            conf = body.get('conf')
            if conf is not None and not isinstance(conf, dict):
                errs['conf'] = ['Not a valid mapping type.']
            for k in ('dag_run_id', 'note'):
                if body.get(k) is not None and not isinstance(body[k], str):
                    errs[k] = ['Not a valid string.']
            if errs:
                raise problem(req, 400, repr(errs))
            if 'logical_date' in body and 'execution_date' in body and \
                    dates['logical_date'] != dates['execution_date']:
                raise problem(req, 400, 'logical_date conflicts with execution_date')
            logical = dates['logical_date'] or dates['execution_date'] or _utc(time.time())
            return json_response(self._create(req, dag_id, body.get('dag_run_id'), logical, conf or {},
                                              body.get('note'), dates['data_interval_start'],
                                              dates['data_interval_end'], None, 'v1').v1())

    def trigger_v2(self, req, dag_id):
        self._auth(req)
        with self.lock:
            self._dag(req, dag_id)
            body = self._body(req, True)
            errs = []
            for k in body:
                if k not in V2_LOAD_FIELDS:
                    errs.append({'type': 'extra_forbidden', 'loc': ['body', k],
                                 'msg': 'Extra inputs are not permitted', 'input': body[k]})
            if 'logical_date' not in body:
                errs.append({'type': 'missing', 'loc': ['body', 'logical_date'], 'msg': 'Field required',
                             'input': body})
            dates = {}
            for k in ('logical_date', 'data_interval_start', 'data_interval_end', 'run_after'):
                try:
                    dates[k] = _parse_dt(body.get(k))
                except ValueError:
                    errs.append({'type': 'datetime_from_date_parsing', 'loc': ['body', k],
                                 'msg': 'Input should be a valid datetime', 'input': body.get(k)})
            conf = body.get('conf')
            if conf is not None and not isinstance(conf, dict):
                errs.append({'type': 'dict_type', 'loc': ['body', 'conf'],
                             'msg': 'Input should be a valid dictionary', 'input': conf})
            for k in ('dag_run_id', 'note', 'partition_key'):
                if body.get(k) is not None and not isinstance(body[k], str):
                    errs.append({'type': 'string_type', 'loc': ['body', k],
                                 'msg': 'Input should be a valid string', 'input': body[k]})
            if (dates.get('data_interval_start') is None) != (dates.get('data_interval_end') is None):
                errs.append({'type': 'value_error', 'loc': ['body'],
                             'msg': 'Value error, Either both data_interval_start and data_interval_end must be '
                                    'provided or both must be None', 'input': body})
            if errs:
                raise self._v2_invalid(req, errs)
            r = self._create(req, dag_id, body.get('dag_run_id'), dates['logical_date'], conf or {},
                             body.get('note'), dates['data_interval_start'], dates['data_interval_end'],
                             dates['run_after'], 'v2')
            r.partition_key = body.get('partition_key')
            return json_response(r.v2())

    def _create(self, req, dag_id, run_id, logical, conf, note, dis, die, run_after, api):
        runs = self.runs.setdefault(dag_id, {})
        if not run_id:
            base = logical or run_after or _utc(time.time())
            run_id = 'manual__' + base.isoformat()
        existing = runs.get(run_id)
        clash = logical is not None and any(r.logical_date == logical for r in runs.values())
        if (existing is not None or clash) and api == 'v2':
            # Airflow 3: the database's unique constraint, through its IntegrityError handler
            # ([api] expose_stacktrace off: statement and error hidden)
            raise problem(req, 409, {'reason': 'Unique constraint violation', 'statement': 'hidden',
                                     'orig_error': 'hidden',
                                     'message': 'Serious error when handling your request. Check logs for more '
                                                'details - you will find it in api server when you look for ID '
                                                + uuid.uuid4().hex[:20]})
        if existing is not None:
            raise problem(req, 409, "DAGRun with DAG ID: '%s' and DAGRun ID: '%s' already exists"
                          % (dag_id, run_id))
        if clash:
            raise problem(req, 409, "DAGRun with DAG ID: '%s' and DAGRun logical date: '%s' already exists"
                          % (dag_id, logical.isoformat(sep=' ')))
        if not RUN_ID_RE.match(run_id):
            raise problem(req, 400, "The provided run ID '%s' is invalid. It does not match either the configured "
                                    "pattern: '%s' or the built-in pattern: '%s'"
                          % (run_id, RUN_ID_RE.pattern, r'^(?:manual|scheduled|dataset_triggered)__(?:\+|\d)'))
        if dis is None and logical is not None:
            dis = die = logical                 # manual run of a DAG with schedule=None
        r = Run(dag_id, run_id, logical, conf, note, dis, die, run_after, api)
        r.dag_created = self.dag_created.get(dag_id, r.dag_created)
        self.seq += 1
        r.seq = self.seq
        runs[run_id] = r
        return r

    # ---- read / patch ----------------------------------------------------------
    def get_run(self, req, dag_id, run_id, v2=False):
        self._auth(req)
        with self.lock:
            self._tick()
            r = self._run(req, dag_id, run_id)
            return json_response(r.v2() if v2 else r.v1())

    def get_run_v2(self, req, dag_id, run_id):
        return self.get_run(req, dag_id, run_id, True)

    def patch_run(self, req, dag_id, run_id, v2=False):
        self._auth(req)
        with self.lock:
            self._tick()
            r = self._run(req, dag_id, run_id)
            body = self._body(req, v2)
            allowed = {'state', 'note'} if v2 else {'state'}
            unknown = [k for k in body if k not in allowed]
            state = body.get('state')
            if v2:
                errs = [{'type': 'extra_forbidden', 'loc': ['body', k], 'msg': 'Extra inputs are not permitted',
                         'input': body[k]} for k in unknown]
                if state is not None and state not in ('queued', 'success', 'failed'):
                    errs.append({'type': 'enum', 'loc': ['body', 'state'],
                                 'msg': "Input should be 'queued', 'success' or 'failed'", 'input': state})
                if errs:
                    raise self._v2_invalid(req, errs)
            else:
                if unknown:
                    raise problem(req, 400, repr({k: ['Unknown field.'] for k in unknown}))
                if state not in ('queued', 'success', 'failed'):
                    raise problem(req, 400, repr({'state': ['Must be one of: success, failed, queued.']}))
            if state is not None:
                r.set_state(state)
            if v2 and 'note' in body:
                r.note = body['note']
            return json_response(r.v2() if v2 else r.v1())

    def patch_run_v2(self, req, dag_id, run_id):
        return self.patch_run(req, dag_id, run_id, True)

    def list_runs(self, req, dag_id, v2=False):
        self._auth(req)
        with self.lock:
            self._tick()
            if dag_id == '~':
                runs = [r for rs in self.runs.values() for r in rs.values()]
            else:
                self._dag(req, dag_id)
                runs = list(self.runs.get(dag_id, {}).values())
            states = [s for v in req.query.get('state', []) for s in v.split(',') if s]
            if states:
                runs = [r for r in runs if r.state in states]
            order = req.q('order_by') or 'id'
            desc = order.startswith('-')
            key = order.lstrip('-')
            keyf = {'id': lambda r: r.seq, 'run_id': lambda r: r.run_id, 'dag_run_id': lambda r: r.run_id,
                    'state': lambda r: r.state}.get(key)
            if keyf is None:
                keyf = (lambda r, k=key: (getattr(r, k, None) is None,
                                          getattr(r, k, None) or datetime.datetime.min.replace(
                                              tzinfo=datetime.timezone.utc)))
            runs.sort(key=keyf, reverse=desc)
            total = len(runs)
            try:
                limit = int(req.q('limit') or (50 if v2 else 100))
                offset = int(req.q('offset') or 0)
            except ValueError:
                raise problem(req, 400, 'limit and offset must be integers')
            runs = runs[offset:offset + limit]
            return json_response({'dag_runs': [r.v2() if v2 else r.v1() for r in runs], 'total_entries': total})

    def list_runs_v2(self, req, dag_id):
        return self.list_runs(req, dag_id, True)

    def get_dag(self, req, dag_id):
        self._auth(req)
        with self.lock:
            d = self._dag(req, dag_id)
            return json_response({'dag_id': dag_id, 'dag_display_name': dag_id, 'is_paused': d['is_paused'],
                                  'is_active': True, 'fileloc': '/home/airflow/gcs/dags/%s.py' % dag_id,
                                  'owners': ['airflow'], 'tags': []})

    def get_dag_v2(self, req, dag_id):
        """Airflow 3 DAGResponse (is_stale replaces v1's is_active)."""
        self._auth(req)
        with self.lock:
            d = self.dags.get(dag_id)
            if d is None:
                raise problem(req, 404, 'Dag with id %s was not found' % dag_id)
            return json_response({
                'dag_id': dag_id, 'dag_display_name': dag_id, 'is_paused': d['is_paused'], 'is_stale': False,
                'last_parsed_time': _iso(self.dag_created.get(dag_id)), 'last_parse_duration': 0.1,
                'last_expired': None, 'bundle_name': 'dags-folder', 'bundle_version': None,
                'relative_fileloc': '%s.py' % dag_id, 'fileloc': '/home/airflow/gcs/dags/%s.py' % dag_id,
                'description': None, 'timetable_summary': None,
                'timetable_description': 'Never, external triggers only',
                'tags': [], 'max_active_tasks': 16, 'max_active_runs': 16, 'max_consecutive_failed_dag_runs': 0,
                'has_task_concurrency_limits': False, 'has_import_errors': False,
                'next_dagrun_logical_date': None, 'next_dagrun_data_interval_start': None,
                'next_dagrun_data_interval_end': None, 'next_dagrun_run_after': None,
                'owners': ['airflow'], 'file_token': uuid.uuid5(uuid.NAMESPACE_URL, 'file:' + dag_id).hex})

    def patch_dag(self, req, dag_id):
        self._auth(req)
        with self.lock:
            d = self._dag(req, dag_id)
            body = self._body(req, False)
            unknown = [k for k in body if k != 'is_paused']
            if unknown or not isinstance(body.get('is_paused'), bool):
                raise problem(req, 400, repr({k: ['Unknown field.'] for k in unknown} or
                                             {'is_paused': ['Not a valid boolean.']}))
            d['is_paused'] = body['is_paused']
        return self.get_dag(req, dag_id)

    def not_found(self, req):
        self._auth(req)
        raise problem(req, 404, 'The requested URL was not found on the server. If you entered the URL manually '
                                'please check your spelling and try again.')

    # ---- control ---------------------------------------------------------------
    def ctl_dags(self, req):
        body = req.json()
        dag_id = body.get('dag_id')
        if not isinstance(dag_id, str) or not re.match(r'^[A-Za-z0-9_.-]+$', dag_id):
            raise ApiError(400, 'dag_id must be a string of letters, digits, _ . -')
        if set(body) - {'dag_id', 'is_paused'}:
            raise ApiError(400, 'unknown field(s): %s' % ', '.join(sorted(set(body) - {'dag_id', 'is_paused'})))
        with self.lock:
            self.dags[dag_id] = {'dag_id': dag_id, 'is_paused': bool(body.get('is_paused', False))}
            self.dag_created.setdefault(dag_id, _utc(time.time()))
            return json_response(self.dags[dag_id])

    def ctl_advance(self, req):
        body = req.json()
        state = body.get('state')
        if state not in ('queued', 'running', 'success', 'failed'):
            raise ApiError(400, 'state must be queued, running, success or failed')
        with self.lock:
            r = self.runs.get(body.get('dag_id'), {}).get(body.get('dag_run_id'))
            if r is None:
                raise ApiError(404, 'no run %r of DAG %r' % (body.get('dag_run_id'), body.get('dag_id')))
            r.set_state(state)
            return json_response(r.v1())

    def ctl_state(self, req):
        with self.lock:
            self._tick()
            return json_response({'dags': list(self.dags.values()),
                                  'runs': [r.v2() for rs in self.runs.values() for r in rs.values()]})


ENV_STATES = ('CREATING', 'RUNNING', 'UPDATING', 'DELETING', 'ERROR')
ENV_NAME_RE = re.compile(r'^projects/([^/]+)/locations/([^/]+)/environments/([^/]+)$')


class Composer:
    """Environments exist only once made through the control API."""

    def __init__(self):
        self.lock = threading.Lock()
        self.reset()

    def reset(self):
        with self.lock:
            self.envs = {}      # name -> {'state', 'airflow_uri', 'served', 'created'}

    def ctl_environment(self, req):
        """POST /_fake/composer/environments {"name": "projects/P/locations/L/environments/E",
        "state": "RUNNING", "airflow_uri": optional}: create or change one."""
        body = req.json()
        unknown = set(body) - {'name', 'state', 'airflow_uri'}
        if unknown:
            raise ApiError(400, 'unknown field(s): %s' % ', '.join(sorted(unknown)))
        m = ENV_NAME_RE.match(body.get('name') or '')
        if not m or not ENV_RE.match(m.group(3)):
            raise ApiError(400, 'name must be projects/P/locations/L/environments/E (E: %s)' % ENV_RE.pattern)
        state = body.get('state', 'RUNNING')
        if state not in ENV_STATES:
            raise ApiError(400, 'state must be one of %s' % ', '.join(ENV_STATES))
        now = datetime.datetime.now(datetime.timezone.utc).strftime('%Y-%m-%dT%H:%M:%S.%fZ')
        with self.lock:
            e = self.envs.setdefault(body['name'], {'created': now, 'served': False, 'airflow_uri': None})
            e['state'] = state
            e['updated'] = now
            e['served'] = e['served'] or state == 'RUNNING'
            if 'airflow_uri' in body:
                e['airflow_uri'] = body['airflow_uri']
            return json_response({'name': body['name'], 'state': state})

    def environment_get(self, req, project, location, env):
        if not ENV_RE.match(env):
            raise ApiError(400, 'Invalid environment name: %s' % env)
        cfg = req.app.config
        name = 'projects/%s/locations/%s/environments/%s' % (project, location, env)
        with self.lock:
            e = dict(self.envs.get(name) or {})
        if not e:
            raise ApiError(404, 'Environment %s not found.' % name, status='NOT_FOUND')
        bucket = '%s-%s-%s-bucket' % (location, env, uuid.uuid5(uuid.NAMESPACE_URL, name).hex[:8])
        image = cfg.get('composer_image_version') or DEFAULT_IMAGE
        config = {
            'gkeCluster': 'projects/%s/locations/%s/clusters/%s-gke' % (project, location, env),
            'dagGcsPrefix': 'gs://%s/dags' % bucket,
            'softwareConfig': {'imageVersion': image},
            'environmentSize': 'ENVIRONMENT_SIZE_SMALL',
        }
        if e['served']:
            config['airflowUri'] = e['airflow_uri'] or req.base_url + '/airflow'
        return json_response({
            'name': name,
            'uuid': str(uuid.uuid5(uuid.NAMESPACE_URL, name)),
            'state': e['state'],
            'createTime': e['created'],
            'updateTime': e['updated'],
            'labels': {},
            'config': config,
            'storageConfig': {'bucket': bucket},
        })


CONFIG = {'airflow_auto_seconds': ((int, float), 0), 'composer_image_version': (str, DEFAULT_IMAGE)}


def install(app):
    af = Airflow(app)
    app.airflow = af
    app.add_module(af)
    comp = Composer()
    app.add_module(comp)
    app.route('POST', r'/_fake/composer/environments', comp.ctl_environment, auth=False)
    app.route('GET', r'/v1/projects/([^/]+)/locations/([^/]+)/environments/([^/:]+)', comp.environment_get,
              api='composer-v1', method_id='composer.projects.locations.environments.get')
    r = app.route
    for v, sfx in (('v1', ''), ('v2', '_v2')):
        base = r'/airflow/api/%s/dags/([^/]+)' % v
        r('POST', base + r'/dagRuns', getattr(af, 'trigger_' + v), auth=False)
        r('GET', base + r'/dagRuns', getattr(af, 'list_runs' + sfx), auth=False)
        r('GET', base + r'/dagRuns/([^/]+)', getattr(af, 'get_run' + sfx), auth=False)
        r('PATCH', base + r'/dagRuns/([^/]+)', getattr(af, 'patch_run' + sfx), auth=False)
    r('GET', r'/airflow/api/v1/dags/([^/]+)', af.get_dag, auth=False)
    r('GET', r'/airflow/api/v2/dags/([^/]+)', af.get_dag_v2, auth=False)
    r('PATCH', r'/airflow/api/v1/dags/([^/]+)', af.patch_dag, auth=False)
    r('GET|POST|PUT|PATCH|DELETE', r'/airflow(?:/.*)?', af.not_found, auth=False)
    r('POST', r'/_fake/airflow/dags', af.ctl_dags, auth=False)
    r('POST', r'/_fake/airflow/advance', af.ctl_advance, auth=False)
    r('GET', r'/_fake/airflow/state', af.ctl_state, auth=False)
