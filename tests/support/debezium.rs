//! Debezium Server as a child process, for what runs it next to outboxd: the side-by-side benchmark
//! (`bench/run`) and the golden files of `tests/debezium_goldens.rs` (`bench/goldens`). Neither
//! is part of CI: both scripts resolve Debezium Server and a Java 21+ runtime first
//! (`bench/debezium.sh`).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// Debezium Server run from a directory of its own: the distribution's files linked in, its own
/// `config/application.properties`, offsets and log. Stopped (SIGTERM, then SIGKILL) when dropped.
#[derive(Debug)]
pub struct DebeziumServer {
    child: Child,
    dir: tempfile::TempDir,
}

impl DebeziumServer {
    /// Starts the distribution unpacked at `home` with `properties` as its
    /// `application.properties`, on the Java runtime at `java_home` (else `run.sh`'s choice).
    /// `properties` may name [`DebeziumServer::OFFSETS`], which becomes a file in its directory.
    pub fn start(home: &Path, java_home: Option<&Path>, properties: &str) -> DebeziumServer {
        Self::start_with_jars(home, java_home, properties, &[])
    }

    /// [`DebeziumServer::start`] with `jars` added to its `lib/` (what the distribution lacks for
    /// a converter: Avro's library).
    pub fn start_with_jars(
        home: &Path,
        java_home: Option<&Path>,
        properties: &str,
        jars: &[PathBuf],
    ) -> DebeziumServer {
        let dir = tempfile::Builder::new()
            .prefix("outboxd-debezium-")
            .tempdir()
            .expect("temp dir");
        link_distribution(home, dir.path(), jars);
        let offsets = dir.path().join("offsets.dat");
        std::fs::write(
            dir.path().join("config/application.properties"),
            properties.replace(Self::OFFSETS, &offsets.display().to_string()),
        )
        .expect("write application.properties");
        let log = std::fs::File::create(dir.path().join("debezium.log")).expect("log file");
        let mut command = Command::new(dir.path().join("run.sh"));
        command
            .current_dir(dir.path())
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log file"))
            .stderr(log);
        if let Some(java_home) = java_home {
            command.env("JAVA_HOME", java_home);
        }
        let child = command.spawn().expect("start Debezium Server");
        DebeziumServer { child, dir }
    }

    /// The placeholder for the offsets file in the properties given to [`DebeziumServer::start`].
    pub const OFFSETS: &'static str = "${OFFSETS_FILE}";

    /// The process id (the JVM: `run.sh` execs it).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Its log so far.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("debezium.log")).unwrap_or_default()
    }
}

impl Drop for DebeziumServer {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        for _ in 0..200 {
            if !matches!(self.child.try_wait(), Ok(None)) {
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!("--- Debezium Server log ---\n{}", self.log_text());
        }
    }
}

/// Links every entry of the distribution into `dir`, except `config/`, which gets its own
/// directory with the distribution's `config/lib` linked in (`run.sh` puts it on the classpath),
/// and, with `jars`, `lib/`, which gets the distribution's jars and `jars` linked in.
fn link_distribution(home: &Path, dir: &Path, jars: &[PathBuf]) {
    let link = |from: &Path, to: &Path| std::os::unix::fs::symlink(from, to).expect("link");
    for entry in std::fs::read_dir(home).expect("Debezium Server distribution") {
        let entry = entry.expect("directory entry");
        let name = entry.file_name();
        if name == "lib" && !jars.is_empty() {
            std::fs::create_dir(dir.join("lib")).expect("lib dir");
            for jar in std::fs::read_dir(entry.path())
                .expect("lib")
                .map(|e| e.expect("jar"))
            {
                link(&jar.path(), &dir.join("lib").join(jar.file_name()));
            }
            for jar in jars {
                link(
                    jar,
                    &dir.join("lib").join(jar.file_name().expect("a jar's name")),
                );
            }
        } else if name != "config" {
            link(&entry.path(), &dir.join(name));
        }
    }
    std::fs::create_dir(dir.join("config")).expect("config dir");
    std::os::unix::fs::symlink(home.join("config/lib"), dir.join("config/lib")).expect("link");
}
