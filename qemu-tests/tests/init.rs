//! PID-1 duties seen from outside: orphans are reaped, init signals have their meaning.
//! Driven through the installer's rescue shell on the serial console.

use anyhow::{Result, ensure};
use kiln_qemu_tests::{Boot, Guest, GuestBuilder, artifacts};
use std::time::Duration;

const BOOT: Duration = Duration::from_secs(300);
const STEP: Duration = Duration::from_secs(60);

fn guest(name: &str) -> Result<Guest> {
    GuestBuilder::new(
        name,
        Boot::Kernel {
            kernel: artifacts::bare_kernel()?,
            initrd: Some(artifacts::initramfs()?),
            append: "console=ttyS0,115200 panic=-1 kiln.debug".into(),
        },
    )
    .start()
}

fn shell(g: &mut Guest, line: &str) -> Result<()> {
    g.type_line("shell")?;
    g.expect("starting a shell on /dev/ttyS0", STEP)?;
    g.type_line(line)
}

#[test]
#[ignore = "vm: boots QEMU (scripts/test vm)"]
fn vm_init_reaps_orphans() -> Result<()> {
    let mut g = guest("init-orphans")?;
    g.check(|g| {
        g.expect("running as pid 1;", BOOT)?;
        // The subshell exits at once; its background sleep is reparented to PID 1.
        // (`ORP""HAN` so the terminal's echo of the typed line does not match.)
        shell(g, r#"(sleep 1 & echo ORP""HAN=$!); exit"#)?;
        let line = g.expect("ORPHAN=", STEP)?;
        let pid = line.trim_start_matches("ORPHAN=").trim().to_string();
        ensure!(pid.parse::<u32>().is_ok(), "no pid in {line:?}");
        g.expect(&format!("reaped orphan pid {pid} (exit 0)"), STEP)?;
        shell(
            g,
            r#"echo ZOM""BIES=$(grep -l '^State:.Z' /proc/[0-9]*/status | wc -l); exit"#,
        )?;
        let z = g.expect("ZOMBIES=", STEP)?;
        ensure!(z.ends_with("ZOMBIES=0"), "zombies left: {z}");
        Ok(())
    })
}

#[test]
#[ignore = "vm: boots QEMU (scripts/test vm)"]
fn vm_init_sigusr2_powers_off() -> Result<()> {
    let mut g = guest("init-sigusr2")?;
    g.check(|g| {
        g.expect("running as pid 1;", BOOT)?;
        shell(g, "kill -USR2 1")?;
        g.expect("received SIGUSR2: poweroff", STEP)?;
        let status = g.wait_exit(STEP)?;
        ensure!(status.success(), "QEMU exited with {status}");
        Ok(())
    })
}

#[test]
#[ignore = "vm: boots QEMU (scripts/test vm)"]
fn vm_init_sigterm_reboots() -> Result<()> {
    let mut g = guest("init-sigterm")?;
    g.check(|g| {
        g.expect("running as pid 1;", BOOT)?;
        shell(g, "kill -TERM 1")?;
        g.expect("received SIGTERM: reboot", STEP)?;
        // -no-reboot: QEMU exits when the guest reboots.
        g.expect("reboot: Restarting system", STEP)?;
        g.wait_exit(STEP)?;
        Ok(())
    })
}
