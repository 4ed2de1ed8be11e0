//! Per-host settings (plain HTTP, CA file, credentials, mirrors) and the endpoints a
//! reference is fetched from: its mirrors in order (with containerd's `ns=` parameter), then
//! the registry itself.

use std::collections::HashMap;
use std::path::PathBuf;

use super::secret::Credentials;
use crate::reference::Reference;

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

/// The settings for `host` (defaults when it has none).
pub(crate) fn host_config(hosts: &HashMap<String, HostConfig>, host: &str) -> HostConfig {
    hosts.get(host).cloned().unwrap_or_default()
}

/// Endpoints for a reference's registry: its mirrors in order, then the registry.
pub fn endpoints(hosts: &HashMap<String, HostConfig>, reference: &Reference) -> Vec<Endpoint> {
    let registry = reference.registry();
    let hc = host_config(hosts, registry);
    let mut eps: Vec<Endpoint> = hc
        .mirrors
        .iter()
        .map(|m| {
            let (scheme, host) = match m.strip_prefix("http://") {
                Some(h) => ("http", h),
                None => {
                    let h = m.strip_prefix("https://").unwrap_or(m);
                    let plain = host_config(hosts, h).plain_http;
                    (if plain { "http" } else { "https" }, h)
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_with_mirrors() {
        let mut cfg = super::super::ClientConfig::default();
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
        let eps = endpoints(&cfg.hosts, &"debian:12".parse().unwrap());
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
        let eps = endpoints(&cfg.hosts, &"lab:5000/kiln/test".parse().unwrap());
        assert_eq!(
            eps,
            [Endpoint {
                scheme: "http",
                host: "lab:5000".into(),
                ns: None
            }]
        );
    }
}
