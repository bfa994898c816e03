//! Carrying out an [`Intent`]: a thin driver over the lifecycle contract in
//! [`gatehouse_crds::lifecycle`]. It selects the governing policy, creates the ScanRequest under
//! its trigger's deterministic name (`AlreadyExists` is success), and writes the stop requests
//! the contract decides. It never writes status: that is the operator's alone.
//!
//! Every step is idempotent, so a retried or redelivered entry changes nothing twice:
//!
//! 1. a trigger already covered by a live scan of its commit and base creates nothing;
//! 2. a pull request closed after the trigger admits no scan, checked before the create and again
//!    after it (the close handler records the close before it lists, so one of the two sees the
//!    other);
//! 3. after a create, the pull request is settled: one scan governs its head, the rest stop.

use std::sync::Arc;

use gatehouse_crds::external_id::ExternalId;
use gatehouse_crds::labels::{self, pull_request_selector};
use gatehouse_crds::lifecycle::{
    self, Head, Lane, PullRequestState, Scan, ScanRef, StopRequest, approval_for, is_full_sha,
};
use gatehouse_crds::naming::scan_request_name;
use gatehouse_crds::scanrequest::{Approval, PolicyRef, Repository, Trigger};
use gatehouse_crds::selection::{PolicyIndex, PullRequestFacts, Selection, Verdict};
use gatehouse_crds::{ScanPolicy, ScanRequest, ScanRequestSpec};
use kube::api::{Api, ListParams, ObjectMeta, Patch, PatchParams, PostParams};
use kube::runtime::reflector::Store;
use serde_json::json;

use super::github::{GitHub, GitHubError};
use super::plan::{Command, Intent, Key, ScanFacts, facts_from_api};
use super::state::Memory;

/// The field manager of everything ingest writes.
pub const FIELD_MANAGER: &str = "gatehouse-webhook";

/// Why a closed pull request's scans stop.
const CLOSED: &str = "pull request closed";

/// What was done for an entry; each is a fixed metric label.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// A ScanRequest was created.
    Created(ScanRef),
    /// A ScanRequest already covers the trigger (a redelivery, a retry, a repeated event).
    Exists(ScanRef),
    /// Stop was requested on this many ScanRequests (the pull request was closed).
    Cancelled(usize),
    /// Nothing to do, and why.
    Skipped(&'static str),
}

impl Outcome {
    /// The metric label.
    pub fn label(&self) -> &'static str {
        match self {
            Outcome::Created(_) => "created",
            Outcome::Exists(_) => "exists",
            Outcome::Cancelled(_) => "cancelled",
            Outcome::Skipped(reason) => reason,
        }
    }
}

/// Carrying out an intent failed.
#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    /// A Kubernetes API call failed.
    #[error("failed to {operation}: {source}")]
    Kube {
        /// What was being done.
        operation: &'static str,
        /// Why.
        source: Box<kube::Error>,
    },
    /// A GitHub API call failed.
    #[error(transparent)]
    GitHub(#[from] GitHubError),
    /// Redis failed.
    #[error("failed to {operation} in redis: {source}")]
    Redis {
        /// What was being done.
        operation: &'static str,
        /// Why.
        source: redis::RedisError,
    },
    /// Another writer kept changing a ScanRequest between our read and our write.
    #[error("ScanRequest {0} kept changing while a stop request was written")]
    Contended(ScanRef),
}

impl ApplyError {
    /// Whether retrying can help. Requests the API refuses as invalid will be refused again.
    pub fn is_transient(&self) -> bool {
        match self {
            ApplyError::Kube { source, .. } => {
                !matches!(source.as_ref(), kube::Error::Api(s) if s.code == 400 || s.code == 422)
            }
            ApplyError::GitHub(e) => e.is_transient(),
            ApplyError::Redis { .. } | ApplyError::Contended(_) => true,
        }
    }
}

fn kube_err(operation: &'static str) -> impl FnOnce(kube::Error) -> ApplyError {
    move |source| ApplyError::Kube {
        operation,
        source: Box::new(source),
    }
}

fn redis_err(operation: &'static str) -> impl FnOnce(redis::RedisError) -> ApplyError {
    move |source| ApplyError::Redis { operation, source }
}

/// The Kubernetes side of ingest.
#[derive(Clone)]
pub struct Applier {
    client: kube::Client,
    policies: Store<ScanPolicy>,
    github: Option<Arc<GitHub>>,
    memory: Memory,
    index_cache: Arc<std::sync::Mutex<Option<PolicyCache>>>,
}

/// The index and the (uid, resourceVersion) list it was built from.
type PolicyCache = (Vec<(Option<String>, Option<String>)>, Arc<PolicyIndex>);

impl std::fmt::Debug for Applier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Applier").finish_non_exhaustive()
    }
}

/// A delivery's context: its id and trigger.
#[derive(Clone, Debug)]
pub struct Delivery {
    /// `X-GitHub-Delivery`.
    pub id: String,
    /// Trigger recorded in created ScanRequests.
    pub trigger: Trigger,
}

/// A scan to create, once its policy wants it.
#[derive(Debug)]
struct NewScan {
    facts: ScanFacts,
    action: Option<String>,
    key: Key,
    scanners: Option<Vec<String>>,
    approval: Option<Approval>,
}

/// A `/gatehouse` command and where it was made.
#[derive(Debug)]
struct CommandRequest {
    repository: Repository,
    installation_id: i64,
    number: i64,
    command: Command,
    commenter: String,
    comment_id: i64,
}

/// Which commit a re-run is for, and what is known of its original scan.
#[derive(Debug)]
struct RerunTarget {
    repository: Repository,
    installation_id: i64,
    head_sha: String,
    number: Option<i64>,
    original: Option<ExternalId>,
    scanner: Option<String>,
}

impl Applier {
    /// An applier over a client, a policy store fed by a reflector, ingest's Redis memory, and
    /// optionally GitHub.
    pub fn new(
        client: kube::Client,
        policies: Store<ScanPolicy>,
        memory: Memory,
        github: Option<Arc<GitHub>>,
    ) -> Applier {
        Applier {
            client,
            policies,
            github,
            memory,
            index_cache: Arc::default(),
        }
    }

    /// The policy index for the current policies. Compiling every policy's globs per delivery
    /// would be wasted work: the index is rebuilt only when a policy was added, changed or
    /// removed (compared by uid and resourceVersion).
    fn index(&self) -> Arc<PolicyIndex> {
        let policies = self.policies.state();
        let mut key: Vec<(Option<String>, Option<String>)> = policies
            .iter()
            .map(|p| (p.metadata.uid.clone(), p.metadata.resource_version.clone()))
            .collect();
        // The store's order is arbitrary.
        key.sort_unstable();
        let mut cache = self
            .index_cache
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        match cache.as_ref() {
            Some((cached_key, index)) if *cached_key == key => Arc::clone(index),
            _ => {
                let index = Arc::new(PolicyIndex::build(policies));
                for (policy, problems) in index.rejected() {
                    tracing::warn!(
                        policy = policy.metadata.name.as_deref().unwrap_or(""),
                        namespace = policy.metadata.namespace.as_deref().unwrap_or(""),
                        problems = %problems.iter().map(ToString::to_string).collect::<Vec<_>>().join("; "),
                        "ScanPolicy left out of selection"
                    );
                }
                *cache = Some((key, Arc::clone(&index)));
                index
            }
        }
    }

    /// Carries out one intent.
    pub async fn apply(&self, intent: Intent, delivery: &Delivery) -> Result<Outcome, ApplyError> {
        match intent {
            Intent::Ignore(reason) => Ok(Outcome::Skipped(reason)),
            Intent::Scan { facts, action, key } => {
                if matches!(action.as_deref(), Some("opened" | "reopened"))
                    && let Some(at) = &facts.pull_request.updated_at
                {
                    let state = PullRequestState {
                        open: true,
                        at: at.clone(),
                    };
                    self.memory
                        .record(facts.repository.id, facts.pull_request.number, &state)
                        .await
                        .map_err(redis_err("record the pull request as open"))?;
                }
                let new = NewScan {
                    facts,
                    action,
                    key,
                    scanners: None,
                    approval: None,
                };
                self.scan(new, delivery).await
            }
            Intent::Close {
                repository,
                number,
                updated_at,
            } => self.close(&repository, number, updated_at).await,
            Intent::Rerun {
                repository,
                installation_id,
                head_sha,
                number,
                original,
                scanner,
            } => {
                let target = RerunTarget {
                    repository,
                    installation_id,
                    head_sha,
                    number,
                    original,
                    scanner,
                };
                self.rerun(target, delivery).await
            }
            Intent::Command {
                repository,
                installation_id,
                number,
                command,
                commenter,
                comment_id,
            } => {
                let request = CommandRequest {
                    repository,
                    installation_id,
                    number,
                    command,
                    commenter,
                    comment_id,
                };
                self.command(request, delivery).await
            }
        }
    }

    /// Creates the ScanRequest for a trigger if its policy wants it and nothing covers it, then
    /// settles the pull request.
    async fn scan(&self, new: NewScan, delivery: &Delivery) -> Result<Outcome, ApplyError> {
        let facts = &new.facts;
        let full_name = facts.repository.full_name();
        let Some(selection) =
            self.index()
                .select(&pr_facts(facts, &full_name, new.action.as_deref()))
        else {
            tracing::debug!(repo = %full_name, pr = facts.pull_request.number, "no ScanPolicy covers this pull request");
            return Ok(Outcome::Skipped("no_policy"));
        };
        if let Verdict::Skip(reason) = selection.verdict {
            return Ok(Outcome::Skipped(reason.as_str()));
        }
        let policy = &selection.policy;
        let namespace = policy.metadata.namespace.clone().unwrap_or_default();
        let spec = ScanRequestSpec {
            repository: facts.repository.clone(),
            installation_id: facts.installation_id,
            pull_request: facts.pull_request.clone(),
            trigger: delivery.trigger.clone(),
            policy_ref: PolicyRef {
                name: policy.metadata.name.clone().unwrap_or_default(),
            },
            scanners: new.scanners,
            approval: new.approval,
        };
        let lane = lifecycle::lane(&spec);
        let reference = ScanRef {
            namespace,
            name: scan_request_name(
                &spec.repository.name,
                spec.repository.id,
                spec.pull_request.number,
                &spec.pull_request.head_sha,
                new.key.as_trigger(),
            ),
        };
        if lane == Lane::PullRequest && !self.admitted(&spec).await? {
            // A retry after a crash between the create and the second check below finds its
            // ScanRequest here: stop it (nothing happens when there is none).
            return self.refuse_closed(&reference).await;
        }
        let existing = self
            .list(spec.repository.id, spec.pull_request.number)
            .await?;
        let scans: Vec<Scan<'_>> = existing.iter().map(Scan::of).collect();
        let outcome = match lifecycle::covering(&spec, &scans) {
            Some(covering) => Outcome::Exists(covering.clone()),
            None => self.create(&reference, spec.clone()).await?,
        };
        if lane == Lane::MergeQueue {
            return Ok(outcome);
        }
        // The close may have been handled between the first check and the create, after its
        // list missed this ScanRequest: then this check sees it.
        if !self.admitted(&spec).await? {
            return self.refuse_closed(&reference).await;
        }
        // Settled even when the scan existed: a retry after a failure between the create and
        // the settling must finish the settling.
        self.settle(
            &spec.repository,
            spec.installation_id,
            spec.pull_request.number,
        )
        .await?;
        Ok(outcome)
    }

    /// A trigger from before the pull request's close: its ScanRequest, if one was created, is
    /// stopped.
    async fn refuse_closed(&self, reference: &ScanRef) -> Result<Outcome, ApplyError> {
        tracing::info!(scanrequest = %reference, "trigger precedes the pull request's close; not scanned");
        let stop = StopRequest::Cancelled {
            message: CLOSED.to_owned(),
        };
        self.stop(reference, &stop, None).await?;
        Ok(Outcome::Skipped("pull_request_closed"))
    }

    /// Whether the pull request's recorded state admits a scan triggered at the spec's time.
    async fn admitted(&self, spec: &ScanRequestSpec) -> Result<bool, ApplyError> {
        let state = self
            .memory
            .state(spec.repository.id, spec.pull_request.number)
            .await
            .map_err(redis_err("read the pull request's state"))?;
        Ok(lifecycle::admits(
            state.as_ref(),
            spec.pull_request.updated_at.as_deref(),
        ))
    }

    /// Creates a ScanRequest; one already there under the name is this trigger's own (the name
    /// is the trigger's), so it counts as done.
    async fn create(
        &self,
        reference: &ScanRef,
        spec: ScanRequestSpec,
    ) -> Result<Outcome, ApplyError> {
        let mut request = ScanRequest::new(&reference.name, spec);
        request.metadata = ObjectMeta {
            name: Some(reference.name.clone()),
            namespace: Some(reference.namespace.clone()),
            labels: Some(labels::scan_request_labels(&request.spec)),
            ..ObjectMeta::default()
        };
        let api: Api<ScanRequest> = Api::namespaced(self.client.clone(), &reference.namespace);
        let params = PostParams {
            field_manager: Some(FIELD_MANAGER.to_owned()),
            ..PostParams::default()
        };
        match api.create(&params, &request).await {
            Ok(_) => {
                tracing::info!(scanrequest = %reference, sha = %request.spec.pull_request.head_sha, "ScanRequest created");
                Ok(Outcome::Created(reference.clone()))
            }
            Err(kube::Error::Api(e)) if e.code == 409 => Ok(Outcome::Exists(reference.clone())),
            Err(e) => Err(kube_err("create ScanRequest")(e)),
        }
    }

    /// Leaves one scan governing the pull request's head and stops the others. Where the
    /// triggers' times cannot order the scans, GitHub is asked for the head; without GitHub,
    /// nothing is stopped (two scans run rather than the head going unscanned).
    async fn settle(
        &self,
        repository: &Repository,
        installation_id: i64,
        number: i64,
    ) -> Result<(), ApplyError> {
        let existing = self.list(repository.id, number).await?;
        let scans: Vec<Scan<'_>> = existing.iter().map(Scan::of).collect();
        let stops = if let Ok(stops) = lifecycle::settle(&scans, None) {
            stops
        } else {
            let Some(github) = &self.github else {
                tracing::warn!(pr = number, repo = %repository.full_name(), "scans of several commits and no order known without GitHub access; none superseded");
                return Ok(());
            };
            let pr = github
                .pull_request(installation_id, &repository.owner, &repository.name, number)
                .await?;
            let head = Head {
                sha: pr.head.sha.to_ascii_lowercase(),
                base_ref: pr.base.ref_.clone(),
            };
            tracing::debug!(pr = number, head = %head.sha, "ordered the pull request's scans by GitHub's head");
            lifecycle::settle(&scans, Some(&head)).unwrap_or_default()
        };
        for (reference, stop) in &stops {
            let listed = existing.iter().find(|r| {
                r.metadata.name.as_deref() == Some(reference.name.as_str())
                    && r.metadata.namespace.as_deref() == Some(reference.namespace.as_str())
            });
            let version = listed.and_then(|r| r.metadata.resource_version.clone());
            self.stop(reference, stop, version).await?;
        }
        Ok(())
    }

    /// Records the close, then stops the pull request's unfinished scans.
    async fn close(
        &self,
        repository: &Repository,
        number: i64,
        updated_at: Option<String>,
    ) -> Result<Outcome, ApplyError> {
        // First the record, then the list: a scan created concurrently is either listed here or
        // sees the record in its own second check.
        if let Some(at) = updated_at {
            let state = PullRequestState { open: false, at };
            self.memory
                .record(repository.id, number, &state)
                .await
                .map_err(redis_err("record the pull request as closed"))?;
        } else {
            tracing::warn!(
                pr = number,
                "closed event without updated_at; its close is not recorded against late scans"
            );
        }
        let existing = self.list(repository.id, number).await?;
        let scans: Vec<Scan<'_>> = existing.iter().map(Scan::of).collect();
        let stops = lifecycle::cancel(&scans, CLOSED);
        for (reference, stop) in &stops {
            self.stop(reference, stop, None).await?;
        }
        Ok(Outcome::Cancelled(stops.len()))
    }

    /// Re-runs the scan of a commit (Re-run buttons): the original's facts, including its
    /// trigger time and its approval, under a new name.
    async fn rerun(&self, target: RerunTarget, delivery: &Delivery) -> Result<Outcome, ApplyError> {
        let found = self.find_original(&target).await?;
        let facts = if let Some(original) = found {
            if lifecycle::lane(&original.spec) == Lane::MergeQueue {
                // A re-run would leave the queue's lane; the queue builds a new group instead.
                return Ok(Outcome::Skipped("rerun_of_merge_queue_check"));
            }
            ScanFacts {
                repository: original.spec.repository,
                installation_id: original.spec.installation_id,
                pull_request: original.spec.pull_request,
            }
        } else {
            let Some(number) = target.number else {
                return Ok(Outcome::Skipped("rerun_without_original"));
            };
            let Some(github) = &self.github else {
                return Ok(Outcome::Skipped("rerun_without_original"));
            };
            let pr = github
                .pull_request(
                    target.installation_id,
                    &target.repository.owner,
                    &target.repository.name,
                    number,
                )
                .await?;
            if pr.state.as_deref() == Some("closed") {
                return Ok(Outcome::Skipped("pull_request_closed"));
            }
            let facts = facts_from_api(target.repository.clone(), target.installation_id, &pr);
            if facts.pull_request.head_sha != target.head_sha {
                return Ok(Outcome::Skipped("rerun_of_old_commit"));
            }
            facts
        };
        let approval = self.inherited_approval(&facts).await?;
        let new = NewScan {
            facts,
            action: None,
            key: Key::Rerun(delivery.id.clone()),
            scanners: target.scanner.map(|s| vec![s]),
            approval,
        };
        self.scan(new, delivery).await
    }

    /// The approval of the facts' commit recorded on any scan of the pull request: a re-run of
    /// an approved commit needs no second approval.
    async fn inherited_approval(&self, facts: &ScanFacts) -> Result<Option<Approval>, ApplyError> {
        let existing = self
            .list(facts.repository.id, facts.pull_request.number)
            .await?;
        let scans: Vec<Scan<'_>> = existing.iter().map(Scan::of).collect();
        Ok(approval_for(&scans, &facts.pull_request.head_sha).cloned())
    }

    /// A `/gatehouse` command from a pull request comment. Each comment is carried out at most
    /// once, whatever delivery id it arrives under.
    async fn command(
        &self,
        request: CommandRequest,
        delivery: &Delivery,
    ) -> Result<Outcome, ApplyError> {
        let repository_id = request.repository.id;
        let comment_id = request.comment_id;
        if self
            .memory
            .command_done(repository_id, comment_id)
            .await
            .map_err(redis_err("look up the comment"))?
        {
            tracing::info!(
                comment = comment_id,
                "comment command already carried out; replay ignored"
            );
            return Ok(Outcome::Skipped("command_replayed"));
        }
        let outcome = self.command_once(request, delivery).await?;
        self.memory
            .mark_command_done(repository_id, comment_id)
            .await
            .map_err(redis_err("remember the comment"))?;
        Ok(outcome)
    }

    async fn command_once(
        &self,
        request: CommandRequest,
        delivery: &Delivery,
    ) -> Result<Outcome, ApplyError> {
        let Some(github) = &self.github else {
            return Ok(Outcome::Skipped("command_without_github_access"));
        };
        let repository = &request.repository;
        let pr = github
            .pull_request(
                request.installation_id,
                &repository.owner,
                &repository.name,
                request.number,
            )
            .await?;
        if pr.state.as_deref() == Some("closed") {
            return Ok(Outcome::Skipped("pull_request_closed"));
        }
        let facts = facts_from_api(repository.clone(), request.installation_id, &pr);
        let full_name = repository.full_name();
        let Some(selection) = self.index().select(&pr_facts(&facts, &full_name, None)) else {
            return Ok(Outcome::Skipped("no_policy"));
        };
        if !self.may_command(github, &request, &selection).await? {
            return Ok(Outcome::Skipped("untrusted_commenter"));
        }
        let key = Key::Comment(request.comment_id);
        match request.command {
            Command::Rescan(scanner) => {
                if let Some(name) = &scanner
                    && selection.policy.spec.scanner(name).is_none()
                {
                    return Ok(Outcome::Skipped("unknown_scanner"));
                }
                let approval = self.inherited_approval(&facts).await?;
                let new = NewScan {
                    facts,
                    action: None,
                    key,
                    scanners: scanner.map(|s| vec![s]),
                    approval,
                };
                self.scan(new, delivery).await
            }
            Command::OkToScan(sha) => {
                if !is_full_sha(&sha) {
                    tracing::info!(commenter = %request.commenter, sha = %sha, "ok-to-scan refused: it must name the full commit SHA");
                    return Ok(Outcome::Skipped("approval_not_full_sha"));
                }
                if sha != facts.pull_request.head_sha {
                    tracing::info!(commenter = %request.commenter, sha = %sha, head = %facts.pull_request.head_sha, "ok-to-scan refused: not the pull request's head");
                    return Ok(Outcome::Skipped("approval_of_old_commit"));
                }
                if selection.verdict != Verdict::AwaitApproval {
                    return Ok(Outcome::Skipped("approval_not_needed"));
                }
                let approval = Approval {
                    approver: request.commenter.clone(),
                    sha,
                    comment_id: Some(request.comment_id),
                };
                let new = NewScan {
                    facts,
                    action: None,
                    key,
                    scanners: None,
                    approval: Some(approval),
                };
                self.scan(new, delivery).await
            }
        }
    }

    /// Whether the commenter's permission on the repository is at least the policy's minimum.
    async fn may_command(
        &self,
        github: &GitHub,
        request: &CommandRequest,
        selection: &Selection,
    ) -> Result<bool, ApplyError> {
        let required = selection.policy.spec.commands.minimum_permission;
        let permission = github
            .permission(
                request.installation_id,
                &request.repository.owner,
                &request.repository.name,
                &request.commenter,
            )
            .await?;
        if permission < required {
            tracing::info!(commenter = %request.commenter, permission = ?permission, required = ?required, "command refused: the commenter's permission on the repository is too low");
            return Ok(false);
        }
        Ok(true)
    }

    /// The ScanRequests of one pull request, in every namespace.
    async fn list(&self, repository_id: i64, number: i64) -> Result<Vec<ScanRequest>, ApplyError> {
        let all: Api<ScanRequest> = Api::all(self.client.clone());
        let list = all
            .list(&ListParams::default().labels(&pull_request_selector(repository_id, number)))
            .await
            .map_err(kube_err("list ScanRequests of the pull request"))?;
        Ok(list.items)
    }

    /// Writes a stop request unless the ScanRequest has one: the first writer wins, and a stop
    /// request is never replaced or removed. The write is conditional on the resourceVersion
    /// read, so two writers cannot both believe theirs landed.
    async fn stop(
        &self,
        reference: &ScanRef,
        stop: &StopRequest,
        mut version: Option<String>,
    ) -> Result<(), ApplyError> {
        let api: Api<ScanRequest> = Api::namespaced(self.client.clone(), &reference.namespace);
        let params = PatchParams {
            field_manager: Some(FIELD_MANAGER.to_owned()),
            ..PatchParams::default()
        };
        for _ in 0..5 {
            let current_version = if let Some(version) = version.take() {
                version
            } else {
                let Some(current) = api
                    .get_opt(&reference.name)
                    .await
                    .map_err(kube_err("read a ScanRequest to stop"))?
                else {
                    return Ok(());
                };
                if StopRequest::of(&current.metadata).is_some() {
                    return Ok(());
                }
                current.metadata.resource_version.unwrap_or_default()
            };
            let patch = json!({"metadata": {
                "resourceVersion": current_version,
                "annotations": {lifecycle::STOP: stop.to_annotation()},
            }});
            match api
                .patch(&reference.name, &params, &Patch::Merge(&patch))
                .await
            {
                Ok(_) => {
                    tracing::info!(scanrequest = %reference, stop = %stop.to_annotation(), "stop requested");
                    return Ok(());
                }
                // Changed since read (or deleted): read again.
                Err(kube::Error::Api(e)) if e.code == 409 => {}
                Err(kube::Error::Api(e)) if e.code == 404 => return Ok(()),
                Err(e) => return Err(kube_err("write a stop request")(e)),
            }
        }
        Err(ApplyError::Contended(reference.clone()))
    }

    async fn find_original(&self, target: &RerunTarget) -> Result<Option<ScanRequest>, ApplyError> {
        if let Some(id) = &target.original {
            let api: Api<ScanRequest> = Api::namespaced(self.client.clone(), &id.namespace);
            let found = api
                .get_opt(&id.scan_request)
                .await
                .map_err(kube_err("get the re-run's ScanRequest"))?;
            if let Some(found) = found
                && found.spec.repository.id == target.repository.id
                && found.spec.pull_request.head_sha == target.head_sha
            {
                return Ok(Some(found));
            }
            tracing::info!(scanrequest = %id.scan_request, "the re-run's ScanRequest is gone; looking for another of the commit");
        }
        let mut selector = format!(
            "{}={},{}={}",
            labels::REPOSITORY_ID,
            target.repository.id,
            labels::HEAD_SHA,
            target.head_sha.chars().take(40).collect::<String>()
        );
        if let Some(number) = target.number {
            use std::fmt::Write as _;
            let _ = write!(selector, ",{}={number}", labels::PULL_REQUEST);
        }
        let all: Api<ScanRequest> = Api::all(self.client.clone());
        let list = all
            .list(&ListParams::default().labels(&selector))
            .await
            .map_err(kube_err("list ScanRequests of the commit"))?;
        Ok(list
            .items
            .into_iter()
            .filter(|r| r.spec.pull_request.head_sha == target.head_sha)
            .max_by(|a, b| {
                a.metadata
                    .creation_timestamp
                    .cmp(&b.metadata.creation_timestamp)
            }))
    }
}

fn pr_facts<'a>(
    facts: &'a ScanFacts,
    full_name: &'a str,
    action: Option<&'a str>,
) -> PullRequestFacts<'a> {
    PullRequestFacts {
        repository: full_name,
        base_ref: &facts.pull_request.base_ref,
        action,
        draft: facts.pull_request.draft,
        fork: facts.pull_request.fork,
        author: &facts.pull_request.author,
        author_association: &facts.pull_request.author_association,
    }
}
