//! Finer points of a real kube-apiserver 1.35 the Kubernetes API emulator reproduces, each with
//! the apiserver, apimachinery or structured-merge-diff source it follows: what the server stores
//! and returns, how it words conflicts, the checks around apply and patches, and the garbage
//! collector's owner rules. Found by walking real sequences against the emulator.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::Duration;

use gatehouse_tests::KubeEmulator;
use gatehouse_tests::http::{HttpResponse, request};
use gatehouse_tests::kube_support::{api_status, job_body, sample};
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
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
        &serde_json::from_value(json!({"metadata": {"name": "c"}})).unwrap(),
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
}
