//! Boot tests: every way the installer boots reaches the agent as PID 1 with its mounts,
//! shows on a display when there is one, and powers off cleanly on request.
//!
//! Run with `scripts/test vm` (builds the artifacts first). Each prints the time from
//! QEMU start to the agent's banner.

use anyhow::{Result, ensure};
use kiln_qemu_tests::{
    Boot, Bus, Firmware, Guest, GuestBuilder, Media, artifacts, is_agent_line, ppm,
};
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

/// A NIC on QEMU's user network, `restrict=on`: DHCP from QEMU, nothing leaves the VM.
const USER_NIC: [&str; 4] = [
    "-netdev",
    "user,id=n0,restrict=on",
    "-device",
    "virtio-net-pci,netdev=n0",
];

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

#[test]
#[ignore = "vm: boots QEMU (scripts/test vm)"]
fn vm_boot_pxe_ipxe_with_token() -> Result<()> {
    let name = "pxe-ipxe";
    let tftp = tempfile::tempdir()?;
    std::fs::copy(
        artifacts::installer()?,
        tftp.path().join("kiln-installer.vmlinuz"),
    )?;
    let token = "eyJhbGciOiJkaXIiLCJlbmMiOiJBMjU2R0NNIn0.TEST-TOKEN";
    let pin = format!("sha256:{}", "ab".repeat(32));
    // What an operator's PXE server hands iPXE: the installer, the control plane and a
    // bootstrap token on the command line, and BOOTIF with the MAC that booted.
    std::fs::write(
        tftp.path().join("boot.ipxe"),
        format!(
            "#!ipxe\nkernel tftp://10.0.2.2/kiln-installer.vmlinuz {APPEND} \
             kiln.url=https://cp.kiln.test:8443 kiln.token={token} kiln.ca={pin} \
             BOOTIF=01-${{net0/mac:hexhyp}}\nboot\n"
        ),
    )?;
    let boot = Boot::Pxe {
        tftp_dir: tftp.path().to_path_buf(),
        bootfile: "boot.ipxe".into(),
    };
    let mut g = GuestBuilder::new(name, boot).start()?;
    g.check(|g| {
        check_started(g, name, false, false)?;
        let cp = g.expect("control plane: ", STEP)?;
        ensure!(
            cp.contains(&format!(
                "control plane: https://cp.kiln.test:8443; bootstrap token: present; CA pin: {pin}"
            )),
            "{cp}"
        );
        check_poweroff(g, "kiln.poweroff is set")?;
        let text = g.serial_text();
        ensure!(
            !text
                .lines()
                .filter(|l| is_agent_line(l) || l.starts_with("kiln-agent "))
                .any(|l| l.contains("TEST-TOKEN")),
            "the agent printed the bootstrap token"
        );
        Ok(())
    })
}

/// The control plane URL the test ISO has baked in (`scripts/build-iso --cmdline`).
const ISO_URL: &str = "https://cp.kiln.test:8443";

#[test]
#[ignore = "vm: boots QEMU (scripts/test vm)"]
fn vm_boot_sees_disks_on_every_bus() -> Result<()> {
    let name = "disks";
    let dir = tempfile::tempdir()?;
    let mut b = GuestBuilder::new(
        name,
        Boot::Kernel {
            kernel: artifacts::installer()?,
            initrd: None,
            append: "console=ttyS0,115200 panic=-1".into(),
        },
    );
    for (i, (bus, serial)) in [
        (Bus::Virtio, "KILN-VIRTIO-1"),
        (Bus::Nvme, "KILN-NVME-1"),
        (Bus::Sata, "KILN-SATA-1"),
    ]
    .into_iter()
    .enumerate()
    {
        let path = dir.path().join(format!("disk{i}.raw"));
        std::fs::File::create(&path)?.set_len(64 << 20)?;
        b = b.disk(path, bus, serial);
    }
    let mut g = b.start()?;
    g.check(|g| {
        check_started(g, name, false, false)?;
        // Ask the installer's rescue shell what the kernel sees, serial numbers included.
        g.type_line("shell")?;
        g.expect("starting a shell on /dev/ttyS0", STEP)?;
        g.type_line(
            "echo BLOCK $(ls /sys/block | grep -v loop); \
             echo SERIALS $(cat /sys/block/vda/serial; echo; cat /sys/class/nvme/nvme0/serial); exit",
        )?;
        let block = g.expect("BLOCK n", STEP)?;
        ensure!(block.ends_with("BLOCK nvme0n1 sda vda"), "{block}");
        let serials = g.expect("SERIALS K", STEP)?;
        ensure!(
            serials.ends_with("SERIALS KILN-VIRTIO-1 KILN-NVME-1"),
            "{serials}"
        );
        g.expect("shell exited", STEP)?;
        g.type_line("poweroff")?;
        check_poweroff(g, "typed on /dev/ttyS0")
    })
}

/// Boots the test ISO; with a display, checks the screen shows something; then powers
/// off by typing `poweroff` on the serial console.
fn iso(name: &str, firmware: Firmware, media: Media, display: bool) -> Result<()> {
    let path = artifacts::test_iso(&format!("panic=-1 kiln.url={ISO_URL}"))?;
    let mut g = GuestBuilder::new(name, Boot::Iso { path, media })
        .firmware(firmware)
        .display(display)
        .args(USER_NIC)
        .start()?;
    check_started(&mut g, name, firmware == Firmware::Ovmf, display)?;
    let cp = g.expect("control plane: ", STEP)?;
    ensure!(
        cp.contains(&format!("control plane: {ISO_URL};")),
        "URL baked into the ISO not seen: {cp}"
    );
    // The agent acts on the baked URL: an https control plane without a CA pin is refused
    // with the parameter to add (and retried), never trusted blindly.
    let refusal = g.expect("but no CA pin is set", STEP)?;
    ensure!(refusal.contains("kiln.ca=sha256:"), "{refusal}");
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
