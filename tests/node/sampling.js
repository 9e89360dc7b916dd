'use strict';
// Drives the real Node X-Ray SDK's centralized sampling through xrayd's TCP port.
//
// AWS_XRAY_DAEMON_ADDRESS (udp:HOST:PORT tcp:HOST:PORT) points the SDK at xrayd. The SDK fetches
// sampling rules (GetSamplingRules) and reports statistics / gets targets (SamplingTargets) over
// TCP, unsigned; xrayd signs and forwards them. Requests go through a plain HTTP server traced
// with the SDK's own middleware (`traceRequestResponseCycle`, what the Express and Restify
// packages use), with dynamic naming: the Host header is the service name the rules match.
//
// The only change to the SDK: its target poller runs every 10 s (a constant). The function the
// poller's timer calls is kept, and once the decisions made with the rules as fetched are done,
// it is also run every 300 ms. The sampler is started up front, as the Python script does, so
// that the first decision already has the rules.
//
// Prints one JSON line with what the SDK did and decided (same keys as
// tests/e2e/sdk_sampling.py, plus open_segments: the open service's segments sent).

const TARGET_INTERVAL_MS = 10 * 1000;
let targetPoll = null;
const realSetInterval = global.setInterval;
global.setInterval = function (fn, ms, ...rest) {
  if (ms >= TARGET_INTERVAL_MS && ms < TARGET_INTERVAL_MS + 1000) targetPoll = fn;
  return realSetInterval(fn, ms, ...rest);
};

const http = require('http');
const AWSXRay = require('aws-xray-sdk-core');
const ruleCache = require('aws-xray-sdk-core/dist/lib/middleware/sampling/rule_cache');

const BLOCKED = 'blocked-svc';
const OPEN = 'open-svc';
const DECISIONS = 50;

AWSXRay.setLogger({ error: console.error, warn: console.error, info() {}, debug() {} });
const mw = AWSXRay.middleware;
mw.enableDynamicNaming();

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

async function waitFor(pred, timeoutMs) {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    if (pred()) return true;
    await sleep(50);
  }
  return pred();
}

// Every decision the middleware takes, and every segment it sends, per service.
const sampled = { [BLOCKED]: 0, [OPEN]: 0 };
const server = http.createServer((req, res) => {
  const segment = mw.traceRequestResponseCycle(req, res);
  if (!segment.notTraced) sampled[segment.name] += 1;
  res.end('ok');
});

function request(port, host) {
  return new Promise((resolve, reject) => {
    const req = http.request({ host: '127.0.0.1', port, path: '/work', method: 'GET', headers: { host } }, (res) => {
      res.resume();
      res.on('end', resolve);
    });
    req.on('error', reject);
    req.end();
  });
}

async function decide(port, host) {
  const before = sampled[host];
  for (let i = 0; i < DECISIONS; i++) await request(port, host);
  return sampled[host] - before;
}

async function main() {
  await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve));
  const port = server.address().port;
  mw.sampler.start();
  const out = { sampler: 'DefaultSampler' };

  out.rules_loaded = await waitFor(() => ruleCache.getRules().length > 0, 20000);
  out.rules = ruleCache.getRules().map((r) => r.getName()).sort();

  out.blocked_sampled = await decide(port, BLOCKED);
  out.open_sampled_before_targets = await decide(port, OPEN);

  // The target poller reports statistics; the fake answers rate 0 / quota 0 for every rule.
  if (!targetPoll) throw new Error('the SDK started no target poller of 10 s');
  realSetInterval(targetPoll, 300).unref();
  out.targets_applied = await waitFor(
    () => ruleCache.getRules().some((r) => r.getName() === 'Default' && r.getRate() === 0),
    20000,
  );
  out.open_sampled_after_targets = await decide(port, OPEN);
  out.open_segments = sampled[OPEN];
  server.close();
  // Pending UDP sends keep the process alive until they are done.
  process.stdout.write(JSON.stringify(out) + '\n');
}

main().catch((err) => {
  console.error(err);
  process.exit(1);
});
