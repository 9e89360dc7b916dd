#!/usr/bin/env bash
# Builds every fuzz target and runs each for SECONDS (default 30), starting from fuzz/seeds/<target>/.
# The seeds are copied into a scratch corpus so the committed files are never touched.
# Exits non-zero if any target crashes (or fails to build); prints executions per target.
#
#   fuzz/run-all.sh 30
#   CORPUS_ROOT=/var/tmp/xrayd-corpus fuzz/run-all.sh 600   # keep and grow a corpus across runs
#   TARGETS="datagram encode" fuzz/run-all.sh 60            # a subset
set -uo pipefail

SECONDS_PER_TARGET="${1:-30}"
case "$SECONDS_PER_TARGET" in
  '' | *[!0-9]*) echo "usage: $0 SECONDS" >&2; exit 2 ;;
esac

FUZZ_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cd "$FUZZ_DIR"
TOOLCHAIN="${FUZZ_TOOLCHAIN:-+nightly}"

if [ -n "${CORPUS_ROOT:-}" ]; then
  SCRATCH="$CORPUS_ROOT"
  mkdir -p "$SCRATCH"
else
  SCRATCH="$(mktemp -d "${TMPDIR:-/tmp}/xrayd-fuzz.XXXXXX")"
  trap 'rm -rf "$SCRATCH"' EXIT
fi
LOGS="$SCRATCH/logs"
mkdir -p "$LOGS"

echo "== building fuzz targets"
if ! cargo "$TOOLCHAIN" fuzz build; then
  echo "fuzz build failed" >&2
  exit 1
fi
# Every target declared in fuzz/Cargo.toml, unless TARGETS names some.
TARGETS="${TARGETS:-$(cargo "$TOOLCHAIN" fuzz list)}"

# Inputs beyond the default 4 KiB matter for the segment targets (the 64 KiB limit).
max_len_for() {
  case "$1" in
    datagram | json_grammar) echo 70000 ;;
    encode) echo 16384 ;;
    *) echo 4096 ;;
  esac
}

status=0
results=()
for target in $TARGETS; do
  corpus="$SCRATCH/corpus/$target"
  artifacts="$FUZZ_DIR/artifacts/$target"
  mkdir -p "$corpus" "$artifacts"
  if [ -d "$FUZZ_DIR/seeds/$target" ]; then
    cp -n "$FUZZ_DIR/seeds/$target/"* "$corpus/" 2>/dev/null || true
  else
    echo "   (no fuzz/seeds/$target/: starting from an empty corpus)"
  fi
  log="$LOGS/$target.log"
  echo "== $target: ${SECONDS_PER_TARGET}s from $(ls "$corpus" | wc -l) inputs (log: $log)"
  cargo "$TOOLCHAIN" fuzz run "$target" "$corpus" -- \
    -max_total_time="$SECONDS_PER_TARGET" \
    -max_len="$(max_len_for "$target")" \
    -timeout=10 \
    -print_final_stats=1 \
    -artifact_prefix="$artifacts/" >"$log" 2>&1
  rc=$?
  execs="$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$log" | grep -o '[0-9]*$' | tail -1)"
  rate="$(grep -o 'stat::average_exec_per_sec: *[0-9]*' "$log" | grep -o '[0-9]*$' | tail -1)"
  new="$(grep -o 'stat::new_units_added: *[0-9]*' "$log" | grep -o '[0-9]*$' | tail -1)"
  if [ "$rc" -eq 0 ]; then
    verdict="ok"
  else
    verdict="FAILED (exit $rc)"
    status=1
    echo "---- $target failed; end of its log:" >&2
    grep -E "panicked at|assertion|SUMMARY|Test unit written|ERROR" "$log" | head -20 >&2
    tail -5 "$log" >&2
    if [ -z "${CORPUS_ROOT:-}" ]; then
      cp "$log" "$artifacts/last-run.log"
      echo "---- log kept at $artifacts/last-run.log" >&2
    fi
  fi
  results+=("$(printf '%-14s %12s execs %9s exec/s %6s new  %s' \
    "$target" "${execs:-?}" "${rate:-?}" "${new:-?}" "$verdict")")
done

echo
echo "== results (${SECONDS_PER_TARGET}s per target)"
printf '%s\n' "${results[@]}"
exit "$status"
