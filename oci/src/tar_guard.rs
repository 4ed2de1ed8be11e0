//! A `Read` adapter in front of the `tar` crate that refuses oversized PAX extended headers
//! and GNU long names/links before anything buffers them.
//!
//! The `tar` crate reads an `x`/`g` PAX header or an `L`/`K` GNU long name whole into memory
//! to apply it to the next entry; a layer is only verified at its end, so a crafted layer
//! claiming a 4 GiB PAX header would make PID 1 allocate 4 GiB. [`TarGuard`] follows the
//! archive's block structure the way the `tar` crate does (header sizes, a PAX `size`
//! override, GNU sparse extension blocks) and fails the read that completes such a header
//! block if the entry is larger than [`MAX_EXTENSION`]. After the end-of-archive block the
//! rest of the stream passes through untouched.

use std::io::{self, Read};

/// The largest PAX header, GNU long name or GNU long link accepted (1 MiB).
pub const MAX_EXTENSION: u64 = 1 << 20;

const BLOCK: usize = 512;

enum State {
    /// Collecting a header block.
    Header,
    /// Collecting a GNU sparse extension block; the entry's data (`data` bytes) follows.
    Sparse { data: u64 },
    /// Collecting a local PAX header (`remaining` bytes of records, then `pad`).
    Pax { remaining: u64, pad: u64 },
    /// Passing over entry data and padding.
    Skip { remaining: u64 },
    /// After the end-of-archive block.
    Done,
}

/// Wraps a decompressed tar stream; see the module docs.
pub struct TarGuard<R> {
    inner: R,
    state: State,
    block: Box<[u8; BLOCK]>,
    filled: usize,
    pax: Vec<u8>,
    /// A `size` record of the last local PAX header, for the next file entry.
    pax_size: Option<u64>,
}

fn pad(size: u64) -> u64 {
    (BLOCK as u64 - size % BLOCK as u64) % BLOCK as u64
}

fn padded(size: u64) -> io::Result<u64> {
    size.checked_add(pad(size))
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "tar entry size overflows"))
}

impl<R: Read> TarGuard<R> {
    /// Wraps `inner` (the uncompressed tar bytes).
    pub fn new(inner: R) -> Self {
        TarGuard {
            inner,
            state: State::Header,
            block: Box::new([0; BLOCK]),
            filled: 0,
            pax: Vec::new(),
            pax_size: None,
        }
    }

    /// The wrapped reader.
    pub fn into_inner(self) -> R {
        self.inner
    }

    /// Advances the state machine over bytes the caller is about to receive.
    fn feed(&mut self, mut data: &[u8]) -> io::Result<()> {
        while !data.is_empty() {
            match &mut self.state {
                State::Done => return Ok(()),
                State::Skip { remaining } => {
                    let k = (*remaining).min(data.len() as u64);
                    *remaining -= k;
                    data = &data[k as usize..];
                    if *remaining == 0 {
                        self.state = State::Header;
                    }
                }
                State::Pax { remaining, pad } => {
                    let k = (*remaining).min(data.len() as u64);
                    self.pax.extend_from_slice(&data[..k as usize]);
                    *remaining -= k;
                    data = &data[k as usize..];
                    if *remaining == 0 {
                        let pad = *pad;
                        self.end_pax(pad);
                    }
                }
                State::Header | State::Sparse { .. } => {
                    let k = (BLOCK - self.filled).min(data.len());
                    self.block[self.filled..self.filled + k].copy_from_slice(&data[..k]);
                    self.filled += k;
                    data = &data[k..];
                    if self.filled == BLOCK {
                        self.filled = 0;
                        self.on_block()?;
                    }
                }
            }
        }
        Ok(())
    }

    fn end_pax(&mut self, pad: u64) {
        self.pax_size = pax_size(&self.pax);
        self.pax = Vec::new();
        self.state = State::Skip { remaining: pad };
        if pad == 0 {
            self.state = State::Header;
        }
    }

    /// A full block arrived in the `Header` or `Sparse` state.
    fn on_block(&mut self) -> io::Result<()> {
        if let State::Sparse { data } = self.state {
            // `GnuExtSparseHeader::is_extended`: the byte after 21 sparse records of 24.
            if self.block[504] != 1 {
                self.skip(data);
            }
            return Ok(());
        }
        if self.block.iter().all(|b| *b == 0) {
            // The `tar` crate (ignore_zeros off) ends the archive at the first zero block.
            self.state = State::Done;
            return Ok(());
        }
        let h = tar::Header::from_byte_slice(&self.block[..]);
        let recognized = h.as_gnu().is_some() || h.as_ustar().is_some();
        let t = h.entry_type();
        let size = h.entry_size()?;
        let kind = match t {
            tar::EntryType::XHeader => "PAX extended header",
            tar::EntryType::XGlobalHeader => "PAX global header",
            tar::EntryType::GNULongName => "GNU long name",
            tar::EntryType::GNULongLink => "GNU long link",
            _ => "",
        };
        if !kind.is_empty() && size > MAX_EXTENSION {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!(
                    "tar entry {:?}: {kind} of {size} bytes (the limit is {} bytes); \
                     the layer is malformed or malicious",
                    String::from_utf8_lossy(&h.path_bytes()),
                    MAX_EXTENSION
                ),
            ));
        }
        if recognized && t == tar::EntryType::XHeader {
            self.pax = Vec::with_capacity(size as usize);
            self.state = State::Pax {
                remaining: size,
                pad: pad(size),
            };
            if size == 0 {
                self.end_pax(0);
            }
            return Ok(());
        }
        if recognized && matches!(t, tar::EntryType::GNULongName | tar::EntryType::GNULongLink) {
            // Like the `tar` crate: a pending PAX size is kept for the file entry.
            self.skip(padded(size)?);
            return Ok(());
        }
        // A file entry (or an unrecognised/global header returned as one): a PAX size from
        // the header before applies to it, except to a global header.
        let pending = self.pax_size.take();
        let data = match pending {
            Some(s) if t != tar::EntryType::XGlobalHeader => s,
            _ => size,
        };
        match h.as_gnu() {
            Some(g) if t.is_gnu_sparse() && g.is_extended() => {
                self.state = State::Sparse {
                    data: padded(data)?,
                }
            }
            _ => self.skip(padded(data)?),
        }
        Ok(())
    }

    fn skip(&mut self, n: u64) {
        self.state = if n == 0 {
            State::Header
        } else {
            State::Skip { remaining: n }
        };
    }
}

/// The `size` record of PAX records, as the `tar` crate reads it (invalid: none).
fn pax_size(records: &[u8]) -> Option<u64> {
    for ext in tar::PaxExtensions::new(records) {
        let ext = ext.ok()?;
        if ext.key() == Ok("size") {
            return ext.value().ok()?.parse().ok();
        }
    }
    None
}

impl<R: Read> Read for TarGuard<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.feed(&buf[..n])?;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A stream: `head`, then `fill` bytes of `b'a'`; reading past `limit` bytes fails.
    struct Crafted {
        head: Vec<u8>,
        pos: u64,
        end: u64,
        limit: u64,
    }

    impl Read for Crafted {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            if self.pos >= self.limit {
                return Err(io::Error::other(
                    "read past the limit: the header was buffered",
                ));
            }
            let n = (buf.len() as u64).min(self.end - self.pos) as usize;
            for (i, b) in buf[..n].iter_mut().enumerate() {
                let p = self.pos as usize + i;
                *b = self.head.get(p).copied().unwrap_or(b'a');
            }
            self.pos += n as u64;
            Ok(n)
        }
    }

    /// A tar stream whose first header (type `t`, ustar) claims `size` bytes.
    pub(crate) fn claiming(t: tar::EntryType, size: u64, limit: u64) -> impl Read {
        let mut h = tar::Header::new_ustar();
        h.set_path("PaxHeaders/evil").unwrap();
        h.set_entry_type(t);
        h.set_size(size);
        h.set_cksum();
        Crafted {
            head: h.as_bytes().to_vec(),
            pos: 0,
            end: 512 + size,
            limit,
        }
    }

    #[test]
    fn oversized_extension_headers_are_refused_unbuffered() {
        for t in [
            tar::EntryType::XHeader,
            tar::EntryType::XGlobalHeader,
            tar::EntryType::GNULongName,
            tar::EntryType::GNULongLink,
        ] {
            let src = claiming(t, 4 << 30, 8 << 20);
            let mut a = tar::Archive::new(TarGuard::new(src));
            let err = a
                .entries()
                .unwrap()
                .map(|e| e.and_then(|mut e| e.pax_extensions().map(|_| ())))
                .find_map(Result::err)
                .expect("an error");
            let msg = err.to_string();
            assert!(msg.contains("PaxHeaders/evil"), "{t:?}: {msg}");
            assert!(msg.contains("4294967296 bytes"), "{t:?}: {msg}");
        }
    }

    #[test]
    fn follows_pax_size_long_names_and_sparse() {
        let mut b = tar::Builder::new(Vec::new());
        let long = "d/".repeat(200) + "f";
        let mut h = tar::Header::new_gnu();
        h.set_size(3);
        h.set_mode(0o644);
        b.append_data(&mut h, &long, &b"abc"[..]).unwrap();
        b.append_pax_extensions([("size", &b"600"[..])]).unwrap();
        let mut h = tar::Header::new_ustar();
        h.set_size(0); // the PAX size (600) wins
        h.set_path("p").unwrap();
        h.set_cksum();
        b.append(&h, &[7u8; 600][..]).unwrap();
        let mut h = tar::Header::new_gnu();
        h.set_size(1);
        b.append_link(&mut h, "l", long.as_str()).unwrap();
        let mut bytes = b.into_inner().unwrap();
        bytes.extend_from_slice(b"trailing bytes pass through");
        let mut g = TarGuard::new(&bytes[..]);
        let mut out = Vec::new();
        // Small reads exercise every split of the state machine.
        let mut chunk = [0u8; 7];
        loop {
            let n = g.read(&mut chunk).unwrap();
            if n == 0 {
                break;
            }
            out.extend_from_slice(&chunk[..n]);
        }
        assert_eq!(out, bytes);
        assert!(matches!(g.state, State::Done));
        let mut a = tar::Archive::new(TarGuard::new(&bytes[..]));
        let names: Vec<_> = a
            .entries()
            .unwrap()
            .map(|e| e.unwrap().path_bytes().into_owned())
            .collect();
        assert_eq!(names.len(), 3);
    }
}
