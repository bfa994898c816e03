//! `gatehouse-operator` as a process, the way a GitOps pipeline or a person runs it: the offline
//! tools `check-policy` (one line per problem, exit 0/1/2) and `preview` (the Secret without
//! values and the Jobs the operator would create), `run` on no arguments, and one clear line when
//! `run` cannot start.
//!
//! `cargo test --workspace` builds the binary (the operator package has an integration test of
//! its own, `operator/tests/cli.rs`); a missing or stale binary fails the test, saying so.

// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::{Path, PathBuf};
use std::process::Command;

fn binary() -> PathBuf {
    gatehouse_tests::binaries::operator()
}

fn samples() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../deploy/samples")
}

fn sample(name: &str) -> String {
    std::fs::read_to_string(samples().join(name)).unwrap()
}

struct Output {
    code: i32,
    stdout: String,
    stderr: String,
}

fn operator(args: &[&str]) -> Output {
    let output = Command::new(binary())
        .args(args)
        .env_clear()
        .output()
        .unwrap();
    Output {
        code: output.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}

/// Writes `text` to `name` in `dir` and runs `check-policy` on it.
fn check(dir: &Path, name: &str, text: &str) -> (Output, String) {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    let path = path.display().to_string();
    (operator(&["check-policy", &path]), path)
}

/// The KICS sample with `from` replaced by `to` (which must occur).
fn kics_sample_with(from: &str, to: &str) -> String {
    let text = sample("scanpolicy-kics.yaml");
    assert!(text.contains(from), "{from:?} not in the sample");
    text.replace(from, to)
}

fn assert_one_problem(output: &Output, file: &str, field: &str, message: &str) {
    assert_eq!(output.code, 1, "{}{}", output.stdout, output.stderr);
    assert_eq!(
        output.stdout,
        format!("{file}:1: policy gatehouse-scans/acme-iac: {field}: {message}\n"),
        "{}",
        output.stderr
    );
}

#[test]
fn the_sample_policies_are_valid() {
    let kics = samples().join("scanpolicy-kics.yaml");
    let both = samples().join("scanpolicy-kics-blackduck.yaml");
    let output = operator(&[
        "check-policy",
        kics.to_str().unwrap(),
        both.to_str().unwrap(),
    ]);
    assert_eq!(output.code, 0, "{}{}", output.stdout, output.stderr);
    assert_eq!(
        output.stdout,
        format!(
            "{}: ok (1 policy)\n{}: ok (1 policy)\n",
            kics.display(),
            both.display()
        )
    );
    assert_eq!(output.stderr, "");
}

#[test]
fn an_unknown_field_is_a_problem_as_strict_validation_says() {
    let dir = tempfile::tempdir().unwrap();
    let (output, path) = check(
        dir.path(),
        "unknown.yaml",
        &kics_sample_with(
            "      image:",
            "      imagePullPolicy: Always\n      image:",
        ),
    );
    assert_one_problem(
        &output,
        &path,
        "spec.scanners[0].imagePullPolicy",
        "unknown field",
    );
}

#[test]
fn a_glob_that_does_not_compile_is_named_with_its_index() {
    let dir = tempfile::tempdir().unwrap();
    let (output, path) = check(
        dir.path(),
        "glob.yaml",
        &kics_sample_with("\"Codertocat/*\"", "\"Codertocat/[abc\""),
    );
    assert_one_problem(
        &output,
        &path,
        "spec.repositories[1]",
        "invalid glob \"Codertocat/[abc\": unclosed character class; missing ']'",
    );
}

#[test]
fn an_image_without_a_digest_is_refused_once() {
    let dir = tempfile::tempdir().unwrap();
    let (output, path) = check(
        dir.path(),
        "tag.yaml",
        &kics_sample_with(
            "kics:v2.1.19@sha256:7b0a4d750acd491942ce9de52c1183fbf4451c1c936780ec2cfacd2650e7d84c",
            "kics:v2.1.19",
        ),
    );
    assert_one_problem(
        &output,
        &path,
        "spec.scanners[0].image",
        "image must be pinned by digest: name[:tag]@sha256:<64 hex digits>",
    );
}

#[test]
fn a_duplicate_scanner_name_breaks_the_cel_rule() {
    let dir = tempfile::tempdir().unwrap();
    let scanner = "    - name: kics\n      kind: kics\n      image: docker.io/checkmarx/kics:v2.1.19@sha256:7b0a4d750acd491942ce9de52c1183fbf4451c1c936780ec2cfacd2650e7d84c\n";
    let text = format!("{}{scanner}", sample("scanpolicy-kics.yaml"));
    let (output, path) = check(dir.path(), "duplicate.yaml", &text);
    assert_one_problem(
        &output,
        &path,
        "spec.scanners",
        "scanner names must be unique within a policy",
    );
}

#[test]
fn a_blackduck_scanner_without_its_settings_breaks_the_cel_rule() {
    let dir = tempfile::tempdir().unwrap();
    let (output, path) = check(
        dir.path(),
        "blackduck.yaml",
        &kics_sample_with("      kind: kics", "      kind: blackduck"),
    );
    assert_one_problem(
        &output,
        &path,
        "spec.scanners[0]",
        "kind blackduck needs blackduck settings (url and credentialsSecretRef)",
    );
}

#[test]
fn other_kinds_are_skipped_with_a_note_and_problems_name_their_document() {
    let dir = tempfile::tempdir().unwrap();
    let text = format!(
        "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: gatehouse-scans\n---\n{}",
        kics_sample_with("failOn: high", "failOn: severe")
    );
    let (output, path) = check(dir.path(), "bundle.yaml", &text);
    assert_eq!(output.code, 1, "{}{}", output.stdout, output.stderr);
    assert_eq!(
        output.stdout.lines().next().unwrap(),
        format!(
            "{path}:2: policy gatehouse-scans/acme-iac: spec.scanners[0].failOn: unsupported value \"severe\": must be one of \"critical\", \"high\", \"medium\", \"low\", \"info\", \"never\""
        )
    );
    assert_eq!(
        output.stderr,
        format!("{path}:1: note: skipped v1/Namespace <none>/gatehouse-scans: not a ScanPolicy\n")
    );
}

#[test]
fn a_yaml_syntax_error_exits_2_with_its_line_and_column() {
    let dir = tempfile::tempdir().unwrap();
    let (output, path) = check(
        dir.path(),
        "syntax.yaml",
        &kics_sample_with("  repositories:\n", "  repositories: [\n"),
    );
    assert_eq!(output.code, 2, "{}{}", output.stdout, output.stderr);
    assert_eq!(output.stdout, "");
    assert_eq!(output.stderr.lines().count(), 1, "{}", output.stderr);
    assert!(
        output
            .stderr
            .starts_with(&format!("failed to parse {path} as YAML: ")),
        "{}",
        output.stderr
    );
    assert!(output.stderr.contains(" at line "), "{}", output.stderr);
    assert!(output.stderr.contains(" column "), "{}", output.stderr);
}

#[test]
fn an_unreadable_file_exits_2_and_the_other_files_are_still_checked() {
    let kics = samples().join("scanpolicy-kics.yaml");
    let output = operator(&[
        "check-policy",
        "/nonexistent/policy.yaml",
        kics.to_str().unwrap(),
    ]);
    assert_eq!(output.code, 2);
    assert_eq!(
        output.stderr,
        "failed to read /nonexistent/policy.yaml: No such file or directory (os error 2)\n"
    );
    assert_eq!(
        output.stdout,
        format!("{}: ok (1 policy)\n", kics.display())
    );
}

fn preview(policy: &Path, request: &Path) -> Output {
    operator(&[
        "preview",
        "--policy",
        policy.to_str().unwrap(),
        "--request",
        request.to_str().unwrap(),
    ])
}

fn documents(yaml: &str) -> Vec<serde_json::Value> {
    serde_yaml::Deserializer::from_str(yaml)
        .map(|d| serde::Deserialize::deserialize(d).unwrap())
        .collect()
}

#[test]
fn preview_prints_the_secret_without_values_and_the_kics_job() {
    let output = preview(
        &samples().join("scanpolicy-kics.yaml"),
        &samples().join("scanrequest.yaml"),
    );
    assert_eq!(output.code, 0, "{}", output.stderr);
    assert_eq!(output.stderr, "");
    // The sample has no UID: the placeholder is said at the top.
    let comments: Vec<&str> = output
        .stdout
        .lines()
        .take_while(|l| l.starts_with('#'))
        .collect();
    assert!(
        comments
            .iter()
            .any(|l| l.contains("00000000-0000-0000-0000-000000000000")),
        "{comments:?}"
    );

    let docs = documents(&output.stdout);
    assert_eq!(docs.len(), 2, "{}", output.stdout);
    let secret = &docs[0];
    assert_eq!(secret["kind"], "Secret");
    assert_eq!(
        secret["metadata"]["name"],
        "hello-world-pr2-ec26c3e-016643a9-scan"
    );
    let data = secret["data"].as_object().unwrap();
    assert_eq!(
        data.keys().map(String::as_str).collect::<Vec<_>>(),
        ["kics.config", "signing-key", "token"]
    );
    for (key, value) in data {
        assert!(
            value.as_str().unwrap().starts_with("<redacted: "),
            "{key}: {value}"
        );
    }
    assert!(secret.get("stringData").is_none());

    let job = &docs[1];
    assert_eq!(job["kind"], "Job");
    assert_eq!(
        job["metadata"]["name"],
        "hello-world-pr2-ec26c3e-016643a9-kics"
    );
    assert_eq!(job["spec"]["backoffLimit"], 0);
    assert_eq!(job["spec"]["activeDeadlineSeconds"], 900);
    assert_eq!(job["spec"]["ttlSecondsAfterFinished"], 3600);
    assert_eq!(
        job["metadata"]["ownerReferences"][0]["uid"],
        "00000000-0000-0000-0000-000000000000"
    );
    let pod = &job["spec"]["template"]["spec"];
    assert_eq!(pod["automountServiceAccountToken"], false);
    assert_eq!(
        pod["initContainers"][1]["image"],
        "docker.io/checkmarx/kics:v2.1.19@sha256:7b0a4d750acd491942ce9de52c1183fbf4451c1c936780ec2cfacd2650e7d84c"
    );
}

#[test]
fn preview_takes_the_build_settings_from_its_flags() {
    let policy = samples().join("scanpolicy-kics.yaml");
    let request = samples().join("scanrequest.yaml");
    let output = operator(&[
        "preview",
        "--policy",
        policy.to_str().unwrap(),
        "--request",
        request.to_str().unwrap(),
        "--agent-image",
        "registry.example/agent@sha256:1111111111111111111111111111111111111111111111111111111111111111",
        "--job-ttl-seconds",
        "60",
        "--results-redis-url",
        "redis://results:6379",
    ]);
    assert_eq!(output.code, 0, "{}", output.stderr);
    let job = &documents(&output.stdout)[1];
    assert_eq!(job["spec"]["ttlSecondsAfterFinished"], 60);
    let pod = &job["spec"]["template"]["spec"];
    assert_eq!(
        pod["initContainers"][0]["image"],
        "registry.example/agent@sha256:1111111111111111111111111111111111111111111111111111111111111111"
    );
    let report_args: Vec<&str> = pod["containers"][0]["args"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap())
        .collect();
    let at = report_args
        .iter()
        .position(|a| *a == "--redis-url")
        .unwrap();
    assert_eq!(report_args[at + 1], "redis://results:6379");
}

fn assert_one_line_error(output: &Output, expected: &str) {
    assert_eq!(output.code, 1, "{}", output.stderr);
    assert_eq!(output.stdout, "");
    assert_eq!(output.stderr.lines().count(), 1, "{}", output.stderr);
    assert!(
        output.stderr.starts_with("gatehouse-operator: "),
        "{}",
        output.stderr
    );
    assert!(
        output.stderr.contains(expected),
        "expected {expected:?} in {:?}",
        output.stderr
    );
}

#[test]
fn preview_refuses_a_policy_that_does_not_govern_the_requests_namespace() {
    let dir = tempfile::tempdir().unwrap();
    let policy = dir.path().join("policy.yaml");
    std::fs::write(
        &policy,
        kics_sample_with("namespace: gatehouse-scans", "namespace: team-b"),
    )
    .unwrap();
    let output = preview(&policy, &samples().join("scanrequest.yaml"));
    assert_one_line_error(
        &output,
        "ScanPolicy team-b/acme-iac does not govern namespace gatehouse-scans",
    );
}

#[test]
fn preview_refuses_a_scanner_the_policy_does_not_have() {
    let dir = tempfile::tempdir().unwrap();
    let request = dir.path().join("request.yaml");
    std::fs::write(
        &request,
        sample("scanrequest.yaml").replace("  policyRef:", "  scanners: [trivy]\n  policyRef:"),
    )
    .unwrap();
    let output = preview(&samples().join("scanpolicy-kics.yaml"), &request);
    assert_one_line_error(
        &output,
        "scanner \"trivy\" is not in ScanPolicy \"acme-iac\"",
    );
}

#[test]
fn preview_of_a_missing_file_says_which() {
    let output = preview(
        Path::new("/nonexistent/policy.yaml"),
        &samples().join("scanrequest.yaml"),
    );
    assert_one_line_error(&output, "failed to read /nonexistent/policy.yaml");
}

#[test]
fn no_arguments_run_the_operator_which_names_the_setting_it_lacks() {
    // A Deployment may give only environment variables: no words means `run`.
    let output = operator(&[]);
    assert_eq!(output.code, 2, "{}", output.stderr);
    assert!(
        output.stderr.contains("--github-app-id"),
        "{}",
        output.stderr
    );
}

#[test]
fn run_with_a_missing_key_file_fails_with_one_line() {
    for command in [&["run"][..], &[][..]] {
        let mut args = command.to_vec();
        args.extend([
            "--github-app-id",
            "1",
            "--github-private-key-file",
            "/nonexistent/github.pem",
            "--master-key-file",
            "/nonexistent/master.key",
        ]);
        let output = operator(&args);
        assert_one_line_error(
            &output,
            "failed to read the GitHub App private key from /nonexistent/github.pem",
        );
    }
}

#[test]
fn run_with_an_empty_or_unreadable_results_redis_password_file_fails_with_one_line() {
    let dir = tempfile::tempdir().unwrap();
    let master = dir.path().join("master.key");
    std::fs::write(&master, gatehouse_tests::operator::MASTER_KEY).unwrap();
    let empty = dir.path().join("redis-password");
    std::fs::write(&empty, "\n").unwrap();
    let key = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/fixtures/github-app/test-app-key.pem"
    );
    let run = |password_file: &Path| {
        operator(&[
            "run",
            "--github-app-id",
            "1",
            "--github-private-key-file",
            key,
            "--master-key-file",
            master.to_str().unwrap(),
            "--results-redis-password-file",
            password_file.to_str().unwrap(),
        ])
    };
    assert_one_line_error(
        &run(&empty),
        &format!(
            "invalid --results-redis-password-file: {} is empty",
            empty.display()
        ),
    );
    assert_one_line_error(
        &run(Path::new("/nonexistent/redis-password")),
        "failed to read the results Redis password from /nonexistent/redis-password",
    );
}

#[test]
fn run_with_a_results_redis_ca_file_it_cannot_use_fails_with_one_line_naming_why() {
    let dir = tempfile::tempdir().unwrap();
    let master = dir.path().join("master.key");
    std::fs::write(&master, gatehouse_tests::operator::MASTER_KEY).unwrap();
    let key = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/fixtures/github-app/test-app-key.pem"
    );
    let run = |ca_file: &Path, url: &str| {
        operator(&[
            "run",
            "--github-app-id",
            "1",
            "--github-private-key-file",
            key,
            "--master-key-file",
            master.to_str().unwrap(),
            "--results-redis-url",
            url,
            "--results-redis-ca-file",
            ca_file.to_str().unwrap(),
        ])
    };
    let tls = "rediss://gatehouse-scan@redis.example:6380";
    let file = |name: &str, text: &str| {
        let path = dir.path().join(name);
        std::fs::write(&path, text).unwrap();
        path
    };
    assert_one_line_error(
        &run(Path::new("/nonexistent/ca.crt"), tls),
        "failed to read the results Redis CA bundle from /nonexistent/ca.crt: No such file",
    );
    let empty = file("empty.crt", "\n");
    assert_one_line_error(
        &run(&empty, tls),
        &format!(
            "invalid --results-redis-ca-file: {} is empty",
            empty.display()
        ),
    );
    // Text, and a PEM file of something else (a key): no certificate in either.
    let key_only = std::fs::read_to_string(key).unwrap();
    for (name, text) in [("text.crt", "not a certificate\n"), ("key.pem", &key_only)] {
        let path = file(name, text);
        assert_one_line_error(
            &run(&path, tls),
            &format!(
                "invalid --results-redis-ca-file: {}: failed to find a PEM certificate \
                 (-----BEGIN CERTIFICATE-----) in it",
                path.display()
            ),
        );
    }
    let broken = file(
        "broken.crt",
        "-----BEGIN CERTIFICATE-----\n!!!!\n-----END CERTIFICATE-----\n",
    );
    assert_one_line_error(
        &run(&broken, tls),
        &format!(
            "invalid --results-redis-ca-file: {}: failed to read certificate 1 of it:",
            broken.display()
        ),
    );
    // Good base64, but not a certificate inside.
    let not_der = file(
        "not-der.crt",
        "-----BEGIN CERTIFICATE-----\naGVsbG8gd29ybGQ=\n-----END CERTIFICATE-----\n",
    );
    assert_one_line_error(
        &run(&not_der, tls),
        &format!(
            "invalid --results-redis-ca-file: {}: failed to build a TLS client with it:",
            not_der.display()
        ),
    );
    // Copied into every per-scan Secret (at most 1 MiB): a whole trust store is too large.
    let large = file("large.crt", &"#".repeat(600_000));
    assert_one_line_error(
        &run(&large, tls),
        &format!(
            "invalid --results-redis-ca-file: {} is 600000 bytes, more than 524288",
            large.display()
        ),
    );
    // A good certificate for a results URL without TLS would never be used.
    let params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    let good = file(
        "ca.crt",
        &params
            .self_signed(&rcgen::KeyPair::generate().unwrap())
            .unwrap()
            .pem(),
    );
    assert_one_line_error(
        &run(&good, "redis://gatehouse-scan@redis.example:6379"),
        "invalid --results-redis-ca-file: --results-redis-url \
         redis://gatehouse-scan@redis.example:6379 is not rediss:// (TLS)",
    );
}
