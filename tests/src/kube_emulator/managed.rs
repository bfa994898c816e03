//! Field ownership and server-side apply, as the apiserver's field manager does them with
//! structured-merge-diff:
//!
//! - every write records in `metadata.managedFields` which fields its manager set (`Update` for
//!   POST/PUT/PATCH, `Apply` for apply patches), per manager, operation and subresource; a write
//!   that changes a field takes it away from every other manager;
//! - an apply merges the applied configuration into the live object (lists by their keys or as
//!   sets, atomic lists and objects whole), fails with 409 when it would change a field another
//!   manager owns unless forced (which takes the field over), and removes the fields its manager
//!   applied before and no longer sends, unless another manager owns them too.
//!
//! Paths never owned: `apiVersion`, `kind` and the metadata the server sets; and the fields a
//! subresource resets (`.status` through the main resource when the type has a status
//! subresource, everything but `.status` through `/status`).

use std::fmt::Write as _;

use serde_json::{Map, Value, json};

use super::error::ApiError;
use super::fieldset::{
    Comparison, Element, FieldSet, compare, display_path, field_set, item_elements, remove_items,
};
use super::schema::{ListType, Node, Shape};

/// `Apply` or `Update`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Operation {
    Apply,
    Update,
}

impl Operation {
    fn as_str(self) -> &'static str {
        match self {
            Operation::Apply => "Apply",
            Operation::Update => "Update",
        }
    }
}

/// Who writes: manager name, operation and subresource identify one managedFields entry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Writer {
    pub manager: String,
    pub operation: Operation,
    /// `Some("status")` for writes through the status subresource.
    pub subresource: Option<String>,
}

/// One entry of `metadata.managedFields`.
#[derive(Clone, Debug)]
pub(crate) struct Entry {
    pub writer: Writer,
    pub api_version: String,
    pub time: Option<String>,
    pub fields: FieldSet,
}

/// All entries of an object.
#[derive(Clone, Debug, Default)]
pub(crate) struct Managed {
    pub entries: Vec<Entry>,
}

impl Managed {
    /// Reads `metadata.managedFields`; entries that do not parse are dropped, as the apiserver
    /// resets managed fields it cannot decode.
    pub(crate) fn read(object: &Value) -> Managed {
        let entries = object
            .pointer("/metadata/managedFields")
            .and_then(Value::as_array)
            .map(|list| list.iter().filter_map(parse_entry).collect())
            .unwrap_or_default();
        Managed { entries }
    }

    /// Writes `metadata.managedFields` (removed when empty), sorted as the apiserver sorts them.
    pub(crate) fn write(&self, object: &mut Value) {
        let mut entries: Vec<&Entry> = self
            .entries
            .iter()
            .filter(|e| !e.fields.is_empty())
            .collect();
        // The apiserver's order: operation (Apply before Update), time, manager, version,
        // subresource.
        entries.sort_by_key(|e| {
            (
                e.writer.operation.as_str(),
                e.time.clone().unwrap_or_default(),
                e.writer.manager.clone(),
                e.api_version.clone(),
                e.writer.subresource.clone().unwrap_or_default(),
            )
        });
        let list: Vec<Value> = entries
            .iter()
            .map(|e| {
                let mut v = json!({
                    "operation": e.writer.operation.as_str(),
                    "apiVersion": e.api_version,
                    "fieldsType": "FieldsV1",
                    "fieldsV1": e.fields.to_fields_v1(),
                });
                // An empty manager name is not stored (omitempty), as on a real server.
                if !e.writer.manager.is_empty() {
                    v["manager"] = json!(e.writer.manager);
                }
                if let Some(time) = &e.time {
                    v["time"] = json!(time);
                }
                if let Some(sub) = &e.writer.subresource {
                    v["subresource"] = json!(sub);
                }
                v
            })
            .collect();
        if let Some(meta) = object.get_mut("metadata").and_then(Value::as_object_mut) {
            if list.is_empty() {
                meta.remove("managedFields");
            } else {
                meta.insert("managedFields".into(), Value::Array(list));
            }
        }
    }

    /// The managed fields a write asks for: `Some(empty)` to reset them (`[]` or `[{}]`),
    /// `Some(entries)` when it carries valid entries of its own, `None` to keep the live ones.
    pub(crate) fn requested(object: &Value) -> Option<Managed> {
        let list = object.pointer("/metadata/managedFields")?.as_array()?;
        let reset =
            list.is_empty() || (list.len() == 1 && list[0].as_object().is_some_and(Map::is_empty));
        if reset {
            return Some(Managed::default());
        }
        let entries: Vec<Entry> = list.iter().filter_map(parse_entry).collect();
        (entries.len() == list.len()).then_some(Managed { entries })
    }

    fn position(&self, writer: &Writer) -> Option<usize> {
        self.entries.iter().position(|e| e.writer == *writer)
    }

    fn set_of(&self, writer: &Writer) -> FieldSet {
        self.position(writer)
            .map(|i| self.entries[i].fields.clone())
            .unwrap_or_default()
    }

    fn put(&mut self, writer: &Writer, api_version: &str, fields: FieldSet, time: Option<&str>) {
        match self.position(writer) {
            Some(i) => {
                let entry = &mut self.entries[i];
                entry.fields = fields;
                if let Some(time) = time {
                    entry.time = Some(time.to_owned());
                }
            }
            None => self.entries.push(Entry {
                writer: writer.clone(),
                api_version: api_version.to_owned(),
                time: time.map(str::to_owned),
                fields,
            }),
        }
    }

    fn prune_empty(&mut self) {
        self.entries.retain(|e| !e.fields.is_empty());
    }
}

fn parse_entry(value: &Value) -> Option<Entry> {
    let operation = match value.get("operation")?.as_str()? {
        "Apply" => Operation::Apply,
        "Update" => Operation::Update,
        _ => return None,
    };
    Some(Entry {
        writer: Writer {
            manager: value
                .get("manager")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_owned(),
            operation,
            subresource: value
                .get("subresource")
                .and_then(Value::as_str)
                .filter(|s| !s.is_empty())
                .map(str::to_owned),
        },
        api_version: value
            .get("apiVersion")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned(),
        time: value.get("time").and_then(Value::as_str).map(str::to_owned),
        fields: FieldSet::from_fields_v1(value.get("fieldsV1")?)?,
    })
}

/// Which part of the object a write may own: the main resource or its status.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Scope {
    /// Writing through `/status`.
    pub status: bool,
    /// The type has a status subresource (so the main resource never owns `.status`).
    pub has_status_subresource: bool,
    /// A write through `/status` may change metadata too (built-in types, whose status
    /// strategies reset only `.spec` and [`Scope::status_resets`]; custom resources reset
    /// everything but `.status`).
    pub metadata_via_status: bool,
    /// What a built-in type's status strategy resets (`/spec`, `/metadata/ownerReferences`).
    pub status_resets: &'static [&'static str],
}

/// Removes what no manager ever owns, and what the scope resets.
pub(crate) fn owned_part(set: &FieldSet, scope: Scope) -> FieldSet {
    let f = |name: &str| Element::Field(name.to_owned());
    if scope.status && !scope.metadata_via_status {
        return set.only_subtree(&[f("status")]);
    }
    let mut out = set
        .without_subtree(&[f("apiVersion")])
        .without_subtree(&[f("kind")]);
    for system in [
        "name",
        "namespace",
        "uid",
        "resourceVersion",
        "generation",
        "creationTimestamp",
        "deletionTimestamp",
        "deletionGracePeriodSeconds",
        "selfLink",
        "managedFields",
    ] {
        out = out.without_subtree(&[f("metadata"), f(system)]);
    }
    out.unmark(&[f("metadata")]);
    if scope.status {
        for pointer in scope.status_resets {
            let path: Vec<Element> = pointer.trim_start_matches('/').split('/').map(f).collect();
            out = out.without_subtree(&path);
        }
        return out;
    }
    if scope.has_status_subresource {
        out = out.without_subtree(&[f("status")]);
    }
    out
}

/// One write's identity: who writes, through which part of the object, at which version and
/// time.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Write<'a> {
    pub writer: &'a Writer,
    pub scope: Scope,
    pub api_version: &'a str,
    pub now: &'a str,
}

/// Records an ordinary write (POST, PUT, JSON/merge/strategic patch) by `writer`: it owns what
/// it added or changed, and every other manager loses what it changed or removed.
pub(crate) fn update(
    managed: &mut Managed,
    live: &Value,
    new: &Value,
    node: Node<'_>,
    write: Write<'_>,
) {
    let Write {
        writer,
        scope,
        api_version,
        now,
    } = write;
    let diff = scoped(&compare(live, new, Some(node)), scope);
    let changed = diff.changed();
    for entry in managed.entries.iter_mut().filter(|e| e.writer != *writer) {
        entry.fields = entry.fields.difference(&changed).difference(&diff.removed);
    }
    if !changed.is_empty() || !diff.removed.is_empty() {
        let own = managed
            .set_of(writer)
            .difference(&diff.removed)
            .union(&changed);
        let time = (!changed.is_empty()).then_some(now);
        managed.put(writer, api_version, own, time);
    }
    managed.prune_empty();
}

fn scoped(diff: &Comparison, scope: Scope) -> Comparison {
    Comparison {
        added: owned_part(&diff.added, scope),
        modified: owned_part(&diff.modified, scope),
        removed: owned_part(&diff.removed, scope),
    }
}

/// An apply's outcome: the new object (before defaults) and the new ownership.
pub(crate) struct Applied {
    pub object: Value,
    pub managed: Managed,
}

/// One field another manager owns that an apply would change.
struct ConflictEntry {
    writer: Writer,
    api_version: String,
    path: Vec<Element>,
}

/// Server-side apply of `config` onto `live` by `write.writer` (operation Apply).
pub(crate) fn apply(
    live: &Value,
    config: &Value,
    managed: &Managed,
    node: Node<'_>,
    write: Write<'_>,
    force: bool,
) -> Result<Applied, ApiError> {
    let Write {
        writer,
        scope,
        api_version,
        now,
    } = write;
    let mut managed = managed.clone();
    if managed.entries.is_empty() && !is_empty_object(live) {
        // An object written before any manager was recorded: its fields belong to a
        // "before-first-apply" manager, so the first apply conflicts like any later one.
        let fields = owned_part(&field_set(live, Some(node)), scope);
        managed.put(
            &Writer {
                manager: "before-first-apply".into(),
                operation: Operation::Update,
                subresource: writer.subresource.clone(),
            },
            api_version,
            fields,
            Some(now),
        );
    }
    check_keys(config, node, "")?;
    let merged = merge(live, config, Some(node));
    let last = managed.set_of(writer);
    let applied_set = owned_part(&field_set(config, Some(node)), scope);
    managed.put(writer, api_version, applied_set, None);
    let merged = prune(merged, &managed, &last, node);

    let diff = scoped(&compare(live, &merged, Some(node)), scope);
    let changed = diff.changed();
    let mut conflicts = Vec::new();
    for entry in managed.entries.iter().filter(|e| e.writer != *writer) {
        for path in entry.fields.intersection(&changed).paths() {
            conflicts.push(ConflictEntry {
                writer: entry.writer.clone(),
                api_version: entry.api_version.clone(),
                path,
            });
        }
    }
    if !conflicts.is_empty() && !force {
        return Err(conflict_error(&conflicts));
    }
    for entry in managed.entries.iter_mut().filter(|e| e.writer != *writer) {
        entry.fields = entry.fields.difference(&changed).difference(&diff.removed);
    }
    // The applier's time moves only when the object changed (an apply that changes nothing
    // records no time, as the real field manager does).
    if merged != *live
        && let Some(i) = managed.position(writer)
    {
        managed.entries[i].time = Some(now.to_owned());
    }
    managed.prune_empty();
    Ok(Applied {
        object: merged,
        managed,
    })
}

fn is_empty_object(value: &Value) -> bool {
    value.as_object().is_none_or(|m| {
        m.keys()
            .all(|k| k == "apiVersion" || k == "kind" || k == "metadata")
    }) && value
        .pointer("/metadata")
        .and_then(Value::as_object)
        .is_none_or(|m| m.keys().all(|k| k == "name" || k == "namespace"))
}

/// Items of keyed lists in an applied configuration must carry their keys, once each.
fn check_keys(config: &Value, node: Node<'_>, path: &str) -> Result<(), ApiError> {
    match (node.shape(), config) {
        (Shape::Struct, Value::Object(map)) => {
            for (k, v) in map {
                if let Some(field) = node.field(k) {
                    check_keys(v, field, &format!("{path}.{k}"))?;
                }
            }
        }
        (Shape::Map, Value::Object(map)) => {
            if let Some(values) = node.values() {
                for (k, v) in map {
                    check_keys(v, values, &format!("{path}.{k}"))?;
                }
            }
        }
        (Shape::List, Value::Array(items)) => {
            let list_type = node.list_type();
            let item_node = node.items();
            if let ListType::Map(keys) = &list_type {
                for (i, item) in items.iter().enumerate() {
                    if let Some(missing) = keys.iter().find(|k| {
                        item.get(k.as_str()).is_none_or(Value::is_null)
                            && item_node.and_then(|n| n.default_of(k)).is_none()
                    }) {
                        return Err(ApiError::internal(format!(
                            "failed to create typed patch object: {path}: element {i}: \
                             associative list with keys has an element that omits key field \"{missing}\""
                        )));
                    }
                }
            }
            if list_type != ListType::Atomic {
                let elements = item_elements(items, &list_type, item_node);
                for (i, element) in elements.iter().enumerate() {
                    if elements[..i].contains(element) {
                        return Err(ApiError::internal(format!(
                            "failed to create typed patch object: {path}: duplicate entries for key {}",
                            display_path(std::slice::from_ref(element))
                        )));
                    }
                }
            }
            if let Some(item_node) = item_node {
                for (i, item) in items.iter().enumerate() {
                    check_keys(item, item_node, &format!("{path}[{i}]"))?;
                }
            }
        }
        _ => {}
    }
    Ok(())
}

/// Removes what `writer` applied last time and no longer applies, unless someone owns it.
fn prune(merged: Value, managed: &Managed, last: &FieldSet, node: Node<'_>) -> Value {
    if last.is_empty() {
        return merged;
    }
    let last_named = last.with_named_fields(Some(node));
    let mut pruned = merged.clone();
    remove_items(&mut pruned, &last_named, Some(node));
    let owned = managed
        .entries
        .iter()
        .fold(FieldSet::default(), |acc, e| acc.union(&e.fields))
        .with_named_fields(Some(node));
    let merged_set = field_set(&merged, Some(node)).with_named_fields(Some(node));
    let pruned_set = field_set(&pruned, Some(node)).with_named_fields(Some(node));
    let remove = merged_set
        .difference(&pruned_set.union(&owned))
        .intersection(&last_named);
    let mut out = merged;
    remove_items(&mut out, &remove, Some(node));
    out
}

fn conflict_error(conflicts: &[ConflictEntry]) -> ApiError {
    let who = |c: &ConflictEntry| {
        let mut text = format!("{:?}", c.writer.manager);
        if let Some(sub) = &c.writer.subresource {
            let _ = write!(text, " with subresource {sub:?}");
        }
        // The manager identifier has no time, so the real message never shows one.
        if c.writer.operation == Operation::Update {
            let _ = write!(text, " using {}", c.api_version);
        }
        text
    };
    let causes: Vec<Value> = conflicts
        .iter()
        .map(|c| {
            json!({"reason": "FieldManagerConflict", "message": format!("conflict with {}", who(c)),
                   "field": display_path(&c.path)})
        })
        .collect();
    let message = if let [one] = conflicts {
        format!(
            "Apply failed with 1 conflict: conflict with {}: {}",
            who(one),
            display_path(&one.path)
        )
    } else {
        let mut by_manager: Vec<(String, Vec<String>)> = Vec::new();
        for c in conflicts {
            let name = who(c);
            let path = display_path(&c.path);
            match by_manager.iter_mut().find(|(m, _)| *m == name) {
                Some((_, paths)) => paths.push(path),
                None => by_manager.push((name, vec![path])),
            }
        }
        by_manager.sort();
        let lines: Vec<String> = by_manager
            .iter()
            .flat_map(|(m, paths)| {
                std::iter::once(format!("conflicts with {m}:"))
                    .chain(paths.iter().map(|p| format!("- {p}")))
            })
            .collect();
        format!(
            "Apply failed with {} conflicts: {}",
            conflicts.len(),
            lines.join("\n")
        )
    };
    ApiError::new(409, "Conflict", message).with_causes(causes)
}

/// Merges an applied configuration into the live object, by the schema's semantics.
pub(crate) fn merge(live: &Value, config: &Value, node: Option<Node<'_>>) -> Value {
    let shape = node.map_or(Shape::Any, |n| n.shape());
    match (live, config) {
        (Value::Object(l), Value::Object(c))
            if !node.is_some_and(|n| n.atomic_object()) && shape != Shape::Scalar =>
        {
            let mut out = l.clone();
            for (k, cv) in c {
                let child = node.and_then(|n| match shape {
                    Shape::Struct => n.field(k),
                    Shape::Map => n.values(),
                    _ => None,
                });
                let merged = match l.get(k) {
                    Some(lv) => merge(lv, cv, child),
                    None => cv.clone(),
                };
                out.insert(k.clone(), merged);
            }
            Value::Object(out)
        }
        (Value::Array(l), Value::Array(c)) if shape == Shape::List => {
            let Some(n) = node else {
                return config.clone();
            };
            let list_type = n.list_type();
            if list_type == ListType::Atomic {
                return config.clone();
            }
            Value::Array(merge_lists(l, c, &list_type, n.items()))
        }
        _ => config.clone(),
    }
}

/// structured-merge-diff's list merge: items only in the live list keep their places, shared
/// items follow the configuration's order and are merged, new items go where the configuration
/// puts them.
fn merge_lists(
    live: &[Value],
    config: &[Value],
    list_type: &ListType,
    item_node: Option<Node<'_>>,
) -> Vec<Value> {
    let lhs = item_elements(live, list_type, item_node);
    let rhs = item_elements(config, list_type, item_node);
    let find = |elements: &[Element], e: &Element| elements.iter().position(|x| x == e);
    let mut shared: std::collections::VecDeque<&Element> =
        rhs.iter().filter(|e| lhs.contains(e)).collect();
    let merge_item = |e: &Element| -> Value {
        let l = find(&lhs, e).map(|i| &live[i]);
        let c = find(&rhs, e).map(|i| &config[i]);
        match (l, c) {
            (Some(l), Some(c)) if *list_type != ListType::Set => merge(l, c, item_node),
            (_, Some(c)) => c.clone(),
            (Some(l), None) => l.clone(),
            (None, None) => Value::Null,
        }
    };
    let mut out = Vec::new();
    let mut done: Vec<&Element> = Vec::new();
    let mut next_shared = shared.pop_front();
    let (mut li, mut ri) = (0, 0);
    while li < lhs.len() || ri < rhs.len() {
        if li < lhs.len() && ri < rhs.len() {
            let pe = &lhs[li];
            if *pe == rhs[ri] {
                out.push(merge_item(pe));
                done.push(pe);
                li += 1;
                ri += 1;
                next_shared = shared.pop_front();
                continue;
            }
            if rhs.contains(pe) && next_shared.is_some_and(|n| n != pe) {
                li += 1;
                continue;
            }
        }
        if li < lhs.len() {
            let pe = &lhs[li];
            if !rhs.contains(pe) {
                out.push(live[li].clone());
                li += 1;
                continue;
            } else if done.contains(&pe) {
                li += 1;
                continue;
            }
        }
        if ri < rhs.len() {
            let pe = &rhs[ri];
            out.push(merge_item(pe));
            done.push(pe);
            ri += 1;
            if next_shared.is_some_and(|n| n == pe) {
                next_shared = shared.pop_front();
            }
        }
    }
    out
}

/// Drops `$`-directives the emulator does not model from a strategic merge patch's objects,
/// and merges it as the apiserver does for built-in types: maps recursively (null deletes),
/// keyed lists by their first key (the patch merge key), sets as unions, other lists replaced.
pub(crate) fn strategic_merge(live: &Value, patch: &Value, node: Option<Node<'_>>) -> Value {
    let shape = node.map_or(Shape::Any, |n| n.shape());
    match (live, patch) {
        (Value::Object(l), Value::Object(p)) if shape != Shape::Scalar => {
            if p.get("$patch").and_then(Value::as_str) == Some("replace") {
                let mut replaced = p.clone();
                replaced.remove("$patch");
                return Value::Object(replaced);
            }
            let mut out: Map<String, Value> = l.clone();
            for (k, pv) in p {
                if k.starts_with('$') {
                    continue;
                }
                if pv.is_null() {
                    out.remove(k);
                    continue;
                }
                let child = node.and_then(|n| match shape {
                    Shape::Struct => n.field(k),
                    Shape::Map => n.values(),
                    _ => None,
                });
                let merged = match l.get(k) {
                    Some(lv) => strategic_merge(lv, pv, child),
                    None => strip_directives(pv),
                };
                out.insert(k.clone(), merged);
            }
            Value::Object(out)
        }
        (Value::Array(l), Value::Array(p)) if shape == Shape::List => {
            let Some(n) = node else {
                return patch.clone();
            };
            match n.list_type() {
                ListType::Atomic => strip_directives(patch),
                ListType::Set => {
                    let mut out = l.clone();
                    for item in p {
                        if !out.contains(item) {
                            out.push(item.clone());
                        }
                    }
                    Value::Array(out)
                }
                ListType::Map(keys) => {
                    let merge_key = &keys[..1.min(keys.len())];
                    let item_node = n.items();
                    let mut out = l.clone();
                    for item in p {
                        let key = item_elements(
                            std::slice::from_ref(item),
                            &ListType::Map(merge_key.to_vec()),
                            item_node,
                        );
                        let existing =
                            item_elements(&out, &ListType::Map(merge_key.to_vec()), item_node)
                                .iter()
                                .position(|e| *e == key[0] && !matches!(e, Element::Index(_)));
                        let delete = item.get("$patch").and_then(Value::as_str) == Some("delete");
                        match (existing, delete) {
                            (Some(i), true) => {
                                out.remove(i);
                            }
                            (None, true) => {}
                            (Some(i), false) => out[i] = strategic_merge(&out[i], item, item_node),
                            (None, false) => out.push(strip_directives(item)),
                        }
                    }
                    Value::Array(out)
                }
            }
        }
        _ => strip_directives(patch),
    }
}

fn strip_directives(value: &Value) -> Value {
    match value {
        Value::Object(map) => Value::Object(
            map.iter()
                .filter(|(k, _)| !k.starts_with('$'))
                .map(|(k, v)| (k.clone(), strip_directives(v)))
                .collect(),
        ),
        Value::Array(items) => Value::Array(items.iter().map(strip_directives).collect()),
        other => other.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kube_emulator::schema::SchemaDoc;
    use k8s_openapi::api::batch::v1::Job;

    #[test]
    fn keyed_lists_merge_by_key_and_keep_live_only_items_in_place() {
        let doc = SchemaDoc::builtin::<Job>();
        let node = doc
            .root()
            .field("spec")
            .and_then(|s| s.field("template"))
            .and_then(|t| t.field("spec"))
            .and_then(|p| p.field("containers"))
            .unwrap();
        let live = json!([{"name": "a", "image": "1"}, {"name": "b", "image": "2"}]);
        let config = json!([{"name": "c", "image": "3"}, {"name": "a", "image": "4"}]);
        let merged = merge(&live, &config, Some(node));
        assert_eq!(
            merged,
            json!([{"name": "c", "image": "3"}, {"name": "a", "image": "4"}, {"name": "b", "image": "2"}])
        );
    }

    #[test]
    fn finalizers_merge_as_a_set() {
        let doc = SchemaDoc::builtin::<Job>();
        let node = doc
            .root()
            .field("metadata")
            .and_then(|m| m.field("finalizers"))
            .unwrap();
        let merged = merge(&json!(["a/x", "a/y"]), &json!(["a/y", "a/z"]), Some(node));
        assert_eq!(merged, json!(["a/x", "a/y", "a/z"]));
    }
}
