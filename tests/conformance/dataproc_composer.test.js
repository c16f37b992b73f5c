'use strict';
// googleapis (Dataproc v1, Composer v1) against the fake: clusters
// create/poll/list/delete, jobs submit/get/list, instantiateInline with a
// managed cluster, Composer environments created through the control API,
// and the Airflow v1 API behind airflowUri.
const { test, before, after } = require('node:test');
const assert = require('node:assert/strict');
const { google } = require('googleapis');
const fake = require('./fake');

let f;
let dataproc;
let composer;
const REGION = 'europe-west1';

before(async () => {
  f = await fake.start();
  await f.control('POST', '/_fake/config', { dataproc_cluster_seconds: 0.2, dataproc_job_seconds: 0.2 });
  // googleapis carries its own google-auth-library; give it one of its own.
  const auth = new google.auth.OAuth2();
  auth.setCredentials({ access_token: 'fake-static-token', expiry_date: Date.now() + 24 * 3600e3 });
  const opts = { auth, rootUrl: f.base + '/' };
  dataproc = google.dataproc({ version: 'v1', ...opts });
  composer = google.composer({ version: 'v1', ...opts });
});
after(async () => { await f.stop(); });

async function waitOp(name) {
  for (let i = 0; i < 100; i++) {
    const { data } = await dataproc.projects.regions.operations.get({ name });
    if (data.done) return data;
    await new Promise((r) => setTimeout(r, 100));
  }
  throw new Error(`operation ${name} never finished`);
}

const CONFIG = { masterConfig: { numInstances: 1 }, workerConfig: { numInstances: 2 } };

test('clusters: create, poll, get, list, delete', async () => {
  const { data: op } = await dataproc.projects.regions.clusters.create({
    projectId: f.project, region: REGION, requestId: 'req-1',
    requestBody: { projectId: f.project, clusterName: 'c1', config: CONFIG },
  });
  assert.equal(op.done, false);
  const done = await waitOp(op.name);
  assert.equal(done.response.clusterName, 'c1');
  const { data: c } = await dataproc.projects.regions.clusters.get({ projectId: f.project, region: REGION, clusterName: 'c1' });
  assert.equal(c.status.state, 'RUNNING');
  const { data: list } = await dataproc.projects.regions.clusters.list({ projectId: f.project, region: REGION });
  assert.deepEqual(list.clusters.map((x) => x.clusterName), ['c1']);
  const { data: del } = await dataproc.projects.regions.clusters.delete({ projectId: f.project, region: REGION, clusterName: 'c1' });
  await waitOp(del.name);
  await assert.rejects(dataproc.projects.regions.clusters.get({ projectId: f.project, region: REGION, clusterName: 'c1' }),
    (e) => e.code === 404);
});

test('jobs: submit, poll, list', async () => {
  const { data: op } = await dataproc.projects.regions.clusters.create({
    projectId: f.project, region: REGION, requestBody: { projectId: f.project, clusterName: 'c2', config: CONFIG },
  });
  await waitOp(op.name);
  const { data: job } = await dataproc.projects.regions.jobs.submit({
    projectId: f.project, region: REGION,
    requestBody: { job: { placement: { clusterName: 'c2' }, reference: { jobId: 'j1' },
      sparkJob: { mainClass: 'Main', jarFileUris: ['gs://b/app.jar'] } } },
  });
  assert.equal(job.reference.jobId, 'j1');
  let state;
  for (let i = 0; i < 100; i++) {
    const { data } = await dataproc.projects.regions.jobs.get({ projectId: f.project, region: REGION, jobId: 'j1' });
    state = data.status.state;
    if (state === 'DONE' || state === 'ERROR') break;
    await new Promise((r) => setTimeout(r, 100));
  }
  assert.equal(state, 'DONE');
  const { data: jobs } = await dataproc.projects.regions.jobs.list({ projectId: f.project, region: REGION, clusterName: 'c2' });
  assert.deepEqual(jobs.jobs.map((j) => j.reference.jobId), ['j1']);
});

test('workflowTemplates.instantiateInline with a managed cluster', async () => {
  const { data: op } = await dataproc.projects.regions.workflowTemplates.instantiateInline({
    parent: `projects/${f.project}/regions/${REGION}`,
    requestBody: {
      placement: { managedCluster: { clusterName: 'wf', config: CONFIG } },
      jobs: [{ stepId: 'step-a', sparkJob: { mainClass: 'A', jarFileUris: ['gs://b/a.jar'] } },
        { stepId: 'step-b', prerequisiteStepIds: ['step-a'], sparkJob: { mainClass: 'B', jarFileUris: ['gs://b/b.jar'] } }],
    },
  });
  const done = await waitOp(op.name);
  assert.ok(!done.error, JSON.stringify(done.error));
  assert.deepEqual(done.metadata.graph.nodes.map((n) => n.state), ['COMPLETED', 'COMPLETED']);
});

test('composer: an environment exists only once created, with its state and airflowUri', async () => {
  const name = `projects/${f.project}/locations/${REGION}/environments/env1`;
  await assert.rejects(composer.projects.locations.environments.get({ name }), (e) => e.code === 404);
  await f.control('POST', '/_fake/composer/environments', { name, state: 'CREATING' });
  let { data: env } = await composer.projects.locations.environments.get({ name });
  assert.equal(env.state, 'CREATING');
  await f.control('POST', '/_fake/composer/environments', { name, state: 'RUNNING' });
  ({ data: env } = await composer.projects.locations.environments.get({ name }));
  assert.equal(env.state, 'RUNNING');
  assert.equal(env.config.airflowUri, f.base + '/airflow');
  // The Airflow REST API behind airflowUri, with the same Google token.
  await f.control('POST', '/_fake/airflow/dags', { dag_id: 'd1' });
  const res = await fetch(env.config.airflowUri + '/api/v1/dags/d1/dagRuns', {
    method: 'POST', headers: { authorization: 'Bearer fake-static-token', 'content-type': 'application/json' },
    body: JSON.stringify({ dag_run_id: 'r1', conf: {} }),
  });
  assert.equal(res.status, 200);
  assert.equal((await res.json()).state, 'queued');
});
