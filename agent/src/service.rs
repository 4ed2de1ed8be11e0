//! `kiln-agent agent [--config FILE]`: the agent as a service of an installed system,
//! started by the service provisioning injected (a systemd unit, or an inittab
//! `respawn` line under busybox/sysvinit; [`crate::provision::inject`]).
//!
//! It prints the banner (the same first line as the installer's PID 1) on stdout, which
//! is the console under busybox init and the journal under systemd, then the machine and
//! control plane from `/etc/kiln/agent.json`. The control-plane client (orders such as
//! re-provisioning, which end in [`crate::kexec::installer::to_installer`]) is not part
//! of this module yet: after the banner the service waits, so the init system does not
//! restart it in a loop.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Result, bail};

use crate::events::{Event, Level, Reporter};
use crate::kexec::installer::{CONFIG, read_config};
use crate::ui::plain::PlainSink;

/// Runs the service; returns only on a configuration error.
pub fn run(args: &[String]) -> Result<()> {
    let config = match args {
        [] => PathBuf::from(CONFIG),
        [flag, file] if flag == "--config" => PathBuf::from(file),
        _ => bail!("usage: kiln-agent agent [--config FILE]"),
    };
    let reporter = Arc::new(Reporter::new());
    reporter.add_sink(Box::new(PlainSink::new(
        vec![Box::new(std::io::stdout())],
        Level::Info,
    )));
    reporter.emit(Event::Banner {
        version: crate::VERSION.into(),
        since_boot_ms: crate::events::since_boot().as_millis() as u64,
    });
    let cmdline = crate::cmdline::Settings::parse(
        &std::fs::read_to_string("/proc/cmdline").unwrap_or_default(),
    );
    let consoles = crate::console::discover(
        std::path::Path::new("/sys"),
        &crate::console::from_cmdline(cmdline.values("console")),
    );
    reporter.emit(Event::Init {
        pid: rustix::process::getpid().as_raw_nonzero().get(),
        consoles: consoles.names(),
        video: consoles.video.clone(),
    });
    let cfg = match read_config(&config) {
        Ok(c) => c,
        Err(e) => {
            reporter.emit(Event::Message {
                level: Level::Error,
                text: format!("{e:#}"),
            });
            // Slow down an init system that restarts us at once.
            std::thread::sleep(Duration::from_secs(10));
            return Err(e);
        }
    };
    reporter.emit(Event::ControlPlane {
        url: Some(cfg.url.clone()),
        token: false,
        ca_pin: cfg.ca_pin.clone(),
    });
    reporter.emit(Event::info(format!(
        "installed system, machine {}; re-provision with `kiln-agent kexec-installer --installer FILE|URL`",
        cfg.machine_id
    )));
    loop {
        std::thread::sleep(Duration::from_secs(3600));
    }
}
