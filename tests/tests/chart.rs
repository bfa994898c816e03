//! The Helm chart, rendered by the real helm (v4, from `./scripts/install-chart-tools`, which
//! `./scripts/test` runs) for each values file in `charts/gatehouse/ci/`: `helm lint --strict`,
//! every rendered object validated offline by kubernetes-validate against Kubernetes 1.35's
//! schemas, ScanPolicies by the operator's own `check-policy`, the values schema refusing bad
//! values, the restricted Pod Security Standard on every pod, RBAC without wildcards, the
//! environment the pods get known to the binaries, and the Redis ACL the chart's Redis loads
//! run in a real redis-server.

// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeSet;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use serde_yaml::Value;

const KUBE_VERSION: &str = "1.35.0";

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn chart() -> PathBuf {
    root().join("charts/gatehouse")
}

/// A tool installed by `./scripts/install-chart-tools` (in `.tools/bin`, or
/// `$GATEHOUSE_TOOLS_DIR/bin`).
fn tool(name: &str) -> PathBuf {
    let dir = std::env::var_os("GATEHOUSE_TOOLS_DIR")
        .map_or_else(|| root().join(".tools"), PathBuf::from);
    let path = dir.join("bin").join(name);
    assert!(
        path.exists(),
        "{} is missing: run ./scripts/install-chart-tools (./scripts/test does)",
        path.display()
    );
    path
}

/// The values files of `charts/gatehouse/ci`, by name.
fn values_files() -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(chart().join("ci"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    files.sort();
    assert!(files.len() >= 4, "{files:?}");
    files
}

/// `helm template` of the chart with these extra arguments: the manifest, or helm's stderr.
fn render(args: &[&str]) -> Result<String, String> {
    let output = Command::new(tool("helm"))
        .args(["template", "gatehouse"])
        .arg(chart())
        .args([
            "--namespace",
            "gatehouse",
            "--kube-version",
            KUBE_VERSION,
            "--include-crds",
        ])
        .args(args)
        .env(
            "HELM_CACHE_HOME",
            std::env::temp_dir().join("gatehouse-helm"),
        )
        .env(
            "HELM_CONFIG_HOME",
            std::env::temp_dir().join("gatehouse-helm"),
        )
        .env(
            "HELM_DATA_HOME",
            std::env::temp_dir().join("gatehouse-helm"),
        )
        .output()
        .unwrap();
    if output.status.success() {
        Ok(String::from_utf8(output.stdout).unwrap())
    } else {
        Err(String::from_utf8_lossy(&output.stderr).into_owned())
    }
}

fn render_file(values: &Path) -> String {
    render(&["--values", values.to_str().unwrap()])
        .unwrap_or_else(|e| panic!("{}: {e}", values.display()))
}

/// The objects of a multi-document manifest.
fn objects(manifest: &str) -> Vec<Value> {
    serde_yaml::Deserializer::from_str(manifest)
        .map(|d| serde_yaml::Value::deserialize(d).unwrap())
        .filter(|v| !v.is_null())
        .collect()
}

use serde::Deserialize as _;

fn kind(o: &Value) -> &str {
    o["kind"].as_str().unwrap_or("")
}

fn name(o: &Value) -> String {
    format!(
        "{} {}/{}",
        kind(o),
        o["metadata"]["namespace"].as_str().unwrap_or("-"),
        o["metadata"]["name"].as_str().unwrap_or("")
    )
}

fn strings(v: &Value) -> Vec<String> {
    v.as_sequence()
        .map(|s| {
            s.iter()
                .map(|x| x.as_str().unwrap_or("").to_owned())
                .collect()
        })
        .unwrap_or_default()
}

/// Each rendered workload's pod spec, named.
fn pod_specs(objects: &[Value]) -> Vec<(String, Value)> {
    objects
        .iter()
        .filter(|o| matches!(kind(o), "Deployment" | "StatefulSet" | "Job" | "DaemonSet"))
        .map(|o| (name(o), o["spec"]["template"]["spec"].clone()))
        .collect()
}

fn containers(pod: &Value) -> Vec<Value> {
    let mut all = Vec::new();
    for key in ["initContainers", "containers"] {
        if let Some(list) = pod[key].as_sequence() {
            all.extend(list.iter().cloned());
        }
    }
    all
}

/// Runs `command` with `input` on its standard input; its output.
fn with_stdin(command: &mut Command, input: &str) -> std::process::Output {
    let mut child = command
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.as_bytes())
        .unwrap();
    child.wait_with_output().unwrap()
}

#[test]
fn helm_lint_strict_passes_with_every_values_file() {
    for values in values_files() {
        let output = Command::new(tool("helm"))
            .args(["lint", "--strict", "--kube-version", KUBE_VERSION])
            .arg(chart())
            .arg("--values")
            .arg(&values)
            .output()
            .unwrap();
        assert!(
            output.status.success(),
            "{}: {}{}",
            values.display(),
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
    }
}

#[test]
fn every_rendered_object_validates_offline_against_kubernetes_1_35() {
    for values in values_files() {
        let manifest = render_file(&values);
        let output = with_stdin(
            Command::new(tool("kubernetes-validate")).args(["--strict", "-k", KUBE_VERSION, "-"]),
            &manifest,
        );
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        assert!(output.status.success(), "{}:\n{text}", values.display());
        // Custom resources are skipped by the validator; they are checked below by others.
        for line in text.lines().filter(|l| !l.starts_with("INFO")) {
            assert!(
                ["ScanPolicy", "ServiceMonitor", "PrometheusRule"]
                    .iter()
                    .any(|k| line.contains(&format!("kind {k} "))),
                "{}: unexpected validator output: {line}",
                values.display()
            );
        }
        let objects = objects(&manifest);
        let passed = text.lines().filter(|l| l.contains("passed")).count();
        let custom = objects
            .iter()
            .filter(|o| matches!(kind(o), "ScanPolicy" | "ServiceMonitor" | "PrometheusRule"))
            .count();
        assert_eq!(
            passed + custom,
            objects.len(),
            "{}: every object validated:\n{text}",
            values.display()
        );
    }
}

#[test]
fn rendered_scan_policies_pass_the_operators_own_check() {
    let mut checked = 0;
    for values in values_files() {
        let policies: Vec<Value> = objects(&render_file(&values))
            .into_iter()
            .filter(|o| kind(o) == "ScanPolicy")
            .collect();
        if policies.is_empty() {
            continue;
        }
        let mut text = String::new();
        for policy in &policies {
            text.push_str("---\n");
            text.push_str(&serde_yaml::to_string(policy).unwrap());
        }
        let output = with_stdin(
            Command::new(gatehouse_tests::binaries::operator()).args(["check-policy", "-"]),
            &text,
        );
        assert!(
            output.status.success(),
            "{}: {}{}",
            values.display(),
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        checked += policies.len();
    }
    assert!(checked >= 1, "no values file renders a ScanPolicy");
}

#[test]
fn the_chart_carries_exactly_the_generated_crds() {
    let rendered: Vec<Value> = objects(&render(&[]).unwrap())
        .into_iter()
        .filter(|o| kind(o) == "CustomResourceDefinition")
        .collect();
    let generated = objects(&gatehouse_crds::crd_yaml().unwrap());
    assert_eq!(rendered, generated);
}

#[test]
fn the_values_schema_refuses_wrong_types_unknown_keys_and_bad_enums() {
    for (set, expected) in [
        ("webhook.replicas=two", "replicas"),
        ("webhook.replicaz=2", "replicaz"),
        ("nope=1", "nope"),
        ("redis.appendfsync=sometimes", "appendfsync"),
        ("image.digest=sha256:short", "digest"),
        ("watch.namespaces[0]=Team_A", "namespaces"),
    ] {
        let error = render(&["--set", set]).expect_err(set);
        assert!(
            error.contains("values don't meet the specifications of the schema")
                && error.contains(expected),
            "--set {set}: {error}"
        );
    }
    // And the defaults pass it.
    render(&[]).unwrap();
}

/// Every key of values.yaml, as a dotted path, with whether a `# --` comment documents it.
fn documented_values() -> Vec<(String, bool)> {
    let text = std::fs::read_to_string(chart().join("values.yaml")).unwrap();
    let mut found = Vec::new();
    let mut path: Vec<(usize, String)> = Vec::new();
    let mut documented = false;
    for line in text.lines() {
        let trimmed = line.trim_start();
        if trimmed.starts_with("# --") {
            documented = true;
            continue;
        }
        if trimmed.starts_with('#') || trimmed.is_empty() || trimmed.starts_with('-') {
            continue;
        }
        let indent = line.len() - trimmed.len();
        let Some((key, _)) = trimmed.split_once(':') else {
            continue;
        };
        while path.last().is_some_and(|(i, _)| *i >= indent) {
            path.pop();
        }
        path.push((indent, key.to_owned()));
        let dotted: Vec<&str> = path.iter().map(|(_, k)| k.as_str()).collect();
        found.push((dotted.join("."), documented));
        documented = false;
    }
    found
}

#[test]
fn every_value_is_documented_and_typed_in_the_schema() {
    let schema: serde_json::Value =
        serde_json::from_slice(&std::fs::read(chart().join("values.schema.json")).unwrap())
            .unwrap();
    let values = documented_values();
    assert!(values.len() > 60, "{values:?}");
    for (path, documented) in &values {
        let mut node = &schema;
        let mut free_form = false;
        for key in path.split('.') {
            if node["properties"].is_null() {
                // Inside a free-form map (labels, annotations): its keys are the user's.
                free_form = true;
                break;
            }
            node = &node["properties"][key];
        }
        if free_form {
            continue;
        }
        assert!(documented, "values.yaml: {path} has no `# --` comment");
        assert!(
            node["description"].is_string() && node["type"].is_string() || node["anyOf"].is_array(),
            "values.schema.json: {path} has no type and description: {node}"
        );
    }
    // And the schema has nothing values.yaml does not show.
    let parsed: Value =
        serde_yaml::from_str(&std::fs::read_to_string(chart().join("values.yaml")).unwrap())
            .unwrap();
    let shown = |path: &str| {
        let mut node = &parsed;
        for key in path.split('.') {
            match node.get(key) {
                Some(child) => node = child,
                None => return false,
            }
        }
        true
    };
    let mut stack = vec![(String::new(), &schema)];
    while let Some((prefix, node)) = stack.pop() {
        if let Some(props) = node["properties"].as_object() {
            for (key, child) in props {
                let path = if prefix.is_empty() {
                    key.clone()
                } else {
                    format!("{prefix}.{key}")
                };
                if prefix.starts_with("policies") {
                    continue;
                }
                assert!(
                    shown(&path),
                    "values.schema.json has {path}, values.yaml does not"
                );
                stack.push((path, child));
            }
        }
    }
}

#[test]
fn every_pod_meets_the_restricted_pod_security_standard() {
    for values in values_files() {
        let objects = objects(&render_file(&values));
        let pods = pod_specs(&objects);
        assert!(pods.len() >= 2, "{}", values.display());
        for (owner, pod) in pods {
            let at = format!("{}: {owner}", values.display());
            let sc = &pod["securityContext"];
            assert_eq!(sc["runAsNonRoot"], Value::Bool(true), "{at}");
            assert_ne!(sc["runAsUser"].as_i64(), Some(0), "{at}");
            assert_eq!(
                sc["seccompProfile"]["type"].as_str(),
                Some("RuntimeDefault"),
                "{at}"
            );
            for key in ["hostNetwork", "hostPID", "hostIPC"] {
                assert!(
                    pod[key].is_null() || pod[key] == Value::Bool(false),
                    "{at}: {key}"
                );
            }
            for volume in pod["volumes"].as_sequence().unwrap() {
                let types: Vec<&str> = volume
                    .as_mapping()
                    .unwrap()
                    .keys()
                    .filter_map(Value::as_str)
                    .filter(|k| *k != "name")
                    .collect();
                assert!(
                    types.iter().all(|t| [
                        "configMap",
                        "secret",
                        "emptyDir",
                        "persistentVolumeClaim",
                        "projected"
                    ]
                    .contains(t)),
                    "{at}: volume {types:?}"
                );
            }
            for c in containers(&pod) {
                let at = format!("{at} container {}", c["name"].as_str().unwrap());
                let sc = &c["securityContext"];
                assert_eq!(sc["allowPrivilegeEscalation"], Value::Bool(false), "{at}");
                assert_eq!(sc["readOnlyRootFilesystem"], Value::Bool(true), "{at}");
                assert_ne!(sc["privileged"], Value::Bool(true), "{at}");
                assert_eq!(strings(&sc["capabilities"]["drop"]), ["ALL"], "{at}");
                assert!(sc["capabilities"]["add"].is_null(), "{at}");
                assert_ne!(sc["runAsUser"].as_i64(), Some(0), "{at}");
                for kind in ["requests", "limits"] {
                    for resource in ["cpu", "memory"] {
                        assert!(
                            !c["resources"][kind][resource].is_null(),
                            "{at}: {kind}.{resource}"
                        );
                    }
                }
                assert!(
                    c["ports"]
                        .as_sequence()
                        .is_none_or(|ports| ports.iter().all(|p| p["hostPort"].is_null()))
                );
            }
        }
    }
}

/// Rules of each Role and ClusterRole, by name.
fn roles(objects: &[Value]) -> Vec<(String, bool, Vec<Value>)> {
    objects
        .iter()
        .filter(|o| matches!(kind(o), "Role" | "ClusterRole"))
        .map(|o| {
            (
                name(o),
                kind(o) == "ClusterRole",
                o["rules"].as_sequence().cloned().unwrap_or_default(),
            )
        })
        .collect()
}

#[test]
fn no_rbac_rule_has_a_wildcard_and_none_reads_secrets() {
    for values in values_files() {
        let objects = objects(&render_file(&values));
        for (role, _, rules) in roles(&objects) {
            for rule in rules {
                for field in ["apiGroups", "resources", "verbs", "resourceNames"] {
                    assert!(
                        !strings(&rule[field]).iter().any(|s| s.contains('*')),
                        "{}: {role}: wildcard in {field}",
                        values.display()
                    );
                }
                if strings(&rule["resources"]).iter().any(|r| r == "secrets") {
                    assert_eq!(
                        strings(&rule["verbs"]),
                        ["create", "patch"],
                        "{}: {role} may only create and patch Secrets",
                        values.display()
                    );
                }
            }
        }
    }
}

#[test]
fn the_operators_cluster_role_is_exactly_what_its_calls_need() {
    let objects = objects(&render(&[]).unwrap());
    let (_, cluster, rules) = roles(&objects)
        .into_iter()
        .find(|(n, _, _)| n.ends_with("/gatehouse-operator"))
        .unwrap();
    assert!(cluster);
    let got: BTreeSet<String> = rules
        .iter()
        .flat_map(|r| {
            let groups = strings(&r["apiGroups"]);
            let verbs = strings(&r["verbs"]);
            strings(&r["resources"]).into_iter().flat_map(move |res| {
                let groups = groups.clone();
                verbs
                    .clone()
                    .into_iter()
                    .map(move |v| format!("{}/{res}:{v}", groups.join(",")))
            })
        })
        .collect();
    // The table "RBAC it needs" in docs/operator.md, one line per call the code makes.
    let expected: BTreeSet<String> = [
        "gatehouse.dev/scanrequests:get",
        "gatehouse.dev/scanrequests:list",
        "gatehouse.dev/scanrequests:watch",
        "gatehouse.dev/scanrequests:patch",
        "gatehouse.dev/scanrequests:delete",
        "gatehouse.dev/scanrequests/status:patch",
        "gatehouse.dev/scanpolicies:get",
        "gatehouse.dev/scanpolicies:list",
        "gatehouse.dev/scanpolicies:watch",
        "gatehouse.dev/scanpolicies/status:patch",
        "batch/jobs:get",
        "batch/jobs:list",
        "batch/jobs:watch",
        "batch/jobs:create",
        "batch/jobs:delete",
        "/pods:list",
        "/secrets:create",
        "/secrets:patch",
        "events.k8s.io/events:create",
        "events.k8s.io/events:patch",
    ]
    .into_iter()
    .map(str::to_owned)
    .collect();
    assert_eq!(got, expected);
}

#[test]
fn listed_namespaces_get_roles_there_and_nothing_cluster_wide_but_the_crd_rule() {
    let objects = objects(&render(&["--set", "watch.namespaces={team-a,team-b}"]).unwrap());
    let roles = roles(&objects);
    let cluster: Vec<&String> = roles.iter().filter(|r| r.1).map(|r| &r.0).collect();
    assert_eq!(
        cluster,
        [&"ClusterRole -/gatehouse-operator-crds".to_owned()]
    );
    let crd_rule = &roles.iter().find(|r| r.1).unwrap().2[0];
    assert_eq!(
        strings(&crd_rule["resourceNames"]),
        ["scanrequests.gatehouse.dev", "scanpolicies.gatehouse.dev"]
    );
    for ns in ["team-a", "team-b"] {
        for who in ["operator", "ingest"] {
            assert!(
                roles
                    .iter()
                    .any(|r| r.0 == format!("Role {ns}/gatehouse-{who}")),
                "{ns} {who}: {roles:?}"
            );
        }
    }
    // The processes are told to stay in them.
    let env = container_env(&objects, "gatehouse-operator");
    assert!(env.contains(&("GATEHOUSE_NAMESPACES".into(), "team-a,team-b".into())));
    let env = container_env(&objects, "gatehouse-webhook");
    assert!(env.contains(&("GATEHOUSE_POLICY_NAMESPACE".into(), "team-a,team-b".into())));
    // No ClusterRoleBinding but the CRD one.
    let bindings: Vec<String> = objects
        .iter()
        .filter(|o| kind(o) == "ClusterRoleBinding")
        .map(name)
        .collect();
    assert_eq!(bindings, ["ClusterRoleBinding -/gatehouse-operator-crds"]);
}

#[test]
fn the_receiving_webhook_has_no_kubernetes_access_when_the_roles_are_split() {
    let values = chart().join("ci/split-roles-values.yaml");
    let objects = objects(&render_file(&values));
    let receive = objects
        .iter()
        .find(|o| name(o) == "Deployment gatehouse/gatehouse-webhook")
        .unwrap();
    let pod = &receive["spec"]["template"]["spec"];
    assert_eq!(pod["automountServiceAccountToken"], Value::Bool(false));
    let account = pod["serviceAccountName"].as_str().unwrap();
    for binding in objects
        .iter()
        .filter(|o| matches!(kind(o), "RoleBinding" | "ClusterRoleBinding"))
    {
        for subject in binding["subjects"].as_sequence().unwrap() {
            assert_ne!(subject["name"].as_str(), Some(account), "{}", name(binding));
        }
    }
    // And it holds neither the App's private key nor the master key.
    let text = serde_yaml::to_string(pod).unwrap();
    assert!(
        !text.contains("private-key") && !text.contains("master-key"),
        "{text}"
    );
}

/// (name, value) of the environment of the first container of the Deployment `name`.
fn container_env(objects: &[Value], deployment: &str) -> Vec<(String, String)> {
    let d = objects
        .iter()
        .find(|o| kind(o) == "Deployment" && o["metadata"]["name"].as_str() == Some(deployment))
        .unwrap_or_else(|| panic!("no Deployment {deployment}"));
    d["spec"]["template"]["spec"]["containers"][0]["env"]
        .as_sequence()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["name"].as_str().unwrap().to_owned(),
                e["value"].as_str().unwrap_or("<from>").to_owned(),
            )
        })
        .collect()
}

/// The environment variables a binary reads, from its `--help` (`[env: NAME=]`).
fn known_env(binary: &Path, args: &[&str]) -> BTreeSet<String> {
    let output = Command::new(binary).args(args).output().unwrap();
    let help = String::from_utf8_lossy(&output.stdout);
    help.split("[env: ")
        .skip(1)
        .map(|s| s.split(['=', ']']).next().unwrap().to_owned())
        .collect()
}

#[test]
fn every_environment_variable_the_chart_sets_is_one_the_binary_reads() {
    let operator = known_env(&gatehouse_tests::binaries::operator(), &["run", "--help"]);
    let webhook = known_env(&gatehouse_tests::binaries::webhook(), &["--help"]);
    assert!(
        operator.contains("GATEHOUSE_MASTER_KEY_FILE"),
        "{operator:?}"
    );
    assert!(webhook.contains("GATEHOUSE_ROLE"), "{webhook:?}");
    for values in values_files() {
        let objects = objects(&render_file(&values));
        for d in objects.iter().filter(|o| kind(o) == "Deployment") {
            let deployment = d["metadata"]["name"].as_str().unwrap();
            let known = if deployment.ends_with("-operator") {
                &operator
            } else {
                &webhook
            };
            for (var, _) in container_env(&objects, deployment) {
                // Kubernetes' downward API names the binaries read as defaults, and the CA
                // bundle rustls reads.
                if ["POD_NAME", "POD_NAMESPACE", "SSL_CERT_FILE"].contains(&var.as_str()) {
                    continue;
                }
                assert!(
                    known.contains(&var),
                    "{}: {deployment} sets {var}, which the binary does not read",
                    values.display()
                );
            }
        }
    }
}

#[test]
fn alerts_and_the_dashboard_use_only_metrics_the_code_exports() {
    let values = chart().join("ci/production-values.yaml");
    let objects = objects(&render_file(&values));
    let rule = objects
        .iter()
        .find(|o| kind(o) == "PrometheusRule")
        .unwrap();
    let dashboard = objects
        .iter()
        .find(|o| kind(o) == "ConfigMap" && name(o).ends_with("-dashboard"))
        .unwrap();
    let monitor = objects
        .iter()
        .find(|o| kind(o) == "ServiceMonitor")
        .unwrap();
    assert_eq!(
        monitor["spec"]["endpoints"][0]["port"].as_str(),
        Some("metrics")
    );
    let mut exprs: Vec<String> = rule["spec"]["groups"][0]["rules"]
        .as_sequence()
        .unwrap()
        .iter()
        .map(|r| r["expr"].as_str().unwrap().to_owned())
        .collect();
    assert!(exprs.len() >= 5);
    let json: serde_json::Value =
        serde_json::from_str(dashboard["data"]["gatehouse.json"].as_str().unwrap()).unwrap();
    for panel in json["panels"].as_array().unwrap() {
        for target in panel["targets"].as_array().unwrap() {
            exprs.push(target["expr"].as_str().unwrap().to_owned());
        }
    }
    let mut sources = String::new();
    for file in ["operator/src/metrics.rs", "webhook/src/metrics.rs"] {
        sources.push_str(&std::fs::read_to_string(root().join(file)).unwrap());
    }
    let metric = regex::Regex::new(r"gatehouse_[a-z_]+").unwrap();
    for expr in &exprs {
        for m in metric.find_iter(expr) {
            let name = m
                .as_str()
                .trim_end_matches("_bucket")
                .trim_end_matches("_total");
            let exported = |name: &str| {
                regex::Regex::new(&format!(r"\b{name}[^a-z_]"))
                    .unwrap()
                    .is_match(&sources)
            };
            assert!(
                exported(name) || exported(m.as_str().trim_end_matches("_bucket")),
                "{} is used in `{expr}` but not exported",
                m.as_str()
            );
        }
    }
}

/// The rendered ConfigMap of the chart's Redis.
fn redis_config() -> Value {
    objects(&render(&[]).unwrap())
        .into_iter()
        .find(|o| name(o) == "ConfigMap gatehouse/gatehouse-redis")
        .unwrap()["data"]
        .clone()
}

#[test]
fn the_charts_redis_keeps_every_acknowledged_write() {
    let config = redis_config();
    let conf = config["redis.conf"].as_str().unwrap();
    for line in [
        "appendonly yes",
        "appendfsync everysec",
        "maxmemory-policy noeviction",
        "aclfile /acl/users.acl",
        "dir /data",
    ] {
        assert!(conf.lines().any(|l| l.trim() == line), "{line}:\n{conf}");
    }
}

#[test]
fn the_charts_redis_acl_loads_in_redis_and_lets_scan_pods_only_publish() {
    let config = redis_config();
    let dir = tempfile::tempdir().unwrap();
    let config_dir = dir.path().join("config");
    let passwords = dir.path().join("passwords");
    std::fs::create_dir_all(&config_dir).unwrap();
    std::fs::create_dir_all(&passwords).unwrap();
    for file in ["acl-rules.conf", "make-acl.sh"] {
        std::fs::write(config_dir.join(file), config[file].as_str().unwrap()).unwrap();
    }
    std::fs::write(passwords.join("gatehouse"), "operator-secret").unwrap();
    std::fs::write(passwords.join("gatehouse-scan"), "scan-secret").unwrap();
    let acl = dir.path().join("users.acl");
    // The init container's script, run by a real shell.
    let status = Command::new("sh")
        .arg(config_dir.join("make-acl.sh"))
        .env("CONFIG_DIR", &config_dir)
        .env("PASSWORDS_DIR", &passwords)
        .env("ACL_FILE", &acl)
        .status()
        .unwrap();
    assert!(status.success());
    let written = std::fs::read_to_string(&acl).unwrap();
    assert!(
        !written.contains("scan-secret") && !written.contains("operator-secret"),
        "passwords are stored hashed:\n{written}"
    );

    // The chart's redis.conf with this machine's paths and a free port.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let data = dir.path().join("data");
    std::fs::create_dir_all(&data).unwrap();
    let conf = config["redis.conf"]
        .as_str()
        .unwrap()
        .replace("dir /data", &format!("dir {}", data.display()))
        .replace(
            "aclfile /acl/users.acl",
            &format!("aclfile {}", acl.display()),
        )
        .replace("port 6379", &format!("port {port}"))
        .replace("bind * -::*", "bind 127.0.0.1");
    std::fs::write(config_dir.join("redis.conf"), conf).unwrap();
    let mut server = Command::new(
        std::env::var("GATEHOUSE_REDIS_SERVER").unwrap_or_else(|_| "redis-server".into()),
    )
    .arg(config_dir.join("redis.conf"))
    .stdout(Stdio::null())
    .spawn()
    .unwrap();
    let result = std::panic::catch_unwind(|| {
        let connect = |user: Option<(&str, &str)>| {
            let url = match user {
                Some((u, p)) => format!("redis://{u}:{p}@127.0.0.1:{port}/0"),
                None => format!("redis://127.0.0.1:{port}/0"),
            };
            let client = redis::Client::open(url).unwrap();
            let started = std::time::Instant::now();
            loop {
                match client.get_connection() {
                    Ok(c) => return Ok(c),
                    Err(e) if e.is_connection_refusal() && started.elapsed().as_secs() < 10 => {
                        std::thread::sleep(std::time::Duration::from_millis(50));
                    }
                    Err(e) => return Err(e),
                }
            }
        };
        // The default user is off.
        let mut anonymous = connect(None);
        if let Ok(c) = anonymous.as_mut() {
            let refused: redis::RedisResult<String> = redis::cmd("PING").query(c);
            assert!(refused.is_err(), "the default user must be off");
        }
        assert!(connect(Some(("gatehouse-scan", "wrong"))).is_err());
        let mut scan = connect(Some(("gatehouse-scan", "scan-secret"))).unwrap();
        let id: String = redis::cmd("XADD")
            .arg("{gatehouse-results}:results")
            .arg("*")
            .arg("k")
            .arg("v")
            .query(&mut scan)
            .unwrap();
        let read: redis::RedisResult<redis::Value> = redis::cmd("XRANGE")
            .arg("{gatehouse-results}:results")
            .arg("-")
            .arg("+")
            .query(&mut scan);
        assert!(read.is_err(), "scan pods may not read results");
        let mut operator = connect(Some(("gatehouse", "operator-secret"))).unwrap();
        let len: u64 = redis::cmd("XLEN")
            .arg("{gatehouse-results}:results")
            .query(&mut operator)
            .unwrap();
        assert_eq!(len, 1, "{id}");
    });
    let _ = server.kill();
    let _ = server.wait();
    if let Err(panic) = result {
        std::panic::resume_unwind(panic);
    }
}

#[test]
fn the_redis_users_the_pods_name_are_the_users_the_acl_defines() {
    let rules = std::fs::read_to_string(chart().join("files/redis-acl-rules.conf")).unwrap();
    let users: BTreeSet<&str> = rules
        .lines()
        .filter(|l| !l.trim_start().starts_with('#') && !l.trim().is_empty())
        .filter_map(|l| l.split_whitespace().next())
        .collect();
    let objects = objects(&render(&[]).unwrap());
    let user_of = |url: &str| {
        url.split("://")
            .nth(1)
            .unwrap()
            .split('@')
            .next()
            .unwrap()
            .to_owned()
    };
    let operator = container_env(&objects, "gatehouse-operator");
    let webhook = container_env(&objects, "gatehouse-webhook");
    let get = |env: &[(String, String)], name: &str| {
        env.iter().find(|(n, _)| n == name).unwrap().1.clone()
    };
    let named: BTreeSet<String> = [
        user_of(&get(&operator, "GATEHOUSE_REDIS_URL")),
        user_of(&get(&operator, "GATEHOUSE_RESULTS_REDIS_URL")),
        user_of(&get(&webhook, "GATEHOUSE_REDIS_URL")),
    ]
    .into_iter()
    .collect();
    let defined: BTreeSet<String> = users.iter().map(|&u| u.to_owned()).collect();
    assert_eq!(named, defined);
    // Scan pods, which run in other namespaces, get the Service's namespaced name.
    assert!(
        get(&operator, "GATEHOUSE_RESULTS_REDIS_URL")
            .starts_with("redis://gatehouse-scan@gatehouse-redis.gatehouse.svc:"),
        "{operator:?}"
    );
    // And the password files the pods read are the keys the chart's Redis loads.
    let secret = objects
        .iter()
        .find(|o| name(o) == "Secret gatehouse/gatehouse-redis-users")
        .unwrap();
    let keys: BTreeSet<String> = secret["data"]
        .as_mapping()
        .unwrap()
        .keys()
        .map(|k| k.as_str().unwrap().to_owned())
        .collect();
    assert_eq!(keys, defined);
}

/// The shell lines of the ```sh blocks of `markdown` after `heading`, up to the next `## `
/// heading, with backslash continuations joined.
fn shell_lines(markdown: &str, heading: &str) -> Vec<String> {
    let section = markdown
        .split_once(heading)
        .unwrap_or_else(|| panic!("no {heading}"))
        .1;
    let section = section.split("\n## ").next().unwrap();
    let mut lines = Vec::new();
    let mut in_block = false;
    let mut current = String::new();
    for line in section.lines() {
        if line.starts_with("```") {
            in_block = line.trim() == "```sh";
            continue;
        }
        if !in_block {
            continue;
        }
        let line = line.split(" #").next().unwrap().trim_end();
        if let Some(start) = line.strip_suffix('\\') {
            current.push_str(start);
            current.push(' ');
        } else {
            current.push_str(line);
            lines.push(std::mem::take(&mut current).trim().to_owned());
        }
    }
    lines
}

#[test]
fn the_documented_installs_create_every_namespace_first_and_pull_only_what_they_load() {
    for (file, heading) in [
        ("README.md", "## Install on a cluster"),
        ("docs/install.md", "## Quick start on a laptop"),
    ] {
        let text = std::fs::read_to_string(root().join(file)).unwrap();
        let lines = shell_lines(&text, heading);
        let mut created: BTreeSet<String> = BTreeSet::new();
        let mut installs = 0;
        for line in &lines {
            let words: Vec<&str> = line.split_whitespace().collect();
            if let Some(i) = words
                .windows(3)
                .position(|w| w == ["kubectl", "create", "namespace"])
            {
                created.insert(words[i + 3].to_owned());
            }
            if words.starts_with(&["helm", "install"]) {
                installs += 1;
                let mut args: Vec<String> = Vec::new();
                let mut it = words.iter().skip(3);
                while let Some(word) = it.next() {
                    if *word == "--set" {
                        args.push("--set".into());
                        args.push(it.next().unwrap().trim_matches('\'').to_owned());
                    }
                }
                let args: Vec<&str> = args.iter().map(String::as_str).collect();
                let objects = objects(&render(&args).unwrap());
                for o in &objects {
                    if let Some(ns) = o["metadata"]["namespace"].as_str() {
                        assert!(
                            created.contains(ns),
                            "{file}: `{line}` puts {} in namespace {ns}, not created before it",
                            name(o)
                        );
                    }
                }
                for (owner, pod) in pod_specs(&objects) {
                    for c in containers(&pod) {
                        assert_ne!(
                            c["imagePullPolicy"].as_str(),
                            Some("Never"),
                            "{file}: {owner} would never pull {}",
                            c["image"].as_str().unwrap()
                        );
                    }
                }
            }
        }
        assert_eq!(installs, 1, "{file}: {lines:?}");
    }
}

#[test]
fn the_redis_acl_script_refuses_a_user_without_a_password() {
    let config = redis_config();
    for (gatehouse, scan) in [(Some("a"), None), (Some("a"), Some("")), (None, Some("b"))] {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("acl-rules.conf"),
            config["acl-rules.conf"].as_str().unwrap(),
        )
        .unwrap();
        std::fs::write(
            dir.path().join("make-acl.sh"),
            config["make-acl.sh"].as_str().unwrap(),
        )
        .unwrap();
        let passwords = dir.path().join("passwords");
        std::fs::create_dir_all(&passwords).unwrap();
        for (user, password) in [("gatehouse", gatehouse), ("gatehouse-scan", scan)] {
            if let Some(p) = password {
                std::fs::write(passwords.join(user), p).unwrap();
            }
        }
        let output = Command::new("sh")
            .arg(dir.path().join("make-acl.sh"))
            .env("CONFIG_DIR", dir.path())
            .env("PASSWORDS_DIR", &passwords)
            .env("ACL_FILE", dir.path().join("users.acl"))
            .output()
            .unwrap();
        assert!(
            !output.status.success(),
            "{gatehouse:?} {scan:?}: {}",
            std::fs::read_to_string(dir.path().join("users.acl")).unwrap_or_default()
        );
        assert!(String::from_utf8_lossy(&output.stderr).contains("no password for Redis user"));
    }
}

#[test]
fn the_values_schema_refuses_what_the_binaries_would_refuse_at_start() {
    for set in [
        "operator.maxRunning=100001",
        "operator.jobTtlSeconds=2592001",
        "operator.resultTimeoutSeconds=86401",
        "operator.resultTimeoutSeconds=9",
        "operator.baselineTtlHours=721",
        "webhook.dedupTtlHours=87841",
        "webhook.dedupTtlHours=71",
    ] {
        let error = render(&["--set", set]).expect_err(set);
        assert!(error.contains("schema"), "--set {set}: {error}");
    }
    // An environment value must be a string: the API server refuses a number there.
    let error = render(&[
        "--set",
        "webhook.extraEnv[0].name=GATEHOUSE_MAX_CONNECTIONS",
        "--set",
        "webhook.extraEnv[0].value=2048",
    ])
    .expect_err("a number as an env value");
    assert!(error.contains("schema"), "{error}");
    render(&[
        "--set",
        "webhook.extraEnv[0].name=GATEHOUSE_MAX_CONNECTIONS",
        "--set-string",
        "webhook.extraEnv[0].value=2048",
        "--set",
        "operator.baselineTtlHours=720",
    ])
    .unwrap();
}

#[test]
fn a_new_chart_version_does_not_restart_redis() {
    fn redis_template(chart_dir: &Path) -> Value {
        let output = Command::new(tool("helm"))
            .args(["template", "gatehouse"])
            .arg(chart_dir)
            .args(["--namespace", "gatehouse", "--kube-version", KUBE_VERSION])
            .output()
            .unwrap();
        assert!(
            output.status.success(),
            "{}",
            String::from_utf8_lossy(&output.stderr)
        );
        objects(&String::from_utf8(output.stdout).unwrap())
            .into_iter()
            .find(|o| kind(o) == "StatefulSet")
            .unwrap()["spec"]["template"]
            .clone()
    }
    let copy = tempfile::tempdir().unwrap();
    let status = Command::new("cp")
        .arg("-r")
        .arg(chart())
        .arg(copy.path())
        .status()
        .unwrap();
    assert!(status.success());
    let bumped = copy.path().join("gatehouse");
    let meta = std::fs::read_to_string(bumped.join("Chart.yaml")).unwrap();
    std::fs::write(
        bumped.join("Chart.yaml"),
        meta.replace("version: 0.1.0", "version: 0.2.0")
            .replace("appVersion: \"0.1.0\"", "appVersion: \"0.2.0\""),
    )
    .unwrap();
    assert_ne!(
        meta,
        std::fs::read_to_string(bumped.join("Chart.yaml")).unwrap()
    );
    assert_eq!(redis_template(&chart()), redis_template(&bumped));
}

#[test]
fn scan_pods_resolve_names_where_dns_egress_says() {
    let default = objects(&render(&["--set", "networkPolicy.scanNamespaces={team-a}"]).unwrap());
    let scan = |objects: &[Value]| {
        objects
            .iter()
            .find(|o| name(o) == "NetworkPolicy team-a/gatehouse-scan")
            .unwrap()["spec"]["egress"][0]
            .clone()
    };
    assert_eq!(
        scan(&default)["to"][0]["podSelector"]["matchLabels"]["k8s-app"].as_str(),
        Some("kube-dns")
    );
    let node_local = objects(
        &render(&[
            "--set",
            "networkPolicy.scanNamespaces={team-a}",
            "--set",
            "networkPolicy.dnsEgress[0].to[0].ipBlock.cidr=169.254.20.10/32",
            "--set",
            "networkPolicy.dnsEgress[0].ports[0].port=53",
            "--set",
            "networkPolicy.dnsEgress[0].ports[0].protocol=UDP",
        ])
        .unwrap(),
    );
    assert_eq!(
        scan(&node_local)["to"][0]["ipBlock"]["cidr"].as_str(),
        Some("169.254.20.10/32")
    );
}
