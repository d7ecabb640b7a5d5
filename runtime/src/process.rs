//! The container process: executable lookup, cwd, scheduler, I/O priority, personality,
//! inherited file descriptors and the final execve.
use std::ffi::{CString, OsStr};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use oci_spec::runtime::{IOPriorityClass, LinuxSchedulerPolicy, Process};

/// PATH used when the process environment has none (runc's default).
const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// Find the executable for `arg0` like runc (Go's exec.LookPath with the container's PATH),
/// after pivot, so a missing binary makes `create` fail with a clear message.
pub fn find_executable(arg0: &str, env: &[String]) -> Result<PathBuf> {
    if arg0.is_empty() {
        bail!("exec: \"\": executable file not found in $PATH");
    }
    if arg0.contains('/') {
        let p = Path::new(arg0);
        let md = std::fs::metadata(p)
            .map_err(|e| anyhow::anyhow!("exec: {arg0:?}: stat {arg0}: {}", io_msg(&e)))?;
        if md.is_dir() || md.permissions().mode() & 0o111 == 0 {
            bail!("exec: {arg0:?}: permission denied");
        }
        return Ok(p.to_path_buf());
    }
    let path = env
        .iter()
        .rev()
        .find_map(|kv| kv.strip_prefix("PATH="))
        .unwrap_or(DEFAULT_PATH);
    for dir in path.split(':') {
        let dir = if dir.is_empty() { "." } else { dir };
        let cand = Path::new(dir).join(arg0);
        if let Ok(md) = std::fs::metadata(&cand) {
            if !md.is_dir() && md.permissions().mode() & 0o111 != 0 {
                return Ok(cand);
            }
        }
    }
    bail!("exec: {arg0:?}: executable file not found in $PATH")
}

/// Lowercase OS error text without the "(os error N)" suffix, like Go prints.
pub fn io_msg(e: &std::io::Error) -> String {
    match e.raw_os_error() {
        Some(n) => {
            // SAFETY: strerror returns a static string for any errno.
            let s = unsafe { std::ffi::CStr::from_ptr(libc::strerror(n)) };
            s.to_string_lossy().to_lowercase()
        }
        None => e.to_string(),
    }
}

/// chdir into `cwd` and make sure it resolves inside the container root (CVE-2024-21626: a
/// leaked host fd such as /proc/self/fd/N must not become the process's cwd).
pub fn enter_cwd(cwd: &Path) -> Result<()> {
    if !cwd.is_absolute() {
        bail!("process.cwd {:?} is not an absolute path", cwd);
    }
    std::env::set_current_dir(cwd)
        .with_context(|| format!("chdir to cwd ({:?}) set in config.json failed", cwd))?;
    match std::env::current_dir() {
        Ok(p) if p.is_absolute() => Ok(()),
        _ => bail!(
            "current working directory is outside of container mount namespace root -- possible container breakout detected"
        ),
    }
}

/// Apply `process.scheduler` (sched_setattr).
pub fn apply_scheduler(p: &Process) -> Result<()> {
    let Some(s) = p.scheduler() else {
        return Ok(());
    };
    let policy: u32 = match s.policy() {
        LinuxSchedulerPolicy::SchedOther => 0,
        LinuxSchedulerPolicy::SchedFifo => 1,
        LinuxSchedulerPolicy::SchedRr => 2,
        LinuxSchedulerPolicy::SchedBatch => 3,
        LinuxSchedulerPolicy::SchedIso => 4,
        LinuxSchedulerPolicy::SchedIdle => 5,
        LinuxSchedulerPolicy::SchedDeadline => 6,
    };
    #[repr(C)]
    struct SchedAttr {
        size: u32,
        policy: u32,
        flags: u64,
        nice: i32,
        priority: u32,
        runtime: u64,
        deadline: u64,
        period: u64,
    }
    let attr = SchedAttr {
        size: std::mem::size_of::<SchedAttr>() as u32,
        policy,
        flags: 0,
        nice: s.nice().unwrap_or(0),
        priority: s.priority().unwrap_or(0) as u32,
        runtime: s.runtime().unwrap_or(0),
        deadline: s.deadline().unwrap_or(0),
        period: s.period().unwrap_or(0),
    };
    // SAFETY: sched_setattr with a properly sized attr struct.
    let r = unsafe { libc::syscall(libc::SYS_sched_setattr, 0, &attr as *const SchedAttr, 0) };
    if r != 0 {
        return Err(std::io::Error::last_os_error()).context("process.scheduler: sched_setattr");
    }
    Ok(())
}

/// Apply `process.ioPriority` (ioprio_set on ourselves).
pub fn apply_io_priority(p: &Process) -> Result<()> {
    let Some(io) = p.io_priority() else {
        return Ok(());
    };
    let class: i64 = match io.class() {
        IOPriorityClass::IoprioClassRt => 1,
        IOPriorityClass::IoprioClassBe => 2,
        IOPriorityClass::IoprioClassIdle => 3,
    };
    let prio = io.priority();
    if !(0..=7).contains(&prio) {
        bail!("process.ioPriority.priority {prio} out of range 0..7");
    }
    let value = (class << 13) | prio;
    // SAFETY: ioprio_set(IOPRIO_WHO_PROCESS, self, value).
    let r = unsafe { libc::syscall(libc::SYS_ioprio_set, 1, 0, value) };
    if r != 0 {
        return Err(std::io::Error::last_os_error()).context("process.ioPriority: ioprio_set");
    }
    Ok(())
}

/// Apply `linux.personality` (LINUX or LINUX32).
pub fn apply_personality(domain: Option<&str>) -> Result<()> {
    let Some(d) = domain else {
        return Ok(());
    };
    let persona: libc::c_ulong = match d {
        "LINUX" => 0x0000,
        "LINUX32" => 0x0008,
        other => bail!("linux.personality.domain {other:?} is not supported"),
    };
    // SAFETY: personality syscall with a constant.
    if unsafe { libc::personality(persona) } < 0 {
        return Err(std::io::Error::last_os_error()).context("personality");
    }
    Ok(())
}

/// Mark every fd from 3+`preserve` close-on-exec and clear the flag on 3..3+`preserve`, so
/// exactly stdio and the preserved fds reach the container process.
pub fn seal_fds(preserve: u32) {
    let first = 3 + preserve;
    // SAFETY: close_range with CLOSE_RANGE_CLOEXEC only changes fd flags.
    let r = unsafe {
        libc::syscall(
            libc::SYS_close_range,
            first,
            u32::MAX,
            libc::CLOSE_RANGE_CLOEXEC,
        )
    };
    if r != 0 {
        // Old kernels: walk /proc/self/fd.
        if let Ok(rd) = std::fs::read_dir("/proc/self/fd") {
            let fds: Vec<i32> = rd
                .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
                .collect();
            for fd in fds {
                if fd >= first as i32 {
                    // SAFETY: setting FD_CLOEXEC on an fd number.
                    unsafe { libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC) };
                }
            }
        }
    }
    for fd in 3..first {
        // SAFETY: clearing fd flags.
        unsafe { libc::fcntl(fd as i32, libc::F_SETFD, 0) };
    }
}

fn cstring(s: &[u8], what: &str) -> Result<CString> {
    CString::new(s).with_context(|| format!("{what} contains a NUL byte"))
}

/// execve `path` with `args` and `env`; only returns on failure.
pub fn execve(path: &Path, args: &[String], env: &[String]) -> anyhow::Error {
    let inner = || -> Result<std::convert::Infallible> {
        let p = cstring(path.as_os_str().as_bytes(), "process.args[0]")?;
        let a: Vec<CString> = args
            .iter()
            .map(|s| cstring(s.as_bytes(), "process.args"))
            .collect::<Result<_>>()?;
        let e: Vec<CString> = env
            .iter()
            .map(|s| cstring(s.as_bytes(), "process.env"))
            .collect::<Result<_>>()?;
        let mut ap: Vec<*const libc::c_char> = a.iter().map(|c| c.as_ptr()).collect();
        ap.push(std::ptr::null());
        let mut ep: Vec<*const libc::c_char> = e.iter().map(|c| c.as_ptr()).collect();
        ep.push(std::ptr::null());
        // SAFETY: NUL-terminated arrays of valid C strings that outlive the call.
        unsafe { libc::execve(p.as_ptr(), ap.as_ptr(), ep.as_ptr()) };
        let err = std::io::Error::last_os_error();
        bail!(
            "exec: {:?}: {}",
            args.first().map(String::as_str).unwrap_or(""),
            io_msg(&err)
        )
    };
    match inner() {
        Ok(never) => match never {},
        Err(e) => e,
    }
}

/// `KEY=value` list with `extra` entries overriding same-named ones.
pub fn merge_env(base: &[String], extra: &[String]) -> Vec<String> {
    let mut out: Vec<String> = base.to_vec();
    for kv in extra {
        let key = kv.split('=').next().unwrap_or("");
        if let Some(slot) = out
            .iter_mut()
            .find(|e| e.split('=').next().unwrap_or("") == key)
        {
            *slot = kv.clone();
        } else {
            out.push(kv.clone());
        }
    }
    out
}

/// Whether `path` names an existing file (used for console-socket and pid-file checks).
pub fn exists(path: &OsStr) -> bool {
    Path::new(path).exists()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lookup() {
        let env = vec!["PATH=/usr/bin:/bin".to_string()];
        assert!(find_executable("sh", &env).is_ok());
        let e = find_executable("definitely-not-here", &env).expect_err("missing");
        assert!(e.to_string().contains("executable file not found in $PATH"));
        let e = find_executable("/bin/nope", &env).expect_err("missing");
        assert_eq!(
            e.to_string(),
            "exec: \"/bin/nope\": stat /bin/nope: no such file or directory"
        );
    }

    #[test]
    fn env_merge() {
        let m = merge_env(
            &["A=1".into(), "PATH=/bin".into()],
            &["PATH=/x".into(), "B=2".into()],
        );
        assert_eq!(m, vec!["A=1", "PATH=/x", "B=2"]);
    }
}
