//! Several servers behind one URL, as libpq reads them: `postgresql://h1:p1,h2:p2/db`,
//! `?host=a,b&port=p1,p2`, and `target_session_attrs`, which says which of them will do. After a
//! failover the relay tries them in order and takes the first that is what it asked for, so it
//! finds the promoted standby by itself.

use std::collections::HashMap;
use std::fmt;

/// libpq's default port.
pub const DEFAULT_PORT: u16 = 5432;

/// One server to try: a host name, an IP address, or a Unix socket directory (starts with `/`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    /// Host name, IP address (without brackets), or socket directory.
    pub host: String,
    /// TCP port (also names the Unix socket file).
    pub port: u16,
}

impl fmt::Display for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.host.contains(':') {
            write!(f, "[{}]:{}", self.host, self.port)
        } else {
            write!(f, "{}:{}", self.host, self.port)
        }
    }
}

/// Which server of the list will do, with libpq's names and meanings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TargetSessionAttrs {
    /// The first that accepts the connection.
    Any,
    /// One that accepts writes: not in recovery, `default_transaction_read_only` off.
    ReadWrite,
    /// One that does not accept writes.
    ReadOnly,
    /// One not in recovery.
    Primary,
    /// One in recovery.
    Standby,
    /// A standby if there is one, else any.
    PreferStandby,
}

impl TargetSessionAttrs {
    /// Parses libpq's spelling.
    pub fn parse(text: &str) -> Option<Self> {
        Some(match text {
            "any" => Self::Any,
            "read-write" => Self::ReadWrite,
            "read-only" => Self::ReadOnly,
            "primary" => Self::Primary,
            "standby" => Self::Standby,
            "prefer-standby" => Self::PreferStandby,
            _ => return None,
        })
    }

    /// libpq's spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Any => "any",
            Self::ReadWrite => "read-write",
            Self::ReadOnly => "read-only",
            Self::Primary => "primary",
            Self::Standby => "standby",
            Self::PreferStandby => "prefer-standby",
        }
    }

    /// The passes over the host list: `prefer-standby` looks for a standby first, then takes any.
    pub fn passes(self) -> &'static [TargetSessionAttrs] {
        match self {
            Self::PreferStandby => &[Self::Standby, Self::Any],
            Self::Any => &[Self::Any],
            Self::ReadWrite => &[Self::ReadWrite],
            Self::ReadOnly => &[Self::ReadOnly],
            Self::Primary => &[Self::Primary],
            Self::Standby => &[Self::Standby],
        }
    }

    /// Whether a server in this state will do (for one pass: never `PreferStandby`).
    pub fn accepts(self, state: ServerState) -> bool {
        match self {
            Self::Any | Self::PreferStandby => true,
            Self::ReadWrite => !state.in_recovery && !state.read_only,
            Self::ReadOnly => state.in_recovery || state.read_only,
            Self::Primary => !state.in_recovery,
            Self::Standby => state.in_recovery,
        }
    }
}

/// What a server says about itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ServerState {
    /// In recovery: a hot standby.
    pub in_recovery: bool,
    /// `default_transaction_read_only` is on.
    pub read_only: bool,
}

impl ServerState {
    /// From the startup's ParameterStatus messages: PostgreSQL 14 and later report
    /// `in_hot_standby` and `default_transaction_read_only`; `None` when one is missing.
    pub fn from_parameters(parameters: &HashMap<String, String>) -> Option<Self> {
        let on = |name: &str| parameters.get(name).map(|value| value == "on");
        Some(Self {
            in_recovery: on("in_hot_standby")?,
            read_only: on("default_transaction_read_only")?,
        })
    }
}

/// The servers of a URL: its authority's comma-separated `host[:port]` entries, which `host=` and
/// `port=` parameters may replace. One port applies to every host; otherwise one per host.
pub fn endpoints(hosts: &[String], ports: &[String]) -> Result<Vec<Endpoint>, String> {
    let ports = ports
        .iter()
        .map(|port| match port.as_str() {
            "" => Ok(DEFAULT_PORT),
            text => text
                .parse()
                .map_err(|_| format!("port {text:?} is not a port number")),
        })
        .collect::<Result<Vec<u16>, String>>()?;
    let port_of = |i: usize| match ports.len() {
        0 => Ok(DEFAULT_PORT),
        1 => Ok(ports[0]),
        n if n == hosts.len() => Ok(ports[i]),
        n => Err(format!(
            "{n} ports for {} hosts: give one port, or one per host",
            hosts.len()
        )),
    };
    hosts
        .iter()
        .enumerate()
        .map(|(i, host)| {
            Ok(Endpoint {
                host: if host.is_empty() {
                    "localhost".to_owned()
                } else {
                    host.clone()
                },
                port: port_of(i)?,
            })
        })
        .collect()
}

/// Splits a URL's authority host list (`h1:p1,[::1]:p2,h3`) into hosts and ports, still
/// percent-encoded; a host without a port gets an empty one (the default).
pub fn split_host_list(list: &str) -> Result<(Vec<String>, Vec<String>), String> {
    let mut hosts = Vec::new();
    let mut ports = Vec::new();
    for entry in list.split(',') {
        let (host, port) = if let Some(rest) = entry.strip_prefix('[') {
            let (host, after) = rest
                .split_once(']')
                .ok_or_else(|| format!("unclosed [ in host {entry:?}"))?;
            let port = match after {
                "" => "",
                after => after
                    .strip_prefix(':')
                    .ok_or_else(|| format!("unexpected {after:?} after host [{host}]"))?,
            };
            (host, port)
        } else {
            entry.split_once(':').unwrap_or((entry, ""))
        };
        hosts.push(host.to_owned());
        ports.push(port.to_owned());
    }
    Ok((hosts, ports))
}

/// Splits `scheme://[userinfo@]hosts[/path][?query]` into the text with its host list replaced by
/// `placeholder` (which the URL parser accepts) and the host list itself.
pub fn take_host_list<'a>(text: &'a str, placeholder: &str) -> Option<(String, &'a str)> {
    let (scheme, rest) = text.split_once("://")?;
    let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let authority = &rest[..end];
    let (userinfo, hosts) = match authority.rfind('@') {
        Some(at) => (&authority[..=at], &authority[at + 1..]),
        None => ("", authority),
    };
    let replaced = if hosts.is_empty() { "" } else { placeholder };
    Some((
        format!("{scheme}://{userinfo}{replaced}{}", &rest[end..]),
        hosts,
    ))
}

/// A URL as libpq reads it (any number of hosts) for messages, with its password replaced by
/// `redacted`; `None` when it is no URL.
pub fn redacted_url(text: &str) -> Option<String> {
    const PLACEHOLDER: &str = "h";
    let (single, hosts) = take_host_list(text, PLACEHOLDER)?;
    let mut url = url::Url::parse(&single).ok()?;
    if url.password().is_some() {
        url.set_password(Some("redacted")).ok()?;
    }
    // The host list back in the placeholder's place (the URL parser printed it as it was).
    let (shown, _) = take_host_list(url.as_str(), hosts)?;
    Some(shown)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_a_host_list_with_ports_and_brackets() {
        let (hosts, ports) = split_host_list("a:5433,[::1]:6000,b,[fe80::1]").expect("valid");
        assert_eq!(hosts, ["a", "::1", "b", "fe80::1"]);
        assert_eq!(ports, ["5433", "6000", "", ""]);
        let endpoints = endpoints(&hosts, &ports).expect("valid");
        assert_eq!(endpoints[2].port, DEFAULT_PORT);
        assert_eq!(endpoints[1].to_string(), "[::1]:6000");
        assert!(split_host_list("[::1").is_err());
    }

    #[test]
    fn one_port_serves_every_host_and_otherwise_one_each() {
        let hosts = vec!["a".to_owned(), "b".to_owned()];
        let one = endpoints(&hosts, &["7".to_owned()]).expect("one port");
        assert_eq!((one[0].port, one[1].port), (7, 7));
        assert!(endpoints(&hosts, &["1".into(), "2".into(), "3".into()]).is_err());
        assert!(endpoints(&hosts, &["x".into()]).is_err());
    }

    #[test]
    fn takes_the_host_list_out_of_the_authority() {
        let (rest, hosts) =
            take_host_list("postgresql://u:p@h1:1,h2:2/db?x=1", "h").expect("a URL");
        assert_eq!(
            (rest.as_str(), hosts),
            ("postgresql://u:p@h/db?x=1", "h1:1,h2:2")
        );
        let (rest, hosts) = take_host_list("postgresql:///db", "h").expect("a URL");
        assert_eq!((rest.as_str(), hosts), ("postgresql:///db", ""));
    }

    #[test]
    fn a_redacted_url_keeps_every_host_and_no_password() {
        assert_eq!(
            redacted_url("postgresql://relay:s3cret@db1:5432,[::1]:5433/app?target_session_attrs=read-write")
                .as_deref(),
            Some("postgresql://relay:redacted@db1:5432,[::1]:5433/app?target_session_attrs=read-write")
        );
        assert_eq!(
            redacted_url("postgres://relay@db1,db2/app").as_deref(),
            Some("postgres://relay@db1,db2/app")
        );
        assert_eq!(
            redacted_url("postgresql:///app?host=/run/postgresql").as_deref(),
            Some("postgresql:///app?host=/run/postgresql")
        );
        assert_eq!(redacted_url("db1:5432"), None);
    }

    #[test]
    fn target_session_attrs_read_the_server_state() {
        let primary = ServerState {
            in_recovery: false,
            read_only: false,
        };
        let standby = ServerState {
            in_recovery: true,
            read_only: true,
        };
        let read_only_primary = ServerState {
            in_recovery: false,
            read_only: true,
        };
        use TargetSessionAttrs as T;
        assert!(T::ReadWrite.accepts(primary) && !T::ReadWrite.accepts(standby));
        assert!(!T::ReadWrite.accepts(read_only_primary) && T::Primary.accepts(read_only_primary));
        assert!(T::Standby.accepts(standby) && !T::Standby.accepts(primary));
        assert!(T::ReadOnly.accepts(read_only_primary));
        assert_eq!(T::PreferStandby.passes(), [T::Standby, T::Any]);
        for name in [
            "any",
            "read-write",
            "read-only",
            "primary",
            "standby",
            "prefer-standby",
        ] {
            assert_eq!(T::parse(name).map(T::as_str), Some(name));
        }
        let parameters = HashMap::from([
            ("in_hot_standby".to_owned(), "on".to_owned()),
            ("default_transaction_read_only".to_owned(), "off".to_owned()),
        ]);
        assert_eq!(
            ServerState::from_parameters(&parameters),
            Some(ServerState {
                in_recovery: true,
                read_only: false
            })
        );
    }
}
