//! `scripts/dev-env` keeps its promises: `up` twice is harmless, `env` tells where the services are,
//! and `down` leaves no process behind. Runs a second environment of its own, beside the shared one.

mod support;

use std::path::Path;
use std::process::{Command, Output};

fn dev_env(dir: &Path, verb: &str) -> Output {
    let out = Command::new(support::repo_root().join("scripts/dev-env"))
        .arg(verb)
        .env("OUTBOXD_DEV_DIR", dir)
        .output()
        .expect("run scripts/dev-env");
    assert!(
        out.status.success(),
        "dev-env {verb} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// Processes whose command line mentions `dir` (the postmaster and the broker both do).
fn processes_under(dir: &Path) -> Vec<String> {
    let out = Command::new("pgrep")
        .arg("-af")
        .arg(dir)
        .output()
        .expect("run pgrep");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_owned)
        .collect()
}

#[test]
fn up_twice_is_harmless_and_down_leaves_nothing() {
    let parent = tempfile::tempdir().expect("temp dir");
    let dir = parent.path().join("env");

    dev_env(&dir, "up");
    let first = String::from_utf8(dev_env(&dir, "env").stdout).expect("UTF-8");
    let running = processes_under(&dir);
    assert!(
        running.len() >= 2,
        "expected a postmaster and a broker, found {running:?}"
    );

    dev_env(&dir, "up");
    let second = String::from_utf8(dev_env(&dir, "env").stdout).expect("UTF-8");
    assert_eq!(first, second, "a second up moved the services");
    assert!(
        first.contains("OUTBOXD_DEV_KAFKA_BOOTSTRAP=127.0.0.1:"),
        "{first}"
    );
    assert!(
        first.contains("OUTBOXD_DEV_PG_URL=postgresql://"),
        "{first}"
    );

    dev_env(&dir, "down");
    assert_eq!(
        processes_under(&dir),
        Vec::<String>::new(),
        "processes left after down"
    );
    assert!(!dir.exists(), "down left {dir:?} behind");
}
