//! `skiff ps`: the container's processes, from its cgroup (`ps` output filtered, or pid JSON).
use std::process::Command;

use anyhow::Context;

use super::GlobalOptions;
use crate::state::StateDir;

/// Arguments of `skiff ps`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Select one of: table or json.
    #[arg(long, short = 'f', default_value = "table")]
    pub format: String,
    /// Container id.
    pub id: String,
    /// Options passed to ps(1) (default `-ef`).
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    pub ps_args: Vec<String>,
}

/// Run `skiff ps`; returns the exit code.
pub fn run(global: &GlobalOptions, args: Args) -> anyhow::Result<i32> {
    if args.format != "table" && args.format != "json" {
        anyhow::bail!("invalid format option");
    }
    let pids = {
        let dir = StateDir::open(&global.root, &args.id)?;
        let st = dir.load()?;
        let cg = st.cgroup()?;
        if !cg.exists() {
            anyhow::bail!("container {} has no cgroup (is it running?)", args.id);
        }
        cg.pids()?
    };
    if args.format == "json" {
        // runc prints its empty (nil) pid list as `null`.
        if pids.is_empty() {
            println!("null");
        } else {
            println!("{}", serde_json::to_string(&pids)?);
        }
        return Ok(0);
    }
    let ps_args = if args.ps_args.is_empty() {
        vec!["-ef".to_string()]
    } else {
        args.ps_args
    };
    let out = Command::new("ps")
        .args(&ps_args)
        .output()
        .context("running ps")?;
    if !out.status.success() {
        anyhow::bail!(
            "ps {}: {}{}",
            ps_args.join(" "),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    print!(
        "{}",
        filter_table(&String::from_utf8_lossy(&out.stdout), &pids)?
    );
    Ok(0)
}

/// Keep ps(1)'s header and the rows whose PID column is one of `pids`.
pub fn filter_table(output: &str, pids: &[i32]) -> anyhow::Result<String> {
    let mut lines = output.lines();
    let header = lines.next().unwrap_or_default();
    let idx = header
        .split_whitespace()
        .position(|f| f == "PID")
        .context("couldn't find PID field in ps output")?;
    let mut out = format!("{header}\n");
    for line in lines.filter(|l| !l.trim().is_empty()) {
        let pid = line
            .split_whitespace()
            .nth(idx)
            .and_then(|p| p.parse::<i32>().ok())
            .with_context(|| format!("unexpected pid field in ps output line {line:?}"))?;
        if pids.contains(&pid) {
            out.push_str(line);
            out.push('\n');
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filters_rows() {
        let ps = "UID  PID  PPID CMD\nroot 1 0 init\nroot 42 1 sleep 9\n";
        let t = filter_table(ps, &[42]).expect("filter");
        assert_eq!(t, "UID  PID  PPID CMD\nroot 42 1 sleep 9\n");
        assert!(filter_table("A B\n1 2\n", &[1]).is_err());
    }
}
