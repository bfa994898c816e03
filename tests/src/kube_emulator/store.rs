//! The emulator's state and the semantics of every write, independent of HTTP: objects, the
//! resourceVersion counter, the event history watches read from, consistent list snapshots for
//! paginated lists, and the write pipeline every verb goes through, in the apiserver's order:
//!
//! 1. decode: unknown fields pruned (warned about, or refused with `fieldValidation=Strict`),
//!    nulls dropped where the type has none, wrong JSON types refused;
//! 2. defaults (CRD schema defaults, built-in defaults);
//! 3. field ownership (`metadata.managedFields`) for the write's manager;
//! 4. what the registry fills in (name from `generateName`, uid, timestamps, generation, the
//!    Job selector, Secret `stringData`) and what the subresource resets;
//! 5. validation: metadata, the type's rules, and for custom resources the OpenAPI schema then
//!    the CEL rules;
//! 6. storage, unless `dryRun=All`; then the in-cluster controllers (garbage collector, TTL, Job
//!    deadlines) run, unless a test holds them.
//!
//! All methods are synchronous and run under one lock, so every write is atomic and totally
//! ordered, like etcd's revisions.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::Arc;

use serde_json::{Map, Value, json};

use super::builtin;
use super::error::{ApiError, FieldError};
use super::managed::{self, Managed, Operation, Scope, Write, Writer};
use super::meta;
use super::resource::{Propagation, ResourceType};
use super::schema;
use super::selector::{FieldSelector, LabelSelector};

/// Index of a registered resource type.
pub(crate) type TypeId = usize;

/// Key of a stored object: type, namespace ("" when cluster-scoped), name.
pub(crate) type ObjKey = (TypeId, String, String);

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
    /// Serve the request (its effect stays) and answer with the error instead of the result.
    pub after: bool,
}

/// `fieldValidation`: what to do with unknown fields.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) enum FieldValidation {
    /// Drop them silently.
    Ignore,
    /// Drop them and say so in a `Warning` header (the default).
    #[default]
    Warn,
    /// Refuse the request (400).
    Strict,
}

/// What a write request carries besides its body.
// The flags are the request's own query parameters, each independent of the others.
#[allow(clippy::struct_excessive_bools)]
#[derive(Clone, Debug, Default)]
pub(crate) struct WriteContext {
    /// `fieldManager`, or the default one derived from the User-Agent.
    pub manager: String,
    /// Whether `fieldManager` was given (apply needs it).
    pub explicit_manager: bool,
    pub validation: FieldValidation,
    pub dry_run: bool,
    pub force: bool,
    /// `Warning` headers to send back.
    pub warnings: Vec<String>,
    /// Set when the write created the object.
    pub created: bool,
    /// Whether the request named `force` at all (only apply may).
    pub force_given: bool,
}

/// A PATCH as received.
#[derive(Clone, Copy, Debug)]
pub(crate) struct PatchRequest<'a> {
    pub content_type: &'a str,
    pub body: &'a [u8],
    /// Whether it targets the status subresource.
    pub status: bool,
}

/// How a delete was asked for.
#[derive(Clone, Debug, Default)]
pub(crate) struct DeleteOptions {
    pub propagation: Option<Propagation>,
    pub precondition_uid: Option<String>,
    pub precondition_rv: Option<String>,
    pub dry_run: bool,
}

/// An in-cluster controller the emulator plays.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Controller {
    /// The garbage collector: orphaning, foreground deletion, dependents of deleted owners.
    GarbageCollector,
    /// The TTL-after-finished controller: deletes finished Jobs whose TTL has passed.
    TtlAfterFinished,
    /// The part of the Job controller that fails Jobs past `activeDeadlineSeconds`.
    JobDeadline,
    /// The apiextensions naming and establishing controllers: a CustomResourceDefinition's
    /// names are accepted and it becomes `Established`.
    CrdEstablishing,
}

/// A snapshot of one type's objects for a paginated list (what etcd serves at a revision).
#[derive(Debug)]
struct Snapshot {
    rv: u64,
    objects: Arc<Vec<Value>>,
}

/// Snapshots kept for `continue` tokens before the oldest expire (410).
const SNAPSHOTS_KEPT: usize = 64;

/// The whole emulated cluster state.
#[derive(Debug)]
pub(crate) struct Store {
    pub types: Vec<ResourceType>,
    pub(super) objects: BTreeMap<ObjKey, Value>,
    events: VecDeque<LoggedEvent>,
    rv: u64,
    /// Watches and continue tokens from a resourceVersion below this get 410 Gone.
    floor: u64,
    history_limit: usize,
    uid_counter: u64,
    snapshots: BTreeMap<u64, Snapshot>,
    snapshot_counter: u64,
    /// How far the emulator's clock is ahead of the wall clock.
    pub clock_offset: std::time::Duration,
    /// Controllers a test holds, with how many holds each.
    pub held: BTreeMap<Controller, usize>,
    /// Set while controllers run, so their own writes do not start another round.
    pub(super) controllers_running: bool,
    pub failures: Vec<FailRule>,
    pub stalls: Vec<(u64, String)>,
    pub stall_counter: u64,
}

/// The manager recorded for writes by in-cluster controllers.
pub(super) const CONTROLLER_MANAGER: &str = "kube-controller-manager";

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
            snapshots: BTreeMap::new(),
            snapshot_counter: 0,
            clock_offset: std::time::Duration::ZERO,
            held: BTreeMap::new(),
            controllers_running: false,
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

    /// The type of an `apiVersion` and `kind` (owner references name their owners so).
    pub(super) fn type_of_kind(&self, api_version: &str, kind: &str) -> Option<TypeId> {
        self.types
            .iter()
            .position(|t| t.api_version() == api_version && t.kind == kind)
    }

    /// Drops the whole event history: every older resourceVersion becomes too old (410).
    pub(crate) fn compact(&mut self) {
        self.events.clear();
        self.snapshots.clear();
        self.floor = self.rv;
    }

    /// The emulator's time, as the apiserver writes timestamps (RFC 3339, seconds).
    pub(crate) fn now(&self) -> String {
        format_time(self.now_timestamp())
    }

    pub(super) fn now_timestamp(&self) -> k8s_openapi::jiff::Timestamp {
        let offset = k8s_openapi::jiff::SignedDuration::try_from(self.clock_offset)
            .unwrap_or(k8s_openapi::jiff::SignedDuration::ZERO);
        k8s_openapi::jiff::Timestamp::now()
            .checked_add(offset)
            .unwrap_or_else(|_| k8s_openapi::jiff::Timestamp::now())
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

    /// A list; with `limit`, the first page of a consistent snapshot whose later pages
    /// (`continue`) show the objects as they were at the first page's resourceVersion.
    pub(crate) fn list(
        &mut self,
        t: TypeId,
        ns: Option<&str>,
        labels: &LabelSelector,
        fields: &FieldSelector,
        limit: Option<usize>,
        continue_token: Option<&str>,
    ) -> Result<Value, ApiError> {
        if continue_token.is_none() && limit.is_none_or(|l| l == 0) {
            // One page: no snapshot to keep, so no copy of every object of the type (a list
            // per reconcile would otherwise cost a copy of the whole store).
            let items: Vec<Value> = self
                .objects_of(t, None)
                .into_iter()
                .filter(|object| {
                    ns.is_none_or(|ns| ns == text(object, "/metadata/namespace"))
                        && labels.matches(object)
                        && fields.matches(object)
                })
                .cloned()
                .collect();
            let rt = &self.types[t];
            return Ok(json!({
                "kind": format!("{}List", rt.kind),
                "apiVersion": rt.api_version(),
                "metadata": {"resourceVersion": self.rv.to_string()},
                "items": items,
            }));
        }
        let (rv, snapshot_id, objects, after) = if let Some(token) = continue_token {
            let (rv, id, ns_after, name_after) = self.decode_continue(token)?;
            let objects = Arc::clone(&self.snapshots[&id].objects);
            (rv, Some(id), objects, Some((ns_after, name_after)))
        } else {
            let all: Vec<Value> = self.objects_of(t, None).into_iter().cloned().collect();
            (self.rv, None, Arc::new(all), None)
        };
        let mut items = Vec::new();
        let mut more = false;
        for object in objects.iter() {
            let obj_ns = text(object, "/metadata/namespace");
            let obj_name = text(object, "/metadata/name");
            if ns.is_some_and(|ns| ns != obj_ns) {
                continue;
            }
            if let Some((a_ns, a_name)) = &after
                && (obj_ns, obj_name) <= (a_ns.as_str(), a_name.as_str())
            {
                continue;
            }
            if !labels.matches(object) || !fields.matches(object) {
                continue;
            }
            if limit.is_some_and(|l| l > 0 && items.len() == l) {
                more = true;
                break;
            }
            items.push(object.clone());
        }
        let mut metadata = json!({"resourceVersion": rv.to_string()});
        if more {
            let id = match snapshot_id {
                Some(id) => id,
                None => self.keep_snapshot(rv, objects),
            };
            metadata["continue"] = json!(encode_continue(rv, id, items.last()));
        }
        let rt = &self.types[t];
        Ok(json!({
            "kind": format!("{}List", rt.kind),
            "apiVersion": rt.api_version(),
            "metadata": metadata,
            "items": items,
        }))
    }

    fn keep_snapshot(&mut self, rv: u64, objects: Arc<Vec<Value>>) -> u64 {
        self.snapshot_counter += 1;
        let id = self.snapshot_counter;
        self.snapshots.insert(id, Snapshot { rv, objects });
        while self.snapshots.len() > SNAPSHOTS_KEPT {
            self.snapshots.pop_first();
        }
        id
    }

    fn decode_continue(&self, token: &str) -> Result<(u64, u64, String, String), ApiError> {
        use base64::Engine as _;
        let invalid = || ApiError::bad_request("continue key is not valid");
        let raw = base64::engine::general_purpose::STANDARD
            .decode(token)
            .ok()
            .and_then(|b| String::from_utf8(b).ok())
            .ok_or_else(invalid)?;
        let parts: Vec<&str> = raw.splitn(4, '\u{0}').collect();
        let [rv, id, ns, name] = parts.as_slice() else {
            return Err(invalid());
        };
        let rv: u64 = rv.parse().map_err(|_| invalid())?;
        let id: u64 = id.parse().map_err(|_| invalid())?;
        let expired = rv < self.floor || self.snapshots.get(&id).is_none_or(|s| s.rv != rv);
        if expired {
            return Err(ApiError::new(
                410,
                "Expired",
                "The provided continue parameter is too old to display a consistent list result. \
                 You can start a new list without the continue parameter.",
            ));
        }
        Ok((rv, id, (*ns).to_owned(), (*name).to_owned()))
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

    // ----- storage -----

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

    /// Stores a new or changed object with the next resourceVersion and logs the event.
    pub(super) fn store(&mut self, key: &ObjKey, mut object: Value, old: Option<Value>) -> Value {
        let rv = self.next_rv();
        metadata_mut(&mut object).insert("resourceVersion".into(), json!(rv.to_string()));
        self.objects.insert(key.clone(), object.clone());
        let kind = if old.is_some() {
            EventType::Modified
        } else {
            EventType::Added
        };
        self.record(key.0, kind, object.clone(), old);
        object
    }

    /// Removes an object for good, logging DELETED with its last state.
    pub(super) fn remove(&mut self, key: &ObjKey, last: Value) -> Value {
        let rv = self.next_rv();
        let mut gone = last;
        metadata_mut(&mut gone).insert("resourceVersion".into(), json!(rv.to_string()));
        self.objects.remove(key);
        self.record(key.0, EventType::Deleted, gone.clone(), None);
        gone
    }

    // ----- the write pipeline -----

    /// Decodes a body as an object of the type: duplicate owner references dropped (with the
    /// apiserver's warning), unknown fields and impossible nulls pruned (warned about or refused
    /// per `fieldValidation`), JSON types checked, and built-in objects normalised as their Go
    /// types store them.
    fn decode(
        rt: &ResourceType,
        mut object: Value,
        source: Source,
        ctx: &mut WriteContext,
    ) -> Result<Value, ApiError> {
        dedup_owner_references(&mut object, ctx);
        let mut unknown = Vec::new();
        schema::prune(&mut object, rt.structure.root(), "", &mut unknown);
        if !unknown.is_empty() {
            let described: Vec<String> = unknown
                .iter()
                .map(|f| format!("unknown field \"{f}\""))
                .collect();
            match ctx.validation {
                FieldValidation::Strict => {
                    return Err(ApiError::bad_request(format!(
                        "strict decoding error: {}",
                        described.join(", ")
                    )));
                }
                FieldValidation::Warn => ctx.warnings.extend(described),
                FieldValidation::Ignore => {}
            }
        }
        if !rt.is_custom() {
            let mut errors = Vec::new();
            schema::type_errors(&object, rt.structure.root(), "", &mut errors);
            if !errors.is_empty() {
                // A body that does not decode is a bad request; a patch whose result does not
                // decode is an invalid patch.
                if source == Source::Patch {
                    return Err(ApiError::invalid(
                        rt,
                        text(&object, "/metadata/name"),
                        &errors,
                    ));
                }
                let detail: Vec<String> = errors.iter().map(ToString::to_string).collect();
                return Err(ApiError::bad_request(format!(
                    "{} in version \"{}\" cannot be handled as a {}: {}",
                    rt.kind,
                    rt.version,
                    rt.kind,
                    detail.join(", ")
                )));
            }
            schema::normalize(&mut object, rt.structure.root());
        } else if let (Some(meta), Some(node)) = (
            object.get_mut("metadata"),
            rt.structure.root().field("metadata"),
        ) {
            // A custom resource's metadata goes through ObjectMeta too: `finalizers: []` and
            // `labels: {}` are not stored.
            schema::normalize(meta, node);
        }
        Ok(object)
    }

    /// Defaults set on decode (`creating`: the Job's labels are defaulted by its registry then).
    fn default(rt: &ResourceType, object: Value, creating: bool) -> Value {
        let mut object = match &rt.schema {
            Some(schema) => kube::core::cel::apply_defaults(schema, &object),
            None => object,
        };
        builtin::apply_defaults(rt.behaviour, &mut object, creating);
        object
    }

    /// Validation of a whole object (new or changed); `old` for updates.
    fn validate(
        rt: &ResourceType,
        object: &Value,
        old: Option<&Value>,
        status: bool,
        ctx: &mut WriteContext,
    ) -> Result<(), ApiError> {
        let name = text(object, "/metadata/name");
        let mut errors = Vec::new();
        if old.is_none() {
            errors.extend(builtin::name_errors(name));
        }
        meta::validate_object_meta(object, &mut errors);
        if let Some(old) = old {
            if old.pointer("/metadata/deletionTimestamp").is_some() {
                let before = finalizers(old);
                if finalizers(object).iter().any(|f| !before.contains(f)) {
                    errors.push(FieldError::forbidden(
                        "metadata.finalizers",
                        "no new finalizers can be added if the object is being deleted",
                    ));
                }
            }
            builtin::validate_update(rt.behaviour, old, object, status, &mut errors);
        } else {
            builtin::validate_create(rt.behaviour, object, &mut errors);
        }
        if rt.is_custom() {
            errors.extend(Store::custom_resource_errors(rt, object, old));
        }
        if !errors.is_empty() {
            return Err(ApiError::invalid(rt, name, &errors));
        }
        ctx.warnings.extend(meta::finalizer_warnings(object));
        Ok(())
    }

    /// A custom resource's schema errors, then its CEL rules' (skipped, with the apiserver's
    /// note, when a schema error blocks them: a wrong type, a missing required field, a value
    /// outside an enum, a value too long or a list too long).
    fn custom_resource_errors(
        rt: &ResourceType,
        object: &Value,
        old: Option<&Value>,
    ) -> Vec<FieldError> {
        let root = rt.structure.root();
        let mut errors = Vec::new();
        schema::type_errors(object, root, "", &mut errors);
        schema::validate(object, root, "", &mut errors);
        if errors.iter().any(FieldError::blocks_cel) {
            errors.push(FieldError::invalid(
                "<nil>",
                Value::Null,
                "some validation rules were not checked because the object was invalid; \
                 correct the existing errors to complete validation",
            ));
            return errors;
        }
        if let Some(schema) = &rt.schema
            && let Err(cel) = kube::core::cel::Validator::new().validate(schema, object, old)
        {
            errors.extend(cel.as_slice().iter().map(|e| {
                // Like the apiserver, the value shown is the schema type at the path.
                let pointer = format!("/{}", e.field_path.replace('.', "/"));
                let at = if e.field_path.is_empty() {
                    Some(object)
                } else {
                    object.pointer(&pointer)
                };
                let type_name = match at {
                    Some(Value::String(_)) => "string",
                    Some(Value::Number(_)) => "integer",
                    Some(Value::Bool(_)) => "boolean",
                    Some(Value::Array(_)) => "array",
                    _ => "object",
                };
                FieldError::invalid(e.field_path.clone(), json!(type_name), e.message.clone())
            }));
        }
        errors
    }

    fn scope(rt: &ResourceType, status: bool) -> Scope {
        Scope {
            status,
            has_status_subresource: rt.status_subresource,
            metadata_via_status: !rt.is_custom(),
            status_resets: builtin::status_resets(rt.behaviour),
        }
    }

    fn writer(ctx: &WriteContext, operation: Operation, status: bool) -> Writer {
        Writer {
            manager: ctx.manager.clone(),
            operation,
            subresource: status.then(|| "status".to_owned()),
        }
    }

    pub(crate) fn create(
        &mut self,
        t: TypeId,
        ns: &str,
        body: Value,
        ctx: &mut WriteContext,
    ) -> Result<Value, ApiError> {
        let rt = self.types[t].clone();
        check_body(&rt, &body)?;
        check_namespace(&rt, &body, ns)?;
        // Managed fields the body carries are kept (and the creator's added to them).
        let mut managed = Managed::requested(&body).unwrap_or_default();
        let raw = body.clone();
        let object = Store::decode(&rt, body, Source::Body, ctx)?;
        let mut object = Store::default(&rt, object, true);
        keep_given_template_labels(&rt, &raw, &mut object);
        self.name_object(t, ns, &mut object)?;
        let writer = Store::writer(ctx, Operation::Update, false);
        let (api_version, now) = (rt.api_version(), self.now());
        managed::update(
            &mut managed,
            &json!({}),
            &object,
            rt.structure.root(),
            Write {
                writer: &writer,
                scope: Store::scope(&rt, false),
                api_version: &api_version,
                now: &now,
            },
        );
        self.finish_create(t, ns, object, &managed, ctx)
    }

    /// The name from `metadata.name`, or `generateName` truncated to 58 characters plus five
    /// random ones; set before validation, so schema and CEL rules see it.
    fn name_object(&mut self, t: TypeId, ns: &str, object: &mut Value) -> Result<(), ApiError> {
        let rt = &self.types[t];
        if text(object, "/metadata/name").is_empty() {
            let prefix = text(object, "/metadata/generateName").to_owned();
            if prefix.is_empty() {
                return Err(ApiError::invalid(
                    rt,
                    "",
                    &[FieldError::required(
                        "metadata.name",
                        "name or generateName is required",
                    )],
                ));
            }
            let prefix: String = prefix
                .chars()
                .take(meta::MAX_GENERATE_NAME_PREFIX)
                .collect();
            let name = self.generate_name(t, ns, &prefix);
            metadata_mut(object).insert("name".into(), json!(name));
        }
        Ok(())
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

    /// The create path after decoding, defaults and ownership: registry fields, validation,
    /// storage.
    fn finish_create(
        &mut self,
        t: TypeId,
        ns: &str,
        mut object: Value,
        managed: &Managed,
        ctx: &mut WriteContext,
    ) -> Result<Value, ApiError> {
        let rt = self.types[t].clone();
        let name = text(&object, "/metadata/name").to_owned();
        let had_rv = !text(&object, "/metadata/resourceVersion").is_empty();
        self.uid_counter += 1;
        let uid = format!("00000000-0000-4000-8000-{:012x}", self.uid_counter);
        {
            let now = self.now();
            let meta = metadata_mut(&mut object);
            if rt.namespaced {
                meta.insert("namespace".into(), json!(ns));
            } else {
                meta.remove("namespace");
            }
            meta.insert("uid".into(), json!(uid));
            meta.insert("creationTimestamp".into(), json!(now));
            if rt.has_generation {
                meta.insert("generation".into(), json!(1));
            } else {
                meta.remove("generation");
            }
            for system in [
                "deletionTimestamp",
                "deletionGracePeriodSeconds",
                "resourceVersion",
                "managedFields",
                "selfLink",
            ] {
                meta.remove(system);
            }
        }
        managed.write(&mut object);
        if let Some(map) = object.as_object_mut() {
            // Every object the server returns names its type.
            map.insert("apiVersion".into(), json!(rt.api_version()));
            map.insert("kind".into(), json!(rt.kind));
            if rt.status_subresource {
                map.remove("status");
            }
        }
        builtin::prepare_create(rt.behaviour, &mut object);
        Store::validate(&rt, &object, None, false, ctx)?;
        let key = (t, ns.to_owned(), name.clone());
        if self.objects.contains_key(&key) {
            return Err(ApiError::already_exists(&rt, &name));
        }
        if ctx.dry_run {
            ctx.created = true;
            return Ok(object);
        }
        if had_rv {
            // What etcd storage answers; not a Status the registry chose, hence no reason.
            return Err(ApiError::new(
                500,
                "",
                "resourceVersion should not be set on objects to be created",
            ));
        }
        let stored = self.store(&key, object, None);
        ctx.created = true;
        self.run_controllers();
        Ok(stored)
    }

    /// Replaces an object (PUT), or only its status when `status` is set.
    pub(crate) fn update(
        &mut self,
        t: TypeId,
        ns: &str,
        name: &str,
        body: Value,
        status: bool,
        ctx: &mut WriteContext,
    ) -> Result<Value, ApiError> {
        let rt = self.types[t].clone();
        check_body(&rt, &body)?;
        check_name(&body, name)?;
        check_namespace(&rt, &body, ns)?;
        let current = self.get(t, ns, name)?;
        let rv = text(&body, "/metadata/resourceVersion");
        if rv.is_empty() && !rt.unconditional_update {
            return Err(resource_version_required(&rt, name));
        }
        if !rv.is_empty() && rv != text(&current, "/metadata/resourceVersion") {
            return Err(ApiError::conflict(&rt, name));
        }
        // A uid in a replacement is a precondition, as in a DELETE.
        let uid = text(&body, "/metadata/uid");
        let current_uid = text(&current, "/metadata/uid");
        if !uid.is_empty() && uid != current_uid {
            return Err(ApiError::new(
                409,
                "Conflict",
                format!(
                    "Operation cannot be fulfilled on {} \"{name}\": Precondition failed: UID in precondition: {uid}, UID in object meta: {current_uid}",
                    rt.qualified_plural()
                ),
            ));
        }
        let writer = Store::writer(ctx, Operation::Update, status);
        let requested = if status {
            None
        } else {
            Managed::requested(&body)
        };
        let write = Change {
            status,
            source: Source::Body,
            ownership: Ownership::Update { writer, requested },
        };
        self.commit(
            &(t, ns.to_owned(), name.to_owned()),
            current,
            body,
            write,
            ctx,
        )
    }

    /// Applies a patch of the given content type to an object (or its status).
    pub(crate) fn patch(
        &mut self,
        t: TypeId,
        ns: &str,
        name: &str,
        request: &PatchRequest<'_>,
        ctx: &mut WriteContext,
    ) -> Result<Value, ApiError> {
        let rt = self.types[t].clone();
        let content_type = request.content_type.split(';').next().unwrap_or("").trim();
        if content_type == "application/apply-patch+yaml" {
            return self.apply(t, ns, name, request, ctx);
        }
        if ctx.force_given {
            return Err(ApiError::new(
                422,
                "Invalid",
                "PatchOptions.meta.k8s.io \"\" is invalid: force: Forbidden: may not be specified for non-apply patch",
            ));
        }
        let current = self.get(t, ns, name)?;
        let decode_error =
            |e: serde_json::Error| ApiError::bad_request(format!("error decoding patch: {e}"));
        let patched = match content_type {
            "application/json-patch+json" => {
                let ops: Vec<Value> = serde_json::from_slice(request.body).map_err(decode_error)?;
                json_patch_in_sequence(&current, ops)?
            }
            "application/merge-patch+json" => {
                let patch: Value = serde_json::from_slice(request.body).map_err(decode_error)?;
                let mut patched = current.clone();
                json_patch::merge(&mut patched, &patch);
                patched
            }
            "application/strategic-merge-patch+json" if !rt.is_custom() => {
                let patch: Value = serde_json::from_slice(request.body).map_err(decode_error)?;
                managed::strategic_merge(&current, &patch, Some(rt.structure.root()))
            }
            other => {
                let accepted = if rt.is_custom() {
                    "application/json-patch+json, application/merge-patch+json, application/apply-patch+yaml"
                } else {
                    "application/json-patch+json, application/merge-patch+json, application/strategic-merge-patch+json, application/apply-patch+yaml"
                };
                return Err(ApiError::new(
                    415,
                    "UnsupportedMediaType",
                    format!(
                        "the body of the request was in an unknown format - accepted media types include: {accepted}; got {other:?}"
                    ),
                ));
            }
        };
        if !patched.is_object() {
            return Err(ApiError::bad_request(
                "the patched object is not a JSON object",
            ));
        }
        check_kind(&rt, &patched)?;
        // A patch may not rename or move the object.
        check_name(&patched, name)?;
        check_namespace(&rt, &patched, ns)?;
        // A resourceVersion in the patch is a precondition; none at all is an unconditional
        // update, which custom resources and Leases refuse.
        let patched_rv = text(&patched, "/metadata/resourceVersion");
        if patched_rv.is_empty() && !rt.unconditional_update {
            return Err(resource_version_required(&rt, name));
        }
        if !patched_rv.is_empty() && patched_rv != text(&current, "/metadata/resourceVersion") {
            return Err(ApiError::conflict(&rt, name));
        }
        let writer = Store::writer(ctx, Operation::Update, request.status);
        let requested = if request.status {
            None
        } else {
            Managed::requested(&patched)
        };
        let write = Change {
            status: request.status,
            source: Source::Patch,
            ownership: Ownership::Update { writer, requested },
        };
        self.commit(
            &(t, ns.to_owned(), name.to_owned()),
            current,
            patched,
            write,
            ctx,
        )
    }

    /// Server-side apply: creates what does not exist (main resource only), merges by the
    /// schema, enforces ownership.
    fn apply(
        &mut self,
        t: TypeId,
        ns: &str,
        name: &str,
        request: &PatchRequest<'_>,
        ctx: &mut WriteContext,
    ) -> Result<Value, ApiError> {
        let rt = self.types[t].clone();
        if !ctx.explicit_manager || ctx.manager.is_empty() {
            return Err(ApiError::new(
                422,
                "Invalid",
                "PatchOptions.meta.k8s.io \"\" is invalid: fieldManager: Required value: is required for apply patch",
            ));
        }
        let config: Value = serde_yaml::from_slice(request.body)
            .map_err(|e| ApiError::bad_request(format!("error decoding YAML: {e}")))?;
        check_apply_config(&rt, &config)?;
        if !text(&config, "/metadata/name").is_empty() {
            check_name(&config, name)?;
        }
        check_namespace(&rt, &config, ns)?;
        check_typed_config(&rt, &config, ns, name)?;
        let current = self.get(t, ns, name).ok();
        if current.is_none() && request.status {
            return Err(ApiError::not_found(&rt, name));
        }
        if current.is_none() {
            // An apply that would create: the apiserver's own checks for a missing object.
            let uid = text(&config, "/metadata/uid");
            if !uid.is_empty() {
                return Err(ApiError::new(
                    409,
                    "Conflict",
                    format!(
                        "Operation cannot be fulfilled on {} \"{name}\": uid mismatch: the provided object specified uid {uid}, and no existing object was found",
                        rt.qualified_plural()
                    ),
                ));
            }
            check_name(&config, name)?;
        }
        let rv = text(&config, "/metadata/resourceVersion");
        if !rv.is_empty()
            && current
                .as_ref()
                .is_none_or(|c| text(c, "/metadata/resourceVersion") != rv)
        {
            return Err(ApiError::conflict(&rt, name));
        }
        let live = current.clone().unwrap_or_else(
            || json!({"apiVersion": rt.api_version(), "kind": rt.kind, "metadata": {"name": name}}),
        );
        let config = reset_config(config, &rt, request.status);
        let writer = Store::writer(ctx, Operation::Apply, request.status);
        let (api_version, now) = (rt.api_version(), self.now());
        let applied = managed::apply(
            &live,
            &config,
            &Managed::read(&live),
            rt.structure.root(),
            Write {
                writer: &writer,
                scope: Store::scope(&rt, request.status),
                api_version: &api_version,
                now: &now,
            },
            ctx.force,
        )?;
        match current {
            None => {
                let object = Store::decode(&rt, applied.object, Source::Body, ctx)?;
                let mut object = Store::default(&rt, object, true);
                keep_given_template_labels(&rt, &config, &mut object);
                self.finish_create(t, ns, object, &applied.managed, ctx)
            }
            Some(current) => {
                let write = Change {
                    status: request.status,
                    source: Source::Body,
                    ownership: Ownership::Applied(applied.managed),
                };
                let key = (t, ns.to_owned(), name.to_owned());
                self.commit(&key, current, applied.object, write, ctx)
            }
        }
    }

    /// The update path shared by PUT, patches and apply: decode, defaults, subresource reset,
    /// ownership, registry rules, validation, generation, storage.
    fn commit(
        &mut self,
        key: &ObjKey,
        current: Value,
        proposed: Value,
        change: Change,
        ctx: &mut WriteContext,
    ) -> Result<Value, ApiError> {
        let (t, name) = (key.0, key.2.as_str());
        let rt = self.types[t].clone();
        let Change {
            status,
            source,
            ownership,
        } = change;
        let proposed = Store::decode(&rt, proposed, source, ctx)?;
        let proposed = Store::default(&rt, proposed, false);
        Store::check_system_metadata(&rt, name, &current, &proposed)?;
        let mut proposed = if status && rt.is_custom() {
            // A custom resource's status strategy keeps everything but `.status`.
            let mut merged = current.clone();
            set_or_remove(&mut merged, "status", proposed.get("status").cloned());
            merged
        } else if status {
            // A built-in type's status strategy resets `.spec` and what else its type says.
            let mut merged = proposed;
            for pointer in builtin::status_resets(rt.behaviour) {
                set_pointer_from(&mut merged, &current, pointer);
            }
            merged
        } else {
            let mut merged = proposed;
            if rt.status_subresource {
                set_or_remove(&mut merged, "status", current.get("status").cloned());
            }
            merged
        };
        for field in [
            "name",
            "namespace",
            "uid",
            "creationTimestamp",
            "deletionTimestamp",
            "deletionGracePeriodSeconds",
            "generation",
            "resourceVersion",
            "managedFields",
        ] {
            let value = current.pointer(&format!("/metadata/{field}")).cloned();
            set_or_remove_meta(&mut proposed, field, value);
        }
        if !status {
            builtin::prepare_update(rt.behaviour, &mut proposed);
        }
        let managed = match ownership {
            Ownership::Update { writer, requested } => {
                let mut managed = requested.unwrap_or_else(|| Managed::read(&current));
                // Objects without managed fields stay untracked until their first apply, as
                // the apiserver's skip-non-applied manager has it.
                if !managed.entries.is_empty() {
                    let (api_version, now) = (rt.api_version(), self.now());
                    managed::update(
                        &mut managed,
                        &current,
                        &proposed,
                        rt.structure.root(),
                        Write {
                            writer: &writer,
                            scope: Store::scope(&rt, status),
                            api_version: &api_version,
                            now: &now,
                        },
                    );
                }
                managed
            }
            Ownership::Applied(managed) => managed,
        };
        managed.write(&mut proposed);
        Store::validate(&rt, &proposed, Some(&current), status, ctx)?;
        if rt.has_generation
            && without_meta_and_status(&current) != without_meta_and_status(&proposed)
        {
            let generation = current
                .pointer("/metadata/generation")
                .and_then(Value::as_i64)
                .unwrap_or(1);
            metadata_mut(&mut proposed).insert("generation".into(), json!(generation + 1));
        }
        if proposed == current || ctx.dry_run {
            // A no-op write changes nothing and emits no event, as in a real cluster.
            return Ok(if proposed == current {
                current
            } else {
                proposed
            });
        }
        let stored = if current.pointer("/metadata/deletionTimestamp").is_some()
            && finalizers(&proposed).is_empty()
        {
            // The update that removes the last finalizer is never stored: the object is deleted
            // as it was last stored (finalizer still listed), with the deletion's version.
            self.remove(key, current)
        } else {
            self.store(key, proposed, Some(current))
        };
        self.run_controllers();
        Ok(stored)
    }

    /// Metadata a write may not change: the uid, and the deletion timestamp and grace period
    /// (only a DELETE sets them).
    fn check_system_metadata(
        rt: &ResourceType,
        name: &str,
        current: &Value,
        proposed: &Value,
    ) -> Result<(), ApiError> {
        let mut errors = Vec::new();
        let uid = text(proposed, "/metadata/uid");
        if !uid.is_empty() && uid != text(current, "/metadata/uid") {
            errors.push(FieldError::immutable("metadata.uid", json!(uid)));
        }
        for field in ["deletionTimestamp", "deletionGracePeriodSeconds"] {
            let pointer = format!("/metadata/{field}");
            if current.pointer(&pointer).is_none()
                && let Some(value) = proposed.pointer(&pointer)
            {
                errors.push(FieldError::invalid(
                    format!("metadata.{field}"),
                    value.clone(),
                    "field is immutable; may only be changed via deletion",
                ));
            }
        }
        if errors.is_empty() {
            Ok(())
        } else {
            Err(ApiError::invalid(rt, name, &errors))
        }
    }

    /// A write by a controller inside the cluster (garbage collector, Job controller): an
    /// ordinary update by `kube-controller-manager`, validated like any other.
    pub(crate) fn controller_write(
        &mut self,
        key: &ObjKey,
        proposed: Value,
        status: bool,
    ) -> Result<Value, ApiError> {
        let (t, ns, name) = key.clone();
        let current = self.get(t, &ns, &name)?;
        let mut ctx = WriteContext {
            manager: CONTROLLER_MANAGER.to_owned(),
            explicit_manager: true,
            ..WriteContext::default()
        };
        let change = Change {
            status,
            source: Source::Body,
            ownership: Ownership::Update {
                writer: Store::writer(&ctx, Operation::Update, status),
                requested: None,
            },
        };
        self.commit(key, current, proposed, change, &mut ctx)
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
        let mut proposed = current;
        set_or_remove(&mut proposed, "status", Some(status));
        let key = (t, ns.to_owned(), name.to_owned());
        let status_subresource = self.types[t].status_subresource;
        self.controller_write(&key, proposed, status_subresource)
    }
}

/// Where a body being decoded came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Source {
    /// Sent whole (POST, PUT) or produced by apply.
    Body,
    /// The result of a JSON, merge or strategic merge patch.
    Patch,
}

/// One update: through which part of the object, from what source, with what ownership.
struct Change {
    status: bool,
    source: Source,
    ownership: Ownership,
}

/// Who owns what after a write.
enum Ownership {
    /// An ordinary write by this writer; `requested` are managed fields the body asks for
    /// (a reset, or entries of its own), instead of the live ones.
    Update {
        writer: Writer,
        requested: Option<Managed>,
    },
    /// Apply computed the new ownership.
    Applied(Managed),
}

fn text<'v>(value: &'v Value, pointer: &str) -> &'v str {
    value.pointer(pointer).and_then(Value::as_str).unwrap_or("")
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

/// An applied configuration names its type in full and carries no managed fields.
fn check_apply_config(rt: &ResourceType, config: &Value) -> Result<(), ApiError> {
    if !config.is_object() {
        return Err(ApiError::bad_request(
            "error decoding YAML: the applied configuration is not an object",
        ));
    }
    let api_version = text(config, "/apiVersion");
    if api_version != rt.api_version() {
        return Err(ApiError::bad_request(format!(
            "Incorrect version specified in apply patch. Specified patch version: {api_version}, expected: {}",
            rt.api_version()
        )));
    }
    let kind = text(config, "/kind");
    if kind.is_empty() {
        return Err(ApiError::bad_request(format!(
            "Object 'Kind' is missing in '{config}'"
        )));
    }
    if kind != rt.kind {
        return Err(ApiError::bad_request(format!(
            "Incorrect kind specified in apply patch. Specified patch kind: {kind}, expected: {}",
            rt.kind
        )));
    }
    if config
        .pointer("/metadata/managedFields")
        .is_some_and(|v| !v.is_null())
    {
        return Err(ApiError::bad_request("metadata.managedFields must be nil"));
    }
    Ok(())
}

/// The object's name must be the URL's (an object without one does not match either).
fn check_name(body: &Value, name: &str) -> Result<(), ApiError> {
    let body_name = text(body, "/metadata/name");
    if body_name != name {
        return Err(ApiError::bad_request(format!(
            "the name of the object ({body_name}) does not match the name on the URL ({name})"
        )));
    }
    Ok(())
}

fn check_namespace(rt: &ResourceType, body: &Value, ns: &str) -> Result<(), ApiError> {
    let body_ns = text(body, "/metadata/namespace");
    if rt.namespaced && !body_ns.is_empty() && body_ns != ns {
        return Err(ApiError::bad_request(
            "the namespace of the provided object does not match the namespace sent on the request",
        ));
    }
    Ok(())
}

/// 422 for an update without a resourceVersion where the type allows none.
fn resource_version_required(rt: &ResourceType, name: &str) -> ApiError {
    ApiError::invalid(
        rt,
        name,
        &[FieldError::invalid(
            "metadata.resourceVersion",
            json!("0x0"),
            "must be specified for an update",
        )],
    )
}

/// An applied configuration must fit the type's schema: structured-merge-diff refuses unknown
/// fields and wrong types before merging, whatever `fieldValidation` says, and the apiserver
/// answers with that error as an internal one (500).
fn check_typed_config(
    rt: &ResourceType,
    config: &Value,
    ns: &str,
    name: &str,
) -> Result<(), ApiError> {
    let mut pruned = config.clone();
    let mut unknown = Vec::new();
    schema::prune(&mut pruned, rt.structure.root(), "", &mut unknown);
    let mut problems: Vec<String> = unknown
        .iter()
        .map(|f| format!(".{f}: field not declared in schema"))
        .collect();
    // Its typed values know only strings, numbers, booleans, lists and maps: formats and
    // integer-ness are checked later, by validation (422).
    let mut errors = Vec::new();
    schema::kind_errors(&pruned, rt.structure.root(), "", &mut errors);
    problems.extend(errors.iter().map(|e| format!(".{}: {}", e.field, e.detail)));
    let gvk = format!("{}/{}, Kind={}", rt.group, rt.version, rt.kind);
    if !problems.is_empty() {
        return Err(ApiError::internal_plain(format!(
            "failed to create typed patch object ({gvk} {ns}/{name}): {}",
            problems.join(", ")
        )));
    }
    // A built-in type's merged object is then converted to its Go type: a value that does not
    // convert (a bad quantity or date, 1.5 for an integer) fails that, again as a plain error.
    if !rt.is_custom() {
        let mut errors = Vec::new();
        schema::type_errors(&pruned, rt.structure.root(), "", &mut errors);
        if let Some(first) = errors.first() {
            return Err(ApiError::internal_plain(format!(
                "failed to convert new object ({ns}/{name}; {gvk}) to proper version ({}): {first}",
                rt.api_version()
            )));
        }
    }
    Ok(())
}

/// Go decodes a Job template's `labels: {}` to a non-nil empty map, which the Job's defaulting
/// then shares (so the generated labels reach the Job too): a template given empty labels counts
/// as labelled, though normalisation dropped the empty map.
fn keep_given_template_labels(rt: &ResourceType, raw: &Value, object: &mut Value) {
    let given = raw
        .pointer("/spec/template/metadata/labels")
        .is_some_and(Value::is_object);
    if rt.behaviour != builtin::Behaviour::Job
        || !given
        || object.pointer("/spec/template/metadata/labels").is_some()
    {
        return;
    }
    if let Some(template) = object
        .pointer_mut("/spec/template")
        .and_then(Value::as_object_mut)
    {
        let meta = template.entry("metadata").or_insert_with(|| json!({}));
        if let Some(meta) = meta.as_object_mut() {
            meta.insert("labels".into(), json!({}));
        }
    }
}

/// Duplicate owner references (same uid) are dropped, with the apiserver's warning.
fn dedup_owner_references(object: &mut Value, ctx: &mut WriteContext) {
    let Some(Value::Array(refs)) = object.pointer_mut("/metadata/ownerReferences") else {
        return;
    };
    let mut seen: Vec<String> = Vec::new();
    let mut duplicates: Vec<String> = Vec::new();
    refs.retain(|r| {
        let uid = r
            .get("uid")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_owned();
        if seen.contains(&uid) {
            if !duplicates.contains(&uid) {
                duplicates.push(uid);
            }
            false
        } else {
            seen.push(uid);
            true
        }
    });
    if !duplicates.is_empty() {
        ctx.warnings.push(format!(
            ".metadata.ownerReferences contains duplicate entries; API server dedups owner references in 1.20+, and may reject such requests as early as 1.24; please fix your requests. Duplicate UIDs found in ownerReferences: [{}]",
            duplicates.join(" ")
        ));
    }
}

/// What an apply through a subresource may set: only `.status` through `/status`, everything
/// but `.status` through the main resource of a type with a status subresource.
fn reset_config(mut config: Value, rt: &ResourceType, status: bool) -> Value {
    let Some(map) = config.as_object_mut() else {
        return config;
    };
    if status && rt.is_custom() {
        map.retain(|k, _| matches!(k.as_str(), "apiVersion" | "kind" | "metadata" | "status"));
        if let Some(Value::Object(meta)) = map.get_mut("metadata") {
            meta.retain(|k, _| k == "name" || k == "namespace" || k == "resourceVersion");
        }
    } else if status {
        map.remove("spec");
    } else if rt.status_subresource {
        map.remove("status");
    }
    config
}

/// JSON patch operations applied one after another, each seeing the result of the ones before.
/// A `test` of `null` against a missing path succeeds, as on a real apiserver (its patch library
/// treats missing as null; kube's finalizer helper relies on it).
fn json_patch_in_sequence(current: &Value, ops: Vec<Value>) -> Result<Value, ApiError> {
    let mut doc = current.clone();
    for op in ops {
        let is_null_test = op.get("op").and_then(Value::as_str) == Some("test")
            && op.get("value").is_some_and(Value::is_null);
        let path = op.get("path").and_then(Value::as_str).unwrap_or("");
        let parent = path.rsplit_once('/').map_or("", |(parent, _)| parent);
        if is_null_test && doc.pointer(path).is_none() && doc.pointer(parent).is_some() {
            continue;
        }
        let single: json_patch::Patch = serde_json::from_value(Value::Array(vec![op]))
            .map_err(|e| ApiError::bad_request(format!("error decoding patch: {e}")))?;
        json_patch::patch(&mut doc, &single).map_err(|e| {
            ApiError::new(
                422,
                "Invalid",
                format!("the server rejected our request due to an error in our request: {e}"),
            )
        })?;
    }
    Ok(doc)
}

fn encode_continue(rv: u64, snapshot: u64, last: Option<&Value>) -> String {
    use base64::Engine as _;
    let last = last.unwrap_or(&Value::Null);
    let ns = text(last, "/metadata/namespace");
    let name = text(last, "/metadata/name");
    base64::engine::general_purpose::STANDARD
        .encode(format!("{rv}\u{0}{snapshot}\u{0}{ns}\u{0}{name}"))
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

pub(super) fn set_or_remove(object: &mut Value, field: &str, value: Option<Value>) {
    if let Some(map) = object.as_object_mut() {
        match value {
            Some(v) => map.insert(field.to_owned(), v),
            None => map.remove(field),
        };
    }
}

/// Sets `target`'s value at a `/a/b` pointer to `source`'s (removing it when `source` has none).
fn set_pointer_from(target: &mut Value, source: &Value, pointer: &str) {
    let Some((parent, field)) = pointer.rsplit_once('/') else {
        return;
    };
    let value = source.pointer(pointer).cloned();
    let parent_value = if parent.is_empty() {
        Some(target)
    } else {
        target.pointer_mut(parent)
    };
    if let Some(parent_value) = parent_value {
        set_or_remove(parent_value, field, value);
    }
}

fn set_or_remove_meta(object: &mut Value, field: &str, value: Option<Value>) {
    let meta = metadata_mut(object);
    match value {
        Some(v) => meta.insert(field.into(), v),
        None => meta.remove(field),
    };
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

pub(super) fn set_finalizers(object: &mut Value, finals: &[String]) {
    let meta = metadata_mut(object);
    if finals.is_empty() {
        meta.remove("finalizers");
    } else {
        meta.insert("finalizers".into(), json!(finals));
    }
}

/// Keys of objects in a set, for the controllers' scans.
pub(super) fn keys_of(objects: &BTreeMap<ObjKey, Value>) -> BTreeSet<ObjKey> {
    objects.keys().cloned().collect()
}

/// RFC 3339 with seconds, as the apiserver writes `metav1.Time`.
pub(crate) fn format_time(t: k8s_openapi::jiff::Timestamp) -> String {
    t.round(k8s_openapi::jiff::Unit::Second).map_or_else(
        |_| "1970-01-01T00:00:00Z".to_owned(),
        |t| t.strftime("%Y-%m-%dT%H:%M:%SZ").to_string(),
    )
}
