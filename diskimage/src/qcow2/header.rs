//! The qcow2 header (versions 2 and 3) and its extensions, parsed from the image's first cluster.
//!
//! Every size the file controls is capped here before anything is allocated from it: the cluster
//! size (512 B to 2 MiB, as QEMU), the virtual size, the L1 table (at least what the virtual size
//! needs, at most 32 MiB, as QEMU), the refcount table (at most 8 MiB), the header length and each
//! extension's length (inside the first cluster). Features Kiln cannot honour while streaming are
//! refused with an error naming the field.

use super::Qcow2Error;

/// The four magic bytes every qcow2 file starts with (`QFI\xfb`).
pub const MAGIC: [u8; 4] = *b"QFI\xfb";
/// Largest virtual size accepted: 64 TiB (a disk Kiln writes, not a sparse toy).
pub const MAX_VIRTUAL_SIZE: u64 = 64 << 40;
/// Largest L1 table accepted, in bytes (QEMU's `QCOW_MAX_L1_SIZE`).
pub const MAX_L1_BYTES: u64 = 32 << 20;
/// Largest refcount table accepted, in bytes (QEMU's `QCOW_MAX_REFTABLE_SIZE`).
pub const MAX_REFTABLE_BYTES: u64 = 8 << 20;

const V2_LEN: usize = 72;
const V3_MIN_LEN: usize = 104;
const EXT_FULL_DISK_ENCRYPTION: u32 = 0x0537_be77;
const EXT_EXTERNAL_DATA_FILE: u32 = 0x4441_5441;

const INCOMPAT_DIRTY: u64 = 1;
const INCOMPAT_CORRUPT: u64 = 1 << 1;
const INCOMPAT_DATA_FILE: u64 = 1 << 2;
const INCOMPAT_COMPRESSION: u64 = 1 << 3;
const INCOMPAT_EXTL2: u64 = 1 << 4;

/// How compressed clusters are compressed (the v3 `compression_type` header field).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CompressionType {
    /// Raw deflate (no zlib header), the only type of version 2 images.
    Deflate,
    /// A zstd frame.
    Zstd,
}

/// What the converter needs from the header.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Header {
    pub version: u32,
    pub cluster_bits: u32,
    pub virtual_size: u64,
    pub l1_size: u32,
    pub l1_table_offset: u64,
    pub refcount_table_offset: u64,
    pub refcount_table_clusters: u32,
    pub compression: CompressionType,
}

impl Header {
    /// Bytes in a cluster.
    pub fn cluster_size(&self) -> u64 {
        1 << self.cluster_bits
    }

    /// Guest bytes one L2 table maps.
    pub fn l2_span(&self) -> u64 {
        self.cluster_size() * (self.cluster_size() / 8)
    }

    /// L1 entries the virtual size needs (entries past these are not read).
    pub fn l1_needed(&self) -> u64 {
        self.virtual_size.div_ceil(self.l2_span())
    }
}

fn be32(b: &[u8], at: usize) -> u32 {
    u32::from_be_bytes(b[at..at + 4].try_into().expect("4 bytes"))
}

fn be64(b: &[u8], at: usize) -> u64 {
    u64::from_be_bytes(b[at..at + 8].try_into().expect("8 bytes"))
}

fn unsupported(field: &'static str, detail: String) -> Qcow2Error {
    Qcow2Error::Unsupported { field, detail }
}

fn invalid(field: &'static str, detail: String) -> Qcow2Error {
    Qcow2Error::Invalid { field, detail }
}

/// The cluster size from the first 24 bytes, so the caller knows how much to read for [`parse`].
pub fn cluster_bits(first: &[u8]) -> Result<u32, Qcow2Error> {
    if first.len() < V2_LEN || first[..4] != MAGIC {
        return Err(Qcow2Error::NotQcow2);
    }
    let bits = be32(first, 20);
    if !(9..=21).contains(&bits) {
        return Err(invalid("cluster_bits", format!("{bits} is outside 9..=21")));
    }
    Ok(bits)
}

/// Parses the header from the image's first cluster (`cluster` may be shorter at end of file).
pub fn parse(cluster: &[u8]) -> Result<Header, Qcow2Error> {
    let cluster_bits = cluster_bits(cluster)?;
    let version = be32(cluster, 4);
    if version != 2 && version != 3 {
        return Err(unsupported(
            "version",
            format!("{version} (Kiln reads 2 and 3)"),
        ));
    }
    refuse_backing_and_encryption(cluster)?;
    let (header_len, compression) = if version == 3 {
        v3_fields(cluster)?
    } else {
        (V2_LEN, CompressionType::Deflate)
    };
    check_extensions(cluster, header_len)?;
    let h = Header {
        version,
        cluster_bits,
        virtual_size: be64(cluster, 24),
        l1_size: be32(cluster, 36),
        l1_table_offset: be64(cluster, 40),
        refcount_table_offset: be64(cluster, 48),
        refcount_table_clusters: be32(cluster, 56),
        compression,
    };
    check_sizes(&h)?;
    Ok(h)
}

fn refuse_backing_and_encryption(c: &[u8]) -> Result<(), Qcow2Error> {
    let backing_offset = be64(c, 8);
    if backing_offset != 0 {
        let len = be32(c, 16) as u64;
        let name = backing_offset
            .checked_add(len)
            .filter(|end| *end <= c.len() as u64 && len <= 1023)
            .map(|end| {
                String::from_utf8_lossy(&c[backing_offset as usize..end as usize]).into_owned()
            })
            .unwrap_or_else(|| "(unreadable)".into());
        return Err(unsupported(
            "backing_file_offset",
            format!(
                "the image has a backing file {name:?}; flatten it first (qemu-img convert -O qcow2)"
            ),
        ));
    }
    let crypt = be32(c, 32);
    if crypt != 0 {
        return Err(unsupported(
            "crypt_method",
            format!("{crypt}: encrypted images are not supported"),
        ));
    }
    Ok(())
}

fn v3_fields(c: &[u8]) -> Result<(usize, CompressionType), Qcow2Error> {
    if c.len() < V3_MIN_LEN {
        return Err(invalid(
            "header_length",
            "the file ends inside the version 3 header".into(),
        ));
    }
    let header_len = be32(c, 100) as usize;
    if header_len < V3_MIN_LEN || header_len > c.len() {
        return Err(invalid(
            "header_length",
            format!("{header_len} is not in {V3_MIN_LEN}..={}", c.len()),
        ));
    }
    let incompat = be64(c, 72);
    let refcount_order = be32(c, 96);
    if refcount_order > 6 {
        return Err(invalid(
            "refcount_order",
            format!("{refcount_order} is above 6"),
        ));
    }
    for (bit, what) in [
        (
            INCOMPAT_CORRUPT,
            "the corrupt bit is set: repair the image with qemu-img check -r all",
        ),
        (INCOMPAT_DATA_FILE, "the data is in an external data file"),
        (
            INCOMPAT_EXTL2,
            "extended L2 entries (subclusters) are not supported",
        ),
    ] {
        if incompat & bit != 0 {
            return Err(unsupported("incompatible_features", what.into()));
        }
    }
    let unknown = incompat
        & !(INCOMPAT_DIRTY
            | INCOMPAT_CORRUPT
            | INCOMPAT_DATA_FILE
            | INCOMPAT_COMPRESSION
            | INCOMPAT_EXTL2);
    if unknown != 0 {
        return Err(unsupported(
            "incompatible_features",
            format!("unknown feature bits {unknown:#x}"),
        ));
    }
    let ctype = if header_len > V3_MIN_LEN { c[104] } else { 0 };
    let compression = match (ctype, incompat & INCOMPAT_COMPRESSION != 0) {
        (0, _) => CompressionType::Deflate,
        (1, true) => CompressionType::Zstd,
        (1, false) => {
            return Err(invalid(
                "compression_type",
                "zstd without the compression-type incompatible bit".into(),
            ));
        }
        (t, _) => {
            return Err(unsupported(
                "compression_type",
                format!("{t} (Kiln reads 0 zlib, 1 zstd)"),
            ));
        }
    };
    Ok((header_len, compression))
}

fn check_extensions(c: &[u8], mut at: usize) -> Result<(), Qcow2Error> {
    loop {
        if at + 8 > c.len() {
            return Err(invalid(
                "header extension",
                format!("extension at byte {at} runs past the first cluster"),
            ));
        }
        let (kind, len) = (be32(c, at), be32(c, at + 4) as usize);
        if kind == 0 {
            return Ok(());
        }
        let padded = len.div_ceil(8) * 8;
        if padded > c.len() - at - 8 {
            return Err(invalid(
                "header extension",
                format!("extension {kind:#x} length {len} runs past the first cluster"),
            ));
        }
        match kind {
            EXT_FULL_DISK_ENCRYPTION => {
                return Err(unsupported(
                    "crypt_method",
                    "full disk encryption header".into(),
                ));
            }
            EXT_EXTERNAL_DATA_FILE => {
                return Err(unsupported(
                    "external data file",
                    "the data is in another file".into(),
                ));
            }
            _ => {}
        }
        at += 8 + padded;
    }
}

fn check_sizes(h: &Header) -> Result<(), Qcow2Error> {
    let cs = h.cluster_size();
    if h.virtual_size > MAX_VIRTUAL_SIZE {
        return Err(unsupported(
            "size",
            format!("{} bytes is above the 64 TiB Kiln accepts", h.virtual_size),
        ));
    }
    let l1_bytes = h.l1_size as u64 * 8;
    if (h.l1_size as u64) < h.l1_needed() || l1_bytes > MAX_L1_BYTES {
        return Err(invalid(
            "l1_size",
            format!(
                "{} entries for a {} byte disk (needs {})",
                h.l1_size,
                h.virtual_size,
                h.l1_needed()
            ),
        ));
    }
    if h.l1_size > 0 && (!h.l1_table_offset.is_multiple_of(cs) || h.l1_table_offset < cs) {
        return Err(invalid(
            "l1_table_offset",
            format!("{:#x} is not a cluster past the header", h.l1_table_offset),
        ));
    }
    let rt_bytes = h.refcount_table_clusters as u64 * cs;
    if rt_bytes > MAX_REFTABLE_BYTES {
        return Err(invalid(
            "refcount_table_clusters",
            format!("{} clusters is above 8 MiB", h.refcount_table_clusters),
        ));
    }
    if rt_bytes > 0 && (!h.refcount_table_offset.is_multiple_of(cs) || h.refcount_table_offset < cs)
    {
        return Err(invalid(
            "refcount_table_offset",
            format!(
                "{:#x} is not a cluster past the header",
                h.refcount_table_offset
            ),
        ));
    }
    Ok(())
}
