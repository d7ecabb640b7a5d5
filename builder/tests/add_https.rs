//! `ADD https://...` against an HTTPS server on 127.0.0.1 run by the test itself, with a
//! throw-away CA made by rcgen: trusted via `--cert-dir` or `SSL_CERT_FILE`, and the failures
//! (unknown CA, host name mismatch, expired certificate, not TLS, bad redirects) reported clearly.

#![allow(clippy::unwrap_used)]

mod common;

use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;
use std::process::Output;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::Env;
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};

macro_rules! need_host {
    () => {
        if let Some(why) = common::host_problem() {
            skip!("{why}");
        }
    };
}

/// `Last-Modified` the server sends, and the same instant in seconds.
const LAST_MODIFIED: &str = "Wed, 21 Oct 2015 07:28:00 GMT";
const LAST_MODIFIED_SECS: i64 = 1_445_412_480;

/// Whether /dated answers with a later Last-Modified (same body).
static LATER_DATE: AtomicBool = AtomicBool::new(false);

/// Full answers and 304s given for /etag.
static ETAG_FULL: AtomicUsize = AtomicUsize::new(0);
static ETAG_304: AtomicUsize = AtomicUsize::new(0);

/// A small tar.gz served as /a.tar.gz (holding inner.txt), the same bytes every time.
fn archive() -> Vec<u8> {
    let mut t = tar::Builder::new(flate2::write::GzEncoder::new(
        Vec::new(),
        flate2::Compression::fast(),
    ));
    let data = b"from the archive\n";
    let mut h = tar::Header::new_ustar();
    h.set_size(data.len() as u64);
    h.set_mode(0o644);
    h.set_mtime(1_000_000_000);
    t.append_data(&mut h, "inner.txt", &data[..]).unwrap();
    t.into_inner().unwrap().finish().unwrap()
}

fn sha256_hex(b: &[u8]) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(b))
}

/// A test CA.
struct Ca {
    issuer: Issuer<'static, KeyPair>,
    pem: String,
}

impl Ca {
    fn new(name: &str) -> Ca {
        let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
        p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        p.distinguished_name.push(DnType::CommonName, name);
        p.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let key = KeyPair::generate().unwrap();
        let cert = p.self_signed(&key).unwrap();
        Ca {
            pem: cert.pem(),
            issuer: Issuer::new(p, key),
        }
    }

    /// A server certificate for `names`, expired if asked.
    fn server_config(&self, names: &[&str], expired: bool) -> Arc<rustls::ServerConfig> {
        let mut p = CertificateParams::new(names.iter().map(|s| s.to_string()).collect::<Vec<_>>())
            .unwrap();
        p.distinguished_name.push(DnType::CommonName, names[0]);
        if expired {
            p.not_before = rcgen::date_time_ymd(2000, 1, 1);
            p.not_after = rcgen::date_time_ymd(2001, 1, 1);
        }
        let key = KeyPair::generate().unwrap();
        let cert = p.signed_by(&key, &self.issuer).unwrap();
        let chain: Vec<CertificateDer<'static>> = vec![cert.der().clone()];
        let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        Arc::new(
            rustls::ServerConfig::builder_with_provider(provider)
                .with_safe_default_protocol_versions()
                .unwrap()
                .with_no_client_auth()
                .with_single_cert(chain, key)
                .unwrap(),
        )
    }
}

/// An HTTPS (or, with no TLS config, plain HTTP) server on 127.0.0.1, stopped on drop.
struct Server {
    port: u16,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Server {
    fn start(tls: Option<Arc<rustls::ServerConfig>>) -> Server {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let port = listener.local_addr().unwrap().port();
        let stop = Arc::new(AtomicBool::new(false));
        let stop2 = stop.clone();
        let thread = std::thread::spawn(move || {
            // Bounded: at most 5 minutes and 200 connections.
            let deadline = Instant::now() + Duration::from_secs(300);
            let mut served = 0;
            while !stop2.load(Ordering::Relaxed) && Instant::now() < deadline && served < 200 {
                match listener.accept() {
                    Ok((s, _)) => {
                        served += 1;
                        s.set_nonblocking(false).unwrap();
                        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
                        s.set_write_timeout(Some(Duration::from_secs(10))).unwrap();
                        match &tls {
                            Some(cfg) => {
                                let conn = rustls::ServerConnection::new(cfg.clone()).unwrap();
                                let mut t = rustls::StreamOwned::new(conn, s);
                                let _ = serve(&mut t, port);
                                t.conn.send_close_notify();
                                let _ = t.flush();
                            }
                            None => {
                                let mut s = s;
                                let _ = serve(&mut s, port);
                            }
                        }
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(10)),
                }
            }
        });
        Server {
            port,
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Answer one request.
fn serve<S: std::io::Read + Write>(s: &mut S, port: u16) -> std::io::Result<()> {
    // Bytes, not UTF-8 lines: a TLS ClientHello sent to the plain server must get an answer,
    // like a real HTTP server's immediate 400.
    let mut method = [0u8; 4];
    s.read_exact(&mut method)?;
    if &method != b"GET " {
        s.write_all(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")?;
        return s.flush();
    }
    let mut r = BufReader::new(&mut *s);
    let mut first = Vec::new();
    r.read_until(b'\n', &mut first)?;
    let mut if_none_match = None;
    for _ in 0..100 {
        let mut l = Vec::new();
        if r.read_until(b'\n', &mut l)? == 0 || l.trim_ascii().is_empty() {
            break;
        }
        let l = String::from_utf8_lossy(&l).to_string();
        if let Some((k, v)) = l.split_once(':') {
            if k.eq_ignore_ascii_case("if-none-match") {
                if_none_match = Some(v.trim().to_string());
            }
        }
    }
    drop(r);
    let first = format!("GET {}", String::from_utf8_lossy(&first));
    let path = first.split_whitespace().nth(1).unwrap_or("/").to_string();
    let body = "downloaded over tls\n";
    if path == "/a.tar.gz" {
        let a = archive();
        write!(
            s,
            "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nContent-Type: application/gzip\r\n\r\n",
            a.len()
        )?;
        s.write_all(&a)?;
        return s.flush();
    }
    if path == "/etag" && if_none_match.as_deref() == Some("\"v1\"") {
        ETAG_304.fetch_add(1, Ordering::SeqCst);
        s.write_all(b"HTTP/1.1 304 Not Modified\r\nETag: \"v1\"\r\n\r\n")?;
        return s.flush();
    }
    let resp = match path.as_str() {
        "/etag" => {
            ETAG_FULL.fetch_add(1, Ordering::SeqCst);
            format!(
                "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nETag: \"v1\"\r\nLast-Modified: {LAST_MODIFIED}\r\n\r\n{body}",
                body.len()
            )
        }
        "/dated" => format!(
            "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nLast-Modified: {}\r\n\r\n{body}",
            body.len(),
            if LATER_DATE.load(Ordering::SeqCst) {
                "Thu, 22 Oct 2015 07:28:00 GMT"
            } else {
                LAST_MODIFIED
            }
        ),
        "/files/remote.txt" => format!(
            "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nLast-Modified: {LAST_MODIFIED}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        ),
        "/chunked" => "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n6\r\nchunky\r\n1\r\n\n\r\n0\r\n\r\n".to_string(),
        "/redirect" => "HTTP/1.1 302 Found\r\nLocation: /files/remote.txt\r\nContent-Length: 0\r\n\r\n".to_string(),
        "/loop" => "HTTP/1.1 302 Found\r\nLocation: /loop\r\nContent-Length: 0\r\n\r\n".to_string(),
        "/to-http" => format!("HTTP/1.1 302 Found\r\nLocation: http://127.0.0.1:{port}/files/remote.txt\r\nContent-Length: 0\r\n\r\n"),
        _ => "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n".to_string(),
    };
    s.write_all(resp.as_bytes())?;
    s.flush()
}

/// Run skiff-build in `env` with exactly the TLS-related environment given (SSL_CERT_FILE and
/// SSL_CERT_DIR of the caller are removed so the system store is what is trusted).
fn build(env: &Env, args: &[&str], vars: &[(&str, &str)]) -> Output {
    let mut c = env.command();
    c.arg("--progress")
        .arg("plain")
        .args(args)
        .env_remove("SOURCE_DATE_EPOCH")
        .env_remove("SSL_CERT_FILE")
        .env_remove("SSL_CERT_DIR");
    for (k, v) in vars {
        c.env(k, v);
    }
    c.output().unwrap()
}

fn ok(o: &Output) -> String {
    let e = String::from_utf8_lossy(&o.stderr).to_string();
    assert!(o.status.success(), "build failed:\n{e}");
    e
}

fn failed(o: &Output) -> String {
    let e = String::from_utf8_lossy(&o.stderr).to_string();
    assert!(!o.status.success(), "build should have failed:\n{e}");
    eprintln!("expected failure: {}", e.lines().last().unwrap_or(""));
    e
}

/// A `--cert-dir` holding the CA.
fn cert_dir(env: &Env, ca: &Ca) -> PathBuf {
    let d = env.dir.path().join("certs.d");
    std::fs::create_dir_all(&d).unwrap();
    std::fs::write(d.join("test-ca.crt"), &ca.pem).unwrap();
    d
}

fn context(env: &Env, name: &str, dockerfile: &str) -> String {
    env.context(name, &[("Dockerfile", dockerfile)])
        .display()
        .to_string()
}

#[test]
fn add_https_trusted_by_cert_dir_or_ssl_cert_file() {
    need_host!();
    let ca = Ca::new("skiff test CA");
    let srv = Server::start(Some(ca.server_config(&["localhost", "127.0.0.1"], false)));
    let env = Env::new();
    let certs = cert_dir(&env, &ca);
    let p = srv.port;
    let ctx = context(
        &env,
        "https",
        &format!(
            "FROM busybox\n\
             ADD https://127.0.0.1:{p}/files/remote.txt /dl/\n\
             ADD https://localhost:{p}/redirect /named\n\
             ADD https://127.0.0.1:{p}/chunked /chunked.txt\n\
             ADD https://127.0.0.1:{p}/a.tar.gz /remote/\n\
             ADD --unpack=true https://127.0.0.1:{p}/a.tar.gz /unpacked/\n\
             ADD --checksum=sha256:{sum} https://127.0.0.1:{p}/files/remote.txt /checked\n",
            sum = sha256_hex(b"downloaded over tls\n")
        ),
    );
    let certs_s = certs.display().to_string();
    ok(&build(
        &env,
        &["--cert-dir", &certs_s, "-t", "https:1", &ctx],
        &[],
    ));
    let b = env.unpack("https:1", "https1");
    let f = b.join("rootfs/dl/remote.txt");
    assert_eq!(
        std::fs::read_to_string(&f).unwrap(),
        "downloaded over tls\n"
    );
    let m = std::fs::metadata(&f).unwrap();
    assert_eq!(m.mode() & 0o7777, 0o600, "remote files are 0600");
    assert_eq!(m.mtime(), LAST_MODIFIED_SECS, "mtime from Last-Modified");
    // The redirect target's content, under the destination's name.
    assert_eq!(
        std::fs::read_to_string(b.join("rootfs/named")).unwrap(),
        "downloaded over tls\n"
    );
    assert_eq!(
        std::fs::read_to_string(b.join("rootfs/chunked.txt")).unwrap(),
        "chunky\n"
    );
    // Remote archives are stored as downloaded unless --unpack=true.
    assert_eq!(
        std::fs::read(b.join("rootfs/remote/a.tar.gz")).unwrap(),
        archive()
    );
    assert_eq!(
        std::fs::read_to_string(b.join("rootfs/unpacked/inner.txt")).unwrap(),
        "from the archive\n"
    );
    assert!(b.join("rootfs/checked").exists());

    // Same content and Last-Modified: the steps are cached.
    let e = ok(&build(
        &env,
        &["--cert-dir", &certs_s, "-t", "https:2", &ctx],
        &[],
    ));
    assert_eq!(e.matches("CACHED").count(), 6, "{e}");

    // Same body, later Last-Modified: the step is rebuilt (the date becomes the mtime).
    let ctx2 = context(
        &env,
        "dated",
        &format!("FROM busybox\nADD https://127.0.0.1:{p}/dated /dated\n"),
    );
    ok(&build(
        &env,
        &["--cert-dir", &certs_s, "-t", "d:1", &ctx2],
        &[],
    ));
    let e = ok(&build(
        &env,
        &["--cert-dir", &certs_s, "-t", "d:1", &ctx2],
        &[],
    ));
    assert_eq!(e.matches("CACHED").count(), 1, "{e}");
    LATER_DATE.store(true, Ordering::SeqCst);
    let e = ok(&build(
        &env,
        &["--cert-dir", &certs_s, "-t", "d:2", &ctx2],
        &[],
    ));
    assert_eq!(e.matches("CACHED").count(), 0, "{e}");
    let b = env.unpack("d:2", "d2");
    assert_eq!(
        std::fs::metadata(b.join("rootfs/dated")).unwrap().mtime(),
        LAST_MODIFIED_SECS + 86400
    );

    // ETag: an unchanged file is not downloaded again when the step is cached (304), and is
    // fetched in full when the step has to be built anyway (parent changed) or on --no-cache.
    let etag_df = |env_line: &str| {
        format!("FROM busybox\n{env_line}ADD https://127.0.0.1:{p}/etag /etagged\n")
    };
    let ctx3 = context(&env, "etag", &etag_df(""));
    ok(&build(
        &env,
        &["--cert-dir", &certs_s, "-t", "e:1", &ctx3],
        &[],
    ));
    assert_eq!(ETAG_FULL.load(Ordering::SeqCst), 1);
    let e = ok(&build(
        &env,
        &["--cert-dir", &certs_s, "-t", "e:2", &ctx3],
        &[],
    ));
    assert_eq!(e.matches("CACHED").count(), 1, "{e}");
    assert_eq!(
        ETAG_304.load(Ordering::SeqCst),
        1,
        "asked with If-None-Match"
    );
    assert_eq!(ETAG_FULL.load(Ordering::SeqCst), 1, "not downloaded again");
    let ctx4 = context(&env, "etag2", &etag_df("ENV X=1\n"));
    ok(&build(
        &env,
        &["--cert-dir", &certs_s, "-t", "e:3", &ctx4],
        &[],
    ));
    assert_eq!(ETAG_304.load(Ordering::SeqCst), 2);
    assert_eq!(
        ETAG_FULL.load(Ordering::SeqCst),
        2,
        "fetched to build the step"
    );
    let b = env.unpack("e:3", "e3");
    let f = b.join("rootfs/etagged");
    assert_eq!(
        std::fs::read_to_string(&f).unwrap(),
        "downloaded over tls\n"
    );
    assert_eq!(std::fs::metadata(&f).unwrap().mtime(), LAST_MODIFIED_SECS);
    ok(&build(
        &env,
        &["--cert-dir", &certs_s, "--no-cache", "-t", "e:4", &ctx3],
        &[],
    ));
    assert_eq!(
        ETAG_304.load(Ordering::SeqCst),
        2,
        "--no-cache asks unconditionally"
    );
    assert_eq!(ETAG_FULL.load(Ordering::SeqCst), 3);

    // SSL_CERT_FILE (replacing the system store) works as well.
    let ca_file = env.dir.path().join("ca.pem");
    std::fs::write(&ca_file, &ca.pem).unwrap();
    ok(&build(
        &env,
        &["--no-cache", "-t", "https:3", &ctx],
        &[("SSL_CERT_FILE", ca_file.to_str().unwrap())],
    ));
    env.assert_clean();
}

#[test]
fn add_https_unknown_ca_is_refused_unless_tls_verify_false() {
    need_host!();
    let ca = Ca::new("untrusted test CA");
    let srv = Server::start(Some(ca.server_config(&["localhost", "127.0.0.1"], false)));
    let env = Env::new();
    let url = format!("https://127.0.0.1:{}/files/remote.txt", srv.port);
    let ctx = context(&env, "untrusted", &format!("FROM busybox\nADD {url} /x\n"));
    let e = failed(&build(&env, &["-t", "bad:1", &ctx], &[]));
    assert!(e.contains("unknown certificate authority"), "{e}");
    assert!(e.contains("Dockerfile:2"), "names the line: {e}");
    assert!(e.contains(&url), "names the URL: {e}");
    assert!(env.store().image("bad:1").is_err(), "no image on failure");
    // A --cert-dir with another CA does not help.
    let other = Ca::new("other CA");
    let certs = cert_dir(&env, &other);
    let e = failed(&build(
        &env,
        &["--cert-dir", certs.to_str().unwrap(), "-t", "bad:1", &ctx],
        &[],
    ));
    assert!(e.contains("unknown certificate authority"), "{e}");
    // buildah's --tls-verify=false turns verification off, with a warning.
    let e = ok(&build(
        &env,
        &["--tls-verify=false", "-t", "insecure:1", &ctx],
        &[],
    ));
    assert!(e.contains("NOT verified"), "{e}");
    env.assert_clean();
}

#[test]
fn add_https_hostname_mismatch_and_expired_certificate() {
    need_host!();
    let ca = Ca::new("skiff test CA");
    let wrong = Server::start(Some(ca.server_config(&["other.example"], false)));
    let expired = Server::start(Some(ca.server_config(&["127.0.0.1"], true)));
    let env = Env::new();
    let certs = cert_dir(&env, &ca);
    let certs_s = certs.display().to_string();

    let url = format!("https://127.0.0.1:{}/files/remote.txt", wrong.port);
    let ctx = context(&env, "wrong", &format!("FROM busybox\nADD {url} /x\n"));
    let e = failed(&build(&env, &["--cert-dir", &certs_s, &ctx], &[]));
    assert!(e.contains("hostname mismatch"), "{e}");
    assert!(e.contains("other.example"), "says which name it holds: {e}");
    assert!(e.contains(&url), "{e}");

    let url = format!("https://127.0.0.1:{}/files/remote.txt", expired.port);
    let ctx = context(&env, "expired", &format!("FROM busybox\nADD {url} /x\n"));
    let e = failed(&build(&env, &["--cert-dir", &certs_s, &ctx], &[]));
    assert!(e.contains("certificate has expired"), "{e}");
    env.assert_clean();
}

#[test]
fn add_https_bad_redirects_and_plain_http_server() {
    need_host!();
    let ca = Ca::new("skiff test CA");
    let srv = Server::start(Some(ca.server_config(&["127.0.0.1"], false)));
    let plain = Server::start(None);
    let env = Env::new();
    let certs = cert_dir(&env, &ca);
    let certs_s = certs.display().to_string();
    let p = srv.port;
    let run = |name: &str, line: &str| -> String {
        let ctx = context(&env, name, &format!("FROM busybox\n{line}\n"));
        failed(&build(&env, &["--cert-dir", &certs_s, &ctx], &[]))
    };
    let e = run("loop", &format!("ADD https://127.0.0.1:{p}/loop /x"));
    assert!(e.contains("too many redirects"), "{e}");
    let e = run("down", &format!("ADD https://127.0.0.1:{p}/to-http /x"));
    assert!(e.contains("from https to plain http"), "{e}");
    let e = run(
        "sum",
        &format!(
            "ADD --checksum=sha256:{} https://127.0.0.1:{p}/files/remote.txt /x",
            "0".repeat(64)
        ),
    );
    assert!(e.contains("checksum mismatch"), "{e}");
    let e = run("404", &format!("ADD https://127.0.0.1:{p}/nope /x"));
    assert!(e.contains("HTTP status 404"), "{e}");
    let e = run(
        "plain",
        &format!("ADD https://127.0.0.1:{}/files/remote.txt /x", plain.port),
    );
    assert!(e.contains("did not answer with TLS"), "{e}");
    // A --cert-dir that is not a directory is refused up front.
    let e = failed(&build(
        &env,
        &[
            "--cert-dir",
            "/nonexistent-skiff-certs",
            &context(&env, "nd", "FROM busybox\n"),
        ],
        &[],
    ));
    assert!(e.contains("--cert-dir"), "{e}");
    env.assert_clean();
}

#[test]
fn stalled_download_stops_on_sigterm() {
    need_host!();
    // A server that sends headers and a few bytes, then stalls (bounded: 30 s at most).
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let (tx, rx) = std::sync::mpsc::channel();
    let stop = Arc::new(AtomicBool::new(false));
    let stop2 = stop.clone();
    let server = std::thread::spawn(move || {
        let Ok((mut s, _)) = listener.accept() else {
            return;
        };
        let _ = s.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 1000000\r\n\r\nabc");
        let _ = tx.send(());
        let t = Instant::now();
        while !stop2.load(Ordering::Relaxed) && t.elapsed() < Duration::from_secs(30) {
            std::thread::sleep(Duration::from_millis(20));
        }
    });
    let env = Env::new();
    let ctx = context(
        &env,
        "stall",
        &format!("FROM busybox\nADD http://127.0.0.1:{port}/big /big\n"),
    );
    let mut child = env
        .command()
        .args(["--progress", "plain", &ctx])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    rx.recv_timeout(Duration::from_secs(30))
        .expect("skiff-build connected");
    std::thread::sleep(Duration::from_millis(300));
    // SAFETY: kill(2) on our own child's pid.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let t = Instant::now();
    let status = loop {
        if let Some(st) = child.try_wait().unwrap() {
            break Some(st);
        }
        if t.elapsed() > Duration::from_secs(20) {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    stop.store(true, Ordering::Relaxed);
    let _ = server.join();
    let mut err = String::new();
    let _ = std::io::Read::read_to_string(child.stderr.as_mut().unwrap(), &mut err);
    let status = status.expect("skiff-build did not stop within 20 s of SIGTERM");
    assert_eq!(status.code(), Some(130), "{err}");
    assert!(err.contains("interrupted"), "{err}");
    env.assert_clean();
}
