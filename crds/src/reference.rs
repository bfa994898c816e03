//! The ScanPolicy field reference (`docs/policy-reference.md`), generated from the CRD's
//! `openAPIV3Schema`: every field path with its type, default, limits (enum, pattern, lengths,
//! ranges, item counts), description, and the CEL rules with their messages. One source of
//! truth: the Rust types make the schema, the schema makes the CRD YAML and this page, and a
//! test fails when the committed page differs (`crds/tests/policy_reference.rs`).
//!
//! Pure text from data: no I/O here; `crdgen policy-reference` prints it.

use std::fmt::Write as _;

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::CustomResourceExt;
use serde_json::Value;

use crate::ScanPolicy;

/// The command that regenerates the committed page.
pub const REGENERATE: &str =
    "cargo run -p gatehouse-crds --bin crdgen -- policy-reference > docs/policy-reference.md";

/// One field of the schema, as a table row.
struct Field {
    path: String,
    kind: String,
    default: String,
    limits: Vec<String>,
    description: String,
}

/// One CEL rule (`x-kubernetes-validations`) and the field it is declared on.
struct Rule {
    path: String,
    expression: String,
    message: String,
}

/// The ScanPolicy field reference as Markdown, exactly as committed in
/// `docs/policy-reference.md`.
pub fn policy_reference() -> String {
    render(&ScanPolicy::crd())
}

fn render(crd: &CustomResourceDefinition) -> String {
    let schema = crate::openapi_schema(crd).unwrap_or(Value::Null);
    let mut out = header(crd);
    let mut rules = Vec::new();
    for (section, title) in [
        (
            "spec",
            "What the policy asks for. Fields not written take their default (applied by the API \
             server).",
        ),
        ("status", "Written by the operator only."),
    ] {
        let Some(node) = schema.get("properties").and_then(|p| p.get(section)) else {
            continue;
        };
        let mut fields = Vec::new();
        let required = is_required(&schema, section);
        walk(section, node, required, &mut fields, &mut rules);
        out.push('\n');
        let _ = writeln!(out, "## {section}");
        out.push('\n');
        out.push_str(title);
        out.push_str(
            "\n\n| field | type | default | limits | description |\n|---|---|---|---|---|\n",
        );
        for field in &fields {
            let _ = writeln!(
                out,
                "| `{}` | {} | {} | {} | {} |",
                field.path,
                field.kind,
                field.default,
                field.limits.join("; "),
                field.description
            );
        }
    }

    out.push('\n');
    out.push_str("## Validation rules (CEL)\n\n");
    out.push_str(
        "Checked by the API server on every create and update (`x-kubernetes-validations`), \
         after defaults are applied; a policy breaking one is refused with the message shown.\n\n",
    );
    out.push_str("| field | rule | message |\n|---|---|---|\n");
    for rule in &rules {
        let _ = writeln!(
            out,
            "| `{}` | `{}` | {} |",
            rule.path,
            cell(&rule.expression),
            cell(&rule.message)
        );
    }
    out.push('\n');
    out.push_str(
        "Beyond the schema and these rules, the operator checks what neither can express (and \
         `gatehouse-operator check-policy` does the same offline): the globs of `repositories`, \
         `baseBranches` and `paths` compile and a list is not made only of `!` exclusions, each \
         image is pinned by digest, resource quantities are ones a Job accepts, and the Black \
         Duck Secret's name is valid. A policy failing them gets `Ready=False` with reason \
         `Invalid` naming the field ([operator.md](operator.md)).\n",
    );
    out
}

/// What precedes the field tables: the title, where the page comes from, the resource's names.
fn header(crd: &CustomResourceDefinition) -> String {
    let version = crd.spec.versions.iter().find(|v| v.storage);
    let mut out = String::new();
    let names = &crd.spec.names;
    let _ = writeln!(out, "# {} field reference", names.kind);
    out.push('\n');
    let _ = writeln!(
        out,
        "<!-- Generated from the CRD schema by `{REGENERATE}`. Do not edit by hand: \
         crds/tests/policy_reference.rs fails when this file differs from the generator's output. -->"
    );
    out.push('\n');
    let _ = writeln!(
        out,
        "Every field of the `{}` custom resource, generated from the `openAPIV3Schema` of its \
         CustomResourceDefinition (`charts/gatehouse/crds/gatehouse.dev.yaml`, itself generated \
         from the Rust types in `crds/src/scanpolicy.rs`): the same text `kubectl explain {}` \
         shows. How the governing policy is chosen, with examples: [policy.md](policy.md). \
         `gatehouse-operator check-policy FILE` checks a policy against all of this before it \
         reaches a cluster ([operator.md](operator.md#offline-tools)).",
        names.kind,
        names.singular.as_deref().unwrap_or(&names.plural),
    );
    out.push('\n');
    out.push_str("| | |\n|---|---|\n");
    let _ = writeln!(
        out,
        "| API | `{}/{}`, kind `{}` |",
        crd.spec.group,
        version.map_or("", |v| v.name.as_str()),
        names.kind
    );
    let _ = writeln!(
        out,
        "| names | plural `{}`, short names {}, categories {} |",
        names.plural,
        code_list(names.short_names.as_deref().unwrap_or_default()),
        code_list(names.categories.as_deref().unwrap_or_default()),
    );
    let _ = writeln!(out, "| scope | {} |", crd.spec.scope);
    if let Some(columns) = version.and_then(|v| v.additional_printer_columns.as_ref()) {
        let shown: Vec<String> = columns
            .iter()
            .map(|c| format!("{} (`{}`)", c.name, cell(&c.json_path)))
            .collect();
        let _ = writeln!(out, "| `kubectl get` columns | {} |", shown.join(", "));
    }
    out
}

/// Records the field at `path` and everything below it, depth first.
fn walk(path: &str, node: &Value, required: bool, fields: &mut Vec<Field>, rules: &mut Vec<Rule>) {
    fields.push(Field {
        path: path.to_owned(),
        kind: kind(node),
        default: default(node, required),
        limits: limits(node),
        description: description(node),
    });
    collect_rules(path, node, rules);
    if let Some(properties) = node.get("properties").and_then(Value::as_object) {
        for (name, child) in properties {
            let child_required = is_required(node, name);
            walk(
                &format!("{path}.{name}"),
                child,
                child_required,
                fields,
                rules,
            );
        }
    }
    if let Some(items) = node.get("items") {
        collect_rules(&format!("{path}[]"), items, rules);
        if let Some(properties) = items.get("properties").and_then(Value::as_object) {
            for (name, child) in properties {
                let child_required = is_required(items, name);
                walk(
                    &format!("{path}[].{name}"),
                    child,
                    child_required,
                    fields,
                    rules,
                );
            }
        }
    }
}

fn collect_rules(path: &str, node: &Value, rules: &mut Vec<Rule>) {
    for validation in node
        .get("x-kubernetes-validations")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        rules.push(Rule {
            path: path.to_owned(),
            expression: text(validation.get("rule")),
            message: text(validation.get("message")),
        });
    }
}

fn text(value: Option<&Value>) -> String {
    value.and_then(Value::as_str).unwrap_or_default().to_owned()
}

fn is_required(parent: &Value, name: &str) -> bool {
    parent
        .get("required")
        .and_then(Value::as_array)
        .is_some_and(|required| required.iter().any(|r| r.as_str() == Some(name)))
}

/// `string`, `integer (int32)`, `array of string`, `map of int-or-string`, `object`, with
/// `, may be null` when the schema says `nullable`.
fn kind(node: &Value) -> String {
    let mut shown = scalar_kind(node);
    if let Some(items) = node.get("items") {
        shown = format!("array of {}", scalar_kind(items));
    } else if let Some(values) = node.get("additionalProperties").filter(|v| v.is_object()) {
        shown = format!("map of {}", scalar_kind(values));
    }
    if node.get("nullable").and_then(Value::as_bool) == Some(true) {
        shown.push_str(", may be null");
    }
    shown
}

fn scalar_kind(node: &Value) -> String {
    if node
        .get("x-kubernetes-int-or-string")
        .and_then(Value::as_bool)
        == Some(true)
    {
        return "int-or-string".to_owned();
    }
    let base = node.get("type").and_then(Value::as_str).unwrap_or("any");
    match node.get("format").and_then(Value::as_str) {
        Some(format) => format!("{base} ({format})"),
        None => base.to_owned(),
    }
}

fn default(node: &Value, required: bool) -> String {
    match node.get("default") {
        Some(value) => format!("`{}`", cell(&value.to_string())),
        None if required => "required".to_owned(),
        None => String::new(),
    }
}

/// Enum, pattern, lengths, ranges and item counts of a field; for an array of scalars, those of
/// its items too ("each: ..."). A field with CEL rules points to them.
fn limits(node: &Value) -> Vec<String> {
    let mut shown = own_limits(node);
    if let Some(items) = node.get("items").filter(|i| i.get("properties").is_none()) {
        let each = own_limits(items);
        if !each.is_empty() {
            shown.push(format!("each: {}", each.join(", ")));
        }
    }
    let has_rules = |n: &Value| n.get("x-kubernetes-validations").is_some();
    if has_rules(node) || node.get("items").is_some_and(has_rules) {
        shown.push("CEL rules below".to_owned());
    }
    shown
}

fn own_limits(node: &Value) -> Vec<String> {
    let mut shown = Vec::new();
    if let Some(values) = node.get("enum").and_then(Value::as_array) {
        let values: Vec<String> = values
            .iter()
            .map(|v| format!("`{}`", cell(v.as_str().map_or(&v.to_string(), |s| s))))
            .collect();
        shown.push(format!("one of {}", values.join(", ")));
    }
    if let Some(pattern) = node.get("pattern").and_then(Value::as_str) {
        shown.push(format!("pattern `{}`", cell(pattern)));
    }
    if let Some(range) = range(node, "minLength", "maxLength") {
        shown.push(format!("length {range}"));
    }
    if let Some(range) = range(node, "minimum", "maximum") {
        shown.push(range);
    }
    if let Some(range) = range(node, "minItems", "maxItems") {
        shown.push(format!("{range} items"));
    }
    shown
}

fn range(node: &Value, min: &str, max: &str) -> Option<String> {
    let number = |key: &str| node.get(key).and_then(Value::as_f64).map(show_number);
    match (number(min), number(max)) {
        (Some(low), Some(high)) => Some(format!("{low}–{high}")),
        (Some(low), None) => Some(format!("≥ {low}")),
        (None, Some(high)) => Some(format!("≤ {high}")),
        (None, None) => None,
    }
}

/// `1.0` as `1` (the schema stores bounds as floats), other numbers as they are.
fn show_number(number: f64) -> String {
    if number.fract() == 0.0 && number.abs() < 1e15 {
        format!("{number:.0}")
    } else {
        number.to_string()
    }
}

/// The description's first paragraph (Kubernetes' own types carry pages of detail after it), on
/// one line, safe in a table cell.
fn description(node: &Value) -> String {
    let text = node
        .get("description")
        .and_then(Value::as_str)
        .unwrap_or_default();
    let first = text.split("\n\n").next().unwrap_or_default();
    cell(&first.split_whitespace().collect::<Vec<_>>().join(" "))
}

fn code_list(items: &[String]) -> String {
    items
        .iter()
        .map(|i| format!("`{i}`"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Text safe inside a Markdown table cell: `|` escaped (also inside code spans, as GitHub
/// reads tables), line breaks as spaces.
fn cell(text: &str) -> String {
    text.replace('|', "\\|").replace('\n', " ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounds_stored_as_floats_are_shown_as_integers() {
        assert_eq!(show_number(1.0), "1");
        assert_eq!(show_number(5000.0), "5000");
        assert_eq!(show_number(0.5), "0.5");
    }

    #[test]
    fn a_pipe_in_a_cel_rule_does_not_split_the_table_row() {
        assert_eq!(
            cell("!has(self.a) || self.a > 0"),
            "!has(self.a) \\|\\| self.a > 0"
        );
    }

    #[test]
    fn a_field_of_kubernetes_keeps_its_first_paragraph_only() {
        let node = serde_json::json!({"description": "First line\nwrapped.\n\nPages more."});
        assert_eq!(description(&node), "First line wrapped.");
    }
}
