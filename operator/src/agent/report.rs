//! `gatehouse-agent report` and `parse`: the scanner's report read into a normalised
//! [`ScanResult`], signed with the per-scan key and published to the results stream. A missing or
//! unreadable report is a scanner error carrying what was found instead, never "no findings".

use std::path::{Path, PathBuf};

use gatehouse_crds::scanpolicy::ScannerKind;
use gatehouse_crds::severity::SeverityCounts;
use gatehouse_crds::stream::{
    Baseline, BodyEncoding, Finding, RESULTS_STREAM, ResultEntry, ScanOutcome, ScanResult,
};

use crate::keys::ScanKey;
use crate::scanners::parse::{Parsed, ReportError};
use crate::scanners::{ExitStatus, blackduck, kics};

/// Largest report file read: KICS's JSON for 100,000 findings is about 50 MB, and reading takes
/// about three times the file's size in memory (the `report` step has 512 MiB).
pub const MAX_REPORT_BYTES: u64 = 96 << 20;

/// Results larger than this are stored LZ4-compressed.
pub const COMPRESS_ABOVE: usize = 64 << 10;

/// What one scanner run produced, read from its output directory.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Read {
    /// Completed (with its findings) or a scanner error.
    pub outcome: ScanOutcome,
    /// The findings, most severe first (empty for an error).
    pub parsed: Parsed,
    /// The report file read, when one was.
    pub file: Option<PathBuf>,
}

/// Where a scanner's report is in its output directory, in order of preference.
pub fn report_candidates(kind: ScannerKind, output_dir: &Path) -> Vec<PathBuf> {
    match kind {
        ScannerKind::Kics => vec![
            output_dir.join(format!("{}.json", kics::OUTPUT_NAME)),
            output_dir.join(format!("{}.sarif", kics::OUTPUT_NAME)),
        ],
        ScannerKind::Blackduck => {
            let scan = output_dir.join("scan");
            let mut found: Vec<PathBuf> = std::fs::read_dir(&scan)
                .into_iter()
                .flatten()
                .flatten()
                .map(|e| e.path())
                .filter(|p| {
                    p.file_name()
                        .and_then(|n| n.to_str())
                        .is_some_and(|n| n.ends_with(blackduck::RESULT_SUFFIX))
                })
                .collect();
            found.sort();
            found
        }
    }
}

/// Parses one report file's bytes as `kind` writes it. `root` is the directory the scanner saw
/// the repository at (paths are made relative to it).
pub fn parse_report(
    kind: ScannerKind,
    file: &Path,
    bytes: &[u8],
    root: &str,
) -> Result<Parsed, ReportError> {
    let name = file.file_name().map_or_else(
        || file.display().to_string(),
        |n| n.to_string_lossy().into_owned(),
    );
    match kind {
        ScannerKind::Kics
            if file
                .extension()
                .is_some_and(|e| e.eq_ignore_ascii_case("sarif")) =>
        {
            kics::parse_sarif(&name, bytes, root)
        }
        ScannerKind::Kics => kics::parse_json(&name, bytes, root),
        ScannerKind::Blackduck => blackduck::parse(&name, bytes, root),
    }
}

/// Reads a regular file of at most [`MAX_REPORT_BYTES`]. The output directory is written by a
/// scanner that ran on hostile code: a link (to the signing key, say), a FIFO (which would
/// block) or a huge or sparse file is refused before anything is read. The scanner has exited
/// when this runs, so nothing changes the file between the check and the read.
pub fn read_capped(path: &Path) -> Result<Vec<u8>, String> {
    use std::io::Read as _;
    let meta = std::fs::symlink_metadata(path).map_err(|e| format!("{}: {e}", path.display()))?;
    if !meta.file_type().is_file() {
        return Err(format!(
            "{}: not a regular file (a link, a directory or a device): refused",
            path.display()
        ));
    }
    if meta.len() > MAX_REPORT_BYTES {
        return Err(format!(
            "{}: {} bytes, larger than {MAX_REPORT_BYTES}",
            path.display(),
            meta.len()
        ));
    }
    let file = std::fs::File::open(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let mut bytes = Vec::new();
    file.take(MAX_REPORT_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| format!("{}: {e}", path.display()))?;
    if bytes.len() as u64 > MAX_REPORT_BYTES {
        return Err(format!(
            "{}: larger than {MAX_REPORT_BYTES} bytes",
            path.display()
        ));
    }
    Ok(bytes)
}

/// What a scan in `output_dir` produced: the exit code judged first (a scanner that failed has
/// no trustworthy report), then the first report that parses. A report that is missing or does
/// not parse is a scanner error saying so, with what the directory held.
pub fn read_output(kind: ScannerKind, exit_code: i32, output_dir: &Path, root: &str) -> Read {
    let meaning = match kind {
        ScannerKind::Kics => kics::exit_status(exit_code),
        ScannerKind::Blackduck => blackduck::exit_status(exit_code),
    };
    if let ExitStatus::Error(what) | ExitStatus::Cancelled(what) = meaning {
        return error(
            Some(exit_code),
            format!("scanner error: exit code {exit_code}: {what}"),
        );
    }
    let candidates = report_candidates(kind, output_dir);
    let mut problems = Vec::new();
    for file in &candidates {
        if !file.exists() {
            continue;
        }
        match read_capped(file)
            .and_then(|bytes| parse_report(kind, file, &bytes, root).map_err(|e| e.to_string()))
        {
            Ok(parsed) => {
                return Read {
                    outcome: ScanOutcome::Completed,
                    parsed,
                    file: Some(file.clone()),
                };
            }
            Err(problem) => problems.push(problem),
        }
    }
    let message = if problems.is_empty() {
        format!(
            "scanner error: exit code {exit_code} but no report was written (looked for {}; the \
             output directory holds: {})",
            candidates_text(kind, output_dir),
            listing(output_dir)
        )
    } else {
        format!(
            "scanner error: exit code {exit_code} but the report is unreadable: {}",
            problems.join("; ")
        )
    };
    error(Some(exit_code), message)
}

fn error(exit_code: Option<i32>, message: String) -> Read {
    Read {
        outcome: ScanOutcome::ScannerError { exit_code, message },
        parsed: Parsed::default(),
        file: None,
    }
}

fn candidates_text(kind: ScannerKind, output_dir: &Path) -> String {
    match kind {
        ScannerKind::Kics => format!(
            "{0}/results.json and {0}/results.sarif",
            output_dir.display()
        ),
        ScannerKind::Blackduck => format!(
            "{}/scan/*{}",
            output_dir.display(),
            blackduck::RESULT_SUFFIX
        ),
    }
}

/// The first entries of a directory tree (two levels), for an error message.
fn listing(dir: &Path) -> String {
    let mut names = Vec::new();
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if entry.path().is_dir() {
            for inner in std::fs::read_dir(entry.path())
                .into_iter()
                .flatten()
                .flatten()
            {
                names.push(format!("{name}/{}", inner.file_name().to_string_lossy()));
            }
            names.push(format!("{name}/"));
        } else {
            names.push(name);
        }
    }
    names.sort();
    if names.is_empty() {
        return "nothing".to_owned();
    }
    let total = names.len();
    names.truncate(20);
    let mut text = names.join(", ");
    if total > 20 {
        use std::fmt::Write as _;
        let _ = write!(text, ", and {} more", total - 20);
    }
    text
}

/// Who the result is for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Identity {
    /// Namespace of the ScanRequest.
    pub namespace: String,
    /// Name of the ScanRequest.
    pub scan_request: String,
    /// UID of the ScanRequest.
    pub uid: String,
    /// Scanner name in the policy.
    pub scanner: String,
    /// The commit scanned.
    pub head_sha: String,
    /// Attempt number.
    pub attempt: i32,
}

/// The result to publish: `head` as read, the base commit's fingerprints when the pod scanned
/// it too, at most `max_findings` findings (most severe first; the counts cover all).
pub fn result(
    identity: &Identity,
    result_id: String,
    head: Read,
    base: Option<(String, Read)>,
    max_findings: usize,
) -> ScanResult {
    let Read {
        outcome, parsed, ..
    } = head;
    let mut findings: Vec<Finding> = parsed.findings;
    let truncated = findings.len() > max_findings;
    findings.truncate(max_findings);
    ScanResult {
        result_id,
        namespace: identity.namespace.clone(),
        scan_request: identity.scan_request.clone(),
        uid: identity.uid.clone(),
        scanner: identity.scanner.clone(),
        head_sha: identity.head_sha.clone(),
        attempt: identity.attempt,
        outcome,
        counts: parsed.counts,
        findings,
        truncated,
        scanner_version: parsed.scanner_version,
        notes: parsed.notes,
        sarif: None,
        baseline: base.map(|(sha, read)| {
            let mut fingerprints: Vec<String> = read
                .parsed
                .findings
                .into_iter()
                .map(|f| f.fingerprint)
                .collect();
            fingerprints.sort_unstable();
            fingerprints.dedup();
            Baseline {
                sha,
                outcome: read.outcome,
                counts: if fingerprints.is_empty() {
                    SeverityCounts::default()
                } else {
                    read.parsed.counts
                },
                fingerprints,
            }
        }),
    }
}

/// GitHub's code scanning takes at most 10 MB of gzip-compressed SARIF.
pub const MAX_SARIF_GZIP_BYTES: usize = 10 << 20;

/// The SARIF report in `output_dir` as code scanning's upload takes it (gzip, then base64), or
/// why not (none written, too large).
pub fn sarif_for_upload(kind: ScannerKind, output_dir: &Path) -> Result<String, String> {
    use base64::Engine as _;
    use std::io::Write as _;
    if kind != ScannerKind::Kics {
        return Err("this scanner writes no SARIF".to_owned());
    }
    let file = output_dir.join(format!("{}.sarif", kics::OUTPUT_NAME));
    let bytes = read_capped(&file)?;
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    gz.write_all(&bytes)
        .and_then(|()| gz.try_finish())
        .map_err(|e| format!("compressing {}: {e}", file.display()))?;
    let compressed = gz.get_ref();
    if compressed.len() > MAX_SARIF_GZIP_BYTES {
        return Err(format!(
            "{} is {} bytes compressed, more than code scanning takes ({MAX_SARIF_GZIP_BYTES})",
            file.display(),
            compressed.len()
        ));
    }
    Ok(base64::engine::general_purpose::STANDARD.encode(compressed))
}

/// The stream entry of `result`: its JSON, LZ4-compressed above [`COMPRESS_ABOVE`], signed.
pub fn entry(result: &ScanResult, key: &ScanKey) -> Result<ResultEntry, serde_json::Error> {
    let json = serde_json::to_vec(result)?;
    let (encoding, payload) = if json.len() > COMPRESS_ABOVE {
        (BodyEncoding::Lz4, lz4_flex::compress_prepend_size(&json))
    } else {
        (BodyEncoding::Identity, json)
    };
    let signature = key.sign(&ResultEntry::signed_bytes(encoding, &payload));
    Ok(ResultEntry {
        encoding,
        uid: result.uid.clone(),
        payload,
        signature,
    })
}

/// Publishing a result failed.
#[derive(Debug, thiserror::Error)]
#[error("failed to publish the result to {RESULTS_STREAM}: {0}")]
pub struct PublishError(String);

/// `XADD`s the entry, trying again on a connection error up to `attempts` times (the same
/// result, the same `resultId`: the operator takes a second copy as the same result).
pub async fn publish(
    client: &redis::Client,
    entry: &ResultEntry,
    attempts: u32,
) -> Result<String, PublishError> {
    let mut last = String::from("not attempted");
    for attempt in 0..attempts.max(1) {
        if attempt > 0 {
            tokio::time::sleep(std::time::Duration::from_millis(500 << attempt.min(5))).await;
        }
        let added = async {
            let mut conn = client.get_multiplexed_async_connection().await?;
            redis::cmd("XADD")
                .arg(RESULTS_STREAM)
                .arg("*")
                .arg(entry.to_fields().as_slice())
                .query_async::<String>(&mut conn)
                .await
        };
        match tokio::time::timeout(std::time::Duration::from_secs(30), added).await {
            Ok(Ok(id)) => return Ok(id),
            Ok(Err(error)) => last = error.to_string(),
            Err(_) => "timed out after 30 s".clone_into(&mut last),
        }
    }
    Err(PublishError(last))
}
