//! Writing an OCI image layout directory (`oci-layout`, `index.json`, `blobs/sha256/`), as
//! read by skopeo (`oci:DIR:TAG`), umoci and `kiln-image`; reading one back (one tagged
//! image manifest) so that it can be pushed (`kiln-image push`, the root tests).

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

use crate::builder::{BlobFile, BuiltImage};
use crate::digest::Digest;

/// An OCI layout directory being written.
#[derive(Debug)]
pub struct Layout {
    dir: PathBuf,
}

impl Layout {
    /// Creates (or reuses) the layout at `dir`.
    pub fn create(dir: &Path) -> Result<Self> {
        let blobs = dir.join("blobs/sha256");
        std::fs::create_dir_all(&blobs).with_context(|| format!("creating {}", blobs.display()))?;
        std::fs::write(dir.join("oci-layout"), br#"{"imageLayoutVersion":"1.0.0"}"#)
            .with_context(|| format!("writing {}/oci-layout", dir.display()))?;
        Ok(Self {
            dir: dir.to_owned(),
        })
    }

    fn blob_path(&self, digest: &Digest) -> PathBuf {
        self.dir.join("blobs/sha256").join(digest.hex())
    }

    /// Copies a blob file in (hard-links when possible).
    pub fn add_blob_file(&self, path: &Path, digest: &Digest) -> Result<()> {
        let dest = self.blob_path(digest);
        if dest.exists() {
            return Ok(());
        }
        if std::fs::hard_link(path, &dest).is_err() {
            std::fs::copy(path, &dest)
                .with_context(|| format!("copying {} to {}", path.display(), dest.display()))?;
        }
        Ok(())
    }

    /// Writes a blob from memory.
    pub fn add_blob_bytes(&self, bytes: &[u8]) -> Result<Digest> {
        let digest = Digest::of(bytes);
        let dest = self.blob_path(&digest);
        std::fs::write(&dest, bytes).with_context(|| format!("writing {}", dest.display()))?;
        Ok(digest)
    }

    /// Writes `index.json` naming the manifest with `tag` (replacing an entry with that tag).
    pub fn set_tag(&self, tag: &str, manifest: &[u8], media_type: &str) -> Result<Digest> {
        let digest = self.add_blob_bytes(manifest)?;
        let index_path = self.dir.join("index.json");
        let mut index: serde_json::Value = match std::fs::read(&index_path) {
            Ok(b) => serde_json::from_slice(&b)
                .with_context(|| format!("parsing {}", index_path.display()))?,
            Err(_) => {
                serde_json::json!({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json", "manifests": []})
            }
        };
        let manifests = index["manifests"]
            .as_array_mut()
            .context("index.json has no manifests array")?;
        manifests.retain(|m| m["annotations"]["org.opencontainers.image.ref.name"] != tag);
        manifests.push(serde_json::json!({
            "mediaType": media_type,
            "digest": digest.as_str(),
            "size": manifest.len(),
            "annotations": {"org.opencontainers.image.ref.name": tag},
        }));
        std::fs::write(&index_path, serde_json::to_vec_pretty(&index)?)
            .with_context(|| format!("writing {}", index_path.display()))?;
        Ok(digest)
    }
}

/// Reads the image manifest tagged `tag` from the layout at `dir` (a single tagged manifest is
/// taken when `tag` is `None`). The manifest bytes are checked against the index's digest and
/// every blob file against its descriptor's size; blob digests are checked by the registry
/// when pushed.
pub fn read_image(dir: &Path, tag: Option<&str>) -> Result<BuiltImage> {
    let index_path = dir.join("index.json");
    let index: serde_json::Value = serde_json::from_slice(
        &std::fs::read(&index_path)
            .with_context(|| format!("reading {} (not an OCI layout?)", index_path.display()))?,
    )
    .with_context(|| format!("parsing {}", index_path.display()))?;
    let entries = index["manifests"]
        .as_array()
        .with_context(|| format!("{} has no manifests array", index_path.display()))?;
    let name = |m: &serde_json::Value| {
        m["annotations"]["org.opencontainers.image.ref.name"]
            .as_str()
            .unwrap_or("")
            .to_owned()
    };
    let entry = match tag {
        Some(t) => entries.iter().find(|m| name(m) == t).with_context(|| {
            let tags: Vec<String> = entries.iter().map(name).collect();
            format!(
                "no manifest tagged {t:?} in {} (tags: {})",
                dir.display(),
                tags.join(", ")
            )
        })?,
        None if entries.len() == 1 => &entries[0],
        None => anyhow::bail!(
            "{} holds {} manifests: name a tag",
            dir.display(),
            entries.len()
        ),
    };
    let blob = |d: &serde_json::Value, what: &str| -> Result<BlobFile> {
        let digest: Digest = d["digest"]
            .as_str()
            .with_context(|| format!("{what}: no digest"))?
            .parse()
            .with_context(|| format!("{what}: bad digest"))?;
        let path = dir.join("blobs/sha256").join(digest.hex());
        let len = std::fs::metadata(&path)
            .with_context(|| format!("{what} {digest}: missing blob {}", path.display()))?
            .len();
        let size = d["size"].as_u64().unwrap_or(len);
        anyhow::ensure!(
            len == size,
            "{what} {digest}: blob {} has {len} bytes, descriptor says {size}",
            path.display()
        );
        Ok(BlobFile {
            path,
            digest,
            size,
            media_type: d["mediaType"].as_str().unwrap_or("").to_owned(),
        })
    };
    let m = blob(entry, "manifest")?;
    let manifest = std::fs::read(&m.path)?;
    anyhow::ensure!(
        Digest::of(&manifest) == m.digest,
        "manifest {}: blob {} does not match its digest",
        m.digest,
        m.path.display()
    );
    let json: serde_json::Value = serde_json::from_slice(&manifest)
        .with_context(|| format!("parsing manifest {}", m.digest))?;
    anyhow::ensure!(
        json["layers"].is_array(),
        "manifest {} is not an image manifest (no layers; an index?)",
        m.digest
    );
    let layers = json["layers"]
        .as_array()
        .into_iter()
        .flatten()
        .enumerate()
        .map(|(i, l)| blob(l, &format!("layer {i}")))
        .collect::<Result<Vec<_>>>()?;
    Ok(BuiltImage {
        layers,
        config: blob(&json["config"], "config")?,
        manifest,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layout_index_replaces_tag() {
        let dir = tempfile::tempdir().unwrap();
        let l = Layout::create(dir.path()).unwrap();
        l.set_tag(
            "v1",
            b"{\"a\":1}",
            "application/vnd.oci.image.manifest.v1+json",
        )
        .unwrap();
        let d2 = l
            .set_tag(
                "v1",
                b"{\"a\":2}",
                "application/vnd.oci.image.manifest.v1+json",
            )
            .unwrap();
        l.set_tag(
            "v2",
            b"{\"a\":3}",
            "application/vnd.oci.image.manifest.v1+json",
        )
        .unwrap();
        let index: serde_json::Value =
            serde_json::from_slice(&std::fs::read(dir.path().join("index.json")).unwrap()).unwrap();
        let m = index["manifests"].as_array().unwrap();
        assert_eq!(m.len(), 2);
        assert_eq!(m[0]["digest"], d2.as_str());
        assert!(dir.path().join("blobs/sha256").join(d2.hex()).exists());
    }

    #[test]
    fn read_image_round_trips_and_names_what_is_wrong() {
        let dir = tempfile::tempdir().unwrap();
        let l = Layout::create(dir.path()).unwrap();
        let layer = l.add_blob_bytes(b"layer bytes").unwrap();
        let config = l.add_blob_bytes(b"{}").unwrap();
        let manifest = serde_json::json!({"schemaVersion": 2,
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": config.as_str(), "size": 2},
            "layers": [{"mediaType": "application/vnd.kiln.disk.v1.raw", "digest": layer.as_str(), "size": 11}]});
        let bytes = serde_json::to_vec(&manifest).unwrap();
        l.set_tag("v1", &bytes, crate::builder::MANIFEST_MEDIA_TYPE)
            .unwrap();
        for tag in [Some("v1"), None] {
            let img = read_image(dir.path(), tag).unwrap();
            assert_eq!(img.manifest, bytes);
            assert_eq!(img.layers.len(), 1);
            assert_eq!((&img.layers[0].digest, img.layers[0].size), (&layer, 11));
            assert_eq!(img.config.digest, config);
        }
        let err = format!("{:#}", read_image(dir.path(), Some("v2")).unwrap_err());
        assert!(err.contains("\"v2\"") && err.contains("tags: v1"), "{err}");
        std::fs::write(dir.path().join("blobs/sha256").join(layer.hex()), b"short").unwrap();
        let err = format!("{:#}", read_image(dir.path(), Some("v1")).unwrap_err());
        assert!(err.contains("layer 0") && err.contains("5 bytes"), "{err}");
        std::fs::remove_file(dir.path().join("blobs/sha256").join(layer.hex())).unwrap();
        let err = format!("{:#}", read_image(dir.path(), Some("v1")).unwrap_err());
        assert!(err.contains("missing blob"), "{err}");
        let err = format!(
            "{:#}",
            read_image(&dir.path().join("nope"), None).unwrap_err()
        );
        assert!(err.contains("not an OCI layout"), "{err}");
    }
}
