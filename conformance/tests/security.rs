//! Security features observed from inside real containers: seccomp (the Docker default profile and
//! custom profiles), the five capability sets, user/groups, rlimits, umask, no_new_privileges, and
//! LSM requests on a host without LSMs. Most run under every selected runtime (runc is the
//! reference), so the expectations are checked against runc as well as skiff.
//!
//! The known-escape regression tests are in `security_cve.rs`.

use conformance::{bundle::Bundle, require_root, runtime, runtime::Runtime, skip};
use serde_json::{json, Value};

/// Docker's default seccomp profile in OCI form (see conformance/testdata/seccomp/README.md).
const DOCKER_DEFAULT: &str = include_str!("../testdata/seccomp/docker-default.json");

fn docker_default() -> Value {
    serde_json::from_str(DOCKER_DEFAULT).expect("docker-default.json is valid JSON")
}

/// Run `script` in a container from `b`; returns (exit code, stdout + stderr).
fn run(rt: &Runtime, b: &mut Bundle, script: &str) -> (i32, String) {
    b.shell(script);
    let c = rt.container(b);
    let out = c.run();
    (out.code, format!("{}{}", out.stdout, out.stderr))
}

fn set_caps(b: &mut Bundle, caps: Value) {
    b.set("/process/capabilities", caps).expect("set caps");
}

/// Capability sets including CAP_SYS_ADMIN, so that only seccomp can refuse unshare/mount.
fn admin_caps() -> Value {
    let c = json!([
        "CAP_AUDIT_WRITE",
        "CAP_KILL",
        "CAP_NET_BIND_SERVICE",
        "CAP_SYS_ADMIN",
        "CAP_SYS_CHROOT"
    ]);
    json!({ "bounding": c, "effective": c, "permitted": c })
}

const PROBE: &str = "grep '^Seccomp:' /proc/self/status; \
    unshare -m true 2>&1; echo unshare=$?; \
    mount -t tmpfs none /mnt 2>&1; echo mount=$?; \
    ls / >/dev/null && echo hi | grep -q hi; echo basic=$?";

#[test]
fn docker_default_profile_refuses_unshare_and_mount_but_busybox_works() {
    require_root!();
    runtime::for_each(|rt| {
        // Control: with CAP_SYS_ADMIN and no seccomp, unshare and mount work.
        let mut b = Bundle::busybox().expect("bundle");
        set_caps(&mut b, admin_caps());
        let (code, out) = run(rt, &mut b, PROBE);
        assert_eq!(code, 0, "{out}");
        assert!(out.contains("Seccomp:\t0"), "{out}");
        assert!(
            out.contains("unshare=0") && out.contains("mount=0"),
            "{out}"
        );

        // Same container under the Docker default profile: refused with the profile's EPERM.
        let mut b = Bundle::busybox().expect("bundle");
        set_caps(&mut b, admin_caps());
        b.set("/linux/seccomp", docker_default())
            .expect("set seccomp");
        let (code, out) = run(rt, &mut b, PROBE);
        assert_eq!(code, 0, "{out}");
        assert!(out.contains("Seccomp:\t2"), "{out}");
        assert!(out.contains("unshare=1"), "{out}");
        assert!(!out.contains("mount=0"), "{out}");
        assert!(out.contains("Operation not permitted"), "{out}");
        assert!(out.contains("basic=0"), "{out}");
    });
}

#[test]
fn custom_profile_errno_ret_and_argument_filters() {
    require_root!();
    runtime::for_each(|rt| {
        let mut b = Bundle::busybox().expect("bundle");
        b.readonly_root(false);
        // mkdir -> EACCES (13); chmod to exactly 0700 -> EPERM, other modes allowed.
        b.set(
            "/linux/seccomp",
            json!({
                "defaultAction": "SCMP_ACT_ALLOW",
                "architectures": ["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32"],
                "syscalls": [
                    { "names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_ERRNO", "errnoRet": 13 },
                    { "names": ["chmod"], "action": "SCMP_ACT_ERRNO",
                      "args": [ { "index": 1, "value": 448, "op": "SCMP_CMP_EQ" } ] },
                    { "names": ["fchmodat"], "action": "SCMP_ACT_ERRNO",
                      "args": [ { "index": 2, "value": 448, "op": "SCMP_CMP_EQ" } ] },
                    { "names": ["not_a_syscall_on_any_arch"], "action": "SCMP_ACT_KILL" }
                ]
            }),
        )
        .expect("set seccomp");
        let (code, out) = run(
            rt,
            &mut b,
            "mkdir /tmp/d 2>&1; echo mkdir=$?; touch /tmp/f; chmod 755 /tmp/f; echo c755=$?; \
             chmod 700 /tmp/f 2>&1; echo c700=$?",
        );
        assert_eq!(code, 0, "{out}");
        assert!(
            out.contains("Permission denied") && out.contains("mkdir=1"),
            "{out}"
        );
        assert!(out.contains("c755=0"), "{out}");
        assert!(
            out.contains("Operation not permitted") && out.contains("c700=1"),
            "{out}"
        );
    });
}

#[test]
fn exec_gets_the_same_filter() {
    require_root!();
    runtime::for_each(|rt| {
        let mut b = Bundle::busybox().expect("bundle");
        set_caps(&mut b, admin_caps());
        b.set("/linux/seccomp", docker_default())
            .expect("set seccomp");
        b.args(&["sleep", "300"]);
        let c = rt.container(&b);
        c.run_with(&["--detach"]).ok();
        let out = c.exec(&["sh", "-c", PROBE]);
        let text = format!("{}{}", out.stdout, out.stderr);
        assert_eq!(out.code, 0, "{text}");
        assert!(text.contains("Seccomp:\t2"), "{text}");
        assert!(text.contains("unshare=1"), "{text}");
        assert!(text.contains("basic=0"), "{text}");
    });
}

#[test]
fn notify_action_is_refused_clearly() {
    require_root!();
    let rt = Runtime::skiff().expect("skiff binary");
    let mut b = Bundle::busybox().expect("bundle");
    b.set(
        "/linux/seccomp",
        json!({ "defaultAction": "SCMP_ACT_ALLOW",
                "syscalls": [ { "names": ["getpid"], "action": "SCMP_ACT_NOTIFY" } ] }),
    )
    .expect("set seccomp");
    let (code, out) = run(&rt, &mut b, "true");
    assert_ne!(code, 0, "{out}");
    assert!(out.contains("SCMP_ACT_NOTIFY"), "{out}");
}

/// CapBnd/CapInh/CapPrm/CapEff/CapAmb lines of the container process.
const CAPS_PROBE: &str = "grep -E '^Cap(Bnd|Inh|Prm|Eff|Amb):' /proc/self/status | tr -d '\\t'";

fn caps_lines(bnd: u64, inh: u64, prm: u64, eff: u64, amb: u64) -> String {
    format!(
        "CapInh:{inh:016x}\nCapPrm:{prm:016x}\nCapEff:{eff:016x}\nCapBnd:{bnd:016x}\nCapAmb:{amb:016x}\n"
    )
}

fn five_sets() -> Value {
    json!({
        "bounding": ["CAP_CHOWN", "CAP_KILL", "CAP_NET_BIND_SERVICE", "CAP_NET_RAW"],
        "effective": ["CAP_KILL", "CAP_NET_RAW"],
        "permitted": ["CAP_KILL", "CAP_NET_RAW", "CAP_CHOWN"],
        "inheritable": ["CAP_NET_RAW"],
        "ambient": ["CAP_NET_RAW"]
    })
}

#[test]
fn five_capability_sets_as_non_root_user() {
    require_root!();
    runtime::for_each(|rt| {
        let mut b = Bundle::busybox().expect("bundle");
        b.user(1000, 1000);
        set_caps(&mut b, five_sets());
        let (code, out) = run(rt, &mut b, CAPS_PROBE);
        assert_eq!(code, 0, "{out}");
        // A non-root exec keeps bounding and inheritable; permitted and effective become ambient.
        let (bnd, net_raw) = (0x2421, 1 << 13);
        assert_eq!(out, caps_lines(bnd, net_raw, net_raw, net_raw, net_raw));
    });
}

#[test]
fn five_capability_sets_as_root() {
    require_root!();
    runtime::for_each(|rt| {
        let mut b = Bundle::busybox().expect("bundle");
        set_caps(&mut b, five_sets());
        let (code, out) = run(rt, &mut b, CAPS_PROBE);
        assert_eq!(code, 0, "{out}");
        // Root's exec would gain bounding | inheritable, but noNewPrivileges (true in the default
        // config) caps permitted at what it was before exec, so effective = permitted = 0x2021.
        let (bnd, prm, net_raw) = (0x2421, 0x2021, 1 << 13);
        assert_eq!(out, caps_lines(bnd, net_raw, prm, prm, net_raw));
    });
}

#[test]
fn no_capabilities_means_none() {
    require_root!();
    runtime::for_each(|rt| {
        let mut b = Bundle::busybox().expect("bundle");
        b.unset("/process/capabilities");
        let (code, out) = run(rt, &mut b, CAPS_PROBE);
        assert_eq!(code, 0, "{out}");
        assert_eq!(out, caps_lines(0, 0, 0, 0, 0));
    });
}

/// skiff refuses unknown capability names (issue 4); runc 1.1 only warns and ignores them, so this
/// runs against skiff alone.
#[test]
fn unknown_capability_is_an_error() {
    require_root!();
    let rt = Runtime::skiff().expect("skiff binary");
    let mut b = Bundle::busybox().expect("bundle");
    set_caps(
        &mut b,
        json!({ "bounding": ["CAP_KILL", "CAP_NOT_A_CAPABILITY"] }),
    );
    let (code, out) = run(&rt, &mut b, "true");
    assert_ne!(code, 0, "{out}");
    assert!(out.to_uppercase().contains("NOT_A_CAPABILITY"), "{out}");
}

#[test]
fn capability_missing_from_host_bounding_set_fails() {
    require_root!();
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let bnd = status
        .lines()
        .find_map(|l| l.strip_prefix("CapBnd:"))
        .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
        .unwrap_or(0);
    if bnd & (1 << 24) != 0 {
        skip!("CAP_SYS_RESOURCE is in this host's bounding set");
    }
    runtime::for_each(|rt| {
        let mut b = Bundle::busybox().expect("bundle");
        let c = json!(["CAP_SYS_RESOURCE"]);
        set_caps(
            &mut b,
            json!({ "bounding": c, "effective": c, "permitted": c }),
        );
        let (code, out) = run(rt, &mut b, "true");
        assert_ne!(code, 0, "{out}");
        assert!(out.contains("not permitted"), "{out}");
    });
}

#[test]
fn user_groups_umask_and_no_new_privs() {
    require_root!();
    runtime::for_each(|rt| {
        let mut b = Bundle::busybox().expect("bundle");
        b.user(1000, 1000);
        b.additional_gids(&[10, 29]);
        b.set("/process/user/umask", json!(0o077)).expect("umask");
        b.set("/process/noNewPrivileges", json!(true)).expect("nnp");
        let (code, out) = run(rt, &mut b, "id; umask; grep NoNewPrivs /proc/self/status");
        assert_eq!(code, 0, "{out}");
        assert!(
            out.contains("uid=1000(user) gid=1000(user) groups=10(wheel),29(audio)"),
            "{out}"
        );
        assert!(out.contains("\n0077\n"), "{out}");
        assert!(out.contains("NoNewPrivs:\t1"), "{out}");

        let mut b = Bundle::busybox().expect("bundle");
        b.set("/process/noNewPrivileges", json!(false))
            .expect("nnp");
        let (code, out) = run(rt, &mut b, "grep NoNewPrivs /proc/self/status");
        assert_eq!(code, 0, "{out}");
        assert!(out.contains("NoNewPrivs:\t0"), "{out}");
    });
}

#[test]
fn rlimits_are_applied_and_raising_a_hard_limit_needs_privilege() {
    require_root!();
    runtime::for_each(|rt| {
        let mut b = Bundle::busybox().expect("bundle");
        b.set(
            "/process/rlimits",
            json!([
                { "type": "RLIMIT_NOFILE", "soft": 1000, "hard": 2000 },
                { "type": "RLIMIT_CORE", "soft": 0, "hard": 0 }
            ]),
        )
        .expect("rlimits");
        let (code, out) = run(rt, &mut b, "ulimit -n; ulimit -Hn; ulimit -c");
        assert_eq!(code, 0, "{out}");
        assert_eq!(out, "1000\n2000\n0\n");
    });
    // Above the current hard limit: needs CAP_SYS_RESOURCE, which this host's bounding set lacks.
    let (_, hard) = nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE)
        .unwrap_or((0, 0));
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let has_sys_resource = status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
        .is_some_and(|m| m & (1 << 24) != 0);
    if has_sys_resource || hard >= 1 << 30 {
        skip!("this host may raise RLIMIT_NOFILE (CAP_SYS_RESOURCE held)");
    }
    runtime::for_each(|rt| {
        let mut b = Bundle::busybox().expect("bundle");
        b.set(
            "/process/rlimits",
            json!([{ "type": "RLIMIT_NOFILE", "soft": 1024, "hard": hard + 1 }]),
        )
        .expect("rlimits");
        let (code, out) = run(rt, &mut b, "true");
        assert_ne!(code, 0, "{out}");
    });
}

/// runc 1.1 silently ignores an AppArmor profile when AppArmor is disabled; skiff refuses it, so
/// this runs against skiff alone.
#[test]
fn lsm_request_on_host_without_it_is_a_clear_error() {
    require_root!();
    let apparmor = std::fs::read_to_string("/sys/module/apparmor/parameters/enabled")
        .map(|s| s.trim().starts_with('Y'))
        .unwrap_or(false);
    let selinux = std::path::Path::new("/sys/fs/selinux/enforce").exists();
    let rt = Runtime::skiff().expect("skiff binary");
    if apparmor {
        eprintln!("SKIP: AppArmor is enabled on this host (refusal case not testable)");
    } else {
        let mut b = Bundle::busybox().expect("bundle");
        b.set("/process/apparmorProfile", json!("skiff-test-profile"))
            .expect("set");
        let (code, out) = run(&rt, &mut b, "true");
        assert_ne!(code, 0, "{out}");
        assert!(out.contains("AppArmor"), "{out}");
    }
    if selinux {
        eprintln!("SKIP: SELinux is enabled on this host (refusal case not testable)");
    } else {
        let mut b = Bundle::busybox().expect("bundle");
        b.set(
            "/process/selinuxLabel",
            json!("system_u:system_r:container_t:s0"),
        )
        .expect("set");
        let (code, out) = run(&rt, &mut b, "true");
        assert_ne!(code, 0, "{out}");
        assert!(out.contains("SELinux"), "{out}");
    }
}

#[test]
fn features_report_seccomp_and_lsms_truthfully() {
    let rt = Runtime::skiff().expect("skiff binary");
    let out = rt.cmd(["features"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    let v: Value = serde_json::from_str(&out.stdout).expect("features JSON");
    let sc = &v["linux"]["seccomp"];
    assert_eq!(sc["enabled"], json!(true), "{v}");
    let actions: Vec<&str> = sc["actions"]
        .as_array()
        .map(|a| a.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    for a in [
        "SCMP_ACT_ALLOW",
        "SCMP_ACT_ERRNO",
        "SCMP_ACT_KILL_PROCESS",
        "SCMP_ACT_TRACE",
    ] {
        assert!(actions.contains(&a), "{a} missing from {actions:?}");
    }
    assert!(!actions.contains(&"SCMP_ACT_NOTIFY"), "{actions:?}");
    let apparmor = std::fs::read_to_string("/sys/module/apparmor/parameters/enabled")
        .map(|s| s.trim().starts_with('Y'))
        .unwrap_or(false);
    assert_eq!(v["linux"]["apparmor"]["enabled"], json!(apparmor), "{v}");
}
