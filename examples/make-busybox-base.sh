#!/bin/sh
# Build a minimal busybox root filesystem from Debian's busybox-static (make-busybox-rootfs.sh)
# and import it into the skiff store as busybox:latest (there is no registry here: every base
# image is made locally).
#
# Usage: examples/make-busybox-base.sh [NAME[:TAG]]
#   SKIFF_IMAGE  skiff-image binary (default: skiff-image on PATH, else target/debug/skiff-image)
#   SKIFF_STORE  store directory (default /var/lib/skiff)
#   BUSYBOX      busybox binary to use (default /bin/busybox, from busybox-static)
set -eu
name=${1:-busybox:latest}
here=$(cd "$(dirname "$0")" && pwd)
if [ -z "${SKIFF_IMAGE:-}" ]; then
    if command -v skiff-image >/dev/null 2>&1; then SKIFF_IMAGE=skiff-image
    else SKIFF_IMAGE="$here/../target/debug/skiff-image"; fi
fi

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
root="$work/rootfs"
sh "$here/make-busybox-rootfs.sh" "$root"
tar --numeric-owner --owner=0 --group=0 --sort=name -C "$root" -cf "$work/busybox.tar" .
"$SKIFF_IMAGE" import "$work/busybox.tar" "$name" --cmd sh
