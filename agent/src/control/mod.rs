//! The agent side of the control-plane protocol (docs/protocol.md), one module per thing:
//!
//! - [`config`]: where the server is and who this machine is there (kernel command line in
//!   the installer, `/etc/kiln/agent.json` on an installed system).
//! - [`trust`]: the CA pin: `/ca.pem` fetched once, checked, then the only trust anchor.
//! - [`api`]: the protocol calls ([`api::Api`]) and their HTTPS client with retries.
//! - [`inventory`]: the hardware inventory sent at registration.
//! - [`register`]: bootstrap token, or approval code and claim polling.
//! - [`session`]: heartbeat thread, long-poll for orders, actions acknowledged before they
//!   run, re-registration on `401`.
//! - [`provisioning`]: a `provision` order through the provisioning engine.
//! - [`steps`]: engine phases as protocol steps with a monotone percent.
//! - [`uplink`]: the run's event queue (batches, sequence numbers, resend until acked).
//! - [`boot`]: the seam to the kexec code.
//!
//! Where it runs: [`installer`] from PID 1 once the network is up (with `kiln.url=`), and
//! [`serve_cli`] (`kiln-agent serve`) on an installed system.

pub mod api;
pub mod boot;
pub mod config;
#[cfg(test)]
pub mod fake;
pub mod inventory;
pub mod provisioning;
pub mod register;
pub mod session;
pub mod steps;
pub mod trust;
pub mod uplink;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, Result};

use crate::events::{Level, Reporter};
use boot::BootInstalled;
use config::Config;
use session::Hooks;

/// Establishes trust and serves the control plane of `cfg` (see [`session::serve`]).
pub fn connect(cfg: &mut Config, reporter: Arc<Reporter>, hooks: &Hooks) -> Result<()> {
    let tls = trust::establish(&cfg.server, cfg.ca_pin.as_deref(), &cfg.ca_file)?;
    let api = Arc::new(api::Client::new(&cfg.server, tls));
    session::serve(cfg, api, reporter, hooks)
}

/// The installer's control-plane work (PID 1, after the network is up). Returns `Ok` at
/// once without `kiln.url=`.
pub fn installer(
    settings: &crate::cmdline::Settings,
    reporter: Arc<Reporter>,
    boot: Arc<dyn BootInstalled>,
) -> Result<()> {
    let state_dir = Path::new(config::INSTALLER_STATE)
        .parent()
        .unwrap_or(Path::new("/run/kiln"));
    let saved = std::fs::read_to_string(config::INSTALLER_STATE).ok();
    let Some(mut cfg) = Config::from_cmdline(settings, state_dir, saved.as_deref())? else {
        return Ok(());
    };
    let hooks = Hooks::installer(reporter.clone(), boot);
    connect(&mut cfg, reporter, &hooks)
}

const SERVE_USAGE: &str = "usage: kiln-agent serve [--config FILE] [--debug]
  Serves the control plane from an installed system: registers with the bootstrap token of
  the config (install.sh) or uses the machine credential the installer injected, heartbeats
  (environment \"installed\"), carries out orders. Default config: /etc/kiln/agent.json.";

/// `kiln-agent serve`: the daemon of an installed system. Runs until an error.
pub fn serve_cli(args: &[String]) -> Result<()> {
    let mut path = PathBuf::from(config::INSTALLED_CONFIG);
    let mut level = Level::Info;
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--config" => {
                path = it
                    .next()
                    .with_context(|| format!("--config needs a file\n{SERVE_USAGE}"))?
                    .into()
            }
            "--debug" => level = Level::Debug,
            "-h" | "--help" => anyhow::bail!("{SERVE_USAGE}"),
            other => anyhow::bail!("unknown argument {other:?}\n{SERVE_USAGE}"),
        }
    }
    let reporter = Arc::new(Reporter::new());
    reporter.add_sink(Box::new(crate::ui::plain::PlainSink::new(
        vec![Box::new(std::io::stderr())],
        level,
    )));
    // The same first line as the installer's PID 1: the console (busybox init) or the
    // journal (systemd) shows which agent runs.
    reporter.emit(crate::events::Event::Banner {
        version: crate::VERSION.into(),
        since_boot_ms: crate::events::since_boot().as_millis() as u64,
    });
    let cfg = std::fs::read_to_string(&path)
        .with_context(|| format!("reading {}", path.display()))
        .and_then(|text| Config::from_file(&text, &path));
    let mut cfg = match cfg {
        Ok(c) => c,
        Err(e) => {
            // The init system restarts the service: not in a tight loop.
            reporter.emit(crate::events::Event::Fatal {
                error: format!("{e:#}"),
                retry_in_s: 60,
            });
            std::thread::sleep(std::time::Duration::from_secs(60));
            return Err(e);
        }
    };
    reporter.emit(crate::events::Event::ControlPlane {
        url: Some(cfg.server.clone()),
        token: cfg.token.is_some(),
        ca_pin: cfg.ca_pin.clone(),
    });
    if let Some(id) = &cfg.identity {
        reporter.emit(crate::events::Event::info(format!(
            "installed system: machine {}, credential from {}",
            id.machine_uuid,
            path.display()
        )));
    }
    let hooks = Hooks::daemon(Arc::new(boot::NoKexec));
    connect(&mut cfg, reporter, &hooks)
}
