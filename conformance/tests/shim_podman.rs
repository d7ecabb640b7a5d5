//! skiff as podman's OCI runtime (`podman --runtime /path/to/skiff`), next to runc.

mod containerd_fixture;

use std::{
    fs,
    path::{Path, PathBuf},
    process::Command,
};

use conformance::{bins, unique_name};
use containerd_fixture::{busybox_oci_archive, run_limited, Out};

/// Image reference the archive carries (see the fixture).
const IMAGE: &str = containerd_fixture::IMAGE;

/// Private podman storage; everything it made is removed on drop.
struct Podman {
    dir: PathBuf,
}

impl Podman {
    fn cmd(&self, runtime: &Path, args: &[&str]) -> Out {
        let mut c = Command::new("podman");
        c.arg("--root")
            .arg(self.dir.join("root"))
            .arg("--runroot")
            .arg(self.dir.join("run"))
            .args([
                "--storage-driver",
                "overlay",
                "--cgroup-manager",
                "cgroupfs",
            ])
            .args(["--events-backend", "file"])
            .arg("--tmpdir")
            .arg(self.dir.join("tmp"))
            .arg("--runtime")
            .arg(runtime)
            .args(args);
        run_limited(c, 90)
    }

    /// `podman run` with the limits this host can grant (no CAP_SYS_RESOURCE here, so podman's
    /// default 1048576 nofile/nproc rlimits cannot be set by any runtime).
    fn run_args<'a>(extra: &[&'a str]) -> Vec<&'a str> {
        let mut v = vec![
            "run",
            "--network",
            "none",
            "--ulimit",
            "nofile=1024:1024",
            "--ulimit",
            "nproc=4096:4096",
        ];
        v.extend_from_slice(extra);
        v
    }
}

impl Drop for Podman {
    fn drop(&mut self) {
        if let Some(runc) = bins::runc() {
            let _ = self.cmd(&runc, &["rm", "-a", "-f", "-t", "0"]);
        }
        let prefix = self.dir.to_string_lossy().into_owned();
        let mut mounts: Vec<String> = fs::read_to_string("/proc/self/mountinfo")
            .unwrap_or_default()
            .lines()
            .filter_map(|l| l.split_whitespace().nth(4).map(str::to_string))
            .filter(|m| m.starts_with(&prefix))
            .collect();
        mounts.sort_by_key(|m| std::cmp::Reverse(m.len()));
        for m in mounts {
            let _ = nix::mount::umount2(m.as_str(), nix::mount::MntFlags::MNT_DETACH);
        }
        let _ = fs::remove_dir_all(&self.dir);
    }
}

fn scenarios(p: &Podman, rt: &Path) -> Vec<(String, String)> {
    let mut f = Vec::new();
    let out = p.cmd(
        rt,
        &Podman::run_args(&["--rm", IMAGE, "sh", "-c", "echo hi; exit 3"]),
    );
    f.push(("run --rm stdout".into(), out.stdout.trim().to_string()));
    f.push(("run --rm exit".into(), out.code.to_string()));
    let name = unique_name("pd");
    let out = p.cmd(
        rt,
        &Podman::run_args(&["-d", "--name", &name, IMAGE, "sleep", "1000"]),
    );
    f.push(("run -d exit".into(), out.code.to_string()));
    let out = p.cmd(rt, &["exec", &name, "sh", "-c", "echo in-exec; exit 5"]);
    f.push(("exec stdout".into(), out.stdout.trim().to_string()));
    f.push(("exec exit".into(), out.code.to_string()));
    let out = p.cmd(rt, &["stop", "-t", "1", &name]);
    f.push(("stop exit".into(), out.code.to_string()));
    let out = p.cmd(rt, &["inspect", "-f", "{{.State.Status}}", &name]);
    f.push(("status after stop".into(), out.stdout.trim().to_string()));
    let out = p.cmd(rt, &["rm", &name]);
    f.push(("rm exit".into(), out.code.to_string()));
    f
}

#[test]
fn shim_podman_runs_skiff_like_runc() {
    if !nix::unistd::geteuid().is_root() {
        eprintln!("SKIP: podman tests need root");
        return;
    }
    if bins::system("podman").is_none() {
        eprintln!("SKIP: podman is not installed (dpkg -l podman)");
        return;
    }
    let Some(runc) = bins::runc() else {
        eprintln!("SKIP: runc is not installed");
        return;
    };
    let skiff = match bins::skiff() {
        Ok(p) => p,
        Err(e) => panic!("{e}"),
    };
    let p = Podman {
        dir: PathBuf::from(format!("/tmp/skpd-{}", std::process::id())),
    };
    fs::create_dir_all(p.dir.join("tmp")).expect("podman dirs");
    let archive = p.dir.join("busybox.tar");
    busybox_oci_archive(&archive).expect("image archive");
    let out = p.cmd(&runc, &["load", "-i", &archive.to_string_lossy()]);
    assert_eq!(out.code, 0, "podman load: {out:?}");
    let got = scenarios(&p, &skiff);
    let want = scenarios(&p, &runc);
    let mut diffs = Vec::new();
    eprintln!("{:<20} | {:<16} | runc", "fact", "skiff");
    for ((k, a), (_, b)) in got.iter().zip(want.iter()) {
        eprintln!("{}{k:<19} | {a:<16} | {b}", if a == b { " " } else { "!" });
        if a != b {
            diffs.push(format!("{k}: skiff {a:?}, runc {b:?}"));
        }
    }
    assert_eq!(want[1].1, "3", "reference run with runc failed: {want:?}");
    assert!(
        diffs.is_empty(),
        "skiff differs from runc under podman:\n{}",
        diffs.join("\n")
    );
}
