//! The committed ScanPolicy field reference (`docs/policy-reference.md`) is exactly what
//! `crdgen policy-reference` prints, and that output leaves out no field, default, limit or CEL
//! rule of the CRD schema (checked here by a walk of the schema of its own).

// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use gatehouse_crds::ScanPolicy;
use gatehouse_crds::reference::{REGENERATE, policy_reference};
use kube::CustomResourceExt;
use serde_json::Value;

const COMMITTED: &str = include_str!("../../docs/policy-reference.md");

#[test]
fn committed_policy_reference_matches_the_generator_output() {
    assert!(
        policy_reference() == COMMITTED,
        "docs/policy-reference.md is stale; regenerate it with\n  {REGENERATE}"
    );
}

/// Every field under `spec` and `status` as (path, schema), maps' and arrays' contents included.
fn fields(path: &str, node: &Value, out: &mut Vec<(String, Value)>) {
    out.push((path.to_owned(), node.clone()));
    for (inner, child_path) in [
        (node.get("items"), format!("{path}[]")),
        (node.get("additionalProperties"), format!("{path}{{}}")),
    ] {
        if let Some(inner) = inner.filter(|i| i.get("properties").is_some()) {
            for (name, child) in inner["properties"].as_object().unwrap() {
                fields(&format!("{child_path}.{name}"), child, out);
            }
        }
    }
    if let Some(properties) = node.get("properties").and_then(Value::as_object) {
        for (name, child) in properties {
            fields(&format!("{path}.{name}"), child, out);
        }
    }
}

fn schema_fields() -> Vec<(String, Value)> {
    let schema = gatehouse_crds::openapi_schema(&ScanPolicy::crd()).unwrap();
    let mut out = Vec::new();
    for section in ["spec", "status"] {
        fields(section, &schema["properties"][section], &mut out);
    }
    out
}

/// The table row of `path` in the generated reference.
fn row(reference: &str, path: &str) -> Option<String> {
    let start = format!("| `{path}` |");
    reference
        .lines()
        .find(|line| line.starts_with(&start))
        .map(str::to_owned)
}

#[test]
fn every_field_has_a_row_with_its_default_limits_and_description() {
    let reference = policy_reference();
    let fields = schema_fields();
    assert!(fields.len() > 40, "the walk found {} fields", fields.len());
    for (path, node) in fields {
        let row = row(&reference, &path).unwrap_or_else(|| panic!("no row for {path}"));
        if let Some(default) = node.get("default") {
            assert!(
                row.contains(&format!("`{default}`")),
                "{path}: default {default} missing from {row}"
            );
        }
        for value in node
            .get("enum")
            .or_else(|| node.get("items").and_then(|i| i.get("enum")))
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            let value = value.as_str().unwrap();
            assert!(row.contains(&format!("`{value}`")), "{path}: enum {value}");
        }
        if let Some(pattern) = node.get("pattern").and_then(Value::as_str) {
            assert!(row.contains(pattern), "{path}: pattern {pattern}");
        }
        for (key, shown) in [
            ("minItems", " items"),
            ("maxItems", " items"),
            ("minLength", "length "),
            ("maxLength", "length "),
            ("minimum", ""),
            ("maximum", ""),
        ] {
            if let Some(bound) = node.get(key).and_then(Value::as_f64) {
                // Bounds are stored as floats (1.0) and shown as integers.
                #[allow(clippy::cast_possible_truncation)]
                let bound = (bound as i64).to_string();
                assert!(
                    row.contains(&bound) && row.contains(shown),
                    "{path}: {key} {bound} missing from {row}"
                );
            }
        }
        let description = node["description"].as_str().unwrap_or_default();
        let first_words: Vec<&str> = description.split_whitespace().take(4).collect();
        assert!(
            row.contains(&first_words.join(" ")),
            "{path}: description missing from {row}"
        );
    }
}

#[test]
fn every_cel_rule_is_listed_with_its_message() {
    let reference = policy_reference();
    let rules_section = reference
        .split("## Validation rules (CEL)")
        .nth(1)
        .expect("a CEL section");
    let mut count = 0;
    for (path, node) in schema_fields() {
        for (rule_path, holder) in [(path.clone(), &node), (format!("{path}[]"), &node["items"])] {
            for validation in holder
                .get("x-kubernetes-validations")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
            {
                count += 1;
                let rule = validation["rule"].as_str().unwrap().replace('|', "\\|");
                let message = validation["message"].as_str().unwrap();
                assert!(
                    rules_section.lines().any(|line| line
                        .starts_with(&format!("| `{rule_path}` | `{rule}` | {message} |"))),
                    "{rule_path}: rule {rule} ({message}) not listed"
                );
            }
        }
    }
    assert!(count >= 7, "the walk found {count} rules");
}
