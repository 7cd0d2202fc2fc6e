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
        Self::start_with_env(&[])
    }

    /// [`SecureKafka::start`] with more `scripts/dev-env` settings (`OUTBOXD_DEV_KAFKA_JWKS_URL`).
    pub fn start_with_env(vars: &[(&str, &str)]) -> SecureKafka {
        let mut vars = vars.to_vec();
        vars.push(("OUTBOXD_DEV_KAFKA_SECURITY", "1"));
        let broker = PrivateKafka::start_with_env(&vars);
        let vars = super::parse_exports(&broker.dev_env(&["env", "kafka"]));
        SecureKafka { broker, vars }
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

    /// Grants each of `principals` the operations `operations` on every resource `resources`
    /// names (AclCommand's `--topic T`, `--transactional-id ID`, `--cluster`): one AclCommand run.
    pub fn grant(&self, principals: &[&str], operations: &[&str], resources: &[&str]) {
        let mut args = vec!["kafka-acls", "--add"];
        for principal in principals {
            args.extend(["--allow-principal", principal]);
        }
        for operation in operations {
            args.extend(["--operation", operation]);
        }
        args.extend(resources);
        self.broker.dev_env(&args);
    }
}
