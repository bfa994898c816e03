//! The `external_id` Gatehouse gives each GitHub Check Run: which ScanRequest and scanner it
//! reports, and the pull request number (check payloads of fork pull requests carry no pull
//! request list, so a re-run must find the number here).

/// Identity carried in a Check Run's `external_id`:
/// `<namespace>/<scanrequest>/<pr>/<scanner>/<uid>` (older runs have no `/<uid>`). The UID tells
/// apart two ScanRequests that had the same name one after the other (one deleted, then made
/// again): the second must never find and reopen the first one's check run.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ExternalId {
    /// Namespace of the ScanRequest.
    pub namespace: String,
    /// Name of the ScanRequest.
    pub scan_request: String,
    /// Pull request number.
    pub pull_request: i64,
    /// Scanner name.
    pub scanner: String,
    /// UID of the ScanRequest.
    pub uid: Option<String>,
}

impl ExternalId {
    /// Parses an `external_id`; `None` for anything Gatehouse did not write.
    pub fn parse(text: &str) -> Option<ExternalId> {
        let mut parts = text.split('/');
        let (namespace, name, pr, scanner) =
            (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
        let uid = parts.next();
        if parts.next().is_some()
            || [namespace, name, scanner].iter().any(|p| p.is_empty())
            || uid.is_some_and(str::is_empty)
        {
            return None;
        }
        Some(ExternalId {
            namespace: namespace.to_owned(),
            scan_request: name.to_owned(),
            pull_request: pr.parse().ok().filter(|n: &i64| *n > 0)?,
            scanner: scanner.to_owned(),
            uid: uid.map(str::to_owned),
        })
    }
}

impl std::fmt::Display for ExternalId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}/{}/{}/{}",
            self.namespace, self.scan_request, self.pull_request, self.scanner
        )?;
        match &self.uid {
            Some(uid) => write!(f, "/{uid}"),
            None => Ok(()),
        }
    }
}

/// Check Run name for a scanner.
pub fn check_run_name(scanner: &str) -> String {
    format!("gatehouse/{scanner}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn external_id_round_trips() {
        let id = ExternalId {
            namespace: "gatehouse-scans".into(),
            scan_request: "widgets-pr42-9f1c2ab-da3e7b82".into(),
            pull_request: 42,
            scanner: "kics".into(),
            uid: Some("0f6c4d1e-8f2b-4c7a-9d3e-1a2b3c4d5e6f".into()),
        };
        let text = id.to_string();
        assert_eq!(
            text,
            "gatehouse-scans/widgets-pr42-9f1c2ab-da3e7b82/42/kics/0f6c4d1e-8f2b-4c7a-9d3e-1a2b3c4d5e6f"
        );
        assert_eq!(ExternalId::parse(&text), Some(id.clone()));
        // Runs made before the UID was part of the id.
        let older = ExternalId { uid: None, ..id };
        assert_eq!(
            ExternalId::parse("gatehouse-scans/widgets-pr42-9f1c2ab-da3e7b82/42/kics"),
            Some(older)
        );
    }

    #[test]
    fn foreign_external_ids_are_not_ours() {
        for text in [
            "",
            "42",
            "a/b/c",
            "a/b/x/d",
            "a/b/0/d",
            "a//1/d",
            "a/b/1/d/",
            "a/b/1/d/e/f",
        ] {
            assert_eq!(ExternalId::parse(text), None, "{text}");
        }
    }
}
