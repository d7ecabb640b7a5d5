//! `-p [HOSTIP:]HOSTPORT:CTRPORT[/tcp|/udp]` port publishing specs, in the shape the CNI
//! `portMappings` capability wants.

use super::NetError;
use serde::{Deserialize, Serialize};
use std::net::IpAddr;

/// One published port, serialized exactly as the portmap plugin's `runtimeConfig.portMappings`
/// entries.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PortMapping {
    /// Port on the host.
    pub host_port: u16,
    /// Port in the container.
    pub container_port: u16,
    /// `tcp` or `udp`.
    pub protocol: String,
    /// Host address to bind; empty = every address.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub host_ip: String,
}

fn port(spec: &str, what: &str, s: &str) -> Result<u16, NetError> {
    let bad = || {
        NetError::Port(format!(
            "{spec:?}: {what} {s:?} is not a port number 1-65535"
        ))
    };
    if s.is_empty() || s.len() > 5 || !s.bytes().all(|b| b.is_ascii_digit()) {
        return Err(bad());
    }
    match s.parse::<u32>() {
        Ok(n) if (1..=65535).contains(&n) => Ok(n as u16),
        _ => Err(bad()),
    }
}

/// Parse one `-p` value.
pub fn parse_publish(spec: &str) -> Result<PortMapping, NetError> {
    let (rest, protocol) = match spec.rsplit_once('/') {
        Some((r, p)) => {
            let p = p.to_ascii_lowercase();
            if p != "tcp" && p != "udp" {
                return Err(NetError::Port(format!(
                    "{spec:?}: protocol {p:?} is not tcp or udp"
                )));
            }
            (r, p)
        }
        None => (spec, "tcp".to_string()),
    };
    // An IPv6 host address is written in brackets: [::1]:8080:80.
    let (host_ip, ports) = if let Some(r) = rest.strip_prefix('[') {
        let (ip, after) = r
            .split_once("]:")
            .ok_or_else(|| NetError::Port(format!("{spec:?}: unterminated [IPv6] host address")))?;
        (Some(ip), after)
    } else {
        match rest.matches(':').count() {
            1 => (None, rest),
            2 => {
                let (ip, p) = rest.split_once(':').unwrap_or((rest, ""));
                (Some(ip), p)
            }
            _ => {
                return Err(NetError::Port(format!(
                    "{spec:?}: want [HOSTIP:]HOSTPORT:CTRPORT[/tcp|/udp]"
                )))
            }
        }
    };
    let (h, c) = ports.split_once(':').ok_or_else(|| {
        NetError::Port(format!(
            "{spec:?}: want [HOSTIP:]HOSTPORT:CTRPORT[/tcp|/udp]"
        ))
    })?;
    let host_ip = match host_ip {
        None | Some("") => String::new(),
        Some(ip) => ip
            .parse::<IpAddr>()
            .map_err(|_| NetError::Port(format!("{spec:?}: host address {ip:?} is not an IP")))?
            .to_string(),
    };
    Ok(PortMapping {
        host_port: port(spec, "host port", h)?,
        container_port: port(spec, "container port", c)?,
        protocol,
        host_ip,
    })
}

/// Parse every `-p` value and refuse the same host port/protocol/address twice.
pub fn parse_all(specs: &[String]) -> Result<Vec<PortMapping>, NetError> {
    let mut out: Vec<PortMapping> = Vec::new();
    for s in specs {
        let p = parse_publish(s)?;
        if out.iter().any(|o| {
            o.host_port == p.host_port
                && o.protocol == p.protocol
                && (o.host_ip == p.host_ip || o.host_ip.is_empty() || p.host_ip.is_empty())
        }) {
            return Err(NetError::Port(format!(
                "{s:?}: host port {}/{} is published twice",
                p.host_port, p.protocol
            )));
        }
        out.push(p);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pm(h: u16, c: u16, proto: &str, ip: &str) -> PortMapping {
        PortMapping {
            host_port: h,
            container_port: c,
            protocol: proto.into(),
            host_ip: ip.into(),
        }
    }

    #[test]
    fn forms() {
        assert_eq!(
            parse_publish("4000:80").expect("parse"),
            pm(4000, 80, "tcp", "")
        );
        assert_eq!(
            parse_publish("127.0.0.1:4000:80/udp").expect("parse"),
            pm(4000, 80, "udp", "127.0.0.1")
        );
        assert_eq!(
            parse_publish("[::1]:8080:80/TCP").expect("parse"),
            pm(8080, 80, "tcp", "::1")
        );
        assert_eq!(
            parse_publish(":1:65535").expect("parse"),
            pm(1, 65535, "tcp", "")
        );
    }

    #[test]
    fn rejects() {
        for bad in [
            "80",
            "0:80",
            "4000:65536",
            "4000:80/sctp",
            "a:80",
            "1.2.3:4000:80",
            "1:2:3:4",
            "[::1:80:80",
            "4000:-1",
            "4000:+80",
            "",
            "99999999999999999999:80",
        ] {
            let e = parse_publish(bad).expect_err(bad);
            assert!(e.to_string().contains("port"), "{bad}: {e}");
        }
        assert!(parse_all(&["4000:80".into(), "127.0.0.1:4000:81".into()]).is_err());
        assert!(parse_all(&["4000:80".into(), "4000:80/udp".into()]).is_ok());
    }

    #[test]
    fn serializes_for_portmap() {
        let v = serde_json::to_value(pm(4000, 80, "tcp", "")).expect("parse");
        assert_eq!(
            v,
            serde_json::json!({"hostPort": 4000, "containerPort": 80, "protocol": "tcp"})
        );
    }
}
