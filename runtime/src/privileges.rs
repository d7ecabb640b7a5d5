//! Process identity and privileges: rlimits, user/groups, capabilities, no_new_privs, umask.
//!
//! `prepare` validates and precomputes everything in the parent; `apply` runs in the child as the
//! last step before closing fds and execve, using raw syscalls (no allocation on the success path,
//! and only the calling thread is affected, which is right in a freshly forked child).
//!
//! Order in `apply` (as runc's init does):
//! 1. LSM exec labels (AppArmor/SELinux, written via a private procfs handle)
//! 2. rlimits
//! 3. seccomp, if `noNewPrivileges` is false: installing needs CAP_SYS_ADMIN, so before caps drop
//! 4. bounding set drop (needs CAP_SETPCAP, so while still root)
//! 5. PR_SET_KEEPCAPS, setgroups, setresgid, setresuid, clear KEEPCAPS
//! 6. capset(effective, permitted, inheritable), ambient clear + raise
//! 7. no_new_privs, umask
//! 8. seccomp, if `noNewPrivileges` is true: as late as possible, so the fewest syscalls run after it
use nix::sys::resource::Resource;
use oci_spec::runtime::{PosixRlimitType, Process};

use crate::capabilities::{self, CapSets};
use crate::lsm::ExecLabels;
use crate::seccomp::SeccompProgram;

/// Errors while validating or applying process privileges.
#[derive(Debug, thiserror::Error)]
pub enum PrivilegeError {
    /// The configuration is invalid (field named in the message).
    #[error("{0}")]
    Invalid(String),
    /// A system call failed.
    #[error("{context}: {source}")]
    Sys {
        /// What was being done.
        context: String,
        /// The underlying OS error.
        #[source]
        source: std::io::Error,
    },
}

/// Validated privilege settings, computed in the parent before fork.
#[derive(Debug, Clone, Default)]
pub struct Privileges {
    uid: u32,
    gid: u32,
    additional_gids: Vec<libc::gid_t>,
    umask: u32,
    rlimits: Vec<(Resource, u64, u64)>,
    caps: CapSets,
    last_cap: u8,
    no_new_privileges: bool,
    labels: ExecLabels,
}

impl Privileges {
    /// The uid the process will run as (e.g. for the core to chown a console).
    pub fn uid(&self) -> u32 {
        self.uid
    }
    /// The primary gid the process will run as.
    pub fn gid(&self) -> u32 {
        self.gid
    }
    /// Whether no_new_privs will be set (decides when seccomp is installed).
    pub fn no_new_privileges(&self) -> bool {
        self.no_new_privileges
    }
    /// The capability sets that will be applied.
    pub fn capabilities(&self) -> &CapSets {
        &self.caps
    }
}

/// The rlimit resource for an OCI rlimit type.
fn resource(t: PosixRlimitType) -> Resource {
    match t {
        PosixRlimitType::RlimitCpu => Resource::RLIMIT_CPU,
        PosixRlimitType::RlimitFsize => Resource::RLIMIT_FSIZE,
        PosixRlimitType::RlimitData => Resource::RLIMIT_DATA,
        PosixRlimitType::RlimitStack => Resource::RLIMIT_STACK,
        PosixRlimitType::RlimitCore => Resource::RLIMIT_CORE,
        PosixRlimitType::RlimitRss => Resource::RLIMIT_RSS,
        PosixRlimitType::RlimitNproc => Resource::RLIMIT_NPROC,
        PosixRlimitType::RlimitNofile => Resource::RLIMIT_NOFILE,
        PosixRlimitType::RlimitMemlock => Resource::RLIMIT_MEMLOCK,
        PosixRlimitType::RlimitAs => Resource::RLIMIT_AS,
        PosixRlimitType::RlimitLocks => Resource::RLIMIT_LOCKS,
        PosixRlimitType::RlimitSigpending => Resource::RLIMIT_SIGPENDING,
        PosixRlimitType::RlimitMsgqueue => Resource::RLIMIT_MSGQUEUE,
        PosixRlimitType::RlimitNice => Resource::RLIMIT_NICE,
        PosixRlimitType::RlimitRtprio => Resource::RLIMIT_RTPRIO,
        PosixRlimitType::RlimitRttime => Resource::RLIMIT_RTTIME,
    }
}

/// Validate `process` (capability names, rlimit names, user) before fork.
pub fn prepare(process: &Process) -> Result<Privileges, PrivilegeError> {
    let user = process.user();
    let additional_gids = user.additional_gids().clone().unwrap_or_default();
    if additional_gids.len() > 65536 {
        return Err(PrivilegeError::Invalid(format!(
            "process.user.additionalGids: {} groups, more than the kernel's NGROUPS_MAX (65536)",
            additional_gids.len()
        )));
    }
    if user.uid() == u32::MAX || user.gid() == u32::MAX {
        return Err(PrivilegeError::Invalid(
            "process.user: uid/gid 4294967295 is not a valid id".into(),
        ));
    }
    let umask = match user.umask() {
        Some(u) if u > 0o777 => {
            return Err(PrivilegeError::Invalid(format!(
                "process.user.umask: {u:#o} is not a permission mask"
            )))
        }
        Some(u) => u,
        None => 0o022,
    };

    let mut rlimits: Vec<(Resource, u64, u64)> = Vec::new();
    for (i, rl) in process.rlimits().iter().flatten().enumerate() {
        let r = resource(rl.typ());
        if rlimits.iter().any(|(have, _, _)| *have == r) {
            return Err(PrivilegeError::Invalid(format!(
                "process.rlimits[{i}]: duplicate rlimit type {}",
                rl.typ()
            )));
        }
        if rl.soft() > rl.hard() {
            return Err(PrivilegeError::Invalid(format!(
                "process.rlimits[{i}] {}: soft limit {} is above hard limit {}",
                rl.typ(),
                rl.soft(),
                rl.hard()
            )));
        }
        rlimits.push((r, rl.soft(), rl.hard()));
    }

    let last_cap = capabilities::last_cap();
    let caps = CapSets::from_spec(process.capabilities().as_ref(), last_cap)
        .map_err(|e| PrivilegeError::Invalid(format!("process.capabilities: {e}")))?;

    let labels = ExecLabels::prepare(
        process.apparmor_profile().as_deref(),
        process.selinux_label().as_deref(),
    )
    .map_err(|e| PrivilegeError::Invalid(e.to_string()))?;

    Ok(Privileges {
        uid: user.uid(),
        gid: user.gid(),
        additional_gids,
        umask,
        rlimits,
        caps,
        last_cap,
        no_new_privileges: process.no_new_privileges().unwrap_or(false),
        labels,
    })
}

fn sys(context: &str) -> PrivilegeError {
    PrivilegeError::Sys {
        context: context.to_string(),
        source: std::io::Error::last_os_error(),
    }
}

fn seccomp_err(e: crate::seccomp::SeccompError) -> PrivilegeError {
    match e {
        crate::seccomp::SeccompError::Install(source) => PrivilegeError::Sys {
            context: "installing seccomp filter".into(),
            source,
        },
        other => PrivilegeError::Invalid(other.to_string()),
    }
}

fn prctl(option: libc::c_int, arg: libc::c_ulong, context: &str) -> Result<(), PrivilegeError> {
    // SAFETY: plain prctl with integer arguments.
    if unsafe { libc::prctl(option, arg, 0, 0, 0) } != 0 {
        return Err(sys(context));
    }
    Ok(())
}

/// Set the user and groups of the calling thread (raw syscalls: only this thread, no glibc
/// cross-thread broadcast, which matters after a raw clone).
fn set_identity(p: &Privileges) -> Result<(), PrivilegeError> {
    // SAFETY: pointer/length describe `additional_gids`, which outlives the call.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_setgroups,
            p.additional_gids.len() as libc::size_t,
            p.additional_gids.as_ptr(),
        )
    };
    if rc != 0 {
        let err = std::io::Error::last_os_error();
        // In a user namespace with setgroups "deny" (rootless) the groups cannot be changed;
        // that is fine when none were asked for.
        if !(err.raw_os_error() == Some(libc::EPERM) && p.additional_gids.is_empty()) {
            return Err(PrivilegeError::Sys {
                context: "setgroups(process.user.additionalGids)".into(),
                source: err,
            });
        }
    }
    // SAFETY: integer-only syscalls.
    if unsafe { libc::syscall(libc::SYS_setresgid, p.gid, p.gid, p.gid) } != 0 {
        return Err(sys(&format!("setresgid({})", p.gid)));
    }
    // SAFETY: integer-only syscalls.
    if unsafe { libc::syscall(libc::SYS_setresuid, p.uid, p.uid, p.uid) } != 0 {
        return Err(sys(&format!("setresuid({})", p.uid)));
    }
    Ok(())
}

/// The last step in the child before closing fds and exec: rlimits, setgroups/setgid/setuid,
/// the five capability sets, no_new_privs, umask, then seccomp as late as the kernel allows.
pub fn apply(p: &Privileges, seccomp: Option<&SeccompProgram>) -> Result<(), PrivilegeError> {
    p.labels
        .apply()
        .map_err(|e| PrivilegeError::Invalid(e.to_string()))?;

    for &(res, soft, hard) in &p.rlimits {
        nix::sys::resource::setrlimit(res, soft, hard).map_err(|e| PrivilegeError::Sys {
            context: format!("setrlimit({res:?}, soft {soft}, hard {hard})"),
            source: e.into(),
        })?;
    }

    if let Some(prog) = seccomp {
        if !p.no_new_privileges {
            prog.install().map_err(seccomp_err)?;
        }
    }

    capabilities::apply_bounding(&p.caps, p.last_cap).map_err(cap_err)?;
    prctl(libc::PR_SET_KEEPCAPS, 1, "prctl(PR_SET_KEEPCAPS, 1)")?;
    set_identity(p)?;
    prctl(libc::PR_SET_KEEPCAPS, 0, "prctl(PR_SET_KEEPCAPS, 0)")?;
    capabilities::apply_sets(&p.caps).map_err(cap_err)?;

    if p.no_new_privileges {
        prctl(libc::PR_SET_NO_NEW_PRIVS, 1, "prctl(PR_SET_NO_NEW_PRIVS)")?;
    }
    // SAFETY: umask cannot fail.
    unsafe { libc::umask(p.umask as libc::mode_t) };

    if let Some(prog) = seccomp {
        if p.no_new_privileges {
            prog.install().map_err(seccomp_err)?;
        }
    }
    Ok(())
}

fn cap_err(e: capabilities::CapError) -> PrivilegeError {
    match e {
        capabilities::CapError::Sys { context, source } => PrivilegeError::Sys {
            context: context.to_string(),
            source,
        },
        other => PrivilegeError::Invalid(other.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;
    use std::os::fd::FromRawFd;

    fn process(json: &str) -> Process {
        serde_json::from_str(json).expect("test process JSON is valid")
    }

    /// Fork, run `body` in the child and return what it wrote to the pipe.
    fn in_child(body: impl FnOnce() -> String) -> String {
        let mut fds = [0; 2];
        // SAFETY: pipe fills two fds.
        assert_eq!(unsafe { libc::pipe(fds.as_mut_ptr()) }, 0);
        // SAFETY: glibc keeps malloc usable after fork; the child exits with _exit.
        let pid = unsafe { libc::fork() };
        assert!(pid >= 0);
        if pid == 0 {
            let out = body();
            // SAFETY: writing a buffer we own, then _exit.
            unsafe {
                libc::write(fds[1], out.as_ptr().cast(), out.len());
                libc::_exit(0);
            }
        }
        // SAFETY: we own the write end copy in the parent.
        unsafe { libc::close(fds[1]) };
        // SAFETY: fds[0] is ours and closed by File's drop.
        let mut f = unsafe { std::fs::File::from_raw_fd(fds[0]) };
        let mut s = String::new();
        f.read_to_string(&mut s).expect("read child report");
        let mut status = 0;
        // SAFETY: reaping our own child.
        unsafe { libc::waitpid(pid, &mut status, 0) };
        s
    }

    fn status_field(name: &str) -> String {
        let s = std::fs::read_to_string("/proc/thread-self/status").unwrap_or_default();
        s.lines()
            .find_map(|l| l.strip_prefix(name))
            .map(|v| v.trim().to_string())
            .unwrap_or_default()
    }

    #[test]
    fn prepare_rejects_bad_rlimits_and_umask() {
        let dup = process(
            r#"{"user":{"uid":0,"gid":0},"cwd":"/","rlimits":[
              {"type":"RLIMIT_NOFILE","hard":10,"soft":10},{"type":"RLIMIT_NOFILE","hard":5,"soft":5}]}"#,
        );
        let e = prepare(&dup).expect_err("duplicate");
        assert!(e.to_string().contains("rlimits[1]"), "{e}");
        let inverted = process(
            r#"{"user":{"uid":0,"gid":0},"cwd":"/","rlimits":[{"type":"RLIMIT_CORE","hard":1,"soft":2}]}"#,
        );
        assert!(prepare(&inverted).is_err());
        let umask = process(r#"{"user":{"uid":0,"gid":0,"umask":4096},"cwd":"/"}"#);
        assert!(prepare(&umask).is_err());
        // Unknown rlimit or capability names fail when the config is parsed.
        assert!(serde_json::from_str::<Process>(
            r#"{"user":{"uid":0,"gid":0},"cwd":"/","rlimits":[{"type":"RLIMIT_FLY","hard":1,"soft":1}]}"#
        )
        .is_err());
    }

    #[test]
    fn apply_sets_identity_caps_and_limits_exactly() {
        if nix::unistd::geteuid().as_raw() != 0 {
            eprintln!("SKIP: needs root");
            return;
        }
        let p = prepare(&process(
            r#"{"user":{"uid":1000,"gid":1001,"additionalGids":[10,20],"umask":23},"cwd":"/",
                "capabilities":{"bounding":["CAP_KILL","CAP_CHOWN","CAP_NET_BIND_SERVICE"],
                  "effective":["CAP_KILL"],"permitted":["CAP_KILL","CAP_CHOWN"],
                  "inheritable":["CAP_KILL"],"ambient":["CAP_KILL"]},
                "rlimits":[{"type":"RLIMIT_NOFILE","hard":2048,"soft":1024}],
                "noNewPrivileges":true}"#,
        ))
        .expect("valid process");
        let report = in_child(|| {
            if let Err(e) = apply(&p, None) {
                return format!("apply failed: {e}");
            }
            let groups = nix::unistd::getgroups().unwrap_or_default();
            let nofile = nix::sys::resource::getrlimit(Resource::RLIMIT_NOFILE).unwrap_or((0, 0));
            // SAFETY: umask read-and-restore.
            let um = unsafe {
                let old = libc::umask(0);
                libc::umask(old);
                old
            };
            format!(
                "uid={} gid={} groups={:?} bnd={} eff={} prm={} inh={} amb={} nnp={} umask={:o} nofile={:?}",
                status_field("Uid:"),
                status_field("Gid:"),
                groups.iter().map(|g| g.as_raw()).collect::<Vec<_>>(),
                status_field("CapBnd:"),
                status_field("CapEff:"),
                status_field("CapPrm:"),
                status_field("CapInh:"),
                status_field("CapAmb:"),
                status_field("NoNewPrivs:"),
                um,
                nofile
            )
        });
        assert_eq!(
            report,
            "uid=1000\t1000\t1000\t1000 gid=1001\t1001\t1001\t1001 groups=[10, 20] \
             bnd=0000000000000421 eff=0000000000000020 prm=0000000000000021 \
             inh=0000000000000020 amb=0000000000000020 nnp=1 umask=27 nofile=(1024, 2048)"
        );
    }

    #[test]
    fn seccomp_without_nnp_is_installed_while_privileged() {
        if nix::unistd::geteuid().as_raw() != 0 {
            eprintln!("SKIP: needs root");
            return;
        }
        let p = prepare(&process(
            r#"{"user":{"uid":0,"gid":0},"cwd":"/","noNewPrivileges":false,
                "capabilities":{"bounding":["CAP_KILL"],"effective":["CAP_KILL"],"permitted":["CAP_KILL"]}}"#,
        ))
        .expect("valid process");
        let sc: oci_spec::runtime::LinuxSeccomp = serde_json::from_str(
            r#"{"defaultAction":"SCMP_ACT_ALLOW","syscalls":[{"names":["getppid"],"action":"SCMP_ACT_ERRNO","errnoRet":55}]}"#,
        )
        .expect("valid seccomp");
        let prog = crate::seccomp::compile(Some(&sc)).expect("compiles");
        let report = in_child(|| {
            if let Err(e) = apply(&p, prog.as_ref()) {
                return format!("apply failed: {e}");
            }
            // SAFETY: plain syscall (glibc's getppid() does not report errno).
            let ppid = unsafe { libc::syscall(libc::SYS_getppid) };
            format!(
                "seccomp={} nnp={} eff={} getppid={}",
                status_field("Seccomp:"),
                status_field("NoNewPrivs:"),
                status_field("CapEff:"),
                if ppid == -1 {
                    std::io::Error::last_os_error().raw_os_error().unwrap_or(0)
                } else {
                    0
                }
            )
        });
        assert_eq!(report, "seccomp=2 nnp=0 eff=0000000000000020 getppid=55");
    }

    #[test]
    fn capability_missing_from_host_bounding_set_fails_with_eperm() {
        let host = crate::capabilities::current().unwrap_or_default();
        if host.bounding & (1 << 24) != 0 {
            eprintln!("SKIP: CAP_SYS_RESOURCE is in this host's bounding set");
            return;
        }
        let p = prepare(&process(
            r#"{"user":{"uid":0,"gid":0},"cwd":"/",
                "capabilities":{"bounding":["CAP_SYS_RESOURCE"],"permitted":["CAP_SYS_RESOURCE"],
                  "effective":["CAP_SYS_RESOURCE"]}}"#,
        ))
        .expect("valid process");
        let report = in_child(|| match apply(&p, None) {
            Ok(()) => "ok".into(),
            Err(PrivilegeError::Sys { source, .. }) => format!("{:?}", source.raw_os_error()),
            Err(e) => e.to_string(),
        });
        assert_eq!(report, format!("{:?}", Some(libc::EPERM)));
    }
}
