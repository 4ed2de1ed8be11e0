//! Prometheus metrics (text exposition format 0.0.4): the in-memory request series. The
//! HTTP side (`GET /metrics`, the per-request middleware) is `api::metrics`.
//!
//! Counters and latency histograms per method, matched route and status are kept in memory,
//! labels from fixed sets only (known methods or `other`, matched routes or `unmatched`);
//! machine and run gauges are counted from the database at scrape time, so every replica
//! reports the same fleet numbers.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

const BUCKETS: [f64; 12] = [
    0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

#[derive(Default)]
struct Series {
    count: u64,
    sum: f64,
    buckets: [u64; BUCKETS.len()],
}

/// In-memory request metrics.
#[derive(Default)]
pub struct Metrics {
    series: Mutex<BTreeMap<(String, String, u16), Series>>,
    pending_expired: AtomicU64,
}

impl Metrics {
    /// Counts pending machines deleted by the expiry sweep.
    pub fn pending_expired(&self, n: u64) {
        self.pending_expired.fetch_add(n, Ordering::Relaxed);
    }

    pub fn observe(&self, method: &str, route: &str, status: u16, secs: f64) {
        let mut map = self.series.lock().expect("metrics poisoned");
        let s = map
            .entry((method.to_string(), route.to_string(), status))
            .or_default();
        s.count += 1;
        s.sum += secs;
        for (i, le) in BUCKETS.iter().enumerate() {
            if secs <= *le {
                s.buckets[i] += 1;
            }
        }
    }

    /// Renders the request metrics in the Prometheus text format.
    pub fn render(&self, out: &mut String) {
        out.push_str(
            "# HELP kiln_pending_machines_expired_total Pending machines deleted unapproved.\n\
             # TYPE kiln_pending_machines_expired_total counter\n",
        );
        let _ = writeln!(
            out,
            "kiln_pending_machines_expired_total {}",
            self.pending_expired.load(Ordering::Relaxed)
        );
        let map = self.series.lock().expect("metrics poisoned");
        out.push_str("# HELP kiln_http_requests_total HTTP requests answered.\n");
        out.push_str("# TYPE kiln_http_requests_total counter\n");
        for ((m, r, s), v) in map.iter() {
            let _ = writeln!(
                out,
                "kiln_http_requests_total{{method=\"{m}\",route=\"{}\",status=\"{s}\"}} {}",
                escape(r),
                v.count
            );
        }
        out.push_str("# HELP kiln_http_request_duration_seconds Time to answer HTTP requests.\n");
        out.push_str("# TYPE kiln_http_request_duration_seconds histogram\n");
        let mut per_route: BTreeMap<(&str, &str), Series> = BTreeMap::new();
        for ((m, r, _), v) in map.iter() {
            let agg = per_route.entry((m, r)).or_default();
            agg.count += v.count;
            agg.sum += v.sum;
            for i in 0..BUCKETS.len() {
                agg.buckets[i] += v.buckets[i];
            }
        }
        for ((m, r), v) in per_route {
            let labels = format!("method=\"{m}\",route=\"{}\"", escape(r));
            for (i, le) in BUCKETS.iter().enumerate() {
                let _ = writeln!(
                    out,
                    "kiln_http_request_duration_seconds_bucket{{{labels},le=\"{le}\"}} {}",
                    v.buckets[i]
                );
            }
            let _ = writeln!(
                out,
                "kiln_http_request_duration_seconds_bucket{{{labels},le=\"+Inf\"}} {}",
                v.count
            );
            let _ = writeln!(
                out,
                "kiln_http_request_duration_seconds_sum{{{labels}}} {}",
                v.sum
            );
            let _ = writeln!(
                out,
                "kiln_http_request_duration_seconds_count{{{labels}}} {}",
                v.count
            );
        }
    }
}

/// The methods with a series of their own; any other is counted as `other`, so strangers
/// cannot add series with made-up methods.
const METHODS: [&str; 7] = ["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"];

/// The `method` label of a request: one of [`METHODS`] or `other`.
pub fn method_label(method: &str) -> &'static str {
    METHODS
        .iter()
        .find(|m| **m == method)
        .copied()
        .unwrap_or("other")
}

fn escape(s: &str) -> String {
    s.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn method_labels() {
        for (method, label) in [
            ("GET", "GET"),
            ("POST", "POST"),
            ("PUT", "PUT"),
            ("PATCH", "PATCH"),
            ("DELETE", "DELETE"),
            ("HEAD", "HEAD"),
            ("OPTIONS", "OPTIONS"),
            ("get", "other"),
            ("TRACE", "other"),
            ("X1234", "other"),
        ] {
            assert_eq!(method_label(method), label, "{method}");
        }
    }

    #[test]
    fn renders_counters_and_histograms() {
        let m = Metrics::default();
        m.observe("GET", "/healthz", 200, 0.002);
        m.observe("GET", "/healthz", 200, 0.2);
        let mut out = String::new();
        m.render(&mut out);
        assert!(out.contains(
            "kiln_http_requests_total{method=\"GET\",route=\"/healthz\",status=\"200\"} 2"
        ));
        assert!(out.contains("le=\"0.001\"} 0"));
        assert!(out.contains("le=\"0.005\"} 1"));
        assert!(out.contains("le=\"0.25\"} 2"));
        assert!(out.contains(
            "kiln_http_request_duration_seconds_count{method=\"GET\",route=\"/healthz\"} 2"
        ));
    }
}
