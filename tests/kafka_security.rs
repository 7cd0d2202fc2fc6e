//! The relay against a secured broker, as managed Kafka runs it: exactly once, in order, over
//! SASL_SSL with SCRAM-SHA-512, over mTLS and over SASL_PLAINTEXT with PLAIN, each as a principal
//! holding only the ACLs README's "Kafka security" section tells operators to grant; a wrong password
//! named in the log; no password or key password in any output.

mod support;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use support::idp::Idp;
use support::kafka::create_topic_at;
use support::outbox::{
    assert_exactly_once_in_order, publish_outbox, read_all_at, spawn_writer, Outbox,
};
use support::postgres::TestDb;
use support::relay::{outboxd, RelayProcess, RelaySpec};
use support::secure_kafka::{Listener, SecureKafka};

/// The librdkafka this binary links speaks TLS, SCRAM and OAUTHBEARER with OIDC: without them
/// production brokers cannot be reached (the build must keep rdkafka's `ssl`, `curl-static` and
/// `cmake-build` features).
#[test]
fn librdkafka_is_built_with_tls_sasl_and_oidc() {
    let features = rdkafka::ClientConfig::new()
        .create_native_config()
        .expect("native config")
        .get("builtin.features")
        .expect("builtin.features");
    for feature in [
        "ssl",
        "sasl_plain",
        "sasl_scram",
        "sasl_oauthbearer",
        "oidc",
    ] {
        assert!(
            features.split(',').any(|f| f == feature),
            "librdkafka lacks {feature}: {features}"
        );
    }
}

/// A relay over a fresh database, streaming to `kafka` through `listener`, and its outbox.
struct SecuredRelay {
    spec: RelaySpec,
    outbox: Outbox,
    /// The dead-letter topic, its own (the relay writes it only for changes it cannot route).
    dead_letter_topic: String,
    _db: TestDb,
}

impl SecuredRelay {
    /// The database with its outbox, publication and slot, and the event and offsets topics made by
    /// the administrator (the secured broker creates no topic by itself).
    async fn create(kafka: &SecureKafka, listener: Listener, password_file: &str) -> Self {
        let db = TestDb::create("kafka_sec").await;
        let outbox = Outbox {
            url: db.url.clone(),
            aggregate_type: db.name.clone(),
        };
        outbox.create_tables().await;
        publish_outbox(&outbox.client().await, &db.publication, Some(&db.slot)).await;
        let dead_letter_topic = db.topic("dlq");
        let mut spec = RelaySpec::for_db(&db);
        spec.bootstrap = kafka.bootstrap(listener).to_owned();
        spec.extra = format!(
            "[dead_letter]\ntopic = {dead_letter_topic:?}\n\n{}",
            kafka.relay_toml(listener, password_file)
        );
        create_topic_at(kafka.admin_bootstrap(), &outbox.topic(), 3).await;
        SecuredRelay {
            spec,
            outbox,
            dead_letter_topic,
            _db: db,
        }
    }

    /// The ACLs README lists, for this relay's principal and names.
    fn grant_documented_acls(&self, kafka: &SecureKafka, principal: &str) {
        self.grant_transactional_id(kafka, principal);
        self.grant_documented_acls_but_the_transactional_id(kafka, principal);
    }

    /// Write on the relay's transactional id, a prefix (`check` initializes
    /// `outboxd-<name>.check`, so as not to fence a running relay).
    fn grant_transactional_id(&self, kafka: &SecureKafka, principal: &str) {
        kafka.grant(
            principal,
            &["Write"],
            &[
                "--transactional-id",
                &format!("outboxd-{}", self.spec.name),
                "--resource-pattern-type",
                "prefixed",
            ],
        );
    }

    fn grant_documented_acls_but_the_transactional_id(&self, kafka: &SecureKafka, principal: &str) {
        kafka.grant(
            principal,
            &["Write"],
            &[
                "--topic",
                &self.outbox.topic(),
                "--topic",
                &self.spec.offsets_topic,
                "--topic",
                &self.dead_letter_topic,
            ],
        );
        // DescribeConfigs: the relay verifies that the offsets topic is compacted.
        kafka.grant(
            principal,
            &["Read", "Create", "DescribeConfigs"],
            &["--topic", &self.spec.offsets_topic],
        );
        // The checkpoint reader has a group id (never committed to), so librdkafka looks up its
        // coordinator: FindCoordinator wants Describe on the group.
        kafka.grant(
            principal,
            &["Describe"],
            &["--group", "outboxd-checkpoint-reader"],
        );
    }
}

/// Writers commit for a few seconds while the relay streams, is killed and started again (which
/// reads its checkpoint back: Read on the offsets topic); a read_committed consumer then sees every
/// event once, per key in commit order.
async fn exactly_once_through(kafka: &SecureKafka, listener: Listener) {
    let relay = SecuredRelay::create(kafka, listener, kafka.password_file(listener)).await;
    exactly_once(
        kafka,
        &relay,
        &kafka.principal(listener),
        &format!("{listener:?}"),
    )
    .await;
}

/// [`exactly_once_through`] with `relay`'s settings, as `principal`.
async fn exactly_once(kafka: &SecureKafka, relay: &SecuredRelay, principal: &str, label: &str) {
    tokio::task::block_in_place(|| relay.grant_documented_acls(kafka, principal));
    let stop = Arc::new(AtomicBool::new(false));
    let writer = spawn_writer(relay.outbox.clone(), stop.clone());
    let mut first = RelayProcess::start(&relay.spec);
    first.wait_for_commits_past(0).await;
    // Killed, not stopped: the next start must read the checkpoint back. (SIGTERM here hit a
    // relay bug: an abort refused with InvalidTransactionalState, then a panic on shutdown.)
    first.kill();
    let mut process = RelayProcess::start(&relay.spec);
    // The writer goes on until the second relay publishes too.
    process.wait_for_commits_past(0).await;
    stop.store(true, Ordering::Relaxed);
    let transactions = writer.await.expect("writer");
    let ids = relay.outbox.ids().await;
    let records = tokio::task::block_in_place(|| {
        read_all_at(kafka.admin_bootstrap(), &relay.outbox.topic(), ids.len())
    });
    assert_exactly_once_in_order(&records, &ids);
    assert!(
        process.wait_exit(Duration::ZERO).is_none(),
        "the relay kept running"
    );
    eprintln!(
        "{label}: {} events in {transactions} transactions",
        ids.len()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn exactly_once_over_scram_tls_mtls_and_plain_with_only_the_documented_acls() {
    let kafka = tokio::task::block_in_place(SecureKafka::start);
    for listener in [Listener::ScramSsl, Listener::Mtls, Listener::PlainSasl] {
        exactly_once_through(&kafka, listener).await;
    }
}

/// OAUTHBEARER with OIDC client credentials: librdkafka fetches the tokens itself from the token
/// endpoint of the test's identity provider, and the broker validates them against the provider's
/// JWKS (both real; only the provider is a stand-in). The exactly-once workload passes as the
/// tokens' subject holding the documented ACLs, and neither the client secret nor any token shows
/// in a debug-level log, `check` or `status --json`.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn exactly_once_over_oauthbearer_with_tokens_from_an_oidc_endpoint() {
    let idp = Idp::start("outboxd-relay", "relay_oauth");
    let kafka = tokio::task::block_in_place(|| {
        SecureKafka::start_with_env(&[("OUTBOXD_DEV_KAFKA_JWKS_URL", &idp.jwks_url())])
    });
    let listener = Listener::ScramSsl;
    let mut relay = SecuredRelay::create(&kafka, listener, kafka.password_file(listener)).await;
    relay.spec.extra = format!(
        "[dead_letter]\ntopic = {:?}\n\n[kafka.tls]\nca_file = {:?}\n\n[kafka.sasl]\n\
         mechanism = \"OAUTHBEARER\"\ntoken_endpoint_url = {:?}\nclient_id = {:?}\n\
         client_secret_file = {:?}\nscope = \"kafka\"\n",
        relay.dead_letter_topic,
        kafka.var("CA"),
        idp.token_url(),
        idp.client_id,
        idp.client_secret_file
    );
    exactly_once(&kafka, &relay, "User:relay_oauth", "OAUTHBEARER").await;
    assert!(idp.issued() > 0, "librdkafka fetched no token");

    let mut outputs = Vec::new();
    push_debug_outputs(&mut outputs, &relay.spec);
    let everything = outputs.concat();
    let mut secrets = idp.tokens();
    secrets.push(idp.client_secret().to_owned());
    assert_no_secret(&everything, &secrets);
}

/// A wrong SCRAM password: the relay's log says the broker refused the authentication (librdkafka
/// reports it through its error callback; `init_transactions` itself only times out), it keeps
/// retrying rather than reporting anything delivered, and neither the wrong password nor any
/// right one appears in its log, in `check` or in `status`, even at debug level.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_wrong_password_is_named_as_an_authentication_failure_and_never_shown() {
    const WRONG: &str = "wrong-7f3a-s3cr3t";
    let kafka = tokio::task::block_in_place(SecureKafka::start);
    let dir = tempfile::tempdir().expect("temp dir");
    let wrong_file = dir.path().join("wrong-password");
    std::fs::write(&wrong_file, WRONG).expect("write the wrong password");
    let wrong_file = wrong_file.display().to_string();
    let relay = SecuredRelay::create(&kafka, Listener::ScramSsl, &wrong_file).await;
    let principal = kafka.principal(Listener::ScramSsl);
    tokio::task::block_in_place(|| relay.grant_documented_acls(&kafka, &principal));

    let debug = [("RUST_LOG", "debug")];
    let mut refused = RelayProcess::start_with_env(&relay.spec, &debug);
    let deadline = Instant::now() + Duration::from_secs(90);
    while !refused.log_text().contains("Authentication failed") {
        assert!(
            Instant::now() < deadline,
            "no authentication failure in the log:\n{}",
            refused.log_text()
        );
        assert!(
            refused.wait_exit(Duration::ZERO).is_none(),
            "the relay exited without naming the failure:\n{}",
            refused.log_text()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    refused.kill();
    let mut outputs = vec![refused.log_text()];
    push_output(&mut outputs, &outboxd(&relay.spec, &["check"], &debug));

    // The right passwords, at debug level, over each listener: a relay, check and status.
    for listener in [Listener::ScramSsl, Listener::Mtls, Listener::PlainSasl] {
        let relay = SecuredRelay::create(&kafka, listener, kafka.password_file(listener)).await;
        tokio::task::block_in_place(|| {
            relay.grant_documented_acls(&kafka, &kafka.principal(listener));
        });
        push_debug_outputs(&mut outputs, &relay.spec);
    }

    let everything = outputs.concat();
    let mut secrets = kafka.secrets();
    secrets.push(WRONG.to_owned());
    assert_no_secret(&everything, &secrets);
}

/// No line of `output` (of which there must be enough to judge) holds any of `secrets`.
fn assert_no_secret(output: &str, secrets: &[String]) {
    assert!(
        output.lines().count() > 50,
        "too little output to judge:\n{output}"
    );
    for secret in secrets {
        let leaks: Vec<&str> = output.lines().filter(|l| l.contains(secret)).collect();
        assert!(
            leaks.is_empty(),
            "a secret leaked in:\n{}",
            leaks.join("\n")
        );
    }
}

/// `outboxd check` against the secured broker fails on each security mistake with the broker's or
/// librdkafka's reason (which reaches only the client's error callback) and its fix: an unknown
/// CA, a hostname the broker's certificate does not name, a wrong password, a mechanism the
/// listener does not enable, and a missing ACL, with the `kafka-acls` command that grants it (and
/// which, run, makes the check pass).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn check_names_tls_sasl_and_acl_failures_with_their_fix() {
    let kafka = tokio::task::block_in_place(SecureKafka::start);
    let listener = Listener::ScramSsl;
    let relay = SecuredRelay::create(&kafka, listener, kafka.password_file(listener)).await;
    let principal = kafka.principal(listener);
    tokio::task::block_in_place(|| {
        relay.grant_documented_acls_but_the_transactional_id(&kafka, &principal);
    });
    let check = |spec: &RelaySpec| {
        let output = outboxd(spec, &["check"], &[]);
        assert!(!output.status.success(), "check passed with a mistake");
        String::from_utf8_lossy(&output.stdout).into_owned()
    };
    let failure = |report: &str, expected: &[&str]| {
        let failed = report
            .lines()
            .any(|l| l.starts_with("FAIL") && expected.iter().all(|e| l.contains(e)));
        assert!(failed, "no FAIL with {expected:?} in:\n{report}");
    };

    // The missing ACL, then its fix run as printed.
    let report = tokio::task::block_in_place(|| check(&relay.spec));
    let transactional_id = format!("outboxd-{}", relay.spec.name);
    let fix = format!(
        "fix: kafka-acls.sh --bootstrap-server {} --command-config admin.properties --add \
         --allow-principal {principal} --operation Write --operation Describe --transactional-id \
         {transactional_id} --resource-pattern-type prefixed",
        relay.spec.bootstrap
    );
    failure(&report, &["Transactional Id authorization failed"]);
    assert!(
        report.lines().any(|l| l.trim() == fix),
        "no {fix:?} in:\n{report}"
    );
    tokio::task::block_in_place(|| {
        kafka.grant(
            &principal,
            &["Write", "Describe"],
            &[
                "--transactional-id",
                &transactional_id,
                "--resource-pattern-type",
                "prefixed",
            ],
        );
    });
    let output = tokio::task::block_in_place(|| outboxd(&relay.spec, &["check"], &[]));
    let report = String::from_utf8_lossy(&output.stdout);
    assert!(report.contains("transactions work"), "{report}");

    // TLS and SASL mistakes, each in a copy of the right settings.
    let dir = tempfile::tempdir().expect("temp dir");
    let wrong_file = dir.path().join("wrong-password");
    std::fs::write(&wrong_file, "wrong-password").expect("write the wrong password");
    let right_password = kafka.password_file(listener);
    let cases: [(&str, &str, &str, &[&str]); 4] = [
        (
            "unknown CA",
            kafka.var("CA"),
            kafka.var("CLIENT_CERT"),
            &["the TLS handshake with", "certificate verify failed"],
        ),
        (
            "wrong hostname",
            "127.0.0.1:",
            "localhost:",
            &[
                "the TLS handshake with localhost:",
                "certificate verify failed",
            ],
        ),
        (
            "wrong password",
            right_password,
            wrong_file.to_str().expect("UTF-8"),
            &["SASL authentication with", "invalid credentials"],
        ),
        (
            "mechanism not enabled",
            "SCRAM-SHA-512",
            "SCRAM-SHA-256",
            &["SASL authentication with", "SCRAM-SHA-256"],
        ),
    ];
    for (mistake, right, wrong, expected) in cases {
        let mut spec = relay.spec.clone();
        spec.bootstrap = spec.bootstrap.replace(right, wrong);
        spec.extra = spec.extra.replace(right, wrong);
        let started = Instant::now();
        let report = tokio::task::block_in_place(|| check(&spec));
        failure(&report, expected);
        eprintln!("{mistake}: FAIL in {:?}", started.elapsed());
    }
}

/// Appends, all at debug level, the log of a relay run with `spec` until it streams, and what
/// `check` and `status --json` printed meanwhile.
fn push_debug_outputs(outputs: &mut Vec<String>, spec: &RelaySpec) {
    let debug = [("RUST_LOG", "debug")];
    let mut running = RelayProcess::start_with_env(spec, &debug);
    running.wait_streaming(Duration::from_secs(60));
    push_output(outputs, &outboxd(spec, &["check"], &debug));
    push_output(outputs, &outboxd(spec, &["status", "--json"], &debug));
    running.kill();
    outputs.push(running.log_text());
}

/// Appends what a finished command printed on stdout and stderr.
fn push_output(outputs: &mut Vec<String>, output: &std::process::Output) {
    outputs.push(String::from_utf8_lossy(&output.stdout).into_owned());
    outputs.push(String::from_utf8_lossy(&output.stderr).into_owned());
}
