#!/bin/sh
# Make a minimal busybox root filesystem DIRECTORY from Debian's busybox-static: what debootstrap
# would give for a full distribution, small enough to build in a second. It is the input of
# `tar ... -cf base.tar` + `skiff-image import` (the `docker import` step of docs/tour.md) and of
# examples/make-busybox-base.sh.
#
# Usage: examples/make-busybox-rootfs.sh DIR     (DIR must not exist or be empty)
#   BUSYBOX  busybox binary to use (default /bin/busybox, from busybox-static)
set -eu
[ $# -eq 1 ] || { echo "usage: $0 DIR" >&2; exit 2; }
root=$1
busybox=${BUSYBOX:-/bin/busybox}
[ -x "$busybox" ] || { echo "make-busybox-rootfs: $busybox not found (apt-get install busybox-static)" >&2; exit 1; }
if file "$busybox" 2>/dev/null | grep -q 'dynamically linked'; then
    echo "make-busybox-rootfs: $busybox is not static" >&2; exit 1
fi
if [ -e "$root" ] && [ -n "$(ls -A "$root")" ]; then
    echo "make-busybox-rootfs: $root exists and is not empty" >&2; exit 1
fi
mkdir -p "$root/bin" "$root/sbin" "$root/usr/bin" "$root/usr/sbin" "$root/etc" "$root/root" \
         "$root/tmp" "$root/var/www" "$root/proc" "$root/sys" "$root/dev" "$root/run" "$root/home"
chmod 755 "$root"
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
