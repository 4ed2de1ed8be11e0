//! The Kiln provisioning image format, version 1 (docs/image-format.md): media types, the two
//! accepted forms of layer 0, the settings read from annotations/labels, and platform
//! selection from image indexes. Parsers only; no I/O beyond the `Read` adapters they build.

use std::collections::HashMap;
use std::io::Read;

use oci_spec::image::{Arch, Descriptor, ImageIndex, Os};
use serde::Serialize;

use crate::compression::Decompressor;
use crate::single_file_tar::SingleFileTar;

/// Version of this format (the `dev.kiln.format.version` annotation).
pub const FORMAT_VERSION: &str = "1";

/// Kiln's media type for layer 0 as a raw disk blob. Compression is sniffed from the bytes; the
/// builder adds a `+zstd`/`+gzip`/`+xz` suffix as a hint only.
pub const MEDIA_TYPE_DISK: &str = "application/vnd.kiln.disk.v1.raw";

/// Annotation/label keys.
pub mod keys {
    /// Format version (`1`).
    pub const FORMAT_VERSION: &str = "dev.kiln.format.version";
    /// Root partition: GPT partition name, or 1-based number (`3`, `number:3`, `name:root`).
    pub const ROOT_PARTITION: &str = "dev.kiln.root.partition";
    /// Root filesystem: `ext4` (default), `xfs`, `btrfs`.
    pub const ROOT_FILESYSTEM: &str = "dev.kiln.root.filesystem";
    /// Root filesystem label.
    pub const ROOT_LABEL: &str = "dev.kiln.root.label";
    /// Extra kernel command-line arguments for the installed system.
    pub const KERNEL_ARGS: &str = "dev.kiln.kernel.args";
}

/// Media types of tar layers (OCI and Docker), any compression.
const TAR_LAYER_TYPES: &[&str] = &[
    "application/vnd.oci.image.layer.v1.tar",
    "application/vnd.oci.image.layer.v1.tar+gzip",
    "application/vnd.oci.image.layer.v1.tar+zstd",
    "application/vnd.oci.image.layer.nondistributable.v1.tar",
    "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip",
    "application/vnd.oci.image.layer.nondistributable.v1.tar+zstd",
    "application/vnd.docker.image.rootfs.diff.tar.gzip",
    "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip",
    "application/vnd.docker.image.rootfs.diff.tar",
];

/// Format errors callers may match on.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum FormatError {
    /// Layer 0 has a media type that is neither Kiln's disk type nor a tar layer.
    #[error(
        "layer 0 has media type {0:?}: expected {MEDIA_TYPE_DISK} or a tar layer holding one disk file"
    )]
    Layer0MediaType(String),
    /// A layer 1+ is not a tar layer.
    #[error("layer {index} has media type {media_type:?}, which is not a tar layer")]
    LayerMediaType {
        /// Layer index.
        index: usize,
        /// Its media type.
        media_type: String,
    },
    /// The image has no layers.
    #[error("the image has no layers; layer 0 must be the disk")]
    NoLayers,
    /// An annotation/label value is invalid.
    #[error("{key}={value:?}: {why}")]
    BadSetting {
        /// Key.
        key: &'static str,
        /// Value given.
        value: String,
        /// What is wrong and what is accepted.
        why: String,
    },
    /// Unsupported format version.
    #[error(
        "image format version {0:?} is not supported (this Kiln reads version {FORMAT_VERSION})"
    )]
    Version(String),
    /// No manifest in an index matches the platform.
    #[error("no manifest for {want} in the image index (it offers: {offered})")]
    NoPlatform {
        /// Wanted platform.
        want: String,
        /// Platforms present.
        offered: String,
    },
}

/// The two accepted forms of layer 0.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Layer0Form {
    /// A raw disk blob with [`MEDIA_TYPE_DISK`] (optionally compressed).
    RawDisk,
    /// A tar layer holding exactly one regular file, the (optionally compressed) disk.
    TarWithOneFile,
}

impl Layer0Form {
    /// Classifies layer 0 by its media type (compression is never taken from it).
    pub fn from_media_type(media_type: &str) -> Result<Self, FormatError> {
        if media_type == MEDIA_TYPE_DISK
            || media_type
                .strip_prefix(MEDIA_TYPE_DISK)
                .is_some_and(|s| matches!(s, "+zstd" | "+gzip" | "+xz"))
        {
            Ok(Self::RawDisk)
        } else if is_tar_layer(media_type) {
            Ok(Self::TarWithOneFile)
        } else {
            Err(FormatError::Layer0MediaType(media_type.to_owned()))
        }
    }

    /// Turns the (verified) layer-0 blob stream into the raw disk bytes: decompress by sniffing,
    /// and for the tar form take the one file out and sniff again. The returned reader reads
    /// its input to the end, so the blob's digest verdict arrives before `Ok(0)`.
    pub fn disk_stream<R: Read + Send + 'static>(
        self,
        blob: R,
    ) -> std::io::Result<Box<dyn Read + Send>> {
        let outer = Decompressor::new(blob)?;
        Ok(match self {
            Self::RawDisk => Box::new(outer),
            Self::TarWithOneFile => Box::new(Decompressor::new(SingleFileTar::new(outer))?),
        })
    }
}

/// True for OCI/Docker tar layer media types.
pub fn is_tar_layer(media_type: &str) -> bool {
    TAR_LAYER_TYPES.contains(&media_type)
}

/// Checks the layer list of a manifest: layer 0 a disk, the others tar layers.
pub fn check_layers(layers: &[Descriptor]) -> Result<Layer0Form, FormatError> {
    let first = layers.first().ok_or(FormatError::NoLayers)?;
    let form = Layer0Form::from_media_type(first.media_type().as_ref())?;
    for (index, l) in layers.iter().enumerate().skip(1) {
        let media_type = l.media_type().to_string();
        if !is_tar_layer(&media_type) {
            return Err(FormatError::LayerMediaType { index, media_type });
        }
    }
    Ok(form)
}

/// Which GPT partition is the root.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum RootPartition {
    /// The partition with this GPT name.
    Name(String),
    /// The partition with this 1-based number.
    Number(u32),
    /// The partition with the Discoverable Partitions Spec root type for the architecture,
    /// else the last partition.
    Default,
}

/// Root filesystem type.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Filesystem {
    /// ext4 (default).
    Ext4,
    /// XFS.
    Xfs,
    /// Btrfs.
    Btrfs,
}

impl Filesystem {
    /// Longest label the filesystem accepts, in bytes.
    pub fn max_label_len(self) -> usize {
        match self {
            Self::Ext4 => 16,
            Self::Xfs => 12,
            Self::Btrfs => 255,
        }
    }
}

impl std::fmt::Display for Filesystem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Ext4 => "ext4",
            Self::Xfs => "xfs",
            Self::Btrfs => "btrfs",
        })
    }
}

/// Settings from annotations (manifest, then layer 0) and config labels.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ImageSettings {
    /// Root partition.
    pub root_partition: RootPartition,
    /// Root filesystem.
    pub filesystem: Filesystem,
    /// Root filesystem label.
    pub label: Option<String>,
    /// Extra kernel arguments (one string, space separated).
    pub kernel_args: Option<String>,
}

impl Default for ImageSettings {
    fn default() -> Self {
        Self {
            root_partition: RootPartition::Default,
            filesystem: Filesystem::Ext4,
            label: None,
            kernel_args: None,
        }
    }
}

fn bad(key: &'static str, value: &str, why: impl Into<String>) -> FormatError {
    FormatError::BadSetting {
        key,
        value: value.to_owned(),
        why: why.into(),
    }
}

impl ImageSettings {
    /// Reads the settings. Sources are searched in order; the first one holding a key wins
    /// (pass manifest annotations, then layer-0 annotations, then config labels).
    pub fn from_sources(sources: &[Option<&HashMap<String, String>>]) -> Result<Self, FormatError> {
        let get = |key: &str| {
            sources
                .iter()
                .flatten()
                .find_map(|m| m.get(key))
                .map(String::as_str)
        };
        if let Some(v) = get(keys::FORMAT_VERSION)
            && v != FORMAT_VERSION
        {
            return Err(FormatError::Version(v.to_owned()));
        }
        let mut s = Self::default();
        if let Some(v) = get(keys::ROOT_PARTITION) {
            s.root_partition = parse_root_partition(v)?;
        }
        if let Some(v) = get(keys::ROOT_FILESYSTEM) {
            s.filesystem = match v {
                "ext4" => Filesystem::Ext4,
                "xfs" => Filesystem::Xfs,
                "btrfs" => Filesystem::Btrfs,
                _ => return Err(bad(keys::ROOT_FILESYSTEM, v, "accepted: ext4, xfs, btrfs")),
            };
        }
        if let Some(v) = get(keys::ROOT_LABEL) {
            let max = s.filesystem.max_label_len();
            if v.is_empty() || v.len() > max || v.chars().any(|c| c.is_control() || c == '/') {
                return Err(bad(
                    keys::ROOT_LABEL,
                    v,
                    format!(
                        "a {} label is 1..={max} bytes without '/' or control characters",
                        s.filesystem
                    ),
                ));
            }
            s.label = Some(v.to_owned());
        }
        if let Some(v) = get(keys::KERNEL_ARGS) {
            if v.chars().any(char::is_control) {
                return Err(bad(
                    keys::KERNEL_ARGS,
                    v,
                    "kernel arguments are one line without control characters",
                ));
            }
            let v = v.trim();
            if !v.is_empty() {
                s.kernel_args = Some(v.to_owned());
            }
        }
        Ok(s)
    }

    /// Chooses the root among the partitions of the image's GPT.
    pub fn choose_root<'a>(
        &self,
        partitions: &'a [PartitionInfo],
        arch: &str,
    ) -> Result<&'a PartitionInfo, String> {
        let listing = || {
            partitions
                .iter()
                .map(|p| format!("#{} {:?}", p.number, p.name))
                .collect::<Vec<_>>()
                .join(", ")
        };
        match &self.root_partition {
            RootPartition::Name(n) => partitions.iter().find(|p| &p.name == n).ok_or_else(|| {
                format!(
                    "no partition named {n:?} in the image (it has: {})",
                    listing()
                )
            }),
            RootPartition::Number(n) => {
                partitions.iter().find(|p| p.number == *n).ok_or_else(|| {
                    format!(
                        "no partition number {n} in the image (it has: {})",
                        listing()
                    )
                })
            }
            RootPartition::Default => {
                let dps = dps_root_type(arch);
                dps.and_then(|t| {
                    partitions
                        .iter()
                        .find(|p| p.type_guid.eq_ignore_ascii_case(t))
                })
                .or_else(|| partitions.iter().max_by_key(|p| p.number))
                .ok_or_else(|| "the image's partition table has no partitions".to_owned())
            }
        }
    }
}

fn parse_root_partition(v: &str) -> Result<RootPartition, FormatError> {
    let number = |n: &str| {
        n.parse::<u32>()
            .ok()
            .filter(|n| (1..=128).contains(n))
            .map(RootPartition::Number)
            .ok_or_else(|| bad(keys::ROOT_PARTITION, v, "a partition number is 1..=128"))
    };
    if let Some(n) = v.strip_prefix("number:") {
        number(n)
    } else if let Some(n) = v.strip_prefix("name:") {
        if n.is_empty() || n.encode_utf16().count() > 36 {
            return Err(bad(
                keys::ROOT_PARTITION,
                v,
                "a GPT name is 1..=36 UTF-16 units",
            ));
        }
        Ok(RootPartition::Name(n.to_owned()))
    } else if !v.is_empty() && v.bytes().all(|b| b.is_ascii_digit()) {
        number(v)
    } else {
        parse_root_partition(&format!("name:{v}"))
    }
}

/// A partition of the image's GPT, as read by the provisioning engine.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PartitionInfo {
    /// 1-based partition number.
    pub number: u32,
    /// GPT partition name.
    pub name: String,
    /// Partition type GUID (any case).
    pub type_guid: String,
}

/// The Discoverable Partitions Specification root partition type for an architecture
/// (`std::env::consts::ARCH` names).
pub fn dps_root_type(arch: &str) -> Option<&'static str> {
    Some(match arch {
        "x86_64" => "4f68bce3-e8cd-4db1-96e7-fbcaf984b709",
        "aarch64" => "b921b045-1df0-41c3-af44-4c6f280d3fae",
        "x86" => "44479540-f297-41b2-9af7-d131d5f0458a",
        "riscv64" => "72ec70a6-cf74-40e6-bd49-4bda08e8f224",
        _ => return None,
    })
}

/// A platform to select from an image index.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Platform {
    /// `linux`.
    pub os: String,
    /// OCI architecture name (`amd64`, `arm64`).
    pub architecture: String,
    /// Variant (`v8` for arm64), optional.
    pub variant: Option<String>,
}

impl Platform {
    /// The platform of the running machine.
    pub fn current() -> Self {
        let architecture = match std::env::consts::ARCH {
            "x86_64" => "amd64",
            "aarch64" => "arm64",
            other => other,
        };
        Self {
            os: "linux".into(),
            architecture: architecture.into(),
            variant: None,
        }
    }
}

impl std::fmt::Display for Platform {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.os, self.architecture)?;
        if let Some(v) = &self.variant {
            write!(f, "/{v}")?;
        }
        Ok(())
    }
}

/// Picks the manifest for `want` from an index. Entries without a platform, or with
/// `unknown/unknown` (attestations), never match. A wanted variant must match; an entry
/// variant is accepted when none is wanted (`arm64/v8` is the only arm64 in practice).
pub fn select_platform<'a>(
    index: &'a ImageIndex,
    want: &Platform,
) -> Result<&'a Descriptor, FormatError> {
    let matches = |d: &&Descriptor| {
        d.platform().as_ref().is_some_and(|p| {
            os_name(p.os()) == want.os
                && arch_name(p.architecture()) == want.architecture
                && want
                    .variant
                    .as_ref()
                    .is_none_or(|v| p.variant().as_deref() == Some(v.as_str()))
        })
    };
    index
        .manifests()
        .iter()
        .find(matches)
        .ok_or_else(|| FormatError::NoPlatform {
            want: want.to_string(),
            offered: index
                .manifests()
                .iter()
                .map(|d| match d.platform() {
                    Some(p) => format!("{}/{}", os_name(p.os()), arch_name(p.architecture())),
                    None => "(no platform)".into(),
                })
                .collect::<Vec<_>>()
                .join(", "),
        })
}

fn os_name(os: &Os) -> String {
    os.to_string()
}

fn arch_name(a: &Arch) -> String {
    a.to_string()
}

#[cfg(test)]
#[allow(clippy::type_complexity)]
mod tests {
    use super::*;

    fn map(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn layer0_media_types() {
        let cases = [
            (MEDIA_TYPE_DISK, Ok(Layer0Form::RawDisk)),
            (
                "application/vnd.kiln.disk.v1.raw+zstd",
                Ok(Layer0Form::RawDisk),
            ),
            ("application/vnd.kiln.disk.v1.raw+lz4", Err(())),
            (
                "application/vnd.oci.image.layer.v1.tar",
                Ok(Layer0Form::TarWithOneFile),
            ),
            (
                "application/vnd.oci.image.layer.v1.tar+gzip",
                Ok(Layer0Form::TarWithOneFile),
            ),
            (
                "application/vnd.oci.image.layer.v1.tar+zstd",
                Ok(Layer0Form::TarWithOneFile),
            ),
            (
                "application/vnd.docker.image.rootfs.diff.tar.gzip",
                Ok(Layer0Form::TarWithOneFile),
            ),
            ("application/octet-stream", Err(())),
            ("application/vnd.oci.image.config.v1+json", Err(())),
        ];
        for (mt, want) in cases {
            assert_eq!(
                Layer0Form::from_media_type(mt).map_err(|_| ()),
                want,
                "{mt}"
            );
        }
    }

    #[test]
    fn settings_table() {
        use RootPartition::*;
        let ok = |root, fs, label: Option<&str>, args: Option<&str>| {
            Ok(ImageSettings {
                root_partition: root,
                filesystem: fs,
                label: label.map(Into::into),
                kernel_args: args.map(Into::into),
            })
        };
        let cases: Vec<(Vec<(&str, &str)>, Result<ImageSettings, &str>)> = vec![
            (vec![], ok(Default, Filesystem::Ext4, None, None)),
            (
                vec![(keys::ROOT_PARTITION, "3")],
                ok(Number(3), Filesystem::Ext4, None, None),
            ),
            (
                vec![(keys::ROOT_PARTITION, "number:2")],
                ok(Number(2), Filesystem::Ext4, None, None),
            ),
            (
                vec![(keys::ROOT_PARTITION, "root")],
                ok(Name("root".into()), Filesystem::Ext4, None, None),
            ),
            (
                vec![(keys::ROOT_PARTITION, "name:42")],
                ok(Name("42".into()), Filesystem::Ext4, None, None),
            ),
            (vec![(keys::ROOT_PARTITION, "0")], Err("1..=128")),
            (vec![(keys::ROOT_PARTITION, "name:")], Err("GPT name")),
            (
                vec![(keys::ROOT_FILESYSTEM, "xfs"), (keys::ROOT_LABEL, "root")],
                ok(Default, Filesystem::Xfs, Some("root"), None),
            ),
            (
                vec![(keys::ROOT_FILESYSTEM, "btrfs")],
                ok(Default, Filesystem::Btrfs, None, None),
            ),
            (
                vec![(keys::ROOT_FILESYSTEM, "ntfs")],
                Err("accepted: ext4, xfs, btrfs"),
            ),
            (
                vec![
                    (keys::ROOT_FILESYSTEM, "xfs"),
                    (keys::ROOT_LABEL, "thirteen-char"),
                ],
                Err("1..=12 bytes"),
            ),
            (
                vec![(keys::ROOT_LABEL, "sixteen-chars-ok")],
                ok(Default, Filesystem::Ext4, Some("sixteen-chars-ok"), None),
            ),
            (
                vec![(keys::KERNEL_ARGS, " console=ttyS0 quiet ")],
                ok(Default, Filesystem::Ext4, None, Some("console=ttyS0 quiet")),
            ),
            (vec![(keys::KERNEL_ARGS, "a\nb")], Err("one line")),
            (
                vec![(keys::FORMAT_VERSION, "1")],
                ok(Default, Filesystem::Ext4, None, None),
            ),
            (vec![(keys::FORMAT_VERSION, "2")], Err("not supported")),
        ];
        for (pairs, want) in cases {
            let m = map(&pairs);
            let got = ImageSettings::from_sources(&[Some(&m)]);
            match (got, want) {
                (Ok(g), Ok(w)) => assert_eq!(g, w, "{pairs:?}"),
                (Err(e), Err(msg)) => assert!(e.to_string().contains(msg), "{pairs:?}: {e}"),
                (g, w) => panic!("{pairs:?}: got {g:?}, want {w:?}"),
            }
        }
    }

    #[test]
    fn manifest_annotation_beats_label() {
        let ann = map(&[(keys::ROOT_FILESYSTEM, "xfs")]);
        let labels = map(&[
            (keys::ROOT_FILESYSTEM, "btrfs"),
            (keys::ROOT_PARTITION, "2"),
        ]);
        let s = ImageSettings::from_sources(&[Some(&ann), None, Some(&labels)]).unwrap();
        assert_eq!(s.filesystem, Filesystem::Xfs);
        assert_eq!(s.root_partition, RootPartition::Number(2));
    }

    #[test]
    fn choose_root_table() {
        let p = |number, name: &str, t: &str| PartitionInfo {
            number,
            name: name.into(),
            type_guid: t.into(),
        };
        let bios = "21686148-6449-6e6f-744e-656564454649";
        let esp = "c12a7328-f81f-11d2-ba4b-00a0c93ec93b";
        let linux = "0fc63daf-8483-4772-8e79-3d69d8477de4";
        let dps = "4F68BCE3-E8CD-4DB1-96E7-FBCAF984B709";
        let with_dps = vec![
            p(1, "bios", bios),
            p(2, "esp", esp),
            p(3, "root", dps),
            p(4, "data", linux),
        ];
        let plain = vec![p(1, "bios", bios), p(2, "esp", esp), p(3, "root", linux)];
        let s = |r| ImageSettings {
            root_partition: r,
            ..Default::default()
        };
        let cases: Vec<(&[PartitionInfo], ImageSettings, &str, Result<u32, &str>)> = vec![
            (&with_dps, s(RootPartition::Default), "x86_64", Ok(3)),
            (&with_dps, s(RootPartition::Default), "aarch64", Ok(4)),
            (&plain, s(RootPartition::Default), "x86_64", Ok(3)),
            (
                &with_dps,
                s(RootPartition::Name("data".into())),
                "x86_64",
                Ok(4),
            ),
            (&with_dps, s(RootPartition::Number(2)), "x86_64", Ok(2)),
            (
                &with_dps,
                s(RootPartition::Number(9)),
                "x86_64",
                Err("no partition number 9"),
            ),
            (
                &plain,
                s(RootPartition::Name("x".into())),
                "x86_64",
                Err("no partition named \"x\""),
            ),
            (
                &[],
                s(RootPartition::Default),
                "x86_64",
                Err("no partitions"),
            ),
        ];
        for (parts, settings, arch, want) in cases {
            let got = settings.choose_root(parts, arch).map(|p| p.number);
            match (got, want) {
                (Ok(g), Ok(w)) => assert_eq!(g, w),
                (Err(e), Err(m)) => assert!(e.contains(m), "{e}"),
                (g, w) => panic!("{settings:?}: got {g:?} want {w:?}"),
            }
        }
    }

    #[test]
    fn platform_selection() {
        let index: ImageIndex = serde_json::from_str(
            r#"{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[
            {"mediaType":"application/vnd.oci.image.manifest.v1+json","size":1,"digest":"sha256:1111111111111111111111111111111111111111111111111111111111111111","platform":{"os":"linux","architecture":"arm","variant":"v7"}},
            {"mediaType":"application/vnd.oci.image.manifest.v1+json","size":1,"digest":"sha256:2222222222222222222222222222222222222222222222222222222222222222","platform":{"os":"linux","architecture":"arm64","variant":"v8"}},
            {"mediaType":"application/vnd.oci.image.manifest.v1+json","size":1,"digest":"sha256:3333333333333333333333333333333333333333333333333333333333333333","platform":{"os":"unknown","architecture":"unknown"}},
            {"mediaType":"application/vnd.oci.image.manifest.v1+json","size":1,"digest":"sha256:4444444444444444444444444444444444444444444444444444444444444444","platform":{"os":"linux","architecture":"amd64"}}]}"#,
        )
        .unwrap();
        let pf = |a: &str, v: Option<&str>| Platform {
            os: "linux".into(),
            architecture: a.into(),
            variant: v.map(Into::into),
        };
        let cases = [
            (pf("amd64", None), Ok('4')),
            (pf("arm64", None), Ok('2')),
            (pf("arm64", Some("v8")), Ok('2')),
            (pf("arm", Some("v6")), Err(())),
            (pf("s390x", None), Err(())),
        ];
        for (want, expect) in cases {
            let got = select_platform(&index, &want)
                .map(|d| d.digest().to_string().chars().last().unwrap());
            assert_eq!(got.map_err(|_| ()), expect, "{want}");
        }
        let err = select_platform(&index, &pf("s390x", None))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("linux/arm64") && err.contains("linux/s390x"),
            "{err}"
        );
        assert_eq!(Platform::current().to_string(), "linux/amd64");
    }

    #[test]
    fn disk_stream_both_forms() {
        use crate::compression::{Compression, tests::compress};
        let disk: Vec<u8> = (0..70_000u32).map(|i| (i % 253) as u8).collect();
        for c in [
            Compression::Zstd,
            Compression::Gzip,
            Compression::Xz,
            Compression::None,
        ] {
            let blob = compress(c, &disk);
            let mut out = Vec::new();
            Layer0Form::RawDisk
                .disk_stream(std::io::Cursor::new(blob.clone()))
                .unwrap()
                .read_to_end(&mut out)
                .unwrap();
            assert_eq!(out, disk, "raw {c}");
            let mut b = tar::Builder::new(Vec::new());
            let mut h = tar::Header::new_gnu();
            h.set_size(blob.len() as u64);
            h.set_mode(0o644);
            b.append_data(&mut h, "disk.raw.zst", blob.as_slice())
                .unwrap();
            let tar_bytes = b.into_inner().unwrap();
            for outer in [Compression::None, Compression::Gzip, Compression::Zstd] {
                let layer = compress(outer, &tar_bytes);
                let mut out = Vec::new();
                Layer0Form::TarWithOneFile
                    .disk_stream(std::io::Cursor::new(layer))
                    .unwrap()
                    .read_to_end(&mut out)
                    .unwrap();
                assert_eq!(out, disk, "tar({outer}) of {c}");
            }
        }
    }
}
