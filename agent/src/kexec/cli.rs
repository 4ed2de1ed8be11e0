//! The kexec commands of `kiln-agent`:
//! `kexec` (any kernel), `boot-installed` (the installed disk, from the installer) and
//! `kexec-installer` (back into the installer, from an installed system).

use std::path::PathBuf;

use anyhow::{Context, Result, bail};

use super::installer::{CONFIG, InstallerSource};
use super::{Image, Report, boot, load, redact, unload};
use crate::events::Event;

/// Usage of the three commands.
pub const USAGE: &str = "\
usage: kiln-agent kexec --kernel FILE [--initrd FILE] --cmdline 'ARGS' [--load-only]
       kiln-agent boot-installed [--disk HINTS] [--dry-run]
       kiln-agent kexec-installer --installer FILE|URL [--sha256 HEX] [--append 'ARGS']
                                  [--config FILE] [--dry-run]
kexec            load FILE with kexec_file_load and boot it (--load-only: load, do not boot)
boot-installed   find the installed system on the disks (HINTS as for provision), boot it
kexec-installer  boot the Kiln installer from a file or an http(s) URL (sha256-checked with
                 --sha256; plain http needs it) with the control plane of /etc/kiln/agent.json";

fn print(e: Event) {
    eprintln!("{e}");
}

const PRINT: Report = &print;

/// Reads `--flag value` pairs and bare flags; `bare` lists the flags without a value.
fn options(args: &[String], bare: &[&str]) -> Result<Vec<(String, Option<String>)>> {
    let mut out = Vec::new();
    let mut it = args.iter();
    while let Some(k) = it.next() {
        if k == "-h" || k == "--help" {
            bail!("{USAGE}");
        }
        if !k.starts_with("--") {
            bail!("unexpected argument {k:?}\n{USAGE}");
        }
        if bare.contains(&k.as_str()) {
            out.push((k.clone(), None));
        } else {
            let v = it
                .next()
                .with_context(|| format!("{k} needs a value\n{USAGE}"))?;
            out.push((k.clone(), Some(v.clone())));
        }
    }
    Ok(out)
}

/// What a command line asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// `kexec`.
    Kexec { image: Image, load_only: bool },
    /// `boot-installed`.
    BootInstalled { disk: Option<String>, dry_run: bool },
    /// `kexec-installer`.
    Installer {
        source: InstallerSource,
        append: Vec<String>,
        config: PathBuf,
        dry_run: bool,
    },
}

/// Parses `kiln-agent <command> ARGS...` for the three commands.
pub fn parse(command: &str, args: &[String]) -> Result<Command> {
    let (bare, known): (&[&str], &[&str]) = match command {
        "kexec" => (&["--load-only"], &["--kernel", "--initrd", "--cmdline"]),
        "boot-installed" => (&["--dry-run"], &["--disk"]),
        "kexec-installer" => (
            &["--dry-run"],
            &["--installer", "--sha256", "--append", "--config"],
        ),
        other => bail!("unknown command {other:?}\n{USAGE}"),
    };
    let opts = options(args, bare)?;
    for (k, _) in &opts {
        if !bare.contains(&k.as_str()) && !known.contains(&k.as_str()) {
            bail!("kiln-agent {command}: unknown option {k}\n{USAGE}");
        }
    }
    let get = |k: &str| {
        opts.iter()
            .rev()
            .find(|(o, _)| o == k)
            .and_then(|(_, v)| v.clone())
    };
    let flag = |k: &str| opts.iter().any(|(o, _)| o == k);
    Ok(match command {
        "kexec" => Command::Kexec {
            image: Image {
                kernel: get("--kernel")
                    .with_context(|| format!("kiln-agent kexec needs --kernel FILE\n{USAGE}"))?
                    .into(),
                initrd: get("--initrd").map(PathBuf::from),
                cmdline: get("--cmdline").with_context(|| {
                    format!("kiln-agent kexec needs --cmdline 'ARGS' (may be '')\n{USAGE}")
                })?,
            },
            load_only: flag("--load-only"),
        },
        "boot-installed" => Command::BootInstalled {
            disk: get("--disk"),
            dry_run: flag("--dry-run"),
        },
        _ => Command::Installer {
            source: InstallerSource {
                location: get("--installer").with_context(|| {
                    format!("kiln-agent kexec-installer needs --installer FILE|URL\n{USAGE}")
                })?,
                sha256: get("--sha256"),
            },
            append: get("--append")
                .unwrap_or_default()
                .split_whitespace()
                .map(String::from)
                .collect(),
            config: get("--config").unwrap_or_else(|| CONFIG.into()).into(),
            dry_run: flag("--dry-run"),
        },
    })
}

fn show(img: &Image) {
    eprintln!(
        "would kexec {} ({}) with: {}",
        img.kernel.display(),
        img.initrd
            .as_ref()
            .map_or("no initrd".to_string(), |i| format!(
                "initrd {}",
                i.display()
            )),
        redact(&img.cmdline)
    );
}

/// Runs `kiln-agent kexec|boot-installed|kexec-installer ARGS...`.
pub fn cli(command: &str, args: &[String]) -> Result<()> {
    match parse(command, args)? {
        Command::Kexec { image, load_only } => {
            if load_only {
                load(&image)?;
                eprintln!(
                    "loaded {} (boot it with `kiln-agent kexec ...` or reboot(LINUX_REBOOT_CMD_KEXEC))",
                    image.kernel.display()
                );
                return Ok(());
            }
            boot(&image, PRINT).map(|never| match never {})
        }
        Command::BootInstalled { disk, dry_run } => {
            if dry_run {
                let plan = super::installed::plan_installed(
                    disk.as_deref(),
                    std::path::Path::new(super::installed::STAGE),
                    PRINT,
                )?;
                show(&Image::from(&plan));
                return Ok(());
            }
            super::installed::boot_installed(disk.as_deref(), PRINT).map(|never| match never {})
        }
        Command::Installer {
            source,
            append,
            config,
            dry_run,
        } => {
            if dry_run {
                let img = super::installer::plan(&source, &config, &append, PRINT)?;
                show(&img);
                return Ok(());
            }
            // A kernel loaded by someone else must not be booted by mistake.
            let _ = unload();
            super::installer::to_installer(&source, &config, &append, PRINT)
                .map(|never| match never {})
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(v: &[&str]) -> Vec<String> {
        v.iter().map(|x| x.to_string()).collect()
    }

    #[test]
    fn commands() {
        assert_eq!(
            parse(
                "kexec",
                &s(&["--kernel", "/k", "--cmdline", "ro quiet", "--load-only"])
            )
            .unwrap(),
            Command::Kexec {
                image: Image {
                    kernel: "/k".into(),
                    initrd: None,
                    cmdline: "ro quiet".into()
                },
                load_only: true
            }
        );
        assert_eq!(
            parse("boot-installed", &s(&["--disk", "serial=A"])).unwrap(),
            Command::BootInstalled {
                disk: Some("serial=A".into()),
                dry_run: false
            }
        );
        assert_eq!(
            parse(
                "kexec-installer",
                &s(&[
                    "--installer",
                    "https://x/v",
                    "--append",
                    "kiln.debug  kiln.ui=plain"
                ])
            )
            .unwrap(),
            Command::Installer {
                source: InstallerSource {
                    location: "https://x/v".into(),
                    sha256: None
                },
                append: s(&["kiln.debug", "kiln.ui=plain"]),
                config: CONFIG.into(),
                dry_run: false
            }
        );
        for (cmd, args, want) in [
            ("kexec", s(&["--cmdline", "x"]), "needs --kernel"),
            ("kexec", s(&["--kernel", "k"]), "needs --cmdline"),
            ("kexec", s(&["--kernel"]), "--kernel needs a value"),
            ("kexec", s(&["--disk", "x"]), "unknown option --disk"),
            ("boot-installed", s(&["x"]), "unexpected argument"),
            ("kexec-installer", s(&[]), "needs --installer"),
        ] {
            let e = parse(cmd, &args).unwrap_err().to_string();
            assert!(e.contains(want), "{cmd} {args:?}: {e}");
        }
    }
}
