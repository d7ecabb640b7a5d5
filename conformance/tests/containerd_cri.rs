//! skiff as a Kubernetes RuntimeClass handler: containerd's CRI plugin driven through its CRI v1
//! gRPC API (what the kubelet speaks) by a small client made here, with the handler `skiff`
//! (runtime_type `io.containerd.skiff.v2`) and, for comparison, `runc` (containerd's runc v2
//! shim) in the same containerd. Each pod lifecycle runs with both handlers and the observations
//! are printed side by side and compared.
//!
//! The containerd is private (own root, state, socket, config, CNI dirs, runc root); the pods use
//! the node's network namespace (NamespaceMode NODE) so no CNI plugin runs and no host network
//! state changes. No registry: the sandbox ("pause") image and the workload image are imported
//! into the `k8s.io` namespace beforehand.

mod containerd_fixture;

use std::{collections::BTreeMap, fs, future::Future, path::Path, time::Duration};

use conformance::{bins, unique_name};
use containerd_fixture::{
    available, busybox_oci_archive_named, remove_namespace_cgroups, Containerd, IMAGE,
};
use hyper_util::rt::TokioIo;
use k8s_cri::v1::{
    image_service_client::ImageServiceClient, runtime_service_client::RuntimeServiceClient,
    ContainerConfig, ContainerMetadata, ContainerState, ContainerStatusRequest,
    CreateContainerRequest, ExecSyncRequest, ImageSpec, ImageStatusRequest, LinuxContainerConfig,
    LinuxContainerSecurityContext, LinuxPodSandboxConfig, LinuxSandboxSecurityContext,
    ListContainersRequest, ListPodSandboxRequest, NamespaceMode, NamespaceOption, PodSandboxConfig,
    PodSandboxMetadata, PodSandboxState, PodSandboxStatusRequest, RemoveContainerRequest,
    RemovePodSandboxRequest, RunPodSandboxRequest, StartContainerRequest, StatusRequest,
    StopContainerRequest, StopPodSandboxRequest, VersionRequest,
};
use tonic::transport::{Channel, Endpoint, Uri};

/// The sandbox image the CRI plugin runs as each pod's infra container (no registry here).
const PAUSE_IMAGE: &str = "docker.io/library/skiff-pause:latest";

/// The pause process: sleeps until told to stop, exits 0 on SIGTERM/SIGINT.
const PAUSE_CMD: &[&str] = &[
    "/bin/sh",
    "-c",
    "trap 'exit 0' TERM INT; while :; do sleep 3600 & wait $!; done",
];

/// Time limit of each CRI call.
const CALL_LIMIT: Duration = Duration::from_secs(60);

/// A CRI client on containerd's unix socket; the tokio runtime lives inside the test.
struct Cri {
    rt: tokio::runtime::Runtime,
    channel: Channel,
}

impl Cri {
    fn connect(sock: &Path) -> Result<Cri, String> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| format!("tokio runtime: {e}"))?;
        let path = sock.to_path_buf();
        let channel = rt.block_on(async move {
            // The URI is required by tonic but unused: every connection goes to the socket.
            Endpoint::from_static("http://[::]:50051")
                .connect_timeout(Duration::from_secs(10))
                .connect_with_connector(tower::service_fn(move |_: Uri| {
                    let path = path.clone();
                    async move {
                        let stream = tokio::net::UnixStream::connect(path).await?;
                        Ok::<_, std::io::Error>(TokioIo::new(stream))
                    }
                }))
                .await
                .map_err(|e| format!("connect {}: {e}", sock.display()))
        })?;
        Ok(Cri { rt, channel })
    }

    fn runtime(&self) -> RuntimeServiceClient<Channel> {
        RuntimeServiceClient::new(self.channel.clone())
    }

    fn images(&self) -> ImageServiceClient<Channel> {
        ImageServiceClient::new(self.channel.clone())
    }

    /// Runs one CRI call with a time limit; the error names the call.
    fn call<T, F>(&self, what: &str, f: F) -> Result<T, String>
    where
        F: Future<Output = Result<tonic::Response<T>, tonic::Status>>,
    {
        // The timer must be made inside the runtime.
        match self
            .rt
            .block_on(async { tokio::time::timeout(CALL_LIMIT, f).await })
        {
            Ok(Ok(r)) => Ok(r.into_inner()),
            Ok(Err(status)) => Err(format!("{what}: {:?}: {}", status.code(), status.message())),
            Err(_) => Err(format!("{what}: no answer in {CALL_LIMIT:?}")),
        }
    }
}

/// The CRI plugin section of the private containerd's config: handlers `skiff` and `runc`, the
/// locally made pause image, CNI dirs inside the work dir (never /etc/cni or /var/lib/cni), runc's
/// state under the work dir, streaming on loopback only, network namespaces under the state dir;
/// `conflist` is the only CNI network.
fn cri_config(dir: &Path, conflist: &str) -> String {
    let d = dir.display();
    let cni_conf = dir.join("cni/net.d");
    let _ = fs::create_dir_all(&cni_conf);
    let _ = fs::write(cni_conf.join("10-skiff-test.conflist"), conflist);
    format!(
        r#"[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "{PAUSE_IMAGE}"
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"
  enable_selinux = false
  disable_apparmor = true
  netns_mounts_under_state_dir = true
  # Pods ask for oom_score_adj -998; lowering it needs CAP_SYS_RESOURCE, which this host's
  # bounding set lacks: clamp to containerd's own value (as rootless setups do).
  restrict_oom_score_adj = true
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/usr/lib/cni"
    conf_dir = "{d}/cni/net.d"
    max_conf_num = 1
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        Root = "{d}/runc-root"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.skiff]
      runtime_type = "io.containerd.skiff.v2"
"#
    )
}

/// Pods and containers a scenario made, removed on drop (also when an assertion fails), with
/// the pod cgroup parent.
struct PodGuard<'a> {
    cri: &'a Cri,
    pods: Vec<String>,
    containers: Vec<String>,
    cgroup_parent: String,
}

impl Drop for PodGuard<'_> {
    fn drop(&mut self) {
        let mut rs = self.cri.runtime();
        for id in self.containers.drain(..) {
            let _ = self.cri.call(
                "StopContainer",
                rs.stop_container(StopContainerRequest {
                    container_id: id.clone(),
                    timeout: 0,
                }),
            );
            let _ = self.cri.call(
                "RemoveContainer",
                rs.remove_container(RemoveContainerRequest { container_id: id }),
            );
        }
        for id in self.pods.drain(..) {
            let _ = self.cri.call(
                "StopPodSandbox",
                rs.stop_pod_sandbox(StopPodSandboxRequest {
                    pod_sandbox_id: id.clone(),
                }),
            );
            let _ = self.cri.call(
                "RemovePodSandbox",
                rs.remove_pod_sandbox(RemovePodSandboxRequest { pod_sandbox_id: id }),
            );
        }
        remove_namespace_cgroups(self.cgroup_parent.trim_start_matches('/'));
    }
}

/// The cgroup parent of a handler's pod in one test (unique per test process).
fn cgroup_parent(tag: &str, handler: &str) -> String {
    format!("/sk{}-{}-{}", tag, handler, std::process::id())
}

/// Removes the pods' cgroup parents at the very end (after containerd and its shims are gone),
/// for the case where a failed scenario's pods could not be removed through the CRI.
struct CgroupCleanup(Vec<String>);

impl Drop for CgroupCleanup {
    fn drop(&mut self) {
        for parent in &self.0 {
            remove_namespace_cgroups(parent.trim_start_matches('/'));
        }
    }
}

/// One observed fact of a scenario.
type Facts = Vec<(String, String)>;

/// Executable of a process (`/proc/PID/exe`), "" if unreadable.
fn exe_of(pid: i64) -> String {
    fs::read_link(format!("/proc/{pid}/exe"))
        .map(|p| p.to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// Parent pid of a process, 0 if unreadable.
fn ppid_of(pid: i64) -> i64 {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the `(comm)`: state, ppid, ...
    stat.rsplit_once(')')
        .and_then(|(_, rest)| rest.split_whitespace().nth(1))
        .and_then(|p| p.parse().ok())
        .unwrap_or(0)
}

/// Short name of the shim binary a process runs under ("containerd-shim-skiff-v2"...).
fn shim_name(pid: i64) -> String {
    let exe = exe_of(ppid_of(pid));
    Path::new(&exe)
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// Pid and runtime type from a verbose ContainerStatus/PodSandboxStatus `info`.
fn verbose_info(info: &std::collections::HashMap<String, String>) -> (i64, String) {
    let v: serde_json::Value = info
        .get("info")
        .and_then(|s| serde_json::from_str(s).ok())
        .unwrap_or_default();
    (
        v["pid"].as_i64().unwrap_or(0),
        v["runtimeType"].as_str().unwrap_or("").to_string(),
    )
}

/// How the scenario's pods are networked.
#[derive(Clone, Copy)]
enum PodNet<'a> {
    /// The node's network namespace: no CNI call.
    Node,
    /// Their own namespace set up by CNI; pod IPs must start with this prefix.
    Pod(&'a str),
}

/// The whole pod lifecycle with one runtime handler; returns what was observed.
fn pod_lifecycle(
    cd: &Containerd,
    cri: &Cri,
    tag: &str,
    handler: &str,
    net: PodNet,
) -> Result<Facts, String> {
    let mut f: Facts = Vec::new();
    let mut fact = |k: &str, v: String| f.push((k.to_string(), v));
    let mut rs = cri.runtime();
    let name = unique_name(&format!("cri-{handler}"));
    let mut guard = PodGuard {
        cri,
        pods: Vec::new(),
        containers: Vec::new(),
        cgroup_parent: cgroup_parent(tag, handler),
    };
    let logs = cd.dir.join("pod-logs").join(&name);
    fs::create_dir_all(&logs).map_err(|e| format!("{}: {e}", logs.display()))?;
    let net_mode = match net {
        PodNet::Node => NamespaceMode::Node,
        PodNet::Pod(_) => NamespaceMode::Pod,
    };
    let node_ns = |pid: i32| NamespaceOption {
        network: net_mode as i32,
        pid,
        ipc: NamespaceMode::Pod as i32,
        ..Default::default()
    };
    let pod_config = PodSandboxConfig {
        metadata: Some(PodSandboxMetadata {
            name: name.clone(),
            uid: name.clone(),
            namespace: "skiff-test".into(),
            attempt: 0,
        }),
        hostname: String::new(),
        log_directory: logs.to_string_lossy().into_owned(),
        linux: Some(LinuxPodSandboxConfig {
            cgroup_parent: guard.cgroup_parent.clone(),
            security_context: Some(LinuxSandboxSecurityContext {
                namespace_options: Some(node_ns(NamespaceMode::Pod as i32)),
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    };

    let pod = cri
        .call(
            "RunPodSandbox",
            rs.run_pod_sandbox(RunPodSandboxRequest {
                config: Some(pod_config.clone()),
                runtime_handler: handler.to_string(),
            }),
        )?
        .pod_sandbox_id;
    guard.pods.push(pod.clone());
    let st = cri.call(
        "PodSandboxStatus",
        rs.pod_sandbox_status(PodSandboxStatusRequest {
            pod_sandbox_id: pod.clone(),
            verbose: true,
        }),
    )?;
    let state = st.status.as_ref().map(|s| s.state).unwrap_or(-1);
    fact(
        "pod state",
        format!("{:?}", PodSandboxState::try_from(state)),
    );
    let (pause_pid, pause_rt) = verbose_info(&st.info);
    fact("pod runtimeType", pause_rt);
    fact("pause runs under", shim_name(pause_pid));
    let pod_ip = st
        .status
        .as_ref()
        .and_then(|s| s.network.as_ref())
        .map(|n| n.ip.clone())
        .unwrap_or_default();
    if let PodNet::Pod(prefix) = net {
        fact(
            "pod ip in the CNI subnet",
            pod_ip.starts_with(prefix).to_string(),
        );
    }

    let ctr_config = ContainerConfig {
        metadata: Some(ContainerMetadata {
            name: "app".into(),
            attempt: 0,
        }),
        image: Some(ImageSpec {
            image: IMAGE.into(),
            ..Default::default()
        }),
        command: vec!["sh".into(), "-c".into()],
        args: vec!["echo app-started; cat /etc/built-by; exec sleep 1000".into()],
        log_path: "app.log".into(),
        linux: Some(LinuxContainerConfig {
            security_context: Some(LinuxContainerSecurityContext {
                namespace_options: Some(node_ns(NamespaceMode::Container as i32)),
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    };
    let cid = cri
        .call(
            "CreateContainer",
            rs.create_container(CreateContainerRequest {
                pod_sandbox_id: pod.clone(),
                config: Some(ctr_config),
                sandbox_config: Some(pod_config.clone()),
            }),
        )?
        .container_id;
    guard.containers.push(cid.clone());
    let status = |rs: &mut RuntimeServiceClient<Channel>| {
        cri.call(
            "ContainerStatus",
            rs.container_status(ContainerStatusRequest {
                container_id: cid.clone(),
                verbose: true,
            }),
        )
    };
    let state_of = |r: &k8s_cri::v1::ContainerStatusResponse| {
        let s = r.status.as_ref().map(|s| s.state).unwrap_or(-1);
        format!("{:?}", ContainerState::try_from(s))
    };
    fact("created state", state_of(&status(&mut rs)?));
    cri.call(
        "StartContainer",
        rs.start_container(StartContainerRequest {
            container_id: cid.clone(),
        }),
    )?;
    let st = status(&mut rs)?;
    fact("started state", state_of(&st));
    let (pid, rt) = verbose_info(&st.info);
    fact("container runtimeType", rt);
    fact("container runs under", shim_name(pid));
    fact(
        "app shares the pause's shim",
        (ppid_of(pid) == ppid_of(pause_pid) && pid > 0).to_string(),
    );
    // The runtime's state dir for the container: skiff's under /run/containerd/skiff/k8s.io
    // (the shim's default root), runc's under the runc root configured above.
    fact(
        "runtime state dir",
        if Path::new("/run/containerd/skiff/k8s.io")
            .join(&cid)
            .is_dir()
        {
            "skiff".into()
        } else if cd.dir.join("runc-root/k8s.io").join(&cid).is_dir() {
            "runc".into()
        } else {
            "none".into()
        },
    );

    let exec = |rs: &mut RuntimeServiceClient<Channel>, cmd: &[&str]| {
        cri.call(
            "ExecSync",
            rs.exec_sync(ExecSyncRequest {
                container_id: cid.clone(),
                cmd: cmd.iter().map(|s| s.to_string()).collect(),
                timeout: 30,
            }),
        )
    };
    let r = exec(&mut rs, &["echo", "hi"])?;
    fact(
        "exec echo stdout",
        String::from_utf8_lossy(&r.stdout).into(),
    );
    fact("exec echo exit", r.exit_code.to_string());
    let r = exec(&mut rs, &["sh", "-c", "echo oops >&2; exit 3"])?;
    fact(
        "exec fail stderr",
        String::from_utf8_lossy(&r.stderr).into(),
    );
    fact("exec fail exit", r.exit_code.to_string());
    let r = exec(&mut rs, &["cat", "/etc/built-by"])?;
    fact("exec image file", String::from_utf8_lossy(&r.stdout).into());
    // The app container is in the pause container's network namespace (CRI passes its path).
    let r = exec(&mut rs, &["readlink", "/proc/self/ns/net"])?;
    let pause_net = fs::read_link(format!("/proc/{pause_pid}/ns/net"))
        .map(|p| p.to_string_lossy().into_owned())
        .unwrap_or_default();
    fact(
        "app netns is the pause's",
        (!pause_net.is_empty() && String::from_utf8_lossy(&r.stdout).trim() == pause_net)
            .to_string(),
    );
    if let PodNet::Pod(_) = net {
        let r = exec(&mut rs, &["ip", "-4", "addr", "show", "eth0"])?;
        fact(
            "eth0 has the pod ip",
            (!pod_ip.is_empty()
                && String::from_utf8_lossy(&r.stdout).contains(&format!("inet {pod_ip}/")))
            .to_string(),
        );
    }
    let r = exec(&mut rs, &["/no/such/binary"]);
    fact(
        "exec missing binary fails",
        match r {
            Ok(r) => (r.exit_code != 0).to_string(),
            Err(_) => "true".into(),
        },
    );
    // Container log, written by the CRI plugin from the container's stdout.
    let log = fs::read_to_string(logs.join("app.log")).unwrap_or_default();
    fact(
        "log has app output",
        (log.contains("app-started") && log.contains("skiff-build")).to_string(),
    );

    // `exec sleep` runs as pid 1 of its own pid namespace and ignores SIGTERM: StopContainer's
    // SIGKILL after the grace period ends it.
    cri.call(
        "StopContainer",
        rs.stop_container(StopContainerRequest {
            container_id: cid.clone(),
            timeout: 1,
        }),
    )?;
    let st = status(&mut rs)?;
    fact("stopped state", state_of(&st));
    fact(
        "stopped exit code",
        st.status
            .as_ref()
            .map(|s| s.exit_code.to_string())
            .unwrap_or_default(),
    );
    cri.call(
        "RemoveContainer",
        rs.remove_container(RemoveContainerRequest {
            container_id: cid.clone(),
        }),
    )?;
    guard.containers.clear();
    let left = cri.call(
        "ListContainers",
        rs.list_containers(ListContainersRequest { filter: None }),
    )?;
    fact(
        "container listed after remove",
        left.containers.iter().any(|c| c.id == cid).to_string(),
    );

    cri.call(
        "StopPodSandbox",
        rs.stop_pod_sandbox(StopPodSandboxRequest {
            pod_sandbox_id: pod.clone(),
        }),
    )?;
    let st = cri.call(
        "PodSandboxStatus",
        rs.pod_sandbox_status(PodSandboxStatusRequest {
            pod_sandbox_id: pod.clone(),
            verbose: false,
        }),
    )?;
    let state = st.status.as_ref().map(|s| s.state).unwrap_or(-1);
    fact(
        "stopped pod state",
        format!("{:?}", PodSandboxState::try_from(state)),
    );
    cri.call(
        "RemovePodSandbox",
        rs.remove_pod_sandbox(RemovePodSandboxRequest {
            pod_sandbox_id: pod.clone(),
        }),
    )?;
    guard.pods.clear();
    let left = cri.call(
        "ListPodSandbox",
        rs.list_pod_sandbox(ListPodSandboxRequest { filter: None }),
    )?;
    fact(
        "pod listed after remove",
        left.items.iter().any(|p| p.id == pod).to_string(),
    );
    // The shim serving the pod exits once its last task is gone.
    let mut shim_left = true;
    for _ in 0..50 {
        if !shim_alive(&pod) {
            shim_left = false;
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    fact("shim left after remove", shim_left.to_string());
    fact(
        "runtime state left",
        (Path::new("/run/containerd/skiff/k8s.io")
            .join(&cid)
            .exists()
            || cd.dir.join("runc-root/k8s.io").join(&cid).exists())
        .to_string(),
    );
    Ok(f)
}

/// Whether a shim process started for this pod sandbox still runs.
fn shim_alive(pod: &str) -> bool {
    let Ok(rd) = fs::read_dir("/proc") else {
        return false;
    };
    rd.flatten().any(|e| {
        let cmd = fs::read(e.path().join("cmdline")).unwrap_or_default();
        let cmd = String::from_utf8_lossy(&cmd).replace('\0', " ");
        cmd.contains("containerd-shim") && cmd.contains(pod)
    })
}

/// Imports an image archive into the CRI namespace.
fn import(cd: &Containerd, archive: &Path) -> Result<(), String> {
    let out = cd.ctr(&["images", "import", &archive.to_string_lossy()]);
    if out.code != 0 {
        return Err(format!("import {}: {out:?}", archive.display()));
    }
    Ok(())
}

/// Deletes a network link on drop (the CNI bridge; its veths go with the pods).
struct LinkCleanup(String);

impl Drop for LinkCleanup {
    fn drop(&mut self) {
        let _ = std::process::Command::new("ip")
            .args(["link", "del", &self.0])
            .stderr(std::process::Stdio::null())
            .status();
    }
}

/// Pods on the node's network: the CNI dir holds only a loopback network, never called.
#[test]
fn containerd_cri_runtime_class_skiff() {
    if !available() {
        return;
    }
    cri_scenario(
        "cri",
        &|_: &Path| {
            r#"{"cniVersion": "0.4.0", "name": "skiff-test-lo", "plugins": [{"type": "loopback"}]}"#
                .to_string()
        },
        PodNet::Node,
    );
}

/// Pods with their own network namespace from CNI: a bridge of this test's own (distinct name,
/// no gateway address, no masquerading, so nothing of the host's routing changes) and host-local
/// IPAM keeping its state in the work dir; the bridge is deleted at the end.
#[test]
fn containerd_cri_pod_network_bridge() {
    if !available() {
        return;
    }
    for plugin in ["bridge", "host-local", "loopback"] {
        if !Path::new("/usr/lib/cni").join(plugin).exists() {
            eprintln!("SKIP: CNI plugin /usr/lib/cni/{plugin} is not installed");
            return;
        }
    }
    let pid = std::process::id();
    let bridge = format!("skcri{}", pid % 1_000_000);
    let third = 20 + pid % 200;
    let prefix = format!("10.213.{third}.");
    let _link = LinkCleanup(bridge.clone());
    cri_scenario(
        "crinet",
        &|dir: &Path| {
            serde_json::json!({
                "cniVersion": "0.4.0",
                "name": format!("skiff-test-{pid}"),
                "plugins": [{
                    "type": "bridge", "bridge": bridge, "isGateway": false, "ipMasq": false,
                    "ipam": {
                        "type": "host-local",
                        "ranges": [[{"subnet": format!("10.213.{third}.0/24")}]],
                        "dataDir": dir.join("cni-ipam").to_string_lossy(),
                    }
                }]
            })
            .to_string()
        },
        PodNet::Pod(&prefix),
    );
}

/// Starts a private containerd with the CRI plugin and the CNI network `conflist` makes for its
/// work dir, runs the pod lifecycle with the handlers `runc` and `skiff`, and compares them.
fn cri_scenario(tag: &str, conflist: &dyn Fn(&Path) -> String, net: PodNet) {
    let (shim, skiff) = match (bins::shim(), bins::skiff()) {
        (Ok(a), Ok(b)) => (a, b),
        (a, b) => panic!("missing binaries: {:?} {:?}", a.err(), b.err()),
    };
    if bins::runc().is_none() {
        eprintln!("SKIP: runc is not installed (the comparison handler)");
        return;
    }
    let skiff_s = skiff.to_string_lossy().into_owned();
    // Declared before `cd`, so it runs after containerd's own cleanup.
    let _cgroups = CgroupCleanup(vec![
        cgroup_parent(tag, "runc"),
        cgroup_parent(tag, "skiff"),
    ]);
    let config = |dir: &Path| cri_config(dir, &conflist(dir));
    let cd = match Containerd::start_with(
        tag,
        &shim,
        &[("SKIFF_SHIM_RUNTIME", &skiff_s)],
        Some(&config),
    ) {
        Ok(cd) => cd,
        Err(e) => panic!("{e}"),
    };
    let plugins = cd.ctr(&["plugins", "ls"]);
    let cri_ok = plugins.stdout.lines().any(|l| {
        l.contains("io.containerd.grpc.v1") && l.contains(" cri ") && l.trim_end().ends_with("ok")
    });
    if !cri_ok {
        eprintln!(
            "SKIP: containerd's CRI plugin is not loaded here:\n{}\n{}",
            plugins.stdout,
            cd.log_tail()
        );
        return;
    }
    let pause = cd.dir.join("pause.tar");
    if let Err(e) = busybox_oci_archive_named(&pause, PAUSE_IMAGE, PAUSE_CMD) {
        panic!("pause image: {e}");
    }
    if let Err(e) = import(&cd, &pause) {
        panic!("{e}");
    }
    let cri = match Cri::connect(&cd.sock()) {
        Ok(c) => c,
        Err(e) => panic!("{e}"),
    };
    let mut rs = cri.runtime();
    let v = cri
        .call(
            "Version",
            rs.version(VersionRequest {
                version: "v1".into(),
            }),
        )
        .unwrap_or_else(|e| panic!("{e}"));
    eprintln!("CRI: {v:?}");
    assert_eq!(v.runtime_name, "containerd");
    assert_eq!(v.runtime_api_version, "v1");
    let status = cri
        .call("Status", rs.status(StatusRequest { verbose: false }))
        .unwrap_or_else(|e| panic!("{e}"));
    let conditions: BTreeMap<String, bool> = status
        .status
        .map(|s| {
            s.conditions
                .into_iter()
                .map(|c| (c.r#type, c.status))
                .collect()
        })
        .unwrap_or_default();
    eprintln!("CRI status conditions: {conditions:?}");
    assert_eq!(conditions.get("RuntimeReady"), Some(&true));
    // PullImage needs a registry (none here): the images were imported; the CRI sees them.
    let mut is = cri.images();
    for image in [IMAGE, PAUSE_IMAGE] {
        let mut found = false;
        for _ in 0..50 {
            let st = cri
                .call(
                    "ImageStatus",
                    is.image_status(ImageStatusRequest {
                        image: Some(ImageSpec {
                            image: image.into(),
                            ..Default::default()
                        }),
                        verbose: false,
                    }),
                )
                .unwrap_or_else(|e| panic!("{e}"));
            if st.image.is_some() {
                found = true;
                break;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        assert!(found, "CRI does not see the imported image {image}");
    }

    let runc = pod_lifecycle(&cd, &cri, tag, "runc", net)
        .unwrap_or_else(|e| panic!("runc handler: {e}\ncontainerd log:\n{}", cd.log_tail()));
    let skiff = pod_lifecycle(&cd, &cri, tag, "skiff", net)
        .unwrap_or_else(|e| panic!("skiff handler: {e}\ncontainerd log:\n{}", cd.log_tail()));
    eprintln!("{:<30} | {:<30} | runc", "fact", "skiff");
    // Facts that name the runtime differ by design; everything else must match.
    let by_design = [
        "pod runtimeType",
        "pause runs under",
        "container runtimeType",
        "container runs under",
        "runtime state dir",
    ];
    let mut diffs = Vec::new();
    for ((k, a), (_, b)) in skiff.iter().zip(runc.iter()) {
        let same = a == b || by_design.contains(&k.as_str());
        eprintln!(
            "{}{k:<29} | {:<30} | {b:?}",
            if same { " " } else { "!" },
            format!("{a:?}")
        );
        if !same {
            diffs.push(format!("{k}: skiff gave {a:?}, runc gave {b:?}"));
        }
    }
    let get = |facts: &Facts, k: &str| {
        facts
            .iter()
            .find(|(n, _)| n == k)
            .map(|(_, v)| v.clone())
            .unwrap_or_default()
    };
    // The reference behaves as expected (so the comparison means something)...
    assert_eq!(get(&runc, "exec echo stdout"), "hi\n");
    assert_eq!(get(&runc, "exec fail exit"), "3");
    assert_eq!(
        get(&runc, "container runs under"),
        "containerd-shim-runc-v2"
    );
    // ...skiff really ran the pod...
    assert_eq!(get(&skiff, "pod runtimeType"), "io.containerd.skiff.v2");
    assert_eq!(
        get(&skiff, "container runtimeType"),
        "io.containerd.skiff.v2"
    );
    assert_eq!(get(&skiff, "pause runs under"), "containerd-shim-skiff-v2");
    assert_eq!(
        get(&skiff, "container runs under"),
        "containerd-shim-skiff-v2"
    );
    assert_eq!(get(&skiff, "runtime state dir"), "skiff");
    // ...and matches runc everywhere else.
    assert!(
        diffs.is_empty(),
        "skiff handler differs from runc:\n{}\ncontainerd log:\n{}",
        diffs.join("\n"),
        cd.log_tail()
    );
}
