//! Signals the kernel and operators send to init, with the sysvinit/busybox meanings:
//! SIGCHLD reaps orphans; SIGINT (Ctrl-Alt-Del, once CAD is handed to init) and SIGTERM
//! reboot; SIGUSR1 halts; SIGUSR2 and SIGPWR power off; SIGHUP is reported only.

use super::{power, reaper};
use crate::events::{Event, PowerAction, Reporter};
use signal_hook::consts::signal::{SIGCHLD, SIGHUP, SIGINT, SIGTERM, SIGUSR1, SIGUSR2};

/// SIGPWR (power failure, sent by UPS daemons and some ACPI setups); signal-hook
/// does not export it.
pub const SIGPWR: i32 = 30;
use std::sync::Arc;

/// What PID 1 does on a signal.
pub fn action_for(signal: i32) -> Option<PowerAction> {
    match signal {
        SIGINT | SIGTERM => Some(PowerAction::Reboot),
        SIGUSR1 => Some(PowerAction::Halt),
        SIGUSR2 | SIGPWR => Some(PowerAction::Poweroff),
        _ => None,
    }
}

fn name(signal: i32) -> &'static str {
    match signal {
        SIGCHLD => "SIGCHLD",
        SIGHUP => "SIGHUP",
        SIGINT => "SIGINT (Ctrl-Alt-Del)",
        SIGPWR => "SIGPWR",
        SIGTERM => "SIGTERM",
        SIGUSR1 => "SIGUSR1",
        SIGUSR2 => "SIGUSR2",
        _ => "signal",
    }
}

/// Installs the handlers and starts the thread that acts on them.
pub fn start(reporter: Arc<Reporter>) -> std::io::Result<()> {
    let mut signals = signal_hook::iterator::Signals::new([
        SIGCHLD, SIGHUP, SIGINT, SIGPWR, SIGTERM, SIGUSR1, SIGUSR2,
    ])?;
    std::thread::Builder::new()
        .name("signals".into())
        .spawn(move || {
            for signal in signals.forever() {
                if signal == SIGCHLD {
                    for (pid, status) in reaper::reap_orphans() {
                        reporter.emit(Event::Reaped { pid, status });
                    }
                    continue;
                }
                let action = action_for(signal);
                reporter.emit(Event::Signal {
                    name: name(signal).into(),
                    action: action.map_or("none".into(), |a| a.to_string()),
                });
                if let Some(a) = action {
                    let err = power::act(&reporter, a, name(signal));
                    reporter.emit(Event::Message {
                        level: crate::events::Level::Error,
                        text: err.to_string(),
                    });
                }
            }
        })?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sigpwr_matches_the_kernel() {
        assert_eq!(SIGPWR, rustix::process::Signal::POWER.as_raw());
    }

    #[test]
    fn actions() {
        assert_eq!(action_for(SIGINT), Some(PowerAction::Reboot));
        assert_eq!(action_for(SIGTERM), Some(PowerAction::Reboot));
        assert_eq!(action_for(SIGUSR1), Some(PowerAction::Halt));
        assert_eq!(action_for(SIGUSR2), Some(PowerAction::Poweroff));
        assert_eq!(action_for(SIGPWR), Some(PowerAction::Poweroff));
        assert_eq!(action_for(SIGHUP), None);
        assert_eq!(action_for(SIGCHLD), None);
    }
}
