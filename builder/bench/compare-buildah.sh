#!/bin/sh
# Benchmark skiff-build against `buildah build` (overlay storage driver) on the issue's small
# Dockerfile (FROM busybox, COPY 200 small files, a RUN loop, ENV, WORKDIR, CMD): cold build,
# fully cached rebuild, and rebuild after one COPY'd file changed. Both tools run in the same
# hyperfine invocation so they see the same machine load.
#
# Usage: builder/bench/compare-buildah.sh [RUNS]
#   SKIFF_BUILD / SKIFF_IMAGE  binaries (default target/release/...)
#   RUNTIME                    runtime for skiff-build RUN steps (default runc)
set -eu
runs=${1:-5}
here=$(cd "$(dirname "$0")/../.." && pwd)
SKIFF_BUILD=${SKIFF_BUILD:-$here/target/release/skiff-build}
SKIFF_IMAGE=${SKIFF_IMAGE:-$here/target/release/skiff-image}
RUNTIME=${RUNTIME:-runc}
command -v hyperfine >/dev/null || { echo "hyperfine is needed" >&2; exit 1; }
command -v buildah >/dev/null || { echo "SKIP: buildah is not installed" >&2; exit 0; }
w=$(mktemp -d /tmp/skiff-build-bench.XXXXXX)
trap 'buildah --root "$w/bh" --runroot "$w/bhrun" --storage-driver overlay rmi -a -f >/dev/null 2>&1 || true; umount -R "$w/bh/overlay" 2>/dev/null || true; rm -rf "$w"' EXIT
mkdir -p "$w/ctx/files"
i=1; while [ $i -le 200 ]; do echo "file $i" > "$w/ctx/files/f$i.txt"; i=$((i+1)); done
cat > "$w/ctx/Dockerfile" <<'DF'
FROM busybox
COPY files /app/files
RUN for i in $(seq 1 50); do echo $i >> /app/loop.txt; done
ENV MODE=bench
WORKDIR /app
CMD ["cat", "/app/loop.txt"]
DF
export SKIFF_STORE="$w/store"
SKIFF_IMAGE=$SKIFF_IMAGE "$here/examples/make-busybox-base.sh" >/dev/null
"$SKIFF_IMAGE" export busybox:latest "oci-archive:$w/busybox.tar" >/dev/null
cp -a "$w/ctx" "$w/bctx"
sed -i "s|^FROM busybox|FROM oci-archive:$w/busybox.tar|" "$w/bctx/Dockerfile"
SB="$SKIFF_BUILD --runtime $RUNTIME --runtime-root $w/rt -q -t bench:1"
BH="buildah --root $w/bh --runroot $w/bhrun --storage-driver overlay build --isolation chroot --layers -q -t bench:1"
$SB "$w/ctx" >/dev/null; $BH "$w/bctx" >/dev/null 2>&1
hyperfine -N -r "$runs" -w 1 -n "skiff-build cold" "$SB --no-cache $w/ctx" -n "buildah cold" "$BH --no-cache $w/bctx"
hyperfine -N -r "$runs" -w 1 -n "skiff-build cached" "$SB $w/ctx" -n "buildah cached" "$BH $w/bctx"
hyperfine -r "$runs" -w 1 \
  --prepare "date +%s%N > $w/ctx/files/f7.txt" -n "skiff-build one file changed" "$SB $w/ctx" \
  --prepare "date +%s%N > $w/bctx/files/f7.txt" -n "buildah one file changed" "$BH $w/bctx"
