#!/usr/bin/env python3
"""Emit X-Ray segments with the real Python SDK and record every datagram.

The recorder (``aws_xray_sdk.core.xray_recorder``) sends to the daemon named by
``AWS_XRAY_DAEMON_ADDRESS`` (or ``--daemon``). Sampling is off in the recorder
and every segment is forced sampled, so the SDK never calls the sampling
proxy. Plugins are disabled, so no EC2/ECS metadata look-ups either.

Each of the K traces has a root segment with annotations, metadata, HTTP data
and a tree of subsegments (one with an exception). Strings carry characters
that need JSON escapes (quotes, backslashes, tabs, newlines, control
characters) and non-ASCII text (the SDK's ``json.dumps`` escapes it as
``\\uXXXX``, including surrogate pairs). Some traces carry large metadata
(~20-57 KB per subsegment) and a low streaming threshold, so the SDK streams
closed subsegments out as separate ``"type":"subsegment"`` documents, the
way it does for large traces.

With ``--raw`` (the default) a few hand-written datagrams follow, sent on the
same socket, imitating other SDKs: the spaced header variant
``{"format": "json", "version": 1}``, raw UTF-8 in the body, pretty-printed
bodies with newlines after the header line, number spellings that any
re-encoding would change (``1.50``, ``1E3``, ``-0.0``), unusual key order.

Every datagram that was sent successfully is recorded, byte for byte, in the
output JSON file: a list of objects
``{"trace_id", "id", "type", "source", "header", "body", "size"}`` where
``body`` is the exact document text after the first ``\\n`` of the datagram
and ``size`` the datagram's length in bytes. A summary goes to stdout.

Usage: emit_segments.py --out records.json [--traces K] [--daemon host:port]
                        [--pace-ms 2] [--seed 1] [--no-raw]
"""

import argparse
import json
import os
import random
import sys
import time

from aws_xray_sdk.core import xray_recorder
from aws_xray_sdk.core.emitters.udp_emitter import UDPEmitter
from aws_xray_sdk.core.models.traceid import TraceId

# Stay well under X-Ray's 64 KB document limit and IPv4's 65,507-byte UDP
# payload limit: the biggest datagram we emit is checked against this.
MAX_DATAGRAM = 63 * 1024

TRICKY = 'quote " backslash \\ tab \t newline \n cr \r slash / bell \x07 nul-ish \x01 del \x7f'
NON_ASCII = "héllo wörld — ünïcödé ✓ 日本語テキスト Ελληνικά русский 😀🚀 \u2028\u2029"


class RecordingEmitter(UDPEmitter):
    """UDPEmitter that records the exact bytes of every datagram it sends."""

    def __init__(self, daemon_address, pace_s):
        super().__init__(daemon_address)
        self.records = []
        self.failures = []
        self.pace_s = pace_s

    def _send_data(self, data):
        # Same encoding as UDPEmitter._send_data.
        self.send_raw(data.encode("utf-8"), source="sdk")

    def send_raw(self, payload, source):
        if len(payload) > MAX_DATAGRAM:
            # The SDK swallows exceptions from the emitter: note it for main().
            self.failures.append(f"{source}: datagram of {len(payload)} bytes is too large for this test")
            raise ValueError("datagram too large")
        # The socket is non-blocking: retry briefly if the kernel buffer is full.
        deadline = time.monotonic() + 5.0
        while True:
            try:
                sent = self._socket.sendto(payload, (self._ip, self._port))
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    self.failures.append(f"{source}: send would block for 5 s")
                    raise
                time.sleep(0.001)
        if sent != len(payload):
            self.failures.append(f"{source}: short send {sent} of {len(payload)}")
            raise OSError("short UDP send")
        header, sep, body = payload.partition(b"\n")
        if not sep or not body:
            raise ValueError("datagram without header line")
        doc = json.loads(body)
        self.records.append(
            {
                "trace_id": doc["trace_id"],
                "id": doc["id"],
                "type": doc.get("type", "segment"),
                "source": source,
                "header": header.decode("utf-8"),
                "body": body.decode("utf-8"),
                "size": len(payload),
            }
        )
        if self.pace_s:
            time.sleep(self.pace_s)


def blob(rng, size, tag):
    """A string whose JSON encoding (as the SDK writes it) is about `size` bytes,
    mixing ASCII, characters needing escapes and non-ASCII text."""
    parts = []
    n = 0
    while n < size:
        choice = rng.random()
        if choice < 0.6:
            piece = "".join(rng.choice("abcdefghijklmnopqrstuvwxyz0123456789 ") for _ in range(64))
        elif choice < 0.8:
            piece = TRICKY
        else:
            piece = NON_ASCII
        parts.append(piece)
        n += len(json.dumps(piece)) - 2
    return f"[{tag}]" + "".join(parts)


def emit_trace(recorder, rng, index, large):
    """One trace: a segment and a subsegment tree, optionally large.

    Small traces go out as one document with embedded subsegments; large
    ones breach the streaming threshold, so their closed subsegments are
    streamed out as separate documents.
    """
    recorder.streaming_threshold = 2 if large else 50
    seg = recorder.begin_segment(f"xrayd-e2e-{index} \"quoted\" ünï", sampling=1)
    seg.put_annotation("index", index)
    seg.put_annotation("ratio", index / 7.0)
    seg.put_annotation("is_large", large)
    seg.put_annotation("tricky", TRICKY)
    seg.put_annotation("unicode", NON_ASCII)
    seg.put_metadata("escapes", {"k\"ey\\\t": TRICKY, "ключ": NON_ASCII}, "e2e")
    seg.put_metadata("numbers", [0, -1, 1.5, 1e-7, 12345678901234567890, 3.141592653589793])
    seg.put_http_meta("method", "POST")
    seg.put_http_meta("url", "https://example.com/päth?q=\"x\"&y=\\z")
    seg.put_http_meta("status", 200)
    seg.set_user("user-\"ü\"")

    children = 6 if large else 3
    for c in range(children):
        sub = recorder.begin_subsegment(f"child-{c}\t\"ü\"", namespace="remote" if c % 2 else "local")
        sub.put_annotation("child", c)
        sub.put_annotation("note", f"{TRICKY} {NON_ASCII}")
        if large:
            # 20-57 KB each: together far beyond one 64 KB document, so the
            # SDK must stream the closed subsegments out on their own.
            size = 57_000 if c == 0 else rng.randint(20_000, 40_000)
            sub.put_metadata("payload", blob(rng, size, f"t{index}c{c}"), "big")
        else:
            sub.put_metadata("payload", blob(rng, 300, f"t{index}c{c}"))
        grand = recorder.begin_subsegment(f"grandchild-{c}")
        grand.put_metadata("deep", {"level": 2, "text": NON_ASCII})
        if c == 1:
            try:
                raise ValueError(f"boom \"{c}\" \\ ü {TRICKY}")
            except ValueError as err:
                grand.add_exception(err, [], remote=False)
        recorder.end_subsegment()
        recorder.end_subsegment()
        time.sleep(0.001)
    recorder.end_segment()


def raw_datagrams(emitter):
    """Hand-written datagrams imitating other SDKs (not produced by the Python SDK)."""
    now = time.time()
    spaced = b'{"format": "json", "version": 1}'
    plain = b'{"format":"json","version":1}'

    tid = TraceId().to_id()
    # Raw UTF-8, pretty-printed over several lines (newlines after the first one
    # belong to the body), odd number spellings, key order not the usual one.
    pretty = (
        "{\n"
        '  "start_time": %.6f,\n'
        '  "name": "raw-ütf8 ✓ 日本語 😀",\n'
        '  "id": "%s",\n'
        '  "trace_id": "%s",\n'
        '  "end_time": %.6f,\n'
        '  "annotations": {"ratio": 1.50, "big": 1E3, "neg_zero": -0.0, "s": "tab\\tquote\\"back\\\\slash"},\n'
        '  "metadata": {"default": {"raw": "Ελληνικά русский \\u00e9 é"}}\n'
        "}"
    ) % (now - 0.5, os.urandom(8).hex(), tid, now)
    emitter.send_raw(spaced + b"\n" + pretty.encode("utf-8"), source="raw")

    # A subsegment sent on its own by "another SDK", compact, with raw UTF-8.
    parent = os.urandom(8).hex()
    sub = (
        '{"type":"subsegment","parent_id":"%s","id":"%s","trace_id":"%s",'
        '"name":"raw-sub «ü»","start_time":%.3f,"end_time":%.3f,'
        '"metadata":{"default":{"k":"\u00e9 \\u00e9 \\/ /"}}}'
    ) % (parent, os.urandom(8).hex(), tid, now - 0.4, now - 0.1)
    emitter.send_raw(plain + b"\n" + sub.encode("utf-8"), source="raw")

    # Header with extra keys and whitespace; body with trailing whitespace.
    tid2 = TraceId().to_id()
    body = (
        '{"name":"raw-ws","id":"%s","trace_id":"%s","start_time":%.6f,"end_time":%.6f,'
        '"annotations":{"x":  1 , "y" :true}}  \t '
    ) % (os.urandom(8).hex(), tid2, now - 0.2, now)
    header = b'{ "format" : "JSON" , "version" : 1 , "extra" : "ignored" }'
    emitter.send_raw(header + b"\n" + body.encode("utf-8"), source="raw")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", required=True, help="JSON file to write the records to")
    ap.add_argument("--traces", type=int, default=10, help="number of SDK traces (K)")
    ap.add_argument("--daemon", default=None, help="host:port (default: AWS_XRAY_DAEMON_ADDRESS)")
    ap.add_argument("--pace-ms", type=float, default=2.0, help="pause after each datagram")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--no-raw", action="store_true", help="only send what the SDK produces")
    args = ap.parse_args()

    address = args.daemon or os.environ.get("AWS_XRAY_DAEMON_ADDRESS")
    if not address:
        sys.exit("emit_segments: set AWS_XRAY_DAEMON_ADDRESS or pass --daemon")
    # The SDK lets the environment win over configure(daemon_address=...).
    os.environ["AWS_XRAY_DAEMON_ADDRESS"] = address

    emitter = RecordingEmitter(address, args.pace_ms / 1000.0)
    xray_recorder.configure(
        sampling=False,
        plugins=(),
        context_missing="LOG_ERROR",
        daemon_address=address,
        emitter=emitter,
        service="xrayd-e2e",
    )

    rng = random.Random(args.seed)
    for i in range(args.traces):
        emit_trace(xray_recorder, rng, i, large=(i % 3 == 1))
    if not args.no_raw:
        raw_datagrams(emitter)

    if emitter.failures:
        sys.exit("emit_segments: " + "; ".join(emitter.failures))
    sdk_records = [r for r in emitter.records if r["source"] == "sdk"]
    if len(sdk_records) < args.traces:
        sys.exit(f"emit_segments: the SDK sent only {len(sdk_records)} datagrams for {args.traces} traces")

    with open(args.out, "w", encoding="utf-8") as f:
        json.dump(emitter.records, f, ensure_ascii=False, indent=1)
        f.write("\n")

    summary = {
        "datagrams": len(emitter.records),
        "sdk": len(sdk_records),
        "raw": len(emitter.records) - len(sdk_records),
        "subsegments": sum(1 for r in emitter.records if r["type"] == "subsegment"),
        "traces": len({r["trace_id"] for r in emitter.records}),
        "max_size": max(r["size"] for r in emitter.records),
        "total_bytes": sum(r["size"] for r in emitter.records),
        "daemon": address,
    }
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
