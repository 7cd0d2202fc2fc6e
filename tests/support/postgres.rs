//! PostgreSQL for tests: a database of its own in the shared cluster, or a cluster of its own.

use std::path::{Path, PathBuf};
use std::process::Command;

use super::{dev_env, unique_name};

/// A database created for one test, with the slot and publication names that test should use.
/// Dropped, with any replication slot on it, when the value is dropped.
#[derive(Debug)]
pub struct TestDb {
    /// The database name.
    pub name: String,
    /// Superuser URL of this database.
    pub url: String,
    /// A replication slot name reserved for this test (not created).
    pub slot: String,
    /// A publication name reserved for this test (not created).
    pub publication: String,
}

impl TestDb {
    /// Creates a fresh database named after `prefix`.
    pub async fn create(prefix: &str) -> TestDb {
        let name = unique_name(prefix);
        let admin = connect(&dev_env().pg_url).await;
        admin
            .batch_execute(&format!("CREATE DATABASE {name}"))
            .await
            .unwrap_or_else(|e| panic!("create database {name}: {e}"));
        let url = with_database(&dev_env().pg_url, &name);
        TestDb {
            slot: format!("{name}_slot"),
            publication: format!("{name}_pub"),
            url,
            name,
        }
    }

    /// A fresh database named after `prefix` with `sql` applied and its publication of `tables`.
    pub async fn published(prefix: &str, sql: &str, tables: &str) -> TestDb {
        let db = TestDb::create(prefix).await;
        let client = db.client().await;
        client.batch_execute(sql).await.expect("schema");
        client
            .batch_execute(&format!(
                "CREATE PUBLICATION {} FOR TABLE {tables}",
                db.publication
            ))
            .await
            .expect("publication");
        db
    }

    /// A new SQL connection to this database.
    pub async fn client(&self) -> tokio_postgres::Client {
        connect(&self.url).await
    }

    /// A topic name reserved for this test.
    pub fn topic(&self, what: &str) -> String {
        format!("{}.{what}", self.name)
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        // Drop runs outside any runtime guarantee, so use psql rather than an async client. Slots pin
        // a database: terminate their walsenders and drop them first.
        let sql = format!(
            "SELECT pg_terminate_backend(active_pid) FROM pg_replication_slots \
               WHERE database = '{db}' AND active_pid IS NOT NULL;
             SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE database = '{db}';
             DROP DATABASE IF EXISTS {db} WITH (FORCE);",
            db = self.name
        );
        let _ = psql(&dev_env().pg_url, &sql);
    }
}

/// Connects a SQL client and drives its connection on the current runtime.
pub async fn connect(url: &str) -> tokio_postgres::Client {
    let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .unwrap_or_else(|e| panic!("connect to {url}: {e}"));
    tokio::spawn(async move {
        let _ = connection.await;
    });
    client
}

/// Connects a SQL client, retrying every 100 ms while the server is away (restarting, failing
/// over); `None` once `stop` is set.
pub async fn connect_retrying(
    url: &str,
    stop: &std::sync::atomic::AtomicBool,
) -> Option<tokio_postgres::Client> {
    while !stop.load(std::sync::atomic::Ordering::Relaxed) {
        if let Ok((client, connection)) = tokio_postgres::connect(url, tokio_postgres::NoTls).await
        {
            tokio::spawn(connection);
            return Some(client);
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    None
}

/// `url` pointing at database `db` instead.
pub fn with_database(url: &str, db: &str) -> String {
    let (base, _) = url.rsplit_once('/').expect("URL has a database path");
    format!("{base}/{db}")
}

/// Runs SQL through `psql` (for places without an async runtime); returns its stdout.
pub fn psql(url: &str, sql: &str) -> Result<String, String> {
    let out = Command::new(dev_env().pg_bin.join("psql"))
        .args([
            "-X",
            "-q",
            "-At",
            "-v",
            "ON_ERROR_STOP=1",
            "-d",
            url,
            "-c",
            sql,
        ])
        .output()
        .map_err(|e| format!("run psql: {e}"))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).into_owned())
    }
}

/// A PostgreSQL cluster of one test's own, for what the shared cluster must not change: its
/// `pg_hba.conf`, TLS, `wal_level`. Stopped and deleted on drop.
#[derive(Debug)]
pub struct PrivateCluster {
    dir: tempfile::TempDir,
    /// The TCP port on 127.0.0.1.
    pub port: u16,
    /// The server binaries it runs with.
    bin: PathBuf,
}

impl PrivateCluster {
    /// `initdb`s and starts a cluster with `postgresql.conf` additions `conf` and `pg_hba.conf`
    /// replaced by `hba` (its lines, in order). The superuser is `postgres`, trusted over the
    /// cluster's Unix socket so that `psql()` on it always works.
    pub fn start(conf: &str, hba: &[&str]) -> PrivateCluster {
        Self::start_with(&dev_env().pg_bin, conf, hba)
    }

    /// [`Self::start`] with the server binaries in `bin` (another major's: [`pg_bin_of`]).
    pub fn start_with(bin: &Path, conf: &str, hba: &[&str]) -> PrivateCluster {
        let dir = tempfile::Builder::new()
            .prefix("outboxd-pg-")
            .tempdir()
            .expect("temp dir");
        let data = dir.path().join("data");
        give_to_pg_owner(dir.path());
        run_as_pg_owner(
            Command::new(bin.join("initdb"))
                .args([
                    "-U",
                    "postgres",
                    "--auth=trust",
                    "--no-locale",
                    "-E",
                    "UTF8",
                    "-D",
                ])
                .arg(&data),
        );
        let port = free_port();
        let settings = format!(
            "listen_addresses = '127.0.0.1'\nport = {port}\nunix_socket_directories = '{}'\n\
             fsync = off\n{conf}\n",
            dir.path().display()
        );
        append_to(&data.join("postgresql.conf"), &settings);
        let mut hba_text = String::from("local all postgres trust\n");
        for line in hba {
            hba_text.push_str(line);
            hba_text.push('\n');
        }
        write_to(&data.join("pg_hba.conf"), &hba_text);
        let cluster = PrivateCluster {
            dir,
            port,
            bin: bin.to_owned(),
        };
        cluster.pg_ctl(&["start"]);
        cluster
    }

    /// A physical standby of this cluster, with `postgresql.conf` additions `conf` (the
    /// replication settings of its major): a cold copy of this cluster's data (stopped for it and
    /// started again; the builds have no `pg_basebackup`), streaming from it through the physical
    /// slot `slot` created here.
    pub fn standby(&self, slot: &str, conf: &str) -> PrivateCluster {
        self.stop();
        let dir = tempfile::Builder::new()
            .prefix("outboxd-pg-")
            .tempdir()
            .expect("temp dir");
        give_to_pg_owner(dir.path());
        run_as_pg_owner(
            Command::new("cp")
                .arg("-a")
                .arg(self.dir().join("data"))
                .arg(dir.path()),
        );
        let port = free_port();
        let standby = PrivateCluster {
            dir,
            port,
            bin: self.bin.clone(),
        };
        let settings = format!(
            "port = {port}\nunix_socket_directories = '{}'\nhot_standby = on\n\
             primary_conninfo = 'host=127.0.0.1 port={} user=postgres dbname=postgres \
             application_name=standby'\nprimary_slot_name = '{slot}'\n{conf}\n",
            standby.dir().display(),
            self.port,
        );
        append_to(&standby.dir().join("data/postgresql.conf"), &settings);
        standby.write_file("data/standby.signal", b"", "600");
        self.pg_ctl(&["start"]);
        self.psql(&format!(
            "SELECT pg_create_physical_replication_slot('{slot}', true)"
        ))
        .expect("physical slot");
        standby.pg_ctl(&["start"]);
        standby
    }

    /// Promotes this standby and waits until it accepts writes.
    pub fn promote(&self) {
        self.pg_ctl(&["promote"]);
    }

    /// Stops the server as a crash would (`-m immediate`).
    pub fn crash(&self) {
        self.pg_ctl(&["-m", "immediate", "stop"]);
    }

    /// Runs `pg_ctl -w -t 60 -l server.log -D data <args>` as the server's user.
    fn pg_ctl(&self, args: &[&str]) {
        run_as_pg_owner(
            Command::new(self.bin.join("pg_ctl"))
                .args(["-w", "-t", "60", "-l"])
                .arg(self.dir().join("server.log"))
                .arg("-D")
                .arg(self.dir().join("data"))
                .args(args),
        );
    }

    /// The directory holding `data/`, `server.log` and the Unix socket; certificates may go here.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Runs SQL as the superuser over the Unix socket.
    pub fn psql(&self, sql: &str) -> Result<String, String> {
        let url = format!(
            "postgresql:///postgres?host={}&port={}&user=postgres",
            self.dir().display(),
            self.port
        );
        psql(&url, sql)
    }

    /// Stops the server (fast shutdown) and starts it again, so `postgresql.conf` and `pg_hba.conf`
    /// changes take effect.
    pub fn restart(&self) {
        self.pg_ctl(&["-m", "fast", "restart"]);
    }

    /// Stops the server (fast shutdown).
    pub fn stop(&self) {
        self.pg_ctl(&["-m", "fast", "stop"]);
    }

    /// Writes a file into the cluster's directory, owned by the server's user.
    pub fn write_file(&self, name: &str, contents: &[u8], mode: &str) -> PathBuf {
        let path = self.dir().join(name);
        std::fs::write(&path, contents).expect("write file");
        if is_root() {
            run(Command::new("chown").arg("postgres:").arg(&path));
        }
        run(Command::new("chmod").arg(mode).arg(&path));
        path
    }
}

impl Drop for PrivateCluster {
    fn drop(&mut self) {
        let _ = command_as_pg_owner(
            Command::new(self.bin.join("pg_ctl"))
                .args(["-w", "-t", "30", "-m", "immediate", "-D"])
                .arg(self.dir.path().join("data"))
                .arg("stop"),
        )
        .output();
    }
}

/// The server binaries of PostgreSQL `major` as `scripts/setup` prepared them: Debian's for
/// `None` (the default major), else that major's build; `None` if setup did not prepare it.
pub fn pg_bin_of(major: Option<u32>) -> Option<PathBuf> {
    let out = Command::new("bash")
        .arg("-c")
        .arg(r#"source "$1" && pg_bindir"#)
        .arg("bash")
        .arg(super::repo_root().join("scripts/common.sh"))
        .env(
            "OUTBOXD_PG_MAJOR",
            major.map(|m| m.to_string()).unwrap_or_default(),
        )
        .output()
        .expect("run bash");
    let bin = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    (out.status.success() && !bin.is_empty()).then(|| PathBuf::from(bin))
}

/// A port nothing listens on now.
pub fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind an ephemeral port");
    listener.local_addr().expect("local addr").port()
}

fn is_root() -> bool {
    static ROOT: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *ROOT.get_or_init(|| {
        Command::new("id")
            .arg("-u")
            .output()
            .is_ok_and(|o| o.stdout.starts_with(b"0\n"))
    })
}

/// initdb and postgres refuse to run as root; when the tests run as root, the cluster belongs to the
/// `postgres` user (created by Debian's package).
fn command_as_pg_owner(cmd: &mut Command) -> Command {
    if is_root() {
        let mut wrapped = Command::new("runuser");
        wrapped
            .args(["-u", "postgres", "--"])
            .arg(cmd.get_program())
            .args(cmd.get_args());
        wrapped
    } else {
        let mut same = Command::new(cmd.get_program());
        same.args(cmd.get_args());
        same
    }
}

fn run_as_pg_owner(cmd: &mut Command) {
    run(&mut command_as_pg_owner(cmd));
}

fn run(cmd: &mut Command) {
    let out = cmd.output().unwrap_or_else(|e| panic!("run {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Hands the cluster's directory to the server's user.
fn give_to_pg_owner(dir: &Path) {
    if is_root() {
        run(Command::new("chown").arg("postgres:").arg(dir));
    }
}

/// Appends to a file the server owns (writing keeps the owner).
fn append_to(path: &Path, text: &str) {
    let mut existing = std::fs::read_to_string(path).expect("read config");
    existing.push_str(text);
    std::fs::write(path, existing).expect("write config");
}

/// Replaces the contents of a file the server owns (writing keeps the owner).
fn write_to(path: &Path, text: &str) {
    std::fs::write(path, text).expect("write config");
}

/// Creates a pgoutput slot named `slot` over `client`'s database. Rows committed before it exists
/// are not changes for it: tests create the slot before their workload.
pub async fn create_pgoutput_slot(client: &tokio_postgres::Client, slot: &str) {
    client
        .query_one(
            "SELECT pg_create_logical_replication_slot($1, 'pgoutput')::text",
            &[&slot],
        )
        .await
        .unwrap_or_else(|e| panic!("create slot {slot}: {e}"));
}
