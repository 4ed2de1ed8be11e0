//! Installer ISO templates: `scripts/build-iso --template` ends the `linux` line of grub.cfg
//! with a fixed-size placeholder, a GRUB comment
//! `#KILN-PARAMS:<len>:<spaces>:KILN-PARAMS#` of exactly `<len>` bytes. grub.cfg is stored
//! uncompressed in the ISO 9660 tree, so the server bakes its URL, CA pin and optionally a
//! bootstrap token into a copy by overwriting those bytes in place with the parameters padded
//! by spaces (GRUB splits the line on whitespace, so trailing spaces never reach the kernel).
//! No ISO tooling is needed on the server and the ISO keeps its length and layout.
//!
//! [`locate`] finds the one placeholder (refusing none, several, or a damaged one),
//! [`render`] makes the replacement bytes (refusing parameters GRUB would interpret or that
//! do not fit), and [`Patched`] / [`AsyncPatched`] are `Read` / `AsyncRead` adapters that
//! overwrite the bytes while the template streams through.

use std::io::{self, Read, Seek, SeekFrom};
use std::pin::Pin;
use std::task::{Context, Poll, ready};
use tokio::io::{AsyncRead, ReadBuf};

/// Total length of the placeholder `scripts/build-iso --template` writes.
pub const PLACEHOLDER_LEN: usize = 1024;
/// Start of a placeholder; followed by its decimal length and `:`.
pub const HEAD: &[u8] = b"#KILN-PARAMS:";
/// End of a placeholder.
pub const TAIL: &[u8] = b":KILN-PARAMS#";

/// Why a template cannot be patched.
#[derive(Debug, thiserror::Error)]
pub enum IsoError {
    #[error(
        "{0} is not a Kiln ISO template: it has no #KILN-PARAMS placeholder; build one with \
         scripts/build-iso --template"
    )]
    NoPlaceholder(String),
    #[error(
        "{what} has {count} #KILN-PARAMS placeholders (at byte offsets {offsets:?}), expected \
         exactly one; rebuild it with scripts/build-iso --template"
    )]
    Several {
        what: String,
        count: usize,
        offsets: Vec<u64>,
    },
    #[error(
        "{what}: the placeholder at byte offset {offset} is damaged ({reason}); rebuild it \
         with scripts/build-iso --template"
    )]
    Damaged {
        what: String,
        offset: u64,
        reason: String,
    },
    #[error(
        "the kernel parameters need {need} bytes but the ISO template has room for {room}; \
         shorten them (fewer roles, shorter URL) or rebuild the template with a larger \
         PLACEHOLDER_LEN"
    )]
    TooLong { need: usize, room: usize },
    #[error(
        "kernel parameter {param:?} cannot go into grub.cfg: {reason} (allowed: letters, digits \
         and . _ : / = , @ % + ~ -)"
    )]
    BadParam { param: String, reason: String },
    #[error("reading {what}: {source}")]
    Io {
        what: String,
        #[source]
        source: io::Error,
    },
}

/// Where the placeholder of a template is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Placeholder {
    pub offset: u64,
    pub len: usize,
}

/// Finds the single well-formed placeholder of a template. `what` names it in errors.
pub fn locate<R: Read + Seek>(mut r: R, what: &str) -> Result<Placeholder, IsoError> {
    let io = |source| IsoError::Io {
        what: what.to_string(),
        source,
    };
    r.seek(SeekFrom::Start(0)).map_err(io)?;
    let offsets = find_all(&mut r, HEAD).map_err(io)?;
    match offsets.len() {
        0 => return Err(IsoError::NoPlaceholder(what.to_string())),
        1 => {}
        count => {
            return Err(IsoError::Several {
                what: what.to_string(),
                count,
                offsets,
            });
        }
    }
    let offset = offsets[0];
    r.seek(SeekFrom::Start(offset)).map_err(io)?;
    let mut head = vec![0u8; HEAD.len() + 8];
    let n = read_full(&mut r, &mut head).map_err(io)?;
    let damaged = |reason: String| IsoError::Damaged {
        what: what.to_string(),
        offset,
        reason,
    };
    let digits: Vec<u8> = head[HEAD.len()..n]
        .iter()
        .copied()
        .take_while(u8::is_ascii_digit)
        .collect();
    let len: usize = std::str::from_utf8(&digits)
        .ok()
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| damaged("no length after #KILN-PARAMS:".into()))?;
    let prefix = HEAD.len() + digits.len() + 1;
    if len < prefix + TAIL.len() || len > 1 << 16 {
        return Err(damaged(format!("impossible length {len}")));
    }
    let mut body = vec![0u8; len];
    r.seek(SeekFrom::Start(offset)).map_err(io)?;
    if read_full(&mut r, &mut body).map_err(io)? != len {
        return Err(damaged(format!("the file ends inside its {len} bytes")));
    }
    if body[prefix - 1] != b':' {
        return Err(damaged("no ':' after the length".into()));
    }
    if !body.ends_with(TAIL) {
        return Err(damaged(format!(
            "it does not end with :KILN-PARAMS# {len} bytes after its start"
        )));
    }
    if let Some(i) = body[prefix..len - TAIL.len()]
        .iter()
        .position(|&b| b != b' ')
    {
        return Err(damaged(format!(
            "byte {} of the padding is {:#04x}, not a space",
            prefix + i,
            body[prefix + i]
        )));
    }
    Ok(Placeholder { offset, len })
}

/// The bytes replacing a placeholder of `len` bytes: the parameters separated by spaces,
/// padded with spaces.
pub fn render(params: &[String], len: usize) -> Result<Vec<u8>, IsoError> {
    for p in params {
        check_param(p)?;
    }
    let mut out = params.join(" ").into_bytes();
    if out.len() > len {
        return Err(IsoError::TooLong {
            need: out.len(),
            room: len,
        });
    }
    out.resize(len, b' ');
    Ok(out)
}

/// A parameter must be one `key=value` word with nothing GRUB's shell-like parser would
/// interpret (quotes, `$`, `\`, `;`, `#`, braces, whitespace ...).
fn check_param(p: &str) -> Result<(), IsoError> {
    let bad = |reason: &str| IsoError::BadParam {
        param: p.to_string(),
        reason: reason.into(),
    };
    if p.is_empty() {
        return Err(bad("it is empty"));
    }
    if let Some(c) = p
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || "._:/=,@%+~-".contains(*c)))
    {
        return Err(bad(&format!("it contains {c:?}")));
    }
    Ok(())
}

/// Overwrites the part of `buf` (which starts at stream position `pos`) that overlaps
/// `patch` placed at `at`.
pub fn patch_chunk(buf: &mut [u8], pos: u64, at: u64, patch: &[u8]) {
    let start = pos.max(at);
    let end = (pos + buf.len() as u64).min(at + patch.len() as u64);
    if start < end {
        let (b0, p0, n) = (
            (start - pos) as usize,
            (start - at) as usize,
            (end - start) as usize,
        );
        buf[b0..b0 + n].copy_from_slice(&patch[p0..p0 + n]);
    }
}

/// A `Read` adapter writing `patch` at offset `at` of the stream.
pub struct Patched<R> {
    inner: R,
    pos: u64,
    at: u64,
    patch: Vec<u8>,
}

impl<R> Patched<R> {
    pub fn new(inner: R, at: u64, patch: Vec<u8>) -> Self {
        Patched {
            inner,
            pos: 0,
            at,
            patch,
        }
    }
}

impl<R: Read> Read for Patched<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        patch_chunk(&mut buf[..n], self.pos, self.at, &self.patch);
        self.pos += n as u64;
        Ok(n)
    }
}

/// The `AsyncRead` twin of [`Patched`], for serving.
pub struct AsyncPatched<R> {
    inner: R,
    pos: u64,
    at: u64,
    patch: Vec<u8>,
}

impl<R> AsyncPatched<R> {
    pub fn new(inner: R, at: u64, patch: Vec<u8>) -> Self {
        AsyncPatched {
            inner,
            pos: 0,
            at,
            patch,
        }
    }
}

impl<R: AsyncRead + Unpin> AsyncRead for AsyncPatched<R> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        ready!(Pin::new(&mut self.inner).poll_read(cx, buf))?;
        let this = &mut *self;
        let new = &mut buf.filled_mut()[before..];
        patch_chunk(new, this.pos, this.at, &this.patch);
        this.pos += new.len() as u64;
        Poll::Ready(Ok(()))
    }
}

/// Patches the template at `template` into a new file `out` (tests, offline use).
pub fn patch_file(
    template: &std::path::Path,
    out: &std::path::Path,
    params: &[String],
) -> Result<(), IsoError> {
    let what = template.display().to_string();
    let io = |source| IsoError::Io {
        what: what.clone(),
        source,
    };
    let mut f = std::fs::File::open(template).map_err(io)?;
    let ph = locate(&mut f, &what)?;
    let patch = render(params, ph.len)?;
    f.seek(SeekFrom::Start(0)).map_err(io)?;
    let mut dst = std::fs::File::create(out).map_err(|source| IsoError::Io {
        what: out.display().to_string(),
        source,
    })?;
    io::copy(&mut Patched::new(f, ph.offset, patch), &mut dst).map_err(io)?;
    Ok(())
}

/// Offsets of every occurrence of `needle` in the stream.
fn find_all(r: &mut impl Read, needle: &[u8]) -> io::Result<Vec<u64>> {
    let mut found = Vec::new();
    let mut buf = vec![0u8; 1 << 20];
    // Bytes kept from the previous chunk so a needle split across chunks is found.
    let keep = needle.len() - 1;
    let mut have = 0usize;
    let mut base = 0u64; // stream offset of buf[0]
    loop {
        let n = r.read(&mut buf[have..])?;
        if n == 0 {
            return Ok(found);
        }
        let end = have + n;
        let mut i = 0;
        while let Some(j) = buf[i..end].windows(needle.len()).position(|w| w == needle) {
            found.push(base + (i + j) as u64);
            i += j + 1;
        }
        let carry = keep.min(end);
        buf.copy_within(end - carry..end, 0);
        base += (end - carry) as u64;
        have = carry;
    }
}

fn read_full(r: &mut impl Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..])? {
            0 => break,
            m => n += m,
        }
    }
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Cursor;

    fn placeholder(len: usize) -> Vec<u8> {
        let head = format!("#KILN-PARAMS:{len}:");
        let mut p = head.into_bytes();
        p.resize(len - TAIL.len(), b' ');
        p.extend_from_slice(TAIL);
        p
    }

    /// A synthetic "ISO": noise, a grub.cfg with the placeholder, noise.
    fn template(len: usize) -> (Vec<u8>, u64) {
        let mut t = vec![0x5au8; 70_000];
        t.extend_from_slice(b"  linux /kiln/vmlinuz console=ttyS0 ");
        let at = t.len() as u64;
        t.extend_from_slice(&placeholder(len));
        t.extend_from_slice(b"\n}\n");
        t.extend(std::iter::repeat_n(0xa5u8, 3 << 20));
        (t, at)
    }

    fn params() -> Vec<String> {
        vec![
            "kiln.url=https://cp.example:8443".into(),
            format!("kiln.ca=sha256:{}", "ab".repeat(32)),
        ]
    }

    /// Reads through a reader in small odd-sized pieces.
    fn read_in_pieces(mut r: impl Read, piece: usize) -> Vec<u8> {
        let mut out = Vec::new();
        let mut buf = vec![0u8; piece];
        loop {
            let n = r.read(&mut buf).unwrap();
            if n == 0 {
                return out;
            }
            out.extend_from_slice(&buf[..n]);
        }
    }

    #[test]
    fn locates_and_patches_in_place() {
        let (t, at) = template(PLACEHOLDER_LEN);
        let ph = locate(Cursor::new(&t), "t").unwrap();
        assert_eq!(
            ph,
            Placeholder {
                offset: at,
                len: PLACEHOLDER_LEN
            }
        );
        let patch = render(&params(), ph.len).unwrap();
        for piece in [1, 7, 4096, 1 << 20] {
            let out = read_in_pieces(Patched::new(Cursor::new(&t), at, patch.clone()), piece);
            assert_eq!(out.len(), t.len());
            let s = at as usize;
            let baked = &out[s..s + PLACEHOLDER_LEN];
            let text = params().join(" ");
            assert_eq!(&baked[..text.len()], text.as_bytes());
            assert!(baked[text.len()..].iter().all(|&b| b == b' '));
            assert_eq!(&out[..s], &t[..s], "bytes before the placeholder changed");
            assert_eq!(
                &out[s + PLACEHOLDER_LEN..],
                &t[s + PLACEHOLDER_LEN..],
                "bytes after the placeholder changed"
            );
        }
    }

    #[tokio::test]
    async fn async_adapter_matches_sync() {
        use tokio::io::AsyncReadExt;
        let (t, at) = template(PLACEHOLDER_LEN);
        let patch = render(&params(), PLACEHOLDER_LEN).unwrap();
        let sync = read_in_pieces(Patched::new(Cursor::new(&t), at, patch.clone()), 999);
        let mut asynced = Vec::new();
        AsyncPatched::new(Cursor::new(&t), at, patch)
            .read_to_end(&mut asynced)
            .await
            .unwrap();
        assert_eq!(sync, asynced);
    }

    #[test]
    fn placeholder_split_across_scan_chunks_is_found() {
        // Put the head across the 1 MiB boundary of the scanner.
        for shift in [1usize, 5, 12] {
            let mut t = vec![0u8; (1 << 20) - shift];
            let at = t.len() as u64;
            t.extend_from_slice(&placeholder(300));
            t.extend(std::iter::repeat_n(0u8, 100));
            assert_eq!(
                locate(Cursor::new(&t), "t").unwrap(),
                Placeholder {
                    offset: at,
                    len: 300
                }
            );
        }
    }

    #[test]
    fn refuses_bad_templates() {
        let (one, at) = template(PLACEHOLDER_LEN);
        let mut two = one.clone();
        two.extend_from_slice(&placeholder(PLACEHOLDER_LEN));
        let mut short = one.clone();
        short[at as usize + 100] = b'x';
        let mut no_tail = one.clone();
        no_tail[at as usize + PLACEHOLDER_LEN - 1] = b' ';
        let truncated = one[..at as usize + 50].to_vec();
        let cases: [(&str, Vec<u8>, &str); 5] = [
            ("none", vec![0u8; 5000], "no #KILN-PARAMS placeholder"),
            ("two", two, "has 2 #KILN-PARAMS placeholders"),
            ("dirty padding", short, "not a space"),
            ("no tail", no_tail, "does not end with :KILN-PARAMS#"),
            ("truncated", truncated, "ends inside"),
        ];
        for (name, t, want) in cases {
            let err = locate(Cursor::new(&t), name).unwrap_err().to_string();
            assert!(err.contains(want), "{name}: {err}");
            assert!(
                err.contains("scripts/build-iso --template"),
                "{name}: {err}"
            );
        }
    }

    #[test]
    fn render_checks_parameters() {
        let ok = render(&params(), 200).unwrap();
        assert_eq!(ok.len(), 200);
        assert!(ok.ends_with(b"   "));
        let cases: [(Vec<String>, usize, &str); 5] = [
            (
                params(),
                50,
                "need 112 bytes but the ISO template has room for 50",
            ),
            (vec!["kiln.url=a b".into()], 100, "contains ' '"),
            (vec!["kiln.url=$x".into()], 100, "contains '$'"),
            (vec!["kiln.url=\"x\"".into()], 100, "contains '\"'"),
            (vec!["x;reboot".into()], 100, "contains ';'"),
        ];
        for (p, len, want) in cases {
            let err = render(&p, len).unwrap_err().to_string();
            assert!(err.contains(want), "{p:?}: {err}");
        }
        // Exactly full is fine.
        let p = vec!["a".repeat(64)];
        assert_eq!(render(&p, 64).unwrap(), p[0].as_bytes());
    }

    #[test]
    fn script_writes_the_same_length() {
        let script = include_str!("../../scripts/build-iso");
        assert!(
            script.contains(&format!("\nPLACEHOLDER_LEN={PLACEHOLDER_LEN}\n")),
            "scripts/build-iso and iso::PLACEHOLDER_LEN disagree"
        );
        let head = std::str::from_utf8(HEAD).unwrap();
        let tail = std::str::from_utf8(TAIL).unwrap();
        assert!(script.contains(&format!("head=\"{head}$PLACEHOLDER_LEN:\"")));
        assert!(script.contains(&format!("tail=\"{tail}\"")));
    }
}
