//! Resource limits given on `unpack` (`--cpus`, `--cpu-quota`, `--memory`, `--pids-limit`, ...),
//! validated with Docker's rules and written into config.json `linux.resources`, where the
//! runtime (skiff, runc) applies them to the container's cgroup.

use crate::error::{Error, Result};
use serde_json::{json, Value};

/// Default CFS period (µs) used with `--cpus` or a quota given without a period, as Docker does.
pub const DEFAULT_CPU_PERIOD: u64 = 100_000;
/// Smallest memory limit Docker accepts (6 MiB).
pub const MIN_MEMORY: i64 = 6 * 1024 * 1024;

/// The resource flags as typed on the command line (Docker's names and syntax).
#[derive(Debug, Clone, Default, clap::Args)]
pub struct ResourceFlags {
    /// CPU CFS period in µs (1000..=1000000).
    #[arg(long = "cpu-period", value_name = "N")]
    pub cpu_period: Option<u64>,
    /// CPU CFS quota in µs per period (>= 1000; -1 = unlimited); without --cpu-period the period is 100000.
    #[arg(long = "cpu-quota", value_name = "N", allow_hyphen_values = true)]
    pub cpu_quota: Option<i64>,
    /// Number of CPUs (e.g. 0.5): period 100000, quota F*100000; conflicts with --cpu-period/--cpu-quota.
    #[arg(long = "cpus", value_name = "F")]
    pub cpus: Option<String>,
    /// Relative CPU weight (2..=262144; 0 = default).
    #[arg(long = "cpu-shares", value_name = "N")]
    pub cpu_shares: Option<u64>,
    /// CPUs the container may run on (e.g. 0-3,5).
    #[arg(long = "cpuset-cpus", value_name = "LIST")]
    pub cpuset_cpus: Option<String>,
    /// Memory limit: bytes or with a b/k/m/g suffix (e.g. 64m); at least 6m.
    #[arg(long = "memory", short = 'm', value_name = "SIZE")]
    pub memory: Option<String>,
    /// Memory plus swap limit (SIZE >= --memory, or -1 = unlimited swap); needs --memory.
    #[arg(
        long = "memory-swap",
        value_name = "SIZE|-1",
        allow_hyphen_values = true
    )]
    pub memory_swap: Option<String>,
    /// Maximum number of processes (-1 or 0 = unlimited).
    #[arg(long = "pids-limit", value_name = "N", allow_hyphen_values = true)]
    pub pids_limit: Option<i64>,
}

/// Validated limits, in config.json units.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Resources {
    /// `linux.resources.cpu.period` (µs).
    pub cpu_period: Option<u64>,
    /// `linux.resources.cpu.quota` (µs; -1 = unlimited).
    pub cpu_quota: Option<i64>,
    /// `linux.resources.cpu.shares`.
    pub cpu_shares: Option<u64>,
    /// `linux.resources.cpu.cpus`.
    pub cpuset_cpus: Option<String>,
    /// `linux.resources.memory.limit` (bytes).
    pub memory: Option<i64>,
    /// `linux.resources.memory.swap` (memory + swap bytes; -1 = unlimited).
    pub memory_swap: Option<i64>,
    /// `linux.resources.pids.limit` (-1 = unlimited).
    pub pids_limit: Option<i64>,
}

fn bad(flag: &str, value: impl std::fmt::Display, why: &str) -> Error {
    Error::Invalid(format!("--{flag} {value}: {why}"))
}

/// Parse a Docker-style size: `N`, `N.M`, with an optional `b`, `k`, `m`, `g`, `t` suffix
/// (binary units, case-insensitive, optionally followed by `b`/`ib`: `64m`, `64MB`, `1.5GiB`).
pub fn parse_size(s: &str) -> std::result::Result<i64, String> {
    let t = s.trim().to_ascii_lowercase();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let mult: u64 = match unit.trim() {
        "" | "b" => 1,
        "k" | "kb" | "kib" => 1 << 10,
        "m" | "mb" | "mib" => 1 << 20,
        "g" | "gb" | "gib" => 1 << 30,
        "t" | "tb" | "tib" => 1 << 40,
        u => return Err(format!("unknown size unit {u:?} (use b, k, m, g or t)")),
    };
    if num.is_empty() || num.matches('.').count() > 1 {
        return Err(format!("{s:?} is not a size (e.g. 64m, 1g, 1048576)"));
    }
    let v: f64 = num
        .parse()
        .map_err(|_| format!("{s:?} is not a size (e.g. 64m, 1g, 1048576)"))?;
    let bytes = v * mult as f64;
    if !bytes.is_finite() || bytes >= i64::MAX as f64 {
        return Err(format!("{s:?} is too large"));
    }
    Ok(bytes as i64)
}

/// Parse a cpuset list (`0-3,5,7-8`) into its CPUs; refuses empty parts and reversed ranges.
pub fn parse_cpuset(s: &str) -> std::result::Result<Vec<u32>, String> {
    let mut out = Vec::new();
    for part in s.split(',') {
        let part = part.trim();
        let num = |x: &str| {
            x.trim()
                .parse::<u32>()
                .map_err(|_| format!("{part:?} is not a CPU number or range"))
        };
        let (a, b) = match part.split_once('-') {
            Some((a, b)) => (num(a)?, num(b)?),
            None => {
                let n = num(part)?;
                (n, n)
            }
        };
        if a > b {
            return Err(format!("range {part:?} is reversed"));
        }
        if b - a > 65536 {
            return Err(format!("range {part:?} is too large"));
        }
        out.extend(a..=b);
    }
    Ok(out)
}

/// Online CPUs of this host, if /sys says.
fn online_cpus() -> Option<Vec<u32>> {
    let s = std::fs::read_to_string("/sys/devices/system/cpu/online").ok()?;
    parse_cpuset(s.trim()).ok()
}

impl ResourceFlags {
    /// Check the flags with Docker's rules and convert them; every error names its flag.
    pub fn resolve(&self) -> Result<Resources> {
        let mut r = Resources {
            cpu_period: self.cpu_period,
            cpu_quota: self.cpu_quota,
            cpu_shares: self.cpu_shares.filter(|s| *s != 0),
            cpuset_cpus: self.cpuset_cpus.clone(),
            memory: None,
            memory_swap: None,
            pids_limit: self.pids_limit.map(|p| if p <= 0 { -1 } else { p }),
        };
        if let Some(c) = &self.cpus {
            if self.cpu_period.is_some() || self.cpu_quota.is_some() {
                return Err(bad(
                    "cpus",
                    c,
                    "conflicts with --cpu-period/--cpu-quota (use one or the other)",
                ));
            }
            let f: f64 = c
                .trim()
                .parse()
                .map_err(|_| bad("cpus", c, "not a number (e.g. 0.5, 2)"))?;
            if !f.is_finite() || f <= 0.0 {
                return Err(bad("cpus", c, "must be greater than 0"));
            }
            let quota = (f * DEFAULT_CPU_PERIOD as f64).round();
            if quota < 1000.0 {
                return Err(bad("cpus", c, "must be at least 0.01"));
            }
            if let Some(n) = online_cpus().map(|v| v.len()) {
                if f > n as f64 {
                    return Err(bad(
                        "cpus",
                        c,
                        &format!("range of CPUs is from 0.01 to {n}.00, as there are only {n} CPUs available"),
                    ));
                }
            }
            r.cpu_period = Some(DEFAULT_CPU_PERIOD);
            r.cpu_quota = Some(quota as i64);
        }
        if let Some(m) = &self.memory {
            r.memory = Some(parse_size(m).map_err(|e| bad("memory", m, &e))?);
        }
        if let Some(s) = &self.memory_swap {
            r.memory_swap = Some(if s.trim() == "-1" {
                -1
            } else {
                parse_size(s).map_err(|e| bad("memory-swap", s, &e))?
            });
        }
        r.validate()?;
        Ok(r)
    }
}

impl Resources {
    /// Whether no limit is set (config.json is then left as generated).
    pub fn is_empty(&self) -> bool {
        *self == Resources::default()
    }

    /// Docker's range checks; errors name the command-line flag.
    pub fn validate(&self) -> Result<()> {
        if let Some(p) = self.cpu_period {
            if !(1000..=1_000_000).contains(&p) {
                return Err(bad(
                    "cpu-period",
                    p,
                    "CPU CFS period must be between 1000 (1ms) and 1000000 (1s) microseconds",
                ));
            }
        }
        if let Some(q) = self.cpu_quota {
            if q != -1 && q != 0 && q < 1000 {
                return Err(bad(
                    "cpu-quota",
                    q,
                    "CPU CFS quota must be at least 1000 (1ms) microseconds, or -1 for unlimited",
                ));
            }
        }
        if let Some(s) = self.cpu_shares {
            if !(2..=262_144).contains(&s) {
                return Err(bad("cpu-shares", s, "must be between 2 and 262144"));
            }
        }
        if let Some(c) = &self.cpuset_cpus {
            let cpus = parse_cpuset(c).map_err(|e| bad("cpuset-cpus", c, &e))?;
            if let Some(online) = online_cpus() {
                if let Some(x) = cpus.iter().find(|x| !online.contains(x)) {
                    return Err(bad(
                        "cpuset-cpus",
                        c,
                        &format!("CPU {x} is not available on this host"),
                    ));
                }
            }
        }
        if let Some(m) = self.memory {
            if m < MIN_MEMORY {
                return Err(bad("memory", m, "minimum memory limit allowed is 6MB (6m)"));
            }
        }
        if let Some(s) = self.memory_swap {
            let Some(m) = self.memory else {
                return Err(bad(
                    "memory-swap",
                    s,
                    "needs --memory as well (memory-swap is memory plus swap)",
                ));
            };
            if s != -1 && s < m {
                return Err(bad(
                    "memory-swap",
                    s,
                    "must be at least --memory (it is memory plus swap), or -1 for unlimited swap",
                ));
            }
        }
        if let Some(p) = self.pids_limit {
            if p < -1 || p == 0 {
                return Err(bad(
                    "pids-limit",
                    p,
                    "must be positive, or -1 for unlimited",
                ));
            }
        }
        Ok(())
    }

    /// Merge the limits into `spec["linux"]["resources"]` (other resource keys are kept).
    /// A quota without a period gets the default period of 100000 µs.
    pub fn apply(&self, spec: &mut Value) -> Result<()> {
        if self.is_empty() {
            return Ok(());
        }
        self.validate()?;
        let res = &mut spec["linux"]["resources"];
        if res.is_null() {
            *res = json!({});
        }
        let mut cpu = serde_json::Map::new();
        let quota = self.cpu_quota.filter(|q| *q != 0);
        if let Some(q) = quota {
            cpu.insert("quota".into(), json!(q));
        }
        if let Some(p) = self.cpu_period.or(quota.map(|_| DEFAULT_CPU_PERIOD)) {
            cpu.insert("period".into(), json!(p));
        }
        if let Some(s) = self.cpu_shares {
            cpu.insert("shares".into(), json!(s));
        }
        if let Some(c) = &self.cpuset_cpus {
            cpu.insert("cpus".into(), json!(c.trim()));
        }
        if !cpu.is_empty() {
            res["cpu"] = Value::Object(cpu);
        }
        let mut mem = serde_json::Map::new();
        if let Some(m) = self.memory {
            mem.insert("limit".into(), json!(m));
        }
        if let Some(s) = self.memory_swap {
            mem.insert("swap".into(), json!(s));
        }
        if !mem.is_empty() {
            res["memory"] = Value::Object(mem);
        }
        if let Some(p) = self.pids_limit {
            res["pids"] = json!({ "limit": p });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(parse_size("64m"), Ok(64 << 20));
        assert_eq!(parse_size("64MB"), Ok(64 << 20));
        assert_eq!(parse_size("1g"), Ok(1 << 30));
        assert_eq!(parse_size("1.5GiB"), Ok(3 << 29));
        assert_eq!(parse_size("512k"), Ok(512 << 10));
        assert_eq!(parse_size("100b"), Ok(100));
        assert_eq!(parse_size("12345"), Ok(12345));
        for b in ["", "m", "-1", "1x", "1..2m", "abc", "99999999999t"] {
            assert!(parse_size(b).is_err(), "{b}");
        }
    }

    #[test]
    fn cpusets() {
        assert_eq!(parse_cpuset("0-2,5"), Ok(vec![0, 1, 2, 5]));
        assert_eq!(parse_cpuset("1"), Ok(vec![1]));
        for b in ["", "a", "2-1", "1,,2", "-1"] {
            assert!(parse_cpuset(b).is_err(), "{b}");
        }
    }

    fn flags() -> ResourceFlags {
        ResourceFlags::default()
    }

    #[test]
    fn docker_rules() {
        let err = |f: ResourceFlags| f.resolve().expect_err("must fail").to_string();
        let r = ResourceFlags {
            cpu_period: Some(100_000),
            cpu_quota: Some(20_000),
            memory: Some("64m".into()),
            pids_limit: Some(50),
            ..flags()
        }
        .resolve()
        .expect("valid");
        assert_eq!(r.cpu_quota, Some(20_000));
        assert_eq!(r.memory, Some(64 << 20));
        let r = ResourceFlags {
            cpus: Some("0.5".into()),
            ..flags()
        }
        .resolve()
        .expect("cpus");
        assert_eq!((r.cpu_period, r.cpu_quota), (Some(100_000), Some(50_000)));
        assert!(err(ResourceFlags {
            cpus: Some("1".into()),
            cpu_quota: Some(20_000),
            ..flags()
        })
        .contains("--cpus"));
        assert!(err(ResourceFlags {
            cpus: Some("0".into()),
            ..flags()
        })
        .contains("--cpus"));
        assert!(err(ResourceFlags {
            cpus: Some("100000".into()),
            ..flags()
        })
        .contains("--cpus"));
        assert!(err(ResourceFlags {
            cpu_period: Some(999),
            ..flags()
        })
        .contains("--cpu-period 999"));
        assert!(err(ResourceFlags {
            cpu_period: Some(1_000_001),
            ..flags()
        })
        .contains("--cpu-period"));
        assert!(err(ResourceFlags {
            cpu_quota: Some(999),
            ..flags()
        })
        .contains("--cpu-quota 999"));
        assert!(err(ResourceFlags {
            cpu_quota: Some(-2),
            ..flags()
        })
        .contains("--cpu-quota"));
        assert!(ResourceFlags {
            cpu_quota: Some(-1),
            ..flags()
        }
        .resolve()
        .is_ok());
        assert!(err(ResourceFlags {
            cpu_shares: Some(1),
            ..flags()
        })
        .contains("--cpu-shares"));
        assert!(err(ResourceFlags {
            memory: Some("5m".into()),
            ..flags()
        })
        .contains("--memory"));
        assert!(err(ResourceFlags {
            memory: Some("lots".into()),
            ..flags()
        })
        .contains("--memory lots"));
        assert!(err(ResourceFlags {
            memory_swap: Some("1g".into()),
            ..flags()
        })
        .contains("--memory-swap"));
        assert!(err(ResourceFlags {
            memory: Some("64m".into()),
            memory_swap: Some("32m".into()),
            ..flags()
        })
        .contains("--memory-swap"));
        let r = ResourceFlags {
            memory: Some("64m".into()),
            memory_swap: Some("-1".into()),
            pids_limit: Some(0),
            ..flags()
        }
        .resolve()
        .expect("unlimited swap");
        assert_eq!((r.memory_swap, r.pids_limit), (Some(-1), Some(-1)));
        assert!(err(ResourceFlags {
            cpuset_cpus: Some("3-1".into()),
            ..flags()
        })
        .contains("--cpuset-cpus"));
        assert!(err(ResourceFlags {
            cpuset_cpus: Some("100000".into()),
            ..flags()
        })
        .contains("--cpuset-cpus"));
    }

    #[test]
    fn spec_output() {
        let mut spec = crate::spec::default_spec();
        let r = ResourceFlags {
            cpu_quota: Some(20_000),
            cpu_shares: Some(512),
            cpuset_cpus: Some("0".into()),
            memory: Some("64m".into()),
            memory_swap: Some("128m".into()),
            pids_limit: Some(50),
            ..flags()
        }
        .resolve()
        .expect("valid");
        r.apply(&mut spec).expect("apply");
        let res = &spec["linux"]["resources"];
        assert_eq!(
            res["cpu"],
            json!({"quota": 20000, "period": 100000, "shares": 512, "cpus": "0"})
        );
        assert_eq!(res["memory"], json!({"limit": 67108864, "swap": 134217728}));
        assert_eq!(res["pids"], json!({"limit": 50}));
        assert!(res["devices"].is_array(), "default device rules kept");
        // Period alone: no quota key.
        let mut spec = crate::spec::default_spec();
        Resources {
            cpu_period: Some(50_000),
            ..Default::default()
        }
        .apply(&mut spec)
        .expect("apply");
        assert_eq!(spec["linux"]["resources"]["cpu"], json!({"period": 50000}));
        // Nothing set: untouched.
        let mut spec = crate::spec::default_spec();
        let before = spec.clone();
        Resources::default().apply(&mut spec).expect("apply");
        assert_eq!(spec, before);
    }
}
