//! A small HTTP/1.1 client for `ADD http://...` sources (no TLS: `https://` needs a TLS stack
//! this build does not carry, and reports so).

use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::time::Duration;

/// Largest download accepted for ADD.
pub const MAX_DOWNLOAD: u64 = 4 << 30;

/// A downloaded URL.
#[derive(Debug)]
pub struct Download {
    /// The body.
    pub file: std::fs::File,
    /// `Last-Modified`, parsed, if the server sent one.
    pub last_modified: Option<i64>,
}

fn err(msg: impl Into<String>) -> io::Error {
    io::Error::other(msg.into())
}

/// Split `http://host[:port]/path` into (host, port, path).
fn split_url(url: &str) -> io::Result<(String, u16, String)> {
    let rest = if let Some(r) = url.strip_prefix("http://") {
        r
    } else if url.starts_with("https://") {
        return Err(err(format!(
            "cannot fetch {url}: https is not supported by this skiff-build (no TLS library); use http or RUN wget/curl"
        )));
    } else {
        return Err(err(format!(
            "unsupported URL scheme in {url}: expected http://"
        )));
    };
    let (hostport, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    let hostport = hostport.rsplit_once('@').map(|x| x.1).unwrap_or(hostport);
    let (host, port) = match hostport.rsplit_once(':') {
        Some((h, p)) if !h.ends_with(']') || hostport.starts_with('[') => (
            h.trim_start_matches('[').trim_end_matches(']').to_string(),
            p.parse::<u16>()
                .map_err(|_| err(format!("bad port in {url}")))?,
        ),
        _ => (hostport.to_string(), 80),
    };
    if host.is_empty() {
        return Err(err(format!("no host in {url}")));
    }
    let path = path.split('#').next().unwrap_or("/").to_string();
    Ok((host, port, path))
}

/// The file name a URL implies (its last path component), if any.
pub fn url_basename(url: &str) -> Option<String> {
    let (_, _, path) = split_url(url).ok()?;
    let path = path.split('?').next().unwrap_or("");
    let b = path.rsplit('/').next().unwrap_or("");
    if b.is_empty() || b == "." || b == ".." {
        None
    } else {
        Some(b.to_string())
    }
}

/// GET `url` (following up to 5 redirects) into an anonymous temp file in `tmpdir`.
pub fn get(url: &str, tmpdir: &std::path::Path) -> io::Result<Download> {
    let mut url = url.to_string();
    for _ in 0..6 {
        let (host, port, path) = split_url(&url)?;
        let mut s = TcpStream::connect((host.as_str(), port))
            .map_err(|e| err(format!("connecting to {host}:{port} for {url}: {e}")))?;
        s.set_read_timeout(Some(Duration::from_secs(300)))?;
        s.set_write_timeout(Some(Duration::from_secs(60)))?;
        let req = format!(
            "GET {path} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: skiff-build\r\nAccept: */*\r\nConnection: close\r\n\r\n"
        );
        s.write_all(req.as_bytes())?;
        let mut r = BufReader::new(s);
        let mut status = String::new();
        r.by_ref().take(8192).read_line(&mut status)?;
        let code: u16 = status
            .split_whitespace()
            .nth(1)
            .and_then(|c| c.parse().ok())
            .ok_or_else(|| err(format!("bad HTTP status line from {url}: {status:?}")))?;
        let mut headers = Vec::new();
        for _ in 0..200 {
            let mut line = String::new();
            r.by_ref().take(16384).read_line(&mut line)?;
            let line = line.trim_end().to_string();
            if line.is_empty() {
                break;
            }
            if let Some((k, v)) = line.split_once(':') {
                headers.push((k.trim().to_ascii_lowercase(), v.trim().to_string()));
            }
        }
        let header = |k: &str| headers.iter().find(|(h, _)| h == k).map(|(_, v)| v.clone());
        if matches!(code, 301 | 302 | 303 | 307 | 308) {
            let loc = header("location")
                .ok_or_else(|| err(format!("redirect without Location from {url}")))?;
            url = if loc.starts_with("http://") || loc.starts_with("https://") {
                loc
            } else {
                format!(
                    "http://{host}:{port}{}",
                    if loc.starts_with('/') {
                        loc
                    } else {
                        format!("/{loc}")
                    }
                )
            };
            continue;
        }
        if code != 200 {
            return Err(err(format!("GET {url}: HTTP status {code}")));
        }
        let mut file = tempfile::tempfile_in(tmpdir)?;
        let chunked =
            header("transfer-encoding").is_some_and(|v| v.to_ascii_lowercase().contains("chunked"));
        if chunked {
            let mut total = 0u64;
            loop {
                let mut line = String::new();
                r.by_ref().take(1024).read_line(&mut line)?;
                let n = u64::from_str_radix(line.trim().split(';').next().unwrap_or(""), 16)
                    .map_err(|_| err(format!("bad chunk size from {url}")))?;
                if n == 0 {
                    break;
                }
                total += n;
                if total > MAX_DOWNLOAD {
                    return Err(err(format!("{url} is larger than {MAX_DOWNLOAD} bytes")));
                }
                let copied = io::copy(&mut r.by_ref().take(n), &mut file)?;
                if copied != n {
                    return Err(err(format!("truncated body from {url}")));
                }
                let mut crlf = String::new();
                r.by_ref().take(2).read_line(&mut crlf)?;
            }
        } else if let Some(len) = header("content-length").and_then(|v| v.parse::<u64>().ok()) {
            if len > MAX_DOWNLOAD {
                return Err(err(format!("{url} is larger than {MAX_DOWNLOAD} bytes")));
            }
            let copied = io::copy(&mut r.by_ref().take(len), &mut file)?;
            if copied != len {
                return Err(err(format!(
                    "truncated body from {url}: {copied} of {len} bytes"
                )));
            }
        } else {
            let copied = io::copy(&mut r.by_ref().take(MAX_DOWNLOAD + 1), &mut file)?;
            if copied > MAX_DOWNLOAD {
                return Err(err(format!("{url} is larger than {MAX_DOWNLOAD} bytes")));
            }
        }
        use std::io::Seek;
        file.seek(io::SeekFrom::Start(0))?;
        let last_modified = header("last-modified").and_then(|v| {
            chrono::DateTime::parse_from_rfc2822(&v)
                .ok()
                .map(|d| d.timestamp())
        });
        return Ok(Download {
            file,
            last_modified,
        });
    }
    Err(err(format!("too many redirects fetching {url}")))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn urls() {
        assert_eq!(
            split_url("http://127.0.0.1:8080/a/b?x").unwrap(),
            ("127.0.0.1".into(), 8080, "/a/b?x".into())
        );
        assert_eq!(
            split_url("http://example.com").unwrap(),
            ("example.com".into(), 80, "/".into())
        );
        assert!(split_url("https://x/y").is_err());
        assert_eq!(
            url_basename("http://example.com/foobar").as_deref(),
            Some("foobar")
        );
        assert_eq!(url_basename("http://example.com/"), None);
    }
}
