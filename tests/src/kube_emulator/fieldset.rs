//! Sets of field paths, as server-side apply tracks ownership (structured-merge-diff's
//! `fieldpath.Set`): which fields an object has, how two objects differ, and the `FieldsV1`
//! encoding stored in `metadata.managedFields` (`f:name`, `k:{"name":"x"}`, `v:"value"`, `.`).
//!
//! Paths follow the schema: struct fields and map keys are `f:` elements, items of lists keyed
//! by some fields are `k:` elements, items of sets are `v:` elements, and atomic lists, atomic
//! objects and scalars are leaves.

use std::collections::BTreeMap;

use serde_json::{Map, Value, json};

use super::schema::{ListType, Node, Shape};

/// One step of a path.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) enum Element {
    /// A struct field or map key.
    Field(String),
    /// An item of a keyed list, by its key fields (canonical JSON of an object).
    Key(String),
    /// An item of a set, by its value (canonical JSON).
    Value(String),
    /// An item of a list by position (lists whose items lack their keys).
    Index(usize),
}

impl Element {
    fn encode(&self) -> String {
        match self {
            Element::Field(name) => format!("f:{name}"),
            Element::Key(key) => format!("k:{key}"),
            Element::Value(value) => format!("v:{value}"),
            Element::Index(i) => format!("i:{i}"),
        }
    }

    fn decode(text: &str) -> Option<Element> {
        let (kind, rest) = text.split_once(':')?;
        Some(match kind {
            "f" => Element::Field(rest.to_owned()),
            "k" => Element::Key(canonical(&serde_json::from_str(rest).ok()?)),
            "v" => Element::Value(canonical(&serde_json::from_str(rest).ok()?)),
            "i" => Element::Index(rest.parse().ok()?),
            _ => return None,
        })
    }

    /// As structured-merge-diff prints it in conflict messages: `.name`, `[name="x"]`, `[="v"]`.
    fn display(&self) -> String {
        match self {
            Element::Field(name) => format!(".{name}"),
            Element::Key(key) => {
                let parsed: Map<String, Value> = serde_json::from_str(key).unwrap_or_default();
                let parts: Vec<String> = parsed.iter().map(|(k, v)| format!("{k}={v}")).collect();
                format!("[{}]", parts.join(","))
            }
            Element::Value(value) => format!("[={value}]"),
            Element::Index(i) => format!("[{i}]"),
        }
    }
}

/// A path from the object's root.
pub(crate) type Path = Vec<Element>;

/// `.spec.containers[name="scan"].image`.
pub(crate) fn display_path(path: &[Element]) -> String {
    path.iter().map(Element::display).collect()
}

/// Canonical JSON: object keys sorted (serde_json's map is ordered), no spaces.
pub(crate) fn canonical(value: &Value) -> String {
    value.to_string()
}

/// A set of paths, as a tree: a node is a member when the path to it is in the set.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct FieldSet {
    member: bool,
    children: BTreeMap<Element, FieldSet>,
}

impl FieldSet {
    pub(crate) fn is_empty(&self) -> bool {
        !self.member && self.children.values().all(FieldSet::is_empty)
    }

    pub(crate) fn insert(&mut self, path: &[Element]) {
        match path.split_first() {
            None => self.member = true,
            Some((first, rest)) => self.children.entry(first.clone()).or_default().insert(rest),
        }
    }

    fn child(&self, element: &Element) -> Option<&FieldSet> {
        self.children.get(element)
    }

    /// Every member path.
    pub(crate) fn paths(&self) -> Vec<Path> {
        let mut out = Vec::new();
        self.collect(&mut Vec::new(), &mut out);
        out
    }

    fn collect(&self, prefix: &mut Path, out: &mut Vec<Path>) {
        if self.member {
            out.push(prefix.clone());
        }
        for (element, child) in &self.children {
            prefix.push(element.clone());
            child.collect(prefix, out);
            prefix.pop();
        }
    }

    pub(crate) fn union(&self, other: &FieldSet) -> FieldSet {
        let mut out = self.clone();
        out.member |= other.member;
        for (element, child) in &other.children {
            let merged = match out.children.get(element) {
                Some(mine) => mine.union(child),
                None => child.clone(),
            };
            out.children.insert(element.clone(), merged);
        }
        out
    }

    pub(crate) fn difference(&self, other: &FieldSet) -> FieldSet {
        let mut out = FieldSet {
            member: self.member && !other.member,
            children: BTreeMap::new(),
        };
        for (element, child) in &self.children {
            let rest = match other.children.get(element) {
                Some(theirs) => child.difference(theirs),
                None => child.clone(),
            };
            if !rest.is_empty() {
                out.children.insert(element.clone(), rest);
            }
        }
        out
    }

    pub(crate) fn intersection(&self, other: &FieldSet) -> FieldSet {
        let mut out = FieldSet {
            member: self.member && other.member,
            children: BTreeMap::new(),
        };
        for (element, child) in &self.children {
            if let Some(theirs) = other.children.get(element) {
                let both = child.intersection(theirs);
                if !both.is_empty() {
                    out.children.insert(element.clone(), both);
                }
            }
        }
        out
    }

    /// The set without the subtree at `path` (and without the path itself).
    pub(crate) fn without_subtree(&self, path: &[Element]) -> FieldSet {
        let mut out = self.clone();
        out.remove_subtree(path);
        out
    }

    fn remove_subtree(&mut self, path: &[Element]) {
        match path.split_first() {
            None => {
                self.member = false;
                self.children.clear();
            }
            Some((first, rest)) => {
                if let Some(child) = self.children.get_mut(first) {
                    child.remove_subtree(rest);
                    if child.is_empty() {
                        self.children.remove(first);
                    }
                }
            }
        }
    }

    /// Only the subtree at `path` (with the path itself).
    pub(crate) fn only_subtree(&self, path: &[Element]) -> FieldSet {
        let mut node = self;
        for element in path {
            match node.children.get(element) {
                Some(child) => node = child,
                None => return FieldSet::default(),
            }
        }
        let mut out = FieldSet::default();
        let mut cursor = &mut out;
        for element in path {
            cursor = cursor.children.entry(element.clone()).or_default();
        }
        *cursor = node.clone();
        out
    }

    /// Drops the member flag of a path, keeping what is below it.
    pub(crate) fn unmark(&mut self, path: &[Element]) {
        match path.split_first() {
            None => self.member = false,
            Some((first, rest)) => {
                if let Some(child) = self.children.get_mut(first) {
                    child.unmark(rest);
                    if child.is_empty() {
                        self.children.remove(first);
                    }
                }
            }
        }
    }

    /// Also makes every named struct field that has members below it a member itself
    /// (structured-merge-diff's `EnsureNamedFieldsAreMembers`), so pruning removes emptied
    /// structs but never a map or list another manager still has entries in.
    pub(crate) fn with_named_fields(&self, node: Option<Node<'_>>) -> FieldSet {
        let mut out = FieldSet {
            member: self.member,
            children: BTreeMap::new(),
        };
        for (element, child) in &self.children {
            let child_node = node.and_then(|n| child_schema(n, element));
            let mut converted = child.with_named_fields(child_node);
            if let (Element::Field(name), Some(n)) = (element, node)
                && n.shape() == Shape::Struct
                && n.declares(name)
            {
                converted.member = true;
            }
            out.children.insert(element.clone(), converted);
        }
        out
    }

    /// The `FieldsV1` JSON.
    pub(crate) fn to_fields_v1(&self) -> Value {
        let mut map = Map::new();
        if self.member && !self.children.is_empty() {
            map.insert(".".into(), json!({}));
        }
        for (element, child) in &self.children {
            if child.is_empty() {
                continue;
            }
            map.insert(element.encode(), child.to_fields_v1());
        }
        Value::Object(map)
    }

    /// Parses `FieldsV1` JSON; `None` when it is not a valid encoding.
    pub(crate) fn from_fields_v1(value: &Value) -> Option<FieldSet> {
        let map = value.as_object()?;
        let mut set = FieldSet::default();
        for (k, v) in map {
            if k == "." {
                set.member = true;
                continue;
            }
            let element = Element::decode(k)?;
            let mut child = FieldSet::from_fields_v1(v)?;
            if v.as_object().is_some_and(Map::is_empty) {
                child.member = true;
            }
            set.children.insert(element, child);
        }
        Some(set)
    }
}

/// The schema below a path element.
fn child_schema<'a>(node: Node<'a>, element: &Element) -> Option<Node<'a>> {
    match (node.shape(), element) {
        (Shape::Struct, Element::Field(name)) => node.field(name),
        (Shape::Map, Element::Field(_)) => node.values(),
        (Shape::List, _) => node.items(),
        _ => None,
    }
}

/// The key of a keyed-list item (`None` when it lacks a key field that has no default; a key
/// with a schema default takes it, as structured-merge-diff 6.3 does).
pub(crate) fn item_key(
    item: &Value,
    keys: &[String],
    item_node: Option<Node<'_>>,
) -> Option<Element> {
    let mut key = Map::new();
    for k in keys {
        let value = item
            .get(k)
            .filter(|v| !v.is_null())
            .or_else(|| item_node.and_then(|n| n.default_of(k)))?;
        key.insert(k.clone(), value.clone());
    }
    Some(Element::Key(canonical(&Value::Object(key))))
}

/// The path element of each item of a list, by the list's type.
pub(crate) fn item_elements(
    items: &[Value],
    list_type: &ListType,
    item_node: Option<Node<'_>>,
) -> Vec<Element> {
    items
        .iter()
        .enumerate()
        .map(|(i, item)| match list_type {
            ListType::Set => Element::Value(canonical(item)),
            ListType::Map(keys) => item_key(item, keys, item_node).unwrap_or(Element::Index(i)),
            ListType::Atomic => Element::Index(i),
        })
        .collect()
}

/// Every field of an object (structured-merge-diff's `ToFieldSet`): leaves, list items, map
/// entries, and fields holding null or an empty object.
pub(crate) fn field_set(value: &Value, node: Option<Node<'_>>) -> FieldSet {
    let mut set = FieldSet::default();
    walk(value, node, &mut Vec::new(), &mut set);
    set
}

fn walk(value: &Value, node: Option<Node<'_>>, path: &mut Path, set: &mut FieldSet) {
    let shape = node.map_or(Shape::Any, |n| n.shape());
    match value {
        Value::Object(map)
            if !node.is_some_and(|n| n.atomic_object()) && shape != Shape::Scalar =>
        {
            for (k, v) in map {
                let child = node.and_then(|n| child_schema(n, &Element::Field(k.clone())));
                path.push(Element::Field(k.clone()));
                walk(v, child, path, set);
                let declared = node.is_some_and(|n| shape == Shape::Struct && n.declares(k));
                if v.is_null() || v.as_object().is_some_and(Map::is_empty) || !declared {
                    set.insert(path);
                }
                path.pop();
            }
        }
        Value::Array(items) if shape == Shape::List => {
            let Some(n) = node else {
                set.insert(path);
                return;
            };
            let list_type = n.list_type();
            if list_type == ListType::Atomic {
                set.insert(path);
                return;
            }
            let item_node = n.items();
            for (item, element) in items
                .iter()
                .zip(item_elements(items, &list_type, item_node))
            {
                path.push(element);
                if list_type != ListType::Set {
                    walk(item, item_node, path, set);
                }
                set.insert(path);
                path.pop();
            }
        }
        _ => set.insert(path),
    }
}

/// The value at a path, if present.
pub(crate) fn value_at<'v>(
    value: &'v Value,
    path: &[Element],
    node: Option<Node<'_>>,
) -> Option<&'v Value> {
    let Some((first, rest)) = path.split_first() else {
        return Some(value);
    };
    let child_node = node.and_then(|n| child_schema(n, first));
    let next = match (first, value) {
        (Element::Field(name), Value::Object(map)) => map.get(name)?,
        (element, Value::Array(items)) => {
            let list_type = node.map_or(ListType::Atomic, |n| n.list_type());
            let at = item_elements(items, &list_type, node.and_then(|n| n.items()))
                .iter()
                .position(|e| e == element)?;
            &items[at]
        }
        _ => return None,
    };
    value_at(next, rest, child_node)
}

/// How two versions of an object differ, by path.
#[derive(Debug, Default)]
pub(crate) struct Comparison {
    pub added: FieldSet,
    pub modified: FieldSet,
    pub removed: FieldSet,
}

impl Comparison {
    /// Added or modified paths: what a writer now sets.
    pub(crate) fn changed(&self) -> FieldSet {
        self.added.union(&self.modified)
    }
}

/// Compares two versions of an object.
pub(crate) fn compare(old: &Value, new: &Value, node: Option<Node<'_>>) -> Comparison {
    let old_set = field_set(old, node);
    let new_set = field_set(new, node);
    let mut modified = FieldSet::default();
    for path in old_set.intersection(&new_set).paths() {
        let (Some(before), Some(after)) = (value_at(old, &path, node), value_at(new, &path, node))
        else {
            continue;
        };
        // Containers (list items, map entries holding objects) change through their children.
        let has_children =
            |set: &FieldSet| set.child_at(&path).is_some_and(|s| !s.children.is_empty());
        let leaf = !has_children(&old_set) && !has_children(&new_set);
        if leaf && before != after {
            modified.insert(&path);
        }
    }
    Comparison {
        added: new_set.difference(&old_set),
        modified,
        removed: old_set.difference(&new_set),
    }
}

impl FieldSet {
    fn child_at(&self, path: &[Element]) -> Option<&FieldSet> {
        let mut node = self;
        for element in path {
            node = node.child(element)?;
        }
        Some(node)
    }
}

/// Removes from `value` every member path of `set` (with what is below it).
pub(crate) fn remove_items(value: &mut Value, set: &FieldSet, node: Option<Node<'_>>) {
    match value {
        Value::Object(map) => {
            let keys: Vec<String> = map.keys().cloned().collect();
            for k in keys {
                let element = Element::Field(k.clone());
                let Some(child) = set.child(&element) else {
                    continue;
                };
                if child.member {
                    map.remove(&k);
                } else if let Some(v) = map.get_mut(&k) {
                    remove_items(v, child, node.and_then(|n| child_schema(n, &element)));
                }
            }
        }
        Value::Array(items) => {
            let list_type = node.map_or(ListType::Atomic, |n| n.list_type());
            let item_node = node.and_then(|n| n.items());
            let elements = item_elements(items, &list_type, item_node);
            let mut kept = Vec::with_capacity(items.len());
            for (mut item, element) in items.drain(..).zip(elements) {
                match set.child(&element) {
                    Some(child) if child.member => {}
                    Some(child) => {
                        remove_items(&mut item, child, item_node);
                        kept.push(item);
                    }
                    None => kept.push(item),
                }
            }
            *items = kept;
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kube_emulator::schema::SchemaDoc;
    use k8s_openapi::api::batch::v1::Job;

    fn job() -> Value {
        json!({"metadata": {"name": "j", "labels": {"app": "scan"}},
               "spec": {"backoffLimit": 0, "template": {"spec": {"restartPolicy": "Never",
                 "containers": [{"name": "scan", "image": "kics", "args": ["a", "b"],
                                 "env": [{"name": "A", "value": "1"}]}]}}}})
    }

    #[test]
    fn field_sets_encode_as_fields_v1_and_round_trip() {
        let doc = SchemaDoc::builtin::<Job>();
        let set = field_set(&job(), Some(doc.root()));
        let encoded = set.to_fields_v1();
        assert_eq!(
            encoded["f:spec"]["f:template"]["f:spec"]["f:containers"]["k:{\"name\":\"scan\"}"]["f:env"]
                ["k:{\"name\":\"A\"}"],
            json!({".": {}, "f:name": {}, "f:value": {}})
        );
        assert_eq!(
            encoded["f:spec"]["f:template"]["f:spec"]["f:containers"]["k:{\"name\":\"scan\"}"]["f:args"],
            json!({})
        );
        assert_eq!(encoded["f:metadata"]["f:labels"], json!({"f:app": {}}));
        assert_eq!(FieldSet::from_fields_v1(&encoded).unwrap(), set);
    }

    #[test]
    fn comparison_finds_added_modified_and_removed_leaves() {
        let doc = SchemaDoc::builtin::<Job>();
        let old = job();
        let mut new = job();
        new["spec"]["backoffLimit"] = json!(2);
        new["spec"]["template"]["spec"]["containers"][0]["env"] =
            json!([{"name": "B", "value": "2"}]);
        let diff = compare(&old, &new, Some(doc.root()));
        let show = |s: &FieldSet| {
            s.paths()
                .iter()
                .map(|p| display_path(p))
                .collect::<Vec<_>>()
        };
        assert_eq!(show(&diff.modified), [".spec.backoffLimit"]);
        assert!(show(&diff.added).contains(
            &".spec.template.spec.containers[name=\"scan\"].env[name=\"B\"].value".to_owned()
        ));
        assert!(
            show(&diff.removed).contains(
                &".spec.template.spec.containers[name=\"scan\"].env[name=\"A\"]".to_owned()
            )
        );
    }
}
