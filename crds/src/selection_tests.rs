use std::sync::Arc;

use super::*;
use crate::scanpolicy::{
    AuthorAssociation, PullRequestAction, ScanPolicy, ScanPolicySpec, ScannerKind, ScannerSpec,
    Trust,
};

fn kics() -> ScannerSpec {
    ScannerSpec {
        name: "kics".into(),
        kind: ScannerKind::Kics,
        image: format!("checkmarx/kics:v2.1.19@sha256:{}", "a".repeat(64)),
        fail_on: crate::FailOn::High,
        paths: vec![],
        timeout_seconds: 900,
        resources: None,
        kics: None,
        blackduck: None,
    }
}

fn spec(priority: i32, repositories: &[&str]) -> ScanPolicySpec {
    // Start from the defaults an apiserver would fill in.
    let mut spec: ScanPolicySpec = serde_json::from_value(serde_json::json!({
        "repositories": repositories,
        "scanners": [serde_json::to_value(kics()).unwrap()],
    }))
    .unwrap();
    spec.priority = priority;
    spec
}

fn policy(name: &str, spec: ScanPolicySpec) -> Arc<ScanPolicy> {
    let mut p = ScanPolicy::new(name, spec);
    p.metadata.namespace = Some("security".into());
    Arc::new(p)
}

fn pr(repository: &str) -> PullRequestFacts<'_> {
    PullRequestFacts {
        repository,
        base_ref: "main",
        action: Some("opened"),
        draft: false,
        fork: false,
        author: "octocat",
        author_association: "MEMBER",
    }
}

fn governing(index: &PolicyIndex, facts: &PullRequestFacts<'_>) -> Option<String> {
    index
        .select(facts)
        .and_then(|s| s.policy.metadata.name.clone())
}

#[test]
fn repository_globs_match_owner_and_name_case_insensitively() {
    let index = PolicyIndex::build([policy("acme", spec(0, &["acme/*"]))]);
    assert_eq!(
        governing(&index, &pr("acme/widgets")).as_deref(),
        Some("acme")
    );
    assert_eq!(
        governing(&index, &pr("ACME/Widgets")).as_deref(),
        Some("acme")
    );
    assert_eq!(governing(&index, &pr("other/widgets")), None);
    // `*` stays inside one segment.
    assert_eq!(governing(&index, &pr("acme/widgets/extra")), None);
}

#[test]
fn negated_repository_is_excluded_even_when_a_wider_glob_includes_it() {
    let index = PolicyIndex::build([policy(
        "acme-but-sandbox",
        spec(0, &["acme/*", "!acme/sandbox-*"]),
    )]);
    assert!(governing(&index, &pr("acme/widgets")).is_some());
    assert_eq!(governing(&index, &pr("acme/sandbox-1")), None);
    // Order does not matter: the exclusion wins wherever it is written.
    let index = PolicyIndex::build([policy("x", spec(0, &["!acme/sandbox-*", "acme/*"]))]);
    assert_eq!(governing(&index, &pr("acme/sandbox-1")), None);
}

#[test]
fn excluded_repository_falls_through_to_a_lower_priority_policy() {
    let index = PolicyIndex::build([
        policy("strict", spec(10, &["acme/*", "!acme/legacy"])),
        policy("catch-all", spec(0, &["*/*"])),
    ]);
    assert_eq!(
        governing(&index, &pr("acme/legacy")).as_deref(),
        Some("catch-all")
    );
    assert_eq!(
        governing(&index, &pr("acme/api")).as_deref(),
        Some("strict")
    );
}

#[test]
fn highest_priority_wins() {
    let index = PolicyIndex::build([
        policy("low", spec(1, &["acme/*"])),
        policy("high", spec(5, &["acme/*"])),
        policy("negative", spec(-3, &["acme/*"])),
    ]);
    assert_eq!(
        governing(&index, &pr("acme/widgets")).as_deref(),
        Some("high")
    );
}

#[test]
fn priority_ties_go_to_the_alphabetically_first_name_whatever_the_input_order() {
    for order in [
        ["zeta", "alpha", "mid"],
        ["mid", "zeta", "alpha"],
        ["alpha", "mid", "zeta"],
    ] {
        let index = PolicyIndex::build(
            order
                .iter()
                .map(|name| policy(name, spec(7, &["acme/widgets"]))),
        );
        assert_eq!(
            governing(&index, &pr("acme/widgets")).as_deref(),
            Some("alpha"),
            "input order {order:?}"
        );
    }
}

#[test]
fn base_branch_globs_select_release_branches_and_exclude_with_negation() {
    let mut release = spec(5, &["acme/*"]);
    release.base_branches = vec!["release/*".into(), "!release/old-*".into()];
    let index = PolicyIndex::build([
        policy("release", release),
        policy("default", spec(0, &["acme/*"])),
    ]);
    let on = |base| {
        let mut facts = pr("acme/widgets");
        facts.base_ref = base;
        governing(&index, &facts)
    };
    assert_eq!(on("release/1.2").as_deref(), Some("release"));
    assert_eq!(on("release/old-1").as_deref(), Some("default"));
    assert_eq!(on("main").as_deref(), Some("default"));
    // `*` does not cross `/`; branch names are case-sensitive.
    assert_eq!(on("release/1.2/hotfix").as_deref(), Some("default"));
    assert_eq!(on("Release/1.2").as_deref(), Some("default"));
}

#[test]
fn double_star_crosses_path_segments() {
    let mut s = spec(0, &["acme/*"]);
    s.base_branches = vec!["feature/**".into()];
    let index = PolicyIndex::build([policy("p", s)]);
    let mut facts = pr("acme/widgets");
    facts.base_ref = "feature/team/x";
    assert!(governing(&index, &facts).is_some());
}

#[test]
fn actions_not_selected_are_skipped_by_the_governing_policy() {
    let mut only_opened = spec(5, &["acme/*"]);
    only_opened.actions = vec![PullRequestAction::Opened];
    let index = PolicyIndex::build([
        policy("only-opened", only_opened),
        policy("fallback", spec(0, &["acme/*"])),
    ]);
    let mut facts = pr("acme/widgets");
    facts.action = Some("synchronize");
    let selection = index.select(&facts).unwrap();
    // The governing policy does not change with the action: it decides to skip.
    assert_eq!(
        selection.policy.metadata.name.as_deref(),
        Some("only-opened")
    );
    assert_eq!(
        selection.verdict,
        Verdict::Skip(SkipReason::ActionNotSelected)
    );
    facts.action = Some("opened");
    assert_eq!(index.select(&facts).unwrap().verdict, Verdict::Scan);
    // Explicit requests (re-runs, comments) carry no action and are always accepted.
    facts.action = None;
    assert_eq!(index.select(&facts).unwrap().verdict, Verdict::Scan);
}

#[test]
fn unknown_actions_are_skipped_not_errors() {
    let index = PolicyIndex::build([policy("p", spec(0, &["acme/*"]))]);
    let mut facts = pr("acme/widgets");
    facts.action = Some("stacked");
    assert_eq!(
        index.select(&facts).unwrap().verdict,
        Verdict::Skip(SkipReason::ActionNotSelected)
    );
}

#[test]
fn drafts_are_skipped_by_default_and_scanned_when_the_policy_says_so() {
    let mut facts = pr("acme/widgets");
    facts.draft = true;
    let index = PolicyIndex::build([policy("p", spec(0, &["acme/*"]))]);
    assert_eq!(
        index.select(&facts).unwrap().verdict,
        Verdict::Skip(SkipReason::Draft)
    );

    let mut scan_drafts = spec(0, &["acme/*"]);
    scan_drafts.drafts = DraftMode::Scan;
    let index = PolicyIndex::build([policy("p", scan_drafts)]);
    assert_eq!(index.select(&facts).unwrap().verdict, Verdict::Scan);
}

#[test]
fn untrusted_fork_waits_for_approval_by_default() {
    let index = PolicyIndex::build([policy("p", spec(0, &["acme/*"]))]);
    let mut facts = pr("acme/widgets");
    facts.fork = true;
    facts.author = "stranger";
    facts.author_association = "FIRST_TIME_CONTRIBUTOR";
    assert_eq!(
        index.select(&facts).unwrap().verdict,
        Verdict::AwaitApproval
    );
}

#[test]
fn trusted_fork_authors_are_scanned_without_approval() {
    let index = PolicyIndex::build([policy("p", spec(0, &["acme/*"]))]);
    let mut facts = pr("acme/widgets");
    facts.fork = true;
    facts.author_association = "member"; // compared case-insensitively
    assert_eq!(index.select(&facts).unwrap().verdict, Verdict::Scan);

    let mut by_login = spec(0, &["acme/*"]);
    by_login.trusted = Trust {
        authors: vec!["Alice".into()],
        associations: vec![AuthorAssociation::Owner],
        bots: vec!["renovate[bot]".into()],
    };
    let index = PolicyIndex::build([policy("p", by_login)]);
    facts.author_association = "CONTRIBUTOR";
    facts.author = "alice";
    assert_eq!(index.select(&facts).unwrap().verdict, Verdict::Scan);
    facts.author = "renovate[bot]";
    assert_eq!(index.select(&facts).unwrap().verdict, Verdict::Scan);
    facts.author = "mallory";
    assert_eq!(
        index.select(&facts).unwrap().verdict,
        Verdict::AwaitApproval
    );
    // MEMBER is no longer in this policy's trusted associations.
    facts.author_association = "MEMBER";
    assert_eq!(
        index.select(&facts).unwrap().verdict,
        Verdict::AwaitApproval
    );
}

#[test]
fn forks_are_skipped_or_scanned_as_the_policy_says() {
    let mut facts = pr("acme/widgets");
    facts.fork = true;
    facts.author_association = "NONE";
    for (mode, expected) in [
        (ForkMode::Skip, Verdict::Skip(SkipReason::Fork)),
        (ForkMode::Scan, Verdict::Scan),
        (ForkMode::RequireApproval, Verdict::AwaitApproval),
    ] {
        let mut s = spec(0, &["acme/*"]);
        s.forks = mode;
        let index = PolicyIndex::build([policy("p", s)]);
        assert_eq!(index.select(&facts).unwrap().verdict, expected, "{mode:?}");
    }
    // Skip applies even to trusted authors: the policy does not want forks at all.
    let mut s = spec(0, &["acme/*"]);
    s.forks = ForkMode::Skip;
    let index = PolicyIndex::build([policy("p", s)]);
    facts.author_association = "OWNER";
    assert_eq!(
        index.select(&facts).unwrap().verdict,
        Verdict::Skip(SkipReason::Fork)
    );
}

#[test]
fn draft_fork_is_skipped_as_a_draft_before_asking_for_approval() {
    let index = PolicyIndex::build([policy("p", spec(0, &["acme/*"]))]);
    let mut facts = pr("acme/widgets");
    facts.fork = true;
    facts.draft = true;
    facts.author_association = "NONE";
    assert_eq!(
        index.select(&facts).unwrap().verdict,
        Verdict::Skip(SkipReason::Draft)
    );
}

#[test]
fn policies_with_invalid_globs_are_rejected_and_never_selected() {
    let bad = spec(100, &["acme/[oops"]);
    assert_eq!(bad.problems().len(), 1);
    assert!(bad.problems()[0].to_string().contains("acme/[oops"));
    let index = PolicyIndex::build([policy("bad", bad), policy("good", spec(0, &["acme/*"]))]);
    assert_eq!(index.len(), 1);
    assert_eq!(index.rejected().len(), 1);
    assert_eq!(
        governing(&index, &pr("acme/widgets")).as_deref(),
        Some("good")
    );
}

#[test]
fn a_list_of_only_exclusions_is_a_problem() {
    let problems = spec(0, &["!acme/secret"]).problems();
    assert_eq!(
        problems,
        vec![PolicyProblem::OnlyExclusions {
            field: "spec.repositories"
        }]
    );
    let mut empty_branch = spec(0, &["acme/*"]);
    empty_branch.base_branches = vec![String::new()];
    assert!(matches!(
        empty_branch.problems().as_slice(),
        [PolicyProblem::InvalidGlob {
            field: "spec.baseBranches",
            ..
        }]
    ));
    let mut bad_paths = spec(0, &["acme/*"]);
    bad_paths.scanners[0].paths = vec!["{unclosed".into()];
    assert_eq!(bad_paths.problems().len(), 1);
}

#[test]
fn policies_being_deleted_are_not_selected() {
    let mut p = ScanPolicy::new("going", spec(100, &["acme/*"]));
    p.metadata.deletion_timestamp = Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
        k8s_openapi::jiff::Timestamp::UNIX_EPOCH,
    ));
    let index = PolicyIndex::build([Arc::new(p), policy("stays", spec(0, &["acme/*"]))]);
    assert_eq!(
        governing(&index, &pr("acme/widgets")).as_deref(),
        Some("stays")
    );
}

#[test]
fn no_policy_means_no_selection() {
    let index = PolicyIndex::build(Vec::<Arc<ScanPolicy>>::new());
    assert!(index.is_empty());
    assert!(index.select(&pr("acme/widgets")).is_none());
}
