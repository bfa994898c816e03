//! Every CEL rule of the generated CRDs, run client-side with kube's `cel` feature: for each rule
//! one object the apiserver would accept and one it would reject, checked on the JSON a user
//! would apply (schema defaults are filled in first, as the apiserver does).

// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use gatehouse_crds::{ScanPolicy, ScanRequest};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::CustomResourceExt;
use kube::core::cel::Validator;
use serde_json::{Value, json};

fn schema(crd: &CustomResourceDefinition) -> Value {
    gatehouse_crds::openapi_schema(crd).expect("generated CRD has a schema")
}

/// Messages of the rules that fail, empty when the object is accepted.
fn failures(crd: &CustomResourceDefinition, object: &Value, old: Option<&Value>) -> Vec<String> {
    match Validator::new().validate(&schema(crd), object, old) {
        Ok(()) => Vec::new(),
        Err(errors) => errors
            .as_slice()
            .iter()
            .map(|e| e.message.clone())
            .collect(),
    }
}

fn policy_failures(policy: &Value) -> Vec<String> {
    failures(&ScanPolicy::crd(), policy, None)
}

fn assert_rejected_with(messages: &[String], expected: &str) {
    assert!(
        messages.iter().any(|m| m.contains(expected)),
        "expected a failure containing {expected:?}, got {messages:?}"
    );
}

const DIGEST: &str = "sha256:7b0a4d750acd491942ce9de52c1183fbf4451c1c936780ec2cfacd2650e7d84c";

fn kics_scanner() -> Value {
    json!({
        "name": "kics",
        "kind": "kics",
        "image": format!("docker.io/checkmarx/kics:v2.1.19@{DIGEST}"),
        "failOn": "high",
        "timeoutSeconds": 600,
    })
}

fn blackduck_scanner() -> Value {
    json!({
        "name": "blackduck",
        "kind": "blackduck",
        "image": format!("docker.io/blackducksoftware/detect:10@{DIGEST}"),
        "blackduck": {
            "url": "https://blackduck.example.com",
            "credentialsSecretRef": {"name": "blackduck-token"},
        },
    })
}

fn policy_with(scanners: &[Value]) -> Value {
    json!({
        "apiVersion": "gatehouse.dev/v1alpha1",
        "kind": "ScanPolicy",
        "metadata": {"name": "default", "namespace": "security"},
        "spec": {"repositories": ["acme/*"], "scanners": scanners},
    })
}

fn scan_request(name: &str) -> Value {
    json!({
        "apiVersion": "gatehouse.dev/v1alpha1",
        "kind": "ScanRequest",
        "metadata": {"name": name, "namespace": "security"},
        "spec": {
            "repository": {"owner": "acme", "name": "widgets", "id": 1_296_269},
            "installationId": 42,
            "pullRequest": {
                "number": 42,
                "headSha": "9f1c2ab3d4e5f60718293a4b5c6d7e8f90a1b2c3",
                "headRef": "feature",
                "baseRef": "main",
                "fork": false,
                "author": "octocat",
                "authorAssociation": "MEMBER",
            },
            "trigger": {
                "event": "pull_request",
                "action": "opened",
                "deliveryId": "72d3162e-cc78-11e3-81ab-4c9367dc0958",
                "sender": "octocat",
            },
            "policyRef": {"name": "default"},
        },
    })
}

#[test]
fn a_complete_policy_with_both_scanner_kinds_is_accepted() {
    let messages = policy_failures(&policy_with(&[kics_scanner(), blackduck_scanner()]));
    assert_eq!(messages, Vec::<String>::new());
}

#[test]
fn duplicate_scanner_names_are_rejected() {
    let mut second = kics_scanner();
    second["failOn"] = json!("critical");
    let messages = policy_failures(&policy_with(&[kics_scanner(), second.clone()]));
    assert_rejected_with(&messages, "scanner names must be unique within a policy");

    second["name"] = json!("kics-strict");
    assert!(policy_failures(&policy_with(&[kics_scanner(), second])).is_empty());
}

#[test]
fn fail_on_outside_the_allowed_set_is_rejected() {
    let mut scanner = kics_scanner();
    scanner["failOn"] = json!("fatal");
    assert_rejected_with(
        &policy_failures(&policy_with(&[scanner.clone()])),
        "failOn must be one of critical, high, medium, low, info, never",
    );
    for allowed in ["critical", "high", "medium", "low", "info", "never"] {
        scanner["failOn"] = json!(allowed);
        assert!(
            policy_failures(&policy_with(&[scanner.clone()])).is_empty(),
            "{allowed}"
        );
    }
}

#[test]
fn zero_or_negative_timeouts_are_rejected() {
    let mut scanner = kics_scanner();
    for bad in [0, -30] {
        scanner["timeoutSeconds"] = json!(bad);
        assert_rejected_with(
            &policy_failures(&policy_with(&[scanner.clone()])),
            "timeoutSeconds must be positive",
        );
    }
    scanner["timeoutSeconds"] = json!(1);
    assert!(policy_failures(&policy_with(&[scanner])).is_empty());
}

#[test]
fn blackduck_without_its_settings_is_rejected() {
    let mut scanner = blackduck_scanner();
    scanner.as_object_mut().unwrap().remove("blackduck");
    assert_rejected_with(
        &policy_failures(&policy_with(&[scanner])),
        "kind blackduck needs blackduck settings",
    );
}

#[test]
fn blackduck_settings_on_a_kics_scanner_are_rejected() {
    let mut scanner = kics_scanner();
    scanner["blackduck"] = blackduck_scanner()["blackduck"].clone();
    assert_rejected_with(
        &policy_failures(&policy_with(&[scanner])),
        "blackduck settings are only allowed for kind blackduck",
    );
}

#[test]
fn kics_settings_on_a_blackduck_scanner_are_rejected_and_accepted_on_kics() {
    let mut scanner = blackduck_scanner();
    scanner["kics"] = json!({"excludePaths": ["vendor/*"]});
    assert_rejected_with(
        &policy_failures(&policy_with(&[scanner])),
        "kics settings are only allowed for kind kics",
    );
    let mut kics = kics_scanner();
    kics["kics"] = json!({"excludePaths": ["vendor/*"], "platforms": ["Terraform"]});
    assert!(policy_failures(&policy_with(&[kics])).is_empty());
}

#[test]
fn images_not_pinned_by_digest_are_rejected() {
    let mut scanner = kics_scanner();
    for bad in [
        "checkmarx/kics:v2.1.19",
        "checkmarx/kics@sha256:short",
        "checkmarx/kics:latest @sha256:7b0a4d750acd491942ce9de52c1183fbf4451c1c936780ec2cfacd2650e7d84c",
    ] {
        scanner["image"] = json!(bad);
        assert_rejected_with(
            &policy_failures(&policy_with(&[scanner.clone()])),
            "image must be pinned by digest",
        );
    }
    scanner["image"] = json!(format!("registry.internal:5000/kics@{DIGEST}"));
    assert!(policy_failures(&policy_with(&[scanner])).is_empty());
}

#[test]
fn scan_request_spec_cannot_change_after_creation() {
    let crd = ScanRequest::crd();
    let old = scan_request("widgets-pr42-9f1c2ab-da3e7b82");
    assert!(failures(&crd, &old, None).is_empty());

    let mut new = old.clone();
    new["spec"]["pullRequest"]["headSha"] = json!("0000000000000000000000000000000000000000");
    assert_rejected_with(&failures(&crd, &new, Some(&old)), "spec is immutable");

    let mut relabelled = old.clone();
    relabelled["metadata"]["labels"] = json!({"team": "a"});
    relabelled["status"] = json!({"phase": "Running"});
    assert!(failures(&crd, &relabelled, Some(&old)).is_empty());
}

#[test]
fn scan_request_names_longer_than_63_characters_are_rejected() {
    let crd = ScanRequest::crd();
    assert!(failures(&crd, &scan_request(&"a".repeat(63)), None).is_empty());
    assert_rejected_with(
        &failures(&crd, &scan_request(&"a".repeat(64)), None),
        "at most 63 characters",
    );
}

/// Paths of lists without `maxItems` (and maps without `maxProperties`) that enclose a CEL rule.
/// A real API server estimates the cost of a rule from the largest size each enclosing list may
/// have; unbounded, it takes the size from the 3 MiB request limit and refuses the CRD ("estimated
/// rule cost exceeds budget"). The emulator does not estimate costs, so this test does.
fn unbounded_lists_around_rules(
    schema: &Value,
    path: &str,
    unbounded: Option<&str>,
    out: &mut Vec<String>,
) {
    if let Some(outer) = unbounded
        && schema.get("x-kubernetes-validations").is_some()
    {
        out.push(format!("{path} (inside unbounded {outer})"));
    }
    if let Some(props) = schema.get("properties").and_then(Value::as_object) {
        for (name, child) in props {
            unbounded_lists_around_rules(child, &format!("{path}.{name}"), unbounded, out);
        }
    }
    if let Some(items) = schema.get("items") {
        let list = format!("{path}[]");
        let bounded = schema.get("maxItems").is_some();
        let outer = if bounded {
            unbounded
        } else {
            Some(list.as_str())
        };
        unbounded_lists_around_rules(items, &list, outer, out);
    }
    if let Some(values) = schema.get("additionalProperties").filter(|v| v.is_object()) {
        let map = format!("{path}{{}}");
        let bounded = schema.get("maxProperties").is_some();
        let outer = if bounded {
            unbounded
        } else {
            Some(map.as_str())
        };
        unbounded_lists_around_rules(values, &map, outer, out);
    }
}

#[test]
fn no_cel_rule_sits_inside_a_list_without_a_bound_so_a_real_api_server_accepts_the_crds() {
    for crd in gatehouse_crds::crds() {
        let mut found = Vec::new();
        unbounded_lists_around_rules(&schema(&crd), "", None, &mut found);
        assert!(
            found.is_empty(),
            "{}: {found:?}",
            crd.metadata.name.unwrap_or_default()
        );
    }
}
