//! `gatehouse-agent`: the small program that runs inside scan pods, beside the scanner. It holds
//! only the per-scan credentials it is given (a read-only token for one repository in
//! `checkout`, the result-signing key in `report`) and has no Kubernetes client.
//!
//! - `checkout`: the commit's tarball from GitHub, unpacked safely into the workspace.
//! - `report`: the scanner's report read into normalised findings, signed, published to Redis.
//! - `parse`: the same reading of a report file, printed as JSON, publishing nothing: how a
//!   person checks what Gatehouse makes of a report.
//!
//! Exit status: 0 done; 1 a failure that may pass (the network, Redis, GitHub's servers); 2 a
//! refusal that will not (a hostile archive, a bad argument, an unusable key). The operator
//! reads it, with the message this program writes to `/dev/termination-log`, from the pod.

pub mod checkout;
pub mod report;

#[cfg(test)]
mod checkout_tests;

use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::{Parser, Subcommand, ValueEnum};
use gatehouse_crds::scanpolicy::ScannerKind;
use std::io::Read as _;

use http_body_util::BodyExt;

use crate::keys::ScanKey;

/// Exit status: done.
pub const EXIT_OK: i32 = 0;
/// Exit status: a failure that may pass when tried again.
pub const EXIT_TRANSIENT: i32 = 1;
/// Exit status: a refusal that will not pass (hostile input, bad arguments).
pub const EXIT_REFUSED: i32 = 2;

/// gatehouse-agent: checks out a pull request's commit and reports a scanner's findings, inside
/// a Gatehouse scan pod.
#[derive(Debug, Parser)]
#[command(name = "gatehouse-agent", version, about)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
// Parsed once at start: the size of a variant costs nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Download a commit's tarball with the per-scan token and unpack it safely.
    Checkout(CheckoutArgs),
    /// Read the scanner's report, sign the result with the per-scan key and publish it.
    Report(ReportArgs),
    /// Print, as JSON, the normalised result of one report file; publish nothing.
    Parse(ParseArgs),
}

/// A scanner whose report the agent reads.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Scanner {
    /// Checkmarx KICS (`results.json`, or `results.sarif`).
    Kics,
    /// Black Duck Detect rapid scan (`*_BlackDuck_DeveloperMode_Result.json`).
    Blackduck,
}

impl From<Scanner> for ScannerKind {
    fn from(scanner: Scanner) -> ScannerKind {
        match scanner {
            Scanner::Kics => ScannerKind::Kics,
            Scanner::Blackduck => ScannerKind::Blackduck,
        }
    }
}

/// Flags of `checkout`.
#[derive(Debug, clap::Args)]
pub struct CheckoutArgs {
    /// `owner/name` of the repository.
    #[arg(long)]
    pub repository: String,
    /// Full SHA of the commit.
    #[arg(long)]
    pub sha: String,
    /// Empty directory to unpack into.
    #[arg(long)]
    pub into: PathBuf,
    /// File holding the repository-scoped, read-only installation token.
    #[arg(long)]
    pub token_file: PathBuf,
    /// GitHub API URL (`https://<host>/api/v3` for GitHub Enterprise Server).
    #[arg(
        long,
        env = "GATEHOUSE_GITHUB_API_URL",
        default_value = "https://api.github.com"
    )]
    pub api_url: String,
    /// A file the scanner must not read, relative to the repository root, removed after
    /// unpacking (repeatable).
    #[arg(long = "remove")]
    pub remove: Vec<String>,
    /// Also unpack this commit (the pull request's base, for baseline mode) ...
    #[arg(long, requires = "base_into")]
    pub base_sha: Option<String>,
    /// ... into this directory.
    #[arg(long, requires = "base_sha")]
    pub base_into: Option<PathBuf>,
    /// Largest compressed download, in bytes.
    #[arg(long, default_value_t = checkout::Limits::default().max_download_bytes)]
    pub max_download_bytes: u64,
    /// Most entries in the archive.
    #[arg(long, default_value_t = checkout::Limits::default().max_entries)]
    pub max_entries: u64,
    /// Largest single file, unpacked, in bytes.
    #[arg(long, default_value_t = checkout::Limits::default().max_file_bytes)]
    pub max_file_bytes: u64,
    /// Largest total, unpacked, in bytes.
    #[arg(long, default_value_t = checkout::Limits::default().max_total_bytes)]
    pub max_total_bytes: u64,
    /// Longest time the step spends waiting out GitHub's rate limits, all requests together,
    /// in seconds (hidden: the default is what scan Jobs need; tests shorten it).
    #[arg(long, hide = true, default_value_t = MAX_RATE_LIMIT_WAITING.as_secs())]
    pub rate_limit_wait_budget_seconds: u64,
}

/// Flags of `report`.
#[derive(Debug, clap::Args)]
pub struct ReportArgs {
    /// The scanner's kind.
    #[arg(long, value_enum)]
    pub scanner: Scanner,
    /// The scanner's name in the policy.
    #[arg(long)]
    pub scanner_name: String,
    /// `namespace/name` of the ScanRequest.
    #[arg(long)]
    pub scan_request: String,
    /// UID of the ScanRequest.
    #[arg(long)]
    pub uid: String,
    /// Attempt number of this Job.
    #[arg(long)]
    pub attempt: i32,
    /// The commit that was scanned.
    #[arg(long)]
    pub sha: String,
    /// Directory the scanner wrote its reports to.
    #[arg(long)]
    pub output_dir: PathBuf,
    /// Directory the scanner saw the repository at (report paths are made relative to it).
    #[arg(long, default_value = "/workspace/src")]
    pub source_dir: String,
    /// The scanner's exit code (the pod runs this step only after the scanner exited 0).
    #[arg(long, default_value_t = 0)]
    pub exit_code: i32,
    /// The base commit the pod scanned too (baseline mode) ...
    #[arg(long, requires = "base_output_dir")]
    pub base_sha: Option<String>,
    /// ... and where that scan wrote its reports.
    #[arg(long, requires = "base_sha")]
    pub base_output_dir: Option<PathBuf>,
    /// File holding the per-scan signing key (hex).
    #[arg(long)]
    pub key_file: PathBuf,
    /// Redis URL to publish to (no password in it).
    #[arg(long, env = "GATEHOUSE_REDIS_URL")]
    pub redis_url: String,
    /// File holding the Redis password (ACL user: give it in the URL as redis://user@host).
    #[arg(long, env = "GATEHOUSE_REDIS_PASSWORD_FILE")]
    pub redis_password_file: Option<PathBuf>,
    /// PEM bundle of the CA certificates to verify Redis's TLS certificate with, in place of
    /// the system's trust store (needs a rediss:// --redis-url).
    #[arg(long, env = "GATEHOUSE_REDIS_CA_FILE")]
    pub redis_ca_file: Option<PathBuf>,
    /// Most findings sent (most severe first; the counts always cover all of them).
    #[arg(long, default_value_t = 20_000)]
    pub max_findings: usize,
    /// Also send the scanner's SARIF report, for the operator to upload to code scanning.
    #[arg(long)]
    pub include_sarif: bool,
}

/// Flags of `parse`.
#[derive(Debug, clap::Args)]
pub struct ParseArgs {
    /// The scanner's kind.
    #[arg(long, value_enum)]
    pub scanner: Scanner,
    /// The report file (KICS `results.json` or `results.sarif`; Detect's rapid-scan JSON).
    pub report: PathBuf,
    /// The scanner's exit code, when known: an error code makes the result a scanner error.
    #[arg(long)]
    pub exit_code: Option<i32>,
    /// Directory the scanner saw the repository at, to make absolute report paths relative.
    #[arg(long, default_value = "/workspace/src")]
    pub source_dir: String,
}

/// Runs the command; returns the exit status.
pub async fn main(cli: Cli) -> i32 {
    match cli.command {
        Command::Checkout(args) => match run_checkout(&args).await {
            Ok(message) => {
                eprintln!("gatehouse-agent checkout: {message}");
                EXIT_OK
            }
            Err((status, message)) => fail("checkout", status, &message),
        },
        Command::Report(args) => match run_report(&args).await {
            Ok(message) => {
                eprintln!("gatehouse-agent report: {message}");
                EXIT_OK
            }
            Err((status, message)) => fail("report", status, &message),
        },
        Command::Parse(args) => run_parse(&args),
    }
}

/// Says why on stderr and in the pod's termination message, and returns the status.
fn fail(command: &str, status: i32, message: &str) -> i32 {
    eprintln!("gatehouse-agent {command}: {message}");
    // Kubernetes shows this file's contents as the container's termination message.
    let termination = Path::new("/dev/termination-log");
    if termination.exists() {
        let _ = std::fs::write(termination, message);
    }
    status
}

fn read_secret(what: &str, path: &Path) -> Result<String, (i32, String)> {
    std::fs::read_to_string(path)
        .map(|text| text.trim().to_owned())
        .map_err(|e| {
            (
                EXIT_REFUSED,
                format!("failed to read {what} from {}: {e}", path.display()),
            )
        })
}

async fn run_checkout(args: &CheckoutArgs) -> Result<String, (i32, String)> {
    let (owner, repo) = args
        .repository
        .split_once('/')
        .filter(|(o, r)| !o.is_empty() && !r.is_empty() && !r.contains('/'))
        .ok_or_else(|| {
            (
                EXIT_REFUSED,
                format!("--repository {:?} is not owner/name", args.repository),
            )
        })?;
    let token = read_secret("the token", &args.token_file)?;
    let limits = checkout::Limits {
        max_download_bytes: args.max_download_bytes,
        max_entries: args.max_entries,
        max_file_bytes: args.max_file_bytes,
        max_total_bytes: args.max_total_bytes,
        ..checkout::Limits::default()
    };
    let mut targets = vec![(args.sha.as_str(), args.into.as_path())];
    if let (Some(sha), Some(into)) = (&args.base_sha, &args.base_into) {
        targets.push((sha.as_str(), into.as_path()));
    }
    let client = github_client(
        &args.api_url,
        &token,
        Duration::from_secs(args.rate_limit_wait_budget_seconds),
    )?;
    let mut done = Vec::new();
    for (sha, into) in targets {
        if !gatehouse_crds::lifecycle::is_full_sha(sha) {
            return Err((EXIT_REFUSED, format!("{sha:?} is not a full commit SHA")));
        }
        let archive = std::env::temp_dir().join(format!("gatehouse-{sha}.tar.gz"));
        let bytes = download(&client, owner, repo, sha, &archive, &limits).await?;
        let file = std::fs::File::open(&archive)
            .map_err(|e| (EXIT_TRANSIENT, format!("{}: {e}", archive.display())))?;
        let mut unpacked = checkout::unpack(std::io::BufReader::new(file), into, &limits)
            .map_err(|e| (refusal(&e), e.to_string()))?;
        let _ = std::fs::remove_file(&archive);
        let removed =
            checkout::remove_files(into, &args.remove).map_err(|e| (refusal(&e), e.to_string()))?;
        let (listing, listings) = tree(&client, owner, repo, sha, &limits).await?;
        let differences = checkout::compare(into, &listing, &args.remove)
            .map_err(|e| (refusal(&e), e.to_string()))?;
        let completed = complete(
            &client,
            owner,
            repo,
            into,
            &differences,
            &limits,
            &mut unpacked,
        )
        .await?;
        let pointers = checkout::lfs_pointers(into).map_err(|e| (refusal(&e), e.to_string()))?;
        if !pointers.is_empty() {
            return Err((
                EXIT_REFUSED,
                format!(
                    "{} files of {owner}/{repo}@{sha} are Git LFS pointers, whose content the \
                     archive does not hold and the scanner would not see (first: {}); turn on \
                     \"Include Git LFS objects in archives\" in the repository's settings",
                    pointers.len(),
                    pointers[0]
                ),
            ));
        }
        let submodules = listing.tree.iter().filter(|e| e.kind == "commit").count();
        let notes = checkout_notes(&removed, &completed, submodules, listings);
        done.push(format!(
            "{owner}/{repo}@{sha}: {bytes} bytes downloaded, {} files ({} bytes), {} directories, \
             {} links into {}{}",
            unpacked.files,
            unpacked.bytes,
            unpacked.directories,
            unpacked.links,
            into.display(),
            notes
                .iter()
                .flat_map(|n| ["; ", n.as_str()])
                .collect::<String>()
        ));
    }
    Ok(done.join("; "))
}

/// What the checkout of one commit says besides its counts.
fn checkout_notes(
    removed: &[String],
    completed: &Completed,
    submodules: usize,
    listings: usize,
) -> Vec<String> {
    let mut notes = Vec::new();
    if !removed.is_empty() {
        notes.push(format!("removed {}", removed.join(", ")));
    }
    if completed.missing > 0 {
        notes.push(format!(
            "{} files the archive left out (export-ignore) fetched one by one",
            completed.missing
        ));
    }
    if completed.differed > 0 {
        notes.push(format!(
            "{} files the archive holds otherwise than the commit (.gitattributes) fetched \
                 from the commit",
            completed.differed
        ));
    }
    if completed.lfs_objects > 0 {
        notes.push(format!(
            "{} Git LFS objects taken from the archive (their pointers' checksums match)",
            completed.lfs_objects
        ));
    }
    if submodules > 0 {
        notes.push(format!(
            "{submodules} submodules not checked out (GitHub's archives leave them out)"
        ));
    }
    if listings > 1 {
        notes.push(format!(
            "GitHub listed the commit's tree only in part at once: listed again directory \
                 by directory ({listings} listings)"
        ));
    }
    notes
}

fn refusal(error: &checkout::ArchiveError) -> i32 {
    match error {
        checkout::ArchiveError::Write { .. } => EXIT_TRANSIENT,
        _ => EXIT_REFUSED,
    }
}

/// Most files of a commit fetched one by one: those its archive left out and those it holds
/// otherwise than the commit, together.
const MAX_RESTORED_FILES: usize = 1000;

/// Largest tree listing read from GitHub (GitHub truncates its own at 7 MB).
const MAX_TREE_BYTES: u64 = 64 << 20;

/// Most tree listings asked for when GitHub lists a commit's tree only in part.
const MAX_TREE_LISTINGS: usize = 1000;

/// Longest wait a rate-limited answer may ask for and still be waited out inside the step;
/// longer, the step fails at once (exit 1) and the Job is tried again.
const MAX_RATE_LIMIT_WAIT: Duration = Duration::from_secs(60);

/// Longest time one step spends waiting out rate limits, all requests together (the default of
/// `--rate-limit-wait-budget-seconds`).
const MAX_RATE_LIMIT_WAITING: Duration = Duration::from_secs(180);

/// Most bytes of an error answer's body read (its first 300 characters are shown): a body
/// that never ends must not hold the step.
const MAX_ERROR_BODY_BYTES: usize = 64 << 10;

/// The GitHub API with the per-scan token, how long this step waited for its rate limits and
/// how long it may wait in all.
struct Api {
    client: octocrab::Octocrab,
    waited: std::sync::Mutex<Duration>,
    wait_budget: Duration,
}

fn github_client(api_url: &str, token: &str, wait_budget: Duration) -> Result<Api, (i32, String)> {
    let client = octocrab::Octocrab::builder()
        .base_uri(api_url)
        .map_err(|e| (EXIT_REFUSED, format!("--api-url {api_url:?}: {e}")))?
        .personal_token(token.to_owned())
        .set_connect_timeout(Some(Duration::from_secs(10)))
        .set_read_timeout(Some(Duration::from_secs(60)))
        .build()
        .map_err(|e| (EXIT_REFUSED, format!("GitHub client: {e}")))?;
    Ok(Api {
        client,
        waited: std::sync::Mutex::new(Duration::ZERO),
        wait_budget,
    })
}

/// Downloads `GET /repos/{owner}/{repo}/tarball/{sha}` (GitHub answers with a redirect to a
/// short-lived archive URL, followed without the token) into `to`, at most
/// `limits.max_download_bytes`.
async fn download(
    api: &Api,
    owner: &str,
    repo: &str,
    sha: &str,
    to: &Path,
    limits: &checkout::Limits,
) -> Result<u64, (i32, String)> {
    let route = format!(
        "/repos/{}/{}/tarball/{sha}",
        crate::github::encode(owner),
        crate::github::encode(repo)
    );
    let mut file = std::fs::File::create(to)
        .map_err(|e| (EXIT_TRANSIENT, format!("{}: {e}", to.display())))?;
    get_into(api, &route, None, limits.max_download_bytes, &mut file)
        .await
        .map_err(|(code, e)| (code, e.replace("the answer", "the archive")))
}

/// The commit's tree, listed by `GET /repos/{owner}/{repo}/git/trees/{sha}?recursive=1`, and
/// how many listings it took. When GitHub lists it only in part (more than 100,000 entries or
/// 7 MB), it is listed again directory by directory, as GitHub advises: each directory without
/// `recursive`, each of its subdirectories with it (and walked in turn when that is cut too),
/// at most [`MAX_TREE_LISTINGS`] listings and `limits.max_entries` entries; beyond, or a single
/// directory GitHub cannot list whole, is a refusal.
async fn tree(
    api: &Api,
    owner: &str,
    repo: &str,
    sha: &str,
    limits: &checkout::Limits,
) -> Result<(checkout::Tree, usize), (i32, String)> {
    let whole = list_tree(api, owner, repo, sha, true).await?;
    if !whole.truncated {
        return Ok((whole, 1));
    }
    let refuse = |why: String| {
        Err((
            EXIT_REFUSED,
            format!(
                "GitHub lists the tree of {owner}/{repo}@{sha} only in part, and it cannot be \
                 listed directory by directory either: {why}"
            ),
        ))
    };
    let mut listings = 1;
    let mut entries: Vec<checkout::TreeEntry> = Vec::new();
    let mut pending = vec![(String::new(), sha.to_owned())];
    while let Some((prefix, tree_sha)) = pending.pop() {
        if let Err(why) = one_more_listing(&mut listings) {
            return refuse(why);
        }
        let flat = list_tree(api, owner, repo, &tree_sha, false).await?;
        if flat.truncated {
            let directory = prefix.trim_end_matches('/');
            return refuse(format!(
                "directory {:?} alone has more entries than GitHub lists at once",
                if directory.is_empty() { "/" } else { directory }
            ));
        }
        for mut entry in flat.tree {
            entry.path = format!("{prefix}{}", entry.path);
            if entry.kind == "tree" {
                if let Err(why) = one_more_listing(&mut listings) {
                    return refuse(why);
                }
                let below = list_tree(api, owner, repo, &entry.sha, true).await?;
                if below.truncated {
                    pending.push((format!("{}/", entry.path), entry.sha.clone()));
                } else {
                    entries.extend(below.tree.into_iter().map(|mut e| {
                        e.path = format!("{}/{}", entry.path, e.path);
                        e
                    }));
                }
            }
            entries.push(entry);
            if entries.len() as u64 > limits.max_entries {
                return refuse(format!("more than {} entries", limits.max_entries));
            }
        }
    }
    Ok((
        checkout::Tree {
            tree: entries,
            truncated: false,
        },
        listings,
    ))
}

/// Counts one more listing of the directory-by-directory walk, before it is asked for; more
/// than [`MAX_TREE_LISTINGS`] in all is refused (why, as the refusal says it).
fn one_more_listing(listings: &mut usize) -> Result<(), String> {
    *listings += 1;
    if *listings > MAX_TREE_LISTINGS {
        return Err(format!("more than {MAX_TREE_LISTINGS} listings"));
    }
    Ok(())
}

/// One listing: `GET /repos/{owner}/{repo}/git/trees/{sha}`, `?recursive=1` when `recursive`.
async fn list_tree(
    api: &Api,
    owner: &str,
    repo: &str,
    sha: &str,
    recursive: bool,
) -> Result<checkout::Tree, (i32, String)> {
    let route = format!(
        "/repos/{}/{}/git/trees/{}{}",
        crate::github::encode(owner),
        crate::github::encode(repo),
        crate::github::encode(sha),
        if recursive { "?recursive=1" } else { "" }
    );
    let mut body = Vec::new();
    get_into(api, &route, None, MAX_TREE_BYTES, &mut body).await?;
    serde_json::from_slice(&body).map_err(|e| {
        (
            EXIT_REFUSED,
            format!("GET {route}: not a tree listing: {e}"),
        )
    })
}

/// What [`complete`] did.
#[derive(Debug, Default)]
struct Completed {
    /// Files the archive left out, fetched.
    missing: usize,
    /// Files the archive holds otherwise than the commit, fetched in their place.
    differed: usize,
    /// Git LFS objects the archive holds in place of their pointers, kept.
    lfs_objects: usize,
}

/// Makes the workspace the commit's: fetches the files its archive left out (`export-ignore`
/// in the commit's `.gitattributes`: a pull request could otherwise hide files from the
/// scanner) and those it holds with other content than the commit (other `.gitattributes`:
/// `working-tree-encoding` could make a file unreadable to the scanner) through
/// `GET /repos/{owner}/{repo}/git/blobs/{sha}`. A file whose blob is a Git LFS pointer and
/// that the archive holds as that LFS object ("Include Git LFS objects in archives") is kept.
async fn complete(
    api: &Api,
    owner: &str,
    repo: &str,
    into: &Path,
    differences: &[(&checkout::TreeEntry, checkout::Difference)],
    limits: &checkout::Limits,
    unpacked: &mut checkout::Unpacked,
) -> Result<Completed, (i32, String)> {
    if differences.len() > MAX_RESTORED_FILES {
        return Err((
            EXIT_REFUSED,
            format!(
                "{} files of the commit are left out of its archive or differ there (export-ignore \
                 in .gitattributes, such as `/tests export-ignore`, or Git LFS objects), more than \
                 the {MAX_RESTORED_FILES} this version of Gatehouse fetches one by one (first: \
                 {:?}); remove export-ignore from the paths to be scanned (files in Git LFS \
                 count too)",
                differences.len(),
                differences[0].0.path
            ),
        ));
    }
    let mut done = Completed::default();
    let scratch = std::env::temp_dir().join("gatehouse-blob");
    let refused = |e: checkout::ArchiveError| (refusal(&e), e.to_string());
    for (entry, difference) in differences {
        if entry.size.is_some_and(|size| size > limits.max_file_bytes) {
            return Err(refused(checkout::ArchiveError::FileTooLarge {
                entry: entry.path.clone(),
                limit: limits.max_file_bytes,
            }));
        }
        let route = format!(
            "/repos/{}/{}/git/blobs/{}",
            crate::github::encode(owner),
            crate::github::encode(repo),
            crate::github::encode(&entry.sha)
        );
        let mut file = std::fs::File::create(&scratch)
            .map_err(|e| (EXIT_TRANSIENT, format!("{}: {e}", scratch.display())))?;
        let size = get_into(
            api,
            &route,
            Some("application/vnd.github.raw+json"),
            limits.max_file_bytes,
            &mut file,
        )
        .await?;
        let reopen = || {
            std::fs::File::open(&scratch)
                .map_err(|e| (EXIT_TRANSIENT, format!("{}: {e}", scratch.display())))
        };
        match difference {
            checkout::Difference::Missing => {
                checkout::restore(into, entry, &mut reopen()?, limits, unpacked)
                    .map_err(refused)?;
                done.missing += 1;
            }
            checkout::Difference::Differs => {
                if size <= 1024 {
                    let mut blob = Vec::new();
                    reopen()?
                        .read_to_end(&mut blob)
                        .map_err(|e| (EXIT_TRANSIENT, format!("{}: {e}", scratch.display())))?;
                    if let Some((oid, size)) = checkout::lfs_pointer(&blob)
                        && checkout::is_lfs_object(into, entry, &oid, size).map_err(refused)?
                    {
                        done.lfs_objects += 1;
                        continue;
                    }
                }
                checkout::replace(into, entry, &mut reopen()?, limits, unpacked)
                    .map_err(refused)?;
                done.differed += 1;
            }
        }
    }
    let _ = std::fs::remove_file(&scratch);
    // The archive's own links were checked as they were unpacked; a link restored or replaced
    // here may point through one, so the whole tree is checked again, but only then.
    if done.missing + done.differed > 0 {
        checkout::check_links(into).map_err(refused)?;
    }
    Ok(done)
}

/// What a failed answer says about GitHub's rate limits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum RateLimit {
    /// Not a rate limit.
    No,
    /// A rate limit (GitHub's primary or secondary limit, or 429), with how long it asks to
    /// wait and when it resets (seconds since the epoch) when it says (`retry-after`, else
    /// `x-ratelimit-reset` when `x-ratelimit-remaining` is 0).
    Wait {
        /// How long from now.
        wait: Option<Duration>,
        /// When, in seconds since the epoch.
        resets_at: Option<u64>,
    },
}

fn rate_limited(status: http::StatusCode, headers: &http::HeaderMap, body: &str) -> RateLimit {
    let number = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok())
    };
    let retry_after = number("retry-after");
    let remaining = number("x-ratelimit-remaining");
    let limited = match status.as_u16() {
        429 => true,
        403 => {
            let body = body.to_ascii_lowercase();
            retry_after.is_some()
                || remaining == Some(0)
                || body.contains("rate limit")
                || body.contains("abuse")
        }
        _ => false,
    };
    if !limited {
        return RateLimit::No;
    }
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let reset = match (remaining, number("x-ratelimit-reset")) {
        (Some(0), Some(reset)) => Some(reset),
        _ => None,
    };
    let wait = retry_after
        .map(|s| s.max(1))
        .or(reset.map(|r| r.saturating_sub(now).max(1)));
    RateLimit::Wait {
        wait: wait.map(Duration::from_secs),
        resets_at: wait.map(|w| now.saturating_add(w)),
    }
}

/// How a rate limit the step does not wait out is told: when GitHub said it resets (UTC), and
/// what happens next.
fn rate_limit_message(
    route: &str,
    status: http::StatusCode,
    resets_at: Option<u64>,
    body: &str,
) -> String {
    let when = resets_at
        .and_then(|at| i64::try_from(at).ok())
        .and_then(|at| k8s_openapi::jiff::Timestamp::from_second(at).ok())
        .map_or_else(
            || "GitHub did not say when it resets".to_owned(),
            |at| format!("GitHub says it resets at {at}"),
        );
    format!(
        "GET {route}: {status}: rate limited; {when}; this attempt fails and the Job is tried \
         again at once (the operator makes 3 attempts in all and does not wait for the reset): \
         {body}"
    )
}

/// Waits out a rate limit inside the step when it asks for at most [`MAX_RATE_LIMIT_WAIT`] and
/// the step would not wait more than its budget in all (`--rate-limit-wait-budget-seconds`);
/// whether it waited.
async fn wait_out(api: &Api, route: &str, wait: Option<Duration>) -> bool {
    let Some(wait) = wait.filter(|w| *w <= MAX_RATE_LIMIT_WAIT) else {
        return false;
    };
    {
        let mut waited = api
            .waited
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if *waited + wait > api.wait_budget {
            eprintln!(
                "gatehouse-agent: GET {route}: rate limited for {} s; not waited: this step \
                 already waited {} s for rate limits, {} s at most",
                wait.as_secs(),
                waited.as_secs(),
                api.wait_budget.as_secs()
            );
            return false;
        }
        *waited += wait;
    }
    eprintln!(
        "gatehouse-agent: GET {route}: rate limited; waiting {} s",
        wait.as_secs()
    );
    tokio::time::sleep(wait).await;
    true
}

/// The start of an error answer's body: at most [`MAX_ERROR_BODY_BYTES`] read, 300
/// characters kept (what GitHub says went wrong, never more).
async fn error_text<B>(mut body: B) -> String
where
    B: BodyExt + Unpin,
    B::Data: AsRef<[u8]>,
{
    let mut read = Vec::new();
    while read.len() < MAX_ERROR_BODY_BYTES {
        match body.frame().await {
            Some(Ok(frame)) => {
                if let Ok(data) = frame.into_data() {
                    let data = data.as_ref();
                    let room = MAX_ERROR_BODY_BYTES - read.len();
                    read.extend_from_slice(&data[..data.len().min(room)]);
                }
            }
            Some(Err(_)) | None => break,
        }
    }
    String::from_utf8_lossy(&read).chars().take(300).collect()
}

/// GETs `route` (with `accept` as the media type when given), following one more redirect by
/// hand when the client did not, and writes the body into `sink`, at most `max_bytes`. A server
/// error, a rate limit or a token GitHub no longer takes (401) may pass (exit 1; a rate limit
/// asking for at most a minute is waited out here first); any other failure status will not
/// (exit 2).
async fn get_into(
    api: &Api,
    route: &str,
    accept: Option<&str>,
    max_bytes: u64,
    sink: &mut impl std::io::Write,
) -> Result<u64, (i32, String)> {
    let transient = |e: String| (EXIT_TRANSIENT, e);
    let headers = accept.map(|accept| {
        let mut headers = http::HeaderMap::new();
        if let Ok(value) = http::HeaderValue::from_str(accept) {
            headers.insert(http::header::ACCEPT, value);
        }
        headers
    });
    let response = loop {
        let mut response = api
            .client
            ._get_with_headers(route, headers.clone())
            .await
            .map_err(|e| transient(format!("GET {route}: {e}")))?;
        // The follow-redirect layer follows GitHub's redirect to the archive host (and drops
        // the token on the way: another origin); one more hop by hand when it did not.
        if response.status().is_redirection()
            && let Some(location) = response
                .headers()
                .get(http::header::LOCATION)
                .and_then(|l| l.to_str().ok())
                .map(str::to_owned)
        {
            response = api
                .client
                ._get(location.as_str())
                .await
                .map_err(|e| transient(format!("GET {location}: {e}")))?;
        }
        let status = response.status();
        if status.is_success() {
            break response;
        }
        let answer_headers = response.headers().clone();
        let body = error_text(response.into_body()).await;
        if let RateLimit::Wait { wait, resets_at } = rate_limited(status, &answer_headers, &body) {
            if wait_out(api, route, wait).await {
                continue;
            }
            return Err(transient(rate_limit_message(
                route, status, resets_at, &body,
            )));
        }
        if status == http::StatusCode::UNAUTHORIZED {
            // The per-scan token lives an hour from when the operator minted it, and a pod can
            // wait longer than that to start: the next attempt gets a new token.
            return Err(transient(format!(
                "GET {route}: {status}: GitHub refused the per-scan token (expired? it lives one \
                 hour from when the Job was created); the next attempt gets a new one: {body}"
            )));
        }
        let code = if status.is_server_error() {
            EXIT_TRANSIENT
        } else {
            EXIT_REFUSED
        };
        return Err((code, format!("GET {route}: {status}: {body}")));
    };
    let mut body = response.into_body();
    let mut total = 0_u64;
    while let Some(frame) = body.frame().await {
        let frame =
            frame.map_err(|e| transient(format!("GET {route}: reading the answer: {e}")))?;
        if let Ok(data) = frame.into_data() {
            total += data.len() as u64;
            if total > max_bytes {
                return Err((
                    EXIT_REFUSED,
                    format!("GET {route}: the answer is larger than {max_bytes} bytes"),
                ));
            }
            sink.write_all(&data)
                .map_err(|e| transient(format!("GET {route}: writing the answer: {e}")))?;
        }
    }
    Ok(total)
}

async fn run_report(args: &ReportArgs) -> Result<String, (i32, String)> {
    let (namespace, name) = args
        .scan_request
        .split_once('/')
        .filter(|(n, r)| !n.is_empty() && !r.is_empty())
        .ok_or_else(|| {
            (
                EXIT_REFUSED,
                format!(
                    "--scan-request {:?} is not namespace/name",
                    args.scan_request
                ),
            )
        })?;
    let key =
        ScanKey::from_hex(&read_secret("the signing key", &args.key_file)?).ok_or_else(|| {
            (
                EXIT_REFUSED,
                "the signing key is not 64 hex digits".to_owned(),
            )
        })?;
    let kind = ScannerKind::from(args.scanner);
    let head = report::read_output(kind, args.exit_code, &args.output_dir, &args.source_dir);
    let base = match (&args.base_sha, &args.base_output_dir) {
        (Some(sha), Some(dir)) => Some((
            sha.clone(),
            report::read_output(kind, 0, dir, &args.source_dir),
        )),
        _ => None,
    };
    let identity = report::Identity {
        namespace: namespace.to_owned(),
        scan_request: name.to_owned(),
        uid: args.uid.clone(),
        scanner: args.scanner_name.clone(),
        head_sha: args.sha.clone(),
        attempt: args.attempt,
    };
    let summary = match &head.outcome {
        gatehouse_crds::stream::ScanOutcome::Completed => format!(
            "{} findings from {}",
            head.parsed.counts.total(),
            head.file
                .as_ref()
                .map_or_else(String::new, |f| f.display().to_string())
        ),
        gatehouse_crds::stream::ScanOutcome::ScannerError { message, .. } => message.clone(),
    };
    let mut result = report::result(&identity, random_id(), head, base, args.max_findings);
    if args.include_sarif && result.outcome == gatehouse_crds::stream::ScanOutcome::Completed {
        match report::sarif_for_upload(kind, &args.output_dir) {
            Ok(sarif) => result.sarif = Some(sarif),
            Err(why) => result
                .notes
                .push(format!("SARIF not uploaded to code scanning: {why}")),
        }
    }
    let entry = report::entry(&result, &key)
        .map_err(|e| (EXIT_REFUSED, format!("failed to encode the result: {e}")))?;
    let client = redis_client(
        &args.redis_url,
        args.redis_password_file.as_deref(),
        args.redis_ca_file.as_deref(),
    )?;
    let id = report::publish(&client, &entry, 5)
        .await
        .map_err(|e| (EXIT_TRANSIENT, e.to_string()))?;
    Ok(format!(
        "{summary}; published as {id} ({} bytes, {})",
        entry.payload.len(),
        entry.encoding.as_str()
    ))
}

fn redis_client(
    url: &str,
    password_file: Option<&Path>,
    ca_file: Option<&Path>,
) -> Result<redis::Client, (i32, String)> {
    let mut info: redis::ConnectionInfo = url
        .parse()
        .map_err(|e: redis::RedisError| (EXIT_REFUSED, format!("--redis-url: {e}")))?;
    if let Some(path) = password_file {
        let password = read_secret("the Redis password", path)?;
        let settings = info.redis_settings().clone().set_password(password);
        info = info.set_redis_settings(settings);
    }
    if let Some(path) = ca_file {
        let pem = std::fs::read(path).map_err(|e| {
            (
                EXIT_REFUSED,
                format!(
                    "failed to read the Redis CA bundle from {}: {e}",
                    path.display()
                ),
            )
        })?;
        return redis_tls_client(info, &pem).map_err(|e| {
            (
                EXIT_REFUSED,
                format!("--redis-ca-file {}: {e}", path.display()),
            )
        });
    }
    redis::Client::open(info).map_err(|e| (EXIT_REFUSED, format!("--redis-url: {e}")))
}

/// Why a PEM bundle cannot be the CA certificates a Redis client verifies the server with.
#[derive(Debug, thiserror::Error)]
pub enum RedisCaError {
    /// The Redis URL is not `rediss://`: the bundle would not be used.
    #[error("failed to use it: the Redis URL is not rediss:// (TLS)")]
    NotTls,
    /// Nothing in it is a PEM certificate.
    #[error("failed to find a PEM certificate (-----BEGIN CERTIFICATE-----) in it")]
    NoCertificate,
    /// A certificate's PEM block does not decode.
    #[error("failed to read certificate {index} of it: {reason}")]
    Certificate {
        /// Which, from 1.
        index: usize,
        /// Why.
        reason: String,
    },
    /// The TLS client refused it (a certificate that is not one, inside a good PEM block).
    #[error("failed to build a TLS client with it: {0}")]
    Client(String),
}

/// The Redis client of `info` (a `rediss://` URL) that verifies the server with the CA
/// certificates of the PEM bundle `pem` alone, in place of the system's trust store. Sections
/// other than certificates are skipped. The `report`
/// step connects with it; `gatehouse-operator run` checks `--results-redis-ca-file` with it at
/// start, so a bundle the scan pods could not use stops the operator, not every scan.
pub fn redis_tls_client(
    info: redis::ConnectionInfo,
    pem: &[u8],
) -> Result<redis::Client, RedisCaError> {
    use rustls_pki_types::CertificateDer;
    use rustls_pki_types::pem::PemObject as _;
    if !matches!(info.addr(), redis::ConnectionAddr::TcpTls { .. }) {
        return Err(RedisCaError::NotTls);
    }
    let mut count = 0;
    for certificate in CertificateDer::pem_slice_iter(pem) {
        certificate.map_err(|e| RedisCaError::Certificate {
            index: count + 1,
            reason: e.to_string(),
        })?;
        count += 1;
    }
    if count == 0 {
        return Err(RedisCaError::NoCertificate);
    }
    // The redis crate reads the bundle the same way and adds each certificate as a trust
    // anchor, which parses it.
    redis::Client::build_with_tls(
        info,
        redis::TlsCertificates {
            client_tls: None,
            root_cert: Some(pem.to_vec()),
        },
    )
    .map_err(|e| RedisCaError::Client(e.to_string()))
}

/// 128 random bits, hex.
fn random_id() -> String {
    use ring::rand::SecureRandom as _;
    let mut bytes = [0_u8; 16];
    // The system's random source failing is not something to go on without.
    if ring::rand::SystemRandom::new().fill(&mut bytes).is_err() {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or_default();
        bytes = nanos.to_le_bytes();
    }
    hex::encode(bytes)
}

fn run_parse(args: &ParseArgs) -> i32 {
    let kind = ScannerKind::from(args.scanner);
    let meaning = args.exit_code.map(|code| match kind {
        ScannerKind::Kics => crate::scanners::kics::exit_status(code),
        ScannerKind::Blackduck => crate::scanners::blackduck::exit_status(code),
    });
    let read = match meaning {
        Some(
            crate::scanners::ExitStatus::Error(what) | crate::scanners::ExitStatus::Cancelled(what),
        ) => Err(format!(
            "scanner error: exit code {}: {what}",
            args.exit_code.unwrap_or_default()
        )),
        _ => report::read_capped(&args.report).and_then(|bytes| {
            report::parse_report(kind, &args.report, &bytes, &args.source_dir)
                .map_err(|e| e.to_string())
        }),
    };
    match read {
        Ok(parsed) => {
            let json = serde_json::json!({
                "scanner": format!("{:?}", args.scanner).to_ascii_lowercase(),
                "report": args.report.display().to_string(),
                "outcome": {"status": "completed"},
                "scannerVersion": parsed.scanner_version,
                "counts": parsed.counts,
                "total": parsed.counts.total(),
                "notes": parsed.notes,
                "findings": parsed.findings,
            });
            let text = serde_json::to_string_pretty(&json).unwrap_or_else(|e| e.to_string());
            // A closed pipe (`| head`) is not an error of the parse.
            let _ = std::io::Write::write_all(
                &mut std::io::stdout().lock(),
                format!("{text}\n").as_bytes(),
            );
            EXIT_OK
        }
        Err(message) => {
            eprintln!("gatehouse-agent parse: {message}");
            1
        }
    }
}
