//! The OCI image layout directories of `provision --image-file` (hand runs and tests), read
//! by kiln-oci's layout reader ([`kiln_oci::layout::read_platform_image`]: linux/amd64 or
//! the first image, through nested indexes, every blob size-checked) and streamed through
//! kiln-oci's verifying reader: a blob whose sha256 does not match is an error instead of EOF.

use std::fs::File;
use std::io::{self, Read};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use kiln_oci::digest::{Digest, VerifyingReader};

/// A stream whose bytes must hash to `expected` (hex sha256) by EOF: kiln-oci's
/// [`VerifyingReader`] for a digest given as hex.
pub struct Verified<R>(std::result::Result<VerifyingReader<R>, String>);

impl<R: Read> Verified<R> {
    /// Wraps `inner`; a malformed `expected_hex` fails the first read.
    pub fn new(inner: R, expected_hex: &str, label: &str) -> Self {
        let expected = format!("sha256:{}", expected_hex.to_ascii_lowercase());
        Verified(match expected.parse::<Digest>() {
            Ok(d) => Ok(VerifyingReader::new(inner, d, label)),
            Err(e) => Err(format!("{label}: {e}")),
        })
    }
}

impl<R: Read> Read for Verified<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match &mut self.0 {
            Ok(r) => r.read(buf),
            Err(e) => Err(io::Error::new(io::ErrorKind::InvalidInput, e.clone())),
        }
    }
}

/// One layer of the image.
#[derive(Debug, Clone)]
pub struct Descriptor {
    /// Media type.
    pub media_type: String,
    /// `sha256:<hex>`.
    pub digest: String,
    /// Size in bytes.
    pub size: u64,
}

/// Path of a blob.
pub fn blob_path(dir: &Path, digest: &str) -> Result<PathBuf> {
    let d: Digest = digest
        .parse()
        .with_context(|| format!("blob {digest:?} of {}", dir.display()))?;
    Ok(kiln_oci::layout::blob_path(dir, &d))
}

/// Opens a blob as a verified stream.
pub fn open_blob(dir: &Path, d: &Descriptor) -> Result<VerifyingReader<File>> {
    let digest: Digest = d
        .digest
        .parse()
        .with_context(|| format!("layer of {}", dir.display()))?;
    kiln_oci::layout::open_blob(dir, &digest)
}

/// The layers of the linux/amd64 (or first) image in the layout at `dir`.
pub fn layers(dir: &Path) -> Result<Vec<Descriptor>> {
    let image = kiln_oci::layout::read_platform_image(dir, "linux", "amd64")?;
    Ok(image
        .layers
        .into_iter()
        .map(|b| Descriptor {
            media_type: b.media_type,
            digest: b.digest.as_str().to_owned(),
            size: b.size,
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verified_reader() {
        let data = b"hello kiln";
        let good = Digest::of(data);
        let mut out = Vec::new();
        Verified::new(&data[..], good.hex(), "x")
            .read_to_end(&mut out)
            .unwrap();
        assert_eq!(out, data);
        let e = Verified::new(&b"hello kilm"[..], good.hex(), "sha256:x")
            .read_to_end(&mut Vec::new())
            .unwrap_err();
        assert!(
            e.to_string().contains("digest mismatch for sha256:x"),
            "{e}"
        );
        let e = Verified::new(&data[..], "zz", "l0")
            .read_to_end(&mut Vec::new())
            .unwrap_err();
        assert!(e.to_string().contains("l0"), "{e}");
    }
}
