//! Random identifiers (anonymous volume ids, container hostnames) from the kernel's CSPRNG.

use std::io;

/// `bytes` random bytes from getrandom(2), hex-encoded (twice as many digits).
pub(crate) fn hex_id(bytes: usize) -> io::Result<String> {
    let mut b = vec![0u8; bytes];
    let mut filled = 0;
    while filled < b.len() {
        // SAFETY: the pointer and length describe the unfilled tail of `b`.
        let n = unsafe { libc::getrandom(b[filled..].as_mut_ptr().cast(), b.len() - filled, 0) };
        if n < 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        filled += n as usize;
    }
    Ok(hex::encode(b))
}

#[cfg(test)]
mod tests {
    #[test]
    fn ids_are_hex_of_the_asked_length_and_differ() {
        let a = super::hex_id(6).expect("getrandom");
        let b = super::hex_id(6).expect("getrandom");
        assert_eq!(a.len(), 12);
        assert!(a.bytes().all(|c| c.is_ascii_hexdigit()));
        assert_ne!(a, b);
    }
}
