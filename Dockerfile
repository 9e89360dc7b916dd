# syntax=docker/dockerfile:1
#
# xrayd image: a static (musl) binary on FROM scratch, the layout of the AWS X-Ray daemon's image.
#
#   docker build -t xrayd .                                       # this machine's architecture
#   docker buildx build --platform linux/amd64,linux/arm64 -t REGISTRY/xrayd:TAG --push .
#
# The build stage runs scripts/build-static.sh, the same script CI runs (scripts/check-packaging.sh),
# natively for the platform being built (under QEMU emulation for the other one with buildx).
# No CA bundle is copied: xrayd carries the Mozilla roots (webpki-roots) in the binary.

FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY . .
# The script installs the musl target and Debian's musl-tools, builds with
# `cargo build --release --locked --target <arch>-unknown-linux-musl` and prints the binary's path.
# Then the whole root filesystem of the final image is laid out in /rootfs.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    bin="$(scripts/build-static.sh "$(uname -m)")" \
 && mkdir -p /rootfs/etc/amazon/xray /rootfs/usr/bin \
 && cp "$bin" /rootfs/xrayd \
 && ln -s /xrayd /rootfs/xray \
 && ln -s /xrayd /rootfs/usr/bin/xray \
 && cp deploy/cfg.yaml /rootfs/etc/amazon/xray/cfg.yaml \
 && echo 'xrayd:x:10001:10001:xrayd:/nonexistent:/sbin/nologin' > /rootfs/etc/passwd \
 && echo 'xrayd:x:10001:' > /rootfs/etc/group \
 && /rootfs/xrayd -v

FROM scratch
LABEL org.opencontainers.image.title="xrayd" \
      org.opencontainers.image.description="A fast, lean, drop-in replacement for the AWS X-Ray daemon" \
      org.opencontainers.image.licenses="Apache-2.0"
# /xrayd, with /xray and /usr/bin/xray linked to it for manifests written for the AWS image;
# /etc/passwd and /etc/group naming uid 10001; the default /etc/amazon/xray/cfg.yaml.
COPY --from=build /rootfs/ /
USER 10001:10001
EXPOSE 2000/udp 2000/tcp
# An exec probe needs no shell: `xrayd health` GETs /healthz on the TCP port and exits 0 or 1.
HEALTHCHECK --interval=30s --timeout=5s --start-period=10s --retries=3 \
  CMD ["/xrayd", "health", "--tcp", "127.0.0.1:2000"]
# Like the AWS image: UDP and TCP on all interfaces. Arguments given to `docker run` (or `args:` in
# Kubernetes) are appended, and a later -b/-t wins over these.
ENTRYPOINT ["/xrayd", "-t", "0.0.0.0:2000", "-b", "0.0.0.0:2000"]
