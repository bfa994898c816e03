//! Which ScanPolicy governs a pull request, and what it decides for it.
//!
//! Exactly one policy governs a pull request: among the policies whose `repositories` and
//! `baseBranches` match, the highest `priority` wins and ties go to the alphabetically first name
//! (then namespace). The governing policy then decides: scan, wait for approval (forks), or skip
//! (action not selected, draft, fork). A policy that skips does not hand the pull request to a
//! lower-priority policy, so what governs a pull request never depends on its action or state.
//!
//! [`PolicyIndex`] is built from a snapshot of all policies (a reflector's store) and answers
//! synchronously; it holds no client.

use std::sync::Arc;

use globset::{Glob, GlobBuilder, GlobSet, GlobSetBuilder};

use crate::scanpolicy::{DraftMode, ForkMode, ScanPolicy, ScanPolicySpec};

/// What is known of a pull request when a policy is chosen for it.
#[derive(Clone, Copy, Debug)]
pub struct PullRequestFacts<'a> {
    /// `owner/name` of the base repository.
    pub repository: &'a str,
    /// Branch the pull request merges into (without `refs/heads/`).
    pub base_ref: &'a str,
    /// The `pull_request` action, or `None` for explicit requests (re-runs, rescan comments,
    /// merge groups), which every policy accepts.
    pub action: Option<&'a str>,
    /// Whether the pull request is a draft.
    pub draft: bool,
    /// Whether the head is in a fork.
    pub fork: bool,
    /// Login of the author.
    pub author: &'a str,
    /// The author's `author_association`.
    pub author_association: &'a str,
}

/// What the governing policy decides for a pull request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Scan it now.
    Scan,
    /// A fork from an untrusted author: create the ScanRequest, but wait for approval.
    AwaitApproval,
    /// Do not scan.
    Skip(SkipReason),
}

/// Why a governing policy does not scan a pull request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SkipReason {
    /// The policy's `actions` do not include this action.
    ActionNotSelected,
    /// A draft, and the policy skips drafts.
    Draft,
    /// From a fork, and the policy skips forks.
    Fork,
}

impl SkipReason {
    /// Fixed label for metrics and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            SkipReason::ActionNotSelected => "action_not_selected",
            SkipReason::Draft => "draft",
            SkipReason::Fork => "fork",
        }
    }
}

/// The governing policy and its verdict.
#[derive(Clone, Debug)]
pub struct Selection {
    /// The governing policy.
    pub policy: Arc<ScanPolicy>,
    /// What it decides.
    pub verdict: Verdict,
}

/// A problem that makes a policy unusable; reported in its `Ready` condition.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum PolicyProblem {
    /// A glob does not compile.
    #[error("{field}: invalid glob {pattern:?}: {reason}")]
    InvalidGlob {
        /// Field holding the glob.
        field: &'static str,
        /// The glob as written.
        pattern: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A list holds only exclusions: whether that means "everything but" or "nothing" is a guess.
    #[error("{field}: has only `!` exclusions; add at least one pattern to include")]
    OnlyExclusions {
        /// Field holding the list.
        field: &'static str,
    },
}

/// A list of globs where `!`-prefixed entries exclude. Matches when some inclusion matches and
/// no exclusion does. An empty list matches everything.
#[derive(Clone, Debug)]
pub struct PatternList {
    include: GlobSet,
    exclude: GlobSet,
    empty: bool,
}

impl PatternList {
    /// Compiles `patterns`. `*` and `?` stay within one `/`-separated segment, `**` crosses them.
    pub fn compile(
        field: &'static str,
        patterns: &[String],
        case_insensitive: bool,
    ) -> Result<PatternList, PolicyProblem> {
        let mut include = GlobSetBuilder::new();
        let mut exclude = GlobSetBuilder::new();
        let mut includes = 0_usize;
        for pattern in patterns {
            let (negated, body) = match pattern.strip_prefix('!') {
                Some(rest) => (true, rest),
                None => (false, pattern.as_str()),
            };
            let glob = build_glob(body, case_insensitive).map_err(|reason| {
                PolicyProblem::InvalidGlob {
                    field,
                    pattern: pattern.clone(),
                    reason,
                }
            })?;
            if negated {
                exclude.add(glob);
            } else {
                includes += 1;
                include.add(glob);
            }
        }
        if includes == 0 && !patterns.is_empty() {
            return Err(PolicyProblem::OnlyExclusions { field });
        }
        let build = |b: GlobSetBuilder| {
            b.build().map_err(|e| PolicyProblem::InvalidGlob {
                field,
                pattern: patterns.join(","),
                reason: e.kind().to_string(),
            })
        };
        Ok(PatternList {
            include: build(include)?,
            exclude: build(exclude)?,
            empty: patterns.is_empty(),
        })
    }

    /// Whether `candidate` is included and not excluded.
    pub fn matches(&self, candidate: &str) -> bool {
        (self.empty || self.include.is_match(candidate)) && !self.exclude.is_match(candidate)
    }
}

fn build_glob(pattern: &str, case_insensitive: bool) -> Result<Glob, String> {
    if pattern.is_empty() {
        // globset accepts "" (matching only ""), which is never what a policy author meant.
        return Err("empty pattern".to_owned());
    }
    GlobBuilder::new(pattern)
        .literal_separator(true)
        .case_insensitive(case_insensitive)
        .backslash_escape(true)
        .build()
        .map_err(|e| e.kind().to_string())
}

/// A policy with its globs compiled.
#[derive(Clone, Debug)]
struct CompiledPolicy {
    policy: Arc<ScanPolicy>,
    repositories: PatternList,
    base_branches: PatternList,
}

/// Compiled repository and base-branch patterns of a policy spec, or the problems that stop it.
pub fn compile_spec(
    spec: &ScanPolicySpec,
) -> Result<(PatternList, PatternList), Vec<PolicyProblem>> {
    let repositories = PatternList::compile("spec.repositories", &spec.repositories, true);
    let base_branches = PatternList::compile("spec.baseBranches", &spec.base_branches, false);
    let mut problems = Vec::new();
    for scanner in &spec.scanners {
        if let Err(p) = PatternList::compile("spec.scanners[].paths", &scanner.paths, false) {
            problems.push(p);
        }
    }
    match (repositories, base_branches) {
        (Ok(r), Ok(b)) if problems.is_empty() => Ok((r, b)),
        (r, b) => {
            problems.splice(0..0, [r.err(), b.err()].into_iter().flatten());
            Err(problems)
        }
    }
}

impl ScanPolicySpec {
    /// Problems the schema and CEL rules cannot catch (globs that do not compile). Empty when the
    /// policy is usable.
    pub fn problems(&self) -> Vec<PolicyProblem> {
        compile_spec(self).err().unwrap_or_default()
    }
}

/// All usable policies, ordered so the first match governs.
#[derive(Clone, Debug, Default)]
pub struct PolicyIndex {
    policies: Vec<CompiledPolicy>,
    rejected: Vec<(Arc<ScanPolicy>, Vec<PolicyProblem>)>,
}

impl PolicyIndex {
    /// Builds the index from a snapshot of policies. Policies with problems are left out and
    /// listed by [`PolicyIndex::rejected`]; policies being deleted are left out.
    pub fn build(policies: impl IntoIterator<Item = Arc<ScanPolicy>>) -> PolicyIndex {
        let mut index = PolicyIndex::default();
        for policy in policies {
            if policy.metadata.deletion_timestamp.is_some() {
                continue;
            }
            match compile_spec(&policy.spec) {
                Ok((repositories, base_branches)) => index.policies.push(CompiledPolicy {
                    policy,
                    repositories,
                    base_branches,
                }),
                Err(problems) => index.rejected.push((policy, problems)),
            }
        }
        index.policies.sort_by(|a, b| {
            b.policy
                .spec
                .priority
                .cmp(&a.policy.spec.priority)
                .then_with(|| a.policy.metadata.name.cmp(&b.policy.metadata.name))
                .then_with(|| {
                    a.policy
                        .metadata
                        .namespace
                        .cmp(&b.policy.metadata.namespace)
                })
        });
        index
    }

    /// Policies left out of selection and why.
    pub fn rejected(&self) -> &[(Arc<ScanPolicy>, Vec<PolicyProblem>)] {
        &self.rejected
    }

    /// Number of usable policies.
    pub fn len(&self) -> usize {
        self.policies.len()
    }

    /// Whether no policy is usable.
    pub fn is_empty(&self) -> bool {
        self.policies.is_empty()
    }

    /// The governing policy for a pull request and its verdict; `None` when no policy covers it.
    pub fn select(&self, pr: &PullRequestFacts<'_>) -> Option<Selection> {
        let governing = self.policies.iter().find(|c| {
            c.repositories.matches(pr.repository) && c.base_branches.matches(pr.base_ref)
        })?;
        Some(Selection {
            policy: Arc::clone(&governing.policy),
            verdict: verdict(&governing.policy.spec, pr),
        })
    }
}

/// What a governing policy decides for a pull request.
pub fn verdict(spec: &ScanPolicySpec, pr: &PullRequestFacts<'_>) -> Verdict {
    if let Some(action) = pr.action
        && !spec.actions.iter().any(|a| a.as_str() == action)
    {
        return Verdict::Skip(SkipReason::ActionNotSelected);
    }
    if pr.draft && spec.drafts == DraftMode::Skip {
        return Verdict::Skip(SkipReason::Draft);
    }
    if pr.fork {
        match spec.forks {
            ForkMode::Skip => return Verdict::Skip(SkipReason::Fork),
            ForkMode::RequireApproval if !spec.trusted.trusts(pr.author, pr.author_association) => {
                return Verdict::AwaitApproval;
            }
            ForkMode::RequireApproval | ForkMode::Scan => {}
        }
    }
    Verdict::Scan
}

#[cfg(test)]
#[path = "selection_tests.rs"]
mod tests;
