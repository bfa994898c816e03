//! Structural schemas, one per resource type: a CRD's OpenAPI schema, or a built-in type's schema
//! generated from k8s-openapi (with the list and map semantics the real API's OpenAPI documents
//! carry, which k8s-openapi leaves out, added from [`BUILTIN_SEMANTICS`]). The emulator uses
//! them for what the apiserver uses them for:
//!
//! - pruning: unknown fields are dropped (reported for `fieldValidation=Warn|Strict`), and so are
//!   nulls where the type has no null (every built-in field; CRD fields not `nullable`);
//! - decoding: a built-in object whose fields have the wrong JSON type cannot be decoded (400);
//! - validation of custom resources: `type`, `format`, `enum`, `pattern`, lengths, item and
//!   property counts, bounds, `required`, list uniqueness (422 with the field path);
//! - server-side apply: which objects are structs (named fields) or maps, and which lists are
//!   atomic, sets, or maps keyed by some fields.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, OnceLock};

use serde_json::{Map, Value, json};

use super::error::{FieldError, child, index, key};
use super::keep_zero::KEEP_ZERO;

/// How a list merges under server-side apply (`x-kubernetes-list-type`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum ListType {
    /// Replaced whole (the default for lists without a list type).
    Atomic,
    /// A set of scalars, merged by value.
    Set,
    /// A list of objects merged by the values of these key fields.
    Map(Vec<String>),
}

/// What a schema node describes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Shape {
    /// An object with named fields.
    Struct,
    /// An object with arbitrary keys, all of one value type.
    Map,
    /// A list.
    List,
    /// A scalar (`string`, `integer`, `number`, `boolean`, int-or-string).
    Scalar,
    /// Anything goes (preserved unknown fields, untyped).
    Any,
}

/// A schema with its definitions (`$ref` targets).
#[derive(Debug)]
pub(crate) struct SchemaDoc {
    root: Value,
    defs: Arc<Map<String, Value>>,
    /// Custom resource schemas are validated; built-in ones only decode.
    pub custom: bool,
}

/// A position in a [`SchemaDoc`].
#[derive(Clone, Copy, Debug)]
pub(crate) struct Node<'a> {
    doc: &'a SchemaDoc,
    value: &'a Value,
    /// The schema that pointed here by `$ref`, whose annotations also apply.
    via: Option<&'a Value>,
}

impl SchemaDoc {
    /// The root node.
    pub(crate) fn root(&self) -> Node<'_> {
        Node {
            doc: self,
            value: &self.root,
            via: None,
        }
        .resolve()
    }

    /// A custom resource's schema. Its `metadata` is treated as `ObjectMeta`, as the apiserver
    /// treats it (the CRD schema may only say `type: object` there).
    pub(crate) fn custom(openapi: &Value) -> SchemaDoc {
        let meta = builtin_parts::<k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta>();
        let mut root = openapi.clone();
        // Every custom resource has these at its root, whatever its schema says.
        if let Some(props) = root.get_mut("properties").and_then(Value::as_object_mut) {
            props.insert(
                "metadata".into(),
                json!({"$ref": format!("#/components/schemas/{}", meta.0)}),
            );
            props.insert("apiVersion".into(), json!({"type": "string"}));
            props.insert("kind".into(), json!({"type": "string"}));
        }
        SchemaDoc {
            root,
            defs: meta.1,
            custom: true,
        }
    }

    /// A built-in type's schema, generated once per type.
    pub(crate) fn builtin<K: schemars::JsonSchema>() -> Arc<SchemaDoc> {
        static CACHE: OnceLock<Mutex<HashMap<String, Arc<SchemaDoc>>>> = OnceLock::new();
        let name = K::schema_name().into_owned();
        let cache = CACHE.get_or_init(|| Mutex::new(HashMap::new()));
        let mut cache = cache
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        Arc::clone(cache.entry(name.clone()).or_insert_with(|| {
            let (root_name, defs) = builtin_parts::<K>();
            Arc::new(SchemaDoc {
                root: json!({"$ref": format!("#/components/schemas/{root_name}")}),
                defs,
                custom: false,
            })
        }))
    }
}

/// The schema of `K` as (its definition name, all definitions), with the semantics added.
fn builtin_parts<K: schemars::JsonSchema>() -> (String, Arc<Map<String, Value>>) {
    let generator = schemars::generate::SchemaSettings::openapi3().into_generator();
    let root = generator.into_root_schema_for::<K>();
    let mut root = root.to_value();
    let mut defs = root
        .pointer_mut("/components/schemas")
        .map(Value::take)
        .and_then(|v| match v {
            Value::Object(map) => Some(map),
            _ => None,
        })
        .unwrap_or_default();
    let name = root
        .get("title")
        .and_then(Value::as_str)
        .map_or_else(|| K::schema_name().into_owned(), str::to_owned);
    if let Some(map) = root.as_object_mut() {
        map.remove("components");
        map.remove("$schema");
    }
    defs.insert(name.clone(), root);
    annotate(&mut defs);
    (name, Arc::new(defs))
}

/// List and map semantics of built-in types, from the Kubernetes 1.35 OpenAPI document
/// (`x-kubernetes-list-type`, `x-kubernetes-list-map-keys`, `x-kubernetes-map-type`; lists with
/// only a patch merge key count as maps keyed by it, as server-side apply reads them). Lists not
/// named here are atomic, as in the real schema.
const BUILTIN_SEMANTICS: &[(&str, &str, Semantics)] = &[
    (
        "apimachinery.pkg.apis.meta.v1.ObjectMeta",
        "finalizers",
        Semantics::Set,
    ),
    (
        "apimachinery.pkg.apis.meta.v1.ObjectMeta",
        "ownerReferences",
        Semantics::Map(&["uid"]),
    ),
    (
        "api.core.v1.PodSpec",
        "containers",
        Semantics::Map(&["name"]),
    ),
    (
        "api.core.v1.PodSpec",
        "initContainers",
        Semantics::Map(&["name"]),
    ),
    (
        "api.core.v1.PodSpec",
        "ephemeralContainers",
        Semantics::Map(&["name"]),
    ),
    ("api.core.v1.PodSpec", "volumes", Semantics::Map(&["name"])),
    (
        "api.core.v1.PodSpec",
        "imagePullSecrets",
        Semantics::Map(&["name"]),
    ),
    (
        "api.core.v1.PodSpec",
        "hostAliases",
        Semantics::Map(&["ip"]),
    ),
    (
        "api.core.v1.PodSpec",
        "resourceClaims",
        Semantics::Map(&["name"]),
    ),
    (
        "api.core.v1.PodSpec",
        "schedulingGates",
        Semantics::Map(&["name"]),
    ),
    (
        "api.core.v1.PodSpec",
        "topologySpreadConstraints",
        Semantics::Map(&["topologyKey", "whenUnsatisfiable"]),
    ),
    ("api.core.v1.PodSpec", "nodeSelector", Semantics::AtomicMap),
    ("api.core.v1.Container", "env", Semantics::Map(&["name"])),
    (
        "api.core.v1.Container",
        "ports",
        Semantics::Map(&["containerPort", "protocol"]),
    ),
    (
        "api.core.v1.Container",
        "volumeMounts",
        Semantics::Map(&["mountPath"]),
    ),
    (
        "api.core.v1.Container",
        "volumeDevices",
        Semantics::Map(&["devicePath"]),
    ),
    (
        "api.core.v1.ResourceRequirements",
        "claims",
        Semantics::Map(&["name"]),
    ),
    (
        "api.core.v1.PodStatus",
        "conditions",
        Semantics::Map(&["type"]),
    ),
    (
        "api.core.v1.ServiceAccount",
        "secrets",
        Semantics::Map(&["name"]),
    ),
    (
        "api.batch.v1.UncountedTerminatedPods",
        "succeeded",
        Semantics::Set,
    ),
    (
        "api.batch.v1.UncountedTerminatedPods",
        "failed",
        Semantics::Set,
    ),
];

/// Structs the real schema marks `x-kubernetes-map-type: atomic` (replaced whole by apply).
const ATOMIC_STRUCTS: &[&str] = &[
    "apimachinery.pkg.apis.meta.v1.LabelSelector",
    "api.core.v1.LocalObjectReference",
    "api.core.v1.ObjectReference",
    "api.core.v1.ObjectFieldSelector",
    "api.core.v1.ResourceFieldSelector",
    "api.core.v1.ConfigMapKeySelector",
    "api.core.v1.SecretKeySelector",
    "api.core.v1.ConfigMapEnvSource",
    "api.core.v1.SecretEnvSource",
    "api.core.v1.NodeSelector",
    "api.core.v1.NodeSelectorTerm",
    "api.core.v1.TypedLocalObjectReference",
];

/// Defaults of list-map keys, which server-side apply uses for items that omit the key
/// (structured-merge-diff 6.3): a container port without `protocol` is keyed as TCP.
const KEY_DEFAULTS: &[(&str, &str, &str)] = &[("api.core.v1.ContainerPort", "protocol", "TCP")];

/// [`KEEP_ZERO`] for the `apiextensions.k8s.io/v1` types (CustomResourceDefinition), which
/// `scripts/gen-keep-zero` does not read (they live in k8s.io/apiextensions-apiserver): written
/// by hand from its v0.35 `types.go` and `types_jsonschema.go`, the fields without `omitempty`
/// and the pointer fields. Without it a schema's `default: 0` or `minimum: 0` would vanish.
const APIEXTENSIONS_KEEP_ZERO: &[(&str, &[&str])] = &[
    (
        "apiextensions-apiserver.pkg.apis.apiextensions.v1.CustomResourceDefinitionSpec",
        &["group", "names", "scope", "versions", "conversion"],
    ),
    (
        "apiextensions-apiserver.pkg.apis.apiextensions.v1.CustomResourceDefinitionNames",
        &["plural", "kind"],
    ),
    (
        "apiextensions-apiserver.pkg.apis.apiextensions.v1.CustomResourceDefinitionVersion",
        &[
            "name",
            "served",
            "storage",
            "deprecationWarning",
            "schema",
            "subresources",
        ],
    ),
    (
        "apiextensions-apiserver.pkg.apis.apiextensions.v1.CustomResourceColumnDefinition",
        &["name", "type", "jsonPath"],
    ),
    (
        "apiextensions-apiserver.pkg.apis.apiextensions.v1.CustomResourceConversion",
        &["strategy", "webhook"],
    ),
    (
        "apiextensions-apiserver.pkg.apis.apiextensions.v1.CustomResourceSubresources",
        &["status", "scale"],
    ),
    (
        "apiextensions-apiserver.pkg.apis.apiextensions.v1.CustomResourceValidation",
        &["openAPIV3Schema"],
    ),
    (
        "apiextensions-apiserver.pkg.apis.apiextensions.v1.CustomResourceDefinitionStatus",
        &["acceptedNames", "storedVersions"],
    ),
    (
        "apiextensions-apiserver.pkg.apis.apiextensions.v1.CustomResourceDefinitionCondition",
        &["type", "status"],
    ),
    (
        "apiextensions-apiserver.pkg.apis.apiextensions.v1.ValidationRule",
        &["rule", "reason", "optionalOldSelf"],
    ),
    (
        "apiextensions-apiserver.pkg.apis.apiextensions.v1.JSONSchemaProps",
        &[
            "$ref",
            "default",
            "maximum",
            "minimum",
            "maxLength",
            "minLength",
            "maxItems",
            "minItems",
            "multipleOf",
            "maxProperties",
            "minProperties",
            "items",
            "not",
            "additionalProperties",
            "additionalItems",
            "externalDocs",
            "example",
            "x-kubernetes-preserve-unknown-fields",
            "x-kubernetes-list-type",
            "x-kubernetes-map-type",
        ],
    ),
];

#[derive(Clone, Copy, Debug)]
enum Semantics {
    Set,
    Map(&'static [&'static str]),
    AtomicMap,
}

fn annotate(defs: &mut Map<String, Value>) {
    for (def, field, semantics) in BUILTIN_SEMANTICS {
        let Some(prop) = defs
            .get_mut(&format!("io.k8s.{def}"))
            .and_then(|d| d.pointer_mut(&format!("/properties/{field}")))
            .and_then(Value::as_object_mut)
        else {
            continue;
        };
        match semantics {
            Semantics::Set => {
                prop.insert("x-kubernetes-list-type".into(), json!("set"));
            }
            Semantics::Map(keys) => {
                prop.insert("x-kubernetes-list-type".into(), json!("map"));
                prop.insert("x-kubernetes-list-map-keys".into(), json!(keys));
            }
            Semantics::AtomicMap => {
                prop.insert("x-kubernetes-map-type".into(), json!("atomic"));
            }
        }
    }
    for def in ATOMIC_STRUCTS {
        if let Some(Value::Object(map)) = defs.get_mut(&format!("io.k8s.{def}")) {
            map.insert("x-kubernetes-map-type".into(), json!("atomic"));
        }
    }
    if let Some(Value::Object(map)) = defs.get_mut("io.k8s.apimachinery.pkg.api.resource.Quantity")
    {
        map.insert("x-emulator-quantity".into(), json!(true));
    }
    for (def, fields) in KEEP_ZERO.iter().chain(APIEXTENSIONS_KEEP_ZERO) {
        if let Some(Value::Object(map)) = defs.get_mut(&format!("io.k8s.{def}")) {
            map.insert("x-emulator-keep-zero".into(), json!(fields));
        }
    }
    for (def, field, default) in KEY_DEFAULTS {
        if let Some(Value::Object(prop)) = defs
            .get_mut(&format!("io.k8s.{def}"))
            .and_then(|d| d.pointer_mut(&format!("/properties/{field}")))
        {
            prop.insert("default".into(), json!(default));
        }
    }
}

impl<'a> Node<'a> {
    /// Follows `$ref` (directly or as the single member of `allOf`).
    fn resolve(self) -> Node<'a> {
        let mut node = self;
        for _ in 0..16 {
            let target = node
                .value
                .get("$ref")
                .or_else(|| match node.value.get("allOf").and_then(Value::as_array) {
                    Some(all) if all.len() == 1 => all[0].get("$ref"),
                    _ => None,
                })
                .and_then(Value::as_str)
                .and_then(|r| r.rsplit('/').next())
                .and_then(|name| node.doc.defs.get(name));
            match target {
                Some(def) => {
                    node = Node {
                        doc: node.doc,
                        value: def,
                        via: Some(node.via.unwrap_or(node.value)),
                    };
                }
                None => return node,
            }
        }
        node
    }

    fn get(&self, key: &str) -> Option<&'a Value> {
        self.value
            .get(key)
            .or_else(|| self.via.and_then(|v| v.get(key)))
    }

    fn flag(&self, key: &str) -> bool {
        self.get(key).and_then(Value::as_bool).unwrap_or(false)
    }

    fn type_(&self) -> Option<&'a str> {
        self.value.get("type").and_then(Value::as_str)
    }

    /// What this node describes.
    pub(crate) fn shape(&self) -> Shape {
        if self.flag("x-kubernetes-int-or-string") || self.flag("x-emulator-quantity") {
            return Shape::Scalar;
        }
        let has_properties = self.value.get("properties").is_some();
        match self.type_() {
            Some("array") => Shape::List,
            Some("object") | None if has_properties => Shape::Struct,
            Some("object")
                if self
                    .value
                    .get("additionalProperties")
                    .is_some_and(Value::is_object) =>
            {
                Shape::Map
            }
            // A custom resource's `type: object` without properties keeps nothing unless it
            // preserves unknown fields; a built-in one (FieldsV1, RawExtension) is opaque.
            Some("object") if self.doc.custom && !self.preserves_unknown() => Shape::Struct,
            Some("string" | "integer" | "number" | "boolean") => Shape::Scalar,
            _ => Shape::Any,
        }
    }

    /// The schema of a named field.
    pub(crate) fn field(&self, name: &str) -> Option<Node<'a>> {
        self.value
            .get("properties")
            .and_then(|p| p.get(name))
            .map(|value| {
                Node {
                    doc: self.doc,
                    value,
                    via: None,
                }
                .resolve()
            })
    }

    /// The schema of a map's values.
    pub(crate) fn values(&self) -> Option<Node<'a>> {
        self.value
            .get("additionalProperties")
            .filter(|v| v.is_object())
            .map(|value| {
                Node {
                    doc: self.doc,
                    value,
                    via: None,
                }
                .resolve()
            })
    }

    /// The schema of a list's items.
    pub(crate) fn items(&self) -> Option<Node<'a>> {
        self.value.get("items").map(|value| {
            Node {
                doc: self.doc,
                value,
                via: None,
            }
            .resolve()
        })
    }

    /// Whether a field name is declared (a struct's named field).
    pub(crate) fn declares(&self, name: &str) -> bool {
        self.value
            .get("properties")
            .is_some_and(|p| p.get(name).is_some())
    }

    /// The list's merge semantics.
    pub(crate) fn list_type(&self) -> ListType {
        match self.get("x-kubernetes-list-type").and_then(Value::as_str) {
            Some("set") => ListType::Set,
            Some("map") => ListType::Map(
                self.get("x-kubernetes-list-map-keys")
                    .and_then(Value::as_array)
                    .map(|keys| {
                        keys.iter()
                            .filter_map(Value::as_str)
                            .map(str::to_owned)
                            .collect()
                    })
                    .unwrap_or_default(),
            ),
            _ => ListType::Atomic,
        }
    }

    /// Whether apply replaces this object whole (`x-kubernetes-map-type: atomic`).
    pub(crate) fn atomic_object(&self) -> bool {
        self.get("x-kubernetes-map-type").and_then(Value::as_str) == Some("atomic")
    }

    /// The schema default of a field, if any.
    pub(crate) fn default_of(&self, name: &str) -> Option<&'a Value> {
        self.value
            .get("properties")
            .and_then(|p| p.get(name))
            .and_then(|f| f.get("default"))
    }

    /// A non-negative count keyword (`maxLength`, `minItems`, ...).
    fn count_bound(&self, key: &str) -> Option<usize> {
        self.value
            .get(key)
            .and_then(Value::as_u64)
            .and_then(|n| usize::try_from(n).ok())
    }

    fn keeps_zero(&self, name: &str) -> bool {
        self.value
            .get("x-emulator-keep-zero")
            .and_then(Value::as_array)
            .is_some_and(|fields| fields.iter().any(|f| f == name))
    }

    fn is_quantity(&self) -> bool {
        self.flag("x-emulator-quantity")
    }

    fn preserves_unknown(&self) -> bool {
        self.flag("x-kubernetes-preserve-unknown-fields")
    }

    fn nullable(&self) -> bool {
        self.flag("nullable")
    }
}

// ----- pruning -----

/// Drops unknown fields (returning their paths) and nulls the type cannot hold.
pub(crate) fn prune(value: &mut Value, node: Node<'_>, path: &str, unknown: &mut Vec<String>) {
    match (node.shape(), value) {
        (Shape::Struct, Value::Object(map)) => {
            let keys: Vec<String> = map.keys().cloned().collect();
            for k in keys {
                let field_path = child(path, &k);
                match node.field(&k) {
                    Some(field) => {
                        let drop_null = map.get(&k).is_some_and(Value::is_null)
                            && !(node.doc.custom && field.nullable());
                        if drop_null {
                            map.remove(&k);
                        } else if let Some(v) = map.get_mut(&k) {
                            prune(v, field, &field_path, unknown);
                        }
                    }
                    None if node.preserves_unknown() => {}
                    None => {
                        map.remove(&k);
                        unknown.push(field_path);
                    }
                }
            }
        }
        (Shape::Map, Value::Object(map)) => {
            if let Some(values) = node.values() {
                let keys: Vec<String> = map.keys().cloned().collect();
                for k in keys {
                    if map.get(&k).is_some_and(Value::is_null)
                        && !(node.doc.custom && values.nullable())
                    {
                        map.remove(&k);
                    } else if let Some(v) = map.get_mut(&k) {
                        prune(v, values, &key(path, &k), unknown);
                    }
                }
            }
        }
        (Shape::List, Value::Array(items)) => {
            if let Some(item_node) = node.items() {
                for (i, item) in items.iter_mut().enumerate() {
                    prune(item, item_node, &index(path, i), unknown);
                }
            }
        }
        _ => {}
    }
}

// ----- normalization (built-in types) -----

/// What storing a built-in object through its Go type does to it: zero values of `omitempty`
/// fields are not stored (empty strings, lists and maps, `0`, `false`; [`KEEP_ZERO`], generated
/// from the Go types, lists the fields that keep them) and quantities come back in canonical form (`1000m` is `1`,
/// `1024Mi` is `1Gi`).
pub(crate) fn normalize(value: &mut Value, node: Node<'_>) {
    if node.is_quantity() {
        let text = match &*value {
            Value::String(s) => Some(s.clone()),
            Value::Number(n) => Some(n.to_string()),
            _ => None,
        };
        if let Some(canonical) = text.as_deref().and_then(canonical_quantity) {
            *value = Value::String(canonical);
        }
        return;
    }
    if node.shape() == Shape::Map
        && node.values().is_some_and(|v| v.is_quantity())
        && let Value::Object(list) = value
    {
        // A ResourceList: defaulting rounds every quantity up to milli-units first.
        for quantity in list.values_mut() {
            let text = match &*quantity {
                Value::String(s) => Some(s.clone()),
                Value::Number(n) => Some(n.to_string()),
                _ => None,
            };
            if let Some(rounded) = text.as_deref().and_then(round_up_to_milli) {
                *quantity = Value::String(rounded);
            }
        }
    }
    match (node.shape(), value) {
        (Shape::Struct, Value::Object(map)) => {
            let keys: Vec<String> = map.keys().cloned().collect();
            for k in keys {
                let Some(field) = node.field(&k) else {
                    continue;
                };
                if let Some(v) = map.get_mut(&k) {
                    normalize(v, field);
                }
                let zero = match map.get(&k) {
                    Some(Value::String(s)) => s.is_empty(),
                    Some(Value::Bool(b)) => !b,
                    Some(Value::Number(n)) => n.as_f64() == Some(0.0),
                    Some(Value::Array(a)) => a.is_empty(),
                    Some(Value::Object(o)) => o.is_empty() && field.shape() == Shape::Map,
                    _ => false,
                };
                if zero && !node.keeps_zero(&k) {
                    map.remove(&k);
                }
            }
        }
        (Shape::Map, Value::Object(map)) => {
            if let Some(values) = node.values() {
                for v in map.values_mut() {
                    normalize(v, values);
                }
            }
        }
        (Shape::List, Value::Array(items)) => {
            if let Some(item_node) = node.items() {
                for item in items {
                    normalize(item, item_node);
                }
            }
        }
        _ => {}
    }
}

/// Decimal SI suffixes and their powers of ten.
const DECIMAL_SUFFIXES: &[(&str, i32)] = &[
    ("n", -9),
    ("u", -6),
    ("m", -3),
    ("", 0),
    ("k", 3),
    ("M", 6),
    ("G", 9),
    ("T", 12),
    ("P", 15),
    ("E", 18),
];

/// Binary SI suffixes, by power of 1024.
const BINARY_SUFFIXES: &[&str] = &["", "Ki", "Mi", "Gi", "Ti", "Pi", "Ei"];

/// How a quantity was written, which its canonical form keeps.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum QuantityFormat {
    DecimalSi,
    BinarySi,
    DecimalExponent,
}

/// A quantity as `mantissa × 10^exponent` and its format, or `None` when it does not parse (or
/// is beyond what is modelled: more than 30 digits).
fn parse_quantity(text: &str) -> Option<(i128, i32, QuantityFormat)> {
    if !is_quantity(text) {
        return None;
    }
    let (negative, unsigned) = match text.as_bytes().first() {
        Some(b'-') => (true, &text[1..]),
        Some(b'+') => (false, &text[1..]),
        _ => (false, text),
    };
    let split = unsigned
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(unsigned.len());
    let (number, suffix) = unsigned.split_at(split);
    let (whole, fraction) = number.split_once('.').unwrap_or((number, ""));
    let digits = format!("{whole}{fraction}");
    let digits = digits.trim_start_matches('0');
    if digits.len() > 30 {
        return None;
    }
    let mut mantissa: i128 = if digits.is_empty() {
        0
    } else {
        digits.parse().ok()?
    };
    let mut exponent = -i32::try_from(fraction.len()).ok()?;
    let format = if let Some(power) = BINARY_SUFFIXES[1..].iter().position(|s| *s == suffix) {
        let bits = 10 * (u32::try_from(power).ok()? + 1);
        mantissa = mantissa.checked_mul(1_i128.checked_shl(bits)?)?;
        QuantityFormat::BinarySi
    } else if let Some((_, power)) = DECIMAL_SUFFIXES.iter().find(|(s, _)| *s == suffix) {
        exponent += power;
        QuantityFormat::DecimalSi
    } else {
        exponent += suffix[1..].parse::<i32>().ok()?;
        QuantityFormat::DecimalExponent
    };
    Some((
        if negative { -mantissa } else { mantissa },
        exponent,
        format,
    ))
}

/// The text of a quantity the apiserver keeps as sent because it is already canonical-looking
/// (`ParseQuantity` caches the string): no leading zero, a multiple-of-three exponent, no
/// trailing `000` (decimal); a binary suffix on a value not divisible by 8.
fn kept_as_sent(text: &str) -> bool {
    if text == "0" {
        return true;
    }
    let unsigned = text.trim_start_matches(['+', '-']);
    let digits = unsigned.trim_start_matches('0');
    let split = digits
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(digits.len());
    let (number, suffix) = digits.split_at(split);
    let (num, denom) = number.split_once('.').unwrap_or((number, ""));
    let num = if num.is_empty() { "0" } else { num };
    if let Some(power) = BINARY_SUFFIXES[1..].iter().position(|s| *s == suffix) {
        let exponent = 10 * (i64::try_from(power).unwrap_or(0) + 1);
        let precision = 15 - i64::try_from(num.len()).unwrap_or(99) - exponent * 3 / 10 - 1;
        return denom.is_empty() && precision >= 0 && num.parse::<i64>().is_ok_and(|v| v & 7 != 0);
    }
    let exponent = DECIMAL_SUFFIXES
        .iter()
        .find(|(s, _)| *s == suffix)
        .map(|(_, p)| *p)
        .or_else(|| suffix.get(1..).and_then(|e| e.parse().ok()));
    let Some(exponent) = exponent else {
        return false;
    };
    let scale = exponent - i32::try_from(denom.len()).unwrap_or(99);
    let shifted = format!("{num}{denom}");
    num.len() + denom.len() <= 18
        && scale >= -9
        && scale.rem_euclid(3) == 0
        && !shifted.ends_with("000")
        && !shifted.starts_with('0')
}

/// A container resource quantity rounded up to milli-units, as `SetDefaults_ResourceList`
/// does (`100u` is `1m`); `None` when it has no finer part.
pub(crate) fn round_up_to_milli(text: &str) -> Option<String> {
    let (mut mantissa, mut exponent, _) = parse_quantity(text)?;
    if mantissa == 0 {
        return None;
    }
    while mantissa % 10 == 0 {
        mantissa /= 10;
        exponent += 1;
    }
    if exponent >= -3 {
        return None;
    }
    let divisor = 10_i128.checked_pow((-3 - exponent).unsigned_abs())?;
    let milli = mantissa.div_euclid(divisor) + i128::from(mantissa.rem_euclid(divisor) != 0);
    canonical_quantity(&format!("{milli}m"))
}

/// A quantity in the form `resource.Quantity` serialises it in: as sent when it is already
/// canonical-looking, otherwise canonical (`CanonicalizeBytes`):
/// binary values of at least 1024 that are whole numbers keep the largest binary suffix that
/// leaves no fraction; everything else is a decimal mantissa without trailing zeros and an
/// exponent that is a multiple of three, shown as a suffix (or `e<n>` for exponent notation).
pub(crate) fn canonical_quantity(text: &str) -> Option<String> {
    let (mut mantissa, mut exponent, format) = parse_quantity(text)?;
    if kept_as_sent(text) {
        return Some(text.to_owned());
    }
    if mantissa == 0 {
        return Some("0".to_owned());
    }
    if format == QuantityFormat::BinarySi {
        let integral = if exponent >= 0 {
            mantissa.checked_mul(10_i128.checked_pow(exponent.unsigned_abs())?)
        } else {
            let divisor = 10_i128.checked_pow(exponent.unsigned_abs())?;
            (mantissa % divisor == 0).then(|| mantissa / divisor)
        };
        if let Some(mut whole) = integral.filter(|v| v.abs() >= 1024) {
            let mut power = 0;
            while whole % 1024 == 0 && power < BINARY_SUFFIXES.len() - 1 {
                whole /= 1024;
                power += 1;
            }
            return Some(format!("{whole}{}", BINARY_SUFFIXES[power]));
        }
    }
    while mantissa % 10 == 0 {
        mantissa /= 10;
        exponent += 1;
    }
    let lower = exponent.rem_euclid(3);
    mantissa = mantissa.checked_mul(10_i128.pow(lower.unsigned_abs()))?;
    exponent -= lower;
    let suffix = if format == QuantityFormat::DecimalExponent {
        if exponent == 0 {
            String::new()
        } else {
            format!("e{exponent}")
        }
    } else {
        // Finer than nano rounds up to 1n on a real server, beyond exa is written with an
        // exponent: neither is modelled.
        (*DECIMAL_SUFFIXES.iter().find(|(_, p)| *p == exponent)?.0).to_owned()
    };
    Some(format!("{mantissa}{suffix}"))
}

// ----- decoding (types) and validation -----

/// JSON kind mismatches only (a string where an object belongs, ...), as structured-merge-diff's
/// typed values see them: no formats, and any number where a number belongs.
pub(crate) fn kind_errors(value: &Value, node: Node<'_>, path: &str, out: &mut Vec<FieldError>) {
    if value.is_null() {
        return;
    }
    let expected = if node.flag("x-kubernetes-int-or-string") || node.is_quantity() {
        (!(value.is_string() || value.is_number())).then_some("integer or string")
    } else {
        match (node.shape(), node.type_()) {
            (Shape::Struct | Shape::Map, _) => (!value.is_object()).then_some("object"),
            (Shape::List, _) => (!value.is_array()).then_some("array"),
            (Shape::Scalar, Some("string")) => (!value.is_string()).then_some("string"),
            (Shape::Scalar, Some("integer" | "number")) => {
                (!value.is_number()).then_some("numeric (int or float)")
            }
            (Shape::Scalar, Some("boolean")) => (!value.is_boolean()).then_some("boolean"),
            _ => None,
        }
    };
    if let Some(expected) = expected {
        out.push(FieldError::type_invalid(
            path,
            value.clone(),
            format!("expected {expected}, got {}", type_name(value)),
        ));
        return;
    }
    match (node.shape(), value) {
        (Shape::Struct, Value::Object(map)) => {
            for (k, v) in map {
                if let Some(field) = node.field(k) {
                    kind_errors(v, field, &child(path, k), out);
                }
            }
        }
        (Shape::Map, Value::Object(map)) => {
            if let Some(values) = node.values() {
                for (k, v) in map {
                    kind_errors(v, values, &key(path, k), out);
                }
            }
        }
        (Shape::List, Value::Array(items)) => {
            if let Some(item_node) = node.items() {
                for (i, item) in items.iter().enumerate() {
                    kind_errors(item, item_node, &index(path, i), out);
                }
            }
        }
        _ => {}
    }
}

/// Type errors: values of the wrong JSON type, unparsable dates, quantities and base64.
/// For built-in types these make the body undecodable (400); for custom resources they are
/// validation errors (422).
pub(crate) fn type_errors(value: &Value, node: Node<'_>, path: &str, out: &mut Vec<FieldError>) {
    if value.is_null() {
        return;
    }
    let mismatch = |expected: &str| {
        FieldError::type_invalid(
            path,
            value.clone(),
            format!(
                "{} in body must be of type {expected}: {}",
                show_path(path),
                type_name(value)
            ),
        )
    };
    if node.flag("x-kubernetes-int-or-string") || node.flag("x-emulator-quantity") {
        let ok = value.is_string() || value.is_i64() || value.is_u64() || value.is_f64();
        if !ok {
            out.push(mismatch("integer or string"));
        } else if node.flag("x-emulator-quantity")
            && let Some(text) = value.as_str()
            && !is_quantity(text)
        {
            out.push(FieldError::invalid(
                path,
                value.clone(),
                "quantities must match the regular expression '^([+-]?[0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)$'",
            ));
        }
        return;
    }
    match node.shape() {
        Shape::Struct => {
            let Some(map) = value.as_object() else {
                out.push(mismatch("object"));
                return;
            };
            for (k, v) in map {
                if let Some(field) = node.field(k) {
                    type_errors(v, field, &child(path, k), out);
                }
            }
        }
        Shape::Map => {
            let Some(map) = value.as_object() else {
                out.push(mismatch("object"));
                return;
            };
            if let Some(values) = node.values() {
                for (k, v) in map {
                    type_errors(v, values, &key(path, k), out);
                }
            }
        }
        Shape::List => {
            let Some(items) = value.as_array() else {
                out.push(mismatch("array"));
                return;
            };
            if let Some(item_node) = node.items() {
                for (i, item) in items.iter().enumerate() {
                    type_errors(item, item_node, &index(path, i), out);
                }
            }
        }
        Shape::Scalar => match node.type_() {
            Some("string") => match value.as_str() {
                None => out.push(mismatch("string")),
                Some(text) => {
                    if let Some(e) = format_error(node, text, path, value) {
                        out.push(e);
                    }
                }
            },
            Some("integer") if !(value.is_i64() || value.is_u64()) => {
                out.push(mismatch("integer"));
            }
            Some("integer")
                if node.value.get("format").and_then(Value::as_str) == Some("int32")
                    && !node.doc.custom
                    && value.as_i64().is_none_or(|n| i32::try_from(n).is_err()) =>
            {
                out.push(mismatch("int32"));
            }
            Some("number") if !value.is_number() => out.push(mismatch("number")),
            Some("boolean") if !value.is_boolean() => out.push(mismatch("boolean")),
            _ => {}
        },
        Shape::Any => {}
    }
}

fn format_error(node: Node<'_>, text: &str, path: &str, value: &Value) -> Option<FieldError> {
    let format = node.value.get("format").and_then(Value::as_str)?;
    let ok = match format {
        "date-time" => text.parse::<k8s_openapi::jiff::Timestamp>().is_ok(),
        "date" => text.parse::<k8s_openapi::jiff::civil::Date>().is_ok(),
        "byte" => {
            use base64::Engine as _;
            base64::engine::general_purpose::STANDARD
                .decode(text)
                .is_ok()
        }
        _ => true,
    };
    (!ok).then(|| {
        FieldError::invalid(
            path,
            value.clone(),
            format!(
                "{} in body must be of type {format}: {value}",
                show_path(path)
            ),
        )
    })
}

/// A custom resource's schema constraints beyond types (which [`type_errors`] checks).
pub(crate) fn validate(value: &Value, node: Node<'_>, path: &str, out: &mut Vec<FieldError>) {
    if value.is_null() {
        if !node.nullable() {
            // Nulls are pruned before validation; one left here sits where the schema has none.
            out.push(FieldError::invalid(
                path,
                Value::Null,
                format!(
                    "{} in body must be of type {}: \"null\"",
                    show_path(path),
                    node.type_().unwrap_or("object")
                ),
            ));
        }
        return;
    }
    check_enum(value, node, path, out);
    match value {
        Value::String(text) => check_string(text, node, path, out),
        Value::Number(number) => check_number(number, node, path, value, out),
        Value::Array(items) => {
            check_items(items, node, path, out);
            if let Some(item_node) = node.items() {
                for (i, item) in items.iter().enumerate() {
                    validate(item, item_node, &index(path, i), out);
                }
            }
        }
        Value::Object(map) => {
            check_properties(map, node, path, out);
            match node.shape() {
                Shape::Struct => {
                    for (k, v) in map {
                        if let Some(field) = node.field(k) {
                            validate(v, field, &child(path, k), out);
                        }
                    }
                }
                Shape::Map => {
                    if let Some(values) = node.values() {
                        for (k, v) in map {
                            validate(v, values, &key(path, k), out);
                        }
                    }
                }
                _ => {}
            }
        }
        Value::Bool(_) | Value::Null => {}
    }
}

fn check_enum(value: &Value, node: Node<'_>, path: &str, out: &mut Vec<FieldError>) {
    if let Some(allowed) = node.value.get("enum").and_then(Value::as_array)
        && !allowed.contains(value)
    {
        let supported: Vec<String> = allowed
            .iter()
            .map(|v| v.as_str().map_or_else(|| v.to_string(), str::to_owned))
            .collect();
        let refs: Vec<&str> = supported.iter().map(String::as_str).collect();
        out.push(FieldError::unsupported(path, value.clone(), &refs));
    }
}

fn check_string(text: &str, node: Node<'_>, path: &str, out: &mut Vec<FieldError>) {
    let length = text.chars().count();
    if let Some(max) = node.count_bound("maxLength")
        && length > max
    {
        out.push(FieldError::too_long(path, max));
    }
    if let Some(min) = node.count_bound("minLength")
        && length < min
    {
        out.push(FieldError::invalid(
            path,
            json!(text),
            format!(
                "{} in body should be at least {min} chars long",
                show_path(path)
            ),
        ));
    }
    if let Some(pattern) = node.value.get("pattern").and_then(Value::as_str) {
        match compiled(pattern) {
            Some(re) if re.is_match(text) => {}
            _ => out.push(FieldError::invalid(
                path,
                json!(text),
                format!("{} in body should match '{pattern}'", show_path(path)),
            )),
        }
    }
}

fn check_number(
    number: &serde_json::Number,
    node: Node<'_>,
    path: &str,
    value: &Value,
    out: &mut Vec<FieldError>,
) {
    let Some(n) = number.as_f64() else { return };
    let get = |k: &str| node.value.get(k).and_then(Value::as_f64);
    if let Some(min) = get("minimum") {
        let exclusive = node.flag("exclusiveMinimum");
        if n < min || (exclusive && n <= min) {
            let relation = if exclusive {
                "greater than"
            } else {
                "greater than or equal to"
            };
            out.push(FieldError::invalid(
                path,
                value.clone(),
                format!(
                    "{} in body should be {relation} {}",
                    show_path(path),
                    trim_float(min)
                ),
            ));
        }
    }
    if let Some(max) = get("maximum") {
        let exclusive = node.flag("exclusiveMaximum");
        if n > max || (exclusive && n >= max) {
            let relation = if exclusive {
                "less than"
            } else {
                "less than or equal to"
            };
            out.push(FieldError::invalid(
                path,
                value.clone(),
                format!(
                    "{} in body should be {relation} {}",
                    show_path(path),
                    trim_float(max)
                ),
            ));
        }
    }
    if let Some(step) = get("multipleOf")
        && step > 0.0
        && (n / step).fract() != 0.0
    {
        out.push(FieldError::invalid(
            path,
            value.clone(),
            format!(
                "{} in body should be a multiple of {}",
                show_path(path),
                trim_float(step)
            ),
        ));
    }
}

fn check_items(items: &[Value], node: Node<'_>, path: &str, out: &mut Vec<FieldError>) {
    check_count(
        node,
        ("maxItems", "minItems", "items"),
        items.len(),
        || Value::Array(items.to_vec()),
        path,
        out,
    );
    match node.list_type() {
        ListType::Atomic => {}
        ListType::Set => {
            for (i, item) in items.iter().enumerate() {
                if items[..i].contains(item) {
                    out.push(FieldError::duplicate(index(path, i), item.clone()));
                }
            }
        }
        ListType::Map(keys) => {
            let key_of = |item: &Value| -> Value {
                Value::Object(
                    keys.iter()
                        .filter_map(|k| item.get(k).map(|v| (k.clone(), v.clone())))
                        .collect(),
                )
            };
            for (i, item) in items.iter().enumerate() {
                let this = key_of(item);
                if items[..i].iter().any(|earlier| key_of(earlier) == this) {
                    out.push(FieldError::duplicate(index(path, i), this));
                }
            }
        }
    }
}

fn check_properties(
    map: &Map<String, Value>,
    node: Node<'_>,
    path: &str,
    out: &mut Vec<FieldError>,
) {
    if let Some(required) = node.value.get("required").and_then(Value::as_array) {
        for name in required.iter().filter_map(Value::as_str) {
            if !map.contains_key(name) {
                out.push(FieldError::required(child(path, name), ""));
            }
        }
    }
    check_count(
        node,
        ("maxProperties", "minProperties", "properties"),
        map.len(),
        || Value::Object(map.clone()),
        path,
        out,
    );
}

/// `max…`/`min…` counts of items or properties: too many is `TooMany`, too few `Invalid`.
fn check_count(
    node: Node<'_>,
    (max_key, min_key, noun): (&str, &str, &str),
    count: usize,
    value: impl Fn() -> Value,
    path: &str,
    out: &mut Vec<FieldError>,
) {
    if let Some(max) = node.count_bound(max_key)
        && count > max
    {
        out.push(FieldError::too_many(path, count, max));
    }
    if let Some(min) = node.count_bound(min_key)
        && count < min
    {
        out.push(FieldError::invalid(
            path,
            value(),
            format!(
                "{} in body should have at least {min} {noun}",
                show_path(path)
            ),
        ));
    }
}

/// Compiled patterns, shared across emulators (CRD patterns are few and fixed).
fn compiled(pattern: &str) -> Option<regex::Regex> {
    static CACHE: OnceLock<Mutex<BTreeMap<String, Option<regex::Regex>>>> = OnceLock::new();
    let cache = CACHE.get_or_init(|| Mutex::new(BTreeMap::new()));
    let mut cache = cache
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    cache
        .entry(pattern.to_owned())
        .or_insert_with(|| regex::Regex::new(pattern).ok())
        .clone()
}

/// `^([+-]?[0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)$` plus the suffix rules `resource.ParseQuantity`
/// applies (one known suffix, digits only in an exponent).
pub(crate) fn is_quantity(text: &str) -> bool {
    const SUFFIXES: &[&str] = &[
        "", "Ki", "Mi", "Gi", "Ti", "Pi", "Ei", "n", "u", "m", "k", "M", "G", "T", "P", "E",
    ];
    let number_end = text
        .char_indices()
        .find(|(i, c)| !(c.is_ascii_digit() || *c == '.' || (*i == 0 && (*c == '+' || *c == '-'))))
        .map_or(text.len(), |(i, _)| i);
    let (number, suffix) = text.split_at(number_end);
    let digits = number.trim_start_matches(['+', '-']);
    if digits.is_empty() || digits == "." || digits.matches('.').count() > 1 {
        return false;
    }
    if SUFFIXES.contains(&suffix) {
        return true;
    }
    // Decimal exponent: e or E, an optional sign, digits.
    suffix
        .strip_prefix(['e', 'E'])
        .map(|rest| rest.strip_prefix(['+', '-']).unwrap_or(rest))
        .is_some_and(|exp| !exp.is_empty() && exp.chars().all(|c| c.is_ascii_digit()))
}

fn type_name(value: &Value) -> &'static str {
    match value {
        Value::Null => "\"null\"",
        Value::Bool(_) => "\"boolean\"",
        Value::Number(n) if n.is_f64() => "\"number\"",
        Value::Number(_) => "\"integer\"",
        Value::String(_) => "\"string\"",
        Value::Array(_) => "\"array\"",
        Value::Object(_) => "\"object\"",
    }
}

/// kube-openapi names the root `body` and nested fields by their path.
fn show_path(path: &str) -> &str {
    if path.is_empty() { "body" } else { path }
}

fn trim_float(n: f64) -> String {
    if n.fract() == 0.0 && n.abs() < 1e15 {
        format!("{n:.0}")
    } else {
        n.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantities_parse_as_the_apiserver_parses_them() {
        for good in [
            "1", "100m", "1.5", "2Gi", "512Mi", "1e3", "+1", "0.5", "1E-2", "10k",
        ] {
            assert!(is_quantity(good), "{good}");
        }
        for bad in ["", "1mb", "abc", "1..2", "Gi", "1 Gi", "1e", "-", "1Mix"] {
            assert!(!is_quantity(bad), "{bad}");
        }
    }

    #[test]
    fn quantities_come_back_in_the_canonical_form_of_resource_quantity() {
        for (given, canonical) in [
            ("1000m", "1"),
            ("1024Mi", "1Gi"),
            ("0.5", "500m"),
            ("1.5", "1500m"),
            ("100m", "100m"),
            ("2000", "2k"),
            ("1500", "1500"),
            ("1536Mi", "1536Mi"),
            ("0.5Gi", "512Mi"),
            ("0.5Ki", "512"),
            ("1.5Ki", "1536"),
            ("512Mi", "512Mi"),
            ("1e3", "1e3"),
            ("1.5e3", "1500"),
            // Kept as sent when canonical-looking (ParseQuantity caches the string).
            ("+1", "+1"),
            ("01", "01"),
            ("01Gi", "01Gi"),
            ("0100m", "0100m"),
            ("1.500", "1.500"),
            ("100Mi", "100Mi"),
            ("1E3", "1E3"),
            ("0", "0"),
            ("0.000", "0"),
            ("-1000m", "-1"),
            ("1G", "1G"),
        ] {
            assert_eq!(
                canonical_quantity(given).as_deref(),
                Some(canonical),
                "{given}"
            );
        }
        assert_eq!(canonical_quantity("1mb"), None);
        assert_eq!(round_up_to_milli("100u").as_deref(), Some("1m"));
        assert_eq!(round_up_to_milli("1500u").as_deref(), Some("2m"));
        assert_eq!(round_up_to_milli("1.5m").as_deref(), Some("2m"));
        assert_eq!(round_up_to_milli("250m"), None);
        assert_eq!(round_up_to_milli("2Gi"), None);
    }

    #[test]
    fn built_in_schemas_carry_list_semantics_and_atomic_selectors() {
        let doc = SchemaDoc::builtin::<k8s_openapi::api::batch::v1::Job>();
        let spec = doc.root().field("spec").unwrap();
        let pod = spec.field("template").unwrap().field("spec").unwrap();
        let containers = pod.field("containers").unwrap();
        assert_eq!(containers.list_type(), ListType::Map(vec!["name".into()]));
        let ports = containers.items().unwrap().field("ports").unwrap();
        assert_eq!(
            ports.list_type(),
            ListType::Map(vec!["containerPort".into(), "protocol".into()])
        );
        let args = containers.items().unwrap().field("args").unwrap();
        assert_eq!(args.list_type(), ListType::Atomic);
        assert!(spec.field("selector").unwrap().atomic_object());
        let meta = doc.root().field("metadata").unwrap();
        assert_eq!(meta.field("finalizers").unwrap().list_type(), ListType::Set);
        assert_eq!(meta.field("labels").unwrap().shape(), Shape::Map);
    }
}
