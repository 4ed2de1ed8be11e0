//! Booting an already-installed disk from the installer, without provisioning (the
//! control plane's `BootInstalledSystem` order, `kiln-agent boot-installed`).
//!
//! Every disk the hints allow (all disks without hints) is read: GPT partitions are
//! tried root-first ([`candidates`]: the Discoverable-Partitions root type for this
//! architecture, then the others largest first; ESP, BIOS boot and swap never), each with
//! a recognised filesystem is mounted read-only and searched for a boot entry (BLS,
//! `/boot/vmlinuz` links, grub.cfg: [`crate::provision::bootplan`]). Exactly one installed
//! system must be found; several is an error asking for hints. The command line gets
//! `root=PARTUUID=`, the image's kernel arguments recorded at provisioning time in
//! [`KERNEL_ARGS_PATH`], and the installer's `console=` parameters when it has none.

use std::convert::Infallible;
use std::fs::File;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use gptman::GPT;

use super::{Image, Report, boot, carry_consoles};
use crate::events::Event;
use crate::provision::bootplan::{BootPlan, boot_plan, find_entry};
use crate::provision::confined::{RelPath, Root};
use crate::provision::disk::{Disk, inventory_system, partition_name};
use crate::provision::gpt::{dps_root_native, format_guid};
use crate::provision::rootfs::{FsType, probe};
use crate::provision::select::{describe, parse_hints};

/// Where provisioning records the image's extra kernel arguments in the installed root,
/// so a later boot of the installed disk uses them too.
pub const KERNEL_ARGS_PATH: &str = "etc/kiln/kernel-args";

/// Where the installed root is mounted (read-only) while planning.
pub const MOUNTPOINT: &str = "/run/kiln/installed-root";
/// Where kernel and initrd are staged.
pub const STAGE: &str = "/run/kiln/kexec";

/// Partition types that never hold the root: ESP, BIOS boot, Linux swap.
const NOT_ROOT: &[&str] = &[
    "c12a7328-f81f-11d2-ba4b-00a0c93ec93b",
    "21686148-6449-6e6f-744e-656564454649",
    "0657fd6d-a4ab-43c4-84e5-0933c84b4f4f",
];

/// One used GPT partition: (number, type GUID, size in sectors).
pub type PartInfo = (u32, String, u64);

/// Partition numbers to try as the root, in order: the DPS root type, then the others
/// largest first; ESP, BIOS boot and swap are left out.
pub fn candidates(parts: &[PartInfo]) -> Vec<u32> {
    let mut v: Vec<&PartInfo> = parts
        .iter()
        .filter(|(_, t, _)| !NOT_ROOT.contains(&t.to_ascii_lowercase().as_str()))
        .collect();
    let dps = dps_root_native();
    v.sort_by_key(|(n, t, size)| (!t.eq_ignore_ascii_case(dps), std::cmp::Reverse(*size), *n));
    v.into_iter().map(|(n, _, _)| *n).collect()
}

/// An installed root partition found on a disk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Found {
    /// The disk (`/dev/vda`).
    pub disk: PathBuf,
    /// The partition node (`/dev/vda3`).
    pub partition: PathBuf,
    /// Its unique GUID.
    pub partuuid: String,
    /// Its filesystem.
    pub fstype: FsType,
    /// Where its boot entry comes from (`links`, `bls:...`, `grub.cfg`).
    pub source: String,
}

struct Mounted(PathBuf);

impl Mounted {
    fn ro(part: &Path, fstype: FsType, at: &Path) -> Result<Mounted> {
        std::fs::create_dir_all(at).with_context(|| format!("creating {}", at.display()))?;
        rustix::mount::mount(
            part,
            at,
            fstype.name(),
            rustix::mount::MountFlags::RDONLY,
            None,
        )
        .with_context(|| {
            format!(
                "mounting {} ({}) read-only on {}",
                part.display(),
                fstype.name(),
                at.display()
            )
        })?;
        Ok(Mounted(at.to_path_buf()))
    }
}

impl Drop for Mounted {
    fn drop(&mut self) {
        let _ = rustix::mount::unmount(&self.0, rustix::mount::UnmountFlags::empty());
    }
}

/// Reads `disk`'s GPT and tries its partitions; `notes` collects why others were not it.
fn scan_disk(disk: &Disk, mountpoint: &Path, notes: &mut Vec<String>) -> Option<Found> {
    let name = disk.path.display().to_string();
    let gpt = match File::open(&disk.path)
        .map_err(anyhow::Error::from)
        .and_then(|mut f| GPT::find_from(&mut f).map_err(anyhow::Error::from))
    {
        Ok(g) => g,
        Err(e) => {
            notes.push(format!("{name}: no GPT ({e})"));
            return None;
        }
    };
    let parts: Vec<PartInfo> = gpt
        .iter()
        .filter(|(_, p)| p.is_used())
        .map(|(i, p)| {
            (
                i,
                format_guid(&p.partition_type_guid),
                p.ending_lba - p.starting_lba + 1,
            )
        })
        .collect();
    for n in candidates(&parts) {
        let node = disk.path.with_file_name(partition_name(&disk.name, n));
        let pname = node.display().to_string();
        let fstype = match probe(&node) {
            Ok(Some(t)) => t,
            Ok(None) => {
                notes.push(format!("{pname}: no ext4/xfs/btrfs filesystem"));
                continue;
            }
            Err(e) => {
                notes.push(format!("{pname}: {e:#}"));
                continue;
            }
        };
        let m = match Mounted::ro(&node, fstype, mountpoint) {
            Ok(m) => m,
            Err(e) => {
                notes.push(format!("{e:#}"));
                continue;
            }
        };
        let entry = Root::open(&m.0).and_then(|r| find_entry(&r));
        drop(m);
        match entry {
            Ok(e) => {
                return Some(Found {
                    disk: disk.path.clone(),
                    partition: node,
                    partuuid: format_guid(&gpt[n].unique_partition_guid),
                    fstype,
                    source: e.source,
                });
            }
            Err(e) => notes.push(format!("{pname} ({}): {e:#}", fstype.name())),
        }
    }
    None
}

/// Finds the one installed system on the disks `hints` allow (all disks for `None`).
pub fn find_installed(hints: Option<&str>) -> Result<Found> {
    find_installed_at(hints, Path::new(MOUNTPOINT))
}

fn find_installed_at(hints: Option<&str>, mountpoint: &Path) -> Result<Found> {
    let hints = parse_hints(hints.unwrap_or(""))?;
    let disks = inventory_system()?;
    let allowed: Vec<&Disk> = disks
        .iter()
        .filter(|d| hints.iter().all(|h| h.matches(d)))
        .collect();
    if allowed.is_empty() {
        let seen: Vec<String> = disks.iter().map(describe).collect();
        bail!(
            "no disk matches the hints {:?}; disks seen: {}",
            hints.iter().map(ToString::to_string).collect::<Vec<_>>(),
            if seen.is_empty() {
                "none".to_string()
            } else {
                seen.join("; ")
            }
        );
    }
    let mut notes = Vec::new();
    let mut found = Vec::new();
    for d in allowed {
        if !d.mounts.is_empty() {
            notes.push(format!(
                "{}: in use ({}), skipped",
                d.path.display(),
                d.mounts.join(", ")
            ));
            continue;
        }
        found.extend(scan_disk(d, mountpoint, &mut notes));
    }
    match found.len() {
        1 => Ok(found.remove(0)),
        0 => bail!(
            "no installed system found (a partition with a kernel in /boot/loader/entries, \
             /boot/vmlinuz or grub.cfg); looked at: {}",
            if notes.is_empty() {
                "nothing".to_string()
            } else {
                notes.join("; ")
            }
        ),
        _ => bail!(
            "several installed systems found: {}; name the disk with hints (e.g. serial=...)",
            found
                .iter()
                .map(|f| format!("{} on {}", f.partition.display(), f.disk.display()))
                .collect::<Vec<_>>()
                .join(", ")
        ),
    }
}

/// The extra kernel arguments recorded in the installed root, if any.
fn recorded_args(root: &Root) -> Result<Vec<String>> {
    let r = RelPath::of(KERNEL_ARGS_PATH)?;
    if !root.exists(&r) {
        return Ok(Vec::new());
    }
    Ok(String::from_utf8_lossy(&root.read(&r)?)
        .split_whitespace()
        .map(String::from)
        .collect())
}

/// Finds the installed system and stages its kernel and initrd under `stage`.
pub fn plan_installed(hints: Option<&str>, stage: &Path, report: Report) -> Result<BootPlan> {
    plan_installed_at(hints, Path::new(MOUNTPOINT), stage, report)
}

/// [`plan_installed`] with the mount point chosen (tests).
pub fn plan_installed_at(
    hints: Option<&str>,
    mountpoint: &Path,
    stage: &Path,
    report: Report,
) -> Result<BootPlan> {
    let found = find_installed_at(hints, mountpoint)?;
    report(Event::info(format!(
        "installed system: {} on {} ({}, PARTUUID {}, entry {})",
        found.partition.display(),
        found.disk.display(),
        found.fstype.name(),
        found.partuuid,
        found.source
    )));
    let m = Mounted::ro(&found.partition, found.fstype, mountpoint)?;
    let root = Root::open(&m.0)?;
    let extra = recorded_args(&root)?;
    let progress = |e| report(Event::Provision { detail: e });
    let mut plan = boot_plan(&root, &found.partuuid, &extra, stage, &progress)?;
    drop(root);
    drop(m);
    let running = std::fs::read_to_string("/proc/cmdline").unwrap_or_default();
    plan.cmdline = carry_consoles(&plan.cmdline, &running);
    Ok(plan)
}

/// Boots the installed system on the disks `hints` allow (`None`: every disk; it must
/// hold exactly one installed system). Returns only on failure.
pub fn boot_installed(hints: Option<&str>, report: Report) -> Result<Infallible> {
    let plan = plan_installed(hints, Path::new(STAGE), report)
        .context("finding the installed system to boot")?;
    boot(&Image::from(&plan), report)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn root_candidates_in_order() {
        let esp = "C12A7328-F81F-11D2-BA4B-00A0C93EC93B".to_string();
        let bios = "21686148-6449-6e6f-744e-656564454649".to_string();
        let linux = "0fc63daf-8483-4772-8e79-3d69d8477de4".to_string();
        let dps = dps_root_native().to_string();
        let cases: Vec<(Vec<PartInfo>, Vec<u32>)> = vec![
            // The test image: BIOS boot, ESP, DPS root.
            (
                vec![
                    (1, bios.clone(), 2048),
                    (2, esp.clone(), 131072),
                    (3, dps.clone(), 100),
                ],
                vec![3],
            ),
            // No DPS type: largest Linux partition first.
            (
                vec![
                    (1, esp.clone(), 1000),
                    (2, linux.clone(), 500),
                    (3, linux.clone(), 9000),
                ],
                vec![3, 2],
            ),
            // DPS root wins over a larger data partition.
            (
                vec![(1, linux.clone(), 90000), (2, dps.to_uppercase(), 10)],
                vec![2, 1],
            ),
            (vec![(1, esp, 10)], vec![]),
        ];
        for (parts, want) in cases {
            assert_eq!(candidates(&parts), want, "{parts:?}");
        }
    }
}
