//! Writing an OCI image layout directory (`oci-layout`, `index.json`, `blobs/sha256/`), as
//! read by skopeo (`oci:DIR:TAG`), umoci and `kiln-image`.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

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
}
