//! Boot tests: every way the installer boots reaches the agent as PID 1 with its mounts,
//! shows on a display when there is one, and powers off cleanly on request.
//!
//! Run with `scripts/test vm` (builds the artifacts first). Each prints the time from
//! QEMU start to the agent's banner.

use anyhow::{Result, ensure};
use kiln_qemu_tests::{Boot, Firmware, Guest, GuestBuilder, Media, artifacts, ppm};
use std::time::Duration;

const BOOT: Duration = Duration::from_secs(300);
const STEP: Duration = Duration::from_secs(60);
const VERSION: &str = env!("CARGO_PKG_VERSION");

/// What every boot must show: banner first, PID 1, mounts, display or headless.
fn check_started(g: &mut Guest, name: &str, efi: bool, display: bool) -> Result<()> {
    check_started_with(
        g,
        name,
        efi,
        display.then_some(if efi { "framebuffer" } else { "VGA text" }),
    )
}

/// `video`: what the agent must report drawing the display with, or `None` for headless.
fn check_started_with(g: &mut Guest, name: &str, efi: bool, video: Option<&str>) -> Result<()> {
    let banner = g.expect("kiln-agent ", BOOT)?;
    let took = g.elapsed();
    ensure!(
        banner.starts_with(&format!("kiln-agent {VERSION} started ")),
        "banner line {banner:?} does not begin with kiln-agent {VERSION}"
    );
    eprintln!(
        "TIMING {name}: qemu start -> banner {:.1} s ({banner})",
        took.as_secs_f64()
    );
    let init = g.expect("running as pid ", STEP)?;
    ensure!(
        init.contains("running as pid 1;"),
        "agent is not PID 1: {init}"
    );
    let want = video.map_or("display: no".to_string(), |v| format!("display: yes ({v}"));
    ensure!(init.contains(&want), "expected {want:?}: {init}");
    let mounts = g.expect("mounted:", STEP)?;
    let mut need = vec![
        "/proc(proc)",
        "/sys(sysfs)",
        "/dev(devtmpfs)",
        "/dev/pts(devpts)",
        "/run(tmpfs)",
        "/tmp(tmpfs)",
        "/sys/kernel/security(securityfs)",
    ];
    if efi {
        need.push("/sys/firmware/efi/efivars(efivarfs)");
    }
    for m in need {
        ensure!(mounts.contains(m), "{m} not mounted: {mounts}");
    }
    ensure!(
        !g.serial_text().contains("Kernel panic"),
        "kernel panic on the console"
    );
    Ok(())
}

fn check_poweroff(g: &mut Guest, reason: &str) -> Result<()> {
    g.expect(&format!("poweroff: {reason}"), STEP)?;
    let status = g.wait_exit(STEP)?;
    ensure!(
        status.success(),
        "QEMU exited with {status} after power-off"
    );
    Ok(())
}

fn direct(name: &str, boot: Boot) -> Result<()> {
    let mut g = GuestBuilder::new(name, boot).start()?;
    check_started(&mut g, name, false, false)?;
    check_poweroff(&mut g, "kiln.poweroff is set")
}

const APPEND: &str = "console=ttyS0,115200 panic=-1 kiln.poweroff=1";

#[test]
#[ignore = "vm: boots QEMU (scripts/test vm)"]
fn vm_boot_bare_kernel_with_initrd() -> Result<()> {
    let boot = Boot::Kernel {
        kernel: artifacts::bare_kernel()?,
        initrd: Some(artifacts::initramfs()?),
        append: APPEND.into(),
    };
    direct("bare-kernel-initrd", boot)
}

#[test]
#[ignore = "vm: boots QEMU (scripts/test vm)"]
fn vm_boot_embedded_vmlinuz() -> Result<()> {
    let boot = Boot::Kernel {
        kernel: artifacts::installer()?,
        initrd: None,
        append: APPEND.into(),
    };
    direct("embedded-vmlinuz", boot)
}

/// Boots the test ISO; with a display, checks the screen shows something; then powers
/// off by typing `poweroff` on the serial console.
fn iso(name: &str, firmware: Firmware, media: Media, display: bool) -> Result<()> {
    let path = artifacts::test_iso("panic=-1")?;
    let mut g = GuestBuilder::new(name, Boot::Iso { path, media })
        .firmware(firmware)
        .display(display)
        .start()?;
    check_started(&mut g, name, firmware == Firmware::Ovmf, display)?;
    // These guests have no NIC: the agent says so (and retries) once start-up is done.
    g.expect("FAILED: network: no Ethernet interface found", STEP)?;
    if display {
        let shot = artifacts::out_dir().join(format!("test-logs/{name}.ppm"));
        g.screendump(&shot)?;
        let img = ppm::parse(&std::fs::read(&shot)?)?;
        let lit = img.non_background_pixels();
        eprintln!(
            "{name}: screen {}x{}, {lit} non-background pixels",
            img.width, img.height
        );
        if lit < 500 {
            g.fail();
        }
        ensure!(
            lit >= 500,
            "the display looks blank ({lit} non-background pixels): {}",
            shot.display()
        );
    }
    g.type_line("poweroff")?;
    check_poweroff(&mut g, "typed on /dev/ttyS0")
}

macro_rules! iso_tests {
    ($($fn:ident: $fw:expr, $media:expr, $display:expr;)*) => {$(
        #[test]
        #[ignore = "vm: boots QEMU (scripts/test vm)"]
        fn $fn() -> Result<()> {
            iso(&stringify!($fn)["vm_boot_".len()..].replace('_', "-"), $fw, $media, $display)
        }
    )*};
}

iso_tests! {
    vm_boot_iso_seabios_cdrom_headless: Firmware::SeaBios, Media::Cdrom, false;
    vm_boot_iso_seabios_cdrom_display: Firmware::SeaBios, Media::Cdrom, true;
    vm_boot_iso_seabios_usb_headless: Firmware::SeaBios, Media::UsbDisk, false;
    vm_boot_iso_seabios_usb_display: Firmware::SeaBios, Media::UsbDisk, true;
    vm_boot_iso_ovmf_cdrom_headless: Firmware::Ovmf, Media::Cdrom, false;
    vm_boot_iso_ovmf_cdrom_display: Firmware::Ovmf, Media::Cdrom, true;
    vm_boot_iso_ovmf_usb_headless: Firmware::Ovmf, Media::UsbDisk, false;
    vm_boot_iso_ovmf_usb_display: Firmware::Ovmf, Media::UsbDisk, true;
}
