//! The installer ISO as kiln-server serves it: a template made by
//! `scripts/build-iso --template`, patched in place by `kiln_controlplane::iso` with a
//! control plane URL, CA pin and bootstrap token, boots (GRUB ignores the padding) and the
//! agent reports exactly the baked control plane.

use anyhow::{Context, Result, ensure};
use kiln_qemu_tests::{Boot, GuestBuilder, Media, artifacts, is_agent_line};
use std::time::Duration;

const BOOT: Duration = Duration::from_secs(300);
const STEP: Duration = Duration::from_secs(60);

#[test]
#[ignore = "vm: boots QEMU (scripts/test vm)"]
fn vm_served_iso_template_reports_baked_control_plane() -> Result<()> {
    let name = "served-iso";
    let dir = artifacts::out_dir().join("test");
    std::fs::create_dir_all(&dir)?;
    let template = dir.join("kiln-template.iso");
    let status = std::process::Command::new(artifacts::workspace().join("scripts/build-iso"))
        .args([
            "--template",
            "--cmdline",
            "panic=-1 kiln.poweroff=1",
            "--kernel",
        ])
        .arg(artifacts::installer()?)
        .arg("--out")
        .arg(&template)
        .status()
        .context("running scripts/build-iso --template")?;
    ensure!(
        status.success(),
        "scripts/build-iso --template failed ({status})"
    );

    let url = "https://cp.kiln.test:8443";
    let pin = format!("sha256:{}", "cd".repeat(32));
    let token = "eyJhbGciOiJkaXIiLCJlbmMiOiJBMjU2R0NNIiwia2lkIjoiazEifQ..SERVED-ISO-TOKEN.x";
    let params = vec![
        format!("kiln.url={url}"),
        format!("kiln.ca={pin}"),
        format!("kiln.token={token}"),
    ];
    let iso = dir.join("kiln-served.iso");
    kiln_controlplane::iso::patch_file(&template, &iso, &params)?;

    let mut g = GuestBuilder::new(
        name,
        Boot::Iso {
            path: iso,
            media: Media::Cdrom,
        },
    )
    .start()?;
    g.check(|g| {
        // The kernel got the parameters without the placeholder's padding or markers.
        let line = g.expect("Kernel command line: ", BOOT)?;
        ensure!(
            line.trim_end_matches(['\r', '\n'])
                .ends_with(&format!("panic=-1 kiln.poweroff=1 {}", params.join(" "))),
            "padding or markers reached the kernel: {line:?}"
        );
        g.expect("kiln-agent ", BOOT)?;
        let cp = g.expect("control plane: ", STEP)?;
        ensure!(
            cp.contains(&format!(
                "control plane: {url}; bootstrap token: present; CA pin: {pin}"
            )),
            "{cp}"
        );
        g.expect("poweroff: kiln.poweroff is set", STEP)?;
        let exit = g.wait_exit(STEP)?;
        ensure!(exit.success(), "QEMU exited with {exit}");
        let text = g.serial_text();
        ensure!(
            !text.contains("KILN-PARAMS"),
            "the placeholder reached the guest"
        );
        ensure!(
            !text
                .lines()
                .filter(|l| is_agent_line(l))
                .any(|l| l.contains("SERVED-ISO-TOKEN") || l.contains("unknown key")),
            "the agent printed the token or warned about a parameter"
        );
        Ok(())
    })
}
