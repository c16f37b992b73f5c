"""gfake: a faithful fake of the Google APIs syncbridge talks to (plus WebHDFS).

build_app() wires the service modules in SERVICES into one server.App;
gfake.py (one directory up) is the command-line launcher.  A service module
owns everything of its service: install(app) registers its API routes and
its /_fake/<service>/... control routes, and CONFIG declares its
/_fake/config keys as {name: (type or tuple of types, default)}.  To add a
service, write such a module and list it in SERVICES.
"""
import importlib
import os

from . import server, discovery

# In install order: control first (the /_fake/ routes every test uses), then
# auth (the token and metadata endpoints), then the APIs.  Every one is
# required: a module that fails to import stops the fake with its traceback.
SERVICES = ('control', 'auth', 'iam', 'pubsub', 'storage', 'webhdfs', 'bigquery_http', 'dataproc', 'airflow')


def default_reference_dir():
    """Where the API contracts are: $GFAKE_REFERENCE_DIR if set (an override,
    for trying the fake against another revision), else tests/fake/contracts,
    which the repository and its release tarballs carry (see the README
    there for where each document came from)."""
    env = os.environ.get('GFAKE_REFERENCE_DIR')
    if env:
        return env
    here = os.path.dirname(os.path.abspath(__file__))
    return os.path.join(os.path.dirname(here), 'contracts')


def build_app(bind='127.0.0.1', quiet=False, reference_dir=None, public_key_pems=(), tls=False,
              stream_buffer_seconds=None):
    """The fake as one server.App.  stream_buffer_seconds, when given,
    replaces that config key's default (bigquery_http.CONFIG)."""
    app = server.App(bind=bind, quiet=quiet, reference_dir=reference_dir or default_reference_dir(), tls=tls)
    app.discovery = discovery.Discovery(os.path.join(app.reference_dir, 'gcp'))
    app.public_key_pems = list(public_key_pems)
    mods = [importlib.import_module('.' + name, __name__) for name in SERVICES]
    for name, mod in zip(SERVICES, mods):
        app.declare_config(name, getattr(mod, 'CONFIG', {}))
    if stream_buffer_seconds is not None:
        app.config['stream_buffer_seconds'] = stream_buffer_seconds
    for mod in mods:
        mod.install(app)
    return app
