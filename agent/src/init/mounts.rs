//! The API filesystems PID 1 mounts, and /proc/self/mountinfo parsing.

use crate::events::MountEntry;
use rustix::mount::MountFlags;
use std::ffi::CStr;
use std::path::Path;

/// One filesystem PID 1 mounts at start.
#[derive(Debug, Clone, Copy)]
pub struct Mount {
    pub source: &'static str,
    pub target: &'static str,
    pub fstype: &'static str,
    pub flags: MountFlags,
    pub data: &'static CStr,
    /// Optional mounts are tried only when their mount point exists (efivarfs exists
    /// only on UEFI boots) and do not count as failures.
    pub required: bool,
}

const NOSUID_NODEV_NOEXEC: MountFlags = MountFlags::NOSUID
    .union(MountFlags::NODEV)
    .union(MountFlags::NOEXEC);

/// In mount order: /proc first (everything else checks /proc/self/mountinfo).
pub const MOUNTS: &[Mount] = &[
    Mount {
        source: "proc",
        target: "/proc",
        fstype: "proc",
        flags: NOSUID_NODEV_NOEXEC,
        data: c"",
        required: true,
    },
    Mount {
        source: "sysfs",
        target: "/sys",
        fstype: "sysfs",
        flags: NOSUID_NODEV_NOEXEC,
        data: c"",
        required: true,
    },
    Mount {
        source: "devtmpfs",
        target: "/dev",
        fstype: "devtmpfs",
        flags: MountFlags::NOSUID,
        data: c"mode=0755",
        required: true,
    },
    Mount {
        source: "devpts",
        target: "/dev/pts",
        fstype: "devpts",
        flags: MountFlags::NOSUID.union(MountFlags::NOEXEC),
        data: c"gid=5,mode=620,ptmxmode=000",
        required: true,
    },
    Mount {
        source: "tmpfs",
        target: "/run",
        fstype: "tmpfs",
        flags: MountFlags::NOSUID.union(MountFlags::NODEV),
        data: c"mode=0755",
        required: true,
    },
    Mount {
        source: "tmpfs",
        target: "/tmp",
        fstype: "tmpfs",
        flags: MountFlags::NOSUID.union(MountFlags::NODEV),
        data: c"mode=1777",
        required: true,
    },
    Mount {
        source: "securityfs",
        target: "/sys/kernel/security",
        fstype: "securityfs",
        flags: NOSUID_NODEV_NOEXEC,
        data: c"",
        required: false,
    },
    Mount {
        source: "efivarfs",
        target: "/sys/firmware/efi/efivars",
        fstype: "efivarfs",
        flags: NOSUID_NODEV_NOEXEC,
        data: c"",
        required: false,
    },
];

/// Why one mount did not happen.
#[derive(Debug, Clone)]
pub struct Failure {
    pub target: &'static str,
    pub error: String,
    pub required: bool,
}

/// Mounts everything in [`MOUNTS`] that is not mounted yet. Never stops at a failure.
pub fn mount_all() -> Vec<Failure> {
    let mut failures = Vec::new();
    for m in MOUNTS {
        let target = Path::new(m.target);
        if !m.required && !target.is_dir() {
            continue;
        }
        if is_mounted(m.target) {
            continue;
        }
        if m.required {
            let _ = std::fs::create_dir_all(target);
        }
        if let Err(e) = rustix::mount::mount(m.source, m.target, m.fstype, m.flags, Some(m.data)) {
            if e == rustix::io::Errno::BUSY {
                continue; // mounted meanwhile (devtmpfs automount): fine.
            }
            failures.push(Failure {
                target: m.target,
                error: format!("mount -t {} {} {}: {e}", m.fstype, m.source, m.target),
                required: m.required,
            });
        }
    }
    failures
}

fn is_mounted(target: &str) -> bool {
    std::fs::read_to_string("/proc/self/mountinfo")
        .map(|s| parse_mountinfo(&s).iter().any(|m| m.target == target))
        .unwrap_or(false)
}

/// Parses /proc/self/mountinfo (proc(5)): mount point is field 5, the filesystem type
/// follows the ` - ` separator. Octal escapes (`\040` for space) are decoded.
pub fn parse_mountinfo(text: &str) -> Vec<MountEntry> {
    text.lines()
        .filter_map(|line| {
            let (left, right) = line.split_once(" - ")?;
            let target = left.split(' ').nth(4)?;
            let fstype = right.split(' ').next()?;
            Some(MountEntry {
                target: unescape(target),
                fstype: fstype.to_string(),
            })
        })
        .collect()
}

fn unescape(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\'
            && i + 3 < b.len()
            && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c))
        {
            out.push((b[i + 1] - b'0') * 64 + (b[i + 2] - b'0') * 8 + (b[i + 3] - b'0'));
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mountinfo() {
        let text = "\
1 1 0:2 / / rw - rootfs rootfs rw
22 1 0:20 / /proc rw,nosuid,nodev,noexec,relatime shared:5 - proc proc rw
23 1 0:21 / /sys rw,nosuid,nodev,noexec,relatime - sysfs sysfs rw
24 1 0:5 / /dev rw,nosuid - devtmpfs devtmpfs rw,size=1000k,mode=755
40 1 8:1 / /mnt/my\\040disk rw - ext4 /dev/sda1 rw
garbage line
";
        let got = parse_mountinfo(text);
        let pairs: Vec<(&str, &str)> = got
            .iter()
            .map(|m| (m.target.as_str(), m.fstype.as_str()))
            .collect();
        assert_eq!(
            pairs,
            [
                ("/", "rootfs"),
                ("/proc", "proc"),
                ("/sys", "sysfs"),
                ("/dev", "devtmpfs"),
                ("/mnt/my disk", "ext4"),
            ]
        );
    }

    #[test]
    fn table_mounts_proc_first_and_required_before_optional() {
        assert_eq!(MOUNTS[0].target, "/proc");
        let first_optional = MOUNTS.iter().position(|m| !m.required).unwrap();
        assert!(MOUNTS[first_optional..].iter().all(|m| !m.required));
    }
}
