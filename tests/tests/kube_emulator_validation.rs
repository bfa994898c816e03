//! Validation and decoding in the Kubernetes API emulator, as a real apiserver does them:
//! unknown fields, custom resource schemas, metadata rules, Events, Secrets, patches, dry runs,
//! paginated lists and selector watches. Each test is named after the real behaviour.

// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeMap;

use futures::{StreamExt, TryStreamExt};
use gatehouse_crds::ScanRequest;
use gatehouse_tests::KubeEmulator;
use gatehouse_tests::http::{HttpResponse, request};
use gatehouse_tests::kube_support::{api_status, causes, sample};
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{ConfigMap, ObjectReference, Secret};
use k8s_openapi::api::events::v1::Event;
use kube::api::{
    Api, DeleteParams, ListParams, Patch, PatchParams, PostParams, WatchEvent, WatchParams,
};
use kube::runtime::events::{Event as RuntimeEvent, EventType, Recorder, Reporter};
use serde_json::{Value, json};

const NS: &str = "gatehouse-scans";

fn sample_request() -> Value {
    sample("scanrequest.yaml")
}

async fn post(k8s: &KubeEmulator, path: &str, query: &str, body: &Value) -> HttpResponse {
    request(
        k8s.addr(),
        "POST",
        &format!("{path}{query}"),
        &[("Content-Type", "application/json")],
        body.to_string().as_bytes(),
    )
    .await
    .unwrap()
}

fn cm(name: &str) -> Value {
    json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name}, "data": {"k": "v"}})
}

fn job(name: &str) -> Value {
    json!({"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": name},
        "spec": {"template": {"spec": {"restartPolicy": "Never",
            "containers": [{"name": "scan", "image": "busybox"}]}}}})
}

#[tokio::test]
async fn unknown_fields_are_dropped_with_a_warning_by_default_and_refused_when_strict() {
    let k8s = KubeEmulator::start().await.unwrap();
    let configmaps = format!("/api/v1/namespaces/{NS}/configmaps");
    let mut body = cm("warned");
    body["spec"] = json!({"nope": 1});
    body["metadata"]["bogus"] = json!("x");
    let warned = post(&k8s, &configmaps, "", &body).await;
    assert_eq!(warned.status, 201, "{}", warned.text());
    assert!(
        warned.json().get("spec").is_none() && warned.json()["metadata"].get("bogus").is_none()
    );
    let warnings = k8s.writes().last().unwrap().warnings.clone();
    assert_eq!(
        warnings,
        ["unknown field \"metadata.bogus\"", "unknown field \"spec\""]
    );
    assert!(
        warned.headers["warning"].starts_with("299 - \"unknown field"),
        "{:?}",
        warned.headers
    );

    body["metadata"]["name"] = json!("ignored");
    let ignored = post(&k8s, &configmaps, "?fieldValidation=Ignore", &body).await;
    assert_eq!(ignored.status, 201);
    assert!(!ignored.headers.contains_key("warning"));

    body["metadata"]["name"] = json!("strict");
    let strict = post(&k8s, &configmaps, "?fieldValidation=Strict", &body).await;
    assert_eq!(strict.status, 400, "{}", strict.text());
    assert!(
        strict.json()["message"]
            .as_str()
            .unwrap()
            .contains("strict decoding error: unknown field \"metadata.bogus\"")
    );
    assert!(!k8s.names::<ConfigMap>(NS).contains(&"strict".to_owned()));

    // Custom resources prune by their schema.
    let mut sr = sample_request();
    sr["spec"]["pullRequest"]["extra"] = json!(true);
    let strict = post(
        &k8s,
        &format!("/apis/gatehouse.dev/v1alpha1/namespaces/{NS}/scanrequests"),
        "?fieldValidation=Strict",
        &sr,
    )
    .await;
    assert_eq!(strict.status, 400);
    assert!(
        strict
            .text()
            .contains("unknown field \\\"spec.pullRequest.extra\\\""),
        "{}",
        strict.text()
    );
    let pruned = post(
        &k8s,
        &format!("/apis/gatehouse.dev/v1alpha1/namespaces/{NS}/scanrequests"),
        "",
        &sr,
    )
    .await;
    assert_eq!(pruned.status, 201);
    assert!(pruned.json()["spec"]["pullRequest"].get("extra").is_none());
    assert_eq!(
        pruned.json()["apiVersion"],
        "gatehouse.dev/v1alpha1",
        "the root's own fields are kept"
    );
    let warnings = k8s.writes().last().unwrap().warnings.clone();
    assert_eq!(warnings, ["unknown field \"spec.pullRequest.extra\""]);
}

#[tokio::test]
async fn the_custom_resource_schema_is_enforced_with_422_and_field_paths_before_cel() {
    let k8s = KubeEmulator::start().await.unwrap();
    let api: Api<ScanRequest> = Api::namespaced(k8s.client(), NS);
    let mut sr = sample_request();
    sr["spec"]["pullRequest"]["headSha"] = json!("not-a-sha");
    sr["spec"]["pullRequest"]["number"] = json!("two");
    sr["spec"]["repository"]["owner"] = json!("x".repeat(40));
    sr["spec"]["scanners"] = json!([]);
    sr["spec"]["trigger"]
        .as_object_mut()
        .unwrap()
        .remove("event");
    let raw = post(
        &k8s,
        &format!("/apis/gatehouse.dev/v1alpha1/namespaces/{NS}/scanrequests"),
        "",
        &sr,
    )
    .await;
    assert_eq!(raw.status, 422, "{}", raw.text());
    let status: kube::core::Status = serde_json::from_slice(&raw.body).unwrap();
    let found = causes(&status);
    for (field, reason) in [
        ("spec.pullRequest.number", "FieldValueTypeInvalid"),
        ("spec.trigger.event", "FieldValueRequired"),
    ] {
        assert!(
            found.contains(&(field.to_owned(), reason.to_owned())),
            "{field}: {found:?}"
        );
    }
    assert!(
        status.message.starts_with(
            "ScanRequest.gatehouse.dev \"hello-world-pr2-ec26c3e-016643a9\" is invalid: "
        ),
        "{}",
        status.message
    );

    // Types right, constraints wrong: pattern, length, item count, enum.
    sr["spec"]["pullRequest"]["number"] = json!(2);
    sr["spec"]["trigger"]["event"] = json!("pull_request");
    let err = api_status(
        api.create(
            &PostParams::default(),
            &serde_json::from_value(sr.clone()).unwrap(),
        )
        .await
        .unwrap_err(),
    );
    let found = causes(&err);
    for (field, reason) in [
        ("spec.pullRequest.headSha", "FieldValueInvalid"),
        ("spec.repository.owner", "FieldValueTooLong"),
        ("spec.scanners", "FieldValueInvalid"),
    ] {
        assert!(
            found.contains(&(field.to_owned(), reason.to_owned())),
            "{field}: {found:?}"
        );
    }
    assert!(
        err.message
            .contains("should match '^[0-9a-f]{40}([0-9a-f]{24})?$'"),
        "{}",
        err.message
    );

    // A valid one, then a status with a phase outside the enum.
    let created = api
        .create(
            &PostParams::default(),
            &serde_json::from_value(sample_request()).unwrap(),
        )
        .await
        .unwrap();
    let name = created.metadata.name.unwrap();
    let err = api_status(
        api.patch_status(
            &name,
            &PatchParams::default(),
            &Patch::Merge(json!({"status": {"phase": "Exploded"}})),
        )
        .await
        .unwrap_err(),
    );
    assert_eq!(
        causes(&err),
        [
            (
                "status.phase".to_owned(),
                "FieldValueNotSupported".to_owned()
            ),
            ("<nil>".to_owned(), "FieldValueInvalid".to_owned()),
        ]
    );
    assert!(
        err.message
            .contains("some validation rules were not checked")
    );
}

fn policy(scanners: &Value) -> Value {
    json!({"apiVersion": "gatehouse.dev/v1alpha1", "kind": "ScanPolicy", "metadata": {"name": "p"},
        "spec": {"repositories": ["acme/*"], "scanners": scanners}})
}

fn kics(name: &str) -> Value {
    json!({"name": name, "kind": "kics", "image": format!("kics@sha256:{}", "a".repeat(64))})
}

#[tokio::test]
async fn cel_rules_run_beside_schema_errors_that_do_not_block_them_and_not_beside_those_that_do() {
    let k8s = KubeEmulator::start().await.unwrap();
    let policies = format!("/apis/gatehouse.dev/v1alpha1/namespaces/{NS}/scanpolicies");
    // A pattern error does not block CEL: the duplicate names are reported too.
    let mut bad_name = kics("kics");
    bad_name["name"] = json!("Not_Valid");
    let raw = post(
        &k8s,
        &policies,
        "",
        &policy(&json!([kics("kics"), kics("kics"), bad_name])),
    )
    .await;
    assert_eq!(raw.status, 422, "{}", raw.text());
    let text = raw.text();
    assert!(text.contains("should match"), "{text}");
    assert!(
        text.contains("scanner names must be unique within a policy"),
        "{text}"
    );
    assert!(
        !text.contains("some validation rules were not checked"),
        "{text}"
    );
    // A value outside an enum blocks CEL: no CEL message, the apiserver's note instead.
    let mut wrong_kind = kics("kics");
    wrong_kind["kind"] = json!("trivy");
    let raw = post(
        &k8s,
        &policies,
        "",
        &policy(&json!([kics("kics"), wrong_kind])),
    )
    .await;
    assert_eq!(raw.status, 422);
    let text = raw.text();
    assert!(!text.contains("scanner names must be unique"), "{text}");
    assert!(
        text.contains("some validation rules were not checked"),
        "{text}"
    );
}

#[tokio::test]
async fn strategic_merge_patch_on_a_custom_resource_is_415_but_works_on_built_in_types() {
    let k8s = KubeEmulator::start().await.unwrap();
    let requests: Api<ScanRequest> = Api::namespaced(k8s.client(), NS);
    let created = requests
        .create(
            &PostParams::default(),
            &serde_json::from_value(sample_request()).unwrap(),
        )
        .await
        .unwrap();
    let err = api_status(
        requests
            .patch(
                &created.metadata.name.unwrap(),
                &PatchParams::default(),
                &Patch::Strategic(json!({"metadata": {"labels": {"a": "b"}}})),
            )
            .await
            .unwrap_err(),
    );
    assert_eq!(
        (err.code, err.reason.as_str()),
        (415, "UnsupportedMediaType")
    );

    let jobs: Api<Job> = Api::namespaced(k8s.client(), NS);
    jobs.create(
        &PostParams::default(),
        &serde_json::from_value(job("smp")).unwrap(),
    )
    .await
    .unwrap();
    let patched = jobs
        .patch(
            "smp",
            &PatchParams::default(),
            &Patch::Strategic(json!({"metadata": {"labels": {"a": "b"}}})),
        )
        .await
        .unwrap();
    assert_eq!(patched.metadata.labels.unwrap()["a"], "b");
}

#[tokio::test]
async fn put_of_a_custom_resource_without_a_resource_version_is_422() {
    let k8s = KubeEmulator::start().await.unwrap();
    let requests: Api<ScanRequest> = Api::namespaced(k8s.client(), NS);
    let mut created = requests
        .create(
            &PostParams::default(),
            &serde_json::from_value(sample_request()).unwrap(),
        )
        .await
        .unwrap();
    let name = created.metadata.name.clone().unwrap();
    created.metadata.resource_version = None;
    created
        .metadata
        .labels
        .get_or_insert_default()
        .insert("x".into(), "y".into());
    let err = api_status(
        requests
            .replace(&name, &PostParams::default(), &created)
            .await
            .unwrap_err(),
    );
    assert_eq!(err.code, 422);
    assert!(
        err.message.contains(
            "metadata.resourceVersion: Invalid value: \"0x0\": must be specified for an update"
        ),
        "{}",
        err.message
    );

    // Built-in types allow an unconditional update.
    let jobs: Api<Job> = Api::namespaced(k8s.client(), NS);
    let mut created = jobs
        .create(
            &PostParams::default(),
            &serde_json::from_value(job("put")).unwrap(),
        )
        .await
        .unwrap();
    created.metadata.resource_version = None;
    created
        .metadata
        .labels
        .get_or_insert_default()
        .insert("x".into(), "y".into());
    jobs.replace("put", &PostParams::default(), &created)
        .await
        .unwrap();
}

#[tokio::test]
async fn create_with_a_resource_version_set_is_refused() {
    let k8s = KubeEmulator::start().await.unwrap();
    let api: Api<ConfigMap> = Api::namespaced(k8s.client(), NS);
    let mut body: ConfigMap = serde_json::from_value(cm("with-rv")).unwrap();
    body.metadata.resource_version = Some("42".into());
    let err = api_status(api.create(&PostParams::default(), &body).await.unwrap_err());
    assert_eq!(err.code, 500);
    assert_eq!(
        err.message,
        "resourceVersion should not be set on objects to be created"
    );
    assert!(k8s.names::<ConfigMap>(NS).is_empty());
}

#[tokio::test]
async fn label_keys_and_values_are_validated_on_every_write_of_every_type() {
    let k8s = KubeEmulator::start().await.unwrap();
    let configmaps: Api<ConfigMap> = Api::namespaced(k8s.client(), NS);
    for labels in [
        json!({"bad key": "v"}),
        json!({"-leading": "v"}),
        json!({"Example.COM/x": "v"}),
        json!({"k": "v".repeat(64)}),
        json!({"k": "has space"}),
    ] {
        let mut body = cm("labelled");
        body["metadata"]["labels"] = labels.clone();
        let err = api_status(
            configmaps
                .create(
                    &PostParams::default(),
                    &serde_json::from_value(body).unwrap(),
                )
                .await
                .unwrap_err(),
        );
        assert_eq!(err.code, 422, "{labels}");
        assert_eq!(causes(&err)[0].0, "metadata.labels", "{labels}");
    }
    configmaps
        .create(
            &PostParams::default(),
            &serde_json::from_value(cm("ok")).unwrap(),
        )
        .await
        .unwrap();
    let err = api_status(
        configmaps
            .patch(
                "ok",
                &PatchParams::default(),
                &Patch::Merge(json!({"metadata": {"labels": {"a/b/c": "v"}}})),
            )
            .await
            .unwrap_err(),
    );
    assert_eq!(err.code, 422);

    // A replacement, an apply and a status write are checked as well.
    let mut current = configmaps.get("ok").await.unwrap();
    current
        .metadata
        .labels
        .get_or_insert_default()
        .insert("bad key".into(), "v".into());
    assert_eq!(
        api_status(
            configmaps
                .replace("ok", &PostParams::default(), &current)
                .await
                .unwrap_err()
        )
        .code,
        422
    );
    let applied = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "ok", "labels": {"k": "-v"}}});
    assert_eq!(
        api_status(
            configmaps
                .patch("ok", &PatchParams::apply("m"), &Patch::Apply(applied))
                .await
                .unwrap_err()
        )
        .code,
        422
    );
    // A custom resource and a Job's pod template too.
    let requests: Api<ScanRequest> = Api::namespaced(k8s.client(), NS);
    let mut sr = sample_request();
    sr["metadata"]["labels"]["gatehouse.dev/head-sha"] = json!("x".repeat(64));
    assert_eq!(
        api_status(
            requests
                .create(&PostParams::default(), &serde_json::from_value(sr).unwrap())
                .await
                .unwrap_err()
        )
        .code,
        422
    );
    let jobs: Api<Job> = Api::namespaced(k8s.client(), NS);
    let mut body = job("template-labels");
    body["spec"]["template"]["metadata"] = json!({"labels": {"bad key": "v"}});
    let err = api_status(
        jobs.create(
            &PostParams::default(),
            &serde_json::from_value(body).unwrap(),
        )
        .await
        .unwrap_err(),
    );
    assert!(
        causes(&err)
            .iter()
            .any(|(f, _)| f == "spec.template.labels"),
        "{:?}",
        causes(&err)
    );
}

#[tokio::test]
async fn annotations_are_limited_to_256_kib_in_total() {
    let k8s = KubeEmulator::start().await.unwrap();
    let api: Api<ConfigMap> = Api::namespaced(k8s.client(), NS);
    let mut body = cm("big");
    body["metadata"]["annotations"] =
        json!({"a": "x".repeat(200 * 1024), "b": "y".repeat(60 * 1024)});
    let err = api_status(
        api.create(
            &PostParams::default(),
            &serde_json::from_value(body.clone()).unwrap(),
        )
        .await
        .unwrap_err(),
    );
    assert_eq!(
        causes(&err),
        [(
            "metadata.annotations".to_owned(),
            "FieldValueTooLong".to_owned()
        )]
    );
    body["metadata"]["annotations"] = json!({"a": "x".repeat(200 * 1024)});
    api.create(
        &PostParams::default(),
        &serde_json::from_value(body).unwrap(),
    )
    .await
    .unwrap();
}

#[tokio::test]
async fn owner_references_need_all_four_identifying_fields_and_at_most_one_controller() {
    let k8s = KubeEmulator::start().await.unwrap();
    let api: Api<ConfigMap> = Api::namespaced(k8s.client(), NS);
    let reference = |uid: &str, controller: bool| json!({"apiVersion": "v1", "kind": "ConfigMap", "name": "owner", "uid": uid, "controller": controller});
    for (refs, field) in [
        (
            json!([{"apiVersion": "v1", "kind": "ConfigMap", "name": "owner"}]),
            "metadata.ownerReferences.uid",
        ),
        (
            json!([{"kind": "ConfigMap", "name": "owner", "uid": "u"}]),
            "metadata.ownerReferences.apiVersion",
        ),
        (
            json!([{"apiVersion": "v1", "name": "owner", "uid": "u"}]),
            "metadata.ownerReferences.kind",
        ),
        (
            json!([reference("u1", true), reference("u2", true)]),
            "metadata.ownerReferences",
        ),
    ] {
        let mut body = cm("owned");
        body["metadata"]["ownerReferences"] = refs.clone();
        let raw = post(
            &k8s,
            &format!("/api/v1/namespaces/{NS}/configmaps"),
            "",
            &body,
        )
        .await;
        assert_eq!(raw.status, 422, "{refs}: {}", raw.text());
        let status: kube::core::Status = serde_json::from_slice(&raw.body).unwrap();
        assert!(
            causes(&status).iter().any(|(f, _)| f == field),
            "{refs}: {:?}",
            causes(&status)
        );
    }
    let two_controllers = post(&k8s, &format!("/api/v1/namespaces/{NS}/configmaps"), "", &{
        let mut body = cm("owned");
        body["metadata"]["ownerReferences"] = json!([reference("u1", true), reference("u2", true)]);
        body
    })
    .await;
    assert!(
        two_controllers
            .text()
            .contains("Only one reference can have Controller set to true")
    );
    assert!(
        api.list(&ListParams::default())
            .await
            .unwrap()
            .items
            .is_empty()
    );
}

#[tokio::test]
async fn finalizer_names_must_be_qualified_names() {
    let k8s = KubeEmulator::start().await.unwrap();
    let api: Api<ConfigMap> = Api::namespaced(k8s.client(), NS);
    let mut body = cm("finalized");
    body["metadata"]["finalizers"] = json!(["not a name"]);
    let err = api_status(
        api.create(
            &PostParams::default(),
            &serde_json::from_value(body.clone()).unwrap(),
        )
        .await
        .unwrap_err(),
    );
    assert_eq!(
        causes(&err),
        [(
            "metadata.finalizers[0]".to_owned(),
            "FieldValueInvalid".to_owned()
        )]
    );
    // A name without a domain is accepted with a warning, as on a real server.
    body["metadata"]["finalizers"] = json!(["cleanup"]);
    api.create(
        &PostParams::default(),
        &serde_json::from_value(body).unwrap(),
    )
    .await
    .unwrap();
    assert!(
        k8s.writes().last().unwrap().warnings[0]
            .contains("prefer a domain-qualified finalizer name")
    );
}

#[tokio::test]
async fn generate_name_prefixes_are_truncated_and_the_name_exists_before_schema_and_cel_rules() {
    let k8s = KubeEmulator::start().await.unwrap();
    let configmaps: Api<ConfigMap> = Api::namespaced(k8s.client(), NS);
    let mut body = cm("");
    body["metadata"] = json!({"generateName": format!("{}-", "a".repeat(70))});
    let created = configmaps
        .create(
            &PostParams::default(),
            &serde_json::from_value(body).unwrap(),
        )
        .await
        .unwrap();
    let name = created.metadata.name.unwrap();
    assert_eq!(name.len(), 63, "{name}");
    assert!(name.starts_with(&"a".repeat(58)));

    // The ScanRequest CRD's CEL rule reads metadata.name: with generateName it sees the name.
    let requests: Api<ScanRequest> = Api::namespaced(k8s.client(), NS);
    let mut sr = sample_request();
    sr["metadata"].as_object_mut().unwrap().remove("name");
    sr["metadata"]["generateName"] = json!(format!("{}-", "b".repeat(70)));
    let created = requests
        .create(&PostParams::default(), &serde_json::from_value(sr).unwrap())
        .await
        .unwrap();
    assert_eq!(created.metadata.name.unwrap().len(), 63);
}

#[tokio::test]
async fn dry_run_on_put_and_patch_validates_but_changes_nothing() {
    let k8s = KubeEmulator::start().await.unwrap();
    let api: Api<ConfigMap> = Api::namespaced(k8s.client(), NS);
    let created = api
        .create(
            &PostParams::default(),
            &serde_json::from_value(cm("dry")).unwrap(),
        )
        .await
        .unwrap();
    let rv = k8s.resource_version();
    let patched = api
        .patch(
            "dry",
            &PatchParams {
                dry_run: true,
                ..PatchParams::default()
            },
            &Patch::Merge(json!({"data": {"k": "changed"}})),
        )
        .await
        .unwrap();
    assert_eq!(
        patched.data.unwrap()["k"],
        "changed",
        "the answer shows the result"
    );
    let mut replaced = created.clone();
    replaced.data = Some(BTreeMap::from([("k".to_owned(), "replaced".to_owned())]));
    api.replace(
        "dry",
        &PostParams {
            dry_run: true,
            ..PostParams::default()
        },
        &replaced,
    )
    .await
    .unwrap();
    api.patch(
        "dry",
        &PatchParams::apply("m").force().dry_run(),
        &Patch::Apply(json!({"apiVersion": "v1", "kind": "ConfigMap", "data": {"k": "applied"}})),
    )
    .await
    .unwrap();
    assert_eq!(api.get("dry").await.unwrap().data.unwrap()["k"], "v");
    assert_eq!(k8s.resource_version(), rv, "no write happened");
    // Invalid changes are still refused in a dry run.
    let err = api_status(
        api.patch(
            "dry",
            &PatchParams {
                dry_run: true,
                ..PatchParams::default()
            },
            &Patch::Merge(json!({"metadata": {"labels": {"bad key": "v"}}})),
        )
        .await
        .unwrap_err(),
    );
    assert_eq!(err.code, 422);
}

fn event(reason: &str, note: &str) -> Value {
    json!({"apiVersion": "events.k8s.io/v1", "kind": "Event",
        "metadata": {"name": "scan.1", "namespace": NS},
        "eventTime": "2026-11-23T10:00:00.000000Z", "type": "Normal",
        "reason": reason, "action": "Reconcile", "note": note,
        "reportingController": "gatehouse.dev/operator", "reportingInstance": "operator-0",
        "regarding": {"apiVersion": "batch/v1", "kind": "Job", "name": "scan", "namespace": NS}})
}

#[tokio::test]
async fn events_v1_are_validated_as_the_real_api_validates_them() {
    let k8s = KubeEmulator::start().await.unwrap();
    let api: Api<Event> = Api::namespaced(k8s.client(), NS);
    let mut cases = Vec::new();
    let mut no_time = event("Started", "n");
    no_time.as_object_mut().unwrap().remove("eventTime");
    cases.push((no_time, "eventTime"));
    let mut bad_type = event("Started", "n");
    bad_type["type"] = json!("Info");
    cases.push((bad_type, "type"));
    cases.push((event(&"r".repeat(129), "n"), "reason"));
    cases.push((event("Started", &"n".repeat(1025)), "message"));
    let mut bad_controller = event("Started", "n");
    bad_controller["reportingController"] = json!("not a name");
    cases.push((bad_controller, "reportingController"));
    let mut no_action = event("Started", "n");
    no_action.as_object_mut().unwrap().remove("action");
    cases.push((no_action, "action"));
    for (body, field) in cases {
        let err = api_status(
            api.create(
                &PostParams::default(),
                &serde_json::from_value(body).unwrap(),
            )
            .await
            .unwrap_err(),
        );
        assert_eq!(err.code, 422, "{field}");
        assert!(
            causes(&err).iter().any(|(f, _)| f == field),
            "{field}: {:?}",
            causes(&err)
        );
    }
    let created = api
        .create(
            &PostParams::default(),
            &serde_json::from_value(event("Started", "ok")).unwrap(),
        )
        .await
        .unwrap();
    // Most fields are immutable; a series may be added.
    let err = api_status(
        api.patch(
            "scan.1",
            &PatchParams::default(),
            &Patch::Merge(json!({"reason": "Other"})),
        )
        .await
        .unwrap_err(),
    );
    assert!(causes(&err).iter().any(|(f, _)| f == "reason"));
    let counted = api
        .patch(
            "scan.1",
            &PatchParams::default(),
            &Patch::Merge(
                json!({"series": {"count": 2, "lastObservedTime": "2026-11-23T10:01:00.000000Z"}}),
            ),
        )
        .await
        .unwrap();
    assert_eq!(counted.series.unwrap().count, 2);
    assert_eq!(created.reason.as_deref(), Some("Started"));
}

#[tokio::test]
async fn kube_runtime_recorder_publishes_and_counts_a_series_against_the_emulator() {
    let k8s = KubeEmulator::start().await.unwrap();
    let recorder = Recorder::new(
        k8s.client(),
        Reporter {
            controller: "gatehouse-operator".into(),
            instance: Some("operator-0".into()),
        },
    );
    let regarding = ObjectReference {
        api_version: Some("gatehouse.dev/v1alpha1".into()),
        kind: Some("ScanRequest".into()),
        name: Some("scan".into()),
        namespace: Some(NS.into()),
        ..ObjectReference::default()
    };
    let ev = RuntimeEvent {
        type_: EventType::Normal,
        reason: "Admitted".into(),
        note: Some("started kics".into()),
        action: "Admit".into(),
        secondary: None,
    };
    recorder.publish(&ev, &regarding).await.unwrap();
    recorder.publish(&ev, &regarding).await.unwrap();
    let events: Api<Event> = Api::namespaced(k8s.client(), NS);
    let list = events.list(&ListParams::default()).await.unwrap();
    assert_eq!(list.items.len(), 1);
    assert_eq!(list.items[0].series.as_ref().unwrap().count, 2);
}

#[tokio::test]
async fn secret_string_data_is_merged_into_base64_data_and_never_returned() {
    let k8s = KubeEmulator::start().await.unwrap();
    let api: Api<Secret> = Api::namespaced(k8s.client(), NS);
    let body = json!({"metadata": {"name": "scan-token"}, "data": {"a": "YQ=="}, "stringData": {"token": "s3cret", "a": "override"}});
    let created = api
        .create(
            &PostParams::default(),
            &serde_json::from_value(body).unwrap(),
        )
        .await
        .unwrap();
    assert!(created.string_data.is_none());
    let data = created.data.unwrap();
    assert_eq!(data["token"].0, b"s3cret");
    assert_eq!(data["a"].0, b"override", "stringData wins over data");
    assert_eq!(created.type_.as_deref(), Some("Opaque"));
    let stored = k8s.get::<Secret>(NS, "scan-token").unwrap();
    assert!(stored.get("stringData").is_none());
    // Data must be base64 (the type's format), on create and on update.
    let raw = post(
        &k8s,
        &format!("/api/v1/namespaces/{NS}/secrets"),
        "",
        &json!({"metadata": {"name": "bad"}, "data": {"k": "not base64!"}}),
    )
    .await;
    assert_eq!(raw.status, 400, "{}", raw.text());
}

#[tokio::test]
async fn typed_fields_of_built_in_types_refuse_the_wrong_json_type() {
    let k8s = KubeEmulator::start().await.unwrap();
    let mut body = job("typed");
    body["spec"]["backoffLimit"] = json!("six");
    let raw = post(
        &k8s,
        &format!("/apis/batch/v1/namespaces/{NS}/jobs"),
        "",
        &body,
    )
    .await;
    assert_eq!(raw.status, 400, "{}", raw.text());
    assert!(raw.text().contains("spec.backoffLimit"), "{}", raw.text());
    let mut body = job("quantity");
    body["spec"]["template"]["spec"]["containers"][0]["resources"] =
        json!({"limits": {"memory": "1 gig"}});
    let raw = post(
        &k8s,
        &format!("/apis/batch/v1/namespaces/{NS}/jobs"),
        "",
        &body,
    )
    .await;
    assert_eq!(raw.status, 400, "{}", raw.text());
    assert!(
        raw.text()
            .contains("quantities must match the regular expression")
    );
}

#[tokio::test]
async fn json_patch_operations_apply_in_sequence_and_the_result_must_be_a_valid_object() {
    let k8s = KubeEmulator::start().await.unwrap();
    let api: Api<ConfigMap> = Api::namespaced(k8s.client(), NS);
    api.create(
        &PostParams::default(),
        &serde_json::from_value(cm("seq")).unwrap(),
    )
    .await
    .unwrap();
    // The test sees the finalizer the first operation added: it is no longer null.
    let ops = json!([
        {"op": "add", "path": "/metadata/finalizers", "value": ["a.dev/x"]},
        {"op": "test", "path": "/metadata/finalizers", "value": null},
    ]);
    let err = api_status(
        api.patch(
            "seq",
            &PatchParams::default(),
            &Patch::<()>::Json(serde_json::from_value(ops).unwrap()),
        )
        .await
        .unwrap_err(),
    );
    assert_eq!(err.code, 422);
    assert!(api.get("seq").await.unwrap().metadata.finalizers.is_none());

    let jobs: Api<Job> = Api::namespaced(k8s.client(), NS);
    jobs.create(
        &PostParams::default(),
        &serde_json::from_value(job("valid")).unwrap(),
    )
    .await
    .unwrap();
    let ops = json!([{"op": "replace", "path": "/spec/backoffLimit", "value": "many"}]);
    let err = api_status(
        jobs.patch(
            "valid",
            &PatchParams::default(),
            &Patch::<()>::Json(serde_json::from_value(ops).unwrap()),
        )
        .await
        .unwrap_err(),
    );
    assert_eq!(
        err.code, 422,
        "a patch whose result does not decode is an invalid patch"
    );
    let requests: Api<ScanRequest> = Api::namespaced(k8s.client(), NS);
    let created = requests
        .create(
            &PostParams::default(),
            &serde_json::from_value(sample_request()).unwrap(),
        )
        .await
        .unwrap();
    let ops = json!([{"op": "replace", "path": "/spec", "value": "gone"}]);
    let err = api_status(
        requests
            .patch(
                &created.metadata.name.unwrap(),
                &PatchParams::default(),
                &Patch::<()>::Json(serde_json::from_value(ops).unwrap()),
            )
            .await
            .unwrap_err(),
    );
    assert_eq!(err.code, 422);
}

#[tokio::test]
async fn every_page_of_a_paginated_list_shows_the_first_pages_snapshot() {
    let k8s = KubeEmulator::start().await.unwrap();
    let api: Api<ConfigMap> = Api::namespaced(k8s.client(), NS);
    for name in ["a", "b", "c", "d"] {
        api.create(
            &PostParams::default(),
            &serde_json::from_value(cm(name)).unwrap(),
        )
        .await
        .unwrap();
    }
    let first = api.list(&ListParams::default().limit(2)).await.unwrap();
    let rv = first.metadata.resource_version.clone().unwrap();
    // Changes after the first page are not in the later pages.
    api.delete("c", &DeleteParams::default()).await.unwrap();
    api.create(
        &PostParams::default(),
        &serde_json::from_value(cm("e")).unwrap(),
    )
    .await
    .unwrap();
    let token = first.metadata.continue_.unwrap();
    let second = api
        .list(&ListParams::default().limit(2).continue_token(&token))
        .await
        .unwrap();
    assert_eq!(
        second.metadata.resource_version.as_deref(),
        Some(rv.as_str())
    );
    let names: Vec<String> = second
        .items
        .iter()
        .map(|o| o.metadata.name.clone().unwrap())
        .collect();
    assert_eq!(names, ["c", "d"]);
    assert!(second.metadata.continue_.is_none());
}

#[tokio::test]
async fn an_object_leaving_a_label_selector_watch_arrives_as_deleted_with_its_old_state() {
    let k8s = KubeEmulator::start().await.unwrap();
    let api: Api<ConfigMap> = Api::namespaced(k8s.client(), NS);
    let mut body = cm("leaver");
    body["metadata"]["labels"] = json!({"team": "a"});
    api.create(
        &PostParams::default(),
        &serde_json::from_value(body).unwrap(),
    )
    .await
    .unwrap();
    let rv = api
        .list(&ListParams::default())
        .await
        .unwrap()
        .metadata
        .resource_version
        .unwrap();
    let mut stream = api
        .watch(&WatchParams::default().labels("team=a").timeout(5), &rv)
        .await
        .unwrap()
        .boxed();
    api.patch(
        "leaver",
        &PatchParams::default(),
        &Patch::Merge(json!({"metadata": {"labels": {"team": "b"}}, "data": {"k": "new"}})),
    )
    .await
    .unwrap();
    let change_rv = api
        .get("leaver")
        .await
        .unwrap()
        .metadata
        .resource_version
        .unwrap();
    match stream.try_next().await.unwrap().unwrap() {
        WatchEvent::Deleted(old) => {
            assert_eq!(
                old.metadata.labels.unwrap()["team"],
                "a",
                "the state that still matched"
            );
            assert_eq!(old.data.unwrap()["k"], "v");
            assert_eq!(
                old.metadata.resource_version,
                Some(change_rv),
                "with the change's resourceVersion"
            );
        }
        other => panic!("expected DELETED, got {other:?}"),
    }
}

#[tokio::test]
async fn deletecollection_honours_field_selectors() {
    let k8s = KubeEmulator::start().await.unwrap();
    let api: Api<ConfigMap> = Api::namespaced(k8s.client(), NS);
    for name in ["keep", "drop"] {
        api.create(
            &PostParams::default(),
            &serde_json::from_value(cm(name)).unwrap(),
        )
        .await
        .unwrap();
    }
    api.delete_collection(
        &DeleteParams::default(),
        &ListParams::default().fields("metadata.name=drop"),
    )
    .await
    .unwrap();
    assert_eq!(k8s.names::<ConfigMap>(NS), ["keep"]);
}
