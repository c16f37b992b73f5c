"""Request-body validation against Google API discovery documents.

The discovery docs in tests/fake/contracts/gcp/ are the contract: for a method
id (``pubsub.projects.topics.publish``) we look up ``request.$ref`` and walk
the JSON body against ``schemas``.  Unknown fields and type mismatches give
400 INVALID_ARGUMENT with Google's wording, e.g.::

    Invalid JSON payload received. Unknown name "fooBar" at 'messages[0]': Cannot find field.

Proto3-JSON leniency that Google's ESF accepts is mirrored: ``null`` for any
field, int64/uint64 as string or number, int32 as number or numeric string.
Fields in SCALAR_AS_STRING are proto ``string`` fields that Google's
front end also takes as a JSON number or boolean: BigQuery's
``QueryParameterValue.value``, which Google's own samples and the Node
client send as a number (cloud.google.com/bigquery/docs/parameterized-queries).
"""
import base64
import binascii
import json
import os
import re
import threading

from .server import ApiError

_INT_RE = re.compile(r'^-?\d+\Z')
_B64_RE = re.compile(r'^[A-Za-z0-9+/_-]*={0,2}\Z')
SCALAR_AS_STRING = {('bigquery-v2', 'QueryParameterValue', 'value')}
_SCALAR_MARK = 'x-gfake-scalar-as-string'


class Discovery:
    def __init__(self, gcp_dir):
        self.gcp_dir = gcp_dir
        self.docs = {}
        self.methods = {}
        self.lock = threading.Lock()

    def doc(self, api):
        with self.lock:
            d = self.docs.get(api)
            if d is None:
                with open(os.path.join(self.gcp_dir, api + '.discovery.json')) as f:
                    d = json.load(f)
                methods = {}

                def walk(res):
                    for r in res.values():
                        for m in r.get('methods', {}).values():
                            methods[m['id']] = m
                        walk(r.get('resources', {}))
                walk(d.get('resources', {}))
                for m in d.get('methods', {}).values():
                    methods[m['id']] = m
                self.methods[api] = methods
                for a, schema, prop in SCALAR_AS_STRING:
                    if a == api and prop in d.get('schemas', {}).get(schema, {}).get('properties', {}):
                        d['schemas'][schema]['properties'][prop][_SCALAR_MARK] = True
                self.docs[api] = d
            return d

    def method(self, api, method_id):
        self.doc(api)
        m = self.methods[api].get(method_id)
        if m is None:
            raise KeyError('%s has no method %s' % (api, method_id))
        return m

    def request_schema(self, api, method_id):
        m = self.method(api, method_id)
        ref = (m.get('request') or {}).get('$ref')
        return ref

    def validate(self, api, method_id, body):
        ref = self.request_schema(api, method_id)
        if ref is None:
            return
        schemas = self.doc(api)['schemas']
        _check(schemas, {'$ref': ref}, body, '')


def _bad(path, message, field=None):
    details = [{'@type': 'type.googleapis.com/google.rpc.BadRequest',
                'fieldViolations': [{'field': field if field is not None else path,
                                     'description': message}]}]
    raise ApiError(400, message, reason='invalid', details=details)


def _where(path):
    return " at '%s'" % path if path else ''


def _type_name(schema):
    t = schema.get('type')
    f = schema.get('format')
    if t == 'string':
        return {'int64': 'TYPE_INT64', 'uint64': 'TYPE_UINT64', 'byte': 'TYPE_BYTES'}.get(f, 'TYPE_STRING')
    if t == 'integer':
        return 'TYPE_UINT32' if f == 'uint32' else 'TYPE_INT32'
    if t == 'number':
        return 'TYPE_DOUBLE' if f != 'float' else 'TYPE_FLOAT'
    if t == 'boolean':
        return 'TYPE_BOOL'
    return 'TYPE_MESSAGE'


def _invalid_value(path, schema, value):
    shown = json.dumps(value) if not isinstance(value, str) else '"%s"' % value
    if isinstance(value, (dict, list)):
        shown = '[' if isinstance(value, list) else '{'
    msg = 'Invalid value%s (%s), %s' % (_where(path), _type_name(schema), shown)
    _bad(path, 'Invalid JSON payload received. ' + msg)


def _quoted(k):
    """json.dumps(k) for a map key, without its cost for the usual plain
    key (a MERGE body has four per row)."""
    if k.isascii() and k.isprintable() and '"' not in k and '\\' not in k:
        return '"%s"' % k
    return json.dumps(k)


def _check(schemas, schema, value, path):
    if value is None:
        return
    ref = schema.get('$ref')
    if ref:
        schema = schemas[ref]
    t = schema.get('type')
    if t == 'any' or (t is None and 'properties' not in schema):
        return
    if t == 'object' or (t is None and 'properties' in schema):
        if not isinstance(value, dict):
            if 'properties' in schema or 'additionalProperties' in schema:
                _bad(path, 'Invalid JSON payload received. Expected an object%s, got %s.'
                     % (_where(path), json.dumps(value)[:40]))
            return
        props = schema.get('properties')
        addl = schema.get('additionalProperties')
        for k, v in value.items():
            sub = '%s.%s' % (path, k) if path else k
            if props is not None and k in props:
                _check(schemas, props[k], v, sub)
            elif addl is not None:
                _check(schemas, addl, v, '%s[%s]' % (path, _quoted(k)) if path else k)
            elif props is not None:
                _bad(path, 'Invalid JSON payload received. Unknown name "%s"%s: Cannot find field.'
                     % (k, _where(path)), field=path)
        return
    if t == 'array':
        if not isinstance(value, list):
            _invalid_value(path, schema.get('items', {}), value)
        items = schema.get('items', {})
        for i, v in enumerate(value):
            _check(schemas, items, v, '%s[%d]' % (path, i))
        return
    if t == 'boolean':
        if not isinstance(value, bool):
            _invalid_value(path, schema, value)
        return
    if t == 'integer':
        if isinstance(value, bool):
            _invalid_value(path, schema, value)
        if isinstance(value, int):
            return
        if isinstance(value, float) and value.is_integer():
            return
        if isinstance(value, str) and _INT_RE.match(value):
            return
        _invalid_value(path, schema, value)
    if t == 'number':
        if isinstance(value, bool):
            _invalid_value(path, schema, value)
        if isinstance(value, (int, float)):
            return
        if isinstance(value, str):
            try:
                float(value)
                return
            except ValueError:
                pass
        _invalid_value(path, schema, value)
    if t == 'string':
        fmt = schema.get('format')
        if fmt in ('int64', 'uint64', 'int32', 'uint32'):
            if isinstance(value, bool):
                _invalid_value(path, schema, value)
            if isinstance(value, int) or (isinstance(value, float) and value.is_integer()):
                return
            if isinstance(value, str) and _INT_RE.match(value):
                if fmt.startswith('u') and value.startswith('-'):
                    _invalid_value(path, schema, value)
                return
            _invalid_value(path, schema, value)
        if schema.get(_SCALAR_MARK) and isinstance(value, (bool, int, float)):
            return
        if not isinstance(value, str):
            _invalid_value(path, schema, value)
        if fmt == 'byte':
            if not _B64_RE.match(value) or not _b64ok(value):
                _invalid_value(path, schema, value)
        if 'enum' in schema and value not in schema['enum']:
            _invalid_value(path, schema, value)
        return


def _b64ok(value):
    v = value.replace('-', '+').replace('_', '/')
    if len(v) % 4:
        v += '=' * (-len(v) % 4)
    try:
        base64.b64decode(v, validate=True)
        return True
    except (binascii.Error, ValueError):
        return False


def b64decode_lenient(value):
    """Standard or URL-safe alphabet, padding optional (what Google accepts)."""
    v = value.replace('-', '+').replace('_', '/')
    v += '=' * (-len(v) % 4)
    return base64.b64decode(v, validate=True)
