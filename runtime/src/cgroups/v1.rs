//! cgroup v1 (and hybrid): `linux.resources` written to the per-controller hierarchies as runc does.
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use oci_spec::runtime::LinuxResources;

use super::{devices, fs, v2, CgroupError, CgroupManager, DeviceRule, Version};

fn invalid(msg: String) -> CgroupError {
    CgroupError::Invalid(msg)
}

/// Checks that do not depend on the host: signs and ranges of the values.
pub fn validate_common(r: &LinuxResources) -> Result<(), CgroupError> {
    if let Some(cpu) = r.cpu() {
        if let Some(q) = cpu.quota() {
            if q < -1 {
                return Err(invalid(format!(
                    "linux.resources.cpu.quota: invalid value {q} (want -1 for unlimited or a positive number of microseconds)"
                )));
            }
        }
        if let Some(rt) = cpu.realtime_runtime() {
            if rt < -1 {
                return Err(invalid(format!(
                    "linux.resources.cpu.realtimeRuntime: invalid value {rt}"
                )));
            }
        }
        if let Some(idle) = cpu.idle() {
            if idle != 0 && idle != 1 {
                return Err(invalid(format!(
                    "linux.resources.cpu.idle: invalid value {idle} (want 0 or 1)"
                )));
            }
        }
    }
    if let Some(m) = r.memory() {
        for (name, v) in [
            ("limit", m.limit()),
            ("reservation", m.reservation()),
            ("swap", m.swap()),
            ("kernelTCP", m.kernel_tcp()),
        ] {
            if let Some(v) = v {
                if v < -1 {
                    return Err(invalid(format!(
                        "linux.resources.memory.{name}: invalid value {v} (want -1 for unlimited or a number of bytes)"
                    )));
                }
            }
        }
        if let Some(s) = m.swappiness() {
            if s > 100 {
                return Err(invalid(format!(
                    "linux.resources.memory.swappiness: invalid value {s} (valid range is 0-100)"
                )));
            }
        }
        if let (Some(l), Some(s)) = (m.limit(), m.swap()) {
            if l > 0 && s > 0 && s < l {
                return Err(invalid(format!(
                    "linux.resources.memory.swap ({s}) must be >= memory.limit ({l}): swap is the memory+swap limit"
                )));
            }
        }
    }
    if let Some(b) = r.block_io() {
        for (name, w) in [("weight", b.weight()), ("leafWeight", b.leaf_weight())] {
            if let Some(w) = w {
                if w != 0 && !(10..=1000).contains(&w) {
                    return Err(invalid(format!(
                        "linux.resources.blockIO.{name}: invalid value {w} (valid range is 10-1000)"
                    )));
                }
            }
        }
        for d in b.weight_device().iter().flatten() {
            if d.major() < 0 || d.minor() < 0 {
                return Err(invalid(
                    "linux.resources.blockIO.weightDevice: negative device number".into(),
                ));
            }
        }
        for list in [
            b.throttle_read_bps_device(),
            b.throttle_write_bps_device(),
            b.throttle_read_iops_device(),
            b.throttle_write_iops_device(),
        ] {
            for d in list.iter().flatten() {
                if d.major() < 0 || d.minor() < 0 {
                    return Err(invalid(
                        "linux.resources.blockIO throttle: negative device number".into(),
                    ));
                }
            }
        }
    }
    for h in r.hugepage_limits().iter().flatten() {
        let ps = h.page_size();
        if ps.is_empty() || !ps.chars().all(|c| c.is_ascii_alphanumeric()) {
            return Err(invalid(format!(
                "linux.resources.hugepageLimits: invalid pageSize {ps:?}"
            )));
        }
        if h.limit() < -1 {
            return Err(invalid(format!(
                "linux.resources.hugepageLimits[{ps}].limit: invalid value {}",
                h.limit()
            )));
        }
    }
    for d in r.devices().iter().flatten() {
        DeviceRule::from_spec(d)?;
    }
    if let Some(rdma) = r.rdma() {
        for dev in rdma.keys() {
            if dev.is_empty() || dev.contains(char::is_whitespace) {
                return Err(invalid(format!(
                    "linux.resources.rdma: invalid device name {dev:?}"
                )));
            }
        }
    }
    if let Some(u) = r.unified() {
        for k in u.keys() {
            if k.is_empty() || k.contains('/') || k.starts_with('.') || !k.contains('.') {
                return Err(invalid(format!(
                    "linux.resources.unified: invalid key {k:?} (want a cgroup2 file name like memory.high)"
                )));
            }
            // Core files would move or kill processes or change the tree: only limits are allowed.
            if k.starts_with("cgroup.") && k != "cgroup.max.depth" && k != "cgroup.max.descendants"
            {
                return Err(invalid(format!(
                    "linux.resources.unified: key {k:?} is not a resource limit and cannot be set"
                )));
            }
        }
    }
    Ok(())
}

/// Checks that the controllers the resources need exist on this (v1 or hybrid) host.
pub fn validate_host(m: &CgroupManager, r: &LinuxResources) -> Result<(), CgroupError> {
    if r.unified().as_ref().is_some_and(|u| !u.is_empty()) {
        return Err(invalid(
            "linux.resources.unified: cgroup v2 key/values cannot be used on this cgroup v1 host"
                .into(),
        ));
    }
    let need = |ctrl: &str, field: &str| -> Result<(), CgroupError> {
        if m.dir_for(ctrl).is_none() {
            return Err(invalid(format!(
                "linux.resources.{field}: the {ctrl} cgroup controller is not mounted on this host"
            )));
        }
        Ok(())
    };
    if let Some(n) = r.network() {
        if n.class_id().is_some_and(|c| c != 0) {
            need("net_cls", "network.classID")?;
        }
        if n.priorities().as_ref().is_some_and(|p| !p.is_empty()) {
            need("net_prio", "network.priorities")?;
        }
    }
    if r.rdma().as_ref().is_some_and(|x| !x.is_empty()) {
        need("rdma", "rdma")?;
    }
    if r.hugepage_limits().as_ref().is_some_and(|h| !h.is_empty())
        && m.dir_for("hugetlb").is_none()
        && !hybrid_hugetlb(m)
    {
        return Err(invalid(
            "linux.resources.hugepageLimits: the hugetlb cgroup controller is not available on this host"
                .into(),
        ));
    }
    Ok(())
}

/// On a hybrid host without a v1 hugetlb hierarchy, hugetlb may live in the cgroup2 tree.
pub fn hybrid_hugetlb(m: &CgroupManager) -> bool {
    if m.version() != Version::Hybrid || m.dir_for("hugetlb").is_some() {
        return false;
    }
    let Some(root) = m.unified_root_opt() else {
        return false;
    };
    fs::read(&root, "cgroup.controllers")
        .map(|c| c.split_whitespace().any(|x| x == "hugetlb"))
        .unwrap_or(false)
}

/// New cpuset cgroups start with empty cpus/mems, which forbids tasks: copy them from the parent.
pub fn init_cpuset(new_dirs: &[PathBuf]) -> Result<(), CgroupError> {
    for d in new_dirs {
        let Some(parent) = d.parent() else { continue };
        for f in ["cpuset.cpus", "cpuset.mems"] {
            let cur = fs::read(d, f)?;
            if cur.trim().is_empty() {
                let p = fs::read(parent, f)?;
                fs::write(d, f, p.trim())?;
            }
        }
    }
    Ok(())
}

/// Write every given resource; `rules` None leaves the device rules untouched.
pub fn set(
    m: &CgroupManager,
    r: &LinuxResources,
    rules: Option<&[DeviceRule]>,
) -> Result<(), CgroupError> {
    if let Some(cpu) = r.cpu() {
        if let Some(dir) = m.dir_for("cpu") {
            set_cpu(dir, cpu)?;
        }
        if let Some(dir) = m.dir_for("cpuset") {
            if let Some(c) = cpu.cpus().as_deref().filter(|s| !s.is_empty()) {
                fs::write(dir, "cpuset.cpus", c)?;
            }
            if let Some(c) = cpu.mems().as_deref().filter(|s| !s.is_empty()) {
                fs::write(dir, "cpuset.mems", c)?;
            }
        }
    }
    if let Some(mem) = r.memory() {
        if let Some(dir) = m.dir_for("memory") {
            set_memory(dir, mem)?;
        } else if mem.limit().is_some_and(|l| l > 0) {
            return Err(invalid(
                "linux.resources.memory: the memory cgroup controller is not mounted".into(),
            ));
        }
    }
    if let Some(p) = r.pids() {
        if p.limit() != 0 {
            let dir = m.dir_for("pids").ok_or_else(|| {
                invalid("linux.resources.pids: the pids controller is not mounted".into())
            })?;
            fs::write(dir, "pids.max", &limit_str(p.limit()))?;
        }
    }
    if let Some(b) = r.block_io() {
        if let Some(dir) = m.dir_for("blkio") {
            set_blkio(dir, b)?;
        }
    }
    if let Some(h) = r.hugepage_limits() {
        if let Some(dir) = m.dir_for("hugetlb") {
            for l in h {
                fs::write(
                    dir,
                    &format!("hugetlb.{}.limit_in_bytes", l.page_size()),
                    &l.limit().to_string(),
                )?;
            }
        } else if let Some(dir) = m.unified_dir().filter(|_| !h.is_empty()) {
            for l in h {
                fs::write(
                    dir,
                    &format!("hugetlb.{}.max", l.page_size()),
                    &limit_str(l.limit()),
                )?;
            }
        }
    }
    if let Some(n) = r.network() {
        if let Some(c) = n.class_id().filter(|c| *c != 0) {
            if let Some(dir) = m.dir_for("net_cls") {
                fs::write(dir, "net_cls.classid", &c.to_string())?;
            }
        }
        if let Some(dir) = m.dir_for("net_prio") {
            for p in n.priorities().iter().flatten() {
                fs::write(
                    dir,
                    "net_prio.ifpriomap",
                    &format!("{} {}", p.name(), p.priority()),
                )?;
            }
        }
    }
    if let (Some(rdma), Some(dir)) = (r.rdma(), m.dir_for("rdma")) {
        for (dev, lim) in rdma {
            fs::write(dir, "rdma.max", &v2::rdma_line(dev, lim))?;
        }
    }
    if let (Some(rules), Some(dir)) = (rules, m.dir_for("devices")) {
        devices::set_v1(dir, rules)?;
    }
    Ok(())
}

/// "max" for negative (unlimited) limits, the number otherwise.
fn limit_str(v: i64) -> String {
    if v < 0 {
        "max".into()
    } else {
        v.to_string()
    }
}

fn set_cpu(dir: &Path, cpu: &oci_spec::runtime::LinuxCpu) -> Result<(), CgroupError> {
    if let Some(shares) = cpu.shares().filter(|s| *s != 0) {
        fs::write(dir, "cpu.shares", &shares.to_string())?;
        let got = fs::read_u64(dir, "cpu.shares")?;
        if got < shares {
            return Err(invalid(format!(
                "linux.resources.cpu.shares: the maximum allowed cpu-shares is {got}"
            )));
        } else if got > shares {
            return Err(invalid(format!(
                "linux.resources.cpu.shares: the minimum allowed cpu-shares is {got}"
            )));
        }
    }
    // Real-time limits first: the kernel checks them against the parent's budget.
    if let Some(p) = cpu.realtime_period().filter(|p| *p != 0) {
        fs::write(dir, "cpu.rt_period_us", &p.to_string())?;
    }
    if let Some(rt) = cpu.realtime_runtime().filter(|r| *r != 0) {
        fs::write(dir, "cpu.rt_runtime_us", &rt.to_string())?;
    }
    let quota = cpu.quota().unwrap_or(0);
    let mut period_pending = None;
    if let Some(period) = cpu.period().filter(|p| *p != 0) {
        if let Err(e) = fs::write(dir, "cpu.cfs_period_us", &period.to_string()) {
            // A smaller period can be refused until the quota is lowered; retry after it.
            let einval = matches!(&e, CgroupError::Io { source, .. } if source.raw_os_error() == Some(libc::EINVAL));
            if !einval || quota == 0 {
                return Err(e);
            }
            period_pending = Some(period);
        }
    }
    if quota != 0 {
        fs::write(dir, "cpu.cfs_quota_us", &quota.to_string())?;
        if let Some(period) = period_pending {
            fs::write(dir, "cpu.cfs_period_us", &period.to_string())?;
        }
    }
    if let Some(burst) = cpu.burst() {
        fs::write(dir, "cpu.cfs_burst_us", &burst.to_string())?;
    }
    if let Some(idle) = cpu.idle() {
        fs::write(dir, "cpu.idle", &idle.to_string())?;
    }
    Ok(())
}

fn set_memory(dir: &Path, mem: &oci_spec::runtime::LinuxMemory) -> Result<(), CgroupError> {
    let limit = mem.limit().unwrap_or(0);
    let mut swap = mem.swap().unwrap_or(0);
    let has_swap = dir.join("memory.memsw.limit_in_bytes").exists();
    if limit == -1 && swap == 0 && has_swap {
        swap = -1;
    }
    if mem.check_before_update() == Some(true) && limit > 0 {
        let usage = fs::read_u64(dir, "memory.usage_in_bytes")?;
        if (limit as u64) < usage {
            return Err(invalid(format!(
                "linux.resources.memory.limit: rejecting memory limit {limit} below the current usage {usage} (checkBeforeUpdate)"
            )));
        }
    }
    let set_limit = || -> Result<(), CgroupError> {
        if limit != 0 {
            fs::write(dir, "memory.limit_in_bytes", &limit.to_string()).map_err(|e| {
                match &e {
                    CgroupError::Io { source, .. } if source.raw_os_error() == Some(libc::EBUSY) => {
                        let usage = fs::read_u64(dir, "memory.usage_in_bytes").unwrap_or(0);
                        let max = fs::read_u64(dir, "memory.max_usage_in_bytes").unwrap_or(0);
                        invalid(format!(
                            "unable to set memory limit to {limit} (current usage: {usage}, peak usage: {max})"
                        ))
                    }
                    _ => e,
                }
            })?;
        }
        Ok(())
    };
    let set_swap = || -> Result<(), CgroupError> {
        if swap != 0 {
            if !has_swap {
                return Err(invalid(
                    "linux.resources.memory.swap: swap accounting (memory.memsw) is not enabled on this host"
                        .into(),
                ));
            }
            fs::write(dir, "memory.memsw.limit_in_bytes", &swap.to_string())?;
        }
        Ok(())
    };
    // memsw must stay >= the memory limit at every step: order the writes accordingly.
    let mut swap_first = false;
    if limit != 0 && swap != 0 {
        let cur = fs::read_u64(dir, "memory.limit_in_bytes")?;
        swap_first = swap == -1 || cur < swap as u64;
    }
    if swap_first {
        set_swap()?;
        set_limit()?;
    } else {
        set_limit()?;
        set_swap()?;
    }
    if let Some(res) = mem.reservation().filter(|r| *r != 0) {
        fs::write(dir, "memory.soft_limit_in_bytes", &res.to_string())?;
    }
    if let Some(tcp) = mem.kernel_tcp().filter(|r| *r != 0) {
        fs::write(dir, "memory.kmem.tcp.limit_in_bytes", &tcp.to_string())?;
    }
    if let Some(s) = mem.swappiness() {
        fs::write(dir, "memory.swappiness", &s.to_string())?;
    }
    if mem.disable_oom_killer() == Some(true) {
        fs::write(dir, "memory.oom_control", "1")?;
    }
    Ok(())
}

fn set_blkio(dir: &Path, b: &oci_spec::runtime::LinuxBlockIo) -> Result<(), CgroupError> {
    let (weight_file, weight_dev_file) = if dir.join("blkio.weight").exists() {
        ("blkio.weight", "blkio.weight_device")
    } else {
        ("blkio.bfq.weight", "blkio.bfq.weight_device")
    };
    if let Some(w) = b.weight().filter(|w| *w != 0) {
        fs::write(dir, weight_file, &w.to_string())?;
    }
    if let Some(w) = b.leaf_weight().filter(|w| *w != 0) {
        fs::write(dir, "blkio.leaf_weight", &w.to_string())?;
    }
    for d in b.weight_device().iter().flatten() {
        if let Some(w) = d.weight() {
            fs::write(
                dir,
                weight_dev_file,
                &format!("{}:{} {}", d.major(), d.minor(), w),
            )?;
        }
        if let Some(w) = d.leaf_weight() {
            fs::write(
                dir,
                "blkio.leaf_weight_device",
                &format!("{}:{} {}", d.major(), d.minor(), w),
            )?;
        }
    }
    for (file, list) in [
        (
            "blkio.throttle.read_bps_device",
            b.throttle_read_bps_device(),
        ),
        (
            "blkio.throttle.write_bps_device",
            b.throttle_write_bps_device(),
        ),
        (
            "blkio.throttle.read_iops_device",
            b.throttle_read_iops_device(),
        ),
        (
            "blkio.throttle.write_iops_device",
            b.throttle_write_iops_device(),
        ),
    ] {
        for d in list.iter().flatten() {
            fs::write(
                dir,
                file,
                &format!("{}:{} {}", d.major(), d.minor(), d.rate()),
            )?;
        }
    }
    Ok(())
}

/// Freeze or thaw through freezer.state, waiting (bounded) for the transition to finish.
pub fn set_frozen(dir: &Path, frozen: bool) -> Result<(), CgroupError> {
    let want = if frozen { "FROZEN" } else { "THAWED" };
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut i = 0u32;
    loop {
        // Re-writing FROZEN nudges tasks that were mid-fork when the freeze started.
        if i.is_multiple_of(10) {
            fs::write(dir, "freezer.state", want)?;
        }
        let state = fs::read(dir, "freezer.state")?;
        if state.trim() == want {
            return Ok(());
        }
        if Instant::now() > deadline {
            if frozen {
                let _ = fs::write(dir, "freezer.state", "THAWED");
            }
            return Err(invalid(format!(
                "{}: still {} after 10s (wanted {want})",
                dir.join("freezer.state").display(),
                state.trim()
            )));
        }
        i += 1;
        std::thread::sleep(Duration::from_millis(if i < 10 { 1 } else { 10 }));
    }
}
