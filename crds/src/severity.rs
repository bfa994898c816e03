//! The one severity scale every scanner's findings are mapped onto, and the `failOn` threshold
//! that turns counts into a pass/fail decision. Pure data: no I/O.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Severity of a finding, lowest first, so `Ord` follows seriousness (`Critical` is greatest).
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, JsonSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    /// Informational: no action needed.
    Info,
    /// Low risk.
    Low,
    /// Medium risk.
    Medium,
    /// High risk.
    High,
    /// Critical risk.
    Critical,
}

impl Severity {
    /// All severities, most serious first (the order reports are written in).
    pub const DESCENDING: [Severity; 5] = [
        Severity::Critical,
        Severity::High,
        Severity::Medium,
        Severity::Low,
        Severity::Info,
    ];

    /// The lowercase name used in the API and in reports.
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Info => "info",
            Severity::Low => "low",
            Severity::Medium => "medium",
            Severity::High => "high",
            Severity::Critical => "critical",
        }
    }

    /// Parses a scanner's severity word, case-insensitively (`HIGH`, `High`, `high`).
    ///
    /// Scanners' own synonyms map onto the scale: `trace` and `unspecified` are `info`,
    /// Black Duck's policy severities `blocker` (critical), `major` (high), `minor` (medium) and
    /// `trivial` (low).
    pub fn parse_lenient(word: &str) -> Option<Severity> {
        match word.trim().to_ascii_lowercase().as_str() {
            "critical" | "blocker" => Some(Severity::Critical),
            "high" | "major" => Some(Severity::High),
            "medium" | "moderate" | "minor" => Some(Severity::Medium),
            "low" | "trivial" => Some(Severity::Low),
            "info" | "informational" | "trace" | "unspecified" | "ok" => Some(Severity::Info),
            _ => None,
        }
    }
}

impl std::fmt::Display for Severity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Number of findings at each severity.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SeverityCounts {
    /// Findings of severity critical.
    #[serde(default)]
    pub critical: i64,
    /// Findings of severity high.
    #[serde(default)]
    pub high: i64,
    /// Findings of severity medium.
    #[serde(default)]
    pub medium: i64,
    /// Findings of severity low.
    #[serde(default)]
    pub low: i64,
    /// Findings of severity info.
    #[serde(default)]
    pub info: i64,
}

impl SeverityCounts {
    /// The count at one severity.
    pub fn get(&self, severity: Severity) -> i64 {
        match severity {
            Severity::Critical => self.critical,
            Severity::High => self.high,
            Severity::Medium => self.medium,
            Severity::Low => self.low,
            Severity::Info => self.info,
        }
    }

    /// Adds one finding of `severity`.
    pub fn add(&mut self, severity: Severity) {
        let slot = match severity {
            Severity::Critical => &mut self.critical,
            Severity::High => &mut self.high,
            Severity::Medium => &mut self.medium,
            Severity::Low => &mut self.low,
            Severity::Info => &mut self.info,
        };
        *slot = slot.saturating_add(1);
    }

    /// Sum of two sets of counts (totals over scanners).
    #[must_use]
    pub fn plus(&self, other: &SeverityCounts) -> SeverityCounts {
        SeverityCounts {
            critical: self.critical.saturating_add(other.critical),
            high: self.high.saturating_add(other.high),
            medium: self.medium.saturating_add(other.medium),
            low: self.low.saturating_add(other.low),
            info: self.info.saturating_add(other.info),
        }
    }

    /// Total number of findings.
    pub fn total(&self) -> i64 {
        Severity::DESCENDING
            .iter()
            .fold(0_i64, |acc, s| acc.saturating_add(self.get(*s)))
    }

    /// The most serious severity with at least one finding.
    pub fn highest(&self) -> Option<Severity> {
        Severity::DESCENDING.into_iter().find(|s| self.get(*s) > 0)
    }
}

/// The lowest severity that fails a pull request's check, or `never` to only report.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum FailOn {
    /// Fail when there is a critical finding.
    Critical,
    /// Fail when there is a high or critical finding (the default).
    #[default]
    High,
    /// Fail at medium or above.
    Medium,
    /// Fail at low or above.
    Low,
    /// Fail on any finding, informational ones included.
    Info,
    /// Never fail: findings are reported, the check concludes neutral or success.
    Never,
}

impl FailOn {
    /// Every value the API accepts, in the spelling of the API (used by the CEL rule too).
    pub const ALLOWED: [&'static str; 6] = ["critical", "high", "medium", "low", "info", "never"];

    /// The severity threshold, or `None` for `never`.
    pub fn threshold(self) -> Option<Severity> {
        match self {
            FailOn::Critical => Some(Severity::Critical),
            FailOn::High => Some(Severity::High),
            FailOn::Medium => Some(Severity::Medium),
            FailOn::Low => Some(Severity::Low),
            FailOn::Info => Some(Severity::Info),
            FailOn::Never => None,
        }
    }

    /// Whether findings with these counts fail the check.
    pub fn fails(self, counts: &SeverityCounts) -> bool {
        match (self.threshold(), counts.highest()) {
            (Some(threshold), Some(highest)) => highest >= threshold,
            _ => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn severities_order_from_info_up_to_critical() {
        assert!(Severity::Info < Severity::Low);
        assert!(Severity::Low < Severity::Medium);
        assert!(Severity::Medium < Severity::High);
        assert!(Severity::High < Severity::Critical);
        let mut shuffled = vec![
            Severity::Low,
            Severity::Critical,
            Severity::Info,
            Severity::High,
        ];
        shuffled.sort();
        assert_eq!(
            shuffled,
            vec![
                Severity::Info,
                Severity::Low,
                Severity::High,
                Severity::Critical
            ]
        );
    }

    #[test]
    fn scanner_words_map_onto_the_scale() {
        assert_eq!(Severity::parse_lenient("HIGH"), Some(Severity::High));
        assert_eq!(Severity::parse_lenient("Blocker"), Some(Severity::Critical));
        assert_eq!(Severity::parse_lenient("TRACE"), Some(Severity::Info));
        assert_eq!(Severity::parse_lenient("minor"), Some(Severity::Medium));
        assert_eq!(Severity::parse_lenient("severe"), None);
    }

    #[test]
    fn severity_serialises_lowercase() {
        assert_eq!(
            serde_json::to_string(&Severity::Critical).unwrap(),
            "\"critical\""
        );
        let parsed: Severity = serde_json::from_str("\"medium\"").unwrap();
        assert_eq!(parsed, Severity::Medium);
    }

    #[test]
    fn fail_on_high_fails_on_high_and_critical_only() {
        let mut counts = SeverityCounts::default();
        counts.add(Severity::Medium);
        assert!(!FailOn::High.fails(&counts));
        assert!(FailOn::Medium.fails(&counts));
        counts.add(Severity::High);
        assert!(FailOn::High.fails(&counts));
        assert!(!FailOn::Critical.fails(&counts));
        assert!(!FailOn::Never.fails(&counts));
    }

    #[test]
    fn no_findings_never_fail() {
        let counts = SeverityCounts::default();
        for fail_on in [FailOn::Info, FailOn::Low, FailOn::Critical] {
            assert!(!fail_on.fails(&counts));
        }
    }

    #[test]
    fn counts_add_up_and_report_the_highest() {
        let mut a = SeverityCounts::default();
        a.add(Severity::Low);
        a.add(Severity::Low);
        let mut b = SeverityCounts::default();
        b.add(Severity::Critical);
        let sum = a.plus(&b);
        assert_eq!(sum.total(), 3);
        assert_eq!(sum.low, 2);
        assert_eq!(sum.highest(), Some(Severity::Critical));
        assert_eq!(a.highest(), Some(Severity::Low));
    }

    #[test]
    fn allowed_fail_on_words_all_parse() {
        for word in FailOn::ALLOWED {
            let parsed: FailOn = serde_json::from_value(serde_json::json!(word)).unwrap();
            assert_eq!(
                serde_json::to_value(parsed).unwrap(),
                serde_json::json!(word)
            );
        }
    }
}
