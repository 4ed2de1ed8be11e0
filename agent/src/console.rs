//! Finding every active console.
//!
//! The kernel lists its consoles in `/sys/class/tty/console/active` (e.g. `tty0 ttyS0`);
//! `/dev/console` reaches only the last one, so the agent writes to each device itself.
//! A console is a display when it is a virtual terminal bound to a real video console
//! (VGA text or a framebuffer), not the dummy one a VT has without video.

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
        let name = v.split(',').next().unwrap_or("").trim_start_matches("/dev/");
        if !name.is_empty() && !names.iter().any(|n| n == name) {
            names.push(name.to_string());
        }
    }
    names
}

/// Whether a `/sys/class/vtconsole/*/name` entry is a real video console.
pub fn is_video_vtconsole(name: &str) -> bool {
    !name.contains("dummy")
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
    Consoles {
        display: has_vt && video_present(sys),
        list,
    }
}

fn video_present(sys: &Path) -> bool {
    let Ok(entries) = std::fs::read_dir(sys.join("class/vtconsole")) else {
        return false;
    };
    entries.flatten().any(|e| {
        let read = |f: &str| std::fs::read_to_string(e.path().join(f)).unwrap_or_default();
        read("bind").trim() == "1" && is_video_vtconsole(&read("name"))
    })
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

    fn fake_sys(active: Option<&str>, vtcons: &[(&str, &str)]) -> tempfile::TempDir {
        let d = tempfile::tempdir().unwrap();
        if let Some(a) = active {
            std::fs::create_dir_all(d.path().join("class/tty/console")).unwrap();
            std::fs::write(d.path().join("class/tty/console/active"), a).unwrap();
        }
        for (i, (bind, name)) in vtcons.iter().enumerate() {
            let v = d.path().join(format!("class/vtconsole/vtcon{i}"));
            std::fs::create_dir_all(&v).unwrap();
            std::fs::write(v.join("bind"), bind).unwrap();
            std::fs::write(v.join("name"), name).unwrap();
        }
        d
    }

    #[test]
    fn discover_table() {
        struct Case {
            active: Option<&'static str>,
            vtcons: &'static [(&'static str, &'static str)],
            cmdline: &'static [&'static str],
            names: &'static [&'static str],
            display: bool,
        }
        let cases = [
            // Headless VM: serial only.
            Case {
                active: Some("ttyS0\n"),
                vtcons: &[("1", "(S) dummy device\n")],
                cmdline: &[],
                names: &["ttyS0"],
                display: false,
            },
            // Display + serial with VGA text console.
            Case {
                active: Some("tty0 ttyS0\n"),
                vtcons: &[("1", "(S) VGA+\n")],
                cmdline: &[],
                names: &["tty0", "ttyS0"],
                display: true,
            },
            // UEFI framebuffer console (dummy unbound, fbcon bound).
            Case {
                active: Some("tty0 ttyS0\n"),
                vtcons: &[("0", "(S) dummy device\n"), ("1", "(M) frame buffer device\n")],
                cmdline: &[],
                names: &["tty0", "ttyS0"],
                display: true,
            },
            // VT asked for but no video: not a display.
            Case {
                active: Some("tty0\n"),
                vtcons: &[("1", "(S) dummy device\n")],
                cmdline: &[],
                names: &["tty0"],
                display: false,
            },
            // No sysfs: fall back to console=, then to /dev/console.
            Case {
                active: None,
                vtcons: &[],
                cmdline: &["ttyS1"],
                names: &["ttyS1"],
                display: false,
            },
            Case {
                active: None,
                vtcons: &[],
                cmdline: &[],
                names: &["console"],
                display: false,
            },
        ];
        for c in cases {
            let sys = fake_sys(c.active, c.vtcons);
            let cmd: Vec<String> = c.cmdline.iter().map(|s| s.to_string()).collect();
            let got = discover(sys.path(), &cmd);
            assert_eq!(got.names(), c.names, "{:?}", c.active);
            assert_eq!(got.display, c.display, "{:?} {:?}", c.active, c.vtcons);
        }
    }
}
