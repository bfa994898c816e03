//! Carrying out an [`Intent`] against Kubernetes: choose the governing policy from the watched
//! policies, create the ScanRequest under its deterministic name (`AlreadyExists` is success),
//! set its first phase, supersede older commits of the pull request, mark cancellations and
//! approvals. Every step is idempotent, so a retried or redelivered entry changes nothing twice.

use std::collections::BTreeMap;
use std::sync::Arc;

use gatehouse_crds::labels::{
    self, APPROVED_BY, CANCEL_REQUESTED, PR_UPDATED_AT, SUPERSEDED_BY, pull_request_selector,
};
use gatehouse_crds::naming::{scan_request_name, short_sha};
use gatehouse_crds::scanrequest::{PolicyRef, ScanPhase, Trigger};
use gatehouse_crds::selection::{PolicyIndex, PullRequestFacts, Verdict};
use gatehouse_crds::{ScanPolicy, ScanRequest, ScanRequestSpec};
use kube::api::{Api, ListParams, ObjectMeta, Patch, PatchParams, PostParams};
use kube::runtime::reflector::Store;
use serde_json::json;

use super::github::{GitHub, GitHubError};
use super::plan::{Command, Intent, ScanFacts, facts_from_api};

/// A ScanRequest by namespace and name.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ScanRef {
    /// Namespace (the governing policy's).
    pub namespace: String,
    /// Name.
    pub name: String,
}

/// What was done for an entry; each is a fixed metric label.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// A ScanRequest was created.
    Created(ScanRef),
    /// The ScanRequest already existed (a redelivery or a retry).
    Exists(ScanRef),
    /// Cancellation was requested on this many ScanRequests.
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
}

impl ApplyError {
    /// Whether retrying can help. Requests the API refuses as invalid will be refused again.
    pub fn is_transient(&self) -> bool {
        match self {
            ApplyError::Kube { source, .. } => {
                !matches!(source.as_ref(), kube::Error::Api(s) if s.code == 400 || s.code == 422)
            }
            ApplyError::GitHub(GitHubError::Setup(_)) => false,
            ApplyError::GitHub(GitHubError::Request { .. }) => true,
        }
    }
}

fn kube_err(operation: &'static str) -> impl FnOnce(kube::Error) -> ApplyError {
    move |source| ApplyError::Kube {
        operation,
        source: Box::new(source),
    }
}

/// The Kubernetes side of ingest.
#[derive(Clone)]
pub struct Applier {
    client: kube::Client,
    policies: Store<ScanPolicy>,
    github: Option<Arc<GitHub>>,
    index_cache: Arc<std::sync::Mutex<Option<PolicyCache>>>,
}

/// The index and the (uid, resourceVersion) list it was built from.
type PolicyCache = (Vec<(Option<String>, Option<String>)>, Arc<PolicyIndex>);

impl std::fmt::Debug for Applier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Applier").finish_non_exhaustive()
    }
}

/// Which commit a re-run is for, and what is known of its original scan.
#[derive(Debug)]
struct RerunTarget {
    repository: gatehouse_crds::scanrequest::Repository,
    installation_id: i64,
    head_sha: String,
    number: Option<i64>,
    original: Option<gatehouse_crds::external_id::ExternalId>,
}

/// A delivery's context: its id and trigger.
#[derive(Clone, Debug)]
pub struct Delivery {
    /// `X-GitHub-Delivery`.
    pub id: String,
    /// Trigger recorded in created ScanRequests.
    pub trigger: Trigger,
}

impl Applier {
    /// An applier over a client, a policy store fed by a reflector, and optionally GitHub.
    pub fn new(
        client: kube::Client,
        policies: Store<ScanPolicy>,
        github: Option<Arc<GitHub>>,
    ) -> Applier {
        Applier {
            client,
            policies,
            github,
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
            Intent::Scan { facts, action } => {
                self.scan(&facts, action.as_deref(), delivery, None, None)
                    .await
            }
            Intent::Cancel {
                repository_id,
                number,
            } => self.cancel(repository_id, number).await,
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
                };
                self.rerun(target, scanner, delivery).await
            }
            Intent::Command {
                repository,
                installation_id,
                number,
                command,
                commenter,
                association,
            } => {
                let Some(facts) = self.fetch(&repository, installation_id, number).await? else {
                    return Ok(Outcome::Skipped("command_without_github_access"));
                };
                self.command(&facts, command, &commenter, &association, delivery)
                    .await
            }
        }
    }

    /// Re-runs the scan of a commit: the same pull request facts, a new name.
    async fn rerun(
        &self,
        target: RerunTarget,
        scanner: Option<String>,
        delivery: &Delivery,
    ) -> Result<Outcome, ApplyError> {
        let found = self
            .find_original(
                target.original.as_ref(),
                target.repository.id,
                &target.head_sha,
                target.number,
            )
            .await?;
        let (facts, approved_by) = if let Some(original) = found {
            let approved = labels::annotation(&original.metadata, APPROVED_BY).map(str::to_owned);
            let spec = original.spec;
            let facts = ScanFacts {
                repository: spec.repository,
                installation_id: spec.installation_id,
                pull_request: spec.pull_request,
                updated_at: None,
            };
            (facts, approved)
        } else {
            let Some(number) = target.number else {
                return Ok(Outcome::Skipped("rerun_without_original"));
            };
            let Some(facts) = self
                .fetch(&target.repository, target.installation_id, number)
                .await?
            else {
                return Ok(Outcome::Skipped("rerun_without_original"));
            };
            if facts.pull_request.head_sha != target.head_sha {
                return Ok(Outcome::Skipped("rerun_of_old_commit"));
            }
            (facts, None)
        };
        let outcome = self
            .scan(
                &facts,
                None,
                delivery,
                Some(delivery.id.as_str()),
                scanner.map(|s| vec![s]),
            )
            .await?;
        if let (Some(login), Outcome::Created(scan) | Outcome::Exists(scan)) =
            (&approved_by, &outcome)
        {
            self.annotate(&scan.namespace, &scan.name, APPROVED_BY, login)
                .await?;
        }
        Ok(outcome)
    }

    /// A `/gatehouse` command from a pull request comment.
    async fn command(
        &self,
        facts: &ScanFacts,
        command: Command,
        commenter: &str,
        association: &str,
        delivery: &Delivery,
    ) -> Result<Outcome, ApplyError> {
        let full_name = facts.repository.full_name();
        let Some(selection) = self.index().select(&pr_facts(facts, &full_name, None)) else {
            return Ok(Outcome::Skipped("no_policy"));
        };
        if !selection.policy.spec.trusted.trusts(commenter, association) {
            tracing::info!(commenter = %commenter, association = %association, "command from an untrusted commenter ignored");
            return Ok(Outcome::Skipped("untrusted_commenter"));
        }
        match command {
            Command::Rescan(scanner) => {
                if let Some(name) = &scanner
                    && selection.policy.spec.scanner(name).is_none()
                {
                    return Ok(Outcome::Skipped("unknown_scanner"));
                }
                self.scan(
                    facts,
                    None,
                    delivery,
                    Some(delivery.id.as_str()),
                    scanner.map(|s| vec![s]),
                )
                .await
            }
            Command::OkToScan(sha) => {
                if !facts.pull_request.head_sha.starts_with(&sha) {
                    return Ok(Outcome::Skipped("approval_of_old_commit"));
                }
                let outcome = self.scan(facts, None, delivery, None, None).await?;
                if let Outcome::Created(scan) | Outcome::Exists(scan) = &outcome {
                    self.annotate(&scan.namespace, &scan.name, APPROVED_BY, commenter)
                        .await?;
                }
                Ok(outcome)
            }
        }
    }

    async fn fetch(
        &self,
        repository: &gatehouse_crds::scanrequest::Repository,
        installation_id: i64,
        number: i64,
    ) -> Result<Option<ScanFacts>, ApplyError> {
        let Some(github) = &self.github else {
            return Ok(None);
        };
        let pr = github
            .pull_request(installation_id, &repository.owner, &repository.name, number)
            .await?;
        Ok(Some(facts_from_api(
            repository.clone(),
            installation_id,
            &pr,
        )))
    }

    /// Creates the ScanRequest for a commit if the governing policy wants it.
    async fn scan(
        &self,
        facts: &ScanFacts,
        action: Option<&str>,
        delivery: &Delivery,
        rerun_key: Option<&str>,
        scanners: Option<Vec<String>>,
    ) -> Result<Outcome, ApplyError> {
        let full_name = facts.repository.full_name();
        let Some(selection) = self.index().select(&pr_facts(facts, &full_name, action)) else {
            tracing::debug!(repo = %full_name, pr = facts.pull_request.number, "no ScanPolicy covers this pull request");
            return Ok(Outcome::Skipped("no_policy"));
        };
        let phase = match selection.verdict {
            Verdict::Skip(reason) => return Ok(Outcome::Skipped(reason.as_str())),
            Verdict::AwaitApproval => ScanPhase::AwaitingApproval,
            Verdict::Scan => ScanPhase::Pending,
        };
        let policy = &selection.policy;
        let namespace = policy.metadata.namespace.clone().unwrap_or_default();
        let name = scan_request_name(
            &facts.repository.name,
            facts.repository.id,
            facts.pull_request.number,
            &facts.pull_request.head_sha,
            rerun_key,
        );
        let spec = ScanRequestSpec {
            repository: facts.repository.clone(),
            installation_id: facts.installation_id,
            pull_request: facts.pull_request.clone(),
            trigger: delivery.trigger.clone(),
            policy_ref: PolicyRef {
                name: policy.metadata.name.clone().unwrap_or_default(),
            },
            scanners,
        };
        let mut request = ScanRequest::new(&name, spec);
        request.metadata = ObjectMeta {
            name: Some(name.clone()),
            namespace: Some(namespace.clone()),
            labels: Some(labels::scan_request_labels(&request.spec)),
            annotations: facts
                .updated_at
                .as_ref()
                .map(|at| BTreeMap::from([(PR_UPDATED_AT.to_owned(), at.clone())])),
            ..ObjectMeta::default()
        };
        let api: Api<ScanRequest> = Api::namespaced(self.client.clone(), &namespace);
        let outcome = match api.create(&PostParams::default(), &request).await {
            Ok(_) => {
                tracing::info!(scanrequest = %name, namespace = %namespace, sha = %facts.pull_request.head_sha, phase = ?phase, "ScanRequest created");
                Outcome::Created(ScanRef {
                    namespace: namespace.clone(),
                    name: name.clone(),
                })
            }
            Err(kube::Error::Api(e)) if e.code == 409 => Outcome::Exists(ScanRef {
                namespace: namespace.clone(),
                name: name.clone(),
            }),
            Err(e) => return Err(kube_err("create ScanRequest")(e)),
        };
        self.initial_status(&api, &name, phase, &facts.pull_request.head_sha)
            .await?;
        if rerun_key.is_none() {
            self.supersede(facts, &namespace, &name).await?;
        }
        Ok(outcome)
    }

    /// Sets the first phase unless someone (the operator) already wrote a status.
    async fn initial_status(
        &self,
        api: &Api<ScanRequest>,
        name: &str,
        phase: ScanPhase,
        sha: &str,
    ) -> Result<(), ApplyError> {
        use json_patch::{AddOperation, PatchOperation, TestOperation, jsonptr::PointerBuf};
        let pointer = PointerBuf::from_tokens(["status"]);
        let patch = json_patch::Patch(vec![
            PatchOperation::Test(TestOperation {
                path: pointer.clone(),
                value: serde_json::Value::Null,
            }),
            PatchOperation::Add(AddOperation {
                path: pointer,
                value: json!({"phase": phase, "commit": short_sha(sha)}),
            }),
        ]);
        match api
            .patch_status(name, &PatchParams::default(), &Patch::<()>::Json(patch))
            .await
        {
            Ok(_) => Ok(()),
            // The test failed: a status is there already.
            Err(kube::Error::Api(e)) if e.code == 422 || e.code == 409 => Ok(()),
            Err(e) => Err(kube_err("set initial ScanRequest status")(e)),
        }
    }

    /// Marks unfinished ScanRequests of other commits of the pull request as superseded by the
    /// newest one; deliveries can arrive out of order, so `updated_at` decides which is newest.
    async fn supersede(
        &self,
        facts: &ScanFacts,
        namespace: &str,
        name: &str,
    ) -> Result<(), ApplyError> {
        let all: Api<ScanRequest> = Api::all(self.client.clone());
        let selector = pull_request_selector(facts.repository.id, facts.pull_request.number);
        let siblings = all
            .list(&ListParams::default().labels(&selector))
            .await
            .map_err(kube_err("list ScanRequests of the pull request"))?;
        for other in siblings.items {
            if other.spec.pull_request.head_sha == facts.pull_request.head_sha
                || !unfinished(&other)
            {
                continue;
            }
            let other_at = labels::annotation(&other.metadata, PR_UPDATED_AT);
            let ours_is_older = match (facts.updated_at.as_deref(), other_at) {
                (Some(ours), Some(theirs)) => ours < theirs,
                _ => false,
            };
            let other_name = other.metadata.name.clone().unwrap_or_default();
            let other_ns = other.metadata.namespace.clone().unwrap_or_default();
            if ours_is_older {
                tracing::info!(scanrequest = %name, newer = %other_name, "delivery for an older commit arrived late; superseded at once");
                self.annotate(namespace, name, SUPERSEDED_BY, &other_name)
                    .await?;
            } else {
                tracing::info!(scanrequest = %other_name, by = %name, "older commit superseded");
                self.annotate(&other_ns, &other_name, SUPERSEDED_BY, name)
                    .await?;
            }
        }
        Ok(())
    }

    /// Asks the operator to stop the pull request's unfinished ScanRequests.
    async fn cancel(&self, repository_id: i64, number: i64) -> Result<Outcome, ApplyError> {
        let all: Api<ScanRequest> = Api::all(self.client.clone());
        let list = all
            .list(&ListParams::default().labels(&pull_request_selector(repository_id, number)))
            .await
            .map_err(kube_err("list ScanRequests of the pull request"))?;
        let mut count = 0;
        for request in list.items.iter().filter(|r| unfinished(r)) {
            let name = request.metadata.name.clone().unwrap_or_default();
            let namespace = request.metadata.namespace.clone().unwrap_or_default();
            self.annotate(&namespace, &name, CANCEL_REQUESTED, "pull request closed")
                .await?;
            count += 1;
        }
        Ok(Outcome::Cancelled(count))
    }

    async fn find_original(
        &self,
        original: Option<&gatehouse_crds::external_id::ExternalId>,
        repository_id: i64,
        head_sha: &str,
        number: Option<i64>,
    ) -> Result<Option<ScanRequest>, ApplyError> {
        if let Some(id) = original {
            let api: Api<ScanRequest> = Api::namespaced(self.client.clone(), &id.namespace);
            let found = api
                .get_opt(&id.scan_request)
                .await
                .map_err(kube_err("get the re-run's ScanRequest"))?;
            if found.is_some() {
                return Ok(found);
            }
            tracing::info!(scanrequest = %id.scan_request, "the re-run's ScanRequest is gone; looking for another of the commit");
        }
        let mut selector = format!(
            "{}={repository_id},{}={}",
            labels::REPOSITORY_ID,
            labels::HEAD_SHA,
            head_sha.chars().take(40).collect::<String>()
        );
        if let Some(number) = number {
            use std::fmt::Write as _;
            let _ = write!(selector, ",{}={number}", labels::PULL_REQUEST);
        }
        let all: Api<ScanRequest> = Api::all(self.client.clone());
        let list = all
            .list(&ListParams::default().labels(&selector))
            .await
            .map_err(kube_err("list ScanRequests of the commit"))?;
        Ok(list.items.into_iter().max_by(|a, b| {
            a.metadata
                .creation_timestamp
                .cmp(&b.metadata.creation_timestamp)
        }))
    }

    async fn annotate(
        &self,
        namespace: &str,
        name: &str,
        key: &str,
        value: &str,
    ) -> Result<(), ApplyError> {
        let api: Api<ScanRequest> = Api::namespaced(self.client.clone(), namespace);
        let patch = json!({"metadata": {"annotations": {key: value}}});
        match api
            .patch(name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
        {
            Ok(_) => Ok(()),
            // Deleted in the meantime: nothing left to mark.
            Err(kube::Error::Api(e)) if e.code == 404 => Ok(()),
            Err(e) => Err(kube_err("annotate ScanRequest")(e)),
        }
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

/// Not finished and not already marked to stop.
fn unfinished(request: &ScanRequest) -> bool {
    let terminal = request
        .status
        .as_ref()
        .and_then(|s| s.phase)
        .is_some_and(ScanPhase::is_terminal);
    let marked = labels::annotation(&request.metadata, SUPERSEDED_BY).is_some()
        || labels::annotation(&request.metadata, CANCEL_REQUESTED).is_some();
    !terminal && !marked && request.metadata.deletion_timestamp.is_none()
}
