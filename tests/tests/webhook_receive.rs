//! The receive role over real HTTP on loopback with a private Redis: every real payload, the
//! signature rules, redeliveries, each kind of bad input (right status, nothing written) and a
//! Redis outage.

// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::Duration;

use gatehouse_crds::stream::{EVENTS_STREAM, EventEntry};
use gatehouse_tests::http::{request, stalled_request};
use gatehouse_tests::webhook::{Receiver, ReceiverOptions, SECRET, fixtures};
use gatehouse_tests::{RedisOptions, RedisServer};
use redis::AsyncTypedCommands;

async fn redis_conn(redis: &RedisServer) -> redis::aio::MultiplexedConnection {
    redis::Client::open(redis.url())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap()
}

/// Stream entries as stored.
async fn entries(redis: &RedisServer) -> Vec<EventEntry> {
    let mut conn = redis_conn(redis).await;
    let reply = conn.xrange_all(EVENTS_STREAM).await.unwrap();
    reply
        .ids
        .iter()
        .map(|id| gatehouse_webhook::events::entry_from_stream(id).unwrap())
        .collect()
}

async fn key_count(redis: &RedisServer) -> u64 {
    let mut conn = redis_conn(redis).await;
    redis::cmd("DBSIZE").query_async(&mut conn).await.unwrap()
}

/// A private Redis and a receive role with default options.
async fn started() -> (RedisServer, Receiver) {
    let redis = RedisServer::start().unwrap();
    let receiver = Receiver::start(&redis, ReceiverOptions::default())
        .await
        .unwrap();
    (redis, receiver)
}

fn pr_opened() -> Vec<u8> {
    std::fs::read(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/fixtures/github/pull_request.opened.octokit.json"
    ))
    .unwrap()
}

/// What the receive role answers each real fixture with, stated independently of the code:
/// Gatehouse acts on pull request opened/synchronize/reopened/ready_for_review/edited/closed,
/// check run and suite rerequested, issue comment created and merge group checks requested.
const FIXTURE_OUTCOMES: [(&str, &str); 26] = [
    ("check_run.created.octokit.json", "ignored"),
    ("check_run.requested_action.octokit.json", "ignored"),
    ("check_run.rerequested.octokit.json", "queued"),
    ("check_suite.requested.octokit.json", "ignored"),
    ("check_suite.rerequested.octokit.json", "queued"),
    ("installation.created.app_delivery.octocrab.json", "ignored"),
    ("installation.created.octokit.json", "ignored"),
    ("installation.deleted.octokit.json", "ignored"),
    ("installation_repositories.added.octokit.json", "ignored"),
    (
        "installation_repositories.removed.app_delivery.octocrab.json",
        "ignored",
    ),
    ("installation_repositories.removed.octokit.json", "ignored"),
    ("issue_comment.created.on_issue.octokit.json", "queued"),
    ("issue_comment.created.on_pull_request.zulip.json", "queued"),
    (
        "issue_comment.deleted.on_pull_request.app_delivery.octocrab.json",
        "ignored",
    ),
    ("ping.app.app_delivery.octocrab.json", "pong"),
    ("ping.repo_hook.octokit.json", "pong"),
    ("ping.with_app_id.octokit.json", "pong"),
    ("pull_request.closed.app_delivery.octocrab.json", "queued"),
    ("pull_request.closed.octokit.json", "queued"),
    ("pull_request.converted_to_draft.octokit.json", "ignored"),
    ("pull_request.labeled.octokit.json", "ignored"),
    ("pull_request.opened.null_body.octokit.json", "queued"),
    ("pull_request.opened.octokit.json", "queued"),
    ("pull_request.ready_for_review.octokit.json", "queued"),
    ("pull_request.reopened.octokit.json", "queued"),
    ("pull_request.synchronize.octokit.json", "queued"),
];

#[tokio::test]
async fn every_fixture_with_a_correct_signature_is_queued_or_acknowledged() {
    let (redis, receiver) = started().await;
    let mut expected_entries = Vec::new();
    let all = fixtures();
    let names: Vec<&str> = all.iter().map(|(name, ..)| name.as_str()).collect();
    let listed: Vec<&str> = FIXTURE_OUTCOMES.iter().map(|(name, _)| *name).collect();
    assert_eq!(names, listed, "every fixture has its stated outcome");
    for (i, ((name, event, _, bytes), (_, outcome))) in all.iter().zip(FIXTURE_OUTCOMES).enumerate()
    {
        let delivery = format!("00000000-0000-0000-0000-{i:012}");
        let response = receiver
            .deliver(event, &delivery, bytes, SECRET)
            .await
            .unwrap();
        let expected_status = if outcome == "queued" { 202 } else { 200 };
        assert_eq!(
            response.status,
            expected_status,
            "{name}: {}",
            response.text()
        );
        assert_eq!(response.json()["status"], outcome, "{name}");
        if outcome == "queued" {
            expected_entries.push((delivery, event.clone(), bytes.clone()));
        }
    }
    let stored = entries(&redis).await;
    assert_eq!(stored.len(), expected_entries.len());
    for (entry, (delivery, event, bytes)) in stored.iter().zip(&expected_entries) {
        assert_eq!(&entry.delivery_id, delivery);
        assert_eq!(&entry.event, event);
        // The payload comes back byte for byte, whatever encoding stored it.
        assert_eq!(&gatehouse_webhook::events::payload(entry).unwrap(), bytes);
    }
}

#[tokio::test]
async fn every_fixture_with_a_wrong_signature_is_refused_and_nothing_is_written() {
    let (redis, receiver) = started().await;
    for (i, (name, event, _, bytes)) in fixtures().iter().enumerate() {
        let delivery = format!("10000000-0000-0000-0000-{i:012}");
        let response = receiver
            .deliver(event, &delivery, bytes, "not-the-secret")
            .await
            .unwrap();
        assert_eq!(response.status, 401, "{name}");
        assert_eq!(
            response.json()["error"],
            "signature does not match",
            "{name}"
        );
    }
    assert_eq!(key_count(&redis).await, 0);
}

#[tokio::test]
async fn githubs_signature_test_vector_is_accepted_and_then_json_is_checked() {
    let redis = RedisServer::start().unwrap();
    let receiver = Receiver::start(
        &redis,
        ReceiverOptions {
            secrets: vec!["It's a Secret to Everybody".into()],
            ..ReceiverOptions::default()
        },
    )
    .await
    .unwrap();
    let signature = "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17";
    let send = |event: &'static str| async move {
        request(
            receiver.addr,
            "POST",
            "/webhook",
            &[
                ("X-GitHub-Event", event),
                ("X-GitHub-Delivery", "d-vector"),
                ("X-Hub-Signature-256", signature),
                ("Content-Type", "application/json"),
            ],
            b"Hello, World!",
        )
        .await
        .unwrap()
    };
    // The signature passes; as a ping nothing more is needed.
    assert_eq!(send("ping").await.status, 200);
    // As an event we act on, the (signed) body must be a JSON object.
    let response = send("pull_request").await;
    assert_eq!(response.status, 400);
    assert_eq!(response.json()["error"], "payload is not a JSON object");
    assert_eq!(key_count(&redis).await, 0);
}

#[tokio::test]
async fn a_redelivered_delivery_is_acknowledged_without_a_second_entry() {
    let (redis, receiver) = started().await;
    let body = pr_opened();
    let first = receiver
        .deliver("pull_request", "redelivered-1", &body, SECRET)
        .await
        .unwrap();
    assert_eq!(first.status, 202);
    let again = receiver
        .deliver("pull_request", "redelivered-1", &body, SECRET)
        .await
        .unwrap();
    assert_eq!(again.status, 200);
    assert_eq!(again.json()["status"], "duplicate");
    assert_eq!(entries(&redis).await.len(), 1);
    // The delivery id is remembered with a TTL of at least 72 hours.
    let mut conn = redis_conn(&redis).await;
    let ttl: i64 = redis::cmd("TTL")
        .arg(gatehouse_crds::stream::delivery_key("redelivered-1"))
        .query_async(&mut conn)
        .await
        .unwrap();
    assert!(ttl > 71 * 3600, "ttl {ttl}");
}

struct Case {
    what: &'static str,
    event: Option<&'static str>,
    delivery: Option<&'static str>,
    signature: Option<String>,
    content_type: &'static str,
    body: Vec<u8>,
    status: u16,
    error: &'static str,
}

impl Case {
    fn valid(what: &'static str, status: u16, error: &'static str) -> Case {
        let body = pr_opened();
        Case {
            what,
            event: Some("pull_request"),
            delivery: Some("d1"),
            signature: Some(gatehouse_webhook::signature::sign(SECRET.as_bytes(), &body)),
            content_type: "application/json",
            body,
            status,
            error,
        }
    }

    async fn check(self, receiver: &Receiver) {
        let mut headers = vec![("Content-Type", self.content_type)];
        if let Some(event) = self.event {
            headers.push(("X-GitHub-Event", event));
        }
        if let Some(delivery) = self.delivery {
            headers.push(("X-GitHub-Delivery", delivery));
        }
        if let Some(signature) = &self.signature {
            headers.push(("X-Hub-Signature-256", signature));
        }
        let response = request(receiver.addr, "POST", "/webhook", &headers, &self.body)
            .await
            .unwrap();
        let what = self.what;
        assert_eq!(response.status, self.status, "{what}: {}", response.text());
        assert_eq!(response.json()["error"], self.error, "{what}");
        // Short JSON error, nothing echoed back.
        assert!(response.body.len() < 200, "{what}: {}", response.text());
    }
}

#[tokio::test]
async fn bad_requests_get_their_status_and_write_nothing() {
    let (redis, receiver) = started().await;
    // Signed, but an array: it has no top-level action to read.
    let broken = br#"["action", "opened"]"#.to_vec();
    let cases = vec![
        Case {
            event: None,
            ..Case::valid("no event", 400, "missing X-GitHub-Event header")
        },
        Case {
            delivery: None,
            ..Case::valid("no delivery", 400, "missing X-GitHub-Delivery header")
        },
        Case {
            delivery: Some("a:b"),
            ..Case::valid("odd delivery id", 400, "malformed X-GitHub-Delivery header")
        },
        Case {
            signature: None,
            ..Case::valid("no signature", 401, "missing X-Hub-Signature-256 header")
        },
        Case {
            signature: Some("sha1=0123456789abcdef0123456789abcdef01234567".into()),
            ..Case::valid("sha1 signature", 401, "signature does not match")
        },
        Case {
            content_type: "text/plain",
            ..Case::valid(
                "wrong content type",
                415,
                "content type must be application/json or application/x-www-form-urlencoded",
            )
        },
        Case {
            body: [pr_opened().as_slice(), b" "].concat(),
            ..Case::valid("changed body", 401, "signature does not match")
        },
        Case {
            signature: Some(gatehouse_webhook::signature::sign(
                SECRET.as_bytes(),
                &broken,
            )),
            body: broken.clone(),
            ..Case::valid(
                "signed but not a JSON object",
                400,
                "payload is not a JSON object",
            )
        },
    ];
    for case in cases {
        case.check(&receiver).await;
    }
    assert_eq!(
        key_count(&redis).await,
        0,
        "nothing may be written for refused deliveries"
    );
    // 400, 401 and 415 refusals gave their reservations back.
    assert_eq!(receiver.state.budget.bytes_in_use(), 0);
    assert_eq!(receiver.state.budget.bodies_in_use(), 0);
}

#[tokio::test]
async fn oversized_bodies_are_refused_with_413() {
    let (redis, receiver) = started().await;
    // Declared too large: refused before reading.
    let response = stalled_request(
        receiver.addr,
        "/webhook",
        &[
            ("X-GitHub-Event", "pull_request"),
            ("X-GitHub-Delivery", "big-1"),
            ("X-Hub-Signature-256", "sha256=00"),
            ("Content-Type", "application/json"),
        ],
        30 * 1024 * 1024,
        b"{",
        Duration::from_secs(10),
    )
    .await
    .unwrap();
    assert_eq!(response.status, 413);
    // Actually too large, sent in full (27 MB): refused while reading.
    let huge = vec![b' '; 27 * 1024 * 1024];
    let response = receiver
        .deliver("pull_request", "big-2", &huge, SECRET)
        .await
        .unwrap();
    assert_eq!(response.status, 413);
    // Just under GitHub's 25 MB cap is fine.
    let mut near_cap = br#"{"action":"opened","padding":""#.to_vec();
    near_cap.extend(std::iter::repeat_n(b'x', 24 * 1024 * 1024));
    near_cap.extend_from_slice(br#""}"#);
    let response = receiver
        .deliver("pull_request", "big-3", &near_cap, SECRET)
        .await
        .unwrap();
    assert_eq!(response.status, 202, "{}", response.text());
    assert_eq!(entries(&redis).await.len(), 1);
    // Every refusal and the success gave their reservation back.
    assert_eq!(receiver.state.budget.bytes_in_use(), 0);
    assert_eq!(receiver.state.budget.bodies_in_use(), 0);
}

#[tokio::test]
async fn a_chunked_body_without_a_length_is_cut_off_at_the_limit() {
    let (redis, receiver) = started().await;
    // 32 MiB in two 16 MiB chunks: no Content-Length to refuse early, so the limit applies while
    // reading.
    let body = chunked(&vec![b' '; 32 * 1024 * 1024], 16 * 1024 * 1024);
    let response = request(
        receiver.addr,
        "POST",
        "/webhook",
        &[
            ("X-GitHub-Event", "pull_request"),
            ("X-GitHub-Delivery", "chunked-1"),
            ("X-Hub-Signature-256", "sha256=00"),
            ("Content-Type", "application/json"),
            ("Transfer-Encoding", "chunked"),
        ],
        &body,
    )
    .await
    .unwrap();
    assert_eq!(response.status, 413, "{}", response.text());
    assert_eq!(key_count(&redis).await, 0);
    assert_eq!(receiver.state.budget.bytes_in_use(), 0);
}

#[tokio::test]
async fn a_body_that_never_arrives_is_cut_off() {
    let redis = RedisServer::start().unwrap();
    let receiver = Receiver::start(
        &redis,
        ReceiverOptions {
            body_timeout: Duration::from_millis(500),
            ..ReceiverOptions::default()
        },
    )
    .await
    .unwrap();
    let response = stalled_request(
        receiver.addr,
        "/webhook",
        &[
            ("X-GitHub-Event", "pull_request"),
            ("X-GitHub-Delivery", "slow-1"),
            ("X-Hub-Signature-256", "sha256=00"),
            ("Content-Type", "application/json"),
        ],
        1000,
        b"{\"action\":",
        Duration::from_secs(10),
    )
    .await
    .unwrap();
    assert_eq!(response.status, 408);
    assert_eq!(key_count(&redis).await, 0);
    assert_eq!(receiver.state.budget.bytes_in_use(), 0);
    assert_eq!(receiver.state.budget.bodies_in_use(), 0);
}

#[tokio::test]
async fn form_encoded_deliveries_store_the_json_payload() {
    let (redis, receiver) = started().await;
    let json = pr_opened();
    let form: String = form_urlencoded::Serializer::new(String::new())
        .append_pair("payload", std::str::from_utf8(&json).unwrap())
        .finish();
    let signature = gatehouse_webhook::signature::sign(SECRET.as_bytes(), form.as_bytes());
    let response = request(
        receiver.addr,
        "POST",
        "/webhook",
        &[
            ("X-GitHub-Event", "pull_request"),
            ("X-GitHub-Delivery", "form-1"),
            ("X-Hub-Signature-256", &signature),
            ("Content-Type", "application/x-www-form-urlencoded"),
        ],
        form.as_bytes(),
    )
    .await
    .unwrap();
    assert_eq!(response.status, 202, "{}", response.text());
    let stored = entries(&redis).await;
    assert_eq!(
        gatehouse_webhook::events::payload(&stored[0]).unwrap(),
        json
    );
}

#[tokio::test]
async fn both_secrets_are_accepted_during_rotation() {
    let redis = RedisServer::start().unwrap();
    let receiver = Receiver::start(
        &redis,
        ReceiverOptions {
            secrets: vec!["new-secret".into(), SECRET.into()],
            ..ReceiverOptions::default()
        },
    )
    .await
    .unwrap();
    let body = pr_opened();
    assert_eq!(
        receiver
            .deliver("pull_request", "rot-1", &body, "new-secret")
            .await
            .unwrap()
            .status,
        202
    );
    assert_eq!(
        receiver
            .deliver("pull_request", "rot-2", &body, SECRET)
            .await
            .unwrap()
            .status,
        202
    );
    // Retire the old secret: rewrite its file and reload, as on SIGHUP.
    std::fs::write(&receiver.secret_files[1], "newer-secret\n").unwrap();
    receiver.state.verifier.reload().unwrap();
    assert_eq!(
        receiver
            .deliver("pull_request", "rot-3", &body, SECRET)
            .await
            .unwrap()
            .status,
        401
    );
    assert_eq!(
        receiver
            .deliver("pull_request", "rot-4", &body, "newer-secret")
            .await
            .unwrap()
            .status,
        202
    );
}

#[tokio::test]
async fn a_full_backlog_answers_503_with_retry_after() {
    let redis = RedisServer::start().unwrap();
    let receiver = Receiver::start(
        &redis,
        ReceiverOptions {
            max_backlog: 2,
            ..ReceiverOptions::default()
        },
    )
    .await
    .unwrap();
    let body = pr_opened();
    for i in 0..2 {
        assert_eq!(
            receiver
                .deliver("pull_request", &format!("bl-{i}"), &body, SECRET)
                .await
                .unwrap()
                .status,
            202
        );
    }
    let response = receiver
        .deliver("pull_request", "bl-2", &body, SECRET)
        .await
        .unwrap();
    assert_eq!(response.status, 503);
    assert_eq!(
        response.headers.get("retry-after").map(String::as_str),
        Some("60")
    );
    assert_eq!(entries(&redis).await.len(), 2);
    // Refused deliveries are not remembered: GitHub's redelivery will be accepted later.
    let mut conn = redis_conn(&redis).await;
    assert!(
        !conn
            .exists(gatehouse_crds::stream::delivery_key("bl-2"))
            .await
            .unwrap()
    );
}

#[tokio::test]
async fn redis_down_means_503_then_accepted_again_when_it_is_back() {
    let mut redis = RedisServer::start_with(RedisOptions {
        append_only: true,
        ..Default::default()
    })
    .unwrap();
    let receiver = Receiver::start(&redis, ReceiverOptions::default())
        .await
        .unwrap();
    let body = pr_opened();
    assert_eq!(
        receiver
            .deliver("pull_request", "down-0", &body, SECRET)
            .await
            .unwrap()
            .status,
        202
    );
    redis.stop().unwrap();
    for i in 1..=5 {
        let response = receiver
            .deliver("pull_request", &format!("down-{i}"), &body, SECRET)
            .await
            .unwrap();
        assert_eq!(response.status, 503, "{}", response.text());
        assert_eq!(
            response.headers.get("retry-after").map(String::as_str),
            Some("10")
        );
    }
    let ready = request(receiver.addr, "GET", "/readyz", &[], b"")
        .await
        .unwrap();
    assert_eq!(ready.status, 503);
    let alive = request(receiver.addr, "GET", "/healthz", &[], b"")
        .await
        .unwrap();
    assert_eq!(alive.status, 200);

    redis.restart().unwrap();
    let mut accepted = false;
    for i in 0..50 {
        let response = receiver
            .deliver("pull_request", &format!("up-{i}"), &body, SECRET)
            .await
            .unwrap();
        if response.status == 202 {
            accepted = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(accepted, "deliveries not accepted after redis came back");
    assert_eq!(
        request(receiver.addr, "GET", "/readyz", &[], b"")
            .await
            .unwrap()
            .status,
        200
    );
    // The delivery acknowledged before the outage survived it (AOF).
    let stored = entries(&redis).await;
    assert!(stored.iter().any(|e| e.delivery_id == "down-0"));
    assert!(
        !stored
            .iter()
            .any(|e| e.delivery_id.starts_with("down-") && e.delivery_id != "down-0")
    );
}

#[tokio::test]
async fn metrics_count_deliveries_by_event_and_outcome() {
    let (redis, receiver) = started().await;
    // A dead letter left by ingest shows in the gauge.
    let mut conn = redis_conn(&redis).await;
    let _: String = redis::cmd("XADD")
        .arg(gatehouse_crds::stream::EVENTS_DEAD_STREAM)
        .arg("*")
        .arg("reason")
        .arg("test")
        .query_async(&mut conn)
        .await
        .unwrap();
    let body = pr_opened();
    receiver
        .deliver("pull_request", "m-1", &body, SECRET)
        .await
        .unwrap();
    receiver
        .deliver("pull_request", "m-1", &body, SECRET)
        .await
        .unwrap();
    receiver
        .deliver("pull_request", "m-2", &body, "wrong")
        .await
        .unwrap();
    let text = request(receiver.addr, "GET", "/metrics", &[], b"")
        .await
        .unwrap()
        .text();
    for line in [
        "gatehouse_webhook_deliveries_total{event=\"pull_request\",outcome=\"queued\"} 1",
        "gatehouse_webhook_deliveries_total{event=\"pull_request\",outcome=\"duplicate\"} 1",
        "gatehouse_webhook_deliveries_total{event=\"pull_request\",outcome=\"bad_signature\"} 1",
        "gatehouse_webhook_request_duration_seconds_count 3",
        "gatehouse_events_stream_length 1",
        "gatehouse_events_dead_letters 1",
        "gatehouse_redis_up 1",
    ] {
        assert!(text.contains(line), "missing {line} in\n{text}");
    }
}

#[tokio::test]
async fn acknowledged_entries_still_in_the_stream_do_not_count_as_backlog() {
    let redis = RedisServer::start().unwrap();
    let receiver = Receiver::start(
        &redis,
        ReceiverOptions {
            max_backlog: 2,
            ..ReceiverOptions::default()
        },
    )
    .await
    .unwrap();
    let body = pr_opened();
    let mut conn = redis_conn(&redis).await;
    let _: () = redis::cmd("XGROUP")
        .arg("CREATE")
        .arg(EVENTS_STREAM)
        .arg("ingest")
        .arg("0")
        .arg("MKSTREAM")
        .query_async(&mut conn)
        .await
        .unwrap();
    // Store, deliver and acknowledge more entries than the cap: the stream keeps them, but none
    // waits for ingest, so deliveries keep being accepted.
    for i in 0..4 {
        let response = receiver
            .deliver("pull_request", &format!("ack-{i}"), &body, SECRET)
            .await
            .unwrap();
        assert_eq!(response.status, 202, "delivery {i}: {}", response.text());
        let read: redis::streams::StreamReadReply = redis::AsyncCommands::xread_options(
            &mut conn,
            &[EVENTS_STREAM],
            &[">"],
            &redis::streams::StreamReadOptions::default()
                .group("ingest", "c")
                .count(10),
        )
        .await
        .unwrap();
        for key in read.keys {
            for id in key.ids {
                let _: () = redis::cmd("XACK")
                    .arg(EVENTS_STREAM)
                    .arg("ingest")
                    .arg(&id.id)
                    .query_async(&mut conn)
                    .await
                    .unwrap();
            }
        }
    }
    assert_eq!(conn.xlen(EVENTS_STREAM).await.unwrap(), 4);
    // Two stored and not yet processed reach the cap.
    for i in 0..2 {
        assert_eq!(
            receiver
                .deliver("pull_request", &format!("wait-{i}"), &body, SECRET)
                .await
                .unwrap()
                .status,
            202
        );
    }
    let response = receiver
        .deliver("pull_request", "wait-2", &body, SECRET)
        .await
        .unwrap();
    assert_eq!(response.status, 503);
}

#[tokio::test]
async fn a_redelivery_while_the_backlog_is_full_is_a_duplicate_not_a_503() {
    let redis = RedisServer::start().unwrap();
    let receiver = Receiver::start(
        &redis,
        ReceiverOptions {
            max_backlog: 1,
            ..ReceiverOptions::default()
        },
    )
    .await
    .unwrap();
    let body = pr_opened();
    let deliver = |id: &'static str| {
        let body = body.clone();
        let receiver = &receiver;
        async move {
            receiver
                .deliver("pull_request", id, &body, SECRET)
                .await
                .unwrap()
        }
    };
    assert_eq!(deliver("full-1").await.status, 202);
    assert_eq!(deliver("full-2").await.status, 503, "the backlog is full");
    let again = deliver("full-1").await;
    assert_eq!(again.status, 200, "{}", again.text());
    assert_eq!(again.json()["status"], "duplicate");
}

/// Headers of an unsigned delivery whose body size is `length`.
fn unsigned_headers(delivery: &str) -> Vec<(&'static str, String)> {
    vec![
        ("X-GitHub-Event", "pull_request".to_owned()),
        ("X-GitHub-Delivery", delivery.to_owned()),
        ("X-Hub-Signature-256", "sha256=00".to_owned()),
        ("Content-Type", "application/json".to_owned()),
    ]
}

#[tokio::test]
async fn bodies_past_the_memory_budget_get_503_with_retry_after_and_the_budget_comes_back() {
    let redis = RedisServer::start().unwrap();
    let receiver = Receiver::start(
        &redis,
        ReceiverOptions {
            body_memory: 1024 * 1024,
            ..ReceiverOptions::default()
        },
    )
    .await
    .unwrap();
    // A declared 2 MiB body does not fit in 1 MiB: refused before a byte is read.
    let headers = unsigned_headers("budget-1");
    let refs: Vec<(&str, &str)> = headers.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let response = stalled_request(
        receiver.addr,
        "/webhook",
        &refs,
        2 * 1024 * 1024,
        b"{",
        Duration::from_secs(10),
    )
    .await
    .unwrap();
    assert_eq!(response.status, 503, "{}", response.text());
    assert_eq!(
        response.json()["error"],
        "too many request bodies in flight, retry later"
    );
    assert_eq!(
        response.headers.get("retry-after").map(String::as_str),
        Some("5")
    );
    // A chunked body is charged as it arrives: the second 768 KiB chunk does not fit.
    let body = chunked(&vec![b' '; 2 * 768 * 1024], 768 * 1024);
    let mut headers = unsigned_headers("budget-2");
    headers.push(("Transfer-Encoding", "chunked".to_owned()));
    let refs: Vec<(&str, &str)> = headers.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let response = request(receiver.addr, "POST", "/webhook", &refs, &body)
        .await
        .unwrap();
    assert_eq!(response.status, 503, "{}", response.text());
    // Refusals gave their reservations back: a delivery that fits is stored.
    assert_eq!(receiver.state.budget.bytes_in_use(), 0);
    let response = receiver
        .deliver("pull_request", "budget-3", &pr_opened(), SECRET)
        .await
        .unwrap();
    assert_eq!(response.status, 202);
    assert_eq!(entries(&redis).await.len(), 1);
}

#[tokio::test]
async fn bodies_past_the_concurrency_cap_get_503() {
    let redis = RedisServer::start().unwrap();
    let receiver = Receiver::start(
        &redis,
        ReceiverOptions {
            max_bodies: 1,
            body_timeout: Duration::from_secs(2),
            ..ReceiverOptions::default()
        },
    )
    .await
    .unwrap();
    // One body being read (slowly) takes the only slot.
    let addr = receiver.addr;
    let slow = tokio::spawn(async move {
        let headers = unsigned_headers("slow-1");
        let refs: Vec<(&str, &str)> = headers.iter().map(|(k, v)| (*k, v.as_str())).collect();
        stalled_request(addr, "/webhook", &refs, 1000, b"{", Duration::from_secs(10)).await
    });
    let budget = std::sync::Arc::clone(&receiver.state.budget);
    gatehouse_tests::ingest::eventually("the slow body holds the slot", || {
        let budget = std::sync::Arc::clone(&budget);
        async move { budget.bodies_in_use() == 1 }
    })
    .await
    .unwrap();
    let second = receiver
        .deliver("pull_request", "while-slow", &pr_opened(), SECRET)
        .await
        .unwrap();
    assert_eq!(second.status, 503, "{}", second.text());
    assert_eq!(
        second.json()["error"],
        "too many request bodies in flight, retry later"
    );
    // The slow body times out and frees the slot.
    assert_eq!(slow.await.unwrap().unwrap().status, 408);
    let response = receiver
        .deliver("pull_request", "after-slow", &pr_opened(), SECRET)
        .await
        .unwrap();
    assert_eq!(response.status, 202);
}

#[tokio::test]
async fn slow_headers_and_idle_keep_alive_connections_are_closed() {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let redis = RedisServer::start().unwrap();
    let receiver = Receiver::start(
        &redis,
        ReceiverOptions {
            limits: gatehouse_webhook::serve::Limits {
                header_timeout: Duration::from_secs(1),
                ..gatehouse_webhook::serve::Limits::default()
            },
            ..ReceiverOptions::default()
        },
    )
    .await
    .unwrap();
    // A client trickling its headers and never finishing them is cut off.
    let started = std::time::Instant::now();
    let mut slow = tokio::net::TcpStream::connect(receiver.addr).await.unwrap();
    slow.write_all(b"POST /webhook HTTP/1.1\r\nHost: x\r\n")
        .await
        .unwrap();
    let mut rest = Vec::new();
    // Well below the 10 s default: the configured 1 s is what cuts it off.
    tokio::time::timeout(Duration::from_secs(4), slow.read_to_end(&mut rest))
        .await
        .expect("closed by the header timeout")
        .unwrap();
    assert!(
        started.elapsed() >= Duration::from_millis(900),
        "not before the timeout"
    );
    // A keep-alive connection left idle after its request is closed too.
    let mut idle = tokio::net::TcpStream::connect(receiver.addr).await.unwrap();
    idle.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let mut answer = Vec::new();
    let closed = tokio::time::timeout(Duration::from_secs(4), idle.read_to_end(&mut answer))
        .await
        .expect("idle connection closed");
    closed.unwrap();
    let text = String::from_utf8_lossy(&answer);
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
}

#[tokio::test]
async fn connections_past_the_limit_wait_until_one_closes() {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let redis = RedisServer::start().unwrap();
    let receiver = Receiver::start(
        &redis,
        ReceiverOptions {
            limits: gatehouse_webhook::serve::Limits {
                max_connections: 1,
                ..gatehouse_webhook::serve::Limits::default()
            },
            ..ReceiverOptions::default()
        },
    )
    .await
    .unwrap();
    let holder = tokio::net::TcpStream::connect(receiver.addr).await.unwrap();
    // Give the server the moment it needs to accept the holder.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut waiting = tokio::net::TcpStream::connect(receiver.addr).await.unwrap();
    waiting
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut answer = Vec::new();
    let early =
        tokio::time::timeout(Duration::from_millis(500), waiting.read_to_end(&mut answer)).await;
    assert!(early.is_err(), "served past the limit: {answer:?}");
    drop(holder);
    tokio::time::timeout(Duration::from_secs(10), waiting.read_to_end(&mut answer))
        .await
        .expect("served once the holder left")
        .unwrap();
    assert!(String::from_utf8_lossy(&answer).starts_with("HTTP/1.1 200"));
}

/// Delivers `payload` signed with `SECRET`, in chunked transfer encoding (no length), `size`
/// bytes per chunk.
async fn deliver_chunked(
    receiver: &Receiver,
    delivery: &str,
    payload: &[u8],
    size: usize,
) -> gatehouse_tests::http::HttpResponse {
    let signature = gatehouse_webhook::signature::sign(SECRET.as_bytes(), payload);
    let headers = [
        ("X-GitHub-Event", "pull_request"),
        ("X-GitHub-Delivery", delivery),
        ("X-Hub-Signature-256", signature.as_str()),
        ("Content-Type", "application/json"),
        ("Transfer-Encoding", "chunked"),
    ];
    request(
        receiver.addr,
        "POST",
        "/webhook",
        &headers,
        &chunked(payload, size),
    )
    .await
    .unwrap()
}

/// `payload` in chunked transfer encoding, `size` bytes per chunk.
fn chunked(payload: &[u8], size: usize) -> Vec<u8> {
    let mut body = Vec::new();
    for chunk in payload.chunks(size) {
        body.extend_from_slice(format!("{:x}\r\n", chunk.len()).as_bytes());
        body.extend_from_slice(chunk);
        body.extend_from_slice(b"\r\n");
    }
    body.extend_from_slice(b"0\r\n\r\n");
    body
}

/// The pull_request.opened payload followed by whitespace up to `size` bytes (still the same
/// JSON document).
fn padded_payload(size: usize) -> Vec<u8> {
    let mut payload = pr_opened();
    payload.resize(size, b' ');
    payload
}

#[tokio::test]
async fn a_chunked_body_is_charged_for_the_memory_it_takes_growth_included() {
    let redis = RedisServer::start().unwrap();
    let receiver = Receiver::start(
        &redis,
        ReceiverOptions {
            body_memory: 1024 * 1024,
            ..ReceiverOptions::default()
        },
    )
    .await
    .unwrap();
    let payload = padded_payload(700 * 1024);
    // Declared, 700 KiB is allocated once and fits in 1 MiB.
    let response = receiver
        .deliver("pull_request", "declared-700k", &payload, SECRET)
        .await
        .unwrap();
    assert_eq!(response.status, 202, "{}", response.text());
    // Chunked, the buffer doubles: growing from 512 KiB to 1 MiB holds both allocations at
    // once, 1.5 MiB, past the budget, although the data is only 700 KiB.
    let response = deliver_chunked(&receiver, "chunked-700k", &payload, 100 * 1024).await;
    assert_eq!(response.status, 503, "{}", response.text());
    assert_eq!(receiver.state.budget.bytes_in_use(), 0);
    assert_eq!(entries(&redis).await.len(), 1);
}

#[tokio::test]
async fn large_bodies_declared_or_chunked_are_stored_byte_for_byte() {
    let (redis, receiver) = started().await;
    // Above 1 MiB a body lives in its own memory mapping; chunked ones grow from the heap into
    // one and from one mapping into a larger one.
    let payload = padded_payload(3 * 1024 * 1024 + 17);
    let response = receiver
        .deliver("pull_request", "large-declared", &payload, SECRET)
        .await
        .unwrap();
    assert_eq!(response.status, 202, "{}", response.text());
    let response = deliver_chunked(&receiver, "large-chunked", &payload, 300 * 1024).await;
    assert_eq!(response.status, 202, "{}", response.text());
    let stored = entries(&redis).await;
    assert_eq!(stored.len(), 2);
    for entry in &stored {
        assert_eq!(
            gatehouse_webhook::events::payload(entry).unwrap(),
            payload,
            "{}",
            entry.delivery_id
        );
    }
    assert_eq!(receiver.state.budget.bytes_in_use(), 0);
}
