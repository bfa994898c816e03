//! Prometheus metrics of the operator, in the text exposition format. Label values come from
//! fixed sets (results, phases, conclusions) or from the policies' scanner names (bounded by the
//! policies people write), never from pull request data.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Mutex;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::time::Duration;

use gatehouse_crds::ScanRequest;
use gatehouse_crds::scanrequest::{ScanPhase, ScannerPhase};
use kube::runtime::reflector::Store;

/// Upper bounds of the reconcile duration histogram, in seconds.
const BUCKETS: [f64; 10] = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0];

/// Every phase, in order, so each has a series even at zero.
const PHASES: [ScanPhase; 8] = [
    ScanPhase::Pending,
    ScanPhase::AwaitingApproval,
    ScanPhase::Queued,
    ScanPhase::Running,
    ScanPhase::Succeeded,
    ScanPhase::Failed,
    ScanPhase::Cancelled,
    ScanPhase::Superseded,
];

/// Upper bounds of the queue wait and scan duration histograms, in seconds.
const LONG_BUCKETS: [f64; 12] = [
    1.0, 5.0, 15.0, 30.0, 60.0, 120.0, 300.0, 600.0, 900.0, 1800.0, 3600.0, 7200.0,
];

/// A histogram per label set, over [`LONG_BUCKETS`].
#[derive(Debug, Default)]
struct Histograms(Mutex<BTreeMap<Labels, Series>>);

/// Label names and values of one series.
type Labels = Vec<(&'static str, String)>;

/// Bucket counts, count and sum of one series.
type Series = ([u64; LONG_BUCKETS.len()], u64, f64);

impl Histograms {
    fn observe(&self, labels: Vec<(&'static str, String)>, seconds: f64) {
        let mut map = self
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let (buckets, count, sum) = map
            .entry(labels)
            .or_insert(([0; LONG_BUCKETS.len()], 0, 0.0));
        for (bucket, bound) in buckets.iter_mut().zip(LONG_BUCKETS) {
            if seconds <= bound {
                *bucket += 1;
            }
        }
        *count += 1;
        *sum += seconds;
    }

    fn render(&self, out: &mut String, name: &str, help: &str) {
        let _ = writeln!(out, "# HELP {name} {help}");
        let _ = writeln!(out, "# TYPE {name} histogram");
        let map = self
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        for (labels, (buckets, count, sum)) in map.iter() {
            let labels = labels.iter().fold(String::new(), |mut out, (k, v)| {
                let _ = write!(out, "{k}=\"{}\",", escape(v));
                out
            });
            for (bucket, bound) in buckets.iter().zip(LONG_BUCKETS) {
                let _ = writeln!(out, "{name}_bucket{{{labels}le=\"{bound}\"}} {bucket}");
            }
            let _ = writeln!(out, "{name}_bucket{{{labels}le=\"+Inf\"}} {count}");
            let trimmed = labels.trim_end_matches(',');
            let _ = writeln!(out, "{name}_sum{{{trimmed}}} {sum}");
            let _ = writeln!(out, "{name}_count{{{trimmed}}} {count}");
        }
    }
}

/// The operator's metrics.
#[derive(Debug, Default)]
pub struct Metrics {
    queue_wait: Histograms,
    scan_duration: Histograms,
    reconciles: Mutex<BTreeMap<&'static str, u64>>,
    buckets: [AtomicU64; BUCKETS.len()],
    count: AtomicU64,
    sum_micros: AtomicU64,
    transitions: Mutex<BTreeMap<(String, String), u64>>,
    leader: AtomicI64,
    results: Mutex<BTreeMap<&'static str, u64>>,
    report_latency: Histograms,
    results_pending: AtomicI64,
    results_dead: AtomicI64,
    github_circuit_open: AtomicI64,
}

impl Metrics {
    /// Counts one reconcile by result (`ok` or an error label) and its duration.
    pub fn reconciled(&self, result: &'static str, took: Duration) {
        *self
            .reconciles
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .entry(result)
            .or_default() += 1;
        let seconds = took.as_secs_f64();
        for (bucket, bound) in self.buckets.iter().zip(BUCKETS) {
            if seconds <= bound {
                bucket.fetch_add(1, Ordering::Relaxed);
            }
        }
        self.count.fetch_add(1, Ordering::Relaxed);
        self.sum_micros.fetch_add(
            u64::try_from(took.as_micros()).unwrap_or(u64::MAX),
            Ordering::Relaxed,
        );
    }

    /// Counts a phase transition.
    pub fn phase_changed(&self, from: Option<ScanPhase>, to: ScanPhase) {
        let from = from.map_or_else(|| "None".to_owned(), |p| format!("{p:?}"));
        *self
            .transitions
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .entry((from, format!("{to:?}")))
            .or_default() += 1;
    }

    /// Records how long a request waited from creation to admission.
    pub fn admitted_after(&self, wait: Duration) {
        self.queue_wait.observe(Vec::new(), wait.as_secs_f64());
    }

    /// Records how long a scanner ran, by scanner name and outcome (a conclusion, or
    /// `completed` for a Job that published its report).
    pub fn scanned(&self, scanner: &str, outcome: &str, took: Duration) {
        self.scan_duration.observe(
            vec![
                ("scanner", scanner.to_owned()),
                ("outcome", outcome.to_owned()),
            ],
            took.as_secs_f64(),
        );
    }

    /// Counts one result entry by what became of it (`reported`, `duplicate`, `dropped`,
    /// `retry`, `dead_letter`).
    pub fn result_handled(&self, outcome: &'static str) {
        *self
            .results
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .entry(outcome)
            .or_default() += 1;
    }

    /// Records the time from a result entering the stream to GitHub having its conclusion.
    pub fn result_reported_after(&self, took: Duration) {
        self.report_latency.observe(Vec::new(), took.as_secs_f64());
    }

    /// Records the results stream's backlog (pending and undelivered entries of the group) and
    /// the length of its dead-letter stream.
    pub fn set_results_backlog(&self, pending: i64, dead: i64) {
        self.results_pending.store(pending, Ordering::Relaxed);
        self.results_dead.store(dead, Ordering::Relaxed);
    }

    /// Records whether the circuit breaker holds results back from GitHub.
    pub fn set_circuit_open(&self, open: bool) {
        self.github_circuit_open
            .store(i64::from(open), Ordering::Relaxed);
    }

    /// Records whether this replica leads.
    pub fn set_leader(&self, leader: bool) {
        self.leader.store(i64::from(leader), Ordering::Relaxed);
    }

    /// The exposition text, with gauges computed from the watched ScanRequests.
    // The exposition is one linear list of metric families.
    #[allow(clippy::too_many_lines)]
    pub fn render(
        &self,
        requests: &[Store<ScanRequest>],
        rate_limit_remaining: Option<u64>,
    ) -> String {
        let mut out = String::new();
        out.push_str(
            "# HELP gatehouse_operator_reconciles_total Reconciles of ScanRequests by result.\n",
        );
        out.push_str("# TYPE gatehouse_operator_reconciles_total counter\n");
        for (result, n) in self
            .reconciles
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .iter()
        {
            let _ = writeln!(
                out,
                "gatehouse_operator_reconciles_total{{result=\"{result}\"}} {n}"
            );
        }
        out.push_str(
            "# HELP gatehouse_operator_reconcile_duration_seconds Time one reconcile took.\n",
        );
        out.push_str("# TYPE gatehouse_operator_reconcile_duration_seconds histogram\n");
        for (bucket, bound) in self.buckets.iter().zip(BUCKETS) {
            let _ = writeln!(
                out,
                "gatehouse_operator_reconcile_duration_seconds_bucket{{le=\"{bound}\"}} {}",
                bucket.load(Ordering::Relaxed)
            );
        }
        let count = self.count.load(Ordering::Relaxed);
        let _ = writeln!(
            out,
            "gatehouse_operator_reconcile_duration_seconds_bucket{{le=\"+Inf\"}} {count}"
        );
        #[allow(clippy::cast_precision_loss)]
        let sum = self.sum_micros.load(Ordering::Relaxed) as f64 / 1e6;
        let _ = writeln!(
            out,
            "gatehouse_operator_reconcile_duration_seconds_sum {sum}"
        );
        let _ = writeln!(
            out,
            "gatehouse_operator_reconcile_duration_seconds_count {count}"
        );

        out.push_str("# HELP gatehouse_operator_phase_transitions_total ScanRequest phase changes written by this replica.\n");
        out.push_str("# TYPE gatehouse_operator_phase_transitions_total counter\n");
        for ((from, to), n) in self
            .transitions
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .iter()
        {
            let _ = writeln!(
                out,
                "gatehouse_operator_phase_transitions_total{{from=\"{from}\",to=\"{to}\"}} {n}"
            );
        }

        self.queue_wait.render(
            &mut out,
            "gatehouse_operator_queue_wait_seconds",
            "Time from a ScanRequest's creation to its admission.",
        );
        self.scan_duration.render(
            &mut out,
            "gatehouse_operator_scan_duration_seconds",
            "Time from a scanner's Job starting to its end, by scanner and outcome.",
        );
        let mut phases: BTreeMap<String, u64> =
            PHASES.iter().map(|p| (format!("{p:?}"), 0)).collect();
        let mut active: BTreeMap<String, u64> = BTreeMap::new();
        for store in requests {
            for request in store.state() {
                let status = request.status.as_ref();
                let phase = status.and_then(|s| s.phase).unwrap_or(ScanPhase::Pending);
                *phases.entry(format!("{phase:?}")).or_default() += 1;
                for scanner in status.iter().flat_map(|s| s.scanners.iter()) {
                    if matches!(scanner.phase, ScannerPhase::Queued | ScannerPhase::Running) {
                        *active.entry(scanner.name.clone()).or_default() += 1;
                    }
                }
            }
        }
        out.push_str("# HELP gatehouse_operator_scanrequests ScanRequests watched, by phase.\n");
        out.push_str("# TYPE gatehouse_operator_scanrequests gauge\n");
        for (phase, n) in &phases {
            let _ = writeln!(
                out,
                "gatehouse_operator_scanrequests{{phase=\"{phase}\"}} {n}"
            );
        }
        out.push_str("# HELP gatehouse_operator_active_jobs Scanner Jobs created and not finished, by scanner name.\n");
        out.push_str("# TYPE gatehouse_operator_active_jobs gauge\n");
        for (scanner, n) in &active {
            let _ = writeln!(
                out,
                "gatehouse_operator_active_jobs{{scanner=\"{}\"}} {n}",
                escape(scanner)
            );
        }
        if let Some(remaining) = rate_limit_remaining {
            out.push_str("# HELP gatehouse_operator_github_rate_limit_remaining Lowest x-ratelimit-remaining GitHub reported in the current window.\n");
            out.push_str("# TYPE gatehouse_operator_github_rate_limit_remaining gauge\n");
            let _ = writeln!(
                out,
                "gatehouse_operator_github_rate_limit_remaining {remaining}"
            );
        }
        out.push_str(
            "# HELP gatehouse_operator_results_total Result entries handled, by outcome.\n",
        );
        out.push_str("# TYPE gatehouse_operator_results_total counter\n");
        for (outcome, n) in self
            .results
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .iter()
        {
            let _ = writeln!(
                out,
                "gatehouse_operator_results_total{{outcome=\"{outcome}\"}} {n}"
            );
        }
        self.report_latency.render(
            &mut out,
            "gatehouse_operator_result_report_seconds",
            "Time from a result entering the results stream to its check run concluded.",
        );
        for (name, help, value) in [
            (
                "gatehouse_operator_results_pending",
                "Result entries not yet acknowledged (pending or undelivered).",
                &self.results_pending,
            ),
            (
                "gatehouse_operator_results_dead_letters",
                "Length of the results dead-letter stream.",
                &self.results_dead,
            ),
            (
                "gatehouse_operator_github_circuit_open",
                "1 while the circuit breaker holds results back from GitHub.",
                &self.github_circuit_open,
            ),
        ] {
            let _ = writeln!(out, "# HELP {name} {help}");
            let _ = writeln!(out, "# TYPE {name} gauge");
            let _ = writeln!(out, "{name} {}", value.load(Ordering::Relaxed));
        }
        out.push_str("# HELP gatehouse_operator_leader Whether this replica holds the leader lease (1) or stands by (0).\n");
        out.push_str("# TYPE gatehouse_operator_leader gauge\n");
        let _ = writeln!(
            out,
            "gatehouse_operator_leader {}",
            self.leader.load(Ordering::Relaxed)
        );
        out
    }
}

fn escape(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}
