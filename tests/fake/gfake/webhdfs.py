"""WebHDFS REST (Hadoop 3 NameNode + DataNode redirect) for the files the
tests seed with ``POST /_fake/webhdfs/seed``.

Seeding: ``{"path": "/a/b", "data_b64": "..."}`` or ``{"path": ..., "size": N,
"seed": K}``.  Generated content is reproducible outside the fake:
P = SHA-256(b"gfake:K:0") || SHA-256(b"gfake:K:1") || ... truncated to
65521 bytes (a prime, so the pattern never lines up with block sizes), and
byte i of the file is P[i % 65521].  Files of any size cost 64 KiB of memory.

Directories exist implicitly above every seeded file.  No auth (a
non-Kerberos cluster with ``user.name=`` is what the daemon meets); errors are
WebHDFS RemoteException JSON.
"""
import base64
import hashlib
import itertools
import json
import threading
import time
import urllib.parse

from .server import ApiError, Response, json_response

PATTERN_LEN = 65521
_FILE_IDS = itertools.count(16386)


def pattern(seed):
    out = bytearray()
    j = 0
    while len(out) < PATTERN_LEN:
        out += hashlib.sha256(b'gfake:%d:%d' % (seed, j)).digest()
        j += 1
    return bytes(out[:PATTERN_LEN])


class HFile:
    def __init__(self, data=None, size=None, seed=None):
        self.data = data
        self.size = len(data) if data is not None else size
        self.pat = pattern(seed) if data is None else None
        self.mtime = int(time.time() * 1000)
        # the inode id, as HDFS gives it: the same in GETFILESTATUS and
        # LISTSTATUS, a new one for a file created again
        self.file_id = next(_FILE_IDS)

    def read(self, offset, length):
        end = min(self.size, offset + length)
        if offset >= end:
            return b''
        if self.data is not None:
            return self.data[offset:end]
        p = self.pat
        start = offset % PATTERN_LEN
        n = end - offset
        reps = (start + n) // PATTERN_LEN + 1
        return (p * reps)[start:start + n] if reps < 64 else self._read_big(start, n)

    def _read_big(self, start, n):
        out = bytearray(self.pat[start:])
        while len(out) < n:
            out += self.pat
        return bytes(out[:n])


class PatternBody:
    def __init__(self, f, offset, length):
        self.f = f
        self.offset = offset
        self.size = length

    def write_to(self, wfile, sock):
        pos, end = self.offset, self.offset + self.size
        while pos < end:
            n = min(4 << 20, end - pos)
            wfile.write(self.f.read(pos, n))
            pos += n


def _remote(code, exc, msg):
    body = {'RemoteException': {'exception': exc, 'javaClassName': 'java.io.' + exc if exc == 'FileNotFoundException'
                                else 'java.lang.' + exc, 'message': msg}}
    return ApiError(code, msg, body=json.dumps(body).encode())


class WebHdfs:
    def __init__(self, app):
        self.app = app
        self.lock = threading.Lock()
        self.reset()

    def reset(self):
        with self.lock:
            self.files = {}

    @staticmethod
    def _norm(path):
        path = '/' + (path or '').strip('/')
        return path

    def seed(self, req):
        b = req.json()
        path = b.get('path')
        if not path or not path.startswith('/'):
            raise ApiError(400, 'path must be absolute')
        if 'data_b64' in b:
            f = HFile(data=base64.b64decode(b['data_b64']))
        elif 'size' in b:
            f = HFile(size=int(b['size']), seed=int(b.get('seed', 0)))
        else:
            raise ApiError(400, 'data_b64 or size required')
        with self.lock:
            self.files[self._norm(path)] = f
        return json_response({'path': self._norm(path), 'length': f.size})

    def _status(self, name, path):
        with self.lock:
            f = self.files.get(path)
            if f is not None:
                return self._fstat(name, f)
            pre = '/' if path == '/' else path + '/'
            kids = [p for p in self.files if p.startswith(pre)]
            if not kids and path != '/':
                return None
            return self._dstat(name, len({p[len(pre):].split('/')[0] for p in kids}))

    def _fstat(self, name, f):
        return {'accessTime': f.mtime, 'blockSize': 134217728, 'childrenNum': 0, 'fileId': f.file_id,
                'group': 'supergroup', 'length': f.size, 'modificationTime': f.mtime, 'owner': 'hdfs',
                'pathSuffix': name, 'permission': '644', 'replication': 3, 'storagePolicy': 0, 'type': 'FILE'}

    def _dstat(self, name, children):
        return {'accessTime': 0, 'blockSize': 0, 'childrenNum': children, 'fileId': 16385 + (hash(name) & 0xffff),
                'group': 'supergroup', 'length': 0, 'modificationTime': int(time.time() * 1000), 'owner': 'hdfs',
                'pathSuffix': name, 'permission': '755', 'replication': 0, 'storagePolicy': 0, 'type': 'DIRECTORY'}

    def namenode(self, req, path):
        path = self._norm(path)
        op = (req.q('op') or '').upper()
        if op == 'GETFILESTATUS':
            st = self._status('', path)
            if st is None:
                raise _remote(404, 'FileNotFoundException', 'File does not exist: %s' % path)
            return json_response({'FileStatus': st})
        if op == 'LISTSTATUS':
            st = self._status('', path)
            if st is None:
                raise _remote(404, 'FileNotFoundException', 'File %s does not exist.' % path)
            if st['type'] == 'FILE':
                return json_response({'FileStatuses': {'FileStatus': [st]}})
            pre = '/' if path == '/' else path + '/'
            with self.lock:
                names = sorted({p[len(pre):].split('/')[0] for p in self.files if p.startswith(pre)})
            out = [self._status(n, pre + n) for n in names]
            return json_response({'FileStatuses': {'FileStatus': out}})
        if op == 'OPEN':
            with self.lock:
                f = self.files.get(path)
            if f is None:
                if self._status('', path) is not None:
                    raise _remote(400, 'FileNotFoundException',
                                  'Path is not a file: %s' % path)
                raise _remote(404, 'FileNotFoundException', 'File does not exist: %s' % path)
            offset, length = self._range(req, f)
            qs = {'op': 'OPEN', 'namenoderpcaddress': 'fake-nn:8020', 'offset': str(offset)}
            if req.q('length') is not None:
                qs['length'] = str(length)
            if req.q('user.name'):
                qs['user.name'] = req.q('user.name')
            loc = '%s/datanode/webhdfs/v1%s?%s' % (req.base_url, urllib.parse.quote(path),
                                                    urllib.parse.urlencode(qs))
            return Response(307, b'', 'application/octet-stream', [('Location', loc)])
        raise _remote(400, 'IllegalArgumentException', 'Invalid value for webhdfs parameter "op": '
                      'No enum constant org.apache.hadoop.hdfs.web.resources.GetOpParam.Op.%s' % op)

    def _range(self, req, f):
        try:
            offset = int(req.q('offset') or 0)
            length = req.q('length')
            length = int(length) if length is not None else f.size - offset
        except ValueError:
            raise _remote(400, 'IllegalArgumentException', 'Invalid offset/length')
        if offset < 0 or length < 0:
            raise _remote(400, 'IllegalArgumentException', 'Invalid offset/length')
        if offset > f.size:
            raise _remote(403, 'IOException', 'Offset=%d out of the range [0, %d); OPEN, path=...' % (offset, f.size))
        return offset, max(0, min(length, f.size - offset))

    def datanode(self, req, path):
        path = self._norm(path)
        if (req.q('op') or '').upper() != 'OPEN':
            raise _remote(400, 'IllegalArgumentException', 'datanode supports op=OPEN only')
        with self.lock:
            f = self.files.get(path)
        if f is None:
            raise _remote(404, 'FileNotFoundException', 'File does not exist: %s' % path)
        offset, length = self._range(req, f)
        return Response(200, PatternBody(f, offset, length), 'application/octet-stream')


def install(app):
    w = WebHdfs(app)
    app.webhdfs = w
    app.add_module(w)
    app.route('GET', r'/webhdfs/v1(/.*)?', w.namenode, auth=False, style='webhdfs')
    app.route('GET', r'/datanode/webhdfs/v1(/.*)?', w.datanode, auth=False, style='webhdfs')
    app.route('POST', r'/_fake/webhdfs/seed', w.seed, auth=False)
