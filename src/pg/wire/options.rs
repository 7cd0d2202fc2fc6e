//! Connection options, parsed from a libpq-style URL.

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

/// How hard to insist on TLS, with libpq's names and meanings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SslMode {
    /// Plain TCP only.
    Disable,
    /// TLS if the server offers it, without verification; plain otherwise.
    Prefer,
    /// TLS, without verification.
    Require,
    /// TLS, the certificate chaining to `sslrootcert`, any host name.
    VerifyCa,
    /// TLS, the certificate chaining to `sslrootcert` and naming the host.
    VerifyFull,
}

impl SslMode {
    /// The libpq name.
    pub fn as_str(self) -> &'static str {
        match self {
            SslMode::Disable => "disable",
            SslMode::Prefer => "prefer",
            SslMode::Require => "require",
            SslMode::VerifyCa => "verify-ca",
            SslMode::VerifyFull => "verify-full",
        }
    }
}

/// Settings sent in the startup packet of every connection, so that column values arrive in one
/// deterministic text format whatever the server's defaults (see `pg::types`).
pub const SESSION_SETTINGS: &[(&str, &str)] = &[
    ("DateStyle", "ISO, MDY"),
    ("TimeZone", "UTC"),
    ("IntervalStyle", "iso_8601"),
    ("extra_float_digits", "3"),
    ("bytea_output", "hex"),
    ("client_encoding", "UTF8"),
];

/// Where and how to connect. The password never appears in `Debug` output.
#[derive(Clone, PartialEq, Eq)]
pub struct ConnectOptions {
    /// Host name, IP address, or a directory holding the server's Unix socket (starts with `/`).
    pub host: String,
    /// TCP port (also names the Unix socket file).
    pub port: u16,
    /// Role name.
    pub user: String,
    /// Password, if the server asks for one.
    pub password: Option<String>,
    /// Database.
    pub dbname: String,
    /// TLS policy.
    pub sslmode: SslMode,
    /// CA certificates (PEM) for `verify-ca` and `verify-full`; libpq's default
    /// `~/.postgresql/root.crt` when unset.
    pub sslrootcert: Option<PathBuf>,
    /// `application_name`, shown in `pg_stat_replication`.
    pub application_name: String,
    /// Limit for connecting, TLS and authentication together.
    pub connect_timeout: Duration,
}

impl fmt::Debug for ConnectOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ConnectOptions")
            .field("host", &self.host)
            .field("port", &self.port)
            .field("user", &self.user)
            .field("password", &self.password.as_ref().map(|_| "<redacted>"))
            .field("dbname", &self.dbname)
            .field("sslmode", &self.sslmode)
            .field("sslrootcert", &self.sslrootcert)
            .field("application_name", &self.application_name)
            .field("connect_timeout", &self.connect_timeout)
            .finish()
    }
}

/// A connection URL that cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid PostgreSQL URL: {0}")]
pub struct OptionsError(String);

impl FromStr for ConnectOptions {
    type Err = OptionsError;

    /// Parses `postgresql://user:password@host:port/dbname?sslmode=..&sslrootcert=..&application_name=..&connect_timeout=..&host=/socket/dir`.
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let invalid = |what: String| OptionsError(what);
        let url = url::Url::parse(text).map_err(|e| invalid(e.to_string()))?;
        if !matches!(url.scheme(), "postgresql" | "postgres") {
            return Err(invalid(format!(
                "scheme {:?}; expected postgresql://",
                url.scheme()
            )));
        }
        let decode = |s: &str| {
            percent_decode(s).ok_or_else(|| invalid(format!("bad percent-encoding in {s:?}")))
        };
        let user = match url.username() {
            "" => std::env::var("USER").unwrap_or_else(|_| "postgres".into()),
            name => decode(name)?,
        };
        let mut options = ConnectOptions {
            host: url.host_str().unwrap_or("localhost").to_owned(),
            port: url.port().unwrap_or(5432),
            dbname: match url.path().trim_start_matches('/') {
                "" => user.clone(),
                db => decode(db)?,
            },
            user,
            // Never echo the password, not even a malformed one.
            password: url
                .password()
                .map(|p| {
                    percent_decode(p)
                        .ok_or_else(|| invalid("bad percent-encoding in the password".into()))
                })
                .transpose()?,
            sslmode: SslMode::Prefer,
            sslrootcert: None,
            application_name: "outboxd".into(),
            connect_timeout: Duration::from_secs(10),
        };
        for (key, value) in url.query_pairs() {
            match &*key {
                "sslmode" => {
                    options.sslmode = match &*value {
                        "disable" => SslMode::Disable,
                        "prefer" | "allow" => SslMode::Prefer,
                        "require" => SslMode::Require,
                        "verify-ca" => SslMode::VerifyCa,
                        "verify-full" => SslMode::VerifyFull,
                        other => {
                            return Err(invalid(format!(
                                "sslmode {other:?}; expected disable, prefer, require, verify-ca or verify-full"
                            )))
                        }
                    }
                }
                "sslrootcert" => options.sslrootcert = Some(PathBuf::from(&*value)),
                "application_name" => options.application_name = value.into_owned(),
                "connect_timeout" => {
                    let seconds: u64 = value.parse().map_err(|_| {
                        invalid(format!("connect_timeout {value:?} is not a number of seconds"))
                    })?;
                    options.connect_timeout = Duration::from_secs(seconds.max(1));
                }
                "host" => options.host = value.into_owned(),
                "port" => {
                    options.port = value
                        .parse()
                        .map_err(|_| invalid(format!("port {value:?} is not a port number")))?;
                }
                "user" => options.user = value.into_owned(),
                "password" => options.password = Some(value.into_owned()),
                "dbname" => options.dbname = value.into_owned(),
                other => {
                    return Err(invalid(format!(
                        "unknown parameter {other:?} (known: sslmode, sslrootcert, \
                         application_name, connect_timeout, host, port, user, password, dbname)"
                    )))
                }
            }
        }
        Ok(options)
    }
}

/// Decodes `%XX` escapes; `None` if an escape is malformed or the result is not UTF-8.
fn percent_decode(text: &str) -> Option<String> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = std::str::from_utf8(bytes.get(i + 1..i + 3)?).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_a_full_url() {
        let o: ConnectOptions =
            "postgresql://app%40x:p%2Fss@db.example:6543/orders?sslmode=verify-full&sslrootcert=/ca.pem&application_name=relay&connect_timeout=3"
                .parse()
                .expect("valid");
        assert_eq!(o.user, "app@x");
        assert_eq!(o.password.as_deref(), Some("p/ss"));
        assert_eq!(
            (o.host.as_str(), o.port, o.dbname.as_str()),
            ("db.example", 6543, "orders")
        );
        assert_eq!(o.sslmode, SslMode::VerifyFull);
        assert_eq!(o.sslrootcert, Some(PathBuf::from("/ca.pem")));
        assert_eq!(o.application_name, "relay");
        assert_eq!(o.connect_timeout, Duration::from_secs(3));
    }

    #[test]
    fn defaults_like_libpq_and_allows_a_socket_directory() {
        let o: ConnectOptions = "postgresql:///db?host=/var/run/postgresql&user=u"
            .parse()
            .expect("valid");
        assert_eq!((o.host.as_str(), o.port), ("/var/run/postgresql", 5432));
        assert_eq!(o.sslmode, SslMode::Prefer);
    }

    #[test]
    fn never_shows_the_password() {
        let o: ConnectOptions = "postgresql://u:hunter2@h/db".parse().expect("valid");
        assert!(!format!("{o:?}").contains("hunter2"));
    }

    #[test]
    fn refuses_what_it_does_not_understand() {
        for bad in [
            "mysql://u@h/db",
            "postgresql://u@h/db?sslmode=maybe",
            "postgresql://u@h/db?sslcert=x",
            "postgresql://u@h/db?connect_timeout=soon",
            "not a url",
        ] {
            assert!(bad.parse::<ConnectOptions>().is_err(), "{bad} parsed");
        }
        let error = "postgresql://u@h/db?sslmode=maybe"
            .parse::<ConnectOptions>()
            .expect_err("refused");
        assert!(error.to_string().contains("verify-full"), "{error}");
    }
}
