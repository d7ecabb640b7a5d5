//! Booting a throw-away qemu guest (TCG) for tests that need another host: Debian's kernel, an
//! initramfs the test stages, and a guest script that reports `RESULT PASS|FAIL|SKIP name` lines
//! (then `RESULT DONE`) on the serial console, which the test collects and asserts on.
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The newest `/boot/vmlinuz-*` and its version (the suffix, which names its module directory).
pub fn debian_kernel() -> Option<(PathBuf, String)> {
    let mut k: Vec<PathBuf> = std::fs::read_dir("/boot")
        .ok()?
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("vmlinuz-"))
        })
        .collect();
    k.sort();
    let path = k.pop()?;
    let version = path
        .file_name()?
        .to_str()?
        .strip_prefix("vmlinuz-")?
        .to_string();
    Some((path, version))
}

/// What booting a guest takes from this host.
pub struct GuestTools {
    /// qemu-system-x86_64.
    pub qemu: PathBuf,
    /// Debian's kernel image and its version (see [`debian_kernel`]).
    pub kernel: PathBuf,
    /// The kernel's version, naming its module directory.
    pub kernel_version: String,
}

/// qemu, Debian's kernel, busybox-static (the guest's userland) and cpio (the initramfs), or the
/// reason to skip a guest test when one of them is missing.
pub fn guest_tools() -> Result<GuestTools, String> {
    let qemu = crate::bins::system("qemu-system-x86_64")
        .ok_or("qemu-system-x86_64 is not installed (apt-get install qemu-system-x86)")?;
    let (kernel, kernel_version) =
        debian_kernel().ok_or("no /boot/vmlinuz-* (apt-get install linux-image-amd64)")?;
    if !Path::new("/bin/busybox").exists() {
        return Err("no /bin/busybox (apt-get install busybox-static)".into());
    }
    if crate::bins::system("cpio").is_none() {
        return Err("cpio is not installed".into());
    }
    Ok(GuestTools {
        qemu,
        kernel,
        kernel_version,
    })
}

/// Shell functions the guest scripts share (`pass`, `fail`, `check`, `check_has`, `rd`).
const GUEST_CHECKS: &str = include_str!("../vm/checks.sh");

/// Write `script` as `dir/guest.sh` (mode 0755) with the `checks.sh` it sources beside it.
pub fn write_guest_script(dir: &Path, script: &str) {
    std::fs::write(dir.join("checks.sh"), GUEST_CHECKS).expect("checks.sh");
    std::fs::write(dir.join("guest.sh"), script).expect("guest.sh");
    run(Command::new("chmod").arg("755").arg(dir.join("guest.sh")));
}

/// Run a set-up command to completion and return its stdout; panics (with its stderr) on failure.
pub fn run(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Pack the staging directory into a newc cpio initramfs at `initrd`.
pub fn make_initrd(staging: &Path, initrd: &Path) {
    run(Command::new("sh").arg("-c").arg(format!(
        "cd {} && find . | cpio -o -H newc --quiet > {}",
        staging.display(),
        initrd.display()
    )));
}

/// Kills and reaps qemu if the test ends early (panic or timeout).
struct Qemu(Child);

impl Drop for Qemu {
    fn drop(&mut self) {
        if let Ok(None) = self.0.try_wait() {
            let _ = self.0.kill();
        }
        let _ = self.0.wait();
    }
}

/// Boot `kernel` + `initrd` with `qemu` (TCG, 1.5 GiB, 2 CPUs, serial console written to
/// `console`, `extra` qemu arguments, kernel command line `append`), wait until the guest powers
/// off or `limit` passes (then kill it), print the console and return it.
pub fn boot(
    qemu: &Path,
    kernel: &Path,
    initrd: &Path,
    extra: &[&str],
    append: &str,
    console: &Path,
    limit: Duration,
) -> String {
    let started = Instant::now();
    let child = Command::new(qemu)
        .args([
            "-accel",
            "tcg",
            "-m",
            "1536",
            "-smp",
            "2",
            "-nographic",
            "-no-reboot",
            "-nodefaults",
            "-serial",
            "stdio",
        ])
        .args(extra)
        .arg("-kernel")
        .arg(kernel)
        .arg("-initrd")
        .arg(initrd)
        .arg("-append")
        .arg(append)
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(console).expect("console log"))
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn qemu");
    let mut qemu = Qemu(child);
    let deadline = started + limit;
    while Instant::now() < deadline {
        if let Ok(Some(_)) = qemu.0.try_wait() {
            break;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    drop(qemu);
    let log = std::fs::read_to_string(console).unwrap_or_default();
    eprintln!(
        "--- guest console ({:.1}s) ---\n{log}",
        started.elapsed().as_secs_f64()
    );
    log
}

/// What the guest script reported on the console.
#[derive(Debug, Default)]
pub struct GuestResults {
    /// `RESULT DONE` was printed: the script ran to its end.
    pub done: bool,
    /// Number of `RESULT PASS` lines.
    pub passed: usize,
    /// The `RESULT FAIL ...` lines (without the prefix).
    pub failed: Vec<String>,
    /// The `RESULT SKIP ...` lines (without the prefix).
    pub skipped: Vec<String>,
}

/// Collect the `RESULT` lines of a console log.
pub fn results(log: &str) -> GuestResults {
    let mut r = GuestResults::default();
    for line in log.lines().filter_map(|l| l.trim().strip_prefix("RESULT ")) {
        if line == "DONE" {
            r.done = true;
        } else if line.starts_with("FAIL") {
            r.failed.push(line.to_string());
        } else if line.starts_with("SKIP") {
            r.skipped.push(line.to_string());
        } else if line.starts_with("PASS") {
            r.passed += 1;
        }
    }
    r
}
