//! Conclusions, titles, summaries and annotations from real KICS reports (`tests/fixtures/kics`).

#![allow(clippy::unwrap_used)]

use gatehouse_crds::scanrequest::Conclusion;
use gatehouse_crds::severity::{FailOn, SeverityCounts};
use gatehouse_crds::stream::{Finding, ScanOutcome, ScanResult};

use super::verdict::{
    BaselineView, Comparison, GITHUB_SUMMARY_LIMIT, MAX_SUMMARY_CHARS, QUOTED_ERROR_CHARS, verdict,
    with_unposted_note,
};
use crate::scanners::kics;

fn terraform() -> ScanResult {
    let parsed = kics::parse_json(
        "results.json",
        include_bytes!("../../tests/fixtures/kics/kics-v2_mixed-17-findings-terraform_e2e086.json"),
        "/path/e2e/fixtures/samples",
    )
    .unwrap();
    ScanResult {
        result_id: "r1".into(),
        namespace: "gatehouse-scans".into(),
        scan_request: "hello-world-pr2-ec26c3e-016643a9".into(),
        uid: "u".into(),
        scanner: "kics".into(),
        head_sha: "ec26c3e57ca3a959ca5aad62de7213c562f8c821".into(),
        attempt: 1,
        outcome: ScanOutcome::Completed,
        counts: parsed.counts,
        findings: parsed.findings,
        truncated: false,
        scanner_version: parsed.scanner_version,
        notes: parsed.notes,
        sarif: None,
        baseline: None,
    }
}

const REPRODUCE: &str = "```sh\nkics scan -p .\n```";

#[test]
fn findings_at_the_policys_threshold_fail_the_check_and_are_annotated_by_severity() {
    let result = terraform();
    let v = verdict(&result, FailOn::High, 500, &Comparison::Off, REPRODUCE);
    assert_eq!(v.conclusion, Conclusion::Failure);
    assert_eq!(v.title, "17 findings: 6 high, 2 medium, 7 low, 2 info");
    assert!(
        v.summary.starts_with(
            "**Failed**: 6 findings at or above **high**, the policy's `failOn` for this scanner."
        ),
        "{}",
        v.summary
    );
    assert!(v.summary.contains("| high | 6 |"));
    assert!(v.summary.contains("| **total** | **17** |"));
    assert!(
        v.summary
            .contains("17 of 17 findings are annotated on their lines.")
    );
    assert!(
        v.summary
            .contains("### Reproduce locally\n\n```sh\nkics scan -p .\n```")
    );
    assert_eq!(v.annotations.len(), 17);
    let first = &v.annotations[0];
    assert_eq!(first.path, "terraform.tf");
    assert_eq!((first.start_line, first.end_line), (1, 1));
    assert_eq!(first.annotation_level, "failure");
    assert_eq!(first.title, "[high] Redshift Publicly Accessible");
    assert!(
        first
            .message
            .contains("Rule: af173fde-95ea-4584-b904-bb3923ac4bda")
    );
    let levels: Vec<&str> = v.annotations.iter().map(|a| a.annotation_level).collect();
    assert_eq!(levels.iter().filter(|l| **l == "failure").count(), 6);
    assert_eq!(levels.iter().filter(|l| **l == "warning").count(), 9);
    assert_eq!(levels.iter().filter(|l| **l == "notice").count(), 2);
}

#[test]
fn findings_below_the_threshold_pass_and_never_fails_nothing() {
    let result = terraform();
    let v = verdict(&result, FailOn::Critical, 500, &Comparison::Off, REPRODUCE);
    assert_eq!(v.conclusion, Conclusion::Success);
    assert!(
        v.summary
            .starts_with("**Passed**: no finding at or above **critical**")
    );
    let v = verdict(&result, FailOn::Never, 500, &Comparison::Off, REPRODUCE);
    assert_eq!(v.conclusion, Conclusion::Success);
    let mut clean = terraform();
    clean.findings.clear();
    clean.counts = SeverityCounts::default();
    let v = verdict(&clean, FailOn::Info, 500, &Comparison::Off, REPRODUCE);
    assert_eq!(
        (v.conclusion, v.title.as_str()),
        (Conclusion::Success, "No findings")
    );
}

#[test]
fn annotations_stop_at_the_cap_and_the_summary_counts_what_was_left_out() {
    let mut result = terraform();
    let one = result.findings[0].clone();
    result.findings = (0..120)
        .map(|i| Finding {
            fingerprint: format!("f{i:03}"),
            start_line: Some(i + 1),
            end_line: Some(i + 1),
            ..one.clone()
        })
        .collect();
    result.counts = SeverityCounts {
        high: 120,
        ..SeverityCounts::default()
    };
    let v = verdict(&result, FailOn::High, 100, &Comparison::Off, REPRODUCE);
    assert_eq!(v.annotations.len(), 100);
    assert_eq!(v.annotations[99].start_line, 100);
    assert!(
        v.summary
            .contains("100 of 120 findings are annotated on their lines. 20 more are not: the policy's `maxAnnotations` is 100."),
        "{}",
        v.summary
    );
}

#[test]
fn baseline_mode_decides_and_annotates_on_what_the_pull_request_introduces() {
    let result = terraform();
    // The base commit already had every finding but the two "Redshift Publicly Accessible".
    let mut base: Vec<String> = result
        .findings
        .iter()
        .filter(|f| f.title != "Redshift Publicly Accessible")
        .map(|f| f.fingerprint.clone())
        .collect();
    base.sort();
    let view = BaselineView {
        sha: "0123456789012345678901234567890123456789",
        fingerprints: &base,
    };
    let v = verdict(
        &result,
        FailOn::High,
        500,
        &Comparison::Against(view),
        REPRODUCE,
    );
    let new = v.new_counts.unwrap();
    assert_eq!(new.total(), 2);
    assert_eq!(new.high, 2);
    assert_eq!(v.conclusion, Conclusion::Failure);
    assert_eq!(v.title, "2 new findings: 2 high (17 in all)");
    assert_eq!(v.annotations.len(), 2);
    assert!(
        v.annotations
            .iter()
            .all(|a| a.title == "[high] Redshift Publicly Accessible")
    );
    assert!(v.summary.contains("| high | 2 | 4 | 6 |"), "{}", v.summary);
    assert!(
        v.summary
            .contains("compared with the base commit `0123456789012345678901234567890123456789`")
    );

    // Everything pre-existing: passes, and says so.
    let all: Vec<String> = {
        let mut all: Vec<String> = result
            .findings
            .iter()
            .map(|f| f.fingerprint.clone())
            .collect();
        all.sort();
        all
    };
    let view = BaselineView {
        sha: "0123456789012345678901234567890123456789",
        fingerprints: &all,
    };
    let v = verdict(
        &result,
        FailOn::High,
        500,
        &Comparison::Against(view),
        REPRODUCE,
    );
    assert_eq!(v.conclusion, Conclusion::Success);
    assert_eq!(v.title, "No new findings (17 pre-existing)");
    assert!(v.annotations.is_empty());

    let v = verdict(
        &result,
        FailOn::High,
        500,
        &Comparison::Unavailable("its scan failed".into()),
        REPRODUCE,
    );
    assert_eq!(v.conclusion, Conclusion::Failure);
    assert!(
        v.summary
            .contains("the base commit's findings are not known (its scan failed)")
    );
}

#[test]
fn in_baseline_mode_findings_left_out_of_a_cut_result_count_as_new() {
    // 25,000 low findings, 20,000 sent, every sent one on the base commit: the 5,000 not sent
    // may be new, and with failOn low they fail the check.
    let mut result = terraform();
    let one = result.findings[0].clone();
    result.findings = (0..20_000)
        .map(|i| Finding {
            fingerprint: format!("f{i:05}"),
            severity: gatehouse_crds::severity::Severity::Low,
            ..one.clone()
        })
        .collect();
    result.counts = SeverityCounts {
        low: 25_000,
        ..SeverityCounts::default()
    };
    result.truncated = true;
    let mut base: Vec<String> = result
        .findings
        .iter()
        .map(|f| f.fingerprint.clone())
        .collect();
    base.sort();
    let view = BaselineView {
        sha: "0123456789012345678901234567890123456789",
        fingerprints: &base,
    };
    let v = verdict(
        &result,
        FailOn::Low,
        500,
        &Comparison::Against(view),
        REPRODUCE,
    );
    assert_eq!(v.new_counts.unwrap().low, 5_000);
    assert_eq!(v.conclusion, Conclusion::Failure);
}

#[test]
fn a_huge_result_keeps_its_summary_under_githubs_limit_with_whole_rows() {
    let mut result = terraform();
    let one = result.findings[0].clone();
    result.findings = (0..100_000)
        .map(|i| Finding {
            fingerprint: format!("f{i:06}"),
            title: format!("{} {}", one.title, "x".repeat(150)),
            ..one.clone()
        })
        .collect();
    result.notes = (0..2_000)
        .map(|i| format!("note {i}: {}", "y".repeat(40)))
        .collect();
    result.counts = SeverityCounts {
        high: 100_000,
        ..SeverityCounts::default()
    };
    let v = verdict(&result, FailOn::High, 500, &Comparison::Off, REPRODUCE);
    assert!(v.summary.chars().count() <= MAX_SUMMARY_CHARS + 60);
    assert_eq!(v.annotations.len(), 500);
    assert_eq!(v.title, "100000 findings: 100000 high");
}

#[test]
fn a_note_of_refused_annotations_with_a_huge_error_keeps_the_summary_within_githubs_limit() {
    // A summary at its cap, and GitHub's 422 message of 100,000 characters, many of them
    // multi-byte: the summary sent must stay within GitHub's 65,535 characters (a longer one is
    // refused, and the run stays in progress), the note whole at its end.
    let mut result = terraform();
    let one = result.findings[0].clone();
    result.findings = (0..20_000)
        .map(|i| Finding {
            fingerprint: format!("f{i:06}"),
            title: format!("{} {}", one.title, "é".repeat(150)),
            ..one.clone()
        })
        .collect();
    result.notes = (0..2_000)
        .map(|i| format!("note {i}: {}", "y".repeat(40)))
        .collect();
    let v = verdict(&result, FailOn::High, 500, &Comparison::Off, REPRODUCE);
    assert!(v.summary.chars().count() > MAX_SUMMARY_CHARS - 500);
    let error = format!(
        "failed to call GitHub PATCH /repos/o/r/check-runs/1 (HTTP 422): {}",
        "ü".repeat(100_000)
    );
    for what in ["a batch of annotations", "the annotations"] {
        let noted = with_unposted_note(&v.summary, what, &error, 450, 500);
        assert!(
            noted.chars().count() <= GITHUB_SUMMARY_LIMIT,
            "{} characters",
            noted.chars().count()
        );
        assert!(
            noted.ends_with(": 450 of the 500 annotations were not posted."),
            "{}",
            noted.chars().rev().take(200).collect::<String>()
        );
        let note = &noted[noted.rfind("\n\nGitHub refused").unwrap()..];
        assert!(note.starts_with(&format!("\n\nGitHub refused {what} (failed to call GitHub")));
        assert!(note.chars().count() < QUOTED_ERROR_CHARS + 150, "{note}");
    }
    // Whatever summary it is given: its end gives way to the note.
    let noted = with_unposted_note(&"x".repeat(70_000), "the annotations", &error, 1, 2);
    assert_eq!(noted.chars().count(), GITHUB_SUMMARY_LIMIT);
    assert!(noted.ends_with(": 1 of the 2 annotations were not posted."));
    // A short error is quoted whole, and a short summary kept whole.
    let noted = with_unposted_note("**Failed**", "the annotations", "HTTP 422: invalid", 3, 20);
    assert_eq!(
        noted,
        "**Failed**\n\nGitHub refused the annotations (HTTP 422: invalid): 3 of the 20 \
         annotations were not posted."
    );
}

#[test]
fn a_scanner_error_fails_with_its_exit_code_never_as_no_findings() {
    let mut result = terraform();
    result.outcome = ScanOutcome::ScannerError {
        exit_code: Some(0),
        message: "scanner error: exit code 0 but no report was written (looked for …)".into(),
    };
    result.findings.clear();
    let v = verdict(&result, FailOn::Never, 500, &Comparison::Off, REPRODUCE);
    assert_eq!(v.conclusion, Conclusion::Failure);
    assert_eq!(v.title, "Scanner error: exit code 0, no report");
    assert!(v.summary.contains("no report was written"));
    assert!(v.summary.contains(
        "kubectl logs -n gatehouse-scans -l gatehouse.dev/scanrequest=hello-world-pr2-ec26c3e-016643a9,gatehouse.dev/scanner=kics -c scan"
    ));
    assert!(v.annotations.is_empty());
}
