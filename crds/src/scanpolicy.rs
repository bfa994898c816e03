//! `ScanPolicy`: which pull requests are scanned, by which scanners, and what fails them.
//! Managed through GitOps; the policy's namespace is where its ScanRequests and Jobs live.
//! This module declares the type and its static validation ([`ScanPolicySpec::problems`]);
//! choosing a policy for a pull request is in [`crate::selection`].

use k8s_openapi::api::core::v1::ResourceRequirements;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::severity::{FailOn, Severity};

/// Specification of a ScanPolicy.
// kube's `printcolumn(type_ = "string", ...)` repeats look like duplicated attributes to clippy.
#[allow(clippy::duplicated_attributes)]
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "gatehouse.dev",
    version = "v1alpha1",
    kind = "ScanPolicy",
    plural = "scanpolicies",
    namespaced,
    status = "ScanPolicyStatus",
    shortname = "sp",
    category = "gatehouse",
    derive = "PartialEq",
    doc = "ScanPolicy declares which pull requests are scanned (repositories, base branches, actions, drafts, forks), by which scanners, and which findings fail the check. When several policies match a pull request, the highest priority wins; ties go to the alphabetically first name.",
    printcolumn(name = "Priority", type_ = "integer", json_path = ".spec.priority"),
    printcolumn(
        name = "Ready",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Ready\")].status"
    ),
    printcolumn(
        name = "Reason",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Ready\")].reason"
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase")]
pub struct ScanPolicySpec {
    /// When several policies match a pull request the highest priority governs it; ties go to the alphabetically first policy name.
    #[serde(default)]
    pub priority: i32,
    /// Repositories this policy covers, as `owner/name` globs (`*` within a segment, `**` across, case-insensitive). An entry starting with `!` excludes what it matches; exclusions win over inclusions.
    #[schemars(length(min = 1, max = 256))]
    pub repositories: Vec<String>,
    /// Base branches (the branch a pull request merges into) this policy covers, as globs; `!` excludes. Empty means every branch.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 64))]
    pub base_branches: Vec<String>,
    /// Pull request actions that start a scan. Re-runs, rescan comments and merge groups always do.
    #[serde(default = "default_actions")]
    pub actions: Vec<PullRequestAction>,
    /// Whether draft pull requests are scanned (Scan) or wait until ready for review (Skip).
    #[serde(default)]
    pub drafts: DraftMode,
    /// How pull requests from forks are treated: Scan, RequireApproval (someone with the commands permission comments `/gatehouse ok-to-scan <full head sha>`) or Skip. Trusted authors are scanned without approval.
    #[serde(default)]
    pub forks: ForkMode,
    /// Whose fork pull requests are scanned without approval, by their login or their association with the repository.
    #[serde(default)]
    pub trusted: Trust,
    /// Who may use `/gatehouse` commands (approve a fork's commit, rescan): by their permission on the repository, which GitHub reports per person.
    #[serde(default)]
    pub commands: Commands,
    /// The scanners to run; each becomes one Job and one GitHub Check Run named `gatehouse/<name>`.
    #[schemars(length(min = 1, max = 16))]
    #[x_kube(validation = kube::core::Rule::new("self.all(s, self.exists_one(t, t.name == s.name))").message("scanner names must be unique within a policy"))]
    pub scanners: Vec<ScannerSpec>,
    /// Limits on how many scans of this policy run at once.
    #[serde(default)]
    pub concurrency: Concurrency,
    /// How long finished ScanRequests (and their Jobs) are kept.
    #[serde(default)]
    pub retention: Retention,
    /// How results are reported on GitHub.
    #[serde(default)]
    pub reporting: Reporting,
}

fn default_actions() -> Vec<PullRequestAction> {
    PullRequestAction::DEFAULT.to_vec()
}

/// A `pull_request` webhook action that can start a scan.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum PullRequestAction {
    /// The pull request was opened.
    Opened,
    /// New commits were pushed to the head branch.
    Synchronize,
    /// A closed pull request was reopened.
    Reopened,
    /// A draft was marked ready for review.
    ReadyForReview,
    /// The pull request was edited; only a change of base branch starts a scan.
    Edited,
}

impl PullRequestAction {
    /// Actions that start a scan when a policy names none.
    pub const DEFAULT: [PullRequestAction; 5] = [
        PullRequestAction::Opened,
        PullRequestAction::Synchronize,
        PullRequestAction::Reopened,
        PullRequestAction::ReadyForReview,
        PullRequestAction::Edited,
    ];

    /// The action as GitHub spells it in webhook payloads.
    pub fn as_str(self) -> &'static str {
        match self {
            PullRequestAction::Opened => "opened",
            PullRequestAction::Synchronize => "synchronize",
            PullRequestAction::Reopened => "reopened",
            PullRequestAction::ReadyForReview => "ready_for_review",
            PullRequestAction::Edited => "edited",
        }
    }
}

/// Treatment of draft pull requests.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum DraftMode {
    /// Drafts are not scanned; marking one ready for review starts the scan (the default).
    #[default]
    Skip,
    /// Drafts are scanned like any pull request.
    Scan,
}

/// Treatment of pull requests whose head is in a fork.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum ForkMode {
    /// Scan fork pull requests like any other.
    Scan,
    /// Wait for `/gatehouse ok-to-scan <full head sha>` from someone with the commands permission unless the author is trusted (the default).
    #[default]
    RequireApproval,
    /// Never scan fork pull requests.
    Skip,
}

/// GitHub's `author_association` of a user with a repository.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum AuthorAssociation {
    /// Owner of the repository.
    Owner,
    /// Member of the organisation that owns the repository.
    Member,
    /// Invited collaborator.
    Collaborator,
    /// Has contributed before.
    Contributor,
    /// First contribution to this repository.
    FirstTimeContributor,
    /// First contribution on GitHub.
    FirstTimer,
    /// Placeholder for an imported user.
    Mannequin,
    /// No association.
    None,
}

impl AuthorAssociation {
    /// The association as GitHub spells it.
    pub fn as_str(self) -> &'static str {
        match self {
            AuthorAssociation::Owner => "OWNER",
            AuthorAssociation::Member => "MEMBER",
            AuthorAssociation::Collaborator => "COLLABORATOR",
            AuthorAssociation::Contributor => "CONTRIBUTOR",
            AuthorAssociation::FirstTimeContributor => "FIRST_TIME_CONTRIBUTOR",
            AuthorAssociation::FirstTimer => "FIRST_TIMER",
            AuthorAssociation::Mannequin => "MANNEQUIN",
            AuthorAssociation::None => "NONE",
        }
    }
}

/// Who may use `/gatehouse` commands.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Commands {
    /// The least permission on the repository a commenter needs (read, triage, write, maintain, admin); write by default. An author association is not enough: MEMBER is any member of the organisation and COLLABORATOR includes read-only outside collaborators.
    #[serde(default)]
    pub minimum_permission: Permission,
}

/// A person's permission on a repository, as GitHub's collaborator permission API reports it,
/// from least to most.
#[derive(
    Clone,
    Copy,
    Debug,
    Default,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    Serialize,
    Deserialize,
    JsonSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum Permission {
    /// No access.
    None,
    /// Read.
    Read,
    /// Triage.
    Triage,
    /// Write (push).
    #[default]
    Write,
    /// Maintain.
    Maintain,
    /// Admin.
    Admin,
}

impl Permission {
    /// A permission from GitHub's `permission` (`admin`, `write`, `read`, `none`) or `role_name`
    /// (`maintain`, `triage`, custom roles count as their base) field; unknown text is `None`.
    pub fn from_github(text: &str) -> Permission {
        match text.to_ascii_lowercase().as_str() {
            "admin" => Permission::Admin,
            "maintain" => Permission::Maintain,
            "write" | "push" => Permission::Write,
            "triage" => Permission::Triage,
            "read" | "pull" => Permission::Read,
            _ => Permission::None,
        }
    }
}

/// Trusted people and bots.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Trust {
    /// GitHub logins trusted regardless of their association.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub authors: Vec<String>,
    /// Author associations that are trusted.
    #[serde(default = "default_trusted_associations")]
    pub associations: Vec<AuthorAssociation>,
    /// Bot logins (e.g. `dependabot[bot]`) that are trusted.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub bots: Vec<String>,
}

impl Default for Trust {
    fn default() -> Self {
        Trust {
            authors: Vec::new(),
            associations: default_trusted_associations(),
            bots: Vec::new(),
        }
    }
}

fn default_trusted_associations() -> Vec<AuthorAssociation> {
    vec![
        AuthorAssociation::Owner,
        AuthorAssociation::Member,
        AuthorAssociation::Collaborator,
    ]
}

impl Trust {
    /// Whether a login with this association is trusted. Logins compare case-insensitively, as
    /// GitHub's do; an association GitHub adds later is not trusted.
    pub fn trusts(&self, login: &str, association: &str) -> bool {
        let by_login = self
            .authors
            .iter()
            .chain(self.bots.iter())
            .any(|trusted| trusted.eq_ignore_ascii_case(login));
        by_login
            || self
                .associations
                .iter()
                .any(|a| a.as_str().eq_ignore_ascii_case(association))
    }
}

/// The kind of scanner, which decides the container and how its report is read.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum ScannerKind {
    /// Checkmarx KICS: infrastructure-as-code misconfigurations.
    Kics,
    /// Black Duck Detect (rapid scan): vulnerable and policy-violating dependencies.
    Blackduck,
}

/// One scanner of a policy.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(
    validation = kube::core::Rule::new("!has(self.failOn) || self.failOn in ['critical', 'high', 'medium', 'low', 'info', 'never']").message("failOn must be one of critical, high, medium, low, info, never"),
    validation = kube::core::Rule::new("!has(self.timeoutSeconds) || self.timeoutSeconds > 0").message("timeoutSeconds must be positive"),
    validation = kube::core::Rule::new("self.kind != 'blackduck' || has(self.blackduck)").message("kind blackduck needs blackduck settings (url and credentialsSecretRef)"),
    validation = kube::core::Rule::new("self.kind == 'blackduck' || !has(self.blackduck)").message("blackduck settings are only allowed for kind blackduck"),
    validation = kube::core::Rule::new("self.kind == 'kics' || !has(self.kics)").message("kics settings are only allowed for kind kics"),
)]
pub struct ScannerSpec {
    /// Name of the scanner, unique within the policy; the Check Run is named `gatehouse/<name>`.
    #[schemars(
        length(min = 1, max = 24),
        regex(pattern = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
    )]
    pub name: String,
    /// Which scanner this is: kics or blackduck.
    pub kind: ScannerKind,
    /// Container image of the scanner, pinned by digest (`registry/name:tag@sha256:<64 hex>`).
    #[schemars(length(max = 512))]
    #[x_kube(validation = kube::core::Rule::new("self.matches('^[^\\\\s@]+@sha256:[a-f0-9]{64}$')").message("image must be pinned by digest: name[:tag]@sha256:<64 hex digits>"))]
    pub image: String,
    /// Lowest severity that fails the check: critical, high (default), medium, low, info, or never.
    #[serde(default)]
    pub fail_on: FailOn,
    /// Run only when the pull request changes a file matching one of these globs; otherwise the check concludes skipped. Empty means always.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 64))]
    pub paths: Vec<String>,
    /// Deadline for the whole scanner Job, in seconds (Job activeDeadlineSeconds), at most a
    /// day.
    #[serde(default = "default_timeout_seconds")]
    #[schemars(range(max = 86_400))]
    pub timeout_seconds: i64,
    /// CPU and memory for the scanner container; defaults suit a medium repository.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<ResourceRequirements>,
    /// Settings for kind kics.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kics: Option<KicsSettings>,
    /// Settings for kind blackduck (required for that kind).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub blackduck: Option<BlackDuckSettings>,
}

fn default_timeout_seconds() -> i64 {
    900
}

/// KICS settings; all optional. The scanned repository can never change them: Gatehouse always
/// passes its own configuration so a `kics.config` in the pull request is ignored.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct KicsSettings {
    /// Paths (globs) not scanned (`--exclude-paths`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub exclude_paths: Vec<String>,
    /// Query ids (UUIDs) not run (`--exclude-queries`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub exclude_queries: Vec<String>,
    /// Severities not reported (`--exclude-severities`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub exclude_severities: Vec<Severity>,
    /// Platforms to scan, e.g. Terraform, Kubernetes, Dockerfile (`--type`). Empty means all.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub platforms: Vec<String>,
    /// Cloud providers to scan for, e.g. aws, gcp (`--cloud-provider`). Empty means all.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub cloud_providers: Vec<String>,
    /// Turn off KICS's secrets detection (`--disable-secrets`).
    #[serde(default)]
    pub disable_secrets: bool,
}

/// Black Duck Detect settings.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct BlackDuckSettings {
    /// URL of the Black Duck server.
    #[schemars(regex(pattern = r"^https://[^\s/]+(/[^\s]*)?$"))]
    pub url: String,
    /// Secret (in the policy's namespace) and key holding the Black Duck API token.
    pub credentials_secret_ref: SecretKeyRef,
    /// Black Duck project name; defaults to `owner/name` of the repository.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub project_name: Option<String>,
    /// Trust the server's certificate without verifying it (self-signed on-prem servers only).
    #[serde(default)]
    pub trust_certificate: bool,
}

/// A key in a Secret of the policy's namespace.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SecretKeyRef {
    /// Name of the Secret.
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
    /// Key within the Secret.
    #[serde(default = "default_secret_key")]
    pub key: String,
}

fn default_secret_key() -> String {
    "token".to_owned()
}

/// Concurrency limits.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Concurrency {
    /// Most ScanRequests of this policy running at once; more wait in phase Queued.
    #[serde(default = "default_max_running")]
    #[schemars(range(min = 1))]
    pub max_running: i32,
    /// Most ScanRequests of one repository running at once.
    #[serde(default = "default_max_running_per_repository")]
    #[schemars(range(min = 1))]
    pub max_running_per_repository: i32,
}

impl Default for Concurrency {
    fn default() -> Self {
        Concurrency {
            max_running: default_max_running(),
            max_running_per_repository: default_max_running_per_repository(),
        }
    }
}

fn default_max_running() -> i32 {
    10
}

fn default_max_running_per_repository() -> i32 {
    3
}

/// Retention of finished ScanRequests.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Retention {
    /// Finished ScanRequests older than this many hours are deleted.
    #[serde(default = "default_max_age_hours")]
    #[schemars(range(min = 1))]
    pub max_age_hours: i64,
    /// At most this many finished ScanRequests are kept per pull request (newest first).
    #[serde(default = "default_keep_per_pull_request")]
    #[schemars(range(min = 1))]
    pub keep_per_pull_request: i32,
}

impl Default for Retention {
    fn default() -> Self {
        Retention {
            max_age_hours: default_max_age_hours(),
            keep_per_pull_request: default_keep_per_pull_request(),
        }
    }
}

fn default_max_age_hours() -> i64 {
    168
}

fn default_keep_per_pull_request() -> i32 {
    5
}

/// Reporting options.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Reporting {
    /// Most annotations posted on one Check Run (most severe first, 50 per request); the
    /// summary says how many were left out.
    #[serde(default = "default_max_annotations")]
    #[schemars(range(min = 0, max = 5000))]
    pub max_annotations: i32,
    /// Baseline mode: also scan the pull request's base commit (once per base commit and
    /// scanner configuration, kept for a day) and let the conclusion and the annotations count
    /// only the findings the pull request introduces; the summary shows both numbers.
    #[serde(default)]
    pub baseline: bool,
    /// Also upload SARIF to GitHub code scanning (needs the security_events permission).
    #[serde(default)]
    pub sarif_upload: bool,
}

impl Default for Reporting {
    fn default() -> Self {
        Reporting {
            max_annotations: default_max_annotations(),
            baseline: false,
            sarif_upload: false,
        }
    }
}

fn default_max_annotations() -> i32 {
    500
}

/// Observed state of a ScanPolicy, written by the operator.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ScanPolicyStatus {
    /// Ready (True when the policy is valid and in use) or False with reason Invalid and a message.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    /// The metadata.generation this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
}

impl ScanPolicySpec {
    /// The scanner of this name, if the policy has one.
    pub fn scanner(&self, name: &str) -> Option<&ScannerSpec> {
        self.scanners.iter().find(|s| s.name == name)
    }
}
