//! The HTTP side of the emulator: routes Kubernetes REST paths to the store, streams watches as
//! newline-delimited JSON, serves discovery and `Table` responses, records every request (who,
//! and its RBAC attributes) and every write, and injects the failures a test asked for.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::http::{HeaderMap, HeaderValue, Method, Response, StatusCode, Uri, header};
use bytes::Bytes;
use serde_json::{Value, json};
use tokio::time::Instant;

use super::error::ApiError;
use super::resource::Propagation;
use super::selector::{FieldSelector, LabelSelector};
use super::store::{DeleteOptions, EventType, FieldValidation, PatchRequest, TypeId, WriteContext};
use super::table;
use super::{RequestRecord, Shared, WriteRecord};

type Query = HashMap<String, String>;

pub(crate) fn handle(
    shared: &Arc<Shared>,
    method: &Method,
    uri: &Uri,
    headers: &HeaderMap,
    body: &Bytes,
) -> Response<Body> {
    let path = uri.path().to_owned();
    let query: Query = form_urlencoded::parse(uri.query().unwrap_or("").as_bytes())
        .into_owned()
        .collect();
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned();
    let accept = headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned();

    let user_agent = headers
        .get(header::USER_AGENT)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let mut record = super::requests::attributes(
        method,
        &path,
        &query,
        super::requests::user(headers).as_deref(),
    );
    let injected = shared.take_failure(method.as_str(), &path, false);
    let mut ctx = WriteContext::default();
    let result = match injected {
        Some(error) => Err(error),
        None => write_context(method, &query, user_agent).and_then(|c| {
            ctx = c;
            route(
                shared,
                method,
                &path,
                &query,
                &content_type,
                &accept,
                body,
                &mut ctx,
            )
        }),
    };
    // Served, but the client hears of an error (see `fail_next_answer`).
    let result = match result {
        Ok(reply) => shared
            .take_failure(method.as_str(), &path, true)
            .map_or(Ok(reply), Err),
        failed => failed,
    };
    let mut response = match result {
        Ok(Reply::Json(code, value)) => json_response(code, &value),
        Ok(Reply::Stream(body)) => Response::builder()
            .status(StatusCode::OK)
            .header(header::CONTENT_TYPE, "application/json")
            .body(body)
            .unwrap_or_default(),
        Err(error) => error_response(&error),
    };
    for warning in &ctx.warnings {
        let text = format!("299 - {}", serde_json::Value::String(warning.clone()));
        if let Ok(value) = HeaderValue::from_str(&text) {
            response.headers_mut().append(header::WARNING, value);
        }
    }
    record.status = response.status().as_u16();
    // A server-side apply that created its object was authorised as `create` too.
    let created_by_apply = (*method == Method::PATCH && ctx.created).then(|| RequestRecord {
        verb: "create".to_owned(),
        created_by_apply: true,
        ..record.clone()
    });
    shared.log_request(record);
    if let Some(create) = created_by_apply {
        shared.log_request(create);
    }
    if *method != Method::GET {
        shared.log_write(WriteRecord {
            method: method.to_string(),
            path,
            query: uri.query().unwrap_or("").to_owned(),
            content_type,
            body: parse_body(body),
            status: response.status().as_u16(),
            warnings: ctx.warnings.clone(),
        });
    }
    response
}

enum Reply {
    Json(u16, Value),
    Stream(Body),
}

fn json_response(code: u16, value: &Value) -> Response<Body> {
    Response::builder()
        .status(StatusCode::from_u16(code).unwrap_or(StatusCode::OK))
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from(value.to_string()))
        .unwrap_or_default()
}

fn error_response(error: &ApiError) -> Response<Body> {
    let mut response = json_response(error.code, &error.status());
    if let Some(seconds) = error.retry_after {
        response
            .headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from(seconds));
    }
    response
}

fn parse_body(body: &[u8]) -> Value {
    if body.is_empty() {
        return Value::Null;
    }
    serde_json::from_slice(body)
        .or_else(|_| serde_yaml::from_slice(body))
        .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(body).into_owned()))
}

/// A parsed resource path.
struct Target {
    type_id: TypeId,
    namespace: Option<String>,
    name: Option<String>,
    subresource: Option<String>,
}

fn parse_target(shared: &Shared, path: &str) -> Result<Target, ApiError> {
    let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
    let (group, version, rest) = match segments.as_slice() {
        ["api", version, rest @ ..] => ("", *version, rest),
        ["apis", group, version, rest @ ..] => (*group, *version, rest),
        _ => return Err(not_found_path()),
    };
    let (namespace, rest) = match rest {
        ["namespaces", ns, rest @ ..] if !rest.is_empty() => (Some((*ns).to_owned()), rest),
        _ => (None, rest),
    };
    let (plural, name, subresource) = match rest {
        [plural] => (*plural, None, None),
        [plural, name] => (*plural, Some((*name).to_owned()), None),
        [plural, name, sub] => (*plural, Some((*name).to_owned()), Some((*sub).to_owned())),
        _ => return Err(not_found_path()),
    };
    let store = shared.lock();
    let type_id = store
        .find_type(group, version, plural)
        .ok_or_else(not_found_path)?;
    let rt = &store.types[type_id];
    if name.is_some() && rt.namespaced && namespace.is_none() {
        return Err(not_found_path());
    }
    if let Some(sub) = &subresource
        && !(sub == "status" && rt.status_subresource)
    {
        return Err(not_found_path());
    }
    Ok(Target {
        type_id,
        namespace: if rt.namespaced { namespace } else { None },
        name,
        subresource,
    })
}

fn not_found_path() -> ApiError {
    ApiError::new(
        404,
        "NotFound",
        "the server could not find the requested resource",
    )
}

fn flag(query: &Query, key: &str) -> bool {
    query.get(key).is_some_and(|v| v == "true" || v == "1")
}

/// The options every write carries: field manager (explicit, or the User-Agent's product as
/// the apiserver defaults it), `fieldValidation`, `dryRun`, `force`.
fn write_context(
    method: &Method,
    query: &Query,
    user_agent: &str,
) -> Result<WriteContext, ApiError> {
    // Bad options are invalid options objects (422), as the apiserver validates them.
    let options = match *method {
        Method::POST => "CreateOptions",
        Method::PUT => "UpdateOptions",
        Method::DELETE => "DeleteOptions",
        _ => "PatchOptions",
    };
    let invalid_option = |detail: String| {
        ApiError::new(
            422,
            "Invalid",
            format!("{options}.meta.k8s.io \"\" is invalid: {detail}"),
        )
    };
    let explicit = query.get("fieldManager").filter(|m| !m.is_empty());
    let manager = match explicit {
        Some(m) => m.clone(),
        None => {
            // As the apiserver's prefixFromUserAgent: empty without a User-Agent.
            user_agent
                .split('/')
                .next()
                .unwrap_or("")
                .chars()
                .filter(|c| !c.is_control())
                .take(128)
                .collect()
        }
    };
    if manager.len() > 128 || !manager.chars().all(|c| c.is_ascii_graphic() || c == ' ') {
        return Err(ApiError::new(
            422,
            "Invalid",
            format!(
                "fieldManager: Invalid value: {manager:?}: must be at most 128 printable ASCII characters"
            ),
        ));
    }
    let validation = match query.get("fieldValidation").map(String::as_str) {
        None | Some("" | "Warn") => FieldValidation::Warn,
        Some("Ignore") => FieldValidation::Ignore,
        Some("Strict") => FieldValidation::Strict,
        Some(other) => {
            return Err(invalid_option(format!(
                "fieldValidation: Unsupported value: {other:?}: supported values: \"Ignore\", \"Strict\", \"Warn\""
            )));
        }
    };
    let dry_run = match query.get("dryRun").map(String::as_str) {
        None | Some("") => false,
        Some("All") => true,
        Some(other) => {
            return Err(invalid_option(format!(
                "dryRun: Unsupported value: {other:?}: supported values: \"All\""
            )));
        }
    };
    Ok(WriteContext {
        manager,
        explicit_manager: explicit.is_some(),
        validation,
        dry_run,
        force: flag(query, "force"),
        force_given: query.contains_key("force"),
        warnings: Vec::new(),
        created: false,
    })
}

#[allow(clippy::too_many_arguments)]
fn route(
    shared: &Arc<Shared>,
    method: &Method,
    path: &str,
    query: &Query,
    content_type: &str,
    accept: &str,
    body: &Bytes,
    ctx: &mut WriteContext,
) -> Result<Reply, ApiError> {
    if *method == Method::GET
        && let Some(value) = super::discovery::serve(shared, path)
    {
        return Ok(Reply::Json(200, value));
    }
    let target = parse_target(shared, path)?;
    let ns = target.namespace.clone().unwrap_or_default();
    let status = target.subresource.as_deref() == Some("status");
    match (method.clone(), target.name.as_deref()) {
        (Method::GET, None) if flag(query, "watch") => {
            Ok(Reply::Stream(watch(shared, &target, query)?))
        }
        (Method::GET, None) => list(shared, &target, query, accept),
        (Method::GET, Some(name)) => {
            let store = shared.lock();
            let object = store.get(target.type_id, &ns, name)?;
            if table::wants_table(accept) {
                let list = json!({"metadata": {"resourceVersion": store.current_rv().to_string()}, "items": [object]});
                return Ok(Reply::Json(
                    200,
                    table::list_table(&store.types[target.type_id], &list),
                ));
            }
            Ok(Reply::Json(200, object))
        }
        (Method::POST, None) if status => Err(ApiError::new(
            405,
            "MethodNotAllowed",
            format!("POST is not supported on {path}"),
        )),
        (Method::POST, None) => {
            let body = parse_json(body)?;
            let created = shared.write(|s| s.create(target.type_id, &ns, body, ctx))?;
            Ok(Reply::Json(201, created))
        }
        (Method::PUT, Some(name)) => {
            let body = parse_json(body)?;
            let updated =
                shared.write(|s| s.update(target.type_id, &ns, name, body, status, ctx))?;
            Ok(Reply::Json(200, updated))
        }
        (Method::PATCH, Some(name)) => {
            let request = PatchRequest {
                content_type,
                body,
                status,
            };
            let patched = shared.write(|s| s.patch(target.type_id, &ns, name, &request, ctx))?;
            // An apply that created the object answers 201, as on a real server.
            Ok(Reply::Json(if ctx.created { 201 } else { 200 }, patched))
        }
        (Method::DELETE, Some(name)) => {
            let options = delete_options(query, body)?;
            let deleted = shared.write(|s| s.delete(target.type_id, &ns, name, &options))?;
            let rt = shared.lock().types[target.type_id].clone();
            Ok(Reply::Json(200, deleted.answer(&rt)))
        }
        (Method::DELETE, None) => delete_collection(shared, &target, query, body),
        _ => Err(ApiError::new(
            405,
            "MethodNotAllowed",
            format!("{method} is not supported on {path}"),
        )),
    }
}

fn list(shared: &Shared, target: &Target, query: &Query, accept: &str) -> Result<Reply, ApiError> {
    let labels = LabelSelector::parse(query.get("labelSelector").map_or("", String::as_str))
        .map_err(ApiError::bad_request_msg)?;
    let fields = FieldSelector::parse(query.get("fieldSelector").map_or("", String::as_str))
        .map_err(ApiError::bad_request_msg)?;
    let limit = query.get("limit").and_then(|l| l.parse().ok());
    let mut store = shared.lock();
    let list = store.list(
        target.type_id,
        target.namespace.as_deref(),
        &labels,
        &fields,
        limit,
        query
            .get("continue")
            .map(String::as_str)
            .filter(|c| !c.is_empty()),
    )?;
    if table::wants_table(accept) {
        return Ok(Reply::Json(
            200,
            table::list_table(&store.types[target.type_id], &list),
        ));
    }
    Ok(Reply::Json(200, list))
}

fn delete_collection(
    shared: &Shared,
    target: &Target,
    query: &Query,
    body: &[u8],
) -> Result<Reply, ApiError> {
    let options = delete_options(query, body)?;
    let labels = LabelSelector::parse(query.get("labelSelector").map_or("", String::as_str))
        .map_err(ApiError::bad_request_msg)?;
    let fields = FieldSelector::parse(query.get("fieldSelector").map_or("", String::as_str))
        .map_err(ApiError::bad_request_msg)?;
    let deleted = shared.write(|s| {
        let keys: Vec<(String, String)> = s
            .objects_of(target.type_id, target.namespace.as_deref())
            .into_iter()
            .filter(|o| labels.matches(o) && fields.matches(o))
            .map(|o| {
                let meta = |f: &str| {
                    o.pointer(&format!("/metadata/{f}"))
                        .and_then(Value::as_str)
                        .unwrap_or("")
                        .to_owned()
                };
                (meta("namespace"), meta("name"))
            })
            .collect();
        keys.iter()
            .map(|(ns, name)| {
                s.delete(target.type_id, ns, name, &options)
                    .map(|d| d.object)
            })
            .collect::<Result<Vec<_>, _>>()
    })?;
    let rt = shared.lock().types[target.type_id].clone();
    Ok(Reply::Json(
        200,
        json!({"kind": format!("{}List", rt.kind), "apiVersion": rt.api_version(), "metadata": {}, "items": deleted}),
    ))
}

impl ApiError {
    fn bad_request_msg(message: String) -> ApiError {
        ApiError::new(400, "BadRequest", message)
    }
}

fn parse_json(body: &[u8]) -> Result<Value, ApiError> {
    serde_json::from_slice(body).map_err(|e| {
        ApiError::new(
            400,
            "BadRequest",
            format!("error decoding request body: {e}"),
        )
    })
}

fn delete_options(query: &Query, body: &[u8]) -> Result<DeleteOptions, ApiError> {
    let body: Value = if body.is_empty() {
        Value::Null
    } else {
        parse_json(body)?
    };
    let propagation = query
        .get("propagationPolicy")
        .map(String::as_str)
        .or_else(|| body.get("propagationPolicy").and_then(Value::as_str));
    let propagation = match propagation {
        None => None,
        Some(p) => Some(Propagation::parse(p).ok_or_else(|| {
            ApiError::new(
                422,
                "Invalid",
                format!("propagationPolicy: Unsupported value: {p:?}"),
            )
        })?),
    };
    let text = |pointer: &str| {
        body.pointer(pointer)
            .and_then(Value::as_str)
            .map(str::to_owned)
    };
    Ok(DeleteOptions {
        propagation,
        precondition_uid: text("/preconditions/uid"),
        precondition_rv: text("/preconditions/resourceVersion"),
        dry_run: query.get("dryRun").is_some_and(|v| v == "All")
            || body
                .get("dryRun")
                .and_then(Value::as_array)
                .is_some_and(|a| a.iter().any(|v| v == "All")),
    })
}

/// State of one watch stream.
struct Watch {
    shared: Arc<Shared>,
    path: String,
    type_id: TypeId,
    namespace: Option<String>,
    labels: LabelSelector,
    fields: FieldSelector,
    cursor: u64,
    deadline: Instant,
    bookmarks: bool,
    next_bookmark: Instant,
    pending: VecDeque<Bytes>,
    done: bool,
    changes: tokio::sync::watch::Receiver<u64>,
}

fn watch(shared: &Arc<Shared>, target: &Target, query: &Query) -> Result<Body, ApiError> {
    let labels = LabelSelector::parse(query.get("labelSelector").map_or("", String::as_str))
        .map_err(ApiError::bad_request_msg)?;
    let fields = FieldSelector::parse(query.get("fieldSelector").map_or("", String::as_str))
        .map_err(ApiError::bad_request_msg)?;
    let timeout = query
        .get("timeoutSeconds")
        .and_then(|t| t.parse().ok())
        .map_or(Duration::from_secs(1800), Duration::from_secs);
    let bookmarks = flag(query, "allowWatchBookmarks");
    let send_initial = flag(query, "sendInitialEvents");
    let rv = query.get("resourceVersion").map_or("", String::as_str);
    let now = Instant::now();
    let mut changes = shared.changes.subscribe();
    changes.borrow_and_update();

    let mut pending = VecDeque::new();
    let mut done = false;
    let store = shared.lock();
    let rt = store.types[target.type_id].clone();
    let cursor = if rv.is_empty() || rv == "0" || send_initial {
        for object in store.objects_of(target.type_id, target.namespace.as_deref()) {
            if labels.matches(object) && fields.matches(object) {
                pending.push_back(line("ADDED", object));
            }
        }
        if send_initial {
            let mut mark = bookmark(&rt.kind, &rt.api_version(), store.current_rv());
            mark["metadata"]["annotations"] = json!({"k8s.io/initial-events-end": "true"});
            pending.push_back(line("BOOKMARK", &mark));
        }
        store.current_rv()
    } else {
        let requested: u64 = rv.parse().map_err(|_| {
            ApiError::new(400, "BadRequest", format!("invalid resourceVersion {rv:?}"))
        })?;
        if let Err(gone) = store.events_since(requested) {
            // Like the apiserver: 200, then one ERROR event carrying the 410, then the end.
            pending.push_back(line("ERROR", &gone.status()));
            done = true;
        }
        requested
    };
    drop(store);

    let state = Watch {
        shared: Arc::clone(shared),
        path: format!("/{}", target_path_hint(&rt, target)),
        type_id: target.type_id,
        namespace: target.namespace.clone(),
        labels,
        fields,
        cursor,
        deadline: now + timeout,
        bookmarks,
        next_bookmark: now + shared.bookmark_interval,
        pending,
        done,
        changes,
    };
    let stream = futures::stream::unfold(state, |mut w| async move {
        next_line(&mut w)
            .await
            .map(|line| (Ok::<Bytes, std::io::Error>(line), w))
    });
    Ok(Body::from_stream(stream))
}

fn target_path_hint(rt: &super::resource::ResourceType, target: &Target) -> String {
    match &target.namespace {
        Some(ns) => format!("{}/namespaces/{ns}/{}", rt.api_version(), rt.plural),
        None => format!("{}/{}", rt.api_version(), rt.plural),
    }
}

fn line(kind: &str, object: &Value) -> Bytes {
    let mut text = json!({"type": kind, "object": object}).to_string();
    text.push('\n');
    Bytes::from(text)
}

fn bookmark(kind: &str, api_version: &str, rv: u64) -> Value {
    json!({"kind": kind, "apiVersion": api_version, "metadata": {"resourceVersion": rv.to_string()}})
}

async fn next_line(w: &mut Watch) -> Option<Bytes> {
    loop {
        if let Some(line) = w.pending.pop_front() {
            return Some(line);
        }
        if w.done || Instant::now() >= w.deadline {
            return None;
        }
        w.changes.borrow_and_update();
        let stalled = w.shared.is_stalled(&w.path);
        if !stalled {
            let store = w.shared.lock();
            match store.events_since(w.cursor) {
                Err(gone) => {
                    w.pending.push_back(line("ERROR", &gone.status()));
                    w.done = true;
                }
                Ok(events) => {
                    for event in events {
                        w.cursor = w.cursor.max(event.rv);
                        if event.type_id != w.type_id {
                            continue;
                        }
                        let ns = event
                            .object
                            .pointer("/metadata/namespace")
                            .and_then(Value::as_str);
                        if w.namespace.as_deref().is_some_and(|want| Some(want) != ns) {
                            continue;
                        }
                        let selected = |o: &Value| w.labels.matches(o) && w.fields.matches(o);
                        let now_in = selected(&event.object);
                        let kind = match event.kind {
                            EventType::Modified => {
                                let was_in = event.old.as_ref().is_some_and(selected);
                                match (was_in, now_in) {
                                    (true, true) => Some(("MODIFIED", None)),
                                    (false, true) => Some(("ADDED", None)),
                                    // Like the watch cache: the object as it was when it still
                                    // matched, with the resourceVersion of the change.
                                    (true, false) => Some(("DELETED", event.old.clone())),
                                    (false, false) => None,
                                }
                            }
                            other => now_in.then_some((other.as_str(), None)),
                        };
                        if let Some((kind, replacement)) = kind {
                            let object = match replacement {
                                Some(mut old) => {
                                    if let Some(meta) =
                                        old.get_mut("metadata").and_then(Value::as_object_mut)
                                    {
                                        meta.insert(
                                            "resourceVersion".into(),
                                            json!(event.rv.to_string()),
                                        );
                                    }
                                    old
                                }
                                None => event.object.clone(),
                            };
                            w.pending.push_back(line(kind, &object));
                        }
                    }
                    w.cursor = w.cursor.max(store.current_rv());
                }
            }
            if !w.pending.is_empty() {
                continue;
            }
            if w.bookmarks && Instant::now() >= w.next_bookmark {
                let rt = &store.types[w.type_id];
                w.pending.push_back(line(
                    "BOOKMARK",
                    &bookmark(&rt.kind, &rt.api_version(), w.cursor),
                ));
                w.next_bookmark = Instant::now() + w.shared.bookmark_interval;
                continue;
            }
        }
        let wake = if w.bookmarks && !stalled {
            w.next_bookmark.min(w.deadline)
        } else {
            w.deadline
        };
        tokio::select! {
            changed = w.changes.changed() => {
                if changed.is_err() {
                    return None;
                }
            }
            () = tokio::time::sleep_until(wake) => {}
        }
    }
}
