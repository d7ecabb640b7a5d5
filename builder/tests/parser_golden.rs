//! Golden tests of the Dockerfile parser: each `fixtures/NAME.Dockerfile` parses to the typed
//! instructions in `fixtures/NAME.json`; each `fixtures/errors/NAME.Dockerfile` fails with the
//! message in `fixtures/errors/NAME.err`. Set `UPDATE_GOLDEN=1` to rewrite the expectations.

#![allow(clippy::unwrap_used)]

use std::fs;
use std::path::{Path, PathBuf};

fn fixtures(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = fs::read_dir(dir)
        .expect("fixtures dir")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "Dockerfile"))
        .collect();
    v.sort();
    v
}

fn update() -> bool {
    std::env::var_os("UPDATE_GOLDEN").is_some()
}

#[test]
fn golden_parses() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
    let mut failures = Vec::new();
    let files = fixtures(&dir);
    assert!(!files.is_empty());
    for f in files {
        let name = f.file_name().unwrap().to_string_lossy().to_string();
        let src = fs::read_to_string(&f).unwrap();
        let parsed = match skiff_build::parse(&name, &src) {
            Ok(p) => p,
            Err(e) => {
                failures.push(format!("{name}: unexpected error: {e}"));
                continue;
            }
        };
        let got = serde_json::to_string_pretty(&parsed).unwrap() + "\n";
        let golden = f.with_extension("json");
        if update() {
            fs::write(&golden, &got).unwrap();
            continue;
        }
        match fs::read_to_string(&golden) {
            Ok(want) if want == got => {}
            Ok(_) => failures.push(format!(
                "{name}: output differs from {}:\n{got}",
                golden.display()
            )),
            Err(_) => failures.push(format!("{name}: missing {}", golden.display())),
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn golden_errors() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/errors");
    let mut failures = Vec::new();
    for f in fixtures(&dir) {
        let name = f.file_name().unwrap().to_string_lossy().to_string();
        let src = fs::read_to_string(&f).unwrap();
        let got = match skiff_build::parse(&name, &src) {
            Ok(p) => {
                failures.push(format!("{name}: parsed but should fail: {p:?}"));
                continue;
            }
            Err(e) => format!("{e}\n"),
        };
        assert!(
            got.starts_with(&format!("{name}:")),
            "error must name the file: {got}"
        );
        let golden = f.with_extension("err");
        if update() {
            fs::write(&golden, &got).unwrap();
            continue;
        }
        match fs::read_to_string(&golden) {
            Ok(want) if want == got => {}
            Ok(want) => failures.push(format!("{name}: want {want:?}, got {got:?}")),
            Err(_) => failures.push(format!("{name}: missing {}", golden.display())),
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
