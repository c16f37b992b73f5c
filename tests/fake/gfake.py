#!/usr/bin/env python3
"""Launcher for the gfake Google API fake.  See tests/fake/README.md.

python3 tests/fake/gfake.py --port 0 --port-file FILE [--bind 127.0.0.1]
    [--tls-cert PEM --tls-key PEM] [--sa-public-key PEM ...]
    [--stream-buffer-seconds N] [--discovery-dir DIR] [--quiet]
"""
import argparse
import os
import signal
import ssl
import sys
import threading

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import gfake  # noqa: E402
from gfake import server  # noqa: E402
from gfake.bigquery_http import DEFAULT_STREAM_BUFFER_SECONDS  # noqa: E402


def main(argv=None):
    ap = argparse.ArgumentParser(description='fake Google APIs (OAuth, metadata, Pub/Sub, GCS, BigQuery, Dataproc, Composer) + Airflow REST + WebHDFS')
    ap.add_argument('--port', type=int, default=0)
    ap.add_argument('--port-file')
    ap.add_argument('--bind', default='127.0.0.1')
    ap.add_argument('--tls-cert')
    ap.add_argument('--tls-key')
    ap.add_argument('--sa-public-key', action='append', default=[])
    ap.add_argument('--stream-buffer-seconds', type=float, default=None,
                    help='how long insertAll rows stay in the streaming buffer (default %d)'
                    % DEFAULT_STREAM_BUFFER_SECONDS)
    ap.add_argument('--discovery-dir', help='directory holding gcp/*.discovery.json and airflow/ '
                    '(default: $GFAKE_REFERENCE_DIR, else tests/fake/contracts)')
    ap.add_argument('--quiet', action='store_true')
    a = ap.parse_args(argv)
    if bool(a.tls_cert) != bool(a.tls_key):
        ap.error('--tls-cert and --tls-key go together')
    pems = []
    for p in a.sa_public_key:
        with open(p) as f:
            pems.append(f.read())
    app = gfake.build_app(bind=a.bind, quiet=a.quiet, reference_dir=a.discovery_dir, public_key_pems=pems,
                          tls=bool(a.tls_cert), stream_buffer_seconds=a.stream_buffer_seconds)
    ctx = None
    if a.tls_cert:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(a.tls_cert, a.tls_key)
    srv = server.Server(app, (a.bind, a.port), ctx)
    app.port = srv.server_address[1]
    if a.port_file:
        tmp = a.port_file + '.tmp'
        with open(tmp, 'w') as f:
            f.write('%d\n' % app.port)
        os.rename(tmp, a.port_file)
    if not a.quiet:
        sys.stderr.write('gfake: listening on %s:%d\n' % (a.bind, app.port))

    def stop(signum, frame):
        threading.Thread(target=srv.shutdown, daemon=True).start()
    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    try:
        srv.serve_forever(poll_interval=0.2)
    finally:
        srv.server_close()
    return 0


if __name__ == '__main__':
    sys.exit(main())
