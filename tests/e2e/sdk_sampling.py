"""Drives the real AWS X-Ray Python SDK's centralized sampling through xrayd's TCP port.

AWS_XRAY_DAEMON_ADDRESS (udp:HOST:PORT tcp:HOST:PORT) points the SDK at xrayd. The SDK fetches
sampling rules (GetSamplingRules) and reports statistics / gets targets (SamplingTargets) over
TCP, unsigned; xrayd signs and forwards them to the fake X-Ray. The only change to the SDK is a
shorter target poll interval (1 s instead of 10 s) so the test does not wait.

Prints one JSON object with what the SDK did and decided.
"""
import json
import sys
import time

from aws_xray_sdk.core import xray_recorder

BLOCKED = "blocked-svc"
OPEN = "open-svc"


def wait_for(pred, timeout):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if pred():
            return True
        time.sleep(0.05)
    return False


def main():
    xray_recorder.configure(service=OPEN, sampling=True, context_missing="LOG_ERROR")
    sampler = xray_recorder.sampler
    sampler._target_poller._interval = 1
    sampler.start()
    out = {"sampler": type(sampler).__name__}

    out["rules_loaded"] = wait_for(lambda: len(sampler._cache.rules) > 0, 20)
    out["rules"] = sorted(r.name for r in sampler._cache.rules)

    # Decisions with the rules as fetched: the blocked service's rule has rate 0 and reservoir 0.
    out["blocked_sampled"] = sum(
        1 for _ in range(50) if sampler.should_trace({"service": BLOCKED})
    )
    out["open_sampled_before_targets"] = sum(
        1 for _ in range(50) if sampler.should_trace({"service": OPEN})
    )

    # Segments through the recorder: sampled ones are sent over UDP to xrayd.
    for name in (BLOCKED, OPEN, BLOCKED, OPEN):
        xray_recorder.begin_segment(name)
        xray_recorder.end_segment()

    # The target poller reports statistics; the fake answers rate 0 / quota 0 for every rule.
    def target_applied():
        return any(r.name == "Default" and r.rate == 0.0 for r in sampler._cache.rules)

    out["targets_applied"] = wait_for(target_applied, 20)
    out["open_sampled_after_targets"] = sum(
        1 for _ in range(50) if sampler.should_trace({"service": OPEN})
    )
    print(json.dumps(out))
    sys.stdout.flush()


if __name__ == "__main__":
    main()
