//! Reads a container's cgroup files into containerd's v1 or v2 metrics messages (what
//! `ctr task metrics` and the CRI stats decode).

use std::{
    collections::HashMap,
    fs,
    path::{Path, PathBuf},
};

use containerd_shim::protos::{
    cgroups::metrics::{
        CPUStat, CPUUsage, HugetlbStat, MemoryEntry, MemoryOomControl, MemoryStat, Metrics,
        PidsStat, Throttle,
    },
    cgroups_v2::metrics::{
        CPUStat as CPUStatV2, MemoryStat as MemoryStatV2, Metrics as MetricsV2,
        PidsStat as PidsStatV2,
    },
    protobuf::{well_known_types::any::Any, Message},
};

use crate::error::{Error, Result};

const CGROUP_ROOT: &str = "/sys/fs/cgroup";

/// Whether the host runs a pure cgroup v2 (unified) hierarchy.
pub fn is_unified() -> bool {
    Path::new(CGROUP_ROOT).join("cgroup.controllers").exists()
}

/// Parses /proc/<pid>/cgroup into controller -> path (v2 under the key "").
fn proc_cgroups(pid: u32) -> Result<HashMap<String, String>> {
    let text = fs::read_to_string(format!("/proc/{pid}/cgroup"))
        .map_err(|e| Error::Io(format!("read /proc/{pid}/cgroup"), e))?;
    let mut map = HashMap::new();
    for line in text.lines() {
        let mut parts = line.splitn(3, ':');
        let (_, ctrls, path) = match (parts.next(), parts.next(), parts.next()) {
            (Some(a), Some(b), Some(c)) => (a, b, c),
            _ => continue,
        };
        if ctrls.is_empty() {
            map.insert(String::new(), path.to_string());
        }
        for c in ctrls.split(',') {
            map.insert(c.to_string(), path.to_string());
        }
    }
    Ok(map)
}

fn read_u64(dir: &Path, file: &str) -> u64 {
    fs::read_to_string(dir.join(file))
        .ok()
        .and_then(|s| s.trim().parse::<u64>().ok())
        .unwrap_or(0)
}

fn read_max(dir: &Path, file: &str) -> u64 {
    match fs::read_to_string(dir.join(file)) {
        Ok(s) if s.trim() == "max" => u64::MAX,
        Ok(s) => s.trim().parse().unwrap_or(0),
        Err(_) => 0,
    }
}

fn flat_keyed(dir: &Path, file: &str) -> HashMap<String, u64> {
    let mut m = HashMap::new();
    if let Ok(s) = fs::read_to_string(dir.join(file)) {
        for line in s.lines() {
            let mut it = line.split_whitespace();
            if let (Some(k), Some(v)) = (it.next(), it.next()) {
                if let Ok(v) = v.parse() {
                    m.insert(k.to_string(), v);
                }
            }
        }
    }
    m
}

fn v1_dir(map: &HashMap<String, String>, controller: &str) -> Option<PathBuf> {
    let rel = map.get(controller)?;
    let dir = Path::new(CGROUP_ROOT)
        .join(controller)
        .join(rel.trim_start_matches('/'));
    dir.is_dir().then_some(dir)
}

/// Finds the process's v1 memory cgroup directory (for OOM notifications).
pub fn memory_cgroup_v1(pid: u32) -> Option<PathBuf> {
    if is_unified() {
        return None;
    }
    let map = proc_cgroups(pid).ok()?;
    v1_dir(&map, "memory")
}

fn entry(dir: &Path, prefix: &str) -> MemoryEntry {
    let name = |s: &str| {
        if prefix.is_empty() {
            format!("memory.{s}")
        } else {
            format!("memory.{prefix}.{s}")
        }
    };
    MemoryEntry {
        usage: read_u64(dir, &name("usage_in_bytes")),
        max: read_u64(dir, &name("max_usage_in_bytes")),
        limit: read_u64(dir, &name("limit_in_bytes")),
        failcnt: read_u64(dir, &name("failcnt")),
        ..Default::default()
    }
}

/// Collects cgroup v1 metrics of the cgroups `pid` is in.
fn collect_v1(pid: u32) -> Result<Metrics> {
    let map = proc_cgroups(pid)?;
    let mut m = Metrics::new();
    if let Some(dir) = v1_dir(&map, "pids") {
        let limit = read_max(&dir, "pids.max");
        m.pids = Some(PidsStat {
            current: read_u64(&dir, "pids.current"),
            limit: if limit == u64::MAX { 0 } else { limit },
            ..Default::default()
        })
        .into();
    }
    if let Some(dir) = v1_dir(&map, "cpuacct") {
        let stat = flat_keyed(&dir, "cpuacct.stat");
        // cpuacct.stat is in USER_HZ ticks; containerd reports nanoseconds.
        // SAFETY: sysconf has no memory-safety preconditions.
        let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as u64;
        let to_ns = |t: u64| t.saturating_mul(1_000_000_000 / hz);
        let per_cpu = fs::read_to_string(dir.join("cpuacct.usage_percpu"))
            .map(|s| {
                s.split_whitespace()
                    .filter_map(|v| v.parse().ok())
                    .collect()
            })
            .unwrap_or_default();
        let usage = CPUUsage {
            total: read_u64(&dir, "cpuacct.usage"),
            user: to_ns(stat.get("user").copied().unwrap_or(0)),
            kernel: to_ns(stat.get("system").copied().unwrap_or(0)),
            per_cpu,
            ..Default::default()
        };
        let mut cpu = CPUStat {
            usage: Some(usage).into(),
            ..Default::default()
        };
        if let Some(cdir) = v1_dir(&map, "cpu") {
            let t = flat_keyed(&cdir, "cpu.stat");
            cpu.throttling = Some(Throttle {
                periods: t.get("nr_periods").copied().unwrap_or(0),
                throttled_periods: t.get("nr_throttled").copied().unwrap_or(0),
                throttled_time: t.get("throttled_time").copied().unwrap_or(0),
                ..Default::default()
            })
            .into();
        }
        m.cpu = Some(cpu).into();
    }
    if let Some(dir) = v1_dir(&map, "memory") {
        let s = flat_keyed(&dir, "memory.stat");
        let g = |k: &str| s.get(k).copied().unwrap_or(0);
        let mem = MemoryStat {
            cache: g("cache"),
            rss: g("rss"),
            rss_huge: g("rss_huge"),
            mapped_file: g("mapped_file"),
            dirty: g("dirty"),
            writeback: g("writeback"),
            pg_pg_in: g("pgpgin"),
            pg_pg_out: g("pgpgout"),
            pg_fault: g("pgfault"),
            pg_maj_fault: g("pgmajfault"),
            inactive_anon: g("inactive_anon"),
            active_anon: g("active_anon"),
            inactive_file: g("inactive_file"),
            active_file: g("active_file"),
            unevictable: g("unevictable"),
            hierarchical_memory_limit: g("hierarchical_memory_limit"),
            hierarchical_swap_limit: g("hierarchical_memsw_limit"),
            total_cache: g("total_cache"),
            total_rss: g("total_rss"),
            total_rss_huge: g("total_rss_huge"),
            total_mapped_file: g("total_mapped_file"),
            total_dirty: g("total_dirty"),
            total_writeback: g("total_writeback"),
            total_pg_pg_in: g("total_pgpgin"),
            total_pg_pg_out: g("total_pgpgout"),
            total_pg_fault: g("total_pgfault"),
            total_pg_maj_fault: g("total_pgmajfault"),
            total_inactive_anon: g("total_inactive_anon"),
            total_active_anon: g("total_active_anon"),
            total_inactive_file: g("total_inactive_file"),
            total_active_file: g("total_active_file"),
            total_unevictable: g("total_unevictable"),
            usage: Some(entry(&dir, "")).into(),
            swap: Some(entry(&dir, "memsw")).into(),
            kernel: Some(entry(&dir, "kmem")).into(),
            kernel_tcp: Some(entry(&dir, "kmem.tcp")).into(),
            ..Default::default()
        };
        m.memory = Some(mem).into();
        let oom = flat_keyed(&dir, "memory.oom_control");
        m.memory_oom_control = Some(MemoryOomControl {
            oom_kill_disable: oom.get("oom_kill_disable").copied().unwrap_or(0),
            under_oom: oom.get("under_oom").copied().unwrap_or(0),
            oom_kill: oom.get("oom_kill").copied().unwrap_or(0),
            ..Default::default()
        })
        .into();
    }
    if let Some(dir) = v1_dir(&map, "hugetlb") {
        if let Ok(rd) = fs::read_dir(&dir) {
            let mut sizes: Vec<String> = rd
                .filter_map(|e| e.ok())
                .filter_map(|e| {
                    let n = e.file_name().to_string_lossy().into_owned();
                    n.strip_prefix("hugetlb.")
                        .and_then(|r| r.strip_suffix(".usage_in_bytes"))
                        .map(str::to_string)
                })
                .collect();
            sizes.sort();
            for size in sizes {
                m.hugetlb.push(HugetlbStat {
                    usage: read_u64(&dir, &format!("hugetlb.{size}.usage_in_bytes")),
                    max: read_u64(&dir, &format!("hugetlb.{size}.max_usage_in_bytes")),
                    failcnt: read_u64(&dir, &format!("hugetlb.{size}.failcnt")),
                    pagesize: size,
                    ..Default::default()
                });
            }
        }
    }
    Ok(m)
}

/// Collects cgroup v2 metrics of the unified cgroup `pid` is in.
fn collect_v2(pid: u32) -> Result<MetricsV2> {
    let map = proc_cgroups(pid)?;
    let rel = map
        .get("")
        .ok_or_else(|| Error::NotFound(format!("cgroup v2 path of pid {pid}")))?;
    let dir = Path::new(CGROUP_ROOT).join(rel.trim_start_matches('/'));
    let mut m = MetricsV2::new();
    let limit = read_max(&dir, "pids.max");
    m.pids = Some(PidsStatV2 {
        current: read_u64(&dir, "pids.current"),
        limit: if limit == u64::MAX { 0 } else { limit },
        ..Default::default()
    })
    .into();
    let c = flat_keyed(&dir, "cpu.stat");
    let g = |k: &str| c.get(k).copied().unwrap_or(0);
    m.cpu = Some(CPUStatV2 {
        usage_usec: g("usage_usec"),
        user_usec: g("user_usec"),
        system_usec: g("system_usec"),
        nr_periods: g("nr_periods"),
        nr_throttled: g("nr_throttled"),
        throttled_usec: g("throttled_usec"),
        ..Default::default()
    })
    .into();
    let s = flat_keyed(&dir, "memory.stat");
    let g = |k: &str| s.get(k).copied().unwrap_or(0);
    m.memory = Some(MemoryStatV2 {
        anon: g("anon"),
        file: g("file"),
        kernel_stack: g("kernel_stack"),
        slab: g("slab"),
        sock: g("sock"),
        shmem: g("shmem"),
        file_mapped: g("file_mapped"),
        file_dirty: g("file_dirty"),
        file_writeback: g("file_writeback"),
        anon_thp: g("anon_thp"),
        inactive_anon: g("inactive_anon"),
        active_anon: g("active_anon"),
        inactive_file: g("inactive_file"),
        active_file: g("active_file"),
        unevictable: g("unevictable"),
        pgfault: g("pgfault"),
        pgmajfault: g("pgmajfault"),
        usage: read_u64(&dir, "memory.current"),
        usage_limit: read_max(&dir, "memory.max"),
        swap_usage: read_u64(&dir, "memory.swap.current"),
        swap_limit: read_max(&dir, "memory.swap.max"),
        ..Default::default()
    })
    .into();
    Ok(m)
}

/// Collects the metrics of the container whose init is `pid`, packed as containerd expects.
pub fn collect(pid: u32) -> Result<Any> {
    let (type_url, value) = if is_unified() {
        let m = collect_v2(pid)?;
        ("io.containerd.cgroups.v2.Metrics", m.write_to_bytes())
    } else {
        let m = collect_v1(pid)?;
        ("io.containerd.cgroups.v1.Metrics", m.write_to_bytes())
    };
    let value = value.map_err(|e| Error::Runtime(format!("encode metrics: {e}")))?;
    Ok(Any {
        type_url: type_url.to_string(),
        value,
        ..Default::default()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn own_cgroup_metrics_decode() {
        // The test process itself is in some cgroup; whatever the hierarchy, collecting must
        // produce a message of the matching type.
        let any = collect(std::process::id()).expect("test setup");
        if is_unified() {
            assert_eq!(any.type_url, "io.containerd.cgroups.v2.Metrics");
            MetricsV2::parse_from_bytes(&any.value).expect("test setup");
        } else {
            assert_eq!(any.type_url, "io.containerd.cgroups.v1.Metrics");
            let m = Metrics::parse_from_bytes(&any.value).expect("test setup");
            assert!(m.memory.is_some() || m.pids.is_some() || m.cpu.is_some());
        }
    }

    #[test]
    fn missing_process_is_an_error() {
        assert!(collect(u32::MAX - 1).is_err());
    }
}
