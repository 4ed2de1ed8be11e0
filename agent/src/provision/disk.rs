//! Disk inventory from sysfs, `/proc/self/mountinfo` and `/proc/swaps` (no udev needed).
//!
//! Parsers take a sysfs root and the text of the proc files, so tests run against fake
//! trees. `/dev/disk/by-id` and `/dev/disk/by-path` are read when they exist (udev ran);
//! otherwise the names are computed from sysfs the way udev's persistent-storage rules
//! build them (best effort; serial and WWN matching do not depend on them).

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};

/// How a disk is attached.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Transport {
    /// NVMe namespace.
    Nvme,
    /// virtio-blk.
    Virtio,
    /// SATA/PATA through libata.
    Ata,
    /// SAS end device.
    Sas,
    /// USB mass storage.
    Usb,
    /// Other SCSI (virtio-scsi, iSCSI, FC...).
    Scsi,
    /// SD/eMMC.
    Mmc,
    /// Loop device (a file).
    Loop,
    /// RAM disk or zram.
    Ram,
    /// Device-mapper or md RAID (stacked).
    Stacked,
    /// CD/DVD.
    Optical,
    /// Could not tell.
    Unknown,
}

impl Transport {
    /// The name used in `transport=` hints.
    pub fn name(self) -> &'static str {
        match self {
            Transport::Nvme => "nvme",
            Transport::Virtio => "virtio",
            Transport::Ata => "ata",
            Transport::Sas => "sas",
            Transport::Usb => "usb",
            Transport::Scsi => "scsi",
            Transport::Mmc => "mmc",
            Transport::Loop => "loop",
            Transport::Ram => "ram",
            Transport::Stacked => "stacked",
            Transport::Optical => "optical",
            Transport::Unknown => "unknown",
        }
    }
}

/// One partition of a disk.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Partition {
    /// Kernel name (`sda1`, `nvme0n1p1`).
    pub name: String,
    /// `major:minor`.
    pub dev: String,
    /// Holders (dm, md, bcache...) of this partition.
    pub holders: Vec<String>,
}

/// One whole block device.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Disk {
    /// Kernel name (`sda`).
    pub name: String,
    /// Device node (`/dev/sda`).
    pub path: PathBuf,
    /// `major:minor`.
    pub dev: String,
    /// Size in bytes.
    pub size: u64,
    /// Logical sector size in bytes.
    pub logical_sector: u32,
    /// Physical sector size in bytes.
    pub physical_sector: u32,
    /// Model string, trimmed.
    pub model: Option<String>,
    /// Vendor string, trimmed.
    pub vendor: Option<String>,
    /// Serial number, trimmed.
    pub serial: Option<String>,
    /// World wide name / EUI as the kernel reports it (`naa.5000c500a1b2c3d4`, `eui.00...`).
    pub wwn: Option<String>,
    /// Names under /dev/disk/by-id (without the directory).
    pub by_id: Vec<String>,
    /// Names under /dev/disk/by-path (without the directory).
    pub by_path: Vec<String>,
    /// How it is attached.
    pub transport: Transport,
    /// Spinning disk.
    pub rotational: bool,
    /// Removable medium.
    pub removable: bool,
    /// Read-only.
    pub read_only: bool,
    /// Holders of the disk itself and of its partitions (`dm-0`, `md127`).
    pub holders: Vec<String>,
    /// Partitions.
    pub partitions: Vec<Partition>,
    /// Mount points of the disk or its partitions (`/dev/sda2 on /boot`).
    pub mounts: Vec<String>,
    /// Active swap on the disk or its partitions.
    pub swaps: Vec<String>,
    /// Volume id of an ISO 9660 filesystem at the start of the disk (a hybrid ISO written
    /// to a USB stick, a virtual CD); `KILN` is the installer's own medium.
    #[serde(default)]
    pub iso_volume_id: Option<String>,
}

/// Volume id `scripts/build-iso` gives the installer ISO: a disk carrying it is the boot
/// medium and is never chosen.
pub const INSTALLER_VOLUME_ID: &str = "KILN";

/// Byte offset of the ISO 9660 primary volume descriptor (sector 16 of 2048 bytes).
pub const ISO9660_PVD_OFFSET: u64 = 16 * 2048;

/// The volume id of an ISO 9660 primary volume descriptor (2048 bytes from
/// [`ISO9660_PVD_OFFSET`]), or `None` if the bytes are not one.
pub fn iso9660_volume_id(pvd: &[u8]) -> Option<String> {
    if pvd.len() < 72 || pvd[0] != 1 || &pvd[1..6] != b"CD001" {
        return None;
    }
    let id = String::from_utf8_lossy(&pvd[40..72]).trim_end().to_string();
    Some(id)
}

/// Reads the ISO 9660 volume id of a block device; `None` when it has none or cannot be
/// read (an empty CD drive answers ENOMEDIUM).
fn read_iso_volume_id(path: &Path) -> Option<String> {
    use std::os::unix::fs::FileExt;
    let f = fs::File::open(path).ok()?;
    let mut pvd = [0u8; 2048];
    f.read_exact_at(&mut pvd, ISO9660_PVD_OFFSET).ok()?;
    iso9660_volume_id(&pvd)
}

/// Where the inventory reads from; `System` paths in production, temp trees in tests.
#[derive(Debug, Clone)]
pub struct Sources<'a> {
    /// Sysfs mount (`/sys`).
    pub sys: &'a Path,
    /// Device directory (`/dev`).
    pub dev: &'a Path,
    /// Text of `/proc/self/mountinfo`.
    pub mountinfo: &'a str,
    /// Text of `/proc/swaps`.
    pub swaps: &'a str,
}

/// Inventory of the running system.
pub fn inventory_system() -> Result<Vec<Disk>> {
    let mountinfo =
        fs::read_to_string("/proc/self/mountinfo").context("reading /proc/self/mountinfo")?;
    let swaps = fs::read_to_string("/proc/swaps").unwrap_or_default();
    inventory(&Sources {
        sys: Path::new("/sys"),
        dev: Path::new("/dev"),
        mountinfo: &mountinfo,
        swaps: &swaps,
    })
}

/// A mount as far as disk choice cares (`dev`, `target`, `source`).
pub use crate::mountinfo::Entry as Mount;

/// Parses `/proc/self/mountinfo`.
pub fn parse_mountinfo(text: &str) -> Vec<Mount> {
    crate::mountinfo::parse(text)
}

/// Parses `/proc/swaps`: the device or file names in use.
pub fn parse_swaps(text: &str) -> Vec<String> {
    text.lines()
        .skip(1)
        .filter_map(|l| l.split_whitespace().next())
        .map(crate::mountinfo::unescape_octal)
        .collect()
}

fn read_trim(p: &Path) -> Option<String> {
    let s = fs::read(p).ok()?;
    let s = String::from_utf8_lossy(&s)
        .trim()
        .trim_matches('\0')
        .trim()
        .to_string();
    (!s.is_empty()).then_some(s)
}

fn read_u64(p: &Path) -> Option<u64> {
    read_trim(p)?.parse().ok()
}

/// Serial from SCSI VPD page 0x80 (unit serial number): 4-byte header, then ASCII.
pub fn parse_vpd_pg80(b: &[u8]) -> Option<String> {
    if b.len() < 4 || b[1] != 0x80 {
        return None;
    }
    let len = u16::from_be_bytes([b[2], b[3]]) as usize;
    let body = b.get(4..4 + len.min(b.len() - 4))?;
    let s = String::from_utf8_lossy(body)
        .trim()
        .trim_matches('\0')
        .trim()
        .to_string();
    (!s.is_empty()).then_some(s)
}

fn list_dir(p: &Path) -> Vec<String> {
    let mut v: Vec<String> = fs::read_dir(p)
        .map(|rd| {
            rd.filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

/// Reads `/dev/disk/<kind>`: name -> kernel device name the link points to.
fn read_links(dir: &Path) -> Option<BTreeMap<String, String>> {
    let rd = fs::read_dir(dir).ok()?;
    let mut m = BTreeMap::new();
    for e in rd.filter_map(|e| e.ok()) {
        if let Ok(t) = fs::read_link(e.path())
            && let Some(base) = t.file_name()
        {
            m.insert(
                e.file_name().to_string_lossy().into_owned(),
                base.to_string_lossy().into_owned(),
            );
        }
    }
    Some(m)
}

fn transport_of(name: &str, link: &str) -> Transport {
    let starts = |p: &str| name.starts_with(p);
    if starts("nvme") {
        Transport::Nvme
    } else if starts("loop") {
        Transport::Loop
    } else if starts("ram") || starts("zram") {
        Transport::Ram
    } else if starts("dm-") || starts("md") {
        Transport::Stacked
    } else if starts("sr") {
        Transport::Optical
    } else if starts("mmcblk") {
        Transport::Mmc
    } else if link.contains("/usb") {
        Transport::Usb
    } else if link.contains("/virtio") && !link.contains("/host") {
        Transport::Virtio
    } else if link.contains("/ata") {
        Transport::Ata
    } else if link.contains("/end_device-") {
        Transport::Sas
    } else if link.contains("/target") {
        Transport::Scsi
    } else if starts("vd") {
        Transport::Virtio
    } else {
        Transport::Unknown
    }
}

fn is_pci_addr(s: &str) -> bool {
    // dddd:bb:dd.f
    let b = s.as_bytes();
    b.len() == 12 && b[4] == b':' && b[7] == b':' && b[10] == b'.'
}

fn is_hctl(s: &str) -> bool {
    let parts: Vec<&str> = s.split(':').collect();
    parts.len() == 4
        && parts
            .iter()
            .all(|p| !p.is_empty() && p.bytes().all(|c| c.is_ascii_digit()))
}

/// udev-like by-path name computed from the sysfs device path (fallback when udev did not run).
pub fn compute_by_path(
    name: &str,
    link: &str,
    transport: Transport,
    nsid: Option<u64>,
) -> Option<String> {
    let comps: Vec<&str> = link.split('/').collect();
    let pci = comps.iter().rev().find(|c| is_pci_addr(c))?;
    let mut s = format!("pci-{pci}");
    match transport {
        Transport::Nvme => {
            let ns = nsid.or_else(|| name.rsplit('n').next()?.parse().ok())?;
            s.push_str(&format!("-nvme-{ns}"));
        }
        Transport::Ata => {
            let port = comps
                .iter()
                .rev()
                .find_map(|c| c.strip_prefix("ata")?.parse::<u32>().ok())?;
            s.push_str(&format!("-ata-{port}.0"));
        }
        Transport::Scsi | Transport::Sas | Transport::Usb => {
            let hctl = comps.iter().rev().find(|c| is_hctl(c))?;
            s.push_str(&format!("-scsi-{hctl}"));
        }
        _ => {}
    }
    Some(s)
}

fn udev_clean(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join("_")
}

/// udev-like by-id names (fallback when udev did not run).
pub fn compute_by_id(d: &Disk) -> Vec<String> {
    let mut v = Vec::new();
    let model = d.model.as_deref().map(udev_clean);
    let serial = d.serial.as_deref().map(udev_clean);
    match (d.transport, &model, &serial) {
        (Transport::Nvme, Some(m), Some(s)) => v.push(format!("nvme-{m}_{s}")),
        (Transport::Ata, Some(m), Some(s)) => v.push(format!("ata-{m}_{s}")),
        (Transport::Virtio, _, Some(s)) => v.push(format!("virtio-{s}")),
        (Transport::Usb, Some(m), Some(s)) => v.push(format!("usb-{m}_{s}")),
        _ => {}
    }
    if let Some(w) = &d.wwn {
        if let Some(naa) = w.strip_prefix("naa.") {
            v.push(format!("wwn-0x{naa}"));
        } else if d.transport == Transport::Nvme {
            v.push(format!("nvme-{}", udev_clean(w)));
        }
    }
    v
}

/// Reads every whole block device below `src.sys/block`.
pub fn inventory(src: &Sources) -> Result<Vec<Disk>> {
    let block = src.sys.join("block");
    let names = list_dir(&block);
    if names.is_empty() {
        anyhow::bail!(
            "no block devices under {} (is sysfs mounted?)",
            block.display()
        );
    }
    let system = System {
        mounts: parse_mountinfo(src.mountinfo),
        swaps: parse_swaps(src.swaps),
        by_id: read_links(&src.dev.join("disk/by-id")),
        by_path: read_links(&src.dev.join("disk/by-path")),
    };
    let mut disks = Vec::new();
    for name in names {
        if let Some(disk) = read_disk(src, &system, &block.join(&name), name) {
            disks.push(disk);
        }
    }
    Ok(disks)
}

/// What the inventory reads once for all disks: mounts, swaps and the udev links.
struct System {
    mounts: Vec<Mount>,
    swaps: Vec<String>,
    by_id: Option<BTreeMap<String, String>>,
    by_path: Option<BTreeMap<String, String>>,
}

/// The disk at sysfs directory `b`; None when it has no size (unattached loop devices and
/// empty card readers are not disks).
fn read_disk(src: &Sources, system: &System, b: &Path, name: String) -> Option<Disk> {
    let sectors = read_u64(&b.join("size")).filter(|s| *s != 0)?;
    let link = fs::read_link(b)
        .map(|p| p.to_string_lossy().into_owned())
        .unwrap_or_default();
    let transport = transport_of(&name, &link);
    let dev = read_trim(&b.join("dev")).unwrap_or_default();
    let serial = read_trim(&b.join("device/serial"))
        .or_else(|| read_trim(&b.join("serial")))
        .or_else(|| {
            fs::read(b.join("device/vpd_pg80"))
                .ok()
                .and_then(|v| parse_vpd_pg80(&v))
        });
    let wwn = read_trim(&b.join("wwid")).or_else(|| read_trim(&b.join("device/wwid")));
    let mut holders = list_dir(&b.join("holders"));
    let partitions = read_partitions(b, &mut holders);
    let mut devs: Vec<(String, String)> = vec![(name.clone(), dev.clone())];
    devs.extend(partitions.iter().map(|p| (p.name.clone(), p.dev.clone())));
    let (mounts, swaps) = uses(system, &devs);
    let mut disk = Disk {
        path: src.dev.join(&name),
        dev,
        size: sectors * 512,
        logical_sector: read_u64(&b.join("queue/logical_block_size")).unwrap_or(512) as u32,
        physical_sector: read_u64(&b.join("queue/physical_block_size")).unwrap_or(512) as u32,
        model: read_trim(&b.join("device/model")),
        vendor: read_trim(&b.join("device/vendor")),
        serial,
        wwn,
        by_id: Vec::new(),
        by_path: Vec::new(),
        transport,
        rotational: read_u64(&b.join("queue/rotational")) == Some(1),
        removable: read_u64(&b.join("removable")) == Some(1),
        read_only: read_u64(&b.join("ro")) == Some(1),
        holders,
        partitions,
        mounts,
        swaps,
        iso_volume_id: read_iso_volume_id(&src.dev.join(&name)),
        name,
    };
    let links_to = |m: &BTreeMap<String, String>| -> Vec<String> {
        m.iter()
            .filter(|(_, t)| **t == disk.name)
            .map(|(k, _)| k.clone())
            .collect()
    };
    disk.by_id = match &system.by_id {
        Some(m) => links_to(m),
        None => compute_by_id(&disk),
    };
    disk.by_path = match &system.by_path {
        Some(m) => links_to(m),
        None => compute_by_path(&disk.name, &link, transport, read_u64(&b.join("nsid")))
            .into_iter()
            .collect(),
    };
    Some(disk)
}

/// The partitions of the disk at `b`; their holders are added to the disk's.
fn read_partitions(b: &Path, holders: &mut Vec<String>) -> Vec<Partition> {
    let mut partitions = Vec::new();
    for sub in list_dir(b) {
        let p = b.join(&sub);
        if p.join("partition").exists() {
            let ph = list_dir(&p.join("holders"));
            holders.extend(ph.iter().cloned());
            partitions.push(Partition {
                name: sub,
                dev: read_trim(&p.join("dev")).unwrap_or_default(),
                holders: ph,
            });
        }
    }
    partitions
}

/// Mounts ("/dev/X on /target") and swaps on any of `devs` (kernel name, major:minor).
fn uses(system: &System, devs: &[(String, String)]) -> (Vec<String>, Vec<String>) {
    let mut mounts = Vec::new();
    for m in &system.mounts {
        for (n, d) in devs {
            if (!d.is_empty() && &m.dev == d) || m.source == format!("/dev/{n}") {
                mounts.push(format!("/dev/{n} on {}", m.target));
            }
        }
    }
    let swaps = system
        .swaps
        .iter()
        .filter(|s| devs.iter().any(|(n, _)| s.as_str() == format!("/dev/{n}")))
        .cloned()
        .collect();
    (mounts, swaps)
}

/// Kernel name of partition `number` of disk `disk` (`sda`+2 = `sda2`, `nvme0n1`+2 = `nvme0n1p2`).
pub fn partition_name(disk: &str, number: u32) -> String {
    if disk.ends_with(|c: char| c.is_ascii_digit()) {
        format!("{disk}p{number}")
    } else {
        format!("{disk}{number}")
    }
}

#[cfg(test)]
pub(crate) mod fake {
    //! Fake sysfs trees for tests.
    use std::fs;
    use std::path::Path;

    /// Description of a fake disk.
    #[derive(Clone, Default)]
    pub struct FakeDisk {
        pub name: &'static str,
        pub devpath: &'static str,
        pub dev: &'static str,
        pub gib: u64,
        pub serial: Option<&'static str>,
        pub serial_file: &'static str,
        pub model: Option<&'static str>,
        pub vendor: Option<&'static str>,
        pub wwid: Option<&'static str>,
        pub rotational: bool,
        pub removable: bool,
        pub ro: bool,
        pub lbs: u32,
        pub parts: &'static [(&'static str, &'static str)],
        pub holders: &'static [&'static str],
        /// Content of the device node in the fake /dev (an ISO 9660 header, say).
        pub content: Option<Vec<u8>>,
    }

    /// The first 34 KiB of an ISO 9660 image with this volume id.
    pub fn iso_head(volume_id: &str) -> Vec<u8> {
        let mut b = vec![0u8; super::ISO9660_PVD_OFFSET as usize + 2048];
        let pvd = &mut b[super::ISO9660_PVD_OFFSET as usize..];
        pvd[0] = 1;
        pvd[1..6].copy_from_slice(b"CD001");
        pvd[40..72].fill(b' ');
        pvd[40..40 + volume_id.len()].copy_from_slice(volume_id.as_bytes());
        b
    }

    pub fn write(p: &Path, s: &str) {
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        fs::write(p, s).unwrap();
    }

    /// Writes the fake sysfs under `sys`, and device nodes with [`FakeDisk::content`] as
    /// regular files in `dev` next to it.
    pub fn make(sys: &Path, disks: &[FakeDisk]) {
        for d in disks {
            if let (Some(c), Some(root)) = (&d.content, sys.parent()) {
                fs::create_dir_all(root.join("dev")).unwrap();
                fs::write(root.join("dev").join(d.name), c).unwrap();
            }
            let real = sys.join(d.devpath.trim_start_matches("../"));
            write(&real.join("size"), &format!("{}\n", d.gib << 21));
            write(&real.join("dev"), &format!("{}\n", d.dev));
            let lbs = if d.lbs == 0 { 512 } else { d.lbs };
            write(&real.join("queue/logical_block_size"), &format!("{lbs}\n"));
            write(&real.join("queue/physical_block_size"), &format!("{lbs}\n"));
            write(
                &real.join("queue/rotational"),
                if d.rotational { "1\n" } else { "0\n" },
            );
            write(
                &real.join("removable"),
                if d.removable { "1\n" } else { "0\n" },
            );
            write(&real.join("ro"), if d.ro { "1\n" } else { "0\n" });
            if let Some(s) = d.serial {
                let f = if d.serial_file.is_empty() {
                    "device/serial"
                } else {
                    d.serial_file
                };
                if f.ends_with("vpd_pg80") {
                    let mut v = vec![0u8, 0x80, 0, s.len() as u8];
                    v.extend_from_slice(s.as_bytes());
                    fs::create_dir_all(real.join("device")).unwrap();
                    fs::write(real.join(f), v).unwrap();
                } else {
                    write(&real.join(f), &format!("{s}\n"));
                }
            }
            if let Some(m) = d.model {
                write(&real.join("device/model"), &format!("{m}  \n"));
            }
            if let Some(v) = d.vendor {
                write(&real.join("device/vendor"), &format!("{v}  \n"));
            }
            if let Some(w) = d.wwid {
                write(&real.join("device/wwid"), &format!("{w}\n"));
            }
            fs::create_dir_all(real.join("holders")).unwrap();
            for h in d.holders {
                fs::create_dir_all(real.join("holders").join(h)).unwrap();
            }
            for (pn, pdev) in d.parts {
                write(&real.join(pn).join("partition"), "1\n");
                write(&real.join(pn).join("dev"), &format!("{pdev}\n"));
                fs::create_dir_all(real.join(pn).join("holders")).unwrap();
            }
            fs::create_dir_all(sys.join("block")).unwrap();
            std::os::unix::fs::symlink(
                format!("../{}", d.devpath.trim_start_matches("../")),
                sys.join("block").join(d.name),
            )
            .unwrap();
        }
    }

    /// A realistic machine: two NVMe, a SATA SSD, a SATA HDD, a USB stick, a virtio disk,
    /// a loop device, a small SAS disk used by md RAID.
    pub fn machine() -> Vec<FakeDisk> {
        vec![
            FakeDisk {
                name: "nvme0n1",
                devpath: "devices/pci0000:00/0000:00:1d.0/0000:3d:00.0/nvme/nvme0/nvme0n1",
                dev: "259:0",
                gib: 960,
                serial: Some("S4EWNX0R123456"),
                model: Some("Samsung SSD 980 PRO 1TB"),
                wwid: Some("eui.002538b111111111"),
                parts: &[("nvme0n1p1", "259:1"), ("nvme0n1p2", "259:2")],
                ..Default::default()
            },
            FakeDisk {
                name: "nvme1n1",
                devpath: "devices/pci0000:00/0000:00:1d.4/0000:3e:00.0/nvme/nvme1/nvme1n1",
                dev: "259:3",
                gib: 480,
                serial: Some("PHLJ000000ZZ480"),
                model: Some("INTEL SSDPE2KX480G8"),
                ..Default::default()
            },
            FakeDisk {
                name: "sda",
                devpath: "devices/pci0000:00/0000:00:17.0/ata1/host0/target0:0:0/0:0:0:0/block/sda",
                dev: "8:0",
                gib: 240,
                serial: Some("BTYS1234"),
                serial_file: "device/vpd_pg80",
                model: Some("INTEL SSDSC2KB24"),
                vendor: Some("ATA"),
                wwid: Some("naa.55cd2e404c0a1b2c"),
                ..Default::default()
            },
            FakeDisk {
                name: "sdb",
                devpath: "devices/pci0000:00/0000:00:17.0/ata2/host1/target1:0:0/1:0:0:0/block/sdb",
                dev: "8:16",
                gib: 4000,
                serial: Some("ZC1ABCDE"),
                model: Some("ST4000NM000A"),
                vendor: Some("ATA"),
                wwid: Some("naa.5000c500a1b2c3d4"),
                rotational: true,
                ..Default::default()
            },
            FakeDisk {
                name: "sdc",
                devpath: "devices/pci0000:00/0000:00:14.0/usb1/1-4/1-4:1.0/host6/target6:0:0/6:0:0:0/block/sdc",
                dev: "8:32",
                gib: 32,
                model: Some("Ultra Fit"),
                vendor: Some("SanDisk"),
                removable: true,
                parts: &[("sdc1", "8:33")],
                ..Default::default()
            },
            FakeDisk {
                name: "vda",
                devpath: "devices/pci0000:00/0000:00:04.0/virtio1/block/vda",
                dev: "253:0",
                gib: 64,
                serial: Some("KILN-VDA"),
                serial_file: "serial",
                ..Default::default()
            },
            FakeDisk {
                name: "loop0",
                devpath: "devices/virtual/block/loop0",
                dev: "7:0",
                gib: 4,
                ..Default::default()
            },
            FakeDisk {
                name: "sdd",
                devpath: "devices/pci0000:00/0000:00:1f.0/host2/port-2:0/end_device-2:0/target2:0:0/2:0:0:0/block/sdd",
                dev: "8:48",
                gib: 100,
                model: Some("MZILT800HBHQ0D3"),
                vendor: Some("SAMSUNG"),
                holders: &["md127"],
                ..Default::default()
            },
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::fake::*;
    use super::*;

    const MOUNTINFO: &str = "\
22 1 0:21 / / rw,relatime - rootfs rootfs rw
23 22 0:5 / /dev rw - devtmpfs devtmpfs rw
30 22 8:33 / /run/media/KILN\\040USB rw - vfat /dev/sdc1 rw
";
    const SWAPS: &str = "Filename\t\t\t\tType\t\tSize\t\tUsed\t\tPriority\n/dev/nvme0n1p2                          partition\t8388604\t\t0\t\t-2\n";

    fn inv(dir: &Path) -> Vec<Disk> {
        make(&dir.join("sys"), &machine());
        inventory(&Sources {
            sys: &dir.join("sys"),
            dev: &dir.join("dev"),
            mountinfo: MOUNTINFO,
            swaps: SWAPS,
        })
        .unwrap()
    }

    #[test]
    fn iso9660_volume_ids() {
        let head = super::fake::iso_head("KILN");
        let pvd = &head[ISO9660_PVD_OFFSET as usize..];
        assert_eq!(iso9660_volume_id(pvd).as_deref(), Some("KILN"));
        let mut not_pvd = pvd.to_vec();
        not_pvd[0] = 2; // a supplementary descriptor, not the primary one
        assert_eq!(iso9660_volume_id(&not_pvd), None);
        assert_eq!(iso9660_volume_id(&[0u8; 2048]), None);
        assert_eq!(iso9660_volume_id(&pvd[..40]), None);
    }

    #[test]
    fn mountinfo_and_swaps() {
        let m = parse_mountinfo(MOUNTINFO);
        assert_eq!(m.len(), 3);
        assert_eq!(
            m[2],
            Mount {
                dev: "8:33".into(),
                target: "/run/media/KILN USB".into(),
                fstype: "vfat".into(),
                source: "/dev/sdc1".into()
            }
        );
        assert_eq!(parse_swaps(SWAPS), vec!["/dev/nvme0n1p2".to_string()]);
    }

    #[test]
    fn vpd_pg80() {
        let mut v = vec![0, 0x80, 0, 10];
        v.extend_from_slice(b"  ABC123  ");
        assert_eq!(parse_vpd_pg80(&v).as_deref(), Some("ABC123"));
        assert_eq!(parse_vpd_pg80(&[0, 0x83, 0, 1, b'x']), None);
    }

    #[test]
    fn inventory_fields() {
        let t = tempfile::tempdir().unwrap();
        let disks = inv(t.path());
        let names: Vec<&str> = disks.iter().map(|d| d.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "loop0", "nvme0n1", "nvme1n1", "sda", "sdb", "sdc", "sdd", "vda"
            ]
        );
        let get = |n: &str| disks.iter().find(|d| d.name == n).unwrap();
        let nv = get("nvme0n1");
        assert_eq!(nv.transport, Transport::Nvme);
        assert_eq!(nv.size, 960 << 30);
        assert_eq!(nv.serial.as_deref(), Some("S4EWNX0R123456"));
        assert_eq!(nv.model.as_deref(), Some("Samsung SSD 980 PRO 1TB"));
        assert_eq!(nv.swaps, vec!["/dev/nvme0n1p2".to_string()]);
        assert_eq!(nv.partitions.len(), 2);
        assert_eq!(nv.by_path, vec!["pci-0000:3d:00.0-nvme-1".to_string()]);
        assert_eq!(
            nv.by_id,
            vec![
                "nvme-Samsung_SSD_980_PRO_1TB_S4EWNX0R123456".to_string(),
                "nvme-eui.002538b111111111".to_string()
            ]
        );
        let sda = get("sda");
        assert_eq!(sda.transport, Transport::Ata);
        assert_eq!(sda.by_path, vec!["pci-0000:00:17.0-ata-1.0".to_string()]);
        assert!(sda.by_id.contains(&"wwn-0x55cd2e404c0a1b2c".to_string()));
        assert!(get("sdb").rotational);
        let usb = get("sdc");
        assert_eq!(usb.transport, Transport::Usb);
        assert!(usb.removable);
        assert_eq!(
            usb.mounts,
            vec!["/dev/sdc1 on /run/media/KILN USB".to_string()]
        );
        let vda = get("vda");
        assert_eq!(vda.transport, Transport::Virtio);
        assert_eq!(vda.serial.as_deref(), Some("KILN-VDA"));
        assert_eq!(vda.by_id, vec!["virtio-KILN-VDA".to_string()]);
        assert_eq!(vda.by_path, vec!["pci-0000:00:04.0".to_string()]);
        assert_eq!(get("sdd").transport, Transport::Sas);
        assert_eq!(get("sdd").holders, vec!["md127".to_string()]);
        assert_eq!(get("loop0").transport, Transport::Loop);
    }

    #[test]
    fn udev_links_win_over_computed() {
        let t = tempfile::tempdir().unwrap();
        let byid = t.path().join("dev/disk/by-id");
        fs::create_dir_all(&byid).unwrap();
        std::os::unix::fs::symlink("../../sda", byid.join("ata-REAL_NAME")).unwrap();
        std::os::unix::fs::symlink("../../sda1", byid.join("ata-REAL_NAME-part1")).unwrap();
        let disks = inv(t.path());
        let sda = disks.iter().find(|d| d.name == "sda").unwrap();
        assert_eq!(sda.by_id, vec!["ata-REAL_NAME".to_string()]);
        assert!(
            disks
                .iter()
                .find(|d| d.name == "sdb")
                .unwrap()
                .by_id
                .is_empty()
        );
    }

    #[test]
    fn partition_names() {
        for (d, n, want) in [
            ("sda", 2, "sda2"),
            ("nvme0n1", 3, "nvme0n1p3"),
            ("loop0", 1, "loop0p1"),
            ("vda", 1, "vda1"),
        ] {
            assert_eq!(partition_name(d, n), want);
        }
    }
}
