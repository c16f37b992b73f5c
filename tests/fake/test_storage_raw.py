#!/usr/bin/env python3
"""Raw-protocol tests of the fake's Cloud Storage uploads: what clients vary
and what issue 12 found wrong.  Multipart with and without part headers and
with CRLF / LF LF in the data; resumable with `*` ranges, 308 and
X-GUploader-No-308, chunk sizes; X-Goog-Hash right and wrong; buckets that
exist only once created; list matchGlob/startOffset/endOffset/fields;
objects.patch, copy and rewrite.

Sources: the storage-v1 discovery document in contracts/gcp, and Google's
published upload docs (cloud.google.com/storage/docs/performing-resumable-uploads,
.../uploading-objects, .../json_api/v1/objects/list "matchGlob").
"""
import base64
import hashlib
import json
import os
import sys
import unittest
import urllib.parse

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import test_gfake  # noqa: E402
from gfake import crc32c as crcmod  # noqa: E402

F = None
TRICKY = b'head\r\n\r\nmid\n\nx\r\n--not-the-boundary\r\n' + bytes(range(256)) + b'\n\n\r\n'


def setUpModule():
    global F
    F = test_gfake.Fake()
    test_gfake.F = F


def tearDownModule():
    F.stop()


def goog_hash(data, crc=None, md5=None):
    crc = crc or crcmod.b64(crcmod.crc32c(data))
    md5 = md5 or base64.b64encode(hashlib.md5(data).digest()).decode()
    return 'crc32c=%s,md5=%s' % (crc, md5)


class Base(unittest.TestCase):
    def setUp(self):
        F.request('POST', '/_fake/reset', {})
        st, _, js, _ = F.api('POST', '/storage/v1/b?project=p', {'name': 'bkt'})
        self.assertEqual(st, 200, js)

    def get(self, name):
        return F.api('GET', '/storage/v1/b/bkt/o/%s?alt=media' % urllib.parse.quote(name, safe=''))[3]

    def start_session(self, name, headers=None):
        st, hd, js, _ = F.api('POST', '/upload/storage/v1/b/bkt/o?uploadType=resumable',
                              {'name': name}, headers or {})
        self.assertEqual(st, 200, js)
        loc = urllib.parse.urlsplit(hd['location'])
        return loc.path + '?' + loc.query


class TestMultipart(Base):
    def post(self, body, bnd='b0undary'):
        return F.api('POST', '/upload/storage/v1/b/bkt/o?uploadType=multipart', body,
                     {'Content-Type': 'multipart/related; boundary=' + bnd})

    def test_media_part_without_headers(self):
        # RFC 2046 5.1.1: a part may have no header fields; its body starts
        # right after the blank line.  Google's Go client sends this.
        meta = json.dumps({'name': 'noh.bin'}).encode()
        body = (b'--b0undary\r\nContent-Type: application/json\r\n\r\n' + meta +
                b'\r\n--b0undary\r\n\r\n' + TRICKY + b'\r\n--b0undary--\r\n')
        st, _, js, _ = self.post(body)
        self.assertEqual(st, 200, js)
        self.assertEqual(js['size'], str(len(TRICKY)))
        self.assertEqual(self.get('noh.bin'), TRICKY)

    def test_media_part_with_headers_and_crlf_data(self):
        meta = json.dumps({'name': 'h.bin'}).encode()
        body = (b'--b0undary\r\nContent-Type: application/json; charset=UTF-8\r\n\r\n' + meta +
                b'\r\n--b0undary\r\nContent-Type: application/octet-stream\r\n\r\n' + TRICKY +
                b'\r\n--b0undary--')
        st, _, js, _ = self.post(body)
        self.assertEqual(st, 200, js)
        self.assertEqual(self.get('h.bin'), TRICKY)
        self.assertEqual(js['md5Hash'], base64.b64encode(hashlib.md5(TRICKY).digest()).decode())

    def test_data_with_lf_lf_in_a_headerless_part(self):
        meta = json.dumps({'name': 'lf.bin'}).encode()
        data = b'first\n\nsecond'
        body = (b'--b0undary\r\n\r\n' + meta + b'\r\n--b0undary\r\n\r\n' + data + b'\r\n--b0undary--\r\n')
        st, _, js, _ = self.post(body)
        self.assertEqual(st, 200, js)
        self.assertEqual(self.get('lf.bin'), data)


class TestResumable(Base):
    def test_single_request_star_range(self):
        # The Node client's default: one PUT of everything, bytes 0-*/*.
        sess = self.start_session('star.bin')
        st, _, js, _ = F.api('PUT', sess, TRICKY, {'Content-Range': 'bytes 0-*/*'})
        self.assertEqual(st, 200, js)
        self.assertEqual(js['size'], str(len(TRICKY)))
        self.assertEqual(self.get('star.bin'), TRICKY)

    def test_star_end_with_known_total(self):
        sess = self.start_session('star2.bin')
        st, _, js, _ = F.api('PUT', sess, TRICKY, {'Content-Range': 'bytes 0-*/%d' % len(TRICKY)})
        self.assertEqual(st, 200, js)
        self.assertEqual(self.get('star2.bin'), TRICKY)

    def test_no_308_header(self):
        data = os.urandom(262144 + 10)
        sess = self.start_session('n308.bin')
        st, hd, _, _ = F.api('PUT', sess, data[:262144], {'Content-Range': 'bytes 0-262143/*',
                                                           'X-GUploader-No-308': 'yes'})
        self.assertEqual(st, 200)
        self.assertEqual(hd.get('x-http-status-code-override'), '308')
        self.assertEqual(hd.get('range'), 'bytes=0-262143')
        st, hd, _, _ = F.api('PUT', sess, b'', {'Content-Range': 'bytes */%d' % len(data),
                                                'X-GUploader-No-308': 'yes'})
        self.assertEqual((st, hd.get('x-http-status-code-override')), (200, '308'))
        st, hd, _, _ = F.api('PUT', sess, b'', {'Content-Range': 'bytes */%d' % len(data)})
        self.assertEqual(st, 308)
        self.assertNotIn('x-http-status-code-override', hd)
        st, hd, js, _ = F.api('PUT', sess, data[262144:], {'Content-Range': 'bytes 262144-%d/%d'
                                                           % (len(data) - 1, len(data)),
                                                           'X-GUploader-No-308': 'yes'})
        self.assertEqual(st, 200, js)
        self.assertNotIn('x-http-status-code-override', hd)
        self.assertEqual(js['size'], str(len(data)))

    def test_chunk_size_rules(self):
        sess = self.start_session('rules.bin')
        st, _, _, _ = F.api('PUT', sess, b'x' * 1000, {'Content-Range': 'bytes 0-999/*'})
        self.assertEqual(st, 400)
        st, _, _, _ = F.api('PUT', sess, b'x' * 262144, {'Content-Range': 'bytes 0-262143/*'})
        self.assertEqual(st, 308)
        st, _, js, _ = F.api('PUT', sess, b'y' * 5, {'Content-Range': 'bytes 262144-262148/262149'})
        self.assertEqual(st, 200, js)

    def test_final_chunk_hash(self):
        data = os.urandom(262144 + 7)
        sess = self.start_session('hash.bin')
        F.api('PUT', sess, data[:262144], {'Content-Range': 'bytes 0-262143/*'})
        st, _, js, _ = F.api('PUT', sess, data[262144:], {
            'Content-Range': 'bytes 262144-%d/%d' % (len(data) - 1, len(data)),
            'X-Goog-Hash': goog_hash(data, crc='AAAAAA==')})
        self.assertEqual(st, 400, js)
        self.assertIn('CRC32C', js['error']['message'])
        self.assertEqual(F.api('GET', '/storage/v1/b/bkt/o/hash.bin')[0], 404)
        sess = self.start_session('hash2.bin')
        F.api('PUT', sess, data[:262144], {'Content-Range': 'bytes 0-262143/*'})
        st, _, js, _ = F.api('PUT', sess, data[262144:], {
            'Content-Range': 'bytes 262144-%d/%d' % (len(data) - 1, len(data)), 'X-Goog-Hash': goog_hash(data)})
        self.assertEqual(st, 200, js)


class TestMediaHash(Base):
    def put(self, name, data, h):
        return F.api('POST', '/upload/storage/v1/b/bkt/o?uploadType=media&name=' + name, data,
                     {'X-Goog-Hash': h})

    def test_right_and_wrong(self):
        self.assertEqual(self.put('ok', b'abc', goog_hash(b'abc'))[0], 200)
        st, _, js, _ = self.put('badcrc', b'abc', goog_hash(b'abc', crc='AAAAAA=='))
        self.assertEqual(st, 400)
        self.assertIn('CRC32C', js['error']['message'])
        st, _, js, _ = self.put('badmd5', b'abc', goog_hash(b'abc', md5=base64.b64encode(b'x' * 16).decode()))
        self.assertEqual(st, 400)
        self.assertIn('MD5', js['error']['message'])
        st, _, _, _ = self.put('md5only', b'abc', 'md5=' + base64.b64encode(hashlib.md5(b'abc').digest()).decode())
        self.assertEqual(st, 200)
        self.assertEqual(F.api('GET', '/storage/v1/b/bkt/o/badcrc')[0], 404)


class TestBuckets(Base):
    def test_bucket_exists_only_when_created(self):
        msg = 'The specified bucket does not exist.'
        for method, path in (('GET', '/storage/v1/b/nob'), ('GET', '/storage/v1/b/nob/o'),
                             ('GET', '/storage/v1/b/nob/o/x'),
                             ('POST', '/upload/storage/v1/b/nob/o?uploadType=media&name=x'),
                             ('POST', '/upload/storage/v1/b/nob/o?uploadType=resumable&name=x')):
            st, _, js, _ = F.api(method, path, b'' if method == 'POST' else None)
            self.assertEqual(st, 404, (method, path, js))
            self.assertEqual(js['error']['message'], msg)
        st, _, _, raw = F.api('GET', '/xml/nob/x')
        self.assertEqual(st, 404)
        self.assertIn(b'<Code>NoSuchBucket</Code>', raw)
        st, _, js, _ = F.request('POST', '/_fake/storage/buckets', {'name': 'nob'})[0:3] + (None,)
        self.assertEqual(st, 200)
        self.assertEqual(F.api('GET', '/storage/v1/b/nob/o')[0], 200)
        self.assertEqual(F.api('POST', '/storage/v1/b?project=p', {'name': 'nob'})[0], 409)


class TestList(Base):
    def setUp(self):
        super().setUp()
        for n in ('a.csv', 'b.json', 'd/x.csv', 'd/e/y.csv', 'z.csv'):
            F.api('POST', '/upload/storage/v1/b/bkt/o?uploadType=media&name=' + urllib.parse.quote(n, safe=''), b'1')

    def names(self, q):
        st, _, js, _ = F.api('GET', '/storage/v1/b/bkt/o?' + q)
        self.assertEqual(st, 200, js)
        return [i['name'] for i in js.get('items', [])]

    def test_match_glob(self):
        self.assertEqual(self.names('matchGlob=*.csv'), ['a.csv', 'z.csv'])
        self.assertEqual(self.names('matchGlob=**.csv'), ['a.csv', 'd/e/y.csv', 'd/x.csv', 'z.csv'])
        self.assertEqual(self.names('matchGlob=d/**'), ['d/e/y.csv', 'd/x.csv'])
        self.assertEqual(self.names('matchGlob=%3F.json'), ['b.json'])
        self.assertEqual(self.names('matchGlob=' + urllib.parse.quote('{a,z}.csv')), ['a.csv', 'z.csv'])
        self.assertEqual(self.names('matchGlob=' + urllib.parse.quote('[ab].*')), ['a.csv', 'b.json'])

    def test_offsets(self):
        self.assertEqual(self.names('startOffset=b'), ['b.json', 'd/e/y.csv', 'd/x.csv', 'z.csv'])
        self.assertEqual(self.names('startOffset=b&endOffset=d/x'), ['b.json', 'd/e/y.csv'])

    def test_fields(self):
        st, _, js, _ = F.api('GET', '/storage/v1/b/bkt/o?maxResults=2&fields=' +
                             urllib.parse.quote('items(name,size),nextPageToken'))
        self.assertEqual(st, 200)
        self.assertEqual(set(js), {'items', 'nextPageToken'})
        self.assertEqual(js['items'], [{'name': 'a.csv', 'size': '1'}, {'name': 'b.json', 'size': '1'}])
        st, _, js, _ = F.api('GET', '/storage/v1/b/bkt/o/a.csv?fields=name,generation')
        self.assertEqual(set(js), {'name', 'generation'})


class TestObjectMethods(Base):
    def test_patch(self):
        F.api('POST', '/upload/storage/v1/b/bkt/o?uploadType=media&name=p', b'1')
        st, _, js, _ = F.api('PATCH', '/storage/v1/b/bkt/o/p', {'metadata': {'k': 'v'}, 'contentType': 'text/x'})
        self.assertEqual(st, 200, js)
        self.assertEqual((js['metadata'], js['contentType'], js['metageneration']), ({'k': 'v'}, 'text/x', '2'))
        st, _, js, _ = F.api('PATCH', '/storage/v1/b/bkt/o/p?ifMetagenerationMatch=1', {'metadata': {'k': None}})
        self.assertEqual(st, 412)
        st, _, js, _ = F.api('PATCH', '/storage/v1/b/bkt/o/p', {'metadata': {'k': None}})
        self.assertNotIn('k', js.get('metadata', {}))

    def test_copy_and_rewrite(self):
        F.api('POST', '/storage/v1/b?project=p', {'name': 'other'})
        F.api('POST', '/upload/storage/v1/b/bkt/o?uploadType=media&name=src', TRICKY)
        st, _, js, _ = F.api('POST', '/storage/v1/b/bkt/o/src/copyTo/b/other/o/dst', {})
        self.assertEqual(st, 200, js)
        self.assertEqual(js['bucket'], 'other')
        self.assertEqual(F.api('GET', '/storage/v1/b/other/o/dst?alt=media')[3], TRICKY)
        st, _, js, _ = F.api('POST', '/storage/v1/b/bkt/o/src/rewriteTo/b/bkt/o/dst2', {'contentType': 'a/b'})
        self.assertEqual(st, 200, js)
        self.assertEqual((js['kind'], js['done']), ('storage#rewriteResponse', True))
        self.assertEqual(js['totalBytesRewritten'], str(len(TRICKY)))
        self.assertEqual(js['resource']['contentType'], 'a/b')
        st, _, js, _ = F.api('POST', '/storage/v1/b/bkt/o/nope/rewriteTo/b/bkt/o/x', {})
        self.assertEqual(st, 404)
        st, _, js, _ = F.api('POST', '/storage/v1/b/bkt/o/src/rewriteTo/b/bkt/o/dst2?ifGenerationMatch=0', {})
        self.assertEqual(st, 412)



class TestLargeBodies(Base):
    """Bodies longer than the piece the fake reads at a time (1 MiB, read
    into a buffer it reuses), with and without storage_md5."""
    DATA = os.urandom(3 * (1 << 20) + 12345)

    def tearDown(self):
        F.request('POST', '/_fake/config', {'storage_md5': True})

    def check(self, name, md5):
        js = F.api('GET', '/storage/v1/b/bkt/o/' + name)[2]
        self.assertEqual(js['crc32c'], crcmod.b64(crcmod.crc32c(self.DATA)))
        if md5:
            self.assertEqual(js['md5Hash'], base64.b64encode(hashlib.md5(self.DATA).digest()).decode())
        else:
            self.assertNotIn('md5Hash', js)
        self.assertEqual(self.get(name), self.DATA)

    def upload_all_ways(self, md5):
        st, _, js, _ = F.api('POST', '/upload/storage/v1/b/bkt/o?uploadType=media&name=media', self.DATA,
                             {'X-Goog-Hash': goog_hash(self.DATA)})
        self.assertEqual(st, 200, js)
        self.check('media', md5)
        # resumable, the second request resending bytes the session has
        # (a client that lost the 308): the resent bytes span two pieces
        sess = self.start_session('resumed')
        first = 2 * (1 << 20)
        st, _, _, _ = F.api('PUT', sess, self.DATA[:first], {'Content-Range': 'bytes 0-%d/*' % (first - 1)})
        self.assertEqual(st, 308)
        again = 262144
        st, _, js, _ = F.api('PUT', sess, self.DATA[again:], {
            'Content-Range': 'bytes %d-%d/%d' % (again, len(self.DATA) - 1, len(self.DATA))})
        self.assertEqual(st, 200, js)
        self.check('resumed', md5)
        st, hd, _, raw = F.api('PUT', '/xml/bkt/xmlput', self.DATA)
        self.assertEqual(st, 200, raw)
        want = '"%s"' % hashlib.md5(self.DATA).hexdigest() if md5 else \
            '"%08x%x"' % (crcmod.crc32c(self.DATA), len(self.DATA))
        self.assertEqual(hd['etag'], want)
        self.check('xmlput', md5)
        st, _, _, raw = F.api('POST', '/xml/bkt/xmlparts?uploads', b'')
        uid = raw.decode().split('<UploadId>')[1].split('<')[0]
        cut = (1 << 20) + 5
        etags = []
        for i, p in enumerate((self.DATA[:cut], self.DATA[cut:]), 1):
            st, hd, _, _ = F.api('PUT', '/xml/bkt/xmlparts?partNumber=%d&uploadId=%s' % (i, uid), p,
                                 {'X-Goog-Hash': 'crc32c=' + crcmod.b64(crcmod.crc32c(p))})
            self.assertEqual(st, 200)
            etags.append(hd['etag'])
        self.assertEqual(len(set(etags)), 2)
        body = '<CompleteMultipartUpload>%s</CompleteMultipartUpload>' % ''.join(
            '<Part><PartNumber>%d</PartNumber><ETag>%s</ETag></Part>' % (i, e) for i, e in enumerate(etags, 1))
        st, _, _, raw = F.api('POST', '/xml/bkt/xmlparts?uploadId=%s' % uid, body.encode())
        self.assertEqual(st, 200, raw)
        self.check('xmlparts', False)   # a multipart object is a composite: no MD5 either way

    def test_with_md5(self):
        self.upload_all_ways(True)

    def test_without_md5(self):
        F.request('POST', '/_fake/config', {'storage_md5': False})
        self.upload_all_ways(False)


if __name__ == '__main__':
    unittest.main()
