//! What ingest remembers in Redis between deliveries, beyond the stream itself:
//!
//! - each pull request's last known open/closed state and as of when, so a scan whose trigger
//!   precedes the close is not created after the close was handled (a retried `synchronize`, or
//!   two consumers at once);
//! - which comment commands were carried out, so a captured signed comment replayed under a fresh
//!   delivery id does nothing.
//!
//! Each key is one pull request's or one comment's, with its id in a hash tag (`{…}`), so every
//! command touches one key and runs on Redis Cluster.

use std::time::Duration;

use gatehouse_crds::lifecycle::PullRequestState;
use redis::aio::ConnectionManager;

/// How long a pull request's state and a carried-out command are remembered: far beyond the
/// dead-letter window, so neither a retried entry nor a replayed dead letter outlives it.
pub const REMEMBER: Duration = Duration::from_secs(30 * 24 * 3600);

/// Records a state unless a later one is recorded; at the same second, open wins (a pull
/// request closed and reopened within one second is open; the cost of the other reading is a
/// needless scan, not a missing one).
const RECORD: &str = r"
local at = redis.call('HGET', KEYS[1], 'at')
if (not at) or ARGV[2] > at or (ARGV[2] == at and ARGV[1] == '1') then
  redis.call('HSET', KEYS[1], 'open', ARGV[1], 'at', ARGV[2])
  redis.call('EXPIRE', KEYS[1], ARGV[3])
  return 1
end
return 0
";

/// Ingest's memory in Redis.
#[derive(Clone)]
pub struct Memory {
    conn: ConnectionManager,
    record: redis::Script,
}

impl std::fmt::Debug for Memory {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Memory").finish_non_exhaustive()
    }
}

fn pull_request_key(repository_id: i64, number: i64) -> String {
    format!("gatehouse:pr:{{{repository_id}:{number}}}")
}

fn command_key(repository_id: i64, comment_id: i64) -> String {
    format!("gatehouse:command:{{{repository_id}:{comment_id}}}")
}

impl Memory {
    /// Memory over a connection.
    pub fn new(conn: ConnectionManager) -> Memory {
        Memory {
            conn,
            record: redis::Script::new(RECORD),
        }
    }

    /// Records that the pull request was opened or closed at `state.at` (GitHub's `updated_at`)
    /// unless a later state is recorded. Returns whether it was recorded.
    pub async fn record(
        &self,
        repository_id: i64,
        number: i64,
        state: &PullRequestState,
    ) -> redis::RedisResult<bool> {
        let mut conn = self.conn.clone();
        let recorded: i64 = self
            .record
            .key(pull_request_key(repository_id, number))
            .arg(if state.open { "1" } else { "0" })
            .arg(&state.at)
            .arg(REMEMBER.as_secs())
            .invoke_async(&mut conn)
            .await?;
        Ok(recorded == 1)
    }

    /// The pull request's last recorded state, if any.
    pub async fn state(
        &self,
        repository_id: i64,
        number: i64,
    ) -> redis::RedisResult<Option<PullRequestState>> {
        let mut conn = self.conn.clone();
        let (open, at): (Option<String>, Option<String>) = redis::cmd("HMGET")
            .arg(pull_request_key(repository_id, number))
            .arg("open")
            .arg("at")
            .query_async(&mut conn)
            .await?;
        Ok(match (open, at) {
            (Some(open), Some(at)) => Some(PullRequestState {
                open: open == "1",
                at,
            }),
            _ => None,
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
            .arg(REMEMBER.as_secs())
            .query_async(&mut conn)
            .await
    }
}
