//! Content digests (`sha256:<64 hex>`), the only algorithm Kiln accepts for blobs it verifies.

use std::fmt;
use std::str::FromStr;

use sha2::{Digest as _, Sha256};

/// A validated `sha256:` content digest.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Digest(String);

/// Why a string is not a digest Kiln can verify.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DigestError {
    /// No `algorithm:` prefix.
    #[error("digest {0:?} has no algorithm prefix (expected sha256:<64 hex digits>)")]
    NoAlgorithm(String),
    /// An algorithm other than sha256.
    #[error("digest {0:?} uses an unsupported algorithm (only sha256 is verified)")]
    Unsupported(String),
    /// Wrong length or non-lowercase-hex characters.
    #[error("digest {0:?} is malformed (expected sha256:<64 lowercase hex digits>)")]
    Malformed(String),
}

impl Digest {
    /// The digest of `bytes`.
    pub fn of(bytes: &[u8]) -> Self {
        Self::from_sha256(Sha256::digest(bytes).into())
    }

    /// Wraps a finished sha256 state.
    pub fn from_sha256(raw: [u8; 32]) -> Self {
        Self(format!("sha256:{}", hex::encode(raw)))
    }

    /// The 64 hex digits.
    pub fn hex(&self) -> &str {
        &self.0["sha256:".len()..]
    }

    /// `sha256:<hex>`.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl FromStr for Digest {
    type Err = DigestError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let Some((alg, hex)) = s.split_once(':') else {
            return Err(DigestError::NoAlgorithm(s.to_owned()));
        };
        if alg != "sha256" {
            return Err(DigestError::Unsupported(s.to_owned()));
        }
        if hex.len() != 64 || !hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
            return Err(DigestError::Malformed(s.to_owned()));
        }
        Ok(Self(s.to_owned()))
    }
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl From<&Digest> for oci_spec::image::Digest {
    fn from(d: &Digest) -> Self {
        oci_spec::image::Digest::from_str(d.as_str()).expect("a validated sha256 digest")
    }
}

impl TryFrom<&oci_spec::image::Digest> for Digest {
    type Error = DigestError;
    fn try_from(d: &oci_spec::image::Digest) -> Result<Self, Self::Error> {
        d.to_string().parse()
    }
}

/// A `Write`/`Read` tee that hashes and counts what passes through.
#[derive(Clone, Default)]
pub struct Hasher {
    state: Sha256,
    len: u64,
}

impl Hasher {
    /// Adds bytes.
    pub fn update(&mut self, bytes: &[u8]) {
        self.state.update(bytes);
        self.len += bytes.len() as u64;
    }
    /// Bytes hashed so far.
    pub fn len(&self) -> u64 {
        self.len
    }
    /// True when nothing was hashed.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
    /// The digest of everything hashed so far (the state is kept).
    pub fn digest(&self) -> Digest {
        Digest::from_sha256(self.state.clone().finalize().into())
    }
}

/// Wraps a writer, hashing and counting every byte written.
pub struct HashingWriter<W> {
    /// The wrapped writer.
    pub inner: W,
    /// Hash of what was written.
    pub hasher: Hasher,
}

impl<W: std::io::Write> std::io::Write for HashingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        Ok(n)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

/// Wraps a reader, hashing and counting every byte read.
pub struct HashingReader<R> {
    /// The wrapped reader.
    pub inner: R,
    /// Hash of what was read.
    pub hasher: Hasher,
}

impl<R: std::io::Read> std::io::Read for HashingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        Ok(n)
    }
}

/// Wraps a reader whose bytes must hash to `expected`: at the end of the stream it returns
/// `Ok(0)` only if they did, else an `InvalidData` error naming `label` and both digests.
/// (The same contract as [`crate::blob::BlobReader`], for blobs already on disk.)
pub struct VerifyingReader<R> {
    inner: HashingReader<R>,
    expected: Digest,
    label: String,
}

impl<R> VerifyingReader<R> {
    /// Wraps `inner`; `label` names the blob in the mismatch error.
    pub fn new(inner: R, expected: Digest, label: &str) -> Self {
        Self {
            inner: HashingReader {
                inner,
                hasher: Hasher::default(),
            },
            expected,
            label: label.to_owned(),
        }
    }
}

impl<R: std::io::Read> std::io::Read for VerifyingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        if n == 0 && !buf.is_empty() {
            let seen = self.inner.hasher.digest();
            if seen != self.expected {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::InvalidData,
                    format!(
                        "digest mismatch for {}: expected {}, got {seen}",
                        self.label, self.expected
                    ),
                ));
            }
        }
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_table() {
        let good = "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";
        let cases: &[(&str, Result<(), DigestError>)] = &[
            (good, Ok(())),
            ("e3b0c442", Err(DigestError::NoAlgorithm("e3b0c442".into()))),
            (
                "sha512:00",
                Err(DigestError::Unsupported("sha512:00".into())),
            ),
            (
                "sha256:abc",
                Err(DigestError::Malformed("sha256:abc".into())),
            ),
            (
                "sha256:E3B0C44298FC1C149AFBF4C8996FB92427AE41E4649B934CA495991B7852B855",
                Err(DigestError::Malformed(
                    "sha256:E3B0C44298FC1C149AFBF4C8996FB92427AE41E4649B934CA495991B7852B855"
                        .into(),
                )),
            ),
        ];
        for (input, want) in cases {
            assert_eq!(input.parse::<Digest>().map(|_| ()), *want, "{input}");
        }
        assert_eq!(Digest::of(b"").as_str(), good);
    }

    #[test]
    fn hasher_matches_one_shot() {
        let mut h = Hasher::default();
        h.update(b"hello ");
        h.update(b"world");
        assert_eq!(h.digest(), Digest::of(b"hello world"));
        assert_eq!(h.len(), 11);
    }

    #[test]
    fn verifying_reader() {
        use std::io::Read as _;
        let data = b"hello kiln";
        let good = Digest::of(data);
        let mut out = Vec::new();
        VerifyingReader::new(&data[..], good.clone(), "x")
            .read_to_end(&mut out)
            .unwrap();
        assert_eq!(out, data);
        let e = VerifyingReader::new(&b"hello kilm"[..], good.clone(), "sha256:x")
            .read_to_end(&mut Vec::new())
            .unwrap_err();
        assert_eq!(e.kind(), std::io::ErrorKind::InvalidData);
        let msg = e.to_string();
        assert!(
            msg.contains("digest mismatch for sha256:x") && msg.contains(good.as_str()),
            "{msg}"
        );
    }
}
