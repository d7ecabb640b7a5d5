//! `skiff-systemd`: the D-Bus client of skiff's systemd cgroup driver (`skiff --systemd-cgroup`),
//! a separate executable so the `skiff` binary does not carry (and fault in) a D-Bus stack.
//!
//! skiff starts it, writes line-delimited JSON requests on its stdin and reads one JSON response
//! line per request from its stdout (`skiff::cgroups::systemd::protocol`); it exits when stdin
//! closes. Not meant to be run by hand.
use std::io::{BufRead, Write};

use skiff::cgroups::systemd::protocol::{Request, Response};

mod dbus;

fn handle(conn: &mut Option<dbus::Systemd>, req: Request) -> Response {
    if let Request::Connect = req {
        return match dbus::Systemd::connect() {
            Ok(c) => {
                *conn = Some(c);
                Response::Ok
            }
            Err(e) => Response::Error(e),
        };
    }
    let Some(sd) = conn.as_ref() else {
        return Response::Error("skiff-systemd: not connected (send connect first)".into());
    };
    let done = |r: Result<(), String>| match r {
        Ok(()) => Response::Ok,
        Err(e) => Response::Error(e),
    };
    match req {
        Request::Connect => Response::Ok,
        Request::Version => Response::Version(sd.version()),
        Request::StartTransientUnit { name, props } => done(sd.start_transient_unit(&name, &props)),
        Request::StopUnit { name } => done(sd.stop_unit(&name)),
        Request::SetUnitProperties { name, props } => done(sd.set_unit_properties(&name, &props)),
        Request::UnitString { name, iface, prop } => {
            Response::Str(sd.unit_string(&name, &iface, &prop))
        }
    }
}

fn main() {
    let stdin = std::io::stdin().lock();
    let mut stdout = std::io::stdout().lock();
    let mut conn = None;
    for line in stdin.lines() {
        let Ok(line) = line else { break };
        if line.trim().is_empty() {
            continue;
        }
        let resp = match serde_json::from_str::<Request>(&line) {
            Ok(req) => handle(&mut conn, req),
            Err(e) => Response::Error(format!("skiff-systemd: bad request: {e}")),
        };
        let Ok(mut out) = serde_json::to_string(&resp) else {
            break;
        };
        out.push('\n');
        if stdout
            .write_all(out.as_bytes())
            .and_then(|()| stdout.flush())
            .is_err()
        {
            break;
        }
    }
}
