//! A secured broker of one test's own, as managed Kafka runs it: `scripts/dev-env` with
//! `OUTBOXD_DEV_KAFKA_SECURITY=1` (TLS with a CA of its own, SASL_SSL with SCRAM-SHA-512, mTLS,
//! SASL_PLAINTEXT with PLAIN, the StandardAuthorizer denying whatever no ACL allows). Its PLAINTEXT
//! port is the administrator's (a super user): tests create topics and read through it, and grant
//! the relay's principals their ACLs through one long-lived JVM (`scripts/dev-env acl-admin`), in
//! AclCommand's words.

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use rdkafka::admin::{AdminClient, AdminOptions, AlterConfig, ResourceSpecifier};
use rdkafka::client::DefaultClientContext;

use super::kafka::{client_config_at, PrivateKafka};

/// How the relay authenticates, one per secured listener.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Listener {
    /// SASL_SSL with SCRAM-SHA-512: TLS, a username and a password.
    ScramSsl,
    /// SSL with a client certificate (its key encrypted by a password); the principal is its CN.
    Mtls,
    /// SASL_PLAINTEXT with PLAIN: a username and a password, in clear.
    PlainSasl,
}

/// A running secured broker; stopped and deleted on drop.
#[derive(Debug)]
pub struct SecureKafka {
    /// Before `broker`: stopped first (the environment's `down` wants no process of it left).
    acl_admin: Mutex<AclAdmin>,
    broker: PrivateKafka,
    vars: Vec<(String, String)>,
}

impl SecureKafka {
    /// Starts the broker (a fresh CA, certificates and passwords).
    pub fn start() -> SecureKafka {
        Self::start_with_env(&[])
    }

    /// [`SecureKafka::start`] with more `scripts/dev-env` settings (`OUTBOXD_DEV_KAFKA_JWKS_URL`).
    pub fn start_with_env(vars: &[(&str, &str)]) -> SecureKafka {
        let mut vars = vars.to_vec();
        vars.push(("OUTBOXD_DEV_KAFKA_SECURITY", "1"));
        let broker = PrivateKafka::start_with_env(&vars);
        let vars = super::parse_exports(&broker.dev_env(&["env", "kafka"]));
        SecureKafka {
            acl_admin: Mutex::new(AclAdmin::start(&broker)),
            broker,
            vars,
        }
    }

    /// The value `scripts/dev-env env` printed for `OUTBOXD_DEV_KAFKA_<key>` (`CA`, `CLIENT_CERT`…).
    pub fn var(&self, key: &str) -> &str {
        let key = format!("OUTBOXD_DEV_KAFKA_{key}");
        self.vars
            .iter()
            .find(|(k, _)| *k == key)
            .map(|(_, v)| v.as_str())
            .unwrap_or_else(|| panic!("scripts/dev-env env printed no {key}"))
    }

    /// The administrator's PLAINTEXT `host:port` (super user: topics, reading).
    pub fn admin_bootstrap(&self) -> &str {
        &self.broker.bootstrap
    }

    /// The `host:port` of `listener`.
    pub fn bootstrap(&self, listener: Listener) -> &str {
        self.var(match listener {
            Listener::ScramSsl => "SASL_SSL_BOOTSTRAP",
            Listener::Mtls => "MTLS_BOOTSTRAP",
            Listener::PlainSasl => "SASL_PLAINTEXT_BOOTSTRAP",
        })
    }

    /// The principal the broker sees for a client of `listener`, as ACLs name it.
    pub fn principal(&self, listener: Listener) -> String {
        let user = self.var(match listener {
            Listener::ScramSsl => "SCRAM_USER",
            Listener::Mtls => "MTLS_USER",
            Listener::PlainSasl => "PLAIN_USER",
        });
        format!("User:{user}")
    }

    /// The file holding the password of `listener`'s secret (the client key's for mTLS).
    pub fn password_file(&self, listener: Listener) -> &str {
        self.var(match listener {
            Listener::ScramSsl => "SCRAM_PASSWORD_FILE",
            Listener::Mtls => "CLIENT_KEY_PASSWORD_FILE",
            Listener::PlainSasl => "PLAIN_PASSWORD_FILE",
        })
    }

    /// Every secret of this broker's clients: no output may show one.
    pub fn secrets(&self) -> Vec<String> {
        [Listener::ScramSsl, Listener::Mtls, Listener::PlainSasl]
            .iter()
            .map(|l| {
                std::fs::read_to_string(self.password_file(*l))
                    .expect("password file")
                    .trim()
                    .to_owned()
            })
            .collect()
    }

    /// The relay's security settings for `listener`, with the secret read from `password_file`
    /// (the broker's own, or a test's wrong one): the first-class `[kafka.tls]` and `[kafka.sasl]`
    /// for SCRAM over TLS and mTLS, the raw `[kafka.properties]` passthrough for PLAIN.
    pub fn relay_toml(&self, listener: Listener, password_file: &str) -> String {
        let ca = self.var("CA");
        match listener {
            Listener::ScramSsl => format!(
                "[kafka.tls]\nca_file = {ca:?}\n\n[kafka.sasl]\nmechanism = \"SCRAM-SHA-512\"\n\
                 username = {:?}\npassword_file = {password_file:?}\n",
                self.var("SCRAM_USER")
            ),
            Listener::Mtls => format!(
                "[kafka.tls]\nca_file = {ca:?}\ncertificate_file = {:?}\nkey_file = {:?}\n\
                 key_password_file = {password_file:?}\n",
                self.var("CLIENT_CERT"),
                self.var("CLIENT_KEY")
            ),
            // The raw passthrough, which stays for whatever the first-class settings do not cover.
            Listener::PlainSasl => format!(
                "[kafka.properties]\n\"security.protocol\" = \"SASL_PLAINTEXT\"\n\
                 \"sasl.mechanism\" = \"PLAIN\"\n\"sasl.username\" = {:?}\n\n\
                 [kafka.property_files]\n\"sasl.password\" = {password_file:?}\n",
                self.var("PLAIN_USER")
            ),
        }
    }

    /// Makes `listener` present a broker certificate that expired (valid through 2024 only), for
    /// the same names as its own and signed by the same CA, and returns once it does. The broker
    /// takes it as a dynamic listener setting, for TLS handshakes from then on; only the
    /// inter-broker listener's certificate is checked against its truststore first, and that
    /// listener is PLAINTEXT.
    pub async fn expire_certificate(&self, listener: Listener) {
        let pki = Path::new(self.var("CA"))
            .parent()
            .expect("the CA's directory");
        let keystore = expired_keystore(pki, &pki.join(format!("expired-{listener:?}")));
        let name = match listener {
            Listener::ScramSsl => "sasl_ssl",
            Listener::Mtls => "ssl",
            Listener::PlainSasl => panic!("SASL_PLAINTEXT has no certificate"),
        };
        let setting = format!("listener.name.{name}.ssl.keystore.location");
        let keystore = keystore.display().to_string();
        let admin: AdminClient<DefaultClientContext> = client_config_at(self.admin_bootstrap())
            .create()
            .expect("admin client");
        let altered = admin
            .alter_configs(
                &[AlterConfig::new(ResourceSpecifier::Broker(1)).set(&setting, &keystore)],
                &AdminOptions::new(),
            )
            .await
            .expect("alter the broker's configuration");
        for result in altered {
            result.unwrap_or_else(|(_, code)| panic!("setting {setting}: {code}"));
        }
        let deadline = Instant::now() + Duration::from_secs(60);
        while !self.presents_an_expired_certificate(listener) {
            assert!(
                Instant::now() < deadline,
                "{listener:?} kept its certificate"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// `openssl s_client` finds the certificate `listener` presents expired.
    fn presents_an_expired_certificate(&self, listener: Listener) -> bool {
        let output = Command::new("openssl")
            .args(["s_client", "-connect", self.bootstrap(listener), "-CAfile"])
            .arg(self.var("CA"))
            .stdin(Stdio::null())
            .output()
            .expect("run openssl s_client");
        String::from_utf8_lossy(&output.stdout).contains("(certificate has expired)")
    }

    /// Grants each of `principals` the operations `operations` on every resource `resources`
    /// names (AclCommand's `--topic T`, `--transactional-id ID`, `--cluster`,
    /// `--resource-pattern-type prefixed`), returning once the broker holds the grants.
    pub fn grant(&self, principals: &[&str], operations: &[&str], resources: &[&str]) {
        let mut args = vec!["--add"];
        for principal in principals {
            args.extend(["--allow-principal", principal]);
        }
        for operation in operations {
            args.extend(["--operation", operation]);
        }
        args.extend(resources);
        self.acl_admin
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .grant(&args.join(" "));
    }
}

/// `scripts/dev-env acl-admin`: a JVM started with the broker (it compiles and connects while the
/// test sets up), granting one line of AclCommand's options at a time.
#[derive(Debug)]
struct AclAdmin {
    process: Child,
    requests: ChildStdin,
    answers: BufReader<ChildStdout>,
    /// It printed "ready".
    ready: bool,
}

impl AclAdmin {
    fn start(broker: &PrivateKafka) -> AclAdmin {
        let mut process = broker
            .dev_env_process(&["acl-admin"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("start scripts/dev-env acl-admin");
        AclAdmin {
            requests: process.stdin.take().expect("its stdin"),
            answers: BufReader::new(process.stdout.take().expect("its stdout")),
            process,
            ready: false,
        }
    }

    /// Its next line of output.
    fn answer(&mut self) -> String {
        let mut line = String::new();
        let read = self.answers.read_line(&mut line).expect("read acl-admin");
        assert!(read > 0, "acl-admin exited");
        line.trim_end().to_owned()
    }

    /// Grants what `line` names; panics unless the broker created the ACLs.
    fn grant(&mut self, line: &str) {
        if !self.ready {
            assert_eq!(self.answer(), "ready", "acl-admin did not start");
            self.ready = true;
        }
        writeln!(self.requests, "{line}").expect("write to acl-admin");
        let answer = self.answer();
        assert!(answer.starts_with("ok "), "granting {line}: {answer}");
    }
}

/// Makes in `dir` a PEM keystore with a new key and a certificate for it that expired, with the
/// names of scripts/dev-env's broker certificate and signed by its CA (in `pki`).
fn expired_keystore(pki: &Path, dir: &Path) -> PathBuf {
    std::fs::create_dir_all(dir).expect("a directory for the expired certificate");
    // `openssl ca`, which alone sets past dates, keeps its books in files.
    std::fs::write(
        dir.join("ca.cnf"),
        "[ca]\ndefault_ca = past\n[past]\ndatabase = index.txt\nnew_certs_dir = .\n\
         serial = serial\ndefault_md = sha256\npolicy = any\n[any]\ncommonName = supplied\n",
    )
    .expect("write ca.cnf");
    std::fs::write(dir.join("index.txt"), "").expect("write index.txt");
    std::fs::write(dir.join("serial"), "01\n").expect("write serial");
    std::fs::write(
        dir.join("extensions"),
        "subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth,clientAuth\n",
    )
    .expect("write extensions");
    openssl(
        dir,
        "req -newkey rsa:2048 -nodes -subj /CN=kafka-broker -keyout broker.key -out broker.csr",
    );
    openssl(
        dir,
        &format!(
            "ca -batch -config ca.cnf -cert {} -keyfile {} -in broker.csr -out broker.crt \
             -notext -startdate 20240101000000Z -enddate 20250101000000Z -extfile extensions",
            pki.join("ca.crt").display(),
            pki.join("ca.key").display()
        ),
    );
    let keystore = dir.join("broker-keystore.pem");
    let pem: Vec<u8> = [
        dir.join("broker.key"),
        dir.join("broker.crt"),
        pki.join("ca.crt"),
    ]
    .iter()
    .flat_map(|file| std::fs::read(file).expect("read a PEM file"))
    .collect();
    std::fs::write(&keystore, pem).expect("write the keystore");
    keystore
}

/// Runs `openssl` in `dir` with the words of `args` (none holds a space), which must succeed.
fn openssl(dir: &Path, args: &str) {
    let output = Command::new("openssl")
        .args(args.split_whitespace())
        .current_dir(dir)
        .output()
        .expect("run openssl");
    assert!(
        output.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
}

impl Drop for AclAdmin {
    fn drop(&mut self) {
        let _ = self.process.kill();
        let _ = self.process.wait();
    }
}
