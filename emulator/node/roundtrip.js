#!/usr/bin/env node
// Drive a Pub/Sub emulator once with the official Node.js client
// (@google-cloud/pubsub): create a topic and a subscription, publish N messages
// with attributes in one batch (no ordering key), receive them by streaming
// pull (subscription.on('message')), ack each, and check every id, payload and
// attribute arrived.
//
// Usage: PUBSUB_EMULATOR_HOST=127.0.0.1:8085 node roundtrip.js [PROJECT] [COUNT]
//   PROJECT defaults to $PUBSUB_PROJECT_ID, then $GOOGLE_CLOUD_PROJECT.
//   COUNT defaults to $ROUNDTRIP_COUNT, then 50.
//   ROUNDTRIP_TIMEOUT_MS (default 60000) bounds the whole run.
//
// Prints one JSON line on stdout and exits 0 on success; on failure prints the
// reason on stderr (and a JSON line with "ok":false on stdout) and exits 1;
// exits 2 on a usage error and 3 on timeout.
'use strict';

const crypto = require('crypto');

// No GCE metadata server here: stop google-auth-library probing for one (it
// only costs time and prints MetadataLookupWarning on stderr).
if (!process.env.METADATA_SERVER_DETECTION) process.env.METADATA_SERVER_DETECTION = 'none';
const {PubSub} = require('@google-cloud/pubsub');
const clientVersion = require('@google-cloud/pubsub/package.json').version;

const started = Date.now();
const host = process.env.PUBSUB_EMULATOR_HOST;
const projectId =
  process.argv[2] || process.env.PUBSUB_PROJECT_ID || process.env.GOOGLE_CLOUD_PROJECT;
const count = Number(process.argv[3] || process.env.ROUNDTRIP_COUNT || 50);
const timeoutMs = Number(process.env.ROUNDTRIP_TIMEOUT_MS || 60000);

function usage(msg) {
  process.stderr.write(`roundtrip: ${msg}\n`);
  process.exit(2);
}
if (!host) usage('PUBSUB_EMULATOR_HOST is not set');
if (!projectId) usage('no project id (argument, PUBSUB_PROJECT_ID or GOOGLE_CLOUD_PROJECT)');
if (!Number.isInteger(count) || count < 1) usage(`bad message count ${process.argv[3]}`);

const suffix = `${Date.now()}-${crypto.randomBytes(4).toString('hex')}`;
const topicName = `node-roundtrip-${suffix}`;
const subName = `node-roundtrip-sub-${suffix}`;
const summary = {
  ok: false,
  client: `@google-cloud/pubsub@${clientVersion}`,
  node: process.version,
  host,
  project: projectId,
  topic: topicName,
  published: 0,
  received: 0,
  duplicates: 0,
  missing: [],
  unexpected: 0,
  dataMismatches: 0,
  attributeMismatches: 0,
  attributesChecked: 0,
  publishMs: null,
  receiveMs: null,
  totalMs: null,
};

function finish(code, error) {
  summary.totalMs = Date.now() - started;
  if (error) summary.error = String(error && error.stack ? error.message : error);
  process.stdout.write(JSON.stringify(summary) + '\n');
  if (error) process.stderr.write(`roundtrip: FAILED: ${error && error.stack ? error.stack : error}\n`);
  process.exit(code);
}

const expected = new Map(); // messageId -> {data, attributes}
const seen = new Set();

const timer = setTimeout(() => {
  summary.missing = [...expected.keys()].filter((id) => !seen.has(id));
  finish(3, new Error(
    `timed out after ${timeoutMs} ms (published ${summary.published}, received ${summary.received} of ${count})`));
}, timeoutMs);

async function main() {
  // With PUBSUB_EMULATOR_HOST set the client uses an insecure channel and no credentials.
  const pubsub = new PubSub({projectId});
  const [topic] = await pubsub.createTopic(topicName);
  const [subscription] = await topic.createSubscription(subName, {ackDeadlineSeconds: 30});

  // One batch: everything is published concurrently and the batch limits are
  // set so the client sends a single Publish RPC (no ordering key).
  const batchTopic = pubsub.topic(topicName, {
    batching: {maxMessages: count, maxBytes: 9 * 1024 * 1024, maxMilliseconds: 50},
  });
  const sent = [];
  for (let i = 0; i < count; i++) {
    const data = Buffer.from(JSON.stringify({i, run: suffix, pad: 'x'.repeat(i)}));
    const attributes = {index: String(i), run: suffix, 'kind': i % 2 ? 'odd' : 'even', unicode: 'é✓'};
    sent.push({data, attributes});
  }
  const publishStart = Date.now();
  const ids = await Promise.all(sent.map((m) => batchTopic.publishMessage(m)));
  summary.publishMs = Date.now() - publishStart;
  ids.forEach((id, i) => {
    if (typeof id !== 'string' || !id) throw new Error(`publish ${i} returned no message id: ${id}`);
    if (expected.has(id)) throw new Error(`publish returned duplicate message id ${id}`);
    expected.set(id, sent[i]);
  });
  summary.published = expected.size;

  const receiveStart = Date.now();
  await new Promise((resolve, reject) => {
    subscription.on('error', reject);
    subscription.on('message', (message) => {
      message.ack();
      const want = expected.get(message.id);
      if (!want) {
        summary.unexpected++;
        return;
      }
      if (seen.has(message.id)) {
        summary.duplicates++;
        return;
      }
      seen.add(message.id);
      summary.received++;
      if (!want.data.equals(message.data)) summary.dataMismatches++;
      const got = message.attributes || {};
      const same =
        Object.keys(got).length === Object.keys(want.attributes).length &&
        Object.entries(want.attributes).every(([k, v]) => got[k] === v);
      if (same) summary.attributesChecked++;
      else summary.attributeMismatches++;
      if (!(message.publishTime instanceof Date) || isNaN(message.publishTime.getTime())) {
        reject(new Error(`message ${message.id} has no valid publishTime`));
      }
      if (seen.size === expected.size) resolve();
    });
  });
  summary.receiveMs = Date.now() - receiveStart;
  summary.missing = [...expected.keys()].filter((id) => !seen.has(id));

  // Give late redeliveries (duplicates) a short moment to show up, then shut down cleanly.
  await new Promise((r) => setTimeout(r, 250));
  await subscription.close();
  await subscription.delete();
  await topic.delete();
  await batchTopic.flush();
  await pubsub.close();

  const problems = [];
  if (summary.received !== summary.published) problems.push(`received ${summary.received} != published ${summary.published}`);
  if (summary.missing.length) problems.push(`${summary.missing.length} missing`);
  // Duplicates are reported, not fatal: Pub/Sub delivery is at-least-once.
  if (summary.unexpected) problems.push(`${summary.unexpected} unexpected messages`);
  if (summary.dataMismatches) problems.push(`${summary.dataMismatches} data mismatches`);
  if (summary.attributeMismatches) problems.push(`${summary.attributeMismatches} attribute mismatches`);
  if (problems.length) throw new Error(problems.join('; '));
  summary.ok = true;
}

main().then(
  () => {
    clearTimeout(timer);
    finish(0);
  },
  (err) => {
    clearTimeout(timer);
    finish(1, err);
  },
);
