//! A real kube-runtime `Controller` for a toy resource that owns a Job runs against the emulator:
//! it reconciles on create, again when the owned Job's status changes, and its finalizer runs on
//! delete before the object disappears.

// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use gatehouse_tests::kube_emulator::ResourceType;
use gatehouse_tests::{JobState, KubeEmulator};
use k8s_openapi::api::batch::v1::Job;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use kube::runtime::controller::Action;
use kube::runtime::finalizer::{Event as Finalizer, finalizer};
use kube::runtime::{Controller, watcher};
use kube::{CustomResource, CustomResourceExt, Resource, ResourceExt};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::json;

const NS: &str = "toys";
const FINALIZER: &str = "test.gatehouse.dev/cleanup";

/// A toy resource: one Job per Widget.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, JsonSchema)]
#[kube(
    group = "test.gatehouse.dev",
    version = "v1",
    kind = "Widget",
    namespaced,
    status = "WidgetStatus"
)]
pub struct WidgetSpec {
    /// Image of the widget's Job.
    pub image: String,
}

/// Status the toy reconciler writes.
#[derive(Serialize, Deserialize, Clone, Debug, Default, JsonSchema)]
pub struct WidgetStatus {
    /// Running, Done or Failed.
    pub phase: String,
}

#[derive(Default)]
struct Seen {
    reconciles: Vec<String>,
    cleanups: Vec<String>,
}

struct Ctx {
    client: kube::Client,
    seen: Mutex<Seen>,
}

#[derive(Debug, thiserror::Error)]
enum ToyError {
    #[error("kube: {0}")]
    Kube(#[from] kube::Error),
    #[error("finalizer: {0}")]
    Finalizer(#[from] Box<kube::runtime::finalizer::Error<kube::Error>>),
}

async fn reconcile(widget: Arc<Widget>, ctx: Arc<Ctx>) -> Result<Action, ToyError> {
    let widgets: Api<Widget> = Api::namespaced(ctx.client.clone(), NS);
    finalizer(&widgets, FINALIZER, widget, |event| async {
        match event {
            Finalizer::Apply(widget) => apply(&widget, &ctx).await,
            Finalizer::Cleanup(widget) => {
                // The object still exists, marked for deletion, while cleanup runs.
                let current = widgets.get(&widget.name_any()).await?;
                assert!(current.metadata.deletion_timestamp.is_some());
                ctx.seen.lock().unwrap().cleanups.push(widget.name_any());
                Ok(Action::await_change())
            }
        }
    })
    .await
    .map_err(|e| ToyError::Finalizer(Box::new(e)))
}

async fn apply(widget: &Widget, ctx: &Ctx) -> Result<Action, kube::Error> {
    let jobs: Api<Job> = Api::namespaced(ctx.client.clone(), NS);
    let name = format!("widget-{}", widget.name_any());
    let job: Job = serde_json::from_value(json!({
        "metadata": {"name": name, "ownerReferences": [widget.controller_owner_ref(&()).unwrap()]},
        "spec": {"template": {"spec": {"restartPolicy": "Never",
            "containers": [{"name": "main", "image": widget.spec.image}]}}},
    }))
    .unwrap();
    let job = match jobs.create(&PostParams::default(), &job).await {
        Ok(job) => job,
        Err(kube::Error::Api(e)) if e.code == 409 => jobs.get(&name).await?,
        Err(e) => return Err(e),
    };
    let status = job.status.unwrap_or_default();
    let phase = if status.succeeded.unwrap_or(0) > 0 {
        "Done"
    } else if status.failed.unwrap_or(0) > 0 {
        "Failed"
    } else {
        "Running"
    };
    ctx.seen.lock().unwrap().reconciles.push(phase.to_owned());
    let widgets: Api<Widget> = Api::namespaced(ctx.client.clone(), NS);
    widgets
        .patch_status(
            &widget.name_any(),
            &PatchParams::apply("toy-controller").force(),
            &Patch::Apply(json!({"apiVersion": "test.gatehouse.dev/v1", "kind": "Widget", "status": {"phase": phase}})),
        )
        .await?;
    Ok(Action::await_change())
}

fn error_policy(_widget: Arc<Widget>, _error: &ToyError, _ctx: Arc<Ctx>) -> Action {
    Action::requeue(Duration::from_millis(100))
}

/// Polls `check` until it is true; fails the test after a generous bound (not a timing claim).
async fn eventually(what: &str, mut check: impl FnMut() -> bool) {
    for _ in 0..200 {
        if check() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("timed out waiting for: {what}");
}

#[tokio::test]
async fn controller_reconciles_on_create_on_owned_job_change_and_finalizes_on_delete() {
    let k8s = KubeEmulator::builder()
        .with_type(ResourceType::from_crd(&Widget::crd()))
        .start()
        .await
        .unwrap();
    let client = k8s.client();
    let ctx = Arc::new(Ctx {
        client: client.clone(),
        seen: Mutex::new(Seen::default()),
    });
    let widgets: Api<Widget> = Api::namespaced(client.clone(), NS);
    let jobs: Api<Job> = Api::namespaced(client.clone(), NS);
    let controller = Controller::new(widgets.clone(), watcher::Config::default())
        .owns(jobs.clone(), watcher::Config::default())
        .run(reconcile, error_policy, Arc::clone(&ctx))
        .for_each(|_| async {});
    let controller = tokio::spawn(controller);

    // Create: the finalizer is added, then the Job is created and status written.
    widgets
        .create(
            &PostParams::default(),
            &Widget::new(
                "w1",
                WidgetSpec {
                    image: "busybox".into(),
                },
            ),
        )
        .await
        .unwrap();
    eventually("the Job exists", || {
        k8s.get::<Job>(NS, "widget-w1").is_some()
    })
    .await;
    eventually("status Running", || {
        k8s.get::<Widget>(NS, "w1")
            .is_some_and(|w| w["status"]["phase"] == "Running")
    })
    .await;
    let widget = k8s.get::<Widget>(NS, "w1").unwrap();
    assert_eq!(widget["metadata"]["finalizers"], json!([FINALIZER]));
    let job = k8s.get::<Job>(NS, "widget-w1").unwrap();
    assert_eq!(job["metadata"]["ownerReferences"][0]["controller"], true);

    // The owned Job's status changes: the Controller maps it to its owner and reconciles again.
    let before = ctx.seen.lock().unwrap().reconciles.len();
    k8s.set_job_status(NS, "widget-w1", &JobState::Succeeded)
        .unwrap();
    eventually("status Done", || {
        k8s.get::<Widget>(NS, "w1")
            .is_some_and(|w| w["status"]["phase"] == "Done")
    })
    .await;
    assert!(ctx.seen.lock().unwrap().reconciles.len() > before);
    assert_eq!(
        ctx.seen
            .lock()
            .unwrap()
            .reconciles
            .last()
            .map(String::as_str),
        Some("Done")
    );

    // Delete: cleanup runs while the object is still there, then it disappears and the
    // garbage collector removes the owned Job.
    widgets
        .delete("w1", &DeleteParams::default())
        .await
        .unwrap();
    eventually("the Widget is gone", || {
        k8s.get::<Widget>(NS, "w1").is_none()
    })
    .await;
    assert_eq!(ctx.seen.lock().unwrap().cleanups, ["w1"]);
    assert!(k8s.get::<Job>(NS, "widget-w1").is_none());

    controller.abort();
}
