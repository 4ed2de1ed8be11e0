//! Compression sniffed from the first bytes (never from names or media types).

use std::io::{self, Cursor, Read};

use serde::{Deserialize, Serialize};

/// Stream compression.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Compression {
    /// Zstandard (`28 b5 2f fd`).
    Zstd,
    /// gzip (`1f 8b`).
    Gzip,
    /// xz (`fd 37 7a 58 5a 00`).
    Xz,
    /// Anything else: raw bytes.
    None,
}

/// Recognises the compression from the first bytes (6 are enough).
pub fn sniff(head: &[u8]) -> Compression {
    if head.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
        Compression::Zstd
    } else if head.starts_with(&[0x1f, 0x8b]) {
        Compression::Gzip
    } else if head.starts_with(&[0xfd, b'7', b'z', b'X', b'Z', 0]) {
        Compression::Xz
    } else {
        Compression::None
    }
}

/// Reads up to `n` bytes, fewer only at EOF.
pub(crate) fn read_head<R: Read>(r: &mut R, n: usize) -> io::Result<Vec<u8>> {
    let mut head = vec![0u8; n];
    let mut got = 0;
    while got < n {
        match r.read(&mut head[got..]) {
            Ok(0) => break,
            Ok(k) => got += k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    head.truncate(got);
    Ok(head)
}

/// Wraps `r` in the decompressor its first bytes call for. Concatenated members/frames are
/// accepted; trailing garbage after a compressed stream is an error from the decoder.
pub fn decompress<'a, R: Read + Send + 'a>(
    mut r: R,
) -> io::Result<(Compression, Box<dyn Read + Send + 'a>)> {
    let head = read_head(&mut r, 6)?;
    let kind = sniff(&head);
    let joined = Cursor::new(head).chain(r);
    let out: Box<dyn Read + Send + 'a> = match kind {
        Compression::Zstd => Box::new(zstd::stream::read::Decoder::new(joined)?),
        Compression::Gzip => Box::new(flate2::read::MultiGzDecoder::new(joined)),
        Compression::Xz => Box::new(liblzma::read::XzDecoder::new_multi_decoder(joined)),
        Compression::None => Box::new(joined),
    };
    Ok((kind, out))
}

/// [`decompress`] for readers that are not `Send` (used on one thread only).
pub fn decompress_local<'a, R: Read + 'a>(
    mut r: R,
) -> io::Result<(Compression, Box<dyn Read + 'a>)> {
    let head = read_head(&mut r, 6)?;
    let kind = sniff(&head);
    let joined = Cursor::new(head).chain(r);
    let out: Box<dyn Read + 'a> = match kind {
        Compression::Zstd => Box::new(zstd::stream::read::Decoder::new(joined)?),
        Compression::Gzip => Box::new(flate2::read::MultiGzDecoder::new(joined)),
        Compression::Xz => Box::new(liblzma::read::XzDecoder::new_multi_decoder(joined)),
        Compression::None => Box::new(joined),
    };
    Ok((kind, out))
}

#[cfg(test)]
pub(crate) mod tests {
    use std::io::Write;

    use super::*;

    pub fn compress(kind: Compression, data: &[u8]) -> Vec<u8> {
        match kind {
            Compression::Zstd => zstd::encode_all(data, 3).unwrap(),
            Compression::Gzip => {
                let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
                e.write_all(data).unwrap();
                e.finish().unwrap()
            }
            Compression::Xz => {
                let mut e = liblzma::write::XzEncoder::new(Vec::new(), 1);
                e.write_all(data).unwrap();
                e.finish().unwrap()
            }
            Compression::None => data.to_vec(),
        }
    }

    #[test]
    fn round_trip_every_kind() {
        let data: Vec<u8> = (0..300_000u32).map(|i| (i * 7 % 251) as u8).collect();
        for kind in [
            Compression::Zstd,
            Compression::Gzip,
            Compression::Xz,
            Compression::None,
        ] {
            let c = compress(kind, &data);
            let (k, mut r) = decompress(&c[..]).unwrap();
            assert_eq!(k, kind);
            let mut out = Vec::new();
            r.read_to_end(&mut out).unwrap();
            assert_eq!(out, data, "{kind:?}");
        }
    }

    #[test]
    fn short_and_empty_inputs_are_raw() {
        for input in [&b""[..], b"\x1f", b"ab"] {
            let (k, mut r) = decompress(input).unwrap();
            assert_eq!(k, Compression::None);
            let mut out = Vec::new();
            r.read_to_end(&mut out).unwrap();
            assert_eq!(out, input);
        }
    }

    #[test]
    fn truncated_or_trailing_garbage_fails() {
        let data = vec![42u8; 100_000];
        for kind in [Compression::Zstd, Compression::Gzip, Compression::Xz] {
            let c = compress(kind, &data);
            let mut out = Vec::new();
            let (_, mut r) = decompress(&c[..c.len() - 5]).unwrap();
            assert!(
                r.read_to_end(&mut out).is_err(),
                "{kind:?} truncated accepted"
            );
            let mut g = c.clone();
            g.extend_from_slice(b"garbage!");
            let (_, mut r) = decompress(&g[..]).unwrap();
            assert!(
                r.read_to_end(&mut Vec::new()).is_err(),
                "{kind:?} trailing garbage accepted"
            );
        }
    }
}
