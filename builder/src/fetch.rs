//! A small HTTP/1.1 client for `ADD http://...` and `ADD https://...` sources. TLS is rustls
//! (ring provider) with the system's trust roots; verification is on unless the user asks
//! otherwise with `--tls-verify=false`, as buildah does.

use std::io::{self, BufRead, BufReader, Read, Seek, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};

/// Largest download accepted for ADD.
pub const MAX_DOWNLOAD: u64 = 4 << 30;

/// Redirects followed before giving up (Go's and so buildah's limit).
pub const MAX_REDIRECTS: usize = 10;

/// Time allowed to open a TCP connection to one address.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(30);

/// Longest silence accepted from the server while reading (or accepted by it while writing).
const IO_TIMEOUT: Duration = Duration::from_secs(120);

/// A downloaded URL.
#[derive(Debug)]
pub struct Download {
    /// The body.
    pub file: std::fs::File,
    /// `Last-Modified`, parsed, if the server sent one.
    pub last_modified: Option<i64>,
    /// The URL the body finally came from (after redirects).
    pub final_url: String,
    /// What to send next time to ask "has it changed?" (`ETag`, raw `Last-Modified`).
    pub validators: Validators,
}

/// A previous response's `ETag` and `Last-Modified`, sent back as `If-None-Match` and
/// `If-Modified-Since` so an unchanged file is not downloaded again.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Validators {
    /// `ETag` as the server sent it.
    pub etag: Option<String>,
    /// `Last-Modified` as the server sent it.
    pub last_modified: Option<String>,
}

impl Validators {
    fn is_empty(&self) -> bool {
        self.etag.is_none() && self.last_modified.is_none()
    }
}

/// The result of a conditional GET.
#[derive(Debug)]
pub enum Fetched {
    /// The body (new or changed).
    Body(Download),
    /// `304 Not Modified`: the file is what the validators describe.
    NotModified,
}

/// A header value safe to send back (no line breaks, bounded).
fn header_value(v: &Option<String>) -> Option<&str> {
    v.as_deref()
        .filter(|v| v.len() <= 1024 && !v.chars().any(|c| c.is_control()))
}

/// How `https://` servers are verified (the CLI's `--cert-dir` and `--tls-verify`).
#[derive(Debug, Clone)]
pub struct TlsOptions {
    /// Extra trusted CAs: every `*.crt` file (PEM) in this directory, like buildah's `--cert-dir`.
    pub cert_dir: Option<PathBuf>,
    /// Verify certificates and host names; false only on an explicit `--tls-verify=false`.
    pub verify: bool,
}

impl Default for TlsOptions {
    fn default() -> Self {
        TlsOptions {
            cert_dir: None,
            verify: true,
        }
    }
}

/// Downloads URLs; holds the TLS client configuration, made once on first `https://` use.
#[derive(Debug)]
pub struct Fetcher {
    opts: TlsOptions,
    tls: OnceLock<Result<Arc<rustls::ClientConfig>, String>>,
}

fn err(msg: impl Into<String>) -> io::Error {
    io::Error::other(msg.into())
}

/// A parsed `http(s)://host[:port]/path?query` URL.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Url {
    https: bool,
    host: String,
    port: u16,
    /// Path and query, starting with `/`.
    path: String,
}

impl Url {
    fn parse(url: &str) -> io::Result<Url> {
        let (https, rest) = if let Some(r) = url.strip_prefix("http://") {
            (false, r)
        } else if let Some(r) = url.strip_prefix("https://") {
            (true, r)
        } else {
            return Err(err(format!(
                "unsupported URL scheme in {url}: expected http:// or https://"
            )));
        };
        let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
        let (authority, path) = rest.split_at(end);
        let hostport = authority.rsplit_once('@').map(|x| x.1).unwrap_or(authority);
        let default_port = if https { 443 } else { 80 };
        let (host, port) = if let Some(v6) = hostport.strip_prefix('[') {
            let (h, after) = v6
                .split_once(']')
                .ok_or_else(|| err(format!("bad IPv6 host in {url}")))?;
            let port = match after.strip_prefix(':') {
                Some(p) => p
                    .parse::<u16>()
                    .map_err(|_| err(format!("bad port in {url}")))?,
                None if after.is_empty() => default_port,
                None => return Err(err(format!("bad host in {url}"))),
            };
            (h.to_string(), port)
        } else {
            match hostport.rsplit_once(':') {
                Some((h, p)) => (
                    h.to_string(),
                    if p.is_empty() {
                        default_port
                    } else {
                        p.parse::<u16>()
                            .map_err(|_| err(format!("bad port in {url}")))?
                    },
                ),
                None => (hostport.to_string(), default_port),
            }
        };
        if host.is_empty() {
            return Err(err(format!("no host in {url}")));
        }
        if host.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(err(format!("bad host in {url}")));
        }
        let path = path.split('#').next().unwrap_or("");
        let path = if path.is_empty() || path.starts_with('?') {
            format!("/{path}")
        } else {
            path.to_string()
        };
        if path.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(err(format!(
                "bad character in the path of {url} (spaces must be %-encoded)"
            )));
        }
        Ok(Url {
            https,
            host,
            port,
            path,
        })
    }

    fn default_port(&self) -> u16 {
        if self.https {
            443
        } else {
            80
        }
    }

    /// `host[:port]` as written in a URL or a Host header.
    fn authority(&self) -> String {
        let h = if self.host.contains(':') {
            format!("[{}]", self.host)
        } else {
            self.host.clone()
        };
        if self.port == self.default_port() {
            h
        } else {
            format!("{h}:{}", self.port)
        }
    }

    fn to_string_url(&self) -> String {
        format!(
            "{}://{}{}",
            if self.https { "https" } else { "http" },
            self.authority(),
            self.path
        )
    }

    /// Resolve a `Location` header against this URL.
    fn join(&self, loc: &str) -> io::Result<Url> {
        if loc.starts_with("http://") || loc.starts_with("https://") {
            return Url::parse(loc);
        }
        if let Some(rest) = loc.strip_prefix("//") {
            let scheme = if self.https { "https" } else { "http" };
            return Url::parse(&format!("{scheme}://{rest}"));
        }
        if loc.contains("://") {
            return Err(err(format!("redirect to an unsupported URL: {loc}")));
        }
        let mut u = self.clone();
        u.path = if loc.starts_with('/') {
            loc.to_string()
        } else if let Some(q) = loc.strip_prefix('?') {
            let base = self.path.split('?').next().unwrap_or("/");
            format!("{base}?{q}")
        } else {
            let base = self.path.split('?').next().unwrap_or("/");
            let dir = &base[..base.rfind('/').map(|i| i + 1).unwrap_or(0)];
            format!("{}{loc}", if dir.is_empty() { "/" } else { dir })
        };
        u.path = u.path.split('#').next().unwrap_or("/").to_string();
        Ok(u)
    }
}

/// The file name a URL implies (its last path component), if any.
pub fn url_basename(url: &str) -> Option<String> {
    let u = Url::parse(url).ok()?;
    let path = u.path.split('?').next().unwrap_or("");
    let b = path.rsplit('/').next().unwrap_or("");
    if b.is_empty() || b == "." || b == ".." {
        None
    } else {
        Some(b.to_string())
    }
}

/// The connection to one server: plain TCP or TLS over it.
enum Conn {
    Plain(TcpStream),
    Tls(Box<rustls::StreamOwned<rustls::ClientConnection, TcpStream>>),
}

impl Read for Conn {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        // The build's signal handlers interrupt blocking reads (no SA_RESTART); std's copy
        // loops retry EINTR, so stop here when the user asked the build to stop.
        for _ in 0..1000 {
            let r = match self {
                Conn::Plain(s) => s.read(buf),
                Conn::Tls(s) => s.read(buf),
            };
            match r {
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {
                    if crate::interrupt::requested() {
                        return Err(err("interrupted"));
                    }
                }
                r => return r,
            }
        }
        Err(err("interrupted too often"))
    }
}

impl Write for Conn {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Conn::Plain(s) => s.write(buf),
            Conn::Tls(s) => s.write(buf),
        }
    }
    fn flush(&mut self) -> io::Result<()> {
        match self {
            Conn::Plain(s) => s.flush(),
            Conn::Tls(s) => s.flush(),
        }
    }
}

/// Open a TCP connection to the first address of `host:port` that answers.
fn connect(host: &str, port: u16) -> io::Result<TcpStream> {
    let addrs: Vec<_> = (host, port)
        .to_socket_addrs()
        .map_err(|e| err(format!("resolving {host}: {e}")))?
        .take(16)
        .collect();
    let mut last = None;
    for a in addrs {
        match TcpStream::connect_timeout(&a, CONNECT_TIMEOUT) {
            Ok(s) => {
                s.set_read_timeout(Some(IO_TIMEOUT))?;
                s.set_write_timeout(Some(IO_TIMEOUT))?;
                return Ok(s);
            }
            Err(e) => last = Some(format!("{a}: {e}")),
        }
    }
    Err(err(format!(
        "connecting to {host}:{port}: {}",
        last.unwrap_or_else(|| "no address".into())
    )))
}

/// Turn a TLS failure into a sentence saying what failed and what to do about it.
fn describe_tls(e: &io::Error, host: &str, opts: &TlsOptions) -> String {
    let Some(te) = e.get_ref().and_then(|i| i.downcast_ref::<rustls::Error>()) else {
        return match e.kind() {
            io::ErrorKind::UnexpectedEof => {
                "TLS handshake failed: the server closed the connection (is it an https server?)"
                    .into()
            }
            io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => {
                format!("TLS handshake failed: no answer within {IO_TIMEOUT:?}")
            }
            _ => format!("TLS handshake failed: {e}"),
        };
    };
    use rustls::CertificateError as C;
    match te {
        rustls::Error::InvalidCertificate(ce) => {
            let what = match ce {
                C::UnknownIssuer => {
                    let extra = match &opts.cert_dir {
                        Some(d) => format!(", nor in --cert-dir {}", d.display()),
                        None => String::new(),
                    };
                    format!(
                        "unknown certificate authority: the server's certificate chain does not lead to a trusted root (not in the system trust store{extra}); trust a private CA with --cert-dir DIR (*.crt files) or SSL_CERT_FILE"
                    )
                }
                C::NotValidForName | C::NotValidForNameContext { .. } => {
                    format!("hostname mismatch: the certificate is not valid for {host}: {ce}")
                }
                C::Expired | C::ExpiredContext { .. } => format!("certificate has expired: {ce}"),
                C::NotValidYet | C::NotValidYetContext { .. } => {
                    format!("certificate is not valid yet: {ce}")
                }
                C::Revoked => "certificate has been revoked".into(),
                C::BadSignature => "certificate has a bad signature".into(),
                other => format!("{other}"),
            };
            format!("TLS certificate verification failed: {what}")
        }
        rustls::Error::InvalidMessage(_) | rustls::Error::InappropriateMessage { .. } => {
            format!(
                "TLS handshake failed: the server did not answer with TLS (a plain http server on an https URL?): {te}"
            )
        }
        rustls::Error::AlertReceived(a) => {
            format!("TLS handshake failed: the server sent alert {a:?}")
        }
        other => format!("TLS error: {other}"),
    }
}

/// Certificate verifier used only on `--tls-verify=false`: accepts any certificate but still
/// checks the handshake signatures (so the session is at least bound to the presented key).
#[derive(Debug)]
struct NoCertificateVerification(Arc<rustls::crypto::CryptoProvider>);

impl rustls::client::danger::ServerCertVerifier for NoCertificateVerification {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }
    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }
    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }
    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// The `*.crt` files of a `--cert-dir`, sorted.
fn cert_dir_files(dir: &Path) -> Result<Vec<PathBuf>, String> {
    let rd = std::fs::read_dir(dir).map_err(|e| format!("--cert-dir {}: {e}", dir.display()))?;
    let mut files: Vec<PathBuf> = rd
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "crt"))
        .collect();
    files.sort();
    Ok(files)
}

/// Build the TLS client configuration: system roots (or the bundled Mozilla roots when the
/// system has none), plus `--cert-dir`.
fn client_config(opts: &TlsOptions) -> Result<Arc<rustls::ClientConfig>, String> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS setup: {e}"))?;
    if !opts.verify {
        return Ok(Arc::new(
            builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(NoCertificateVerification(provider)))
                .with_no_client_auth(),
        ));
    }
    let mut roots = rustls::RootCertStore::empty();
    let native = rustls_native_certs::load_native_certs();
    if !native.certs.is_empty() {
        roots.add_parsable_certificates(native.certs);
    }
    if roots.is_empty() {
        if native.errors.is_empty() && std::env::var_os("SSL_CERT_FILE").is_some() {
            // SSL_CERT_FILE named a file with no certificates: say so rather than fall back.
            return Err("SSL_CERT_FILE holds no certificates".into());
        }
        if let Some(e) = native.errors.first() {
            if std::env::var_os("SSL_CERT_FILE").is_some()
                || std::env::var_os("SSL_CERT_DIR").is_some()
            {
                return Err(format!("loading SSL_CERT_FILE/SSL_CERT_DIR: {e}"));
            }
        }
        roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    }
    if let Some(dir) = &opts.cert_dir {
        for f in cert_dir_files(dir)? {
            let mut n = 0;
            for c in CertificateDer::pem_file_iter(&f)
                .map_err(|e| format!("--cert-dir: reading {}: {e}", f.display()))?
            {
                let c = c.map_err(|e| format!("--cert-dir: {}: {e}", f.display()))?;
                roots
                    .add(c)
                    .map_err(|e| format!("--cert-dir: {}: not a usable CA: {e}", f.display()))?;
                n += 1;
            }
            if n == 0 {
                return Err(format!(
                    "--cert-dir: {} holds no PEM certificate",
                    f.display()
                ));
            }
        }
    }
    Ok(Arc::new(
        builder.with_root_certificates(roots).with_no_client_auth(),
    ))
}

impl Fetcher {
    /// A fetcher verifying servers as `opts` says.
    pub fn new(opts: TlsOptions) -> Fetcher {
        Fetcher {
            opts,
            tls: OnceLock::new(),
        }
    }

    /// Check the TLS settings now (bad `--cert-dir`, empty `SSL_CERT_FILE`) instead of at the
    /// first `ADD https://`.
    pub fn check(&self) -> io::Result<()> {
        self.tls_config().map(|_| ())
    }

    fn tls_config(&self) -> io::Result<Arc<rustls::ClientConfig>> {
        self.tls
            .get_or_init(|| client_config(&self.opts))
            .clone()
            .map_err(err)
    }

    /// Open a connection to `u` and finish the TLS handshake (if https) so that certificate
    /// errors are reported as such.
    fn open(&self, u: &Url) -> io::Result<Conn> {
        let tcp = connect(&u.host, u.port)?;
        if !u.https {
            return Ok(Conn::Plain(tcp));
        }
        let cfg = self.tls_config()?;
        let name = ServerName::try_from(u.host.clone())
            .map_err(|_| err(format!("{} is not a valid TLS server name", u.host)))?;
        let conn =
            rustls::ClientConnection::new(cfg, name).map_err(|e| err(format!("TLS setup: {e}")))?;
        let mut s = rustls::StreamOwned::new(conn, tcp);
        // Each round trip is bounded by IO_TIMEOUT; a handshake needs only a few.
        for _ in 0..32 {
            if !s.conn.is_handshaking() {
                return Ok(Conn::Tls(Box::new(s)));
            }
            s.conn
                .complete_io(&mut s.sock)
                .map_err(|e| err(describe_tls(&e, &u.host, &self.opts)))?;
        }
        Err(err("TLS handshake did not finish"))
    }

    /// GET `url` (following up to [`MAX_REDIRECTS`] redirects) into an anonymous temp file in
    /// `tmpdir`.
    pub fn get(&self, url: &str, tmpdir: &Path) -> io::Result<Download> {
        match self.get_if_changed(url, tmpdir, &Validators::default())? {
            Fetched::Body(d) => Ok(d),
            Fetched::NotModified => Err(err("unexpected 304 Not Modified")),
        }
    }

    /// [`Fetcher::get`], asking the server to answer 304 when `v` still describes the file.
    pub fn get_if_changed(&self, url: &str, tmpdir: &Path, v: &Validators) -> io::Result<Fetched> {
        let mut u = Url::parse(url)?;
        for hop in 0..=MAX_REDIRECTS {
            let shown = u.to_string_url();
            // The caller names the original URL; name the one that failed after a redirect.
            let at = |e: io::Error| {
                if hop == 0 {
                    e
                } else {
                    err(format!("after a redirect to {shown}: {e}"))
                }
            };
            let s = self.open(&u).map_err(at)?;
            match fetch_one(s, &u, tmpdir, v).map_err(at)? {
                Response::NotModified if v.is_empty() => {
                    return Err(at(err("304 Not Modified to an unconditional request")))
                }
                Response::NotModified => return Ok(Fetched::NotModified),
                Response::Redirect(loc) => {
                    let next = u
                        .join(&loc)
                        .map_err(|e| at(err(format!("redirect: {e}"))))?;
                    if u.https && !next.https {
                        return Err(at(err(format!(
                            "refusing a redirect from https to plain http ({})",
                            next.to_string_url()
                        ))));
                    }
                    u = next;
                }
                Response::Body(file, last_modified, validators) => {
                    return Ok(Fetched::Body(Download {
                        file,
                        last_modified,
                        final_url: shown,
                        validators,
                    }))
                }
            }
        }
        Err(err(format!(
            "too many redirects (more than {MAX_REDIRECTS})"
        )))
    }
}

/// What one request gave.
enum Response {
    Redirect(String),
    NotModified,
    Body(std::fs::File, Option<i64>, Validators),
}

/// Map a read error inside a TLS stream to a readable sentence.
fn body_err(e: io::Error) -> io::Error {
    if e.kind() == io::ErrorKind::UnexpectedEof {
        err("the connection closed early (body truncated)")
    } else if matches!(
        e.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
    ) {
        err(format!("no data from the server for {IO_TIMEOUT:?}"))
    } else {
        e
    }
}

fn fetch_one(mut s: Conn, u: &Url, tmpdir: &Path, v: &Validators) -> io::Result<Response> {
    let mut conditional = String::new();
    if let Some(e) = header_value(&v.etag) {
        conditional += &format!("If-None-Match: {e}\r\n");
    }
    if let Some(lm) = header_value(&v.last_modified) {
        conditional += &format!("If-Modified-Since: {lm}\r\n");
    }
    let req = format!(
        "GET {} HTTP/1.1\r\nHost: {}\r\nUser-Agent: skiff-build\r\nAccept: */*\r\nAccept-Encoding: identity\r\n{conditional}Connection: close\r\n\r\n",
        u.path,
        u.authority()
    );
    s.write_all(req.as_bytes())?;
    s.flush()?;
    let mut r = BufReader::new(s);
    let mut status = String::new();
    r.by_ref()
        .take(8192)
        .read_line(&mut status)
        .map_err(body_err)?;
    if !status.starts_with("HTTP/") {
        return Err(err(format!(
            "not an HTTP response (status line {:?})",
            status.trim_end()
        )));
    }
    let code: u16 = status
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| err(format!("bad HTTP status line {:?}", status.trim_end())))?;
    let mut headers = Vec::new();
    let mut ended = false;
    for _ in 0..200 {
        let mut line = String::new();
        r.by_ref()
            .take(16384)
            .read_line(&mut line)
            .map_err(body_err)?;
        let line = line.trim_end().to_string();
        if line.is_empty() {
            ended = true;
            break;
        }
        if let Some((k, v)) = line.split_once(':') {
            headers.push((k.trim().to_ascii_lowercase(), v.trim().to_string()));
        }
    }
    if !ended {
        return Err(err("too many response headers"));
    }
    let header = |k: &str| headers.iter().find(|(h, _)| h == k).map(|(_, v)| v.clone());
    if matches!(code, 301 | 302 | 303 | 307 | 308) {
        let loc = header("location")
            .ok_or_else(|| err(format!("HTTP {code} redirect without a Location header")))?;
        return Ok(Response::Redirect(loc));
    }
    if code == 304 {
        return Ok(Response::NotModified);
    }
    if code != 200 {
        return Err(err(format!("HTTP status {code}")));
    }
    let too_big = || err(format!("larger than the {MAX_DOWNLOAD}-byte limit"));
    let mut file = tempfile::tempfile_in(tmpdir)?;
    let chunked =
        header("transfer-encoding").is_some_and(|v| v.to_ascii_lowercase().contains("chunked"));
    if chunked {
        let mut total = 0u64;
        loop {
            let mut line = String::new();
            r.by_ref()
                .take(1024)
                .read_line(&mut line)
                .map_err(body_err)?;
            let n = u64::from_str_radix(line.trim().split(';').next().unwrap_or("").trim(), 16)
                .map_err(|_| err("bad chunk size in a chunked body"))?;
            if n == 0 {
                break;
            }
            total = total.saturating_add(n);
            if total > MAX_DOWNLOAD {
                return Err(too_big());
            }
            let copied = io::copy(&mut r.by_ref().take(n), &mut file).map_err(body_err)?;
            if copied != n {
                return Err(err("truncated chunked body"));
            }
            let mut crlf = String::new();
            r.by_ref().take(2).read_line(&mut crlf).map_err(body_err)?;
        }
    } else if let Some(len) = header("content-length") {
        let len: u64 = len
            .parse()
            .map_err(|_| err(format!("bad Content-Length {len:?}")))?;
        if len > MAX_DOWNLOAD {
            return Err(too_big());
        }
        let copied = io::copy(&mut r.by_ref().take(len), &mut file).map_err(body_err)?;
        if copied != len {
            return Err(err(format!("truncated body: {copied} of {len} bytes")));
        }
    } else {
        // Body ends at connection close. Over TLS, rustls reports a close without close_notify
        // as UnexpectedEof: a possibly truncated body, which body_err turns into an error.
        let copied =
            io::copy(&mut r.by_ref().take(MAX_DOWNLOAD + 1), &mut file).map_err(body_err)?;
        if copied > MAX_DOWNLOAD {
            return Err(too_big());
        }
    }
    file.seek(io::SeekFrom::Start(0))?;
    let last_modified = header("last-modified").and_then(|v| {
        chrono::DateTime::parse_from_rfc2822(&v)
            .ok()
            .map(|d| d.timestamp())
    });
    let validators = Validators {
        etag: header("etag"),
        last_modified: header("last-modified"),
    };
    Ok(Response::Body(file, last_modified, validators))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn parts(u: &str) -> (bool, String, u16, String) {
        let u = Url::parse(u).unwrap();
        (u.https, u.host, u.port, u.path)
    }

    #[test]
    fn urls() {
        assert_eq!(
            parts("http://127.0.0.1:8080/a/b?x"),
            (false, "127.0.0.1".into(), 8080, "/a/b?x".into())
        );
        assert_eq!(
            parts("http://example.com"),
            (false, "example.com".into(), 80, "/".into())
        );
        assert_eq!(
            parts("https://example.com?q#frag"),
            (true, "example.com".into(), 443, "/?q".into())
        );
        assert_eq!(
            parts("https://user:pw@[::1]:8443/f#x"),
            (true, "::1".into(), 8443, "/f".into())
        );
        assert!(Url::parse("ftp://x/y").is_err());
        assert!(Url::parse("https:///y").is_err());
        assert!(Url::parse("https://h:99999/").is_err());
        assert!(Url::parse("https://h/a b").is_err());
        assert_eq!(
            url_basename("http://example.com/foobar").as_deref(),
            Some("foobar")
        );
        assert_eq!(
            url_basename("https://example.com/d/f.tgz?v=1").as_deref(),
            Some("f.tgz")
        );
        assert_eq!(url_basename("http://example.com/"), None);
        assert_eq!(
            Url::parse("https://[::1]:443/x").unwrap().to_string_url(),
            "https://[::1]/x"
        );
    }

    #[test]
    fn redirects_resolve() {
        let base = Url::parse("https://h:8443/a/b/c?q").unwrap();
        let j = |l: &str| base.join(l).unwrap().to_string_url();
        assert_eq!(j("/x"), "https://h:8443/x");
        assert_eq!(j("d"), "https://h:8443/a/b/d");
        assert_eq!(j("?z"), "https://h:8443/a/b/c?z");
        assert_eq!(j("//other/p"), "https://other/p");
        assert_eq!(j("http://plain/p"), "http://plain/p");
        assert!(base.join("ftp://x/").is_err());
    }

    #[test]
    fn cert_dir_must_hold_certificates() {
        let d = tempfile::tempdir().unwrap();
        std::fs::write(d.path().join("bad.crt"), "not a certificate\n").unwrap();
        let e = client_config(&TlsOptions {
            cert_dir: Some(d.path().to_path_buf()),
            verify: true,
        })
        .unwrap_err();
        assert!(e.contains("bad.crt"), "{e}");
        let e = client_config(&TlsOptions {
            cert_dir: Some(d.path().join("missing")),
            verify: true,
        })
        .unwrap_err();
        assert!(e.contains("--cert-dir"), "{e}");
    }
}
