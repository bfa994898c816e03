//! Starts the webhook's `receive` role for a test: the real router on a free loopback port,
//! backed by a private Redis, with a webhook secret written to a file like a mounted Secret.

use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use gatehouse_webhook::events::EventWriter;
use gatehouse_webhook::metrics::Metrics;
use gatehouse_webhook::receive::{BodyBudget, ReceiveState, Writer, router};
use gatehouse_webhook::secrets::SharedVerifier;
use gatehouse_webhook::serve::{Connections, Limits};

use crate::RedisServer;

/// The webhook secret tests sign with.
pub const SECRET: &str = "gatehouse-test-secret";

/// Options for [`Receiver::start`].
#[derive(Clone, Debug)]
pub struct ReceiverOptions {
    /// Backlog cap.
    pub max_backlog: u64,
    /// Body read timeout.
    pub body_timeout: Duration,
    /// Secrets, one file each.
    pub secrets: Vec<String>,
    /// Body memory budget, bytes.
    pub body_memory: usize,
    /// Bodies read at once.
    pub max_bodies: usize,
    /// Connection limits.
    pub limits: Limits,
}

impl Default for ReceiverOptions {
    fn default() -> Self {
        ReceiverOptions {
            max_backlog: 100_000,
            body_timeout: Duration::from_secs(10),
            secrets: vec![SECRET.to_owned()],
            body_memory: 128 * 1024 * 1024,
            max_bodies: 256,
            limits: Limits::default(),
        }
    }
}

/// A running receive role.
#[derive(Debug)]
pub struct Receiver {
    /// Where it listens.
    pub addr: SocketAddr,
    /// Its state (metrics, verifier).
    pub state: ReceiveState,
    /// Secret files, in order.
    pub secret_files: Vec<PathBuf>,
    _dir: tempfile::TempDir,
    server: tokio::task::JoinHandle<()>,
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.server.abort();
    }
}

impl Receiver {
    /// Starts the receive role against `redis`.
    pub async fn start(redis: &RedisServer, options: ReceiverOptions) -> anyhow::Result<Receiver> {
        let dir = tempfile::tempdir()?;
        let mut secret_files = Vec::new();
        for (i, secret) in options.secrets.iter().enumerate() {
            let path = dir.path().join(format!("secret-{i}"));
            std::fs::write(&path, format!("{secret}\n"))?;
            secret_files.push(path);
        }
        let verifier = SharedVerifier::load(secret_files.clone())?;
        let client = redis::Client::open(redis.url())?;
        let conn = gatehouse_webhook::connect_redis(client, Duration::from_secs(5)).await;
        let state = ReceiveState {
            verifier,
            writer: Writer::ready(EventWriter::new(
                conn,
                options.max_backlog,
                Duration::from_secs(72 * 3600),
            )),
            metrics: Arc::new(Metrics::default()),
            body_timeout: options.body_timeout,
            budget: Arc::new(BodyBudget::new(options.body_memory, options.max_bodies)),
        };
        let listener = tokio::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).await?;
        let addr = listener.local_addr()?;
        let app = router(state.clone(), true);
        let limits = options.limits;
        let server = tokio::spawn(async move {
            gatehouse_webhook::serve::serve(
                listener,
                app,
                limits,
                Arc::new(Connections::default()),
                std::future::pending(),
            )
            .await;
        });
        Ok(Receiver {
            addr,
            state,
            secret_files,
            _dir: dir,
            server,
        })
    }

    /// Posts `body` as a delivery of `event` with id `delivery`, signed with `secret`.
    pub async fn deliver(
        &self,
        event: &str,
        delivery: &str,
        body: &[u8],
        secret: &str,
    ) -> std::io::Result<crate::http::HttpResponse> {
        let signature = gatehouse_webhook::signature::sign(secret.as_bytes(), body);
        crate::http::request(
            self.addr,
            "POST",
            "/webhook",
            &[
                ("X-GitHub-Event", event),
                ("X-GitHub-Delivery", delivery),
                ("X-Hub-Signature-256", &signature),
                ("Content-Type", "application/json"),
                ("User-Agent", "GitHub-Hookshot/test"),
            ],
            body,
        )
        .await
    }
}

/// Every fixture in `tests/fixtures/github`: (file name, event header, action, bytes).
pub fn fixtures() -> Vec<(String, String, Option<String>, Vec<u8>)> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("fixtures/github");
    let mut out = Vec::new();
    let Ok(entries) = std::fs::read_dir(&dir) else {
        return out;
    };
    let mut paths: Vec<PathBuf> = entries.filter_map(|e| e.ok().map(|e| e.path())).collect();
    paths.sort();
    for path in paths {
        if path.extension().and_then(|e| e.to_str()) != Some("json") {
            continue;
        }
        let name = path
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or_default()
            .to_owned();
        let event = name.split('.').next().unwrap_or_default().to_owned();
        let Ok(bytes) = std::fs::read(&path) else {
            continue;
        };
        let action = serde_json::from_slice::<serde_json::Value>(&bytes)
            .ok()
            .and_then(|v| v.get("action").and_then(|a| a.as_str()).map(str::to_owned));
        out.push((name, event, action, bytes));
    }
    out
}
