//! Finer points of a real kube-apiserver 1.35 the Kubernetes API emulator reproduces, each with
//! the apiserver, apimachinery or structured-merge-diff source it follows: what the server stores
//! and returns, how it words conflicts, the checks around apply and patches, and the garbage
//! collector's owner rules. Found by walking real sequences against the emulator.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::Duration;

use gatehouse_crds::ScanRequest;
use gatehouse_tests::http::{HttpResponse, request};
use gatehouse_tests::kube_support::{api_status, job_body, sample};
use gatehouse_tests::{JobState, KubeEmulator};
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{ConfigMap, Pod, Secret};
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams, PropagationPolicy};
use serde_json::{Value, json};

const NS: &str = "gatehouse-scans";

async fn send(
    k8s: &KubeEmulator,
    method: &str,
    path: &str,
    ct: &str,
    body: &Value,
) -> HttpResponse {
    request(
        k8s.addr(),
        method,
        path,
        &[("Content-Type", ct)],
        body.to_string().as_bytes(),
    )
    .await
    .unwrap()
}

fn jobs_path() -> String {
    format!("/apis/batch/v1/namespaces/{NS}/jobs")
}

fn cm_path(name: &str) -> String {
    format!("/api/v1/namespaces/{NS}/configmaps/{name}")
}

fn sample_request() -> Value {
    sample("scanrequest.yaml")
}

// ---------------------------------------------------------------- server-side apply

/// structuredmerge.go Apply: `typeConverter.ObjectToTyped(patchObj)` validates the applied
/// configuration against the schema; an unknown field fails the apply ("failed to create typed
/// patch object ...: .spec: field not declared in schema", a plain error, so 500), whatever
/// `fieldValidation` says.
#[tokio::test]
async fn apply_with_an_unknown_field_fails_whatever_field_validation_says() {
    let k8s = KubeEmulator::start().await.unwrap();
    for query in ["", "&fieldValidation=Ignore"] {
        let body = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "x"},
            "data": {"a": "1"}, "spec": {"typo": 1}});
        let raw = send(
            &k8s,
            "PATCH",
            &format!("{}?fieldManager=op{query}", cm_path("x")),
            "application/apply-patch+yaml",
            &body,
        )
        .await;
        assert_eq!(raw.status, 500, "{query}: {}", raw.text());
        assert!(
            raw.text().contains("field not declared in schema"),
            "{}",
            raw.text()
        );
    }
    assert!(k8s.names::<ConfigMap>(NS).is_empty());

    // The operator's status apply with a field the installed CRD does not have (version skew).
    let requests = format!("/apis/gatehouse.dev/v1alpha1/namespaces/{NS}/scanrequests");
    let created = send(
        &k8s,
        "POST",
        &requests,
        "application/json",
        &sample_request(),
    )
    .await;
    assert_eq!(created.status, 201, "{}", created.text());
    let name = created.json()["metadata"]["name"]
        .as_str()
        .unwrap()
        .to_owned();
    let status = json!({"apiVersion": "gatehouse.dev/v1alpha1", "kind": "ScanRequest",
        "metadata": {"name": name}, "status": {"phase": "Running", "newField": "x"}});
    let raw = send(
        &k8s,
        "PATCH",
        &format!("{requests}/{name}/status?fieldManager=gatehouse-operator&force=true"),
        "application/apply-patch+yaml",
        &status,
    )
    .await;
    assert_eq!(raw.status, 500, "{}", raw.text());
}

/// patch.go applyPatch -> checkName: an apply that creates starts from an empty object, so a body
/// without metadata.name names no object: 400 "the name of the object () does not match the name on
/// the URL (x)".
#[tokio::test]
async fn apply_that_creates_without_metadata_name_is_400() {
    let k8s = KubeEmulator::start().await.unwrap();
    let raw = send(
        &k8s,
        "PATCH",
        &format!("{}?fieldManager=op", cm_path("x")),
        "application/apply-patch+yaml",
        &json!({"apiVersion": "v1", "kind": "ConfigMap", "data": {"a": "1"}}),
    )
    .await;
    assert_eq!(raw.status, 400, "{}", raw.text());
    assert!(raw.text().contains("does not match the name on the URL"));
}

/// Conflict messages name an Update manager as `"editor" using v1` — never with a time: the manager
/// identifier is built with `Time = nil` (managedfields.go BuildManagerIdentifier), so conflict.go
/// printManager never reaches its `at <time>` branch.
#[tokio::test]
async fn conflict_with_an_update_manager_is_worded_without_a_time() {
    let k8s = KubeEmulator::start().await.unwrap();
    let api: Api<ConfigMap> = Api::namespaced(k8s.client(), NS);
    let cm = |data: Value| json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"}, "data": data});
    api.create(
        &PostParams {
            field_manager: Some("editor".into()),
            ..PostParams::default()
        },
        &serde_json::from_value(cm(json!({"b": "x"}))).unwrap(),
    )
    .await
    .unwrap();
    let err = api_status(
        api.patch(
            "c",
            &PatchParams::apply("second"),
            &Patch::Apply(cm(json!({"b": "y"}))),
        )
        .await
        .unwrap_err(),
    );
    assert_eq!(
        err.message,
        "Apply failed with 1 conflict: conflict with \"editor\" using v1: .data.b"
    );
}

/// managedfields.go sortEncodedManagedFields: by operation first (Apply < Update), then time,
/// manager, apiVersion, subresource.
#[tokio::test]
async fn managed_fields_list_apply_entries_before_update_entries() {
    let k8s = KubeEmulator::start().await.unwrap();
    let api: Api<ConfigMap> = Api::namespaced(k8s.client(), NS);
    api.create(
        &PostParams {
            field_manager: Some("creator".into()),
            ..PostParams::default()
        },
        &serde_json::from_value(json!({"metadata": {"name": "c"}, "data": {"a": "1"}})).unwrap(),
    )
    .await
    .unwrap();
    k8s.advance_clock(Duration::from_secs(10));
    let applied = api
        .patch(
            "c",
            &PatchParams::apply("applier"),
            &Patch::Apply(json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"}, "data": {"b": "2"}})),
        )
        .await
        .unwrap();
    let entries = applied.metadata.managed_fields.unwrap();
    let order: Vec<&str> = entries
        .iter()
        .map(|e| e.operation.as_deref().unwrap())
        .collect();
    assert_eq!(order, ["Apply", "Update"]);
}

/// managedfieldsupdater.go Apply: the time is set only when the apply changed the object; a new
/// applier that shares a value already there gets an entry without `time`.
#[tokio::test]
async fn an_apply_that_changes_nothing_records_no_time() {
    let k8s = KubeEmulator::start().await.unwrap();
    let api: Api<ConfigMap> = Api::namespaced(k8s.client(), NS);
    let cm = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"}, "data": {"a": "1"}});
    api.patch("c", &PatchParams::apply("first"), &Patch::Apply(&cm))
        .await
        .unwrap();
    let shared = api
        .patch("c", &PatchParams::apply("second"), &Patch::Apply(&cm))
        .await
        .unwrap();
    let second = shared
        .metadata
        .managed_fields
        .unwrap()
        .into_iter()
        .find(|e| e.manager.as_deref() == Some("second"))
        .unwrap();
    assert!(second.time.is_none(), "{:?}", second.time);
}

/// structured-merge-diff v6.3 (Kubernetes 1.35): a keyed-list item without a key field takes the
/// key's schema default (`protocol: TCP` for ports), so applying ports without a protocol works.
#[tokio::test]
async fn apply_of_ports_without_protocol_uses_the_key_default() {
    let k8s = KubeEmulator::start().await.unwrap();
    let jobs: Api<Job> = Api::namespaced(k8s.client(), NS);
    let mut body = job_body("ports");
    body["spec"]["template"]["spec"]["containers"][0]["ports"] = json!([{"containerPort": 8080}]);
    jobs.patch("ports", &PatchParams::apply("op"), &Patch::Apply(&body))
        .await
        .unwrap();
    // Keyed as TCP: the same port applied with the protocol spelled out is the same item.
    body["spec"]["template"]["spec"]["containers"][0]["ports"] =
        json!([{"containerPort": 8080, "protocol": "TCP"}]);
    let again = jobs
        .patch("ports", &PatchParams::apply("op"), &Patch::Apply(&body))
        .await
        .unwrap();
    let ports = again.spec.unwrap().template.spec.unwrap().containers[0]
        .ports
        .clone()
        .unwrap();
    assert_eq!(ports.len(), 1);
    assert_eq!(ports[0].protocol.as_deref(), Some("TCP"));
}

/// Two managers applying the same Job whose env var has `value: ""`: the server stores the object
/// without the empty string (omitempty), so the second applier's `value` is an *added* field owned
/// by the first: 409 on a real server (kubernetes/kubernetes#128924).
#[tokio::test]
async fn empty_strings_and_lists_are_not_stored_for_built_in_types() {
    let k8s = KubeEmulator::start().await.unwrap();
    let jobs: Api<Job> = Api::namespaced(k8s.client(), NS);
    let mut body = job_body("empty");
    body["spec"]["template"]["spec"]["containers"][0]["env"] = json!([{"name": "A", "value": ""}]);
    body["spec"]["template"]["spec"]["containers"][0]["args"] = json!([]);
    body["spec"]["template"]["spec"]["containers"][0]["workingDir"] = json!("");
    let created = jobs
        .patch("empty", &PatchParams::apply("one"), &Patch::Apply(&body))
        .await
        .unwrap();
    let created = serde_json::to_value(created).unwrap();
    let container = &created["spec"]["template"]["spec"]["containers"][0];
    assert!(container.get("args").is_none(), "{container}");
    assert!(container.get("workingDir").is_none(), "{container}");
    assert!(container["env"][0].get("value").is_none(), "{container}");
    let err = api_status(
        jobs.patch("empty", &PatchParams::apply("two"), &Patch::Apply(&body))
            .await
            .unwrap_err(),
    );
    assert_eq!(err.code, 409);
}

// ---------------------------------------------------------------- what the server returns

/// resource.Quantity is stored and returned in canonical form ("1000m" -> "1", "1024Mi" -> "1Gi",
/// "0.5" -> "500m").
#[tokio::test]
async fn quantities_come_back_in_canonical_form() {
    let k8s = KubeEmulator::start().await.unwrap();
    let jobs: Api<Job> = Api::namespaced(k8s.client(), NS);
    let mut body = job_body("q");
    body["spec"]["template"]["spec"]["containers"][0]["resources"] = json!({
        "limits": {"cpu": "1000m", "memory": "1024Mi"}, "requests": {"cpu": "0.5"}});
    let created = jobs
        .create(
            &PostParams::default(),
            &serde_json::from_value(body).unwrap(),
        )
        .await
        .unwrap();
    let created = serde_json::to_value(created).unwrap();
    let resources = &created["spec"]["template"]["spec"]["containers"][0]["resources"];
    assert_eq!(
        resources,
        &json!({"limits": {"cpu": "1", "memory": "1Gi"}, "requests": {"cpu": "500m"}})
    );
}

/// SetDefaults_Job runs on every decode: a Job whose labels are emptied gets its template's labels
/// again.
#[tokio::test]
async fn a_job_whose_labels_are_removed_gets_the_template_labels_again() {
    let k8s = KubeEmulator::start().await.unwrap();
    let jobs: Api<Job> = Api::namespaced(k8s.client(), NS);
    let mut body = job_body("relabel");
    body["metadata"]["labels"] = json!({"team": "a"});
    jobs.create(
        &PostParams::default(),
        &serde_json::from_value(body).unwrap(),
    )
    .await
    .unwrap();
    let patched = jobs
        .patch(
            "relabel",
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"labels": null}})),
        )
        .await
        .unwrap();
    let labels = patched.metadata.labels.unwrap_or_default();
    assert_eq!(
        labels
            .get("batch.kubernetes.io/job-name")
            .map(String::as_str),
        Some("relabel"),
        "{labels:?}"
    );
}

// ---------------------------------------------------------------- malformed writes

/// patch.go applyPatch -> checkName / EnsureObjectNamespaceMatchesRequestNamespace: a patch that
/// renames, moves or strips the metadata is 400.
#[tokio::test]
async fn patches_that_rename_or_move_an_object_are_400() {
    let k8s = KubeEmulator::start().await.unwrap();
    let api: Api<ConfigMap> = Api::namespaced(k8s.client(), NS);
    api.create(
        &PostParams::default(),
        &serde_json::from_value(json!({"metadata": {"name": "c", "labels": {"a": "b"},
            "finalizers": ["a.dev/keep"]}, "data": {"k": "v"}}))
        .unwrap(),
    )
    .await
    .unwrap();
    for patch in [
        json!({"metadata": {"name": "other"}}),
        json!({"metadata": {"namespace": "other"}}),
        json!({"metadata": null}),
    ] {
        let raw = send(
            &k8s,
            "PATCH",
            &cm_path("c"),
            "application/merge-patch+json",
            &patch,
        )
        .await;
        assert_eq!(raw.status, 400, "{patch}: {}", raw.text());
    }
    // PUT without a name: checkName in UpdateResource.
    let raw = send(
        &k8s,
        "PUT",
        &cm_path("c"),
        "application/json",
        &json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {}, "data": {"k": "w"}}),
    )
    .await;
    assert_eq!(raw.status, 400, "{}", raw.text());
}

/// patch.go jsonPatcher: a patched object that no longer decodes is `errors.NewInvalid(...,
/// field.Invalid("patch", ...))`: 422, not 400.
#[tokio::test]
async fn a_json_patch_whose_result_does_not_decode_is_422() {
    let k8s = KubeEmulator::start().await.unwrap();
    let jobs: Api<Job> = Api::namespaced(k8s.client(), NS);
    jobs.create(
        &PostParams::default(),
        &serde_json::from_value(job_body("j")).unwrap(),
    )
    .await
    .unwrap();
    let ops = json!([{"op": "replace", "path": "/spec/backoffLimit", "value": "many"}]);
    let err = api_status(
        jobs.patch(
            "j",
            &PatchParams::default(),
            &Patch::<()>::Json(serde_json::from_value(ops).unwrap()),
        )
        .await
        .unwrap_err(),
    );
    assert_eq!((err.code, err.reason.as_str()), (422, "Invalid"));
}

/// json-patch `test` with a null value passes only when the parent exists and the key is missing; a
/// missing parent is "test operation does not apply: is missing path" (422).
#[tokio::test]
async fn a_null_test_under_a_missing_parent_fails() {
    let k8s = KubeEmulator::start().await.unwrap();
    let api: Api<ConfigMap> = Api::namespaced(k8s.client(), NS);
    api.create(
        &PostParams::default(),
        &serde_json::from_value(json!({"metadata": {"name": "c", "labels": {"a": "b"}}})).unwrap(),
    )
    .await
    .unwrap();
    // Parent present, key missing: the test of null passes (kube's finalizer helper relies on it).
    let ops = json!([
        {"op": "test", "path": "/metadata/labels/owner", "value": null},
        {"op": "add", "path": "/metadata/labels/owner", "value": "me"},
    ]);
    api.patch(
        "c",
        &PatchParams::default(),
        &Patch::<()>::Json(serde_json::from_value(ops).unwrap()),
    )
    .await
    .unwrap();
    let ops = json!([
        {"op": "test", "path": "/metadata/annotations/owner", "value": null},
        {"op": "add", "path": "/metadata/annotations", "value": {"owner": "me"}},
    ]);
    let err = api_status(
        api.patch(
            "c",
            &PatchParams::default(),
            &Patch::<()>::Json(serde_json::from_value(ops).unwrap()),
        )
        .await
        .unwrap_err(),
    );
    assert_eq!(err.code, 422);
}

/// A patch removing resourceVersion from a custom resource: the store finds no resourceVersion and
/// the CRD strategy allows no unconditional update: 422 "must be specified for an update".
#[tokio::test]
async fn a_patch_dropping_the_resource_version_of_a_custom_resource_is_422() {
    let k8s = KubeEmulator::start().await.unwrap();
    let requests = format!("/apis/gatehouse.dev/v1alpha1/namespaces/{NS}/scanrequests");
    let created = send(
        &k8s,
        "POST",
        &requests,
        "application/json",
        &sample_request(),
    )
    .await;
    let name = created.json()["metadata"]["name"]
        .as_str()
        .unwrap()
        .to_owned();
    let raw = send(
        &k8s,
        "PATCH",
        &format!("{requests}/{name}"),
        "application/merge-patch+json",
        &json!({"metadata": {"resourceVersion": null, "labels": {"x": "y"}}}),
    )
    .await;
    assert_eq!(raw.status, 422, "{}", raw.text());
}

/// ValidateObjectMetaUpdate: deletionTimestamp is immutable through updates (422).
#[tokio::test]
async fn a_patch_setting_deletion_timestamp_is_422() {
    let k8s = KubeEmulator::start().await.unwrap();
    let api: Api<ConfigMap> = Api::namespaced(k8s.client(), NS);
    api.create(
        &PostParams::default(),
        &serde_json::from_value(json!({"metadata": {"name": "c"}})).unwrap(),
    )
    .await
    .unwrap();
    let raw = send(
        &k8s,
        "PATCH",
        &cm_path("c"),
        "application/merge-patch+json",
        &json!({"metadata": {"deletionTimestamp": "2020-01-01T00:00:00Z"}}),
    )
    .await;
    assert_eq!(raw.status, 422, "{}", raw.text());
}

/// A PUT carrying another uid becomes a UID precondition in DefaultUpdatedObjectInfo: 409 Conflict
/// ("Precondition failed: UID in precondition ..."), not 422.
#[tokio::test]
async fn a_put_with_another_uid_is_a_409_precondition_failure() {
    let k8s = KubeEmulator::start().await.unwrap();
    let api: Api<ConfigMap> = Api::namespaced(k8s.client(), NS);
    let mut created = api
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({"metadata": {"name": "c"}})).unwrap(),
        )
        .await
        .unwrap();
    created.metadata.uid = Some("00000000-0000-4000-8000-ffffffffffff".into());
    let err = api_status(
        api.replace("c", &PostParams::default(), &created)
            .await
            .unwrap_err(),
    );
    assert_eq!(err.code, 409, "{}", err.message);
}

/// FieldManager.Update / decodeLiveOrNew: a write that sets `managedFields: [{}]` resets them (and,
/// managed fields being empty, the write itself is not tracked).
#[tokio::test]
async fn an_update_can_reset_managed_fields() {
    let k8s = KubeEmulator::start().await.unwrap();
    let api: Api<ConfigMap> = Api::namespaced(k8s.client(), NS);
    api.create(
        &PostParams {
            field_manager: Some("creator".into()),
            ..PostParams::default()
        },
        &serde_json::from_value(json!({"metadata": {"name": "c"}, "data": {"a": "1"}})).unwrap(),
    )
    .await
    .unwrap();
    let reset = api
        .patch(
            "c",
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"managedFields": [{}]}})),
        )
        .await
        .unwrap();
    assert!(
        reset.metadata.managed_fields.is_none(),
        "{:?}",
        reset.metadata.managed_fields
    );
    // Untracked from now on: the next ordinary write records no manager.
    let next = api
        .patch(
            "c",
            &PatchParams {
                field_manager: Some("editor".into()),
                ..PatchParams::default()
            },
            &Patch::Merge(json!({"data": {"b": "2"}})),
        )
        .await
        .unwrap();
    assert!(next.metadata.managed_fields.is_none());
}

/// ValidateConfigMap: data and binaryData together at most 1 MiB (422).
#[tokio::test]
async fn a_config_map_over_one_mebibyte_is_422() {
    let k8s = KubeEmulator::start().await.unwrap();
    let api: Api<ConfigMap> = Api::namespaced(k8s.client(), NS);
    let result = api
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({"metadata": {"name": "big"},
                "data": {"a": "x".repeat(1024 * 1024 + 1)}}))
            .unwrap(),
        )
        .await;
    match result {
        Err(kube::Error::Api(status)) => assert_eq!(status.code, 422),
        Ok(_) => panic!("a 1 MiB + 1 byte ConfigMap was accepted"),
        Err(other) => panic!("{other}"),
    }
}

// ---------------------------------------------------------------- deletion and GC

/// garbagecollector.go attemptToDeleteItem: a dependent with a solid owner is never deleted; its
/// reference to an owner waiting for dependents (foreground) is removed instead.
#[tokio::test]
async fn a_dependent_with_another_live_owner_survives_a_foreground_owner_deletion() {
    let k8s = KubeEmulator::start().await.unwrap();
    let api: Api<ConfigMap> = Api::namespaced(k8s.client(), NS);
    let mut refs = Vec::new();
    for owner in ["owner-1", "owner-2"] {
        let created = api
            .create(
                &PostParams::default(),
                &serde_json::from_value(json!({"metadata": {"name": owner}})).unwrap(),
            )
            .await
            .unwrap();
        refs.push(
            json!({"apiVersion": "v1", "kind": "ConfigMap", "name": owner,
            "uid": created.metadata.uid.unwrap()}),
        );
    }
    api.create(
        &PostParams::default(),
        &serde_json::from_value(json!({"metadata": {"name": "dep", "ownerReferences": refs}}))
            .unwrap(),
    )
    .await
    .unwrap();
    api.delete("owner-1", &DeleteParams::foreground())
        .await
        .unwrap();
    let dep = api.get("dep").await.expect("kept: owner-2 still owns it");
    let owners: Vec<String> = dep
        .metadata
        .owner_references
        .unwrap()
        .into_iter()
        .map(|r| r.name)
        .collect();
    assert_eq!(owners, ["owner-2"]);
}

/// store.go shouldOrphanDependents: without a policy in the request, an `orphan` finalizer already
/// on the object decides (it overrides the type's default).
#[tokio::test]
async fn delete_without_a_policy_honours_an_orphan_finalizer_already_present() {
    let k8s = KubeEmulator::start().await.unwrap();
    let api: Api<ConfigMap> = Api::namespaced(k8s.client(), NS);
    let owner = api
        .create(
            &PostParams::default(),
            &serde_json::from_value(
                json!({"metadata": {"name": "owner", "finalizers": ["orphan"]}}),
            )
            .unwrap(),
        )
        .await
        .unwrap();
    api.create(
        &PostParams::default(),
        &serde_json::from_value(json!({"metadata": {"name": "dep", "ownerReferences": [
            {"apiVersion": "v1", "kind": "ConfigMap", "name": "owner", "uid": owner.metadata.uid.unwrap()}]}}))
        .unwrap(),
    )
    .await
    .unwrap();
    api.delete("owner", &DeleteParams::default()).await.unwrap();
    let dep = api.get("dep").await.expect("orphaned, not deleted");
    assert!(dep.metadata.owner_references.is_none());
}

/// Apply that would create an object but names a uid: patch.go applyPatch answers 409 "uid
/// mismatch: the provided object specified uid ..., and no existing object was found" — the guard a
/// controller relies on not to resurrect an object deleted under it.
#[tokio::test]
async fn apply_with_a_uid_does_not_resurrect_a_deleted_object() {
    let k8s = KubeEmulator::start().await.unwrap();
    let api: Api<ConfigMap> = Api::namespaced(k8s.client(), NS);
    let created = api
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({"metadata": {"name": "c"}})).unwrap(),
        )
        .await
        .unwrap();
    api.delete("c", &DeleteParams::default()).await.unwrap();
    let err = api_status(
        api.patch(
            "c",
            &PatchParams::apply("op"),
            &Patch::Apply(json!({"apiVersion": "v1", "kind": "ConfigMap",
                "metadata": {"name": "c", "uid": created.metadata.uid.unwrap()},
                "data": {"a": "1"}})),
        )
        .await
        .unwrap_err(),
    );
    assert_eq!(err.code, 409, "{}", err.message);
    assert!(k8s.names::<ConfigMap>(NS).is_empty());
}

/// Leases, like custom resources, do not allow unconditional updates
/// (leaseStrategy.AllowUnconditionalUpdate() == false): a PUT without resourceVersion is 422.
#[tokio::test]
async fn a_lease_put_without_resource_version_is_422() {
    let k8s = KubeEmulator::start().await.unwrap();
    let leases: Api<Lease> = Api::namespaced(k8s.client(), NS);
    let mut lease = leases
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({"metadata": {"name": "l"},
                "spec": {"holderIdentity": "a", "leaseDurationSeconds": 15}}))
            .unwrap(),
        )
        .await
        .unwrap();
    lease.metadata.resource_version = None;
    lease.spec.as_mut().unwrap().holder_identity = Some("b".into());
    let err = api_status(
        leases
            .replace("l", &PostParams::default(), &lease)
            .await
            .unwrap_err(),
    );
    assert_eq!(err.code, 422, "{}", err.message);
}

/// ValidateSecretUpdate: a Secret's type is immutable (422), `immutable: true` or not.
#[tokio::test]
async fn a_secret_type_is_immutable() {
    let k8s = KubeEmulator::start().await.unwrap();
    let secrets: Api<Secret> = Api::namespaced(k8s.client(), NS);
    secrets
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({"metadata": {"name": "s"}, "stringData": {"a": "b"}}))
                .unwrap(),
        )
        .await
        .unwrap();
    let err = api_status(
        secrets
            .patch(
                "s",
                &PatchParams::default(),
                &Patch::Merge(json!({"type": "example.com/other"})),
            )
            .await
            .unwrap_err(),
    );
    assert_eq!(err.code, 422);
}

/// ConfigMaps (like Secrets, Leases, Events, ServiceAccounts) have no metadata.generation: their
/// strategies never set it.
#[tokio::test]
async fn config_maps_have_no_generation() {
    let k8s = KubeEmulator::start().await.unwrap();
    let api: Api<ConfigMap> = Api::namespaced(k8s.client(), NS);
    let created = api
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({"metadata": {"name": "c"}, "data": {"a": "1"}}))
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(created.metadata.generation, None);
}

/// ValidatePatchOptions / ValidateCreateOptions: bad option values are 422 Invalid
/// (`PatchOptions.meta.k8s.io "" is invalid: ...`), and `force` is refused on a non-apply patch
/// even when false.
#[tokio::test]
async fn invalid_write_options_are_422() {
    let k8s = KubeEmulator::start().await.unwrap();
    let api: Api<ConfigMap> = Api::namespaced(k8s.client(), NS);
    api.create(
        &PostParams::default(),
        &serde_json::from_value(json!({"metadata": {"name": "c"}})).unwrap(),
    )
    .await
    .unwrap();
    for query in ["fieldValidation=strict", "dryRun=true", "force=false"] {
        let raw = send(
            &k8s,
            "PATCH",
            &format!("{}?{query}", cm_path("c")),
            "application/merge-patch+json",
            &json!({"data": {"a": "1"}}),
        )
        .await;
        assert_eq!(raw.status, 422, "{query}: {}", raw.text());
    }
}

/// skipnonapplied.go: an update of an object whose managedFields are empty is not tracked (until
/// the first apply, which then gives the existing fields to "before-first-apply"). A ConfigMap
/// created with only a name has no managed fields, so the later patch records none either.
#[tokio::test]
async fn updates_of_an_untracked_object_stay_untracked_until_the_first_apply() {
    let k8s = KubeEmulator::start().await.unwrap();
    let api: Api<ConfigMap> = Api::namespaced(k8s.client(), NS);
    api.create(
        &PostParams {
            field_manager: Some("creator".into()),
            ..PostParams::default()
        },
        &serde_json::from_value(json!({"metadata": {"name": "c"}})).unwrap(),
    )
    .await
    .unwrap();
    api.patch(
        "c",
        &PatchParams {
            field_manager: Some("editor".into()),
            ..PatchParams::default()
        },
        &Patch::Merge(json!({"data": {"a": "1"}})),
    )
    .await
    .unwrap();
    let err = api_status(
        api.patch(
            "c",
            &PatchParams::apply("applier"),
            &Patch::Apply(json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"}, "data": {"a": "2"}})),
        )
        .await
        .unwrap_err(),
    );
    assert!(
        err.message.contains("\"before-first-apply\""),
        "{}",
        err.message
    );
}

/// dedupOwnerReferencesAndAddWarning (create, update and patch handlers): duplicate owner
/// references are collapsed with a warning.
#[tokio::test]
async fn duplicate_owner_references_are_deduplicated() {
    let k8s = KubeEmulator::start().await.unwrap();
    let reference = json!({"apiVersion": "v1", "kind": "ConfigMap", "name": "o", "uid": "u-1"});
    let raw = send(
        &k8s,
        "POST",
        &format!("/api/v1/namespaces/{NS}/configmaps"),
        "application/json",
        &json!({"metadata": {"name": "dup", "ownerReferences": [reference, reference]}}),
    )
    .await;
    assert_eq!(raw.status, 201, "{}", raw.text());
    assert_eq!(
        raw.json()["metadata"]["ownerReferences"]
            .as_array()
            .unwrap()
            .len(),
        1
    );
    assert!(
        raw.headers["warning"].contains("Duplicate UIDs found in ownerReferences: [u-1]"),
        "{:?}",
        raw.headers
    );
}

// ---------------------------------------------------------------- sequences

/// Apply by A, update by B, apply by A again: 409 naming B; A dropping the field leaves B's value.
#[tokio::test]
async fn apply_then_update_by_another_then_apply_again_conflicts_and_leaves_the_updaters_value() {
    let k8s = KubeEmulator::start().await.unwrap();
    let api: Api<ConfigMap> = Api::namespaced(k8s.client(), NS);
    let cm = |data: Value| json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"}, "data": data});
    api.patch(
        "c",
        &PatchParams::apply("a"),
        &Patch::Apply(cm(json!({"x": "1", "y": "1"}))),
    )
    .await
    .unwrap();
    api.patch(
        "c",
        &PatchParams {
            field_manager: Some("b".into()),
            ..PatchParams::default()
        },
        &Patch::Merge(json!({"data": {"x": "2"}})),
    )
    .await
    .unwrap();
    let err = api_status(
        api.patch(
            "c",
            &PatchParams::apply("a"),
            &Patch::Apply(cm(json!({"x": "1", "y": "1"}))),
        )
        .await
        .unwrap_err(),
    );
    assert_eq!(err.code, 409);
    let after = api
        .patch(
            "c",
            &PatchParams::apply("a"),
            &Patch::Apply(cm(json!({"y": "1"}))),
        )
        .await
        .unwrap();
    assert_eq!(after.data.unwrap()["x"], "2");
}

/// A keyed list item the applier stops sending is removed; one another applier sent stays.
#[tokio::test]
async fn a_keyed_list_item_its_applier_stops_sending_goes_unless_another_applier_sent_it() {
    use k8s_openapi::api::core::v1::ServiceAccount;
    let k8s = KubeEmulator::start().await.unwrap();
    let api: Api<ServiceAccount> = Api::namespaced(k8s.client(), NS);
    let sa = |names: &[&str]| {
        let secrets: Vec<Value> = names.iter().map(|n| json!({"name": n})).collect();
        json!({"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "sa"}, "secrets": secrets})
    };
    api.patch(
        "sa",
        &PatchParams::apply("a"),
        &Patch::Apply(sa(&["s1", "s2", "s3"])),
    )
    .await
    .unwrap();
    api.patch("sa", &PatchParams::apply("b"), &Patch::Apply(sa(&["s3"])))
        .await
        .unwrap();
    let after = api
        .patch("sa", &PatchParams::apply("a"), &Patch::Apply(sa(&["s1"])))
        .await
        .unwrap();
    let names: Vec<String> = after
        .secrets
        .unwrap()
        .into_iter()
        .map(|s| s.name.unwrap_or_default())
        .collect();
    assert_eq!(names, ["s1", "s3"]);
}

/// checkName: a merge patch `{"metadata": null}` names no object (400), so an object held by
/// a finalizer stays held.
#[tokio::test]
async fn a_null_metadata_merge_patch_is_400_and_keeps_finalizers() {
    let k8s = KubeEmulator::start().await.unwrap();
    let api: Api<ConfigMap> = Api::namespaced(k8s.client(), NS);
    api.create(
        &PostParams::default(),
        &serde_json::from_value(json!({"metadata": {"name": "c", "finalizers": ["a.dev/keep"]}}))
            .unwrap(),
    )
    .await
    .unwrap();
    api.delete("c", &DeleteParams::default()).await.unwrap();
    let raw = send(
        &k8s,
        "PATCH",
        &cm_path("c"),
        "application/merge-patch+json",
        &json!({"metadata": null}),
    )
    .await;
    assert_eq!(raw.status, 400, "{}", raw.text());
    assert!(api.get("c").await.is_ok(), "still held by its finalizer");
}

/// patch.go: an apply that creates answers 201 (wasCreated), in a dry run too.
#[tokio::test]
async fn a_dry_run_apply_that_would_create_answers_201() {
    let k8s = KubeEmulator::start().await.unwrap();
    let raw = send(
        &k8s,
        "PATCH",
        &format!("{}?fieldManager=op&dryRun=All", cm_path("x")),
        "application/apply-patch+yaml",
        &json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "x"}}),
    )
    .await;
    assert_eq!(raw.status, 201, "{}", raw.text());
    assert!(
        k8s.get::<ConfigMap>(NS, "x").is_none(),
        "a dry run stores nothing"
    );
}

// ---------------------------------------------------------------- quantities

/// apimachinery resource.ParseQuantity keeps the string it was given (`s: str`) when the value is
/// already "canonical" by its test (`scale%3 == 0 && !HasSuffix(shifted, "000") && shifted[0] != '0'`
/// for decimal, `exponent%10 == 0 && value&7 != 0` for binary), and that test looks at the
/// digits after the sign and leading zeros were stripped. Quantity.String()/MarshalJSON and the
/// protobuf encoding return that cached string, so "+1", "01Gi" and "0100m" come back as sent.
#[tokio::test]
async fn quantities_with_sign_or_leading_zeros_come_back_as_sent() {
    let k8s = KubeEmulator::start().await.unwrap();
    let mut body = job_body("q");
    body["spec"]["template"]["spec"]["containers"][0]["resources"] = json!({
        "limits": {"cpu": "+1", "memory": "01Gi"}, "requests": {"cpu": "0100m"}});
    let raw = send(&k8s, "POST", &jobs_path(), "application/json", &body).await;
    assert_eq!(raw.status, 201, "{}", raw.text());
    let resources = &raw.json()["spec"]["template"]["spec"]["containers"][0]["resources"];
    assert_eq!(
        resources,
        &json!({"limits": {"cpu": "+1", "memory": "01Gi"}, "requests": {"cpu": "0100m"}})
    );
}

/// pkg/apis/core/v1/defaults.go SetDefaults_ResourceList: every quantity of a container's
/// limits/requests is RoundUp(-3) (milli scale) on decode, so "100u" is stored as "1m".
#[tokio::test]
async fn resource_quantities_are_rounded_up_to_milli_units() {
    let k8s = KubeEmulator::start().await.unwrap();
    let mut body = job_body("milli");
    body["spec"]["template"]["spec"]["containers"][0]["resources"] = json!({
        "limits": {"cpu": "1500u"}, "requests": {"cpu": "100u"}});
    let raw = send(&k8s, "POST", &jobs_path(), "application/json", &body).await;
    assert_eq!(raw.status, 201, "{}", raw.text());
    let resources = &raw.json()["spec"]["template"]["spec"]["containers"][0]["resources"];
    assert_eq!(
        resources,
        &json!({"limits": {"cpu": "2m"}, "requests": {"cpu": "1m"}})
    );
}

// ---------------------------------------------------------------- zero values

/// Pointer fields keep their zero value (the table generated from the Go types by
/// `scripts/gen-keep-zero`): Toleration.TolerationSeconds *int64,
/// SecretProjection.Optional *bool, PersistentVolumeClaimSpec.StorageClassName *string
/// (`""` = no class), WindowsSecurityContextOptions.HostProcess *bool.
#[tokio::test]
async fn pointer_fields_outside_keep_zero_keep_their_zero_values() {
    let k8s = KubeEmulator::start().await.unwrap();
    let mut body = job_body("ptr");
    let spec = &mut body["spec"]["template"]["spec"];
    spec["tolerations"] = json!([{"key": "k", "operator": "Exists", "effect": "NoExecute",
        "tolerationSeconds": 0}]);
    spec["volumes"] = json!([
        {"name": "p", "projected": {"sources": [{"secret": {"name": "s", "optional": false}}]}},
        {"name": "e", "ephemeral": {"volumeClaimTemplate": {"spec": {"accessModes": ["ReadWriteOnce"],
            "storageClassName": "", "resources": {"requests": {"storage": "1Gi"}}}}}}
    ]);
    spec["securityContext"] = json!({"windowsOptions": {"hostProcess": false}});
    let raw = send(&k8s, "POST", &jobs_path(), "application/json", &body).await;
    assert_eq!(raw.status, 201, "{}", raw.text());
    let got = &raw.json()["spec"]["template"]["spec"];
    assert_eq!(
        got["tolerations"][0]["tolerationSeconds"],
        json!(0),
        "{got}"
    );
    assert_eq!(
        got["volumes"][0]["projected"]["sources"][0]["secret"]["optional"],
        json!(false),
        "{got}"
    );
    assert_eq!(
        got["volumes"][1]["ephemeral"]["volumeClaimTemplate"]["spec"]["storageClassName"],
        json!(""),
        "{got}"
    );
    assert_eq!(
        got["securityContext"]["windowsOptions"]["hostProcess"],
        json!(false),
        "{got}"
    );
}

/// Fields without omitempty keep their zero value: HTTPHeader.Value (`json:"value"`),
/// SleepAction.Seconds (`json:"seconds"`).
#[tokio::test]
async fn fields_without_omitempty_keep_their_zero_values() {
    let k8s = KubeEmulator::start().await.unwrap();
    let mut body = job_body("noomit");
    let c = &mut body["spec"]["template"]["spec"]["containers"][0];
    c["readinessProbe"] =
        json!({"httpGet": {"port": 8080, "httpHeaders": [{"name": "X-A", "value": ""}]}});
    c["lifecycle"] = json!({"preStop": {"sleep": {"seconds": 0}}});
    let raw = send(&k8s, "POST", &jobs_path(), "application/json", &body).await;
    assert_eq!(raw.status, 201, "{}", raw.text());
    let got = &raw.json()["spec"]["template"]["spec"]["containers"][0];
    assert_eq!(
        got["readinessProbe"]["httpGet"]["httpHeaders"][0]["value"],
        json!(""),
        "{got}"
    );
    assert_eq!(
        got["lifecycle"]["preStop"]["sleep"]["seconds"],
        json!(0),
        "{got}"
    );
}

// ---------------------------------------------------------------- Job labels

/// SetDefaults_Job: `labels := obj.Spec.Template.Labels; if labels != nil && len(obj.Labels) == 0
/// { obj.Labels = labels }` runs at decode, before the registry's generateSelector creates the
/// template's label map. A template without labels therefore leaves the Job without labels on
/// create (they appear on the next write that decodes the Job).
#[tokio::test]
async fn a_job_whose_template_has_no_labels_is_created_without_labels() {
    let k8s = KubeEmulator::start().await.unwrap();
    let raw = send(
        &k8s,
        "POST",
        &jobs_path(),
        "application/json",
        &job_body("nolabels"),
    )
    .await;
    assert_eq!(raw.status, 201, "{}", raw.text());
    let created = raw.json();
    assert!(
        created["spec"]["template"]["metadata"]["labels"]["batch.kubernetes.io/job-name"]
            .is_string()
    );
    assert!(
        created["metadata"].get("labels").is_none(),
        "{}",
        created["metadata"]
    );
}

// ---------------------------------------------------------------- Job deadline

/// job_controller.go syncJob sets `job.Status.Ready = ptr.To(countReadyPods(...))` on every
/// status write, so a Job failed by its deadline has `ready: 0`, not no `ready`.
#[tokio::test]
async fn a_job_failed_by_its_deadline_keeps_ready_zero() {
    let k8s = KubeEmulator::start().await.unwrap();
    let jobs: Api<Job> = Api::namespaced(k8s.client(), NS);
    let mut body = job_body("deadline");
    body["spec"]["activeDeadlineSeconds"] = json!(10);
    jobs.create(
        &PostParams::default(),
        &serde_json::from_value(body).unwrap(),
    )
    .await
    .unwrap();
    k8s.set_job_status(NS, "deadline", &JobState::Active)
        .unwrap();
    k8s.advance_clock(Duration::from_secs(11));
    let job = k8s.get::<Job>(NS, "deadline").unwrap();
    let status = &job["status"];
    assert!(
        status["conditions"]
            .as_array()
            .unwrap()
            .iter()
            .any(|c| c["type"] == "Failed"),
        "{status}"
    );
    assert_eq!(status["ready"], json!(0), "{status}");
}

// ---------------------------------------------------------------- custom resource metadata

/// apiextensions-apiserver unstructuredSchemaCoercer.apply round-trips a custom resource's
/// metadata through metav1.ObjectMeta (GetObjectMetaWithOptions / SetObjectMeta), so omitempty
/// applies: `finalizers: []` is not stored. kube-runtime's finalizer helper then adds its
/// finalizer with `test /metadata/finalizers == null` + `add`, which works on a real server.
#[tokio::test]
async fn a_custom_resource_with_an_empty_finalizer_list_takes_the_finalizer_helpers_patch() {
    let k8s = KubeEmulator::start().await.unwrap();
    let api: Api<ScanRequest> = Api::namespaced(k8s.client(), NS);
    let mut sr: ScanRequest = sample("scanrequest.yaml");
    sr.metadata.finalizers = Some(vec!["gatehouse.dev/cleanup".into()]);
    api.create(&PostParams::default(), &sr).await.unwrap();
    let name = sr.metadata.name.clone().unwrap();
    // Someone removes the finalizer (e.g. kubectl patch --type=merge -p '{"metadata":{"finalizers":[]}}').
    let patched = api
        .patch(
            &name,
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"finalizers": []}})),
        )
        .await
        .unwrap();
    // A real server answers without `finalizers` (ObjectMeta omitempty); the emulator keeps `[]`.
    eprintln!(
        "finalizers after the merge patch: {:?}",
        patched.metadata.finalizers
    );
    // The finalizer helper's add, as kube-runtime 5 sends it when finalizers() is empty.
    let patch: json_patch::Patch = serde_json::from_value(json!([
        {"op": "test", "path": "/metadata/finalizers", "value": null},
        {"op": "add", "path": "/metadata/finalizers", "value": ["gatehouse.dev/cleanup"]}
    ]))
    .unwrap();
    api.patch(&name, &PatchParams::default(), &Patch::Json::<()>(patch))
        .await
        .unwrap();
}

// ---------------------------------------------------------------- garbage collector

/// garbagecollector.go attemptToDeleteItem: a dependent whose only owner waits for its dependents
/// and which has no dependents itself falls to the default branch and is deleted with
/// propagation Background (no foregroundDeletion finalizer is ever put on it).
#[tokio::test]
async fn foreground_owner_deletes_a_leaf_dependent_in_the_background() {
    let k8s = KubeEmulator::start().await.unwrap();
    let api: Api<ConfigMap> = Api::namespaced(k8s.client(), NS);
    let owner = api
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({"metadata": {"name": "owner"}})).unwrap(),
        )
        .await
        .unwrap();
    let uid = owner.metadata.uid.unwrap();
    api.create(
        &PostParams::default(),
        &serde_json::from_value(json!({"metadata": {"name": "dep", "finalizers": ["a.dev/keep"],
            "ownerReferences": [{"apiVersion": "v1", "kind": "ConfigMap", "name": "owner", "uid": uid}]}}))
        .unwrap(),
    )
    .await
    .unwrap();
    let rv_before: u64 = k8s.resource_version();
    api.delete(
        "owner",
        &DeleteParams {
            propagation_policy: Some(PropagationPolicy::Foreground),
            ..DeleteParams::default()
        },
    )
    .await
    .unwrap();
    let dep = k8s.get::<ConfigMap>(NS, "dep").unwrap();
    assert_eq!(dep["metadata"]["finalizers"], json!(["a.dev/keep"]));
    // owner marked (1), dependent marked (1), owner's finalizer removed -> owner gone (1)
    // in a real cluster the owner stays until dep is gone (no blockOwnerDeletion here, so it goes).
    let writes = k8s.resource_version() - rv_before;
    assert!(
        writes <= 3,
        "{writes} resourceVersions used: the dependent went through an extra foregroundDeletion state"
    );
}

// ---------------------------------------------------------------- defaults

/// pkg/apis/core/v1/defaults.go: SetDefaults_HTTPGetAction (path "/", scheme HTTP),
/// SetDefaults_Volume (a volume without a source is an emptyDir), SetDefaults_HostPathVolumeSource
/// (type ""), SetDefaults_ServiceAccountTokenProjection (expirationSeconds 3600), all run for a
/// Job's pod template (batch/v1 zz_generated.defaults.go SetObjectDefaults_Job).
#[tokio::test]
async fn pod_template_defaults_for_probes_and_volumes() {
    let k8s = KubeEmulator::start().await.unwrap();
    let mut body = job_body("defaults");
    let spec = &mut body["spec"]["template"]["spec"];
    spec["containers"][0]["readinessProbe"] = json!({"httpGet": {"port": 8080}});
    spec["volumes"] = json!([
        {"name": "scratch"},
        {"name": "host", "hostPath": {"path": "/tmp"}},
        {"name": "token", "projected": {"sources": [{"serviceAccountToken": {"path": "t", "audience": "a"}}]}}
    ]);
    let raw = send(&k8s, "POST", &jobs_path(), "application/json", &body).await;
    assert_eq!(raw.status, 201, "{}", raw.text());
    let got = &raw.json()["spec"]["template"]["spec"];
    let mut missing = Vec::new();
    if got["containers"][0]["readinessProbe"]["httpGet"]["path"] != json!("/") {
        missing.push("httpGet.path");
    }
    if got["containers"][0]["readinessProbe"]["httpGet"]["scheme"] != json!("HTTP") {
        missing.push("httpGet.scheme");
    }
    if got["volumes"][0]["emptyDir"] != json!({}) {
        missing.push("volumes[0].emptyDir");
    }
    if got["volumes"][1]["hostPath"]["type"] != json!("") {
        missing.push("hostPath.type");
    }
    if got["volumes"][2]["projected"]["sources"][0]["serviceAccountToken"]["expirationSeconds"]
        != json!(3600)
    {
        missing.push("serviceAccountToken.expirationSeconds");
    }
    assert!(missing.is_empty(), "missing defaults {missing:?}: {got}");
}

// ---------------------------------------------------------------- Job controller

/// job_controller.go syncJob: an existing FailureTarget=True condition becomes the finished
/// condition (newFailedConditionForFailureTarget copies its reason and message) before the
/// deadline is looked at, so a Job whose FailureTarget says BackoffLimitExceeded fails with
/// BackoffLimitExceeded even when its deadline passes meanwhile.
#[tokio::test]
async fn a_failure_target_keeps_its_reason_when_the_deadline_passes() {
    let k8s = KubeEmulator::start().await.unwrap();
    let jobs: Api<Job> = Api::namespaced(k8s.client(), NS);
    let mut body = job_body("target");
    body["spec"]["activeDeadlineSeconds"] = json!(10);
    jobs.create(
        &PostParams::default(),
        &serde_json::from_value(body).unwrap(),
    )
    .await
    .unwrap();
    k8s.set_job_status(NS, "target", &JobState::Active).unwrap();
    k8s.set_job_status(
        NS,
        "target",
        &JobState::FailureTarget {
            reason: "BackoffLimitExceeded".into(),
            message: "Job has reached the specified backoff limit".into(),
        },
    )
    .unwrap();
    k8s.advance_clock(Duration::from_secs(11));
    let job = k8s.get::<Job>(NS, "target").unwrap();
    let failed: Vec<&Value> = job["status"]["conditions"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["type"] == "Failed")
        .collect();
    // A real Job controller writes Failed with the FailureTarget's reason (when the test plays
    // the controller's second write); it never writes DeadlineExceeded here.
    for c in &failed {
        assert_eq!(c["reason"], "BackoffLimitExceeded", "{}", job["status"]);
    }
}

// ---------------------------------------------------------------- apply of custom resources

/// structured-merge-diff types a CRD's `format: date-time` string as a plain string, so the
/// typed patch object is built; the bad timestamp is then a schema validation error of the
/// custom resource (422 with the field path), not a 500 "failed to create typed patch object".
#[tokio::test]
async fn a_status_apply_with_a_bad_timestamp_is_422_not_500() {
    let k8s = KubeEmulator::start().await.unwrap();
    let api: Api<ScanRequest> = Api::namespaced(k8s.client(), NS);
    let sr: ScanRequest = sample("scanrequest.yaml");
    api.create(&PostParams::default(), &sr).await.unwrap();
    let name = sr.metadata.name.clone().unwrap();
    let body = json!({"apiVersion": "gatehouse.dev/v1alpha1", "kind": "ScanRequest",
        "metadata": {"name": name}, "status": {"scanners": [{"name": "kics", "phase": "Running",
            "attempts": 1, "startedAt": "yesterday"}]}});
    let raw = send(
        &k8s,
        "PATCH",
        &format!("/apis/gatehouse.dev/v1alpha1/namespaces/{NS}/scanrequests/{name}/status?fieldManager=op"),
        "application/apply-patch+yaml",
        &body,
    )
    .await;
    assert_eq!(raw.status, 422, "{}", raw.text());
}

/// Toleration.TolerationSeconds is a pointer: its 0 is stored, so a second manager applying the
/// very same Job (with `tolerationSeconds: 0`) shares the field with the first (no 409).
#[tokio::test]
async fn two_managers_applying_the_same_toleration_seconds_zero_share_it() {
    let k8s = KubeEmulator::start().await.unwrap();
    let jobs: Api<Job> = Api::namespaced(k8s.client(), NS);
    let mut desired = job_body("tol");
    desired["spec"]["template"]["spec"]["tolerations"] = json!([{"key": "k", "operator": "Exists",
        "effect": "NoExecute", "tolerationSeconds": 0}]);
    jobs.patch("tol", &PatchParams::apply("first"), &Patch::Apply(&desired))
        .await
        .unwrap();
    jobs.patch(
        "tol",
        &PatchParams::apply("second"),
        &Patch::Apply(&desired),
    )
    .await
    .unwrap();
}

/// ContainerStatus.Ready (`json:"ready"`), RestartCount (`json:"restartCount"`),
/// Started (*bool) and ContainerStateTerminated.ExitCode (`json:"exitCode"`) keep their zero
/// values: a pod whose scanner exited 0 says `exitCode: 0`.
#[tokio::test]
async fn pod_container_statuses_keep_exit_code_zero_and_ready_false() {
    use k8s_openapi::api::core::v1::Pod;
    let k8s = KubeEmulator::start().await.unwrap();
    let pods: Api<Pod> = Api::namespaced(k8s.client(), NS);
    pods.create(
        &PostParams::default(),
        &serde_json::from_value(json!({"metadata": {"name": "p"},
            "spec": {"restartPolicy": "Never", "containers": [{"name": "c", "image": "busybox"}]}}))
        .unwrap(),
    )
    .await
    .unwrap();
    let written = k8s
        .set_status::<Pod>(
            NS,
            "p",
            json!({"phase": "Succeeded", "containerStatuses": [{
            "name": "c", "image": "busybox", "imageID": "", "ready": false, "restartCount": 0,
            "started": false, "state": {"terminated": {"exitCode": 0, "reason": "Completed"}}}]}),
        )
        .unwrap();
    let status = &written["status"]["containerStatuses"][0];
    assert_eq!(
        status["state"]["terminated"]["exitCode"],
        json!(0),
        "{status}"
    );
    assert_eq!(status["ready"], json!(false), "{status}");
    assert_eq!(status["restartCount"], json!(0), "{status}");
    assert_eq!(status["started"], json!(false), "{status}");
}

/// kube-lease-manager: the holder releases (strategic merge patch with nulls), then the other
/// candidate locks (server-side apply without force) and leads.
#[tokio::test]
async fn lease_release_then_the_other_candidate_locks() {
    use kube_lease_manager::LeaseManagerBuilder;
    let k8s = KubeEmulator::start().await.unwrap();
    let build = |id: &str| {
        LeaseManagerBuilder::new(k8s.client(), "gatehouse-operator")
            .with_namespace(NS)
            .with_identity(id)
            .with_duration(5)
            .with_grace(1)
            .build()
    };
    let a = build("a").await.unwrap();
    let b = build("b").await.unwrap();
    assert!(a.changed().await.unwrap(), "a leads");
    a.release().await.unwrap();
    let lease = k8s
        .get::<k8s_openapi::api::coordination::v1::Lease>(NS, "gatehouse-operator")
        .unwrap();
    eprintln!("after release: {}", lease["spec"]);
    // Well within the 5 s lease: b locks the released lease at once.
    let leads = tokio::time::timeout(Duration::from_secs(3), b.changed()).await;
    assert!(
        matches!(leads, Ok(Ok(true))),
        "b leads after a released: {leads:?}"
    );
    let lease = k8s
        .get::<k8s_openapi::api::coordination::v1::Lease>(NS, "gatehouse-operator")
        .unwrap();
    eprintln!("after b locked: {}", lease["metadata"]["managedFields"]);
}

// ---------------------------------------------------------------- status strategies, apply conversion, an operator sequence

/// pkg/registry/core/pod/strategy.go podStatusStrategy: GetResetFields resets `spec`,
/// `metadata.deletionTimestamp` and `metadata.ownerReferences`; PrepareForUpdate does
/// `newPod.OwnerReferences = oldPod.OwnerReferences`. A pods/status write cannot change the
/// owner references (the Job's does: jobStatusStrategy resets only `spec`).
#[tokio::test]
async fn pod_status_write_cannot_change_owner_references() {
    let k8s = KubeEmulator::start().await.unwrap();
    let cms: Api<ConfigMap> = Api::namespaced(k8s.client(), NS);
    let owner = cms
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({"metadata": {"name": "owner"}})).unwrap(),
        )
        .await
        .unwrap();
    let uid = owner.metadata.uid.unwrap();
    let pods: Api<Pod> = Api::namespaced(k8s.client(), NS);
    pods.create(
        &PostParams::default(),
        &serde_json::from_value(json!({"metadata": {"name": "p", "ownerReferences": [
            {"apiVersion": "v1", "kind": "ConfigMap", "name": "owner", "uid": uid}]},
            "spec": {"restartPolicy": "Never", "containers": [{"name": "c", "image": "busybox"}]}}))
        .unwrap(),
    )
    .await
    .unwrap();
    let raw = send(
        &k8s,
        "PATCH",
        &format!("/api/v1/namespaces/{NS}/pods/p/status?fieldManager=kubelet"),
        "application/merge-patch+json",
        &json!({"metadata": {"ownerReferences": null, "labels": {"a": "b"}},
            "status": {"phase": "Running"}}),
    )
    .await;
    assert_eq!(raw.status, 200, "{}", raw.text());
    let pod = raw.json();
    assert_eq!(
        pod["metadata"]["labels"],
        json!({"a": "b"}),
        "labels do change"
    );
    assert_eq!(
        pod["metadata"]["ownerReferences"][0]["uid"],
        json!(uid),
        "ownerReferences are reset by the pod status strategy: {}",
        pod["metadata"]
    );
}

/// pkg/apis/batch/v1/defaults.go SetDefaults_Job: `labels := obj.Spec.Template.Labels; if
/// labels != nil && len(obj.Labels) == 0 { obj.Labels = labels }`. A template with
/// `labels: {}` decodes (encoding/json) to a non-nil empty map, so the Job's labels become that
/// very map and generateSelector's labels land on the Job too.
#[tokio::test]
async fn job_template_with_an_empty_labels_map_labels_the_job_on_create() {
    let k8s = KubeEmulator::start().await.unwrap();
    let mut body = job_body("emptylabels");
    body["spec"]["template"]["metadata"] = json!({"labels": {}});
    let raw = send(&k8s, "POST", &jobs_path(), "application/json", &body).await;
    assert_eq!(raw.status, 201, "{}", raw.text());
    let job = raw.json();
    assert_eq!(
        job["metadata"]["labels"]["batch.kubernetes.io/job-name"],
        json!("emptylabels"),
        "{}",
        job["metadata"]
    );
}

/// structuredmerge.go Apply: the typed patch object is built (a quantity is a scalar to
/// structured-merge-diff), then `f.toVersioned(newObj)` converts the unstructured result to the
/// Go type; resource.Quantity's UnmarshalJSON fails and the apply answers with the plain error
/// "failed to convert new object (...) to proper version (batch/v1): ...", a 500. The same for
/// `backoffLimit: 1.5` (FromUnstructured "cannot convert float64 to int32").
#[tokio::test]
async fn job_apply_with_a_malformed_quantity_is_500() {
    let k8s = KubeEmulator::start().await.unwrap();
    let mut body = job_body("badq");
    body["spec"]["template"]["spec"]["containers"][0]["resources"] =
        json!({"limits": {"memory": "1 GB"}});
    let raw = send(
        &k8s,
        "PATCH",
        &format!("{}/badq?fieldManager=op", jobs_path()),
        "application/apply-patch+yaml",
        &body,
    )
    .await;
    let mut body = job_body("badint");
    body["spec"]["backoffLimit"] = json!(1.5);
    let raw_int = send(
        &k8s,
        "PATCH",
        &format!("{}/badint?fieldManager=op", jobs_path()),
        "application/apply-patch+yaml",
        &body,
    )
    .await;
    assert_eq!(
        (raw.status, raw_int.status),
        (500, 500),
        "quantity: {} / int: {}",
        raw.text(),
        raw_int.text()
    );
}

/// The operator's sequence: the finalizer helper's JSON patches on a ScanRequest, a Job applied
/// with a controller owner reference, the ScanRequest's status applied, the Job run to the end
/// by `set_job_status`, the same Job and status applied again, then the ScanRequest deleted and
/// its finalizer removed: the Job is collected.
#[tokio::test]
async fn operator_sequence_runs_as_on_a_cluster() {
    let k8s = KubeEmulator::start().await.unwrap();
    let srs: Api<ScanRequest> = Api::namespaced(k8s.client(), NS);
    let jobs: Api<Job> = Api::namespaced(k8s.client(), NS);
    let sr: ScanRequest = sample("scanrequest.yaml");
    let name = sr.metadata.name.clone().unwrap();
    let created = srs.create(&PostParams::default(), &sr).await.unwrap();
    let uid = created.metadata.uid.clone().unwrap();
    let add: json_patch::Patch = serde_json::from_value(json!([
        {"op": "test", "path": "/metadata/finalizers", "value": null},
        {"op": "add", "path": "/metadata/finalizers", "value": ["gatehouse.dev/cleanup"]}
    ]))
    .unwrap();
    srs.patch(&name, &PatchParams::default(), &Patch::Json::<()>(add))
        .await
        .unwrap();
    let desired = json!({"apiVersion": "batch/v1", "kind": "Job",
        "metadata": {"name": "scan-kics", "labels": {"gatehouse.dev/scan-request": name},
            "ownerReferences": [{"apiVersion": "gatehouse.dev/v1alpha1", "kind": "ScanRequest",
                "name": name, "uid": uid, "controller": true, "blockOwnerDeletion": true}]},
        "spec": {"backoffLimit": 0, "ttlSecondsAfterFinished": 600, "activeDeadlineSeconds": 900,
            "template": {"metadata": {"labels": {"gatehouse.dev/scan-request": name}},
                "spec": {"restartPolicy": "Never", "automountServiceAccountToken": false,
                    "containers": [{"name": "scan", "image": "kics@sha256:1",
                        "resources": {"requests": {"cpu": "250m", "memory": "256Mi"},
                            "limits": {"cpu": "1", "memory": "1Gi"}}}]}}}});
    let op = PatchParams::apply("gatehouse-operator").force();
    let first = jobs
        .patch("scan-kics", &op, &Patch::Apply(&desired))
        .await
        .unwrap();
    let status = json!({"apiVersion": "gatehouse.dev/v1alpha1", "kind": "ScanRequest",
        "metadata": {"name": name},
        "status": {"phase": "Running", "scanners": [{"name": "kics", "phase": "Running",
            "jobName": "scan-kics", "attempts": 1}]}});
    srs.patch_status(&name, &op, &Patch::Apply(&status))
        .await
        .unwrap();
    k8s.set_job_status(NS, "scan-kics", &JobState::Active)
        .unwrap();
    k8s.advance_clock(Duration::from_secs(5));
    let again = jobs
        .patch("scan-kics", &op, &Patch::Apply(&desired))
        .await
        .unwrap();
    assert_eq!(
        serde_json::to_value(&again.spec).unwrap(),
        serde_json::to_value(&first.spec).unwrap()
    );
    k8s.set_job_status(NS, "scan-kics", &JobState::Succeeded)
        .unwrap();
    srs.patch_status(&name, &op, &Patch::Apply(&status))
        .await
        .unwrap();
    srs.delete(&name, &DeleteParams::default()).await.unwrap();
    let sr_now = srs.get(&name).await.unwrap();
    assert!(sr_now.metadata.deletion_timestamp.is_some());
    let remove: json_patch::Patch = serde_json::from_value(json!([
        {"op": "test", "path": "/metadata/finalizers/0", "value": "gatehouse.dev/cleanup"},
        {"op": "remove", "path": "/metadata/finalizers/0"}
    ]))
    .unwrap();
    srs.patch(&name, &PatchParams::default(), &Patch::Json::<()>(remove))
        .await
        .unwrap();
    k8s.advance_clock(Duration::from_secs(1));
    assert!(srs.get_opt(&name).await.unwrap().is_none());
    assert!(
        k8s.get::<Job>(NS, "scan-kics").is_none(),
        "the Job is collected"
    );
}

/// A Job's status write by the Job controller (UpdateStatus of the cached object) decodes the
/// body, so SetDefaults_Job gives a Job without labels its template's; jobStatusStrategy keeps
/// metadata, so they stay.
#[tokio::test]
async fn a_controller_status_write_labels_an_unlabelled_job() {
    let k8s = KubeEmulator::start().await.unwrap();
    let raw = send(
        &k8s,
        "POST",
        &jobs_path(),
        "application/json",
        &job_body("nol"),
    )
    .await;
    assert_eq!(raw.status, 201, "{}", raw.text());
    assert!(raw.json()["metadata"].get("labels").is_none());
    k8s.set_job_status(NS, "nol", &JobState::Active).unwrap();
    let job = k8s.get::<Job>(NS, "nol").unwrap();
    assert_eq!(
        job["metadata"]["labels"]["batch.kubernetes.io/job-name"],
        json!("nol"),
        "{}",
        job["metadata"]
    );
}

/// apiextensions-apiserver's CRD strategy, defaults and validation, and its naming and
/// establishing controllers (the emulator stores CRDs; the types it serves stay as registered).
#[tokio::test]
async fn a_crd_is_stored_with_its_defaults_and_stored_version_and_established_by_its_controller() {
    use gatehouse_tests::Controller;
    use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
    let k8s = KubeEmulator::start().await.unwrap();
    let api: Api<CustomResourceDefinition> = Api::all(k8s.client());
    let mut crd = <gatehouse_crds::ScanPolicy as kube::CustomResourceExt>::crd();
    let hold = k8s.hold(Controller::CrdEstablishing);
    let created = api.create(&PostParams::default(), &crd).await.unwrap();
    let stored = serde_json::to_value(&created).unwrap();
    assert_eq!(stored["metadata"]["generation"], 1);
    assert_eq!(stored["spec"]["names"]["listKind"], "ScanPolicyList");
    assert_eq!(stored["spec"]["conversion"], json!({"strategy": "None"}));
    assert_eq!(stored["status"], json!({"storedVersions": ["v1alpha1"]}));
    // Zero values of pointer fields in the schema are kept (`default: 0`).
    assert_eq!(
        stored["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]["properties"]
            ["priority"]["default"],
        json!(0)
    );
    drop(hold);
    let established = k8s
        .get::<CustomResourceDefinition>("", "scanpolicies.gatehouse.dev")
        .unwrap();
    let conditions: Vec<(&str, &str)> = established["status"]["conditions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| (c["type"].as_str().unwrap(), c["status"].as_str().unwrap()))
        .collect();
    assert_eq!(
        conditions,
        [("NamesAccepted", "True"), ("Established", "True")]
    );
    assert_eq!(established["status"]["acceptedNames"]["kind"], "ScanPolicy");

    // The name must be <plural>.<group>; exactly one storage version; the group is immutable.
    crd.metadata.name = Some("policies.gatehouse.dev".to_owned());
    let refused = api.create(&PostParams::default(), &crd).await.unwrap_err();
    assert!(
        refused
            .to_string()
            .contains("must be spec.names.plural+\".\"+spec.group"),
        "{refused}"
    );
    let mut changed: CustomResourceDefinition = serde_json::from_value(established).unwrap();
    changed.spec.group = "other.dev".to_owned();
    let refused = api
        .replace(
            "scanpolicies.gatehouse.dev",
            &PostParams::default(),
            &changed,
        )
        .await
        .unwrap_err();
    assert!(refused.to_string().contains("spec.group"), "{refused}");
}
