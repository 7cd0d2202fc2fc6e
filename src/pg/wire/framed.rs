//! The framed byte stream under a session and a replication stream: whole backend messages in,
//! buffered frontend messages out, both cancel-safe.

use std::pin::Pin;

use bytes::{Buf, BytesMut};
use postgres_protocol::message::backend::Message as Backend;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use super::WireError;

/// A byte stream to the server: TCP, TLS over TCP, or a Unix socket.
pub(super) trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

/// The framed connection shared by the command phase and the stream.
pub(crate) struct Framed {
    pub(super) io: Pin<Box<dyn Io>>,
    pub(super) read: BytesMut,
    pub(super) write: BytesMut,
    pub(super) target: String,
}

impl std::fmt::Debug for Framed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Framed")
            .field("target", &self.target)
            .finish_non_exhaustive()
    }
}

/// Bytes asked of the socket per read: large reads keep the per-message cost low.
pub(super) const READ_CHUNK: usize = 128 * 1024;

impl Framed {
    pub(super) fn io_error(&self, source: std::io::Error) -> WireError {
        WireError::Io {
            target: self.target.clone(),
            source,
        }
    }

    /// Writes everything buffered. Cancel-safe: what is not yet written stays buffered.
    pub(super) async fn flush(&mut self) -> Result<(), WireError> {
        while !self.write.is_empty() {
            let written = self
                .io
                .write_buf(&mut self.write)
                .await
                .map_err(|e| self.io_error(e))?;
            if written == 0 {
                return Err(self.io_error(std::io::ErrorKind::WriteZero.into()));
            }
        }
        self.io.flush().await.map_err(|e| self.io_error(e))
    }

    /// The next backend message. Cancel-safe: a partial message stays in the read buffer.
    pub(super) async fn next(&mut self) -> Result<Backend, WireError> {
        self.fill().await?;
        Backend::parse(&mut self.read)
            .map_err(|e| WireError::Protocol(e.to_string()))?
            .ok_or_else(|| WireError::Protocol("incomplete message after fill".into()))
    }

    /// Consumes a CopyBothResponse ('W') at the head of the buffer, which `postgres-protocol`
    /// does not parse; `false` if the next message is another one.
    pub(super) async fn take_copy_both(&mut self) -> Result<bool, WireError> {
        let length = self.fill().await?;
        if self.read[0] != b'W' {
            return Ok(false);
        }
        self.read.advance(length);
        Ok(true)
    }

    /// Reads until the buffer holds a whole message; returns its length (tag included).
    pub(super) async fn fill(&mut self) -> Result<usize, WireError> {
        loop {
            if self.read.len() >= 5 {
                let declared =
                    u32::from_be_bytes([self.read[1], self.read[2], self.read[3], self.read[4]]);
                let length = usize::try_from(declared)
                    .map_err(|_| WireError::Protocol("message length".into()))?
                    + 1;
                if self.read.len() >= length {
                    return Ok(length);
                }
            }
            self.read.reserve(READ_CHUNK);
            let n = self
                .io
                .read_buf(&mut self.read)
                .await
                .map_err(|e| self.io_error(e))?;
            if n == 0 {
                return Err(self.io_error(std::io::ErrorKind::UnexpectedEof.into()));
            }
        }
    }
}
