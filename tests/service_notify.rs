//! The systemd notify protocol, driven through a `NOTIFY_SOCKET` datagram socket as systemd's own:
//! the relay says `READY=1` once it streams, pings `WATCHDOG=1` at half of `WATCHDOG_USEC`, and says
//! `STOPPING=1` on SIGTERM before it exits 0.

mod support;

use std::os::unix::net::UnixDatagram;
use std::time::{Duration, Instant};

use support::outbox::publish_outbox;
use support::postgres::TestDb;
use support::relay::{RelayProcess, RelaySpec};

/// Datagrams received on `socket` until `done` holds or `timeout` passes.
fn receive_until(
    socket: &UnixDatagram,
    timeout: Duration,
    done: impl Fn(&[String]) -> bool,
) -> Vec<String> {
    let deadline = Instant::now() + timeout;
    let mut messages = Vec::new();
    let mut buffer = [0u8; 4096];
    while !done(&messages) && Instant::now() < deadline {
        if let Ok(length) = socket.recv(&mut buffer) {
            messages.push(String::from_utf8_lossy(&buffer[..length]).into_owned());
        }
    }
    messages
}

fn count(messages: &[String], line: &str) -> usize {
    messages
        .iter()
        .filter(|m| m.lines().any(|l| l == line))
        .count()
}

#[tokio::test(flavor = "multi_thread")]
async fn ready_watchdog_and_stopping_reach_the_notify_socket() {
    let db = TestDb::create("notify").await;
    let client = db.client().await;
    client
        .batch_execute(include_str!("../migrations/0001_outbox.sql"))
        .await
        .expect("outbox migration");
    publish_outbox(&client, &db.publication, Some(&db.slot)).await;

    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("notify.sock");
    let socket = UnixDatagram::bind(&path).expect("bind the notify socket");
    socket
        .set_read_timeout(Some(Duration::from_millis(100)))
        .expect("read timeout");
    let spec = RelaySpec::for_db(&db);
    let socket_path = path.to_str().expect("UTF-8 path");
    let mut relay = RelayProcess::start_with_env(
        &spec,
        &[("NOTIFY_SOCKET", socket_path), ("WATCHDOG_USEC", "400000")],
    );

    let messages = receive_until(&socket, Duration::from_secs(60), |m| {
        count(m, "READY=1") >= 1 && count(m, "WATCHDOG=1") >= 3
    });
    let tail = &messages[messages.len().saturating_sub(5)..];
    assert!(
        count(&messages, "READY=1") >= 1,
        "no READY=1 in {} messages, the last: {tail:?}",
        messages.len()
    );
    assert!(
        count(&messages, "WATCHDOG=1") >= 3,
        "too few pings: {tail:?}"
    );
    let ready = messages
        .iter()
        .find(|m| m.lines().any(|l| l == "READY=1"))
        .expect("READY=1");
    assert!(
        ready.contains(&format!("STATUS=streaming slot {}", db.slot)),
        "{ready}"
    );

    // Pings keep coming at about half the watchdog interval (200 ms): 3 within 2 s at least.
    let later = receive_until(&socket, Duration::from_secs(2), |m| {
        count(m, "WATCHDOG=1") >= 3
    });
    assert!(count(&later, "WATCHDOG=1") >= 3, "pings stopped: {later:?}");

    let status = relay.signal_and_wait("TERM", Duration::from_secs(30));
    assert_eq!(status.and_then(|s| s.code()), Some(0), "graceful stop");
    let rest = receive_until(&socket, Duration::from_secs(1), |m| {
        count(m, "STOPPING=1") >= 1
    });
    assert_eq!(count(&rest, "STOPPING=1"), 1, "{rest:?}");
}
