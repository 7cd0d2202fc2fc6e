//! The relay against a secured broker, as managed Kafka runs it: exactly once, in order, over
//! SASL_SSL with SCRAM-SHA-512, over mTLS and over SASL_PLAINTEXT with PLAIN, each as a principal
//! holding only the ACLs README's "Kafka security" section tells operators to grant (and as a relay
//! creating its topics, with the Create that adds); `check` naming each security mistake (an expired
//! broker certificate included) and each missing ACL with its fix; a wrong password named in the
//! log; no password or key password in any output.

mod support;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use support::idp::Idp;
use support::kafka::{create_topic_at, create_topic_with_at, topic_settings_at};
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
    /// `[kafka.topic_creation]` is on: the relay creates its event and dead-letter topics.
    relay_creates_topics: bool,
    _db: TestDb,
}

/// `[kafka.topic_creation]` of a relay that creates its topics, with settings other than the
/// broker's defaults (one partition, a week's retention): a topic with them is the relay's.
const TOPIC_CREATION: &str = "[kafka.topic_creation]\nenabled = true\npartitions = 2\n\
                              replication_factor = 1\nconfigs = { \"retention.ms\" = \"3600000\" }\n";

impl SecuredRelay {
    /// The database with its outbox, publication and slot, and the event topic made by the
    /// administrator (the secured broker creates no topic by itself).
    async fn create(kafka: &SecureKafka, listener: Listener, password_file: &str) -> Self {
        Self::create_with(kafka, listener, password_file, false).await
    }

    /// [`SecuredRelay::create`], or, with `relay_creates_topics`, a relay with [`TOPIC_CREATION`]
    /// whose event topic is left for it to create.
    async fn create_with(
        kafka: &SecureKafka,
        listener: Listener,
        password_file: &str,
        relay_creates_topics: bool,
    ) -> Self {
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
        if relay_creates_topics {
            spec.extra.push_str(TOPIC_CREATION);
        } else {
            create_topic_at(kafka.admin_bootstrap(), &outbox.topic(), 3).await;
        }
        SecuredRelay {
            spec,
            outbox,
            dead_letter_topic,
            relay_creates_topics,
            _db: db,
        }
    }

    /// The ACLs README lists, for this relay's names (its event topic is chosen per event, so
    /// `check` does not know it; the relay needs its Write all the same), with Create on the
    /// topics it creates.
    fn documented_acls(&self) -> Vec<Acl> {
        let (event_topic, dead_letter_topic) = (self.outbox.topic(), &self.dead_letter_topic);
        let mut acls = documented_acls(&self.spec, &event_topic, dead_letter_topic);
        if self.relay_creates_topics {
            for topic in [&event_topic, dead_letter_topic] {
                acls.push(Acl::new(&["Create"], ["--topic", topic]));
            }
        }
        acls
    }

    /// Grants `principal` the ACLs README lists.
    fn grant_documented_acls(&self, kafka: &SecureKafka, principal: &str) {
        grant_all(kafka, &[principal], &self.documented_acls());
    }
}

/// One ACL README's "Kafka security" section lists: its operations and AclCommand's options naming
/// its resource, in the order of the `kafka-acls` command `check` prints to grant it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Acl {
    operations: &'static [&'static str],
    resource: Vec<String>,
    /// `--resource-pattern-type prefixed`: the resource names a prefix.
    prefixed: bool,
}

impl Acl {
    fn new(operations: &'static [&'static str], resource: [&str; 2]) -> Acl {
        Acl {
            operations,
            resource: resource.map(str::to_owned).to_vec(),
            prefixed: false,
        }
    }

    /// AclCommand's options naming its resource and pattern type.
    fn resource_options(&self) -> Vec<&str> {
        let mut options: Vec<&str> = self.resource.iter().map(String::as_str).collect();
        if self.prefixed {
            options.extend(["--resource-pattern-type", "prefixed"]);
        }
        options
    }

    /// The fix `check` prints for this ACL missing, as `principal` dialling `bootstrap`.
    fn fix(&self, bootstrap: &str, principal: &str) -> String {
        let operations: String = self
            .operations
            .iter()
            .map(|o| format!(" --operation {o}"))
            .collect();
        let pattern = if self.prefixed {
            " --resource-pattern-type prefixed"
        } else {
            ""
        };
        format!(
            "fix: kafka-acls.sh --bootstrap-server {bootstrap} --command-config admin.properties \
             --add --allow-principal {principal}{operations} {}{pattern}",
            self.resource.join(" ")
        )
    }
}

/// README's list for a relay with `spec`'s name and offsets topic, writing `event_topic` and
/// dead-letter topic `dead_letter_topic`.
fn documented_acls(spec: &RelaySpec, event_topic: &str, dead_letter_topic: &str) -> Vec<Acl> {
    let write = &["Write", "Describe"];
    let offsets = ["--topic", spec.offsets_topic.as_str()];
    let transactional_id = format!("outboxd-{}", spec.name);
    vec![
        // A prefix: `check` initializes `outboxd-<name>.check`, so as not to fence a running relay.
        Acl {
            prefixed: true,
            ..Acl::new(write, ["--transactional-id", &transactional_id])
        },
        Acl::new(write, ["--topic", event_topic]),
        Acl::new(write, offsets),
        Acl::new(write, ["--topic", dead_letter_topic]),
        Acl::new(&["Read"], offsets),
        Acl::new(&["Create"], offsets),
        Acl::new(&["DescribeConfigs"], offsets),
        Acl::new(&["Describe"], ["--group", "outboxd-checkpoint-reader"]),
    ]
}

/// Grants `principals` every ACL of `acls`.
fn grant_all(kafka: &SecureKafka, principals: &[&str], acls: &[Acl]) {
    for acl in acls {
        kafka.grant(principals, acl.operations, &acl.resource_options());
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

/// The exactly-once workload over each listener, then over SCRAM by a relay that creates its
/// event topic (absent at start, and the broker creates none): it appears with the configured
/// settings, and the events flow exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn exactly_once_over_scram_tls_mtls_and_plain_with_only_the_documented_acls() {
    let kafka = tokio::task::block_in_place(SecureKafka::start);
    for listener in [Listener::ScramSsl, Listener::Mtls, Listener::PlainSasl] {
        exactly_once_through(&kafka, listener).await;
    }
    let listener = Listener::ScramSsl;
    let relay =
        SecuredRelay::create_with(&kafka, listener, kafka.password_file(listener), true).await;
    let principal = kafka.principal(listener);
    exactly_once(&kafka, &relay, &principal, "creating its topics").await;
    let topic = relay.outbox.topic();
    let settings = topic_settings_at(kafka.admin_bootstrap(), &topic, "retention.ms").await;
    assert_eq!(
        (settings.0, settings.1.as_deref()),
        (2, Some("3600000")),
        "{topic}'s partitions and retention"
    );
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
/// librdkafka's reason and its fix: TLS and SASL mistakes ([`tls_and_sasl_mistakes`]), a broker
/// certificate that expired ([`expired_certificate`]), and each ACL README lists, missing alone
/// ([`each_missing_acl`]). One broker for all.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn check_names_each_security_mistake_with_its_fix() {
    let started = Instant::now();
    let kafka = tokio::task::block_in_place(SecureKafka::start);
    let listener = Listener::ScramSsl;
    let relay = SecuredRelay::create(&kafka, listener, kafka.password_file(listener)).await;
    eprintln!("broker and database in {:?}", started.elapsed());
    tls_and_sasl_mistakes(&kafka, &relay);
    expired_certificate(&kafka, &relay).await;
    each_missing_acl(&kafka, &relay).await;
    eprintln!("all in {:?}", started.elapsed());
}

/// The report of `outboxd check` with `spec`, which must fail.
fn failed_check(spec: &RelaySpec) -> String {
    let output = outboxd(spec, &["check"], &[]);
    let report = String::from_utf8_lossy(&output.stdout).into_owned();
    assert_eq!(
        output.status.code(),
        Some(1),
        "check did not fail:\n{report}"
    );
    report
}

/// `report`'s FAIL lines.
fn fails(report: &str) -> Vec<&str> {
    report.lines().filter(|l| l.starts_with("FAIL")).collect()
}

/// An unknown CA, a hostname the broker's certificate does not name, a wrong password and a
/// mechanism the listener does not enable, each in a copy of `relay`'s right settings: a FAIL with
/// librdkafka's reason, which reaches only the client's error callback.
fn tls_and_sasl_mistakes(kafka: &SecureKafka, relay: &SecuredRelay) {
    let listener = Listener::ScramSsl;
    let failure = |report: &str, expected: &[&str]| {
        let failed = fails(report)
            .iter()
            .any(|l| expected.iter().all(|e| l.contains(e)));
        assert!(failed, "no FAIL with {expected:?} in:\n{report}");
    };
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
        let report = tokio::task::block_in_place(|| failed_check(&spec));
        failure(&report, expected);
        eprintln!("{mistake}: FAIL in {:?}", started.elapsed());
    }
}

/// The mTLS listener presenting a broker certificate that expired, signed by the right CA: a FAIL
/// saying that it expired, and when, with the fix of renewing it (librdkafka words it as any
/// certificate it cannot verify, pointing at the CA file). The other cases use other listeners.
async fn expired_certificate(kafka: &SecureKafka, relay: &SecuredRelay) {
    let started = Instant::now();
    let listener = Listener::Mtls;
    kafka.expire_certificate(listener).await;
    let mut spec = relay.spec.clone();
    spec.bootstrap = kafka.bootstrap(listener).to_owned();
    spec.extra = kafka.relay_toml(listener, kafka.password_file(listener));
    let report = tokio::task::block_in_place(|| failed_check(&spec));
    let lines: Vec<&str> = report.lines().collect();
    let named = lines.windows(2).any(|w| {
        w[0].starts_with("FAIL")
            && w[0].contains("the broker's certificate expired on 2025-01-01 00:00:00 UTC")
            && w[1]
                .trim()
                .starts_with("fix: renew the broker's certificate")
    });
    assert!(named, "no FAIL naming the expiry and its fix in:\n{report}");
    eprintln!("expired certificate: FAIL in {:?}", started.elapsed());
}

/// The table of README's ACLs: for each, a relay whose principal holds all the others fails
/// `check` with exactly one FAIL, naming what it may not do and followed by the `kafka-acls`
/// command that grants that ACL; a relay holding them all passes. With `[kafka.topic_creation]`
/// on and its event topic missing, a relay holding them all and Create on that topic passes, and
/// one without that Create fails with it.
///
/// One principal (SCRAM) for every case but the checkpoint reader's group, whose name is the same
/// for every relay: that case runs as the PLAIN listener's principal, holding the rest. Each case
/// has its relay name (transactional id), offsets, dead-letter and event topics (a fixed one, so
/// that `check` knows it), made by the administrator.
async fn each_missing_acl(kafka: &SecureKafka, base: &SecuredRelay) {
    struct Case {
        spec: RelaySpec,
        principal: String,
        /// The ACL withheld.
        missing: Option<Acl>,
    }
    let started = Instant::now();
    let acl_count = documented_acls(&base.spec, "e", "d").len();
    let group = acl_count - 1;
    let scram = kafka.principal(Listener::ScramSsl);
    let plain = kafka.principal(Listener::PlainSasl);
    let (both, scram_only) = ([scram.as_str(), plain.as_str()], [scram.as_str()]);
    let mut cases = Vec::new();
    let mut held = Vec::new();
    // Case i < acl_count lacks ACL i; then one lacking none; then the two with topic creation.
    for i in 0..acl_count + 3 {
        let creation = i > acl_count;
        let listener = if i == group {
            Listener::PlainSasl
        } else {
            Listener::ScramSsl
        };
        let mut spec = base.spec.clone();
        spec.name = format!("{}_c{i}", base.spec.name);
        spec.offsets_topic = format!("{}.c{i}", base.spec.offsets_topic);
        spec.bootstrap = kafka.bootstrap(listener).to_owned();
        let event_topic = format!("{}.c{i}", base.outbox.topic());
        let dead_letter_topic = format!("{}.c{i}", base.dead_letter_topic);
        spec.extra = format!(
            "[outbox]\ntopic = {event_topic:?}\n\n[dead_letter]\ntopic = {dead_letter_topic:?}\n\n\
             [kafka.topic_creation]\nenabled = {creation}\n\n{}",
            kafka.relay_toml(listener, kafka.password_file(listener))
        );
        let admin = kafka.admin_bootstrap();
        if !creation {
            create_topic_at(admin, &event_topic, 1).await;
        }
        create_topic_at(admin, &dead_letter_topic, 1).await;
        create_topic_with_at(
            admin,
            &spec.offsets_topic,
            1,
            &[("cleanup.policy", "compact")],
        )
        .await;
        let mut acls = documented_acls(&spec, &event_topic, &dead_letter_topic);
        if creation {
            acls.push(Acl::new(&["Create"], ["--topic", &event_topic]));
        }
        let missing = match i {
            _ if i < acl_count => Some(acls.remove(i)),
            _ if i == acl_count + 2 => acls.pop(),
            _ => None,
        };
        // The group is every case's: granted once (in case 0).
        held.extend(
            acls.into_iter()
                .filter(|acl| i == 0 || acl.resource[0] != "--group"),
        );
        cases.push(Case {
            spec,
            principal: kafka.principal(listener),
            missing,
        });
    }
    tokio::task::block_in_place(|| {
        for acl in &held {
            let principals: &[&str] = if acl.resource[0] == "--group" {
                &scram_only
            } else {
                &both
            };
            kafka.grant(principals, acl.operations, &acl.resource_options());
        }
    });
    eprintln!(
        "{} cases made and granted in {:?}",
        cases.len(),
        started.elapsed()
    );

    let started = Instant::now();
    // Three at a time: more keep a busy machine's broker from answering within check's 15 s.
    let outputs: Vec<_> = tokio::task::block_in_place(|| {
        cases
            .chunks(3)
            .flat_map(|chunk| {
                std::thread::scope(|scope| {
                    let runs: Vec<_> = chunk
                        .iter()
                        .map(|case| scope.spawn(|| outboxd(&case.spec, &["check"], &[])))
                        .collect();
                    runs.into_iter()
                        .map(|run| run.join().expect("check thread"))
                        .collect::<Vec<_>>()
                })
            })
            .collect()
    });
    eprintln!("{} checks in {:?}", outputs.len(), started.elapsed());
    for (case, output) in cases.iter().zip(&outputs) {
        let report = String::from_utf8_lossy(&output.stdout);
        let Some(missing) = &case.missing else {
            assert!(
                output.status.success(),
                "{} failed:\n{report}",
                case.spec.name
            );
            continue;
        };
        assert_eq!(
            output.status.code(),
            Some(1),
            "{missing:?} missing passed:\n{report}"
        );
        let fix = missing.fix(&case.spec.bootstrap, &case.principal);
        let lines: Vec<&str> = report.lines().collect();
        let failed = fails(&report);
        let named = lines
            .windows(2)
            .any(|w| w[0].starts_with("FAIL") && w[1].trim() == fix);
        assert!(
            failed.len() == 1 && named,
            "{missing:?} missing: not one FAIL followed by {fix:?} in:\n{report}"
        );
        eprintln!("{}: {}", missing.resource.join(" "), failed[0]);
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
