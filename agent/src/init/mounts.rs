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

/// What is mounted, for the `Mounts` event.
pub fn parse_mountinfo(text: &str) -> Vec<MountEntry> {
    crate::mountinfo::parse(text)
        .into_iter()
        .map(|e| MountEntry {
            target: e.target,
            fstype: e.fstype,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_mounts_proc_first_and_required_before_optional() {
        assert_eq!(MOUNTS[0].target, "/proc");
        let first_optional = MOUNTS.iter().position(|m| !m.required).unwrap();
        assert!(MOUNTS[first_optional..].iter().all(|m| !m.required));
    }
}
