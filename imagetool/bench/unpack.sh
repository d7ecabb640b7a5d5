#!/bin/sh
# Benchmark: unpack of a multi-layer Debian image (debootstrap rootfs split into 5 gzip layers)
# with skiff-image (copy, overlay cold, overlay warm) against `umoci unpack`, `tar -xzf` of each
# layer in turn and `gzip -dc` alone. Needs root, hyperfine, umoci, jq.
#
#   imagetool/bench/unpack.sh [ROOTFS] [WORKDIR]
#   ROOTFS  default /var/tmp/skiff-image-bench/rootfs
#           (made with: debootstrap bookworm /var/tmp/skiff-image-bench/rootfs http://deb.debian.org/debian)
#   SKIFF_IMAGE  binary to test (default target-image/release/skiff-image, else target/release/skiff-image)
set -eu
ROOTFS=${1:-/var/tmp/skiff-image-bench/rootfs}
WORK=${2:-/var/tmp/skiff-image-bench/work}
HERE=$(cd "$(dirname "$0")/../.." && pwd)
SI=${SKIFF_IMAGE:-}
if [ -z "$SI" ]; then
    for c in "$HERE/target-image/release/skiff-image" "$HERE/target/release/skiff-image"; do
        [ -x "$c" ] && SI=$c && break
    done
fi
[ -x "$SI" ] || { echo "build skiff-image first: cargo build --release -p skiff-image" >&2; exit 1; }
[ -d "$ROOTFS/usr" ] || { echo "no rootfs at $ROOTFS" >&2; exit 1; }
RUNS=${RUNS:-3}

cleanup() {
    for b in "$WORK"/b-*; do [ -d "$b" ] && "$SI" --store "$WORK/store" rm-bundle "$b" >/dev/null 2>&1 || true; done
    umount "$WORK"/b-*/rootfs 2>/dev/null || true
    rm -rf "$WORK/old"
}
trap cleanup EXIT
cleanup
rm -rf "$WORK"
mkdir -p "$WORK/layers" "$WORK/layout/blobs/sha256"

echo "== splitting $ROOTFS into 5 gzip layers"
T="tar --numeric-owner --xattrs --xattrs-include=* -C $ROOTFS -c"
$T ./usr/lib                                        | gzip -6 > "$WORK/layers/1.tar.gz"
$T ./usr/share                                      | gzip -6 > "$WORK/layers/2.tar.gz"
$T --exclude=./usr/lib --exclude=./usr/share ./usr  | gzip -6 > "$WORK/layers/3.tar.gz"
$T ./var                                            | gzip -6 > "$WORK/layers/4.tar.gz"
$T --exclude=./usr --exclude=./var --exclude=./proc --exclude=./sys --exclude=./dev . | gzip -6 > "$WORK/layers/5.tar.gz"

layers_json=""; diffids_json=""
for i in 1 2 3 4 5; do
    f="$WORK/layers/$i.tar.gz"
    d=$(sha256sum "$f" | cut -d' ' -f1)
    u=$(gzip -dc "$f" | sha256sum | cut -d' ' -f1)
    cp "$f" "$WORK/layout/blobs/sha256/$d"
    s=$(stat -c %s "$f")
    layers_json="$layers_json${layers_json:+,}{\"mediaType\":\"application/vnd.oci.image.layer.v1.tar+gzip\",\"digest\":\"sha256:$d\",\"size\":$s}"
    diffids_json="$diffids_json${diffids_json:+,}\"sha256:$u\""
done
cfg="{\"architecture\":\"amd64\",\"os\":\"linux\",\"config\":{\"Cmd\":[\"bash\"]},\"rootfs\":{\"type\":\"layers\",\"diff_ids\":[$diffids_json]}}"
printf '%s' "$cfg" > "$WORK/cfg.json"
cd=$(sha256sum "$WORK/cfg.json" | cut -d' ' -f1); cp "$WORK/cfg.json" "$WORK/layout/blobs/sha256/$cd"
man="{\"schemaVersion\":2,\"mediaType\":\"application/vnd.oci.image.manifest.v1+json\",\"config\":{\"mediaType\":\"application/vnd.oci.image.config.v1+json\",\"digest\":\"sha256:$cd\",\"size\":$(stat -c %s "$WORK/cfg.json")},\"layers\":[$layers_json]}"
printf '%s' "$man" > "$WORK/man.json"
md=$(sha256sum "$WORK/man.json" | cut -d' ' -f1); cp "$WORK/man.json" "$WORK/layout/blobs/sha256/$md"
printf '{"schemaVersion":2,"manifests":[{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"sha256:%s","size":%s,"annotations":{"org.opencontainers.image.ref.name":"latest"}}]}' \
    "$md" "$(stat -c %s "$WORK/man.json")" > "$WORK/layout/index.json"
printf '{"imageLayoutVersion":"1.0.0"}' > "$WORK/layout/oci-layout"
du -cb "$WORK"/layers/*.tar.gz | tail -1 | awk '{printf "compressed: %.1f MB\n", $1/1e6}'
"$SI" --store "$WORK/store" import "oci:$WORK/layout:latest" debian:bench >/dev/null

# No deletions during the timed part: this host's ext4 has no journal, and such a file system
# will not reuse an inode freed in the last 60 s (360 s while its inode table block is dirty);
# every create then scans past the ~10k inodes the previous run freed (recently_deleted() in the
# kernel), which once made up a third of every unpacker's CPU time here. So the prepare steps
# only rename the previous run's output into $WORK/old (deleted at the end), and the timed part
# starts once the set-up's deletions are over a minute old.
mkdir -p "$WORK/old"
ASIDE="mv -T \$0 $WORK/old/\$(date +%s%N) 2>/dev/null || true"
aside() { printf "sh -c '%s' %s" "$ASIDE" "$1"; }
TARX="mkdir $WORK/t && for i in 1 2 3 4 5; do tar --numeric-owner -xzf $WORK/layers/\$i.tar.gz -C $WORK/t; done"
GZ="for i in 1 2 3 4 5; do gzip -dc $WORK/layers/\$i.tar.gz; done > /dev/null"
UMOCI="umoci unpack --image $WORK/layout:latest $WORK/u > /dev/null"
COPY="$SI --store $WORK/store unpack debian:bench $WORK/b-copy --mode copy"
OVC="$SI --store $WORK/store unpack debian:bench $WORK/b-ovc --mode overlay"
OVW="$SI --store $WORK/store unpack debian:bench $WORK/b-ovw --mode overlay"
RMB="$SI --store $WORK/store rm-bundle"
sync
echo "== waiting 65 s for the set-up's deleted inodes to age out"
sleep 65
uptime

hyperfine --runs "$RUNS" --warmup 1 --export-markdown "$WORK/results.md" --export-json "$WORK/results.json" \
    -n "tar -xzf (5 layers in turn)" --prepare "$(aside "$WORK/t"); sync" "$TARX" \
    -n "gzip -dc (5 layers)" --prepare "sync" "$GZ" \
    -n "umoci unpack" --prepare "$(aside "$WORK/u"); sync" "$UMOCI" \
    -n "skiff-image unpack --mode copy" --prepare "$(aside "$WORK/b-copy"); sync" "$COPY" \
    -n "skiff-image unpack --mode overlay (cold cache)" --prepare "$RMB $WORK/b-ovc >/dev/null 2>&1 || true; $(aside "$WORK/store/layers"); mkdir -p $WORK/store/layers; sync" "$OVC"
# A bundle from cached layers takes milliseconds, about what hyperfine's shell start-up costs, so
# it is measured without a shell (-N) in its own run (a 0 ms mean breaks the relative table).
hyperfine -N --runs 20 --warmup 2 --export-markdown "$WORK/cached.md" \
    -n "skiff-image unpack --mode overlay (cached layers)" \
    --prepare "sh -c '$RMB $WORK/b-ovw >/dev/null 2>&1 || true'" "$OVW"
uptime
cat "$WORK/results.md" "$WORK/cached.md"
echo "mean CPU per command (user / system, s):"
jq -r '.results[] | "  \(.command): \(.user*1000|round/1000) / \(.system*1000|round/1000)"' "$WORK/results.json"
# Sanity: copy mode and umoci agree on the file count.
echo "files: skiff-image copy $(find "$WORK/b-copy/rootfs" | wc -l), umoci $(find "$WORK/u/rootfs" | wc -l), tar $(find "$WORK/t" | wc -l)"
