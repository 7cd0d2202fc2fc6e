//! Watches the relay's progress (`crate::progress`): decides every moment whether it is stalled,
//! and logs the moment a stall begins (one WARN naming how long and what waits) and the moment it
//! ends (one INFO), however long it lasts. `/readyz` and `outboxd_stalled` read the same verdict.

use std::convert::Infallible;
use std::time::Duration;

use crate::metrics::metrics;
use crate::progress::Transition;

/// The message of the WARN line a stall begins with.
pub const STALLED: &str = "relay stalled: not ready until a Kafka commit moves it again";

/// The message of the INFO line a stall ends with.
pub const RESUMED: &str = "relay no longer stalled";

/// Checks against `bound` (`metrics.stall_timeout`) until dropped, a few times per bound and at
/// least every second, so a stall shows within about a second of reaching the bound.
pub(super) async fn watch(bound: Duration) -> Infallible {
    let period = (bound / 4).clamp(Duration::from_millis(100), Duration::from_secs(1));
    let mut ticks = tokio::time::interval(period);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticks.tick().await;
        match metrics().check_stall(bound) {
            Some(Transition::Stalled(stall)) => {
                tracing::warn!(
                    reason = %metrics().stall_reason(&stall),
                    stall_timeout = ?bound,
                    "{STALLED}"
                );
            }
            Some(Transition::Resumed { lasted }) => {
                tracing::info!(without_progress_s = lasted.as_secs(), "{RESUMED}");
            }
            None => {}
        }
    }
}
