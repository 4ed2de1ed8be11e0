//! Phase 8: what to kexec into. Sources, in order: Boot Loader Specification entries
//! (`/boot/loader/entries/*.conf`, newest version first), the `/boot/vmlinuz` +
//! `/boot/initrd.img` links (or Debian's `/vmlinuz` + `/initrd.img`), the default entry of
//! `/boot/grub/grub.cfg` (or `grub2/`). The command line gets `root=PARTUUID=<root>`
//! (replacing any `root=`), keeps the entry's other arguments and appends the image's
//! extra arguments. Kernel and initrd are copied to a staging directory so the root can be
//! unmounted before kexec loads them. Parsers take text; reading goes through [`Root`].

use std::cmp::Ordering;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use serde::{Deserialize, Serialize};

use super::confined::{RelPath, Root};
use super::events::{Event, Phase, Progress};

/// A boot entry found in the installed root (paths inside the root).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    /// Kernel path.
    pub kernel: String,
    /// Initrd paths (concatenated when several).
    pub initrd: Vec<String>,
    /// Arguments from the entry.
    pub options: String,
    /// Where it came from (`bls:<file>`, `links`, `grub.cfg`).
    pub source: String,
}

/// The plan handed to kexec.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BootPlan {
    /// Staged kernel.
    pub kernel: PathBuf,
    /// Staged initrd.
    pub initrd: Option<PathBuf>,
    /// Full command line.
    pub cmdline: String,
    /// Entry it came from.
    pub source: String,
}

/// Version-aware comparison (`6.10` > `6.9`).
pub fn version_cmp(a: &str, b: &str) -> Ordering {
    let (mut a, mut b) = (a.as_bytes(), b.as_bytes());
    loop {
        match (a.first(), b.first()) {
            (None, None) => return Ordering::Equal,
            (None, _) => return Ordering::Less,
            (_, None) => return Ordering::Greater,
            (Some(x), Some(y)) if x.is_ascii_digit() && y.is_ascii_digit() => {
                let la = a.iter().take_while(|c| c.is_ascii_digit()).count();
                let lb = b.iter().take_while(|c| c.is_ascii_digit()).count();
                let na = std::str::from_utf8(&a[..la])
                    .ok()
                    .and_then(|s| s.trim_start_matches('0').parse::<u128>().ok())
                    .unwrap_or(0);
                let nb = std::str::from_utf8(&b[..lb])
                    .ok()
                    .and_then(|s| s.trim_start_matches('0').parse::<u128>().ok())
                    .unwrap_or(0);
                match na.cmp(&nb) {
                    Ordering::Equal => {
                        a = &a[la..];
                        b = &b[lb..];
                    }
                    o => return o,
                }
            }
            (Some(x), Some(y)) => match x.cmp(y) {
                Ordering::Equal => {
                    a = &a[1..];
                    b = &b[1..];
                }
                o => return o,
            },
        }
    }
}

/// Parses one BLS entry file: (version, entry).
pub fn parse_bls(name: &str, text: &str) -> Option<(String, Entry)> {
    let mut e = Entry {
        kernel: String::new(),
        initrd: Vec::new(),
        options: String::new(),
        source: format!("bls:{name}"),
    };
    let mut version = name.trim_end_matches(".conf").to_string();
    for line in text.lines() {
        let line = line.trim();
        if line.starts_with('#') {
            continue;
        }
        let (k, v) = line.split_once(char::is_whitespace).unwrap_or((line, ""));
        let v = v.trim();
        match k {
            "linux" => e.kernel = v.to_string(),
            "initrd" => e.initrd.extend(v.split_whitespace().map(String::from)),
            "options" => {
                if !e.options.is_empty() {
                    e.options.push(' ');
                }
                e.options.push_str(v);
            }
            "version" => version = v.to_string(),
            _ => {}
        }
    }
    (!e.kernel.is_empty()).then_some((version, e))
}

fn tokens(line: &str) -> Vec<String> {
    // grub.cfg quoting: enough for linux/initrd lines ('...' and "...").
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut quote: Option<char> = None;
    let mut any = false;
    for c in line.chars() {
        match (quote, c) {
            (Some(q), c) if c == q => quote = None,
            (Some(_), c) => cur.push(c),
            (None, '\'' | '"') => {
                quote = Some(c);
                any = true;
            }
            (None, c) if c.is_whitespace() => {
                if !cur.is_empty() || any {
                    out.push(std::mem::take(&mut cur));
                }
                any = false;
            }
            (None, c) => cur.push(c),
        }
    }
    if !cur.is_empty() || any {
        out.push(cur);
    }
    out
}

/// Parses grub.cfg: the default top-level `menuentry` (numeric `set default`, else 0).
pub fn parse_grub_cfg(text: &str) -> Option<Entry> {
    let mut default = 0usize;
    let mut entries: Vec<Entry> = Vec::new();
    let mut depth = 0i32;
    let mut cur: Option<Entry> = None;
    let mut cur_depth = 0;
    for line in text.lines() {
        let t = line.trim();
        if depth == 0
            && let Some(v) = t.strip_prefix("set default=")
        {
            default = v
                .trim_matches(|c| c == '"' || c == '\'')
                .parse()
                .unwrap_or(0);
        }
        let toks = tokens(t);
        let first = toks.first().map(String::as_str).unwrap_or("");
        if first == "menuentry" && depth == 0 {
            cur = Some(Entry {
                kernel: String::new(),
                initrd: Vec::new(),
                options: String::new(),
                source: "grub.cfg".into(),
            });
            cur_depth = depth + 1;
        } else if let Some(e) = cur.as_mut() {
            match first {
                "linux" | "linuxefi" | "linux16" if toks.len() > 1 => {
                    e.kernel = toks[1].clone();
                    e.options = toks[2..].join(" ");
                }
                "initrd" | "initrdefi" | "initrd16" => e.initrd = toks[1..].to_vec(),
                _ => {}
            }
        }
        depth += t.matches('{').count() as i32 - t.matches('}').count() as i32;
        if depth < cur_depth
            && let Some(e) = cur.take()
        {
            entries.push(e);
        }
    }
    entries
        .into_iter()
        .filter(|e| !e.kernel.is_empty())
        .nth(default)
}

/// The kernel command line for the installed system.
pub fn cmdline(options: &str, partuuid: &str, extra: &[String]) -> String {
    let mut out = vec![format!("root=PARTUUID={partuuid}")];
    for t in options.split_whitespace() {
        if t.starts_with("root=") || t.starts_with("BOOT_IMAGE=") || t.starts_with('$') {
            continue;
        }
        out.push(t.to_string());
    }
    out.extend(extra.iter().cloned());
    out.join(" ")
}

/// Resolves an entry path: as given, then below /boot (BLS and grub paths are relative to
/// the partition holding them, which may be /boot).
fn resolve(root: &Root, p: &str) -> Option<RelPath> {
    let p = p.trim();
    // grub paths may carry a device prefix: (hd0,gpt2)/boot/vmlinuz
    let p = if p.starts_with('(') {
        p.split_once(')').map(|x| x.1).unwrap_or(p)
    } else {
        p
    };
    for cand in [p.to_string(), format!("boot/{}", p.trim_start_matches('/'))] {
        if let Ok(r) = RelPath::of(&cand)
            && root.exists(&r)
        {
            return Some(r);
        }
    }
    None
}

/// Finds the boot entry in the installed root.
pub fn find_entry(root: &Root) -> Result<Entry> {
    let entries_dir = RelPath::of("boot/loader/entries")?;
    let mut bls: Vec<(String, Entry)> = Vec::new();
    for name in root.list(&entries_dir)? {
        let n = String::from_utf8_lossy(&name).into_owned();
        if !n.ends_with(".conf") {
            continue;
        }
        let text = root.read(&entries_dir.join(&name))?;
        if let Some(x) = parse_bls(&n, &String::from_utf8_lossy(&text)) {
            bls.push(x);
        }
    }
    bls.sort_by(|a, b| version_cmp(&b.0, &a.0));
    if let Some((_, e)) = bls.into_iter().next() {
        return Ok(e);
    }
    for (k, i) in [
        ("boot/vmlinuz", "boot/initrd.img"),
        ("vmlinuz", "initrd.img"),
    ] {
        if root.exists(&RelPath::of(k)?) {
            let initrd = if root.exists(&RelPath::of(i)?) {
                vec![format!("/{i}")]
            } else {
                Vec::new()
            };
            return Ok(Entry {
                kernel: format!("/{k}"),
                initrd,
                options: "ro".into(),
                source: "links".into(),
            });
        }
    }
    for cfg in ["boot/grub/grub.cfg", "boot/grub2/grub.cfg"] {
        let r = RelPath::of(cfg)?;
        if root.exists(&r) {
            let text = root.read(&r)?;
            if let Some(e) = parse_grub_cfg(&String::from_utf8_lossy(&text)) {
                return Ok(e);
            }
        }
    }
    bail!(
        "no kernel found: no BLS entry in /boot/loader/entries, no /boot/vmlinuz or /vmlinuz link, no usable menuentry in grub.cfg"
    )
}

/// Phase 8: finds the entry and stages kernel and initrd under `stage`.
pub fn boot_plan(
    root: &Root,
    partuuid: &str,
    extra: &[String],
    stage: &Path,
    progress: Progress,
) -> Result<BootPlan> {
    let inner = || -> Result<BootPlan> {
        let e = find_entry(root)?;
        let k = resolve(root, &e.kernel)
            .with_context(|| format!("kernel {} of {} not found", e.kernel, e.source))?;
        std::fs::create_dir_all(stage).with_context(|| format!("creating {}", stage.display()))?;
        let kernel = stage.join("vmlinuz");
        std::fs::write(&kernel, root.read(&k)?)
            .with_context(|| format!("staging {}", kernel.display()))?;
        let initrd = if e.initrd.is_empty() {
            None
        } else {
            let mut all = Vec::new();
            for i in &e.initrd {
                let r = resolve(root, i)
                    .with_context(|| format!("initrd {i} of {} not found", e.source))?;
                all.extend(root.read(&r)?);
            }
            let p = stage.join("initrd");
            std::fs::write(&p, all).with_context(|| format!("staging {}", p.display()))?;
            Some(p)
        };
        Ok(BootPlan {
            kernel,
            initrd,
            cmdline: cmdline(&e.options, partuuid, extra),
            source: e.source,
        })
    };
    let plan =
        inner().with_context(|| format!("finding what to boot in {}", root.path().display()))?;
    progress(Event::msg(
        Phase::BootPlan,
        format!(
            "kexec {} ({}) with: {}",
            plan.kernel.display(),
            plan.source,
            crate::cmdline::redact(&plan.cmdline)
        ),
    ));
    Ok(plan)
}

#[cfg(test)]
mod tests {
    use super::super::events::no_progress;
    use super::*;

    const GRUB: &str = r#"
set default="1"
if [ x"${feature_menuentry_id}" = xy ]; then
  menuentry_id_option="--id"
fi
menuentry 'Debian GNU/Linux' --class debian $menuentry_id_option 'gnulinux-simple-x' {
	insmod ext2
	linux	/boot/vmlinuz-6.1.0-18-amd64 root=UUID=aaaa ro quiet
	initrd	/boot/initrd.img-6.1.0-18-amd64
}
submenu 'Advanced options for Debian GNU/Linux' $menuentry_id_option 'gnulinux-advanced-x' {
	menuentry 'Debian GNU/Linux, with Linux 6.1.0-17-amd64' {
		linux	/boot/vmlinuz-6.1.0-17-amd64 root=UUID=aaaa ro single
	}
}
menuentry 'Second' {
	linux	(hd0,gpt2)/boot/vmlinuz-2 root=/dev/sda2 ro console=ttyS0,115200 "quoted arg"
	initrd	/boot/initrd-2
}
"#;

    #[test]
    fn grub_default_entry() {
        let e = parse_grub_cfg(GRUB).unwrap();
        assert_eq!(e.kernel, "(hd0,gpt2)/boot/vmlinuz-2");
        assert_eq!(e.initrd, vec!["/boot/initrd-2".to_string()]);
        assert_eq!(
            e.options,
            "root=/dev/sda2 ro console=ttyS0,115200 quoted arg"
        );
        let first = parse_grub_cfg(&GRUB.replace("set default=\"1\"", "")).unwrap();
        assert_eq!(first.kernel, "/boot/vmlinuz-6.1.0-18-amd64");
        assert_eq!(first.options, "root=UUID=aaaa ro quiet");
    }

    #[test]
    fn bls_and_versions() {
        assert_eq!(version_cmp("6.10.1", "6.9.12"), Ordering::Greater);
        assert_eq!(
            version_cmp("5.14.0-362.el9", "5.14.0-70.el9"),
            Ordering::Greater
        );
        let (v, e) = parse_bls(
            "abc-6.5.conf",
            "title Fedora\nversion 6.5.6-300.fc39.x86_64\nlinux /vmlinuz-6.5.6\ninitrd /initramfs-6.5.6.img\noptions root=UUID=x ro rhgb $tuned_params\n",
        )
        .unwrap();
        assert_eq!(v, "6.5.6-300.fc39.x86_64");
        assert_eq!(e.kernel, "/vmlinuz-6.5.6");
        assert_eq!(
            cmdline(&e.options, "p-u", &["console=ttyS0".into()]),
            "root=PARTUUID=p-u ro rhgb console=ttyS0"
        );
        assert!(parse_bls("x.conf", "title nothing\n").is_none());
    }

    fn tree(files: &[(&str, &str)], links: &[(&str, &str)]) -> tempfile::TempDir {
        let t = tempfile::tempdir().unwrap();
        for (p, c) in files {
            std::fs::create_dir_all(t.path().join(p).parent().unwrap()).unwrap();
            std::fs::write(t.path().join(p), c).unwrap();
        }
        for (p, target) in links {
            std::fs::create_dir_all(t.path().join(p).parent().unwrap()).unwrap();
            std::os::unix::fs::symlink(target, t.path().join(p)).unwrap();
        }
        t
    }

    #[test]
    fn sources_in_order() {
        let stage = tempfile::tempdir().unwrap();
        // BLS wins, newest version, paths relative to /boot.
        let t = tree(
            &[
                (
                    "boot/loader/entries/a.conf",
                    "version 6.9\nlinux /vmlinuz-6.9\noptions ro\n",
                ),
                (
                    "boot/loader/entries/b.conf",
                    "version 6.10\nlinux /vmlinuz-6.10\ninitrd /initrd-6.10\noptions root=UUID=z ro\n",
                ),
                ("boot/vmlinuz-6.10", "K610"),
                ("boot/initrd-6.10", "I610"),
                ("boot/vmlinuz", "LINK"),
            ],
            &[],
        );
        let p = boot_plan(
            &Root::open(t.path()).unwrap(),
            "u1",
            &[],
            stage.path(),
            &no_progress,
        )
        .unwrap();
        assert_eq!(p.source, "bls:b.conf");
        assert_eq!(std::fs::read(&p.kernel).unwrap(), b"K610");
        assert_eq!(std::fs::read(p.initrd.unwrap()).unwrap(), b"I610");
        assert_eq!(p.cmdline, "root=PARTUUID=u1 ro");
        // Debian links at / pointing into /boot (absolute targets resolve inside the root).
        let t = tree(
            &[("boot/vmlinuz-6.1", "K61"), ("boot/initrd.img-6.1", "I61")],
            &[
                ("vmlinuz", "/boot/vmlinuz-6.1"),
                ("initrd.img", "boot/initrd.img-6.1"),
            ],
        );
        let p = boot_plan(
            &Root::open(t.path()).unwrap(),
            "u2",
            &["quiet".into()],
            stage.path(),
            &no_progress,
        )
        .unwrap();
        assert_eq!(
            (p.source.as_str(), p.cmdline.as_str()),
            ("links", "root=PARTUUID=u2 ro quiet")
        );
        assert_eq!(std::fs::read(&p.kernel).unwrap(), b"K61");
        assert_eq!(std::fs::read(p.initrd.unwrap()).unwrap(), b"I61");
        // grub.cfg.
        let t = tree(
            &[
                ("boot/grub/grub.cfg", GRUB),
                ("boot/vmlinuz-2", "K2"),
                ("boot/initrd-2", "I2"),
            ],
            &[],
        );
        let p = boot_plan(
            &Root::open(t.path()).unwrap(),
            "u3",
            &[],
            stage.path(),
            &no_progress,
        )
        .unwrap();
        assert_eq!(p.source, "grub.cfg");
        assert_eq!(
            p.cmdline,
            "root=PARTUUID=u3 ro console=ttyS0,115200 quoted arg"
        );
        assert_eq!(std::fs::read(&p.kernel).unwrap(), b"K2");
        // Nothing.
        let t = tree(&[("etc/hostname", "x")], &[]);
        let e = boot_plan(
            &Root::open(t.path()).unwrap(),
            "u",
            &[],
            stage.path(),
            &no_progress,
        )
        .unwrap_err();
        assert!(format!("{e:#}").contains("no kernel found"), "{e:#}");
    }
}
