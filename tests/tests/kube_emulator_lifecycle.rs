//! Jobs, deletion and the in-cluster controllers in the Kubernetes API emulator, as a real
//! cluster runs them: Job rules and server defaults, the Job controller's status writes and
//! deadlines, the TTL-after-finished controller, deletion finalizers and the garbage collector.

// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::Duration;

use futures::{StreamExt, TryStreamExt};
use gatehouse_crds::ScanRequest;
use gatehouse_tests::kube_support::{api_status, job_body, sample};
use gatehouse_tests::{Controller, JobState, KubeEmulator};
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{ConfigMap, Pod};
use kube::Resource;
use kube::api::{
    Api, DeleteParams, ListParams, Patch, PatchParams, PostParams, WatchEvent, WatchParams,
};
use serde_json::{Value, json};

const NS: &str = "gatehouse-scans";

fn fields(status: &kube::core::Status) -> Vec<String> {
    status
        .details
        .as_ref()
        .map(|d| d.causes.iter().map(|c| c.field.clone()).collect())
        .unwrap_or_default()
}

fn job(name: &str) -> Job {
    serde_json::from_value(job_body(name)).unwrap()
}

async fn create_job(api: &Api<Job>, body: Value) -> Result<Job, kube::core::Status> {
    api.create(
        &PostParams::default(),
        &serde_json::from_value(body).unwrap(),
    )
    .await
    .map_err(api_status)
}

fn sample_request() -> ScanRequest {
    sample("scanrequest.yaml")
}

/// A pod owned as the Job controller owns its pods (controller, blocking owner deletion).
fn pod_owned_by(name: &str, owner: &impl Resource<DynamicType = ()>) -> Pod {
    let mut reference = owner.controller_owner_ref(&()).unwrap();
    reference.block_owner_deletion = Some(true);
    serde_json::from_value(json!({"metadata": {"name": name,
        "ownerReferences": [reference]},
        "spec": {"containers": [{"name": "c", "image": "busybox"}]}}))
    .unwrap()
}

#[tokio::test]
async fn job_names_longer_than_63_characters_are_refused_because_they_become_pod_labels() {
    let k8s = KubeEmulator::start().await.unwrap();
    let jobs: Api<Job> = Api::namespaced(k8s.client(), NS);
    let err = create_job(&jobs, job_body(&"j".repeat(64)))
        .await
        .unwrap_err();
    assert_eq!(err.code, 422);
    assert!(
        fields(&err).contains(&"spec.template.labels".to_owned()),
        "{:?}",
        fields(&err)
    );
    assert!(
        err.message.contains("must be no more than 63 characters"),
        "{}",
        err.message
    );
    create_job(&jobs, job_body(&"j".repeat(63))).await.unwrap();
}

#[tokio::test]
async fn jobs_come_back_with_the_defaults_a_real_api_server_sets() {
    let k8s = KubeEmulator::start().await.unwrap();
    let jobs: Api<Job> = Api::namespaced(k8s.client(), NS);
    let created =
        serde_json::to_value(create_job(&jobs, job_body("defaults")).await.unwrap()).unwrap();
    let uid = created["metadata"]["uid"].as_str().unwrap();
    let spec = &created["spec"];
    assert_eq!(
        spec["selector"],
        json!({"matchLabels": {"batch.kubernetes.io/controller-uid": uid}})
    );
    let labels = json!({"batch.kubernetes.io/controller-uid": uid, "batch.kubernetes.io/job-name": "defaults",
        "controller-uid": uid, "job-name": "defaults"});
    assert_eq!(spec["template"]["metadata"]["labels"], labels);
    // The template had no labels when the Job's were defaulted: none on create, its template's
    // from the next write on (here the Job controller's status write).
    assert!(created["metadata"].get("labels").is_none());
    k8s.set_job_status(NS, "defaults", &JobState::Active)
        .unwrap();
    assert_eq!(
        serde_json::to_value(jobs.get("defaults").await.unwrap()).unwrap()["metadata"]["labels"],
        labels
    );
    // A Job whose template has labels gets them, and the generated ones, at once.
    let mut templated = job_body("templated");
    templated["spec"]["template"]["metadata"] = json!({"labels": {"app": "scan"}});
    let made = serde_json::to_value(create_job(&jobs, templated).await.unwrap()).unwrap();
    assert_eq!(made["metadata"]["labels"]["app"], "scan");
    assert_eq!(
        made["metadata"]["labels"]["batch.kubernetes.io/job-name"],
        "templated"
    );
    for (field, value) in [
        ("backoffLimit", json!(6)),
        ("completions", json!(1)),
        ("parallelism", json!(1)),
        ("completionMode", json!("NonIndexed")),
        ("suspend", json!(false)),
        ("podReplacementPolicy", json!("TerminatingOrFailed")),
    ] {
        assert_eq!(spec[field], value, "{field}");
    }
    let pod = &spec["template"]["spec"];
    assert_eq!(pod["dnsPolicy"], "ClusterFirst");
    assert_eq!(pod["schedulerName"], "default-scheduler");
    assert_eq!(pod["terminationGracePeriodSeconds"], 30);
    assert_eq!(pod["securityContext"], json!({}));
    let container = &pod["containers"][0];
    assert_eq!(
        container["imagePullPolicy"], "IfNotPresent",
        "pinned by digest"
    );
    assert_eq!(container["terminationMessagePath"], "/dev/termination-log");
    assert_eq!(container["terminationMessagePolicy"], "File");
    assert_eq!(container["resources"], json!({}));
    assert_eq!(created["status"], json!({}));

    // Labels given on the Job are kept as they are.
    let mut labelled = job_body("labelled");
    labelled["metadata"]["labels"] = json!({"app": "gatehouse"});
    let created = create_job(&jobs, labelled).await.unwrap();
    assert_eq!(created.metadata.labels.unwrap().len(), 1);
}

#[tokio::test]
async fn a_selector_set_by_hand_needs_manual_selector() {
    let k8s = KubeEmulator::start().await.unwrap();
    let jobs: Api<Job> = Api::namespaced(k8s.client(), NS);
    let mut body = job_body("manual");
    body["spec"]["selector"] = json!({"matchLabels": {"app": "scan"}});
    body["spec"]["template"]["metadata"] = json!({"labels": {"app": "scan"}});
    let err = create_job(&jobs, body.clone()).await.unwrap_err();
    assert!(
        err.message.contains("`selector` not auto-generated"),
        "{}",
        err.message
    );
    body["spec"]["manualSelector"] = json!(true);
    create_job(&jobs, body).await.unwrap();
}

#[tokio::test]
async fn a_job_needs_containers_a_never_or_on_failure_restart_policy_and_nonnegative_limits() {
    let k8s = KubeEmulator::start().await.unwrap();
    let jobs: Api<Job> = Api::namespaced(k8s.client(), NS);
    let mut cases: Vec<(Value, &str)> = Vec::new();
    let mut no_containers = job_body("bad");
    no_containers["spec"]["template"]["spec"]["containers"] = json!([]);
    cases.push((no_containers, "spec.template.spec.containers"));
    let mut no_policy = job_body("bad");
    no_policy["spec"]["template"]["spec"]
        .as_object_mut()
        .unwrap()
        .remove("restartPolicy");
    cases.push((no_policy, "spec.template.spec.restartPolicy"));
    let mut always = job_body("bad");
    always["spec"]["template"]["spec"]["restartPolicy"] = json!("Always");
    cases.push((always, "spec.template.spec.restartPolicy"));
    let mut negative = job_body("bad");
    negative["spec"]["activeDeadlineSeconds"] = json!(-1);
    cases.push((negative, "spec.activeDeadlineSeconds"));
    let mut failure_policy = job_body("bad");
    failure_policy["spec"]["template"]["spec"]["restartPolicy"] = json!("OnFailure");
    failure_policy["spec"]["podFailurePolicy"] = json!({"rules": [{"action": "FailJob",
        "onExitCodes": {"operator": "In", "values": [42]}}]});
    cases.push((failure_policy, "spec.template.spec.restartPolicy"));
    let mut mount = job_body("bad");
    mount["spec"]["template"]["spec"]["containers"][0]["volumeMounts"] =
        json!([{"name": "missing", "mountPath": "/w"}]);
    cases.push((
        mount,
        "spec.template.spec.containers[0].volumeMounts[0].name",
    ));
    let mut resources = job_body("bad");
    resources["spec"]["template"]["spec"]["containers"][0]["resources"] =
        json!({"requests": {"cpu": "2"}, "limits": {"cpu": "1"}});
    cases.push((
        resources,
        "spec.template.spec.containers[0].resources.requests",
    ));
    for (body, field) in cases {
        let err = create_job(&jobs, body).await.unwrap_err();
        assert_eq!(err.code, 422, "{field}: {}", err.message);
        assert!(
            fields(&err).contains(&field.to_owned()),
            "{field}: {:?}",
            fields(&err)
        );
    }
    assert!(k8s.names::<Job>(NS).is_empty());
}

#[tokio::test]
async fn a_jobs_template_and_selector_and_policies_are_immutable_after_creation() {
    let k8s = KubeEmulator::start().await.unwrap();
    let jobs: Api<Job> = Api::namespaced(k8s.client(), NS);
    create_job(&jobs, job_body("fixed")).await.unwrap();
    for (patch, field) in [
        (
            json!({"spec": {"template": {"spec": {"containers": [{"name": "scan", "image": "other"}]}}}}),
            "spec.template",
        ),
        (
            json!({"spec": {"template": {"metadata": {"labels": {"extra": "x"}}}}}),
            "spec.template",
        ),
        (json!({"spec": {"completions": 2}}), "spec.completions"),
        (
            json!({"spec": {"completionMode": "Indexed"}}),
            "spec.completionMode",
        ),
        (
            json!({"spec": {"podFailurePolicy": {"rules": [{"action": "FailJob", "onExitCodes": {"operator": "In", "values": [1]}}]}}}),
            "spec.podFailurePolicy",
        ),
        (
            json!({"spec": {"managedBy": "example.com/other"}}),
            "spec.managedBy",
        ),
        (
            json!({"spec": {"selector": {"matchLabels": {"other": "x"}}}}),
            "spec.selector",
        ),
        (
            json!({"spec": {"backoffLimitPerIndex": 1}}),
            "spec.backoffLimitPerIndex",
        ),
        (
            json!({"spec": {"successPolicy": {"rules": [{"succeededCount": 1}]}}}),
            "spec.successPolicy",
        ),
    ] {
        let err = api_status(
            jobs.patch("fixed", &PatchParams::default(), &Patch::Merge(&patch))
                .await
                .unwrap_err(),
        );
        assert_eq!(err.code, 422, "{patch}");
        assert!(
            fields(&err).contains(&field.to_owned()),
            "{patch}: {:?}",
            fields(&err)
        );
        assert!(
            err.message.contains("field is immutable"),
            "{}",
            err.message
        );
    }
    // Not everything is fixed: labels, the deadline and the TTL may change.
    jobs.patch("fixed", &PatchParams::default(), &Patch::Merge(json!({
        "metadata": {"labels": {"x": "y"}}, "spec": {"activeDeadlineSeconds": 60, "ttlSecondsAfterFinished": 5}})))
        .await
        .unwrap();

    // A suspended Job that never started may change its template's scheduling directives.
    let mut suspended = job_body("suspended");
    suspended["spec"]["suspend"] = json!(true);
    create_job(&jobs, suspended).await.unwrap();
    jobs.patch("suspended", &PatchParams::default(), &Patch::Merge(json!({
        "spec": {"template": {"metadata": {"labels": {"extra": "x"}}, "spec": {"nodeSelector": {"pool": "scan"}}}}})))
        .await
        .unwrap();
}

#[tokio::test]
async fn the_job_controller_writes_failure_target_before_failed_and_success_criteria_before_complete()
 {
    let k8s = KubeEmulator::start().await.unwrap();
    let jobs: Api<Job> = Api::namespaced(k8s.client(), NS);
    for name in ["fails", "succeeds"] {
        create_job(&jobs, job_body(name)).await.unwrap();
    }
    let rv = jobs
        .list(&ListParams::default())
        .await
        .unwrap()
        .metadata
        .resource_version
        .unwrap();
    let mut stream = jobs
        .watch(&WatchParams::default().timeout(5), &rv)
        .await
        .unwrap()
        .boxed();
    k8s.set_job_status(NS, "fails", &JobState::Active).unwrap();
    k8s.set_job_status(
        NS,
        "fails",
        &JobState::Failed {
            reason: "BackoffLimitExceeded".into(),
            message: "Job has reached the specified backoff limit".into(),
        },
    )
    .unwrap();
    k8s.set_job_status(NS, "succeeds", &JobState::Succeeded)
        .unwrap();
    let mut seen = Vec::new();
    while seen.len() < 5 {
        if let WatchEvent::Modified(job) = stream.try_next().await.unwrap().unwrap() {
            let conditions: Vec<String> = job
                .status
                .unwrap()
                .conditions
                .unwrap_or_default()
                .iter()
                .map(|c| c.type_.clone())
                .collect();
            seen.push((job.metadata.name.unwrap(), conditions));
        }
    }
    let s = |n: &str, c: &[&str]| {
        (
            n.to_owned(),
            c.iter().map(|x| (*x).to_owned()).collect::<Vec<_>>(),
        )
    };
    assert_eq!(
        seen,
        [
            s("fails", &[]),
            s("fails", &["FailureTarget"]),
            s("fails", &["FailureTarget", "Failed"]),
            s("succeeds", &["SuccessCriteriaMet"]),
            s("succeeds", &["SuccessCriteriaMet", "Complete"]),
        ]
    );
    let done = jobs.get("succeeds").await.unwrap().status.unwrap();
    assert!(done.completion_time.is_some() && done.start_time.is_some());

    // The API refuses what no Job controller may write: Complete without SuccessCriteriaMet.
    create_job(&jobs, job_body("invalid")).await.unwrap();
    let err = k8s
        .set_status::<Job>(
            NS,
            "invalid",
            json!({"startTime": k8s.now(), "completionTime": k8s.now(),
            "conditions": [{"type": "Complete", "status": "True"}]}),
        )
        .unwrap_err();
    assert!(
        err.contains("without the SuccessCriteriaMet=true condition"),
        "{err}"
    );
}

#[tokio::test]
async fn a_started_job_past_its_active_deadline_fails_with_deadline_exceeded() {
    let k8s = KubeEmulator::start().await.unwrap();
    let jobs: Api<Job> = Api::namespaced(k8s.client(), NS);
    let mut body = job_body("slow");
    body["spec"]["activeDeadlineSeconds"] = json!(600);
    create_job(&jobs, body).await.unwrap();
    k8s.set_job_status(NS, "slow", &JobState::Active).unwrap();
    k8s.advance_clock(Duration::from_secs(599));
    assert!(
        jobs.get("slow")
            .await
            .unwrap()
            .status
            .unwrap()
            .conditions
            .is_none()
    );
    k8s.advance_clock(Duration::from_secs(2));
    let status = jobs.get("slow").await.unwrap().status.unwrap();
    let conditions = status.conditions.unwrap();
    let types: Vec<&str> = conditions.iter().map(|c| c.type_.as_str()).collect();
    assert_eq!(types, ["FailureTarget", "Failed"]);
    assert!(
        conditions
            .iter()
            .all(|c| c.reason.as_deref() == Some("DeadlineExceeded"))
    );
    assert_eq!(status.active, None, "0 is not stored (omitempty)");
    assert_eq!(status.ready, Some(0), "ready is a pointer: its 0 is stored");
}

#[tokio::test]
async fn the_ttl_controller_deletes_a_finished_job_once_its_ttl_has_passed() {
    let k8s = KubeEmulator::start().await.unwrap();
    let jobs: Api<Job> = Api::namespaced(k8s.client(), NS);
    let mut body = job_body("short-lived");
    body["spec"]["ttlSecondsAfterFinished"] = json!(300);
    create_job(&jobs, body).await.unwrap();
    create_job(&jobs, job_body("kept")).await.unwrap();
    k8s.advance_clock(Duration::from_secs(3600));
    assert_eq!(
        k8s.names::<Job>(NS).len(),
        2,
        "an unfinished Job is never collected"
    );
    k8s.set_job_status(NS, "short-lived", &JobState::Succeeded)
        .unwrap();
    k8s.set_job_status(NS, "kept", &JobState::Succeeded)
        .unwrap();
    k8s.advance_clock(Duration::from_secs(299));
    assert_eq!(k8s.names::<Job>(NS).len(), 2);
    {
        let _held = k8s.hold(Controller::TtlAfterFinished);
        k8s.advance_clock(Duration::from_secs(2));
        assert_eq!(k8s.names::<Job>(NS).len(), 2, "held");
    }
    assert_eq!(k8s.names::<Job>(NS), ["kept"], "released, it catches up");
}

#[tokio::test]
async fn delete_adds_the_propagation_finalizer_and_the_object_stays_until_garbage_collection() {
    let k8s = KubeEmulator::start().await.unwrap();
    let jobs: Api<Job> = Api::namespaced(k8s.client(), NS);
    let created = create_job(&jobs, job_body("orphaning")).await.unwrap();
    let held = k8s.hold(Controller::GarbageCollector);
    // Jobs default to Orphan: the finalizer is added though the Job has no dependents.
    let answer = jobs
        .delete("orphaning", &DeleteParams::default())
        .await
        .unwrap();
    let marked = answer
        .left()
        .expect("the answer is the object marked for deletion");
    assert_eq!(marked.metadata.finalizers.unwrap(), ["orphan"]);
    assert!(marked.metadata.deletion_timestamp.is_some());
    assert_eq!(
        marked.metadata.generation,
        Some(created.metadata.generation.unwrap() + 1)
    );
    assert!(
        jobs.get("orphaning").await.is_ok(),
        "visible until the collector runs"
    );
    k8s.run_controller(Controller::GarbageCollector);
    assert_eq!(
        api_status(jobs.get("orphaning").await.unwrap_err()).code,
        404
    );

    create_job(&jobs, job_body("foreground")).await.unwrap();
    jobs.delete("foreground", &DeleteParams::foreground())
        .await
        .unwrap();
    assert_eq!(
        jobs.get("foreground")
            .await
            .unwrap()
            .metadata
            .finalizers
            .unwrap(),
        ["foregroundDeletion"]
    );
    held.release();
    assert!(k8s.names::<Job>(NS).is_empty());
}

#[tokio::test]
async fn an_object_without_finalizers_goes_at_once_and_the_answer_is_a_status() {
    let k8s = KubeEmulator::start().await.unwrap();
    let jobs: Api<Job> = Api::namespaced(k8s.client(), NS);
    create_job(&jobs, job_body("gone")).await.unwrap();
    let answer = jobs
        .delete("gone", &DeleteParams::background())
        .await
        .unwrap();
    let status = answer.right().expect("a Status for a Job deleted at once");
    assert_eq!(status.details.unwrap().name, "gone");
    // Pods are one of the types whose registry answers with the object.
    let pods: Api<Pod> = Api::namespaced(k8s.client(), NS);
    pods.create(
        &PostParams::default(),
        &serde_json::from_value(json!({"metadata": {"name": "p"},
        "spec": {"containers": [{"name": "c", "image": "busybox"}]}}))
        .unwrap(),
    )
    .await
    .unwrap();
    assert!(
        pods.delete("p", &DeleteParams::default())
            .await
            .unwrap()
            .is_left()
    );
}

#[tokio::test]
async fn dependents_of_an_owner_in_another_namespace_are_collected_as_orphans() {
    let k8s = KubeEmulator::start().await.unwrap();
    let requests: Api<ScanRequest> = Api::namespaced(k8s.client(), NS);
    let owner = requests
        .create(&PostParams::default(), &sample_request())
        .await
        .unwrap();
    let _held = k8s.hold(Controller::GarbageCollector);
    // Same name, kind and uid, but in another namespace: the real collector finds no owner.
    let elsewhere: Api<ConfigMap> = Api::namespaced(k8s.client(), "elsewhere");
    let mut cm: ConfigMap = serde_json::from_value(json!({"metadata": {"name": "cross"}})).unwrap();
    cm.metadata.owner_references = Some(vec![owner.controller_owner_ref(&()).unwrap()]);
    elsewhere.create(&PostParams::default(), &cm).await.unwrap();
    let local: Api<ConfigMap> = Api::namespaced(k8s.client(), NS);
    cm.metadata.name = Some("local".into());
    local.create(&PostParams::default(), &cm).await.unwrap();
    k8s.run_controller(Controller::GarbageCollector);
    assert!(
        k8s.names::<ConfigMap>("elsewhere").is_empty(),
        "cross-namespace owner counts as absent"
    );
    assert_eq!(k8s.names::<ConfigMap>(NS), ["local"]);
}

#[tokio::test]
async fn owners_are_matched_by_uid_and_a_dependent_keeping_one_live_owner_drops_the_others() {
    let k8s = KubeEmulator::start().await.unwrap();
    let configmaps: Api<ConfigMap> = Api::namespaced(k8s.client(), NS);
    let owner = configmaps
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({"metadata": {"name": "owner"}})).unwrap(),
        )
        .await
        .unwrap();
    let reference = owner.controller_owner_ref(&()).unwrap();
    let mut stale = reference.clone();
    stale.uid = "00000000-0000-4000-8000-ffffffffffff".into();
    stale.name = "owner".into();
    stale.controller = Some(false);
    let mut cm: ConfigMap =
        serde_json::from_value(json!({"metadata": {"name": "two-owners"}})).unwrap();
    cm.metadata.owner_references = Some(vec![reference, stale]);
    configmaps
        .create(&PostParams::default(), &cm)
        .await
        .unwrap();
    let kept = configmaps.get("two-owners").await.unwrap();
    let uids: Vec<String> = kept
        .metadata
        .owner_references
        .unwrap()
        .into_iter()
        .map(|r| r.uid)
        .collect();
    assert_eq!(
        uids,
        [owner.metadata.uid.clone().unwrap()],
        "the reference with the wrong uid is dropped"
    );
}

#[tokio::test]
async fn foreground_deletion_waits_for_dependents_that_block_it() {
    let k8s = KubeEmulator::start().await.unwrap();
    let jobs: Api<Job> = Api::namespaced(k8s.client(), NS);
    let pods: Api<Pod> = Api::namespaced(k8s.client(), NS);
    let owner = create_job(&jobs, job_body("owner")).await.unwrap();
    let mut pod = pod_owned_by("blocking", &owner);
    pod.metadata.finalizers = Some(vec!["example.com/slow".into()]);
    pods.create(&PostParams::default(), &pod).await.unwrap();
    // A dependent that does not block (kube's controller_owner_ref leaves blockOwnerDeletion
    // unset) is deleted too, but not waited for.
    let mut loose = pod_owned_by("loose", &owner);
    loose.metadata.finalizers = Some(vec!["example.com/slow".into()]);
    loose.metadata.owner_references.as_mut().unwrap()[0].block_owner_deletion = None;
    pods.create(&PostParams::default(), &loose).await.unwrap();
    jobs.delete("owner", &DeleteParams::foreground())
        .await
        .unwrap();
    assert!(
        pods.get("blocking")
            .await
            .unwrap()
            .metadata
            .deletion_timestamp
            .is_some()
    );
    assert!(
        pods.get("loose")
            .await
            .unwrap()
            .metadata
            .deletion_timestamp
            .is_some()
    );
    assert!(
        jobs.get("owner").await.is_ok(),
        "waits for its blocking dependent"
    );
    pods.patch(
        "blocking",
        &PatchParams::default(),
        &Patch::Merge(json!({"metadata": {"finalizers": null}})),
    )
    .await
    .unwrap();
    assert_eq!(api_status(jobs.get("owner").await.unwrap_err()).code, 404);
}

#[tokio::test]
async fn a_deleted_owner_with_its_own_finalizer_keeps_its_dependents_until_it_is_gone() {
    let k8s = KubeEmulator::start().await.unwrap();
    let requests: Api<ScanRequest> = Api::namespaced(k8s.client(), NS);
    let mut sr = sample_request();
    sr.metadata.finalizers = Some(vec!["gatehouse.dev/cleanup".into()]);
    let owner = requests.create(&PostParams::default(), &sr).await.unwrap();
    let name = owner.metadata.name.clone().unwrap();
    let jobs: Api<Job> = Api::namespaced(k8s.client(), NS);
    let mut dependent = job("owned");
    dependent.metadata.owner_references = Some(vec![owner.controller_owner_ref(&()).unwrap()]);
    jobs.create(&PostParams::default(), &dependent)
        .await
        .unwrap();
    requests
        .delete(&name, &DeleteParams::background())
        .await
        .unwrap();
    assert_eq!(
        k8s.names::<Job>(NS),
        ["owned"],
        "the owner still exists while its finalizer runs"
    );
    requests
        .patch(
            &name,
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"finalizers": null}})),
        )
        .await
        .unwrap();
    assert!(k8s.names::<Job>(NS).is_empty());
}

#[tokio::test]
async fn a_started_job_under_a_foreground_owner_is_deleted_in_the_foreground_for_its_pods() {
    let k8s = KubeEmulator::start().await.unwrap();
    let requests: Api<ScanRequest> = Api::namespaced(k8s.client(), NS);
    let owner = requests
        .create(&PostParams::default(), &sample_request())
        .await
        .unwrap();
    let jobs: Api<Job> = Api::namespaced(k8s.client(), NS);
    let mut dependent = job("started");
    dependent.metadata.owner_references = Some(vec![owner.controller_owner_ref(&()).unwrap()]);
    jobs.create(&PostParams::default(), &dependent)
        .await
        .unwrap();
    // On a cluster a started Job owns Pods: the collector deletes it in the foreground, so it
    // is seen marked with `foregroundDeletion` before it goes.
    k8s.set_job_status(NS, "started", &JobState::Active)
        .unwrap();
    let rv = jobs
        .list(&ListParams::default())
        .await
        .unwrap()
        .metadata
        .resource_version
        .unwrap();
    let mut stream = jobs
        .watch(&WatchParams::default().timeout(5), &rv)
        .await
        .unwrap()
        .boxed();
    requests
        .delete(
            owner.metadata.name.as_deref().unwrap(),
            &DeleteParams::foreground(),
        )
        .await
        .unwrap();
    let mut seen = Vec::new();
    while let Some(event) = stream.try_next().await.unwrap() {
        match event {
            WatchEvent::Modified(j) => seen.push(format!(
                "MODIFIED {:?}",
                j.metadata.finalizers.unwrap_or_default()
            )),
            WatchEvent::Deleted(_) => {
                seen.push("DELETED".to_owned());
                break;
            }
            _ => {}
        }
    }
    assert_eq!(seen, ["MODIFIED [\"foregroundDeletion\"]", "DELETED"]);
}
