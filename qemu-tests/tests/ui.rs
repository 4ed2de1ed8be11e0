//! The installer's console UI: on a machine with a display, the TUI is on the screen
//! (checked on a QMP screendump: the blue header bar on the top text row, the grey
//! command prompt on the bottom one), while the serial console keeps plain lines.
//!
//! There is no control plane in these VMs, so the screen shows the machine's identity
//! and "no control plane configured", not an approval code (that is covered by the
//! snapshot tests in agent/src/ui/tui/tests.rs).

use anyhow::{Result, ensure};
use kiln_qemu_tests::{Boot, Firmware, GuestBuilder, artifacts, is_agent_line, ppm};
use std::time::Duration;

const BOOT: Duration = Duration::from_secs(300);
const STEP: Duration = Duration::from_secs(60);

/// A NIC on QEMU's user network, `restrict=on`: DHCP from QEMU, nothing leaves the VM.
const USER_NIC: [&str; 4] = [
    "-netdev",
    "user,id=n0,restrict=on",
    "-device",
    "virtio-net-pci,netdev=n0",
];

/// Share of the pixels in text rows `rows` (16 pixels each) that match `want`.
fn share(img: &ppm::Image, rows: std::ops::Range<usize>, want: impl Fn(&[u8]) -> bool) -> f64 {
    let (from, to) = (rows.start * 16, (rows.end * 16).min(img.height));
    let px = img.rgb[from * img.width * 3..to * img.width * 3].chunks_exact(3);
    let n = px.len().max(1);
    px.filter(|p| want(p)).count() as f64 / n as f64
}

fn tui(name: &str, firmware: Firmware, video: &str) -> Result<()> {
    let boot = Boot::Kernel {
        kernel: artifacts::bare_kernel()?,
        initrd: Some(artifacts::initramfs()?),
        append: "console=tty0 console=ttyS0,115200 panic=-1".into(),
    };
    let mut g = GuestBuilder::new(name, boot)
        .firmware(firmware)
        .display(true)
        .args(USER_NIC)
        .start()?;
    g.check(|g| {
        g.expect("kiln-agent ", BOOT)?;
        let init = g.expect("running as pid ", STEP)?;
        ensure!(init.contains(&format!("display: yes ({video}")), "{init}");
        let addr = g.expect(": address 10.0.2.15/24", STEP)?;
        ensure!(is_agent_line(&addr), "not a plain agent line: {addr:?}");
        // Firmware may print escape sequences on serial; the agent must not.
        let serial = g.serial_text();
        let agent = &serial[serial.find("kiln-agent ").unwrap_or(0)..];
        ensure!(
            !agent.contains("\x1b["),
            "escape sequences on the serial console after the banner"
        );
        // One tick of the render thread, then look at the screen.
        std::thread::sleep(Duration::from_secs(3));
        let shot = artifacts::out_dir().join(format!("test-logs/{name}.ppm"));
        g.screendump(&shot)?;
        let img = ppm::parse(&std::fs::read(&shot)?)?;
        let rows = img.height / 16;
        let blue = share(&img, 0..1, |p| p[2] > 120 && p[0] < 80 && p[1] < 80);
        let grey = share(&img, rows - 1..rows, |p| {
            p[0] > 120 && p[0] == p[1] && p[1] == p[2]
        });
        eprintln!(
            "SCREEN {name}: {}x{} px, {rows} text rows, header {:.0}% blue, prompt {:.0}% grey",
            img.width,
            img.height,
            blue * 100.0,
            grey * 100.0
        );
        ensure!(
            blue > 0.5,
            "no blue TUI header bar on the top row ({:.0}% blue): {}",
            blue * 100.0,
            shot.display()
        );
        ensure!(
            grey > 0.5,
            "no grey command prompt on the bottom row ({:.0}% grey): {}",
            grey * 100.0,
            shot.display()
        );
        // The serial console got the lines the TUI's log shows, still plain.
        g.type_line("poweroff")?;
        g.expect("poweroff: typed on /dev/ttyS0", STEP)?;
        ensure!(g.wait_exit(STEP)?.success(), "QEMU failed after power-off");
        Ok(())
    })
}

#[test]
#[ignore = "vm: boots QEMU with a display (scripts/test vm)"]
fn vm_ui_tui_on_vga_text_plain_on_serial() -> Result<()> {
    tui("ui-vga-text", Firmware::SeaBios, "VGA text")
}

#[test]
#[ignore = "vm: boots QEMU with a display (scripts/test vm)"]
fn vm_ui_tui_on_framebuffer_plain_on_serial() -> Result<()> {
    tui("ui-framebuffer", Firmware::Ovmf, "framebuffer")
}
