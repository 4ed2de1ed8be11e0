//! HTTPS client for the control plane API, used by `kilnctl` and the load benchmark.
//!
//! The server certificate is verified against the Kiln CA only: either a CA file, or a
//! SHA-256 pin, in which case `/ca.pem` is fetched once without verification and accepted
//! only if its hash matches the pin (the same scheme install.sh and the agent use).

use anyhow::{Context, Result, bail};
use reqwest::{Certificate, Method, StatusCode};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

/// How to trust the server.
#[derive(Debug, Clone)]
pub enum Trust {
    /// PEM text of the CA certificate.
    CaPem(String),
    /// Hex SHA-256 of the CA certificate DER.
    Pin(String),
}

/// An API error answer.
#[derive(Debug, thiserror::Error)]
#[error("{method} {path}: {status}: {message}")]
pub struct ApiFailure {
    pub method: Method,
    pub path: String,
    pub status: StatusCode,
    pub message: String,
}

/// A client bound to one server and (optionally) one credential.
#[derive(Debug, Clone)]
pub struct Client {
    http: reqwest::Client,
    base: String,
    bearer: Option<String>,
}

/// The one certificate of a fetched `ca.pem` whose SHA-256 is `pin`. A file holding any
/// other PEM block is refused: a man in the middle could append its own CA (as a
/// `CERTIFICATE` or a `TRUSTED CERTIFICATE`) next to the real one.
pub fn pinned_ca(pem: &str, pin: &str) -> Result<Vec<u8>> {
    let blocks = pem.matches("-----BEGIN ").count();
    if blocks != 1 {
        bail!("holds {blocks} PEM blocks, not exactly one CA certificate; refusing to talk to it");
    }
    let der = rustls_pemfile::certs(&mut pem.as_bytes())
        .next()
        .context("holds no certificate")?
        .context("holds a damaged certificate")?;
    let got = crate::tls::pin(&der);
    let want = pin.trim().trim_start_matches("sha256:");
    if !got.eq_ignore_ascii_case(want) {
        bail!("the CA has SHA-256 {got}, but the pin is {want}; refusing to talk to it");
    }
    Ok(der.to_vec())
}

impl Client {
    /// Connects trust: fetches and checks the CA when given a pin.
    pub async fn new(base: &str, trust: Trust, bearer: Option<String>) -> Result<Client> {
        let base = base.trim_end_matches('/').to_string();
        let cert = match trust {
            Trust::CaPem(p) => {
                Certificate::from_pem(p.as_bytes()).context("parsing the CA certificate")?
            }
            Trust::Pin(pin) => {
                let insecure = reqwest::Client::builder()
                    .use_rustls_tls()
                    .danger_accept_invalid_certs(true)
                    .build()
                    .context("building HTTP client")?;
                let pem = insecure
                    .get(format!("{base}/ca.pem"))
                    .send()
                    .await
                    .with_context(|| format!("fetching {base}/ca.pem"))?
                    .error_for_status()?
                    .text()
                    .await?;
                let der = pinned_ca(&pem, &pin).with_context(|| format!("{base}/ca.pem"))?;
                // Only the pinned certificate is trusted, whatever else the file held.
                Certificate::from_der(&der).context("parsing the CA certificate")?
            }
        };
        let http = reqwest::Client::builder()
            .use_rustls_tls()
            .tls_built_in_root_certs(false)
            .add_root_certificate(cert)
            .pool_max_idle_per_host(4)
            .build()
            .context("building HTTP client")?;
        Ok(Client { http, base, bearer })
    }

    pub fn with_bearer(&self, bearer: String) -> Client {
        Client {
            http: self.http.clone(),
            base: self.base.clone(),
            bearer: Some(bearer),
        }
    }

    pub fn base(&self) -> &str {
        &self.base
    }

    /// Sends a request and returns the JSON answer (`Value::Null` for an empty body).
    pub async fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<&(impl Serialize + ?Sized)>,
    ) -> Result<Value> {
        let mut req = self
            .http
            .request(method.clone(), format!("{}{path}", self.base));
        req = req.header(
            kiln_protocol::VERSION_HEADER,
            kiln_protocol::PROTOCOL_VERSION.to_string(),
        );
        if let Some(b) = &self.bearer {
            req = req.bearer_auth(b);
        }
        if let Some(body) = body {
            req = req.json(body);
        }
        let resp = req
            .send()
            .await
            .with_context(|| format!("{method} {}{path}", self.base))?;
        let status = resp.status();
        let bytes = resp
            .bytes()
            .await
            .with_context(|| format!("reading the answer to {method} {path}"))?;
        if !status.is_success() {
            return Err(failure(method, path, status, &bytes).into());
        }
        if bytes.is_empty() {
            return Ok(Value::Null);
        }
        serde_json::from_slice(&bytes)
            .with_context(|| format!("decoding the answer to {method} {path}"))
    }

    /// Like [`Client::call`], decoding into a type.
    pub async fn call_as<T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        body: Option<&(impl Serialize + ?Sized)>,
    ) -> Result<T> {
        let v = self.call(method.clone(), path, body).await?;
        serde_json::from_value(v).with_context(|| format!("decoding the answer to {method} {path}"))
    }

    pub async fn get(&self, path: &str) -> Result<Value> {
        self.call(Method::GET, path, None::<&Value>).await
    }

    /// `GET path`, decoded into a type.
    pub async fn get_as<T: DeserializeOwned>(&self, path: &str) -> Result<T> {
        self.call_as(Method::GET, path, None::<&Value>).await
    }

    /// `DELETE path`, ignoring any answer body.
    pub async fn delete(&self, path: &str) -> Result<()> {
        self.call(Method::DELETE, path, None::<&Value>).await?;
        Ok(())
    }

    /// Downloads `path` into the file `dest`: written next to it, renamed when complete.
    /// Returns the number of bytes.
    pub async fn download(&self, path: &str, dest: &std::path::Path) -> Result<u64> {
        use tokio::io::AsyncWriteExt;
        let mut req = self.http.get(format!("{}{path}", self.base));
        if let Some(b) = &self.bearer {
            req = req.bearer_auth(b);
        }
        let mut resp = req
            .send()
            .await
            .with_context(|| format!("GET {}{path}", self.base))?;
        let status = resp.status();
        if !status.is_success() {
            let bytes = resp.bytes().await.unwrap_or_default();
            return Err(failure(Method::GET, path, status, &bytes).into());
        }
        let name = dest
            .file_name()
            .with_context(|| format!("{} is not a file name", dest.display()))?;
        let mut part_name = name.to_os_string();
        part_name.push(".part");
        let part = dest.with_file_name(part_name);
        // Read before the body: reqwest's value shrinks as the body is consumed.
        let announced = resp.content_length();
        let written = async {
            let mut f = tokio::fs::File::create(&part)
                .await
                .with_context(|| format!("creating {}", part.display()))?;
            let mut n = 0u64;
            while let Some(chunk) = resp
                .chunk()
                .await
                .with_context(|| format!("downloading {path}"))?
            {
                f.write_all(&chunk)
                    .await
                    .with_context(|| format!("writing {}", part.display()))?;
                n += chunk.len() as u64;
            }
            f.sync_all().await?;
            if let Some(want) = announced
                && want != n
            {
                bail!("{path}: got {n} bytes, the server announced {want}");
            }
            Ok(n)
        }
        .await;
        let n = match written {
            Ok(n) => n,
            Err(e) => {
                let _ = tokio::fs::remove_file(&part).await;
                return Err(e);
            }
        };
        tokio::fs::rename(&part, dest)
            .await
            .with_context(|| format!("renaming {} to {}", part.display(), dest.display()))?;
        Ok(n)
    }

    /// Downloads a text resource (e.g. `/metrics`).
    pub async fn text(&self, path: &str) -> Result<String> {
        let mut req = self.http.get(format!("{}{path}", self.base));
        if let Some(b) = &self.bearer {
            req = req.bearer_auth(b);
        }
        let resp = req
            .send()
            .await
            .with_context(|| format!("GET {}{path}", self.base))?;
        let status = resp.status();
        let bytes = resp.bytes().await?;
        if !status.is_success() {
            return Err(failure(Method::GET, path, status, &bytes).into());
        }
        Ok(String::from_utf8_lossy(&bytes).into_owned())
    }
}

/// The error of a non-2xx answer, with the server's message.
fn failure(method: Method, path: &str, status: StatusCode, body: &[u8]) -> ApiFailure {
    let message = serde_json::from_slice::<kiln_protocol::ErrorBody>(body)
        .map(|e| e.error)
        .unwrap_or_else(|_| String::from_utf8_lossy(body).into_owned());
    ApiFailure {
        method,
        path: path.to_string(),
        status,
        message,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_single_pinned_certificate_is_accepted() {
        let dir = tempfile::tempdir().unwrap();
        let real =
            crate::tls::ensure_generated(&dir.path().join("a"), &["localhost".into()]).unwrap();
        let evil =
            crate::tls::ensure_generated(&dir.path().join("b"), &["localhost".into()]).unwrap();
        let real = crate::tls::load(&real).unwrap();
        let evil_pem = std::fs::read_to_string(&evil.ca_cert).unwrap();
        assert!(pinned_ca(&real.ca_pem, &real.ca_sha256).is_ok());
        let trusted = evil_pem.replace("CERTIFICATE", "TRUSTED CERTIFICATE");
        for (pem, why) in [
            (format!("{}{evil_pem}", real.ca_pem), "PEM blocks"),
            (format!("{}{trusted}", real.ca_pem), "PEM blocks"),
            (evil_pem.clone(), "but the pin is"),
            (String::new(), "PEM blocks"),
        ] {
            let e = pinned_ca(&pem, &real.ca_sha256).unwrap_err();
            assert!(format!("{e:#}").contains(why), "{e:#}");
        }
    }
}
