//! `ScanRequest`: one pull-request head commit to scan. Created by the webhook's ingest role
//! (hand-made ones work too), reconciled by the operator. This module only declares the type;
//! it holds no client and decides nothing.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::scanpolicy::{Reporting, ScannerSpec};
use crate::severity::SeverityCounts;

/// Specification of a ScanRequest: which commit of which pull request to scan, why, and under
/// which policy. Immutable once created: a new commit or a re-run is a new ScanRequest.
// kube's `printcolumn(type_ = "string", ...)` repeats look like duplicated attributes to clippy.
#[allow(clippy::duplicated_attributes)]
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "gatehouse.dev",
    version = "v1alpha1",
    kind = "ScanRequest",
    namespaced,
    status = "ScanRequestStatus",
    shortname = "sr",
    category = "gatehouse",
    derive = "PartialEq",
    doc = "ScanRequest is one pull-request head commit to scan with the scanners of a ScanPolicy. The webhook creates it from a GitHub delivery; the operator runs one Job per scanner and reports each as a GitHub Check Run.",
    printcolumn(name = "Repository", type_ = "string", json_path = ".spec.repository.name"),
    printcolumn(name = "PR", type_ = "integer", json_path = ".spec.pullRequest.number"),
    printcolumn(name = "Commit", type_ = "string", json_path = ".status.commit"),
    printcolumn(name = "Phase", type_ = "string", json_path = ".status.phase"),
    printcolumn(name = "Critical", type_ = "integer", json_path = ".status.findings.critical"),
    printcolumn(name = "High", type_ = "integer", json_path = ".status.findings.high"),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp"),
    validation = kube::core::Rule::new("self.metadata.name.size() <= 63")
        .message("ScanRequest names must be at most 63 characters: Job names and labels are derived from them")
        .reason(kube::core::Reason::FieldValueInvalid),
)]
#[x_kube(validation = kube::core::Rule::new("self == oldSelf").message("spec is immutable: create a new ScanRequest to scan another commit or re-run"))]
#[x_kube(validation = kube::core::Rule::new("!has(self.approval) || self.approval.sha == self.pullRequest.headSha").message("an approval covers only the commit it names: approval.sha must equal pullRequest.headSha"))]
#[serde(rename_all = "camelCase")]
pub struct ScanRequestSpec {
    /// The repository the pull request targets: its base repository, where check runs are created.
    pub repository: Repository,
    /// GitHub App installation id that has access to the repository.
    #[schemars(range(min = 1))]
    pub installation_id: i64,
    /// The pull request and the head commit to scan.
    pub pull_request: PullRequest,
    /// What asked for this scan: the webhook delivery, its event and who sent it.
    pub trigger: Trigger,
    /// The ScanPolicy, in the same namespace, that governs this pull request.
    pub policy_ref: PolicyRef,
    /// Run only these scanners of the policy (a re-run of single checks). Absent means all.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 16), inner(length(min = 1, max = 24)))]
    pub scanners: Option<Vec<String>>,
    /// Who approved scanning this commit of a fork, for a policy that requires approval: bound to
    /// the one full commit SHA it names, and immutable like the rest of the spec.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub approval: Option<Approval>,
}

/// An approval to scan one commit of a fork pull request (`/gatehouse ok-to-scan <sha>` by a
/// person with the policy's required permission on the repository).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Approval {
    /// GitHub login of the person who approved.
    #[schemars(length(min = 1, max = 64))]
    pub approver: String,
    /// The full SHA of the approved commit (40 hex digits, 64 in SHA-256 repositories).
    #[schemars(
        length(min = 40, max = 64),
        regex(pattern = r"^[0-9a-f]{40}([0-9a-f]{24})?$")
    )]
    pub sha: String,
    /// Id of the pull request comment that approved.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub comment_id: Option<i64>,
}

/// A GitHub repository, identified by its numeric id (stable across renames) and its name.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Repository {
    /// Login of the user or organisation that owns the repository.
    #[schemars(
        length(min = 1, max = 39),
        regex(pattern = r"^[A-Za-z0-9][A-Za-z0-9-]*$")
    )]
    pub owner: String,
    /// Name of the repository, without the owner.
    #[schemars(length(min = 1, max = 100), regex(pattern = r"^[A-Za-z0-9._-]+$"))]
    pub name: String,
    /// GitHub's numeric repository id.
    #[schemars(range(min = 1))]
    pub id: i64,
}

impl Repository {
    /// `owner/name`, the form GitHub and ScanPolicy repository globs use.
    pub fn full_name(&self) -> String {
        format!("{}/{}", self.owner, self.name)
    }
}

/// The pull request a scan belongs to, as GitHub described it when the scan was requested.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PullRequest {
    /// Pull request number within the repository.
    #[schemars(range(min = 1))]
    pub number: i64,
    /// Full SHA of the head commit to scan (40 hex digits, 64 in SHA-256 repositories).
    #[schemars(
        length(min = 40, max = 64),
        regex(pattern = r"^[0-9a-f]{40}([0-9a-f]{24})?$")
    )]
    pub head_sha: String,
    /// Branch name of the head, in the head repository (a fork's branch for fork pull requests).
    #[schemars(length(max = 255))]
    pub head_ref: String,
    /// Branch the pull request merges into.
    #[schemars(length(min = 1, max = 255))]
    pub base_ref: String,
    /// Full SHA of the base branch's commit when the scan was requested: what baseline mode
    /// compares the head's findings with. Absent in requests made before Gatehouse recorded it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(
        length(min = 40, max = 64),
        regex(pattern = r"^[0-9a-f]{40}([0-9a-f]{24})?$")
    )]
    pub base_sha: Option<String>,
    /// Whether the head lives in another repository than the base (a fork).
    #[serde(default)]
    pub fork: bool,
    /// Whether the pull request was a draft when the scan was requested.
    #[serde(default)]
    pub draft: bool,
    /// Login of the pull request's author.
    #[schemars(length(min = 1, max = 64))]
    pub author: String,
    /// The author's association with the repository as GitHub reports it (OWNER, MEMBER, COLLABORATOR, CONTRIBUTOR, FIRST_TIME_CONTRIBUTOR, FIRST_TIMER, MANNEQUIN, NONE).
    #[schemars(length(max = 32))]
    pub author_association: String,
    /// When GitHub last updated the pull request, as the delivery (or the API) reported it
    /// (RFC 3339 in UTC, whole seconds, as GitHub writes it, so text order is time order): orders
    /// the scans of one pull request. Absent for merge queue commits.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(
        length(max = 32),
        regex(pattern = r"^[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}Z$")
    )]
    pub updated_at: Option<String>,
}

/// The webhook delivery that asked for the scan.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Trigger {
    /// GitHub event name (X-GitHub-Event), e.g. pull_request, check_run, issue_comment, merge_group.
    #[schemars(length(min = 1, max = 64))]
    pub event: String,
    /// The event's action, e.g. opened, synchronize, rerequested.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 64))]
    pub action: Option<String>,
    /// GitHub's delivery id (X-GitHub-Delivery), kept for tracing a scan back to its webhook.
    #[schemars(length(min = 1, max = 128))]
    pub delivery_id: String,
    /// Login of the account whose action caused the delivery.
    #[schemars(length(max = 64))]
    pub sender: String,
}

/// Reference to the governing ScanPolicy.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PolicyRef {
    /// Name of the ScanPolicy in the ScanRequest's namespace.
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
}

/// Observed state of a ScanRequest, written only by the operator.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ScanRequestStatus {
    /// Where the scan is in its life.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<ScanPhase>,
    /// Overall conclusion once every scanner has one: the worst of the scanners' conclusions.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub conclusion: Option<Conclusion>,
    /// Short form (7 characters) of the head commit, for display.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub commit: Option<String>,
    /// One entry per scanner that runs (or was skipped) for this request.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 16))]
    pub scanners: Vec<ScannerStatus>,
    /// Findings of all scanners together, by severity.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub findings: Option<SeverityCounts>,
    /// Name of the newer ScanRequest that superseded this one, when phase is Superseded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub superseded_by: Option<String>,
    /// Human-readable explanation of the current phase.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// Standard Kubernetes conditions (Ready, Admitted, ...).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    /// The metadata.generation this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// The governing policy as the operator first read it for this request: what runs and what
    /// fails it. A policy edited later does not change a scan already decided.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub policy: Option<PolicySnapshot>,
}

/// What a ScanRequest takes from its ScanPolicy, copied once into its status.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PolicySnapshot {
    /// Name of the ScanPolicy.
    pub name: String,
    /// The policy's metadata.generation when it was copied.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub generation: Option<i64>,
    /// The scanners this request runs (the policy's, or the subset the request names). Bounded
    /// like the policy's list, which also bounds the cost of the CEL rules each item carries.
    #[schemars(length(max = 16))]
    pub scanners: Vec<ScannerSpec>,
    /// How results are reported.
    #[serde(default)]
    pub reporting: Reporting,
}

/// Life-cycle phase of a ScanRequest.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
pub enum ScanPhase {
    /// Created, not yet looked at by the operator.
    Pending,
    /// A fork pull request waiting for `/gatehouse ok-to-scan <full head sha>` from someone with the policy's commands permission.
    AwaitingApproval,
    /// Admitted, waiting for a concurrency slot.
    Queued,
    /// At least one scanner Job is running.
    Running,
    /// Every scanner finished and the policy passed the pull request.
    Succeeded,
    /// Every scanner finished and at least one failed the pull request or could not run.
    Failed,
    /// Stopped before completion (pull request closed, or cancelled by hand).
    Cancelled,
    /// A newer head commit of the same pull request replaced this scan.
    Superseded,
}

impl ScanPhase {
    /// Whether the phase is final: nothing more will run for this request.
    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            ScanPhase::Succeeded | ScanPhase::Failed | ScanPhase::Cancelled | ScanPhase::Superseded
        )
    }
}

/// Conclusion of a scan, as reported on the GitHub Check Run.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
pub enum Conclusion {
    /// No finding at or above the policy's failOn severity.
    Success,
    /// Findings at or above failOn, or the scanner failed.
    Failure,
    /// Findings reported, but the policy never fails (failOn: never).
    Neutral,
    /// Stopped before completion.
    Cancelled,
    /// The scanner exceeded its timeout.
    TimedOut,
    /// Not run: the scanner's path filter matched no changed file.
    Skipped,
    /// Waiting for a person (fork approval).
    ActionRequired,
}

impl Conclusion {
    /// The value GitHub's Checks API expects.
    pub fn as_github(self) -> &'static str {
        match self {
            Conclusion::Success => "success",
            Conclusion::Failure => "failure",
            Conclusion::Neutral => "neutral",
            Conclusion::Cancelled => "cancelled",
            Conclusion::TimedOut => "timed_out",
            Conclusion::Skipped => "skipped",
            Conclusion::ActionRequired => "action_required",
        }
    }
}

/// State of one scanner within a ScanRequest.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ScannerStatus {
    /// Scanner name, as in the policy.
    pub name: String,
    /// Where this scanner is in its life.
    pub phase: ScannerPhase,
    /// Name of the Kubernetes Job running the scanner, once created.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub job_name: Option<String>,
    /// Id of the GitHub Check Run that reports this scanner.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub check_run_id: Option<i64>,
    /// How many Jobs were started for this scanner (retries included).
    #[serde(default)]
    pub attempts: i32,
    /// When the scanner's Job started.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<Time>,
    /// When the scanner finished.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished_at: Option<Time>,
    /// The scanner's conclusion, once finished.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub conclusion: Option<Conclusion>,
    /// This scanner's findings by severity.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub findings: Option<SeverityCounts>,
    /// In baseline mode, the findings the pull request introduces (not on its base commit), by
    /// severity: what the conclusion was decided on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub new_findings: Option<SeverityCounts>,
    /// Id of the published result this scanner was concluded from: the same result delivered
    /// again is recognised, a different one for the same attempt is refused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 64))]
    pub result_id: Option<String>,
    /// Human-readable detail: why it failed, was skipped or is waiting.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// What GitHub was last told about this scanner's check run (status and conclusion), so
    /// each change is reported once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reported: Option<String>,
}

/// Life-cycle phase of one scanner within a ScanRequest.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
pub enum ScannerPhase {
    /// Not started.
    Pending,
    /// Its Job exists and waits to start.
    Queued,
    /// Its Job is running.
    Running,
    /// Finished with a result (which may still fail the pull request).
    Completed,
    /// Could not produce a result (scanner error, timeout, lost Job).
    Errored,
    /// Not run: its path filter matched no changed file.
    Skipped,
    /// Stopped before completion.
    Cancelled,
}
