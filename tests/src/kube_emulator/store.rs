//! The emulator's state and the semantics of every verb, independent of HTTP: objects, the
//! resourceVersion counter, the event history watches read from, finalizers, owner-reference
//! garbage collection, status isolation and generation. All methods are synchronous and run under
//! one lock, so every write is atomic and totally ordered, like etcd's revisions.

use std::collections::{BTreeMap, VecDeque};

use serde_json::{Map, Value, json};

use super::resource::{Propagation, ResourceType};
use super::selector::{FieldSelector, LabelSelector};

/// Index of a registered resource type.
pub(crate) type TypeId = usize;

/// Key of a stored object: type, namespace ("" when cluster-scoped), name.
pub(crate) type ObjKey = (TypeId, String, String);

/// An error the apiserver would answer with a `Status` object.
#[derive(Clone, Debug)]
pub(crate) struct ApiError {
    pub code: u16,
    pub reason: &'static str,
    pub message: String,
    pub retry_after: Option<u64>,
}

impl ApiError {
    pub(crate) fn new(code: u16, reason: &'static str, message: impl Into<String>) -> ApiError {
        ApiError {
            code,
            reason,
            message: message.into(),
            retry_after: None,
        }
    }

    fn not_found(rt: &ResourceType, name: &str) -> ApiError {
        ApiError::new(
            404,
            "NotFound",
            format!("{} \"{name}\" not found", rt.qualified_plural()),
        )
    }

    fn conflict(rt: &ResourceType, name: &str) -> ApiError {
        ApiError::new(
            409,
            "Conflict",
            format!(
                "Operation cannot be fulfilled on {} \"{name}\": the object has been modified; \
                 please apply your changes to the latest version and try again",
                rt.qualified_plural()
            ),
        )
    }

    fn invalid(rt: &ResourceType, name: &str, detail: impl std::fmt::Display) -> ApiError {
        ApiError::new(
            422,
            "Invalid",
            format!("{} \"{name}\" is invalid: {detail}", rt.kind),
        )
    }

    fn bad_request(message: impl Into<String>) -> ApiError {
        ApiError::new(400, "BadRequest", message)
    }

    /// The `Status` body.
    pub(crate) fn status(&self) -> Value {
        json!({
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.message,
            "reason": self.reason,
            "code": self.code,
        })
    }
}

/// Kind of a watch event.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum EventType {
    Added,
    Modified,
    Deleted,
}

impl EventType {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            EventType::Added => "ADDED",
            EventType::Modified => "MODIFIED",
            EventType::Deleted => "DELETED",
        }
    }
}

/// One change, kept for watches.
#[derive(Clone, Debug)]
pub(crate) struct LoggedEvent {
    pub rv: u64,
    pub type_id: TypeId,
    pub kind: EventType,
    /// The object after the change (before it, for DELETED, with the deletion's rv).
    pub object: Value,
    /// The object before the change, for MODIFIED (selectors: objects leaving a selection).
    pub old: Option<Value>,
}

/// A request the test asked to fail.
#[derive(Clone, Debug)]
pub(crate) struct FailRule {
    pub method: Option<String>,
    pub path_contains: String,
    pub remaining: usize,
    pub error: ApiError,
}

/// A PATCH as received.
#[derive(Clone, Copy, Debug)]
pub(crate) struct PatchRequest<'a> {
    pub content_type: &'a str,
    pub body: &'a [u8],
    /// Whether it targets the status subresource.
    pub status: bool,
    pub field_manager: Option<&'a str>,
}

/// How a delete was asked for.
#[derive(Clone, Debug, Default)]
pub(crate) struct DeleteOptions {
    pub propagation: Option<Propagation>,
    pub precondition_uid: Option<String>,
    pub precondition_rv: Option<String>,
    pub dry_run: bool,
}

/// The whole emulated cluster state.
#[derive(Debug)]
pub(crate) struct Store {
    pub types: Vec<ResourceType>,
    objects: BTreeMap<ObjKey, Value>,
    events: VecDeque<LoggedEvent>,
    rv: u64,
    /// Watches and continue tokens from a resourceVersion below this get 410 Gone.
    floor: u64,
    history_limit: usize,
    uid_counter: u64,
    pub failures: Vec<FailRule>,
    pub stalls: Vec<(u64, String)>,
    pub stall_counter: u64,
}

const FOREGROUND: &str = "foregroundDeletion";
const ORPHAN: &str = "orphan";

impl Store {
    pub(crate) fn new(history_limit: usize) -> Store {
        Store {
            types: Vec::new(),
            objects: BTreeMap::new(),
            events: VecDeque::new(),
            rv: 1,
            floor: 0,
            history_limit,
            uid_counter: 0,
            failures: Vec::new(),
            stalls: Vec::new(),
            stall_counter: 0,
        }
    }

    pub(crate) fn current_rv(&self) -> u64 {
        self.rv
    }

    pub(crate) fn find_type(&self, group: &str, version: &str, plural: &str) -> Option<TypeId> {
        self.types
            .iter()
            .position(|t| t.group == group && t.version == version && t.plural == plural)
    }

    /// Drops the whole event history: every older resourceVersion becomes too old (410).
    pub(crate) fn compact(&mut self) {
        self.events.clear();
        self.floor = self.rv;
    }

    // ----- reads -----

    pub(crate) fn get(&self, t: TypeId, ns: &str, name: &str) -> Result<Value, ApiError> {
        self.objects
            .get(&(t, ns.to_owned(), name.to_owned()))
            .cloned()
            .ok_or_else(|| ApiError::not_found(&self.types[t], name))
    }

    /// Objects of a type, optionally in one namespace, in key order (namespace, name).
    pub(crate) fn objects_of(&self, t: TypeId, ns: Option<&str>) -> Vec<&Value> {
        self.objects
            .iter()
            .filter(|((ty, n, _), _)| *ty == t && ns.is_none_or(|ns| ns == n))
            .map(|(_, v)| v)
            .collect()
    }

    pub(crate) fn list(
        &self,
        t: TypeId,
        ns: Option<&str>,
        labels: &LabelSelector,
        fields: &FieldSelector,
        limit: Option<usize>,
        continue_token: Option<&str>,
    ) -> Result<Value, ApiError> {
        let rt = &self.types[t];
        let after = match continue_token {
            Some(token) => Some(self.decode_continue(token)?),
            None => None,
        };
        let mut items = Vec::new();
        let mut next = None;
        for ((_, obj_ns, obj_name), object) in self
            .objects
            .iter()
            .filter(|((ty, n, _), _)| *ty == t && ns.is_none_or(|ns| ns == n))
        {
            if let Some(after) = &after
                && (obj_ns.as_str(), obj_name.as_str()) <= (after.0.as_str(), after.1.as_str())
            {
                continue;
            }
            if !labels.matches(object) || !fields.matches(object) {
                continue;
            }
            if limit.is_some_and(|l| l > 0 && items.len() == l) {
                next = Some(encode_continue(self.rv, obj_ns, obj_name, &items));
                break;
            }
            items.push(object.clone());
        }
        let mut metadata = json!({"resourceVersion": self.rv.to_string()});
        if let Some(token) = next {
            metadata["continue"] = json!(token);
        }
        Ok(json!({
            "kind": format!("{}List", rt.kind),
            "apiVersion": rt.api_version(),
            "metadata": metadata,
            "items": items,
        }))
    }

    fn decode_continue(&self, token: &str) -> Result<(String, String), ApiError> {
        use base64::Engine as _;
        let raw = base64::engine::general_purpose::STANDARD
            .decode(token)
            .ok()
            .and_then(|b| String::from_utf8(b).ok())
            .ok_or_else(|| ApiError::bad_request("continue key is not valid"))?;
        let mut parts = raw.splitn(3, '\u{0}');
        let (Some(rv), Some(ns), Some(name)) = (parts.next(), parts.next(), parts.next()) else {
            return Err(ApiError::bad_request("continue key is not valid"));
        };
        let rv: u64 = rv
            .parse()
            .map_err(|_| ApiError::bad_request("continue key is not valid"))?;
        if rv < self.floor {
            return Err(ApiError::new(
                410,
                "Expired",
                "The provided continue parameter is too old to display a consistent list result. \
                 You can start a new list without the continue parameter.",
            ));
        }
        Ok((ns.to_owned(), name.to_owned()))
    }

    /// Events after `rv`, or `Err` when history no longer reaches back that far.
    pub(crate) fn events_since(&self, rv: u64) -> Result<Vec<LoggedEvent>, ApiError> {
        if rv < self.floor {
            return Err(ApiError::new(
                410,
                "Expired",
                format!("too old resource version: {rv} ({})", self.floor),
            ));
        }
        Ok(self.events.iter().filter(|e| e.rv > rv).cloned().collect())
    }

    // ----- writes -----

    fn next_rv(&mut self) -> u64 {
        self.rv += 1;
        self.rv
    }

    fn record(&mut self, t: TypeId, kind: EventType, object: Value, old: Option<Value>) {
        let rv = object
            .pointer("/metadata/resourceVersion")
            .and_then(Value::as_str)
            .and_then(|s| s.parse().ok())
            .unwrap_or(self.rv);
        self.events.push_back(LoggedEvent {
            rv,
            type_id: t,
            kind,
            object,
            old,
        });
        while self.events.len() > self.history_limit {
            if let Some(dropped) = self.events.pop_front() {
                self.floor = self.floor.max(dropped.rv);
            }
        }
    }

    pub(crate) fn create(
        &mut self,
        t: TypeId,
        ns: &str,
        mut body: Value,
        dry_run: bool,
    ) -> Result<Value, ApiError> {
        let rt = self.types[t].clone();
        check_body(&rt, &body)?;
        let name = match body.pointer("/metadata/name").and_then(Value::as_str) {
            Some(name) if !name.is_empty() => name.to_owned(),
            _ => match body
                .pointer("/metadata/generateName")
                .and_then(Value::as_str)
            {
                Some(prefix) if !prefix.is_empty() => self.generate_name(t, ns, prefix),
                _ => {
                    return Err(ApiError::invalid(
                        &rt,
                        "",
                        "metadata.name: Required value: name or generateName is required",
                    ));
                }
            },
        };
        if !is_dns_subdomain(&name) {
            return Err(ApiError::invalid(
                &rt,
                &name,
                format!(
                    "metadata.name: Invalid value: \"{name}\": a lowercase RFC 1123 subdomain must \
                     consist of lower case alphanumeric characters, '-' or '.'"
                ),
            ));
        }
        if let Some(body_ns) = body.pointer("/metadata/namespace").and_then(Value::as_str)
            && rt.namespaced
            && body_ns != ns
        {
            return Err(ApiError::bad_request(
                "the namespace of the provided object does not match the namespace sent on the request",
            ));
        }
        let key = (t, ns.to_owned(), name.clone());
        if self.objects.contains_key(&key) {
            return Err(ApiError::new(
                409,
                "AlreadyExists",
                format!("{} \"{name}\" already exists", rt.qualified_plural()),
            ));
        }
        if rt.status_subresource
            && let Some(obj) = body.as_object_mut()
        {
            obj.remove("status");
        }
        let body = apply_schema(&rt, &name, body, None)?;
        let mut object = body;
        self.uid_counter += 1;
        let uid = format!("00000000-0000-4000-8000-{:012x}", self.uid_counter);
        {
            let meta = metadata_mut(&mut object);
            meta.insert("name".into(), json!(name));
            if rt.namespaced {
                meta.insert("namespace".into(), json!(ns));
            } else {
                meta.remove("namespace");
            }
            meta.insert("uid".into(), json!(uid));
            meta.insert("creationTimestamp".into(), json!(now()));
            meta.insert("generation".into(), json!(1));
            meta.remove("deletionTimestamp");
            meta.remove("resourceVersion");
        }
        if dry_run {
            return Ok(object);
        }
        let rv = self.next_rv();
        metadata_mut(&mut object).insert("resourceVersion".into(), json!(rv.to_string()));
        self.objects.insert(key, object.clone());
        self.record(t, EventType::Added, object.clone(), None);
        Ok(object)
    }

    fn generate_name(&mut self, t: TypeId, ns: &str, prefix: &str) -> String {
        const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
        loop {
            self.uid_counter += 1;
            let mut n = self.uid_counter.wrapping_mul(0x9E37_79B9_7F4A_7C15);
            let suffix: String = (0..5)
                .map(|_| {
                    let c = ALPHABET[usize::try_from(n % 27).unwrap_or(0)];
                    n /= 27;
                    char::from(c)
                })
                .collect();
            let name = format!("{prefix}{suffix}");
            if !self.objects.contains_key(&(t, ns.to_owned(), name.clone())) {
                return name;
            }
        }
    }

    /// Replaces an object (PUT), or only its status when `status` is set.
    pub(crate) fn update(
        &mut self,
        t: TypeId,
        ns: &str,
        name: &str,
        body: Value,
        status: bool,
    ) -> Result<Value, ApiError> {
        let rt = self.types[t].clone();
        check_body(&rt, &body)?;
        if let Some(body_name) = body.pointer("/metadata/name").and_then(Value::as_str)
            && body_name != name
        {
            return Err(ApiError::bad_request(
                "the name of the object does not match the name on the URL",
            ));
        }
        let current = self.get(t, ns, name)?;
        if let Some(rv) = body
            .pointer("/metadata/resourceVersion")
            .and_then(Value::as_str)
            && !rv.is_empty()
            && Some(rv)
                != current
                    .pointer("/metadata/resourceVersion")
                    .and_then(Value::as_str)
        {
            return Err(ApiError::conflict(&rt, name));
        }
        let proposed = if status {
            let mut merged = current.clone();
            set_or_remove(&mut merged, "status", body.get("status").cloned());
            merged
        } else {
            let mut merged = body;
            if rt.status_subresource {
                set_or_remove(&mut merged, "status", current.get("status").cloned());
            }
            merged
        };
        self.commit_update(t, ns, name, current, proposed)
    }

    /// Applies a patch of the given content type to an object (or its status).
    pub(crate) fn patch(
        &mut self,
        t: TypeId,
        ns: &str,
        name: &str,
        request: &PatchRequest<'_>,
    ) -> Result<Value, ApiError> {
        let rt = self.types[t].clone();
        let PatchRequest {
            content_type,
            body,
            status,
            field_manager,
        } = *request;
        let content_type = content_type.split(';').next().unwrap_or("").trim();
        let current = match self.get(t, ns, name) {
            Ok(current) => current,
            Err(e) if content_type == "application/apply-patch+yaml" && !status => {
                // Server-side apply creates what does not exist.
                let _ = e;
                require_field_manager(field_manager)?;
                let object: Value = parse_apply_body(body)?;
                let mut object = object;
                metadata_mut(&mut object).insert("name".into(), json!(name));
                return self.create(t, ns, object, false);
            }
            Err(e) => return Err(e),
        };
        let mut patched = current.clone();
        match content_type {
            "application/json-patch+json" => {
                let ops: Vec<Value> = serde_json::from_slice(body)
                    .map_err(|e| ApiError::bad_request(format!("error decoding patch: {e}")))?;
                let ops = drop_null_tests_of_missing_paths(&current, ops);
                let patch: json_patch::Patch = serde_json::from_value(Value::Array(ops))
                    .map_err(|e| ApiError::bad_request(format!("error decoding patch: {e}")))?;
                json_patch::patch(&mut patched, &patch).map_err(|e| {
                    ApiError::new(
                        422,
                        "Invalid",
                        format!(
                            "the server rejected our request due to an error in our request: {e}"
                        ),
                    )
                })?;
            }
            "application/merge-patch+json" | "application/strategic-merge-patch+json" => {
                let patch: Value = serde_json::from_slice(body)
                    .map_err(|e| ApiError::bad_request(format!("error decoding patch: {e}")))?;
                json_patch::merge(&mut patched, &patch);
            }
            "application/apply-patch+yaml" => {
                require_field_manager(field_manager)?;
                let patch = parse_apply_body(body)?;
                check_kind(&rt, &patch)?;
                json_patch::merge(&mut patched, &patch);
            }
            other => {
                return Err(ApiError::new(
                    415,
                    "UnsupportedMediaType",
                    format!(
                        "the body of the request was in an unknown format - accepted media types include: application/json-patch+json, application/merge-patch+json, application/apply-patch+yaml; got {other:?}"
                    ),
                ));
            }
        }
        // A resourceVersion in the patch is a precondition.
        let patched_rv = patched
            .pointer("/metadata/resourceVersion")
            .and_then(Value::as_str);
        let current_rv = current
            .pointer("/metadata/resourceVersion")
            .and_then(Value::as_str);
        if patched_rv.is_some_and(|rv| !rv.is_empty()) && patched_rv != current_rv {
            return Err(ApiError::conflict(&rt, name));
        }
        let proposed = if status {
            let mut merged = current.clone();
            set_or_remove(&mut merged, "status", patched.get("status").cloned());
            merged
        } else {
            if rt.status_subresource {
                set_or_remove(&mut patched, "status", current.get("status").cloned());
            }
            patched
        };
        self.commit_update(t, ns, name, current, proposed)
    }

    /// Validates and stores a changed object; handles generation, immutable metadata, finalizers.
    fn commit_update(
        &mut self,
        t: TypeId,
        ns: &str,
        name: &str,
        current: Value,
        mut proposed: Value,
    ) -> Result<Value, ApiError> {
        let rt = self.types[t].clone();
        // Fields the server owns.
        for field in [
            "uid",
            "creationTimestamp",
            "deletionTimestamp",
            "namespace",
            "name",
        ] {
            let value = current.pointer(&format!("/metadata/{field}")).cloned();
            let meta = metadata_mut(&mut proposed);
            match value {
                Some(v) => meta.insert(field.into(), v),
                None => meta.remove(field),
            };
        }
        let being_deleted = current.pointer("/metadata/deletionTimestamp").is_some();
        if being_deleted {
            let old = finalizers(&current);
            if finalizers(&proposed).iter().any(|f| !old.contains(f)) {
                return Err(ApiError::invalid(
                    &rt,
                    name,
                    "metadata.finalizers: Forbidden: no new finalizers can be added if the object is being deleted",
                ));
            }
        }
        let mut proposed = apply_schema(&rt, name, proposed, Some(&current))?;
        let generation = current
            .pointer("/metadata/generation")
            .and_then(Value::as_i64)
            .unwrap_or(1);
        let spec_changed = without_meta_and_status(&current) != without_meta_and_status(&proposed);
        metadata_mut(&mut proposed).insert(
            "generation".into(),
            json!(if spec_changed {
                generation + 1
            } else {
                generation
            }),
        );
        metadata_mut(&mut proposed).insert(
            "resourceVersion".into(),
            current
                .pointer("/metadata/resourceVersion")
                .cloned()
                .unwrap_or(Value::Null),
        );
        if proposed == current {
            // A no-op write changes nothing and emits no event, as in a real cluster.
            return Ok(current);
        }
        let rv = self.next_rv();
        metadata_mut(&mut proposed).insert("resourceVersion".into(), json!(rv.to_string()));
        let key = (t, ns.to_owned(), name.to_owned());
        if being_deleted && finalizers(&proposed).is_empty() {
            self.objects.remove(&key);
            self.record(t, EventType::Deleted, proposed.clone(), None);
            self.collect_garbage();
            return Ok(proposed);
        }
        self.objects.insert(key, proposed.clone());
        self.record(t, EventType::Modified, proposed.clone(), Some(current));
        self.collect_garbage();
        Ok(proposed)
    }

    pub(crate) fn delete(
        &mut self,
        t: TypeId,
        ns: &str,
        name: &str,
        options: &DeleteOptions,
    ) -> Result<Value, ApiError> {
        let rt = self.types[t].clone();
        let current = self.get(t, ns, name)?;
        if let Some(uid) = &options.precondition_uid
            && Some(uid.as_str()) != current.pointer("/metadata/uid").and_then(Value::as_str)
        {
            return Err(ApiError::new(
                409,
                "Conflict",
                format!("Precondition failed: UID in precondition: {uid}"),
            ));
        }
        if let Some(rv) = &options.precondition_rv
            && Some(rv.as_str())
                != current
                    .pointer("/metadata/resourceVersion")
                    .and_then(Value::as_str)
        {
            return Err(ApiError::conflict(&rt, name));
        }
        if options.dry_run {
            return Ok(current);
        }
        let propagation = options.propagation.unwrap_or(rt.default_propagation);
        let mut finals = finalizers(&current);
        match propagation {
            Propagation::Foreground if self.has_dependents(&current) => {
                push_unique(&mut finals, FOREGROUND);
            }
            Propagation::Orphan if self.has_dependents(&current) => {
                push_unique(&mut finals, ORPHAN);
            }
            _ => {}
        }
        let key = (t, ns.to_owned(), name.to_owned());
        if finals.is_empty() {
            let rv = self.next_rv();
            let mut gone = current;
            metadata_mut(&mut gone).insert("resourceVersion".into(), json!(rv.to_string()));
            self.objects.remove(&key);
            self.record(t, EventType::Deleted, gone.clone(), None);
            self.collect_garbage();
            return Ok(gone);
        }
        if current.pointer("/metadata/deletionTimestamp").is_some() {
            return Ok(current);
        }
        let mut deleting = current.clone();
        {
            let meta = metadata_mut(&mut deleting);
            meta.insert("deletionTimestamp".into(), json!(now()));
            meta.insert("deletionGracePeriodSeconds".into(), json!(0));
            meta.insert("finalizers".into(), json!(finals));
        }
        let rv = self.next_rv();
        metadata_mut(&mut deleting).insert("resourceVersion".into(), json!(rv.to_string()));
        self.objects.insert(key, deleting.clone());
        self.record(t, EventType::Modified, deleting.clone(), Some(current));
        self.collect_garbage();
        Ok(deleting)
    }

    fn has_dependents(&self, owner: &Value) -> bool {
        let Some(uid) = owner.pointer("/metadata/uid").and_then(Value::as_str) else {
            return false;
        };
        self.objects
            .values()
            .any(|o| owner_uids(o).iter().any(|u| u == uid))
    }

    /// What the garbage collector does, run to a fixed point after every write: orphaning,
    /// foreground deletion, and deleting dependents whose owners are all gone.
    fn collect_garbage(&mut self) {
        for _ in 0..64 {
            if !self.gc_step() {
                return;
            }
        }
    }

    fn gc_step(&mut self) -> bool {
        self.gc_owners_being_deleted() || self.gc_dangling_dependents()
    }

    /// Owners being deleted with the `orphan` or `foregroundDeletion` finalizer.
    fn gc_owners_being_deleted(&mut self) -> bool {
        // Owners being deleted with `orphan`: strip references from dependents, drop the finalizer.
        let keys: Vec<ObjKey> = self.objects.keys().cloned().collect();
        for key in &keys {
            let Some(object) = self.objects.get(key).cloned() else {
                continue;
            };
            if object.pointer("/metadata/deletionTimestamp").is_none() {
                continue;
            }
            let uid = object
                .pointer("/metadata/uid")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_owned();
            let finals = finalizers(&object);
            if finals.iter().any(|f| f == ORPHAN) {
                for dep_key in &keys {
                    let Some(dep) = self.objects.get(dep_key).cloned() else {
                        continue;
                    };
                    if owner_uids(&dep).contains(&uid) {
                        let mut changed = dep.clone();
                        remove_owner(&mut changed, &uid);
                        let _ = self.internal_write(dep_key, dep, changed);
                    }
                }
                let mut changed = object.clone();
                set_finalizers(&mut changed, &without(&finals, ORPHAN));
                let _ = self.internal_write(key, object, changed);
                return true;
            }
            if finals.iter().any(|f| f == FOREGROUND) {
                let dependents: Vec<ObjKey> = keys
                    .iter()
                    .filter(|k| {
                        self.objects
                            .get(*k)
                            .is_some_and(|d| owner_uids(d).contains(&uid))
                    })
                    .cloned()
                    .collect();
                if dependents.is_empty() {
                    let mut changed = object.clone();
                    set_finalizers(&mut changed, &without(&finals, FOREGROUND));
                    let _ = self.internal_write(key, object, changed);
                    return true;
                }
                let mut progressed = false;
                for dep_key in dependents {
                    let dep = &self.objects[&dep_key];
                    if dep.pointer("/metadata/deletionTimestamp").is_none() {
                        let (t, ns, name) = dep_key.clone();
                        let _ = self.delete(
                            t,
                            &ns,
                            &name,
                            &DeleteOptions {
                                propagation: Some(Propagation::Foreground),
                                ..DeleteOptions::default()
                            },
                        );
                        progressed = true;
                    }
                }
                if progressed {
                    return true;
                }
            }
        }
        false
    }

    /// Deletes dependents all of whose owners are gone.
    fn gc_dangling_dependents(&mut self) -> bool {
        let live_uids: std::collections::HashSet<String> = self
            .objects
            .values()
            .filter_map(|o| {
                o.pointer("/metadata/uid")
                    .and_then(Value::as_str)
                    .map(str::to_owned)
            })
            .collect();
        let keys: Vec<ObjKey> = self.objects.keys().cloned().collect();
        for key in &keys {
            let Some(object) = self.objects.get(key) else {
                continue;
            };
            let owners = owner_uids(object);
            if owners.is_empty()
                || owners.iter().any(|u| live_uids.contains(u))
                || object.pointer("/metadata/deletionTimestamp").is_some()
            {
                continue;
            }
            let (t, ns, name) = key.clone();
            let _ = self.delete(
                t,
                &ns,
                &name,
                &DeleteOptions {
                    propagation: Some(Propagation::Background),
                    ..DeleteOptions::default()
                },
            );
            return true;
        }
        false
    }

    /// A write by a controller inside the "cluster" (garbage collector, Job controller).
    pub(crate) fn internal_write(
        &mut self,
        key: &ObjKey,
        current: Value,
        proposed: Value,
    ) -> Result<Value, ApiError> {
        let (t, ns, name) = key.clone();
        self.commit_update(t, &ns, &name, current, proposed)
    }

    /// Replaces an object's status as a controller would (no precondition).
    pub(crate) fn set_status(
        &mut self,
        t: TypeId,
        ns: &str,
        name: &str,
        status: Value,
    ) -> Result<Value, ApiError> {
        let current = self.get(t, ns, name)?;
        let mut proposed = current.clone();
        set_or_remove(&mut proposed, "status", Some(status));
        self.internal_write(&(t, ns.to_owned(), name.to_owned()), current, proposed)
    }
}

fn check_body(rt: &ResourceType, body: &Value) -> Result<(), ApiError> {
    if !body.is_object() {
        return Err(ApiError::bad_request(
            "the body of the request was not a JSON object",
        ));
    }
    check_kind(rt, body)
}

fn check_kind(rt: &ResourceType, body: &Value) -> Result<(), ApiError> {
    let kind = body.get("kind").and_then(Value::as_str);
    let api_version = body.get("apiVersion").and_then(Value::as_str);
    if kind.is_some_and(|k| k != rt.kind) || api_version.is_some_and(|v| v != rt.api_version()) {
        return Err(ApiError::bad_request(format!(
            "the API version in the data ({}) does not match the expected API version ({})",
            api_version.unwrap_or(""),
            rt.api_version()
        )));
    }
    Ok(())
}

fn require_field_manager(field_manager: Option<&str>) -> Result<(), ApiError> {
    if field_manager.is_none_or(str::is_empty) {
        return Err(ApiError::new(
            422,
            "Invalid",
            "PatchOptions.meta.k8s.io \"\" is invalid: fieldManager: Required value: is required for apply patch",
        ));
    }
    Ok(())
}

fn parse_apply_body(body: &[u8]) -> Result<Value, ApiError> {
    serde_yaml::from_slice::<Value>(body)
        .map_err(|e| ApiError::bad_request(format!("error decoding YAML: {e}")))
}

/// Schema defaults and CEL rules of CRD-backed types, as the apiserver applies them.
fn apply_schema(
    rt: &ResourceType,
    name: &str,
    object: Value,
    old: Option<&Value>,
) -> Result<Value, ApiError> {
    let Some(schema) = &rt.schema else {
        return Ok(object);
    };
    let defaulted = kube::core::cel::apply_defaults(schema, &object);
    if let Err(errors) = kube::core::cel::Validator::new().validate(schema, &defaulted, old) {
        let detail = errors
            .as_slice()
            .iter()
            .map(|e| format!("{}: Invalid value: {}", e.field_path, e.message))
            .collect::<Vec<_>>()
            .join(", ");
        return Err(ApiError::invalid(rt, name, detail));
    }
    Ok(defaulted)
}

/// JSON patch `test` of `null` against a missing path succeeds on a real apiserver (its patch
/// library treats missing as null); kube's finalizer helper relies on it.
fn drop_null_tests_of_missing_paths(current: &Value, ops: Vec<Value>) -> Vec<Value> {
    ops.into_iter()
        .filter(|op| {
            let is_null_test = op.get("op").and_then(Value::as_str) == Some("test")
                && op.get("value").is_some_and(Value::is_null);
            let path = op.get("path").and_then(Value::as_str).unwrap_or("");
            !(is_null_test && current.pointer(path).is_none())
        })
        .collect()
}

fn encode_continue(rv: u64, ns: &str, _next_name: &str, items: &[Value]) -> String {
    use base64::Engine as _;
    // The token names the last item returned; the next page starts after it.
    let last = items.last();
    let last_ns = last
        .and_then(|o| o.pointer("/metadata/namespace"))
        .and_then(Value::as_str)
        .unwrap_or(ns);
    let last_name = last
        .and_then(|o| o.pointer("/metadata/name"))
        .and_then(Value::as_str)
        .unwrap_or("");
    base64::engine::general_purpose::STANDARD.encode(format!("{rv}\u{0}{last_ns}\u{0}{last_name}"))
}

pub(crate) fn metadata_mut(object: &mut Value) -> &mut Map<String, Value> {
    if !object.get("metadata").is_some_and(Value::is_object) {
        object["metadata"] = json!({});
    }
    match object.get_mut("metadata") {
        Some(Value::Object(map)) => map,
        // Just made sure it is an object.
        _ => unreachable!("metadata is an object"),
    }
}

fn set_or_remove(object: &mut Value, field: &str, value: Option<Value>) {
    if let Some(map) = object.as_object_mut() {
        match value {
            Some(v) => map.insert(field.to_owned(), v),
            None => map.remove(field),
        };
    }
}

fn without_meta_and_status(object: &Value) -> Value {
    let mut copy = object.clone();
    if let Some(map) = copy.as_object_mut() {
        map.remove("metadata");
        map.remove("status");
    }
    copy
}

pub(crate) fn finalizers(object: &Value) -> Vec<String> {
    object
        .pointer("/metadata/finalizers")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(Value::as_str)
                .map(str::to_owned)
                .collect()
        })
        .unwrap_or_default()
}

fn set_finalizers(object: &mut Value, finals: &[String]) {
    let meta = metadata_mut(object);
    if finals.is_empty() {
        meta.remove("finalizers");
    } else {
        meta.insert("finalizers".into(), json!(finals));
    }
}

fn without(list: &[String], item: &str) -> Vec<String> {
    list.iter().filter(|f| *f != item).cloned().collect()
}

fn push_unique(list: &mut Vec<String>, item: &str) {
    if !list.iter().any(|f| f == item) {
        list.push(item.to_owned());
    }
}

fn owner_uids(object: &Value) -> Vec<String> {
    object
        .pointer("/metadata/ownerReferences")
        .and_then(Value::as_array)
        .map(|refs| {
            refs.iter()
                .filter_map(|r| r.get("uid").and_then(Value::as_str).map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

fn remove_owner(object: &mut Value, uid: &str) {
    let meta = metadata_mut(object);
    if let Some(Value::Array(refs)) = meta.get_mut("ownerReferences") {
        refs.retain(|r| r.get("uid").and_then(Value::as_str) != Some(uid));
        if refs.is_empty() {
            meta.remove("ownerReferences");
        }
    }
}

fn is_dns_subdomain(name: &str) -> bool {
    name.len() <= 253
        && name.split('.').all(|label| {
            let b = label.as_bytes();
            !b.is_empty()
                && b.iter()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-')
                && b[0] != b'-'
                && b[b.len() - 1] != b'-'
        })
}

/// Current time as the apiserver writes it (RFC 3339, seconds).
pub(crate) fn now() -> String {
    k8s_openapi::jiff::Timestamp::now()
        .round(k8s_openapi::jiff::Unit::Second)
        .map_or_else(
            |_| "1970-01-01T00:00:00Z".to_owned(),
            |t| t.strftime("%Y-%m-%dT%H:%M:%SZ").to_string(),
        )
}
