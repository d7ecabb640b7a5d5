//! A small blocking client for systemd's manager D-Bus API (org.freedesktop.systemd1), used only
//! by `--systemd-cgroup`: starting, changing and stopping a container's transient scope unit.
//! Errors are complete messages for skiff to print (the helper protocol carries strings).
use std::time::{Duration, Instant};

use zbus::blocking::connection::Builder;
use zbus::blocking::Connection;
use zbus::zvariant::{OwnedObjectPath, OwnedValue, Value};

use skiff::cgroups::systemd::protocol::{parse_version, PropValue, Property};

const DEST: &str = "org.freedesktop.systemd1";
const MANAGER_PATH: &str = "/org/freedesktop/systemd1";
const MANAGER: &str = "org.freedesktop.systemd1.Manager";
const PROPERTIES: &str = "org.freedesktop.DBus.Properties";
/// How long a start or stop job may take before we give up (runc waits 30 s too).
const JOB_TIMEOUT: Duration = Duration::from_secs(30);

/// An error message for skiff.
pub type Error = String;

/// A protocol property as its D-Bus value.
fn to_value(v: &PropValue) -> Value<'static> {
    match v {
        PropValue::Bool(b) => Value::Bool(*b),
        PropValue::U64(n) => Value::U64(*n),
        PropValue::Str(s) => Value::from(s.clone()),
        PropValue::U32Array(a) => Value::from(a.clone()),
        PropValue::Bytes(b) => Value::from(b.clone()),
    }
}

/// Protocol properties as the `a(sv)` systemd expects.
fn to_dbus(props: &[Property]) -> Vec<(&str, Value<'static>)> {
    props
        .iter()
        .map(|(k, v)| (k.as_str(), to_value(v)))
        .collect()
}

/// An open connection to systemd's manager.
pub struct Systemd {
    conn: Connection,
}

fn bus_error(what: &str, e: zbus::Error) -> Error {
    format!("--systemd-cgroup: {what}: {e}")
}

/// The D-Bus error name of a method error reply, if `e` is one.
fn error_name(e: &zbus::Error) -> Option<&str> {
    match e {
        zbus::Error::MethodError(name, _, _) => Some(name.as_str()),
        _ => None,
    }
}

impl Systemd {
    /// Connect to systemd through the system bus (`DBUS_SYSTEM_BUS_ADDRESS`, else
    /// unix:path=/run/dbus/system_bus_socket), as runc does.
    ///
    /// systemd's private socket (/run/systemd/private) is not used: systemd sends its replies
    /// there with a well-known name as the sender, which zbus rejects as an invalid unique name.
    pub fn connect() -> Result<Self, Error> {
        let conn = Builder::system()
            .and_then(|b| b.method_timeout(JOB_TIMEOUT).build())
            .map_err(|e| {
                bus_error(
                    "connecting to systemd through the D-Bus system bus (is dbus running? \
                     DBUS_SYSTEM_BUS_ADDRESS or /run/dbus/system_bus_socket)",
                    e,
                )
            })?;
        Ok(Self { conn })
    }

    fn manager_call<B>(&self, method: &str, body: &B) -> zbus::Result<zbus::Message>
    where
        B: serde::Serialize + zbus::zvariant::DynamicType,
    {
        self.conn
            .call_method(Some(DEST), MANAGER_PATH, Some(MANAGER), method, body)
    }

    /// A property of object `path` (interface `iface`).
    fn property(&self, path: &str, iface: &str, name: &str) -> zbus::Result<OwnedValue> {
        let reply =
            self.conn
                .call_method(Some(DEST), path, Some(PROPERTIES), "Get", &(iface, name))?;
        reply.body().deserialize::<OwnedValue>()
    }

    /// systemd's major version (0 when unknown), to leave out properties it does not know.
    pub fn version(&self) -> u32 {
        self.property(MANAGER_PATH, MANAGER, "Version")
            .ok()
            .and_then(|v| String::try_from(v).ok())
            .map(|s| parse_version(&s))
            .unwrap_or(0)
    }

    /// Start transient unit `name` with `props` and wait until systemd has finished the job.
    ///
    /// A leftover failed unit of the same name is reset and the start retried once, as runc does.
    pub fn start_transient_unit(&self, name: &str, props: &[Property]) -> Result<(), Error> {
        let props = to_dbus(props);
        let aux: Vec<(&str, Vec<(&str, Value<'_>)>)> = Vec::new();
        let mut retried = false;
        let job = loop {
            match self.manager_call("StartTransientUnit", &(name, "replace", &props, &aux)) {
                Ok(reply) => {
                    break reply
                        .body()
                        .deserialize::<OwnedObjectPath>()
                        .map_err(|e| bus_error("StartTransientUnit reply", e))?
                }
                Err(e)
                    if !retried
                        && error_name(&e) == Some("org.freedesktop.systemd1.UnitExists") =>
                {
                    retried = true;
                    self.reset_failed(name);
                }
                Err(e) => {
                    return Err(bus_error(
                        &format!("systemd refused to start unit {name}"),
                        e,
                    ))
                }
            }
        };
        self.wait_job(&job, name)?;
        match self.active_state(name).as_deref() {
            Some("active") | Some("activating") => Ok(()),
            state => {
                self.reset_failed(name);
                Err(format!(
                    "--systemd-cgroup: systemd did not start unit {name} (state {})",
                    state.unwrap_or("gone")
                ))
            }
        }
    }

    /// Stop unit `name` (waiting for the job) and clear a failed state so systemd forgets it.
    /// A unit that no longer exists counts as stopped.
    pub fn stop_unit(&self, name: &str) -> Result<(), Error> {
        let result = match self.manager_call("StopUnit", &(name, "replace")) {
            Ok(reply) => match reply.body().deserialize::<OwnedObjectPath>() {
                Ok(job) => self.wait_job(&job, name),
                Err(e) => Err(bus_error("StopUnit reply", e)),
            },
            Err(e) if error_name(&e) == Some("org.freedesktop.systemd1.NoSuchUnit") => Ok(()),
            Err(e) => Err(bus_error(&format!("stopping unit {name}"), e)),
        };
        self.reset_failed(name);
        result
    }

    /// Change properties of a running unit (runtime only, like `systemctl set-property --runtime`).
    pub fn set_unit_properties(&self, name: &str, props: &[Property]) -> Result<(), Error> {
        if props.is_empty() {
            return Ok(());
        }
        self.manager_call("SetUnitProperties", &(name, true, to_dbus(props)))
            .map(|_| ())
            .map_err(|e| bus_error(&format!("setting properties of unit {name}"), e))
    }

    /// Forget a failed unit (errors ignored: there may be nothing to reset).
    pub fn reset_failed(&self, name: &str) {
        let _ = self.manager_call("ResetFailedUnit", &(name,));
    }

    /// The unit's object path, None when systemd does not know it (any more).
    fn unit_path(&self, name: &str) -> Option<OwnedObjectPath> {
        self.manager_call("GetUnit", &(name,))
            .ok()?
            .body()
            .deserialize::<OwnedObjectPath>()
            .ok()
    }

    /// A string property of unit `name` (e.g. `ActiveState`, or `ControlGroup` of a scope).
    pub fn unit_string(&self, name: &str, iface: &str, prop: &str) -> Option<String> {
        let path = self.unit_path(name)?;
        let v = self.property(path.as_str(), iface, prop).ok()?;
        String::try_from(v).ok()
    }

    fn active_state(&self, name: &str) -> Option<String> {
        self.unit_string(name, "org.freedesktop.systemd1.Unit", "ActiveState")
    }

    /// Wait (bounded) until job `job` is gone from systemd's queue, which is when it has finished.
    fn wait_job(&self, job: &OwnedObjectPath, unit: &str) -> Result<(), Error> {
        let start = Instant::now();
        let mut pause = Duration::from_millis(1);
        loop {
            match self.property(job.as_str(), "org.freedesktop.systemd1.Job", "State") {
                // Still queued or running.
                Ok(_) => {}
                // The job object is removed when the job completes.
                Err(e) if error_name(&e).is_some() => return Ok(()),
                Err(e) => return Err(bus_error(&format!("waiting for the job of {unit}"), e)),
            }
            if start.elapsed() > JOB_TIMEOUT {
                return Err(format!(
                    "--systemd-cgroup: timed out after {}s waiting for systemd's job on unit {unit}",
                    JOB_TIMEOUT.as_secs()
                ));
            }
            std::thread::sleep(pause);
            pause = (pause * 2).min(Duration::from_millis(50));
        }
    }
}
