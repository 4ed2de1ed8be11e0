//! Block-device plumbing after the partition table changed: re-read it (BLKRRPART with
//! retries, BLKPG resize as fallback) and wait for the partition's sysfs entry and node.

use std::fs::File;
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::thread::sleep;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use super::disk::partition_name;

const BLKRRPART: rustix::ioctl::Opcode = rustix::ioctl::opcode::none(0x12, 95);
const BLKPG: rustix::ioctl::Opcode = rustix::ioctl::opcode::none(0x12, 105);
const BLKPG_RESIZE_PARTITION: i32 = 3;

/// `struct blkpg_partition` from linux/blkpg.h.
#[repr(C)]
struct BlkpgPartition {
    start: i64,
    length: i64,
    pno: i32,
    devname: [u8; 64],
    volname: [u8; 64],
}

/// `struct blkpg_ioctl_arg` from linux/blkpg.h.
#[repr(C)]
struct BlkpgIoctlArg {
    op: i32,
    flags: i32,
    datalen: i32,
    data: *mut BlkpgPartition,
}

/// Asks the kernel to re-read the partition table, up to 20 tries 100 ms apart (EBUSY
/// happens while something still has a partition open).
pub fn reread_partition_table(disk: &File) -> rustix::io::Result<()> {
    let mut last = rustix::io::Errno::BUSY;
    for _ in 0..20 {
        // SAFETY: BLKRRPART takes no argument; the fd is an open block device.
        let r =
            unsafe { rustix::ioctl::ioctl(disk.as_fd(), rustix::ioctl::NoArg::<BLKRRPART>::new()) };
        match r {
            Ok(()) => return Ok(()),
            Err(e) if e == rustix::io::Errno::BUSY => last = e,
            Err(e) => return Err(e),
        }
        sleep(Duration::from_millis(100));
    }
    Err(last)
}

const BLKPG_ADD_PARTITION: i32 = 1;

fn blkpg(disk: &File, op: i32, pno: u32, start: u64, length: u64) -> rustix::io::Result<()> {
    let mut part = BlkpgPartition {
        start: start as i64,
        length: length as i64,
        pno: pno as i32,
        devname: [0; 64],
        volname: [0; 64],
    };
    let arg = BlkpgIoctlArg {
        op,
        flags: 0,
        datalen: size_of::<BlkpgPartition>() as i32,
        data: &mut part,
    };
    // SAFETY: BLKPG takes a pointer to blkpg_ioctl_arg whose data points to a
    // blkpg_partition; both are repr(C) copies of the kernel structs and outlive the call.
    unsafe {
        rustix::ioctl::ioctl(
            disk.as_fd(),
            rustix::ioctl::Setter::<BLKPG, BlkpgIoctlArg>::new(arg),
        )
    }
}

/// Tells the kernel partition `pno` now spans `start..start+length` bytes (BLKPG resize).
pub fn blkpg_resize(disk: &File, pno: u32, start: u64, length: u64) -> rustix::io::Result<()> {
    blkpg(disk, BLKPG_RESIZE_PARTITION, pno, start, length)
}

/// Adds partition `pno` spanning `start..start+length` bytes (BLKPG add, as `partx -a`).
pub fn blkpg_add(disk: &File, pno: u32, start: u64, length: u64) -> rustix::io::Result<()> {
    blkpg(disk, BLKPG_ADD_PARTITION, pno, start, length)
}

fn sys_size(sys: &Path, pname: &str) -> Option<u64> {
    std::fs::read_to_string(sys.join("class/block").join(pname).join("size"))
        .ok()?
        .trim()
        .parse::<u64>()
        .ok()
        .map(|s| s * 512)
}

/// Makes the kernel see the table: BLKRRPART (with retries); then, for every partition
/// the kernel does not show with the right extent (busy disk, or a kernel without the GPT
/// parser), BLKPG add or resize. `parts` holds (number, start, length) in bytes.
pub fn refresh_partitions(
    disk: &File,
    disk_name: &str,
    parts: &[(u32, u64, u64)],
    sys: &Path,
) -> Result<()> {
    let rr = reread_partition_table(disk);
    for &(pno, start, length) in parts {
        let pname = partition_name(disk_name, pno);
        let mut ok = false;
        for _ in 0..10 {
            if sys_size(sys, &pname) == Some(length) {
                ok = true;
                break;
            }
            sleep(Duration::from_millis(50));
        }
        if ok {
            continue;
        }
        let r = match sys_size(sys, &pname) {
            Some(_) => blkpg_resize(disk, pno, start, length),
            None => blkpg_add(disk, pno, start, length),
        };
        r.with_context(|| {
            format!("telling the kernel about partition {pno} of {disk_name} (BLKRRPART said {rr:?}, then BLKPG failed)")
        })?;
    }
    Ok(())
}

/// Waits (up to `timeout`) until sysfs shows partition `pno` of `disk_name` with `size`
/// bytes and its device node exists; creates the node from sysfs when no devtmpfs/udev
/// makes it. Returns the node path.
pub fn wait_for_partition(
    sys: &Path,
    dev: &Path,
    disk_name: &str,
    pno: u32,
    size: u64,
    timeout: Duration,
) -> Result<PathBuf> {
    let pname = partition_name(disk_name, pno);
    let sysdir = sys.join("class/block").join(&pname);
    let node = dev.join(&pname);
    let deadline = Instant::now() + timeout;
    loop {
        let sectors = std::fs::read_to_string(sysdir.join("size"))
            .ok()
            .and_then(|s| s.trim().parse::<u64>().ok());
        if sectors == Some(size / 512) {
            if node.exists() {
                return Ok(node);
            }
            if Instant::now() >= deadline {
                let devno = std::fs::read_to_string(sysdir.join("dev"))
                    .context("reading partition dev number")?;
                let (maj, min) = devno
                    .trim()
                    .split_once(':')
                    .context("bad dev number in sysfs")?;
                let devt = rustix::fs::makedev(maj.parse()?, min.parse()?);
                rustix::fs::mknodat(
                    rustix::fs::CWD,
                    &node,
                    rustix::fs::FileType::BlockDevice,
                    rustix::fs::Mode::from_raw_mode(0o600),
                    devt,
                )
                .with_context(|| format!("creating {}", node.display()))?;
                return Ok(node);
            }
        } else if Instant::now() >= deadline {
            bail!(
                "partition {pno} of {disk_name} did not appear as {} with {} sectors within {timeout:?} (sysfs says {sectors:?})",
                node.display(),
                size / 512
            );
        }
        sleep(Duration::from_millis(50));
    }
}
