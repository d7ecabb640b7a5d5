#!/usr/bin/env bash
# The main job: steps 1-3 of the seed walkthrough (docs/tour.md) with skiff's tools.
#   1. `docker import`: a busybox-static root directory, tarred up, becomes busybox:latest.
#   2. `docker build -t helloworld .`: skiff-build builds examples/helloworld from its Dockerfile.
#   3. `docker run -p 4000:80 helloworld`: skiff-image unpack -p PORT:80 writes a bundle whose
#      config.json carries the CNI networking hooks; skiff run -d starts it; curl fetches the page.
# Then the container and its bundle are removed (the poststop hook removes its veth, IP and port
# mapping). The images busybox:latest and helloworld:latest are LEFT in the store so you can go on
# with docs/tour.md; `skiff-image rm helloworld busybox && skiff-image gc` removes them.
#
# Environment: SKIFF_STORE (default /var/lib/skiff), DEMO_PORT (default 4000; the next free port
# is used when it is taken), CARGO_TARGET_DIR (where the tools are built, default target/).
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "$(id -u)" != 0 ]; then
  echo "demo.sh: containers need root; run it with sudo" >&2
  exit 1
fi

step_name="setting up"
say() { printf '\n== %s\n' "$*"; }
step() { step_name=$1; say "$1"; }
run() { printf '$ %s\n' "$*"; "$@"; }
fail() { echo "demo.sh: $*" >&2; exit 1; }

step "installing the Debian packages skiff needs (scripts/install-deps.sh)"
SKIFF_SKIP_OPTIONAL=1 scripts/install-deps.sh

step "building skiff, skiff-image and skiff-build (cargo build)"
run cargo build -q -p skiff -p skiff-image -p skiff-build
bin="${CARGO_TARGET_DIR:-$PWD/target}/debug"
export PATH="$bin:$PATH"
export SKIFF_STORE="${SKIFF_STORE:-/var/lib/skiff}"
echo "tools from $bin, image store $SKIFF_STORE"

work=$(mktemp -d /tmp/skiff-demo.XXXXXX)
id="helloworld-$$"
bundle="$work/bundle"
started=0
cleanup() {
  local rc=$?
  trap - EXIT INT TERM
  if [ $rc -ne 0 ]; then
    echo "demo.sh: FAILED during: $step_name (exit $rc); cleaning up" >&2
  fi
  say "cleaning up: deleting container $id and its bundle"
  if [ $started = 1 ] || skiff state "$id" >/dev/null 2>&1; then
    printf '$ skiff delete --force %s\n' "$id"
    skiff delete --force "$id" || echo "demo.sh: skiff delete failed" >&2
  fi
  if [ -e "$bundle" ]; then
    printf '$ skiff-image rm-bundle --volumes %s\n' "$bundle"
    skiff-image rm-bundle --volumes "$bundle" 2>/dev/null ||
      skiff-image rm-bundle "$bundle" || echo "demo.sh: rm-bundle failed" >&2
  fi
  rm -rf "$work"
  if [ $rc -eq 0 ]; then
    echo "left in the store: busybox:latest and helloworld:latest (remove with:" \
      "skiff-image rm helloworld busybox && skiff-image gc)"
  fi
  exit $rc
}
trap cleanup EXIT
trap 'exit 130' INT TERM

step "step 1 (docker import): busybox-static root dir -> tarball -> busybox:latest"
run examples/make-busybox-rootfs.sh "$work/rootfs"
run tar --numeric-owner --sort=name --exclude=./proc --exclude=./sys -C "$work/rootfs" -cf "$work/base.tar" .
run skiff-image import "$work/base.tar" busybox:latest
run skiff-image images

step "step 2 (docker build -t helloworld .): skiff-build -t helloworld examples/helloworld"
run skiff-build -t helloworld examples/helloworld
run skiff-image history helloworld

step "step 3 (docker run -p 4000:80 helloworld): unpack with a published port, run, curl"
port_taken() {
  ss -Htln "sport = :$1" 2>/dev/null | grep -q . && return 0
  iptables-save -t nat 2>/dev/null | grep -q -- "--dport $1 " && return 0
  return 1
}
want=${DEMO_PORT:-4000}
port=$want
while port_taken "$port"; do
  port=$((port + 1))
  [ $port -lt $((want + 100)) ] || fail "no free port in $want..$((want + 99))"
done
if [ "$port" != "$want" ]; then
  echo "port $want is in use on this host; using port $port instead"
fi
run skiff-image unpack helloworld "$bundle" -p "$port:80"
echo "hooks in $bundle/config.json:"
jq -r '.hooks // {} | to_entries[] | "  \(.key): \(.value[] | [.path] + (.args // [])[1:] | join(" "))"' \
  "$bundle/config.json" || true
printf '$ skiff run -d --bundle %s %s\n' "$bundle" "$id"
started=1
skiff run -d --bundle "$bundle" "$id" </dev/null >"$work/ctr.log" 2>&1 ||
  { cat "$work/ctr.log" >&2; fail "skiff run failed"; }
run skiff list
page=""
for i in $(seq 1 50); do
  page=$(curl -s --max-time 2 "http://localhost:$port") && [ -n "$page" ] && break
  [ "$i" = 50 ] && { cat "$work/ctr.log" >&2; fail "no answer from http://localhost:$port after 50 tries"; }
  sleep 0.2
done
say "\$ curl -s http://localhost:$port"
echo "$page"
echo "$page" | grep -q "<h3>Hello World!</h3><b>Hostname:</b>" ||
  fail "unexpected page from http://localhost:$port"
step "done: the page above was served by busybox httpd in container $id, through port $port"
