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
/// headers on redirects, no timeouts).
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

    /// The agent.
    pub fn build(self) -> ureq::Agent {
        let mut b = ureq::AgentBuilder::new();
        if let Some(tls) = self.tls {
            b = b.tls_config(Arc::new(tls));
        }
        if let Some(p) = self.proxy {
            b = b.proxy(p);
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
        if let Some(n) = self.redirects {
            b = b.redirects(n);
        }
        if self.redirect_auth_same_host {
            b = b.redirect_auth_headers(ureq::RedirectAuthHeaders::SameHost);
        }
        if let Some(ua) = &self.user_agent {
            b = b.user_agent(ua);
        }
        b.build()
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
}
