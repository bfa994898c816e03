//! What a published scan result shows on the pull request: the check run's conclusion, title,
//! Markdown summary and annotations, from the result, the scanner's policy and (baseline mode)
//! the base commit's fingerprints. A plain function of data: no client, no clock.
//!
//! Conclusion: `failure` when a finding reaches the scanner's `failOn` (in baseline mode: a
//! finding the pull request introduces), or when the scanner produced no usable report;
//! otherwise `success`. The summary stays below GitHub's 65,535 characters by listing fewer
//! findings, never by cutting a table in half.

use std::fmt::Write as _;

use gatehouse_crds::scanrequest::Conclusion;
use gatehouse_crds::severity::{FailOn, Severity, SeverityCounts};
use gatehouse_crds::stream::{Finding, ScanOutcome, ScanResult};

/// GitHub's limit on a check run's summary, in characters, less a margin.
pub const MAX_SUMMARY_CHARS: usize = 65_000;
/// GitHub's own limit on a check run's summary, in characters: a longer one is refused (422).
pub const GITHUB_SUMMARY_LIMIT: usize = 65_535;
/// Characters of an error of GitHub's quoted in a summary.
pub const QUOTED_ERROR_CHARS: usize = 300;
/// Most findings listed in the summary's table.
pub const TOP_FINDINGS: usize = 30;
/// Annotations GitHub takes per request.
pub const ANNOTATIONS_PER_REQUEST: usize = 50;

/// One annotation, as the Checks API takes it.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Annotation {
    /// Repository-relative path.
    pub path: String,
    /// 1-based first line.
    pub start_line: u32,
    /// 1-based last line.
    pub end_line: u32,
    /// `failure`, `warning` or `notice`.
    pub annotation_level: &'static str,
    /// At most 255 characters.
    pub title: String,
    /// What is wrong.
    pub message: String,
}

/// The findings of the base commit, for baseline mode.
#[derive(Clone, Debug)]
pub struct BaselineView<'a> {
    /// The base commit.
    pub sha: &'a str,
    /// Its findings' fingerprints, sorted.
    pub fingerprints: &'a [String],
}

impl BaselineView<'_> {
    fn has(&self, fingerprint: &str) -> bool {
        self.fingerprints
            .binary_search_by(|f| f.as_str().cmp(fingerprint))
            .is_ok()
    }
}

/// Whether baseline mode applies to this result, and with what.
#[derive(Clone, Debug)]
pub enum Comparison<'a> {
    /// Baseline mode off: every finding counts.
    Off,
    /// Baseline mode on, with the base commit's findings.
    Against(BaselineView<'a>),
    /// Baseline mode on, but the base commit's findings are not known (its scan failed, or its
    /// cached findings expired): every finding counts, and the summary says why.
    Unavailable(String),
}

/// What the check run shows.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Verdict {
    /// Its conclusion.
    pub conclusion: Conclusion,
    /// Output title (short).
    pub title: String,
    /// Output summary (Markdown, under [`MAX_SUMMARY_CHARS`]).
    pub summary: String,
    /// The annotations, most severe first, at most the cap.
    pub annotations: Vec<Annotation>,
    /// Every finding on the head commit, by severity.
    pub counts: SeverityCounts,
    /// In baseline mode, the findings the pull request introduces.
    pub new_counts: Option<SeverityCounts>,
}

/// The verdict on `result` for a scanner with `fail_on`, annotating at most `max_annotations`
/// findings. `reproduce` is the Markdown telling how to run the scan locally.
pub fn verdict(
    result: &ScanResult,
    fail_on: FailOn,
    max_annotations: usize,
    comparison: &Comparison<'_>,
    reproduce: &str,
) -> Verdict {
    if let ScanOutcome::ScannerError { exit_code, message } = &result.outcome {
        return scanner_error(result, *exit_code, message, reproduce);
    }
    let baseline = match comparison {
        Comparison::Against(view) => Some(view),
        _ => None,
    };
    let is_new = |f: &Finding| baseline.is_none_or(|b| !b.has(&f.fingerprint));
    let considered: Vec<&Finding> = result.findings.iter().filter(|f| is_new(f)).collect();
    // The counts of what the decision is made on. Without baseline they are the result's own
    // (which cover findings beyond the sent ones too). With it, a finding is pre-existing only
    // when it was sent and its fingerprint is the base's: findings the agent left out (beyond
    // its cap) count as new, so a cut result never passes what it would fail.
    let new_counts = baseline.map(|b| {
        let mut pre_existing = SeverityCounts::default();
        for finding in result.findings.iter().filter(|f| b.has(&f.fingerprint)) {
            pre_existing.add(finding.severity);
        }
        let new = |s: Severity| (result.counts.get(s) - pre_existing.get(s)).max(0);
        SeverityCounts {
            critical: new(Severity::Critical),
            high: new(Severity::High),
            medium: new(Severity::Medium),
            low: new(Severity::Low),
            info: new(Severity::Info),
        }
    });
    let decided_on = new_counts.unwrap_or(result.counts);
    let fails = fail_on.fails(&decided_on);
    let conclusion = if fails {
        Conclusion::Failure
    } else {
        Conclusion::Success
    };
    let annotations: Vec<Annotation> = considered
        .iter()
        .filter_map(|f| annotation(f))
        .take(max_annotations)
        .collect();
    let annotatable = considered.iter().filter(|f| f.path.is_some()).count();
    let summary = summary(&Summary {
        result,
        head: verdict_line(fails, fail_on, &decided_on, baseline.is_some()),
        tables: severity_table(&result.counts, new_counts.as_ref()),
        considered: &considered,
        annotated: annotations.len(),
        annotatable,
        max_annotations,
        comparison,
        reproduce,
    });
    Verdict {
        conclusion,
        title: title(&result.counts, new_counts.as_ref()),
        summary,
        annotations,
        counts: result.counts,
        new_counts,
    }
}

/// What the summary is made of.
struct Summary<'a> {
    result: &'a ScanResult,
    head: String,
    tables: String,
    considered: &'a [&'a Finding],
    annotated: usize,
    annotatable: usize,
    max_annotations: usize,
    comparison: &'a Comparison<'a>,
    reproduce: &'a str,
}

/// The Markdown summary: the verdict, the counts, the most severe findings (as many as fit
/// under GitHub's limit, never half a row), annotations, notes, how to reproduce.
fn summary(parts: &Summary<'_>) -> String {
    let result = parts.result;
    let mut tail = annotations_line(
        parts.annotated,
        parts.annotatable,
        parts.considered.len(),
        parts.max_annotations,
    );
    match parts.comparison {
        Comparison::Unavailable(why) => {
            let _ = write!(
                tail,
                "\n\nBaseline mode is on, but the base commit's findings are not known \
                 ({why}): every finding counts."
            );
        }
        Comparison::Against(view) => {
            let _ = write!(
                tail,
                "\n\nBaseline mode: compared with the base commit `{}` by fingerprint; only \
                 the findings this pull request introduces decide the conclusion and are \
                 annotated.",
                view.sha
            );
        }
        Comparison::Off => {}
    }
    if result.truncated {
        let _ = write!(
            tail,
            "\n\nThe scan found more findings than the agent sends ({} sent of {}); the counts \
             above cover all of them.",
            result.findings.len(),
            result.counts.total()
        );
    }
    if !result.notes.is_empty() {
        tail.push_str("\n\nNotes:\n");
        for note in &result.notes {
            let _ = write!(tail, "\n- {note}");
        }
    }
    let _ = write!(
        tail,
        "\n\n### Reproduce locally\n\n{}\n\nScanned commit `{}`{}.",
        parts.reproduce,
        result.head_sha,
        result
            .scanner_version
            .as_deref()
            .map_or_else(String::new, |v| format!(" with {} {v}", result.scanner))
    );
    let baseline = matches!(parts.comparison, Comparison::Against(_));
    let listed: Vec<&Finding> = parts
        .considered
        .iter()
        .copied()
        .take(TOP_FINDINGS)
        .collect();
    let mut rows = listed.len();
    let mut summary = String::new();
    loop {
        summary.clear();
        summary.push_str(&parts.head);
        summary.push_str("\n\n");
        summary.push_str(&parts.tables);
        summary.push_str(&findings_table(
            &listed[..rows],
            parts.considered.len(),
            baseline,
        ));
        summary.push_str(&tail);
        if summary.chars().count() <= MAX_SUMMARY_CHARS {
            return summary;
        }
        if rows == 0 {
            let mut cut = clip_chars(&summary, MAX_SUMMARY_CHARS - 80);
            cut.push_str("\n\n_(summary cut to GitHub's length limit)_");
            return cut;
        }
        rows /= 2;
    }
}

fn scanner_error(
    result: &ScanResult,
    exit_code: Option<i32>,
    message: &str,
    reproduce: &str,
) -> Verdict {
    let title = match exit_code {
        Some(code) if message.contains("no report") => {
            format!("Scanner error: exit code {code}, no report")
        }
        Some(code) if message.contains("unreadable") => {
            format!("Scanner error: exit code {code}, unreadable report")
        }
        Some(code) => format!("Scanner error: exit code {code}"),
        None => "Scanner error".to_owned(),
    };
    let summary = clip_chars(
        &format!(
            "**Failed**: the scanner produced no usable result, so nothing can be said about \
             this commit's findings.\n\n```\n{}\n```\n\nThe scan pod's own output: `kubectl \
             logs -n {} -l gatehouse.dev/scanrequest={},gatehouse.dev/scanner={} -c scan`.\n\n\
             ### Reproduce locally\n\n{reproduce}",
            message.replace("```", "'''"),
            result.namespace,
            result.scan_request,
            result.scanner
        ),
        MAX_SUMMARY_CHARS,
    );
    Verdict {
        conclusion: Conclusion::Failure,
        title,
        summary,
        annotations: Vec::new(),
        counts: SeverityCounts::default(),
        new_counts: None,
    }
}

/// "3 findings: 1 critical, 2 high", "No findings", "2 new findings: … (7 in all)".
fn title(counts: &SeverityCounts, new: Option<&SeverityCounts>) -> String {
    match new {
        None if counts.total() == 0 => "No findings".to_owned(),
        None => format!(
            "{}: {}",
            plural(counts.total(), "finding"),
            breakdown(counts)
        ),
        Some(new) if new.total() == 0 => {
            format!("No new findings ({} pre-existing)", counts.total())
        }
        Some(new) => format!(
            "{}: {} ({} in all)",
            plural(new.total(), "new finding"),
            breakdown(new),
            counts.total()
        ),
    }
}

fn plural(n: i64, what: &str) -> String {
    if n == 1 {
        format!("1 {what}")
    } else {
        format!("{n} {what}s")
    }
}

fn breakdown(counts: &SeverityCounts) -> String {
    Severity::DESCENDING
        .iter()
        .filter(|s| counts.get(**s) > 0)
        .map(|s| format!("{} {}", counts.get(*s), s.as_str()))
        .collect::<Vec<_>>()
        .join(", ")
}

fn verdict_line(fails: bool, fail_on: FailOn, counts: &SeverityCounts, baseline: bool) -> String {
    let which = if baseline { "new " } else { "" };
    match fail_on.threshold() {
        None => format!(
            "**Passed**: this scanner never fails a pull request (the policy's `failOn` is \
             `never`); {} reported.",
            plural(counts.total(), &format!("{which}finding"))
        ),
        Some(threshold) => {
            let at_or_above: i64 = Severity::DESCENDING
                .iter()
                .filter(|s| **s >= threshold)
                .map(|s| counts.get(*s))
                .sum();
            if fails {
                format!(
                    "**Failed**: {} at or above **{}**, the policy's `failOn` for this scanner.",
                    plural(at_or_above, &format!("{which}finding")),
                    threshold.as_str()
                )
            } else {
                format!(
                    "**Passed**: no {which}finding at or above **{}** (the policy's `failOn`).",
                    threshold.as_str()
                )
            }
        }
    }
}

fn severity_table(counts: &SeverityCounts, new: Option<&SeverityCounts>) -> String {
    let mut table = String::new();
    match new {
        None => {
            table.push_str("| Severity | Findings |\n|---|---:|\n");
            for severity in Severity::DESCENDING {
                let _ = writeln!(
                    table,
                    "| {} | {} |",
                    severity.as_str(),
                    counts.get(severity)
                );
            }
            let _ = writeln!(table, "| **total** | **{}** |", counts.total());
        }
        Some(new) => {
            table.push_str("| Severity | New | Pre-existing | All |\n|---|---:|---:|---:|\n");
            for severity in Severity::DESCENDING {
                let _ = writeln!(
                    table,
                    "| {} | {} | {} | {} |",
                    severity.as_str(),
                    new.get(severity),
                    counts.get(severity) - new.get(severity),
                    counts.get(severity)
                );
            }
            let _ = writeln!(
                table,
                "| **total** | **{}** | **{}** | **{}** |",
                new.total(),
                counts.total() - new.total(),
                counts.total()
            );
        }
    }
    table
}

fn findings_table(listed: &[&Finding], considered: usize, baseline: bool) -> String {
    if listed.is_empty() {
        return String::new();
    }
    let mut table = format!(
        "\n### Most severe {}findings\n\n| Severity | Finding | Where |\n|---|---|---|\n",
        if baseline { "new " } else { "" }
    );
    for finding in listed {
        let name = cell(&finding.title);
        let name = match &finding.help_url {
            Some(url) => format!("[{name}]({})", url.replace(')', "%29").replace(' ', "%20")),
            None => name,
        };
        let place = match (&finding.path, finding.start_line) {
            (Some(path), Some(line)) => format!("`{}:{line}`", cell(path)),
            (Some(path), None) => format!("`{}`", cell(path)),
            (None, _) => "—".to_owned(),
        };
        let _ = writeln!(
            table,
            "| {} | {name} | {place} |",
            finding.severity.as_str()
        );
    }
    if considered > listed.len() {
        let _ = writeln!(
            table,
            "\n…and {} more (annotated below, or in the scanner's report).",
            considered - listed.len()
        );
    }
    table
}

/// Text made safe for one Markdown table cell.
fn cell(text: &str) -> String {
    let one_line: String = text
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    clip_chars(&one_line.replace('|', "\\|").replace('`', "'"), 200)
}

fn annotations_line(annotated: usize, annotatable: usize, considered: usize, cap: usize) -> String {
    if considered == 0 {
        return String::new();
    }
    let mut line = format!("\n{annotated} of {considered} findings are annotated on their lines.");
    if annotatable > annotated {
        let _ = write!(
            line,
            " {} more are not: the policy's `maxAnnotations` is {cap}.",
            annotatable - annotated
        );
    }
    if considered > annotatable {
        let _ = write!(
            line,
            " {} have no place in the repository (a dependency, or a path outside it) and are \
             listed above only.",
            considered - annotatable
        );
    }
    line
}

/// The annotation of a finding, when it has a place in the repository.
pub fn annotation(finding: &Finding) -> Option<Annotation> {
    let path = finding.path.clone()?;
    let start_line = finding.start_line.unwrap_or(1).max(1);
    let end_line = finding.end_line.unwrap_or(start_line).max(start_line);
    let annotation_level = match finding.severity {
        Severity::Critical | Severity::High => "failure",
        Severity::Medium | Severity::Low => "warning",
        Severity::Info => "notice",
    };
    let mut message = finding.message.clone();
    if message.is_empty() {
        message.clone_from(&finding.title);
    }
    let _ = write!(message, "\n\nRule: {}", finding.rule_id);
    if let Some(url) = &finding.help_url {
        let _ = write!(message, "\n{url}");
    }
    Some(Annotation {
        path,
        start_line,
        end_line,
        annotation_level,
        title: clip_chars(
            &format!("[{}] {}", finding.severity.as_str(), finding.title),
            255,
        ),
        message: clip_chars(&message, 60_000),
    })
}

/// `summary` with a note that GitHub refused `what` (`a batch of annotations`, `the
/// annotations`) with `error` and `not_posted` of the `total` annotations were not posted.
/// Within GitHub's limit whatever the error says: the quoted error is clipped to
/// [`QUOTED_ERROR_CHARS`], and what would still pass [`GITHUB_SUMMARY_LIMIT`] is cut from the
/// summary's end, never from the note (a summary GitHub refuses would leave the run open).
pub fn with_unposted_note(
    summary: &str,
    what: &str,
    error: &str,
    not_posted: usize,
    total: usize,
) -> String {
    let mut quoted = clip_chars(error, QUOTED_ERROR_CHARS);
    if quoted.len() < error.len() {
        quoted.push('…');
    }
    let note = format!(
        "\n\nGitHub refused {what} ({quoted}): {not_posted} of the {total} annotations were not \
         posted."
    );
    let room = GITHUB_SUMMARY_LIMIT.saturating_sub(note.chars().count());
    let mut noted = clip_chars(summary, room);
    noted.push_str(&note);
    clip_chars(&noted, GITHUB_SUMMARY_LIMIT)
}

/// `text` cut to at most `max` characters.
fn clip_chars(text: &str, max: usize) -> String {
    match text.char_indices().nth(max) {
        Some((at, _)) => text[..at].to_owned(),
        None => text.to_owned(),
    }
}
