#!/bin/sh
# Build a minimal busybox root filesystem from Debian's busybox-static and import it into the
# skiff store as busybox:latest (there is no registry here: every base image is made locally).
#
# Usage: examples/make-busybox-base.sh [NAME[:TAG]]
#   SKIFF_IMAGE  skiff-image binary (default: skiff-image on PATH, else target/debug/skiff-image)
#   SKIFF_STORE  store directory (default /var/lib/skiff)
#   BUSYBOX      busybox binary to use (default /bin/busybox, from busybox-static)
set -eu
name=${1:-busybox:latest}
busybox=${BUSYBOX:-/bin/busybox}
here=$(cd "$(dirname "$0")" && pwd)
if [ -z "${SKIFF_IMAGE:-}" ]; then
    if command -v skiff-image >/dev/null 2>&1; then SKIFF_IMAGE=skiff-image
    else SKIFF_IMAGE="$here/../target/debug/skiff-image"; fi
fi
[ -x "$busybox" ] || { echo "make-busybox-base: $busybox not found (apt-get install busybox-static)" >&2; exit 1; }
file "$busybox" 2>/dev/null | grep -q 'dynamically linked' && { echo "make-busybox-base: $busybox is not static" >&2; exit 1; }

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
root="$work/rootfs"
mkdir -p "$root/bin" "$root/sbin" "$root/usr/bin" "$root/usr/sbin" "$root/etc" "$root/root" \
         "$root/tmp" "$root/var/www" "$root/proc" "$root/sys" "$root/dev" "$root/run" "$root/home"
chmod 1777 "$root/tmp"
chmod 700 "$root/root"
cp "$busybox" "$root/bin/busybox"
chmod 755 "$root/bin/busybox"
# One symlink per applet, where busybox --install would put it.
"$busybox" --list-full | while read -r applet; do
    [ "$applet" = bin/busybox ] && continue
    ln -sf /bin/busybox "$root/$applet"
done
cat > "$root/etc/passwd" <<'PASSWD'
root:x:0:0:root:/root:/bin/sh
daemon:x:1:1:daemon:/usr/sbin:/bin/false
www-data:x:33:33:www-data:/var/www:/bin/false
nobody:x:65534:65534:nobody:/nonexistent:/bin/false
PASSWD
cat > "$root/etc/group" <<'GROUP'
root:x:0:
daemon:x:1:
www-data:x:33:
nogroup:x:65534:
GROUP
echo busybox > "$root/etc/hostname"
# Fixed timestamps so the base image is the same every time it is made.
find "$root" -exec touch -h -d @1700000000 {} +
tar --numeric-owner --owner=0 --group=0 --sort=name -C "$root" -cf "$work/busybox.tar" .
"$SKIFF_IMAGE" import "$work/busybox.tar" "$name" --cmd sh
