"""HTTP/1.1 server, routing, auth gate, request log and fault injection.

Every service module registers its routes on the App with ``app.route(...)``
(see ``install`` in each module); ``App.modules`` lists the modules that get
a ``reset()`` call from ``POST /_fake/reset``.  A service is one module
listed in ``gfake.SERVICES``, with ``install(app)`` and a ``CONFIG`` dict
of its ``/_fake/config`` keys (``App.declare_config``);
``App.config_hooks`` are called after ``POST /_fake/config``.
"""
import base64
import email.utils
import http.server
import json
import random
import re
import socket
import socketserver
import ssl
import struct
import sys
import threading
import time
import urllib.parse

# google.rpc.Code names for HTTP statuses (AIP-193).
STATUS_NAMES = {
    400: 'INVALID_ARGUMENT', 401: 'UNAUTHENTICATED', 403: 'PERMISSION_DENIED',
    404: 'NOT_FOUND', 408: 'DEADLINE_EXCEEDED', 409: 'ALREADY_EXISTS',
    412: 'FAILED_PRECONDITION', 413: 'INVALID_ARGUMENT', 429: 'RESOURCE_EXHAUSTED',
    499: 'CANCELLED', 500: 'INTERNAL', 501: 'UNIMPLEMENTED', 502: 'UNAVAILABLE',
    503: 'UNAVAILABLE', 504: 'DEADLINE_EXCEEDED',
}
# v1-style (Storage, BigQuery) errors[].reason for HTTP statuses.
V1_REASONS = {
    400: 'invalid', 401: 'required', 403: 'forbidden', 404: 'notFound',
    408: 'requestTimeout', 409: 'conflict', 412: 'conditionNotMet',
    429: 'rateLimitExceeded', 499: 'cancelled', 500: 'backendError',
    501: 'notImplemented', 502: 'badGateway', 503: 'backendError',
    504: 'backendError',
}

LOG_BODY_LIMIT = 64 * 1024
BODY_PIECE = 1 << 20         # a streamed upload is read this much at a time
MAX_LOG_ENTRIES = 10000


class ApiError(Exception):
    """An error answer.  Rendered in the route's error style."""

    def __init__(self, code, message, reason=None, status=None, details=None,
                 headers=None, body=None, content_type=None):
        super().__init__(message)
        self.code = code
        self.message = message
        self.reason = reason
        self.status = status
        self.details = details
        self.headers = headers or []
        self.body = body                # pre-rendered body (OAuth, XML, WebHDFS)
        self.content_type = content_type


def google_error_body(code, message, style='google', reason=None, status=None, details=None):
    err = {'code': code, 'message': message}
    if style == 'v1':
        err['errors'] = [{'domain': 'global', 'reason': reason or V1_REASONS.get(code, 'backendError'),
                          'message': message}]
    else:
        err['status'] = status or STATUS_NAMES.get(code, 'UNKNOWN')
        if details:
            err['details'] = details
    return json.dumps({'error': err}).encode()


class Response:
    """status, headers (list of pairs) and a body.

    body is bytes, or an object with ``size`` and ``write_to(wfile, sock)``
    for streamed downloads."""

    def __init__(self, status=200, body=b'', content_type=None, headers=None):
        self.status = status
        self.headers = list(headers or [])
        if isinstance(body, (dict, list)):
            body = json.dumps(body).encode()
            content_type = content_type or 'application/json; charset=UTF-8'
        elif isinstance(body, str):
            body = body.encode()
        self.body = body
        if content_type:
            self.headers.append(('Content-Type', content_type))

    @property
    def length(self):
        return len(self.body) if isinstance(self.body, (bytes, bytearray)) else self.body.size


def json_response(obj, status=200, headers=None):
    return Response(status, obj if obj is not None else {}, 'application/json; charset=UTF-8', headers)


class Route:
    def __init__(self, methods, pattern, handler, method_id=None, auth=True,
                 style='google', stream=False, api=None):
        self.methods = set(methods.split('|')) if isinstance(methods, str) else set(methods)
        self.regex = re.compile(pattern + r'\Z')
        self.handler = handler
        self.method_id = method_id      # discovery id, e.g. pubsub.projects.topics.publish
        self.api = api                  # discovery doc name, e.g. 'pubsub-v1'
        self.auth = auth
        self.style = style
        self.stream = stream


class BodyReader:
    """Reads a request body (Content-Length or chunked) incrementally and
    keeps the first LOG_BODY_LIMIT bytes for the request log."""

    def __init__(self, rfile, length, chunked):
        self.rfile = rfile
        self.remaining = length
        self.chunked = chunked
        self.chunk_left = 0
        self.done = (not chunked and not length)
        self.total = 0
        self.head = bytearray()

    def _note(self, data):
        self.total += len(data)
        if len(self.head) < LOG_BODY_LIMIT:
            self.head += data[:LOG_BODY_LIMIT - len(self.head)]
        return data

    def read(self, n=1 << 20):
        if self.done:
            return b''
        if not self.chunked:
            data = self.rfile.read(min(n, self.remaining))
            if not data:
                raise ConnectionError('client closed during body')
            self.remaining -= len(data)
            if self.remaining <= 0:
                self.done = True
            return self._note(data)
        if self.chunk_left == 0:
            line = self.rfile.readline(65537)
            if not line:
                raise ConnectionError('client closed during chunked body')
            size = int(line.split(b';')[0].strip() or b'0', 16)
            if size == 0:
                while True:                 # trailers
                    line = self.rfile.readline(65537)
                    if line in (b'\r\n', b'\n', b''):
                        break
                self.done = True
                return b''
            self.chunk_left = size
        data = self.rfile.read(min(n, self.chunk_left))
        if not data:
            raise ConnectionError('client closed during chunked body')
        self.chunk_left -= len(data)
        if self.chunk_left == 0:
            self.rfile.readline(3)          # CRLF after chunk data
        return self._note(data)

    def read_view(self, buf):
        """The next piece of the body, read into buf (a bytearray the
        caller reuses): a memoryview of buf that is valid until the next
        call.  A Content-Length body fills buf whole with one readinto(),
        which loops in C, so an upload costs neither a fresh 8 MiB bytes
        object per piece (an mmap and its page faults each time) nor a
        Python-level step per recv().  A chunked body goes through read()."""
        if self.done or self.chunked:
            d = self.read(len(buf))
            return memoryview(d)
        mv = memoryview(buf)[:min(len(buf), self.remaining)]
        n = self.rfile.readinto(mv)
        if not n:
            raise ConnectionError('client closed during body')
        self.remaining -= n
        if self.remaining <= 0:
            self.done = True
        return self._note(mv[:n])

    def read_all(self):
        parts = []
        while not self.done:
            d = self.read(8 << 20)
            if d:
                parts.append(d)
        return b''.join(parts)

    def drain(self):
        while not self.done:
            self.read(8 << 20)


class Request:
    def __init__(self, app, handler, method, target):
        self.app = app
        self.handler = handler
        self.method = method
        self.target = target
        split = urllib.parse.urlsplit(target)
        self.path = split.path
        self.query_string = split.query
        self.query = urllib.parse.parse_qs(split.query, keep_blank_values=True)
        self.headers = handler.headers
        self.body = b''
        self.reader = None
        self._json = None
        self.match = None
        self.route = None

    def body_buffer(self):
        """This connection's buffer for BodyReader.read_view(): one per
        handler thread, kept across its requests."""
        buf = getattr(self.handler, 'body_buf', None)
        if buf is None:
            buf = self.handler.body_buf = bytearray(BODY_PIECE)
        return buf

    def q(self, name, default=None):
        v = self.query.get(name)
        return v[0] if v else default

    def header(self, name, default=None):
        return self.headers.get(name, default)

    @property
    def host(self):
        return self.headers.get('Host') or '%s:%d' % (self.app.bind, self.app.port)

    @property
    def base_url(self):
        return '%s://%s' % ('https' if self.app.tls else 'http', self.host)

    def json(self):
        if self._json is None:
            if not self.body.strip():
                self._json = {}
            else:
                try:
                    self._json = json.loads(self.body)
                except ValueError as e:
                    raise ApiError(400, 'Invalid JSON payload received. %s' % e)
        return self._json


class App:
    def __init__(self, bind='127.0.0.1', quiet=False, reference_dir=None, tls=False):
        self.bind = bind
        self.port = 0
        self.quiet = quiet
        self.tls = tls
        self.reference_dir = reference_dir
        self.routes = []
        self.modules = []
        self.lock = threading.RLock()
        self.log_lock = threading.Lock()
        self.requests = []
        self.faults = []
        self.config = {}                # key -> value; keys come from each service's CONFIG
        self.config_types = {}          # key -> (accepted types, owning service)
        self.discovery = None           # set by gfake.build_app
        self.config_hooks = []          # fn(app.config), called after /_fake/config changes it

    def declare_config(self, service, keys):
        """Add a service's /_fake/config keys: {name: (type or tuple of types,
        default)}.  A key declared twice is a programming error."""
        for k, (types, default) in keys.items():
            if k in self.config_types:
                raise ValueError('config key %r is declared by both %s and %s'
                                 % (k, self.config_types[k][1], service))
            self.config_types[k] = (types, service)
            self.config[k] = default

    def config_changed(self):
        for fn in self.config_hooks:
            fn(self.config)

    # ---- registry ---------------------------------------------------------
    def route(self, methods, pattern, handler, **kw):
        self.routes.append(Route(methods, pattern, handler, **kw))

    def add_module(self, module):
        self.modules.append(module)

    def reset(self):
        with self.lock:
            for m in self.modules:
                m.reset()
            self.faults.clear()
        with self.log_lock:
            self.requests.clear()

    def find_route(self, method, path):
        allowed = False
        for r in self.routes:
            m = r.regex.match(path)
            if m:
                if method in r.methods or (method == 'HEAD' and 'GET' in r.methods):
                    return r, m
                allowed = True
        return None, allowed

    # ---- faults -----------------------------------------------------------
    def take_fault(self, req):
        if req.path.startswith('/_fake/'):
            return None
        target = req.target
        with self.lock:
            for f in self.faults:
                if f.get('method') and f['method'].upper() != req.method:
                    continue
                if f.get('path_regex') and not re.search(f['path_regex'], target):
                    continue
                if random.random() >= float(f.get('rate', 1.0)):
                    continue
                if f.get('count') is not None:
                    f['count'] -= 1
                    if f['count'] <= 0:
                        self.faults.remove(f)
                return dict(f)
        return None

    # ---- request log ------------------------------------------------------
    def log_request(self, req, status, cut=False):
        if req.path.startswith('/_fake/'):
            return
        if req.reader is not None:
            head, size = bytes(req.reader.head), req.reader.total
        else:
            head, size = req.body[:LOG_BODY_LIMIT], len(req.body)
        headers = {}
        for k, v in req.headers.items():
            if k.lower() == 'authorization':
                v = v[:12]
            headers[k] = v
        entry = {'time': time.time(), 'method': req.method, 'path': req.path,
                 'query': req.query_string, 'headers': headers, 'status': status,
                 'size': size, 'truncated': size > len(head)}
        if cut:
            entry['cut'] = True
        try:
            entry['body'] = head.decode('utf-8')
        except UnicodeDecodeError:
            entry['body_b64'] = base64.b64encode(head).decode()
        with self.log_lock:
            self.requests.append(entry)
            if len(self.requests) > MAX_LOG_ENTRIES:
                del self.requests[:len(self.requests) - MAX_LOG_ENTRIES]


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = 'HTTP/1.1'
    server_version = 'gfake/1.0'
    rbufsize = 1 << 16

    def log_message(self, fmt, *args):
        if not self.server.app.quiet:
            sys.stderr.write('gfake: %s %s\n' % (self.address_string(), fmt % args))

    def setup(self):
        super().setup()
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def _dispatch(self):
        app = self.server.app
        req = Request(app, self, self.command, self.path)
        te = (self.headers.get('Transfer-Encoding') or '').lower()
        try:
            length = int(self.headers.get('Content-Length') or 0)
        except ValueError:
            length = 0
        reader = BodyReader(self.rfile, length, 'chunked' in te)
        route, m = app.find_route(self.command, req.path)
        req.route = route
        if route is not None and route.stream:
            req.reader = reader
        else:
            try:
                req.body = reader.read_all()
            except (ConnectionError, OSError):
                self.close_connection = True
                return
        req.match = m if route is not None else None
        style = route.style if route is not None else 'google'

        fault = app.take_fault(req)
        if fault:
            kind = fault.get('kind', 'status')
            # a latency fault answers normally afterwards: a streamed upload's
            # handler still needs its body, so it is not drained here
            if req.reader is not None and kind not in ('reset', 'latency'):
                try:
                    reader.drain()
                except (ConnectionError, OSError):
                    self.close_connection = True
                    return
            if kind == 'latency':
                time.sleep(float(fault.get('latency_ms', 0)) / 1000.0)
            elif kind == 'reset':
                app.log_request(req, 0)
                self._reset()
                return
            elif kind == 'status':
                code = int(fault.get('status', 503))
                headers = []
                if fault.get('retry_after') is not None:
                    headers.append(('Retry-After', str(fault['retry_after'])))
                elif fault.get('retry_after_date_in') is not None:
                    # an HTTP-date so many seconds after this answer (a date
                    # fixed when the fault was set would race the client)
                    headers.append(('Retry-After', email.utils.formatdate(
                        time.time() + float(fault['retry_after_date_in']), usegmt=True)))
                msg = fault.get('message') or 'Injected fault: HTTP %d' % code
                resp = Response(code, google_error_body(code, msg, style), 'application/json; charset=UTF-8', headers)
                app.log_request(req, code)
                self._send(resp)
                return
        truncate = fault is not None and fault.get('kind') == 'truncate'

        try:
            resp = self._run(app, req, route, m, style)
        except ConnectionError:   # what _run lets through; anything else became a 500
            # the client went away in the middle of a streamed body (a
            # SIGKILL, a cut transfer): logged with what had come, so a
            # test or bench can count the bytes sent for nothing
            if req.reader is not None:
                app.log_request(req, 0, cut=True)
            raise
        if req.reader is not None and not req.reader.done:
            try:
                req.reader.drain()
            except (ConnectionError, OSError):
                self.close_connection = True
                return
        app.log_request(req, resp.status)
        if truncate:
            self._send_truncated(resp)
        else:
            self._send(resp)

    def _run(self, app, req, route, m, style):
        try:
            if route is None:
                if m:
                    raise ApiError(405, 'Method %s not allowed for %s' % (req.method, req.path))
                raise ApiError(404, 'The requested URL %s was not found on this server.' % req.path)
            if route.auth:
                from . import auth
                auth.check_bearer(app, req)
            if route.method_id and route.api and not route.stream and req.body and req.method in ('POST', 'PUT', 'PATCH'):
                ctype = (req.header('Content-Type') or 'application/json').lower()
                if 'json' in ctype or req.body.lstrip()[:1] in (b'{', b'['):
                    app.discovery.validate(route.api, route.method_id, req.json())
            return route.handler(req, *[urllib.parse.unquote(g) if g is not None else None
                                        for g in m.groups()])
        except ApiError as e:
            if e.body is not None:
                hdrs = list(e.headers)
                return Response(e.code, e.body, e.content_type or 'application/json; charset=UTF-8', hdrs)
            return Response(e.code, google_error_body(e.code, e.message, style, e.reason, e.status, e.details),
                            'application/json; charset=UTF-8', e.headers)
        except (ConnectionError, BrokenPipeError):
            raise
        except Exception as e:  # a bug in the fake: say so loudly, answer 500
            import traceback
            traceback.print_exc()
            return Response(500, google_error_body(500, 'gfake internal error: %r' % e, style),
                            'application/json; charset=UTF-8')

    def _send(self, resp):
        if self.command == 'HEAD':
            self.send_response(resp.status)
            for k, v in resp.headers:
                self.send_header(k, v)
            self.send_header('Content-Length', str(resp.length))
            self.end_headers()
            return
        self.send_response(resp.status)
        for k, v in resp.headers:
            self.send_header(k, v)
        self.send_header('Content-Length', str(resp.length))
        self.end_headers()
        body = resp.body
        if isinstance(body, (bytes, bytearray)):
            if body:
                self.wfile.write(body)
        else:
            body.write_to(self.wfile, None if self.server.app.tls else self.connection)

    def _send_truncated(self, resp):
        body = resp.body if isinstance(resp.body, (bytes, bytearray)) else b'{"truncated":'
        self.send_response(resp.status)
        for k, v in resp.headers:
            self.send_header(k, v)
        self.send_header('Content-Length', str(len(body) + 100))
        self.end_headers()
        self.wfile.write(body[:len(body) // 2])
        self.wfile.flush()
        self.close_connection = True

    def _reset(self):
        self.close_connection = True
        try:
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack('ii', 1, 0))
        except OSError:
            pass
        try:
            self.connection.close()
        except OSError:
            pass

    def handle_one_request(self):
        try:
            super().handle_one_request()
        except (ConnectionError, BrokenPipeError, ssl.SSLError, socket.timeout):
            self.close_connection = True

    def __getattr__(self, name):
        if name.startswith('do_'):
            return self._dispatch
        raise AttributeError(name)


class Server(socketserver.ThreadingMixIn, http.server.HTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 128

    def __init__(self, app, addr, ssl_context=None):
        self.app = app
        self.ssl_context = ssl_context
        super().__init__(addr, Handler)

    def get_request(self):
        sock, addr = super().get_request()
        if self.ssl_context is not None:
            sock = self.ssl_context.wrap_socket(sock, server_side=True)
        return sock, addr
