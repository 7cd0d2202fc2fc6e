//! What an operator touches, against real services: `check` (each failure names its fix),
//! `migrate`, `status`, the metrics and health endpoint, SIGHUP, and logs that never show a secret.

mod support;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use support::kafka::{read_topic, Isolation};
use support::postgres::{free_port, psql, PrivateCluster, TestDb};
use support::relay::{outboxd, RelayProcess, RelaySpec};
use support::unique_name;

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// Asserts that `check` failed with `problem` and `fix` in its report.
fn assert_check_fails(output: &Output, problem: &str, fix: &str) {
    let report = stdout(output);
    assert_eq!(output.status.code(), Some(1), "check must fail:\n{report}");
    let line = report
        .lines()
        .position(|l| l.starts_with("FAIL") && l.contains(problem))
        .unwrap_or_else(|| panic!("no FAIL line with {problem:?}:\n{report}"));
    let next = report.lines().nth(line + 1).unwrap_or_default();
    assert!(
        next.contains("fix:") && next.contains(fix),
        "the failure {problem:?} must be followed by a fix naming {fix:?}:\n{report}"
    );
}

#[tokio::test]
async fn check_passes_after_migrate_and_names_the_fix_of_each_problem() {
    let db = TestDb::create("ops_check").await;
    let spec = RelaySpec::for_db(&db);

    // A bare database: no publication, no outbox table.
    let bare = outboxd(&spec, &["check"], &[]);
    assert_check_fails(
        &bare,
        &format!("publication {:?} does not exist", db.publication),
        "CREATE PUBLICATION",
    );
    assert_check_fails(
        &bare,
        "outbox table public.outbox does not exist",
        "outboxd migrate",
    );

    // migrate creates them, and a second run changes nothing.
    let first = outboxd(&spec, &["migrate"], &[]);
    assert!(first.status.success(), "{first:?}");
    let applied = stdout(&first);
    for name in [
        "0001_outbox",
        "0002_publication",
        "0003_grants",
        "0004_poll",
    ] {
        assert!(applied.contains(&format!("applied {name}")), "{applied}");
    }
    let second = outboxd(&spec, &["migrate"], &[]);
    assert!(
        stdout(&second).contains("up to date: 4 migration(s)"),
        "{second:?}"
    );
    let published = psql(
        &db.url,
        &format!(
            "SELECT tablename FROM pg_publication_tables WHERE pubname = '{}'",
            db.publication
        ),
    )
    .expect("publication query");
    assert_eq!(published.trim(), "outbox");

    let healthy = outboxd(&spec, &["check"], &[]);
    assert!(
        healthy.status.success() && stdout(&healthy).contains("all checks passed"),
        "{}",
        stdout(&healthy)
    );

    // A published table without replica identity: Postgres would refuse its updates.
    psql(
        &db.url,
        &format!(
            "CREATE TABLE nokey (a int); ALTER PUBLICATION {} ADD TABLE nokey",
            db.publication
        ),
    )
    .expect("create nokey");
    assert_check_fails(
        &outboxd(&spec, &["check"], &[]),
        "public.nokey has no replica identity",
        "ALTER TABLE public.nokey REPLICA IDENTITY FULL",
    );
    psql(&db.url, "ALTER TABLE nokey REPLICA IDENTITY FULL").expect("fix nokey");

    // A role without REPLICATION.
    let role = unique_name("norep");
    psql(
        &db.url,
        &format!("CREATE ROLE {role} LOGIN; GRANT SELECT ON outbox TO {role}"),
    )
    .expect("create role");
    let mut norep = spec.clone();
    norep.url = db.url.replacen("postgres@", &format!("{role}@"), 1);
    assert!(norep.url.contains(&role), "{}", norep.url);
    let output = outboxd(&norep, &["check"], &[]);
    assert_check_fails(
        &output,
        "lacks the REPLICATION attribute",
        &format!("ALTER ROLE {role} REPLICATION"),
    );
    assert_check_fails(
        &output,
        "cannot open a replication connection",
        &format!("ALTER ROLE {role} REPLICATION"),
    );
    psql(&db.url, &format!("DROP OWNED BY {role}; DROP ROLE {role}")).expect("drop role");

    // No broker where the configuration says.
    let nowhere = format!("127.0.0.1:{}", free_port());
    assert_check_fails(
        &outboxd(
            &spec,
            &["check"],
            &[("OUTBOXD__KAFKA__BOOTSTRAP_SERVERS", nowhere.as_str())],
        ),
        &format!("no broker at {nowhere}"),
        "check kafka.bootstrap_servers",
    );
}

#[test]
fn check_refuses_a_server_without_logical_decoding() {
    let cluster =
        PrivateCluster::start("wal_level = replica", &["host all all 127.0.0.1/32 trust"]);
    let url = format!("postgresql://postgres@127.0.0.1:{}/postgres", cluster.port);
    let spec = RelaySpec::for_url("ops_wal", &url);
    assert_check_fails(
        &outboxd(&spec, &["check"], &[]),
        "wal_level = replica",
        "ALTER SYSTEM SET wal_level = logical; then restart PostgreSQL",
    );
}

/// GET `path` on `address`; the status code and the body.
fn http_get(address: &str, path: &str) -> Option<(u16, String)> {
    let mut stream = TcpStream::connect(address).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(stream, "GET {path} HTTP/1.0\r\nHost: {address}\r\n\r\n").ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).ok()?;
    let status = response.split_whitespace().nth(1)?.parse().ok()?;
    let body = response.split_once("\r\n\r\n").map(|(_, b)| b.to_owned())?;
    Some((status, body))
}

/// The value of the sample `name{labels}` in a Prometheus text exposition.
fn sample(exposition: &str, series: &str) -> Option<f64> {
    exposition
        .lines()
        .find_map(|line| line.strip_prefix(series)?.trim().parse().ok())
}

/// Polls `/readyz` until it answers `status`.
fn wait_for_readiness(address: &str, status: u16, timeout: Duration) {
    let deadline = Instant::now() + timeout;
    loop {
        let answer = http_get(address, "/readyz");
        if answer.as_ref().map(|(code, _)| *code) == Some(status) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "/readyz never answered {status}; last: {answer:?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[tokio::test]
async fn metrics_count_what_consumers_receive_and_readyz_follows_postgres() {
    let cluster = PrivateCluster::start(
        "wal_level = logical\nmax_wal_senders = 10\nmax_replication_slots = 10",
        &["host all all 127.0.0.1/32 trust"],
    );
    let url = format!("postgresql://postgres@127.0.0.1:{}/postgres", cluster.port);
    let spec = RelaySpec::for_url("ops_metrics", &url);
    let name = spec.name.clone();
    let migrated = outboxd(&spec, &["migrate"], &[]);
    assert!(migrated.status.success(), "{migrated:?}");

    let mut relay = RelayProcess::start(&spec);
    let address = relay.metrics_address(Duration::from_secs(30));
    assert_eq!(
        http_get(&address, "/healthz").map(|(code, _)| code),
        Some(200)
    );
    wait_for_readiness(&address, 200, Duration::from_secs(60));

    const EVENTS: usize = 50;
    let topic = format!("outbox.event.{name}");
    psql(
        &url,
        &format!(
            "INSERT INTO outbox (aggregatetype, aggregateid, type, payload) \
             SELECT '{name}', 'agg-' || (i % 5), 'Happened', jsonb_build_object('i', i) \
             FROM generate_series(1, {EVENTS}) i"
        ),
    )
    .expect("insert events");
    let received = read_topic(
        &topic,
        Isolation::ReadCommitted,
        Duration::from_secs(60),
        |m| m.len() >= EVENTS,
    );
    assert_eq!(received.len(), EVENTS, "{}", relay.log_text());

    let (code, exposition) = http_get(&address, "/metrics").expect("/metrics answers");
    assert_eq!(code, 200);
    let series = format!("outboxd_events_published_total{{topic=\"{topic}\"}}");
    assert_eq!(
        sample(&exposition, &series),
        Some(EVENTS as f64),
        "{exposition}"
    );
    assert!(
        sample(
            &exposition,
            "outboxd_kafka_transactions_total{result=\"committed\"}"
        ) >= Some(1.0)
    );
    assert!(
        sample(&exposition, "outboxd_checkpoint_lsn") > Some(0.0),
        "{exposition}"
    );
    assert!(sample(&exposition, "outboxd_end_to_end_latency_seconds_count") >= Some(1.0));
    assert_eq!(sample(&exposition, "outboxd_up"), Some(1.0));
    assert_eq!(sample(&exposition, "outboxd_ready"), Some(1.0));

    // status reads the same checkpoint from Kafka.
    let status = outboxd(&spec, &["status", "--json"], &[]);
    assert!(status.status.success(), "{status:?}");
    let status: serde_json::Value = serde_json::from_slice(&status.stdout).expect("status JSON");
    assert_eq!(status["checkpoint"]["events"], EVENTS as u64, "{status}");
    assert_eq!(status["slot_state"]["active"], true, "{status}");

    // Postgres stops: not ready, still alive.
    cluster.stop();
    wait_for_readiness(&address, 503, Duration::from_secs(30));
    assert_eq!(
        http_get(&address, "/healthz").map(|(code, _)| code),
        Some(200)
    );
    relay.kill();
}

#[tokio::test]
async fn sighup_rereads_the_log_level() {
    let db = TestDb::create("ops_hup").await;
    let mut spec = RelaySpec::for_db(&db);
    spec.extra = "[log]\nlevel = \"warn\"\n".into();
    assert!(outboxd(&spec, &["migrate"], &[]).status.success());
    // An empty RUST_LOG leaves the file in charge.
    let mut relay = RelayProcess::start_with_env(&spec, &[("RUST_LOG", "")]);
    std::thread::sleep(Duration::from_secs(3));
    assert!(
        !relay.log_text().contains("starting replication"),
        "info lines must be filtered out at warn:\n{}",
        relay.log_text()
    );
    let config = std::fs::read_to_string(relay.config_path()).expect("config");
    std::fs::write(
        relay.config_path(),
        config.replace("level = \"warn\"", "level = \"debug\""),
    )
    .expect("rewrite config");
    Command::new("kill")
        .args(["-HUP", &relay.pid().to_string()])
        .status()
        .expect("kill -HUP");
    let deadline = Instant::now() + Duration::from_secs(20);
    psql(
        &db.url,
        "INSERT INTO outbox (aggregatetype, aggregateid, type, payload) \
         VALUES ('hup', '1', 'T', '{}')",
    )
    .expect("insert");
    while !relay.log_text().contains("committed a Kafka transaction") {
        assert!(
            Instant::now() < deadline,
            "no debug line after SIGHUP:\n{}",
            relay.log_text()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(relay.log_text().contains("SIGHUP: log level reloaded"));
    let status = relay.signal_and_wait("TERM", Duration::from_secs(30));
    assert_eq!(status.and_then(|s| s.code()), Some(0));
}

#[tokio::test]
async fn no_log_line_or_output_shows_a_secret() {
    const PASSWORD: &str = "Pw-7c1e9d-s3cr3t";
    const KAFKA_SECRET: &str = "kafka-5e2f-s3cr3t";
    const KEY_SECRET: &str = "key-91b4-s3cr3t";
    let cluster = PrivateCluster::start(
        "wal_level = logical\npassword_encryption = 'scram-sha-256'",
        &["host all app 127.0.0.1/32 scram-sha-256"],
    );
    cluster
        .psql(&format!(
            "CREATE ROLE app LOGIN SUPERUSER REPLICATION PASSWORD '{PASSWORD}'"
        ))
        .expect("create role");
    let secret_file = cluster.write_file("kafka-secret", KAFKA_SECRET.as_bytes(), "0644");
    let key_secret_file = cluster.write_file("key-secret", KEY_SECRET.as_bytes(), "0644");
    let url = format!(
        "postgresql://app:{PASSWORD}@127.0.0.1:{}/postgres",
        cluster.port
    );
    let mut spec = RelaySpec::for_url("ops_secret", &url);
    let name = spec.name.clone();
    // The broker is PLAINTEXT, so neither is used; tests/kafka_security.rs checks them in use.
    spec.extra = format!(
        "[kafka.property_files]\n\"sasl.password\" = {:?}\n\"ssl.key.password\" = {:?}\n",
        secret_file.display().to_string(),
        key_secret_file.display().to_string()
    );
    let debug = [("RUST_LOG", "debug")];
    let mut outputs = vec![
        outboxd(&spec, &["migrate"], &debug),
        outboxd(&spec, &["check"], &debug),
    ];
    let mut relay = RelayProcess::start_with_env(&spec, &debug);
    relay.wait_streaming(Duration::from_secs(60));
    psql(
        &url,
        &format!(
            "INSERT INTO outbox (aggregatetype, aggregateid, type, payload) \
             SELECT '{name}', 'a', 'T', '{{}}' FROM generate_series(1, 5)"
        ),
    )
    .expect("insert");
    let topic = format!("outbox.event.{name}");
    let received = read_topic(
        &topic,
        Isolation::ReadCommitted,
        Duration::from_secs(60),
        |m| m.len() >= 5,
    );
    assert_eq!(received.len(), 5, "{}", relay.log_text());
    outputs.push(outboxd(&spec, &["status"], &debug));
    // Failures print errors: a wrong password, and an unreachable broker with the right one.
    let mut wrong = spec.clone();
    wrong.url = url.replace(PASSWORD, "not-the-password");
    outputs.push(outboxd(&wrong, &["check"], &debug));
    assert_eq!(
        relay
            .signal_and_wait("TERM", Duration::from_secs(30))
            .and_then(|s| s.code()),
        Some(0)
    );
    let nowhere = format!("127.0.0.1:{}", free_port());
    let mut broken = RelayProcess::start_with_env(
        &spec,
        &[
            ("RUST_LOG", "debug"),
            ("OUTBOXD__KAFKA__BOOTSTRAP_SERVERS", nowhere.as_str()),
        ],
    );
    std::thread::sleep(Duration::from_secs(5));
    broken.kill();

    let mut everything = relay.log_text() + &broken.log_text();
    for output in &outputs {
        everything.push_str(&String::from_utf8_lossy(&output.stdout));
        everything.push_str(&String::from_utf8_lossy(&output.stderr));
    }
    assert!(
        everything.lines().count() > 50,
        "too little output to judge:\n{everything}"
    );
    for secret in [PASSWORD, KAFKA_SECRET, KEY_SECRET] {
        let leaks: Vec<&str> = everything.lines().filter(|l| l.contains(secret)).collect();
        assert!(
            leaks.is_empty(),
            "{secret} leaked in:\n{}",
            leaks.join("\n")
        );
    }
}
