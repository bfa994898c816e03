//! The offline tools of `gatehouse-operator`, for GitOps pipelines and for people: they work on
//! files alone. `check-policy` validates ScanPolicy YAML as the API server and the operator would
//! (the generated CRD schema, its CEL rules evaluated by kube's CEL engine, then Gatehouse's own
//! checks: globs, image digests, quantities, names); `preview` prints the per-scan Secret (values
//! redacted) and the Jobs the operator would create for a ScanRequest, built by the functions the
//! controller itself calls ([`decide::snapshot`], [`jobs::desired_secret`],
//! [`jobs::desired_job`]).
//!
//! Nothing here may talk to a cluster or to GitHub, mint a token, or read the master key: what it
//! prints must be safe to paste into a pull request or a CI log.

use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::io::{Read as _, Write};
use std::path::{Path, PathBuf};

use gatehouse_crds::scanpolicy::{ForkMode, ScanPolicy, ScanPolicySpec};
use gatehouse_crds::selection::{PatternList, PolicyProblem};
use gatehouse_crds::{ScanRequest, naming};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::CustomResourceExt;
use kube::core::cel::{ErrorKind, Validator};
use serde::Deserialize as _;
use serde_json::{Map, Value, json};

use crate::decide;
use crate::jobs::{self, BuildSettings, secret_keys};

/// `check-policy` exit status: every ScanPolicy is valid.
pub const EXIT_VALID: u8 = 0;
/// `check-policy` exit status: some ScanPolicy has a problem.
pub const EXIT_PROBLEMS: u8 = 1;
/// `check-policy` exit status: a file could not be read or is not YAML.
pub const EXIT_UNREADABLE: u8 = 2;

/// The UID `preview` gives a ScanRequest that has none (one written by hand).
pub const PLACEHOLDER_UID: &str = "00000000-0000-0000-0000-000000000000";

/// Default of `--agent-image`, as `run` has it.
pub const DEFAULT_AGENT_IMAGE: &str = concat!(
    "ghcr.io/gatehouse-dev/gatehouse:",
    env!("CARGO_PKG_VERSION")
);
/// Default of `--job-ttl-seconds`, as `run` has it.
pub const DEFAULT_JOB_TTL_SECONDS: i32 = 3600;
/// Default of `--results-redis-url`, as `run` has it.
pub const DEFAULT_RESULTS_REDIS_URL: &str = "redis://gatehouse-redis:6379";

/// The message of the CEL rule on `image`, repeated by the Rust check that runs when CEL cannot.
const IMAGE_MESSAGE: &str = "image must be pinned by digest: name[:tag]@sha256:<64 hex digits>";

/// Flags of `gatehouse-operator check-policy`.
#[derive(Clone, Debug, clap::Args)]
pub struct CheckPolicyArgs {
    /// ScanPolicy YAML files, each with one or more documents (`-` reads standard input).
    #[arg(required = true, value_name = "FILE")]
    pub files: Vec<PathBuf>,
}

/// Flags of `gatehouse-operator preview`. The build settings read the same environment variables,
/// with the same defaults, as `run`.
#[derive(Clone, Debug, clap::Args)]
pub struct PreviewArgs {
    /// YAML file with the ScanPolicy the request's spec.policyRef names.
    #[arg(long, value_name = "FILE")]
    pub policy: PathBuf,
    /// YAML file with the ScanRequest (as in deploy/samples/scanrequest.yaml).
    #[arg(long, value_name = "FILE")]
    pub request: PathBuf,
    /// Image of gatehouse-agent (the checkout and report steps of scan pods).
    #[arg(long, env = "GATEHOUSE_AGENT_IMAGE", default_value = DEFAULT_AGENT_IMAGE)]
    pub agent_image: String,
    /// Seconds a finished scan Job and its pod are kept.
    #[arg(long, env = "GATEHOUSE_JOB_TTL_SECONDS", default_value_t = DEFAULT_JOB_TTL_SECONDS, value_parser = clap::value_parser!(i32).range(0..=2_592_000))]
    pub job_ttl_seconds: i32,
    /// Redis URL scan pods publish results to.
    #[arg(long, env = "GATEHOUSE_RESULTS_REDIS_URL", default_value = DEFAULT_RESULTS_REDIS_URL)]
    pub results_redis_url: String,
    /// File holding the password of the user in --results-redis-url (as `run`); not read: the
    /// Secret shows the key with a redacted value.
    #[arg(long, env = "GATEHOUSE_RESULTS_REDIS_PASSWORD_FILE")]
    pub results_redis_password_file: Option<PathBuf>,
    /// PEM bundle of the CA certificates scan pods verify Redis with (as `run`); not read: the
    /// Secret shows the key with a redacted value.
    #[arg(long, env = "GATEHOUSE_RESULTS_REDIS_CA_FILE")]
    pub results_redis_ca_file: Option<PathBuf>,
    /// GitHub API URL the checkout step downloads from.
    #[arg(
        long,
        env = "GATEHOUSE_GITHUB_API_URL",
        default_value = "https://api.github.com"
    )]
    pub github_api_url: String,
}

/// What an offline tool failed to do.
#[derive(Debug, thiserror::Error)]
pub enum OfflineError {
    /// A file could not be read.
    #[error("failed to read {path}: {source}")]
    ReadFile {
        /// The file.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// A file is not YAML (serde_yaml's message carries the line and column).
    #[error("failed to parse {path} as YAML: {source}")]
    ParseYaml {
        /// The file.
        path: String,
        /// Why, and where.
        source: serde_yaml::Error,
    },
    /// A YAML document has no JSON form (a key that is a list, for instance).
    #[error("failed to convert document {document} of {path} to JSON: {source}")]
    ConvertYaml {
        /// The file.
        path: String,
        /// The document, from 1.
        document: usize,
        /// Why.
        source: serde_json::Error,
    },
    /// The CRD of a kind has no schema (a bug in `gatehouse-crds`).
    #[error("failed to take the {kind} schema from its CRD")]
    Schema {
        /// The kind.
        kind: &'static str,
    },
    /// A file does not hold the object `preview` needs.
    #[error("failed to find {what} in {path}")]
    FindObject {
        /// What was looked for.
        what: String,
        /// The file.
        path: String,
    },
    /// The object `preview` works from breaks the schema, a CEL rule or a Gatehouse check.
    #[error("failed to preview: {kind} {object} in {path} is invalid: {first}{more}")]
    InvalidObject {
        /// Its kind.
        kind: &'static str,
        /// `namespace/name`.
        object: String,
        /// The file.
        path: String,
        /// The first problem.
        first: String,
        /// How many more, as text.
        more: String,
    },
    /// A valid object still does not decode as the operator's type.
    #[error("failed to decode {object} in {path} as a {kind}: {source}")]
    DecodeObject {
        /// Its kind.
        kind: &'static str,
        /// `namespace/name`.
        object: String,
        /// The file.
        path: String,
        /// Why.
        source: serde_json::Error,
    },
    /// The policy lives in another namespace than the request.
    #[error(
        "failed to preview: ScanPolicy {policy} does not govern namespace {namespace} of ScanRequest {request} (a ScanRequest uses the ScanPolicy of its own namespace)"
    )]
    PolicyNamespace {
        /// `namespace/name` of the policy.
        policy: String,
        /// The request's namespace.
        namespace: String,
        /// `namespace/name` of the request.
        request: String,
    },
    /// The request's `policyRef` names another policy.
    #[error(
        "failed to preview: ScanRequest {request} names ScanPolicy {policy_ref:?} in spec.policyRef, not {policy:?}"
    )]
    PolicyName {
        /// `namespace/name` of the request.
        request: String,
        /// What its `spec.policyRef.name` says.
        policy_ref: String,
        /// The policy's name.
        policy: String,
    },
    /// The policy snapshot refuses the request (a scanner the policy does not have).
    #[error("failed to preview: {0}")]
    Snapshot(#[from] decide::Invalid),
    /// An object could not be turned into JSON.
    #[error("failed to render {what}: {source}")]
    RenderJson {
        /// The object.
        what: String,
        /// Why.
        source: serde_json::Error,
    },
    /// An object could not be written as YAML.
    #[error("failed to render {what} as YAML: {source}")]
    RenderYaml {
        /// The object.
        what: String,
        /// Why.
        source: serde_yaml::Error,
    },
    /// Standard output or error could not be written.
    #[error("failed to write the output: {0}")]
    Write(#[from] std::io::Error),
}

/// One problem of one object: where (`spec.scanners[0].image`) and what.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Problem {
    /// Path of the field, as the API server writes it.
    pub field: String,
    /// What is wrong.
    pub message: String,
}

impl Problem {
    fn new(field: impl Into<String>, message: impl Into<String>) -> Problem {
        Problem {
            field: field.into(),
            message: message.into(),
        }
    }
}

/// What `check-policy` makes of one YAML document.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// An empty document (`---` with nothing after it).
    Empty,
    /// A document of another kind, described as `apiVersion/kind namespace/name`.
    Skipped(String),
    /// A ScanPolicy, or a document meant to be one, and its problems (none when valid).
    Policy {
        /// `namespace/name`, `<none>` for a part that is missing.
        object: String,
        /// Its problems.
        problems: Vec<Problem>,
    },
}

/// A problem found while walking a schema, and whether it stops CEL rules from being evaluated
/// (the API server skips them after a wrong type, a missing required field, a value outside an
/// enum, or a value or list that is too long).
struct Found {
    problem: Problem,
    blocks_cel: bool,
}

/// A CRD's schema, ready for checking objects of its kind.
struct Kind {
    name: &'static str,
    api_version: String,
    /// The CRD's OpenAPI schema as generated, for CEL and defaulting.
    openapi: Value,
    /// The same with `metadata` pointing at ObjectMeta's schema, and `apiVersion` and `kind`.
    root: Value,
}

impl Kind {
    fn new(
        kind: &'static str,
        api_version: String,
        crd: &CustomResourceDefinition,
    ) -> Result<Kind, OfflineError> {
        let openapi = gatehouse_crds::openapi_schema(crd).ok_or(OfflineError::Schema { kind })?;
        let mut root = openapi.clone();
        let properties = root
            .get_mut("properties")
            .and_then(Value::as_object_mut)
            .ok_or(OfflineError::Schema { kind })?;
        properties.insert(
            "metadata".to_owned(),
            json!({"$ref": format!("#/components/schemas/{OBJECT_META}")}),
        );
        properties.insert("apiVersion".to_owned(), json!({"type": "string"}));
        properties.insert("kind".to_owned(), json!({"type": "string"}));
        Ok(Kind {
            name: kind,
            api_version,
            openapi,
            root,
        })
    }
}

/// Name under which ObjectMeta's own schema joins the definitions.
const OBJECT_META: &str = "gatehouse.offline.ObjectMeta";

/// Checks ScanPolicies (and, for `preview`, ScanRequests) against their CRDs, their CEL rules
/// and Gatehouse's own rules. Build it once; checking needs no I/O.
pub struct Checker {
    cel: Validator,
    policy: Kind,
    request: Kind,
    /// Definitions `$ref`s point into: ObjectMeta and the types it uses.
    defs: Map<String, Value>,
}

impl std::fmt::Debug for Checker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Checker").finish_non_exhaustive()
    }
}

impl Checker {
    /// The checker, with the schemas generated from the Rust types.
    pub fn new() -> Result<Checker, OfflineError> {
        let generator = schemars::generate::SchemaSettings::openapi3().into_generator();
        let mut meta = generator.into_root_schema_for::<ObjectMeta>().to_value();
        let mut defs = match meta.pointer_mut("/components/schemas").map(Value::take) {
            Some(Value::Object(map)) => map,
            _ => Map::new(),
        };
        if let Some(map) = meta.as_object_mut() {
            map.remove("components");
            map.remove("$schema");
        }
        defs.insert(OBJECT_META.to_owned(), meta);
        Ok(Checker {
            cel: Validator::new(),
            policy: Kind::new(
                "ScanPolicy",
                api_version::<ScanPolicy>(),
                &ScanPolicy::crd(),
            )?,
            request: Kind::new(
                "ScanRequest",
                api_version::<ScanRequest>(),
                &ScanRequest::crd(),
            )?,
            defs,
        })
    }

    /// The verdict on one document of a `check-policy` file.
    pub fn check_document(&self, document: &Value) -> Verdict {
        let Some(object) = document.as_object() else {
            return match document {
                Value::Null => Verdict::Empty,
                _ => Verdict::Policy {
                    object: "<none>/<none>".to_owned(),
                    problems: vec![Problem::new(
                        "document",
                        "not a Kubernetes object (a mapping with apiVersion, kind and metadata)",
                    )],
                },
            };
        };
        let kind = object.get("kind").and_then(Value::as_str);
        let api_version = object.get("apiVersion").and_then(Value::as_str);
        let group = api_version.and_then(|v| v.split_once('/')).map(|(g, _)| g);
        let meant_as_policy = match (kind, group) {
            (Some(kind), _) if kind.eq_ignore_ascii_case(self.policy.name) => true,
            // Another kind of the gatehouse.dev group is a typo unless it is a ScanRequest.
            (Some(kind), Some(gatehouse_crds::API_GROUP)) => kind != self.request.name,
            (Some(_), _) => false,
            // Without a kind nobody can tell: kubectl refuses it, and so does this.
            (None, _) => true,
        };
        if !meant_as_policy {
            return Verdict::Skipped(format!(
                "{}/{} {}",
                api_version.unwrap_or("<none>"),
                kind.unwrap_or("<none>"),
                object_name(document)
            ));
        }
        Verdict::Policy {
            object: object_name(document),
            problems: self.check_policy(document).0,
        }
    }

    /// A ScanPolicy's problems (none when valid), and the object as the API server would store
    /// it (unknown fields pruned, defaults applied).
    pub fn check_policy(&self, document: &Value) -> (Vec<Problem>, Value) {
        let (mut problems, stored, schema_clean) = self.check_object(document, &self.policy);
        let spec = stored.get("spec").unwrap_or(&Value::Null);
        problems.extend(policy_problems(spec));
        // Schema problems explain why the operator could not read it; say it only otherwise.
        if schema_clean && let Err(e) = ScanPolicySpec::deserialize(spec) {
            problems.push(Problem::new(
                "spec",
                format!("the operator cannot read it: {e}"),
            ));
        }
        (dedup(problems), stored)
    }

    /// A ScanRequest's problems (none when valid), and the object as the API server would store
    /// it.
    pub fn check_request(&self, document: &Value) -> (Vec<Problem>, Value) {
        let (problems, stored, _) = self.check_object(document, &self.request);
        (dedup(problems), stored)
    }

    /// Kind, apiVersion, metadata, schema and CEL rules; the stored form; whether the schema
    /// walk found nothing.
    fn check_object(&self, document: &Value, kind: &Kind) -> (Vec<Problem>, Value, bool) {
        let mut problems = Vec::new();
        match document.get("apiVersion") {
            Some(Value::String(v)) if *v == kind.api_version => {}
            Some(Value::String(v)) => problems.push(Problem::new(
                "apiVersion",
                format!("must be {}, not {v:?}", kind.api_version),
            )),
            _ => problems.push(Problem::new(
                "apiVersion",
                format!("required value: {}", kind.api_version),
            )),
        }
        match document.get("kind") {
            Some(Value::String(k)) if k == kind.name => {}
            Some(Value::String(k)) => problems.push(Problem::new(
                "kind",
                format!("must be {}, not {k:?}", kind.name),
            )),
            _ => problems.push(Problem::new(
                "kind",
                format!("required value: {}", kind.name),
            )),
        }
        problems.extend(metadata_problems(document));

        let root = Node::new(&kind.root, &self.defs);
        let mut found = Vec::new();
        let mut stored = document.clone();
        prune(&mut stored, root, "", &mut found);
        validate(&stored, root, "", &mut found);
        let schema_clean = found.is_empty();
        let blocked = found.iter().any(|f| f.blocks_cel);
        problems.extend(found.into_iter().map(|f| f.problem));
        let stored = kube::core::cel::apply_defaults(&kind.openapi, &stored);
        if blocked {
            problems.push(Problem::new(
                "x-kubernetes-validations",
                "CEL rules not evaluated because of the problems above (the API server skips them too)",
            ));
        } else if let Err(errors) = self.cel.validate(&kind.openapi, &stored, None) {
            problems.extend(errors.iter().map(|e| {
                let field = if e.field_path.is_empty() {
                    "(object)".to_owned()
                } else {
                    e.field_path.clone()
                };
                match e.kind {
                    ErrorKind::ValidationFailure => Problem::new(field, e.message.clone()),
                    _ => Problem::new(
                        field,
                        format!("failed to evaluate CEL rule {:?}: {}", e.rule, e.message),
                    ),
                }
            }));
        }
        (problems, stored, schema_clean)
    }
}

fn api_version<K: kube::Resource<DynamicType = ()>>() -> String {
    K::api_version(&()).into_owned()
}

/// `namespace/name` of a document, `<none>` for a missing part.
fn object_name(document: &Value) -> String {
    let part = |key: &str| {
        document
            .get("metadata")
            .and_then(|m| m.get(key))
            .and_then(Value::as_str)
            .unwrap_or("<none>")
            .to_owned()
    };
    format!("{}/{}", part("namespace"), part("name"))
}

/// Problems in the same place with the same words are one problem (a Rust check may repeat a CEL
/// rule).
fn dedup(problems: Vec<Problem>) -> Vec<Problem> {
    let mut seen = BTreeSet::new();
    problems
        .into_iter()
        .filter(|p| seen.insert((p.field.clone(), p.message.clone())))
        .collect()
}

fn metadata_problems(document: &Value) -> Vec<Problem> {
    let mut problems = Vec::new();
    let meta = document.get("metadata");
    match meta.and_then(|m| m.get("name")) {
        Some(Value::String(name)) if is_dns1123_subdomain(name) => {}
        Some(Value::String(name)) => problems.push(Problem::new(
            "metadata.name",
            format!("{name:?} is not a DNS subdomain (lowercase letters, digits, '-' and '.', starting and ending with a letter or digit, at most 253 characters)"),
        )),
        Some(Value::Null) | None => problems.push(Problem::new(
            "metadata.name",
            "required value",
        )),
        // The schema walk reports the wrong type.
        Some(_) => {}
    }
    match meta.and_then(|m| m.get("namespace")) {
        Some(Value::String(namespace)) if naming::is_dns1123_label(namespace) => {}
        Some(Value::String(namespace)) => problems.push(Problem::new(
            "metadata.namespace",
            format!("{namespace:?} is not a DNS label (lowercase letters, digits and '-', starting and ending with a letter or digit, at most 63 characters)"),
        )),
        Some(Value::Null) | None => problems.push(Problem::new(
            "metadata.namespace",
            "required value: the namespace where the policy's ScanRequests and Jobs live",
        )),
        Some(_) => {}
    }
    problems
}

/// Whether `name` is a DNS-1123 subdomain: dot-separated DNS labels, at most 253 characters.
fn is_dns1123_subdomain(name: &str) -> bool {
    name.len() <= 253 && name.split('.').all(naming::is_dns1123_label)
}

/// Gatehouse's own checks, which the schema and CEL cannot make. They read the JSON form, so
/// they run even when another problem keeps the spec from decoding; what is not a string where
/// a string belongs is the schema walk's to report.
/// What the schema cannot check of a policy's spec (globs, image digests, quantities, Secret
/// names), field by field; used by `check-policy` and by the policies' `Ready` condition.
pub fn policy_problems(spec: &Value) -> Vec<Problem> {
    let strings = |value: Option<&Value>| -> Vec<String> {
        value
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(|v| v.as_str().map(str::to_owned))
            .collect()
    };
    let mut problems = Vec::new();
    glob_problems(
        "spec.repositories",
        &strings(spec.get("repositories")),
        true,
        &mut problems,
    );
    glob_problems(
        "spec.baseBranches",
        &strings(spec.get("baseBranches")),
        false,
        &mut problems,
    );
    let scanners = spec.get("scanners").and_then(Value::as_array);
    for (i, scanner) in scanners.into_iter().flatten().enumerate() {
        let at = format!("spec.scanners[{i}]");
        glob_problems(
            &format!("{at}.paths"),
            &strings(scanner.get("paths")),
            false,
            &mut problems,
        );
        if let Some(image) = scanner.get("image").and_then(Value::as_str)
            && !is_pinned(image)
        {
            problems.push(Problem::new(format!("{at}.image"), IMAGE_MESSAGE));
        }
        for which in ["requests", "limits"] {
            let list = scanner
                .get("resources")
                .and_then(|r| r.get(which))
                .and_then(Value::as_object);
            for (name, quantity) in list.into_iter().flatten() {
                let text = match quantity {
                    Value::String(text) => text.clone(),
                    Value::Number(n) => n.to_string(),
                    _ => continue,
                };
                if !is_quantity(&text) {
                    problems.push(Problem::new(
                        format!("{at}.resources.{which}.{name}"),
                        format!(
                            "{text:?} is not a Kubernetes quantity (like 500m, 2, 512Mi, 2Gi): the scanner's Job would be refused"
                        ),
                    ));
                }
            }
        }
        if let Some(name) = scanner
            .pointer("/blackduck/credentialsSecretRef/name")
            .and_then(Value::as_str)
            && !is_dns1123_subdomain(name)
        {
            problems.push(Problem::new(
                format!("{at}.blackduck.credentialsSecretRef.name"),
                format!("{name:?} is not a valid Secret name (a DNS subdomain)"),
            ));
        }
    }
    // The operator's own verdict, when it can read the spec; the checks above say the same with
    // exact field paths, so it only adds what they might miss.
    let found_globs = problems.iter().any(|p| {
        p.message.starts_with("invalid glob") || p.message.starts_with("has only `!` exclusions")
    });
    if !found_globs && let Ok(spec) = ScanPolicySpec::deserialize(spec) {
        problems.extend(
            spec.problems()
                .iter()
                .map(|p| Problem::new("spec", p.to_string())),
        );
    }
    problems
}

/// Each glob of a list compiled as the operator compiles it, and the list as a whole.
fn glob_problems(field: &str, patterns: &[String], case_insensitive: bool, out: &mut Vec<Problem>) {
    for (i, pattern) in patterns.iter().enumerate() {
        // Beside an inclusion, so that a lone exclusion is judged by its glob alone.
        let pair = [pattern.clone(), "x".to_owned()];
        if let Err(PolicyProblem::InvalidGlob { reason, .. }) =
            PatternList::compile("glob", &pair, case_insensitive)
        {
            out.push(Problem::new(
                format!("{field}[{i}]"),
                format!("invalid glob {pattern:?}: {reason}"),
            ));
        }
    }
    if !patterns.is_empty() && patterns.iter().all(|p| p.starts_with('!')) {
        out.push(Problem::new(
            field,
            "has only `!` exclusions; add at least one pattern to include",
        ));
    }
}

/// `name[:tag]@sha256:<64 lowercase hex>`, as the CEL rule on `image` says.
fn is_pinned(image: &str) -> bool {
    let Some((name, digest)) = image.split_once('@') else {
        return false;
    };
    let hex = digest.strip_prefix("sha256:").unwrap_or_default();
    !name.is_empty()
        && !name.chars().any(char::is_whitespace)
        && hex.len() == 64
        && hex
            .chars()
            .all(|c| c.is_ascii_digit() || ('a'..='f').contains(&c))
}

/// `^([+-]?[0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)$` with the suffix rules of
/// `resource.ParseQuantity`: one known suffix, or a decimal exponent.
fn is_quantity(text: &str) -> bool {
    const SUFFIXES: &[&str] = &[
        "", "Ki", "Mi", "Gi", "Ti", "Pi", "Ei", "n", "u", "m", "k", "M", "G", "T", "P", "E",
    ];
    let unsigned = text.strip_prefix(['+', '-']).unwrap_or(text);
    let number_end = unsigned
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(unsigned.len());
    let (number, suffix) = unsigned.split_at(number_end);
    if number.is_empty() || number == "." || number.matches('.').count() > 1 {
        return false;
    }
    SUFFIXES.contains(&suffix)
        || suffix
            .strip_prefix(['e', 'E'])
            .map(|rest| rest.strip_prefix(['+', '-']).unwrap_or(rest))
            .is_some_and(|exp| !exp.is_empty() && exp.chars().all(|c| c.is_ascii_digit()))
}

// ----- the schema walk -----

/// A position in a schema, with the definitions its `$ref`s point into.
#[derive(Clone, Copy)]
struct Node<'a> {
    schema: &'a Value,
    defs: &'a Map<String, Value>,
}

impl<'a> Node<'a> {
    /// The node, following `$ref` (directly or as the single member of `allOf`).
    fn new(schema: &'a Value, defs: &'a Map<String, Value>) -> Node<'a> {
        let mut schema = schema;
        for _ in 0..16 {
            let target = schema
                .get("$ref")
                .or_else(|| match schema.get("allOf").and_then(Value::as_array) {
                    Some(all) if all.len() == 1 => all[0].get("$ref"),
                    _ => None,
                })
                .and_then(Value::as_str)
                .and_then(|r| r.rsplit('/').next())
                .and_then(|name| defs.get(name));
            match target {
                Some(def) => schema = def,
                None => break,
            }
        }
        Node { schema, defs }
    }

    fn flag(&self, key: &str) -> bool {
        self.schema.get(key).and_then(Value::as_bool) == Some(true)
    }

    fn count(&self, key: &str) -> Option<u64> {
        self.schema.get(key).and_then(Value::as_u64)
    }

    /// The schema's types, without `null`.
    fn types(&self) -> Vec<&'a str> {
        match self.schema.get("type") {
            Some(Value::String(t)) => vec![t.as_str()],
            Some(Value::Array(all)) => all
                .iter()
                .filter_map(Value::as_str)
                .filter(|t| *t != "null")
                .collect(),
            _ => Vec::new(),
        }
    }

    fn nullable(&self) -> bool {
        self.flag("nullable")
            || self
                .schema
                .get("type")
                .and_then(Value::as_array)
                .is_some_and(|all| all.iter().any(|t| t == "null"))
    }

    fn properties(&self) -> Option<&'a Map<String, Value>> {
        self.schema.get("properties").and_then(Value::as_object)
    }

    fn field(&self, name: &str) -> Option<Node<'a>> {
        self.properties()
            .and_then(|p| p.get(name))
            .map(|s| Node::new(s, self.defs))
    }

    fn values(&self) -> Option<Node<'a>> {
        self.schema
            .get("additionalProperties")
            .filter(|v| v.is_object())
            .map(|s| Node::new(s, self.defs))
    }

    fn items(&self) -> Option<Node<'a>> {
        self.schema.get("items").map(|s| Node::new(s, self.defs))
    }
}

fn child(path: &str, name: &str) -> String {
    if path.is_empty() {
        name.to_owned()
    } else {
        format!("{path}.{name}")
    }
}

fn type_name(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(n) if n.is_f64() => "number",
        Value::Number(_) => "integer",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

/// Drops what the API server prunes: unknown fields (each one a problem, as
/// `kubectl apply --validate=strict` reports them) and nulls where the schema has none.
fn prune(value: &mut Value, node: Node<'_>, path: &str, out: &mut Vec<Found>) {
    match value {
        Value::Object(map) => {
            let properties = node.properties();
            let values = node.values();
            // An object schema with neither properties nor a value schema is opaque (FieldsV1).
            let keeps_unknown = node.flag("x-kubernetes-preserve-unknown-fields")
                || (properties.is_none() && values.is_none());
            let keys: Vec<String> = map.keys().cloned().collect();
            for key in keys {
                let (schema, at) = match (node.field(&key), values) {
                    (Some(field), _) => (field, child(path, &key)),
                    (None, Some(values)) => (values, format!("{path}[{key}]")),
                    (None, None) if keeps_unknown => continue,
                    (None, None) => {
                        map.remove(&key);
                        let known = properties
                            .map(|p| p.keys().map(String::as_str).collect::<Vec<_>>())
                            .unwrap_or_default();
                        let message = match closest(&key, &known) {
                            Some(name) => format!("unknown field (did you mean {name:?}?)"),
                            None => "unknown field".to_owned(),
                        };
                        out.push(Found {
                            problem: Problem::new(child(path, &key), message),
                            blocks_cel: false,
                        });
                        continue;
                    }
                };
                if map.get(&key).is_some_and(Value::is_null) && !schema.nullable() {
                    map.remove(&key);
                } else if let Some(v) = map.get_mut(&key) {
                    prune(v, schema, &at, out);
                }
            }
        }
        Value::Array(items) => {
            if let Some(item) = node.items() {
                for (i, v) in items.iter_mut().enumerate() {
                    prune(v, item, &format!("{path}[{i}]"), out);
                }
            }
        }
        _ => {}
    }
}

/// The known name a mistyped one most likely meant: the same but for case, or at most two edits
/// away.
fn closest<'a>(name: &str, known: &[&'a str]) -> Option<&'a str> {
    known
        .iter()
        .map(|k| {
            let distance = if k.eq_ignore_ascii_case(name) {
                0
            } else {
                edit_distance(name, k)
            };
            (distance, *k)
        })
        .filter(|(d, _)| *d <= 2)
        .min()
        .map(|(_, k)| k)
}

fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut previous = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let substitution = previous + usize::from(ca != *cb);
            previous = row[j + 1];
            row[j + 1] = substitution.min(row[j] + 1).min(previous + 1);
        }
    }
    row[b.len()]
}

/// Types, enums, patterns, lengths, counts, ranges and required fields, with the API server's
/// paths.
fn validate(value: &Value, node: Node<'_>, path: &str, out: &mut Vec<Found>) {
    let at = if path.is_empty() { "(object)" } else { path };
    let mut push = |message: String, blocks_cel: bool| {
        out.push(Found {
            problem: Problem::new(at, message),
            blocks_cel,
        });
    };
    if value.is_null() {
        // Nulls left by pruning are where the schema allows them.
        return;
    }
    if node.flag("x-kubernetes-int-or-string") {
        if !(value.is_string() || value.is_number()) {
            push(
                format!("must be an integer or a string, not {}", type_name(value)),
                true,
            );
        }
        return;
    }
    let types = node.types();
    if !types.is_empty() && !types.iter().any(|t| has_type(value, t)) {
        push(
            format!(
                "must be of type {}, not {}",
                types.join(" or "),
                type_name(value)
            ),
            true,
        );
        return;
    }
    if let Some(allowed) = node.schema.get("enum").and_then(Value::as_array)
        && !allowed.contains(value)
    {
        let allowed: Vec<String> = allowed.iter().map(Value::to_string).collect();
        push(
            format!(
                "unsupported value {value}: must be one of {}",
                allowed.join(", ")
            ),
            true,
        );
    }
    match value {
        Value::String(text) => check_string(text, node, &mut push),
        Value::Number(number) => check_number(number, node, &mut push),
        Value::Array(items) => {
            check_count(node, "Items", "items", items.len(), &mut push);
            check_unique(items, node, &mut push);
            if let Some(item) = node.items() {
                for (i, v) in items.iter().enumerate() {
                    let item_path = format!("{path}[{i}]");
                    if v.is_null() && !item.nullable() {
                        out.push(Found {
                            problem: Problem::new(item_path, "must not be null"),
                            blocks_cel: true,
                        });
                    } else {
                        validate(v, item, &item_path, out);
                    }
                }
            }
        }
        Value::Object(map) => {
            check_count(node, "Properties", "properties", map.len(), &mut push);
            for name in node
                .schema
                .get("required")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .filter_map(Value::as_str)
            {
                if !map.contains_key(name) {
                    out.push(Found {
                        problem: Problem::new(child(path, name), "required value"),
                        blocks_cel: true,
                    });
                }
            }
            for (key, v) in map {
                match (node.field(key), node.values()) {
                    (Some(field), _) => validate(v, field, &child(path, key), out),
                    (None, Some(values)) => validate(v, values, &format!("{path}[{key}]"), out),
                    (None, None) => {}
                }
            }
        }
        Value::Bool(_) | Value::Null => {}
    }
}

fn has_type(value: &Value, t: &str) -> bool {
    match t {
        "string" => value.is_string(),
        "integer" => value.is_i64() || value.is_u64(),
        "number" => value.is_number(),
        "boolean" => value.is_boolean(),
        "object" => value.is_object(),
        "array" => value.is_array(),
        _ => true,
    }
}

fn check_string(text: &str, node: Node<'_>, push: &mut impl FnMut(String, bool)) {
    let length = text.chars().count() as u64;
    if let Some(max) = node.count("maxLength")
        && length > max
    {
        push(
            format!("must have at most {max} characters, has {length}"),
            true,
        );
    }
    if let Some(min) = node.count("minLength")
        && length < min
    {
        push(format!("must have at least {min} characters"), false);
    }
    if let Some(pattern) = node.schema.get("pattern").and_then(Value::as_str)
        && let Ok(re) = regex::Regex::new(pattern)
        && !re.is_match(text)
    {
        push(format!("{text:?} does not match {pattern}"), false);
    }
    if node.schema.get("format").and_then(Value::as_str) == Some("date-time")
        && text.parse::<k8s_openapi::jiff::Timestamp>().is_err()
    {
        push(
            format!("{text:?} is not an RFC 3339 date-time (like 2026-01-31T12:00:00Z)"),
            true,
        );
    }
}

fn check_number(number: &serde_json::Number, node: Node<'_>, push: &mut impl FnMut(String, bool)) {
    match node.schema.get("format").and_then(Value::as_str) {
        // The API server keeps any integer; the operator reads these as 32 or 64 bits.
        Some("int32") if number.as_i64().is_none_or(|n| i32::try_from(n).is_err()) => push(
            format!(
                "{number} does not fit in a 32-bit integer ({} to {})",
                i32::MIN,
                i32::MAX
            ),
            false,
        ),
        Some("int64") if number.is_u64() && number.as_i64().is_none() => {
            push(format!("{number} does not fit in a 64-bit integer"), false);
        }
        _ => {}
    }
    let Some(n) = number.as_f64() else { return };
    let bound = |key: &str| node.schema.get(key).and_then(Value::as_f64);
    let show = |b: f64| {
        serde_json::Number::from_f64(b).map_or_else(
            || b.to_string(),
            |n| {
                if b.fract() == 0.0 && b.abs() < 1e15 {
                    format!("{b:.0}")
                } else {
                    n.to_string()
                }
            },
        )
    };
    if let Some(min) = bound("minimum") {
        let exclusive = node.flag("exclusiveMinimum");
        if n < min || (exclusive && n <= min) {
            let relation = if exclusive {
                "greater than"
            } else {
                "at least"
            };
            push(format!("must be {relation} {}", show(min)), false);
        }
    }
    if let Some(max) = bound("maximum") {
        let exclusive = node.flag("exclusiveMaximum");
        if n > max || (exclusive && n >= max) {
            let relation = if exclusive { "less than" } else { "at most" };
            push(format!("must be {relation} {}", show(max)), false);
        }
    }
}

/// `maxItems`/`minItems` or `maxProperties`/`minProperties`: too many blocks CEL, too few not.
fn check_count(
    node: Node<'_>,
    keyword: &str,
    noun: &str,
    count: usize,
    push: &mut impl FnMut(String, bool),
) {
    let count = count as u64;
    if let Some(max) = node.count(&format!("max{keyword}"))
        && count > max
    {
        push(format!("must have at most {max} {noun}, has {count}"), true);
    }
    if let Some(min) = node.count(&format!("min{keyword}"))
        && count < min
    {
        push(format!("must have at least {min} {noun}"), false);
    }
}

/// `x-kubernetes-list-type: set` (unique values) and `map` (unique keys).
fn check_unique(items: &[Value], node: Node<'_>, push: &mut impl FnMut(String, bool)) {
    let key_of = |item: &Value| -> Value {
        match node
            .schema
            .get("x-kubernetes-list-type")
            .and_then(Value::as_str)
        {
            Some("map") => Value::Object(
                node.schema
                    .get("x-kubernetes-list-map-keys")
                    .and_then(Value::as_array)
                    .into_iter()
                    .flatten()
                    .filter_map(Value::as_str)
                    .filter_map(|k| item.get(k).map(|v| (k.to_owned(), v.clone())))
                    .collect(),
            ),
            _ => item.clone(),
        }
    };
    if !matches!(
        node.schema
            .get("x-kubernetes-list-type")
            .and_then(Value::as_str),
        Some("set" | "map")
    ) {
        return;
    }
    for (i, item) in items.iter().enumerate() {
        let key = key_of(item);
        if items[..i].iter().any(|earlier| key_of(earlier) == key) {
            push(format!("duplicate value at index {i}: {key}"), false);
        }
    }
}

// ----- files -----

fn display(path: &Path) -> String {
    if path == Path::new("-") {
        "<stdin>".to_owned()
    } else {
        path.display().to_string()
    }
}

fn read_input(path: &Path) -> Result<String, OfflineError> {
    let failed = |source| OfflineError::ReadFile {
        path: display(path),
        source,
    };
    if path == Path::new("-") {
        let mut text = String::new();
        std::io::stdin().read_to_string(&mut text).map_err(failed)?;
        Ok(text)
    } else {
        std::fs::read_to_string(path).map_err(failed)
    }
}

/// The documents of a YAML stream as JSON (merge keys applied; a duplicate key is an error, as
/// it is for `kubectl apply --validate=strict`).
pub fn parse_documents(text: &str, path: &str) -> Result<Vec<Value>, OfflineError> {
    let mut documents = Vec::new();
    for document in serde_yaml::Deserializer::from_str(text) {
        let yaml_error = |source| OfflineError::ParseYaml {
            path: path.to_owned(),
            source,
        };
        let mut yaml = serde_yaml::Value::deserialize(document).map_err(yaml_error)?;
        yaml.apply_merge().map_err(yaml_error)?;
        let json = serde_json::to_value(&yaml).map_err(|source| OfflineError::ConvertYaml {
            path: path.to_owned(),
            document: documents.len() + 1,
            source,
        })?;
        documents.push(json);
    }
    Ok(documents)
}

// ----- check-policy -----

/// Runs `check-policy`: one line per problem on `out` (`FILE:DOC: policy NAMESPACE/NAME:
/// field.path: message`, documents counted from 1), `FILE: ok (N policies)` for a clean file,
/// notes and unreadable files on `err`. Returns the exit status.
pub fn check_policy(
    args: &CheckPolicyArgs,
    out: &mut dyn Write,
    err: &mut dyn Write,
) -> Result<u8, OfflineError> {
    let checker = Checker::new()?;
    let mut status = EXIT_VALID;
    for path in &args.files {
        let name = display(path);
        let documents = match read_input(path).and_then(|text| parse_documents(&text, &name)) {
            Ok(documents) => documents,
            Err(error) => {
                writeln!(err, "{error}")?;
                status = EXIT_UNREADABLE;
                continue;
            }
        };
        let (mut policies, mut clean) = (0_usize, true);
        for (i, document) in documents.iter().enumerate() {
            let number = i + 1;
            match checker.check_document(document) {
                Verdict::Empty => {}
                Verdict::Skipped(what) => {
                    writeln!(
                        err,
                        "{name}:{number}: note: skipped {what}: not a ScanPolicy"
                    )?;
                }
                Verdict::Policy { object, problems } => {
                    policies += 1;
                    for problem in problems {
                        clean = false;
                        writeln!(
                            out,
                            "{name}:{number}: policy {object}: {}: {}",
                            problem.field, problem.message
                        )?;
                    }
                }
            }
        }
        if clean {
            let noun = if policies == 1 { "policy" } else { "policies" };
            writeln!(out, "{name}: ok ({policies} {noun})")?;
        } else if status == EXIT_VALID {
            status = EXIT_PROBLEMS;
        }
    }
    Ok(status)
}

/// `gatehouse-operator check-policy` on the process's standard output and error; the exit status.
pub fn check_policy_command(args: &CheckPolicyArgs) -> i32 {
    let (mut out, mut err) = (std::io::stdout().lock(), std::io::stderr().lock());
    match check_policy(args, &mut out, &mut err) {
        Ok(status) => i32::from(status),
        Err(error) => {
            let _ = writeln!(err, "gatehouse-operator: {error}");
            i32::from(EXIT_UNREADABLE)
        }
    }
}

// ----- preview -----

/// `gatehouse-operator preview`: the documents, or one line saying what is wrong.
pub fn preview_command(args: &PreviewArgs) -> i32 {
    match preview(args) {
        Ok(yaml) => {
            let mut out = std::io::stdout().lock();
            match out.write_all(yaml.as_bytes()).and_then(|()| out.flush()) {
                Ok(()) => 0,
                Err(error) => {
                    eprintln!("gatehouse-operator: {}", OfflineError::Write(error));
                    1
                }
            }
        }
        Err(error) => {
            eprintln!("gatehouse-operator: {error}");
            1
        }
    }
}

/// Reads the files and renders the preview.
pub fn preview(args: &PreviewArgs) -> Result<String, OfflineError> {
    let checker = Checker::new()?;
    let request_path = display(&args.request);
    let policy_path = display(&args.policy);
    let requests = parse_documents(&read_input(&args.request)?, &request_path)?;
    let policies = parse_documents(&read_input(&args.policy)?, &policy_path)?;
    let settings = BuildSettings {
        agent_image: args.agent_image.clone(),
        ttl_seconds_after_finished: args.job_ttl_seconds,
        results_redis_url: args.results_redis_url.clone(),
        // Never read: the preview shows where the password goes, not the password.
        results_redis_password: args
            .results_redis_password_file
            .as_ref()
            .map(|_| jobs::RedisPassword::new(String::new())),
        // Not read either: where the bundle goes is the same whatever it holds.
        results_redis_ca: args
            .results_redis_ca_file
            .as_ref()
            .map(|_| jobs::RedisCa::new(Vec::new())),
        github_api_url: args.github_api_url.clone(),
    };
    render_preview(
        &checker,
        (&requests, &request_path),
        (&policies, &policy_path),
        &settings,
    )
}

fn of_kind<'a>(documents: &'a [Value], kind: &str) -> Vec<&'a Value> {
    documents
        .iter()
        .filter(|d| d.get("kind").and_then(Value::as_str) == Some(kind))
        .collect()
}

fn invalid(kind: &'static str, document: &Value, path: &str, problems: &[Problem]) -> OfflineError {
    let more = match problems.len() {
        0 | 1 => String::new(),
        n => format!(
            " (and {} more; `gatehouse-operator check-policy` lists them)",
            n - 1
        ),
    };
    OfflineError::InvalidObject {
        kind,
        object: object_name(document),
        path: path.to_owned(),
        first: problems
            .first()
            .map(|p| format!("{}: {}", p.field, p.message))
            .unwrap_or_default(),
        more,
    }
}

/// The preview from parsed files: the request (exactly one ScanRequest), the policy (the one its
/// `policyRef` names, or the file's only ScanPolicy), and the operator's build settings.
pub fn render_preview(
    checker: &Checker,
    (requests, request_path): (&[Value], &str),
    (policies, policy_path): (&[Value], &str),
    settings: &BuildSettings,
) -> Result<String, OfflineError> {
    let (request, placeholder_uid) = read_request(checker, requests, request_path)?;
    let policy = read_policy(checker, &request, policies, policy_path)?;
    let snapshot = decide::snapshot(&request, &policy)?;

    let mut out = header(&request, &policy, placeholder_uid);
    let secret = jobs::desired_secret(&request, "", "", settings);
    let mut secret_value = to_json("the per-scan Secret", &secret)?;
    if let Some(data) = secret_value.get_mut("data").and_then(Value::as_object_mut) {
        for (key, value) in data.iter_mut() {
            let size = secret
                .data
                .as_ref()
                .and_then(|d| d.get(key))
                .map_or(0, |b| b.0.len());
            *value = Value::String(redacted(key, &request, settings, size));
        }
    }
    out.push_str("---\n# The per-scan Secret, applied before the Jobs; values redacted.\n");
    out.push_str(&to_yaml("the per-scan Secret", &secret_value)?);
    for scanner in &snapshot.scanners {
        // Baseline mode: shown with the base commit's scan, as when its findings are not kept
        // from an earlier scan of the same base.
        let base = if snapshot.reporting.baseline {
            request.spec.pull_request.base_sha.as_deref()
        } else {
            None
        };
        let view = ScanRequest {
            status: Some(gatehouse_crds::ScanRequestStatus {
                policy: Some(snapshot.clone()),
                ..gatehouse_crds::ScanRequestStatus::default()
            }),
            ..request.clone()
        };
        let job = jobs::desired_job(&view, scanner, 1, settings, base);
        let what = format!("the Job of scanner {}", scanner.name);
        let kind = to_json(&what, &scanner.kind)?;
        let _ = writeln!(
            out,
            "---\n# Scanner {} (kind {}), attempt 1; a retry after an infrastructure failure is\n\
             # a new Job named <this name>-retryN.",
            scanner.name,
            kind.as_str().unwrap_or("?"),
        );
        if !scanner.paths.is_empty() {
            let _ = writeln!(
                out,
                "# Created only if the pull request changes a file matching {}\n\
                 # (otherwise its check concludes skipped).",
                scanner.paths.join(", ")
            );
        }
        out.push_str(&to_yaml(&what, &to_json(&what, &job)?)?);
    }
    Ok(out)
}

/// The file's only ScanRequest, checked and decoded, with a placeholder UID when it has none
/// (and whether it got one).
fn read_request(
    checker: &Checker,
    documents: &[Value],
    path: &str,
) -> Result<(ScanRequest, bool), OfflineError> {
    let document = match of_kind(documents, "ScanRequest").as_slice() {
        [one] => *one,
        found => {
            return Err(OfflineError::FindObject {
                what: if found.is_empty() {
                    "a ScanRequest".to_owned()
                } else {
                    "exactly one ScanRequest (the file holds several)".to_owned()
                },
                path: path.to_owned(),
            });
        }
    };
    let (problems, stored) = checker.check_request(document);
    if !problems.is_empty() {
        return Err(invalid("ScanRequest", document, path, &problems));
    }
    let mut request: ScanRequest =
        serde_json::from_value(stored).map_err(|source| OfflineError::DecodeObject {
            kind: "ScanRequest",
            object: object_name(document),
            path: path.to_owned(),
            source,
        })?;
    let placeholder_uid = request.metadata.uid.is_none();
    if placeholder_uid {
        request.metadata.uid = Some(PLACEHOLDER_UID.to_owned());
    }
    Ok((request, placeholder_uid))
}

/// The ScanPolicy the request's `policyRef` names in its namespace (or the file's only one),
/// checked and decoded; an error when it is not the one that governs the request.
fn read_policy(
    checker: &Checker,
    request: &ScanRequest,
    documents: &[Value],
    path: &str,
) -> Result<ScanPolicy, OfflineError> {
    let namespace = request.metadata.namespace.clone().unwrap_or_default();
    let request_name = format!(
        "{namespace}/{}",
        request.metadata.name.as_deref().unwrap_or_default()
    );
    let policy_ref = request.spec.policy_ref.name.clone();
    let candidates = of_kind(documents, "ScanPolicy");
    let wanted = format!("{namespace}/{policy_ref}");
    let named = candidates.iter().find(|d| object_name(d) == wanted);
    let document = match (named, candidates.as_slice()) {
        (Some(document), _) | (None, [document]) => *document,
        (None, held) => {
            let held: Vec<String> = held.iter().map(|d| object_name(d)).collect();
            return Err(OfflineError::FindObject {
                what: if held.is_empty() {
                    "a ScanPolicy".to_owned()
                } else {
                    format!(
                        "ScanPolicy {wanted}, which the ScanRequest's spec.policyRef names (the \
                         file holds {})",
                        held.join(", ")
                    )
                },
                path: path.to_owned(),
            });
        }
    };
    let (problems, stored) = checker.check_policy(document);
    if !problems.is_empty() {
        return Err(invalid("ScanPolicy", document, path, &problems));
    }
    let policy: ScanPolicy =
        serde_json::from_value(stored).map_err(|source| OfflineError::DecodeObject {
            kind: "ScanPolicy",
            object: object_name(document),
            path: path.to_owned(),
            source,
        })?;
    let policy_name = policy.metadata.name.clone().unwrap_or_default();
    if policy.metadata.namespace.as_deref() != Some(namespace.as_str()) {
        return Err(OfflineError::PolicyNamespace {
            policy: object_name(document),
            namespace,
            request: request_name,
        });
    }
    if policy_name != policy_ref {
        return Err(OfflineError::PolicyName {
            request: request_name,
            policy_ref,
            policy: policy_name,
        });
    }
    Ok(policy)
}

fn header(request: &ScanRequest, policy: &ScanPolicy, placeholder_uid: bool) -> String {
    let name = |meta: &ObjectMeta| {
        format!(
            "{}/{}",
            meta.namespace.as_deref().unwrap_or_default(),
            meta.name.as_deref().unwrap_or_default()
        )
    };
    let mut out = format!(
        "# gatehouse-operator preview: the per-scan Secret and the Jobs the operator creates\n\
         # for ScanRequest {}\n\
         # under ScanPolicy {}, built by the operator's own functions.\n\
         # Nothing was sent anywhere: no token was minted and no master key was read, so the\n\
         # Secret's values are <redacted: ...> descriptions (and this output cannot be applied).\n",
        name(&request.metadata),
        name(&policy.metadata),
    );
    if placeholder_uid {
        let _ = write!(
            out,
            "# The request has no metadata.uid: {PLACEHOLDER_UID} stands in for the UID the API\n\
             # server assigns (in owner references, the report step's --uid and the signing key).\n"
        );
    }
    let pr = &request.spec.pull_request;
    if pr.fork && policy.spec.forks == ForkMode::Skip {
        out.push_str(
            "# The policy does not scan pull requests from forks: for this request the operator\n\
             # concludes every check skipped and creates none of these objects.\n",
        );
    } else if decide::awaits_approval(request, policy) {
        let _ = write!(
            out,
            "# The request waits for approval: nothing below is created until someone with the\n\
             # policy's commands permission comments `{}`.\n",
            decide::approval_command(request)
        );
    }
    out
}

/// What a key of the per-scan Secret holds, in place of its value.
fn redacted(key: &str, request: &ScanRequest, settings: &BuildSettings, size: usize) -> String {
    match key {
        secret_keys::REDIS_PASSWORD => format!(
            "<redacted: password of the Redis user in {} (--results-redis-password-file), for the report step only>",
            settings.results_redis_url
        ),
        secret_keys::REDIS_CA => format!(
            "<redacted: PEM bundle of the CA certificates that verify Redis at {} (--results-redis-ca-file), for the report step only>",
            settings.results_redis_url
        ),
        secret_keys::TOKEN => format!(
            "<redacted: GitHub App installation token for {} only (contents: read), minted when the scan is admitted>",
            request.spec.repository.full_name()
        ),
        secret_keys::SIGNING_KEY => format!(
            "<redacted: hex HMAC-SHA256 key derived from the operator's master key and metadata.uid {}>",
            request.metadata.uid.as_deref().unwrap_or_default()
        ),
        secret_keys::KICS_CONFIG => {
            format!("<redacted: Gatehouse's own KICS configuration file, {size} bytes>")
        }
        _ => format!("<redacted: {size} bytes>"),
    }
}

fn to_json(what: &str, object: &impl serde::Serialize) -> Result<Value, OfflineError> {
    serde_json::to_value(object).map_err(|source| OfflineError::RenderJson {
        what: what.to_owned(),
        source,
    })
}

fn to_yaml(what: &str, value: &Value) -> Result<String, OfflineError> {
    serde_yaml::to_string(value).map_err(|source| OfflineError::RenderYaml {
        what: what.to_owned(),
        source,
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

    use super::*;

    fn sample(file: &str) -> String {
        std::fs::read_to_string(format!(
            "{}/../deploy/samples/{file}",
            env!("CARGO_MANIFEST_DIR")
        ))
        .unwrap()
    }

    fn verdicts(text: &str) -> Vec<Verdict> {
        let checker = Checker::new().unwrap();
        parse_documents(text, "test.yaml")
            .unwrap()
            .iter()
            .map(|d| checker.check_document(d))
            .collect()
    }

    /// The problems of the only document of `text`.
    fn problems(text: &str) -> Vec<(String, String)> {
        match verdicts(text).as_slice() {
            [Verdict::Policy { problems, .. }] => problems
                .iter()
                .map(|p| (p.field.clone(), p.message.clone()))
                .collect(),
            other => panic!("one policy expected, got {other:?}"),
        }
    }

    const DIGEST: &str = "sha256:7b0a4d750acd491942ce9de52c1183fbf4451c1c936780ec2cfacd2650e7d84c";

    /// A valid policy with `scanners` replaced.
    fn policy_with_scanners(scanners: &str) -> String {
        format!(
            "apiVersion: gatehouse.dev/v1alpha1\nkind: ScanPolicy\nmetadata:\n  name: p\n  namespace: ns\n\
             spec:\n  repositories: [\"acme/*\"]\n  scanners:\n{scanners}"
        )
    }

    fn kics(name: &str) -> String {
        format!(
            "    - name: {name}\n      kind: kics\n      image: docker.io/checkmarx/kics:v2@{DIGEST}\n"
        )
    }

    #[test]
    fn the_sample_policies_have_no_problems() {
        for file in ["scanpolicy-kics.yaml", "scanpolicy-kics-blackduck.yaml"] {
            assert_eq!(
                problems(&sample(file)),
                Vec::<(String, String)>::new(),
                "{file}"
            );
        }
    }

    #[test]
    fn an_unknown_field_is_named_with_its_path_and_a_likely_meant_name() {
        let text =
            sample("scanpolicy-kics.yaml").replace("      failOn: high", "      failon: high");
        assert_eq!(
            problems(&text),
            [(
                "spec.scanners[0].failon".to_owned(),
                "unknown field (did you mean \"failOn\"?)".to_owned()
            )]
        );
    }

    #[test]
    fn an_unknown_field_in_metadata_is_a_problem_too() {
        let text = sample("scanpolicy-kics.yaml")
            .replace("  name: acme-iac", "  name: acme-iac\n  lables: {a: b}");
        let found = problems(&text);
        assert_eq!(found.len(), 1, "{found:?}");
        assert_eq!(found[0].0, "metadata.lables");
        assert!(found[0].1.contains("\"labels\""), "{found:?}");
    }

    #[test]
    fn a_wrong_type_blocks_the_cel_rules_as_the_api_server_does() {
        let text =
            sample("scanpolicy-kics.yaml").replace("timeoutSeconds: 900", "timeoutSeconds: soon");
        let found = problems(&text);
        assert_eq!(
            found[0],
            (
                "spec.scanners[0].timeoutSeconds".to_owned(),
                "must be of type integer, not string".to_owned()
            )
        );
        assert_eq!(found[1].0, "x-kubernetes-validations");
        assert_eq!(found.len(), 2, "{found:?}");
    }

    #[test]
    fn an_integer_the_operator_cannot_hold_in_32_bits_is_refused() {
        let text =
            sample("scanpolicy-kics.yaml").replace("spec:\n", "spec:\n  priority: 3000000000\n");
        assert_eq!(
            problems(&text),
            [(
                "spec.priority".to_owned(),
                "3000000000 does not fit in a 32-bit integer (-2147483648 to 2147483647)"
                    .to_owned()
            )]
        );
    }

    #[test]
    fn enums_patterns_ranges_and_required_fields_come_from_the_generated_schema() {
        let text = "apiVersion: gatehouse.dev/v1alpha1\nkind: ScanPolicy\nmetadata: {name: p, namespace: ns}\n\
                    spec:\n  drafts: skip\n  concurrency: {maxRunning: 0}\n  scanners:\n    - name: Kics\n      kind: kics\n      image: x@sha256:00\n";
        let found = problems(text);
        let fields: Vec<&str> = found.iter().map(|(f, _)| f.as_str()).collect();
        assert_eq!(
            fields,
            [
                "spec.repositories",
                "spec.concurrency.maxRunning",
                "spec.drafts",
                "spec.scanners[0].name",
                "x-kubernetes-validations",
                "spec.scanners[0].image",
            ],
            "{found:?}"
        );
        assert_eq!(found[0].1, "required value");
        assert_eq!(found[1].1, "must be at least 1");
        assert_eq!(
            found[2].1,
            "unsupported value \"skip\": must be one of \"Skip\", \"Scan\""
        );
        assert!(found[3].1.contains("does not match ^[a-z0-9]"), "{found:?}");
        assert_eq!(found[5].1, IMAGE_MESSAGE);
    }

    #[test]
    fn a_null_field_counts_as_absent_as_the_api_server_prunes_it() {
        let text = sample("scanpolicy-kics.yaml").replace("spec:\n", "spec:\n  baseBranches:\n");
        assert_eq!(problems(&text), Vec::<(String, String)>::new());
    }

    #[test]
    fn duplicate_scanner_names_break_the_cel_rule_on_the_list() {
        let text = policy_with_scanners(&format!("{}{}", kics("kics"), kics("kics")));
        assert_eq!(
            problems(&text),
            [(
                "spec.scanners".to_owned(),
                "scanner names must be unique within a policy".to_owned()
            )]
        );
    }

    #[test]
    fn a_blackduck_scanner_without_its_settings_breaks_the_cel_rule_on_the_scanner() {
        let text = policy_with_scanners(&kics("bd").replace("kind: kics", "kind: blackduck"));
        assert_eq!(
            problems(&text),
            [(
                "spec.scanners[0]".to_owned(),
                "kind blackduck needs blackduck settings (url and credentialsSecretRef)".to_owned()
            )]
        );
    }

    #[test]
    fn an_image_without_a_digest_is_reported_once() {
        let text = policy_with_scanners(
            "    - name: kics\n      kind: kics\n      image: docker.io/checkmarx/kics:v2.1.19\n",
        );
        assert_eq!(
            problems(&text),
            [(
                "spec.scanners[0].image".to_owned(),
                IMAGE_MESSAGE.to_owned()
            )]
        );
    }

    #[test]
    fn bad_globs_are_named_by_their_index_and_a_list_of_exclusions_alone_is_refused() {
        let text = format!(
            "{}      paths: [\"**/*.tf\", \"src/[oops\"]\n",
            policy_with_scanners(&kics("kics"))
        )
        .replace("[\"acme/*\"]", "[\"!acme/secret\", \"\"]")
        .replace("spec:\n", "spec:\n  baseBranches: [\"release/{a,b\"]\n");
        let found = problems(&text);
        let fields: Vec<&str> = found.iter().map(|(f, _)| f.as_str()).collect();
        assert_eq!(
            fields,
            [
                "spec.repositories[1]",
                "spec.baseBranches[0]",
                "spec.scanners[0].paths[1]",
            ],
            "{found:?}"
        );
        assert!(
            found[0].1.starts_with("invalid glob \"\": empty pattern"),
            "{found:?}"
        );
        assert!(
            found[2].1.starts_with("invalid glob \"src/[oops\""),
            "{found:?}"
        );

        let only_exclusions =
            policy_with_scanners(&kics("kics")).replace("[\"acme/*\"]", "[\"!acme/secret\"]");
        assert_eq!(
            problems(&only_exclusions),
            [(
                "spec.repositories".to_owned(),
                "has only `!` exclusions; add at least one pattern to include".to_owned()
            )]
        );
    }

    #[test]
    fn a_quantity_kubernetes_cannot_parse_is_refused_before_a_job_would_be() {
        let text = format!(
            "{}      resources: {{limits: {{memory: 2GB, cpu: 1}}}}\n",
            policy_with_scanners(&kics("kics"))
        );
        assert_eq!(
            problems(&text),
            [(
                "spec.scanners[0].resources.limits.memory".to_owned(),
                "\"2GB\" is not a Kubernetes quantity (like 500m, 2, 512Mi, 2Gi): the scanner's Job would be refused".to_owned()
            )]
        );
    }

    #[test]
    fn a_policy_needs_a_valid_name_namespace_api_version_and_kind() {
        let text = "apiVersion: gatehouse.dev/v1\nkind: ScanPolicy\nmetadata:\n  name: Acme_IaC\n\
                    spec:\n  repositories: [\"acme/*\"]\n  scanners: []\n";
        let found = problems(text);
        let fields: Vec<&str> = found.iter().map(|(f, _)| f.as_str()).collect();
        assert_eq!(
            fields,
            [
                "apiVersion",
                "metadata.name",
                "metadata.namespace",
                "spec.scanners"
            ],
            "{found:?}"
        );
        assert_eq!(
            found[0].1,
            "must be gatehouse.dev/v1alpha1, not \"gatehouse.dev/v1\""
        );
    }

    #[test]
    fn other_kinds_are_skipped_and_a_gatehouse_kind_typo_is_not() {
        let text = format!(
            "apiVersion: v1\nkind: ConfigMap\nmetadata: {{name: c, namespace: ns}}\n---\n---\n{}---\napiVersion: gatehouse.dev/v1alpha1\nkind: ScanPolicies\nmetadata: {{name: p, namespace: ns}}\n",
            sample("scanpolicy-kics.yaml")
        );
        let found = verdicts(&text);
        assert_eq!(found.len(), 4, "{found:?}");
        assert_eq!(found[0], Verdict::Skipped("v1/ConfigMap ns/c".to_owned()));
        assert_eq!(found[1], Verdict::Empty);
        assert_eq!(
            found[2],
            Verdict::Policy {
                object: "gatehouse-scans/acme-iac".to_owned(),
                problems: Vec::new()
            }
        );
        let Verdict::Policy { problems, .. } = &found[3] else {
            panic!("{found:?}")
        };
        assert_eq!(
            problems[0].message,
            "must be ScanPolicy, not \"ScanPolicies\""
        );
    }

    #[test]
    fn a_yaml_syntax_error_carries_its_line_and_column() {
        let error = parse_documents("spec:\n  a: [1, 2\n  b: c\n", "bad.yaml").unwrap_err();
        let text = error.to_string();
        assert!(
            text.starts_with("failed to parse bad.yaml as YAML: "),
            "{text}"
        );
        assert!(text.contains("line 3 column"), "{text}");
        let duplicate = parse_documents("a: 1\na: 2\n", "dup.yaml").unwrap_err();
        assert!(
            duplicate
                .to_string()
                .contains("duplicate entry with key \"a\""),
            "{duplicate}"
        );
    }

    #[test]
    fn check_policy_prints_a_line_per_problem_and_ok_for_clean_files() {
        let dir = tempfile::tempdir().unwrap();
        let good = dir.path().join("good.yaml");
        let bad = dir.path().join("bad.yaml");
        std::fs::write(&good, sample("scanpolicy-kics.yaml")).unwrap();
        std::fs::write(
            &bad,
            format!(
                "apiVersion: v1\nkind: Namespace\nmetadata: {{name: ns}}\n---\n{}",
                policy_with_scanners(&format!("{}{}", kics("kics"), kics("kics")))
            ),
        )
        .unwrap();
        let args = CheckPolicyArgs {
            files: vec![good.clone(), bad.clone()],
        };
        let (mut out, mut err) = (Vec::new(), Vec::new());
        let status = check_policy(&args, &mut out, &mut err).unwrap();
        assert_eq!(status, EXIT_PROBLEMS);
        assert_eq!(
            String::from_utf8(out).unwrap(),
            format!(
                "{}: ok (1 policy)\n{}:2: policy ns/p: spec.scanners: scanner names must be unique within a policy\n",
                good.display(),
                bad.display()
            )
        );
        assert_eq!(
            String::from_utf8(err).unwrap(),
            format!(
                "{}:1: note: skipped v1/Namespace <none>/ns: not a ScanPolicy\n",
                bad.display()
            )
        );

        let missing = CheckPolicyArgs {
            files: vec![good, dir.path().join("missing.yaml")],
        };
        let (mut out, mut err) = (Vec::new(), Vec::new());
        assert_eq!(
            check_policy(&missing, &mut out, &mut err).unwrap(),
            EXIT_UNREADABLE
        );
        assert!(
            String::from_utf8(err)
                .unwrap()
                .contains("missing.yaml: No such file"),
        );
    }

    fn settings() -> BuildSettings {
        BuildSettings {
            agent_image: DEFAULT_AGENT_IMAGE.to_owned(),
            ttl_seconds_after_finished: DEFAULT_JOB_TTL_SECONDS,
            results_redis_url: DEFAULT_RESULTS_REDIS_URL.to_owned(),
            results_redis_password: None,
            results_redis_ca: None,
            github_api_url: "https://api.github.com".to_owned(),
        }
    }

    fn render(request: &str, policy: &str) -> Result<String, OfflineError> {
        render_with(request, policy, &settings())
    }

    fn render_with(
        request: &str,
        policy: &str,
        settings: &BuildSettings,
    ) -> Result<String, OfflineError> {
        let checker = Checker::new().unwrap();
        let requests = parse_documents(request, "request.yaml").unwrap();
        let policies = parse_documents(policy, "policy.yaml").unwrap();
        render_preview(
            &checker,
            (&requests, "request.yaml"),
            (&policies, "policy.yaml"),
            settings,
        )
    }

    /// The sample request's preview under `settings`, as documents, and the report step's
    /// arguments of its first Job, joined.
    fn sample_preview(settings: &BuildSettings) -> (Vec<Value>, String) {
        let yaml = render_with(
            &sample("scanrequest.yaml"),
            &sample("scanpolicy-kics.yaml"),
            settings,
        )
        .unwrap();
        let documents = parse_documents(&yaml, "preview").unwrap();
        let report = documents[1]["spec"]["template"]["spec"]["containers"][0]["args"]
            .as_array()
            .unwrap()
            .iter()
            .map(|a| a.as_str().unwrap())
            .collect::<Vec<_>>()
            .join(" ");
        (documents, report)
    }

    /// The two-scanner sample policy, named and widened to govern the sample request.
    fn payments_for_the_sample_request() -> String {
        sample("scanpolicy-kics-blackduck.yaml")
            .replace("name: payments", "name: acme-iac")
            .replace("\"acme/ledger\"", "\"Codertocat/*\"")
            .replace("    - main\n", "    - master\n")
    }

    #[test]
    fn the_preview_is_the_operators_secret_with_values_redacted_and_its_jobs() {
        let yaml = render(
            &sample("scanrequest.yaml"),
            &payments_for_the_sample_request(),
        )
        .unwrap();
        assert!(yaml.starts_with("# gatehouse-operator preview"), "{yaml}");
        assert!(yaml.contains(&format!(
            "# The request has no metadata.uid: {PLACEHOLDER_UID}"
        )));
        let documents = parse_documents(&yaml, "preview").unwrap();
        assert_eq!(documents.len(), 3);

        let request: ScanRequest = serde_yaml::from_str(&sample("scanrequest.yaml")).unwrap();
        let mut request = request;
        request.metadata.uid = Some(PLACEHOLDER_UID.to_owned());
        let policy: ScanPolicy = serde_yaml::from_str(&payments_for_the_sample_request()).unwrap();
        let expected_job = |i: usize| {
            serde_json::to_value(jobs::desired_job(
                &request,
                &policy.spec.scanners[i],
                1,
                &settings(),
                None,
            ))
            .unwrap()
        };
        assert_eq!(documents[1], expected_job(0));
        assert_eq!(documents[2], expected_job(1));
        assert_eq!(
            documents[1]["metadata"]["name"],
            "hello-world-pr2-ec26c3e-016643a9-kics"
        );
        assert_eq!(documents[1]["spec"]["backoffLimit"], 0);
        assert_eq!(
            documents[1]["metadata"]["ownerReferences"][0]["uid"],
            PLACEHOLDER_UID
        );

        let secret = &documents[0];
        assert_eq!(secret["kind"], "Secret");
        let data = secret["data"].as_object().unwrap();
        let keys: Vec<&str> = data.keys().map(String::as_str).collect();
        assert_eq!(keys, ["kics.config", "signing-key", "token"]);
        assert!(
            data.values()
                .all(|v| v.as_str().unwrap().starts_with("<redacted: "))
        );
        let mut expected =
            serde_json::to_value(jobs::desired_secret(&request, "", "", &settings())).unwrap();
        expected["data"] = secret["data"].clone();
        assert_eq!(*secret, expected);
        // The path filters are said, since the preview cannot know the changed files.
        assert!(
            yaml.contains("# Created only if the pull request changes a file matching **/*.tf")
        );
    }

    #[test]
    fn with_a_results_redis_password_the_preview_shows_its_key_redacted_and_the_report_step_reading_it()
     {
        let (documents, report) = sample_preview(&BuildSettings {
            results_redis_url: "redis://gatehouse-scan@gatehouse-redis:6379".to_owned(),
            results_redis_password: Some(jobs::RedisPassword::new(String::new())),
            ..settings()
        });
        let data = documents[0]["data"].as_object().unwrap();
        assert_eq!(
            data["redis-password"],
            "<redacted: password of the Redis user in redis://gatehouse-scan@gatehouse-redis:6379 \
             (--results-redis-password-file), for the report step only>"
        );
        assert!(
            report.contains("--redis-password-file /var/run/gatehouse-redis/redis-password"),
            "{report}"
        );
    }

    #[test]
    fn with_a_results_redis_ca_the_preview_shows_its_key_redacted_and_the_report_step_reading_it() {
        let (documents, report) = sample_preview(&BuildSettings {
            results_redis_url: "rediss://gatehouse-scan@redis.example:6380".to_owned(),
            results_redis_ca: Some(jobs::RedisCa::new(Vec::new())),
            ..settings()
        });
        let data = documents[0]["data"].as_object().unwrap();
        assert_eq!(
            data["redis-ca.crt"],
            "<redacted: PEM bundle of the CA certificates that verify Redis at \
             rediss://gatehouse-scan@redis.example:6380 (--results-redis-ca-file), for the report \
             step only>"
        );
        assert!(
            report.contains("--redis-ca-file /var/run/gatehouse-redis/redis-ca.crt"),
            "{report}"
        );
        assert!(!report.contains("--redis-password-file"), "{report}");
    }

    #[test]
    fn a_request_with_a_uid_keeps_it_and_says_nothing_of_a_placeholder() {
        let request = sample("scanrequest.yaml").replace(
            "  namespace: gatehouse-scans\n",
            "  namespace: gatehouse-scans\n  uid: 5f0c7a4e-1b2d-4c3e-8f9a-0b1c2d3e4f50\n",
        );
        let yaml = render(&request, &sample("scanpolicy-kics.yaml")).unwrap();
        assert!(!yaml.contains(PLACEHOLDER_UID), "{yaml}");
        assert!(yaml.contains("uid: 5f0c7a4e-1b2d-4c3e-8f9a-0b1c2d3e4f50"));
    }

    #[test]
    fn the_preview_refuses_a_policy_of_another_namespace_or_name() {
        let other_namespace = sample("scanpolicy-kics.yaml")
            .replace("namespace: gatehouse-scans", "namespace: elsewhere");
        let error = render(&sample("scanrequest.yaml"), &other_namespace).unwrap_err();
        assert_eq!(
            error.to_string(),
            "failed to preview: ScanPolicy elsewhere/acme-iac does not govern namespace gatehouse-scans of ScanRequest gatehouse-scans/hello-world-pr2-ec26c3e-016643a9 (a ScanRequest uses the ScanPolicy of its own namespace)"
        );
        let other_name = sample("scanpolicy-kics.yaml").replace("name: acme-iac", "name: other");
        let error = render(&sample("scanrequest.yaml"), &other_name).unwrap_err();
        assert!(matches!(error, OfflineError::PolicyName { .. }), "{error}");
    }

    #[test]
    fn the_preview_refuses_a_scanner_the_policy_does_not_have() {
        let request =
            sample("scanrequest.yaml").replace("  policyRef:", "  scanners: [trivy]\n  policyRef:");
        let error = render(&request, &sample("scanpolicy-kics.yaml")).unwrap_err();
        assert_eq!(
            error.to_string(),
            "failed to preview: scanner \"trivy\" is not in ScanPolicy \"acme-iac\""
        );
    }

    #[test]
    fn the_preview_refuses_an_invalid_policy_with_its_first_problem() {
        let policy = sample("scanpolicy-kics.yaml").replace("@sha256:", ":sha256-");
        let error = render(&sample("scanrequest.yaml"), &policy).unwrap_err();
        assert!(
            error.to_string().contains("ScanPolicy gatehouse-scans/acme-iac in policy.yaml is invalid: spec.scanners[0].image: image must be pinned"),
            "{error}"
        );
    }

    #[test]
    fn the_preview_says_when_a_fork_waits_for_approval() {
        let request = sample("scanrequest.yaml")
            .replace("fork: false", "fork: true")
            .replace("authorAssociation: OWNER", "authorAssociation: CONTRIBUTOR");
        let yaml = render(&request, &sample("scanpolicy-kics.yaml")).unwrap();
        assert!(
            yaml.contains("# The request waits for approval")
                && yaml.contains("/gatehouse ok-to-scan ec26c3e57ca3a959ca5aad62de7213c562f8c821"),
            "{yaml}"
        );
    }

    #[test]
    fn preview_defaults_are_the_run_commands_defaults() {
        #[derive(clap::Parser)]
        struct Run {
            #[command(flatten)]
            args: crate::run::RunArgs,
        }
        #[derive(clap::Parser)]
        struct Preview {
            #[command(flatten)]
            args: PreviewArgs,
        }
        use clap::Parser as _;
        let run = Run::parse_from([
            "t",
            "--github-app-id",
            "1",
            "--github-private-key-file",
            "k",
            "--master-key-file",
            "m",
        ])
        .args;
        let preview = Preview::parse_from(["t", "--policy", "p", "--request", "r"]).args;
        assert_eq!(preview.agent_image, run.agent_image);
        assert_eq!(preview.job_ttl_seconds, run.job_ttl_seconds);
        assert_eq!(preview.results_redis_url, run.results_redis_url);
    }

    #[test]
    fn quantities_and_digests_are_read_as_kubernetes_reads_them() {
        for good in ["1", "500m", "2Gi", "1.5", "+1", "1e3", "0.5Ki"] {
            assert!(is_quantity(good), "{good}");
        }
        for bad in ["", "2GB", "1..2", "Gi", "1 Gi", "1e", "-"] {
            assert!(!is_quantity(bad), "{bad}");
        }
        assert!(is_pinned(&format!("kics@{DIGEST}")));
        assert!(is_pinned(&format!("r.io/a/kics:v2@{DIGEST}")));
        assert!(!is_pinned("kics:v2"));
        assert!(!is_pinned(&format!("kics@{}", DIGEST.to_uppercase())));
        assert!(!is_pinned(&format!("@{DIGEST}")));
    }
}
