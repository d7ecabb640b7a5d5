//! The build engine: stages, steps, the cache and the output image.
//!
//! Each stage keeps its state as a list of layers plus an image config. Steps that change the
//! filesystem (RUN, COPY, ADD) unpack the current state into an overlay bundle with skiff-image,
//! change it (RUN through the runtime's CLI, COPY/ADD with in-root file operations), and turn
//! the overlay upper dir into a new layer with skiff-image's diff. Other instructions only
//! change the config. Stages are built on demand, so `--target` builds only what it needs.

use std::collections::{BTreeMap, HashMap};
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use serde_json::{json, Map, Value};
use sha2::{Digest, Sha256};
use skiff_image::store::{make_descriptor, OCI_CONFIG, OCI_MANIFEST};
use skiff_image::{Image, LayerInfo, Store};

use crate::archive;
use crate::copy::{self, Chmod, CopyOptions};
use crate::dockerignore::{Glob, Ignore};
use crate::expand::Expander;
use crate::instructions::{Command, CopySpec, Health, Instruction, KeyValue, Located, MountSpec};
use crate::rootfs::{self, Root};
use crate::runtime::{ExtraMount, Network, Runtime};
use crate::vars::{self, ArgScope, BuildArgs, Platform};

/// A build failure, with the step it happened in.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    /// The Dockerfile does not parse.
    #[error(transparent)]
    Parse(#[from] crate::error::ParseError),
    /// A step failed.
    #[error("{0}")]
    Step(String),
}

type Result<T> = std::result::Result<T, BuildError>;

fn fail(msg: impl Into<String>) -> BuildError {
    BuildError::Step(msg.into())
}

trait Ctx<T> {
    fn ctx(self, what: impl std::fmt::Display) -> Result<T>;
}

impl<T, E: std::fmt::Display> Ctx<T> for std::result::Result<T, E> {
    fn ctx(self, what: impl std::fmt::Display) -> Result<T> {
        self.map_err(|e| fail(format!("{what}: {e}")))
    }
}

/// How progress is shown.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Progress {
    /// One line per step, RUN output prefixed (logs, CI).
    Plain,
    /// Same lines, for a terminal.
    Tty,
    /// Nothing but errors.
    Quiet,
}

/// Where the image goes besides the store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Output {
    /// `type=oci,dest=FILE`: an OCI archive.
    OciArchive(PathBuf),
    /// `type=docker,dest=FILE`: a `docker load` archive.
    DockerArchive(PathBuf),
}

/// Everything a build needs.
#[derive(Debug, Clone)]
pub struct BuildOptions {
    /// Build context directory.
    pub context: PathBuf,
    /// Dockerfile path (default `CONTEXT/Dockerfile`).
    pub dockerfile: Option<PathBuf>,
    /// `-t NAME[:TAG]`.
    pub tags: Vec<String>,
    /// `--build-arg`.
    pub build_args: Vec<(String, String)>,
    /// `--label`.
    pub labels: Vec<(String, String)>,
    /// `--target`.
    pub target: Option<String>,
    /// `--no-cache`.
    pub no_cache: bool,
    /// Runtime program.
    pub runtime: String,
    /// Runtime state root.
    pub runtime_root: PathBuf,
    /// `--output`.
    pub outputs: Vec<Output>,
    /// `--iidfile`.
    pub iidfile: Option<PathBuf>,
    /// Progress style.
    pub progress: Progress,
    /// `--secret id=...,src=...`.
    pub secrets: Vec<(String, PathBuf)>,
    /// `--network` default for RUN.
    pub network: Network,
    /// SOURCE_DATE_EPOCH.
    pub source_date_epoch: Option<i64>,
    /// Image store directory.
    pub store: PathBuf,
    /// How `ADD https://` servers are verified (`--cert-dir`, `--tls-verify`).
    pub tls: crate::fetch::TlsOptions,
}

/// The built image.
#[derive(Debug, Clone)]
pub struct BuildResult {
    /// Config digest (`sha256:...`), the image id.
    pub image_id: String,
    /// Manifest digest.
    pub manifest_digest: String,
}

/// One stage's evolving state.
#[derive(Debug, Clone)]
struct State {
    layers: Vec<LayerInfo>,
    /// Top-level config fields other than config/rootfs/history/created (architecture, os...).
    top: Map<String, Value>,
    /// The runtime config (`config` object).
    config: Map<String, Value>,
    history: Vec<Value>,
    key: String,
    args: ArgScope,
    shell: Vec<String>,
    cmd_set: bool,
    /// WORKDIRs set since the last filesystem step; created by the next one (or at stage end).
    /// (path, USER at the time): Docker creates WORKDIRs owned by the current user.
    pending_dirs: Vec<(String, String)>,
}

struct StageDef {
    name: Option<String>,
    from: Located,
    body: Vec<Located>,
}

/// What skiff-build remembers about a URL it downloaded (`build-cache/urls/KEY.json`).
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
struct UrlRecord {
    validators: crate::fetch::Validators,
    /// `sha256:...` of the body.
    digest: String,
    /// Parsed Last-Modified (the file's mtime).
    last_modified: Option<i64>,
}

/// sha256 of a file's content from its start, as `sha256:HEX`.
fn hash_file(f: &mut std::fs::File) -> std::io::Result<String> {
    use std::io::Seek;
    f.seek(std::io::SeekFrom::Start(0))?;
    let mut h = Sha256::new();
    std::io::copy(f, &mut h)?;
    f.seek(std::io::SeekFrom::Start(0))?;
    Ok(format!("sha256:{}", hex::encode(h.finalize())))
}

fn sha(parts: &[&str]) -> String {
    let mut h = Sha256::new();
    for p in parts {
        h.update((p.len() as u64).to_le_bytes());
        h.update(p.as_bytes());
    }
    hex::encode(h.finalize())
}

fn env_list(config: &Map<String, Value>) -> Vec<String> {
    config
        .get("Env")
        .and_then(|v| v.as_array())
        .map(|a| {
            a.iter()
                .filter_map(|s| s.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

fn str_field(config: &Map<String, Value>, k: &str) -> String {
    config
        .get(k)
        .and_then(|v| v.as_str())
        .unwrap_or("")
        .to_string()
}

/// Bundles are removed (unmounted) whatever happens, so a failed step leaves nothing behind.
struct BundleGuard {
    path: PathBuf,
}

impl Drop for BundleGuard {
    fn drop(&mut self) {
        if skiff_image::remove_bundle(&self.path).is_err() {
            let _ = skiff_image::umount(&self.path);
            let _ = fs::remove_dir_all(&self.path);
        }
        // The bundle lives in its own private directory: remove that too.
        if let Some(parent) = self.path.parent() {
            let _ = fs::remove_dir(parent);
        }
    }
}

/// The builder for one invocation.
pub struct Builder<'a> {
    opts: BuildOptions,
    store: Store,
    expander: Expander,
    stages: Vec<StageDef>,
    global: ArgScope,
    cli: BuildArgs,
    built: HashMap<usize, State>,
    ignore: Ignore,
    cache_dir: PathBuf,
    tmp_dir: PathBuf,
    log: &'a mut dyn FnMut(&str),
    step_no: usize,
    total_steps: usize,
    platform: Platform,
    /// The Dockerfile's path, for error messages.
    file: String,
    /// Downloads `ADD` URLs (holds the TLS configuration).
    fetcher: crate::fetch::Fetcher,
}

fn rfc3339(secs: i64) -> String {
    chrono::DateTime::from_timestamp(secs, 0)
        .unwrap_or_default()
        .to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

impl<'a> Builder<'a> {
    /// Parse the Dockerfile and prepare a build.
    pub fn new(opts: BuildOptions, log: &'a mut dyn FnMut(&str)) -> Result<Self> {
        let df_path = opts
            .dockerfile
            .clone()
            .unwrap_or_else(|| opts.context.join("Dockerfile"));
        let src = fs::read_to_string(&df_path).ctx(format!("reading {}", df_path.display()))?;
        let df = crate::parser::parse(&df_path.display().to_string(), &src)?;
        for n in &df.notes {
            log(&format!("note: {n}"));
        }
        let ignore_path = {
            let specific = PathBuf::from(format!("{}.dockerignore", df_path.display()));
            if specific.exists() {
                specific
            } else {
                opts.context.join(".dockerignore")
            }
        };
        let ignore = match fs::read_to_string(&ignore_path) {
            Ok(s) => Ignore::parse(&s).ctx(format!("{}", ignore_path.display()))?,
            Err(_) => Ignore::default(),
        };
        let store =
            Store::open(&opts.store).ctx(format!("opening store {}", opts.store.display()))?;
        let cache_dir = opts.store.join("build-cache");
        let tmp_dir = cache_dir.join("tmp");
        fs::create_dir_all(&tmp_dir).ctx(format!("creating {}", tmp_dir.display()))?;
        clean_stale(
            &tmp_dir,
            &Runtime {
                program: opts.runtime.clone(),
                root: opts.runtime_root.clone(),
            },
        );
        let platform = Platform::host();
        let mut cli = BuildArgs::new(opts.build_args.clone());
        let expander = Expander::new(df.escape);
        // Split global ARGs and stages.
        let mut global = ArgScope::global(&platform, &platform);
        let mut stages: Vec<StageDef> = Vec::new();
        for l in df.instructions {
            match &l.instruction {
                Instruction::From { name, .. } => stages.push(StageDef {
                    name: name.clone(),
                    from: l.clone(),
                    body: Vec::new(),
                }),
                Instruction::Arg { args } if stages.is_empty() => {
                    global
                        .declare(args, &expander, &[], None, &mut cli)
                        .map_err(|e| fail(format!("{}:{}: {e}", df_path.display(), l.pos.line)))?;
                }
                _ => match stages.last_mut() {
                    Some(s) => s.body.push(l.clone()),
                    None => {
                        return Err(fail(format!(
                            "{}:{}:{}: {} before the first FROM: only ARG may precede FROM",
                            df_path.display(),
                            l.pos.line,
                            l.pos.column,
                            l.instruction.keyword()
                        )))
                    }
                },
            }
        }
        if stages.is_empty() {
            return Err(fail(format!(
                "{}: no FROM instruction: a Dockerfile must start a stage with FROM",
                df_path.display()
            )));
        }
        Ok(Self {
            store,
            expander,
            stages,
            global,
            cli,
            built: HashMap::new(),
            ignore,
            cache_dir,
            tmp_dir,
            log,
            step_no: 0,
            total_steps: 0,
            platform,
            file: df_path.display().to_string(),
            fetcher: crate::fetch::Fetcher::new(opts.tls.clone()),
            opts,
        })
    }

    fn say(&mut self, s: &str) {
        if self.opts.progress != Progress::Quiet {
            (self.log)(s);
        }
    }

    fn stage_index(&self, name: &str) -> Option<usize> {
        let lname = name.to_ascii_lowercase();
        if let Some(i) = self
            .stages
            .iter()
            .position(|s| s.name.as_deref() == Some(lname.as_str()))
        {
            return Some(i);
        }
        name.parse::<usize>()
            .ok()
            .filter(|i| *i < self.stages.len())
    }

    /// Run the build and write the outputs.
    pub fn build(mut self) -> Result<BuildResult> {
        let target = match &self.opts.target {
            Some(t) => self.stage_index(t).ok_or_else(|| {
                fail(format!(
                    "target stage '{t}' could not be found (stages: {})",
                    self.stages
                        .iter()
                        .enumerate()
                        .map(|(i, s)| s.name.clone().unwrap_or(i.to_string()))
                        .collect::<Vec<_>>()
                        .join(", ")
                ))
            })?,
            None => self.stages.len() - 1,
        };
        self.total_steps = self.stages.iter().map(|s| s.body.len() + 1).sum();
        let mut state = self.build_stage(target)?;
        for (k, v) in self.opts.labels.clone() {
            let labels = state.config.entry("Labels").or_insert_with(|| json!({}));
            if !labels.is_object() {
                *labels = json!({});
            }
            labels[&k] = json!(v);
        }
        let unused = self.cli.unused();
        if !unused.is_empty() {
            self.say(&format!(
                "[Warning] One or more build-args {:?} were not consumed",
                unused
            ));
        }
        let (image, _) = self.materialize(&state, None, true)?;
        state.key.clear();
        for t in self.opts.tags.clone() {
            self.store
                .tag_manifest(
                    &t,
                    &image.manifest_digest,
                    image.manifest_size,
                    OCI_MANIFEST,
                )
                .ctx(format!("tagging {t}"))?;
            self.say(&format!(
                "tagged {}",
                skiff_image::full_name(&t).unwrap_or(t.clone())
            ));
        }
        for o in self.opts.outputs.clone() {
            let mut img = image.clone();
            img.name = self
                .opts
                .tags
                .first()
                .and_then(|t| skiff_image::full_name(t).ok());
            let dest = match &o {
                Output::OciArchive(p) => format!("oci-archive:{}", p.display()),
                Output::DockerArchive(p) => match &img.name {
                    Some(n) => format!("docker-archive:{}:{}", p.display(), n),
                    None => format!("docker-archive:{}", p.display()),
                },
            };
            skiff_image::export(&self.store, &img, &dest).ctx(format!("exporting to {dest}"))?;
            self.say(&format!("exported {dest}"));
        }
        if let Some(p) = &self.opts.iidfile {
            fs::write(p, &image.config_digest).ctx(format!("writing {}", p.display()))?;
        }
        Ok(BuildResult {
            image_id: image.config_digest.clone(),
            manifest_digest: image.manifest_digest.clone(),
        })
    }

    fn now(&self) -> String {
        match self.opts.source_date_epoch {
            Some(s) => rfc3339(s),
            None => skiff_image::store::now_rfc3339(),
        }
    }

    /// Write the state as an image (config + manifest blobs) and return it.
    /// `runtime` replaces the runtime config (for RUN/COPY bundles).
    fn materialize(
        &self,
        st: &State,
        runtime: Option<Map<String, Value>>,
        final_image: bool,
    ) -> Result<(Image, Vec<u8>)> {
        let mut cfg = st.top.clone();
        cfg.insert(
            "created".into(),
            json!(if final_image { self.now() } else { rfc3339(0) }),
        );
        cfg.insert(
            "config".into(),
            Value::Object(runtime.unwrap_or_else(|| st.config.clone())),
        );
        cfg.insert(
            "rootfs".into(),
            json!({"type": "layers", "diff_ids": st.layers.iter().map(|l| l.diff_id.clone()).collect::<Vec<_>>()}),
        );
        cfg.insert("history".into(), Value::Array(st.history.clone()));
        let cfg_bytes = serde_json::to_vec(&Value::Object(cfg)).ctx("serializing image config")?;
        let cfg_digest = self
            .store
            .put_blob(&cfg_bytes)
            .ctx("writing image config")?;
        let manifest = json!({
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": {"mediaType": OCI_CONFIG, "digest": cfg_digest, "size": cfg_bytes.len()},
            "layers": st.layers.iter().map(|l| json!({
                "mediaType": l.media_type, "digest": l.digest, "size": l.size,
            })).collect::<Vec<_>>(),
        });
        let mbytes = serde_json::to_vec(&manifest).ctx("serializing manifest")?;
        let mdigest = self.store.put_blob(&mbytes).ctx("writing manifest")?;
        let d = make_descriptor(OCI_MANIFEST, &mdigest, mbytes.len() as u64, None)
            .ctx("manifest descriptor")?;
        let img = self
            .store
            .image_from_descriptor(&d, None)
            .ctx("reading back the image")?;
        Ok((img, cfg_bytes))
    }

    fn scratch_state(&self) -> State {
        let mut top = Map::new();
        top.insert("architecture".into(), json!(self.platform.arch));
        top.insert("os".into(), json!(self.platform.os));
        State {
            layers: Vec::new(),
            top,
            config: Map::new(),
            history: Vec::new(),
            key: sha(&["scratch"]),
            args: ArgScope::default(),
            shell: vec!["/bin/sh".into(), "-c".into()],
            cmd_set: false,
            pending_dirs: Vec::new(),
        }
    }

    fn image_state(&self, img: &Image) -> Result<State> {
        let raw = self
            .store
            .read_blob(&img.config_digest)
            .ctx("reading base image config")?;
        let v: Value = serde_json::from_slice(&raw).ctx("parsing base image config")?;
        let mut top = v.as_object().cloned().unwrap_or_default();
        let config = top
            .remove("config")
            .and_then(|c| c.as_object().cloned())
            .unwrap_or_default();
        let history = top
            .remove("history")
            .and_then(|h| h.as_array().cloned())
            .unwrap_or_default();
        top.remove("rootfs");
        top.remove("created");
        for k in [
            "container_config",
            "container",
            "id",
            "parent",
            "docker_version",
        ] {
            top.remove(k);
        }
        let mut layers = Vec::new();
        let diff_ids = img.diff_ids();
        for (i, (digest, mt, size)) in img.layers().into_iter().enumerate() {
            layers.push(LayerInfo {
                digest,
                diff_id: diff_ids.get(i).cloned().unwrap_or_default(),
                size,
                media_type: mt,
            });
        }
        let shell = config
            .get("Shell")
            .and_then(|s| serde_json::from_value::<Vec<String>>(s.clone()).ok())
            .unwrap_or_else(|| vec!["/bin/sh".into(), "-c".into()]);
        Ok(State {
            layers,
            top,
            config,
            history,
            key: sha(&["image", &img.manifest_digest]),
            args: ArgScope::default(),
            shell,
            cmd_set: false,
            pending_dirs: Vec::new(),
        })
    }

    fn build_stage(&mut self, idx: usize) -> Result<State> {
        if let Some(s) = self.built.get(&idx) {
            return Ok(s.clone());
        }
        let from = self.stages[idx].from.clone();
        let body = self.stages[idx].body.clone();
        let Instruction::From {
            image, platform, ..
        } = &from.instruction
        else {
            return Err(fail("internal: stage without FROM"));
        };
        let g = self.global.clone();
        let glookup = |k: &str| g.get(k);
        let image_ref = self
            .expander
            .word(image, &glookup)
            .map_err(|e| fail(format!("line {}: FROM: {e}", from.pos.line)))?;
        let platform = match platform {
            Some(p) => Some(
                self.expander
                    .word(p, &glookup)
                    .map_err(|e| fail(format!("line {}: FROM --platform: {e}", from.pos.line)))?,
            ),
            None => None,
        };
        self.step_no += 1;
        let label = self.stages[idx]
            .name
            .clone()
            .unwrap_or_else(|| idx.to_string());
        self.say(&format!(
            "[{label} {}/{}] FROM {image_ref}",
            self.step_no, self.total_steps
        ));
        let mut state = if image_ref.eq_ignore_ascii_case("scratch") {
            self.scratch_state()
        } else if let Some(dep) = self.stage_index(&image_ref).filter(|d| *d < idx) {
            self.build_stage(dep)?
        } else {
            let img = skiff_image::resolve(&self.store, &image_ref, platform.as_deref()).map_err(|e| {
                fail(format!(
                    "line {}: base image '{image_ref}' not found: {e} (there is no registry here: import it with `skiff-image import`)",
                    from.pos.line
                ))
            })?;
            self.image_state(&img)?
        };
        // Like BuildKit and buildah, a stage whose base has no PATH gets the default one.
        let mut env = env_list(&state.config);
        if !env.iter().any(|e| e.starts_with("PATH=")) {
            env.insert(0, skiff_image::spec::DEFAULT_PATH.to_string());
            state.config.insert("Env".into(), json!(env));
        }
        // ONBUILD triggers of the base run first, then are dropped.
        let triggers: Vec<String> = state
            .config
            .remove("OnBuild")
            .and_then(|v| serde_json::from_value(v).ok())
            .unwrap_or_default();
        for t in triggers {
            let df = crate::parser::parse("ONBUILD trigger", &t)?;
            for l in df.instructions {
                self.say(&format!("  ONBUILD trigger: {}", l.source));
                self.step(idx, &mut state, &l)
                    .map_err(|e| self.locate(e, &l))?;
            }
        }
        for l in &body {
            self.step_no += 1;
            self.say(&format!(
                "[{label} {}/{}] {}",
                self.step_no, self.total_steps, l.source
            ));
            self.step(idx, &mut state, l)
                .map_err(|e| self.locate(e, l))?;
        }
        // WORKDIRs no later step created are made now, like Docker does.
        if !state.pending_dirs.is_empty() {
            let key = sha(&[&state.key, "workdir"]);
            let created_by = format!(
                "WORKDIR {}",
                state
                    .pending_dirs
                    .iter()
                    .map(|d| d.0.as_str())
                    .collect::<Vec<_>>()
                    .join(" ")
            );
            let mut make = |b: &mut Self, st: &State| -> Result<Option<LayerInfo>> {
                let guard = b.bundle(st, Map::new())?;
                let upper_empty = fs::read_dir(guard.path.join("upper"))
                    .map(|mut d| d.next().is_none())
                    .unwrap_or(false);
                if upper_empty {
                    return Ok(None);
                }
                let layer = skiff_image::diff(&b.store, &guard.path)
                    .ctx("turning the WORKDIR directories into a layer")?;
                drop(guard);
                Ok(Some(layer))
            };
            self.layer_step(&mut state, key, created_by, &mut make)?;
        }
        self.built.insert(idx, state.clone());
        Ok(state)
    }

    fn url_record_path(&self, url: &str) -> PathBuf {
        self.cache_dir
            .join("urls")
            .join(format!("{}.json", sha(&[url])))
    }

    /// The record of an earlier download of `url`, if any (unreadable records are ignored).
    fn url_record(&self, url: &str) -> Option<UrlRecord> {
        let b = fs::read(self.url_record_path(url)).ok()?;
        serde_json::from_slice(&b).ok()
    }

    /// Remember a download's validators and digest (best effort: a failure only costs a
    /// download next time). Written to a temp file and renamed, so readers see whole records.
    fn save_url_record(&self, url: &str, r: &UrlRecord) {
        if r.validators == crate::fetch::Validators::default() {
            return;
        }
        let path = self.url_record_path(url);
        let Some(dir) = path.parent() else { return };
        if fs::create_dir_all(dir).is_err() {
            return;
        }
        let Ok(json) = serde_json::to_vec(r) else {
            return;
        };
        if let Ok(mut t) = tempfile::NamedTempFile::new_in(dir) {
            if t.write_all(&json).is_ok() {
                let _ = t.persist(&path);
            }
        }
    }

    /// Prefix a step's error with FILE:LINE:COLUMN and the instruction.
    fn locate(&self, e: BuildError, l: &Located) -> BuildError {
        match e {
            BuildError::Step(m) => {
                let m = m
                    .strip_prefix(&format!("line {}: ", l.pos.line))
                    .unwrap_or(&m)
                    .to_string();
                BuildError::Step(format!(
                    "{}:{}:{}: {}: {m}",
                    self.file,
                    l.pos.line,
                    l.pos.column,
                    l.instruction.keyword()
                ))
            }
            other => other,
        }
    }

    fn lookup_env(st: &State) -> Vec<(String, String)> {
        vars::split_env(&env_list(&st.config))
    }

    /// The key=value pairs of an ENV or LABEL with keys and values expanded (all against the
    /// state before the step).
    fn expand_pairs(
        &self,
        st: &State,
        kvs: &[KeyValue],
        line: usize,
    ) -> Result<Vec<(String, String)>> {
        kvs.iter()
            .map(|KeyValue { key, value }| {
                Ok((
                    self.word(st, key, line)?,
                    self.word(st, value.as_deref().unwrap_or(""), line)?,
                ))
            })
            .collect()
    }

    fn word(&self, st: &State, w: &str, line: usize) -> Result<String> {
        let env = Self::lookup_env(st);
        let f = |k: &str| vars::lookup(&env, &st.args, k);
        self.expander
            .word(w, &f)
            .map_err(|e| fail(format!("line {line}: {e}")))
    }

    fn words(&self, st: &State, w: &str, line: usize) -> Result<Vec<String>> {
        let env = Self::lookup_env(st);
        let f = |k: &str| vars::lookup(&env, &st.args, k);
        self.expander
            .words(w, &f)
            .map_err(|e| fail(format!("line {line}: {e}")))
    }

    fn empty_history(&self, st: &mut State, created_by: String) {
        st.history.push(json!({
            "created": self.now(),
            "created_by": created_by,
            "empty_layer": true,
        }));
        st.key = sha(&[
            &st.key,
            "meta",
            &serde_json::to_string(&st.config).unwrap_or_default(),
        ]);
    }

    fn step(&mut self, stage: usize, st: &mut State, l: &Located) -> Result<()> {
        let line = l.pos.line;
        if crate::interrupt::requested() {
            return Err(fail("interrupted"));
        }
        match &l.instruction {
            Instruction::From { .. } => Err(fail("internal: nested FROM")),
            Instruction::Arg { args } => {
                let env = Self::lookup_env(st);
                let g = self.global.clone();
                st.args
                    .declare(args, &self.expander, &env, Some(&g), &mut self.cli)
                    .map_err(|e| fail(format!("line {line}: {e}")))?;
                // An ARG's value changes the cache only where it is used (RUN sees all ARGs as
                // environment; other steps include their expanded words), not at the ARG itself.
                let names = args
                    .iter()
                    .map(|a| a.key.as_str())
                    .collect::<Vec<_>>()
                    .join(",");
                st.key = sha(&[&st.key, "arg", &names]);
                Ok(())
            }
            Instruction::Env { vars: kvs } => {
                let mut env = env_list(&st.config);
                let pairs = self.expand_pairs(st, kvs, line)?;
                for (k, v) in &pairs {
                    vars::set_env(&mut env, k, v);
                }
                st.config.insert("Env".into(), json!(env));
                let desc = pairs_text(&pairs);
                self.empty_history(st, format!("ENV {desc}"));
                Ok(())
            }
            Instruction::Label { labels } => {
                let pairs = self.expand_pairs(st, labels, line)?;
                let entry = st.config.entry("Labels").or_insert_with(|| json!({}));
                if !entry.is_object() {
                    *entry = json!({});
                }
                for (k, v) in &pairs {
                    entry[k] = json!(v);
                }
                let desc = pairs_text(&pairs);
                self.empty_history(st, format!("LABEL {desc}"));
                Ok(())
            }
            Instruction::Maintainer { name } => {
                st.top.insert("author".into(), json!(name));
                self.empty_history(st, format!("MAINTAINER {name}"));
                Ok(())
            }
            Instruction::Workdir { path } => {
                let p = self.word(st, path, line)?;
                let cur = str_field(&st.config, "WorkingDir");
                let joined = if p.starts_with('/') {
                    p
                } else {
                    format!("{}/{}", if cur.is_empty() { "/" } else { &cur }, p)
                };
                let clean = format!("/{}", rootfs::rel_in_root(&joined));
                st.config.insert("WorkingDir".into(), json!(clean));
                let owner = str_field(&st.config, "User");
                if !st.pending_dirs.iter().any(|(d, _)| *d == clean) {
                    st.pending_dirs.push((clean.clone(), owner));
                }
                self.empty_history(st, format!("WORKDIR {clean}"));
                Ok(())
            }
            Instruction::User { user } => {
                let u = self.word(st, user, line)?;
                st.config.insert("User".into(), json!(u));
                self.empty_history(st, format!("USER {u}"));
                Ok(())
            }
            Instruction::Expose { ports } => {
                let mut all = Vec::new();
                for p in ports {
                    for w in self.words(st, p, line)? {
                        all.extend(
                            expand_ports(&w)
                                .map_err(|e| fail(format!("line {line}: EXPOSE: {e}")))?,
                        );
                    }
                }
                let entry = st.config.entry("ExposedPorts").or_insert_with(|| json!({}));
                if !entry.is_object() {
                    *entry = json!({});
                }
                for p in &all {
                    entry[p] = json!({});
                }
                self.empty_history(st, format!("EXPOSE {}", all.join(" ")));
                Ok(())
            }
            Instruction::Volume { paths } => {
                let mut all = Vec::new();
                for p in paths {
                    let v = self.word(st, p, line)?;
                    if v.trim().is_empty() {
                        return Err(fail(format!(
                            "line {line}: VOLUME specified can not be an empty string"
                        )));
                    }
                    all.push(v);
                }
                let entry = st.config.entry("Volumes").or_insert_with(|| json!({}));
                if !entry.is_object() {
                    *entry = json!({});
                }
                for v in &all {
                    entry[v] = json!({});
                }
                self.empty_history(st, format!("VOLUME {:?}", all));
                Ok(())
            }
            Instruction::Stopsignal { signal } => {
                let s = self.word(st, signal, line)?;
                if !valid_signal(&s) {
                    return Err(fail(format!("line {line}: STOPSIGNAL: invalid signal '{s}': expected a name like SIGTERM or a number 1-64")));
                }
                st.config.insert("StopSignal".into(), json!(s));
                self.empty_history(st, format!("STOPSIGNAL {s}"));
                Ok(())
            }
            Instruction::Cmd { command } | Instruction::Entrypoint { command } => {
                let argv = match command {
                    Command::Exec(v) => v.clone(),
                    Command::Shell(s) => {
                        let mut v = st.shell.clone();
                        v.push(s.clone());
                        v
                    }
                };
                let (k, desc) = if matches!(l.instruction, Instruction::Cmd { .. }) {
                    st.cmd_set = true;
                    ("Cmd", "CMD")
                } else {
                    if !st.cmd_set {
                        st.config.remove("Cmd");
                    }
                    ("Entrypoint", "ENTRYPOINT")
                };
                st.config.insert(k.into(), json!(argv));
                self.empty_history(
                    st,
                    format!(
                        "{desc} {}",
                        serde_json::to_string(&argv).unwrap_or_default()
                    ),
                );
                Ok(())
            }
            Instruction::Shell { shell } => {
                st.shell = shell.clone();
                st.config.insert("Shell".into(), json!(shell));
                self.empty_history(
                    st,
                    format!("SHELL {}", serde_json::to_string(shell).unwrap_or_default()),
                );
                Ok(())
            }
            Instruction::Healthcheck(h) => {
                let v = match h {
                    Health::None => json!({"Test": ["NONE"]}),
                    Health::Check {
                        command,
                        interval_ns,
                        timeout_ns,
                        start_period_ns,
                        start_interval_ns,
                        retries,
                    } => {
                        let test = match command {
                            Command::Exec(v) => {
                                let mut t = vec!["CMD".to_string()];
                                t.extend(v.clone());
                                t
                            }
                            Command::Shell(s) => vec!["CMD-SHELL".to_string(), s.clone()],
                        };
                        let mut o = json!({"Test": test});
                        for (k, n) in [
                            ("Interval", interval_ns),
                            ("Timeout", timeout_ns),
                            ("StartPeriod", start_period_ns),
                            ("StartInterval", start_interval_ns),
                        ] {
                            if *n > 0 {
                                o[k] = json!(n);
                            }
                        }
                        if *retries > 0 {
                            o["Retries"] = json!(retries);
                        }
                        o
                    }
                };
                st.config.insert("Healthcheck".into(), v);
                self.empty_history(
                    st,
                    format!(
                        "HEALTHCHECK {}",
                        l.source
                            .trim_start_matches(|c: char| c.is_alphabetic())
                            .trim()
                    ),
                );
                Ok(())
            }
            Instruction::Onbuild { expression, .. } => {
                let entry = st.config.entry("OnBuild").or_insert_with(|| json!([]));
                if let Some(a) = entry.as_array_mut() {
                    a.push(json!(expression));
                } else {
                    *entry = json!([expression]);
                }
                self.empty_history(st, format!("ONBUILD {expression}"));
                Ok(())
            }
            Instruction::Run {
                command,
                heredocs,
                mounts,
                network,
                security,
                ..
            } => self.run_step(
                stage,
                st,
                l,
                command,
                heredocs,
                mounts,
                network.as_deref(),
                security.as_deref(),
            ),
            Instruction::Copy(spec) => self.copy_step(stage, st, l, spec, false),
            Instruction::Add(spec) => self.copy_step(stage, st, l, spec, true),
        }
    }

    // ------------------------------------------------------------ cache

    fn cache_path(&self, key: &str) -> PathBuf {
        self.cache_dir.join(format!("{key}.json"))
    }

    fn cache_get(&self, key: &str) -> Option<(LayerInfo, Value)> {
        if self.opts.no_cache {
            return None;
        }
        let data = fs::read(self.cache_path(key)).ok()?;
        let v: Value = serde_json::from_slice(&data).ok()?;
        let l = &v["layer"];
        let info = LayerInfo {
            digest: l["digest"].as_str()?.to_string(),
            diff_id: l["diff_id"].as_str()?.to_string(),
            size: l["size"].as_u64()?,
            media_type: l["media_type"].as_str()?.to_string(),
        };
        if !self.store.has_blob(&info.digest) {
            return None;
        }
        Some((info, v["history"].clone()))
    }

    fn cache_put(&self, key: &str, info: &LayerInfo, history: &Value) {
        let v = json!({
            "layer": {"digest": info.digest, "diff_id": info.diff_id, "size": info.size, "media_type": info.media_type},
            "history": history,
        });
        let Ok(mut t) = tempfile::NamedTempFile::new_in(&self.cache_dir) else {
            return;
        };
        if t.write_all(v.to_string().as_bytes()).is_ok() {
            let _ = t.persist(self.cache_path(key));
        }
    }

    /// Append a layer (from cache or freshly made by `make`) for a filesystem step.
    fn layer_step(
        &mut self,
        st: &mut State,
        key: String,
        created_by: String,
        make: &mut dyn FnMut(&mut Self, &State) -> Result<Option<LayerInfo>>,
    ) -> Result<()> {
        // Pending WORKDIR directories are created by this step, so they are part of its identity.
        let key = if st.pending_dirs.is_empty() {
            key
        } else {
            sha(&[
                &key,
                "dirs",
                &serde_json::to_string(&st.pending_dirs).unwrap_or_default(),
            ])
        };
        if let Some((info, hist)) = self.cache_get(&key) {
            self.say(" ---> CACHED");
            st.layers.push(info);
            st.history.push(hist);
            st.key = key;
            st.pending_dirs.clear();
            return Ok(());
        }
        let Some(info) = make(self, st)? else {
            st.pending_dirs.clear();
            return Ok(());
        };
        let info = self.reproducible(info)?;
        let hist = json!({"created": self.now(), "created_by": created_by});
        self.cache_put(&key, &info, &hist);
        st.layers.push(info);
        st.history.push(hist);
        st.key = key;
        st.pending_dirs.clear();
        Ok(())
    }

    /// With SOURCE_DATE_EPOCH, rewrite the layer with mtimes clamped to it.
    fn reproducible(&self, info: LayerInfo) -> Result<LayerInfo> {
        let Some(epoch) = self.opts.source_date_epoch else {
            return Ok(info);
        };
        let blob = self
            .store
            .open_blob(&info.digest, Some(info.size))
            .ctx("reading new layer")?;
        let mut r = skiff_image::layer::decompress(std::io::BufReader::new(blob))
            .ctx("decompressing new layer")?;
        let epoch = epoch.max(0) as u64;
        // Clamp into a temp file first, so a failure cannot leave a half-written layer in use.
        let mut tmp = tempfile::tempfile_in(&self.tmp_dir).ctx("creating temp file")?;
        crate::reproducible::clamp_mtimes(&mut r, &mut tmp, epoch).ctx("rewriting layer mtimes")?;
        std::io::Seek::seek(&mut tmp, std::io::SeekFrom::Start(0)).ctx("rewinding temp layer")?;
        let mut copy_err = None;
        let info = self
            .store
            .write_layer(|w| {
                if let Err(e) = std::io::copy(&mut tmp, w) {
                    copy_err = Some(e);
                }
                Ok(())
            })
            .ctx("writing reproducible layer")?;
        match copy_err {
            Some(e) => Err(fail(format!("writing reproducible layer: {e}"))),
            None => Ok(info),
        }
    }

    // ------------------------------------------------------------ bundles

    /// Unpack `st` into a fresh overlay bundle; `runtime` is the config the bundle's
    /// config.json is generated from.
    fn bundle(&self, st: &State, runtime: Map<String, Value>) -> Result<BundleGuard> {
        let (img, _) = self.materialize(st, Some(runtime), false)?;
        let dir = tempfile::Builder::new()
            .prefix(&format!("bundle-{}-", std::process::id()))
            .rand_bytes(10)
            .tempdir_in(&self.tmp_dir)
            .ctx("creating bundle dir")?;
        let path = dir.keep();
        let guard = BundleGuard {
            path: path.join("b"),
        };
        let opts = skiff_image::UnpackOptions {
            mode: Some(skiff_image::Mode::Overlay),
            ..Default::default()
        };
        skiff_image::unpack(&self.store, &img, &guard.path, &opts)
            .ctx("unpacking the build state")?;
        if !st.pending_dirs.is_empty() {
            let root = Root::open(&guard.path.join("rootfs")).ctx("opening the bundle rootfs")?;
            let rootfs_path = guard.path.join("rootfs");
            for (d, user) in &st.pending_dirs {
                let (uid, gid) = if user.is_empty() {
                    (0, 0)
                } else {
                    let u = skiff_image::spec::resolve_user(&rootfs_path, user)
                        .ctx(format!("WORKDIR {d}: resolving USER {user}"))?;
                    (u.uid, u.gid)
                };
                let meta = rootfs::Meta {
                    mode: 0o755,
                    uid,
                    gid,
                    mtime: None,
                };
                root.mkdir_all(d, Some(meta))
                    .ctx(format!("creating WORKDIR {d}"))?;
            }
        }
        Ok(guard)
    }

    /// After a COPY/ADD, the bundle's upper dir holds exactly the new layer in overlayfs'
    /// format, which is also the store's layer-cache format: move it into the cache so the next
    /// step does not extract the layer again. Best effort; on any problem the layer is simply
    /// extracted from its blob later.
    fn seed_layer_cache(&self, bundle: &Path, diff_id: &str) {
        let Ok(dest) = skiff_image::layer::cache_path(&self.store, diff_id) else {
            return;
        };
        if dest.exists() || skiff_image::umount(bundle).is_err() {
            return;
        }
        let upper = bundle.join("upper");
        if set_mode(&upper, 0o755).is_ok() && fs::rename(&upper, &dest).is_err() {
            let _ = set_mode(&upper, 0o755);
        }
    }

    /// A rootfs of another stage or an image, for COPY --from / RUN --mount from=.
    fn source_rootfs(
        &mut self,
        stage: usize,
        from: &str,
        line: usize,
    ) -> Result<(BundleGuard, String)> {
        let (st, key) = if let Some(dep) = self.stage_index(from).filter(|d| *d != stage) {
            if dep > stage {
                return Err(fail(format!(
                    "line {line}: --from={from} refers to a later stage"
                )));
            }
            let s = self.build_stage(dep)?;
            let k = s.key.clone();
            (s, k)
        } else {
            let img = skiff_image::resolve(&self.store, from, None).map_err(|e| {
                fail(format!(
                    "line {line}: --from={from}: no such stage or image: {e}"
                ))
            })?;
            let s = self.image_state(&img)?;
            let k = s.key.clone();
            (s, k)
        };
        let g = self.bundle(&st, Map::new())?;
        Ok((g, key))
    }

    // ------------------------------------------------------------ RUN

    #[allow(clippy::too_many_arguments)]
    fn run_step(
        &mut self,
        stage: usize,
        st: &mut State,
        l: &Located,
        command: &Command,
        heredocs: &[crate::instructions::Heredoc],
        mounts: &[MountSpec],
        network: Option<&str>,
        security: Option<&str>,
    ) -> Result<()> {
        let line = l.pos.line;
        let mut script_file: Option<(String, String)> = None;
        let argv: Vec<String> = match command {
            Command::Exec(v) => v.clone(),
            Command::Shell(s) => {
                let mut v = st.shell.clone();
                if heredocs.len() == 1 && s.trim() == format!("<<{}", heredocs[0].name)
                    || only_heredoc(s, heredocs)
                {
                    let h = &heredocs[0];
                    if h.content.starts_with("#!") {
                        script_file = Some((h.name.clone(), h.content.clone()));
                        v = vec![format!("/dev/pipes/{}", h.name)];
                    } else {
                        v.push(h.content.clone());
                    }
                } else if heredocs.is_empty() {
                    v.push(s.clone());
                } else {
                    let mut script = s.clone();
                    script.push('\n');
                    for h in heredocs {
                        script.push_str(&h.content);
                        script.push_str(&h.name);
                        script.push('\n');
                    }
                    v.push(script);
                }
                v
            }
        };
        let env = vars::run_env(&env_list(&st.config), &st.args, &self.cli);
        let key_env = vars::run_env(&env_list(&st.config), &st.args, &BuildArgs::default());
        let workdir = {
            let w = str_field(&st.config, "WorkingDir");
            if w.is_empty() {
                "/".to_string()
            } else {
                w
            }
        };
        let user = str_field(&st.config, "User");
        let net = match network.unwrap_or("default") {
            "none" => Network::None,
            _ => self.opts.network,
        };
        // Expand mount options with the build's variables.
        let mut xmounts = Vec::new();
        for m in mounts {
            let mut m = m.clone();
            for f in [
                &mut m.target,
                &mut m.source,
                &mut m.from,
                &mut m.id,
                &mut m.mode,
                &mut m.uid,
                &mut m.gid,
                &mut m.env,
                &mut m.size,
            ] {
                if let Some(v) = f.as_ref() {
                    *f = Some(self.word(st, v, line)?);
                }
            }
            xmounts.push(m);
        }
        let key = sha(&[
            &st.key,
            "run",
            &serde_json::to_string(&argv).unwrap_or_default(),
            &serde_json::to_string(&key_env).unwrap_or_default(),
            &workdir,
            &user,
            &format!("{net:?}{}", security.unwrap_or("")),
            &serde_json::to_string(&xmounts).unwrap_or_default(),
            &format!("{:?}", self.opts.source_date_epoch),
        ]);
        let created_by = match command {
            Command::Exec(v) => format!("RUN {}", serde_json::to_string(v).unwrap_or_default()),
            Command::Shell(s) => format!("RUN {} {s}", st.shell.join(" ")),
        };
        let insecure = security == Some("insecure");
        let mut make = |b: &mut Self, st: &State| -> Result<Option<LayerInfo>> {
            b.execute_run(
                stage,
                st,
                line,
                &argv,
                &env,
                &workdir,
                &user,
                net,
                insecure,
                &xmounts,
                script_file.as_ref(),
            )
            .map(Some)
        };
        self.layer_step(st, key, created_by, &mut make)
    }

    #[allow(clippy::too_many_arguments)]
    fn execute_run(
        &mut self,
        stage: usize,
        st: &State,
        line: usize,
        argv: &[String],
        env: &[String],
        workdir: &str,
        user: &str,
        net: Network,
        insecure: bool,
        mounts: &[MountSpec],
        script: Option<&(String, String)>,
    ) -> Result<LayerInfo> {
        let mut rc = Map::new();
        rc.insert("Env".into(), json!(env));
        rc.insert("Cmd".into(), json!(argv));
        rc.insert("Entrypoint".into(), json!([]));
        rc.insert("WorkingDir".into(), json!(workdir));
        if !user.is_empty() {
            rc.insert("User".into(), json!(user));
        }
        let guard = self.bundle(st, rc)?;
        let bundle = guard.path.clone();
        let root = Root::open(&bundle.join("rootfs")).ctx("opening the bundle rootfs")?;
        // Temporary host-side files for this step (secrets, scripts) live here and go away.
        let scratch = tempfile::Builder::new()
            .prefix(&format!("run-{}-", std::process::id()))
            .tempdir_in(&self.tmp_dir)
            .ctx("creating temp dir")?;
        let mut extra: Vec<ExtraMount> = Vec::new();
        let mut keep_alive: Vec<BundleGuard> = Vec::new();
        let mut run_env: Vec<String> = env.to_vec();
        if net == Network::Host {
            for f in ["/etc/resolv.conf", "/etc/hosts"] {
                if Path::new(f).exists() {
                    extra.push(ExtraMount {
                        destination: f.into(),
                        kind: "bind".into(),
                        source: f.into(),
                        options: vec!["rbind".into(), "ro".into()],
                    });
                }
            }
        }
        if let Some((name, content)) = script {
            let p = scratch.path().join("script");
            fs::write(&p, content).ctx("writing heredoc script")?;
            set_mode(&p, 0o755)?;
            extra.push(ExtraMount {
                destination: format!("/dev/pipes/{name}"),
                kind: "bind".into(),
                source: p.display().to_string(),
                options: vec!["rbind".into(), "ro".into()],
            });
        }
        for (i, m) in mounts.iter().enumerate() {
            let abs = |t: &str| {
                if t.starts_with('/') {
                    t.to_string()
                } else {
                    format!("{}/{}", workdir.trim_end_matches('/'), t)
                }
            };
            match m.kind.as_str() {
                "cache" => {
                    let target = abs(m.target.as_deref().unwrap_or(""));
                    let id = m.id.clone().unwrap_or_else(|| target.clone());
                    let dir = self
                        .cache_dir
                        .join("mounts")
                        .join(sha(&["cache-mount", &id]));
                    if !dir.exists() {
                        fs::create_dir_all(&dir)
                            .ctx(format!("creating cache mount {}", dir.display()))?;
                        apply_mount_owner(&dir, m, "cache mount", 0o755)?;
                    }
                    let ro = m.readonly.unwrap_or(false);
                    extra.push(ExtraMount {
                        destination: target,
                        kind: "bind".into(),
                        source: dir.display().to_string(),
                        options: vec!["rbind".into(), if ro { "ro" } else { "rw" }.into()],
                    });
                }
                "bind" => {
                    let target = abs(m.target.as_deref().unwrap_or(""));
                    let (base, _g) = match &m.from {
                        Some(f) => {
                            let (g, _) = self.source_rootfs(stage, f, line)?;
                            let p = g.path.join("rootfs");
                            (p, Some(g))
                        }
                        None => (self.opts.context.clone(), None),
                    };
                    let base = fs::canonicalize(&base).ctx("resolving bind source root")?;
                    let src_rel = m.source.as_deref().unwrap_or(".");
                    let src =
                        fs::canonicalize(base.join(rootfs::rel_in_root(src_rel))).map_err(|e| {
                            fail(format!("line {line}: --mount source '{src_rel}': {e}"))
                        })?;
                    if !src.starts_with(&base) {
                        return Err(fail(format!(
                            "line {line}: --mount source '{src_rel}' is outside its root"
                        )));
                    }
                    let rw = m.readonly == Some(false);
                    let source = if rw {
                        // Writes must be discarded: bind a private copy.
                        let copy_dir = scratch.path().join(format!("bind{i}"));
                        let st = std::process::Command::new("cp")
                            .arg("-a")
                            .arg(&src)
                            .arg(&copy_dir)
                            .status()
                            .ctx("copying rw bind source")?;
                        if !st.success() {
                            return Err(fail(format!(
                                "line {line}: copying --mount source failed"
                            )));
                        }
                        copy_dir
                    } else {
                        src
                    };
                    extra.push(ExtraMount {
                        destination: target,
                        kind: "bind".into(),
                        source: source.display().to_string(),
                        options: vec!["rbind".into(), if rw { "rw" } else { "ro" }.into()],
                    });
                    if let Some(g) = _g {
                        keep_alive.push(g);
                    }
                }
                "tmpfs" => {
                    let target = abs(m.target.as_deref().unwrap_or(""));
                    let mut o = vec!["nosuid".to_string(), "nodev".to_string()];
                    if let Some(s) = &m.size {
                        o.push(format!("size={s}"));
                    }
                    extra.push(ExtraMount {
                        destination: target,
                        kind: "tmpfs".into(),
                        source: "tmpfs".into(),
                        options: o,
                    });
                }
                "secret" => {
                    let id =
                        m.id.clone()
                            .or_else(|| {
                                m.target
                                    .as_deref()
                                    .and_then(|t| t.rsplit('/').next().map(str::to_string))
                            })
                            .unwrap_or_default();
                    let Some((_, src)) = self.opts.secrets.iter().find(|(i, _)| *i == id) else {
                        if m.required == Some(true) {
                            return Err(fail(format!("line {line}: secret '{id}' is required but was not given with --secret id={id},src=FILE")));
                        }
                        continue;
                    };
                    let data = fs::read(src)
                        .ctx(format!("reading secret '{id}' from {}", src.display()))?;
                    if let Some(var) = &m.env {
                        run_env.push(format!("{var}={}", String::from_utf8_lossy(&data)));
                    }
                    if m.env.is_none() || m.target.is_some() {
                        let target =
                            abs(m.target.as_deref().unwrap_or(&format!("/run/secrets/{id}")));
                        let p = scratch.path().join(format!("secret{i}"));
                        fs::write(&p, &data).ctx("staging secret")?;
                        apply_mount_owner(&p, m, "secret", 0o400)?;
                        extra.push(ExtraMount {
                            destination: target,
                            kind: "bind".into(),
                            source: p.display().to_string(),
                            options: vec!["rbind".into(), "ro".into()],
                        });
                    }
                }
                other => {
                    return Err(fail(format!(
                        "line {line}: --mount type={other} is not supported by skiff-build"
                    )))
                }
            }
        }
        // The working directory exists for the command (docker creates it too).
        root.mkdir_all(workdir, None)
            .ctx(format!("creating working directory {workdir}"))?;
        // Remember mount points that do not exist yet: the runtime creates them, we remove them.
        let mut created: Vec<String> = Vec::new();
        for m in &extra {
            let rel = rootfs::rel_in_root(&m.destination);
            if rel.starts_with("dev/") || rel == "dev" {
                continue;
            }
            let mut acc = String::new();
            for c in rel.split('/') {
                if !acc.is_empty() {
                    acc.push('/');
                }
                acc.push_str(c);
                if root.lstat(&acc).ctx("checking mount point")?.is_none() {
                    created.push(acc.clone());
                }
            }
        }
        // Write config.json for this step.
        let cfg_path = bundle.join("config.json");
        let mut spec: Value =
            serde_json::from_slice(&fs::read(&cfg_path).ctx("reading config.json")?)
                .ctx("parsing config.json")?;
        spec["process"]["env"] = json!(run_env);
        crate::runtime::patch_spec(&mut spec, net, insecure, &extra, "skiff-build");
        fs::write(
            &cfg_path,
            serde_json::to_vec_pretty(&spec).ctx("serializing config.json")?,
        )
        .ctx("writing config.json")?;
        let rt = Runtime {
            program: self.opts.runtime.clone(),
            root: self.opts.runtime_root.clone(),
        };
        let id = format!(
            "skiff-build-{}-{}",
            std::process::id(),
            &sha(&[&bundle.display().to_string()])[..12]
        );
        let show = self.opts.progress != Progress::Quiet;
        let mut pending = Vec::new();
        let log = &mut self.log;
        let outcome = rt
            .run(&bundle, &id, &mut |chunk| {
                if !show {
                    return;
                }
                pending.extend_from_slice(chunk);
                while let Some(i) = pending.iter().position(|b| *b == b'\n') {
                    let line: Vec<u8> = pending.drain(..=i).collect();
                    log(&format!(
                        "  | {}",
                        String::from_utf8_lossy(&line[..line.len() - 1])
                    ));
                }
            })
            .ctx("running the RUN container")?;
        if show && !pending.is_empty() {
            (self.log)(&format!("  | {}", String::from_utf8_lossy(&pending)));
        }
        if crate::interrupt::requested() {
            return Err(fail(format!("line {line}: interrupted")));
        }
        if outcome.code != 0 {
            let out = String::from_utf8_lossy(&outcome.tail).to_string();
            return Err(fail(format!(
                "line {line}: {} failed with exit code {}{}",
                serde_json::to_string(argv).unwrap_or_default(),
                outcome.code,
                if show || out.is_empty() {
                    String::new()
                } else {
                    format!("; output:\n{out}")
                }
            )));
        }
        for p in created.iter().rev() {
            remove_if_empty(&root, p);
        }
        drop(root);
        drop(keep_alive);
        let layer = skiff_image::diff(&self.store, &bundle)
            .ctx("turning the RUN's changes into a layer")?;
        drop(guard);
        Ok(layer)
    }

    // ------------------------------------------------------------ COPY / ADD

    fn copy_step(
        &mut self,
        stage: usize,
        st: &mut State,
        l: &Located,
        spec: &CopySpec,
        add: bool,
    ) -> Result<()> {
        let line = l.pos.line;
        let kw = if add { "ADD" } else { "COPY" };
        let mut sources = Vec::new();
        let mut heredoc_files: Vec<(String, Vec<u8>)> = Vec::new();
        let mut hd = spec.heredocs.iter();
        for s in &spec.sources {
            if s.starts_with("<<") && !spec.heredocs.is_empty() {
                if let Some(h) = hd.next() {
                    let env = Self::lookup_env(st);
                    let f = |k: &str| vars::lookup(&env, &st.args, k);
                    let content = if h.expand {
                        self.expander
                            .heredoc(&h.content, &f)
                            .map_err(|e| fail(format!("line {line}: {e}")))?
                    } else {
                        h.content.clone()
                    };
                    heredoc_files.push((h.name.clone(), content.into_bytes()));
                    continue;
                }
            }
            sources.push(self.word(st, s, line)?);
        }
        let dest_raw = self.word(st, &spec.dest, line)?;
        let workdir = str_field(&st.config, "WorkingDir");
        let dest = if dest_raw.starts_with('/') {
            dest_raw.clone()
        } else {
            let w = if workdir.is_empty() {
                "/".to_string()
            } else {
                workdir.clone()
            };
            let mut d = format!("{}/{}", w.trim_end_matches('/'), dest_raw);
            if (dest_raw.ends_with('/') || dest_raw == "." || dest_raw.ends_with("/."))
                && !d.ends_with('/')
            {
                d.push('/');
            }
            d
        };
        let from = match &spec.from {
            Some(f) => Some(self.word(st, f, line)?),
            None => None,
        };
        let chown = match &spec.chown {
            Some(c) => Some(self.word(st, c, line)?),
            None => None,
        };
        let chmod = match &spec.chmod {
            Some(c) => Some(
                Chmod::parse(&self.word(st, c, line)?)
                    .map_err(|e| fail(format!("line {line}: {e}")))?,
            ),
            None => None,
        };
        let mut exclude = Vec::new();
        for e in &spec.exclude {
            exclude.push(
                Glob::new(&self.word(st, e, line)?)
                    .map_err(|e| fail(format!("line {line}: {e}")))?,
            );
        }
        let (urls, locals): (Vec<String>, Vec<String>) =
            sources.into_iter().partition(|s| add && archive::is_url(s));
        if (!urls.is_empty() && from.is_some()) || (add && from.is_some()) {
            return Err(fail(format!(
                "line {line}: {kw}: --from cannot be used with URLs or ADD"
            )));
        }
        let total_sources = urls.len() + locals.len() + heredoc_files.len();
        if total_sources > 1 && !dest.ends_with('/') {
            // Allowed only when the destination already is a directory; checked at copy time.
        }
        // Source root and cache identity of the sources.
        let (src_guard, src_root, src_key, is_context) = match &from {
            Some(f) => {
                let (g, k) = self.source_rootfs(stage, f, line)?;
                let r = Root::open(&g.path.join("rootfs")).ctx("opening source rootfs")?;
                (Some(g), r, k, false)
            }
            None => (
                None,
                Root::open(&self.opts.context).ctx(format!(
                    "opening build context {}",
                    self.opts.context.display()
                ))?,
                String::new(),
                true,
            ),
        };
        let mut copts = CopyOptions {
            chown: None,
            zero_owner: is_context,
            chmod: chmod.clone(),
            exclude,
            ignore: if is_context {
                Some(self.ignore.clone())
            } else {
                None
            },
        };
        let rels = if locals.is_empty() {
            Vec::new()
        } else {
            copy::resolve_sources(&src_root, &locals, &copts, is_context)
                .map_err(|e| fail(format!("line {line}: {e}")))?
        };
        let content_hash = copy::hash_sources(&src_root, &rels, &copts)
            .map_err(|e| fail(format!("line {line}: {e}")))?;
        // URLs are fetched now (their content is part of the cache key).
        let mut downloads = Vec::new();
        for u in &urls {
            // A URL fetched before is asked for with If-None-Match / If-Modified-Since; on 304
            // its recorded digest and date make the key, and the body is fetched only if the
            // step then has to be built.
            let record = if self.opts.no_cache {
                None
            } else {
                self.url_record(u)
            };
            let validators = record
                .as_ref()
                .map(|r| r.validators.clone())
                .unwrap_or_default();
            let fetched = self
                .fetcher
                .get_if_changed(u, &self.tmp_dir, &validators)
                .map_err(|e| fail(format!("line {line}: {u}: {e}")))?;
            let (file, digest, last_modified) = match (fetched, record) {
                (crate::fetch::Fetched::Body(mut d), _) => {
                    // Hashed from the temp file (downloads may be large; never held in memory).
                    let digest = hash_file(&mut d.file).ctx("reading download")?;
                    self.save_url_record(
                        u,
                        &UrlRecord {
                            validators: d.validators.clone(),
                            digest: digest.clone(),
                            last_modified: d.last_modified,
                        },
                    );
                    (Some(d.file), digest, d.last_modified)
                }
                (crate::fetch::Fetched::NotModified, Some(r)) => (None, r.digest, r.last_modified),
                (crate::fetch::Fetched::NotModified, None) => {
                    return Err(fail(format!(
                        "line {line}: {u}: 304 Not Modified to an unconditional request"
                    )))
                }
            };
            if let Some(c) = &spec.checksum {
                let want = self.word(st, c, line)?;
                if want != digest {
                    return Err(fail(format!(
                        "line {line}: ADD {u}: checksum mismatch: expected {want}, got {digest}"
                    )));
                }
            }
            downloads.push((u.clone(), file, digest, last_modified));
        }
        let key = sha(&[
            &st.key,
            kw,
            &serde_json::to_string(&(
                &locals,
                &urls,
                &dest,
                &from,
                &chown,
                &spec.chmod,
                &spec.exclude,
                spec.unpack,
            ))
            .unwrap_or_default(),
            &content_hash,
            &src_key,
            &serde_json::to_string(&heredoc_files).unwrap_or_default(),
            // Content and Last-Modified (it becomes the file's mtime).
            &downloads
                .iter()
                .map(|d| format!("{}@{:?}", d.2, d.3))
                .collect::<Vec<_>>()
                .join(","),
            &format!("{:?}", self.opts.source_date_epoch),
        ]);
        let created_by = format!(
            "{kw} {}",
            l.source
                .split_once(char::is_whitespace)
                .map(|x| x.1.trim())
                .unwrap_or("")
        );
        let parents = spec.parents;
        let unpack_local = add && spec.unpack != Some(false);
        let unpack_url = add && spec.unpack == Some(true);
        let epoch = self.opts.source_date_epoch;
        let mut make = |b: &mut Self, st: &State| -> Result<Option<LayerInfo>> {
            let guard = b.bundle(st, Map::new())?;
            let rootfs_path = guard.path.join("rootfs");
            let dst = Root::open(&rootfs_path).ctx("opening the bundle rootfs")?;
            if let Some(c) = &chown {
                copts.chown = Some(
                    resolve_chown(&rootfs_path, c)
                        .map_err(|e| fail(format!("line {line}: --chown={c}: {e}")))?,
                );
            }
            let into_dir = dest.ends_with('/')
                || dst
                    .stat(&rootfs::rel_in_root(&dest))
                    .ok()
                    .flatten()
                    .is_some_and(|s| rootfs::is_dir(&s));
            if total_sources > 1 && !into_dir {
                return Err(fail(format!("line {line}: {kw}: when copying several sources, the destination '{dest_raw}' must be a directory and end with '/'")));
            }
            let owner = copts.chown.unwrap_or((0, 0));
            let file_meta = |mode: u32, mtime: Option<i64>| rootfs::Meta {
                mode: copts
                    .chmod
                    .as_ref()
                    .map(|c| c.apply(mode, false))
                    .unwrap_or(mode),
                uid: owner.0,
                gid: owner.1,
                mtime: mtime.or(epoch).map(|s| (s, 0)),
            };
            for (name, content) in &heredoc_files {
                let target = if into_dir {
                    format!("{}/{}", dest.trim_end_matches('/'), name)
                } else {
                    dest.clone()
                };
                dst.write_file(&target, &mut &content[..], &file_meta(0o644, None))
                    .ctx(format!("writing {target}"))?;
            }
            for (u, file, digest, lm) in &downloads {
                let mut body = match file {
                    Some(f) => f.try_clone().ctx("reading download")?,
                    None => {
                        // Not modified, but this step is being built: fetch the body now.
                        let mut d = b
                            .fetcher
                            .get(u, &b.tmp_dir)
                            .map_err(|e| fail(format!("line {line}: {u}: {e}")))?;
                        let got = hash_file(&mut d.file).ctx("reading download")?;
                        if &got != digest || d.last_modified != *lm {
                            return Err(fail(format!(
                                "line {line}: {u}: the file changed during the build (the server said 304 Not Modified, then sent other content or date); build again"
                            )));
                        }
                        d.file
                    }
                };
                std::io::Seek::seek(&mut body, std::io::SeekFrom::Start(0))
                    .ctx("reading download")?;
                let target = if into_dir {
                    let n = crate::fetch::url_basename(u).ok_or_else(|| fail(format!("line {line}: ADD {u}: cannot infer a file name from the URL; give a destination file name")))?;
                    format!("{}/{}", dest.trim_end_matches('/'), n)
                } else {
                    dest.clone()
                };
                if unpack_url {
                    let kind = archive::sniff(&mut body).ctx("reading download")?;
                    if kind != archive::Kind::NotArchive {
                        archive::extract(body, kind, &dst, &dest, copts.chown)
                            .map_err(|e| fail(format!("line {line}: ADD {u}: extracting: {e}")))?;
                        continue;
                    }
                }
                dst.write_file(&target, &mut body, &file_meta(0o600, *lm))
                    .ctx(format!("writing {target}"))?;
            }
            if !rels.is_empty() {
                let mut plain = Vec::new();
                for r in &rels {
                    if unpack_local {
                        if let Some(s) = src_root.stat(r).ok().flatten() {
                            if rootfs::is_file(&s) {
                                let mut f = src_root.open_read(r).ctx(format!("opening {r}"))?;
                                let kind = archive::sniff(&mut f).ctx(format!("reading {r}"))?;
                                if kind != archive::Kind::NotArchive {
                                    archive::extract(f, kind, &dst, &dest, copts.chown).map_err(
                                        |e| fail(format!("line {line}: ADD {r}: extracting: {e}")),
                                    )?;
                                    continue;
                                }
                            }
                        }
                    }
                    plain.push(r.clone());
                }
                if parents {
                    // --parents: each source keeps its path below the destination.
                    for r in &plain {
                        let d = format!("{}/{}/", dest.trim_end_matches('/'), r);
                        let is_dir = src_root
                            .stat(r)
                            .ok()
                            .flatten()
                            .is_some_and(|s| rootfs::is_dir(&s));
                        let d = if is_dir {
                            d
                        } else {
                            match r.rsplit_once('/') {
                                Some((p, _)) => format!("{}/{}/", dest.trim_end_matches('/'), p),
                                None => format!("{}/", dest.trim_end_matches('/')),
                            }
                        };
                        copy::copy_into(&src_root, std::slice::from_ref(r), &dst, &d, &copts)
                            .map_err(|e| fail(format!("line {line}: {e}")))?;
                    }
                } else if !plain.is_empty() {
                    copy::copy_into(&src_root, &plain, &dst, &dest, &copts)
                        .map_err(|e| fail(format!("line {line}: {e}")))?;
                }
            }
            drop(dst);
            let layer = skiff_image::diff(&b.store, &guard.path)
                .ctx("turning the copied files into a layer")?;
            if epoch.is_none() {
                b.seed_layer_cache(&guard.path, &layer.diff_id);
            }
            drop(guard);
            Ok(Some(layer))
        };
        let r = self.layer_step(st, key, created_by, &mut make);
        drop(src_guard);
        r
    }
}

/// Remove bundles and temp dirs of builds that were killed (their pid is gone), so an
/// interrupted build leaves no mount or bundle behind for long.
fn clean_stale(tmp_dir: &Path, rt: &Runtime) {
    let dead = |rest: &str| -> bool {
        let Some(pid) = rest.split('-').next().and_then(|p| p.parse::<i32>().ok()) else {
            return false;
        };
        // SAFETY: signal 0 only checks for existence.
        let alive = unsafe { libc::kill(pid, 0) } == 0
            || std::io::Error::last_os_error().raw_os_error() == Some(libc::EPERM);
        !alive
    };
    // Containers of killed builds first (they may hold the bundles' mounts busy).
    if let Ok(rd) = fs::read_dir(&rt.root) {
        for e in rd.flatten() {
            let name = e.file_name().to_string_lossy().to_string();
            if name.strip_prefix("skiff-build-").is_some_and(dead) {
                rt.delete(&name);
            }
        }
    }
    let Ok(rd) = fs::read_dir(tmp_dir) else {
        return;
    };
    for e in rd.flatten() {
        let name = e.file_name().to_string_lossy().to_string();
        let Some(rest) = name
            .strip_prefix("bundle-")
            .or_else(|| name.strip_prefix("run-"))
        else {
            continue;
        };
        if !dead(rest) {
            continue;
        }
        let p = e.path();
        let b = p.join("b");
        if b.exists() && skiff_image::remove_bundle(&b).is_err() {
            let _ = skiff_image::umount(&b);
        }
        let _ = fs::remove_dir_all(&p);
    }
}

fn only_heredoc(s: &str, heredocs: &[crate::instructions::Heredoc]) -> bool {
    if heredocs.len() != 1 {
        return false;
    }
    let t = s.trim();
    let t = t.trim_start_matches(|c: char| c.is_ascii_digit());
    let Some(rest) = t.strip_prefix("<<") else {
        return false;
    };
    let rest = rest.strip_prefix('-').unwrap_or(rest);
    let unq = rest.trim_matches(|c| c == '"' || c == '\'');
    unq == heredocs[0].name && !rest.contains(char::is_whitespace)
}

/// The `k=v k2=v2` text of an ENV or LABEL history entry.
fn pairs_text(pairs: &[(String, String)]) -> String {
    pairs
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(" ")
}

fn set_mode(p: &Path, mode: u32) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    fs::set_permissions(p, fs::Permissions::from_mode(mode)).ctx(format!("chmod {}", p.display()))
}

/// Gives the cache dir or secret file made for a RUN `--mount` the mount's `mode` (octal,
/// else `default_mode`), `uid` and `gid` (else root); `what` names the mount in errors.
fn apply_mount_owner(p: &Path, m: &MountSpec, what: &str, default_mode: u32) -> Result<()> {
    let mode = m
        .mode
        .as_deref()
        .map(|s| u32::from_str_radix(s, 8))
        .transpose()
        .ctx(format!("{what} mode"))?
        .unwrap_or(default_mode);
    set_mode(p, mode)?;
    let id = |v: &Option<String>, field: &str| {
        v.as_deref()
            .map(str::parse::<u32>)
            .transpose()
            .ctx(format!("{what} {field}"))
            .map(|id| id.unwrap_or(0))
    };
    let uid = id(&m.uid, "uid")?;
    let gid = id(&m.gid, "gid")?;
    std::os::unix::fs::chown(p, Some(uid), Some(gid)).ctx(format!("chown {what}"))
}

fn remove_if_empty(root: &Root, rel: &str) {
    let (parent, name) = match rel.rsplit_once('/') {
        Some((p, n)) => (p, n),
        None => ("", rel),
    };
    let Ok(dir) = root.open_dir(parent) else {
        return;
    };
    let Ok(Some(st)) = rootfs::lstat_at(std::os::fd::AsRawFd::as_raw_fd(&dir), name.as_bytes())
    else {
        return;
    };
    let Ok(c) = std::ffi::CString::new(name) else {
        return;
    };
    let flags = if rootfs::is_dir(&st) {
        libc::AT_REMOVEDIR
    } else if rootfs::is_file(&st) && st.st_size == 0 {
        0
    } else {
        return;
    };
    // SAFETY: valid fd and NUL-terminated name; rmdir fails harmlessly on non-empty dirs.
    unsafe { libc::unlinkat(std::os::fd::AsRawFd::as_raw_fd(&dir), c.as_ptr(), flags) };
}

/// `--chown=user[:group]` → numeric ids, names looked up in the destination rootfs.
fn resolve_chown(rootfs: &Path, spec: &str) -> std::result::Result<(u32, u32), String> {
    let (u, g) = match spec.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (spec, None),
    };
    let uid = match u.parse::<u32>() {
        Ok(n) => n,
        Err(_) => {
            skiff_image::spec::resolve_user(rootfs, u)
                .map_err(|e| e.to_string())?
                .uid
        }
    };
    let gid = match g {
        None => uid,
        Some(g) => match g.parse::<u32>() {
            Ok(n) => n,
            Err(_) => {
                let r = skiff_image::spec::resolve_user(rootfs, &format!("0:{g}"))
                    .map_err(|e| e.to_string())?;
                r.gid
            }
        },
    };
    Ok((uid, gid))
}

fn valid_signal(s: &str) -> bool {
    if let Ok(n) = s.parse::<u32>() {
        return (1..=64).contains(&n);
    }
    let up = s.to_ascii_uppercase();
    let name = up.strip_prefix("SIG").unwrap_or(&up);
    const NAMES: &[&str] = &[
        "HUP", "INT", "QUIT", "ILL", "TRAP", "ABRT", "IOT", "BUS", "FPE", "KILL", "USR1", "SEGV",
        "USR2", "PIPE", "ALRM", "TERM", "STKFLT", "CHLD", "CONT", "STOP", "TSTP", "TTIN", "TTOU",
        "URG", "XCPU", "XFSZ", "VTALRM", "PROF", "WINCH", "IO", "POLL", "PWR", "SYS",
    ];
    NAMES.contains(&name) || name.starts_with("RTMIN") || name.starts_with("RTMAX")
}

/// `80`, `80/udp`, `8000-8010/tcp` → `["80/tcp", ...]`.
fn expand_ports(w: &str) -> std::result::Result<Vec<String>, String> {
    let (ports, proto) = match w.split_once('/') {
        Some((p, pr)) => (p, pr.to_ascii_lowercase()),
        None => (w, "tcp".to_string()),
    };
    if !matches!(proto.as_str(), "tcp" | "udp" | "sctp") {
        return Err(format!(
            "invalid protocol '{proto}' in '{w}': expected tcp, udp or sctp"
        ));
    }
    let parse = |s: &str| {
        s.parse::<u16>()
            .map_err(|_| format!("invalid port '{s}' in '{w}': expected 0-65535"))
    };
    let (lo, hi) = match ports.split_once('-') {
        Some((a, b)) => (parse(a)?, parse(b)?),
        None => {
            let p = parse(ports)?;
            (p, p)
        }
    };
    if hi < lo {
        return Err(format!("invalid port range '{ports}'"));
    }
    Ok((lo..=hi).map(|p| format!("{p}/{proto}")).collect())
}

/// Parse `--build-arg NAME[=VALUE]` (a bare NAME takes the value from the environment).
pub fn parse_build_arg(s: &str) -> Option<(String, String)> {
    match s.split_once('=') {
        Some((k, v)) if !k.is_empty() => Some((k.to_string(), v.to_string())),
        Some(_) => None,
        None => std::env::var(s).ok().map(|v| (s.to_string(), v)),
    }
}

/// Parse `--secret id=ID,src=PATH` (also `source=`, and `env=VAR` for a value from the environment).
pub fn parse_secret(s: &str, tmp: &Path) -> std::result::Result<(String, PathBuf), String> {
    let mut id = None;
    let mut src = None;
    let mut env = None;
    for f in s.split(',') {
        match f.split_once('=') {
            Some(("id", v)) => id = Some(v.to_string()),
            Some(("src" | "source", v)) => src = Some(PathBuf::from(v)),
            Some(("env", v)) => env = Some(v.to_string()),
            Some(("type", "file" | "env")) => {}
            _ => return Err(format!("invalid --secret '{s}': expected id=ID,src=PATH")),
        }
    }
    let id = id.ok_or_else(|| format!("invalid --secret '{s}': id= is required"))?;
    if let Some(p) = src {
        return Ok((id, p));
    }
    let var = env.unwrap_or_else(|| id.clone());
    let v = std::env::var(&var)
        .map_err(|_| format!("--secret {id}: no src= and no environment variable {var}"))?;
    let p = tmp.join(format!("secret-env-{}", sha(&[&id])));
    fs::write(&p, v).map_err(|e| e.to_string())?;
    Ok((id, p))
}

/// Labels from `--label k=v`.
pub fn parse_label(s: &str) -> Option<(String, String)> {
    s.split_once('=')
        .map(|(k, v)| (k.to_string(), v.to_string()))
}

#[allow(dead_code)]
fn _unused(_: BTreeMap<String, String>) {}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn ports() {
        assert_eq!(expand_ports("80").unwrap(), vec!["80/tcp"]);
        assert_eq!(expand_ports("53/UDP").unwrap(), vec!["53/udp"]);
        assert_eq!(expand_ports("8000-8002/tcp").unwrap().len(), 3);
        assert!(expand_ports("http").is_err());
        assert!(expand_ports("80/xyz").is_err());
    }

    #[test]
    fn signals() {
        assert!(valid_signal("SIGKILL"));
        assert!(valid_signal("9"));
        assert!(valid_signal("term"));
        assert!(!valid_signal("SIGNOPE"));
        assert!(!valid_signal("99"));
    }
}
