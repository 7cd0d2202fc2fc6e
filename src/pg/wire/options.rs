//! Connection options, parsed from a libpq-style URL.

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use super::hosts::{endpoints, split_host_list, take_host_list, Endpoint, TargetSessionAttrs};

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
    /// The servers, tried in order (libpq's multi-host URLs): each a host name, IP address, or a
    /// directory holding the server's Unix socket (starts with `/`), and a port.
    pub hosts: Vec<Endpoint>,
    /// Which server of `hosts` will do.
    pub target_session_attrs: TargetSessionAttrs,
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
            .field("hosts", &self.hosts)
            .field("target_session_attrs", &self.target_session_attrs)
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

impl ConnectOptions {
    /// The servers as `host:port,host:port`, for messages.
    pub fn targets(&self) -> String {
        self.hosts
            .iter()
            .map(Endpoint::to_string)
            .collect::<Vec<_>>()
            .join(",")
    }
}

impl FromStr for ConnectOptions {
    type Err = OptionsError;

    /// Parses `postgresql://user:password@host:port[,host:port...]/dbname?sslmode=..&sslrootcert=..&application_name=..&connect_timeout=..&host=/socket/dir&target_session_attrs=..`.
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let invalid = |what: String| OptionsError(what);
        // The URL parser knows one host: the host list is read apart (as libpq does).
        let (single, host_list) =
            take_host_list(text, "h").ok_or_else(|| invalid("not a URL".into()))?;
        let (mut hosts, mut ports) = split_host_list(host_list).map_err(invalid)?;
        let url = url::Url::parse(&single).map_err(|e| invalid(e.to_string()))?;
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
        for host in &mut hosts {
            *host = decode(host)?;
        }
        let mut options = ConnectOptions {
            hosts: Vec::new(),
            target_session_attrs: TargetSessionAttrs::Any,
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
                "host" => hosts = value.split(',').map(str::to_owned).collect(),
                "port" => ports = value.split(',').map(str::to_owned).collect(),
                "target_session_attrs" => {
                    options.target_session_attrs =
                        TargetSessionAttrs::parse(&value).ok_or_else(|| {
                            invalid(format!(
                                "target_session_attrs {value:?}; expected any, read-write, \
                                 read-only, primary, standby or prefer-standby"
                            ))
                        })?;
                }
                "user" => options.user = value.into_owned(),
                "password" => options.password = Some(value.into_owned()),
                "dbname" => options.dbname = value.into_owned(),
                other => {
                    return Err(invalid(format!(
                        "unknown parameter {other:?} (known: sslmode, sslrootcert, \
                         application_name, connect_timeout, host, port, user, password, dbname, \
                         target_session_attrs)"
                    )))
                }
            }
        }
        options.hosts = endpoints(&hosts, &ports).map_err(invalid)?;
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
        assert_eq!(o.targets(), "db.example:6543");
        assert_eq!(o.dbname, "orders");
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
        assert_eq!(o.targets(), "/var/run/postgresql:5432");
        assert_eq!(o.sslmode, SslMode::Prefer);
        assert_eq!(o.target_session_attrs, TargetSessionAttrs::Any);
        let o: ConnectOptions = "postgresql://u@h/db?port=6000".parse().expect("valid");
        assert_eq!(o.targets(), "h:6000");
    }

    #[test]
    fn reads_several_hosts_as_libpq_does() {
        let o: ConnectOptions =
            "postgres://u:p%40ss@h1:5433,[::1]:5434,h3/db?target_session_attrs=read-write"
                .parse()
                .expect("valid");
        assert_eq!(o.targets(), "h1:5433,[::1]:5434,h3:5432");
        assert_eq!(o.password.as_deref(), Some("p@ss"));
        assert_eq!(o.target_session_attrs, TargetSessionAttrs::ReadWrite);
        let o: ConnectOptions = "postgresql:///db?host=a,b&port=1,2&target_session_attrs=primary"
            .parse()
            .expect("valid");
        assert_eq!(o.targets(), "a:1,b:2");
        assert!("postgresql://u@a,b/db?port=1,2,3"
            .parse::<ConnectOptions>()
            .is_err());
        assert!("postgresql://u@a/db?target_session_attrs=writable"
            .parse::<ConnectOptions>()
            .is_err());
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
