//! Manifests: fetching one (any endpoint, size-capped, digest-checked when pinned) and the
//! resolved-image types [`ResolvedImage`] and [`Layer`].

use std::io::Read;

use anyhow::{Context, Result, bail};
use oci_spec::image::{ImageConfiguration, ImageManifest};

use super::Client;
use super::request::Body;
use crate::digest::Digest;
use crate::format::{ImageSettings, Layer0Form};
use crate::reference::Reference;

/// Manifest media types we accept, in `Accept` order.
pub const MANIFEST_TYPES: &[&str] = &[
    "application/vnd.oci.image.manifest.v1+json",
    "application/vnd.oci.image.index.v1+json",
    "application/vnd.docker.distribution.manifest.v2+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
];

/// Largest manifest or image configuration accepted.
pub const MAX_MANIFEST: u64 = 4 << 20;

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

impl Client {
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
}
