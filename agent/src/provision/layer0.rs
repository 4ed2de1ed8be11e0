//! Layer 0 to disk: the verified blob stream is decompressed and written with large aligned
//! writes; reading, decompressing and writing run on three threads joined by bounded
//! channels (at most a few tens of MiB in flight, never the image).
//!
//! Safety rules (an unverified or half-written disk must never boot):
//! - the first MiB (protective MBR + primary GPT) is held in memory; before anything else is
//!   written the image's GPT header is checked against the disk (sector size, image size
//!   no larger than the disk), then that region is zeroed on disk;
//! - the held MiB is written only after the input stream reached EOF, which the input
//!   contract (kiln-oci) guarantees happens only for a verified digest, then fsync;
//! - any failure after the first write wipes the protective MBR, the primary GPT and the
//!   backup GPT (at the image's end and at the disk's end).

use std::fs::{File, OpenOptions};
use std::io::{self, Cursor, Read};
use std::os::unix::fs::{FileExt, FileTypeExt, OpenOptionsExt};
use std::path::Path;
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};
use std::time::Instant;

use anyhow::{Context, Result, bail};
use serde::{Deserialize, Serialize};

use super::events::{Meter, Phase, Progress, human_bytes};
use kiln_oci::compression::{Compression, Decompressor};

/// Bytes held back until the stream is verified.
pub const HOLD: usize = 1 << 20;
/// Size of one write.
pub const CHUNK: usize = 4 << 20;
const ALIGN: usize = 4096;
const READ_CHUNK: usize = 256 << 10;

/// A heap buffer whose usable part starts on a 4 KiB boundary (for O_DIRECT), safe code only.
pub struct AlignedBuf {
    buf: Vec<u8>,
    off: usize,
    cap: usize,
}

impl AlignedBuf {
    /// Zeroed buffer of `cap` usable bytes.
    pub fn new(cap: usize) -> Self {
        let buf = vec![0u8; cap + ALIGN];
        let off = buf.as_ptr().align_offset(ALIGN);
        AlignedBuf { buf, off, cap }
    }
    /// The usable bytes.
    pub fn as_slice(&self) -> &[u8] {
        &self.buf[self.off..self.off + self.cap]
    }
    /// The usable bytes, mutable.
    pub fn as_mut_slice(&mut self) -> &mut [u8] {
        &mut self.buf[self.off..self.off + self.cap]
    }
}

/// What the primary GPT header of an image says about the disk it was made for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageGeometry {
    /// Logical sector size the image was built with (512 or 4096).
    pub sector_size: u32,
    /// Bytes up to and including the backup GPT header.
    pub size: u64,
}

/// Finds the primary GPT header in the first bytes of an image (LBA 1 at 512 or 4096).
pub fn image_geometry(head: &[u8]) -> Option<ImageGeometry> {
    for ss in [512usize, 4096] {
        let Some(h) = head.get(ss..ss + 92) else {
            continue;
        };
        if &h[0..8] != b"EFI PART" {
            continue;
        }
        let u64_at = |o: usize| u64::from_le_bytes(h[o..o + 8].try_into().unwrap_or([0; 8]));
        if u64_at(24) != 1 {
            continue;
        }
        let alt = u64_at(32);
        return Some(ImageGeometry {
            sector_size: ss as u32,
            size: (alt + 1) * ss as u64,
        });
    }
    None
}

/// Result of the phase.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Layer0Report {
    /// Compression found in the stream.
    pub compression: Compression,
    /// Decompressed bytes written.
    pub bytes: u64,
    /// Geometry from the image's GPT.
    pub geometry: ImageGeometry,
    /// Target size.
    pub disk_size: u64,
    /// Whether O_DIRECT was used.
    pub direct: bool,
    /// Wall time.
    pub seconds: f64,
}

enum Msg {
    Data(AlignedBuf, usize),
    Done(Compression),
    Err(io::Error),
}

/// `Read` over the chunks the reader thread sends. `Ok(vec![])` marks the source's EOF.
pub(crate) struct ChannelReader {
    rx: Receiver<io::Result<Vec<u8>>>,
    cur: Vec<u8>,
    pos: usize,
    eof: bool,
}

impl ChannelReader {
    pub(crate) fn new(rx: Receiver<io::Result<Vec<u8>>>) -> Self {
        ChannelReader {
            rx,
            cur: Vec::new(),
            pos: 0,
            eof: false,
        }
    }
}

impl Read for ChannelReader {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        while self.pos == self.cur.len() {
            if self.eof {
                return Ok(0);
            }
            match self.rx.recv() {
                Ok(Ok(v)) if v.is_empty() => self.eof = true,
                Ok(Ok(v)) => {
                    self.cur = v;
                    self.pos = 0;
                }
                Ok(Err(e)) => return Err(e),
                Err(_) => return Err(io::Error::other("layer reader thread stopped before EOF")),
            }
        }
        let n = out.len().min(self.cur.len() - self.pos);
        out[..n].copy_from_slice(&self.cur[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

pub(crate) fn reader_thread<R: Read>(mut src: R, tx: SyncSender<io::Result<Vec<u8>>>) {
    loop {
        let mut v = vec![0u8; READ_CHUNK];
        match src.read(&mut v) {
            Ok(0) => {
                let _ = tx.send(Ok(Vec::new()));
                return;
            }
            Ok(n) => {
                v.truncate(n);
                if tx.send(Ok(v)).is_err() {
                    return;
                }
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => {
                let _ = tx.send(Err(e));
                return;
            }
        }
    }
}

fn decompress_thread(
    rx: Receiver<io::Result<Vec<u8>>>,
    tx: SyncSender<Msg>,
    recycle: Receiver<AlignedBuf>,
) {
    if let Err(e) = unwrap_and_pump(ChannelReader::new(rx), &tx, &recycle) {
        let _ = tx.send(Msg::Err(e));
    }
}

/// Reads up to `n` bytes, fewer only at EOF.
fn read_head<R: Read>(r: &mut R, n: usize) -> io::Result<Vec<u8>> {
    let mut head = Vec::with_capacity(n);
    r.take(n as u64).read_to_end(&mut head)?;
    Ok(head)
}

fn invalid(msg: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg)
}

/// Whether a 512-byte block is a tar header (POSIX/GNU magic).
pub fn is_tar(head: &[u8]) -> bool {
    head.get(257..262) == Some(b"ustar")
}

/// Decompresses the stream; if it is a tar (image format (b): a layer holding exactly one
/// regular file, the optionally compressed disk), unwraps that file and decompresses it.
/// Sends the disk bytes, then `Done` once everything, trailing tar blocks included, was
/// read to EOF (the digest verdict).
fn unwrap_and_pump(
    input: ChannelReader,
    tx: &SyncSender<Msg>,
    recycle: &Receiver<AlignedBuf>,
) -> io::Result<()> {
    let mut dec = Decompressor::new(input)?;
    let kind = dec.compression();
    let head = read_head(&mut dec, 512)?;
    let tar = is_tar(&head);
    let joined = Cursor::new(head).chain(dec);
    if !tar {
        if pump(joined, tx, recycle)? {
            let _ = tx.send(Msg::Done(kind));
        }
        return Ok(());
    }
    let mut ar = tar::Archive::new(joined);
    let inner_kind;
    {
        let mut entries = ar.entries()?;
        let first = entries
            .next()
            .ok_or_else(|| invalid("layer 0 is an empty tar".into()))??;
        let path = String::from_utf8_lossy(&first.path_bytes()).into_owned();
        if first.header().entry_type() != tar::EntryType::Regular {
            return Err(invalid(format!(
                "layer 0 is a tar whose first entry {path:?} is not a regular file"
            )));
        }
        let inner = Decompressor::new(first)?;
        inner_kind = inner.compression();
        if !pump(inner, tx, recycle)? {
            return Ok(());
        }
        if let Some(next) = entries.next() {
            let next = next?;
            return Err(invalid(format!(
                "layer 0 is a tar holding more than one file ({path:?}, then {:?}); it must hold only the disk image",
                String::from_utf8_lossy(&next.path_bytes())
            )));
        }
    }
    io::copy(&mut ar.into_inner(), &mut io::sink())?;
    let _ = tx.send(Msg::Done(inner_kind));
    Ok(())
}

/// The geometry of the disk image at the start of a layer-0 stream (compressed and/or
/// tar-wrapped), reading only its first MiB. For choosing a disk before writing.
pub fn peek_geometry<R: Read>(r: R) -> io::Result<Option<ImageGeometry>> {
    let mut dec = Decompressor::new(r)?;
    let head = read_head(&mut dec, 512)?;
    let tar = is_tar(&head);
    let mut joined = Cursor::new(head).chain(dec);
    if !tar {
        return Ok(image_geometry(&read_head(&mut joined, HOLD)?));
    }
    let mut ar = tar::Archive::new(joined);
    let mut entries = ar.entries()?;
    let Some(first) = entries.next() else {
        return Ok(None);
    };
    let mut inner = Decompressor::new(first?)?;
    Ok(image_geometry(&read_head(&mut inner, HOLD)?))
}

/// Sends `dec` as CHUNK-sized aligned buffers. `Ok(false)` when the writer went away.
fn pump<R: Read>(
    mut dec: R,
    tx: &SyncSender<Msg>,
    recycle: &Receiver<AlignedBuf>,
) -> io::Result<bool> {
    loop {
        let mut buf = recycle
            .try_recv()
            .unwrap_or_else(|_| AlignedBuf::new(CHUNK));
        let mut n = 0;
        let slice = buf.as_mut_slice();
        while n < CHUNK {
            match dec.read(&mut slice[n..]) {
                Ok(0) => break,
                Ok(k) => n += k,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        if n > 0 && tx.send(Msg::Data(buf, n)).is_err() {
            return Ok(false);
        }
        if n < CHUNK {
            return Ok(true);
        }
    }
}

/// The target: a block device (or a regular file in tests), with a direct and a buffered fd.
pub struct Target {
    direct: Option<File>,
    buffered: File,
    /// Size in bytes.
    pub size: u64,
    /// Logical sector size.
    pub sector_size: u32,
    /// Whether it is a block device.
    pub is_block: bool,
}

impl Target {
    /// Opens `path` for writing. Block devices are opened O_EXCL (fails if mounted or held).
    pub fn open(path: &Path) -> Result<Target> {
        let meta =
            std::fs::metadata(path).with_context(|| format!("inspecting {}", path.display()))?;
        let is_block = meta.file_type().is_block_device();
        if !is_block && !meta.is_file() {
            bail!(
                "{} is neither a block device nor a regular file",
                path.display()
            );
        }
        let excl = if is_block {
            rustix::fs::OFlags::EXCL.bits() as i32
        } else {
            0
        };
        let buffered = OpenOptions::new()
            .write(true)
            .read(true)
            .custom_flags(excl)
            .open(path)
            .with_context(|| {
                format!(
                    "opening {} for writing (is it mounted or in use?)",
                    path.display()
                )
            })?;
        let direct = OpenOptions::new()
            .write(true)
            .read(true)
            .custom_flags(rustix::fs::OFlags::DIRECT.bits() as i32)
            .open(path)
            .ok();
        let (size, sector_size) = if is_block {
            let size = block_size(&buffered)
                .with_context(|| format!("reading the size of {}", path.display()))?;
            let ss = rustix::fs::ioctl_blksszget(&buffered)
                .with_context(|| format!("reading the sector size of {}", path.display()))?;
            (size, ss)
        } else {
            (meta.len(), 512)
        };
        Ok(Target {
            direct,
            buffered,
            size,
            sector_size,
            is_block,
        })
    }

    /// Positioned write, O_DIRECT when possible (falls back to the buffered fd on EINVAL).
    fn write_at(&mut self, data: &[u8], off: u64) -> io::Result<()> {
        if let Some(d) = &self.direct {
            match d.write_all_at(data, off) {
                Ok(()) => return Ok(()),
                Err(e) if e.raw_os_error() == Some(rustix::io::Errno::INVAL.raw_os_error()) => {}
                Err(e) => return Err(e),
            }
        }
        self.buffered.write_all_at(data, off)
    }

    fn sync(&self) -> io::Result<()> {
        if let Some(d) = &self.direct {
            d.sync_all()?;
        }
        self.buffered.sync_all()
    }
}

fn block_size(f: &File) -> io::Result<u64> {
    use std::io::{Seek, SeekFrom};
    let mut f = f;
    let n = f.seek(SeekFrom::End(0))?;
    f.seek(SeekFrom::Start(0))?;
    Ok(n)
}

/// Zeroes the partition-table signatures: first MiB (protective MBR + primary GPT), the
/// last MiB of the disk (backup GPT of a full-disk table), and the backup GPT at the end of
/// every image geometry given (the new image's and the previous installation's).
pub fn wipe_partition_tables(t: &mut Target, geometries: &[ImageGeometry]) -> io::Result<()> {
    let zeros = AlignedBuf::new(HOLD);
    let z = zeros.as_slice();
    t.write_at(z, 0)?;
    let tail = t.size.saturating_sub(HOLD as u64).div_ceil(4096) * 4096;
    t.write_at(&z[..(t.size - tail) as usize], tail)?;
    for g in geometries {
        // The backup header is the image's last sector, its entry array the 32 KiB before.
        let start = g.size.saturating_sub(64 << 10) / 4096 * 4096;
        let end = g.size.min(t.size);
        if end > start {
            t.write_at(&z[..(end - start) as usize], start)?;
        }
    }
    t.sync()
}

/// Phase 2: streams `src` (a verified layer stream: EOF only after the digest matched) onto
/// `target`. See the module doc for the safety rules.
pub fn write_layer0<R: Read + Send>(
    src: R,
    target: &Path,
    progress: Progress,
) -> Result<Layer0Report> {
    let name = target.display().to_string();
    let mut t = Target::open(target)?;
    // Where the previous installation's backup GPT is, to wipe it too on failure.
    let mut old = vec![0u8; HOLD];
    let old_geometry = t
        .buffered
        .read_exact_at(&mut old, 0)
        .ok()
        .and_then(|()| image_geometry(&old));
    drop(old);
    let start = Instant::now();
    let (tx_raw, rx_raw) = sync_channel::<io::Result<Vec<u8>>>(16);
    let (tx_dec, rx_dec) = sync_channel::<Msg>(3);
    let (tx_recycle, rx_recycle) = sync_channel::<AlignedBuf>(4);
    let mut geometry = None;
    let mut began = false;
    let result = std::thread::scope(|s| {
        s.spawn(move || reader_thread(src, tx_raw));
        s.spawn(move || decompress_thread(rx_raw, tx_dec, rx_recycle));
        let r = write_loop(
            &mut t,
            &name,
            rx_dec,
            tx_recycle,
            &mut geometry,
            &mut began,
            progress,
        );
        // Dropping the receiver (moved into write_loop) stops the other threads.
        r
    });
    match result {
        Ok((compression, bytes)) => Ok(Layer0Report {
            compression,
            bytes,
            geometry: geometry.context("internal: no geometry after success")?,
            disk_size: t.size,
            direct: t.direct.is_some(),
            seconds: start.elapsed().as_secs_f64(),
        }),
        Err(e) => {
            if began {
                if let Err(w) = wipe_partition_tables(
                    &mut t,
                    &geometry.into_iter().chain(old_geometry).collect::<Vec<_>>(),
                ) {
                    return Err(e.context(format!(
                        "writing layer 0 to {name} failed AND wiping its partition tables failed ({w}): the disk may hold a partial image"
                    )));
                }
                progress(super::Event::msg(
                    Phase::Layer0,
                    format!("wiped partition tables on {name} after failure"),
                ));
                return Err(e.context(format!(
                    "writing layer 0 to {name} (partition tables wiped, disk will not boot)"
                )));
            }
            Err(e.context(format!("writing layer 0 to {name} (nothing was written)")))
        }
    }
}

/// The image geometry from the held first MiB, checked against the disk.
fn head_geometry(head: &[u8], t: &Target, name: &str) -> Result<ImageGeometry> {
    let g = image_geometry(head).context(
        "layer 0 has no GPT header at LBA 1 (512- or 4096-byte sectors): not a disk image",
    )?;
    if g.sector_size != t.sector_size {
        bail!(
            "layer 0 was built for {}-byte sectors but {name} has {}-byte sectors; use an image built for this disk",
            g.sector_size,
            t.sector_size
        );
    }
    if g.size > t.size {
        bail!(
            "layer 0 is a {} disk image, larger than {name} ({}); choose a bigger disk",
            human_bytes(g.size),
            human_bytes(t.size)
        );
    }
    Ok(g)
}

fn write_loop(
    t: &mut Target,
    name: &str,
    rx: Receiver<Msg>,
    recycle: SyncSender<AlignedBuf>,
    geometry: &mut Option<ImageGeometry>,
    began: &mut bool,
    progress: Progress,
) -> Result<(Compression, u64)> {
    let mut head = AlignedBuf::new(HOLD);
    let mut head_len = 0usize;
    let mut off: u64 = 0;
    let mut meter = Meter::new(Phase::Layer0, None, name.to_string(), progress);
    loop {
        let msg = rx
            .recv()
            .map_err(|_| anyhow::anyhow!("decompressor thread stopped unexpectedly"))?;
        match msg {
            Msg::Err(e) => {
                return Err(
                    anyhow::Error::new(e).context("reading or decompressing the layer 0 stream")
                );
            }
            Msg::Data(buf, n) => {
                let data = &buf.as_slice()[..n];
                let mut rest = data;
                let mut rest_off = 0usize;
                if off < HOLD as u64 {
                    let take = (HOLD - head_len).min(n);
                    head.as_mut_slice()[head_len..head_len + take].copy_from_slice(&data[..take]);
                    head_len += take;
                    rest = &data[take..];
                    rest_off = take;
                    off += take as u64;
                    if head_len == HOLD {
                        let g = head_geometry(head.as_slice(), t, name)?;
                        *geometry = Some(g);
                        meter.set_total(Some(g.size));
                        *began = true;
                        let zeros = AlignedBuf::new(HOLD);
                        t.write_at(zeros.as_slice(), 0)
                            .with_context(|| format!("zeroing the first MiB of {name}"))?;
                        t.sync().with_context(|| format!("syncing {name}"))?;
                    }
                }
                if !rest.is_empty() {
                    if off + rest.len() as u64 > t.size {
                        bail!("layer 0 is larger than {name} ({} bytes)", t.size);
                    }
                    // rest starts at HOLD within an aligned CHUNK buffer or at 0: still aligned.
                    debug_assert!(rest_off.is_multiple_of(ALIGN));
                    t.write_at(rest, off)
                        .with_context(|| format!("writing {name} at offset {off}"))?;
                    off += rest.len() as u64;
                }
                meter.update(off);
                let _ = recycle.try_send(buf);
            }
            Msg::Done(kind) => {
                // The source returned EOF: by the input contract the digest is verified.
                let g = match *geometry {
                    Some(g) => g,
                    None => {
                        let g = head_geometry(&head.as_slice()[..head_len], t, name)?;
                        *geometry = Some(g);
                        *began = true;
                        g
                    }
                };
                if !off.is_multiple_of(u64::from(g.sector_size)) {
                    bail!(
                        "layer 0 is {off} bytes, not a whole number of {}-byte sectors: truncated image?",
                        g.sector_size
                    );
                }
                t.write_at(&head.as_slice()[..head_len], 0)
                    .with_context(|| format!("writing the partition table region of {name}"))?;
                t.sync().with_context(|| format!("syncing {name}"))?;
                meter.finish(off);
                return Ok((kind, off));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use super::super::events::no_progress;
    use super::super::gpt::testimg;
    use super::*;
    use kiln_oci::compression::compress;

    /// A source that fails like a digest mismatch after `ok` bytes.
    struct FailAfter<'a> {
        data: &'a [u8],
        ok: usize,
        pos: usize,
    }
    impl Read for FailAfter<'_> {
        fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
            if self.pos >= self.ok {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    "digest mismatch: expected sha256:aa.. got sha256:bb..",
                ));
            }
            let n = out
                .len()
                .min(self.ok - self.pos)
                .min(self.data.len() - self.pos);
            out[..n].copy_from_slice(&self.data[self.pos..self.pos + n]);
            self.pos += n;
            Ok(n)
        }
    }

    fn disk(size: u64, fill: u8) -> tempfile::NamedTempFile {
        let mut f = tempfile::NamedTempFile::new().unwrap();
        let block = vec![fill; 1 << 20];
        for _ in 0..size >> 20 {
            f.write_all(&block).unwrap();
        }
        f
    }

    #[test]
    fn geometry() {
        let img = testimg::make(8 << 20, 512);
        assert_eq!(
            image_geometry(&img[..HOLD]),
            Some(ImageGeometry {
                sector_size: 512,
                size: 8 << 20
            })
        );
        let img = testimg::make(8 << 20, 4096);
        assert_eq!(
            image_geometry(&img[..HOLD]),
            Some(ImageGeometry {
                sector_size: 4096,
                size: 8 << 20
            })
        );
        assert_eq!(image_geometry(&[0u8; 8192]), None);
    }

    #[test]
    fn writes_every_compression() {
        let img = testimg::make(12 << 20, 512);
        for kind in [
            Compression::Zstd,
            Compression::Gzip,
            Compression::Xz,
            Compression::None,
        ] {
            let c = compress(kind, &img);
            let d = disk(32 << 20, 0x55);
            let r = write_layer0(&c[..], d.path(), &no_progress).unwrap();
            assert_eq!(r.compression, kind);
            assert_eq!(r.bytes, img.len() as u64);
            let got = std::fs::read(d.path()).unwrap();
            assert_eq!(&got[..img.len()], &img[..], "{kind:?}");
            assert!(
                got[img.len()..].iter().all(|b| *b == 0x55),
                "bytes past the image untouched"
            );
        }
    }

    #[test]
    fn too_big_refused_before_any_write() {
        let img = testimg::make(16 << 20, 512);
        let c = compress(Compression::Zstd, &img);
        let d = disk(8 << 20, 0x55);
        let e = write_layer0(&c[..], d.path(), &no_progress).unwrap_err();
        let msg = format!("{e:#}");
        assert!(
            msg.contains("larger than") && msg.contains("nothing was written"),
            "{msg}"
        );
        assert!(std::fs::read(d.path()).unwrap().iter().all(|b| *b == 0x55));
    }

    #[test]
    fn sector_size_mismatch_refused_before_any_write() {
        let img = testimg::make(8 << 20, 4096);
        let d = disk(16 << 20, 0x55);
        let e = write_layer0(&img[..], d.path(), &no_progress).unwrap_err();
        assert!(format!("{e:#}").contains("4096-byte sectors"), "{e:#}");
        assert!(std::fs::read(d.path()).unwrap().iter().all(|b| *b == 0x55));
    }

    #[test]
    fn not_a_disk_image_refused() {
        let d = disk(8 << 20, 0x55);
        let e = write_layer0(&vec![7u8; 3 << 20][..], d.path(), &no_progress).unwrap_err();
        assert!(format!("{e:#}").contains("no GPT header"), "{e:#}");
        assert!(std::fs::read(d.path()).unwrap().iter().all(|b| *b == 0x55));
    }

    #[test]
    fn failure_mid_stream_leaves_no_partition_table() {
        let img = testimg::make(12 << 20, 512);
        for kind in [Compression::None, Compression::Zstd] {
            let c = compress(kind, &img);
            // Put an old, bootable-looking disk there first.
            let d = disk(16 << 20, 0);
            std::fs::write(d.path(), testimg::make(16 << 20, 512)).unwrap();
            let src = FailAfter {
                data: &c,
                ok: c.len() - 100,
                pos: 0,
            };
            let e = write_layer0(src, d.path(), &no_progress).unwrap_err();
            let msg = format!("{e:#}");
            assert!(
                msg.contains("digest mismatch") && msg.contains("partition tables wiped"),
                "{msg}"
            );
            let got = std::fs::read(d.path()).unwrap();
            assert!(got[..HOLD].iter().all(|b| *b == 0), "first MiB zero");
            assert!(image_geometry(&got[..HOLD]).is_none());
            for end in [12usize << 20, 16 << 20] {
                assert_ne!(
                    &got[end - 512..end - 504],
                    b"EFI PART",
                    "backup GPT at {end} wiped"
                );
            }
            let mut f = std::fs::File::open(d.path()).unwrap();
            assert!(gptman::GPT::find_from(&mut f).is_err());
        }
    }

    fn tar_of(files: &[(&str, &[u8])]) -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        for (name, data) in files {
            let mut h = tar::Header::new_ustar();
            h.set_size(data.len() as u64);
            h.set_mode(0o644);
            b.append_data(&mut h, name, *data).unwrap();
        }
        b.into_inner().unwrap()
    }

    #[test]
    fn tar_wrapped_disk_image() {
        // Format (b): FROM scratch + COPY disk.raw.zst / , layer gzip-compressed.
        let img = testimg::make(8 << 20, 512);
        let layer = compress(
            Compression::Gzip,
            &tar_of(&[("disk.raw.zst", &compress(Compression::Zstd, &img))]),
        );
        assert_eq!(
            peek_geometry(&layer[..]).unwrap(),
            Some(ImageGeometry {
                sector_size: 512,
                size: 8 << 20
            })
        );
        assert_eq!(
            peek_geometry(&compress(Compression::Xz, &img)[..])
                .unwrap()
                .map(|g| g.size),
            Some(8 << 20)
        );
        let d = disk(16 << 20, 0x55);
        let r = write_layer0(&layer[..], d.path(), &no_progress).unwrap();
        assert_eq!(r.compression, Compression::Zstd);
        assert_eq!(&std::fs::read(d.path()).unwrap()[..img.len()], &img[..]);
        // Two files: refused, tables wiped.
        let layer = tar_of(&[("disk.raw", &img), ("extra", b"x")]);
        let e = write_layer0(&layer[..], d.path(), &no_progress).unwrap_err();
        assert!(format!("{e:#}").contains("more than one file"), "{e:#}");
        assert!(image_geometry(&std::fs::read(d.path()).unwrap()[..HOLD]).is_none());
    }

    #[test]
    fn truncated_compressed_stream_is_an_error() {
        let img = testimg::make(8 << 20, 512);
        let c = compress(Compression::Gzip, &img);
        let d = disk(16 << 20, 0);
        let e = write_layer0(&c[..c.len() / 2], d.path(), &no_progress).unwrap_err();
        assert!(format!("{e:#}").contains("decompressing"), "{e:#}");
        assert!(
            std::fs::read(d.path()).unwrap()[..HOLD]
                .iter()
                .all(|b| *b == 0)
        );
    }
}
