//! Labels Gatehouse puts on the objects it creates, so they can be found by label selector
//! (all ScanRequests of one pull request, all Jobs of one ScanRequest) and so people can filter
//! `kubectl get` output. Values are always valid label values (≤ 63 characters).

use std::collections::BTreeMap;

use crate::scanrequest::ScanRequestSpec;

/// Numeric GitHub repository id.
pub const REPOSITORY_ID: &str = "gatehouse.dev/repository-id";
/// Pull request number.
pub const PULL_REQUEST: &str = "gatehouse.dev/pull-request";
/// Head commit SHA (the first 40 hex digits), to find scans of a commit.
pub const HEAD_SHA: &str = "gatehouse.dev/head-sha";
/// Name of the ScanRequest an object belongs to.
pub const SCAN_REQUEST: &str = "gatehouse.dev/scanrequest";
/// Scanner name, on scanner Jobs.
pub const SCANNER: &str = "gatehouse.dev/scanner";
/// Standard label naming the component that manages the object.
pub const MANAGED_BY: &str = "app.kubernetes.io/managed-by";

/// Labels of a ScanRequest created by the ingest role.
pub fn scan_request_labels(spec: &ScanRequestSpec) -> BTreeMap<String, String> {
    BTreeMap::from([
        (REPOSITORY_ID.to_owned(), spec.repository.id.to_string()),
        (
            PULL_REQUEST.to_owned(),
            spec.pull_request.number.to_string(),
        ),
        (
            HEAD_SHA.to_owned(),
            spec.pull_request.head_sha.chars().take(40).collect(),
        ),
        (MANAGED_BY.to_owned(), "gatehouse".to_owned()),
    ])
}

/// The value of an annotation, if the object has it.
pub fn annotation<'a>(
    meta: &'a k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta,
    key: &str,
) -> Option<&'a str> {
    meta.annotations.as_ref()?.get(key).map(String::as_str)
}

/// Label selector for every ScanRequest of one pull request.
pub fn pull_request_selector(repository_id: i64, pull_request: i64) -> String {
    format!("{REPOSITORY_ID}={repository_id},{PULL_REQUEST}={pull_request}")
}
