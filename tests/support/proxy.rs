//! A TCP proxy the test controls, to cut a relay off from Postgres as a network partition does:
//! [`Proxy::partition`] stops every byte in both directions and keeps the connections open (no
//! FIN, no RST reaches either side, as when a switch dies), and new connections hang unanswered;
//! [`Proxy::heal`] lets the bytes flow again.

use std::net::SocketAddr;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

/// A proxy on an ephemeral port of 127.0.0.1 in front of `upstream`; stops with the runtime.
#[derive(Debug)]
pub struct Proxy {
    /// Where clients connect.
    pub address: SocketAddr,
    /// `true` while partitioned.
    cut: watch::Sender<bool>,
}

impl Proxy {
    /// Starts forwarding to `upstream` (`host:port`).
    pub async fn start(upstream: &str) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("proxy bind");
        let address = listener.local_addr().expect("proxy address");
        let (cut, watching) = watch::channel(false);
        let upstream = upstream.to_owned();
        tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let (upstream, watching) = (upstream.clone(), watching.clone());
                tokio::spawn(async move {
                    open(&watching).await;
                    let Ok(server) = TcpStream::connect(&upstream).await else {
                        return;
                    };
                    let (client_read, client_write) = client.into_split();
                    let (server_read, server_write) = server.into_split();
                    tokio::spawn(pipe(client_read, server_write, watching.clone()));
                    pipe(server_read, client_write, watching).await;
                });
            }
        });
        Proxy { address, cut }
    }

    /// Stops every byte, both ways, keeping the connections open.
    pub fn partition(&self) {
        self.cut.send_replace(true);
    }

    /// Lets the bytes flow again.
    pub fn heal(&self) {
        self.cut.send_replace(false);
    }

    /// `url` with its `host:port` (`127.0.0.1:PORT`) replaced by the proxy's.
    pub fn url(&self, url: &str, upstream: &str) -> String {
        assert!(url.contains(upstream), "{url} does not name {upstream}");
        url.replacen(upstream, &self.address.to_string(), 1)
    }
}

/// Waits while partitioned.
async fn open(watching: &watch::Receiver<bool>) {
    let mut watching = watching.clone();
    let _ = watching.wait_for(|cut| !cut).await;
}

/// Completes when a partition begins (never once the proxy is gone).
async fn partitioned(watching: &watch::Receiver<bool>) {
    let mut watching = watching.clone();
    if watching.wait_for(|cut| *cut).await.is_err() {
        std::future::pending::<()>().await;
    }
}

/// Copies one direction; bytes read while partitioned are held until healed. Ends (closing the
/// write side) when the read side ends, unless partitioned: a partition carries no FIN either.
async fn pipe(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    watching: watch::Receiver<bool>,
) {
    let mut buffer = vec![0u8; 64 * 1024];
    loop {
        open(&watching).await;
        let read = tokio::select! {
            read = from.read(&mut buffer) => read,
            // A partition begins: stop reading at once.
            () = partitioned(&watching) => continue,
        };
        let n = match read {
            Ok(0) | Err(_) => {
                open(&watching).await;
                return;
            }
            Ok(n) => n,
        };
        open(&watching).await;
        if to.write_all(&buffer[..n]).await.is_err() {
            return;
        }
    }
}
