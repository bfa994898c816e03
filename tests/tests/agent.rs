//! `gatehouse-agent` as a process, as a scan pod or a person runs it: `parse` on every real
//! report in `tests/fixtures/` and on broken ones, `checkout` against a GitHub stand-in
//! (wiremock) serving tarballs (a repository, and hostile archives), `report` publishing to a
//! real Redis.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::io::Write as _;
use std::process::{Command, Output};

use gatehouse_crds::stream::{RESULTS_STREAM, ResultEntry, ScanOutcome, ScanResult};
use gatehouse_tests::RedisServer;
use serde_json::Value;
use wiremock::matchers::{header, method, path, query_param};
use wiremock::{Mock, MockServer, ResponseTemplate};

fn agent(args: &[&str]) -> Output {
    Command::new(gatehouse_tests::binaries::agent())
        .args(args)
        .output()
        .unwrap()
}

fn fixture(name: &str) -> String {
    format!("{}/fixtures/{name}", env!("CARGO_MANIFEST_DIR"))
}

fn parse(scanner: &str, report: &str, extra: &[&str]) -> (i32, Value, String) {
    let mut args = vec!["parse", "--scanner", scanner, report];
    args.extend_from_slice(extra);
    let out = agent(&args);
    let stdout = String::from_utf8(out.stdout).unwrap();
    let json = if stdout.is_empty() {
        Value::Null
    } else {
        serde_json::from_str(&stdout).unwrap()
    };
    (
        out.status.code().unwrap(),
        json,
        String::from_utf8(out.stderr).unwrap(),
    )
}

#[test]
fn parse_reads_every_fixture_report_with_its_counts() {
    let e2e = ["--source-dir", "/path/e2e/fixtures/samples"];
    for (scanner, file, extra, total, first_title) in [
        (
            "kics",
            "kics/kics-v2_zero-findings_e2e073.json",
            &[][..],
            0,
            None,
        ),
        (
            "kics",
            "kics/kics-v2_mixed-17-findings-terraform_e2e086.json",
            &e2e[..],
            17,
            Some("Redshift Publicly Accessible"),
        ),
        (
            "kics",
            "kics/kics-v2_mixed-24-findings-cloudformation_e2e032.json",
            &e2e[..],
            24,
            Some("Unrestricted Security Group Ingress"),
        ),
        (
            "kics",
            "kics/kics-v2_critical-2-findings-cicd_e2e089.json",
            &[][..],
            2,
            Some("Run Block Injection"),
        ),
        (
            "kics",
            "kics/kics-v2_high-1-result-cicd_e2e080.sarif",
            &[][..],
            1,
            Some("Script Block Injection"),
        ),
        (
            "blackduck",
            "blackduck/detect-DeveloperMode-Result_legacy-schema_3-violations.json",
            &[][..],
            2,
            Some("gogo-protobuf v1.2.0 violates overall score => 9"),
        ),
        (
            "blackduck",
            "blackduck/SANITIZED_detect-action_full-result-item_no-violations.json",
            &[][..],
            0,
            None,
        ),
    ] {
        let (code, json, stderr) = parse(scanner, &fixture(file), extra);
        assert_eq!(code, 0, "{file}: {stderr}");
        assert_eq!(json["total"], total, "{file}");
        assert_eq!(
            json["findings"].as_array().unwrap().len() as u64,
            total,
            "{file}"
        );
        assert_eq!(json["findings"][0]["title"].as_str(), first_title, "{file}");
    }
    let (_, json, _) = parse(
        "kics",
        &fixture("kics/kics-v2_mixed-17-findings-terraform_e2e086.json"),
        &e2e,
    );
    assert_eq!(
        json["counts"],
        serde_json::json!({"critical": 0, "high": 6, "medium": 2, "low": 7, "info": 2})
    );
    assert_eq!(json["findings"][0]["path"], "terraform.tf");
}

#[test]
fn parse_refuses_broken_reports_with_a_clear_error_and_a_non_zero_exit() {
    let dir = tempfile::tempdir().unwrap();
    let whole = std::fs::read(fixture(
        "kics/kics-v2_mixed-17-findings-terraform_e2e086.json",
    ))
    .unwrap();
    let mut wrong: Value = serde_json::from_slice(&whole).unwrap();
    wrong["queries"][0]["files"][1]["line"] = Value::String("five".into());
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        (
            "truncated.json",
            whole[..whole.len() / 3].to_vec(),
            "not valid JSON at line",
        ),
        ("empty.json", Vec::new(), "the report is empty"),
        (
            "wrong-type.json",
            serde_json::to_vec(&wrong).unwrap(),
            "queries[0].files[1].line: invalid type: string \"five\"",
        ),
        (
            "html.json",
            b"<html>502 Bad Gateway</html>".to_vec(),
            "not valid JSON",
        ),
    ];
    for (name, bytes, expected) in cases {
        let file = dir.path().join(name);
        std::fs::write(&file, bytes).unwrap();
        let (code, json, stderr) = parse("kics", file.to_str().unwrap(), &[]);
        assert_eq!(code, 1, "{name}");
        assert_eq!(json, Value::Null, "{name}: nothing on stdout");
        assert!(stderr.contains(expected), "{name}: {stderr}");
    }
    let (code, _, stderr) = parse("kics", "/nonexistent/results.json", &[]);
    assert_eq!(code, 1);
    assert!(stderr.contains("/nonexistent/results.json"), "{stderr}");
    // An exit code that means the scanner failed: no report is trusted.
    let (code, _, stderr) = parse(
        "kics",
        &fixture("kics/kics-v2_zero-findings_e2e073.json"),
        &["--exit-code", "126"],
    );
    assert_eq!(code, 1);
    assert!(stderr.contains("exit code 126: engine error"), "{stderr}");
    let (code, _, stderr) = parse(
        "blackduck",
        &fixture("blackduck/detect-DeveloperMode-Result_legacy-schema_3-violations.json"),
        &["--exit-code", "1"],
    );
    assert_eq!(code, 1);
    assert!(
        stderr.contains("FAILURE_BLACKDUCK_CONNECTIVITY"),
        "{stderr}"
    );
}

#[test]
fn parse_reads_a_hundred_thousand_findings() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("results.json");
    std::fs::write(
        &file,
        gatehouse_tests::reports::repeated_kics_report(100_000).unwrap(),
    )
    .unwrap();
    let (code, json, stderr) = parse(
        "kics",
        file.to_str().unwrap(),
        &["--source-dir", "/path/e2e/fixtures/samples"],
    );
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(json["total"], 100_000);
    assert_eq!(
        json["counts"],
        serde_json::json!({"critical": 0, "high": 35_298, "medium": 11_764, "low": 41_174, "info": 11_764})
    );
}

#[test]
fn parse_keeps_each_kics_findings_rule_place_severity_and_fingerprint() {
    // Checked against the report itself, read here independently of the parser.
    for name in [
        "kics-v2_mixed-17-findings-terraform_e2e086.json",
        "kics-v2_mixed-24-findings-cloudformation_e2e032.json",
    ] {
        let file = fixture(&format!("kics/{name}"));
        let raw: Value = serde_json::from_str(&std::fs::read_to_string(&file).unwrap()).unwrap();
        let mut expected: Vec<(String, String, i64, String, String)> = Vec::new();
        for query in raw["queries"].as_array().unwrap() {
            for place in query["files"].as_array().unwrap() {
                expected.push((
                    query["query_id"].as_str().unwrap().to_owned(),
                    place["file_name"]
                        .as_str()
                        .unwrap()
                        .strip_prefix("/path/e2e/fixtures/samples/")
                        .unwrap()
                        .to_owned(),
                    place["line"].as_i64().unwrap(),
                    place["similarity_id"].as_str().unwrap().to_owned(),
                    query["severity"].as_str().unwrap().to_ascii_lowercase(),
                ));
            }
        }
        let (code, json, stderr) = parse(
            "kics",
            &file,
            &["--source-dir", "/path/e2e/fixtures/samples"],
        );
        assert_eq!(code, 0, "{stderr}");
        let mut parsed: Vec<(String, String, i64, String, String)> = json["findings"]
            .as_array()
            .unwrap()
            .iter()
            .map(|f| {
                assert_eq!(f["startLine"], f["endLine"], "{f}");
                (
                    f["ruleId"].as_str().unwrap().to_owned(),
                    f["path"].as_str().unwrap().to_owned(),
                    f["startLine"].as_i64().unwrap(),
                    f["fingerprint"].as_str().unwrap().to_owned(),
                    f["severity"].as_str().unwrap().to_owned(),
                )
            })
            .collect();
        expected.sort();
        parsed.sort();
        assert_eq!(parsed, expected, "{name}");
    }
}

#[test]
fn parse_makes_one_black_duck_finding_per_violating_component_version() {
    let file = fixture("blackduck/detect-DeveloperMode-Result_legacy-schema_3-violations.json");
    let (code, json, stderr) = parse("blackduck", &file, &[]);
    assert_eq!(code, 0, "{stderr}");
    let titles: Vec<&str> = json["findings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["title"].as_str().unwrap())
        .collect();
    // The report lists gogo-protobuf v1.3.1 twice (two dependency paths): one finding.
    assert_eq!(
        titles,
        [
            "gogo-protobuf v1.2.0 violates overall score => 9",
            "gogo-protobuf v1.3.1 violates overall score => 9"
        ]
    );
    assert!(
        json["findings"]
            .as_array()
            .unwrap()
            .iter()
            .all(|f| f["severity"] == "critical" && f.get("path").is_none_or(Value::is_null)),
        "{json}"
    );
}

/// A repository tarball as GitHub serves it, with `entries` (path, contents) under its top
/// directory; a `..` in a path is written as given.
fn tarball(entries: &[(&str, &[u8])]) -> Vec<u8> {
    let mut builder = tar::Builder::new(Vec::new());
    for (name, data) in entries {
        let mut header = tar::Header::new_gnu();
        let full = format!("Codertocat-Hello-World-ec26c3e/{name}");
        header.as_old_mut().name[..full.len()].copy_from_slice(full.as_bytes());
        header.set_entry_type(tar::EntryType::Regular);
        header.set_mode(0o644);
        header.set_size(data.len() as u64);
        header.set_cksum();
        builder.append(&header, *data).unwrap();
    }
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    gz.write_all(&builder.into_inner().unwrap()).unwrap();
    gz.finish().unwrap()
}

const SHA: &str = "ec26c3e57ca3a959ca5aad62de7213c562f8c821";

/// The id git gives a blob of `data` (SHA-1 of `blob <length>\0<data>`).
fn blob_id(data: &[u8]) -> String {
    let mut context = ring::digest::Context::new(&ring::digest::SHA1_FOR_LEGACY_USE_ONLY);
    context.update(format!("blob {}\0", data.len()).as_bytes());
    context.update(data);
    hex::encode(context.finish())
}

/// A tree listing's entry for a file of `data` (a link when `mode` is `120000`).
fn tree_blob(name: &str, mode: &str, data: &[u8]) -> Value {
    serde_json::json!({
        "path": name, "mode": mode, "type": "blob", "sha": blob_id(data), "size": data.len(),
    })
}

/// A tree listing as GitHub answers it.
fn listing(sha: &str, entries: &[Value], truncated: bool) -> Value {
    serde_json::json!({"sha": sha, "tree": entries, "truncated": truncated})
}

/// GitHub for one commit: its tarball endpoint answering with a redirect to an archive URL on
/// the same server, which serves `archived` (only a request with the token gets the
/// redirect); no tree and no blob yet (see [`serve_tree`], [`serve_blob`]).
async fn github_archive(archived: Vec<u8>) -> MockServer {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path(format!("/repos/Codertocat/Hello-World/tarball/{SHA}")))
        .and(header("authorization", "Bearer ghs_scan_token"))
        .respond_with(ResponseTemplate::new(302).insert_header(
            "location",
            format!("{}/codeload/archive.tar.gz", server.uri()),
        ))
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path("/codeload/archive.tar.gz"))
        .respond_with(ResponseTemplate::new(200).set_body_bytes(archived))
        .mount(&server)
        .await;
    server
}

/// Serves `body` as the listing of tree `sha`, asked for with `?recursive=1` or without.
async fn serve_tree(server: &MockServer, sha: &str, recursive: bool, body: Value) {
    let mock = Mock::given(method("GET"))
        .and(path(format!(
            "/repos/Codertocat/Hello-World/git/trees/{sha}"
        )))
        .and(header("authorization", "Bearer ghs_scan_token"));
    let mock = if recursive {
        mock.and(query_param("recursive", "1"))
    } else {
        mock.and(wiremock::matchers::query_param_is_missing("recursive"))
    };
    mock.respond_with(ResponseTemplate::new(200).set_body_json(body))
        .mount(server)
        .await;
}

/// Serves `data` as a blob, raw, by its id.
async fn serve_blob(server: &MockServer, data: &[u8]) {
    Mock::given(method("GET"))
        .and(path(format!(
            "/repos/Codertocat/Hello-World/git/blobs/{}",
            blob_id(data)
        )))
        .and(header("authorization", "Bearer ghs_scan_token"))
        .and(header("accept", "application/vnd.github.raw+json"))
        .respond_with(ResponseTemplate::new(200).set_body_bytes(data.to_vec()))
        .mount(server)
        .await;
}

/// GitHub for one commit holding `files` (path, contents) whose archive is `archived`: its
/// tree lists every file of `files`, and each file's blob is served, raw, by its id.
async fn github_serving(files: &[(&str, &[u8])], archived: Vec<u8>) -> MockServer {
    let server = github_archive(archived).await;
    let mut tree = Vec::new();
    for (name, data) in files {
        tree.push(tree_blob(name, "100644", data));
        serve_blob(&server, data).await;
    }
    serve_tree(&server, SHA, true, listing(SHA, &tree, false)).await;
    server
}

/// GitHub serving a commit whose archive holds all its files.
async fn github_with(files: &[(&str, &[u8])]) -> MockServer {
    github_serving(files, tarball(files)).await
}

fn checkout(server: &MockServer, into: &std::path::Path, token_dir: &std::path::Path) -> Output {
    checkout_with(server, into, token_dir, &[])
}

/// [`checkout`] with more flags.
fn checkout_with(
    server: &MockServer,
    into: &std::path::Path,
    token_dir: &std::path::Path,
    extra: &[&str],
) -> Output {
    let token = token_dir.join("token");
    std::fs::write(&token, "ghs_scan_token\n").unwrap();
    Command::new(gatehouse_tests::binaries::agent())
        .args([
            "checkout",
            "--repository",
            "Codertocat/Hello-World",
            "--sha",
            SHA,
        ])
        .arg("--into")
        .arg(into)
        .arg("--token-file")
        .arg(&token)
        .args(["--api-url", &server.uri(), "--remove", "kics.config"])
        .args(extra)
        .env("TMPDIR", token_dir)
        .output()
        .unwrap()
}

#[tokio::test]
async fn checkout_downloads_the_commit_with_the_token_and_unpacks_it_without_its_config() {
    let server = github_with(&[
        ("main.tf", b"resource \"aws_s3_bucket\" \"b\" {}\n"),
        ("modules/net/vpc.tf", b"# vpc\n"),
        ("kics.config", b"{\"exclude-severities\": \"high\"}"),
    ])
    .await;
    let into = tempfile::tempdir().unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let out = checkout(&server, into.path(), tmp.path());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert!(stderr.contains("removed kics.config"), "{stderr}");
    assert_eq!(
        std::fs::read_to_string(into.path().join("modules/net/vpc.tf")).unwrap(),
        "# vpc\n"
    );
    assert!(!into.path().join("kics.config").exists());
    assert!(into.path().join("main.tf").exists());
}

#[tokio::test]
async fn checkout_refuses_a_hostile_archive_for_good_and_says_which_entry() {
    let server = github_serving(
        &[("README.md", b"hello")],
        tarball(&[("README.md", b"hello"), ("../../../tmp/owned", b"x")]),
    )
    .await;
    let into = tempfile::tempdir().unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let out = checkout(&server, into.path(), tmp.path());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "refused for good: {stderr}");
    assert!(stderr.contains("climbs out of the repository"), "{stderr}");
    assert!(stderr.contains("../../../tmp/owned"), "{stderr}");
}

#[tokio::test]
async fn checkout_fetches_the_files_the_archive_left_out_so_export_ignore_hides_nothing() {
    // The pull request's .gitattributes says `hidden/** export-ignore`: GitHub's archive lacks
    // hidden/iam.tf, its tree does not.
    let files: [(&str, &[u8]); 3] = [
        ("main.tf", b"# main\n"),
        (".gitattributes", b"hidden/** export-ignore\n"),
        ("hidden/iam.tf", b"resource \"aws_iam_policy\" \"all\" {}\n"),
    ];
    let server = github_serving(&files, tarball(&files[..2])).await;
    let into = tempfile::tempdir().unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let out = checkout(&server, into.path(), tmp.path());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert_eq!(
        std::fs::read_to_string(into.path().join("hidden/iam.tf")).unwrap(),
        "resource \"aws_iam_policy\" \"all\" {}\n"
    );
    assert!(
        stderr.contains("1 files the archive left out (export-ignore) fetched one by one"),
        "{stderr}"
    );
}

#[tokio::test]
async fn checkout_refuses_git_lfs_pointers_whose_content_the_scanner_would_not_see() {
    let pointer: &[u8] = b"version https://git-lfs.github.com/spec/v1\noid sha256:4d7a214614ab2935c943f9e0ff69d22eadbb8f32b1258daaa5e2ca24d17e2393\nsize 12345\n";
    let server = github_with(&[("main.tf", b"# main\n"), ("infra/iam.tf", pointer)]).await;
    let into = tempfile::tempdir().unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let out = checkout(&server, into.path(), tmp.path());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "refused for good: {stderr}");
    assert!(
        stderr.contains("1 files of Codertocat/Hello-World@") && stderr.contains("infra/iam.tf"),
        "{stderr}"
    );
    assert!(
        stderr.contains("Include Git LFS objects in archives"),
        "{stderr}"
    );
}

#[tokio::test]
async fn checkout_follows_the_redirect_to_another_host_without_the_token() {
    let files: [(&str, &[u8]); 1] = [("main.tf", b"# main\n")];
    // The archive host is another origin: it serves the archive only to a request that does
    // not carry the installation token.
    let codeload = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path("/archive.tar.gz"))
        .and(|request: &wiremock::Request| !request.headers.contains_key("authorization"))
        .respond_with(ResponseTemplate::new(200).set_body_bytes(tarball(&files)))
        .mount(&codeload)
        .await;
    let github = github_with(&files).await;
    Mock::given(method("GET"))
        .and(path(format!("/repos/Codertocat/Hello-World/tarball/{SHA}")))
        .respond_with(
            ResponseTemplate::new(302)
                .insert_header("location", format!("{}/archive.tar.gz", codeload.uri())),
        )
        .with_priority(1)
        .mount(&github)
        .await;
    let into = tempfile::tempdir().unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let out = checkout(&github, into.path(), tmp.path());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert!(into.path().join("main.tf").exists());
    assert_eq!(codeload.received_requests().await.unwrap().len(), 1);
}

#[tokio::test]
async fn checkout_failures_of_github_may_pass_and_refusals_will_not() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path(format!("/repos/Codertocat/Hello-World/tarball/{SHA}")))
        .respond_with(ResponseTemplate::new(503).set_body_string("unavailable"))
        .mount(&server)
        .await;
    let into = tempfile::tempdir().unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let out = checkout(&server, into.path(), tmp.path());
    assert_eq!(
        out.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let server = MockServer::start().await;
    let out = checkout(&server, into.path(), tmp.path());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("404"), "{stderr}");
}

#[tokio::test]
async fn checkout_lists_a_tree_github_cuts_short_directory_by_directory_so_export_ignore_hides_nothing()
 {
    // The pull request makes its tree too large for one listing (GitHub cuts it at 100,000
    // entries or 7 MB) and export-ignores a file the cut listing does not reach.
    let main: &[u8] = b"# main\n";
    let hidden: &[u8] = b"resource \"aws_iam_policy\" \"all\" {}\n";
    let deep: &[u8] = b"# deep\n";
    let server = github_archive(tarball(&[("main.tf", main), ("zzz/a/deep.tf", deep)])).await;
    let (zzz, a) = ("1".repeat(40), "2".repeat(40));
    let subtree = |name: &str, sha: &str| serde_json::json!({"path": name, "mode": "040000", "type": "tree", "sha": sha});
    serve_tree(
        &server,
        SHA,
        true,
        listing(SHA, &[tree_blob("main.tf", "100644", main)], true),
    )
    .await;
    serve_tree(
        &server,
        SHA,
        false,
        listing(
            SHA,
            &[tree_blob("main.tf", "100644", main), subtree("zzz", &zzz)],
            false,
        ),
    )
    .await;
    // zzz is cut too when listed whole; its subdirectory a is not.
    serve_tree(
        &server,
        &zzz,
        true,
        listing(&zzz, &[subtree("a", &a)], true),
    )
    .await;
    serve_tree(
        &server,
        &zzz,
        false,
        listing(
            &zzz,
            &[tree_blob("hidden.tf", "100644", hidden), subtree("a", &a)],
            false,
        ),
    )
    .await;
    serve_tree(
        &server,
        &a,
        true,
        listing(&a, &[tree_blob("deep.tf", "100644", deep)], false),
    )
    .await;
    serve_blob(&server, hidden).await;
    let into = tempfile::tempdir().unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let out = checkout(&server, into.path(), tmp.path());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert_eq!(
        std::fs::read(into.path().join("zzz/hidden.tf")).unwrap(),
        hidden
    );
    assert!(
        stderr.contains("directory by directory (5 listings)"),
        "{stderr}"
    );

    // A directory GitHub cannot list whole even on its own: refused, never scanned in part.
    let server = github_archive(tarball(&[("main.tf", main)])).await;
    serve_tree(&server, SHA, true, listing(SHA, &[], true)).await;
    serve_tree(&server, SHA, false, listing(SHA, &[], true)).await;
    let into = tempfile::tempdir().unwrap();
    let out = checkout(&server, into.path(), tmp.path());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("only in part") && stderr.contains("directory \"/\" alone"),
        "{stderr}"
    );
}

#[tokio::test]
async fn checkout_scans_the_commits_content_not_what_gitattributes_made_of_it_in_the_archive() {
    // The pull request's .gitattributes makes GitHub's archive hold main.tf in UTF-16, which
    // the scanner cannot read, and rewrites version.txt; run.bat only had its line endings
    // made CRLF, which is the commit's text still.
    let gitattributes: &[u8] =
        b"*.tf working-tree-encoding=UTF-16LE\nversion.txt export-subst\n*.bat eol=crlf\n";
    let main: &[u8] = b"resource \"aws_iam_policy\" \"all\" {}\n";
    let utf16: Vec<u8> = main.iter().flat_map(|b| [*b, 0]).collect();
    let version: &[u8] = b"$Format:%H$\n";
    let batch: &[u8] = b"line one\nline two\n";
    let files: [(&str, &[u8]); 4] = [
        (".gitattributes", gitattributes),
        ("main.tf", main),
        ("version.txt", version),
        ("run.bat", batch),
    ];
    let archived = tarball(&[
        (".gitattributes", gitattributes),
        ("main.tf", &utf16),
        ("version.txt", b"ec26c3e57ca3a959ca5aad62de7213c562f8c821\n"),
        ("run.bat", b"line one\r\nline two\r\n"),
    ]);
    let server = github_serving(&files, archived).await;
    let into = tempfile::tempdir().unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let out = checkout(&server, into.path(), tmp.path());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert_eq!(std::fs::read(into.path().join("main.tf")).unwrap(), main);
    assert_eq!(
        std::fs::read(into.path().join("version.txt")).unwrap(),
        version
    );
    assert_eq!(
        std::fs::read(into.path().join("run.bat")).unwrap(),
        b"line one\r\nline two\r\n",
        "only its line endings differ: kept"
    );
    assert!(
        stderr.contains(
            "2 files the archive holds otherwise than the commit (.gitattributes) fetched"
        ),
        "{stderr}"
    );
    let fetched: Vec<String> = server
        .received_requests()
        .await
        .unwrap()
        .iter()
        .map(|r| r.url.path().to_owned())
        .filter(|p| p.contains("/git/blobs/"))
        .collect();
    assert_eq!(fetched.len(), 2, "{fetched:?}");
}

#[tokio::test]
async fn checkout_keeps_the_git_lfs_objects_an_archive_includes_and_refuses_other_pointers() {
    let object: &[u8] = b"resource \"aws_s3_bucket\" \"b\" {}\n";
    let oid = hex::encode(ring::digest::digest(&ring::digest::SHA256, object));
    let pointer = format!(
        "version https://git-lfs.github.com/spec/v1\noid sha256:{oid}\nsize {}\n",
        object.len()
    );
    // "Include Git LFS objects in archives": the archive holds the object, the tree its pointer.
    let server = github_serving(
        &[("infra/iam.tf", pointer.as_bytes())],
        tarball(&[("infra/iam.tf", object)]),
    )
    .await;
    let into = tempfile::tempdir().unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let out = checkout(&server, into.path(), tmp.path());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert_eq!(
        std::fs::read(into.path().join("infra/iam.tf")).unwrap(),
        object
    );
    assert!(
        stderr.contains("1 Git LFS objects taken from the archive"),
        "{stderr}"
    );
    // Anything else in the archive where the commit has a pointer: the pointer is what the
    // commit holds, and it is refused as ever.
    let server = github_serving(
        &[("infra/iam.tf", pointer.as_bytes())],
        tarball(&[("infra/iam.tf", b"# nothing to see\n")]),
    )
    .await;
    let into = tempfile::tempdir().unwrap();
    let out = checkout(&server, into.path(), tmp.path());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("infra/iam.tf") && stderr.contains("Include Git LFS objects in archives"),
        "{stderr}"
    );
}

#[tokio::test]
async fn checkout_waits_out_a_short_rate_limit_and_leaves_a_long_one_to_the_jobs_retry() {
    let main: &[u8] = b"# main\n";
    let hidden: &[u8] = b"resource {}\n";
    let files: [(&str, &[u8]); 2] = [("main.tf", main), ("hidden/iam.tf", hidden)];
    let blob_route = format!(
        "/repos/Codertocat/Hello-World/git/blobs/{}",
        blob_id(hidden)
    );
    // The installation's rate limit is spent until long from now: a failure that may pass.
    let server = github_archive(tarball(&files[..1])).await;
    let tree: Vec<Value> = files
        .iter()
        .map(|(name, data)| tree_blob(name, "100644", data))
        .collect();
    serve_tree(&server, SHA, true, listing(SHA, &tree, false)).await;
    Mock::given(method("GET"))
        .and(path(blob_route.as_str()))
        .respond_with(
            ResponseTemplate::new(403)
                .insert_header("x-ratelimit-remaining", "0")
                .insert_header("x-ratelimit-reset", "9999999999")
                .set_body_string(
                    "{\"message\":\"API rate limit exceeded for installation ID 1.\"}",
                ),
        )
        .mount(&server)
        .await;
    let into = tempfile::tempdir().unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let started = std::time::Instant::now();
    let out = checkout(&server, into.path(), tmp.path());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("rate limited"), "{stderr}");
    assert!(
        stderr.contains("GitHub says it resets at 2286-11-20T17:46:39Z"),
        "when it resets, as GitHub said: {stderr}"
    );
    assert!(
        stderr.contains("the operator makes 3 attempts in all and does not wait for the reset"),
        "{stderr}"
    );
    assert!(started.elapsed() < std::time::Duration::from_secs(30));

    // A secondary rate limit asking for a second: waited out inside the step.
    let server = github_archive(tarball(&files[..1])).await;
    serve_tree(&server, SHA, true, listing(SHA, &tree, false)).await;
    Mock::given(method("GET"))
        .and(path(blob_route.as_str()))
        .respond_with(
            ResponseTemplate::new(403)
                .insert_header("retry-after", "1")
                .set_body_string("{\"message\":\"You have exceeded a secondary rate limit.\"}"),
        )
        .up_to_n_times(1)
        .with_priority(1)
        .mount(&server)
        .await;
    serve_blob(&server, hidden).await;
    let into = tempfile::tempdir().unwrap();
    let started = std::time::Instant::now();
    let out = checkout(&server, into.path(), tmp.path());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert_eq!(
        std::fs::read(into.path().join("hidden/iam.tf")).unwrap(),
        hidden
    );
    assert!(started.elapsed() >= std::time::Duration::from_secs(1));
}

#[test]
fn checkout_reads_only_the_start_of_an_error_answer() {
    // An error answer whose body never ends: the step says what it got and stops.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    std::thread::spawn(move || {
        for socket in listener.incoming() {
            let Ok(mut socket) = socket else { return };
            std::thread::spawn(move || {
                use std::io::Read as _;
                let mut head = [0_u8; 4096];
                let _ = socket.read(&mut head);
                let _ = socket.write_all(
                    b"HTTP/1.1 404 Not Found\r\ncontent-type: text/plain\r\n\
                      transfer-encoding: chunked\r\n\r\n",
                );
                let chunk = format!("2000\r\n{}\r\n", "x".repeat(0x2000));
                while socket.write_all(chunk.as_bytes()).is_ok() {}
            });
        }
    });
    let dir = tempfile::tempdir().unwrap();
    let token = dir.path().join("token");
    std::fs::write(&token, "ghs_scan_token\n").unwrap();
    let mut child = Command::new(gatehouse_tests::binaries::agent())
        .args([
            "checkout",
            "--repository",
            "Codertocat/Hello-World",
            "--sha",
            SHA,
        ])
        .arg("--into")
        .arg(dir.path())
        .arg("--token-file")
        .arg(&token)
        .args(["--api-url", &url])
        .env("TMPDIR", dir.path())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if std::time::Instant::now() > deadline {
            child.kill().unwrap();
            child.wait().unwrap();
            panic!("still reading the error answer after 30 s");
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    };
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut stderr).unwrap();
    assert_eq!(status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("404 Not Found: xxxx"), "{stderr}");
}

#[tokio::test]
async fn checkout_refuses_for_good_a_tree_it_cannot_lay_out() {
    let main: &[u8] = b"# main\n";
    for (archived, tree, blobs, expected) in [
        // A link listed twice.
        (
            vec![("main.tf", main)],
            vec![
                tree_blob("main.tf", "100644", main),
                tree_blob("l", "120000", b"main.tf"),
                tree_blob("l", "120000", b"main.tf"),
            ],
            vec![&b"main.tf"[..]],
            "\"l\" appears twice",
        ),
        // A link whose target holds a NUL byte.
        (
            vec![("main.tf", main)],
            vec![
                tree_blob("main.tf", "100644", main),
                tree_blob("l", "120000", b"main.tf\0x"),
            ],
            vec![&b"main.tf\0x"[..]],
            "\"l\" is a link whose target holds a NUL byte",
        ),
        // A file where the tree needs a directory.
        (
            vec![("main.tf", main), ("a", main)],
            vec![
                tree_blob("main.tf", "100644", main),
                tree_blob("a", "100644", main),
                tree_blob("a/b.tf", "100644", b"# b\n"),
            ],
            vec![&b"# b\n"[..]],
            "\"a/b.tf\" is under a file in the workspace",
        ),
    ] {
        let server = github_archive(tarball(&archived)).await;
        serve_tree(&server, SHA, true, listing(SHA, &tree, false)).await;
        for blob in blobs {
            serve_blob(&server, blob).await;
        }
        let into = tempfile::tempdir().unwrap();
        let tmp = tempfile::tempdir().unwrap();
        let out = checkout(&server, into.path(), tmp.path());
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{expected}: {stderr}");
        assert!(stderr.contains(expected), "{stderr}");
    }
}

#[tokio::test]
async fn checkout_scans_a_directory_named_like_the_scanners_configuration() {
    // The pull request adds a directory `kics.config/`: it is not configuration, and what it
    // holds is scanned, whether the archive has it or left it out (export-ignore).
    let evil: &[u8] = b"resource \"aws_iam_policy\" \"all\" {}\n";
    let hidden: &[u8] = b"resource \"aws_s3_bucket\" \"public\" {}\n";
    let files: [(&str, &[u8]); 4] = [
        ("main.tf", b"# main\n"),
        (".gitattributes", b"kics.config/hidden.tf export-ignore\n"),
        ("kics.config/evil.tf", evil),
        ("kics.config/hidden.tf", hidden),
    ];
    let server = github_serving(&files, tarball(&files[..3])).await;
    let into = tempfile::tempdir().unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let out = checkout(&server, into.path(), tmp.path());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert!(!stderr.contains("removed kics.config"), "{stderr}");
    assert_eq!(
        std::fs::read(into.path().join("kics.config/evil.tf")).unwrap(),
        evil
    );
    assert_eq!(
        std::fs::read(into.path().join("kics.config/hidden.tf")).unwrap(),
        hidden
    );
    // `kics.config` as a file is the scanner's configuration: still removed, and not fetched.
    let server = github_with(&[
        ("main.tf", b"# main\n"),
        ("kics.config", b"{\"exclude-severities\": \"high\"}"),
    ])
    .await;
    let into = tempfile::tempdir().unwrap();
    let out = checkout(&server, into.path(), tmp.path());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert!(stderr.contains("removed kics.config"), "{stderr}");
    assert!(!into.path().join("kics.config").exists());
}

#[tokio::test]
async fn checkout_with_a_token_github_no_longer_takes_may_pass_with_the_next_attempts_token() {
    // The per-scan token lives an hour; a pod that waited longer to start meets 401.
    let bad_credentials = || {
        ResponseTemplate::new(401).set_body_string(
            "{\"message\":\"Bad credentials\",\"documentation_url\":\"https://docs.github.com/rest\"}",
        )
    };
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path(format!("/repos/Codertocat/Hello-World/tarball/{SHA}")))
        .respond_with(bad_credentials())
        .mount(&server)
        .await;
    let into = tempfile::tempdir().unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let out = checkout(&server, into.path(), tmp.path());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("401") && stderr.contains("the next attempt gets a new one"),
        "{stderr}"
    );
    // The token expires between the archive and the tree.
    let server = github_archive(tarball(&[("main.tf", b"# main\n")])).await;
    Mock::given(method("GET"))
        .and(path(format!(
            "/repos/Codertocat/Hello-World/git/trees/{SHA}"
        )))
        .respond_with(bad_credentials())
        .mount(&server)
        .await;
    let into = tempfile::tempdir().unwrap();
    let out = checkout(&server, into.path(), tmp.path());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("git/trees"), "{stderr}");
}

#[tokio::test]
async fn checkout_without_permission_is_refused_for_good_not_taken_for_a_rate_limit() {
    // GitHub's plain 403 carries its usual rate-limit headers, with requests left.
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path(format!("/repos/Codertocat/Hello-World/tarball/{SHA}")))
        .respond_with(
            ResponseTemplate::new(403)
                .insert_header("x-ratelimit-limit", "5000")
                .insert_header("x-ratelimit-remaining", "4999")
                .insert_header("x-ratelimit-reset", "9999999999")
                .set_body_string("{\"message\":\"Resource not accessible by integration\"}"),
        )
        .mount(&server)
        .await;
    let into = tempfile::tempdir().unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let out = checkout(&server, into.path(), tmp.path());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("403 Forbidden: {\"message\":\"Resource not accessible by integration\"}"),
        "{stderr}"
    );
    assert!(!stderr.contains("rate limited"), "{stderr}");
}

#[tokio::test]
async fn checkout_refuses_a_commit_whose_archive_leaves_out_more_files_than_it_fetches_one_by_one()
{
    // The PHP convention `/tests export-ignore`, in a repository with 1,001 test files.
    let test: &[u8] = b"<?php // test\n";
    let main: &[u8] = b"# main\n";
    let attributes: &[u8] = b"/tests export-ignore\n";
    let server = github_archive(tarball(&[
        ("main.tf", main),
        (".gitattributes", attributes),
    ]))
    .await;
    let mut tree = vec![
        tree_blob("main.tf", "100644", main),
        tree_blob(".gitattributes", "100644", attributes),
    ];
    for i in 0..1001 {
        tree.push(tree_blob(&format!("tests/T{i}Test.php"), "100644", test));
    }
    serve_tree(&server, SHA, true, listing(SHA, &tree, false)).await;
    serve_blob(&server, test).await;
    let into = tempfile::tempdir().unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let out = checkout(&server, into.path(), tmp.path());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    let line = stderr
        .lines()
        .find(|l| l.contains("1001 files of the commit"))
        .unwrap_or_else(|| panic!("{stderr}"));
    for said in [
        "/tests export-ignore",
        "Git LFS",
        "more than the 1000 this version of Gatehouse fetches one by one",
        "tests/T0Test.php",
        "remove export-ignore from the paths to be scanned",
    ] {
        assert!(line.contains(said), "{said:?} in one line: {stderr}");
    }
    let fetched = server
        .received_requests()
        .await
        .unwrap()
        .iter()
        .filter(|r| r.url.path().contains("/git/blobs/"))
        .count();
    assert_eq!(fetched, 0, "refused before fetching any");
}

#[tokio::test]
async fn checkout_refuses_a_tree_that_takes_more_than_a_thousand_listings_directory_by_directory() {
    let main: &[u8] = b"# main\n";
    let server = github_archive(tarball(&[("main.tf", main)])).await;
    // Cut short at once; its root holds 1,000 directories, each listed whole on its own.
    let directory = "3".repeat(40);
    let mut root = vec![tree_blob("main.tf", "100644", main)];
    for i in 0..1000 {
        root.push(serde_json::json!({
            "path": format!("d{i}"), "mode": "040000", "type": "tree", "sha": directory,
        }));
    }
    serve_tree(&server, SHA, true, listing(SHA, &[], true)).await;
    serve_tree(&server, SHA, false, listing(SHA, &root, false)).await;
    serve_tree(&server, &directory, true, listing(&directory, &[], false)).await;
    let into = tempfile::tempdir().unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let out = checkout(&server, into.path(), tmp.path());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("only in part") && stderr.contains("more than 1000 listings"),
        "{stderr}"
    );
    let listings = server
        .received_requests()
        .await
        .unwrap()
        .iter()
        .filter(|r| r.url.path().contains("/git/trees/"))
        .count();
    assert_eq!(listings, 1000, "the 1,001st listing is never asked for");
}

#[tokio::test]
async fn checkout_stops_waiting_out_rate_limits_once_its_budget_is_spent() {
    let main: &[u8] = b"# main\n";
    let hidden: &[u8] = b"resource {}\n";
    let files: [(&str, &[u8]); 2] = [("main.tf", main), ("hidden/iam.tf", hidden)];
    let server = github_serving(&files, tarball(&files[..1])).await;
    // Three secondary limits of a second each, then the blob; the step may wait 2 s in all.
    Mock::given(method("GET"))
        .and(path(format!(
            "/repos/Codertocat/Hello-World/git/blobs/{}",
            blob_id(hidden)
        )))
        .respond_with(
            ResponseTemplate::new(403)
                .insert_header("retry-after", "1")
                .set_body_string("{\"message\":\"You have exceeded a secondary rate limit.\"}"),
        )
        .up_to_n_times(3)
        .with_priority(1)
        .mount(&server)
        .await;
    let into = tempfile::tempdir().unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let started = std::time::Instant::now();
    let out = checkout_with(
        &server,
        into.path(),
        tmp.path(),
        &["--rate-limit-wait-budget-seconds", "2"],
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("this step already waited 2 s for rate limits, 2 s at most"),
        "{stderr}"
    );
    assert!(started.elapsed() >= std::time::Duration::from_secs(2));
    assert!(!into.path().join("hidden/iam.tf").exists());
}

const UID: &str = "5f0c7a4e-1b2d-4c3e-8f9a-0b1c2d3e4f50";

/// A scan pod's report step as the tests set it up: a temporary directory holding `out/`
/// with the terraform KICS report, and the per-scan key of `UID` in a file.
fn report_workspace() -> (tempfile::TempDir, std::path::PathBuf, std::path::PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let out_dir = dir.path().join("out");
    std::fs::create_dir(&out_dir).unwrap();
    std::fs::copy(
        fixture("kics/kics-v2_mixed-17-findings-terraform_e2e086.json"),
        out_dir.join("results.json"),
    )
    .unwrap();
    let master = gatehouse_operator::keys::MasterKey::from_file_contents(
        gatehouse_tests::operator::MASTER_KEY,
    )
    .unwrap();
    let key_file = dir.path().join("signing-key");
    std::fs::write(&key_file, master.scan_key(UID).to_hex()).unwrap();
    (dir, out_dir, key_file)
}

#[tokio::test]
async fn report_publishes_a_signed_result_the_operator_can_verify() {
    let redis = RedisServer::start().unwrap();
    let (_dir, out_dir, key_file) = report_workspace();
    let uid = UID;
    let out = Command::new(gatehouse_tests::binaries::agent())
        .args(["report", "--scanner", "kics", "--scanner-name", "kics"])
        .args([
            "--scan-request",
            "gatehouse-scans/hello-world-pr2-ec26c3e-016643a9",
        ])
        .args(["--uid", uid, "--attempt", "1", "--sha", SHA])
        .arg("--output-dir")
        .arg(&out_dir)
        .args(["--source-dir", "/path/e2e/fixtures/samples"])
        .arg("--key-file")
        .arg(&key_file)
        .args(["--redis-url", &redis.url()])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert!(stderr.contains("17 findings"), "{stderr}");
    let client = redis::Client::open(redis.url()).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let reply: redis::streams::StreamRangeReply = redis::cmd("XRANGE")
        .arg(RESULTS_STREAM)
        .arg("-")
        .arg("+")
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(reply.ids.len(), 1);
    let fields: Vec<(String, Vec<u8>)> = reply.ids[0]
        .map
        .iter()
        .map(|(k, v)| match v {
            redis::Value::BulkString(b) => (k.clone(), b.clone()),
            other => panic!("{other:?}"),
        })
        .collect();
    let entry =
        ResultEntry::from_fields(fields.iter().map(|(k, v)| (k.as_str(), v.as_slice()))).unwrap();
    assert_eq!(entry.uid, uid);
    let signed = ResultEntry::signed_bytes(entry.encoding, &entry.payload);
    let master = gatehouse_operator::keys::MasterKey::from_file_contents(
        gatehouse_tests::operator::MASTER_KEY,
    )
    .unwrap();
    assert!(master.scan_key(uid).verify(&signed, &entry.signature));
    assert!(!master.scan_key("another").verify(&signed, &entry.signature));
    let result: ScanResult = serde_json::from_slice(&entry.payload).unwrap();
    assert_eq!(result.outcome, ScanOutcome::Completed);
    assert_eq!(result.counts.high, 6);
    assert_eq!(result.findings.len(), 17);
    assert_eq!(result.head_sha, SHA);
    assert_eq!(result.result_id.len(), 32);
}

#[tokio::test]
async fn report_failures_say_whether_trying_again_can_help() {
    let redis = RedisServer::start().unwrap();
    let (_dir, out_dir, key_file) = report_workspace();
    let uid = UID;
    // Without Redis: a failure that may pass (the pod fails, the operator tries again).
    let out = Command::new(gatehouse_tests::binaries::agent())
        .args(["report", "--scanner", "kics", "--scanner-name", "kics"])
        .args([
            "--scan-request",
            "ns/name",
            "--uid",
            uid,
            "--attempt",
            "1",
            "--sha",
            SHA,
        ])
        .arg("--output-dir")
        .arg(&out_dir)
        .arg("--key-file")
        .arg(&key_file)
        .args(["--redis-url", "redis://127.0.0.1:1"])
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // A key that is not one: refused for good.
    std::fs::write(&key_file, "not hex").unwrap();
    let out = Command::new(gatehouse_tests::binaries::agent())
        .args(["report", "--scanner", "kics", "--scanner-name", "kics"])
        .args([
            "--scan-request",
            "ns/name",
            "--uid",
            uid,
            "--attempt",
            "1",
            "--sha",
            SHA,
        ])
        .arg("--output-dir")
        .arg(&out_dir)
        .arg("--key-file")
        .arg(&key_file)
        .args(["--redis-url", &redis.url()])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("64 hex digits"));
}
