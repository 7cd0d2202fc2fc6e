//! A secured broker of one test's own, as managed Kafka runs it: `scripts/dev-env` with
//! `OUTBOXD_DEV_KAFKA_SECURITY=1` (TLS with a CA of its own, SASL_SSL with SCRAM-SHA-512, mTLS,
//! SASL_PLAINTEXT with PLAIN, the StandardAuthorizer denying whatever no ACL allows). Its PLAINTEXT
//! port is the administrator's (a super user): tests create topics and read through it, and grant
//! the relay's principals their ACLs with Kafka's AclCommand.

use super::kafka::PrivateKafka;

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
    broker: PrivateKafka,
    vars: Vec<(String, String)>,
}

impl SecureKafka {
    /// Starts the broker (a fresh CA, certificates and passwords).
    pub fn start() -> SecureKafka {
        let broker = PrivateKafka::start_with_env(&[("OUTBOXD_DEV_KAFKA_SECURITY", "1")]);
        let vars = super::parse_exports(&broker.dev_env(&["env", "kafka"]));
        SecureKafka { broker, vars }
    }

    /// The value `scripts/dev-env env` printed for `OUTBOXD_DEV_KAFKA_<key>`.
    fn var(&self, key: &str) -> &str {
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

    /// The relay's `[kafka.properties]` and `[kafka.property_files]` for `listener`, with the
    /// secret read from `password_file` (the broker's own, or a test's wrong one).
    pub fn relay_toml(&self, listener: Listener, password_file: &str) -> String {
        let ca = self.var("CA");
        let (properties, secret) = match listener {
            Listener::ScramSsl => (
                format!(
                    "\"security.protocol\" = \"SASL_SSL\"\n\"sasl.mechanism\" = \"SCRAM-SHA-512\"\n\
                     \"sasl.username\" = {:?}\n\"ssl.ca.location\" = {ca:?}\n",
                    self.var("SCRAM_USER")
                ),
                "sasl.password",
            ),
            Listener::Mtls => (
                format!(
                    "\"security.protocol\" = \"SSL\"\n\"ssl.ca.location\" = {ca:?}\n\
                     \"ssl.certificate.location\" = {:?}\n\"ssl.key.location\" = {:?}\n",
                    self.var("CLIENT_CERT"),
                    self.var("CLIENT_KEY")
                ),
                "ssl.key.password",
            ),
            Listener::PlainSasl => (
                format!(
                    "\"security.protocol\" = \"SASL_PLAINTEXT\"\n\"sasl.mechanism\" = \"PLAIN\"\n\
                     \"sasl.username\" = {:?}\n",
                    self.var("PLAIN_USER")
                ),
                "sasl.password",
            ),
        };
        format!(
            "[kafka.properties]\n{properties}\n[kafka.property_files]\n\"{secret}\" = {password_file:?}\n"
        )
    }

    /// Grants `principal` the operations `operations` on every resource `resources` names
    /// (AclCommand's `--topic T`, `--transactional-id ID`, `--cluster`).
    pub fn grant(&self, principal: &str, operations: &[&str], resources: &[&str]) {
        let mut args = vec!["kafka-acls", "--add", "--allow-principal", principal];
        for operation in operations {
            args.extend(["--operation", operation]);
        }
        args.extend(resources);
        self.broker.dev_env(&args);
    }
}
