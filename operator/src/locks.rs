//! One lock per ScanRequest, shared by the controller and the results consumer of the leading
//! operator: each writes the request's status and then tells GitHub, and neither may come in
//! between the other's two steps. Without it the controller could write `Completed` (its Job
//! succeeded), the consumer record and post the result's conclusion, and the controller then
//! post `in_progress`, reopening a concluded check run. The resourceVersion precondition on
//! status writes guards against stale reads; this guards the step after the write.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

/// The locks, by `namespace/name`.
#[derive(Debug, Default)]
pub struct RequestLocks(Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>);

/// Held while one side works on a request.
#[derive(Debug)]
pub struct RequestGuard(#[allow(dead_code)] tokio::sync::OwnedMutexGuard<()>);

impl RequestLocks {
    /// Waits for the request's lock. Locks no one holds or waits for are dropped on the way.
    pub async fn lock(&self, namespace: &str, name: &str) -> RequestGuard {
        let lock = {
            let mut map = self.0.lock().unwrap_or_else(PoisonError::into_inner);
            map.retain(|_, lock| Arc::strong_count(lock) > 1);
            Arc::clone(map.entry(format!("{namespace}/{name}")).or_default())
        };
        RequestGuard(lock.lock_owned().await)
    }

    /// How many locks are held or waited for (for tests).
    pub fn len(&self) -> usize {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .values()
            .filter(|lock| Arc::strong_count(lock) > 1)
            .count()
    }

    /// Whether no lock is held or waited for.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn one_side_waits_for_the_other_on_the_same_request_only() {
        let locks = Arc::new(RequestLocks::default());
        let held = locks.lock("ns", "a").await;
        // Another request: at once.
        let other =
            tokio::time::timeout(std::time::Duration::from_millis(50), locks.lock("ns", "b")).await;
        assert!(other.is_ok());
        drop(other);
        // The same request: only once the first lets go.
        let waiting = {
            let locks = Arc::clone(&locks);
            tokio::spawn(async move { locks.lock("ns", "a").await })
        };
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        assert!(!waiting.is_finished());
        drop(held);
        let second = waiting.await;
        assert!(second.is_ok());
        drop(second);
        assert!(locks.is_empty());
    }
}
