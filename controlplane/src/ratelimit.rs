//! Rate limits (token buckets) for the endpoints a stranger can call: per client IP for agent
//! registration without and with a bootstrap token, claiming a credential, and approval by
//! code (on top of the per-account lock-out of [`crate::approval`]); per bootstrap token
//! (keyed by its SHA-256) for registrations with it. An answer over the limit is 429 with
//! `Retry-After`.
//!
//! The buckets live in memory: each replica limits on its own, so behind a load balancer
//! spreading one client over N replicas the effective limit is up to N times the configured
//! one. The client IP is the TCP peer; behind a reverse proxy that is the proxy, so put the
//! limits there or run the server directly. IPv6 clients are limited per /64, the block one
//! host usually gets.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::Instant;

/// One limit: `burst` requests at once, refilled at `per_minute`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Limit {
    pub burst: u32,
    pub per_minute: u32,
}

impl Limit {
    /// No limit.
    pub const OFF: Limit = Limit {
        burst: 0,
        per_minute: 0,
    };

    fn is_off(self) -> bool {
        self.burst == 0 || self.per_minute == 0
    }
}

/// The limits of each limited endpoint.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RateLimits {
    /// `POST /api/agent/v1/register` without a bootstrap token (creates a pending machine).
    pub register: Limit,
    /// `POST /api/agent/v1/claim` (agents poll it every few seconds while waiting).
    pub claim: Limit,
    /// `POST /api/machines/approve` (guessing codes across accounts).
    pub approve: Limit,
    /// `POST /api/agent/v1/register` with a bootstrap token, per client IP.
    pub token_register: Limit,
    /// `POST /api/agent/v1/register` with a bootstrap token, per token (a leaked token used
    /// from many addresses).
    pub per_token: Limit,
}

impl RateLimits {
    /// No limits at all (`--no-rate-limits`).
    pub const OFF: RateLimits = RateLimits {
        register: Limit::OFF,
        claim: Limit::OFF,
        approve: Limit::OFF,
        token_register: Limit::OFF,
        per_token: Limit::OFF,
    };
}

impl Default for RateLimits {
    fn default() -> Self {
        RateLimits {
            // A rack booting behind one NAT address registers at once.
            register: Limit {
                burst: 100,
                per_minute: 60,
            },
            // 100 machines behind one address polling every 5 s.
            claim: Limit {
                burst: 600,
                per_minute: 1200,
            },
            approve: Limit {
                burst: 10,
                per_minute: 10,
            },
            // A rack of 200 machines enrolling with one token behind one NAT address.
            token_register: Limit {
                burst: 200,
                per_minute: 120,
            },
            per_token: Limit {
                burst: 200,
                per_minute: 120,
            },
        }
    }
}

struct Bucket {
    tokens: f64,
    at: Instant,
}

/// Buckets per key (by default the client address) for one [`Limit`].
pub struct Limiter<K = IpAddr> {
    limit: Limit,
    buckets: Mutex<HashMap<K, Bucket>>,
}

/// Buckets kept before full (idle) ones are dropped.
const MAX_TRACKED: usize = 10_000;

impl Limiter<IpAddr> {
    /// Takes one request from `ip`'s bucket, or says in how many seconds to retry.
    pub fn check(&self, ip: IpAddr, now: Instant) -> Result<(), u64> {
        self.take(client_key(ip), now)
    }
}

impl<K: std::hash::Hash + Eq> Limiter<K> {
    pub fn new(limit: Limit) -> Limiter<K> {
        Limiter {
            limit,
            buckets: Mutex::new(HashMap::new()),
        }
    }

    /// Takes one request from `key`'s bucket, or says in how many seconds to retry.
    pub fn take(&self, key: K, now: Instant) -> Result<(), u64> {
        if self.limit.is_off() {
            return Ok(());
        }
        let burst = f64::from(self.limit.burst);
        let rate = f64::from(self.limit.per_minute) / 60.0; // tokens per second
        let mut map = self.buckets.lock().expect("rate limiter poisoned");
        if map.len() >= MAX_TRACKED && !map.contains_key(&key) {
            map.retain(|_, b| b.tokens + now.duration_since(b.at).as_secs_f64() * rate < burst);
        }
        let b = map.entry(key).or_insert(Bucket {
            tokens: burst,
            at: now,
        });
        b.tokens = (b.tokens + now.saturating_duration_since(b.at).as_secs_f64() * rate).min(burst);
        b.at = now;
        if b.tokens >= 1.0 {
            b.tokens -= 1.0;
            Ok(())
        } else {
            Err(((1.0 - b.tokens) / rate).ceil().max(1.0) as u64)
        }
    }
}

/// IPv4 addresses as they are; IPv6 by /64 (IPv4-mapped ones as IPv4).
fn client_key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let s = v6.segments();
                IpAddr::V6(std::net::Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 0))
            }
        },
    }
}

/// The limiters of a server.
pub struct Limiters {
    pub register: Limiter,
    pub claim: Limiter,
    pub approve: Limiter,
    pub token_register: Limiter,
    /// Keyed by the SHA-256 of the token.
    pub per_token: Limiter<String>,
}

impl Limiters {
    pub fn new(l: RateLimits) -> Limiters {
        Limiters {
            register: Limiter::new(l.register),
            claim: Limiter::new(l.claim),
            approve: Limiter::new(l.approve),
            token_register: Limiter::new(l.token_register),
            per_token: Limiter::new(l.per_token),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn burst_then_refill() {
        let l = Limiter::new(Limit {
            burst: 3,
            per_minute: 6, // one every 10 s
        });
        let t0 = Instant::now();
        for _ in 0..3 {
            l.check(ip("10.0.0.1"), t0).unwrap();
        }
        assert_eq!(l.check(ip("10.0.0.1"), t0), Err(10));
        // Another address has its own bucket.
        l.check(ip("10.0.0.2"), t0).unwrap();
        assert_eq!(l.check(ip("10.0.0.1"), t0 + Duration::from_secs(4)), Err(6));
        l.check(ip("10.0.0.1"), t0 + Duration::from_secs(10))
            .unwrap();
        assert!(
            l.check(ip("10.0.0.1"), t0 + Duration::from_secs(10))
                .is_err()
        );
        // Refill never exceeds the burst.
        let later = t0 + Duration::from_secs(3600);
        for _ in 0..3 {
            l.check(ip("10.0.0.1"), later).unwrap();
        }
        assert!(l.check(ip("10.0.0.1"), later).is_err());
    }

    #[test]
    fn ipv6_is_limited_per_64() {
        let l = Limiter::new(Limit {
            burst: 1,
            per_minute: 1,
        });
        let t = Instant::now();
        l.check(ip("2001:db8:1:2::1"), t).unwrap();
        assert!(l.check(ip("2001:db8:1:2:ffff::9"), t).is_err());
        l.check(ip("2001:db8:1:3::1"), t).unwrap();
        l.check(ip("::ffff:192.0.2.1"), t).unwrap();
        assert!(l.check(ip("192.0.2.1"), t).is_err());
    }

    #[test]
    fn off_never_limits() {
        let l = Limiter::new(Limit::OFF);
        let t = Instant::now();
        for _ in 0..1000 {
            l.check(ip("10.0.0.1"), t).unwrap();
        }
    }

    #[test]
    fn idle_buckets_are_dropped_when_many() {
        let l = Limiter::new(Limit {
            burst: 2,
            per_minute: 60,
        });
        let t = Instant::now();
        for i in 0..MAX_TRACKED as u32 {
            l.check(IpAddr::V4(i.into()), t).unwrap();
        }
        // One second later every bucket is full again and goes when a new client arrives.
        l.check(ip("255.255.255.255"), t + Duration::from_secs(1))
            .unwrap();
        assert_eq!(l.buckets.lock().unwrap().len(), 1);
    }
}
