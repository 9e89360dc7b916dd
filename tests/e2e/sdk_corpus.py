#!/usr/bin/env python3
"""Emit the SDK conformance corpus with the real Python X-Ray SDK (aws-xray-sdk).

The recorder's own UDPEmitter sends every document to ``--daemon`` (the test's
capture relay, which records each datagram and forwards it to xrayd). Sampling
and plugins are off, so every segment is sent and nothing else is contacted.

Each case is one trace whose (sub)segment names start with ``CASE_PREFIX``
followed by the case name, so the test can tell the documents apart by their
bytes alone:

* unicode: non-ASCII text, emoji, U+2028/U+2029 in names, annotations, metadata
  (the SDK's ``json.dumps`` escapes them as ``\\uXXXX``, emoji as pairs);
* lone-surrogate: ``os.fsdecode(b"\\xff")`` (``"\\udcff"``) and ``"\\ud800"`` in
  metadata and an annotation: ``json.dumps`` writes them as lone ``\\udcff``
  / ``\\ud800`` escapes;
* control: every C0 control character and DEL;
* big-metadata: metadata of about 60 KB, the document under the 64 KB limit;
* annotations: string, integer, float, boolean annotations;
* streamed: a low ``streaming_threshold``: closed subsegments go out as
  their own ``"type":"subsegment"`` documents before the segment;
* exception: an exception raised in ``in_subsegment``, recorded by the SDK with
  its stack trace;
* deep: metadata nested DEPTH lists deep (the SDK's recursive conversion and
  ``json.dumps`` need a higher recursion limit; without it the SDK silently
  drops the metadata);
* big-numbers: integers beyond 64 bits (one of 401 digits), extreme floats;
* nonfinite: ``float("inf")`` and ``float("nan")`` in metadata: ``json.dumps``
  writes ``Infinity`` / ``NaN``, which is not JSON (the daemon must reject it);
* huge-exponent: a document with ``1e400`` that the SDK cannot produce (a float
  that large is infinity), written by hand and sent through the same emitter.

Prints one JSON object: ``{"sent": <datagrams sent>, "trace_ids": [...],
"cases": {case: trace_id}}``.

Usage: sdk_corpus.py --daemon HOST:PORT
"""

import argparse
import json
import os
import sys
import time

from aws_xray_sdk.core import xray_recorder
from aws_xray_sdk.core.emitters.udp_emitter import PROTOCOL_DELIMITER, PROTOCOL_HEADER
from aws_xray_sdk.core.models.traceid import TraceId

CASE_PREFIX = "xrayd-conformance "
DEPTH = 1100
BIG_METADATA = 60 * 1024
MAX_DOCUMENT = 64 * 1024

UNICODE = "héllo wörld — ünïcödé ✓ 日本語 Ελληνικά русский עברית 😀🚀👩‍👩‍👧 \u2028\u2029 e\u0301"
CONTROL = "".join(chr(c) for c in range(0x20)) + "\x7f"


def case(name, body, threshold=None):
    """One trace for `name`: a segment, `body(segment)` fills it."""
    if threshold is not None:
        xray_recorder.streaming_threshold = threshold
    seg = xray_recorder.begin_segment(CASE_PREFIX + name, sampling=1)
    body(seg)
    xray_recorder.end_segment()
    xray_recorder.streaming_threshold = 30
    return seg.trace_id


def unicode_case(seg):
    seg.put_annotation("text", UNICODE)
    seg.put_metadata("text", {UNICODE: [UNICODE, "😀"]}, "ünï")
    sub = xray_recorder.begin_subsegment(CASE_PREFIX + "unicode child ✓ 😀")
    sub.put_metadata("text", UNICODE)
    xray_recorder.end_subsegment()


def lone_surrogate_case(seg):
    escaped = os.fsdecode(b"caf\xff")  # 'caf\udcff'
    seg.put_annotation("lone", "high \ud800 alone")
    seg.put_metadata("surrogates", {"escaped": escaped, "high": "\ud800", "low": "\udc00", "pair": "😀"})


def control_case(seg):
    seg.put_annotation("control", CONTROL)
    seg.put_metadata("control", {CONTROL: CONTROL})


def big_metadata_case(seg):
    # JSON-encoded length of about 60 KB: ASCII plus escapes and non-ASCII text.
    piece = "abcdefghij0123456789 \"quoted\" \\ tab\t ü ✓ 😀 "
    encoded = len(json.dumps(piece)) - 2
    seg.put_metadata("blob", piece * (BIG_METADATA // encoded), "big")


def annotations_case(seg):
    for key, value in [
        ("string", "text"),
        ("empty", ""),
        ("integer", 42),
        ("negative", -7),
        ("zero", 0),
        ("float", 3.141592653589793),
        ("tiny", 1e-300),
        ("true", True),
        ("false", False),
    ]:
        seg.put_annotation(key, value)


def streamed_case(seg):
    for c in range(6):
        sub = xray_recorder.begin_subsegment(f"{CASE_PREFIX}streamed child {c}")
        sub.put_annotation("child", c)
        inner = xray_recorder.begin_subsegment(f"{CASE_PREFIX}streamed grandchild {c}")
        inner.put_metadata("n", c)
        xray_recorder.end_subsegment()
        xray_recorder.end_subsegment()


def exception_case(seg):
    def fail(depth):
        if depth == 0:
            raise ValueError('boom "quoted" ü 😀\n\tsecond line')
        fail(depth - 1)

    try:
        with xray_recorder.in_subsegment(CASE_PREFIX + "exception child"):
            fail(3)
    except ValueError:
        pass


def deep_case(seg):
    value = ["bottom"]
    for _ in range(DEPTH - 1):
        value = [value]
    seg.put_metadata("deep", value)


def big_numbers_case(seg):
    seg.put_metadata(
        "numbers",
        {
            "u64_max": 2**64 - 1,
            "beyond_u64": 2**64 + 1,
            "below_i64": -(2**63) - 1,
            "digits_401": 10**400,
            "max_float": 1.7976931348623157e308,
            "min_subnormal": 5e-324,
            "negative_zero": -0.0,
        },
    )
    seg.put_annotation("big", 12345678901234567890123)


def nonfinite_case(seg):
    seg.put_metadata("nonfinite", {"inf": float("inf"), "-inf": float("-inf"), "nan": float("nan")})


def huge_exponent(emitter):
    """A segment with numbers no float holds, written by hand (the SDK cannot: 1e400 is
    infinity to it) and sent with the SDK's emitter."""
    trace_id = TraceId().to_id()
    now = time.time()
    body = (
        '{"name": "%shuge-exponent", "id": "%s", "trace_id": "%s", "start_time": %.6f, '
        '"end_time": %.6f, "metadata": {"default": {"huge": 1e400, "neg": -1E+400, '
        '"tiny": 1e-400, "long": 1.5e0400}}}'
    ) % (CASE_PREFIX, os.urandom(8).hex(), trace_id, now - 0.1, now)
    emitter._send_data(PROTOCOL_HEADER + PROTOCOL_DELIMITER + body)
    return trace_id


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--daemon", required=True, help="host:port to send to")
    ap.add_argument("--pace-ms", type=float, default=2.0, help="pause after each datagram")
    args = ap.parse_args()

    # The SDK lets the environment win over configure(daemon_address=...).
    os.environ["AWS_XRAY_DAEMON_ADDRESS"] = args.daemon
    xray_recorder.configure(
        sampling=False,
        plugins=(),
        context_missing="LOG_ERROR",
        daemon_address=args.daemon,
        service="xrayd-conformance",
    )
    # metadata_to_dict and json.dumps recurse once per level.
    sys.setrecursionlimit(10 * DEPTH)

    emitter = xray_recorder.emitter
    send = emitter._send_data
    sent = []

    def counting_send(data):
        if len(data.encode("utf-8")) - len(PROTOCOL_HEADER) - 1 > MAX_DOCUMENT:
            sys.exit(f"sdk_corpus: a document over {MAX_DOCUMENT} bytes: {data[:200]!r}")
        send(data)
        sent.append(len(data))
        time.sleep(args.pace_ms / 1000.0)

    emitter._send_data = counting_send

    cases = {
        "unicode": case("unicode", unicode_case),
        "lone-surrogate": case("lone-surrogate", lone_surrogate_case),
        "control": case("control", control_case),
        "big-metadata": case("big-metadata", big_metadata_case),
        "annotations": case("annotations", annotations_case),
        "streamed": case("streamed", streamed_case, threshold=1),
        "exception": case("exception", exception_case),
        "deep": case("deep", deep_case),
        "big-numbers": case("big-numbers", big_numbers_case),
        "nonfinite": case("nonfinite", nonfinite_case),
        "huge-exponent": huge_exponent(emitter),
    }
    json.dump({"sent": len(sent), "trace_ids": list(cases.values()), "cases": cases}, sys.stdout)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
