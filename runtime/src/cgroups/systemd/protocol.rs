//! The line-delimited JSON protocol between skiff and its D-Bus helper `skiff-systemd`.
//!
//! The D-Bus client (zbus) lives in that separate executable so the `skiff` binary stays small:
//! every plain `skiff run` would otherwise fault in pages of a D-Bus stack it never uses.
//! skiff writes one [`Request`] per line on the helper's stdin and reads one [`Response`] line
//! from its stdout; the helper exits when its stdin closes.
use serde::{Deserialize, Serialize};

/// File name of the helper executable, installed next to `skiff` (or on PATH).
pub const HELPER_NAME: &str = "skiff-systemd";

/// A D-Bus value of a unit property, the few types systemd's resource properties use.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum PropValue {
    /// D-Bus `b`.
    Bool(bool),
    /// D-Bus `t`.
    U64(u64),
    /// D-Bus `s`.
    Str(String),
    /// D-Bus `au` (e.g. `PIDs`).
    U32Array(Vec<u32>),
    /// D-Bus `ay` (e.g. the cpu masks of `AllowedCPUs`).
    Bytes(Vec<u8>),
}

/// One unit property as sent to systemd: name and value.
pub type Property = (String, PropValue);

/// What skiff asks the helper to do (one JSON object per line).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Request {
    /// Connect to systemd through the system bus; must come first.
    Connect,
    /// systemd's major version ([`Response::Version`], 0 when unknown).
    Version,
    /// Start transient unit `name` with `props` and wait for the job.
    StartTransientUnit {
        /// Unit name.
        name: String,
        /// Unit properties.
        props: Vec<Property>,
    },
    /// Stop unit `name` (waiting for the job) and reset its failed state.
    StopUnit {
        /// Unit name.
        name: String,
    },
    /// Change properties of a running unit (runtime only).
    SetUnitProperties {
        /// Unit name.
        name: String,
        /// Unit properties.
        props: Vec<Property>,
    },
    /// A string property of a unit ([`Response::Str`]).
    UnitString {
        /// Unit name.
        name: String,
        /// D-Bus interface, e.g. `org.freedesktop.systemd1.Scope`.
        iface: String,
        /// Property name, e.g. `ControlGroup`.
        prop: String,
    },
}

/// The helper's answer to one [`Request`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Response {
    /// Done, nothing to return.
    Ok,
    /// Answer to [`Request::Version`].
    Version(u32),
    /// Answer to [`Request::UnitString`]: None when the unit or property is unknown.
    Str(Option<String>),
    /// The request failed; the message is complete (it names the unit and the D-Bus error).
    Error(String),
}

/// The major number of systemd's `Version` property ("252.39-1~deb12u2", "v245.4-1.fc32").
pub fn parse_version(s: &str) -> u32 {
    let digits: String = s
        .trim_start_matches(['"', 'v'])
        .chars()
        .take_while(char::is_ascii_digit)
        .collect();
    digits.parse().unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions() {
        assert_eq!(parse_version("252.39-1~deb12u2"), 252);
        assert_eq!(parse_version("v245.4-1.fc32"), 245);
        assert_eq!(parse_version("\"249\""), 249);
        assert_eq!(parse_version("junk"), 0);
    }

    #[test]
    fn round_trip() {
        let req = Request::StartTransientUnit {
            name: "skiff-a.scope".into(),
            props: vec![
                ("Delegate".into(), PropValue::Bool(true)),
                ("PIDs".into(), PropValue::U32Array(vec![7])),
                ("AllowedCPUs".into(), PropValue::Bytes(vec![3])),
            ],
        };
        let line = serde_json::to_string(&req).expect("json");
        assert!(!line.contains('\n'));
        let back: Request = serde_json::from_str(&line).expect("parse");
        assert_eq!(back, req);
        let resp = Response::Error("x\ny".into());
        let line = serde_json::to_string(&resp).expect("json");
        assert!(!line.contains('\n'));
        assert_eq!(serde_json::from_str::<Response>(&line).ok(), Some(resp));
    }
}
