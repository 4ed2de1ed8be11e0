//! Hand-run provisioning orders in the installer (issue 5, "done when" in QEMU): the small
//! test image (scripts/build-test-image) is pushed to a real docker-registry on
//! 127.0.0.1, the guest reaches it through slirp (`restrict=on`, one guestfwd from
//! 10.0.2.100:5000), and `kiln-agent provision --image ...` typed in the rescue shell
//! writes the disk the serial hint names. After QEMU exits, the host reads the disks:
//! backup GPT at the very end, root partition grown to the end, ext4 grown with the
//! image's label and the rootfs layer in it; every other disk byte-identical.

mod support;

use anyhow::{Context, Result, bail, ensure};
use kiln_qemu_tests::{Boot, Bus, Guest, GuestBuilder, artifacts};
use std::time::Duration;
use support::{GIB, MIB, check_provisioned, disk, push_layout, registry, test_image, untouched};

const BOOT: Duration = Duration::from_secs(300);
const STEP: Duration = Duration::from_secs(60);
const PROVISION: Duration = Duration::from_secs(900);

/// Boots the installer with three disks and provisions the one `serial` names.
fn provision_by_serial(name: &str, serial: &str, device: &str) -> Result<()> {
    let layout = test_image()?;
    let reg = registry::Registry::start(registry::Auth::None);
    push_layout(
        &layout,
        "test",
        &format!("{}/kiln/test:latest", reg.host()),
        &reg.host(),
    )?;

    let tmp = tempfile::tempdir()?;
    let size = 3 * GIB;
    let decoy_size = 2 * GIB;
    let virtio = disk(tmp.path(), "virtio.img", size, None)?;
    let nvme = disk(tmp.path(), "nvme.img", size, None)?;
    let decoy = disk(tmp.path(), "decoy.img", decoy_size, Some(0xA5))?;

    // guestfwd to `tcp:HOST:PORT` is ONE chardev connection that every guest connection
    // shares: the agent's concurrent blob streams (GPT peek, layer 0, layer 1 prefetching)
    // would interleave on it. `cmd:` spawns socat per guest connection instead.
    let mut g: Guest = GuestBuilder::new(
        name,
        Boot::Kernel {
            kernel: artifacts::bare_kernel()?,
            initrd: Some(artifacts::initramfs()?),
            append: "console=ttyS0,115200 panic=-1".into(),
        },
    )
    .memory_mib(1024)
    .disk(&virtio, Bus::Virtio, "KILN-VIRTIO-1")
    .disk(&decoy, Bus::Virtio, "KILN-DECOY-1")
    .disk(&nvme, Bus::Nvme, "KILN-NVME-1")
    .args([
        "-netdev".to_string(),
        format!(
            "user,id=n0,restrict=on,guestfwd=tcp:10.0.2.100:5000-cmd:socat - TCP:127.0.0.1:{}",
            reg.port
        ),
        "-device".into(),
        "virtio-net-pci,netdev=n0".into(),
    ])
    .start()?;
    g.check(|g| {
        g.expect("nothing more to do", BOOT)?;
        g.type_line("shell")?;
        g.expect("starting a shell on /dev/ttyS0", STEP)?;
        // First the wrong confirmation (the decoy): refused before anything is pulled
        // or written; then the real order.
        let order = format!(
            "kiln-agent provision --image 10.0.2.100:5000/kiln/test:latest \
             --insecure-registry 10.0.2.100:5000 --disk serial={serial}"
        );
        g.type_line(&format!(
            "{order} --yes-really-wipe /dev/vdb; {order} --yes-really-wipe {device}; \
             echo PROVISION\"\"-EXIT=$?; exit"
        ))?;
        g.expect(
            &format!("names /dev/vdb but the hints chose {device}: refusing; nothing was written"),
            STEP,
        )?;
        g.expect(&format!("chose {device}"), STEP)?;
        g.expect("pulled and verified", PROVISION)?; // layer 0
        g.expect("[partition]", STEP)?;
        g.expect("pulled and verified", PROVISION)?; // layer 1
        let done = g.expect("done: ", PROVISION)?;
        ensure!(
            done.contains("1 layers") && done.contains("console=ttyS0,115200"),
            "unexpected summary: {done}"
        );
        let rc = g.expect("PROVISION-EXIT=", STEP)?;
        ensure!(rc.trim_end().ends_with("=0"), "{rc}");
        g.expect("shell exited", STEP)?;
        g.type_line("poweroff")?;
        g.expect("poweroff: typed on /dev/ttyS0", STEP)?;
        let status = g.wait_exit(STEP)?;
        ensure!(status.success(), "QEMU exited with {status}");
        Ok(())
    })?;
    drop(g);

    let (target, other) = if device.starts_with("/dev/nvme") {
        (&nvme, &virtio)
    } else {
        (&virtio, &nvme)
    };
    let seen = check_provisioned(target, size)
        .with_context(|| format!("checking {} from the host", target.display()))?;
    eprintln!("[{name}] {}: {seen}", target.display());
    untouched(other, size, None)?;
    untouched(&decoy, decoy_size, Some(0xA5))?;
    Ok(())
}

#[test]
#[ignore = "vm: boots QEMU, starts docker-registry (scripts/test vm)"]
fn vm_provision_virtio_by_serial() -> Result<()> {
    provision_by_serial("provision-virtio", "KILN-VIRTIO-1", "/dev/vda")
}

#[test]
#[ignore = "vm: boots QEMU, starts docker-registry (scripts/test vm)"]
fn vm_provision_nvme_by_serial() -> Result<()> {
    provision_by_serial("provision-nvme", "KILN-NVME-1", "/dev/nvme0n1")
}

#[test]
fn gpt_check_refuses_an_unprovisioned_disk() -> Result<()> {
    let tmp = tempfile::tempdir()?;
    let p = disk(tmp.path(), "blank.img", 64 * MIB, None)?;
    match check_provisioned(&p, 64 * MIB) {
        Ok(s) => bail!("a blank disk passed: {s}"),
        Err(e) => ensure!(e.to_string().contains("no primary GPT header"), "{e}"),
    }
    untouched(&p, 64 * MIB, None)?;
    ensure!(untouched(&p, 64 * MIB, Some(1)).is_err());
    Ok(())
}
