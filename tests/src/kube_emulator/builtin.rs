//! What the apiserver does for particular built-in types, beyond what every type gets: defaults
//! set on decode, fields the registry fills on create, validation on create and update. Written
//! after the Kubernetes 1.35 sources (`pkg/apis/*/v1/defaults.go`, `pkg/registry/*/strategy.go`,
//! `pkg/apis/*/validation`), for the types Gatehouse uses:
//!
//! - **Job**: pod template defaults, `backoffLimit: 6`, `completions`/`parallelism: 1`,
//!   `completionMode: NonIndexed`, `suspend: false`, `podReplacementPolicy`; the generated
//!   selector (`batch.kubernetes.io/controller-uid`) and the job-name/controller-uid labels on
//!   the template (and on the Job when it has none); the template, selector, completions,
//!   completion mode, pod failure and success policies, `backoffLimitPerIndex` and `managedBy`
//!   immutable; restart policy Never or OnFailure; status transitions as the Job controller must
//!   write them.
//! - **Pod**: pod spec defaults and validation, spec immutable but for images.
//! - **Secret**: `stringData` merged into base64 `data` and never stored; key names; 1 MiB.
//! - **ConfigMap/Secret** `immutable: true`.
//! - **Event** (`events.k8s.io/v1`): `eventTime`, `type`, `reason`/`action`/`note` limits,
//!   `reportingController` a qualified name; most fields immutable.
//! - **Lease**: positive durations.

use base64::Engine as _;
use serde_json::{Map, Value, json};

use super::error::{FieldError, child, index};
use super::meta::{dns_label_errors, dns_subdomain_errors, qualified_name_errors, validate_labels};
use super::schema::is_quantity;

/// Built-in behaviour a resource type has.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Behaviour {
    /// Nothing beyond metadata (ConfigMap-like types without rules, custom resources).
    Generic,
    /// `batch/v1` Job.
    Job,
    /// core/v1 Pod.
    Pod,
    /// core/v1 Secret.
    Secret,
    /// core/v1 ConfigMap.
    ConfigMap,
    /// `events.k8s.io/v1` Event.
    Event,
    /// `coordination.k8s.io/v1` Lease.
    Lease,
    /// `apiextensions.k8s.io/v1` CustomResourceDefinition (stored and validated; the types the
    /// emulator serves do not change with it).
    CustomResourceDefinition,
}

impl Behaviour {
    /// The behaviour of a built-in kind.
    pub fn of(group: &str, kind: &str) -> Behaviour {
        match (group, kind) {
            ("batch", "Job") => Behaviour::Job,
            ("", "Pod") => Behaviour::Pod,
            ("", "Secret") => Behaviour::Secret,
            ("", "ConfigMap") => Behaviour::ConfigMap,
            ("events.k8s.io", "Event") => Behaviour::Event,
            ("coordination.k8s.io", "Lease") => Behaviour::Lease,
            ("apiextensions.k8s.io", "CustomResourceDefinition") => {
                Behaviour::CustomResourceDefinition
            }
            _ => Behaviour::Generic,
        }
    }
}

fn obj(value: &mut Value) -> &mut Map<String, Value> {
    if !value.is_object() {
        *value = json!({});
    }
    match value {
        Value::Object(map) => map,
        _ => unreachable!("made an object above"),
    }
}

fn metadata_of(object: &mut Value) -> &mut Map<String, Value> {
    obj(obj(object).entry("metadata").or_insert_with(|| json!({})))
}

fn default_field(map: &mut Map<String, Value>, key: &str, value: Value) {
    if map.get(key).is_none_or(Value::is_null) {
        map.insert(key.to_owned(), value);
    }
}

fn at<'v>(value: &'v Value, pointer: &str) -> Option<&'v Value> {
    value.pointer(pointer)
}

fn text<'v>(value: &'v Value, pointer: &str) -> &'v str {
    value.pointer(pointer).and_then(Value::as_str).unwrap_or("")
}

// ----- defaults (applied when a body is decoded) -----

/// Defaults the apiserver sets when it decodes a body of this type. A Job without labels gets
/// its template's; on create the registry does that after generating its selector labels
/// (`creating`), on every later write the decoder does.
pub(crate) fn apply_defaults(behaviour: Behaviour, object: &mut Value, creating: bool) {
    match behaviour {
        Behaviour::Job => {
            if let Some(spec) = object.get_mut("spec").and_then(Value::as_object_mut) {
                job_spec_defaults(spec);
            }
            let unlabelled = object
                .pointer("/metadata/labels")
                .and_then(Value::as_object)
                .is_none_or(Map::is_empty);
            if !creating
                && unlabelled
                && let Some(labels) = object.pointer("/spec/template/metadata/labels").cloned()
            {
                metadata_of(object).insert("labels".into(), labels);
            }
        }
        Behaviour::Pod => {
            if let Some(spec) = object.get_mut("spec").and_then(Value::as_object_mut) {
                pod_spec_defaults(spec);
                default_field(spec, "enableServiceLinks", json!(true));
            }
        }
        Behaviour::Secret => {
            if let Some(map) = object.as_object_mut() {
                default_field(map, "type", json!("Opaque"));
            }
        }
        Behaviour::CustomResourceDefinition => {
            // SetDefaults_CustomResourceDefinitionSpec.
            if let Some(spec) = object.get_mut("spec").and_then(Value::as_object_mut) {
                if let Some(names) = spec.get_mut("names").and_then(Value::as_object_mut) {
                    let kind = names
                        .get("kind")
                        .and_then(Value::as_str)
                        .unwrap_or_default()
                        .to_owned();
                    if names
                        .get("singular")
                        .and_then(Value::as_str)
                        .is_none_or(str::is_empty)
                    {
                        names.insert("singular".into(), json!(kind.to_lowercase()));
                    }
                    if !kind.is_empty()
                        && names
                            .get("listKind")
                            .and_then(Value::as_str)
                            .is_none_or(str::is_empty)
                    {
                        names.insert("listKind".into(), json!(format!("{kind}List")));
                    }
                }
                default_field(spec, "conversion", json!({"strategy": "None"}));
            }
        }
        _ => {}
    }
}

fn job_spec_defaults(spec: &mut Map<String, Value>) {
    if spec.get("completions").is_none_or(Value::is_null)
        && spec.get("parallelism").is_none_or(Value::is_null)
    {
        spec.insert("completions".into(), json!(1));
        spec.insert("parallelism".into(), json!(1));
    }
    default_field(spec, "parallelism", json!(1));
    let per_index = spec
        .get("backoffLimitPerIndex")
        .is_some_and(|v| !v.is_null());
    default_field(
        spec,
        "backoffLimit",
        json!(if per_index { i32::MAX } else { 6 }),
    );
    default_field(spec, "completionMode", json!("NonIndexed"));
    default_field(spec, "suspend", json!(false));
    let failure_policy = spec.get("podFailurePolicy").is_some_and(|v| !v.is_null());
    default_field(
        spec,
        "podReplacementPolicy",
        json!(if failure_policy {
            "Failed"
        } else {
            "TerminatingOrFailed"
        }),
    );
    if let Some(template_spec) = spec
        .get_mut("template")
        .and_then(|t| t.get_mut("spec"))
        .and_then(Value::as_object_mut)
    {
        pod_spec_defaults(template_spec);
    }
}

/// `SetDefaults_PodSpec` and the container, port, volume and probe defaults below it.
fn pod_spec_defaults(spec: &mut Map<String, Value>) {
    default_field(spec, "dnsPolicy", json!("ClusterFirst"));
    default_field(spec, "restartPolicy", json!("Always"));
    default_field(spec, "terminationGracePeriodSeconds", json!(30));
    default_field(spec, "securityContext", json!({}));
    default_field(spec, "schedulerName", json!("default-scheduler"));
    for list in ["containers", "initContainers"] {
        if let Some(Value::Array(containers)) = spec.get_mut(list) {
            for container in containers.iter_mut().filter_map(Value::as_object_mut) {
                container_defaults(container);
            }
        }
    }
    if let Some(Value::Array(volumes)) = spec.get_mut("volumes") {
        for volume in volumes.iter_mut().filter_map(Value::as_object_mut) {
            volume_defaults(volume);
        }
    }
}

/// `SetDefaults_Volume` and the volume sources' defaults.
fn volume_defaults(volume: &mut Map<String, Value>) {
    if volume.keys().all(|k| k == "name") {
        volume.insert("emptyDir".into(), json!({}));
    }
    for source in ["secret", "configMap", "projected", "downwardAPI"] {
        if let Some(Value::Object(s)) = volume.get_mut(source) {
            default_field(s, "defaultMode", json!(420));
        }
    }
    if let Some(Value::Object(host_path)) = volume.get_mut("hostPath") {
        default_field(host_path, "type", json!(""));
    }
    if let Some(Value::Array(sources)) = volume
        .get_mut("projected")
        .and_then(|p| p.get_mut("sources"))
    {
        for token in sources
            .iter_mut()
            .filter_map(|s| s.get_mut("serviceAccountToken"))
            .filter_map(Value::as_object_mut)
        {
            default_field(token, "expirationSeconds", json!(3600));
        }
    }
}

/// `SetDefaults_HTTPGetAction`: path `/`, scheme HTTP.
fn http_get_defaults(handler: Option<&mut Value>) {
    if let Some(Value::Object(get)) = handler.and_then(|h| h.get_mut("httpGet")) {
        default_field(get, "path", json!("/"));
        default_field(get, "scheme", json!("HTTP"));
    }
}

fn container_defaults(container: &mut Map<String, Value>) {
    default_field(
        container,
        "terminationMessagePath",
        json!("/dev/termination-log"),
    );
    default_field(container, "terminationMessagePolicy", json!("File"));
    default_field(container, "resources", json!({}));
    let image = container
        .get("image")
        .and_then(Value::as_str)
        .unwrap_or_default();
    let latest = !image.contains('@') && {
        let last = image.rsplit('/').next().unwrap_or(image);
        last.split_once(':').is_none_or(|(_, tag)| tag == "latest")
    };
    default_field(
        container,
        "imagePullPolicy",
        json!(if latest { "Always" } else { "IfNotPresent" }),
    );
    if let Some(Value::Array(ports)) = container.get_mut("ports") {
        for port in ports.iter_mut().filter_map(Value::as_object_mut) {
            default_field(port, "protocol", json!("TCP"));
        }
    }
    if let Some(Value::Array(env)) = container.get_mut("env") {
        for var in env.iter_mut() {
            if let Some(Value::Object(field_ref)) = var.pointer_mut("/valueFrom/fieldRef") {
                default_field(field_ref, "apiVersion", json!("v1"));
            }
        }
    }
    for probe in ["livenessProbe", "readinessProbe", "startupProbe"] {
        if let Some(Value::Object(p)) = container.get_mut(probe) {
            default_field(p, "timeoutSeconds", json!(1));
            default_field(p, "periodSeconds", json!(10));
            default_field(p, "successThreshold", json!(1));
            default_field(p, "failureThreshold", json!(3));
        }
        http_get_defaults(container.get_mut(probe));
    }
    for hook in ["postStart", "preStop"] {
        http_get_defaults(container.get_mut("lifecycle").and_then(|l| l.get_mut(hook)));
    }
}

// ----- create -----

/// What the registry fills in on create, after the name and uid are known.
pub(crate) fn prepare_create(behaviour: Behaviour, object: &mut Value) {
    match behaviour {
        Behaviour::Job => {
            generate_job_selector(object);
            if let Some(map) = object.as_object_mut() {
                map.insert("status".into(), json!({}));
            }
        }
        Behaviour::Pod => {
            let qos = pod_qos(object);
            if let Some(map) = object.as_object_mut() {
                map.insert(
                    "status".into(),
                    json!({"phase": "Pending", "qosClass": qos}),
                );
            }
        }
        Behaviour::Secret => merge_string_data(object),
        Behaviour::CustomResourceDefinition => {
            // The CRD strategy's PrepareForCreate: a fresh status recording the storage version.
            let storage: Vec<Value> = object
                .pointer("/spec/versions")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .filter(|v| v.get("storage") == Some(&json!(true)))
                .filter_map(|v| v.get("name").cloned())
                .take(1)
                .collect();
            if let Some(map) = object.as_object_mut() {
                map.insert("status".into(), json!({"storedVersions": storage}));
            }
        }
        _ => {}
    }
}

/// What a built-in type's status strategy resets on a `/status` write (its `GetResetFields` and
/// `PrepareForUpdate`): the spec for all, the owner references and deletion timestamp too for
/// Pods.
pub(crate) fn status_resets(behaviour: Behaviour) -> &'static [&'static str] {
    match behaviour {
        Behaviour::Pod => &[
            "/spec",
            "/metadata/ownerReferences",
            "/metadata/deletionTimestamp",
        ],
        _ => &["/spec"],
    }
}

/// What the registry does on every update of the main resource.
pub(crate) fn prepare_update(behaviour: Behaviour, object: &mut Value) {
    if behaviour == Behaviour::Secret {
        merge_string_data(object);
    }
}

const CONTROLLER_UID: &str = "batch.kubernetes.io/controller-uid";
const LEGACY_CONTROLLER_UID: &str = "controller-uid";
const JOB_NAME: &str = "batch.kubernetes.io/job-name";
const LEGACY_JOB_NAME: &str = "job-name";

/// The Job registry's `generateSelector`: labels on the template, the selector on the uid, and
/// (because a Job without labels had its labels defaulted to the template's very map, when the
/// template had one) the same labels on the Job. A template without labels gives the Job none
/// on create; it gets them on its next write.
fn generate_job_selector(job: &mut Value) {
    let uid = text(job, "/metadata/uid").to_owned();
    let name = text(job, "/metadata/name").to_owned();
    let template_had_labels = job.pointer("/spec/template/metadata/labels").is_some();
    let had_labels = !template_had_labels
        || job
            .pointer("/metadata/labels")
            .and_then(Value::as_object)
            .is_some_and(|m| !m.is_empty());
    let manual = job.pointer("/spec/manualSelector") == Some(&json!(true));
    let Some(spec) = job.get_mut("spec").and_then(Value::as_object_mut) else {
        return;
    };
    if !manual {
        let template = obj(spec.entry("template").or_insert_with(|| json!({})));
        let meta = obj(template.entry("metadata").or_insert_with(|| json!({})));
        let labels = obj(meta.entry("labels").or_insert_with(|| json!({})));
        for (key, value) in [
            (LEGACY_CONTROLLER_UID, &uid),
            (CONTROLLER_UID, &uid),
            (LEGACY_JOB_NAME, &name),
            (JOB_NAME, &name),
        ] {
            default_field(labels, key, json!(value));
        }
        let selector = obj(spec.entry("selector").or_insert_with(|| json!({})));
        let match_labels = obj(selector.entry("matchLabels").or_insert_with(|| json!({})));
        default_field(match_labels, CONTROLLER_UID, json!(uid));
    }
    let template_labels = spec
        .get("template")
        .and_then(|t| t.pointer("/metadata/labels"))
        .cloned();
    if !had_labels
        && let Some(labels) = template_labels
        && let Some(meta) = job.get_mut("metadata").and_then(Value::as_object_mut)
    {
        meta.insert("labels".into(), labels);
    }
}

fn merge_string_data(secret: &mut Value) {
    let Some(map) = secret.as_object_mut() else {
        return;
    };
    let Some(Value::Object(string_data)) = map.remove("stringData") else {
        return;
    };
    let data = obj(map.entry("data").or_insert_with(|| json!({})));
    for (k, v) in string_data {
        let plain = v.as_str().unwrap_or_default();
        data.insert(
            k,
            json!(base64::engine::general_purpose::STANDARD.encode(plain)),
        );
    }
}

fn pod_qos(pod: &Value) -> &'static str {
    let containers: Vec<&Value> = ["/spec/containers", "/spec/initContainers"]
        .iter()
        .filter_map(|p| pod.pointer(p).and_then(Value::as_array))
        .flatten()
        .collect();
    let has = |c: &Value, kind: &str| {
        c.pointer(&format!("/resources/{kind}"))
            .and_then(Value::as_object)
            .is_some_and(|m| !m.is_empty())
    };
    if containers
        .iter()
        .all(|c| !has(c, "requests") && !has(c, "limits"))
    {
        return "BestEffort";
    }
    let guaranteed = containers.iter().all(|c| {
        ["cpu", "memory"].iter().all(|r| {
            let limit = c.pointer(&format!("/resources/limits/{r}"));
            let request = c.pointer(&format!("/resources/requests/{r}")).or(limit);
            limit.is_some() && request == limit
        })
    });
    if guaranteed {
        "Guaranteed"
    } else {
        "Burstable"
    }
}

// ----- validation -----

/// The name rule of a type (most: DNS subdomain).
pub(crate) fn name_errors(name: &str) -> Vec<FieldError> {
    dns_subdomain_errors(name)
        .into_iter()
        .map(|msg| FieldError::invalid("metadata.name", json!(name), msg))
        .collect()
}

/// Type-specific validation of a new object.
pub(crate) fn validate_create(behaviour: Behaviour, object: &Value, out: &mut Vec<FieldError>) {
    match behaviour {
        Behaviour::Job => validate_job(object, out),
        Behaviour::Pod => {
            if let Some(spec) = at(object, "/spec") {
                validate_pod_spec(spec, "spec", true, out);
            } else {
                out.push(FieldError::required("spec.containers", ""));
            }
        }
        Behaviour::Secret => validate_secret(object, out),
        Behaviour::ConfigMap => validate_config_map(object, out),
        Behaviour::Event => validate_event(object, out),
        Behaviour::Lease => validate_lease(object, out),
        Behaviour::CustomResourceDefinition => validate_crd(object, out),
        Behaviour::Generic => {}
    }
}

/// The parts of the apiextensions validation Gatehouse's CRDs meet: the name is
/// `<plural>.<group>`, the scope is `Namespaced` or `Cluster`, exactly one version is stored.
fn validate_crd(crd: &Value, out: &mut Vec<FieldError>) {
    let (plural, group) = (text(crd, "/spec/names/plural"), text(crd, "/spec/group"));
    if plural.is_empty() {
        out.push(FieldError::required("spec.names.plural", ""));
    }
    if text(crd, "/spec/names/kind").is_empty() {
        out.push(FieldError::required("spec.names.kind", ""));
    }
    if group.is_empty() {
        out.push(FieldError::required("spec.group", ""));
    }
    let name = text(crd, "/metadata/name");
    if !plural.is_empty() && !group.is_empty() && name != format!("{plural}.{group}") {
        out.push(FieldError::invalid(
            "metadata.name",
            json!(name),
            "must be spec.names.plural+\".\"+spec.group",
        ));
    }
    let scope = text(crd, "/spec/scope");
    if scope != "Namespaced" && scope != "Cluster" {
        out.push(FieldError::unsupported(
            "spec.scope",
            json!(scope),
            &["Cluster", "Namespaced"],
        ));
    }
    let versions = at(crd, "/spec/versions")
        .and_then(Value::as_array)
        .map_or(&[][..], Vec::as_slice);
    if versions.is_empty() {
        out.push(FieldError::invalid(
            "spec.versions",
            json!([]),
            "must have exactly one version marked as storage version",
        ));
    } else if versions
        .iter()
        .filter(|v| v.get("storage") == Some(&json!(true)))
        .count()
        != 1
    {
        out.push(FieldError::invalid(
            "spec.versions",
            json!(versions),
            "must have exactly one version marked as storage version",
        ));
    }
}

/// Type-specific validation of a change (`old` is the stored object).
pub(crate) fn validate_update(
    behaviour: Behaviour,
    old: &Value,
    new: &Value,
    status: bool,
    out: &mut Vec<FieldError>,
) {
    if status {
        if behaviour == Behaviour::Job {
            validate_job_status(old, new, out);
        }
        return;
    }
    match behaviour {
        Behaviour::Job => {
            validate_job_spec(new, out);
            validate_job_update(old, new, out);
        }
        Behaviour::Pod => validate_pod_update(old, new, out),
        Behaviour::CustomResourceDefinition => {
            validate_crd(new, out);
            for field in ["group", "scope"] {
                if old.pointer(&format!("/spec/{field}")) != new.pointer(&format!("/spec/{field}"))
                {
                    out.push(FieldError::immutable(
                        format!("spec.{field}"),
                        new.pointer(&format!("/spec/{field}"))
                            .cloned()
                            .unwrap_or(Value::Null),
                    ));
                }
            }
        }
        Behaviour::Secret | Behaviour::ConfigMap => {
            if behaviour == Behaviour::Secret {
                validate_secret(new, out);
                if old.get("type") != new.get("type") {
                    out.push(FieldError::immutable(
                        "type",
                        new.get("type").cloned().unwrap_or(Value::Null),
                    ));
                }
            } else {
                validate_config_map(new, out);
            }
            validate_immutable_data(old, new, out);
        }
        Behaviour::Event => {
            validate_event_fields(new, out);
            for field in [
                "regarding",
                "reason",
                "note",
                "action",
                "related",
                "reportingController",
                "reportingInstance",
                "type",
                "eventTime",
                "deprecatedSource",
                "deprecatedFirstTimestamp",
                "deprecatedLastTimestamp",
                "deprecatedCount",
            ] {
                if old.get(field) != new.get(field) {
                    out.push(FieldError::immutable(
                        legacy_event_field(field),
                        new.get(field).cloned().unwrap_or(Value::Null),
                    ));
                }
            }
            if old.get("series") != new.get("series") {
                validate_series(new, out);
            }
        }
        Behaviour::Lease => validate_lease(new, out),
        Behaviour::Generic => {}
    }
}

fn nonnegative(value: Option<&Value>, path: &str, out: &mut Vec<FieldError>) {
    if let Some(n) = value.and_then(Value::as_i64)
        && n < 0
    {
        out.push(FieldError::invalid(
            path,
            json!(n),
            "must be greater than or equal to 0",
        ));
    }
}

fn validate_job(job: &Value, out: &mut Vec<FieldError>) {
    validate_generated_selector(job, out);
    validate_job_spec(job, out);
}

fn validate_generated_selector(job: &Value, out: &mut Vec<FieldError>) {
    if at(job, "/spec/manualSelector") == Some(&json!(true)) || at(job, "/spec/selector").is_none()
    {
        return;
    }
    let uid = text(job, "/metadata/uid");
    let name = text(job, "/metadata/name");
    for (key, value) in [
        (LEGACY_CONTROLLER_UID, uid),
        (LEGACY_JOB_NAME, name),
        (CONTROLLER_UID, uid),
        (JOB_NAME, name),
    ] {
        let actual = job
            .pointer("/spec/template/metadata/labels")
            .and_then(|l| l.get(key))
            .and_then(Value::as_str);
        match actual {
            None => out.push(FieldError::required(
                format!("spec.template.metadata.labels[{key}]"),
                format!("must be '{value}'"),
            )),
            Some(v) if v != value => out.push(FieldError::invalid(
                format!("spec.template.metadata.labels[{key}]"),
                json!(v),
                format!("must be '{value}'"),
            )),
            Some(_) => {}
        }
    }
    let expected = json!({CONTROLLER_UID: uid, JOB_NAME: name, LEGACY_CONTROLLER_UID: uid, LEGACY_JOB_NAME: name});
    if let Some(selector) = at(job, "/spec/selector")
        && !selector_matches(selector, &expected)
    {
        out.push(FieldError::invalid(
            "spec.selector",
            selector.clone(),
            "`selector` not auto-generated",
        ));
    }
}

/// Whether a LabelSelector (matchLabels and matchExpressions) selects `labels`.
pub(crate) fn selector_matches(selector: &Value, labels: &Value) -> bool {
    let get = |k: &str| labels.get(k).and_then(Value::as_str);
    let labels_ok = selector
        .get("matchLabels")
        .and_then(Value::as_object)
        .is_none_or(|m| m.iter().all(|(k, v)| get(k) == v.as_str()));
    let expressions_ok = selector
        .get("matchExpressions")
        .and_then(Value::as_array)
        .is_none_or(|exprs| {
            exprs.iter().all(|e| {
                let key = e.get("key").and_then(Value::as_str).unwrap_or("");
                let values: Vec<&str> = e
                    .get("values")
                    .and_then(Value::as_array)
                    .map(|v| v.iter().filter_map(Value::as_str).collect())
                    .unwrap_or_default();
                match e.get("operator").and_then(Value::as_str) {
                    Some("In") => get(key).is_some_and(|v| values.contains(&v)),
                    Some("NotIn") => get(key).is_none_or(|v| !values.contains(&v)),
                    Some("Exists") => get(key).is_some(),
                    Some("DoesNotExist") => get(key).is_none(),
                    _ => false,
                }
            })
        });
    labels_ok && expressions_ok
}

fn validate_job_spec(job: &Value, out: &mut Vec<FieldError>) {
    let Some(spec) = at(job, "/spec") else {
        out.push(FieldError::required("spec.template", ""));
        return;
    };
    validate_job_counts_and_modes(spec, out);
    match spec.get("selector") {
        None => out.push(FieldError::required("spec.selector", "")),
        Some(selector) => {
            let template_labels = spec
                .pointer("/template/metadata/labels")
                .cloned()
                .unwrap_or_else(|| json!({}));
            if !selector_matches(selector, &template_labels) {
                out.push(FieldError::invalid(
                    "spec.template.metadata.labels",
                    template_labels,
                    "`selector` does not match template `labels`",
                ));
            }
        }
    }
    validate_pod_template(spec.get("template"), "spec.template", out);
    validate_job_restart_policy(spec, out);
}

/// Counts, completion mode and the fields that depend on it, replacement policy, managedBy.
fn validate_job_counts_and_modes(spec: &Value, out: &mut Vec<FieldError>) {
    for field in [
        "parallelism",
        "completions",
        "activeDeadlineSeconds",
        "backoffLimit",
        "ttlSecondsAfterFinished",
        "backoffLimitPerIndex",
        "maxFailedIndexes",
    ] {
        nonnegative(spec.get(field), &format!("spec.{field}"), out);
    }
    let mode = spec
        .get("completionMode")
        .and_then(Value::as_str)
        .unwrap_or("NonIndexed");
    if !matches!(mode, "NonIndexed" | "Indexed") {
        out.push(FieldError::unsupported(
            "spec.completionMode",
            json!(mode),
            &["NonIndexed", "Indexed"],
        ));
    }
    if mode == "Indexed" && spec.get("completions").is_none() {
        out.push(FieldError::required(
            "spec.completions",
            "when completion mode is Indexed",
        ));
    }
    if mode != "Indexed" {
        for field in ["backoffLimitPerIndex", "maxFailedIndexes"] {
            if let Some(v) = spec.get(field) {
                out.push(FieldError::invalid(
                    format!("spec.{field}"),
                    v.clone(),
                    "requires indexed completion mode",
                ));
            }
        }
        if let Some(v) = spec.get("successPolicy") {
            out.push(FieldError::invalid(
                "spec.successPolicy",
                v.clone(),
                "requires indexed completion mode",
            ));
        }
    }
    if let Some(policy) = spec.get("podReplacementPolicy").and_then(Value::as_str) {
        if spec.get("podFailurePolicy").is_some() {
            if policy != "Failed" {
                out.push(FieldError::unsupported(
                    "spec.podReplacementPolicy",
                    json!(policy),
                    &["Failed"],
                ));
            }
        } else if !matches!(policy, "Failed" | "TerminatingOrFailed") {
            out.push(FieldError::unsupported(
                "spec.podReplacementPolicy",
                json!(policy),
                &["Failed", "TerminatingOrFailed"],
            ));
        }
    }
    if let Some(managed_by) = spec.get("managedBy").and_then(Value::as_str) {
        if managed_by.len() > 63 {
            out.push(FieldError::too_long("spec.managedBy", 63));
        }
        if !managed_by.contains('/') {
            out.push(FieldError::invalid(
                "spec.managedBy",
                json!(managed_by),
                "must be a domain-prefixed path (such as \"acme.io/foo\")",
            ));
        }
    }
}

/// A Job's pods never restart in place for ever: Never or OnFailure, and Never with a pod
/// failure policy.
fn validate_job_restart_policy(spec: &Value, out: &mut Vec<FieldError>) {
    let restart = spec
        .pointer("/template/spec/restartPolicy")
        .and_then(Value::as_str)
        .unwrap_or("");
    let path = "spec.template.spec.restartPolicy";
    if restart.is_empty() || restart == "Always" {
        out.push(FieldError::required(
            path,
            "valid values: \"OnFailure\", \"Never\"",
        ));
    } else if !matches!(restart, "OnFailure" | "Never") {
        out.push(FieldError::unsupported(
            path,
            json!(restart),
            &["OnFailure", "Never"],
        ));
    } else if spec.get("podFailurePolicy").is_some() && restart != "Never" {
        out.push(FieldError::invalid(
            path,
            json!(restart),
            "only \"Never\" is supported when podFailurePolicy is specified",
        ));
    }
}

fn validate_pod_template(template: Option<&Value>, path: &str, out: &mut Vec<FieldError>) {
    let Some(template) = template else {
        out.push(FieldError::required(child(path, "spec.containers"), ""));
        return;
    };
    validate_labels(
        template.pointer("/metadata/labels"),
        &format!("{path}.labels"),
        out,
    );
    match template.get("spec") {
        Some(spec) => validate_pod_spec(spec, &child(path, "spec"), false, out),
        None => out.push(FieldError::required(child(path, "spec.containers"), "")),
    }
}

/// A subset of `ValidatePodSpec`: containers, volumes and their mounts, ports, env names,
/// resources, restart and DNS policies, deadlines.
fn validate_pod_spec(spec: &Value, path: &str, is_pod: bool, out: &mut Vec<FieldError>) {
    let volumes: Vec<&str> = spec
        .get("volumes")
        .and_then(Value::as_array)
        .map(|v| v.iter().map(|vol| text(vol, "/name")).collect())
        .unwrap_or_default();
    for (i, name) in volumes.iter().enumerate() {
        let vpath = format!("{}.name", index(&child(path, "volumes"), i));
        if name.is_empty() {
            out.push(FieldError::required(vpath, ""));
        } else {
            for msg in dns_label_errors(name) {
                out.push(FieldError::invalid(&vpath, json!(name), msg));
            }
            if volumes[..i].contains(name) {
                out.push(FieldError::duplicate(vpath, json!(name)));
            }
        }
    }
    let containers = spec.get("containers").and_then(Value::as_array);
    if containers.is_none_or(Vec::is_empty) {
        out.push(FieldError::required(child(path, "containers"), ""));
    }
    let mut seen: Vec<&str> = Vec::new();
    for list in ["initContainers", "containers"] {
        for (i, container) in spec
            .get(list)
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .enumerate()
        {
            let cpath = index(&child(path, list), i);
            validate_container(container, &cpath, &volumes, is_pod, &mut seen, out);
        }
    }
    if let Some(policy) = spec.get("restartPolicy").and_then(Value::as_str)
        && !matches!(policy, "Always" | "OnFailure" | "Never")
    {
        out.push(FieldError::unsupported(
            child(path, "restartPolicy"),
            json!(policy),
            &["Always", "OnFailure", "Never"],
        ));
    }
    if let Some(policy) = spec.get("dnsPolicy").and_then(Value::as_str)
        && !matches!(
            policy,
            "ClusterFirstWithHostNet" | "ClusterFirst" | "Default" | "None"
        )
    {
        out.push(FieldError::unsupported(
            child(path, "dnsPolicy"),
            json!(policy),
            &["ClusterFirstWithHostNet", "ClusterFirst", "Default", "None"],
        ));
    }
    if let Some(n) = spec.get("activeDeadlineSeconds").and_then(Value::as_i64)
        && n < 1
    {
        out.push(FieldError::invalid(
            child(path, "activeDeadlineSeconds"),
            json!(n),
            "must be between 1 and 2147483647, inclusive",
        ));
    }
    nonnegative(
        spec.get("terminationGracePeriodSeconds"),
        &child(path, "terminationGracePeriodSeconds"),
        out,
    );
    if let Some(sa) = spec.get("serviceAccountName").and_then(Value::as_str)
        && !sa.is_empty()
    {
        for msg in dns_subdomain_errors(sa) {
            out.push(FieldError::invalid(
                child(path, "serviceAccountName"),
                json!(sa),
                msg,
            ));
        }
    }
}

fn validate_container<'v>(
    container: &'v Value,
    path: &str,
    volumes: &[&str],
    is_pod: bool,
    seen: &mut Vec<&'v str>,
    out: &mut Vec<FieldError>,
) {
    let name = text(container, "/name");
    let name_path = child(path, "name");
    if name.is_empty() {
        out.push(FieldError::required(&name_path, ""));
    } else {
        for msg in dns_label_errors(name) {
            out.push(FieldError::invalid(&name_path, json!(name), msg));
        }
        if seen.contains(&name) {
            out.push(FieldError::duplicate(&name_path, json!(name)));
        }
        seen.push(name);
    }
    if is_pod && text(container, "/image").trim().is_empty() {
        out.push(FieldError::required(child(path, "image"), ""));
    }
    for (i, port) in container
        .get("ports")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .enumerate()
    {
        let ppath = index(&child(path, "ports"), i);
        let number = port
            .get("containerPort")
            .and_then(Value::as_i64)
            .unwrap_or(0);
        if !(1..=65535).contains(&number) {
            out.push(FieldError::invalid(
                child(&ppath, "containerPort"),
                json!(number),
                "must be between 1 and 65535, inclusive",
            ));
        }
        let protocol = text(port, "/protocol");
        if !protocol.is_empty() && !matches!(protocol, "TCP" | "UDP" | "SCTP") {
            out.push(FieldError::unsupported(
                child(&ppath, "protocol"),
                json!(protocol),
                &["SCTP", "TCP", "UDP"],
            ));
        }
    }
    for (i, var) in container
        .get("env")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .enumerate()
    {
        if text(var, "/name").is_empty() {
            out.push(FieldError::required(
                format!("{}.name", index(&child(path, "env"), i)),
                "",
            ));
        }
    }
    let mut mount_paths: Vec<&str> = Vec::new();
    for (i, mount) in container
        .get("volumeMounts")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .enumerate()
    {
        let mpath = index(&child(path, "volumeMounts"), i);
        let volume = text(mount, "/name");
        if volume.is_empty() {
            out.push(FieldError::required(child(&mpath, "name"), ""));
        } else if !volumes.contains(&volume) {
            out.push(FieldError::not_found(child(&mpath, "name"), json!(volume)));
        }
        let mount_path = text(mount, "/mountPath");
        if mount_path.is_empty() {
            out.push(FieldError::required(child(&mpath, "mountPath"), ""));
        } else if mount_paths.contains(&mount_path) {
            out.push(FieldError::invalid(
                child(&mpath, "mountPath"),
                json!(mount_path),
                "must be unique",
            ));
        }
        mount_paths.push(mount_path);
    }
    validate_resources(container.get("resources"), &child(path, "resources"), out);
}

fn validate_resources(resources: Option<&Value>, path: &str, out: &mut Vec<FieldError>) {
    let Some(resources) = resources else { return };
    let section = |k: &str| resources.get(k).and_then(Value::as_object);
    for kind in ["limits", "requests"] {
        for (name, _) in section(kind).into_iter().flatten() {
            let standard = matches!(name.as_str(), "cpu" | "memory" | "ephemeral-storage")
                || name.starts_with("hugepages-");
            if !standard && (!name.contains('/') || !qualified_name_errors(name).is_empty()) {
                out.push(FieldError::invalid(
                    format!("{path}.{kind}[{name}]"),
                    json!(name),
                    "must be a standard resource type or fully qualified",
                ));
            }
        }
    }
    let (Some(limits), Some(requests)) = (section("limits"), section("requests")) else {
        return;
    };
    for (name, request) in requests {
        let (Some(limit), Some(request_n)) = (
            limits.get(name).and_then(quantity_value),
            quantity_value(request),
        ) else {
            continue;
        };
        if request_n > limit {
            let shown = request
                .as_str()
                .map_or_else(|| request.to_string(), str::to_owned);
            let limit_text = limits[name]
                .as_str()
                .map_or_else(|| limits[name].to_string(), str::to_owned);
            out.push(FieldError::invalid(
                format!("{path}.requests"),
                json!(shown),
                format!("must be less than or equal to {name} limit of {limit_text}"),
            ));
        }
    }
}

/// A quantity as a number (precise enough to compare requests with limits).
fn quantity_value(value: &Value) -> Option<f64> {
    if let Some(n) = value.as_f64() {
        return Some(n);
    }
    let text = value.as_str()?;
    if !is_quantity(text) {
        return None;
    }
    let split = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.' || c == '+' || c == '-'))
        .unwrap_or(text.len());
    let (number, suffix) = text.split_at(split);
    let n: f64 = number.parse().ok()?;
    let factor = match suffix {
        "" => 1.0,
        "n" => 1e-9,
        "u" => 1e-6,
        "m" => 1e-3,
        "k" => 1e3,
        "M" => 1e6,
        "G" => 1e9,
        "T" => 1e12,
        "P" => 1e15,
        "E" => 1e18,
        "Ki" => 1024.0,
        "Mi" => 1024.0_f64.powi(2),
        "Gi" => 1024.0_f64.powi(3),
        "Ti" => 1024.0_f64.powi(4),
        "Pi" => 1024.0_f64.powi(5),
        "Ei" => 1024.0_f64.powi(6),
        exp => 10f64.powi(exp[1..].parse::<i32>().ok()?),
    };
    Some(n * factor)
}

/// Fields of a suspended Job that never started may change (scheduling directives).
fn mutable_scheduling_directives(old: &Value) -> bool {
    at(old, "/spec/suspend") == Some(&json!(true)) && at(old, "/status/startTime").is_none()
}

fn validate_job_update(old: &Value, new: &Value, out: &mut Vec<FieldError>) {
    let spec = |v: &Value, f: &str| v.pointer(&format!("/spec/{f}")).cloned();
    for field in [
        "completions",
        "selector",
        "completionMode",
        "podFailurePolicy",
        "backoffLimitPerIndex",
        "managedBy",
        "successPolicy",
    ] {
        if spec(old, field) != spec(new, field) {
            out.push(FieldError::immutable(
                format!("spec.{field}"),
                spec(new, field).unwrap_or(Value::Null),
            ));
        }
    }
    let mut old_template = spec(old, "template").unwrap_or(Value::Null);
    let new_template = spec(new, "template").unwrap_or(Value::Null);
    if mutable_scheduling_directives(old) {
        for pointer in [
            "/metadata/labels",
            "/metadata/annotations",
            "/spec/nodeSelector",
            "/spec/tolerations",
            "/spec/schedulingGates",
            "/spec/affinity/nodeAffinity",
        ] {
            let wanted = new_template.pointer(pointer).cloned();
            set_pointer(&mut old_template, pointer, wanted);
        }
        if let Some(affinity) = old_template.pointer("/spec/affinity")
            && affinity.as_object().is_some_and(Map::is_empty)
            && new_template.pointer("/spec/affinity").is_none()
        {
            set_pointer(&mut old_template, "/spec/affinity", None);
        }
    }
    if old_template != new_template {
        out.push(FieldError::immutable("spec.template", new_template));
    }
}

fn set_pointer(value: &mut Value, pointer: &str, new: Option<Value>) {
    let mut parts: Vec<&str> = pointer.trim_start_matches('/').split('/').collect();
    let Some(last) = parts.pop() else { return };
    let mut cursor = value;
    for part in parts {
        if new.is_none() && cursor.get(part).is_none() {
            return;
        }
        cursor = obj(cursor)
            .entry(part.to_owned())
            .or_insert_with(|| json!({}));
    }
    let map = obj(cursor);
    match new {
        Some(v) => {
            map.insert(last.to_owned(), v);
        }
        None => {
            map.remove(last);
        }
    }
}

fn condition_true(job: &Value, type_: &str) -> bool {
    job.pointer("/status/conditions")
        .and_then(Value::as_array)
        .is_some_and(|cs| {
            cs.iter()
                .any(|c| text(c, "/type") == type_ && text(c, "/status") == "True")
        })
}

/// The status rules the API enforces on whoever writes a Job's status (the Job controller in a
/// real cluster; here the test playing it).
fn validate_job_status(old: &Value, new: &Value, out: &mut Vec<FieldError>) {
    let has = |job: &Value, type_: &str| condition_true(job, type_);
    let (complete, failed) = (has(new, "Complete"), has(new, "Failed"));
    let finished = complete || failed;
    let count = |v: &Value, f: &str| {
        v.pointer(&format!("/status/{f}"))
            .and_then(Value::as_i64)
            .unwrap_or(0)
    };
    for field in ["active", "succeeded", "failed", "ready", "terminating"] {
        nonnegative(
            new.pointer(&format!("/status/{field}")),
            &format!("status.{field}"),
            out,
        );
    }
    let condition_rules = [
        (
            complete && failed,
            "cannot set Complete=True and Failed=true conditions",
        ),
        (
            complete && has(new, "FailureTarget"),
            "cannot set Complete=True and FailureTarget=true conditions",
        ),
        (
            failed && !has(new, "FailureTarget"),
            "cannot set Failed=True condition without the FailureTarget=true condition",
        ),
        (
            complete && !has(new, "SuccessCriteriaMet"),
            "cannot set Complete=True condition without the SuccessCriteriaMet=true condition",
        ),
        (
            has(new, "SuccessCriteriaMet") && (failed || has(new, "FailureTarget")),
            "cannot set SuccessCriteriaMet=True and FailureTarget=true conditions",
        ),
    ];
    for (broken, message) in condition_rules {
        if broken {
            out.push(FieldError::invalid(
                "status.conditions",
                Value::Null,
                message,
            ));
        }
    }
    let completion_time = new.pointer("/status/completionTime");
    if completion_time.is_some() && !complete {
        out.push(FieldError::invalid(
            "status.completionTime",
            completion_time.cloned().unwrap_or_default(),
            "cannot set completionTime when there is no Complete=True condition",
        ));
    }
    if completion_time.is_none() && complete {
        out.push(FieldError::required(
            "status.completionTime",
            "completionTime is required for Complete jobs",
        ));
    }
    if finished && count(new, "active") > 0 {
        out.push(FieldError::invalid(
            "status.active",
            json!(count(new, "active")),
            "active>0 is invalid for finished job",
        ));
    }
    if finished && new.pointer("/status/startTime").is_none() {
        out.push(FieldError::required(
            "status.startTime",
            "startTime is required for finished job",
        ));
    }
    for type_ in ["Failed", "Complete", "FailureTarget", "SuccessCriteriaMet"] {
        if has(old, type_) && !has(new, type_) {
            out.push(FieldError::invalid(
                "status.conditions",
                Value::Null,
                format!("cannot disable the terminal {type_}=True condition"),
            ));
        }
    }
    for counter in ["failed", "succeeded"] {
        if count(new, counter) < count(old, counter) {
            out.push(FieldError::invalid(
                format!("status.{counter}"),
                json!(count(new, counter)),
                format!("cannot decrease the {counter} counter"),
            ));
        }
    }
    if let (Some(before), Some(after)) = (old.pointer("/status/completionTime"), completion_time)
        && before != after
    {
        out.push(FieldError::invalid(
            "status.completionTime",
            after.clone(),
            "completionTime cannot be mutated",
        ));
    }
}

fn validate_pod_update(old: &Value, new: &Value, out: &mut Vec<FieldError>) {
    // Only images, activeDeadlineSeconds and added tolerations may change.
    let strip = |pod: &Value| {
        let mut spec = pod.get("spec").cloned().unwrap_or(Value::Null);
        for list in ["containers", "initContainers"] {
            if let Some(Value::Array(cs)) = spec.get_mut(list) {
                for c in cs.iter_mut().filter_map(Value::as_object_mut) {
                    c.remove("image");
                }
            }
        }
        if let Some(map) = spec.as_object_mut() {
            map.remove("activeDeadlineSeconds");
            map.remove("tolerations");
        }
        spec
    };
    if strip(old) != strip(new) {
        out.push(FieldError::forbidden(
            "spec",
            "pod updates may not change fields other than `spec.containers[*].image`,`spec.initContainers[*].image`,`spec.activeDeadlineSeconds`,`spec.tolerations` (only additions to existing tolerations),`spec.terminationGracePeriodSeconds` (allow it to be set to 1 if it was previously negative)",
        ));
    }
}

fn validate_data_keys(map: Option<&Value>, path: &str, out: &mut Vec<FieldError>) {
    for key in map
        .and_then(Value::as_object)
        .into_iter()
        .flat_map(Map::keys)
    {
        let ok = !key.is_empty()
            && key.len() <= 253
            && key
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
        if !ok {
            out.push(FieldError::invalid(
                format!("{path}[{key}]"),
                json!(key),
                "a valid config key must consist of alphanumeric characters, '-', '_' or '.' (e.g. 'key.name',  or 'KEY_NAME',  or 'key-name', regex used for validation is '[-._a-zA-Z0-9]+')",
            ));
        }
    }
}

fn validate_secret(secret: &Value, out: &mut Vec<FieldError>) {
    validate_data_keys(secret.get("data"), "data", out);
    let total: usize = secret
        .get("data")
        .and_then(Value::as_object)
        .map_or(0, |m| {
            m.values()
                .filter_map(Value::as_str)
                .map(|v| {
                    base64::engine::general_purpose::STANDARD
                        .decode(v)
                        .map_or(0, |b| b.len())
                })
                .sum()
        });
    if total > 1024 * 1024 {
        out.push(FieldError::too_long("data", 1024 * 1024));
    }
}

fn validate_config_map(config_map: &Value, out: &mut Vec<FieldError>) {
    validate_data_keys(config_map.get("data"), "data", out);
    validate_data_keys(config_map.get("binaryData"), "binaryData", out);
    let text_size: usize = config_map
        .get("data")
        .and_then(Value::as_object)
        .map_or(0, |m| {
            m.iter()
                .map(|(k, v)| k.len() + v.as_str().map_or(0, str::len))
                .sum()
        });
    let binary_size: usize = config_map
        .get("binaryData")
        .and_then(Value::as_object)
        .map_or(0, |m| {
            m.iter()
                .map(|(k, v)| {
                    k.len()
                        + v.as_str().map_or(0, |b| {
                            base64::engine::general_purpose::STANDARD
                                .decode(b)
                                .map_or(0, |d| d.len())
                        })
                })
                .sum()
        });
    if text_size + binary_size > 1024 * 1024 {
        out.push(FieldError::too_long("[]", 1024 * 1024));
    }
}

fn validate_immutable_data(old: &Value, new: &Value, out: &mut Vec<FieldError>) {
    if old.get("immutable") != Some(&json!(true)) {
        return;
    }
    if new.get("immutable") != Some(&json!(true)) {
        out.push(FieldError::forbidden(
            "immutable",
            "field is immutable when `immutable` is set",
        ));
    }
    for field in ["data", "binaryData", "stringData", "type"] {
        if old.get(field) != new.get(field) {
            out.push(FieldError::forbidden(
                field,
                "field is immutable when `immutable` is set",
            ));
        }
    }
}

/// The internal (core) name of an `events.k8s.io/v1` field: the apiserver validates the
/// converted object, so its messages name `message`, not `note`.
fn legacy_event_field(field: &str) -> &str {
    match field {
        "regarding" => "involvedObject",
        "note" => "message",
        "deprecatedSource" => "source",
        "deprecatedFirstTimestamp" => "firstTimestamp",
        "deprecatedLastTimestamp" => "lastTimestamp",
        "deprecatedCount" => "count",
        other => other,
    }
}

fn validate_event(event: &Value, out: &mut Vec<FieldError>) {
    validate_event_fields(event, out);
    validate_series(event, out);
    if event.get("eventTime").is_none() {
        out.push(FieldError::required("eventTime", ""));
    }
    let type_ = text(event, "/type");
    if type_ != "Normal" && type_ != "Warning" {
        out.push(FieldError::invalid(
            "type",
            json!(""),
            format!("has invalid value: {type_}"),
        ));
    }
    for (field, legacy) in [
        ("deprecatedFirstTimestamp", "firstTimestamp"),
        ("deprecatedLastTimestamp", "lastTimestamp"),
        ("deprecatedCount", "count"),
        ("deprecatedSource", "source"),
    ] {
        let set = event.get(field).is_some_and(|v| match v {
            Value::Number(n) => n.as_i64() != Some(0),
            Value::Object(m) => m
                .values()
                .any(|x| x.as_str().is_some_and(|s| !s.is_empty())),
            Value::Null => false,
            _ => true,
        });
        if set {
            out.push(FieldError::invalid(legacy, json!(""), "needs to be unset"));
        }
    }
}

fn validate_series(event: &Value, out: &mut Vec<FieldError>) {
    if let Some(series) = event.get("series") {
        if series.get("count").and_then(Value::as_i64).unwrap_or(0) < 2 {
            out.push(FieldError::invalid(
                "series.count",
                json!(""),
                "should be at least 2",
            ));
        }
        if series.get("lastObservedTime").is_none() {
            out.push(FieldError::required("series.lastObservedTime", ""));
        }
    }
}

/// `legacyValidateEvent` for events with an `eventTime`, which every `events.k8s.io/v1` event
/// has.
fn validate_event_fields(event: &Value, out: &mut Vec<FieldError>) {
    let namespace = text(event, "/metadata/namespace");
    let regarding_ns = text(event, "/regarding/namespace");
    if regarding_ns.is_empty() && namespace != "default" && namespace != "kube-system" {
        out.push(FieldError::invalid(
            "involvedObject.namespace",
            json!(regarding_ns),
            "does not match event.namespace",
        ));
    }
    let controller = text(event, "/reportingController");
    if controller.is_empty() {
        out.push(FieldError::required("reportingController", ""));
    }
    for msg in qualified_name_errors(controller) {
        out.push(FieldError::invalid(
            "reportingController",
            json!(controller),
            msg,
        ));
    }
    let limited = [
        ("reportingInstance", "reportingInstance", 128, true),
        ("action", "action", 128, true),
        ("reason", "reason", 128, true),
        ("note", "message", 1024, false),
    ];
    for (field, legacy, max, required) in limited {
        let value = text(event, &format!("/{field}"));
        if required && value.is_empty() {
            out.push(FieldError::required(legacy, ""));
        }
        if value.len() > max {
            out.push(FieldError::invalid(
                legacy,
                json!(""),
                format!("can have at most {max} characters"),
            ));
        }
    }
}

fn validate_lease(lease: &Value, out: &mut Vec<FieldError>) {
    if let Some(n) = lease
        .pointer("/spec/leaseDurationSeconds")
        .and_then(Value::as_i64)
        && n <= 0
    {
        out.push(FieldError::invalid(
            "spec.leaseDurationSeconds",
            json!(n),
            "must be greater than 0",
        ));
    }
    nonnegative(
        lease.pointer("/spec/leaseTransitions"),
        "spec.leaseTransitions",
        out,
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantities_compare_across_suffixes() {
        assert!(quantity_value(&json!("500m")).unwrap() < quantity_value(&json!("1")).unwrap());
        assert!(quantity_value(&json!("1Gi")).unwrap() > quantity_value(&json!("1G")).unwrap());
        assert!((quantity_value(&json!(2)).unwrap() - 2.0).abs() < f64::EPSILON);
        assert!(quantity_value(&json!("1e3")).unwrap() > 999.0);
    }
}
