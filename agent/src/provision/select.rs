//! Root-device hints (`kiln.disk=serial=ABC,size>=100G,rotational=0`) and the target choice.
//!
//! Hints AND together. Without identity hints the smallest suitable disk wins. A disk is
//! never chosen when it is read-only, has mounted partitions or active swap, has holders
//! (md, dm, LVM), is the installer's own boot medium, is smaller than the image, or (without
//! a hint naming it) is removable or virtual. When nothing qualifies, the error lists every
//! disk seen and why each was rejected.

use std::fmt;

use serde::{Deserialize, Serialize};

use super::disk::{Disk, INSTALLER_VOLUME_ID, Transport};

/// Comparison in a hint.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Op {
    /// `=`
    Eq,
    /// `>=`
    Ge,
    /// `<=`
    Le,
}

/// One hint.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Hint {
    /// `serial=` (case-insensitive).
    Serial(String),
    /// `wwn=` (`0x`, `naa.`, `eui.` prefixes ignored, case-insensitive).
    Wwn(String),
    /// `model=` (trimmed, case-insensitive).
    Model(String),
    /// `vendor=` (trimmed, case-insensitive).
    Vendor(String),
    /// `by-path=` (with or without `/dev/disk/by-path/`).
    ByPath(String),
    /// `by-id=` (with or without `/dev/disk/by-id/`).
    ById(String),
    /// `name=` (`sda` or `/dev/sda`).
    Name(String),
    /// `size` with `=`, `>=` or `<=`, in bytes.
    Size(Op, u64),
    /// `rotational=0|1`.
    Rotational(bool),
    /// `transport=nvme|virtio|ata|sas|usb|scsi|mmc|loop`.
    Transport(String),
}

impl Hint {
    /// Hints that name one device rather than describe a class of devices.
    pub fn is_identity(&self) -> bool {
        matches!(
            self,
            Hint::Serial(_) | Hint::Wwn(_) | Hint::ByPath(_) | Hint::ById(_) | Hint::Name(_)
        )
    }

    /// Whether `d` satisfies this hint.
    pub fn matches(&self, d: &Disk) -> bool {
        let ieq = |a: &Option<String>, b: &str| {
            a.as_deref()
                .is_some_and(|a| a.trim().eq_ignore_ascii_case(b.trim()))
        };
        match self {
            Hint::Serial(s) => ieq(&d.serial, s),
            Hint::Wwn(w) => d
                .wwn
                .as_deref()
                .is_some_and(|dw| norm_wwn(dw) == norm_wwn(w)),
            Hint::Model(m) => ieq(&d.model, m),
            Hint::Vendor(v) => ieq(&d.vendor, v),
            Hint::ByPath(p) => {
                let p = p.trim_start_matches("/dev/disk/by-path/");
                d.by_path.iter().any(|x| x == p)
            }
            Hint::ById(p) => {
                let p = p.trim_start_matches("/dev/disk/by-id/");
                d.by_id.iter().any(|x| x == p)
            }
            Hint::Name(n) => n.trim_start_matches("/dev/") == d.name,
            Hint::Size(Op::Eq, n) => d.size == *n,
            Hint::Size(Op::Ge, n) => d.size >= *n,
            Hint::Size(Op::Le, n) => d.size <= *n,
            Hint::Rotational(r) => d.rotational == *r,
            Hint::Transport(t) => d.transport.name().eq_ignore_ascii_case(t),
        }
    }
}

impl fmt::Display for Hint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Hint::Serial(s) => write!(f, "serial={s}"),
            Hint::Wwn(s) => write!(f, "wwn={s}"),
            Hint::Model(s) => write!(f, "model={s}"),
            Hint::Vendor(s) => write!(f, "vendor={s}"),
            Hint::ByPath(s) => write!(f, "by-path={s}"),
            Hint::ById(s) => write!(f, "by-id={s}"),
            Hint::Name(s) => write!(f, "name={s}"),
            Hint::Size(op, n) => {
                let o = match op {
                    Op::Eq => "=",
                    Op::Ge => ">=",
                    Op::Le => "<=",
                };
                write!(f, "size{o}{n}")
            }
            Hint::Rotational(r) => write!(f, "rotational={}", u8::from(*r)),
            Hint::Transport(t) => write!(f, "transport={t}"),
        }
    }
}

fn norm_wwn(s: &str) -> String {
    let s = s.trim().to_ascii_lowercase();
    let s = s
        .strip_prefix("0x")
        .or_else(|| s.strip_prefix("naa."))
        .or_else(|| s.strip_prefix("eui."))
        .unwrap_or(&s);
    s.to_string()
}

/// A hint string that does not parse.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error(
    "bad disk hint {hint:?}: {why} (syntax: key=value[,key>=value...], keys: serial wwn model vendor by-path by-id name size rotational transport)"
)]
pub struct HintError {
    /// The offending hint.
    pub hint: String,
    /// What is wrong with it.
    pub why: String,
}

/// Parses a size with a unit: `100G`, `100GiB` (binary), `100GB` (decimal), `512M`, `2T`, `4096B`.
pub fn parse_size(s: &str) -> Option<u64> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit() && c != '.')?;
    let (num, unit) = s.split_at(split);
    let num: f64 = num.parse().ok()?;
    let mult: u64 = match unit.to_ascii_uppercase().as_str() {
        "B" => 1,
        "K" | "KIB" => 1 << 10,
        "M" | "MIB" => 1 << 20,
        "G" | "GIB" => 1 << 30,
        "T" | "TIB" => 1 << 40,
        "KB" => 1_000,
        "MB" => 1_000_000,
        "GB" => 1_000_000_000,
        "TB" => 1_000_000_000_000,
        _ => return None,
    };
    Some((num * mult as f64) as u64)
}

/// Parses `key=value,key>=value,...`. An empty string gives no hints.
pub fn parse_hints(s: &str) -> Result<Vec<Hint>, HintError> {
    let mut out = Vec::new();
    for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let err = |why: &str| HintError {
            hint: part.to_string(),
            why: why.to_string(),
        };
        let (key, op, val) = if let Some((k, v)) = part.split_once(">=") {
            (k, Op::Ge, v)
        } else if let Some((k, v)) = part.split_once("<=") {
            (k, Op::Le, v)
        } else if let Some((k, v)) = part.split_once('=') {
            (k, Op::Eq, v)
        } else {
            return Err(err("expected key=value"));
        };
        let key = key.trim().to_ascii_lowercase();
        let val = val.trim().to_string();
        if val.is_empty() {
            return Err(err("empty value"));
        }
        if op != Op::Eq && key != "size" {
            return Err(err(">= and <= only apply to size"));
        }
        let bool_of = |v: &str| match v {
            "0" | "false" | "no" => Ok(false),
            "1" | "true" | "yes" => Ok(true),
            _ => Err(err("expected 0 or 1")),
        };
        out.push(match key.as_str() {
            "serial" => Hint::Serial(val),
            "wwn" => Hint::Wwn(val),
            "model" => Hint::Model(val),
            "vendor" => Hint::Vendor(val),
            "by-path" | "by_path" => Hint::ByPath(val),
            "by-id" | "by_id" => Hint::ById(val),
            "name" => Hint::Name(val),
            "size" => Hint::Size(
                op,
                parse_size(&val)
                    .ok_or_else(|| err("size needs a number and a unit (100G, 512GiB, 1TB)"))?,
            ),
            "rotational" => Hint::Rotational(bool_of(&val)?),
            "transport" | "tran" => Hint::Transport(val),
            _ => return Err(err("unknown key")),
        });
    }
    Ok(out)
}

/// Why a disk was not chosen.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Rejection {
    /// A hint did not match.
    HintMismatch(String),
    /// Kernel says read-only.
    ReadOnly,
    /// Partitions are mounted.
    Mounted(Vec<String>),
    /// Swap active on it.
    Swap(Vec<String>),
    /// md/dm/LVM holders.
    Holders(Vec<String>),
    /// The installer booted from it (named in the policy, or it carries the installer
    /// ISO's volume id). Never chosen, even when a hint names it.
    BootMedium,
    /// Holds another ISO 9660 image (a boot stick, virtual media) and no hint names it.
    IsoImage(String),
    /// Smaller than needed.
    TooSmall {
        /// Disk size.
        size: u64,
        /// Needed size.
        need: u64,
    },
    /// Removable and not named by a hint.
    Removable,
    /// Loop/RAM/stacked/optical device not named by a hint.
    Virtual(Transport),
    /// Sector size differs from the image's.
    SectorSize {
        /// Disk logical sector size.
        disk: u32,
        /// Image sector size.
        image: u32,
    },
    /// Another disk matched too: identity hints must name exactly one disk.
    Ambiguous,
    /// A smaller suitable disk was chosen.
    NotSmallest,
}

impl fmt::Display for Rejection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        use super::events::human_bytes as h;
        match self {
            Rejection::HintMismatch(x) => write!(f, "does not match hint {x}"),
            Rejection::ReadOnly => f.write_str("read-only"),
            Rejection::Mounted(m) => write!(f, "mounted ({})", m.join(", ")),
            Rejection::Swap(s) => write!(f, "swap active ({})", s.join(", ")),
            Rejection::Holders(hs) => write!(f, "in use by {} (md/dm/LVM)", hs.join(", ")),
            Rejection::BootMedium => f.write_str("installer boot medium"),
            Rejection::IsoImage(v) => write!(
                f,
                "holds an ISO 9660 image (volume {v:?}; name it with a hint to use it)"
            ),
            Rejection::TooSmall { size, need } => {
                write!(f, "too small ({} < {})", h(*size), h(*need))
            }
            Rejection::Removable => f.write_str("removable (name it with a hint to use it)"),
            Rejection::Virtual(t) => {
                write!(f, "{} device (name it with a hint to use it)", t.name())
            }
            Rejection::SectorSize { disk, image } => {
                write!(f, "sector size {disk} but image uses {image}")
            }
            Rejection::Ambiguous => {
                f.write_str("matches the hints like another disk (hints must name one disk)")
            }
            Rejection::NotSmallest => f.write_str("a smaller suitable disk was chosen"),
        }
    }
}

/// What the choice needs besides hints.
#[derive(Debug, Clone, Default)]
pub struct Policy {
    /// Minimum size (the image size when known).
    pub min_size: u64,
    /// Logical sector size the image was made for, when known.
    pub sector_size: Option<u32>,
    /// Kernel names of the installer's boot medium (never chosen).
    pub boot_media: Vec<String>,
}

/// No disk qualifies; lists every disk and every reason.
#[derive(Debug, thiserror::Error)]
pub struct NoDisk {
    /// The hints used.
    pub hints: Vec<Hint>,
    /// Every disk seen with its reasons.
    pub report: Vec<(String, String, Vec<Rejection>)>,
}

impl fmt::Display for NoDisk {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let hints: Vec<String> = self.hints.iter().map(ToString::to_string).collect();
        write!(
            f,
            "no target disk qualifies (hints: {}); disks seen:",
            if hints.is_empty() {
                "none".into()
            } else {
                hints.join(",")
            }
        )?;
        if self.report.is_empty() {
            write!(f, " none")?;
        }
        for (name, desc, why) in &self.report {
            let why: Vec<String> = why.iter().map(ToString::to_string).collect();
            write!(f, "\n  /dev/{name} ({desc}): {}", why.join("; "))?;
        }
        Ok(())
    }
}

/// One-line description of a disk for reports.
pub fn describe(d: &Disk) -> String {
    let mut parts = vec![
        super::events::human_bytes(d.size),
        d.transport.name().to_string(),
    ];
    if let Some(m) = &d.model {
        parts.push(m.clone());
    }
    if let Some(s) = &d.serial {
        parts.push(format!("serial {s}"));
    }
    parts.join(", ")
}

/// Reasons `d` cannot be the target, hints and policy applied.
pub fn rejections(d: &Disk, hints: &[Hint], policy: &Policy) -> Vec<Rejection> {
    let mut r: Vec<Rejection> = hints
        .iter()
        .filter(|h| !h.matches(d))
        .map(|h| Rejection::HintMismatch(h.to_string()))
        .collect();
    let named = hints.iter().any(Hint::is_identity) && r.is_empty();
    if d.read_only {
        r.push(Rejection::ReadOnly);
    }
    if !d.mounts.is_empty() {
        r.push(Rejection::Mounted(d.mounts.clone()));
    }
    if !d.swaps.is_empty() {
        r.push(Rejection::Swap(d.swaps.clone()));
    }
    if !d.holders.is_empty() {
        r.push(Rejection::Holders(d.holders.clone()));
    }
    if policy
        .boot_media
        .iter()
        .any(|b| b.trim_start_matches("/dev/") == d.name)
        || d.iso_volume_id.as_deref() == Some(INSTALLER_VOLUME_ID)
    {
        r.push(Rejection::BootMedium);
    } else if let Some(v) = &d.iso_volume_id
        && !named
    {
        r.push(Rejection::IsoImage(v.clone()));
    }
    if d.size < policy.min_size {
        r.push(Rejection::TooSmall {
            size: d.size,
            need: policy.min_size,
        });
    }
    if let Some(ss) = policy.sector_size
        && ss != d.logical_sector
    {
        r.push(Rejection::SectorSize {
            disk: d.logical_sector,
            image: ss,
        });
    }
    match d.transport {
        Transport::Ram | Transport::Stacked | Transport::Optical => {
            r.push(Rejection::Virtual(d.transport))
        }
        Transport::Loop if !named => r.push(Rejection::Virtual(d.transport)),
        _ => {}
    }
    if d.removable && !named {
        r.push(Rejection::Removable);
    }
    r
}

/// Chooses the target disk. Returns its index in `disks`.
pub fn choose(disks: &[Disk], hints: &[Hint], policy: &Policy) -> Result<usize, NoDisk> {
    let mut report: Vec<(String, String, Vec<Rejection>)> = disks
        .iter()
        .map(|d| (d.name.clone(), describe(d), rejections(d, hints, policy)))
        .collect();
    let ok: Vec<usize> = (0..disks.len())
        .filter(|&i| report[i].2.is_empty())
        .collect();
    let identity = hints.iter().any(Hint::is_identity);
    if identity && ok.len() > 1 {
        for &i in &ok {
            report[i].2.push(Rejection::Ambiguous);
        }
        return Err(NoDisk {
            hints: hints.to_vec(),
            report,
        });
    }
    // Smallest first; ties broken by kernel name so the choice is deterministic.
    ok.into_iter()
        .min_by(|&a, &b| {
            disks[a]
                .size
                .cmp(&disks[b].size)
                .then_with(|| disks[a].name.cmp(&disks[b].name))
        })
        .ok_or(NoDisk {
            hints: hints.to_vec(),
            report,
        })
}

#[cfg(test)]
mod tests {
    use super::super::disk::{Sources, fake, inventory};
    use super::*;

    const MOUNTINFO: &str = "30 22 8:33 / /run/media/usb rw - vfat /dev/sdc1 rw\n";
    const SWAPS: &str = "Filename Type Size Used Priority\n/dev/nvme0n1p2 partition 8388604 0 -2\n";

    fn machine() -> (tempfile::TempDir, Vec<Disk>) {
        let t = tempfile::tempdir().unwrap();
        fake::make(&t.path().join("sys"), &fake::machine());
        let d = inventory(&Sources {
            sys: &t.path().join("sys"),
            dev: &t.path().join("dev"),
            mountinfo: MOUNTINFO,
            swaps: SWAPS,
        })
        .unwrap();
        (t, d)
    }

    #[test]
    fn parse() {
        assert_eq!(
            parse_hints("serial=ABC, size>=100G,rotational=0").unwrap(),
            vec![
                Hint::Serial("ABC".into()),
                Hint::Size(Op::Ge, 100 << 30),
                Hint::Rotational(false)
            ]
        );
        assert_eq!(parse_hints("").unwrap(), vec![]);
        assert_eq!(
            parse_hints("size<=1TB").unwrap(),
            vec![Hint::Size(Op::Le, 1_000_000_000_000)]
        );
        for bad in [
            "serial",
            "size>=100",
            "colour=red",
            "serial>=A",
            "rotational=maybe",
            "name=",
        ] {
            assert!(parse_hints(bad).is_err(), "{bad} parsed");
        }
    }

    /// The machine with an ISO 9660 head on its virtio disk (vda).
    fn machine_with_iso_on_vda(volume_id: &str) -> (tempfile::TempDir, Vec<Disk>) {
        let t = tempfile::tempdir().unwrap();
        let mut disks = fake::machine();
        for d in &mut disks {
            if d.name == "vda" {
                d.content = Some(fake::iso_head(volume_id));
            }
        }
        fake::make(&t.path().join("sys"), &disks);
        let d = inventory(&Sources {
            sys: &t.path().join("sys"),
            dev: &t.path().join("dev"),
            mountinfo: MOUNTINFO,
            swaps: SWAPS,
        })
        .unwrap();
        (t, d)
    }

    #[test]
    fn installer_iso_is_never_chosen_other_isos_only_when_named() {
        let policy = Policy::default();
        // (volume id on vda, hints, expected choice)
        let cases: &[(&str, &str, Option<&str>)] = &[
            ("KILN", "", Some("sda")),
            ("KILN", "by-id=virtio-KILN-VDA", None),
            ("KILN", "name=vda", None),
            ("DEBIAN 12", "", Some("sda")),
            ("DEBIAN 12", "name=vda", Some("vda")),
        ];
        for (vol, hints, want) in cases {
            let (_t, disks) = machine_with_iso_on_vda(vol);
            let vda = disks.iter().find(|d| d.name == "vda").unwrap();
            assert_eq!(vda.iso_volume_id.as_deref(), Some(*vol));
            let got = choose(&disks, &parse_hints(hints).unwrap(), &policy);
            match (want, got) {
                (Some(w), Ok(i)) => assert_eq!(disks[i].name, *w, "{vol} {hints}"),
                (None, Err(e)) => {
                    let text = e.to_string();
                    assert!(text.contains("installer boot medium"), "{text}");
                }
                (w, g) => panic!("{vol} {hints}: want {w:?}, got {g:?}"),
            }
        }
    }

    #[test]
    fn table() {
        let (_t, disks) = machine();
        let gib = 1u64 << 30;
        // (hints, min size, boot media, expected disk or None)
        let cases: &[(&str, u64, &[&str], Option<&str>)] = &[
            // Default: smallest qualifying disk. nvme0n1 has swap, sdc is removable and
            // mounted, sdd is held by md, loop0 is virtual, vda (64 GiB) is smallest.
            ("", 0, &[], Some("vda")),
            ("", 10 * gib, &[], Some("vda")),
            ("", 100 * gib, &[], Some("sda")),
            ("", 300 * gib, &[], Some("nvme1n1")),
            ("", 600 * gib, &[], Some("sdb")),
            ("", 5000 * gib, &[], None),
            ("", 0, &["vda"], Some("sda")),
            ("serial=PHLJ000000ZZ480", 0, &[], Some("nvme1n1")),
            ("serial=phlj000000zz480", 0, &[], Some("nvme1n1")),
            ("serial=BTYS1234", 0, &[], Some("sda")),
            ("serial=NOPE", 0, &[], None),
            ("serial=S4EWNX0R123456", 0, &[], None), // swap in use
            ("wwn=0x5000c500a1b2c3d4", 0, &[], Some("sdb")),
            ("wwn=naa.5000C500A1B2C3D4", 0, &[], Some("sdb")),
            ("rotational=1", 0, &[], Some("sdb")),
            ("rotational=0,size>=200G", 0, &[], Some("sda")),
            ("rotational=0,size>=200G,size<=300G", 0, &[], Some("sda")),
            ("transport=nvme", 0, &[], Some("nvme1n1")),
            ("model=ST4000NM000A", 0, &[], Some("sdb")),
            ("vendor=samsung", 0, &[], None), // sdd held by md127
            ("name=/dev/loop0", 0, &[], Some("loop0")),
            ("name=loop0", 5 * gib, &[], None),
            ("by-path=pci-0000:00:04.0", 0, &[], Some("vda")),
            ("by-id=virtio-KILN-VDA", 0, &[], Some("vda")),
            (
                "by-path=/dev/disk/by-path/pci-0000:3e:00.0-nvme-1",
                0,
                &[],
                Some("nvme1n1"),
            ),
            ("serial=KILN-VDA,rotational=1", 0, &[], None),
            ("transport=usb", 0, &[], None), // removable but not named, and mounted
            ("vendor=ATA", 0, &[], Some("sda")),
            ("vendor=ATA,name=sda", 0, &[], Some("sda")),
        ];
        for (hints, min, boot, want) in cases {
            let h = parse_hints(hints).unwrap();
            let policy = Policy {
                min_size: *min,
                sector_size: None,
                boot_media: boot.iter().map(|s| s.to_string()).collect(),
            };
            let got = choose(&disks, &h, &policy).map(|i| disks[i].name.as_str());
            match (want, &got) {
                (Some(w), Ok(g)) => assert_eq!(w, g, "hints {hints:?} min {min}"),
                (None, Err(e)) => {
                    // Every disk is listed in the refusal.
                    let text = e.to_string();
                    for d in &disks {
                        assert!(text.contains(&format!("/dev/{} (", d.name)), "{text}");
                    }
                }
                _ => panic!("hints {hints:?} min {min}: want {want:?}, got {got:?}"),
            }
        }
    }

    #[test]
    fn ambiguous_identity_refused() {
        let (_t, mut disks) = machine();
        disks[7].serial = Some("DUP".into());
        disks[3].serial = Some("DUP".into());
        let e = choose(
            &disks,
            &parse_hints("serial=DUP").unwrap(),
            &Policy::default(),
        )
        .unwrap_err();
        assert!(e.to_string().contains("hints must name one disk"), "{e}");
    }

    #[test]
    fn refusal_lists_reasons() {
        let (_t, disks) = machine();
        let e = choose(
            &disks,
            &[],
            &Policy {
                min_size: 5000 << 30,
                ..Default::default()
            },
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("/dev/nvme0n1 (960.0 GiB, nvme, Samsung SSD 980 PRO 1TB, serial S4EWNX0R123456): swap active (/dev/nvme0n1p2); too small"), "{e}");
        assert!(
            e.contains(
                "/dev/sdc (32.0 GiB, usb, Ultra Fit): mounted (/dev/sdc1 on /run/media/usb)"
            ),
            "{e}"
        );
        assert!(
            e.contains("/dev/sdd") && e.contains("in use by md127"),
            "{e}"
        );
        assert!(e.contains("/dev/loop0") && e.contains("loop device"), "{e}");
    }

    #[test]
    fn sector_size_mismatch() {
        let (_t, mut disks) = machine();
        for d in &mut disks {
            if d.name == "vda" {
                d.logical_sector = 4096;
            }
        }
        let p = Policy {
            sector_size: Some(512),
            ..Default::default()
        };
        let i = choose(&disks, &[], &p).unwrap();
        assert_eq!(disks[i].name, "sda");
    }
}
