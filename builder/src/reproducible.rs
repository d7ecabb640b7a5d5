//! SOURCE_DATE_EPOCH support: clamping the modification times in a layer's tar stream so that
//! rebuilding the same Dockerfile gives bit-identical layers.

use std::io::{self, Read, Write};

const BLOCK: usize = 512;

fn parse_octal(field: &[u8]) -> Option<u64> {
    if field.first().is_some_and(|b| b & 0x80 != 0) {
        // GNU base-256 encoding.
        let mut v: u64 = u64::from(field[0] & 0x7f);
        for b in &field[1..] {
            v = v.checked_mul(256)?.checked_add(u64::from(*b))?;
        }
        return Some(v);
    }
    let s: String = field
        .iter()
        .take_while(|b| **b != 0)
        .map(|b| *b as char)
        .collect();
    let s = s.trim();
    if s.is_empty() {
        return Some(0);
    }
    u64::from_str_radix(s, 8).ok()
}

fn is_zero_block(b: &[u8]) -> bool {
    b.iter().all(|x| *x == 0)
}

/// Copy a tar stream from `r` to `w`, setting every entry's mtime to `min(mtime, epoch)` and
/// fixing header checksums. Extended headers (PAX, GNU long names) pass through unchanged.
pub fn clamp_mtimes(r: &mut dyn Read, w: &mut dyn Write, epoch: u64) -> io::Result<()> {
    let mut hdr = [0u8; BLOCK];
    loop {
        if let Err(e) = r.read_exact(&mut hdr) {
            if e.kind() == io::ErrorKind::UnexpectedEof {
                return Ok(());
            }
            return Err(e);
        }
        if is_zero_block(&hdr) {
            w.write_all(&hdr)?;
            // Copy the rest (end-of-archive blocks) verbatim.
            io::copy(r, w)?;
            return Ok(());
        }
        let size = parse_octal(&hdr[124..136])
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "bad tar size field"))?;
        let typeflag = hdr[156];
        let extended = matches!(typeflag, b'x' | b'g' | b'L' | b'K');
        if !extended {
            let mtime = parse_octal(&hdr[136..148]).unwrap_or(0);
            if mtime > epoch {
                let s = format!("{:011o}\0", epoch);
                hdr[136..148].copy_from_slice(s.as_bytes());
                hdr[148..156].copy_from_slice(b"        ");
                let sum: u32 = hdr.iter().map(|b| u32::from(*b)).sum();
                let c = format!("{:06o}\0 ", sum);
                hdr[148..156].copy_from_slice(c.as_bytes());
            }
        }
        w.write_all(&hdr)?;
        let padded = size.div_ceil(BLOCK as u64) * BLOCK as u64;
        let n = io::copy(&mut r.take(padded), w)?;
        if n != padded {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "truncated tar entry",
            ));
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn clamps_and_keeps_valid_checksums() {
        let mut b = tar::Builder::new(Vec::new());
        let mut h = tar::Header::new_gnu();
        h.set_path("a/long/name").unwrap();
        h.set_size(3);
        h.set_mtime(2_000_000_000);
        h.set_mode(0o644);
        h.set_cksum();
        b.append(&h, &b"abc"[..]).unwrap();
        let data = b.into_inner().unwrap();
        let mut out = Vec::new();
        clamp_mtimes(&mut &data[..], &mut out, 1_000).unwrap();
        let mut a = tar::Archive::new(&out[..]);
        let e = a.entries().unwrap().next().unwrap().unwrap();
        assert_eq!(e.header().mtime().unwrap(), 1_000);
        assert_eq!(e.header().cksum().unwrap(), {
            let mut hh = e.header().clone();
            hh.set_cksum();
            hh.cksum().unwrap()
        });
    }
}
