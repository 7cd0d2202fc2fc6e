//! What an operator touches, against real services: `check` (each failure names its fix),
//! `migrate`, `status`, the metrics and health endpoint, SIGHUP, and logs that never show a secret.

mod support;

use std::process::{Command, Output};
use std::time::{Duration, Instant};

use support::http::{http_get, sample, wait_for_readiness};
use support::kafka::{read_topic, Isolation};
use support::postgres::{free_port, psql, PrivateCluster, TestDb};
use support::relay::{outboxd, RelayProcess, RelaySpec};
use support::unique_name;
use support::wait::wait_until_blocking;

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
    // Every transaction that reached the Kafka commit passed the earlier points first.
    for reached in ["decoded", "produced"] {
        let series = format!("outboxd_latency_since_commit_seconds_count{{reached=\"{reached}\"}}");
        assert!(
            sample(&exposition, &series)
                >= sample(&exposition, "outboxd_end_to_end_latency_seconds_count"),
            "{series}: {exposition}"
        );
    }
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
    // Its walsender holds the slot: the relay has passed "starting replication" (info), which
    // must not be in the log at warn.
    let slot_active = format!(
        "SELECT count(*) FROM pg_replication_slots WHERE slot_name = '{}' AND active",
        spec.slot
    );
    wait_until_blocking(
        Duration::from_secs(60),
        || psql(&db.url, &slot_active).is_ok_and(|n| n.trim() == "1"),
        || format!("the relay never took its slot:\n{}", relay.log_text()),
    );
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
    // Its errors are in the output judged below.
    wait_until_blocking(
        Duration::from_secs(60),
        || {
            broken
                .log_text()
                .contains(&format!("Connect to ipv4#{nowhere} failed"))
        },
        || format!("no connection error logged:\n{}", broken.log_text()),
    );
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

/// `migrate`, `check`, `status` and `run` as relay role `role` (a URL derived from `db`'s).
fn spec_as_role(db: &TestDb, role: &str) -> RelaySpec {
    let mut spec = RelaySpec::for_db(db);
    let mut url = url::Url::parse(&db.url).expect("db url");
    url.set_username(role).expect("a user name");
    spec.url = url.to_string();
    spec
}

/// Whether `role` is a superuser, and the tables publication `publication` publishes: names read
/// back as parameters, never spliced.
async fn role_and_publication(db: &TestDb, role: &str, publication: &str) -> (bool, Vec<String>) {
    let client = db.client().await;
    let superuser: bool = client
        .query_one("SELECT rolsuper FROM pg_roles WHERE rolname = $1", &[&role])
        .await
        .expect("role exists")
        .get(0);
    let tables = client
        .query(
            "SELECT tablename::text FROM pg_publication_tables WHERE pubname = $1",
            &[&publication],
        )
        .await
        .expect("publication tables")
        .iter()
        .map(|row| row.get(0))
        .collect();
    (superuser, tables)
}

#[tokio::test]
async fn migrate_does_not_reexpand_a_publication_name_into_sql() {
    // Issue 13: templates substituted one variable after another re-expanded `${publication}`
    // inside the already substituted literal, and its raw `'` ended the literal: the rest ran as
    // SQL with the admin's rights.
    let db = TestDb::create("ops_inject").await;
    let role = format!("inj_{}", db.name.rsplit('_').next().expect("unique suffix"));
    psql(&db.url, &format!("CREATE ROLE {role} LOGIN REPLICATION")).expect("create role");
    let mut spec = spec_as_role(&db, &role);
    spec.publication = format!("')THEN ALTER ROLE {role} SUPERUSER;--${{publication}}");
    assert!(spec.publication.len() <= 63, "{}", spec.publication.len());
    let migrated = outboxd(&spec, &["migrate", "--admin-url", &db.url], &[]);
    assert!(migrated.status.success(), "{migrated:?}");
    let (superuser, tables) = role_and_publication(&db, &role, &spec.publication).await;
    assert!(!superuser, "migrate made {role} a superuser");
    assert_eq!(tables, ["outbox"], "the publication keeps its exact name");
    psql(&db.url, &format!("DROP OWNED BY {role}; DROP ROLE {role}")).expect("drop role");
}

#[tokio::test]
async fn hostile_names_in_every_sql_field_stay_names() {
    // Quotes, `$$` (which would end a DO body), `${…}`, a semicolon, a backslash and non-ASCII
    // letters, in every configured name that reaches SQL.
    const HOSTILE: &str = "'\"$$;\\ ${publication} ü😀";
    let db = TestDb::create("ops_hostile").await;
    let tag = db
        .name
        .rsplit('_')
        .next()
        .expect("unique suffix")
        .to_owned();
    let role = format!("r{HOSTILE}{tag}");
    let ident = outboxd::pg::sql::quote_identifier;
    psql(
        &db.url,
        &format!("CREATE ROLE {} LOGIN REPLICATION", ident(&role)),
    )
    .expect("create role");
    let mut spec = spec_as_role(&db, &role);
    spec.name = format!("n{HOSTILE}{tag}");
    spec.publication = format!("p{HOSTILE}");

    // Logical mode: migrate as admin, then check, run and status as the hostile role.
    let migrated = outboxd(&spec, &["migrate", "--admin-url", &db.url], &[]);
    assert!(migrated.status.success(), "{migrated:?}");
    let (superuser, tables) = role_and_publication(&db, &role, &spec.publication).await;
    assert!(!superuser);
    assert_eq!(tables, ["outbox"]);
    let checked = outboxd(&spec, &["check"], &[]);
    assert!(checked.status.success(), "{}", stdout(&checked));
    let mut relay = RelayProcess::start(&spec);
    relay.wait_streaming(Duration::from_secs(60));
    let aggregate = format!("{}_agg", db.name);
    psql(
        &db.url,
        &format!(
            "INSERT INTO outbox (aggregatetype, aggregateid, type, payload) \
             SELECT '{aggregate}', 'k', 'T', '{{}}' FROM generate_series(1, 3)"
        ),
    )
    .expect("insert");
    let received = read_topic(
        &format!("outbox.event.{aggregate}"),
        Isolation::ReadCommitted,
        Duration::from_secs(60),
        |m| m.len() >= 3,
    );
    assert_eq!(received.len(), 3, "{}", relay.log_text());
    let status = outboxd(&spec, &["status", "--json"], &[]);
    assert!(status.status.success(), "{status:?}");
    let status: serde_json::Value = serde_json::from_slice(&status.stdout).expect("status JSON");
    assert_eq!(status["checkpoint"]["events"], 3, "{status}");
    assert_eq!(status["relay"], spec.name.as_str(), "{status}");
    assert_eq!(
        relay
            .signal_and_wait("TERM", Duration::from_secs(30))
            .and_then(|s| s.code()),
        Some(0),
        "{}",
        relay.log_text()
    );

    // Poll mode, marking rows: hostile schema, table and column names.
    let (schema, table) = (format!("s{HOSTILE}"), format!("t.{HOSTILE}"));
    let (id, seq, mark) = (
        format!("i{HOSTILE}"),
        format!("q{HOSTILE}"),
        format!("m{HOSTILE}"),
    );
    let name = format!("{}.{}", ident(&schema), ident(&table));
    psql(
        &db.url,
        &format!(
            "CREATE SCHEMA {s}; GRANT USAGE ON SCHEMA {s} TO {r}; \
             CREATE TABLE {name} ({id} uuid PRIMARY KEY DEFAULT gen_random_uuid(), \
                 aggregatetype text, aggregateid text, type text, payload jsonb, \
                 {seq} bigserial, {mark} timestamptz); \
             CREATE INDEX ON {name} ({seq}); \
             GRANT SELECT, UPDATE ON {name} TO {r}; \
             INSERT INTO {name} (aggregatetype, aggregateid, type, payload) \
             SELECT '{aggregate}', 'p', 'T', '{{}}' FROM generate_series(1, 4)",
            s = ident(&schema),
            r = ident(&role),
            id = ident(&id),
            seq = ident(&seq),
            mark = ident(&mark),
        ),
    )
    .expect("hostile outbox table");
    let mut poll = spec.clone();
    poll.mode = "poll".into();
    poll.name = format!("{}p", spec.name);
    poll.offsets_topic = db.topic("poll_offsets");
    poll.extra = format!(
        "[outbox]\ntables = [{:?}]\n[outbox.columns]\nid = {id:?}\n\
         [poll]\norder_by = {seq:?}\nafter_publish = \"mark\"\nmark_column = {mark:?}\n",
        format!("{schema}.{table}")
    );
    let migrated = outboxd(&poll, &["migrate", "--admin-url", &db.url], &[]);
    assert!(migrated.status.success(), "{migrated:?}");
    let checked = outboxd(&poll, &["check"], &[]);
    assert!(checked.status.success(), "{}", stdout(&checked));
    let mut relay = RelayProcess::start(&poll);
    let received = read_topic(
        &format!("outbox.event.{aggregate}"),
        Isolation::ReadCommitted,
        Duration::from_secs(60),
        |m| m.len() >= 7,
    );
    assert_eq!(received.len(), 7, "{}", relay.log_text());
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let status = outboxd(&poll, &["status", "--json"], &[]);
        assert!(status.status.success(), "{status:?}");
        let status: serde_json::Value =
            serde_json::from_slice(&status.stdout).expect("status JSON");
        if status["backlog"][0]["rows"] == 0 {
            break;
        }
        assert!(Instant::now() < deadline, "rows never marked: {status}");
        std::thread::sleep(Duration::from_millis(200));
    }
    // The relay holds the advisory lock of its (hostile) name: a second one waits for it.
    relay.kill();
    psql(&db.url, &format!("DROP SCHEMA {} CASCADE", ident(&schema))).expect("drop schema");
    psql(
        &db.url,
        &format!("DROP OWNED BY {r}; DROP ROLE {r}", r = ident(&role)),
    )
    .expect("drop role");
}

/// Runs `outboxd <args> --config <file with text>` to its end.
fn outboxd_with_file(text: &str, args: &[&str]) -> Output {
    let dir = tempfile::tempdir().expect("temp dir");
    let config = dir.path().join("outboxd.toml");
    std::fs::write(&config, text).expect("write config");
    Command::new(env!("CARGO_BIN_EXE_outboxd"))
        .args(args)
        .arg("--config")
        .arg(&config)
        .output()
        .expect("run outboxd")
}

#[test]
fn values_run_cannot_work_with_exit_2_from_every_command_naming_the_key() {
    let spec = RelaySpec::for_url("ops_values", "postgresql://outboxd@127.0.0.1:1/app");
    let cases = [
        (
            "status_interval = \"200ms\"",
            "status_interval = \"0s\"",
            "relay.status_interval",
        ),
        (
            "wal_poll_interval = \"200ms\"",
            "wal_poll_interval = \"0s\"",
            "metrics.wal_poll_interval",
        ),
        (
            "wal_poll_interval = \"200ms\"",
            "wal_poll_interval = \"200ms\"\nstall_timeout = \"0s\"",
            "metrics.stall_timeout",
        ),
        (
            "call_timeout = \"30s\"",
            "call_timeout = \"0s\"",
            "kafka.call_timeout",
        ),
        (
            &format!("slot = {:?}", spec.slot),
            "slot = \"bad-slot\"",
            "postgres.slot",
        ),
        (
            &format!("slot = {:?}", spec.slot),
            "slot = \"Upper\"",
            "postgres.slot",
        ),
        (
            &format!("name = {:?}", spec.name),
            "name = \"\"",
            "relay.name",
        ),
    ];
    let toml = spec.toml();
    for (good, bad, key) in cases {
        assert!(toml.contains(good), "{good} in {toml}");
        let text = toml.replacen(good, bad, 1);
        for command in ["run", "check", "status", "migrate"] {
            let started = Instant::now();
            let output = outboxd_with_file(&text, &[command]);
            let stderr = String::from_utf8_lossy(&output.stderr);
            assert_eq!(
                output.status.code(),
                Some(2),
                "{command} with {bad}: {stderr}"
            );
            assert!(stderr.contains(key), "{command} with {bad}: {stderr}");
            assert!(
                started.elapsed() < Duration::from_secs(10),
                "{command} with {bad}"
            );
        }
    }
}

#[test]
fn a_malformed_file_never_echoes_the_password() {
    const PASSWORD: &str = "Pw-1f4e\\s3cr3t";
    let spec = RelaySpec::for_url("ops_malformed", "postgresql://outboxd@127.0.0.1:1/app");
    // The spec writes the URL escaped; written raw, the backslash is an invalid TOML escape.
    let text = spec.toml().replacen(
        "postgresql://outboxd@",
        &format!("postgresql://outboxd:{PASSWORD}@"),
        1,
    );
    assert!(text.contains(PASSWORD), "{text}");
    for command in ["run", "check", "status", "migrate"] {
        let output = outboxd_with_file(&text, &[command]);
        let everything = format!(
            "{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        assert_eq!(output.status.code(), Some(2), "{command}: {everything}");
        assert!(everything.contains("line"), "{command}: {everything}");
        assert!(!everything.contains("s3cr3t"), "{command}: {everything}");
    }
}

/// The names of the topics the dev broker has.
fn topics() -> Vec<String> {
    let consumer: rdkafka::consumer::BaseConsumer =
        support::kafka::client_config().create().expect("consumer");
    rdkafka::consumer::Consumer::fetch_metadata(&consumer, None, Duration::from_secs(10))
        .expect("metadata")
        .topics()
        .iter()
        .map(|t| t.name().to_owned())
        .collect()
}

#[tokio::test]
async fn check_and_status_change_nothing_and_tell_the_truth_fast() {
    let db = TestDb::create("ops_truth").await;
    let spec = RelaySpec::for_db(&db);
    assert!(outboxd(&spec, &["migrate"], &[]).status.success());

    // check creates neither the offsets topic nor the dead-letter topic (a metadata request
    // naming them would, on a broker with auto.create.topics.enable).
    let mut fresh = spec.clone();
    fresh.extra = format!("[dead_letter]\ntopic = {:?}\n", db.topic("dlq"));
    let checked = outboxd(&fresh, &["check"], &[]);
    assert!(checked.status.success(), "{}", stdout(&checked));
    assert!(
        stdout(&checked).contains("has committed no checkpoint yet"),
        "{}",
        stdout(&checked)
    );
    let existing = topics();
    for topic in [&spec.offsets_topic, &db.topic("dlq")] {
        assert!(!existing.contains(topic), "check created {topic}");
    }

    // status before the first checkpoint: no error, and it says so.
    let status = outboxd(&spec, &["status"], &[]);
    assert!(status.status.success(), "{status:?}");
    assert!(stdout(&status).contains("none committed yet"), "{status:?}");

    // Kafka down: check's report carries no librdkafka lines, status ends in seconds.
    let nowhere = format!("127.0.0.1:{}", free_port());
    let env = [("OUTBOXD__KAFKA__BOOTSTRAP_SERVERS", nowhere.as_str())];
    let down = outboxd(&spec, &["check"], &env);
    assert_check_fails(
        &down,
        &format!("no broker at {nowhere} answered"),
        "check kafka.bootstrap_servers",
    );
    let everything = stdout(&down) + &String::from_utf8_lossy(&down.stderr);
    assert!(!everything.contains("librdkafka"), "{everything}");
    let started = Instant::now();
    let status = outboxd(&spec, &["status"], &env);
    assert_eq!(status.status.code(), Some(1), "{status:?}");
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "{:?}",
        started.elapsed()
    );
    assert!(
        String::from_utf8_lossy(&status.stderr).contains(&format!("no Kafka broker at {nowhere}")),
        "{status:?}"
    );

    // A relay commits a checkpoint; then its slot is lost.
    let mut relay = RelayProcess::start(&spec);
    relay.wait_streaming(Duration::from_secs(60));
    psql(
        &db.url,
        &format!(
            "INSERT INTO outbox (aggregatetype, aggregateid, type, payload) \
             VALUES ('{}', 'a', 'T', '{{}}')",
            db.name
        ),
    )
    .expect("insert");
    read_topic(
        &format!("outbox.event.{}", db.name),
        Isolation::ReadCommitted,
        Duration::from_secs(60),
        |m| !m.is_empty(),
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    while !stdout(&outboxd(&spec, &["status"], &[])).contains("1 events in total") {
        assert!(
            Instant::now() < deadline,
            "no checkpoint: {}",
            relay.log_text()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    assert_eq!(
        relay
            .signal_and_wait("TERM", Duration::from_secs(30))
            .and_then(|s| s.code()),
        Some(0)
    );
    psql(
        &db.url,
        &format!("SELECT pg_drop_replication_slot('{}')", spec.slot),
    )
    .expect("drop slot");
    assert_check_fails(
        &outboxd(&spec, &["check"], &[]),
        &format!("slot {:?} does not exist, but relay", spec.slot),
        "use a new relay.name",
    );
    let status = outboxd(&spec, &["status", "--json"], &[]);
    let json: serde_json::Value = serde_json::from_slice(&status.stdout).expect("status JSON");
    assert_eq!(json["slot_lost"], true, "{json}");
    let status = outboxd(&spec, &["status"], &[]);
    assert!(stdout(&status).contains("DOES NOT EXIST"), "{status:?}");
}

#[tokio::test]
async fn check_spells_odd_names_in_its_fixes_as_sql_does() {
    let db = TestDb::create("ops_odd").await;
    let mut spec = RelaySpec::for_db(&db);
    assert!(outboxd(&spec, &["migrate"], &[]).status.success());
    psql(
        &db.url,
        "CREATE TABLE \"Odd Name\" (id uuid PRIMARY KEY, aggregatetype text, aggregateid text, \
         type text, payload jsonb)",
    )
    .expect("odd table");
    spec.extra = "[outbox]\ntables = [\"public.outbox\", \"public.Odd Name\"]\n".into();
    assert_check_fails(
        &outboxd(&spec, &["check"], &[]),
        "outbox table public.Odd Name is in none of the publications",
        &format!(
            "ALTER PUBLICATION {} ADD TABLE public.\"Odd Name\";",
            db.publication
        ),
    );
    let mut poll = spec.clone();
    poll.mode = "poll".into();
    assert_check_fails(
        &outboxd(&poll, &["check"], &[]),
        "public.Odd Name has no column \"seq\"",
        "ALTER TABLE public.\"Odd Name\" ADD COLUMN seq bigserial",
    );
}

#[tokio::test]
async fn rows_written_between_migrate_and_the_first_start_are_published() {
    // Issue 13: migrate, the application writes, check, then run: the slot the relay created on
    // its first start began after the rows and 0 of 20 arrived.
    const ROWS: usize = 20;
    let db = TestDb::create("ops_first").await;
    let spec = RelaySpec::for_db(&db);
    let migrated = outboxd(&spec, &["migrate"], &[]);
    assert!(
        stdout(&migrated).contains(&format!("created replication slot {}", spec.slot)),
        "{migrated:?}"
    );
    psql(
        &db.url,
        &format!(
            "INSERT INTO outbox (aggregatetype, aggregateid, type, payload) \
             SELECT '{}', 'k' || i, 'T', '{{}}' FROM generate_series(1, {ROWS}) i",
            db.name
        ),
    )
    .expect("insert");
    let checked = outboxd(&spec, &["check"], &[]);
    assert!(checked.status.success(), "{}", stdout(&checked));
    assert!(!stdout(&checked).contains("NEVER"), "{}", stdout(&checked));
    let again = outboxd(&spec, &["migrate"], &[]);
    assert!(
        !stdout(&again).contains("created replication slot"),
        "{again:?}"
    );

    // Every row came through the slot: all of them counted as streamed.
    publishes_all_and_counts_them_streamed(&spec, ROWS);

    // A relay name without a checkpoint whose slot does not exist yet: the rows already in the
    // table are older than any slot it will get, and check says so loudly.
    let mut other = spec.clone();
    other.name = format!("{}_other", spec.name);
    other.slot = format!("{}_other", spec.slot);
    let checked = outboxd(&other, &["check"], &[]);
    let report = stdout(&checked);
    assert!(checked.status.success(), "{report}");
    assert!(
        report.lines().any(|l| l.starts_with("WARN")
            && l.contains(&format!(
                "holds {ROWS} row(s) written before replication slot"
            ))),
        "{report}"
    );
}

/// With `synchronous_commit = off` a transaction is visible before its commit record is written
/// (the WAL writer writes it within `wal_writer_delay`, here 10 s, unless a page fills): the first
/// start counts the outbox's rows at the position WAL is inserted at, not the one it is written
/// up to, else it would call the rows of such a transaction older than the slot and warn that
/// they will never be published while it publishes them; `check` before it waits for that WAL to
/// be flushed before peeking the slot, for the same reason.
#[test]
fn rows_committed_asynchronously_just_before_the_first_start_are_not_called_older() {
    const ROWS: usize = 20;
    let cluster = PrivateCluster::start(
        "wal_level = logical\nsynchronous_commit = off\nwal_writer_delay = 10000ms",
        &["host all all 127.0.0.1/32 trust"],
    );
    let url = format!("postgresql://postgres@127.0.0.1:{}/postgres", cluster.port);
    let spec = RelaySpec::for_url("ops_async", &url);
    let migrated = outboxd(&spec, &["migrate"], &[]);
    assert!(migrated.status.success(), "{migrated:?}");
    let written = psql(
        &url,
        &format!(
            "INSERT INTO outbox (aggregatetype, aggregateid, type, payload) \
             SELECT '{}', 'k' || i, 'T', '{{}}' FROM generate_series(1, {ROWS}) i; \
             SELECT pg_current_wal_lsn() < pg_current_wal_insert_lsn()",
            spec.name
        ),
    )
    .expect("insert");
    // What makes the case: the commit is not written yet (else the test proves nothing).
    assert_eq!(written.trim(), "t", "the commit record was written at once");
    // `check` peeks the slot, which decodes only flushed WAL: it waits for the flush.
    let checked = outboxd(&spec, &["check"], &[]);
    assert!(checked.status.success(), "{}", stdout(&checked));
    assert!(!stdout(&checked).contains("NEVER"), "{}", stdout(&checked));

    publishes_all_and_counts_them_streamed(&spec, ROWS);
}

/// Runs the relay's first start over `public.outbox` holding `rows` rows that all came through
/// the slot: it publishes them, and its count of rows older than the slot (relay/older_rows.rs)
/// finds them all streamed, so it warns of none.
///
/// The count ends once the stream passes the position it was taken at, which on a shared server
/// may take the walsender through other databases' WAL first; each attempt of the relay before
/// its first checkpoint counts anew, so there may be more than one count, and each must be whole.
fn publishes_all_and_counts_them_streamed(spec: &RelaySpec, rows: usize) {
    let mut relay = RelayProcess::start(spec);
    let received = read_topic(
        &format!("outbox.event.{}", spec.name),
        Isolation::ReadCommitted,
        Duration::from_secs(60),
        |m| m.len() >= rows,
    );
    assert_eq!(received.len(), rows, "{}", relay.log_text());
    let counted = "counted the outbox table's rows older than the slot";
    assert!(
        relay.wait_log(Duration::from_secs(90), |log| log.contains(counted)),
        "no count of the outbox table's rows:\n{}",
        relay.log_text()
    );
    let counts: Vec<(String, u64, u64)> = relay
        .log_text()
        .lines()
        .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
        .filter(|entry| entry["fields"]["message"] == counted)
        .map(|entry| {
            let fields = &entry["fields"];
            (
                fields["table"].as_str().unwrap_or_default().to_owned(),
                fields["rows"].as_u64().unwrap_or_default(),
                fields["streamed"].as_u64().unwrap_or_default(),
            )
        })
        .collect();
    let whole = ("public.outbox".to_owned(), rows as u64, rows as u64);
    assert!(
        counts.iter().all(|count| *count == whole),
        "{counts:?} in:\n{}",
        relay.log_text()
    );
    assert!(
        !relay.log_text().contains("NEVER BE PUBLISHED"),
        "{}",
        relay.log_text()
    );
    relay.kill();
}
