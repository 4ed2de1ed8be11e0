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
//!
//! Modules: [`secret`] (credentials), [`hosts`] (per-host settings, mirrors, endpoints),
//! [`retry`] (backoff), [`auth`] (challenges, tokens), [`request`] (one request with auth and
//! retries), [`manifest`] (manifests, resolved-image types). Resolving an image and opening
//! its blobs are in [`crate::resolve`].

mod auth;
mod errors;
mod hosts;
mod manifest;
mod request;
mod retry;
mod secret;

use std::collections::HashMap;
use std::fmt;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Result, anyhow};

use crate::http::{HttpClientBuilder, Trust};

pub use auth::{Challenge, parse_challenge};
pub use hosts::{Endpoint, HostConfig};
pub use manifest::{Layer, MANIFEST_TYPES, MAX_MANIFEST, ResolvedImage};
pub use request::Body;
pub use retry::{RetryPolicy, backoff};
pub use secret::{Credentials, Secret};

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
        hosts::host_config(&self.inner.config.hosts, host)
    }

    /// Endpoints for a reference's registry: its mirrors in order, then the registry.
    pub fn endpoints(&self, reference: &crate::reference::Reference) -> Vec<Endpoint> {
        hosts::endpoints(&self.inner.config.hosts, reference)
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
        let cfg = &self.inner.config;
        let trust = Trust::WebPki { extra_ca: ca };
        let mut builder = HttpClientBuilder::new(&trust, host)?
            .connect_timeout(cfg.connect_timeout)
            .read_timeout(cfg.read_timeout)
            .redirects(10, true)
            .user_agent(concat!("kiln/", env!("CARGO_PKG_VERSION")));
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
        let agent = builder.build();
        agents.insert(key, agent.clone());
        Ok(agent)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
}
