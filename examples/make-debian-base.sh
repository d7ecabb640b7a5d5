#!/bin/sh
# Build a minimal Debian root filesystem with debootstrap and import it into the skiff store as
# debian:bookworm (there is no registry here: every base image is made locally). It is the base
# of examples/flask, the seeds' Flask app.
#
# Usage: examples/make-debian-base.sh [NAME[:TAG]]        (default debian:$SUITE)
#   SUITE          Debian release (default bookworm)
#   DEBIAN_MIRROR  mirror URL (default: the Debian mirror this machine's apt uses, from
#                  /etc/apt/sources.list{,.d/*}, else http://deb.debian.org/debian)
#   SKIFF_IMAGE    skiff-image binary (default: skiff-image on PATH, else target/debug/skiff-image)
#   SKIFF_STORE    store directory (default /var/lib/skiff)
#   TMPDIR         where the root filesystem is built (default /var/tmp; needs ~300 MB)
# Needs root and debootstrap (apt-get install debootstrap). Takes about 1.5 minutes here.
set -eu
suite=${SUITE:-bookworm}
name=${1:-debian:$suite}
here=$(cd "$(dirname "$0")" && pwd)
if [ -z "${SKIFF_IMAGE:-}" ]; then
    if command -v skiff-image >/dev/null 2>&1; then SKIFF_IMAGE=skiff-image
    else SKIFF_IMAGE="$here/../target/debug/skiff-image"; fi
fi
if ! command -v debootstrap >/dev/null 2>&1; then
    echo "make-debian-base.sh: debootstrap is not installed (apt-get install debootstrap)" >&2
    exit 1
fi

# The machine's own Debian mirror: deb822 "URIs:" lines or one-line "deb URL SUITE ..." entries,
# the first whose path ends in /debian (not debian-security).
apt_mirror() {
    for f in /etc/apt/sources.list.d/*.sources /etc/apt/sources.list /etc/apt/sources.list.d/*.list; do
        [ -r "$f" ] || continue
        sed -n -e 's/^URIs:[[:space:]]*//p' -e 's/^deb[[:space:]]\{1,\}\(\[[^]]*\][[:space:]]*\)\{0,1\}\([^[:space:]]*\).*/\2/p' "$f"
    done | tr ' ' '\n' | grep -E '^https?://.*/debian/?$' | head -n 1
}
mirror=${DEBIAN_MIRROR:-$(apt_mirror || true)}
mirror=${mirror:-http://deb.debian.org/debian}

work=$(mktemp -d "${TMPDIR:-/var/tmp}/skiff-debian.XXXXXX")
root="$work/rootfs"
cleanup() {
    # debootstrap mounts proc/sys inside the target while it works; never delete through them.
    grep -F " $root" /proc/self/mountinfo | awk '{print $5}' | sort -r | while read -r m; do
        umount -l "$m" 2>/dev/null || true
    done
    rm -rf --one-file-system "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

echo "debootstrap --variant=minbase $suite from $mirror" >&2
debootstrap --variant=minbase "$suite" "$root" "$mirror" >"$work/debootstrap.log" 2>&1 || {
    tail -n 20 "$work/debootstrap.log" >&2
    echo "make-debian-base.sh: debootstrap failed (log above)" >&2
    exit 1
}
# Like Docker's debian images: no package lists or downloaded packages in the base.
rm -rf "$root"/var/lib/apt/lists/* "$root"/var/cache/apt/archives/*.deb "$root"/var/cache/apt/*.bin
# The `docker import` input: proc, sys and dev stay as empty directories (the runtime mounts them).
tar --numeric-owner --sort=name --exclude='./proc/*' --exclude='./sys/*' --exclude='./dev/*' \
    -C "$root" -cf "$work/debian.tar" .
"$SKIFF_IMAGE" import "$work/debian.tar" "$name" --cmd bash
