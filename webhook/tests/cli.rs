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
fn durations_too_large_to_compute_with_are_refused_not_wrapped() {
    // 2^64 / 3600 + 1 hours would wrap to a tiny TTL if multiplied unchecked.
    assert_one_line_error(
        &[
            "--role",
            "ingest",
            "--redis-url",
            "redis://127.0.0.1:1/0",
            "--dedup-ttl-hours",
            "5124095576030432",
        ],
        "--dedup-ttl-hours is too large",
    );
    assert_one_line_error(
        &[
            "--role",
            "ingest",
            "--redis-url",
            "redis://127.0.0.1:1/0",
            "--retry-window-hours",
            "18446744073709551615",
        ],
        "--retry-window-hours is too large",
    );
    // A semaphore of this many permits panics when built: refused at start instead.
    for flag in ["--max-connections", "--max-concurrent-bodies"] {
        assert_one_line_error(
            &[
                "--role",
                "ingest",
                "--redis-url",
                "redis://127.0.0.1:1/0",
                flag,
                "18446744073709551615",
            ],
            &format!("{flag} is too large"),
        );
    }
}

#[test]
fn an_entry_deadline_must_leave_the_entry_with_its_consumer() {
    assert_one_line_error(
        &[
            "--role",
            "ingest",
            "--redis-url",
            "redis://127.0.0.1:1/0",
            "--claim-idle-seconds",
            "20",
            "--entry-deadline-seconds",
            "20",
        ],
        "--entry-deadline-seconds (20) must be below --claim-idle-seconds (20)",
    );
}

#[test]
fn redis_is_required_for_the_roles_and_the_dead_letter_commands() {
    assert_one_line_error(
        &["--role", "ingest"],
        "--redis-url (GATEHOUSE_REDIS_URL) is required",
    );
    assert_one_line_error(
        &["dead-letters", "list"],
        "--redis-url (GATEHOUSE_REDIS_URL) is required",
    );
}

/// Every flag and its environment variable, as docs/webhook.md documents them.
const FLAGS: [(&str, &str); 26] = [
    ("--role", "GATEHOUSE_ROLE"),
    ("--listen", "GATEHOUSE_LISTEN"),
    ("--metrics-listen", "GATEHOUSE_METRICS_LISTEN"),
    ("--redis-url", "GATEHOUSE_REDIS_URL"),
    ("--redis-password-file", "GATEHOUSE_REDIS_PASSWORD_FILE"),
    ("--webhook-secret-file", "GATEHOUSE_WEBHOOK_SECRET_FILE"),
    ("--max-backlog", "GATEHOUSE_MAX_BACKLOG"),
    ("--dedup-ttl-hours", "GATEHOUSE_DEDUP_TTL_HOURS"),
    ("--body-timeout-seconds", "GATEHOUSE_BODY_TIMEOUT_SECONDS"),
    (
        "--header-timeout-seconds",
        "GATEHOUSE_HEADER_TIMEOUT_SECONDS",
    ),
    ("--max-connections", "GATEHOUSE_MAX_CONNECTIONS"),
    ("--body-memory-mib", "GATEHOUSE_BODY_MEMORY_MIB"),
    ("--max-concurrent-bodies", "GATEHOUSE_MAX_CONCURRENT_BODIES"),
    ("--secret-check-seconds", "GATEHOUSE_SECRET_CHECK_SECONDS"),
    ("--drain-seconds", "GATEHOUSE_DRAIN_SECONDS"),
    ("--consumer-name", "GATEHOUSE_CONSUMER_NAME"),
    ("--claim-idle-seconds", "GATEHOUSE_CLAIM_IDLE_SECONDS"),
    ("--max-backoff-seconds", "GATEHOUSE_MAX_BACKOFF_SECONDS"),
    ("--retry-window-hours", "GATEHOUSE_RETRY_WINDOW_HOURS"),
    (
        "--entry-deadline-seconds",
        "GATEHOUSE_ENTRY_DEADLINE_SECONDS",
    ),
    ("--max-trigger-age-days", "GATEHOUSE_MAX_TRIGGER_AGE_DAYS"),
    ("--policy-namespace", "GATEHOUSE_POLICY_NAMESPACE"),
    ("--github-app-id", "GATEHOUSE_GITHUB_APP_ID"),
    (
        "--github-private-key-file",
        "GATEHOUSE_GITHUB_PRIVATE_KEY_FILE",
    ),
    ("--github-api-url", "GATEHOUSE_GITHUB_API_URL"),
    ("--log-format", "GATEHOUSE_LOG_FORMAT"),
];

#[test]
fn help_and_the_docs_name_every_flag_and_its_environment_variable() {
    let (code, stdout, _) = webhook(&["--help"]);
    assert_eq!(code, 0);
    let docs = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/webhook.md"))
        .unwrap();
    for (flag, env) in FLAGS {
        let line = stdout
            .lines()
            .position(|l| l.trim_start().starts_with(&format!("{flag} ")))
            .unwrap_or_else(|| panic!("{flag} missing from --help:\n{stdout}"));
        // clap prints the flag, its help, then "[env: ...]", before the next flag.
        let paragraph: String = std::iter::once(stdout.lines().nth(line).unwrap_or(""))
            .chain(stdout.lines().skip(line + 1).take_while(|l| {
                let l = l.trim_start();
                !(l.starts_with("--") || l.starts_with("-h,") || l.starts_with("-V,"))
            }))
            .collect();
        assert!(
            paragraph.contains(&format!("[env: {env}=")),
            "{flag}: {env} missing: {paragraph}"
        );
        assert!(
            docs.contains(&format!("| `{flag}")) && docs.contains(&format!("`{env}`")),
            "{flag} / {env} missing from docs/webhook.md"
        );
    }
    // No flag beyond the list (a new flag must be added here and to the docs).
    let flags = stdout
        .lines()
        .filter(|l| {
            l.trim_start().starts_with("--") && !l.contains("--help") && !l.contains("--version")
        })
        .count();
    assert_eq!(flags, FLAGS.len(), "{stdout}");
    for command in ["dead-letters list", "dead-letters replay"] {
        assert!(
            docs.contains(command),
            "{command} missing from docs/webhook.md"
        );
    }
}

#[test]
fn a_policy_namespace_that_is_not_a_namespace_name_is_refused() {
    for bad in ["Team-A", "team_a", "a,,b", "a-"] {
        assert_one_line_error(
            &[
                "--role",
                "ingest",
                "--redis-url",
                "redis://127.0.0.1:1/0",
                "--policy-namespace",
                bad,
            ],
            "is not a namespace name",
        );
    }
}
