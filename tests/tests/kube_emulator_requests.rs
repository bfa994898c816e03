//! The emulator's request log: each request with the user of its bearer token and its RBAC
//! attributes, as a real API server's authorizer sees them (`docs/testing.md`, "Identities and
//! the request log").

// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use futures::StreamExt as _;
use gatehouse_tests::{KubeEmulator, RequestRecord};
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams, WatchParams};
use serde_json::json;

const USER: &str = "system:serviceaccount:gatehouse:gatehouse-operator";

/// (verb, resource/subresource, namespace, name) of the user's requests, in order.
fn log(k8s: &KubeEmulator, user: &str) -> Vec<(String, String, String, String)> {
    k8s.requests()
        .into_iter()
        .filter(|r| r.user.as_deref() == Some(user))
        .map(|r: RequestRecord| {
            let resource = if r.subresource.is_empty() {
                r.resource
            } else {
                format!("{}/{}", r.resource, r.subresource)
            };
            (
                r.verb,
                resource,
                r.namespace.unwrap_or_else(|| "*".to_owned()),
                r.name.unwrap_or_default(),
            )
        })
        .collect()
}

fn entry(verb: &str, resource: &str, ns: &str, name: &str) -> (String, String, String, String) {
    (verb.into(), resource.into(), ns.into(), name.into())
}

#[tokio::test]
async fn each_request_is_logged_with_its_user_and_the_verb_rbac_authorises() {
    let k8s = KubeEmulator::start().await.unwrap();
    let client = k8s.client_as(USER);
    let maps: Api<ConfigMap> = Api::namespaced(client.clone(), "ns");
    let map = |name: &str| -> ConfigMap {
        serde_json::from_value(json!({"metadata": {"name": name}, "data": {"a": "1"}})).unwrap()
    };
    maps.create(&PostParams::default(), &map("made"))
        .await
        .unwrap();
    maps.get("made").await.unwrap();
    maps.list(&ListParams::default()).await.unwrap();
    Api::<ConfigMap>::all(client.clone())
        .list(&ListParams::default())
        .await
        .unwrap();
    let mut watch = maps
        .watch(&WatchParams::default().fields("metadata.name=made"), "0")
        .await
        .unwrap()
        .boxed();
    drop(watch.next());
    maps.replace(
        "made",
        &PostParams::default(),
        &maps.get("made").await.unwrap(),
    )
    .await
    .unwrap();
    maps.patch(
        "made",
        &PatchParams::default(),
        &Patch::Merge(json!({"data": {"b": "2"}})),
    )
    .await
    .unwrap();
    // A server-side apply that creates its object: patch, and create too; one that changes it:
    // patch only.
    let apply = PatchParams::apply("test").force();
    let applied = json!({"apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": "applied"}, "data": {"a": "1"}});
    maps.patch("applied", &apply, &Patch::Apply(&applied))
        .await
        .unwrap();
    maps.patch("applied", &apply, &Patch::Apply(&applied))
        .await
        .unwrap();
    maps.delete("made", &DeleteParams::default()).await.unwrap();
    maps.delete_collection(&DeleteParams::default(), &ListParams::default())
        .await
        .unwrap();
    // Someone else's request, and one without a token.
    Api::<ConfigMap>::namespaced(k8s.client_as("someone"), "ns")
        .list(&ListParams::default())
        .await
        .unwrap();
    Api::<ConfigMap>::namespaced(k8s.client(), "ns")
        .list(&ListParams::default())
        .await
        .unwrap();

    assert_eq!(
        log(&k8s, USER),
        [
            entry("create", "configmaps", "ns", ""),
            entry("get", "configmaps", "ns", "made"),
            entry("list", "configmaps", "ns", ""),
            entry("list", "configmaps", "*", ""),
            entry("watch", "configmaps", "ns", "made"),
            entry("get", "configmaps", "ns", "made"),
            entry("update", "configmaps", "ns", "made"),
            entry("patch", "configmaps", "ns", "made"),
            entry("patch", "configmaps", "ns", "applied"),
            entry("create", "configmaps", "ns", "applied"),
            entry("patch", "configmaps", "ns", "applied"),
            entry("delete", "configmaps", "ns", "made"),
            entry("deletecollection", "configmaps", "ns", ""),
        ]
    );
    let requests = k8s.requests();
    let creates: Vec<bool> = requests
        .iter()
        .filter(|r| r.verb == "create")
        .map(|r| r.created_by_apply)
        .collect();
    assert_eq!(creates, [false, true]);
    assert_eq!(
        log(&k8s, "someone"),
        [entry("list", "configmaps", "ns", "")]
    );
    assert_eq!(requests.iter().filter(|r| r.user.is_none()).count(), 1);
}

#[tokio::test]
async fn a_status_write_and_a_cluster_scoped_object_are_logged_as_rbac_names_them() {
    let k8s = KubeEmulator::start().await.unwrap();
    let client = k8s.client_as(USER);
    let requests: Api<gatehouse_crds::ScanRequest> = Api::namespaced(client.clone(), "ns");
    let mut request = gatehouse_tests::operator::sample_request();
    request.metadata.namespace = Some("ns".to_owned());
    let made = requests
        .create(&PostParams::default(), &request)
        .await
        .unwrap();
    let name = made.metadata.name.clone().unwrap();
    requests
        .patch_status(
            &name,
            &PatchParams::default(),
            &Patch::Merge(json!({"status": {"message": "x"}})),
        )
        .await
        .unwrap();
    let crds: Api<
        k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition,
    > = Api::all(client);
    assert!(
        crds.get_opt("scanrequests.gatehouse.dev")
            .await
            .unwrap()
            .is_none()
    );
    assert_eq!(
        log(&k8s, USER),
        [
            entry("create", "scanrequests", "ns", ""),
            entry("patch", "scanrequests/status", "ns", &name),
            entry(
                "get",
                "customresourcedefinitions",
                "*",
                "scanrequests.gatehouse.dev"
            ),
        ]
    );
    let get = k8s.requests().pop().unwrap();
    assert_eq!(get.api_group, "apiextensions.k8s.io");
    assert_eq!(get.status, 404, "logged with the answer");
}
