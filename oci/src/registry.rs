//! Blocking registry client for the (synchronous) agent, on ureq + rustls/ring.
//!
//! - Endpoints: each registry host may have mirrors (pull-through caches, tried in order, with
//!   containerd's `ns=` query parameter), then the registry itself. Per host: plain HTTP for
//!   labs, an extra CA file, credentials.
//! - Auth: anonymous first; on 401 the `WWW-Authenticate` challenge decides: `Basic` (the
//!   host's credentials) or `Bearer` (token from realm/service/scope, with the credentials when
//!   configured). A 401 with a cached token (expired mid-pull) re-authenticates once.
//! - Retries: connection errors, 408, 429 and 5xx, with exponential backoff and jitter,
//!   honouring `Retry-After` (seconds or an HTTP-date, capped at `max_delay`).
//! - Credentials and tokens never appear in `Debug`, `Display`, errors or events.

use std::collections::HashMap;
use std::fmt;
use std::io::Read;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};
use base64::Engine as _;
use oci_spec::image::{ImageConfiguration, ImageIndex, ImageManifest};

use crate::blob::BlobReader;
use crate::digest::Digest;
use crate::format::{self, ImageSettings, Layer0Form, Platform};
use crate::reference::Reference;

/// A secret string: `Debug`/`Display` print `<redacted>`.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wraps a secret.
    pub fn new(s: impl Into<String>) -> Self {
        Self(s.into())
    }
    /// The secret itself; only for building an Authorization header.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

/// Username and password (or identity token) for a registry host.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Credentials {
    /// User name (printed).
    pub username: String,
    /// Password or token (never printed).
    pub password: Secret,
}

impl Credentials {
    fn basic_header(&self) -> String {
        let raw = format!("{}:{}", self.username, self.password.expose());
        format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(raw)
        )
    }
}

/// Settings for one registry host (`host[:port]` as in references).
#[derive(Clone, Debug, Default)]
pub struct HostConfig {
    /// Talk plain HTTP (labs only).
    pub plain_http: bool,
    /// PEM file of extra CA certificates trusted for this host (added to the web PKI roots).
    pub ca_file: Option<PathBuf>,
    /// Credentials.
    pub credentials: Option<Credentials>,
    /// Mirrors tried before the host itself: `host[:port]` or `http://host[:port]`.
    pub mirrors: Vec<String>,
}

/// Retry and resume policy.
#[derive(Clone, Debug)]
pub struct RetryPolicy {
    /// Attempts per request (first try included).
    pub max_attempts: u32,
    /// First backoff delay.
    pub base_delay: Duration,
    /// Longest backoff delay (and cap on `Retry-After`).
    pub max_delay: Duration,
    /// Resumes of one blob in a row without receiving a byte before giving up.
    pub max_resumes_without_progress: u32,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            max_attempts: 8,
            base_delay: Duration::from_millis(250),
            max_delay: Duration::from_secs(30),
            max_resumes_without_progress: 8,
        }
    }
}

/// Client configuration.
#[derive(Clone, Debug)]
pub struct ClientConfig {
    /// Per-host settings, keyed by `host[:port]`.
    pub hosts: HashMap<String, HostConfig>,
    /// Retries.
    pub retry: RetryPolicy,
    /// Connect timeout.
    pub connect_timeout: Duration,
    /// Longest wait for a byte before the connection counts as cut.
    pub read_timeout: Duration,
    /// HTTP(S) proxies (none by default; [`crate::proxy::ProxyConfig::from_env`] reads
    /// `HTTPS_PROXY`/`HTTP_PROXY`/`NO_PROXY`).
    pub proxy: crate::proxy::ProxyConfig,
}

impl Default for ClientConfig {
    fn default() -> Self {
        Self {
            hosts: HashMap::new(),
            retry: RetryPolicy::default(),
            connect_timeout: Duration::from_secs(15),
            read_timeout: Duration::from_secs(60),
            proxy: Default::default(),
        }
    }
}

/// One place a repository can be fetched from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Endpoint {
    /// `http` or `https`.
    pub scheme: &'static str,
    /// `host[:port]`.
    pub host: String,
    /// For a mirror: the upstream registry name (`ns=` parameter).
    pub ns: Option<String>,
}

impl Endpoint {
    /// URL of an API path (`/v2/...`).
    pub fn url(&self, path: &str) -> String {
        let mut u = format!("{}://{}{}", self.scheme, self.host, path);
        if let Some(ns) = &self.ns {
            u.push(if u.contains('?') { '&' } else { '?' });
            u.push_str("ns=");
            u.push_str(ns);
        }
        u
    }
}

/// Manifest media types we accept, in `Accept` order.
pub const MANIFEST_TYPES: &[&str] = &[
    "application/vnd.oci.image.manifest.v1+json",
    "application/vnd.oci.image.index.v1+json",
    "application/vnd.docker.distribution.manifest.v2+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
];

const MAX_MANIFEST: u64 = 4 << 20;

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

/// Agents are shared per (CA file, proxy URL).
type AgentKey = (Option<PathBuf>, Option<String>);

/// The blocking registry client. Cheap to clone.
#[derive(Clone)]
pub struct Client {
    inner: Arc<Inner>,
}

struct Inner {
    config: ClientConfig,
    agents: Mutex<HashMap<AgentKey, ureq::Agent>>,
    /// Authorization header values by `host scope`.
    auth: Mutex<HashMap<String, Secret>>,
}

impl fmt::Debug for Client {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Client")
            .field("config", &self.inner.config)
            .finish_non_exhaustive()
    }
}

/// An image resolved for one platform: everything needed to stream its layers.
#[derive(Debug)]
pub struct ResolvedImage {
    /// The reference pinned to the platform manifest's digest.
    pub reference: Reference,
    /// The manifest.
    pub manifest: ImageManifest,
    /// The image configuration.
    pub config: ImageConfiguration,
    /// How layer 0 holds the disk.
    pub layer0: Layer0Form,
    /// Settings from annotations and labels.
    pub settings: ImageSettings,
    /// Layers in order.
    pub layers: Vec<Layer>,
}

/// A layer to stream.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Layer {
    /// Digest.
    pub digest: Digest,
    /// Size in bytes.
    pub size: u64,
    /// Media type.
    pub media_type: String,
}

/// A failed HTTP exchange, kept apart so retry logic can inspect it.
enum Failure {
    Retryable(String, Option<Duration>),
    Fatal(anyhow::Error),
}

fn jitter(d: Duration) -> Duration {
    use std::sync::atomic::{AtomicU64, Ordering};
    static SEED: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |t| t.subsec_nanos() as u64);
    let mut x = SEED.fetch_add(0x9e37_79b9_7f4a_7c15, Ordering::Relaxed) ^ nanos;
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    let half = d / 2;
    half + Duration::from_nanos(x % (half.as_nanos() as u64 + 1))
}

/// Backoff before retry `attempt` (1-based): exponential with jitter, or `Retry-After` capped.
pub fn backoff(policy: &RetryPolicy, attempt: u32, retry_after: Option<Duration>) -> Duration {
    if let Some(ra) = retry_after {
        return ra.min(policy.max_delay);
    }
    let exp = policy
        .base_delay
        .saturating_mul(1u32 << attempt.saturating_sub(1).min(16));
    jitter(exp.min(policy.max_delay))
}

fn retry_after(resp: &ureq::Response) -> Option<Duration> {
    crate::retry_after::parse(resp.header("retry-after")?, std::time::SystemTime::now())
}

/// A parsed `WWW-Authenticate` challenge.
#[derive(Debug, PartialEq, Eq)]
pub struct Challenge {
    /// `basic` or `bearer` (lower case).
    pub scheme: String,
    /// Parameters (`realm`, `service`, `scope`, `error`).
    pub params: HashMap<String, String>,
}

/// Parses one `WWW-Authenticate` header value.
pub fn parse_challenge(h: &str) -> Option<Challenge> {
    let h = h.trim();
    let (scheme, rest) = h.split_once(' ').unwrap_or((h, ""));
    let mut params = HashMap::new();
    let mut s = rest.trim();
    while !s.is_empty() {
        let (key, after) = s.split_once('=')?;
        let key = key.trim().to_ascii_lowercase();
        let after = after.trim_start();
        let (value, rest) = if let Some(q) = after.strip_prefix('"') {
            let mut out = String::new();
            let mut chars = q.char_indices();
            let mut end = None;
            while let Some((i, c)) = chars.next() {
                match c {
                    '\\' => {
                        if let Some((_, n)) = chars.next() {
                            out.push(n);
                        }
                    }
                    '"' => {
                        end = Some(i + 1);
                        break;
                    }
                    c => out.push(c),
                }
            }
            (out, &q[end?..])
        } else {
            let end = after.find(',').unwrap_or(after.len());
            (after[..end].trim().to_owned(), &after[end..])
        };
        params.insert(key, value);
        s = rest.trim_start().trim_start_matches(',').trim_start();
    }
    Some(Challenge {
        scheme: scheme.to_ascii_lowercase(),
        params,
    })
}

fn registry_error_text(resp: ureq::Response) -> String {
    let mut body = String::new();
    let _ = resp.into_reader().take(4096).read_to_string(&mut body);
    #[derive(serde::Deserialize)]
    struct Errs {
        errors: Vec<E>,
    }
    #[derive(serde::Deserialize)]
    struct E {
        code: Option<String>,
        message: Option<String>,
    }
    match serde_json::from_str::<Errs>(&body) {
        Ok(e) if !e.errors.is_empty() => e
            .errors
            .iter()
            .map(|e| {
                format!(
                    "{}: {}",
                    e.code.as_deref().unwrap_or("?"),
                    e.message.as_deref().unwrap_or("")
                )
            })
            .collect::<Vec<_>>()
            .join("; "),
        _ => body.chars().take(200).collect(),
    }
}

impl Client {
    /// A client with this configuration.
    pub fn new(config: ClientConfig) -> Self {
        Self {
            inner: Arc::new(Inner {
                config,
                agents: Mutex::default(),
                auth: Mutex::default(),
            }),
        }
    }

    /// The configuration.
    pub fn config(&self) -> &ClientConfig {
        &self.inner.config
    }

    fn host(&self, host: &str) -> HostConfig {
        self.inner
            .config
            .hosts
            .get(host)
            .cloned()
            .unwrap_or_default()
    }

    /// Endpoints for a reference's registry: its mirrors in order, then the registry.
    pub fn endpoints(&self, reference: &Reference) -> Vec<Endpoint> {
        let registry = reference.registry();
        let hc = self.host(registry);
        let mut eps: Vec<Endpoint> = hc
            .mirrors
            .iter()
            .map(|m| {
                let (scheme, host) = match m.strip_prefix("http://") {
                    Some(h) => ("http", h),
                    None => {
                        let h = m.strip_prefix("https://").unwrap_or(m);
                        (
                            if self.host(h).plain_http {
                                "http"
                            } else {
                                "https"
                            },
                            h,
                        )
                    }
                };
                Endpoint {
                    scheme,
                    host: host.trim_end_matches('/').to_owned(),
                    ns: Some(registry.to_owned()),
                }
            })
            .collect();
        eps.push(Endpoint {
            scheme: if hc.plain_http { "http" } else { "https" },
            host: reference.api_host().to_owned(),
            ns: None,
        });
        eps
    }

    /// The agent for a registry endpoint.
    fn agent(&self, ep: &Endpoint) -> Result<ureq::Agent> {
        self.agent_to(&ep.host, ep.scheme, &ep.host)
    }

    /// The agent for a connection to `target` over `scheme` on behalf of registry `host` (its
    /// CA file; the proxy chosen for `target`). Redirect targets (blob storage) reuse the
    /// registry's agent, hence its proxy choice.
    fn agent_to(&self, host: &str, scheme: &str, target: &str) -> Result<ureq::Agent> {
        let ca = self.host(host).ca_file;
        let proxy = self
            .inner
            .config
            .proxy
            .proxy_for(scheme, target)
            .map(str::to_owned);
        let key = (ca.clone(), proxy.clone());
        let mut agents = self.inner.agents.lock().expect("agent cache lock");
        if let Some(a) = agents.get(&key) {
            return Ok(a.clone());
        }
        let mut roots = rustls::RootCertStore {
            roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
        };
        if let Some(path) = &ca {
            use rustls_pki_types::pem::PemObject;
            let certs: Vec<_> = rustls_pki_types::CertificateDer::pem_file_iter(path)
                .with_context(|| format!("reading CA file {} for {host}", path.display()))?
                .collect::<Result<_, _>>()
                .with_context(|| format!("parsing CA file {} for {host}", path.display()))?;
            if certs.is_empty() {
                bail!(
                    "CA file {} for {host} holds no PEM certificate",
                    path.display()
                );
            }
            for c in certs {
                roots
                    .add(c)
                    .with_context(|| format!("adding a CA from {}", path.display()))?;
            }
        }
        let tls = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .context("TLS protocol versions")?
        .with_root_certificates(roots)
        .with_no_client_auth();
        let cfg = &self.inner.config;
        let mut builder = ureq::AgentBuilder::new();
        if let Some(url) = &proxy {
            cfg.proxy.validate()?;
            builder = builder.proxy(ureq::Proxy::new(url).map_err(|e| {
                anyhow!(
                    "proxy {} for {target}: {}",
                    crate::proxy::redact(url),
                    e.kind()
                )
            })?);
        }
        let agent = builder
            .tls_config(Arc::new(tls))
            .timeout_connect(cfg.connect_timeout)
            .timeout_read(cfg.read_timeout)
            .redirects(10)
            .redirect_auth_headers(ureq::RedirectAuthHeaders::SameHost)
            .user_agent(concat!("kiln/", env!("CARGO_PKG_VERSION")))
            .build();
        agents.insert(key, agent.clone());
        Ok(agent)
    }

    fn auth_key(ep: &Endpoint, scope: &str) -> String {
        format!("{} {scope}", ep.host)
    }

    /// Answers a challenge: returns the Authorization header value for `scope`.
    fn authenticate(&self, ep: &Endpoint, challenge: &Challenge, scope: &str) -> Result<Secret> {
        // Credentials are per host: a mirror never receives the upstream's.
        let creds = self.host(&ep.host).credentials;
        match challenge.scheme.as_str() {
            "basic" => {
                let c = creds.ok_or_else(|| {
                    anyhow!(
                        "{} requires credentials (Basic auth) and none are configured for it",
                        ep.host
                    )
                })?;
                Ok(Secret(c.basic_header()))
            }
            "bearer" => {
                let realm = challenge
                    .params
                    .get("realm")
                    .ok_or_else(|| anyhow!("{}: Bearer challenge without realm", ep.host))?;
                let (realm_scheme, realm_host) = realm
                    .split_once("://")
                    .map(|(s, rest)| (s, rest.split(['/', '?']).next().unwrap_or("")))
                    .unwrap_or(("https", ""));
                let realm_scheme = if realm_scheme == "http" {
                    "http"
                } else {
                    "https"
                };
                let agent = self.agent_to(&ep.host, realm_scheme, realm_host)?;
                let mut last = String::new();
                for attempt in 1..=self.inner.config.retry.max_attempts {
                    let mut req = agent.get(realm);
                    if let Some(service) = challenge.params.get("service") {
                        req = req.query("service", service);
                    }
                    let scope = challenge.params.get("scope").map_or(scope, String::as_str);
                    req = req.query("scope", scope);
                    if let Some(c) = &creds {
                        req = req.set("Authorization", &c.basic_header());
                    }
                    match req.call() {
                        Ok(resp) => {
                            #[derive(serde::Deserialize)]
                            struct Token {
                                token: Option<String>,
                                access_token: Option<String>,
                            }
                            let t: Token =
                                serde_json::from_reader(resp.into_reader().take(1 << 20))
                                    .with_context(|| format!("token from {realm}: not JSON"))?;
                            let token = t
                                .token
                                .or(t.access_token)
                                .ok_or_else(|| anyhow!("token from {realm}: no token field"))?;
                            return Ok(Secret(format!("Bearer {token}")));
                        }
                        Err(ureq::Error::Status(code @ (401 | 403), _)) => bail!(
                            "token server {realm} refused {} for scope {scope:?} (HTTP {code}){}",
                            match &creds {
                                Some(c) => format!("user {:?}", c.username),
                                None => "anonymous access".into(),
                            },
                            if creds.is_none() {
                                "; configure credentials for this registry"
                            } else {
                                ""
                            }
                        ),
                        Err(ureq::Error::Status(code, resp))
                            if code == 408 || code == 429 || code >= 500 =>
                        {
                            last = format!("HTTP {code}");
                            std::thread::sleep(backoff(
                                &self.inner.config.retry,
                                attempt,
                                retry_after(&resp),
                            ));
                        }
                        Err(ureq::Error::Status(code, resp)) => {
                            bail!(
                                "token server {realm}: HTTP {code}: {}",
                                registry_error_text(resp)
                            )
                        }
                        Err(ureq::Error::Transport(t)) => {
                            last = t.to_string();
                            std::thread::sleep(backoff(&self.inner.config.retry, attempt, None));
                        }
                    }
                }
                bail!(
                    "token server {realm}: gave up after {} attempts: {last}",
                    self.inner.config.retry.max_attempts
                )
            }
            other => bail!("{}: unsupported auth scheme {other:?}", ep.host),
        }
    }

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
            let result = match &body {
                Body::Empty => req.call(),
                Body::Bytes(b) => req.send_bytes(b),
                Body::File(p) => {
                    let f = std::fs::File::open(p)
                        .with_context(|| format!("opening {}", p.display()))?;
                    let len = f.metadata()?.len();
                    req.set("Content-Length", &len.to_string())
                        .send(std::io::BufReader::with_capacity(1 << 20, f))
                }
                Body::FileRange(p, offset, len) => {
                    use std::io::{Read as _, Seek as _};
                    let mut f = std::fs::File::open(p)
                        .with_context(|| format!("opening {}", p.display()))?;
                    f.seek(std::io::SeekFrom::Start(*offset))
                        .with_context(|| format!("seeking {} to {offset}", p.display()))?;
                    req.set("Content-Length", &len.to_string())
                        .send(std::io::BufReader::with_capacity(1 << 20, f.take(*len)))
                }
            };
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

    /// Fetches a manifest or index: bytes, media type and digest (checked when pinned).
    pub fn fetch_manifest(&self, reference: &Reference) -> Result<(Vec<u8>, String, Digest)> {
        let accept = MANIFEST_TYPES.join(", ");
        let path = format!(
            "/v2/{}/manifests/{}",
            reference.repository(),
            reference.manifest_ref()
        );
        let scope = format!("repository:{}:pull", reference.repository());
        let mut errors = Vec::new();
        for ep in self.endpoints(reference) {
            let resp = match self.send(
                &ep,
                &scope,
                "GET",
                &ep.url(&path),
                &[("Accept", &accept)],
                Body::Empty,
                &[],
            ) {
                Ok(r) => r,
                Err(e) => {
                    errors.push(format!("{}: {e:#}", ep.host));
                    continue;
                }
            };
            let content_type = resp
                .header("content-type")
                .unwrap_or("")
                .split(';')
                .next()
                .unwrap_or("")
                .trim()
                .to_owned();
            let mut bytes = Vec::new();
            resp.into_reader()
                .take(MAX_MANIFEST + 1)
                .read_to_end(&mut bytes)
                .with_context(|| format!("reading manifest of {reference} from {}", ep.host))?;
            if bytes.len() as u64 > MAX_MANIFEST {
                bail!("manifest of {reference} is larger than {MAX_MANIFEST} bytes");
            }
            let seen = Digest::of(&bytes);
            if let Some(want) = reference.digest()
                && *want != seen
            {
                bail!("manifest of {reference}: digest mismatch: expected {want}, seen {seen}");
            }
            let media_type =
                if content_type.is_empty() || !MANIFEST_TYPES.contains(&content_type.as_str()) {
                    #[derive(serde::Deserialize)]
                    struct Probe {
                        #[serde(rename = "mediaType")]
                        media_type: Option<String>,
                        manifests: Option<serde_json::Value>,
                    }
                    let p: Probe = serde_json::from_slice(&bytes)
                        .with_context(|| format!("manifest of {reference} is not JSON"))?;
                    p.media_type.unwrap_or_else(|| {
                        if p.manifests.is_some() {
                            MANIFEST_TYPES[1].into()
                        } else {
                            MANIFEST_TYPES[0].into()
                        }
                    })
                } else {
                    content_type
                };
            return Ok((bytes, media_type, seen));
        }
        bail!("fetching manifest of {reference}: {}", errors.join("; "))
    }

    /// Resolves a reference to the manifest for `platform` (through an index if needed), reads
    /// the config and the Kiln settings, and checks the layer list.
    pub fn resolve(&self, reference: &Reference, platform: &Platform) -> Result<ResolvedImage> {
        let (bytes, media_type, digest) = self.fetch_manifest(reference)?;
        let (manifest, digest) =
            if media_type.contains("index") || media_type.contains("manifest.list") {
                let index: ImageIndex = serde_json::from_slice(&bytes)
                    .with_context(|| format!("parsing image index of {reference}"))?;
                let chosen = format::select_platform(&index, platform)
                    .with_context(|| format!("choosing a manifest of {reference}"))?;
                let pinned = reference.with_digest(Digest::try_from(chosen.digest())?);
                let (bytes, media_type, digest) = self.fetch_manifest(&pinned)?;
                if media_type.contains("index") || media_type.contains("manifest.list") {
                    bail!("{pinned}: an index inside an index is not supported");
                }
                (bytes, digest)
            } else {
                (bytes, digest)
            };
        let manifest: ImageManifest = serde_json::from_slice(&manifest)
            .with_context(|| format!("parsing manifest of {reference} ({digest})"))?;
        let reference = reference.with_digest(digest);
        let cfg_desc = manifest.config();
        let cfg_digest = Digest::try_from(cfg_desc.digest())?;
        if cfg_desc.size() > MAX_MANIFEST {
            bail!("config of {reference} is larger than {MAX_MANIFEST} bytes");
        }
        let mut cfg_bytes = Vec::new();
        self.open_blob(&reference, &cfg_digest, cfg_desc.size())?
            .read_to_end(&mut cfg_bytes)
            .with_context(|| format!("reading config of {reference}"))?;
        let config: ImageConfiguration = serde_json::from_slice(&cfg_bytes)
            .with_context(|| format!("parsing config of {reference}"))?;
        let layer0 = format::check_layers(manifest.layers())
            .with_context(|| format!("image {reference}"))?;
        let labels = config.config().as_ref().and_then(|c| c.labels().as_ref());
        let settings = ImageSettings::from_sources(&[
            manifest.annotations().as_ref(),
            manifest.layers()[0].annotations().as_ref(),
            labels,
        ])
        .with_context(|| format!("Kiln settings of {reference}"))?;
        let layers = manifest
            .layers()
            .iter()
            .map(|l| {
                Ok(Layer {
                    digest: Digest::try_from(l.digest())?,
                    size: l.size(),
                    media_type: l.media_type().to_string(),
                })
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(ResolvedImage {
            reference,
            manifest,
            config,
            layer0,
            settings,
            layers,
        })
    }

    /// Opens a blob as a verified, resumable stream (see [`BlobReader`]). The first response is
    /// awaited here, so a missing blob or refused auth fails now rather than at the first read.
    pub fn open_blob(
        &self,
        reference: &Reference,
        digest: &Digest,
        size: u64,
    ) -> Result<BlobReader> {
        BlobReader::open(self.clone(), reference.clone(), digest.clone(), size)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn challenges() {
        let c = parse_challenge(
            r#"Bearer realm="https://auth.docker.io/token",service="registry.docker.io",scope="repository:library/debian:pull""#,
        )
        .unwrap();
        assert_eq!(c.scheme, "bearer");
        assert_eq!(c.params["realm"], "https://auth.docker.io/token");
        assert_eq!(c.params["service"], "registry.docker.io");
        assert_eq!(c.params["scope"], "repository:library/debian:pull");
        let c = parse_challenge(r#"Basic realm="Registry Realm""#).unwrap();
        assert_eq!(c.scheme, "basic");
        assert_eq!(c.params["realm"], "Registry Realm");
        let c = parse_challenge(
            r#"Bearer realm="http://127.0.0.1:1/t", error="invalid_token", scope="repository:a:pull,push""#,
        )
        .unwrap();
        assert_eq!(c.params["error"], "invalid_token");
        assert_eq!(c.params["scope"], "repository:a:pull,push");
        let c = parse_challenge(r#"Bearer realm=unquoted,service="a\"b""#).unwrap();
        assert_eq!(c.params["realm"], "unquoted");
        assert_eq!(c.params["service"], "a\"b");
        assert!(parse_challenge(r#"Bearer realm="unterminated"#).is_none());
    }

    #[test]
    fn secrets_never_print() {
        let c = Credentials {
            username: "alice".into(),
            password: Secret::new("hunter2"),
        };
        let hc = HostConfig {
            credentials: Some(c.clone()),
            ..Default::default()
        };
        let mut cfg = ClientConfig::default();
        cfg.hosts.insert("r.example".into(), hc);
        let client = Client::new(cfg);
        client
            .inner
            .auth
            .lock()
            .unwrap()
            .insert("k".into(), Secret::new("Bearer tok3n"));
        for s in [
            format!("{c:?}"),
            format!("{client:?}"),
            format!("{}", c.password),
        ] {
            assert!(!s.contains("hunter2") && !s.contains("tok3n"), "{s}");
        }
        assert!(format!("{c:?}").contains("alice"));
    }

    #[test]
    fn endpoints_with_mirrors() {
        let mut cfg = ClientConfig::default();
        cfg.hosts.insert(
            "docker.io".into(),
            HostConfig {
                mirrors: vec!["http://127.0.0.1:5001".into(), "mirror.lab:5000".into()],
                ..Default::default()
            },
        );
        cfg.hosts.insert(
            "mirror.lab:5000".into(),
            HostConfig {
                plain_http: true,
                ..Default::default()
            },
        );
        cfg.hosts.insert(
            "lab:5000".into(),
            HostConfig {
                plain_http: true,
                ..Default::default()
            },
        );
        let client = Client::new(cfg);
        let eps = client.endpoints(&"debian:12".parse().unwrap());
        let urls: Vec<String> = eps
            .iter()
            .map(|e| e.url("/v2/library/debian/manifests/12"))
            .collect();
        assert_eq!(
            urls,
            [
                "http://127.0.0.1:5001/v2/library/debian/manifests/12?ns=docker.io",
                "http://mirror.lab:5000/v2/library/debian/manifests/12?ns=docker.io",
                "https://registry-1.docker.io/v2/library/debian/manifests/12",
            ]
        );
        let eps = client.endpoints(&"lab:5000/kiln/test".parse().unwrap());
        assert_eq!(
            eps,
            [Endpoint {
                scheme: "http",
                host: "lab:5000".into(),
                ns: None
            }]
        );
    }

    #[test]
    fn backoff_grows_and_honours_retry_after() {
        let p = RetryPolicy {
            base_delay: Duration::from_millis(100),
            max_delay: Duration::from_secs(2),
            ..Default::default()
        };
        for attempt in 1..10 {
            let d = backoff(&p, attempt, None);
            let nominal = Duration::from_millis(100 * (1 << (attempt - 1))).min(p.max_delay);
            assert!(
                d >= nominal / 2 && d <= nominal,
                "attempt {attempt}: {d:?} vs {nominal:?}"
            );
        }
        assert_eq!(
            backoff(&p, 1, Some(Duration::from_secs(1))),
            Duration::from_secs(1)
        );
        assert_eq!(
            backoff(&p, 1, Some(Duration::from_secs(600))),
            Duration::from_secs(2)
        );
    }
}
