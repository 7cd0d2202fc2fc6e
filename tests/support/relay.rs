//! The `outboxd` binary as a child process: started with a config file, killed, stopped, watched.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::time::{Duration, Instant};

use super::dev_env;
use super::postgres::TestDb;

/// Settings of one test relay, written as the TOML file it runs with.
#[derive(Debug, Clone)]
pub struct RelaySpec {
    /// Relay name (unique per test).
    pub name: String,
    /// `relay.mode`: "logical" or "poll".
    pub mode: String,
    /// Database URL.
    pub url: String,
    /// Slot name.
    pub slot: String,
    /// Publication name.
    pub publication: String,
    /// Offsets topic.
    pub offsets_topic: String,
    /// Kafka bootstrap servers.
    pub bootstrap: String,
    /// Extra TOML lines appended to the file (sections included).
    pub extra: String,
    /// Short status, backoff and batch-age settings that keep tests quick. The benchmarks turn them
    /// off so the relay runs with the defaults a user gets.
    pub test_timings: bool,
    /// `kafka.call_timeout` with the test timings: short for tests of a Kafka outage.
    pub call_timeout: String,
    /// `kafka.transaction_timeout` with the test timings (`batch.max_age` stays below it).
    pub transaction_timeout: Duration,
}

impl RelaySpec {
    /// A relay over `db`'s slot and publication, with its own name and offsets topic.
    pub fn for_db(db: &TestDb) -> RelaySpec {
        RelaySpec {
            name: db.name.clone(),
            mode: "logical".into(),
            url: db.url.clone(),
            slot: db.slot.clone(),
            publication: db.publication.clone(),
            offsets_topic: db.topic("offsets"),
            bootstrap: dev_env().kafka_bootstrap.clone(),
            extra: String::new(),
            test_timings: true,
            call_timeout: "30s".into(),
            transaction_timeout: Duration::from_secs(60),
        }
    }

    /// A relay over the database at `url` (a private cluster's), with names derived from `prefix`.
    pub fn for_url(prefix: &str, url: &str) -> RelaySpec {
        let name = super::unique_name(prefix);
        RelaySpec {
            mode: "logical".into(),
            url: url.to_owned(),
            slot: format!("{name}_slot"),
            publication: format!("{name}_pub"),
            offsets_topic: format!("{name}.offsets"),
            bootstrap: dev_env().kafka_bootstrap.clone(),
            extra: String::new(),
            test_timings: true,
            call_timeout: "30s".into(),
            transaction_timeout: Duration::from_secs(60),
            name,
        }
    }

    /// The configuration file's text.
    pub fn toml(&self) -> String {
        let (relay_timings, kafka_timings, batch, metrics) = if self.test_timings {
            (
                "status_interval = \"200ms\"\nidle_confirm_interval = \"200ms\"\n\
                 backoff_min = \"100ms\"\nbackoff_max = \"1s\"\n",
                format!(
                    "transaction_timeout = \"{}ms\"\ncall_timeout = {:?}\n",
                    self.transaction_timeout.as_millis(),
                    self.call_timeout
                ),
                format!(
                    "[batch]\nmax_age = \"{}ms\"\n",
                    (self.transaction_timeout / 3)
                        .min(Duration::from_secs(10))
                        .as_millis()
                ),
                "wal_poll_interval = \"200ms\"\n",
            )
        } else {
            ("", String::new(), String::new(), "")
        };
        format!(
            "[relay]\nname = {name:?}\nmode = {mode:?}\n{relay_timings}\n\
             [postgres]\nurl = {url:?}\nslot = {slot:?}\npublications = [{publication:?}]\n\n\
             [kafka]\nbootstrap_servers = {bootstrap:?}\noffsets_topic = {offsets:?}\n\
             {kafka_timings}\n{batch}\n\
             [metrics]\nlisten = \"127.0.0.1:0\"\n{metrics}\n{extra}\n",
            name = self.name,
            mode = self.mode,
            url = self.url,
            slot = self.slot,
            publication = self.publication,
            bootstrap = self.bootstrap,
            offsets = self.offsets_topic,
            extra = self.extra,
        )
    }
}

/// Runs `outboxd <args> --config <spec's file>` to its end, with extra environment variables.
pub fn outboxd(spec: &RelaySpec, args: &[&str], env: &[(&str, &str)]) -> Output {
    let dir = tempfile::tempdir().expect("temp dir");
    let config = dir.path().join("outboxd.toml");
    std::fs::write(&config, spec.toml()).expect("write config");
    let mut command = Command::new(env!("CARGO_BIN_EXE_outboxd"));
    command.args(args).arg("--config").arg(&config);
    for (key, value) in env {
        command.env(key, value);
    }
    command.output().expect("run outboxd")
}

/// A running `outboxd run`; killed when dropped.
#[derive(Debug)]
pub struct RelayProcess {
    child: Child,
    /// Where its stderr (JSON log lines) goes, for assertions and for failing tests' output.
    pub log: PathBuf,
    dir: tempfile::TempDir,
}

impl RelayProcess {
    /// Starts `outboxd run` with `spec`, with extra environment variables.
    pub fn start_with_env(spec: &RelaySpec, env: &[(&str, &str)]) -> RelayProcess {
        Self::start_program(Path::new(env!("CARGO_BIN_EXE_outboxd")), spec, env)
    }

    /// Starts `<program> run` with `spec`, with extra environment variables: another build of
    /// outboxd, for the bench's A/B runs (`OUTBOXD_BENCH_BINARY`).
    pub fn start_program(program: &Path, spec: &RelaySpec, env: &[(&str, &str)]) -> RelayProcess {
        let dir = tempfile::tempdir().expect("relay temp dir");
        let config = dir.path().join("outboxd.toml");
        std::fs::write(&config, spec.toml()).expect("write relay config");
        let log = dir.path().join("outboxd.log");
        let stderr = File::create(&log).expect("relay log file");
        let mut command = Command::new(program);
        command
            .args(["run", "--config"])
            .arg(&config)
            .env("RUST_LOG", "info,outboxd=debug")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr);
        for (key, value) in env {
            command.env(key, value);
        }
        let child = command.spawn().expect("spawn outboxd");
        RelayProcess { child, log, dir }
    }

    /// Starts `outboxd run` with `spec`.
    pub fn start(spec: &RelaySpec) -> RelayProcess {
        Self::start_with_env(spec, &[])
    }

    /// The configuration file it runs with (tests may rewrite it before a SIGHUP).
    pub fn config_path(&self) -> PathBuf {
        self.dir.path().join("outboxd.toml")
    }

    /// The address of its metrics endpoint, from its log (it listens on an ephemeral port).
    pub fn metrics_address(&self, timeout: Duration) -> String {
        let deadline = Instant::now() + timeout;
        loop {
            let found = self.logged("serving /metrics, /healthz and /readyz", "address");
            if let Some(address) = found.into_iter().next() {
                return address;
            }
            assert!(
                Instant::now() < deadline,
                "no metrics address in the log:\n{}",
                self.log_text()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Waits until it logged that it starts replication (its slot exists, so every change
    /// committed from now on reaches Kafka) or, in poll mode, polling.
    pub fn wait_streaming(&self, timeout: Duration) {
        let started =
            |log: &str| log.contains("starting replication") || log.contains("starting to poll");
        assert!(
            self.wait_log(timeout, started),
            "the relay did not start replication:\n{}",
            self.log_text()
        );
    }

    /// Waits up to `timeout` until its log satisfies `seen`; whether it did.
    pub fn wait_log(&self, timeout: Duration, seen: impl Fn(&str) -> bool) -> bool {
        let deadline = Instant::now() + timeout;
        while !seen(&self.log_text()) {
            if Instant::now() >= deadline {
                return false;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        true
    }

    /// The value of `field` in each of its JSON log lines saying `message`, in order.
    pub fn logged(&self, message: &str, field: &str) -> Vec<String> {
        self.log_text()
            .lines()
            .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
            .filter(|entry| entry["fields"]["message"] == message)
            .filter_map(|entry| entry["fields"][field].as_str().map(str::to_owned))
            .collect()
    }

    /// How many Kafka transactions it has committed so far (its debug log says each).
    pub fn commits(&self) -> usize {
        self.log_text()
            .matches("committed a Kafka transaction")
            .count()
    }

    /// Waits until it has committed more than `count` Kafka transactions: it publishes.
    pub async fn wait_for_commits_past(&self, count: usize) {
        super::wait::wait_until(
            Duration::from_secs(90),
            || async { self.commits() > count },
            || {
                format!(
                    "the relay committed no more than {count} Kafka transactions:\n{}",
                    self.log_text()
                )
            },
        )
        .await;
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Lets it live a random number of milliseconds in `lifetime`, checks it did not die by
    /// itself meanwhile, SIGKILLs it and returns its log: a kill at a random moment of its life.
    pub async fn kill_at_random(&mut self, lifetime: std::ops::Range<u64>) -> String {
        let lifetime = rand::random_range(lifetime);
        tokio::time::sleep(Duration::from_millis(lifetime)).await;
        assert!(
            self.wait_exit(Duration::ZERO).is_none(),
            "the relay died by itself:\n{}",
            self.log_text()
        );
        self.kill();
        self.log_text()
    }

    /// SIGKILL: the process dies wherever it is.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Sends `signal` (e.g. "TERM") and waits up to `timeout` for the exit.
    pub fn signal_and_wait(&mut self, signal: &str, timeout: Duration) -> Option<ExitStatus> {
        let status = Command::new("kill")
            .args([&format!("-{signal}"), &self.child.id().to_string()])
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -{signal} failed");
        self.wait_exit(timeout)
    }

    /// Waits up to `timeout` for the process to exit by itself.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            // Looks at least once: `wait_exit(Duration::ZERO)` asks whether it has exited now.
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                return Some(status);
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Its log so far.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for RelayProcess {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
        if std::thread::panicking() {
            eprintln!(
                "--- outboxd log ({}) ---\n{}",
                self.log.display(),
                self.log_text()
            );
        }
    }
}
