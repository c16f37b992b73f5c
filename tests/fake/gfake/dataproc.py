"""Dataproc v1 (dataproc-v1.discovery.json).

Routes (all under /v1/projects/P/regions/R):
    POST   /clusters[?requestId=]                       clusters.create -> Operation
    GET    /clusters/NAME                               clusters.get -> Cluster
    DELETE /clusters/NAME[?clusterUuid=&requestId=]     clusters.delete -> Operation
    POST   /jobs:submit                                 jobs.submit -> Job
    GET    /jobs/ID                                     jobs.get -> Job
    GET    /operations/OP                               operations.get (v1/{+name})
    POST   /operations/OP:cancel                        operations.cancel (workflows)
    POST   /workflowTemplates:instantiateInline[?requestId=]   -> Operation (WorkflowMetadata)

Time: state moves lazily, whenever anything is read, by the clock.  A
cluster is CREATING for ``dataproc_cluster_seconds`` (config, default 2;
0 = only by the control API), then RUNNING; a delete is DELETING for the
same time, then the cluster is gone.  A job is PENDING for half of
``dataproc_job_seconds`` (default 2; 0 = manual), RUNNING for the other
half, then DONE.  A job or cluster moved by the control API keeps the state
it was given until the clock moves it on from there.

Control (control.py style, no auth):
    POST /_fake/dataproc/advance  {"cluster": NAME}        next state now
                                  {"job": ID, "state": "RUNNING"|"DONE"|"ERROR", "details": "..."}
                                  {"operation": NAME}      drive it to done
    GET  /_fake/dataproc/state    clusters, jobs, operations
"""
import datetime
import re
import threading
import time
import uuid

from .server import ApiError, json_response

API = 'dataproc-v1'
P = r'/v1/projects/([^/]+)/regions/([^/]+)'
T = 'type.googleapis.com/google.cloud.dataproc.v1.'
CLUSTER_NAME_RE = re.compile(r'^[a-z](?:[a-z0-9-]{0,49}[a-z0-9])?$')
REQUEST_ID_RE = re.compile(r'^[A-Za-z0-9_-]{1,40}$')
JOB_ID_RE = re.compile(r'^[A-Za-z0-9_-]{1,100}$')
STEP_ID_RE = re.compile(r'^[A-Za-z0-9_-]{3,50}$')
JOB_TYPES = ('hadoopJob', 'sparkJob', 'pysparkJob', 'hiveJob', 'pigJob', 'sparkRJob', 'sparkSqlJob',
             'prestoJob', 'trinoJob', 'flinkJob')
METASTORE_RE = re.compile(r'^projects/[^/]+/locations/[^/]+/services/[^/]+$')


def _ts(t):
    dt = datetime.datetime.fromtimestamp(t, datetime.timezone.utc)
    return dt.strftime('%Y-%m-%dT%H:%M:%S.') + '%06dZ' % dt.microsecond


def _bad(message, field=None):
    details = None
    if field:
        details = [{'@type': 'type.googleapis.com/google.rpc.BadRequest',
                    'fieldViolations': [{'field': field, 'description': message}]}]
    return ApiError(400, message, details=details)


def _one_job_type(job, where):
    types = [k for k in JOB_TYPES if job.get(k) is not None]
    if len(types) != 1:
        raise _bad('%s must set exactly one job type (one of %s); got %s'
                   % (where, ', '.join(JOB_TYPES), ', '.join(types) or 'none'), where)
    return types[0]


def validate_cluster_config(config, where='cluster.config'):
    config = config or {}
    sw = config.get('softwareConfig') or {}
    props = sw.get('properties') or {}
    ms = config.get('metastoreConfig')
    if ms is not None:
        svc = ms.get('dataprocMetastoreService')
        if not svc:
            raise _bad('%s.metastoreConfig.dataprocMetastoreService is required' % where,
                       where + '.metastore_config.dataproc_metastore_service')
        if not METASTORE_RE.match(svc):
            raise _bad('Invalid Dataproc Metastore service name %r: expected '
                       'projects/[project_id]/locations/[dataproc_region]/services/[service-name]' % svc,
                       where + '.metastore_config.dataproc_metastore_service')
        if 'hive:hive.metastore.uris' in props:
            raise _bad('Cannot set both metastore_config and the cluster property hive:hive.metastore.uris',
                       where + '.metastore_config')
    for k in props:
        if ':' not in k:
            raise _bad('Invalid cluster property %r: properties must have the form prefix:property' % k,
                       where + '.software_config.properties')


def _check_labels(labels, where):
    if len(labels) > 32:
        raise _bad('At most 32 labels are allowed', where)
    for k, v in labels.items():
        if not re.match(r'^[a-z][a-z0-9_-]{0,62}$', k) or not re.match(r'^[a-z0-9_-]{0,63}$', v or ''):
            raise _bad('Invalid label %r=%r' % (k, v), where)


class Cluster:
    def __init__(self, project, region, name, body, now):
        self.project, self.region, self.name = project, region, name
        self.uuid = str(uuid.uuid4())
        self.body = body
        self.state = 'CREATING'
        self.t = now
        self.history = []
        self.op = None              # the in-flight create/delete Operation name

    @property
    def full(self):
        return 'projects/%s/regions/%s/clusters/%s' % (self.project, self.region, self.name)

    def set_state(self, state, t):
        self.history.append({'state': self.state, 'stateStartTime': _ts(self.t)})
        self.state, self.t = state, t

    def resource(self):
        res = {k: v for k, v in self.body.items() if k not in ('status', 'statusHistory', 'clusterUuid', 'metrics')}
        res['projectId'] = self.project
        res['clusterName'] = self.name
        res['clusterUuid'] = self.uuid
        labels = dict(res.get('labels') or {})
        labels.update({'goog-dataproc-cluster-name': self.name, 'goog-dataproc-cluster-uuid': self.uuid,
                       'goog-dataproc-location': self.region})
        res['labels'] = labels
        if 'config' in res:
            cfg = dict(res['config'] or {})
            cfg.setdefault('configBucket', 'dataproc-staging-%s-fake' % self.region)
            cfg.setdefault('tempBucket', 'dataproc-temp-%s-fake' % self.region)
            res['config'] = cfg
        res['status'] = {'state': self.state, 'stateStartTime': _ts(self.t)}
        if self.history:
            res['statusHistory'] = list(self.history)
        return res


class Job:
    def __init__(self, project, region, job_id, body, cluster, now):
        self.project, self.region, self.job_id = project, region, job_id
        self.body = body
        self.cluster = cluster
        self.uuid = str(uuid.uuid4())
        self.state = 'PENDING'
        self.t = self.t0 = now
        self.details = None
        self.history = []

    def set_state(self, state, t, details=None):
        self.history.append({'state': self.state, 'stateStartTime': _ts(self.t)})
        self.state, self.t = state, t
        if details is not None:
            self.details = details

    @property
    def done(self):
        return self.state in ('DONE', 'ERROR', 'CANCELLED')

    def resource(self):
        res = dict(self.body)
        res['reference'] = {'projectId': self.project, 'jobId': self.job_id}
        pl = dict(res.get('placement') or {})
        pl['clusterName'] = self.cluster.name
        pl['clusterUuid'] = self.cluster.uuid
        res['placement'] = pl
        status = {'state': self.state, 'stateStartTime': _ts(self.t)}
        if self.details:
            status['details'] = self.details
        res['status'] = status
        if self.history:
            res['statusHistory'] = list(self.history)
        res['driverControlFilesUri'] = 'gs://dataproc-staging-%s-fake/google-cloud-dataproc-metainfo/%s/jobs/%s/' % (
            self.region, self.cluster.uuid, self.job_id)
        res['driverOutputResourceUri'] = res['driverControlFilesUri'] + 'driveroutput'
        res['jobUuid'] = self.uuid
        res['done'] = self.done
        return res


class Operation:
    def __init__(self, project, region, kind, now):
        self.name = 'projects/%s/regions/%s/operations/%s' % (project, region, uuid.uuid4())
        self.kind = kind                # CREATE | DELETE | WORKFLOW
        self.t0 = now
        self.cluster = None
        self.done = False
        self.error = None
        self.response = None
        self.end = None
        # workflow only
        self.template = None
        self.steps = []                 # [{'stepId','prereq','job': Job|None, 'spec'}]
        self.phase = None               # CREATING | RUNNING_JOBS | DELETING | DONE

    def finish(self, now, response=None, error=None):
        self.done, self.response, self.error, self.end = True, response, error, now

    def resource(self):
        res = {'name': self.name, 'done': self.done}
        c = self.cluster
        if self.kind in ('CREATE', 'DELETE'):
            st = 'DONE' if self.done else 'RUNNING'
            res['metadata'] = {
                '@type': T + 'ClusterOperationMetadata',
                'clusterName': c.name, 'clusterUuid': c.uuid,
                'status': {'state': st, 'innerState': st, 'stateStartTime': _ts(self.end or self.t0)},
                'statusHistory': [{'state': 'PENDING', 'stateStartTime': _ts(self.t0)}],
                'operationType': self.kind,
                'description': '%s cluster %s' % ('Create' if self.kind == 'CREATE' else 'Delete', c.name),
                'labels': dict(c.body.get('labels') or {}),
            }
        else:
            nodes = []
            for s in self.steps:
                n = {'stepId': s['stepId'], 'state': s['node_state']}
                if s['prereq']:
                    n['prerequisiteStepIds'] = list(s['prereq'])
                if s['job'] is not None:
                    n['jobId'] = s['job'].job_id
                if s.get('error'):
                    n['error'] = s['error']
                nodes.append(n)
            md = {'@type': T + 'WorkflowMetadata', 'template': self.template.get('id') or '',
                  'version': int(self.template.get('version') or 0),
                  'state': 'DONE' if self.done else ('PENDING' if self.phase == 'CREATING' else 'RUNNING'),
                  'graph': {'nodes': nodes}, 'startTime': _ts(self.t0), 'parameters': {}}
            if c is not None:
                md['clusterName'] = c.name
                md['clusterUuid'] = c.uuid
                md['createCluster'] = {'operationId': self.name + '-create', 'done': c.state != 'CREATING'}
                if self.phase in ('DELETING', 'DONE'):
                    md['deleteCluster'] = {'operationId': self.name + '-delete', 'done': self.phase == 'DONE'}
            if self.done:
                md['endTime'] = _ts(self.end)
            res['metadata'] = md
        if self.done:
            if self.error is not None:
                res['error'] = self.error
            else:
                res['response'] = self.response
        return res


class Dataproc:
    def __init__(self, app):
        self.app = app
        self.lock = threading.RLock()
        self.reset()

    def reset(self):
        with self.lock:
            self.clusters = {}          # (project, region, name) -> Cluster
            self.jobs = {}              # (project, jobId) -> Job  (job ids are unique per project)
            self.ops = {}               # name -> Operation
            self.request_ids = {}       # (kind, project, region, requestId) -> op name / job key

    # ---- the clock -------------------------------------------------------------
    def _secs(self, key):
        return float(self.app.config.get(key, 2) or 0)

    def _tick(self, force_op=None):
        now = time.time()
        cs = self._secs('dataproc_cluster_seconds')
        js = self._secs('dataproc_job_seconds')
        for _ in range(20):            # until nothing changes (one change can enable the next)
            changed = False
            for key, c in list(self.clusters.items()):
                if c.state in ('CREATING', 'DELETING') and cs > 0 and now >= c.t + cs:
                    changed |= self._cluster_step(key, c, c.t + cs)
            for j in self.jobs.values():
                if js > 0 and j.state == 'PENDING' and now >= j.t + js / 2:
                    j.set_state('RUNNING', j.t + js / 2)
                    changed = True
                if js > 0 and j.state == 'RUNNING' and now >= j.t + js / 2:
                    j.set_state('DONE', j.t + js / 2)
                    changed = True
            for op in self.ops.values():
                if op.kind == 'WORKFLOW' and not op.done:
                    changed |= self._workflow_step(op, now)
            if not changed:
                break

    def _cluster_step(self, key, c, t):
        """CREATING -> RUNNING, DELETING -> gone; completes the cluster's operation."""
        if c.state == 'CREATING':
            c.set_state('RUNNING', t)
            op = self.ops.get(c.op)
            if op is not None and op.kind == 'CREATE':
                res = c.resource()
                res['@type'] = T + 'Cluster'
                op.finish(t, response=res)
            return True
        if c.state == 'DELETING':
            del self.clusters[key]
            c.state = 'DELETED'
            op = self.ops.get(c.op)
            if op is not None and op.kind == 'DELETE':
                op.finish(t, response={'@type': 'type.googleapis.com/google.protobuf.Empty'})
            return True
        return False

    def _workflow_step(self, op, now):
        c = op.cluster
        if op.phase in ('CREATING', 'RUNNING_JOBS') and c.state in ('DELETING', 'DELETED'):
            # its cluster was deleted from outside: the workflow fails
            op.cluster_lost = True
            for s in op.steps:
                j = s['job']
                if j is not None and not j.done:
                    j.set_state('ERROR', now, 'Job failed: its cluster was deleted')
                s['node_state'] = 'FAILED' if j is not None else 'BLOCKED'
            op.phase = 'DELETING'
            return True
        if op.phase == 'CREATING':
            if c.state != 'RUNNING':
                return False
            op.phase = 'RUNNING_JOBS'
            return True
        if op.phase == 'RUNNING_JOBS':
            changed = False
            failed = False
            for s in op.steps:
                j = s['job']
                if j is not None:
                    new = {'PENDING': 'RUNNING', 'RUNNING': 'RUNNING', 'DONE': 'COMPLETED',
                           'ERROR': 'FAILED', 'CANCELLED': 'FAILED'}.get(j.state, 'RUNNING')
                    if new != s['node_state']:
                        s['node_state'] = new
                        if new == 'FAILED':
                            s['error'] = j.details or 'Job failed'
                        changed = True
                    failed |= new == 'FAILED'
            if not failed:
                states = {s['stepId']: s['node_state'] for s in op.steps}
                for s in op.steps:
                    if s['job'] is None and all(states[p] == 'COMPLETED' for p in s['prereq']):
                        body = {k: v for k, v in s['spec'].items() if k not in ('stepId', 'prerequisiteStepIds')}
                        jid = '%s-%s' % (s['stepId'], uuid.uuid4().hex[:12])
                        s['job'] = self.jobs[(c.project, jid)] = Job(c.project, c.region, jid, body, c, now)
                        s['node_state'] = 'RUNNING'
                        changed = True
            if failed or all(s['node_state'] == 'COMPLETED' for s in op.steps):
                for s in op.steps:
                    if s['job'] is None:
                        s['node_state'] = 'BLOCKED' if failed else s['node_state']
                op.failed_step = next((s for s in op.steps if s['node_state'] == 'FAILED'), None)
                op.phase = 'DELETING'
                c.set_state('DELETING', now)
                changed = True
            return changed
        if op.phase == 'DELETING':
            if c.state != 'DELETED':
                return False
            op.phase = 'DONE'
            fs = getattr(op, 'failed_step', None)
            if getattr(op, 'cancelled', False):
                op.finish(now, error={'code': 1, 'message': 'Workflow was cancelled'})
            elif getattr(op, 'cluster_lost', False):
                op.finish(now, error={'code': 9, 'message': 'Workflow failed: cluster %s was deleted' % c.name})
            elif fs is not None:
                op.finish(now, error={'code': 9, 'message': 'Workflow failed. Job %s (step %s) failed: %s'
                                      % (fs['job'].job_id, fs['stepId'], fs.get('error'))})
            else:
                op.finish(now, response={'@type': 'type.googleapis.com/google.protobuf.Empty'})
            return True
        return False

    # ---- helpers ---------------------------------------------------------------
    def _request_id(self, req, body_rid=None):
        rid = body_rid if body_rid is not None else req.q('requestId')
        if rid is not None and rid != '' and not REQUEST_ID_RE.match(rid):
            raise _bad('Invalid request_id %r: it must contain only letters (a-z, A-Z), numbers (0-9), '
                       'underscores (_), and hyphens (-), and be at most 40 characters long' % rid, 'request_id')
        return rid or None

    def _cluster(self, project, region, name):
        c = self.clusters.get((project, region, name))
        if c is None:
            raise ApiError(404, 'Not found: Cluster projects/%s/regions/%s/clusters/%s' % (project, region, name))
        return c

    def _check_cluster_body(self, body, project):
        name = body.get('clusterName')
        if not name:
            raise _bad('Cluster name is required', 'cluster.cluster_name')
        if not CLUSTER_NAME_RE.match(name):
            raise _bad('Cluster name %r must start with a lowercase letter followed by up to 50 lowercase letters, '
                       'numbers, or hyphens, and cannot end with a hyphen' % name, 'cluster.cluster_name')
        if body.get('projectId') not in (None, project):
            raise _bad('Project ID in the cluster (%s) does not match the request project (%s)'
                       % (body['projectId'], project), 'cluster.project_id')
        if (body.get('config') is None) == (body.get('virtualClusterConfig') is None):
            raise _bad('Exactly one of cluster.config or cluster.virtual_cluster_config must be specified',
                       'cluster.config')
        if body.get('config') is not None:
            validate_cluster_config(body['config'])
        _check_labels(body.get('labels') or {}, 'cluster.labels')
        return name

    # ---- clusters --------------------------------------------------------------
    def cluster_create(self, req, project, region):
        body = req.json()
        with self.lock:
            self._tick()
            rid = self._request_id(req)
            if rid:
                prev = self.request_ids.get(('create', project, region, rid))
                if prev is not None:
                    return json_response(self.ops[prev].resource())
            name = self._check_cluster_body(body, project)
            if (project, region, name) in self.clusters:
                raise ApiError(409, 'Already exists: Failed to create cluster: Cluster projects/%s/regions/%s/clusters/%s'
                               % (project, region, name))
            now = time.time()
            c = Cluster(project, region, name, body, now)
            op = Operation(project, region, 'CREATE', now)
            op.cluster = c
            c.op = op.name
            self.clusters[(project, region, name)] = c
            self.ops[op.name] = op
            if rid:
                self.request_ids[('create', project, region, rid)] = op.name
            return json_response(op.resource())

    def cluster_get(self, req, project, region, name):
        with self.lock:
            self._tick()
            return json_response(self._cluster(project, region, name).resource())

    def cluster_delete(self, req, project, region, name):
        with self.lock:
            self._tick()
            rid = self._request_id(req)
            if rid:
                prev = self.request_ids.get(('delete', project, region, rid))
                if prev is not None:
                    return json_response(self.ops[prev].resource())
            c = self._cluster(project, region, name)
            want = req.q('clusterUuid')
            if want and want != c.uuid:
                raise ApiError(404, 'Not found: Cluster projects/%s/regions/%s/clusters/%s with UUID %s (the '
                                    'cluster now has UUID %s)' % (project, region, name, want, c.uuid))
            if c.state == 'DELETING':
                raise ApiError(400, 'Cluster %s is in the DELETING state and cannot be deleted' % c.full,
                               status='FAILED_PRECONDITION')
            now = time.time()
            c.set_state('DELETING', now)
            op = Operation(project, region, 'DELETE', now)
            op.cluster = c
            c.op = op.name
            self.ops[op.name] = op
            if rid:
                self.request_ids[('delete', project, region, rid)] = op.name
            return json_response(op.resource())

    # ---- jobs ------------------------------------------------------------------
    def job_submit(self, req, project, region):
        body = req.json()
        with self.lock:
            self._tick()
            rid = self._request_id(req, body.get('requestId'))
            if rid:
                prev = self.request_ids.get(('job', project, region, rid))
                if prev is not None:
                    return json_response(self.jobs[prev].resource())
            job = body.get('job')
            if not job:
                raise _bad('job is required', 'job')
            _one_job_type(job, 'job')
            ref = job.get('reference') or {}
            if ref.get('projectId') not in (None, project):
                raise _bad('Job project %s does not match the request project %s' % (ref['projectId'], project),
                           'job.reference.project_id')
            jid = ref.get('jobId') or uuid.uuid4().hex
            if not JOB_ID_RE.match(jid):
                raise _bad('Job id %r must contain only letters (a-z, A-Z), numbers (0-9), underscores (_) or '
                           'hyphens (-), and be at most 100 characters long' % jid, 'job.reference.job_id')
            if (project, jid) in self.jobs:
                raise ApiError(409, 'Already exists: Failed to submit job: Job projects/%s/regions/%s/jobs/%s'
                               % (project, region, jid))
            cname = (job.get('placement') or {}).get('clusterName')
            if not cname:
                raise _bad('job.placement.clusterName is required', 'job.placement.cluster_name')
            c = self._cluster(project, region, cname)
            if c.state != 'RUNNING':
                raise ApiError(400, 'Cluster %s is in state %s; jobs can only be submitted to RUNNING clusters'
                               % (c.full, c.state), status='FAILED_PRECONDITION')
            j = Job(project, region, jid, job, c, time.time())
            self.jobs[(project, jid)] = j
            if rid:
                self.request_ids[('job', project, region, rid)] = (project, jid)
            return json_response(j.resource())

    def job_get(self, req, project, region, jid):
        with self.lock:
            self._tick()
            j = self.jobs.get((project, jid))
            if j is None or j.region != region:
                raise ApiError(404, 'Not found: Job projects/%s/regions/%s/jobs/%s' % (project, region, jid))
            return json_response(j.resource())

    # ---- lists --------------------------------------------------------------------
    CLUSTER_ACTIVE = ('CREATING', 'RUNNING', 'UPDATING', 'STARTING', 'STOPPING', 'REPAIRING')

    def _filter_terms(self, text):
        """`a = b AND c = d` (the form the clusters.list/jobs.list docs give);
        values may be quoted.  Other filter syntax is a 400 here."""
        terms = []
        for t in re.split(r'\s+AND\s+', (text or '').strip(), flags=re.I) if text and text.strip() else []:
            m = re.match(r'^([A-Za-z_.\-]+)\s*[=:]\s*"?([^"]*)"?$', t.strip())
            if not m:
                raise _bad('Invalid filter: %s' % text, 'filter')
            terms.append((m.group(1), m.group(2)))
        return terms

    def _page(self, req, items, key):
        try:
            size = int(req.q('pageSize') or 0) or 200
            start = int(req.q('pageToken') or 0)
        except ValueError:
            raise _bad('Invalid pageSize or pageToken', 'page_token')
        page = items[start:start + size]
        out = {key: page} if page else {}
        if start + size < len(items):
            out['nextPageToken'] = str(start + size)
        return out

    def cluster_list(self, req, project, region):
        """clusters.list: filter on clusterName, status.state (ACTIVE,
        INACTIVE, or a state) and labels.KEY; pageSize/pageToken."""
        terms = self._filter_terms(req.q('filter'))
        with self.lock:
            self._tick()
            out = []
            for (p, r, _), c in sorted(self.clusters.items()):
                if (p, r) != (project, region):
                    continue
                res = c.resource()
                ok = True
                for k, v in terms:
                    if k.lower() in ('clustername', 'cluster_name'):
                        ok = ok and c.name == v
                    elif k.lower() in ('status.state', 'status_state'):
                        v = v.upper()
                        ok = ok and (c.state in self.CLUSTER_ACTIVE if v == 'ACTIVE' else
                                     c.state not in self.CLUSTER_ACTIVE if v == 'INACTIVE' else c.state == v)
                    elif k.startswith('labels.'):
                        ok = ok and res['labels'].get(k[7:]) == v
                    else:
                        raise _bad('Invalid filter field: %s' % k, 'filter')
                if ok:
                    out.append(res)
            return json_response(self._page(req, out, 'clusters'))

    def job_list(self, req, project, region):
        """jobs.list: clusterName, jobStateMatcher (ALL, ACTIVE, NON_ACTIVE),
        filter on status.state (ACTIVE, NON_ACTIVE) and labels.KEY;
        pageSize/pageToken."""
        cname = req.q('clusterName')
        matcher = (req.q('jobStateMatcher') or 'ALL').upper()
        if matcher not in ('ALL', 'ACTIVE', 'NON_ACTIVE'):
            raise _bad('Invalid jobStateMatcher: %s' % matcher, 'job_state_matcher')
        terms = self._filter_terms(req.q('filter'))
        with self.lock:
            self._tick()
            out = []
            for j in sorted(self.jobs.values(), key=lambda j: j.t0):
                if j.project != project or j.region != region or (cname and j.cluster.name != cname):
                    continue
                if (matcher == 'ACTIVE' and j.done) or (matcher == 'NON_ACTIVE' and not j.done):
                    continue
                ok = True
                for k, v in terms:
                    if k.lower() in ('status.state', 'status_state'):
                        ok = ok and (not j.done if v.upper() == 'ACTIVE' else j.done)
                    elif k.startswith('labels.'):
                        ok = ok and (j.body.get('labels') or {}).get(k[7:]) == v
                    else:
                        raise _bad('Invalid filter field: %s' % k, 'filter')
                if ok:
                    out.append(j.resource())
            return json_response(self._page(req, out, 'jobs'))

    # ---- operations ------------------------------------------------------------
    def operation_get(self, req, project, region, opid):
        name = 'projects/%s/regions/%s/operations/%s' % (project, region, opid)
        with self.lock:
            self._tick()
            op = self.ops.get(name)
            if op is None:
                raise ApiError(404, 'Operation not found: %s' % name)
            return json_response(op.resource())

    def operation_cancel(self, req, project, region, opid):
        """operations.cancel: a running workflow's jobs are cancelled, its
        cluster is deleted, and the operation ends with error code 1
        (CANCELLED), as the discovery document describes a successful
        cancellation.  A done operation is left as it is."""
        name = 'projects/%s/regions/%s/operations/%s' % (project, region, opid)
        with self.lock:
            self._tick()
            op = self.ops.get(name)
            if op is None:
                raise ApiError(404, 'Operation not found: %s' % name)
            if op.done:
                return json_response({})
            if op.kind != 'WORKFLOW':
                raise ApiError(400, 'gfake: only workflow operations can be cancelled', status='FAILED_PRECONDITION')
            now = time.time()
            op.cancelled = True
            for s in op.steps:
                j = s['job']
                if j is not None and not j.done:
                    j.set_state('CANCELLED', now, 'Job cancelled: the workflow was cancelled')
                    s['node_state'] = 'FAILED'
                    s['error'] = j.details
                elif j is None:
                    s['node_state'] = 'BLOCKED'
            c = op.cluster
            if op.phase in ('CREATING', 'RUNNING_JOBS'):
                op.phase = 'DELETING'
                if c.state != 'DELETING':
                    c.set_state('DELETING', now)
            self._tick()
            return json_response({})

    # ---- workflow templates ----------------------------------------------------
    def instantiate_inline(self, req, project, region):
        body = req.json()
        with self.lock:
            self._tick()
            rid = self._request_id(req)
            if rid:
                # The discovery document: the tag "prevents multiple concurrent
                # workflow instances with the same tag from running". Unlike
                # clusters.create's requestId it is no idempotency key: once
                # the first instance has ended, the same tag starts another.
                prev = self.request_ids.get(('workflow', project, region, rid))
                if prev is not None and not self.ops[prev].done:
                    return json_response(self.ops[prev].resource())
            jobs = body.get('jobs') or []
            if not jobs:
                raise _bad('A workflow template must have at least one job', 'template.jobs')
            steps, seen = [], set()
            for i, j in enumerate(jobs):
                sid = j.get('stepId') or ''
                if not STEP_ID_RE.match(sid):
                    raise _bad('jobs[%d].stepId %r must be 3-50 letters, numbers, underscores or hyphens' % (i, sid),
                               'template.jobs[%d].step_id' % i)
                if sid in seen:
                    raise _bad('Duplicate step id %r' % sid, 'template.jobs[%d].step_id' % i)
                seen.add(sid)
                _one_job_type(j, 'template.jobs[%d]' % i)
                steps.append({'stepId': sid, 'prereq': list(j.get('prerequisiteStepIds') or []), 'job': None,
                              'spec': j, 'node_state': 'BLOCKED'})
            for s in steps:
                for p in s['prereq']:
                    if p not in seen or p == s['stepId']:
                        raise _bad('Step %r has an unknown prerequisite step %r' % (s['stepId'], p),
                                   'template.jobs.prerequisite_step_ids')
            pl = body.get('placement') or {}
            mc = pl.get('managedCluster')
            if (mc is None) == (pl.get('clusterSelector') is None):
                raise _bad('Exactly one of placement.managedCluster or placement.clusterSelector must be set',
                           'template.placement')
            if mc is None:
                raise ApiError(501, 'gfake: clusterSelector placement is not implemented', status='UNIMPLEMENTED')
            base = mc.get('clusterName') or ''
            if not CLUSTER_NAME_RE.match(base) or len(base) > 40:
                raise _bad('Managed cluster name %r must start with a lowercase letter, be at most 40 lowercase '
                           'letters, numbers or hyphens, and not end with a hyphen' % base,
                           'template.placement.managed_cluster.cluster_name')
            if mc.get('config') is None:
                raise _bad('placement.managedCluster.config is required', 'template.placement.managed_cluster.config')
            validate_cluster_config(mc['config'], 'template.placement.managed_cluster.config')
            # WorkflowTemplate.labels: "propagated to all jobs and clusters created by the workflow instance"
            tlabels = body.get('labels') or {}
            _check_labels(tlabels, 'template.labels')
            for s in steps:
                if tlabels:
                    s['spec'] = dict(s['spec'], labels=dict(tlabels, **(s['spec'].get('labels') or {})))
            now = time.time()
            name = '%s-%s' % (base, uuid.uuid4().hex[:10])
            c = Cluster(project, region, name, {'config': mc['config'],
                                                'labels': dict(tlabels, **(mc.get('labels') or {}))}, now)
            self.clusters[(project, region, name)] = c
            op = Operation(project, region, 'WORKFLOW', now)
            op.cluster = c
            op.template = body
            op.steps = steps
            op.phase = 'CREATING'
            self.ops[op.name] = op
            if rid:
                self.request_ids[('workflow', project, region, rid)] = op.name
            return json_response(op.resource())

    # ---- control ---------------------------------------------------------------
    def ctl_advance(self, req):
        body = req.json()
        with self.lock:
            self._tick()
            now = time.time()
            if 'cluster' in body:
                hits = [(k, c) for k, c in self.clusters.items() if k[2] == body['cluster']]
                if not hits:
                    raise ApiError(404, 'no cluster %r' % body['cluster'])
                k, c = hits[0]
                if not self._cluster_step(k, c, now):
                    raise ApiError(400, 'cluster %r is %s: nothing to advance' % (body['cluster'], c.state))
                self._tick()
                return json_response({'cluster': body['cluster'], 'state': c.state})
            if 'job' in body:
                hits = [j for (p, jid), j in self.jobs.items() if jid == body['job']]
                if not hits:
                    raise ApiError(404, 'no job %r' % body['job'])
                state = body.get('state', 'DONE')
                if state not in ('RUNNING', 'DONE', 'ERROR', 'CANCELLED'):
                    raise ApiError(400, 'state must be RUNNING, DONE, ERROR or CANCELLED')
                j = hits[0]
                details = body.get('details')
                if state == 'ERROR' and not details:
                    details = 'Job failed with message [injected by gfake]'
                j.set_state(state, now, details)
                self._tick()
                return json_response(j.resource())
            if 'operation' in body:
                op = self.ops.get(body['operation'])
                if op is None:
                    raise ApiError(404, 'no operation %r' % body['operation'])
                for _ in range(100):
                    if op.done:
                        break
                    c = op.cluster
                    key = (c.project, c.region, c.name)
                    if c.state in ('CREATING', 'DELETING'):
                        self._cluster_step(key, c, time.time())
                    for s in op.steps:
                        j = s['job']
                        if j is not None and not j.done:
                            j.set_state('DONE', time.time())
                    self._tick()
                return json_response(op.resource())
            raise ApiError(400, 'give one of "cluster", "job", "operation"')

    def ctl_state(self, req):
        with self.lock:
            self._tick()
            return json_response({
                'clusters': [c.resource() for c in self.clusters.values()],
                'jobs': [j.resource() for j in self.jobs.values()],
                'operations': [op.resource() for op in self.ops.values()],
            })


CONFIG = {'dataproc_cluster_seconds': ((int, float), 2), 'dataproc_job_seconds': ((int, float), 2)}


def install(app):
    dp = Dataproc(app)
    app.dataproc = dp
    app.add_module(dp)
    r = app.route
    m = 'dataproc.projects.regions.'
    r('POST', P + r'/clusters', dp.cluster_create, api=API, method_id=m + 'clusters.create')
    r('GET', P + r'/clusters', dp.cluster_list, api=API, method_id=m + 'clusters.list')
    r('GET', P + r'/clusters/([^/:]+)', dp.cluster_get, api=API, method_id=m + 'clusters.get')
    r('DELETE', P + r'/clusters/([^/:]+)', dp.cluster_delete, api=API, method_id=m + 'clusters.delete')
    r('POST', P + r'/jobs:submit', dp.job_submit, api=API, method_id=m + 'jobs.submit')
    r('GET', P + r'/jobs', dp.job_list, api=API, method_id=m + 'jobs.list')
    r('GET', P + r'/jobs/([^/:]+)', dp.job_get, api=API, method_id=m + 'jobs.get')
    r('GET', P + r'/operations/([^/:]+)', dp.operation_get, api=API, method_id=m + 'operations.get')
    r('POST', P + r'/operations/([^/:]+):cancel', dp.operation_cancel, api=API, method_id=m + 'operations.cancel')
    r('POST', P + r'/workflowTemplates:instantiateInline', dp.instantiate_inline, api=API,
      method_id=m + 'workflowTemplates.instantiateInline')
    r('POST', r'/_fake/dataproc/advance', dp.ctl_advance, auth=False)
    r('GET', r'/_fake/dataproc/state', dp.ctl_state, auth=False)
