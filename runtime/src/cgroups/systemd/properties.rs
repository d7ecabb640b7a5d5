//! `linux.resources` as systemd unit properties (systemd.resource-control(5)), the subset systemd
//! understands, as runc's systemd driver sends them. Everything else is written into the unit's
//! cgroup directly afterwards.
use super::protocol::{PropValue, Property};
use crate::cgroups::{v2, CgroupError};
use oci_spec::runtime::LinuxResources;

/// systemd's "infinity" for byte and count limits (USEC_INFINITY / CGROUP_LIMIT_MAX).
const INFINITY: u64 = u64::MAX;
/// The kernel's default CFS period, assumed when only a quota is given.
const DEFAULT_PERIOD: u64 = 100_000;

/// A named property (names are the literals of systemd.resource-control(5)).
fn prop(name: &str, v: PropValue) -> Property {
    (name.to_string(), v)
}

/// A limit where -1 means unlimited (and other negatives are invalid, rejected earlier).
fn limit(v: i64) -> u64 {
    u64::try_from(v).unwrap_or(INFINITY)
}

/// Properties for `resources` on a v2 (`unified`) or v1 host, for systemd `version`.
pub fn for_resources(
    r: &LinuxResources,
    unified: bool,
    version: u32,
) -> Result<Vec<Property>, CgroupError> {
    let mut props: Vec<Property> = Vec::new();
    if let Some(m) = r.memory() {
        let mem = m.limit().unwrap_or(0);
        if mem != 0 {
            let name = if unified { "MemoryMax" } else { "MemoryLimit" };
            props.push(prop(name, PropValue::U64(limit(mem))));
        }
        if unified {
            if let Some(low) = m.reservation().filter(|v| *v != 0) {
                props.push(prop("MemoryLow", PropValue::U64(limit(low))));
            }
            let swap = v2::swap_v2(m.swap().unwrap_or(0), mem)?;
            if swap != 0 {
                props.push(prop("MemorySwapMax", PropValue::U64(limit(swap))));
            }
        }
    }
    if let Some(cpu) = r.cpu() {
        if let Some(shares) = cpu.shares().filter(|s| *s != 0) {
            if unified {
                props.push(prop(
                    "CPUWeight",
                    PropValue::U64(v2::shares_to_weight(shares)),
                ));
            } else {
                props.push(prop("CPUShares", PropValue::U64(shares)));
            }
        }
        cpu_quota(
            &mut props,
            cpu.quota().unwrap_or(0),
            cpu.period().unwrap_or(0),
            version,
        );
        if version >= 244 {
            for (name, list) in [
                ("AllowedCPUs", cpu.cpus()),
                ("AllowedMemoryNodes", cpu.mems()),
            ] {
                if let Some(list) = list.as_deref().filter(|l| !l.trim().is_empty()) {
                    props.push(prop(name, PropValue::Bytes(cpu_mask(list)?)));
                }
            }
        }
    }
    if let Some(p) = r.pids() {
        let l = p.limit();
        if l > 0 || l == -1 {
            props.push(prop("TasksMax", PropValue::U64(limit(l))));
        }
    }
    if let Some(w) = r.block_io().as_ref().and_then(|b| b.weight()) {
        if w != 0 {
            if unified {
                props.push(prop("IOWeight", PropValue::U64(v2::blkio_to_io_weight(w))));
            } else {
                props.push(prop("BlockIOWeight", PropValue::U64(u64::from(w))));
            }
        }
    }
    if unified {
        if let Some(u) = r.unified() {
            for (k, v) in u {
                unified_property(&mut props, k, v.trim(), version)?;
            }
        }
    }
    Ok(props)
}

/// CPUQuotaPerSecUSec (and CPUQuotaPeriodUSec on systemd >= 242) for a CFS quota/period.
fn cpu_quota(props: &mut Vec<Property>, quota: i64, period: u64, version: u32) {
    if period != 0 && version >= 242 {
        props.push(prop("CPUQuotaPeriodUSec", PropValue::U64(period)));
    }
    if quota == 0 && period == 0 {
        return;
    }
    let per_sec = match u64::try_from(quota) {
        Ok(q) if q > 0 => {
            let period = if period == 0 { DEFAULT_PERIOD } else { period };
            // systemd keeps the quota in whole percent: round up to 10 ms per second so the
            // kernel value is at least what was asked for.
            let v = q.saturating_mul(1_000_000) / period;
            v.div_ceil(10_000) * 10_000
        }
        _ => INFINITY,
    };
    props.push(prop("CPUQuotaPerSecUSec", PropValue::U64(per_sec)));
}

/// A `unified` key systemd has a property for; other keys are only written to the cgroup.
fn unified_property(
    props: &mut Vec<Property>,
    key: &str,
    value: &str,
    version: u32,
) -> Result<(), CgroupError> {
    let bad = || {
        CgroupError::Invalid(format!(
            "linux.resources.unified {key:?}: invalid value {value:?}"
        ))
    };
    let bytes = || -> Result<u64, CgroupError> {
        if value == "max" {
            Ok(INFINITY)
        } else {
            value.parse().map_err(|_| bad())
        }
    };
    match key {
        "memory.high" => props.push(prop("MemoryHigh", PropValue::U64(bytes()?))),
        "memory.low" => props.push(prop("MemoryLow", PropValue::U64(bytes()?))),
        "memory.min" => props.push(prop("MemoryMin", PropValue::U64(bytes()?))),
        "memory.max" => props.push(prop("MemoryMax", PropValue::U64(bytes()?))),
        "memory.swap.max" => props.push(prop("MemorySwapMax", PropValue::U64(bytes()?))),
        "pids.max" => props.push(prop("TasksMax", PropValue::U64(bytes()?))),
        "cpu.weight" => props.push(prop(
            "CPUWeight",
            PropValue::U64(value.parse().map_err(|_| bad())?),
        )),
        "cpu.max" => {
            let mut f = value.split_whitespace();
            let quota = match f.next() {
                Some("max") => 0,
                Some(q) => q.parse().map_err(|_| bad())?,
                None => return Err(bad()),
            };
            let period = match f.next() {
                Some(p) => p.parse().map_err(|_| bad())?,
                None => DEFAULT_PERIOD,
            };
            cpu_quota(props, quota, period, version);
        }
        "cpuset.cpus" if version >= 244 => {
            props.push(prop("AllowedCPUs", PropValue::Bytes(cpu_mask(value)?)))
        }
        "cpuset.mems" if version >= 244 => props.push(prop(
            "AllowedMemoryNodes",
            PropValue::Bytes(cpu_mask(value)?),
        )),
        _ => {}
    }
    Ok(())
}

/// A cpu/node list ("0-3,6") as systemd's byte mask: byte i bit j is cpu 8*i+j.
pub fn cpu_mask(list: &str) -> Result<Vec<u8>, CgroupError> {
    let bad = || CgroupError::Invalid(format!("invalid cpu/memory node list {list:?}"));
    let mut mask: Vec<u8> = Vec::new();
    for part in list.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (lo, hi) = match part.split_once('-') {
            Some((a, b)) => (a.trim(), b.trim()),
            None => (part, part),
        };
        let lo: usize = lo.parse().map_err(|_| bad())?;
        let hi: usize = hi.parse().map_err(|_| bad())?;
        // Bound the mask: no machine has more than 8192 cpus or nodes (the kernel's NR_CPUS max).
        if lo > hi || hi >= 8192 {
            return Err(bad());
        }
        for cpu in lo..=hi {
            if mask.len() <= cpu / 8 {
                mask.resize(cpu / 8 + 1, 0);
            }
            mask[cpu / 8] |= 1 << (cpu % 8);
        }
    }
    Ok(mask)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn props(json: &str, unified: bool) -> Vec<Property> {
        let r: LinuxResources = serde_json::from_str(json).expect("json");
        for_resources(&r, unified, 252).expect("props")
    }

    #[test]
    fn masks() {
        assert_eq!(cpu_mask("0").ok(), Some(vec![1]));
        assert_eq!(cpu_mask("0-3,9").ok(), Some(vec![0x0f, 0x02]));
        assert!(cpu_mask("3-1").is_err());
        assert!(cpu_mask("x").is_err());
    }

    #[test]
    fn v2_properties() {
        let p = props(
            r#"{"memory":{"limit":67108864,"reservation":1024,"swap":134217728},
               "cpu":{"shares":1024,"quota":25000,"period":100000,"cpus":"0-1"},
               "pids":{"limit":50},"unified":{"memory.high":"max"}}"#,
            true,
        );
        let get = |k: &str| p.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone());
        assert_eq!(get("MemoryMax"), Some(PropValue::U64(67108864)));
        assert_eq!(get("MemoryLow"), Some(PropValue::U64(1024)));
        assert_eq!(get("MemorySwapMax"), Some(PropValue::U64(67108864)));
        assert_eq!(get("CPUWeight"), Some(PropValue::U64(39)));
        assert_eq!(get("CPUQuotaPerSecUSec"), Some(PropValue::U64(250000)));
        assert_eq!(get("CPUQuotaPeriodUSec"), Some(PropValue::U64(100000)));
        assert_eq!(get("TasksMax"), Some(PropValue::U64(50)));
        assert_eq!(get("MemoryHigh"), Some(PropValue::U64(u64::MAX)));
        assert!(get("AllowedCPUs").is_some());
    }

    #[test]
    fn v1_properties_and_rounding() {
        let p = props(
            r#"{"memory":{"limit":-1},"cpu":{"shares":512,"quota":1234},"pids":{"limit":-1}}"#,
            false,
        );
        let get = |k: &str| p.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone());
        assert_eq!(get("MemoryLimit"), Some(PropValue::U64(u64::MAX)));
        assert_eq!(get("CPUShares"), Some(PropValue::U64(512)));
        // 1234/100000 of a second = 12340 us/s, rounded up to 20000
        assert_eq!(get("CPUQuotaPerSecUSec"), Some(PropValue::U64(20000)));
        assert_eq!(get("TasksMax"), Some(PropValue::U64(u64::MAX)));
    }
}
