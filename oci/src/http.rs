//! The one HTTP/TLS client builder of the workspace: ureq 2 over rustls/ring, used by the
//! registry client, the agent's control-plane client, the installer download and the CA-pin
//! bootstrap fetch.
//!
//! - [`Trust`] says which server certificates are accepted: the web PKI roots (plus the CA
//!   certificates of a PEM file), one pinned CA alone, or any certificate (signatures still
//!   checked) for the one fetch whose content is then checked against a pin.
//! - [`HttpClientBuilder`] adds the proxy, timeouts, redirect policy and user agent; what is
//!   not set keeps ureq's default.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::{DigitallySignedStruct, SignatureScheme};
use rustls_pki_types::pem::PemObject as _;
use rustls_pki_types::{CertificateDer, ServerName, UnixTime};

/// Which server certificates a client accepts.
#[derive(Clone, Debug)]
pub enum Trust {
    /// The web PKI roots, plus every CA certificate of this PEM file when given.
    WebPki {
        /// PEM file of extra CA certificates.
        extra_ca: Option<PathBuf>,
    },
    /// Only this CA (no web PKI roots).
    Pinned(CertificateDer<'static>),
    /// Any certificate (handshake signatures still checked): only for fetching a CA
    /// certificate whose bytes are then checked against a pin.
    Unverified,
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// The CA certificates of a PEM file; `what` names whose file it is in errors.
fn read_ca_file(path: &std::path::Path, what: &str) -> Result<Vec<CertificateDer<'static>>> {
    let certs: Vec<_> = CertificateDer::pem_file_iter(path)
        .with_context(|| format!("reading CA file {} for {what}", path.display()))?
        .collect::<Result<_, _>>()
        .with_context(|| format!("parsing CA file {} for {what}", path.display()))?;
    if certs.is_empty() {
        bail!(
            "CA file {} for {what} holds no PEM certificate",
            path.display()
        );
    }
    Ok(certs)
}

impl Trust {
    /// The rustls configuration; `what` names the server(s) in errors (`registry.lab`).
    pub fn tls_config(&self, what: &str) -> Result<rustls::ClientConfig> {
        let p = provider();
        let builder = rustls::ClientConfig::builder_with_provider(p.clone())
            .with_safe_default_protocol_versions()
            .context("TLS protocol versions")?;
        let roots = match self {
            Trust::Unverified => {
                return Ok(builder
                    .dangerous()
                    .with_custom_certificate_verifier(Arc::new(Unverified(p)))
                    .with_no_client_auth());
            }
            Trust::WebPki { extra_ca } => {
                let mut roots = rustls::RootCertStore {
                    roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
                };
                if let Some(path) = extra_ca {
                    for c in read_ca_file(path, what)? {
                        roots
                            .add(c)
                            .with_context(|| format!("adding a CA from {}", path.display()))?;
                    }
                }
                roots
            }
            Trust::Pinned(ca) => {
                let mut roots = rustls::RootCertStore::empty();
                roots
                    .add(ca.clone())
                    .with_context(|| format!("adding the pinned CA for {what}"))?;
                roots
            }
        };
        Ok(builder.with_root_certificates(roots).with_no_client_auth())
    }
}

/// Accepts any server certificate (signatures still checked); see [`Trust::Unverified`].
#[derive(Debug)]
struct Unverified(Arc<CryptoProvider>);

impl ServerCertVerifier for Unverified {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
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
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// Builds a `ureq::Agent`. Unset settings keep ureq's defaults (redirects: 5, no auth
/// headers on redirects, no timeouts); a redirect from HTTPS to HTTP is always refused.
#[derive(Debug)]
pub struct HttpClientBuilder {
    tls: Option<rustls::ClientConfig>,
    proxy: Option<ureq::Proxy>,
    connect_timeout: Option<Duration>,
    read_timeout: Option<Duration>,
    write_timeout: Option<Duration>,
    timeout: Option<Duration>,
    redirects: Option<u32>,
    redirect_auth_same_host: bool,
    user_agent: Option<String>,
}

impl HttpClientBuilder {
    /// A builder trusting `trust`; `what` names the server(s) in errors.
    pub fn new(trust: &Trust, what: &str) -> Result<Self> {
        Ok(Self::with_tls(Some(trust.tls_config(what)?)))
    }

    /// A builder with a ready TLS configuration (one made by [`Trust::tls_config`]); `None`
    /// keeps ureq's own (web PKI roots), for a client of an `http://` server.
    pub fn with_tls(tls: Option<rustls::ClientConfig>) -> Self {
        Self {
            tls,
            proxy: None,
            connect_timeout: None,
            read_timeout: None,
            write_timeout: None,
            timeout: None,
            redirects: None,
            redirect_auth_same_host: false,
            user_agent: None,
        }
    }

    /// Sends every request through `proxy`.
    pub fn proxy(mut self, proxy: ureq::Proxy) -> Self {
        self.proxy = Some(proxy);
        self
    }

    /// Connect timeout.
    pub fn connect_timeout(mut self, d: Duration) -> Self {
        self.connect_timeout = Some(d);
        self
    }

    /// Longest wait for a byte.
    pub fn read_timeout(mut self, d: Duration) -> Self {
        self.read_timeout = Some(d);
        self
    }

    /// Longest wait to write a chunk.
    pub fn write_timeout(mut self, d: Duration) -> Self {
        self.write_timeout = Some(d);
        self
    }

    /// Longest time for a whole request, body included.
    pub fn timeout(mut self, d: Duration) -> Self {
        self.timeout = Some(d);
        self
    }

    /// Follows at most `n` redirects; `same_host_auth` keeps the Authorization header on
    /// redirects to the same host (registries), else it is dropped.
    pub fn redirects(mut self, n: u32, same_host_auth: bool) -> Self {
        self.redirects = Some(n);
        self.redirect_auth_same_host = same_host_auth;
        self
    }

    /// The `User-Agent` header.
    pub fn user_agent(mut self, ua: &str) -> Self {
        self.user_agent = Some(ua.to_owned());
        self
    }

    /// The agent. Redirects are followed by [`FollowRedirects`] (ureq's own following is
    /// off): a redirect from `https` to `http` is refused.
    pub fn build(self) -> ureq::Agent {
        let tls = self.tls.clone().map(Arc::new);
        let hops = self.agent_builder(tls.clone()).build();
        self.agent_builder(tls)
            .middleware(FollowRedirects {
                hops,
                max: self.redirects.unwrap_or(5),
                same_host_auth: self.redirect_auth_same_host,
            })
            .build()
    }

    /// A ureq builder with every setting but redirects (none followed).
    fn agent_builder(&self, tls: Option<Arc<rustls::ClientConfig>>) -> ureq::AgentBuilder {
        let mut b = ureq::AgentBuilder::new().redirects(0);
        if let Some(tls) = tls {
            b = b.tls_config(tls);
        }
        if let Some(p) = &self.proxy {
            b = b.proxy(p.clone());
        }
        if let Some(d) = self.connect_timeout {
            b = b.timeout_connect(d);
        }
        if let Some(d) = self.read_timeout {
            b = b.timeout_read(d);
        }
        if let Some(d) = self.write_timeout {
            b = b.timeout_write(d);
        }
        if let Some(d) = self.timeout {
            b = b.timeout(d);
        }
        if let Some(ua) = &self.user_agent {
            b = b.user_agent(ua);
        }
        b
    }
}

/// Follows redirects as ureq does (301/302/303 turn a non-GET/HEAD request into a GET;
/// 307/308 only for GET/HEAD), but refuses a downgrade from `https` to `http`, and keeps the
/// `Authorization` header only on a redirect to the same host when `same_host_auth`.
struct FollowRedirects {
    /// An agent with the same settings and no redirect following, for the later hops.
    hops: ureq::Agent,
    max: u32,
    same_host_auth: bool,
}

impl ureq::Middleware for FollowRedirects {
    fn handle(
        &self,
        req: ureq::Request,
        next: ureq::MiddlewareNext,
    ) -> Result<ureq::Response, ureq::Error> {
        let mut prev = req.clone();
        let mut resp = next.handle(req)?;
        for _ in 0..self.max {
            let Some(next_req) = self.redirect(&prev, &resp)? else {
                return Ok(resp);
            };
            prev = next_req.clone();
            resp = next_req.call()?;
        }
        if self.max > 0 && (300..400).contains(&resp.status()) {
            return Err(
                io_error(format!("{}: more than {} redirects", prev.url(), self.max)).into(),
            );
        }
        Ok(resp)
    }
}

fn io_error(msg: String) -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::PermissionDenied, msg)
}

impl FollowRedirects {
    /// The request a redirect response asks for, if it is one to follow.
    fn redirect(
        &self,
        prev: &ureq::Request,
        resp: &ureq::Response,
    ) -> Result<Option<ureq::Request>, std::io::Error> {
        let Some(location) = resp.header("location") else {
            return Ok(None);
        };
        let method = match (resp.status(), prev.method()) {
            (301..=303, "GET" | "HEAD") | (307 | 308, "GET" | "HEAD") => prev.method(),
            (301..=303, _) => "GET",
            _ => return Ok(None),
        };
        let from = url::Url::parse(prev.url()).map_err(|e| io_error(e.to_string()))?;
        let to = from
            .join(location)
            .map_err(|e| io_error(format!("{}: bad redirect {location:?}: {e}", prev.url())))?;
        if from.scheme() == "https" && to.scheme() != "https" {
            return Err(io_error(format!(
                "refusing the redirect from {} to {to}: it downgrades HTTPS to plain HTTP",
                prev.url()
            )));
        }
        let keep_auth =
            self.same_host_auth && to.host_str() == from.host_str() && to.port() == from.port();
        let mut req = self.hops.request_url(method, &to);
        for name in prev.header_names() {
            let drop = name.eq_ignore_ascii_case("content-length")
                || name.eq_ignore_ascii_case("cookie")
                || (name.eq_ignore_ascii_case("authorization") && !keep_auth);
            if drop {
                continue;
            }
            for v in prev.all(&name) {
                req = req.set(&name, v);
            }
        }
        Ok(Some(req))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ca_files_are_checked() {
        let t = tempfile::tempdir().unwrap();
        let empty = t.path().join("empty.pem");
        std::fs::write(&empty, "no certificate here\n").unwrap();
        let trust = Trust::WebPki {
            extra_ca: Some(empty.clone()),
        };
        let e = format!("{:#}", trust.tls_config("r.lab").unwrap_err());
        assert!(
            e.contains("holds no PEM certificate") && e.contains("r.lab"),
            "{e}"
        );
        let missing = Trust::WebPki {
            extra_ca: Some(t.path().join("missing.pem")),
        };
        let e = format!("{:#}", missing.tls_config("r.lab").unwrap_err());
        assert!(e.contains("reading CA file"), "{e}");
        for ok in [Trust::WebPki { extra_ca: None }, Trust::Unverified] {
            HttpClientBuilder::new(&ok, "x").unwrap().build();
        }
    }

    /// An HTTPS server on 127.0.0.1 (certificate from `pki`) answering `/ok` with 200 and
    /// anything else with `302 Location: <location>`; returns its port.
    fn redirecting_https(pki: &kiln_testsupport::pki::TestPki, location: String) -> u16 {
        use rustls_pki_types::PrivateKeyDer;
        use std::io::{BufRead, BufReader, Write};
        let certs: Vec<_> = CertificateDer::pem_file_iter(&pki.cert)
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        let key = PrivateKeyDer::from_pem_file(&pki.key).unwrap();
        let config = Arc::new(
            rustls::ServerConfig::builder_with_provider(provider())
                .with_safe_default_protocol_versions()
                .unwrap()
                .with_no_client_auth()
                .with_single_cert(certs, key)
                .unwrap(),
        );
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        std::thread::spawn(move || {
            for tcp in listener.incoming().flatten() {
                let conn = rustls::ServerConnection::new(config.clone()).unwrap();
                let mut tls = BufReader::new(rustls::StreamOwned::new(conn, tcp));
                let mut line = String::new();
                if tls.read_line(&mut line).is_err() {
                    continue;
                }
                loop {
                    let mut h = String::new();
                    if tls.read_line(&mut h).unwrap_or(0) == 0 || h.trim().is_empty() {
                        break;
                    }
                }
                let reply = if line.starts_with("GET /ok ") {
                    "HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok".into()
                } else {
                    format!(
                        "HTTP/1.1 302 Found\r\nLocation: {location}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
                    )
                };
                let w = tls.get_mut();
                let _ = w.write_all(reply.as_bytes());
                let _ = w.flush();
                w.conn.send_close_notify();
                let _ = w.flush();
            }
        });
        port
    }

    #[test]
    fn https_to_http_redirects_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let pki = kiln_testsupport::pki::make_pki(dir.path());
        // The plain-HTTP target counts the connections it gets.
        let plain = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let plain_port = plain.local_addr().unwrap().port();
        plain.set_nonblocking(true).unwrap();
        let trust = Trust::WebPki {
            extra_ca: Some(pki.ca.clone()),
        };
        let down = redirecting_https(&pki, format!("http://127.0.0.1:{plain_port}/kernel"));
        // A read timeout, so a client that follows the downgrade fails instead of waiting.
        let t = || {
            HttpClientBuilder::new(&trust, "t")
                .unwrap()
                .read_timeout(Duration::from_secs(3))
        };
        for agent in [t().build(), t().redirects(10, true).build()] {
            let url = format!("https://127.0.0.1:{down}/installer");
            let e = agent.get(&url).call().unwrap_err().to_string();
            assert!(e.contains("downgrades HTTPS to plain HTTP"), "{e}");
            assert!(e.contains(&format!("127.0.0.1:{plain_port}/kernel")), "{e}");
        }
        assert!(
            plain.accept().is_err(),
            "the plain-HTTP target was contacted"
        );
        // HTTPS to HTTPS is still followed.
        let up = redirecting_https(&pki, "/ok".into());
        let agent = HttpClientBuilder::new(&trust, "t").unwrap().build();
        let body = agent
            .get(&format!("https://127.0.0.1:{up}/installer"))
            .call()
            .unwrap()
            .into_string()
            .unwrap();
        assert_eq!(body, "ok");
    }
}
