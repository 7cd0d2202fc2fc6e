//! A stand-in OIDC identity provider for OAUTHBEARER tests: the broker and librdkafka are real,
//! only the provider is this. It serves its signing key as a JWKS (`GET /jwks`, which the broker
//! validates tokens against) and issues RS256 JWTs for the client-credentials grant
//! (`POST /token`, HTTP Basic client authentication, as librdkafka's OIDC client sends it).
//!
//! The RSA key is made and the tokens are signed with the `openssl` command line (already needed
//! by `scripts/dev-env` for its PKI), so the tests need no JWT or RSA crate.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{SystemTime, UNIX_EPOCH};

use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine;

/// The issuer and audience the broker expects (`scripts/dev-env` configures it so).
pub const ISSUER: &str = "https://idp.outboxd.test";
/// See [`ISSUER`].
pub const AUDIENCE: &str = "kafka";

/// A running provider; it serves until the test process ends.
#[derive(Debug)]
pub struct Idp {
    /// `http://127.0.0.1:PORT`.
    pub url: String,
    /// The one client's id.
    pub client_id: String,
    /// A file holding its secret.
    pub client_secret_file: PathBuf,
    client_secret: String,
    issued: Arc<Mutex<Vec<String>>>,
    _dir: tempfile::TempDir,
}

impl Idp {
    /// Starts a provider with one client, `client_id`, whose tokens name `subject` (the
    /// principal the broker sees: `User:<subject>`).
    pub fn start(client_id: &str, subject: &str) -> Idp {
        let dir = tempfile::tempdir().expect("temp dir");
        let key = dir.path().join("signing.key");
        openssl(
            &[
                "genpkey",
                "-algorithm",
                "RSA",
                "-pkeyopt",
                "rsa_keygen_bits:2048",
                "-out",
            ],
            &key,
        );
        let client_secret = format!("idp-client-s3cret-{}", std::process::id());
        let client_secret_file = dir.path().join("client-secret");
        std::fs::write(&client_secret_file, &client_secret).expect("write the client secret");
        let jwks = jwks(&key);
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let url = format!("http://{}", listener.local_addr().expect("address"));
        let issued = Arc::new(Mutex::new(Vec::new()));
        let basic = format!(
            "Basic {}",
            STANDARD.encode(format!("{client_id}:{client_secret}"))
        );
        let (subject, counter) = (subject.to_owned(), issued.clone());
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let (path, authorization) = read_request(&stream);
                let (status, body) = match path.as_str() {
                    "/jwks" => ("200 OK", jwks.clone()),
                    "/token" if authorization.as_deref() == Some(basic.as_str()) => {
                        let token = token(&key, &subject);
                        counter
                            .lock()
                            .unwrap_or_else(PoisonError::into_inner)
                            .push(token.clone());
                        (
                            "200 OK",
                            format!(
                                r#"{{"access_token":"{token}","token_type":"Bearer","expires_in":3600}}"#
                            ),
                        )
                    }
                    "/token" => ("401 Unauthorized", r#"{"error":"invalid_client"}"#.into()),
                    _ => ("404 Not Found", "{}".into()),
                };
                let mut stream = stream;
                let _ = write!(
                    stream,
                    "HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\
                     Connection: close\r\n\r\n{body}",
                    body.len()
                );
            }
        });
        Idp {
            url,
            client_id: client_id.to_owned(),
            client_secret_file,
            client_secret,
            issued,
            _dir: dir,
        }
    }

    /// The JWKS URL the broker is given.
    pub fn jwks_url(&self) -> String {
        format!("{}/jwks", self.url)
    }

    /// The token endpoint librdkafka is given.
    pub fn token_url(&self) -> String {
        format!("{}/token", self.url)
    }

    /// Tokens issued so far.
    pub fn issued(&self) -> usize {
        self.tokens().len()
    }

    /// The tokens issued so far, which no output may show.
    pub fn tokens(&self) -> Vec<String> {
        self.issued
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// The client secret, which no output may show.
    pub fn client_secret(&self) -> &str {
        &self.client_secret
    }
}

/// The request's path and `Authorization` header; the body (the form librdkafka posts) is read
/// and ignored: the grant is always client credentials.
fn read_request(stream: &std::net::TcpStream) -> (String, Option<String>) {
    let mut reader = BufReader::new(stream);
    let mut line = String::new();
    let _ = reader.read_line(&mut line);
    let path = line
        .split_whitespace()
        .nth(1)
        .unwrap_or_default()
        .to_owned();
    let (mut authorization, mut length) = (None, 0);
    loop {
        let mut header = String::new();
        if reader.read_line(&mut header).unwrap_or(0) == 0 || header.trim().is_empty() {
            break;
        }
        if let Some((name, value)) = header.split_once(':') {
            match name.trim().to_ascii_lowercase().as_str() {
                "authorization" => authorization = Some(value.trim().to_owned()),
                "content-length" => length = value.trim().parse().unwrap_or(0),
                _ => {}
            }
        }
    }
    let mut body = vec![0; length];
    let _ = reader.read_exact(&mut body);
    (path, authorization)
}

/// The JWKS of `key`'s public half: kid `test`, RS256.
fn jwks(key: &Path) -> String {
    let output = Command::new("openssl")
        .args(["rsa", "-noout", "-modulus", "-in"])
        .arg(key)
        .output()
        .expect("run openssl");
    let text = String::from_utf8(output.stdout).expect("UTF-8");
    let hex = text.trim().trim_start_matches("Modulus=");
    let modulus: Vec<u8> = (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).expect("hex"))
        .collect();
    format!(
        r#"{{"keys":[{{"kty":"RSA","kid":"test","use":"sig","alg":"RS256","n":"{}","e":"AQAB"}}]}}"#,
        URL_SAFE_NO_PAD.encode(modulus)
    )
}

/// An RS256 JWT for `subject`, valid for an hour.
fn token(key: &Path, subject: &str) -> String {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock")
        .as_secs();
    let header = URL_SAFE_NO_PAD.encode(r#"{"alg":"RS256","typ":"JWT","kid":"test"}"#);
    let claims = URL_SAFE_NO_PAD.encode(format!(
        r#"{{"sub":"{subject}","iss":"{ISSUER}","aud":"{AUDIENCE}","iat":{now},"exp":{},"scope":"kafka"}}"#,
        now + 3600
    ));
    let signed = format!("{header}.{claims}");
    let mut child = Command::new("openssl")
        .args(["dgst", "-sha256", "-sign"])
        .arg(key)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("run openssl");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(signed.as_bytes())
        .expect("write to openssl");
    let output = child.wait_with_output().expect("openssl");
    assert!(output.status.success(), "openssl dgst failed");
    format!("{signed}.{}", URL_SAFE_NO_PAD.encode(output.stdout))
}

/// Runs `openssl <args> <path>`.
fn openssl(args: &[&str], path: &Path) {
    let status = Command::new("openssl")
        .args(args)
        .arg(path)
        .stderr(Stdio::null())
        .status()
        .expect("run openssl");
    assert!(status.success(), "openssl {args:?} failed");
}
