//! Object metadata validation, as apimachinery's `ValidateObjectMeta` does it for every write of
//! every type: names, `generateName`, labels (qualified-name keys, values of at most 63
//! characters), annotations (qualified-name keys, 256 KiB in all), owner references (all four
//! identifying fields, at most one controller) and finalizer names. Also the name rules shared
//! with types that validate more (DNS subdomain, DNS label).

use serde_json::{Value, json};

use super::error::{FieldError, index};

/// Longest `generateName` prefix kept: 63 minus the five random characters.
pub(crate) const MAX_GENERATE_NAME_PREFIX: usize = 58;
/// Limit on all annotation keys and values together.
pub(crate) const TOTAL_ANNOTATION_SIZE: usize = 256 * 1024;

const DNS1123_SUBDOMAIN_MSG: &str = "a lowercase RFC 1123 subdomain must consist of lower case \
     alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character \
     (e.g. 'example.com', regex used for validation is \
     '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')";
const DNS1123_LABEL_MSG: &str = "a lowercase RFC 1123 label must consist of lower case \
     alphanumeric characters or '-', and must start and end with an alphanumeric character \
     (e.g. 'my-name',  or '123-abc', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?')";
const QUALIFIED_NAME_MSG: &str = "name part must consist of alphanumeric characters, '-', '_' or \
     '.', and must start and end with an alphanumeric character (e.g. 'MyName',  or 'my.name',  or \
     '123-abc', regex used for validation is '([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]')";
const LABEL_VALUE_MSG: &str = "a valid label must be an empty string or consist of alphanumeric \
     characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. \
     'MyValue',  or 'my_value',  or '12345', regex used for validation is \
     '(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?')";

fn is_dns_label_chars(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b.iter()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-')
        && b[0] != b'-'
        && b[b.len() - 1] != b'-'
}

/// Problems with a DNS-1123 subdomain (names of most objects).
pub(crate) fn dns_subdomain_errors(name: &str) -> Vec<String> {
    let mut out = Vec::new();
    if name.len() > 253 {
        out.push("must be no more than 253 characters".to_owned());
    }
    if !name.split('.').all(is_dns_label_chars) {
        out.push(DNS1123_SUBDOMAIN_MSG.to_owned());
    }
    out
}

/// Problems with a DNS-1123 label (namespaces, container and volume names).
pub(crate) fn dns_label_errors(name: &str) -> Vec<String> {
    let mut out = Vec::new();
    if name.len() > 63 {
        out.push("must be no more than 63 characters".to_owned());
    }
    if !is_dns_label_chars(name) {
        out.push(DNS1123_LABEL_MSG.to_owned());
    }
    out
}

fn is_name_part(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b.iter()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_' | b'.'))
        && b[0].is_ascii_alphanumeric()
        && b[b.len() - 1].is_ascii_alphanumeric()
}

/// Problems with a qualified name (`[prefix/]name`): label and annotation keys, finalizers,
/// Event reporting controllers.
pub(crate) fn qualified_name_errors(value: &str) -> Vec<String> {
    let mut out = Vec::new();
    let parts: Vec<&str> = value.split('/').collect();
    let name = match parts.as_slice() {
        [name] => *name,
        [prefix, name] => {
            if prefix.is_empty() {
                out.push("prefix part must be non-empty".to_owned());
            } else {
                for msg in dns_subdomain_errors(prefix) {
                    out.push(format!("prefix part {msg}"));
                }
            }
            *name
        }
        _ => {
            out.push(format!(
                "a qualified name {QUALIFIED_NAME_MSG} with an optional DNS subdomain prefix and '/' (e.g. 'example.com/MyName')"
            ));
            return out;
        }
    };
    if name.is_empty() {
        out.push("name part must be non-empty".to_owned());
    } else if name.len() > 63 {
        out.push("name part must be no more than 63 characters".to_owned());
    }
    if !name.is_empty() && !is_name_part(name) {
        out.push(QUALIFIED_NAME_MSG.to_owned());
    }
    out
}

/// Problems with a label value.
pub(crate) fn label_value_errors(value: &str) -> Vec<String> {
    let mut out = Vec::new();
    if value.len() > 63 {
        out.push("must be no more than 63 characters".to_owned());
    }
    if !value.is_empty() && !is_name_part(value) {
        out.push(LABEL_VALUE_MSG.to_owned());
    }
    out
}

/// Validates a label map at `path` (`metadata.labels`, `spec.template.metadata.labels`, ...).
pub(crate) fn validate_labels(labels: Option<&Value>, path: &str, out: &mut Vec<FieldError>) {
    let Some(map) = labels.and_then(Value::as_object) else {
        return;
    };
    for (k, v) in map {
        for msg in qualified_name_errors(k) {
            out.push(FieldError::invalid(path, json!(k), msg));
        }
        let text = v.as_str().unwrap_or_default();
        for msg in label_value_errors(text) {
            out.push(FieldError::invalid(path, json!(text), msg));
        }
    }
}

fn validate_annotations(annotations: Option<&Value>, path: &str, out: &mut Vec<FieldError>) {
    let Some(map) = annotations.and_then(Value::as_object) else {
        return;
    };
    let mut total = 0;
    for (k, v) in map {
        for msg in qualified_name_errors(&k.to_lowercase()) {
            out.push(FieldError::invalid(path, json!(k), msg));
        }
        total += k.len() + v.as_str().map_or(0, str::len);
    }
    if total > TOTAL_ANNOTATION_SIZE {
        out.push(FieldError::too_long(path, TOTAL_ANNOTATION_SIZE));
    }
}

fn validate_owner_references(refs: Option<&Value>, path: &str, out: &mut Vec<FieldError>) {
    let Some(list) = refs.and_then(Value::as_array) else {
        return;
    };
    let mut controllers = Vec::new();
    for reference in list {
        let text = |k: &str| reference.get(k).and_then(Value::as_str).unwrap_or_default();
        let api_version = text("apiVersion");
        if api_version.is_empty() {
            out.push(FieldError::invalid(
                format!("{path}.apiVersion"),
                json!(api_version),
                "version must not be empty",
            ));
        } else if api_version.split('/').count() > 2 {
            out.push(FieldError::invalid(
                format!("{path}.apiVersion"),
                json!(api_version),
                "unexpected GroupVersion string",
            ));
        }
        for (field, what) in [("kind", "kind"), ("name", "name"), ("uid", "uid")] {
            if text(field).is_empty() {
                out.push(FieldError::invalid(
                    format!("{path}.{field}"),
                    json!(""),
                    format!("{what} must not be empty"),
                ));
            }
        }
        if text("kind") == "List" {
            out.push(FieldError::invalid(
                format!("{path}.kind"),
                json!("List"),
                "kind must not be List",
            ));
        }
        if reference.get("controller").and_then(Value::as_bool) == Some(true) {
            controllers.push(format!("{}/{}", text("kind"), text("name")));
        }
    }
    if controllers.len() > 1 {
        out.push(FieldError::invalid(
            path,
            Value::Array(list.clone()),
            format!(
                "Only one reference can have Controller set to true. Found \"true\" in references for {}",
                controllers.join(" and ")
            ),
        ));
    }
}

fn validate_finalizers(finalizers: Option<&Value>, path: &str, out: &mut Vec<FieldError>) {
    let Some(list) = finalizers.and_then(Value::as_array) else {
        return;
    };
    let names: Vec<&str> = list.iter().filter_map(Value::as_str).collect();
    for (i, name) in names.iter().enumerate() {
        for msg in qualified_name_errors(name) {
            out.push(FieldError::invalid(index(path, i), json!(name), msg));
        }
    }
    if names.contains(&"orphan") && names.contains(&"foregroundDeletion") {
        out.push(FieldError::invalid(
            path,
            json!("foregroundDeletion"),
            "finalizer 'foregroundDeletion' and 'orphan' cannot be both set",
        ));
    }
}

/// Finalizer names without a domain that are not the API's own draw a warning, as on a real
/// server (`prefer a domain-qualified finalizer name`).
pub(crate) fn finalizer_warnings(object: &Value) -> Vec<String> {
    object
        .pointer("/metadata/finalizers")
        .and_then(Value::as_array)
        .map(|list| {
            list.iter()
                .filter_map(Value::as_str)
                .filter(|f| {
                    !f.contains('/')
                        && !matches!(*f, "orphan" | "foregroundDeletion" | "kubernetes")
                })
                .map(|f| {
                    format!(
                        "metadata.finalizers: {f:?}: prefer a domain-qualified finalizer name including a path (/) to avoid accidental conflicts with other finalizer writers"
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

/// Everything `ValidateObjectMeta` checks except the name (which each type checks its way).
pub(crate) fn validate_object_meta(object: &Value, out: &mut Vec<FieldError>) {
    let meta = object.get("metadata");
    let get = |k: &str| meta.and_then(|m| m.get(k));
    if let Some(prefix) = get("generateName").and_then(Value::as_str)
        && !prefix.is_empty()
        && get("name")
            .and_then(Value::as_str)
            .is_none_or(str::is_empty)
    {
        // The prefix is validated as a name would be, allowing the trailing '-' it usually has.
        let trimmed = prefix.trim_end_matches('-');
        if !trimmed.is_empty() {
            for msg in dns_subdomain_errors(trimmed) {
                out.push(FieldError::invalid(
                    "metadata.generateName",
                    json!(prefix),
                    msg,
                ));
            }
        }
    }
    validate_labels(get("labels"), "metadata.labels", out);
    validate_annotations(get("annotations"), "metadata.annotations", out);
    validate_owner_references(get("ownerReferences"), "metadata.ownerReferences", out);
    validate_finalizers(get("finalizers"), "metadata.finalizers", out);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn qualified_names_need_a_valid_name_part_and_optional_dns_prefix() {
        for ok in [
            "app",
            "app.kubernetes.io/name",
            "a_b-c.d",
            "gatehouse.dev/cleanup",
            "A1",
        ] {
            assert!(qualified_name_errors(ok).is_empty(), "{ok}");
        }
        for bad in [
            "",
            "-a",
            "a-",
            "a b",
            "/x",
            "Bad_Prefix/x",
            "a/b/c",
            &"x".repeat(64),
        ] {
            assert!(!qualified_name_errors(bad).is_empty(), "{bad}");
        }
    }

    #[test]
    fn label_values_are_short_and_of_the_allowed_set() {
        assert!(label_value_errors("").is_empty());
        assert!(label_value_errors("v1.2_3-a").is_empty());
        assert!(!label_value_errors(&"v".repeat(64)).is_empty());
        assert!(!label_value_errors("has space").is_empty());
        assert!(!label_value_errors("-lead").is_empty());
    }
}
