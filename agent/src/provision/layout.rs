//! A minimal reader of OCI image layout directories (`index.json`, `blobs/sha256/...`) for
//! hand runs and tests, with the same verified-stream contract as kiln-oci: the reader
//! returns an error instead of EOF when the blob's sha256 does not match. The real
//! registry client lives in kiln-oci; this only serves `provision --image-file`.

use std::fs::File;
use std::io::{self, Read};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use serde::Deserialize;
use sha2::{Digest, Sha256};

/// A file whose bytes must hash to `expected` (hex sha256) by EOF.
pub struct Verified<R> {
    inner: R,
    hasher: Sha256,
    expected: String,
    label: String,
}

impl<R: Read> Verified<R> {
    /// Wraps `inner`.
    pub fn new(inner: R, expected_hex: &str, label: &str) -> Self {
        Verified {
            inner,
            hasher: Sha256::new(),
            expected: expected_hex.to_ascii_lowercase(),
            label: label.into(),
        }
    }
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

impl<R: Read> Read for Verified<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        if n == 0 && !buf.is_empty() {
            let got = hex(&self.hasher.clone().finalize());
            if got != self.expected {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!(
                        "digest mismatch for {}: expected sha256:{}, got sha256:{got}",
                        self.label, self.expected
                    ),
                ));
            }
        }
        self.hasher.update(&buf[..n]);
        Ok(n)
    }
}

/// One layer of the manifest.
#[derive(Debug, Clone, Deserialize)]
pub struct Descriptor {
    /// Media type.
    #[serde(rename = "mediaType", default)]
    pub media_type: String,
    /// `sha256:<hex>`.
    pub digest: String,
    /// Size in bytes.
    pub size: u64,
    /// Platform (index entries).
    #[serde(default)]
    pub platform: Option<Platform>,
}

/// Platform of an index entry.
#[derive(Debug, Clone, Deserialize)]
pub struct Platform {
    /// `amd64`...
    pub architecture: String,
    /// `linux`.
    pub os: String,
}

#[derive(Deserialize)]
struct Index {
    manifests: Vec<Descriptor>,
}

#[derive(Deserialize)]
struct Manifest {
    #[serde(default)]
    manifests: Option<Vec<Descriptor>>,
    #[serde(default)]
    layers: Vec<Descriptor>,
}

/// Path of a blob.
pub fn blob_path(dir: &Path, digest: &str) -> Result<PathBuf> {
    let hex = digest
        .strip_prefix("sha256:")
        .with_context(|| format!("unsupported digest {digest:?} (sha256 only)"))?;
    if hex.len() != 64 || !hex.bytes().all(|c| c.is_ascii_hexdigit()) {
        bail!("malformed digest {digest:?}");
    }
    Ok(dir.join("blobs/sha256").join(hex))
}

/// Opens a blob as a verified stream.
pub fn open_blob(dir: &Path, d: &Descriptor) -> Result<Verified<File>> {
    let p = blob_path(dir, &d.digest)?;
    let f = File::open(&p).with_context(|| format!("opening blob {}", p.display()))?;
    Ok(Verified::new(
        f,
        d.digest.trim_start_matches("sha256:"),
        &d.digest,
    ))
}

fn read_json<T: for<'a> Deserialize<'a>>(dir: &Path, d: &Descriptor) -> Result<T> {
    let mut v = Vec::new();
    open_blob(dir, d)?.read_to_end(&mut v)?;
    serde_json::from_slice(&v).with_context(|| format!("parsing {}", d.digest))
}

/// The layers of the first (or linux/amd64) image in the layout at `dir`.
pub fn layers(dir: &Path) -> Result<Vec<Descriptor>> {
    let idx_path = dir.join("index.json");
    let idx: Index = serde_json::from_slice(
        &std::fs::read(&idx_path).with_context(|| format!("reading {}", idx_path.display()))?,
    )
    .with_context(|| format!("parsing {}", idx_path.display()))?;
    let pick = |ms: &[Descriptor]| -> Option<Descriptor> {
        ms.iter()
            .find(|m| {
                m.platform
                    .as_ref()
                    .is_some_and(|p| p.os == "linux" && p.architecture == "amd64")
            })
            .or_else(|| ms.first())
            .cloned()
    };
    let mut d =
        pick(&idx.manifests).with_context(|| format!("{} lists no image", idx_path.display()))?;
    for _ in 0..4 {
        let m: Manifest = read_json(dir, &d)?;
        match m.manifests {
            Some(ms) => d = pick(&ms).context("empty nested index")?,
            None => return Ok(m.layers),
        }
    }
    bail!("image index nesting too deep in {}", dir.display())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verified_reader() {
        let data = b"hello kiln";
        let good = hex(&Sha256::digest(data));
        let mut out = Vec::new();
        Verified::new(&data[..], &good, "x")
            .read_to_end(&mut out)
            .unwrap();
        assert_eq!(out, data);
        let e = Verified::new(&b"hello kilm"[..], &good, "sha256:x")
            .read_to_end(&mut Vec::new())
            .unwrap_err();
        assert!(
            e.to_string().contains("digest mismatch for sha256:x"),
            "{e}"
        );
    }
}
