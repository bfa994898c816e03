//! The operator's GitHub REST client: per-scan read-only repository tokens, the files a pull
//! request changes, and check runs (find, create, update). App JWT and installation tokens come
//! from octocrab; installation clients (and so their tokens) are cached per installation. Errors
//! say whether waiting helps and for how long (GitHub's rate-limit headers). It must not retry
//! by itself (a blind retry of a POST creates a second check run; the controller requeues with
//! backoff), decide what a scan means, or log tokens and keys.

use std::collections::HashMap;
use std::fmt;
use std::fmt::Write as _;
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use gatehouse_crds::scanrequest::Conclusion;
use octocrab::Octocrab;
use octocrab::models::{AppId, InstallationId};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

/// GitHub lists at most this many files of a pull request, 100 a page.
const MAX_FILE_PAGES: u32 = 30;
/// Pages of check runs read when looking for one: GitHub keeps at most 1000 runs of one name
/// in a check suite.
const MAX_CHECK_RUN_PAGES: u32 = 10;
/// The largest page GitHub serves.
const PER_PAGE: usize = 100;
/// GitHub's cap on `output.summary` and `output.text`, in characters.
const MAX_OUTPUT_CHARS: usize = 65_535;
/// GitHub's cap on `output.title`, in characters.
const MAX_TITLE_CHARS: usize = 255;
/// Appended to a summary or text cut to [`MAX_OUTPUT_CHARS`].
const TRUNCATED_NOTE: &str = "\n\n… (truncated)";
/// GitHub's advice for a secondary rate limit that names no time: wait at least a minute.
const SECONDARY_LIMIT_WAIT: Duration = Duration::from_secs(60);

/// A GitHub API call failed.
#[derive(Debug, thiserror::Error)]
pub enum GitHubError {
    /// The App credentials, the API URL, an id or a route are unusable.
    #[error("failed to set up the GitHub request: {0}")]
    Setup(String),
    /// GitHub answered with an error status, or did not answer (network, timeout).
    #[error("failed to call GitHub {route} ({}): {message}", status_text(.status.as_ref()))]
    Request {
        /// The route, without host.
        route: String,
        /// The HTTP status GitHub answered with; `None` when no answer came.
        status: Option<u16>,
        /// How long GitHub asks us to wait (rate limits), measured when the answer came.
        retry_after: Option<Duration>,
        /// GitHub's message, or the network error.
        message: String,
    },
    /// GitHub answered success with a body that is not what its API documents.
    #[error("failed to read GitHub's answer to {route}: {message}")]
    Decode {
        /// The route, without host.
        route: String,
        /// Why the body was not understood.
        message: String,
    },
}

fn status_text(status: Option<&u16>) -> String {
    status.map_or_else(|| "no answer".to_owned(), |status| format!("HTTP {status}"))
}

impl GitHubError {
    /// Whether retrying later can help: yes for network errors, 5xx, 403/429 rate limits, 401
    /// (a JWT refused for clock skew, a key rotated at GitHub before the key file) and
    /// unreadable answers (a proxy's error page); no for other 4xx (404 gone, 410, 422 invalid,
    /// 403 forbidden) and unusable setup.
    pub fn is_transient(&self) -> bool {
        match self {
            GitHubError::Setup(_) => false,
            GitHubError::Decode { .. } => true,
            GitHubError::Request {
                status,
                retry_after,
                ..
            } => match status {
                None | Some(401 | 500..=599) => true,
                // Only rate-limited answers carry a wait (see `rate_limit_wait`).
                Some(403 | 429) => retry_after.is_some(),
                Some(_) => false,
            },
        }
    }

    /// How long GitHub asks us to wait before the next request: its `retry-after` header, else
    /// the time until `x-ratelimit-reset` when `x-ratelimit-remaining` is 0 (at least 1 s), else
    /// 60 s for a 403/429 rate limit that names no time.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            GitHubError::Request { retry_after, .. } => *retry_after,
            _ => None,
        }
    }

    /// The HTTP status GitHub answered with, if it answered with an error.
    pub fn status(&self) -> Option<u16> {
        match self {
            GitHubError::Request { status, .. } => *status,
            _ => None,
        }
    }
}

/// A token that can read one repository's contents and nothing else, for one scan.
#[derive(Clone, PartialEq, Eq)]
pub struct ScanToken {
    /// The installation access token.
    pub token: String,
    /// When GitHub stops accepting it (RFC 3339, `YYYY-MM-DDTHH:MM:SSZ`).
    pub expires_at: String,
}

impl fmt::Debug for ScanToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ScanToken")
            .field("token", &"<redacted>")
            .field("expires_at", &self.expires_at)
            .finish()
    }
}

/// The paths a pull request changes.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ChangedFiles {
    /// Repository-relative paths, including the old path of each renamed file.
    pub paths: Vec<String>,
    /// False when GitHub's cap of 3000 listed files was reached and more may exist.
    pub complete: bool,
}

/// A check run as GitHub knows it.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
pub struct CheckRunRef {
    /// GitHub's id of the run.
    pub id: i64,
    /// `queued`, `in_progress` or `completed` (GitHub may add others).
    pub status: String,
    /// The conclusion once completed (`success`, `failure`, ...).
    #[serde(default)]
    pub conclusion: Option<String>,
}

/// Status of a check run, as the Checks API names it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum CheckStatus {
    /// Created, not started.
    Queued,
    /// Running.
    InProgress,
    /// Done; a conclusion is required.
    Completed,
}

/// Conclusion of a completed check run, as the Checks API names it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum CheckConclusion {
    /// Passed.
    Success,
    /// Failed.
    Failure,
    /// Reported without passing or failing.
    Neutral,
    /// Stopped before completion.
    Cancelled,
    /// Ran out of time.
    TimedOut,
    /// Not run.
    Skipped,
    /// Waiting for a person; `details_url` says what to do.
    ActionRequired,
}

impl From<Conclusion> for CheckConclusion {
    fn from(conclusion: Conclusion) -> Self {
        match conclusion {
            Conclusion::Success => CheckConclusion::Success,
            Conclusion::Failure => CheckConclusion::Failure,
            Conclusion::Neutral => CheckConclusion::Neutral,
            Conclusion::Cancelled => CheckConclusion::Cancelled,
            Conclusion::TimedOut => CheckConclusion::TimedOut,
            Conclusion::Skipped => CheckConclusion::Skipped,
            Conclusion::ActionRequired => CheckConclusion::ActionRequired,
        }
    }
}

/// The `output` of a check run: build it with [`CheckOutput::new`], which keeps it within
/// GitHub's limits.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct CheckOutput {
    /// Title, at most 255 characters.
    pub title: String,
    /// Markdown summary, at most 65,535 characters.
    pub summary: String,
    /// Markdown details, at most 65,535 characters.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub text: Option<String>,
    /// Annotations, at most 50 per request; GitHub appends them to the run's.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub annotations: Vec<crate::verdict::Annotation>,
}

impl CheckOutput {
    /// An output with this title and summary, each cut to GitHub's limit in characters (the
    /// summary ends with a "(truncated)" note when cut).
    pub fn new(title: impl Into<String>, summary: impl Into<String>) -> CheckOutput {
        CheckOutput {
            title: truncate_chars(title.into(), MAX_TITLE_CHARS, "…"),
            summary: truncate_chars(summary.into(), MAX_OUTPUT_CHARS, TRUNCATED_NOTE),
            text: None,
            annotations: Vec::new(),
        }
    }

    /// The same output with this text, cut to GitHub's limit like the summary.
    #[must_use]
    pub fn with_text(mut self, text: impl Into<String>) -> CheckOutput {
        self.text = Some(truncate_chars(
            text.into(),
            MAX_OUTPUT_CHARS,
            TRUNCATED_NOTE,
        ));
        self
    }
}

/// `text` if it has at most `max` characters, else its start and `note`, `max` characters in all.
fn truncate_chars(mut text: String, max: usize, note: &str) -> String {
    if text.chars().count() <= max {
        return text;
    }
    let keep = max.saturating_sub(note.chars().count());
    let end = text
        .char_indices()
        .nth(keep)
        .map_or(text.len(), |(at, _)| at);
    text.truncate(end);
    text.push_str(note);
    text
}

/// Body of `POST /repos/{owner}/{repo}/check-runs`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct NewCheckRun {
    /// Name of the check (what branch protection requires).
    pub name: String,
    /// The commit checked.
    pub head_sha: String,
    /// Our reference for the run, to find it again.
    pub external_id: String,
    /// Where the details are; GitHub's default is the App's homepage.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub details_url: Option<String>,
    /// Status of the run.
    pub status: CheckStatus,
    /// When it started (RFC 3339).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub started_at: Option<String>,
    /// Conclusion, for a run created completed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub conclusion: Option<CheckConclusion>,
    /// When it completed (RFC 3339).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub completed_at: Option<String>,
    /// Title, summary and text shown on the run.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub output: Option<CheckOutput>,
}

/// Body of `PATCH /repos/{owner}/{repo}/check-runs/{id}`: only the fields set are sent.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct CheckRunUpdate {
    /// New status.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status: Option<CheckStatus>,
    /// When it started (RFC 3339).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub started_at: Option<String>,
    /// Conclusion; GitHub then sets the status to completed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub conclusion: Option<CheckConclusion>,
    /// When it completed (RFC 3339).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub completed_at: Option<String>,
    /// Where the details are.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub details_url: Option<String>,
    /// Title, summary and text shown on the run (GitHub needs title and summary each time).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub output: Option<CheckOutput>,
}

/// Body of `POST /app/installations/{id}/access_tokens` for a scan.
#[derive(Serialize)]
struct ScanTokenRequest<'a> {
    repositories: [&'a str; 1],
    permissions: ContentsRead,
}

#[derive(Serialize)]
struct ContentsRead {
    contents: &'static str,
}

/// The part of GitHub's access token answer we keep.
#[derive(Deserialize)]
struct TokenAnswer {
    token: String,
    expires_at: String,
}

/// One entry of `GET /repos/{owner}/{repo}/pulls/{number}/files`.
#[derive(Deserialize)]
struct FileAnswer {
    filename: String,
    #[serde(default)]
    previous_filename: Option<String>,
}

/// `GET /repos/{owner}/{repo}/commits/{sha}/check-runs`.
#[derive(Deserialize)]
struct CheckRunsAnswer {
    #[serde(default)]
    check_runs: Vec<CheckRunAnswer>,
}

/// Body of `POST /repos/{owner}/{repo}/code-scanning/sarifs`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct SarifUpload {
    /// The commit analysed.
    pub commit_sha: String,
    /// The ref (`refs/pull/<n>/head`).
    #[serde(rename = "ref")]
    pub git_ref: String,
    /// The SARIF report, gzip-compressed and base64-encoded.
    pub sarif: String,
    /// Which tool, as code scanning shows it.
    pub tool_name: String,
}

/// What GitHub holds of one check run (`GET /repos/{owner}/{repo}/check-runs/{id}`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CheckRunState {
    /// `queued`, `in_progress` or `completed`.
    pub status: String,
    /// The conclusion once completed.
    pub conclusion: Option<String>,
    /// How many annotations the run holds.
    pub annotations_count: usize,
}

#[derive(Deserialize)]
struct CheckRunFull {
    status: String,
    #[serde(default)]
    conclusion: Option<String>,
    #[serde(default)]
    output: Option<CheckRunFullOutput>,
}

#[derive(Deserialize)]
struct CheckRunFullOutput {
    #[serde(default)]
    annotations_count: usize,
}

/// One run of [`CheckRunsAnswer`].
#[derive(Deserialize)]
struct CheckRunAnswer {
    id: i64,
    status: String,
    #[serde(default)]
    conclusion: Option<String>,
    #[serde(default)]
    external_id: Option<String>,
}

/// The lowest `x-ratelimit-remaining` whose window has not ended, and the latest one seen.
#[derive(Clone, Copy, Debug)]
struct RateLimitSeen {
    lowest: u64,
    /// When `lowest`'s window ends (Unix seconds).
    lowest_reset: u64,
    latest: u64,
}

impl RateLimitSeen {
    fn observe(seen: Option<RateLimitSeen>, remaining: u64, reset: u64, now: u64) -> Self {
        match seen {
            Some(seen) if now < seen.lowest_reset && seen.lowest < remaining => RateLimitSeen {
                latest: remaining,
                ..seen
            },
            _ => RateLimitSeen {
                lowest: remaining,
                lowest_reset: reset,
                latest: remaining,
            },
        }
    }

    fn remaining(self, now: u64) -> u64 {
        if now < self.lowest_reset {
            self.lowest
        } else {
            self.latest
        }
    }
}

/// The HTTP methods this client uses.
#[derive(Clone, Copy)]
enum Verb {
    Get,
    Post,
    Patch,
}

/// GitHub App client for the operator.
pub struct GitHub {
    app: RwLock<Octocrab>,
    app_id: u64,
    api_url: String,
    /// Shared, not cloned: cloning an `Octocrab` copies its cached token, so a clone's token
    /// would be minted again by every call.
    installations: Mutex<HashMap<i64, Arc<Octocrab>>>,
    rate_limit: Mutex<Option<RateLimitSeen>>,
    /// No call leaves before this instant: GitHub asked to wait (`retry-after`, an exhausted
    /// limit, a secondary limit). One gate for the App: continuing under a limit risks the
    /// integration being banned, and another installation's calls would add to it.
    not_before: Mutex<Option<std::time::Instant>>,
}

impl fmt::Debug for GitHub {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GitHub")
            .field("app_id", &self.app_id)
            .field("api_url", &self.api_url)
            .finish_non_exhaustive()
    }
}

fn app_client(app_id: u64, private_key_pem: &[u8], api_url: &str) -> Result<Octocrab, GitHubError> {
    let key = octocrab::auth::EncodingKey::from_rsa_pem(private_key_pem)
        .map_err(|e| GitHubError::Setup(format!("private key: {e}")))?;
    Octocrab::builder()
        .app(AppId(app_id), key)
        .base_uri(api_url)
        .map_err(|e| GitHubError::Setup(format!("api url {api_url:?}: {e}")))?
        // No retries inside the client: octocrab's default retries 5xx and timeouts at once,
        // POSTs included (a second check run), and ignores 403 rate limits. The controller
        // requeues with backoff, after looking for a run a lost answer may have created.
        .add_retry_config(octocrab::service::middleware::retry::RetryConfig::None)
        // A half-open connection fails the call instead of holding a reconcile forever.
        .set_connect_timeout(Some(Duration::from_secs(5)))
        .set_read_timeout(Some(Duration::from_secs(15)))
        .set_write_timeout(Some(Duration::from_secs(15)))
        .build()
        .map_err(|e| GitHubError::Setup(e.to_string()))
}

impl GitHub {
    /// An App client from the App id and its private key (PEM), against `api_url`. Call it
    /// inside a Tokio runtime: octocrab starts its connection worker there.
    pub fn new(app_id: u64, private_key_pem: &[u8], api_url: &str) -> Result<GitHub, GitHubError> {
        Ok(GitHub {
            app: RwLock::new(app_client(app_id, private_key_pem, api_url)?),
            app_id,
            api_url: api_url.to_owned(),
            installations: Mutex::new(HashMap::new()),
            rate_limit: Mutex::new(None),
            not_before: Mutex::new(None),
        })
    }

    /// Replaces the App's private key (a rotated key file); installation tokens made with the
    /// old key are dropped. On error the old key stays in use. Inside a Tokio runtime, like
    /// [`GitHub::new`].
    pub fn reload_key(&self, private_key_pem: &[u8]) -> Result<(), GitHubError> {
        let app = app_client(self.app_id, private_key_pem, &self.api_url)?;
        *self.app.write().unwrap_or_else(PoisonError::into_inner) = app;
        self.installations
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clear();
        Ok(())
    }

    /// The lowest `x-ratelimit-remaining` seen on any answer whose rate-limit window has not
    /// ended (else the latest seen); `None` before any answer carried one.
    pub fn rate_limit_remaining(&self) -> Option<u64> {
        let now = unix_now();
        self.rate_limit
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .map(|seen| seen.remaining(now))
    }

    /// A token for one scan: it can read the contents of `repository` (a name within the
    /// installation's account) and nothing else, and expires after an hour. Minted with the App
    /// JWT, never cached. Check the installation with [`GitHub::repository_installation`] first:
    /// the same name in another installation is another repository.
    pub async fn scan_token(
        &self,
        installation_id: i64,
        repository: &str,
    ) -> Result<ScanToken, GitHubError> {
        let installation = installation_number(installation_id)?;
        let route = format!("/app/installations/{installation}/access_tokens");
        let body = ScanTokenRequest {
            repositories: [repository],
            permissions: ContentsRead { contents: "read" },
        };
        let app = self
            .app
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        let answer: TokenAnswer = self.call(&app, Verb::Post, &route, Some(&body)).await?;
        Ok(ScanToken {
            token: answer.token,
            expires_at: answer.expires_at,
        })
    }

    /// The id of the App's installation on `owner/repo` (`GET /repos/{owner}/{repo}/installation`
    /// with the App JWT): what a ScanRequest's own `installationId` is checked against before a
    /// token is minted for it, since a token is scoped by repository *name* within an
    /// installation's account.
    pub async fn repository_installation(
        &self,
        owner: &str,
        repo: &str,
    ) -> Result<i64, GitHubError> {
        #[derive(Deserialize)]
        struct InstallationAnswer {
            id: i64,
        }
        let route = format!("/repos/{}/{}/installation", encode(owner), encode(repo));
        let app = self
            .app
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        let answer: InstallationAnswer = self.call(&app, Verb::Get, &route, None::<&()>).await?;
        Ok(answer.id)
    }

    /// The paths a pull request changes (renamed files under both names), GitHub's first 3000
    /// at most: `complete` is false when that cap was reached.
    pub async fn changed_files(
        &self,
        installation_id: i64,
        owner: &str,
        repo: &str,
        number: i64,
    ) -> Result<ChangedFiles, GitHubError> {
        let client = self.installation(installation_id)?;
        let base = format!(
            "/repos/{}/{}/pulls/{number}/files?per_page={PER_PAGE}",
            encode(owner),
            encode(repo)
        );
        let mut paths = Vec::new();
        for page in 1..=MAX_FILE_PAGES {
            let route = format!("{base}&page={page}");
            let files: Vec<FileAnswer> = self.call(&client, Verb::Get, &route, None::<&()>).await?;
            let full = files.len() >= PER_PAGE;
            for file in files {
                paths.push(file.filename);
                paths.extend(file.previous_filename);
            }
            if !full {
                return Ok(ChangedFiles {
                    paths,
                    complete: true,
                });
            }
        }
        Ok(ChangedFiles {
            paths,
            complete: false,
        })
    }

    /// The check runs of this App named `name` on `head_sha` whose `external_id` is exactly
    /// `external_id` (the first 1000 runs of that name are searched), oldest first. Asked before
    /// creating a run whose creation may have succeeded unrecorded, so a POST is never repeated
    /// blindly, and when concluding, so a run a slow POST created after that look is concluded
    /// too.
    pub async fn find_check_runs(
        &self,
        installation_id: i64,
        owner: &str,
        repo: &str,
        head_sha: &str,
        name: &str,
        external_id: &str,
    ) -> Result<Vec<CheckRunRef>, GitHubError> {
        let client = self.installation(installation_id)?;
        let base = format!(
            "/repos/{}/{}/commits/{}/check-runs?check_name={}&app_id={}&filter=all&per_page={PER_PAGE}",
            encode(owner),
            encode(repo),
            encode(head_sha),
            encode(name),
            self.app_id,
        );
        let mut found = Vec::new();
        for page in 1..=MAX_CHECK_RUN_PAGES {
            let route = format!("{base}&page={page}");
            let answer: CheckRunsAnswer =
                self.call(&client, Verb::Get, &route, None::<&()>).await?;
            let full = answer.check_runs.len() >= PER_PAGE;
            found.extend(
                answer
                    .check_runs
                    .into_iter()
                    .filter(|run| run.external_id.as_deref() == Some(external_id))
                    .map(|run| CheckRunRef {
                        id: run.id,
                        status: run.status,
                        conclusion: run.conclusion,
                    }),
            );
            if !full {
                break;
            }
        }
        found.sort_by_key(|run| run.id);
        Ok(found)
    }

    /// Creates a check run (`POST /repos/{owner}/{repo}/check-runs`), sent exactly once.
    pub async fn create_check_run(
        &self,
        installation_id: i64,
        owner: &str,
        repo: &str,
        run: &NewCheckRun,
    ) -> Result<CheckRunRef, GitHubError> {
        let client = self.installation(installation_id)?;
        let route = format!("/repos/{}/{}/check-runs", encode(owner), encode(repo));
        self.call(&client, Verb::Post, &route, Some(run)).await
    }

    /// Updates a check run (`PATCH /repos/{owner}/{repo}/check-runs/{id}`) with the fields set.
    pub async fn update_check_run(
        &self,
        installation_id: i64,
        owner: &str,
        repo: &str,
        id: i64,
        update: &CheckRunUpdate,
    ) -> Result<(), GitHubError> {
        let client = self.installation(installation_id)?;
        let route = format!("/repos/{}/{}/check-runs/{id}", encode(owner), encode(repo));
        // GitHub answers with the run; nothing in it is needed.
        self.call_text(&client, Verb::Patch, &route, Some(update))
            .await
            .map(drop)
    }

    /// Uploads a SARIF report (gzip-compressed, base64) to code scanning for `commit_sha` on
    /// `git_ref` (`refs/pull/<n>/head`: the alerts show on the pull request). Returns GitHub's id
    /// of the upload. Needs the App's `security_events: write`.
    pub async fn upload_sarif(
        &self,
        installation_id: i64,
        owner: &str,
        repo: &str,
        upload: &SarifUpload,
    ) -> Result<String, GitHubError> {
        #[derive(Deserialize)]
        struct Receipt {
            #[serde(default)]
            id: Option<String>,
        }
        let client = self.installation(installation_id)?;
        let route = format!(
            "/repos/{}/{}/code-scanning/sarifs",
            encode(owner),
            encode(repo)
        );
        let receipt: Receipt = self.call(&client, Verb::Post, &route, Some(upload)).await?;
        Ok(receipt.id.unwrap_or_default())
    }

    /// What GitHub holds of a check run: its status, conclusion and number of annotations (so
    /// a result reported again sends only the annotations GitHub does not have yet).
    pub async fn get_check_run(
        &self,
        installation_id: i64,
        owner: &str,
        repo: &str,
        id: i64,
    ) -> Result<CheckRunState, GitHubError> {
        let client = self.installation(installation_id)?;
        let route = format!("/repos/{}/{}/check-runs/{id}", encode(owner), encode(repo));
        let run: CheckRunFull = self.call(&client, Verb::Get, &route, None::<&()>).await?;
        Ok(CheckRunState {
            status: run.status,
            conclusion: run.conclusion,
            annotations_count: run.output.map_or(0, |o| o.annotations_count),
        })
    }

    /// The installation's client, made once: octocrab mints its token on first use and again
    /// before it expires.
    fn installation(&self, id: i64) -> Result<Arc<Octocrab>, GitHubError> {
        let mut cache = self
            .installations
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some(client) = cache.get(&id) {
            return Ok(Arc::clone(client));
        }
        let client = Arc::new(
            self.app
                .read()
                .unwrap_or_else(PoisonError::into_inner)
                .installation(InstallationId(installation_number(id)?))
                .map_err(|e| GitHubError::Setup(e.to_string()))?,
        );
        cache.insert(id, Arc::clone(&client));
        Ok(client)
    }

    /// One request and its JSON answer decoded.
    async fn call<B, R>(
        &self,
        client: &Octocrab,
        verb: Verb,
        route: &str,
        body: Option<&B>,
    ) -> Result<R, GitHubError>
    where
        B: Serialize + ?Sized,
        R: DeserializeOwned,
    {
        let text = self.call_text(client, verb, route, body).await?;
        serde_json::from_str(&text).map_err(|e| GitHubError::Decode {
            route: route.to_owned(),
            message: e.to_string(),
        })
    }

    /// Holds every call back for `wait`, at most 15 minutes (a skewed clock or an odd header
    /// must not silence the operator for hours).
    fn hold_for(&self, wait: Duration) {
        let until = std::time::Instant::now() + wait.min(Duration::from_secs(900));
        let mut gate = self
            .not_before
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if gate.is_none_or(|current| current < until) {
            *gate = Some(until);
        }
    }

    /// One request, its rate-limit headers noted, its answer's body if it is a success.
    async fn call_text<B>(
        &self,
        client: &Octocrab,
        verb: Verb,
        route: &str,
        body: Option<&B>,
    ) -> Result<String, GitHubError>
    where
        B: Serialize + ?Sized,
    {
        let held = self
            .not_before
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .and_then(|until| until.checked_duration_since(std::time::Instant::now()));
        if let Some(wait) = held {
            return Err(GitHubError::Request {
                route: route.to_owned(),
                status: None,
                retry_after: Some(wait.max(Duration::from_secs(1))),
                message: "held back: GitHub asked to wait".to_owned(),
            });
        }
        let sent = match verb {
            Verb::Get => client._get(route).await,
            Verb::Post => client._post(route, body).await,
            Verb::Patch => client._patch(route, body).await,
        };
        let response = sent.map_err(|e| request_error(route, e))?;
        let number = |name: &str| header_number(response.headers().get(name)?.to_str().ok()?);
        if let Some(remaining) = number("x-ratelimit-remaining") {
            let now = unix_now();
            let reset = number("x-ratelimit-reset").unwrap_or(now);
            let mut seen = self
                .rate_limit
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            *seen = Some(RateLimitSeen::observe(*seen, remaining, reset, now));
            if remaining == 0 {
                self.hold_for(Duration::from_secs(reset.saturating_sub(now).max(1)));
            }
        }
        let response = octocrab::map_github_error(response).await.map_err(|e| {
            let error = request_error(route, e);
            if matches!(error.status(), Some(403 | 429))
                && let Some(wait) = error.retry_after()
            {
                self.hold_for(wait);
            }
            error
        })?;
        client
            .body_to_string(response)
            .await
            .map_err(|e| request_error(route, e))
    }
}

/// An installation id as octocrab takes it.
fn installation_number(id: i64) -> Result<u64, GitHubError> {
    u64::try_from(id).map_err(|_| GitHubError::Setup(format!("invalid installation id {id}")))
}

/// Our error for octocrab's: its GitHub errors carry the status and the headers that say how
/// long to wait.
fn request_error(route: &str, error: octocrab::Error) -> GitHubError {
    let route = route.to_owned();
    match error {
        octocrab::Error::GitHub { source, .. } => {
            let status = source.status_code.as_u16();
            let number =
                |name: &str| header_number(source.headers.as_ref()?.get(name)?.to_str().ok()?);
            let retry_after = rate_limit_wait(
                status,
                &source.message,
                RateLimitHeaders {
                    retry_after: number("retry-after"),
                    remaining: number("x-ratelimit-remaining"),
                    reset: number("x-ratelimit-reset"),
                },
                unix_now(),
            );
            if let Some(wait) = retry_after {
                tracing::debug!(
                    route,
                    status,
                    wait_s = wait.as_secs(),
                    "GitHub asks to wait"
                );
            }
            GitHubError::Request {
                route,
                status: Some(status),
                retry_after,
                message: source.message,
            }
        }
        octocrab::Error::Hyper { .. } | octocrab::Error::Service { .. } => GitHubError::Request {
            route,
            status: None,
            retry_after: None,
            message: error.to_string(),
        },
        octocrab::Error::Json { .. }
        | octocrab::Error::Serde { .. }
        | octocrab::Error::InvalidUtf8 { .. } => GitHubError::Decode {
            route,
            message: error.to_string(),
        },
        other => GitHubError::Setup(format!("{route}: {other}")),
    }
}

/// The rate-limit headers of an error answer, as numbers.
#[derive(Clone, Copy, Debug, Default)]
struct RateLimitHeaders {
    retry_after: Option<u64>,
    remaining: Option<u64>,
    reset: Option<u64>,
}

/// How long to wait before asking again, for a 403/429 rate limit or a 5xx with `retry-after`;
/// `None` for anything else, so a 403 that is a refusal (a missing permission) stays permanent.
fn rate_limit_wait(
    status: u16,
    message: &str,
    headers: RateLimitHeaders,
    now: u64,
) -> Option<Duration> {
    let named = headers.retry_after.map(|s| Duration::from_secs(s.max(1)));
    let until_reset = match (headers.remaining, headers.reset) {
        (Some(0), Some(reset)) => Some(Duration::from_secs(reset.saturating_sub(now).max(1))),
        _ => None,
    };
    match status {
        403 | 429 => {
            let message = message.to_ascii_lowercase();
            let limited = status == 429
                || named.is_some()
                || headers.remaining == Some(0)
                || message.contains("rate limit")
                || message.contains("abuse");
            limited.then(|| named.or(until_reset).unwrap_or(SECONDARY_LIMIT_WAIT))
        }
        500..=599 => named,
        _ => None,
    }
}

fn header_number(value: &str) -> Option<u64> {
    value.trim().parse().ok()
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |since| since.as_secs())
}

/// Percent-encodes everything but RFC 3986's unreserved characters, for a path segment or a
/// query value.
pub(crate) fn encode(text: &str) -> String {
    let mut encoded = String::with_capacity(text.len());
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'.' | b'_' | b'~') {
            encoded.push(char::from(byte));
        } else {
            // Writing to a String cannot fail.
            let _ = write!(encoded, "%{byte:02X}");
        }
    }
    encoded
}

#[cfg(test)]
mod tests {
    use super::*;
    use wiremock::matchers::{body_json, method, path, query_param};
    use wiremock::{Mock, MockServer, Request, ResponseTemplate};

    const APP_ID: u64 = 4242;
    const INSTALLATION: i64 = 1;
    const KEY: &[u8] = include_bytes!("../../tests/fixtures/github-app/test-app-key.pem");
    /// base64url of `{"typ":"JWT","alg":"RS256"}`, the header octocrab signs.
    const JWT_HEADER: &str = "eyJ0eXAiOiJKV1QiLCJhbGciOiJSUzI1NiJ9";

    /// A mock GitHub that mints `ghs_installation` for [`INSTALLATION`], and a client for it.
    async fn github() -> (MockServer, GitHub) {
        let server = MockServer::start().await;
        Mock::given(method("POST"))
            .and(path(format!(
                "/app/installations/{INSTALLATION}/access_tokens"
            )))
            .respond_with(ResponseTemplate::new(201).set_body_json(serde_json::json!({
                "token": "ghs_installation",
                "expires_at": "2099-01-01T00:00:00Z",
                "permissions": {"checks": "write", "pull_requests": "read"},
                "repository_selection": "all",
            })))
            .mount(&server)
            .await;
        let github = GitHub::new(APP_ID, KEY, &server.uri()).unwrap();
        (server, github)
    }

    async fn requests_to(server: &MockServer, verb: &str, route: &str) -> Vec<Request> {
        server
            .received_requests()
            .await
            .unwrap()
            .into_iter()
            .filter(|r| r.method.as_str() == verb && r.url.path() == route)
            .collect()
    }

    fn authorization(request: &Request) -> String {
        request.headers["authorization"]
            .to_str()
            .unwrap()
            .to_owned()
    }

    fn base64url(text: &str) -> Vec<u8> {
        let mut out = Vec::new();
        let (mut bits, mut held) = (0u32, 0u32);
        for c in text.bytes() {
            let value = match c {
                b'A'..=b'Z' => c - b'A',
                b'a'..=b'z' => c - b'a' + 26,
                b'0'..=b'9' => c - b'0' + 52,
                b'-' => 62,
                b'_' => 63,
                _ => panic!("not base64url: {c}"),
            };
            bits = (bits << 6) | u32::from(value);
            held += 6;
            if held >= 8 {
                held -= 8;
                out.push(u8::try_from((bits >> held) & 0xff).unwrap());
                bits &= (1 << held) - 1;
            }
        }
        out
    }

    fn new_run(external_id: &str) -> NewCheckRun {
        NewCheckRun {
            name: "gatehouse / semgrep".to_owned(),
            head_sha: "0123456789abcdef0123456789abcdef01234567".to_owned(),
            external_id: external_id.to_owned(),
            details_url: None,
            status: CheckStatus::InProgress,
            started_at: Some("2026-11-22T10:00:00Z".to_owned()),
            conclusion: None,
            completed_at: None,
            output: None,
        }
    }

    fn run_json(id: i64, external_id: &str) -> serde_json::Value {
        serde_json::json!({
            "id": id,
            "name": "gatehouse / semgrep",
            "external_id": external_id,
            "status": "completed",
            "conclusion": "success",
        })
    }

    /// A create answered with `response`, and the error it gives.
    async fn create_answered(response: ResponseTemplate) -> GitHubError {
        let (server, github) = github().await;
        Mock::given(method("POST"))
            .and(path("/repos/o/r/check-runs"))
            .respond_with(response)
            .expect(1)
            .mount(&server)
            .await;
        let error = github
            .create_check_run(INSTALLATION, "o", "r", &new_run("scan-1"))
            .await
            .unwrap_err();
        server.verify().await;
        error
    }

    #[tokio::test]
    async fn scan_token_asks_with_the_app_jwt_for_contents_read_on_one_repository_only() {
        let (server, github) = github().await;
        Mock::given(method("POST"))
            .and(path("/app/installations/77/access_tokens"))
            .and(body_json(serde_json::json!({
                "repositories": ["widgets"],
                "permissions": {"contents": "read"},
            })))
            .respond_with(ResponseTemplate::new(201).set_body_json(serde_json::json!({
                "token": "ghs_scan_secret",
                "expires_at": "2026-11-22T11:00:00Z",
                "permissions": {"contents": "read"},
                "repository_selection": "selected",
            })))
            .expect(1)
            .mount(&server)
            .await;

        let token = github.scan_token(77, "widgets").await.unwrap();

        assert_eq!(token.token, "ghs_scan_secret");
        assert_eq!(token.expires_at, "2026-11-22T11:00:00Z");
        let shown = format!("{token:?}");
        assert!(!shown.contains("ghs_scan_secret"), "{shown}");
        assert!(shown.contains("2026-11-22T11:00:00Z"), "{shown}");
        let requests = requests_to(&server, "POST", "/app/installations/77/access_tokens").await;
        let auth = authorization(&requests[0]);
        let jwt: Vec<&str> = auth.strip_prefix("Bearer ").unwrap().split('.').collect();
        assert_eq!(jwt.len(), 3, "{auth}");
        assert_eq!(jwt[0], JWT_HEADER);
        let claims: serde_json::Value = serde_json::from_slice(&base64url(jwt[1])).unwrap();
        assert_eq!(claims["iss"], APP_ID);
    }

    #[tokio::test]
    async fn create_check_run_sends_the_run_and_mints_one_installation_token_for_two_calls() {
        let (server, github) = github().await;
        Mock::given(method("POST"))
            .and(path("/repos/o/r/check-runs"))
            .and(body_json(serde_json::json!({
                "name": "gatehouse / semgrep",
                "head_sha": "0123456789abcdef0123456789abcdef01234567",
                "external_id": "scan-1",
                "status": "in_progress",
                "started_at": "2026-11-22T10:00:00Z",
            })))
            .respond_with(ResponseTemplate::new(201).set_body_json(serde_json::json!({
                "id": 4_000_000_001_i64,
                "status": "in_progress",
                "conclusion": null,
                "external_id": "scan-1",
            })))
            .expect(2)
            .mount(&server)
            .await;

        for _ in 0..2 {
            let run = github
                .create_check_run(INSTALLATION, "o", "r", &new_run("scan-1"))
                .await
                .unwrap();
            assert_eq!(
                run,
                CheckRunRef {
                    id: 4_000_000_001,
                    status: "in_progress".to_owned(),
                    conclusion: None,
                }
            );
        }

        server.verify().await;
        let mints = requests_to(&server, "POST", "/app/installations/1/access_tokens").await;
        assert_eq!(mints.len(), 1);
        for request in requests_to(&server, "POST", "/repos/o/r/check-runs").await {
            assert_eq!(authorization(&request), "Bearer ghs_installation");
        }
    }

    #[tokio::test]
    async fn find_check_runs_follows_pages_to_the_runs_of_this_app_whose_external_id_matches() {
        let (server, github) = github().await;
        let route = "/repos/o/r/commits/0123abc/check-runs";
        let first: Vec<_> = (0..100)
            .map(|i| run_json(i, &format!("other-{i}")))
            .collect();
        let mut second = vec![run_json(200, "scan-10"), run_json(201, "scan-1")];
        second[1]["status"] = "in_progress".into();
        second[1]["conclusion"] = serde_json::Value::Null;
        for (page, runs) in [("1", first), ("2", second)] {
            Mock::given(method("GET"))
                .and(path(route))
                .and(query_param("check_name", "gatehouse / semgrep"))
                .and(query_param("app_id", APP_ID.to_string()))
                .and(query_param("filter", "all"))
                .and(query_param("per_page", "100"))
                .and(query_param("page", page))
                .respond_with(ResponseTemplate::new(200).set_body_json(serde_json::json!({
                    "total_count": 102,
                    "check_runs": runs,
                })))
                .mount(&server)
                .await;
        }

        let found = github
            .find_check_runs(
                INSTALLATION,
                "o",
                "r",
                "0123abc",
                "gatehouse / semgrep",
                "scan-1",
            )
            .await
            .unwrap();
        assert_eq!(
            found,
            [CheckRunRef {
                id: 201,
                status: "in_progress".to_owned(),
                conclusion: None,
            }]
        );

        let missing = github
            .find_check_runs(
                INSTALLATION,
                "o",
                "r",
                "0123abc",
                "gatehouse / semgrep",
                "scan-",
            )
            .await
            .unwrap();
        assert_eq!(missing, []);
        // Two pages each time: the short second page ends the search.
        assert_eq!(requests_to(&server, "GET", route).await.len(), 4);
    }

    #[tokio::test]
    async fn update_check_run_sends_only_the_fields_that_are_set() {
        let (server, github) = github().await;
        let expected = serde_json::json!({
            "conclusion": "failure",
            "completed_at": "2026-11-22T10:05:00Z",
            "output": {"title": "2 findings", "summary": "semgrep found 2 issues"},
        });
        Mock::given(method("PATCH"))
            .and(path("/repos/o/r/check-runs/42"))
            .and(body_json(&expected))
            .respond_with(ResponseTemplate::new(200).set_body_json(run_json(42, "scan-1")))
            .expect(1)
            .mount(&server)
            .await;

        let update = CheckRunUpdate {
            conclusion: Some(CheckConclusion::Failure),
            completed_at: Some("2026-11-22T10:05:00Z".to_owned()),
            output: Some(CheckOutput::new("2 findings", "semgrep found 2 issues")),
            ..CheckRunUpdate::default()
        };
        github
            .update_check_run(INSTALLATION, "o", "r", 42, &update)
            .await
            .unwrap();

        server.verify().await;
        let sent = &requests_to(&server, "PATCH", "/repos/o/r/check-runs/42").await[0];
        assert!(!String::from_utf8_lossy(&sent.body).contains("null"));
    }

    #[tokio::test]
    async fn changed_files_follows_pages_until_a_short_page_and_lists_old_names_of_renames() {
        let (server, github) = github().await;
        let route = "/repos/o/r/pulls/7/files";
        let first: Vec<_> = (0..100)
            .map(|i| serde_json::json!({"filename": format!("src/f{i}.rs"), "status": "modified"}))
            .collect();
        let second = serde_json::json!([
            {"filename": "docs/new.md", "status": "renamed", "previous_filename": "docs/old.md"},
            {"filename": "Cargo.toml", "status": "modified"},
        ]);
        for (page, files) in [("1", serde_json::json!(first)), ("2", second)] {
            Mock::given(method("GET"))
                .and(path(route))
                .and(query_param("per_page", "100"))
                .and(query_param("page", page))
                .respond_with(ResponseTemplate::new(200).set_body_json(files))
                .expect(1)
                .mount(&server)
                .await;
        }

        let changed = github
            .changed_files(INSTALLATION, "o", "r", 7)
            .await
            .unwrap();

        server.verify().await;
        assert!(changed.complete);
        assert_eq!(changed.paths.len(), 103);
        assert_eq!(changed.paths[0], "src/f0.rs");
        assert_eq!(
            changed.paths[100..],
            ["docs/new.md", "docs/old.md", "Cargo.toml"]
        );
        assert_eq!(requests_to(&server, "GET", route).await.len(), 2);
    }

    #[tokio::test]
    async fn changed_files_is_incomplete_when_githubs_3000_file_cap_is_reached() {
        let (server, github) = github().await;
        let page: Vec<_> = (0..100)
            .map(|i| serde_json::json!({"filename": format!("f{i}"), "status": "added"}))
            .collect();
        Mock::given(method("GET"))
            .and(path("/repos/o/r/pulls/7/files"))
            .respond_with(ResponseTemplate::new(200).set_body_json(page))
            .expect(30)
            .mount(&server)
            .await;

        let changed = github
            .changed_files(INSTALLATION, "o", "r", 7)
            .await
            .unwrap();

        server.verify().await;
        assert!(!changed.complete);
        assert_eq!(changed.paths.len(), 3000);
    }

    #[tokio::test]
    async fn a_403_with_retry_after_is_transient_and_waits_that_long() {
        let error = create_answered(
            ResponseTemplate::new(403)
                .insert_header("retry-after", "7")
                .set_body_json(
                    serde_json::json!({"message": "You have exceeded a secondary rate limit."}),
                ),
        )
        .await;
        assert!(error.is_transient());
        assert_eq!(error.retry_after(), Some(Duration::from_secs(7)));
        assert_eq!(error.status(), Some(403));
    }

    #[tokio::test]
    async fn after_a_secondary_limit_no_call_leaves_until_the_wait_is_over() {
        let (server, github) = github().await;
        Mock::given(method("POST"))
            .and(path("/repos/o/r/check-runs"))
            .respond_with(
                ResponseTemplate::new(403)
                    .insert_header("retry-after", "30")
                    .set_body_json(serde_json::json!({"message": "secondary rate limit"})),
            )
            .expect(1)
            .mount(&server)
            .await;
        Mock::given(method("PATCH"))
            .and(path("/repos/o/r/check-runs/5"))
            .respond_with(ResponseTemplate::new(200).set_body_json(serde_json::json!({})))
            .expect(0)
            .mount(&server)
            .await;
        let refused = github
            .create_check_run(INSTALLATION, "o", "r", &new_run("a"))
            .await
            .unwrap_err();
        assert_eq!(refused.retry_after(), Some(Duration::from_secs(30)));
        // Another call, even to another endpoint, waits out the same limit without leaving.
        let held = github
            .update_check_run(INSTALLATION, "o", "r", 5, &CheckRunUpdate::default())
            .await
            .unwrap_err();
        assert!(held.is_transient());
        let wait = held.retry_after().unwrap();
        assert!(
            (Duration::from_secs(28)..=Duration::from_secs(30)).contains(&wait),
            "{wait:?}"
        );
        server.verify().await;
    }

    #[tokio::test]
    async fn a_403_with_no_requests_remaining_waits_until_the_reset() {
        let reset = unix_now() + 30;
        let error = create_answered(
            ResponseTemplate::new(403)
                .insert_header("x-ratelimit-remaining", "0")
                .insert_header("x-ratelimit-reset", reset.to_string().as_str())
                .set_body_json(serde_json::json!({"message": "API rate limit exceeded for installation ID 1."})),
        )
        .await;
        assert!(error.is_transient());
        let wait = error.retry_after().unwrap();
        assert!(
            (Duration::from_secs(28)..=Duration::from_secs(30)).contains(&wait),
            "{wait:?}"
        );
    }

    #[tokio::test]
    async fn a_secondary_rate_limit_403_without_headers_waits_one_minute() {
        let error = create_answered(ResponseTemplate::new(403).set_body_json(
            serde_json::json!({"message": "You have exceeded a secondary rate limit. Please wait a few minutes before you try again."}),
        ))
        .await;
        assert!(error.is_transient());
        assert_eq!(error.retry_after(), Some(Duration::from_secs(60)));
    }

    #[tokio::test]
    async fn a_429_without_headers_waits_one_minute() {
        let error = create_answered(ResponseTemplate::new(429)).await;
        assert!(error.is_transient());
        assert_eq!(error.retry_after(), Some(Duration::from_secs(60)));
    }

    #[tokio::test]
    async fn a_403_refusing_a_missing_permission_is_not_transient() {
        let error = create_answered(ResponseTemplate::new(403).set_body_json(
            serde_json::json!({"message": "Resource not accessible by integration"}),
        ))
        .await;
        assert!(!error.is_transient());
        assert_eq!(error.retry_after(), None);
        assert_eq!(error.status(), Some(403));
        assert!(
            error.to_string().contains("Resource not accessible"),
            "{error}"
        );
    }

    #[tokio::test]
    async fn a_post_answered_500_is_sent_once_and_is_transient() {
        // `create_answered` expects exactly one POST.
        let error = create_answered(ResponseTemplate::new(500)).await;
        assert!(error.is_transient());
        assert_eq!(error.status(), Some(500));
        assert_eq!(error.retry_after(), None);
    }

    #[tokio::test]
    async fn a_422_is_not_transient() {
        let error = create_answered(
            ResponseTemplate::new(422)
                .set_body_json(serde_json::json!({"message": "Validation Failed"})),
        )
        .await;
        assert!(!error.is_transient());
        assert_eq!(error.status(), Some(422));
        assert_eq!(error.retry_after(), None);
    }

    #[tokio::test]
    async fn an_unreachable_github_is_transient_with_no_status() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        drop(listener);
        let github = GitHub::new(APP_ID, KEY, &url).unwrap();

        let error = github.scan_token(1, "r").await.unwrap_err();

        assert!(error.is_transient(), "{error:?}");
        assert_eq!(error.status(), None);
    }

    #[tokio::test]
    async fn rate_limit_remaining_is_the_lowest_count_seen_in_the_current_window() {
        let (server, github) = github().await;
        let reset = (unix_now() + 600).to_string();
        for (number, remaining) in [(1, "4000"), (2, "3990"), (3, "4500")] {
            Mock::given(method("GET"))
                .and(path(format!("/repos/o/r/pulls/{number}/files")))
                .respond_with(
                    ResponseTemplate::new(200)
                        .insert_header("x-ratelimit-remaining", remaining)
                        .insert_header("x-ratelimit-reset", reset.as_str())
                        .set_body_json(serde_json::json!([])),
                )
                .mount(&server)
                .await;
        }
        assert_eq!(github.rate_limit_remaining(), None);

        for number in 1..=3 {
            github
                .changed_files(INSTALLATION, "o", "r", number)
                .await
                .unwrap();
        }

        assert_eq!(github.rate_limit_remaining(), Some(3990));
    }

    #[test]
    fn the_window_keeps_its_lowest_count_until_it_resets() {
        let seen = RateLimitSeen::observe(None, 4000, 1000, 10);
        let seen = RateLimitSeen::observe(Some(seen), 3990, 1000, 20);
        let seen = RateLimitSeen::observe(Some(seen), 4500, 1000, 30);
        assert_eq!(seen.remaining(40), 3990);
        // After the reset the latest count is the truth.
        assert_eq!(seen.remaining(1000), 4500);
        let seen = RateLimitSeen::observe(Some(seen), 4999, 4600, 1001);
        assert_eq!(seen.remaining(1002), 4999);
    }

    #[test]
    fn check_output_new_cuts_a_long_summary_by_characters_and_says_so() {
        let summary = "é".repeat(35_000) + &"a".repeat(35_000);
        let output = CheckOutput::new("t".repeat(300), summary).with_text("ü".repeat(70_000));

        assert_eq!(output.summary.chars().count(), 65_535);
        assert!(output.summary.starts_with("éé"));
        assert!(
            output.summary.ends_with("(truncated)"),
            "{}",
            &output.summary[..10]
        );
        assert_eq!(
            output.text.as_ref().map(|t| t.chars().count()),
            Some(65_535)
        );
        assert!(output.text.unwrap().ends_with("(truncated)"));
        assert_eq!(output.title.chars().count(), 255);

        let short = CheckOutput::new("ok", "all good");
        assert_eq!(short.summary, "all good");
        assert_eq!(short.title, "ok");
    }

    #[test]
    fn conclusions_are_sent_under_githubs_names() {
        for conclusion in [
            Conclusion::Success,
            Conclusion::Failure,
            Conclusion::Neutral,
            Conclusion::Cancelled,
            Conclusion::TimedOut,
            Conclusion::Skipped,
            Conclusion::ActionRequired,
        ] {
            assert_eq!(
                serde_json::to_value(CheckConclusion::from(conclusion)).unwrap(),
                conclusion.as_github()
            );
        }
        assert_eq!(
            serde_json::to_value(CheckStatus::InProgress).unwrap(),
            "in_progress"
        );
    }

    #[tokio::test]
    async fn an_unusable_key_is_refused_and_a_reload_keeps_the_old_one() {
        let error = GitHub::new(APP_ID, b"not a key", "http://127.0.0.1:1").unwrap_err();
        assert!(matches!(error, GitHubError::Setup(_)));
        assert!(!error.is_transient());

        let github = GitHub::new(APP_ID, KEY, "http://127.0.0.1:1").unwrap();
        assert!(github.reload_key(b"not a key").is_err());
        assert!(github.reload_key(KEY).is_ok());
        let shown = format!("{github:?}");
        assert!(!shown.contains("PRIVATE"), "{shown}");
    }

    #[test]
    fn names_are_percent_encoded_in_routes() {
        assert_eq!(encode("gatehouse / semgrep"), "gatehouse%20%2F%20semgrep");
        assert_eq!(encode("my-org_1.x~"), "my-org_1.x~");
        assert_eq!(encode("é&"), "%C3%A9%26");
    }
}
