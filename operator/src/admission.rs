//! Which queued ScanRequests start now, under the global `--max-running`, each policy's
//! `maxRunning` and `maxRunningPerRepository`. A pure function of what waits and what runs.
//!
//! Only ScanRequests with a Job that is actually active count as running (an anchor operator
//! that counted finished and stuck Jobs deadlocked its queue); the caller derives `running` from
//! Job status. Order: rounds across repositories, one admission per repository per round, the
//! repository whose oldest waiting scan is oldest first; within a repository, oldest first. One
//! busy repository cannot starve the others.

use std::collections::{BTreeMap, HashMap};

/// A ScanRequest in phase Queued.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Waiting {
    /// Namespace (also the policy's).
    pub namespace: String,
    /// ScanRequest name.
    pub name: String,
    /// The governing ScanPolicy's name.
    pub policy: String,
    /// Repository id.
    pub repository: i64,
    /// When it was created (any monotonic, sortable value: Unix seconds).
    pub created: i64,
}

/// A ScanRequest with at least one active Job.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Running {
    /// Namespace.
    pub namespace: String,
    /// The governing ScanPolicy's name.
    pub policy: String,
    /// Repository id.
    pub repository: i64,
}

/// A policy's concurrency limits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PolicyLimits {
    /// Most ScanRequests of the policy running at once.
    pub max_running: usize,
    /// Most ScanRequests of one repository under the policy running at once.
    pub max_running_per_repository: usize,
}

type PolicyKey<'a> = (&'a str, &'a str);

/// The ScanRequests to start now, in the order to start them. `limits` gives each policy's
/// limits by (namespace, policy name); `max_running` is the operator-wide cap.
pub fn admit<'w>(
    waiting: &'w [Waiting],
    running: &[Running],
    max_running: usize,
    limits: impl Fn(&str, &str) -> PolicyLimits,
) -> Vec<&'w Waiting> {
    let mut total = running.len();
    let mut per_policy: HashMap<PolicyKey<'_>, usize> = HashMap::new();
    let mut per_repository: HashMap<(PolicyKey<'_>, i64), usize> = HashMap::new();
    for r in running {
        let key = (r.namespace.as_str(), r.policy.as_str());
        *per_policy.entry(key).or_default() += 1;
        *per_repository.entry((key, r.repository)).or_default() += 1;
    }
    // Each repository's queue (per policy), oldest first; ties by name for a stable order.
    let mut queues: BTreeMap<(PolicyKey<'_>, i64), Vec<&Waiting>> = BTreeMap::new();
    for w in waiting {
        queues
            .entry(((w.namespace.as_str(), w.policy.as_str()), w.repository))
            .or_default()
            .push(w);
    }
    for queue in queues.values_mut() {
        queue.sort_by(|a, b| (a.created, &a.name).cmp(&(b.created, &b.name)));
        // Popped from the back: oldest last.
        queue.reverse();
    }
    let mut admitted = Vec::new();
    loop {
        // One round: every repository with work may start one, oldest head first.
        let mut heads: Vec<((PolicyKey<'_>, i64), &Waiting)> = queues
            .iter()
            .filter_map(|(key, queue)| queue.last().map(|w| (*key, *w)))
            .collect();
        heads.sort_by(|a, b| (a.1.created, &a.1.name).cmp(&(b.1.created, &b.1.name)));
        let mut progressed = false;
        for (key, head) in heads {
            if total >= max_running {
                return admitted;
            }
            let (policy, _) = key;
            let limit = limits(policy.0, policy.1);
            let in_policy = per_policy.get(&policy).copied().unwrap_or(0);
            let in_repository = per_repository.get(&key).copied().unwrap_or(0);
            if in_policy >= limit.max_running || in_repository >= limit.max_running_per_repository {
                // This repository (or its whole policy) is full: it waits, others go on.
                queues.remove(&key);
                continue;
            }
            admitted.push(head);
            total += 1;
            *per_policy.entry(policy).or_default() += 1;
            *per_repository.entry(key).or_default() += 1;
            if let Some(queue) = queues.get_mut(&key) {
                queue.pop();
            }
            progressed = true;
        }
        if !progressed {
            return admitted;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn waiting(name: &str, policy: &str, repository: i64, created: i64) -> Waiting {
        Waiting {
            namespace: "team-a".to_owned(),
            name: name.to_owned(),
            policy: policy.to_owned(),
            repository,
            created,
        }
    }

    fn running(policy: &str, repository: i64) -> Running {
        Running {
            namespace: "team-a".to_owned(),
            policy: policy.to_owned(),
            repository,
        }
    }

    fn names(admitted: &[&Waiting]) -> Vec<String> {
        admitted.iter().map(|w| w.name.clone()).collect()
    }

    const ROOMY: PolicyLimits = PolicyLimits {
        max_running: 100,
        max_running_per_repository: 100,
    };

    #[test]
    fn one_busy_repository_does_not_starve_the_others() {
        // Repository 1 queued five scans before repository 2 and 3 queued one each.
        let mut queue: Vec<Waiting> = (0..5)
            .map(|i| waiting(&format!("busy-{i}"), "p", 1, i))
            .collect();
        queue.push(waiting("quiet-2", "p", 2, 10));
        queue.push(waiting("quiet-3", "p", 3, 11));
        let admitted = admit(&queue, &[], 4, |_, _| ROOMY);
        assert_eq!(names(&admitted), ["busy-0", "quiet-2", "quiet-3", "busy-1"]);
    }

    #[test]
    fn the_oldest_start_first_within_a_repository() {
        let queue = vec![
            waiting("c", "p", 1, 30),
            waiting("a", "p", 1, 10),
            waiting("b", "p", 1, 20),
        ];
        assert_eq!(
            names(&admit(&queue, &[], 10, |_, _| ROOMY)),
            ["a", "b", "c"]
        );
    }

    #[test]
    fn every_limit_holds_counting_what_already_runs() {
        let queue = vec![
            waiting("p1-r1-a", "p1", 1, 1),
            waiting("p1-r1-b", "p1", 1, 2),
            waiting("p1-r2-a", "p1", 2, 3),
            waiting("p2-r1-a", "p2", 1, 4),
            waiting("p2-r3-a", "p2", 3, 5),
        ];
        let limits = |_: &str, policy: &str| match policy {
            // p1: two at once, one per repository; one of repository 1 already runs.
            "p1" => PolicyLimits {
                max_running: 2,
                max_running_per_repository: 1,
            },
            _ => ROOMY,
        };
        let admitted = admit(&queue, &[running("p1", 1)], 10, limits);
        assert_eq!(names(&admitted), ["p1-r2-a", "p2-r1-a", "p2-r3-a"]);
        // The operator-wide cap, with two already running anywhere.
        let admitted = admit(&queue, &[running("p1", 1), running("p2", 9)], 3, limits);
        assert_eq!(names(&admitted), ["p1-r2-a"]);
        // Nothing at all when the cap is reached.
        assert!(admit(&queue, &[running("p2", 9)], 1, limits).is_empty());
    }

    #[test]
    fn the_same_policy_name_in_two_namespaces_is_two_policies() {
        let mut other = waiting("other-ns", "p", 1, 2);
        other.namespace = "team-b".to_owned();
        let queue = vec![waiting("mine", "p", 1, 1), other];
        let one_each = |_: &str, _: &str| PolicyLimits {
            max_running: 1,
            max_running_per_repository: 1,
        };
        assert_eq!(
            names(&admit(&queue, &[], 10, one_each)),
            ["mine", "other-ns"]
        );
    }
}
