//! Power actions: sync, then ask the kernel to reboot, power off or halt.

use crate::events::{Event, PowerAction, Reporter};
use rustix::system::RebootCommand;

/// Syncs and performs `action`. Returns only if the kernel refused.
pub fn act(reporter: &Reporter, action: PowerAction, reason: &str) -> std::io::Error {
    reporter.emit(Event::Power {
        action,
        reason: reason.to_string(),
    });
    rustix::fs::sync();
    // Let the serial consoles drain the last lines before the machine goes away.
    std::thread::sleep(std::time::Duration::from_millis(300));
    let cmd = match action {
        PowerAction::Reboot => RebootCommand::Restart,
        PowerAction::Poweroff => RebootCommand::PowerOff,
        PowerAction::Halt => RebootCommand::Halt,
    };
    match rustix::system::reboot(cmd) {
        Ok(()) => std::io::Error::other(format!("{action} returned without effect")),
        Err(e) => std::io::Error::other(format!("{action}: {e}")),
    }
}
