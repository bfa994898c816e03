//! Builders the operator's unit tests share: the sample ScanRequest and policies of
//! `deploy/samples/`, as the API server would return them.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use gatehouse_crds::{ScanPolicy, ScanRequest};

fn sample<T: serde::de::DeserializeOwned>(file: &str) -> T {
    let path = format!("{}/../deploy/samples/{file}", env!("CARGO_MANIFEST_DIR"));
    serde_yaml::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap()
}

/// The sample ScanRequest, stored (uid, creation time).
pub fn request() -> ScanRequest {
    let mut request: ScanRequest = sample("scanrequest.yaml");
    request.metadata.uid = Some("5f0c7a4e-1b2d-4c3e-8f9a-0b1c2d3e4f50".to_owned());
    request.metadata.generation = Some(1);
    request.metadata.creation_timestamp =
        Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
            "2026-11-23T10:00:00Z".parse().unwrap(),
        ));
    request
}

/// The KICS-only sample policy.
pub fn kics_policy() -> ScanPolicy {
    sample("scanpolicy-kics.yaml")
}

/// The KICS + Black Duck sample policy.
pub fn payments_policy() -> ScanPolicy {
    sample("scanpolicy-kics-blackduck.yaml")
}

/// A fixed time.
pub fn now() -> k8s_openapi::apimachinery::pkg::apis::meta::v1::Time {
    k8s_openapi::apimachinery::pkg::apis::meta::v1::Time("2026-11-23T10:00:05Z".parse().unwrap())
}

/// The sample ScanRequest, for a repository and base branch the payments policy covers.
pub fn payments_request() -> ScanRequest {
    let mut request = request();
    request.spec.repository.owner = "acme".to_owned();
    request.spec.repository.name = "payments-api".to_owned();
    request.spec.pull_request.base_ref = "main".to_owned();
    request
}
