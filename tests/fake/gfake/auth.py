"""OAuth 2.0 token endpoint (JWT bearer grant, RFC 7523), metadata server,
and the bearer-token gate used by every Google API route.

RS256 verification is RSASSA-PKCS1-v1_5 with SHA-256 (RFC 8017 §8.2.2) done
by hand: a tiny DER reader pulls (n, e) out of a SubjectPublicKeyInfo (or
PKCS#1 RSAPublicKey) PEM, then ``pow(sig, e, n)`` must equal the
EMSA-PKCS1-v1_5 encoding 00 01 FF.. 00 || DigestInfo(SHA-256) || H.
"""
import base64
import hashlib
import hmac
import json
import secrets
import threading
import time
import urllib.parse

from .server import ApiError, Response, json_response

SHA256_DIGESTINFO = bytes.fromhex('3031300d060960864801650304020105000420')
RSA_OID = bytes.fromhex('2a864886f70d010101')
STATIC_TOKEN = 'fake-static-token'


# ---- DER / PEM ---------------------------------------------------------------
def _der_read(buf, pos):
    tag = buf[pos]
    pos += 1
    ln = buf[pos]
    pos += 1
    if ln & 0x80:
        nb = ln & 0x7F
        ln = int.from_bytes(buf[pos:pos + nb], 'big')
        pos += nb
    return tag, buf[pos:pos + ln], pos + ln


def _der_seq(content):
    out, pos = [], 0
    while pos < len(content):
        tag, val, pos = _der_read(content, pos)
        out.append((tag, val))
    return out


def pem_to_der(pem):
    lines = [l.strip() for l in pem.strip().splitlines()]
    label = lines[0]
    body = ''.join(l for l in lines if l and not l.startswith('-----'))
    return label, base64.b64decode(body)


def rsa_public_key_from_pem(pem):
    """Returns (n, e) from a 'PUBLIC KEY' (SPKI) or 'RSA PUBLIC KEY' PEM."""
    label, der = pem_to_der(pem)
    tag, content, _ = _der_read(der, 0)
    items = _der_seq(content)
    if 'RSA PUBLIC KEY' not in label:
        alg = _der_seq(items[0][1])
        if alg[0][1] != RSA_OID:
            raise ValueError('not an RSA key')
        bitstr = items[1][1]
        _, content, _ = _der_read(bitstr[1:], 0)   # skip unused-bits octet
        items = _der_seq(content)
    n = int.from_bytes(items[0][1], 'big')
    e = int.from_bytes(items[1][1], 'big')
    return n, e


def rs256_verify(key, signing_input, signature):
    n, e = key
    k = (n.bit_length() + 7) // 8
    if len(signature) != k:
        return False
    s = int.from_bytes(signature, 'big')
    if s >= n:
        return False
    em = pow(s, e, n).to_bytes(k, 'big')
    t = SHA256_DIGESTINFO + hashlib.sha256(signing_input).digest()
    if k < len(t) + 11:
        return False
    expected = b'\x00\x01' + b'\xff' * (k - len(t) - 3) + b'\x00' + t
    return hmac.compare_digest(em, expected)


def b64url_decode(s):
    s = s + '=' * (-len(s) % 4)
    return base64.urlsafe_b64decode(s.encode())


# ---- token store ---------------------------------------------------------------
class Auth:
    def __init__(self, app, public_keys):
        self.app = app
        self.keys = list(public_keys)
        self.tokens = {}
        self.lock = threading.Lock()
        self.metadata_token = None

    def reset(self):
        # Issued tokens survive /_fake/reset: a daemon under test keeps its
        # cached token across test cases, as it would across a real reset.
        pass

    def issue(self, subject):
        ttl = int(self.app.config['token_expires_in'])
        tok = 'fake-' + secrets.token_urlsafe(24)
        with self.lock:
            self.tokens[tok] = (time.time() + ttl, subject)
        return tok, ttl

    def valid(self, tok):
        if tok == STATIC_TOKEN:
            return True
        with self.lock:
            v = self.tokens.get(tok)
        return v is not None and v[0] > time.time()


def check_bearer(app, req):
    if not app.config.get('require_auth', True):
        return
    h = req.header('Authorization') or ''
    tok = h[7:].strip() if h[:7].lower() == 'bearer ' else None
    if tok is None:
        tok = req.q('access_token')
    if not tok:
        raise ApiError(401, 'Request is missing required authentication credential. Expected OAuth 2 access '
                            'token, login cookie or other valid authentication credential.',
                       reason='required', headers=[('WWW-Authenticate', 'Bearer realm="https://accounts.google.com/"')])
    if not app.auth.valid(tok):
        raise ApiError(401, 'Request had invalid authentication credentials. Expected OAuth 2 access token, '
                            'login cookie or other valid authentication credential.',
                       reason='authError', headers=[('WWW-Authenticate', 'Bearer realm="https://accounts.google.com/", error="invalid_token"')])


def _oauth_error(error, desc, code=400):
    return ApiError(code, desc, body=json.dumps({'error': error, 'error_description': desc}).encode())


SKEW_MSG = ('Invalid JWT: Token must be a short-lived token (60 minutes) and in a reasonable timeframe. '
            'Check your iat and exp values in the JWT claim.')


def token_endpoint(req):
    app = req.app
    ctype = (req.header('Content-Type') or '').lower()
    if 'application/x-www-form-urlencoded' not in ctype:
        raise _oauth_error('invalid_request', 'Content-Type must be application/x-www-form-urlencoded')
    form = urllib.parse.parse_qs(req.body.decode('utf-8', 'replace'), keep_blank_values=True)
    grant = (form.get('grant_type') or [''])[0]
    if grant != 'urn:ietf:params:oauth:grant-type:jwt-bearer':
        raise _oauth_error('unsupported_grant_type', 'Invalid grant_type: %s' % grant)
    assertion = (form.get('assertion') or [''])[0]
    parts = assertion.split('.')
    if len(parts) != 3:
        raise _oauth_error('invalid_grant', 'Invalid JWT: malformed assertion')
    try:
        header = json.loads(b64url_decode(parts[0]))
        claims = json.loads(b64url_decode(parts[1]))
        sig = b64url_decode(parts[2])
    except (ValueError, UnicodeDecodeError):
        raise _oauth_error('invalid_grant', 'Invalid JWT: cannot decode header or claims')
    if not isinstance(header, dict) or header.get('alg') != 'RS256':
        raise _oauth_error('invalid_grant', 'Invalid JWT: alg must be RS256')
    signing_input = (parts[0] + '.' + parts[1]).encode()
    if not any(rs256_verify(k, signing_input, sig) for k in app.auth.keys):
        raise _oauth_error('invalid_grant', 'Invalid JWT Signature.')
    if not isinstance(claims, dict) or not claims.get('iss'):
        raise _oauth_error('invalid_grant', 'Invalid JWT: iss claim missing')
    if not claims.get('scope') and not claims.get('target_audience'):
        raise _oauth_error('invalid_scope', 'Invalid OAuth scope or ID token audience provided.')
    expected_aud = req.base_url + '/token'
    aud_ok = claims.get('aud') == expected_aud
    if not aud_ok and isinstance(claims.get('aud'), str):
        # the same port reached as localhost / 127.0.0.1
        a = urllib.parse.urlsplit(claims['aud'])
        e = urllib.parse.urlsplit(expected_aud)
        loop = {'localhost', '127.0.0.1', '::1', '[::1]'}
        aud_ok = (a.scheme == e.scheme and a.path == '/token' and a.port == e.port
                  and a.hostname in loop and e.hostname in loop)
    if not aud_ok:
        raise _oauth_error('invalid_grant', 'Invalid JWT: Failed audience check. The expected value is %s'
                           % expected_aud)
    now = time.time()
    iat, exp = claims.get('iat'), claims.get('exp')
    if not isinstance(iat, (int, float)) or not isinstance(exp, (int, float)) \
            or isinstance(iat, bool) or isinstance(exp, bool):
        raise _oauth_error('invalid_grant', SKEW_MSG)
    if abs(iat - now) > 300 or exp <= now or exp - iat > 3600 or exp <= iat:
        raise _oauth_error('invalid_grant', SKEW_MSG)
    tok, ttl = app.auth.issue(claims['iss'])
    if claims.get('target_audience'):
        return json_response({'id_token': tok})
    return json_response({'access_token': tok, 'expires_in': ttl, 'token_type': 'Bearer'})


# ---- metadata server ------------------------------------------------------------
def _metadata_gate(req):
    if req.header('Metadata-Flavor') != 'Google':
        raise ApiError(403, 'Missing required header: Metadata-Flavor',
                       body=b'Missing required header "Metadata-Flavor"\n', content_type='text/html',
                       headers=[('Metadata-Flavor', 'Google')])
    if req.header('X-Forwarded-For'):
        raise ApiError(403, 'forwarded', body=b'X-Forwarded-For not allowed\n', content_type='text/html',
                       headers=[('Metadata-Flavor', 'Google')])


def md_token(req):
    _metadata_gate(req)
    a = req.app.auth
    with a.lock:
        cur = a.metadata_token
    now = time.time()
    # like the real server: hand back the cached token until ~5 min before expiry
    if cur is None or cur[1] - now < 300 or not a.valid(cur[0]):
        tok, ttl = a.issue(req.app.config['service_account_email'])
        cur = (tok, now + ttl)
        with a.lock:
            a.metadata_token = cur
    return Response(200, {'access_token': cur[0], 'expires_in': max(0, int(cur[1] - now)),
                          'token_type': 'Bearer'}, 'application/json',
                    [('Metadata-Flavor', 'Google')])


def md_project(req):
    _metadata_gate(req)
    return Response(200, req.app.config['project_id'], 'application/text', [('Metadata-Flavor', 'Google')])


def md_email(req):
    _metadata_gate(req)
    return Response(200, req.app.config['service_account_email'], 'application/text',
                    [('Metadata-Flavor', 'Google')])


CONFIG = {'require_auth': (bool, True), 'token_expires_in': (int, 3599),
          'project_id': (str, 'fake-project'),
          'service_account_email': (str, 'fake-sa@fake-project.iam.gserviceaccount.com')}


def install(app):
    """Token endpoint and metadata server; JWTs are checked against the PEM
    keys in app.public_key_pems (set by build_app)."""
    app.auth = Auth(app, [rsa_public_key_from_pem(p) for p in app.public_key_pems])
    app.add_module(app.auth)
    app.route('POST', r'/token', token_endpoint, auth=False, style='oauth')
    base = r'/computeMetadata/v1'
    app.route('GET', base + r'/instance/service-accounts/default/token', md_token, auth=False)
    app.route('GET', base + r'/project/project-id', md_project, auth=False)
    app.route('GET', base + r'/instance/service-accounts/default/email', md_email, auth=False)
