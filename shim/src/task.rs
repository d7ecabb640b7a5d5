//! The ttrpc Task service: containerd's view of the containers this shim runs.

use std::{
    collections::HashMap,
    fs,
    path::{Path, PathBuf},
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc, Condvar, Mutex, MutexGuard,
    },
    thread,
    time::Duration,
};

use containerd_shim::{
    api,
    monitor::{monitor_subscribe, Subject, Topic},
    mount::{mount_rootfs, umount_recursive},
    protos::{
        events::task::{
            TaskCreate, TaskDelete, TaskExecAdded, TaskExecStarted, TaskExit, TaskIO, TaskOOM,
            TaskPaused, TaskResumed, TaskStart,
        },
        protobuf::{
            well_known_types::{any::Any, timestamp::Timestamp},
            Message, MessageDyn,
        },
        shim::oci::{Options, ProcessDetails},
        topics,
        ttrpc::context::Context,
        types::task::ProcessInfo,
    },
    publisher::RemotePublisher,
    util::timestamp,
    ExitSignal, TtrpcContext, TtrpcResult,
};
use log::{debug, warn};

use crate::{
    error::{io, Error, Result},
    metrics, oom,
    runtime::{CommandIo, Runtime, RUNTIME_RECORD},
    stdio::{drain, PreparedIo, ProcessIo, StdioPaths},
};

/// How long an exit waits for the process's output to reach the fifos.
const DRAIN_LIMIT: Duration = Duration::from_secs(2);

static FILE_SEQ: AtomicU64 = AtomicU64::new(0);

/// One process (init or exec) of a container.
struct Proc {
    exec_id: String,
    pid: u32,
    status: api::Status,
    exit_status: u32,
    exited_at: Option<Timestamp>,
    paths: StdioPaths,
    io: Option<ProcessIo>,
    spec: Vec<u8>,
}

impl Proc {
    fn new(exec_id: &str, paths: StdioPaths) -> Self {
        Proc {
            exec_id: exec_id.to_string(),
            pid: 0,
            status: api::Status::CREATED,
            exit_status: 0,
            exited_at: None,
            paths,
            io: None,
            spec: Vec::new(),
        }
    }

    fn stopped(&self) -> bool {
        self.status == api::Status::STOPPED
    }
}

/// A container and its processes.
struct Container {
    bundle: PathBuf,
    runtime: Runtime,
    rootfs_mounted: bool,
    paused: bool,
    init: Proc,
    execs: HashMap<String, Proc>,
}

impl Container {
    fn process(&self, exec_id: &str) -> Result<&Proc> {
        if exec_id.is_empty() {
            return Ok(&self.init);
        }
        self.execs
            .get(exec_id)
            .ok_or_else(|| Error::NotFound(format!("process {exec_id}")))
    }

    fn process_mut(&mut self, exec_id: &str) -> Result<&mut Proc> {
        if exec_id.is_empty() {
            return Ok(&mut self.init);
        }
        self.execs
            .get_mut(exec_id)
            .ok_or_else(|| Error::NotFound(format!("process {exec_id}")))
    }

    fn log_path(&self) -> PathBuf {
        self.bundle.join("log.json")
    }
}

/// The error for an id this shim does not run: containerd treats NotFound as "already gone".
fn no_container(id: &str) -> Error {
    Error::NotFound(format!("container {id}"))
}

/// The container `id` of the shim's table, or NotFound.
fn container<'a>(map: &'a HashMap<String, Container>, id: &str) -> Result<&'a Container> {
    map.get(id).ok_or_else(|| no_container(id))
}

/// The container `id` of the shim's table for changing it, or NotFound.
fn container_mut<'a>(
    map: &'a mut HashMap<String, Container>,
    id: &str,
) -> Result<&'a mut Container> {
    map.get_mut(id).ok_or_else(|| no_container(id))
}

struct Inner {
    namespace: String,
    containers: Mutex<HashMap<String, Container>>,
    changed: Condvar,
    publisher: Mutex<RemotePublisher>,
    exit: Arc<ExitSignal>,
}

/// The Task service handed to the ttrpc server; cheap to clone.
#[derive(Clone)]
pub struct TaskService {
    inner: Arc<Inner>,
}

fn ts_or_now(t: &Option<Timestamp>) -> Timestamp {
    t.clone().unwrap_or_else(|| timestamp().unwrap_or_default())
}

fn unmount_rootfs(bundle: &Path) {
    let rootfs = bundle.join("rootfs");
    let target = rootfs.to_string_lossy().into_owned();
    if let Err(e) = umount_recursive(Some(&target), libc::MNT_DETACH) {
        warn!("unmount {target}: {e}");
    }
}

/// Best-effort cleanup of a container's runtime state and rootfs after a crash (`delete`).
pub fn cleanup_after_crash(bundle: &Path, id: &str, namespace: &str) -> Result<()> {
    let runtime = match Runtime::load(bundle) {
        Some(r) => r,
        None => Runtime::new("", "", namespace)?,
    };
    if let Err(e) = runtime.simple(&["delete", "--force", id]) {
        debug!("runtime delete after crash: {e}");
    }
    unmount_rootfs(bundle);
    let _ = fs::remove_file(bundle.join(RUNTIME_RECORD));
    Ok(())
}

fn read_pid(path: &Path) -> Result<u32> {
    let text = fs::read_to_string(path).map_err(io(format!("read {}", path.display())))?;
    text.trim()
        .parse()
        .map_err(|_| Error::Runtime(format!("bad pid file {}: {:?}", path.display(), text)))
}

impl TaskService {
    /// Creates the service and its exit-watching thread.
    pub fn new(namespace: &str, publisher: RemotePublisher, exit: Arc<ExitSignal>) -> Self {
        let svc = TaskService {
            inner: Arc::new(Inner {
                namespace: namespace.to_string(),
                containers: Mutex::new(HashMap::new()),
                changed: Condvar::new(),
                publisher: Mutex::new(publisher),
                exit,
            }),
        };
        match monitor_subscribe(Topic::Pid) {
            Ok(sub) => {
                let me = svc.clone();
                let spawned = thread::Builder::new().name("exits".into()).spawn(move || {
                    while let Ok(ev) = sub.rx.recv() {
                        if let Subject::Pid(pid) = ev.subject {
                            me.on_exit(pid, ev.exit_code);
                        }
                    }
                });
                if let Err(e) = spawned {
                    warn!("cannot start exit thread: {e}");
                }
            }
            Err(e) => warn!("cannot subscribe to exits: {e}"),
        }
        svc
    }

    fn lock(&self) -> Result<MutexGuard<'_, HashMap<String, Container>>> {
        self.inner
            .containers
            .lock()
            .map_err(|_| Error::Runtime("shim state lock poisoned".into()))
    }

    fn publish(&self, topic: &str, event: Box<dyn MessageDyn>) {
        let Ok(p) = self.inner.publisher.lock() else {
            return;
        };
        if let Err(e) = p.publish(Context::default(), topic, &self.inner.namespace, event) {
            warn!("publish {topic}: {e}");
        }
    }

    /// Records a reaped exit of one of our processes and tells containerd.
    fn on_exit(&self, pid: i32, code: i32) {
        if pid <= 0 {
            return;
        }
        let found = {
            let Ok(mut map) = self.lock() else { return };
            let mut found = None;
            for (cid, c) in map.iter_mut() {
                let procs = std::iter::once(&mut c.init).chain(c.execs.values_mut());
                for p in procs {
                    if p.pid == pid as u32 && !p.stopped() {
                        let drain = p.io.as_mut().map(|io| io.take_drain());
                        found = Some((cid.clone(), p.exec_id.clone(), drain));
                    }
                }
            }
            found
        };
        let Some((cid, exec_id, drain_rx)) = found else {
            return;
        };
        if let Some((rx, pending)) = drain_rx {
            drain(rx, pending, DRAIN_LIMIT);
        }
        let exited_at = timestamp().unwrap_or_default();
        {
            let Ok(mut map) = self.lock() else { return };
            let Some(c) = map.get_mut(&cid) else { return };
            let Ok(p) = c.process_mut(&exec_id) else {
                return;
            };
            p.status = api::Status::STOPPED;
            p.exit_status = code as u32;
            p.exited_at = Some(exited_at.clone());
            if exec_id.is_empty() {
                c.paused = false;
            }
        }
        self.inner.changed.notify_all();
        let id = if exec_id.is_empty() {
            cid.clone()
        } else {
            exec_id
        };
        self.publish(
            topics::TASK_EXIT_EVENT_TOPIC,
            Box::new(TaskExit {
                container_id: cid,
                id,
                pid: pid as u32,
                exit_status: code as u32,
                exited_at: Some(exited_at).into(),
                ..Default::default()
            }),
        );
    }

    fn do_create(&self, req: &api::CreateTaskRequest) -> Result<u32> {
        if !req.checkpoint.is_empty() || !req.parent_checkpoint.is_empty() {
            return Err(Error::Unimplemented(
                "restore from checkpoint is not supported by the skiff shim".into(),
            ));
        }
        let mut map = self.lock()?;
        if map.contains_key(&req.id) {
            return Err(Error::FailedPrecondition(format!(
                "container {} already exists",
                req.id
            )));
        }
        // Only runc-shaped options carry BinaryName/Root; containerd's CRI sends other runtime
        // types a different message (runtimeoptions: TypeUrl/ConfigPath), which has neither.
        let opts = match req.options.as_ref() {
            Some(any) if any.type_url.ends_with("containerd.runc.v1.Options") => {
                Options::parse_from_bytes(&any.value)
                    .map_err(|e| Error::InvalidArgument(format!("runtime options: {e}")))?
            }
            Some(any) if !any.type_url.is_empty() => {
                debug!("ignoring runtime options of type {}", any.type_url);
                Options::default()
            }
            _ => Options::default(),
        };
        let bundle = PathBuf::from(&req.bundle);
        let runtime = Runtime::new(&opts.binary_name, &opts.root, &self.inner.namespace)?;
        runtime.record(&bundle)?;
        let mut rootfs_mounted = false;
        if !req.rootfs.is_empty() {
            let rootfs = bundle.join("rootfs");
            fs::create_dir_all(&rootfs).map_err(io("create bundle rootfs"))?;
            for m in &req.rootfs {
                if let Err(e) = mount_rootfs(Some(&m.type_), Some(&m.source), &m.options, &rootfs) {
                    unmount_rootfs(&bundle);
                    return Err(Error::Runtime(format!(
                        "mount {} {} on rootfs: {e}",
                        m.type_, m.source
                    )));
                }
            }
            rootfs_mounted = true;
        }
        let paths = StdioPaths {
            stdin: req.stdin.clone(),
            stdout: req.stdout.clone(),
            stderr: req.stderr.clone(),
            terminal: req.terminal,
        };
        let fail = |e: Error| {
            if rootfs_mounted {
                unmount_rootfs(&bundle);
            }
            e
        };
        let (prep, cio) = PreparedIo::prepare(&paths).map_err(fail)?;
        let pid_file = bundle.join("init.pid");
        let bundle_s = bundle.to_string_lossy().into_owned();
        let pid_s = pid_file.to_string_lossy().into_owned();
        let mut args = vec!["create", "--bundle", &bundle_s, "--pid-file", &pid_s];
        let sock = prep
            .console_socket()
            .map(|p| p.to_string_lossy().into_owned());
        if let Some(s) = &sock {
            args.push("--console-socket");
            args.push(s);
        }
        if opts.no_pivot_root {
            args.push("--no-pivot");
        }
        if opts.no_new_keyring {
            args.push("--no-new-keyring");
        }
        args.push(&req.id);
        let log = bundle.join("log.json");
        let result = run_with_io(&runtime, &args, &log, cio, prep)
            .and_then(|io| read_pid(&pid_file).map(|pid| (io, pid)));
        let (pio, pid) = match result {
            Ok(v) => v,
            Err(e) => {
                let _ = runtime.simple(&["delete", "--force", &req.id]);
                return Err(fail(e));
            }
        };
        let mut init = Proc::new("", paths.clone());
        init.pid = pid;
        init.io = Some(pio);
        map.insert(
            req.id.clone(),
            Container {
                bundle: bundle.clone(),
                runtime,
                rootfs_mounted,
                paused: false,
                init,
                execs: HashMap::new(),
            },
        );
        drop(map);
        if let Some(dir) = metrics::memory_cgroup_v1(pid) {
            let me = self.clone();
            let cid = req.id.clone();
            let watched = oom::watch(dir, move || {
                me.publish(
                    topics::TASK_OOM_EVENT_TOPIC,
                    Box::new(TaskOOM {
                        container_id: cid.clone(),
                        ..Default::default()
                    }),
                )
            });
            if let Err(e) = watched {
                debug!("no oom watch: {e}");
            }
        }
        self.publish(
            topics::TASK_CREATE_EVENT_TOPIC,
            Box::new(TaskCreate {
                container_id: req.id.clone(),
                bundle: req.bundle.clone(),
                rootfs: req.rootfs.clone(),
                io: Some(TaskIO {
                    stdin: paths.stdin,
                    stdout: paths.stdout,
                    stderr: paths.stderr,
                    terminal: paths.terminal,
                    ..Default::default()
                })
                .into(),
                pid,
                ..Default::default()
            }),
        );
        Ok(pid)
    }

    fn do_start(&self, req: &api::StartRequest) -> Result<u32> {
        let mut map = self.lock()?;
        let c = container_mut(&mut map, &req.id)?;
        if req.exec_id.is_empty() {
            if c.init.status != api::Status::CREATED {
                return Err(Error::FailedPrecondition(format!(
                    "container {} is not in created state",
                    req.id
                )));
            }
            c.runtime.run(
                &["start", &req.id],
                Some(&c.log_path()),
                CommandIo::null(),
                false,
            )?;
            c.init.status = api::Status::RUNNING;
            let pid = c.init.pid;
            drop(map);
            self.publish(
                topics::TASK_START_EVENT_TOPIC,
                Box::new(TaskStart {
                    container_id: req.id.clone(),
                    pid,
                    ..Default::default()
                }),
            );
            return Ok(pid);
        }
        if c.init.stopped() {
            return Err(Error::FailedPrecondition(format!(
                "container {} is not running",
                req.id
            )));
        }
        let runtime = c.runtime.clone();
        let bundle = c.bundle.clone();
        let log = c.log_path();
        let p = c.process_mut(&req.exec_id)?;
        if p.status != api::Status::CREATED {
            return Err(Error::FailedPrecondition(format!(
                "exec {} already started",
                req.exec_id
            )));
        }
        let n = FILE_SEQ.fetch_add(1, Ordering::Relaxed);
        let spec_file = bundle.join(format!(".exec-{n}.json"));
        let pid_file = bundle.join(format!(".exec-{n}.pid"));
        fs::write(&spec_file, &p.spec).map_err(io("write exec process spec"))?;
        let (prep, cio) = PreparedIo::prepare(&p.paths)?;
        let spec_s = spec_file.to_string_lossy().into_owned();
        let pid_s = pid_file.to_string_lossy().into_owned();
        let mut args = vec![
            "exec",
            "--detach",
            "--pid-file",
            &pid_s,
            "--process",
            &spec_s,
        ];
        let sock = prep
            .console_socket()
            .map(|p| p.to_string_lossy().into_owned());
        if let Some(s) = &sock {
            args.push("--console-socket");
            args.push(s);
        }
        args.push(&req.id);
        let result = run_with_io(&runtime, &args, &log, cio, prep)
            .and_then(|io| read_pid(&pid_file).map(|pid| (io, pid)));
        let _ = fs::remove_file(&spec_file);
        let _ = fs::remove_file(&pid_file);
        let (pio, pid) = match result {
            Ok(v) => v,
            Err(e) => {
                // Never started: it is finished for Wait/Kill/Delete (containerd's cleanup of a
                // failed exec kills and waits for it; a blocked Wait would hang that cleanup).
                p.status = api::Status::STOPPED;
                p.exit_status = 255;
                p.exited_at = timestamp().ok();
                drop(map);
                self.inner.changed.notify_all();
                return Err(e);
            }
        };
        p.pid = pid;
        p.io = Some(pio);
        p.status = api::Status::RUNNING;
        drop(map);
        self.publish(
            topics::TASK_EXEC_STARTED_EVENT_TOPIC,
            Box::new(TaskExecStarted {
                container_id: req.id.clone(),
                exec_id: req.exec_id.clone(),
                pid,
                ..Default::default()
            }),
        );
        Ok(pid)
    }

    fn do_delete(&self, req: &api::DeleteRequest) -> Result<api::DeleteResponse> {
        let mut map = self.lock()?;
        let c = container_mut(&mut map, &req.id)?;
        if !req.exec_id.is_empty() {
            let p = c.process(&req.exec_id)?;
            if p.status == api::Status::RUNNING {
                return Err(Error::FailedPrecondition(format!(
                    "exec {} is still running",
                    req.exec_id
                )));
            }
            let mut p = c
                .execs
                .remove(&req.exec_id)
                .ok_or_else(|| Error::NotFound(format!("process {}", req.exec_id)))?;
            if let Some(io) = p.io.as_mut() {
                io.close();
            }
            return Ok(api::DeleteResponse {
                pid: p.pid,
                exit_status: p.exit_status,
                exited_at: Some(ts_or_now(&p.exited_at)).into(),
                ..Default::default()
            });
        }
        if c.init.status == api::Status::RUNNING || c.paused {
            return Err(Error::FailedPrecondition(format!(
                "container {} is still running; kill it first",
                req.id
            )));
        }
        let force = !c.init.stopped();
        let del = if force {
            c.runtime.simple(&["delete", "--force", &req.id])
        } else {
            c.runtime.simple(&["delete", &req.id])
        };
        if let Err(e) = del {
            // Already gone from the runtime is fine; anything else is reported.
            let msg = e.to_string();
            if !msg.contains("not exist") && !msg.contains("not found") {
                return Err(e);
            }
        }
        let Some(mut c) = map.remove(&req.id) else {
            return Err(no_container(&req.id));
        };
        drop(map);
        for p in std::iter::once(&mut c.init).chain(c.execs.values_mut()) {
            if let Some(io) = p.io.as_mut() {
                io.close();
            }
        }
        if c.rootfs_mounted {
            unmount_rootfs(&c.bundle);
        }
        let _ = fs::remove_file(c.bundle.join(RUNTIME_RECORD));
        let _ = fs::remove_file(c.bundle.join("init.pid"));
        let exited_at = ts_or_now(&c.init.exited_at);
        let status = if force { 137 } else { c.init.exit_status };
        self.inner.changed.notify_all();
        self.publish(
            topics::TASK_DELETE_EVENT_TOPIC,
            Box::new(TaskDelete {
                container_id: req.id.clone(),
                pid: c.init.pid,
                exit_status: status,
                exited_at: Some(exited_at.clone()).into(),
                id: req.id.clone(),
                ..Default::default()
            }),
        );
        Ok(api::DeleteResponse {
            pid: c.init.pid,
            exit_status: status,
            exited_at: Some(exited_at).into(),
            ..Default::default()
        })
    }

    fn do_kill(&self, req: &api::KillRequest) -> Result<()> {
        let map = self.lock()?;
        let c = container(&map, &req.id)?;
        let sig = req.signal.to_string();
        if req.exec_id.is_empty() {
            if c.init.stopped() && !req.all {
                return Err(Error::NotFound(format!(
                    "container {}: process already finished",
                    req.id
                )));
            }
            let mut args = vec!["kill"];
            if req.all {
                args.push("--all");
            }
            args.push(&req.id);
            args.push(&sig);
            // The runtime refusing because the container already stopped is NotFound for
            // containerd (whose kill-then-delete cleanup tolerates exactly that), as with runc's
            // shim.
            return match c.runtime.run(&args, None, CommandIo::null(), false) {
                Ok(_) => Ok(()),
                Err(Error::Runtime(msg))
                    if c.init.stopped()
                        || msg.contains("not running")
                        || msg.contains("no such process") =>
                {
                    Err(Error::NotFound(format!(
                        "container {}: process already finished ({msg})",
                        req.id
                    )))
                }
                Err(e) => Err(e),
            };
        }
        let p = c.process(&req.exec_id)?;
        if p.stopped() || p.pid == 0 {
            return Err(Error::NotFound(format!(
                "exec {}: process already finished",
                req.exec_id
            )));
        }
        let signal = nix::sys::signal::Signal::try_from(req.signal as i32)
            .map_err(|_| Error::InvalidArgument(format!("bad signal {}", req.signal)))?;
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(p.pid as i32), signal)
            .map_err(crate::error::errno(format!("kill exec {}", req.exec_id)))
    }

    fn do_pids(&self, req: &api::PidsRequest) -> Result<api::PidsResponse> {
        let map = self.lock()?;
        let c = container(&map, &req.id)?;
        let out = c.runtime.run(
            &["ps", "--format", "json", &req.id],
            None,
            CommandIo::null(),
            true,
        )?;
        let pids: Vec<u32> = serde_json::from_slice(&out.stdout)
            .map_err(|e| Error::Runtime(format!("runtime ps output: {e}")))?;
        let mut resp = api::PidsResponse::default();
        for pid in pids {
            let mut info = ProcessInfo {
                pid,
                ..Default::default()
            };
            if let Some(p) = c.execs.values().find(|p| p.pid == pid) {
                let d = ProcessDetails {
                    exec_id: p.exec_id.clone(),
                    ..Default::default()
                };
                if let Ok(value) = d.write_to_bytes() {
                    info.info = Some(Any {
                        type_url: "containerd.runc.v1.ProcessDetails".into(),
                        value,
                        ..Default::default()
                    })
                    .into();
                }
            }
            resp.processes.push(info);
        }
        Ok(resp)
    }

    fn do_pause(&self, id: &str, pause: bool) -> Result<()> {
        let mut map = self.lock()?;
        let c = container_mut(&mut map, id)?;
        let verb = if pause { "pause" } else { "resume" };
        c.runtime.simple(&[verb, id])?;
        c.paused = pause;
        drop(map);
        if pause {
            self.publish(
                topics::TASK_PAUSED_EVENT_TOPIC,
                Box::new(TaskPaused {
                    container_id: id.to_string(),
                    ..Default::default()
                }),
            );
        } else {
            self.publish(
                topics::TASK_RESUMED_EVENT_TOPIC,
                Box::new(TaskResumed {
                    container_id: id.to_string(),
                    ..Default::default()
                }),
            );
        }
        Ok(())
    }

    fn do_update(&self, req: &api::UpdateTaskRequest) -> Result<()> {
        let map = self.lock()?;
        let c = container(&map, &req.id)?;
        let Some(res) = req.resources.as_ref() else {
            return Err(Error::InvalidArgument("update without resources".into()));
        };
        // The resources are a JSON-encoded OCI LinuxResources; validate before handing over.
        serde_json::from_slice::<oci_spec::runtime::LinuxResources>(&res.value)
            .map_err(|e| Error::InvalidArgument(format!("update resources: {e}")))?;
        let n = FILE_SEQ.fetch_add(1, Ordering::Relaxed);
        let file = c.bundle.join(format!(".update-{n}.json"));
        fs::write(&file, &res.value).map_err(io("write update resources"))?;
        let f = file.to_string_lossy().into_owned();
        let r = c.runtime.simple(&["update", "--resources", &f, &req.id]);
        let _ = fs::remove_file(&file);
        r.map(|_| ())
    }

    fn do_wait(&self, req: &api::WaitRequest) -> Result<api::WaitResponse> {
        let mut map = self.lock()?;
        loop {
            let c = container(&map, &req.id)?;
            let p = c.process(&req.exec_id)?;
            if p.stopped() {
                return Ok(api::WaitResponse {
                    exit_status: p.exit_status,
                    exited_at: Some(ts_or_now(&p.exited_at)).into(),
                    ..Default::default()
                });
            }
            map = self
                .inner
                .changed
                .wait(map)
                .map_err(|_| Error::Runtime("shim state lock poisoned".into()))?;
        }
    }
}

/// Runs a runtime command that starts a process, then completes (or abandons) its stdio.
fn run_with_io(
    runtime: &Runtime,
    args: &[&str],
    log: &Path,
    cio: CommandIo,
    prep: PreparedIo,
) -> Result<ProcessIo> {
    match runtime.run(args, Some(log), cio, false) {
        Ok(_) => prep.finish(),
        Err(e) => {
            prep.abort();
            Err(e)
        }
    }
}

impl containerd_shim::Task for TaskService {
    fn state(
        &self,
        _ctx: &TtrpcContext,
        req: api::StateRequest,
    ) -> TtrpcResult<api::StateResponse> {
        let map = self.lock()?;
        let c = container(&map, &req.id)?;
        let p = c.process(&req.exec_id)?;
        let status = if req.exec_id.is_empty() && c.paused && !p.stopped() {
            api::Status::PAUSED
        } else {
            p.status
        };
        Ok(api::StateResponse {
            id: req.id.clone(),
            bundle: c.bundle.to_string_lossy().into_owned(),
            pid: p.pid,
            status: status.into(),
            stdin: p.paths.stdin.clone(),
            stdout: p.paths.stdout.clone(),
            stderr: p.paths.stderr.clone(),
            terminal: p.paths.terminal,
            exit_status: p.exit_status,
            exited_at: p.exited_at.clone().into(),
            exec_id: req.exec_id.clone(),
            ..Default::default()
        })
    }

    fn create(
        &self,
        _ctx: &TtrpcContext,
        req: api::CreateTaskRequest,
    ) -> TtrpcResult<api::CreateTaskResponse> {
        let pid = self.do_create(&req)?;
        Ok(api::CreateTaskResponse {
            pid,
            ..Default::default()
        })
    }

    fn start(
        &self,
        _ctx: &TtrpcContext,
        req: api::StartRequest,
    ) -> TtrpcResult<api::StartResponse> {
        let pid = self.do_start(&req)?;
        Ok(api::StartResponse {
            pid,
            ..Default::default()
        })
    }

    fn delete(
        &self,
        _ctx: &TtrpcContext,
        req: api::DeleteRequest,
    ) -> TtrpcResult<api::DeleteResponse> {
        Ok(self.do_delete(&req)?)
    }

    fn pids(&self, _ctx: &TtrpcContext, req: api::PidsRequest) -> TtrpcResult<api::PidsResponse> {
        Ok(self.do_pids(&req)?)
    }

    fn pause(&self, _ctx: &TtrpcContext, req: api::PauseRequest) -> TtrpcResult<api::Empty> {
        self.do_pause(&req.id, true)?;
        Ok(api::Empty::default())
    }

    fn resume(&self, _ctx: &TtrpcContext, req: api::ResumeRequest) -> TtrpcResult<api::Empty> {
        self.do_pause(&req.id, false)?;
        Ok(api::Empty::default())
    }

    fn checkpoint(
        &self,
        _ctx: &TtrpcContext,
        _req: api::CheckpointTaskRequest,
    ) -> TtrpcResult<api::Empty> {
        Err(Error::Unimplemented(
            "checkpoint is not supported by the skiff shim (no CRIU integration)".into(),
        )
        .into())
    }

    fn kill(&self, _ctx: &TtrpcContext, req: api::KillRequest) -> TtrpcResult<api::Empty> {
        self.do_kill(&req)?;
        Ok(api::Empty::default())
    }

    fn exec(&self, _ctx: &TtrpcContext, req: api::ExecProcessRequest) -> TtrpcResult<api::Empty> {
        {
            let mut map = self.lock()?;
            let c = container_mut(&mut map, &req.id)?;
            if req.exec_id.is_empty() || c.execs.contains_key(&req.exec_id) {
                return Err(Error::FailedPrecondition(format!(
                    "exec id {:?} is empty or already exists",
                    req.exec_id
                ))
                .into());
            }
            let spec = req
                .spec
                .as_ref()
                .map(|s| s.value.clone())
                .ok_or_else(|| Error::InvalidArgument("exec without process spec".into()))?;
            serde_json::from_slice::<oci_spec::runtime::Process>(&spec)
                .map_err(|e| Error::InvalidArgument(format!("exec process spec: {e}")))?;
            let mut p = Proc::new(
                &req.exec_id,
                StdioPaths {
                    stdin: req.stdin.clone(),
                    stdout: req.stdout.clone(),
                    stderr: req.stderr.clone(),
                    terminal: req.terminal,
                },
            );
            p.spec = spec;
            c.execs.insert(req.exec_id.clone(), p);
        }
        self.publish(
            topics::TASK_EXEC_ADDED_EVENT_TOPIC,
            Box::new(TaskExecAdded {
                container_id: req.id.clone(),
                exec_id: req.exec_id.clone(),
                ..Default::default()
            }),
        );
        Ok(api::Empty::default())
    }

    fn resize_pty(
        &self,
        _ctx: &TtrpcContext,
        req: api::ResizePtyRequest,
    ) -> TtrpcResult<api::Empty> {
        let map = self.lock()?;
        let c = container(&map, &req.id)?;
        let p = c.process(&req.exec_id)?;
        match &p.io {
            Some(io) => io.resize(req.width, req.height)?,
            None => return Err(Error::FailedPrecondition("process has no terminal".into()).into()),
        }
        Ok(api::Empty::default())
    }

    fn close_io(&self, _ctx: &TtrpcContext, req: api::CloseIORequest) -> TtrpcResult<api::Empty> {
        let map = self.lock()?;
        let c = container(&map, &req.id)?;
        let p = c.process(&req.exec_id)?;
        if req.stdin {
            if let Some(io) = &p.io {
                io.close_stdin();
            }
        }
        Ok(api::Empty::default())
    }

    fn update(&self, _ctx: &TtrpcContext, req: api::UpdateTaskRequest) -> TtrpcResult<api::Empty> {
        self.do_update(&req)?;
        Ok(api::Empty::default())
    }

    fn wait(&self, _ctx: &TtrpcContext, req: api::WaitRequest) -> TtrpcResult<api::WaitResponse> {
        Ok(self.do_wait(&req)?)
    }

    fn stats(
        &self,
        _ctx: &TtrpcContext,
        req: api::StatsRequest,
    ) -> TtrpcResult<api::StatsResponse> {
        let pid = {
            let map = self.lock()?;
            let c = container(&map, &req.id)?;
            if c.init.stopped() {
                return Err(
                    Error::FailedPrecondition(format!("container {} is stopped", req.id)).into(),
                );
            }
            c.init.pid
        };
        let stats = metrics::collect(pid)?;
        Ok(api::StatsResponse {
            stats: Some(stats).into(),
            ..Default::default()
        })
    }

    fn connect(
        &self,
        _ctx: &TtrpcContext,
        req: api::ConnectRequest,
    ) -> TtrpcResult<api::ConnectResponse> {
        let map = self.lock()?;
        let task_pid = map.get(&req.id).map(|c| c.init.pid).unwrap_or(0);
        Ok(api::ConnectResponse {
            shim_pid: std::process::id(),
            task_pid,
            version: env!("CARGO_PKG_VERSION").to_string(),
            ..Default::default()
        })
    }

    fn shutdown(&self, _ctx: &TtrpcContext, req: api::ShutdownRequest) -> TtrpcResult<api::Empty> {
        let empty = self.lock()?.is_empty();
        if empty || req.now {
            self.inner.exit.signal();
        }
        Ok(api::Empty::default())
    }
}
