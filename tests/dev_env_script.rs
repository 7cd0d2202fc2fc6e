//! `scripts/dev-env` keeps its promises: `up` twice is harmless, `env` tells where the services are,
//! `down` leaves no process behind, and `OUTBOXD_PG_MAJOR` runs the PostgreSQL major it names. Runs
//! environments of its own, beside the shared one.

mod support;

use std::path::Path;
use std::process::{Command, Output};

fn dev_env(dir: &Path, verb: &str) -> Output {
    dev_env_with(dir, &[verb], &[])
}

/// Runs `scripts/dev-env ARGS` for the environment in `dir`, with the extra variables `vars`.
fn dev_env_with(dir: &Path, args: &[&str], vars: &[(&str, &str)]) -> Output {
    let out = Command::new(support::repo_root().join("scripts/dev-env"))
        .args(args)
        .env("OUTBOXD_DEV_DIR", dir)
        .envs(vars.iter().copied())
        .output()
        .expect("run scripts/dev-env");
    assert!(
        out.status.success(),
        "dev-env {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// The value `scripts/dev-env env` printed for `key`.
fn exported(env: &str, key: &str) -> String {
    env.lines()
        .find_map(|line| line.strip_prefix(&format!("export {key}=")))
        .unwrap_or_else(|| panic!("no {key} in {env}"))
        .to_owned()
}

/// Brings the environment in its directory down when dropped, so a failing test leaves no server.
struct DownOnDrop<'a>(&'a Path, &'a [(&'a str, &'a str)]);

impl Drop for DownOnDrop<'_> {
    fn drop(&mut self) {
        let _ = Command::new(support::repo_root().join("scripts/dev-env"))
            .arg("down")
            .env("OUTBOXD_DEV_DIR", self.0)
            .envs(self.1.iter().copied())
            .output();
    }
}

/// The PostgreSQL majors `scripts/setup` prepares for the test suite besides the default
/// (`PG_TEST_MAJORS` in `scripts/common.sh`).
fn test_majors() -> Vec<String> {
    let [majors] = &support::common_sh::values(&["PG_TEST_MAJORS"])[..] else {
        unreachable!("one value for one name")
    };
    let majors: Vec<String> = majors.split_whitespace().map(str::to_owned).collect();
    assert!(!majors.is_empty(), "PG_TEST_MAJORS is empty");
    majors
}

/// Processes whose command line mentions `dir` (the postmaster and the broker both do).
fn processes_under(dir: &Path) -> Vec<String> {
    let out = Command::new("pgrep")
        .arg("-af")
        .arg(dir)
        .output()
        .expect("run pgrep");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_owned)
        .collect()
}

#[test]
fn up_twice_is_harmless_and_down_leaves_nothing() {
    let parent = tempfile::tempdir().expect("temp dir");
    let dir = parent.path().join("env");

    dev_env(&dir, "up");
    let first = String::from_utf8(dev_env(&dir, "env").stdout).expect("UTF-8");
    let running = processes_under(&dir);
    assert!(
        running.len() >= 2,
        "expected a postmaster and a broker, found {running:?}"
    );

    dev_env(&dir, "up");
    let second = String::from_utf8(dev_env(&dir, "env").stdout).expect("UTF-8");
    assert_eq!(first, second, "a second up moved the services");
    assert!(
        first.contains("OUTBOXD_DEV_KAFKA_BOOTSTRAP=127.0.0.1:"),
        "{first}"
    );
    assert!(
        first.contains("OUTBOXD_DEV_PG_URL=postgresql://"),
        "{first}"
    );

    dev_env(&dir, "down");
    assert_eq!(
        processes_under(&dir),
        Vec::<String>::new(),
        "processes left after down"
    );
    assert!(!dir.exists(), "down left {dir:?} behind");
}

/// Each major the suite prepares comes up as itself, decoding logically: the server reports that major,
/// `wal_level` is `logical`, and a pgoutput slot can be created. The queries go through the `psql` in
/// the environment's `OUTBOXD_DEV_PG_BIN`, which the server builds borrow from Debian's client.
#[test]
fn each_selected_postgres_major_runs_with_logical_decoding() {
    for major in test_majors() {
        let parent = tempfile::tempdir().expect("temp dir");
        let dir = parent.path().join("env");
        let vars = [("OUTBOXD_PG_MAJOR", major.as_str())];
        let _down = DownOnDrop(&dir, &vars);
        dev_env_with(&dir, &["up", "postgres"], &vars);
        let env = String::from_utf8(dev_env_with(&dir, &["env", "postgres"], &vars).stdout)
            .expect("UTF-8");
        let psql = Path::new(&exported(&env, "OUTBOXD_DEV_PG_BIN")).join("psql");
        let out = Command::new(&psql)
            .args(["-X", "-q", "-At", "-v", "ON_ERROR_STOP=1", "-d"])
            .arg(exported(&env, "OUTBOXD_DEV_PG_URL"))
            .args([
                "-c",
                "SHOW server_version",
                "-c",
                "SHOW wal_level",
                "-c",
                "SELECT slot_name FROM pg_create_logical_replication_slot('probe', 'pgoutput')",
                "-c",
                "SELECT plugin FROM pg_replication_slots WHERE slot_name = 'probe'",
            ])
            .output()
            .unwrap_or_else(|e| panic!("run {}: {e}", psql.display()));
        dev_env_with(&dir, &["down"], &vars);
        assert!(
            out.status.success(),
            "PostgreSQL {major}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let text = String::from_utf8(out.stdout).expect("UTF-8");
        let lines: Vec<&str> = text.lines().collect();
        let [version, wal_level, slot, plugin] = lines[..] else {
            panic!("PostgreSQL {major}: psql printed {text:?}");
        };
        assert!(
            version.starts_with(&format!("{major}.")),
            "OUTBOXD_PG_MAJOR={major} runs PostgreSQL {version}"
        );
        assert_eq!(wal_level, "logical", "PostgreSQL {major}");
        assert_eq!(slot, "probe", "PostgreSQL {major}");
        assert_eq!(plugin, "pgoutput", "PostgreSQL {major}");
        assert_eq!(
            processes_under(&dir),
            Vec::<String>::new(),
            "PostgreSQL {major}: processes left after down"
        );
    }
}
