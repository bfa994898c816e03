//! Messages on the Redis streams shared by all binaries, and their field encoding.
//!
//! `{gatehouse}:events` carries one entry per accepted webhook delivery (written by the webhook's
//! `receive` role, read by `ingest`). `{gatehouse-results}:results` carries one signed scan result per
//! scanner Job (written by the agent, read by the operator). This module is pure data: it turns
//! messages into stream fields and back, and never talks to Redis.

use std::borrow::Cow;

use serde::{Deserialize, Serialize};

use crate::severity::{Severity, SeverityCounts};

// Every key of the events path carries the hash tag `{gatehouse}`, so the store script (dedup key
// and stream) and the dead-letter transaction (stream, dead stream, retry reasons) touch one
// Redis Cluster hash slot. Results carry their own tag.

/// Stream of accepted webhook deliveries.
pub const EVENTS_STREAM: &str = "{gatehouse}:events";
/// Deliveries that failed ingest too often, with the reason.
pub const EVENTS_DEAD_STREAM: &str = "{gatehouse}:events:dead";
/// Why each entry of [`EVENTS_STREAM`] left pending for a retry last failed (hash: entry id →
/// reason), so whichever consumer dead-letters it can say why.
pub const EVENTS_RETRY_REASONS: &str = "{gatehouse}:events:reasons";
/// Stream of scan results from scanner Jobs.
pub const RESULTS_STREAM: &str = "{gatehouse-results}:results";
/// Results that failed processing too often, with the reason.
pub const RESULTS_DEAD_STREAM: &str = "{gatehouse-results}:results:dead";
/// Consumer group of the webhook's ingest role on [`EVENTS_STREAM`].
pub const INGEST_GROUP: &str = "ingest";
/// Consumer group of the operator's results consumer on [`RESULTS_STREAM`].
pub const REPORT_GROUP: &str = "report";

/// Key recording that a delivery id was accepted (`SET NX` with a TTL).
pub fn delivery_key(delivery_id: &str) -> String {
    format!("{{gatehouse}}:delivery:{delivery_id}")
}

/// A stream message could not be read back.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum MessageError {
    /// A required field is absent.
    #[error("failed to decode stream entry: field {0:?} is missing")]
    MissingField(&'static str),
    /// A field holds a value that does not parse.
    #[error("failed to decode stream entry: field {field:?} is invalid: {reason}")]
    InvalidField {
        /// The field.
        field: &'static str,
        /// What is wrong with it.
        reason: String,
    },
}

/// How an event body is stored in the stream.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BodyEncoding {
    /// The JSON payload as GitHub sent it.
    Identity,
    /// LZ4 block format with the uncompressed size prepended (little-endian u32), as
    /// `lz4_flex::compress_prepend_size` writes it.
    Lz4,
}

impl BodyEncoding {
    /// Name stored in the `encoding` field.
    pub fn as_str(self) -> &'static str {
        match self {
            BodyEncoding::Identity => "identity",
            BodyEncoding::Lz4 => "lz4",
        }
    }

    fn parse(s: &str) -> Result<BodyEncoding, MessageError> {
        match s {
            "identity" => Ok(BodyEncoding::Identity),
            "lz4" => Ok(BodyEncoding::Lz4),
            other => Err(MessageError::InvalidField {
                field: "encoding",
                reason: format!("unknown encoding {other:?}"),
            }),
        }
    }
}

/// One accepted webhook delivery, as stored in [`EVENTS_STREAM`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EventEntry {
    /// `X-GitHub-Delivery`.
    pub delivery_id: String,
    /// `X-GitHub-Event`.
    pub event: String,
    /// When `receive` accepted it, in milliseconds since the Unix epoch.
    pub received_at_ms: i64,
    /// How `body` is encoded.
    pub encoding: BodyEncoding,
    /// The JSON payload, encoded as `encoding` says: the request body exactly as GitHub signed
    /// it, or for a form-encoded delivery the value of its `payload` field.
    pub body: Vec<u8>,
}

impl EventEntry {
    /// Stream fields, in a fixed order, borrowing the entry (the body is not copied).
    pub fn to_fields(&self) -> [(&'static str, Cow<'_, [u8]>); 5] {
        [
            ("delivery", Cow::Borrowed(self.delivery_id.as_bytes())),
            ("event", Cow::Borrowed(self.event.as_bytes())),
            (
                "received_at",
                Cow::Owned(self.received_at_ms.to_string().into_bytes()),
            ),
            ("encoding", Cow::Borrowed(self.encoding.as_str().as_bytes())),
            ("body", Cow::Borrowed(self.body.as_slice())),
        ]
    }

    /// Reads an entry back from its fields; unknown fields are ignored (newer writers).
    pub fn from_fields<'a>(
        fields: impl IntoIterator<Item = (&'a str, &'a [u8])>,
    ) -> Result<EventEntry, MessageError> {
        let mut delivery = None;
        let mut event = None;
        let mut received_at = None;
        let mut encoding = None;
        let mut body = None;
        for (name, value) in fields {
            match name {
                "delivery" => delivery = Some(utf8("delivery", value)?),
                "event" => event = Some(utf8("event", value)?),
                "received_at" => received_at = Some(utf8("received_at", value)?),
                "encoding" => encoding = Some(utf8("encoding", value)?),
                "body" => body = Some(value.to_vec()),
                _ => {}
            }
        }
        let received_at = received_at.ok_or(MessageError::MissingField("received_at"))?;
        Ok(EventEntry {
            delivery_id: delivery.ok_or(MessageError::MissingField("delivery"))?,
            event: event.ok_or(MessageError::MissingField("event"))?,
            received_at_ms: received_at
                .parse()
                .map_err(|_| MessageError::InvalidField {
                    field: "received_at",
                    reason: format!("not an integer: {received_at:?}"),
                })?,
            encoding: encoding.map_or(Ok(BodyEncoding::Identity), |e| BodyEncoding::parse(&e))?,
            body: body.ok_or(MessageError::MissingField("body"))?,
        })
    }
}

fn utf8(field: &'static str, value: &[u8]) -> Result<String, MessageError> {
    String::from_utf8(value.to_vec()).map_err(|_| MessageError::InvalidField {
        field,
        reason: "not UTF-8".to_owned(),
    })
}

/// A signed scan result, as stored in [`RESULTS_STREAM`]: the JSON of a [`ScanResult`]
/// (LZ4-compressed when large) and an HMAC-SHA256 signature over [`Self::signed_bytes`], made
/// with the per-scan key. The signature covers the stored bytes, so a forged entry is refused
/// before anything is decompressed or parsed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ResultEntry {
    /// How `payload` is encoded.
    pub encoding: BodyEncoding,
    /// UID of the ScanRequest, outside the payload so the verifying key can be derived before
    /// anything is decoded (the payload names it too, and must agree).
    pub uid: String,
    /// JSON of a [`ScanResult`], encoded as `encoding` says.
    pub payload: Vec<u8>,
    /// Lowercase hex HMAC-SHA256 of [`Self::signed_bytes`].
    pub signature: String,
}

/// Version label of what a result signature covers; a new scheme gets a new label.
const RESULT_SIGNATURE_LABEL: &[u8] = b"gatehouse.dev/result/v1\0";

impl ResultEntry {
    /// What the signature covers: a versioned label, the encoding's name and the payload.
    pub fn signed_bytes(encoding: BodyEncoding, payload: &[u8]) -> Vec<u8> {
        let mut bytes = Vec::with_capacity(RESULT_SIGNATURE_LABEL.len() + 16 + payload.len());
        bytes.extend_from_slice(RESULT_SIGNATURE_LABEL);
        bytes.extend_from_slice(encoding.as_str().as_bytes());
        bytes.push(0);
        bytes.extend_from_slice(payload);
        bytes
    }

    /// Stream fields, in a fixed order.
    pub fn to_fields(&self) -> [(&'static str, &[u8]); 4] {
        [
            ("uid", self.uid.as_bytes()),
            ("encoding", self.encoding.as_str().as_bytes()),
            ("payload", self.payload.as_slice()),
            ("signature", self.signature.as_bytes()),
        ]
    }

    /// Reads an entry back from its fields; unknown fields are ignored (newer writers).
    pub fn from_fields<'a>(
        fields: impl IntoIterator<Item = (&'a str, &'a [u8])>,
    ) -> Result<ResultEntry, MessageError> {
        let mut uid = None;
        let mut encoding = None;
        let mut payload = None;
        let mut signature = None;
        for (name, value) in fields {
            match name {
                "uid" => uid = Some(utf8("uid", value)?),
                "encoding" => encoding = Some(utf8("encoding", value)?),
                "payload" => payload = Some(value.to_vec()),
                "signature" => signature = Some(utf8("signature", value)?),
                _ => {}
            }
        }
        Ok(ResultEntry {
            uid: uid.ok_or(MessageError::MissingField("uid"))?,
            encoding: encoding.map_or(Ok(BodyEncoding::Identity), |e| BodyEncoding::parse(&e))?,
            payload: payload.ok_or(MessageError::MissingField("payload"))?,
            signature: signature.ok_or(MessageError::MissingField("signature"))?,
        })
    }
}

/// What one scanner Job found, normalised across scanners.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ScanResult {
    /// Random id of this result (128 bits, hex), made once by the agent: the same result
    /// published twice (a retried XADD) is recognised, a second, different result for the same
    /// attempt is refused.
    pub result_id: String,
    /// Namespace of the ScanRequest.
    pub namespace: String,
    /// Name of the ScanRequest.
    pub scan_request: String,
    /// UID of the ScanRequest (the signing key is derived from it).
    pub uid: String,
    /// Scanner name, as in the policy.
    pub scanner: String,
    /// The commit that was scanned.
    pub head_sha: String,
    /// Which attempt of this scanner produced the result (1-based).
    pub attempt: i32,

    /// Whether the scanner completed.
    pub outcome: ScanOutcome,
    /// Findings by severity (all of them, even when `findings` was truncated).
    pub counts: SeverityCounts,
    /// The findings, most severe first; at most the agent's cap.
    pub findings: Vec<Finding>,
    /// Whether findings beyond the cap were left out.
    #[serde(default)]
    pub truncated: bool,
    /// Version the scanner reported, when it did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scanner_version: Option<String>,
    /// What reading the report noticed that a person may want to know (duplicates counted
    /// once, paths outside the repository).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub notes: Vec<String>,
    /// The scanner's SARIF report, gzip-compressed and base64-encoded as GitHub's code scanning
    /// upload takes it, when the policy asks for the upload and the scanner wrote one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sarif: Option<String>,
    /// The pull request's base commit as the same pod scanned it (baseline mode), when it did;
    /// absent when the operator had that commit's findings already.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub baseline: Option<Baseline>,
}

/// What a scan of the pull request's base commit found: the findings that exist before the pull
/// request, by fingerprint.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Baseline {
    /// The base commit that was scanned.
    pub sha: String,
    /// Whether the scanner completed on the base commit.
    pub outcome: ScanOutcome,
    /// Findings by severity on the base commit.
    pub counts: SeverityCounts,
    /// Fingerprints of every finding on the base commit, sorted, without duplicates.
    pub fingerprints: Vec<String>,
}

/// Whether a scanner produced a trustworthy report.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", tag = "status")]
pub enum ScanOutcome {
    /// The scanner ran to completion; `counts` and `findings` are its report.
    Completed,
    /// The scanner failed; there is no trustworthy report.
    ScannerError {
        /// The scanner's exit code, when known.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        exit_code: Option<i32>,
        /// What went wrong, for the check run summary.
        message: String,
    },
}

/// One normalised finding.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Finding {
    /// Scanner's rule or query id.
    pub rule_id: String,
    /// Short title of the rule.
    pub title: String,
    /// Normalised severity.
    pub severity: Severity,
    /// Repository-relative path of the file (`/`-separated, no `..`), when the finding has a
    /// place in the repository (a vulnerable dependency may not).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// 1-based first line, when the finding has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_line: Option<u32>,
    /// 1-based last line (at least `start_line`), when the finding has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub end_line: Option<u32>,
    /// What is wrong here.
    pub message: String,
    /// Where to read more.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub help_url: Option<String>,
    /// Stable identity of the finding across runs (dedup, suppression).
    pub fingerprint: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pairs<'a>(fields: &'a [(&'static str, Vec<u8>)]) -> Vec<(&'static str, &'a [u8])> {
        fields.iter().map(|(k, v)| (*k, v.as_slice())).collect()
    }

    #[test]
    fn event_entry_round_trips_through_stream_fields() {
        let entry = EventEntry {
            delivery_id: "72d3162e-cc78-11e3-81ab-4c9367dc0958".into(),
            event: "pull_request".into(),
            received_at_ms: 1_795_328_487_163,
            encoding: BodyEncoding::Identity,
            body: br#"{"action":"opened"}"#.to_vec(),
        };
        let fields = entry.to_fields();
        let pairs = fields.iter().map(|(k, v)| (*k, v.as_ref()));
        assert_eq!(EventEntry::from_fields(pairs).unwrap(), entry);
    }

    #[test]
    fn event_entry_without_body_is_rejected_by_name() {
        let fields = vec![
            ("delivery", b"d".to_vec()),
            ("event", b"ping".to_vec()),
            ("received_at", b"1".to_vec()),
        ];
        assert_eq!(
            EventEntry::from_fields(pairs(&fields)),
            Err(MessageError::MissingField("body"))
        );
    }

    #[test]
    fn event_entry_with_unknown_encoding_is_rejected() {
        let fields = vec![
            ("delivery", b"d".to_vec()),
            ("event", b"ping".to_vec()),
            ("received_at", b"1".to_vec()),
            ("encoding", b"brotli".to_vec()),
            ("body", b"{}".to_vec()),
        ];
        let err = EventEntry::from_fields(pairs(&fields)).unwrap_err();
        assert!(err.to_string().contains("brotli"), "{err}");
    }

    #[test]
    fn scan_result_round_trips_as_json() {
        let result = ScanResult {
            result_id: "0123456789abcdef0123456789abcdef".into(),
            namespace: "team-a".into(),
            scan_request: "widgets-pr42-9f1c2ab-1a2b3c4d".into(),
            uid: "6f1c".into(),
            scanner: "kics".into(),
            head_sha: "9f1c2ab3d4e5f60718293a4b5c6d7e8f90a1b2c3".into(),
            attempt: 1,
            outcome: ScanOutcome::ScannerError {
                exit_code: Some(126),
                message: "engine error".into(),
            },
            counts: SeverityCounts::default(),
            findings: vec![Finding {
                rule_id: "q1".into(),
                title: "t".into(),
                severity: Severity::High,
                path: Some("main.tf".into()),
                start_line: Some(3),
                end_line: Some(3),
                message: "m".into(),
                help_url: None,
                fingerprint: "f".into(),
            }],
            truncated: false,
            scanner_version: Some("v2.1.19".into()),
            notes: Vec::new(),
            sarif: None,
            baseline: None,
        };
        let entry = ResultEntry {
            encoding: BodyEncoding::Identity,
            uid: "6f1c".into(),
            payload: serde_json::to_vec(&result).unwrap(),
            signature: "00".into(),
        };
        let json: serde_json::Value = serde_json::from_slice(&entry.payload).unwrap();
        assert_eq!(json["outcome"]["status"], "scannerError");
        assert_eq!(json["findings"][0]["severity"], "high");
        assert_eq!(json["findings"][0]["startLine"], 3);
        let fields = entry.to_fields();
        let back = ResultEntry::from_fields(fields.iter().map(|(k, v)| (*k, *v))).unwrap();
        assert_eq!(back, entry);
        let parsed: ScanResult = serde_json::from_slice(&back.payload).unwrap();
        assert_eq!(parsed, result);
    }

    #[test]
    fn a_result_signature_covers_the_encoding_and_the_payload() {
        let identity = ResultEntry::signed_bytes(BodyEncoding::Identity, b"{}");
        let lz4 = ResultEntry::signed_bytes(BodyEncoding::Lz4, b"{}");
        assert_ne!(identity, lz4);
        assert!(identity.ends_with(b"identity\0{}"));
        assert!(identity.starts_with(b"gatehouse.dev/result/v1\0"));
    }

    #[test]
    fn delivery_keys_are_namespaced() {
        assert_eq!(delivery_key("abc"), "{gatehouse}:delivery:abc");
    }
}
