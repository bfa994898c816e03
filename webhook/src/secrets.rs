//! Webhook secrets from files (a mounted Kubernetes Secret). Each file holds one secret per
//! non-empty line; several files (or lines) are accepted at once so a secret can be rotated
//! without dropping deliveries. Files are reloaded when they change and on SIGHUP. A file that
//! is gone at a reload (a key removed from the Secret) revokes its secrets, as long as another
//! file still holds one; a reload that fails otherwise keeps the secrets in use, logs why, and is
//! tried again at every check until it succeeds. Secret values are never logged.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
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

/// Reads every secret in `paths`: one per non-empty line, surrounding whitespace trimmed. Every
/// file must exist (at start, a missing file is a mistake).
pub fn load(paths: &[PathBuf]) -> Result<Vec<Vec<u8>>, SecretsError> {
    load_with(paths, false)
}

/// Like [`load`], but a file that no longer exists contributes no secret (it was removed from
/// the mounted Secret: its secrets are revoked).
pub fn reload_from(paths: &[PathBuf]) -> Result<Vec<Vec<u8>>, SecretsError> {
    load_with(paths, true)
}

fn load_with(paths: &[PathBuf], skip_missing: bool) -> Result<Vec<Vec<u8>>, SecretsError> {
    let mut secrets = Vec::new();
    for path in paths {
        let text = match std::fs::read(path) {
            Ok(text) => text,
            Err(e) if skip_missing && e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(source) => {
                return Err(SecretsError::Read {
                    path: path.clone(),
                    source,
                });
            }
        };
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
    loaded_at: Arc<AtomicU64>,
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

impl SharedVerifier {
    /// Loads the files; fails when they cannot be read or hold no secret.
    pub fn load(paths: Vec<PathBuf>) -> Result<SharedVerifier, SecretsError> {
        let verifier = Verifier::new(&load(&paths)?);
        Ok(SharedVerifier {
            current: Arc::new(RwLock::new(Arc::new(verifier))),
            paths: Arc::new(paths),
            loaded_at: Arc::new(AtomicU64::new(unix_now())),
        })
    }

    /// When the secrets in use were loaded (Unix seconds).
    pub fn loaded_at(&self) -> u64 {
        self.loaded_at.load(Ordering::Relaxed)
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

    /// Re-reads the files (a removed file revokes its secrets); on failure keeps the old secrets.
    pub fn reload(&self) -> Result<usize, SecretsError> {
        let verifier = Verifier::new(&reload_from(&self.paths)?);
        let count = verifier.len();
        *self
            .current
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Arc::new(verifier);
        self.loaded_at.store(unix_now(), Ordering::Relaxed);
        Ok(count)
    }

    /// Reloads when a file's modification time changes (checked every `interval`), on SIGHUP,
    /// and at every check after a failed reload until one succeeds. Runs until the task is
    /// dropped.
    pub async fn watch(self, interval: Duration) {
        let mut last = modification_times(&self.paths);
        let mut failing = false;
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
            if reason.is_none() && now == last && !failing {
                continue;
            }
            match self.reload() {
                Ok(count) => {
                    let trigger = reason.unwrap_or(if failing { "retry" } else { "file change" });
                    last = now;
                    failing = false;
                    tracing::info!(secrets = count, trigger, "webhook secrets reloaded");
                }
                Err(e) => {
                    failing = true;
                    tracing::error!(error = %e, retry_in_s = interval.as_secs(), "webhook secrets not reloaded; keeping the previous ones");
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
    fn a_file_removed_from_the_secret_revokes_its_secrets_at_reload() {
        let dir = tempfile::tempdir().unwrap();
        let current = dir.path().join("current");
        let previous = dir.path().join("previous");
        std::fs::write(&current, "new\n").unwrap();
        std::fs::write(&previous, "old\n").unwrap();
        let shared = SharedVerifier::load(vec![current.clone(), previous.clone()]).unwrap();
        assert!(shared.get().verify(&sign(b"old", b"x"), b"x").is_ok());
        std::fs::remove_file(&previous).unwrap();
        assert_eq!(shared.reload().unwrap(), 1);
        assert!(shared.get().verify(&sign(b"old", b"x"), b"x").is_err());
        assert!(shared.get().verify(&sign(b"new", b"x"), b"x").is_ok());
        // With every file gone nothing would verify: keep what is in use.
        std::fs::remove_file(&current).unwrap();
        assert!(matches!(shared.reload(), Err(SecretsError::Empty { .. })));
        assert!(shared.get().verify(&sign(b"new", b"x"), b"x").is_ok());
        // At start a missing file is a mistake, not a revocation.
        assert!(matches!(load(&[current]), Err(SecretsError::Read { .. })));
    }

    #[tokio::test]
    async fn a_failed_reload_is_retried_until_it_succeeds() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("secret");
        std::fs::write(&file, "first\n").unwrap();
        let shared = SharedVerifier::load(vec![file.clone()]).unwrap();
        let first_at = std::fs::metadata(&file).unwrap().modified().unwrap();
        let watching = tokio::spawn(shared.clone().watch(Duration::from_millis(50)));
        // Let the watch note the first file's time.
        tokio::time::sleep(Duration::from_millis(150)).await;
        // A broken write (no secret), with a time that surely differs: the reload fails and the
        // old secret stays.
        std::fs::write(&file, "\n").unwrap();
        let broken_at = first_at + Duration::from_secs(2);
        std::fs::File::options()
            .write(true)
            .open(&file)
            .unwrap()
            .set_modified(broken_at)
            .unwrap();
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert!(shared.get().verify(&sign(b"first", b"x"), b"x").is_ok());
        // Fixed with the same modification time (a clock that did not tick, or a restore that
        // keeps times): only a retry of the failed reload finds it.
        std::fs::write(&file, "second\n").unwrap();
        std::fs::File::options()
            .write(true)
            .open(&file)
            .unwrap()
            .set_modified(broken_at)
            .unwrap();
        let mut reloaded = false;
        for _ in 0..100 {
            if shared.get().verify(&sign(b"second", b"x"), b"x").is_ok() {
                reloaded = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        watching.abort();
        assert!(reloaded, "the failed reload was retried");
        assert!(shared.loaded_at() > 0);
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
