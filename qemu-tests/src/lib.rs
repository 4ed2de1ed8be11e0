//! QEMU test harness for the Kiln installer.
//!
//! A [`GuestBuilder`] describes a machine (firmware, boot path, disks, NICs, display);
//! [`GuestBuilder::start`] runs QEMU with the guest's serial console on a pipe: every byte
//! is copied to a log file and kept in memory for [`Guest::expect`]; lines can be typed
//! with [`Guest::type_line`]. Whatever happens, dropping a [`Guest`] kills QEMU, and if the
//! test failed (a panic, or any harness call that returned an error) the whole serial log
//! is printed.
//!
//! KVM is used only when a probe proves it works ([`kvm_works`]); otherwise TCG. Guests
//! get no network unless a test adds one; user-mode networking is always `restrict=on`
//! with explicit forwards to 127.0.0.1.
//!
//! VM tests are `#[ignore]`d and named `vm_*`; `scripts/test vm` builds the artifacts
//! and runs them.

pub mod artifacts;
pub mod ppm;

use anyhow::{Context as _, Result, bail};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, ExitStatus, Stdio};
use std::sync::{Arc, Condvar, Mutex, OnceLock};
use std::time::{Duration, Instant};

/// Firmware the guest boots with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Firmware {
    /// Legacy BIOS (QEMU's default SeaBIOS).
    SeaBios,
    /// UEFI (Debian's OVMF, 4M build), with a fresh copy of the variable store.
    Ovmf,
}

/// How an ISO image is attached.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Media {
    Cdrom,
    UsbDisk,
}

/// What the guest boots.
#[derive(Debug, Clone)]
pub enum Boot {
    /// QEMU loads the kernel directly (`-kernel`, `-initrd`, `-append`).
    Kernel {
        kernel: PathBuf,
        initrd: Option<PathBuf>,
        append: String,
    },
    /// Firmware boots an ISO image from a CD drive or a USB stick.
    Iso { path: PathBuf, media: Media },
    /// Firmware boots from the first disk.
    Disk,
    /// The NIC's iPXE ROM boots over the network: QEMU's user-mode network
    /// (`restrict=on`: nothing leaves the VM) serves DHCP and, by TFTP, `bootfile` from
    /// `tftp_dir` (an iPXE script or a kernel).
    Pxe { tftp_dir: PathBuf, bootfile: String },
}

/// Disk controller a disk hangs off.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Bus {
    Virtio,
    Nvme,
    Sata,
}

/// A disk image with a serial number.
#[derive(Debug, Clone)]
pub struct Disk {
    pub path: PathBuf,
    pub bus: Bus,
    pub serial: String,
}

/// Builder for a guest.
#[derive(Debug, Clone)]
pub struct GuestBuilder {
    name: String,
    boot: Boot,
    firmware: Firmware,
    memory_mib: u32,
    display: bool,
    disks: Vec<Disk>,
    extra: Vec<String>,
    wrap: Vec<String>,
    paused: bool,
}

impl GuestBuilder {
    pub fn new(name: &str, boot: Boot) -> Self {
        GuestBuilder {
            name: name.to_string(),
            boot,
            firmware: Firmware::SeaBios,
            memory_mib: 512,
            display: false,
            disks: Vec::new(),
            extra: Vec::new(),
            wrap: Vec::new(),
            paused: false,
        }
    }

    pub fn firmware(mut self, f: Firmware) -> Self {
        self.firmware = f;
        self
    }

    pub fn memory_mib(mut self, m: u32) -> Self {
        self.memory_mib = m;
        self
    }

    /// Gives the guest a standard VGA display (screendumps work; no window opens).
    pub fn display(mut self, on: bool) -> Self {
        self.display = on;
        self
    }

    pub fn disk(mut self, path: impl Into<PathBuf>, bus: Bus, serial: &str) -> Self {
        self.disks.push(Disk {
            path: path.into(),
            bus,
            serial: serial.to_string(),
        });
        self
    }

    /// Raw extra QEMU arguments (NICs, devices) for tests that need them.
    pub fn args<I: IntoIterator<Item = S>, S: Into<String>>(mut self, args: I) -> Self {
        self.extra.extend(args.into_iter().map(Into::into));
        self
    }

    /// A virtio NIC on QEMU's user network with `restrict=on` (nothing leaves the VM) whose
    /// only ways out are `forwards`: guest `addr:port` to `127.0.0.1:host_port` on the
    /// host, one `socat` per guest connection. (A `guestfwd` to `tcp:HOST:PORT` is a
    /// single chardev connection shared by every guest connection: concurrent streams,
    /// like the agent's blob downloads, would interleave on it.)
    pub fn forwarded_nic(self, forwards: &[(&str, u16)]) -> Self {
        let mut netdev = "user,id=n0,restrict=on".to_string();
        for (addr, port) in forwards {
            netdev.push_str(&format!(
                ",guestfwd=tcp:{addr}-cmd:socat - TCP:127.0.0.1:{port}"
            ));
        }
        self.args([
            "-netdev".to_string(),
            netdev,
            "-device".into(),
            "virtio-net-pci,netdev=n0".into(),
        ])
    }

    /// Runs QEMU under a command prefix, e.g. `["ip", "netns", "exec", NS]` so that its
    /// tap devices are those of a network namespace the test made. The prefix must exec
    /// QEMU (not fork it): dropping the [`Guest`] kills the process it started.
    pub fn wrap<I: IntoIterator<Item = S>, S: Into<String>>(mut self, prefix: I) -> Self {
        self.wrap = prefix.into_iter().map(Into::into).collect();
        self
    }

    /// Starts the guest with its CPU stopped (`-S`): set things up over [`Guest::qmp`]
    /// (say `set_link`), then `cont`.
    pub fn paused(mut self, on: bool) -> Self {
        self.paused = on;
        self
    }

    /// The QEMU command line for this guest, with files placed in `dir`.
    pub fn command_line(&self, dir: &Path) -> Result<Vec<String>> {
        let mut a: Vec<String> = Vec::new();
        let mut push = |xs: &[&str]| a.extend(xs.iter().map(|s| s.to_string()));
        push(&["-name", &self.name, "-nodefaults", "-no-user-config"]);
        push(&["-machine", "q35", "-smp", "1"]);
        push(&["-m", &self.memory_mib.to_string()]);
        if kvm_works() {
            push(&["-accel", "kvm", "-cpu", "host"]);
        } else {
            push(&["-accel", "tcg", "-cpu", "max"]);
        }
        push(&["-display", "none", "-monitor", "none", "-serial", "stdio"]);
        push(&["-vga", if self.display { "std" } else { "none" }]);
        push(&["-no-reboot", "-device", "virtio-rng-pci"]);
        if self.paused {
            push(&["-S"]);
        }
        push(&[
            "-qmp",
            &format!("unix:{},server=on,wait=off", dir.join("qmp.sock").display()),
        ]);
        if self.firmware == Firmware::Ovmf {
            let vars = dir.join("OVMF_VARS.fd");
            std::fs::copy(artifacts::OVMF_VARS, &vars)
                .with_context(|| format!("copying {} (apt install ovmf)", artifacts::OVMF_VARS))?;
            push(&[
                "-drive",
                &format!(
                    "if=pflash,format=raw,unit=0,readonly=on,file={}",
                    artifacts::OVMF_CODE
                ),
                "-drive",
                &format!("if=pflash,format=raw,unit=1,file={}", vars.display()),
            ]);
        }
        let mut need_xhci = false;
        match &self.boot {
            Boot::Kernel {
                kernel,
                initrd,
                append,
            } => {
                push(&["-kernel", &kernel.display().to_string(), "-append", append]);
                if let Some(i) = initrd {
                    push(&["-initrd", &i.display().to_string()]);
                }
            }
            Boot::Iso { path, media } => {
                let file = path.display().to_string();
                match media {
                    Media::Cdrom => push(&[
                        "-drive",
                        &format!("if=none,id=iso,media=cdrom,readonly=on,file={file}"),
                        "-device",
                        "ide-cd,drive=iso,bus=ide.0,bootindex=0",
                    ]),
                    Media::UsbDisk => {
                        need_xhci = true;
                        push(&[
                            "-drive",
                            &format!("if=none,id=iso,format=raw,readonly=on,file={file}"),
                            "-device",
                            "usb-storage,bus=xhci.0,drive=iso,bootindex=0",
                        ])
                    }
                }
            }
            Boot::Disk => {}
            Boot::Pxe { tftp_dir, bootfile } => push(&[
                "-netdev",
                &format!(
                    "user,id=pxe,restrict=on,tftp={},bootfile={bootfile}",
                    tftp_dir.display()
                ),
                "-device",
                "virtio-net-pci,netdev=pxe,mac=52:54:00:12:34:56,bootindex=0",
            ]),
        }
        if need_xhci {
            // The controller must exist before the devices on it.
            let at = a
                .iter()
                .position(|x| x.starts_with("usb-storage"))
                .unwrap_or(a.len())
                - 1;
            a.splice(
                at..at,
                ["-device".to_string(), "qemu-xhci,id=xhci".to_string()],
            );
        }
        for (i, d) in self.disks.iter().enumerate() {
            let file = d.path.display();
            a.push("-drive".into());
            a.push(format!(
                "if=none,id=disk{i},format=raw,cache=unsafe,file={file}"
            ));
            a.push("-device".into());
            let boot = if matches!(self.boot, Boot::Disk) && i == 0 {
                ",bootindex=0"
            } else {
                ""
            };
            a.push(match d.bus {
                Bus::Virtio => format!("virtio-blk-pci,drive=disk{i},serial={}{boot}", d.serial),
                Bus::Nvme => format!("nvme,drive=disk{i},serial={}{boot}", d.serial),
                Bus::Sata => format!(
                    "ide-hd,drive=disk{i},bus=ide.{},serial={}{boot}",
                    i + 1,
                    d.serial
                ),
            });
        }
        a.extend(self.extra.iter().cloned());
        Ok(a)
    }

    /// Starts QEMU.
    pub fn start(self) -> Result<Guest> {
        let dir = tempfile::Builder::new()
            .prefix(&format!("kiln-vm-{}-", self.name))
            .tempdir()
            .context("creating the guest's temp dir")?;
        let args = self.command_line(dir.path())?;
        let log_path = artifacts::out_dir()
            .join("test-logs")
            .join(format!("{}.serial.log", self.name));
        std::fs::create_dir_all(log_path.parent().unwrap_or(Path::new(".")))?;
        let mut log = std::fs::File::create(&log_path)
            .with_context(|| format!("creating {}", log_path.display()))?;
        let mut argv = self.wrap.clone();
        argv.push("qemu-system-x86_64".into());
        argv.extend(args);
        writeln!(log, "# {}", argv.join(" "))?;
        let mut child = Command::new(&argv[0])
            .args(&argv[1..])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .with_context(|| format!("starting {} (apt install qemu-system-x86)", argv[0]))?;
        let started = Instant::now();
        let serial = Arc::new(Serial::default());
        let stdout = child.stdout.take().context("qemu stdout")?;
        let stderr = child.stderr.take().context("qemu stderr")?;
        copy_out(stdout, serial.clone(), Some(log));
        copy_out(stderr, serial.clone(), None);
        let stdin = child.stdin.take();
        eprintln!(
            "[{}] qemu started ({}), serial log {}",
            self.name,
            accel_name(),
            log_path.display()
        );
        Ok(Guest {
            name: self.name,
            child,
            stdin,
            serial,
            cursor: 0,
            started,
            log_path,
            dir,
            failed: false,
        })
    }
}

#[derive(Default)]
struct Serial {
    text: Mutex<(Vec<u8>, Vec<u8>, bool)>, // (serial bytes, qemu stderr, eof)
    changed: Condvar,
}

fn copy_out(mut from: impl Read + Send + 'static, to: Arc<Serial>, mut log: Option<std::fs::File>) {
    let is_serial = log.is_some();
    std::thread::spawn(move || {
        let mut buf = [0u8; 4096];
        loop {
            let n = from.read(&mut buf).unwrap_or(0);
            let mut t = to.text.lock().unwrap_or_else(|e| e.into_inner());
            if n == 0 {
                if is_serial {
                    t.2 = true;
                }
                to.changed.notify_all();
                return;
            }
            if is_serial {
                t.0.extend_from_slice(&buf[..n]);
            } else {
                t.1.extend_from_slice(&buf[..n]);
            }
            if let Some(l) = log.as_mut() {
                let _ = l.write_all(&buf[..n]);
            }
            to.changed.notify_all();
        }
    });
}

/// A running guest. Dropping it kills QEMU.
pub struct Guest {
    name: String,
    child: Child,
    stdin: Option<ChildStdin>,
    serial: Arc<Serial>,
    cursor: usize,
    started: Instant,
    log_path: PathBuf,
    dir: tempfile::TempDir,
    failed: bool,
}

impl Guest {
    /// Time since QEMU started.
    pub fn elapsed(&self) -> Duration {
        self.started.elapsed()
    }

    /// The serial output so far.
    pub fn serial_text(&self) -> String {
        let t = self.serial.text.lock().unwrap_or_else(|e| e.into_inner());
        String::from_utf8_lossy(&t.0).into_owned()
    }

    /// Waits until `needle` appears on the serial console after the previous match;
    /// returns the whole line it is on.
    pub fn expect(&mut self, needle: &str, timeout: Duration) -> Result<String> {
        let deadline = Instant::now() + timeout;
        let mut t = self.serial.text.lock().unwrap_or_else(|e| e.into_inner());
        loop {
            // Only whole lines: a line still being printed may not have its end yet.
            // Work on bytes: firmware prints escape codes and bytes that are not UTF-8.
            let bytes = &t.0[self.cursor..];
            let complete = bytes.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
            let hay = &bytes[..complete];
            let found = hay
                .windows(needle.len().max(1))
                .position(|w| w == needle.as_bytes());
            if let Some(at) = found {
                let start = hay[..at]
                    .iter()
                    .rposition(|&b| b == b'\n')
                    .map_or(0, |i| i + 1);
                let end = hay[at..]
                    .iter()
                    .position(|&b| b == b'\n')
                    .map_or(hay.len(), |i| at + i);
                let line = String::from_utf8_lossy(&hay[start..end])
                    .trim_end_matches('\r')
                    .to_string();
                self.cursor += end;
                return Ok(line);
            }
            let now = Instant::now();
            if t.2 || now >= deadline {
                let eof = t.2;
                let stderr = String::from_utf8_lossy(&t.1).into_owned();
                drop(t);
                let why = if eof {
                    format!("QEMU exited ({})", self.exit_status())
                } else {
                    "timed out".to_string()
                };
                self.failed = true;
                bail!(
                    "[{}] {why} after {:.1?} waiting for {needle:?} on the serial console; qemu stderr: {stderr}",
                    self.name,
                    self.elapsed()
                );
            }
            t = self
                .serial
                .changed
                .wait_timeout(t, deadline - now)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
    }

    /// How QEMU ended, once its output closed (it may take a moment to be reaped).
    fn exit_status(&mut self) -> String {
        for _ in 0..20 {
            match self.child.try_wait() {
                Ok(Some(status)) => return status.to_string(),
                Ok(None) => std::thread::sleep(Duration::from_millis(50)),
                Err(e) => return format!("status unknown: {e}"),
            }
        }
        "still running".into()
    }

    /// Types a line on the guest's serial console.
    pub fn type_line(&mut self, line: &str) -> Result<()> {
        let stdin = self.stdin.as_mut().context("serial input closed")?;
        stdin.write_all(format!("{line}\n").as_bytes())?;
        stdin.flush()?;
        Ok(())
    }

    /// Waits for QEMU to exit (the guest powered off).
    pub fn wait_exit(&mut self, timeout: Duration) -> Result<ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait()? {
                return Ok(status);
            }
            if Instant::now() >= deadline {
                self.failed = true;
                bail!(
                    "[{}] QEMU still running {timeout:?} after power-off was asked",
                    self.name
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Asks QEMU for a screendump (PPM) of the display into `path`.
    pub fn screendump(&mut self, path: &Path) -> Result<()> {
        self.qmp(
            "screendump",
            serde_json::json!({ "filename": path.display().to_string() }),
        )
        .map(drop)
    }

    /// Runs one QMP command (`execute` with `arguments`, e.g. `set_link` or `cont`) and
    /// returns its `return` value.
    pub fn qmp(
        &mut self,
        execute: &str,
        arguments: serde_json::Value,
    ) -> Result<serde_json::Value> {
        let command = serde_json::json!({ "execute": execute, "arguments": arguments });
        let r = qmp(&self.dir.path().join("qmp.sock"), &command.to_string())
            .with_context(|| format!("[{}] QMP {execute}", self.name));
        if r.is_err() {
            self.failed = true;
        }
        r
    }

    /// Runs `check` on this guest; an error marks the test failed, so the serial log is
    /// printed when the guest is dropped.
    pub fn check(&mut self, check: impl FnOnce(&mut Guest) -> Result<()>) -> Result<()> {
        let r = check(self);
        if r.is_err() {
            self.failed = true;
        }
        r
    }

    /// Marks the test as failed (the serial log is printed on drop).
    pub fn fail(&mut self) {
        self.failed = true;
    }
}

impl Drop for Guest {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if self.failed || std::thread::panicking() {
            eprintln!(
                "===== [{}] serial log ({}) =====\n{}\n===== end of serial log =====",
                self.name,
                self.log_path.display(),
                self.serial_text()
            );
        }
    }
}

/// Sends one QMP command and waits for its answer (the `return` value).
fn qmp(sock: &Path, command: &str) -> Result<serde_json::Value> {
    use std::io::BufRead;
    // Right after start QEMU may not have made the socket yet.
    let deadline = Instant::now() + Duration::from_secs(20);
    let stream = loop {
        match std::os::unix::net::UnixStream::connect(sock) {
            Ok(s) => break s,
            Err(_) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(50)),
            Err(e) => {
                return Err(e).with_context(|| format!("connecting to QMP at {}", sock.display()));
            }
        }
    };
    stream.set_read_timeout(Some(Duration::from_secs(30)))?;
    let mut w = stream.try_clone()?;
    let mut r = std::io::BufReader::new(stream);
    let mut line = String::new();
    r.read_line(&mut line)?; // greeting
    w.write_all(b"{\"execute\":\"qmp_capabilities\"}\n")?;
    let mut answer = serde_json::Value::Null;
    for cmd in [None, Some(command)] {
        if let Some(c) = cmd {
            w.write_all(c.as_bytes())?;
            w.write_all(b"\n")?;
        }
        loop {
            line.clear();
            if r.read_line(&mut line)? == 0 {
                bail!("QMP closed");
            }
            let mut v: serde_json::Value = serde_json::from_str(&line)?;
            if let Some(ret) = v.get_mut("return") {
                answer = ret.take();
                break;
            }
            if let Some(e) = v.get("error") {
                bail!("QMP error: {e}");
            }
        }
    }
    Ok(answer)
}

/// Whether a serial-console line is one of the agent's timestamped plain lines
/// (`[   12.345] ...`, three decimals) rather than a kernel log line (six decimals).
/// The banner (`kiln-agent <version> started ...`) has no timestamp and is not one.
pub fn is_agent_line(line: &str) -> bool {
    let Some(stamp) = line.strip_prefix('[').and_then(|r| r.split_once("] ")) else {
        return false;
    };
    let frac = stamp.0.trim_start().split_once('.');
    matches!(frac, Some((s, f)) if f.len() == 3
        && s.bytes().all(|b| b.is_ascii_digit())
        && f.bytes().all(|b| b.is_ascii_digit()))
}

/// Whether KVM works here: QEMU must create a KVM vCPU of the kind guests use (nested
/// setups fail at vCPU set-up even when /dev/kvm opens) and quit cleanly. Probed once.
pub fn kvm_works() -> bool {
    static KVM: OnceLock<bool> = OnceLock::new();
    *KVM.get_or_init(|| {
        if std::env::var_os("KILN_NO_KVM").is_some() || !Path::new("/dev/kvm").exists() {
            return false;
        }
        let child = Command::new("qemu-system-x86_64")
            .args([
                "-accel",
                "kvm",
                "-cpu",
                "host",
                "-machine",
                "q35",
                "-nodefaults",
            ])
            .args(["-display", "none", "-S"])
            .args(["-monitor", "stdio"])
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn();
        let Ok(mut child) = child else { return false };
        if let Some(mut i) = child.stdin.take() {
            let _ = i.write_all(b"quit\n");
        }
        child.wait().map(|s| s.success()).unwrap_or(false)
    })
}

fn accel_name() -> &'static str {
    if kvm_works() { "KVM" } else { "TCG" }
}

#[cfg(test)]
mod tests {
    use super::is_agent_line;

    #[test]
    fn agent_lines_are_told_from_kernel_lines() {
        assert!(is_agent_line("[    4.264] eth0: address 10.0.2.15/24"));
        assert!(is_agent_line("[12345.001] debug: eth0: DHCP discover"));
        assert!(!is_agent_line(
            "[    3.985835] 8021q: adding VLAN 0 to HW filter on device eth0"
        ));
        assert!(!is_agent_line(
            "kiln-agent 0.1.0 started 1.265 s after kernel start"
        ));
        assert!(!is_agent_line("[ok] eth0"));
    }
}
