//! Resource usage in runc's `events` JSON shape (cpu, cpuset, memory, pids, blkio, hugetlb).
use std::collections::BTreeMap;
use std::path::Path;

use serde::Serialize;

use super::{fs, CgroupError, CgroupManager, Version};

fn is_zero(v: &u64) -> bool {
    *v == 0
}

/// The `data` of a `{"type":"stats"}` event.
#[derive(Debug, Default, Serialize)]
pub struct Stats {
    /// CPU usage and throttling.
    pub cpu: Cpu,
    /// cpuset configuration.
    pub cpuset: Cpuset,
    /// Memory usage.
    pub memory: Memory,
    /// Process count.
    pub pids: Pids,
    /// Block I/O counters.
    pub blkio: Blkio,
    /// Per page size hugetlb usage.
    pub hugetlb: BTreeMap<String, Hugetlb>,
    /// Intel RDT (not supported: always empty).
    pub intel_rdt: BTreeMap<String, u64>,
    /// Network interfaces (runc prints null).
    pub network_interfaces: Option<Vec<u64>>,
}

/// CPU section.
#[derive(Debug, Default, Serialize)]
pub struct Cpu {
    /// Usage in nanoseconds.
    pub usage: CpuUsage,
    /// CFS throttling counters.
    pub throttling: Throttling,
}

/// CPU time used (nanoseconds).
#[derive(Debug, Default, Serialize)]
pub struct CpuUsage {
    /// Total CPU time.
    #[serde(skip_serializing_if = "is_zero")]
    pub total: u64,
    /// Per CPU total.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub percpu: Vec<u64>,
    /// Per CPU kernel time.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub percpu_kernel: Vec<u64>,
    /// Per CPU user time.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub percpu_user: Vec<u64>,
    /// Kernel time.
    pub kernel: u64,
    /// User time.
    pub user: u64,
}

/// CFS throttling counters.
#[derive(Debug, Default, Serialize)]
pub struct Throttling {
    /// Enforcement periods.
    #[serde(skip_serializing_if = "is_zero")]
    pub periods: u64,
    /// Periods in which the group was throttled.
    #[serde(rename = "throttledPeriods", skip_serializing_if = "is_zero")]
    pub throttled_periods: u64,
    /// Time throttled (ns).
    #[serde(rename = "throttledTime", skip_serializing_if = "is_zero")]
    pub throttled_time: u64,
}

/// cpuset section.
#[derive(Debug, Default, Serialize)]
pub struct Cpuset {
    /// CPUs in use.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub cpus: Vec<u16>,
    /// cpuset.cpu_exclusive.
    pub cpu_exclusive: u64,
    /// Memory nodes in use.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub mems: Vec<u16>,
    /// cpuset.mem_hardwall.
    pub mem_hardwall: u64,
    /// cpuset.mem_exclusive.
    pub mem_exclusive: u64,
    /// cpuset.memory_migrate.
    pub memory_migrate: u64,
    /// cpuset.memory_spread_page.
    pub memory_spread_page: u64,
    /// cpuset.memory_spread_slab.
    pub memory_spread_slab: u64,
    /// cpuset.memory_pressure.
    pub memory_pressure: u64,
    /// cpuset.sched_load_balance.
    pub sched_load_balance: u64,
    /// cpuset.sched_relax_domain_level.
    pub sched_relax_domain_level: i64,
}

/// One memory counter set.
#[derive(Debug, Default, Serialize)]
pub struct MemoryEntry {
    /// Limit in bytes.
    pub limit: u64,
    /// Usage in bytes.
    #[serde(skip_serializing_if = "is_zero")]
    pub usage: u64,
    /// Peak usage.
    #[serde(skip_serializing_if = "is_zero")]
    pub max: u64,
    /// Times the limit was hit.
    pub failcnt: u64,
}

/// Memory section.
#[derive(Debug, Default, Serialize)]
pub struct Memory {
    /// Page cache.
    #[serde(skip_serializing_if = "is_zero")]
    pub cache: u64,
    /// Memory usage.
    pub usage: MemoryEntry,
    /// Memory+swap usage.
    pub swap: MemoryEntry,
    /// Kernel memory.
    pub kernel: MemoryEntry,
    /// Kernel TCP memory.
    #[serde(rename = "kernelTCP")]
    pub kernel_tcp: MemoryEntry,
    /// memory.stat.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub raw: BTreeMap<String, u64>,
}

/// Pids section.
#[derive(Debug, Default, Serialize)]
pub struct Pids {
    /// Tasks in the cgroup.
    #[serde(skip_serializing_if = "is_zero")]
    pub current: u64,
    /// pids.max (0 when unlimited).
    #[serde(skip_serializing_if = "is_zero")]
    pub limit: u64,
}

/// One blkio counter.
#[derive(Debug, Default, Serialize)]
pub struct BlkioEntry {
    /// Device major.
    #[serde(skip_serializing_if = "is_zero")]
    pub major: u64,
    /// Device minor.
    #[serde(skip_serializing_if = "is_zero")]
    pub minor: u64,
    /// Read, Write, Sync, Async, Total...
    #[serde(skip_serializing_if = "String::is_empty")]
    pub op: String,
    /// Counter value.
    #[serde(skip_serializing_if = "is_zero")]
    pub value: u64,
}

/// Block I/O section.
#[derive(Debug, Default, Serialize)]
pub struct Blkio {
    /// Bytes transferred.
    #[serde(
        rename = "ioServiceBytesRecursive",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub io_service_bytes_recursive: Vec<BlkioEntry>,
    /// Operations.
    #[serde(rename = "ioServicedRecursive", skip_serializing_if = "Vec::is_empty")]
    pub io_serviced_recursive: Vec<BlkioEntry>,
}

/// One hugetlb page size.
#[derive(Debug, Default, Serialize)]
pub struct Hugetlb {
    /// Usage in bytes.
    #[serde(skip_serializing_if = "is_zero")]
    pub usage: u64,
    /// Peak usage.
    #[serde(skip_serializing_if = "is_zero")]
    pub max: u64,
    /// Allocation failures.
    pub failcnt: u64,
}

fn u(dir: &Path, name: &str) -> u64 {
    fs::read_u64(dir, name).unwrap_or(0)
}

/// Expand a cpu list like `0-2,5` into numbers.
pub fn parse_list(s: &str) -> Vec<u16> {
    let mut out = Vec::new();
    for part in s.trim().split(',').filter(|p| !p.is_empty()) {
        match part.split_once('-') {
            Some((a, b)) => {
                if let (Ok(a), Ok(b)) = (a.parse::<u16>(), b.parse::<u16>()) {
                    out.extend((a..=b).take(4096));
                }
            }
            None => {
                if let Ok(v) = part.parse() {
                    out.push(v);
                }
            }
        }
    }
    out
}

fn nums(dir: &Path, name: &str) -> Vec<u64> {
    fs::read(dir, name)
        .map(|s| {
            s.split_whitespace()
                .filter_map(|v| v.parse().ok())
                .collect()
        })
        .unwrap_or_default()
}

/// Gather the statistics of the container's cgroups.
pub fn collect(m: &CgroupManager) -> Result<Stats, CgroupError> {
    let mut st = Stats::default();
    if m.version() == Version::V2 {
        let dir = m
            .unified_dir()
            .ok_or_else(|| CgroupError::Invalid("no cgroup2 directory".into()))?;
        collect_v2(dir, &mut st)?;
        return Ok(st);
    }
    if let Some(dir) = m.dir_for("cpuacct") {
        st.cpu.usage.total = u(dir, "cpuacct.usage");
        st.cpu.usage.percpu = nums(dir, "cpuacct.usage_percpu");
        st.cpu.usage.percpu_kernel = nums(dir, "cpuacct.usage_percpu_sys");
        st.cpu.usage.percpu_user = nums(dir, "cpuacct.usage_percpu_user");
        // cpuacct.stat is in clock ticks; runc reports nanoseconds.
        // SAFETY: sysconf has no memory-safety preconditions.
        let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as u64;
        let tick_ns = 1_000_000_000 / hz;
        st.cpu.usage.user = fs::keyed_value(dir, "cpuacct.stat", "user") * tick_ns;
        st.cpu.usage.kernel = fs::keyed_value(dir, "cpuacct.stat", "system") * tick_ns;
    }
    if let Some(dir) = m.dir_for("cpu") {
        st.cpu.throttling.periods = fs::keyed_value(dir, "cpu.stat", "nr_periods");
        st.cpu.throttling.throttled_periods = fs::keyed_value(dir, "cpu.stat", "nr_throttled");
        st.cpu.throttling.throttled_time = fs::keyed_value(dir, "cpu.stat", "throttled_time");
    }
    if let Some(dir) = m.dir_for("cpuset") {
        let c = &mut st.cpuset;
        c.cpus = fs::read(dir, "cpuset.cpus")
            .map(|s| parse_list(&s))
            .unwrap_or_default();
        c.mems = fs::read(dir, "cpuset.mems")
            .map(|s| parse_list(&s))
            .unwrap_or_default();
        c.cpu_exclusive = u(dir, "cpuset.cpu_exclusive");
        c.mem_hardwall = u(dir, "cpuset.mem_hardwall");
        c.mem_exclusive = u(dir, "cpuset.mem_exclusive");
        c.memory_migrate = u(dir, "cpuset.memory_migrate");
        c.memory_spread_page = u(dir, "cpuset.memory_spread_page");
        c.memory_spread_slab = u(dir, "cpuset.memory_spread_slab");
        c.memory_pressure = u(dir, "cpuset.memory_pressure");
        c.sched_load_balance = u(dir, "cpuset.sched_load_balance");
        c.sched_relax_domain_level = fs::read(dir, "cpuset.sched_relax_domain_level")
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(0);
    }
    if let Some(dir) = m.dir_for("memory") {
        let entry = |prefix: &str| MemoryEntry {
            limit: u(dir, &format!("{prefix}limit_in_bytes")),
            usage: u(dir, &format!("{prefix}usage_in_bytes")),
            max: u(dir, &format!("{prefix}max_usage_in_bytes")),
            failcnt: u(dir, &format!("{prefix}failcnt")),
        };
        st.memory.usage = entry("memory.");
        st.memory.swap = entry("memory.memsw.");
        st.memory.kernel = entry("memory.kmem.");
        st.memory.kernel_tcp = entry("memory.kmem.tcp.");
        st.memory.raw = fs::read_keyed(dir, "memory.stat")
            .unwrap_or_default()
            .into_iter()
            .collect();
        st.memory.cache = st.memory.raw.get("cache").copied().unwrap_or(0);
    }
    if let Some(dir) = m.dir_for("pids") {
        st.pids.current = u(dir, "pids.current");
        let max = u(dir, "pids.max");
        st.pids.limit = if max == u64::MAX { 0 } else { max };
    }
    if let Some(dir) = m.dir_for("blkio") {
        st.blkio.io_service_bytes_recursive =
            blkio_v1(dir, "blkio.throttle.io_service_bytes_recursive");
        st.blkio.io_serviced_recursive = blkio_v1(dir, "blkio.throttle.io_serviced_recursive");
    }
    if m.dir_for("hugetlb").is_none() {
        if let Some(dir) = m.unified_dir() {
            hugetlb_v2(dir, &mut st);
        }
    }
    if let Some(dir) = m.dir_for("hugetlb") {
        for size in hugepage_sizes() {
            st.hugetlb.insert(
                size.clone(),
                Hugetlb {
                    usage: u(dir, &format!("hugetlb.{size}.usage_in_bytes")),
                    max: u(dir, &format!("hugetlb.{size}.max_usage_in_bytes")),
                    failcnt: u(dir, &format!("hugetlb.{size}.failcnt")),
                },
            );
        }
    }
    Ok(st)
}

fn blkio_v1(dir: &Path, name: &str) -> Vec<BlkioEntry> {
    let Ok(text) = fs::read(dir, name) else {
        return Vec::new();
    };
    text.lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            if f.len() != 3 {
                return None;
            }
            let (ma, mi) = f[0].split_once(':')?;
            Some(BlkioEntry {
                major: ma.parse().ok()?,
                minor: mi.parse().ok()?,
                op: f[1].to_string(),
                value: f[2].parse().ok()?,
            })
        })
        .collect()
}

/// Page sizes the kernel offers, named as cgroup files name them (2MB, 1GB).
pub fn hugepage_sizes() -> Vec<String> {
    let Ok(entries) = std::fs::read_dir("/sys/kernel/mm/hugepages") else {
        return Vec::new();
    };
    let mut v: Vec<String> = entries
        .flatten()
        .filter_map(|e| {
            let n = e.file_name().to_string_lossy().into_owned();
            let kb: u64 = n
                .strip_prefix("hugepages-")?
                .strip_suffix("kB")?
                .parse()
                .ok()?;
            Some(if kb >= 1 << 20 {
                format!("{}GB", kb >> 20)
            } else if kb >= 1 << 10 {
                format!("{}MB", kb >> 10)
            } else {
                format!("{kb}KB")
            })
        })
        .collect();
    v.sort();
    v
}

fn collect_v2(dir: &Path, st: &mut Stats) -> Result<(), CgroupError> {
    let cpu = fs::read_keyed(dir, "cpu.stat")?;
    let get = |k: &str| {
        cpu.iter()
            .find(|(n, _)| n == k)
            .map(|(_, v)| *v)
            .unwrap_or(0)
    };
    st.cpu.usage.total = get("usage_usec") * 1000;
    st.cpu.usage.user = get("user_usec") * 1000;
    st.cpu.usage.kernel = get("system_usec") * 1000;
    st.cpu.throttling.periods = get("nr_periods");
    st.cpu.throttling.throttled_periods = get("nr_throttled");
    st.cpu.throttling.throttled_time = get("throttled_usec") * 1000;
    st.cpuset.cpus = fs::read(dir, "cpuset.cpus.effective")
        .map(|s| parse_list(&s))
        .unwrap_or_default();
    st.cpuset.mems = fs::read(dir, "cpuset.mems.effective")
        .map(|s| parse_list(&s))
        .unwrap_or_default();
    st.memory.raw = fs::read_keyed(dir, "memory.stat")
        .unwrap_or_default()
        .into_iter()
        .collect();
    st.memory.cache = st.memory.raw.get("file").copied().unwrap_or(0);
    st.memory.usage = MemoryEntry {
        limit: u(dir, "memory.max"),
        usage: u(dir, "memory.current"),
        max: u(dir, "memory.peak"),
        failcnt: fs::keyed_value(dir, "memory.events", "max"),
    };
    st.memory.swap = MemoryEntry {
        limit: u(dir, "memory.swap.max"),
        usage: u(dir, "memory.swap.current"),
        max: u(dir, "memory.swap.peak"),
        failcnt: fs::keyed_value(dir, "memory.swap.events", "max"),
    };
    st.pids.current = u(dir, "pids.current");
    let max = u(dir, "pids.max");
    st.pids.limit = if max == u64::MAX { 0 } else { max };
    if let Ok(io) = fs::read(dir, "io.stat") {
        for line in io.lines() {
            let mut f = line.split_whitespace();
            let Some((ma, mi)) = f.next().and_then(|d| d.split_once(':')) else {
                continue;
            };
            let (Ok(major), Ok(minor)) = (ma.parse::<u64>(), mi.parse::<u64>()) else {
                continue;
            };
            for kv in f {
                let Some((k, v)) = kv.split_once('=') else {
                    continue;
                };
                let Ok(value) = v.parse::<u64>() else {
                    continue;
                };
                let (list, op) = match k {
                    "rbytes" => (&mut st.blkio.io_service_bytes_recursive, "Read"),
                    "wbytes" => (&mut st.blkio.io_service_bytes_recursive, "Write"),
                    "rios" => (&mut st.blkio.io_serviced_recursive, "Read"),
                    "wios" => (&mut st.blkio.io_serviced_recursive, "Write"),
                    _ => continue,
                };
                list.push(BlkioEntry {
                    major,
                    minor,
                    op: op.into(),
                    value,
                });
            }
        }
    }
    hugetlb_v2(dir, st);
    Ok(())
}

/// hugetlb usage from cgroup2 files (pure v2, or the hybrid host's unified tree).
fn hugetlb_v2(dir: &Path, st: &mut Stats) {
    for size in hugepage_sizes() {
        if dir.join(format!("hugetlb.{size}.current")).exists() {
            st.hugetlb.insert(
                size.clone(),
                Hugetlb {
                    usage: u(dir, &format!("hugetlb.{size}.current")),
                    max: 0,
                    failcnt: fs::keyed_value(dir, &format!("hugetlb.{size}.events"), "max"),
                },
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lists() {
        assert_eq!(parse_list("0-2,5\n"), vec![0, 1, 2, 5]);
        assert_eq!(parse_list(""), Vec::<u16>::new());
    }

    #[test]
    fn shape_matches_runc() {
        let v = serde_json::to_value(Stats::default()).expect("json");
        assert!(v["blkio"].as_object().is_some_and(|o| o.is_empty()));
        assert!(v["network_interfaces"].is_null());
        assert_eq!(v["cpu"]["usage"]["kernel"], 0);
        assert_eq!(v["memory"]["usage"]["failcnt"], 0);
    }
}
