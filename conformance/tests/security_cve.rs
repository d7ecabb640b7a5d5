//! Regression tests for the known container escapes. Each test states the attack, runs it against
//! the runtime under test and asserts the host is untouched.
//!
//! They run against skiff. `SKIFF_CVE_RUNTIME=runc` (or crun) runs them against another runtime:
//! Debian's runc 1.1.5+deb12u1 has the CVE-2024-21626 fix backported but predates the 2025 fixes. Every attack is aimed at a
//! harmless target (a copy of the runtime binary, a file inside the test's bundle, a sysctl in the
//! container's own namespace), so a vulnerable runtime damages nothing on the host.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use conformance::bundle::Bundle;
use conformance::require_root;
use conformance::runtime::{Kind, Runtime};
use serde_json::json;

/// The runtime the attacks run against: `$SKIFF_CVE_RUNTIME` (skiff, runc, crun) or skiff.
fn target_kind() -> Kind {
    std::env::var("SKIFF_CVE_RUNTIME")
        .ok()
        .and_then(|s| Kind::parse(&s))
        .unwrap_or(Kind::Skiff)
}

fn target() -> Runtime {
    Runtime::new(target_kind()).expect("runtime under test is available")
}

/// Run `script` in a container from `b`; (exit code, stdout + stderr).
fn run(rt: &Runtime, b: &mut Bundle, script: &str) -> (i32, String) {
    b.shell(script);
    let c = rt.container(b);
    let out = c.run();
    (out.code, format!("{}{}", out.stdout, out.stderr))
}

/// A host temp dir removed on drop.
fn host_dir(prefix: &str) -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix(prefix)
        .tempdir()
        .expect("host temp dir")
}

fn sha256(path: &Path) -> String {
    use sha2::Digest;
    let data = std::fs::read(path).unwrap_or_default();
    hex::encode(sha2::Sha256::digest(&data))
}

/// Host mountinfo lines whose mount point is at or under `dir`.
fn host_mounts_under(dir: &Path) -> Vec<String> {
    let d = dir.to_string_lossy().to_string();
    std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap_or_default()
        .lines()
        .filter(|l| {
            l.split(' ')
                .nth(4)
                .is_some_and(|mp| mp == d || mp.starts_with(&format!("{d}/")))
        })
        .map(str::to_string)
        .collect()
}

/// Poll until `f` is true (bounded).
fn wait_for(mut f: impl FnMut() -> bool, limit: Duration) -> bool {
    let end = Instant::now() + limit;
    while Instant::now() < end {
        if f() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    f()
}

// ---------------------------------------------------------------------------------------------
// CVE-2019-5736: overwriting the runtime binary through /proc/<pid>/exe.
// ---------------------------------------------------------------------------------------------

/// Attack: while a runtime process that executes the runtime binary is visible to the container
/// (here container A's init, blocked in `create`), a process in a container opens
/// `/proc/<that pid>/exe` read-only. Once the runtime process is gone (so no ETXTBSY), it re-opens
/// the magic link `/proc/self/fd/N` for writing and appends a payload: with a vulnerable runtime
/// this writes into the host's runtime binary. The attacker here is as strong as possible: root
/// with every capability including CAP_SYS_PTRACE and in the host pid namespace (it must see A).
/// The attack targets a private copy of the runtime binary so nothing real is at risk.
/// Expected: the copy's sha256 is unchanged (skiff runs the container side from a sealed memfd
/// copy or otherwise keeps the host file unreachable for writing).
#[test]
fn cve_2019_5736_runtime_binary_cannot_be_overwritten() {
    require_root!();
    let kind = target_kind();
    let scratch = host_dir("skiff-cve-5736-");
    let copy = scratch.path().join(kind.name());
    std::fs::copy(kind.binary().expect("runtime binary"), &copy).expect("copy runtime binary");
    let before = sha256(&copy);
    let rt = Runtime::with_binary(kind, copy.clone()).expect("runtime from copy");

    // Container A: created (init blocked inside the runtime's code), sharing the host pid ns.
    let mut a = Bundle::busybox().expect("bundle");
    a.remove_namespace("pid");
    a.args(&["true"]);
    let ca = rt.container(&a);
    ca.create().ok();
    let pid = ca.pid();
    assert!(pid > 0, "container A has no init pid");

    // Container B: the attacker.
    let mut b = Bundle::busybox().expect("bundle");
    b.remove_namespace("pid");
    b.readonly_root(false);
    let all: Vec<String> = [
        "CAP_SYS_PTRACE",
        "CAP_SYS_ADMIN",
        "CAP_DAC_OVERRIDE",
        "CAP_DAC_READ_SEARCH",
        "CAP_FOWNER",
        "CAP_KILL",
        "CAP_SETUID",
        "CAP_SETGID",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    b.set(
        "/process/capabilities",
        json!({ "bounding": all, "effective": all, "permitted": all }),
    )
    .expect("caps");
    b.shell(&format!(
        "if ( exec 3</proc/{pid}/exe ) 2>/dev/null; then exec 3</proc/{pid}/exe; echo OPENED >/result; \
         else echo OPEN-FAILED >/result; exit 0; fi; \
         i=0; while [ ! -e /go ] && [ $i -lt 400 ]; do sleep 0.1; i=$((i+1)); done; \
         if echo PWNED-BY-CVE-2019-5736 >>/proc/self/fd/3; then echo WROTE >>/result; \
         else echo WRITE-FAILED >>/result; fi"
    ));
    // The attacker container is run by the original binary: nothing may execute the copy once A
    // is gone, or a vulnerable runtime would be saved by ETXTBSY.
    let rt_b = Runtime::new(kind).expect("runtime");
    let cb = rt_b.container(&b);
    let running = cb.run_invocation(&[]).spawn().expect("start attacker");
    let result = b.rootfs().join("result");
    let got_result = wait_for(|| result.exists(), Duration::from_secs(30));

    // A's runtime process goes away, then the attacker tries to write.
    ca.delete_force();
    std::fs::write(b.rootfs().join("go"), b"").expect("signal attacker");
    let out = running.wait();
    let report = std::fs::read_to_string(&result).unwrap_or_default();
    eprintln!("attacker report: {report:?} (b exit {})", out.code);
    assert!(got_result, "attacker never reported: {out}");
    assert_eq!(
        sha256(&copy),
        before,
        "the runtime binary was modified from inside a container: {report}"
    );
}

// ---------------------------------------------------------------------------------------------
// CVE-2024-21626: leaked host fd / process.cwd through /proc/self/fd.
// ---------------------------------------------------------------------------------------------

/// Attack: `process.cwd` is `/proc/self/fd/N`. If the runtime leaks a host directory fd into the
/// container's init (runc leaked one for /sys/fs/cgroup) and chdirs after pivot_root through
/// /proc/self/fd, the process starts with a cwd outside its root and reaches the host through
/// `../../..`. A host marker file is placed in a host dir; the container looks for it through the
/// relative path that only resolves if its cwd is on the host.
/// Expected: for every N, the container either fails to start or cannot see the marker.
#[test]
fn cve_2024_21626_cwd_through_leaked_fd() {
    require_root!();
    let rt = target();
    let marker_dir = host_dir("skiff-cve-21626-");
    let marker = marker_dir.path().join("host-marker");
    std::fs::write(&marker, b"host").expect("marker");
    let rel = format!("../../../../../../../../..{}", marker.to_string_lossy());
    for n in 3..=12 {
        let mut b = Bundle::busybox().expect("bundle");
        b.cwd(&format!("/proc/self/fd/{n}"));
        let (code, out) = run(
            &rt,
            &mut b,
            &format!("test -e {rel} && echo ESCAPED-VIA-FD; readlink /proc/self/cwd; exit 0"),
        );
        assert!(
            !out.contains("ESCAPED-VIA-FD"),
            "cwd /proc/self/fd/{n} reached the host (exit {code}): {out}"
        );
    }
}

/// Same attack through `exec --cwd`.
#[test]
fn cve_2024_21626_exec_cwd_through_leaked_fd() {
    require_root!();
    let rt = target();
    let marker_dir = host_dir("skiff-cve-21626e-");
    let marker = marker_dir.path().join("host-marker");
    std::fs::write(&marker, b"host").expect("marker");
    let rel = format!("../../../../../../../../..{}", marker.to_string_lossy());
    let mut b = Bundle::busybox().expect("bundle");
    b.args(&["sleep", "300"]);
    let c = rt.container(&b);
    c.run_with(&["--detach"]).ok();
    for n in 3..=12 {
        let out = c.exec_with(
            &["--cwd", &format!("/proc/self/fd/{n}")],
            &[
                "sh",
                "-c",
                &format!("test -e {rel} && echo ESCAPED-VIA-FD; exit 0"),
            ],
        );
        let text = format!("{}{}", out.stdout, out.stderr);
        assert!(
            !text.contains("ESCAPED-VIA-FD"),
            "exec --cwd /proc/self/fd/{n} reached the host: {text}"
        );
    }
}

/// Attack surface check: the container process must start with only stdio open (no runtime fd,
/// e.g. a state dir, cgroup dir or socket, leaks in) both for `run` and for `exec`.
#[test]
fn no_host_fds_leak_into_the_container() {
    require_root!();
    let rt = target();
    // `ls` runs as a child (not the last command, so busybox does not exec it in place), so it
    // lists the shell's own fds.
    let probe = "ls /proc/$$/fd; exit 0";
    let mut b = Bundle::busybox().expect("bundle");
    let (code, out) = run(&rt, &mut b, probe);
    assert_eq!(code, 0, "{out}");
    let fds: Vec<&str> = out
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect();
    assert_eq!(
        fds,
        ["0", "1", "2"],
        "unexpected fds in the container: {out}"
    );

    let mut b = Bundle::busybox().expect("bundle");
    b.args(&["sleep", "300"]);
    let c = rt.container(&b);
    c.run_with(&["--detach"]).ok();
    let out = c.exec(&["sh", "-c", probe]);
    let fds: Vec<&str> = out
        .stdout
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect();
    assert_eq!(
        fds,
        ["0", "1", "2"],
        "unexpected fds in the exec'd process: {out}"
    );
}

// ---------------------------------------------------------------------------------------------
// CVE-2021-30465 family: mount destinations that are (or become) symlinks.
// ---------------------------------------------------------------------------------------------

/// A host directory with a canary file, bind-mounted into the container at /hostview: if an
/// earlier mount was redirected onto the host directory, /hostview shows that mount instead of the
/// canary.
struct HostView {
    dir: tempfile::TempDir,
}

impl HostView {
    fn new() -> HostView {
        let dir = host_dir("skiff-cve-30465-");
        std::fs::write(dir.path().join("canary"), b"host-canary").expect("canary");
        HostView { dir }
    }
    fn path(&self) -> &Path {
        self.dir.path()
    }
    fn check(&self, out: &str, what: &str) {
        assert!(
            host_mounts_under(self.path()).is_empty(),
            "{what}: a mount appeared on the host dir: {:?}",
            host_mounts_under(self.path())
        );
        assert_eq!(
            std::fs::read(self.path().join("canary")).unwrap_or_default(),
            b"host-canary",
            "{what}: host canary changed"
        );
        assert!(
            !out.contains("CANARY-HIDDEN"),
            "{what}: the mount was redirected onto the host dir: {out}"
        );
    }
}

const VIEW_PROBE: &str =
    "if [ \"$(cat /hostview/canary 2>/dev/null)\" = host-canary ]; then echo CANARY-VISIBLE; \
     else echo CANARY-HIDDEN; fi";

/// Attack: the rootfs contains a symlink whose target is a host path (absolute, or relative with
/// enough `..` to climb out of the rootfs, or a symlinked parent directory), and the config mounts
/// a tmpfs there. A runtime following the symlink with the host's view mounts the tmpfs outside
/// the rootfs (onto the host dir, in the container's mount namespace before pivot_root).
/// Expected: every mount lands inside the rootfs (or the run is refused); the host dir, bound in
/// afterwards at /hostview, still shows its canary and no mount appears on it on the host.
#[test]
fn cve_2021_30465_symlinked_mount_destinations_stay_inside() {
    require_root!();
    let rt = target();
    let view = HostView::new();
    let host = view.path().to_string_lossy().to_string();
    let cases: Vec<(&str, String, &str)> = vec![
        ("absolute symlink", host.clone(), "/evil"),
        (
            "relative symlink climbing out",
            format!("../../../../../../../../../..{host}"),
            "/evil",
        ),
        ("symlinked parent dir", host.clone(), "/evil/sub"),
    ];
    for (what, link_target, dest) in cases {
        let mut b = Bundle::busybox().expect("bundle");
        std::os::unix::fs::symlink(&link_target, b.rootfs().join("evil")).expect("symlink");
        b.set("/mounts", {
            let mut m = b.config()["mounts"].as_array().cloned().unwrap_or_default();
            m.push(
                json!({ "destination": dest, "type": "tmpfs", "source": "tmpfs",
                           "options": ["nosuid", "nodev"] }),
            );
            m.push(json!({ "destination": "/hostview", "type": "bind",
                           "source": view.path(), "options": ["rbind", "ro"] }));
            json!(m)
        })
        .expect("mounts");
        let (code, out) = run(&rt, &mut b, VIEW_PROBE);
        eprintln!("{what}: exit {code}: {}", out.trim());
        view.check(&out, what);
    }
}

/// Attack (the race itself): while the runtime sets up mounts, the attacker swaps the mount
/// destination between a directory and a symlink to a host path (in the real CVE a second
/// container sharing a volume did the swap). Bounded: 15 runs against a swapping thread.
/// Expected: in no run does a mount land on the host dir.
#[test]
fn cve_2021_30465_destination_swapped_to_symlink_mid_setup() {
    require_root!();
    let rt = target();
    let view = HostView::new();
    let host = view.path().to_path_buf();
    for round in 0..15 {
        let mut b = Bundle::busybox().expect("bundle");
        let race = b.rootfs().join("race");
        std::fs::create_dir(&race).expect("race dir");
        b.set("/mounts", {
            let mut m = b.config()["mounts"].as_array().cloned().unwrap_or_default();
            m.push(json!({ "destination": "/race", "type": "tmpfs", "source": "tmpfs" }));
            m.push(json!({ "destination": "/hostview", "type": "bind",
                           "source": view.path(), "options": ["rbind", "ro"] }));
            json!(m)
        })
        .expect("mounts");
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let swapper = {
            let stop = stop.clone();
            let race = race.clone();
            let host = host.clone();
            let tmp = race.with_file_name("race.tmp");
            std::thread::spawn(move || {
                let mut i = 0u32;
                while !stop.load(std::sync::atomic::Ordering::Relaxed) && i < 200_000 {
                    // dir -> symlink -> dir, via rename so the name always exists
                    let _ = std::os::unix::fs::symlink(&host, &tmp);
                    let _ = std::fs::rename(&tmp, &race);
                    let _ = std::fs::remove_file(&tmp);
                    let _ = std::fs::create_dir(&tmp);
                    let _ = std::fs::rename(&tmp, &race);
                    i += 1;
                }
            })
        };
        let (code, out) = run(&rt, &mut b, VIEW_PROBE);
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        let _ = swapper.join();
        let _ = std::fs::remove_file(race.with_file_name("race.tmp"));
        let _ = std::fs::remove_dir(race.with_file_name("race.tmp"));
        eprintln!("round {round}: exit {code}");
        view.check(&out, &format!("race round {round}"));
    }
}

// ---------------------------------------------------------------------------------------------
// CVE-2025-31133: maskedPaths masked with a /dev/null that is not /dev/null.
// ---------------------------------------------------------------------------------------------

/// Attack: masked files are hidden by bind-mounting /dev/null over them. If the container's
/// /dev/null is replaced by a symlink (here: the config has no /dev tmpfs, so the rootfs' own /dev
/// is used, and its `null` points at another file), a runtime that binds whatever /dev/null
/// resolves to exposes that file, writable, at the masked path (in the real attack: a procfs file
/// such as core_pattern). The target here is a file inside the rootfs.
/// Expected: /proc/timer_list (masked by default, present on this kernel unlike /proc/kcore) reads
/// as empty and writes do not reach the decoy, or the run is refused.
#[test]
fn cve_2025_31133_masked_paths_use_the_real_dev_null() {
    require_root!();
    let rt = target();
    let mut b = Bundle::busybox().expect("bundle");
    b.readonly_root(false);
    let mounts: Vec<serde_json::Value> = b.config()["mounts"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .into_iter()
        .filter(|m| !m["destination"].as_str().unwrap_or("").starts_with("/dev"))
        .collect();
    b.set("/mounts", json!(mounts)).expect("mounts");
    let decoy = b
        .write_rootfs_file("decoy", b"DECOY-CONTENT\n", 0o666)
        .expect("decoy");
    let null = b.rootfs().join("dev/null");
    let _ = std::fs::remove_file(&null);
    std::fs::create_dir_all(b.rootfs().join("dev")).expect("dev");
    std::os::unix::fs::symlink("/decoy", &null).expect("symlink /dev/null");
    let (code, out) = run(
        &rt,
        &mut b,
        // (no redirections to /dev/null here: it is the symlink under test)
        "head -c 64 /proc/timer_list 2>&- | grep -q DECOY && echo MASK-SHOWS-DECOY; \
         echo PWNED 2>&- >/proc/timer_list; stat -c '%F %t:%T' /proc/timer_list; exit 0",
    );
    eprintln!("exit {code}: {}", out.trim());
    assert!(
        !out.contains("MASK-SHOWS-DECOY"),
        "masked path shows the decoy: {out}"
    );
    assert_eq!(
        std::fs::read(&decoy).unwrap_or_default(),
        b"DECOY-CONTENT\n",
        "a write to a masked path reached the decoy file"
    );
}

// ---------------------------------------------------------------------------------------------
// CVE-2025-52565: /dev/console bind-mount redirected.
// ---------------------------------------------------------------------------------------------

/// Attack: with `terminal: true` the runtime bind-mounts the pty onto /dev/console. If
/// /dev/console is a symlink in the rootfs (no /dev tmpfs in the config), a runtime following it
/// mounts the pty over the symlink's target instead (in the real attack: a procfs file, making it
/// writable). The target here is a file inside the rootfs.
/// Expected: the run is refused, or the decoy is still a regular file inside the container; it is
/// untouched on the host either way.
#[test]
fn cve_2025_52565_dev_console_symlink_is_not_followed() {
    require_root!();
    let rt = target();
    let mut b = Bundle::busybox().expect("bundle");
    b.readonly_root(false);
    let mounts: Vec<serde_json::Value> = b.config()["mounts"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .into_iter()
        .filter(|m| m["destination"] != "/dev")
        .collect();
    b.set("/mounts", json!(mounts)).expect("mounts");
    let decoy = b
        .write_rootfs_file("decoy", b"DECOY-CONTENT\n", 0o644)
        .expect("decoy");
    std::fs::create_dir_all(b.rootfs().join("dev/pts")).expect("dev");
    let console = b.rootfs().join("dev/console");
    let _ = std::fs::remove_file(&console);
    std::os::unix::fs::symlink("/decoy", &console).expect("symlink /dev/console");
    b.terminal(true);
    b.shell("stat -c %F /decoy >/decoy-type 2>&1; exit 0");
    let sock = conformance::console::ConsoleSocket::new().expect("console socket");
    let c = rt.container(&b);
    let sockpath = sock.path().to_string_lossy().to_string();
    // runc only takes a console socket with --detach; keep the pty master open until it exits.
    let running = c
        .run_invocation(&["--detach", "--console-socket", &sockpath])
        .spawn()
        .expect("run");
    let pty = sock.receive(Duration::from_secs(30));
    let out = running.wait();
    let typefile = b.rootfs().join("decoy-type");
    wait_for(|| typefile.exists(), Duration::from_secs(20));
    drop(pty);
    let kind = std::fs::read_to_string(&typefile).unwrap_or_default();
    eprintln!("exit {}: decoy seen as {kind:?}\n{out}", out.code);
    assert!(
        !kind.contains("character"),
        "the pty was mounted over the symlink target: {kind}"
    );
    assert_eq!(
        std::fs::read(&decoy).unwrap_or_default(),
        b"DECOY-CONTENT\n",
        "decoy changed"
    );
}

// ---------------------------------------------------------------------------------------------
// CVE-2025-52881: procfs writes redirected to other files.
// ---------------------------------------------------------------------------------------------

/// Attack: the runtime writes sysctls (and LSM labels) through the container's /proc. A config
/// mount placed over a /proc/sys file (here a bind of a rootfs decoy over
/// /proc/sys/kernel/domainname, listed after /proc) redirects that write into the decoy (in the
/// real attack: a shared mount swapped /proc files for other procfs files such as
/// /proc/sysrq-trigger). The sysctl is UTS-namespaced, so a correct write only changes the
/// container's own domain name.
/// Expected: the decoy is never written; the run either fails or sets the real sysctl.
#[test]
fn cve_2025_52881_sysctl_write_goes_to_real_procfs() {
    require_root!();
    let rt = target();
    let mut b = Bundle::busybox().expect("bundle");
    let decoy = b
        .write_rootfs_file("decoy", b"DECOY-CONTENT\n", 0o666)
        .expect("decoy");
    b.set(
        "/linux/sysctl",
        json!({ "kernel.domainname": "skiff-cve-test" }),
    )
    .expect("sysctl");
    b.add_mount(
        json!({ "destination": "/proc/sys/kernel/domainname", "type": "bind",
                        "source": decoy, "options": ["bind"] }),
    );
    let (code, out) = run(&rt, &mut b, "cat /proc/sys/kernel/domainname; exit 0");
    eprintln!("exit {code}: {}", out.trim());
    assert_eq!(
        std::fs::read(&decoy).unwrap_or_default(),
        b"DECOY-CONTENT\n",
        "the sysctl write was redirected into the decoy file"
    );
}

// ---------------------------------------------------------------------------------------------
// Host devices and writable /proc/sys where the config does not ask for them.
// ---------------------------------------------------------------------------------------------

/// Attack: a default container tries to reach host hardware and kernel settings: look for block
/// devices in /dev, mknod a disk node and read it, write /proc/sys, /proc/sysrq-trigger and /sys,
/// and read masked /proc files.
/// Expected: no block device nodes, mknod refused or the node unusable, /proc/sys, /sys and
/// /proc/sysrq-trigger mounted read-only, masked paths empty.
#[test]
fn default_container_cannot_reach_host_devices_or_kernel_settings() {
    require_root!();
    let rt = target();
    let mut b = Bundle::busybox().expect("bundle");
    b.readonly_root(false);
    let script = "find /dev -type b | sed 's/^/BLOCKDEV /'; \
        if mknod /tmp/sda b 8 0 2>/dev/null && head -c 1 /tmp/sda >/dev/null 2>&1; then echo DISK-READABLE; fi; \
        v=$(cat /proc/sys/vm/swappiness); if echo $v >/proc/sys/vm/swappiness 2>/dev/null; then echo PROCSYS-WRITABLE; fi; \
        grep -E ' /proc/sys | /proc/sysrq-trigger | /sys ' /proc/self/mountinfo | grep -v ' ro[, ]' | sed 's/^/RW-MOUNT /'; \
        [ -n \"$(head -c 1 /proc/timer_list 2>&-)\" ] && echo TIMERLIST-READABLE; \
        ls /sys/firmware | sed 's/^/FIRMWARE /'; exit 0";
    let (code, out) = run(&rt, &mut b, script);
    assert_eq!(code, 0, "{out}");
    for bad in [
        "BLOCKDEV",
        "DISK-READABLE",
        "PROCSYS-WRITABLE",
        "RW-MOUNT",
        "TIMERLIST-READABLE",
        "FIRMWARE",
    ] {
        assert!(!out.contains(bad), "{bad}: {out}");
    }
}

/// Attack: CAP_MKNOD granted, the container makes a node for the host's first disk and reads it.
/// Expected: the devices cgroup (only the default devices allowed) refuses the open.
#[test]
fn mknod_with_cap_mknod_cannot_open_host_disk() {
    require_root!();
    let rt = target();
    let mut b = Bundle::busybox().expect("bundle");
    b.readonly_root(false);
    let caps = json!(["CAP_MKNOD", "CAP_KILL", "CAP_DAC_OVERRIDE"]);
    b.set(
        "/process/capabilities",
        json!({ "bounding": caps, "effective": caps, "permitted": caps }),
    )
    .expect("caps");
    let (code, out) = run(
        &rt,
        &mut b,
        "mknod /tmp/sda b 8 0 && mknod /tmp/mem c 1 1 && \
         { head -c 1 /tmp/sda >/dev/null 2>&1 && echo DISK-READABLE; \
           head -c 1 /tmp/mem >/dev/null 2>&1 && echo MEM-READABLE; }; exit 0",
    );
    assert_eq!(code, 0, "{out}");
    assert!(!out.contains("DISK-READABLE"), "{out}");
    assert!(!out.contains("MEM-READABLE"), "{out}");
}

/// Attack: a mount destination with `..` components that climb above the rootfs.
/// Expected: the mount lands inside the rootfs or the run is refused; nothing is mounted on the
/// host target.
#[test]
fn dotdot_mount_destination_stays_inside() {
    require_root!();
    let rt = target();
    let view = HostView::new();
    let host: PathBuf = view.path().to_path_buf();
    let mut b = Bundle::busybox().expect("bundle");
    b.set("/mounts", {
        let mut m = b.config()["mounts"].as_array().cloned().unwrap_or_default();
        m.push(
            json!({ "destination": format!("/../../../../../..{}", host.display()),
                       "type": "tmpfs", "source": "tmpfs" }),
        );
        m.push(json!({ "destination": "/hostview", "type": "bind",
                       "source": view.path(), "options": ["rbind", "ro"] }));
        json!(m)
    })
    .expect("mounts");
    let (code, out) = run(&rt, &mut b, VIEW_PROBE);
    eprintln!("exit {code}: {}", out.trim());
    view.check(&out, "dotdot destination");
}
