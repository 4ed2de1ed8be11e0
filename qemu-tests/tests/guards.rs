//! Guards on the installer's budgets, failing the VM tier when a change exceeds them:
//! `out/kiln-installer.vmlinuz` (kernel + embedded initramfs) stays within 16 MB, and the
//! agent's banner comes within 1.5 s of kernel start under TCG. The banner states the
//! time since kernel start itself (CLOCK_BOOTTIME), so QEMU's and the firmware's start-up
//! do not count. The banner guard takes the best of three boots: a regression shows on
//! every boot, a busy CI machine only on some.

use anyhow::{Context, Result, ensure};
use kiln_qemu_tests::{Boot, GuestBuilder, artifacts};
use std::time::Duration;

const MAX_INSTALLER_BYTES: u64 = 16_000_000;
const MAX_BANNER_SECS: f64 = 1.5;
const BOOTS: usize = 3;
const BOOT: Duration = Duration::from_secs(300);

/// The seconds a banner line states: `kiln-agent V started 1.234 s after kernel start`.
fn banner_secs(line: &str) -> Option<f64> {
    let rest = line.split(" started ").nth(1)?;
    rest.strip_suffix(" s after kernel start")?
        .trim()
        .parse()
        .ok()
}

#[test]
fn banner_secs_parses_the_banner_line() {
    let cases = [
        (
            "kiln-agent 0.1.0 started 1.200 s after kernel start",
            Some(1.2),
        ),
        (
            "kiln-agent 0.1.0 started 0.875 s after kernel start",
            Some(0.875),
        ),
        ("kiln-agent 0.1.0 started soon", None),
        ("eth0: address 10.0.2.15/24", None),
    ];
    for (line, want) in cases {
        assert_eq!(banner_secs(line), want, "{line}");
    }
}

#[test]
#[ignore = "vm: needs the built installer (scripts/test vm)"]
fn vm_guard_installer_size() -> Result<()> {
    let path = artifacts::installer()?;
    let size = std::fs::metadata(&path)
        .with_context(|| format!("reading {}", path.display()))?
        .len();
    eprintln!("GUARD installer size: {size} bytes (limit {MAX_INSTALLER_BYTES})");
    ensure!(
        size <= MAX_INSTALLER_BYTES,
        "{} is {size} bytes, over the {MAX_INSTALLER_BYTES}-byte budget: find what grew \
         (kernel-config/ fragments, initramfs/manifest, the agent's dependencies)",
        path.display()
    );
    Ok(())
}

#[test]
#[ignore = "vm: boots QEMU (scripts/test vm)"]
fn vm_guard_banner_within_budget() -> Result<()> {
    let mut seen = Vec::new();
    for i in 0..BOOTS {
        let boot = Boot::Kernel {
            kernel: artifacts::installer()?,
            initrd: None,
            append: "console=ttyS0,115200 panic=-1 kiln.poweroff=1".into(),
        };
        let mut g = GuestBuilder::new(&format!("guard-banner-{i}"), boot).start()?;
        let line = g.expect("kiln-agent ", BOOT)?;
        let secs = banner_secs(&line).with_context(|| format!("no time in banner {line:?}"))?;
        seen.push(secs);
        if secs <= MAX_BANNER_SECS {
            eprintln!("GUARD banner: {secs:.3} s after kernel start (boots so far: {seen:?})");
            return Ok(());
        }
    }
    anyhow::bail!(
        "the banner came {seen:?} s after kernel start in {BOOTS} boots, over the \
         {MAX_BANNER_SECS} s budget: something before the banner got slower (kernel \
         initcalls, initramfs size, the agent's start-up)"
    )
}
