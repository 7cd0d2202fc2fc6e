//! The integration-test harness: real PostgreSQL and real Kafka, isolated per test.
//!
//! The services come from `scripts/dev-env`: a run of `scripts/test` exports their settings
//! (`OUTBOXD_DEV_*`); a bare `cargo test` finds none and brings the environment up itself (the script
//! is idempotent and locked, so concurrent test binaries share one environment). Each test then takes
//! its own database, slot, publication and topic names, so tests run in parallel without meeting.
//!
//! Not every test binary uses every helper.
#![allow(dead_code)]

pub mod all_types;
pub mod common_sh;
pub mod debezium;
pub mod goldens;
pub mod http;
pub mod idp;
pub mod kafka;
pub mod mode;
pub mod outbox;
pub mod postgres;
pub mod proxy;
pub mod published_columns;
pub mod registry;
pub mod relay;
pub mod secure_kafka;
pub mod seen;
pub mod snapshot_topic;
pub mod wait;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::OnceLock;

/// Connection settings of the running dev environment.
#[derive(Debug, Clone)]
pub struct DevEnv {
    /// Superuser URL of the shared private cluster (`postgresql://postgres@127.0.0.1:PORT/postgres`).
    pub pg_url: String,
    /// The PostgreSQL server binaries (`initdb`, `pg_ctl`, `psql`), for tests that need a cluster of
    /// their own (other auth methods, `wal_level = replica`, TLS).
    pub pg_bin: PathBuf,
    /// `host:port` of the single-node Kafka broker.
    pub kafka_bootstrap: String,
}

/// The repository root, where `scripts/` lives.
pub fn repo_root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// The dev environment, started on first use if the test run did not export one.
pub fn dev_env() -> &'static DevEnv {
    static ENV: OnceLock<DevEnv> = OnceLock::new();
    ENV.get_or_init(|| {
        if let Some(env) = DevEnv::from_vars(|key| std::env::var(key).ok()) {
            return env;
        }
        let script = repo_root().join("scripts/dev-env");
        let up = Command::new(&script)
            .arg("up")
            .status()
            .expect("run scripts/dev-env up");
        assert!(
            up.success(),
            "scripts/dev-env up failed; run scripts/setup first"
        );
        let out = Command::new(&script)
            .arg("env")
            .output()
            .expect("run scripts/dev-env env");
        assert!(
            out.status.success(),
            "scripts/dev-env env failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let exports = parse_exports(&String::from_utf8_lossy(&out.stdout));
        DevEnv::from_vars(|key| {
            exports
                .iter()
                .find(|(k, _)| k == key)
                .map(|(_, v)| v.clone())
        })
        .expect("scripts/dev-env env printed every OUTBOXD_DEV_* setting")
    })
}

impl DevEnv {
    fn from_vars(var: impl Fn(&str) -> Option<String>) -> Option<DevEnv> {
        Some(DevEnv {
            pg_url: var("OUTBOXD_DEV_PG_URL")?,
            pg_bin: PathBuf::from(var("OUTBOXD_DEV_PG_BIN")?),
            kafka_bootstrap: var("OUTBOXD_DEV_KAFKA_BOOTSTRAP")?,
        })
    }
}

/// Reads `export KEY=VALUE` lines as `scripts/dev-env env` prints them (values never need unquoting:
/// they are paths, URLs and ports without shell metacharacters).
fn parse_exports(text: &str) -> Vec<(String, String)> {
    text.lines()
        .filter_map(|line| line.strip_prefix("export "))
        .filter_map(|pair| pair.split_once('='))
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect()
}

/// A name no other test of any concurrent run uses: `<prefix>_<pid>_<n>_<random>`, lowercase, valid as
/// a PostgreSQL identifier, a slot name and a Kafka topic.
pub fn unique_name(prefix: &str) -> String {
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    format!(
        "{prefix}_{}_{}_{:06x}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed),
        rand::random::<u32>() & 0xFF_FFFF
    )
}
