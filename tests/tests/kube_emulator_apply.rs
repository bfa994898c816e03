//! Server-side apply and field ownership in the Kubernetes API emulator, as a real apiserver
//! does them: what the operator's Job, status and Lease applies will meet on a cluster.

// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::Duration;

use gatehouse_crds::{ScanPolicy, ScanRequest};
use gatehouse_tests::KubeEmulator;
use gatehouse_tests::http::request;
use gatehouse_tests::kube_support::{api_status, sample};
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube_lease_manager::{LeaseManager, LeaseManagerBuilder};
use serde_json::{Value, json};

const NS: &str = "gatehouse-scans";

fn apply(manager: &str) -> PatchParams {
    PatchParams::apply(manager)
}

fn cm(data: &Value) -> Value {
    json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "shared"}, "data": data})
}

fn managers(object: &Value) -> Vec<(String, String, Option<String>)> {
    object["metadata"]["managedFields"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .iter()
        .map(|e| {
            (
                e["manager"].as_str().unwrap().to_owned(),
                e["operation"].as_str().unwrap().to_owned(),
                e["subresource"].as_str().map(str::to_owned),
            )
        })
        .collect()
}

fn fields_of<'v>(object: &'v Value, manager: &str) -> &'v Value {
    object["metadata"]["managedFields"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["manager"] == manager)
        .map_or(&Value::Null, |e| &e["fieldsV1"])
}

#[tokio::test]
async fn reads_return_managed_fields_recorded_for_every_kind_of_write() {
    let k8s = KubeEmulator::start().await.unwrap();
    let api: Api<ConfigMap> = Api::namespaced(k8s.client(), NS);
    let created: ConfigMap = serde_json::from_value(cm(&json!({"a": "1"}))).unwrap();
    api.create(
        &PostParams {
            field_manager: Some("creator".into()),
            ..PostParams::default()
        },
        &created,
    )
    .await
    .unwrap();
    api.patch(
        "shared",
        &PatchParams {
            field_manager: Some("editor".into()),
            ..PatchParams::default()
        },
        &Patch::Merge(json!({"data": {"a": "2", "b": "3"}})),
    )
    .await
    .unwrap();
    api.patch(
        "shared",
        &apply("applier"),
        &Patch::Apply(cm(&json!({"c": "4"}))),
    )
    .await
    .unwrap();
    // No fieldManager: the apiserver names the writer after its User-Agent's product.
    let raw = request(
        k8s.addr(),
        "PATCH",
        &format!("/api/v1/namespaces/{NS}/configmaps/shared"),
        &[
            ("Content-Type", "application/merge-patch+json"),
            ("User-Agent", "kubectl/v1.35.0 (linux/amd64)"),
        ],
        br#"{"data":{"d":"5"}}"#,
    )
    .await
    .unwrap();
    assert_eq!(raw.status, 200, "{}", raw.text());

    let object = serde_json::to_value(api.get("shared").await.unwrap()).unwrap();
    let mut seen = managers(&object);
    seen.sort();
    assert_eq!(
        seen,
        [
            ("applier".to_owned(), "Apply".to_owned(), None),
            ("editor".to_owned(), "Update".to_owned(), None),
            ("kubectl".to_owned(), "Update".to_owned(), None),
        ]
    );
    // The editor changed `a`, the only field the creator owned: the creator's entry is gone.
    assert_eq!(fields_of(&object, "creator"), &Value::Null);
    assert_eq!(
        fields_of(&object, "editor")["f:data"],
        json!({"f:a": {}, "f:b": {}})
    );
    assert_eq!(fields_of(&object, "applier")["f:data"], json!({"f:c": {}}));
    let entry = &object["metadata"]["managedFields"][0];
    assert_eq!(entry["fieldsType"], "FieldsV1");
    assert_eq!(entry["apiVersion"], "v1");
    assert!(entry["time"].is_string());
}

#[tokio::test]
async fn status_writes_are_recorded_with_the_status_subresource() {
    let k8s = KubeEmulator::start().await.unwrap();
    let api: Api<ScanRequest> = Api::namespaced(k8s.client(), NS);
    // The creator sends a status too: dropped on create, and never owned by the creator.
    let mut sr = serde_json::to_value(sample::<ScanRequest>("scanrequest.yaml")).unwrap();
    sr["status"] = json!({"phase": "Running", "message": "made up"});
    let name = sr["metadata"]["name"].as_str().unwrap().to_owned();
    let created = api
        .create(
            &PostParams {
                field_manager: Some("gatehouse-webhook".into()),
                ..PostParams::default()
            },
            &serde_json::from_value(sr).unwrap(),
        )
        .await
        .unwrap();
    assert!(
        created.status.is_none(),
        "status is not written through the main resource"
    );
    let status = json!({"apiVersion": "gatehouse.dev/v1alpha1", "kind": "ScanRequest",
        "status": {"phase": "Queued"}});
    let applied = api
        .patch_status(&name, &apply("gatehouse-operator"), &Patch::Apply(status))
        .await
        .unwrap();
    let object = serde_json::to_value(applied).unwrap();
    assert!(managers(&object).contains(&(
        "gatehouse-operator".to_owned(),
        "Apply".to_owned(),
        Some("status".to_owned())
    )));
    assert_eq!(
        fields_of(&object, "gatehouse-operator"),
        &json!({"f:status": {"f:phase": {}}})
    );
    // The creator owns the spec but never the status (reset on the main resource).
    let creator = fields_of(&object, "gatehouse-webhook");
    assert!(
        creator.get("f:spec").is_some() && creator.get("f:status").is_none(),
        "{creator}"
    );
}

#[tokio::test]
async fn apply_that_changes_a_field_another_manager_owns_is_a_409_naming_the_field() {
    let k8s = KubeEmulator::start().await.unwrap();
    let api: Api<ConfigMap> = Api::namespaced(k8s.client(), NS);
    api.patch(
        "shared",
        &apply("first"),
        &Patch::Apply(cm(&json!({"a": "1"}))),
    )
    .await
    .unwrap();
    let err = api_status(
        api.patch(
            "shared",
            &apply("second"),
            &Patch::Apply(cm(&json!({"a": "2"}))),
        )
        .await
        .unwrap_err(),
    );
    assert_eq!((err.code, err.reason.as_str()), (409, "Conflict"));
    assert_eq!(
        err.message,
        "Apply failed with 1 conflict: conflict with \"first\": .data.a"
    );
    assert_eq!(
        api.get("shared").await.unwrap().data.unwrap()["a"],
        "1",
        "nothing changed"
    );

    // An ordinary writer is an owner too: its fields conflict, named with its API version.
    api.patch(
        "shared",
        &PatchParams {
            field_manager: Some("editor".into()),
            ..PatchParams::default()
        },
        &Patch::Merge(json!({"data": {"b": "x"}})),
    )
    .await
    .unwrap();
    let err = api_status(
        api.patch(
            "shared",
            &apply("second"),
            &Patch::Apply(cm(&json!({"a": "2", "b": "y"}))),
        )
        .await
        .unwrap_err(),
    );
    assert_eq!(err.code, 409);
    assert!(
        err.message.starts_with("Apply failed with 2 conflicts: "),
        "{}",
        err.message
    );
    assert!(
        err.message.contains("conflicts with \"editor\" using v1:"),
        "{}",
        err.message
    );
    assert!(err.message.contains("- .data.b"), "{}", err.message);
}

#[tokio::test]
async fn applying_the_value_another_manager_set_shares_the_field_without_conflict() {
    let k8s = KubeEmulator::start().await.unwrap();
    let api: Api<ConfigMap> = Api::namespaced(k8s.client(), NS);
    api.patch(
        "shared",
        &apply("first"),
        &Patch::Apply(cm(&json!({"a": "1"}))),
    )
    .await
    .unwrap();
    let shared = api
        .patch(
            "shared",
            &apply("second"),
            &Patch::Apply(cm(&json!({"a": "1"}))),
        )
        .await
        .unwrap();
    let object = serde_json::to_value(shared).unwrap();
    assert_eq!(fields_of(&object, "first")["f:data"], json!({"f:a": {}}));
    assert_eq!(fields_of(&object, "second")["f:data"], json!({"f:a": {}}));
}

#[tokio::test]
async fn forced_apply_takes_the_field_over_so_the_old_owner_no_longer_holds_it() {
    let k8s = KubeEmulator::start().await.unwrap();
    let api: Api<ConfigMap> = Api::namespaced(k8s.client(), NS);
    api.patch(
        "shared",
        &apply("first"),
        &Patch::Apply(cm(&json!({"a": "1", "keep": "k"}))),
    )
    .await
    .unwrap();
    let taken = api
        .patch(
            "shared",
            &apply("second").force(),
            &Patch::Apply(cm(&json!({"a": "2"}))),
        )
        .await
        .unwrap();
    let object = serde_json::to_value(&taken).unwrap();
    assert_eq!(taken.data.unwrap()["a"], "2");
    assert_eq!(fields_of(&object, "first")["f:data"], json!({"f:keep": {}}));
    assert_eq!(fields_of(&object, "second")["f:data"], json!({"f:a": {}}));
    // The old owner now conflicts when it tries to set its value back.
    let err = api_status(
        api.patch(
            "shared",
            &apply("first"),
            &Patch::Apply(cm(&json!({"a": "1", "keep": "k"}))),
        )
        .await
        .unwrap_err(),
    );
    assert_eq!(
        err.message,
        "Apply failed with 1 conflict: conflict with \"second\": .data.a"
    );
}

#[tokio::test]
async fn a_field_its_manager_stops_applying_is_removed_unless_another_manager_owns_it() {
    let k8s = KubeEmulator::start().await.unwrap();
    let api: Api<ConfigMap> = Api::namespaced(k8s.client(), NS);
    api.patch(
        "shared",
        &apply("first"),
        &Patch::Apply(cm(&json!({"a": "1", "b": "2"}))),
    )
    .await
    .unwrap();
    api.patch(
        "shared",
        &apply("second"),
        &Patch::Apply(cm(&json!({"b": "2"}))),
    )
    .await
    .unwrap();
    let after = api
        .patch(
            "shared",
            &apply("first"),
            &Patch::Apply(
                json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "shared"}}),
            ),
        )
        .await
        .unwrap();
    let data = after.data.unwrap_or_default();
    assert_eq!(data.get("a"), None, "only first owned a");
    assert_eq!(
        data.get("b").map(String::as_str),
        Some("2"),
        "second still owns b"
    );
}

#[tokio::test]
async fn a_status_apply_that_sends_only_phase_removes_the_scanners_it_applied_before() {
    let k8s = KubeEmulator::start().await.unwrap();
    let api: Api<ScanRequest> = Api::namespaced(k8s.client(), NS);
    let sr: ScanRequest = sample("scanrequest.yaml");
    let name = sr.metadata.name.clone().unwrap();
    api.create(&PostParams::default(), &sr).await.unwrap();
    let status = |status: Value| json!({"apiVersion": "gatehouse.dev/v1alpha1", "kind": "ScanRequest", "status": status});
    api.patch_status(
        &name,
        &apply("gatehouse-operator"),
        &Patch::Apply(status(json!({"phase": "Running",
            "scanners": [{"name": "kics", "phase": "Running", "jobName": "j"}]}))),
    )
    .await
    .unwrap();
    let after = api
        .patch_status(
            &name,
            &apply("gatehouse-operator"),
            &Patch::Apply(status(json!({"phase": "Succeeded"}))),
        )
        .await
        .unwrap();
    let status = after.status.unwrap();
    assert_eq!(
        status.phase.map(|p| format!("{p:?}")),
        Some("Succeeded".to_owned())
    );
    assert!(
        status.scanners.is_empty(),
        "scanners were removed: {:?}",
        status.scanners
    );
}

#[tokio::test]
async fn built_in_lists_merge_by_key_so_a_second_manager_keeps_the_other_containers() {
    let k8s = KubeEmulator::start().await.unwrap();
    // Job containers merge by name: a second manager applying one container keeps the other.
    let jobs: Api<Job> = Api::namespaced(k8s.client(), NS);
    let job = |containers: Value, labels: Value| {
        json!({"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": "scan", "labels": labels},
            "spec": {"template": {"spec": {"restartPolicy": "Never", "containers": containers}}}})
    };
    jobs.patch("scan", &apply("operator"), &Patch::Apply(job(
        json!([{"name": "scan", "image": "kics@sha256:1"}, {"name": "report", "image": "agent@sha256:2"}]),
        json!({"a": "1"}),
    )))
    .await
    .unwrap();
    let after = jobs
        .patch(
            "scan",
            &apply("other"),
            &Patch::Apply(job(
                json!([{"name": "report", "image": "agent@sha256:2"}]),
                json!({"b": "2"}),
            )),
        )
        .await
        .unwrap();
    let names: Vec<String> = after
        .spec
        .unwrap()
        .template
        .spec
        .unwrap()
        .containers
        .iter()
        .map(|c| c.name.clone())
        .collect();
    assert_eq!(names, ["scan", "report"]);
}

#[tokio::test]
async fn finalizers_merge_as_a_set_and_owner_references_by_uid() {
    let k8s = KubeEmulator::start().await.unwrap();
    let cms: Api<ConfigMap> = Api::namespaced(k8s.client(), NS);
    let mut owners = Vec::new();
    for owner in ["owner-1", "owner-2"] {
        let created = cms
            .create(
                &PostParams::default(),
                &serde_json::from_value(json!({"metadata": {"name": owner}})).unwrap(),
            )
            .await
            .unwrap();
        owners.push(created.metadata.uid.unwrap());
    }
    let meta = |finalizer: &str, owner: &str, uid: &str| {
        json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "meta",
            "finalizers": [finalizer],
            "ownerReferences": [{"apiVersion": "v1", "kind": "ConfigMap", "name": owner, "uid": uid}]}})
    };
    cms.patch(
        "meta",
        &apply("one"),
        &Patch::Apply(meta("a.dev/one", "owner-1", &owners[0])),
    )
    .await
    .unwrap();
    let merged = cms
        .patch(
            "meta",
            &apply("two"),
            &Patch::Apply(meta("a.dev/two", "owner-2", &owners[1])),
        )
        .await
        .unwrap();
    assert_eq!(
        merged.metadata.finalizers.unwrap(),
        ["a.dev/one", "a.dev/two"]
    );
    let uids: Vec<String> = merged
        .metadata
        .owner_references
        .unwrap()
        .into_iter()
        .map(|r| r.uid)
        .collect();
    assert_eq!(uids, owners);
}

#[tokio::test]
async fn a_crd_list_without_a_list_type_is_one_atomic_field_owned_whole() {
    let k8s = KubeEmulator::start().await.unwrap();
    let policies: Api<ScanPolicy> = Api::namespaced(k8s.client(), NS);
    let mut policy = serde_json::to_value(sample::<ScanPolicy>("scanpolicy-kics.yaml")).unwrap();
    policy["metadata"] = json!({"name": "p"});
    policies
        .patch("p", &apply("gitops"), &Patch::Apply(&policy))
        .await
        .unwrap();
    let mut more = policy.clone();
    let mut second = more["spec"]["scanners"][0].clone();
    second["name"] = json!("kics-two");
    more["spec"]["scanners"]
        .as_array_mut()
        .unwrap()
        .push(second);
    let err = api_status(
        policies
            .patch("p", &apply("someone"), &Patch::Apply(&more))
            .await
            .unwrap_err(),
    );
    assert_eq!(err.code, 409);
    assert!(
        err.message
            .contains("conflict with \"gitops\": .spec.scanners"),
        "{}",
        err.message
    );
}

#[tokio::test]
async fn apply_bodies_must_name_their_type_and_carry_no_managed_fields() {
    let k8s = KubeEmulator::start().await.unwrap();
    let api: Api<ConfigMap> = Api::namespaced(k8s.client(), NS);
    for (body, expected) in [
        (
            json!({"kind": "ConfigMap", "metadata": {"name": "x"}}),
            "Incorrect version specified in apply patch",
        ),
        (
            json!({"apiVersion": "v2", "kind": "ConfigMap", "metadata": {"name": "x"}}),
            "Specified patch version: v2, expected: v1",
        ),
        (
            json!({"apiVersion": "v1", "metadata": {"name": "x"}}),
            "Object 'Kind' is missing",
        ),
        (
            json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "x",
                "managedFields": [{"manager": "m", "operation": "Apply", "fieldsType": "FieldsV1", "fieldsV1": {}}]}}),
            "metadata.managedFields must be nil",
        ),
        (
            json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "other"}}),
            "does not match the name on the URL",
        ),
    ] {
        let err = api_status(
            api.patch("x", &apply("m"), &Patch::Apply(&body))
                .await
                .unwrap_err(),
        );
        assert_eq!(err.code, 400, "{body}: {}", err.message);
        assert!(err.message.contains(expected), "{body}: {}", err.message);
    }
    assert!(k8s.names::<ConfigMap>(NS).is_empty());
}

#[tokio::test]
async fn a_second_lease_candidate_applying_without_force_gets_409() {
    let k8s = KubeEmulator::start().await.unwrap();
    let leases: Api<Lease> = Api::namespaced(k8s.client(), NS);
    let lease = |holder: &str| {
        json!({"apiVersion": "coordination.k8s.io/v1", "kind": "Lease", "metadata": {"name": "gatehouse-operator"},
            "spec": {"holderIdentity": holder, "leaseDurationSeconds": 15}})
    };
    leases
        .patch(
            "gatehouse-operator",
            &apply("candidate-a"),
            &Patch::Apply(lease("a")),
        )
        .await
        .unwrap();
    let err = api_status(
        leases
            .patch(
                "gatehouse-operator",
                &apply("candidate-b"),
                &Patch::Apply(lease("b")),
            )
            .await
            .unwrap_err(),
    );
    assert_eq!(err.code, 409);
    assert!(
        err.message.contains(".spec.holderIdentity"),
        "{}",
        err.message
    );
    let held = leases.get("gatehouse-operator").await.unwrap();
    assert_eq!(held.spec.unwrap().holder_identity.as_deref(), Some("a"));
}

async fn candidate(k8s: &KubeEmulator, identity: &str) -> LeaseManager {
    LeaseManagerBuilder::new(k8s.client(), "gatehouse-operator")
        .with_namespace(NS)
        .with_identity(identity)
        .with_duration(3)
        .with_grace(1)
        .build()
        .await
        .unwrap()
}

#[tokio::test]
async fn kube_lease_manager_elects_one_leader_and_the_standby_takes_over_when_it_leaves() {
    let k8s = KubeEmulator::start().await.unwrap();
    let (a, b) = (candidate(&k8s, "a").await, candidate(&k8s, "b").await);
    let (mut a_leads, a_task) = a.watch().await;
    let (mut b_leads, b_task) = b.watch().await;
    // Within a lease duration exactly one of them leads, and stays the only one.
    tokio::time::timeout(Duration::from_secs(10), async {
        while !(*a_leads.borrow_and_update() || *b_leads.borrow_and_update()) {
            tokio::select! {
                _ = a_leads.changed() => {}
                _ = b_leads.changed() => {}
            }
        }
    })
    .await
    .expect("a leader within 10 s");
    tokio::time::sleep(Duration::from_secs(4)).await;
    let (a_now, b_now) = (*a_leads.borrow(), *b_leads.borrow());
    assert!(a_now ^ b_now, "exactly one leader: a={a_now} b={b_now}");
    // (Whether the standby's first apply meets a 409 depends on timing here; the 409 itself is
    // what `a_second_lease_candidate_applying_without_force_gets_409` asserts.)

    // The leader crashes without releasing: the standby takes over once the lease expires.
    let (mut standby, leader_task, leader_rx) = if a_now {
        (b_leads, a_task, a_leads)
    } else {
        (a_leads, b_task, b_leads)
    };
    leader_task.abort();
    drop(leader_rx);
    tokio::time::timeout(Duration::from_secs(15), async {
        while !*standby.borrow_and_update() {
            standby.changed().await.unwrap();
        }
    })
    .await
    .expect("the standby leads once the leader's lease expires");
}

fn operator_job(container_extras: &Value) -> Value {
    let mut container = json!({"name": "scan", "image": "kics@sha256:1", "args": ["scan", "-p", "/w"],
        "env": [{"name": "A", "value": "1"}],
        "resources": {"limits": {"cpu": "1", "memory": "1Gi"}},
        "volumeMounts": [{"name": "w", "mountPath": "/w"}]});
    for (k, v) in container_extras.as_object().unwrap() {
        container[k] = v.clone();
    }
    json!({"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": "scan", "labels": {"app": "gatehouse"}},
        "spec": {"backoffLimit": 0, "ttlSecondsAfterFinished": 600, "activeDeadlineSeconds": 900,
            "template": {"metadata": {"labels": {"app": "gatehouse"}},
                "spec": {"restartPolicy": "Never", "automountServiceAccountToken": false,
                    "containers": [container],
                    "volumes": [{"name": "w", "emptyDir": {}}]}}}})
}

#[tokio::test]
async fn applying_the_same_canonical_job_again_writes_nothing_despite_the_server_defaults() {
    let k8s = KubeEmulator::start().await.unwrap();
    let jobs: Api<Job> = Api::namespaced(k8s.client(), NS);
    let desired = operator_job(&json!({}));
    let operator = apply("gatehouse-operator");
    let first = jobs
        .patch("scan", &operator, &Patch::Apply(&desired))
        .await
        .unwrap();
    k8s.advance_clock(Duration::from_secs(5));
    let again = jobs
        .patch("scan", &operator, &Patch::Apply(&desired))
        .await
        .unwrap();
    assert_eq!(
        again.metadata.resource_version, first.metadata.resource_version,
        "a no-op apply writes nothing, however much later"
    );
    assert_eq!(
        serde_json::to_value(&again).unwrap(),
        serde_json::to_value(&first).unwrap()
    );
    // The operator owns what it sent, not what the server filled in.
    let object = serde_json::to_value(&again).unwrap();
    let owned = &fields_of(&object, "gatehouse-operator")["f:spec"];
    assert!(owned.get("f:backoffLimit").is_some());
    assert!(
        owned.get("f:selector").is_none() && owned.get("f:completions").is_none(),
        "{owned}"
    );
}

#[tokio::test]
async fn a_job_with_values_the_server_stores_differently_is_written_again_on_every_apply() {
    let k8s = KubeEmulator::start().await.unwrap();
    let jobs: Api<Job> = Api::namespaced(k8s.client(), NS);
    // Zero values of omitempty fields and non-canonical quantities: stored otherwise than sent.
    let desired = operator_job(&json!({
        "env": [{"name": "A", "value": "1"}, {"name": "EMPTY", "value": ""}],
        "resources": {"limits": {"cpu": "1000m", "memory": "1024Mi"}},
        "volumeMounts": [{"name": "w", "mountPath": "/w", "readOnly": false}],
    }));
    let operator = apply("gatehouse-operator");
    let first = jobs
        .patch("scan", &operator, &Patch::Apply(&desired))
        .await
        .unwrap();
    let container =
        &serde_json::to_value(&first).unwrap()["spec"]["template"]["spec"]["containers"][0];
    assert_eq!(container["env"][1], json!({"name": "EMPTY"}));
    assert_eq!(
        container["resources"]["limits"],
        json!({"cpu": "1", "memory": "1Gi"})
    );
    assert!(container["volumeMounts"][0].get("readOnly").is_none());
    // Each apply is a change to structured-merge-diff (live and merged differ), so the applier's
    // time moves and the object is written again once a second has passed: a reconcile loop
    // sending such values writes on every pass.
    k8s.advance_clock(Duration::from_secs(5));
    let again = jobs
        .patch("scan", &operator, &Patch::Apply(&desired))
        .await
        .unwrap();
    assert_ne!(
        again.metadata.resource_version,
        first.metadata.resource_version
    );
    assert_eq!(
        serde_json::to_value(&again.spec).unwrap(),
        serde_json::to_value(&first.spec).unwrap(),
        "only the managed fields' time changed"
    );
}
