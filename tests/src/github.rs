//! A stateful stand-in for the parts of GitHub's REST API the operator uses, served on loopback:
//! installation tokens, check runs (create, update, list by commit) and a pull request's files.
//! Check runs live in memory, so one created before a crash is found again by listing; every
//! request is recorded, and faults can be injected per method and path.
//!
//! It validates what GitHub validates where the operator could get it wrong (required fields,
//! enums, a conclusion for a completed run, output limits, who may call), and nothing more: it
//! must not grow features the operator does not use, nor be used by production code.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::body::Body;
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, Response, StatusCode, Uri, header};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::{Value, json};

/// The first check run id handed out.
const FIRST_ID: i64 = 1000;
/// GitHub's primary rate limit for an installation, per hour.
const RATE_LIMIT: u64 = 5000;
/// GitHub's cap on a check run's `output.summary` and `output.text`, in characters.
const MAX_OUTPUT_CHARS: usize = 65535;
/// GitHub lists at most this many files of a pull request.
const MAX_PULL_FILES: usize = 3000;
const STATUSES: [&str; 3] = ["queued", "in_progress", "completed"];
/// What a client may set; `stale` is GitHub's own and refused.
const CONCLUSIONS: [&str; 7] = [
    "action_required",
    "cancelled",
    "failure",
    "neutral",
    "success",
    "skipped",
    "timed_out",
];
const CHECKS_DOCS: &str = "https://docs.github.com/rest/checks/runs";

/// One request the stand-in received.
#[derive(Clone, Debug)]
pub struct Call {
    /// HTTP method, upper case.
    pub method: String,
    /// Path as sent (still percent-encoded), without the query.
    pub path: String,
    /// Query string as sent, without `?` (empty when none).
    pub query: String,
    /// Body as JSON; `Null` when empty, a JSON string when it was not JSON.
    pub body: Value,
    /// Status code answered (an injected one included).
    pub status: u16,
    /// The `Authorization` header (empty when none).
    pub authorization: String,
    /// When it arrived.
    pub at: std::time::Instant,
}

/// A check run as the stand-in holds it.
#[derive(Clone, Debug, PartialEq)]
pub struct CheckRun {
    /// Id, from 1000 up in creation order.
    pub id: i64,
    /// Repository owner, as given when created.
    pub owner: String,
    /// Repository name, as given when created.
    pub repo: String,
    /// Check name.
    pub name: String,
    /// Commit checked.
    pub head_sha: String,
    /// The caller's reference (empty when none was given).
    pub external_id: String,
    /// `queued`, `in_progress` or `completed`.
    pub status: String,
    /// Conclusion of a completed run.
    pub conclusion: Option<String>,
    /// Start time; GitHub sets it to the creation time when not given.
    pub started_at: Option<String>,
    /// Completion time; GitHub sets it when the run completes without one.
    pub completed_at: Option<String>,
    /// Details link.
    pub details_url: Option<String>,
    /// `output.title`.
    pub title: Option<String>,
    /// `output.summary`.
    pub summary: Option<String>,
    /// Every annotation sent, in order (GitHub appends each request's to the run's).
    pub annotations: Vec<Value>,
    /// Every state it went through, `status` or `completed/<conclusion>`: one entry at creation,
    /// one per change, and one for every update of a run already completed (even an unchanged
    /// state), so edits after completion show.
    pub history: Vec<String>,
}

/// A running stand-in. Dropping it stops the server.
#[derive(Debug)]
pub struct FakeGitHub {
    shared: Arc<Shared>,
    addr: SocketAddr,
    server: tokio::task::JoinHandle<()>,
}

impl Drop for FakeGitHub {
    fn drop(&mut self) {
        self.server.abort();
    }
}

#[derive(Debug)]
struct Shared {
    state: Mutex<State>,
    verbose: AtomicBool,
    /// `http://127.0.0.1:PORT`, for the URLs in answers.
    base: String,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// A check run with what [`CheckRun`] leaves out.
#[derive(Debug)]
struct Stored {
    run: CheckRun,
    text: Option<String>,
}

#[derive(Debug)]
struct Fault {
    method: String,
    path_prefix: String,
    status: u16,
    headers: Vec<(String, String)>,
    left: usize,
    /// Applied after the request took effect: the answer is lost, not the request.
    after: bool,
    /// Matching requests let through before the fault applies.
    skip: usize,
}

impl Fault {
    /// `times` answers of `status`, without headers, to requests before they take effect.
    fn new(method: &str, path_prefix: &str, status: u16, times: usize) -> Fault {
        Fault {
            method: method.to_ascii_uppercase(),
            path_prefix: path_prefix.to_owned(),
            status,
            headers: Vec::new(),
            left: times,
            after: false,
            skip: 0,
        }
    }
}

/// The App's installation on a repository nobody set another for (the sample ScanRequest's).
pub const DEFAULT_INSTALLATION: i64 = 1;

#[derive(Debug)]
struct State {
    runs: Vec<Stored>,
    /// SARIF uploads to code scanning: (owner/repo, the request body).
    sarif_uploads: Vec<(String, Value)>,
    next_id: i64,
    calls: Vec<Call>,
    /// Minted tokens, in order.
    tokens: Vec<String>,
    token_bodies: Vec<Value>,
    /// Changed files by (owner, repo) lower-cased and pull request number.
    files: HashMap<(String, String, i64), Vec<String>>,
    /// The App's installation by account (owner, lower-cased); [`DEFAULT_INSTALLATION`] for
    /// any other.
    installations: HashMap<String, i64>,
    faults: Vec<Fault>,
    remaining: u64,
    /// End of the rate-limit window, epoch seconds.
    reset: u64,
}

/// What to answer.
struct Answer {
    status: u16,
    body: Value,
    /// Headers besides the usual ones (a pagination `Link`).
    extra: Vec<(String, String)>,
    /// An injected fault's headers, sent instead of the usual ones.
    injected: Option<Vec<(String, String)>>,
}

impl Answer {
    fn json(status: u16, body: Value) -> Answer {
        Answer {
            status,
            body,
            extra: Vec::new(),
            injected: None,
        }
    }

    fn message(status: u16, message: &str) -> Answer {
        Answer::json(status, json!({ "message": message }))
    }

    fn not_found() -> Answer {
        Answer::json(
            404,
            json!({"message": "Not Found", "documentation_url": "https://docs.github.com/rest",
                "status": "404"}),
        )
    }

    fn invalid(detail: &str) -> Answer {
        Answer::json(
            422,
            json!({"message": format!("Invalid request.\n\n{detail}"),
                "documentation_url": CHECKS_DOCS, "status": "422"}),
        )
    }
}

impl FakeGitHub {
    /// Starts serving on a free loopback port. Must be called inside a tokio runtime.
    pub async fn start() -> anyhow::Result<FakeGitHub> {
        let listener = tokio::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).await?;
        let addr = listener.local_addr()?;
        let shared = Arc::new(Shared {
            state: Mutex::new(State {
                runs: Vec::new(),
                sarif_uploads: Vec::new(),
                next_id: FIRST_ID,
                calls: Vec::new(),
                tokens: Vec::new(),
                token_bodies: Vec::new(),
                files: HashMap::new(),
                installations: HashMap::new(),
                faults: Vec::new(),
                remaining: RATE_LIMIT,
                reset: unix_now() + 3600,
            }),
            verbose: AtomicBool::new(false),
            base: format!("http://{addr}"),
        });
        let app_state = Arc::clone(&shared);
        let app = axum::Router::new().fallback(
            move |method: Method, uri: Uri, headers: HeaderMap, body: bytes::Bytes| {
                let shared = Arc::clone(&app_state);
                async move { handle(&shared, &method, &uri, &headers, &body) }
            },
        );
        let server = tokio::spawn(async move {
            // Ends only when the task is aborted (the stand-in dropped).
            let _ = axum::serve(listener, app).await;
        });
        Ok(FakeGitHub {
            shared,
            addr,
            server,
        })
    }

    /// The base URL, `http://127.0.0.1:PORT` (octocrab's `base_uri`).
    pub fn url(&self) -> String {
        self.shared.base.clone()
    }

    /// The address it listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// When on, prints one line per request to stdout (`github: POST /repos/o/r/check-runs
    /// name=gatehouse/kics status=queued -> 201 id=1000`).
    pub fn set_verbose(&self, on: bool) {
        self.shared.verbose.store(on, Ordering::Relaxed);
    }

    /// The files pull request `number` of `owner/repo` changes (none until set).
    pub fn set_changed_files(&self, owner: &str, repo: &str, number: i64, files: Vec<String>) {
        self.shared.lock().files.insert(
            (
                owner.to_ascii_lowercase(),
                repo.to_ascii_lowercase(),
                number,
            ),
            files,
        );
    }

    /// Makes `installation` the App's installation on every repository of `owner` (the answer
    /// of `GET /repos/{owner}/{repo}/installation`); by default every owner has
    /// [`DEFAULT_INSTALLATION`].
    pub fn set_installation(&self, owner: &str, installation: i64) {
        self.shared
            .lock()
            .installations
            .insert(owner.to_ascii_lowercase(), installation);
    }

    /// The next `times` requests with this method whose path (as sent) starts with
    /// `path_prefix` are answered `status` with `headers` (and a JSON content type) and body
    /// `{"message":"injected"}`, without changing any state. Earlier rules match first.
    pub fn fail_next(
        &self,
        method: &str,
        path_prefix: &str,
        status: u16,
        headers: Vec<(String, String)>,
        times: usize,
    ) {
        self.shared.lock().faults.push(Fault {
            headers,
            ..Fault::new(method, path_prefix, status, times)
        });
    }

    /// The next `times` requests with this method whose path starts with `path_prefix` take
    /// effect (a check run is created, ...) but are answered `status` with
    /// `{"message":"injected"}`: the answer is lost on the way back, as when a connection drops.
    pub fn lose_answer_next(&self, method: &str, path_prefix: &str, status: u16, times: usize) {
        self.shared.lock().faults.push(Fault {
            after: true,
            ..Fault::new(method, path_prefix, status, times)
        });
    }

    /// Like [`Self::lose_answer_next`], after letting the first `skip` matching requests that
    /// took effect through (requests an earlier fault refused are not counted).
    pub fn lose_answer_after(
        &self,
        method: &str,
        path_prefix: &str,
        skip: usize,
        status: u16,
        times: usize,
    ) {
        self.shared.lock().faults.push(Fault {
            after: true,
            skip,
            ..Fault::new(method, path_prefix, status, times)
        });
    }

    /// Like [`Self::fail_next`], after letting the first `skip` matching requests through (the
    /// third PATCH of a run, say).
    pub fn fail_after(
        &self,
        method: &str,
        path_prefix: &str,
        skip: usize,
        status: u16,
        times: usize,
    ) {
        self.shared.lock().faults.push(Fault {
            skip,
            ..Fault::new(method, path_prefix, status, times)
        });
    }

    /// The SARIF uploads to code scanning received: repository (`owner/repo`) and body.
    pub fn sarif_uploads(&self) -> Vec<(String, Value)> {
        self.shared.lock().sarif_uploads.clone()
    }

    /// Drops every injected fault not used yet: GitHub answers normally again.
    pub fn clear_faults(&self) {
        self.shared.lock().faults.clear();
    }

    /// Every request received, in order, including refused and injected ones.
    pub fn calls(&self) -> Vec<Call> {
        self.shared.lock().calls.clone()
    }

    /// The check runs held now, in creation order.
    pub fn check_runs(&self) -> Vec<CheckRun> {
        self.shared
            .lock()
            .runs
            .iter()
            .map(|s| s.run.clone())
            .collect()
    }

    /// The bodies of the access token requests answered with a token, in order (`Null` for an
    /// empty body).
    pub fn tokens_minted(&self) -> Vec<Value> {
        self.shared.lock().token_bodies.clone()
    }

    /// Waits until `pred` holds, checking every 20 ms; after `timeout` fails naming `what` with
    /// the check runs and calls so far.
    pub async fn wait_for(
        &self,
        what: &str,
        timeout: Duration,
        pred: impl Fn(&FakeGitHub) -> bool,
    ) -> anyhow::Result<()> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            if pred(self) {
                return Ok(());
            }
            if tokio::time::Instant::now() >= deadline {
                let mut calls = String::new();
                for call in self.calls() {
                    let _ = writeln!(
                        calls,
                        "  {} {}{}{} -> {}",
                        call.method,
                        call.path,
                        if call.query.is_empty() { "" } else { "?" },
                        call.query,
                        call.status
                    );
                }
                anyhow::bail!(
                    "timed out after {timeout:?} waiting for {what}\ncheck runs: {:#?}\ncalls:\n{calls}",
                    self.check_runs()
                );
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// Answers one request and records it.
fn handle(
    shared: &Shared,
    method: &Method,
    uri: &Uri,
    headers: &HeaderMap,
    body: &[u8],
) -> Response<Body> {
    let path = uri.path().to_owned();
    let query = uri.query().unwrap_or_default().to_owned();
    let authorization = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    let parsed = parse_body(body);
    let recorded = match &parsed {
        Ok(value) => value.clone(),
        Err(()) => Value::String(String::from_utf8_lossy(body).into_owned()),
    };
    let now = unix_now();
    let mut state = shared.lock();
    let answer = if let Some(answer) = state.take_fault(method.as_str(), &path, false) {
        answer
    } else {
        if now >= state.reset {
            state.remaining = RATE_LIMIT;
            state.reset = now + 3600;
        }
        if path.starts_with("/repos/") {
            state.remaining = state.remaining.saturating_sub(1);
        }
        let request = Request {
            base: &shared.base,
            method: method.as_str(),
            path: &path,
            query: &query,
            authorization: &authorization,
            body: parsed,
            now,
        };
        let answer = route(&mut state, &request);
        state
            .take_fault(method.as_str(), &path, true)
            .unwrap_or(answer)
    };
    state.calls.push(Call {
        method: method.as_str().to_owned(),
        path: path.clone(),
        query: query.clone(),
        body: recorded.clone(),
        status: answer.status,
        authorization,
        at: std::time::Instant::now(),
    });
    let response = respond(&answer, state.remaining, state.reset);
    drop(state);
    if shared.verbose.load(Ordering::Relaxed) {
        println!(
            "{}",
            describe(method.as_str(), &path, &query, &recorded, &answer)
        );
    }
    response
}

impl State {
    /// The injected answer for this request, if a fault rule matches (using up one of its times).
    fn take_fault(&mut self, method: &str, path: &str, after: bool) -> Option<Answer> {
        let fault = self.faults.iter_mut().find(|f| {
            f.left > 0
                && f.after == after
                && f.method.eq_ignore_ascii_case(method)
                && path.starts_with(&f.path_prefix)
        })?;
        if fault.skip > 0 {
            fault.skip -= 1;
            return None;
        }
        fault.left -= 1;
        let answer = Answer {
            status: fault.status,
            body: json!({ "message": "injected" }),
            extra: Vec::new(),
            injected: Some(fault.headers.clone()),
        };
        self.faults.retain(|f| f.left > 0);
        Some(answer)
    }

    fn find_run(&mut self, owner: &str, repo: &str, id: &str) -> Option<&mut Stored> {
        let id: i64 = id.parse().ok()?;
        self.runs
            .iter_mut()
            .find(|s| s.run.id == id && same_repo(&s.run, owner, repo))
    }
}

/// One request, as the routes need it.
struct Request<'a> {
    base: &'a str,
    method: &'a str,
    path: &'a str,
    query: &'a str,
    authorization: &'a str,
    /// The body as JSON (`Null` when empty), or `Err` when it is not JSON.
    body: Result<Value, ()>,
    now: u64,
}

fn route(state: &mut State, request: &Request<'_>) -> Answer {
    let decoded: Vec<String> = request
        .path
        .trim_start_matches('/')
        .split('/')
        .map(percent_decode)
        .collect();
    let segments: Vec<&str> = decoded.iter().map(String::as_str).collect();
    match (request.method, segments.as_slice()) {
        ("POST", ["app", "installations", id, "access_tokens"])
            if !id.is_empty() && id.bytes().all(|b| b.is_ascii_digit()) =>
        {
            mint_token(state, request)
        }
        ("GET", ["repos", owner, _, "installation"]) => {
            if !request
                .authorization
                .strip_prefix("Bearer ")
                .is_some_and(|token| is_app_jwt(token.trim(), request.now))
            {
                return Answer::json(
                    401,
                    json!({"message": "A JSON web token could not be decoded",
                        "documentation_url": "https://docs.github.com/rest", "status": "401"}),
                );
            }
            let id = state
                .installations
                .get(&owner.to_ascii_lowercase())
                .copied()
                .unwrap_or(DEFAULT_INSTALLATION);
            Answer::json(
                200,
                json!({"id": id, "account": {"login": owner}, "app_id": 4242,
                    "repository_selection": "all", "target_type": "Organization"}),
            )
        }
        (_, ["repos", ..]) => {
            let minted = request
                .authorization
                .strip_prefix("Bearer ")
                .or_else(|| request.authorization.strip_prefix("token "))
                .map(str::trim)
                .is_some_and(|token| state.tokens.iter().any(|t| t == token));
            if minted {
                repos(state, request, &segments)
            } else {
                Answer::json(
                    401,
                    json!({"message": "Bad credentials",
                        "documentation_url": "https://docs.github.com/rest", "status": "401"}),
                )
            }
        }
        _ => Answer::not_found(),
    }
}

fn repos(state: &mut State, request: &Request<'_>, segments: &[&str]) -> Answer {
    match (request.method, segments) {
        ("POST", ["repos", owner, repo, "check-runs"]) => with_object(request, |body| {
            create_run(state, request, owner, repo, body)
        }),
        ("PATCH", ["repos", owner, repo, "check-runs", id]) => with_object(request, |body| {
            update_run(state, request, owner, repo, id, body)
        }),
        ("GET", ["repos", owner, repo, "check-runs", id]) => state
            .find_run(owner, repo, id)
            .map_or_else(Answer::not_found, |s| {
                Answer::json(200, run_json(request.base, s))
            }),
        ("GET", ["repos", owner, repo, "commits", reference, "check-runs"]) => {
            list_runs(state, request, owner, repo, reference)
        }
        ("POST", ["repos", owner, repo, "code-scanning", "sarifs"]) => {
            with_object(request, |body| {
                let text = |key: &str| body.get(key).and_then(Value::as_str).unwrap_or_default();
                if text("commit_sha").len() != 40
                    || !text("ref").starts_with("refs/")
                    || text("sarif").is_empty()
                {
                    return Answer::invalid("commit_sha, ref and sarif are required");
                }
                let id = format!("sarif-{}", state.sarif_uploads.len() + 1);
                state
                    .sarif_uploads
                    .push((format!("{owner}/{repo}"), Value::Object(body.clone())));
                Answer::json(
                    202,
                    json!({"id": id, "url": format!("{}/repos/{owner}/{repo}/code-scanning/sarifs/{id}", request.base)}),
                )
            })
        }
        ("GET", ["repos", owner, repo, "pulls", number, "files"]) => match number.parse() {
            Ok(number) => pull_files(state, request, owner, repo, number),
            Err(_) => Answer::not_found(),
        },
        _ => Answer::not_found(),
    }
}

/// Runs `then` with the body as a JSON object, answering 400 as GitHub does otherwise.
fn with_object(
    request: &Request<'_>,
    then: impl FnOnce(&serde_json::Map<String, Value>) -> Answer,
) -> Answer {
    match &request.body {
        Ok(Value::Object(body)) => then(body),
        Ok(Value::Null) => then(&serde_json::Map::new()),
        Ok(_) => Answer::message(400, "Body should be a JSON object"),
        Err(()) => Answer::message(400, "Problems parsing JSON"),
    }
}

fn mint_token(state: &mut State, request: &Request<'_>) -> Answer {
    let jwt = request
        .authorization
        .strip_prefix("Bearer ")
        .is_some_and(|token| is_app_jwt(token.trim(), request.now));
    if !jwt {
        return Answer::json(
            401,
            json!({"message": "A JSON web token could not be decoded",
                "documentation_url": "https://docs.github.com/rest", "status": "401"}),
        );
    }
    let body = match &request.body {
        Ok(body @ (Value::Object(_) | Value::Null)) => body.clone(),
        Ok(_) => return Answer::message(400, "Body should be a JSON object"),
        Err(()) => return Answer::message(400, "Problems parsing JSON"),
    };
    let token = format!("ghs_fake{}", state.tokens.len() + 1);
    state.tokens.push(token.clone());
    let permissions = body
        .get("permissions")
        .cloned()
        .unwrap_or_else(|| json!({"checks": "write", "contents": "read", "pull_requests": "read"}));
    state.token_bodies.push(body);
    Answer::json(
        201,
        json!({"token": token, "expires_at": format_utc(request.now + 3600),
            "permissions": permissions, "repository_selection": "selected"}),
    )
}

/// The fields of a check run body, checked as GitHub checks them.
#[derive(Default)]
struct Fields {
    name: Option<String>,
    head_sha: Option<String>,
    external_id: Option<String>,
    details_url: Option<String>,
    status: Option<String>,
    conclusion: Option<String>,
    started_at: Option<String>,
    completed_at: Option<String>,
    /// Title, summary, text, annotations.
    output: Option<Output>,
}

/// A check run body's `output`.
struct Output {
    title: String,
    summary: String,
    text: Option<String>,
    annotations: Vec<Value>,
}

/// A string field; JSON `null` counts as absent.
fn string_field(
    body: &serde_json::Map<String, Value>,
    key: &str,
) -> Result<Option<String>, String> {
    match body.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(other) => Err(format!("For '{key}', {other} is not a string.")),
    }
}

fn read_fields(body: &serde_json::Map<String, Value>, creating: bool) -> Result<Fields, String> {
    let mut fields = Fields {
        name: string_field(body, "name")?,
        head_sha: string_field(body, "head_sha")?,
        external_id: string_field(body, "external_id")?,
        details_url: string_field(body, "details_url")?,
        status: string_field(body, "status")?,
        conclusion: string_field(body, "conclusion")?,
        started_at: string_field(body, "started_at")?,
        completed_at: string_field(body, "completed_at")?,
        output: None,
    };
    if creating {
        for (key, value) in [("name", &fields.name), ("head_sha", &fields.head_sha)] {
            if value.as_deref().is_none_or(str::is_empty) {
                return Err(format!("\"{key}\" wasn't supplied."));
            }
        }
    }
    if let Some(status) = fields.status.as_deref().filter(|s| !STATUSES.contains(s)) {
        return Err(format!(
            "For 'properties/status', \"{status}\" is not a member of enum."
        ));
    }
    if let Some(conclusion) = fields
        .conclusion
        .as_deref()
        .filter(|c| !CONCLUSIONS.contains(c))
    {
        return Err(format!(
            "For 'properties/conclusion', \"{conclusion}\" is not a member of enum."
        ));
    }
    let completing = fields.status.as_deref() == Some("completed") || fields.completed_at.is_some();
    if completing && fields.conclusion.is_none() {
        return Err("\"conclusion\" wasn't supplied.".to_owned());
    }
    for (key, value) in [
        ("started_at", &fields.started_at),
        ("completed_at", &fields.completed_at),
    ] {
        if let Some(time) = value.as_deref().filter(|t| !is_timestamp(t)) {
            return Err(format!(
                "For 'properties/{key}', \"{time}\" is not a timestamp."
            ));
        }
    }
    fields.output = read_output(body)?;
    Ok(fields)
}

fn read_output(body: &serde_json::Map<String, Value>) -> Result<Option<Output>, String> {
    let output = match body.get("output") {
        None | Some(Value::Null) => return Ok(None),
        Some(Value::Object(output)) => output,
        Some(other) => return Err(format!("For 'output', {other} is not an object.")),
    };
    let title = string_field(output, "title")?;
    let summary = string_field(output, "summary")?;
    let text = string_field(output, "text")?;
    let (Some(title), Some(summary)) = (title, summary) else {
        return Err("\"title\" and \"summary\" weren't supplied in \"output\".".to_owned());
    };
    for (key, value) in [("summary", Some(&summary)), ("text", text.as_ref())] {
        let chars = value.map_or(0, |v| v.chars().count());
        if chars > MAX_OUTPUT_CHARS {
            return Err(format!(
                "Only {MAX_OUTPUT_CHARS} characters are allowed; {chars} were supplied in output.{key}."
            ));
        }
    }
    let annotations = match output.get("annotations") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Array(items)) => items.clone(),
        Some(other) => {
            return Err(format!(
                "For 'output/annotations', {other} is not an array."
            ));
        }
    };
    if annotations.len() > MAX_ANNOTATIONS_PER_REQUEST {
        return Err(format!(
            "For 'properties/annotations', {} items were supplied; at most {MAX_ANNOTATIONS_PER_REQUEST} are allowed.",
            annotations.len()
        ));
    }
    for (i, annotation) in annotations.iter().enumerate() {
        check_annotation(annotation).map_err(|e| format!("output.annotations[{i}]: {e}"))?;
    }
    Ok(Some(Output {
        title,
        summary,
        text,
        annotations,
    }))
}

/// Annotations per request, as GitHub allows.
const MAX_ANNOTATIONS_PER_REQUEST: usize = 50;

/// An annotation as GitHub checks it: required fields, 1-based lines in order, a known level,
/// columns only on one line, and the length limits.
fn check_annotation(annotation: &Value) -> Result<(), String> {
    let Some(object) = annotation.as_object() else {
        return Err("is not an object".to_owned());
    };
    let text = |key: &str| object.get(key).and_then(Value::as_str);
    let line = |key: &str| object.get(key).and_then(Value::as_i64);
    if text("path").is_none_or(str::is_empty) {
        return Err("\"path\" wasn't supplied.".to_owned());
    }
    let (Some(start), Some(end)) = (line("start_line"), line("end_line")) else {
        return Err("\"start_line\" and \"end_line\" weren't supplied.".to_owned());
    };
    if start < 1 || end < start {
        return Err(format!("lines {start}..{end} are not 1-based and in order"));
    }
    if !matches!(
        text("annotation_level"),
        Some("notice" | "warning" | "failure")
    ) {
        return Err("\"annotation_level\" is not one of notice, warning, failure.".to_owned());
    }
    if text("message").is_none_or(str::is_empty) {
        return Err("\"message\" wasn't supplied.".to_owned());
    }
    if (object.contains_key("start_column") || object.contains_key("end_column")) && start != end {
        return Err("columns are only allowed on a single line".to_owned());
    }
    if text("title").is_some_and(|t| t.chars().count() > 255) {
        return Err("\"title\" is longer than 255 characters".to_owned());
    }
    for key in ["message", "raw_details"] {
        if text(key).is_some_and(|t| t.len() > 64 * 1024) {
            return Err(format!("\"{key}\" is longer than 64 KB"));
        }
    }
    Ok(())
}

fn create_run(
    state: &mut State,
    request: &Request<'_>,
    owner: &str,
    repo: &str,
    body: &serde_json::Map<String, Value>,
) -> Answer {
    let fields = match read_fields(body, true) {
        Ok(fields) => fields,
        Err(detail) => return Answer::invalid(&detail),
    };
    let now = format_utc(request.now);
    // A conclusion means completed, whatever status was sent.
    let status = if fields.conclusion.is_some() {
        "completed".to_owned()
    } else {
        fields.status.unwrap_or_else(|| "queued".to_owned())
    };
    let completed = status == "completed";
    let (title, summary, text, annotations) = match fields.output {
        Some(output) => (
            Some(output.title),
            Some(output.summary),
            output.text,
            output.annotations,
        ),
        None => (None, None, None, Vec::new()),
    };
    let mut run = CheckRun {
        id: state.next_id,
        owner: owner.to_owned(),
        repo: repo.to_owned(),
        name: fields.name.unwrap_or_default(),
        head_sha: fields.head_sha.unwrap_or_default(),
        external_id: fields.external_id.unwrap_or_default(),
        status,
        conclusion: fields.conclusion,
        started_at: Some(fields.started_at.unwrap_or_else(|| now.clone())),
        completed_at: completed.then(|| fields.completed_at.unwrap_or(now)),
        details_url: fields.details_url,
        title,
        summary,
        annotations,
        history: Vec::new(),
    };
    run.history.push(state_label(&run));
    state.next_id += 1;
    let stored = Stored { run, text };
    let answer = Answer::json(201, run_json(request.base, &stored));
    state.runs.push(stored);
    answer
}

fn update_run(
    state: &mut State,
    request: &Request<'_>,
    owner: &str,
    repo: &str,
    id: &str,
    body: &serde_json::Map<String, Value>,
) -> Answer {
    let Some(stored) = state.find_run(owner, repo, id) else {
        return Answer::not_found();
    };
    let fields = match read_fields(body, false) {
        Ok(fields) => fields,
        Err(detail) => return Answer::invalid(&detail),
    };
    let run = &mut stored.run;
    let was_completed = run.status == "completed";
    let before = state_label(run);
    if let Some(name) = fields.name.filter(|n| !n.is_empty()) {
        run.name = name;
    }
    if let Some(external_id) = fields.external_id {
        run.external_id = external_id;
    }
    if let Some(details_url) = fields.details_url {
        run.details_url = Some(details_url);
    }
    if let Some(started_at) = fields.started_at {
        run.started_at = Some(started_at);
    }
    if let Some(conclusion) = fields.conclusion {
        "completed".clone_into(&mut run.status);
        run.conclusion = Some(conclusion);
        run.completed_at = fields
            .completed_at
            .or_else(|| run.completed_at.take())
            .or_else(|| Some(format_utc(request.now)));
    } else if let Some(status) = fields.status {
        // Not completed: that needs a conclusion, refused above. The run is open again.
        run.status = status;
        run.conclusion = None;
        run.completed_at = None;
    }
    if let Some(output) = fields.output {
        run.title = Some(output.title);
        run.summary = Some(output.summary);
        run.annotations.extend(output.annotations);
        stored.text = output.text;
    }
    let after = state_label(&stored.run);
    if after != before || was_completed {
        stored.run.history.push(after);
    }
    Answer::json(200, run_json(request.base, stored))
}

fn list_runs(
    state: &State,
    request: &Request<'_>,
    owner: &str,
    repo: &str,
    reference: &str,
) -> Answer {
    let query = Query::parse(request.query);
    let check_name = query.get("check_name");
    // Newest first, as GitHub lists them.
    let matching: Vec<&Stored> = state
        .runs
        .iter()
        .rev()
        .filter(|s| same_repo(&s.run, owner, repo) && s.run.head_sha == reference)
        .filter(|s| check_name.is_none_or(|name| s.run.name == name))
        .collect();
    let (page, link) = query.page(request, matching.len());
    let runs: Vec<Value> = matching
        .iter()
        .skip(page.start)
        .take(page.len())
        .map(|s| run_json(request.base, s))
        .collect();
    let mut answer = Answer::json(
        200,
        json!({"total_count": matching.len(), "check_runs": runs}),
    );
    answer.extra.extend(link);
    answer
}

fn pull_files(
    state: &State,
    request: &Request<'_>,
    owner: &str,
    repo: &str,
    number: i64,
) -> Answer {
    let key = (
        owner.to_ascii_lowercase(),
        repo.to_ascii_lowercase(),
        number,
    );
    let files = state.files.get(&key).map_or(&[][..], Vec::as_slice);
    let files = &files[..files.len().min(MAX_PULL_FILES)];
    let (page, link) = Query::parse(request.query).page(request, files.len());
    let items: Vec<Value> = files
        .iter()
        .skip(page.start)
        .take(page.len())
        .map(|name| {
            json!({"sha": "0", "filename": name, "status": "modified", "additions": 1,
                "deletions": 0, "changes": 1})
        })
        .collect();
    let mut answer = Answer::json(200, Value::Array(items));
    answer.extra.extend(link);
    answer
}

/// Decoded query parameters.
struct Query(Vec<(String, String)>);

impl Query {
    fn parse(query: &str) -> Query {
        Query(
            form_urlencoded::parse(query.as_bytes())
                .into_owned()
                .collect(),
        )
    }

    fn get(&self, key: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    fn number(&self, key: &str, default: usize) -> usize {
        self.get(key)
            .and_then(|v| v.parse().ok())
            .filter(|n| *n > 0)
            .unwrap_or(default)
    }

    /// The index range of the page asked for (`per_page` 30 by default, 100 at most; `page` from
    /// 1) among `total` items, and a `Link` header when there are other pages.
    fn page(
        &self,
        request: &Request<'_>,
        total: usize,
    ) -> (std::ops::Range<usize>, Option<(String, String)>) {
        let per_page = self.number("per_page", 30).min(100);
        let page = self.number("page", 1);
        let start = (page - 1).saturating_mul(per_page).min(total);
        let end = start.saturating_add(per_page).min(total);
        let last = total.div_ceil(per_page).max(1);
        let page_url = |n: usize| {
            let mut query = form_urlencoded::Serializer::new(String::new());
            for (k, v) in self.0.iter().filter(|(k, _)| k != "page") {
                query.append_pair(k, v);
            }
            query.append_pair("page", &n.to_string());
            format!("<{}{}?{}>", request.base, request.path, query.finish())
        };
        let mut links = Vec::new();
        if page < last {
            links.push(format!("{}; rel=\"next\"", page_url(page + 1)));
            links.push(format!("{}; rel=\"last\"", page_url(last)));
        }
        if page > 1 {
            links.push(format!("{}; rel=\"first\"", page_url(1)));
            links.push(format!("{}; rel=\"prev\"", page_url((page - 1).min(last))));
        }
        let link = (!links.is_empty()).then(|| ("link".to_owned(), links.join(", ")));
        (start..end, link)
    }
}

fn same_repo(run: &CheckRun, owner: &str, repo: &str) -> bool {
    // GitHub's owner and repository names are case-insensitive.
    run.owner.eq_ignore_ascii_case(owner) && run.repo.eq_ignore_ascii_case(repo)
}

/// `status`, or `completed/<conclusion>`.
fn state_label(run: &CheckRun) -> String {
    match &run.conclusion {
        Some(conclusion) if run.status == "completed" => format!("completed/{conclusion}"),
        _ => run.status.clone(),
    }
}

fn run_json(base: &str, stored: &Stored) -> Value {
    let run = &stored.run;
    let url = format!(
        "{base}/repos/{}/{}/check-runs/{}",
        run.owner, run.repo, run.id
    );
    json!({
        "id": run.id,
        "node_id": format!("CR_{}", run.id),
        "head_sha": run.head_sha,
        "external_id": run.external_id,
        "url": url,
        "html_url": format!("https://github.com/{}/{}/runs/{}", run.owner, run.repo, run.id),
        "details_url": run.details_url,
        "status": run.status,
        "conclusion": run.conclusion,
        "started_at": run.started_at,
        "completed_at": run.completed_at,
        "output": {
            "title": run.title,
            "summary": run.summary,
            "text": stored.text,
            "annotations_count": run.annotations.len(),
            "annotations_url": format!("{url}/annotations"),
        },
        "name": run.name,
        "check_suite": {"id": 1},
        "app": null,
        "pull_requests": [],
    })
}

fn respond(answer: &Answer, remaining: u64, reset: u64) -> Response<Body> {
    let status = StatusCode::from_u16(answer.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let mut response = Response::new(Body::from(answer.body.to_string()));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json; charset=utf-8"),
    );
    let usual = [
        ("x-ratelimit-limit".to_owned(), RATE_LIMIT.to_string()),
        ("x-ratelimit-remaining".to_owned(), remaining.to_string()),
        ("x-ratelimit-reset".to_owned(), reset.to_string()),
        (
            "x-ratelimit-used".to_owned(),
            (RATE_LIMIT - remaining).to_string(),
        ),
        ("x-ratelimit-resource".to_owned(), "core".to_owned()),
        (
            "x-github-media-type".to_owned(),
            "github.v3; format=json".to_owned(),
        ),
    ];
    let chosen: Vec<(String, String)> = match &answer.injected {
        Some(injected) => injected.clone(),
        None => usual.into_iter().chain(answer.extra.clone()).collect(),
    };
    for (name, value) in chosen {
        // A header a test cannot have meant (not a valid name or value) is left out.
        if let (Ok(name), Ok(value)) = (
            HeaderName::try_from(name.as_str()),
            HeaderValue::try_from(value.as_str()),
        ) {
            headers.append(name, value);
        }
    }
    response
}

/// The verbose line for one request.
fn describe(method: &str, path: &str, query: &str, body: &Value, answer: &Answer) -> String {
    let mut line = format!("github: {method} {path}");
    if !query.is_empty() {
        let _ = write!(line, "?{query}");
    }
    for key in ["name", "status", "conclusion", "external_id"] {
        if let Some(value) = body.get(key).and_then(Value::as_str) {
            let _ = write!(line, " {key}={value}");
        }
    }
    if let Some(title) = body.pointer("/output/title").and_then(Value::as_str) {
        let _ = write!(line, " title={title:?}");
    }
    let mut details = String::new();
    if let Some(annotations) = body
        .pointer("/output/annotations")
        .and_then(Value::as_array)
    {
        let _ = write!(line, " +{} annotations", annotations.len());
        for a in annotations.iter().take(3) {
            let _ = write!(
                details,
                "\n    {} {}:{} {}",
                a["annotation_level"].as_str().unwrap_or_default(),
                a["path"].as_str().unwrap_or_default(),
                a["start_line"],
                a["title"].as_str().unwrap_or_default()
            );
        }
        if annotations.len() > 3 {
            let _ = write!(details, "\n    ...");
        }
    }
    let _ = write!(line, " -> {}", answer.status);
    if answer.injected.is_some() {
        line.push_str(" (injected)");
    } else if let Some(id) = answer.body.get("id").and_then(Value::as_i64) {
        let _ = write!(line, " id={id}");
    } else if let Some(count) = answer.body.get("total_count").and_then(Value::as_u64) {
        let _ = write!(line, " total_count={count}");
    }
    line.push_str(&details);
    line
}

/// The body as JSON, `Null` when empty, `Err` when it is not JSON.
fn parse_body(body: &[u8]) -> Result<Value, ()> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(Value::Null);
    }
    serde_json::from_slice(body).map_err(|_| ())
}

/// Whether `token` looks like a GitHub App JWT: three base64url parts, header and claims JSON
/// objects, a signature, and not expired.
fn is_app_jwt(token: &str, now: u64) -> bool {
    let parts: Vec<&str> = token.split('.').collect();
    let [head, claims, signature] = parts.as_slice() else {
        return false;
    };
    let object = |part: &str| {
        URL_SAFE_NO_PAD
            .decode(part.trim_end_matches('='))
            .ok()
            .and_then(|bytes| serde_json::from_slice::<Value>(&bytes).ok())
            .filter(Value::is_object)
    };
    let (Some(_), Some(claims)) = (object(head), object(claims)) else {
        return false;
    };
    !signature.is_empty()
        && claims
            .get("exp")
            .and_then(Value::as_u64)
            .is_none_or(|exp| exp > now)
}

/// Whether `time` is an ISO 8601 timestamp as GitHub takes them: `YYYY-MM-DDTHH:MM:SS`, an
/// optional fraction, then `Z` or an offset.
fn is_timestamp(time: &str) -> bool {
    let bytes = time.as_bytes();
    let shape = b"0000-00-00T00:00:00";
    if bytes.len() < shape.len() {
        return false;
    }
    let (date, rest) = bytes.split_at(shape.len());
    let date_ok = date.iter().zip(shape).all(|(b, s)| match s {
        b'0' => b.is_ascii_digit(),
        b'T' => b.eq_ignore_ascii_case(&b'T'),
        other => b == other,
    });
    let rest = match rest.strip_prefix(b".") {
        Some(fraction) => {
            let digits = fraction.iter().take_while(|b| b.is_ascii_digit()).count();
            if digits == 0 {
                return false;
            }
            &fraction[digits..]
        }
        None => rest,
    };
    let zone_ok = match rest {
        b"Z" | b"z" => true,
        [b'+' | b'-', h1, h2, b':', m1, m2] => [h1, h2, m1, m2].iter().all(|b| b.is_ascii_digit()),
        _ => false,
    };
    date_ok && zone_ok
}

/// Decodes `%XX` escapes in a path segment (a `+` stays a `+`).
fn percent_decode(segment: &str) -> String {
    let bytes = segment.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && let Some(byte) = bytes
                .get(i + 1..i + 3)
                .and_then(|hex| std::str::from_utf8(hex).ok())
                .and_then(|hex| u8::from_str_radix(hex, 16).ok())
        {
            out.push(byte);
            i += 3;
            continue;
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// `secs` since the epoch as `YYYY-MM-DDTHH:MM:SSZ`.
fn format_utc(secs: u64) -> String {
    let days = i64::try_from(secs / 86_400).unwrap_or(i64::MAX / 2);
    let of_day = secs % 86_400;
    let (year, month, day) = civil_from_days(days);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        of_day / 3600,
        of_day % 3600 / 60,
        of_day % 60
    )
}

/// The proleptic Gregorian date `days` after 1970-01-01 (Howard Hinnant's `civil_from_days`).
fn civil_from_days(days: i64) -> (i64, i64, i64) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let day_of_era = z.rem_euclid(146_097);
    let year_of_era =
        (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let mp = (5 * day_of_year + 2) / 153;
    let day = day_of_year - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_are_formatted_as_github_writes_them() {
        assert_eq!(format_utc(0), "1970-01-01T00:00:00Z");
        assert_eq!(format_utc(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(format_utc(1_767_225_599), "2025-12-31T23:59:59Z");
        assert_eq!(format_utc(4_107_542_400), "2100-03-01T00:00:00Z");
    }

    #[test]
    fn timestamps_are_recognised_with_zone_and_fraction() {
        assert!(is_timestamp("2026-01-02T03:04:05Z"));
        assert!(is_timestamp("2026-01-02T03:04:05.123+02:00"));
        assert!(!is_timestamp("2026-01-02 03:04:05"));
        assert!(!is_timestamp("yesterday"));
    }

    #[test]
    fn path_segments_are_percent_decoded_but_plus_is_kept() {
        assert_eq!(percent_decode("gatehouse%2Fkics"), "gatehouse/kics");
        assert_eq!(percent_decode("a+b%"), "a+b%");
    }
}
