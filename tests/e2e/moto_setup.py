#!/usr/bin/env python3
"""Provision an IAM identity in a signature-verifying moto_server.

moto_server verifies SigV4 signatures and IAM permissions only when it is
started with ``INITIAL_NO_AUTH_ACTION_COUNT=N``. How moto 5.2.1 does it
(moto/core/authorization.py, moto/iam/access_control.py):

* Every request that reaches a service's ``BaseResponse.call_action`` runs
  ``_authenticate_and_authorize_action``. While the class-wide
  ``ActionAuthenticatorMixin.request_count`` is below N the request is let
  through unchecked and the counter is incremented; from then on every
  request is checked. ``/moto-api/...`` endpoints and plain TCP connects do
  not go through ``call_action`` and are not counted.
* The check looks up the access key id from the ``Credential=`` scope of the
  ``Authorization`` header among IAM users' keys (``AKIA...``) or STS assumed
  role keys (unknown key -> 403 InvalidClientTokenId), recomputes the SigV4
  signature with botocore over the signed headers, the path (+ query) and the
  raw body (mismatch -> 403 SignatureDoesNotMatch), then evaluates the user's
  inline/attached/group policies for ``<service>:<action>`` (for X-Ray the
  action is the URL path: ``xray:TraceSegments``, ``xray:Traces``...; no
  Allow -> 403 AccessDenied).

This script spends exactly SETUP_CALLS (= 3) unauthenticated calls:
CreateUser, PutUserPolicy (inline ``xray:*``), CreateAccessKey. Start moto
with ``INITIAL_NO_AUTH_ACTION_COUNT=3`` and run this script first, before any
other call to moto. It then checks that verification is really on (a request
signed with a wrong secret must get 403 SignatureDoesNotMatch, a correctly
signed one must succeed) and prints
``{"AccessKeyId": ..., "SecretAccessKey": ..., "Region": ..., "Endpoint": ...}``.

Usage: moto_setup.py PORT [--region us-east-1] [--user NAME] [--no-verify]
"""

import argparse
import json
import sys

import boto3
import botocore.config
import botocore.exceptions

SETUP_CALLS = 3  # CreateUser, PutUserPolicy, CreateAccessKey

XRAY_POLICY = {
    "Version": "2012-10-17",
    "Statement": [{"Effect": "Allow", "Action": "xray:*", "Resource": "*"}],
}


def client(service, endpoint, region, key_id, secret):
    return boto3.client(
        service,
        endpoint_url=endpoint,
        region_name=region,
        aws_access_key_id=key_id,
        aws_secret_access_key=secret,
        config=botocore.config.Config(retries={"max_attempts": 1, "mode": "standard"}),
    )


def error_code(err):
    """(code, http status) of a ClientError.

    moto answers auth failures of rest-json services such as X-Ray with an
    XML ``<ErrorResponse>`` body (Content-Type text/html), which botocore
    cannot parse: the real code then only appears inside the message.
    """
    error = err.response.get("Error", {})
    status = err.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
    code = error.get("Code")
    message = error.get("Message") or ""
    if "<Code>" in message:
        code = message.split("<Code>", 1)[1].split("</Code>", 1)[0]
    return code, status


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("port", type=int)
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--region", default="us-east-1")
    ap.add_argument("--user", default="xrayd-e2e")
    ap.add_argument(
        "--no-verify",
        action="store_true",
        help="skip the check that signature verification is on",
    )
    args = ap.parse_args()
    endpoint = f"http://{args.host}:{args.port}"

    # The bootstrap credentials are never checked: these calls are within the
    # first N unauthenticated actions.
    iam = client("iam", endpoint, args.region, "AKIABOOTSTRAP0000000", "bootstrap")
    iam.create_user(UserName=args.user)
    iam.put_user_policy(
        UserName=args.user,
        PolicyName="xray-all",
        PolicyDocument=json.dumps(XRAY_POLICY),
    )
    key = iam.create_access_key(UserName=args.user)["AccessKey"]
    key_id, secret = key["AccessKeyId"], key["SecretAccessKey"]

    if not args.no_verify:
        # Wrong secret: must be refused, proving verification is on.
        bad = client("xray", endpoint, args.region, key_id, secret + "x")
        try:
            bad.batch_get_traces(TraceIds=["1-00000000-000000000000000000000000"])
        except botocore.exceptions.ClientError as err:
            code, status = error_code(err)
            if code != "SignatureDoesNotMatch" or status != 403:
                sys.exit(f"moto_setup: wrong secret gave {status} {code}, expected 403 SignatureDoesNotMatch")
        else:
            sys.exit(
                "moto_setup: a request signed with a wrong secret was accepted: "
                f"is moto running with INITIAL_NO_AUTH_ACTION_COUNT={SETUP_CALLS}?"
            )
        # Right secret: must be accepted (policy xray:* works).
        good = client("xray", endpoint, args.region, key_id, secret)
        good.batch_get_traces(TraceIds=["1-00000000-000000000000000000000000"])

    json.dump(
        {
            "AccessKeyId": key_id,
            "SecretAccessKey": secret,
            "Region": args.region,
            "Endpoint": endpoint,
            "InitialNoAuthActionCount": SETUP_CALLS,
        },
        sys.stdout,
    )
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
