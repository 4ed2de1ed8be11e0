//! Trusting the control plane: the CA pin (docs/protocol.md, "Transport and trust").
//!
//! The agent is given the hex SHA-256 of the Kiln CA certificate's DER bytes. Without a CA
//! file it fetches `GET /ca.pem` once without verifying the connection, accepts the
//! certificate only if its SHA-256 equals the pin, keeps it, and from then on verifies every
//! connection against that CA alone (no web PKI roots).

use std::path::Path;

use anyhow::{Context, Result, bail};
use kiln_oci::digest::Digest;
use kiln_oci::http::{HttpClientBuilder, Trust};
use rustls::pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject as _;

/// Lower-case hex SHA-256 of `der`.
pub fn sha256_hex(der: &[u8]) -> String {
    Digest::of(der).hex().to_owned()
}

/// The first certificate of a PEM text, as DER.
pub fn first_cert(pem: &[u8]) -> Result<CertificateDer<'static>> {
    CertificateDer::pem_slice_iter(pem)
        .next()
        .context("no PEM certificate in it")?
        .context("unreadable PEM certificate")
}

/// Checks that `pem`'s first certificate has SHA-256 `pin` (hex); `what` names the source.
pub fn check_pin(pem: &[u8], pin: &str, what: &str) -> Result<CertificateDer<'static>> {
    let der = first_cert(pem).with_context(|| format!("reading the CA certificate from {what}"))?;
    let got = sha256_hex(&der);
    if got != pin {
        bail!(
            "the CA certificate from {what} has SHA-256 {got}, but kiln.ca pins {pin}: refusing \
             to trust it (check the pin printed by kiln-server / GET /api/info)"
        );
    }
    Ok(der)
}

/// TLS config trusting only `ca`.
pub fn pinned_tls(ca: CertificateDer<'static>) -> Result<rustls::ClientConfig> {
    Trust::Pinned(ca).tls_config("the Kiln control plane")
}

/// The TLS config for `server`: the CA in `ca_file` when it matches the pin, else `/ca.pem`
/// fetched from the server, checked against the pin and saved to `ca_file`. `None` for an
/// `http://` server (labs).
pub fn establish(
    server: &str,
    pin: Option<&str>,
    ca_file: &Path,
) -> Result<Option<rustls::ClientConfig>> {
    if server.starts_with("http://") {
        return Ok(None);
    }
    let pin = pin.with_context(|| {
        format!(
            "{server} is https but no CA pin is set: add kiln.ca=sha256:<pin printed by \
             kiln-server> (or ca_pin in the agent config)"
        )
    })?;
    if let Ok(pem) = std::fs::read(ca_file)
        && let Ok(der) = check_pin(&pem, pin, &ca_file.display().to_string())
    {
        return pinned_tls(der).map(Some);
    }
    let url = format!("{server}/ca.pem");
    // Unverified: the certificate fetched is accepted only if it matches the pin.
    let agent = HttpClientBuilder::new(&Trust::Unverified, server)?
        .connect_timeout(std::time::Duration::from_secs(15))
        .timeout(std::time::Duration::from_secs(30))
        .build();
    let mut pem = Vec::new();
    let mut last = String::new();
    for attempt in 1..=5u32 {
        match agent.get(&url).call() {
            Ok(resp) => {
                use std::io::Read as _;
                resp.into_reader()
                    .take(1 << 20)
                    .read_to_end(&mut pem)
                    .with_context(|| format!("reading {url}"))?;
                break;
            }
            Err(ureq::Error::Status(code, _)) => bail!("fetching {url}: HTTP {code}"),
            Err(ureq::Error::Transport(t)) => {
                last = t.to_string();
                std::thread::sleep(std::time::Duration::from_secs(u64::from(attempt)));
            }
        }
    }
    if pem.is_empty() {
        bail!("fetching {url}: {last}");
    }
    let der = check_pin(&pem, pin, &url)?;
    if let Some(dir) = ca_file.parent() {
        let _ = std::fs::create_dir_all(dir);
    }
    std::fs::write(ca_file, &pem).with_context(|| format!("saving {}", ca_file.display()))?;
    pinned_tls(der).map(Some)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A PEM block around arbitrary bytes (the pin arithmetic does not parse the DER).
    fn pem(der: &[u8]) -> String {
        use base64::Engine as _;
        let b64 = base64::engine::general_purpose::STANDARD.encode(der);
        format!("-----BEGIN CERTIFICATE-----\n{b64}\n-----END CERTIFICATE-----\n")
    }

    #[test]
    fn pin_check() {
        let text = pem(b"not really DER, but bytes with a digest");
        let der = first_cert(text.as_bytes()).unwrap();
        let pin = sha256_hex(&der);
        assert_eq!(pin.len(), 64);
        check_pin(text.as_bytes(), &pin, "test").unwrap();
        let wrong = "0".repeat(64);
        let e = format!(
            "{:#}",
            check_pin(text.as_bytes(), &wrong, "https://cp/ca.pem").unwrap_err()
        );
        assert!(
            e.contains("https://cp/ca.pem") && e.contains(&pin) && e.contains(&wrong),
            "{e}"
        );
        let e = format!("{:#}", check_pin(b"hello", &pin, "x").unwrap_err());
        assert!(e.contains("no PEM certificate"), "{e}");
    }

    #[test]
    fn https_needs_a_pin_http_needs_nothing() {
        let t = tempfile::tempdir().unwrap();
        let ca = t.path().join("ca.pem");
        assert!(establish("http://cp:8080", None, &ca).unwrap().is_none());
        let e = format!("{:#}", establish("https://cp:8443", None, &ca).unwrap_err());
        assert!(e.contains("kiln.ca=sha256:"), "{e}");
    }
}
