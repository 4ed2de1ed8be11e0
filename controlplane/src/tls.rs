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
/// names and IP addresses the server certificate is valid for: when they differ from the
/// names the existing certificate was issued for (`server.names`), the server certificate is
/// issued again by the same CA, so the pin agents hold stays valid.
pub fn ensure_generated(dir: &Path, names: &[String]) -> Result<TlsFiles> {
    let files = TlsFiles {
        ca_cert: dir.join("ca.pem"),
        server_cert: dir.join("server.pem"),
        server_key: dir.join("server.key"),
    };
    let names_file = dir.join("server.names");
    let ca_key_file = dir.join("ca.key");
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    if !(files.ca_cert.exists() && ca_key_file.exists()) {
        let ca_key = KeyPair::generate().context("generating CA key")?;
        let ca_cert = ca_params()?
            .self_signed(&ca_key)
            .context("self-signing CA")?;
        std::fs::write(&files.ca_cert, ca_cert.pem())
            .with_context(|| format!("writing {}", files.ca_cert.display()))?;
        crate::secrets::write_private(&ca_key_file, ca_key.serialize_pem().as_bytes())?;
        let _ = std::fs::remove_file(&names_file);
    }
    let wanted = names.join("\n");
    let issued = std::fs::read_to_string(&names_file).ok();
    if files.server_cert.exists() && files.server_key.exists() && issued.as_deref() == Some(&wanted)
    {
        return Ok(files);
    }
    if issued.is_some() {
        tracing::warn!(
            was = issued.as_deref().unwrap_or("").replace('\n', ","),
            now = names.join(","),
            "TLS names changed: issuing the server certificate again (same CA, same pin)"
        );
    }
    issue_server_cert(dir, &files, names)?;
    std::fs::write(&names_file, wanted)
        .with_context(|| format!("writing {}", names_file.display()))?;
    Ok(files)
}

/// The generated CA's parameters (the same each time: the server certificate's issuer name
/// must match the CA certificate's subject).
fn ca_params() -> Result<CertificateParams> {
    let mut ca = CertificateParams::new(Vec::<String>::new()).context("CA parameters")?;
    ca.distinguished_name
        .push(DnType::CommonName, "Kiln control plane CA");
    ca.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    ca.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let now = time::OffsetDateTime::now_utc();
    ca.not_before = now - time::Duration::days(1);
    ca.not_after = now + time::Duration::days(3650);
    Ok(ca)
}

/// A server certificate for `names`, signed by the CA in `dir`, with the CA appended.
fn issue_server_cert(dir: &Path, files: &TlsFiles, names: &[String]) -> Result<()> {
    let ca_key_file = dir.join("ca.key");
    let ca_key_pem = std::fs::read_to_string(&ca_key_file)
        .with_context(|| format!("reading {}", ca_key_file.display()))?;
    let ca_key = KeyPair::from_pem(&ca_key_pem)
        .with_context(|| format!("parsing {}", ca_key_file.display()))?;
    let issuer = ca_params()?.self_signed(&ca_key).context("CA issuer")?;
    let ca_pem = std::fs::read_to_string(&files.ca_cert)
        .with_context(|| format!("reading {}", files.ca_cert.display()))?;
    let server_key = KeyPair::generate().context("generating server key")?;
    let mut server = CertificateParams::new(names.to_vec())
        .with_context(|| format!("server certificate names {}", names.join(", ")))?;
    server.distinguished_name.push(
        DnType::CommonName,
        names.first().map(String::as_str).unwrap_or("kiln"),
    );
    server.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    let now = time::OffsetDateTime::now_utc();
    server.not_before = now - time::Duration::days(1);
    server.not_after = now + time::Duration::days(825);
    let server_cert = server
        .signed_by(&server_key, &issuer, &ca_key)
        .context("signing server certificate")?;
    std::fs::write(&files.server_cert, format!("{}{ca_pem}", server_cert.pem()))
        .with_context(|| format!("writing {}", files.server_cert.display()))?;
    // write_private creates the file exclusively (never through a planted link).
    match std::fs::remove_file(&files.server_key) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            return Err(e).with_context(|| format!("replacing {}", files.server_key.display()));
        }
        _ => {}
    }
    crate::secrets::write_private(&files.server_key, server_key.serialize_pem().as_bytes())
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

    /// Whether the server certificate (its DER: SAN names are plain ASCII) names `name`.
    fn has_name(files: &TlsFiles, name: &str) -> bool {
        let pem = std::fs::read_to_string(&files.server_cert).unwrap();
        let leaf = rustls_pemfile::certs(&mut pem.as_bytes())
            .next()
            .unwrap()
            .unwrap();
        leaf.windows(name.len()).any(|w| w == name.as_bytes())
    }

    #[test]
    fn new_names_reissue_the_server_certificate_under_the_same_ca() {
        let dir = tempfile::tempdir().unwrap();
        let names = vec!["localhost".to_string(), "127.0.0.1".to_string()];
        let files = ensure_generated(dir.path(), &names).unwrap();
        let before = load(&files).unwrap();
        let leaf_before = std::fs::read(&files.server_cert).unwrap();
        assert!(!has_name(&files, "kiln.lab"));
        let more = vec![
            "kiln.lab".to_string(),
            "localhost".into(),
            "127.0.0.1".into(),
        ];
        let files = ensure_generated(dir.path(), &more).unwrap();
        let after = load(&files).unwrap();
        assert_eq!(before.ca_sha256, after.ca_sha256, "the pin stays");
        assert_ne!(leaf_before, std::fs::read(&files.server_cert).unwrap());
        assert!(has_name(&files, "kiln.lab"));
        // The same names again: nothing is re-issued.
        let leaf = std::fs::read(&files.server_cert).unwrap();
        ensure_generated(dir.path(), &more).unwrap();
        assert_eq!(leaf, std::fs::read(&files.server_cert).unwrap());
    }
}
