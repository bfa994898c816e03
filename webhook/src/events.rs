//! The `receive` role's side of Redis: one atomic script per delivery that refuses when the
//! backlog passes its cap, acknowledges a redelivered delivery id without a second entry, and
//! otherwise appends the entry to `{gatehouse}:events` and records the id with a TTL. The HTTP
//! answer is given only after Redis answered this script.

use std::time::Duration;

use gatehouse_crds::stream::{BodyEncoding, EVENTS_STREAM, EventEntry, delivery_key};
use redis::aio::ConnectionManager;

/// Bodies at least this large are stored LZ4-compressed (a 28 KB pull_request payload shrinks
/// about fivefold, which is what lets Redis take far more deliveries per second).
const COMPRESS_FROM: usize = 1024;

/// Checks the delivery id, the backlog, then appends; atomic, so a delivery is either stored and
/// recorded, or neither. A redelivery is answered as a duplicate even while the backlog is full
/// (it was stored; a 503 would make GitHub show a failure for a delivery that is safe). The id is
/// recorded after XADD: if XADD fails nothing was recorded and GitHub's redelivery is accepted.
///
/// The backlog is what ingest has not finished: for each consumer group its pending entries plus
/// its lag (entries not yet delivered), the worst group counting. Acknowledged entries still in
/// the stream (kept a while for debugging, or not yet trimmed) do not count. Before any group
/// exists, or when Redis cannot tell a group's lag, the stream length is used.
const ENQUEUE: &str = r"
if redis.call('EXISTS', KEYS[2]) == 1 then
  return {'duplicate', redis.call('GET', KEYS[2])}
end
local backlog = redis.call('XLEN', KEYS[1])
local ok, groups = pcall(redis.call, 'XINFO', 'GROUPS', KEYS[1])
if ok and #groups > 0 then
  local worst = 0
  for _, group in ipairs(groups) do
    local pending, lag = 0, nil
    for i = 1, #group, 2 do
      if group[i] == 'pending' then pending = group[i + 1] end
      if group[i] == 'lag' then lag = group[i + 1] end
    end
    if not lag then
      worst = backlog
      break
    end
    if pending + lag > worst then worst = pending + lag end
  end
  backlog = worst
end
if backlog >= tonumber(ARGV[1]) then
  return {'backlog', tostring(backlog)}
end
local id = redis.call('XADD', KEYS[1], '*',
  'delivery', ARGV[3], 'event', ARGV[4], 'received_at', ARGV[5],
  'encoding', ARGV[6], 'body', ARGV[7])
redis.call('SET', KEYS[2], id, 'EX', ARGV[2])
return {'queued', id}
";

/// What happened to a delivery.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Enqueued {
    /// Stored as this stream entry id.
    Queued(String),
    /// Already accepted before (same delivery id) as this entry id; nothing stored.
    Duplicate(String),
}

/// Storing a delivery failed; nothing was stored.
#[derive(Debug, thiserror::Error)]
pub enum EnqueueError {
    /// `length` entries wait for ingest, at or above the configured cap.
    #[error("event backlog is full ({length} entries not yet processed)")]
    Backlog {
        /// Entries not yet processed.
        length: u64,
    },
    /// Redis could not be reached or refused the write.
    #[error("failed to store the delivery in redis: {0}")]
    Redis(#[from] redis::RedisError),
    /// The script answered something unexpected.
    #[error("failed to store the delivery: unexpected answer from redis: {0}")]
    Unexpected(String),
}

/// Writes deliveries into the events stream.
#[derive(Clone)]
pub struct EventWriter {
    conn: ConnectionManager,
    script: redis::Script,
    max_backlog: u64,
    dedup_ttl: Duration,
}

impl std::fmt::Debug for EventWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EventWriter")
            .field("max_backlog", &self.max_backlog)
            .field("dedup_ttl", &self.dedup_ttl)
            .finish_non_exhaustive()
    }
}

impl EventWriter {
    /// A writer over an existing connection.
    pub fn new(conn: ConnectionManager, max_backlog: u64, dedup_ttl: Duration) -> EventWriter {
        EventWriter {
            conn,
            script: redis::Script::new(ENQUEUE),
            max_backlog,
            dedup_ttl,
        }
    }

    /// Stores one verified delivery (its JSON payload).
    pub async fn enqueue(
        &self,
        delivery_id: &str,
        event: &str,
        received_at_ms: i64,
        payload: &[u8],
    ) -> Result<Enqueued, EnqueueError> {
        let entry = encode(delivery_id, event, received_at_ms, payload);
        let mut invocation = self.script.key(EVENTS_STREAM);
        invocation
            .key(delivery_key(delivery_id))
            .arg(self.max_backlog)
            .arg(self.dedup_ttl.as_secs().max(1));
        // ARGV[3..7]: the entry's fields, in `EventEntry::to_fields` order (the script names them).
        for (_, value) in &entry.to_fields() {
            invocation.arg(value.as_ref());
        }
        let mut conn = self.conn.clone();
        let (status, detail): (String, String) = invocation.invoke_async(&mut conn).await?;
        match status.as_str() {
            "queued" => Ok(Enqueued::Queued(detail)),
            "duplicate" => Ok(Enqueued::Duplicate(detail)),
            "backlog" => Err(EnqueueError::Backlog {
                length: detail.parse().unwrap_or(self.max_backlog),
            }),
            other => Err(EnqueueError::Unexpected(other.to_owned())),
        }
    }

    /// Whether Redis answers PING.
    pub async fn ping(&self) -> Result<(), redis::RedisError> {
        let mut conn = self.conn.clone();
        redis::cmd("PING").query_async::<()>(&mut conn).await
    }

    /// Entries in the stream, entries delivered to the ingest group but not acknowledged, and
    /// dead letters.
    pub async fn backlog(&self) -> Result<(u64, u64, u64), redis::RedisError> {
        let mut conn = self.conn.clone();
        let (length, dead): (u64, u64) = redis::pipe()
            .cmd("XLEN")
            .arg(EVENTS_STREAM)
            .cmd("XLEN")
            .arg(gatehouse_crds::stream::EVENTS_DEAD_STREAM)
            .query_async(&mut conn)
            .await?;
        let pending: redis::Value = redis::cmd("XPENDING")
            .arg(EVENTS_STREAM)
            .arg(gatehouse_crds::stream::INGEST_GROUP)
            .query_async(&mut conn)
            .await
            .unwrap_or(redis::Value::Nil);
        let pending = match pending {
            redis::Value::Array(items) => match items.first() {
                Some(redis::Value::Int(n)) => u64::try_from(*n).unwrap_or(0),
                _ => 0,
            },
            _ => 0,
        };
        Ok((length, pending, dead))
    }
}

/// The stream entry for a delivery: large payloads compressed.
pub fn encode(delivery_id: &str, event: &str, received_at_ms: i64, payload: &[u8]) -> EventEntry {
    let (encoding, body) = if payload.len() >= COMPRESS_FROM {
        (BodyEncoding::Lz4, compress(payload))
    } else {
        (BodyEncoding::Identity, payload.to_vec())
    };
    EventEntry {
        delivery_id: delivery_id.to_owned(),
        event: event.to_owned(),
        received_at_ms,
        encoding,
        body,
    }
}

/// Bodies up to this size are compressed through a per-thread scratch buffer that is kept: no
/// zeroed allocation per delivery. Larger (rare) bodies get their own buffer, so a 25 MB body
/// does not stay resident in every runtime thread.
const SCRATCH_UP_TO: usize = 256 * 1024;

/// LZ4 block with its uncompressed size as a little-endian `u32` prefix (the format of
/// `lz4_flex::compress_prepend_size`, which `payload` reads).
fn compress(payload: &[u8]) -> Vec<u8> {
    thread_local! {
        static SCRATCH: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
    }
    let Ok(size) = u32::try_from(payload.len()) else {
        return lz4_flex::compress_prepend_size(payload);
    };
    if payload.len() > SCRATCH_UP_TO {
        return lz4_flex::compress_prepend_size(payload);
    }
    SCRATCH.with_borrow_mut(|scratch| {
        let needed = 4 + lz4_flex::block::get_maximum_output_size(payload.len());
        if scratch.len() < needed {
            scratch.resize(needed, 0);
        }
        scratch[..4].copy_from_slice(&size.to_le_bytes());
        match lz4_flex::block::compress_into(payload, &mut scratch[4..needed]) {
            Ok(written) => scratch[..4 + written].to_vec(),
            // Cannot happen with an output of the maximum size; the allocating path is correct
            // in any case.
            Err(_) => lz4_flex::compress_prepend_size(payload),
        }
    })
}

/// Decodes an entry read with XRANGE / XREADGROUP / XAUTOCLAIM.
pub fn entry_from_stream(
    id: &redis::streams::StreamId,
) -> Result<EventEntry, gatehouse_crds::stream::MessageError> {
    let fields = id.map.iter().filter_map(|(name, value)| match value {
        redis::Value::BulkString(bytes) => Some((name.as_str(), bytes.as_slice())),
        redis::Value::SimpleString(text) => Some((name.as_str(), text.as_bytes())),
        _ => None,
    });
    EventEntry::from_fields(fields)
}

/// The JSON payload of an entry, decompressed.
pub fn payload(entry: &EventEntry) -> Result<Vec<u8>, String> {
    match entry.encoding {
        BodyEncoding::Identity => Ok(entry.body.clone()),
        BodyEncoding::Lz4 => {
            let (prefix, data) = entry
                .body
                .split_first_chunk::<4>()
                .ok_or("corrupt lz4 body: shorter than its size prefix")?;
            let size = usize::try_from(u32::from_le_bytes(*prefix)).unwrap_or(usize::MAX);
            // Bodies are at most the receive limit; a larger claim is corruption, not a reason
            // to allocate.
            if size > crate::receive::MAX_BODY_BYTES {
                return Err(format!("corrupt lz4 body: claims {size} bytes"));
            }
            let payload =
                lz4_flex::decompress(data, size).map_err(|e| format!("corrupt lz4 body: {e}"))?;
            if payload.len() == size {
                Ok(payload)
            } else {
                Err(format!(
                    "corrupt lz4 body: {} bytes instead of {size}",
                    payload.len()
                ))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn large_payloads_are_compressed_and_come_back_unchanged() {
        let payload = std::fs::read(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../tests/fixtures/github/pull_request.opened.octokit.json"
        ))
        .unwrap();
        let entry = encode("d", "pull_request", 1, &payload);
        assert_eq!(entry.encoding, BodyEncoding::Lz4);
        assert!(
            entry.body.len() * 3 < payload.len(),
            "{} -> {}",
            payload.len(),
            entry.body.len()
        );
        assert_eq!(super::payload(&entry).unwrap(), payload);
    }

    #[test]
    fn the_scratch_buffer_gives_the_same_bytes_as_the_allocating_encoder() {
        // Shrinking after a larger body: the kept buffer's stale tail must not leak in.
        for size in [250_000, 300_000, 40_000, 2_000, 28_011, 1_024] {
            let payload: Vec<u8> = (0..size)
                .map(|i| b"{\"a\": [1, 2], \"b\": \"x\"}"[i % 23])
                .collect();
            assert_eq!(
                compress(&payload),
                lz4_flex::compress_prepend_size(&payload),
                "{size}"
            );
            let entry = encode("d", "x", 1, &payload);
            assert_eq!(super::payload(&entry).unwrap(), payload, "{size}");
        }
    }

    #[test]
    fn small_payloads_are_stored_as_they_are() {
        let entry = encode("d", "ping", 1, b"{}");
        assert_eq!(entry.encoding, BodyEncoding::Identity);
        assert_eq!(super::payload(&entry).unwrap(), b"{}");
    }

    #[test]
    fn corrupt_compressed_bodies_are_an_error_not_a_panic() {
        let mut entry = encode("d", "x", 1, &[b'a'; 4096]);
        entry.body.truncate(6);
        let result = super::payload(&entry);
        assert!(result.is_err(), "{:?}", result.map(|p| p.len()));
        // A size prefix far beyond the data is refused, not allocated.
        let mut lying = encode("d", "x", 1, &[b'a'; 4096]);
        lying.body[..4].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(super::payload(&lying).is_err());
    }
}
