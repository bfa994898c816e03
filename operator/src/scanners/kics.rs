//! Checkmarx KICS (infrastructure as code). Facts in `../shared/reference/scanners.md` §1.
//!
//! The scanned repository must not be able to weaken its own scan: KICS loads a `kics.config`
//! from the scanned directory unless `--config` is given, and takes every flag not on the command
//! line from it (and from `KICS_*` environment variables). So the command line always names our
//! own configuration file (mounted from a ConfigMap the operator owns) and sets every flag that
//! matters, and the pod's environment carries no `KICS_*` variable.

use gatehouse_crds::scanpolicy::KicsSettings;
use gatehouse_crds::severity::Severity;
use gatehouse_crds::stream::Finding;
use serde::Deserialize;

use super::parse::{self, Parsed, ReportError};
use super::{ExitStatus, OUTPUT_DIR, SOURCE_DIR, ScanContainer, env};

/// Our own configuration file, mounted read-only; its presence on the command line turns off the
/// repository's `kics.config`.
pub const CONFIG_PATH: &str = "/etc/gatehouse/kics/kics.config";

/// Base name of the reports: `results.json` and `results.sarif` in [`OUTPUT_DIR`].
pub const OUTPUT_NAME: &str = "results";

/// Exit codes: with `--ignore-on-exit results`, findings never change the exit code, so 0 is a
/// completed scan whatever it found; 126 an engine or configuration error; 130 a SIGTERM/SIGINT
/// (KICS's own); 137 a SIGKILL or OOM kill (from Kubernetes).
pub const EXIT_COMPLETED: i32 = 0;
/// Engine error: bad arguments, path not found, a report that could not be written.
pub const EXIT_ENGINE_ERROR: i32 = 126;

/// The KICS container: our arguments, the repository root as working directory (report paths
/// come out relative to it), a read-only checkout, and `HOME` in the writable `/tmp`.
pub fn container(settings: Option<&KicsSettings>) -> ScanContainer {
    ScanContainer {
        args: scan_args(settings),
        env: vec![env("HOME", "/tmp")],
        working_dir: SOURCE_DIR.to_owned(),
        source_mount: SOURCE_DIR,
        source_writable: false,
        output_mount: OUTPUT_DIR,
        // `--config` already turns auto-loading off; removing the file as well means a future
        // KICS that changes that rule still cannot read it.
        remove_from_checkout: vec!["kics.config"],
        kics_config: true,
    }
}

/// The contents of Gatehouse's own KICS configuration file: every setting is on the command
/// line, so the file only has to exist and parse.
pub const CONFIG_CONTENTS: &str = "{}\n";

/// The arguments of the `kics` entrypoint for a scan with `settings`; run with the working
/// directory at [`SOURCE_DIR`] so report paths are relative to the repository root (KICS makes
/// them relative to its current directory).
pub fn scan_args(settings: Option<&KicsSettings>) -> Vec<String> {
    let mut args: Vec<String> = [
        "scan",
        "--ci",
        "--no-color",
        "--no-progress",
        "--path",
        SOURCE_DIR,
        "--output-path",
        OUTPUT_DIR,
        "--output-name",
        OUTPUT_NAME,
        "--report-formats",
        "json,sarif",
        // Findings never fail the container: the conclusion comes from the report. Not
        // `errors`/`all`: engine errors would exit 0, and KICS would ignore SIGTERM.
        "--ignore-on-exit",
        "results",
        "--config",
        CONFIG_PATH,
        // By default KICS skips what the repository's .gitignore lists: a pull request could hide
        // files from its own scan.
        "--exclude-gitignore",
        // The CIS descriptions endpoint has answered nothing since 2023; no network call for it.
        "--disable-full-descriptions",
    ]
    .map(str::to_owned)
    .into();
    let Some(settings) = settings else {
        return args;
    };
    let mut list = |flag: &str, values: Vec<&str>| {
        if !values.is_empty() {
            args.push(flag.to_owned());
            args.push(values.join(","));
        }
    };
    list(
        "--exclude-paths",
        settings.exclude_paths.iter().map(String::as_str).collect(),
    );
    list(
        "--exclude-queries",
        settings
            .exclude_queries
            .iter()
            .map(String::as_str)
            .collect(),
    );
    list(
        "--exclude-severities",
        settings
            .exclude_severities
            .iter()
            .map(|s| s.as_str())
            .collect(),
    );
    list(
        "--type",
        settings.platforms.iter().map(String::as_str).collect(),
    );
    list(
        "--cloud-provider",
        settings
            .cloud_providers
            .iter()
            .map(String::as_str)
            .collect(),
    );
    if settings.disable_secrets {
        args.push("--disable-secrets".to_owned());
    }
    args
}

// ---------------------------------------------------------------------------------------------
// Reading its report.

/// `results.json`: only what Gatehouse uses is read; unknown fields are ignored, optional ones
/// may be missing (v1 reports have no `CRITICAL` counter, and nothing reads the counters).
#[derive(Deserialize)]
struct JsonReport {
    #[serde(default)]
    kics_version: Option<String>,
    #[serde(default, deserialize_with = "null_as_empty")]
    queries: Vec<JsonQuery>,
}

#[derive(Deserialize)]
struct JsonQuery {
    #[serde(default)]
    query_name: String,
    #[serde(default)]
    query_id: String,
    #[serde(default)]
    query_url: Option<String>,
    severity: String,
    #[serde(default)]
    description: Option<String>,
    #[serde(default, deserialize_with = "null_as_empty")]
    files: Vec<JsonFile>,
}

#[derive(Deserialize)]
struct JsonFile {
    #[serde(default)]
    file_name: String,
    #[serde(default)]
    similarity_id: Option<String>,
    #[serde(default)]
    line: Option<i64>,
    #[serde(default)]
    search_key: Option<String>,
    #[serde(default)]
    expected_value: Option<String>,
    #[serde(default)]
    actual_value: Option<String>,
}

fn null_as_empty<'de, D, T>(deserializer: D) -> Result<Vec<T>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Deserialize<'de>,
{
    Ok(Option::<Vec<T>>::deserialize(deserializer)?.unwrap_or_default())
}

/// Reads KICS's JSON report (`results.json`, v1 and v2). Paths are made relative to `root`, the
/// directory the repository was checked out to (KICS writes them relative to its working
/// directory, which is the repository root in a scan pod, but absolute when it scanned a single
/// file).
pub fn parse_json(file: &str, bytes: &[u8], root: &str) -> Result<Parsed, ReportError> {
    let report: JsonReport = parse::from_json(file, bytes)?;
    let mut parsed = Parsed {
        scanner_version: report.kics_version.filter(|v| !v.is_empty()),
        ..Parsed::default()
    };
    let mut outside = 0_usize;
    let mut findings = Vec::new();
    for (q, query) in report.queries.into_iter().enumerate() {
        let severity =
            Severity::parse_lenient(&query.severity).ok_or_else(|| ReportError::Shape {
                file: file.to_owned(),
                path: format!("queries[{q}].severity"),
                message: format!("unknown severity {:?}", query.severity),
            })?;
        let title = parse::clip(&query.query_name, parse::MAX_FIELD_CHARS);
        let rule_id = parse::clip(&query.query_id, parse::MAX_FIELD_CHARS);
        let help_url = query
            .query_url
            .filter(|u| u.starts_with("https://") || u.starts_with("http://"))
            .map(|u| parse::clip(&u, parse::MAX_FIELD_CHARS));
        for vulnerable in query.files {
            let path = parse::repository_path(&vulnerable.file_name, root);
            if path.is_none() {
                outside += 1;
            }
            // KICS reports file-level findings on line 0 or -1.
            let line = vulnerable
                .line
                .filter(|l| *l >= 1)
                .and_then(|l| u32::try_from(l).ok());
            let fingerprint = match vulnerable.similarity_id.filter(|s| !s.trim().is_empty()) {
                Some(id) => parse::clip(id.trim(), 128),
                None => parse::fingerprint_of(&[
                    &rule_id,
                    path.as_deref().unwrap_or(&vulnerable.file_name),
                    &line.unwrap_or(0).to_string(),
                    vulnerable.search_key.as_deref().unwrap_or_default(),
                ]),
            };
            let message = message(
                vulnerable.expected_value.as_deref(),
                vulnerable.actual_value.as_deref(),
                query.description.as_deref(),
            );
            findings.push(Finding {
                rule_id: rule_id.clone(),
                title: title.clone(),
                severity,
                path,
                start_line: line,
                end_line: line,
                message,
                help_url: help_url.clone(),
                fingerprint,
            });
        }
    }
    if outside > 0 {
        parsed.notes.push(format!(
            "{outside} finding{} named a file outside the repository and cannot be annotated",
            if outside == 1 { "" } else { "s" }
        ));
    }
    Ok(parse::finish(findings, parsed))
}

fn message(expected: Option<&str>, actual: Option<&str>, description: Option<&str>) -> String {
    let expected = expected.map(str::trim).filter(|v| !v.is_empty());
    let actual = actual.map(str::trim).filter(|v| !v.is_empty());
    let text = match (expected, actual) {
        (Some(e), Some(a)) => format!("Expected: {e}\nActual: {a}"),
        (Some(e), None) => format!("Expected: {e}"),
        (None, Some(a)) => format!("Actual: {a}"),
        (None, None) => description.unwrap_or_default().trim().to_owned(),
    };
    parse::clip(&text, parse::MAX_MESSAGE_CHARS)
}

/// `results.sarif`, the fallback: SARIF carries no severity per result (only a level per rule,
/// where KICS maps CRITICAL and HIGH both to `error`) and no fingerprint, so the JSON report is
/// preferred and this one is read only when that one is missing or unreadable.
#[derive(Deserialize)]
struct Sarif {
    #[serde(default)]
    runs: Vec<SarifRun>,
}

#[derive(Deserialize)]
struct SarifRun {
    tool: SarifTool,
    #[serde(default, deserialize_with = "null_as_empty")]
    results: Vec<SarifResult>,
}

#[derive(Deserialize)]
struct SarifTool {
    driver: SarifDriver,
}

#[derive(Deserialize)]
struct SarifDriver {
    #[serde(default)]
    version: Option<String>,
    #[serde(default, deserialize_with = "null_as_empty")]
    rules: Vec<SarifRule>,
}

#[derive(Deserialize)]
struct SarifRule {
    id: String,
    #[serde(default)]
    name: Option<String>,
    #[serde(default, rename = "helpUri")]
    help_uri: Option<String>,
    #[serde(default, rename = "defaultConfiguration")]
    default_configuration: Option<SarifConfiguration>,
}

#[derive(Deserialize)]
struct SarifConfiguration {
    #[serde(default)]
    level: Option<String>,
}

#[derive(Deserialize)]
struct SarifResult {
    #[serde(rename = "ruleId")]
    rule_id: String,
    #[serde(default, rename = "ruleIndex")]
    rule_index: Option<usize>,
    #[serde(default)]
    kind: Option<String>,
    #[serde(default)]
    level: Option<String>,
    #[serde(default)]
    message: Option<SarifMessage>,
    #[serde(default, deserialize_with = "null_as_empty")]
    locations: Vec<SarifLocation>,
}

#[derive(Deserialize)]
struct SarifMessage {
    #[serde(default)]
    text: Option<String>,
}

#[derive(Deserialize)]
struct SarifLocation {
    #[serde(default, rename = "physicalLocation")]
    physical_location: Option<SarifPhysical>,
}

#[derive(Deserialize)]
struct SarifPhysical {
    #[serde(default, rename = "artifactLocation")]
    artifact_location: Option<SarifArtifact>,
    #[serde(default)]
    region: Option<SarifRegion>,
}

#[derive(Deserialize)]
struct SarifArtifact {
    #[serde(default)]
    uri: Option<String>,
}

#[derive(Deserialize)]
struct SarifRegion {
    #[serde(default, rename = "startLine")]
    start_line: Option<i64>,
    #[serde(default, rename = "endLine")]
    end_line: Option<i64>,
}

/// Reads KICS's SARIF report. Severity comes from the level (`error` is read as high: SARIF
/// cannot tell critical from high; `note` low; `none` or an informational result info).
pub fn parse_sarif(file: &str, bytes: &[u8], root: &str) -> Result<Parsed, ReportError> {
    let sarif: Sarif = parse::from_json(file, bytes)?;
    let Some(run) = sarif.runs.into_iter().next() else {
        return Err(ReportError::Shape {
            file: file.to_owned(),
            path: "runs".to_owned(),
            message: "no run in the SARIF report".to_owned(),
        });
    };
    let rules = run.tool.driver.rules;
    let parsed = Parsed {
        scanner_version: run.tool.driver.version.filter(|v| !v.is_empty()),
        notes: vec![
            "read from the SARIF report (the JSON report was missing or unreadable): critical \
             findings show as high"
                .to_owned(),
        ],
        ..Parsed::default()
    };
    let mut findings = Vec::with_capacity(run.results.len());
    for (r, result) in run.results.into_iter().enumerate() {
        let rule = result
            .rule_index
            .and_then(|i| rules.get(i))
            .filter(|rule| rule.id == result.rule_id)
            .or_else(|| rules.iter().find(|rule| rule.id == result.rule_id));
        let level = result
            .level
            .or_else(|| rule.and_then(|r| r.default_configuration.as_ref()?.level.clone()))
            .unwrap_or_else(|| "warning".to_owned());
        let severity = if result.kind.as_deref() == Some("informational") {
            Severity::Info
        } else {
            match level.as_str() {
                "error" => Severity::High,
                "warning" => Severity::Medium,
                "note" => Severity::Low,
                "none" => Severity::Info,
                other => {
                    return Err(ReportError::Shape {
                        file: file.to_owned(),
                        path: format!("runs[0].results[{r}].level"),
                        message: format!("unknown SARIF level {other:?}"),
                    });
                }
            }
        };
        let physical = result
            .locations
            .into_iter()
            .find_map(|l| l.physical_location);
        let reported_path = physical
            .as_ref()
            .and_then(|p| p.artifact_location.as_ref()?.uri.clone())
            .unwrap_or_default();
        let path = parse::repository_path(&reported_path, root);
        let region = physical.as_ref().and_then(|p| p.region.as_ref());
        let start = region
            .and_then(|r| r.start_line)
            .filter(|l| *l >= 1)
            .and_then(|l| u32::try_from(l).ok());
        let end = region
            .and_then(|r| r.end_line)
            .and_then(|l| u32::try_from(l).ok())
            .filter(|l| start.is_some_and(|s| *l >= s))
            .or(start);
        let message = parse::clip(
            result
                .message
                .and_then(|m| m.text)
                .unwrap_or_default()
                .trim(),
            parse::MAX_MESSAGE_CHARS,
        );
        let rule_id = parse::clip(&result.rule_id, parse::MAX_FIELD_CHARS);
        findings.push(Finding {
            fingerprint: parse::fingerprint_of(&[
                &rule_id,
                path.as_deref().unwrap_or(&reported_path),
                &start.unwrap_or(0).to_string(),
                &message,
            ]),
            title: parse::clip(
                rule.and_then(|r| r.name.as_deref()).unwrap_or(&rule_id),
                parse::MAX_FIELD_CHARS,
            ),
            help_url: rule
                .and_then(|r| r.help_uri.clone())
                .filter(|u| u.starts_with("https://") || u.starts_with("http://"))
                .map(|u| parse::clip(&u, parse::MAX_FIELD_CHARS)),
            rule_id,
            severity,
            path,
            start_line: start,
            end_line: end,
            message,
        });
    }
    Ok(parse::finish(findings, parsed))
}

/// What an exit code of KICS means (`reference/scanners.md` §1.3).
pub fn exit_status(code: i32) -> ExitStatus {
    match code {
        // 20–60: the most severe finding (without `--ignore-on-exit results`); usable.
        0 | 20 | 30 | 40 | 50 | 60 => ExitStatus::Usable,
        126 => ExitStatus::Error(
            "engine error (bad arguments, a path not found, or a report that could not be written)"
                .to_owned(),
        ),
        130 => ExitStatus::Cancelled("interrupted (SIGINT or SIGTERM)".to_owned()),
        137 => ExitStatus::Cancelled("killed (SIGKILL: out of memory, or stopped)".to_owned()),
        70 => ExitStatus::Error("remediation error".to_owned()),
        other => ExitStatus::Error(format!("unexpected exit code {other}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use gatehouse_crds::severity::Severity;

    const BASE: &str = "scan --ci --no-color --no-progress --path /workspace/src \
        --output-path /workspace/out --output-name results --report-formats json,sarif \
        --ignore-on-exit results --config /etc/gatehouse/kics/kics.config --exclude-gitignore \
        --disable-full-descriptions";

    #[test]
    fn without_settings_the_scan_is_complete_and_ignores_the_repositorys_configuration() {
        assert_eq!(scan_args(None).join(" "), BASE);
        assert_eq!(scan_args(Some(&KicsSettings::default())).join(" "), BASE);
    }

    #[test]
    fn policy_settings_become_flags_and_nothing_else_does() {
        let settings = KicsSettings {
            exclude_paths: vec!["vendor/*".to_owned(), "**/testdata/*".to_owned()],
            exclude_queries: vec!["a227ec01-f97a-4084-91a4-47b350c1db54".to_owned()],
            exclude_severities: vec![Severity::Info, Severity::Low],
            platforms: vec!["Terraform".to_owned(), "Kubernetes".to_owned()],
            cloud_providers: vec!["aws".to_owned()],
            disable_secrets: true,
        };
        let args = scan_args(Some(&settings));
        assert_eq!(
            args[BASE.split(' ').count()..].join(" "),
            "--exclude-paths vendor/*,**/testdata/* \
             --exclude-queries a227ec01-f97a-4084-91a4-47b350c1db54 \
             --exclude-severities info,low --type Terraform,Kubernetes --cloud-provider aws \
             --disable-secrets"
        );
        // Never what would let findings or errors pass silently.
        for forbidden in ["errors", "all", "--fail-on"] {
            assert!(!args.iter().any(|a| a == forbidden), "{forbidden}");
        }
    }
}
