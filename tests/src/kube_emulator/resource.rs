//! Resource types the emulator serves: group, version, kind, plural, scope, whether the status
//! subresource is on, the structural schema (pruning, decoding, validation, server-side apply),
//! the built-in behaviour (defaults and rules of Jobs, Pods, Secrets, Events, ...) and, for CRDs,
//! the OpenAPI schema whose defaults and CEL rules are applied.

use std::sync::Arc;

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use serde_json::Value;

use super::builtin::Behaviour;
use super::schema::SchemaDoc;

/// What deleting an owner does to its dependents when the request names no policy.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Propagation {
    /// Delete the owner now, its dependents afterwards (the default for most resources).
    Background,
    /// Delete dependents first, then the owner.
    Foreground,
    /// Leave dependents, removing their owner references (the API default for batch/v1 Jobs).
    Orphan,
}

impl Propagation {
    pub(crate) fn parse(s: &str) -> Option<Propagation> {
        match s {
            "Background" => Some(Propagation::Background),
            "Foreground" => Some(Propagation::Foreground),
            "Orphan" => Some(Propagation::Orphan),
            _ => None,
        }
    }
}

/// A printer column of a CRD, for `Table` responses (`kubectl get`).
#[derive(Clone, Debug)]
pub struct PrinterColumn {
    /// Column header.
    pub name: String,
    /// `string`, `integer`, `date`, ...
    pub type_: String,
    /// Simple JSONPath into the object.
    pub json_path: String,
    /// 0 for the default view, more for `-o wide`.
    pub priority: i32,
}

/// A resource type registered with the emulator.
// Each flag is one independent fact the real registry of the type has.
#[allow(clippy::struct_excessive_bools)]
#[derive(Clone, Debug)]
pub struct ResourceType {
    /// API group, empty for the core group.
    pub group: String,
    /// API version within the group.
    pub version: String,
    /// Kind.
    pub kind: String,
    /// Plural name used in paths.
    pub plural: String,
    /// Whether objects live in namespaces.
    pub namespaced: bool,
    /// Whether `/status` is a separate subresource (main writes then never change `.status`).
    pub status_subresource: bool,
    /// Propagation when a DELETE names none.
    pub default_propagation: Propagation,
    /// OpenAPI schema (CRDs only): defaults are applied and CEL rules enforced on writes.
    pub schema: Option<Value>,
    /// Structural schema: what fields exist, their types, list and map semantics.
    pub(crate) structure: Arc<SchemaDoc>,
    /// Built-in defaults and rules.
    pub behaviour: Behaviour,
    /// Whether an immediate DELETE answers with the object (Pods, ServiceAccounts) rather than a
    /// `Status`.
    pub returns_deleted_object: bool,
    /// Whether objects carry `metadata.generation` (custom resources and workloads; not
    /// ConfigMaps, Secrets, Leases, Events or ServiceAccounts).
    pub has_generation: bool,
    /// Whether an update without a resourceVersion is allowed (not for custom resources and
    /// Leases).
    pub unconditional_update: bool,
    /// Printer columns (CRDs only).
    pub printer_columns: Vec<PrinterColumn>,
    /// Short names, for discovery.
    pub short_names: Vec<String>,
    /// Categories (`kubectl get <category>`), for discovery.
    pub categories: Vec<String>,
}

impl ResourceType {
    /// A built-in namespaced type, e.g. `ResourceType::namespaced::<Job>()`.
    pub fn namespaced<K>() -> ResourceType
    where
        K: kube::Resource<DynamicType = ()> + schemars::JsonSchema,
    {
        ResourceType::of::<K>(true)
    }

    /// A built-in cluster-scoped type.
    pub fn cluster<K>() -> ResourceType
    where
        K: kube::Resource<DynamicType = ()> + schemars::JsonSchema,
    {
        ResourceType::of::<K>(false)
    }

    fn of<K>(namespaced: bool) -> ResourceType
    where
        K: kube::Resource<DynamicType = ()> + schemars::JsonSchema,
    {
        let group = K::group(&()).into_owned();
        let kind = K::kind(&()).into_owned();
        let behaviour = Behaviour::of(&group, &kind);
        ResourceType {
            returns_deleted_object: group.is_empty()
                && matches!(kind.as_str(), "Pod" | "ServiceAccount"),
            has_generation: matches!(
                behaviour,
                Behaviour::Job | Behaviour::Pod | Behaviour::CustomResourceDefinition
            ),
            unconditional_update: behaviour != Behaviour::Lease,
            group,
            version: K::version(&()).into_owned(),
            kind,
            plural: K::plural(&()).into_owned(),
            namespaced,
            status_subresource: false,
            default_propagation: Propagation::Background,
            schema: None,
            structure: SchemaDoc::builtin::<K>(),
            behaviour,
            printer_columns: Vec::new(),
            short_names: Vec::new(),
            categories: Vec::new(),
        }
    }

    /// Turns the status subresource on.
    #[must_use]
    pub fn with_status(mut self) -> ResourceType {
        self.status_subresource = true;
        self
    }

    /// Sets the propagation used when a DELETE names none.
    #[must_use]
    pub fn with_default_propagation(mut self, propagation: Propagation) -> ResourceType {
        self.default_propagation = propagation;
        self
    }

    /// The served (first) version of a CRD, with its schema, subresources and printer columns.
    pub fn from_crd(crd: &CustomResourceDefinition) -> ResourceType {
        let version = crd
            .spec
            .versions
            .iter()
            .find(|v| v.storage)
            .unwrap_or(&crd.spec.versions[0]);
        let schema = gatehouse_crds::openapi_schema(crd);
        ResourceType {
            structure: Arc::new(SchemaDoc::custom(schema.as_ref().unwrap_or(&Value::Null))),
            behaviour: Behaviour::Generic,
            returns_deleted_object: false,
            has_generation: true,
            unconditional_update: false,
            group: crd.spec.group.clone(),
            version: version.name.clone(),
            kind: crd.spec.names.kind.clone(),
            plural: crd.spec.names.plural.clone(),
            namespaced: crd.spec.scope == "Namespaced",
            status_subresource: version
                .subresources
                .as_ref()
                .is_some_and(|s| s.status.is_some()),
            default_propagation: Propagation::Background,
            schema,
            printer_columns: version
                .additional_printer_columns
                .iter()
                .flatten()
                .map(|c| PrinterColumn {
                    name: c.name.clone(),
                    type_: c.type_.clone(),
                    json_path: c.json_path.clone(),
                    priority: c.priority.unwrap_or(0),
                })
                .collect(),
            short_names: crd.spec.names.short_names.clone().unwrap_or_default(),
            categories: crd.spec.names.categories.clone().unwrap_or_default(),
        }
    }

    /// `group/version`, or just `version` for the core group.
    pub fn api_version(&self) -> String {
        if self.group.is_empty() {
            self.version.clone()
        } else {
            format!("{}/{}", self.group, self.version)
        }
    }

    /// `Kind.group` (`Job.batch`, `ScanRequest.gatehouse.dev`, `Pod`) as validation errors name
    /// the kind.
    pub fn qualified_kind(&self) -> String {
        if self.group.is_empty() {
            self.kind.clone()
        } else {
            format!("{}.{}", self.kind, self.group)
        }
    }

    /// Whether this type is a custom resource (schema validated, no strategic merge patch).
    pub fn is_custom(&self) -> bool {
        self.structure.custom
    }

    /// `plural.group` as the apiserver names the resource in messages.
    pub fn qualified_plural(&self) -> String {
        if self.group.is_empty() {
            self.plural.clone()
        } else {
            format!("{}.{}", self.plural, self.group)
        }
    }
}
