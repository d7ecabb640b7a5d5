//! COPY/ADD mechanics: resolving source patterns inside a source root (the build context or
//! another stage's rootfs), hashing what they select (for the cache), and copying trees into
//! the destination rootfs with the Dockerfile's ownership, mode and trailing-slash rules.

use std::io;
use std::os::fd::{AsRawFd, RawFd};

use sha2::{Digest, Sha256};

use crate::dockerignore::{clean_rel, Glob, Ignore};
use crate::rootfs::{self, Meta, Root};

/// Errors of COPY/ADD.
#[derive(Debug, thiserror::Error)]
pub enum CopyError {
    /// A source pattern left the context (`..`).
    #[error("source '{0}' is outside the build context")]
    Outside(String),
    /// Nothing matched a source.
    #[error("source '{0}' not found (in the build context, or excluded by .dockerignore)")]
    NotFound(String),
    /// Bad pattern.
    #[error(transparent)]
    Pattern(#[from] crate::dockerignore::PatternError),
    /// Several sources into a non-directory.
    #[error(
        "when copying several sources, the destination '{0}' must be a directory and end with '/'"
    )]
    DestNotDir(String),
    /// Invalid --chmod.
    #[error("invalid --chmod '{0}': expected an octal mode such as 755 or a symbolic one such as u+x,go=rX")]
    Chmod(String),
    /// Filesystem failure.
    #[error("{context}: {source}")]
    Io {
        /// What was being done.
        context: String,
        /// The OS error.
        source: io::Error,
    },
}

fn ioe(context: impl Into<String>) -> impl FnOnce(io::Error) -> CopyError {
    let c = context.into();
    move |source| CopyError::Io { context: c, source }
}

/// A `--chmod` value: octal, or symbolic clauses applied to each source mode.
#[derive(Debug, Clone, PartialEq)]
pub enum Chmod {
    /// `755`.
    Octal(u32),
    /// `u=rwX,go=rX`: (who mask, op, perm letters).
    Symbolic(Vec<(u32, char, String)>),
}

impl Chmod {
    /// Parse a `--chmod` value.
    pub fn parse(s: &str) -> Result<Self, CopyError> {
        if !s.is_empty() && s.chars().all(|c| ('0'..='7').contains(&c)) {
            return u32::from_str_radix(s, 8)
                .ok()
                .filter(|m| *m <= 0o7777)
                .map(Chmod::Octal)
                .ok_or_else(|| CopyError::Chmod(s.into()));
        }
        let mut clauses = Vec::new();
        for clause in s.split(',') {
            let opi = clause
                .find(['+', '-', '='])
                .ok_or_else(|| CopyError::Chmod(s.into()))?;
            let (who, rest) = clause.split_at(opi);
            let mut mask = 0;
            for c in who.chars() {
                mask |= match c {
                    'u' => 0o4700,
                    'g' => 0o2070,
                    'o' => 0o1007,
                    'a' => 0o7777,
                    _ => return Err(CopyError::Chmod(s.into())),
                };
            }
            if who.is_empty() {
                mask = 0o7777;
            }
            let mut chars = rest.chars();
            let op = chars.next().ok_or_else(|| CopyError::Chmod(s.into()))?;
            let perms: String = chars.collect();
            if !perms.chars().all(|c| "rwxXst".contains(c)) {
                return Err(CopyError::Chmod(s.into()));
            }
            clauses.push((mask, op, perms));
        }
        Ok(Chmod::Symbolic(clauses))
    }

    /// The resulting permission bits for an entry with `mode` (is_dir for `X`).
    pub fn apply(&self, mode: u32, is_dir: bool) -> u32 {
        match self {
            Chmod::Octal(m) => *m,
            Chmod::Symbolic(cl) => {
                let mut m = mode & 0o7777;
                for (mask, op, perms) in cl {
                    let mut bits = 0;
                    for p in perms.chars() {
                        bits |= match p {
                            'r' => 0o444,
                            'w' => 0o222,
                            'x' => 0o111,
                            'X' if is_dir || mode & 0o111 != 0 => 0o111,
                            's' => 0o6000,
                            't' => 0o1000,
                            _ => 0,
                        };
                    }
                    bits &= mask;
                    match op {
                        '+' => m |= bits,
                        '-' => m &= !bits,
                        _ => m = (m & !(mask & 0o7777)) | bits,
                    }
                }
                m
            }
        }
    }
}

/// How the copied entries are owned, moded and filtered.
#[derive(Debug, Clone, Default)]
pub struct CopyOptions {
    /// Force owner/group (`--chown`); `None` keeps source ownership (or 0:0, see `zero_owner`).
    pub chown: Option<(u32, u32)>,
    /// Files from the build context are owned by 0:0 unless `--chown`.
    pub zero_owner: bool,
    /// `--chmod`.
    pub chmod: Option<Chmod>,
    /// `--exclude` patterns (relative to the source root).
    pub exclude: Vec<Glob>,
    /// `.dockerignore` (context sources only).
    pub ignore: Option<Ignore>,
}

/// The source-relative path of entry `name` of directory `rel` ("" is the source root), as the
/// exclude and `.dockerignore` rules match it.
fn child_rel(rel: &str, name: &[u8]) -> String {
    if rel.is_empty() {
        rootfs::name_str(name).to_string()
    } else {
        format!("{rel}/{}", rootfs::name_str(name))
    }
}

impl CopyOptions {
    fn skipped(&self, rel: &str) -> bool {
        if rel.is_empty() {
            return false;
        }
        if let Some(ig) = &self.ignore {
            if ig.excluded(rel) {
                return true;
            }
        }
        self.exclude
            .iter()
            .any(|g| g.matches(rel) || rel.rsplit_once('/').is_some_and(|(_, b)| g.matches(b)))
    }

    /// Whether a walk of the source leaves out entry `name` of `dirfd` (at `rel`): excluded,
    /// and no `.dockerignore` exception re-includes anything below it.
    fn leaves_out(&self, dirfd: RawFd, name: &[u8], rel: &str) -> bool {
        self.skipped(rel) && !self.reincluded_below(dirfd, name, rel)
    }

    /// An excluded directory is still entered when a `.dockerignore` exception re-includes
    /// something below it (only the re-included entries are then copied).
    fn reincluded_below(&self, dirfd: RawFd, name: &[u8], rel: &str) -> bool {
        let Some(ig) = &self.ignore else {
            return false;
        };
        if !ig.may_reinclude_below(rel) || self.exclude.iter().any(|g| g.matches(rel)) {
            return false;
        }
        let Ok(Some(st)) = rootfs::lstat_at(dirfd, name) else {
            return false;
        };
        if !rootfs::is_dir(&st) {
            return false;
        }
        let Ok(fd) = rootfs::open_child(dirfd, name, true) else {
            return false;
        };
        let mut budget = 100_000usize;
        self.any_included(fd.as_raw_fd(), rel, &mut budget)
    }

    fn any_included(&self, fd: RawFd, rel: &str, budget: &mut usize) -> bool {
        let Ok(names) = rootfs::list_dir(fd) else {
            return false;
        };
        for n in names {
            if *budget == 0 {
                return false;
            }
            *budget -= 1;
            let child = child_rel(rel, &n);
            if !self.skipped(&child) {
                return true;
            }
            if let Ok(Some(st)) = rootfs::lstat_at(fd, &n) {
                if rootfs::is_dir(&st) {
                    if let Ok(c) = rootfs::open_child(fd, &n, true) {
                        if self.any_included(c.as_raw_fd(), &child, budget) {
                            return true;
                        }
                    }
                }
            }
        }
        false
    }

    fn meta_for(&self, st: &libc::stat) -> Meta {
        let is_dir = rootfs::is_dir(st);
        let mut mode = st.st_mode & 0o7777;
        if let Some(c) = &self.chmod {
            mode = c.apply(mode, is_dir);
        }
        let (uid, gid) = match self.chown {
            Some(o) => o,
            None if self.zero_owner => (0, 0),
            None => (st.st_uid, st.st_gid),
        };
        Meta {
            mode,
            uid,
            gid,
            mtime: Some((st.st_mtime, st.st_mtime_nsec)),
        }
    }
}

/// Resolve source patterns (relative to the source root) into existing relative paths.
/// `context` makes `..` escapes an error (for `--from` they are clamped at the root).
pub fn resolve_sources(
    src: &Root,
    patterns: &[String],
    opts: &CopyOptions,
    context: bool,
) -> Result<Vec<String>, CopyError> {
    let mut out = Vec::new();
    for pat in patterns {
        let cleaned = if context {
            let trimmed = pat.trim_start_matches('/');
            clean_rel(trimmed).ok_or_else(|| CopyError::Outside(pat.clone()))?
        } else {
            rootfs::rel_in_root(pat)
        };
        if !Glob::has_wildcards(&cleaned) {
            let st = src
                .stat(&cleaned)
                .map_err(ioe(format!("reading source {pat}")))?;
            if st.is_none()
                || opts
                    .ignore
                    .as_ref()
                    .is_some_and(|i| !cleaned.is_empty() && i.excluded(&cleaned))
            {
                return Err(CopyError::NotFound(pat.clone()));
            }
            out.push(cleaned);
            continue;
        }
        let comps: Vec<&str> = cleaned.split('/').collect();
        let mut found = Vec::new();
        glob_walk(src, "", &comps, &mut found)?;
        found.retain(|r| !opts.skipped(r));
        if found.is_empty() {
            return Err(CopyError::NotFound(pat.clone()));
        }
        out.extend(found);
    }
    Ok(out)
}

fn glob_walk(
    src: &Root,
    base: &str,
    comps: &[&str],
    out: &mut Vec<String>,
) -> Result<(), CopyError> {
    let Some((first, rest)) = comps.split_first() else {
        out.push(base.to_string());
        return Ok(());
    };
    let join = |n: &str| {
        if base.is_empty() {
            n.to_string()
        } else {
            format!("{base}/{n}")
        }
    };
    if !Glob::has_wildcards(first) {
        let p = join(first);
        if src.stat(&p).map_err(ioe(format!("reading {p}")))?.is_some() {
            glob_walk(src, &p, rest, out)?;
        }
        return Ok(());
    }
    let g = Glob::new(first)?;
    let dir = match src.open_dir(base) {
        Ok(d) => d,
        Err(_) => return Ok(()),
    };
    for name in rootfs::list_dir(dir.as_raw_fd()).map_err(ioe(format!("listing {base}")))? {
        let n = rootfs::name_str(&name).to_string();
        if g.matches(&n) {
            glob_walk(src, &join(&n), rest, out)?;
        }
    }
    Ok(())
}

/// Content hash of the selected sources (paths, types, modes, owners, sizes, contents, link
/// targets; not mtimes), for the build cache.
pub fn hash_sources(src: &Root, rels: &[String], opts: &CopyOptions) -> Result<String, CopyError> {
    let mut h = Sha256::new();
    for rel in rels {
        h.update(b"\0src\0");
        h.update(rel.as_bytes());
        let Some(st) = src.stat(rel).map_err(ioe(format!("reading {rel}")))? else {
            return Err(CopyError::NotFound(rel.clone()));
        };
        if rootfs::is_dir(&st) {
            let fd = src.open_dir(rel).map_err(ioe(format!("opening {rel}")))?;
            hash_dir(fd.as_raw_fd(), rel, &mut h, opts)?;
        } else {
            let f = src.open_read(rel).map_err(ioe(format!("opening {rel}")))?;
            hash_node_meta(&st, &mut h, opts);
            hash_file(f, &mut h, rel)?;
        }
    }
    Ok(hex::encode(h.finalize()))
}

fn hash_node_meta(st: &libc::stat, h: &mut Sha256, opts: &CopyOptions) {
    let m = opts.meta_for(st);
    h.update(
        format!(
            "{:o} {} {} {} {}\n",
            st.st_mode & libc::S_IFMT,
            m.mode,
            m.uid,
            m.gid,
            st.st_size
        )
        .as_bytes(),
    );
}

fn hash_file(mut f: std::fs::File, h: &mut Sha256, rel: &str) -> Result<(), CopyError> {
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = io::Read::read(&mut f, &mut buf).map_err(ioe(format!("reading {rel}")))?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Ok(())
}

fn hash_dir(fd: RawFd, rel: &str, h: &mut Sha256, opts: &CopyOptions) -> Result<(), CopyError> {
    for name in rootfs::list_dir(fd).map_err(ioe(format!("listing {rel}")))? {
        let child = child_rel(rel, &name);
        if opts.leaves_out(fd, &name, &child) {
            continue;
        }
        let Some(st) = rootfs::lstat_at(fd, &name).map_err(ioe(format!("reading {child}")))? else {
            continue;
        };
        h.update(b"\0");
        h.update(child.as_bytes());
        hash_node_meta(&st, h, opts);
        if rootfs::is_dir(&st) {
            let c = rootfs::open_child(fd, &name, true).map_err(ioe(format!("opening {child}")))?;
            hash_dir(c.as_raw_fd(), &child, h, opts)?;
        } else if rootfs::is_symlink(&st) {
            h.update(rootfs::readlink_at(fd, &name).map_err(ioe(format!("reading link {child}")))?);
        } else if rootfs::is_file(&st) {
            let c =
                rootfs::open_child(fd, &name, false).map_err(ioe(format!("opening {child}")))?;
            hash_file(std::fs::File::from(c), h, &child)?;
        }
    }
    Ok(())
}

/// Copy the resolved sources into `dst` at in-root path `dest` (already made absolute against
/// WORKDIR; a trailing `/` means "into this directory").
pub fn copy_into(
    src: &Root,
    rels: &[String],
    dst: &Root,
    dest: &str,
    opts: &CopyOptions,
) -> Result<(), CopyError> {
    let dest_is_dir_syntax = dest.ends_with('/') || dest.ends_with("/.") || dest == ".";
    let dest_rel = rootfs::rel_in_root(dest);
    let existing_dir = dst
        .stat(&dest_rel)
        .map_err(ioe(format!("reading destination {dest}")))?
        .is_some_and(|s| rootfs::is_dir(&s));
    let into_dir = dest_is_dir_syntax || existing_dir || dest_rel.is_empty();
    if rels.len() > 1 && !into_dir {
        return Err(CopyError::DestNotDir(dest.to_string()));
    }
    for rel in rels {
        let st = src
            .stat(rel)
            .map_err(ioe(format!("reading {rel}")))?
            .ok_or_else(|| CopyError::NotFound(rel.clone()))?;
        if rootfs::is_dir(&st) {
            // Directory: its contents go into dest (the directory itself is not copied).
            let dfd = dst
                .mkdir_all(&dest_rel, None)
                .map_err(ioe(format!("creating {dest}")))?;
            let sfd = src.open_dir(rel).map_err(ioe(format!("opening {rel}")))?;
            copy_dir_contents(sfd.as_raw_fd(), rel, dfd.as_raw_fd(), opts)?;
            if !dest_rel.is_empty() {
                rootfs::set_dir_meta(dfd.as_raw_fd(), &opts.meta_for(&st))
                    .map_err(ioe(format!("setting metadata of {dest}")))?;
            }
        } else {
            let base = rel.rsplit('/').next().unwrap_or(rel);
            let target = if into_dir {
                if dest_rel.is_empty() {
                    base.to_string()
                } else {
                    format!("{dest_rel}/{base}")
                }
            } else {
                dest_rel.clone()
            };
            let mut f = src.open_read(rel).map_err(ioe(format!("opening {rel}")))?;
            dst.write_file(&target, &mut f, &opts.meta_for(&st))
                .map_err(ioe(format!("writing {target}")))?;
        }
    }
    Ok(())
}

fn copy_dir_contents(
    sfd: RawFd,
    rel: &str,
    dfd: RawFd,
    opts: &CopyOptions,
) -> Result<(), CopyError> {
    for name in rootfs::list_dir(sfd).map_err(ioe(format!("listing {rel}")))? {
        let child = child_rel(rel, &name);
        if opts.leaves_out(sfd, &name, &child) {
            continue;
        }
        let Some(st) = rootfs::lstat_at(sfd, &name).map_err(ioe(format!("reading {child}")))?
        else {
            continue;
        };
        let meta = opts.meta_for(&st);
        if rootfs::is_dir(&st) {
            let (nd, _) = rootfs::mkdir_at(dfd, &name).map_err(ioe(format!("creating {child}")))?;
            let sd =
                rootfs::open_child(sfd, &name, true).map_err(ioe(format!("opening {child}")))?;
            copy_dir_contents(sd.as_raw_fd(), &child, nd.as_raw_fd(), opts)?;
            rootfs::set_dir_meta(nd.as_raw_fd(), &meta)
                .map_err(ioe(format!("setting metadata of {child}")))?;
        } else if rootfs::is_symlink(&st) {
            let t =
                rootfs::readlink_at(sfd, &name).map_err(ioe(format!("reading link {child}")))?;
            rootfs::symlink_at(dfd, &name, &t, &meta)
                .map_err(ioe(format!("creating link {child}")))?;
        } else if rootfs::is_file(&st) {
            let sf =
                rootfs::open_child(sfd, &name, false).map_err(ioe(format!("opening {child}")))?;
            let mut f = std::fs::File::from(sf);
            rootfs::write_file_at(dfd, &name, &mut f, &meta)
                .map_err(ioe(format!("writing {child}")))?;
        }
        // Devices, fifos and sockets in a build context are skipped, as docker does.
    }
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn chmod_forms() {
        assert_eq!(Chmod::parse("755").unwrap().apply(0o600, false), 0o755);
        let c = Chmod::parse("u=rwX,go=rX").unwrap();
        assert_eq!(c.apply(0o700, true), 0o755);
        assert_eq!(c.apply(0o600, false), 0o644);
        assert_eq!(c.apply(0o700, false), 0o755);
        assert_eq!(Chmod::parse("+x").unwrap().apply(0o644, false), 0o755);
        assert!(Chmod::parse("g=u").is_err());
        assert!(Chmod::parse("999").is_err());
    }
}
