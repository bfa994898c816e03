//! `gatehouse-operator run --apply-crds` as a process against the Kubernetes API emulator: the
//! CRDs the binary was built with are applied at start and waited for until Established; an
//! older CRD is brought up to date, one applied by a newer version is left alone, and a missing
//! permission or a CRD that is never established fails the start with one line. The operator
//! runs as the chart's ServiceAccount; on a fresh cluster everything it calls must be allowed by
//! the chart's RBAC (creating a CRD by server-side apply is authorised as `create` too).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::process::{Child, Command};
use std::time::Duration;

use gatehouse_tests::operator::MASTER_KEY;
use gatehouse_tests::rbac::{self, Rbac};
use gatehouse_tests::{Controller, Failure, KubeEmulator};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, PostParams};
use serde_json::Value;

const VERSION: &str = env!("CARGO_PKG_VERSION");
const ANNOTATION: &str = "gatehouse.dev/crd-version";
const POLICIES: &str = "scanpolicies.gatehouse.dev";
const REQUESTS: &str = "scanrequests.gatehouse.dev";

/// A running operator; killed when dropped.
struct Operator {
    child: Child,
    port: u16,
    dir: tempfile::TempDir,
}

impl Drop for Operator {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Operator {
    fn start(k8s: &KubeEmulator, extra: &[&str]) -> Operator {
        let dir = tempfile::tempdir().unwrap();
        // As the chart's ServiceAccount: its requests are logged under that user.
        std::fs::write(
            dir.path().join("kubeconfig"),
            k8s.kubeconfig_as(rbac::OPERATOR),
        )
        .unwrap();
        std::fs::write(dir.path().join("master-key"), MASTER_KEY).unwrap();
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let child = Command::new(gatehouse_tests::binaries::operator())
            .args([
                "run",
                "--github-app-id",
                "4242",
                "--github-private-key-file",
            ])
            .arg(concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/fixtures/github-app/test-app-key.pem"
            ))
            .args(["--github-api-url", "http://127.0.0.1:9"])
            .arg("--master-key-file")
            .arg(dir.path().join("master-key"))
            .args(["--lease-namespace", "gatehouse", "--identity", "crd-test"])
            .args(["--listen", &format!("127.0.0.1:{port}")])
            .arg("--apply-crds")
            .args(extra)
            .env_clear()
            .env("KUBECONFIG", dir.path().join("kubeconfig"))
            .env("RUST_LOG", "info")
            .stdout(std::fs::File::create(dir.path().join("stdout")).unwrap())
            .stderr(std::fs::File::create(dir.path().join("stderr")).unwrap())
            .spawn()
            .unwrap();
        Operator { child, port, dir }
    }

    fn ready(&self) -> bool {
        use std::io::{Read, Write};
        let Ok(mut stream) = std::net::TcpStream::connect(("127.0.0.1", self.port)) else {
            return false;
        };
        let _ = stream.write_all(b"GET /readyz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
        let mut text = String::new();
        let _ = stream.read_to_string(&mut text);
        text.starts_with("HTTP/1.1 200")
    }

    /// Waits until `/readyz` answers 200: the CRDs were applied (or left alone) and waited for.
    async fn wait_ready(&mut self) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        while tokio::time::Instant::now() < deadline {
            if self.ready() {
                return;
            }
            if let Some(status) = self.child.try_wait().unwrap() {
                panic!("the operator exited ({status}): {}", self.stderr());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("the operator never became ready: {}", self.stdout());
    }

    /// Waits for the process to exit; its exit code.
    async fn exit_code(&mut self) -> i32 {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        while tokio::time::Instant::now() < deadline {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status.code().unwrap_or(-1);
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("the operator did not exit: {}", self.stdout());
    }

    fn stdout(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("stdout")).unwrap_or_default()
    }

    fn stderr(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("stderr")).unwrap_or_default()
    }
}

fn crd(k8s: &KubeEmulator, name: &str) -> Option<Value> {
    k8s.get::<CustomResourceDefinition>("", name)
}

fn established(crd: &Value) -> bool {
    crd.pointer("/status/conditions")
        .and_then(Value::as_array)
        .is_some_and(|cs| {
            cs.iter()
                .any(|c| c["type"] == "Established" && c["status"] == "True")
        })
}

/// The generated CRD's spec, as the API server stores it (with its defaults: `listKind`, the
/// `None` conversion).
fn generated_spec(name: &str) -> Value {
    let crd = gatehouse_crds::crds()
        .into_iter()
        .find(|c| c.metadata.name.as_deref() == Some(name))
        .unwrap();
    let mut spec = serde_json::to_value(crd.spec).unwrap();
    let list_kind = format!("{}List", spec["names"]["kind"].as_str().unwrap());
    spec["names"]["listKind"] = Value::String(list_kind);
    spec["conversion"] = serde_json::json!({"strategy": "None"});
    spec
}

/// The ScanPolicy CRD as an older Gatehouse would have made it: without `spec.reporting`
/// (the field this version added, say), created by someone else (Helm, kubectl), and marked with
/// `version` when given.
async fn create_old_policy_crd(k8s: &KubeEmulator, version: Option<&str>) -> Value {
    let mut old = gatehouse_crds::crds()
        .into_iter()
        .find(|c| c.metadata.name.as_deref() == Some(POLICIES))
        .unwrap();
    let spec_schema = old.spec.versions[0]
        .schema
        .as_mut()
        .unwrap()
        .open_api_v3_schema
        .as_mut()
        .unwrap()
        .properties
        .as_mut()
        .unwrap()
        .get_mut("spec")
        .unwrap();
    assert!(
        spec_schema
            .properties
            .as_mut()
            .unwrap()
            .remove("reporting")
            .is_some()
    );
    if let Some(version) = version {
        old.metadata.annotations = Some(
            [(ANNOTATION.to_owned(), version.to_owned())]
                .into_iter()
                .collect(),
        );
    }
    Api::<CustomResourceDefinition>::all(k8s.client())
        .create(
            &PostParams {
                field_manager: Some("helm".to_owned()),
                ..PostParams::default()
            },
            &old,
        )
        .await
        .unwrap();
    crd(k8s, POLICIES).unwrap()
}

/// The first place where `a` and `b` differ, as a JSON pointer with both values.
fn difference(a: &Value, b: &Value, at: &str) -> Option<String> {
    match (a, b) {
        (Value::Object(x), Value::Object(y)) => x.keys().chain(y.keys()).find_map(|k| {
            difference(
                x.get(k).unwrap_or(&Value::Null),
                y.get(k).unwrap_or(&Value::Null),
                &format!("{at}/{k}"),
            )
        }),
        (Value::Array(x), Value::Array(y)) if x.len() == y.len() => x
            .iter()
            .zip(y)
            .enumerate()
            .find_map(|(i, (p, q))| difference(p, q, &format!("{at}/{i}"))),
        _ if a == b => None,
        _ => Some(format!("{at}: {a} != {b}")),
    }
}

fn assert_generated(stored: &Value, name: &str) {
    let generated = generated_spec(name);
    assert!(
        stored["spec"] == generated,
        "{name}: {}",
        difference(&stored["spec"], &generated, "spec").unwrap_or_default()
    );
}

fn has_reporting(crd: &Value) -> bool {
    crd.pointer("/spec/versions/0/schema/openAPIV3Schema/properties/spec/properties/reporting")
        .is_some()
}

#[tokio::test]
async fn on_a_fresh_cluster_the_crds_are_created_marked_with_the_version_and_established() {
    let k8s = KubeEmulator::start().await.unwrap();
    assert!(crd(&k8s, POLICIES).is_none());
    let mut operator = Operator::start(&k8s, &[]);
    operator.wait_ready().await;
    for name in [POLICIES, REQUESTS] {
        let stored = crd(&k8s, name).unwrap_or_else(|| panic!("{name} created"));
        assert!(established(&stored), "{stored:#}");
        assert_eq!(stored["metadata"]["annotations"][ANNOTATION], VERSION);
        assert_generated(&stored, name);
        let managers: Vec<(&str, &str)> = stored["metadata"]["managedFields"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| {
                (
                    m["manager"].as_str().unwrap(),
                    m["operation"].as_str().unwrap(),
                )
            })
            .collect();
        assert!(
            managers.contains(&("gatehouse-operator", "Apply")),
            "{managers:?}"
        );
    }
    // By server-side apply, forced, as the operator's field manager.
    let applies: Vec<_> = k8s
        .writes()
        .into_iter()
        .filter(|w| w.path.contains("customresourcedefinitions"))
        .collect();
    assert_eq!(applies.len(), 2, "{applies:#?}");
    for write in &applies {
        assert_eq!(write.method, "PATCH");
        assert_eq!(write.content_type, "application/apply-patch+yaml");
        assert!(write.query.contains("fieldManager=gatehouse-operator"));
        assert!(write.query.contains("force=true"));
        assert_eq!(write.status, 201);
    }
}

#[tokio::test]
async fn on_a_fresh_cluster_applying_the_crds_and_running_calls_only_what_the_charts_rbac_allows() {
    let k8s = KubeEmulator::start().await.unwrap();
    assert!(crd(&k8s, POLICIES).is_none());
    let mut operator = Operator::start(&k8s, &[]);
    operator.wait_ready().await;
    // Leading, its controllers watching: the calls of a running operator are in the log too.
    let watching = || {
        k8s.requests().iter().any(|r| {
            r.user.as_deref() == Some(rbac::OPERATOR)
                && r.verb == "watch"
                && r.resource == "scanrequests"
        })
    };
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while !watching() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "never watched: {}",
            operator.stdout()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let requests = k8s.requests();
    // Each CRD was created by its server-side apply: authorised as patch and as create.
    for name in [POLICIES, REQUESTS] {
        for verb in ["patch", "create"] {
            assert!(
                requests
                    .iter()
                    .any(|r| r.resource == "customresourcedefinitions"
                        && r.verb == verb
                        && r.name.as_deref() == Some(name)),
                "{verb} {name}: {requests:#?}"
            );
        }
    }
    let rbac = Rbac::from_manifest(&rbac::render_chart(&[]).unwrap()).unwrap();
    rbac.assert_allows_all("--apply-crds on a fresh cluster", rbac::OPERATOR, &requests);
}

#[tokio::test]
async fn an_older_crd_is_brought_up_to_date() {
    for version in [None, Some("0.0.1")] {
        let k8s = KubeEmulator::start().await.unwrap();
        let old = create_old_policy_crd(&k8s, version).await;
        assert!(!has_reporting(&old));
        let mut operator = Operator::start(&k8s, &[]);
        operator.wait_ready().await;
        let now = crd(&k8s, POLICIES).unwrap();
        assert!(has_reporting(&now), "{version:?}: the new field is there");
        assert_generated(&now, POLICIES);
        assert_eq!(now["metadata"]["annotations"][ANNOTATION], VERSION);
        assert_eq!(now["metadata"]["generation"], 2, "one change of the spec");
        assert!(established(&now));
        assert!(established(&crd(&k8s, REQUESTS).unwrap()));
    }
}

#[tokio::test]
async fn a_crd_applied_by_a_newer_version_is_left_alone() {
    let k8s = KubeEmulator::start().await.unwrap();
    let newer = create_old_policy_crd(&k8s, Some("999.0.0")).await;
    let mut operator = Operator::start(&k8s, &[]);
    operator.wait_ready().await;
    let now = crd(&k8s, POLICIES).unwrap();
    assert_eq!(
        now["metadata"]["resourceVersion"], newer["metadata"]["resourceVersion"],
        "not written"
    );
    assert_eq!(now["metadata"]["annotations"][ANNOTATION], "999.0.0");
    assert!(!has_reporting(&now));
    assert!(
        !k8s.writes()
            .iter()
            .any(|w| w.method == "PATCH" && w.path.ends_with(POLICIES)),
        "no write to the newer CRD"
    );
    let log = operator.stdout();
    assert!(
        log.contains("applied by a newer Gatehouse") && log.contains("999.0.0"),
        "{log}"
    );
    // The other CRD, absent, is created as usual.
    assert_eq!(
        crd(&k8s, REQUESTS).unwrap()["metadata"]["annotations"][ANNOTATION],
        VERSION
    );
}

#[tokio::test]
async fn without_the_permission_the_start_fails_with_one_line_naming_it() {
    for (method, verb) in [("GET", "get"), ("PATCH", "patch")] {
        let k8s = KubeEmulator::start().await.unwrap();
        k8s.fail_next(
            Some(method),
            "customresourcedefinitions",
            100,
            Failure::Forbidden,
        );
        let mut operator = Operator::start(&k8s, &[]);
        assert_eq!(operator.exit_code().await, 1, "{}", operator.stdout());
        let stderr = operator.stderr();
        assert_eq!(stderr.lines().count(), 1, "{stderr}");
        assert!(
            stderr.starts_with(&format!(
                "gatehouse-operator: failed to {verb} customresourcedefinitions {POLICIES}: forbidden"
            )),
            "{stderr}"
        );
        assert!(
            stderr.contains(
                "needs get, patch and create on apiextensions.k8s.io \
                 customresourcedefinitions (resourceNames scanpolicies.gatehouse.dev, \
                 scanrequests.gatehouse.dev)"
            ),
            "{stderr}"
        );
        assert!(!operator.ready());
    }
}

#[tokio::test]
async fn a_crd_never_established_fails_the_start_after_the_timeout() {
    let k8s = KubeEmulator::start().await.unwrap();
    let hold = k8s.hold(Controller::CrdEstablishing);
    let mut operator = Operator::start(&k8s, &["--apply-crds-timeout-seconds", "1"]);
    assert_eq!(operator.exit_code().await, 1, "{}", operator.stdout());
    let stderr = operator.stderr();
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(
        stderr.contains(&format!(
            "customresourcedefinitions {POLICIES} was not Established within 1 s"
        )),
        "{stderr}"
    );
    // Applied all the same: a slow API server establishes them later.
    assert!(crd(&k8s, POLICIES).is_some());
    hold.release();
    assert!(established(&crd(&k8s, POLICIES).unwrap()));
}

#[tokio::test]
async fn a_newer_replica_writing_between_an_older_ones_read_and_write_is_not_undone() {
    let k8s = KubeEmulator::start().await.unwrap();
    let old = create_old_policy_crd(&k8s, Some("0.0.1")).await;
    // This (older) operator decides to apply, and its write is held; meanwhile a newer replica
    // applies its CRD.
    let mut held = k8s.pause_next("PATCH", POLICIES);
    let mut operator = Operator::start(&k8s, &[]);
    held.arrived().await.unwrap();
    let mut newer: CustomResourceDefinition = serde_json::from_value(old).unwrap();
    newer.metadata.annotations = Some(
        [(ANNOTATION.to_owned(), "999.0.0".to_owned())]
            .into_iter()
            .collect(),
    );
    newer.metadata.managed_fields = None;
    newer.status = None;
    Api::<CustomResourceDefinition>::all(k8s.client())
        .replace(POLICIES, &PostParams::default(), &newer)
        .await
        .unwrap();
    held.release();
    operator.wait_ready().await;
    // The held write was conditional on what it read: refused, decided again, left alone.
    let now = crd(&k8s, POLICIES).unwrap();
    assert_eq!(now["metadata"]["annotations"][ANNOTATION], "999.0.0");
    assert!(!has_reporting(&now));
    let refused = k8s
        .writes()
        .into_iter()
        .filter(|w| w.method == "PATCH" && w.path.ends_with(POLICIES))
        .map(|w| w.status)
        .collect::<Vec<_>>();
    assert_eq!(refused, [409], "{}", operator.stdout());
}
