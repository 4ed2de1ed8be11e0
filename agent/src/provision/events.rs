//! Typed progress events: every phase reports through [`Event`], never through text that
//! someone would have to parse. The console prints the [`std::fmt::Display`] line, the
//! control plane receives the serde form.

use std::fmt;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

/// The provisioning phases, in the order they run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Phase {
    /// Disk inventory and target choice.
    Inventory,
    /// Layer 0 (raw disk) streamed to the target disk.
    Layer0,
    /// GPT moved to the end of the disk and root partition grown.
    Partition,
    /// Root filesystem grown or created, then mounted.
    RootFs,
    /// Layers 1+ extracted onto the root filesystem.
    Extract,
    /// NoCloud seed written.
    CloudInit,
    /// Agent binary, config and service written.
    Inject,
    /// Kernel, initrd and command line found for kexec.
    BootPlan,
}

impl Phase {
    /// Short stable name used in console lines and logs.
    pub fn name(self) -> &'static str {
        match self {
            Phase::Inventory => "inventory",
            Phase::Layer0 => "layer0",
            Phase::Partition => "partition",
            Phase::RootFs => "rootfs",
            Phase::Extract => "extract",
            Phase::CloudInit => "cloud-init",
            Phase::Inject => "inject",
            Phase::BootPlan => "boot-plan",
        }
    }
}

impl fmt::Display for Phase {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// One progress report.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Event {
    /// Which phase reports.
    pub phase: Phase,
    /// Bytes (or entries, for extraction) done so far.
    pub done: u64,
    /// Total when known.
    pub total: Option<u64>,
    /// Bytes per second over the phase so far, when meaningful.
    pub rate: Option<f64>,
    /// Human-readable detail naming the object worked on.
    pub message: String,
}

impl Event {
    /// An event that only carries a message.
    pub fn msg(phase: Phase, message: impl Into<String>) -> Self {
        Event {
            phase,
            done: 0,
            total: None,
            rate: None,
            message: message.into(),
        }
    }
}

/// Formats a byte count with binary units (`1.5 GiB`).
pub fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut i = 0;
    while v >= 1024.0 && i + 1 < UNITS.len() {
        v /= 1024.0;
        i += 1;
    }
    if i == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[i])
    }
}

impl fmt::Display for Event {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "[{}]", self.phase)?;
        if self.done > 0 || self.total.is_some() {
            write!(f, " {}", human_bytes(self.done))?;
            if let Some(t) = self.total {
                let pct = if t == 0 {
                    100.0
                } else {
                    self.done as f64 * 100.0 / t as f64
                };
                write!(f, " / {} ({pct:.0}%)", human_bytes(t))?;
            }
        }
        if let Some(r) = self.rate {
            write!(f, " {}/s", human_bytes(r as u64))?;
        }
        if !self.message.is_empty() {
            write!(f, " {}", self.message)?;
        }
        Ok(())
    }
}

/// Where events go. Closures work: `&|e: Event| println!("{e}")`.
pub type Progress<'a> = &'a (dyn Fn(Event) + Sync);

/// A progress sink that drops everything (tests, dry runs).
pub fn no_progress(_: Event) {}

/// Rate-limited byte-progress reporter for one phase.
pub struct Meter<'a> {
    phase: Phase,
    total: Option<u64>,
    start: Instant,
    last: Instant,
    every: Duration,
    sink: Progress<'a>,
    message: String,
}

impl<'a> Meter<'a> {
    /// Starts measuring; reports at most once a second plus the final report.
    pub fn new(
        phase: Phase,
        total: Option<u64>,
        message: impl Into<String>,
        sink: Progress<'a>,
    ) -> Self {
        let now = Instant::now();
        Meter {
            phase,
            total,
            start: now,
            last: now,
            every: Duration::from_secs(1),
            sink,
            message: message.into(),
        }
    }

    /// Sets the total once it becomes known.
    pub fn set_total(&mut self, total: Option<u64>) {
        self.total = total;
    }

    fn event(&self, done: u64) -> Event {
        let secs = self.start.elapsed().as_secs_f64();
        let rate = (secs > 0.0).then(|| done as f64 / secs);
        Event {
            phase: self.phase,
            done,
            total: self.total,
            rate,
            message: self.message.clone(),
        }
    }

    /// Reports `done` if the last report is older than the interval.
    pub fn update(&mut self, done: u64) {
        if self.last.elapsed() >= self.every {
            self.last = Instant::now();
            (self.sink)(self.event(done));
        }
    }

    /// Reports unconditionally (phase end).
    pub fn finish(&mut self, done: u64) {
        (self.sink)(self.event(done));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_lines() {
        let cases = [
            (
                Event::msg(Phase::Inventory, "chose /dev/sda"),
                "[inventory] chose /dev/sda",
            ),
            (
                Event {
                    phase: Phase::Layer0,
                    done: 512 << 20,
                    total: Some(2 << 30),
                    rate: Some(100.0 * 1048576.0),
                    message: "/dev/vda".into(),
                },
                "[layer0] 512.0 MiB / 2.0 GiB (25%) 100.0 MiB/s /dev/vda",
            ),
            (
                Event {
                    phase: Phase::Extract,
                    done: 10,
                    total: None,
                    rate: None,
                    message: String::new(),
                },
                "[extract] 10 B",
            ),
        ];
        for (ev, want) in cases {
            assert_eq!(ev.to_string(), want);
        }
    }

    #[test]
    fn serde_round_trip() {
        let ev = Event {
            phase: Phase::RootFs,
            done: 1,
            total: Some(2),
            rate: None,
            message: "x".into(),
        };
        let s = serde_json::to_string(&ev).unwrap();
        assert!(s.contains("\"phase\":\"root-fs\""), "{s}");
        assert_eq!(serde_json::from_str::<Event>(&s).unwrap(), ev);
    }
}
