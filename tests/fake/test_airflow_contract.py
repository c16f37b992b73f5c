#!/usr/bin/env python3
"""Contract test of the Airflow REST API as the fake models it and as the
composer plugin speaks it (issue #16), stdlib unittest.

The contracts:
* /api/v2 (Airflow 3): tests/fake/contracts/airflow/airflow-v2-subset.json,
  our transcription of the used part of Airflow's generated OpenAPI file
  (provenance in its "_source").
* /api/v1 (Airflow 2.10): the DAGRun schema of
  tests/fake/contracts/airflow/airflow-rest-api-v1.yaml, read here by a small
  line parser that knows only the YAML shapes that block uses.  The POST
  body is DAGRun less its readOnly members (the dag_run_endpoint's
  marshmallow schema refuses those and unknown fields).

A. The fake's /airflow/api/v2 endpoints: every 2xx body against the
   operation's response schema, every error body against the schema the
   spec gives for that status (HTTPExceptionResponse / HTTPValidationError),
   and the statuses against the operation's list.
B. The real plugin: the daemon runs composer actions (airflow3 with and
   without a logical_date template, airflow2 likewise) against the fake;
   every POST .../dagRuns body in the fake's request log is validated
   against TriggerDAGRunPostBody (v2) or the v1 DAGRun request schema.

The JSON-Schema validator below handles only the keywords the contract file
uses: type, required, properties, additionalProperties (false), enum, anyOf,
items, format (date-time, uuid), maxLength and $ref.
"""
import datetime
import http.client
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import unittest
import urllib.parse

HERE = os.path.dirname(os.path.abspath(__file__))
CONTRACTS = os.path.join(HERE, 'contracts', 'airflow')
V2_JSON = os.path.join(CONTRACTS, 'airflow-v2-subset.json')
V1_YAML = os.path.join(CONTRACTS, 'airflow-rest-api-v1.yaml')
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(HERE, '..', 'scripts'))
import sbtest  # noqa: E402
from gfake import airflow as fake_airflow  # noqa: E402

ENV = 'projects/p/locations/us-central1/environments/env1'
AUTH = {'Authorization': 'Bearer fake-static-token'}

# ---- a minimal JSON-Schema validator ----------------------------------------------

DATE_TIME = re.compile(r'^\d{4}-\d{2}-\d{2}[Tt]\d{2}:\d{2}:\d{2}(\.\d+)?([Zz]|[+-]\d{2}:\d{2})$')
UUID = re.compile(r'^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$')
KEYWORDS = {'type', 'required', 'properties', 'additionalProperties', 'enum', 'anyOf', 'items', 'format',
            'maxLength', '$ref'}


def _type_ok(t, v):
    return {'null': v is None, 'boolean': isinstance(v, bool), 'string': isinstance(v, str),
            'integer': isinstance(v, int) and not isinstance(v, bool),
            'number': isinstance(v, (int, float)) and not isinstance(v, bool),
            'object': isinstance(v, dict), 'array': isinstance(v, list)}[t]


def _date_time_ok(v):
    if not DATE_TIME.match(v):
        return False
    try:
        datetime.datetime.fromisoformat(re.sub(r'[Zz]$', '+00:00', v).replace('t', 'T'))
    except ValueError:
        return False
    return True


def errors_of(schema, v, defs, path='$'):
    """The list of ways V breaks SCHEMA (empty: valid)."""
    unknown = set(schema) - KEYWORDS
    if unknown:
        raise ValueError('%s: keyword(s) the validator does not know: %s' % (path, sorted(unknown)))
    if '$ref' in schema:
        name = schema['$ref'].rsplit('/', 1)[-1]
        return errors_of(defs[name], v, defs, path)
    if 'anyOf' in schema:
        alts = [errors_of(s, v, defs, path) for s in schema['anyOf']]
        if all(alts):
            return ['%s: matches none of anyOf (%s)' % (path, ' | '.join('; '.join(a) for a in alts))]
        return []
    errs = []
    t = schema.get('type')
    if t is not None and not _type_ok(t, v):
        return ['%s: %r is not of type %s' % (path, v, t)]
    if 'enum' in schema and v not in schema['enum']:
        errs.append('%s: %r is not one of %s' % (path, v, schema['enum']))
    if isinstance(v, str):
        f = schema.get('format')
        if f == 'date-time' and not _date_time_ok(v):
            errs.append('%s: %r is not an RFC 3339 date-time' % (path, v))
        if f == 'uuid' and not UUID.match(v):
            errs.append('%s: %r is not a uuid' % (path, v))
        if 'maxLength' in schema and len(v) > schema['maxLength']:
            errs.append('%s: longer than %d' % (path, schema['maxLength']))
    if isinstance(v, dict):
        props = schema.get('properties', {})
        for k in schema.get('required', []):
            if k not in v:
                errs.append('%s: required member %r missing' % (path, k))
        for k, x in v.items():
            if k in props:
                errs += errors_of(props[k], x, defs, '%s.%s' % (path, k))
            elif schema.get('additionalProperties') is False:
                errs.append('%s: member %r is not allowed (additionalProperties: false)' % (path, k))
    if isinstance(v, list) and 'items' in schema:
        for i, x in enumerate(v):
            errs += errors_of(schema['items'], x, defs, '%s[%d]' % (path, i))
    return errs


def load_v2():
    with open(V2_JSON) as f:
        return json.load(f)


# ---- the v1 YAML's DAGRun, by a small line parser -------------------------------------

def _indent(line):
    return len(line) - len(line.lstrip(' '))


def _scalar(s):
    s = s.strip()
    if len(s) >= 2 and s[0] == s[-1] and s[0] in '"\'':
        return s[1:-1]
    return {'true': True, 'false': False}.get(s, s)


def _yaml_block(lines, i, indent):
    """Mappings, lists of scalars, and block scalars (skipped) at >= INDENT."""
    obj = None
    while i < len(lines):
        line = lines[i]
        if not line.strip() or line.lstrip().startswith('#'):
            i += 1
            continue
        ind = _indent(line)
        if ind < indent:
            break
        s = line.strip()
        if s.startswith('- '):
            obj = obj if isinstance(obj, list) else []
            obj.append(_scalar(s[2:]))
            i += 1
            continue
        key, _, rest = s.partition(':')
        rest = rest.strip()
        obj = obj if isinstance(obj, dict) else {}
        if rest in ('|', '>', '|-', '>-'):
            i += 1
            while i < len(lines) and (not lines[i].strip() or _indent(lines[i]) > ind):
                i += 1
            obj[key] = '(text)'
        elif rest == '':
            obj[key], i = _yaml_block(lines, i + 1, ind + 1)
        else:
            obj[key] = _scalar(rest)
            i += 1
    return obj, i


def v1_component(name):
    with open(V1_YAML) as f:
        lines = f.read().split('\n')
    start = lines.index('    %s:' % name)          # components/schemas/NAME
    obj, _ = _yaml_block(lines, start + 1, 6)
    return obj


def _oas30(s):
    """An OpenAPI 3.0 schema (type, format, enum, nullable, readOnly, $ref) in our form."""
    if '$ref' in s:
        return _oas30(v1_component(s['$ref'].rsplit('/', 1)[-1]))
    out = {'type': s['type']}
    for k in ('format', 'enum'):
        if k in s:
            out[k] = s[k]
    return {'anyOf': [out, {'type': 'null'}]} if s.get('nullable') is True else out


def _read_only(s):
    return s.get('readOnly') is True or ('$ref' in s and _read_only(v1_component(s['$ref'].rsplit('/', 1)[-1])))


def v1_dagrun_schemas():
    """(request schema, response schema) of POST /dags/{dag_id}/dagRuns from the v1 YAML."""
    d = v1_component('DAGRun')
    assert d['type'] == 'object', d
    props = d['properties']
    response = {'type': 'object', 'properties': {k: _oas30(v) for k, v in props.items()}}
    request = {'type': 'object', 'additionalProperties': False,
               'properties': {k: _oas30(v) for k, v in props.items() if not _read_only(v)}}
    return request, response


# ---- HTTP ---------------------------------------------------------------------------

class Http:
    def __init__(self, port):
        self.port = port

    def __call__(self, method, path, body=None, headers=None):
        c = http.client.HTTPConnection('127.0.0.1', self.port, timeout=30)
        h = dict(AUTH if headers is None else headers)
        data = None
        if body is not None:
            data = body if isinstance(body, bytes) else json.dumps(body).encode()
            h['Content-Type'] = 'application/json'
        try:
            c.request(method, path, body=data, headers=h)
            r = c.getresponse()
            raw = r.read()
            ctype = r.getheader('Content-Type') or ''
        finally:
            c.close()
        try:
            js = json.loads(raw) if raw else None
        except ValueError:
            js = raw
        return r.status, ctype, js


class Base(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.dir = tempfile.mkdtemp(prefix='sbafc.')
        cls.fake = sbtest.Fake(cls.dir)
        cls.http = Http(cls.fake.port)
        cls.v2 = load_v2()
        cls.defs = cls.v2['schemas']

    @classmethod
    def tearDownClass(cls):
        cls.fake.stop()
        if os.environ.get('SB_KEEP_TMP') != '1':
            shutil.rmtree(cls.dir, ignore_errors=True)

    def setUp(self):
        self.ctl('POST', '/_fake/reset', {})
        self.ctl('POST', '/_fake/config', {'require_auth': True, 'airflow_auto_seconds': 0})

    def ctl(self, method, path, body=None):
        st, _, js = self.http(method, path, body, headers={})
        self.assertEqual(st, 200, (path, js))
        return js

    def valid(self, schema_name, v, what=''):
        errs = errors_of({'$ref': '#/schemas/' + schema_name}, v, self.defs)
        self.assertEqual(errs, [], '%s %s: %s' % (schema_name, what, json.dumps(v)[:800]))

    def call(self, op, path, body=None, want=None):
        """One v2 call, checked against operation OP of the contract: the status
        is one the spec lists, the body fits that status's schema."""
        method = op.split(' ', 1)[0]
        spec = self.v2['operations'][op]
        if isinstance(body, dict) and 'request' in spec and want is not None and 200 <= want < 300:
            self.valid(spec['request'], body, 'request (the test meant to send a valid one)')
        st, ctype, js = self.http(method, '/airflow' + path, body)
        if want is not None:
            self.assertEqual(st, want, js)
        self.assertIn(str(st), spec['responses'], '%s answered %d, which the spec does not list' % (op, st))
        self.assertTrue(ctype.startswith('application/json'), (op, st, ctype))
        self.valid(spec['responses'][str(st)], js, '(%s -> %d)' % (op, st))
        return st, js


# ---- A: the fake's v2 endpoints -------------------------------------------------------

TRIGGER = 'POST /api/v2/dags/{dag_id}/dagRuns'
GET_RUN = 'GET /api/v2/dags/{dag_id}/dagRuns/{dag_run_id}'
PATCH_RUN = 'PATCH /api/v2/dags/{dag_id}/dagRuns/{dag_run_id}'
LIST_RUNS = 'GET /api/v2/dags/{dag_id}/dagRuns'
GET_DAG = 'GET /api/v2/dags/{dag_id}'


class TestValidator(Base):
    """The validator and the transcription catch what they should."""

    def test_validator_refuses_what_the_spec_refuses(self):
        def bad(name, v):
            self.assertNotEqual(errors_of({'$ref': '#/schemas/' + name}, v, self.defs), [], (name, v))
        bad('TriggerDAGRunPostBody', {'dag_run_id': 'a'})                           # logical_date required
        bad('TriggerDAGRunPostBody', {'logical_date': None, 'execution_date': None})  # extra member
        bad('TriggerDAGRunPostBody', {'logical_date': '2026-01-01'})                 # not a date-time
        bad('TriggerDAGRunPostBody', {'logical_date': '2026-01-01T00:00:00'})        # no offset
        bad('TriggerDAGRunPostBody', {'logical_date': None, 'conf': []})
        bad('DagRunState', 'up_for_retry')
        bad('DAGRunPatchBody', {'state': 'running'})
        bad('HTTPValidationError', {'detail': 'text'})
        bad('HTTPExceptionResponse', {'title': 'Not Found'})
        self.assertEqual(errors_of({'$ref': '#/schemas/TriggerDAGRunPostBody'},
                                   {'logical_date': '2026-01-01T00:00:00.5+02:00', 'conf': None}, self.defs), [])

    def test_transcription_is_self_consistent(self):
        """Every $ref resolves, every operation's schemas exist, provenance is there."""
        src = self.v2['_source']
        for k in ('repo', 'path', 'commit', 'info_version', 'licence', 'read_on'):
            self.assertTrue(src.get(k), k)
        refs = re.findall(r'"#/schemas/([A-Za-z]+)"', json.dumps(self.v2))
        for r in refs:
            self.assertIn(r, self.defs)
        for op in self.v2['operations'].values():
            for name in list(op['responses'].values()) + ([op['request']] if 'request' in op else []):
                self.assertIn(name, self.defs)
        # the fake accepts exactly the spec's trigger members
        self.assertEqual(fake_airflow.V2_LOAD_FIELDS, set(self.defs['TriggerDAGRunPostBody']['properties']))
        self.assertEqual(self.defs['TriggerDAGRunPostBody']['required'], ['logical_date'])


class TestFakeV2(Base):
    def setUp(self):
        super().setUp()
        self.ctl('POST', '/_fake/airflow/dags', {'dag_id': 'ingest'})

    def test_trigger_get_advance_patch_list(self):
        # bodies shaped like composer.c's: dag_run_id, conf, logical_date (null or a template's), note
        bodies = [{'dag_run_id': 'sb_rr-0001_1a2b3c4d', 'conf': {'command': 'x', 'event_id': 'rr-0001'},
                   'logical_date': None},
                  {'dag_run_id': 'sb_rr-0002_5e6f7a8b', 'conf': {'event_id': 'rr-0002'},
                   'logical_date': '2026-11-02T00:00:00Z', 'note': 'from syncbridge'},
                  # every member the spec allows
                  {'dag_run_id': 'full', 'logical_date': '2026-11-03T00:00:00+00:00',
                   'data_interval_start': '2026-11-02T00:00:00+00:00',
                   'data_interval_end': '2026-11-03T00:00:00+00:00', 'run_after': '2026-11-03T00:00:00Z',
                   'conf': None, 'note': None, 'partition_key': 'p1'},
                  {'logical_date': None}]
        for b in bodies:
            st, js = self.call(TRIGGER, '/api/v2/dags/ingest/dagRuns', b, 200)
            self.assertEqual((js['state'], js['run_type'], js['triggered_by']), ('queued', 'manual', 'rest_api'))
            self.assertEqual(js['logical_date'] is None, b['logical_date'] is None)
            self.assertEqual(js['partition_key'], b.get('partition_key'))
        rid = urllib.parse.quote(bodies[0]['dag_run_id'])
        path = '/api/v2/dags/ingest/dagRuns/' + rid
        self.assertEqual(self.call(GET_RUN, path, want=200)[1]['state'], 'queued')
        for state in ('running', 'success', 'failed'):
            self.ctl('POST', '/_fake/airflow/advance', {'dag_id': 'ingest', 'dag_run_id': bodies[0]['dag_run_id'],
                                                        'state': state})
            st, js = self.call(GET_RUN, path, want=200)
            self.assertEqual(js['state'], state)
        self.assertIsInstance(js['duration'], (int, float))
        st, js = self.call(PATCH_RUN, path, {'state': 'queued', 'note': 'again'}, 200)
        self.assertEqual((js['state'], js['note']), ('queued', 'again'))
        st, js = self.call(LIST_RUNS, '/api/v2/dags/ingest/dagRuns', want=200)
        self.assertEqual(js['total_entries'], 4)
        st, js = self.call(LIST_RUNS, '/api/v2/dags/~/dagRuns?state=queued', want=200)
        self.assertEqual(js['total_entries'], 4)

    def test_get_dag(self):
        st, js = self.call(GET_DAG, '/api/v2/dags/ingest', want=200)
        self.assertIs(js['is_paused'], False)
        self.ctl('POST', '/_fake/airflow/dags', {'dag_id': 'held', 'is_paused': True})
        self.assertIs(self.call(GET_DAG, '/api/v2/dags/held', want=200)[1]['is_paused'], True)
        self.call(GET_DAG, '/api/v2/dags/nope', want=404)

    def test_errors(self):
        p = '/api/v2/dags/ingest/dagRuns'
        # logical_date missing -> 422, FastAPI's list
        st, js = self.call(TRIGGER, p, {'dag_run_id': 'a', 'conf': {}}, 422)
        self.assertEqual([(e['type'], e['loc']) for e in js['detail']], [('missing', ['body', 'logical_date'])])
        # a member outside the spec (additionalProperties: false)
        st, js = self.call(TRIGGER, p, {'dag_run_id': 'a', 'logical_date': None, 'execution_date': None}, 422)
        self.assertEqual(js['detail'][0]['type'], 'extra_forbidden')
        self.call(TRIGGER, p, {'logical_date': 'yesterday'}, 422)
        self.call(TRIGGER, p, {'logical_date': None, 'conf': [1]}, 422)
        self.call(TRIGGER, p, b'', 422)
        self.call(TRIGGER, p, b'[1]', 422)
        # unknown DAG -> 404 HTTPExceptionResponse
        st, js = self.call(TRIGGER, '/api/v2/dags/nope/dagRuns', {'logical_date': None}, 404)
        self.assertIsInstance(js['detail'], str)
        # duplicate dag_run_id -> 409
        self.call(TRIGGER, p, {'dag_run_id': 'dup', 'logical_date': None}, 200)
        st, js = self.call(TRIGGER, p, {'dag_run_id': 'dup', 'logical_date': None}, 409)
        self.assertEqual(js['detail']['reason'], 'Unique constraint violation')
        # a run id outside the allowed pattern -> 400
        self.call(TRIGGER, p, {'dag_run_id': 'has space', 'logical_date': None}, 400)
        # reading a run that is not there
        st, js = self.call(GET_RUN, p + '/nope', want=404)
        self.assertIn('The DagRun with dag_id', js['detail'])   # the text composer.c looks for
        self.call(PATCH_RUN, p + '/dup', {'state': 'running'}, 422)
        # no token
        st, ctype, js = self.http('GET', '/airflow' + p + '/dup', headers={})
        self.assertEqual(st, 401)
        self.valid('HTTPExceptionResponse', js, '401')


class TestFakeV1(Base):
    """The v1 POST body and answer against the v1 YAML's DAGRun."""

    def test_v1_trigger(self):
        request, response = v1_dagrun_schemas()
        self.assertEqual(set(request['properties']), fake_airflow.V1_LOAD_FIELDS)
        self.ctl('POST', '/_fake/airflow/dags', {'dag_id': 'ingest'})
        for b in ({'dag_run_id': 'sb_a', 'conf': {'event_id': 'a'}},
                  {'dag_run_id': 'sb_b', 'conf': {}, 'logical_date': '2026-11-02T00:00:00Z', 'note': 'n'}):
            self.assertEqual(errors_of(request, b, {}), [])
            st, _, js = self.http('POST', '/airflow/api/v1/dags/ingest/dagRuns', b)
            self.assertEqual(st, 200, js)
            self.assertEqual(errors_of(response, js, {}), [], js)
        self.assertNotEqual(errors_of(request, {'dag_run_id': 'x', 'state': 'queued'}, {}), [])  # readOnly
        self.assertNotEqual(errors_of(request, {'dag_run_id': 'x', 'logical_date': None, 'x': 1}, {}), [])


# ---- B: what the real plugin sends ---------------------------------------------------

def command(n):
    return 'sh /opt/cerebro/run_replicator.sh edw t%d inc_dt 2026-11-%02d' % (n, 1 + n % 28)


@sbtest.needs(os.path.exists(sbtest.BIN), 'the syncbridge binary (%s): run from make check' % sbtest.BIN)
class TestPluginBodies(Base):
    def test_composer_request_bodies_follow_the_specs(self):
        self.ctl('POST', '/_fake/config', {'airflow_auto_seconds': 0.05})
        self.ctl('POST', '/_fake/composer/environments', {'name': ENV, 'state': 'RUNNING'})
        variants = {   # action name -> (api, DAG, extra options)
            'af3': ('airflow3', 'dag_v3', {}),
            'af3_dated': ('airflow3', 'dag_v3_dated', {'logical_date': '${day}T00:00:00Z',
                                                       'note': 'event ${event_id}'}),
            'af2': ('airflow2', 'dag_v2', {}),
            'af2_dated': ('airflow2', 'dag_v2_dated', {'logical_date': '${day}T00:00:00Z', 'note': 'n'}),
        }
        actions = {}
        for name, (api, dag, extra) in variants.items():
            self.ctl('POST', '/_fake/airflow/dags', {'dag_id': dag})
            a = {'plugin': 'composer', 'environment': ENV, 'api': api, 'dag': dag, 'poll_interval': '50ms',
                 'step_timeout': '2m', 'auth': 'service_account', 'key_file': self.fake.key_file,
                 'endpoint': self.fake.base, 'retry': {'initial': '20ms', 'max_delay': '200ms', 'max_attempts': 20}}
            a.update(extra)
            actions[name] = a
        inp = os.path.join(self.dir, 'input.jsonl')
        n_events = 3
        with open(inp, 'w') as f:
            for n in range(n_events):
                f.write(json.dumps({'event_id': 'rr-%04d' % n, 'command': command(n), 'schema': 'edw',
                                    'table': 't%d' % n, 'day': '2026-11-%02d' % (n + 1)}) + '\n')
        steps = list(actions)
        cfg = sbtest.write_config(os.path.join(self.dir, 'syncbridge.json'), {
            'state_dir': os.path.join(self.dir, 'state'), 'log': {'level': 'info'}, 'shutdown_timeout': '10s',
            'sources': {'in': {'plugin': 'file_in', 'path': inp, 'format': 'json', 'id_field': 'event_id',
                               'poll_interval': '20ms'}},
            'actions': actions, 'routes': {'r': {'sources': ['in'], 'steps': steps}}})
        r = subprocess.run([sbtest.BIN, '--once', '-c', cfg], capture_output=True, text=True, timeout=300,
                           env=sbtest.env())
        self.assertEqual(r.returncode, 0, r.stderr[-3000:])

        log = self.ctl('GET', '/_fake/requests?path_regex=' + urllib.parse.quote('/dagRuns$'))
        posts = [e for e in log if e['method'] == 'POST']
        v1_request, _ = v1_dagrun_schemas()
        seen = {}
        for e in posts:
            self.assertEqual(e['status'], 200, e)
            body = json.loads(e['body'])
            dag = e['path'].split('/dags/')[1].split('/')[0]
            seen[dag] = seen.get(dag, 0) + 1
            if e['path'].startswith('/airflow/api/v2/'):
                self.valid('TriggerDAGRunPostBody', body, 'as composer.c sent it')
                self.assertIn('logical_date', body)
            else:
                self.assertTrue(e['path'].startswith('/airflow/api/v1/'), e['path'])
                self.assertEqual(errors_of(v1_request, body, {}), [], body)
            if dag.endswith('_dated'):
                self.assertRegex(body['logical_date'], r'^2026-11-0\dT00:00:00Z$')
                self.assertIn('note', body)
            elif dag == 'dag_v3':
                self.assertIsNone(body['logical_date'])      # Airflow 3: null unless a template gives one
            else:
                self.assertNotIn('logical_date', body)       # Airflow 2: now, by leaving it out
        self.assertEqual(seen, {v[1]: n_events for v in variants.values()})
        # and each run ended where the plugin waited for it
        runs = self.ctl('GET', '/_fake/airflow/state')['runs']
        self.assertEqual(len(runs), n_events * len(variants))
        self.assertEqual({x['state'] for x in runs}, {'success'})
        for x in runs:
            self.valid('DAGRunResponse', x, '(the fake\'s stored run)')


if __name__ == '__main__':
    unittest.main()
