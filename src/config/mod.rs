//! Typed configuration: a TOML file, overridden by `OUTBOXD__SECTION__KEY` environment variables.
//!
//! Every key, its default and its meaning are documented in `config/outboxd.toml`. Unknown keys are
//! errors (a typo must not silently fall back to a default), and so are values out of range.
//!
//! This module is the composition root: it imports the runtime types of every other module and
//! only `main.rs` and `ops` import it. [`sections`] is the file's schema, [`choice`] reads the
//! settings that name one of a fixed set of values, [`kafka_security`] maps `[kafka.tls]` and
//! `[kafka.sasl]` onto librdkafka's properties, [`validate`] refuses values that parse but
//! cannot work, and [`build`] turns the sections into the runtime settings.

mod build;
mod choice;
mod kafka_security;
mod outbox_avro;
mod sections;
mod topic_creation;
mod validate;

use std::path::{Path, PathBuf};

pub use outbox_avro::{AvroSchemaSource, OutboxFormat};
pub use sections::*;
pub use topic_creation::TopicCreationSection;

/// A configuration that cannot be used, with the key at fault.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file or the environment does not parse into the settings.
    #[error("configuration {path}: {problem}")]
    Load {
        /// The file.
        path: PathBuf,
        /// What the parser said (names the key), without the text it quoted (see [`redacted`]).
        problem: String,
    },
    /// A value parses but is not allowed.
    #[error("configuration key {key}: {problem}")]
    Invalid {
        /// `section.key`.
        key: &'static str,
        /// Why, and what is allowed.
        problem: String,
    },
    /// A file the configuration names (a secret, a certificate) cannot be read.
    #[error("configuration key {key}: cannot read {path}: {source}")]
    SecretFile {
        /// `section.key`.
        key: &'static str,
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
}

impl Settings {
    /// Loads `path`, then the `OUTBOXD__SECTION__KEY` environment overrides.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        Self::load_with_env(path, None)
    }

    /// Loads `path` with overrides from `env` instead of the process environment when given.
    fn load_with_env(
        path: &Path,
        env: Option<&std::collections::HashMap<String, String>>,
    ) -> Result<Self, ConfigError> {
        let load = |error: ::config::ConfigError| ConfigError::Load {
            path: path.to_owned(),
            problem: redacted(&error.to_string(), path, env),
        };
        ::config::Config::builder()
            .add_source(::config::File::from(path).format(::config::FileFormat::Toml))
            .add_source(
                ::config::Environment::with_prefix("OUTBOXD")
                    .prefix_separator("__")
                    .separator("__")
                    .list_separator(",")
                    .with_list_parse_key("postgres.publications")
                    .with_list_parse_key("outbox.tables")
                    .try_parsing(true)
                    .source(env.cloned()),
            )
            .build()
            .map_err(load)?
            .try_deserialize()
            .map_err(load)
    }
}

/// `message` (a parse error) fit to print: the parser quotes the offending line of the file, a
/// password in a URL included, so quoted lines (`12 | url = "…"`) are dropped, and any secret
/// found in the file or the environment is blanked out of what remains (a wrongly typed
/// `password = 123` is echoed in the message itself).
fn redacted(
    message: &str,
    path: &Path,
    env: Option<&std::collections::HashMap<String, String>>,
) -> String {
    let is_quote = |line: &str| {
        let rest = line
            .trim_start()
            .trim_start_matches(|c: char| c.is_ascii_digit());
        rest.trim_start().starts_with('|')
    };
    let mut kept: String = message
        .lines()
        .filter(|line| !is_quote(line))
        .collect::<Vec<_>>()
        .join(" ");
    let file = std::fs::read_to_string(path).unwrap_or_default();
    let environment: Vec<String> = match env {
        Some(env) => env.iter().map(|(k, v)| format!("{k}={v}")).collect(),
        None => std::env::vars_os()
            .map(|(k, v)| format!("{}={}", k.to_string_lossy(), v.to_string_lossy()))
            .filter(|line| line.starts_with("OUTBOXD"))
            .collect(),
    };
    let sources = std::iter::once(file.as_str()).chain(environment.iter().map(String::as_str));
    for secret in sources.flat_map(secrets_in) {
        kept = kept.replace(&secret, "<redacted>");
    }
    kept
}

/// What may be a secret in configuration text: the value of a key named like one (`password`,
/// `secret`, `token`) and the password of any URL (`scheme://user:password@host`).
fn secrets_in(text: &str) -> Vec<String> {
    let mut secrets = Vec::new();
    for line in text.lines() {
        if let Some((key, value)) = line.split_once('=') {
            let key = key.to_ascii_lowercase();
            if ["password", "secret", "token"]
                .iter()
                .any(|w| key.contains(w))
            {
                secrets.push(value.trim().trim_matches(['"', '\''].as_slice()).to_owned());
            }
        }
        let mut rest = line;
        while let Some(start) = rest.find("://") {
            rest = &rest[start + 3..];
            let authority = rest.split(['/', '"', '\'', ' ']).next().unwrap_or_default();
            if let Some((credentials, _)) = authority.rsplit_once('@') {
                if let Some((_, password)) = credentials.split_once(':') {
                    secrets.push(password.to_owned());
                }
            }
        }
    }
    // Short values ("", "1") would blank out unrelated words.
    secrets.retain(|s| s.len() >= 4);
    secrets
}

#[cfg(test)]
mod tests {
    use super::sections::*;
    use super::*;
    use crate::sink::batch::BatchLimits;

    fn write(text: &str) -> tempfile::NamedTempFile {
        let file = tempfile::Builder::new()
            .suffix(".toml")
            .tempfile()
            .expect("temp file");
        std::fs::write(file.path(), text).expect("write config");
        file
    }

    #[test]
    fn the_documented_example_is_valid_and_holds_the_defaults() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/outboxd.toml");
        let settings = Settings::load(&path).expect("example loads");
        let relay = settings.relay_config().expect("example validates");
        let defaults = RelaySection::default();
        assert_eq!(relay.name, defaults.name);
        assert_eq!(relay.status_interval, defaults.status_interval);
        assert_eq!(relay.batch, BatchLimits::default());
        assert_eq!(relay.offsets_topic, default_offsets_topic());
        assert_eq!(relay.transaction_timeout, default_transaction_timeout());
        assert_eq!(relay.slot, default_slot());
        assert_eq!(relay.stall_timeout, MetricsSection::default().stall_timeout);
    }

    #[test]
    fn unknown_keys_are_errors_that_name_the_key() {
        let file = write(
            "[postgres]\nurl = \"postgresql://u@h/db\"\n[kafka]\nbootstrap_servers = \"b:9092\"\nlinger = \"1s\"\n",
        );
        let error = Settings::load(file.path()).expect_err("unknown key refused");
        assert!(error.to_string().contains("linger"), "{error}");
    }

    #[test]
    fn bad_values_name_the_key_and_what_is_allowed() {
        let file = write(
            "[postgres]\nurl = \"postgresql://u@h/db\"\n[outbox]\ntables = [\"outbox\"]\n[kafka]\nbootstrap_servers = \"b:9092\"\n",
        );
        let error = Settings::load(file.path())
            .expect("parses")
            .relay_config()
            .expect_err("table without schema refused");
        assert!(error.to_string().contains("outbox.tables"), "{error}");
        assert!(error.to_string().contains("schema.table"), "{error}");

        let file = write(
            "[postgres]\nurl = \"postgresql://u@h/db\"\n[kafka]\nbootstrap_servers = \"b:9092\"\ntransaction_timeout = \"30s\"\n[batch]\nmax_age = \"1min\"\n",
        );
        let error = Settings::load(file.path())
            .expect("parses")
            .relay_config()
            .expect_err("max_age over the transaction timeout refused");
        assert!(error.to_string().contains("batch.max_age"), "{error}");
    }

    #[test]
    fn a_registry_password_given_twice_is_refused_without_showing_it() {
        let secret = tempfile::NamedTempFile::new().expect("temp file");
        std::fs::write(secret.path(), "from-the-file\n").expect("write secret");
        let file = write(&format!(
            "[postgres]\nurl = \"postgresql://u@h/db\"\n[kafka]\nbootstrap_servers = \"b:9092\"\n\
             [schema_registry]\nurl = \"http://registry:8081\"\nusername = \"u\"\n\
             password = \"in-the-config\"\npassword_file = \"{}\"\n",
            secret.path().display()
        ));
        let error = Settings::load(file.path())
            .expect("parses")
            .relay_config()
            .expect_err("two passwords refused");
        let text = error.to_string();
        assert!(text.contains("schema_registry.password"), "{text}");
        assert!(
            !text.contains("in-the-config") && !text.contains("from-the-file"),
            "{text}"
        );
    }

    #[test]
    fn a_registry_url_with_credentials_is_refused_without_showing_them() {
        let file = write(
            "[postgres]\nurl = \"postgresql://u@h/db\"\n[kafka]\nbootstrap_servers = \"b:9092\"\n\
             [schema_registry]\nurl = \"https://reg-user:reg-secret@registry:8081\"\n",
        );
        let error = Settings::load(file.path())
            .expect("parses")
            .relay_config()
            .expect_err("credentials in the URL refused");
        let text = error.to_string();
        assert!(
            text.contains("schema_registry.url") && text.contains("schema_registry.username"),
            "{text}"
        );
        assert!(
            !text.contains("reg-secret") && !text.contains("reg-user"),
            "{text}"
        );
    }

    #[test]
    fn routing_settings_name_the_key_and_the_allowed_values() {
        let base =
            "[postgres]\nurl = \"postgresql://u@h/db\"\n[kafka]\nbootstrap_servers = \"b:9092\"\n";
        let cases = [
            ("[outbox]\nenvelope = \"avro\"\n", "debezium-outbox"),
            (
                "[outbox]\ntopic = \"events.${aggregate}\"\n",
                "outbox.topic",
            ),
            (
                "[outbox]\nadditional_placement = [\"type:body\"]\n",
                "outbox.additional_placement",
            ),
            (
                "[outbox.cloudevents]\nsource = \"/${db}\"\n",
                "outbox.cloudevents.source",
            ),
            ("[cdc]\ndecimal_handling_mode = \"exact\"\n", "precise"),
            (
                "[[outbox.overrides]]\ntable = \"public.other\"\n",
                "outbox.overrides",
            ),
        ];
        for (section, named) in cases {
            let file = write(&format!("{base}{section}"));
            let error = match Settings::load(file.path()) {
                Err(error) => error.to_string(),
                Ok(settings) => settings
                    .relay_config()
                    .expect_err("invalid routing setting refused")
                    .to_string(),
            };
            assert!(error.contains(named), "{section}: {error}");
        }
        let file = write(&format!(
            "{base}[outbox]\ntables = [\"public.outbox\", \"billing.events\"]\n\
             [[outbox.overrides]]\ntable = \"billing.events\"\ncolumns = {{ id = \"event_id\" }}\n"
        ));
        Settings::load(file.path())
            .expect("parses")
            .relay_config()
            .expect("an override of a listed table is valid");
    }

    #[test]
    fn environment_variables_override_the_file() {
        let env = [
            ("OUTBOXD__KAFKA__BOOTSTRAP_SERVERS", "other:9093"),
            ("OUTBOXD__RELAY__NAME", "from-env"),
            ("OUTBOXD__POSTGRES__PUBLICATIONS", "a,b"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/outboxd.toml");
        let relay = Settings::load_with_env(&path, Some(&env))
            .expect("loads")
            .relay_config()
            .expect("valid");
        assert_eq!(relay.kafka.bootstrap_servers, "other:9093");
        assert_eq!(relay.name, "from-env");
        assert_eq!(relay.publications, ["a", "b"]);
    }

    #[test]
    fn secret_files_supply_kafka_properties_and_debug_hides_every_secret() {
        let secret = write("kafka-s3cret\n");
        let file = write(&format!(
            "[postgres]\nurl = \"postgresql://u:url-s3cret@h/db\"\npassword = \"pg-s3cret\"\n\
             [kafka]\nbootstrap_servers = \"b:9092\"\n\
             [kafka.property_files]\n\"sasl.password\" = {:?}\n",
            secret.path()
        ));
        let settings = Settings::load(file.path()).expect("parses");
        let relay = settings.relay_config().expect("valid");
        assert_eq!(
            relay
                .kafka
                .properties
                .get("sasl.password")
                .map(String::as_str),
            Some("kafka-s3cret")
        );
        assert_eq!(relay.postgres.password.as_deref(), Some("pg-s3cret"));
        let shown = format!("{settings:?} {relay:?}");
        assert!(!shown.contains("s3cret"), "{shown}");
    }

    #[test]
    fn debug_shows_every_host_of_a_multi_host_url_and_not_its_password() {
        let file = write(
            "[postgres]\nurl = \"postgresql://u:url-s3cret@db1:5432,db2:5433/app?target_session_attrs=read-write\"\n\
             [kafka]\nbootstrap_servers = \"b:9092\"\n",
        );
        let shown = format!("{:?}", Settings::load(file.path()).expect("parses"));
        assert!(
            shown.contains("postgresql://u:redacted@db1:5432,db2:5433/app?target_session_attrs"),
            "{shown}"
        );
        assert!(!shown.contains("s3cret"), "{shown}");
    }

    #[test]
    fn a_password_file_supplies_the_password() {
        let secret = write("s3cret\n");
        let file = write(&format!(
            "[postgres]\nurl = \"postgresql://u@h/db\"\npassword_file = {:?}\n[kafka]\nbootstrap_servers = \"b:9092\"\n",
            secret.path()
        ));
        let relay = Settings::load(file.path())
            .expect("parses")
            .relay_config()
            .expect("valid");
        assert_eq!(relay.postgres.password.as_deref(), Some("s3cret"));
    }

    #[test]
    fn a_file_that_does_not_parse_never_echoes_a_secret() {
        let cases = [
            // A backslash in the URL's password is an invalid TOML escape: the parser quotes the line.
            "[postgres]\nurl = \"postgresql://u:Pw\\qs3cret@h/db\"\n[kafka]\nbootstrap_servers = \"b:9092\"\n",
            // An unterminated password.
            "[postgres]\nurl = \"postgresql://u@h/db\"\npassword = \"pg-s3cret\n[kafka]\nbootstrap_servers = \"b:9092\"\n",
            // An unterminated string swallows the rest of the line.
            "[postgres]\nurl = \"postgresql://u:Pw-s3cret@h/db\n[kafka]\nbootstrap_servers = \"b:9092\"\n",
        ];
        for text in cases {
            let file = write(text);
            let error = Settings::load(file.path())
                .expect_err("does not parse")
                .to_string();
            assert!(!error.contains("s3cret"), "{error}");
            assert!(error.contains("configuration"), "{error}");
        }
    }

    #[test]
    fn values_that_cannot_work_are_refused_at_load_naming_the_key() {
        let base = "[postgres]\nurl = \"postgresql://u@h/db\"\n";
        let kafka = "[kafka]\nbootstrap_servers = \"b:9092\"\n";
        let cases = [
            (
                "[relay]\nstatus_interval = \"0s\"\n",
                "",
                "relay.status_interval",
            ),
            (
                "[relay]\nidle_confirm_interval = \"0s\"\n",
                "",
                "relay.idle_confirm_interval",
            ),
            ("[relay]\nbackoff_min = \"0s\"\n", "", "relay.backoff_min"),
            (
                "[relay]\nbackoff_min = \"2s\"\nbackoff_max = \"1s\"\n",
                "",
                "relay.backoff_max",
            ),
            (
                "[metrics]\nwal_poll_interval = \"0s\"\n",
                "",
                "metrics.wal_poll_interval",
            ),
            (
                "[metrics]\nstall_timeout = \"0s\"\n",
                "",
                "metrics.stall_timeout",
            ),
            ("", "call_timeout = \"0s\"\n", "kafka.call_timeout"),
            ("[relay]\nname = \"\"\n", "", "relay.name"),
            ("[relay]\nname = \"  \"\n", "", "relay.name"),
            ("", "offsets_topic = \"a b\"\n", "kafka.offsets_topic"),
            ("[dead_letter]\ntopic = \"\"\n", "", "dead_letter.topic"),
            ("[batch]\nmax_events = 0\n", "", "batch.max_events"),
            ("[poll]\nmark_column = \"\"\n", "", "poll.mark_column"),
            ("[outbox.columns]\nid = \"\"\n", "", "outbox.columns"),
            (
                "[cdc]\nschemas = true\nvalue_convention = \"natural\"\n",
                "",
                "cdc.schemas",
            ),
            (
                "[outbox]\nschemas = true\nenvelope = \"cloudevents\"\n",
                "",
                "outbox.schemas",
            ),
            (
                "[outbox]\nschemas = true\nadditional_placement = [\"type:envelope:t\"]\n",
                "",
                "outbox.schemas",
            ),
        ];
        for (section, kafka_key, named) in cases {
            let file = write(&format!("{section}{base}{kafka}{kafka_key}"));
            let error = Settings::load(file.path())
                .expect("parses")
                .relay_config()
                .expect_err(named)
                .to_string();
            assert!(error.contains(named), "{section}{kafka_key}: {error}");
            assert!(
                error.contains("must") || error.contains("is not"),
                "{error}"
            );
        }
        for (slot, postgres) in [
            ("bad-slot", "slot = \"bad-slot\""),
            ("Upper", "slot = \"Upper\""),
            ("long", &format!("slot = \"{}\"", "s".repeat(64))),
            (
                "publication",
                &format!("publications = [\"{}\"]", "p".repeat(64)),
            ),
            ("no publication", "publications = []"),
        ] {
            let file = write(&format!("{base}{postgres}\n{kafka}"));
            let error = Settings::load(file.path())
                .expect("parses")
                .relay_config()
                .expect_err(slot)
                .to_string();
            assert!(error.contains("postgres."), "{slot}: {error}");
        }
    }
}
