//! `skiff update`: change the resource limits of a running container (runc's flags or `-r`).
use std::io::Read;

use anyhow::Context;
use oci_spec::runtime::{LinuxBlockIo, LinuxCpu, LinuxMemory, LinuxPids, LinuxResources};

use super::GlobalOptions;
use crate::state::{StateDir, Status};

/// Arguments of `skiff update`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Path to a file with the resources to update (JSON, linux.resources format) or '-' for stdin;
    /// all other options are then ignored.
    #[arg(long, short = 'r')]
    pub resources: Option<String>,
    /// Specifies per cgroup weight, range is from 10 to 1000.
    #[arg(long)]
    pub blkio_weight: Option<u16>,
    /// CPU CFS period to be used for hardcapping (in usecs). 0 to use system default.
    #[arg(long)]
    pub cpu_period: Option<u64>,
    /// CPU CFS hardcap limit (in usecs). Allowed cpu time in a given period.
    #[arg(long, allow_hyphen_values = true)]
    pub cpu_quota: Option<i64>,
    /// CPU shares (relative weight vs. other containers).
    #[arg(long)]
    pub cpu_share: Option<u64>,
    /// CPU realtime period to be used for hardcapping (in usecs). 0 to use system default.
    #[arg(long)]
    pub cpu_rt_period: Option<u64>,
    /// CPU realtime hardcap limit (in usecs). Allowed cpu time in a given period.
    #[arg(long, allow_hyphen_values = true)]
    pub cpu_rt_runtime: Option<i64>,
    /// CPU(s) to use.
    #[arg(long)]
    pub cpuset_cpus: Option<String>,
    /// Memory node(s) to use.
    #[arg(long)]
    pub cpuset_mems: Option<String>,
    /// Memory limit (in bytes; k, m, g suffixes accepted).
    #[arg(long, allow_hyphen_values = true)]
    pub memory: Option<String>,
    /// Memory reservation or soft_limit (in bytes).
    #[arg(long, allow_hyphen_values = true)]
    pub memory_reservation: Option<String>,
    /// Total memory usage (memory + swap); set '-1' to enable unlimited swap.
    #[arg(long, allow_hyphen_values = true)]
    pub memory_swap: Option<String>,
    /// Maximum number of pids allowed in the container.
    #[arg(long, allow_hyphen_values = true)]
    pub pids_limit: Option<i64>,
    /// The string of Intel RDT/CAT L3 cache schema (not supported).
    #[arg(long)]
    pub l3_cache_schema: Option<String>,
    /// The string of Intel RDT/MBA memory bandwidth schema (not supported).
    #[arg(long)]
    pub mem_bw_schema: Option<String>,
    /// Container id.
    pub id: String,
}

/// Parse a byte count as runc does (`1024`, `64m`, `1.5g`, `10KiB`; binary units), `-1` = unlimited.
pub fn parse_bytes(flag: &str, s: &str) -> anyhow::Result<i64> {
    let t = s.trim();
    if t == "-1" {
        return Ok(-1);
    }
    let lower = t.to_ascii_lowercase();
    let num_end = lower
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(lower.len());
    let (num, unit) = lower.split_at(num_end);
    let unit = unit.trim();
    let unit = unit.strip_suffix('b').unwrap_or(unit);
    let unit = unit.strip_suffix('i').unwrap_or(unit);
    let mult: f64 = match unit {
        "" => 1.0,
        "k" => 1024.0,
        "m" => 1024.0 * 1024.0,
        "g" => 1024.0 * 1024.0 * 1024.0,
        "t" => 1024f64.powi(4),
        "p" => 1024f64.powi(5),
        _ => anyhow::bail!("invalid value {s:?} for flag --{flag}: invalid size"),
    };
    let n: f64 = num
        .parse()
        .map_err(|_| anyhow::anyhow!("invalid value {s:?} for flag --{flag}: invalid size"))?;
    let v = n * mult;
    if !(0.0..9.2e18).contains(&v) {
        anyhow::bail!("invalid value {s:?} for flag --{flag}: out of range");
    }
    Ok(v as i64)
}

/// Build the resources to apply from the flags (only those given).
fn from_flags(a: &Args) -> anyhow::Result<LinuxResources> {
    let mut r = LinuxResources::default();
    let mut mem = LinuxMemory::default();
    let mut mem_set = false;
    if let Some(v) = &a.memory {
        mem.set_limit(Some(parse_bytes("memory", v)?));
        mem_set = true;
    }
    if let Some(v) = &a.memory_reservation {
        mem.set_reservation(Some(parse_bytes("memory-reservation", v)?));
        mem_set = true;
    }
    if let Some(v) = &a.memory_swap {
        mem.set_swap(Some(parse_bytes("memory-swap", v)?));
        mem_set = true;
    }
    if mem_set {
        r.set_memory(Some(mem));
    }
    let mut cpu = LinuxCpu::default();
    let mut cpu_set = false;
    if let Some(v) = a.cpu_share {
        cpu.set_shares(Some(v));
        cpu_set = true;
    }
    if let Some(v) = a.cpu_quota {
        cpu.set_quota(Some(v));
        cpu_set = true;
    }
    if let Some(v) = a.cpu_period {
        cpu.set_period(Some(v));
        cpu_set = true;
    }
    if let Some(v) = a.cpu_rt_period {
        cpu.set_realtime_period(Some(v));
        cpu_set = true;
    }
    if let Some(v) = a.cpu_rt_runtime {
        cpu.set_realtime_runtime(Some(v));
        cpu_set = true;
    }
    if let Some(v) = &a.cpuset_cpus {
        cpu.set_cpus(Some(v.clone()));
        cpu_set = true;
    }
    if let Some(v) = &a.cpuset_mems {
        cpu.set_mems(Some(v.clone()));
        cpu_set = true;
    }
    if cpu_set {
        r.set_cpu(Some(cpu));
    }
    if let Some(w) = a.blkio_weight {
        let mut b = LinuxBlockIo::default();
        b.set_weight(Some(w));
        r.set_block_io(Some(b));
    }
    if let Some(p) = a.pids_limit {
        let mut pids = LinuxPids::default();
        pids.set_limit(p);
        r.set_pids(Some(pids));
    }
    Ok(r)
}

/// Copy the fields present in `new` over `old` (what is stored back in the config snapshot).
fn merge(old: &mut LinuxResources, new: &LinuxResources) {
    if let Some(m) = new.memory() {
        let mut cur = old.memory().unwrap_or_default();
        macro_rules! take {
            ($get:ident, $set:ident) => {
                if m.$get().is_some() {
                    cur.$set(m.$get());
                }
            };
        }
        take!(limit, set_limit);
        take!(reservation, set_reservation);
        take!(swap, set_swap);
        take!(kernel_tcp, set_kernel_tcp);
        take!(swappiness, set_swappiness);
        take!(disable_oom_killer, set_disable_oom_killer);
        old.set_memory(Some(cur));
    }
    if let Some(c) = new.cpu() {
        let mut cur = old.cpu().clone().unwrap_or_default();
        macro_rules! take {
            ($get:ident, $set:ident) => {
                if c.$get().is_some() {
                    cur.$set(c.$get().clone());
                }
            };
        }
        take!(shares, set_shares);
        take!(quota, set_quota);
        take!(period, set_period);
        take!(burst, set_burst);
        take!(idle, set_idle);
        take!(realtime_period, set_realtime_period);
        take!(realtime_runtime, set_realtime_runtime);
        take!(cpus, set_cpus);
        take!(mems, set_mems);
        old.set_cpu(Some(cur));
    }
    if new.block_io().is_some() {
        old.set_block_io(new.block_io().clone());
    }
    if new.pids().is_some() {
        old.set_pids(*new.pids());
    }
    if new.hugepage_limits().is_some() {
        old.set_hugepage_limits(new.hugepage_limits().clone());
    }
    if new.unified().is_some() {
        old.set_unified(new.unified().clone());
    }
    if new.devices().is_some() {
        old.set_devices(new.devices().clone());
    }
}

/// Run `skiff update`; returns the exit code.
pub fn run(global: &GlobalOptions, args: Args) -> anyhow::Result<i32> {
    if args.l3_cache_schema.is_some() || args.mem_bw_schema.is_some() {
        anyhow::bail!("Intel RDT is not supported by skiff (--l3-cache-schema, --mem-bw-schema)");
    }
    let resources = match &args.resources {
        Some(src) => {
            let mut data = Vec::new();
            if src == "-" {
                std::io::stdin()
                    .read_to_end(&mut data)
                    .context("reading resources from stdin")?;
            } else {
                data = std::fs::read(src).with_context(|| format!("reading {src}"))?;
            }
            let name = if src == "-" { "stdin" } else { src.as_str() };
            serde_json::from_slice::<LinuxResources>(&data)
                .with_context(|| format!("decoding resources from {name}"))?
        }
        None => from_flags(&args)?,
    };
    let dir = StateDir::open(&global.root, &args.id)?;
    let mut st = dir.load()?;
    if st.status(&dir) == Status::Stopped {
        anyhow::bail!("container not running");
    }
    let cg = st.cgroup()?;
    cg.update(&resources)?;
    // Keep the config snapshot in line, as runc does, so later reads see the new limits.
    if let Some(linux) = st.config.linux().clone() {
        let mut linux = linux;
        let mut res = linux.resources().clone().unwrap_or_default();
        merge(&mut res, &resources);
        linux.set_resources(Some(res));
        st.config.set_linux(Some(linux));
        dir.save(&st)?;
    }
    Ok(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bytes() {
        assert_eq!(parse_bytes("m", "1024").ok(), Some(1024));
        assert_eq!(parse_bytes("m", "64m").ok(), Some(64 << 20));
        assert_eq!(parse_bytes("m", "1.5G").ok(), Some(3 << 29));
        assert_eq!(parse_bytes("m", "10KiB").ok(), Some(10240));
        assert_eq!(parse_bytes("m", "-1").ok(), Some(-1));
        assert!(parse_bytes("m", "-5").is_err());
        assert!(parse_bytes("m", "12x").is_err());
    }
}
