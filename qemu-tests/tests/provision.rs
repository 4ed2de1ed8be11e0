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
use std::path::{Path, PathBuf};
use std::time::Duration;
use support::{GIB, MIB, check_provisioned, disk, registry_with_test_image, untouched};

const BOOT: Duration = Duration::from_secs(300);
const STEP: Duration = Duration::from_secs(60);
const PROVISION: Duration = Duration::from_secs(900);

/// Boots the installer with three disks and provisions the one `serial` names.
fn provision_by_serial(name: &str, serial: &str, device: &str) -> Result<()> {
    let reg = registry_with_test_image()?;

    let tmp = tempfile::tempdir()?;
    let size = 3 * GIB;
    let decoy_size = 2 * GIB;
    let virtio = disk(tmp.path(), "virtio.img", size, None)?;
    let nvme = disk(tmp.path(), "nvme.img", size, None)?;
    let decoy = disk(tmp.path(), "decoy.img", decoy_size, Some(0xA5))?;

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
    .forwarded_nic(&[("10.0.2.100:5000", reg.port)])
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

/// A small ext4 disk holding `file` at its root (made from a directory by mkfs.ext4 -d:
/// no loop device, no mount).
fn ext4_disk_with(dir: &Path, name: &str, file: &Path) -> Result<PathBuf> {
    let content = dir.join(format!("{name}.d"));
    std::fs::create_dir_all(&content)?;
    std::fs::copy(file, content.join(file.file_name().context("file name")?))?;
    let img = dir.join(name);
    let mkfs = ["/sbin/mkfs.ext4", "/usr/sbin/mkfs.ext4"]
        .into_iter()
        .find(|p| Path::new(p).exists())
        .unwrap_or("mkfs.ext4");
    let st = std::process::Command::new(mkfs)
        .args(["-q", "-F", "-d"])
        .arg(&content)
        .arg(&img)
        .arg("64M")
        .status()
        .context("running mkfs.ext4")?;
    ensure!(st.success(), "mkfs.ext4 -d failed: {st}");
    Ok(img)
}

fn sha256_hex(p: &Path) -> Result<String> {
    let d = ring::digest::digest(&ring::digest::SHA256, &std::fs::read(p)?);
    Ok(d.as_ref().iter().map(|b| format!("{b:02x}")).collect())
}

/// The whole loop in one VM: the installer provisions the test image onto a virtio disk
/// with `--kexec` and boots the installed system's own kernel from that disk (its rcS
/// line, then the injected agent's banner); there, `kiln-agent kexec-installer` boots
/// the installer vmlinuz from a second disk (sha256-checked) with the control-plane
/// parameters, and the installer's banner appears again. The machine credential never
/// shows on the serial console.
#[test]
#[ignore = "vm: boots QEMU, starts docker-registry (scripts/test vm)"]
fn vm_provision_kexec_and_back() -> Result<()> {
    let name = "provision-kexec";
    let reg = registry_with_test_image()?;
    let installer = artifacts::installer()?;
    let installer_sha = sha256_hex(&installer)?;
    let tmp = tempfile::tempdir()?;
    let target = disk(tmp.path(), "target.img", 2 * GIB, None)?;
    let media = ext4_disk_with(tmp.path(), "installer-media.img", &installer)?;

    let mut g: Guest = GuestBuilder::new(
        name,
        Boot::Kernel {
            kernel: installer.clone(),
            initrd: None,
            append: "console=ttyS0,115200 panic=-1".into(),
        },
    )
    .memory_mib(1024)
    .disk(&target, Bus::Virtio, "KILN-TARGET-1")
    .disk(&media, Bus::Virtio, "KILN-MEDIA-1")
    .forwarded_nic(&[("10.0.2.100:5000", reg.port)])
    .start()?;
    g.check(|g| {
        g.expect("nothing more to do", BOOT)?;
        g.type_line("shell")?;
        g.expect("starting a shell on /dev/ttyS0", STEP)?;
        // The credential is computed in the guest so that the typed line does not hold it.
        g.type_line(
            "echo cred-$((6*7))-x > /tmp/cred; kiln-agent provision \
             --image 10.0.2.100:5000/kiln/test:latest --insecure-registry 10.0.2.100:5000 \
             --disk serial=KILN-TARGET-1 --yes-really-wipe /dev/vda \
             --control-plane http://10.0.2.100:9 --machine-id 6b1d0e6c-7c5a-4f0e-9a53-6b696c6e0e01 \
             --credential-file /tmp/cred --kexec",
        )?;
        g.expect("done: ", PROVISION)?;
        let done_at = g.elapsed();
        let line = g.expect("kexec: booting", STEP)?;
        ensure!(
            line.contains("root=PARTUUID=6b1d0e6c-7c5a-4f0e-9a53-6b696c6e0003")
                && line.contains("console=ttyS0"),
            "unexpected kexec line: {line}"
        );
        g.expect("kiln-test-image: booted", BOOT)?;
        let banner = g.expect(" s after kernel start", BOOT)?;
        // The busybox shell on ttyS0 may print its prompt on the same line first.
        ensure!(
            banner.contains("kiln-agent "),
            "not the agent's banner: {banner}"
        );
        let banner_at = g.elapsed();
        g.expect("control plane: http://10.0.2.100:9", STEP)?;
        g.expect(
            "installed system: machine 6b1d0e6c-7c5a-4f0e-9a53-6b696c6e0e01",
            STEP,
        )?;
        eprintln!(
            "[{name}] provision done -> installed system's agent banner: {:.1?}",
            banner_at - done_at
        );
        // The installed system's own shell on ttyS0: its kernel's command line.
        g.type_line("echo CMDLINE: $(cat /proc/cmdline)")?;
        let cmdline = g.expect("CMDLINE: root=PARTUUID=", STEP)?;
        ensure!(cmdline.contains("console=ttyS0"), "{cmdline}");

        // And back: the installer from the second disk, with the control plane.
        g.type_line(&format!(
            "mkdir -p /mnt && mount /dev/vdb /mnt && /usr/local/sbin/kiln-agent kexec-installer \
             --installer /mnt/kiln-installer.vmlinuz --sha256 {installer_sha} --append kiln.ui=plain"
        ))?;
        g.expect("(verified)", STEP)?;
        let line = g.expect("kexec: booting /mnt/kiln-installer.vmlinuz", STEP)?;
        ensure!(
            line.contains("kiln.credential=<redacted>")
                && line.contains("kiln.machine=6b1d0e6c-7c5a-4f0e-9a53-6b696c6e0e01"),
            "{line}"
        );
        let back_at = g.elapsed();
        let banner = g.expect(" s after kernel start", BOOT)?;
        ensure!(banner.starts_with("kiln-agent "), "{banner}");
        g.expect("running as pid 1", STEP)?;
        g.expect("control plane: http://10.0.2.100:9", STEP)?;
        eprintln!(
            "[{name}] kexec-installer -> installer banner: {:.1?}",
            g.elapsed() - back_at
        );
        g.type_line("poweroff")?;
        let status = g.wait_exit(STEP)?;
        ensure!(status.success(), "QEMU exited with {status}");
        ensure!(
            !g.serial_text().contains("cred-42-x"),
            "the machine credential appeared on the serial console"
        );
        Ok(())
    })
}
