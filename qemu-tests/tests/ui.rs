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

/// Types `text` and Enter on the guest's keyboard (QMP send-key; letters only).
fn type_keys(g: &mut kiln_qemu_tests::Guest, text: &str) -> Result<()> {
    for c in text
        .chars()
        .map(|c| c.to_string())
        .chain(["ret".to_string()])
    {
        let key = serde_json::json!({ "keys": [{ "type": "qcode", "data": c }] });
        g.qmp("send-key", key)?;
        std::thread::sleep(Duration::from_millis(50));
    }
    Ok(())
}

/// Share of blue pixels on the top text row of a fresh screendump.
fn header_blue(g: &mut kiln_qemu_tests::Guest, shot: &std::path::Path) -> Result<f64> {
    g.screendump(shot)?;
    let img = ppm::parse(&std::fs::read(shot)?)?;
    Ok(share(&img, 0..1, |p| p[2] > 120 && p[0] < 80 && p[1] < 80))
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
        // `shell` typed on the display's keyboard: the TUI steps aside for the shell...
        type_keys(g, "shell")?;
        g.expect("starting a shell on /dev/tty0", STEP)?;
        std::thread::sleep(Duration::from_secs(2));
        let during = header_blue(g, &shot.with_extension("shell.ppm"))?;
        ensure!(
            during < 0.1,
            "the TUI header is still drawn while the shell runs ({:.0}% blue)",
            during * 100.0
        );
        // ... and comes back when it exits.
        type_keys(g, "exit")?;
        g.expect("shell exited", STEP)?;
        std::thread::sleep(Duration::from_secs(2));
        let after = header_blue(g, &shot.with_extension("after-shell.ppm"))?;
        eprintln!(
            "SCREEN {name}: header {:.0}% blue during the shell, {:.0}% after",
            during * 100.0,
            after * 100.0
        );
        ensure!(
            after > 0.5,
            "the TUI did not come back after the shell ({:.0}% blue)",
            after * 100.0
        );
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
