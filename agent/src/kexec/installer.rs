//! Back into the installer from an installed system (re-provisioning,
//! `kiln-agent kexec-installer`). The installed agent is not PID 1 there.
//!
//! 1. The installer vmlinuz (kernel with the initramfs inside) comes from a file or an
//!    http(s) URL ([`fetch`]), streamed to [`STAGE`] through a sha256 hasher; with
//!    `sha256` given a mismatch is an error naming both digests. Plain `http://` is only
//!    accepted with a sha256 (nothing else would vouch for the bytes).
//! 2. The command line ([`installer_cmdline`]) carries the running system's `console=`
//!    parameters and, from the installed agent's config (`/etc/kiln/agent.json`), the
//!    control plane: `kiln.url=`, `kiln.ca=sha256:<pin>`, `kiln.machine=<id>` and
//!    `kiln.credential=<secret>`, so the installer reconnects as the same machine without
//!    approval. The credential is redacted in every message, and `quiet` keeps the
//!    kernel from printing its command line on the consoles (it stays in the installer's
//!    /proc/cmdline and dmesg, readable by root only: the installer has no other users).
//! 3. [`super::boot`]: `systemctl kexec` under systemd, else sync, unmount or remount
//!    read-only, `reboot(LINUX_REBOOT_CMD_KEXEC)`.

use std::convert::Infallible;
use std::fs::File;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use kiln_oci::digest::Hasher;
use kiln_oci::http::{HttpClientBuilder, Trust};

use super::{Image, Report, boot, word};
use crate::events::Event;
use crate::provision::inject::AgentConfig;

/// The installed agent's config.
pub const CONFIG: &str = "/etc/kiln/agent.json";
/// Where a fetched installer is staged.
pub const STAGE: &str = "/run/kiln/installer.vmlinuz";

/// Where the installer comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InstallerSource {
    /// A file path or an `https://` (or, with `sha256`, `http://`) URL.
    pub location: String,
    /// Expected sha256 (hex, optionally `sha256:`-prefixed).
    pub sha256: Option<String>,
}

/// Normalises a sha256 given by a person: lowercase hex, `sha256:` prefix dropped.
pub fn parse_sha256(s: &str) -> Result<String> {
    let hex = s
        .trim()
        .strip_prefix("sha256:")
        .unwrap_or(s.trim())
        .to_ascii_lowercase();
    if hex.len() != 64 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        bail!("{s:?} is not a sha256 digest (64 hex digits, optionally sha256:-prefixed)");
    }
    Ok(hex)
}

/// Copies `r` to `out` while hashing; returns (bytes, hex sha256).
fn copy_hashed(r: &mut dyn Read, out: &mut dyn Write) -> std::io::Result<(u64, String)> {
    let mut h = Hasher::default();
    let mut buf = vec![0u8; 1 << 20];
    let mut n = 0u64;
    loop {
        let k = match r.read(&mut buf) {
            Ok(0) => break,
            Ok(k) => k,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        h.update(&buf[..k]);
        out.write_all(&buf[..k])?;
        n += k as u64;
    }
    Ok((n, h.digest().hex().to_owned()))
}

fn verify(what: &str, want: Option<&str>, got: &str) -> Result<()> {
    if let Some(w) = want
        && w != got
    {
        bail!("{what}: sha256 mismatch: expected {w}, got {got}; not booting it");
    }
    Ok(())
}

fn http_agent() -> Result<ureq::Agent> {
    Ok(
        HttpClientBuilder::new(&Trust::WebPki { extra_ca: None }, "the installer download")?
            .connect_timeout(Duration::from_secs(15))
            .read_timeout(Duration::from_secs(60))
            .redirects(5, false)
            .user_agent(concat!("kiln-agent/", env!("CARGO_PKG_VERSION")))
            .build(),
    )
}

/// Makes the installer available as a regular file (what `kexec_file_load` reads) and
/// checks its sha256 when one is given. URLs and non-regular files (a block device)
/// are copied to `stage`; a regular file is used where it is.
pub fn fetch(src: &InstallerSource, stage: &Path, report: Report) -> Result<PathBuf> {
    let want = src.sha256.as_deref().map(parse_sha256).transpose()?;
    let loc = src.location.as_str();
    let is_url = loc.starts_with("https://") || loc.starts_with("http://");
    if loc.starts_with("http://") && want.is_none() {
        bail!("{loc}: a plain http:// installer needs --sha256 (or use https://)");
    }
    let open_stage = || -> Result<File> {
        if let Some(d) = stage.parent() {
            std::fs::create_dir_all(d).with_context(|| format!("creating {}", d.display()))?;
        }
        File::create(stage).with_context(|| format!("creating {}", stage.display()))
    };
    if is_url {
        let resp = http_agent()?
            .get(loc)
            .call()
            .with_context(|| format!("downloading the installer from {loc}"))?;
        let mut out = open_stage()?;
        let (n, got) = copy_hashed(&mut resp.into_reader(), &mut out).with_context(|| {
            format!(
                "downloading the installer from {loc} to {}",
                stage.display()
            )
        })?;
        out.sync_all()?;
        verify(loc, want.as_deref(), &got)?;
        report(Event::info(format!(
            "installer {loc}: {n} bytes, sha256 {got}{}",
            if want.is_some() {
                " (verified)"
            } else {
                " (not verified: no --sha256)"
            }
        )));
        return Ok(stage.to_path_buf());
    }
    let path = PathBuf::from(loc);
    let meta = std::fs::metadata(&path)
        .with_context(|| format!("installer {}: cannot read it", path.display()))?;
    let mut f = File::open(&path).with_context(|| format!("opening {}", path.display()))?;
    let (used, n, got) = if meta.is_file() {
        let (n, got) = copy_hashed(&mut f, &mut std::io::sink())
            .with_context(|| format!("reading {}", path.display()))?;
        (path.clone(), n, got)
    } else {
        let mut out = open_stage()?;
        let (n, got) = copy_hashed(&mut f, &mut out)
            .with_context(|| format!("copying {} to {}", path.display(), stage.display()))?;
        (stage.to_path_buf(), n, got)
    };
    verify(&path.display().to_string(), want.as_deref(), &got)?;
    report(Event::info(format!(
        "installer {}: {n} bytes, sha256 {got}{}",
        path.display(),
        if want.is_some() { " (verified)" } else { "" }
    )));
    Ok(used)
}

/// The installer's command line: the running system's consoles, the control-plane
/// parameters from `cfg`, then `append`.
pub fn installer_cmdline(cfg: &AgentConfig, running: &str, append: &[String]) -> String {
    let mut out: Vec<String> = crate::cmdline::split(running)
        .iter()
        .filter(|p| p.key == "console")
        .map(|p| word(&p.key, p.value.as_deref()))
        .collect();
    // The kernel prints its command line at boot (KERN_INFO, KERN_NOTICE): `quiet` keeps
    // the credential off the consoles (serial logs, BMC SOL captures).
    out.push("quiet".into());
    out.push(word("kiln.url", Some(&cfg.url)));
    if let Some(pin) = &cfg.ca_pin {
        let hex = pin
            .strip_prefix("sha256:")
            .unwrap_or(pin)
            .to_ascii_lowercase();
        out.push(format!("kiln.ca=sha256:{hex}"));
    }
    out.push(word("kiln.machine", Some(&cfg.machine_id)));
    out.push(word("kiln.credential", Some(&cfg.credential)));
    // The disk hints and lab registries the machine was provisioned with still apply.
    if let Some(d) = &cfg.disk {
        out.push(word("kiln.disk", Some(d)));
    }
    if !cfg.insecure_registries.is_empty() {
        out.push(word(
            "kiln.insecure-registry",
            Some(&cfg.insecure_registries.join(",")),
        ));
    }
    out.extend(append.iter().cloned());
    out.join(" ")
}

/// Reads the installed agent's config.
pub fn read_config(path: &Path) -> Result<AgentConfig> {
    let text = std::fs::read(path).with_context(|| {
        format!(
            "reading {} (the installed agent's config, written at provisioning)",
            path.display()
        )
    })?;
    let cfg: AgentConfig =
        serde_json::from_slice(&text).with_context(|| format!("parsing {}", path.display()))?;
    if cfg.url.is_empty() || cfg.machine_id.is_empty() || cfg.credential.is_empty() {
        bail!(
            "{} lacks the control-plane URL, machine id or credential: the installer could not reconnect",
            path.display()
        );
    }
    if cfg.credential.chars().any(char::is_whitespace) {
        bail!(
            "the machine credential in {} contains whitespace: it cannot go on a kernel command line",
            path.display()
        );
    }
    Ok(cfg)
}

/// Plans the way back: the installer as a file plus its command line.
pub fn plan(
    src: &InstallerSource,
    config: &Path,
    append: &[String],
    report: Report,
) -> Result<Image> {
    let cfg = read_config(config)?;
    let kernel = fetch(src, Path::new(STAGE), report)?;
    let running = std::fs::read_to_string("/proc/cmdline").unwrap_or_default();
    Ok(Image {
        kernel,
        initrd: None,
        cmdline: installer_cmdline(&cfg, &running, append),
    })
}

/// Boots the installer from `src` with the control-plane parameters of `config`.
/// Returns only on failure.
pub fn to_installer(
    src: &InstallerSource,
    config: &Path,
    append: &[String],
    report: Report,
) -> Result<Infallible> {
    let img = plan(src, config, append, report)?;
    boot(&img, report)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg() -> AgentConfig {
        AgentConfig {
            url: "https://kiln.lab:8443".into(),
            ca_pin: Some("AB".repeat(32)),
            machine_id: "m-7".into(),
            credential: "CRED-secret-1".into(),
            ..Default::default()
        }
    }

    #[test]
    fn cmdline_round_trips_through_the_installer_parser() {
        let line = installer_cmdline(
            &cfg(),
            "BOOT_IMAGE=/boot/vmlinuz root=PARTUUID=x ro console=tty0 console=ttyS0,115200",
            &["kiln.debug".into()],
        );
        assert_eq!(
            super::super::redact(&line),
            format!(
                "console=tty0 console=ttyS0,115200 quiet kiln.url=https://kiln.lab:8443 kiln.ca=sha256:{} \
                 kiln.machine=m-7 kiln.credential=<redacted> kiln.debug",
                "ab".repeat(32)
            )
        );
        let parsed = crate::cmdline::Settings::parse(&line);
        assert!(parsed.warnings.is_empty(), "{:?}", parsed.warnings);
        let s = parsed.settings;
        assert_eq!(s.url.as_deref(), Some("https://kiln.lab:8443"));
        assert_eq!(s.ca_pin, Some(format!("sha256:{}", "ab".repeat(32))));
        assert_eq!(s.machine_id.as_deref(), Some("m-7"));
        assert_eq!(
            s.credential.as_ref().map(crate::cmdline::Secret::expose),
            Some("CRED-secret-1")
        );
        assert!(s.debug);
        // No root= of the installed system leaks into the installer's line.
        assert!(!line.contains("root="), "{line}");
    }

    #[test]
    fn config_checks() {
        let t = tempfile::tempdir().unwrap();
        let p = t.path().join("agent.json");
        let cases: &[(AgentConfig, Option<&str>)] = &[
            (cfg(), None),
            (
                AgentConfig {
                    credential: String::new(),
                    ..cfg()
                },
                Some("lacks"),
            ),
            (
                AgentConfig {
                    credential: "a b".into(),
                    ..cfg()
                },
                Some("whitespace"),
            ),
        ];
        for (c, want) in cases {
            std::fs::write(&p, serde_json::to_vec(c).unwrap()).unwrap();
            match (read_config(&p), want) {
                (Ok(got), None) => assert_eq!(&got, c),
                (Err(e), Some(w)) => {
                    let m = format!("{e:#}");
                    assert!(m.contains(w) && !m.contains("CRED-secret"), "{m}");
                }
                (r, w) => panic!("{w:?}: ok={}", r.is_ok()),
            }
        }
        let e = read_config(&t.path().join("none.json")).unwrap_err();
        assert!(format!("{e:#}").contains("none.json"));
    }

    #[test]
    fn fetch_files_and_digests() {
        let t = tempfile::tempdir().unwrap();
        let k = t.path().join("vmlinuz");
        std::fs::write(&k, b"kernel bytes").unwrap();
        let digest = kiln_oci::digest::Digest::of(b"kernel bytes")
            .hex()
            .to_owned();
        let stage = t.path().join("stage/installer");
        let src = |sha: Option<String>| InstallerSource {
            location: k.display().to_string(),
            sha256: sha,
        };
        let quiet = |_: Event| {};
        assert_eq!(fetch(&src(None), &stage, &quiet).unwrap(), k);
        assert_eq!(
            fetch(
                &src(Some(format!("sha256:{}", digest.to_uppercase()))),
                &stage,
                &quiet
            )
            .unwrap(),
            k
        );
        let e = fetch(&src(Some("0".repeat(64))), &stage, &quiet).unwrap_err();
        assert!(format!("{e:#}").contains("sha256 mismatch"), "{e:#}");
        let e = fetch(&src(Some("abc".into())), &stage, &quiet).unwrap_err();
        assert!(format!("{e:#}").contains("not a sha256"), "{e:#}");
        let e = fetch(
            &InstallerSource {
                location: "http://10.0.0.1/vmlinuz".into(),
                sha256: None,
            },
            &stage,
            &quiet,
        )
        .unwrap_err();
        assert!(format!("{e:#}").contains("needs --sha256"), "{e:#}");
        assert!(!stage.exists());
    }
}
