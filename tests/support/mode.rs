//! The relay's two modes as the exactly-once tests set them up, so that each scenario is written
//! once and run for both: logical mode over a publication and a slot, poll mode as a role that
//! may only log in, SELECT and DELETE.

use std::collections::BTreeSet;
use std::time::Duration;

use super::outbox::{assert_exactly_once_in_order, publish_outbox, read_all_at, Outbox};
use super::postgres::{PrivateCluster, TestDb};
use super::relay::{outboxd, RelaySpec};
use super::wait::wait_until;

/// How the relay reads the outbox.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// A logical replication slot (pgoutput).
    Logical,
    /// Polling the outbox table, deleting what was published.
    Poll,
}

impl Mode {
    /// `relay.mode` in the configuration file.
    pub fn name(self) -> &'static str {
        match self {
            Mode::Logical => "logical",
            Mode::Poll => "poll",
        }
    }

    /// `postgresql.conf` additions of a private cluster for this mode: poll mode runs where
    /// logical decoding is off (`wal_level = replica`), which it is meant for.
    pub fn cluster_conf(self) -> &'static str {
        match self {
            Mode::Logical => "wal_level = logical\nmax_replication_slots = 4\nmax_wal_senders = 4",
            Mode::Poll => "wal_level = replica",
        }
    }
}

/// An outbox ready for a relay of `mode`, with per-key numbered writers ([`Outbox`]).
///
/// Logical: the outbox tables, a publication of the outbox and the slot, created before any
/// write. Poll: `outboxd migrate` run by an administrator for a relay role with no REPLICATION
/// attribute, and a trigger of the test logging every inserted id (the relay deletes the rows it
/// publishes).
#[derive(Debug)]
pub struct ModeDb {
    /// The mode.
    pub mode: Mode,
    /// The outbox and its writers.
    pub outbox: Outbox,
    /// The relay's settings over this database.
    pub spec: RelaySpec,
    /// The database in the shared cluster, dropped with this value.
    _db: Option<TestDb>,
}

impl std::ops::Deref for ModeDb {
    type Target = Outbox;
    fn deref(&self) -> &Outbox {
        &self.outbox
    }
}

impl ModeDb {
    /// A new database in the shared cluster.
    pub async fn create(mode: Mode, prefix: &str) -> ModeDb {
        let db = TestDb::create(prefix).await;
        let prepared = Self::prepare(mode, &db.url, RelaySpec::for_db(&db)).await;
        ModeDb {
            _db: Some(db),
            ..prepared
        }
    }

    /// The `postgres` database of a private cluster.
    pub async fn on_cluster(mode: Mode, cluster: &PrivateCluster, prefix: &str) -> ModeDb {
        let url = format!("postgresql://postgres@127.0.0.1:{}/postgres", cluster.port);
        Self::prepare(mode, &url, RelaySpec::for_url(prefix, &url)).await
    }

    async fn prepare(mode: Mode, url: &str, mut spec: RelaySpec) -> ModeDb {
        let outbox = Outbox {
            url: url.to_owned(),
            aggregate_type: spec.name.clone(),
        };
        spec.mode = mode.name().into();
        match mode {
            Mode::Logical => {
                outbox.create_tables().await;
                let client = outbox.client().await;
                publish_outbox(&client, &spec.publication, Some(&spec.slot)).await;
            }
            Mode::Poll => Self::prepare_poll(&outbox, url, &mut spec).await,
        }
        ModeDb {
            mode,
            outbox,
            spec,
            _db: None,
        }
    }

    /// The role, `outboxd migrate` as administrator, the per-key numbers and the id log.
    async fn prepare_poll(outbox: &Outbox, url: &str, spec: &mut RelaySpec) {
        let role = Self::poller(spec);
        outbox
            .client()
            .await
            .batch_execute(&format!(
                "CREATE ROLE {role} LOGIN NOREPLICATION NOSUPERUSER NOCREATEDB NOCREATEROLE"
            ))
            .await
            .expect("create the poller role");
        spec.url = url.replacen("postgres@", &format!("{role}@"), 1);
        // The migrations as an administrator; they grant the relay's role what poll mode needs.
        let migrated = outboxd(spec, &["migrate", "--admin-url", url], &[]);
        assert!(migrated.status.success(), "migrate: {migrated:?}");
        let said = String::from_utf8_lossy(&migrated.stdout);
        assert!(
            said.contains("attached the poll-mode notify trigger to public.outbox"),
            "{said}"
        );
        outbox
            .client()
            .await
            .batch_execute(
                "CREATE TABLE key_seq (aggregateid text PRIMARY KEY, n int NOT NULL);
                 CREATE TABLE inserted (id uuid PRIMARY KEY);
                 CREATE FUNCTION log_id() RETURNS trigger LANGUAGE plpgsql AS
                   $$ BEGIN INSERT INTO inserted VALUES (NEW.id); RETURN NULL; END $$;
                 CREATE TRIGGER log_id AFTER INSERT ON outbox FOR EACH ROW EXECUTE FUNCTION log_id();",
            )
            .await
            .expect("test tables");
    }

    /// The poll-mode relay's role.
    fn poller(spec: &RelaySpec) -> String {
        format!("{}_poller", spec.name)
    }

    /// Every id ever inserted into the outbox: in logical mode the rows stay, in poll mode the
    /// test's trigger logged them.
    pub async fn inserted(&self) -> BTreeSet<String> {
        if self.mode == Mode::Logical {
            return self.ids().await;
        }
        self.client()
            .await
            .query("SELECT id::text FROM inserted", &[])
            .await
            .expect("inserted ids")
            .iter()
            .map(|row| row.get(0))
            .collect()
    }

    /// Whether the relay holds a connection now: its walsender holds the slot (logical), or its
    /// poll session holds the relay's poll lock (poll). A restart of Postgres then cuts a live
    /// connection.
    pub async fn relay_connected(&self) -> bool {
        let (query, name) = match self.mode {
            Mode::Logical => (
                "SELECT 1 FROM pg_replication_slots WHERE slot_name = $1 AND active",
                self.spec.slot.clone(),
            ),
            // The poll session's own lock, not any session of the poller's role: the standby
            // lease's session connects first, well before the relay polls.
            Mode::Poll => (
                "SELECT 1 FROM pg_locks WHERE locktype = 'advisory' AND granted \
                 AND ((classid::bigint << 32) | objid::bigint) = hashtextextended($1, 0)",
                format!("outboxd poll {}", self.spec.name),
            ),
        };
        self.client()
            .await
            .query_opt(query, &[&name])
            .await
            .expect("relay session query")
            .is_some()
    }

    /// Everything inserted is in the topic on the broker at `bootstrap` once, per key in order;
    /// in poll mode, the relay first emptied the outbox.
    pub async fn assert_delivered(&self, bootstrap: &str) {
        if self.mode == Mode::Poll {
            wait_until(
                Duration::from_secs(120),
                || async { self.ids().await.is_empty() },
                || "the relay did not empty the outbox".into(),
            )
            .await;
        }
        let inserted = self.inserted().await;
        let (topic, bootstrap, count) = (self.topic(), bootstrap.to_owned(), inserted.len());
        let records = tokio::task::spawn_blocking(move || read_all_at(&bootstrap, &topic, count))
            .await
            .expect("reader");
        assert_exactly_once_in_order(&records, &inserted);
    }
}
