//! The little the ingest role asks of GitHub's REST API: a pull request's current state, for
//! comment commands and re-runs whose payload lacks it. App JWT and installation tokens come from
//! octocrab; installation clients (and so their tokens) are cached per installation.

use std::collections::HashMap;
use std::sync::Mutex;

use octocrab::Octocrab;
use octocrab::models::{AppId, InstallationId};

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

/// GitHub App client.
pub struct GitHub {
    app: Octocrab,
    installations: Mutex<HashMap<i64, Octocrab>>,
}

impl std::fmt::Debug for GitHub {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GitHub").finish_non_exhaustive()
    }
}

impl GitHub {
    /// An App client from the App id and its private key (PEM), against `api_url`.
    pub fn new(app_id: u64, private_key_pem: &[u8], api_url: &str) -> Result<GitHub, GitHubError> {
        let key = octocrab::auth::EncodingKey::from_rsa_pem(private_key_pem)
            .map_err(|e| GitHubError::Setup(format!("private key: {e}")))?;
        let app = Octocrab::builder()
            .app(AppId(app_id), key)
            .base_uri(api_url)
            .map_err(|e| GitHubError::Setup(format!("api url {api_url:?}: {e}")))?
            .build()
            .map_err(|e| GitHubError::Setup(e.to_string()))?;
        Ok(GitHub {
            app,
            installations: Mutex::new(HashMap::new()),
        })
    }

    fn installation(&self, id: i64) -> Result<Octocrab, GitHubError> {
        let mut cache = self
            .installations
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(client) = cache.get(&id) {
            return Ok(client.clone());
        }
        let installation = u64::try_from(id)
            .map_err(|_| GitHubError::Setup(format!("invalid installation id {id}")))?;
        let client = self
            .app
            .installation(InstallationId(installation))
            .map_err(|e| GitHubError::Setup(e.to_string()))?;
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
}
