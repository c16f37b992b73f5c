'use strict';
// @google-cloud/bigquery against the fake: datasets/tables, insertAll with
// insertId dedup, parameterised queries of every scalar type and arrays,
// DML (INSERT/UPDATE/MERGE ... USING UNNEST), the streaming-buffer refusal,
// paging and job polling.
const { test, before, after } = require('node:test');
const assert = require('node:assert/strict');
const { BigQuery } = require('@google-cloud/bigquery');
const fake = require('./fake');

let f;
let bq;
let ds;

before(async () => {
  f = await fake.start();
  bq = new BigQuery({ apiEndpoint: f.base, projectId: f.project, authClient: f.authClient });
  [ds] = await bq.createDataset('conf_ds');
});
after(async () => { await f.stop(); });

const SCHEMA = [
  { name: 'id', type: 'INT64', mode: 'REQUIRED' },
  { name: 'name', type: 'STRING' },
  { name: 'score', type: 'FLOAT64' },
];

test('dataset and table creation, tables.get and tables.list', async () => {
  const [t] = await ds.createTable('made', { schema: SCHEMA });
  const [meta] = await t.getMetadata();
  assert.deepEqual(meta.schema.fields.map((x) => x.name), ['id', 'name', 'score']);
  const [tables] = await ds.getTables();
  assert.ok(tables.map((x) => x.id).includes('made'));
  await t.delete();
  const [exists] = await t.exists();
  assert.equal(exists, false);
});

test('insertAll with insertId dedup, then tabledata.list', async () => {
  const [t] = await ds.createTable('stream', { schema: SCHEMA });
  const rows = [{ insertId: 'a', json: { id: 1, name: 'one' } }, { insertId: 'b', json: { id: 2, name: 'two' } }];
  await t.insert(rows, { raw: true });
  await t.insert(rows, { raw: true });
  const [got] = await t.getRows();
  assert.deepEqual(got.map((r) => r.id).sort(), [1, 2]);
});

test('scalar query parameters of every type (numbers sent as JSON numbers)', async () => {
  const [rows] = await bq.query({
    query: 'SELECT @i AS i, @f AS f, @b AS b, @s AS s, @n AS n, @d AS d, @ts AS ts, @bt AS bt',
    params: {
      i: 42, f: 1.5, b: true, s: 'str', n: '1.25', d: bq.date('2024-01-02'),
      ts: bq.timestamp('2024-01-02T03:04:05Z'), bt: Buffer.from('hi').toString('base64'),
    },
    types: { n: 'NUMERIC', bt: 'BYTES' },
  });
  const r = rows[0];
  assert.equal(r.i, 42);
  assert.equal(r.f, 1.5);
  assert.equal(r.b, true);
  assert.equal(r.s, 'str');
  assert.equal(String(r.n), '1.25');
  assert.equal(r.d.value, '2024-01-02');
  assert.equal(r.ts.value, '2024-01-02T03:04:05.000Z');
  assert.deepEqual(r.bt, Buffer.from('hi'));
});

test('array parameters with IN UNNEST', async () => {
  const [rows] = await bq.query({
    query: 'SELECT x FROM UNNEST(@xs) AS x WHERE x IN UNNEST(@keep) ORDER BY x',
    params: { xs: [3, 1, 2], keep: [1, 3] },
  });
  assert.deepEqual(rows.map((r) => r.x), [1, 3]);
});

test('UNION ALL', async () => {
  const [rows] = await bq.query('SELECT 1 AS x UNION ALL SELECT 2 AS x ORDER BY x');
  assert.deepEqual(rows.map((r) => r.x), [1, 2]);
});

test('DML INSERT, UPDATE and MERGE ... USING UNNEST(@rows)', async () => {
  await ds.createTable('dml', { schema: SCHEMA });
  await bq.query("INSERT INTO conf_ds.dml (id, name) VALUES (1, 'a'), (2, 'b')");
  await bq.query({ query: 'UPDATE conf_ds.dml SET score = @s WHERE id = @id', params: { s: 0.5, id: 1 } });
  await bq.query({
    query: `MERGE conf_ds.dml T USING UNNEST(@rows) S ON T.id = S.id
            WHEN MATCHED THEN UPDATE SET name = S.name
            WHEN NOT MATCHED THEN INSERT (id, name) VALUES (S.id, S.name)`,
    params: { rows: [{ id: 2, name: 'B' }, { id: 3, name: 'c' }] },
  });
  const [rows] = await bq.query('SELECT id, name, score FROM conf_ds.dml ORDER BY id');
  assert.deepEqual(rows.map((r) => [r.id, r.name, r.score]), [[1, 'a', 0.5], [2, 'B', null], [3, 'c', null]]);
});

test('UPDATE on rows still in the streaming buffer is refused by default', async () => {
  const [t] = await ds.createTable('buffered', { schema: SCHEMA });
  await t.insert([{ id: 1, name: 'x' }]);
  await assert.rejects(bq.query('UPDATE conf_ds.buffered SET name = "y" WHERE id = 1'),
    (e) => /streaming buffer/.test(e.message));
  const [meta] = await t.getMetadata();
  assert.ok(meta.streamingBuffer);
});

test('job polling, then paging through the results', async () => {
  // Each new query answers jobComplete=false to two polls, as a slow query
  // would; with maxResults the client makes one call, so poll first.
  await f.control('POST', '/_fake/config', { bq_slow_queries: 2 });
  try {
    const [job] = await bq.createQueryJob({ query: 'SELECT x FROM UNNEST(GENERATE_ARRAY(1, 25)) AS x ORDER BY x' });
    const [first] = await job.getMetadata();
    assert.equal(first.status.state, 'RUNNING');
    const [rows] = await job.getQueryResults();       // polls until complete
    assert.deepEqual(rows.map((r) => r.x), Array.from({ length: 25 }, (_, i) => i + 1));
    const [meta] = await job.getMetadata();
    assert.equal(meta.status.state, 'DONE');
    const seen = [];
    let query = { maxResults: 10, autoPaginate: false };
    let pages = 0;
    while (query) {
      const [page, next] = await job.getQueryResults(query);
      seen.push(...page.map((r) => r.x));
      query = next;
      pages += 1;
    }
    assert.equal(pages, 3);
    assert.equal(seen.length, 25);
    const [jobs] = await bq.getJobs();
    assert.ok(jobs.some((j) => j.id === job.id));
  } finally {
    await f.control('POST', '/_fake/config', { bq_slow_queries: 0 });
  }
});

test('errors: unknown table is a 404 with reason notFound', async () => {
  await assert.rejects(bq.query('SELECT * FROM conf_ds.missing'), (e) => e.code === 404 || /not found/i.test(e.message));
});
