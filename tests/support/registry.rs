//! The dev environment's Schema Registry (Apicurio's Confluent-compatible API, `scripts/dev-env up
//! registry`), and Avro records decoded by the Apache Avro Python library, not by outboxd.

use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::OnceLock;

use serde_json::Value;

use super::repo_root;

/// The base URL of the shared environment's registry, started on first use.
pub fn registry_url() -> &'static str {
    static URL: OnceLock<String> = OnceLock::new();
    URL.get_or_init(|| {
        let script = repo_root().join("scripts/dev-env");
        let up = Command::new(&script)
            .args(["up", "registry"])
            .status()
            .expect("run scripts/dev-env up registry");
        assert!(
            up.success(),
            "scripts/dev-env up registry failed; run scripts/setup test first"
        );
        let out = Command::new(&script)
            .args(["env", "registry"])
            .output()
            .expect("run scripts/dev-env env registry");
        assert!(out.status.success(), "scripts/dev-env env registry failed");
        String::from_utf8_lossy(&out.stdout)
            .trim()
            .strip_prefix("export OUTBOXD_DEV_REGISTRY_URL=")
            .expect("the registry's URL")
            .to_owned()
    })
}

/// `GET <url>/<path>`'s status and JSON answer.
pub fn get(url: &str, path: &str) -> (u16, Value) {
    let rest = url.strip_prefix("http://").expect("an http URL");
    let (address, base) = rest.split_once('/').expect("a base path");
    let (status, body) =
        super::http::http_get(address, &format!("/{base}/{path}")).expect("the registry answers");
    (status, serde_json::from_str(&body).unwrap_or(Value::Null))
}

/// The registered versions of `subject`.
pub fn versions(url: &str, subject: &str) -> Vec<u64> {
    let (status, answer) = get(url, &format!("subjects/{subject}/versions"));
    assert_eq!(status, 200, "versions of {subject}: {answer}");
    answer
        .as_array()
        .expect("a list")
        .iter()
        .map(|v| v.as_u64().expect("a version"))
        .collect()
}

/// Each record (`None`: a null key or value) decoded with the schema its id names in the
/// registry at `url`, in JsonConverter's JSON: `(schema id, value)`.
pub fn decode(url: &str, records: &[Option<&[u8]>]) -> Vec<Option<(u64, Value)>> {
    let input: Vec<Value> = records
        .iter()
        .map(|r| r.map_or(Value::Null, |bytes| Value::from(hex(bytes))))
        .collect();
    let mut child = Command::new("python3")
        .arg(repo_root().join("tests/support/avro_decode.py"))
        .arg(url)
        .env("PYTHONPATH", avro_python_dir())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("run python3");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(Value::from(input).to_string().as_bytes())
        .expect("write records");
    let out = child.wait_with_output().expect("decoder output");
    assert!(out.status.success(), "avro_decode.py failed");
    let decoded: Vec<Value> = serde_json::from_slice(&out.stdout).expect("JSON");
    decoded
        .into_iter()
        .map(|d| match d {
            Value::Null => None,
            d => Some((d["id"].as_u64().expect("id"), d["value"].clone())),
        })
        .collect()
}

/// Where `scripts/setup test` unpacked the Python Avro library (scripts/common.sh's AVRO_PY_DIR).
fn avro_python_dir() -> PathBuf {
    let out = Command::new("bash")
        .arg("-c")
        .arg("source scripts/common.sh && printf %s \"$AVRO_PY_DIR\"")
        .current_dir(repo_root())
        .output()
        .expect("run bash");
    PathBuf::from(String::from_utf8(out.stdout).expect("UTF-8 path"))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A registry of one test's own, for what the shared one must not suffer (being stopped).
/// Stopped and deleted on drop.
#[derive(Debug)]
pub struct PrivateRegistry {
    dir: tempfile::TempDir,
    /// The API's base URL.
    pub url: String,
    /// `scripts/dev-env` settings it was started with.
    vars: Vec<(String, String)>,
}

impl PrivateRegistry {
    /// Starts one with `scripts/dev-env up registry` in a directory of its own.
    pub fn start() -> PrivateRegistry {
        Self::start_with_env(&[])
    }

    /// [`PrivateRegistry::start`] with more `scripts/dev-env` settings
    /// (`OUTBOXD_DEV_REGISTRY_JAVA_OPTS`).
    pub fn start_with_env(vars: &[(&str, &str)]) -> PrivateRegistry {
        let dir = tempfile::Builder::new()
            .prefix("outboxd-registry-")
            .tempdir()
            .expect("temp dir");
        let mut registry = PrivateRegistry {
            url: String::new(),
            dir,
            vars: vars
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
        };
        registry.dev_env(&["up", "registry"]);
        let exports = registry.dev_env(&["env", "registry"]);
        registry.url = exports
            .trim()
            .strip_prefix("export OUTBOXD_DEV_REGISTRY_URL=")
            .expect("the registry's URL")
            .to_owned();
        registry
    }

    /// Stops it (its schemas are kept).
    pub fn stop(&self) {
        self.dev_env(&["stop-registry"]);
    }

    /// Starts it again on the same port and storage.
    pub fn start_again(&self) {
        self.dev_env(&["start-registry"]);
    }

    fn dev_env(&self, args: &[&str]) -> String {
        let out = Command::new(repo_root().join("scripts/dev-env"))
            .args(args)
            .env("OUTBOXD_DEV_DIR", self.dir.path().join("env"))
            .envs(self.vars.iter().map(|(k, v)| (k, v)))
            .stderr(Stdio::inherit())
            .output()
            .expect("run scripts/dev-env");
        assert!(out.status.success(), "scripts/dev-env {args:?} failed");
        String::from_utf8(out.stdout).expect("UTF-8 output")
    }
}

impl Drop for PrivateRegistry {
    fn drop(&mut self) {
        let _ = Command::new(repo_root().join("scripts/dev-env"))
            .arg("down")
            .env("OUTBOXD_DEV_DIR", self.dir.path().join("env"))
            .status();
    }
}

/// Registers the Avro schema `schema` (JSON text) under `subject` at `url`; its id.
pub fn register(url: &str, subject: &str, schema: &str) -> u64 {
    let body = serde_json::json!({ "schema": schema }).to_string();
    let out = Command::new("curl")
        .args(["-sS", "-X", "POST", "-H"])
        .arg("Content-Type: application/vnd.schemaregistry.v1+json")
        .arg("--data-binary")
        .arg(&body)
        .arg(format!("{url}/subjects/{subject}/versions"))
        .output()
        .expect("run curl");
    let answer: Value = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
    answer["id"]
        .as_u64()
        .unwrap_or_else(|| panic!("register {subject}: {answer}"))
}

/// A real HTTP server (Debian's nginx, installed by `scripts/setup test`) that enforces basic
/// auth for one user in front of a registry: Apicurio 2.4's own basic auth needs an OIDC
/// provider. Stopped when dropped.
pub struct BasicAuthProxy {
    /// The registry's API through the proxy (`…/apis/ccompat/v7`).
    pub url: String,
    child: std::process::Child,
    _dir: tempfile::TempDir,
}

impl BasicAuthProxy {
    /// nginx on a free port, passing requests with `user`'s `password` on to the registry at
    /// `url`, refusing others with 401.
    pub fn start(url: &str, user: &str, password: &str) -> BasicAuthProxy {
        let rest = url.strip_prefix("http://").expect("an http URL");
        let (upstream, base) = rest.split_once('/').expect("a base path");
        let dir = tempfile::tempdir().expect("temp dir");
        let port = super::postgres::free_port();
        let path = dir.path().display();
        std::fs::write(
            dir.path().join("htpasswd"),
            format!("{user}:{{PLAIN}}{password}\n"),
        )
        .expect("write htpasswd");
        // One process (no workers changing user), everything under the temp dir.
        let config = format!(
            "daemon off;\nmaster_process off;\npid {path}/nginx.pid;\nerror_log {path}/error.log;\n\
             events {{}}\nhttp {{\n  access_log off;\n  client_body_temp_path {path}/body;\n  \
             proxy_temp_path {path}/proxy;\n  fastcgi_temp_path {path}/fastcgi;\n  \
             uwsgi_temp_path {path}/uwsgi;\n  scgi_temp_path {path}/scgi;\n  server {{\n    \
             listen 127.0.0.1:{port};\n    location / {{\n      auth_basic \"schema registry\";\n      \
             auth_basic_user_file {path}/htpasswd;\n      proxy_pass http://{upstream};\n    }}\n  \
             }}\n}}\n"
        );
        std::fs::write(dir.path().join("nginx.conf"), config).expect("write nginx.conf");
        let child = Command::new("/usr/sbin/nginx")
            .arg("-p")
            .arg(dir.path())
            .arg("-e")
            .arg(dir.path().join("error.log"))
            .arg("-c")
            .arg(dir.path().join("nginx.conf"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("run nginx (scripts/setup test installs it)");
        let address = format!("127.0.0.1:{port}");
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while std::net::TcpStream::connect(&address).is_err() {
            assert!(
                std::time::Instant::now() < deadline,
                "nginx did not listen: {}",
                std::fs::read_to_string(dir.path().join("error.log")).unwrap_or_default()
            );
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        BasicAuthProxy {
            url: format!("http://{address}/{base}"),
            child,
            _dir: dir,
        }
    }
}

impl Drop for BasicAuthProxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
