//! `Table` responses (`Accept: application/json;as=Table;g=meta.k8s.io;v=v1`), which is what
//! `kubectl get` asks for: a Name column, the CRD's printer columns (or Age for built-in types),
//! with simple JSONPath evaluation and dates shown as ages.

use serde_json::{Value, json};

use super::resource::{PrinterColumn, ResourceType};

pub(crate) fn wants_table(accept: &str) -> bool {
    accept
        .split(',')
        .next()
        .is_some_and(|first| first.contains("as=Table"))
}

pub(crate) fn list_table(rt: &ResourceType, list: &Value) -> Value {
    let mut columns = vec![PrinterColumn {
        name: "Name".into(),
        type_: "string".into(),
        json_path: ".metadata.name".into(),
        priority: 0,
    }];
    if rt.printer_columns.is_empty() {
        columns.push(PrinterColumn {
            name: "Age".into(),
            type_: "date".into(),
            json_path: ".metadata.creationTimestamp".into(),
            priority: 0,
        });
    } else {
        columns.extend(rt.printer_columns.iter().cloned());
    }
    let definitions: Vec<Value> = columns
        .iter()
        .map(|c| {
            json!({
                "name": c.name,
                "type": if c.type_ == "date" { "string" } else { c.type_.as_str() },
                "format": if c.name == "Name" { "name" } else { "" },
                "description": "",
                "priority": c.priority,
            })
        })
        .collect();
    let rows: Vec<Value> = list["items"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default()
        .iter()
        .map(|object| {
            let cells: Vec<Value> = columns.iter().map(|c| cell(c, object)).collect();
            json!({
                "cells": cells,
                "object": {
                    "kind": "PartialObjectMetadata",
                    "apiVersion": "meta.k8s.io/v1",
                    "metadata": object["metadata"].clone(),
                },
            })
        })
        .collect();
    json!({
        "kind": "Table",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": {"resourceVersion": list["metadata"]["resourceVersion"].clone()},
        "columnDefinitions": definitions,
        "rows": rows,
    })
}

fn cell(column: &PrinterColumn, object: &Value) -> Value {
    let value = json_path(object, &column.json_path);
    if column.type_ == "date" {
        return value.as_str().map_or(Value::Null, |ts| json!(age(ts)));
    }
    value
}

/// Evaluates the JSONPath subset printer columns use: `.a.b`, `.a[0]`, `.a[?(@.k=="v")].b`.
pub(crate) fn json_path(object: &Value, path: &str) -> Value {
    let mut current = vec![object.clone()];
    for segment in split_path(path) {
        let (name, filter) = match segment.find('[') {
            Some(at) => (&segment[..at], Some(&segment[at..])),
            None => (segment.as_str(), None),
        };
        if !name.is_empty() {
            current = current
                .iter()
                .filter_map(|v| v.get(name).cloned())
                .collect();
        }
        if let Some(filter) = filter {
            let inner = filter.trim_start_matches('[').trim_end_matches(']');
            if let Ok(index) = inner.parse::<usize>() {
                current = current
                    .iter()
                    .filter_map(|v| v.get(index).cloned())
                    .collect();
            } else if let Some(cond) = inner.strip_prefix("?(@.").and_then(|c| c.strip_suffix(')'))
            {
                let (key, want) = cond.split_once("==").unwrap_or((cond, ""));
                let want = want.trim().trim_matches('"').trim_matches('\'');
                current = current
                    .iter()
                    .filter_map(Value::as_array)
                    .flatten()
                    .filter(|item| item.get(key.trim()).and_then(Value::as_str) == Some(want))
                    .cloned()
                    .collect();
            }
        }
    }
    current.into_iter().next().unwrap_or(Value::Null)
}

fn split_path(path: &str) -> Vec<String> {
    let mut segments = Vec::new();
    let mut buf = String::new();
    let mut depth = 0;
    for c in path.chars() {
        match c {
            '[' => {
                depth += 1;
                buf.push(c);
            }
            ']' => {
                depth -= 1;
                buf.push(c);
            }
            '.' if depth == 0 => {
                if !buf.is_empty() {
                    segments.push(std::mem::take(&mut buf));
                }
            }
            _ => buf.push(c),
        }
    }
    if !buf.is_empty() {
        segments.push(buf);
    }
    segments
}

fn age(timestamp: &str) -> String {
    let Ok(then) = timestamp.parse::<k8s_openapi::jiff::Timestamp>() else {
        return "<invalid>".to_owned();
    };
    let seconds = k8s_openapi::jiff::Timestamp::now().as_second() - then.as_second();
    match seconds {
        s if s < 120 => format!("{}s", s.max(0)),
        s if s < 3 * 3600 => format!("{}m", s / 60),
        s if s < 48 * 3600 => format!("{}h", s / 3600),
        s => format!("{}d", s / 86400),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_path_follows_fields_indexes_and_filters() {
        let object = json!({
            "spec": {"repository": {"name": "widgets"}},
            "status": {"conditions": [
                {"type": "Admitted", "status": "True"},
                {"type": "Ready", "status": "False", "reason": "Invalid"},
            ]},
        });
        assert_eq!(
            json_path(&object, ".spec.repository.name"),
            json!("widgets")
        );
        assert_eq!(
            json_path(&object, ".status.conditions[1].type"),
            json!("Ready")
        );
        assert_eq!(
            json_path(&object, ".status.conditions[?(@.type==\"Ready\")].reason"),
            json!("Invalid")
        );
        assert_eq!(json_path(&object, ".status.missing"), Value::Null);
    }
}
