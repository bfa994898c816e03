//! The request log: every request as a real API server's authorizer sees it. Who asked (the
//! bearer token's user), and the RBAC request attributes the apiserver derives from the path,
//! method and query (`k8s.io/apiserver/pkg/endpoints/request.RequestInfoFactory`): verb in RBAC
//! terms, API group, resource, subresource, namespace, name. A server-side apply that creates its
//! object is authorised a second time as `create` (`handlers/patch.go`,
//! `createAuthorizerAttributes`), and is logged twice. It records only; nothing is refused.

use std::collections::HashMap;

use axum::http::{HeaderMap, Method, header};

/// One authorisation a request needed, as the emulator received it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RequestRecord {
    /// The user of the request's bearer token (`KubeEmulator::kubeconfig_as`,
    /// `KubeEmulator::client_as`); `None` without one (the test's own client).
    pub user: Option<String>,
    /// Whether this is a resource request (RBAC `resources`) rather than a non-resource URL
    /// (discovery, `/version`: RBAC `nonResourceURLs`).
    pub resource_request: bool,
    /// Verb in RBAC terms: get, list, watch, create, update, patch, delete, deletecollection.
    pub verb: String,
    /// API group (`""` for the core group).
    pub api_group: String,
    /// Resource (plural), `""` for a non-resource request.
    pub resource: String,
    /// Subresource (`status`), `""` when none.
    pub subresource: String,
    /// Namespace, `None` for a cluster-wide request (a cluster-scoped resource, or a list or
    /// watch across all namespaces).
    pub namespace: Option<String>,
    /// Name of the object, when the request names one: in the path, or in a list's or watch's
    /// `metadata.name` field selector (which RBAC `resourceNames` match, as on a real server).
    pub name: Option<String>,
    /// The request path (for a non-resource request, what RBAC matches).
    pub path: String,
    /// HTTP method.
    pub method: String,
    /// HTTP status the emulator answered (200 for a watch that started).
    pub status: u16,
    /// Set on the second record of a server-side apply that created its object: the `create`
    /// a real server also authorises.
    pub created_by_apply: bool,
}

impl RequestRecord {
    /// `verb group/resource[/subresource] [name] in namespace`, for messages.
    pub fn describe(&self) -> String {
        if !self.resource_request {
            return format!("{} {} (non-resource URL)", self.verb, self.path);
        }
        let group = if self.api_group.is_empty() {
            "core"
        } else {
            &self.api_group
        };
        let sub = if self.subresource.is_empty() {
            String::new()
        } else {
            format!("/{}", self.subresource)
        };
        let name = self
            .name
            .as_deref()
            .map_or_else(String::new, |n| format!(" {n:?}"));
        let place = self
            .namespace
            .as_deref()
            .map_or_else(|| "cluster-wide".to_owned(), |n| format!("in {n}"));
        let apply = if self.created_by_apply {
            " (server-side apply that created it)"
        } else {
            ""
        };
        format!(
            "{} {group} {}{sub}{name} {place}{apply}",
            self.verb, self.resource
        )
    }
}

/// The user a request authenticates as: its bearer token, which the emulator takes as the
/// user's name (any token is valid).
pub(crate) fn user(headers: &HeaderMap) -> Option<String> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim().to_owned())
        .filter(|t| !t.is_empty())
}

/// The request's attributes as the apiserver's `RequestInfoFactory` derives them; `status` 0
/// until the answer is known.
pub(crate) fn attributes(
    method: &Method,
    path: &str,
    query: &HashMap<String, String>,
    user: Option<&str>,
) -> RequestRecord {
    let record = |resource_request: bool, verb: &str| RequestRecord {
        user: user.map(str::to_owned),
        resource_request,
        verb: verb.to_owned(),
        api_group: String::new(),
        resource: String::new(),
        subresource: String::new(),
        namespace: None,
        name: None,
        path: path.to_owned(),
        method: method.to_string(),
        status: 0,
        created_by_apply: false,
    };
    let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
    let (group, rest) = match segments.as_slice() {
        ["api", _version, rest @ ..] if !rest.is_empty() => ("", rest),
        ["apis", group, _version, rest @ ..] if !rest.is_empty() => (*group, rest),
        // Non-resource URLs are authorised by the lower-case HTTP method (HEAD as get).
        _ if *method == Method::HEAD => return record(false, "get"),
        _ => return record(false, &method.as_str().to_ascii_lowercase()),
    };
    let verb = match *method {
        Method::POST => "create",
        Method::GET | Method::HEAD => "get",
        Method::PUT => "update",
        Method::PATCH => "patch",
        Method::DELETE => "delete",
        _ => "",
    };
    // The deprecated `/watch/` prefix.
    let (verb, rest) = match rest {
        ["watch", rest @ ..] => ("watch", rest),
        rest => (verb, rest),
    };
    // `namespaces/<ns>` alone is the namespace object itself; with more, a namespaced resource.
    let (namespace, rest) = match rest {
        ["namespaces", ns, rest @ ..] if !rest.is_empty() => (Some((*ns).to_owned()), rest),
        rest => (None, rest),
    };
    let mut name = rest.get(1).map(|n| (*n).to_owned());
    let verb = match verb {
        "get" if name.is_none() && flag(query, "watch") => "watch",
        "get" if name.is_none() => "list",
        "delete" if name.is_none() => "deletecollection",
        verb => verb,
    };
    if name.is_none() && matches!(verb, "list" | "watch") {
        name = query.get("fieldSelector").and_then(|s| exact_name(s));
    }
    RequestRecord {
        api_group: group.to_owned(),
        resource: rest.first().map_or("", |r| *r).to_owned(),
        subresource: rest.get(2).map_or("", |s| *s).to_owned(),
        namespace,
        name,
        ..record(true, verb)
    }
}

/// The name a field selector requires exactly (`metadata.name=x` or `==x` as one of its terms).
fn exact_name(selector: &str) -> Option<String> {
    selector.split(',').find_map(|term| {
        let value = term
            .trim()
            .strip_prefix("metadata.name")?
            .trim_start()
            .strip_prefix('=')?;
        let value = value.strip_prefix('=').unwrap_or(value).trim();
        (!value.is_empty()).then(|| value.to_owned())
    })
}

fn flag(query: &HashMap<String, String>, key: &str) -> bool {
    query
        .get(key)
        .is_some_and(|v| matches!(v.as_str(), "true" | "1" | "t" | "T" | "TRUE" | "True"))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn of(method: &Method, path_and_query: &str) -> RequestRecord {
        let (path, query) = path_and_query
            .split_once('?')
            .unwrap_or((path_and_query, ""));
        let query = form_urlencoded::parse(query.as_bytes())
            .into_owned()
            .collect();
        attributes(method, path, &query, None)
    }

    #[test]
    fn paths_and_methods_become_the_rbac_attributes_a_real_api_server_derives() {
        let r = of(
            &Method::GET,
            "/apis/batch/v1/namespaces/ns/jobs?labelSelector=a%3Db",
        );
        assert_eq!(
            (r.verb.as_str(), r.api_group.as_str(), r.resource.as_str()),
            ("list", "batch", "jobs")
        );
        assert_eq!(r.namespace.as_deref(), Some("ns"));
        assert_eq!(r.name, None);
        let r = of(
            &Method::GET,
            "/apis/gatehouse.dev/v1alpha1/scanpolicies?watch=true",
        );
        assert_eq!((r.verb.as_str(), r.namespace), ("watch", None));
        let r = of(
            &Method::GET,
            "/apis/coordination.k8s.io/v1/namespaces/g/leases?watch=1&fieldSelector=metadata.name%3Dlead",
        );
        assert_eq!(
            (r.verb.as_str(), r.name.as_deref()),
            ("watch", Some("lead"))
        );
        let r = of(
            &Method::PATCH,
            "/apis/gatehouse.dev/v1alpha1/namespaces/ns/scanrequests/sr/status",
        );
        assert_eq!(
            (r.verb.as_str(), r.resource.as_str(), r.subresource.as_str()),
            ("patch", "scanrequests", "status")
        );
        assert_eq!(r.name.as_deref(), Some("sr"));
        assert_eq!(
            of(&Method::POST, "/api/v1/namespaces/ns/secrets").verb,
            "create"
        );
        assert_eq!(
            of(&Method::PUT, "/api/v1/namespaces/ns/secrets/s").verb,
            "update"
        );
        assert_eq!(
            of(&Method::DELETE, "/api/v1/namespaces/ns/pods/p").verb,
            "delete"
        );
        assert_eq!(
            of(&Method::DELETE, "/api/v1/namespaces/ns/pods").verb,
            "deletecollection"
        );
        let r = of(&Method::GET, "/api/v1/namespaces/ns");
        assert_eq!(
            (r.resource.as_str(), r.name.as_deref(), r.namespace),
            ("namespaces", Some("ns"), None)
        );
        let r = of(
            &Method::GET,
            "/apis/apiextensions.k8s.io/v1/customresourcedefinitions/x.y",
        );
        assert_eq!((r.verb.as_str(), r.namespace), ("get", None));
        let r = of(&Method::GET, "/apis/batch/v1");
        assert!(!r.resource_request);
        assert_eq!(r.verb, "get");
    }

    #[test]
    fn a_field_selector_names_the_object_only_by_an_exact_name() {
        assert_eq!(exact_name("metadata.name==a,x=y"), Some("a".to_owned()));
        assert_eq!(exact_name("x=y,metadata.name=b"), Some("b".to_owned()));
        assert_eq!(exact_name("metadata.name!=a"), None);
        assert_eq!(exact_name("metadata.namespace=a"), None);
    }
}
