'use strict';
// @google-cloud/pubsub with its REST fallback against the fake: publish with
// attributes and ordering keys, pull/ack/modifyAckDeadline, redelivery.
// The streaming-pull subscriber is gRPC only, so delivery goes through the
// generated v1 SubscriberClient's unary pull, as a REST user would.
const { test, before, after } = require('node:test');
const assert = require('node:assert/strict');
const { PubSub, v1 } = require('@google-cloud/pubsub');
const fake = require('./fake');

let f;
let pubsub;
let sub;          // v1.SubscriberClient
let pub;          // v1.PublisherClient

function clientOpts() {
  return {
    fallback: 'rest', apiEndpoint: `127.0.0.1:${f.port}`, servicePath: `127.0.0.1:${f.port}`, port: f.port, protocol: 'http', projectId: f.project,
    authClient: f.authClient,
  };
}

before(async () => {
  f = await fake.start();
  pubsub = new PubSub(clientOpts());
  sub = new v1.SubscriberClient(clientOpts());
  pub = new v1.PublisherClient(clientOpts());
});
after(async () => {
  await pubsub.close();
  await sub.close();
  await pub.close();
  await f.stop();
});

const P = () => `projects/${f.project}`;

async function pull(subscription, max = 10, returnImmediately = true) {
  const [resp] = await sub.pull({ subscription, maxMessages: max, returnImmediately });
  return resp.receivedMessages || [];
}

test('topics and subscriptions: create, get, list', async () => {
  const [topic] = await pubsub.createTopic('t-admin');
  const [s] = await topic.createSubscription('s-admin');
  const [topics] = await pubsub.getTopics();
  assert.ok(topics.some((t) => t.name === `${P()}/topics/t-admin`));
  const [subs] = await topic.getSubscriptions();
  assert.deepEqual(subs.map((x) => x.name), [`${P()}/subscriptions/s-admin`]);
  const [meta] = await s.getMetadata();
  assert.equal(meta.topic, `${P()}/topics/t-admin`);
});

test('publish with attributes, pull, ack', async () => {
  const [topic] = await pubsub.createTopic('t-basic');
  await topic.createSubscription('s-basic');
  const id = await topic.publishMessage({ data: Buffer.from('hello'), attributes: { k: 'v' } });
  assert.match(id, /^\d+$/);
  const name = `${P()}/subscriptions/s-basic`;
  const msgs = await pull(name);
  assert.equal(msgs.length, 1);
  assert.equal(Buffer.from(msgs[0].message.data).toString(), 'hello');
  assert.deepEqual(msgs[0].message.attributes, { k: 'v' });
  assert.equal(msgs[0].message.messageId, id);
  assert.ok(!msgs[0].deliveryAttempt, 'deliveryAttempt is set only with a dead-letter policy');
  await sub.acknowledge({ subscription: name, ackIds: [msgs[0].ackId] });
  await sub.modifyAckDeadline({ subscription: name, ackIds: [msgs[0].ackId], ackDeadlineSeconds: 0 });
  assert.equal((await pull(name)).length, 0);
});

test('nack (modifyAckDeadline 0) redelivers', async () => {
  const [topic] = await pubsub.createTopic('t-nack');
  await topic.createSubscription('s-nack');
  await topic.publishMessage({ data: Buffer.from('again') });
  const name = `${P()}/subscriptions/s-nack`;
  const [first] = await pull(name);
  await sub.modifyAckDeadline({ subscription: name, ackIds: [first.ackId], ackDeadlineSeconds: 0 });
  const [second] = await pull(name);
  assert.equal(second.message.messageId, first.message.messageId);
  assert.notEqual(second.ackId, first.ackId);
});

test('ordering keys: a nack redelivers the key\'s later messages too', async () => {
  const [topic] = await pubsub.createTopic('t-order');
  await topic.createSubscription('s-order', { enableMessageOrdering: true });
  topic.setPublishOptions({ messageOrdering: true });
  for (const d of ['1', '2', '3']) {
    await topic.publishMessage({ data: Buffer.from(d), orderingKey: 'k' });
  }
  const name = `${P()}/subscriptions/s-order`;
  const got = [];
  const a = await pull(name);
  got.push(...a);
  assert.equal(Buffer.from(a[0].message.data).toString(), '1');
  await sub.modifyAckDeadline({ subscription: name, ackIds: [a[0].ackId], ackDeadlineSeconds: 0 });
  // After the nack, everything for the key comes back in order, starting at 1.
  const seen = [];
  for (let i = 0; i < 10 && seen.length < 3; i++) {
    const batch = await pull(name);
    for (const m of batch) {
      seen.push(Buffer.from(m.message.data).toString());
      await sub.acknowledge({ subscription: name, ackIds: [m.ackId] });
    }
  }
  assert.deepEqual(seen, ['1', '2', '3']);
});

test('pull returns a partial batch', async () => {
  const [topic] = await pubsub.createTopic('t-batch');
  await topic.createSubscription('s-batch');
  await pub.publish({ topic: `${P()}/topics/t-batch`, messages: [{ data: Buffer.from('a') }, { data: Buffer.from('b') }] });
  const msgs = await pull(`${P()}/subscriptions/s-batch`, 10);
  assert.equal(msgs.length, 2);
});

test('pull without returnImmediately waits for a message', async () => {
  const [topic] = await pubsub.createTopic('t-wait');
  await topic.createSubscription('s-wait');
  const pending = pull(`${P()}/subscriptions/s-wait`, 10, false);
  await new Promise((r) => setTimeout(r, 300));
  await topic.publishMessage({ data: Buffer.from('late') });
  const msgs = await pending;
  assert.equal(msgs.length, 1);
  assert.equal(Buffer.from(msgs[0].message.data).toString(), 'late');
});

test('errors: publishing to a missing topic is NOT_FOUND', async () => {
  await assert.rejects(pubsub.topic('missing').publishMessage({ data: Buffer.from('x') }),
    (e) => e.code === 5 || e.code === 404);
});
