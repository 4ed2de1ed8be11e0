//! Root filesystem: grow the one layer 0 brought, or create one (ext4 default, xfs, btrfs)
//! with the image's label and UUID; then mount it. The real e2fsprogs/xfsprogs/btrfs-progs
//! run (they are in the installer); their stderr is part of any error.

use std::fs::File;
use std::io::Read;
use std::path::Path;
use std::process::Command;

use anyhow::{Context, Result, bail};
use serde::{Deserialize, Serialize};

use super::events::{Event, Phase, Progress};

/// Filesystems the root may use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FsType {
    /// ext4 (default).
    Ext4,
    /// XFS.
    Xfs,
    /// Btrfs.
    Btrfs,
}

impl FsType {
    /// Kernel/mkfs name.
    pub fn name(self) -> &'static str {
        match self {
            FsType::Ext4 => "ext4",
            FsType::Xfs => "xfs",
            FsType::Btrfs => "btrfs",
        }
    }

    /// From the image annotation value.
    pub fn parse(s: &str) -> Result<FsType> {
        Ok(match s {
            "ext4" => FsType::Ext4,
            "xfs" => FsType::Xfs,
            "btrfs" => FsType::Btrfs,
            _ => bail!("unsupported root filesystem {s:?} (use ext4, xfs or btrfs)"),
        })
    }
}

/// Bytes [`detect`] needs.
pub const PROBE: usize = 65536 + 4096;

/// Recognises ext2/3/4, XFS and Btrfs superblocks.
pub fn detect(head: &[u8]) -> Option<FsType> {
    if head.get(1024 + 56..1024 + 58) == Some(&[0x53, 0xef]) {
        return Some(FsType::Ext4);
    }
    if head.get(0..4) == Some(b"XFSB") {
        return Some(FsType::Xfs);
    }
    if head.get(65536 + 64..65536 + 72) == Some(b"_BHRfS_M") {
        return Some(FsType::Btrfs);
    }
    None
}

/// What the image wants for its root filesystem.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FsSpec {
    /// Type used when creating.
    pub fstype: FsType,
    /// Label.
    pub label: Option<String>,
    /// UUID.
    pub uuid: Option<String>,
}

impl Default for FsSpec {
    fn default() -> Self {
        FsSpec {
            fstype: FsType::Ext4,
            label: Some("root".into()),
            uuid: None,
        }
    }
}

/// What happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FsAction {
    /// Existing filesystem grown.
    Grown,
    /// New filesystem made.
    Created,
}

/// Result of the phase.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RootFsReport {
    /// Filesystem type.
    pub fstype: FsType,
    /// Grown or created.
    pub action: FsAction,
}

/// Runs a tool; on failure the error names the command, its status and its stderr.
pub fn run(cmd: &str, args: &[&str]) -> Result<String> {
    // A registered child: as PID 1 the orphan reaper would otherwise collect its exit
    // status first (ECHILD here).
    let out = crate::init::reaper::output(Command::new(cmd).args(args))
        .with_context(|| format!("running {cmd} (is it installed?)"))?;
    if !out.status.success() {
        bail!(
            "{cmd} {} failed ({}): {}",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Makes a filesystem on `dev` per `spec`.
pub fn mkfs(dev: &Path, spec: &FsSpec) -> Result<()> {
    let d = dev.to_str().context("device path is not UTF-8")?;
    let mut args: Vec<&str> = Vec::new();
    let cmd = match spec.fstype {
        FsType::Ext4 => {
            args.extend(["-F", "-q"]);
            if let Some(u) = &spec.uuid {
                args.extend(["-U", u]);
            }
            "mkfs.ext4"
        }
        FsType::Xfs => {
            args.extend(["-f", "-q"]);
            "mkfs.xfs"
        }
        FsType::Btrfs => {
            args.extend(["-f", "-q"]);
            if let Some(u) = &spec.uuid {
                args.extend(["-U", u]);
            }
            "mkfs.btrfs"
        }
    };
    let xfs_uuid;
    if spec.fstype == FsType::Xfs
        && let Some(u) = &spec.uuid
    {
        xfs_uuid = format!("uuid={u}");
        args.extend(["-m", &xfs_uuid]);
    }
    if let Some(l) = &spec.label {
        args.extend(["-L", l]);
    }
    args.push(d);
    run(cmd, &args).map(|_| ())
}

pub fn probe(dev: &Path) -> Result<Option<FsType>> {
    let mut head = vec![0u8; PROBE];
    let mut f = File::open(dev).with_context(|| format!("opening {}", dev.display()))?;
    let mut n = 0;
    while n < head.len() {
        let k = f.read(&mut head[n..])?;
        if k == 0 {
            break;
        }
        n += k;
    }
    Ok(detect(&head[..n]))
}

/// Phase 4: grows the filesystem on `part` or creates one, then mounts it at `mountpoint`.
pub fn prepare(
    part: &Path,
    spec: &FsSpec,
    mountpoint: &Path,
    progress: Progress,
) -> Result<RootFsReport> {
    let name = part.display().to_string();
    prepare_inner(part, spec, mountpoint, progress).with_context(|| {
        format!(
            "preparing the root filesystem on {name} at {}",
            mountpoint.display()
        )
    })
}

fn prepare_inner(
    part: &Path,
    spec: &FsSpec,
    mountpoint: &Path,
    progress: Progress,
) -> Result<RootFsReport> {
    let p = part.to_str().context("partition path is not UTF-8")?;
    let m = mountpoint.to_str().context("mount point is not UTF-8")?;
    let found = probe(part)?;
    let (fstype, action) = match found {
        Some(t) => {
            if t != spec.fstype {
                progress(Event::msg(
                    Phase::RootFs,
                    format!(
                        "{p} holds {} (image annotation said {}); keeping it",
                        t.name(),
                        spec.fstype.name()
                    ),
                ));
            }
            if t == FsType::Ext4 {
                // Offline: check first (resize2fs insists), then grow to the partition.
                let st = crate::init::reaper::output(Command::new("e2fsck").args(["-f", "-p", p]))
                    .context("running e2fsck")?;
                if !matches!(st.status.code(), Some(0 | 1)) {
                    bail!(
                        "e2fsck -f -p {p} failed ({}): {}",
                        st.status,
                        String::from_utf8_lossy(&st.stderr).trim()
                    );
                }
                run("resize2fs", &[p])?;
            }
            (t, FsAction::Grown)
        }
        None => {
            progress(Event::msg(
                Phase::RootFs,
                format!("{p} is empty: making {}", spec.fstype.name()),
            ));
            mkfs(part, spec)?;
            (spec.fstype, FsAction::Created)
        }
    };
    std::fs::create_dir_all(mountpoint)?;
    rustix::mount::mount(
        part,
        mountpoint,
        fstype.name(),
        rustix::mount::MountFlags::empty(),
        None,
    )
    .with_context(|| format!("mounting {p} ({}) on {m}", fstype.name()))?;
    if action == FsAction::Grown {
        match fstype {
            FsType::Xfs => run("xfs_growfs", &[m]).map(|_| ()),
            FsType::Btrfs => run("btrfs", &["filesystem", "resize", "max", m]).map(|_| ()),
            FsType::Ext4 => Ok(()),
        }
        .inspect_err(|_| {
            let _ = rustix::mount::unmount(mountpoint, rustix::mount::UnmountFlags::empty());
        })?;
    }
    progress(Event::msg(
        Phase::RootFs,
        format!(
            "{p}: {} {} and mounted on {m}",
            fstype.name(),
            match action {
                FsAction::Grown => "grown",
                FsAction::Created => "created",
            }
        ),
    ));
    Ok(RootFsReport { fstype, action })
}

/// Syncs and unmounts.
pub fn unmount(mountpoint: &Path) -> Result<()> {
    rustix::fs::sync();
    rustix::mount::unmount(mountpoint, rustix::mount::UnmountFlags::empty())
        .with_context(|| format!("unmounting {}", mountpoint.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn detect_real_superblocks() {
        // Uses the real mkfs tools on plain files (no root needed).
        for t in [FsType::Ext4, FsType::Xfs, FsType::Btrfs] {
            let f = tempfile::NamedTempFile::new().unwrap();
            f.as_file().set_len(320 << 20).unwrap();
            let spec = FsSpec {
                fstype: t,
                label: Some("kroot".into()),
                uuid: Some("0b4c5a54-7c1e-4a63-9a77-4e6b1c9d7f01".into()),
            };
            mkfs(f.path(), &spec).unwrap();
            assert_eq!(probe(f.path()).unwrap(), Some(t), "{t:?}");
            if t == FsType::Ext4 {
                let out = run("dumpe2fs", &["-h", f.path().to_str().unwrap()]).unwrap();
                assert!(
                    out.contains("kroot") && out.contains("0b4c5a54-7c1e-4a63-9a77-4e6b1c9d7f01"),
                    "{out}"
                );
            }
        }
        assert_eq!(detect(&[0u8; PROBE]), None);
    }

    #[test]
    fn tool_errors_carry_stderr() {
        let e = mkfs(Path::new("/nonexistent/kiln-dev"), &FsSpec::default())
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("mkfs.ext4") && e.contains("/nonexistent/kiln-dev") && e.contains("failed"),
            "{e}"
        );
    }
}
