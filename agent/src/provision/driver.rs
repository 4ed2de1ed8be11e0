//! The one driver of the engine, shared by its two callers (the hand-run
//! `kiln-agent provision` and the control-plane session's provision orders): choose the
//! target disk for an image, then build the engine [`Order`] from the image's settings,
//! the caller's overrides and the built-in defaults, in that order of precedence.
//!
//! 1. [`choose_disk`]: layer 0's GPT geometry (peeked from a second stream of the blob),
//!    the `kiln.disk=` hints, the disk inventory and the default [`Policy`]; reports the
//!    choice as a [`Phase::Inventory`] message.
//! 2. [`order`]: root partition, filesystem type and label, kernel arguments; the seed,
//!    the injected agent and the work directories come from the caller.

use std::io::Read;
use std::path::Path;

use anyhow::{Context, Result};
use kiln_oci::format::ImageSettings;

use super::cloudinit::Seed;
use super::disk::{Disk, inventory_system};
use super::events::{Event, Phase};
use super::extract::Options;
use super::gpt::RootChoice;
use super::inject::InjectSpec;
use super::layer0::peek_geometry;
use super::rootfs::{FsSpec, FsType};
use super::run::Order;
use super::select::{Policy, choose, describe, parse_hints};
use super::source;

/// The root filesystem label when neither the caller nor the image names one.
pub const DEFAULT_LABEL: &str = "root";

/// Chooses the disk for the image whose layer 0 starts in `peek` (`what` names the image
/// in errors): the disk must hold the image and match `hints` (`kiln.disk=` syntax).
pub fn choose_disk(
    peek: Box<dyn Read + Send>,
    what: &str,
    hints: &str,
    progress: &dyn Fn(Event),
) -> Result<Disk> {
    let geometry = peek_geometry(peek)
        .with_context(|| format!("reading the start of layer 0 of {what}"))?
        .with_context(|| {
            format!("layer 0 of {what} has no GPT header at LBA 1: not a disk image")
        })?;
    let hints = parse_hints(hints)?;
    let mut disks = inventory_system()?;
    let policy = Policy {
        min_size: geometry.size,
        sector_size: Some(geometry.sector_size),
        boot_media: Vec::new(),
    };
    let disk = disks.swap_remove(choose(&disks, &hints, &policy)?);
    progress(Event::msg(
        Phase::Inventory,
        format!("chose {} ({})", disk.path.display(), describe(&disk)),
    ));
    Ok(disk)
}

/// What a caller sets over the image's settings (`None`: the image's, else the default).
#[derive(Debug, Default, Clone)]
pub struct Overrides {
    pub root: Option<RootChoice>,
    pub fstype: Option<FsType>,
    pub label: Option<String>,
    pub fs_uuid: Option<String>,
    /// Kernel arguments, whitespace-separated.
    pub kernel_args: Option<String>,
}

/// The engine order for the chosen `disk`: `o` over the image's `settings` over the
/// defaults; the root is mounted at `work/root` and the kernel staged in `work/boot`.
pub fn order(
    disk: &Path,
    settings: &ImageSettings,
    o: Overrides,
    seed: Option<Seed>,
    inject: Option<InjectSpec>,
    work: &Path,
) -> Order {
    Order {
        disk: disk.to_path_buf(),
        root: o
            .root
            .unwrap_or_else(|| source::root_choice(&settings.root_partition)),
        fs: FsSpec {
            fstype: o
                .fstype
                .unwrap_or_else(|| source::fs_type(settings.filesystem)),
            label: Some(
                o.label
                    .or_else(|| settings.label.clone())
                    .unwrap_or_else(|| DEFAULT_LABEL.into()),
            ),
            uuid: o.fs_uuid,
        },
        seed,
        inject,
        extra_args: o
            .kernel_args
            .as_deref()
            .or(settings.kernel_args.as_deref())
            .unwrap_or("")
            .split_whitespace()
            .map(String::from)
            .collect(),
        mountpoint: work.join("root"),
        stage: work.join("boot"),
        extract: Options::default(),
    }
}

/// How layer 0 is stored, in words.
pub fn layer0_form(form: &kiln_oci::format::Layer0Form) -> &'static str {
    match form {
        kiln_oci::format::Layer0Form::RawDisk => "a raw disk blob",
        kiln_oci::format::Layer0Form::TarWithOneFile => "a tar holding the disk",
    }
}

/// The image's root partition setting, in words.
pub fn root_partition(root: &kiln_oci::format::RootPartition) -> String {
    match root {
        kiln_oci::format::RootPartition::Name(n) => format!("partition named \"{n}\""),
        kiln_oci::format::RootPartition::Number(n) => format!("partition {n}"),
        kiln_oci::format::RootPartition::Default => "the DPS root (else the last partition)".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kiln_oci::format::RootPartition;

    fn disk() -> &'static Path {
        Path::new("/dev/loop0")
    }

    #[test]
    fn overrides_beat_image_settings_beat_defaults() {
        let work = Path::new("/run/kiln/work");
        let none = ImageSettings::default();
        let o = order(disk(), &none, Overrides::default(), None, None, work);
        assert_eq!(o.fs.label.as_deref(), Some(DEFAULT_LABEL));
        assert!(o.extra_args.is_empty());
        assert_eq!(o.mountpoint, work.join("root"));
        assert_eq!(o.stage, work.join("boot"));

        let image = ImageSettings {
            root_partition: RootPartition::Name("root".into()),
            label: Some("kiln-root".into()),
            kernel_args: Some("console=ttyS0  quiet".into()),
            ..ImageSettings::default()
        };
        let o = order(disk(), &image, Overrides::default(), None, None, work);
        assert_eq!(o.fs.label.as_deref(), Some("kiln-root"));
        assert_eq!(o.extra_args, ["console=ttyS0", "quiet"]);
        assert!(matches!(o.root, RootChoice::Name(ref n) if n == "root"));

        let over = Overrides {
            root: Some(RootChoice::Number(2)),
            label: Some("mine".into()),
            kernel_args: Some("ro".into()),
            ..Overrides::default()
        };
        let o = order(disk(), &image, over, None, None, work);
        assert_eq!(o.fs.label.as_deref(), Some("mine"));
        assert_eq!(o.extra_args, ["ro"]);
        assert!(matches!(o.root, RootChoice::Number(2)));
    }
}
