//! Deterministic ScanRequest names. The same (repository, pull request, head commit, trigger)
//! always gives the same name, so a redelivered webhook (or a replayed comment) finds the
//! ScanRequest it already created (`AlreadyExists`) instead of creating a second one, while a new
//! trigger for the same commit (a force-push back to it, a reopen, a re-run) gets a new name.
//! Names are readable (`widgets-pr42-9f1c2ab-1a2b3c4d`), at most 63 characters and valid DNS-1123
//! labels, so Jobs and label values can be derived from them.

use sha2::{Digest, Sha256};

/// Longest name Kubernetes accepts for a label value and a DNS-1123 label.
pub const MAX_NAME_LEN: usize = 63;

/// Length of the hash suffix, in hex digits (32 bits).
const HASH_LEN: usize = 8;

/// What tells one trigger of a commit's scan from another.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TriggerKey<'a> {
    /// A change of the pull request (opened, synchronize, reopened, ready for review, base
    /// changed), by the pull request's `updated_at` in the event (its delivery id when absent).
    Change(&'a str),
    /// A Re-run button, by its delivery id.
    Rerun(&'a str),
    /// A `/gatehouse` comment command, by the comment's id (inside the signed payload, so a
    /// replayed comment under a fresh delivery id names the same scan).
    Comment(i64),
    /// A merge queue commit (one scan per commit).
    MergeQueue,
}

/// Name of the ScanRequest for a pull request's commit and trigger.
///
/// `repo_name` only makes the name readable; identity comes from `repo_id` (stable across renames
/// and distinct between owners), `pr`, `head_sha` and `trigger`.
pub fn scan_request_name(
    repo_name: &str,
    repo_id: i64,
    pr: i64,
    head_sha: &str,
    trigger: TriggerKey<'_>,
) -> String {
    let sha = head_sha.to_ascii_lowercase();
    let mut hasher = Sha256::new();
    hasher.update(repo_id.to_string().as_bytes());
    hasher.update([0]);
    hasher.update(pr.to_string().as_bytes());
    hasher.update([0]);
    hasher.update(sha.as_bytes());
    hasher.update([0]);
    match trigger {
        TriggerKey::Rerun(delivery) => {
            hasher.update([1]);
            hasher.update(delivery.as_bytes());
        }
        TriggerKey::Change(updated_at) => {
            hasher.update([2]);
            hasher.update(updated_at.as_bytes());
        }
        TriggerKey::Comment(id) => {
            hasher.update([3]);
            hasher.update(id.to_string().as_bytes());
        }
        TriggerKey::MergeQueue => hasher.update([4]),
    }
    let digest = hex::encode(hasher.finalize());
    let hash = &digest[..HASH_LEN];

    let short_sha: String = sha
        .chars()
        .filter(char::is_ascii_hexdigit)
        .take(7)
        .collect();
    let short_sha = if short_sha.is_empty() {
        "0".to_owned()
    } else {
        short_sha
    };
    let suffix = format!("-pr{pr}-{short_sha}-{hash}");
    let room = MAX_NAME_LEN - suffix.len();
    let slug = slug(repo_name, room);
    format!("{slug}{suffix}")
}

/// Name of the Job that runs `scanner` for the ScanRequest `scan_request`.
///
/// `<scanrequest>-<scanner>` when that is a valid label of at most 63 characters (the Job name
/// becomes the `job-name` label of its pods). Otherwise the readable part is shortened and an
/// 8-hex-digit hash of the full pair keeps names of different pairs apart:
/// `<prefix>-<hash>`. Deterministic, so a restarted operator finds the Jobs it created.
pub fn job_name(scan_request: &str, scanner: &str) -> String {
    let plain = format!("{scan_request}-{scanner}");
    if is_dns1123_label(&plain) {
        return plain;
    }
    let mut hasher = Sha256::new();
    hasher.update(scan_request.as_bytes());
    hasher.update([0]);
    hasher.update(scanner.as_bytes());
    let digest = hex::encode(hasher.finalize());
    let hash = &digest[..HASH_LEN];
    let prefix = slug(&plain, MAX_NAME_LEN - HASH_LEN - 1);
    format!("{prefix}-{hash}")
}

/// The first seven characters of a commit SHA, as shown to people.
pub fn short_sha(sha: &str) -> &str {
    sha.get(..7).unwrap_or(sha)
}

/// Lowercase alphanumerics and single dashes, starting with a letter or digit, at most `max` long.
fn slug(name: &str, max: usize) -> String {
    let mut out = String::with_capacity(name.len().min(max));
    for c in name.chars() {
        let c = c.to_ascii_lowercase();
        if c.is_ascii_lowercase() || c.is_ascii_digit() {
            out.push(c);
        } else if !out.is_empty() && !out.ends_with('-') {
            out.push('-');
        }
        if out.len() >= max {
            break;
        }
    }
    out.truncate(max);
    while out.ends_with('-') {
        out.pop();
    }
    if out.is_empty() {
        out.push_str("repo");
        out.truncate(max);
    }
    out
}

/// Whether `name` is a DNS-1123 label: 1–63 lowercase alphanumerics or `-`, alphanumeric at
/// both ends.
pub fn is_dns1123_label(name: &str) -> bool {
    let bytes = name.as_bytes();
    let alnum = |b: &u8| b.is_ascii_lowercase() || b.is_ascii_digit();
    !bytes.is_empty()
        && bytes.len() <= MAX_NAME_LEN
        && bytes.iter().all(|b| alnum(b) || *b == b'-')
        && bytes.first().is_some_and(alnum)
        && bytes.last().is_some_and(alnum)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn job_names_are_the_pair_when_it_fits_and_a_hashed_prefix_when_not() {
        assert_eq!(
            job_name("widgets-pr42-9f1c2ab-1a2b3c4d", "kics"),
            "widgets-pr42-9f1c2ab-1a2b3c4d-kics"
        );
        // 63 characters exactly: kept.
        let sr = "a".repeat(58);
        assert_eq!(job_name(&sr, "kics").len(), 63);
        assert_eq!(job_name(&sr, "kics"), format!("{sr}-kics"));
        // One more: shortened, hashed, still a label, different from its neighbours.
        let long = scan_request_name(
            "a-repository-with-a-rather-long-name-indeed",
            7,
            42,
            SHA,
            TriggerKey::Change("2026-11-23T10:00:00Z"),
        );
        assert_eq!(long.len(), 63);
        let kics = job_name(&long, "kics");
        let blackduck = job_name(&long, "blackduck");
        for name in [&kics, &blackduck] {
            assert!(is_dns1123_label(name), "{name}");
            assert_eq!(name.len(), 63, "{name}");
            assert!(name.starts_with("a-repository-with"), "{name}");
        }
        assert_ne!(kics, blackduck);
        // Deterministic.
        assert_eq!(job_name(&long, "kics"), kics);
        // A prefix cut at a dash does not leave a double dash or a trailing one.
        let dashed = format!("{}-x", "b".repeat(53));
        let name = job_name(&dashed, "blackduck");
        assert!(is_dns1123_label(&name) && !name.contains("--"), "{name}");
    }

    const SHA: &str = "9f1c2ab3d4e5f60718293a4b5c6d7e8f90a1b2c3";
    const AT: TriggerKey<'static> = TriggerKey::Change("2011-01-26T19:01:12Z");

    #[test]
    fn name_is_readable_and_stable() {
        let a = scan_request_name("widgets", 1_296_269, 42, SHA, AT);
        let b = scan_request_name("widgets", 1_296_269, 42, SHA, AT);
        assert_eq!(a, b);
        assert!(a.starts_with("widgets-pr42-9f1c2ab-"), "{a}");
        assert!(is_dns1123_label(&a), "{a}");
    }

    #[test]
    fn the_same_inputs_give_a_known_name_across_releases() {
        // Pinned: changing the naming scheme would make redeliveries create duplicates across an
        // upgrade. Change this only together with a migration note. The value is
        // sha256("1296269\0" "42\0" "<sha>\0" "\x02" "<updated_at>")[..8], computed
        // independently with Python.
        assert_eq!(
            scan_request_name("widgets", 1_296_269, 42, SHA, AT),
            "widgets-pr42-9f1c2ab-54aa0b66"
        );
    }

    #[test]
    fn trigger_head_sha_pr_and_repo_id_each_change_the_name() {
        let base = scan_request_name("widgets", 1, 42, SHA, AT);
        let other_sha = SHA.replace('9', "8");
        for other in [
            scan_request_name("widgets", 1, 42, SHA, TriggerKey::Rerun("delivery-1")),
            scan_request_name(
                "widgets",
                1,
                42,
                SHA,
                TriggerKey::Change("2011-01-26T19:01:13Z"),
            ),
            scan_request_name("widgets", 1, 42, SHA, TriggerKey::Comment(7)),
            scan_request_name("widgets", 1, 42, SHA, TriggerKey::MergeQueue),
            scan_request_name("widgets", 1, 42, &other_sha, AT),
            scan_request_name("widgets", 1, 43, SHA, AT),
            scan_request_name("widgets", 2, 42, SHA, AT),
        ] {
            assert_ne!(base, other);
        }
        assert_ne!(
            scan_request_name("widgets", 1, 42, SHA, TriggerKey::Rerun("delivery-1")),
            scan_request_name("widgets", 1, 42, SHA, TriggerKey::Rerun("delivery-2"))
        );
    }

    #[test]
    fn keys_of_different_kinds_never_collide_on_the_same_text() {
        assert_ne!(
            scan_request_name("w", 1, 42, SHA, TriggerKey::Rerun("7")),
            scan_request_name("w", 1, 42, SHA, TriggerKey::Comment(7))
        );
        assert_ne!(
            scan_request_name("w", 1, 42, SHA, TriggerKey::Rerun("x")),
            scan_request_name("w", 1, 42, SHA, TriggerKey::Change("x"))
        );
    }

    #[test]
    fn long_and_odd_repository_names_still_give_valid_labels() {
        let long = "A".repeat(100);
        for repo in [
            long.as_str(),
            "My.Repo_Name",
            "---",
            "_.-",
            ".github",
            "repo--with---dashes",
            "ünïcödé",
        ] {
            let name = scan_request_name(repo, 7, 1_234_567_890, SHA, TriggerKey::Rerun("x"));
            assert!(name.len() <= MAX_NAME_LEN, "{name} is {} long", name.len());
            assert!(is_dns1123_label(&name), "{name} from {repo:?}");
        }
        assert!(scan_request_name("My.Repo_Name", 7, 1, SHA, AT).starts_with("my-repo-name-pr1-"));
        assert!(scan_request_name("---", 7, 1, SHA, AT).starts_with("repo-pr1-"));
    }

    #[test]
    fn the_largest_pull_request_number_still_fits() {
        let name = scan_request_name(&"r".repeat(100), 1, i64::MAX, SHA, AT);
        assert!(name.len() <= MAX_NAME_LEN);
        assert!(is_dns1123_label(&name), "{name}");
    }

    #[test]
    fn uppercase_sha_names_the_same_scan_as_lowercase() {
        assert_eq!(
            scan_request_name("w", 1, 1, &SHA.to_uppercase(), AT),
            scan_request_name("w", 1, 1, SHA, AT)
        );
    }

    #[test]
    fn dns1123_label_check_rejects_invalid_names() {
        assert!(is_dns1123_label("a"));
        assert!(is_dns1123_label("a-1"));
        for bad in ["", "-a", "a-", "A", "a_b", "a.b", &"a".repeat(64)] {
            assert!(!is_dns1123_label(bad), "{bad}");
        }
    }

    #[test]
    fn short_sha_is_seven_characters() {
        assert_eq!(short_sha(SHA), "9f1c2ab");
        assert_eq!(short_sha("abc"), "abc");
    }
}
