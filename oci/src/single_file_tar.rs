//! Streams the one regular file out of a tar layer (layer-0 form (b): `FROM scratch` +
//! `COPY disk.raw.zst /`). Directory entries, PAX headers and GNU long names are allowed; any
//! other entry type, or a second regular file, is an error. After the file the rest of the
//! archive is read and checked before end-of-stream is reported, so the input's own verdict
//! (the digest check) reaches the consumer first.

use std::io::{self, Read};

const BLOCK: usize = 512;

enum State {
    Headers,
    File { remaining: u64, padding: u64 },
    Rest,
    Done,
}

/// A `Read` adapter yielding the content of the single regular file of a tar stream.
pub struct SingleFileTar<R> {
    inner: R,
    state: State,
    found: Option<String>,
    pax_size: Option<u64>,
    pax_path: Option<String>,
}

fn bad(msg: impl Into<String>) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidData,
        format!("tar layer 0: {}", msg.into()),
    )
}

/// Parses a tar numeric field: octal text, or GNU base-256 (high bit set).
fn parse_number(field: &[u8]) -> io::Result<u64> {
    if field.first().is_some_and(|b| b & 0x80 != 0) {
        let mut v: u64 = u64::from(field[0] & 0x7f);
        for &b in &field[1..] {
            v = v
                .checked_mul(256)
                .ok_or_else(|| bad("numeric field overflows"))?
                + u64::from(b);
        }
        return Ok(v);
    }
    let text: Vec<u8> = field
        .iter()
        .copied()
        .filter(|b| *b != 0 && *b != b' ')
        .collect();
    if text.is_empty() {
        return Ok(0);
    }
    let s = std::str::from_utf8(&text).map_err(|_| bad("non-text numeric field"))?;
    u64::from_str_radix(s, 8).map_err(|_| bad(format!("bad octal field {s:?}")))
}

fn header_name(h: &[u8; BLOCK]) -> String {
    let cut = |b: &[u8]| {
        String::from_utf8_lossy(&b[..b.iter().position(|c| *c == 0).unwrap_or(b.len())])
            .into_owned()
    };
    let name = cut(&h[0..100]);
    let prefix = if &h[257..262] == b"ustar" {
        cut(&h[345..500])
    } else {
        String::new()
    };
    if prefix.is_empty() {
        name
    } else {
        format!("{prefix}/{name}")
    }
}

fn checksum_ok(h: &[u8; BLOCK]) -> io::Result<bool> {
    let want = parse_number(&h[148..156])?;
    let sum: u64 = h
        .iter()
        .enumerate()
        .map(|(i, b)| {
            if (148..156).contains(&i) {
                32
            } else {
                u64::from(*b)
            }
        })
        .sum();
    Ok(sum == want)
}

/// Parses PAX records `"<len> key=value\n"`, returning `size` and `path` overrides.
fn parse_pax(data: &[u8]) -> io::Result<(Option<u64>, Option<String>)> {
    let (mut size, mut path) = (None, None);
    let mut rest = data;
    while !rest.is_empty() {
        let sp = rest
            .iter()
            .position(|b| *b == b' ')
            .ok_or_else(|| bad("malformed PAX record"))?;
        let len: usize = std::str::from_utf8(&rest[..sp])
            .ok()
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| bad("malformed PAX record length"))?;
        if len <= sp || len > rest.len() {
            return Err(bad("PAX record length out of range"));
        }
        let record = &rest[sp + 1..len];
        let record = record.strip_suffix(b"\n").unwrap_or(record);
        if let Some(eq) = record.iter().position(|b| *b == b'=') {
            let (k, v) = (&record[..eq], &record[eq + 1..]);
            match k {
                b"size" => {
                    size = Some(
                        std::str::from_utf8(v)
                            .ok()
                            .and_then(|s| s.parse().ok())
                            .ok_or_else(|| bad("bad PAX size"))?,
                    )
                }
                b"path" => path = Some(String::from_utf8_lossy(v).into_owned()),
                _ => {}
            }
        }
        rest = &rest[len..];
    }
    Ok((size, path))
}

impl<R: Read> SingleFileTar<R> {
    /// Wraps an (already decompressed) tar stream.
    pub fn new(inner: R) -> Self {
        Self {
            inner,
            state: State::Headers,
            found: None,
            pax_size: None,
            pax_path: None,
        }
    }

    /// The path of the file inside the archive, once its header was read.
    pub fn file_name(&self) -> Option<&str> {
        self.found.as_deref()
    }

    fn read_block(&mut self) -> io::Result<Option<[u8; BLOCK]>> {
        let mut b = [0u8; BLOCK];
        let mut got = 0;
        while got < BLOCK {
            match self.inner.read(&mut b[got..]) {
                Ok(0) if got == 0 => return Ok(None),
                Ok(0) => return Err(bad("archive ends inside a header block")),
                Ok(n) => got += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(Some(b))
    }

    fn skip(&mut self, n: u64) -> io::Result<()> {
        let copied = io::copy(&mut (&mut self.inner).take(n), &mut io::sink())?;
        if copied != n {
            return Err(bad("archive ends inside an entry"));
        }
        Ok(())
    }

    fn read_data(&mut self, size: u64) -> io::Result<Vec<u8>> {
        if size > 1 << 20 {
            return Err(bad("metadata entry larger than 1 MiB"));
        }
        let mut v = Vec::with_capacity(size as usize);
        (&mut self.inner).take(size).read_to_end(&mut v)?;
        if v.len() as u64 != size {
            return Err(bad("archive ends inside an entry"));
        }
        self.skip(pad(size))?;
        Ok(v)
    }

    /// Reads headers until the file's data starts (`Some`) or the archive ends (`None`).
    fn next_file(&mut self) -> io::Result<Option<(String, u64)>> {
        loop {
            let Some(h) = self.read_block()? else {
                return Ok(None); // EOF without the end-of-archive marker: tolerated, as tar does.
            };
            if h.iter().all(|b| *b == 0) {
                return Ok(None);
            }
            if !checksum_ok(&h)? {
                return Err(bad("header checksum mismatch (not a tar archive?)"));
            }
            let size = self
                .pax_size
                .take()
                .map_or_else(|| parse_number(&h[124..136]), Ok)?;
            let name = self.pax_path.take().unwrap_or_else(|| header_name(&h));
            match h[156] {
                b'0' | 0 | b'7' => return Ok(Some((name, size))),
                b'5' => self.skip(size + pad(size))?,
                b'x' => {
                    let data = self.read_data(size)?;
                    (self.pax_size, self.pax_path) = parse_pax(&data)?;
                }
                b'g' => {
                    self.read_data(size)?;
                }
                b'L' => {
                    let data = self.read_data(size)?;
                    let end = data.iter().position(|b| *b == 0).unwrap_or(data.len());
                    self.pax_path = Some(String::from_utf8_lossy(&data[..end]).into_owned());
                }
                t => {
                    return Err(bad(format!(
                        "entry {name:?} has type {:?}; layer 0 must hold exactly one regular file",
                        t as char
                    )));
                }
            }
        }
    }
}

fn pad(size: u64) -> u64 {
    (BLOCK as u64 - size % BLOCK as u64) % BLOCK as u64
}

impl<R: Read> Read for SingleFileTar<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            match self.state {
                State::Headers => match self.next_file()? {
                    Some((name, size)) => {
                        self.found = Some(name);
                        self.state = State::File {
                            remaining: size,
                            padding: pad(size),
                        };
                    }
                    None => {
                        return Err(bad(
                            "the archive holds no regular file (expected the disk image)",
                        ));
                    }
                },
                State::File {
                    remaining: 0,
                    padding,
                } => {
                    self.skip(padding)?;
                    self.state = State::Rest;
                }
                State::File {
                    ref mut remaining, ..
                } => {
                    if buf.is_empty() {
                        return Ok(0);
                    }
                    let want = buf
                        .len()
                        .min(usize::try_from(*remaining).unwrap_or(usize::MAX));
                    let n = self.inner.read(&mut buf[..want])?;
                    if n == 0 {
                        return Err(bad("archive ends inside the disk image file"));
                    }
                    *remaining -= n as u64;
                    return Ok(n);
                }
                State::Rest => {
                    if let Some((name, _)) = self.next_file()? {
                        return Err(bad(format!(
                            "second regular file {name:?} after {:?}; layer 0 must hold exactly one",
                            self.found.as_deref().unwrap_or("")
                        )));
                    }
                    // Zero padding after the end marker is allowed; the input must then end.
                    io::copy(&mut self.inner, &mut io::sink())?;
                    self.state = State::Done;
                }
                State::Done => return Ok(0),
            }
        }
    }
}

#[cfg(test)]
#[allow(clippy::type_complexity)]
mod tests {
    use super::*;

    fn tar_with(entries: &[(&str, tar::EntryType, &[u8])], pax: bool) -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        for (name, kind, data) in entries {
            if pax {
                b.append_pax_extensions([("path", name.as_bytes())])
                    .unwrap();
            }
            let mut h = tar::Header::new_ustar();
            h.set_entry_type(*kind);
            h.set_size(data.len() as u64);
            h.set_mode(0o644);
            if *kind == tar::EntryType::Symlink {
                h.set_link_name("x").unwrap();
            }
            b.append_data(&mut h, if pax { "placeholder" } else { name }, *data)
                .unwrap();
        }
        b.into_inner().unwrap()
    }

    fn extract(archive: &[u8]) -> io::Result<Vec<u8>> {
        let mut out = Vec::new();
        SingleFileTar::new(archive).read_to_end(&mut out)?;
        Ok(out)
    }

    #[test]
    fn table() {
        use tar::EntryType::{Directory, Regular, Symlink};
        let disk: Vec<u8> = (0..5000u32).map(|i| i as u8).collect();
        let long = format!("{}/disk.raw.zst", "d".repeat(150));
        let cases: Vec<(
            &str,
            Vec<(&str, tar::EntryType, &[u8])>,
            bool,
            Result<(), &str>,
        )> = vec![
            (
                "one file",
                vec![("disk.raw.zst", Regular, &disk)],
                false,
                Ok(()),
            ),
            (
                "dir then file",
                vec![("boot/", Directory, b""), ("boot/disk.raw", Regular, &disk)],
                false,
                Ok(()),
            ),
            (
                "pax long name",
                vec![(long.as_str(), Regular, &disk)],
                true,
                Ok(()),
            ),
            (
                "empty file",
                vec![("disk.raw", Regular, b"")],
                false,
                Ok(()),
            ),
            (
                "no file",
                vec![("boot/", Directory, b"")],
                false,
                Err("no regular file"),
            ),
            (
                "two files",
                vec![("a", Regular, &disk), ("b", Regular, b"x")],
                false,
                Err("second regular file"),
            ),
            (
                "symlink",
                vec![("a", Symlink, b"")],
                false,
                Err("exactly one regular file"),
            ),
            (
                "file then symlink",
                vec![("a", Regular, b"x"), ("b", Symlink, b"")],
                false,
                Err("exactly one regular file"),
            ),
        ];
        for (what, entries, pax, want) in cases {
            let archive = tar_with(&entries, pax);
            match (extract(&archive), want) {
                (Ok(out), Ok(())) => {
                    let file = entries.iter().find(|e| e.1 == Regular).unwrap();
                    assert_eq!(out, file.2, "{what}");
                }
                (Err(e), Err(msg)) => assert!(e.to_string().contains(msg), "{what}: {e}"),
                (got, want) => panic!("{what}: got {:?}, want {want:?}", got.map(|v| v.len())),
            }
        }
    }

    #[test]
    fn truncated_archive_is_an_error() {
        let archive = tar_with(
            &[("disk.raw", tar::EntryType::Regular, &[7u8; 3000])],
            false,
        );
        for cut in [100, 600, 2000, 3500] {
            assert!(extract(&archive[..cut]).is_err(), "cut at {cut}");
        }
        assert!(extract(b"this is not a tar archive at all, just text padding.......").is_err());
    }

    #[test]
    fn base256_size() {
        let mut f = [0u8; 12];
        f[0] = 0x80;
        f[7] = 0x02; // 2 * 256^4 = 8 GiB
        assert_eq!(parse_number(&f).unwrap(), 8 << 30);
        assert_eq!(parse_number(b"00000001750\0").unwrap(), 1000);
    }
}
