//! What ingest remembers in Redis between deliveries, beyond the stream itself. Per pull request
//! (one hash, `gatehouse:pr:{<repo id>:<number>}`):
//!
//! - its last known open/closed state and as of when (`open`, `at`), and the time of its last
//!   close (`closed_at`), so a scan whose trigger precedes the close is not created after the
//!   close was handled (a retried `synchronize`, or two consumers at once), and a scan from
//!   before the close does not cover a trigger after a reopen;
//! - its latest trigger (`head_sha`, `head_base`, `head_at`, `head_tied`): the head commit as the
//!   deliveries tell it, ordered by `updated_at` with a compare-and-set, so the order never
//!   depends on processing order; two different targets in one second are marked tied (then
//!   GitHub is asked);
//! - whether ingest ever created a scan for it (`scanned`), so triggers that create none (a draft,
//!   a base no policy covers) settle only pull requests that have scans.
//!
//! And which comment commands were carried out (`gatehouse:command:{<repo id>:<comment id>}`),
//! so a captured signed comment replayed under a fresh delivery id does nothing. Every command
//! touches one key, whose id is in a hash tag, so it runs on Redis Cluster.

use std::time::Duration;

use gatehouse_crds::lifecycle::PullRequestState;
use redis::aio::ConnectionManager;

/// Records a state unless a later one is recorded; at the same second, open wins (a pull
/// request closed and reopened within one second is open; the cost of the other reading is a
/// needless scan, not a missing one). A close also raises `closed_at`. Returns the state now
/// recorded.
const RECORD_STATE: &str = r"
local at = redis.call('HGET', KEYS[1], 'at')
if (not at) or ARGV[2] > at or (ARGV[2] == at and ARGV[1] == '1') then
  redis.call('HSET', KEYS[1], 'open', ARGV[1], 'at', ARGV[2])
end
if ARGV[1] == '0' then
  local closed = redis.call('HGET', KEYS[1], 'closed_at')
  if (not closed) or ARGV[2] > closed then
    redis.call('HSET', KEYS[1], 'closed_at', ARGV[2])
  end
end
redis.call('EXPIRE', KEYS[1], ARGV[3])
return redis.call('HMGET', KEYS[1], 'open', 'at')
";

/// Records the latest trigger: a later one replaces it; another target in the same second marks
/// it tied (until a later one comes).
const RECORD_HEAD: &str = r"
local at = redis.call('HGET', KEYS[1], 'head_at')
if (not at) or ARGV[3] > at then
  redis.call('HSET', KEYS[1], 'head_sha', ARGV[1], 'head_base', ARGV[2], 'head_at', ARGV[3], 'head_tied', '0')
elseif ARGV[3] == at then
  if redis.call('HGET', KEYS[1], 'head_sha') ~= ARGV[1] or redis.call('HGET', KEYS[1], 'head_base') ~= ARGV[2] then
    redis.call('HSET', KEYS[1], 'head_tied', '1')
  end
end
redis.call('EXPIRE', KEYS[1], ARGV[4])
return 1
";

/// A pull request's latest trigger.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LatestTrigger {
    /// Head commit.
    pub sha: String,
    /// Base branch.
    pub base_ref: String,
    /// The trigger's `updated_at`.
    pub at: String,
    /// Another target was triggered in the same second: the order is not known.
    pub tied: bool,
}

/// Everything remembered of a pull request.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PullRequestRecord {
    /// Last known state.
    pub state: Option<PullRequestState>,
    /// Time of the last close.
    pub closed_at: Option<String>,
    /// Latest trigger.
    pub head: Option<LatestTrigger>,
    /// Ingest created a scan for it.
    pub scanned: bool,
}

/// Ingest's memory in Redis.
#[derive(Clone)]
pub struct Memory {
    conn: ConnectionManager,
    record_state: redis::Script,
    record_head: redis::Script,
    remember: Duration,
}

impl std::fmt::Debug for Memory {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Memory").finish_non_exhaustive()
    }
}

/// The key of a pull request's record.
pub fn pull_request_key(repository_id: i64, number: i64) -> String {
    format!("gatehouse:pr:{{{repository_id}:{number}}}")
}

fn command_key(repository_id: i64, comment_id: i64) -> String {
    format!("gatehouse:command:{{{repository_id}:{comment_id}}}")
}

impl Memory {
    /// Memory over a connection, remembering for `remember` (at least a day).
    pub fn new(conn: ConnectionManager, remember: Duration) -> Memory {
        Memory {
            conn,
            record_state: redis::Script::new(RECORD_STATE),
            record_head: redis::Script::new(RECORD_HEAD),
            remember: remember.max(Duration::from_secs(86_400)),
        }
    }

    /// How long records are kept.
    pub fn remember(&self) -> Duration {
        self.remember
    }

    /// Records that the pull request was opened or closed at `state.at` (GitHub's `updated_at`)
    /// unless a later state is recorded. Returns the state recorded now (ours or a later one).
    pub async fn record(
        &self,
        repository_id: i64,
        number: i64,
        state: &PullRequestState,
    ) -> redis::RedisResult<PullRequestState> {
        let mut conn = self.conn.clone();
        let (open, at): (Option<String>, Option<String>) = self
            .record_state
            .key(pull_request_key(repository_id, number))
            .arg(if state.open { "1" } else { "0" })
            .arg(&state.at)
            .arg(self.remember.as_secs())
            .invoke_async(&mut conn)
            .await?;
        Ok(PullRequestState {
            open: open.as_deref() == Some("1"),
            at: at.unwrap_or_else(|| state.at.clone()),
        })
    }

    /// Records a trigger of `sha` on `base_ref` at `at`, unless a later one is recorded.
    pub async fn record_head(
        &self,
        repository_id: i64,
        number: i64,
        sha: &str,
        base_ref: &str,
        at: &str,
    ) -> redis::RedisResult<()> {
        let mut conn = self.conn.clone();
        self.record_head
            .key(pull_request_key(repository_id, number))
            .arg(sha)
            .arg(base_ref)
            .arg(at)
            .arg(self.remember.as_secs())
            .invoke_async::<i64>(&mut conn)
            .await
            .map(drop)
    }

    /// Marks that ingest created a scan for the pull request.
    pub async fn mark_scanned(&self, repository_id: i64, number: i64) -> redis::RedisResult<()> {
        let mut conn = self.conn.clone();
        let key = pull_request_key(repository_id, number);
        redis::pipe()
            .atomic()
            .cmd("HSET")
            .arg(&key)
            .arg("scanned")
            .arg("1")
            .ignore()
            .cmd("EXPIRE")
            .arg(&key)
            .arg(self.remember.as_secs())
            .ignore()
            .query_async(&mut conn)
            .await
    }

    /// Everything remembered of the pull request.
    pub async fn record_of(
        &self,
        repository_id: i64,
        number: i64,
    ) -> redis::RedisResult<PullRequestRecord> {
        let mut conn = self.conn.clone();
        let fields: Vec<Option<String>> = redis::cmd("HMGET")
            .arg(pull_request_key(repository_id, number))
            .arg(&[
                "open",
                "at",
                "closed_at",
                "head_sha",
                "head_base",
                "head_at",
                "head_tied",
                "scanned",
            ])
            .query_async(&mut conn)
            .await?;
        let field = |i: usize| fields.get(i).cloned().flatten();
        let state = match (field(0), field(1)) {
            (Some(open), Some(at)) => Some(PullRequestState {
                open: open == "1",
                at,
            }),
            _ => None,
        };
        let head = match (field(3), field(4), field(5)) {
            (Some(sha), Some(base_ref), Some(at)) => Some(LatestTrigger {
                sha,
                base_ref,
                at,
                tied: field(6).as_deref() == Some("1"),
            }),
            _ => None,
        };
        Ok(PullRequestRecord {
            state,
            closed_at: field(2),
            head,
            scanned: field(7).as_deref() == Some("1"),
        })
    }

    /// Whether the comment's command was carried out already.
    pub async fn command_done(
        &self,
        repository_id: i64,
        comment_id: i64,
    ) -> redis::RedisResult<bool> {
        let mut conn = self.conn.clone();
        redis::cmd("EXISTS")
            .arg(command_key(repository_id, comment_id))
            .query_async(&mut conn)
            .await
    }

    /// Remembers that the comment's command was carried out.
    pub async fn mark_command_done(
        &self,
        repository_id: i64,
        comment_id: i64,
    ) -> redis::RedisResult<()> {
        let mut conn = self.conn.clone();
        redis::cmd("SET")
            .arg(command_key(repository_id, comment_id))
            .arg(1)
            .arg("EX")
            .arg(self.remember.as_secs())
            .query_async(&mut conn)
            .await
    }
}
