//! The scanners' report parsers against the real reports in `tests/fixtures/` (origins in their
//! `SOURCES.md`) and against broken and hostile variants of them.

#![allow(clippy::unwrap_used)]

use gatehouse_crds::severity::{Severity, SeverityCounts};

use super::parse::ReportError;
use super::{ExitStatus, blackduck, kics};

macro_rules! fixture {
    ($path:literal) => {
        include_bytes!(concat!("../../../tests/fixtures/", $path)).as_slice()
    };
}

const E2E_ROOT: &str = "/path/e2e/fixtures/samples";

fn counts(critical: i64, high: i64, medium: i64, low: i64, info: i64) -> SeverityCounts {
    SeverityCounts {
        critical,
        high,
        medium,
        low,
        info,
    }
}

#[test]
fn a_kics_report_without_findings_has_none() {
    let parsed = kics::parse_json(
        "results.json",
        fixture!("kics/kics-v2_zero-findings_e2e073.json"),
        "/workspace/src",
    )
    .unwrap();
    assert!(parsed.findings.is_empty());
    assert_eq!(parsed.counts, SeverityCounts::default());
    assert_eq!(parsed.scanner_version.as_deref(), Some("development"));
    assert!(parsed.notes.is_empty());
}

#[test]
fn kics_terraform_findings_are_counted_sorted_and_made_repository_relative() {
    let parsed = kics::parse_json(
        "results.json",
        fixture!("kics/kics-v2_mixed-17-findings-terraform_e2e086.json"),
        E2E_ROOT,
    )
    .unwrap();
    assert_eq!(parsed.counts, counts(0, 6, 2, 7, 2));
    assert_eq!(parsed.findings.len(), 17);
    let first = &parsed.findings[0];
    assert_eq!(first.rule_id, "af173fde-95ea-4584-b904-bb3923ac4bda");
    assert_eq!(first.title, "Redshift Publicly Accessible");
    assert_eq!(first.severity, Severity::High);
    assert_eq!(first.path.as_deref(), Some("terraform.tf"));
    assert_eq!((first.start_line, first.end_line), (Some(1), Some(1)));
    assert_eq!(
        first.fingerprint,
        "4234052fbe1fed19a465cec7fbed9eb156c22eeae7d97c3ac8096bcc7b39a2fe"
    );
    assert_eq!(
        first.message,
        "Expected: aws_redshift_cluster.publicly_accessible should be defined and not null\n\
         Actual: aws_redshift_cluster.publicly_accessible is undefined or null"
    );
    assert_eq!(
        first.help_url.as_deref(),
        Some(
            "https://registry.terraform.io/providers/hashicorp/aws/latest/docs/resources/redshift_cluster"
        )
    );
    assert_eq!(
        parsed.findings[1].rule_id,
        "cfdcabb0-fc06-427c-865b-c59f13e898ce"
    );
    // Most severe first throughout.
    assert!(
        parsed
            .findings
            .windows(2)
            .all(|w| w[0].severity >= w[1].severity)
    );
}

#[test]
fn kics_paths_outside_the_checkout_are_kept_but_not_given_a_place() {
    let parsed = kics::parse_json(
        "results.json",
        fixture!("kics/kics-v2_mixed-17-findings-terraform_e2e086.json"),
        "/workspace/src",
    )
    .unwrap();
    assert_eq!(parsed.findings.len(), 17);
    assert!(parsed.findings.iter().all(|f| f.path.is_none()));
    assert_eq!(
        parsed.notes,
        ["17 findings named a file outside the repository and cannot be annotated"]
    );
}

#[test]
fn kics_cloudformation_and_windows_style_paths() {
    let parsed = kics::parse_json(
        "results.json",
        fixture!("kics/kics-v2_mixed-24-findings-cloudformation_e2e032.json"),
        E2E_ROOT,
    )
    .unwrap();
    assert_eq!(parsed.counts, counts(0, 6, 10, 5, 3));
    assert_eq!(
        parsed.findings[0].title,
        "Unrestricted Security Group Ingress"
    );
    assert_eq!(parsed.findings[0].start_line, Some(24));

    let critical = kics::parse_json(
        "results.json",
        fixture!("kics/kics-v2_critical-2-findings-cicd_e2e089.json"),
        "/workspace/src",
    )
    .unwrap();
    assert_eq!(critical.counts, counts(2, 0, 0, 0, 0));
    let first = &critical.findings[0];
    assert_eq!(first.title, "Run Block Injection");
    assert_eq!(
        first.path.as_deref(),
        Some("path/test/fixtures/test_critical_severity/run_block_injection/test/positive1.yaml")
    );
    assert_eq!(first.start_line, Some(10));
    assert_eq!(
        first.fingerprint,
        "2197922dab336742ff58010e01218006c9b2c930a840018ef8b42fb1284f2a45"
    );
}

#[test]
fn an_older_kics_report_without_a_critical_counter_parses() {
    let mut report: serde_json::Value = serde_json::from_slice(fixture!(
        "kics/kics-v2_mixed-17-findings-terraform_e2e086.json"
    ))
    .unwrap();
    report["severity_counters"]
        .as_object_mut()
        .unwrap()
        .remove("CRITICAL");
    report["kics_version"] = "v1.7.13".into();
    let bytes = serde_json::to_vec(&report).unwrap();
    let parsed = kics::parse_json("results.json", &bytes, E2E_ROOT).unwrap();
    assert_eq!(parsed.counts, counts(0, 6, 2, 7, 2));
    assert_eq!(parsed.scanner_version.as_deref(), Some("v1.7.13"));
}

#[test]
fn a_kics_report_with_a_wrong_type_names_the_field() {
    let mut report: serde_json::Value = serde_json::from_slice(fixture!(
        "kics/kics-v2_mixed-17-findings-terraform_e2e086.json"
    ))
    .unwrap();
    report["queries"][2]["files"][0]["line"] = "ten".into();
    let err = kics::parse_json(
        "results.json",
        &serde_json::to_vec(&report).unwrap(),
        E2E_ROOT,
    )
    .unwrap_err();
    assert_eq!(
        err.to_string(),
        "results.json: queries[2].files[0].line: invalid type: string \"ten\", expected i64"
    );

    report["queries"][2]["files"][0]["line"] = 10.into();
    report["queries"][1]["severity"] = "SEVERE".into();
    let err = kics::parse_json(
        "results.json",
        &serde_json::to_vec(&report).unwrap(),
        E2E_ROOT,
    )
    .unwrap_err();
    assert_eq!(
        err.to_string(),
        "results.json: queries[1].severity: unknown severity \"SEVERE\""
    );
}

#[test]
fn a_truncated_or_empty_kics_report_is_an_error_not_zero_findings() {
    let whole = fixture!("kics/kics-v2_mixed-17-findings-terraform_e2e086.json");
    let err = kics::parse_json("results.json", &whole[..whole.len() / 2], E2E_ROOT).unwrap_err();
    assert!(matches!(err, ReportError::Syntax { .. }), "{err}");
    assert!(
        err.to_string()
            .starts_with("results.json: not valid JSON at line ")
    );
    let err = kics::parse_json("results.json", b"", E2E_ROOT).unwrap_err();
    assert_eq!(err.to_string(), "results.json: the report is empty");
    let err = kics::parse_json("results.json", b"[1, 2]", E2E_ROOT).unwrap_err();
    assert!(matches!(err, ReportError::Shape { .. }), "{err}");
}

#[test]
fn kics_sarif_is_read_when_the_json_report_is_missing() {
    let parsed = kics::parse_sarif(
        "results.sarif",
        fixture!("kics/kics-v2_high-1-result-cicd_e2e080.sarif"),
        "/workspace/src",
    )
    .unwrap();
    assert_eq!(parsed.counts, counts(0, 1, 0, 0, 0));
    let finding = &parsed.findings[0];
    assert_eq!(finding.rule_id, "62ff6823-927a-427f-acf9-f1ea2932d616");
    assert_eq!(finding.title, "Script Block Injection");
    assert_eq!(
        finding.path.as_deref(),
        Some("test/fixtures/test_sarif_cwe_report/script_block_injection/test/positive1.yaml")
    );
    assert_eq!(finding.start_line, Some(17));
    assert_eq!(
        finding.message,
        "Script block contains dangerous input controlled by user."
    );
    assert_eq!(finding.fingerprint.len(), 64);
    assert_eq!(
        parsed.notes.len(),
        1,
        "the summary says critical shows as high"
    );
}

#[test]
fn kics_exit_codes_mean_what_the_reference_says() {
    for usable in [0, 20, 30, 40, 50, 60] {
        assert_eq!(kics::exit_status(usable), ExitStatus::Usable, "{usable}");
    }
    assert!(matches!(kics::exit_status(126), ExitStatus::Error(e) if e.contains("engine error")));
    assert!(matches!(kics::exit_status(130), ExitStatus::Cancelled(_)));
    assert!(matches!(kics::exit_status(137), ExitStatus::Cancelled(e) if e.contains("SIGKILL")));
    assert!(matches!(kics::exit_status(1), ExitStatus::Error(e) if e.contains("unexpected")));
}

#[test]
fn black_duck_legacy_report_has_one_critical_finding_per_distinct_violation() {
    let parsed = blackduck::parse(
        "scan/x_BlackDuck_DeveloperMode_Result.json",
        fixture!("blackduck/detect-DeveloperMode-Result_legacy-schema_3-violations.json"),
        "/source",
    )
    .unwrap();
    // Three items, two of them the same component version with the same violation.
    assert_eq!(parsed.counts, counts(2, 0, 0, 0, 0));
    assert_eq!(
        parsed.notes,
        ["1 duplicate finding (same fingerprint) counted once"]
    );
    let titles: Vec<&str> = parsed.findings.iter().map(|f| f.title.as_str()).collect();
    assert_eq!(
        titles,
        [
            "gogo-protobuf v1.2.0 violates overall score => 9",
            "gogo-protobuf v1.3.1 violates overall score => 9"
        ]
    );
    let finding = &parsed.findings[1];
    assert_eq!(finding.rule_id, "overall score => 9");
    assert_eq!(finding.path, None);
    assert_eq!(
        finding.message.lines().next().unwrap(),
        "gogo-protobuf v1.3.1 (golang:github.com/gogo/protobuf:v1.3.1) violates overall score => 9."
    );
    assert!(
        finding
            .message
            .contains("Vulnerabilities: CVE-2021-3121 (CRITICAL, score 9.8)."),
        "{}",
        finding.message
    );
}

#[test]
fn black_duck_items_without_a_violated_policy_are_not_findings() {
    let parsed = blackduck::parse(
        "full-result.json",
        fixture!("blackduck/SANITIZED_detect-action_full-result-item_no-violations.json"),
        "/source",
    )
    .unwrap();
    assert!(parsed.findings.is_empty());
    let parsed = blackduck::parse("empty.json", b"[]", "/source").unwrap();
    assert!(parsed.findings.is_empty());
}

/// A current-schema item (Detect 8+), written from the documented view
/// (`blackduck-common-api` `DeveloperScansScanView`, `reference/scanners.md` §2.4): no public
/// repository commits one from a real run.
const CURRENT_SHAPE: &str = r#"[{
  "componentName": "Lodash", "versionName": "4.17.4",
  "componentIdentifier": "npmjs:lodash/4.17.4", "externalId": "lodash/4.17.4",
  "violatingPolicies": [
    {"policyName": "No high vulnerabilities", "policySeverity": "MAJOR", "policyStatus": "IN_VIOLATION"},
    {"policyName": "No GPL", "policySeverity": "MINOR"}
  ],
  "policyViolationVulnerabilities": [
    {"name": "CVE-2019-10744", "vulnSeverity": "CRITICAL", "overallScore": 9.1,
     "violatingPolicies": [{"policyName": "No high vulnerabilities", "policySeverity": "MAJOR"}]}
  ],
  "policyViolationLicenses": [],
  "shortTermUpgradeGuidance": {"versionName": "4.17.12"},
  "longTermUpgradeGuidance": {"versionName": "4.17.21"},
  "someFutureField": {"ignored": true}
}]"#;

#[test]
fn black_duck_current_shape_takes_the_policy_severity() {
    let parsed = blackduck::parse("r.json", CURRENT_SHAPE.as_bytes(), "/source").unwrap();
    assert_eq!(parsed.counts, counts(0, 1, 0, 0, 0));
    let finding = &parsed.findings[0];
    assert_eq!(finding.rule_id, "No GPL, No high vulnerabilities");
    assert_eq!(
        finding.message,
        "Lodash 4.17.4 (npmjs:lodash/4.17.4) violates No GPL, No high vulnerabilities.\n\
         Vulnerabilities: CVE-2019-10744 (CRITICAL, score 9.1).\n\
         Upgrade to 4.17.12 (short term) or 4.17.21 (long term)."
    );
    // The paged full-result view holds the same items.
    let paged = format!(r#"{{"totalCount": 1, "items": {CURRENT_SHAPE}}}"#);
    let from_paged = blackduck::parse("r.json", paged.as_bytes(), "/source").unwrap();
    assert_eq!(from_paged.findings, parsed.findings);
}

#[test]
fn a_black_duck_report_of_the_wrong_shape_says_what_was_expected() {
    let err = blackduck::parse("r.json", br#""just a string""#, "/source").unwrap_err();
    assert!(
        err.to_string()
            .starts_with("r.json: .: expected an array of components"),
        "{err}"
    );
}

#[test]
fn black_duck_exit_codes_name_their_failure() {
    assert_eq!(blackduck::exit_status(0), ExitStatus::Usable);
    assert_eq!(blackduck::exit_status(3), ExitStatus::Usable);
    assert!(
        matches!(blackduck::exit_status(1), ExitStatus::Error(e) if e.starts_with("FAILURE_BLACKDUCK_CONNECTIVITY"))
    );
    assert!(matches!(
        blackduck::exit_status(137),
        ExitStatus::Cancelled(_)
    ));
    assert!(matches!(blackduck::exit_status(42), ExitStatus::Error(e) if e.contains("42")));
}
