//! The little the ingest role asks of GitHub's REST API: a pull request's current state (for
//! comment commands, re-runs whose payload lacks it, and ordering triggers their times cannot
//! order) and a commenter's permission on a repository. App JWT and installation tokens come from
//! octocrab; installation clients (and so their tokens) are cached per installation, permissions
//! for [`PERMISSION_TTL`].

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use gatehouse_crds::scanpolicy::Permission;
use octocrab::Octocrab;
use octocrab::models::{AppId, InstallationId};
use serde::Deserialize;

use super::payload::PullRequest;

/// A GitHub API call failed.
#[derive(Debug, thiserror::Error)]
pub enum GitHubError {
    /// The App credentials are unusable.
    #[error("failed to set up the GitHub App client: {0}")]
    Setup(String),
    /// The request failed (network, rate limit, 5xx, 404).
    #[error("GitHub request {route} failed: {source}")]
    Request {
        /// The route.
        route: String,
        /// Why.
        source: Box<octocrab::Error>,
    },
}

impl GitHubError {
    /// Whether retrying can help: not for unusable credentials, nor for answers that will not
    /// change (404 gone, 410, 422 invalid); yes for network errors, 5xx, 403/429 rate limits.
    pub fn is_transient(&self) -> bool {
        match self {
            GitHubError::Setup(_) => false,
            GitHubError::Request { source, .. } => !matches!(
                source.as_ref(),
                octocrab::Error::GitHub { source, .. }
                    if matches!(source.status_code.as_u16(), 404 | 410 | 422)
            ),
        }
    }
}

/// How long a commenter's permission is trusted without asking GitHub again: long enough that a
/// burst of commands asks once, short enough that a revoked permission stops working soon.
pub const PERMISSION_TTL: Duration = Duration::from_secs(60);

/// Cached permissions beyond this many are dropped wholesale (they are cheap to ask again).
const PERMISSION_CACHE_MAX: usize = 10_000;

/// `GET /repos/{owner}/{repo}/collaborators/{username}/permission`.
#[derive(Debug, Deserialize)]
struct PermissionAnswer {
    /// `admin`, `write`, `read` or `none`.
    #[serde(default)]
    permission: String,
    /// `admin`, `maintain`, `write`, `triage`, `read` or a custom role's name.
    #[serde(default)]
    role_name: String,
}

type PermissionKey = (i64, String, String);

/// GitHub App client.
pub struct GitHub {
    app: std::sync::RwLock<Octocrab>,
    app_id: u64,
    api_url: String,
    // Shared, not cloned: a cloned octocrab client copies its cached installation token instead
    // of sharing it, so every call through a fresh clone would mint a new token.
    installations: Mutex<HashMap<i64, std::sync::Arc<Octocrab>>>,
    permissions: Mutex<HashMap<PermissionKey, (Permission, Instant)>>,
}

impl std::fmt::Debug for GitHub {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GitHub").finish_non_exhaustive()
    }
}

fn app_client(app_id: u64, private_key_pem: &[u8], api_url: &str) -> Result<Octocrab, GitHubError> {
    let key = octocrab::auth::EncodingKey::from_rsa_pem(private_key_pem)
        .map_err(|e| GitHubError::Setup(format!("private key: {e}")))?;
    Octocrab::builder()
        .app(AppId(app_id), key)
        .base_uri(api_url)
        .map_err(|e| GitHubError::Setup(format!("api url {api_url:?}: {e}")))?
        // A half-open connection fails the call (and the entry is retried) instead of hanging.
        // No retries inside the client: octocrab's default retries a timed-out call three more
        // times (a minute for one hung call, past the entry's deadline), and retrying is
        // ingest's job, with backoff and the entry kept pending.
        .add_retry_config(octocrab::service::middleware::retry::RetryConfig::None)
        .set_connect_timeout(Some(Duration::from_secs(5)))
        .set_read_timeout(Some(Duration::from_secs(15)))
        .set_write_timeout(Some(Duration::from_secs(15)))
        .build()
        .map_err(|e| GitHubError::Setup(e.to_string()))
}

impl GitHub {
    /// An App client from the App id and its private key (PEM), against `api_url`.
    pub fn new(app_id: u64, private_key_pem: &[u8], api_url: &str) -> Result<GitHub, GitHubError> {
        Ok(GitHub {
            app: std::sync::RwLock::new(app_client(app_id, private_key_pem, api_url)?),
            app_id,
            api_url: api_url.to_owned(),
            installations: Mutex::new(HashMap::new()),
            permissions: Mutex::new(HashMap::new()),
        })
    }

    /// Replaces the App's private key (a rotated key file); installation tokens made with the
    /// old key are dropped. On error the old key stays in use.
    pub fn reload_key(&self, private_key_pem: &[u8]) -> Result<(), GitHubError> {
        let app = app_client(self.app_id, private_key_pem, &self.api_url)?;
        *self
            .app
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = app;
        self.installations
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clear();
        Ok(())
    }

    fn installation(&self, id: i64) -> Result<std::sync::Arc<Octocrab>, GitHubError> {
        let mut cache = self
            .installations
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(client) = cache.get(&id) {
            return Ok(client.clone());
        }
        let installation = u64::try_from(id)
            .map_err(|_| GitHubError::Setup(format!("invalid installation id {id}")))?;
        let client = std::sync::Arc::new(
            self.app
                .read()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .installation(InstallationId(installation))
                .map_err(|e| GitHubError::Setup(e.to_string()))?,
        );
        cache.insert(id, client.clone());
        Ok(client)
    }

    /// `GET /repos/{owner}/{repo}/pulls/{number}` with the installation's token.
    pub async fn pull_request(
        &self,
        installation_id: i64,
        owner: &str,
        repo: &str,
        number: i64,
    ) -> Result<PullRequest, GitHubError> {
        let route = format!("/repos/{owner}/{repo}/pulls/{number}");
        self.installation(installation_id)?
            .get(&route, None::<&()>)
            .await
            .map_err(|source| GitHubError::Request {
                route,
                source: Box::new(source),
            })
    }

    /// A person's permission on a repository: the higher of GitHub's `role_name` (which tells
    /// maintain and triage apart) and `permission` (which custom roles fall back to). Someone
    /// GitHub does not know (404) has none. Cached for [`PERMISSION_TTL`].
    pub async fn permission(
        &self,
        installation_id: i64,
        owner: &str,
        repo: &str,
        login: &str,
    ) -> Result<Permission, GitHubError> {
        let key = (
            installation_id,
            format!("{owner}/{repo}").to_ascii_lowercase(),
            login.to_ascii_lowercase(),
        );
        if let Some((permission, at)) = self.lock_permissions().get(&key)
            && at.elapsed() < PERMISSION_TTL
        {
            return Ok(*permission);
        }
        let route = format!("/repos/{owner}/{repo}/collaborators/{login}/permission");
        let answer: Result<PermissionAnswer, _> = self
            .installation(installation_id)?
            .get(&route, None::<&()>)
            .await;
        let permission = match answer {
            Ok(answer) => Permission::from_github(&answer.role_name)
                .max(Permission::from_github(&answer.permission)),
            Err(octocrab::Error::GitHub { source, .. }) if source.status_code.as_u16() == 404 => {
                Permission::None
            }
            Err(source) => {
                return Err(GitHubError::Request {
                    route,
                    source: Box::new(source),
                });
            }
        };
        let mut cache = self.lock_permissions();
        if cache.len() >= PERMISSION_CACHE_MAX {
            cache.clear();
        }
        cache.insert(key, (permission, Instant::now()));
        Ok(permission)
    }

    fn lock_permissions(
        &self,
    ) -> std::sync::MutexGuard<'_, HashMap<PermissionKey, (Permission, Instant)>> {
        self.permissions
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}
