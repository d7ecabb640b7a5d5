//! Build-argument scoping, exactly as the Dockerfile reference describes it.
//!
//! * ARGs before the first FROM form the global scope: usable in FROM lines only, unless a
//!   stage re-declares them (`ARG NAME` without a value takes the global value).
//! * An ARG comes into effect on the line that declares it; `--build-arg` overrides defaults.
//! * ENV overrides an ARG of the same name.
//! * The proxy ARGs are predefined (passed to RUN without a declaration, kept out of the
//!   cache key and history); the platform ARGs are automatic in the global scope.

use std::collections::{BTreeMap, BTreeSet};

use crate::error::ExpandError;
use crate::expand::Expander;
use crate::instructions::KeyValue;

/// Build arguments that need no ARG instruction (and are kept out of history and cache).
pub const PROXY_ARGS: [&str; 10] = [
    "HTTP_PROXY",
    "http_proxy",
    "HTTPS_PROXY",
    "https_proxy",
    "FTP_PROXY",
    "ftp_proxy",
    "NO_PROXY",
    "no_proxy",
    "ALL_PROXY",
    "all_proxy",
];

/// An OS/architecture/variant triple, for the automatic platform ARGs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Platform {
    /// e.g. `linux`.
    pub os: String,
    /// e.g. `amd64`.
    pub arch: String,
    /// e.g. `v7` (often empty).
    pub variant: String,
}

impl Platform {
    /// The platform of this machine in OCI terms.
    pub fn host() -> Self {
        let arch = match std::env::consts::ARCH {
            "x86_64" => "amd64",
            "aarch64" => "arm64",
            "x86" => "386",
            "arm" => "arm",
            "powerpc64" => "ppc64le",
            "s390x" => "s390x",
            "riscv64" => "riscv64",
            other => other,
        };
        Self {
            os: "linux".into(),
            arch: arch.into(),
            variant: String::new(),
        }
    }

    /// Parse `os/arch[/variant]`.
    pub fn parse(s: &str) -> Option<Self> {
        let mut it = s.split('/');
        let os = it.next()?.to_string();
        let arch = it.next()?.to_string();
        let variant = it.next().unwrap_or("").to_string();
        if os.is_empty() || arch.is_empty() || it.next().is_some() {
            return None;
        }
        Some(Self { os, arch, variant })
    }

    /// `os/arch[/variant]`.
    pub fn to_spec(&self) -> String {
        if self.variant.is_empty() {
            format!("{}/{}", self.os, self.arch)
        } else {
            format!("{}/{}/{}", self.os, self.arch, self.variant)
        }
    }
}

/// The `--build-arg` values given on the command line, and which of them got used.
#[derive(Debug, Clone, Default)]
pub struct BuildArgs {
    values: BTreeMap<String, String>,
    used: BTreeSet<String>,
}

impl BuildArgs {
    /// From `NAME=VALUE` pairs (a bare `NAME` takes the value from the environment, as docker does).
    pub fn new(pairs: impl IntoIterator<Item = (String, String)>) -> Self {
        Self {
            values: pairs.into_iter().collect(),
            used: BTreeSet::new(),
        }
    }

    fn take(&mut self, name: &str) -> Option<String> {
        let v = self.values.get(name).cloned();
        if v.is_some() {
            self.used.insert(name.to_string());
        }
        v
    }

    /// Build args that no ARG consumed (docker warns about these).
    pub fn unused(&self) -> Vec<String> {
        self.values
            .keys()
            .filter(|k| !self.used.contains(*k) && !PROXY_ARGS.contains(&k.as_str()))
            .cloned()
            .collect()
    }

    /// Proxy args given on the command line that no ARG declared (RUN gets them anyway).
    pub fn proxies(&self) -> Vec<(String, String)> {
        PROXY_ARGS
            .iter()
            .filter_map(|k| self.values.get(*k).map(|v| (k.to_string(), v.clone())))
            .collect()
    }
}

/// Declared ARGs of one scope, in declaration order; `None` = declared without a value.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ArgScope {
    args: Vec<(String, Option<String>)>,
}

impl ArgScope {
    /// The global scope before any ARG: the automatic platform args.
    pub fn global(target: &Platform, build: &Platform) -> Self {
        let mut s = Self::default();
        for (prefix, p) in [("TARGET", target), ("BUILD", build)] {
            s.set(&format!("{prefix}PLATFORM"), Some(p.to_spec()));
            s.set(&format!("{prefix}OS"), Some(p.os.clone()));
            s.set(&format!("{prefix}ARCH"), Some(p.arch.clone()));
            s.set(&format!("{prefix}VARIANT"), Some(p.variant.clone()));
        }
        s
    }

    fn set(&mut self, name: &str, value: Option<String>) {
        if let Some(e) = self.args.iter_mut().find(|(k, _)| k == name) {
            e.1 = value;
        } else {
            self.args.push((name.to_string(), value));
        }
    }

    /// The value of an ARG in this scope (`None` if undeclared or without value).
    pub fn get(&self, name: &str) -> Option<String> {
        self.args
            .iter()
            .find(|(k, _)| k == name)
            .and_then(|(_, v)| v.clone())
    }

    /// ARGs with a value, in declaration order.
    pub fn values(&self) -> Vec<(String, String)> {
        self.args
            .iter()
            .filter_map(|(k, v)| v.clone().map(|v| (k.clone(), v)))
            .collect()
    }

    /// Whether `name` was declared in this scope.
    pub fn declared(&self, name: &str) -> bool {
        self.args.iter().any(|(k, _)| k == name)
    }

    /// Apply an `ARG` instruction.
    ///
    /// `env` is the stage's ENV (for expanding defaults: ENV wins over ARG); `global` is the
    /// global scope a stage falls back to for `ARG NAME` without default (`None` when this
    /// *is* the global scope).
    pub fn declare(
        &mut self,
        decls: &[KeyValue],
        expander: &Expander,
        env: &[(String, String)],
        global: Option<&ArgScope>,
        cli: &mut BuildArgs,
    ) -> Result<(), ExpandError> {
        for d in decls {
            let value = match cli.take(&d.key) {
                Some(v) => Some(v),
                None => match &d.value {
                    Some(default) => {
                        let lookup = |k: &str| lookup(env, self, k);
                        Some(expander.word(default, &lookup)?)
                    }
                    None => match global {
                        Some(g) => g.get(&d.key),
                        None => self.get(&d.key),
                    },
                },
            };
            self.set(&d.key, value);
        }
        Ok(())
    }
}

/// Variable lookup for builder-side expansion: ENV first, then ARGs.
pub fn lookup(env: &[(String, String)], args: &ArgScope, name: &str) -> Option<String> {
    env.iter()
        .rev()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.clone())
        .or_else(|| args.get(name))
}

/// Split `KEY=VALUE` environment entries.
pub fn split_env(env: &[String]) -> Vec<(String, String)> {
    env.iter()
        .map(|e| match e.split_once('=') {
            Some((k, v)) => (k.to_string(), v.to_string()),
            None => (e.clone(), String::new()),
        })
        .collect()
}

/// Set or replace `key` in a `KEY=VALUE` list, keeping order.
pub fn set_env(env: &mut Vec<String>, key: &str, value: &str) {
    let entry = format!("{key}={value}");
    if let Some(e) = env
        .iter_mut()
        .find(|e| e.split_once('=').map(|(k, _)| k) == Some(key) || e.as_str() == key)
    {
        *e = entry;
    } else {
        env.push(entry);
    }
}

/// The environment a RUN sees: image ENV, then ARGs not overridden by ENV, then proxy args.
pub fn run_env(env: &[String], args: &ArgScope, cli: &BuildArgs) -> Vec<String> {
    let mut out: Vec<String> = env.to_vec();
    let has = |out: &Vec<String>, k: &str| {
        out.iter()
            .any(|e| e.split_once('=').map(|(a, _)| a) == Some(k))
    };
    for (k, v) in args.values() {
        if !has(&out, &k) {
            out.push(format!("{k}={v}"));
        }
    }
    for (k, v) in cli.proxies() {
        if !has(&out, &k) {
            out.push(format!("{k}={v}"));
        }
    }
    out
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn kv(k: &str, v: Option<&str>) -> KeyValue {
        KeyValue {
            key: k.into(),
            value: v.map(Into::into),
        }
    }

    #[test]
    fn global_then_stage_redeclare() {
        let e = Expander::default();
        let mut cli = BuildArgs::new([("username".to_string(), "what_user".to_string())]);
        let p = Platform::host();
        let mut g = ArgScope::global(&p, &p);
        g.declare(&[kv("VERSION", Some("latest"))], &e, &[], None, &mut cli)
            .unwrap();
        assert_eq!(g.get("VERSION").as_deref(), Some("latest"));
        // A stage does not see the global ARG until it re-declares it.
        let mut s = ArgScope::default();
        assert_eq!(lookup(&[], &s, "VERSION"), None);
        s.declare(&[kv("VERSION", None)], &e, &[], Some(&g), &mut cli)
            .unwrap();
        assert_eq!(lookup(&[], &s, "VERSION").as_deref(), Some("latest"));
        // Automatic platform args also need re-declaration.
        assert_eq!(lookup(&[], &s, "TARGETPLATFORM"), None);
        s.declare(&[kv("TARGETPLATFORM", None)], &e, &[], Some(&g), &mut cli)
            .unwrap();
        assert_eq!(lookup(&[], &s, "TARGETPLATFORM"), Some(p.to_spec()));
        // --build-arg overrides defaults, and ENV overrides ARG.
        s.declare(&[kv("username", Some("x"))], &e, &[], Some(&g), &mut cli)
            .unwrap();
        assert_eq!(s.get("username").as_deref(), Some("what_user"));
        let env = vec![("username".to_string(), "env_user".to_string())];
        assert_eq!(lookup(&env, &s, "username").as_deref(), Some("env_user"));
        assert!(cli.unused().is_empty());
    }

    #[test]
    fn default_expands_with_earlier_args() {
        let e = Expander::default();
        let mut cli = BuildArgs::default();
        let mut s = ArgScope::default();
        s.declare(
            &[kv("A", Some("1")), kv("B", Some("${A}2"))],
            &e,
            &[],
            None,
            &mut cli,
        )
        .unwrap();
        assert_eq!(s.get("B").as_deref(), Some("12"));
    }

    #[test]
    fn run_env_precedence_and_proxies() {
        let mut cli = BuildArgs::new([
            ("HTTP_PROXY".to_string(), "http://p".to_string()),
            ("X".to_string(), "argx".to_string()),
        ]);
        let e = Expander::default();
        let mut s = ArgScope::default();
        s.declare(
            &[kv("X", None), kv("Y", Some("y"))],
            &e,
            &[],
            None,
            &mut cli,
        )
        .unwrap();
        let env = run_env(&["X=envx".to_string()], &s, &cli);
        assert_eq!(env, vec!["X=envx", "Y=y", "HTTP_PROXY=http://p"]);
        assert!(cli.unused().is_empty());
    }
}
