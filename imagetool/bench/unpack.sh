#!/bin/sh
# Benchmark: unpack of a multi-layer Debian image (debootstrap rootfs split into 5 gzip layers)
# with skiff-image (copy, overlay cold, overlay warm) against `umoci unpack`, `tar -xzf` of each
# layer in turn and `gzip -dc` alone, in interleaved rounds. Needs root, hyperfine, umoci.
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
RUNS=${RUNS:-5}

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

# Interleaved rounds: each round runs every unpacker once (prepare, then the timed command), in
# an order rotated per round, so a slow spell of this shared VM (host-side page faults make its
# system time swing by 2x between minutes) hits all of them alike. Ratios to tar are taken within
# each round, then the median over rounds is reported.
NAMES="tar gzip umoci copy overlay"
label() {
    case $1 in
    tar) echo "tar -xzf (5 layers in turn)" ;;
    gzip) echo "gzip -dc (5 layers)" ;;
    umoci) echo "umoci unpack" ;;
    copy) echo "skiff-image unpack --mode copy" ;;
    overlay) echo "skiff-image unpack --mode overlay (cold cache)" ;;
    esac
}
prepare() {
    case $1 in
    tar) sh -c "$ASIDE" "$WORK/t" ;;
    gzip) : ;;
    umoci) sh -c "$ASIDE" "$WORK/u" ;;
    copy) sh -c "$ASIDE" "$WORK/b-copy" ;;
    overlay)
        $RMB "$WORK/b-ovc" >/dev/null 2>&1 || true
        sh -c "$ASIDE" "$WORK/store/layers"
        mkdir -p "$WORK/store/layers"
        ;;
    esac
    sync
}
command_of() {
    case $1 in
    tar) echo "$TARX" ;;
    gzip) echo "$GZ" ;;
    umoci) echo "$UMOCI" ;;
    copy) echo "$COPY" ;;
    overlay) echo "$OVC" ;;
    esac
}
: > "$WORK/rounds.txt"
# One warm-up round (not recorded), then $RUNS recorded ones.
for r in $(seq 0 "$RUNS"); do
    order=$(echo $NAMES $NAMES | cut -d' ' -f$((r % 5 + 1))-$((r % 5 + 5)))
    for n in $order; do
        prepare "$n"
        /usr/bin/time -f "%e %U %S" -o "$WORK/time.txt" sh -c "$(command_of "$n")"
        if [ "$r" -gt 0 ]; then echo "$r $n $(cat "$WORK/time.txt")" >> "$WORK/rounds.txt"; fi
    done
done
# A bundle from cached layers takes milliseconds: measured without a shell (-N) by hyperfine.
hyperfine -N --runs 20 --warmup 2 --export-markdown "$WORK/cached.md" \
    -n "skiff-image unpack --mode overlay (cached layers)" \
    --prepare "sh -c '$RMB $WORK/b-ovw >/dev/null 2>&1 || true'" "$OVW" >/dev/null
uptime
echo
echo "$RUNS interleaved rounds (wall s: median, min, max; CPU s: median user / system; ratio: median over rounds of the command's wall time / tar's in that round)"
echo
echo "| Command | median [s] | min [s] | max [s] | user / sys [s] | / tar |"
echo "|:---|---:|---:|---:|---:|---:|"
for n in $NAMES; do
    awk -v n="$n" -v label="$(label "$n")" '
        $2 == "tar" { tar[$1] = $3 }
        $2 == n { w[++k] = $3; u[k] = $4; s[k] = $5; round[k] = $1 }
        function med(a, m,   i, j, t, b) {
            for (i = 1; i <= m; i++) b[i] = a[i]
            for (i = 1; i <= m; i++) for (j = i + 1; j <= m; j++) if (b[j] < b[i]) { t = b[i]; b[i] = b[j]; b[j] = t }
            return (m % 2) ? b[(m + 1) / 2] : (b[m / 2] + b[m / 2 + 1]) / 2
        }
        END {
            for (i = 1; i <= k; i++) r[i] = w[i] / tar[round[i]]
            mn = w[1]; mx = w[1]
            for (i = 1; i <= k; i++) { if (w[i] < mn) mn = w[i]; if (w[i] > mx) mx = w[i] }
            printf "| `%s` | %.3f | %.3f | %.3f | %.2f / %.2f | %.2f |\n", label, med(w, k), mn, mx, med(u, k), med(s, k), med(r, k)
        }' "$WORK/rounds.txt"
done
echo
echo "per-round overlay cold / tar: $(awk '$2 == "tar" { t[$1] = $3 } $2 == "overlay" { o[$1] = $3 } END { for (r = 1; r in o; r++) printf "%.2f ", o[r] / t[r] }' "$WORK/rounds.txt")"
cat "$WORK/cached.md"
# The round times survive the next run's clean-up of $WORK.
KEEP="$(dirname "$WORK")/rounds-$(date +%Y%m%d-%H%M%S).txt"
cp "$WORK/rounds.txt" "$KEEP"
echo "round times (round command wall user sys): $KEEP"
# Sanity: copy mode and umoci agree on the file count.
echo "files: skiff-image copy $(find "$WORK/b-copy/rootfs" | wc -l), umoci $(find "$WORK/u/rootfs" | wc -l), tar $(find "$WORK/t" | wc -l)"
