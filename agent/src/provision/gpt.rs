//! GPT after layer 0: move the backup header to the end of the disk and grow the root
//! partition to the end, keeping its name, type GUID, unique GUID and attributes.

use std::fs::OpenOptions;
use std::io::{Read, Seek, SeekFrom};
use std::os::unix::fs::FileTypeExt;
use std::path::Path;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use gptman::GPT;
use serde::{Deserialize, Serialize};

use super::events::{Event, Phase, Progress};

/// Discoverable Partitions Spec root type for x86-64.
pub const DPS_ROOT_X86_64: &str = "4f68bce3-e8cd-4db1-96e7-fbcaf984b709";
/// Discoverable Partitions Spec root type for aarch64.
pub const DPS_ROOT_AARCH64: &str = "b921b045-1df0-41c3-af44-4c6f280d3fae";

/// DPS root type for the machine we run on.
pub fn dps_root_native() -> &'static str {
    if cfg!(target_arch = "aarch64") {
        DPS_ROOT_AARCH64
    } else {
        DPS_ROOT_X86_64
    }
}

/// Which partition is root (from the image's annotations, issue 4's format).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum RootChoice {
    /// The DPS root partition for the architecture, else the last partition.
    Default,
    /// By number (1-based).
    Number(u32),
    /// By GPT partition name.
    Name(String),
}

/// Formats a GPT GUID (mixed endian on disk) as text.
pub fn format_guid(g: &[u8; 16]) -> String {
    format!(
        "{:02x}{:02x}{:02x}{:02x}-{:02x}{:02x}-{:02x}{:02x}-{:02x}{:02x}-{:02x}{:02x}{:02x}{:02x}{:02x}{:02x}",
        g[3],
        g[2],
        g[1],
        g[0],
        g[5],
        g[4],
        g[7],
        g[6],
        g[8],
        g[9],
        g[10],
        g[11],
        g[12],
        g[13],
        g[14],
        g[15]
    )
}

/// Parses a GUID text into GPT on-disk bytes.
pub fn parse_guid(s: &str) -> Option<[u8; 16]> {
    let hex: String = s.chars().filter(|c| *c != '-').collect();
    if hex.len() != 32 {
        return None;
    }
    let mut b = [0u8; 16];
    for (i, byte) in b.iter_mut().enumerate() {
        *byte = u8::from_str_radix(hex.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    b[0..4].reverse();
    b[4..6].reverse();
    b[6..8].reverse();
    Some(b)
}

/// Result of the phase.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GrowReport {
    /// Root partition number.
    pub number: u32,
    /// Its GPT name.
    pub name: String,
    /// Unique partition GUID (for `root=PARTUUID=`).
    pub partuuid: String,
    /// Type GUID.
    pub type_guid: String,
    /// Logical sector size of the table.
    pub sector_size: u64,
    /// First sector.
    pub start_lba: u64,
    /// Last sector before.
    pub old_end_lba: u64,
    /// Last sector after.
    pub new_end_lba: u64,
    /// Every used partition: (number, start, length) in bytes.
    pub partitions: Vec<(u32, u64, u64)>,
    /// Partition device node, once the kernel shows it (block devices only).
    pub node: Option<std::path::PathBuf>,
}

impl GrowReport {
    /// Partition size in bytes after growing.
    pub fn size(&self) -> u64 {
        (self.new_end_lba - self.start_lba + 1) * self.sector_size
    }
}

/// Picks the root partition number.
pub fn find_root(gpt: &GPT, choice: &RootChoice) -> Result<u32> {
    let used: Vec<(u32, &gptman::GPTPartitionEntry)> =
        gpt.iter().filter(|(_, p)| p.is_used()).collect();
    if used.is_empty() {
        bail!("layer 0's partition table has no partitions");
    }
    let list = || {
        used.iter()
            .map(|(i, p)| {
                format!(
                    "{i}:{:?}({})",
                    p.partition_name.as_str(),
                    format_guid(&p.partition_type_guid)
                )
            })
            .collect::<Vec<_>>()
            .join(", ")
    };
    match choice {
        RootChoice::Number(n) => used
            .iter()
            .find(|(i, _)| i == n)
            .map(|(i, _)| *i)
            .with_context(|| {
                format!(
                    "root partition {n} not in layer 0's table (partitions: {})",
                    list()
                )
            }),
        RootChoice::Name(name) => {
            let m: Vec<u32> = used
                .iter()
                .filter(|(_, p)| p.partition_name.as_str() == name)
                .map(|(i, _)| *i)
                .collect();
            match m.as_slice() {
                [one] => Ok(*one),
                [] => bail!(
                    "no partition named {name:?} in layer 0's table (partitions: {})",
                    list()
                ),
                _ => bail!(
                    "several partitions named {name:?} in layer 0's table (partitions: {})",
                    list()
                ),
            }
        }
        RootChoice::Default => {
            let dps = parse_guid(dps_root_native()).context("internal: DPS GUID")?;
            if let Some((i, _)) = used.iter().find(|(_, p)| p.partition_type_guid == dps) {
                return Ok(*i);
            }
            Ok(used
                .iter()
                .max_by_key(|(_, p)| p.ending_lba)
                .map(|(i, _)| *i)
                .unwrap_or(1))
        }
    }
}

/// Phase 3: moves the backup GPT to the end of `disk`, grows the root partition to the last
/// usable sector, updates the protective MBR size (boot code untouched), and, for a block
/// device, makes the kernel see it and waits for the partition node.
pub fn grow_root(disk: &Path, choice: &RootChoice, progress: Progress) -> Result<GrowReport> {
    let name = disk.display().to_string();
    let mut r = grow_table(disk, choice)
        .with_context(|| format!("growing the root partition on {name}"))?;
    progress(Event::msg(
        Phase::Partition,
        format!(
            "{name}: backup GPT at end, partition {} ({:?}, PARTUUID {}) grown from {} to {} sectors",
            r.number,
            r.name,
            r.partuuid,
            r.old_end_lba - r.start_lba + 1,
            r.new_end_lba - r.start_lba + 1
        ),
    ));
    let meta = std::fs::metadata(disk)?;
    if meta.file_type().is_block_device() {
        let f = OpenOptions::new()
            .read(true)
            .open(disk)
            .with_context(|| format!("opening {name}"))?;
        let dname = disk
            .file_name()
            .and_then(|n| n.to_str())
            .context("disk path has no name")?;
        // Resolve /dev/disk/by-... links to the kernel name.
        let canon = std::fs::canonicalize(disk).unwrap_or_else(|_| disk.to_path_buf());
        let kname = canon
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or(dname)
            .to_string();
        super::blockdev::refresh_partitions(&f, &kname, &r.partitions, Path::new("/sys"))?;
        let node = super::blockdev::wait_for_partition(
            Path::new("/sys"),
            Path::new("/dev"),
            &kname,
            r.number,
            r.size(),
            Duration::from_secs(10),
        )?;
        progress(Event::msg(
            Phase::Partition,
            format!("{} ready", node.display()),
        ));
        r.node = Some(node);
    }
    Ok(r)
}

/// The table edit itself, on any seekable file (tests use plain files).
pub fn grow_table(disk: &Path, choice: &RootChoice) -> Result<GrowReport> {
    let mut f = OpenOptions::new()
        .read(true)
        .write(true)
        .open(disk)
        .context("opening")?;
    let mut gpt = GPT::find_from(&mut f).context("reading the GPT written by layer 0")?;
    let ss = gpt.sector_size;
    gpt.header
        .update_from(&mut f, ss)
        .context("computing the new GPT header")?;
    let n = find_root(&gpt, choice)?;
    let root = gpt[n].clone();
    if let Some((i, p)) = gpt
        .iter()
        .find(|(i, p)| *i != n && p.is_used() && p.starting_lba > root.ending_lba)
    {
        bail!(
            "root partition {n} ({:?}) is not the last on the disk: partition {i} ({:?}) follows it; cannot grow",
            root.partition_name.as_str(),
            p.partition_name.as_str()
        );
    }
    let new_end = gpt.header.last_usable_lba;
    if new_end < root.ending_lba {
        bail!(
            "the disk is smaller than the image's root partition ends (sector {})",
            root.ending_lba
        );
    }
    gpt[n].ending_lba = new_end;
    gpt.write_into(&mut f).context("writing the GPT")?;
    // Protective MBR: keep the boot code and bootable flag, fix the size.
    let mut mbr = [0u8; 512];
    f.seek(SeekFrom::Start(0))?;
    f.read_exact(&mut mbr)?;
    if mbr[446 + 4] == 0xee {
        if mbr[446] == 0x80 {
            GPT::write_bootable_protective_mbr_into(&mut f, ss)
                .context("updating the protective MBR")?;
        } else {
            GPT::write_protective_mbr_into(&mut f, ss).context("updating the protective MBR")?;
        }
    }
    f.sync_all().context("syncing")?;
    Ok(GrowReport {
        number: n,
        name: root.partition_name.as_str().to_string(),
        partuuid: format_guid(&root.unique_partition_guid),
        type_guid: format_guid(&root.partition_type_guid),
        sector_size: ss,
        start_lba: root.starting_lba,
        old_end_lba: root.ending_lba,
        new_end_lba: new_end,
        node: None,
        partitions: gpt
            .iter()
            .filter(|(_, p)| p.is_used())
            .map(|(i, p)| {
                (
                    i,
                    p.starting_lba * ss,
                    (p.ending_lba - p.starting_lba + 1) * ss,
                )
            })
            .collect(),
    })
}

#[cfg(test)]
pub(crate) mod testimg {
    //! Disk images for tests, built in code.
    use std::io::Cursor;

    use gptman::{GPT, GPTPartitionEntry};

    use super::*;

    pub const ESP: &str = "c12a7328-f81f-11d2-ba4b-00a0c93ec93b";
    pub const BIOS: &str = "21686148-6449-6e6f-744e-656564454649";

    /// A `size`-byte GPT image: BIOS boot (1 MiB), ESP (2 MiB), root (rest), partition
    /// contents filled with a pattern, boot code in the MBR.
    pub fn make(size: u64, ss: u64) -> Vec<u8> {
        let mut data = vec![0u8; size as usize];
        for (i, b) in data.iter_mut().enumerate().skip(1 << 20) {
            *b = (i / 4096 % 251) as u8 ^ (i % 7) as u8;
        }
        data[..440].copy_from_slice(&[0xeb; 440]);
        let mut cur = Cursor::new(data);
        let mut gpt = GPT::new_from(
            &mut cur,
            ss,
            parse_guid("11111111-2222-3333-4444-555555555555").unwrap(),
        )
        .unwrap();
        let mib = (1 << 20) / ss;
        let parts = [
            (BIOS, "bios", mib, 2 * mib - 1),
            (ESP, "esp", 2 * mib, 4 * mib - 1),
            (DPS_ROOT_X86_64, "root", 4 * mib, gpt.header.last_usable_lba),
        ];
        for (i, (t, name, s, e)) in parts.iter().enumerate() {
            gpt[i as u32 + 1] = GPTPartitionEntry {
                partition_type_guid: parse_guid(t).unwrap(),
                unique_partition_guid: parse_guid(&format!(
                    "aaaaaaaa-0000-0000-0000-00000000000{}",
                    i + 1
                ))
                .unwrap(),
                starting_lba: *s,
                ending_lba: *e,
                attribute_bits: if i == 2 { 1 << 59 } else { 0 },
                partition_name: (*name).into(),
            };
        }
        gpt.write_into(&mut cur).unwrap();
        GPT::write_protective_mbr_into(&mut cur, ss).unwrap();
        cur.into_inner()
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use super::*;

    #[test]
    fn guid_round_trip() {
        let g = parse_guid(DPS_ROOT_X86_64).unwrap();
        assert_eq!(g[0], 0xe3);
        assert_eq!(format_guid(&g), DPS_ROOT_X86_64);
        assert!(parse_guid("xyz").is_none());
    }

    fn disk_with_image(img: &[u8], disk_size: u64) -> tempfile::NamedTempFile {
        let mut f = tempfile::NamedTempFile::new().unwrap();
        f.write_all(img).unwrap();
        f.as_file().set_len(disk_size).unwrap();
        f
    }

    #[test]
    fn grows_root_keeps_identity() {
        for ss in [512u64, 4096] {
            let img = testimg::make(8 << 20, ss);
            let f = disk_with_image(&img, 64 << 20);
            let r = grow_table(f.path(), &RootChoice::Default).unwrap();
            assert_eq!(r.number, 3);
            assert_eq!(r.partuuid, "aaaaaaaa-0000-0000-0000-000000000003");
            let mut file = std::fs::File::open(f.path()).unwrap();
            let gpt = GPT::find_from(&mut file).unwrap();
            assert_eq!(gpt.sector_size, ss);
            let last_lba = (64 << 20) / ss - 1;
            assert_eq!(gpt.header.backup_lba, last_lba);
            assert_eq!(gpt[3].ending_lba, gpt.header.last_usable_lba);
            assert_eq!(gpt[3].partition_name.as_str(), "root");
            assert_eq!(format_guid(&gpt[3].partition_type_guid), DPS_ROOT_X86_64);
            assert_eq!(gpt[3].attribute_bits, 1 << 59);
            assert_eq!(gpt[2].ending_lba, 4 * (1 << 20) / ss - 1, "ESP untouched");
            // Backup header really at the last sector, boot code intact, pMBR size updated.
            let bytes = std::fs::read(f.path()).unwrap();
            let end = bytes.len() - ss as usize;
            assert_eq!(&bytes[end..end + 8], b"EFI PART");
            assert_eq!(&bytes[..440], &[0xeb; 440][..]);
            let mbr_size = u32::from_le_bytes(bytes[446 + 12..446 + 16].try_into().unwrap());
            assert_eq!(u64::from(mbr_size), last_lba);
            // Old backup location (end of the 8 MiB image) no longer matters, data intact.
            assert_eq!(&bytes[(4 << 20)..(5 << 20)], &img[(4 << 20)..(5 << 20)]);
        }
    }

    #[test]
    fn choices() {
        let img = testimg::make(8 << 20, 512);
        let cases: &[(RootChoice, Result<u32, &str>)] = &[
            (RootChoice::Number(3), Ok(3)),
            (RootChoice::Name("root".into()), Ok(3)),
            (RootChoice::Number(2), Err("is not the last")),
            (RootChoice::Name("esp".into()), Err("is not the last")),
            (
                RootChoice::Number(9),
                Err("root partition 9 not in layer 0's table"),
            ),
            (
                RootChoice::Name("nope".into()),
                Err("no partition named \"nope\""),
            ),
        ];
        for (choice, want) in cases {
            let f = disk_with_image(&img, 16 << 20);
            let got = grow_table(f.path(), choice);
            match (want, got) {
                (Ok(n), Ok(r)) => assert_eq!(r.number, *n),
                (Err(w), Err(e)) => assert!(format!("{e:#}").contains(w), "{choice:?}: {e:#}"),
                (w, g) => panic!("{choice:?}: want {w:?} got {g:?}"),
            }
        }
    }
}
