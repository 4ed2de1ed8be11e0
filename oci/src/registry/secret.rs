//! Secrets and registry credentials: never printed in `Debug`, `Display`, errors or events.

use std::fmt;

use base64::Engine as _;

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
    /// The `Authorization` value for HTTP Basic auth.
    pub(crate) fn basic_header(&self) -> String {
        let raw = format!("{}:{}", self.username, self.password.expose());
        format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(raw)
        )
    }
}
