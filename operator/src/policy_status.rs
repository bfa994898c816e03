//! ScanPolicy status: `Ready=True` (reason `Valid`) for a usable policy, `Ready=False` (reason
//! `Invalid`) with what is wrong for one whose globs the schema could not check, so `kubectl get
//! sp` shows it and a GitOps tool can alert on it. The operator writes only this status; it never
//! changes a policy's spec.

use std::sync::Arc;
use std::time::Duration;

use gatehouse_crds::scanpolicy::{ScanPolicy, ScanPolicyStatus};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::ResourceExt;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::controller::Action;

use crate::decide::set_condition;
use crate::jobs::FIELD_MANAGER;

/// Writing a policy's status failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The status write failed.
    #[error("failed to write the status of ScanPolicy {name}: {source}")]
    WriteStatus {
        /// `namespace/name`.
        name: String,
        /// Why.
        source: Box<kube::Error>,
    },
}

/// The status `policy` should have (conditions keep their transition time while they hold).
pub fn desired_status(policy: &ScanPolicy, now: &Time) -> ScanPolicyStatus {
    let mut status = policy.status.clone().unwrap_or_default();
    // The same checks as `check-policy`: a quantity or Secret name the schema lets through
    // would fail every scan's Job.
    let problems: Vec<String> = match serde_json::to_value(&policy.spec) {
        Ok(spec) => crate::offline::policy_problems(&spec)
            .into_iter()
            .map(|p| format!("{}: {}", p.field, p.message))
            .collect(),
        Err(error) => vec![format!("spec: {error}")],
    };
    if problems.is_empty() {
        set_condition(
            &mut status.conditions,
            "Ready",
            true,
            "Valid",
            "the policy is valid and in use",
            now,
        );
    } else {
        set_condition(
            &mut status.conditions,
            "Ready",
            false,
            "Invalid",
            &problems.join("; "),
            now,
        );
    }
    status.observed_generation = policy.metadata.generation;
    status
}

/// Writes a policy's status when it changed.
pub async fn reconcile(
    policy: Arc<ScanPolicy>,
    client: Arc<kube::Client>,
) -> Result<Action, Error> {
    let now = Time(k8s_openapi::jiff::Timestamp::now());
    let status = desired_status(&policy, &now);
    if policy.status.as_ref() == Some(&status) {
        return Ok(Action::await_change());
    }
    let namespace = policy.namespace().unwrap_or_default();
    let name = policy.name_any();
    let api: Api<ScanPolicy> = Api::namespaced((*client).clone(), &namespace);
    let body = serde_json::json!({
        "apiVersion": "gatehouse.dev/v1alpha1",
        "kind": "ScanPolicy",
        "status": status,
    });
    api.patch_status(
        &name,
        &PatchParams::apply(FIELD_MANAGER).force(),
        &Patch::Apply(&body),
    )
    .await
    .map_err(|source| Error::WriteStatus {
        name: format!("{namespace}/{name}"),
        source: Box::new(source),
    })?;
    Ok(Action::await_change())
}

/// Retries a failed status write after a while.
// The signature is kube's `Controller::run` error policy.
#[allow(clippy::needless_pass_by_value)]
pub fn error_policy(_: Arc<ScanPolicy>, error: &Error, _: Arc<kube::Client>) -> Action {
    tracing::warn!(%error, "ScanPolicy status not written");
    Action::requeue(Duration::from_secs(10))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use crate::test_support::{self, now};

    #[test]
    fn a_valid_policy_is_ready_and_one_with_a_bad_glob_says_what_is_wrong() {
        let mut policy = test_support::kics_policy();
        policy.metadata.generation = Some(3);
        let status = desired_status(&policy, &now());
        assert_eq!(status.observed_generation, Some(3));
        assert_eq!(status.conditions[0].status, "True");
        policy.spec.repositories = vec!["acme/[".to_owned()];
        let status = desired_status(&policy, &now());
        let ready = &status.conditions[0];
        assert_eq!(
            (ready.status.as_str(), ready.reason.as_str()),
            ("False", "Invalid")
        );
        assert!(ready.message.contains("acme/["), "{}", ready.message);
    }
}
