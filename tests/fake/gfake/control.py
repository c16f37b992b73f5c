"""Control API under /_fake/ (no auth, never logged, never faulted).

GET/DELETE /_fake/requests[?path_regex=]   request log
POST/DELETE /_fake/faults                   fault injection (server.App.take_fault)
GET/POST /_fake/config                      the keys every service declares in its CONFIG
POST /_fake/reset                           forget all service state, faults, log
Each service module adds its own /_fake/<service>/... routes in install().
"""
import re

from .server import ApiError, json_response

FAULT_KINDS = ('status', 'reset', 'latency', 'truncate')
FAULT_KEYS = {'path_regex', 'method', 'kind', 'status', 'retry_after', 'retry_after_date_in', 'latency_ms', 'count', 'rate', 'message'}


def requests_get(req):
    rx = req.q('path_regex')
    with req.app.log_lock:
        items = list(req.app.requests)
    if rx:
        c = re.compile(rx)
        items = [e for e in items if c.search(e['path'])]
    return json_response(items)


def requests_delete(req):
    with req.app.log_lock:
        req.app.requests.clear()
    return json_response({})


def faults_post(req):
    f = req.json()
    if not isinstance(f, dict):
        raise ApiError(400, 'fault must be a JSON object')
    unknown = set(f) - FAULT_KEYS
    if unknown:
        raise ApiError(400, 'unknown fault field(s): %s' % ', '.join(sorted(unknown)))
    f.setdefault('kind', 'status')
    if f['kind'] not in FAULT_KINDS:
        raise ApiError(400, 'kind must be one of %s' % ', '.join(FAULT_KINDS))
    if f.get('path_regex'):
        try:
            re.compile(f['path_regex'])
        except re.error as e:
            raise ApiError(400, 'bad path_regex: %s' % e)
    if f.get('count') is not None:
        f['count'] = int(f['count'])
    with req.app.lock:
        req.app.faults.append(f)
    return json_response(f)


def faults_get(req):
    with req.app.lock:
        return json_response(list(req.app.faults))


def faults_delete(req):
    with req.app.lock:
        req.app.faults.clear()
    return json_response({})


def config_get(req):
    return json_response(req.app.config)


def config_post(req):
    body = req.json()
    if not isinstance(body, dict):
        raise ApiError(400, 'config must be a JSON object')
    for k, v in body.items():
        t = req.app.config_types.get(k, (None,))[0]
        if t is None:
            raise ApiError(400, 'unknown config key %r' % k)
        if not isinstance(v, t) or (t is int and isinstance(v, bool)):
            raise ApiError(400, 'bad type for %r' % k)
    req.app.config.update(body)
    req.app.config_changed()
    return json_response(req.app.config)


def reset(req):
    req.app.reset()
    return json_response({})


def install(app):
    r = app.route
    r('GET', r'/_fake/requests', requests_get, auth=False)
    r('DELETE', r'/_fake/requests', requests_delete, auth=False)
    r('GET', r'/_fake/faults', faults_get, auth=False)
    r('POST', r'/_fake/faults', faults_post, auth=False)
    r('DELETE', r'/_fake/faults', faults_delete, auth=False)
    r('GET', r'/_fake/config', config_get, auth=False)
    r('POST', r'/_fake/config', config_post, auth=False)
    r('POST', r'/_fake/reset', reset, auth=False)
