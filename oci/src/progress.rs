//! Progress of a blob transfer: a shared counter anyone can poll, and typed events (serde
//! serializable, with a `Display` for the plain console line) delivered to a callback.

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Instant;

use serde::Serialize;

/// A shared progress counter for one transfer (cheap to clone; clones share the counts).
#[derive(Clone, Debug, Default)]
pub struct Progress(Arc<Counts>);

#[derive(Debug, Default)]
struct Counts {
    done: AtomicU64,
    total: AtomicU64,
    resumes: AtomicU32,
    started: OnceLock<Instant>,
}

/// A point-in-time view of a [`Progress`].
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct ProgressSnapshot {
    /// Bytes received and verified-so-far (hashed).
    pub done: u64,
    /// Bytes expected.
    pub total: u64,
    /// Average rate since the first byte, bytes per second.
    pub rate: f64,
    /// How many times the transfer was resumed after a cut.
    pub resumes: u32,
}

impl Progress {
    /// A counter expecting `total` bytes.
    pub fn new(total: u64) -> Self {
        let p = Self::default();
        p.0.total.store(total, Ordering::Relaxed);
        p
    }
    /// Adds `n` bytes.
    pub fn add(&self, n: u64) {
        self.0.started.get_or_init(Instant::now);
        self.0.done.fetch_add(n, Ordering::Relaxed);
    }
    /// Counts a resume.
    pub fn resumed(&self) {
        self.0.resumes.fetch_add(1, Ordering::Relaxed);
    }
    /// Current values.
    pub fn snapshot(&self) -> ProgressSnapshot {
        let done = self.0.done.load(Ordering::Relaxed);
        let secs = self
            .0
            .started
            .get()
            .map_or(0.0, |t| t.elapsed().as_secs_f64());
        ProgressSnapshot {
            done,
            total: self.0.total.load(Ordering::Relaxed),
            rate: if secs > 0.0 { done as f64 / secs } else { 0.0 },
            resumes: self.0.resumes.load(Ordering::Relaxed),
        }
    }
}

/// Something that happened to a blob transfer.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(tag = "event", rename_all = "kebab-case")]
pub enum BlobEvent {
    /// Bytes arrived.
    Progress {
        /// Blob digest.
        digest: String,
        /// Counts.
        #[serde(flatten)]
        progress: ProgressSnapshot,
    },
    /// The connection was cut; the transfer resumes from `at`.
    Resuming {
        /// Blob digest.
        digest: String,
        /// Byte offset the transfer resumes from.
        at: u64,
        /// What happened.
        reason: String,
    },
    /// All bytes arrived and the digest matched.
    Verified {
        /// Blob digest.
        digest: String,
        /// Size.
        bytes: u64,
    },
}

fn short(d: &str) -> &str {
    d.get(..19).unwrap_or(d)
}

impl std::fmt::Display for BlobEvent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Progress {
                digest,
                progress: p,
            } => write!(
                f,
                "{}: {:.1}/{:.1} MiB at {:.1} MiB/s",
                short(digest),
                p.done as f64 / 1048576.0,
                p.total as f64 / 1048576.0,
                p.rate / 1048576.0
            ),
            Self::Resuming { digest, at, reason } => {
                write!(
                    f,
                    "{}: resuming at byte {at} after: {reason}",
                    short(digest)
                )
            }
            Self::Verified { digest, bytes } => {
                write!(f, "{}: {bytes} bytes verified", short(digest))
            }
        }
    }
}

/// A progress callback.
pub type ProgressCallback = Box<dyn FnMut(&BlobEvent) + Send>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_and_display() {
        let p = Progress::new(2 << 20);
        let q = p.clone();
        q.add(1 << 20);
        q.resumed();
        let s = p.snapshot();
        assert_eq!((s.done, s.total, s.resumes), (1 << 20, 2 << 20, 1));
        let e = BlobEvent::Progress {
            digest: "sha256:0123456789abcdef".into(),
            progress: ProgressSnapshot {
                rate: 1048576.0,
                ..s
            },
        };
        assert_eq!(
            e.to_string(),
            "sha256:0123456789ab: 1.0/2.0 MiB at 1.0 MiB/s"
        );
        let json = serde_json::to_value(&e).unwrap();
        assert_eq!(json["event"], "progress");
        assert_eq!(json["done"], 1 << 20);
    }
}
