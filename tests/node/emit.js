'use strict';
// Emit the SDK conformance corpus with the real Node X-Ray SDK (aws-xray-sdk-core).
//
// The SDK's own SegmentEmitter sends every document to AWS_XRAY_DAEMON_ADDRESS (the test's
// capture relay, which records each datagram and forwards it to xrayd). Manual mode, segments
// built with the SDK's Segment / Subsegment API; sampling is never consulted.
//
// Each case is one trace whose (sub)segment names start with CASE_PREFIX and the case name, so
// the test can tell the documents apart by their bytes alone (see tests/e2e/sdk_corpus.py for
// the Python side of the same corpus):
//   unicode, lone-surrogate ("🚀".slice(0, 1): JSON.stringify writes a lone \ud83d escape),
//   control, big-metadata (~60 KB), annotations (string, number, boolean), streamed (streaming
//   threshold 0: closed subsegments go out as their own documents), exception (an Error with
//   its stack trace), deep (metadata nested DEPTH arrays deep), big-numbers (the extremes of a
//   double; a BigInt, which the SDK writes as a string), nonfinite (Infinity / NaN, which
//   JSON.stringify writes as null), huge-exponent (1e400: no JavaScript number can be written
//   so, the document is written by hand and sent through the SDK's emitter).
//
// Waits until every datagram has been handed to the kernel, then prints one JSON line:
// {"sent": <datagrams>, "trace_ids": [...], "cases": {case: trace_id}}.

const dgram = require('dgram');
const crypto = require('crypto');

// Count the SDK's sends and their completions (the SDK sends asynchronously). A send on a socket
// not bound yet is queued by dgram and made again, with our wrapped callback, once bound: that
// second call is not counted again.
let sends = 0;
let done = 0;
const errors = [];
const COUNTED = Symbol('counted');
const realSend = dgram.Socket.prototype.send;
dgram.Socket.prototype.send = function (...args) {
  const callback = args[args.length - 1];
  if (typeof callback === 'function' && callback[COUNTED]) {
    return realSend.apply(this, args);
  }
  sends += 1;
  const counted = (err, ...rest) => {
    done += 1;
    if (err) errors.push(String(err));
    if (typeof callback === 'function') callback(err, ...rest);
  };
  counted[COUNTED] = true;
  if (typeof callback === 'function') args[args.length - 1] = counted;
  else args.push(counted);
  return realSend.apply(this, args);
};

const AWSXRay = require('aws-xray-sdk-core');

const CASE_PREFIX = 'xrayd-conformance ';
const DEPTH = 1100;
const BIG_METADATA = 60 * 1024;
const UNICODE = 'héllo wörld — ünïcödé ✓ 日本語 Ελληνικά русский עברית 😀🚀👩‍👩‍👧 \u2028\u2029 e\u0301';
let CONTROL = '';
for (let c = 0; c < 0x20; c++) CONTROL += String.fromCharCode(c);
CONTROL += '\x7f';

AWSXRay.enableManualMode();
AWSXRay.setLogger({ error: console.error, warn: console.error, info() {}, debug() {} });

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

async function runCase(name, body) {
  const segment = new AWSXRay.Segment(CASE_PREFIX + name);
  body(segment);
  segment.close();
  await sleep(3);
  return segment.trace_id;
}

const cases = {
  unicode(seg) {
    seg.addAnnotation('text', UNICODE);
    seg.addMetadata('text', { [UNICODE]: [UNICODE, '😀'] }, 'ünï');
    const sub = seg.addNewSubsegment(CASE_PREFIX + 'unicode child ✓ 😀');
    sub.addMetadata('text', UNICODE);
    sub.close();
  },
  'lone-surrogate'(seg) {
    const high = '🚀'.slice(0, 1); // '\ud83d'
    const low = '🚀'.slice(1); // '\ude80'
    seg.addAnnotation('lone', 'high ' + high + ' alone');
    seg.addMetadata('surrogates', { high, low, reversed: low + high, pair: '🚀' });
  },
  control(seg) {
    seg.addAnnotation('control', CONTROL);
    seg.addMetadata('control', { [CONTROL]: CONTROL });
  },
  'big-metadata'(seg) {
    const piece = 'abcdefghij0123456789 "quoted" \\ tab\t ü ✓ 😀 ';
    const encoded = Buffer.byteLength(JSON.stringify(piece)) - 2;
    seg.addMetadata('blob', piece.repeat(Math.floor(BIG_METADATA / encoded)), 'big');
  },
  annotations(seg) {
    const values = {
      string: 'text', empty: '', integer: 42, negative: -7, zero: 0, float: Math.PI,
      tiny: 1e-300, true: true, false: false,
    };
    for (const [key, value] of Object.entries(values)) seg.addAnnotation(key, value);
  },
  streamed(seg) {
    AWSXRay.setStreamingThreshold(0);
    for (let c = 0; c < 6; c++) {
      const sub = seg.addNewSubsegment(CASE_PREFIX + 'streamed child ' + c);
      sub.addAnnotation('child', c);
      const inner = sub.addNewSubsegment(CASE_PREFIX + 'streamed grandchild ' + c);
      inner.addMetadata('n', c);
      inner.close();
      sub.close();
    }
    AWSXRay.setStreamingThreshold(100);
  },
  exception(seg) {
    const sub = seg.addNewSubsegment(CASE_PREFIX + 'exception child');
    const fail = (depth) => {
      if (depth === 0) throw new TypeError('boom "quoted" ü 😀\n\tsecond line');
      fail(depth - 1);
    };
    try {
      fail(3);
    } catch (err) {
      sub.close(err);
    }
  },
  deep(seg) {
    let value = ['bottom'];
    for (let i = 1; i < DEPTH; i++) value = [value];
    seg.addMetadata('deep', value);
  },
  'big-numbers'(seg) {
    seg.addMetadata('numbers', {
      max_safe_plus: Number.MAX_SAFE_INTEGER + 2,
      max_double: Number.MAX_VALUE,
      min_subnormal: Number.MIN_VALUE,
      negative_zero: -0,
      big: 1e21,
      bigint: 2n ** 70n,
    });
    seg.addAnnotation('big', 12345678901234567890123);
  },
  nonfinite(seg) {
    seg.addMetadata('nonfinite', { inf: Infinity, '-inf': -Infinity, nan: NaN });
  },
};

// A segment with numbers no double holds, sent through the SDK's emitter.
async function hugeExponent() {
  const traceId = new AWSXRay.Segment('unused').trace_id;
  const now = Date.now() / 1000;
  const body = '{"name":"' + CASE_PREFIX + 'huge-exponent","id":"' + crypto.randomBytes(8).toString('hex') +
    '","trace_id":"' + traceId + '","start_time":' + (now - 0.1) + ',"end_time":' + now +
    ',"metadata":{"default":{"huge":1e400,"neg":-1E+400,"tiny":1e-400,"long":1.5e0400}}}';
  require('aws-xray-sdk-core/dist/lib/segment_emitter').send({
    format: () => body,
    trace_id: traceId,
    id: 'hand-written',
    type: 'segment',
  });
  await sleep(3);
  return traceId;
}

async function main() {
  const traceIds = {};
  for (const [name, body] of Object.entries(cases)) {
    traceIds[name] = await runCase(name, body);
  }
  traceIds['huge-exponent'] = await hugeExponent();

  const deadline = Date.now() + 20000;
  while (done < sends && Date.now() < deadline) await sleep(10);
  if (done < sends || errors.length > 0) {
    console.error(`emit.js: ${done} of ${sends} sends completed; errors: ${errors.join('; ')}`);
    process.exit(1);
  }
  process.stdout.write(JSON.stringify({
    sent: sends,
    trace_ids: Object.values(traceIds),
    cases: traceIds,
  }) + '\n');
}

main().catch((err) => {
  console.error(err);
  process.exit(1);
});
