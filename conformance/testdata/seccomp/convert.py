#!/usr/bin/env python3
"""Convert moby's seccomp profile (profiles/seccomp/default.json) to an OCI `linux.seccomp` object.

Written for skiff's test data. It follows the documented semantics of moby's profile format, the
same resolution containerd/dockerd perform when they build a container's config:
  * `archMap`: the entry for the target architecture gives `architectures` (arch + subArches);
  * each `syscalls[]` entry is kept only if its `includes` all hold and its `excludes` do not:
    `arches` (Go arch names), `caps` (all listed capabilities granted), `minKernel`;
  * `includes`/`excludes`/`comment` are dropped; everything else passes through unchanged.
Usage: convert.py MOBY_DEFAULT_JSON > docker-default.json
"""
import json
import sys

GOARCH = "amd64"
ARCH_NAME = {"amd64": "SCMP_ARCH_X86_64"}
# Docker's default capability set (moby oci/caps/defaults.go): the container's bounding set.
DEFAULT_CAPS = {
    "CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_FSETID", "CAP_FOWNER", "CAP_MKNOD", "CAP_NET_RAW",
    "CAP_SETGID", "CAP_SETUID", "CAP_SETFCAP", "CAP_SETPCAP", "CAP_NET_BIND_SERVICE",
    "CAP_SYS_CHROOT", "CAP_KILL", "CAP_AUDIT_WRITE",
}
KERNEL = (6, 1)  # anything >= every minKernel in the profile


def kernel_ok(v):
    return tuple(int(x) for x in v.split(".")[:2]) <= KERNEL


def holds(filt):
    """True if every condition in an includes/excludes block holds for this target."""
    if not filt:
        return None
    ok = True
    if "arches" in filt:
        ok &= GOARCH in filt["arches"]
    if "caps" in filt:
        ok &= all(c in DEFAULT_CAPS for c in filt["caps"])
    if "minKernel" in filt:
        ok &= kernel_ok(filt["minKernel"])
    return ok


def excluded(filt):
    """moby excludes: an entry is dropped if ANY listed arch/cap matches."""
    if not filt:
        return False
    if GOARCH in filt.get("arches", []):
        return True
    if any(c in DEFAULT_CAPS for c in filt.get("caps", [])):
        return True
    return False


def main():
    src = json.load(open(sys.argv[1]))
    arches = []
    for m in src.get("archMap", []):
        if m["architecture"] == ARCH_NAME[GOARCH]:
            arches = [m["architecture"]] + m.get("subArchitectures", [])
    out = {"defaultAction": src["defaultAction"]}
    if "defaultErrnoRet" in src:
        out["defaultErrnoRet"] = src["defaultErrnoRet"]
    out["architectures"] = arches
    calls = []
    for s in src["syscalls"]:
        if holds(s.get("includes")) is False or excluded(s.get("excludes")):
            continue
        e = {"names": s["names"], "action": s["action"]}
        for k in ("errnoRet", "args"):
            if s.get(k) is not None:
                e[k] = s[k]
        calls.append(e)
    out["syscalls"] = calls
    json.dump(out, sys.stdout, indent=1)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
