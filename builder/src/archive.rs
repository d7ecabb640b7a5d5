//! `ADD` of local tar archives: recognise (by content, not name) plain, gzip and zstd tars, and
//! extract them into the rootfs with every path resolved inside it.

use std::io::{self, BufReader, Read, Seek};
use std::os::fd::AsRawFd;

use crate::rootfs::{self, Meta, Root};

/// What a file's first bytes say it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Uncompressed tar.
    Tar,
    /// gzip-compressed tar.
    TarGz,
    /// zstd-compressed tar.
    TarZstd,
    /// bzip2/xz: recognised but not supported by this build.
    Unsupported(&'static str),
    /// Not an archive: copied as a file.
    NotArchive,
}

/// Sniff a file (rewinds it afterwards).
pub fn sniff(f: &mut std::fs::File) -> io::Result<Kind> {
    let mut head = [0u8; 512];
    let mut n = 0;
    while n < head.len() {
        let r = f.read(&mut head[n..])?;
        if r == 0 {
            break;
        }
        n += r;
    }
    f.seek(io::SeekFrom::Start(0))?;
    let h = &head[..n];
    Ok(if h.starts_with(&[0x1f, 0x8b]) {
        Kind::TarGz
    } else if h.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
        Kind::TarZstd
    } else if h.starts_with(b"BZh") {
        Kind::Unsupported("bzip2")
    } else if h.starts_with(&[0xfd, b'7', b'z', b'X', b'Z', 0]) {
        Kind::Unsupported("xz")
    } else if n >= 262 && &h[257..262] == b"ustar" {
        Kind::Tar
    } else {
        Kind::NotArchive
    })
}

/// Extract `f` (of `kind`) into directory `dest` of `root`. `owner` overrides entry ownership.
pub fn extract(
    f: std::fs::File,
    kind: Kind,
    root: &Root,
    dest: &str,
    owner: Option<(u32, u32)>,
) -> io::Result<()> {
    let reader: Box<dyn Read> = match kind {
        Kind::Tar => Box::new(BufReader::new(f)),
        Kind::TarGz => Box::new(flate2::read::MultiGzDecoder::new(BufReader::new(f))),
        Kind::TarZstd => Box::new(zstd::stream::read::Decoder::new(f)?),
        Kind::Unsupported(what) => {
            return Err(io::Error::other(format!(
                "{what}-compressed archives are not supported by this skiff-build"
            )))
        }
        Kind::NotArchive => return Err(io::Error::other("not an archive")),
    };
    let base = rootfs::rel_in_root(dest);
    root.mkdir_all(&base, None)?;
    let mut ar = tar::Archive::new(reader);
    let mut dirs: Vec<(String, Meta)> = Vec::new();
    for entry in ar.entries()? {
        let mut e = entry?;
        let path = e.path()?.to_string_lossy().to_string();
        let rel = rootfs::rel_in_root(&format!("{base}/{path}"));
        if rel.is_empty()
            || !(base.is_empty() || rel == base || rel.starts_with(&format!("{base}/")))
        {
            continue;
        }
        let h = e.header();
        let mode = h.mode().unwrap_or(0o644) & 0o7777;
        let (uid, gid) =
            owner.unwrap_or((h.uid().unwrap_or(0) as u32, h.gid().unwrap_or(0) as u32));
        let meta = Meta {
            mode,
            uid,
            gid,
            mtime: Some((h.mtime().unwrap_or(0) as i64, 0)),
        };
        let (parent, name) = match rel.rsplit_once('/') {
            Some((p, n)) => (p.to_string(), n.to_string()),
            None => (String::new(), rel.clone()),
        };
        match h.entry_type() {
            tar::EntryType::Directory => {
                root.mkdir_all(&rel, None)?;
                dirs.push((rel, meta));
            }
            tar::EntryType::Regular | tar::EntryType::Continuous | tar::EntryType::GNUSparse => {
                root.write_file(&rel, &mut e, &meta)?;
            }
            tar::EntryType::Symlink => {
                let target = e
                    .link_name()?
                    .map(|p| p.to_string_lossy().to_string())
                    .unwrap_or_default();
                let dfd = root.mkdir_all(&parent, None)?;
                rootfs::symlink_at(dfd.as_raw_fd(), name.as_bytes(), target.as_bytes(), &meta)?;
            }
            tar::EntryType::Link => {
                // Hard links become copies of their (in-archive, in-root) target.
                let target = e
                    .link_name()?
                    .map(|p| p.to_string_lossy().to_string())
                    .unwrap_or_default();
                let trel = rootfs::rel_in_root(&format!("{base}/{target}"));
                let mut src = root.open_read(&trel)?;
                root.write_file(&rel, &mut src, &meta)?;
            }
            _ => {
                // Devices and fifos are not created by ADD (nor in unprivileged builders).
            }
        }
    }
    // Directory metadata last, so extracting children did not disturb mtimes.
    for (rel, meta) in dirs.into_iter().rev() {
        let fd = root.open_dir(&rel)?;
        rootfs::set_dir_meta(fd.as_raw_fd(), &meta)?;
    }
    Ok(())
}

/// Whether a source string is a URL ADD downloads.
pub fn is_url(s: &str) -> bool {
    s.starts_with("http://") || s.starts_with("https://")
}
