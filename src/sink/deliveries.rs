//! Delivery reports served, counted so that a Kafka commit can sleep until the last one instead of
//! polling for it.
//!
//! Before a commit the sink waits until every record it produced has its delivery report served
//! (sink::kafka explains why). Polling librdkafka's in-flight count in short steps woke the sink
//! thread every 200 µs of that wait, tens of times per Kafka transaction when caught up; the
//! producer's background thread now wakes it once, when the report it waits for is served.

use std::sync::{Condvar, Mutex, PoisonError};
use std::time::{Duration, Instant};

/// How many delivery reports were served, with a wake-up for a thread waiting on a number.
#[derive(Debug, Default)]
pub struct DeliveryCount {
    served: Mutex<u64>,
    changed: Condvar,
}

impl DeliveryCount {
    /// One more delivery report was served (called on the producer's background thread).
    pub fn served(&self) {
        *self.served.lock().unwrap_or_else(PoisonError::into_inner) += 1;
        self.changed.notify_all();
    }

    /// Waits until `produced` reports were served, `step` at a time so that `done` (another way
    /// to know, asked after each step) can end it early, or until `deadline`.
    pub fn wait_for(
        &self,
        produced: u64,
        deadline: Instant,
        step: Duration,
        mut done: impl FnMut() -> bool,
    ) {
        loop {
            let served = self.served.lock().unwrap_or_else(PoisonError::into_inner);
            let now = Instant::now();
            if *served >= produced || now >= deadline {
                return;
            }
            let (served, _) = self
                .changed
                .wait_timeout(served, step.min(deadline - now))
                .unwrap_or_else(PoisonError::into_inner);
            if *served >= produced {
                return;
            }
            // Asked without the lock: the producer's thread may be serving a report meanwhile.
            drop(served);
            if done() {
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;

    #[test]
    fn wakes_when_the_last_report_is_served() {
        let count = Arc::new(DeliveryCount::default());
        let serving = Arc::clone(&count);
        let server = std::thread::spawn(move || {
            for _ in 0..3 {
                std::thread::sleep(Duration::from_millis(20));
                serving.served();
            }
        });
        let started = Instant::now();
        let long = Duration::from_secs(60);
        count.wait_for(3, started + long, long, || false);
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "woken, not timed out"
        );
        assert_eq!(*count.served.lock().expect("lock"), 3);
        server.join().expect("server");
    }

    #[test]
    fn ends_at_the_deadline_or_when_done_says_so() {
        let count = DeliveryCount::default();
        let started = Instant::now();
        count.wait_for(
            1,
            started + Duration::from_millis(30),
            Duration::from_secs(60),
            || false,
        );
        let waited = started.elapsed();
        assert!(waited >= Duration::from_millis(30), "{waited:?}");
        assert!(waited < Duration::from_secs(30), "{waited:?}");

        let mut asked = 0;
        count.wait_for(
            1,
            Instant::now() + Duration::from_secs(60),
            Duration::from_millis(1),
            || {
                asked += 1;
                asked == 3
            },
        );
        assert_eq!(asked, 3, "asked after each step until it said done");
    }
}
