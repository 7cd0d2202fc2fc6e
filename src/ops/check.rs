//! `outboxd check`: everything `run` needs, checked before it is needed, each failure with its fix.
//!
//! Checks run against the real services with the relay's own settings and role. Nothing is
//! changed: the slot is not created, topics are only validated (`validate_only`), and the
//! transactions check uses the transactional id `outboxd-<name>.check`, so running `check` beside a
//! live relay does not fence it.

use std::fmt;
use std::time::Duration;

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::error::RDKafkaErrorCode;

use super::{first_row, literal_list};
use crate::config::{RelayMode, Settings};
use crate::pg::sql::quote_literal;
use crate::pg::wire::{ReplicationConnection, Session};
use crate::relay::RelayConfig;
use crate::sink::kafka::{KafkaSettings, TransactionalProducer};
use crate::source::poll::{AfterPublish, NOTIFY_TRIGGER};

/// How one check came out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Fine.
    Ok,
    /// Works, but deserves a look.
    Warn,
    /// `run` would fail or lose events.
    Fail,
    /// Not checked: an earlier failure prevents it.
    Skipped,
    /// Information that passes either way (e.g. whether the mode not configured would work).
    Info,
}

/// One line of the report.
#[derive(Debug, Clone)]
pub struct Finding {
    /// `postgres` or `kafka` (or `config`).
    pub area: &'static str,
    /// The outcome.
    pub outcome: Outcome,
    /// What was found.
    pub what: String,
    /// How to fix it, for failures and warnings.
    pub fix: Option<String>,
}

/// Everything `check` found.
#[derive(Debug, Clone, Default)]
pub struct Report {
    /// In the order checked.
    pub findings: Vec<Finding>,
}

impl Report {
    /// Whether nothing failed.
    pub fn passed(&self) -> bool {
        !self.findings.iter().any(|f| f.outcome == Outcome::Fail)
    }

    fn add(&mut self, area: &'static str, outcome: Outcome, what: String, fix: Option<String>) {
        self.findings.push(Finding {
            area,
            outcome,
            what,
            fix,
        });
    }

    fn ok(&mut self, area: &'static str, what: impl Into<String>) {
        self.add(area, Outcome::Ok, what.into(), None);
    }

    fn fail(&mut self, area: &'static str, what: impl Into<String>, fix: impl Into<String>) {
        self.add(area, Outcome::Fail, what.into(), Some(fix.into()));
    }

    fn warn(&mut self, area: &'static str, what: impl Into<String>, fix: impl Into<String>) {
        self.add(area, Outcome::Warn, what.into(), Some(fix.into()));
    }

    fn skip(&mut self, area: &'static str, what: impl Into<String>) {
        self.add(area, Outcome::Skipped, what.into(), None);
    }

    fn info(&mut self, area: &'static str, what: impl Into<String>) {
        self.add(area, Outcome::Info, what.into(), None);
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for finding in &self.findings {
            let label = match finding.outcome {
                Outcome::Ok => "ok",
                Outcome::Warn => "WARN",
                Outcome::Fail => "FAIL",
                Outcome::Skipped => "skip",
                Outcome::Info => "info",
            };
            writeln!(f, "{label:<5} {:<9} {}", finding.area, finding.what)?;
            if let Some(fix) = &finding.fix {
                writeln!(f, "{:<15} fix: {fix}", "")?;
            }
        }
        let failed = self
            .findings
            .iter()
            .filter(|f| f.outcome == Outcome::Fail)
            .count();
        if failed == 0 {
            writeln!(f, "all checks passed")
        } else {
            writeln!(f, "{failed} check(s) failed")
        }
    }
}

/// Runs every check.
pub async fn run(settings: &Settings) -> Report {
    let mut report = Report::default();
    let config = match settings.relay_config() {
        Ok(config) => {
            report.ok("config", format!("relay {:?} configured", config.name));
            config
        }
        Err(error) => {
            report.fail(
                "config",
                error.to_string(),
                "correct the key named (config/outboxd.toml documents each one)",
            );
            return report;
        }
    };
    postgres(&config, &settings.outbox.tables, &mut report).await;
    let kafka = config.clone();
    let dead_letter_topic = settings.dead_letter.topic.clone();
    match tokio::task::spawn_blocking(move || kafka_checks(&kafka, &dead_letter_topic)).await {
        Ok(findings) => report.findings.extend(findings.findings),
        Err(error) => report.fail(
            "kafka",
            format!("the Kafka checks panicked: {error}"),
            "report this as a bug",
        ),
    }
    report
}

/// The Postgres side: connection, settings, privileges, slot, publications, tables.
async fn postgres(config: &RelayConfig, outbox_tables: &[String], report: &mut Report) {
    const AREA: &str = "postgres";
    let target = format!(
        "{}:{}/{} as {}",
        config.postgres.host, config.postgres.port, config.postgres.dbname, config.postgres.user
    );
    let mut session = match Session::connect(&config.postgres).await {
        Ok(session) => session,
        Err(error) => {
            report.fail(
                AREA,
                format!("cannot connect to {target}: {error}"),
                "check postgres.url (host, port, database, user), the password, and that \
                 pg_hba.conf admits this role from this host",
            );
            report.skip(AREA, "the other Postgres checks need a connection");
            return;
        }
    };
    let server = session.server_version_num();
    report.ok(AREA, format!("connected to {target} (server {server})"));
    let modes = match ModeFacts::read(&mut session, config).await {
        Ok(modes) => modes,
        Err(error) => {
            report.fail(
                AREA,
                format!("a catalog query failed: {error}"),
                "the role needs to read pg_catalog (every role can by default)",
            );
            return;
        }
    };
    report.info("mode", modes.logical_summary());
    report.info("mode", modes.poll_summary());
    if config.mode == RelayMode::Poll {
        if let Err(error) = poll_facts(&mut session, config, report).await {
            report.fail(
                AREA,
                format!("a catalog query failed: {error}"),
                "the role needs to read pg_catalog (every role can by default)",
            );
        }
        return;
    }
    if let Err(error) = postgres_facts(&mut session, config, outbox_tables, report).await {
        report.fail(
            AREA,
            format!("a catalog query failed: {error}"),
            "the role needs to read pg_catalog (every role can by default)",
        );
    }
    match ReplicationConnection::connect(&config.postgres).await {
        Ok(mut replication) => match replication.identify_system().await {
            Ok(system) => report.ok(
                AREA,
                format!(
                    "replication connection works (system {}, timeline {})",
                    system.system_id, system.timeline
                ),
            ),
            Err(error) => report.fail(
                AREA,
                format!("IDENTIFY_SYSTEM failed: {error}"),
                "the role needs the REPLICATION attribute",
            ),
        },
        Err(error) => report.fail(
            AREA,
            format!("cannot open a replication connection: {error}"),
            format!(
                "ALTER ROLE {} REPLICATION; and make sure max_wal_senders has a free sender and \
                 pg_hba.conf admits the role for database {}",
                config.postgres.user, config.postgres.dbname
            ),
        ),
    }
}

async fn postgres_facts(
    session: &mut Session,
    config: &RelayConfig,
    outbox_tables: &[String],
    report: &mut Report,
) -> Result<(), crate::pg::wire::WireError> {
    const AREA: &str = "postgres";
    let role = &config.postgres.user;
    let facts = first_row(
        session,
        "SELECT current_setting('wal_level'), \
                (SELECT rolreplication OR rolsuper FROM pg_roles WHERE rolname = current_user), \
                current_setting('max_replication_slots'), \
                (SELECT count(*) FROM pg_replication_slots)",
    )
    .await?
    .unwrap_or_default();
    let column = |i: usize| facts.get(i).cloned().flatten().unwrap_or_default();
    let wal_level = column(0);
    if wal_level == "logical" {
        report.ok(AREA, "wal_level = logical");
    } else {
        report.fail(
            AREA,
            format!("wal_level = {wal_level}; logical decoding needs wal_level = logical"),
            "ALTER SYSTEM SET wal_level = logical; then restart PostgreSQL (the setting only \
             changes at server start; on a managed service set it in the parameter group)",
        );
    }
    if column(1) == "t" {
        report.ok(AREA, format!("role {role} may replicate"));
    } else {
        report.fail(
            AREA,
            format!("role {role} lacks the REPLICATION attribute: it cannot stream the slot"),
            format!(
                "ALTER ROLE {role} REPLICATION; (managed services grant a provider role instead, \
                 e.g. rds_replication)"
            ),
        );
    }

    let slot = first_row(
        session,
        &format!(
            "SELECT plugin, wal_status, active, active_pid::text FROM pg_replication_slots \
             WHERE slot_name = {}",
            quote_literal(&config.slot)
        ),
    )
    .await?;
    match slot {
        None => {
            let max: u64 = column(2).parse().unwrap_or(0);
            let used: u64 = column(3).parse().unwrap_or(0);
            if used >= max {
                report.fail(
                    AREA,
                    format!(
                        "slot {:?} does not exist and all {max} replication slots are in use",
                        config.slot
                    ),
                    "raise max_replication_slots (restart needed) or drop an unused slot",
                );
            } else {
                report.ok(
                    AREA,
                    format!("slot {:?} does not exist yet; run creates it", config.slot),
                );
            }
        }
        Some(slot) => {
            let get = |i: usize| slot.get(i).cloned().flatten().unwrap_or_default();
            if get(0) != "pgoutput" {
                report.fail(
                    AREA,
                    format!(
                        "slot {:?} uses the plugin {:?}, not pgoutput",
                        config.slot,
                        get(0)
                    ),
                    format!(
                        "SELECT pg_drop_replication_slot({}); and let outboxd create it, or name \
                         another with postgres.slot",
                        quote_literal(&config.slot)
                    ),
                );
            } else if get(1) == "lost" {
                report.fail(
                    AREA,
                    format!(
                        "slot {:?} lost WAL it needed (wal_status = lost)",
                        config.slot
                    ),
                    "the changes are gone: drop the slot and start over with a new relay name",
                );
            } else if get(2) == "t" {
                report.warn(
                    AREA,
                    format!("slot {:?} is in use by process {}", config.slot, get(3)),
                    "only one relay may stream a slot; stop the other consumer first",
                );
            } else {
                report.ok(
                    AREA,
                    format!("slot {:?} exists (pgoutput, {})", config.slot, get(1)),
                );
            }
        }
    }

    let publications = session
        .simple_query(&format!(
            "SELECT pubname FROM pg_publication WHERE pubname IN ({})",
            literal_list(&config.publications)
        ))
        .await?;
    let found: Vec<String> = publications
        .into_iter()
        .filter_map(|row| row.into_iter().next().flatten())
        .collect();
    for publication in &config.publications {
        if found.contains(publication) {
            report.ok(AREA, format!("publication {publication:?} exists"));
        } else {
            report.fail(
                AREA,
                format!("publication {publication:?} does not exist"),
                format!(
                    "CREATE PUBLICATION {publication} FOR TABLE {}; (or run `outboxd migrate`)",
                    outbox_tables.join(", ")
                ),
            );
        }
    }

    for table in outbox_tables {
        let (schema, name) = table.split_once('.').unwrap_or(("public", table));
        let row = first_row(
            session,
            &format!(
                "SELECT to_regclass({qualified}) IS NOT NULL, \
                        EXISTS (SELECT 1 FROM pg_publication_tables WHERE pubname IN ({pubs}) \
                                AND schemaname = {schema} AND tablename = {name})",
                qualified = quote_literal(&format!("\"{schema}\".\"{name}\"")),
                pubs = literal_list(&config.publications),
                schema = quote_literal(schema),
                name = quote_literal(name),
            ),
        )
        .await?
        .unwrap_or_default();
        let flag = |i: usize| row.get(i).cloned().flatten().as_deref() == Some("t");
        if !flag(0) {
            report.fail(
                AREA,
                format!("outbox table {table} does not exist"),
                "create it (`outboxd migrate` creates public.outbox) or correct outbox.tables",
            );
        } else if !flag(1) {
            report.fail(
                AREA,
                format!("outbox table {table} is in none of the publications {:?}: its events would never be seen", config.publications),
                format!("ALTER PUBLICATION {} ADD TABLE {table};", config.publications[0]),
            );
        } else {
            report.ok(AREA, format!("outbox table {table} is published"));
        }
    }

    // Postgres itself refuses UPDATE and DELETE on a table that publishes them without a replica
    // identity, and CDC events of such a table could not carry a key.
    let unidentified = session
        .simple_query(&format!(
            "SELECT DISTINCT pt.schemaname || '.' || pt.tablename \
             FROM pg_publication_tables pt \
             JOIN pg_publication p ON p.pubname = pt.pubname \
             JOIN pg_namespace n ON n.nspname = pt.schemaname \
             JOIN pg_class c ON c.relnamespace = n.oid AND c.relname = pt.tablename \
             WHERE pt.pubname IN ({}) AND (p.pubupdate OR p.pubdelete) \
               AND (c.relreplident = 'n' OR (c.relreplident = 'd' AND NOT EXISTS \
                    (SELECT 1 FROM pg_index i WHERE i.indrelid = c.oid AND i.indisprimary))) \
             ORDER BY 1",
            literal_list(&config.publications)
        ))
        .await?;
    if unidentified.is_empty() {
        report.ok(AREA, "every published table has a replica identity");
    }
    for row in unidentified {
        let table = row.into_iter().next().flatten().unwrap_or_default();
        report.fail(
            AREA,
            format!(
                "published table {table} has no replica identity: PostgreSQL refuses its UPDATEs \
                 and DELETEs while it is published, and its change events would have no key"
            ),
            format!("ALTER TABLE {table} REPLICA IDENTITY FULL; (or give it a primary key)"),
        );
    }
    Ok(())
}

/// What decides which mode this database allows the relay's role.
#[derive(Debug)]
struct ModeFacts {
    wal_level: String,
    may_replicate: bool,
    /// Outbox tables the role cannot poll, each with the reason.
    unpollable: Vec<String>,
    /// The privilege poll mode needs beside SELECT.
    take_away: &'static str,
}

impl ModeFacts {
    async fn read(
        session: &mut Session,
        config: &RelayConfig,
    ) -> Result<Self, crate::pg::wire::WireError> {
        let facts = first_row(
            session,
            "SELECT current_setting('wal_level'), \
                    (SELECT rolreplication OR rolsuper FROM pg_roles WHERE rolname = current_user)",
        )
        .await?
        .unwrap_or_default();
        let take_away = match config.poll.after_publish {
            AfterPublish::Delete => "DELETE",
            AfterPublish::Mark { .. } => "UPDATE",
        };
        let mut unpollable = Vec::new();
        for table in &config.poll.tables {
            let row = first_row(
                session,
                &format!(
                    "SELECT to_regclass({name}) IS NOT NULL, \
                            to_regclass({name}) IS NOT NULL \
                            AND has_table_privilege({name}, 'SELECT') \
                            AND has_table_privilege({name}, {take_away})",
                    name = quote_literal(&table.sql_name()),
                    take_away = quote_literal(take_away),
                ),
            )
            .await?
            .unwrap_or_default();
            let flag = |i: usize| row.get(i).cloned().flatten().as_deref() == Some("t");
            if !flag(0) {
                unpollable.push(format!("{} does not exist", table.qualified()));
            } else if !flag(1) {
                unpollable.push(format!(
                    "the role lacks SELECT or {take_away} on {}",
                    table.qualified()
                ));
            }
        }
        let column = |i: usize| facts.get(i).cloned().flatten().unwrap_or_default();
        Ok(Self {
            wal_level: column(0),
            may_replicate: column(1) == "t",
            unpollable,
            take_away,
        })
    }

    fn logical_summary(&self) -> String {
        match (self.wal_level == "logical", self.may_replicate) {
            (true, true) => {
                "logical mode is possible: wal_level = logical and the role may replicate".into()
            }
            (false, _) => format!(
                "logical mode is not possible: wal_level = {} (needs logical, which takes a \
                 server restart)",
                self.wal_level
            ),
            (true, false) => {
                "logical mode is not possible: the role lacks the REPLICATION attribute".into()
            }
        }
    }

    fn poll_summary(&self) -> String {
        if self.unpollable.is_empty() {
            format!(
                "poll mode is possible: the role may SELECT and {} on every outbox table",
                self.take_away
            )
        } else {
            format!("poll mode is not possible: {}", self.unpollable.join("; "))
        }
    }
}

/// Poll mode's side: each outbox table readable and emptiable, its columns and indexes.
async fn poll_facts(
    session: &mut Session,
    config: &RelayConfig,
    report: &mut Report,
) -> Result<(), crate::pg::wire::WireError> {
    const AREA: &str = "postgres";
    let role = &config.postgres.user;
    let (take_away, mark) = match &config.poll.after_publish {
        AfterPublish::Delete => ("DELETE", None),
        AfterPublish::Mark { column } => ("UPDATE", Some(column.as_str())),
    };
    for table in &config.poll.tables {
        let name = table.qualified();
        let regclass = quote_literal(&table.sql_name());
        let row = first_row(
            session,
            &format!(
                "SELECT to_regclass({regclass}) IS NOT NULL, \
                        to_regclass({regclass}) IS NOT NULL AND has_table_privilege({regclass}, 'SELECT') \
                          AND has_table_privilege({regclass}, {take}), \
                        EXISTS (SELECT 1 FROM pg_trigger WHERE tgrelid = to_regclass({regclass}) \
                                AND tgname = {trigger})",
                take = quote_literal(take_away),
                trigger = quote_literal(NOTIFY_TRIGGER),
            ),
        )
        .await?
        .unwrap_or_default();
        let flag = |i: usize| row.get(i).cloned().flatten().as_deref() == Some("t");
        if !flag(0) {
            report.fail(
                AREA,
                format!("outbox table {name} does not exist"),
                "create it (`outboxd migrate` creates public.outbox) or correct outbox.tables",
            );
            continue;
        }
        if flag(1) {
            report.ok(
                AREA,
                format!("role {role} may SELECT and {take_away} on {name}"),
            );
        } else {
            report.fail(
                AREA,
                format!("role {role} lacks SELECT or {take_away} on {name}: poll mode reads the rows and then {}", if mark.is_some() { "marks them" } else { "deletes them" }),
                format!("GRANT SELECT, {take_away} ON {name} TO {role};"),
            );
        }
        let columns = session
            .simple_query(&format!(
                "SELECT a.attname, EXISTS (SELECT 1 FROM pg_index i WHERE i.indrelid = a.attrelid \
                        AND i.indkey[0] = a.attnum AND i.indisunique AND i.indnkeyatts = 1), \
                        EXISTS (SELECT 1 FROM pg_index i WHERE i.indrelid = a.attrelid \
                        AND i.indkey[0] = a.attnum) \
                 FROM pg_attribute a WHERE a.attrelid = to_regclass({regclass}) \
                 AND a.attnum > 0 AND NOT a.attisdropped"
            ))
            .await?;
        let column = |wanted: &str| {
            columns
                .iter()
                .find(|c| c.first().cloned().flatten().as_deref() == Some(wanted))
                .map(|c| {
                    let flag = |i: usize| c.get(i).cloned().flatten().as_deref() == Some("t");
                    (flag(1), flag(2))
                })
        };
        match column(&table.id_column) {
            None => report.fail(
                AREA,
                format!("{name} has no id column {:?}", table.id_column),
                "name the event id column in outbox.columns.id: checkpoints name rows by it",
            ),
            Some((false, _)) => report.fail(
                AREA,
                format!("id column {:?} of {name} is not unique: a checkpoint naming an id could take away rows never published", table.id_column),
                format!("ALTER TABLE {name} ADD PRIMARY KEY ({});", table.id_column),
            ),
            Some((true, _)) => report.ok(AREA, format!("{name}: id column {:?} is unique", table.id_column)),
        }
        match column(&table.order_by) {
            None => report.fail(
                AREA,
                format!("{name} has no column {:?} to publish in order of (poll.order_by)", table.order_by),
                format!("`outboxd migrate` adds seq to public.outbox; elsewhere ALTER TABLE {name} ADD COLUMN seq bigserial; CREATE INDEX ON {name} (seq);"),
            ),
            Some((_, false)) => report.warn(
                AREA,
                format!("no index on {name} starts with {:?}: every poll sorts the whole backlog", table.order_by),
                format!("CREATE INDEX ON {name} ({});", table.order_by),
            ),
            Some((_, true)) => report.ok(AREA, format!("{name}: rows are published in order of {:?}", table.order_by)),
        }
        if let Some(mark) = mark {
            if column(mark).is_none() {
                report.fail(
                    AREA,
                    format!("{name} has no column {mark:?} to mark published rows in (poll.mark_column)"),
                    format!("ALTER TABLE {name} ADD COLUMN {mark} timestamptz;"),
                );
            }
        }
        if config.poll.notify && !flag(2) {
            report.warn(
                AREA,
                format!("{name} has no notify trigger: new rows wait for the next poll (up to poll.interval)"),
                "run `outboxd migrate` with relay.mode = \"poll\", which attaches it",
            );
        }
    }
    Ok(())
}

/// The Kafka side: broker reachable, transactions allowed, offsets and dead-letter topics.
fn kafka_checks(config: &RelayConfig, dead_letter_topic: &str) -> Report {
    const AREA: &str = "kafka";
    let mut report = Report::default();
    let timeout = config.kafka_call_timeout.min(Duration::from_secs(15));
    let admin = match admin_client(&config.kafka) {
        Ok(admin) => admin,
        Err(error) => {
            report.fail(
                AREA,
                format!("the Kafka settings are not accepted: {error}"),
                "correct [kafka.properties] (librdkafka property names and values)",
            );
            return report;
        }
    };
    let brokers = match admin.inner().fetch_metadata(None, timeout) {
        Ok(metadata) => metadata.brokers().len(),
        Err(error) => {
            report.fail(
                AREA,
                format!(
                    "no broker at {} answered within {timeout:?}: {error}",
                    config.kafka.bootstrap_servers
                ),
                "check kafka.bootstrap_servers, that the broker runs and is reachable from here, \
                 and the security settings in [kafka.properties]",
            );
            report.skip(AREA, "the other Kafka checks need a broker");
            return report;
        }
    };
    report.ok(
        AREA,
        format!(
            "{} answered ({brokers} broker(s))",
            config.kafka.bootstrap_servers
        ),
    );

    let check_id = format!("{}.check", config.transactional_id());
    match TransactionalProducer::start(&config.kafka, &check_id, config.transaction_timeout, timeout)
    {
        Ok(_) => report.ok(AREA, format!("transactions work (initialized {check_id:?})")),
        Err(error) => report.fail(
            AREA,
            format!("cannot initialize a transactional producer: {error}"),
            format!(
                "allow WRITE and DESCRIBE on TransactionalId {}* and IDEMPOTENT_WRITE on the \
                 cluster for this principal; a broker needs transaction.state.log.replication.factor \
                 and .min.isr no higher than its broker count",
                config.transactional_id()
            ),
        ),
    }

    for (topic, role) in [
        (config.offsets_topic.as_str(), "offsets"),
        (dead_letter_topic, "dead-letter"),
    ] {
        topic_check(&admin, topic, role, timeout, &mut report);
    }
    report
}

fn admin_client(
    settings: &KafkaSettings,
) -> Result<AdminClient<DefaultClientContext>, rdkafka::error::KafkaError> {
    // Asking about a topic must not create it with the broker's defaults: an offsets topic made
    // that way is not compacted, and `run` refuses it.
    settings
        .client_config(&[("allow.auto.create.topics", "false")])
        .create()
}

/// The topic exists in a usable shape, or can be created.
fn topic_check(
    admin: &AdminClient<DefaultClientContext>,
    topic: &str,
    role: &str,
    timeout: Duration,
    report: &mut Report,
) {
    const AREA: &str = "kafka";
    let partitions = admin
        .inner()
        .fetch_metadata(Some(topic), timeout)
        .ok()
        .and_then(|m| {
            m.topics()
                .first()
                .filter(|t| t.error().is_none())
                .map(|t| t.partitions().len())
        });
    match partitions {
        Some(1) => report.ok(AREA, format!("{role} topic {topic:?} exists")),
        Some(n) if role == "offsets" => report.fail(
            AREA,
            format!("offsets topic {topic:?} has {n} partitions; it must have exactly 1"),
            "delete it or name another with kafka.offsets_topic",
        ),
        Some(n) => report.ok(
            AREA,
            format!("{role} topic {topic:?} exists ({n} partitions)"),
        ),
        None => {
            let new_topic = NewTopic::new(topic, 1, TopicReplication::Fixed(-1));
            let options = AdminOptions::new()
                .validate_only(true)
                .request_timeout(Some(timeout));
            // On a blocking thread of the runtime (see `run`), which may wait on a future.
            let created = tokio::runtime::Handle::current()
                .block_on(admin.create_topics([&new_topic], &options));
            match created.as_deref() {
                Ok([Ok(_)] | [Err((_, RDKafkaErrorCode::TopicAlreadyExists))]) => report.ok(
                    AREA,
                    format!("{role} topic {topic:?} does not exist yet; it can be created"),
                ),
                Ok(results) => {
                    let reason = results
                        .iter()
                        .find_map(|r| r.as_ref().err().map(|(_, code)| code.to_string()))
                        .unwrap_or_default();
                    report.fail(
                        AREA,
                        format!("{role} topic {topic:?} does not exist and cannot be created: {reason}"),
                        format!("create {topic} (offsets: 1 partition, cleanup.policy=compact) or allow CREATE on it"),
                    );
                }
                Err(error) => report.fail(
                    AREA,
                    format!("{role} topic {topic:?} does not exist and creating it failed: {error}"),
                    format!("create {topic} (offsets: 1 partition, cleanup.policy=compact) or allow CREATE on it"),
                ),
            }
        }
    }
}
