#!/usr/bin/env bash
# Installs what skiff's build, tests and benchmarks need on a Debian 12 machine (run as root).
# Idempotent: packages already present are skipped quickly.
set -euo pipefail

PKGS=(
  build-essential cmake pkg-config protobuf-compiler   # zlib-ng (flate2) and ttrpc/protobuf builds
  busybox-static                                        # base rootfs for test bundles and examples
  runc crun                                             # differential tests and benchmarks
  umoci skopeo                                          # image layout comparisons
  containerd                                            # shim tests (ctr)
  jq iproute2 procps psmisc util-linux                  # test helpers
  containernetworking-plugins iptables curl             # skiff-image unpack -p (CNI bridge/portmap) and its tests
)
OPTIONAL_PKGS=(
  buildah podman                                        # builder / drop-in comparisons (skipped if absent)
  qemu-system-x86 linux-image-amd64 cpio                # pure cgroup v2 guest for cgroup tests
  hyperfine debootstrap
)

missing=()
for p in "${PKGS[@]}"; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
opt_missing=()
if [ "${SKIFF_SKIP_OPTIONAL:-0}" != 1 ]; then
  for p in "${OPTIONAL_PKGS[@]}"; do dpkg -s "$p" >/dev/null 2>&1 || opt_missing+=("$p"); done
fi

if [ ${#missing[@]} -gt 0 ] || [ ${#opt_missing[@]} -gt 0 ]; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -q
  if [ ${#missing[@]} -gt 0 ]; then
    apt-get install -y -q --no-install-recommends "${missing[@]}"
  fi
  if [ ${#opt_missing[@]} -gt 0 ]; then
    apt-get install -y -q --no-install-recommends "${opt_missing[@]}" ||
      echo "install-deps: optional packages not installed (${opt_missing[*]}); tests that need them will skip" >&2
  fi
fi

if ! command -v cargo >/dev/null 2>&1; then
  if [ -x "$HOME/.cargo/bin/cargo" ]; then
    echo "install-deps: add \$HOME/.cargo/bin to PATH" >&2
  else
    echo "install-deps: no Rust toolchain; install one with rustup (https://rustup.rs), Rust >= 1.85" >&2
  fi
  exit 1
fi
