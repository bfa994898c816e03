//! One module per scanner: how its container runs (image arguments, environment, where it sees
//! the repository and writes its report) and, later, how its report is read. Adding a scanner is
//! adding a module and one arm in [`scan_container`]. Nothing here talks to the API.

pub mod blackduck;
pub mod kics;
pub mod parse;

use gatehouse_crds::ScanRequest;
use gatehouse_crds::scanpolicy::{ScannerKind, ScannerSpec};
use k8s_openapi::api::core::v1::EnvVar;

/// Where the scan pod's `checkout` step unpacks the repository (the scanner's working directory).
pub const SOURCE_DIR: &str = "/workspace/src";

/// Where the scanner writes its reports, read by the `report` step.
pub const OUTPUT_DIR: &str = "/workspace/out";

/// Where the `checkout` step unpacks the pull request's base commit (baseline mode); the
/// `scan-base` step sees it where `scan` sees the head.
pub const BASE_SOURCE_DIR: &str = "/workspace/base";

/// Where the `report` step reads the base commit's reports (baseline mode).
pub const BASE_OUTPUT_DIR: &str = "/workspace/out-base";

/// What the Job builder needs to know about one scanner's container.
#[derive(Clone, Debug, PartialEq)]
pub struct ScanContainer {
    /// Arguments after the image's entrypoint.
    pub args: Vec<String>,
    /// Environment (never secrets in plain values: those come from `secretKeyRef`s).
    pub env: Vec<EnvVar>,
    /// Working directory.
    pub working_dir: String,
    /// Where the container sees the checked-out repository.
    pub source_mount: &'static str,
    /// Whether the scanner may write into the checkout (build tools run by detectors do).
    pub source_writable: bool,
    /// Where the container sees the report directory shared with `report`.
    pub output_mount: &'static str,
    /// Files the repository may carry that would reconfigure the scanner, removed from the
    /// checkout before the scanner runs (paths relative to the repository root).
    pub remove_from_checkout: Vec<&'static str>,
    /// Whether the container needs Gatehouse's own KICS configuration file mounted at
    /// [`kics::CONFIG_PATH`].
    pub kics_config: bool,
}

/// The container of `scanner` for `request`.
pub fn scan_container(request: &ScanRequest, scanner: &ScannerSpec) -> ScanContainer {
    match scanner.kind {
        ScannerKind::Kics => kics::container(scanner.kics.as_ref()),
        ScannerKind::Blackduck => blackduck::container(request, scanner),
    }
}

/// How to run `scanner` on a local checkout of the pull request and read its report as
/// Gatehouse does (Markdown, for the check run's summary): the same image and arguments as the
/// scan Job, paths mapped onto the current directory.
pub fn reproduce(request: &ScanRequest, scanner: &ScannerSpec) -> String {
    let container = scan_container(request, scanner);
    let quoted: Vec<String> = container.args.iter().map(|a| shell_quote(a)).collect();
    let args = quoted.join(" ");
    let image = &scanner.image;
    match scanner.kind {
        ScannerKind::Kics => format!(
            "In a checkout of commit `{sha}`:\n\n```sh\nmkdir -p out && echo '{{}}' > out/kics.config\n             docker run --rm -v \"$PWD\":{src}:ro -v \"$PWD/out\":{out} \
             -v \"$PWD/out/kics.config\":{config}:ro -w {src} {image} \\\n  {args}\n             gatehouse-agent parse --scanner kics out/results.json\n```",
            sha = request.spec.pull_request.head_sha,
            src = SOURCE_DIR,
            out = OUTPUT_DIR,
            config = kics::CONFIG_PATH,
        ),
        ScannerKind::Blackduck => format!(
            "In a checkout of commit `{sha}`, with `BLACKDUCK_URL` and `BLACKDUCK_API_TOKEN` set:\n\n             ```sh\nmkdir -p out\n             docker run --rm -v \"$PWD\":{src} -v \"$PWD/out\":{out} -e BLACKDUCK_URL \
             -e BLACKDUCK_API_TOKEN {image} \\\n  {args}\n             gatehouse-agent parse --scanner blackduck --source-dir {src} out/scan/*{suffix}\n```",
            sha = request.spec.pull_request.head_sha,
            src = blackduck::SOURCE_MOUNT,
            out = blackduck::OUTPUT_MOUNT,
            suffix = blackduck::RESULT_SUFFIX,
        ),
    }
}

/// `text` quoted for a POSIX shell when it needs to be.
fn shell_quote(text: &str) -> String {
    if !text.is_empty()
        && text
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./=:,@%+".contains(c))
    {
        text.to_owned()
    } else {
        format!("'{}'", text.replace('\'', "'\\''"))
    }
}

/// What a scanner's exit code says about its report.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ExitStatus {
    /// The scan completed: its report is the result (findings may exist).
    Usable,
    /// The scanner failed: there is no trustworthy report. The text names the error.
    Error(String),
    /// The scanner was stopped (a signal, an out-of-memory kill).
    Cancelled(String),
}

/// A plain environment variable.
pub(crate) fn env(name: &str, value: &str) -> EnvVar {
    EnvVar {
        name: name.to_owned(),
        value: Some(value.to_owned()),
        value_from: None,
    }
}

#[cfg(test)]
mod report_tests;
