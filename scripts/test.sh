#!/usr/bin/env bash
# skiff's test suite: installs dependencies, builds the workspace and runs every test as root.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "$(id -u)" != 0 ]; then
  echo "test.sh: the tests create real containers and must run as root" >&2
  exit 1
fi
scripts/install-deps.sh
export CARGO_TERM_COLOR=never
cargo fmt --all -- --check
cargo clippy --workspace --all-targets --locked -- -D warnings
cargo build --workspace --locked
cargo test --workspace --locked --no-fail-fast -- --test-threads=2
# The distributed runtime binary (static, non-PIE, profile `dist`) must pass the runtime suites too.
scripts/build-release.sh target/dist/skiff
SKIFF_BIN="$PWD/target/dist/skiff" cargo test -p skiff-conformance --locked --no-fail-fast \
  --test runtime_lifecycle --test runtime_config --test runtime_bad_input --test security -- --test-threads=2
