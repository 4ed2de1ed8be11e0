//! TLS: the server certificate and the CA that agents pin by SHA-256.
//!
//! On first start, when the operator gave no certificate, a CA and a server certificate
//! signed by it are generated into `<data>/tls/` (ECDSA P-256, rcgen). The pin is the hex
//! SHA-256 of the CA certificate's DER bytes; operators who bring their own certificate pass
//! the CA too, so the pin is still defined. rustls runs with the ring provider only.

use anyhow::{Context, Result, bail};
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair,
    KeyUsagePurpose,
};
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Certificate files in use.
#[derive(Debug, Clone)]
pub struct TlsFiles {
    pub ca_cert: PathBuf,
    pub server_cert: PathBuf,
    pub server_key: PathBuf,
}

/// Loaded TLS material.
#[derive(Debug)]
pub struct TlsMaterial {
    pub config: Arc<rustls::ServerConfig>,
    /// PEM of the CA certificate (served at `/ca.pem`).
    pub ca_pem: String,
    /// Hex SHA-256 of the CA certificate DER.
    pub ca_sha256: String,
}

/// Generates the CA and server certificate into `dir` unless they exist. `names` are the DNS
/// names and IP addresses the server certificate is valid for.
pub fn ensure_generated(dir: &Path, names: &[String]) -> Result<TlsFiles> {
    let files = TlsFiles {
        ca_cert: dir.join("ca.pem"),
        server_cert: dir.join("server.pem"),
        server_key: dir.join("server.key"),
    };
    if files.ca_cert.exists() && files.server_cert.exists() && files.server_key.exists() {
        return Ok(files);
    }
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let ca_key = KeyPair::generate().context("generating CA key")?;
    let mut ca = CertificateParams::new(Vec::<String>::new()).context("CA parameters")?;
    ca.distinguished_name
        .push(DnType::CommonName, "Kiln control plane CA");
    ca.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    ca.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let now = time::OffsetDateTime::now_utc();
    ca.not_before = now - time::Duration::days(1);
    ca.not_after = now + time::Duration::days(3650);
    let not_before = ca.not_before;
    let ca_cert = ca.self_signed(&ca_key).context("self-signing CA")?;

    let server_key = KeyPair::generate().context("generating server key")?;
    let mut server = CertificateParams::new(names.to_vec())
        .with_context(|| format!("server certificate names {names:?}"))?;
    server.distinguished_name.push(
        DnType::CommonName,
        names.first().map(String::as_str).unwrap_or("kiln"),
    );
    server.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    server.not_before = not_before;
    server.not_after = now + time::Duration::days(825);
    let server_cert = server
        .signed_by(&server_key, &ca_cert, &ca_key)
        .context("signing server certificate")?;

    std::fs::write(&files.ca_cert, ca_cert.pem())
        .with_context(|| format!("writing {}", files.ca_cert.display()))?;
    crate::secrets::write_private(&dir.join("ca.key"), ca_key.serialize_pem().as_bytes())?;
    let chain = format!("{}{}", server_cert.pem(), ca_cert.pem());
    std::fs::write(&files.server_cert, chain)
        .with_context(|| format!("writing {}", files.server_cert.display()))?;
    crate::secrets::write_private(&files.server_key, server_key.serialize_pem().as_bytes())?;
    Ok(files)
}

/// Loads certificate files into a rustls server configuration.
pub fn load(files: &TlsFiles) -> Result<TlsMaterial> {
    let ca_pem = std::fs::read_to_string(&files.ca_cert)
        .with_context(|| format!("reading CA certificate {}", files.ca_cert.display()))?;
    let ca_der =
        first_cert(&ca_pem).with_context(|| format!("parsing {}", files.ca_cert.display()))?;
    let chain_pem = std::fs::read_to_string(&files.server_cert)
        .with_context(|| format!("reading server certificate {}", files.server_cert.display()))?;
    let chain: Vec<CertificateDer<'static>> = rustls_pemfile::certs(&mut chain_pem.as_bytes())
        .collect::<Result<_, _>>()
        .with_context(|| format!("parsing {}", files.server_cert.display()))?;
    if chain.is_empty() {
        bail!("{} holds no certificate", files.server_cert.display());
    }
    let key_pem = std::fs::read(&files.server_key)
        .with_context(|| format!("reading server key {}", files.server_key.display()))?;
    let key: PrivateKeyDer<'static> = rustls_pemfile::private_key(&mut key_pem.as_slice())
        .with_context(|| format!("parsing {}", files.server_key.display()))?
        .with_context(|| format!("{} holds no private key", files.server_key.display()))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .context("TLS protocol versions")?
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .context("server certificate and key do not match")?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(TlsMaterial {
        config: Arc::new(config),
        ca_sha256: pin(&ca_der),
        ca_pem,
    })
}

fn first_cert(pem: &str) -> Result<CertificateDer<'static>> {
    rustls_pemfile::certs(&mut pem.as_bytes())
        .next()
        .context("no certificate in PEM")?
        .context("bad PEM certificate")
}

/// Hex SHA-256 of a certificate's DER bytes: the pin agents check.
pub fn pin(der: &[u8]) -> String {
    hex::encode(Sha256::digest(der))
}

/// Pin of the first certificate in a PEM text.
pub fn pin_of_pem(pem: &str) -> Result<String> {
    Ok(pin(&first_cert(pem)?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generates_once_and_loads() {
        let dir = tempfile::tempdir().unwrap();
        let names = vec!["localhost".to_string(), "127.0.0.1".to_string()];
        let files = ensure_generated(dir.path(), &names).unwrap();
        let first = load(&files).unwrap();
        assert_eq!(first.ca_sha256.len(), 64);
        let files = ensure_generated(dir.path(), &names).unwrap();
        let second = load(&files).unwrap();
        assert_eq!(
            first.ca_sha256, second.ca_sha256,
            "CA must survive restarts"
        );
        assert_eq!(pin_of_pem(&second.ca_pem).unwrap(), second.ca_sha256);
    }
}
