//! Reading and writing cgroupfs control files with errors that name the file and the value.
use std::io::Write;
use std::path::{Path, PathBuf};

use super::CgroupError;

/// Write `value` to control file `name` in `dir` (one write(2), as the kernel expects).
pub fn write(dir: &Path, name: &str, value: &str) -> Result<(), CgroupError> {
    let path = dir.join(name);
    let result = std::fs::OpenOptions::new()
        .write(true)
        .truncate(false)
        .open(&path)
        .and_then(|mut f| f.write_all(value.as_bytes()));
    result.map_err(|source| CgroupError::Io {
        path: format!("{} (writing {:?})", path.display(), value),
        source,
    })
}

/// Read control file `name` in `dir`.
pub fn read(dir: &Path, name: &str) -> Result<String, CgroupError> {
    let path = dir.join(name);
    std::fs::read_to_string(&path).map_err(|source| CgroupError::Io {
        path: path.display().to_string(),
        source,
    })
}

/// Read a control file holding one unsigned number (`max` reads as u64::MAX).
pub fn read_u64(dir: &Path, name: &str) -> Result<u64, CgroupError> {
    let text = read(dir, name)?;
    parse_u64(text.trim()).ok_or_else(|| {
        CgroupError::Invalid(format!(
            "{}: unexpected content {:?}",
            dir.join(name).display(),
            text.trim()
        ))
    })
}

/// Parse a cgroup number, where `max` means unlimited.
pub fn parse_u64(s: &str) -> Option<u64> {
    if s == "max" {
        return Some(u64::MAX);
    }
    s.parse().ok()
}

/// Parse `key value` lines (memory.stat, cpu.stat, memory.events, ...) into pairs.
pub fn read_keyed(dir: &Path, name: &str) -> Result<Vec<(String, u64)>, CgroupError> {
    let text = read(dir, name)?;
    Ok(text
        .lines()
        .filter_map(|l| {
            let (k, v) = l.split_once(' ')?;
            Some((k.to_string(), parse_u64(v.trim())?))
        })
        .collect())
}

/// Look up one key of a keyed file, 0 when absent or unreadable.
pub fn keyed_value(dir: &Path, name: &str, key: &str) -> u64 {
    read_keyed(dir, name)
        .ok()
        .and_then(|v| v.into_iter().find(|(k, _)| k == key).map(|(_, v)| v))
        .unwrap_or(0)
}

/// `mkdir -p` that returns the directories it actually created, outermost first.
pub fn create_dirs(dir: &Path) -> Result<Vec<PathBuf>, CgroupError> {
    let mut missing = Vec::new();
    let mut cur = Some(dir);
    while let Some(d) = cur {
        if d.exists() {
            break;
        }
        missing.push(d.to_path_buf());
        cur = d.parent();
    }
    missing.reverse();
    let mut created = Vec::new();
    for d in missing {
        match std::fs::create_dir(&d) {
            Ok(()) => created.push(d),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(source) => {
                remove_dirs(&created);
                return Err(CgroupError::Io {
                    path: d.display().to_string(),
                    source,
                });
            }
        }
    }
    Ok(created)
}

/// Remove cgroup directories innermost first, retrying briefly while exiting tasks leave (EBUSY).
pub fn remove_dirs(dirs: &[PathBuf]) -> Option<CgroupError> {
    let mut first_err = None;
    for d in dirs.iter().rev() {
        if let Err(e) = remove_dir(d) {
            first_err.get_or_insert(e);
        }
    }
    first_err
}

/// rmdir one cgroup (its sub-cgroups first), tolerating it being gone already.
pub fn remove_dir(dir: &Path) -> Result<(), CgroupError> {
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.flatten() {
            if e.file_type().map(|t| t.is_dir()).unwrap_or(false) {
                remove_dir(&e.path())?;
            }
        }
    }
    let mut last = None;
    for attempt in 0..50u32 {
        match std::fs::remove_dir(dir) {
            Ok(()) => return Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) if e.raw_os_error() == Some(libc::EBUSY) => {
                last = Some(e);
                std::thread::sleep(std::time::Duration::from_millis(
                    (2 * u64::from(attempt + 1)).min(20),
                ));
            }
            Err(e) => {
                last = Some(e);
                break;
            }
        }
    }
    Err(CgroupError::Io {
        path: format!("{} (removing)", dir.display()),
        source: last.unwrap_or_else(|| std::io::Error::from_raw_os_error(libc::EBUSY)),
    })
}

/// The pids listed in `cgroup.procs` of `dir` and of every cgroup below it.
pub fn procs_recursive(dir: &Path, out: &mut Vec<i32>) -> Result<(), CgroupError> {
    let text = read(dir, "cgroup.procs")?;
    out.extend(text.lines().filter_map(|l| l.trim().parse::<i32>().ok()));
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.flatten() {
            if e.file_type().map(|t| t.is_dir()).unwrap_or(false) {
                procs_recursive(&e.path(), out)?;
            }
        }
    }
    Ok(())
}
