//! The `receive` role: `POST /webhook` verifies a GitHub delivery and stores it in
//! `{gatehouse}:events`, answering 202 only once Redis has accepted it. Also `/healthz`, `/readyz`
//! and `/metrics`. It never talks to GitHub or Kubernetes.
//!
//! Order of checks, cheapest and least trusting first: required headers, content type, declared
//! size, the memory budget, body (size cap and read timeout), signature, then (only for signed
//! bodies) JSON.
//!
//! **Memory budget.** Bodies are read before they can be verified, so unsigned uploads cost
//! memory too. A [`BodyBudget`] caps the body bytes held at once (a body with `Content-Length`
//! reserves it all before reading; a chunked body reserves each chunk as it arrives) and the
//! bodies read at once; past either, the answer is 503 with `Retry-After`. A body is read once
//! into a buffer of its declared size and never copied on the signed path.

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Body;
use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::json;
use tracing::Instrument as _;

use crate::events::{EnqueueError, Enqueued, EventWriter};
use crate::metrics::{Metrics, event_label};
use crate::secrets::SharedVerifier;

/// GitHub's maximum payload is 25 MB; allow a little more for form encoding overhead.
pub const MAX_BODY_BYTES: usize = 26 * 1024 * 1024;

/// Shared state of the receive handlers.
#[derive(Clone, Debug)]
pub struct ReceiveState {
    /// Verifies signatures with the current secrets.
    pub verifier: SharedVerifier,
    /// Stores deliveries; `None` until Redis first answered.
    pub writer: Writer,
    /// Metrics.
    pub metrics: Arc<Metrics>,
    /// How long a client may take to send the body.
    pub body_timeout: Duration,
    /// Body memory held at once.
    pub budget: Arc<BodyBudget>,
}

/// The event writer, once Redis has answered: the listener is up before that, answering 503.
#[derive(Clone, Debug, Default)]
pub struct Writer(Arc<std::sync::OnceLock<EventWriter>>);

impl Writer {
    /// A writer that is ready now.
    pub fn ready(writer: EventWriter) -> Writer {
        let cell = std::sync::OnceLock::new();
        let _ = cell.set(writer);
        Writer(Arc::new(cell))
    }

    /// Makes the writer available (the first call wins).
    pub fn set(&self, writer: EventWriter) {
        let _ = self.0.set(writer);
    }

    /// The writer, if Redis has answered yet.
    pub fn get(&self) -> Option<&EventWriter> {
        self.0.get()
    }
}

/// Caps the request body memory held at once: bytes and bodies.
#[derive(Debug)]
pub struct BodyBudget {
    bytes: tokio::sync::Semaphore,
    bodies: tokio::sync::Semaphore,
    max_bytes: usize,
    max_bodies: usize,
}

impl BodyBudget {
    /// At most `max_bytes` of bodies and `max_bodies` bodies at once.
    pub fn new(max_bytes: usize, max_bodies: usize) -> BodyBudget {
        let max_bytes = max_bytes.clamp(1, tokio::sync::Semaphore::MAX_PERMITS);
        let max_bodies = max_bodies.clamp(1, tokio::sync::Semaphore::MAX_PERMITS);
        BodyBudget {
            bytes: tokio::sync::Semaphore::new(max_bytes),
            bodies: tokio::sync::Semaphore::new(max_bodies),
            max_bytes,
            max_bodies,
        }
    }

    /// Body bytes held now.
    pub fn bytes_in_use(&self) -> usize {
        self.max_bytes - self.bytes.available_permits()
    }

    /// Bodies being read or handled now.
    pub fn bodies_in_use(&self) -> usize {
        self.max_bodies - self.bodies.available_permits()
    }

    fn body(&self) -> Option<tokio::sync::SemaphorePermit<'_>> {
        self.bodies.try_acquire().ok()
    }

    fn reserve(&self, bytes: usize) -> Option<tokio::sync::SemaphorePermit<'_>> {
        let bytes = u32::try_from(bytes).ok()?;
        self.bytes.try_acquire_many(bytes).ok()
    }
}

/// Redis is not connected yet or refused the write: nothing was stored.
fn unavailable() -> Refusal {
    Refusal {
        retry_after: Some(10),
        ..Refusal::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
            "event store unavailable, retry later",
        )
    }
}

fn overloaded() -> Refusal {
    Refusal {
        retry_after: Some(5),
        ..Refusal::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "overloaded",
            "too many request bodies in flight, retry later",
        )
    }
}

/// Routes of the receive role; `/metrics` is added only when `with_metrics`.
pub fn router(state: ReceiveState, with_metrics: bool) -> Router {
    let mut router = Router::new()
        .route("/webhook", post(webhook))
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(readyz));
    if with_metrics {
        router = router.route("/metrics", get(metrics));
    }
    router
        // The handler enforces its own limit while reading, with a clear 413.
        .layer(DefaultBodyLimit::disable())
        .with_state(state)
}

/// Routes of a separate metrics listener.
pub fn metrics_router(state: ReceiveState) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .with_state(state)
}

async fn readyz(State(state): State<ReceiveState>) -> Response {
    let Some(writer) = state.writer.get() else {
        return (StatusCode::SERVICE_UNAVAILABLE, "redis not connected yet").into_response();
    };
    match tokio::time::timeout(Duration::from_secs(2), writer.ping()).await {
        Ok(Ok(())) => (StatusCode::OK, "ok").into_response(),
        _ => (StatusCode::SERVICE_UNAVAILABLE, "redis unreachable").into_response(),
    }
}

async fn metrics(State(state): State<ReceiveState>) -> Response {
    let backlog = match state.writer.get() {
        Some(writer) => tokio::time::timeout(Duration::from_secs(2), writer.backlog())
            .await
            .ok()
            .and_then(Result::ok),
        None => None,
    };
    #[allow(clippy::cast_precision_loss)] // gauges: far below 2^52
    {
        state.metrics.set_gauge(
            "gatehouse_webhook_body_bytes_in_flight",
            "Request body bytes held by the receive role now.",
            state.budget.bytes_in_use() as f64,
        );
        state.metrics.set_gauge(
            "gatehouse_webhook_secrets_loaded_timestamp_seconds",
            "When the webhook secrets in use were loaded (Unix time).",
            state.verifier.loaded_at() as f64,
        );
        state.metrics.set_gauge(
            "gatehouse_webhook_secrets",
            "Webhook secrets in use.",
            state.verifier.get().len() as f64,
        );
    }
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        state.metrics.render(backlog),
    )
        .into_response()
}

/// A refusal: status, fixed metric outcome, short reason for the client.
struct Refusal {
    status: StatusCode,
    outcome: &'static str,
    reason: &'static str,
    retry_after: Option<u64>,
}

impl Refusal {
    fn new(status: StatusCode, outcome: &'static str, reason: &'static str) -> Refusal {
        Refusal {
            status,
            outcome,
            reason,
            retry_after: None,
        }
    }
}

fn reply(status: StatusCode, body: &serde_json::Value, retry_after: Option<u64>) -> Response {
    let mut response = (status, axum::Json(body.clone())).into_response();
    if let Some(seconds) = retry_after {
        response
            .headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from(seconds));
    }
    response
}

async fn webhook(State(state): State<ReceiveState>, request: Request) -> Response {
    let started = Instant::now();
    let (parts, body) = request.into_parts();
    let event = header_str(&parts.headers, "x-github-event")
        .unwrap_or("")
        .to_owned();
    let delivery = header_str(&parts.headers, "x-github-delivery")
        .unwrap_or("")
        .to_owned();
    // Logged before they are validated: only a bounded, escaped prefix.
    let span = tracing::info_span!(
        "delivery",
        delivery = %loggable(&delivery),
        event = %loggable(&event)
    );
    let response = async {
        match handle(&state, &parts.headers, body, &event, &delivery).await {
            Ok((status, outcome, body)) => {
                state.metrics.delivery(event_label(&event), outcome);
                reply(status, &body, None)
            }
            Err(refusal) => {
                state.metrics.delivery(event_label(&event), refusal.outcome);
                if refusal.status.is_server_error() {
                    tracing::warn!(
                        status = refusal.status.as_u16(),
                        reason = refusal.reason,
                        "delivery not accepted"
                    );
                } else {
                    tracing::info!(
                        status = refusal.status.as_u16(),
                        reason = refusal.reason,
                        "delivery refused"
                    );
                }
                reply(
                    refusal.status,
                    &json!({"error": refusal.reason}),
                    refusal.retry_after,
                )
            }
        }
    }
    .instrument(span)
    .await;
    state.metrics.observe(started.elapsed());
    response
}

/// A header value as it may appear in a log line: at most [`LOGGED_HEADER_CHARS`] characters,
/// control characters escaped, a cut marked with `…`.
pub fn loggable(value: &str) -> String {
    let mut out: String = value
        .chars()
        .take(LOGGED_HEADER_CHARS)
        .flat_map(char::escape_default)
        .collect();
    if value.chars().count() > LOGGED_HEADER_CHARS {
        out.push('…');
    }
    out
}

/// Longest header value prefix written to logs (a delivery id is 36).
pub const LOGGED_HEADER_CHARS: usize = 64;

fn header_str<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
}

/// What GitHub may send as a delivery id: a GUID. Anything else never reaches a Redis key.
fn valid_delivery_id(id: &str) -> bool {
    (1..=128).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

type Handled = Result<(StatusCode, &'static str, serde_json::Value), Refusal>;

async fn handle(
    state: &ReceiveState,
    headers: &HeaderMap,
    body: Body,
    event: &str,
    delivery: &str,
) -> Handled {
    let (signature, form, declared) = check_headers(headers, event, delivery)?;
    let Some(_body_slot) = state.budget.body() else {
        return Err(overloaded());
    };
    // The reservation is held until the request is answered: verifying and storing hold the
    // body too.
    let (raw, _reserved) = read_body(body, declared, &state.budget, state.body_timeout).await?;
    if state.verifier.get().verify(signature, &raw).is_err() {
        return Err(Refusal::new(
            StatusCode::UNAUTHORIZED,
            "bad_signature",
            "signature does not match",
        ));
    }
    // Only signed bytes are looked at from here on.
    let payload = if form {
        bytes::Bytes::from(form_payload(&raw).ok_or_else(|| {
            Refusal::new(
                StatusCode::BAD_REQUEST,
                "bad_request",
                "form body has no payload field",
            )
        })?)
    } else {
        raw
    };
    if let Some(ignored) = ignored(event, &payload)? {
        return Ok(ignored);
    }
    store(state, event, delivery, &payload).await
}

/// The required headers; returns the signature, whether the body is form-encoded, and its
/// declared length.
fn check_headers<'h>(
    headers: &'h HeaderMap,
    event: &str,
    delivery: &str,
) -> Result<(&'h str, bool, Option<usize>), Refusal> {
    let bad = |reason| Refusal::new(StatusCode::BAD_REQUEST, "bad_request", reason);
    if event.is_empty() {
        return Err(bad("missing X-GitHub-Event header"));
    }
    if delivery.is_empty() {
        return Err(bad("missing X-GitHub-Delivery header"));
    }
    if !valid_delivery_id(delivery) {
        return Err(bad("malformed X-GitHub-Delivery header"));
    }
    let Some(signature) = header_str(headers, "x-hub-signature-256") else {
        return Err(Refusal::new(
            StatusCode::UNAUTHORIZED,
            "bad_signature",
            "missing X-Hub-Signature-256 header",
        ));
    };
    let content_type = header_str(headers, "content-type").map(|c| {
        c.split(';')
            .next()
            .unwrap_or("")
            .trim()
            .to_ascii_lowercase()
    });
    let form = match content_type.as_deref() {
        Some("application/json") => false,
        Some("application/x-www-form-urlencoded") => true,
        _ => {
            return Err(Refusal::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported_media_type",
                "content type must be application/json or application/x-www-form-urlencoded",
            ));
        }
    };
    let declared = header_str(headers, "content-length").and_then(|v| v.parse::<usize>().ok());
    if declared.is_some_and(|n| n > MAX_BODY_BYTES) {
        return Err(too_large());
    }
    Ok((signature, form, declared))
}

fn too_large() -> Refusal {
    Refusal::new(
        StatusCode::PAYLOAD_TOO_LARGE,
        "too_large",
        "payload larger than 25 MB",
    )
}

/// Bodies above this size live in their own anonymous memory mapping, returned to the system
/// when the request ends. From the heap, glibc would keep them: after the first large free it
/// raises its mmap threshold, later bodies come from per-thread arenas that are not given back,
/// and alternating floods of large uploads grew the resident size to twice the body budget.
const MAPPED_FROM: usize = 1024 * 1024;

/// A request body being read: on the heap when small, in an anonymous mapping when large.
enum BodyBuffer {
    Heap(Vec<u8>),
    Mapped { map: memmap2::MmapMut, len: usize },
}

impl BodyBuffer {
    fn with_capacity(capacity: usize) -> std::io::Result<BodyBuffer> {
        if capacity > MAPPED_FROM {
            Ok(BodyBuffer::Mapped {
                map: memmap2::MmapMut::map_anon(capacity)?,
                len: 0,
            })
        } else {
            Ok(BodyBuffer::Heap(Vec::with_capacity(capacity)))
        }
    }

    fn len(&self) -> usize {
        match self {
            BodyBuffer::Heap(vec) => vec.len(),
            BodyBuffer::Mapped { len, .. } => *len,
        }
    }

    fn capacity(&self) -> usize {
        match self {
            BodyBuffer::Heap(vec) => vec.capacity(),
            BodyBuffer::Mapped { map, .. } => map.len(),
        }
    }

    /// Grows to exactly `capacity` (more than now), keeping the contents.
    fn grow(&mut self, capacity: usize) -> std::io::Result<()> {
        match self {
            BodyBuffer::Heap(vec) if capacity <= MAPPED_FROM => {
                vec.reserve_exact(capacity - vec.len());
            }
            _ => {
                let mut bigger = BodyBuffer::with_capacity(capacity)?;
                bigger.extend_from_slice(self.as_slice());
                *self = bigger;
            }
        }
        Ok(())
    }

    /// Appends within the capacity (the caller grew it first).
    fn extend_from_slice(&mut self, data: &[u8]) {
        match self {
            BodyBuffer::Heap(vec) => vec.extend_from_slice(data),
            BodyBuffer::Mapped { map, len } => {
                map[*len..*len + data.len()].copy_from_slice(data);
                *len += data.len();
            }
        }
    }

    fn as_slice(&self) -> &[u8] {
        match self {
            BodyBuffer::Heap(vec) => vec,
            BodyBuffer::Mapped { map, len } => &map[..*len],
        }
    }

    fn freeze(self) -> bytes::Bytes {
        /// A mapping seen as its first `len` bytes.
        struct Filled(memmap2::MmapMut, usize);
        impl AsRef<[u8]> for Filled {
            fn as_ref(&self) -> &[u8] {
                &self.0[..self.1]
            }
        }
        match self {
            BodyBuffer::Heap(vec) => bytes::Bytes::from(vec),
            BodyBuffer::Mapped { map, len } => bytes::Bytes::from_owner(Filled(map, len)),
        }
    }
}

/// The first allocation for a body of unknown length (chunked): most deliveries fit in it.
const CHUNKED_FIRST_CAPACITY: usize = 64 * 1024;

/// Reads the body within the size cap, the memory budget and the time limit, into one buffer.
async fn read_body(
    body: Body,
    declared: Option<usize>,
    budget: &BodyBudget,
    timeout: Duration,
) -> Result<(bytes::Bytes, Option<tokio::sync::SemaphorePermit<'_>>), Refusal> {
    // A declared length is reserved whole before a byte is read (hyper refuses a body longer
    // than it declares); a chunked body reserves as it arrives.
    let mut held = match declared {
        Some(length) => Some(budget.reserve(length).ok_or_else(overloaded)?),
        None => None,
    };
    let read = async {
        use http_body_util::BodyExt as _;
        let held = &mut held;
        let mut body = body;
        // A declared body gets its exact size at once. A chunked one grows by doubling, and the
        // budget is charged for the capacity before each growth (not only for the bytes in it):
        // the allocation is what takes memory.
        let mut buffer =
            BodyBuffer::with_capacity(declared.unwrap_or(0)).map_err(|_| overloaded())?;
        while let Some(frame) = body.frame().await {
            let frame = frame.map_err(|_| {
                Refusal::new(
                    StatusCode::BAD_REQUEST,
                    "bad_request",
                    "request body could not be read",
                )
            })?;
            let Ok(data) = frame.into_data() else {
                continue;
            };
            let needed = buffer.len() + data.len();
            if needed > MAX_BODY_BYTES {
                return Err(too_large());
            }
            if needed > buffer.capacity() {
                let target = needed
                    .max(buffer.capacity().saturating_mul(2))
                    .clamp(CHUNKED_FIRST_CAPACITY, MAX_BODY_BYTES);
                // While growing, the old and the new allocation both exist: both are charged,
                // then the old one's share goes back.
                let peak = buffer.capacity() + target;
                let charged = held
                    .as_ref()
                    .map_or(0, tokio::sync::SemaphorePermit::num_permits);
                if peak > charged {
                    let more = budget.reserve(peak - charged).ok_or_else(overloaded)?;
                    match held.as_mut() {
                        Some(permit) => permit.merge(more),
                        None => *held = Some(more),
                    }
                }
                buffer.grow(target).map_err(|_| overloaded())?;
                if let Some(permit) = held.as_mut()
                    && permit.num_permits() > buffer.capacity()
                {
                    drop(permit.split(permit.num_permits() - buffer.capacity()));
                }
            }
            buffer.extend_from_slice(&data);
        }
        Ok(buffer.freeze())
    };
    let raw = match tokio::time::timeout(timeout, read).await {
        Err(_) => {
            return Err(Refusal::new(
                StatusCode::REQUEST_TIMEOUT,
                "timeout",
                "request body not received in time",
            ));
        }
        Ok(result) => result?,
    };
    Ok((raw, held))
}

/// The answer for a signed delivery Gatehouse does not act on, or `None` to store it.
fn ignored(
    event: &str,
    payload: &[u8],
) -> Result<Option<(StatusCode, &'static str, serde_json::Value)>, Refusal> {
    if event == "ping" {
        return Ok(Some((StatusCode::OK, "ignored", json!({"status": "pong"}))));
    }
    let Some(wanted) = wanted_actions(event) else {
        tracing::debug!("event not handled");
        let body = json!({"status": "ignored", "reason": "event not handled"});
        return Ok(Some((StatusCode::OK, "ignored", body)));
    };
    let action = top_level_action(payload).map_err(|NotAnObject| {
        Refusal::new(
            StatusCode::BAD_REQUEST,
            "bad_request",
            "payload is not a JSON object",
        )
    })?;
    if action.as_deref().is_some_and(|a| wanted.contains(&a)) {
        return Ok(None);
    }
    tracing::debug!(
        action = action.as_deref().unwrap_or(""),
        "action not handled"
    );
    let body = json!({"status": "ignored", "reason": "action not handled"});
    Ok(Some((StatusCode::OK, "ignored", body)))
}

/// Stores the delivery; the answer reflects what Redis did.
async fn store(state: &ReceiveState, event: &str, delivery: &str, payload: &[u8]) -> Handled {
    let Some(writer) = state.writer.get() else {
        tracing::warn!("delivery not stored: redis not connected yet");
        return Err(unavailable());
    };
    let received_at_ms = i64::try_from(crate::unix_millis()).unwrap_or(i64::MAX);
    match writer
        .enqueue(delivery, event, received_at_ms, payload)
        .await
    {
        Ok(Enqueued::Queued(id)) => {
            tracing::debug!(entry = %id, "delivery queued");
            Ok((StatusCode::ACCEPTED, "queued", json!({"status": "queued"})))
        }
        Ok(Enqueued::Duplicate(id)) => {
            tracing::info!(entry = %id, "redelivery of an accepted delivery; nothing stored");
            Ok((StatusCode::OK, "duplicate", json!({"status": "duplicate"})))
        }
        Err(EnqueueError::Backlog { length }) => {
            tracing::warn!(
                length,
                "event backlog full; refusing deliveries until ingest catches up"
            );
            Err(Refusal {
                retry_after: Some(60),
                ..Refusal::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "backlog_full",
                    "event backlog is full, retry later",
                )
            })
        }
        Err(e) => {
            tracing::warn!(error = %e, "delivery not stored");
            Err(unavailable())
        }
    }
}

/// A signed body that is not a JSON object (or not one up to its `action`).
#[derive(Debug, PartialEq, Eq)]
pub struct NotAnObject;

/// The top-level `action` of a JSON object, read up to that key only: GitHub writes `action`
/// first, so a 28 KB payload costs a few bytes of parsing instead of all of it. A body that is
/// not a JSON object is an error; one that is malformed after `action` is stored as GitHub signed
/// it, and ingest dead-letters it as malformed (only the secret's holder can sign a body).
/// Without an `action` key the whole object is read (and so checked).
pub fn top_level_action(payload: &[u8]) -> Result<Option<String>, NotAnObject> {
    use serde::de::{Deserializer as _, Error as _, IgnoredAny, MapAccess, Visitor};
    use std::cell::RefCell;

    /// Sentinel message of the error that stops reading once `action` is found.
    const FOUND: &str = "gatehouse: action found";

    /// The value of the `action` key (which may be `null`).
    struct Found(Option<String>);

    struct FirstAction<'c>(&'c RefCell<Option<Found>>);

    impl<'de> Visitor<'de> for FirstAction<'_> {
        type Value = ();

        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("a JSON object")
        }

        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
            while let Some(key) = map.next_key::<String>()? {
                if key == "action" {
                    let action: Option<String> = map.next_value()?;
                    *self.0.borrow_mut() = Some(Found(action));
                    // Stop here: the rest of the object is not read.
                    return Err(A::Error::custom(FOUND));
                }
                map.next_value::<IgnoredAny>()?;
            }
            Ok(())
        }
    }

    let found = RefCell::new(None);
    let mut deserializer = serde_json::Deserializer::from_slice(payload);
    let read = deserializer.deserialize_map(FirstAction(&found));
    if let Some(Found(action)) = found.into_inner() {
        return Ok(action);
    }
    read.map_err(|_| NotAnObject)?;
    deserializer.end().map_err(|_| NotAnObject)?;
    Ok(None)
}

/// Actions of an event that Gatehouse acts on; `None` for events it ignores entirely.
pub fn wanted_actions(event: &str) -> Option<&'static [&'static str]> {
    match event {
        "pull_request" => Some(&[
            "opened",
            "synchronize",
            "reopened",
            "ready_for_review",
            "edited",
            "closed",
        ]),
        "check_run" | "check_suite" => Some(&["rerequested"]),
        "issue_comment" => Some(&["created"]),
        "merge_group" => Some(&["checks_requested"]),
        _ => None,
    }
}

fn form_payload(raw: &[u8]) -> Option<Vec<u8>> {
    form_urlencoded::parse(raw)
        .find(|(k, _)| k == "payload")
        .map(|(_, v)| v.into_owned().into_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_action_is_read_from_the_top_level_object_only() {
        assert_eq!(
            top_level_action(br#"{"action":"opened","pull_request":{"action":"x"}}"#),
            Ok(Some("opened".to_owned()))
        );
        // Not first: found after skipping what comes before, nested ones ignored.
        assert_eq!(
            top_level_action(br#"{"zen":"a","hook":{"action":"no"},"action":"closed"}"#),
            Ok(Some("closed".to_owned()))
        );
        assert_eq!(top_level_action(br#"{"zen":"hi"}"#), Ok(None));
        assert_eq!(top_level_action(br#"{"action":null}"#), Ok(None));
        for bad in [
            &b"Hello, World!"[..],
            b"[1,2]",
            b"",
            b"{\"zen\":",
            b"{} trailing",
        ] {
            assert_eq!(
                top_level_action(bad),
                Err(NotAnObject),
                "{}",
                String::from_utf8_lossy(bad)
            );
        }
        // Read up to the action only: what follows is ingest's to judge.
        assert_eq!(
            top_level_action(br#"{"action":"opened","rest":"#),
            Ok(Some("opened".to_owned()))
        );
    }

    #[test]
    fn header_values_in_logs_are_bounded_and_escaped() {
        assert_eq!(loggable("pull_request"), "pull_request");
        let long = "x".repeat(10_000);
        let logged = loggable(&long);
        assert_eq!(logged.chars().count(), LOGGED_HEADER_CHARS + 1);
        assert!(logged.ends_with('…'));
        assert_eq!(loggable("a\nb\u{1b}[31m"), "a\\nb\\u{1b}[31m");
    }

    #[test]
    fn delivery_ids_are_guids_not_arbitrary_keys() {
        assert!(valid_delivery_id("72d3162e-cc78-11e3-81ab-4c9367dc0958"));
        for bad in ["", "a b", "../x", "x:y", &"a".repeat(129)] {
            assert!(!valid_delivery_id(bad), "{bad}");
        }
    }

    #[test]
    fn only_actions_gatehouse_acts_on_are_wanted() {
        assert!(
            wanted_actions("pull_request")
                .unwrap()
                .contains(&"synchronize")
        );
        assert!(!wanted_actions("pull_request").unwrap().contains(&"labeled"));
        assert_eq!(wanted_actions("check_run"), Some(&["rerequested"][..]));
        assert!(wanted_actions("push").is_none());
    }

    #[test]
    fn form_bodies_yield_their_payload_field() {
        assert_eq!(
            form_payload(b"payload=%7B%22a%22%3A1%7D").unwrap(),
            br#"{"a":1}"#
        );
        assert!(form_payload(b"other=1").is_none());
    }
}
