"""Pub/Sub v1 REST (pubsub-v1.discovery.json).

Faithful parts: resource names, 404/409 rules, publish limits and messages,
messageIds as decimal strings, per-subscription ack deadlines with real
redelivery, modifyAckDeadline (0 = nack), ordering keys (with
enableMessageOrdering a key is blocked while an earlier message of that key
is outstanding, and when one is redelivered after a nack or an expired
deadline, the key's later outstanding messages come again after it),
messages published before a subscription exists are not delivered to it,
empty pull answers ``{}``.  Pull without ``returnImmediately`` waits up to
``pubsub_pull_wait_seconds`` for a message and answers with what is there
as soon as something is (a partial batch).  ``deliveryAttempt`` is set only
when the subscription has a ``deadLetterPolicy`` (as Google documents for
the field).

Simplified: dead-letter forwarding, filters, push, exactly-once, retention
and seek are not implemented; a redelivered ordering key does not bring
back later messages that were already acknowledged.
"""
import base64
import datetime
import gc
import itertools
import secrets
import threading
import time

from .discovery import b64decode_lenient
from .server import ApiError, json_response

API = 'pubsub-v1'
CONFIG = {'pubsub_pull_wait_seconds': ((int, float), 10)}
MAX_BODY = 10 * 1024 * 1024
P = r'/v1/projects/([^/:]+)'


def _now_rfc3339():
    t = time.time()
    dt = datetime.datetime.fromtimestamp(t, datetime.timezone.utc)
    return dt.strftime('%Y-%m-%dT%H:%M:%S.') + '%06dZ' % dt.microsecond


class Sub:
    def __init__(self, res):
        self.res = res
        self.queue = []          # list of Delivery, publish order
        self.deliveries = 0      # messages handed out by pulls, redeliveries included
        self.acked = 0

    @property
    def deadline(self):
        return int(self.res.get('ackDeadlineSeconds') or 10)


class Delivery:
    __slots__ = ('msg', 'attempts', 'ack_id', 'expires', 'acked')

    def __init__(self, msg):
        self.msg = msg
        self.attempts = 0
        self.ack_id = None
        self.expires = 0.0
        self.acked = False


class PubSub:
    def __init__(self, app):
        self.app = app
        self.lock = threading.RLock()
        self.arrived = threading.Condition(self.lock)     # publish wakes waiting pulls
        self.reset()

    def reset(self):
        with self.lock:
            self.topics = {}
            self.subs = {}
            self.history = {}      # topic -> every published message
            self.acks = {}         # ack_id -> (sub name, Delivery)
            self.ids = itertools.count(int(time.time()) * 1000)
            # ack ids: unique and not guessable across resets, without a
            # urandom call per delivery (which cost as much as the pull)
            self.ack_prefix = secrets.token_hex(8)
            self.ack_seq = itertools.count(1)

    # ---- IAM ----------------------------------------------------------------
    def _test_iam(self, req, name, exists):
        from .iam import permissions_of_request
        perms = permissions_of_request(req.json() if req.body else {})
        with self.lock:
            if not exists(name):
                raise ApiError(404, 'Resource not found (resource=%s).' % name.rsplit('/', 1)[-1])
        held = self.app.iam.held(perms, name)
        return json_response({'permissions': held} if held else {})   # proto3 JSON omits an empty list

    def topic_test_iam(self, req, project, topic):
        return self._test_iam(req, 'projects/%s/topics/%s' % (project, topic), lambda n: n in self.topics)

    def sub_test_iam(self, req, project, sub):
        return self._test_iam(req, 'projects/%s/subscriptions/%s' % (project, sub), lambda n: n in self.subs)

    # ---- topics -------------------------------------------------------------
    def topic_create(self, req, project, topic):
        name = 'projects/%s/topics/%s' % (project, topic)
        body = req.json()
        if body.get('name') not in (None, name):
            raise ApiError(400, 'Resource name in the body (%s) does not match the URL (%s).' % (body['name'], name))
        with self.lock:
            if name in self.topics:
                raise ApiError(409, 'Resource already exists in the project (resource=%s).' % topic)
            res = dict(body)
            res['name'] = name
            self.topics[name] = res
            self.history.setdefault(name, [])
            return json_response(res)

    def _topic(self, project, topic):
        name = 'projects/%s/topics/%s' % (project, topic)
        t = self.topics.get(name)
        if t is None:
            raise ApiError(404, 'Resource not found (resource=%s).' % topic)
        return name, t

    def topic_get(self, req, project, topic):
        with self.lock:
            return json_response(self._topic(project, topic)[1])

    def topic_delete(self, req, project, topic):
        with self.lock:
            name, _ = self._topic(project, topic)
            del self.topics[name]
            for s in self.subs.values():
                if s.res.get('topic') == name:
                    s.res['topic'] = '_deleted-topic_'
            return json_response({})

    def topic_list(self, req, project):
        with self.lock:
            pre = 'projects/%s/topics/' % project
            return json_response({'topics': [t for n, t in sorted(self.topics.items()) if n.startswith(pre)]}
                                 if any(n.startswith(pre) for n in self.topics) else {})

    def publish(self, req, project, topic):
        if len(req.body) > MAX_BODY:
            raise ApiError(400, 'Request payload size exceeds the limit: %d bytes.' % MAX_BODY)
        body = req.json()
        msgs = body.get('messages') or []
        if not msgs:
            raise ApiError(400, 'The value for message_count is too small. You passed 0 in the request, '
                                'but the minimum value is 1.')
        if len(msgs) > 1000:
            raise ApiError(400, 'The value for %d is too large. You passed message_count in the request, '
                                'but the maximum value is 1000.' % len(msgs))
        keys = set()
        decoded = []
        for i, m in enumerate(msgs):
            data = b''
            if m.get('data'):
                data = b64decode_lenient(m['data'])      # validated already (format: byte)
            attrs = m.get('attributes') or {}
            if not data and not attrs:
                raise ApiError(400, 'One or more messages in the publish request is empty. Each message must '
                                    'contain either non-empty data, or at least one attribute.')
            if len(attrs) > 100:
                raise ApiError(400, 'The value for attribute_count is too large. You passed %d in the '
                                    'request, but the maximum value is 100.' % len(attrs))
            for k, v in attrs.items():
                if len(k.encode()) > 256:
                    raise ApiError(400, 'The value for attribute key size is too large. You passed %d in the '
                                        'request, but the maximum value is 256.' % len(k.encode()))
                if len(v.encode()) > 1024:
                    raise ApiError(400, 'The value for attribute value size is too large. You passed %d in '
                                        'the request, but the maximum value is 1024.' % len(v.encode()))
            if m.get('messageId') or m.get('publishTime'):
                raise ApiError(400, 'messageId and publishTime are set by the server; do not send them '
                                    '(messages[%d]).' % i)
            keys.add(m.get('orderingKey') or '')
            decoded.append((data, attrs, m.get('orderingKey') or ''))
        if len(keys) > 1:
            raise ApiError(400, 'In a single publish request, all messages must have no ordering key or '
                                'they must all have the same ordering key.')
        with self.lock:
            name, _ = self._topic(project, topic)
            ids = []
            # One publishTime per request: the time the server accepted it,
            # just before it answers (Pub/Sub stamps a request's messages
            # together). Formatting it once per message cost ~10% of a
            # 1000-message publish; benchmarks read it as the ack time.
            now = _now_rfc3339()
            for data, attrs, key in decoded:
                mid = str(next(self.ids))
                msg = {'data': base64.b64encode(data).decode(), 'messageId': mid, 'publishTime': now}
                if not data:
                    del msg['data']
                if attrs:
                    msg['attributes'] = dict(attrs)
                if key:
                    msg['orderingKey'] = key
                self.history[name].append(msg)
                for s in self.subs.values():
                    if s.res.get('topic') == name:
                        s.queue.append(Delivery(msg))
                ids.append(mid)
            self.arrived.notify_all()
        # The fake keeps every message it was sent, and a full collection
        # walks them all: past a few hundred thousand messages its pauses
        # (100-160 ms) showed up in make bench's latency p99 as if the
        # bridge had stalled. Stored messages live as long as the fake, so
        # what is alive now moves out of the collector's reach (O(1)).
        gc.freeze()
        return json_response({'messageIds': ids})

    # ---- subscriptions --------------------------------------------------------
    def sub_create(self, req, project, sub):
        name = 'projects/%s/subscriptions/%s' % (project, sub)
        body = req.json()
        topic = body.get('topic')
        if not topic:
            raise ApiError(400, 'Invalid resource name given (name=). Refer to '
                                'https://cloud.google.com/pubsub/docs/pubsub-basics#resource_names for more information.')
        ack = int(body.get('ackDeadlineSeconds') or 10)
        if ack and not 10 <= ack <= 600:
            raise ApiError(400, 'Invalid ack deadline given: %d (must be between 10 and 600).' % ack)
        with self.lock:
            if name in self.subs:
                raise ApiError(409, 'Resource already exists in the project (resource=%s).' % sub)
            if topic not in self.topics:
                raise ApiError(404, 'Resource not found (resource=%s).' % topic.rsplit('/', 1)[-1])
            res = dict(body)
            res['name'] = name
            res['ackDeadlineSeconds'] = ack
            res.setdefault('messageRetentionDuration', '604800s')
            res.setdefault('state', 'ACTIVE')
            self.subs[name] = Sub(res)
            return json_response(res)

    def _sub(self, project, sub):
        name = 'projects/%s/subscriptions/%s' % (project, sub)
        s = self.subs.get(name)
        if s is None:
            raise ApiError(404, 'Resource not found (resource=%s).' % sub)
        return name, s

    def sub_get(self, req, project, sub):
        with self.lock:
            return json_response(self._sub(project, sub)[1].res)

    def sub_delete(self, req, project, sub):
        with self.lock:
            name, s = self._sub(project, sub)
            del self.subs[name]
            for d in s.queue:
                self.acks.pop(d.ack_id, None)
            return json_response({})

    def topic_subscriptions(self, req, project, topic):
        """topics.subscriptions.list: the names of the topic's subscriptions."""
        with self.lock:
            name, _ = self._topic(project, topic)
            subs = sorted(n for n, s in self.subs.items() if s.res.get('topic') == name)
            return json_response({'subscriptions': subs} if subs else {})

    def sub_list(self, req, project):
        with self.lock:
            pre = 'projects/%s/subscriptions/' % project
            subs = [s.res for n, s in sorted(self.subs.items()) if n.startswith(pre)]
            return json_response({'subscriptions': subs} if subs else {})

    def pull(self, req, project, sub):
        body = req.json()
        try:
            maxm = int(body.get('maxMessages') or 0)
        except (TypeError, ValueError):
            maxm = 0
        if maxm <= 0:
            raise ApiError(400, 'The value for max_messages is too small. You passed %d in the request, but the '
                                'minimum value is 1.' % maxm)
        wait = 0 if body.get('returnImmediately') else float(self.app.config.get('pubsub_pull_wait_seconds') or 0)
        until = time.time() + wait
        with self.lock:
            while True:
                out = self._take(project, sub, maxm)
                left = until - time.time()
                if out or left <= 0:
                    break
                # Woken by a publish; the timeout also catches deadlines
                # that expire while the pull waits.
                self.arrived.wait(min(left, 0.2))
        return json_response({'receivedMessages': out} if out else {})

    def _take(self, project, sub, maxm):
        """Deliver up to maxm messages (lock held)."""
        now = time.time()
        out = []
        name, s = self._sub(project, sub)
        ordered = bool(s.res.get('enableMessageOrdering'))
        dead_letter = bool(s.res.get('deadLetterPolicy'))
        s.queue = [d for d in s.queue if not d.acked]
        blocked = set()
        redeliver = set()       # keys whose earlier message comes again: later ones follow it
        for d in s.queue:
            if len(out) >= maxm:
                break
            key = d.msg.get('orderingKey') if ordered else None
            outstanding = d.ack_id is not None and d.expires > now
            if outstanding and not (key and key in redeliver):
                if key:
                    blocked.add(key)
                continue
            if key and key in blocked:
                continue
            if key and d.ack_id is not None:
                redeliver.add(key)
            if d.ack_id:
                self.acks.pop(d.ack_id, None)
            d.attempts += 1
            s.deliveries += 1
            d.ack_id = 'ack-%s%x-%s' % (self.ack_prefix, next(self.ack_seq), d.msg['messageId'])
            d.expires = now + s.deadline
            self.acks[d.ack_id] = (name, d)
            rm = {'ackId': d.ack_id, 'message': dict(d.msg)}
            if dead_letter:
                rm['deliveryAttempt'] = d.attempts
            out.append(rm)
        return out

    def _ack_targets(self, project, sub, ack_ids):
        if not isinstance(ack_ids, list) or not ack_ids:
            raise ApiError(400, 'No ack ids specified.')
        name, s = self._sub(project, sub)
        for a in ack_ids:
            if not isinstance(a, str) or not a.startswith('ack-'):
                raise ApiError(400, 'Some acknowledgement ids in the request were invalid. This could be '
                                    'because the acknowledgement ids have expired or the acknowledgement '
                                    'ids were malformed.')
        return [self.acks[a][1] for a in ack_ids if a in self.acks and self.acks[a][0] == name]

    def acknowledge(self, req, project, sub):
        body = req.json()
        if len(req.body) > 524288:
            raise ApiError(400, 'Request payload size exceeds the limit: 524288 bytes.')
        with self.lock:
            _, s = self._sub(project, sub)
            for d in self._ack_targets(project, sub, body.get('ackIds')):
                if not d.acked:
                    s.acked += 1
                d.acked = True
                self.acks.pop(d.ack_id, None)
        return json_response({})

    def modify_ack_deadline(self, req, project, sub):
        body = req.json()
        secs = body.get('ackDeadlineSeconds')
        if secs is None or not 0 <= int(secs) <= 600:
            raise ApiError(400, 'Invalid ack deadline given: %s (must be between 0 and 600).' % secs)
        now = time.time()
        with self.lock:
            for d in self._ack_targets(project, sub, body.get('ackIds')):
                if d.expires > now or int(secs) == 0:
                    d.expires = now + int(secs)
        return json_response({})

    # ---- control ---------------------------------------------------------------
    def backlog(self, name):
        with self.lock:
            s = self.subs.get(name)
            if s is None:
                raise ApiError(404, 'no subscription %s' % name)
            now = time.time()
            live = [d for d in s.queue if not d.acked]
            return {'unacked': len(live),
                    'outstanding': sum(1 for d in live if d.ack_id is not None and d.expires > now),
                    'deliveries': s.deliveries, 'acked': s.acked}

    def published(self, topic):
        with self.lock:
            return [dict(m) for m in self.history.get(topic, [])]


def ctl_messages(req):
    """GET /_fake/pubsub/messages?topic=projects/P/topics/T: everything ever
    published to the topic."""
    topic = req.q('topic')
    if not topic:
        raise ApiError(400, 'topic query parameter required')
    return json_response(req.app.pubsub.published(topic))


def ctl_backlog(req):
    """GET /_fake/pubsub/backlog?subscription=projects/P/subscriptions/S:
    messages not yet acknowledged, those leased now, deliveries so far
    (redeliveries included) and acknowledgements."""
    name = req.q('subscription')
    if not name:
        raise ApiError(400, 'subscription query parameter required')
    return json_response(req.app.pubsub.backlog(name))


def install(app):
    ps = PubSub(app)
    app.pubsub = ps
    app.add_module(ps)
    r = app.route
    r('PUT', P + r'/topics/([^/:]+)', ps.topic_create, api=API, method_id='pubsub.projects.topics.create')
    r('GET', P + r'/topics/([^/:]+)', ps.topic_get, api=API, method_id='pubsub.projects.topics.get')
    r('DELETE', P + r'/topics/([^/:]+)', ps.topic_delete, api=API, method_id='pubsub.projects.topics.delete')
    r('GET', P + r'/topics', ps.topic_list, api=API, method_id='pubsub.projects.topics.list')
    r('POST', P + r'/topics/([^/:]+):publish', ps.publish, api=API, method_id='pubsub.projects.topics.publish')
    r('PUT', P + r'/subscriptions/([^/:]+)', ps.sub_create, api=API, method_id='pubsub.projects.subscriptions.create')
    r('GET', P + r'/subscriptions/([^/:]+)', ps.sub_get, api=API, method_id='pubsub.projects.subscriptions.get')
    r('DELETE', P + r'/subscriptions/([^/:]+)', ps.sub_delete, api=API,
      method_id='pubsub.projects.subscriptions.delete')
    r('GET', P + r'/subscriptions', ps.sub_list, api=API, method_id='pubsub.projects.subscriptions.list')
    r('GET', P + r'/topics/([^/:]+)/subscriptions', ps.topic_subscriptions, api=API,
      method_id='pubsub.projects.topics.subscriptions.list')
    r('POST', P + r'/subscriptions/([^/:]+):pull', ps.pull, api=API, method_id='pubsub.projects.subscriptions.pull')
    r('POST', P + r'/subscriptions/([^/:]+):acknowledge', ps.acknowledge, api=API,
      method_id='pubsub.projects.subscriptions.acknowledge')
    r('POST', P + r'/subscriptions/([^/:]+):modifyAckDeadline', ps.modify_ack_deadline, api=API,
      method_id='pubsub.projects.subscriptions.modifyAckDeadline')
    r('POST', P + r'/topics/([^/:]+):testIamPermissions', ps.topic_test_iam, api=API,
      method_id='pubsub.projects.topics.testIamPermissions')
    r('POST', P + r'/subscriptions/([^/:]+):testIamPermissions', ps.sub_test_iam, api=API,
      method_id='pubsub.projects.subscriptions.testIamPermissions')
    r('GET', r'/_fake/pubsub/messages', ctl_messages, auth=False)
    r('GET', r'/_fake/pubsub/backlog', ctl_backlog, auth=False)
