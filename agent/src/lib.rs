//! Kiln's installer agent.
//!
//! The same static binary runs as PID 1 of the installer initramfs ([`init`]) and as a
//! command-line tool for development. Its parts, one module each:
//!
//! - [`init`]: PID-1 duties: mounts, console stdio, reaping orphans, signals, power.
//! - [`cmdline`]: the kernel command line as typed settings.
//! - [`console`]: finding every active console (serial, VT/framebuffer).
//! - [`events`]: the typed events every part reports, fanned out to sinks.
//! - [`mountinfo`]: /proc/self/mountinfo, parsed once for PID 1 and disk choice.
//! - [`ui`]: sinks that render events: plain lines now, the TUI later.
//! - [`network`]: links, DHCP, static `ip=`, DNS, clock.
//! - [`provision`]: the provisioning phases from OCI image to installed disk.
//! - [`control`]: the control-plane protocol: registration, heartbeat, orders, run events.
//! - [`kexec`]: booting the installed system, or the installer again, without firmware.

pub mod cmdline;
pub mod console;
pub mod control;
pub mod events;
pub mod init;
pub mod kexec;
pub mod mountinfo;
pub mod network;
pub mod provision;
#[cfg(test)]
mod tests;
pub mod ui;

use std::process::ExitCode;

/// The agent's version as printed in the banner.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

const USAGE: &str =
    "usage: kiln-agent [version | cmdline [FILE] | provision ARGS... | serve ARGS... |
                   kexec ARGS... | boot-installed ARGS... | kexec-installer ARGS...]
  As PID 1 (the installer's /init) it takes no arguments and reads /proc/cmdline.
  version          print the version
  cmdline [FILE]   parse a kernel command line (default /proc/cmdline) and print the settings
  provision ...    run a provisioning order by hand (kiln-agent provision --help)
  serve ...        the agent service of an installed system (kiln-agent serve --help)
  kexec ...        boot a kernel with kexec (kiln-agent kexec --help)
  boot-installed   from the installer, boot the installed system on the disks
  kexec-installer  from an installed system, boot the Kiln installer again";

/// Entry point of the binary: PID 1 never returns; otherwise a small CLI.
pub fn main() -> ExitCode {
    if rustix::process::getpid().is_init() {
        init::run();
    }
    let args: Vec<String> = std::env::args().skip(1).collect();
    match cli(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("kiln-agent: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn cli(args: &[String]) -> anyhow::Result<()> {
    use anyhow::Context as _;
    match args.first().map(String::as_str) {
        Some("version") | Some("--version") => {
            println!("kiln-agent {VERSION}");
            Ok(())
        }
        Some("cmdline") => {
            let path = args.get(1).map_or("/proc/cmdline", String::as_str);
            let text = std::fs::read_to_string(path).with_context(|| format!("reading {path}"))?;
            let parsed = cmdline::Settings::parse(&text);
            for w in &parsed.warnings {
                eprintln!("warning: {w}");
            }
            println!("{}", serde_json::to_string_pretty(&parsed.settings)?);
            Ok(())
        }
        Some("provision") => provision::cli(&args[1..]),
        Some("serve") => control::serve_cli(&args[1..]),
        Some(c @ ("kexec" | "boot-installed" | "kexec-installer")) => {
            kexec::cli::cli(c, &args[1..])
        }
        _ => anyhow::bail!("{USAGE}"),
    }
}
