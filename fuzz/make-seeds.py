#!/usr/bin/env python3
"""Regenerates fuzz/seeds/<target>/ (run from anywhere: python3 fuzz/make-seeds.py).

Real datagrams are captured from the AWS X-Ray SDK for Python (aws_xray_sdk) by pointing
AWS_XRAY_DAEMON_ADDRESS at a local UDP socket; the rest are written by hand. IDs and times in the
captured segments change on every run, so regenerating rewrites those files.
"""
import json
import os
import shutil
import socket
import threading
import traceback

HERE = os.path.dirname(os.path.abspath(__file__))
SEEDS = os.path.join(HERE, "seeds")
H = b'{"format":"json","version":1}\n'
H_SPACED = b'{"format": "json", "version": 1}\n'


def capture_sdk():
    """Segments exactly as aws_xray_sdk sends them, in emission order."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    os.environ["AWS_XRAY_DAEMON_ADDRESS"] = "127.0.0.1:%d" % sock.getsockname()[1]
    got = []

    def reader():
        sock.settimeout(2.0)
        while True:
            try:
                got.append(sock.recvfrom(70000)[0])
            except socket.timeout:
                return

    t = threading.Thread(target=reader)
    t.start()

    from aws_xray_sdk.core import xray_recorder
    from aws_xray_sdk.core.models import http

    xray_recorder.configure(service="checkout-service", sampling=False,
                            context_missing="LOG_ERROR", streaming_threshold=3)
    names = []

    def segment(name, fill=None):
        seg = xray_recorder.begin_segment(name)
        if fill:
            fill(seg)
        xray_recorder.end_segment()

    segment("small")
    names.append("sdk-small-segment")

    def full(seg):
        seg.put_http_meta(http.URL, 'https://shop.example.com/cart/checkout?id=42&x="q"')
        seg.put_http_meta(http.METHOD, "POST")
        seg.put_http_meta(http.USER_AGENT, "Mozilla/5.0 (X11; Linux x86_64)")
        seg.put_http_meta(http.CLIENT_IP, "203.0.113.7")
        seg.put_annotation("customer", "c-1234")
        seg.put_annotation("cart_size", 7)
        seg.put_annotation("premium", True)
        seg.put_metadata("request", {"items": [{"sku": "A-1", "qty": 2, "price": 9.99},
                                               {"sku": "B-2", "qty": 1, "price": 120.0}],
                                     "coupon": None}, "app")
        sub = xray_recorder.begin_subsegment("dynamodb", namespace="aws")
        sub.put_metadata("table", "orders")
        sub.put_annotation("op", "PutItem")
        xray_recorder.end_subsegment()
        sub = xray_recorder.begin_subsegment("payment-api", namespace="remote")
        sub.put_http_meta(http.URL, "https://pay.example.com/v1/charge")
        sub.put_http_meta(http.METHOD, "POST")
        sub.put_http_meta(http.STATUS, 502)
        try:
            raise RuntimeError('upstream said: "bad gateway"\n\ttab\\backslash')
        except RuntimeError as e:
            sub.add_exception(e, traceback.extract_stack())
        xray_recorder.end_subsegment()
        seg.put_http_meta(http.STATUS, 200)

    segment("checkout-service", full)
    names.append("sdk-full-segment")

    def uni(seg):
        seg.put_annotation("greeting", "héllo wörld — “quotes” 日本語 🚀")
        seg.put_metadata("escapes", 'line1\nline2\r\n\ttab "q" back\\slash \u0001\u001f ctl', "debug")
        seg.put_metadata("emoji", "😀👍🏽🇫🇷", "debug")

    segment("unicode-ünïcødé-服务", uni)
    names.append("sdk-unicode-escapes")

    def streaming(seg):
        for i in range(5):
            s = xray_recorder.begin_subsegment("step-%d" % i)
            s.put_annotation("i", i)
            s.put_metadata("payload", {"k": "v" * 40, "n": i}, "app")
            xray_recorder.end_subsegment()

    segment("streaming", streaming)
    # threshold 3: each finished subsegment beyond it is streamed on its own, then the parent.
    # Subsegments streamed on their own (threshold 3) are named by content below.

    def medium(seg):
        seg.put_metadata("blob", [{"idx": i, "text": "lorem ipsum dolor sit amet " * 2,
                                   "ok": i % 2 == 0, "v": i * 1.25} for i in range(60)], "app")

    segment("medium", medium)
    names.append("sdk-8k-segment")

    def large(seg):
        seg.put_metadata("blob", [{"idx": i, "text": "lorem ipsum dolor sit amet consectetur " * 2,
                                   "ok": i % 2 == 0, "v": i * 1.25} for i in range(455)], "app")

    def bigint(seg):
        # Python's json emits integers of any size; simd-json rejects those beyond 64 bits unless
        # its `big-int-as-float` feature is on.
        seg.put_metadata("order_id", 2**64, "app")

    segment("bigint", bigint)
    names.append("sdk-bigint-metadata")

    segment("large", large)  # close to the 65,507-byte UDP payload limit
    names.append("sdk-large-segment")

    t.join()
    out, fixed = [], iter(names)
    for dgram in got:
        doc = json.loads(dgram.split(b"\n", 1)[1])
        if doc.get("type") == "subsegment":
            out.append(("sdk-subsegment-" + doc["name"], dgram))
        elif doc["name"] == "streaming":
            out.append(("sdk-streamed-parent", dgram))
        else:
            out.append((next(fixed), dgram))
    return out


def write(target, name, data):
    d = os.path.join(SEEDS, target)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, name), "wb") as f:
        f.write(data)


def json_grammar_seeds(bodies):
    """Segment bodies (no header): the SDK's documents, the valid JSON simd-json refuses, and
    mutations of SDK documents that break one rule each."""
    for name, body in bodies.items():
        write("json_grammar", name, body)
    small = json.loads(bodies["sdk-small-segment"])

    def with_annotation(value):
        doc = dict(small, annotations={"s": value})
        return json.dumps(doc).encode()

    # Valid JSON that simd-json refuses: JS "\ud83d\ude80".slice(0, 1) through JSON.stringify,
    # Python json.dumps of surrogate-escaped strings, numbers beyond f64, deep nesting.
    write("json_grammar", "lone-high-surrogate", with_annotation("\ud83d"))
    write("json_grammar", "lone-low-surrogate", with_annotation("\udc00"))
    write("json_grammar", "reversed-surrogate-pair", with_annotation("\udc00\ud800"))
    write("json_grammar", "python-surrogateescape", with_annotation(b"caf\xe9".decode("utf-8", "surrogateescape")))
    write("json_grammar", "valid-surrogate-pair", b'{"s":"\\ud83d\\ude80"}')
    write("json_grammar", "numbers-beyond-f64", b'{"a":1e400,"b":-1e400,"c":1E+400,"d":1e-400,"e":-0.0e-0}')
    for n in (1023, 1024, 1025, 5000):
        write("json_grammar", "deep-arrays-%d" % n, b'{"a":' + b"[" * n + b"]" * n + b"}")
    write("json_grammar", "deep-objects-1100", b'{"a":' + b'{"k":' * 1100 + b"0" + b"}" * 1100 + b"}")
    write("json_grammar", "deep-unclosed-60000", b'{"a":' + b"[" * 60000)

    # One broken rule each (mutations of an SDK document).
    compact = json.dumps(small, separators=(",", ":")).encode()
    write("json_grammar", "python-nan", json.dumps(dict(small, metadata={"x": float("nan")})).encode())
    write("json_grammar", "python-infinity", json.dumps(dict(small, metadata={"x": float("-inf")})).encode())
    write("json_grammar", "raw-tab-in-string", compact.replace(b'"name":"', b'"name":"\t', 1))
    write("json_grammar", "raw-nul-in-string", compact.replace(b'"name":"', b'"name":"\x00', 1))
    write("json_grammar", "del-in-string", compact.replace(b'"name":"', b'"name":"\x7f', 1))
    write("json_grammar", "leading-zero", compact[:-1] + b',"z":0123}')
    write("json_grammar", "lone-minus", compact[:-1] + b',"z":-}')
    write("json_grammar", "trailing-comma-object", compact[:-1] + b",}")
    write("json_grammar", "trailing-comma-array", b'{"a":[1,2,]}')
    write("json_grammar", "utf8-bom", b"\xef\xbb\xbf" + compact)
    write("json_grammar", "invalid-utf8-overlong", compact.replace(b'"name":"', b'"name":"\xc0\xaf', 1))
    write("json_grammar", "invalid-utf8-surrogate", compact.replace(b'"name":"', b'"name":"\xed\xa0\x80', 1))
    write("json_grammar", "invalid-utf8-above-max", compact.replace(b'"name":"', b'"name":"\xf4\x90\x80\x80', 1))
    write("json_grammar", "invalid-escape", compact.replace(b'"name":"', b'"name":"\\x', 1))
    write("json_grammar", "short-unicode-escape", compact.replace(b'"name":"', b'"name":"\\u12"', 1))
    write("json_grammar", "truncated", compact[: len(compact) * 2 // 3])
    write("json_grammar", "trailing-content", compact + b" x")
    write("json_grammar", "array-top", b"[" + compact + b"]")
    write("json_grammar", "single-quotes", b"{'a':1}")
    write("json_grammar", "form-feed-whitespace", b"{\x0c}")


def main():
    for t in ("datagram", "json_grammar", "put_response", "encode", "flags"):
        shutil.rmtree(os.path.join(SEEDS, t), ignore_errors=True)

    captured = capture_sdk()
    bodies = {}
    for name, dgram in captured:
        write("datagram", name, dgram)
        bodies[name] = dgram.split(b"\n", 1)[1]

    # --- datagram: hand-made cases ---
    full = json.loads(bodies["sdk-full-segment"])
    compact = json.dumps(full, separators=(",", ":")).encode()
    write("datagram", "spaced-header-compact-body", H_SPACED + compact)
    uni = json.loads(bodies["sdk-unicode-escapes"])
    raw_utf8 = json.dumps(uni, ensure_ascii=False, separators=(",", ":")).encode()
    write("datagram", "raw-utf8-body", H_SPACED + raw_utf8)
    write("datagram", "header-key-order-case", b'{ "version" : 1 , "format" : "JSON" }\n' + compact)
    write("datagram", "subsegment-minimal",
          H + b'{"type":"subsegment","id":"53995c3f42cd8ad8","trace_id":"1-581cf771-a006649127e371903a2de979",'
              b'"parent_id":"70de5b6f19ff9a0a","name":"s3","start_time":1478293361.271,"in_progress":true}')
    write("datagram", "empty-object", H + b"{}")
    write("datagram", "body-crlf-whitespace", H + b'\r\n{ "a" :\t[1, -0.5e-3, 1E+2, true, false, null, "\\u00e9\\ud83d\\ude80"] }\r\n')
    pad = lambda n: b'{"p":"' + b"x" * (n - 8) + b'"}'
    write("datagram", "body-exactly-64k", H + pad(65536))
    write("datagram", "body-64k-plus-one", H + pad(65537))
    # malformed
    write("datagram", "no-newline", H.rstrip(b"\n") + bodies["sdk-small-segment"])
    write("datagram", "header-only", H)
    write("datagram", "newline-only", b"\n")
    write("datagram", "bad-header-not-json", b"format=json version=1\n" + compact)
    write("datagram", "bad-header-version-string", b'{"format":"json","version":"1"}\n' + compact)
    write("datagram", "bad-header-version-2", b'{"format":"json","version":2}\n' + compact)
    write("datagram", "bad-header-format-xml", b'{"format":"xml","version":1}\n' + compact)
    write("datagram", "truncated-json", H + compact[: len(compact) // 2])
    write("datagram", "array-body", H + b"[" + compact + b"]")
    write("datagram", "string-body", H + b'"segment"')
    write("datagram", "trailing-garbage", H + compact + b"}")
    write("datagram", "two-documents", H + compact + b"\n" + compact)
    write("datagram", "invalid-utf8", H + b'{"name":"\xff\xfe"}')
    write("datagram", "deep-nesting", H + b'{"a":' + b"[" * 100 + b"]" * 100 + b"}")
    write("datagram", "numbers", H + b'{"a":123456789012345678901234567890,"b":1e308,"c":-0,"d":0.1e-400}')

    json_grammar_seeds(bodies)

    # --- put_response: X-Ray answers (body; "header\0body" tries the x-amzn-ErrorType path) ---
    write("put_response", "ok-empty-list", b'{"UnprocessedTraceSegments":[]}')
    write("put_response", "ok-unprocessed",
          b'{"UnprocessedTraceSegments":[{"Id":"70de5b6f19ff9a0a","ErrorCode":"InvalidSegment",'
          b'"Message":"Segment is missing required field: name"},{"Id":"53995c3f42cd8ad8"}]}')
    write("put_response", "ok-null", b'{"UnprocessedTraceSegments":null}')
    write("put_response", "empty-object", b"{}")
    write("put_response", "whitespace", b" \r\n\t")
    write("put_response", "throttled-body", b'{"__type":"ThrottledException","message":"Rate exceeded"}')
    write("put_response", "namespaced-type",
          b'{"__type":"com.amazonaws.xray#InvalidRequestException","Message":"bad"}')
    write("put_response", "header-and-body",
          b"ThrottledException:http://internal.amazon.com/coral/com.amazonaws.xray/\x00"
          b'{"message":"Rate exceeded"}')
    write("put_response", "html", b"<html><body>502 Bad Gateway</body></html>")
    write("put_response", "wrong-shape", b'{"UnprocessedTraceSegments":{"Id":5}}')

    # --- encode: documents separated by 0xFF ---
    sep = b"\xff"
    write("encode", "sdk-documents", sep.join(bodies[n] for n in
                                               ("sdk-small-segment", "sdk-full-segment", "sdk-subsegment-step-0")))
    write("encode", "raw-utf8-and-controls", raw_utf8 + sep + b'{"ctl":"\x00\x01\x08\x0c\x1f\x7f"}' + sep + b"")
    write("encode", "escapes", b'{"s":"q\\"uo\\\\te\\n","t":"\t\r\n"}' + sep + "é€𝄞".encode())
    write("encode", "fifty-small", sep.join(b'{"i":%d}' % i for i in range(50)))

    # --- flags: arguments separated by NUL ---
    for name, args in {
        "aws-daemon-style": ["-o", "-n", "eu-west-1", "-b", "0.0.0.0:2000", "-m", "64", "-l", "debug"],
        "long-with-equals": ["--region=us-east-1", "--local-mode=false", "--bind-tcp=127.0.0.1:2000",
                             "--shutdown-timeout=500ms", "--concurrency=8"],
        "terminator": ["-o", "--", "-n", "x"],
        "positional-stops": ["-o", "bench", "-n", "x"],
        "bad-bool": ["-o=maybe"],
        "missing-value": ["-n"],
        "unknown": ["-zzz", "1"],
        "dashes": ["-", "---x", "-="],
    }.items():
        write("flags", name, "\0".join(args).encode())


if __name__ == "__main__":
    main()
