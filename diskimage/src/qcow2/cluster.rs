//! qcow2 table entries (L1, L2, refcount table) decoded, and compressed clusters inflated.

use super::Qcow2Error;
use super::header::{CompressionType, Header};

const OFFSET_MASK: u64 = 0x00ff_ffff_ffff_fe00;
const COMPRESSED: u64 = 1 << 62;
const ZERO: u64 = 1;

/// Where one guest cluster's contents are, from its L2 entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mapping {
    /// Reads as zeros (unallocated, or the v3 zero flag).
    Zero,
    /// A whole host cluster at this (cluster-aligned) offset.
    Data(u64),
    /// Compressed bytes at `[offset, offset + len)` (`len` may run past the end of the file).
    Compressed { offset: u64, len: u64 },
}

/// The L2 table offset from an L1 entry (`None`: no table, the span reads as zeros).
pub fn l1_entry(h: &Header, e: u64) -> Result<Option<u64>, Qcow2Error> {
    let off = e & OFFSET_MASK;
    if off == 0 {
        return Ok(None);
    }
    if !off.is_multiple_of(h.cluster_size()) {
        return Err(Qcow2Error::Invalid {
            field: "L1 entry",
            detail: format!("L2 table offset {off:#x} is not cluster aligned"),
        });
    }
    Ok(Some(off))
}

/// Decodes an L2 entry.
pub fn l2_entry(h: &Header, e: u64) -> Result<Mapping, Qcow2Error> {
    if e & COMPRESSED != 0 {
        let x = 62 - (h.cluster_bits - 8);
        let offset = e & ((1u64 << x) - 1);
        let sectors = (e & ((1u64 << 62) - 1)) >> x;
        let len = (sectors + 1) * 512 - (offset & 511);
        return Ok(Mapping::Compressed { offset, len });
    }
    let off = e & OFFSET_MASK;
    if e & ZERO != 0 || off == 0 {
        return Ok(Mapping::Zero);
    }
    if !off.is_multiple_of(h.cluster_size()) {
        return Err(Qcow2Error::Invalid {
            field: "L2 entry",
            detail: format!("data cluster offset {off:#x} is not cluster aligned"),
        });
    }
    Ok(Mapping::Data(off))
}

/// The refcount block offset from a refcount table entry (`None`: no block).
pub fn reftable_entry(h: &Header, e: u64) -> Option<u64> {
    let off = e & !511;
    (off != 0 && off.is_multiple_of(h.cluster_size())).then_some(off)
}

/// Big-endian u64 entries of a table.
pub fn entries(table: &[u8]) -> impl Iterator<Item = u64> + '_ {
    table
        .chunks_exact(8)
        .map(|c| u64::from_be_bytes(c.try_into().expect("8 bytes")))
}

/// Inflates a compressed cluster into `out` (one cluster), which must come out full.
pub fn decompress(
    kind: CompressionType,
    offset: u64,
    input: &[u8],
    out: &mut [u8],
) -> Result<(), Qcow2Error> {
    let err = |detail: String| Qcow2Error::Decompress { offset, detail };
    let produced = match kind {
        CompressionType::Deflate => {
            let mut d = flate2::Decompress::new(false);
            match d.decompress(input, out, flate2::FlushDecompress::Finish) {
                Ok(_) => d.total_out() as usize,
                Err(e) => return Err(err(format!("deflate: {e}"))),
            }
        }
        CompressionType::Zstd => zstd_into(input, out).map_err(|e| err(format!("zstd: {e}")))?,
    };
    if produced != out.len() {
        return Err(err(format!(
            "inflates to {produced} bytes, not a cluster of {}",
            out.len()
        )));
    }
    Ok(())
}

/// Decodes one zstd frame into `out`, stopping when `out` is full (trailing bytes are padding).
fn zstd_into(input: &[u8], out: &mut [u8]) -> std::io::Result<usize> {
    use zstd::stream::raw::{Decoder, InBuffer, Operation, OutBuffer};
    let mut dec = Decoder::new()?;
    let mut inb = InBuffer::around(input);
    let mut outb = OutBuffer::around(out);
    loop {
        let before = (inb.pos(), outb.pos());
        let hint = dec.run(&mut inb, &mut outb)?;
        if hint == 0 || outb.pos() == outb.capacity() || before == (inb.pos(), outb.pos()) {
            return Ok(outb.pos());
        }
    }
}
