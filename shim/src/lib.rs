//! containerd shim v2 for skiff: serves containerd's Task API and drives any runc-compatible
//! runtime binary (skiff by default) through its command line.

pub mod error;
mod metrics;
mod oom;
pub mod runtime;
pub mod server;
mod stdio;
mod task;

use std::{io::Write, path::Path, sync::Arc};

use containerd_shim::{
    api::DeleteResponse, publisher::RemotePublisher, util::timestamp, Config, ExitSignal, Flags,
    StartOpts,
};

pub use task::TaskService;

/// The runtime id containerd knows this shim by.
pub const RUNTIME_ID: &str = "io.containerd.skiff.v2";

/// Annotations that group containers into one shim (a Kubernetes pod shares one shim).
const GROUP_ANNOTATIONS: [&str; 2] = [
    "io.kubernetes.cri.sandbox-id",
    "io.containerd.runc.v2.group",
];

/// The shim process: `start`, `delete` and the long-lived server.
pub struct Shim {
    namespace: String,
    id: String,
    bundle: String,
    exit: Arc<ExitSignal>,
}

/// Reads the grouping key from the bundle's config.json annotations (default: the id).
fn grouping(bundle: &Path, id: &str) -> String {
    let Ok(data) = std::fs::read(bundle.join("config.json")) else {
        return id.to_string();
    };
    let Ok(v) = serde_json::from_slice::<serde_json::Value>(&data) else {
        return id.to_string();
    };
    for key in GROUP_ANNOTATIONS {
        if let Some(g) = v
            .get("annotations")
            .and_then(|a| a.get(key))
            .and_then(|g| g.as_str())
        {
            if !g.is_empty() {
                return g.to_string();
            }
        }
    }
    id.to_string()
}

impl containerd_shim::Shim for Shim {
    type T = TaskService;

    fn new(_runtime_id: &str, args: &Flags, _config: &mut Config) -> Self {
        Shim {
            namespace: args.namespace.clone(),
            id: args.id.clone(),
            bundle: args.bundle.clone(),
            exit: Arc::new(ExitSignal::default()),
        }
    }

    fn start_shim(&mut self, opts: StartOpts) -> containerd_shim::Result<String> {
        let cwd = std::env::current_dir().unwrap_or_default();
        let group = grouping(&cwd, &opts.id);
        let legacy = opts.containerd_version.is_empty();
        let (_pid, address) = containerd_shim::spawn(opts, &group, Vec::new())?;
        containerd_shim::util::write_address(&address)?;
        if legacy {
            // containerd before 1.7 reads a bare address from `start`, not the JSON reply the
            // library writes for the legacy protocol; every containerd accepts the bare form.
            let mut out = std::io::stdout().lock();
            let _ = out.write_all(address.as_bytes());
            let _ = out.flush();
            std::process::exit(0);
        }
        Ok(address)
    }

    fn delete_shim(&mut self) -> containerd_shim::Result<DeleteResponse> {
        let bundle = if self.bundle.is_empty() {
            std::env::current_dir().unwrap_or_default()
        } else {
            Path::new(&self.bundle).to_path_buf()
        };
        task::cleanup_after_crash(&bundle, &self.id, &self.namespace)
            .map_err(|e| containerd_shim::Error::Other(e.to_string()))?;
        Ok(DeleteResponse {
            exit_status: 128 + libc::SIGKILL as u32,
            exited_at: Some(timestamp()?).into(),
            ..Default::default()
        })
    }

    fn wait(&mut self) {
        self.exit.wait();
    }

    fn create_task_service(&self, publisher: RemotePublisher) -> Self::T {
        TaskService::new(&self.namespace, publisher, self.exit.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::grouping;

    #[test]
    fn grouping_prefers_sandbox_annotation() {
        let dir = std::env::temp_dir().join(format!("skiff-shim-grp-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("test setup");
        std::fs::write(
            dir.join("config.json"),
            r#"{"annotations":{"io.kubernetes.cri.sandbox-id":"pod1"}}"#,
        )
        .expect("test setup");
        assert_eq!(grouping(&dir, "c1"), "pod1");
        std::fs::write(dir.join("config.json"), r#"{"annotations":{}}"#).expect("test setup");
        assert_eq!(grouping(&dir, "c1"), "c1");
        std::fs::write(dir.join("config.json"), "not json").expect("test setup");
        assert_eq!(grouping(&dir, "c1"), "c1");
        std::fs::remove_dir_all(&dir).expect("test setup");
    }
}
