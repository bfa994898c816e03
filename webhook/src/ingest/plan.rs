//! What a stored delivery asks for, decided from its payload alone: scan a commit, close a
//! pull request, re-run a scan, run a `/gatehouse` command, or nothing. Pure: no Redis, no
//! Kubernetes, no GitHub. Unknown actions are ignored, never errors; only payloads that cannot be
//! what GitHub sends are errors (and go to the dead-letter stream).

use gatehouse_crds::external_id::ExternalId;
use gatehouse_crds::lifecycle::is_github_time;
use gatehouse_crds::naming::TriggerKey;
use gatehouse_crds::scanrequest::{PullRequest, Repository, Trigger};
use serde::de::DeserializeOwned;

use super::payload::{
    CheckRunEvent, CheckSuiteEvent, Common, IssueCommentEvent, MergeGroupEvent,
    PullRequest as PayloadPullRequest, PullRequestEvent,
};

/// Everything needed to create a ScanRequest for a pull request's commit.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ScanFacts {
    /// Base repository.
    pub repository: Repository,
    /// App installation.
    pub installation_id: i64,
    /// The pull request and commit (with its `updatedAt`, when known in GitHub's form).
    pub pull_request: PullRequest,
}

/// What tells this trigger of a commit's scan from another (see [`TriggerKey`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Key {
    /// A change of the pull request: its `updated_at`, or the delivery id when it has none.
    Change(String),
    /// A Re-run button: the signed payload's own identity (the check run's id; the check
    /// suite's id and update time), so a replay under a fresh delivery id names the same scan.
    Rerun(String),
    /// A comment command: the comment id.
    Comment(i64),
    /// A merge queue commit.
    MergeQueue,
}

impl Key {
    /// The naming key.
    pub fn as_trigger(&self) -> TriggerKey<'_> {
        match self {
            Key::Change(at) => TriggerKey::Change(at),
            Key::Rerun(delivery) => TriggerKey::Rerun(delivery),
            Key::Comment(id) => TriggerKey::Comment(*id),
            Key::MergeQueue => TriggerKey::MergeQueue,
        }
    }
}

/// A `/gatehouse` command.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Command {
    /// `/gatehouse rescan [scanner]`.
    Rescan(Option<String>),
    /// `/gatehouse ok-to-scan <sha>`.
    OkToScan(String),
}

/// Which commit a re-run is for, and what is known of its original scan.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rerun {
    /// Base repository.
    pub repository: Repository,
    /// App installation.
    pub installation_id: i64,
    /// The commit.
    pub head_sha: String,
    /// Pull request number, when the payload or external id has it.
    pub number: Option<i64>,
    /// The ScanRequest the check run belonged to, when it is ours.
    pub original: Option<ExternalId>,
    /// The one scanner to re-run (`check_run`), or all (`check_suite`).
    pub scanner: Option<String>,
    /// What names the re-run's scan.
    pub key: Key,
}

/// A `/gatehouse` command and where it was made.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CommentCommand {
    /// Base repository.
    pub repository: Repository,
    /// App installation.
    pub installation_id: i64,
    /// Pull request number.
    pub number: i64,
    /// The command.
    pub command: Command,
    /// Who commented.
    pub commenter: String,
    /// The comment's id.
    pub comment_id: i64,
}

/// What a delivery asks for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Intent {
    /// Scan this commit. `action` is the pull_request action (`None` for merge groups).
    Scan {
        /// What to scan.
        facts: ScanFacts,
        /// The pull_request action, checked against the policy's `actions`.
        action: Option<String>,
        /// What names this trigger's scan.
        key: Key,
    },
    /// The pull request was closed: stop its unfinished scans, admit no later-created ones.
    Close {
        /// Base repository.
        repository: Repository,
        /// Pull request number.
        number: i64,
        /// The pull request's `updated_at` in the event (GitHub's form), when present.
        updated_at: Option<String>,
    },
    /// Re-run the scan of a commit (Re-run buttons).
    Rerun(Rerun),
    /// A `/gatehouse` command in a pull request comment.
    Command(CommentCommand),
    /// Nothing to do, and why (a fixed metric label).
    Ignore(&'static str),
}

/// A payload that is not what GitHub sends for its event.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("malformed {event} payload: {reason}")]
pub struct PlanError {
    /// The event.
    pub event: String,
    /// What is wrong.
    pub reason: String,
}

fn parse<T: DeserializeOwned>(event: &str, body: &[u8]) -> Result<T, PlanError> {
    serde_json::from_slice(body).map_err(|e| PlanError {
        event: event.to_owned(),
        reason: e.to_string(),
    })
}

/// The trigger recorded in ScanRequests created for this delivery.
pub fn trigger(event: &str, delivery_id: &str, common: &Common) -> Trigger {
    Trigger {
        event: event.to_owned(),
        action: common.action.clone(),
        delivery_id: delivery_id.to_owned(),
        sender: common
            .sender
            .as_ref()
            .map(|s| s.login.clone())
            .unwrap_or_default(),
    }
}

/// Decides what a delivery asks for.
pub fn plan(event: &str, delivery_id: &str, body: &[u8]) -> Result<(Common, Intent), PlanError> {
    let common: Common = parse(event, body)?;
    if common.sender.as_ref().and_then(|s| s.kind.as_deref()) == Some("Bot")
        && event == "issue_comment"
    {
        return Ok((common, Intent::Ignore("bot_comment")));
    }
    let (Some(installation), Some(repository)) = (&common.installation, &common.repository) else {
        return Ok((common, Intent::Ignore("no_installation")));
    };
    let installation_id = installation.id;
    let repo = Repository {
        owner: repository.owner_login(),
        name: repository.name.clone(),
        id: repository.id,
    };
    let action = common.action.clone().unwrap_or_default();
    let intent = match (event, action.as_str()) {
        ("pull_request", "closed") => {
            let payload: PullRequestEvent = parse(event, body)?;
            Intent::Close {
                repository: repo,
                number: payload.pull_request.number,
                updated_at: github_time(payload.pull_request.updated_at.as_deref()),
            }
        }
        ("pull_request", "opened" | "synchronize" | "reopened" | "ready_for_review" | "edited") => {
            let payload: PullRequestEvent = parse(event, body)?;
            if action == "edited"
                && payload
                    .changes
                    .as_ref()
                    .and_then(|c| c.base.as_ref())
                    .is_none()
            {
                Intent::Ignore("edited_without_base_change")
            } else {
                let facts = scan_facts(repo, installation_id, &payload.pull_request);
                let key = Key::Change(
                    facts
                        .pull_request
                        .updated_at
                        .clone()
                        .unwrap_or_else(|| delivery_id.to_owned()),
                );
                Intent::Scan {
                    facts,
                    action: Some(action.clone()),
                    key,
                }
            }
        }
        ("check_run", "rerequested") => check_run(
            repo,
            installation_id,
            parse::<CheckRunEvent>(event, body)?,
            delivery_id,
        ),
        ("check_suite", "rerequested") => {
            let payload: CheckSuiteEvent = parse(event, body)?;
            let suite = payload.check_suite;
            let key = match (suite.id, suite.updated_at.as_deref()) {
                (id, Some(at)) if id > 0 => Key::Rerun(format!("suite:{id}:{at}")),
                _ => Key::Rerun(format!("delivery:{delivery_id}")),
            };
            Intent::Rerun(Rerun {
                repository: repo,
                installation_id,
                head_sha: suite.head_sha.to_ascii_lowercase(),
                number: suite.pull_requests.first().map(|p| p.number),
                original: None,
                scanner: None,
                key,
            })
        }
        ("issue_comment", "created") => comment(
            repo,
            installation_id,
            parse::<IssueCommentEvent>(event, body)?,
        ),
        ("merge_group", "checks_requested") => {
            let payload: MergeGroupEvent = parse(event, body)?;
            merge_group(repo, installation_id, &payload, &common)?
        }
        _ => Intent::Ignore("action_not_handled"),
    };
    Ok((common, intent))
}

fn check_run(
    repository: Repository,
    installation_id: i64,
    payload: CheckRunEvent,
    delivery_id: &str,
) -> Intent {
    let run = payload.check_run;
    let original = run.external_id.as_deref().and_then(ExternalId::parse);
    let number = run
        .pull_requests
        .first()
        .map(|p| p.number)
        .or(original.as_ref().map(|o| o.pull_request));
    let scanner = original
        .as_ref()
        .map(|o| o.scanner.clone())
        .or_else(|| run.name.strip_prefix("gatehouse/").map(str::to_owned));
    if scanner.is_none() {
        return Intent::Ignore("not_our_check_run");
    }
    Intent::Rerun(Rerun {
        repository,
        installation_id,
        head_sha: run.head_sha.to_ascii_lowercase(),
        number,
        original,
        scanner,
        key: Key::Rerun(if run.id > 0 {
            format!("run:{}", run.id)
        } else {
            format!("delivery:{delivery_id}")
        }),
    })
}

fn comment(repository: Repository, installation_id: i64, payload: IssueCommentEvent) -> Intent {
    if payload.issue.pull_request.is_none() {
        return Intent::Ignore("comment_not_on_pull_request");
    }
    let Some(command) = parse_command(payload.comment.body.as_deref().unwrap_or("")) else {
        return Intent::Ignore("no_command");
    };
    Intent::Command(CommentCommand {
        repository,
        installation_id,
        number: payload.issue.number,
        command,
        commenter: payload.comment.user.map(|u| u.login).unwrap_or_default(),
        comment_id: payload.comment.id,
    })
}

/// A commit SHA as the API stores it (lowercase), or `None` when it is not a full SHA: an odd
/// value in a payload must not make the ScanRequest invalid.
fn full_sha(sha: &str) -> Option<String> {
    let sha = sha.to_ascii_lowercase();
    gatehouse_crds::lifecycle::is_full_sha(&sha).then_some(sha)
}

/// Facts of a pull request, from a webhook payload or the REST API (the same shape).
pub fn scan_facts(
    repository: Repository,
    installation_id: i64,
    pr: &PayloadPullRequest,
) -> ScanFacts {
    ScanFacts {
        repository,
        installation_id,
        pull_request: PullRequest {
            number: pr.number,
            head_sha: pr.head.sha.to_ascii_lowercase(),
            head_ref: pr.head.ref_.clone(),
            base_ref: pr.base.ref_.clone(),
            base_sha: full_sha(&pr.base.sha),
            fork: pr.is_fork(),
            draft: pr.draft,
            author: pr
                .user
                .as_ref()
                .map(|u| u.login.clone())
                .unwrap_or_default(),
            author_association: pr
                .author_association
                .clone()
                .unwrap_or_else(|| "NONE".to_owned()),
            updated_at: github_time(pr.updated_at.as_deref()),
        },
    }
}

/// A time GitHub wrote, kept only in GitHub's own form (the only one that orders by text).
pub fn github_time(text: Option<&str>) -> Option<String> {
    text.filter(|t| is_github_time(t)).map(str::to_owned)
}

fn merge_group(
    repository: Repository,
    installation_id: i64,
    payload: &MergeGroupEvent,
    common: &Common,
) -> Result<Intent, PlanError> {
    let group = &payload.merge_group;
    let head_ref = group
        .head_ref
        .strip_prefix("refs/heads/")
        .unwrap_or(&group.head_ref);
    let base_ref = group
        .base_ref
        .strip_prefix("refs/heads/")
        .unwrap_or(&group.base_ref);
    // gh-readonly-queue/<base>/pr-<number>-<sha>: the number of the last pull request queued.
    let number = head_ref
        .rsplit('/')
        .next()
        .and_then(|last| last.strip_prefix("pr-"))
        .and_then(|rest| rest.split('-').next())
        .and_then(|n| n.parse::<i64>().ok())
        .ok_or_else(|| PlanError {
            event: "merge_group".into(),
            reason: format!("no pull request number in head_ref {:?}", group.head_ref),
        })?;
    let sender = common
        .sender
        .as_ref()
        .map(|s| s.login.clone())
        .unwrap_or_default();
    Ok(Intent::Scan {
        facts: ScanFacts {
            repository,
            installation_id,
            pull_request: PullRequest {
                number,
                head_sha: group.head_sha.to_ascii_lowercase(),
                head_ref: head_ref.to_owned(),
                base_ref: base_ref.to_owned(),
                base_sha: group.base_sha.as_deref().and_then(full_sha),
                // Merge group commits live in the base repository.
                fork: false,
                draft: false,
                author: sender,
                author_association: "NONE".to_owned(),
                updated_at: None,
            },
        },
        action: None,
        key: Key::MergeQueue,
    })
}

/// The first `/gatehouse` command in a comment, if any.
pub fn parse_command(body: &str) -> Option<Command> {
    body.lines().find_map(|line| {
        let mut words = line.split_whitespace();
        if words.next()? != "/gatehouse" {
            return None;
        }
        match words.next()? {
            "rescan" => Some(Command::Rescan(words.next().map(str::to_owned))),
            "ok-to-scan" => {
                let sha = words.next()?.to_ascii_lowercase();
                (sha.len() >= 7 && sha.len() <= 64 && sha.bytes().all(|b| b.is_ascii_hexdigit()))
                    .then_some(Command::OkToScan(sha))
            }
            _ => None,
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture(name: &str) -> Vec<u8> {
        std::fs::read(format!(
            "{}/../tests/fixtures/github/{name}",
            env!("CARGO_MANIFEST_DIR")
        ))
        .unwrap()
    }

    #[test]
    fn pull_request_opened_becomes_a_scan_of_its_head() {
        let (_, intent) = plan(
            "pull_request",
            "d-test",
            &fixture("pull_request.opened.octokit.json"),
        )
        .unwrap();
        let Intent::Scan { facts, action, key } = intent else {
            panic!("{intent:?}")
        };
        assert_eq!(action.as_deref(), Some("opened"));
        assert_eq!(key, Key::Change("2019-05-15T15:20:33Z".into()));
        assert_eq!(
            facts.pull_request.updated_at.as_deref(),
            Some("2019-05-15T15:20:33Z")
        );
        assert_eq!(facts.repository.full_name(), "Codertocat/Hello-World");
        assert_eq!(
            facts.pull_request.head_sha,
            "ec26c3e57ca3a959ca5aad62de7213c562f8c821"
        );
        assert_eq!(facts.pull_request.base_ref, "master");
        assert!(!facts.pull_request.fork);
        assert_eq!(facts.installation_id, 1);
    }

    #[test]
    fn a_deleted_or_other_head_repository_is_a_fork() {
        let mut payload: serde_json::Value =
            serde_json::from_slice(&fixture("pull_request.opened.octokit.json")).unwrap();
        payload["pull_request"]["head"]["repo"]["id"] = serde_json::json!(99);
        let (_, intent) = plan(
            "pull_request",
            "d-test",
            &serde_json::to_vec(&payload).unwrap(),
        )
        .unwrap();
        assert!(matches!(intent, Intent::Scan { ref facts, .. } if facts.pull_request.fork));
        payload["pull_request"]["head"]["repo"] = serde_json::Value::Null;
        let (_, intent) = plan(
            "pull_request",
            "d-test",
            &serde_json::to_vec(&payload).unwrap(),
        )
        .unwrap();
        assert!(matches!(intent, Intent::Scan { ref facts, .. } if facts.pull_request.fork));
    }

    #[test]
    fn closed_cancels_and_unknown_actions_are_ignored() {
        let (_, intent) = plan(
            "pull_request",
            "d-test",
            &fixture("pull_request.closed.octokit.json"),
        )
        .unwrap();
        let Intent::Close {
            repository,
            number,
            updated_at,
        } = intent
        else {
            panic!("{intent:?}")
        };
        assert_eq!((repository.id, number), (186_853_002, 2));
        assert_eq!(updated_at.as_deref(), Some("2019-05-15T15:21:18Z"));
        let (_, intent) = plan(
            "pull_request",
            "d-test",
            &fixture("pull_request.labeled.octokit.json"),
        )
        .unwrap();
        assert_eq!(intent, Intent::Ignore("action_not_handled"));
        let mut payload: serde_json::Value =
            serde_json::from_slice(&fixture("pull_request.opened.octokit.json")).unwrap();
        payload["action"] = serde_json::json!("stacked");
        let (_, intent) = plan(
            "pull_request",
            "d-test",
            &serde_json::to_vec(&payload).unwrap(),
        )
        .unwrap();
        assert_eq!(intent, Intent::Ignore("action_not_handled"));
    }

    #[test]
    fn edited_scans_only_when_the_base_changed() {
        let mut payload: serde_json::Value =
            serde_json::from_slice(&fixture("pull_request.opened.octokit.json")).unwrap();
        payload["action"] = serde_json::json!("edited");
        payload["changes"] = serde_json::json!({"title": {"from": "old"}});
        let (_, intent) = plan(
            "pull_request",
            "d-test",
            &serde_json::to_vec(&payload).unwrap(),
        )
        .unwrap();
        assert_eq!(intent, Intent::Ignore("edited_without_base_change"));
        payload["changes"] = serde_json::json!({"base": {"ref": {"from": "develop"}}});
        let (_, intent) = plan(
            "pull_request",
            "d-test",
            &serde_json::to_vec(&payload).unwrap(),
        )
        .unwrap();
        assert!(matches!(intent, Intent::Scan { .. }));
    }

    #[test]
    fn check_suite_rerequest_reruns_all_scanners_of_its_commit() {
        let (_, intent) = plan(
            "check_suite",
            "d-test",
            &fixture("check_suite.rerequested.octokit.json"),
        )
        .unwrap();
        let Intent::Rerun(Rerun {
            number,
            scanner,
            head_sha,
            ..
        }) = intent
        else {
            panic!("{intent:?}")
        };
        assert_eq!((number, scanner), (Some(2), None));
        assert_eq!(head_sha, "ec26c3e57ca3a959ca5aad62de7213c562f8c821");
    }

    #[test]
    fn check_run_rerequest_of_a_fork_takes_the_number_from_the_external_id() {
        let mut payload: serde_json::Value =
            serde_json::from_slice(&fixture("check_run.rerequested.octokit.json")).unwrap();
        // Not ours (foreign name, empty external id): ignored.
        let (_, intent) = plan(
            "check_run",
            "d-test",
            &serde_json::to_vec(&payload).unwrap(),
        )
        .unwrap();
        assert_eq!(intent, Intent::Ignore("not_our_check_run"));
        payload["check_run"]["name"] = serde_json::json!("gatehouse/kics");
        payload["check_run"]["external_id"] =
            serde_json::json!("scans/hello-pr7-d6fde92-0a1b2c3d/7/kics");
        let (_, intent) = plan(
            "check_run",
            "d-test",
            &serde_json::to_vec(&payload).unwrap(),
        )
        .unwrap();
        let Intent::Rerun(Rerun {
            number,
            scanner,
            original,
            ..
        }) = intent
        else {
            panic!("{intent:?}")
        };
        assert_eq!((number, scanner.as_deref()), (Some(7), Some("kics")));
        assert_eq!(original.unwrap().scan_request, "hello-pr7-d6fde92-0a1b2c3d");
    }

    #[test]
    fn comments_carry_commands_only_on_pull_requests() {
        let (_, intent) = plan(
            "issue_comment",
            "d-test",
            &fixture("issue_comment.created.on_issue.octokit.json"),
        )
        .unwrap();
        assert!(matches!(intent, Intent::Ignore(_)), "{intent:?}");
        let mut payload: serde_json::Value =
            serde_json::from_slice(&fixture("issue_comment.created.on_pull_request.zulip.json"))
                .unwrap();
        payload["installation"] = serde_json::json!({"id": 5});
        payload["comment"]["body"] = serde_json::json!("looks good\n/gatehouse rescan kics\n");
        let (_, intent) = plan(
            "issue_comment",
            "d-test",
            &serde_json::to_vec(&payload).unwrap(),
        )
        .unwrap();
        let Intent::Command(CommentCommand {
            command,
            number,
            comment_id,
            ..
        }) = intent
        else {
            panic!("{intent:?}")
        };
        assert_eq!(command, Command::Rescan(Some("kics".into())));
        assert_eq!((number, comment_id), (1, 1_631_445_420));
    }

    #[test]
    fn commands_are_parsed_strictly() {
        assert_eq!(
            parse_command("/gatehouse rescan"),
            Some(Command::Rescan(None))
        );
        assert_eq!(
            parse_command("/gatehouse ok-to-scan EC26C3E"),
            Some(Command::OkToScan("ec26c3e".into()))
        );
        for text in [
            "/gatehouse ok-to-scan",
            "/gatehouse ok-to-scan xyz1234",
            "/gatehouse",
            "please /gatehouse rescan",
            "/gatehouse deploy",
        ] {
            assert_eq!(parse_command(text), None, "{text}");
        }
    }

    #[test]
    fn merge_groups_scan_the_queue_commit_for_the_last_pull_request() {
        let payload = serde_json::json!({
            "action": "checks_requested",
            "installation": {"id": 9},
            "repository": {"id": 5, "name": "widgets", "full_name": "acme/widgets", "owner": {"login": "acme"}},
            "sender": {"login": "octocat"},
            "merge_group": {
                "head_sha": "ABCDEF0123456789abcdef0123456789abcdef01",
                "head_ref": "refs/heads/gh-readonly-queue/main/pr-42-9f1c2ab3d4e5f60718293a4b5c6d7e8f90a1b2c3",
                "base_ref": "refs/heads/main",
            },
        });
        let (_, intent) = plan(
            "merge_group",
            "d-test",
            &serde_json::to_vec(&payload).unwrap(),
        )
        .unwrap();
        let Intent::Scan { facts, action, key } = intent else {
            panic!("{intent:?}")
        };
        assert_eq!((action, key), (None, Key::MergeQueue));
        assert_eq!(facts.pull_request.number, 42);
        assert_eq!(facts.pull_request.base_ref, "main");
        assert_eq!(
            facts.pull_request.head_sha,
            "abcdef0123456789abcdef0123456789abcdef01"
        );
    }

    #[test]
    fn payloads_without_an_installation_are_ignored_and_broken_ones_are_errors() {
        let (_, intent) = plan(
            "check_run",
            "d-test",
            &fixture("check_run.created.octokit.json"),
        )
        .unwrap();
        assert!(matches!(intent, Intent::Ignore(_)));
        let err = plan("pull_request", "d-test", br#"{"action":"opened","installation":{"id":1},"repository":{"id":1},"pull_request":{}}"#).unwrap_err();
        assert!(
            err.to_string()
                .starts_with("malformed pull_request payload"),
            "{err}"
        );
    }
}
