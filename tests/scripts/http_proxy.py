#!/usr/bin/env python3
"""Minimal HTTP forward proxy for tests: CONNECT tunnels (for https://) and
absolute-URI plain HTTP requests. Appends one line per proxied request
("CONNECT host:port" or "METHOD url") to --log-file, so tests can count
what went through it. Standard library only.

    http_proxy.py --port 0 --port-file FILE --log-file FILE
"""
import argparse
import http.client
import http.server
import os
import select
import socket
import socketserver
import sys
import threading
import urllib.parse

HOP = {'connection', 'keep-alive', 'proxy-connection', 'proxy-authorization', 'te', 'trailers',
       'transfer-encoding', 'upgrade'}


class Proxy(http.server.BaseHTTPRequestHandler):
    protocol_version = 'HTTP/1.1'

    def log_message(self, fmt, *args):
        pass

    def note(self, line):
        with self.server.log_lock:
            with open(self.server.log_file, 'a') as f:
                f.write(line + '\n')

    def do_CONNECT(self):
        self.note('CONNECT %s' % self.path)
        host, _, port = self.path.rpartition(':')
        try:
            up = socket.create_connection((host.strip('[]'), int(port)), timeout=10)
        except OSError as e:
            self.send_error(502, 'cannot connect: %s' % e)
            return
        self.send_response(200, 'Connection established')
        self.end_headers()
        self.wfile.flush()
        socks = [self.connection, up]
        try:
            while True:
                r, _, _ = select.select(socks, [], [], 60)
                if not r:
                    break
                for s in r:
                    data = s.recv(65536)
                    if not data:
                        return
                    (up if s is self.connection else self.connection).sendall(data)
        except OSError:
            pass
        finally:
            up.close()
            self.close_connection = True

    def forward(self):
        self.note('%s %s' % (self.command, self.path))
        u = urllib.parse.urlsplit(self.path)
        if u.scheme != 'http' or not u.hostname:
            self.send_error(400, 'absolute http:// URL expected')
            return
        length = int(self.headers.get('Content-Length') or 0)
        body = self.rfile.read(length) if length else None
        headers = {k: v for k, v in self.headers.items() if k.lower() not in HOP}
        path = u.path or '/'
        if u.query:
            path += '?' + u.query
        try:
            c = http.client.HTTPConnection(u.hostname, u.port or 80, timeout=60)
            c.request(self.command, path, body=body, headers=headers)
            r = c.getresponse()
            data = r.read()
        except (OSError, http.client.HTTPException) as e:
            self.send_error(502, 'upstream failed: %s' % e)
            return
        self.send_response(r.status, r.reason)
        for k, v in r.getheaders():
            if k.lower() not in HOP and k.lower() != 'content-length':
                self.send_header(k, v)
        self.send_header('Content-Length', str(len(data)))
        self.end_headers()
        self.wfile.write(data)
        c.close()

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = do_HEAD = forward


class Server(socketserver.ThreadingMixIn, http.server.HTTPServer):
    daemon_threads = True
    allow_reuse_address = True


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument('--port', type=int, default=0)
    ap.add_argument('--port-file', required=True)
    ap.add_argument('--log-file', required=True)
    a = ap.parse_args()
    srv = Server(('127.0.0.1', a.port), Proxy)
    srv.log_file = a.log_file
    srv.log_lock = threading.Lock()
    open(a.log_file, 'a').close()
    tmp = a.port_file + '.tmp'
    with open(tmp, 'w') as f:
        f.write('%d\n' % srv.server_address[1])
    os.rename(tmp, a.port_file)
    try:
        srv.serve_forever(poll_interval=0.2)
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == '__main__':
    sys.exit(main())
