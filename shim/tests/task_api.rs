//! The shim's Task API spoken directly over ttrpc (no containerd): covers the calls `ctr` 1.6
//! cannot make (Update, CloseIO, Checkpoint's error) and runc-shaped runtime options.

use std::{
    fs,
    os::unix::fs::symlink,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::{Arc, Mutex},
    thread,
    time::{Duration, Instant},
};

use containerd_shim::{
    api,
    protos::{
        cgroups::metrics::Metrics,
        events::task::TaskExit,
        protobuf::{well_known_types::any::Any, Message},
        shim::{events::ForwardRequest, oci::Options},
        shim_sync::{create_events, Events, TaskClient},
        ttrpc::{self, context, Client, Code, Server},
        types::empty::Empty,
    },
};

const TIMEOUT_NS: i64 = 30_000_000_000;

#[derive(Default)]
struct Recorder {
    topics: Mutex<Vec<String>>,
    exits: Mutex<Vec<u32>>,
}

impl Events for Recorder {
    fn forward(&self, _ctx: &ttrpc::TtrpcContext, req: ForwardRequest) -> ttrpc::Result<Empty> {
        if let Some(env) = req.envelope.as_ref() {
            if let Ok(mut t) = self.topics.lock() {
                t.push(env.topic.clone());
            }
            if env.topic == "/tasks/exit" {
                if let Some(ev) = env.event.as_ref() {
                    if let Ok(exit) = TaskExit::parse_from_bytes(&ev.value) {
                        if let Ok(mut e) = self.exits.lock() {
                            e.push(exit.exit_status);
                        }
                    }
                }
            }
        }
        Ok(Empty::default())
    }
}

/// Everything the test made; removed on drop even when an assertion failed.
struct Fixture {
    dir: PathBuf,
    id: String,
    shim: Option<Child>,
    runc_root: PathBuf,
}

impl Drop for Fixture {
    fn drop(&mut self) {
        let _ = Command::new("runc")
            .arg("--root")
            .arg(&self.runc_root)
            .args(["delete", "--force", &self.id])
            .stderr(Stdio::null())
            .status();
        if let Some(mut c) = self.shim.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        let rootfs = self.dir.join("bundle/rootfs");
        let _ = nix::mount::umount2(&rootfs, nix::mount::MntFlags::MNT_DETACH);
        let _ = fs::remove_dir_all(&self.runc_root);
        let _ = fs::remove_dir_all(&self.dir);
    }
}

fn runc() -> Option<PathBuf> {
    ["/usr/sbin/runc", "/usr/bin/runc", "/sbin/runc"]
        .iter()
        .map(PathBuf::from)
        .find(|p| p.exists())
}

fn make_bundle(bundle: &Path, id: &str) {
    let rootfs = bundle.join("rootfs");
    fs::create_dir_all(rootfs.join("bin")).expect("rootfs");
    for d in ["proc", "sys", "dev", "tmp"] {
        fs::create_dir_all(rootfs.join(d)).expect("rootfs dir");
    }
    fs::copy("/bin/busybox", rootfs.join("bin/busybox")).expect("copy busybox");
    for applet in ["sh", "sleep", "cat", "true"] {
        symlink("busybox", rootfs.join("bin").join(applet)).expect("applet link");
    }
    let config = serde_json::json!({
        "ociVersion": "1.0.2",
        "process": {
            "terminal": false, "user": {"uid": 0, "gid": 0},
            "args": ["sh", "-c", "cat; exit 9"],
            "env": ["PATH=/bin"], "cwd": "/",
            "capabilities": {"bounding": ["CAP_KILL"], "effective": ["CAP_KILL"], "permitted": ["CAP_KILL"]},
            "noNewPrivileges": true
        },
        "root": {"path": "rootfs", "readonly": true},
        "hostname": "t",
        "mounts": [
            {"destination": "/proc", "type": "proc", "source": "proc"},
            {"destination": "/dev", "type": "tmpfs", "source": "tmpfs", "options": ["nosuid", "strictatime", "mode=755", "size=65536k"]}
        ],
        "linux": {
            "cgroupsPath": format!("/skiff-shim-test-{id}"),
            "resources": {"memory": {"limit": 33554432}},
            "namespaces": [{"type": "pid"}, {"type": "ipc"}, {"type": "uts"}, {"type": "mount"}, {"type": "network"}]
        }
    });
    fs::write(bundle.join("config.json"), config.to_string()).expect("config.json");
}

#[test]
fn task_api_over_ttrpc_with_runc() {
    if !nix::unistd::geteuid().is_root() {
        eprintln!("SKIP: needs root");
        return;
    }
    let Some(runc) = runc() else {
        eprintln!("SKIP: runc is not installed");
        return;
    };
    let id = format!("shimapi{}", std::process::id());
    let dir = PathBuf::from(format!("/tmp/skiff-shim-api-{}", std::process::id()));
    let _ = fs::remove_dir_all(&dir);
    fs::create_dir_all(dir.join("bundle")).expect("tmp dir");
    let mut fx = Fixture {
        dir: dir.clone(),
        id: id.clone(),
        shim: None,
        runc_root: dir.join("runc-root"),
    };
    make_bundle(&dir.join("bundle"), &id);

    // containerd's events endpoint, played by the test.
    let recorder = Arc::new(Recorder::default());
    let events_sock = dir.join("events.sock");
    let mut events = Server::new()
        .bind(&format!("unix://{}", events_sock.display()))
        .expect("bind events")
        .register_service(create_events(recorder.clone()));
    events.start().expect("events server");

    let shim_sock = dir.join("shim.sock");
    let child = Command::new(env!("CARGO_BIN_EXE_containerd-shim-skiff-v2"))
        .args([
            "-namespace",
            "skifftest",
            "-id",
            &id,
            "-address",
            "/nonexistent",
        ])
        .arg("-socket")
        .arg(format!("unix://{}", shim_sock.display()))
        .env("TTRPC_ADDRESS", &events_sock)
        .current_dir(dir.join("bundle"))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .spawn()
        .expect("spawn shim");
    fx.shim = Some(child);
    let deadline = Instant::now() + Duration::from_secs(10);
    let client = loop {
        match Client::connect(&format!("unix://{}", shim_sock.display())) {
            Ok(c) => break c,
            Err(e) if Instant::now() > deadline => panic!("shim did not listen: {e}"),
            Err(_) => thread::sleep(Duration::from_millis(50)),
        }
    };
    let task = TaskClient::new(client);
    let ctx = || context::with_timeout(TIMEOUT_NS);

    // Runc-shaped options choose the binary and the root.
    let opts = Options {
        binary_name: runc.to_string_lossy().into_owned(),
        root: dir.join("runc-root").to_string_lossy().into_owned(),
        ..Default::default()
    };
    let stdin = dir.join("stdin");
    let stdout = dir.join("stdout");
    for f in [&stdin, &stdout] {
        nix::unistd::mkfifo(f, nix::sys::stat::Mode::from_bits_truncate(0o600)).expect("mkfifo");
    }
    // Hold the fifo ends containerd would hold: a writer for stdin, a reader for stdout.
    let stdin_w = fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&stdin)
        .expect("stdin fifo");
    let stdout_r = fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&stdout)
        .expect("stdout fifo");
    let req = api::CreateTaskRequest {
        id: id.clone(),
        bundle: dir.join("bundle").to_string_lossy().into_owned(),
        stdin: stdin.to_string_lossy().into_owned(),
        stdout: stdout.to_string_lossy().into_owned(),
        options: Some(Any {
            type_url: "containerd.runc.v1.Options".into(),
            value: opts.write_to_bytes().expect("encode options"),
            ..Default::default()
        })
        .into(),
        ..Default::default()
    };
    let created = task.create(ctx(), &req).expect("create");
    assert!(created.pid > 0);
    // fx.runc_root is <root>/<namespace> as the shim appends the namespace.
    fx.runc_root = dir.join("runc-root/skifftest");
    task.start(
        ctx(),
        &api::StartRequest {
            id: id.clone(),
            ..Default::default()
        },
    )
    .expect("start");
    let state = task
        .state(
            ctx(),
            &api::StateRequest {
                id: id.clone(),
                ..Default::default()
            },
        )
        .expect("state");
    assert_eq!(state.status.enum_value_or_default(), api::Status::RUNNING);

    // Update: raise the memory limit, visible in the cgroup file.
    let res = serde_json::json!({"memory": {"limit": 67108864}}).to_string();
    task.update(
        ctx(),
        &api::UpdateTaskRequest {
            id: id.clone(),
            resources: Some(Any {
                type_url: "opencontainers/runtime-spec/1/LinuxResources".into(),
                value: res.into_bytes(),
                ..Default::default()
            })
            .into(),
            ..Default::default()
        },
    )
    .expect("update");
    let stats = task
        .stats(
            ctx(),
            &api::StatsRequest {
                id: id.clone(),
                ..Default::default()
            },
        )
        .expect("stats");
    let any = stats.stats.as_ref().expect("stats payload");
    if any.type_url == "io.containerd.cgroups.v1.Metrics" {
        let m = Metrics::parse_from_bytes(&any.value).expect("decode v1 metrics");
        let limit = m.memory.usage.as_ref().map(|u| u.limit).unwrap_or(0);
        assert_eq!(limit, 67108864, "memory limit after Update");
    }

    // Checkpoint is refused clearly.
    let err = task
        .checkpoint(
            ctx(),
            &api::CheckpointTaskRequest {
                id: id.clone(),
                ..Default::default()
            },
        )
        .expect_err("checkpoint must fail");
    match err {
        ttrpc::Error::RpcStatus(s) => {
            assert_eq!(s.code(), Code::UNIMPLEMENTED);
            assert!(s.message().contains("not supported"), "{}", s.message());
        }
        other => panic!("unexpected error {other:?}"),
    }

    // An exec whose start fails is finished: Wait answers at once (containerd's cleanup of a
    // failed exec kills it and waits), Kill says NotFound, Delete removes it.
    let process = serde_json::json!({
        "args": ["/no/such/binary"], "cwd": "/", "env": ["PATH=/bin"],
        "user": {"uid": 0, "gid": 0}
    })
    .to_string();
    task.exec(
        ctx(),
        &api::ExecProcessRequest {
            id: id.clone(),
            exec_id: "bad".into(),
            spec: Some(Any {
                type_url: "types.containerd.io/opencontainers/runtime-spec/1/Process".into(),
                value: process.into_bytes(),
                ..Default::default()
            })
            .into(),
            ..Default::default()
        },
    )
    .expect("exec");
    let exec_req = |what| api::StartRequest {
        id: id.clone(),
        exec_id: what,
        ..Default::default()
    };
    assert!(
        task.start(ctx(), &exec_req("bad".into())).is_err(),
        "starting a missing binary must fail"
    );
    let waited = task
        .wait(
            ctx(),
            &api::WaitRequest {
                id: id.clone(),
                exec_id: "bad".into(),
                ..Default::default()
            },
        )
        .expect("wait for the failed exec");
    assert_ne!(waited.exit_status, 0);
    let killed = task.kill(
        ctx(),
        &api::KillRequest {
            id: id.clone(),
            exec_id: "bad".into(),
            signal: 9,
            ..Default::default()
        },
    );
    match killed {
        Err(ttrpc::Error::RpcStatus(s)) => assert_eq!(s.code(), Code::NOT_FOUND),
        other => panic!("kill of a failed exec: {other:?}"),
    }
    task.delete(
        ctx(),
        &api::DeleteRequest {
            id: id.clone(),
            exec_id: "bad".into(),
            ..Default::default()
        },
    )
    .expect("delete the failed exec");

    // Input reaches the process and its output comes back; CloseIO gives it EOF, it exits 9.
    use std::io::{Read, Write};
    (&stdin_w).write_all(b"ping\n").expect("write stdin");
    // cat echoes it; read it before CloseIO so the close cannot overtake the data.
    let mut buf = [0u8; 5];
    (&stdout_r).read_exact(&mut buf).expect("read stdout");
    assert_eq!(&buf, b"ping\n");
    task.close_io(
        ctx(),
        &api::CloseIORequest {
            id: id.clone(),
            stdin: true,
            ..Default::default()
        },
    )
    .expect("close io");
    let waited = task
        .wait(
            ctx(),
            &api::WaitRequest {
                id: id.clone(),
                ..Default::default()
            },
        )
        .expect("wait");
    assert_eq!(waited.exit_status, 9);
    // Killing all processes of the stopped container is NotFound (containerd's kill-then-delete
    // after an exit tolerates exactly that), not an unknown runtime error.
    match task.kill(
        ctx(),
        &api::KillRequest {
            id: id.clone(),
            signal: 9,
            all: true,
            ..Default::default()
        },
    ) {
        Err(ttrpc::Error::RpcStatus(s)) => assert_eq!(s.code(), Code::NOT_FOUND, "{s:?}"),
        Ok(_) => {} // a runtime that signals an empty cgroup without complaint is fine too
        Err(e) => panic!("kill --all of a stopped container: {e:?}"),
    }
    let deleted = task
        .delete(
            ctx(),
            &api::DeleteRequest {
                id: id.clone(),
                ..Default::default()
            },
        )
        .expect("delete");
    assert_eq!(deleted.exit_status, 9);
    let _ = task.shutdown(
        ctx(),
        &api::ShutdownRequest {
            id: id.clone(),
            ..Default::default()
        },
    );
    if let Some(mut c) = fx.shim.take() {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            match c.try_wait() {
                Ok(Some(_)) => break,
                _ if Instant::now() > deadline => {
                    let _ = c.kill();
                    let _ = c.wait();
                    panic!("shim did not exit after Shutdown");
                }
                _ => thread::sleep(Duration::from_millis(50)),
            }
        }
    }
    let topics = recorder
        .topics
        .lock()
        .map(|t| t.clone())
        .unwrap_or_default();
    for t in [
        "/tasks/create",
        "/tasks/start",
        "/tasks/exit",
        "/tasks/delete",
    ] {
        assert!(topics.iter().any(|x| x == t), "missing {t} in {topics:?}");
    }
    assert_eq!(
        recorder.exits.lock().map(|e| e.clone()).unwrap_or_default(),
        vec![9]
    );
    events.shutdown();
    drop(stdin_w);
    drop(stdout_r);
}
