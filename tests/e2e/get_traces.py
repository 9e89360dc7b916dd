#!/usr/bin/env python3
"""Read traces back from X-Ray (or moto) with BatchGetTraces.

Prints one JSON object on stdout:
``{"Documents": [<Document string>, ...],
   "Segments": [{"TraceId", "Id", "Document"}, ...],
   "UnprocessedTraceIds": [...]}``
``Documents`` holds every Segment's ``Document`` string exactly as the service
returned it. Trace ids come from the command line and/or from
``--ids-from FILE`` (a records file written by emit_segments.py).

On an API error, prints ``{"Error": {"Code", "HTTPStatus", "Message"}}`` and
exits with status 3 (moto answers X-Ray auth failures with an XML body that
botocore cannot parse; the code is extracted from it).

Usage: get_traces.py --endpoint URL --region R --access-key-id K
                     --secret-access-key S [--ids-from records.json] [ID ...]
"""

import argparse
import json
import sys

import boto3
import botocore.config
import botocore.exceptions

# BatchGetTraces takes at most 5 trace ids per call on the real service.
IDS_PER_CALL = 5


def error_info(err):
    error = err.response.get("Error", {})
    status = err.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
    code = error.get("Code")
    message = error.get("Message") or ""
    if "<Code>" in message:
        code = message.split("<Code>", 1)[1].split("</Code>", 1)[0]
    return {"Code": code, "HTTPStatus": status, "Message": message}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--endpoint", required=True)
    ap.add_argument("--region", required=True)
    ap.add_argument("--access-key-id", required=True)
    ap.add_argument("--secret-access-key", required=True)
    ap.add_argument("--session-token", default=None)
    ap.add_argument("--ids-from", default=None, help="records JSON from emit_segments.py")
    ap.add_argument("trace_ids", nargs="*")
    args = ap.parse_args()

    ids = list(args.trace_ids)
    if args.ids_from:
        with open(args.ids_from, encoding="utf-8") as f:
            ids += [r["trace_id"] for r in json.load(f)]
    ids = list(dict.fromkeys(ids))  # unique, order kept
    if not ids:
        sys.exit("get_traces: no trace ids given")

    xray = boto3.client(
        "xray",
        endpoint_url=args.endpoint,
        region_name=args.region,
        aws_access_key_id=args.access_key_id,
        aws_secret_access_key=args.secret_access_key,
        aws_session_token=args.session_token,
        config=botocore.config.Config(retries={"max_attempts": 2, "mode": "standard"}),
    )
    paginator = xray.get_paginator("batch_get_traces")

    segments = []
    unprocessed = []
    try:
        for start in range(0, len(ids), IDS_PER_CALL):
            chunk = ids[start : start + IDS_PER_CALL]
            for page in paginator.paginate(TraceIds=chunk):
                for trace in page.get("Traces", []):
                    for seg in trace.get("Segments", []):
                        segments.append(
                            {"TraceId": trace.get("Id"), "Id": seg.get("Id"), "Document": seg.get("Document")}
                        )
                unprocessed += page.get("UnprocessedTraceIds", [])
    except botocore.exceptions.ClientError as err:
        json.dump({"Error": error_info(err)}, sys.stdout)
        sys.stdout.write("\n")
        sys.exit(3)

    json.dump(
        {
            "Documents": [s["Document"] for s in segments],
            "Segments": segments,
            "UnprocessedTraceIds": unprocessed,
        },
        sys.stdout,
        ensure_ascii=True,
    )
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
