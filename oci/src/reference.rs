//! Image references with Docker's defaults: `docker.io` as the registry, `library/` for
//! single-component Docker Hub names, tag `latest` when neither tag nor digest is given, and
//! digest pinning (`name@sha256:...`, which wins over a tag when both are given).
//!
//! Parsing is oci-spec's `Reference` (a port of distribution's own grammar); this wrapper adds
//! the API host for Docker Hub, the digest check and errors that name the reference.

use std::fmt;
use std::str::FromStr;

use crate::digest::Digest;

/// A parsed image reference.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Reference {
    registry: String,
    repository: String,
    tag: Option<String>,
    digest: Option<Digest>,
}

/// A reference that could not be parsed.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error(
    "invalid image reference {input:?}: {why} (expected [registry[:port]/]name[:tag][@sha256:digest])"
)]
pub struct ReferenceError {
    input: String,
    why: String,
}

impl Reference {
    /// Registry as written (`docker.io` for Docker Hub), including any port.
    pub fn registry(&self) -> &str {
        &self.registry
    }
    /// Repository path (`library/debian`).
    pub fn repository(&self) -> &str {
        &self.repository
    }
    /// Tag, if any (`latest` by default when no digest is given).
    pub fn tag(&self) -> Option<&str> {
        self.tag.as_deref()
    }
    /// Pinned digest, if any.
    pub fn digest(&self) -> Option<&Digest> {
        self.digest.as_ref()
    }
    /// What to ask the manifests endpoint for: the digest when pinned, else the tag.
    pub fn manifest_ref(&self) -> &str {
        match (&self.digest, &self.tag) {
            (Some(d), _) => d.as_str(),
            (None, Some(t)) => t,
            (None, None) => "latest",
        }
    }
    /// Host (and port) serving the registry API: Docker Hub's API is `registry-1.docker.io`.
    pub fn api_host(&self) -> &str {
        api_host(&self.registry)
    }
    /// The same repository pinned to `digest`.
    pub fn with_digest(&self, digest: Digest) -> Self {
        Self {
            digest: Some(digest),
            ..self.clone()
        }
    }
    /// The same repository with another tag (no digest).
    pub fn with_tag(&self, tag: &str) -> Self {
        Self {
            tag: Some(tag.to_owned()),
            digest: None,
            ..self.clone()
        }
    }
}

/// The API host for a registry name.
pub fn api_host(registry: &str) -> &str {
    match registry {
        "docker.io" | "index.docker.io" => "registry-1.docker.io",
        r => r,
    }
}

impl FromStr for Reference {
    type Err = ReferenceError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = |why: String| ReferenceError {
            input: s.to_owned(),
            why,
        };
        let parsed =
            oci_spec::distribution::Reference::from_str(s).map_err(|e| err(e.to_string()))?;
        let digest = parsed
            .digest()
            .map(|d| d.parse::<Digest>().map_err(|e| err(e.to_string())))
            .transpose()?;
        let registry = match parsed.registry() {
            "index.docker.io" => "docker.io",
            r => r,
        };
        let repository = parsed.repository().to_owned();
        let repository = if registry == "docker.io" && !repository.contains('/') {
            format!("library/{repository}")
        } else {
            repository
        };
        Ok(Self {
            registry: registry.to_owned(),
            repository,
            tag: parsed.tag().map(str::to_owned),
            digest,
        })
    }
}

impl fmt::Display for Reference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.registry, self.repository)?;
        if let Some(t) = &self.tag {
            write!(f, ":{t}")?;
        }
        if let Some(d) = &self.digest {
            write!(f, "@{d}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
#[allow(clippy::type_complexity)]
mod tests {
    use super::*;

    const D: &str = "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

    #[test]
    fn real_world_references() {
        // input, registry, repository, tag, digest?, api host
        let d = format!("debian@{D}");
        let dt = format!("ghcr.io/kiln/os:v1@{D}");
        let cases: Vec<(&str, &str, &str, Option<&str>, bool, &str)> = vec![
            (
                "debian",
                "docker.io",
                "library/debian",
                Some("latest"),
                false,
                "registry-1.docker.io",
            ),
            (
                "debian:12",
                "docker.io",
                "library/debian",
                Some("12"),
                false,
                "registry-1.docker.io",
            ),
            (
                "library/debian:bookworm-slim",
                "docker.io",
                "library/debian",
                Some("bookworm-slim"),
                false,
                "registry-1.docker.io",
            ),
            (
                "docker.io/debian",
                "docker.io",
                "library/debian",
                Some("latest"),
                false,
                "registry-1.docker.io",
            ),
            (
                "index.docker.io/library/alpine:3.20",
                "docker.io",
                "library/alpine",
                Some("3.20"),
                false,
                "registry-1.docker.io",
            ),
            (
                "bitnami/postgresql:15",
                "docker.io",
                "bitnami/postgresql",
                Some("15"),
                false,
                "registry-1.docker.io",
            ),
            (
                "ghcr.io/kiln-provisioning/images/debian:12",
                "ghcr.io",
                "kiln-provisioning/images/debian",
                Some("12"),
                false,
                "ghcr.io",
            ),
            (
                "quay.io/fedora/fedora-bootc:41",
                "quay.io",
                "fedora/fedora-bootc",
                Some("41"),
                false,
                "quay.io",
            ),
            (
                "us-docker.pkg.dev/proj/repo/img:tag",
                "us-docker.pkg.dev",
                "proj/repo/img",
                Some("tag"),
                false,
                "us-docker.pkg.dev",
            ),
            (
                "localhost/img",
                "localhost",
                "img",
                Some("latest"),
                false,
                "localhost",
            ),
            (
                "localhost:5000/kiln/test:v1",
                "localhost:5000",
                "kiln/test",
                Some("v1"),
                false,
                "localhost:5000",
            ),
            (
                "127.0.0.1:5000/test",
                "127.0.0.1:5000",
                "test",
                Some("latest"),
                false,
                "127.0.0.1:5000",
            ),
            (
                "registry.example.com:8443/a/b/c/d",
                "registry.example.com:8443",
                "a/b/c/d",
                Some("latest"),
                false,
                "registry.example.com:8443",
            ),
            (
                &d,
                "docker.io",
                "library/debian",
                None,
                true,
                "registry-1.docker.io",
            ),
            (&dt, "ghcr.io", "kiln/os", Some("v1"), true, "ghcr.io"),
        ];
        for (input, registry, repo, tag, pinned, host) in cases {
            let r: Reference = input.parse().unwrap_or_else(|e| panic!("{input}: {e}"));
            assert_eq!(r.registry(), registry, "{input}");
            assert_eq!(r.repository(), repo, "{input}");
            assert_eq!(r.tag(), tag, "{input}");
            assert_eq!(r.digest().is_some(), pinned, "{input}");
            assert_eq!(r.api_host(), host, "{input}");
            if pinned {
                assert_eq!(r.manifest_ref(), D, "{input}: a digest wins over a tag");
            }
            // Display round-trips.
            assert_eq!(r.to_string().parse::<Reference>().unwrap(), r, "{input}");
        }
    }

    #[test]
    fn rejected_references() {
        let cases = [
            "",
            "Debian",                                      // uppercase repository
            "debian:",                                     // empty tag
            "debian@sha256:abc",                           // short digest
            "debian@md5:0123456789abcdef0123456789abcdef", // unsupported algorithm
            "http://registry/x",                           // a URL, not a reference
            "a//b",
        ];
        for input in cases {
            let err = input.parse::<Reference>().unwrap_err();
            assert!(err.to_string().contains(&format!("{input:?}")), "{err}");
        }
    }
}
