//! The run's event queue towards the control plane: numbers events (1, 2, 3 ... per run,
//! resuming after the order's `acked_seq`), sends them in batches, keeps every event the
//! server has not acknowledged and sends it again until it has.
//!
//! [`Uplink`] is the queue (no I/O); [`Flusher`] sends from a thread while the run goes
//! on; [`drain`] sends what is left at the end of a run, patiently: the outcome of a run
//! must reach the server.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, mpsc};
use std::time::{Duration, Instant};

use kiln_protocol::{EventBatch, RunEvent, SequencedEvent};
use time::OffsetDateTime;
use uuid::Uuid;

use super::api::{Api, CallError};
use super::config::Identity;

/// Events per batch (the server takes up to 1000).
pub const BATCH: usize = 200;

/// The queue of one run.
#[derive(Debug)]
pub struct Uplink {
    pub run: Uuid,
    next_seq: u64,
    acked: u64,
    pending: VecDeque<SequencedEvent>,
    batch: usize,
}

impl Uplink {
    /// A queue numbering from `acked_seq + 1` (the order's `acked_seq`).
    pub fn new(run: Uuid, acked_seq: u64) -> Uplink {
        Uplink {
            run,
            next_seq: acked_seq + 1,
            acked: acked_seq,
            pending: VecDeque::new(),
            batch: BATCH,
        }
    }

    /// Sets the batch size (tests).
    pub fn with_batch(mut self, n: usize) -> Uplink {
        self.batch = n.max(1);
        self
    }

    /// Queues `event`; returns its sequence number.
    pub fn push(&mut self, event: RunEvent) -> u64 {
        let seq = self.next_seq;
        self.next_seq += 1;
        self.pending.push_back(SequencedEvent {
            seq,
            at: OffsetDateTime::now_utc(),
            event,
        });
        seq
    }

    pub fn extend(&mut self, events: impl IntoIterator<Item = RunEvent>) {
        for e in events {
            self.push(e);
        }
    }

    /// The oldest unacknowledged events, at most one batch.
    pub fn next_batch(&self) -> Option<EventBatch> {
        (!self.pending.is_empty()).then(|| EventBatch {
            events: self.pending.iter().take(self.batch).cloned().collect(),
        })
    }

    /// The server holds everything up to `acked_seq`: forget those events.
    pub fn ack(&mut self, acked_seq: u64) {
        self.acked = self.acked.max(acked_seq);
        while self.pending.front().is_some_and(|e| e.seq <= self.acked) {
            self.pending.pop_front();
        }
    }

    pub fn acked(&self) -> u64 {
        self.acked
    }

    pub fn pending(&self) -> usize {
        self.pending.len()
    }

    /// Sends batches until the queue is empty, an error, or a batch that moved the ack
    /// nowhere (the server is missing an earlier event: sent again next time).
    pub fn flush(&mut self, api: &dyn Api, id: &Identity) -> Result<(), CallError> {
        while let Some(b) = self.next_batch() {
            let before = self.acked;
            let ack = api.post_events(id, self.run, &b)?;
            self.ack(ack.acked_seq);
            if self.acked == before {
                break;
            }
        }
        Ok(())
    }
}

/// Sends a shared [`Uplink`] from a thread, every `every` (the lock is not held while
/// sending). Stops when dropped.
pub struct Flusher {
    stop: Option<mpsc::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

/// One send round without holding the lock across the network call.
fn send_round(
    uplink: &Mutex<Uplink>,
    api: &dyn Api,
    id: &Identity,
    run: Uuid,
) -> Result<bool, CallError> {
    let Some(batch) = uplink
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .next_batch()
    else {
        return Ok(false);
    };
    let ack = api.post_events(id, run, &batch)?;
    let mut u = uplink.lock().unwrap_or_else(|e| e.into_inner());
    let before = u.acked();
    u.ack(ack.acked_seq);
    Ok(u.acked() > before && u.pending() > 0)
}

impl Flusher {
    pub fn start(
        uplink: Arc<Mutex<Uplink>>,
        api: Arc<dyn Api>,
        id: Identity,
        every: Duration,
    ) -> Flusher {
        let (tx, rx) = mpsc::channel::<()>();
        let run = uplink.lock().unwrap_or_else(|e| e.into_inner()).run;
        let thread = std::thread::Builder::new()
            .name("run-events".into())
            .spawn(move || {
                loop {
                    // Errors are kept for the next round; `drain` reports the last one.
                    while let Ok(true) = send_round(&uplink, api.as_ref(), &id, run) {}
                    match rx.recv_timeout(every) {
                        Err(mpsc::RecvTimeoutError::Timeout) => {}
                        _ => return,
                    }
                }
            })
            .ok();
        Flusher {
            stop: Some(tx),
            thread,
        }
    }
}

impl Drop for Flusher {
    fn drop(&mut self) {
        drop(self.stop.take());
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Sends everything left, retrying with growing pauses until `deadline`. A `401` is
/// returned at once (the caller registers again; the events stay queued).
pub fn drain(
    uplink: &Mutex<Uplink>,
    api: &dyn Api,
    id: &Identity,
    deadline: Instant,
) -> Result<(), CallError> {
    let mut pause = Duration::from_millis(200);
    loop {
        let r = uplink
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .flush(api, id);
        let left = uplink.lock().unwrap_or_else(|e| e.into_inner()).pending();
        match r {
            Ok(()) if left == 0 => return Ok(()),
            Err(e) if e.is_unauthorized() || Instant::now() + pause > deadline => return Err(e),
            Ok(()) if Instant::now() + pause > deadline => {
                return Err(CallError::Invalid {
                    what: "sending run events".into(),
                    message: format!("the server did not acknowledge {left} events"),
                });
            }
            _ => {}
        }
        std::thread::sleep(pause);
        pause = (pause * 2).min(Duration::from_secs(15));
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::cmdline::Secret;
    use crate::control::fake::Scripted;
    use kiln_protocol::{EventAck, Step};

    /// The server side of run events, in memory: stores by seq, acks the gap-free prefix
    /// (docs/protocol.md, "Run events"); can drop batches or fail.
    #[derive(Default)]
    pub struct FakeRuns {
        pub stored: Mutex<std::collections::BTreeMap<u64, RunEvent>>,
        pub acked: Mutex<u64>,
        pub batches: Mutex<Vec<Vec<u64>>>,
        /// Batch numbers (0-based) answered with a 503 without storing anything.
        pub fail: Mutex<Vec<usize>>,
        /// Batch numbers stored but whose answer is lost (connection cut).
        pub lose_answer: Mutex<Vec<usize>>,
    }

    impl FakeRuns {
        pub fn post(&self, batch: &EventBatch) -> Result<EventAck, CallError> {
            let n = {
                let mut b = self.batches.lock().unwrap();
                b.push(batch.events.iter().map(|e| e.seq).collect());
                b.len() - 1
            };
            if self.fail.lock().unwrap().contains(&n) {
                return Err(CallError::Unreachable {
                    what: "fake".into(),
                    attempts: 1,
                    message: "HTTP 503".into(),
                });
            }
            let mut stored = self.stored.lock().unwrap();
            let mut acked = self.acked.lock().unwrap();
            for e in &batch.events {
                if e.seq > *acked {
                    stored.entry(e.seq).or_insert_with(|| e.event.clone());
                }
            }
            while stored.contains_key(&(*acked + 1)) {
                *acked += 1;
            }
            if self.lose_answer.lock().unwrap().contains(&n) {
                return Err(CallError::Unreachable {
                    what: "fake".into(),
                    attempts: 1,
                    message: "connection reset".into(),
                });
            }
            Ok(EventAck { acked_seq: *acked })
        }
    }

    impl Scripted for FakeRuns {
        fn post_events(
            &self,
            _: &Identity,
            _: Uuid,
            batch: &EventBatch,
        ) -> Result<EventAck, CallError> {
            self.post(batch)
        }
    }

    pub fn id() -> Identity {
        Identity {
            machine_uuid: Uuid::nil(),
            credential: Secret::new("kmc_test"),
        }
    }

    fn log(n: u64) -> RunEvent {
        RunEvent::Log {
            message: format!("event {n}"),
        }
    }

    #[test]
    fn batches_in_order_and_forgets_acked() {
        let server = FakeRuns::default();
        let mut u = Uplink::new(Uuid::nil(), 0).with_batch(3);
        for i in 1..=7 {
            assert_eq!(u.push(log(i)), i);
        }
        u.flush(&server, &id()).unwrap();
        assert_eq!(u.pending(), 0);
        assert_eq!(u.acked(), 7);
        assert_eq!(
            *server.batches.lock().unwrap(),
            vec![vec![1, 2, 3], vec![4, 5, 6], vec![7]]
        );
        assert_eq!(server.stored.lock().unwrap().len(), 7);
    }

    #[test]
    fn failed_batch_is_kept_and_resent() {
        let server = FakeRuns::default();
        server.fail.lock().unwrap().push(1);
        let mut u = Uplink::new(Uuid::nil(), 0).with_batch(2);
        u.extend((1..=5).map(log));
        assert!(u.flush(&server, &id()).is_err());
        assert_eq!(u.acked(), 2);
        assert_eq!(u.pending(), 3);
        u.flush(&server, &id()).unwrap();
        assert_eq!(u.pending(), 0);
        assert_eq!(
            *server.batches.lock().unwrap(),
            vec![vec![1, 2], vec![3, 4], vec![3, 4], vec![5]]
        );
    }

    #[test]
    fn lost_answer_resend_is_idempotent() {
        let server = FakeRuns::default();
        server.lose_answer.lock().unwrap().push(0);
        let mut u = Uplink::new(Uuid::nil(), 0);
        u.extend((1..=3).map(log));
        assert!(u.flush(&server, &id()).is_err());
        assert_eq!(u.pending(), 3, "unacknowledged events are kept");
        u.flush(&server, &id()).unwrap();
        assert_eq!(u.pending(), 0);
        let stored = server.stored.lock().unwrap();
        assert_eq!(stored.keys().copied().collect::<Vec<_>>(), [1, 2, 3]);
    }

    #[test]
    fn resumes_after_acked_seq() {
        let server = FakeRuns::default();
        // A first agent got 4 events acknowledged, then restarted.
        let mut first = Uplink::new(Uuid::nil(), 0);
        first.extend((1..=4).map(log));
        first.flush(&server, &id()).unwrap();
        let acked = *server.acked.lock().unwrap();
        assert_eq!(acked, 4);
        // The order carries acked_seq = 4: the new agent numbers from 5.
        let mut again = Uplink::new(Uuid::nil(), acked);
        assert_eq!(
            again.push(RunEvent::StepStarted {
                step: Step::ImageInspection
            }),
            5
        );
        again.push(RunEvent::Completed);
        again.flush(&server, &id()).unwrap();
        assert_eq!(*server.acked.lock().unwrap(), 6);
        assert_eq!(
            server.stored.lock().unwrap().get(&6),
            Some(&RunEvent::Completed)
        );
    }

    #[test]
    fn flusher_and_drain_deliver_everything() {
        let server: Arc<FakeRuns> = Arc::default();
        server.fail.lock().unwrap().extend([0, 1]);
        let u = Arc::new(Mutex::new(Uplink::new(Uuid::nil(), 0).with_batch(4)));
        {
            let _f = Flusher::start(u.clone(), server.clone(), id(), Duration::from_millis(5));
            for i in 1..=10 {
                u.lock().unwrap().push(log(i));
                std::thread::sleep(Duration::from_millis(2));
            }
        }
        u.lock().unwrap().push(RunEvent::Completed);
        drain(
            &u,
            server.as_ref(),
            &id(),
            Instant::now() + Duration::from_secs(10),
        )
        .unwrap();
        assert_eq!(*server.acked.lock().unwrap(), 11);
        assert_eq!(u.lock().unwrap().pending(), 0);
    }

    #[test]
    fn drain_gives_up_at_the_deadline_and_keeps_events() {
        let server = FakeRuns::default();
        server.fail.lock().unwrap().extend(0..100);
        let u = Mutex::new(Uplink::new(Uuid::nil(), 0));
        u.lock().unwrap().push(RunEvent::Completed);
        let e = drain(
            &u,
            &server,
            &id(),
            Instant::now() + Duration::from_millis(300),
        );
        assert!(e.is_err());
        assert_eq!(u.lock().unwrap().pending(), 1);
    }
}
