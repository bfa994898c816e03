//! Small helpers the Kubernetes API emulator's tests share: the `Status` of a failed call, the
//! sample resources in `deploy/samples/`, a minimal valid Job.

use serde_json::{Value, json};

/// The API `Status` of a failed kube call. Panics (failing the test) on any other error.
// Test support: a call that was meant to fail with a Status and did not is a failed test.
#[allow(clippy::panic)]
pub fn api_status(err: kube::Error) -> kube::core::Status {
    match err {
        kube::Error::Api(status) => *status,
        other => panic!("expected an API error, got {other:?}"),
    }
}

/// The field and reason of each cause of a `Status` (422 Invalid, 409 apply conflicts).
pub fn causes(status: &kube::core::Status) -> Vec<(String, String)> {
    status
        .details
        .as_ref()
        .map(|d| {
            d.causes
                .iter()
                .map(|c| (c.field.clone(), c.reason.clone()))
                .collect()
        })
        .unwrap_or_default()
}

/// A sample resource from `deploy/samples/`, parsed as `T`. Panics if it is missing or does
/// not parse (the samples are tested to parse).
// Test support: the samples are part of the repository.
#[allow(clippy::panic)]
pub fn sample<T: serde::de::DeserializeOwned>(file: &str) -> T {
    let path = format!("{}/../deploy/samples/{file}", env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    serde_yaml::from_str(&text).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// The smallest Job a real API server accepts: one container, `restartPolicy: Never`.
pub fn job_body(name: &str) -> Value {
    json!({"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": name},
        "spec": {"template": {"spec": {"restartPolicy": "Never",
            "containers": [{"name": "scan", "image": "kics@sha256:0123"}]}}}})
}
