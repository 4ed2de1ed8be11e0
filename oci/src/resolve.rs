//! Image resolution: a reference to the manifest for one platform (through an index), its
//! configuration and Kiln settings ([`Client::resolve`]), and its blobs as verified streams
//! ([`Client::open_blob`]). Above both the registry client and the blob stream.

use std::io::Read;

use anyhow::{Context, Result, bail};
use oci_spec::image::{ImageConfiguration, ImageIndex, ImageManifest};

use crate::blob::BlobReader;
use crate::digest::Digest;
use crate::format::{self, ImageSettings, Platform};
use crate::reference::Reference;
use crate::registry::{Client, Layer, MAX_MANIFEST, ResolvedImage};

impl Client {
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
