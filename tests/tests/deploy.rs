//! What `deploy/` hands to people is what Gatehouse accepts and needs: every ScanPolicy under
//! `deploy/` (the samples and the GitOps team folders) passes `gatehouse-operator check-policy`,
//! the team folders' kustomizations apply every file and put each policy in a namespace they
//! create, the GitHub App manifest subscribes to exactly the events `gatehouse-webhook` acts on
//! and asks for exactly the permissions `docs/github-app.md` explains, and the GitOps examples
//! set only values the chart has and give every team namespace the scan pods' NetworkPolicy.
//!
//! `cargo test --workspace` builds the operator binary; a missing or stale one fails the test,
//! saying so.

// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;

use gatehouse_webhook::receive::wanted_actions;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Every document of a YAML file (empty documents left out).
fn documents(path: &Path) -> Vec<serde_yaml::Value> {
    let text = read(path);
    serde_yaml::Deserializer::from_str(&text)
        .map(|doc| {
            serde::Deserialize::deserialize(doc)
                .unwrap_or_else(|e| panic!("{}: not YAML: {e}", path.display()))
        })
        .filter(|doc: &serde_yaml::Value| !doc.is_null())
        .collect()
}

/// The YAML files under `dir`, sorted.
fn yaml_files(dir: &Path) -> Vec<PathBuf> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap().flatten() {
        let path = entry.path();
        if path.is_dir() {
            found.extend(yaml_files(&path));
        } else if path
            .extension()
            .is_some_and(|ext| ext == "yaml" || ext == "yml")
        {
            found.push(path);
        }
    }
    found.sort();
    found
}

fn kind(doc: &serde_yaml::Value) -> &str {
    doc["kind"].as_str().unwrap_or_default()
}

fn str_at<'a>(doc: &'a serde_yaml::Value, path: &[&str]) -> &'a str {
    let mut node = doc;
    for key in path {
        node = &node[*key];
    }
    node.as_str()
        .unwrap_or_else(|| panic!("no string at {}", path.join(".")))
}

#[test]
fn every_scanpolicy_under_deploy_passes_the_operators_check_policy() {
    let deploy = root().join("deploy");
    let with_policies: Vec<(PathBuf, usize)> = yaml_files(&deploy)
        .into_iter()
        .filter_map(|path| {
            let count = documents(&path)
                .iter()
                .filter(|doc| kind(doc) == "ScanPolicy")
                .count();
            (count > 0).then_some((path, count))
        })
        .collect();
    let relative: Vec<String> = with_policies
        .iter()
        .map(|(path, _)| {
            path.strip_prefix(&deploy)
                .unwrap()
                .to_string_lossy()
                .into_owned()
        })
        .collect();
    // The walk finds the samples and the GitOps team folders (a walk that found nothing would
    // pass trivially).
    for expected in [
        "samples/scanpolicy-kics.yaml",
        "gitops/teams/payments/scanpolicy.yaml",
        "gitops/teams/platform/scanpolicy.yaml",
    ] {
        assert!(
            relative.iter().any(|r| r == expected),
            "{expected} not found among {relative:?}"
        );
    }

    let output = Command::new(gatehouse_tests::binaries::operator())
        .arg("check-policy")
        .args(with_policies.iter().map(|(path, _)| path))
        .env_clear()
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert_eq!(
        output.status.code(),
        Some(0),
        "check-policy refused a ScanPolicy under deploy/:\n{stdout}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let mut expected = String::new();
    for (path, count) in &with_policies {
        let noun = if *count == 1 { "policy" } else { "policies" };
        writeln!(expected, "{}: ok ({count} {noun})", path.display()).unwrap();
    }
    assert_eq!(stdout, expected);
}

fn kustomization_resources(dir: &Path) -> Vec<String> {
    let docs = documents(&dir.join("kustomization.yaml"));
    assert_eq!(docs.len(), 1, "{}", dir.display());
    docs[0]["resources"]
        .as_sequence()
        .unwrap_or_else(|| panic!("{}: no resources", dir.display()))
        .iter()
        .map(|r| r.as_str().unwrap().to_owned())
        .collect()
}

#[test]
fn team_folders_apply_every_file_and_create_the_namespace_of_each_policy() {
    let teams = root().join("deploy/gitops/teams");
    let mut folders: Vec<String> = std::fs::read_dir(&teams)
        .unwrap()
        .flatten()
        .filter(|e| e.path().is_dir())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    folders.sort();
    let mut listed = kustomization_resources(&teams);
    listed.sort();
    assert_eq!(
        listed, folders,
        "deploy/gitops/teams/kustomization.yaml must list every team folder"
    );

    for team in &folders {
        let dir = teams.join(team);
        let mut resources = kustomization_resources(&dir);
        resources.sort();
        let mut files: Vec<String> = yaml_files(&dir)
            .iter()
            .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
            .filter(|name| name != "kustomization.yaml")
            .collect();
        files.sort();
        assert_eq!(
            resources, files,
            "{team}: a file its kustomization.yaml does not list is never applied"
        );

        let docs: Vec<serde_yaml::Value> = files
            .iter()
            .flat_map(|file| documents(&dir.join(file)))
            .collect();
        let namespaces: BTreeSet<&str> = docs
            .iter()
            .filter(|doc| kind(doc) == "Namespace")
            .map(|doc| str_at(doc, &["metadata", "name"]))
            .collect();
        assert_eq!(namespaces.len(), 1, "{team}: one namespace per team");
        let policies: Vec<&serde_yaml::Value> = docs
            .iter()
            .filter(|doc| kind(doc) == "ScanPolicy")
            .collect();
        assert!(!policies.is_empty(), "{team}: no ScanPolicy");
        for doc in docs.iter().filter(|doc| kind(doc) != "Namespace") {
            let namespace = str_at(doc, &["metadata", "namespace"]);
            assert!(
                namespaces.contains(namespace),
                "{team}: {} {} is in namespace {namespace}, which the folder does not create ({namespaces:?})",
                kind(doc),
                str_at(doc, &["metadata", "name"]),
            );
        }
    }
}

/// Webhook event names GitHub sends (GitHub's "Webhook events and payloads" page): the test asks
/// the webhook about each, so an event it starts acting on is noticed here.
const GITHUB_EVENTS: &[&str] = &[
    "branch_protection_configuration",
    "branch_protection_rule",
    "check_run",
    "check_suite",
    "code_scanning_alert",
    "commit_comment",
    "create",
    "custom_property",
    "custom_property_values",
    "delete",
    "dependabot_alert",
    "deploy_key",
    "deployment",
    "deployment_protection_rule",
    "deployment_review",
    "deployment_status",
    "discussion",
    "discussion_comment",
    "fork",
    "github_app_authorization",
    "gollum",
    "installation",
    "installation_repositories",
    "installation_target",
    "issue_comment",
    "issues",
    "label",
    "marketplace_purchase",
    "member",
    "membership",
    "merge_group",
    "meta",
    "milestone",
    "org_block",
    "organization",
    "package",
    "page_build",
    "personal_access_token_request",
    "ping",
    "project",
    "project_card",
    "project_column",
    "projects_v2",
    "projects_v2_item",
    "projects_v2_status_update",
    "public",
    "pull_request",
    "pull_request_review",
    "pull_request_review_comment",
    "pull_request_review_thread",
    "push",
    "registry_package",
    "release",
    "repository",
    "repository_advisory",
    "repository_dispatch",
    "repository_import",
    "repository_ruleset",
    "repository_vulnerability_alert",
    "secret_scanning_alert",
    "secret_scanning_alert_location",
    "secret_scanning_scan",
    "security_advisory",
    "security_and_analysis",
    "sponsorship",
    "star",
    "status",
    "sub_issues",
    "team",
    "team_add",
    "watch",
    "workflow_dispatch",
    "workflow_job",
    "workflow_run",
];

fn manifest() -> serde_yaml::Value {
    let docs = documents(&root().join("deploy/github-app/manifest.yaml"));
    assert_eq!(docs.len(), 1);
    docs.into_iter().next().unwrap()
}

fn manifest_events() -> BTreeSet<String> {
    manifest()["default_events"]
        .as_sequence()
        .unwrap()
        .iter()
        .map(|e| e.as_str().unwrap().to_owned())
        .collect()
}

/// The events named in docs/webhook.md's "Events and actions acted on" paragraph, each with the
/// actions it names in `event.action` form.
fn documented_events() -> BTreeMap<String, BTreeSet<String>> {
    let text = read(&root().join("docs/webhook.md"));
    let start = text
        .find("Events and actions acted on:")
        .expect("docs/webhook.md lists the events acted on");
    let paragraph = text[start..].split("\n\n").next().unwrap();
    let mut events = BTreeMap::<String, BTreeSet<String>>::new();
    for token in paragraph.split('`').skip(1).step_by(2) {
        let (event, action) = token.split_once('.').unwrap_or((token, ""));
        if GITHUB_EVENTS.contains(&event) {
            let actions = events.entry(event.to_owned()).or_default();
            if !action.is_empty() {
                actions.insert(action.to_owned());
            }
        }
    }
    events
}

#[test]
fn the_github_app_manifest_subscribes_to_exactly_the_events_the_webhook_acts_on() {
    let acted_on: BTreeSet<String> = GITHUB_EVENTS
        .iter()
        .filter(|event| wanted_actions(event).is_some())
        .map(|event| (*event).to_owned())
        .collect();
    assert_eq!(
        manifest_events(),
        acted_on,
        "deploy/github-app/manifest.yaml default_events against the events gatehouse-webhook acts on (receive::wanted_actions)"
    );
    let documented = documented_events();
    assert_eq!(
        documented.keys().cloned().collect::<BTreeSet<_>>(),
        acted_on,
        "docs/webhook.md's events acted on against the webhook's"
    );
    for (event, actions) in &documented {
        let wanted = wanted_actions(event).unwrap();
        for action in actions {
            assert!(
                wanted.contains(&action.as_str()),
                "docs/webhook.md names {event}.{action}, which the webhook ignores"
            );
        }
    }
}

#[test]
fn every_event_of_the_manifest_is_explained_in_docs_github_app_md() {
    let text = read(&root().join("docs/github-app.md"));
    let table = section(&text, "## Events");
    let explained: BTreeSet<String> = table_first_column(table);
    assert_eq!(explained, manifest_events());
}

/// The text of the section starting at `heading`, up to the next heading of the same level.
fn section<'a>(text: &'a str, heading: &str) -> &'a str {
    let start = text
        .find(&format!("\n{heading}\n"))
        .unwrap_or_else(|| panic!("no section {heading:?}"));
    let body = &text[start + heading.len() + 2..];
    body.find("\n## ").map_or(body, |end| &body[..end])
}

/// The first column of a Markdown table's rows whose first cell is `code`.
fn table_first_column(table: &str) -> BTreeSet<String> {
    table
        .lines()
        .filter_map(|line| line.strip_prefix("| `"))
        .map(|rest| rest.split('`').next().unwrap().to_owned())
        .collect()
}

fn manifest_permissions() -> BTreeMap<String, String> {
    manifest()["default_permissions"]
        .as_mapping()
        .unwrap()
        .iter()
        .map(|(k, v)| {
            (
                k.as_str().unwrap().to_owned(),
                v.as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

#[test]
fn the_manifest_asks_for_the_permissions_docs_github_app_md_explains_and_writes_only_checks() {
    let text = read(&root().join("docs/github-app.md"));
    let table = section(&text, "## Permissions");
    // Rows: | `name` | `access` | what for | calls |; optional ones are marked "(optional)".
    let mut documented = BTreeMap::new();
    for line in table.lines().filter(|l| l.starts_with("| `")) {
        let cells: Vec<&str> = line.split('|').map(str::trim).collect();
        if cells[3].contains("(optional)") {
            continue;
        }
        documented.insert(
            cells[1].trim_matches('`').to_owned(),
            cells[2].trim_matches('`').to_owned(),
        );
    }
    let permissions = manifest_permissions();
    assert_eq!(permissions, documented);
    let writes: Vec<&String> = permissions
        .iter()
        .filter(|(_, access)| access.as_str() != "read")
        .map(|(name, _)| name)
        .collect();
    assert_eq!(
        writes,
        ["checks"],
        "the App may write check runs and nothing else"
    );
}

/// Every leaf path of a YAML mapping, as `a.b.c`.
fn leaf_paths(prefix: &str, value: &serde_yaml::Value, out: &mut Vec<String>) {
    match value.as_mapping() {
        Some(map) if !map.is_empty() => {
            for (key, child) in map {
                let key = key.as_str().unwrap();
                let path = if prefix.is_empty() {
                    key.to_owned()
                } else {
                    format!("{prefix}.{key}")
                };
                leaf_paths(&path, child, out);
            }
        }
        _ => out.push(prefix.to_owned()),
    }
}

fn has_path(values: &serde_yaml::Value, path: &str) -> bool {
    let mut node = values;
    for key in path.split('.') {
        match node.as_mapping().and_then(|m| m.get(key)) {
            Some(child) => node = child,
            None => return false,
        }
    }
    true
}

#[test]
fn gitops_examples_install_the_chart_of_this_repository_with_values_it_has() {
    let chart = root().join("charts/gatehouse");
    let values_file = chart.join("values.yaml");
    let values: serde_yaml::Value = serde_yaml::from_str(&read(&values_file)).unwrap();
    let argo = documents(&root().join("deploy/gitops/argocd/application.yaml"));
    let flux = documents(&root().join("deploy/gitops/flux/helmrelease.yaml"));
    let team_namespaces = team_namespaces();
    assert!(team_namespaces.len() >= 2, "{team_namespaces:?}");
    let examples = [
        (
            "argocd/application.yaml",
            str_at(&argo[0], &["spec", "source", "path"]).to_owned(),
            argo[0]["spec"]["source"]["helm"]["valuesObject"].clone(),
        ),
        (
            "flux/helmrelease.yaml",
            str_at(&flux[0], &["spec", "chart", "spec", "chart"]).to_owned(),
            flux[0]["spec"]["values"].clone(),
        ),
    ];
    for (file, chart_path, example_values) in examples {
        assert_eq!(
            root().join(&chart_path).canonicalize().unwrap(),
            chart.canonicalize().unwrap(),
            "{file}: the chart path"
        );
        let mut paths = Vec::new();
        leaf_paths("", &example_values, &mut paths);
        assert!(
            paths.contains(&"secrets.existingSecret".to_owned()),
            "{file}"
        );
        // A GitOps tool renders offline, where the chart's generated Redis passwords (helm
        // lookup) would change on every sync: the example must name its own Secret.
        assert!(
            !str_at(&example_values, &["redis", "existingSecret"]).is_empty(),
            "{file}: redis.existingSecret"
        );
        for path in paths {
            assert!(
                has_path(&values, &path),
                "{file} sets {path}, which charts/gatehouse/values.yaml does not have"
            );
        }
        assert_eq!(
            str_at(&example_values, &["secrets", "existingSecret"]),
            str_at(&values, &["secrets", "existingSecret"]),
            "{file}: the Secret named in docs/github-app.md"
        );
        // Scan pods get the chart's NetworkPolicy only in the namespaces it is told about.
        let listed: BTreeSet<&str> = example_values["networkPolicy"]["scanNamespaces"]
            .as_sequence()
            .unwrap_or_else(|| panic!("{file}: no networkPolicy.scanNamespaces"))
            .iter()
            .map(|n| n.as_str().unwrap())
            .collect();
        assert_eq!(
            listed,
            team_namespaces.iter().map(String::as_str).collect(),
            "{file}: networkPolicy.scanNamespaces against the team folders' namespaces"
        );
    }
}

/// The namespaces the team folders create.
fn team_namespaces() -> BTreeSet<String> {
    yaml_files(&root().join("deploy/gitops/teams"))
        .iter()
        .flat_map(|path| documents(path))
        .filter(|doc| kind(doc) == "Namespace")
        .map(|doc| str_at(&doc, &["metadata", "name"]).to_owned())
        .collect()
}
