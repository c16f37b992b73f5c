"""Cloud Storage JSON API v1 + XML multipart upload (storage-v1.discovery.json
and the public Cloud Storage documentation).

Object bytes live in memory up to 8 MiB, beyond that in a temp file.  MD5
(unless the storage_md5 config is off) and CRC-32C are computed incrementally
while bytes arrive (crc32c.py folds whole blocks with big-integer arithmetic,
~150-200 MB/s, or uses python3-crc32c), so finishing an upload costs nothing
extra.
"""
import base64
import datetime
import email.parser
import email.policy
import hashlib
import json
import os
import re
import secrets
import shutil
import tempfile
import threading
import time
import urllib.parse
import xml.etree.ElementTree as ET
import atexit

from . import crc32c as crcmod
from .server import ApiError, Response, json_response

API = 'storage-v1'
SPILL = 8 * 1024 * 1024
CHUNK_QUANTUM = 262144
# storage_resumable_persist_max: when > 0, a resumable chunk that does not
# end the upload persists at most this many bytes (whole 256 KiB units, at
# least one) and the 308 says so; Cloud Storage may persist less than a
# chunk, and a client must go on from its Range.
# storage_md5: false makes uploads skip the MD5 (objects then have no md5Hash,
# as composites have none, and XML ETags come from the CRC-32C and size). At
# ~2 CPU s/GiB it is about half of what an upload costs the fake, and make bench's
# gcs_copy runs measure the client on the same two cores (tests/bench/
# bench_gcscopy.py); Cloud Storage hashes on machines of its own.
CONFIG = {'storage_resumable_persist_max': (int, 0), 'storage_md5': (bool, True)}
BUCKET_404 = 'The specified bucket does not exist.'
B = r'/storage/v1/b/([^/]+)'


def _rfc3339(t):
    dt = datetime.datetime.fromtimestamp(t, datetime.timezone.utc)
    return dt.strftime('%Y-%m-%dT%H:%M:%S.') + '%03dZ' % (dt.microsecond // 1000)


# ---- blobs -------------------------------------------------------------------
class Blob:
    def __init__(self, size, md5, crc, data=None, path=None):
        self.size = size
        self.md5 = md5
        self.crc = crc
        self.data = data
        self.path = path

    def read(self, offset=0, length=None):
        if length is None:
            length = self.size - offset
        if self.data is not None:
            return bytes(self.data[offset:offset + length])
        with open(self.path, 'rb') as f:
            f.seek(offset)
            return f.read(length)

    def chunks(self, offset=0, length=None, step=8 << 20):
        if length is None:
            length = self.size - offset
        end = offset + length
        while offset < end:
            n = min(step, end - offset)
            yield self.read(offset, n)
            offset += n

    def body(self, offset=0, length=None):
        return BlobBody(self, offset, self.size - offset if length is None else length)

    def discard(self):
        if self.path:
            try:
                os.unlink(self.path)
            except OSError:
                pass


class BlobBody:
    """Streamed response body: sendfile() from the temp file when possible."""

    def __init__(self, blob, offset, length):
        self.blob = blob
        self.offset = offset
        self.size = length
        self.fh = open(blob.path, 'rb') if blob.path else None   # pin the inode

    def write_to(self, wfile, sock):
        try:
            if self.fh is not None and sock is not None:
                sock.sendfile(self.fh, self.offset, self.size)
                return
            if self.fh is None:
                mv = memoryview(self.blob.data)[self.offset:self.offset + self.size]
                wfile.write(mv)
                return
            self.fh.seek(self.offset)
            left = self.size
            while left > 0:
                d = self.fh.read(min(8 << 20, left))
                if not d:
                    break
                wfile.write(d)
                left -= len(d)
        finally:
            if self.fh is not None:
                self.fh.close()


class CompositeBlob:
    """An object made by completing an XML multipart upload: its parts'
    blobs in order, not copied (Cloud Storage does not rewrite them
    either), and their CRCs combined. It owns the parts once committed
    (`owns`), so a complete refused before that leaves them to the upload."""

    def __init__(self, parts, crc):
        self.parts = parts
        self.size = sum(p.size for p in parts)
        self.md5 = None
        self.crc = crc
        self.data = None
        self.path = None
        self.owns = False

    def _spans(self, offset, length):
        """(part, offset in it, length) covering [offset, offset+length),
        or to the end when length is None."""
        end = self.size if length is None else offset + length
        at = 0
        for p in self.parts:
            lo, hi = max(offset, at), min(end, at + p.size)
            if lo < hi:
                yield p, lo - at, hi - lo
            at += p.size

    def read(self, offset=0, length=None):
        return b''.join(p.read(o, n) for p, o, n in self._spans(offset, length))

    def chunks(self, offset=0, length=None, step=8 << 20):
        for p, o, n in self._spans(offset, length):
            yield from p.chunks(o, n, step)

    def body(self, offset=0, length=None):
        return CompositeBody([p.body(o, n) for p, o, n in self._spans(offset, length)])

    def discard(self):
        if self.owns:
            for p in self.parts:
                p.discard()


class CompositeBody:
    """The parts' bodies one after the other (each pinned when made)."""

    def __init__(self, bodies):
        self.bodies = bodies
        self.size = sum(b.size for b in bodies)

    def write_to(self, wfile, sock):
        for b in self.bodies:
            b.write_to(wfile, sock)


class BlobWriter:
    def __init__(self, tmpdir, with_md5=True):
        self.tmpdir = tmpdir
        self.buf = bytearray()
        self.fh = None
        self.path = None
        self.size = 0
        self.md5 = hashlib.md5() if with_md5 else None
        self.crc = 0

    def write(self, data):
        if not data:
            return
        if self.md5 is not None:
            self.md5.update(data)
        self.crc = crcmod.crc32c(data, self.crc)
        self._spill_for(len(data))
        self._store(data)

    def append(self, blob):
        """Add a whole stored blob: its CRC combined with ours rather than
        computed again, its bytes copied in the kernel where both are files
        (multipart complete and compose, as Cloud Storage does them)."""
        if self.md5 is not None:
            for c in blob.chunks():
                self.write(c)
            return
        self.crc = crcmod.crc32c_combine(self.crc, blob.crc, blob.size)
        self._spill_for(blob.size)
        if self.fh is None or blob.path is None:
            for c in blob.chunks():
                self._store(c)
            return
        self.fh.flush()
        done = 0
        with open(blob.path, 'rb') as src:
            try:   # Python >= 3.8 on Linux; a file system may refuse it (EXDEV, EINVAL...)
                while done < blob.size:
                    n = os.copy_file_range(src.fileno(), self.fh.fileno(), blob.size - done)
                    if n <= 0:
                        break
                    done += n
            except (AttributeError, OSError):
                pass
        self.fh.seek(0, os.SEEK_END)
        self.size += done
        for c in blob.chunks(done):
            self._store(c)

    def _spill_for(self, n):
        if self.fh is None and len(self.buf) + n > SPILL:
            fd, self.path = tempfile.mkstemp(dir=self.tmpdir, prefix='obj-')
            self.fh = os.fdopen(fd, 'wb')
            self.fh.write(self.buf)
            self.buf = None

    def _store(self, data):
        self.size += len(data)
        if self.fh is not None:
            self.fh.write(data)
        else:
            self.buf += data

    def finish(self):
        md5 = self.md5.digest() if self.md5 is not None else None
        if self.fh is not None:
            self.fh.close()
            self.fh = None   # the file is the blob's now: abort() must not unlink it
            return Blob(self.size, md5, self.crc, path=self.path)
        return Blob(self.size, md5, self.crc, data=bytes(self.buf))

    def abort(self):
        if self.fh is not None:
            self.fh.close()
            try:
                os.unlink(self.path)
            except OSError:
                pass


class Obj:
    def __init__(self, bucket, name, blob, generation, content_type, meta):
        self.bucket = bucket
        self.name = name
        self.blob = blob
        self.generation = generation
        self.metageneration = 1
        self.content_type = content_type or 'application/octet-stream'
        self.meta = meta or {}
        self.created = time.time()
        self.component_count = None

    def resource(self, base):
        enc = urllib.parse.quote(self.name, safe='')
        r = {
            'kind': 'storage#object',
            'id': '%s/%s/%d' % (self.bucket, self.name, self.generation),
            'selfLink': '%s/storage/v1/b/%s/o/%s' % (base, self.bucket, enc),
            'mediaLink': '%s/download/storage/v1/b/%s/o/%s?generation=%d&alt=media'
                         % (base, self.bucket, enc, self.generation),
            'name': self.name,
            'bucket': self.bucket,
            'generation': str(self.generation),
            'metageneration': str(self.metageneration),
            'contentType': self.content_type,
            'storageClass': 'STANDARD',
            'size': str(self.blob.size),
            'crc32c': crcmod.b64(self.blob.crc),
            'etag': base64.b64encode(('%d' % self.generation).encode()).decode().rstrip('='),
            'timeCreated': _rfc3339(self.created),
            'updated': _rfc3339(self.created),
            'timeStorageClassUpdated': _rfc3339(self.created),
            'timeFinalized': _rfc3339(self.created),
        }
        if self.blob.md5 is not None:
            r['md5Hash'] = base64.b64encode(self.blob.md5).decode()
        if self.component_count is not None:
            r['componentCount'] = self.component_count
        for k in ('metadata', 'cacheControl', 'contentDisposition', 'contentEncoding', 'contentLanguage',
                  'customTime'):
            if self.meta.get(k) is not None:
                r[k] = self.meta[k]
        return r

    def hash_header(self):
        h = 'crc32c=' + crcmod.b64(self.blob.crc)
        if self.blob.md5 is not None:
            h += ',md5=' + base64.b64encode(self.blob.md5).decode()
        return h


def _int_param(req, name):
    v = req.q(name)
    if v is None:
        return None
    try:
        return int(v)
    except ValueError:
        raise ApiError(400, 'Invalid value for %s: %s' % (name, v))


class Storage:
    def __init__(self, app):
        self.app = app
        self.lock = threading.RLock()
        self.tmpdir = tempfile.mkdtemp(prefix='gfake-gcs-')
        atexit.register(shutil.rmtree, self.tmpdir, True)
        self.last_gen = 0
        self.reset()

    def reset(self):
        with self.lock:
            for b in getattr(self, 'buckets', {}).values():
                for o in b['objects'].values():
                    o.blob.discard()
            # uploads left open hold temporary files too
            for up in getattr(self, 'xml_uploads', {}).values():
                for blob, _, _ in up['parts'].values():
                    blob.discard()
            for sess in getattr(self, 'sessions', {}).values():
                sess['writer'].abort()
            self.buckets = {}
            self.sessions = {}
            self.xml_uploads = {}

    # ---- helpers ------------------------------------------------------------
    def _writer(self):
        """A writer for an upload's bytes, hashing MD5 unless storage_md5 is off."""
        return BlobWriter(self.tmpdir, with_md5=bool(self.app.config.get('storage_md5', True)))

    def _gen(self):
        with self.lock:
            g = max(int(time.time() * 1e6), self.last_gen + 1)
            self.last_gen = g
            return g

    def _bucket(self, name, create=False):
        """The bucket, or 404 as GCS answers it.  Buckets exist only once
        created through buckets.insert or POST /_fake/storage/buckets."""
        b = self.buckets.get(name)
        if b is None:
            if not create:
                raise ApiError(404, BUCKET_404, reason='notFound')
            if not re.match(r'^[a-z0-9][a-z0-9._-]{1,220}[a-z0-9]\Z', name):
                raise ApiError(400, 'Invalid bucket name: \'%s\'' % name, reason='invalid')
            b = self.buckets[name] = {'name': name, 'objects': {}, 'created': time.time()}
        return b

    def _bucket_resource(self, req, b):
        return {'kind': 'storage#bucket', 'id': b['name'], 'name': b['name'],
                'selfLink': '%s/storage/v1/b/%s' % (req.base_url, b['name']),
                'projectNumber': '123456789012', 'metageneration': '1', 'location': 'US',
                'storageClass': 'STANDARD', 'etag': 'CAE=', 'timeCreated': _rfc3339(b['created']),
                'updated': _rfc3339(b['created'])}

    def _get_obj(self, bucket, name):
        o = self._bucket(bucket)['objects'].get(name)
        if o is None:
            raise ApiError(404, 'No such object: %s/%s' % (bucket, name), reason='notFound')
        return o

    def _check_preconditions(self, req, existing, params=None):
        """ifGenerationMatch / ifGenerationNotMatch / ifMetagenerationMatch on the live object."""
        p = params if params is not None else {
            k: _int_param(req, k) for k in ('ifGenerationMatch', 'ifGenerationNotMatch',
                                            'ifMetagenerationMatch', 'ifMetagenerationNotMatch')}
        gen = existing.generation if existing else 0
        fail = False
        if p.get('ifGenerationMatch') is not None and p['ifGenerationMatch'] != gen:
            fail = True
        if p.get('ifGenerationNotMatch') is not None and p['ifGenerationNotMatch'] == gen:
            fail = True
        if p.get('ifMetagenerationMatch') is not None and (existing is None or
                                                            p['ifMetagenerationMatch'] != existing.metageneration):
            fail = True
        if p.get('ifMetagenerationNotMatch') is not None and existing is not None \
                and p['ifMetagenerationNotMatch'] == existing.metageneration:
            fail = True
        if fail:
            raise ApiError(412, 'At least one of the pre-conditions you specified did not hold.',
                           reason='conditionNotMet')

    def _verify(self, blob, want):
        """400 and discard the blob when a given crc32c / md5Hash (base64)
        does not match the data."""
        if want.get('crc32c') and want['crc32c'] != crcmod.b64(blob.crc):
            blob.discard()
            raise ApiError(400, 'Provided CRC32C "%s" doesn\'t match calculated CRC32C "%s".'
                           % (want['crc32c'], crcmod.b64(blob.crc)), reason='invalid')
        if want.get('md5Hash') and blob.md5 is not None and \
                want['md5Hash'] != base64.b64encode(blob.md5).decode():
            blob.discard()
            raise ApiError(400, 'Provided MD5 hash "%s" doesn\'t match calculated MD5 hash "%s".'
                           % (want['md5Hash'], base64.b64encode(blob.md5).decode()), reason='invalid')

    def _precondition_params(self, req):
        return {k: _int_param(req, k) for k in ('ifGenerationMatch', 'ifGenerationNotMatch',
                                                'ifMetagenerationMatch', 'ifMetagenerationNotMatch')}

    def _commit(self, req, bucket, name, blob, content_type, meta, pre=None, verify=True, expect=None):
        """Store a finished blob as the live generation; preconditions and
        client-supplied hashes (object metadata, or `expect` from an
        X-Goog-Hash header) are checked here.  Returns the Obj."""
        for want in (meta if verify else None, expect):
            if want:
                self._verify(blob, want)
        with self.lock:
            b = self._bucket(bucket)
            old = b['objects'].get(name)
            try:
                self._check_preconditions(req, old, pre)
            except ApiError:
                blob.discard()
                raise
            o = Obj(bucket, name, blob, self._gen(), content_type, meta)
            b['objects'][name] = o
            if old is not None:
                old.blob.discard()
            return o

    # ---- buckets --------------------------------------------------------------
    def bucket_insert(self, req):
        body = req.json()
        name = body.get('name')
        if not name:
            raise ApiError(400, 'Required field: name', reason='required')
        with self.lock:
            if name in self.buckets:
                raise ApiError(409, 'Your previous request to create the named bucket succeeded and you '
                                    'already own it.', reason='conflict')
            return json_response(self._bucket_resource(req, self._bucket(name, create=True)))

    def bucket_put(self, req, bucket):
        """buckets.update: the fake keeps no bucket metadata, so it answers
        with the bucket as it is."""
        with self.lock:
            return json_response(self._bucket_resource(req, self._bucket(bucket)))

    def ctl_bucket_create(self, req):
        """POST /_fake/storage/buckets {"name": B}: create B (200 if it exists)."""
        body = req.json()
        if not isinstance(body, dict) or not isinstance(body.get('name'), str):
            raise ApiError(400, 'body must be {"name": "<bucket>"}')
        with self.lock:
            return json_response(self._bucket_resource(req, self._bucket(body['name'], create=True)))

    def bucket_get(self, req, bucket):
        with self.lock:
            return json_response(self._bucket_resource(req, self._bucket(bucket)))

    def bucket_test_iam(self, req, bucket):
        """buckets.testIamPermissions: GET .../iam/testPermissions?permissions=..
        (repeated); the held subset, as storage#testIamPermissionsResponse."""
        perms = req.query.get('permissions', [])
        if not perms:
            raise ApiError(400, 'Required parameter: permissions', reason='required')
        for p in perms:
            if not re.match(r'^storage\.[A-Za-z]+\.[A-Za-z]+\Z', p):
                raise ApiError(400, 'Permission \'%s\' is not valid for bucket resources.' % p, reason='invalid')
        with self.lock:
            self._bucket(bucket)
        held = self.app.iam.held(perms, 'projects/_/buckets/%s' % bucket)
        out = {'kind': 'storage#testIamPermissionsResponse'}
        if held:
            out['permissions'] = held
        return json_response(out)

    def bucket_delete(self, req, bucket):
        with self.lock:
            b = self._bucket(bucket, create=False)
            if b['objects']:
                raise ApiError(409, 'The bucket you tried to delete is not empty.', reason='conflict')
            del self.buckets[bucket]
        return Response(204)

    # ---- objects ----------------------------------------------------------------
    def object_get(self, req, bucket, name):
        with self.lock:
            o = self._get_obj(bucket, name)
            gen = _int_param(req, 'generation')
            if gen is not None and gen != o.generation:
                raise ApiError(404, 'No such object: %s/%s' % (bucket, name), reason='notFound')
            self._check_preconditions(req, o)
        if req.q('alt') != 'media' and not req.path.startswith('/download/'):
            return json_response(_fields(req, o.resource(req.base_url)))
        headers = [('x-goog-hash', o.hash_header()), ('x-goog-generation', str(o.generation)),
                   ('x-goog-metageneration', str(o.metageneration)),
                   ('x-goog-stored-content-length', str(o.blob.size)),
                   ('x-goog-stored-content-encoding', 'identity'),
                   ('ETag', '"%s"' % (o.blob.md5.hex() if o.blob.md5 else o.generation)),
                   ('Accept-Ranges', 'bytes')]
        rng = req.header('Range')
        size = o.blob.size
        if rng:
            m = re.match(r'^bytes=(\d*)-(\d*)\s*\Z', rng.strip())
            if not m or (m.group(1) == '' and m.group(2) == ''):
                raise ApiError(400, 'Invalid Range header', reason='invalid')
            if m.group(1) == '':
                n = int(m.group(2))
                start, end = max(0, size - n), size - 1
            else:
                start = int(m.group(1))
                end = int(m.group(2)) if m.group(2) else size - 1
                end = min(end, size - 1)
            if start >= size or start > end:
                raise ApiError(416, 'Request range not satisfiable', reason='requestedRangeNotSatisfiable',
                               headers=[('Content-Range', 'bytes */%d' % size)])
            headers.append(('Content-Range', 'bytes %d-%d/%d' % (start, end, size)))
            return Response(206, o.blob.body(start, end - start + 1), o.content_type, headers)
        return Response(200, o.blob.body(), o.content_type, headers)

    def object_delete(self, req, bucket, name):
        with self.lock:
            o = self._get_obj(bucket, name)
            self._check_preconditions(req, o)
            del self.buckets[bucket]['objects'][name]
            o.blob.discard()
        return Response(204)

    PATCHABLE = ('metadata', 'cacheControl', 'contentDisposition', 'contentEncoding', 'contentLanguage',
                 'customTime', 'contentType')

    def object_patch(self, req, bucket, name):
        """objects.patch: writable metadata only; `metadata` keys merge, a null
        value removes a key (JSON merge semantics, as GCS documents)."""
        body = req.json()
        with self.lock:
            o = self._get_obj(bucket, name)
            self._check_preconditions(req, o)
            for k, v in body.items():
                if k == 'contentType':
                    o.content_type = v or 'application/octet-stream'
                elif k == 'metadata':
                    md = dict(o.meta.get('metadata') or {})
                    for mk, mv in (v or {}).items():
                        if mv is None:
                            md.pop(mk, None)
                        else:
                            md[mk] = mv
                    o.meta['metadata'] = md or None
                elif k in self.PATCHABLE:
                    o.meta[k] = v
            o.metageneration += 1
            return json_response(_fields(req, o.resource(req.base_url)))

    def _copy(self, req, sbucket, sname, dbucket, dname):
        body = req.json() if req.body.strip() else {}
        with self.lock:
            self._bucket(dbucket)
            src = self._get_obj(sbucket, sname)
            gen = _int_param(req, 'sourceGeneration')
            if gen is not None and gen != src.generation:
                raise ApiError(404, 'No such object: %s/%s' % (sbucket, sname), reason='notFound')
            self._check_preconditions(req, src, {
                'ifGenerationMatch': _int_param(req, 'ifSourceGenerationMatch'),
                'ifGenerationNotMatch': _int_param(req, 'ifSourceGenerationNotMatch'),
                'ifMetagenerationMatch': _int_param(req, 'ifSourceMetagenerationMatch'),
                'ifMetagenerationNotMatch': _int_param(req, 'ifSourceMetagenerationNotMatch')})
            self._check_preconditions(req, self._bucket(dbucket)['objects'].get(dname))
        w = BlobWriter(self.tmpdir, with_md5=src.blob.md5 is not None)
        for c in src.blob.chunks():
            w.write(c)
        meta = {k: v for k, v in src.meta.items() if k in self.PATCHABLE}
        meta.update({k: v for k, v in body.items() if k in self.PATCHABLE})
        o = self._commit(req, dbucket, dname, w.finish(), body.get('contentType') or src.content_type,
                         meta, verify=False)
        o.component_count = src.component_count
        return o

    def object_copy(self, req, sbucket, sname, dbucket, dname):
        """objects.copy: one request, answers the new Object."""
        return json_response(self._copy(req, sbucket, sname, dbucket, dname).resource(req.base_url))

    def object_rewrite(self, req, sbucket, sname, dbucket, dname):
        """objects.rewrite: the fake always finishes in one call (done: true,
        no rewriteToken), which GCS may do for any object in one location."""
        o = self._copy(req, sbucket, sname, dbucket, dname)
        return json_response({'kind': 'storage#rewriteResponse', 'totalBytesRewritten': str(o.blob.size),
                              'objectSize': str(o.blob.size), 'done': True,
                              'resource': o.resource(req.base_url)})

    def object_list(self, req, bucket):
        prefix = req.q('prefix', '')
        delim = req.q('delimiter')
        try:
            maxr = int(req.q('maxResults') or 1000)
        except ValueError:
            raise ApiError(400, 'Invalid maxResults', reason='invalid')
        maxr = max(1, min(maxr, 1000))
        token = req.q('pageToken')
        glob = _glob_re(req.q('matchGlob')) if req.q('matchGlob') else None
        start_off, end_off = req.q('startOffset') or '', req.q('endOffset')
        if glob is not None and delim not in (None, '/'):
            raise ApiError(400, 'Delimiter must be "/" when matchGlob is set', reason='invalid')
        after = None
        if token:
            try:
                after = base64.urlsafe_b64decode(token.encode()).decode()
            except ValueError:
                raise ApiError(400, 'Invalid pageToken', reason='invalid')
        with self.lock:
            b = self._bucket(bucket)
            names = sorted(n for n in b['objects'] if n.startswith(prefix) and n >= start_off
                           and (end_off is None or n < end_off) and (glob is None or glob.fullmatch(n)))
            entries = []        # (sort key, kind, value)
            seen = set()
            for n in names:
                if delim:
                    i = n.find(delim, len(prefix))
                    if i >= 0:
                        p = n[:i + len(delim)]
                        if p not in seen:
                            seen.add(p)
                            entries.append((p, 'p', p))
                        continue
                entries.append((n, 'o', b['objects'][n]))
            entries.sort(key=lambda e: e[0])
            if after is not None:
                entries = [e for e in entries if e[0] > after]
            page, rest = entries[:maxr], entries[maxr:]
            out = {'kind': 'storage#objects'}
            items = [e[2].resource(req.base_url) for e in page if e[1] == 'o']
            prefixes = [e[2] for e in page if e[1] == 'p']
            if items:
                out['items'] = items
            if prefixes:
                out['prefixes'] = prefixes
            if rest:
                out['nextPageToken'] = base64.urlsafe_b64encode(page[-1][0].encode()).decode()
        return json_response(_fields(req, out))

    def compose(self, req, bucket, name):
        body = req.json()
        srcs = body.get('sourceObjects') or []
        if not srcs:
            raise ApiError(400, 'Required field: sourceObjects', reason='required')
        if len(srcs) > 32:
            raise ApiError(400, 'The number of source components provided (%d) exceeds the maximum (32)'
                           % len(srcs), reason='invalid')
        dest = body.get('destination') or {}
        with self.lock:
            parts = []
            for s in srcs:
                if not s.get('name'):
                    raise ApiError(400, 'Required field: sourceObjects[].name', reason='required')
                o = self._bucket(bucket)['objects'].get(s['name'])
                if o is None:
                    raise ApiError(404, 'Object %s (generation: %s) not found.'
                                   % (s['name'], s.get('generation', '0')), reason='notFound')
                g = s.get('generation')
                if g is not None and int(g) != o.generation:
                    raise ApiError(404, 'Object %s (generation: %s) not found.' % (s['name'], g),
                                   reason='notFound')
                pg = (s.get('objectPreconditions') or {}).get('ifGenerationMatch')
                if pg is not None and int(pg) != o.generation:
                    raise ApiError(412, 'At least one of the pre-conditions you specified did not hold.',
                                   reason='conditionNotMet')
                parts.append(o)
            self._check_preconditions(req, self._bucket(bucket)['objects'].get(name))
        w = BlobWriter(self.tmpdir, with_md5=False)
        count = 0
        for o in parts:
            w.append(o.blob)
            count += o.component_count or 1
        if count > 1024:
            w.abort()
            raise ApiError(400, 'The number of components in the composite object would exceed 1024.',
                           reason='invalid')
        meta = {k: v for k, v in dest.items() if k in ('metadata', 'cacheControl', 'contentDisposition',
                                                       'contentEncoding', 'contentLanguage')}
        o = self._commit(req, bucket, name, w.finish(), dest.get('contentType') or parts[0].content_type,
                         meta, verify=False)
        o.component_count = count
        if body.get('deleteSourceObjects'):
            with self.lock:
                for p in parts:
                    if self.buckets[bucket]['objects'].get(p.name) is p and p.name != name:
                        del self.buckets[bucket]['objects'][p.name]
                        p.blob.discard()
        return json_response(o.resource(req.base_url))

    # ---- uploads --------------------------------------------------------------
    def upload(self, req, bucket):
        utype = req.q('uploadType')
        upload_id = req.q('upload_id')
        if upload_id:
            return self.session_put(req, bucket, upload_id)
        if req.path.startswith('/resumable/'):
            utype = 'resumable'
        if utype == 'media':
            return self.upload_media(req, bucket)
        if utype == 'multipart':
            return self.upload_multipart(req, bucket)
        if utype == 'resumable':
            return self.resumable_start(req, bucket)
        raise ApiError(400, 'Upload requests must include an uploadType URL parameter and a URL path '
                            'beginning with /upload/', reason='wrongUrlForUpload')

    def _drain_into(self, req, w):
        r, buf = req.reader, req.body_buffer()
        while not r.done:
            w.write(r.read_view(buf))

    def upload_media(self, req, bucket):
        name = req.q('name')
        if not name:
            raise ApiError(400, 'Required parameter: name', reason='required')
        pre = self._precondition_params(req)
        w = self._writer()
        try:
            self._drain_into(req, w)
        except BaseException:
            w.abort()
            raise
        ctype = req.header('Content-Type') or 'application/octet-stream'
        o = self._commit(req, bucket, name, w.finish(), ctype, {}, pre, expect=_goog_hash(req))
        return json_response(o.resource(req.base_url))

    def upload_multipart(self, req, bucket):
        body = req.reader.read_all()
        ctype = req.header('Content-Type') or ''
        m = re.search(r'boundary="?([^";]+)"?', ctype)
        if 'multipart/related' not in ctype.lower() or not m:
            raise ApiError(400, 'Content-Type must be multipart/related with a boundary', reason='invalid')
        parts = _split_multipart(body, m.group(1).encode())
        if len(parts) != 2:
            raise ApiError(400, 'Multipart upload must have exactly 2 parts (metadata, media); got %d'
                           % len(parts), reason='invalid')
        (h1, meta_raw), (h2, data) = parts
        try:
            meta = json.loads(meta_raw or b'{}')
        except ValueError:
            raise ApiError(400, 'Metadata part is not valid JSON', reason='parseError')
        self.app.discovery.validate(API, 'storage.objects.insert', meta)
        name = meta.get('name') or req.q('name')
        if not name:
            raise ApiError(400, 'Required parameter: name', reason='required')
        w = self._writer()
        w.write(data)
        o = self._commit(req, bucket, name, w.finish(),
                         meta.get('contentType') or h2.get('content-type') or 'application/octet-stream',
                         meta, self._precondition_params(req))
        return json_response(o.resource(req.base_url))

    def resumable_start(self, req, bucket):
        raw = req.reader.read_all()
        meta = {}
        if raw.strip():
            try:
                meta = json.loads(raw)
            except ValueError:
                raise ApiError(400, 'Metadata is not valid JSON', reason='parseError')
            self.app.discovery.validate(API, 'storage.objects.insert', meta)
        name = meta.get('name') or req.q('name')
        if not name:
            raise ApiError(400, 'Required parameter: name', reason='required')
        total = req.header('X-Upload-Content-Length')
        sid = secrets.token_urlsafe(18)
        with self.lock:
            self._bucket(bucket)
            self.sessions[sid] = {
                'bucket': bucket, 'name': name, 'meta': meta,
                'ctype': meta.get('contentType') or req.header('X-Upload-Content-Type') or 'application/octet-stream',
                'declared': int(total) if total else None, 'pre': self._precondition_params(req),
                'writer': self._writer(), 'result': None, 'lock': threading.Lock(),
            }
        loc = '%s/upload/storage/v1/b/%s/o?uploadType=resumable&name=%s&upload_id=%s' % (
            req.base_url, bucket, urllib.parse.quote(name, safe=''), sid)
        return Response(200, b'', 'text/plain; charset=utf-8', [('Location', loc), ('X-GUploader-UploadID', sid)])

    def session_put(self, req, bucket, sid):
        with self.lock:
            s = self.sessions.get(sid)
        if s is None:
            raise ApiError(404, 'No such upload session (it was cancelled, or it never existed).',
                           reason='notFound')
        if req.method == 'DELETE':
            with self.lock:
                self.sessions.pop(sid, None)
            s['writer'].abort()
            raise ApiError(499, 'Client Closed Request', reason='cancelled')
        if req.method not in ('PUT', 'POST'):
            raise ApiError(405, 'Method not allowed on an upload session')
        with s['lock']:
            return self._session_chunk(req, s)

    def _session_chunk(self, req, s):
        w = s['writer']
        if s['result'] is not None:
            return json_response(s['result'].resource(req.base_url))
        cr = (req.header('Content-Range') or '').strip()
        length = int(req.header('Content-Length') or 0)
        start = end = total = None
        if not cr:
            start, total = 0, length
            end = length - 1
            if w.size:
                raise ApiError(400, 'Content-Range header required to continue a partial upload',
                               reason='invalid')
        else:
            m = re.match(r'^bytes\s+(?:(\d+)-(\d+|\*)|\*)/(\d+|\*)\Z', cr)
            if not m:
                raise ApiError(400, 'Invalid Content-Range header: %s' % cr, reason='invalid')
            total = None if m.group(3) == '*' else int(m.group(3))
            if m.group(2) == '*':
                # `bytes a-*/T`: the body runs from a to the end of the upload
                # (the Node client's single-request default is bytes 0-*/*).
                return self._session_rest(req, s, int(m.group(1)), total)
            if m.group(1) is not None:
                start, end = int(m.group(1)), int(m.group(2))
        if total is not None and s['declared'] is not None and total != s['declared']:
            raise ApiError(400, 'Upload size %d does not match X-Upload-Content-Length %d'
                           % (total, s['declared']), reason='invalid')
        if start is None:                   # status query: bytes */TOTAL
            if total is not None and total == w.size:
                return self._session_finish(req, s)
            return self._308(req, w.size)
        if end < start - 1 or (end - start + 1) != length:
            raise ApiError(400, 'Content-Range %s does not match Content-Length %d' % (cr, length),
                           reason='invalid')
        if start > w.size:
            raise ApiError(400, 'Invalid request. Content-Range starts at %d but only %d bytes have been '
                                'persisted.' % (start, w.size), reason='invalid')
        final = total is not None and end + 1 == total
        if total is not None and end + 1 > total:
            raise ApiError(400, 'Content-Range end %d beyond total %d' % (end, total), reason='invalid')
        if not final and length % CHUNK_QUANTUM:
            raise ApiError(400, 'Invalid request. The number of bytes uploaded is required to be equal or '
                                'greater than 262144, except for the final request (it\'s recommended to be '
                                'the exact multiple of 262144). The received request contained %d bytes, '
                                'which does not meet this requirement.' % length, reason='invalid')
        cap = int(self.app.config.get('storage_resumable_persist_max') or 0)
        if cap > 0 and not final:
            keep = max(CHUNK_QUANTUM, cap // CHUNK_QUANTUM * CHUNK_QUANTUM)
            self._session_write(req, w, w.size - start, limit=start + keep)
        else:
            self._session_write(req, w, w.size - start)
        if final and w.size == total:
            return self._session_finish(req, s)
        return self._308(req, w.size)

    def _session_write(self, req, w, skip, limit=None):
        """Append the request body, skipping the first `skip` bytes (resent
        bytes the session already persisted) and dropping what would take
        the session past `limit` bytes."""
        r, buf = req.reader, req.body_buffer()
        while not r.done:
            d = r.read_view(buf)
            if skip > 0:
                cut = min(skip, len(d))
                d = d[cut:]
                skip -= cut
            if limit is not None:
                d = d[:max(0, limit - w.size)]
            w.write(d)

    def _session_rest(self, req, s, start, total):
        """`Content-Range: bytes START-*/TOTAL|*`: the request body is the
        rest of the object, so the upload ends with this request."""
        w = s['writer']
        if start > w.size:
            raise ApiError(400, 'Invalid request. Content-Range starts at %d but only %d bytes have been '
                                'persisted.' % (start, w.size), reason='invalid')
        self._session_write(req, w, w.size - start)
        if total is not None and w.size != total:
            if w.size > total:
                raise ApiError(400, 'Upload of %d bytes exceeds the declared total %d' % (w.size, total),
                               reason='invalid')
            return self._308(req, w.size)
        if s['declared'] is not None and w.size != s['declared']:
            return self._308(req, w.size)
        return self._session_finish(req, s)

    def _308(self, req, persisted):
        """Resume Incomplete.  With `X-GUploader-No-308: yes` GCS answers 200
        and puts the real status in X-Http-Status-Code-Override (clients
        whose HTTP stack treats 308 as a redirect ask for this)."""
        headers = [('Range', 'bytes=0-%d' % (persisted - 1))] if persisted else []
        if (req.header('X-GUploader-No-308') or '').strip().lower() == 'yes':
            headers.append(('X-Http-Status-Code-Override', '308'))
            return Response(200, b'', 'text/plain; charset=utf-8', headers)
        return Response(308, b'', 'text/plain; charset=utf-8', headers)

    def _session_finish(self, req, s):
        o = self._commit(req, s['bucket'], s['name'], s['writer'].finish(), s['ctype'], s['meta'], s['pre'],
                         expect=_goog_hash(req))
        s['result'] = o
        return json_response(o.resource(req.base_url))

    # ---- XML API multipart upload ----------------------------------------------
    def xml_bucket(self, req, bucket):
        """GET /BUCKET?uploads: ListMultipartUploadsResult (the uploads
        begun and neither completed nor aborted), optional `prefix`."""
        if 'uploads' not in req.query:
            raise ApiError(400, 'Unsupported XML API request', body=_xml_error('InvalidArgument', 'Only ?uploads '
                           'is implemented on a bucket.'), content_type='application/xml; charset=UTF-8')
        prefix = req.q('prefix') or ''
        with self.lock:
            try:
                self._bucket(bucket)
            except ApiError as e:
                raise ApiError(404, e.message, body=_xml_error('NoSuchBucket', e.message),
                               content_type='application/xml; charset=UTF-8')
            ups = sorted((u['name'], uid, u.get('t', 0)) for uid, u in self.xml_uploads.items()
                         if u['bucket'] == bucket and u['name'].startswith(prefix))
        items = [('Bucket', bucket), ('Prefix', prefix), ('IsTruncated', 'false')]
        for name, uid, t in ups:
            items.append(('Upload', [('Key', name), ('UploadId', uid), ('Initiated', _rfc3339(t))]))
        return _xml_resp('ListMultipartUploadsResult', items)

    def xml(self, req, bucket, name):
        try:
            return self._xml(req, bucket, name)
        except ApiError as e:
            if e.body is None:
                code = {404: 'NoSuchKey', 400: 'InvalidArgument', 412: 'PreconditionFailed'}.get(e.code, 'InternalError')
                if e.code == 404 and e.message == BUCKET_404:
                    code = 'NoSuchBucket'
                e.body = _xml_error(code, e.message)
                e.content_type = 'application/xml; charset=UTF-8'
            raise

    def _xml(self, req, bucket, name):
        q = req.query
        if req.method == 'POST' and 'uploads' in q:
            uid = 'gfake-' + secrets.token_urlsafe(24)
            with self.lock:
                self._bucket(bucket)
                self.xml_uploads[uid] = {'bucket': bucket, 'name': name, 'parts': {}, 't': time.time(),
                                         'ctype': req.header('Content-Type') or 'application/octet-stream',
                                         'meta': {k[12:].lower(): v for k, v in req.headers.items()
                                                  if k.lower().startswith('x-goog-meta-')}}
            return _xml_resp('InitiateMultipartUploadResult', [('Bucket', bucket), ('Key', name), ('UploadId', uid)])
        uid = req.q('uploadId')
        if uid is None:
            if req.method == 'GET':
                with self.lock:
                    o = self._get_obj(bucket, name)
                return Response(200, o.blob.body(), o.content_type, [('x-goog-hash', o.hash_header())])
            if req.method == 'PUT':
                w = self._writer()
                self._drain_into(req, w)
                blob = w.finish()
                _xml_check_digest(blob, _goog_hash(req))
                o = self._commit(req, bucket, name, blob, req.header('Content-Type'), {}, {})
                return Response(200, b'', None, [('ETag', _xml_etag(o.blob)),
                                                 ('x-goog-generation', str(o.generation))])
            raise ApiError(400, 'Unsupported XML API request')
        with self.lock:
            up = self.xml_uploads.get(uid)
        if up is None or up['bucket'] != bucket or up['name'] != name:
            raise _no_such_upload()
        if req.method == 'PUT':
            try:
                pn = int(req.q('partNumber'))
            except (TypeError, ValueError):
                raise ApiError(400, 'partNumber required')
            if not 1 <= pn <= 10000:
                raise ApiError(400, 'Part number must be an integer between 1 and 10000, inclusive')
            w = self._writer()
            self._drain_into(req, w)
            blob = w.finish()
            _xml_check_digest(blob, _goog_hash(req))
            etag = _xml_etag(blob)
            with self.lock:
                # completed or aborted while this part came in: its parts
                # are an object's now, or gone
                live = self.xml_uploads.get(uid) is up
                if live:
                    old = up['parts'].get(pn)
                    up['parts'][pn] = (blob, etag, time.time())
            if not live:
                blob.discard()
                raise _no_such_upload()
            if old:
                old[0].discard()
            return Response(200, b'', None, [('ETag', etag)])
        if req.method == 'GET':
            items = [('Bucket', bucket), ('Key', name), ('UploadId', uid)]
            with self.lock:
                for pn in sorted(up['parts']):
                    blob, etag, t = up['parts'][pn]
                    items.append(('Part', [('PartNumber', str(pn)), ('LastModified', _rfc3339(t)),
                                           ('ETag', etag), ('Size', str(blob.size))]))
            return _xml_resp('ListPartsResult', items)
        if req.method == 'DELETE':
            with self.lock:
                gone = self.xml_uploads.pop(uid, None)
            if gone is None:   # completed or aborted meanwhile: its parts are not ours to drop
                raise _no_such_upload()
            for blob, _, _ in gone['parts'].values():
                blob.discard()
            return Response(204)
        if req.method == 'POST':
            body = req.reader.read_all()
            try:
                root = ET.fromstring(body)
            except ET.ParseError:
                raise ApiError(400, 'malformed XML', body=_xml_error('MalformedXML', 'The XML you provided '
                               'was not well-formed.'), content_type='application/xml; charset=UTF-8')
            wanted = []
            for p in root.iter():
                if p.tag.split('}')[-1] == 'Part':
                    pn = et = None
                    for c in p:
                        t = c.tag.split('}')[-1]
                        if t == 'PartNumber':
                            pn = int(c.text)
                        elif t == 'ETag':
                            et = (c.text or '').strip()
                    wanted.append((pn, et))
            if not wanted:
                raise ApiError(400, 'no parts', body=_xml_error('MalformedXML', 'No parts specified.'),
                               content_type='application/xml; charset=UTF-8')
            if [pn for pn, _ in wanted] != sorted(set(pn for pn, _ in wanted)):
                raise ApiError(400, 'order', body=_xml_error('InvalidPartOrder', 'The list of parts was not in '
                               'ascending order.'), content_type='application/xml; charset=UTF-8')
            md5s = b''
            blobs = []
            crc = 0
            with self.lock:
                # taken out while it completes: a second complete, an abort
                # or a part PUT meanwhile finds no upload (404), so no two
                # objects share its parts and none is discarded under one
                if self.xml_uploads.get(uid) is not up:
                    raise _no_such_upload()
                parts = dict(up['parts'])
                for pn, et in wanted:
                    part = parts.get(pn)
                    if part is None or part[1].strip('"') != (et or '').strip('"'):
                        raise ApiError(400, 'part', body=_xml_error('InvalidPart', 'One or more of the specified '
                                       'parts could not be found or the ETag did not match.'),
                                       content_type='application/xml; charset=UTF-8')
                    blobs.append(part[0])
                    crc = crcmod.crc32c_combine(crc, part[0].crc, part[0].size)
                    md5s += part[0].md5 or part[1].encode()
                del self.xml_uploads[uid]
            blob = CompositeBlob(blobs, crc)
            try:
                o = self._commit(req, bucket, name, blob, up['ctype'], {'metadata': up['meta']} if up['meta'] else {},
                                 {})
            except Exception:
                with self.lock:   # refused (a precondition, no bucket): the upload is still there
                    self.xml_uploads[uid] = up
                raise
            blob.owns = True
            o.component_count = len(wanted)
            used = set(pn for pn, _ in wanted)
            for pn, (b, _, _) in parts.items():
                if pn not in used:
                    b.discard()
            etag = '"%s-%d"' % (hashlib.md5(md5s).hexdigest(), len(wanted))
            return _xml_resp('CompleteMultipartUploadResult',
                             [('Location', '%s/xml/%s/%s' % (req.base_url, bucket, urllib.parse.quote(name))),
                              ('Bucket', bucket), ('Key', name), ('ETag', etag)],
                             headers=[('x-goog-generation', str(o.generation)), ('x-goog-hash', o.hash_header())])
        raise ApiError(400, 'Unsupported XML API request')


def _xml_etag(blob):
    """The ETag of an XML upload (an object or a part): its MD5 in hex, or
    with storage_md5 off, its CRC-32C and size."""
    if blob.md5 is not None:
        return '"%s"' % blob.md5.hex()
    return '"%08x%x"' % (blob.crc, blob.size)


def _no_such_upload():
    return ApiError(404, 'The requested upload was not found.',
                    body=_xml_error('NoSuchUpload', 'The requested upload was not found.'),
                    content_type='application/xml; charset=UTF-8')


def _xml_check_digest(blob, want):
    """XML API uploads (PUT object, upload part) check X-Goog-Hash: a
    mismatch is 400 BadDigest and nothing is kept."""
    bad = None
    if want.get('crc32c') and want['crc32c'] != crcmod.b64(blob.crc):
        bad = 'CRC32C'
    elif want.get('md5Hash') and blob.md5 is not None and want['md5Hash'] != base64.b64encode(blob.md5).decode():
        bad = 'MD5'
    if bad:
        blob.discard()
        raise ApiError(400, 'bad digest', body=_xml_error('BadDigest', 'The %s you specified did not match what we '
                                                                       'computed.' % bad),
                       content_type='application/xml; charset=UTF-8')


def _xml_items(items):
    out = []
    for k, v in items:
        if isinstance(v, list):
            out.append('<%s>%s</%s>' % (k, _xml_items(v), k))
        else:
            out.append('<%s>%s</%s>' % (k, _xml_escape(v), k))
    return ''.join(out)


def _xml_escape(s):
    return str(s).replace('&', '&amp;').replace('<', '&lt;').replace('>', '&gt;').replace('"', '&quot;')


def _xml_resp(root, items, headers=None):
    body = "<?xml version='1.0' encoding='UTF-8'?><%s xmlns='http://s3.amazonaws.com/doc/2006-03-01/'>%s</%s>" % (
        root, _xml_items(items), root)
    return Response(200, body.encode(), 'application/xml; charset=UTF-8', headers)


def _xml_error(code, message):
    return ("<?xml version='1.0' encoding='UTF-8'?><Error><Code>%s</Code><Message>%s</Message></Error>"
            % (code, _xml_escape(message))).encode()


def _glob_re(glob):
    """matchGlob (cloud.google.com/storage/docs/json_api/v1/objects/list#list-objects-and-prefixes-using-glob):
    `*` any run without `/`, `**` any run, `**/` zero or more folders, `?`
    one character but `/`, `[...]` / `[!...]` a class, `{a,b}` alternatives."""
    out, i, depth = [], 0, 0
    while i < len(glob):
        c = glob[i]
        if glob.startswith('**/', i):
            out.append('(?:.*/)?')
            i += 3
            continue
        if glob.startswith('**', i):
            out.append('.*')
            i += 2
            continue
        if c == '*':
            out.append('[^/]*')
        elif c == '?':
            out.append('[^/]')
        elif c == '[':
            j = glob.find(']', i + 2)
            if j < 0:
                raise ApiError(400, 'Invalid matchGlob: %s' % glob, reason='invalid')
            body = glob[i + 1:j]
            if body.startswith('!'):
                body = '^' + body[1:]
            out.append('[' + body.replace('\\', '\\\\') + ']')
            i = j
        elif c == '{':
            out.append('(?:')
            depth += 1
        elif c == '}' and depth:
            out.append(')')
            depth -= 1
        elif c == ',' and depth:
            out.append('|')
        else:
            out.append(re.escape(c))
        i += 1
    if depth:
        raise ApiError(400, 'Invalid matchGlob: %s' % glob, reason='invalid')
    try:
        return re.compile(''.join(out), re.S)
    except re.error:
        raise ApiError(400, 'Invalid matchGlob: %s' % glob, reason='invalid')


def _parse_fields(text, i=0):
    """`fields` partial-response syntax → nested dict (None = whole value):
    `a,b/c,items(name,size)`."""
    sel = {}
    while i < len(text):
        m = re.compile(r'\s*([A-Za-z0-9_*]+(?:/[A-Za-z0-9_*]+)*)\s*').match(text, i)
        if not m:
            raise ApiError(400, 'Invalid field selection %s' % text, reason='invalidParameter')
        path = m.group(1).split('/')
        i = m.end()
        sub = None
        if i < len(text) and text[i] == '(':
            sub, i = _parse_fields(text, i + 1)
            if i >= len(text) or text[i] != ')':
                raise ApiError(400, 'Invalid field selection %s' % text, reason='invalidParameter')
            i += 1
        node = sel
        for k in path[:-1]:
            node = node.setdefault(k, {}) or node.setdefault(k, {})
        node[path[-1]] = sub
        if i < len(text) and text[i] == ',':
            i += 1
        elif i < len(text) and text[i] == ')':
            return sel, i
    return sel, i


def _select(obj, sel):
    if sel is None:
        return obj
    if isinstance(obj, list):
        return [_select(x, sel) for x in obj]
    if not isinstance(obj, dict):
        return obj
    if '*' in sel:
        return obj
    return {k: _select(obj[k], sub) for k, sub in sel.items() if k in obj}


def _fields(req, obj):
    """Apply the `fields` query parameter (partial response) to a JSON answer."""
    f = req.q('fields')
    if not f:
        return obj
    sel, i = _parse_fields(f)
    if i != len(f):
        raise ApiError(400, 'Invalid field selection %s' % f, reason='invalidParameter')
    return _select(obj, sel)


def _goog_hash(req):
    """X-Goog-Hash: crc32c=B64,md5=B64 (either or both) as {'crc32c', 'md5Hash'}."""
    want = {}
    for h in req.headers.get_all('X-Goog-Hash') or []:      # one header, or one per hash
        for item in h.split(','):
            k, _, v = item.strip().partition('=')
            if k.lower() == 'crc32c':
                want['crc32c'] = v.strip()
            elif k.lower() == 'md5':
                want['md5Hash'] = v.strip()
    return want


def _split_multipart(body, boundary):
    """multipart/related (RFC 2046 5.1.1) → [(headers dict lower-cased, payload bytes)].

    Each delimiter is CRLF "--" boundary; the CRLF before it belongs to the
    delimiter, not to the data.  After the delimiter line come the part's
    header fields and an empty line, and the body follows it: a part with no
    header fields starts with that empty line at once (Google's Go client
    sends its media part so).  Line ends may be bare LF (lenient, as most
    parsers are), but the data itself is never searched for a blank line.
    """
    delim = b'--' + boundary
    parts = []
    pos = body.find(delim)
    if pos < 0:
        raise ApiError(400, 'Multipart boundary not found in body', reason='invalid')
    while True:
        pos += len(delim)
        if body[pos:pos + 2] == b'--':
            break
        eol = body.find(b'\n', pos)          # end of the delimiter line (transport padding allowed)
        if eol < 0:
            raise ApiError(400, 'Unterminated multipart body', reason='invalid')
        pos = eol + 1
        nxt = body.find(b'\r\n' + delim, pos)
        sep = 2
        if nxt < 0:
            nxt = body.find(b'\n' + delim, pos)
            sep = 1
            if nxt < 0:
                raise ApiError(400, 'Unterminated multipart body', reason='invalid')
        chunk = body[pos:nxt]
        hdrs = {}
        i = 0
        while True:                           # header lines up to the empty line
            e = chunk.find(b'\n', i)
            if e < 0:
                raise ApiError(400, 'Multipart part without the empty line after its headers',
                               reason='invalid')
            line = chunk[i:e].rstrip(b'\r')
            i = e + 1
            if not line:
                break
            if b':' not in line:
                raise ApiError(400, 'Malformed multipart part header', reason='invalid')
            k, v = line.split(b':', 1)
            hdrs[k.strip().decode('latin-1').lower()] = v.strip().decode('latin-1')
        parts.append((hdrs, chunk[i:]))
        pos = nxt + sep
    return parts


def install(app):
    st = Storage(app)
    app.storage = st
    app.add_module(st)
    r = app.route
    kw = dict(api=API, style='v1')
    r('POST', r'/storage/v1/b', st.bucket_insert, method_id='storage.buckets.insert', **kw)
    r('PUT', B, st.bucket_put, **kw)
    r('GET', B, st.bucket_get, method_id='storage.buckets.get', **kw)
    r('GET', B + r'/iam/testPermissions', st.bucket_test_iam, method_id='storage.buckets.testIamPermissions', **kw)
    r('DELETE', B, st.bucket_delete, method_id='storage.buckets.delete', **kw)
    r('GET', B + r'/o', st.object_list, method_id='storage.objects.list', **kw)
    r('POST', B + r'/o/(.+)/compose', st.compose, method_id='storage.objects.compose', **kw)
    r('GET', B + r'/o/(.+)', st.object_get, method_id='storage.objects.get', **kw)
    r('GET', r'/download/storage/v1/b/([^/]+)/o/(.+)', st.object_get, **kw)
    r('DELETE', B + r'/o/(.+)', st.object_delete, method_id='storage.objects.delete', **kw)
    r('PATCH', B + r'/o/(.+)', st.object_patch, method_id='storage.objects.patch', **kw)
    r('POST', B + r'/o/(.+)/copyTo/b/([^/]+)/o/(.+)', st.object_copy, method_id='storage.objects.copy', **kw)
    r('POST', B + r'/o/(.+)/rewriteTo/b/([^/]+)/o/(.+)', st.object_rewrite, method_id='storage.objects.rewrite',
      **kw)
    r('POST', r'/_fake/storage/buckets', st.ctl_bucket_create, auth=False)
    r('POST|PUT|DELETE', r'/upload/storage/v1/b/([^/]+)/o', st.upload, stream=True, **kw)
    r('POST|PUT|DELETE', r'/resumable/upload/storage/v1/b/([^/]+)/o', st.upload, stream=True, **kw)
    r('GET|PUT|POST|DELETE', r'/xml/([^/]+)/(.+)', st.xml, stream=True, style='xml')
    r('GET', r'/xml/([^/]+)/?', st.xml_bucket, style='xml')
