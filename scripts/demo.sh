#!/usr/bin/env bash
# The main job: build the seeds' hello-world web app (examples/hello) from its Dockerfile with
# skiff-build, unpack it into a bundle with skiff-image and run it with skiff, then fetch its page
# from inside the container's network namespace. Everything it creates is removed at the end.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "$(id -u)" != 0 ]; then
  echo "demo.sh: containers need root; run it with sudo" >&2
  exit 1
fi
scripts/install-deps.sh
cargo build --release -p skiff -p skiff-image -p skiff-build
export PATH="$PWD/target/release:$PATH"
export SKIFF_STORE="${SKIFF_STORE:-/var/lib/skiff}"

work=$(mktemp -d /tmp/skiff-demo.XXXXXX)
id="skiff-demo-$$"
cleanup() {
  skiff delete --force "$id" >/dev/null 2>&1 || true
  skiff-image rm-bundle "$work/bundle" >/dev/null 2>&1 || true
  rm -rf "$work"
}
trap cleanup EXIT

echo "== making the busybox base image (from Debian's busybox-static)"
SKIFF_IMAGE=skiff-image examples/make-busybox-base.sh busybox:latest
echo "== skiff-build -t hello examples/hello"
skiff-build -t hello:latest examples/hello
echo "== skiff-image unpack hello $work/bundle"
skiff-image unpack hello:latest "$work/bundle"
echo "== skiff run -d $id (busybox httpd on port 80 in its own network namespace)"
skiff run --detach --bundle "$work/bundle" "$id" </dev/null >/dev/null
skiff state "$id"
page=""
for _ in $(seq 1 50); do
  if page=$(skiff exec "$id" wget -qO- http://127.0.0.1:80/ 2>/dev/null); then break; fi
  sleep 0.1
done
echo "== page served by the container:"
echo "$page"
echo "$page" | grep -q "Hello, world" || { echo "demo.sh: unexpected page" >&2; exit 1; }
echo "== done: stopping and deleting $id"
