//! Awaiting a condition with a deadline, instead of sleeping for a time that is too short on a
//! loaded machine and too long on an idle one.

use std::future::Future;
use std::time::{Duration, Instant};

/// How often a condition is checked again.
const POLL: Duration = Duration::from_millis(100);

/// Checks `condition` until it holds; after `timeout` panics with `failure()`, which says what
/// did not happen (and shows what helps to see why).
pub async fn wait_until<F, Fut>(
    timeout: Duration,
    mut condition: F,
    failure: impl FnOnce() -> String,
) where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = Instant::now() + timeout;
    while !condition().await {
        assert!(Instant::now() < deadline, "{}", failure());
        tokio::time::sleep(POLL).await;
    }
}

/// [`wait_until`] for a condition checked without a runtime (the calling thread sleeps).
pub fn wait_until_blocking(
    timeout: Duration,
    mut condition: impl FnMut() -> bool,
    failure: impl FnOnce() -> String,
) {
    let deadline = Instant::now() + timeout;
    while !condition() {
        assert!(Instant::now() < deadline, "{}", failure());
        std::thread::sleep(POLL);
    }
}
