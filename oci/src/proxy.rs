//! HTTP(S) proxies for registry traffic, configured explicitly or from the environment the way
//! curl and Docker read it: `HTTPS_PROXY` for HTTPS registries (tunnelled with `CONNECT`),
//! `HTTP_PROXY` for plain-HTTP ones (absolute-form requests), `ALL_PROXY` for both when the
//! specific one is unset, and `NO_PROXY` for hosts reached directly. Lower-case names win over
//! upper-case ones. Proxy URLs are `http://[user:password@]host[:port]` (an HTTPS connection to
//! the proxy itself is not supported); credentials never appear in `Debug` output or errors.

use std::fmt;

use anyhow::{Result, bail};

/// Where registry connections go.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct ProxyConfig {
    /// Proxy for plain-HTTP registries.
    pub http: Option<String>,
    /// Proxy for HTTPS registries (CONNECT tunnel; TLS stays end to end).
    pub https: Option<String>,
    /// Hosts reached directly: `*` (all), a host or IP (`10.0.0.5`, `registry.lab`), a domain
    /// suffix (`.lab` or `lab`: `registry.lab` and `lab` match), optionally with `:port`.
    pub no_proxy: Vec<String>,
}

/// `http://user:secret@host:3128` → `http://user:<redacted>@host:3128`.
pub fn redact(url: &str) -> String {
    let (scheme, rest) = url.split_once("://").unwrap_or(("", url));
    let (authority, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
    match authority.rsplit_once('@') {
        Some((userinfo, host)) => {
            let user = userinfo.split(':').next().unwrap_or("");
            let sep = if scheme.is_empty() { "" } else { "://" };
            format!("{scheme}{sep}{user}:<redacted>@{host}{path}")
        }
        None => url.to_owned(),
    }
}

impl fmt::Debug for ProxyConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ProxyConfig")
            .field("http", &self.http.as_deref().map(redact))
            .field("https", &self.https.as_deref().map(redact))
            .field("no_proxy", &self.no_proxy)
            .finish()
    }
}

impl ProxyConfig {
    /// Reads `http_proxy`, `https_proxy`, `all_proxy`, `no_proxy` (lower case first, then
    /// upper case) through `var`; empty values count as unset.
    pub fn from_vars(var: impl Fn(&str) -> Option<String>) -> Self {
        let get = |name: &str| {
            var(name)
                .or_else(|| var(&name.to_ascii_uppercase()))
                .map(|v| v.trim().to_owned())
                .filter(|v| !v.is_empty())
        };
        let all = get("all_proxy");
        Self {
            http: get("http_proxy").or_else(|| all.clone()),
            https: get("https_proxy").or(all),
            no_proxy: get("no_proxy")
                .map(|v| {
                    v.split([',', ' '])
                        .map(str::trim)
                        .filter(|s| !s.is_empty())
                        .map(str::to_owned)
                        .collect()
                })
                .unwrap_or_default(),
        }
    }

    /// The process environment's proxies.
    pub fn from_env() -> Self {
        Self::from_vars(|n| std::env::var(n).ok())
    }

    /// Checks the proxy URLs (scheme `http`, a host).
    pub fn validate(&self) -> Result<()> {
        for url in self.http.iter().chain(&self.https) {
            let Some(rest) = url.strip_prefix("http://") else {
                bail!(
                    "proxy {}: only http:// proxies are supported (HTTPS registries are still \
                     end-to-end TLS through a CONNECT tunnel)",
                    redact(url)
                );
            };
            let authority = rest.split('/').next().unwrap_or("");
            let host = authority.rsplit_once('@').map_or(authority, |x| x.1);
            if host.is_empty() || host.starts_with(':') {
                bail!("proxy {}: no host", redact(url));
            }
        }
        Ok(())
    }

    /// The proxy for a connection to `host` (`name[:port]`, IPv6 in brackets) over `scheme`,
    /// or `None` for a direct connection.
    pub fn proxy_for(&self, scheme: &str, host: &str) -> Option<&str> {
        let proxy = match scheme {
            "https" => self.https.as_deref(),
            _ => self.http.as_deref(),
        }?;
        (!self.bypass(host)).then_some(proxy)
    }

    /// True when `NO_PROXY` names `host`.
    pub fn bypass(&self, host: &str) -> bool {
        let (name, port) = split_host_port(host);
        let name = name.to_ascii_lowercase();
        self.no_proxy.iter().any(|entry| {
            if entry == "*" {
                return true;
            }
            let (e_name, e_port) = split_host_port(entry);
            if e_port.is_some() && e_port != port {
                return false;
            }
            let e_name = e_name.trim_start_matches("*.").to_ascii_lowercase();
            let e_name = e_name.strip_prefix('.').unwrap_or(&e_name);
            !e_name.is_empty()
                && (name == e_name
                    || name
                        .strip_suffix(e_name)
                        .is_some_and(|head| head.ends_with('.')))
        })
    }
}

/// `Proxy-Authorization` value for a proxy URL with `user:password@` (plain-HTTP requests sent
/// through the proxy carry it on every request; CONNECT tunnels get it from ureq).
pub fn authorization(url: &str) -> Option<String> {
    use base64::Engine as _;
    let rest = url.split_once("://").map_or(url, |x| x.1);
    let authority = rest.split('/').next().unwrap_or("");
    let (userinfo, _) = authority.rsplit_once('@')?;
    Some(format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(userinfo)
    ))
}

/// `name:port` → (`name`, `Some(port)`); `[::1]:5000` → (`::1`, `Some(5000)`).
fn split_host_port(s: &str) -> (&str, Option<u16>) {
    if let Some(rest) = s.strip_prefix('[') {
        return match rest.split_once(']') {
            Some((h, tail)) => (h, tail.strip_prefix(':').and_then(|p| p.parse().ok())),
            None => (s, None),
        };
    }
    match s.rsplit_once(':') {
        Some((h, p)) if !h.contains(':') => match p.parse() {
            Ok(port) => (h, Some(port)),
            Err(_) => (s, None),
        },
        _ => (s, None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn vars(pairs: &[(&str, &str)]) -> ProxyConfig {
        let m: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        ProxyConfig::from_vars(|n| m.get(n).cloned())
    }

    #[test]
    fn environment() {
        let c = vars(&[]);
        assert_eq!(c, ProxyConfig::default());
        let c = vars(&[
            ("HTTPS_PROXY", "http://big:3128"),
            ("https_proxy", "http://small:3128"),
            ("HTTP_PROXY", "http://h:8080"),
            ("NO_PROXY", "localhost, .lab,10.0.0.5:5000"),
        ]);
        assert_eq!(
            c.https.as_deref(),
            Some("http://small:3128"),
            "lower case wins"
        );
        assert_eq!(c.http.as_deref(), Some("http://h:8080"));
        assert_eq!(c.no_proxy, ["localhost", ".lab", "10.0.0.5:5000"]);
        let c = vars(&[("ALL_PROXY", "http://all:1"), ("http_proxy", "http://h:2")]);
        assert_eq!(
            (c.http.as_deref(), c.https.as_deref()),
            (Some("http://h:2"), Some("http://all:1"))
        );
        let c = vars(&[("https_proxy", "  "), ("HTTPS_PROXY", "http://x:1")]);
        assert_eq!(c.https, None, "an empty lower-case variable unsets");
    }

    #[test]
    fn which_hosts_use_the_proxy() {
        let c = ProxyConfig {
            http: Some("http://p:1".into()),
            https: Some("http://ps:2".into()),
            no_proxy: vec![
                "localhost".into(),
                ".lab".into(),
                "corp.example".into(),
                "10.0.0.5:5000".into(),
                "[::1]".into(),
                "*.wild.test".into(),
            ],
        };
        let cases: &[(&str, &str, Option<&str>)] = &[
            ("https", "registry-1.docker.io", Some("http://ps:2")),
            ("http", "registry-1.docker.io", Some("http://p:1")),
            ("https", "localhost:5000", None),
            ("https", "registry.lab", None),
            ("https", "lab", None),
            ("https", "collab", Some("http://ps:2")),
            ("https", "x.corp.example:443", None),
            ("https", "corp.example", None),
            ("https", "notcorp.example", Some("http://ps:2")),
            ("http", "10.0.0.5:5000", None),
            ("http", "10.0.0.5:5001", Some("http://p:1")),
            ("http", "10.0.0.5", Some("http://p:1")),
            ("https", "[::1]:5000", None),
            ("https", "a.wild.test", None),
            ("https", "REGISTRY.LAB", None),
        ];
        for (scheme, host, want) in cases {
            assert_eq!(c.proxy_for(scheme, host), *want, "{scheme} {host}");
        }
        let all = ProxyConfig {
            no_proxy: vec!["*".into()],
            ..c.clone()
        };
        assert_eq!(all.proxy_for("https", "anything"), None);
        let none = ProxyConfig::default();
        assert_eq!(none.proxy_for("https", "anything"), None);
    }

    #[test]
    fn credentials_never_print_and_urls_are_checked() {
        let c = ProxyConfig {
            https: Some("http://kiln:hunter2@proxy:3128".into()),
            ..Default::default()
        };
        let dbg = format!("{c:?}");
        assert!(
            !dbg.contains("hunter2") && dbg.contains("kiln:<redacted>@proxy:3128"),
            "{dbg}"
        );
        assert!(c.validate().is_ok());
        for bad in [
            "https://p:1",
            "socks5://p:1",
            "http://",
            "http://u:pw@:3128",
        ] {
            let c = ProxyConfig {
                http: Some(bad.into()),
                ..Default::default()
            };
            let err = format!("{:#}", c.validate().unwrap_err());
            assert!(!err.contains("pw@"), "{err}");
        }
        assert_eq!(redact("http://p:1"), "http://p:1");
        assert_eq!(
            authorization("http://kiln:hunter2@proxy:3128").as_deref(),
            Some("Basic a2lsbjpodW50ZXIy")
        );
        assert_eq!(authorization("http://proxy:3128"), None);
    }
}
