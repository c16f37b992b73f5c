"""gfake: a faithful fake of the Google APIs syncbridge talks to (plus WebHDFS).

build_app() wires the service modules into one server.App; gfake.py (one
directory up) is the command-line launcher.  To add a service, write a
module with install(app) and list it in build_app().
"""
import os

from . import server, discovery


DEFAULT_STREAM_BUFFER_SECONDS = 1800


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
    from . import auth, control, pubsub
    app = server.App(bind=bind, quiet=quiet, reference_dir=reference_dir or default_reference_dir(), tls=tls)
    # Real BigQuery keeps streamed rows out of DML for up to ~90 minutes
    # (cloud.google.com/bigquery/docs/streaming-data-into-bigquery#dataavailability);
    # 30 minutes outlasts any test, which must shorten it explicitly
    # (POST /_fake/config {"stream_buffer_seconds": N}) to update such rows.
    app.config['stream_buffer_seconds'] = (DEFAULT_STREAM_BUFFER_SECONDS if stream_buffer_seconds is None
                                           else stream_buffer_seconds)
    app.config.update({'bq_slow_queries': 0, 'dataproc_cluster_seconds': 2, 'dataproc_job_seconds': 2,
                       'airflow_auto_seconds': 0, 'composer_image_version': 'composer-2.9.7-airflow-2.10.2',
                       'pubsub_pull_wait_seconds': 10})
    app.discovery = discovery.Discovery(os.path.join(app.reference_dir, 'gcp'))
    control.install(app)
    auth.install(app, public_key_pems)
    pubsub.install(app)
    for name in ('storage', 'webhdfs'):
        try:
            mod = __import__('gfake.' + name, fromlist=['install'])
        except ImportError:
            continue
        mod.install(app)
    from . import bigquery_http, airflow, dataproc
    bigquery_http.install(app)
    dataproc.install(app)
    airflow.install(app)
    return app
