#!/usr/bin/env python3
"""Tests of the gfake fixture itself (stdlib unittest).

Starts tests/fake/gfake.py as a subprocess on port 0, signs JWTs with the
openssl command line, talks HTTP with http.client.  Files are located
relative to this file, so it works from a VPATH build directory too.
"""
import base64
import datetime
import hashlib
import http.client
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import unittest
import urllib.parse

HERE = os.path.dirname(os.path.abspath(__file__))
GFAKE = os.path.join(HERE, 'gfake.py')
sys.path.insert(0, HERE)
from gfake import crc32c as crcmod  # noqa: E402

STATIC = {'Authorization': 'Bearer fake-static-token'}


def b64url(b):
    return base64.urlsafe_b64encode(b).rstrip(b'=').decode()


class Fake:
    def __init__(self):
        self.dir = tempfile.mkdtemp(prefix='gfake-test-')
        self.key = os.path.join(self.dir, 'sa.pem')
        self.pub = os.path.join(self.dir, 'sa.pub')
        self.other = os.path.join(self.dir, 'other.pem')
        for k in (self.key, self.other):
            subprocess.run(['openssl', 'genpkey', '-algorithm', 'RSA', '-pkeyopt', 'rsa_keygen_bits:2048',
                            '-out', k], check=True, capture_output=True)
        subprocess.run(['openssl', 'pkey', '-in', self.key, '-pubout', '-out', self.pub], check=True,
                       capture_output=True)
        port_file = os.path.join(self.dir, 'port')
        self.proc = subprocess.Popen([sys.executable, GFAKE, '--port', '0', '--port-file', port_file,
                                      '--sa-public-key', self.pub, '--quiet'])
        deadline = time.time() + 15
        while not os.path.exists(port_file):
            if time.time() > deadline or self.proc.poll() is not None:
                raise RuntimeError('gfake did not start')
            time.sleep(0.05)
        with open(port_file) as f:
            self.port = int(f.read())

    def stop(self):
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        shutil.rmtree(self.dir, True)

    def sign_jwt(self, claims, key=None):
        header = b64url(json.dumps({'alg': 'RS256', 'typ': 'JWT'}).encode())
        body = b64url(json.dumps(claims).encode())
        inp = (header + '.' + body).encode()
        sig = subprocess.run(['openssl', 'dgst', '-sha256', '-sign', key or self.key], input=inp,
                             check=True, capture_output=True).stdout
        return header + '.' + body + '.' + b64url(sig)

    def request(self, method, path, body=None, headers=None, conn=None):
        c = conn or http.client.HTTPConnection('127.0.0.1', self.port, timeout=30)
        h = dict(headers or {})
        if isinstance(body, (dict, list)):
            body = json.dumps(body).encode()
            h.setdefault('Content-Type', 'application/json')
        try:
            c.request(method, path, body=body, headers=h)
            r = c.getresponse()
            data = r.read()
        finally:
            if conn is None:
                c.close()
        return r.status, dict((k.lower(), v) for k, v in r.getheaders()), data

    def api(self, method, path, body=None, headers=None):
        h = dict(STATIC)
        h.update(headers or {})
        st, hd, data = self.request(method, path, body, h)
        try:
            js = json.loads(data) if data else None
        except ValueError:
            js = None
        return st, hd, js, data


F = None


def setUpModule():
    global F
    F = Fake()


def tearDownModule():
    F.stop()


class Base(unittest.TestCase):
    def setUp(self):
        F.request('POST', '/_fake/reset', {})
        F.request('POST', '/_fake/config', {'require_auth': True, 'token_expires_in': 3599})


class TestBuildApp(unittest.TestCase):
    """gfake.build_app wires every service from one list (issue 12)."""

    def test_a_service_that_fails_to_import_is_loud(self):
        import gfake
        saved = gfake.SERVICES
        gfake.SERVICES = saved + ('no_such_service',)
        try:
            with self.assertRaises(ImportError):
                gfake.build_app(quiet=True)
        finally:
            gfake.SERVICES = saved

    def test_each_service_declares_its_config_keys(self):
        import gfake
        app = gfake.build_app(quiet=True, stream_buffer_seconds=5)
        owners = {k: v[1] for k, v in app.config_types.items()}
        self.assertEqual(owners['stream_buffer_seconds'], 'bigquery_http')
        self.assertEqual(owners['require_auth'], 'auth')
        self.assertEqual(owners['pubsub_pull_wait_seconds'], 'pubsub')
        self.assertEqual(app.config['stream_buffer_seconds'], 5)
        self.assertEqual(set(app.config), set(app.config_types))
        with self.assertRaises(ValueError):
            app.declare_config('again', {'require_auth': (bool, False)})
        paths = [r.regex.pattern for r in app.routes]
        for p in ('/_fake/pubsub/messages', '/_fake/storage/buckets', '/_fake/webhdfs/seed',
                  '/_fake/bigquery/table', '/_fake/dataproc/state', '/_fake/composer/environments'):
            self.assertIn(p + r'\Z', paths)


class TestCrc(Base):
    def test_vectors(self):
        # the published CRC-32C check values
        self.assertEqual(crcmod.b64(crcmod.crc32c(b'')), 'AAAAAA==')
        self.assertEqual(crcmod.crc32c(b'123456789'), 0xE3069283)
        self.assertEqual(crcmod.b64(crcmod.crc32c(b'123456789')), '4waSgw==')
        self.assertEqual(crcmod.b64(crcmod.crc32c(b'hello world')), 'yZRlqg==')

    def test_fast_matches_table(self):
        for n in (0, 1, 511, 512, 513, 4096, 262144 + 7, 600001):
            d = os.urandom(n)
            self.assertEqual(crcmod.crc32c(d), crcmod.crc32c_table(d), n)
            self.assertEqual(crcmod.crc32c(d[n // 3:], crcmod.crc32c(d[:n // 3])), crcmod.crc32c_table(d))
            # the big-integer version too, when the C module stands in for it
            self.assertEqual(crcmod.crc32c_bigint(d), crcmod.crc32c_table(d), n)

    def test_combine(self):
        for la, lb in ((0, 0), (7, 0), (0, 9), (1, 1), (600, 1000), (100000, 77777)):
            a, b = os.urandom(la), os.urandom(lb)
            self.assertEqual(crcmod.crc32c_combine(crcmod.crc32c(a), crcmod.crc32c(b), lb),
                             crcmod.crc32c_table(a + b), (la, lb))


class TestToken(Base):
    def claims(self, **kw):
        now = int(time.time())
        c = {'iss': 'sa@p.iam.gserviceaccount.com', 'scope': 'https://www.googleapis.com/auth/cloud-platform',
             'aud': 'http://127.0.0.1:%d/token' % F.port, 'iat': now, 'exp': now + 3600}
        c.update(kw)
        return c

    def exchange(self, jwt):
        body = urllib.parse.urlencode({'grant_type': 'urn:ietf:params:oauth:grant-type:jwt-bearer',
                                       'assertion': jwt}).encode()
        st, _, data = F.request('POST', '/token', body, {'Content-Type': 'application/x-www-form-urlencoded'})
        return st, json.loads(data)

    def test_success_and_use(self):
        st, js = self.exchange(F.sign_jwt(self.claims()))
        self.assertEqual(st, 200, js)
        self.assertTrue(js['access_token'].startswith('fake-'))
        self.assertEqual(js['expires_in'], 3599)
        self.assertEqual(js['token_type'], 'Bearer')
        st, _, _ = F.request('PUT', '/v1/projects/p/topics/t', {}, {'Authorization': 'Bearer ' + js['access_token']})
        self.assertEqual(st, 200)
        st, _, data = F.request('GET', '/v1/projects/p/topics/t', None, {'Authorization': 'Bearer fake-nope'})
        self.assertEqual(st, 401)
        self.assertEqual(json.loads(data)['error']['status'], 'UNAUTHENTICATED')
        st, _, _ = F.request('GET', '/v1/projects/p/topics/t')
        self.assertEqual(st, 401)

    def test_expires_in_config_and_auth_off(self):
        F.request('POST', '/_fake/config', {'token_expires_in': 1})
        st, js = self.exchange(F.sign_jwt(self.claims()))
        self.assertEqual(js['expires_in'], 1)
        time.sleep(1.2)
        st, _, _ = F.request('GET', '/v1/projects/p/topics', None, {'Authorization': 'Bearer ' + js['access_token']})
        self.assertEqual(st, 401)
        F.request('POST', '/_fake/config', {'require_auth': False})
        st, _, _ = F.request('GET', '/v1/projects/p/topics')
        self.assertEqual(st, 200)

    def test_bad_signature(self):
        st, js = self.exchange(F.sign_jwt(self.claims(), key=F.other))
        self.assertEqual((st, js['error']), (400, 'invalid_grant'))
        self.assertIn('Signature', js['error_description'])
        # tampered claims with a valid-looking signature
        jwt = F.sign_jwt(self.claims()).split('.')
        jwt[1] = b64url(json.dumps(self.claims(iss='evil')).encode())
        st, js = self.exchange('.'.join(jwt))
        self.assertEqual((st, js['error']), (400, 'invalid_grant'))

    def test_wrong_aud(self):
        st, js = self.exchange(F.sign_jwt(self.claims(aud='https://oauth2.googleapis.com/token')))
        self.assertEqual((st, js['error']), (400, 'invalid_grant'))
        self.assertIn('audience', js['error_description'])

    def test_expired_and_too_long(self):
        now = int(time.time())
        st, js = self.exchange(F.sign_jwt(self.claims(iat=now - 4000, exp=now - 400)))
        self.assertEqual((st, js['error']), (400, 'invalid_grant'))
        st, js = self.exchange(F.sign_jwt(self.claims(iat=now, exp=now + 7200)))
        self.assertEqual((st, js['error']), (400, 'invalid_grant'))

    def test_missing_claims_and_grant(self):
        c = self.claims()
        del c['scope']
        st, js = self.exchange(F.sign_jwt(c))
        self.assertEqual(st, 400)
        st, _, data = F.request('POST', '/token', b'grant_type=password',
                                {'Content-Type': 'application/x-www-form-urlencoded'})
        self.assertEqual((st, json.loads(data)['error']), (400, 'unsupported_grant_type'))


class TestMetadata(Base):
    def test_header_rule(self):
        p = '/computeMetadata/v1/instance/service-accounts/default/token'
        st, _, _ = F.request('GET', p)
        self.assertEqual(st, 403)
        st, hd, data = F.request('GET', p, None, {'Metadata-Flavor': 'Google'})
        self.assertEqual(st, 200)
        self.assertEqual(hd['metadata-flavor'], 'Google')
        tok = json.loads(data)
        self.assertEqual(tok['token_type'], 'Bearer')
        st, _, data2 = F.request('GET', p, None, {'Metadata-Flavor': 'Google'})
        self.assertEqual(json.loads(data2)['access_token'], tok['access_token'])   # cached
        st, _, _ = F.request('GET', '/v1/projects/p/topics', None, {'Authorization': 'Bearer ' + tok['access_token']})
        self.assertEqual(st, 200)
        st, _, data = F.request('GET', '/computeMetadata/v1/project/project-id', None, {'Metadata-Flavor': 'Google'})
        self.assertEqual((st, data), (200, b'fake-project'))
        st, _, data = F.request('GET', '/computeMetadata/v1/instance/service-accounts/default/email', None,
                                {'Metadata-Flavor': 'Google'})
        self.assertIn(b'@', data)


DLQ = {'deadLetterPolicy': {'deadLetterTopic': 'projects/p/topics/dlq', 'maxDeliveryAttempts': 5}}


class TestPubSub(Base):
    def setUp(self):
        super().setUp()
        self.assertEqual(F.api('PUT', '/v1/projects/p/topics/t', {})[0], 200)
        # Pulls here expect an empty answer at once; a real pull without
        # returnImmediately would wait (test_pull_waits shows it).
        F.request('POST', '/_fake/config', {'pubsub_pull_wait_seconds': 0})

    def pull(self, sub='s', **kw):
        body = {'maxMessages': 10}
        body.update(kw)
        st, _, js, _ = F.api('POST', '/v1/projects/p/subscriptions/%s:pull' % sub, body)
        self.assertEqual(st, 200, js)
        return js.get('receivedMessages', [])

    def test_delivery_attempt_only_with_a_dead_letter_policy(self):
        F.api('PUT', '/v1/projects/p/subscriptions/plain', {'topic': 'projects/p/topics/t'})
        F.api('PUT', '/v1/projects/p/subscriptions/dl', dict(DLQ, topic='projects/p/topics/t'))
        F.api('POST', '/v1/projects/p/topics/t:publish', {'messages': [{'data': 'eA=='}]})
        self.assertNotIn('deliveryAttempt', self.pull('plain')[0])
        self.assertEqual(self.pull('dl')[0]['deliveryAttempt'], 1)

    def test_ordering_key_nack_redelivers_the_later_messages(self):
        F.api('PUT', '/v1/projects/p/subscriptions/o', {'topic': 'projects/p/topics/t', 'enableMessageOrdering': True})
        for d in (b'1', b'2', b'3'):
            F.api('POST', '/v1/projects/p/topics/t:publish',
                  {'messages': [{'data': base64.b64encode(d).decode(), 'orderingKey': 'k'}]})
        F.api('POST', '/v1/projects/p/topics/t:publish', {'messages': [{'data': 'eA==', 'orderingKey': 'other'}]})
        got = self.pull('o')
        self.assertEqual([base64.b64decode(m['message']['data']) for m in got], [b'1', b'2', b'3', b'x'])
        F.api('POST', '/v1/projects/p/subscriptions/o:acknowledge', {'ackIds': [got[3]['ackId']]})
        F.api('POST', '/v1/projects/p/subscriptions/o:modifyAckDeadline',
              {'ackIds': [got[0]['ackId']], 'ackDeadlineSeconds': 0})
        again = self.pull('o')
        self.assertEqual([base64.b64decode(m['message']['data']) for m in again], [b'1', b'2', b'3'])
        # the old ack ids of the redelivered messages are stale now
        self.assertEqual(len({m['ackId'] for m in again} & {m['ackId'] for m in got}), 0)

    def test_pull_waits_and_answers_a_partial_batch(self):
        F.api('PUT', '/v1/projects/p/subscriptions/w', {'topic': 'projects/p/topics/t'})
        F.request('POST', '/_fake/config', {'pubsub_pull_wait_seconds': 5})
        import threading
        t = threading.Timer(0.4, lambda: F.api('POST', '/v1/projects/p/topics/t:publish',
                                                  {'messages': [{'data': 'eA=='}]}))
        t0 = time.time()
        t.start()
        got = self.pull('w', maxMessages=100)
        t.join()
        self.assertGreaterEqual(time.time() - t0, 0.35)
        self.assertEqual(len(got), 1)
        t0 = time.time()
        self.assertEqual(self.pull('w', returnImmediately=True), [])
        self.assertLess(time.time() - t0, 1)
        F.request('POST', '/_fake/config', {'pubsub_pull_wait_seconds': 0.3})
        t0 = time.time()
        self.assertEqual(self.pull('w'), [])
        self.assertGreaterEqual(time.time() - t0, 0.25)

    def test_backlog_counts_deliveries_and_acks(self):
        F.api('PUT', '/v1/projects/p/subscriptions/b', {'topic': 'projects/p/topics/t'})
        F.api('POST', '/v1/projects/p/topics/t:publish', {'messages': [{'data': 'eA=='}, {'data': 'eQ=='}]})
        got = self.pull('b')
        F.api('POST', '/v1/projects/p/subscriptions/b:acknowledge', {'ackIds': [got[0]['ackId']]})
        F.api('POST', '/v1/projects/p/subscriptions/b:modifyAckDeadline',
              {'ackIds': [got[1]['ackId']], 'ackDeadlineSeconds': 0})
        st, _, js = F.request('GET', '/_fake/pubsub/backlog?subscription=projects/p/subscriptions/b')
        self.assertEqual(json.loads(js), {'unacked': 1, 'outstanding': 0, 'deliveries': 2, 'acked': 1})
        self.pull('b')
        st, _, js = F.request('GET', '/_fake/pubsub/backlog?subscription=projects/p/subscriptions/b')
        self.assertEqual(json.loads(js), {'unacked': 1, 'outstanding': 1, 'deliveries': 3, 'acked': 1})

    def test_topic_subscriptions_list(self):
        F.api('PUT', '/v1/projects/p/topics/t2', {})
        for n, t in (('b', 't'), ('a', 't'), ('c', 't2')):
            F.api('PUT', '/v1/projects/p/subscriptions/' + n, {'topic': 'projects/p/topics/' + t})
        st, _, js, _ = F.api('GET', '/v1/projects/p/topics/t/subscriptions')
        self.assertEqual((st, js), (200, {'subscriptions': ['projects/p/subscriptions/a', 'projects/p/subscriptions/b']}))
        self.assertEqual(F.api('GET', '/v1/projects/p/topics/nope/subscriptions')[0], 404)

    def test_publish_time_is_the_acceptance_time(self):
        # benchmarks (tests/bench/bench_onprem.py) read publishTime from
        # /_fake/pubsub/messages as the time the publish was acknowledged:
        # RFC 3339 UTC with microseconds, within the request, one per request
        t0 = time.time()
        st, _, js, _ = F.api('POST', '/v1/projects/p/topics/t:publish', {'messages': [
            {'data': 'YQ=='}, {'data': 'Yg=='}]})
        t1 = time.time()
        self.assertEqual(st, 200, js)
        st, _, msgs, _ = F.api('GET', '/_fake/pubsub/messages?topic=projects/p/topics/t')
        times = [m['publishTime'] for m in msgs]
        self.assertRegex(times[0], r'^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z$')
        self.assertEqual(times[0], times[1])
        dt = datetime.datetime.strptime(times[0], '%Y-%m-%dT%H:%M:%S.%fZ').replace(tzinfo=datetime.timezone.utc)
        self.assertLessEqual(t0 - 1e-6, dt.timestamp())
        self.assertLessEqual(dt.timestamp(), t1 + 1e-6)

    def test_publish_pull_ack_redeliver(self):
        # published before the subscription exists: never delivered to it
        F.api('POST', '/v1/projects/p/topics/t:publish', {'messages': [{'data': 'ZWFybHk='}]})
        st, _, js, _ = F.api('PUT', '/v1/projects/p/subscriptions/s',
                             dict(DLQ, topic='projects/p/topics/t', ackDeadlineSeconds=10))
        self.assertEqual(st, 200, js)
        st, _, js, _ = F.api('PUT', '/v1/projects/p/subscriptions/s', {'topic': 'projects/p/topics/t'})
        self.assertEqual((st, js['error']['status']), (409, 'ALREADY_EXISTS'))
        st, _, js, _ = F.api('POST', '/v1/projects/p/topics/t:publish', {'messages': [
            {'data': base64.b64encode(b'one').decode(), 'attributes': {'k': 'v'}},
            {'attributes': {'only': 'attrs'}}]})
        self.assertEqual(st, 200, js)
        ids = js['messageIds']
        self.assertEqual(len(ids), 2)
        self.assertTrue(all(i.isdigit() for i in ids))
        st, _, js, _ = F.api('POST', '/v1/projects/p/subscriptions/s:pull', {'maxMessages': 10})
        got = js['receivedMessages']
        self.assertEqual([m['message']['messageId'] for m in got], ids)
        self.assertEqual(base64.b64decode(got[0]['message']['data']), b'one')
        self.assertEqual(got[0]['deliveryAttempt'], 1)
        self.assertIn('publishTime', got[0]['message'])
        # nothing available while outstanding: empty pull is {}
        st, _, js, raw = F.api('POST', '/v1/projects/p/subscriptions/s:pull', {'maxMessages': 10})
        self.assertEqual(js, {})
        # ack the first, shorten the second to 1 s and wait: it comes back
        F.api('POST', '/v1/projects/p/subscriptions/s:acknowledge', {'ackIds': [got[0]['ackId']]})
        F.api('POST', '/v1/projects/p/subscriptions/s:modifyAckDeadline',
              {'ackIds': [got[1]['ackId']], 'ackDeadlineSeconds': 1})
        time.sleep(1.2)
        st, _, js, _ = F.api('POST', '/v1/projects/p/subscriptions/s:pull', {'maxMessages': 10})
        again = js['receivedMessages']
        self.assertEqual(len(again), 1)
        self.assertEqual(again[0]['message']['messageId'], ids[1])
        self.assertEqual(again[0]['deliveryAttempt'], 2)
        self.assertNotEqual(again[0]['ackId'], got[1]['ackId'])
        # nack (deadline 0) → immediately redeliverable
        F.api('POST', '/v1/projects/p/subscriptions/s:modifyAckDeadline',
              {'ackIds': [again[0]['ackId']], 'ackDeadlineSeconds': 0})
        st, _, js, _ = F.api('POST', '/v1/projects/p/subscriptions/s:pull', {'maxMessages': 10})
        self.assertEqual(js['receivedMessages'][0]['deliveryAttempt'], 3)
        F.api('POST', '/v1/projects/p/subscriptions/s:acknowledge', {'ackIds': [js['receivedMessages'][0]['ackId']]})
        st, _, js, _ = F.api('POST', '/v1/projects/p/subscriptions/s:pull', {'maxMessages': 10})
        self.assertEqual(js, {})
        # control API sees everything, including the early message
        st, _, msgs = F.request('GET', '/_fake/pubsub/messages?topic=projects/p/topics/t')
        msgs = json.loads(msgs)
        self.assertEqual(len(msgs), 3)
        self.assertEqual(msgs[1]['attributes'], {'k': 'v'})

    def test_redelivery_after_subscription_deadline(self):
        F.api('PUT', '/v1/projects/p/subscriptions/s', dict(DLQ, topic='projects/p/topics/t', ackDeadlineSeconds=10))
        F.api('POST', '/v1/projects/p/topics/t:publish', {'messages': [{'data': 'eA=='}]})
        js = F.api('POST', '/v1/projects/p/subscriptions/s:pull', {'maxMessages': 1})[2]
        F.api('POST', '/v1/projects/p/subscriptions/s:modifyAckDeadline',
              {'ackIds': [js['receivedMessages'][0]['ackId']], 'ackDeadlineSeconds': 1})
        self.assertEqual(F.api('POST', '/v1/projects/p/subscriptions/s:pull', {'maxMessages': 1})[2], {})
        time.sleep(1.1)
        js = F.api('POST', '/v1/projects/p/subscriptions/s:pull', {'maxMessages': 1})[2]
        self.assertEqual(js['receivedMessages'][0]['deliveryAttempt'], 2)

    def test_publish_rules(self):
        def pub(body):
            return F.api('POST', '/v1/projects/p/topics/t:publish', body)
        st, _, js, _ = pub({'messages': [{'data': 'aGk=', 'fooBar': 1}]})
        self.assertEqual(st, 400)
        self.assertEqual(js['error']['status'], 'INVALID_ARGUMENT')
        self.assertEqual(js['error']['message'],
                         'Invalid JSON payload received. Unknown name "fooBar" at \'messages[0]\': Cannot find field.')
        self.assertEqual(pub({'messages': [{'data': 'not base64!'}]})[0], 400)
        self.assertEqual(pub({'messages': [{'data': 5}]})[0], 400)
        self.assertEqual(pub({'messages': {'data': 'aGk='}})[0], 400)
        self.assertEqual(pub({'messages': [{}]})[0], 400)
        self.assertEqual(pub({'messages': []})[0], 400)
        st, _, js, _ = pub({'messages': [{'data': 'aGk='}] * 1001})
        self.assertEqual(st, 400)
        self.assertIn('1000', js['error']['message'])
        self.assertEqual(pub({'messages': [{'data': 'aGk=', 'orderingKey': 'a'},
                                           {'data': 'aGk=', 'orderingKey': 'b'}]})[0], 400)
        big = base64.b64encode(b'x' * (8 * 1024 * 1024)).decode()
        self.assertEqual(pub({'messages': [{'data': big}]})[0], 400)
        self.assertEqual(F.api('POST', '/v1/projects/p/topics/nope:publish', {'messages': [{'data': 'aGk='}]})[0], 404)
        st, _, js, _ = F.api('POST', '/v1/projects/p/subscriptions/nope:pull', {'maxMessages': 'x'})
        self.assertEqual(st, 400)
        self.assertIn('TYPE_INT32', js['error']['message'])


class TestFaults(Base):
    def setUp(self):
        super().setUp()
        F.api('PUT', '/v1/projects/p/topics/t', {})

    def fault(self, **kw):
        st, _, data = F.request('POST', '/_fake/faults', kw)
        self.assertEqual(st, 200, data)

    def test_status_with_retry_after_and_count(self):
        self.fault(path_regex=':publish$', method='POST', kind='status', status=503, retry_after=2, count=2)
        body = {'messages': [{'data': 'aGk='}]}
        for _ in range(2):
            st, hd, js, _ = F.api('POST', '/v1/projects/p/topics/t:publish', body)
            self.assertEqual(st, 503)
            self.assertEqual(hd.get('retry-after'), '2')
            self.assertEqual(js['error']['status'], 'UNAVAILABLE')
        self.assertEqual(F.api('POST', '/v1/projects/p/topics/t:publish', body)[0], 200)
        log = json.loads(F.request('GET', '/_fake/requests?path_regex=publish')[2])
        self.assertEqual([e['status'] for e in log], [503, 503, 200])
        self.assertEqual(log[0]['headers']['Authorization'], 'Bearer fake-')

    def test_429_v1_shape_for_storage(self):
        self.fault(path_regex='/storage/', kind='status', status=429, count=1)
        st, _, js, _ = F.api('GET', '/storage/v1/b/bkt/o')
        self.assertEqual(st, 429)
        self.assertEqual(js['error']['errors'][0]['reason'], 'rateLimitExceeded')

    def test_latency(self):
        self.fault(path_regex='/topics/t$', kind='latency', latency_ms=300, count=1)
        t = time.time()
        self.assertEqual(F.api('GET', '/v1/projects/p/topics/t')[0], 200)
        self.assertGreaterEqual(time.time() - t, 0.29)

    def test_reset(self):
        self.fault(path_regex='/topics/t$', kind='reset', count=1)
        with self.assertRaises((ConnectionError, http.client.HTTPException, OSError)):
            F.api('GET', '/v1/projects/p/topics/t')
        self.assertEqual(F.api('GET', '/v1/projects/p/topics/t')[0], 200)

    def test_truncate(self):
        self.fault(path_regex='/topics/t$', kind='truncate', count=1)
        with self.assertRaises((http.client.IncompleteRead, ConnectionError, OSError)):
            F.api('GET', '/v1/projects/p/topics/t')
        self.assertEqual(F.api('GET', '/v1/projects/p/topics/t')[0], 200)

    def test_rate_zero_and_delete(self):
        self.fault(path_regex='.', kind='status', status=500, rate=0.0)
        self.assertEqual(F.api('GET', '/v1/projects/p/topics/t')[0], 200)
        self.fault(path_regex='.', kind='status', status=500)
        self.assertEqual(F.api('GET', '/v1/projects/p/topics/t')[0], 500)
        F.request('DELETE', '/_fake/faults')
        self.assertEqual(F.api('GET', '/v1/projects/p/topics/t')[0], 200)

    def test_keepalive(self):
        c = http.client.HTTPConnection('127.0.0.1', F.port, timeout=10)
        for _ in range(5):
            st, _, _ = F.request('GET', '/v1/projects/p/topics/t', None, STATIC, conn=c)
            self.assertEqual(st, 200)
        c.close()


class TestStorage(Base):
    def setUp(self):
        super().setUp()
        # Buckets exist only once created, as in GCS.
        st, _, js, _ = F.api('POST', '/storage/v1/b?project=p', {'name': 'bkt'})
        self.assertEqual(st, 200, js)

    def upload_media(self, name, data, q=''):
        return F.api('POST', '/upload/storage/v1/b/bkt/o?uploadType=media&name=%s%s'
                     % (urllib.parse.quote(name, safe=''), q), data, {'Content-Type': 'text/plain'})

    def test_media_get_range_hashes(self):
        st, _, js, _ = self.upload_media('dir/hello.txt', b'hello world')
        self.assertEqual(st, 200, js)
        self.assertEqual(js['crc32c'], 'yZRlqg==')
        self.assertEqual(js['md5Hash'], base64.b64encode(hashlib.md5(b'hello world').digest()).decode())
        self.assertEqual(js['size'], '11')
        self.assertIsInstance(js['generation'], str)
        st, _, js2, _ = F.api('GET', '/storage/v1/b/bkt/o/dir%2Fhello.txt')
        self.assertEqual(js2['generation'], js['generation'])
        st, hd, _, raw = F.api('GET', '/storage/v1/b/bkt/o/dir%2Fhello.txt?alt=media')
        self.assertEqual((st, raw), (200, b'hello world'))
        self.assertIn('crc32c=yZRlqg==', hd['x-goog-hash'])
        self.assertIn('md5=XrY7u+Ae7tCTyyK7j1rNww==', hd['x-goog-hash'])
        st, hd, _, raw = F.api('GET', '/storage/v1/b/bkt/o/dir%2Fhello.txt?alt=media', headers={'Range': 'bytes=6-9'})
        self.assertEqual((st, raw, hd['content-range']), (206, b'worl', 'bytes 6-9/11'))
        st, _, _, raw = F.api('GET', '/storage/v1/b/bkt/o/dir%2Fhello.txt?alt=media', headers={'Range': 'bytes=-3'})
        self.assertEqual(raw, b'rld')
        st, _, js, _ = self.upload_media('empty', b'')
        self.assertEqual((js['crc32c'], js['md5Hash']), ('AAAAAA==', '1B2M2Y8AsgTpgAmY7PhCfg=='))
        self.assertEqual(F.api('GET', '/storage/v1/b/bkt/o/nope')[0], 404)

    def test_if_generation_match(self):
        self.assertEqual(self.upload_media('x', b'1', '&ifGenerationMatch=0')[0], 200)
        st, _, js, _ = self.upload_media('x', b'2', '&ifGenerationMatch=0')
        self.assertEqual(st, 412)
        self.assertEqual(js['error']['errors'][0]['reason'], 'conditionNotMet')
        gen = F.api('GET', '/storage/v1/b/bkt/o/x')[2]['generation']
        self.assertEqual(self.upload_media('x', b'3', '&ifGenerationMatch=' + gen)[0], 200)
        self.assertEqual(F.api('DELETE', '/storage/v1/b/bkt/o/x?ifGenerationMatch=' + gen)[0], 412)
        self.assertEqual(F.api('DELETE', '/storage/v1/b/bkt/o/x')[0], 204)

    def multipart(self, meta, data):
        bnd = 'gfake_boundary_42'
        body = (b'--' + bnd.encode() + b'\r\nContent-Type: application/json; charset=UTF-8\r\n\r\n'
                + json.dumps(meta).encode() + b'\r\n--' + bnd.encode()
                + b'\r\nContent-Type: text/csv\r\n\r\n' + data + b'\r\n--' + bnd.encode() + b'--\r\n')
        return F.api('POST', '/upload/storage/v1/b/bkt/o?uploadType=multipart', body,
                     {'Content-Type': 'multipart/related; boundary=' + bnd})

    def test_multipart(self):
        st, _, js, _ = self.multipart({'name': 'm.csv', 'contentType': 'text/csv', 'crc32c': 'yZRlqg==',
                                       'metadata': {'a': 'b'}}, b'hello world')
        self.assertEqual(st, 200, js)
        self.assertEqual((js['name'], js['contentType'], js['metadata']), ('m.csv', 'text/csv', {'a': 'b'}))
        st, _, js, _ = self.multipart({'name': 'm2.csv', 'crc32c': 'AAAAAA=='}, b'hello world')
        self.assertEqual(st, 400)
        self.assertIn('CRC32C', js['error']['message'])
        st, _, js, _ = self.multipart({'name': 'm3.csv', 'md5Hash': '1B2M2Y8AsgTpgAmY7PhCfg=='}, b'x')
        self.assertEqual(st, 400)
        st, _, js, _ = self.multipart({'name': 'm4.csv', 'fooBar': 1}, b'x')
        self.assertEqual(st, 400)
        self.assertIn('Unknown name "fooBar"', js['error']['message'])

    def test_resumable(self):
        data = os.urandom(262144 * 2 + 1000)
        st, hd, _, _ = F.api('POST', '/upload/storage/v1/b/bkt/o?uploadType=resumable',
                             {'name': 'big.bin', 'contentType': 'application/octet-stream'},
                             {'X-Upload-Content-Length': str(len(data))})
        self.assertEqual(st, 200)
        loc = urllib.parse.urlsplit(hd['location'])
        self.assertIn('upload_id=', loc.query)
        sess = loc.path + '?' + loc.query
        # not a multiple of 256 KiB and not last: rejected
        st, _, _, _ = F.api('PUT', sess, data[:1000], {'Content-Range': 'bytes 0-999/%d' % len(data)})
        self.assertEqual(st, 400)
        st, hd, _, _ = F.api('PUT', sess, data[:262144], {'Content-Range': 'bytes 0-262143/*'})
        self.assertEqual(st, 308)
        self.assertEqual(hd['range'], 'bytes=0-262143')
        st, hd, _, _ = F.api('PUT', sess, b'', {'Content-Range': 'bytes */%d' % len(data)})
        self.assertEqual((st, hd['range']), (308, 'bytes=0-262143'))
        # resend overlapping bytes: the server keeps what it has
        st, hd, _, _ = F.api('PUT', sess, data[0:524288], {'Content-Range': 'bytes 0-524287/*'})
        self.assertEqual((st, hd['range']), (308, 'bytes=0-524287'))
        st, _, js, _ = F.api('PUT', sess, data[524288:], {'Content-Range': 'bytes 524288-%d/%d'
                                                              % (len(data) - 1, len(data))})
        self.assertEqual(st, 200, js)
        self.assertEqual(js['size'], str(len(data)))
        self.assertEqual(js['crc32c'], crcmod.b64(crcmod.crc32c_table(data)))
        self.assertEqual(js['md5Hash'], base64.b64encode(hashlib.md5(data).digest()).decode())
        st, _, js2, _ = F.api('PUT', sess, b'', {'Content-Range': 'bytes */%d' % len(data)})
        self.assertEqual((st, js2['generation']), (200, js['generation']))
        self.assertEqual(F.api('GET', '/storage/v1/b/bkt/o/big.bin?alt=media')[3], data)

    def test_resumable_cancel(self):
        st, hd, _, _ = F.api('POST', '/upload/storage/v1/b/bkt/o?uploadType=resumable&name=c.bin', b'')
        loc = urllib.parse.urlsplit(hd['location'])
        sess = loc.path + '?' + loc.query
        self.assertEqual(F.api('DELETE', sess)[0], 499)
        self.assertEqual(F.api('PUT', sess, b'x', {'Content-Range': 'bytes 0-0/1'})[0], 404)

    def test_list_and_compose(self):
        for n in ('a/1', 'a/2', 'b/1', 'c'):
            self.upload_media(n, n.encode())
        js = F.api('GET', '/storage/v1/b/bkt/o?delimiter=/')[2]
        self.assertEqual(js['prefixes'], ['a/', 'b/'])
        self.assertEqual([i['name'] for i in js['items']], ['c'])
        js = F.api('GET', '/storage/v1/b/bkt/o?prefix=a/')[2]
        self.assertEqual([i['name'] for i in js['items']], ['a/1', 'a/2'])
        names, tok = [], ''
        while True:
            js = F.api('GET', '/storage/v1/b/bkt/o?maxResults=3' + ('&pageToken=' + tok if tok else ''))[2]
            names += [i['name'] for i in js.get('items', [])]
            tok = js.get('nextPageToken')
            if not tok:
                break
        self.assertEqual(names, ['a/1', 'a/2', 'b/1', 'c'])
        st, _, js, _ = F.api('POST', '/storage/v1/b/bkt/o/all/compose',
                             {'sourceObjects': [{'name': 'a/1'}, {'name': 'a/2'}, {'name': 'c'}],
                              'destination': {'contentType': 'text/plain'}})
        self.assertEqual(st, 200, js)
        self.assertEqual(js['componentCount'], 3)
        self.assertNotIn('md5Hash', js)
        self.assertEqual(js['crc32c'], crcmod.b64(crcmod.crc32c(b'a/1a/2c')))
        self.assertEqual(F.api('GET', '/storage/v1/b/bkt/o/all?alt=media')[3], b'a/1a/2c')
        st, _, _, _ = F.api('POST', '/storage/v1/b/bkt/o/x/compose', {'sourceObjects': [{'name': 'c'}] * 33})
        self.assertEqual(st, 400)
        st, _, _, _ = F.api('POST', '/storage/v1/b/bkt/o/x/compose', {'sourceObjects': [{'name': 'zz'}]})
        self.assertEqual(st, 404)
        st, _, _, _ = F.api('POST', '/storage/v1/b/bkt/o/all/compose?ifGenerationMatch=0',
                            {'sourceObjects': [{'name': 'c'}]})
        self.assertEqual(st, 412)

    def test_xml_multipart(self):
        st, _, _, raw = F.api('POST', '/xml/bkt/x%2Fpm.bin?uploads', b'')
        self.assertEqual(st, 200)
        uid = raw.decode().split('<UploadId>')[1].split('<')[0]
        parts = [os.urandom(300000), b'tail']
        etags = []
        for i, p in enumerate(parts, 1):
            st, hd, _, _ = F.api('PUT', '/xml/bkt/x%%2Fpm.bin?partNumber=%d&uploadId=%s' % (i, uid), p)
            self.assertEqual(st, 200)
            etags.append(hd['etag'])
        st, _, _, raw = F.api('GET', '/xml/bkt/x%%2Fpm.bin?uploadId=%s' % uid)
        self.assertEqual(raw.count(b'<Part>'), 2)
        body = '<CompleteMultipartUpload>%s</CompleteMultipartUpload>' % ''.join(
            '<Part><PartNumber>%d</PartNumber><ETag>%s</ETag></Part>' % (i, e) for i, e in enumerate(etags, 1))
        st, hd, _, raw = F.api('POST', '/xml/bkt/x%%2Fpm.bin?uploadId=%s' % uid, body.encode())
        self.assertEqual(st, 200, raw)
        self.assertIn(b'CompleteMultipartUploadResult', raw)
        js = F.api('GET', '/storage/v1/b/bkt/o/x%2Fpm.bin')[2]
        self.assertNotIn('md5Hash', js)
        self.assertEqual(F.api('GET', '/storage/v1/b/bkt/o/x%2Fpm.bin?alt=media')[3], b''.join(parts))
        st, _, _, raw = F.api('POST', '/xml/bkt/x%%2Fpm.bin?uploadId=%s' % uid, body.encode())
        self.assertEqual(st, 404)
        self.assertIn(b'NoSuchUpload', raw)
        # the object is made of the parts' bytes: an abort or a part sent
        # after the complete finds no upload and leaves the object whole
        st, _, _, raw = F.api('DELETE', '/xml/bkt/x%%2Fpm.bin?uploadId=%s' % uid)
        self.assertEqual(st, 404)
        self.assertIn(b'NoSuchUpload', raw)
        st, _, _, raw = F.api('PUT', '/xml/bkt/x%%2Fpm.bin?partNumber=1&uploadId=%s' % uid, b'late')
        self.assertEqual(st, 404)
        self.assertEqual(F.api('GET', '/storage/v1/b/bkt/o/x%2Fpm.bin?alt=media')[3], b''.join(parts))
        st, _, _, raw = F.api('POST', '/xml/bkt/o2?uploads', b'')
        uid = raw.decode().split('<UploadId>')[1].split('<')[0]
        self.assertEqual(F.api('DELETE', '/xml/bkt/o2?uploadId=' + uid)[0], 204)


class TestWebHdfs(Base):
    def test_list_status_open(self):
        data = os.urandom(5000)
        F.request('POST', '/_fake/webhdfs/seed', {'path': '/td_backup/s.t/20260101/part-0000',
                                                   'data_b64': base64.b64encode(data).decode()})
        F.request('POST', '/_fake/webhdfs/seed', {'path': '/td_backup/s.t/20260101/part-0001',
                                                   'size': 200000, 'seed': 7})
        st, _, raw = F.request('GET', '/webhdfs/v1/td_backup/s.t/20260101?op=LISTSTATUS')
        fs = json.loads(raw)['FileStatuses']['FileStatus']
        self.assertEqual([(f['pathSuffix'], f['length'], f['type']) for f in fs],
                         [('part-0000', 5000, 'FILE'), ('part-0001', 200000, 'FILE')])
        st, _, raw = F.request('GET', '/webhdfs/v1/td_backup?op=GETFILESTATUS')
        self.assertEqual(json.loads(raw)['FileStatus']['type'], 'DIRECTORY')
        st, hd, _ = F.request('GET', '/webhdfs/v1/td_backup/s.t/20260101/part-0000?op=OPEN&offset=100&length=50')
        self.assertEqual(st, 307)
        loc = urllib.parse.urlsplit(hd['location'])
        self.assertEqual(loc.port, F.port)
        self.assertTrue(loc.path.startswith('/datanode/webhdfs/v1/'))
        st, _, raw = F.request('GET', loc.path + '?' + loc.query)
        self.assertEqual((st, raw), (200, data[100:150]))
        # generated content is the documented SHA-256 pattern
        st, hd, _ = F.request('GET', '/webhdfs/v1/td_backup/s.t/20260101/part-0001?op=OPEN&offset=65000&length=1000')
        loc = urllib.parse.urlsplit(hd['location'])
        raw = F.request('GET', loc.path + '?' + loc.query)[2]
        pat = b''.join(hashlib.sha256(b'gfake:7:%d' % j).digest() for j in range(2048))[:65521]
        self.assertEqual(raw, (pat * 2)[65000:66000])
        st, _, raw = F.request('GET', '/webhdfs/v1/nope?op=GETFILESTATUS')
        self.assertEqual(st, 404)
        self.assertEqual(json.loads(raw)['RemoteException']['exception'], 'FileNotFoundException')


if __name__ == '__main__':
    unittest.main()
