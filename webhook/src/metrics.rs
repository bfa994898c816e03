//! Prometheus metrics of the webhook, rendered in the text exposition format. Label values come
//! from fixed sets (known events, fixed outcomes), never from request data, so an attacker cannot
//! grow the series count.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Upper bounds of the request duration histogram, in seconds.
const BUCKETS: [f64; 14] = [
    0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0,
];

/// Events whose name is used as a label value as is; anything else is `other`.
const KNOWN_EVENTS: [&str; 10] = [
    "pull_request",
    "check_run",
    "check_suite",
    "issue_comment",
    "merge_group",
    "ping",
    "installation",
    "installation_repositories",
    "push",
    "none",
];

/// A label value for an event name from a request header.
pub fn event_label(event: &str) -> &'static str {
    KNOWN_EVENTS
        .iter()
        .find(|known| **known == event)
        .copied()
        .unwrap_or("other")
}

/// All webhook metrics.
#[derive(Debug, Default)]
pub struct Metrics {
    deliveries: Mutex<BTreeMap<(&'static str, &'static str), u64>>,
    ingested: Mutex<BTreeMap<(&'static str, &'static str), u64>>,
    buckets: [AtomicU64; BUCKETS.len()],
    count: AtomicU64,
    sum_micros: AtomicU64,
    gauges: Mutex<BTreeMap<&'static str, (&'static str, f64)>>,
}

impl Metrics {
    /// Counts one delivery by event and outcome (`queued`, `duplicate`, `ignored`,
    /// `bad_signature`, `bad_request`, `too_large`, `unsupported_media_type`, `unavailable`,
    /// `backlog_full`, `timeout`).
    pub fn delivery(&self, event: &'static str, outcome: &'static str) {
        *self
            .deliveries
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .entry((event, outcome))
            .or_default() += 1;
    }

    /// Counts one processed stream entry by event and result (ingest role).
    pub fn ingested(&self, event: &'static str, result: &'static str) {
        *self
            .ingested
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .entry((event, result))
            .or_default() += 1;
    }

    /// Sets a gauge (name and help are fixed strings of the code, never request data).
    pub fn set_gauge(&self, name: &'static str, help: &'static str, value: f64) {
        self.gauges
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .insert(name, (help, value));
    }

    /// Records how long one webhook request took.
    pub fn observe(&self, elapsed: Duration) {
        let seconds = elapsed.as_secs_f64();
        for (i, bound) in BUCKETS.iter().enumerate() {
            if seconds <= *bound {
                self.buckets[i].fetch_add(1, Ordering::Relaxed);
            }
        }
        self.count.fetch_add(1, Ordering::Relaxed);
        let micros = u64::try_from(elapsed.as_micros()).unwrap_or(u64::MAX);
        self.sum_micros.fetch_add(micros, Ordering::Relaxed);
    }

    /// The process's own metrics, without the Redis-derived ones (for the ingest-only role,
    /// which has no view of the stream's backlog).
    pub fn render_own(&self) -> String {
        let mut out = String::new();
        let counters =
            |out: &mut String,
             name: &str,
             help: &str,
             label: &str,
             map: &Mutex<BTreeMap<(&'static str, &'static str), u64>>| {
                let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} counter");
                for ((event, value), n) in map
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .iter()
                {
                    let _ = writeln!(out, "{name}{{event=\"{event}\",{label}=\"{value}\"}} {n}");
                }
            };
        counters(
            &mut out,
            "gatehouse_webhook_deliveries_total",
            "Webhook deliveries received, by event and outcome.",
            "outcome",
            &self.deliveries,
        );
        counters(
            &mut out,
            "gatehouse_ingest_entries_total",
            "Stream entries processed by the ingest role, by event and result.",
            "result",
            &self.ingested,
        );
        let name = "gatehouse_webhook_request_duration_seconds";
        let _ = writeln!(
            out,
            "# HELP {name} Time from request to answer for POST /webhook.\n# TYPE {name} histogram"
        );
        for (i, bound) in BUCKETS.iter().enumerate() {
            let n = self.buckets[i].load(Ordering::Relaxed);
            let _ = writeln!(out, "{name}_bucket{{le=\"{bound}\"}} {n}");
        }
        let count = self.count.load(Ordering::Relaxed);
        let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {count}");
        #[allow(clippy::cast_precision_loss)] // metrics: microsecond sums stay far below 2^52
        let sum = self.sum_micros.load(Ordering::Relaxed) as f64 / 1e6;
        let _ = writeln!(out, "{name}_sum {sum}\n{name}_count {count}");
        for (name, (help, value)) in self
            .gauges
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .iter()
        {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {value}"
            );
        }
        out
    }

    /// The exposition text; `backlog` is (stream length, pending entries, dead letters) when
    /// Redis answered.
    pub fn render(&self, backlog: Option<(u64, u64, u64)>) -> String {
        let mut out = self.render_own();
        if let Some((length, pending, dead)) = backlog {
            let _ = writeln!(
                out,
                "# HELP gatehouse_events_stream_length Entries in {{gatehouse}}:events.\n\
                 # TYPE gatehouse_events_stream_length gauge\n\
                 gatehouse_events_stream_length {length}\n\
                 # HELP gatehouse_events_pending Entries delivered to ingest and not yet acknowledged.\n\
                 # TYPE gatehouse_events_pending gauge\n\
                 gatehouse_events_pending {pending}\n\
                 # HELP gatehouse_events_dead_letters Entries in {{gatehouse}}:events:dead (given up on; see dead-letters list).\n\
                 # TYPE gatehouse_events_dead_letters gauge\n\
                 gatehouse_events_dead_letters {dead}"
            );
        }
        let up = u8::from(backlog.is_some());
        let _ = writeln!(
            out,
            "# HELP gatehouse_redis_up Whether Redis answered the last scrape.\n\
             # TYPE gatehouse_redis_up gauge\ngatehouse_redis_up {up}"
        );
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_event_names_do_not_become_label_values() {
        assert_eq!(event_label("pull_request"), "pull_request");
        assert_eq!(event_label("x\"} 1\nevil"), "other");
    }

    #[test]
    fn rendering_has_counters_histogram_and_gauges() {
        let metrics = Metrics::default();
        metrics.delivery("pull_request", "queued");
        metrics.delivery("pull_request", "queued");
        metrics.observe(Duration::from_micros(700));
        let text = metrics.render(Some((12, 3, 1)));
        assert!(text.contains(
            "gatehouse_webhook_deliveries_total{event=\"pull_request\",outcome=\"queued\"} 2"
        ));
        assert!(
            text.contains("gatehouse_webhook_request_duration_seconds_bucket{le=\"0.0005\"} 0")
        );
        assert!(text.contains("gatehouse_webhook_request_duration_seconds_bucket{le=\"0.001\"} 1"));
        assert!(text.contains("gatehouse_webhook_request_duration_seconds_count 1"));
        assert!(text.contains("gatehouse_events_stream_length 12"));
        assert!(text.contains("gatehouse_events_pending 3"));
        assert!(text.contains("gatehouse_redis_up 1"));
        assert!(metrics.render(None).contains("gatehouse_redis_up 0"));
    }
}
