//! The committed CRD YAML is exactly what `crdgen` prints, and has what `kubectl` users rely on:
//! printer columns, short names, categories, the status subresource and the CEL rules.

// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use gatehouse_crds::{ScanPolicy, ScanRequest, crd_yaml};
use kube::CustomResourceExt;

const COMMITTED: &str = include_str!("../../charts/gatehouse/crds/gatehouse.dev.yaml");

#[test]
fn committed_crd_yaml_matches_crdgen_output() {
    let generated = crd_yaml().unwrap();
    assert!(
        generated == COMMITTED,
        "charts/gatehouse/crds/gatehouse.dev.yaml is stale; regenerate it with\n  \
         cargo run -p gatehouse-crds --bin crdgen > charts/gatehouse/crds/gatehouse.dev.yaml"
    );
}

#[test]
fn scanrequest_crd_has_the_seven_printer_columns_in_order() {
    let crd = ScanRequest::crd();
    let version = &crd.spec.versions[0];
    let columns: Vec<(&str, &str)> = version
        .additional_printer_columns
        .as_ref()
        .unwrap()
        .iter()
        .map(|c| (c.name.as_str(), c.json_path.as_str()))
        .collect();
    assert_eq!(
        columns,
        vec![
            ("Repository", ".spec.repository.name"),
            ("PR", ".spec.pullRequest.number"),
            ("Commit", ".status.commit"),
            ("Phase", ".status.phase"),
            ("Critical", ".status.findings.critical"),
            ("High", ".status.findings.high"),
            ("Age", ".metadata.creationTimestamp"),
        ]
    );
}

#[test]
fn both_crds_have_short_names_category_and_status_subresource() {
    for (crd, short) in [(ScanRequest::crd(), "sr"), (ScanPolicy::crd(), "sp")] {
        assert_eq!(crd.spec.group, "gatehouse.dev");
        assert_eq!(crd.spec.scope, "Namespaced");
        assert_eq!(
            crd.spec.names.short_names.as_deref(),
            Some(&[short.to_owned()][..])
        );
        assert_eq!(
            crd.spec.names.categories.as_deref(),
            Some(&["gatehouse".to_owned()][..])
        );
        let version = &crd.spec.versions[0];
        assert_eq!(version.name, "v1alpha1");
        assert!(version.served && version.storage);
        assert!(
            version.subresources.as_ref().unwrap().status.is_some(),
            "{short}"
        );
    }
    assert_eq!(ScanPolicy::crd().spec.names.plural, "scanpolicies");
}

#[test]
fn crds_carry_their_cel_rules() {
    let request = serde_json::to_string(&ScanRequest::crd()).unwrap();
    assert!(request.contains(r#""rule":"self == oldSelf""#));
    assert!(request.contains(r#""rule":"self.metadata.name.size() <= 63""#));
    let policy = serde_json::to_string(&ScanPolicy::crd()).unwrap();
    for rule in [
        "self.all(s, self.exists_one(t, t.name == s.name))",
        "self.timeoutSeconds > 0",
        "self.kind != 'blackduck' || has(self.blackduck)",
        "self.failOn in [",
        "@sha256:[a-f0-9]{64}$",
    ] {
        assert!(policy.contains(rule), "missing rule {rule}");
    }
}

#[test]
fn integer_fields_are_int32_or_int64_never_unsigned() {
    // The apiserver does not know `uint64`; Rust `u64` would produce it.
    assert!(
        !COMMITTED.contains("uint"),
        "an unsigned integer format slipped into the CRDs"
    );
}

#[test]
fn every_spec_and_status_field_has_a_description() {
    // `kubectl explain` shows these; an undocumented field is a bug.
    fn walk(path: &str, node: &serde_json::Value, missing: &mut Vec<String>) {
        if let Some(props) = node.get("properties").and_then(|p| p.as_object()) {
            for (name, child) in props {
                let child_path = format!("{path}.{name}");
                if child.get("description").is_none() && !path.is_empty() && name != "metadata" {
                    missing.push(child_path.clone());
                }
                walk(&child_path, child, missing);
            }
        }
        if let Some(items) = node.get("items") {
            walk(&format!("{path}[]"), items, missing);
        }
    }
    for crd in [ScanRequest::crd(), ScanPolicy::crd()] {
        let schema = gatehouse_crds::openapi_schema(&crd).unwrap();
        let mut missing = Vec::new();
        walk("", &schema, &mut missing);
        // Top-level apiVersion/kind come from kube and are documented by Kubernetes itself.
        missing.retain(|p| p != ".apiVersion" && p != ".kind");
        assert!(
            missing.is_empty(),
            "{}: fields without description: {missing:?}",
            crd.spec.names.kind
        );
    }
}
