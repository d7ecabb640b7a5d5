//! OCI hooks: run each with the state JSON on stdin, honouring `timeout`.
use std::io::Write;
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use oci_spec::runtime::Hook;

/// Run `hooks` in order; the first failure stops and is returned ("error running <kind> hook
/// #N ...").
pub fn run(kind: &str, hooks: &[Hook], state_json: &str) -> Result<()> {
    for (i, h) in hooks.iter().enumerate() {
        run_one(h, state_json)
            .with_context(|| format!("error running {kind} hook #{i} ({})", h.path().display()))?;
    }
    Ok(())
}

fn run_one(h: &Hook, state_json: &str) -> Result<()> {
    let mut cmd = Command::new(h.path());
    let args = h.args().clone().unwrap_or_default();
    if let Some((first, rest)) = args.split_first() {
        cmd.arg0(first);
        cmd.args(rest);
    }
    cmd.env_clear();
    for kv in h.env().clone().unwrap_or_default() {
        if let Some((k, v)) = kv.split_once('=') {
            cmd.env(k, v);
        }
    }
    cmd.stdin(Stdio::piped());
    let mut child = cmd.spawn().context("starting hook")?;
    if let Some(mut stdin) = child.stdin.take() {
        // A hook that does not read its stdin must not fail the write.
        let _ = stdin.write_all(state_json.as_bytes());
    }
    let deadline = h
        .timeout()
        .filter(|t| *t > 0)
        .map(|t| Instant::now() + Duration::from_secs(t as u64));
    let status = loop {
        if let Some(st) = child.try_wait().context("waiting for hook")? {
            break st;
        }
        if let Some(d) = deadline {
            if Instant::now() >= d {
                let _ = child.kill();
                let _ = child.wait();
                bail!("timeout after {} seconds", h.timeout().unwrap_or(0));
            }
        }
        std::thread::sleep(Duration::from_millis(2));
    };
    if !status.success() {
        bail!("{status}");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hook(json: &str) -> Hook {
        serde_json::from_str(json).expect("hook")
    }

    #[test]
    fn success_failure_timeout_and_stdin() {
        let dir = tempfile::tempdir().expect("tmp");
        let out = dir.path().join("out");
        let ok = hook(&format!(
            r#"{{"path":"/bin/sh","args":["sh","-c","cat > {}"]}}"#,
            out.display()
        ));
        run("test", &[ok], "{\"id\":\"x\"}").expect("ok hook");
        assert_eq!(
            std::fs::read_to_string(&out).expect("out"),
            "{\"id\":\"x\"}"
        );
        let bad = hook(r#"{"path":"/bin/sh","args":["sh","-c","exit 3"]}"#);
        let e = run("test", &[bad], "{}").expect_err("must fail");
        assert!(format!("{e:#}").contains("hook #0"));
        let slow = hook(r#"{"path":"/bin/sh","args":["sh","-c","sleep 5"],"timeout":1}"#);
        let e = run("test", &[slow], "{}").expect_err("must time out");
        assert!(format!("{e:#}").contains("timeout"));
    }
}
