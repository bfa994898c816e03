//! Upload flood: many concurrent large bodies that nobody signed, as an attacker without the
//! secret would send them, to measure what they cost the webhook (`scripts/bench-memory`).
//!
//! `cargo run --release -p gatehouse-tests --example flood -- --addr 127.0.0.1:8080
//!  --connections 100 --bytes 26214400 [--chunked]`
//!
//! Each connection sends one request with a wrong signature and streams the body as fast as the
//! server takes it, then reads the answer; the tally of statuses is printed. Targets loopback
//! only; one request per connection, so it ends by itself.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;

struct Options {
    addr: SocketAddr,
    connections: usize,
    bytes: usize,
    chunked: bool,
}

fn parse() -> anyhow::Result<Options> {
    let mut args = std::env::args().skip(1);
    let (mut addr, mut connections, mut bytes, mut chunked) = (None, 100, 25 << 20, false);
    while let Some(flag) = args.next() {
        let mut value = || args.next().with_context(|| format!("{flag} needs a value"));
        match flag.as_str() {
            "--addr" => addr = Some(value()?.parse::<SocketAddr>()?),
            "--connections" => connections = value()?.parse()?,
            "--bytes" => bytes = value()?.parse()?,
            "--chunked" => chunked = true,
            other => anyhow::bail!("unknown flag {other}"),
        }
    }
    let addr = addr.context("--addr is required")?;
    anyhow::ensure!(addr.ip().is_loopback(), "the flood targets loopback only");
    Ok(Options {
        addr,
        connections,
        bytes,
        chunked,
    })
}

/// Sends one unsigned upload; the status the server answered, or what happened instead.
async fn upload(options: &Options, n: usize) -> String {
    let Ok(mut stream) = TcpStream::connect(options.addr).await else {
        return "connect failed".to_owned();
    };
    let length = if options.chunked {
        "Transfer-Encoding: chunked".to_owned()
    } else {
        format!("Content-Length: {}", options.bytes)
    };
    let head = format!(
        "POST /webhook HTTP/1.1\r\nHost: {}\r\nContent-Type: application/json\r\n\
         X-GitHub-Event: pull_request\r\nX-GitHub-Delivery: flood-{n}\r\n\
         X-Hub-Signature-256: sha256={}\r\n{length}\r\n\r\n",
        options.addr,
        "0".repeat(64)
    );
    if stream.write_all(head.as_bytes()).await.is_err() {
        return "closed before the body".to_owned();
    }
    let (mut reader, mut writer) = stream.into_split();
    // The answer is read while the body is sent: a server that refuses early answers before it
    // has read the body, and the sending stops there.
    let answer = async move {
        let mut buffer = [0_u8; 64];
        match tokio::time::timeout(Duration::from_secs(60), reader.read(&mut buffer)).await {
            Ok(Ok(n)) if n > 12 => String::from_utf8_lossy(&buffer[9..12]).into_owned(),
            Ok(_) => "closed without an answer".to_owned(),
            Err(_) => "no answer in 60 s".to_owned(),
        }
    };
    let send = async move {
        let chunk = vec![b'a'; 64 * 1024];
        let mut sent = 0;
        while sent < options.bytes {
            let size = chunk.len().min(options.bytes - sent);
            if options.chunked {
                writer.write_all(format!("{size:x}\r\n").as_bytes()).await?;
                writer.write_all(&chunk[..size]).await?;
                writer.write_all(b"\r\n").await?;
            } else {
                writer.write_all(&chunk[..size]).await?;
            }
            sent += size;
        }
        if options.chunked {
            writer.write_all(b"0\r\n\r\n").await?;
        }
        // Keep the connection open until the answer came.
        std::future::pending::<()>().await;
        Ok::<_, std::io::Error>(writer)
    };
    tokio::pin!(answer, send);
    tokio::select! {
        status = &mut answer => status,
        // The server stopped reading or closed: its answer, if any, is still readable.
        _ = &mut send => answer.await,
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let options = std::sync::Arc::new(parse()?);
    let start = Instant::now();
    let tasks: Vec<_> = (0..options.connections)
        .map(|n| {
            let options = std::sync::Arc::clone(&options);
            tokio::spawn(async move { upload(&options, n).await })
        })
        .collect();
    let mut tally = BTreeMap::<String, usize>::new();
    for task in tasks {
        *tally.entry(task.await?).or_default() += 1;
    }
    let tally: Vec<String> = tally.iter().map(|(k, v)| format!("{k}: {v}")).collect();
    println!(
        "uploads={} bytes_each={} chunked={} seconds={:.1} answers: {}",
        options.connections,
        options.bytes,
        options.chunked,
        start.elapsed().as_secs_f64(),
        tally.join(", ")
    );
    Ok(())
}
