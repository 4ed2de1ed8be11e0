//! Registry auth: `WWW-Authenticate` challenges answered with `Basic` (the host's
//! credentials) or `Bearer` (a token from the challenge's realm, service and scope).

use std::collections::HashMap;
use std::io::Read;

use anyhow::{Context, Result, anyhow, bail};

use super::Client;
use super::errors::registry_error_text;
use super::hosts::Endpoint;
use super::retry::{backoff, retry_after};
use super::secret::Secret;

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

/// The scheme and `host[:port]` of a Bearer realm; a plain-HTTP realm of an HTTPS registry
/// with credentials is refused (they would travel in clear text).
fn realm_target<'a>(ep: &Endpoint, realm: &'a str, creds: bool) -> Result<(&'static str, &'a str)> {
    let (scheme, host) = realm
        .split_once("://")
        .map(|(s, rest)| (s, rest.split(['/', '?']).next().unwrap_or("")))
        .unwrap_or(("https", ""));
    let scheme = if scheme == "http" { "http" } else { "https" };
    if scheme == "http" && ep.scheme != "http" && creds {
        bail!(
            "{}: its Bearer realm {realm} is plain HTTP; refusing to send the credentials of {} \
             in clear text (a plain-HTTP realm is only used for a registry configured as plain HTTP)",
            ep.host,
            ep.host
        );
    }
    Ok((scheme, host))
}

impl Client {
    pub(super) fn auth_key(ep: &Endpoint, scope: &str) -> String {
        format!("{} {scope}", ep.host)
    }

    /// Answers a challenge: returns the Authorization header value for `scope`.
    pub(super) fn authenticate(
        &self,
        ep: &Endpoint,
        challenge: &Challenge,
        scope: &str,
    ) -> Result<Secret> {
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
                Ok(Secret::new(c.basic_header()))
            }
            "bearer" => {
                let realm = challenge
                    .params
                    .get("realm")
                    .ok_or_else(|| anyhow!("{}: Bearer challenge without realm", ep.host))?;
                let (realm_scheme, realm_host) = realm_target(ep, realm, creds.is_some())?;
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
                            return Ok(Secret::new(format!("Bearer {token}")));
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
}
