//! PID 1 of the installer.
//!
//! Start-up, in order (each step reports and goes on; nothing here may panic or return):
//! 1. [`mounts::mount_all`]: proc, sys, dev, dev/pts, run, tmp, securityfs, efivarfs.
//! 2. fds 0-2 on /dev/console when the kernel left them closed.
//! 3. Read /proc/cmdline ([`crate::cmdline`]) and find the consoles ([`crate::console`]).
//! 4. Print the banner (`kiln-agent <version>`, time since kernel start) on every console,
//!    then what was mounted, the control plane settings and any kernel-parameter warnings.
//! 5. Take over Ctrl-Alt-Del, handle signals ([`signals`]), reap orphans ([`reaper`]).
//! 6. Read operator commands on every console (`reboot`, `poweroff`, `shell` ...).
//! 7. Run the agent's work under a supervisor: an error or a panic is shown on every
//!    console, and the work is retried with backoff. PID 1 never exits.

pub mod mounts;
pub mod power;
pub mod reaper;
pub mod signals;

use crate::cmdline::{Parsed, Settings, UiMode};
use crate::console::{self, Consoles};
use crate::events::{Event, Level, PowerAction, Reporter};
use crate::ui::plain::PlainSink;
use crate::ui::tui::Displays;
use std::io::{BufRead, Write};
use std::panic::AssertUnwindSafe;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

/// What the agent's work gets to see.
pub struct Context {
    pub reporter: Arc<Reporter>,
    pub cmdline: Parsed,
    pub consoles: Consoles,
    /// The network once up; kept across retries of [`work`] (its threads renew leases).
    pub network: std::sync::Mutex<Option<crate::network::Network>>,
    /// Boots the installed system ([`crate::control::boot::Kexec`]).
    pub boot: Arc<dyn crate::control::boot::BootInstalled>,
}

/// PATH for PID 1 and everything it runs.
pub const INIT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// Runs PID 1. Never returns.
pub fn run() -> ! {
    // The kernel starts init with HOME and TERM only: without PATH, the tools the phases
    // run (e2fsck, mkfs.*, blkid) would be looked up in musl's default /usr/local/bin:/bin:/usr/bin
    // and the sbin ones not found.
    if std::env::var_os("PATH").is_none() {
        // SAFETY: first statement of PID 1, before any thread exists: nothing reads the
        // environment concurrently.
        unsafe { std::env::set_var("PATH", INIT_PATH) };
    }
    std::panic::set_hook(Box::new(|info| {
        // Straight to the kernel log and the console: the reporter may be what panicked.
        let msg = format!("kiln-agent: internal error: {info}\n");
        for dev in ["/dev/kmsg", "/dev/console"] {
            if let Ok(mut f) = std::fs::OpenOptions::new().write(true).open(dev) {
                let _ = f.write_all(msg.as_bytes());
            }
        }
    }));
    let mount_failures = mounts::mount_all();
    console_stdio();
    let cmdline = Settings::parse(&std::fs::read_to_string("/proc/cmdline").unwrap_or_default());
    let consoles = console::discover(
        Path::new("/sys"),
        &console::from_cmdline(cmdline.values("console")),
    );
    let reporter = Arc::new(Reporter::new());
    let min_level = if cmdline.settings.debug {
        Level::Debug
    } else {
        Level::Info
    };
    let (displays, tui_failures) = start_tuis(&reporter, &cmdline.settings, &consoles, min_level);
    reporter.add_sink(Box::new(PlainSink::new(
        open_consoles(&consoles, &displays.names()),
        min_level,
    )));

    reporter.emit(Event::Banner {
        version: crate::VERSION.into(),
        since_boot_ms: crate::events::since_boot().as_millis() as u64,
    });
    reporter.emit(Event::Init {
        pid: rustix::process::getpid().as_raw_nonzero().get(),
        consoles: consoles.names(),
        video: consoles.video.clone(),
    });
    for text in tui_failures {
        warn(&reporter, text);
    }
    for f in mount_failures {
        reporter.emit(Event::MountFailed {
            target: f.target.into(),
            error: f.error,
            required: f.required,
        });
    }
    let mounted = std::fs::read_to_string("/proc/self/mountinfo")
        .map(|s| mounts::parse_mountinfo(&s))
        .unwrap_or_default();
    reporter.emit(Event::Mounts { mounts: mounted });
    reporter.emit(Event::ControlPlane {
        url: cmdline.settings.url.clone(),
        token: cmdline.settings.token.is_some(),
        ca_pin: cmdline.settings.ca_pin.clone(),
    });
    for w in &cmdline.warnings {
        reporter.emit(Event::CmdlineWarning {
            key: w.key.clone(),
            message: w.message.clone(),
        });
    }

    // Ctrl-Alt-Del becomes SIGINT to us instead of an immediate hard reboot.
    if let Err(e) = rustix::system::reboot(rustix::system::RebootCommand::CadOff) {
        warn(&reporter, format!("cannot take over Ctrl-Alt-Del: {e}"));
    }
    if let Err(e) = signals::start(reporter.clone()) {
        warn(&reporter, format!("cannot handle signals: {e}"));
    }
    for c in &consoles.list {
        start_command_reader(reporter.clone(), &c.name, displays.clone());
    }

    let boot = Arc::new(crate::control::boot::Kexec {
        reporter: reporter.clone(),
        hints: cmdline.settings.disk.clone(),
    });
    let ctx = Context {
        reporter,
        cmdline,
        consoles,
        network: std::sync::Mutex::new(None),
        boot,
    };
    supervise(&ctx)
}

fn warn(reporter: &Reporter, text: String) {
    reporter.emit(Event::Message {
        level: Level::Warn,
        text,
    });
}

/// Runs [`work`] forever: on error or panic, report on every console and retry.
fn supervise(ctx: &Context) -> ! {
    let mut backoff = 5;
    loop {
        let outcome = std::panic::catch_unwind(AssertUnwindSafe(|| work(ctx)));
        let error = match outcome {
            Ok(Ok(())) => {
                ctx.reporter.emit(Event::info(
                    "nothing more to do; commands on any console: reboot, poweroff, shell, help",
                ));
                loop {
                    std::thread::sleep(Duration::from_secs(3600));
                }
            }
            Ok(Err(e)) => format!("{e:#}"),
            Err(panic) => format!("internal error: {}", panic_text(&panic)),
        };
        ctx.reporter.emit(Event::Fatal {
            error,
            retry_in_s: backoff,
        });
        std::thread::sleep(Duration::from_secs(backoff));
        backoff = (backoff * 2).min(60);
    }
}

fn panic_text(panic: &Box<dyn std::any::Any + Send>) -> String {
    panic
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "panic".into())
}

/// The agent's work, in order: network, then with `kiln.url=` the control plane
/// ([`crate::control::installer`]: register, heartbeat, orders). With `kiln.poweroff`
/// (tests) it powers off once the network step ran, whatever its outcome, after reporting it.
fn work(ctx: &Context) -> anyhow::Result<()> {
    let net = network_up(ctx);
    if ctx.cmdline.settings.poweroff {
        if let Err(e) = &net {
            ctx.reporter.emit(Event::Message {
                level: Level::Error,
                text: format!("{e:#}"),
            });
        }
        let err = power::act(&ctx.reporter, PowerAction::Poweroff, "kiln.poweroff is set");
        return Err(err.into());
    }
    net?;
    crate::control::installer(
        &ctx.cmdline.settings,
        ctx.reporter.clone(),
        ctx.boot.clone(),
    )
}

/// Brings the network up once; later calls find it up.
fn network_up(ctx: &Context) -> anyhow::Result<()> {
    use anyhow::Context as _;
    let mut slot = ctx.network.lock().unwrap_or_else(|e| e.into_inner());
    if slot.is_some() {
        return Ok(());
    }
    let params: Vec<(String, Option<String>)> = ctx
        .cmdline
        .params
        .iter()
        .map(|p| (p.key.clone(), p.value.clone()))
        .collect();
    let cfg = crate::network::NetworkConfig::from_params(&params)
        .context("reading the network settings from the kernel command line")?;
    let reporter = ctx.reporter.clone();
    let emit: crate::network::Emitter =
        Arc::new(move |detail| reporter.emit(Event::Network { detail }));
    let net = crate::network::bring_up(&cfg, &crate::network::Options::default(), emit)
        .context("bringing up the network")?;
    *slot = Some(net);
    Ok(())
}

/// Puts /dev/console on fds 0-2 where the kernel left them closed (no /dev/console in
/// the initramfs when init started).
fn console_stdio() {
    let Ok(console) = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/console")
    else {
        return;
    };
    let dups = [
        rustix::stdio::dup2_stdin,
        rustix::stdio::dup2_stdout,
        rustix::stdio::dup2_stderr,
    ];
    for (fd, dup) in dups.into_iter().enumerate() {
        // SAFETY: fds 0-2 are only borrowed for the duration of the fcntl probe.
        let open = unsafe { rustix::fd::BorrowedFd::borrow_raw(fd as i32) };
        if rustix::io::fcntl_getfd(open).is_err() {
            let _ = dup(&console);
        }
    }
}

/// Starts the TUI on each display console (a VT when the machine has video) unless
/// `kiln.ui=plain`. A console whose TUI cannot start keeps plain lines.
fn start_tuis(
    reporter: &Reporter,
    settings: &Settings,
    consoles: &Consoles,
    min_level: Level,
) -> (Displays, Vec<String>) {
    let mut started = Vec::new();
    if settings.ui == UiMode::Plain || !consoles.display {
        return (Displays::default(), Vec::new());
    }
    let mut failures = Vec::new();
    for c in consoles.list.iter().filter(|c| c.kind == console::Kind::Vt) {
        let tty = format!("/dev/{}", c.name);
        match crate::ui::tui::start(&tty, min_level) {
            Ok((sink, handle)) => {
                reporter.add_sink(Box::new(sink));
                started.push((tty, handle));
            }
            Err(e) => failures.push(format!("no TUI on {tty}, plain lines instead: {e:#}")),
        }
    }
    (Displays::new(started), failures)
}

/// Opens every console for writing, except those in `skip` (device paths that show the
/// TUI); falls back to /dev/console when nothing opened and no TUI runs.
fn open_consoles(consoles: &Consoles, skip: &[String]) -> Vec<Box<dyn Write + Send>> {
    let mut outs: Vec<Box<dyn Write + Send>> = Vec::new();
    for c in &consoles.list {
        if skip.contains(&format!("/dev/{}", c.name)) {
            continue;
        }
        if let Ok(f) = std::fs::OpenOptions::new()
            .write(true)
            .open(format!("/dev/{}", c.name))
        {
            outs.push(Box::new(f));
        }
    }
    if outs.is_empty() && skip.is_empty() {
        outs.push(Box::new(std::io::stdout()));
    }
    outs
}

/// An operator command typed on a console.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Command {
    Power(PowerAction),
    Shell,
    Help,
}

/// Parses a line typed on a console.
pub fn parse_command(line: &str) -> Option<Command> {
    match line.trim() {
        "reboot" => Some(Command::Power(PowerAction::Reboot)),
        "poweroff" | "shutdown" => Some(Command::Power(PowerAction::Poweroff)),
        "halt" => Some(Command::Power(PowerAction::Halt)),
        "shell" | "sh" => Some(Command::Shell),
        "help" | "?" => Some(Command::Help),
        _ => None,
    }
}

fn start_command_reader(reporter: Arc<Reporter>, name: &str, displays: Displays) {
    let path = format!("/dev/{name}");
    let Ok(input) = std::fs::File::open(&path) else {
        return;
    };
    let _ = std::thread::Builder::new()
        .name(format!("console-{name}"))
        .spawn(move || {
            let mut lines = std::io::BufReader::new(input).lines();
            while let Some(Ok(line)) = lines.next() {
                if line.trim().is_empty() {
                    continue;
                }
                match parse_command(&line) {
                    Some(Command::Power(a)) => {
                        let err = power::act(&reporter, a, &format!("typed on {path}"));
                        warn(&reporter, err.to_string());
                    }
                    Some(Command::Shell) => run_shell(&reporter, &path, &displays),
                    Some(Command::Help) | None => reporter.emit(Event::info(
                        "commands: reboot, poweroff, halt, shell (busybox sh on this console), help",
                    )),
                }
            }
        });
}

/// Runs a shell on `tty`; a TUI on that console stops drawing until the shell exits.
fn run_shell(reporter: &Reporter, tty: &str, displays: &Displays) {
    let open = |w: bool| {
        std::fs::OpenOptions::new()
            .read(!w)
            .write(w)
            .open(tty)
            .map(std::process::Stdio::from)
    };
    let (Ok(i), Ok(o), Ok(e)) = (open(false), open(true), open(true)) else {
        warn(reporter, format!("cannot open {tty} for a shell"));
        return;
    };
    reporter.emit(Event::info(format!(
        "starting a shell on {tty}; exit to return"
    )));
    let _tui_paused = displays.hand_over(tty);
    let spawned = reaper::spawn(
        std::process::Command::new("/bin/sh")
            .arg("-l")
            .stdin(i)
            .stdout(o)
            .stderr(e),
    );
    match spawned {
        Ok(mut child) => {
            let _ = child.wait();
            reporter.emit(Event::info("shell exited"));
        }
        Err(err) => warn(reporter, format!("starting /bin/sh: {err}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands() {
        let cases = [
            ("reboot\n", Some(Command::Power(PowerAction::Reboot))),
            ("  poweroff ", Some(Command::Power(PowerAction::Poweroff))),
            ("shutdown", Some(Command::Power(PowerAction::Poweroff))),
            ("halt", Some(Command::Power(PowerAction::Halt))),
            ("shell", Some(Command::Shell)),
            ("?", Some(Command::Help)),
            ("rm -rf /", None),
        ];
        for (line, want) in cases {
            assert_eq!(parse_command(line), want, "{line:?}");
        }
    }
}
