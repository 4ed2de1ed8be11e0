//! qcow2 to raw, streamed: the qcow2 file is read strictly front to back (an HTTP body; no seek,
//! no staging copy) and the raw disk comes out as extents, or written to a `Write + Seek` sink.
//!
//! # Memory bound
//! A qcow2 file's tables may come after data clusters they place. Until every L2 table the L1
//! table names has been read, bytes whose role is unknown are held in memory ([`Options::budget`],
//! 256 MiB by default). The budget counts those held bytes, the tables being assembled (the L1
//! table, the refcount table, an L2 table, a compressed cluster) and 64 bytes for each cluster a
//! table has placed but the stream has not reached yet. Once every L2 table is read the held bytes
//! are dropped and nothing new is held. When the budget would be exceeded the conversion fails
//! with [`Qcow2Error::BufferExceeded`]: the image is not streamable in that budget and the
//! operator should convert it first (`qemu-img convert -O raw`, or import it with `kiln-image
//! import`). The unplaced bytes are never parked on the target disk: past the virtual size there
//! may be nothing (a disk exactly the image's size) or data the operator did not give Kiln.
//!
//! `qemu-img convert -O qcow2` writes the L1 table first and each L2 table before the clusters it
//! places, so its output needs almost no buffering (figures in the crate's tests and the report).
//!
//! # What is refused
//! Backing files, encryption, external data files, extended L2 entries, the corrupt bit and
//! unknown incompatible features, each with an error naming the header field.

mod cluster;
pub mod header;
mod pending;
mod stream;

use std::io::{self, Read, Seek, SeekFrom, Write};

pub use header::{CompressionType, Header};

/// What the converter reports as it goes: the header first, then the disk's contents.
#[derive(Debug)]
pub enum Event<'a> {
    /// The header was parsed (check the target's size here; an error stops the conversion).
    Header(&'a Header),
    /// Guest bytes at `offset`.
    Data { offset: u64, bytes: &'a [u8] },
    /// `len` guest bytes at `offset` read as zeros (zero or unallocated clusters).
    Zero { offset: u64, len: u64 },
}

/// How zero and unallocated clusters reach a `Write + Seek` sink.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Zeros {
    /// Skipped: the target already reads as zeros (a new sparse file, a discarded device).
    Holes,
    /// Written as zeros.
    Write,
}

/// Conversion settings.
#[derive(Clone, Debug)]
pub struct Options {
    /// Bytes the converter may hold for clusters that arrive before their table (see the module
    /// docs for what counts).
    pub budget: usize,
    /// Zero clusters as holes or written zeros (for [`convert`]).
    pub zeros: Zeros,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            budget: 256 << 20,
            zeros: Zeros::Write,
        }
    }
}

/// What a conversion did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Report {
    pub virtual_size: u64,
    pub version: u32,
    pub cluster_size: u64,
    /// Bytes of the qcow2 file read (all of it).
    pub file_bytes: u64,
    pub data_clusters: u64,
    pub compressed_clusters: u64,
    /// Most bytes the budget counted at once.
    pub peak_budget_bytes: usize,
    /// Most bytes held at once for clusters whose table had not been read yet.
    pub peak_unplaced_bytes: usize,
}

/// Why a conversion failed.
#[derive(Debug, thiserror::Error)]
pub enum Qcow2Error {
    #[error("reading the qcow2 image: {0}")]
    Read(#[source] io::Error),
    #[error("writing the raw disk: {0}")]
    Sink(#[source] io::Error),
    #[error("not a qcow2 image (no QFI\\xfb magic)")]
    NotQcow2,
    #[error("qcow2 {field}: {detail}")]
    Unsupported { field: &'static str, detail: String },
    #[error("qcow2 {field} is invalid: {detail}")]
    Invalid { field: &'static str, detail: String },
    #[error(
        "qcow2 image is not streamable within {budget} bytes: at host offset {offset:#x} it needs \
         {needed} bytes for clusters that come before the tables placing them; convert it first \
         (qemu-img convert -O raw) or import it with kiln-image import"
    )]
    BufferExceeded {
        budget: usize,
        needed: usize,
        offset: u64,
    },
    #[error("qcow2 image ends at {file_size} bytes before its {what} at host offset {offset:#x}")]
    Truncated {
        what: &'static str,
        offset: u64,
        file_size: u64,
    },
    #[error(
        "qcow2 {what} at host offset {offset:#x} overlaps bytes already used for other clusters"
    )]
    Overlap { what: &'static str, offset: u64 },
    #[error("qcow2 compressed cluster at host offset {offset:#x}: {detail}")]
    Decompress { offset: u64, detail: String },
}

/// True when `first` starts like a qcow2 file.
pub fn is_qcow2(first: &[u8]) -> bool {
    first.starts_with(&header::MAGIC)
}

/// Converts the qcow2 file `input`, read front to back to its end, reporting each [`Event`] to
/// `on_event` (an error from it stops the conversion and is returned as [`Qcow2Error::Sink`]).
pub fn extents<R: Read>(
    input: R,
    options: &Options,
    on_event: impl FnMut(Event<'_>) -> io::Result<()>,
) -> Result<Report, Qcow2Error> {
    stream::Converter::run(input, options, on_event)
}

/// Converts the qcow2 file `input` into the raw disk `sink` (a block device or file). With
/// [`Zeros::Holes`] a file sink is not extended to the virtual size: the caller sets its length.
pub fn convert<R: Read, W: Write + Seek>(
    input: R,
    sink: &mut W,
    options: &Options,
) -> Result<Report, Qcow2Error> {
    static ZEROS: [u8; 64 << 10] = [0; 64 << 10];
    let zeros = options.zeros;
    extents(input, options, |event| match event {
        Event::Header(_) => Ok(()),
        Event::Data { offset, bytes } => {
            sink.seek(SeekFrom::Start(offset))?;
            sink.write_all(bytes)
        }
        Event::Zero { offset, len } if zeros == Zeros::Write => {
            sink.seek(SeekFrom::Start(offset))?;
            let mut left = len;
            while left > 0 {
                let n = left.min(ZEROS.len() as u64) as usize;
                sink.write_all(&ZEROS[..n])?;
                left -= n as u64;
            }
            Ok(())
        }
        Event::Zero { .. } => Ok(()),
    })
}
