#!/usr/bin/env bash
# Build the distributable skiff runtime: profile `dist` (fat LTO, size-optimised), statically linked
# against glibc and non-PIE, so each `skiff` process maps fewer pages and does no start-up
# relocation. This is the binary the runtime benchmark's numbers in docs/benchmarks.md are for.
#
# Usage: scripts/build-release.sh [DEST]   (default DEST: target/dist/skiff)
# The other tools (skiff-image, skiff-build, the shim) are plain `cargo build --release`.
set -euo pipefail
cd "$(dirname "$0")/.."
dest=${1:-target/dist/skiff}
triple="$(uname -m)-unknown-linux-gnu"
# --target keeps these flags off build scripts and proc-macros, which must stay PIC and dynamic.
RUSTFLAGS="-C target-feature=+crt-static -C relocation-model=static" \
  cargo build --locked --profile dist --target "$triple" -p skiff
mkdir -p "$(dirname "$dest")"
install -m 0755 "target/$triple/dist/skiff" "$dest"
echo "built $dest ($(stat -c %s "$dest") bytes, static non-PIE)"
