//! The engine's phases as the protocol's steps ([`kiln_protocol::Step`]) with one overall
//! percentage that never decreases.
//!
//! | engine phase ([`Phase`]) | step | percent |
//! |---|---|---|
//! | inventory (image resolved, disk chosen) | `image_inspection` | 0-5 |
//! | layer0 | `bootloader_streaming` | 5-55 |
//! | partition, rootfs | `partition_resize` | 55-60 |
//! | extract | `layer_extraction` | 60-85 |
//! | cloud-init | `cloud_init_configuration` | 85-88 |
//! | inject | `agent_injection` | 88-92 |
//! | boot-plan, then sync | `sync_and_reboot` | 92-100 |
//!
//! Every step is started and completed in order, also one the engine had nothing to do
//! for (an image without layers 1+ still shows `layer_extraction` done).

use kiln_protocol::{RunEvent, Step};

use crate::provision::{Event, Phase};

/// The step a phase belongs to.
pub fn step_of(phase: Phase) -> Step {
    match phase {
        Phase::Inventory => Step::ImageInspection,
        Phase::Layer0 => Step::BootloaderStreaming,
        Phase::Partition | Phase::RootFs => Step::PartitionResize,
        Phase::Extract => Step::LayerExtraction,
        Phase::CloudInit => Step::CloudInitConfiguration,
        Phase::Inject => Step::AgentInjection,
        Phase::BootPlan => Step::SyncAndReboot,
    }
}

/// Overall percent range of a step.
pub fn range(step: Step) -> (u8, u8) {
    match step {
        Step::ImageInspection => (0, 5),
        Step::BootloaderStreaming => (5, 55),
        Step::PartitionResize => (55, 60),
        Step::LayerExtraction => (60, 85),
        Step::CloudInitConfiguration => (85, 88),
        Step::AgentInjection => (88, 92),
        Step::SyncAndReboot => (92, 100),
    }
}

/// Turns engine events into run events.
#[derive(Debug, Default)]
pub struct Steps {
    current: Option<Step>,
    percent: u8,
}

impl Steps {
    pub fn new() -> Steps {
        Steps::default()
    }

    /// The step under way.
    pub fn current(&self) -> Option<Step> {
        self.current
    }

    /// Moves to `step`: completes the current one, starts and completes any skipped, starts
    /// `step`. Never goes back.
    pub fn enter(&mut self, step: Step) -> Vec<RunEvent> {
        let mut out = Vec::new();
        if self.current.is_some_and(|c| c >= step) {
            return out;
        }
        if let Some(c) = self.current {
            out.push(RunEvent::StepCompleted { step: c });
        }
        for s in Step::ALL {
            if self.current.is_some_and(|c| s <= c) || s >= step {
                continue;
            }
            out.push(RunEvent::StepStarted { step: s });
            out.push(RunEvent::StepCompleted { step: s });
        }
        out.push(RunEvent::StepStarted { step });
        self.current = Some(step);
        out.extend(self.progress(step, range(step).0));
        out
    }

    fn progress(&mut self, step: Step, percent: u8) -> Option<RunEvent> {
        (percent > self.percent).then(|| {
            self.percent = percent;
            RunEvent::Progress { step, percent }
        })
    }

    /// The run events for one engine event: step changes, a progress event when the overall
    /// percent grew, and a log line for messages that are not byte counters.
    pub fn on_event(&mut self, e: &Event) -> Vec<RunEvent> {
        let step = step_of(e.phase);
        let mut out = self.enter(step);
        let step = self.current.unwrap_or(step);
        if let Some(t) = e.total
            && step == step_of(e.phase)
        {
            let (lo, hi) = range(step);
            let frac = if t == 0 {
                1.0
            } else {
                (e.done as f64 / t as f64).clamp(0.0, 1.0)
            };
            let p = lo + ((hi - lo) as f64 * frac).floor() as u8;
            // The step's end is reached when it completes, not by a byte counter.
            out.extend(self.progress(step, p.min(hi.saturating_sub(1)).max(lo)));
        }
        if e.total.is_none() && e.rate.is_none() && !e.message.is_empty() {
            out.push(RunEvent::Log {
                message: format!("[{}] {}", e.phase, e.message),
            });
        }
        out
    }

    /// Completes every remaining step (the last, `sync_and_reboot`, included) at 100 %.
    pub fn finish(&mut self) -> Vec<RunEvent> {
        let mut out = self.enter(Step::SyncAndReboot);
        out.extend(self.progress(Step::SyncAndReboot, 100));
        out.push(RunEvent::StepCompleted {
            step: Step::SyncAndReboot,
        });
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(phase: Phase, done: u64, total: Option<u64>, msg: &str) -> Event {
        Event {
            phase,
            done,
            total,
            rate: None,
            message: msg.into(),
        }
    }

    #[test]
    fn phases_map_onto_steps_in_order() {
        let phases = [
            Phase::Inventory,
            Phase::Layer0,
            Phase::Partition,
            Phase::RootFs,
            Phase::Extract,
            Phase::CloudInit,
            Phase::Inject,
            Phase::BootPlan,
        ];
        let steps: Vec<Step> = phases.iter().map(|p| step_of(*p)).collect();
        assert!(steps.windows(2).all(|w| w[0] <= w[1]), "{steps:?}");
        // Ranges tile 0..100 in step order.
        let mut at = 0;
        for s in Step::ALL {
            let (lo, hi) = range(s);
            assert_eq!(lo, at, "{s:?}");
            assert!(hi > lo);
            at = hi;
        }
        assert_eq!(at, 100);
    }

    /// Walks a whole run; checks every step starts and completes once, in order, and the
    /// percent never decreases and ends at 100.
    fn check_run(events: &[Event]) -> Vec<RunEvent> {
        let mut s = Steps::new();
        let mut out = s.enter(Step::ImageInspection);
        for e in events {
            out.extend(s.on_event(e));
        }
        out.extend(s.finish());
        let started: Vec<Step> = out
            .iter()
            .filter_map(|e| match e {
                RunEvent::StepStarted { step } => Some(*step),
                _ => None,
            })
            .collect();
        let completed: Vec<Step> = out
            .iter()
            .filter_map(|e| match e {
                RunEvent::StepCompleted { step } => Some(*step),
                _ => None,
            })
            .collect();
        assert_eq!(started, Step::ALL, "{out:#?}");
        assert_eq!(completed, Step::ALL, "{out:#?}");
        let percents: Vec<u8> = out
            .iter()
            .filter_map(|e| match e {
                RunEvent::Progress { percent, .. } => Some(*percent),
                _ => None,
            })
            .collect();
        assert!(percents.windows(2).all(|w| w[0] < w[1]), "{percents:?}");
        assert_eq!(percents.last(), Some(&100));
        out
    }

    #[test]
    fn full_run() {
        let out = check_run(&[
            ev(Phase::Inventory, 0, None, "chose /dev/vda"),
            ev(Phase::Layer0, 0, Some(1000), "pulling layer 1/2"),
            ev(Phase::Layer0, 500, Some(1000), "/dev/vda"),
            ev(Phase::Layer0, 1000, Some(1000), "/dev/vda"),
            ev(Phase::Partition, 0, None, "root partition 3 grown"),
            ev(Phase::RootFs, 0, None, "ext4 grown"),
            ev(Phase::Extract, 10, Some(20), ""),
            ev(
                Phase::Extract,
                5,
                Some(20),
                "second layer restarts its counter",
            ),
            ev(Phase::CloudInit, 0, None, "seed written"),
            ev(Phase::Inject, 0, None, "agent installed"),
            ev(Phase::BootPlan, 0, None, "kernel found"),
        ]);
        assert!(out.contains(&RunEvent::Progress {
            step: Step::BootloaderStreaming,
            percent: 30
        }));
        assert!(out.contains(&RunEvent::Log {
            message: "[inventory] chose /dev/vda".into()
        }));
        // Byte counters are progress, not log lines.
        assert!(!out.iter().any(|e| matches!(e, RunEvent::Log { message } if message.contains("/dev/vda") && !message.contains("chose"))));
    }

    #[test]
    fn skipped_phases_still_show_every_step() {
        // No layers 1+ and no cloud-init / injection.
        check_run(&[
            ev(Phase::Layer0, 1, Some(1), ""),
            ev(Phase::Partition, 0, None, "grown"),
            ev(Phase::BootPlan, 0, None, "kernel found"),
        ]);
        // Nothing at all happened after inspection.
        check_run(&[]);
    }

    #[test]
    fn late_events_of_an_earlier_phase_never_go_back() {
        let mut s = Steps::new();
        s.enter(Step::ImageInspection);
        s.on_event(&ev(Phase::Extract, 1, Some(2), ""));
        let back = s.on_event(&ev(Phase::Layer0, 1, Some(1), "verified"));
        assert!(
            back.iter()
                .all(|e| !matches!(e, RunEvent::StepStarted { .. } | RunEvent::Progress { .. })),
            "{back:?}"
        );
        assert_eq!(s.current(), Some(Step::LayerExtraction));
    }
}
