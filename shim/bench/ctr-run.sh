#!/bin/bash
# Benchmark: `ctr run --rm IMAGE id true` through
#   skiff shim + skiff | runc v2 shim + runc | runc v2 shim + crun
# against one private containerd, runs interleaved, printing medians, ratios and shim RSS.
#
# Usage: shim/bench/ctr-run.sh [ITERATIONS]   (as root; default 30)
# Binaries: $SKIFF_SHIM_BIN and $SKIFF_BIN, else target/release/ of this workspace.
set -euo pipefail
N=${1:-30}
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
SHIM=${SKIFF_SHIM_BIN:-$ROOT/target/release/containerd-shim-skiff-v2}
SKIFF=${SKIFF_BIN:-$ROOT/target/release/skiff}
RUNC=$(command -v runc || echo /usr/sbin/runc)
CRUN=$(command -v crun || true)
for b in "$SHIM" "$SKIFF" "$RUNC"; do
  [ -x "$b" ] || { echo "missing $b (cargo build --release -p containerd-shim-skiff-v2 -p skiff)" >&2; exit 1; }
done
D=$(mktemp -d /tmp/skbench.XXXXXX)
NS=skbench$$
CTR="ctr -a $D/c.sock -n $NS"
IMG=docker.io/library/skiff-busybox:latest
CDPID=
cleanup() {
  set +e
  for id in $($CTR c ls -q 2>/dev/null); do
    $CTR t kill -s KILL "$id" >/dev/null 2>&1; sleep 0.2
    $CTR t rm "$id" >/dev/null 2>&1; $CTR c rm "$id" >/dev/null 2>&1
  done
  [ -n "$CDPID" ] && kill "$CDPID" 2>/dev/null && wait "$CDPID" 2>/dev/null
  grep -o " $D[^ ]*" /proc/self/mountinfo | sort -r | while read -r m; do umount -l "$m"; done
  rm -rf "$D"
  rmdir /run/containerd/{runc,skiff}/$NS 2>/dev/null
}
trap cleanup EXIT

mkdir -p "$D/bin"
ln -s "$SHIM" "$D/bin/containerd-shim-skiff-v2"
# crun 1.8 refuses this hybrid-cgroup host; run it where the unified controllers file is masked.
if [ -n "$CRUN" ]; then
  cat > "$D/bin/crun-hybrid" <<EOS
#!/bin/sh
exec unshare -m sh -c 'mount --bind /dev/null /sys/fs/cgroup/unified/cgroup.controllers 2>/dev/null; exec "\$0" "\$@"' $CRUN "\$@"
EOS
  chmod +x "$D/bin/crun-hybrid"
fi
cat > "$D/config.toml" <<EOC
version = 2
root = "$D/root"
state = "$D/state"
disabled_plugins = ["io.containerd.grpc.v1.cri"]
[grpc]
  address = "$D/c.sock"
[ttrpc]
  address = "$D/c.sock.ttrpc"
EOC
PATH=$D/bin:$PATH SKIFF_SHIM_RUNTIME=$SKIFF containerd --config "$D/config.toml" >"$D/containerd.log" 2>&1 &
CDPID=$!
for _ in $(seq 100); do $CTR version >/dev/null 2>&1 && break; sleep 0.1; done

# Image: one busybox layer, made here (python3 for the tar/json plumbing).
python3 - "$D/img.tar" "$IMG" <<'EOP'
import tarfile, io, json, hashlib, subprocess, sys
out, ref = sys.argv[1], sys.argv[2]
buf = io.BytesIO()
with tarfile.open(fileobj=buf, mode='w') as t:
    for n in ['bin', 'etc', 'tmp', 'proc', 'sys', 'dev']:
        ti = tarfile.TarInfo(n); ti.type = tarfile.DIRTYPE; ti.mode = 0o755; t.addfile(ti)
    data = open('/bin/busybox', 'rb').read()
    ti = tarfile.TarInfo('bin/busybox'); ti.size = len(data); ti.mode = 0o755; t.addfile(ti, io.BytesIO(data))
    for a in subprocess.run(['/bin/busybox', '--list'], capture_output=True, text=True).stdout.split():
        if a != 'busybox':
            ti = tarfile.TarInfo('bin/' + a); ti.type = tarfile.SYMTYPE; ti.linkname = 'busybox'; t.addfile(ti)
layer = buf.getvalue()
h = lambda b: hashlib.sha256(b).hexdigest()
cfg = json.dumps({"architecture": "amd64", "os": "linux", "config": {"Env": ["PATH=/bin"]},
                  "rootfs": {"type": "layers", "diff_ids": ["sha256:" + h(layer)]}}).encode()
man = json.dumps({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
                  "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": "sha256:" + h(cfg), "size": len(cfg)},
                  "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": "sha256:" + h(layer), "size": len(layer)}]}).encode()
idx = json.dumps({"schemaVersion": 2, "manifests": [{"mediaType": "application/vnd.oci.image.manifest.v1+json",
                  "digest": "sha256:" + h(man), "size": len(man), "annotations": {"io.containerd.image.name": ref}}]}).encode()
with tarfile.open(out, 'w') as t:
    for name, b in [('oci-layout', b'{"imageLayoutVersion":"1.0.0"}'), ('index.json', idx),
                    ('blobs/sha256/' + h(layer), layer), ('blobs/sha256/' + h(cfg), cfg), ('blobs/sha256/' + h(man), man)]:
        ti = tarfile.TarInfo(name); ti.size = len(b); t.addfile(ti, io.BytesIO(b))
EOP
$CTR images import "$D/img.tar" >/dev/null

NAMES=("skiff-shim+$(basename "$SKIFF")" "runc-shim+runc" "runc-shim+crun")
ARGS=("--runtime io.containerd.skiff.v2"
      "--runtime io.containerd.runc.v2"
      "--runtime io.containerd.runc.v2 --runc-binary $D/bin/crun-hybrid")
run_one() { # index id
  # shellcheck disable=SC2086
  $CTR run --rm ${ARGS[$1]} "$IMG" "$2" true
}
ACTIVE=(0 1)
if [ -n "$CRUN" ]; then
  if run_one 2 warm-crun >/dev/null 2>&1; then ACTIVE+=(2); else echo "runc-shim+crun: crun failed here, skipped" >&2; fi
fi
for i in "${ACTIVE[@]}"; do run_one "$i" "warm$i" >/dev/null; done
declare -A T
for n in $(seq "$N"); do
  for k in $(seq 0 $((${#ACTIVE[@]} - 1))); do
    i=${ACTIVE[$(( (k + n) % ${#ACTIVE[@]} ))]}
    s=$(date +%s%N)
    run_one "$i" "b$n-$i" >/dev/null
    e=$(date +%s%N)
    T[$i]="${T[$i]:-} $(( (e - s) / 1000 ))"
  done
done
median() { tr ' ' '\n' | grep . | sort -n | awk '{a[NR]=$1} END {if (NR%2) print a[(NR+1)/2]; else print int((a[NR/2]+a[NR/2+1])/2)}'; }
echo "ctr run --rm IMAGE id true, $N interleaved runs each (median ms):"
declare -A M
for i in "${ACTIVE[@]}"; do
  M[$i]=$(echo "${T[$i]}" | median)
  printf "  %-18s %8.1f ms\n" "${NAMES[$i]}" "$(echo "${M[$i]} / 1000" | bc -l)"
done
best=; for i in 1 2; do [ -n "${M[$i]:-}" ] && { [ -z "$best" ] || [ "${M[$i]}" -lt "${M[$best]}" ]; } && best=$i; done
for i in "${ACTIVE[@]}"; do
  printf "  %-18s ratio to %s: %.2f\n" "${NAMES[$i]}" "${NAMES[$best]}" "$(echo "${M[$i]} / ${M[$best]}" | bc -l)"
done

# Shim memory: one long-running container per shim, RSS (and peak) of the shim process.
rss() { awk '/^VmRSS/ {r=$2} /^VmHWM/ {h=$2} END {printf "%.1f MB (peak %.1f MB)", r/1024, h/1024}' "/proc/$1/status"; }
$CTR run -d --runtime io.containerd.skiff.v2 "$IMG" rss-skiff sleep 1000 >/dev/null
$CTR run -d --runtime io.containerd.runc.v2 "$IMG" rss-runc sleep 1000 >/dev/null
sleep 0.5
for id in rss-skiff rss-runc; do
  pid=$(pgrep -f "containerd-shim-.*-id $id .*$D/c.sock" | head -1)
  printf "  shim RSS %-10s %s\n" "$id" "$(rss "$pid")"
done
