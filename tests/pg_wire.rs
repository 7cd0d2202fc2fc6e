//! The replication connection's authentication and TLS against a private cluster whose
//! `pg_hba.conf` and certificates the test sets.

mod support;

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use outboxd::pg::wire::{ConnectOptions, ReplicationConnection, WireError};
use support::postgres::PrivateCluster;

const ROLES: &str = "
CREATE ROLE trust_user LOGIN REPLICATION;
SET password_encryption = 'md5';
CREATE ROLE md5_user LOGIN REPLICATION PASSWORD 'pw-md5';
SET password_encryption = 'scram-sha-256';
CREATE ROLE scram_user LOGIN REPLICATION PASSWORD 'pw-scram';
CREATE ROLE clear_user LOGIN REPLICATION PASSWORD 'pw-clear';
CREATE ROLE tls_user LOGIN REPLICATION PASSWORD 'pw-tls';";

const HBA: &[&str] = &[
    "host all trust_user 127.0.0.1/32 trust",
    "host all md5_user 127.0.0.1/32 md5",
    "host all scram_user 127.0.0.1/32 scram-sha-256",
    "host all clear_user 127.0.0.1/32 password",
    "hostssl all tls_user 127.0.0.1/32 scram-sha-256",
];

fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("run openssl");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A CA (`<name>.crt`, `<name>.key`) in `dir`.
fn make_ca(dir: &Path, name: &str) {
    openssl(
        dir,
        &[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "2",
            "-subj",
            &format!("/CN={name}"),
            "-keyout",
            &format!("{name}.key"),
            "-out",
            &format!("{name}.crt"),
        ],
    );
}

/// A cluster with the test roles, TLS on with a server certificate for `localhost` only,
/// signed by the CA `ca.crt` in the returned directory.
fn cluster_with_tls() -> (PrivateCluster, tempfile::TempDir) {
    let certs = tempfile::tempdir().expect("cert dir");
    let dir = certs.path();
    make_ca(dir, "ca");
    make_ca(dir, "other-ca");
    openssl(
        dir,
        &[
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-subj",
            "/CN=localhost",
            "-keyout",
            "server.key",
            "-out",
            "server.csr",
        ],
    );
    std::fs::write(dir.join("san.ext"), "subjectAltName=DNS:localhost\n").expect("ext file");
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-in",
            "server.csr",
            "-CA",
            "ca.crt",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-days",
            "2",
            "-extfile",
            "san.ext",
            "-out",
            "server.crt",
        ],
    );
    let cluster = PrivateCluster::start("wal_level = logical", HBA);
    let read = |name: &str| std::fs::read(dir.join(name)).expect("read cert");
    let cert = cluster.write_file("server.crt", &read("server.crt"), "0644");
    let key = cluster.write_file("server.key", &read("server.key"), "0600");
    cluster.psql(ROLES).expect("roles");
    for setting in [
        "ssl = on".to_owned(),
        format!("ssl_cert_file = '{}'", cert.display()),
        format!("ssl_key_file = '{}'", key.display()),
    ] {
        cluster
            .psql(&format!("ALTER SYSTEM SET {setting}"))
            .expect("TLS setting");
    }
    cluster.restart();
    (cluster, certs)
}

fn url(
    cluster: &PrivateCluster,
    user: &str,
    password: Option<&str>,
    host: &str,
    query: &str,
) -> ConnectOptions {
    let credentials = match password {
        Some(p) => format!("{user}:{p}"),
        None => user.to_owned(),
    };
    format!(
        "postgresql://{credentials}@{host}:{}/postgres?connect_timeout=5{query}",
        cluster.port
    )
    .parse()
    .expect("url")
}

async fn identify(options: &ConnectOptions) -> Result<String, WireError> {
    let mut connection = ReplicationConnection::connect(options).await?;
    Ok(connection.identify_system().await?.system_id)
}

#[tokio::test(flavor = "multi_thread")]
async fn authenticates_with_each_method_and_tls_mode() {
    let (cluster, certs) = tokio::task::block_in_place(cluster_with_tls);
    let ca = certs.path().join("ca.crt");
    let other_ca = certs.path().join("other-ca.crt");

    // Each password method, over plain TCP.
    for (user, password) in [
        ("trust_user", None),
        ("md5_user", Some("pw-md5")),
        ("scram_user", Some("pw-scram")),
        ("clear_user", Some("pw-clear")),
    ] {
        let options = url(&cluster, user, password, "127.0.0.1", "&sslmode=disable");
        let system_id = identify(&options)
            .await
            .unwrap_or_else(|e| panic!("{user}: {e}"));
        assert!(!system_id.is_empty());
    }

    // A wrong password: a clear error naming the user, quickly, not a hang.
    for user in ["md5_user", "scram_user", "clear_user"] {
        let started = Instant::now();
        let error = identify(&url(
            &cluster,
            user,
            Some("wrong"),
            "127.0.0.1",
            "&sslmode=disable",
        ))
        .await
        .expect_err("wrong password refused");
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "answered in time"
        );
        assert!(matches!(error, WireError::Auth { .. }), "{user}: {error:?}");
        let text = error.to_string();
        assert!(
            text.contains(user) && text.contains("password authentication failed"),
            "{text}"
        );
    }
    let error = identify(&url(
        &cluster,
        "scram_user",
        None,
        "127.0.0.1",
        "&sslmode=disable",
    ))
    .await
    .expect_err("no password");
    assert!(error.to_string().contains("none is configured"), "{error}");

    // TLS: hostssl only admits tls_user over TLS.
    let tls = |host: &str, mode: &str, root: Option<&Path>| {
        let root = root.map_or(String::new(), |r| format!("&sslrootcert={}", r.display()));
        url(
            &cluster,
            "tls_user",
            Some("pw-tls"),
            host,
            &format!("&sslmode={mode}{root}"),
        )
    };
    identify(&tls("localhost", "verify-full", Some(&ca)))
        .await
        .expect("verify-full with the right CA");
    identify(&tls("127.0.0.1", "verify-ca", Some(&ca)))
        .await
        .expect("verify-ca ignores the name");
    identify(&tls("127.0.0.1", "require", None))
        .await
        .expect("require encrypts without a CA");
    identify(&tls("127.0.0.1", "prefer", None))
        .await
        .expect("prefer uses TLS when offered");

    let error = identify(&tls("localhost", "verify-full", Some(&other_ca)))
        .await
        .expect_err("another CA refused");
    let text = error.to_string();
    assert!(
        matches!(error, WireError::Tls { .. }) && text.contains("verify-full"),
        "{text}"
    );
    assert!(text.contains("UnknownIssuer"), "{text}");

    let error = identify(&tls("127.0.0.1", "verify-full", Some(&ca)))
        .await
        .expect_err("a name not in the certificate refused");
    assert!(error.to_string().contains("not valid for name"), "{error}");

    let error = identify(&tls("127.0.0.1", "disable", None))
        .await
        .expect_err("hostssl refuses plain connections");
    assert!(
        error.to_string().contains("no pg_hba.conf entry"),
        "{error}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn requiring_tls_from_a_server_without_it_fails_clearly() {
    let cluster = tokio::task::block_in_place(|| {
        PrivateCluster::start("wal_level = logical", &["host all all 127.0.0.1/32 trust"])
    });
    let error = identify(&url(
        &cluster,
        "postgres",
        None,
        "127.0.0.1",
        "&sslmode=require",
    ))
    .await
    .expect_err("no TLS on the server");
    assert!(error.to_string().contains("does not accept TLS"), "{error}");
    identify(&url(
        &cluster,
        "postgres",
        None,
        "127.0.0.1",
        "&sslmode=prefer",
    ))
    .await
    .expect("prefer falls back to plain");
}
