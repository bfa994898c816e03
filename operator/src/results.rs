//! The results consumer: reads the signed scan results the agents publish to
//! `{gatehouse-results}:results` (consumer group `report`), records each scanner's conclusion
//! and counts in its ScanRequest's status, posts the findings to the scanner's check run
//! (annotations 50 per request, then the conclusion), and acknowledges the entry only once
//! GitHub has it. An entry stays pending through any failure and is taken up again later;
//! results wait safely in the stream while GitHub is down (a circuit breaker stops asking it).
//!
//! Refused for good and moved to `{gatehouse-results}:results:dead` with the reason: an entry
//! that does not decode, whose signature does not verify under the key of the ScanRequest it
//! names (forged), or that is a second, different result for a scanner that has one already
//! (replayed). Dropped (acknowledged, counted, logged): a result for a ScanRequest that is gone,
//! for an earlier attempt (even one arriving after a later attempt's result), or for a scanner
//! concluded otherwise meanwhile (stopped, timed out).
//!
//! Re-delivery of the same result posts no annotation twice: GitHub's count of the run's
//! annotations says how many were sent already, and the findings come in the same order.

use std::sync::Arc;
use std::time::{Duration, Instant};

use gatehouse_crds::ScanRequest;
use gatehouse_crds::scanrequest::Conclusion;
use gatehouse_crds::stream::{
    BodyEncoding, REPORT_GROUP, RESULTS_DEAD_STREAM, RESULTS_STREAM, ResultEntry, ScanOutcome,
    ScanResult,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::Api;
use redis::aio::ConnectionManager;
use redis::streams::{StreamId, StreamReadOptions, StreamReadReply};

use crate::checks;
use crate::decide::{self, Concluded};
use crate::github::{
    CheckConclusion, CheckOutput, CheckRunUpdate, CheckStatus, GitHub, NewCheckRun,
};
use crate::keys::MasterKey;
use crate::metrics::Metrics;
use crate::verdict::{self, ANNOTATIONS_PER_REQUEST, Comparison, Verdict};

/// Largest decompressed result accepted.
pub const MAX_RESULT_BYTES: usize = 64 << 20;

/// Settings of the consumer.
#[derive(Clone, Debug)]
pub struct ResultsConfig {
    /// This consumer's name in the group (the pod's name).
    pub consumer: String,
    /// Entries read at once.
    pub batch: usize,
    /// How long a read waits for new entries.
    pub block: Duration,
    /// Backoff of an entry left pending: first wait, doubled per delivery.
    pub first_retry: Duration,
    /// Backoff's longest wait.
    pub longest_retry: Duration,
    /// An entry that still fails this long after it was published is dead-lettered.
    pub retry_window: Duration,
    /// Base of the check runs' Details link.
    pub details_url: Option<String>,
    /// How long the base commit's findings are kept for baseline mode.
    pub baseline_ttl: Duration,
    /// How long the circuit breaker first holds GitHub back (doubled per failure after it
    /// opened, at most five minutes).
    pub breaker_hold: Duration,
    /// How often reported (acknowledged) entries are trimmed from the stream.
    pub trim_every: Duration,
    /// How long acknowledged entries stay in the stream (for people debugging).
    pub keep_acknowledged: Duration,
}

impl Default for ResultsConfig {
    fn default() -> Self {
        ResultsConfig {
            consumer: "gatehouse-operator".to_owned(),
            batch: 16,
            block: Duration::from_secs(2),
            first_retry: Duration::from_secs(5),
            longest_retry: Duration::from_secs(600),
            retry_window: Duration::from_secs(24 * 3600),
            details_url: None,
            baseline_ttl: Duration::from_secs(24 * 3600),
            breaker_hold: Duration::from_secs(15),
            trim_every: Duration::from_secs(30),
            keep_acknowledged: Duration::from_secs(15 * 60),
        }
    }
}

/// A call of the consumer's own machinery failed (Redis); the loop tries again.
#[derive(Debug, thiserror::Error)]
#[error("failed to {operation}: {source}")]
pub struct ResultsError {
    operation: &'static str,
    source: redis::RedisError,
}

fn redis_error(operation: &'static str) -> impl FnOnce(redis::RedisError) -> ResultsError {
    move |source| ResultsError { operation, source }
}

/// What became of one entry.
#[derive(Debug, PartialEq, Eq)]
pub enum Handled {
    /// Done (reported, or recognised as already reported): acknowledged.
    Done(&'static str),
    /// Not now: left pending, taken up again after a backoff. `github` when GitHub failed (for
    /// the circuit breaker), with the wait GitHub asked for.
    Retry {
        /// Why.
        reason: String,
        /// Whether GitHub was the one failing.
        github: bool,
        /// How long GitHub asked to wait.
        wait: Option<Duration>,
    },
    /// Refused for good: dead-lettered with the reason.
    Dead(String),
}

/// Why [`Consumer::send`] did not report.
#[derive(Debug)]
enum Sent {
    /// GitHub no longer has the check run (404).
    Gone,
    /// Any other failure, as the entry is to be handled.
    Failed(Handled),
}

fn retry(reason: impl Into<String>) -> Handled {
    Handled::Retry {
        reason: reason.into(),
        github: false,
        wait: None,
    }
}

/// Stops asking GitHub after repeated failures, for a while that doubles up to five minutes;
/// entries wait in the stream meanwhile.
#[derive(Debug)]
struct Breaker {
    first_hold: Duration,
    failures: u32,
    open_until: Option<Instant>,
}

impl Breaker {
    const THRESHOLD: u32 = 5;

    fn new(first_hold: Duration) -> Breaker {
        Breaker {
            first_hold,
            failures: 0,
            open_until: None,
        }
    }

    fn failed(&mut self, wait: Option<Duration>) {
        self.failures += 1;
        let backoff = if self.failures >= Self::THRESHOLD {
            Some(
                (self.first_hold * (1 << (self.failures - Self::THRESHOLD).min(4)))
                    .min(Duration::from_secs(300)),
            )
        } else {
            None
        };
        if let Some(hold) = wait.into_iter().chain(backoff).max() {
            let until = Instant::now() + hold.min(Duration::from_secs(900));
            self.open_until = Some(self.open_until.map_or(until, |u| u.max(until)));
        }
    }

    fn succeeded(&mut self) {
        self.failures = 0;
        self.open_until = None;
    }

    fn open(&self) -> Option<Duration> {
        self.open_until
            .and_then(|until| until.checked_duration_since(Instant::now()))
    }
}

/// What the consumer works with, shared with the rest of the operator.
#[derive(Clone)]
pub struct Parts {
    /// Kubernetes client.
    pub client: kube::Client,
    /// GitHub App client.
    pub github: Arc<GitHub>,
    /// Master key the per-scan keys derive from.
    pub master_key: MasterKey,
    /// Metrics.
    pub metrics: Arc<Metrics>,
    /// The per-request locks shared with the controller.
    pub locks: Arc<crate::locks::RequestLocks>,
}

/// The results consumer.
pub struct Consumer {
    conn: ConnectionManager,
    locks: Arc<crate::locks::RequestLocks>,
    client: kube::Client,
    github: Arc<GitHub>,
    master_key: MasterKey,
    metrics: Arc<Metrics>,
    config: ResultsConfig,
    breaker: Breaker,
    last_claim: Option<Instant>,
    last_gauges: Option<Instant>,
    last_trim: Option<Instant>,
}

impl std::fmt::Debug for Consumer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Consumer")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl Consumer {
    /// A consumer; creates the group (from the start of the stream) when it does not exist.
    pub async fn new(
        redis: &redis::Client,
        parts: Parts,
        config: ResultsConfig,
    ) -> Result<Consumer, ResultsError> {
        let Parts {
            client,
            github,
            master_key,
            metrics,
            locks,
        } = parts;
        // The group read blocks up to `config.block`: the connection's response timeout must be
        // longer (redis's default of 500 ms made every idle read fail and the loop sleep 2 s).
        let manager = redis::aio::ConnectionManagerConfig::new()
            .set_connection_timeout(Some(Duration::from_secs(5)))
            .set_response_timeout(Some(config.block + Duration::from_secs(10)));
        let conn = ConnectionManager::new_with_config(redis.clone(), manager)
            .await
            .map_err(redis_error("connect to Redis"))?;
        gatehouse_crds::stream_group::ensure_group(&mut conn.clone(), RESULTS_STREAM, REPORT_GROUP)
            .await
            .map_err(redis_error("create the report consumer group"))?;
        Ok(Consumer {
            conn,
            locks,
            client,
            github,
            master_key,
            metrics,
            breaker: Breaker::new(config.breaker_hold),
            config,
            last_claim: None,
            last_gauges: None,
            last_trim: None,
        })
    }

    /// Consumes until `stop` turns true (the entry in hand is finished first).
    pub async fn run(mut self, mut stop: tokio::sync::watch::Receiver<bool>) {
        tracing::info!(stream = RESULTS_STREAM, group = REPORT_GROUP, consumer = %self.config.consumer, "consuming scan results");
        loop {
            if *stop.borrow() {
                return;
            }
            // An open breaker holds back GitHub only: results are still read and recorded in
            // the ScanRequests (a scan that finished during an outage is not failed for its
            // result "never arriving"), and reported once GitHub answers again.
            self.metrics.set_circuit_open(self.breaker.open().is_some());
            match self.step().await {
                Ok(()) => {}
                Err(error) => {
                    tracing::warn!(%error, "results consumer: Redis failed; trying again");
                    tokio::select! {
                        () = tokio::time::sleep(Duration::from_secs(2)) => {}
                        _ = stop.changed() => {}
                    }
                }
            }
        }
    }

    /// One round: gauges and trimming now and then, due retries, then new entries; each entry
    /// handled and settled.
    pub async fn step(&mut self) -> Result<(), ResultsError> {
        if self
            .last_gauges
            .is_none_or(|at| at.elapsed() >= Duration::from_secs(15))
        {
            self.last_gauges = Some(Instant::now());
            self.gauges().await?;
        }
        if self
            .last_trim
            .is_none_or(|at| at.elapsed() >= self.config.trim_every)
        {
            // Reported results would otherwise stay in Redis for good (a full Redis refuses
            // the webhook's deliveries); nothing unreported is ever trimmed.
            self.last_trim = Some(Instant::now());
            let mut conn = self.conn.clone();
            if let Err(error) = gatehouse_crds::stream_group::trim_acknowledged(
                &mut conn,
                RESULTS_STREAM,
                self.config.keep_acknowledged,
                gatehouse_crds::stream_group::unix_millis(),
            )
            .await
            {
                tracing::warn!(%error, "results stream not trimmed this time");
            }
        }
        let mut batch = Vec::new();
        if self
            .last_claim
            .is_none_or(|at| at.elapsed() >= self.config.first_retry / 2)
        {
            self.last_claim = Some(Instant::now());
            batch = self.claim_due().await?;
        }
        if batch.is_empty() {
            let options = StreamReadOptions::default()
                .group(REPORT_GROUP, &self.config.consumer)
                .count(self.config.batch)
                .block(usize::try_from(self.config.block.as_millis()).unwrap_or(usize::MAX));
            let mut conn = self.conn.clone();
            let reply: Option<StreamReadReply> =
                redis::AsyncCommands::xread_options(&mut conn, &[RESULTS_STREAM], &[">"], &options)
                    .await
                    .map_err(redis_error("read new results"))?;
            for key in reply.map(|r| r.keys).unwrap_or_default() {
                batch.extend(key.ids.into_iter().map(|id| (id, 1)));
            }
        }
        for (entry, deliveries) in batch {
            let handled = self.handle(&entry).await;
            self.settle(&entry, deliveries, handled).await?;
        }
        Ok(())
    }

    /// Pending entries whose backoff has passed, claimed for this consumer, with how often each
    /// was delivered; entries past the retry window are dead-lettered instead.
    async fn claim_due(&mut self) -> Result<Vec<(StreamId, u64)>, ResultsError> {
        let mut conn = self.conn.clone();
        let first = millis(self.config.first_retry);
        // XPENDING key group IDLE ms - + count: (id, consumer, idle ms, deliveries).
        let listed: Vec<(String, String, u64, u64)> = redis::cmd("XPENDING")
            .arg(RESULTS_STREAM)
            .arg(REPORT_GROUP)
            .arg("IDLE")
            .arg(first)
            .arg("-")
            .arg("+")
            .arg(self.config.batch * 4)
            .query_async(&mut conn)
            .await
            .map_err(redis_error("list pending results"))?;
        let mut due = Vec::new();
        for (id, _, idle_ms, deliveries) in listed {
            let wait = millis(self.backoff(deliveries));
            if idle_ms < wait {
                continue;
            }
            let claimed: redis::streams::StreamClaimReply = redis::cmd("XCLAIM")
                .arg(RESULTS_STREAM)
                .arg(REPORT_GROUP)
                .arg(&self.config.consumer)
                .arg(wait)
                .arg(&id)
                .query_async(&mut conn)
                .await
                .map_err(redis_error("claim a pending result"))?;
            let Some(entry) = claimed.ids.into_iter().next() else {
                continue;
            };
            let age = age_of(&id);
            if age > self.config.retry_window {
                let reason = format!(
                    "not reported within {} s ({deliveries} deliveries)",
                    self.config.retry_window.as_secs()
                );
                self.dead_letter(&entry, &reason, deliveries).await?;
                continue;
            }
            due.push((entry, deliveries + 1));
        }
        Ok(due)
    }

    fn backoff(&self, deliveries: u64) -> Duration {
        let doublings = u32::try_from(deliveries.saturating_sub(1).min(16)).unwrap_or(16);
        self.config
            .first_retry
            .saturating_mul(1 << doublings)
            .min(self.config.longest_retry)
    }

    async fn settle(
        &mut self,
        entry: &StreamId,
        deliveries: u64,
        handled: Handled,
    ) -> Result<(), ResultsError> {
        match handled {
            Handled::Done(outcome) => {
                if outcome == "reported" {
                    self.metrics.result_reported_after(age_of(&entry.id));
                }
                // Only an answer of GitHub closes the breaker (see `post`): a result dropped or
                // recognised as reported says nothing about GitHub.
                self.metrics.result_handled(outcome);
                let mut conn = self.conn.clone();
                redis::cmd("XACK")
                    .arg(RESULTS_STREAM)
                    .arg(REPORT_GROUP)
                    .arg(&entry.id)
                    .query_async::<()>(&mut conn)
                    .await
                    .map_err(redis_error("acknowledge a result"))
            }
            Handled::Retry {
                reason,
                github,
                wait,
            } => {
                self.metrics.result_handled("retry");
                if github {
                    self.breaker.failed(wait);
                }
                tracing::warn!(entry = %entry.id, delivery = deliveries, %reason, retry_in_s = self.backoff(deliveries).as_secs(), "result left pending for a retry");
                Ok(())
            }
            Handled::Dead(reason) => self.dead_letter(entry, &reason, deliveries).await,
        }
    }

    /// Copies the entry with the reason to the dead-letter stream and acknowledges it,
    /// atomically.
    async fn dead_letter(
        &self,
        entry: &StreamId,
        reason: &str,
        deliveries: u64,
    ) -> Result<(), ResultsError> {
        tracing::error!(entry = %entry.id, %reason, deliveries, "result moved to the dead-letter stream");
        self.metrics.result_handled("dead_letter");
        let mut xadd = redis::cmd("XADD");
        xadd.arg(RESULTS_DEAD_STREAM)
            .arg("MAXLEN")
            .arg("~")
            .arg(100_000)
            .arg("*");
        for (key, value) in &entry.map {
            if let redis::Value::BulkString(bytes) = value {
                xadd.arg(key).arg(bytes.as_slice());
            }
        }
        xadd.arg("source_id")
            .arg(&entry.id)
            .arg("reason")
            .arg(reason)
            .arg("deliveries")
            .arg(deliveries);
        let mut pipe = redis::pipe();
        pipe.atomic()
            .add_command(xadd)
            .ignore()
            .cmd("XACK")
            .arg(RESULTS_STREAM)
            .arg(REPORT_GROUP)
            .arg(&entry.id)
            .ignore();
        let mut conn = self.conn.clone();
        pipe.query_async::<()>(&mut conn)
            .await
            .map_err(redis_error("dead-letter a result"))
    }

    async fn gauges(&self) -> Result<(), ResultsError> {
        let mut conn = self.conn.clone();
        let dead: i64 = redis::cmd("XLEN")
            .arg(RESULTS_DEAD_STREAM)
            .query_async(&mut conn)
            .await
            .map_err(redis_error("read the dead-letter stream's length"))?;
        let groups: redis::streams::StreamInfoGroupsReply =
            redis::AsyncCommands::xinfo_groups(&mut conn, RESULTS_STREAM)
                .await
                .map_err(redis_error("read consumer groups"))?;
        let pending = groups
            .groups
            .iter()
            .find(|g| g.name == REPORT_GROUP)
            .map_or(0, |g| {
                i64::try_from(g.pending + g.lag.unwrap_or(0)).unwrap_or(i64::MAX)
            });
        self.metrics.set_results_backlog(pending, dead);
        Ok(())
    }

    /// Handles one entry: verify, decode, record, report.
    pub async fn handle(&mut self, entry: &StreamId) -> Handled {
        let fields = entry.map.iter().filter_map(|(k, v)| match v {
            redis::Value::BulkString(bytes) => Some((k.as_str(), bytes.as_slice())),
            _ => None,
        });
        let result_entry = match ResultEntry::from_fields(fields) {
            Ok(e) => e,
            Err(error) => return Handled::Dead(format!("undecodable: {error}")),
        };
        let key = self.master_key.scan_key(&result_entry.uid);
        let signed = ResultEntry::signed_bytes(result_entry.encoding, &result_entry.payload);
        if !key.verify(&signed, &result_entry.signature) {
            return Handled::Dead(format!(
                "forged: the signature does not verify under the key of ScanRequest uid {}",
                loggable(&result_entry.uid)
            ));
        }
        let result = match decode(&result_entry) {
            Ok(result) => result,
            Err(reason) => return Handled::Dead(reason),
        };
        if result.uid != result_entry.uid {
            return Handled::Dead("the payload names another ScanRequest than its entry".into());
        }
        self.process(&result).await
    }

    async fn process(&mut self, result: &ScanResult) -> Handled {
        // The controller never works on this request between this status write and this report
        // to GitHub (see `locks`).
        let locks = Arc::clone(&self.locks);
        let _guard = locks.lock(&result.namespace, &result.scan_request).await;
        let api: Api<ScanRequest> = Api::namespaced(self.client.clone(), &result.namespace);
        // The status is read and written again on a conflict: the controller writes it too.
        for _ in 0..5 {
            let request = match api.get_opt(&result.scan_request).await {
                Ok(Some(request)) => request,
                Ok(None) => return Self::dropped(result, "its ScanRequest no longer exists"),
                Err(error) => return retry(format!("get the ScanRequest: {error}")),
            };
            if request.metadata.uid.as_deref() != Some(result.uid.as_str()) {
                return Self::dropped(result, "a ScanRequest of that name made later has it now");
            }
            let Some(status) = request.status.clone() else {
                return retry("the ScanRequest has no status yet");
            };
            let Some(scanner) = status.scanners.iter().find(|s| s.name == result.scanner) else {
                return Handled::Dead(format!(
                    "ScanRequest {}/{} has no scanner {:?}",
                    result.namespace, result.scan_request, result.scanner
                ));
            };
            if scanner.result_id.as_deref() == Some(result.result_id.as_str()) {
                // Recorded before (a crash, or this result published twice): report it.
                return self.report(&request, result).await;
            }
            // An earlier attempt's result is late, not replayed, even when a later attempt's
            // result is recorded already.
            if result.attempt < scanner.attempts {
                return Self::dropped(
                    result,
                    &format!(
                        "the result of attempt {}, the scan is at attempt {}",
                        result.attempt, scanner.attempts
                    ),
                );
            }
            if let Some(other) = &scanner.result_id {
                return Handled::Dead(format!(
                    "replayed: scanner {} has result {other} already; this is another ({})",
                    result.scanner, result.result_id
                ));
            }
            if result.head_sha != request.spec.pull_request.head_sha {
                return Handled::Dead(format!(
                    "the result is about commit {}, the ScanRequest about {}",
                    result.head_sha, request.spec.pull_request.head_sha
                ));
            }
            if decide::concluded(scanner) {
                return Self::dropped(
                    result,
                    &format!(
                        "scanner {} was concluded {} meanwhile",
                        result.scanner,
                        scanner.conclusion.map_or("", Conclusion::as_github)
                    ),
                );
            }
            if result.attempt > scanner.attempts {
                return retry(format!(
                    "the result of attempt {} came before that attempt's Job was recorded",
                    result.attempt
                ));
            }
            let verdict = match self.verdict(&request, result).await {
                Ok(verdict) => verdict,
                Err(handled) => return handled,
            };
            let now = Time(k8s_openapi::jiff::Timestamp::now());
            let concluded = Concluded {
                conclusion: verdict.conclusion,
                title: verdict.title.clone(),
                findings: verdict.counts,
                new_findings: verdict.new_counts,
                result_id: result.result_id.clone(),
                scanner_error: matches!(result.outcome, ScanOutcome::ScannerError { .. }),
            };
            let status = decide::record_result(status, &request, &result.scanner, &concluded, &now);
            match crate::controller::apply_status(&self.client, &request, &status, None).await {
                Ok(_) => {
                    tracing::info!(scanrequest = %format!("{}/{}", result.namespace, result.scan_request), scanner = %result.scanner, conclusion = verdict.conclusion.as_github(), findings = verdict.counts.total(), "result recorded");
                    let mut recorded = request.clone();
                    recorded.status = Some(status);
                    return self.post(&recorded, result, &verdict).await;
                }
                Err(error) if is_conflict(&error) => {}
                Err(error) => return retry(error.to_string()),
            }
        }
        retry("the status kept changing under five writes in a row")
    }

    fn dropped(result: &ScanResult, why: &str) -> Handled {
        tracing::warn!(scanrequest = %format!("{}/{}", result.namespace, result.scan_request), scanner = %result.scanner, result = %result.result_id, why, "result dropped");
        Handled::Done("dropped")
    }

    /// The verdict on `result` under the request's policy snapshot.
    async fn verdict(
        &self,
        request: &ScanRequest,
        result: &ScanResult,
    ) -> Result<Verdict, Handled> {
        let snapshot = request
            .status
            .as_ref()
            .and_then(|s| s.policy.as_ref())
            .ok_or_else(|| retry("the ScanRequest has no policy snapshot yet"))?;
        let spec = snapshot
            .scanners
            .iter()
            .find(|s| s.name == result.scanner)
            .ok_or_else(|| {
                Handled::Dead(format!(
                    "the policy snapshot has no scanner {:?}",
                    result.scanner
                ))
            })?;
        let max_annotations = usize::try_from(snapshot.reporting.max_annotations).unwrap_or(0);
        let reproduce = crate::scanners::reproduce(request, spec);
        let comparison = if snapshot.reporting.baseline {
            self.baseline(request, result, spec).await?
        } else {
            Baseline::Off
        };
        let comparison_view = match &comparison {
            Baseline::Off => Comparison::Off,
            Baseline::Known { sha, fingerprints } => {
                Comparison::Against(verdict::BaselineView { sha, fingerprints })
            }
            Baseline::Unknown(why) => Comparison::Unavailable(why.clone()),
        };
        Ok(verdict::verdict(
            result,
            spec.fail_on,
            max_annotations,
            &comparison_view,
            &reproduce,
        ))
    }

    /// The base commit's findings for baseline mode, decided once per result: the decision is
    /// kept in Redis under the result's id (for the retry window), so a result delivered again
    /// is judged exactly as the first time, whatever the base's kept findings did meanwhile.
    /// Redis failing is a reason to try again later, never a decision ("not known" would count
    /// every finding, and be kept).
    async fn baseline(
        &self,
        request: &ScanRequest,
        result: &ScanResult,
        spec: &gatehouse_crds::scanpolicy::ScannerSpec,
    ) -> Result<Baseline, Handled> {
        let decided_key = format!("{{gatehouse-results}}:decided:{}", result.result_id);
        let kept = self
            .read_signed(&decided_key)
            .await
            .map_err(|e| retry(format!("read the baseline decision from Redis: {e}")))?;
        if let Kept::Value(bytes) = kept
            && let Some(decision) = Baseline::decode(&bytes)
        {
            return Ok(decision);
        }
        let decision = self.decide_baseline(request, result, spec).await?;
        let keep = self.config.retry_window + Duration::from_secs(3600);
        let written = self
            .write_signed(&decided_key, &decision.encode(), keep, true)
            .await
            .map_err(|e| retry(format!("keep the baseline decision in Redis: {e}")))?;
        if !written {
            // Decided meanwhile by another consumer (or a value that is not ours, which a
            // later delivery will not trust either): that decision is the one.
            let kept = self
                .read_signed(&decided_key)
                .await
                .map_err(|e| retry(format!("read the baseline decision from Redis: {e}")))?;
            if let Kept::Value(bytes) = kept
                && let Some(decision) = Baseline::decode(&bytes)
            {
                return Ok(decision);
            }
        }
        Ok(decision)
    }

    /// The base commit's findings: from the result itself when its pod scanned the base (its
    /// Job, which scan pods cannot change, has the `scan-base` step for this base), then kept
    /// in Redis for the next pull requests on that base unless findings are kept there already;
    /// else from what Redis keeps.
    async fn decide_baseline(
        &self,
        request: &ScanRequest,
        result: &ScanResult,
        spec: &gatehouse_crds::scanpolicy::ScannerSpec,
    ) -> Result<Baseline, Handled> {
        let Some(base_sha) = request.spec.pull_request.base_sha.clone() else {
            return Ok(Baseline::Unknown(
                "the ScanRequest does not name its base commit".into(),
            ));
        };
        let key = baseline_key(request.spec.repository.id, &base_sha, spec);
        if let Some(base) = &result.baseline {
            if self.job_scanned_base(request, result, &base_sha).await? {
                if base.sha != base_sha {
                    return Ok(Baseline::Unknown(format!(
                        "the pod scanned {} as the base, the ScanRequest names {base_sha}",
                        base.sha
                    )));
                }
                if let ScanOutcome::ScannerError { message, .. } = &base.outcome {
                    return Ok(Baseline::Unknown(format!("its scan failed: {message}")));
                }
                // Sorted here: the comparison searches them, whatever order the pod sent.
                let mut fingerprints = base.fingerprints.clone();
                fingerprints.sort_unstable();
                fingerprints.dedup();
                let known = Baseline::Known {
                    sha: base_sha,
                    fingerprints,
                };
                self.keep_base(&key, &known).await;
                return Ok(known);
            }
            tracing::warn!(scanrequest = %format!("{}/{}", result.namespace, result.scan_request), scanner = %result.scanner, result = %result.result_id, "the result carries base findings, but its Job did not scan the base; ignored");
        }
        let kept = self
            .read_signed(&key)
            .await
            .map_err(|e| retry(format!("read the base commit's findings from Redis: {e}")))?;
        Ok(match kept {
            Kept::Value(bytes) => match Baseline::decode(&bytes) {
                Some(known @ Baseline::Known { .. }) => known,
                _ => {
                    Baseline::Unknown("the kept findings of the base commit are unreadable".into())
                }
            },
            Kept::Absent | Kept::Forged => Baseline::Unknown(
                "the base commit was not scanned with this scan and its findings were not kept \
                 (expired, or not written by this operator)"
                    .into(),
            ),
        })
    }

    /// Whether the Job of this result's attempt scanned `base_sha`: the Job the status names for
    /// the scanner, owned by this ScanRequest, with a `scan-base` step and `--base-sha
    /// <base_sha>` in its steps' arguments. A Job gone already cannot say so: no.
    async fn job_scanned_base(
        &self,
        request: &ScanRequest,
        result: &ScanResult,
        base_sha: &str,
    ) -> Result<bool, Handled> {
        let Some(job_name) = request
            .status
            .as_ref()
            .and_then(|s| s.scanners.iter().find(|s| s.name == result.scanner))
            .and_then(|s| s.job_name.clone())
        else {
            return Ok(false);
        };
        let jobs: Api<k8s_openapi::api::batch::v1::Job> =
            Api::namespaced(self.client.clone(), &result.namespace);
        let job = jobs
            .get_opt(&job_name)
            .await
            .map_err(|e| retry(format!("get the Job {job_name}: {e}")))?;
        let Some(job) = job else {
            return Ok(false);
        };
        let owned = job
            .metadata
            .owner_references
            .iter()
            .flatten()
            .any(|o| Some(&o.uid) == request.metadata.uid.as_ref());
        Ok(owned && crate::jobs::scans_base(&job, base_sha))
    }

    /// Keeps the base commit's findings for the next pull requests on that base: written only
    /// when nothing valid is kept (`SET … NX`: a value kept already, and the lifetime the
    /// controller extended it to, stay as they are), a value that fails its signature replaced.
    /// Best effort: this result's decision does not depend on it.
    async fn keep_base(&self, key: &str, known: &Baseline) {
        let ttl = self.config.baseline_ttl;
        let kept = match self.write_signed(key, &known.encode(), ttl, true).await {
            Ok(true) => return,
            Ok(false) => self.read_signed(key).await,
            Err(error) => Err(error),
        };
        let replaced = match kept {
            Ok(Kept::Value(bytes)) if Baseline::decode(&bytes).is_some() => return,
            Ok(_) => self.write_signed(key, &known.encode(), ttl, false).await,
            Err(error) => Err(error),
        };
        if let Err(error) = replaced {
            tracing::warn!(%error, key, "the base commit's findings were not kept in Redis");
        }
    }

    /// Keeps `payload` in Redis under `key` for `keep`, LZ4-compressed and signed with a key
    /// derived from the master key (scan pods reach Redis too: what they could write there must
    /// not pass for the operator's). `only_new`: never replace what is there. Whether it was
    /// written.
    async fn write_signed(
        &self,
        key: &str,
        payload: &[u8],
        keep: Duration,
        only_new: bool,
    ) -> Result<bool, redis::RedisError> {
        let compressed = lz4_flex::compress_prepend_size(payload);
        let signature = self
            .master_key
            .scan_key(&format!("redis-value:{key}"))
            .sign(&compressed);
        let mut value = signature.into_bytes();
        value.extend_from_slice(&compressed);
        let mut command = redis::cmd("SET");
        command
            .arg(key)
            .arg(value)
            .arg("EX")
            .arg(keep.as_secs().max(1));
        if only_new {
            command.arg("NX");
        }
        let mut conn = self.conn.clone();
        let answer: redis::Value = command.query_async(&mut conn).await?;
        Ok(!matches!(answer, redis::Value::Nil))
    }

    /// A value [`Self::write_signed`] wrote, as far as Redis holds one: absent, there but not
    /// signed by this operator's master key (or unreadable), or its payload. A Redis error is an
    /// error, never "absent".
    async fn read_signed(&self, key: &str) -> Result<Kept, redis::RedisError> {
        let mut conn = self.conn.clone();
        let Some(bytes) = redis::cmd("GET")
            .arg(key)
            .query_async::<Option<Vec<u8>>>(&mut conn)
            .await?
        else {
            return Ok(Kept::Absent);
        };
        Ok(verified(&self.master_key, key, &bytes).map_or_else(
            || {
                tracing::warn!(
                    key,
                    "a value in Redis does not carry this operator's signature; ignored"
                );
                Kept::Forged
            },
            Kept::Value,
        ))
    }

    /// Reports a result already recorded in status (re-delivered): its verdict again, from the
    /// same result and policy.
    async fn report(&mut self, request: &ScanRequest, result: &ScanResult) -> Handled {
        let reported = request
            .status
            .as_ref()
            .and_then(|s| s.scanners.iter().find(|s| s.name == result.scanner))
            .is_some_and(|scanner| {
                checks::desired(request, scanner, "1970-01-01T00:00:00Z")
                    .is_some_and(|d| scanner.reported.as_deref() == Some(d.key().as_str()))
            });
        if reported {
            return Handled::Done("duplicate");
        }
        match self.verdict(request, result).await {
            Ok(verdict) => self.post(request, result, &verdict).await,
            Err(handled) => handled,
        }
    }

    /// Posts the verdict to the scanner's check run: the annotations GitHub does not have yet,
    /// 50 per request, then the conclusion; then records that GitHub has it.
    async fn post(
        &mut self,
        request: &ScanRequest,
        result: &ScanResult,
        verdict: &Verdict,
    ) -> Handled {
        if let Some(wait) = self.breaker.open() {
            // Recorded already; reported once GitHub answers again.
            return Handled::Retry {
                reason: format!(
                    "GitHub is held back for {} s more (circuit breaker)",
                    wait.as_secs()
                ),
                github: false,
                wait: None,
            };
        }
        let mut id = match self.check_run(request, result, None).await {
            Ok(id) => id,
            Err(handled) => return self.given_up(request, result, None, verdict, handled).await,
        };
        let mut sent = self.send(request, id, verdict).await;
        if matches!(sent, Err(Sent::Gone)) {
            // GitHub no longer has the run (404): the report goes into another one, found by
            // its external_id or made now; the controller makes none for a concluded scanner.
            tracing::warn!(scanrequest = %format!("{}/{}", result.namespace, result.scan_request), scanner = %result.scanner, check_run = id, "the check run is gone at GitHub; reporting into a new one");
            id = match self.check_run(request, result, Some(id)).await {
                Ok(id) => id,
                Err(handled) => {
                    return self.given_up(request, result, None, verdict, handled).await;
                }
            };
            sent = self.send(request, id, verdict).await;
        }
        let failed = match sent {
            Ok(()) => None,
            Err(Sent::Gone) => Some(Handled::Dead(format!(
                "check run {id}, made in place of one GitHub no longer had, is gone too"
            ))),
            Err(Sent::Failed(handled)) => Some(handled),
        };
        if let Some(handled) = failed {
            return self
                .given_up(request, result, Some(id), verdict, handled)
                .await;
        }
        self.breaker.succeeded();
        self.conclude_duplicates(request, result, id, verdict).await;
        let handled = self
            .record_reported(request, result, Some(id), verdict.conclusion)
            .await;
        if handled == Handled::Done("reported") {
            self.upload_sarif(request, result).await;
        }
        handled
    }

    /// A create that timed out may have landed after a look for it: every other open run of
    /// this scanner with its `external_id` is concluded the same way (without annotations), so
    /// none stays open on the pull request. Best effort.
    async fn conclude_duplicates(
        &self,
        request: &ScanRequest,
        result: &ScanResult,
        id: i64,
        verdict: &Verdict,
    ) {
        let spec = &request.spec;
        let (owner, repo) = (&spec.repository.owner, &spec.repository.name);
        let name = gatehouse_crds::external_id::check_run_name(&result.scanner);
        let external_id = checks::external_id(request, &result.scanner);
        let Ok(runs) = self
            .github
            .find_check_runs(
                spec.installation_id,
                owner,
                repo,
                &spec.pull_request.head_sha,
                &name,
                &external_id,
            )
            .await
        else {
            return;
        };
        for run in runs
            .iter()
            .filter(|r| r.id != id && r.status != "completed")
        {
            let update = CheckRunUpdate {
                status: Some(CheckStatus::Completed),
                conclusion: Some(CheckConclusion::from(verdict.conclusion)),
                completed_at: Some(
                    k8s_openapi::jiff::Timestamp::now()
                        .strftime("%Y-%m-%dT%H:%M:%SZ")
                        .to_string(),
                ),
                output: Some(CheckOutput::new(
                    verdict.title.clone(),
                    verdict.summary.clone(),
                )),
                ..CheckRunUpdate::default()
            };
            if let Err(error) = self
                .github
                .update_check_run(spec.installation_id, owner, repo, run.id, &update)
                .await
            {
                tracing::warn!(check_run = run.id, %error, "a duplicate check run could not be concluded");
            }
        }
    }

    /// When GitHub refuses the report for good (the App lost access to the repository), the
    /// conclusion recorded in the status is marked as told all the same: nothing could tell
    /// GitHub, and the request must not wait for it forever (retention).
    async fn given_up(
        &mut self,
        request: &ScanRequest,
        result: &ScanResult,
        id: Option<i64>,
        verdict: &Verdict,
        handled: Handled,
    ) -> Handled {
        if matches!(handled, Handled::Dead(_)) {
            // GitHub answered, if only to refuse.
            self.breaker.succeeded();
            let _ = self
                .record_reported(request, result, id, verdict.conclusion)
                .await;
        }
        handled
    }

    /// Uploads the scanner's SARIF to code scanning when the policy asks for it: best effort,
    /// once (the check run, which holds the conclusion, is reported already; code scanning
    /// takes the same upload again without harm).
    async fn upload_sarif(&self, request: &ScanRequest, result: &ScanResult) {
        let wanted = request
            .status
            .as_ref()
            .and_then(|s| s.policy.as_ref())
            .is_some_and(|p| p.reporting.sarif_upload);
        let Some(sarif) = result.sarif.clone().filter(|_| wanted) else {
            return;
        };
        let spec = &request.spec;
        let upload = crate::github::SarifUpload {
            commit_sha: spec.pull_request.head_sha.clone(),
            git_ref: format!("refs/pull/{}/head", spec.pull_request.number),
            sarif,
            tool_name: gatehouse_crds::external_id::check_run_name(&result.scanner),
        };
        match self
            .github
            .upload_sarif(
                spec.installation_id,
                &spec.repository.owner,
                &spec.repository.name,
                &upload,
            )
            .await
        {
            Ok(id) => {
                self.metrics.result_handled("sarif_uploaded");
                tracing::info!(scanrequest = %format!("{}/{}", result.namespace, result.scan_request), scanner = %result.scanner, upload = %id, "SARIF uploaded to code scanning");
            }
            Err(error) => {
                self.metrics.result_handled("sarif_upload_failed");
                tracing::warn!(scanrequest = %format!("{}/{}", result.namespace, result.scan_request), scanner = %result.scanner, %error, "SARIF not uploaded to code scanning");
            }
        }
    }

    /// The id of the scanner's check run: recorded, found by its `external_id`, or created now
    /// (GitHub was down while the scan ran). With `gone`, the recorded run is one GitHub no
    /// longer has (404): another is found by its `external_id` or created, and recorded.
    async fn check_run(
        &self,
        request: &ScanRequest,
        result: &ScanResult,
        gone: Option<i64>,
    ) -> Result<i64, Handled> {
        let spec = &request.spec;
        let (owner, repo) = (&spec.repository.owner, &spec.repository.name);
        let recorded = request
            .status
            .as_ref()
            .and_then(|s| s.scanners.iter().find(|s| s.name == result.scanner))
            .and_then(|s| s.check_run_id);
        if let Some(id) = recorded.filter(|_| gone.is_none()) {
            return Ok(id);
        }
        let name = gatehouse_crds::external_id::check_run_name(&result.scanner);
        let external_id = checks::external_id(request, &result.scanner);
        let runs = self
            .github
            .find_check_runs(
                spec.installation_id,
                owner,
                repo,
                &spec.pull_request.head_sha,
                &name,
                &external_id,
            )
            .await
            .map_err(|e| github_failed("look up the check run", &e))?;
        if let Some(run) = runs.iter().find(|r| Some(r.id) != gone) {
            if gone.is_some() {
                let _ = self
                    .record_in_status(request, result, Some(run.id), None)
                    .await;
            }
            return Ok(run.id);
        }
        let created = self
            .github
            .create_check_run(
                spec.installation_id,
                owner,
                repo,
                &NewCheckRun {
                    name,
                    head_sha: spec.pull_request.head_sha.clone(),
                    external_id,
                    details_url: crate::controller::details_url_of(
                        self.config.details_url.as_deref(),
                        request,
                    ),
                    status: CheckStatus::InProgress,
                    started_at: None,
                    conclusion: None,
                    completed_at: None,
                    output: Some(CheckOutput::new("Reporting", "Reporting the findings.")),
                },
            )
            .await
            .map_err(|e| github_failed("create the check run", &e))?;
        // Recorded at once: a retry must find this run, not create another (GitHub's list of
        // runs may lag behind).
        let _ = self
            .record_in_status(request, result, Some(created.id), None)
            .await;
        Ok(created.id)
    }

    /// How many of the `total` annotations the run already holds: where to resume. With
    /// nothing to annotate there is nothing to ask (a run GitHub no longer has answers the
    /// conclusion with 404 all the same).
    async fn annotations_held(
        &self,
        request: &ScanRequest,
        id: i64,
        total: usize,
    ) -> Result<usize, Sent> {
        if total == 0 {
            return Ok(0);
        }
        let spec = &request.spec;
        match self
            .github
            .get_check_run(
                spec.installation_id,
                &spec.repository.owner,
                &spec.repository.name,
                id,
            )
            .await
        {
            Ok(state) => Ok(state.annotations_count.min(total)),
            Err(error) if error.status() == Some(404) => Err(Sent::Gone),
            Err(error) => Err(Sent::Failed(github_failed("read the check run", &error))),
        }
    }

    /// Sends the annotations GitHub does not have yet (GitHub's count of the run's annotations
    /// says how many it has; the order is the same every time), then the conclusion.
    ///
    /// The annotations GitHub holds are always the first ones of the list, so that its count is
    /// where to resume: when GitHub refuses a batch (422), no later batch is sent, and the
    /// conclusion says how many annotations were not posted (on a retry the refused batch is
    /// offered again, and the note made again should GitHub refuse it again).
    async fn send(&self, request: &ScanRequest, id: i64, verdict: &Verdict) -> Result<(), Sent> {
        let spec = &request.spec;
        let (owner, repo, installation) = (
            &spec.repository.owner,
            &spec.repository.name,
            spec.installation_id,
        );
        let total = verdict.annotations.len();
        let sent = self.annotations_held(request, id, total).await?;
        let mut rest = &verdict.annotations[sent..];
        let mut summary = verdict.summary.clone();
        // Every batch but the last alone, status untouched: a batch whose answer is lost cannot
        // reopen a run already concluded.
        while rest.len() > ANNOTATIONS_PER_REQUEST {
            let (batch, after) = rest.split_at(ANNOTATIONS_PER_REQUEST);
            let mut output = CheckOutput::new(verdict.title.clone(), summary.clone());
            output.annotations = batch.to_vec();
            let update = CheckRunUpdate {
                output: Some(output),
                ..CheckRunUpdate::default()
            };
            match self
                .github
                .update_check_run(installation, owner, repo, id, &update)
                .await
            {
                Ok(()) => rest = after,
                Err(error) if error.status() == Some(422) => {
                    // GitHub's message is clipped, and the summary kept within its limit.
                    summary = verdict::with_unposted_note(
                        &summary,
                        "a batch of annotations",
                        &error.to_string(),
                        rest.len(),
                        total,
                    );
                    rest = &[];
                }
                Err(error) if error.status() == Some(404) => return Err(Sent::Gone),
                Err(error) => return Err(Sent::Failed(github_failed("add annotations", &error))),
            }
        }
        let mut update = CheckRunUpdate {
            status: Some(CheckStatus::Completed),
            conclusion: Some(CheckConclusion::from(verdict.conclusion)),
            completed_at: Some(
                k8s_openapi::jiff::Timestamp::now()
                    .strftime("%Y-%m-%dT%H:%M:%SZ")
                    .to_string(),
            ),
            details_url: crate::controller::details_url_of(
                self.config.details_url.as_deref(),
                request,
            ),
            output: Some(CheckOutput {
                annotations: rest.to_vec(),
                ..CheckOutput::new(verdict.title.clone(), summary.clone())
            }),
            ..CheckRunUpdate::default()
        };
        let mut outcome = self
            .github
            .update_check_run(installation, owner, repo, id, &update)
            .await;
        if let Err(error) = &outcome
            && error.status() == Some(422)
            && !rest.is_empty()
        {
            // The conclusion must land even when an annotation is refused.
            update.output = Some(CheckOutput::new(
                verdict.title.clone(),
                verdict::with_unposted_note(
                    &summary,
                    "the annotations",
                    &error.to_string(),
                    rest.len(),
                    total,
                ),
            ));
            outcome = self
                .github
                .update_check_run(installation, owner, repo, id, &update)
                .await;
        }
        match outcome {
            Ok(()) => Ok(()),
            Err(error) if error.status() == Some(404) => Err(Sent::Gone),
            Err(error) => Err(Sent::Failed(github_failed(
                "conclude the check run",
                &error,
            ))),
        }
    }

    /// Records in the status that GitHub has the conclusion (retention may go ahead; nothing
    /// posts it again).
    async fn record_reported(
        &self,
        request: &ScanRequest,
        result: &ScanResult,
        id: Option<i64>,
        conclusion: Conclusion,
    ) -> Handled {
        let key = format!("completed/{}", conclusion.as_github());
        self.record_in_status(request, result, id, Some(&key)).await
    }

    /// Records in the status the scanner's check run id and (when given) what GitHub was told,
    /// on a fresh read, again on a conflict.
    async fn record_in_status(
        &self,
        request: &ScanRequest,
        result: &ScanResult,
        id: Option<i64>,
        reported: Option<&str>,
    ) -> Handled {
        let api: Api<ScanRequest> = Api::namespaced(self.client.clone(), &result.namespace);
        for _ in 0..5 {
            let fresh = match api.get_opt(&result.scan_request).await {
                Ok(Some(fresh)) if fresh.metadata.uid == request.metadata.uid => fresh,
                Ok(_) => return Handled::Done("reported"),
                Err(error) => return retry(format!("record the report: {error}")),
            };
            let Some(mut status) = fresh.status.clone() else {
                return Handled::Done("reported");
            };
            let Some(s) = status
                .scanners
                .iter_mut()
                .find(|s| s.name == result.scanner)
            else {
                return Handled::Done("reported");
            };
            if (reported.is_none() || s.reported.as_deref() == reported)
                && (id.is_none() || s.check_run_id == id)
            {
                return Handled::Done("reported");
            }
            if let Some(reported) = reported {
                s.reported = Some(reported.to_owned());
            }
            if id.is_some() {
                s.check_run_id = id;
            }
            match crate::controller::apply_status(&self.client, &fresh, &status, None).await {
                Ok(_) => return Handled::Done("reported"),
                Err(error) if is_conflict(&error) => {}
                Err(error) => return retry(format!("record the report: {error}")),
            }
        }
        retry("the status kept changing while recording the report")
    }
}

/// A GitHub failure: retried later when it may pass (the breaker counts it), dead-lettered when
/// GitHub refuses for good.
fn github_failed(what: &str, error: &crate::github::GitHubError) -> Handled {
    if error.is_transient() {
        Handled::Retry {
            reason: format!("{what}: {error}"),
            github: true,
            wait: error.retry_after(),
        }
    } else {
        Handled::Dead(format!("GitHub refused to {what}: {error}"))
    }
}

/// What Redis holds under a key the operator signs its values in.
#[derive(Debug)]
enum Kept {
    /// Nothing.
    Absent,
    /// Something this operator did not write (or cannot read): not trusted.
    Forged,
    /// The payload of a value this operator wrote.
    Value(Vec<u8>),
}

/// The base commit's findings, as far as known.
#[derive(Debug, PartialEq, Eq)]
enum Baseline {
    Off,
    Known {
        sha: String,
        fingerprints: Vec<String>,
    },
    Unknown(String),
}

impl Baseline {
    /// `known\n<sha>\n<fingerprint>...` or `unknown\n<why>`.
    fn encode(&self) -> Vec<u8> {
        match self {
            Baseline::Off => b"off".to_vec(),
            Baseline::Known { sha, fingerprints } => {
                let mut text = format!("known\n{sha}");
                for fingerprint in fingerprints {
                    text.push('\n');
                    text.push_str(fingerprint);
                }
                text.into_bytes()
            }
            Baseline::Unknown(why) => format!("unknown\n{why}").into_bytes(),
        }
    }

    fn decode(bytes: &[u8]) -> Option<Baseline> {
        let text = std::str::from_utf8(bytes).ok()?;
        let mut lines = text.split('\n');
        match lines.next()? {
            "off" => Some(Baseline::Off),
            "known" => {
                let sha = lines.next()?.to_owned();
                let mut fingerprints: Vec<String> =
                    lines.filter(|l| !l.is_empty()).map(str::to_owned).collect();
                fingerprints.sort_unstable();
                Some(Baseline::Known { sha, fingerprints })
            }
            "unknown" => Some(Baseline::Unknown(lines.collect::<Vec<_>>().join("\n"))),
            _ => None,
        }
    }
}

/// The payload of a value kept in Redis under `key` as [`Consumer`] keeps them (signed with a
/// key derived from `master_key` over the key's name and the value, LZ4-compressed), or `None`
/// when it is not one (written by something else, or under another master key).
fn verified(master_key: &MasterKey, key: &str, bytes: &[u8]) -> Option<Vec<u8>> {
    let (signature, compressed) = (bytes.get(..64)?, bytes.get(64..)?);
    let signature = std::str::from_utf8(signature).ok()?;
    if !master_key
        .scan_key(&format!("redis-value:{key}"))
        .verify(compressed, signature)
    {
        return None;
    }
    lz4_flex::decompress_size_prepended(compressed).ok()
}

/// Whether `bytes`, read from Redis under `key` (a [`baseline_key`]), are a base commit's
/// findings this operator kept: the same check the consumer makes before using them, which the
/// controller makes before sparing a Job the base scan.
pub fn is_kept_base(master_key: &MasterKey, key: &str, bytes: &[u8]) -> bool {
    matches!(
        verified(master_key, key, bytes).and_then(|payload| Baseline::decode(&payload)),
        Some(Baseline::Known { .. })
    )
}

/// Where the base commit's findings are kept: by repository, base commit, and the scanner's
/// configuration (another image or settings find other things).
pub fn baseline_key(
    repository_id: i64,
    base_sha: &str,
    spec: &gatehouse_crds::scanpolicy::ScannerSpec,
) -> String {
    let config = serde_json::to_string(&(
        &spec.kind,
        &spec.image,
        &spec.kics,
        &spec.blackduck.as_ref().map(|b| (&b.url, &b.project_name)),
    ))
    .unwrap_or_default();
    let digest = crate::scanners::parse::fingerprint_of(&[&config]);
    format!(
        "{{gatehouse-results}}:baseline:{repository_id}:{base_sha}:{}",
        &digest[..16]
    )
}

/// The result in an entry whose signature was verified: decompressed (within
/// [`MAX_RESULT_BYTES`]) and parsed.
fn decode(entry: &ResultEntry) -> Result<ScanResult, String> {
    let json = match entry.encoding {
        BodyEncoding::Identity => std::borrow::Cow::Borrowed(entry.payload.as_slice()),
        BodyEncoding::Lz4 => {
            let declared = entry
                .payload
                .get(..4)
                .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as usize)
                .ok_or("undecodable: an LZ4 payload without its size")?;
            if declared > MAX_RESULT_BYTES {
                return Err(format!(
                    "undecodable: the result unpacks to {declared} bytes, more than {MAX_RESULT_BYTES}"
                ));
            }
            std::borrow::Cow::Owned(
                lz4_flex::decompress_size_prepended(&entry.payload)
                    .map_err(|e| format!("undecodable: LZ4: {e}"))?,
            )
        }
    };
    serde_json::from_slice(&json).map_err(|e| format!("undecodable: {e}"))
}

fn is_conflict(error: &crate::controller::Error) -> bool {
    matches!(
        error,
        crate::controller::Error::Kube { source, .. }
            if matches!(source.as_ref(), kube::Error::Api(status) if status.code == 409)
    )
}

/// How long ago an entry was added, from its id (`<unix ms>-<seq>`).
fn age_of(id: &str) -> Duration {
    let added = gatehouse_crds::stream_group::parse_id(id).map_or(0, |(ms, _)| ms);
    Duration::from_millis(gatehouse_crds::stream_group::unix_millis().saturating_sub(added))
}

/// A value from an entry, bounded and printable, for a log line or reason.
fn loggable(text: &str) -> String {
    text.chars()
        .take(64)
        .map(|c| if c.is_control() { '?' } else { c })
        .collect()
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}
