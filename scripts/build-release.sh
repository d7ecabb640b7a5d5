#!/usr/bin/env bash
# Build the distributable skiff runtime: profile `dist` (fat LTO, size-optimised), statically linked
# against glibc and non-PIE, so each `skiff` process maps fewer pages and does no start-up
# relocation. This is the binary the runtime benchmark's numbers in docs/benchmarks.md are for.
# Also builds `skiff-systemd`, the D-Bus helper of `skiff --systemd-cgroup` (kept out of `skiff` so
# plain runs stay small), and installs it in the same directory: skiff looks for it there (else
# on PATH).
#
# Usage: scripts/build-release.sh [DEST]   (default DEST: target/dist/skiff)
#   installs DEST and $(dirname DEST)/skiff-systemd
# The other tools (skiff-image, skiff-build, the shim) are plain `cargo build --release`.
set -euo pipefail
cd "$(dirname "$0")/.."
dest=${1:-target/dist/skiff}
triple="$(uname -m)-unknown-linux-gnu"
# --target keeps these flags off build scripts and proc-macros, which must stay PIC and dynamic.
RUSTFLAGS="-C target-feature=+crt-static -C relocation-model=static" \
  cargo build --locked --profile dist --target "$triple" -p skiff --bin skiff --bin skiff-systemd
out="${CARGO_TARGET_DIR:-target}/$triple/dist"
dir=$(dirname "$dest")
mkdir -p "$dir"
install -m 0755 "$out/skiff" "$dest"
install -m 0755 "$out/skiff-systemd" "$dir/skiff-systemd"
echo "built $dest ($(stat -c %s "$dest") bytes, static non-PIE)"
echo "built $dir/skiff-systemd ($(stat -c %s "$dir/skiff-systemd") bytes), skiff's --systemd-cgroup helper"
