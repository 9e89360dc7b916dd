#!/usr/bin/env bash
# Builds the fully static (musl, static-pie) release binary of xrayd.
#
#   scripts/build-static.sh [x86_64|aarch64]      (default: this machine's architecture)
#
# The Dockerfile's build stage and CI (scripts/check-packaging.sh) both run this script, so the
# binary CI checks is built with the same command as the one in the image. It installs what it
# needs when missing (the rustup target; Debian's musl-tools for a native build) and prints the
# path of the binary as the only line on stdout; progress goes to stderr.
#
# Environment:
#   CARGO_TARGET_DIR            where to build (default: target/static, apart from other builds)
#   XRAYD_STATIC_NO_INSTALL=1   install nothing; fail if something is missing
#   XRAYD_STATIC_ZIGBUILD=1     cross-build with `cargo zigbuild` (see below)
#   XRAYD_STATIC_FEATURES       cargo features to build with, e.g. `mimalloc` (see BENCHMARKS.md)
#
# Native builds (x86_64 on x86_64, aarch64 on aarch64) use Debian's musl-gcc. Cross-building
# aarch64 on x86_64 needs a musl cross C compiler for ring: `aarch64-linux-musl-gcc` on PATH
# (any aarch64 musl cross toolchain), or XRAYD_STATIC_ZIGBUILD=1 with zig and cargo-zigbuild
# installed (`pip install ziglang` and `cargo install --locked cargo-zigbuild`). Debian has no
# aarch64 *musl* cross compiler. See docs/deploy.md, "Building the binary and the image".
set -euo pipefail

host="$(uname -m)"
arch="${1:-$host}"
case "$arch" in
  x86_64 | amd64) arch=x86_64 ;;
  aarch64 | arm64) arch=aarch64 ;;
  *)
    echo "usage: $0 [x86_64|aarch64]" >&2
    exit 2
    ;;
esac
case "$host" in
  amd64) host=x86_64 ;;
  arm64) host=aarch64 ;;
esac
target="${arch}-unknown-linux-musl"
features=()
if [ -n "${XRAYD_STATIC_FEATURES:-}" ]; then
  features=(--features "$XRAYD_STATIC_FEATURES")
fi
target_env="${target//-/_}" # x86_64_unknown_linux_musl, as in CC_<target>
target_upper="${target_env^^}" # as in CARGO_TARGET_<TARGET>_LINKER

root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$root/target/static}"

say() { echo "build-static: $*" >&2; }
may_install() { [ "${XRAYD_STATIC_NO_INSTALL:-0}" != 1 ]; }

apt_install() {
  may_install || { say "missing $*, and XRAYD_STATIC_NO_INSTALL=1"; return 1; }
  command -v apt-get >/dev/null || { say "missing $* and no apt-get to install it"; return 1; }
  say "installing $* with apt-get"
  # The package lists may be missing or stale (fresh container): update only when needed.
  if ! DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "$@" >&2; then
    DEBIAN_FRONTEND=noninteractive apt-get update >&2
    DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "$@" >&2
  fi
}

# 1. A C compiler for the target: ring builds C and assembly.
zig=0
cc=""
if [ "${XRAYD_STATIC_ZIGBUILD:-0}" = 1 ]; then
  zig=1
elif [ "$arch" = "$host" ]; then
  command -v musl-gcc >/dev/null || apt_install musl-tools
  cc=musl-gcc
elif command -v "${arch}-linux-musl-gcc" >/dev/null; then
  cc="${arch}-linux-musl-gcc"
else
  say "cross-building $target on $host needs ${arch}-linux-musl-gcc on PATH (a musl cross toolchain),"
  say "or XRAYD_STATIC_ZIGBUILD=1 after: pip install ziglang && cargo install --locked cargo-zigbuild"
  say "(Debian has no ${arch} musl cross compiler; see docs/deploy.md)"
  exit 1
fi

# 2. The Rust standard library for the musl target.
if ! rustup target list --installed 2>/dev/null | grep -qx "$target"; then
  may_install || { say "rustup target $target is missing (rustup target add $target)"; exit 1; }
  say "rustup target add $target"
  rustup target add "$target" >&2
fi

# 3. Build the daemon alone (`-p xrayd`: not the workspace's benchmark harness or test kit). The
#    release profile (Cargo.toml) has lto = "fat", codegen-units = 1, strip = true and
#    panic = "abort"; musl targets link statically (static-pie) by default.
if [ "$zig" = 1 ]; then
  command -v cargo-zigbuild >/dev/null || { say "XRAYD_STATIC_ZIGBUILD=1 but cargo-zigbuild is not installed"; exit 1; }
  say "cargo zigbuild --release --locked -p xrayd --target $target ${features[*]}"
  cargo zigbuild --release --locked -p xrayd --target "$target" "${features[@]}" >&2
else
  export "CC_${target_env}=$cc"
  # Cross: the host's cc cannot link for another architecture, so the cross compiler links too.
  # Native: rustc links with the host cc and its own self-contained musl crt objects.
  if [ "$arch" != "$host" ]; then
    linker_var="CARGO_TARGET_${target_upper}_LINKER"
    export "$linker_var=${!linker_var:-$cc}"
  fi
  say "CC_${target_env}=$cc cargo build --release --locked -p xrayd --target $target ${features[*]} (CARGO_TARGET_DIR=$CARGO_TARGET_DIR)"
  cargo build --release --locked -p xrayd --target "$target" "${features[@]}" >&2
fi

bin="$CARGO_TARGET_DIR/$target/release/xrayd"
[ -x "$bin" ] || { say "expected $bin after the build"; exit 1; }
say "built $bin ($(stat -c %s "$bin") bytes)"
echo "$bin"
