//! Minimal views of GitHub webhook payloads: only the fields Gatehouse reads, everything
//! optional or defaulted, unknown fields and actions ignored. (octocrab's typed events reject
//! unknown actions and some nulls; see the project's GitHub reference.)

use serde::Deserialize;

/// Fields common to every event.
#[derive(Clone, Debug, Default, Deserialize)]
pub struct Common {
    /// The event's action.
    #[serde(default)]
    pub action: Option<String>,
    /// The App installation that received the event.
    #[serde(default)]
    pub installation: Option<Installation>,
    /// The repository the event is about.
    #[serde(default)]
    pub repository: Option<Repository>,
    /// Who caused the event.
    #[serde(default)]
    pub sender: Option<User>,
}

/// An App installation (only its id).
#[derive(Clone, Debug, Default, Deserialize)]
pub struct Installation {
    /// Installation id.
    pub id: i64,
}

/// A repository.
#[derive(Clone, Debug, Default, Deserialize)]
pub struct Repository {
    /// Numeric id.
    pub id: i64,
    /// Name without owner.
    #[serde(default)]
    pub name: String,
    /// `owner/name`.
    #[serde(default)]
    pub full_name: String,
    /// Owner.
    #[serde(default)]
    pub owner: Option<User>,
}

impl Repository {
    /// The owner's login, from `owner` or `full_name`.
    pub fn owner_login(&self) -> String {
        self.owner.as_ref().map_or_else(
            || self.full_name.split('/').next().unwrap_or("").to_owned(),
            |o| o.login.clone(),
        )
    }
}

/// A user or bot.
#[derive(Clone, Debug, Default, Deserialize)]
pub struct User {
    /// Login.
    #[serde(default)]
    pub login: String,
    /// `User`, `Bot` or `Organization`.
    #[serde(default, rename = "type")]
    pub kind: Option<String>,
}

/// `pull_request` events.
#[derive(Clone, Debug, Deserialize)]
pub struct PullRequestEvent {
    /// The pull request.
    pub pull_request: PullRequest,
    /// What changed, for `edited`.
    #[serde(default)]
    pub changes: Option<Changes>,
}

/// `changes` of an `edited` event.
#[derive(Clone, Debug, Default, Deserialize)]
pub struct Changes {
    /// Present when the base branch changed.
    #[serde(default)]
    pub base: Option<serde_json::Value>,
}

/// A pull request as webhooks and the REST API describe it.
#[derive(Clone, Debug, Deserialize)]
pub struct PullRequest {
    /// Number.
    pub number: i64,
    /// Head.
    pub head: Branch,
    /// Base.
    pub base: Branch,
    /// Draft.
    #[serde(default)]
    pub draft: bool,
    /// Author.
    #[serde(default)]
    pub user: Option<User>,
    /// Author's association with the repository.
    #[serde(default)]
    pub author_association: Option<String>,
    /// `open` or `closed`.
    #[serde(default)]
    pub state: Option<String>,
    /// Last update, used to order deliveries for the same pull request.
    #[serde(default)]
    pub updated_at: Option<String>,
}

impl PullRequest {
    /// Whether the head is in another repository than the base (or its repository is gone).
    pub fn is_fork(&self) -> bool {
        match (&self.head.repo, &self.base.repo) {
            (Some(head), Some(base)) => head.id != base.id,
            _ => true,
        }
    }
}

/// One side of a pull request.
#[derive(Clone, Debug, Deserialize)]
pub struct Branch {
    /// Branch name.
    #[serde(rename = "ref", default)]
    pub ref_: String,
    /// Commit.
    #[serde(default)]
    pub sha: String,
    /// Repository; `null` when a fork was deleted.
    #[serde(default)]
    pub repo: Option<Repository>,
}

/// `check_run` events.
#[derive(Clone, Debug, Deserialize)]
pub struct CheckRunEvent {
    /// The check run.
    pub check_run: CheckRun,
}

/// A check run.
#[derive(Clone, Debug, Deserialize)]
pub struct CheckRun {
    /// Id (a new check run gets a new id: a re-run of our re-run is a new request).
    #[serde(default)]
    pub id: i64,
    /// Check name (`gatehouse/<scanner>`).
    #[serde(default)]
    pub name: String,
    /// Commit.
    #[serde(default)]
    pub head_sha: String,
    /// What Gatehouse put there when creating it.
    #[serde(default)]
    pub external_id: Option<String>,
    /// Pull requests (empty for forks).
    #[serde(default)]
    pub pull_requests: Vec<PullRequestRef>,
}

/// `check_suite` events.
#[derive(Clone, Debug, Deserialize)]
pub struct CheckSuiteEvent {
    /// The suite.
    pub check_suite: CheckSuite,
}

/// A check suite.
#[derive(Clone, Debug, Deserialize)]
pub struct CheckSuite {
    /// Id (one suite per commit and App, reused across re-runs).
    #[serde(default)]
    pub id: i64,
    /// Last update (changes when its check runs change).
    #[serde(default)]
    pub updated_at: Option<String>,
    /// Commit.
    #[serde(default)]
    pub head_sha: String,
    /// Pull requests (empty for forks).
    #[serde(default)]
    pub pull_requests: Vec<PullRequestRef>,
}

/// The minimal pull request objects of check payloads.
#[derive(Clone, Debug, Deserialize)]
pub struct PullRequestRef {
    /// Number.
    pub number: i64,
}

/// `issue_comment` events.
#[derive(Clone, Debug, Deserialize)]
pub struct IssueCommentEvent {
    /// The issue or pull request commented on.
    pub issue: Issue,
    /// The comment.
    pub comment: Comment,
}

/// An issue (pull requests are issues too).
#[derive(Clone, Debug, Deserialize)]
pub struct Issue {
    /// Number.
    pub number: i64,
    /// Present when the issue is a pull request.
    #[serde(default)]
    pub pull_request: Option<serde_json::Value>,
}

/// A comment.
#[derive(Clone, Debug, Deserialize)]
pub struct Comment {
    /// Id: inside the signed payload, so a replayed comment is recognised whatever delivery id
    /// it arrives under.
    pub id: i64,
    /// Text.
    #[serde(default)]
    pub body: Option<String>,
    /// Author.
    #[serde(default)]
    pub user: Option<User>,
    /// Author's association.
    #[serde(default)]
    pub author_association: Option<String>,
}

/// `merge_group` events.
#[derive(Clone, Debug, Deserialize)]
pub struct MergeGroupEvent {
    /// The merge group.
    pub merge_group: MergeGroup,
}

/// A merge queue group.
#[derive(Clone, Debug, Deserialize)]
pub struct MergeGroup {
    /// Commit to test.
    pub head_sha: String,
    /// `refs/heads/gh-readonly-queue/<base>/pr-<N>-<sha>`.
    pub head_ref: String,
    /// `refs/heads/<base>`.
    pub base_ref: String,
    /// The base branch's commit the group is tested on.
    #[serde(default)]
    pub base_sha: Option<String>,
}
