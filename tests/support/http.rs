//! The relay's operations endpoint from a test: GET over a plain socket, Prometheus samples, and
//! waiting for an answer with a deadline.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

/// GET `path` on `address`; the status code and the body.
pub fn http_get(address: &str, path: &str) -> Option<(u16, String)> {
    let mut stream = TcpStream::connect(address).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(stream, "GET {path} HTTP/1.0\r\nHost: {address}\r\n\r\n").ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).ok()?;
    let status = response.split_whitespace().nth(1)?.parse().ok()?;
    let (head, body) = response.split_once("\r\n\r\n")?;
    // Apicurio (Quarkus) answers even an HTTP/1.0 request in chunks once the body outgrows its
    // buffer (a registry holding a few hundred subjects).
    let chunked = head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked");
    let body = if chunked {
        dechunk(body)?
    } else {
        body.to_owned()
    };
    Some((status, body))
}

/// The body of a chunked transfer: each chunk's hexadecimal size line, then its bytes.
fn dechunk(mut rest: &str) -> Option<String> {
    let mut body = String::new();
    loop {
        let (size, after) = rest.split_once("\r\n")?;
        let size = usize::from_str_radix(size.split(';').next()?.trim(), 16).ok()?;
        if size == 0 {
            return Some(body);
        }
        body.push_str(after.get(..size)?);
        rest = after.get(size..)?.strip_prefix("\r\n")?;
    }
}

/// The value of the sample `name{labels}` in a Prometheus text exposition.
pub fn sample(exposition: &str, series: &str) -> Option<f64> {
    exposition
        .lines()
        .find_map(|line| line.strip_prefix(series)?.trim().parse().ok())
}

/// Polls GET `path` until `accept(status, body)` holds; returns that answer.
pub fn wait_for_answer(
    address: &str,
    path: &str,
    timeout: Duration,
    accept: impl Fn(u16, &str) -> bool,
) -> (u16, String) {
    let deadline = Instant::now() + timeout;
    loop {
        let answer = http_get(address, path);
        if let Some((status, body)) = answer.as_ref() {
            if accept(*status, body) {
                return (*status, body.clone());
            }
        }
        assert!(
            Instant::now() < deadline,
            "{path} never gave the awaited answer within {timeout:?}; last: {answer:?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Polls `/readyz` until it answers `status`; returns the body.
pub fn wait_for_readiness(address: &str, status: u16, timeout: Duration) -> String {
    wait_for_answer(address, "/readyz", timeout, |code, _| code == status).1
}

/// The value of the sample `series` (`name{labels}`) on `/metrics`, once it reaches `expected`
/// or `timeout` passed (then the last value seen).
pub fn await_sample(address: &str, series: &str, expected: f64, timeout: Duration) -> Option<f64> {
    let deadline = Instant::now() + timeout;
    loop {
        let value = http_get(address, "/metrics").and_then(|(_, body)| sample(&body, series));
        if value == Some(expected) || Instant::now() >= deadline {
            return value;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}
