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


def setUpModule():
    global F
    F = tg.F = tg.Fake()


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
                                      'dataproc_cluster_seconds': 2, 'airflow_auto_seconds': 0,
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


if __name__ == '__main__':
    unittest.main()
