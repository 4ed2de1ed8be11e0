//! kexec: boot another kernel without going through firmware and bootloader.
//!
//! Three ways in, one way out:
//!
//! - After provisioning, the installer boots the installed system from the
//!   [`BootPlan`](crate::provision::bootplan::BootPlan) the provisioning run returned:
//!   `boot(&Image::from(&outcome.plan), report)`.
//! - [`installed::boot_installed`] (the control plane's `BootInstalledSystem` order, or
//!   `kiln-agent boot-installed`): finds the installed root partition on the disks,
//!   mounts it read-only, plans, unmounts and boots it. Signature:
//!   `boot_installed(hints: Option<&str>, report: Report) -> Result<Infallible>`; `hints`
//!   are root-device hints (`serial=...`) as for provisioning, `None` to search every disk.
//! - [`installer::to_installer`] (re-provisioning from an installed system, or
//!   `kiln-agent kexec-installer`): loads the installer vmlinuz from a file or an
//!   http(s) URL (sha256-verified when given) with a command line carrying the control
//!   plane's URL, CA pin, machine id and machine credential from `/etc/kiln/agent.json`,
//!   so the installer reconnects without approval.
//!
//! [`boot`] does the exec: `kexec_file_load(2)` (the kernel parses and, under lockdown,
//! verifies the image; no kexec-tools needed), one [`Event::Kexec`] line on the consoles
//! with secrets redacted, then under systemd `systemctl kexec` (systemd stops services
//! and unmounts), otherwise `sync`, unmount every block-device filesystem in reverse
//! mount order (the root is remounted read-only), and `reboot(LINUX_REBOOT_CMD_KEXEC)`.
//! Load errors are [`LoadError`]s that name the file and say what to do.

pub mod cli;
pub mod installed;
pub mod installer;

use std::convert::Infallible;
use std::ffi::CString;
use std::fs::File;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use rustix::io::Errno;

use crate::cmdline::{self, word};
pub use crate::cmdline::{SECRET_KEYS, is_secret, redact};
use crate::events::{Event, Level};
use crate::provision::bootplan::BootPlan;

/// Where kexec reports: every [`Event`] goes through it (PID 1 passes its reporter's
/// `emit`, the CLI prints lines).
pub type Report<'a> = &'a (dyn Fn(Event) + Sync);

/// The x86 kernel's `COMMAND_LINE_SIZE`, including the terminating NUL.
pub const COMMAND_LINE_SIZE: usize = 2048;

/// A kernel to boot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Image {
    /// The kernel (an x86 bzImage / EFI-stub vmlinuz).
    pub kernel: PathBuf,
    /// The initrd, if any.
    pub initrd: Option<PathBuf>,
    /// The full command line.
    pub cmdline: String,
}

impl From<&BootPlan> for Image {
    fn from(p: &BootPlan) -> Image {
        Image {
            kernel: p.kernel.clone(),
            initrd: p.initrd.clone(),
            cmdline: p.cmdline.clone(),
        }
    }
}

/// Appends the running kernel's `console=` parameters (from `running`, the text of
/// /proc/cmdline) when `line` has none, so the booted system talks on the same consoles.
pub fn carry_consoles(line: &str, running: &str) -> String {
    if cmdline::split(line).iter().any(|p| p.key == "console") {
        return line.to_string();
    }
    let consoles: Vec<String> = cmdline::split(running)
        .iter()
        .filter(|p| p.key == "console")
        .map(|p| word(&p.key, p.value.as_deref()))
        .collect();
    if consoles.is_empty() {
        return line.to_string();
    }
    let mut out = line.trim().to_string();
    for c in consoles {
        if !out.is_empty() {
            out.push(' ');
        }
        out.push_str(&c);
    }
    out
}

/// `kexec_file_load(2)` failed.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct LoadError {
    /// The errno.
    pub errno: Errno,
    /// The kernel tried.
    pub kernel: PathBuf,
    /// What went wrong and what to do.
    pub message: String,
}

/// Says what an errno from `kexec_file_load` means for `kernel`/`initrd` and what to do.
pub fn explain(errno: Errno, kernel: &Path, initrd: Option<&Path>) -> String {
    let k = kernel.display();
    let i = initrd.map_or("no initrd".to_string(), |p| {
        format!("initrd {}", p.display())
    });
    let what = match errno {
        Errno::PERM => format!(
            "the kernel refused to load {k}: kexec needs root (CAP_SYS_BOOT), and is refused when \
             sysctl kernel.kexec_load_disabled=1 or when lockdown (Secure Boot) is on and the \
             image is not signed by a trusted key; check /sys/kernel/security/lockdown, or \
             reboot through the firmware instead"
        ),
        Errno::NOEXEC => format!(
            "{k} is not a kernel this kernel can kexec: give an x86-64 bzImage (a vmlinuz / \
             EFI-stub kernel with the \"HdrS\" header), not a vmlinux ELF, a compressed file or \
             a kernel for another architecture"
        ),
        Errno::KEYREJECTED | Errno::BADMSG | Errno::NODATA => format!(
            "the signature of {k} was rejected or is missing (kexec signature enforcement, \
             e.g. Secure Boot lockdown): use a kernel signed with a key in the running kernel's \
             keyrings, or reboot through the firmware instead"
        ),
        Errno::NOSYS => "this kernel has no kexec_file_load (built without CONFIG_KEXEC_FILE): \
             reboot through the firmware instead"
            .to_string(),
        Errno::BUSY => "another kexec load is in progress: wait and retry".to_string(),
        Errno::NOMEM => format!(
            "not enough contiguous memory to stage {k} and {i}: use a smaller initrd or free \
             memory"
        ),
        Errno::FBIG => format!("{k} or {i} is too large to load"),
        Errno::INVAL => format!(
            "the kernel found {k} with {i} invalid for kexec (command line longer than \
             {COMMAND_LINE_SIZE} bytes, a truncated image, or an initrd the image cannot take)"
        ),
        other => format!("kexec_file_load of {k} with {i} failed: {other}"),
    };
    format!("{what} (errno {})", errno_name(errno))
}

fn errno_name(e: Errno) -> String {
    let known = [
        (Errno::PERM, "EPERM"),
        (Errno::NOEXEC, "ENOEXEC"),
        (Errno::KEYREJECTED, "EKEYREJECTED"),
        (Errno::BADMSG, "EBADMSG"),
        (Errno::NODATA, "ENODATA"),
        (Errno::NOSYS, "ENOSYS"),
        (Errno::BUSY, "EBUSY"),
        (Errno::NOMEM, "ENOMEM"),
        (Errno::FBIG, "EFBIG"),
        (Errno::INVAL, "EINVAL"),
    ];
    known
        .iter()
        .find(|(k, _)| *k == e)
        .map_or_else(|| format!("{}", e.raw_os_error()), |(_, n)| n.to_string())
}

/// Checks a command line before handing it to the kernel.
pub fn check_cmdline(line: &str) -> Result<CString> {
    if line.len() + 1 > COMMAND_LINE_SIZE {
        bail!(
            "kernel command line is {} bytes; the kernel takes at most {} (redacted: {})",
            line.len(),
            COMMAND_LINE_SIZE - 1,
            redact(line)
        );
    }
    CString::new(line).context("kernel command line contains a NUL byte")
}

/// Loads `img` as the kernel the next `reboot(LINUX_REBOOT_CMD_KEXEC)` runs.
pub fn load(img: &Image) -> Result<()> {
    let cmdline = check_cmdline(&img.cmdline)?;
    let open = |p: &Path, what: &str| {
        File::open(p).with_context(|| format!("opening the {what} {} for kexec", p.display()))
    };
    let kernel = open(&img.kernel, "kernel")?;
    let initrd = img
        .initrd
        .as_deref()
        .map(|p| open(p, "initrd"))
        .transpose()?;
    let mut flags: libc::c_ulong = 0;
    if initrd.is_none() {
        flags |= libc::KEXEC_FILE_NO_INITRAMFS as libc::c_ulong;
    }
    let initrd_fd = initrd.as_ref().map_or(-1, |f| f.as_raw_fd());
    let len = cmdline.as_bytes_with_nul().len();
    // SAFETY: kexec_file_load(kernel_fd, initrd_fd, cmdline_len, cmdline, flags) reads
    // only: the fds are open for the whole call (`kernel`/`initrd` live until the end of
    // this function), and `cmdline` points at `len` bytes including its NUL.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_kexec_file_load,
            kernel.as_raw_fd(),
            initrd_fd,
            len,
            cmdline.as_ptr(),
            flags,
        )
    };
    if rc != 0 {
        let errno = Errno::from_io_error(&std::io::Error::last_os_error()).unwrap_or(Errno::IO);
        return Err(LoadError {
            errno,
            kernel: img.kernel.clone(),
            message: explain(errno, &img.kernel, img.initrd.as_deref()),
        }
        .into());
    }
    Ok(())
}

/// Unloads a kernel loaded with [`load`] (nothing happens when none is loaded).
pub fn unload() -> Result<()> {
    // SAFETY: with KEXEC_FILE_UNLOAD the kernel ignores the fds and the (null, 0) command
    // line; nothing is read from or written to our memory.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_kexec_file_load,
            -1,
            -1,
            0usize,
            std::ptr::null::<libc::c_char>(),
            libc::KEXEC_FILE_UNLOAD as libc::c_ulong,
        )
    };
    if rc != 0 {
        let e = std::io::Error::last_os_error();
        bail!("unloading the kexec kernel: {e}");
    }
    Ok(())
}

/// Whether systemd runs this system (sd_booted(3)).
pub fn systemd_running() -> bool {
    Path::new("/run/systemd/system").is_dir()
}

/// Filesystems to unmount before kexec: those from block devices, in reverse mount
/// order (children before parents). `/` comes last; it can only be remounted read-only.
pub fn targets(mountinfo: &str) -> Vec<String> {
    let mut out: Vec<String> = crate::mountinfo::parse(mountinfo)
        .into_iter()
        .filter(|m| m.source.starts_with("/dev/"))
        .filter(|m| !matches!(m.fstype.as_str(), "devtmpfs" | "devpts" | "tmpfs"))
        .map(|m| m.target)
        .rev()
        .collect();
    // A filesystem mounted twice shows up twice: unmount each mount point once.
    let mut seen = std::collections::HashSet::new();
    out.retain(|t| seen.insert(t.clone()));
    if let Some(i) = out.iter().position(|t| t == "/") {
        let root = out.remove(i);
        out.push(root);
    }
    out
}

/// `sync`, then unmounts [`targets`] (remounting read-only what will not unmount).
/// Problems are reported, not fatal: the data is synced either way.
pub fn unmount_targets(report: Report) {
    rustix::fs::sync();
    let text = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    for t in targets(&text) {
        let ro = || rustix::mount::mount_remount(t.as_str(), rustix::mount::MountFlags::RDONLY, "");
        let res = if t == "/" {
            ro().map(|()| "remounted read-only")
        } else {
            rustix::mount::unmount(t.as_str(), rustix::mount::UnmountFlags::empty())
                .map(|()| "unmounted")
                .or_else(|_| ro().map(|()| "busy, remounted read-only"))
        };
        match res {
            Ok(what) => report(Event::Message {
                level: Level::Info,
                text: format!("kexec: {t} {what}"),
            }),
            Err(e) => report(Event::Message {
                level: Level::Warn,
                text: format!(
                    "kexec: {t} could not be unmounted or remounted read-only ({e}); it was synced"
                ),
            }),
        }
    }
    rustix::fs::sync();
}

/// What [`boot`] is about to do, as the console line says it.
fn event(img: &Image, via: &str) -> Event {
    Event::Kexec {
        kernel: img.kernel.display().to_string(),
        initrd: img.initrd.as_ref().map(|p| p.display().to_string()),
        cmdline: redact(&img.cmdline),
        via: via.to_string(),
    }
}

/// Loads `img` and boots it. Returns only on failure (nothing was unmounted when the
/// load failed).
pub fn boot(img: &Image, report: Report) -> Result<Infallible> {
    load(img)?;
    exec_loaded(img, report)
}

/// Boots the kernel [`load`] loaded (`img` names it in lines and errors). Returns only on
/// failure.
pub fn exec_loaded(img: &Image, report: Report) -> Result<Infallible> {
    if systemd_running() && !rustix::process::getpid().is_init() {
        report(event(img, "systemctl kexec"));
        let st = std::process::Command::new("systemctl")
            .arg("kexec")
            .status()
            .context("running systemctl kexec")?;
        if !st.success() {
            let _ = unload();
            bail!("systemctl kexec failed ({st}); the loaded kernel was unloaded");
        }
        // systemd now stops services, unmounts and execs the loaded kernel.
        std::thread::sleep(Duration::from_secs(300));
        bail!("systemctl kexec was accepted but the system is still up after 300 s");
    }
    report(event(img, "reboot(LINUX_REBOOT_CMD_KEXEC)"));
    unmount_targets(report);
    // Let the serial consoles drain the last lines before the machine goes away.
    std::thread::sleep(Duration::from_millis(300));
    let e = rustix::system::reboot(rustix::system::RebootCommand::Kexec)
        .err()
        .map_or("returned without effect".to_string(), |e| e.to_string());
    bail!(
        "reboot(LINUX_REBOOT_CMD_KEXEC) into {} failed: {e}",
        img.kernel.display()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redaction() {
        let cases = [
            ("root=PARTUUID=x ro", "root=PARTUUID=x ro"),
            (
                "kiln.url=https://cp kiln.token=eyJ.abc kiln.credential=s3cr3t quiet",
                "kiln.url=https://cp kiln.token=<redacted> kiln.credential=<redacted> quiet",
            ),
            ("rd.luks.password=hunter2", "rd.luks.password=<redacted>"),
            (
                "My_Secret=x console=ttyS0,115200",
                "My_Secret=<redacted> console=ttyS0,115200",
            ),
            (
                "dyndbg=\"file a.c +p\" kiln.token",
                "dyndbg=\"file a.c +p\" kiln.token",
            ),
        ];
        for (line, want) in cases {
            assert_eq!(redact(line), want, "{line}");
        }
    }

    #[test]
    fn consoles_carried_only_when_missing() {
        let running = "BOOT_IMAGE=/x console=tty0 console=ttyS0,115200n8 quiet";
        assert_eq!(
            carry_consoles("root=PARTUUID=a ro", running),
            "root=PARTUUID=a ro console=tty0 console=ttyS0,115200n8"
        );
        assert_eq!(
            carry_consoles("root=PARTUUID=a console=ttyS1", running),
            "root=PARTUUID=a console=ttyS1"
        );
        assert_eq!(carry_consoles("ro", "quiet"), "ro");
    }

    #[test]
    fn errors_name_the_file_and_what_to_do() {
        let k = Path::new("/tmp/stage/vmlinuz");
        let i = Some(Path::new("/tmp/stage/initrd"));
        let cases = [
            (
                Errno::PERM,
                &["/tmp/stage/vmlinuz", "lockdown", "EPERM"][..],
            ),
            (Errno::NOEXEC, &["/tmp/stage/vmlinuz", "bzImage", "ENOEXEC"]),
            (
                Errno::KEYREJECTED,
                &["signature of /tmp/stage/vmlinuz", "signed", "EKEYREJECTED"],
            ),
            (Errno::NOSYS, &["CONFIG_KEXEC_FILE", "ENOSYS"]),
            (Errno::NOMEM, &["initrd /tmp/stage/initrd", "ENOMEM"]),
            (Errno::INVAL, &["2048", "EINVAL"]),
            (Errno::IO, &["/tmp/stage/vmlinuz", "failed"]),
        ];
        for (errno, wants) in cases {
            let m = explain(errno, k, i);
            for w in wants {
                assert!(m.contains(w), "{errno:?}: {m:?} lacks {w:?}");
            }
        }
    }

    #[test]
    fn long_or_nul_cmdlines_are_refused_and_redacted() {
        let long = format!("kiln.credential=TOPSECRET {}", "x".repeat(2100));
        let e = check_cmdline(&long).unwrap_err().to_string();
        assert!(e.contains("at most 2047"), "{e}");
        assert!(!e.contains("TOPSECRET"), "{e}");
        assert!(check_cmdline("a\0b").is_err());
        assert_eq!(check_cmdline("ro").unwrap().as_bytes_with_nul(), b"ro\0");
    }

    #[test]
    fn load_errors_name_the_missing_file() {
        let img = Image {
            kernel: "/nonexistent/kiln-vmlinuz".into(),
            initrd: None,
            cmdline: "ro".into(),
        };
        let e = format!("{:#}", load(&img).unwrap_err());
        assert!(
            e.contains("opening the kernel /nonexistent/kiln-vmlinuz"),
            "{e}"
        );
    }

    #[test]
    fn unmount_order() {
        let mi = "\
22 1 0:20 / / rw - rootfs rootfs rw
23 22 0:21 / /proc rw - proc proc rw
24 22 0:5 / /dev rw - devtmpfs devtmpfs rw
30 22 253:3 / /mnt/root rw - ext4 /dev/vda3 rw
31 30 253:2 / /mnt/root/boot/efi rw - vfat /dev/vda2 rw
32 22 0:30 / /run rw - tmpfs tmpfs rw
";
        assert_eq!(targets(mi), ["/mnt/root/boot/efi", "/mnt/root"]);
        let installed = "\
20 1 253:3 / / rw - ext4 /dev/vda3 rw
21 20 253:2 / /boot/efi rw - vfat /dev/vda2 rw
22 20 0:22 / /tmp rw - tmpfs tmpfs rw
23 20 253:4 / /home rw - xfs /dev/vda4 rw
";
        assert_eq!(targets(installed), ["/home", "/boot/efi", "/"]);
    }
}
