//! Compression sniffed from the first bytes of a stream (zstd, gzip, xz, or none), never from a
//! name or media type, and a `Read` adapter that decompresses accordingly.
//!
//! The adapter reads its input to the very end: once the decompressed stream ends, any byte left
//! in the input is an error (trailing garbage), and the input's own end-of-stream verdict (for a
//! [`crate::blob::BlobReader`], the digest check) reaches the consumer before it sees `Ok(0)`.

use std::io::{self, BufRead, BufReader, Chain, Cursor, Read, Write};

use serde::{Deserialize, Serialize};

/// A compression format recognised by its magic bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Compression {
    /// Zstandard (`28 b5 2f fd`).
    Zstd,
    /// gzip (`1f 8b`).
    Gzip,
    /// xz (`fd 37 7a 58 5a 00`).
    Xz,
    /// No known magic: the bytes are taken as they are.
    None,
}

/// Longest magic we look at.
pub const SNIFF_LEN: usize = 6;

impl Compression {
    /// Detects the format from the first bytes of a stream (give at least [`SNIFF_LEN`] bytes
    /// unless the stream is shorter).
    pub fn sniff(prefix: &[u8]) -> Self {
        if prefix.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
            Self::Zstd
        } else if prefix.starts_with(&[0x1f, 0x8b]) {
            Self::Gzip
        } else if prefix.starts_with(&[0xfd, b'7', b'z', b'X', b'Z', 0x00]) {
            Self::Xz
        } else {
            Self::None
        }
    }
}

impl std::fmt::Display for Compression {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Zstd => "zstd",
            Self::Gzip => "gzip",
            Self::Xz => "xz",
            Self::None => "uncompressed",
        })
    }
}

type Input<R> = BufReader<Chain<Cursor<Vec<u8>>, R>>;

enum Inner<R: Read> {
    Zstd(zstd::stream::read::Decoder<'static, Input<R>>),
    Gzip(flate2::bufread::MultiGzDecoder<Input<R>>),
    Xz(liblzma::bufread::XzDecoder<Input<R>>),
    None(Input<R>),
}

/// Decompresses a stream whose format is sniffed from its first bytes.
pub struct Decompressor<R: Read> {
    inner: Inner<R>,
    compression: Compression,
    finished: bool,
    /// A failure is sticky: reading again never turns it into end-of-stream.
    failed: Option<(io::ErrorKind, String)>,
}

/// Buffer between the input and the decoder.
const BUF: usize = 256 * 1024;

impl<R: Read> Decompressor<R> {
    /// Reads the first bytes of `input`, detects the compression and returns the adapter.
    pub fn new(mut input: R) -> io::Result<Self> {
        let mut prefix = vec![0u8; SNIFF_LEN];
        let mut got = 0;
        while got < SNIFF_LEN {
            match input.read(&mut prefix[got..]) {
                Ok(0) => break,
                Ok(n) => got += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        prefix.truncate(got);
        let compression = Compression::sniff(&prefix);
        let buffered = BufReader::with_capacity(BUF, Cursor::new(prefix).chain(input));
        let inner = match compression {
            Compression::Zstd => Inner::Zstd(zstd::stream::read::Decoder::with_buffer(buffered)?),
            Compression::Gzip => Inner::Gzip(flate2::bufread::MultiGzDecoder::new(buffered)),
            Compression::Xz => Inner::Xz(liblzma::bufread::XzDecoder::new_multi_decoder(buffered)),
            Compression::None => Inner::None(buffered),
        };
        Ok(Self {
            inner,
            compression,
            finished: false,
            failed: None,
        })
    }

    /// The detected compression.
    pub fn compression(&self) -> Compression {
        self.compression
    }

    fn input(&mut self) -> &mut Input<R> {
        match &mut self.inner {
            Inner::Zstd(d) => d.get_mut(),
            Inner::Gzip(d) => d.get_mut(),
            Inner::Xz(d) => d.get_mut(),
            Inner::None(r) => r,
        }
    }

    /// A decode error: read the input to its end first, so that a corrupt download is reported
    /// as what it is (the input's digest verdict) rather than as a decompression error.
    fn decode_error(&mut self, e: io::Error) -> io::Error {
        let compression = self.compression;
        let err = match io::copy(self.input(), &mut io::sink()) {
            Err(v) if v.to_string() == e.to_string() => e,
            Err(v) if v.kind() == io::ErrorKind::InvalidData => io::Error::new(
                io::ErrorKind::InvalidData,
                format!("{v} (decompressing the {compression} stream had failed first: {e})"),
            ),
            _ => io::Error::new(
                io::ErrorKind::InvalidData,
                format!("decompressing {compression} stream: {e}"),
            ),
        };
        self.failed = Some((err.kind(), err.to_string()));
        err
    }

    /// After the decoder ended: the input must end too (its own verdict comes with its end).
    fn drain_input(&mut self) -> io::Result<()> {
        let compression = self.compression;
        let input = self.input();
        let buf = input.fill_buf()?;
        if buf.is_empty() {
            return Ok(());
        }
        Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("trailing data after the end of the {compression} stream"),
        ))
    }
}

impl<R: Read> Read for Decompressor<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if let Some((kind, msg)) = &self.failed {
            return Err(io::Error::new(*kind, msg.clone()));
        }
        if self.finished || buf.is_empty() {
            return Ok(0);
        }
        let result = match &mut self.inner {
            Inner::Zstd(d) => d.read(buf),
            Inner::Gzip(d) => d.read(buf),
            Inner::Xz(d) => d.read(buf),
            Inner::None(r) => r.read(buf),
        };
        let n = match result {
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => return Err(e),
            Err(e) => return Err(self.decode_error(e)),
        };
        if n == 0 {
            if let Err(e) = self.drain_input() {
                self.failed = Some((e.kind(), e.to_string()));
                return Err(e);
            }
            self.finished = true;
        }
        Ok(n)
    }
}

/// Compresses `data` in memory (test fixtures and small blobs; images are built by
/// [`crate::builder`], which streams).
pub fn compress(c: Compression, data: &[u8]) -> Vec<u8> {
    fn encode(c: Compression, data: &[u8]) -> io::Result<Vec<u8>> {
        Ok(match c {
            Compression::Zstd => zstd::encode_all(data, 3)?,
            Compression::Gzip => {
                let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
                e.write_all(data)?;
                e.finish()?
            }
            Compression::Xz => {
                let mut e = liblzma::write::XzEncoder::new(Vec::new(), 1);
                e.write_all(data)?;
                e.finish()?
            }
            Compression::None => data.to_vec(),
        })
    }
    // Writing into a Vec cannot fail; only a broken encoder could, and that is a bug.
    encode(c, data).expect("in-memory compression failed")
}

#[cfg(test)]
pub(crate) mod tests {
    pub(crate) use super::compress;
    use super::*;

    /// A reader returning at most one byte per read, to exercise short reads.
    struct Trickle<R>(R);
    impl<R: Read> Read for Trickle<R> {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            let n = buf.len().min(1);
            self.0.read(&mut buf[..n])
        }
    }

    #[test]
    fn sniff_table() {
        let cases: &[(&[u8], Compression)] = &[
            (&[0x28, 0xb5, 0x2f, 0xfd, 0x04, 0x00], Compression::Zstd),
            (&[0x1f, 0x8b, 0x08], Compression::Gzip),
            (&[0xfd, b'7', b'z', b'X', b'Z', 0x00], Compression::Xz),
            (&[0xfd, b'7', b'z', b'X', b'Z'], Compression::None),
            (&[0xeb, 0x63, 0x90], Compression::None), // an MBR boot jump
            (b"", Compression::None),
        ];
        for (prefix, want) in cases {
            assert_eq!(Compression::sniff(prefix), *want, "{prefix:x?}");
        }
    }

    #[test]
    fn roundtrip_every_format_with_short_reads() {
        let data: Vec<u8> = (0..300_000u32).map(|i| (i * 7 % 251) as u8).collect();
        for c in [
            Compression::Zstd,
            Compression::Gzip,
            Compression::Xz,
            Compression::None,
        ] {
            let packed = compress(c, &data);
            let mut d = Decompressor::new(Trickle(packed.as_slice())).unwrap();
            assert_eq!(d.compression(), c);
            let mut out = Vec::new();
            d.read_to_end(&mut out).unwrap();
            assert_eq!(out, data, "{c}");
        }
    }

    #[test]
    fn concatenated_frames_are_one_stream() {
        for c in [Compression::Zstd, Compression::Gzip, Compression::Xz] {
            let mut packed = compress(c, b"hello ");
            packed.extend(compress(c, b"world"));
            let mut out = String::new();
            Decompressor::new(packed.as_slice())
                .unwrap()
                .read_to_string(&mut out)
                .unwrap();
            assert_eq!(out, "hello world", "{c}");
        }
    }

    #[test]
    fn trailing_garbage_and_truncation_are_errors() {
        for c in [Compression::Zstd, Compression::Gzip, Compression::Xz] {
            let mut packed = compress(c, &[5u8; 10_000]);
            let whole = packed.clone();
            packed.extend_from_slice(b"junk");
            let res = Decompressor::new(packed.as_slice())
                .unwrap()
                .read_to_end(&mut Vec::new());
            assert!(res.is_err(), "{c}: trailing garbage accepted");
            let mut d = Decompressor::new(packed.as_slice()).unwrap();
            let _ = d.read_to_end(&mut Vec::new());
            assert!(d.read(&mut [0u8; 8]).is_err(), "{c}: error not sticky");
            let cut = &whole[..whole.len() - 3];
            assert!(
                Decompressor::new(cut)
                    .unwrap()
                    .read_to_end(&mut Vec::new())
                    .is_err(),
                "{c}: truncated stream accepted"
            );
        }
    }

    #[test]
    fn input_verdict_reaches_consumer() {
        // An input that fails at its end (like a digest mismatch) must fail the decompressor.
        struct FailAtEnd<'a>(&'a [u8]);
        impl Read for FailAtEnd<'_> {
            fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
                if self.0.is_empty() {
                    return Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        "digest mismatch",
                    ));
                }
                self.0.read(buf)
            }
        }
        for c in [
            Compression::Zstd,
            Compression::Gzip,
            Compression::Xz,
            Compression::None,
        ] {
            let packed = compress(c, &[1u8; 5000]);
            let err = Decompressor::new(FailAtEnd(&packed))
                .unwrap()
                .read_to_end(&mut Vec::new())
                .unwrap_err();
            assert!(err.to_string().contains("digest mismatch"), "{c}: {err}");
        }
    }
}
