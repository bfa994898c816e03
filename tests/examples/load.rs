//! Load generator for the webhook's receive role: signed real payloads over keep-alive
//! HTTP/1.1 connections, each request with its own delivery id. Two modes:
//!
//! - closed loop: `--connections 32 --seconds 15` sends as fast as the server answers;
//! - open loop: `--rate 1000 --seconds 15` sends at a fixed rate. Latency is measured from the
//!   moment a request was sent; how late sends started against their schedule is reported
//!   separately (`send_lag`), so a stalled server cannot hide its stall. (Measuring from the due
//!   time would add tokio's 1 ms timer granularity to every sample.)
//!
//! `cargo run --release -p gatehouse-tests --example load -- --addr 127.0.0.1:8080
//!  --secret-file S --payload tests/fixtures/github/pull_request.opened.octokit.json`
//! `--ok-status 200` counts 200 as stored (for a peer that answers so).
//! Targets loopback only; stops by itself after `--seconds`.

// Statistics over counts and microseconds far below 2^52: the casts lose nothing that matters.
#![allow(
    clippy::cast_precision_loss,
    clippy::cast_possible_truncation,
    clippy::cast_sign_loss
)]

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

struct Options {
    addr: SocketAddr,
    connections: usize,
    seconds: u64,
    rate: Option<u64>,
    secret: Vec<u8>,
    payload: Vec<u8>,
    event: String,
    /// The status that means "stored" (202 for Gatehouse; 200 for the FastAPI peer).
    ok_status: u16,
}

fn parse() -> anyhow::Result<Options> {
    let mut args = std::env::args().skip(1);
    let mut addr = "127.0.0.1:8080".to_owned();
    let (mut connections, mut seconds, mut rate) = (32, 15, None);
    let (mut secret_file, mut payload_file) = (None, None);
    let mut event = "pull_request".to_owned();
    let mut ok_status = 202;
    while let Some(flag) = args.next() {
        let mut value = || args.next().with_context(|| format!("{flag} needs a value"));
        match flag.as_str() {
            "--addr" => addr = value()?,
            "--connections" => connections = value()?.parse()?,
            "--seconds" => seconds = value()?.parse()?,
            "--ok-status" => ok_status = value()?.parse()?,
            "--rate" => rate = Some(value()?.parse()?),
            "--secret-file" => secret_file = Some(value()?),
            "--payload" => payload_file = Some(value()?),
            "--event" => event = value()?,
            other => bail!("unknown flag {other}"),
        }
    }
    let addr: SocketAddr = addr.parse()?;
    if !addr.ip().is_loopback() {
        bail!("load tests target loopback addresses only, not {addr}");
    }
    let secret = std::fs::read(secret_file.context("--secret-file is required")?)?;
    let secret = String::from_utf8(secret)?
        .lines()
        .next()
        .unwrap_or("")
        .trim()
        .as_bytes()
        .to_vec();
    let payload = std::fs::read(payload_file.context("--payload is required")?)?;
    Ok(Options {
        addr,
        connections,
        seconds: seconds.min(600),
        rate,
        secret,
        payload,
        event,
        ok_status,
    })
}

struct Connection {
    reader: BufReader<TcpStream>,
    /// The request being sent, reused.
    out: Vec<u8>,
}

impl Connection {
    async fn open(addr: SocketAddr) -> anyhow::Result<Connection> {
        let stream = TcpStream::connect(addr).await?;
        stream.set_nodelay(true)?;
        Ok(Connection {
            reader: BufReader::new(stream),
            out: Vec::new(),
        })
    }

    /// Sends one request and returns the status.
    async fn send(&mut self, head: &[u8], body: &[u8]) -> anyhow::Result<u16> {
        // One write per request: head and body leave in one syscall, as a real client sends.
        self.out.clear();
        self.out.extend_from_slice(head);
        self.out.extend_from_slice(body);
        self.reader.get_mut().write_all(&self.out).await?;
        let mut line = String::new();
        self.reader.read_line(&mut line).await?;
        let status: u16 = line.split(' ').nth(1).context("no status")?.parse()?;
        let mut length = 0_usize;
        loop {
            line.clear();
            self.reader.read_line(&mut line).await?;
            if line == "\r\n" || line.is_empty() {
                break;
            }
            if let Some((name, value)) = line.split_once(':')
                && name.eq_ignore_ascii_case("content-length")
            {
                length = value.trim().parse()?;
            }
        }
        let mut sink = vec![0; length];
        self.reader.read_exact(&mut sink).await?;
        Ok(status)
    }
}

fn head(options: &Options, signature: &str, delivery: u64) -> Vec<u8> {
    format!(
        "POST /webhook HTTP/1.1\r\nHost: {}\r\nUser-Agent: GitHub-Hookshot/load\r\n\
         Content-Type: application/json\r\nX-GitHub-Event: {}\r\n\
         X-GitHub-Delivery: 6c0e4a2e-0000-4000-8000-{delivery:012x}\r\n\
         X-Hub-Signature-256: {signature}\r\nContent-Length: {}\r\n\r\n",
        options.addr,
        options.event,
        options.payload.len()
    )
    .into_bytes()
}

/// The `p` quantile of sorted microsecond values, in milliseconds.
fn pct_of(sorted: &[u64], p: f64) -> f64 {
    let i = ((sorted.len() as f64 * p).ceil() as usize).saturating_sub(1);
    sorted.get(i).map_or(0.0, |us| *us as f64 / 1000.0)
}

#[derive(Default)]
struct Tally {
    latencies_us: Vec<u64>,
    lags_us: Vec<u64>,
    accepted: u64,
    other: u64,
    errors: u64,
}

/// One thread: the generator shares the machine with what it measures, and a second runtime
/// thread only adds scheduling noise to the latencies (it needs a fraction of one core).
#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let options = Arc::new(parse()?);
    let signature = gatehouse_webhook::signature::sign(&options.secret, &options.payload);
    let signature = Arc::new(signature);
    let next_id = Arc::new(AtomicU64::new(u64::from(std::process::id()) << 32));
    let start = Instant::now();
    let deadline = start + Duration::from_secs(options.seconds);
    let mut tasks = Vec::new();
    for worker in 0..options.connections {
        let (options, signature, next_id) = (
            Arc::clone(&options),
            Arc::clone(&signature),
            Arc::clone(&next_id),
        );
        tasks.push(tokio::spawn(async move {
            let mut tally = Tally::default();
            let mut conn = Connection::open(options.addr).await?;
            let mut sent = 0_u64;
            loop {
                // Open loop: request n of this worker is due at a fixed time.
                let due = match options.rate {
                    Some(rate) => {
                        let n = sent * options.connections as u64 + worker as u64;
                        let due = start + Duration::from_secs_f64(n as f64 / rate as f64);
                        tokio::time::sleep_until(due.into()).await;
                        due
                    }
                    None => Instant::now(),
                };
                if due >= deadline {
                    break;
                }
                sent += 1;
                let id = next_id.fetch_add(1, Ordering::Relaxed);
                if let Ok(status) = conn
                    .send(&head(&options, &signature, id), &options.payload)
                    .await
                {
                    tally.latencies_us.push(due.elapsed().as_micros() as u64);
                    if status == options.ok_status {
                        tally.accepted += 1;
                    } else {
                        tally.other += 1;
                    }
                } else {
                    tally.errors += 1;
                    conn = Connection::open(options.addr).await?;
                }
            }
            anyhow::Ok(tally)
        }));
    }
    let mut all = Tally::default();
    for task in tasks {
        let tally = task.await??;
        all.latencies_us.extend(tally.latencies_us);
        all.lags_us.extend(tally.lags_us);
        all.accepted += tally.accepted;
        all.other += tally.other;
        all.errors += tally.errors;
    }
    let elapsed = start.elapsed().as_secs_f64().min(options.seconds as f64);
    all.latencies_us.sort_unstable();
    all.lags_us.sort_unstable();
    let pct = |p: f64| pct_of(&all.latencies_us, p);
    println!(
        "mode={} connections={} seconds={:.1} payload_bytes={} requests={} accepted={} other_status={} errors={}",
        options
            .rate
            .map_or("closed-loop".to_owned(), |r| format!("fixed-rate-{r}/s")),
        options.connections,
        elapsed,
        options.payload.len(),
        all.latencies_us.len(),
        all.accepted,
        all.other,
        all.errors
    );
    println!(
        "throughput_accepted_per_s={:.0} latency_ms p50={:.3} p90={:.3} p99={:.3} p99.9={:.3} max={:.3}",
        all.accepted as f64 / elapsed,
        pct(0.50),
        pct(0.90),
        pct(0.99),
        pct(0.999),
        pct(1.0)
    );
    if options.rate.is_some() {
        println!(
            "send_lag_ms p50={:.3} p99={:.3} max={:.3}",
            pct_of(&all.lags_us, 0.5),
            pct_of(&all.lags_us, 0.99),
            pct_of(&all.lags_us, 1.0)
        );
    }
    Ok(())
}
