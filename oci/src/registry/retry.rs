//! Retries: which failures are retried, exponential backoff with jitter, `Retry-After`.

use std::time::Duration;

/// Retry and resume policy.
#[derive(Clone, Debug)]
pub struct RetryPolicy {
    /// Attempts per request (first try included).
    pub max_attempts: u32,
    /// First backoff delay.
    pub base_delay: Duration,
    /// Longest backoff delay (and cap on `Retry-After`).
    pub max_delay: Duration,
    /// Resumes of one blob in a row without receiving a byte before giving up.
    pub max_resumes_without_progress: u32,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            max_attempts: 8,
            base_delay: Duration::from_millis(250),
            max_delay: Duration::from_secs(30),
            max_resumes_without_progress: 8,
        }
    }
}

/// A failed HTTP exchange, kept apart so retry logic can inspect it.
pub(crate) enum Failure {
    Retryable(String, Option<Duration>),
    Fatal(anyhow::Error),
}

fn jitter(d: Duration) -> Duration {
    use std::sync::atomic::{AtomicU64, Ordering};
    static SEED: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |t| t.subsec_nanos() as u64);
    let mut x = SEED.fetch_add(0x9e37_79b9_7f4a_7c15, Ordering::Relaxed) ^ nanos;
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    let half = d / 2;
    half + Duration::from_nanos(x % (half.as_nanos() as u64 + 1))
}

/// Backoff before retry `attempt` (1-based): exponential with jitter, or `Retry-After` capped.
pub fn backoff(policy: &RetryPolicy, attempt: u32, retry_after: Option<Duration>) -> Duration {
    if let Some(ra) = retry_after {
        return ra.min(policy.max_delay);
    }
    let exp = policy
        .base_delay
        .saturating_mul(1u32 << attempt.saturating_sub(1).min(16));
    jitter(exp.min(policy.max_delay))
}

pub(crate) fn retry_after(resp: &ureq::Response) -> Option<Duration> {
    crate::retry_after::parse(resp.header("retry-after")?, std::time::SystemTime::now())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_and_honours_retry_after() {
        let p = RetryPolicy {
            base_delay: Duration::from_millis(100),
            max_delay: Duration::from_secs(2),
            ..Default::default()
        };
        for attempt in 1..10 {
            let d = backoff(&p, attempt, None);
            let nominal = Duration::from_millis(100 * (1 << (attempt - 1))).min(p.max_delay);
            assert!(
                d >= nominal / 2 && d <= nominal,
                "attempt {attempt}: {d:?} vs {nominal:?}"
            );
        }
        assert_eq!(
            backoff(&p, 1, Some(Duration::from_secs(1))),
            Duration::from_secs(1)
        );
        assert_eq!(
            backoff(&p, 1, Some(Duration::from_secs(600))),
            Duration::from_secs(2)
        );
    }
}
