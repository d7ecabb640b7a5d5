//! cgroup v2 (unified): `linux.resources` converted to cgroup2 files as runc's fs2 driver does.
use std::path::Path;
use std::time::{Duration, Instant};

use oci_spec::runtime::{LinuxRdma, LinuxResources};

use super::{bpf, fs, CgroupError, DeviceRule};

fn invalid(msg: String) -> CgroupError {
    CgroupError::Invalid(msg)
}

/// Host-independent v2 checks (things v2 cannot express).
pub fn validate(r: &LinuxResources) -> Result<(), CgroupError> {
    if let Some(cpu) = r.cpu() {
        if cpu.realtime_runtime().is_some_and(|v| v != 0)
            || cpu.realtime_period().is_some_and(|v| v != 0)
        {
            return Err(invalid(
                "linux.resources.cpu.realtimeRuntime/realtimePeriod: real-time scheduling limits are not supported on cgroup v2".into(),
            ));
        }
    }
    if let Some(n) = r.network() {
        if n.class_id().is_some_and(|c| c != 0)
            || n.priorities().as_ref().is_some_and(|p| !p.is_empty())
        {
            return Err(invalid(
                "linux.resources.network: net_cls/net_prio do not exist on cgroup v2".into(),
            ));
        }
    }
    if let Some(m) = r.memory() {
        swap_v2(m.swap().unwrap_or(0), m.limit().unwrap_or(0))?;
    }
    Ok(())
}

/// runc's shares (2..262144) to cpu.weight (1..10000) conversion.
pub fn shares_to_weight(shares: u64) -> u64 {
    if shares == 0 {
        return 0;
    }
    1 + (shares.saturating_sub(2) * 9999) / 262142
}

/// runc's blkio weight (10..1000) to io.weight (1..10000) conversion.
pub fn blkio_to_io_weight(w: u16) -> u64 {
    if w == 0 {
        return 0;
    }
    1 + (u64::from(w).saturating_sub(10)) * 9999 / 990
}

/// OCI memory.swap is memory+swap; cgroup2's memory.swap.max is swap alone.
pub fn swap_v2(swap: i64, memory: i64) -> Result<i64, CgroupError> {
    if memory == -1 && swap == 0 {
        return Ok(-1);
    }
    if swap == -1 || swap == 0 {
        return Ok(swap);
    }
    if memory == 0 || memory == -1 {
        return Err(invalid(
            "linux.resources.memory.swap: unable to set a swap limit without a memory limit".into(),
        ));
    }
    if swap < memory {
        return Err(invalid(format!(
            "linux.resources.memory.swap ({swap}) must be >= memory.limit ({memory}): swap is the memory+swap limit"
        )));
    }
    Ok(swap - memory)
}

fn num(v: i64) -> String {
    if v < 0 {
        "max".into()
    } else {
        v.to_string()
    }
}

/// `dev hca_handle=N hca_object=M` for rdma.max.
pub fn rdma_line(dev: &str, l: &LinuxRdma) -> String {
    let mut s = dev.to_string();
    if let Some(h) = l.hca_handles() {
        s.push_str(&format!(" hca_handle={h}"));
    }
    if let Some(o) = l.hca_objects() {
        s.push_str(&format!(" hca_object={o}"));
    }
    s
}

/// Enable the available controllers in every ancestor of `dir` below `root` (`+cpu +memory ...`).
///
/// With `only`, just those controllers (used on hybrid hosts for hugetlb).
pub fn enable_controllers(
    root: &Path,
    dir: &Path,
    only: Option<&[&str]>,
) -> Result<(), CgroupError> {
    let Ok(rel) = dir.strip_prefix(root) else {
        return Ok(());
    };
    let mut cur = root.to_path_buf();
    let comps: Vec<_> = rel.components().collect();
    // Every ancestor from the root down to the leaf's parent delegates to its children.
    for comp in comps {
        let available = fs::read(&cur, "cgroup.controllers")?;
        let wanted: Vec<&str> = available
            .split_whitespace()
            .filter(|c| only.is_none_or(|o| o.contains(c)))
            .collect();
        if !wanted.is_empty() {
            let line = wanted
                .iter()
                .map(|c| format!("+{c}"))
                .collect::<Vec<_>>()
                .join(" ");
            if fs::write(&cur, "cgroup.subtree_control", &line).is_err() {
                // One by one, so a controller that cannot be enabled does not block the rest.
                for c in &wanted {
                    let r = fs::write(&cur, "cgroup.subtree_control", &format!("+{c}"));
                    if r.is_err() && only.is_some() {
                        return r;
                    }
                }
            }
        }
        cur.push(comp);
    }
    Ok(())
}

/// Write every given resource into cgroup2 directory `dir`.
pub fn set(
    dir: &Path,
    r: &LinuxResources,
    rules: Option<&[DeviceRule]>,
) -> Result<(), CgroupError> {
    if let Some(cpu) = r.cpu() {
        if let Some(w) = cpu.shares().map(shares_to_weight).filter(|w| *w != 0) {
            fs::write(dir, "cpu.weight", &w.to_string())?;
        }
        let quota = cpu.quota().unwrap_or(0);
        let period = cpu.period().unwrap_or(0);
        if quota != 0 || period != 0 {
            let mut s = if quota > 0 {
                quota.to_string()
            } else {
                "max".to_string()
            };
            if period != 0 {
                s.push_str(&format!(" {period}"));
            }
            fs::write(dir, "cpu.max", &s)?;
        }
        if let Some(b) = cpu.burst() {
            fs::write(dir, "cpu.max.burst", &b.to_string())?;
        }
        if let Some(idle) = cpu.idle() {
            fs::write(dir, "cpu.idle", &idle.to_string())?;
        }
        if let Some(c) = cpu.cpus().as_deref().filter(|s| !s.is_empty()) {
            fs::write(dir, "cpuset.cpus", c)?;
        }
        if let Some(c) = cpu.mems().as_deref().filter(|s| !s.is_empty()) {
            fs::write(dir, "cpuset.mems", c)?;
        }
    }
    if let Some(m) = r.memory() {
        let limit = m.limit().unwrap_or(0);
        let swap = swap_v2(m.swap().unwrap_or(0), limit)?;
        if m.check_before_update() == Some(true) && limit > 0 {
            let usage = fs::read_u64(dir, "memory.current")?;
            if (limit as u64) < usage {
                return Err(invalid(format!(
                    "linux.resources.memory.limit: rejecting memory limit {limit} below the current usage {usage} (checkBeforeUpdate)"
                )));
            }
        }
        if swap != 0 {
            let s = num(swap);
            if let Err(e) = fs::write(dir, "memory.swap.max", &s) {
                let enoent = matches!(&e, CgroupError::Io { source, .. } if source.kind() == std::io::ErrorKind::NotFound);
                // Without swap accounting, "unlimited" and "none" are already true.
                if !(enoent && (s == "max" || s == "0")) {
                    return Err(e);
                }
            }
        }
        if limit != 0 {
            fs::write(dir, "memory.max", &num(limit))?;
        }
        if let Some(res) = m.reservation().filter(|v| *v != 0) {
            fs::write(dir, "memory.low", &num(res))?;
        }
        if m.swappiness().is_some() {
            tracing::warn!("memory.swappiness is not supported on cgroup v2; ignored");
        }
        if m.disable_oom_killer() == Some(true) {
            tracing::warn!("memory.disableOOMKiller is not supported on cgroup v2; ignored");
        }
    }
    if let Some(p) = r.pids() {
        if p.limit() != 0 {
            fs::write(dir, "pids.max", &num(p.limit()))?;
        }
    }
    if let Some(b) = r.block_io() {
        let bfq = dir.join("io.bfq.weight").exists();
        if let Some(w) = b.weight().filter(|w| *w != 0) {
            if bfq {
                fs::write(dir, "io.bfq.weight", &w.to_string())?;
            } else {
                fs::write(dir, "io.weight", &blkio_to_io_weight(w).to_string())?;
            }
        }
        for d in b.weight_device().iter().flatten() {
            if let Some(w) = d.weight() {
                let line = format!("{}:{} {}", d.major(), d.minor(), w);
                if bfq {
                    fs::write(dir, "io.bfq.weight", &line)?;
                } else {
                    let line = format!("{}:{} {}", d.major(), d.minor(), blkio_to_io_weight(w));
                    fs::write(dir, "io.weight", &line)?;
                }
            }
        }
        for (key, list) in [
            ("rbps", b.throttle_read_bps_device()),
            ("wbps", b.throttle_write_bps_device()),
            ("riops", b.throttle_read_iops_device()),
            ("wiops", b.throttle_write_iops_device()),
        ] {
            for d in list.iter().flatten() {
                let rate = if d.rate() == 0 {
                    "max".to_string()
                } else {
                    d.rate().to_string()
                };
                fs::write(
                    dir,
                    "io.max",
                    &format!("{}:{} {key}={rate}", d.major(), d.minor()),
                )?;
            }
        }
    }
    for h in r.hugepage_limits().iter().flatten() {
        fs::write(
            dir,
            &format!("hugetlb.{}.max", h.page_size()),
            &num(h.limit()),
        )?;
    }
    for (dev, l) in r.rdma().iter().flatten() {
        fs::write(dir, "rdma.max", &rdma_line(dev, l))?;
    }
    if let Some(rules) = rules {
        bpf::attach_device_filter(dir, rules)?;
    }
    if let Some(u) = r.unified() {
        // Unified entries win over the fields above: written last.
        let mut keys: Vec<_> = u.iter().collect();
        keys.sort();
        for (k, v) in keys {
            if let Err(e) = fs::write(dir, k, v) {
                let enoent = matches!(&e, CgroupError::Io { source, .. } if source.kind() == std::io::ErrorKind::NotFound);
                if enoent {
                    let ctrl = k.split('.').next().unwrap_or_default();
                    return Err(invalid(format!(
                        "linux.resources.unified[{k:?}]: no such cgroup file (is the {ctrl} controller available?)"
                    )));
                }
                return Err(e);
            }
        }
    }
    Ok(())
}

/// Freeze or thaw through cgroup.freeze, waiting (bounded) until cgroup.events agrees.
pub fn set_frozen(dir: &Path, frozen: bool) -> Result<(), CgroupError> {
    let want = if frozen { "1" } else { "0" };
    fs::write(dir, "cgroup.freeze", want)?;
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if fs::keyed_value(dir, "cgroup.events", "frozen").to_string() == want {
            return Ok(());
        }
        if Instant::now() > deadline {
            if frozen {
                let _ = fs::write(dir, "cgroup.freeze", "0");
            }
            return Err(invalid(format!(
                "{}: the freeze did not complete within 10s",
                dir.display()
            )));
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conversions_match_runc() {
        assert_eq!(shares_to_weight(1024), 39);
        assert_eq!(shares_to_weight(2), 1);
        assert_eq!(shares_to_weight(262144), 10000);
        assert_eq!(blkio_to_io_weight(10), 1);
        assert_eq!(blkio_to_io_weight(1000), 10000);
        assert_eq!(blkio_to_io_weight(500), 1 + 490 * 9999 / 990);
        assert_eq!(swap_v2(0, -1).ok(), Some(-1));
        assert_eq!(swap_v2(200, 100).ok(), Some(100));
        assert!(swap_v2(50, 100).is_err());
        assert!(swap_v2(50, 0).is_err());
    }
}
