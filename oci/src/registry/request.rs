//! Sending one request: a replayable [`Body`], the cached Authorization header, one
//! re-authentication on 401, retries on connection errors, 408, 429 and 5xx.

use std::io::Read;

use anyhow::{Context, Result, anyhow, bail};

use super::Client;
use super::auth::parse_challenge;
use super::errors::registry_error_text;
use super::hosts::Endpoint;
use super::retry::{Failure, backoff, retry_after};

/// A request body that can be sent again on retry.
pub enum Body<'a> {
    /// No body.
    Empty,
    /// Bytes in memory (manifests).
    Bytes(&'a [u8]),
    /// A file streamed from disk (blobs), reopened for each attempt.
    File(&'a std::path::Path),
    /// `len` bytes of a file from `offset` (one chunk of a chunked upload).
    FileRange(&'a std::path::Path, u64, u64),
}

/// Sends `req` with `body` (a file is reopened for each attempt).
fn send_body(req: ureq::Request, body: &Body<'_>) -> Result<Result<ureq::Response, ureq::Error>> {
    Ok(match body {
        Body::Empty => req.call(),
        Body::Bytes(b) => req.send_bytes(b),
        Body::File(p) => {
            let f = std::fs::File::open(p).with_context(|| format!("opening {}", p.display()))?;
            let len = f.metadata()?.len();
            req.set("Content-Length", &len.to_string())
                .send(std::io::BufReader::with_capacity(1 << 20, f))
        }
        Body::FileRange(p, offset, len) => {
            use std::io::Seek as _;
            let mut f =
                std::fs::File::open(p).with_context(|| format!("opening {}", p.display()))?;
            f.seek(std::io::SeekFrom::Start(*offset))
                .with_context(|| format!("seeking {} to {offset}", p.display()))?;
            req.set("Content-Length", &len.to_string())
                .send(std::io::BufReader::with_capacity(1 << 20, f.take(*len)))
        }
    })
}

impl Client {
    /// Sends a request with auth and retries. `scope` is the token scope
    /// (`repository:NAME:pull`). Returns any 2xx response; other statuses are errors except
    /// those listed in `pass`, which are returned to the caller.
    #[allow(clippy::too_many_arguments)]
    pub fn send(
        &self,
        ep: &Endpoint,
        scope: &str,
        method: &str,
        url: &str,
        headers: &[(&str, &str)],
        body: Body<'_>,
        pass: &[u16],
    ) -> Result<ureq::Response> {
        let agent = self.agent(ep)?;
        let policy = self.inner.config.retry.clone();
        let key = Self::auth_key(ep, scope);
        let mut reauthed = false;
        let mut attempt = 0;
        loop {
            attempt += 1;
            let mut req = agent.request(method, url);
            for (k, v) in headers {
                req = req.set(k, v);
            }
            // ureq sends proxy credentials on CONNECT only; absolute-form requests to a
            // plain-HTTP registry through the proxy carry them here.
            if ep.scheme == "http"
                && let Some(auth) = self
                    .inner
                    .config
                    .proxy
                    .proxy_for(ep.scheme, &ep.host)
                    .and_then(crate::proxy::authorization)
            {
                req = req.set("Proxy-Authorization", &auth);
            }
            let had_auth = {
                let auth = self.inner.auth.lock().expect("auth lock");
                match auth.get(&key) {
                    Some(a) => {
                        req = req.set("Authorization", a.expose());
                        true
                    }
                    None => false,
                }
            };
            let result = send_body(req, &body)?;
            let failure = match result {
                Ok(resp) => return Ok(resp),
                Err(ureq::Error::Status(code, resp)) if pass.contains(&code) => return Ok(resp),
                Err(ureq::Error::Status(401, resp)) => {
                    let challenge = resp.header("www-authenticate").and_then(parse_challenge);
                    match challenge {
                        Some(c) if !reauthed => {
                            // First challenge, or the cached token expired mid-pull.
                            let header = self.authenticate(ep, &c, scope)?;
                            self.inner
                                .auth
                                .lock()
                                .expect("auth lock")
                                .insert(key.clone(), header);
                            reauthed = true;
                            attempt -= 1;
                            continue;
                        }
                        _ => Failure::Fatal(anyhow!(
                            "{method} {url}: HTTP 401 unauthorized{}: {}",
                            if had_auth {
                                " (credentials or token rejected)"
                            } else {
                                ""
                            },
                            registry_error_text(resp)
                        )),
                    }
                }
                Err(ureq::Error::Status(code, resp))
                    if code == 408 || code == 429 || code >= 500 =>
                {
                    Failure::Retryable(format!("HTTP {code}"), retry_after(&resp))
                }
                Err(ureq::Error::Status(code, resp)) => Failure::Fatal(anyhow!(
                    "{method} {url}: HTTP {code}: {}",
                    registry_error_text(resp)
                )),
                Err(ureq::Error::Transport(t)) => Failure::Retryable(t.to_string(), None),
            };
            match failure {
                Failure::Fatal(e) => return Err(e),
                Failure::Retryable(why, ra) => {
                    if attempt >= policy.max_attempts {
                        bail!("{method} {url}: gave up after {attempt} attempts: {why}");
                    }
                    std::thread::sleep(backoff(&policy, attempt, ra));
                }
            }
        }
    }
}
