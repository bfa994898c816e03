//! The sample resources in `deploy/samples/` parse into the Rust types, pass every CEL rule, and
//! say what they claim: the ScanRequest sample has the name and labels ingest would give it and
//! is governed by the policy it references.

// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::PathBuf;
use std::sync::Arc;

use gatehouse_crds::labels::scan_request_labels;
use gatehouse_crds::naming::{TriggerKey, scan_request_name};
use gatehouse_crds::selection::{PolicyIndex, PullRequestFacts, Verdict};
use gatehouse_crds::{ScanPolicy, ScanRequest};
use kube::CustomResourceExt;
use kube::core::cel::Validator;

fn sample(name: &str) -> serde_json::Value {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../deploy/samples")
        .join(name);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_yaml::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn assert_cel_accepts<K: CustomResourceExt>(object: &serde_json::Value) {
    let schema = gatehouse_crds::openapi_schema(&K::crd()).unwrap();
    if let Err(errors) = Validator::new().validate(&schema, object, None) {
        panic!("{} rejected by CEL: {errors:?}", object["metadata"]["name"]);
    }
}

fn policies() -> Vec<ScanPolicy> {
    ["scanpolicy-kics.yaml", "scanpolicy-kics-blackduck.yaml"]
        .into_iter()
        .map(|file| {
            let value = sample(file);
            assert_cel_accepts::<ScanPolicy>(&value);
            let policy: ScanPolicy = serde_json::from_value(value).unwrap();
            assert!(
                policy.spec.problems().is_empty(),
                "{file}: {:?}",
                policy.spec.problems()
            );
            policy
        })
        .collect()
}

#[test]
fn sample_policies_parse_and_pass_cel() {
    let policies = policies();
    assert_eq!(policies[0].spec.scanners.len(), 1);
    assert_eq!(policies[1].spec.scanners.len(), 2);
    assert_eq!(
        policies[1].spec.forks,
        gatehouse_crds::scanpolicy::ForkMode::RequireApproval
    );
}

#[test]
fn sample_scanrequest_is_what_ingest_would_create() {
    let value = sample("scanrequest.yaml");
    assert_cel_accepts::<ScanRequest>(&value);
    let request: ScanRequest = serde_json::from_value(value).unwrap();
    let spec = &request.spec;
    let expected_name = scan_request_name(
        &spec.repository.name,
        spec.repository.id,
        spec.pull_request.number,
        &spec.pull_request.head_sha,
        TriggerKey::Change(spec.pull_request.updated_at.as_deref().unwrap()),
    );
    assert_eq!(
        request.metadata.name.as_deref(),
        Some(expected_name.as_str())
    );
    assert_eq!(
        request.metadata.labels.as_ref(),
        Some(&scan_request_labels(spec))
    );

    let index = PolicyIndex::build(policies().into_iter().map(Arc::new));
    let full_name = spec.repository.full_name();
    let selection = index
        .select(&PullRequestFacts {
            repository: &full_name,
            base_ref: &spec.pull_request.base_ref,
            action: spec.trigger.action.as_deref(),
            draft: spec.pull_request.draft,
            fork: spec.pull_request.fork,
            author: &spec.pull_request.author,
            author_association: &spec.pull_request.author_association,
        })
        .expect("a sample policy covers the sample request");
    assert_eq!(
        selection.policy.metadata.name.as_deref(),
        Some(spec.policy_ref.name.as_str())
    );
    assert_eq!(selection.verdict, Verdict::Scan);
}

#[test]
fn payments_policy_outranks_the_org_wide_policy_for_its_repositories() {
    let index = PolicyIndex::build(policies().into_iter().map(Arc::new));
    let facts = |repository| PullRequestFacts {
        repository,
        base_ref: "main",
        action: Some("synchronize"),
        draft: false,
        fork: false,
        author: "dev",
        author_association: "MEMBER",
    };
    let name = |repo| {
        index
            .select(&facts(repo))
            .and_then(|s| s.policy.metadata.name.clone())
    };
    assert_eq!(name("acme/payments-api").as_deref(), Some("payments"));
    assert_eq!(name("acme/payments-sandbox").as_deref(), Some("acme-iac"));
    assert_eq!(name("acme/website").as_deref(), Some("acme-iac"));
    assert_eq!(name("elsewhere/repo"), None);
}

#[test]
fn sample_scanrequest_carries_the_fields_of_the_fixture_it_claims_to_come_from() {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../tests/fixtures/github/pull_request.opened.octokit.json");
    let payload: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    let request: ScanRequest = serde_json::from_value(sample("scanrequest.yaml")).unwrap();
    let spec = &request.spec;
    let pr = &payload["pull_request"];
    assert_eq!(
        spec.repository.id,
        payload["repository"]["id"].as_i64().unwrap()
    );
    assert_eq!(
        spec.repository.full_name(),
        payload["repository"]["full_name"].as_str().unwrap()
    );
    assert_eq!(
        spec.installation_id,
        payload["installation"]["id"].as_i64().unwrap()
    );
    assert_eq!(
        spec.pull_request.number,
        payload["number"].as_i64().unwrap()
    );
    assert_eq!(
        spec.pull_request.head_sha,
        pr["head"]["sha"].as_str().unwrap()
    );
    assert_eq!(
        spec.pull_request.head_ref,
        pr["head"]["ref"].as_str().unwrap()
    );
    assert_eq!(
        spec.pull_request.base_ref,
        pr["base"]["ref"].as_str().unwrap()
    );
    assert_eq!(
        spec.pull_request.author,
        pr["user"]["login"].as_str().unwrap()
    );
    assert_eq!(
        spec.pull_request.author_association,
        pr["author_association"].as_str().unwrap()
    );
    assert_eq!(spec.trigger.action.as_deref(), payload["action"].as_str());
    assert_eq!(
        spec.pull_request.updated_at.as_deref(),
        pr["updated_at"].as_str()
    );
}
