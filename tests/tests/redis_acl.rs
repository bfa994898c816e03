//! The Helm chart's Redis ACL users (`charts/gatehouse/files/redis-acl-rules.conf`) against a
//! real `redis-server`: the scan pods' user publishes a result through the agent's own code and
//! binary and can do nothing else. (The webhook's and operator's user is exercised by the whole
//! path and results tests, which run with these users: `RedisOptions { acl: true }`.)

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::process::Command;

use gatehouse_crds::stream::{RESULTS_DEAD_STREAM, RESULTS_STREAM};
use gatehouse_tests::redis_acl::{SCAN_USER, USER, password};
use gatehouse_tests::{RedisOptions, RedisServer};

const UID: &str = "5f0c7a4e-1b2d-4c3e-8f9a-0b1c2d3e4f50";
const SHA: &str = "ec26c3e57ca3a959ca5aad62de7213c562f8c821";

fn redis_with_acl() -> RedisServer {
    RedisServer::start_with(RedisOptions {
        acl: true,
        ..RedisOptions::default()
    })
    .unwrap()
}

async fn connect(url: &str) -> redis::aio::MultiplexedConnection {
    redis::Client::open(url)
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap()
}

async fn results_length(redis: &RedisServer) -> u64 {
    let mut conn = connect(&redis.url()).await;
    redis::cmd("XLEN")
        .arg(RESULTS_STREAM)
        .query_async(&mut conn)
        .await
        .unwrap()
}

/// A result the agent's report code makes from a real KICS report, signed with the request's
/// key.
fn entry() -> gatehouse_crds::stream::ResultEntry {
    let out = tempfile::tempdir().unwrap();
    std::fs::copy(
        format!(
            "{}/fixtures/kics/kics-v2_critical-2-findings-cicd_e2e089.json",
            env!("CARGO_MANIFEST_DIR")
        ),
        out.path().join("results.json"),
    )
    .unwrap();
    let read = gatehouse_operator::agent::report::read_output(
        gatehouse_crds::scanpolicy::ScannerKind::Kics,
        0,
        out.path(),
        "/workspace/src",
    );
    let result = gatehouse_operator::agent::report::result(
        &gatehouse_operator::agent::report::Identity {
            namespace: "gatehouse-scans".to_owned(),
            scan_request: "hello-world-pr2-ec26c3e-016643a9".to_owned(),
            uid: UID.to_owned(),
            scanner: "kics".to_owned(),
            head_sha: SHA.to_owned(),
            attempt: 1,
        },
        "0123456789abcdef0123456789abcdef".to_owned(),
        read,
        None,
        20_000,
    );
    let key = gatehouse_operator::keys::MasterKey::from_file_contents(
        gatehouse_tests::operator::MASTER_KEY,
    )
    .unwrap()
    .scan_key(UID);
    gatehouse_operator::agent::report::entry(&result, &key).unwrap()
}

#[tokio::test]
async fn the_scan_user_publishes_a_result_with_the_agents_own_code() {
    let redis = redis_with_acl();
    let client = redis::Client::open(redis.url_as(SCAN_USER)).unwrap();
    let id = gatehouse_operator::agent::report::publish(&client, &entry(), 1)
        .await
        .unwrap();
    assert!(id.contains('-'), "{id}");
    assert_eq!(results_length(&redis).await, 1);
}

#[tokio::test]
async fn the_agent_binary_publishes_as_the_user_in_its_url_with_the_password_from_its_file() {
    let redis = redis_with_acl();
    let dir = tempfile::tempdir().unwrap();
    let out_dir = dir.path().join("out");
    std::fs::create_dir(&out_dir).unwrap();
    std::fs::copy(
        format!(
            "{}/fixtures/kics/kics-v2_mixed-17-findings-terraform_e2e086.json",
            env!("CARGO_MANIFEST_DIR")
        ),
        out_dir.join("results.json"),
    )
    .unwrap();
    let master = gatehouse_operator::keys::MasterKey::from_file_contents(
        gatehouse_tests::operator::MASTER_KEY,
    )
    .unwrap();
    let key_file = dir.path().join("signing-key");
    std::fs::write(&key_file, master.scan_key(UID).to_hex()).unwrap();
    // As the per-scan Secret mounts it: the password alone, with a trailing newline.
    let password_file = dir.path().join("redis-password");
    std::fs::write(&password_file, format!("{}\n", password(SCAN_USER))).unwrap();
    let report = |password_file: &std::path::Path| {
        Command::new(gatehouse_tests::binaries::agent())
            .args(["report", "--scanner", "kics", "--scanner-name", "kics"])
            .args([
                "--scan-request",
                "gatehouse-scans/hello-world-pr2-ec26c3e-016643a9",
            ])
            .args(["--uid", UID, "--attempt", "1", "--sha", SHA])
            .arg("--output-dir")
            .arg(&out_dir)
            .args(["--source-dir", "/path/e2e/fixtures/samples"])
            .arg("--key-file")
            .arg(&key_file)
            .args([
                "--redis-url",
                &format!("redis://{SCAN_USER}@127.0.0.1:{}/0", redis.port()),
            ])
            .arg("--redis-password-file")
            .arg(password_file)
            .output()
            .unwrap()
    };
    let out = report(&password_file);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert_eq!(results_length(&redis).await, 1);
}

#[tokio::test]
async fn the_scan_user_may_not_read_delete_overwrite_or_administer_anything() {
    let redis = redis_with_acl();
    // Something worth protecting: a result and a dead letter, written by the operator's user.
    let mut gatehouse = connect(&redis.url()).await;
    let _: String = redis::cmd("XADD")
        .arg(RESULTS_STREAM)
        .arg("*")
        .arg(&["uid", UID][..])
        .query_async(&mut gatehouse)
        .await
        .unwrap();
    let _: () = redis::cmd("XGROUP")
        .arg(&["CREATE", RESULTS_STREAM, "report", "0"][..])
        .query_async(&mut gatehouse)
        .await
        .unwrap();
    let _: () = redis::cmd("SET")
        .arg("{gatehouse-results}:baseline:1:abc:kics")
        .arg("kept")
        .query_async(&mut gatehouse)
        .await
        .unwrap();

    let mut scan = connect(&redis.url_as(SCAN_USER)).await;
    let baseline = "{gatehouse-results}:baseline:1:abc:kics";
    let refused: &[&[&str]] = &[
        &["XRANGE", RESULTS_STREAM, "-", "+"],
        &[
            "XREADGROUP",
            "GROUP",
            "report",
            "x",
            "STREAMS",
            RESULTS_STREAM,
            ">",
        ],
        &["XREAD", "STREAMS", RESULTS_STREAM, "0"],
        &["DEL", RESULTS_STREAM],
        &["XDEL", RESULTS_STREAM, "0-1"],
        &["XTRIM", RESULTS_STREAM, "MAXLEN", "0"],
        &["SET", baseline, "forged"],
        &["GET", baseline],
        &["KEYS", "*"],
        &["XADD", RESULTS_DEAD_STREAM, "*", "uid", UID],
        &["XADD", "{gatehouse}:events", "*", "delivery", "x"],
        &["FLUSHALL"],
        &["CONFIG", "GET", "*"],
        &["CONFIG", "SET", "maxmemory", "1"],
        &[
            "EVAL",
            "return redis.call('DEL', KEYS[1])",
            "1",
            RESULTS_STREAM,
        ],
        &["ACL", "SETUSER", SCAN_USER, "+@all"],
        &["PUBLISH", "channel", "x"],
    ];
    for words in refused {
        let what = words.join(" ");
        let mut command = redis::cmd(words[0]);
        command.arg(&words[1..]);
        let error = command
            .query_async::<redis::Value>(&mut scan)
            .await
            .expect_err(&what);
        assert!(
            error.to_string().contains("NOPERM") || error.code() == Some("NOPERM"),
            "{what}: {error}"
        );
    }
    // Nothing changed.
    assert_eq!(results_length(&redis).await, 1);
    let kept: String = redis::cmd("GET")
        .arg("{gatehouse-results}:baseline:1:abc:kics")
        .query_async(&mut gatehouse)
        .await
        .unwrap();
    assert_eq!(kept, "kept");
    // The default user is off: no password, no access.
    let anonymous = redis::Client::open(format!("redis://127.0.0.1:{}/0", redis.port()))
        .unwrap()
        .get_multiplexed_async_connection()
        .await;
    let denied = match anonymous {
        Err(_) => true,
        Ok(mut conn) => redis::cmd("XLEN")
            .arg(RESULTS_STREAM)
            .query_async::<u64>(&mut conn)
            .await
            .is_err(),
    };
    assert!(denied, "the default user must be off");
    assert_eq!(USER, "gatehouse");
}
