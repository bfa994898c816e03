//! `gatehouse-webhook dead-letters list | replay`: what ingest gave up on, and sending it back.
//!
//! A dead letter is the original stream entry's fields plus `source_id`, `reason` and
//! `attempts`. Replaying one appends the original fields to `{gatehouse}:events` as a new entry
//! (bypassing the delivery-id check: the id was recorded as seen when it first arrived) and
//! removes the dead letter, in one transaction, so a dead letter is replayed at most once and
//! never lost in between.

use gatehouse_crds::stream::{EVENTS_DEAD_STREAM, EVENTS_STREAM};
use redis::aio::ConnectionLike;
use redis::streams::StreamId;

/// Fields the dead-letter stream adds to an entry.
const ADDED: [&str; 3] = ["source_id", "reason", "attempts"];

/// Entries read per page.
const PAGE: usize = 100;

/// One dead letter.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeadLetter {
    /// Its id in the dead-letter stream.
    pub id: String,
    /// Its id in `{gatehouse}:events` when it died.
    pub source_id: String,
    /// `X-GitHub-Delivery`.
    pub delivery: String,
    /// `X-GitHub-Event`.
    pub event: String,
    /// Why it died.
    pub reason: String,
    /// Deliveries to ingest consumers before it died.
    pub attempts: String,
    /// The original entry's fields, in stream order.
    fields: Vec<(String, Vec<u8>)>,
}

impl DeadLetter {
    fn from_stream(entry: &StreamId) -> DeadLetter {
        let text = |key: &str| match entry.map.get(key) {
            Some(redis::Value::BulkString(b)) => String::from_utf8_lossy(b).into_owned(),
            Some(redis::Value::SimpleString(s)) => s.clone(),
            _ => String::new(),
        };
        let mut fields: Vec<(String, Vec<u8>)> = entry
            .map
            .iter()
            .filter(|(k, _)| !ADDED.contains(&k.as_str()))
            .filter_map(|(k, v)| match v {
                redis::Value::BulkString(b) => Some((k.clone(), b.clone())),
                redis::Value::SimpleString(s) => Some((k.clone(), s.clone().into_bytes())),
                _ => None,
            })
            .collect();
        // The map does not keep stream order; any fixed order decodes the same.
        fields.sort();
        DeadLetter {
            id: entry.id.clone(),
            source_id: text("source_id"),
            delivery: text("delivery"),
            event: text("event"),
            reason: text("reason"),
            attempts: text("attempts"),
            fields,
        }
    }

    /// One line for people: id, delivery, event, attempts, reason (control characters escaped:
    /// a reason can quote a payload).
    pub fn line(&self) -> String {
        let clean = |s: &str| s.escape_default().to_string();
        format!(
            "{}\tdelivery={}\tevent={}\tattempts={}\treason={}",
            self.id,
            clean(&self.delivery),
            clean(&self.event),
            clean(&self.attempts),
            clean(&self.reason)
        )
    }
}

/// Reading or replaying dead letters failed.
#[derive(Debug, thiserror::Error)]
pub enum DeadLetterError {
    /// Redis failed.
    #[error("redis: {0}")]
    Redis(#[from] redis::RedisError),
    /// No dead letter has this id.
    #[error("no dead letter with id {0} in {EVENTS_DEAD_STREAM}")]
    NotFound(String),
}

/// Up to `count` dead letters, oldest first, starting after `after` (exclusive) when given.
pub async fn list<C: ConnectionLike + Send>(
    conn: &mut C,
    after: Option<&str>,
    count: usize,
) -> Result<Vec<DeadLetter>, DeadLetterError> {
    let start = after.map_or_else(|| "-".to_owned(), |id| format!("({id}"));
    let reply: redis::streams::StreamRangeReply = redis::cmd("XRANGE")
        .arg(EVENTS_DEAD_STREAM)
        .arg(start)
        .arg("+")
        .arg("COUNT")
        .arg(count)
        .query_async(conn)
        .await?;
    Ok(reply.ids.iter().map(DeadLetter::from_stream).collect())
}

/// Every dead letter, oldest first.
pub async fn list_all<C: ConnectionLike + Send>(
    conn: &mut C,
) -> Result<Vec<DeadLetter>, DeadLetterError> {
    let mut all = Vec::new();
    loop {
        let after = all.last().map(|d: &DeadLetter| d.id.clone());
        let page = list(conn, after.as_deref(), PAGE).await?;
        let done = page.len() < PAGE;
        all.extend(page);
        if done {
            return Ok(all);
        }
    }
}

/// Replays one dead letter: its entry goes back on `{gatehouse}:events` and the dead letter is
/// removed, atomically. Returns the new entry's id.
pub async fn replay<C: ConnectionLike + Send>(
    conn: &mut C,
    id: &str,
) -> Result<String, DeadLetterError> {
    let reply: redis::streams::StreamRangeReply = redis::cmd("XRANGE")
        .arg(EVENTS_DEAD_STREAM)
        .arg(id)
        .arg(id)
        .query_async(conn)
        .await?;
    let Some(entry) = reply.ids.first() else {
        return Err(DeadLetterError::NotFound(id.to_owned()));
    };
    let letter = DeadLetter::from_stream(entry);
    // Removing the dead letter and appending the entry happen in one script, and only if the
    // dead letter was still there: two replays at once cannot both append it.
    let script = redis::Script::new(REPLAY);
    let mut invocation = script.key(EVENTS_DEAD_STREAM);
    invocation.key(EVENTS_STREAM).arg(id);
    for (key, value) in &letter.fields {
        invocation.arg(key).arg(value.as_slice());
    }
    let new_id: Option<String> = invocation.invoke_async(conn).await?;
    new_id.ok_or_else(|| DeadLetterError::NotFound(id.to_owned()))
}

/// KEYS: dead stream, events stream. ARGV: dead letter id, then field, value pairs. Removes the
/// dead letter and appends the entry, or does nothing (nil) when the dead letter is gone.
const REPLAY: &str = r"
if redis.call('XDEL', KEYS[1], ARGV[1]) == 0 then
  return false
end
local fields = {}
for i = 2, #ARGV do
  fields[#fields + 1] = ARGV[i]
end
return redis.call('XADD', KEYS[2], '*', unpack(fields))
";

/// Replays every dead letter; returns (dead letter id, new entry id) pairs.
pub async fn replay_all<C: ConnectionLike + Send>(
    conn: &mut C,
) -> Result<Vec<(String, String)>, DeadLetterError> {
    let mut replayed = Vec::new();
    for letter in list_all(conn).await? {
        match replay(conn, &letter.id).await {
            Ok(new_id) => replayed.push((letter.id, new_id)),
            // Replayed by someone else meanwhile.
            Err(DeadLetterError::NotFound(_)) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(replayed)
}
