//! Consumer-group mechanics of a Redis stream, shared by the webhook's `{gatehouse}:events` and
//! the operator's `{gatehouse-results}:results`: creating the group, and trimming acknowledged
//! entries (nothing a group still has to process is ever trimmed).

use std::time::Duration;

/// Creates `group` on `stream` from its first entry (and the stream when missing); a group
/// that already exists is left as it is.
pub async fn ensure_group<C>(conn: &mut C, stream: &str, group: &str) -> redis::RedisResult<()>
where
    C: redis::aio::ConnectionLike + Send,
{
    let created: redis::RedisResult<()> = redis::cmd("XGROUP")
        .arg("CREATE")
        .arg(stream)
        .arg(group)
        .arg("0")
        .arg("MKSTREAM")
        .query_async(conn)
        .await;
    match created {
        Err(e) if e.code() == Some("BUSYGROUP") => Ok(()),
        other => other,
    }
}

/// Removes (`XTRIM MINID ~`) the entries of `stream` older than every group's oldest pending
/// entry and first undelivered entry, and older than `keep` (acknowledged entries stay that
/// long for people debugging). Returns the `MINID` used, or `None` when the stream has no group
/// yet (nothing is known to be processed). `now_ms` is the time in Unix milliseconds.
pub async fn trim_acknowledged<C>(
    conn: &mut C,
    stream: &str,
    keep: Duration,
    now_ms: u64,
) -> redis::RedisResult<Option<String>>
where
    C: redis::aio::ConnectionLike + Send + Sync,
{
    let groups: redis::streams::StreamInfoGroupsReply =
        redis::AsyncCommands::xinfo_groups(conn, stream).await?;
    let mut floor: Option<(u64, u64)> = None;
    for group in &groups.groups {
        let mut candidate = parse_id(&group.last_delivered_id).map(|(ms, seq)| (ms, seq + 1));
        let pending: redis::streams::StreamPendingReply =
            redis::AsyncCommands::xpending(conn, stream, &group.name).await?;
        if let redis::streams::StreamPendingReply::Data(data) = pending
            && let Some(oldest) = parse_id(&data.start_id)
        {
            candidate = Some(candidate.map_or(oldest, |c| c.min(oldest)));
        }
        if let Some(c) = candidate {
            floor = Some(floor.map_or(c, |f| f.min(c)));
        }
    }
    let Some(floor) = floor else {
        return Ok(None);
    };
    let keep_ms = u64::try_from(keep.as_millis()).unwrap_or(u64::MAX);
    let min_id = floor.min((now_ms.saturating_sub(keep_ms), 0));
    let min_id = format!("{}-{}", min_id.0, min_id.1);
    redis::cmd("XTRIM")
        .arg(stream)
        .arg("MINID")
        .arg("~")
        .arg(&min_id)
        .query_async::<()>(conn)
        .await?;
    Ok(Some(min_id))
}

/// Milliseconds since the Unix epoch, now (0 if the clock is before it): the time scale of
/// stream ids.
pub fn unix_millis() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// `(milliseconds, sequence)` of a stream id (`<unix ms>-<seq>`).
pub fn parse_id(id: &str) -> Option<(u64, u64)> {
    let (ms, seq) = id.split_once('-')?;
    Some((ms.parse().ok()?, seq.parse().ok()?))
}
