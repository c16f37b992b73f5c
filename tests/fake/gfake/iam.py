"""IAM as the fake models it: every caller holds every permission, except the
ones a test denies.  testIamPermissions (Pub/Sub topics and subscriptions,
Cloud Storage buckets) answers with the requested permissions minus the
denied ones, as Google does ("the subset of permissions that the caller is
allowed"), and services that check a permission on a call (BigQuery's dry
run) ask held().

POST   /_fake/iam/deny {"permissions": [...], "resource_regex": "..."}
       deny these permissions (on resources matching the regex; all when
       absent); adds to what is denied
GET    /_fake/iam/deny    what is denied
DELETE /_fake/iam/deny    deny nothing again (also /_fake/reset)
"""
import re
import threading

from .server import ApiError, json_response


class Iam:
    def __init__(self, app):
        self.app = app
        self.lock = threading.Lock()
        self.reset()

    def reset(self):
        with self.lock:
            self.denied = []        # [(permission, compiled regex or None, source text)]

    def held(self, permissions, resource):
        """The permissions of the list that the caller holds on resource."""
        with self.lock:
            out = []
            for p in permissions:
                if not any(d == p and (rx is None or rx.search(resource)) for d, rx, _ in self.denied):
                    out.append(p)
            return out

    def deny_post(self, req):
        body = req.json()
        if not isinstance(body, dict) or set(body) - {'permissions', 'resource_regex'} or \
                not isinstance(body.get('permissions'), list) or \
                not all(isinstance(p, str) for p in body['permissions']):
            raise ApiError(400, 'want {"permissions": [strings], "resource_regex": optional string}')
        rx = body.get('resource_regex')
        try:
            crx = re.compile(rx) if rx else None
        except re.error as e:
            raise ApiError(400, 'bad resource_regex: %s' % e)
        with self.lock:
            for p in body['permissions']:
                self.denied.append((p, crx, rx))
        return self.deny_get(req)

    def deny_get(self, req):
        with self.lock:
            return json_response([{'permission': p, 'resource_regex': rx} for p, _, rx in self.denied])

    def deny_delete(self, req):
        self.reset()
        return json_response({})


def permissions_of_request(body):
    """The permissions a TestIamPermissionsRequest asks about (validated by
    the discovery document already: a list of strings, or absent)."""
    perms = (body or {}).get('permissions') or []
    for p in perms:
        if '*' in p:
            raise ApiError(400, 'Permissions with wildcards (such as * or storage.*) are not allowed: %s' % p)
    return perms


def install(app):
    iam = Iam(app)
    app.iam = iam
    app.add_module(iam)
    r = app.route
    r('POST', r'/_fake/iam/deny', iam.deny_post, auth=False)
    r('GET', r'/_fake/iam/deny', iam.deny_get, auth=False)
    r('DELETE', r'/_fake/iam/deny', iam.deny_delete, auth=False)
