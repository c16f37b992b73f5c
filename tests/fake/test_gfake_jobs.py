#!/usr/bin/env python3
"""Tests of gfake's BigQuery-over-HTTP, Dataproc, Composer and Airflow
routes (stdlib unittest).  Reuses the Fake launcher of test_gfake.py: one
gfake subprocess on port 0 for the whole module.
"""
import json
import os
import sys
import time
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import test_gfake as tg  # noqa: E402

F = None


INITIAL_CONFIG = None


def setUpModule():
    global F, INITIAL_CONFIG
    F = tg.F = tg.Fake()
    INITIAL_CONFIG = ctl('GET', '/_fake/config')[1]


def tearDownModule():
    F.stop()


def api(method, path, body=None, headers=None):
    st, _, js, _ = F.api(method, path, body, headers)
    return st, js


def ctl(method, path, body=None):
    st, _, data = F.request(method, path, body)
    return st, (json.loads(data) if data else None)


class Base(unittest.TestCase):
    def setUp(self):
        ctl('POST', '/_fake/reset', {})
        ctl('POST', '/_fake/config', {'require_auth': True, 'stream_buffer_seconds': 0, 'bq_slow_queries': 0,
                                      'dataproc_cluster_seconds': 2, 'dataproc_job_seconds': 2,
                                      'airflow_auto_seconds': 0,
                                      'composer_image_version': 'composer-2.9.7-airflow-2.10.2'})

    def wait_for(self, fn, timeout=5.0):
        deadline = time.time() + timeout
        while True:
            v = fn()
            if v or time.time() > deadline:
                return v
            time.sleep(0.05)


BQ = '/bigquery/v2/projects/p'


class TestBigQueryHttp(Base):
    def setUp(self):
        super().setUp()
        st, _ = api('POST', BQ + '/datasets', {'datasetReference': {'projectId': 'p', 'datasetId': 'reg'}})
        self.assertEqual(st, 200)
        st, _ = api('POST', BQ + '/datasets/reg/tables', {
            'tableReference': {'projectId': 'p', 'datasetId': 'reg', 'tableId': 'runs'},
            'schema': {'fields': [{'name': 'id', 'type': 'INTEGER'}, {'name': 'command', 'type': 'STRING'},
                                  {'name': 'timestamp', 'type': 'DATETIME'}, {'name': 'source', 'type': 'STRING'}]}})
        self.assertEqual(st, 200)

    def insert(self, rows, **kw):
        body = {'rows': [{'insertId': 'i%s' % r['id'], 'json': r} for r in rows]}
        body.update(kw)
        return api('POST', BQ + '/datasets/reg/tables/runs/insertAll', body)

    def query(self, sql, params=None):
        body = {'query': sql, 'useLegacySql': False}
        if params:
            body.update(parameterMode='NAMED', queryParameters=params)
        return api('POST', BQ + '/queries', body)

    def test_table_made_by_the_control_api_has_its_schema(self):
        fields = [{'name': 'id', 'type': 'INTEGER', 'mode': 'REQUIRED'}, {'name': 'ts', 'type': 'DATETIME'}]
        st, _ = ctl('POST', '/_fake/bigquery/table', {'project': 'p', 'dataset': 'ctl', 'table': 't', 'fields': fields})
        self.assertEqual(st, 200)
        st, js = api('GET', BQ + '/datasets/ctl/tables/t')
        self.assertEqual(st, 200, js)
        self.assertEqual(js['schema']['fields'], fields)

    def test_insert_all_query_and_dump(self):
        st, js = self.insert([{'id': 1, 'command': 'run a', 'timestamp': '2026-01-01T00:00:00', 'source': 'onprem'},
                              {'id': 2, 'command': 'run a', 'timestamp': '2026-01-01 00:00:01', 'source': 'gcp'}])
        self.assertEqual((st, js), (200, {'kind': 'bigquery#tableDataInsertAllResponse'}))
        st, js = self.insert([{'id': 1, 'command': 'dup'}])    # same insertId: de-duplicated
        self.assertEqual(st, 200)
        st, js = self.query('SELECT id, source FROM `p.reg.runs` WHERE source = @s ORDER BY id',
                            [{'name': 's', 'parameterType': {'type': 'STRING'}, 'parameterValue': {'value': 'gcp'}}])
        self.assertEqual(st, 200, js)
        self.assertTrue(js['jobComplete'])
        self.assertEqual(js['rows'], [{'f': [{'v': '2'}, {'v': 'gcp'}]}])
        st, rows = ctl('GET', '/_fake/bigquery/table?project=p&dataset=reg&table=runs')
        self.assertEqual(st, 200)
        self.assertEqual([r['id'] for r in rows], [1, 2])
        self.assertEqual(rows[0]['timestamp'], '2026-01-01T00:00:00')
        # a bad row: HTTP 200 with insertErrors, nothing written, the good row 'stopped'
        st, js = self.insert([{'id': 3, 'source': 'gcp'}, {'id': 'x'}])
        self.assertEqual(st, 200)
        self.assertEqual([e['errors'][0]['reason'] for e in js['insertErrors']], ['stopped', 'invalid'])
        self.assertEqual(len(ctl('GET', '/_fake/bigquery/table?project=p&dataset=reg&table=runs')[1]), 2)

    def test_discovery_validation_and_auth(self):
        st, js = self.insert([{'id': 1}], bogusField=True)
        self.assertEqual(st, 400)
        self.assertIn('Unknown name "bogusField"', js['error']['message'])
        self.assertEqual(js['error']['errors'][0]['reason'], 'invalid')
        st, js = api('POST', BQ + '/queries', {'query': 'SELECT 1', 'useLegacySql': 'no'})
        self.assertEqual(st, 400)
        st, _, js, _ = F.api('GET', BQ + '/datasets/reg', headers={'Authorization': ''})
        self.assertEqual(st, 401)
        self.assertEqual(js['error']['errors'][0]['reason'], 'required')
        st, js = api('GET', BQ + '/datasets/nope')
        self.assertEqual(st, 404)
        self.assertEqual(js['error']['errors'][0]['reason'], 'notFound')

    def test_streaming_buffer_over_http(self):
        ctl('POST', '/_fake/config', {'stream_buffer_seconds': 0.6})
        self.insert([{'id': 1, 'source': 'gcp', 'command': 'pending'}])
        st, js = self.query("UPDATE `p.reg.runs` SET command = 'done' WHERE id = 1")
        self.assertEqual(st, 400)
        self.assertIn('streaming buffer', js['error']['message'])
        st, js = api('GET', BQ + '/datasets/reg/tables/runs')
        self.assertEqual(js['streamingBuffer']['estimatedRows'], '1')
        # DML INSERT rows are not in the streaming buffer
        st, js = self.query("INSERT INTO `p.reg.runs` (id, source) VALUES (2, 'gcp')")
        self.assertEqual((st, js['numDmlAffectedRows']), (200, '1'))
        self.assertEqual(self.query("UPDATE `p.reg.runs` SET command = 'x' WHERE id = 2")[0], 200)
        time.sleep(0.7)
        st, js = self.query("UPDATE `p.reg.runs` SET command = 'done' WHERE id = 1")
        self.assertEqual((st, js['numDmlAffectedRows']), (200, '1'), js)
        rows = ctl('GET', '/_fake/bigquery/table?project=p&dataset=reg&table=runs&meta=1')[1]
        self.assertEqual(rows[0]['command'], 'done')
        self.assertTrue(rows[0]['_streamed'])

    def test_streaming_buffer_is_on_by_default(self):
        # Real BigQuery refuses DML on streamed rows for up to ~90 minutes.
        self.assertGreaterEqual(INITIAL_CONFIG['stream_buffer_seconds'], 1800)
        ctl('POST', '/_fake/config', {'stream_buffer_seconds': INITIAL_CONFIG['stream_buffer_seconds']})
        self.insert([{'id': 1, 'source': 'gcp'}])
        st, js = self.query("UPDATE `p.reg.runs` SET command = 'x' WHERE id = 1")
        self.assertEqual(st, 400)
        self.assertIn('streaming buffer', js['error']['message'])

    def test_parameter_values_as_json_numbers_and_booleans(self):
        # Google's samples and the Node client send numbers, not strings.
        st, js = self.query('SELECT @i AS i, @f AS f, @b AS b, @a AS a', [
            {'name': 'i', 'parameterType': {'type': 'INT64'}, 'parameterValue': {'value': 42}},
            {'name': 'f', 'parameterType': {'type': 'FLOAT64'}, 'parameterValue': {'value': 1.5}},
            {'name': 'b', 'parameterType': {'type': 'BOOL'}, 'parameterValue': {'value': True}},
            {'name': 'a', 'parameterType': {'type': 'ARRAY', 'arrayType': {'type': 'INT64'}},
             'parameterValue': {'arrayValues': [{'value': 1}, {'value': '2'}]}}])
        self.assertEqual(st, 200, js)
        self.assertEqual(js['rows'][0]['f'][:3], [{'v': '42'}, {'v': '1.5'}, {'v': 'true'}])
        st, js = self.query('SELECT @s AS s', [{'name': 's', 'parameterType': {'type': 'STRING'},
                                                'parameterValue': {'value': {'x': 1}}}])
        self.assertEqual(st, 400)

    def test_list_and_delete_methods(self):
        # tables.list, tabledata.list (streamed rows included), jobs.list,
        # datasets.list, tables.delete, datasets.delete
        self.insert([{'id': i, 'source': 's%d' % i} for i in (1, 2, 3)])
        st, js = api('GET', BQ + '/datasets/reg/tables')
        self.assertEqual(st, 200, js)
        self.assertEqual(([t['tableReference']['tableId'] for t in js['tables']], js['totalItems']), (['runs'], 1))
        st, js = api('GET', BQ + '/datasets/reg/tables/runs/data?maxResults=2')
        self.assertEqual(st, 200, js)
        self.assertEqual((js['totalRows'], len(js['rows']), js['pageToken']), ('3', 2, '2'))
        self.assertEqual(js['rows'][0]['f'][0], {'v': '1'})
        js = api('GET', BQ + '/datasets/reg/tables/runs/data?pageToken=2')[1]
        self.assertEqual([r['f'][0]['v'] for r in js['rows']], ['3'])
        self.assertNotIn('pageToken', js)
        self.query('SELECT 1')
        self.query('SELECT 2')
        st, js = api('GET', BQ + '/jobs?maxResults=1')
        self.assertEqual(st, 200, js)
        self.assertEqual((len(js['jobs']), js['jobs'][0]['state'], js['nextPageToken']), (1, 'DONE', '1'))
        self.assertEqual(js['jobs'][0]['configuration']['query']['query'], 'SELECT 2')
        self.assertEqual([d['datasetReference']['datasetId'] for d in api('GET', BQ + '/datasets')[1]['datasets']],
                         ['reg'])
        self.assertEqual(api('DELETE', BQ + '/datasets/reg')[0], 400)
        self.assertEqual(api('DELETE', BQ + '/datasets/reg/tables/runs')[0], 204)
        self.assertEqual(api('GET', BQ + '/datasets/reg/tables/runs')[0], 404)
        self.assertEqual(api('DELETE', BQ + '/datasets/reg/tables/runs')[0], 404)
        self.assertEqual(api('GET', BQ + '/datasets/reg/tables')[1], {'kind': 'bigquery#tableList', 'totalItems': 0})
        self.assertEqual(api('DELETE', BQ + '/datasets/reg')[0], 204)
        self.assertEqual(api('GET', BQ + '/datasets/reg')[0], 404)

    def test_slow_queries_and_reset(self):
        ctl('POST', '/_fake/config', {'bq_slow_queries': 1})
        st, js = self.query('SELECT 1 AS x')
        self.assertEqual((st, js['jobComplete']), (200, False))
        job = js['jobReference']['jobId']
        st, js = api('GET', BQ + '/queries/' + job)
        self.assertEqual((st, js['jobComplete'], js['rows']), (200, True, [{'f': [{'v': '1'}]}]))
        ctl('POST', '/_fake/reset', {})
        self.assertEqual(api('GET', BQ + '/datasets/reg')[0], 404)
        self.assertEqual(ctl('GET', '/_fake/bigquery/table?project=p&dataset=reg&table=runs')[0], 404)


AF1 = '/airflow/api/v1/dags/ingest/dagRuns'
AF2 = '/airflow/api/v2/dags/ingest/dagRuns'


class TestComposer(Base):
    def env(self, name, state='RUNNING', **kw):
        st, js = ctl('POST', '/_fake/composer/environments', dict(kw, name=name, state=state))
        self.assertEqual(st, 200, js)

    def test_environment_exists_only_once_created_with_states(self):
        name = 'projects/p/locations/l/environments/made'
        self.assertEqual(api('GET', '/v1/' + name), (404, api('GET', '/v1/' + name)[1]))
        self.assertEqual(api('GET', '/v1/' + name)[1]['error']['status'], 'NOT_FOUND')
        self.env(name, 'CREATING')
        st, js = api('GET', '/v1/' + name)
        self.assertEqual((st, js['state']), (200, 'CREATING'))
        self.assertNotIn('airflowUri', js['config'])
        self.env(name, 'RUNNING')
        js = api('GET', '/v1/' + name)[1]
        self.assertEqual((js['state'], js['config']['airflowUri']), ('RUNNING', 'http://127.0.0.1:%d/airflow' % F.port))
        self.env(name, 'ERROR')
        self.assertEqual(api('GET', '/v1/' + name)[1]['state'], 'ERROR')
        self.env(name, 'RUNNING', airflow_uri='https://example.invalid/af')
        self.assertEqual(api('GET', '/v1/' + name)[1]['config']['airflowUri'], 'https://example.invalid/af')
        self.assertEqual(ctl('POST', '/_fake/composer/environments', {'name': name, 'state': 'BOGUS'})[0], 400)
        ctl('POST', '/_fake/reset', {})
        self.assertEqual(api('GET', '/v1/' + name)[0], 404)

    def test_environment_get(self):
        self.env('projects/p/locations/us-central1/environments/etl-env')
        self.env('projects/p/locations/l/environments/e')
        st, js = api('GET', '/v1/projects/p/locations/us-central1/environments/etl-env')
        self.assertEqual(st, 200, js)
        self.assertEqual(js['name'], 'projects/p/locations/us-central1/environments/etl-env')
        self.assertEqual(js['state'], 'RUNNING')
        self.assertEqual(js['config']['airflowUri'], 'http://127.0.0.1:%d/airflow' % F.port)
        self.assertTrue(js['config']['dagGcsPrefix'].startswith('gs://'))
        self.assertTrue(js['config']['dagGcsPrefix'].endswith('/dags'))
        self.assertRegex(js['config']['softwareConfig']['imageVersion'], r'^composer-2\.[\d.]+-airflow-2\.10\.\d+$')
        ctl('POST', '/_fake/config', {'composer_image_version': 'composer-3-airflow-3.0.1'})
        js = api('GET', '/v1/projects/p/locations/us-central1/environments/etl-env')[1]
        self.assertEqual(js['config']['softwareConfig']['imageVersion'], 'composer-3-airflow-3.0.1')
        # the Host header decides the advertised address
        st, _, js, _ = F.api('GET', '/v1/projects/p/locations/l/environments/e', headers={'Host': 'localhost:%d' % F.port})
        self.assertEqual(js['config']['airflowUri'], 'http://localhost:%d/airflow' % F.port)
        self.assertEqual(F.api('GET', '/v1/projects/p/locations/l/environments/e', headers={'Authorization': ''})[0], 401)


class TestAirflow(Base):
    def setUp(self):
        super().setUp()
        self.assertEqual(ctl('POST', '/_fake/airflow/dags', {'dag_id': 'ingest', 'is_paused': False})[0], 200)

    def check_problem(self, js, status):
        for k in ('type', 'title', 'status', 'detail', 'instance'):
            self.assertIn(k, js)
        self.assertEqual(js['status'], status)

    def test_v1_trigger_get_patch_list(self):
        body = {'dag_run_id': 'ingest__2026-01-01T00:00:00+00:00__batch7',
                'logical_date': '2026-01-01T00:00:00+00:00', 'conf': {'batch_id': '7'}, 'note': 'n'}
        st, js = api('POST', AF1, body)
        self.assertEqual(st, 200, js)
        self.assertEqual(js['dag_run_id'], body['dag_run_id'])
        self.assertEqual((js['dag_id'], js['state'], js['run_type'], js['external_trigger']),
                         ('ingest', 'queued', 'manual', True))
        self.assertEqual(js['logical_date'], '2026-01-01T00:00:00+00:00')
        self.assertEqual(js['execution_date'], js['logical_date'])
        self.assertEqual(js['conf'], {'batch_id': '7'})
        self.assertIsNone(js['start_date'])
        rid = body['dag_run_id']
        st, js = api('GET', AF1 + '/' + rid.replace('+', '%2B'))
        self.assertEqual((st, js['state']), (200, 'queued'))
        st, js = ctl('POST', '/_fake/airflow/advance', {'dag_id': 'ingest', 'dag_run_id': rid, 'state': 'running'})
        self.assertEqual(st, 200)
        js = api('GET', AF1 + '/' + rid.replace('+', '%2B'))[1]
        self.assertEqual(js['state'], 'running')
        self.assertIsNotNone(js['start_date'])
        st, js = api('PATCH', AF1 + '/' + rid.replace('+', '%2B'), {'state': 'failed'})
        self.assertEqual((st, js['state']), (200, 'failed'))
        self.assertIsNotNone(js['end_date'])
        # no dag_run_id: generated from logical_date
        st, js = api('POST', AF1, {'logical_date': '2026-01-02T00:00:00Z'})
        self.assertEqual((st, js['dag_run_id']), (200, 'manual__2026-01-02T00:00:00+00:00'))
        st, js = api('GET', AF1 + '?state=queued')
        self.assertEqual((st, js['total_entries']), (200, 1))
        self.assertEqual(api('GET', AF1)[1]['total_entries'], 2)
        self.assertEqual(api('GET', '/airflow/api/v1/dags/~/dagRuns')[1]['total_entries'], 2)

    def test_v1_errors(self):
        ok = {'dag_run_id': 'r1', 'logical_date': '2026-01-01T00:00:00+00:00'}
        self.assertEqual(api('POST', AF1, ok)[0], 200)
        st, js = api('POST', AF1, {'dag_run_id': 'r1', 'logical_date': '2026-02-01T00:00:00+00:00'})
        self.assertEqual(st, 409)
        self.check_problem(js, 409)
        self.assertIn("DAGRun ID: 'r1' already exists", js['detail'])
        st, js = api('POST', AF1, {'dag_run_id': 'r2', 'logical_date': '2026-01-01T00:00:00Z'})
        self.assertEqual(st, 409)
        self.assertIn('logical date', js['detail'])
        for bad in ({'dag_run_id': 'has space', 'logical_date': '2026-03-01T00:00:00Z'},
                    {'dag_run_id': 'r3', 'logical_date': '2026-03-01T00:00:00Z',
                     'execution_date': '2026-03-02T00:00:00Z'},
                    {'dag_run_id': 'r3', 'conf': ['not', 'an', 'object']},
                    {'dag_run_id': 'r3', 'conf': 'x'},
                    {'dag_run_id': 'r3', 'state': 'running'},
                    {'dag_run_id': 'r3', 'bogus': 1},
                    {'dag_run_id': 'r3', 'logical_date': 'yesterday'}):
            st, js = api('POST', AF1, bad)
            self.assertEqual(st, 400, bad)
            self.check_problem(js, 400)
        # same execution_date and logical_date is fine
        st, js = api('POST', AF1, {'dag_run_id': 'r4', 'logical_date': '2026-04-01T00:00:00Z',
                                   'execution_date': '2026-04-01T00:00:00+00:00'})
        self.assertEqual(st, 200, js)
        st, js = api('POST', '/airflow/api/v1/dags/nope/dagRuns', ok)
        self.assertEqual(st, 404)
        self.check_problem(js, 404)
        self.assertEqual(api('GET', AF1 + '/nope')[0], 404)
        st, js = api('PATCH', AF1 + '/r1', {'state': 'running'})
        self.assertEqual(st, 400)

    def test_auth(self):
        st, _, js, _ = F.api('POST', AF1, {'dag_run_id': 'a'}, headers={'Authorization': ''})
        self.assertEqual(st, 401)
        self.check_problem(js, 401)
        st, _, js, _ = F.api('GET', AF1, headers={'Authorization': 'Bearer not-issued'})
        self.assertEqual(st, 401)
        st, _, js, _ = F.api('GET', '/airflow/api/v2/dags/ingest/dagRuns', headers={'Authorization': ''})
        self.assertEqual(st, 401)
        ctl('POST', '/_fake/config', {'require_auth': False})
        st, _, js, _ = F.api('POST', AF1, {'dag_run_id': 'a'}, headers={'Authorization': ''})
        self.assertEqual(st, 200)

    def test_v2_shape_and_errors(self):
        st, js = api('POST', AF2, {'dag_run_id': 'b1', 'logical_date': None, 'conf': {'k': 1}})
        self.assertEqual(st, 200, js)
        for k in ('dag_run_id', 'dag_id', 'logical_date', 'queued_at', 'start_date', 'end_date',
                  'data_interval_start', 'data_interval_end', 'run_after', 'last_scheduling_decision',
                  'run_type', 'state', 'triggered_by', 'conf', 'note'):
            self.assertIn(k, js)
        self.assertNotIn('execution_date', js)
        self.assertIsNone(js['logical_date'])
        self.assertEqual((js['state'], js['triggered_by'], js['run_type']), ('queued', 'rest_api', 'manual'))
        st, js = api('POST', AF2, {'dag_run_id': 'b2'})              # logical_date is required
        self.assertEqual(st, 422)
        self.assertEqual(js['detail'][0]['loc'], ['body', 'logical_date'])   # FastAPI's HTTPValidationError
        self.assertEqual(api('POST', AF2, {'dag_run_id': 'b2', 'logical_date': None, 'execution_date': None})[0], 422)
        self.assertEqual(api('POST', AF2, {'dag_run_id': 'b2', 'logical_date': None, 'conf': [1]})[0], 422)
        self.assertEqual(api('POST', AF2, {'dag_run_id': 'b 2', 'logical_date': None})[0], 400)
        self.assertEqual(api('POST', AF2, {'dag_run_id': 'b1', 'logical_date': None})[0], 409)
        self.assertEqual(api('POST', AF2, {'dag_run_id': 'b3', 'logical_date': '2026-01-01T00:00:00Z'})[0], 200)
        st, js = api('POST', AF2, {'dag_run_id': 'b4', 'logical_date': '2026-01-01T00:00:00+00:00'})
        self.assertEqual(st, 409)
        self.assertEqual(js['detail']['reason'], 'Unique constraint violation')   # Airflow 3's 409 body
        self.assertEqual(api('POST', '/airflow/api/v2/dags/nope/dagRuns', {'logical_date': None})[0], 404)
        st, js = api('PATCH', AF2 + '/b1', {'state': 'success', 'note': 'done'})
        self.assertEqual((st, js['state'], js['note']), (200, 'success', 'done'))
        st, js = api('GET', AF2 + '?state=queued')
        self.assertEqual((st, js['total_entries'], js['dag_runs'][0]['dag_run_id']), (200, 1, 'b3'))
        # the same run seen through v1
        self.assertEqual(api('GET', AF1 + '/b1')[1]['state'], 'success')

    def test_auto_mode_and_paused(self):
        ctl('POST', '/_fake/config', {'airflow_auto_seconds': 0.3})
        ctl('POST', '/_fake/airflow/dags', {'dag_id': 'held', 'is_paused': True})
        api('POST', AF1, {'dag_run_id': 'auto1'})
        api('POST', '/airflow/api/v1/dags/held/dagRuns', {'dag_run_id': 'p1'})
        self.assertEqual(api('GET', AF1 + '/auto1')[1]['state'], 'queued')
        time.sleep(0.35)
        self.assertEqual(api('GET', AF1 + '/auto1')[1]['state'], 'running')
        time.sleep(0.3)
        js = api('GET', AF1 + '/auto1')[1]
        self.assertEqual(js['state'], 'success')
        self.assertIsNotNone(js['end_date'])
        self.assertEqual(api('GET', '/airflow/api/v1/dags/held/dagRuns/p1')[1]['state'], 'queued')
        # Airflow 3 reads the DAG (is_paused) at /api/v2/dags/D too
        self.assertEqual(api('GET', '/airflow/api/v2/dags/held')[1]['is_paused'], True)
        self.assertEqual(api('GET', '/airflow/api/v2/dags/nope')[0], 404)
        # manual mode is the default: nothing moves
        ctl('POST', '/_fake/config', {'airflow_auto_seconds': 0})
        api('POST', AF1, {'dag_run_id': 'man1'})
        time.sleep(0.35)
        self.assertEqual(api('GET', AF1 + '/man1')[1]['state'], 'queued')
        st, state = ctl('GET', '/_fake/airflow/state')
        self.assertEqual(len(state['runs']), 3)


DP = '/v1/projects/p/regions/us-central1'


def cluster_body(name='etl-20260101', **over):
    b = {'projectId': 'p', 'clusterName': name, 'labels': {'owner': 'pipeline'},
         'config': {'gceClusterConfig': {'zoneUri': 'us-central1-a'},
                    'masterConfig': {'numInstances': 1, 'machineTypeUri': 'n2-standard-4'},
                    'workerConfig': {'numInstances': 2, 'machineTypeUri': 'n2-standard-4'},
                    'softwareConfig': {'imageVersion': '2.2-debian12'},
                    'metastoreConfig': {'dataprocMetastoreService':
                                        'projects/p/locations/us-central1/services/svc'},
                    'lifecycleConfig': {'idleDeleteTtl': '1800s'}}}
    b.update(over)
    return b


HIVE = {'queryList': {'queries': ['INSERT OVERWRITE TABLE t SELECT 1']}, 'scriptVariables': {'dt': '2026-01-01'}}


class TestDataproc(Base):
    def create(self, body=None, rid=None):
        return api('POST', DP + '/clusters' + ('?requestId=' + rid if rid else ''), body or cluster_body())

    def op(self, name):
        return api('GET', '/v1/' + name)

    def test_clusters_list_and_jobs_list(self):
        for n in ('b-cluster', 'a-cluster'):
            body = cluster_body()
            body['clusterName'] = n
            body['labels'] = {'team': n[0]}
            self.assertEqual(self.create(body)[0], 200)
        ctl('POST', '/_fake/dataproc/advance', {'cluster': 'a-cluster'})
        st, js = api('GET', DP + '/clusters')
        self.assertEqual((st, [c['clusterName'] for c in js['clusters']]), (200, ['a-cluster', 'b-cluster']))
        js = api('GET', DP + '/clusters?filter=' + 'status.state%20%3D%20RUNNING')[1]
        self.assertEqual([c['clusterName'] for c in js['clusters']], ['a-cluster'])
        js = api('GET', DP + '/clusters?filter=labels.team%20%3D%20b')[1]
        self.assertEqual([c['clusterName'] for c in js['clusters']], ['b-cluster'])
        js = api('GET', DP + '/clusters?pageSize=1')[1]
        self.assertEqual((len(js['clusters']), js['nextPageToken']), (1, '1'))
        self.assertEqual(api('GET', '/v1/projects/p/regions/elsewhere/clusters')[1], {})
        for jid in ('j1', 'j2'):
            st, js = api('POST', DP + '/jobs:submit', {'job': {'placement': {'clusterName': 'a-cluster'},
                                                              'reference': {'jobId': jid}, 'hiveJob': HIVE}})
            self.assertEqual(st, 200, js)
        ctl('POST', '/_fake/dataproc/advance', {'job': 'j1', 'state': 'DONE'})
        js = api('GET', DP + '/jobs?clusterName=a-cluster')[1]
        self.assertEqual([j['reference']['jobId'] for j in js['jobs']], ['j1', 'j2'])
        js = api('GET', DP + '/jobs?jobStateMatcher=ACTIVE')[1]
        self.assertEqual([j['reference']['jobId'] for j in js['jobs']], ['j2'])
        js = api('GET', DP + '/jobs?jobStateMatcher=NON_ACTIVE')[1]
        self.assertEqual([j['reference']['jobId'] for j in js['jobs']], ['j1'])
        self.assertEqual(api('GET', DP + '/jobs?clusterName=b-cluster')[1], {})

    def test_create_idempotency_409_advance_delete(self):
        st, op = self.create(rid='req-1')
        self.assertEqual(st, 200, op)
        self.assertFalse(op['done'])
        self.assertRegex(op['name'], r'^projects/p/regions/us-central1/operations/[0-9a-f-]+$')
        md = op['metadata']
        self.assertEqual(md['@type'], 'type.googleapis.com/google.cloud.dataproc.v1.ClusterOperationMetadata')
        self.assertEqual((md['clusterName'], md['operationType']), ('etl-20260101', 'CREATE'))
        uuid_ = md['clusterUuid']
        # same requestId -> same operation; other/no requestId -> 409
        st, op2 = self.create(rid='req-1')
        self.assertEqual((st, op2['name']), (200, op['name']))
        st, js = self.create(rid='req-2')
        self.assertEqual((st, js['error']['status']), (409, 'ALREADY_EXISTS'))
        self.assertEqual(self.create()[0], 409)
        st, js = self.create(rid='x' * 41)
        self.assertEqual((st, js['error']['status']), (400, 'INVALID_ARGUMENT'))
        st, c = api('GET', DP + '/clusters/etl-20260101')
        self.assertEqual((st, c['status']['state'], c['clusterUuid']), (200, 'CREATING', uuid_))
        # a job cannot run on a cluster that is not RUNNING yet
        st, js = api('POST', DP + '/jobs:submit', {'job': {'placement': {'clusterName': 'etl-20260101'},
                                                           'hiveJob': HIVE}})
        self.assertEqual((st, js['error']['status']), (400, 'FAILED_PRECONDITION'))
        st, _ = ctl('POST', '/_fake/dataproc/advance', {'cluster': 'etl-20260101'})
        self.assertEqual(st, 200)
        st, c = api('GET', DP + '/clusters/etl-20260101')
        self.assertEqual(c['status']['state'], 'RUNNING')
        self.assertEqual(c['statusHistory'][0]['state'], 'CREATING')
        st, op = self.op(op['name'])
        self.assertTrue(op['done'])
        self.assertEqual(op['response']['@type'], 'type.googleapis.com/google.cloud.dataproc.v1.Cluster')
        self.assertEqual(op['response']['status']['state'], 'RUNNING')
        # delete: wrong uuid -> 404, right uuid -> DELETING -> gone
        st, js = api('DELETE', DP + '/clusters/etl-20260101?clusterUuid=00000000-0000-0000-0000-000000000000')
        self.assertEqual((st, js['error']['status']), (404, 'NOT_FOUND'))
        st, dop = api('DELETE', DP + '/clusters/etl-20260101?clusterUuid=%s&requestId=del-1' % uuid_)
        self.assertEqual((st, dop['done'], dop['metadata']['operationType']), (200, False, 'DELETE'))
        self.assertEqual(api('DELETE', DP + '/clusters/etl-20260101?requestId=del-1')[1]['name'], dop['name'])
        self.assertEqual(api('GET', DP + '/clusters/etl-20260101')[1]['status']['state'], 'DELETING')
        ctl('POST', '/_fake/dataproc/advance', {'operation': dop['name']})
        self.assertEqual(api('GET', DP + '/clusters/etl-20260101')[0], 404)
        st, dop = self.op(dop['name'])
        self.assertEqual((dop['done'], dop['response']['@type']), (True, 'type.googleapis.com/google.protobuf.Empty'))
        # the name is reusable after delete
        st, op3 = self.create(rid='req-3')
        self.assertEqual(st, 200)
        self.assertNotEqual(op3['metadata']['clusterUuid'], uuid_)
        self.assertEqual(self.op('projects/p/regions/us-central1/operations/nope')[0], 404)

    def test_create_by_the_clock(self):
        ctl('POST', '/_fake/config', {'dataproc_cluster_seconds': 0.3})
        st, op = self.create()
        self.assertEqual(st, 200)
        done = self.wait_for(lambda: self.op(op['name'])[1]['done'], 3)
        self.assertTrue(done)
        self.assertEqual(api('GET', DP + '/clusters/etl-20260101')[1]['status']['state'], 'RUNNING')

    def test_cluster_validation(self):
        bad = [cluster_body(name='Etl'), cluster_body(name='etl-'), cluster_body(name='e' * 52),
               cluster_body(name='1etl'), cluster_body(virtualClusterConfig={'stagingBucket': 'b'})]
        b = cluster_body()
        del b['config']
        bad.append(b)
        b = cluster_body()
        b['config']['softwareConfig']['properties'] = {'hive:hive.metastore.uris': 'thrift://10.0.0.5:9083'}
        bad.append(b)
        b = cluster_body()
        b['config']['metastoreConfig'] = {'dataprocMetastoreService': 'svc'}
        bad.append(b)
        for body in bad:
            st, js = self.create(body)
            self.assertEqual((st, js['error']['status']), (400, 'INVALID_ARGUMENT'), body)
        # discovery validation: unknown field
        st, js = self.create(cluster_body(bogus=1))
        self.assertEqual(st, 400)
        self.assertIn('Unknown name "bogus"', js['error']['message'])
        # the property alone (no metastoreConfig) is fine
        b = cluster_body(name='ok-1')
        del b['config']['metastoreConfig']
        b['config']['softwareConfig']['properties'] = {'hive:hive.metastore.uris': 'thrift://10.0.0.5:9083'}
        self.assertEqual(self.create(b)[0], 200)

    def running_cluster(self):
        st, op = self.create()
        ctl('POST', '/_fake/dataproc/advance', {'operation': op['name']})

    def test_jobs(self):
        ctl('POST', '/_fake/config', {'dataproc_job_seconds': 0})        # manual
        self.running_cluster()
        req = {'requestId': 'job-req-1',
               'job': {'reference': {'jobId': 'load-20260101-0001'},
                       'placement': {'clusterName': 'etl-20260101'}, 'labels': {'run': '20260101'},
                       'hiveJob': HIVE}}
        st, j = api('POST', DP + '/jobs:submit', req)
        self.assertEqual(st, 200, j)
        self.assertEqual((j['reference']['jobId'], j['status']['state'], j['done']),
                         ('load-20260101-0001', 'PENDING', False))
        self.assertTrue(j['driverOutputResourceUri'].startswith('gs://'))
        self.assertEqual(j['placement']['clusterUuid'], api('GET', DP + '/clusters/etl-20260101')[1]['clusterUuid'])
        self.assertEqual(api('POST', DP + '/jobs:submit', req)[1]['jobUuid'], j['jobUuid'])   # idempotent
        req2 = dict(req, requestId='job-req-2')
        st, js = api('POST', DP + '/jobs:submit', req2)
        self.assertEqual((st, js['error']['status']), (409, 'ALREADY_EXISTS'))
        ctl('POST', '/_fake/dataproc/advance', {'job': 'load-20260101-0001', 'state': 'RUNNING'})
        self.assertEqual(api('GET', DP + '/jobs/load-20260101-0001')[1]['status']['state'], 'RUNNING')
        ctl('POST', '/_fake/dataproc/advance', {'job': 'load-20260101-0001', 'state': 'DONE'})
        st, j = api('GET', DP + '/jobs/load-20260101-0001')
        self.assertEqual((j['status']['state'], j['done']), ('DONE', True))
        self.assertEqual([h['state'] for h in j['statusHistory']], ['PENDING', 'RUNNING'])
        # ERROR path with details
        st, j = api('POST', DP + '/jobs:submit', {'job': {'placement': {'clusterName': 'etl-20260101'},
                                                          'pysparkJob': {'mainPythonFileUri': 'gs://b/x.py'}}})
        self.assertEqual(st, 200)
        jid = j['reference']['jobId']
        ctl('POST', '/_fake/dataproc/advance', {'job': jid, 'state': 'ERROR', 'details': 'Teradata login failed'})
        j = api('GET', DP + '/jobs/' + jid)[1]
        self.assertEqual((j['status']['state'], j['status']['details'], j['done']),
                         ('ERROR', 'Teradata login failed', True))
        # exactly one job type; requestId syntax; unknown cluster / job
        st, js = api('POST', DP + '/jobs:submit', {'job': {'placement': {'clusterName': 'etl-20260101'},
                                                           'hiveJob': HIVE, 'pigJob': {}}})
        self.assertEqual(st, 400)
        st, js = api('POST', DP + '/jobs:submit', {'job': {'placement': {'clusterName': 'etl-20260101'}}})
        self.assertEqual(st, 400)
        st, js = api('POST', DP + '/jobs:submit', {'requestId': 'bad id!', 'job': {
            'placement': {'clusterName': 'etl-20260101'}, 'hiveJob': HIVE}})
        self.assertEqual(st, 400)
        st, js = api('POST', DP + '/jobs:submit', {'job': {'placement': {'clusterName': 'nope'}, 'hiveJob': HIVE}})
        self.assertEqual(st, 404)
        self.assertEqual(api('GET', DP + '/jobs/nope')[0], 404)
        st, _, js, _ = F.api('GET', DP + '/jobs/' + jid, headers={'Authorization': ''})
        self.assertEqual((st, js['error']['status']), (401, 'UNAUTHENTICATED'))

    def test_jobs_by_the_clock(self):
        ctl('POST', '/_fake/config', {'dataproc_job_seconds': 0.4})
        self.running_cluster()
        st, j = api('POST', DP + '/jobs:submit', {'job': {'placement': {'clusterName': 'etl-20260101'},
                                                          'hiveJob': HIVE}})
        jid = j['reference']['jobId']
        self.assertTrue(self.wait_for(lambda: api('GET', DP + '/jobs/' + jid)[1]['done'], 3))
        self.assertEqual(api('GET', DP + '/jobs/' + jid)[1]['status']['state'], 'DONE')

    def workflow(self, rid=None):
        body = {'id': 'replicate', 'placement': {'managedCluster': {
                    'clusterName': 'rr', 'config': cluster_body()['config']}},
                'jobs': [{'stepId': 'copy-1', 'hiveJob': HIVE},
                         {'stepId': 'copy-2', 'prerequisiteStepIds': ['copy-1'],
                          'pysparkJob': {'mainPythonFileUri': 'gs://b/x.py'}}]}
        return api('POST', DP + '/workflowTemplates:instantiateInline' + ('?requestId=' + rid if rid else ''), body)

    def test_instantiate_inline(self):
        ctl('POST', '/_fake/config', {'dataproc_cluster_seconds': 0.2, 'dataproc_job_seconds': 0.2})
        st, op = self.workflow('wf-1')
        self.assertEqual(st, 200, op)
        self.assertFalse(op['done'])
        md = op['metadata']
        self.assertEqual(md['@type'], 'type.googleapis.com/google.cloud.dataproc.v1.WorkflowMetadata')
        self.assertEqual([n['stepId'] for n in md['graph']['nodes']], ['copy-1', 'copy-2'])
        self.assertTrue(md['clusterName'].startswith('rr-'))
        self.assertEqual(self.workflow('wf-1')[1]['name'], op['name'])
        done = self.wait_for(lambda: self.op(op['name'])[1]['done'], 5)
        self.assertTrue(done)
        st, op = self.op(op['name'])
        self.assertNotIn('error', op)
        self.assertEqual([n['state'] for n in op['metadata']['graph']['nodes']], ['COMPLETED', 'COMPLETED'])
        self.assertEqual(op['metadata']['state'], 'DONE')
        self.assertTrue(op['metadata']['deleteCluster']['done'])
        self.assertEqual(api('GET', DP + '/clusters/' + op['metadata']['clusterName'])[0], 404)

    def test_instantiate_inline_request_id_only_while_running(self):
        # the discovery document: the tag prevents *concurrent* instances; a
        # repeat after the first ended starts a second workflow, whereas
        # clusters.create's requestId keeps returning the first operation
        ctl('POST', '/_fake/config', {'dataproc_cluster_seconds': 0.1, 'dataproc_job_seconds': 0.1})
        st, op = self.workflow('wf-once')
        self.assertEqual(st, 200, op)
        self.assertEqual(self.workflow('wf-once')[1]['name'], op['name'])
        self.assertTrue(self.wait_for(lambda: self.op(op['name'])[1]['done'], 5))
        st, op2 = self.workflow('wf-once')
        self.assertEqual(st, 200, op2)
        self.assertNotEqual(op2['name'], op['name'])

    def test_instantiate_inline_job_error(self):
        ctl('POST', '/_fake/config', {'dataproc_cluster_seconds': 0, 'dataproc_job_seconds': 0})
        st, op = self.workflow()
        ctl('POST', '/_fake/dataproc/advance', {'cluster': op['metadata']['clusterName']})
        st, op = self.op(op['name'])
        node = op['metadata']['graph']['nodes'][0]
        self.assertEqual(node['state'], 'RUNNING')
        ctl('POST', '/_fake/dataproc/advance', {'job': node['jobId'], 'state': 'ERROR', 'details': 'boom'})
        st, op = self.op(op['name'])
        self.assertFalse(op['done'])                      # the managed cluster is being deleted
        ctl('POST', '/_fake/dataproc/advance', {'cluster': op['metadata']['clusterName']})
        st, op = self.op(op['name'])
        self.assertTrue(op['done'])
        self.assertIn('boom', op['error']['message'])
        self.assertEqual([n['state'] for n in op['metadata']['graph']['nodes']], ['FAILED', 'BLOCKED'])
        # validation
        st, js = api('POST', DP + '/workflowTemplates:instantiateInline',
                     {'placement': {'managedCluster': {'clusterName': 'rr', 'config': {}}},
                      'jobs': [{'stepId': 'a1', 'hiveJob': HIVE}]})
        self.assertEqual(st, 400)                          # stepId too short
        st, js = api('POST', DP + '/workflowTemplates:instantiateInline',
                     {'placement': {'managedCluster': {'clusterName': 'rr', 'config': {}}},
                      'jobs': [{'stepId': 'abc', 'hiveJob': HIVE, 'sparkJob': {}}]})
        self.assertEqual(st, 400)
        state = ctl('GET', '/_fake/dataproc/state')[1]
        self.assertEqual(len(state['operations']), 1)

    def test_template_labels_reach_cluster_and_jobs(self):
        ctl('POST', '/_fake/config', {'dataproc_cluster_seconds': 0.1, 'dataproc_job_seconds': 0.1})
        body = {'labels': {'syncbridge-run': 'abc-0'}, 'placement': {'managedCluster': {
                    'clusterName': 'rr', 'config': cluster_body()['config'], 'labels': {'team': 'edw'}}},
                'jobs': [{'stepId': 'copy-1', 'hiveJob': HIVE}]}
        st, op = api('POST', DP + '/workflowTemplates:instantiateInline', body)
        self.assertEqual(st, 200, op)
        q = '?filter=labels.syncbridge-run%20%3D%20abc-0'
        st, cl = api('GET', DP + '/clusters' + q)
        self.assertEqual([c['clusterName'] for c in cl['clusters']], [op['metadata']['clusterName']])
        self.assertEqual(cl['clusters'][0]['labels']['team'], 'edw')
        self.assertTrue(self.wait_for(lambda: self.op(op['name'])[1]['done'], 5))
        st, jl = api('GET', DP + '/jobs' + q)
        self.assertEqual(len(jl['jobs']), 1)
        self.assertEqual(jl['jobs'][0]['labels']['syncbridge-run'], 'abc-0')
        self.assertEqual(api('GET', DP + '/clusters' + q)[1], {})
        body['labels'] = {'Bad': 'x'}
        self.assertEqual(api('POST', DP + '/workflowTemplates:instantiateInline', body)[0], 400)

    def test_cancel_workflow_deletes_cluster(self):
        ctl('POST', '/_fake/config', {'dataproc_cluster_seconds': 0, 'dataproc_job_seconds': 0})
        st, op = self.workflow()
        ctl('POST', '/_fake/dataproc/advance', {'cluster': op['metadata']['clusterName']})
        st, op = self.op(op['name'])
        self.assertEqual(op['metadata']['graph']['nodes'][0]['state'], 'RUNNING')
        st, js = api('POST', '/v1/' + op['name'] + ':cancel', {})
        self.assertEqual((st, js), (200, {}))
        ctl('POST', '/_fake/dataproc/advance', {'cluster': op['metadata']['clusterName']})
        st, op = self.op(op['name'])
        self.assertTrue(op['done'])
        self.assertEqual(op['error']['code'], 1)
        self.assertEqual([n['state'] for n in op['metadata']['graph']['nodes']], ['FAILED', 'BLOCKED'])
        self.assertEqual(ctl('GET', '/_fake/dataproc/state')[1]['clusters'], [])
        jid = op['metadata']['graph']['nodes'][0]['jobId']
        self.assertEqual(api('GET', DP + '/jobs/' + jid)[1]['status']['state'], 'CANCELLED')
        self.assertEqual(api('POST', '/v1/' + op['name'] + ':cancel', {}), (200, {}))   # done: no change
        self.assertEqual(api('POST', DP + '/operations/nope:cancel', {})[0], 404)

    def test_workflow_fails_when_its_cluster_is_deleted(self):
        ctl('POST', '/_fake/config', {'dataproc_cluster_seconds': 0, 'dataproc_job_seconds': 0})
        st, op = self.workflow()
        name = op['metadata']['clusterName']
        ctl('POST', '/_fake/dataproc/advance', {'cluster': name})
        self.assertEqual(api('DELETE', DP + '/clusters/' + name)[0], 200)
        ctl('POST', '/_fake/dataproc/advance', {'cluster': name})
        st, op = self.op(op['name'])
        self.assertTrue(op['done'])
        self.assertEqual(op['error']['code'], 9)
        self.assertIn('was deleted', op['error']['message'])
        self.assertEqual([n['state'] for n in op['metadata']['graph']['nodes']], ['FAILED', 'BLOCKED'])


if __name__ == '__main__':
    unittest.main()
