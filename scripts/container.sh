#!/usr/bin/env bash
# Builds the Dockerfile's image with podman and runs it, on a machine without registry access:
#
# 1. The base images the Dockerfile names are bootstrapped locally when missing:
#    `debian:bookworm-slim` with mmdebstrap (minbase), and `rust:<version>-bookworm` with
#    mmdebstrap (a C toolchain) plus this machine's Rust toolchain of that version, laid out as
#    the official image does (RUSTUP_HOME=/usr/local/rustup, cargo on PATH in
#    /usr/local/cargo/bin). Both are `podman import`ed under those names.
# 2. `podman build` (host network: the build fetches crates from crates.io and Debian packages).
# 3. The image runs twice on loopback: the bundled mock upstream, and the proxy in front of it
#    (heuristic scorer). The script checks /healthz, a compressed chat completion (fewer tokens
#    after than before, the mock's answer) and a stream (SSE events through [DONE]), then prints
#    the image's size.
#
# Needs root (or rootless podman), podman with the runc runtime and `default_ulimits = []` in
# /etc/containers/containers.conf, and mmdebstrap: `apt-get install podman mmdebstrap runc`.
# BOOTSTRAP_ONLY=1 stops after step 1. A cold build compiles every dependency in release mode (about 15 minutes on 2 cores), so CI does
# not run this; docs/docker.md records when it last passed.
set -euo pipefail
cd "$(dirname "$0")/.."

image=${IMAGE:-lingua-proxy:latest}
proxy_port=${PROXY_PORT:-18080}
mock_port=${MOCK_PORT:-19090}
rust_image=$(sed -n 's/^FROM \(rust:[^ ]*\) AS build$/\1/p' Dockerfile)
slim_image=$(sed -n 's/^FROM \(debian:[^ ]*\)$/\1/p' Dockerfile)
rust_version=${rust_image#rust:}
rust_version=${rust_version%-bookworm}
work=$(mktemp -d)
cleanup() {
  podman rm -f lp-check-proxy lp-check-mock >/dev/null 2>&1 || true
  rm -rf "$work"
}
trap cleanup EXIT

# The bootstrapped images trust the CAs this machine added to its own store (a TLS-intercepting
# egress proxy, a private registry mirror), as an image built here must.
trust_hook='if ls /usr/local/share/ca-certificates/*.crt >/dev/null 2>&1; then
  cp /usr/local/share/ca-certificates/*.crt "$1/usr/local/share/ca-certificates/"
  chroot "$1" update-ca-certificates >/dev/null
fi'

if ! podman image exists "$slim_image"; then
  echo "bootstrapping $slim_image (mmdebstrap, minbase)..."
  mmdebstrap --quiet --variant=minbase --include=ca-certificates \
    --customize-hook="$trust_hook" bookworm "$work/slim.tar"
  podman import --quiet "$work/slim.tar" "$slim_image" >/dev/null
  rm -f "$work/slim.tar"
fi

if ! podman image exists "$rust_image"; then
  toolchain=$(rustup toolchain list -v | awk -v v="$rust_version" '$1 ~ "^"v {print $NF; exit}')
  toolchain=$(readlink -f "${toolchain:-$HOME/.rustup/toolchains/$rust_version.0-x86_64-unknown-linux-gnu}")
  [ -x "$toolchain/bin/cargo" ] || { echo "no Rust $rust_version toolchain here (rustup toolchain install $rust_version)" >&2; exit 1; }
  echo "bootstrapping $rust_image (mmdebstrap + the Rust toolchain at $toolchain)..."
  name="$rust_version.0-x86_64-unknown-linux-gnu"
  mmdebstrap --quiet --variant=apt \
    --include=build-essential,ca-certificates,pkg-config,curl,git \
    --customize-hook="$trust_hook" \
    --customize-hook="mkdir -p \"\$1/usr/local/rustup/toolchains\" \"\$1/usr/local/cargo/bin\"" \
    --customize-hook="cp -a '$toolchain' \"\$1/usr/local/rustup/toolchains/$name\"" \
    --customize-hook="for b in cargo rustc rustdoc rustfmt; do [ -e \"\$1/usr/local/rustup/toolchains/$name/bin/\$b\" ] && ln -s /usr/local/rustup/toolchains/$name/bin/\$b \"\$1/usr/local/cargo/bin/\$b\"; done; true" \
    bookworm "$work/rust.tar"
  podman import --quiet \
    --change 'ENV PATH=/usr/local/cargo/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    --change 'ENV CARGO_HOME=/usr/local/cargo' \
    --change 'ENV RUSTUP_HOME=/usr/local/rustup' \
    "$work/rust.tar" "$rust_image" >/dev/null
  rm -f "$work/rust.tar"
fi

[ -z "${BOOTSTRAP_ONLY:-}" ] || exit 0

echo "building $image..."
started=$(date +%s)
podman build --pull=never --network host --tag "$image" .
echo "build took $(( $(date +%s) - started )) s"

podman rm -f lp-check-proxy lp-check-mock >/dev/null 2>&1 || true
podman run -d --name lp-check-mock --network host --entrypoint mock-upstream "$image" \
  --listen "127.0.0.1:$mock_port" >/dev/null
podman run -d --name lp-check-proxy --network host \
  -e LINGUA_PROXY_LISTEN="127.0.0.1:$proxy_port" \
  -e LINGUA_PROXY_UPSTREAM__BASE_URL="http://127.0.0.1:$mock_port/v1" \
  -e LINGUA_PROXY_COMPRESSION__SCORER=heuristic \
  -e LINGUA_PROXY_COMPRESSION__INSTRUCTIONS=compress \
  -e LINGUA_PROXY_COMPRESSION__ROLES__SYSTEM__MIN_TOKENS=50 \
  "$image" >/dev/null

base="http://127.0.0.1:$proxy_port"
for _ in $(seq 1 100); do
  curl -fsS "$base/healthz" >/dev/null 2>&1 && break
  sleep 0.2
done
curl -fsS "$base/healthz" >/dev/null || { podman logs lp-check-proxy; echo "FAIL: /healthz" >&2; exit 1; }
echo "ok: /healthz"

system="You are the operations assistant of Northwind Logistics. You help dispatchers plan \
deliveries, answer questions about shipments and explain delays to customers. Always check the \
shipment status before you answer, and never invent tracking numbers. When a delivery is late by \
more than two days, apologise and offer the customer a call back from the dispatch team. The \
warehouse in Rotterdam closes at 18:00 local time and the one in Hamburg at 20:00. Trucks leave \
every morning at 06:30. Keep answers short, friendly and precise, and use metric units."
body() {
  printf '{"model":"gpt-4o-mini","stream":%s,"messages":[{"role":"system","content":"%s"},{"role":"user","content":"When does the Hamburg warehouse close?"}]}' "$1" "$system"
}
headers="$work/headers"
answer=$(curl -fsS -D "$headers" -H 'content-type: application/json' -d "$(body false)" "$base/v1/chat/completions")
before=$(awk -F': ' 'tolower($1)=="x-lingua-tokens-before" {print $2+0}' "$headers")
after=$(awk -F': ' 'tolower($1)=="x-lingua-tokens-after" {print $2+0}' "$headers")
echo "$answer" | grep -q '"chat.completion"' || { echo "FAIL: not a chat completion: $answer" >&2; exit 1; }
[ -n "$before" ] && [ -n "$after" ] && [ "$after" -lt "$before" ] \
  || { echo "FAIL: not compressed (tokens before=$before after=$after)" >&2; exit 1; }
echo "ok: compressed chat completion, $before -> $after prompt tokens"

stream=$(curl -fsSN -H 'content-type: application/json' -d "$(body true)" "$base/v1/chat/completions")
events=$(grep -c '^data: ' <<<"$stream" || true)
grep -q '^data: \[DONE\]' <<<"$stream" || { echo "FAIL: stream without [DONE]: $stream" >&2; exit 1; }
echo "ok: stream of $events SSE events ending in [DONE]"

size=$(podman image inspect "$image" --format '{{.Size}}')
echo "image $image: $(( size / 1024 / 1024 )) MiB"
