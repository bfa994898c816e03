//! Misconfiguration stops `gatehouse-webhook` at start with one clear line and exit code 2,
//! before it listens on anything; `--help` documents every flag with its environment variable.

// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::process::Command;

fn webhook(args: &[&str]) -> (i32, String, String) {
    let output = Command::new(env!("CARGO_BIN_EXE_gatehouse-webhook"))
        .args(args)
        .env_clear()
        .output()
        .unwrap();
    (
        output.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

fn assert_one_line_error(args: &[&str], expected: &str) {
    let (code, _, stderr) = webhook(args);
    assert_eq!(code, 2, "{stderr}");
    assert_eq!(
        stderr.lines().count(),
        1,
        "one line expected, got:\n{stderr}"
    );
    assert!(stderr.starts_with("gatehouse-webhook: "), "{stderr}");
    assert!(
        stderr.contains(expected),
        "expected {expected:?} in {stderr:?}"
    );
}

#[test]
fn a_missing_secret_file_fails_at_start_naming_the_path() {
    assert_one_line_error(
        &[
            "--role",
            "receive",
            "--redis-url",
            "redis://127.0.0.1:1/0",
            "--webhook-secret-file",
            "/nonexistent/gatehouse/secret",
        ],
        "failed to read webhook secret file /nonexistent/gatehouse/secret",
    );
}

#[test]
fn the_receive_role_needs_a_secret_file() {
    assert_one_line_error(
        &["--role", "receive", "--redis-url", "redis://127.0.0.1:1/0"],
        "--webhook-secret-file (GATEHOUSE_WEBHOOK_SECRET_FILE) is required for role receive",
    );
}

#[test]
fn a_bad_redis_url_fails_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let secret = dir.path().join("secret");
    std::fs::write(&secret, "s3cret\n").unwrap();
    assert_one_line_error(
        &[
            "--role",
            "receive",
            "--redis-url",
            "http://not-redis",
            "--webhook-secret-file",
            secret.to_str().unwrap(),
        ],
        "invalid --redis-url",
    );
}

#[test]
fn an_empty_secret_file_fails_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let secret = dir.path().join("secret");
    std::fs::write(&secret, "\n  \n").unwrap();
    assert_one_line_error(
        &[
            "--role",
            "receive",
            "--redis-url",
            "redis://127.0.0.1:1/0",
            "--webhook-secret-file",
            secret.to_str().unwrap(),
        ],
        "contain no secret",
    );
}

#[test]
fn too_short_a_dedup_ttl_is_refused() {
    assert_one_line_error(
        &[
            "--role",
            "ingest",
            "--redis-url",
            "redis://127.0.0.1:1/0",
            "--dedup-ttl-hours",
            "1",
        ],
        "--dedup-ttl-hours must be at least 72",
    );
}

#[test]
fn help_names_every_flag_and_its_environment_variable() {
    let (code, stdout, _) = webhook(&["--help"]);
    assert_eq!(code, 0);
    for (flag, env) in [
        ("--role", "GATEHOUSE_ROLE"),
        ("--listen", "GATEHOUSE_LISTEN"),
        ("--redis-url", "GATEHOUSE_REDIS_URL"),
        ("--webhook-secret-file", "GATEHOUSE_WEBHOOK_SECRET_FILE"),
        ("--metrics-listen", "GATEHOUSE_METRICS_LISTEN"),
        ("--max-backlog", "GATEHOUSE_MAX_BACKLOG"),
        ("--claim-idle-seconds", "GATEHOUSE_CLAIM_IDLE_SECONDS"),
    ] {
        assert!(
            stdout.contains(flag) && stdout.contains(env),
            "{flag} / {env} missing from --help"
        );
    }
}
