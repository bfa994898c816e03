//! Webhook secrets from files (a mounted Kubernetes Secret). Each file holds one secret per
//! non-empty line; several files (or lines) are accepted at once so a secret can be rotated
//! without dropping deliveries. Files are reloaded when they change and on SIGHUP; a reload that
//! fails keeps the secrets in use and logs why. Secret values are never logged.

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime};

use crate::signature::Verifier;

/// Loading the secret files failed.
#[derive(Debug, thiserror::Error)]
pub enum SecretsError {
    /// A file could not be read.
    #[error("failed to read webhook secret file {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The files hold no secret at all.
    #[error("webhook secret files {paths:?} contain no secret (one per non-empty line)")]
    Empty {
        /// The files.
        paths: Vec<PathBuf>,
    },
}

/// Reads every secret in `paths`: one per non-empty line, surrounding whitespace trimmed.
pub fn load(paths: &[PathBuf]) -> Result<Vec<Vec<u8>>, SecretsError> {
    let mut secrets = Vec::new();
    for path in paths {
        let text = std::fs::read(path).map_err(|source| SecretsError::Read {
            path: path.clone(),
            source,
        })?;
        for line in text.split(|b| *b == b'\n') {
            let line = line.trim_ascii();
            if !line.is_empty() {
                secrets.push(line.to_vec());
            }
        }
    }
    if secrets.is_empty() {
        return Err(SecretsError::Empty {
            paths: paths.to_vec(),
        });
    }
    Ok(secrets)
}

/// The verifier in use, swapped atomically on reload.
#[derive(Clone, Debug)]
pub struct SharedVerifier {
    current: Arc<RwLock<Arc<Verifier>>>,
    paths: Arc<Vec<PathBuf>>,
}

impl SharedVerifier {
    /// Loads the files; fails when they cannot be read or hold no secret.
    pub fn load(paths: Vec<PathBuf>) -> Result<SharedVerifier, SecretsError> {
        let verifier = Verifier::new(&load(&paths)?);
        Ok(SharedVerifier {
            current: Arc::new(RwLock::new(Arc::new(verifier))),
            paths: Arc::new(paths),
        })
    }

    /// The verifier to use for one request.
    pub fn get(&self) -> Arc<Verifier> {
        Arc::clone(
            &self
                .current
                .read()
                .unwrap_or_else(std::sync::PoisonError::into_inner),
        )
    }

    /// Re-reads the files; on failure keeps the old secrets.
    pub fn reload(&self) -> Result<usize, SecretsError> {
        let verifier = Verifier::new(&load(&self.paths)?);
        let count = verifier.len();
        *self
            .current
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Arc::new(verifier);
        Ok(count)
    }

    /// Reloads when a file's modification time changes (checked every `interval`) or on SIGHUP.
    /// Runs until the task is dropped.
    pub async fn watch(self, interval: Duration) {
        let mut last = modification_times(&self.paths);
        let mut hangup =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()).ok();
        loop {
            let signalled = async {
                match hangup.as_mut() {
                    Some(s) => s.recv().await.is_some(),
                    None => std::future::pending().await,
                }
            };
            let reason = tokio::select! {
                () = tokio::time::sleep(interval) => None,
                true = signalled => Some("SIGHUP"),
            };
            let now = modification_times(&self.paths);
            if reason.is_none() && now == last {
                continue;
            }
            last = now;
            match self.reload() {
                Ok(count) => tracing::info!(
                    secrets = count,
                    trigger = reason.unwrap_or("file change"),
                    "webhook secrets reloaded"
                ),
                Err(e) => {
                    tracing::error!(error = %e, "webhook secrets not reloaded; keeping the previous ones");
                }
            }
        }
    }
}

fn modification_times(paths: &[PathBuf]) -> Vec<Option<SystemTime>> {
    // Kubernetes updates mounted Secrets by swapping a symlink, so follow it (metadata, not
    // symlink_metadata) and compare content times.
    paths
        .iter()
        .map(|p| {
            std::fs::metadata(Path::new(p))
                .and_then(|m| m.modified())
                .ok()
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::signature::sign;

    #[test]
    fn one_secret_per_line_across_files() {
        let dir = std::env::temp_dir().join(format!("gatehouse-secrets-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let a = dir.join("current");
        let b = dir.join("previous");
        std::fs::write(&a, "new\n\n").unwrap();
        std::fs::write(&b, "  old  \r\nolder\n").unwrap();
        let secrets = load(&[a.clone(), b.clone()]).unwrap();
        assert_eq!(
            secrets,
            [b"new".to_vec(), b"old".to_vec(), b"older".to_vec()]
        );

        let shared = SharedVerifier::load(vec![a.clone()]).unwrap();
        assert!(shared.get().verify(&sign(b"new", b"x"), b"x").is_ok());
        std::fs::write(&a, "rotated\n").unwrap();
        assert_eq!(shared.reload().unwrap(), 1);
        assert!(shared.get().verify(&sign(b"rotated", b"x"), b"x").is_ok());
        assert!(shared.get().verify(&sign(b"new", b"x"), b"x").is_err());

        // A broken reload keeps the secrets in use.
        std::fs::write(&a, "\n").unwrap();
        assert!(matches!(shared.reload(), Err(SecretsError::Empty { .. })));
        assert!(shared.get().verify(&sign(b"rotated", b"x"), b"x").is_ok());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_missing_file_names_the_path() {
        let err = load(&[PathBuf::from("/nonexistent/gatehouse/secret")]).unwrap_err();
        assert!(
            err.to_string().contains("/nonexistent/gatehouse/secret"),
            "{err}"
        );
    }
}
