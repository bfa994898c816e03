//! Black Duck Detect in rapid mode (dependencies). Facts in `../shared/reference/scanners.md` §2.
//!
//! The scanned repository must not be able to weaken its own scan: Detect reads Spring Boot
//! configuration (`application.yml`, `application.properties`) from its working directory, so
//! the working directory is an empty one of its own, never the checkout; and it uploads a
//! `.bd-rapid-scan.yaml` policy override from the source root with no way to turn that off, so the
//! checkout step removes that file. Every property that matters is on the command line, which
//! Spring ranks above files; the API token comes from the policy's Secret as an environment
//! variable, never as an argument.
//!
//! Findings never fail the process (`--detect.stateless.policy.check.fail.on.severities=NONE`,
//! Detect ≥ 10.6.0): exit 0 is a completed scan whatever it found, the conclusion comes from the
//! report and the policy's `failOn`, and any other exit code is an error, which the operator reads
//! from the pod.

use gatehouse_crds::ScanRequest;
use gatehouse_crds::scanpolicy::ScannerSpec;
use gatehouse_crds::severity::Severity;
use gatehouse_crds::stream::Finding;
use k8s_openapi::api::core::v1::{EnvVar, EnvVarSource, SecretKeySelector};
use serde::Deserialize;

use super::parse::{self, Parsed, ReportError};
use super::{ExitStatus, ScanContainer, env};

/// Where the image's entrypoint (`java -jar /detect.jar --detect.source.path=/source
/// --detect.output.path=/output`) expects the repository. A second `--detect.source.path` on our
/// command line would not replace it (Spring joins repeated options with a comma), so the
/// checkout is mounted where the entrypoint looks.
pub const SOURCE_MOUNT: &str = "/source";

/// Where the entrypoint writes; the same volume the `report` step reads as its output directory.
pub const OUTPUT_MOUNT: &str = "/output";

/// The repository's own policy override file, removed before the scan.
pub const RAPID_SCAN_OVERRIDES: &str = ".bd-rapid-scan.yaml";

/// Detect's exit code for a completed scan (findings never change it with our arguments).
pub const EXIT_COMPLETED: i32 = 0;

/// The Detect container for `scanner` of `request`.
pub fn container(request: &ScanRequest, scanner: &ScannerSpec) -> ScanContainer {
    let spec = &request.spec;
    let settings = scanner.blackduck.as_ref();
    let project = settings
        .and_then(|s| s.project_name.clone())
        .unwrap_or_else(|| spec.repository.full_name());
    let args = vec![
        "--detect.blackduck.scan.mode=RAPID".to_owned(),
        format!("--detect.project.name={project}"),
        format!(
            "--detect.project.version.name=pr-{}",
            spec.pull_request.number
        ),
        "--detect.tools=DETECTOR".to_owned(),
        // Detect deletes its run directory, reports included, unless told not to.
        "--detect.cleanup=false".to_owned(),
        format!("--detect.scan.output.path={OUTPUT_MOUNT}/scan"),
        format!("--detect.status.json.output.path={OUTPUT_MOUNT}/status"),
        format!(
            "--detect.timeout={}",
            scanner.timeout_seconds.clamp(60, 86_400)
        ),
        "--detect.stateless.policy.check.fail.on.severities=NONE".to_owned(),
    ];
    let mut environment = vec![
        // HOME and the working directory: the container's own empty /tmp, so no configuration
        // file of the repository is in reach of Spring Boot.
        env("HOME", "/tmp"),
        env("BLACKDUCK_SKIP_PHONE_HOME", "true"),
        env("JAVA_TOOL_OPTIONS", "-XX:MaxRAMPercentage=75"),
    ];
    if let Some(settings) = settings {
        environment.push(env("BLACKDUCK_URL", &settings.url));
        environment.push(EnvVar {
            name: "BLACKDUCK_API_TOKEN".to_owned(),
            value: None,
            value_from: Some(EnvVarSource {
                secret_key_ref: Some(SecretKeySelector {
                    name: settings.credentials_secret_ref.name.clone(),
                    key: settings.credentials_secret_ref.key.clone(),
                    optional: Some(false),
                }),
                ..EnvVarSource::default()
            }),
        });
        if settings.trust_certificate {
            environment.push(env("BLACKDUCK_TRUST_CERT", "true"));
        }
    }
    ScanContainer {
        args,
        env: environment,
        working_dir: "/tmp".to_owned(),
        source_mount: SOURCE_MOUNT,
        // Detectors run package managers, which write into the project.
        source_writable: true,
        output_mount: OUTPUT_MOUNT,
        remove_from_checkout: vec![RAPID_SCAN_OVERRIDES],
        kics_config: false,
    }
}

// ---------------------------------------------------------------------------------------------
// Reading its report.

/// Suffix of the rapid-scan result file in `<output>/scan/`
/// (`<project>_<version>_BlackDuck_DeveloperMode_Result.json`).
pub const RESULT_SUFFIX: &str = "_BlackDuck_DeveloperMode_Result.json";

/// The report: Detect writes a top-level array of components; the paged full-result view
/// (`GET …/developer-scans/<id>/full-result`) is an object with `items`.
#[derive(Deserialize)]
#[serde(untagged)]
enum RapidReport {
    Items(Vec<Component>),
    Paged { items: Vec<Component> },
}

/// One policy-violating component version, in the older (`violatingPolicyNames`, Detect 6–7)
/// or newer (`violatingPolicies[]`, Detect 8+) shape; unknown fields ignored.
// Field names follow the report's.
#[allow(clippy::struct_field_names)]
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Component {
    #[serde(default)]
    component_name: Option<String>,
    #[serde(default)]
    version_name: Option<String>,
    #[serde(default)]
    component_identifier: Option<String>,
    #[serde(default)]
    external_id: Option<String>,
    #[serde(default)]
    file_path: Option<String>,
    #[serde(default)]
    violating_policies: Option<Vec<Policy>>,
    #[serde(default)]
    violating_policy_names: Option<Vec<String>>,
    #[serde(default)]
    policy_violation_vulnerabilities: Option<Vec<Vulnerability>>,
    #[serde(default)]
    policy_violation_licenses: Option<Vec<License>>,
    #[serde(default)]
    short_term_upgrade_guidance: Option<Guidance>,
    #[serde(default)]
    long_term_upgrade_guidance: Option<Guidance>,
}

#[derive(Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Policy {
    #[serde(default)]
    policy_name: Option<String>,
    #[serde(default)]
    policy_severity: Option<String>,
}

#[derive(Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Vulnerability {
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    vuln_severity: Option<String>,
    #[serde(default)]
    overall_score: Option<f64>,
    #[serde(default)]
    error_message: Option<String>,
    #[serde(default)]
    violating_policies: Option<Vec<Policy>>,
    #[serde(default)]
    violating_policy_names: Option<Vec<String>>,
}

#[derive(Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
struct License {
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    violating_policies: Option<Vec<Policy>>,
    #[serde(default)]
    violating_policy_names: Option<Vec<String>>,
}

#[derive(Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Guidance {
    #[serde(default)]
    version_name: Option<String>,
}

/// Policies a component violates, by name, with the most severe severity any entry gave.
#[derive(Default)]
struct Violated(Vec<(String, Option<Severity>)>);

impl Violated {
    fn note(&mut self, name: Option<&str>, severity: Option<&str>) {
        let Some(name) = name.map(str::trim).filter(|n| !n.is_empty()) else {
            return;
        };
        let severity = severity.and_then(Severity::parse_lenient);
        match self.0.iter_mut().find(|(n, _)| n == name) {
            Some((_, known)) => *known = (*known).max(severity),
            None => self.0.push((name.to_owned(), severity)),
        }
    }

    /// Every policy the component violates, sorted by name: its own list and those of its
    /// vulnerabilities and licenses.
    fn of(
        component: &Component,
        vulnerabilities: &[Vulnerability],
        licenses: &[License],
    ) -> Vec<(String, Option<Severity>)> {
        let mut violated = Violated::default();
        violated.note_all(
            component.violating_policies.as_ref(),
            component.violating_policy_names.as_ref(),
        );
        for v in vulnerabilities {
            violated.note_all(
                v.violating_policies.as_ref(),
                v.violating_policy_names.as_ref(),
            );
        }
        for l in licenses {
            violated.note_all(
                l.violating_policies.as_ref(),
                l.violating_policy_names.as_ref(),
            );
        }
        violated.0.sort();
        violated.0
    }

    fn note_all(&mut self, policies: Option<&Vec<Policy>>, names: Option<&Vec<String>>) {
        for policy in policies.into_iter().flatten() {
            self.note(
                policy.policy_name.as_deref(),
                policy.policy_severity.as_deref(),
            );
        }
        for name in names.into_iter().flatten() {
            self.note(Some(name), None);
        }
    }
}

/// Reads Detect's rapid-scan result. One finding per component version that violates a policy
/// (a component listed without a violated policy, as the full-result view can, is none). Its
/// severity is the most severe violated policy's (`BLOCKER` and `CRITICAL` critical, `MAJOR`
/// high, `MINOR` medium, `TRIVIAL` low, `UNSPECIFIED` info); the older shape names policies
/// without severities, so there it is the most severe vulnerability's, read from each
/// violation's message ("… with severity CRITICAL …"), and medium when none says. Rapid results
/// carry no file and line for a dependency, so these findings are listed in the summary, not
/// annotated (a signature scan's `filePath` is used when present).
pub fn parse(file: &str, bytes: &[u8], root: &str) -> Result<Parsed, ReportError> {
    let report: RapidReport = parse::from_json(file, bytes).map_err(|error| match error {
        ReportError::Shape { path, .. } if path == "." => ReportError::Shape {
            file: file.to_owned(),
            path,
            message: "expected an array of components (a DeveloperMode_Result file) or an \
                      object with items[] (the full-result view)"
                .to_owned(),
        },
        other => other,
    })?;
    let components = match report {
        RapidReport::Items(items) | RapidReport::Paged { items } => items,
    };
    let mut parsed = Parsed::default();
    let mut unknown_severity = 0_usize;
    let mut findings = Vec::new();
    for component in components {
        let vulnerabilities = component
            .policy_violation_vulnerabilities
            .clone()
            .unwrap_or_default();
        let licenses = component
            .policy_violation_licenses
            .clone()
            .unwrap_or_default();
        let policies = Violated::of(&component, &vulnerabilities, &licenses);
        if policies.is_empty() {
            continue;
        }
        let described: Vec<Described> = vulnerabilities.iter().filter_map(describe).collect();
        let severity = policies
            .iter()
            .filter_map(|(_, s)| *s)
            .max()
            .or_else(|| described.iter().filter_map(|d| d.severity).max())
            .unwrap_or_else(|| {
                unknown_severity += 1;
                Severity::Medium
            });
        let name = component.component_name.as_deref().unwrap_or("component");
        let version = component.version_name.as_deref().unwrap_or_default();
        let identifier = component
            .component_identifier
            .or(component.external_id)
            .unwrap_or_else(|| format!("{name} {version}"));
        let policy_names: Vec<&str> = policies.iter().map(|(n, _)| n.as_str()).collect();
        let mut vulnerability_ids: Vec<&str> = described.iter().map(|d| d.id.as_str()).collect();
        vulnerability_ids.sort_unstable();
        vulnerability_ids.dedup();
        let message = message(
            &format!("{name} {version} ({identifier})"),
            &policy_names,
            &described,
            &licenses,
            [
                component.short_term_upgrade_guidance,
                component.long_term_upgrade_guidance,
            ],
        );
        let path = component
            .file_path
            .as_deref()
            .and_then(|p| parse::repository_path(p, root));
        findings.push(Finding {
            fingerprint: parse::fingerprint_of(&[
                "blackduck",
                &identifier,
                &policy_names.join("\u{1f}"),
                &vulnerability_ids.join("\u{1f}"),
            ]),
            rule_id: parse::clip(&policy_names.join(", "), parse::MAX_FIELD_CHARS),
            title: parse::clip(
                &format!("{name} {version} violates {}", policy_names.join(", ")),
                parse::MAX_FIELD_CHARS,
            ),
            severity,
            path,
            start_line: None,
            end_line: None,
            message,
            help_url: None,
        });
    }
    if unknown_severity > 0 {
        parsed.notes.push(format!(
            "{unknown_severity} component{} named no severity and count as medium",
            if unknown_severity == 1 { "" } else { "s" }
        ));
    }
    Ok(parse::finish(findings, parsed))
}

/// The finding's message: what is violated, by which vulnerabilities and licenses, and the
/// upgrade Black Duck recommends.
fn message(
    component: &str,
    policies: &[&str],
    vulnerabilities: &[Described],
    licenses: &[License],
    [short, long]: [Option<Guidance>; 2],
) -> String {
    use std::fmt::Write as _;
    let mut message = format!("{component} violates {}.", policies.join(", "));
    let mut lines: Vec<String> = vulnerabilities.iter().map(Described::line).collect();
    lines.sort();
    lines.dedup();
    if !lines.is_empty() {
        let _ = write!(message, "\nVulnerabilities: {}.", lines.join(", "));
    }
    let license_names: Vec<&str> = licenses.iter().filter_map(|l| l.name.as_deref()).collect();
    if !license_names.is_empty() {
        let _ = write!(message, "\nLicenses: {}.", license_names.join(", "));
    }
    match (
        short.and_then(|g| g.version_name),
        long.and_then(|g| g.version_name),
    ) {
        (Some(s), Some(l)) if s != l => {
            let _ = write!(message, "\nUpgrade to {s} (short term) or {l} (long term).");
        }
        (Some(v), _) | (None, Some(v)) => {
            let _ = write!(message, "\nUpgrade to {v}.");
        }
        (None, None) => {}
    }
    parse::clip(&message, parse::MAX_MESSAGE_CHARS)
}

/// One vulnerability of a violation, as far as the report says.
struct Described {
    id: String,
    severity: Option<Severity>,
    severity_text: Option<String>,
    score: Option<f64>,
}

impl Described {
    fn line(&self) -> String {
        match (&self.severity_text, self.score) {
            (Some(s), Some(score)) => format!("{} ({s}, score {score:.1})", self.id),
            (Some(s), None) => format!("{} ({s})", self.id),
            (None, Some(score)) => format!("{} (score {score:.1})", self.id),
            (None, None) => self.id.clone(),
        }
    }
}

fn describe(v: &Vulnerability) -> Option<Described> {
    let message = v.error_message.as_deref();
    let id = v
        .name
        .clone()
        .or_else(|| message.and_then(vulnerability_in_message))?;
    let severity = v
        .vuln_severity
        .as_deref()
        .and_then(Severity::parse_lenient)
        .or_else(|| message.and_then(severity_in_message));
    Some(Described {
        id,
        severity,
        severity_text: severity.map(|s| s.as_str().to_ascii_uppercase()),
        score: v
            .overall_score
            .or_else(|| message.and_then(score_in_message)),
    })
}

/// The severity in an older report's violation message: "… with severity CRITICAL and …".
fn severity_in_message(message: &str) -> Option<Severity> {
    let rest = &message[message.find("with severity ")? + "with severity ".len()..];
    Severity::parse_lenient(rest.split_whitespace().next()?)
}

/// The score in an older report's violation message: "… and CVSS score 9.8".
fn score_in_message(message: &str) -> Option<f64> {
    let rest = &message[message.rfind("score ")? + "score ".len()..];
    rest.split_whitespace()
        .next()?
        .trim_end_matches(['.', ','])
        .parse()
        .ok()
}

/// The vulnerability id in an older report's violation message: "found vulnerability <id> …".
fn vulnerability_in_message(message: &str) -> Option<String> {
    let rest = &message[message.find("vulnerability ")? + "vulnerability ".len()..];
    rest.split_whitespace()
        .next()
        .map(|id| id.trim_end_matches([',', '.', ':']).to_owned())
}

/// What an exit code of Detect means (`reference/scanners.md` §2.5).
pub fn exit_status(code: i32) -> ExitStatus {
    let name = match code {
        // 3: policy violations at a fail-on severity: the report is complete.
        0 | 3 => return ExitStatus::Usable,
        137 => {
            return ExitStatus::Cancelled("killed (SIGKILL: out of memory, or stopped)".to_owned());
        }
        130 | 143 => return ExitStatus::Cancelled("interrupted (SIGINT or SIGTERM)".to_owned()),
        1 => "FAILURE_BLACKDUCK_CONNECTIVITY: unable to connect to Black Duck",
        2 => "FAILURE_TIMEOUT: timed out waiting for Black Duck",
        4 => "FAILURE_PROXY_CONNECTIVITY: the proxy is unusable",
        5 => "FAILURE_DETECTOR: one or more detectors failed",
        6 => "FAILURE_SCAN: the signature scanner failed",
        7 => "FAILURE_CONFIGURATION: bad configuration",
        9 => "FAILURE_DETECTOR_REQUIRED: required detectors did not run",
        10 => "FAILURE_BLACKDUCK_VERSION_NOT_SUPPORTED: the server lacks a needed capability",
        11 => "FAILURE_BLACKDUCK_FEATURE_ERROR: a server operation failed",
        13 => "FAILURE_MINIMUM_INTERVAL_NOT_MET: minimum scan interval not met",
        14 => "FAILURE_IAC: the IaC scan failed",
        15 => "FAILURE_ACCURACY_NOT_MET: required accuracy not met",
        16 => "FAILURE_OUT_OF_MEMORY: the JVM ran out of memory",
        20 => "FAILURE_IMAGE_NOT_AVAILABLE: the image scan returned no data",
        21 => "FAILURE_BLACKDUCK_DUPLICATE_PROJECT_ERROR: the project name exists already",
        25 => "FAILURE_COMPONENT_LOCATION_ANALYSIS: component location analysis failed",
        30 => "FAILURE_BOM_PREPARATION: Black Duck failed to prepare the BOM",
        99 => "FAILURE_GENERAL_ERROR: a known error, see the log",
        100 => "FAILURE_UNKNOWN_ERROR: an unknown error",
        other => return ExitStatus::Error(format!("unexpected exit code {other}")),
    };
    ExitStatus::Error(name.to_owned())
}
