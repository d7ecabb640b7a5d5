//! `skiff list`: the containers under `--root`, as a table, JSON or ids only.
use std::os::unix::fs::MetadataExt;

use super::GlobalOptions;
use crate::state::{self, OciState, StateDir};

/// Arguments of `skiff list`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Select one of: table or json.
    #[arg(long, short = 'f', default_value = "table")]
    pub format: String,
    /// Display only container IDs.
    #[arg(long, short = 'q')]
    pub quiet: bool,
}

/// Collect the state of every container (skipping ones that vanish meanwhile).
pub fn collect(global: &GlobalOptions) -> anyhow::Result<Vec<OciState>> {
    let mut out = Vec::new();
    let rd = match std::fs::read_dir(&global.root) {
        Ok(rd) => rd,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(out),
        Err(e) => return Err(e.into()),
    };
    let mut names: Vec<String> = rd
        .filter_map(|e| e.ok())
        .filter(|e| e.file_type().map(|t| t.is_dir()).unwrap_or(false))
        .filter_map(|e| e.file_name().into_string().ok())
        .collect();
    names.sort();
    for id in names {
        let Ok(dir) = StateDir::open(&global.root, &id) else {
            continue;
        };
        let Ok(st) = dir.load() else { continue };
        let mut oci = st.oci(st.status(&dir));
        let uid = std::fs::metadata(&dir.path).map(|m| m.uid()).unwrap_or(0);
        oci.owner = state::user_name(uid);
        out.push(oci);
    }
    Ok(out)
}

/// Run `skiff list`; returns the exit code.
pub fn run(global: &GlobalOptions, args: Args) -> anyhow::Result<i32> {
    let all = collect(global)?;
    if args.quiet {
        for s in &all {
            println!("{}", s.id);
        }
        return Ok(0);
    }
    match args.format.as_str() {
        "json" => {
            println!("{}", serde_json::to_string(&all)?);
        }
        "table" => print!("{}", table(&all)),
        other => anyhow::bail!("invalid format option {other:?}"),
    }
    Ok(0)
}

/// runc's tabwriter layout: columns padded to the widest cell plus 3 spaces, min width 12.
fn table(all: &[OciState]) -> String {
    let mut rows = vec![vec![
        "ID".to_string(),
        "PID".into(),
        "STATUS".into(),
        "BUNDLE".into(),
        "CREATED".into(),
        "OWNER".into(),
    ]];
    for s in all {
        rows.push(vec![
            s.id.clone(),
            s.pid.to_string(),
            s.status.clone(),
            s.bundle.display().to_string(),
            s.created.clone(),
            s.owner.clone(),
        ]);
    }
    let ncol = rows[0].len();
    let widths: Vec<usize> = (0..ncol)
        .map(|c| rows.iter().map(|r| r[c].len()).max().unwrap_or(0))
        .collect();
    let mut out = String::new();
    for r in &rows {
        let mut line = String::new();
        for (c, cell) in r.iter().enumerate() {
            if c + 1 == ncol {
                line.push_str(cell);
            } else {
                let w = (widths[c] + 3).max(12);
                line.push_str(&format!("{cell:<w$}"));
            }
        }
        out.push_str(&line);
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_table_header_matches_runc() {
        assert_eq!(
            table(&[]),
            "ID          PID         STATUS      BUNDLE      CREATED     OWNER\n"
        );
    }
}
