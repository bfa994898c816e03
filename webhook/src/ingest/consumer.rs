//! The Redis side of ingest: consumer group `ingest` on `{gatehouse}:events`. New entries are read
//! with XREADGROUP; an entry is acknowledged only once its work is done. Entries left pending
//! (this consumer failed on them, or another consumer died holding them) are retried with
//! exponential backoff: an entry delivered `n` times is claimed again (XCLAIM) once idle for
//! `claim_idle × 2^(n-1)`, capped at `max_backoff`, so a long outage costs few attempts and loses
//! nothing. An entry that cannot succeed is copied to `{gatehouse}:events:dead` with the reason
//! and acknowledged in one transaction at once; one that keeps failing transiently only once it
//! is older than `retry_window`. Trimming never removes an entry that is pending or not yet
//! delivered.

use std::time::{Duration, Instant};

use gatehouse_crds::stream::{
    EVENTS_DEAD_STREAM, EVENTS_RETRY_REASONS, EVENTS_STREAM, EventEntry, INGEST_GROUP,
};
use redis::aio::ConnectionManager;
use redis::streams::{StreamId, StreamReadOptions, StreamReadReply};

use crate::events::entry_from_stream;

/// Acknowledged entries younger than this are kept in the stream, for people debugging.
const KEEP_ACKNOWLEDGED: Duration = Duration::from_secs(15 * 60);

/// An entry to handle, as read (for the dead-letter copy) and decoded.
#[derive(Debug)]
pub struct Pending {
    /// The entry as stored.
    pub raw: StreamId,
    /// The decoded entry, or why it does not decode.
    pub entry: Result<EventEntry, String>,
    /// How many times the group has delivered it, this delivery included.
    pub deliveries: u64,
}

impl Pending {
    fn new(raw: StreamId, deliveries: u64) -> Pending {
        let entry = entry_from_stream(&raw).map_err(|e| e.to_string());
        Pending {
            raw,
            entry,
            deliveries,
        }
    }

    /// The stream entry id.
    pub fn id(&self) -> &str {
        &self.raw.id
    }

    /// The delivery id, for log lines (empty when the entry does not decode).
    pub fn delivery(&self) -> &str {
        self.entry.as_ref().map_or("", |e| e.delivery_id.as_str())
    }
}

/// What became of one entry.
#[derive(Debug)]
pub enum Handled {
    /// Done (or nothing to do): acknowledge.
    Done,
    /// Failed, worth retrying later: leave pending.
    Retry(String),
    /// Can never succeed: dead-letter now.
    Dead(String),
}

/// Consumer settings.
#[derive(Clone, Debug)]
pub struct ConsumerConfig {
    /// Consumer name (the pod name).
    pub name: String,
    /// Pending entries idle this long are claimed and retried (the first retry's delay; later
    /// ones double).
    pub claim_idle: Duration,
    /// The longest delay between two attempts at an entry.
    pub max_backoff: Duration,
    /// An entry failing transiently is retried until it is this old (by its stream id), then
    /// dead-lettered.
    pub retry_window: Duration,
    /// Entries read per call.
    pub batch: usize,
    /// How long a read blocks waiting for new entries.
    pub block: Duration,
}

/// A Redis call of the consumer failed.
#[derive(Debug, thiserror::Error)]
#[error("failed to {operation} on {EVENTS_STREAM}: {source}")]
pub struct ConsumerError {
    operation: &'static str,
    source: redis::RedisError,
}

fn err(operation: &'static str) -> impl FnOnce(redis::RedisError) -> ConsumerError {
    move |source| ConsumerError { operation, source }
}

impl ConsumerConfig {
    /// How long an entry delivered `deliveries` times waits (idle) before its next attempt.
    pub fn backoff(&self, deliveries: u64) -> Duration {
        let doublings = u32::try_from(deliveries.saturating_sub(1).min(30)).unwrap_or(30);
        self.claim_idle
            .saturating_mul(2u32.saturating_pow(doublings))
            .min(self.max_backoff.max(self.claim_idle))
    }
}

/// One ingest consumer.
pub struct Consumer {
    conn: ConnectionManager,
    config: ConsumerConfig,
    last_claim: Option<Instant>,
    last_trim: Option<Instant>,
    /// When the entries of the last batch became pending with this consumer (their idle
    /// clocks started).
    read_at: Instant,
    /// Events of the entries dead-lettered while claiming (past the retry window), not yet
    /// counted in the metrics.
    expired: Vec<String>,
    /// Where the next pending-list scan starts: claims walk the pending list in pages, so
    /// entries behind a page of waiting ones are reached too.
    claim_cursor: String,
}

impl std::fmt::Debug for Consumer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Consumer")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl Consumer {
    /// A consumer; creates the group (from the start of the stream) if it does not exist.
    pub async fn new(
        conn: ConnectionManager,
        config: ConsumerConfig,
    ) -> Result<Consumer, ConsumerError> {
        gatehouse_crds::stream_group::ensure_group(&mut conn.clone(), EVENTS_STREAM, INGEST_GROUP)
            .await
            .map_err(err("create consumer group"))?;
        Ok(Consumer {
            conn,
            config,
            last_claim: None,
            last_trim: None,
            read_at: Instant::now(),
            expired: Vec::new(),
            claim_cursor: "-".to_owned(),
        })
    }

    /// Reads new entries (blocking up to the configured time), then claimed ones when due.
    /// Returns the entries to handle; each must be settled with [`Consumer::settle`].
    pub async fn next_batch(&mut self) -> Result<Vec<Pending>, ConsumerError> {
        // Trimming comes first: after the read, the entries' idle clocks run, and time spent
        // here would be taken from the work on them (another consumer may claim them once
        // they have been idle for claim_idle).
        if self
            .last_trim
            .is_none_or(|at| at.elapsed() >= Duration::from_secs(30))
        {
            self.last_trim = Some(Instant::now());
            if let Err(e) = self.trim().await {
                tracing::warn!(error = %e, "stream not trimmed this time");
            }
        }
        let mut batch = Vec::new();
        let claim_due = self
            .last_claim
            .is_none_or(|at| at.elapsed() >= self.config.claim_idle / 2);
        if claim_due {
            // Claimed entries' clocks restart during the claim: count from before it.
            self.read_at = Instant::now();
            self.last_claim = Some(self.read_at);
            batch.extend(self.claim().await?);
        }
        if batch.is_empty() {
            let options = StreamReadOptions::default()
                .group(INGEST_GROUP, &self.config.name)
                .count(self.config.batch)
                .block(usize::try_from(self.config.block.as_millis()).unwrap_or(usize::MAX));
            let mut conn = self.conn.clone();
            let reply: Option<StreamReadReply> =
                redis::AsyncCommands::xread_options(&mut conn, &[EVENTS_STREAM], &[">"], &options)
                    .await
                    .map_err(err("read new entries"))?;
            // New entries are delivered when the (blocking) read returns.
            self.read_at = Instant::now();
            for key in reply.map(|r| r.keys).unwrap_or_default() {
                batch.extend(key.ids.into_iter().map(|raw| Pending::new(raw, 1)));
            }
        }
        Ok(batch)
    }

    /// The events of entries dead-lettered since the last call because their retry window
    /// passed (for the metrics).
    pub fn take_expired(&mut self) -> Vec<String> {
        std::mem::take(&mut self.expired)
    }

    /// When the entries of the last batch became pending with this consumer: the time left for
    /// work on them counts from here.
    pub fn read_at(&self) -> Instant {
        self.read_at
    }

    /// The consumer's settings.
    pub fn config(&self) -> &ConsumerConfig {
        &self.config
    }

    /// Takes over pending entries whose backoff has passed; entries past the retry window are
    /// dead-lettered instead of returned.
    async fn claim(&mut self) -> Result<Vec<Pending>, ConsumerError> {
        let mut conn = self.conn.clone();
        let min_idle = millis(self.config.claim_idle);
        let page = self.config.batch.max(1) * 4;
        // XPENDING key group IDLE ms start end count: (id, consumer, idle ms, deliveries).
        let listed: Vec<(String, String, u64, u64)> = redis::cmd("XPENDING")
            .arg(EVENTS_STREAM)
            .arg(INGEST_GROUP)
            .arg("IDLE")
            .arg(min_idle)
            .arg(&self.claim_cursor)
            .arg("+")
            .arg(page)
            .query_async(&mut conn)
            .await
            .map_err(err("list pending entries"))?;
        // The next page starts after the last entry listed; a short page ends the walk.
        self.claim_cursor = match listed.last() {
            Some((id, ..)) if listed.len() == page => format!("({id}"),
            _ => "-".to_owned(),
        };
        let now_ms = crate::unix_millis();
        let mut out = Vec::new();
        for (id, _, idle_ms, deliveries) in listed {
            let wait = millis(self.config.backoff(deliveries));
            if idle_ms < wait {
                continue;
            }
            // Only if still idle that long: another consumer may have claimed it meanwhile.
            let claimed: redis::streams::StreamClaimReply = redis::cmd("XCLAIM")
                .arg(EVENTS_STREAM)
                .arg(INGEST_GROUP)
                .arg(&self.config.name)
                .arg(wait)
                .arg(&id)
                .query_async(&mut conn)
                .await
                .map_err(err("claim entry"))?;
            let Some(entry) = claimed.ids.into_iter().next() else {
                continue;
            };
            let age_ms = gatehouse_crds::stream_group::parse_id(&id)
                .map_or(0, |(ms, _)| now_ms.saturating_sub(ms));
            if age_ms > millis(self.config.retry_window) {
                let reason = self
                    .reason(&id)
                    .await?
                    .unwrap_or_else(|| format!("not processed after {deliveries} deliveries"));
                let reason = format!("retried for {}s: {reason}", age_ms / 1000);
                self.dead_letter(&entry, &reason, deliveries).await?;
                let pending = Pending::new(entry, deliveries);
                tracing::warn!(entry = %id, delivery = pending.delivery(), %reason, "dead-lettered: retry window passed");
                self.expired
                    .push(pending.entry.map(|entry| entry.event).unwrap_or_default());
                continue;
            }
            // XCLAIM counted this delivery.
            let pending = Pending::new(entry, deliveries + 1);
            tracing::info!(entry = %id, delivery = pending.delivery(), attempt = pending.deliveries, "retrying pending entry");
            out.push(pending);
        }
        Ok(out)
    }

    /// Why the entry's last attempt failed, if recorded.
    async fn reason(&self, id: &str) -> Result<Option<String>, ConsumerError> {
        let mut conn = self.conn.clone();
        redis::cmd("HGET")
            .arg(EVENTS_RETRY_REASONS)
            .arg(id)
            .query_async(&mut conn)
            .await
            .map_err(err("read retry reason"))
    }

    /// Records the result of handling one entry.
    pub async fn settle(
        &mut self,
        pending: &Pending,
        handled: Handled,
    ) -> Result<(), ConsumerError> {
        let id = pending.id();
        match handled {
            Handled::Done => self.ack(id).await,
            Handled::Retry(reason) => {
                let deliveries = pending.deliveries;
                let retry_in = self.config.backoff(deliveries);
                tracing::warn!(entry = %id, delivery = pending.delivery(), reason = %reason, attempt = deliveries, retry_in_s = retry_in.as_secs_f64(), "entry left pending for a retry");
                let mut conn = self.conn.clone();
                redis::cmd("HSET")
                    .arg(EVENTS_RETRY_REASONS)
                    .arg(id)
                    .arg(&reason)
                    .query_async::<()>(&mut conn)
                    .await
                    .map_err(err("record retry reason"))
            }
            Handled::Dead(reason) => {
                self.dead_letter(&pending.raw, &reason, pending.deliveries)
                    .await
            }
        }
    }

    async fn ack(&self, id: &str) -> Result<(), ConsumerError> {
        let mut conn = self.conn.clone();
        let mut pipe = redis::pipe();
        pipe.cmd("XACK")
            .arg(EVENTS_STREAM)
            .arg(INGEST_GROUP)
            .arg(id)
            .ignore()
            .cmd("HDEL")
            .arg(EVENTS_RETRY_REASONS)
            .arg(id)
            .ignore();
        pipe.query_async::<()>(&mut conn)
            .await
            .map_err(err("acknowledge entry"))
    }

    /// Copies the entry with the reason to the dead-letter stream and acknowledges it, atomically.
    async fn dead_letter(
        &self,
        entry: &StreamId,
        reason: &str,
        attempts: u64,
    ) -> Result<(), ConsumerError> {
        let delivery = match entry.map.get("delivery") {
            Some(redis::Value::BulkString(b)) => String::from_utf8_lossy(b).into_owned(),
            _ => String::new(),
        };
        tracing::error!(entry = %entry.id, delivery = %crate::receive::loggable(&delivery), reason = %reason, attempts, "entry moved to the dead-letter stream");
        let mut fields: Vec<(String, redis::Value)> = entry
            .map
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        fields.push((
            "source_id".into(),
            redis::Value::BulkString(entry.id.clone().into_bytes()),
        ));
        fields.push((
            "reason".into(),
            redis::Value::BulkString(reason.as_bytes().to_vec()),
        ));
        fields.push((
            "attempts".into(),
            redis::Value::BulkString(attempts.to_string().into_bytes()),
        ));
        let mut xadd = redis::cmd("XADD");
        xadd.arg(EVENTS_DEAD_STREAM).arg("*");
        for (k, v) in &fields {
            xadd.arg(k);
            match v {
                redis::Value::BulkString(b) => xadd.arg(b.as_slice()),
                redis::Value::SimpleString(s) => xadd.arg(s.as_str()),
                other => xadd.arg(format!("{other:?}")),
            };
        }
        let mut pipe = redis::pipe();
        pipe.atomic()
            .add_command(xadd)
            .ignore()
            .cmd("XACK")
            .arg(EVENTS_STREAM)
            .arg(INGEST_GROUP)
            .arg(&entry.id)
            .ignore()
            .cmd("HDEL")
            .arg(EVENTS_RETRY_REASONS)
            .arg(&entry.id)
            .ignore();
        let mut conn = self.conn.clone();
        pipe.query_async::<()>(&mut conn)
            .await
            .map_err(err("dead-letter entry"))
    }

    /// Removes acknowledged entries older than every pending or undelivered entry (and older than
    /// [`KEEP_ACKNOWLEDGED`]); never anything still to be processed, for any group.
    pub async fn trim(&self) -> Result<Option<String>, ConsumerError> {
        let mut conn = self.conn.clone();
        gatehouse_crds::stream_group::trim_acknowledged(
            &mut conn,
            EVENTS_STREAM,
            KEEP_ACKNOWLEDGED,
            crate::unix_millis(),
        )
        .await
        .map_err(err("trim"))
    }
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(claim_idle_ms: u64, max_backoff_ms: u64) -> ConsumerConfig {
        ConsumerConfig {
            name: "c".into(),
            claim_idle: Duration::from_millis(claim_idle_ms),
            max_backoff: Duration::from_millis(max_backoff_ms),
            retry_window: Duration::from_secs(86_400),
            batch: 1,
            block: Duration::from_millis(1),
        }
    }

    #[test]
    fn the_wait_doubles_per_delivery_up_to_the_cap() {
        let c = config(60_000, 300_000);
        let waits: Vec<u64> = (1..=6).map(|n| c.backoff(n).as_secs()).collect();
        assert_eq!(waits, [60, 120, 240, 300, 300, 300]);
        // Never below the claim idle time, whatever the cap, and no overflow at any count.
        assert_eq!(config(60_000, 1_000).backoff(1).as_secs(), 60);
        assert_eq!(c.backoff(u64::MAX).as_secs(), 300);
        assert_eq!(c.backoff(0).as_secs(), 60);
    }

    #[test]
    fn a_day_of_outage_costs_few_hundred_attempts() {
        let c = config(60_000, 300_000);
        let mut elapsed = Duration::ZERO;
        let mut attempts = 0u64;
        while elapsed < Duration::from_secs(86_400) {
            attempts += 1;
            elapsed += c.backoff(attempts);
        }
        assert!((280..=300).contains(&attempts), "{attempts}");
    }
}
