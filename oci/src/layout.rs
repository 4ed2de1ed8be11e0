//! Writing an OCI image layout directory (`oci-layout`, `index.json`, `blobs/sha256/`), as
//! read by skopeo (`oci:DIR:TAG`), umoci and `kiln-image`; reading one back (one tagged
//! image manifest) so that it can be pushed (`kiln-image push`, the root tests), or the
//! image for a platform with its blobs as verified streams (the agent's `--image-file`).

use std::fs::File;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use serde_json::Value;

use crate::builder::{BlobFile, BuiltImage, MANIFEST_MEDIA_TYPE};
use crate::digest::{Digest, VerifyingReader};

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
        blob_path(&self.dir, digest)
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

impl BuiltImage {
    /// Writes the image into an OCI layout directory under `tag`.
    pub fn write_layout(&self, dir: &Path, tag: &str) -> Result<Digest> {
        let layout = Layout::create(dir)?;
        for b in self.layers.iter().chain([&self.config]) {
            layout.add_blob_file(&b.path, &b.digest)?;
        }
        layout.set_tag(tag, &self.manifest, MANIFEST_MEDIA_TYPE)
    }
}

/// Path of the blob `digest` in the layout at `dir`.
pub fn blob_path(dir: &Path, digest: &Digest) -> PathBuf {
    dir.join("blobs/sha256").join(digest.hex())
}

/// Opens the blob `digest` of the layout at `dir` as a verified stream (an error instead of
/// EOF when its bytes do not hash to `digest`).
pub fn open_blob(dir: &Path, digest: &Digest) -> Result<VerifyingReader<File>> {
    let p = blob_path(dir, digest);
    let f = File::open(&p).with_context(|| format!("opening blob {}", p.display()))?;
    Ok(VerifyingReader::new(f, digest.clone(), digest.as_str()))
}

/// The entries of the layout's `index.json`.
fn index_entries(dir: &Path) -> Result<Vec<Value>> {
    let index_path = dir.join("index.json");
    let index: Value = serde_json::from_slice(
        &std::fs::read(&index_path)
            .with_context(|| format!("reading {} (not an OCI layout?)", index_path.display()))?,
    )
    .with_context(|| format!("parsing {}", index_path.display()))?;
    match index["manifests"].as_array() {
        Some(a) => Ok(a.clone()),
        None => bail!("{} has no manifests array", index_path.display()),
    }
}

/// The blob file named by descriptor `d`, checked to exist with the descriptor's size.
fn blob_file(dir: &Path, d: &Value, what: &str) -> Result<BlobFile> {
    let digest: Digest = d["digest"]
        .as_str()
        .with_context(|| format!("{what}: no digest"))?
        .parse()
        .with_context(|| format!("{what}: bad digest"))?;
    let path = blob_path(dir, &digest);
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
}

/// A manifest or index named by `d`: its blob, bytes (digest-checked) and JSON.
fn json_blob(dir: &Path, d: &Value) -> Result<(BlobFile, Vec<u8>, Value)> {
    let m = blob_file(dir, d, "manifest")?;
    let bytes = std::fs::read(&m.path).with_context(|| format!("reading {}", m.path.display()))?;
    anyhow::ensure!(
        Digest::of(&bytes) == m.digest,
        "manifest {}: blob {} does not match its digest",
        m.digest,
        m.path.display()
    );
    let json: Value =
        serde_json::from_slice(&bytes).with_context(|| format!("parsing manifest {}", m.digest))?;
    Ok((m, bytes, json))
}

/// The image whose manifest is `json` (bytes `manifest`).
fn image(dir: &Path, m: &BlobFile, manifest: Vec<u8>, json: &Value) -> Result<BuiltImage> {
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
        .map(|(i, l)| blob_file(dir, l, &format!("layer {i}")))
        .collect::<Result<Vec<_>>>()?;
    Ok(BuiltImage {
        layers,
        config: blob_file(dir, &json["config"], "config")?,
        manifest,
    })
}

/// Reads the image manifest tagged `tag` from the layout at `dir` (a single tagged manifest is
/// taken when `tag` is `None`). The manifest bytes are checked against the index's digest and
/// every blob file against its descriptor's size; blob digests are checked by the registry
/// when pushed.
pub fn read_image(dir: &Path, tag: Option<&str>) -> Result<BuiltImage> {
    let entries = index_entries(dir)?;
    let name = |m: &Value| {
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
        None => bail!(
            "{} holds {} manifests: name a tag",
            dir.display(),
            entries.len()
        ),
    };
    let (m, bytes, json) = json_blob(dir, entry)?;
    image(dir, &m, bytes, &json)
}

/// Reads the image for `os`/`architecture` from the layout at `dir`, through nested indexes
/// (the first entry of an index when none names that platform): what the agent's
/// `provision --image-file` reads. Checked as in [`read_image`].
pub fn read_platform_image(dir: &Path, os: &str, architecture: &str) -> Result<BuiltImage> {
    let pick = |entries: &[Value]| -> Option<Value> {
        entries
            .iter()
            .find(|m| m["platform"]["os"] == os && m["platform"]["architecture"] == architecture)
            .or_else(|| entries.first())
            .cloned()
    };
    let mut entry = pick(&index_entries(dir)?)
        .with_context(|| format!("{}/index.json lists no image", dir.display()))?;
    for _ in 0..4 {
        let (m, bytes, json) = json_blob(dir, &entry)?;
        match json["manifests"].as_array() {
            Some(nested) => {
                entry = pick(nested)
                    .with_context(|| format!("index {} in {} is empty", m.digest, dir.display()))?
            }
            None => return image(dir, &m, bytes, &json),
        }
    }
    bail!("image index nesting too deep in {}", dir.display())
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
