//! Topics on a broker that does not create them (`auto.create.topics.enable=false`, as Confluent
//! Cloud and many MSK clusters run): `check` lists the topics that are missing; with topic
//! creation off the relay stops naming the topic, or (per `missing_topic`) sends its records to
//! the dead-letter topic; with creation on, new topics appear with the configured settings and
//! events flow exactly once.

mod support;

use std::time::Duration;

use support::kafka::{create_topic_at, header, read_exactly_at, topic_settings_at, PrivateKafka};
use support::postgres::TestDb;
use support::relay::{outboxd, RelayProcess, RelaySpec};

/// Inserts `count` outbox rows of aggregate type `agg`, event ids `<agg>-<n>`.
async fn insert(db: &TestDb, agg: &str, count: usize) {
    let rows: Vec<String> = (0..count)
        .map(|n| format!("('{agg}-{n}', '{agg}', 'k{n}', 'T', '{{}}')"))
        .collect();
    db.client()
        .await
        .batch_execute(&format!("INSERT INTO outbox VALUES {}", rows.join(", ")))
        .await
        .expect("insert outbox rows");
}

#[tokio::test(flavor = "multi_thread")]
async fn on_a_broker_that_does_not_create_topics_the_relay_creates_them_or_stops_or_dead_letters() {
    let started = std::time::Instant::now();
    let kafka = PrivateKafka::start_with_env(&[("OUTBOXD_DEV_KAFKA_AUTO_CREATE", "false")]);
    let db = TestDb::create("no_autocreate").await;
    db.client()
        .await
        .batch_execute(&format!(
            "CREATE TABLE outbox (id text, aggregatetype text, aggregateid text, type text, \
             payload jsonb); CREATE TABLE items (id int PRIMARY KEY); \
             CREATE PUBLICATION {} FOR TABLE outbox, items",
            db.publication
        ))
        .await
        .expect("schema");
    let dlq = db.topic("dlq");
    let mut spec = RelaySpec::for_db(&db);
    spec.bootstrap = kafka.bootstrap.clone();
    // librdkafka holds records of a topic it does not find for this long (30 s by default) before
    // failing them: kept short here.
    let base = format!(
        "[dead_letter]\ntopic = {dlq:?}\n\n[kafka.properties]\n\
         \"topic.metadata.propagation.max.ms\" = \"1000\"\n"
    );
    spec.extra = base.clone();

    // check: the dead-letter topic and the CDC table's topic are missing, and nothing creates them.
    let check = outboxd(&spec, &["check"], &[]);
    let report = String::from_utf8_lossy(&check.stdout).into_owned();
    assert_eq!(check.status.code(), Some(1), "{report}");
    let items = "outboxd.public.items";
    let line = report
        .lines()
        .find(|l| l.contains("missing topics"))
        .unwrap_or_else(|| panic!("no missing topics line:\n{report}"));
    assert!(
        line.contains(&dlq) && line.contains(items),
        "both named: {line}"
    );
    assert!(line.contains("auto.create.topics.enable=false"), "{report}");
    assert!(
        report.contains("[kafka.topic_creation] enabled = true"),
        "the fix: {report}"
    );

    // Creation off, policy stop: the relay stops, naming the topic and why.
    let absent = format!("{}_absent", db.name);
    let mut relay = RelayProcess::start(&spec);
    relay.wait_streaming(Duration::from_secs(60));
    insert(&db, &absent, 2).await;
    let status = relay
        .wait_exit(Duration::from_secs(90))
        .unwrap_or_else(|| panic!("the relay did not stop:\n{}", relay.log_text()));
    assert_eq!(status.code(), Some(1), "{}", relay.log_text());
    let log = relay.log_text();
    let absent_topic = format!("outbox.event.{absent}");
    assert!(
        log.contains(&format!("topic \\\"{absent_topic}\\\" does not exist")),
        "the topic named:\n{log}"
    );
    drop(relay);

    // Creation off, policy dead-letter: the same events become dead letters naming their topic,
    // and an event of an existing topic goes through, exactly once.
    create_topic_at(&kafka.bootstrap, &dlq, 1).await;
    let present = format!("{}_present", db.name);
    let present_topic = format!("outbox.event.{present}");
    create_topic_at(&kafka.bootstrap, &present_topic, 1).await;
    spec.extra = format!("{base}\n[kafka.topic_creation]\nmissing_topic = \"dead-letter\"\n");
    let relay = RelayProcess::start(&spec);
    insert(&db, &present, 1).await;
    let letters = read_exactly_at(&kafka.bootstrap, &dlq, 2);
    for letter in &letters {
        assert_eq!(
            header(letter, "outboxd.dlq.reason").as_deref(),
            Some("missing-topic")
        );
        assert_eq!(
            header(letter, "outboxd.dlq.topic").as_deref(),
            Some(absent_topic.as_str())
        );
    }
    let ids: Vec<_> = letters
        .iter()
        .map(|l| header(l, "outboxd.dlq.event_id").expect("event id"))
        .collect();
    assert_eq!(ids, [format!("{absent}-0"), format!("{absent}-1")]);
    read_exactly_at(&kafka.bootstrap, &present_topic, 1);
    drop(relay);

    // Creation on: a new topic appears with the configured settings; its events arrive once.
    spec.extra = format!(
        "{base}\n[kafka.topic_creation]\nenabled = true\npartitions = 3\nreplication_factor = 1\n\
         configs = {{ \"retention.ms\" = \"3600000\" }}\n"
    );
    let relay = RelayProcess::start(&spec);
    let created = format!("{}_created", db.name);
    let created_topic = format!("outbox.event.{created}");
    insert(&db, &created, 10).await;
    let records = read_exactly_at(&kafka.bootstrap, &created_topic, 10);
    let mut ids: Vec<_> = records
        .iter()
        .map(|r| header(r, "id").expect("id"))
        .collect();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), 10, "each event once");
    let (partitions, retention) =
        topic_settings_at(&kafka.bootstrap, &created_topic, "retention.ms").await;
    assert_eq!(
        (partitions, retention.as_deref()),
        (3, Some("3600000")),
        "{}",
        relay.log_text()
    );
    eprintln!("test took {:?}", started.elapsed());
}
