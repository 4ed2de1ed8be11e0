//! The agent protocol's calls ([`Api`]) and their HTTPS client ([`Client`]): ureq 2 with
//! rustls/ring trusting only the pinned Kiln CA, `kiln-protocol-version: 1` on every request,
//! retries with exponential backoff and jitter on connection errors, 408, 429 and 5xx.
//!
//! Errors are typed ([`CallError`]) because callers act on them: a `401` on an authenticated
//! call means "register again". Credentials, claim secrets and tokens only ever travel in
//! request headers and bodies; no error or event carries them.

use std::time::Duration;

use kiln_oci::http::HttpClientBuilder;
use kiln_oci::registry::{RetryPolicy, backoff};
use kiln_protocol::{
    AGENT_API_BASE, ClaimRequest, ClaimResponse, ErrorBody, EventAck, EventBatch, Heartbeat,
    HeartbeatResponse, OrdersResponse, PROTOCOL_VERSION, RegisterRequest, RegisterResponse,
    VERSION_HEADER,
};
use serde::Serialize;
use serde::de::DeserializeOwned;
use uuid::Uuid;

use super::config::Identity;

/// Why a call failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CallError {
    /// `401`: the credential (or token, or claim secret) was refused.
    #[error("{what}: refused (HTTP 401): {message}")]
    Unauthorized { what: String, message: String },
    /// Any other non-2xx answer after retries.
    #[error("{what}: HTTP {status}: {message}")]
    Status {
        what: String,
        status: u16,
        message: String,
    },
    /// No answer (connection refused, reset, timed out) after retries.
    #[error("{what}: control plane unreachable after {attempts} attempts: {message}")]
    Unreachable {
        what: String,
        attempts: u32,
        message: String,
    },
    /// An answer that is not the protocol's JSON.
    #[error("{what}: unexpected answer: {message}")]
    Invalid { what: String, message: String },
}

impl CallError {
    pub fn is_unauthorized(&self) -> bool {
        matches!(self, CallError::Unauthorized { .. })
    }
}

/// The agent protocol, version 1 (docs/protocol.md). [`Client`] speaks it over HTTPS; tests
/// use in-memory fakes.
pub trait Api: Send + Sync {
    fn register(&self, req: &RegisterRequest) -> Result<RegisterResponse, CallError>;
    fn claim(&self, req: &ClaimRequest) -> Result<ClaimResponse, CallError>;
    fn heartbeat(&self, id: &Identity, hb: &Heartbeat) -> Result<HeartbeatResponse, CallError>;
    /// Long-poll: answers at once when the version differs from `after`, else within `wait`.
    fn orders(
        &self,
        id: &Identity,
        after: Option<u64>,
        wait_secs: u64,
    ) -> Result<OrdersResponse, CallError>;
    fn post_events(
        &self,
        id: &Identity,
        run: Uuid,
        batch: &EventBatch,
    ) -> Result<EventAck, CallError>;
    fn ack_action(&self, id: &Identity, action: Uuid) -> Result<(), CallError>;
    /// Downloads the installer artifact `name` (`GET /artifacts/{name}`, e.g. `vmlinuz`)
    /// to `dest` over the same pinned TLS; the bytes written.
    fn download_artifact(&self, name: &str, dest: &std::path::Path) -> Result<u64, CallError> {
        Err(CallError::Invalid {
            what: format!("GET /artifacts/{name} to {}", dest.display()),
            message: "this client cannot download artifacts".into(),
        })
    }
}

/// The HTTPS client of one control plane.
#[derive(Clone)]
pub struct Client {
    base: String,
    agent: ureq::Agent,
    retry: RetryPolicy,
}

/// Longest long-poll wait the client asks for; the read timeout leaves room above it.
pub const LONG_POLL_SECS: u64 = 55;

impl Client {
    /// `server` is the base URL (`https://host:port`); `tls` the pinned config (`None` for
    /// `http://`).
    pub fn new(server: &str, tls: Option<rustls::ClientConfig>) -> Client {
        let agent = HttpClientBuilder::with_tls(tls)
            .connect_timeout(Duration::from_secs(15))
            .read_timeout(Duration::from_secs(LONG_POLL_SECS + 30))
            .write_timeout(Duration::from_secs(60))
            .user_agent(concat!("kiln-agent/", env!("CARGO_PKG_VERSION")))
            .build();
        Client {
            base: format!("{}{AGENT_API_BASE}", server.trim_end_matches('/')),
            agent,
            retry: RetryPolicy {
                max_attempts: 6,
                base_delay: Duration::from_millis(500),
                max_delay: Duration::from_secs(20),
                max_resumes_without_progress: 0,
            },
        }
    }

    /// Sets the retry policy (tests shorten it).
    pub fn with_retry(mut self, retry: RetryPolicy) -> Client {
        self.retry = retry;
        self
    }

    fn call<B: Serialize, T: DeserializeOwned>(
        &self,
        method: &str,
        path: &str,
        query: &[(&str, String)],
        auth: Option<&Identity>,
        body: Option<&B>,
    ) -> Result<Option<T>, CallError> {
        let what = format!("{method} {}{path}", self.base);
        let mut last = String::new();
        for attempt in 1..=self.retry.max_attempts {
            let mut req = self
                .agent
                .request(method, &format!("{}{path}", self.base))
                .set(VERSION_HEADER, &PROTOCOL_VERSION.to_string());
            for (k, v) in query {
                req = req.query(k, v);
            }
            if let Some(id) = auth {
                req = req.set(
                    "Authorization",
                    &format!("Bearer {}", id.credential.expose()),
                );
            }
            let res = match body {
                Some(b) => req.send_json(b),
                None => req.call(),
            };
            let retry_after = match res {
                Ok(resp) if resp.status() == 204 => return Ok(None),
                Ok(resp) => {
                    return resp
                        .into_json::<T>()
                        .map(Some)
                        .map_err(|e| CallError::Invalid {
                            what,
                            message: e.to_string(),
                        });
                }
                Err(ureq::Error::Status(401, resp)) => {
                    return Err(CallError::Unauthorized {
                        what,
                        message: error_text(resp),
                    });
                }
                Err(ureq::Error::Status(code, resp))
                    if code == 408 || code == 429 || code >= 500 =>
                {
                    let ra = resp
                        .header("retry-after")
                        .and_then(|v| v.trim().parse().ok())
                        .map(Duration::from_secs);
                    last = format!("HTTP {code}: {}", error_text(resp));
                    ra
                }
                Err(ureq::Error::Status(status, resp)) => {
                    return Err(CallError::Status {
                        what,
                        status,
                        message: error_text(resp),
                    });
                }
                Err(ureq::Error::Transport(t)) => {
                    last = t.to_string();
                    None
                }
            };
            if attempt < self.retry.max_attempts {
                std::thread::sleep(backoff(&self.retry, attempt, retry_after));
            }
        }
        Err(CallError::Unreachable {
            what,
            attempts: self.retry.max_attempts,
            message: last,
        })
    }

    fn post<B: Serialize, T: DeserializeOwned>(
        &self,
        path: &str,
        auth: Option<&Identity>,
        body: &B,
    ) -> Result<T, CallError> {
        let what = format!("POST {}{path}", self.base);
        self.call("POST", path, &[], auth, Some(body))?
            .ok_or_else(|| CallError::Invalid {
                what,
                message: "empty answer".into(),
            })
    }
}

impl Client {
    /// The server's base URL (the agent API base without its path).
    fn server(&self) -> &str {
        self.base.strip_suffix(AGENT_API_BASE).unwrap_or(&self.base)
    }

    fn download(&self, name: &str, dest: &std::path::Path) -> Result<u64, CallError> {
        let url = format!("{}/artifacts/{name}", self.server());
        let what = format!("GET {url}");
        let resp = match self.agent.get(&url).call() {
            Ok(r) => r,
            Err(ureq::Error::Status(status, r)) => {
                return Err(CallError::Status {
                    what,
                    status,
                    message: error_text(r),
                });
            }
            Err(e) => {
                return Err(CallError::Unreachable {
                    what,
                    attempts: 1,
                    message: e.to_string(),
                });
            }
        };
        let want: Option<u64> = resp.header("Content-Length").and_then(|v| v.parse().ok());
        let io = |e: std::io::Error| CallError::Invalid {
            what: format!("{what} to {}", dest.display()),
            message: e.to_string(),
        };
        let mut f = std::fs::File::create(dest).map_err(io)?;
        let n = std::io::copy(&mut resp.into_reader(), &mut f).map_err(io)?;
        f.sync_all().map_err(io)?;
        if want.is_some_and(|w| w != n) {
            return Err(CallError::Invalid {
                what,
                message: format!("got {n} bytes of {}", want.unwrap_or_default()),
            });
        }
        Ok(n)
    }
}

/// The `error` of a JSON error body, else the start of the body.
fn error_text(resp: ureq::Response) -> String {
    let text = resp.into_string().unwrap_or_default();
    match serde_json::from_str::<ErrorBody>(&text) {
        Ok(b) => b.error,
        Err(_) => text.chars().take(300).collect(),
    }
}

impl Api for Client {
    fn register(&self, req: &RegisterRequest) -> Result<RegisterResponse, CallError> {
        self.post("/register", None, req)
    }

    fn claim(&self, req: &ClaimRequest) -> Result<ClaimResponse, CallError> {
        self.post("/claim", None, req)
    }

    fn heartbeat(&self, id: &Identity, hb: &Heartbeat) -> Result<HeartbeatResponse, CallError> {
        self.post("/heartbeat", Some(id), hb)
    }

    fn orders(
        &self,
        id: &Identity,
        after: Option<u64>,
        wait_secs: u64,
    ) -> Result<OrdersResponse, CallError> {
        let mut q = vec![("wait", wait_secs.min(60).to_string())];
        if let Some(a) = after {
            q.push(("after", a.to_string()));
        }
        let what = format!("GET {}/orders", self.base);
        self.call::<(), _>("GET", "/orders", &q, Some(id), None)?
            .ok_or_else(|| CallError::Invalid {
                what,
                message: "empty answer".into(),
            })
    }

    fn post_events(
        &self,
        id: &Identity,
        run: Uuid,
        batch: &EventBatch,
    ) -> Result<EventAck, CallError> {
        self.post(&format!("/runs/{run}/events"), Some(id), batch)
    }

    fn ack_action(&self, id: &Identity, action: Uuid) -> Result<(), CallError> {
        self.call::<(), serde_json::Value>(
            "POST",
            &format!("/actions/{action}/ack"),
            &[],
            Some(id),
            None,
        )
        .map(|_| ())
    }

    fn download_artifact(&self, name: &str, dest: &std::path::Path) -> Result<u64, CallError> {
        self.download(name, dest)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cmdline::Secret;
    use std::io::{BufRead as _, BufReader, Read as _, Write as _};
    use std::net::TcpListener;

    /// A one-shot-per-connection HTTP server answering from a script; returns what it saw.
    fn serve(answers: Vec<&'static str>) -> (String, std::thread::JoinHandle<Vec<String>>) {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}", l.local_addr().unwrap());
        let h = std::thread::spawn(move || {
            let mut seen = Vec::new();
            for a in answers {
                let (s, _) = l.accept().unwrap();
                let mut r = BufReader::new(s.try_clone().unwrap());
                let mut head = String::new();
                let mut len = 0usize;
                loop {
                    let mut line = String::new();
                    r.read_line(&mut line).unwrap();
                    if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                        len = v.trim().parse().unwrap();
                    }
                    head.push_str(&line);
                    if line == "\r\n" || line.is_empty() {
                        break;
                    }
                }
                let mut body = vec![0u8; len];
                r.read_exact(&mut body).unwrap();
                head.push_str(&String::from_utf8_lossy(&body));
                seen.push(head);
                let mut s = s;
                s.write_all(a.as_bytes()).unwrap();
            }
            seen
        });
        (url, h)
    }

    fn id() -> Identity {
        Identity {
            machine_uuid: Uuid::nil(),
            credential: Secret::new("kmc_SECRET"),
        }
    }

    fn fast(c: Client) -> Client {
        c.with_retry(RetryPolicy {
            max_attempts: 3,
            base_delay: Duration::from_millis(1),
            max_delay: Duration::from_millis(5),
            max_resumes_without_progress: 0,
        })
    }

    #[test]
    fn retries_5xx_then_succeeds_with_headers() {
        let (url, h) = serve(vec![
            "HTTP/1.1 503 Service Unavailable\r\ncontent-length: 0\r\nconnection: close\r\n\r\n",
            "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 19\r\nconnection: close\r\n\r\n{\"interval_secs\":7}",
        ]);
        let c = fast(Client::new(&url, None));
        let hb = Heartbeat {
            environment: kiln_protocol::AgentEnvironment::Installer,
            agent_version: None,
        };
        assert_eq!(c.heartbeat(&id(), &hb).unwrap().interval_secs, 7);
        let seen = h.join().unwrap();
        assert_eq!(seen.len(), 2);
        let req = seen[1].to_ascii_lowercase();
        assert!(req.starts_with("post /api/agent/v1/heartbeat "), "{req}");
        assert!(req.contains("kiln-protocol-version: 1\r\n"), "{req}");
        assert!(
            req.contains("authorization: bearer kmc_secret\r\n"),
            "{req}"
        );
    }

    #[test]
    fn statuses_map_to_typed_errors() {
        let (url, h) = serve(vec![
            "HTTP/1.1 401 Unauthorized\r\ncontent-length: 38\r\nconnection: close\r\n\r\n{\"error\":\"machine credential revoked\"}",
            "HTTP/1.1 404 Not Found\r\ncontent-length: 19\r\nconnection: close\r\n\r\n{\"error\":\"no such\"}",
        ]);
        let c = fast(Client::new(&url, None));
        let e = c.orders(&id(), Some(3), 10).unwrap_err();
        assert!(e.is_unauthorized(), "{e}");
        assert!(e.to_string().contains("machine credential revoked"), "{e}");
        assert!(!e.to_string().contains("SECRET"));
        let e = c.ack_action(&id(), Uuid::nil()).unwrap_err();
        assert!(
            matches!(&e, CallError::Status { status: 404, message, .. } if message == "no such"),
            "{e:?}"
        );
        let seen = h.join().unwrap();
        assert!(seen[0].contains("/orders?wait=10&after=3 "), "{}", seen[0]);
    }

    #[test]
    fn unreachable_after_retries() {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}", l.local_addr().unwrap());
        drop(l);
        let c = fast(Client::new(&url, None));
        let e = c
            .claim(&ClaimRequest {
                machine_uuid: Uuid::nil(),
                claim_secret: "kcs_SECRET".into(),
            })
            .unwrap_err();
        assert!(
            matches!(e, CallError::Unreachable { attempts: 3, .. }),
            "{e:?}"
        );
        assert!(!e.to_string().contains("SECRET"));
    }
}
