//! An in-memory Kubernetes API server on loopback, for running the real controllers (kube-rs
//! `Controller`, watches, owned Jobs, finalizers, status patches) in tests without a cluster.
//!
//! kube clients connect through a normal `kube::Config` (cluster URL, no auth). The emulator
//! speaks the real HTTP protocol for the verbs our binaries use: create (with `generateName`),
//! get, list (label/field selectors, `limit`/`continue` over a consistent snapshot), watch
//! (`ADDED/MODIFIED/DELETED/BOOKMARK/ERROR` lines, 410 for a too-old resourceVersion,
//! `timeoutSeconds`), update with resourceVersion preconditions, JSON / merge / strategic merge
//! patches, server-side apply with field ownership and conflicts, delete with propagation, the
//! status subresource, finalizers. It is as strict as the real API server where Gatehouse depends
//! on it: unknown fields (`fieldValidation`), CRD OpenAPI schemas then CEL rules, metadata rules,
//! the rules and server defaults of Jobs, Pods, Secrets, Events and Leases. It plays the garbage
//! collector, the TTL-after-finished controller and the Job controller's deadline on a clock the
//! test can move. It also serves discovery and `Table` responses so `kubectl` works against it.
//!
//! Tests play the cluster's other parts through [`KubeEmulator`]: mark a Job's status as the Job
//! controller would, hold or run controllers, move the clock, inject failures, stall watches,
//! read the write log and the request log (who asked for what, in RBAC terms). What it does **not** model is listed in `docs/testing.md`; it is never
//! used by production code.

pub mod builtin;
mod discovery;
mod error;
mod fieldset;
mod gc;
mod http;
mod keep_zero;
mod managed;
mod meta;
mod requests;
pub mod resource;
mod schema;
pub mod selector;
mod store;
mod table;

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{ConfigMap, Event as CoreEvent, Pod, Secret, ServiceAccount};
use k8s_openapi::api::events::v1::Event;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use serde_json::{Value, json};

use error::ApiError;
pub use requests::RequestRecord;
pub use resource::{Propagation, ResourceType};
pub use store::Controller;
use store::{FailRule, Store};

/// Events kept for watches before older resourceVersions become too old (410).
const DEFAULT_HISTORY: usize = 10_000;

/// One write request as the emulator received it.
#[derive(Clone, Debug)]
pub struct WriteRecord {
    /// HTTP method (POST, PUT, PATCH, DELETE).
    pub method: String,
    /// Request path.
    pub path: String,
    /// Raw query string.
    pub query: String,
    /// `Content-Type` header.
    pub content_type: String,
    /// Body as JSON (YAML bodies are converted; anything else is a string).
    pub body: Value,
    /// HTTP status the emulator answered.
    pub status: u16,
    /// `Warning` headers the emulator answered with (unknown fields, finalizer names).
    pub warnings: Vec<String>,
}

/// A failure to inject into matching requests.
#[derive(Clone, Copy, Debug)]
pub enum Failure {
    /// `500 InternalError`.
    InternalError,
    /// `429 TooManyRequests` with a `Retry-After` header.
    TooManyRequests {
        /// Seconds in `Retry-After`.
        retry_after_seconds: u64,
    },
    /// `409 Conflict`.
    Conflict,
    /// `503 ServiceUnavailable`.
    Unavailable,
    /// `422 Invalid`: the API refuses the object (as an admission webhook or a validation rule
    /// the emulator does not model would).
    Invalid,
    /// `403 Forbidden`: RBAC, an admission webhook's denial, or an exceeded quota.
    Forbidden,
}

impl Failure {
    fn error(self) -> ApiError {
        match self {
            Failure::InternalError => ApiError::new(
                500,
                "InternalError",
                "an error on the server (\"injected\") has prevented the request from succeeding",
            ),
            Failure::TooManyRequests {
                retry_after_seconds,
            } => ApiError {
                retry_after: Some(retry_after_seconds),
                ..ApiError::new(
                    429,
                    "TooManyRequests",
                    "the server has received too many requests and has asked us to try again later",
                )
            },
            Failure::Conflict => ApiError::new(
                409,
                "Conflict",
                "Operation cannot be fulfilled: injected conflict",
            ),
            Failure::Unavailable => ApiError::new(
                503,
                "ServiceUnavailable",
                "the server is currently unable to handle the request",
            ),
            Failure::Invalid => ApiError::new(422, "Invalid", "injected: the object is invalid"),
            Failure::Forbidden => ApiError::new(
                403,
                "Forbidden",
                "admission webhook \"injected\" denied the request",
            ),
        }
    }
}

/// What the Job controller would write into a Job's status. Terminal states are written as a
/// real Job controller (Kubernetes >= 1.31) writes them: first `SuccessCriteriaMet` or
/// `FailureTarget` while pods terminate, then `Complete` or `Failed` in a later write.
#[derive(Clone, Debug)]
pub enum JobState {
    /// A pod is running.
    Active,
    /// The pod succeeded; `Complete` not yet written.
    SuccessCriteriaMet,
    /// Completed successfully (both writes).
    Succeeded,
    /// The Job will fail, its pods are terminating; `Failed` not yet written.
    FailureTarget {
        /// Condition reason.
        reason: String,
        /// Condition message.
        message: String,
    },
    /// Failed, with the Job controller's reason (`BackoffLimitExceeded`, `PodFailurePolicy`,
    /// `DeadlineExceeded`, ...) (both writes).
    Failed {
        /// Condition reason.
        reason: String,
        /// Condition message.
        message: String,
    },
}

/// State shared by the HTTP handlers and the test's handle.
#[derive(Debug)]
pub(crate) struct Shared {
    store: Mutex<Store>,
    changes: tokio::sync::watch::Sender<u64>,
    writes: Mutex<Vec<WriteRecord>>,
    requests: Mutex<Vec<RequestRecord>>,
    bookmark_interval: Duration,
    pauses: Mutex<Vec<PauseRule>>,
}

/// A request to hold before it is served (see [`KubeEmulator::pause_next`]).
#[derive(Debug)]
struct PauseRule {
    method: String,
    path_contains: String,
    /// Serve the request first and hold only its answer.
    after: bool,
    arrived: tokio::sync::oneshot::Sender<()>,
    release: tokio::sync::oneshot::Receiver<()>,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Store> {
        // A test that panicked while holding the lock has failed already; keep serving.
        self.store
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn notify(&self) {
        self.changes.send_modify(|tick| *tick += 1);
    }

    /// Runs a write against the store and wakes watches.
    fn write<T>(&self, f: impl FnOnce(&mut Store) -> Result<T, ApiError>) -> Result<T, ApiError> {
        let result = f(&mut self.lock());
        self.notify();
        result
    }

    /// The release signal of a pause rule matching this request, taken (each pauses one).
    /// The signals of a pause rule matching this request, taken (each pauses one): tell the
    /// test it arrived, then wait for the release.
    fn take_pause(&self, method: &str, path: &str, after: bool) -> Option<PauseRule> {
        let mut pauses = self
            .pauses
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let at = pauses.iter().position(|r| {
            r.after == after
                && r.method.eq_ignore_ascii_case(method)
                && path.contains(&r.path_contains)
        })?;
        Some(pauses.remove(at))
    }

    fn take_failure(&self, method: &str, path: &str, after: bool) -> Option<ApiError> {
        let mut store = self.lock();
        let rule = store.failures.iter_mut().find(|r| {
            r.remaining > 0
                && r.after == after
                && r.method
                    .as_deref()
                    .is_none_or(|m| m.eq_ignore_ascii_case(method))
                && path.contains(&r.path_contains)
        })?;
        rule.remaining -= 1;
        let error = rule.error.clone();
        store.failures.retain(|r| r.remaining > 0);
        Some(error)
    }

    fn is_stalled(&self, path: &str) -> bool {
        self.lock()
            .stalls
            .iter()
            .any(|(_, pattern)| path.contains(pattern.as_str()))
    }

    fn log_request(&self, record: RequestRecord) {
        self.requests
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .push(record);
    }

    fn log_write(&self, record: WriteRecord) {
        self.writes
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .push(record);
    }
}

/// A running emulator. Dropping it stops the server.
#[derive(Debug)]
pub struct KubeEmulator {
    shared: Arc<Shared>,
    addr: SocketAddr,
    server: tokio::task::JoinHandle<()>,
}

impl Drop for KubeEmulator {
    fn drop(&mut self) {
        self.server.abort();
    }
}

/// Builder for [`KubeEmulator`].
#[derive(Debug)]
pub struct KubeEmulatorBuilder {
    types: Vec<ResourceType>,
    history: usize,
    bookmark_interval: Duration,
}

impl KubeEmulatorBuilder {
    /// Also serve this resource type.
    #[must_use]
    pub fn with_type(mut self, rt: ResourceType) -> Self {
        self.types.push(rt);
        self
    }

    /// Keep this many events for watches (fewer makes 410 Gone easy to provoke).
    #[must_use]
    pub fn history(mut self, events: usize) -> Self {
        self.history = events;
        self
    }

    /// How often watches that allow bookmarks get one (a real apiserver: about a minute).
    #[must_use]
    pub fn bookmark_interval(mut self, interval: Duration) -> Self {
        self.bookmark_interval = interval;
        self
    }

    /// Starts serving on a free loopback port. Must be called inside a tokio runtime.
    pub async fn start(self) -> std::io::Result<KubeEmulator> {
        let mut store = Store::new(self.history);
        store.types = self.types;
        let (changes, _) = tokio::sync::watch::channel(0);
        let shared = Arc::new(Shared {
            store: Mutex::new(store),
            changes,
            writes: Mutex::new(Vec::new()),
            requests: Mutex::new(Vec::new()),
            bookmark_interval: self.bookmark_interval,
            pauses: Mutex::new(Vec::new()),
        });
        let listener = tokio::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).await?;
        let addr = listener.local_addr()?;
        let app_state = Arc::clone(&shared);
        let app = axum::Router::new().fallback(
            move |method: axum::http::Method, uri: axum::http::Uri, headers, body: bytes::Bytes| {
                let shared = Arc::clone(&app_state);
                async move {
                    if let Some(rule) = shared.take_pause(method.as_str(), uri.path(), false) {
                        let _ = rule.arrived.send(());
                        // Released or dropped: either way the request goes on.
                        let _ = rule.release.await;
                    }
                    let held = shared.take_pause(method.as_str(), uri.path(), true);
                    let response = http::handle(&shared, &method, &uri, &headers, &body);
                    if let Some(rule) = held {
                        // Served: its effect is in the store before the test hears of it.
                        let _ = rule.arrived.send(());
                        let _ = rule.release.await;
                    }
                    response
                }
            },
        );
        let server = tokio::spawn(async move {
            // Ends only when the task is aborted (the emulator dropped).
            let _ = axum::serve(listener, app).await;
        });
        Ok(KubeEmulator {
            shared,
            addr,
            server,
        })
    }
}

impl KubeEmulator {
    /// A builder preloaded with the types Gatehouse uses: Pod, Secret, ConfigMap,
    /// ServiceAccount, core and events.k8s.io Events, batch/v1 Job (status subresource, Orphan
    /// by default as the real API), coordination Lease, apiextensions CustomResourceDefinition
    /// (status subresource; the objects are stored, the served types stay as registered), and
    /// the Gatehouse CRDs.
    pub fn builder() -> KubeEmulatorBuilder {
        let mut types = vec![
            ResourceType::namespaced::<Pod>().with_status(),
            ResourceType::namespaced::<Secret>(),
            ResourceType::namespaced::<ConfigMap>(),
            ResourceType::namespaced::<ServiceAccount>(),
            ResourceType::namespaced::<CoreEvent>(),
            ResourceType::namespaced::<Event>(),
            ResourceType::namespaced::<Job>()
                .with_status()
                .with_default_propagation(Propagation::Orphan),
            ResourceType::namespaced::<Lease>(),
            ResourceType::cluster::<CustomResourceDefinition>().with_status(),
        ];
        types.extend(gatehouse_crds::crds().iter().map(ResourceType::from_crd));
        KubeEmulatorBuilder {
            types,
            history: DEFAULT_HISTORY,
            bookmark_interval: Duration::from_secs(60),
        }
    }

    /// Starts an emulator with the default types.
    pub async fn start() -> std::io::Result<KubeEmulator> {
        KubeEmulator::builder().start().await
    }

    /// The loopback address it serves on (for raw HTTP in tests).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// A kube client for this emulator, default namespace `default`, configured as production
    /// clients are (kube retries 429, 503 and 504 itself, honouring `Retry-After`).
    pub fn client(&self) -> kube::Client {
        self.client_with(true)
    }

    /// A kube client that does not retry anything, to see every injected failure.
    pub fn client_without_retries(&self) -> kube::Client {
        self.client_with(false)
    }

    /// A kube client (configured as [`Self::client`]) that authenticates as `user`: its
    /// requests are logged under that name ([`Self::requests`]).
    pub fn client_as(&self, user: &str) -> kube::Client {
        self.client_for(true, Some(user))
    }

    fn client_with(&self, retries: bool) -> kube::Client {
        self.client_for(retries, None)
    }

    fn client_for(&self, retries: bool, user: Option<&str>) -> kube::Client {
        let url = self.url().parse().unwrap_or_else(|_| unreachable_url());
        let mut config = kube::Config::new(url);
        config.default_retry = retries;
        if let Some(user) = user {
            // The emulator takes a bearer token as the name of its user.
            config.auth_info.token = Some(user.to_owned().into());
        }
        kube::Client::try_from(config).unwrap_or_else(|e| unreachable_client(&e))
    }

    /// A kubeconfig file content pointing at the emulator, for `kubectl --kubeconfig`
    /// (no credentials: requests are logged without a user).
    pub fn kubeconfig(&self) -> String {
        self.kubeconfig_for(None)
    }

    /// A kubeconfig whose user is `user` (a bearer token the emulator takes as the user's
    /// name), for a process with its own identity, such as
    /// `system:serviceaccount:gatehouse:gatehouse-operator`; its requests are logged under
    /// that name ([`Self::requests`]).
    pub fn kubeconfig_as(&self, user: &str) -> String {
        self.kubeconfig_for(Some(user))
    }

    fn kubeconfig_for(&self, user: Option<&str>) -> String {
        // A JSON string is a YAML double-quoted scalar.
        let credentials = user.map_or_else(
            || "{}".to_owned(),
            |u| format!("\n    token: {}", Value::String(u.to_owned())),
        );
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: emulator\n  cluster:\n    server: {}\n\
             contexts:\n- name: emulator\n  context:\n    cluster: emulator\n    user: emulator-user\n    namespace: default\n\
             current-context: emulator\nusers:\n- name: emulator-user\n  user: {credentials}\n",
            self.url()
        )
    }

    fn type_id<K: kube::Resource<DynamicType = ()>>(&self) -> usize {
        let store = self.shared.lock();
        store
            .find_type(&K::group(&()), &K::version(&()), &K::plural(&()))
            .unwrap_or_else(|| unregistered(&K::kind(&())))
    }

    /// An object as stored, or `None`.
    pub fn get<K: kube::Resource<DynamicType = ()>>(&self, ns: &str, name: &str) -> Option<Value> {
        let t = self.type_id::<K>();
        self.shared.lock().get(t, ns, name).ok()
    }

    /// Names of the objects of a kind in a namespace, sorted.
    pub fn names<K: kube::Resource<DynamicType = ()>>(&self, ns: &str) -> Vec<String> {
        let t = self.type_id::<K>();
        self.shared
            .lock()
            .objects_of(t, Some(ns))
            .iter()
            .filter_map(|o| {
                o.pointer("/metadata/name")
                    .and_then(Value::as_str)
                    .map(str::to_owned)
            })
            .collect()
    }

    /// Replaces an object's status as a controller inside the cluster would.
    pub fn set_status<K: kube::Resource<DynamicType = ()>>(
        &self,
        ns: &str,
        name: &str,
        status: Value,
    ) -> Result<Value, String> {
        let t = self.type_id::<K>();
        self.shared
            .write(|s| s.set_status(t, ns, name, status))
            .map_err(|e| e.message)
    }

    /// Plays the Job controller: writes the status a Job in `state` would have, in as many
    /// writes as the real controller makes. Returns the Job after the last write.
    pub fn set_job_status(&self, ns: &str, name: &str, state: &JobState) -> Result<Value, String> {
        let steps: Vec<JobStep> = match state {
            JobState::Active => vec![JobStep::Active],
            JobState::SuccessCriteriaMet => vec![JobStep::SuccessCriteriaMet],
            JobState::Succeeded => vec![JobStep::SuccessCriteriaMet, JobStep::Complete],
            JobState::FailureTarget { reason, message } => {
                vec![JobStep::FailureTarget(reason.clone(), message.clone())]
            }
            JobState::Failed { reason, message } => vec![
                JobStep::FailureTarget(reason.clone(), message.clone()),
                JobStep::Failed(reason.clone(), message.clone()),
            ],
        };
        let mut last = Value::Null;
        for step in steps {
            let current = self
                .get::<Job>(ns, name)
                .ok_or_else(|| format!("job {ns}/{name} not found"))?;
            if step.done(&current) {
                last = current;
                continue;
            }
            let now = self.shared.lock().now();
            last = self.set_status::<Job>(ns, name, step.status(&current, &now))?;
        }
        Ok(last)
    }

    /// Holds an in-cluster controller: it does nothing until the guard is released (then it
    /// catches up at once) or [`KubeEmulator::run_controller`] runs it.
    pub fn hold(&self, controller: Controller) -> ControllerHold {
        *self.shared.lock().held.entry(controller).or_insert(0) += 1;
        ControllerHold {
            shared: Arc::clone(&self.shared),
            controller,
        }
    }

    /// Runs an in-cluster controller now, to a fixed point, held or not.
    pub fn run_controller(&self, controller: Controller) {
        self.shared
            .write(|s| {
                s.run(&[controller]);
                Ok(())
            })
            .unwrap_or(());
    }

    /// Moves the emulator's clock forward (timestamps it writes, TTLs and Job deadlines it
    /// checks), then lets the controllers that are not held act on the new time.
    pub fn advance_clock(&self, by: Duration) {
        self.shared
            .write(|s| {
                s.clock_offset += by;
                s.run_controllers();
                Ok(())
            })
            .unwrap_or(());
    }

    /// The emulator's current time, RFC 3339.
    pub fn now(&self) -> String {
        self.shared.lock().now()
    }

    /// Makes the next `times` requests whose path contains `path_contains` (and whose method is
    /// `method`, when given) fail with `failure`.
    pub fn fail_next(
        &self,
        method: Option<&str>,
        path_contains: &str,
        times: usize,
        failure: Failure,
    ) {
        self.shared.lock().failures.push(FailRule {
            method: method.map(str::to_owned),
            path_contains: path_contains.to_owned(),
            remaining: times,
            error: failure.error(),
            after: false,
        });
    }

    /// Serves the next `times` requests whose path contains `path_contains` (and whose method
    /// is `method`, when given) but answers them with `failure`: their effect is stored and the
    /// client hears of an error, as when an answer is lost after the write (a timeout, a proxy).
    pub fn fail_next_answer(
        &self,
        method: Option<&str>,
        path_contains: &str,
        times: usize,
        failure: Failure,
    ) {
        self.shared.lock().failures.push(FailRule {
            method: method.map(str::to_owned),
            path_contains: path_contains.to_owned(),
            remaining: times,
            error: failure.error(),
            after: true,
        });
    }

    /// Holds the next `method` request whose path contains `path_contains` before it is served,
    /// until the returned [`Pause`] is released or dropped: to put another client's requests in
    /// between a client's steps.
    pub fn pause_next(&self, method: &str, path_contains: &str) -> Pause {
        self.pause(method, path_contains, false)
    }

    /// Serves the next `method` request whose path contains `path_contains` at once (its effect
    /// and what it read are fixed then) but holds its answer until the returned [`Pause`] is
    /// released or dropped: a client that is slow to hear back.
    pub fn pause_next_answer(&self, method: &str, path_contains: &str) -> Pause {
        self.pause(method, path_contains, true)
    }

    fn pause(&self, method: &str, path_contains: &str, after: bool) -> Pause {
        let (arrived_tx, arrived) = tokio::sync::oneshot::channel();
        let (release, release_rx) = tokio::sync::oneshot::channel();
        self.shared
            .pauses
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .push(PauseRule {
                method: method.to_owned(),
                path_contains: path_contains.to_owned(),
                after,
                arrived: arrived_tx,
                release: release_rx,
            });
        Pause {
            arrived: Some(arrived),
            release: Some(release),
        }
    }

    /// Stops delivering events on watches whose path contains `path_contains` (existing and new
    /// ones) until the returned guard is released or dropped; connections stay open, as with a
    /// hung apiserver. Events are delivered once released.
    pub fn stall_watches(&self, path_contains: &str) -> StallGuard {
        let mut store = self.shared.lock();
        store.stall_counter += 1;
        let id = store.stall_counter;
        store.stalls.push((id, path_contains.to_owned()));
        StallGuard {
            shared: Arc::clone(&self.shared),
            id,
        }
    }

    /// Forgets the event history: watches from any earlier resourceVersion get 410 Gone.
    pub fn compact(&self) {
        self.shared
            .write(|s| {
                s.compact();
                Ok(())
            })
            .unwrap_or(());
    }

    /// Every write request so far, in order.
    pub fn writes(&self) -> Vec<WriteRecord> {
        self.shared
            .writes
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// Every request so far, in order of their answers, each with its user and RBAC
    /// attributes; a server-side apply that created its object appears twice (`patch`, then
    /// `create` with [`RequestRecord::created_by_apply`]). A watch is logged when it starts.
    pub fn requests(&self) -> Vec<RequestRecord> {
        self.shared
            .requests
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// The current resourceVersion.
    pub fn resource_version(&self) -> u64 {
        self.shared.lock().current_rv()
    }
}

/// One status write of the Job controller.
enum JobStep {
    Active,
    SuccessCriteriaMet,
    Complete,
    FailureTarget(String, String),
    Failed(String, String),
}

impl JobStep {
    fn condition(&self) -> Option<&'static str> {
        match self {
            JobStep::Active => None,
            JobStep::SuccessCriteriaMet => Some("SuccessCriteriaMet"),
            JobStep::Complete => Some("Complete"),
            JobStep::FailureTarget(..) => Some("FailureTarget"),
            JobStep::Failed(..) => Some("Failed"),
        }
    }

    /// Whether the Job already has this step's condition.
    fn done(&self, job: &Value) -> bool {
        self.condition().is_some_and(|c| {
            job.pointer("/status/conditions")
                .and_then(Value::as_array)
                .is_some_and(|cs| cs.iter().any(|x| x["type"] == c && x["status"] == "True"))
        })
    }

    fn status(&self, job: &Value, now: &str) -> Value {
        let mut status = job.get("status").cloned().unwrap_or_else(|| json!({}));
        if status.get("startTime").is_none() {
            status["startTime"] = json!(now);
        }
        let (reason, message) = match self {
            JobStep::Active => {
                status["active"] = json!(1);
                status["ready"] = json!(1);
                status["terminating"] = json!(0);
                status["uncountedTerminatedPods"] = json!({});
                return status;
            }
            JobStep::SuccessCriteriaMet | JobStep::Complete => (
                "CompletionsReached".to_owned(),
                "Reached expected number of succeeded pods".to_owned(),
            ),
            JobStep::FailureTarget(r, m) | JobStep::Failed(r, m) => (r.clone(), m.clone()),
        };
        match self {
            JobStep::SuccessCriteriaMet => status["succeeded"] = json!(1),
            JobStep::FailureTarget(..) => {
                let failed = status["failed"].as_i64().unwrap_or(0);
                status["failed"] = json!(failed.max(1));
            }
            JobStep::Complete => status["completionTime"] = json!(now),
            _ => {}
        }
        status["active"] = json!(0);
        status["ready"] = json!(0);
        status["terminating"] = json!(0);
        let condition = json!({"type": self.condition(), "status": "True", "reason": reason,
            "message": message, "lastProbeTime": now, "lastTransitionTime": now});
        match status.get_mut("conditions").and_then(Value::as_array_mut) {
            Some(list) => list.push(condition),
            None => status["conditions"] = json!([condition]),
        }
        status
    }
}

/// Holds a controller while alive (see [`KubeEmulator::hold`]).
#[derive(Debug)]
pub struct ControllerHold {
    shared: Arc<Shared>,
    controller: Controller,
}

impl ControllerHold {
    /// Lets the controller act again (it catches up at once).
    pub fn release(self) {}
}

impl Drop for ControllerHold {
    fn drop(&mut self) {
        let controller = self.controller;
        self.shared
            .write(|s| {
                if let Some(n) = s.held.get_mut(&controller) {
                    *n = n.saturating_sub(1);
                }
                s.run_controllers();
                Ok(())
            })
            .unwrap_or(());
    }
}

/// A request held by [`KubeEmulator::pause_next`].
#[derive(Debug)]
pub struct Pause {
    arrived: Option<tokio::sync::oneshot::Receiver<()>>,
    release: Option<tokio::sync::oneshot::Sender<()>>,
}

impl Pause {
    /// Waits until the request is being held (fails after 10 s: the request never came).
    pub async fn arrived(&mut self) -> anyhow::Result<()> {
        let arrived = self
            .arrived
            .take()
            .ok_or_else(|| anyhow::anyhow!("already waited for"))?;
        tokio::time::timeout(Duration::from_secs(10), arrived)
            .await
            .map_err(|_| anyhow::anyhow!("the paused request never came"))?
            .map_err(|_| anyhow::anyhow!("the emulator stopped"))
    }

    /// Lets the request be served.
    pub fn release(mut self) {
        if let Some(release) = self.release.take() {
            let _ = release.send(());
        }
    }
}

/// Keeps watches stalled while alive.
#[derive(Debug)]
pub struct StallGuard {
    shared: Arc<Shared>,
    id: u64,
}

impl StallGuard {
    /// Delivers the held events again.
    pub fn release(self) {}
}

impl Drop for StallGuard {
    fn drop(&mut self) {
        self.shared.lock().stalls.retain(|(id, _)| *id != self.id);
        self.shared.notify();
    }
}

// The emulator's own URL always parses and a kube client for it always builds; these keep the
// code free of unwrap while saying so.
#[allow(clippy::panic)]
fn unreachable_url() -> axum::http::Uri {
    panic!("emulator URL does not parse")
}

#[allow(clippy::panic)]
fn unreachable_client(e: &kube::Error) -> kube::Client {
    panic!("kube client for the emulator: {e}")
}

#[allow(clippy::panic)]
fn unregistered(kind: &str) -> usize {
    panic!(
        "{kind} is not registered with the emulator; add it with KubeEmulator::builder().with_type(...)"
    )
}
