//! Finding every active console.
//!
//! The kernel lists its consoles in `/sys/class/tty/console/active` (e.g. `tty0 ttyS0`);
//! `/dev/console` reaches only the last one, so the agent writes to each device itself.
//! A console is a display when it is a virtual terminal and the machine has video the
//! kernel can draw on: a framebuffer (UEFI GOP via simpledrm/efifb, a DRM driver), or,
//! on a legacy BIOS boot, a PCI display controller in VGA text mode. The VGA text console
//! claims to be bound even on a machine without any video device, and a VGA card is of
//! no use on a UEFI boot without a framebuffer, so neither alone proves a display.

use serde::Serialize;
use std::path::Path;

/// What kind of device a console is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    Serial,
    Vt,
    Other,
}

/// One console device under /dev.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Console {
    pub name: String,
    pub kind: Kind,
}

/// Every console the agent writes to, and whether one of them is a display.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Consoles {
    pub list: Vec<Console>,
    pub display: bool,
    /// What the display is drawn with (`framebuffer fb0`, `VGA text`), when there is one.
    pub video: Option<String>,
}

impl Consoles {
    pub fn names(&self) -> Vec<String> {
        self.list.iter().map(|c| c.name.clone()).collect()
    }
}

/// Classifies a console by its device name.
pub fn kind_of(name: &str) -> Kind {
    let digits_after = |p: &str| {
        name.strip_prefix(p)
            .is_some_and(|r| !r.is_empty() && r.bytes().all(|b| b.is_ascii_digit()))
    };
    if ["ttyS", "ttyAMA", "ttyUSB", "hvc", "ttyPS", "ttymxc"]
        .iter()
        .any(|p| digits_after(p))
    {
        Kind::Serial
    } else if digits_after("tty") {
        Kind::Vt
    } else {
        Kind::Other
    }
}

/// Parses `/sys/class/tty/console/active`.
pub fn parse_active(active: &str) -> Vec<String> {
    active.split_whitespace().map(str::to_string).collect()
}

/// Device names from `console=` values (`ttyS0,115200n8` -> `ttyS0`), in order, no repeats.
pub fn from_cmdline<'a>(values: impl IntoIterator<Item = &'a str>) -> Vec<String> {
    let mut names: Vec<String> = Vec::new();
    for v in values {
        let name = v
            .split(',')
            .next()
            .unwrap_or("")
            .trim_start_matches("/dev/");
        if !name.is_empty() && !names.iter().any(|n| n == name) {
            names.push(name.to_string());
        }
    }
    names
}

/// Finds the consoles from sysfs (root `sys`, normally `/sys`); falls back to the
/// `console=` parameters, then to `console` itself.
pub fn discover(sys: &Path, cmdline_consoles: &[String]) -> Consoles {
    let mut names = std::fs::read_to_string(sys.join("class/tty/console/active"))
        .map(|s| parse_active(&s))
        .unwrap_or_default();
    if names.is_empty() {
        names = cmdline_consoles.to_vec();
    }
    if names.is_empty() {
        names.push("console".into());
    }
    let list: Vec<Console> = names
        .into_iter()
        .map(|name| Console {
            kind: kind_of(&name),
            name,
        })
        .collect();
    let has_vt = list.iter().any(|c| c.kind == Kind::Vt);
    let video = if has_vt { video(sys) } else { None };
    Consoles {
        display: video.is_some(),
        video,
        list,
    }
}

fn video(sys: &Path) -> Option<String> {
    let names = |dir: &str| -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(sys.join(dir))
            .map(|d| {
                d.flatten()
                    .filter_map(|e| e.file_name().to_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default();
        v.sort();
        v
    };
    // fb0, fb1 ... (not `fbcon`, which exists without any framebuffer).
    let fb = names("class/graphics").into_iter().find(|n| {
        n.strip_prefix("fb")
            .is_some_and(|d| !d.is_empty() && d.bytes().all(|b| b.is_ascii_digit()))
    });
    if let Some(fb) = fb {
        return Some(format!("framebuffer {fb}"));
    }
    let efi = sys.join("firmware/efi").is_dir();
    let vga = names("bus/pci/devices").iter().any(|d| {
        let class = std::fs::read_to_string(sys.join("bus/pci/devices").join(d).join("class"));
        is_display_class(&class.unwrap_or_default())
    });
    (vga && !efi).then(|| "VGA text".to_string())
}

/// Whether a PCI class code (`0x030000`) is a display controller (base class 0x03).
pub fn is_display_class(class: &str) -> bool {
    let hex = class.trim().trim_start_matches("0x");
    u32::from_str_radix(hex, 16).is_ok_and(|c| c >> 16 == 0x03)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds() {
        for (name, kind) in [
            ("ttyS0", Kind::Serial),
            ("ttyS12", Kind::Serial),
            ("ttyAMA0", Kind::Serial),
            ("hvc0", Kind::Serial),
            ("tty0", Kind::Vt),
            ("tty1", Kind::Vt),
            ("tty", Kind::Other),
            ("ttyS", Kind::Other),
            ("console", Kind::Other),
            ("netcon0", Kind::Other),
        ] {
            assert_eq!(kind_of(name), kind, "{name}");
        }
    }

    #[test]
    fn cmdline_consoles() {
        assert_eq!(
            from_cmdline(["tty0", "ttyS0,115200n8", "/dev/ttyS1", "ttyS0"]),
            ["tty0", "ttyS0", "ttyS1"]
        );
        assert!(from_cmdline([""]).is_empty());
    }

    fn fake_sys(active: Option<&str>, fb: bool, pci: &[&str], efi: bool) -> tempfile::TempDir {
        let d = tempfile::tempdir().unwrap();
        if efi {
            std::fs::create_dir_all(d.path().join("firmware/efi")).unwrap();
        }
        if let Some(a) = active {
            std::fs::create_dir_all(d.path().join("class/tty/console")).unwrap();
            std::fs::write(d.path().join("class/tty/console/active"), a).unwrap();
        }
        if fb {
            std::fs::create_dir_all(d.path().join("class/graphics/fb0")).unwrap();
        }
        std::fs::create_dir_all(d.path().join("class/graphics/fbcon")).unwrap();
        for (i, class) in pci.iter().enumerate() {
            let p = d.path().join(format!("bus/pci/devices/0000:00:0{i}.0"));
            std::fs::create_dir_all(&p).unwrap();
            std::fs::write(p.join("class"), class).unwrap();
        }
        d
    }

    #[test]
    fn display_classes() {
        assert!(is_display_class("0x030000\n"));
        assert!(is_display_class("0x038000"));
        assert!(!is_display_class("0x020000"));
        assert!(!is_display_class("junk"));
    }

    #[test]
    fn discover_table() {
        struct Case {
            active: Option<&'static str>,
            fb: bool,
            pci: &'static [&'static str],
            cmdline: &'static [&'static str],
            names: &'static [&'static str],
            efi: bool,
            video: Option<&'static str>,
        }
        const NIC: &str = "0x020000";
        const VGA: &str = "0x030000";
        let case = |active, fb, pci, efi, cmdline, names, video| Case {
            active,
            fb,
            pci,
            cmdline,
            names,
            efi,
            video,
        };
        let both: &[&str] = &["tty0", "ttyS0"];
        let cases = [
            // Headless VM: serial only.
            case(Some("ttyS0\n"), false, &[NIC], false, &[], &["ttyS0"], None),
            // Legacy BIOS with a VGA card: VGA text console.
            case(
                Some("tty0 ttyS0\n"),
                false,
                &[NIC, VGA],
                false,
                &[],
                both,
                Some("VGA text"),
            ),
            // UEFI framebuffer.
            case(
                Some("tty0 ttyS0\n"),
                true,
                &[NIC],
                true,
                &[],
                both,
                Some("framebuffer fb0"),
            ),
            // UEFI with a VGA card but no framebuffer (bootloader passed none): nothing shows.
            case(Some("tty0 ttyS0\n"), false, &[VGA], true, &[], both, None),
            // VT asked for but no video at all (vgacon still claims the VT): not a display.
            case(Some("tty0 ttyS0\n"), false, &[NIC], false, &[], both, None),
            // Video present but no VT console active: not shown there.
            case(Some("ttyS0\n"), true, &[VGA], false, &[], &["ttyS0"], None),
            // No sysfs: fall back to console=, then to /dev/console.
            case(None, false, &[], false, &["ttyS1"], &["ttyS1"], None),
            case(None, false, &[], false, &[], &["console"], None),
        ];
        for c in cases {
            let sys = fake_sys(c.active, c.fb, c.pci, c.efi);
            let cmd: Vec<String> = c.cmdline.iter().map(|s| s.to_string()).collect();
            let got = discover(sys.path(), &cmd);
            assert_eq!(got.names(), c.names, "{:?}", c.active);
            let why = format!("{:?} fb={} pci={:?} efi={}", c.active, c.fb, c.pci, c.efi);
            assert_eq!(got.video.as_deref(), c.video, "{why}");
            assert_eq!(got.display, c.video.is_some(), "{why}");
        }
    }
}
