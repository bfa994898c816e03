//! Signs a GitHub payload file with a webhook secret, posts it to a webhook URL on loopback, and
//! prints the answer and the newest entry of `{gatehouse}:events`. Used by `scripts/send-delivery`.
//!
//! `send-delivery --url http://127.0.0.1:8080/webhook --secret-file S --redis-url redis://...
//!  --event pull_request --payload FILE`

use anyhow::{Context as _, bail};
use gatehouse_crds::stream::EVENTS_STREAM;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let (mut url, mut secret_file, mut redis_url, mut event, mut payload) =
        (None, None, None, None, None);
    while let Some(flag) = args.next() {
        let value = args
            .next()
            .with_context(|| format!("{flag} needs a value"))?;
        match flag.as_str() {
            "--url" => url = Some(value),
            "--secret-file" => secret_file = Some(value),
            "--redis-url" => redis_url = Some(value),
            "--event" => event = Some(value),
            "--payload" => payload = Some(value),
            other => bail!("unknown flag {other}"),
        }
    }
    let url = url.context("--url is required")?;
    let rest = url
        .strip_prefix("http://")
        .context("--url must be http://host:port/path")?;
    let (host, path) = rest.split_once('/').context("--url needs a path")?;
    let addr: std::net::SocketAddr = host.parse().context("--url host must be an IP:port")?;
    if !addr.ip().is_loopback() {
        bail!("send-delivery only targets loopback addresses");
    }
    let secret_file = secret_file
        .context("--secret-file is required (scripts/dev writes .dev/webhook-secret)")?;
    let secret = std::fs::read_to_string(&secret_file)
        .with_context(|| format!("failed to read {secret_file}"))?;
    let secret = secret.lines().next().unwrap_or("").trim().to_owned();
    let payload_file = payload.context("--payload is required")?;
    let body =
        std::fs::read(&payload_file).with_context(|| format!("failed to read {payload_file}"))?;
    let event = event.context("--event is required")?;
    let delivery = format!(
        "dev-{:x}",
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .as_nanos()
    );
    let signature = gatehouse_webhook::signature::sign(secret.as_bytes(), &body);
    let response = gatehouse_tests::http::request(
        addr,
        "POST",
        &format!("/{path}"),
        &[
            ("X-GitHub-Event", event.as_str()),
            ("X-GitHub-Delivery", delivery.as_str()),
            ("X-Hub-Signature-256", signature.as_str()),
            ("Content-Type", "application/json"),
            ("User-Agent", "GitHub-Hookshot/gatehouse-dev"),
        ],
        &body,
    )
    .await
    .with_context(|| format!("is the webhook running on {addr}? (./scripts/dev)"))?;
    println!(
        "POST /{path} event={event} delivery={delivery} ({} bytes) -> {} {}",
        body.len(),
        response.status,
        response.text()
    );
    if let Some(redis_url) = redis_url {
        let mut conn = redis::Client::open(redis_url.as_str())?
            .get_multiplexed_async_connection()
            .await
            .with_context(|| format!("failed to connect to {redis_url}"))?;
        let newest: redis::streams::StreamRangeReply =
            redis::AsyncCommands::xrevrange_count(&mut conn, EVENTS_STREAM, "+", "-", 1).await?;
        match newest.ids.first() {
            Some(id) => {
                let entry = gatehouse_webhook::events::entry_from_stream(id)?;
                let json =
                    gatehouse_webhook::events::payload(&entry).map_err(anyhow::Error::msg)?;
                println!(
                    "newest {EVENTS_STREAM} entry {}: delivery={} event={} encoding={} stored={} bytes payload={} bytes",
                    id.id,
                    entry.delivery_id,
                    entry.event,
                    entry.encoding.as_str(),
                    entry.body.len(),
                    json.len()
                );
            }
            None => println!("{EVENTS_STREAM} is empty"),
        }
    }
    Ok(())
}
