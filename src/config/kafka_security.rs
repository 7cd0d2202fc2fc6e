//! `[kafka.tls]` and `[kafka.sasl]`: how the relay proves who it is to the broker and checks who
//! the broker is, as first-class settings mapped onto librdkafka's properties.
//!
//! First-class settings exist so that the common cases cannot be half-configured: a section set
//! implies its `security.protocol`, hostname verification is on unless turned off, secrets come
//! from files or the environment (never the file itself), and a mechanism missing what it needs
//! is refused at load, naming the key. Whatever they do not cover stays in the raw
//! `[kafka.properties]` passthrough; one librdkafka property set both ways is an error naming
//! both, so that no one wonders which wins.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use super::build::read_secret_file;
use super::choice::{choice, Choice};
use super::sections::Secret;
use super::ConfigError;

/// `[kafka.tls]`: TLS to the broker (`security.protocol` SSL, or SASL_SSL with `[kafka.sasl]`).
/// An empty section turns TLS on with the system's CAs.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct KafkaTlsSection {
    /// PEM file of the CA(s) the broker's certificate is checked against; unset: the system's.
    pub ca_file: Option<PathBuf>,
    /// PEM file of the client certificate (mTLS); needs `key_file`.
    pub certificate_file: Option<PathBuf>,
    /// PEM file of the client certificate's private key; needs `certificate_file`.
    pub key_file: Option<PathBuf>,
    /// A file whose first line is the password of an encrypted `key_file`.
    pub key_password_file: Option<PathBuf>,
    /// Whether the broker's certificate must name the host (or IP) dialled. Off only for brokers
    /// whose certificates name no reachable address: without it any certificate of the CA passes.
    pub verify_hostname: bool,
}

impl Default for KafkaTlsSection {
    fn default() -> Self {
        Self {
            ca_file: None,
            certificate_file: None,
            key_file: None,
            key_password_file: None,
            verify_hostname: true,
        }
    }
}

/// `[kafka.sasl]`: SASL authentication (`security.protocol` SASL_PLAINTEXT, or SASL_SSL with
/// `[kafka.tls]`). `Debug` hides the password.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KafkaSaslSection {
    /// PLAIN, SCRAM-SHA-256, SCRAM-SHA-512 or OAUTHBEARER (OIDC client credentials).
    #[serde(deserialize_with = "choice")]
    pub mechanism: SaslMechanism,
    /// The user (PLAIN, SCRAM).
    #[serde(default)]
    pub username: Option<String>,
    /// The password (PLAIN, SCRAM), best given as `OUTBOXD__KAFKA__SASL__PASSWORD`.
    #[serde(default)]
    pub password: Option<Secret>,
    /// A file whose first line is the password (PLAIN, SCRAM), instead of `password`.
    #[serde(default)]
    pub password_file: Option<PathBuf>,
    /// The identity provider's token endpoint (OAUTHBEARER).
    #[serde(default)]
    pub token_endpoint_url: Option<String>,
    /// The client id (OAUTHBEARER).
    #[serde(default)]
    pub client_id: Option<String>,
    /// A file whose first line is the client secret (OAUTHBEARER).
    #[serde(default)]
    pub client_secret_file: Option<PathBuf>,
    /// The scope asked for (OAUTHBEARER; optional).
    #[serde(default)]
    pub scope: Option<String>,
    /// SASL extensions sent with the token (OAUTHBEARER; e.g. Confluent Cloud's
    /// `logicalCluster` and `identityPoolId`).
    #[serde(default)]
    pub extensions: BTreeMap<String, String>,
}

/// `kafka.sasl.mechanism` values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SaslMechanism {
    /// Username and password, sent as they are (use with TLS only).
    Plain,
    /// Salted challenge-response with SHA-256.
    ScramSha256,
    /// Salted challenge-response with SHA-512.
    ScramSha512,
    /// A JWT fetched from an OIDC token endpoint with client credentials.
    OAuthBearer,
}

impl Choice for SaslMechanism {
    const CHOICES: &'static [(&'static str, Self)] = &[
        ("PLAIN", Self::Plain),
        ("SCRAM-SHA-256", Self::ScramSha256),
        ("SCRAM-SHA-512", Self::ScramSha512),
        ("OAUTHBEARER", Self::OAuthBearer),
    ];
}

impl SaslMechanism {
    /// librdkafka's `sasl.mechanism` value (the name in the file).
    fn name(self) -> &'static str {
        Self::CHOICES
            .iter()
            .find(|(_, m)| *m == self)
            .map_or("", |(name, _)| name)
    }
}

/// One librdkafka property a first-class setting sets.
#[derive(Clone, PartialEq, Eq)]
pub(super) struct Mapped {
    /// The librdkafka property.
    pub(super) property: &'static str,
    /// The first-class key that sets it, for errors.
    pub(super) key: &'static str,
    /// Its value.
    pub(super) value: String,
}

/// The librdkafka properties `[kafka.tls]` and `[kafka.sasl]` stand for, secrets read; none when
/// neither is set (the passthrough alone decides then).
pub(super) fn security_properties(
    tls: Option<&KafkaTlsSection>,
    sasl: Option<&KafkaSaslSection>,
) -> Result<Vec<Mapped>, ConfigError> {
    let mut mapped = Vec::new();
    let mut set = |property, key, value: String| {
        mapped.push(Mapped {
            property,
            key,
            value,
        });
    };
    let protocol = match (tls.is_some(), sasl.is_some()) {
        (false, false) => return Ok(Vec::new()),
        (true, false) => ("SSL", "kafka.tls"),
        (false, true) => ("SASL_PLAINTEXT", "kafka.sasl"),
        (true, true) => ("SASL_SSL", "kafka.sasl"),
    };
    set("security.protocol", protocol.1, protocol.0.into());
    if let Some(tls) = tls {
        tls_properties(tls, &mut set)?;
    }
    if let Some(sasl) = sasl {
        sasl_properties(sasl, &mut set)?;
    }
    Ok(mapped)
}

fn tls_properties(
    tls: &KafkaTlsSection,
    set: &mut impl FnMut(&'static str, &'static str, String),
) -> Result<(), ConfigError> {
    let invalid = |key, problem: &str| ConfigError::Invalid {
        key,
        problem: problem.into(),
    };
    match (&tls.certificate_file, &tls.key_file) {
        (Some(_), None) => {
            return Err(invalid(
                "kafka.tls.certificate_file",
                "needs kafka.tls.key_file, the certificate's private key",
            ))
        }
        (None, Some(_)) => {
            return Err(invalid(
                "kafka.tls.key_file",
                "needs kafka.tls.certificate_file, the client certificate",
            ))
        }
        _ => {}
    }
    if tls.key_password_file.is_some() && tls.key_file.is_none() {
        return Err(invalid(
            "kafka.tls.key_password_file",
            "is the password of kafka.tls.key_file, which is not set",
        ));
    }
    for (property, key, path) in [
        ("ssl.ca.location", "kafka.tls.ca_file", &tls.ca_file),
        (
            "ssl.certificate.location",
            "kafka.tls.certificate_file",
            &tls.certificate_file,
        ),
        ("ssl.key.location", "kafka.tls.key_file", &tls.key_file),
    ] {
        if let Some(path) = path {
            set(property, key, readable(key, path)?);
        }
    }
    if let Some(path) = &tls.key_password_file {
        let key = "kafka.tls.key_password_file";
        set("ssl.key.password", key, secret(key, path)?);
    }
    let algorithm = if tls.verify_hostname { "https" } else { "none" };
    set(
        "ssl.endpoint.identification.algorithm",
        "kafka.tls.verify_hostname",
        algorithm.into(),
    );
    Ok(())
}

fn sasl_properties(
    sasl: &KafkaSaslSection,
    set: &mut impl FnMut(&'static str, &'static str, String),
) -> Result<(), ConfigError> {
    let mechanism = sasl.mechanism.name();
    let invalid = |key, problem: String| ConfigError::Invalid { key, problem };
    set("sasl.mechanism", "kafka.sasl.mechanism", mechanism.into());
    let oauth = sasl.mechanism == SaslMechanism::OAuthBearer;
    // Keys of the other kind of mechanism: set, they would be silently ignored.
    let foreign: &[(&'static str, bool)] = if oauth {
        &[
            ("kafka.sasl.username", sasl.username.is_some()),
            ("kafka.sasl.password", sasl.password.is_some()),
            ("kafka.sasl.password_file", sasl.password_file.is_some()),
        ]
    } else {
        &[
            (
                "kafka.sasl.token_endpoint_url",
                sasl.token_endpoint_url.is_some(),
            ),
            ("kafka.sasl.client_id", sasl.client_id.is_some()),
            (
                "kafka.sasl.client_secret_file",
                sasl.client_secret_file.is_some(),
            ),
            ("kafka.sasl.scope", sasl.scope.is_some()),
            ("kafka.sasl.extensions", !sasl.extensions.is_empty()),
        ]
    };
    if let Some((key, _)) = foreign.iter().find(|(_, given)| *given) {
        return Err(invalid(
            *key,
            format!("does not apply to kafka.sasl.mechanism {mechanism:?}; remove it"),
        ));
    }
    if oauth {
        let required = |key, value: &Option<String>| {
            value
                .clone()
                .filter(|v| !v.is_empty())
                .ok_or_else(|| invalid(key, format!("is required with mechanism {mechanism}")))
        };
        set(
            "sasl.oauthbearer.method",
            "kafka.sasl.mechanism",
            "oidc".into(),
        );
        set(
            "sasl.oauthbearer.token.endpoint.url",
            "kafka.sasl.token_endpoint_url",
            required("kafka.sasl.token_endpoint_url", &sasl.token_endpoint_url)?,
        );
        set(
            "sasl.oauthbearer.client.id",
            "kafka.sasl.client_id",
            required("kafka.sasl.client_id", &sasl.client_id)?,
        );
        let key = "kafka.sasl.client_secret_file";
        let path = sasl.client_secret_file.as_ref().ok_or_else(|| {
            invalid(
                key,
                format!(
                    "is required with mechanism {mechanism} (a file holding the client secret)"
                ),
            )
        })?;
        set("sasl.oauthbearer.client.secret", key, secret(key, path)?);
        if let Some(scope) = &sasl.scope {
            set("sasl.oauthbearer.scope", "kafka.sasl.scope", scope.clone());
        }
        if !sasl.extensions.is_empty() {
            set(
                "sasl.oauthbearer.extensions",
                "kafka.sasl.extensions",
                extensions(&sasl.extensions)?,
            );
        }
        return Ok(());
    }
    let username = sasl
        .username
        .clone()
        .filter(|u| !u.is_empty())
        .ok_or_else(|| {
            invalid(
                "kafka.sasl.username",
                format!("is required with mechanism {mechanism}"),
            )
        })?;
    set("sasl.username", "kafka.sasl.username", username);
    let password = match (&sasl.password, &sasl.password_file) {
        (Some(_), Some(_)) => {
            return Err(invalid(
                "kafka.sasl.password_file",
                "and kafka.sasl.password are both set; keep one".into(),
            ))
        }
        (None, None) => {
            return Err(invalid(
                "kafka.sasl.password",
                format!(
                    "is required with mechanism {mechanism}: set kafka.sasl.password_file, or \
                     the environment variable OUTBOXD__KAFKA__SASL__PASSWORD"
                ),
            ))
        }
        (Some(password), None) if password.expose().is_empty() => {
            return Err(invalid("kafka.sasl.password", "is empty".into()))
        }
        (Some(password), None) => password.expose().to_owned(),
        (None, Some(path)) => secret("kafka.sasl.password_file", path)?,
    };
    set("sasl.password", "kafka.sasl.password", password);
    Ok(())
}

/// `sasl.oauthbearer.extensions`: `key=value` pairs joined by commas, which therefore neither may
/// hold (nor the key an `=`).
fn extensions(extensions: &BTreeMap<String, String>) -> Result<String, ConfigError> {
    let mut pairs = Vec::new();
    for (key, value) in extensions {
        if key.is_empty() || key.contains([',', '=']) || value.contains(',') {
            return Err(ConfigError::Invalid {
                key: "kafka.sasl.extensions",
                problem: format!(
                    "extension {key:?}: names may hold neither ',' nor '=', values no ','"
                ),
            });
        }
        pairs.push(format!("{key}={value}"));
    }
    Ok(pairs.join(","))
}

/// `path` as librdkafka will be given it, once it is known to be readable (librdkafka's own
/// error would only come at the first connection).
fn readable(key: &'static str, path: &Path) -> Result<String, ConfigError> {
    std::fs::File::open(path).map_err(|source| ConfigError::SecretFile {
        key,
        path: path.to_owned(),
        source,
    })?;
    Ok(path.display().to_string())
}

/// The secret in the first line of `path`, which must not be empty.
fn secret(key: &'static str, path: &Path) -> Result<String, ConfigError> {
    let value = read_secret_file(key, path)?;
    if value.is_empty() {
        return Err(ConfigError::Invalid {
            key,
            problem: format!("the first line of {} is empty", path.display()),
        });
    }
    Ok(value)
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::super::Settings;
    use super::*;

    const BASE: &str =
        "[postgres]\nurl = \"postgresql://u@h/db\"\n[kafka]\nbootstrap_servers = \"b:9092\"\n";

    /// A directory with `secret` (a secret file holding "s3cret-…"), `ca.crt`, `client.crt` and
    /// `client.key`, and `empty`.
    fn files() -> tempfile::TempDir {
        let dir = tempfile::tempdir().expect("temp dir");
        for (name, text) in [
            ("secret", "s3cret-kafka\nsecond line\n"),
            ("ca.crt", "ca"),
            ("client.crt", "cert"),
            ("client.key", "key"),
            ("empty", "\n"),
        ] {
            std::fs::write(dir.path().join(name), text).expect("write");
        }
        dir
    }

    /// The properties `sections` (after `[kafka]`, with `$DIR` the files' directory) load into,
    /// or the error, with `env` as the environment.
    fn load(
        dir: &tempfile::TempDir,
        sections: &str,
        env: &[(&str, &str)],
    ) -> Result<BTreeMap<String, String>, String> {
        let text = format!(
            "{BASE}{}",
            sections.replace("$DIR", &dir.path().display().to_string())
        );
        let path = dir.path().join("outboxd.toml");
        std::fs::write(&path, text).expect("write config");
        let env: HashMap<String, String> = env
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        let settings = Settings::load_with_env(&path, Some(&env)).map_err(|e| e.to_string())?;
        let relay = settings.relay_config().map_err(|e| e.to_string())?;
        let shown = format!("{settings:?} {relay:?}");
        assert!(!shown.contains("s3cret"), "Debug shows a secret: {shown}");
        Ok(relay.kafka.properties)
    }

    fn assert_has(properties: &BTreeMap<String, String>, expected: &[(&str, &str)]) {
        for (name, value) in expected {
            assert_eq!(
                properties.get(*name).map(String::as_str),
                Some(*value),
                "{name} in {properties:?}"
            );
        }
    }

    #[test]
    fn scram_over_tls_maps_onto_sasl_ssl_with_hostname_verification() {
        let dir = files();
        let properties = load(
            &dir,
            "[kafka.tls]\nca_file = \"$DIR/ca.crt\"\n\
             [kafka.sasl]\nmechanism = \"SCRAM-SHA-512\"\nusername = \"relay\"\n\
             password_file = \"$DIR/secret\"\n",
            &[],
        )
        .expect("valid");
        let ca = format!("{}/ca.crt", dir.path().display());
        assert_has(
            &properties,
            &[
                ("security.protocol", "SASL_SSL"),
                ("sasl.mechanism", "SCRAM-SHA-512"),
                ("sasl.username", "relay"),
                ("sasl.password", "s3cret-kafka"),
                ("ssl.ca.location", &ca),
                ("ssl.endpoint.identification.algorithm", "https"),
            ],
        );
    }

    #[test]
    fn mtls_maps_onto_ssl_with_the_key_password_from_a_file() {
        let dir = files();
        let properties = load(
            &dir,
            "[kafka.tls]\ncertificate_file = \"$DIR/client.crt\"\nkey_file = \"$DIR/client.key\"\n\
             key_password_file = \"$DIR/secret\"\nverify_hostname = false\n",
            &[],
        )
        .expect("valid");
        let path = |name| format!("{}/{name}", dir.path().display());
        assert_has(
            &properties,
            &[
                ("security.protocol", "SSL"),
                ("ssl.certificate.location", &path("client.crt")),
                ("ssl.key.location", &path("client.key")),
                ("ssl.key.password", "s3cret-kafka"),
                ("ssl.endpoint.identification.algorithm", "none"),
            ],
        );
        assert!(
            !properties.contains_key("ssl.ca.location"),
            "{properties:?}"
        );
        assert!(!properties.contains_key("sasl.mechanism"), "{properties:?}");
    }

    #[test]
    fn plain_without_tls_is_sasl_plaintext_with_the_password_from_the_environment() {
        let dir = files();
        let properties = load(
            &dir,
            "[kafka.sasl]\nmechanism = \"PLAIN\"\nusername = \"relay\"\n",
            &[("OUTBOXD__KAFKA__SASL__PASSWORD", "s3cret-env")],
        )
        .expect("valid");
        assert_has(
            &properties,
            &[
                ("security.protocol", "SASL_PLAINTEXT"),
                ("sasl.mechanism", "PLAIN"),
                ("sasl.password", "s3cret-env"),
            ],
        );
    }

    #[test]
    fn oauthbearer_maps_onto_librdkafkas_oidc_client_credentials() {
        let dir = files();
        let properties = load(
            &dir,
            "[kafka.tls]\n[kafka.sasl]\nmechanism = \"OAUTHBEARER\"\n\
             token_endpoint_url = \"https://idp.example/token\"\nclient_id = \"outboxd\"\n\
             client_secret_file = \"$DIR/secret\"\nscope = \"kafka\"\n\
             extensions = { logicalCluster = \"lkc-1\", identityPoolId = \"pool-2\" }\n",
            &[],
        )
        .expect("valid");
        assert_has(
            &properties,
            &[
                ("security.protocol", "SASL_SSL"),
                ("sasl.mechanism", "OAUTHBEARER"),
                ("sasl.oauthbearer.method", "oidc"),
                (
                    "sasl.oauthbearer.token.endpoint.url",
                    "https://idp.example/token",
                ),
                ("sasl.oauthbearer.client.id", "outboxd"),
                ("sasl.oauthbearer.client.secret", "s3cret-kafka"),
                ("sasl.oauthbearer.scope", "kafka"),
                (
                    "sasl.oauthbearer.extensions",
                    "identityPoolId=pool-2,logicalCluster=lkc-1",
                ),
                ("ssl.endpoint.identification.algorithm", "https"),
            ],
        );
    }

    #[test]
    fn mistakes_are_refused_naming_the_keys_and_never_the_secret() {
        let dir = files();
        let scram = "[kafka.sasl]\nmechanism = \"SCRAM-SHA-256\"\nusername = \"relay\"\n";
        let cases: &[(String, &[&str])] = &[
            (
                format!("[kafka.properties]\n\"sasl.username\" = \"other\"\n{scram}password_file = \"$DIR/secret\"\n"),
                &["kafka.sasl.username", "kafka.properties", "\"sasl.username\""],
            ),
            (
                format!("[kafka.property_files]\n\"sasl.password\" = \"$DIR/secret\"\n{scram}password_file = \"$DIR/secret\"\n"),
                &["kafka.sasl.password", "kafka.property_files", "\"sasl.password\""],
            ),
            (
                "[kafka.properties]\n\"security.protocol\" = \"SSL\"\n[kafka.tls]\n".into(),
                &["kafka.tls", "kafka.properties", "\"security.protocol\""],
            ),
            (
                "[kafka.tls]\nca_file = \"$DIR/ca.crt\"\nverify = false\n".into(),
                &["unknown field", "verify"],
            ),
            (
                "[kafka.sasl]\nmechanism = \"SCRAM\"\n".into(),
                &["\"SCRAM\" is not one of", "SCRAM-SHA-512"],
            ),
            (
                "[kafka.tls]\nca_file = \"$DIR/missing.crt\"\n".into(),
                &["kafka.tls.ca_file", "missing.crt", "No such file"],
            ),
            (scram.to_owned(), &["kafka.sasl.password", "OUTBOXD__KAFKA__SASL__PASSWORD"]),
            (
                format!("{scram}password = \"s3cret-inline\"\npassword_file = \"$DIR/secret\"\n"),
                &["kafka.sasl.password_file", "keep one"],
            ),
            (
                format!("{scram}password_file = \"$DIR/empty\"\n"),
                &["kafka.sasl.password_file", "empty"],
            ),
            (
                format!("{scram}password_file = \"$DIR\"\n"),
                &["kafka.sasl.password_file", "cannot read"],
            ),
            (
                "[kafka.sasl]\nmechanism = \"PLAIN\"\npassword_file = \"$DIR/secret\"\n".into(),
                &["kafka.sasl.username", "required"],
            ),
            (
                "[kafka.sasl]\nmechanism = \"OAUTHBEARER\"\nclient_id = \"c\"\nclient_secret_file = \"$DIR/secret\"\n".into(),
                &["kafka.sasl.token_endpoint_url", "required"],
            ),
            (
                "[kafka.sasl]\nmechanism = \"OAUTHBEARER\"\nusername = \"relay\"\n".into(),
                &["kafka.sasl.username", "does not apply"],
            ),
            (
                format!("{scram}password_file = \"$DIR/secret\"\nscope = \"kafka\"\n"),
                &["kafka.sasl.scope", "does not apply"],
            ),
            (
                "[kafka.tls]\ncertificate_file = \"$DIR/client.crt\"\n".into(),
                &["kafka.tls.certificate_file", "kafka.tls.key_file"],
            ),
            (
                "[kafka.tls]\nkey_password_file = \"$DIR/secret\"\n".into(),
                &["kafka.tls.key_password_file", "not set"],
            ),
        ];
        for (sections, named) in cases {
            let error = load(&dir, sections, &[]).expect_err(sections);
            for expected in *named {
                assert!(
                    error.contains(expected),
                    "{sections}: {expected:?} not in {error}"
                );
            }
            assert!(!error.contains("s3cret"), "{sections}: a secret in {error}");
        }
    }
}
