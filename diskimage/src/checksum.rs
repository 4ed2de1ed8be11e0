//! Checksums of disk images: `TYPE:HEX` or bare `HEX` (type detected from the length: 32 md5,
//! 64 sha256, 128 sha512), an entry found in a `SHA256SUMS`-style checksum file (GNU `HEX  name`
//! and BSD `SHA256 (name) = HEX` lines), and a hashing `Read` adapter that gives its verdict
//! after end of file.

use std::fmt;
use std::io::{self, Read};
use std::str::FromStr;

use sha2::Digest;

/// A hash algorithm an operator may name.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Algorithm {
    Md5,
    Sha256,
    Sha512,
}

impl Algorithm {
    /// The algorithm whose hex digest has `len` characters.
    pub fn from_hex_len(len: usize) -> Option<Algorithm> {
        match len {
            32 => Some(Algorithm::Md5),
            64 => Some(Algorithm::Sha256),
            128 => Some(Algorithm::Sha512),
            _ => None,
        }
    }

    /// The lowercase name (`md5`, `sha256`, `sha512`).
    pub fn name(self) -> &'static str {
        match self {
            Algorithm::Md5 => "md5",
            Algorithm::Sha256 => "sha256",
            Algorithm::Sha512 => "sha512",
        }
    }

    fn from_name(name: &str) -> Option<Algorithm> {
        match name.to_ascii_lowercase().replace('-', "").as_str() {
            "md5" => Some(Algorithm::Md5),
            "sha256" => Some(Algorithm::Sha256),
            "sha512" => Some(Algorithm::Sha512),
            _ => None,
        }
    }
}

/// Why a checksum could not be parsed, found or matched.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ChecksumError {
    #[error("checksum {0:?}: unknown type (give md5:, sha256: or sha512:)")]
    UnknownType(String),
    #[error("checksum {0:?}: not hex")]
    NotHex(String),
    #[error("checksum {value:?}: {len} hex digits, but {algorithm} has {want}")]
    WrongLength {
        value: String,
        len: usize,
        algorithm: &'static str,
        want: usize,
    },
    #[error(
        "checksum {0:?}: {1} hex digits match no type (32 md5, 64 sha256, 128 sha512); give TYPE:HEX"
    )]
    UndetectedType(String, usize),
    #[error("checksum file has no entry for {0:?}")]
    NotListed(String),
    #[error("{algorithm} of the image is {actual}, expected {expected}")]
    Mismatch {
        algorithm: &'static str,
        expected: String,
        actual: String,
    },
}

/// An expected digest.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Checksum {
    pub algorithm: Algorithm,
    pub digest: Vec<u8>,
}

impl fmt::Display for Checksum {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.algorithm.name(), hex::encode(&self.digest))
    }
}

impl FromStr for Checksum {
    type Err = ChecksumError;

    /// `TYPE:HEX` or `HEX`.
    fn from_str(s: &str) -> Result<Checksum, ChecksumError> {
        let s = s.trim();
        match s.split_once(':') {
            Some((name, hex)) => {
                let algorithm = Algorithm::from_name(name)
                    .ok_or_else(|| ChecksumError::UnknownType(s.into()))?;
                Checksum::with(algorithm, hex, s)
            }
            None => {
                let algorithm = Algorithm::from_hex_len(s.len())
                    .ok_or_else(|| ChecksumError::UndetectedType(s.into(), s.len()))?;
                Checksum::with(algorithm, s, s)
            }
        }
    }
}

impl Checksum {
    fn with(
        algorithm: Algorithm,
        hex_digits: &str,
        whole: &str,
    ) -> Result<Checksum, ChecksumError> {
        let want = match algorithm {
            Algorithm::Md5 => 32,
            Algorithm::Sha256 => 64,
            Algorithm::Sha512 => 128,
        };
        if hex_digits.len() != want {
            return Err(ChecksumError::WrongLength {
                value: whole.into(),
                len: hex_digits.len(),
                algorithm: algorithm.name(),
                want,
            });
        }
        let digest = hex::decode(hex_digits).map_err(|_| ChecksumError::NotHex(whole.into()))?;
        Ok(Checksum { algorithm, digest })
    }

    /// Finds `name`'s entry in a checksum file (`SHA256SUMS`, `MD5SUMS`, BSD `sha512 -r` or
    /// `shasum --tag` output). Entries match on the whole name or on its last `/` component;
    /// comment, blank and other lines (a PGP signature's armour) are skipped.
    pub fn from_sums_file(text: &str, name: &str) -> Result<Checksum, ChecksumError> {
        let base = |n: &str| {
            n.trim_start_matches("./")
                .rsplit('/')
                .next()
                .unwrap_or("")
                .to_string()
        };
        let wanted = base(name);
        for line in text.lines().map(str::trim) {
            let Some((entry, parsed)) = sums_line(line) else {
                continue;
            };
            if (entry == name || base(entry) == wanted) && !wanted.is_empty() {
                return parsed;
            }
        }
        Err(ChecksumError::NotListed(name.into()))
    }
}

/// One line of a checksum file: the file name and its checksum.
fn sums_line(line: &str) -> Option<(&str, Result<Checksum, ChecksumError>)> {
    if line.is_empty() || line.starts_with('#') {
        return None;
    }
    if let Some((left, hex_digits)) = line.rsplit_once(" = ") {
        let (tag, rest) = left.split_once(" (")?;
        let name = rest.strip_suffix(')')?;
        let algorithm = Algorithm::from_name(tag)?;
        return Some((name, Checksum::with(algorithm, hex_digits.trim(), line)));
    }
    let (hex_digits, name) = line.split_once(char::is_whitespace)?;
    if !hex_digits.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    let name = name.trim_start().trim_start_matches('*');
    Some((name, hex_digits.parse()))
}

enum Hasher {
    Md5(md5::Md5),
    Sha256(sha2::Sha256),
    Sha512(sha2::Sha512),
}

impl Hasher {
    fn new(a: Algorithm) -> Hasher {
        match a {
            Algorithm::Md5 => Hasher::Md5(md5::Md5::new()),
            Algorithm::Sha256 => Hasher::Sha256(sha2::Sha256::new()),
            Algorithm::Sha512 => Hasher::Sha512(sha2::Sha512::new()),
        }
    }

    fn update(&mut self, b: &[u8]) {
        match self {
            Hasher::Md5(h) => h.update(b),
            Hasher::Sha256(h) => h.update(b),
            Hasher::Sha512(h) => h.update(b),
        }
    }

    fn finish(&self) -> Vec<u8> {
        match self {
            Hasher::Md5(h) => h.clone().finalize().to_vec(),
            Hasher::Sha256(h) => h.clone().finalize().to_vec(),
            Hasher::Sha512(h) => h.clone().finalize().to_vec(),
        }
    }
}

/// A `Read` adapter hashing every byte read through it; [`HashingReader::verdict`] compares
/// the digest with the expected one once the inner reader has ended.
pub struct HashingReader<R> {
    inner: R,
    hasher: Hasher,
    expected: Checksum,
    bytes: u64,
    at_eof: bool,
}

impl<R: Read> HashingReader<R> {
    pub fn new(inner: R, expected: Checksum) -> HashingReader<R> {
        HashingReader {
            inner,
            hasher: Hasher::new(expected.algorithm),
            expected,
            bytes: 0,
            at_eof: false,
        }
    }

    /// Bytes hashed so far.
    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    /// `Ok` when the input has ended and its digest is the expected one. Before end of file
    /// the verdict is always a mismatch (a truncated stream never verifies).
    pub fn verdict(&self) -> Result<(), ChecksumError> {
        let actual = self.hasher.finish();
        if self.at_eof && actual == self.expected.digest {
            return Ok(());
        }
        let actual = if self.at_eof {
            hex::encode(actual)
        } else {
            format!("(stream not read to its end after {} bytes)", self.bytes)
        };
        Err(ChecksumError::Mismatch {
            algorithm: self.expected.algorithm.name(),
            expected: hex::encode(&self.expected.digest),
            actual,
        })
    }
}

impl<R: Read> Read for HashingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        if n == 0 && !buf.is_empty() {
            self.at_eof = true;
        }
        self.hasher.update(&buf[..n]);
        self.bytes += n as u64;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MD5_ABC: &str = "900150983cd24fb0d6963f7d28e17f72";
    const SHA256_ABC: &str = "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad";
    const SHA512_ABC: &str = "ddaf35a193617abacc417349ae20413112e6fa4e89a97ea20a9eeee64b55d39a2192992a274fc1a836ba3c23a3feebbd454d4423643ce80e2a9ac94fa54ca49f";

    #[test]
    fn parse_checksums() {
        let cases: &[(&str, Result<Algorithm, &str>)] = &[
            (MD5_ABC, Ok(Algorithm::Md5)),
            (SHA256_ABC, Ok(Algorithm::Sha256)),
            (SHA512_ABC, Ok(Algorithm::Sha512)),
            (&format!("md5:{MD5_ABC}"), Ok(Algorithm::Md5)),
            (&format!("SHA256:{SHA256_ABC}"), Ok(Algorithm::Sha256)),
            (&format!("sha-512:{SHA512_ABC}"), Ok(Algorithm::Sha512)),
            (
                &format!("sha256:{MD5_ABC}"),
                Err("32 hex digits, but sha256 has 64"),
            ),
            (&format!("sha1:{MD5_ABC}"), Err("unknown type")),
            ("abcd", Err("match no type")),
            (&"zz".repeat(16), Err("not hex")),
        ];
        for (input, want) in cases {
            match (input.parse::<Checksum>(), want) {
                (Ok(c), Ok(a)) => assert_eq!(c.algorithm, *a, "{input}"),
                (Err(e), Err(msg)) => assert!(e.to_string().contains(msg), "{input}: {e}"),
                (got, want) => panic!("{input}: got {got:?}, want {want:?}"),
            }
        }
    }

    #[test]
    fn sums_files() {
        let gnu = format!(
            "# comment\n{MD5_ABC}  other.img\n{SHA256_ABC}  debian-12.qcow2\n{SHA512_ABC} *bin.raw\n"
        );
        let bsd = format!(
            "-----BEGIN PGP SIGNED MESSAGE-----\nHash: SHA256\n\nSHA256 (debian-12.qcow2) = {SHA256_ABC}\nSHA512 (./dir/bin.raw) = {SHA512_ABC}\n"
        );
        let cases: &[(&str, &str, Result<Algorithm, &str>)] = &[
            (&gnu, "debian-12.qcow2", Ok(Algorithm::Sha256)),
            (
                &gnu,
                "https://example.test/images/debian-12.qcow2",
                Ok(Algorithm::Sha256),
            ),
            (&gnu, "bin.raw", Ok(Algorithm::Sha512)),
            (&gnu, "other.img", Ok(Algorithm::Md5)),
            (&gnu, "missing.img", Err("no entry")),
            (&bsd, "debian-12.qcow2", Ok(Algorithm::Sha256)),
            (&bsd, "bin.raw", Ok(Algorithm::Sha512)),
            (&bsd, "other.img", Err("no entry")),
        ];
        for (text, name, want) in cases {
            match (Checksum::from_sums_file(text, name), want) {
                (Ok(c), Ok(a)) => assert_eq!(c.algorithm, *a, "{name}"),
                (Err(e), Err(msg)) => assert!(e.to_string().contains(msg), "{name}: {e}"),
                (got, want) => panic!("{name}: got {got:?}, want {want:?}"),
            }
        }
    }

    #[test]
    fn hashing_reader_verdicts() {
        let cases: &[(&str, &[u8], bool, bool)] = &[
            (MD5_ABC, b"abc", true, true),
            (SHA256_ABC, b"abc", true, true),
            (SHA512_ABC, b"abc", true, true),
            (SHA256_ABC, b"abd", true, false),
            (SHA256_ABC, b"abc", false, false),
        ];
        for (sum, data, read_all, ok) in cases {
            let mut r = HashingReader::new(*data, sum.parse().unwrap());
            let mut out = Vec::new();
            if *read_all {
                r.read_to_end(&mut out).unwrap();
            } else {
                r.read_exact(&mut [0; 3]).unwrap();
            }
            assert_eq!(
                r.verdict().is_ok(),
                *ok,
                "{sum} {data:?} read_all={read_all}: {:?}",
                r.verdict()
            );
        }
    }
}
