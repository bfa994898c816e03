//! What every scanner's report parser shares: the normalised result of one report, the errors a
//! report can have (each naming the file and, for a wrong type, the JSON path of the bad field),
//! and the normalisation of paths, fingerprints and order. Pure: bytes in, findings out.

use gatehouse_crds::severity::SeverityCounts;
use gatehouse_crds::stream::Finding;
use serde::de::DeserializeOwned;

/// Longest message kept per finding: a report is hostile input, and a check run annotation holds
/// 64 KB at most.
pub const MAX_MESSAGE_CHARS: usize = 4_000;
/// Longest title, path, rule id or URL kept.
pub const MAX_FIELD_CHARS: usize = 1_000;

/// One report read into normalised findings.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Parsed {
    /// Every finding, most severe first, then by path, line and rule; one per fingerprint.
    pub findings: Vec<Finding>,
    /// Findings by severity.
    pub counts: SeverityCounts,
    /// The scanner's version, when the report names it.
    pub scanner_version: Option<String>,
    /// What the parser noticed and a person may want to know (duplicates dropped, paths that
    /// point outside the repository), shown in the check run summary.
    pub notes: Vec<String>,
}

/// A report could not be read into findings.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ReportError {
    /// The report file is empty.
    #[error("{file}: the report is empty")]
    Empty {
        /// Report file name.
        file: String,
    },
    /// The report is not JSON, or is cut short.
    #[error("{file}: not valid JSON at line {line} column {column}: {message}")]
    Syntax {
        /// Report file name.
        file: String,
        /// 1-based line.
        line: usize,
        /// 1-based column.
        column: usize,
        /// serde_json's description.
        message: String,
    },
    /// A field has the wrong type or an impossible value.
    #[error("{file}: {path}: {message}")]
    Shape {
        /// Report file name.
        file: String,
        /// JSON path of the bad field (`queries[3].files[0].line`), `.` for the top level.
        path: String,
        /// What is wrong with it.
        message: String,
    },
}

/// Deserialises `bytes` as `T`. The fast path has no path tracking; on an error the report is
/// read again to name the JSON path of the bad field.
pub fn from_json<T: DeserializeOwned>(file: &str, bytes: &[u8]) -> Result<T, ReportError> {
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Err(ReportError::Empty {
            file: file.to_owned(),
        });
    }
    match serde_json::from_slice(bytes) {
        Ok(value) => Ok(value),
        Err(first) => {
            let mut deserializer = serde_json::Deserializer::from_slice(bytes);
            let Err(error) = serde_path_to_error::deserialize::<_, T>(&mut deserializer) else {
                return Err(json_error(file, ".", &first));
            };
            let path = error.path().to_string();
            Err(json_error(file, &path, error.inner()))
        }
    }
}

fn json_error(file: &str, path: &str, error: &serde_json::Error) -> ReportError {
    use serde_json::error::Category;
    match error.classify() {
        Category::Syntax | Category::Eof | Category::Io => ReportError::Syntax {
            file: file.to_owned(),
            line: error.line(),
            column: error.column(),
            message: strip_position(&error.to_string()),
        },
        Category::Data => ReportError::Shape {
            file: file.to_owned(),
            path: path.to_owned(),
            message: strip_position(&error.to_string()),
        },
    }
}

/// serde_json appends " at line L column C" to its messages; the error carries them apart.
fn strip_position(message: &str) -> String {
    message
        .rfind(" at line ")
        .map_or(message, |at| &message[..at])
        .to_owned()
}

/// A path as a scanner reported it, made repository-relative: `\` as `/`, leading `./` and the
/// checkout's own directory (`root`) removed. `None` for a path that is absolute or climbs out
/// with `..` once that is done: it names no file of the repository.
pub fn repository_path(reported: &str, root: &str) -> Option<String> {
    let mut path = reported.trim().replace('\\', "/");
    let root = root.trim_end_matches('/');
    if !root.is_empty()
        && let Some(rest) = path.strip_prefix(root).and_then(|r| r.strip_prefix('/'))
    {
        path = rest.to_owned();
    }
    let mut parts = Vec::new();
    for part in path.split('/') {
        match part {
            "" | "." => {}
            ".." => return None,
            other => parts.push(other),
        }
    }
    // A control character (a newline, a NUL) names no file an annotation could point at, and
    // would break the summary's table.
    if path.starts_with('/') || parts.is_empty() || path.chars().any(char::is_control) {
        return None;
    }
    Some(clip(&parts.join("/"), MAX_FIELD_CHARS))
}

/// `text` cut to at most `max` characters, with `…` when cut.
pub fn clip(text: &str, max: usize) -> String {
    match text.char_indices().nth(max.saturating_sub(1)) {
        Some((at, _)) if text[at..].chars().nth(1).is_some() => format!("{}…", &text[..at]),
        _ => text.to_owned(),
    }
}

/// A fingerprint made from a finding's identity, for scanners and reports that give none:
/// SHA-256 of the parts, NUL-separated, hex.
pub fn fingerprint_of(parts: &[&str]) -> String {
    use sha2::Digest as _;
    let mut hasher = sha2::Sha256::new();
    for part in parts {
        hasher.update(part.as_bytes());
        hasher.update([0]);
    }
    hex::encode(hasher.finalize())
}

/// The findings in report order: most severe first, then path, line, rule, title and fingerprint; one
/// finding per fingerprint (the first kept), with counts over what is kept. Returns the number of
/// duplicates dropped.
pub fn finish(findings: Vec<Finding>, mut parsed: Parsed) -> Parsed {
    let mut findings = findings;
    findings.sort_by(|a, b| {
        b.severity
            .cmp(&a.severity)
            .then_with(|| a.path.cmp(&b.path))
            .then_with(|| a.start_line.cmp(&b.start_line))
            .then_with(|| a.rule_id.cmp(&b.rule_id))
            .then_with(|| a.title.cmp(&b.title))
            .then_with(|| a.fingerprint.cmp(&b.fingerprint))
    });
    let before = findings.len();
    let mut seen = std::collections::HashSet::with_capacity(findings.len());
    findings.retain(|f| seen.insert(f.fingerprint.clone()));
    let dropped = before - findings.len();
    if dropped > 0 {
        parsed.notes.push(format!(
            "{dropped} duplicate finding{} (same fingerprint) counted once",
            if dropped == 1 { "" } else { "s" }
        ));
    }
    let mut counts = SeverityCounts::default();
    for finding in &findings {
        counts.add(finding.severity);
    }
    parsed.counts = counts;
    parsed.findings = findings;
    parsed
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_are_made_relative_to_the_repository_and_escaping_ones_are_refused() {
        assert_eq!(
            repository_path("main.tf", "/workspace/src").as_deref(),
            Some("main.tf")
        );
        assert_eq!(
            repository_path("./infra\\modules\\s3.tf", "/workspace/src").as_deref(),
            Some("infra/modules/s3.tf")
        );
        assert_eq!(
            repository_path("/workspace/src/a/b.yaml", "/workspace/src").as_deref(),
            Some("a/b.yaml")
        );
        assert_eq!(repository_path("../../etc/passwd", "/workspace/src"), None);
        assert_eq!(repository_path("/etc/passwd", "/workspace/src"), None);
        assert_eq!(repository_path("a/../../b", "/workspace/src"), None);
        assert_eq!(repository_path("", "/workspace/src"), None);
        // A sibling directory that merely starts with the root's name is not inside it.
        assert_eq!(repository_path("/workspace/srcx/a", "/workspace/src"), None);
    }

    #[test]
    fn long_text_is_clipped_by_characters_not_bytes() {
        assert_eq!(clip("héllo", 10), "héllo");
        assert_eq!(clip("héllo", 5), "héllo");
        assert_eq!(clip("héllo wörld", 5), "héll…");
        assert_eq!(clip("ééééé", 3).chars().count(), 3);
    }

    #[test]
    fn a_wrong_type_is_reported_with_the_path_of_the_field() {
        #[derive(serde::Deserialize, Debug)]
        struct Report {
            #[allow(dead_code)]
            queries: Vec<Query>,
        }
        #[derive(serde::Deserialize, Debug)]
        struct Query {
            #[allow(dead_code)]
            line: u32,
        }
        let err =
            from_json::<Report>("r.json", br#"{"queries":[{"line":1},{"line":"x"}]}"#).unwrap_err();
        assert_eq!(
            err.to_string(),
            "r.json: queries[1].line: invalid type: string \"x\", expected u32"
        );
        let err = from_json::<Report>("r.json", br#"{"queries":[{"line":1}"#).unwrap_err();
        assert!(
            matches!(err, ReportError::Syntax { line: 1, .. }),
            "{err:?}"
        );
        assert_eq!(
            from_json::<Report>("r.json", b"  \n").unwrap_err(),
            ReportError::Empty {
                file: "r.json".into()
            }
        );
    }
}
