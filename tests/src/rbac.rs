//! The Helm chart's RBAC, applied to the requests the Kubernetes API emulator logged, as a real
//! API server's RBAC authorizer applies it: the Roles and ClusterRoles that `helm template`
//! renders, bound by RoleBindings and ClusterRoleBindings to the ServiceAccounts the processes
//! run as (`kubeconfig_as`), and each logged request (verb, API group, resource/subresource,
//! name, namespace) allowed by a rule of one of them or denied. Also the reverse, as a report:
//! the rules a run never used.
//!
//! Matching follows `k8s.io/kubernetes/pkg/apis/rbac/v1` `RuleAllows` and the RBAC authorizer:
//! `*` in verbs, apiGroups and resources; `resource/subresource` and `*/subresource`;
//! `resourceNames` match only a request that names its object (a create through a collection
//! never does); a RoleBinding grants only in its namespace; ServiceAccounts are the users
//! `system:serviceaccount:<ns>:<name>` in the groups `system:serviceaccounts`,
//! `system:serviceaccounts:<ns>` and `system:authenticated`. The built-in `system:discovery` and
//! `system:public-info-viewer` ClusterRoles (bound to every authenticated user on a real
//! cluster) cover discovery URLs. Aggregated ClusterRoles are not modelled.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::Context as _;
use serde::Deserialize as _;
use serde_yaml::Value;

use crate::kube_emulator::RequestRecord;

/// The release namespace and name the chart is rendered with (`helm template gatehouse -n
/// gatehouse`).
pub const RELEASE_NAMESPACE: &str = "gatehouse";
/// The operator's ServiceAccount as the user a real API server sees.
pub const OPERATOR: &str = "system:serviceaccount:gatehouse:gatehouse-operator";
/// The webhook's ServiceAccount (ingest, and with `--role all` the receive role) as a user.
pub const WEBHOOK: &str = "system:serviceaccount:gatehouse:gatehouse-webhook";

/// The Kubernetes version the chart is rendered for.
const KUBE_VERSION: &str = "1.35.0";

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// helm, as `./scripts/install-chart-tools` installs it (`.tools/bin`, or
/// `$GATEHOUSE_TOOLS_DIR/bin`).
fn helm() -> anyhow::Result<PathBuf> {
    let dir = std::env::var_os("GATEHOUSE_TOOLS_DIR")
        .map_or_else(|| root().join(".tools"), PathBuf::from);
    let path = dir.join("bin").join("helm");
    anyhow::ensure!(
        path.exists(),
        "{} is missing: run ./scripts/install-chart-tools (./scripts/test does)",
        path.display()
    );
    Ok(path)
}

/// `helm template gatehouse charts/gatehouse --namespace gatehouse` with these extra arguments
/// (`--set watch.namespaces={a,b}`): the manifest.
pub fn render_chart(args: &[&str]) -> anyhow::Result<String> {
    let home = std::env::temp_dir().join("gatehouse-helm");
    let output = Command::new(helm()?)
        .args(["template", "gatehouse"])
        .arg(root().join("charts/gatehouse"))
        .args([
            "--namespace",
            RELEASE_NAMESPACE,
            "--kube-version",
            KUBE_VERSION,
        ])
        .args(args)
        .env("HELM_CACHE_HOME", &home)
        .env("HELM_CONFIG_HOME", &home)
        .env("HELM_DATA_HOME", &home)
        .output()
        .context("run helm template")?;
    anyhow::ensure!(
        output.status.success(),
        "helm template {args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    Ok(String::from_utf8(output.stdout)?)
}

/// One rule of a Role or ClusterRole.
#[derive(Clone, Debug, Default)]
struct Rule {
    verbs: Vec<String>,
    api_groups: Vec<String>,
    resources: Vec<String>,
    resource_names: Vec<String>,
    non_resource_urls: Vec<String>,
}

impl Rule {
    fn of(value: &Value) -> Rule {
        let list = |key: &str| -> Vec<String> {
            value[key]
                .as_sequence()
                .map(|s| {
                    s.iter()
                        .filter_map(|x| x.as_str().map(str::to_owned))
                        .collect()
                })
                .unwrap_or_default()
        };
        Rule {
            verbs: list("verbs"),
            api_groups: list("apiGroups"),
            resources: list("resources"),
            resource_names: list("resourceNames"),
            non_resource_urls: list("nonResourceURLs"),
        }
    }

    fn verb(&self, verb: &str) -> bool {
        self.verbs.iter().any(|v| v == "*" || v == verb)
    }

    fn allows(&self, r: &RequestRecord) -> bool {
        if !r.resource_request {
            return self.verb(&r.verb)
                && self.non_resource_urls.iter().any(|u| {
                    u == "*"
                        || u == &r.path
                        || u.strip_suffix('*').is_some_and(|p| r.path.starts_with(p))
                });
        }
        let combined = if r.subresource.is_empty() {
            r.resource.clone()
        } else {
            format!("{}/{}", r.resource, r.subresource)
        };
        self.verb(&r.verb)
            && self
                .api_groups
                .iter()
                .any(|g| g == "*" || g == &r.api_group)
            && self.resources.iter().any(|res| {
                res == "*"
                    || res == &combined
                    || (!r.subresource.is_empty() && res == &format!("*/{}", r.subresource))
            })
            && (self.resource_names.is_empty()
                || r.name
                    .as_ref()
                    .is_some_and(|n| self.resource_names.contains(n)))
    }

    /// Each (verb, group, resource) this rule grants, with its names, for the unused report.
    fn atoms(&self) -> Vec<String> {
        let names = if self.resource_names.is_empty() {
            String::new()
        } else {
            format!(" (resourceNames {})", self.resource_names.join(", "))
        };
        let mut atoms = Vec::new();
        for verb in &self.verbs {
            for group in &self.api_groups {
                for resource in &self.resources {
                    let group = if group.is_empty() { "core" } else { group };
                    atoms.push(format!("{verb} {group} {resource}{names}"));
                }
            }
            for url in &self.non_resource_urls {
                atoms.push(format!("{verb} {url}"));
            }
        }
        atoms
    }

    /// The rule narrowed to one atom: to see which atoms a request used.
    fn narrowed(&self) -> Vec<(String, Rule)> {
        let mut out = Vec::new();
        let atoms = self.atoms();
        let mut i = 0;
        for verb in &self.verbs {
            for group in &self.api_groups {
                for resource in &self.resources {
                    out.push((
                        atoms[i].clone(),
                        Rule {
                            verbs: vec![verb.clone()],
                            api_groups: vec![group.clone()],
                            resources: vec![resource.clone()],
                            resource_names: self.resource_names.clone(),
                            non_resource_urls: Vec::new(),
                        },
                    ));
                    i += 1;
                }
            }
            for url in &self.non_resource_urls {
                out.push((
                    atoms[i].clone(),
                    Rule {
                        verbs: vec![verb.clone()],
                        non_resource_urls: vec![url.clone()],
                        ..Rule::default()
                    },
                ));
                i += 1;
            }
        }
        out
    }
}

/// A role's rules granted to some subjects, in one namespace or cluster-wide.
#[derive(Clone, Debug)]
struct Grant {
    /// `ClusterRole gatehouse-operator`, `Role gatehouse-scans/gatehouse-operator`.
    role: String,
    /// The binding, for messages.
    binding: String,
    /// `None`: a ClusterRoleBinding (every namespace and cluster-scoped requests).
    namespace: Option<String>,
    subjects: Vec<Subject>,
    rules: Vec<Rule>,
    /// A built-in role of every cluster, not the chart's: left out of the unused report.
    builtin: bool,
}

#[derive(Clone, Debug)]
enum Subject {
    User(String),
    Group(String),
}

impl Grant {
    fn binds(&self, user: &str) -> bool {
        self.subjects.iter().any(|s| match s {
            Subject::User(u) => u == user,
            Subject::Group(g) => groups(user).contains(g),
        })
    }

    fn covers(&self, r: &RequestRecord) -> bool {
        match &self.namespace {
            None => true,
            Some(ns) => r.resource_request && r.namespace.as_ref() == Some(ns),
        }
    }
}

/// The groups a user is in, as a real API server authenticates a ServiceAccount token.
fn groups(user: &str) -> Vec<String> {
    let mut groups = vec!["system:authenticated".to_owned()];
    if let Some(rest) = user.strip_prefix("system:serviceaccount:")
        && let Some((ns, _)) = rest.split_once(':')
    {
        groups.push("system:serviceaccounts".to_owned());
        groups.push(format!("system:serviceaccounts:{ns}"));
    }
    groups
}

/// The RBAC objects of a rendered manifest, and the built-in discovery roles.
#[derive(Clone, Debug)]
pub struct Rbac {
    grants: Vec<Grant>,
}

/// What the logged requests of one user showed against the RBAC.
#[derive(Clone, Debug, Default)]
pub struct Findings {
    /// Requests no rule bound to the user allows (each described once), with how often.
    pub denied: BTreeMap<String, usize>,
    /// Requests that were allowed (each described once), with how often.
    pub allowed: BTreeMap<String, usize>,
    /// `role: atom` of every rule atom bound to the user that no request used.
    pub unused: Vec<String>,
}

impl Rbac {
    /// The Roles, ClusterRoles and their bindings in a manifest (`helm template` output).
    pub fn from_manifest(manifest: &str) -> anyhow::Result<Rbac> {
        let mut objects = Vec::new();
        for document in serde_yaml::Deserializer::from_str(manifest) {
            let value = Value::deserialize(document)?;
            if !value.is_null() {
                objects.push(value);
            }
        }
        let text = |v: &Value| v.as_str().unwrap_or_default().to_owned();
        let kind = |o: &Value| text(&o["kind"]);
        let mut role_rules: BTreeMap<String, Vec<Rule>> = BTreeMap::new();
        for o in objects
            .iter()
            .filter(|o| matches!(kind(o).as_str(), "Role" | "ClusterRole"))
        {
            anyhow::ensure!(
                o.get("aggregationRule").is_none(),
                "aggregated ClusterRoles are not modelled"
            );
            let namespace = if kind(o) == "Role" {
                text(&o["metadata"]["namespace"])
            } else {
                String::new()
            };
            let rules = o["rules"]
                .as_sequence()
                .map(|s| s.iter().map(Rule::of).collect())
                .unwrap_or_default();
            role_rules.insert(
                format!("{} {namespace}/{}", kind(o), text(&o["metadata"]["name"])),
                rules,
            );
        }
        let mut grants = builtin_grants();
        for o in objects
            .iter()
            .filter(|o| matches!(kind(o).as_str(), "RoleBinding" | "ClusterRoleBinding"))
        {
            let namespace = (kind(o) == "RoleBinding").then(|| text(&o["metadata"]["namespace"]));
            let role_kind = text(&o["roleRef"]["kind"]);
            let role_ns = if role_kind == "Role" {
                namespace.clone().unwrap_or_default()
            } else {
                String::new()
            };
            let role = format!("{role_kind} {role_ns}/{}", text(&o["roleRef"]["name"]));
            let rules = role_rules
                .get(&role)
                .cloned()
                .with_context(|| format!("{} names {role}, which is not rendered", kind(o)))?;
            let subjects = o["subjects"]
                .as_sequence()
                .map(|s| {
                    s.iter()
                        .filter_map(|s| match text(&s["kind"]).as_str() {
                            "ServiceAccount" => {
                                let ns = match text(&s["namespace"]) {
                                    ns if ns.is_empty() => namespace.clone().unwrap_or_default(),
                                    ns => ns,
                                };
                                Some(Subject::User(format!(
                                    "system:serviceaccount:{ns}:{}",
                                    text(&s["name"])
                                )))
                            }
                            "User" => Some(Subject::User(text(&s["name"]))),
                            "Group" => Some(Subject::Group(text(&s["name"]))),
                            _ => None,
                        })
                        .collect()
                })
                .unwrap_or_default();
            grants.push(Grant {
                role: role.replace(" /", " "),
                binding: format!(
                    "{} {}/{}",
                    kind(o),
                    namespace.clone().unwrap_or_default(),
                    text(&o["metadata"]["name"])
                )
                .replace(" /", " "),
                namespace,
                subjects,
                rules,
                builtin: false,
            });
        }
        Ok(Rbac { grants })
    }

    /// Whether a rule bound to `user` allows the request.
    pub fn allows(&self, user: &str, request: &RequestRecord) -> bool {
        self.grants.iter().any(|g| {
            g.binds(user) && g.covers(request) && g.rules.iter().any(|r| r.allows(request))
        })
    }

    /// The requests `user` made, judged: denied ones, allowed ones, and the rule atoms bound
    /// to `user` that none of them used.
    pub fn judge(&self, user: &str, requests: &[RequestRecord]) -> Findings {
        let mine: Vec<&RequestRecord> = requests
            .iter()
            .filter(|r| r.user.as_deref() == Some(user))
            .collect();
        let mut findings = Findings::default();
        for r in &mine {
            let bucket = if self.allows(user, r) {
                &mut findings.allowed
            } else {
                &mut findings.denied
            };
            *bucket.entry(r.describe()).or_default() += 1;
        }
        // Atoms are judged per role (over all namespaces it is bound in): a role bound in two
        // namespaces is used when either used it.
        let mut atoms_used: BTreeSet<(String, String)> = BTreeSet::new();
        let mut all: BTreeSet<(String, String)> = BTreeSet::new();
        for grant in self.grants.iter().filter(|g| g.binds(user) && !g.builtin) {
            let role = grant
                .role
                .split_once('/')
                .map_or(grant.role.clone(), |(kind_ns, name)| {
                    let kind = kind_ns.split(' ').next().unwrap_or_default();
                    format!("{kind} {name}")
                });
            for rule in &grant.rules {
                for (atom, narrow) in rule.narrowed() {
                    all.insert((role.clone(), atom.clone()));
                    if mine.iter().any(|r| grant.covers(r) && narrow.allows(r)) {
                        atoms_used.insert((role.clone(), atom));
                    }
                }
            }
        }
        findings.unused = all
            .difference(&atoms_used)
            .map(|(role, atom)| format!("{role}: {atom}"))
            .collect();
        findings
    }

    /// Panics, listing them, when a request of `user` is not allowed by the RBAC bound to it
    /// (or when `user` made no request at all: then nothing was checked); prints the rules it
    /// never used. The findings, for more assertions.
    #[allow(clippy::panic)] // test support: a denied request is a failed test
    pub fn assert_allows_all(
        &self,
        what: &str,
        user: &str,
        requests: &[RequestRecord],
    ) -> Findings {
        let findings = self.judge(user, requests);
        assert!(
            !findings.allowed.is_empty() || !findings.denied.is_empty(),
            "{what}: {user} made no request at all (does the process use its kubeconfig_as?)"
        );
        println!(
            "{what}: {user}: {} distinct requests allowed by the chart's RBAC",
            findings.allowed.len()
        );
        for (request, count) in &findings.allowed {
            println!("  used    {request} ({count}×)");
        }
        if findings.unused.is_empty() {
            println!("{what}: {user}: every rule bound to it was used");
        } else {
            println!("{what}: {user}: rules never used in this run (excess permissions?):");
            for atom in &findings.unused {
                println!("  unused  {atom}");
            }
        }
        if !findings.denied.is_empty() {
            let list: Vec<String> = findings
                .denied
                .iter()
                .map(|(r, n)| format!("  {r} ({n}×)"))
                .collect();
            panic!(
                "{what}: the chart's RBAC does not allow these requests of {user} (a real API \
                 server answers 403):\n{}\nbound to {user}:\n{}",
                list.join("\n"),
                self.describe_grants(user)
            );
        }
        findings
    }

    fn describe_grants(&self, user: &str) -> String {
        self.grants
            .iter()
            .filter(|g| g.binds(user) && !g.builtin)
            .map(|g| {
                let atoms: Vec<String> = g.rules.iter().flat_map(Rule::atoms).collect();
                format!("  {} via {}: {}", g.role, g.binding, atoms.join("; "))
            })
            .collect::<Vec<_>>()
            .join("\n")
    }
}

/// `system:discovery` and `system:public-info-viewer`, bound to `system:authenticated` on
/// every cluster.
fn builtin_grants() -> Vec<Grant> {
    let urls = [
        "/api",
        "/api/*",
        "/apis",
        "/apis/*",
        "/openapi",
        "/openapi/*",
        "/version",
        "/version/",
        "/healthz",
        "/livez",
        "/readyz",
    ];
    vec![Grant {
        role: "ClusterRole system:discovery".to_owned(),
        binding: "ClusterRoleBinding system:discovery".to_owned(),
        namespace: None,
        subjects: vec![Subject::Group("system:authenticated".to_owned())],
        rules: vec![Rule {
            verbs: vec!["get".to_owned()],
            non_resource_urls: urls.iter().map(|&u| u.to_owned()).collect(),
            ..Rule::default()
        }],
        builtin: true,
    }]
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn request(verb: &str, group: &str, resource: &str, ns: Option<&str>) -> RequestRecord {
        let (resource, subresource) = resource.split_once('/').unwrap_or((resource, ""));
        RequestRecord {
            user: Some(OPERATOR.to_owned()),
            resource_request: true,
            verb: verb.to_owned(),
            api_group: group.to_owned(),
            resource: resource.to_owned(),
            subresource: subresource.to_owned(),
            namespace: ns.map(str::to_owned),
            name: None,
            path: String::new(),
            method: String::new(),
            status: 200,
            created_by_apply: false,
        }
    }

    const MANIFEST: &str = "
apiVersion: rbac.authorization.k8s.io/v1
kind: Role
metadata: {name: r, namespace: team}
rules:
  - {apiGroups: [batch], resources: [jobs], verbs: [list, delete]}
  - {apiGroups: [gatehouse.dev], resources: [scanrequests/status], verbs: [patch]}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata: {name: r, namespace: team}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: Role, name: r}
subjects: [{kind: ServiceAccount, name: gatehouse-operator, namespace: gatehouse}]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata: {name: c}
rules:
  - {apiGroups: [apiextensions.k8s.io], resources: [customresourcedefinitions], resourceNames: [a.b], verbs: [get, create]}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata: {name: c}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: c}
subjects: [{kind: ServiceAccount, name: gatehouse-operator, namespace: gatehouse}]
";

    #[test]
    fn a_role_allows_only_its_verbs_resources_and_namespace_and_names_only_their_objects() {
        let rbac = Rbac::from_manifest(MANIFEST).unwrap();
        let allows = |r: &RequestRecord| rbac.allows(OPERATOR, r);
        assert!(allows(&request("list", "batch", "jobs", Some("team"))));
        assert!(!allows(&request("list", "batch", "jobs", Some("other"))));
        assert!(!allows(&request("list", "batch", "jobs", None)));
        assert!(!allows(&request("create", "batch", "jobs", Some("team"))));
        assert!(!allows(&request("list", "", "jobs", Some("team"))));
        assert!(allows(&request(
            "patch",
            "gatehouse.dev",
            "scanrequests/status",
            Some("team")
        )));
        assert!(!allows(&request(
            "patch",
            "gatehouse.dev",
            "scanrequests",
            Some("team")
        )));
        let mut crd = request(
            "create",
            "apiextensions.k8s.io",
            "customresourcedefinitions",
            None,
        );
        assert!(
            !allows(&crd),
            "a create without a name is not one of resourceNames"
        );
        crd.name = Some("a.b".to_owned());
        assert!(allows(&crd));
        crd.name = Some("x.y".to_owned());
        assert!(!allows(&crd));
        let mut other = request("list", "batch", "jobs", Some("team"));
        other.user = Some(WEBHOOK.to_owned());
        assert!(!rbac.allows(WEBHOOK, &other));
    }

    #[test]
    fn rules_no_request_used_are_reported_per_role() {
        let rbac = Rbac::from_manifest(MANIFEST).unwrap();
        let findings = rbac.judge(
            OPERATOR,
            &[
                request("list", "batch", "jobs", Some("team")),
                request("watch", "batch", "jobs", Some("team")),
            ],
        );
        assert_eq!(findings.denied.len(), 1, "{findings:?}");
        assert_eq!(
            findings.unused,
            [
                "ClusterRole c: create apiextensions.k8s.io customresourcedefinitions (resourceNames a.b)",
                "ClusterRole c: get apiextensions.k8s.io customresourcedefinitions (resourceNames a.b)",
                "Role r: delete batch jobs",
                "Role r: patch gatehouse.dev scanrequests/status",
            ]
        );
    }
}
