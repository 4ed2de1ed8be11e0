//! Typed events: everything the agent reports goes through here.
//!
//! Parts of the agent emit [`Event`]s on a [`Reporter`]; the reporter stamps each with a
//! sequence number and the time since the kernel started, and hands the resulting
//! [`Record`] to every [`Sink`] in order. The console sinks in [`crate::ui`] render them
//! as plain lines; the TUI and the control-plane uplink are further sinks. Nothing
//! downstream parses text: sinks match on the typed event.

use serde::Serialize;
use std::fmt;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Version of the event schema; bump on incompatible change.
pub const SCHEMA_VERSION: u32 = 1;

/// How much an event matters to an operator looking at a console.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Level {
    Debug,
    Info,
    Warn,
    Error,
}

/// A power action PID 1 can take.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum PowerAction {
    Reboot,
    Poweroff,
    Halt,
}

impl fmt::Display for PowerAction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            PowerAction::Reboot => "reboot",
            PowerAction::Poweroff => "poweroff",
            PowerAction::Halt => "halt",
        })
    }
}

/// One filesystem as seen in /proc/self/mountinfo.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct MountEntry {
    pub target: String,
    pub fstype: String,
}

/// Everything the agent reports.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum Event {
    /// Always the first event: version and time since the kernel started.
    Banner { version: String, since_boot_ms: u64 },
    /// The process is PID 1 (or not), and which consoles it writes to.
    Init {
        pid: i32,
        consoles: Vec<String>,
        /// The display's video (`framebuffer fb0`, `VGA text`); `None` when headless.
        video: Option<String>,
    },
    /// Where the agent will register, from the kernel parameters. The token itself is
    /// never reported, only whether there is one.
    ControlPlane {
        url: Option<String>,
        token: bool,
        ca_pin: Option<String>,
    },
    /// The filesystems mounted, read back from /proc/self/mountinfo.
    Mounts { mounts: Vec<MountEntry> },
    /// A mount that failed (non-fatal for optional ones).
    MountFailed {
        target: String,
        error: String,
        required: bool,
    },
    /// A kernel-parameter problem.
    CmdlineWarning { key: String, message: String },
    /// A signal the kernel or an operator sent to init.
    Signal { name: String, action: String },
    /// An orphan reaped.
    Reaped { pid: i32, status: String },
    /// A power action begins.
    Power { action: PowerAction, reason: String },
    /// A failure of the main task; the agent retries after `retry_in_s`.
    Fatal { error: String, retry_in_s: u64 },
    /// Network bring-up and upkeep ([`crate::network`]).
    Network { detail: crate::network::NetEvent },
    /// Waiting for an operator: the 6-character approval code to type into
    /// `kilnctl machines approve`, shown big on displays and as a line on serial consoles.
    ApprovalCode {
        code: String,
        expires_in_s: u64,
        server: String,
    },
    /// Registered with the control plane (by bootstrap token or approved code).
    Registered {
        server: String,
        machine_uuid: String,
        /// `"token"` or `"approval code"`.
        via: String,
    },
    /// An order from the control plane begins (`provision`, `boot_installed_system`,
    /// `reboot`), with a one-line summary.
    Order { kind: String, summary: String },
    /// Provisioning progress ([`crate::provision`]).
    Provision { detail: crate::provision::Event },
    /// About to kexec ([`crate::kexec`]): what is booted, the command line with its
    /// secrets redacted, and how (`reboot(LINUX_REBOOT_CMD_KEXEC)`, `systemctl kexec`).
    Kexec {
        kernel: String,
        initrd: Option<String>,
        cmdline: String,
        via: String,
    },
    /// Free text for things without a typed event yet.
    Message { level: Level, text: String },
}

impl Event {
    pub fn level(&self) -> Level {
        match self {
            Event::MountFailed { required: true, .. } | Event::Fatal { .. } => Level::Error,
            Event::MountFailed { .. } | Event::CmdlineWarning { .. } => Level::Warn,
            Event::Network { detail } => {
                use crate::network::NetEvent as N;
                match detail {
                    N::Warning { .. } | N::LeaseLost { .. } | N::LinkDown { .. } => Level::Warn,
                    N::ClockUnset { .. } | N::DhcpNak { .. } => Level::Warn,
                    N::DhcpDiscover { .. } | N::DhcpOffer { .. } | N::DhcpRequest { .. } => {
                        Level::Debug
                    }
                    _ => Level::Info,
                }
            }
            Event::Reaped { .. } => Level::Debug,
            Event::Message { level, .. } => *level,
            _ => Level::Info,
        }
    }

    pub fn info(text: impl Into<String>) -> Event {
        Event::Message {
            level: Level::Info,
            text: text.into(),
        }
    }
}

impl fmt::Display for Event {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Event::Banner {
                version,
                since_boot_ms,
            } => write!(
                f,
                "kiln-agent {version} started {}.{:03} s after kernel start",
                since_boot_ms / 1000,
                since_boot_ms % 1000
            ),
            Event::Init {
                pid,
                consoles,
                video,
            } => write!(
                f,
                "running as pid {pid}; consoles: {}; display: {}",
                consoles.join(" "),
                video
                    .as_ref()
                    .map_or("no (headless)".to_string(), |v| format!("yes ({v})"))
            ),
            Event::ControlPlane { url, token, ca_pin } => write!(
                f,
                "control plane: {}; bootstrap token: {}; CA pin: {}",
                url.as_deref().unwrap_or("none (kiln.url= not set)"),
                if *token {
                    "present"
                } else {
                    "none (approval code)"
                },
                ca_pin.as_deref().unwrap_or("none")
            ),
            Event::Mounts { mounts } => {
                f.write_str("mounted:")?;
                for m in mounts {
                    write!(f, " {}({})", m.target, m.fstype)?;
                }
                Ok(())
            }
            Event::MountFailed {
                target,
                error,
                required,
            } => write!(
                f,
                "mounting {target} failed{}: {error}",
                if *required { "" } else { " (optional)" }
            ),
            Event::CmdlineWarning { key, message } => {
                write!(f, "kernel parameter {key}: {message}")
            }
            Event::Signal { name, action } => write!(f, "received {name}: {action}"),
            Event::Reaped { pid, status } => write!(f, "reaped orphan pid {pid} ({status})"),
            Event::Power { action, reason } => write!(f, "{action}: {reason}"),
            Event::Fatal { error, retry_in_s } => {
                write!(f, "FAILED: {error} (retrying in {retry_in_s} s)")
            }
            Event::Network { detail } => write!(f, "{detail}"),
            Event::ApprovalCode {
                code,
                expires_in_s,
                server,
            } => write!(
                f,
                "approval code {code} (expires in {} min): approve with `kilnctl machines approve {code}` on {server}",
                expires_in_s.div_ceil(60)
            ),
            Event::Registered {
                server,
                machine_uuid,
                via,
            } => write!(
                f,
                "registered with {server} as machine {machine_uuid} ({via})"
            ),
            Event::Order { kind, summary } => write!(f, "order {kind}: {summary}"),
            Event::Provision { detail } => write!(f, "{detail}"),
            Event::Kexec {
                kernel,
                initrd,
                cmdline,
                via,
            } => write!(
                f,
                "kexec: booting {kernel} ({}) via {via} with: {cmdline}",
                initrd
                    .as_deref()
                    .map_or("no initrd".to_string(), |i| format!("initrd {i}"))
            ),
            Event::Message { text, .. } => f.write_str(text),
        }
    }
}

/// An event as delivered to sinks.
#[derive(Debug, Clone, Serialize)]
pub struct Record {
    pub schema: u32,
    pub seq: u64,
    /// Milliseconds since the kernel started (CLOCK_BOOTTIME).
    pub uptime_ms: u64,
    pub level: Level,
    #[serde(flatten)]
    pub event: Event,
}

/// Something that shows or forwards events. Called in order, one record at a time.
pub trait Sink: Send {
    fn record(&mut self, record: &Record);
}

/// Stamps events and fans them out to sinks. Cheap to share (`Arc<Reporter>`).
pub struct Reporter {
    seq: AtomicU64,
    sinks: Mutex<Vec<Box<dyn Sink>>>,
}

impl Default for Reporter {
    fn default() -> Self {
        Self::new()
    }
}

impl Reporter {
    pub fn new() -> Self {
        Reporter {
            seq: AtomicU64::new(0),
            sinks: Mutex::new(Vec::new()),
        }
    }

    pub fn add_sink(&self, sink: Box<dyn Sink>) {
        self.sinks
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(sink);
    }

    pub fn emit(&self, event: Event) {
        let record = Record {
            schema: SCHEMA_VERSION,
            seq: self.seq.fetch_add(1, Ordering::Relaxed),
            uptime_ms: since_boot().as_millis() as u64,
            level: event.level(),
            event,
        };
        // A sink that panicked poisons the lock; keep reporting through the others.
        let mut sinks = self.sinks.lock().unwrap_or_else(|e| e.into_inner());
        for sink in sinks.iter_mut() {
            sink.record(&record);
        }
    }
}

/// Time since the kernel started (CLOCK_BOOTTIME, which counts suspend too).
pub fn since_boot() -> Duration {
    let ts = rustix::time::clock_gettime(rustix::time::ClockId::Boottime);
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    /// A sink that keeps records, for tests.
    #[derive(Clone, Default)]
    pub struct Collect(pub Arc<Mutex<Vec<Record>>>);

    impl Sink for Collect {
        fn record(&mut self, record: &Record) {
            self.0.lock().unwrap().push(record.clone());
        }
    }

    #[test]
    fn records_are_sequenced_and_serialize_typed() {
        let r = Reporter::new();
        let c = Collect::default();
        r.add_sink(Box::new(c.clone()));
        r.emit(Event::Banner {
            version: "1.2.3".into(),
            since_boot_ms: 1234,
        });
        r.emit(Event::Fatal {
            error: "no disk".into(),
            retry_in_s: 5,
        });
        let got = c.0.lock().unwrap();
        assert_eq!(got[0].seq, 0);
        assert_eq!(got[1].seq, 1);
        assert_eq!(
            got[0].event.to_string(),
            "kiln-agent 1.2.3 started 1.234 s after kernel start"
        );
        assert_eq!(got[1].level, Level::Error);
        let json: serde_json::Value = serde_json::to_value(&got[1]).unwrap();
        assert_eq!(json["event"], "fatal");
        assert_eq!(json["schema"], 1);
        assert_eq!(json["retry_in_s"], 5);
    }
}
