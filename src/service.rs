//! systemd's service notifications (`sd_notify`): `READY=1` once the relay streams, `WATCHDOG=1`
//! pings while the runtime lives, `STOPPING=1` on a graceful stop. Without `NOTIFY_SOCKET` (not
//! started by systemd with `Type=notify`) every call does nothing.

use std::time::Duration;

use sd_notify::NotifyState;

/// Tells the service manager the relay is up; repeated after each reconnect, which systemd
/// accepts, with the status line updated.
pub fn ready(status: &str) {
    send(&[NotifyState::Ready, NotifyState::Status(status)]);
}

/// Tells the service manager a graceful stop has begun.
pub fn stopping() {
    send(&[NotifyState::Stopping]);
}

/// Pings the watchdog at half its interval (`WATCHDOG_USEC`) on the current runtime, when systemd
/// asked for a watchdog. A runtime that stops turning stops the pings, and systemd restarts the
/// service.
pub fn spawn_watchdog() {
    let Some(interval) = sd_notify::watchdog_enabled() else {
        return;
    };
    let period = (interval / 2).max(Duration::from_millis(10));
    tokio::spawn(async move {
        let mut ticks = tokio::time::interval(period);
        loop {
            ticks.tick().await;
            send(&[NotifyState::Watchdog]);
        }
    });
}

fn send(states: &[NotifyState<'_>]) {
    if let Err(error) = sd_notify::notify(states) {
        tracing::warn!(%error, "could not notify the service manager (NOTIFY_SOCKET)");
    }
}
