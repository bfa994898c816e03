//! The Kubernetes API emulator behaves as a kube-rs client expects of a real apiserver: every
//! assertion here is on what the client sees.

// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeMap;
use std::time::Duration;

use futures::{StreamExt, TryStreamExt};
use gatehouse_crds::{ScanPolicy, ScanRequest};
use gatehouse_tests::{Failure, JobState, KubeEmulator};
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{ConfigMap, Pod};
use kube::Resource;
use kube::api::{
    Api, DeleteParams, ListParams, ObjectMeta, Patch, PatchParams, PostParams, WatchEvent,
    WatchParams,
};
use serde_json::json;

const NS: &str = "gatehouse-scans";

fn config_map(name: &str, labels: &[(&str, &str)]) -> ConfigMap {
    ConfigMap {
        metadata: ObjectMeta {
            name: Some(name.into()),
            labels: Some(
                labels
                    .iter()
                    .map(|(k, v)| ((*k).into(), (*v).into()))
                    .collect(),
            ),
            ..ObjectMeta::default()
        },
        data: Some(BTreeMap::from([("k".to_owned(), "v".to_owned())])),
        ..ConfigMap::default()
    }
}

/// The list resourceVersion to start a watch from.
async fn current_rv(api: &Api<ConfigMap>) -> String {
    let list = api.list(&ListParams::default()).await.unwrap();
    list.metadata.resource_version.unwrap()
}

fn api_code(err: &kube::Error) -> u16 {
    match err {
        kube::Error::Api(status) => status.code,
        other => panic!("expected an API error, got {other:?}"),
    }
}

fn sample<T: serde::de::DeserializeOwned>(file: &str) -> T {
    let path = format!("{}/../deploy/samples/{file}", env!("CARGO_MANIFEST_DIR"));
    serde_yaml::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

fn job(name: &str) -> Job {
    serde_json::from_value(json!({
        "metadata": {"name": name},
        "spec": {"template": {"spec": {"restartPolicy": "Never",
            "containers": [{"name": "scan", "image": "busybox"}]}}},
    }))
    .unwrap()
}

#[tokio::test]
async fn create_get_and_already_exists() {
    let k8s = KubeEmulator::start().await.unwrap();
    let api: Api<ConfigMap> = Api::namespaced(k8s.client(), NS);
    let created = api
        .create(&PostParams::default(), &config_map("a", &[]))
        .await
        .unwrap();
    assert!(created.metadata.uid.is_some());
    assert!(created.metadata.creation_timestamp.is_some());
    assert_eq!(created.metadata.namespace.as_deref(), Some(NS));
    let fetched = api.get("a").await.unwrap();
    assert_eq!(
        fetched.metadata.resource_version,
        created.metadata.resource_version
    );

    let again = api
        .create(&PostParams::default(), &config_map("a", &[]))
        .await
        .unwrap_err();
    assert_eq!(api_code(&again), 409);
    let kube::Error::Api(status) = again else {
        unreachable!()
    };
    assert_eq!(status.reason, "AlreadyExists");

    let missing = api.get("nope").await.unwrap_err();
    assert_eq!(api_code(&missing), 404);
}

#[tokio::test]
async fn generate_name_gives_unique_names_with_the_prefix() {
    let k8s = KubeEmulator::start().await.unwrap();
    let api: Api<ConfigMap> = Api::namespaced(k8s.client(), NS);
    let mut names = Vec::new();
    for _ in 0..3 {
        let mut cm = config_map("", &[]);
        cm.metadata.name = None;
        cm.metadata.generate_name = Some("scan-".into());
        names.push(
            api.create(&PostParams::default(), &cm)
                .await
                .unwrap()
                .metadata
                .name
                .unwrap(),
        );
    }
    assert!(
        names
            .iter()
            .all(|n| n.starts_with("scan-") && n.len() == 10),
        "{names:?}"
    );
    names.sort();
    names.dedup();
    assert_eq!(names.len(), 3);
}

#[tokio::test]
async fn invalid_names_are_rejected_with_422() {
    let k8s = KubeEmulator::start().await.unwrap();
    let api: Api<ConfigMap> = Api::namespaced(k8s.client(), NS);
    let err = api
        .create(&PostParams::default(), &config_map("Not_Valid", &[]))
        .await
        .unwrap_err();
    assert_eq!(api_code(&err), 422);
}

#[tokio::test]
async fn list_filters_by_label_selector_and_pages_with_continue() {
    let k8s = KubeEmulator::start().await.unwrap();
    let api: Api<ConfigMap> = Api::namespaced(k8s.client(), NS);
    for i in 0..5 {
        let team = if i % 2 == 0 { "a" } else { "b" };
        api.create(
            &PostParams::default(),
            &config_map(&format!("cm-{i}"), &[("team", team)]),
        )
        .await
        .unwrap();
    }
    let team_a = api
        .list(&ListParams::default().labels("team=a"))
        .await
        .unwrap();
    let names: Vec<_> = team_a
        .items
        .iter()
        .map(|c| c.metadata.name.clone().unwrap())
        .collect();
    assert_eq!(names, ["cm-0", "cm-2", "cm-4"]);
    assert_eq!(
        api.list(&ListParams::default().labels("team in (a,b),!missing"))
            .await
            .unwrap()
            .items
            .len(),
        5
    );

    let first = api.list(&ListParams::default().limit(2)).await.unwrap();
    assert_eq!(first.items.len(), 2);
    let token = first.metadata.continue_.clone().expect("a continue token");
    let mut seen: Vec<String> = first
        .items
        .iter()
        .map(|c| c.metadata.name.clone().unwrap())
        .collect();
    let mut lp = ListParams::default().limit(2);
    lp.continue_token = Some(token);
    loop {
        let page = api.list(&lp).await.unwrap();
        seen.extend(page.items.iter().map(|c| c.metadata.name.clone().unwrap()));
        match page.metadata.continue_.filter(|c| !c.is_empty()) {
            Some(next) => lp.continue_token = Some(next),
            None => break,
        }
    }
    assert_eq!(seen, ["cm-0", "cm-1", "cm-2", "cm-3", "cm-4"]);

    // Another namespace is separate; listing across namespaces sees both.
    let other: Api<ConfigMap> = Api::namespaced(k8s.client(), "other");
    other
        .create(&PostParams::default(), &config_map("cm-0", &[]))
        .await
        .unwrap();
    let all: Api<ConfigMap> = Api::all(k8s.client());
    assert_eq!(
        all.list(&ListParams::default()).await.unwrap().items.len(),
        6
    );
}

#[tokio::test]
async fn expired_continue_token_is_410() {
    let k8s = KubeEmulator::start().await.unwrap();
    let api: Api<ConfigMap> = Api::namespaced(k8s.client(), NS);
    for i in 0..3 {
        api.create(&PostParams::default(), &config_map(&format!("cm-{i}"), &[]))
            .await
            .unwrap();
    }
    let first = api.list(&ListParams::default().limit(1)).await.unwrap();
    api.create(&PostParams::default(), &config_map("later", &[]))
        .await
        .unwrap();
    k8s.compact();
    let mut lp = ListParams::default().limit(1);
    lp.continue_token = first.metadata.continue_;
    assert_eq!(api_code(&api.list(&lp).await.unwrap_err()), 410);
}

#[tokio::test]
async fn update_with_a_stale_resource_version_conflicts() {
    let k8s = KubeEmulator::start().await.unwrap();
    let api: Api<ConfigMap> = Api::namespaced(k8s.client(), NS);
    let created = api
        .create(&PostParams::default(), &config_map("a", &[]))
        .await
        .unwrap();

    let mut first = created.clone();
    first.data = Some(BTreeMap::from([("k".into(), "first".into())]));
    let updated = api
        .replace("a", &PostParams::default(), &first)
        .await
        .unwrap();
    assert_ne!(
        updated.metadata.resource_version,
        created.metadata.resource_version
    );

    let mut stale = created.clone();
    stale.data = Some(BTreeMap::from([("k".into(), "stale".into())]));
    let err = api
        .replace("a", &PostParams::default(), &stale)
        .await
        .unwrap_err();
    assert_eq!(api_code(&err), 409);
    assert_eq!(api.get("a").await.unwrap().data.unwrap()["k"], "first");
}

#[tokio::test]
async fn status_is_written_only_through_the_status_subresource() {
    let k8s = KubeEmulator::start().await.unwrap();
    let api: Api<ScanRequest> = Api::namespaced(k8s.client(), NS);
    let mut request: ScanRequest = sample("scanrequest.yaml");
    request.status = Some(gatehouse_crds::ScanRequestStatus {
        message: Some("set on create".into()),
        ..Default::default()
    });
    let created = api.create(&PostParams::default(), &request).await.unwrap();
    assert!(created.status.is_none(), "status on create is dropped");
    assert_eq!(created.metadata.generation, Some(1));
    let name = created.metadata.name.clone().unwrap();

    let patched = api
        .patch_status(&name, &PatchParams::default(), &Patch::Merge(json!({"status": {"phase": "Running", "commit": "ec26c3e"}, "metadata": {"labels": {"sneaky": "x"}}})))
        .await
        .unwrap();
    let status = patched.status.clone().unwrap();
    assert_eq!(
        status.phase,
        Some(gatehouse_crds::scanrequest::ScanPhase::Running)
    );
    assert!(
        !patched.metadata.labels.unwrap().contains_key("sneaky"),
        "status writes change only .status"
    );
    assert_eq!(
        patched.metadata.generation,
        Some(1),
        "status changes do not bump generation"
    );

    // A main-resource write cannot change status.
    let relabelled = api
        .patch(
            &name,
            &PatchParams::default(),
            &Patch::Merge(
                json!({"metadata": {"labels": {"team": "a"}}, "status": {"phase": "Failed"}}),
            ),
        )
        .await
        .unwrap();
    assert_eq!(
        relabelled.status.unwrap().phase,
        Some(gatehouse_crds::scanrequest::ScanPhase::Running)
    );
    assert_eq!(
        relabelled.metadata.generation,
        Some(1),
        "metadata changes do not bump generation"
    );
}

#[tokio::test]
async fn generation_increments_on_spec_changes_only() {
    let k8s = KubeEmulator::start().await.unwrap();
    let api: Api<ScanPolicy> = Api::namespaced(k8s.client(), NS);
    let policy: ScanPolicy = sample("scanpolicy-kics.yaml");
    let created = api.create(&PostParams::default(), &policy).await.unwrap();
    assert_eq!(created.metadata.generation, Some(1));
    let name = created.metadata.name.clone().unwrap();
    let spec_change = api
        .patch(
            &name,
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"priority": 3}})),
        )
        .await
        .unwrap();
    assert_eq!(spec_change.metadata.generation, Some(2));
    let label_change = api
        .patch(
            &name,
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"labels": {"a": "b"}}})),
        )
        .await
        .unwrap();
    assert_eq!(label_change.metadata.generation, Some(2));
}

#[tokio::test]
async fn crd_schema_defaults_and_cel_rules_are_enforced() {
    let k8s = KubeEmulator::start().await.unwrap();
    let api: Api<ScanPolicy> = Api::namespaced(k8s.client(), NS);
    // Defaults filled in by the "apiserver", as a real one does from the CRD schema.
    let raw: Api<kube::core::DynamicObject> = Api::namespaced_with(
        k8s.client(),
        NS,
        &kube::core::ApiResource::erase::<ScanPolicy>(&()),
    );
    let minimal: kube::core::DynamicObject = serde_json::from_value(json!({
        "apiVersion": "gatehouse.dev/v1alpha1", "kind": "ScanPolicy",
        "metadata": {"name": "minimal"},
        "spec": {"repositories": ["acme/*"], "scanners": [{"name": "kics", "kind": "kics",
            "image": format!("kics@sha256:{}", "a".repeat(64))}]},
    }))
    .unwrap();
    let stored = raw.create(&PostParams::default(), &minimal).await.unwrap();
    assert_eq!(stored.data["spec"]["forks"], "RequireApproval");
    assert_eq!(stored.data["spec"]["scanners"][0]["failOn"], "high");

    let mut duplicate: ScanPolicy = sample("scanpolicy-kics.yaml");
    duplicate.metadata.name = Some("dup".into());
    let again = duplicate.spec.scanners[0].clone();
    duplicate.spec.scanners.push(again);
    let err = api
        .create(&PostParams::default(), &duplicate)
        .await
        .unwrap_err();
    assert_eq!(api_code(&err), 422);
    assert!(
        err.to_string().contains("scanner names must be unique"),
        "{err}"
    );

    // ScanRequest spec is immutable.
    let requests: Api<ScanRequest> = Api::namespaced(k8s.client(), NS);
    let created = requests
        .create(&PostParams::default(), &sample("scanrequest.yaml"))
        .await
        .unwrap();
    let err = requests
        .patch(
            created.metadata.name.as_deref().unwrap(),
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"pullRequest": {"number": 3}}})),
        )
        .await
        .unwrap_err();
    assert_eq!(api_code(&err), 422);
    assert!(err.to_string().contains("spec is immutable"), "{err}");
}

#[tokio::test]
async fn json_patch_test_operations_guard_writes() {
    let k8s = KubeEmulator::start().await.unwrap();
    let api: Api<ConfigMap> = Api::namespaced(k8s.client(), NS);
    api.create(&PostParams::default(), &config_map("a", &[]))
        .await
        .unwrap();
    // kube's finalizer helper: test that finalizers are absent (null), then add.
    let add: json_patch::Patch = serde_json::from_value(json!([
        {"op": "test", "path": "/metadata/finalizers", "value": null},
        {"op": "add", "path": "/metadata/finalizers", "value": ["gatehouse.dev/cleanup"]},
    ]))
    .unwrap();
    let patched = api
        .patch(
            "a",
            &PatchParams::default(),
            &Patch::<()>::Json(add.clone()),
        )
        .await
        .unwrap();
    assert_eq!(
        patched.metadata.finalizers.unwrap(),
        ["gatehouse.dev/cleanup"]
    );
    // The same patch again fails its test: finalizers are no longer null.
    let err = api
        .patch("a", &PatchParams::default(), &Patch::<()>::Json(add))
        .await
        .unwrap_err();
    assert_eq!(api_code(&err), 422);
}

#[tokio::test]
async fn server_side_apply_creates_then_removes_what_its_manager_stopped_sending() {
    let k8s = KubeEmulator::start().await.unwrap();
    let api: Api<ConfigMap> = Api::namespaced(k8s.client(), NS);
    let applied = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "ssa"}, "data": {"a": "1"}});
    let pp = PatchParams::apply("gatehouse-test");
    let created = api
        .patch("ssa", &pp, &Patch::Apply(&applied))
        .await
        .unwrap();
    assert_eq!(created.data.unwrap()["a"], "1");
    // The same manager applies a configuration without `a`: it no longer wants it.
    let second = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "ssa"}, "data": {"b": "2"}});
    let merged = api.patch("ssa", &pp, &Patch::Apply(&second)).await.unwrap();
    let data = merged.data.unwrap();
    assert_eq!(data.get("a"), None);
    assert_eq!(data["b"], "2");

    let no_manager = PatchParams {
        field_manager: None,
        ..PatchParams::default()
    };
    let err = api
        .patch("ssa", &no_manager, &Patch::Apply(&second))
        .await
        .unwrap_err();
    assert_eq!(api_code(&err), 422);
}

#[tokio::test]
async fn watch_streams_changes_from_a_resource_version() {
    let k8s = KubeEmulator::start().await.unwrap();
    let api: Api<ConfigMap> = Api::namespaced(k8s.client(), NS);
    let list = api.list(&ListParams::default()).await.unwrap();
    let rv = list.metadata.resource_version.unwrap();
    let mut stream = api
        .watch(&WatchParams::default().timeout(10), &rv)
        .await
        .unwrap()
        .boxed();

    api.create(&PostParams::default(), &config_map("w", &[]))
        .await
        .unwrap();
    api.patch(
        "w",
        &PatchParams::default(),
        &Patch::Merge(json!({"data": {"k": "2"}})),
    )
    .await
    .unwrap();
    api.delete("w", &DeleteParams::default()).await.unwrap();

    let mut seen = Vec::new();
    let mut last_rv = 0_u64;
    while seen.len() < 3 {
        let event = tokio::time::timeout(Duration::from_secs(5), stream.try_next())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        let (kind, object) = match event {
            WatchEvent::Added(o) => ("ADDED", o),
            WatchEvent::Modified(o) => ("MODIFIED", o),
            WatchEvent::Deleted(o) => ("DELETED", o),
            other => panic!("unexpected {other:?}"),
        };
        let rv: u64 = object.metadata.resource_version.unwrap().parse().unwrap();
        assert!(rv > last_rv, "resourceVersions increase");
        last_rv = rv;
        seen.push(kind);
    }
    assert_eq!(seen, ["ADDED", "MODIFIED", "DELETED"]);
}

#[tokio::test]
async fn watch_from_a_compacted_resource_version_gets_410_gone() {
    let k8s = KubeEmulator::start().await.unwrap();
    let api: Api<ConfigMap> = Api::namespaced(k8s.client(), NS);
    let old_rv = current_rv(&api).await;
    api.create(&PostParams::default(), &config_map("x", &[]))
        .await
        .unwrap();
    k8s.compact();
    let mut stream = api
        .watch(&WatchParams::default().timeout(5), &old_rv)
        .await
        .unwrap()
        .boxed();
    match stream.try_next().await.unwrap() {
        Some(WatchEvent::Error(status)) => {
            assert_eq!(status.code, 410);
            assert_eq!(status.reason, "Expired");
        }
        other => panic!("expected a 410 ERROR event, got {other:?}"),
    }
    assert!(
        stream.try_next().await.unwrap().is_none(),
        "the stream ends after the error"
    );
}

#[tokio::test]
async fn watch_timeout_seconds_ends_the_stream() {
    let k8s = KubeEmulator::start().await.unwrap();
    let api: Api<ConfigMap> = Api::namespaced(k8s.client(), NS);
    let rv = current_rv(&api).await;
    let mut stream = api
        .watch(&WatchParams::default().timeout(1), &rv)
        .await
        .unwrap()
        .boxed();
    let end = tokio::time::timeout(Duration::from_secs(10), stream.try_next()).await;
    assert!(
        matches!(end, Ok(Ok(None))),
        "stream should end by itself: {end:?}"
    );
}

#[tokio::test]
async fn watch_with_a_label_selector_sees_objects_leave_the_selection() {
    let k8s = KubeEmulator::start().await.unwrap();
    let api: Api<ConfigMap> = Api::namespaced(k8s.client(), NS);
    let rv = current_rv(&api).await;
    let mut stream = api
        .watch(&WatchParams::default().labels("team=a").timeout(10), &rv)
        .await
        .unwrap()
        .boxed();
    api.create(&PostParams::default(), &config_map("sel", &[("team", "a")]))
        .await
        .unwrap();
    api.create(
        &PostParams::default(),
        &config_map("other", &[("team", "b")]),
    )
    .await
    .unwrap();
    api.patch(
        "sel",
        &PatchParams::default(),
        &Patch::Merge(json!({"metadata": {"labels": {"team": "b"}}})),
    )
    .await
    .unwrap();
    let first = stream.try_next().await.unwrap().unwrap();
    assert!(matches!(first, WatchEvent::Added(ref o) if o.metadata.name.as_deref() == Some("sel")));
    let second = stream.try_next().await.unwrap().unwrap();
    assert!(
        matches!(second, WatchEvent::Deleted(ref o) if o.metadata.name.as_deref() == Some("sel")),
        "{second:?}"
    );
}

#[tokio::test]
async fn bookmarks_carry_the_current_resource_version() {
    let k8s = KubeEmulator::builder()
        .bookmark_interval(Duration::from_millis(100))
        .start()
        .await
        .unwrap();
    let api: Api<ConfigMap> = Api::namespaced(k8s.client(), NS);
    let rv = current_rv(&api).await;
    api.create(&PostParams::default(), &config_map("b", &[]))
        .await
        .unwrap();
    let mut stream = api
        .watch(&WatchParams::default().timeout(10), &rv)
        .await
        .unwrap()
        .boxed();
    assert!(matches!(
        stream.try_next().await.unwrap(),
        Some(WatchEvent::Added(_))
    ));
    match stream.try_next().await.unwrap() {
        Some(WatchEvent::Bookmark(mark)) => {
            assert_eq!(
                mark.metadata.resource_version,
                k8s.resource_version().to_string()
            );
        }
        other => panic!("expected a bookmark, got {other:?}"),
    }
}

#[tokio::test]
async fn delete_with_finalizers_waits_until_the_last_one_is_removed() {
    let k8s = KubeEmulator::start().await.unwrap();
    let api: Api<ConfigMap> = Api::namespaced(k8s.client(), NS);
    let mut cm = config_map("f", &[]);
    cm.metadata.finalizers = Some(vec!["a/one".into(), "a/two".into()]);
    api.create(&PostParams::default(), &cm).await.unwrap();

    api.delete("f", &DeleteParams::default()).await.unwrap();
    let deleting = api.get("f").await.unwrap();
    assert!(deleting.metadata.deletion_timestamp.is_some());

    // No new finalizers once deleting.
    let err = api
        .patch(
            "f",
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"finalizers": ["a/one", "a/two", "a/three"]}})),
        )
        .await
        .unwrap_err();
    assert_eq!(api_code(&err), 422);

    api.patch(
        "f",
        &PatchParams::default(),
        &Patch::Merge(json!({"metadata": {"finalizers": ["a/two"]}})),
    )
    .await
    .unwrap();
    assert!(api.get("f").await.is_ok(), "one finalizer left");
    api.patch(
        "f",
        &PatchParams::default(),
        &Patch::Merge(json!({"metadata": {"finalizers": null}})),
    )
    .await
    .unwrap();
    assert_eq!(api_code(&api.get("f").await.unwrap_err()), 404);
}

#[tokio::test]
async fn deleting_an_owner_deletes_its_dependents_in_the_background() {
    let k8s = KubeEmulator::start().await.unwrap();
    let requests: Api<ScanRequest> = Api::namespaced(k8s.client(), NS);
    let owner = requests
        .create(&PostParams::default(), &sample("scanrequest.yaml"))
        .await
        .unwrap();
    let jobs: Api<Job> = Api::namespaced(k8s.client(), NS);
    let mut dependent = job("owned-job");
    dependent.metadata.owner_references = Some(vec![owner.controller_owner_ref(&()).unwrap()]);
    jobs.create(&PostParams::default(), &dependent)
        .await
        .unwrap();
    jobs.create(&PostParams::default(), &job("unrelated"))
        .await
        .unwrap();

    requests
        .delete(
            owner.metadata.name.as_deref().unwrap(),
            &DeleteParams::default(),
        )
        .await
        .unwrap();
    assert_eq!(k8s.names::<Job>(NS), ["unrelated"]);
}

#[tokio::test]
async fn deleting_a_job_orphans_its_pods_unless_told_otherwise() {
    let k8s = KubeEmulator::start().await.unwrap();
    let jobs: Api<Job> = Api::namespaced(k8s.client(), NS);
    let pods: Api<Pod> = Api::namespaced(k8s.client(), NS);
    for name in ["orphaned", "cascaded"] {
        let created = jobs
            .create(&PostParams::default(), &job(name))
            .await
            .unwrap();
        let pod: Pod = serde_json::from_value(json!({"metadata": {"name": format!("{name}-pod"),
            "ownerReferences": [created.controller_owner_ref(&()).unwrap()]},
            "spec": {"containers": [{"name": "c", "image": "busybox"}]}}))
        .unwrap();
        pods.create(&PostParams::default(), &pod).await.unwrap();
    }
    // The API's default for Jobs is Orphan: the pod stays, without its owner reference.
    jobs.delete("orphaned", &DeleteParams::default())
        .await
        .unwrap();
    let orphan = pods.get("orphaned-pod").await.unwrap();
    assert!(orphan.metadata.owner_references.is_none());
    jobs.delete("cascaded", &DeleteParams::background())
        .await
        .unwrap();
    assert_eq!(api_code(&pods.get("cascaded-pod").await.unwrap_err()), 404);

    // Foreground deletion (dependents that block it go first) is in
    // kube_emulator_lifecycle.rs: foreground_deletion_waits_for_dependents_that_block_it.
}

#[tokio::test]
async fn injected_500_and_429_reach_the_client_then_requests_succeed_again() {
    let k8s = KubeEmulator::start().await.unwrap();
    let api: Api<ConfigMap> = Api::namespaced(k8s.client_without_retries(), NS);
    k8s.fail_next(Some("POST"), "/configmaps", 1, Failure::InternalError);
    k8s.fail_next(
        None,
        "/configmaps",
        1,
        Failure::TooManyRequests {
            retry_after_seconds: 7,
        },
    );

    let err = api
        .create(&PostParams::default(), &config_map("a", &[]))
        .await
        .unwrap_err();
    assert_eq!(api_code(&err), 500);
    let err = api
        .create(&PostParams::default(), &config_map("a", &[]))
        .await
        .unwrap_err();
    assert_eq!(api_code(&err), 429);
    api.create(&PostParams::default(), &config_map("a", &[]))
        .await
        .unwrap();

    // Retry-After reaches the wire (kube's error type does not carry headers).
    k8s.fail_next(
        Some("GET"),
        "/configmaps/a",
        1,
        Failure::TooManyRequests {
            retry_after_seconds: 7,
        },
    );
    let response = reqwest_like_get(&format!(
        "{}/api/v1/namespaces/{NS}/configmaps/a",
        k8s.url()
    ))
    .await;
    assert!(response.starts_with("HTTP/1.1 429"), "{response}");
    assert!(
        response.to_ascii_lowercase().contains("retry-after: 7"),
        "{response}"
    );

    // Injected failures are in the write log with their status.
    let statuses: Vec<u16> = k8s.writes().iter().map(|w| w.status).collect();
    assert_eq!(statuses, [500, 429, 201]);
}

#[tokio::test]
async fn default_kube_client_waits_out_a_429_and_succeeds() {
    // kube 5 clients retry 429/503/504 themselves, honouring Retry-After; production code sees
    // the error only when retries run out.
    let k8s = KubeEmulator::start().await.unwrap();
    let api: Api<ConfigMap> = Api::namespaced(k8s.client(), NS);
    k8s.fail_next(
        Some("POST"),
        "/configmaps",
        1,
        Failure::TooManyRequests {
            retry_after_seconds: 1,
        },
    );
    api.create(&PostParams::default(), &config_map("a", &[]))
        .await
        .unwrap();
    let statuses: Vec<u16> = k8s.writes().iter().map(|w| w.status).collect();
    assert_eq!(statuses, [429, 201]);
}

/// A raw HTTP/1.1 GET over TCP, so headers can be inspected.
async fn reqwest_like_get(url: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let rest = url.trim_start_matches("http://");
    let (host, path) = rest.split_once('/').unwrap();
    let mut stream = tokio::net::TcpStream::connect(host).await.unwrap();
    stream
        .write_all(
            format!("GET /{path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n").as_bytes(),
        )
        .await
        .unwrap();
    let mut out = String::new();
    stream.read_to_string(&mut out).await.unwrap();
    out
}

#[tokio::test]
async fn a_stalled_watch_delivers_nothing_until_released() {
    let k8s = KubeEmulator::start().await.unwrap();
    let api: Api<ConfigMap> = Api::namespaced(k8s.client(), NS);
    let rv = current_rv(&api).await;
    let mut stream = api
        .watch(&WatchParams::default().timeout(30), &rv)
        .await
        .unwrap()
        .boxed();
    let stall = k8s.stall_watches("/configmaps");
    api.create(&PostParams::default(), &config_map("held", &[]))
        .await
        .unwrap();
    let nothing = tokio::time::timeout(Duration::from_millis(300), stream.try_next()).await;
    assert!(nothing.is_err(), "no event while stalled: {nothing:?}");
    stall.release();
    let event = tokio::time::timeout(Duration::from_secs(5), stream.try_next())
        .await
        .unwrap()
        .unwrap();
    assert!(
        matches!(event, Some(WatchEvent::Added(ref o)) if o.metadata.name.as_deref() == Some("held"))
    );
}

#[tokio::test]
async fn job_status_can_be_played_like_the_job_controller() {
    let k8s = KubeEmulator::start().await.unwrap();
    let jobs: Api<Job> = Api::namespaced(k8s.client(), NS);
    jobs.create(&PostParams::default(), &job("scan"))
        .await
        .unwrap();
    k8s.set_job_status(NS, "scan", &JobState::Active).unwrap();
    assert_eq!(
        jobs.get("scan").await.unwrap().status.unwrap().active,
        Some(1)
    );
    k8s.set_job_status(
        NS,
        "scan",
        &JobState::Failed {
            reason: "DeadlineExceeded".into(),
            message: "Job was active longer than specified deadline".into(),
        },
    )
    .unwrap();
    let status = jobs.get("scan").await.unwrap().status.unwrap();
    assert_eq!(status.failed, Some(1));
    let failed = status
        .conditions
        .unwrap()
        .into_iter()
        .find(|c| c.type_ == "Failed")
        .unwrap();
    assert_eq!(
        (failed.status.as_str(), failed.reason.as_deref()),
        ("True", Some("DeadlineExceeded"))
    );
}

#[tokio::test]
async fn write_log_records_method_path_content_type_and_body() {
    let k8s = KubeEmulator::start().await.unwrap();
    let api: Api<ConfigMap> = Api::namespaced(k8s.client(), NS);
    api.create(&PostParams::default(), &config_map("a", &[]))
        .await
        .unwrap();
    api.patch(
        "a",
        &PatchParams::apply("gatehouse").force(),
        &Patch::Apply(json!({"apiVersion": "v1", "kind": "ConfigMap", "data": {"x": "y"}})),
    )
    .await
    .unwrap();
    let writes = k8s.writes();
    assert_eq!(writes.len(), 2);
    assert_eq!((writes[0].method.as_str(), writes[0].status), ("POST", 201));
    assert_eq!(writes[1].method, "PATCH");
    assert_eq!(writes[1].content_type, "application/apply-patch+yaml");
    assert!(
        writes[1].query.contains("fieldManager=gatehouse")
            && writes[1].query.contains("force=true")
    );
    assert_eq!(writes[1].body["data"]["x"], "y");
}

#[tokio::test]
async fn table_responses_carry_the_crd_printer_columns() {
    let k8s = KubeEmulator::start().await.unwrap();
    let client = k8s.client();
    let requests: Api<ScanRequest> = Api::namespaced(client.clone(), NS);
    let created = requests
        .create(&PostParams::default(), &sample("scanrequest.yaml"))
        .await
        .unwrap();
    requests
        .patch_status(created.metadata.name.as_deref().unwrap(), &PatchParams::default(), &Patch::Merge(json!({"status": {"phase": "Succeeded", "commit": "ec26c3e", "findings": {"critical": 1, "high": 2}}})))
        .await
        .unwrap();
    let request = http::Request::get(format!(
        "/apis/gatehouse.dev/v1alpha1/namespaces/{NS}/scanrequests"
    ))
    .header(
        "Accept",
        "application/json;as=Table;v=v1;g=meta.k8s.io,application/json",
    )
    .body(Vec::new())
    .unwrap();
    let table: serde_json::Value = client.request(request).await.unwrap();
    let headers: Vec<&str> = table["columnDefinitions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        headers,
        [
            "Name",
            "Repository",
            "PR",
            "Commit",
            "Phase",
            "Critical",
            "High",
            "Age"
        ]
    );
    let cells = &table["rows"][0]["cells"];
    assert_eq!(cells[1], "Hello-World");
    assert_eq!(cells[2], 2);
    assert_eq!(cells[3], "ec26c3e");
    assert_eq!(cells[4], "Succeeded");
    assert_eq!((cells[5].as_i64(), cells[6].as_i64()), (Some(1), Some(2)));
    assert!(
        cells[7].as_str().unwrap().ends_with('s'),
        "age like 0s: {}",
        cells[7]
    );
}

#[tokio::test]
async fn discovery_lists_the_gatehouse_group_with_short_names_and_category() {
    let k8s = KubeEmulator::start().await.unwrap();
    let discovery = kube::Discovery::new(k8s.client()).run().await.unwrap();
    let group = discovery
        .groups()
        .find(|g| g.name() == "gatehouse.dev")
        .expect("gatehouse.dev served");
    let kinds: Vec<String> = group
        .recommended_resources()
        .into_iter()
        .map(|(r, _)| r.kind)
        .collect();
    assert!(
        kinds.contains(&"ScanRequest".to_owned()) && kinds.contains(&"ScanPolicy".to_owned()),
        "{kinds:?}"
    );
}
