//! The stop request, as a value every wait can observe any number of times.
//!
//! A future that completes on SIGTERM can be awaited only once: a relay that noticed it in one
//! attempt and then failed would poll it again while backing off (`async fn resumed after
//! completion`, a panic). [`Shutdown`] is a flag with a way to wait for it instead: cheap to
//! clone, and complete for every waiter, however often asked, once requested.

use tokio::sync::watch;

/// Requests the stop; dropping it requests it too (better than running deaf to signals).
#[derive(Debug)]
pub struct ShutdownTrigger(watch::Sender<bool>);

impl ShutdownTrigger {
    /// Requests the stop.
    pub fn request(&self) {
        self.0.send_replace(true);
    }
}

/// Whether the stop was requested, and a way to wait for it.
#[derive(Debug, Clone)]
pub struct Shutdown(watch::Receiver<bool>);

impl Shutdown {
    /// A stop request not yet made, and what makes it.
    pub fn new() -> (ShutdownTrigger, Shutdown) {
        let (sender, receiver) = watch::channel(false);
        (ShutdownTrigger(sender), Shutdown(receiver))
    }

    /// Whether the stop was requested.
    pub fn is_requested(&self) -> bool {
        *self.0.borrow() || self.0.has_changed().is_err()
    }

    /// Completes once the stop is requested (at once if it was). Cancel-safe.
    pub async fn requested(&self) {
        let mut receiver = self.0.clone();
        // An error means the trigger is gone: that counts as a request.
        let _ = receiver.wait_for(|requested| *requested).await;
    }
}

#[cfg(test)]
mod tests {
    use futures_util::FutureExt;

    use super::*;

    #[test]
    fn a_request_completes_every_wait_however_often_asked() {
        let (trigger, shutdown) = Shutdown::new();
        assert!(!shutdown.is_requested());
        assert!(shutdown.requested().now_or_never().is_none());
        trigger.request();
        for _ in 0..3 {
            assert!(shutdown.requested().now_or_never().is_some());
        }
        assert!(shutdown.clone().is_requested());
    }

    #[test]
    fn a_dropped_trigger_counts_as_a_request() {
        let (trigger, shutdown) = Shutdown::new();
        drop(trigger);
        assert!(shutdown.is_requested());
        assert!(shutdown.requested().now_or_never().is_some());
    }
}
