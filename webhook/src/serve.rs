//! Serving HTTP with the limits a public endpoint needs and `axum::serve` cannot set (it runs
//! hyper without a timer, so hyper's header read timeout is silently off):
//!
//! - a **header read timeout**: a client must send a request's whole head within it, and an idle
//!   keep-alive connection is closed once it passes without a new request (hyper starts the timer
//!   whenever it waits for a request head);
//! - a **connection limit**: past it, new connections wait in the kernel's accept queue;
//! - **graceful shutdown**: on the signal the listener closes, idle connections close at once,
//!   requests in flight finish (within `drain`), and then serving returns.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use axum::Router;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;

/// Connection limits.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// Time a client has to send a request head, and an idle keep-alive connection stays open.
    pub header_timeout: Duration,
    /// Connections served at once.
    pub max_connections: usize,
    /// How long requests in flight may take to finish after the shutdown signal.
    pub drain: Duration,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            header_timeout: Duration::from_secs(10),
            max_connections: 1024,
            drain: Duration::from_secs(20),
        }
    }
}

/// Open connections, for metrics.
#[derive(Debug, Default)]
pub struct Connections(AtomicUsize);

impl Connections {
    /// Connections open now.
    pub fn open(&self) -> usize {
        self.0.load(Ordering::Relaxed)
    }
}

/// The most a connection's read buffer holds (headers must fit in it).
const READ_BUFFER_MAX: usize = 64 * 1024;

/// Serves `router` on `listener` until `shutdown` completes, then drains. Returns when every
/// connection is closed (or `drain` passed).
pub async fn serve(
    listener: TcpListener,
    router: Router,
    limits: Limits,
    connections: Arc<Connections>,
    shutdown: impl std::future::Future<Output = ()>,
) {
    let slots = Arc::new(tokio::sync::Semaphore::new(limits.max_connections.max(1)));
    let graceful = GracefulShutdown::new();
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout)
        // Each connection's read buffer may grow to this (hyper's default is about 400 KB):
        // bounded so that hundreds of connections streaming bodies hold little beyond the
        // bodies themselves, which the body budget counts.
        .max_buf_size(READ_BUFFER_MAX)
        .keep_alive(true);
    tokio::pin!(shutdown);
    loop {
        let slot = tokio::select! {
            slot = Arc::clone(&slots).acquire_owned() => match slot {
                Ok(slot) => slot,
                Err(_) => break,
            },
            () = &mut shutdown => break,
        };
        let stream = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(e) => {
                    // Out of file descriptors and the like: wait instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        // Answers are small and latency-bound: do not let Nagle hold them back.
        let _ = stream.set_nodelay(true);
        let service = TowerToHyperService::new(router.clone());
        let connection = graceful.watch(http.serve_connection(TokioIo::new(stream), service));
        let connections = Arc::clone(&connections);
        connections.0.fetch_add(1, Ordering::Relaxed);
        tokio::spawn(async move {
            // Errors here are a client's (reset, timed out head): nothing to do.
            let _ = connection.await;
            connections.0.fetch_sub(1, Ordering::Relaxed);
            drop(slot);
        });
    }
    drop(listener);
    if tokio::time::timeout(limits.drain, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!(
            open = connections.open(),
            "requests still in flight after the drain time; closing"
        );
    }
}
