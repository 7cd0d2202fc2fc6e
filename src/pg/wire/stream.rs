//! The CopyBoth phase: XLogData and keepalives in, standby status updates out.
//!
//! The caller decides the positions ([`ReplicationStream::set_position`]); the stream never
//! reports a position lower than one it already reported, and answers keepalives that ask for a
//! reply by itself. Both `next` and `send_status` are cancel-safe: a partly received message stays
//! in the read buffer and a partly written status in the write buffer, so the relay can `select!`
//! between reading and its status timer.

use bytes::{Buf, BufMut, Bytes};
use postgres_protocol::message::backend::Message as Backend;
use postgres_protocol::message::frontend;

use super::{Framed, ServerError, WireError};
use crate::pg::{Lsn, PgTimestamp};

/// SQLSTATE 55000 (object not in prerequisite state): PostgreSQL 18's pgoutput sends it as a
/// WARNING, "skipped loading publication \"…\"", when a publication of the slot's does not exist
/// at a WAL position, and decodes on without it; older versions fail there with an ERROR (42704).
/// The changes it skips are lost to the slot, so the stream ends with it as an error on every
/// version.
const SKIPPED_PUBLICATION: &str = "55000";

/// What the walsender sends during replication.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReplicationEvent {
    /// A piece of WAL: one pgoutput message.
    XLogData {
        /// WAL position of the message.
        wal_start: Lsn,
        /// The server's WAL end when it sent it.
        wal_end: Lsn,
        /// When it was sent.
        server_time: PgTimestamp,
        /// The pgoutput message, a slice of the read buffer.
        data: Bytes,
    },
    /// The walsender is alive; everything before `wal_end` that concerns us has been sent.
    Keepalive {
        /// The server's WAL end.
        wal_end: Lsn,
        /// When it was sent.
        server_time: PgTimestamp,
        /// The server wants a status update now (it was answered already).
        reply_requested: bool,
    },
}

/// A started replication stream.
#[derive(Debug)]
pub struct ReplicationStream {
    framed: Framed,
    /// Received and handed to the caller.
    written: Lsn,
    /// Durable downstream (flush = apply).
    flushed: Lsn,
    /// The highest flush position reported so far: a report never goes below it.
    reported: Lsn,
}

impl ReplicationStream {
    pub(super) fn new(framed: Framed, start: Lsn) -> Self {
        Self {
            framed,
            written: start,
            flushed: start,
            reported: Lsn::ZERO,
        }
    }

    /// Sets the positions the next status update reports: `written` what was received, `flushed`
    /// what is durable downstream (the slot may release WAL before it). Lower values than
    /// before are ignored.
    pub fn set_position(&mut self, written: Lsn, flushed: Lsn) {
        if flushed < self.flushed {
            tracing::debug!(%flushed, current = %self.flushed, "ignored a flush position going backwards");
        }
        self.flushed = self.flushed.max(flushed);
        self.written = self.written.max(written).max(self.flushed);
    }

    /// The flush position last reported to the server.
    pub fn reported(&self) -> Lsn {
        self.reported
    }

    /// The next event; `None` when the server ended the stream: after CopyDone, or with a bare
    /// CommandComplete, which is how a walsender says goodbye at a server shutdown (`WalSndDone`
    /// sends it and exits, without CopyDone).
    pub async fn next(&mut self) -> Result<Option<ReplicationEvent>, WireError> {
        // A status queued by a cancelled call goes out first.
        self.framed.flush().await?;
        loop {
            match self.framed.next().await? {
                Backend::CopyData(body) => {
                    let event = parse_copy_data(body.into_bytes())?;
                    if let ReplicationEvent::Keepalive {
                        reply_requested: true,
                        ..
                    } = event
                    {
                        self.send_status(false).await?;
                    }
                    return Ok(Some(event));
                }
                Backend::CopyDone => {
                    self.finish_copy().await?;
                    return Ok(None);
                }
                Backend::CommandComplete(_) => return Ok(None),
                Backend::ErrorResponse(body) => {
                    return Err(WireError::Server(ServerError::parse(&body)))
                }
                Backend::NoticeResponse(body) => {
                    let notice = ServerError::parse_notice(&body);
                    if notice.code == SKIPPED_PUBLICATION && notice.message.contains("publication")
                    {
                        return Err(WireError::Server(notice));
                    }
                }
                Backend::ParameterStatus(_) => {}
                _ => {
                    return Err(WireError::Protocol(
                        "unexpected message during replication".into(),
                    ))
                }
            }
        }
    }

    /// Sends a standby status update with the current positions.
    pub async fn send_status(&mut self, reply_requested: bool) -> Result<(), WireError> {
        let flushed = self.flushed.max(self.reported);
        let mut body = Vec::with_capacity(34);
        body.put_u8(b'r');
        body.put_u64(self.written.max(flushed).0);
        body.put_u64(flushed.0);
        body.put_u64(flushed.0);
        body.put_i64(PgTimestamp::now().0);
        body.put_u8(u8::from(reply_requested));
        frontend::CopyData::new(&body[..])
            .map_err(|e| WireError::Protocol(e.to_string()))?
            .write(&mut self.framed.write);
        self.reported = flushed;
        self.framed.flush().await
    }

    /// Ends replication: CopyDone, then the server's CopyDone and CommandComplete, then Terminate.
    pub async fn stop(mut self) -> Result<(), WireError> {
        frontend::copy_done(&mut self.framed.write);
        self.framed.flush().await?;
        loop {
            match self.framed.next().await? {
                Backend::CopyDone => {}
                // Data already in flight when the server saw our CopyDone.
                Backend::CopyData(_) | Backend::NoticeResponse(_) | Backend::ParameterStatus(_) => {
                }
                Backend::CommandComplete(_) => {}
                Backend::ReadyForQuery(_) => break,
                Backend::ErrorResponse(body) => {
                    return Err(WireError::Server(ServerError::parse(&body)))
                }
                _ => {
                    return Err(WireError::Protocol(
                        "unexpected message while stopping".into(),
                    ))
                }
            }
        }
        frontend::terminate(&mut self.framed.write);
        self.framed.flush().await
    }

    /// The server ended the copy: answer with CopyDone and read to ReadyForQuery.
    async fn finish_copy(&mut self) -> Result<(), WireError> {
        frontend::copy_done(&mut self.framed.write);
        self.framed.flush().await?;
        loop {
            match self.framed.next().await? {
                Backend::ReadyForQuery(_) => return Ok(()),
                Backend::ErrorResponse(body) => {
                    return Err(WireError::Server(ServerError::parse(&body)))
                }
                _ => {}
            }
        }
    }
}

/// Decodes the body of a CopyData during replication.
fn parse_copy_data(mut data: Bytes) -> Result<ReplicationEvent, WireError> {
    let short = |what: &str| WireError::Protocol(format!("truncated {what} message"));
    match data.first() {
        Some(b'w') => {
            if data.len() < 25 {
                return Err(short("XLogData"));
            }
            data.advance(1);
            let wal_start = Lsn(data.get_u64());
            let wal_end = Lsn(data.get_u64());
            let server_time = PgTimestamp(data.get_i64());
            Ok(ReplicationEvent::XLogData {
                wal_start,
                wal_end,
                server_time,
                data,
            })
        }
        Some(b'k') => {
            if data.len() < 18 {
                return Err(short("keepalive"));
            }
            data.advance(1);
            Ok(ReplicationEvent::Keepalive {
                wal_end: Lsn(data.get_u64()),
                server_time: PgTimestamp(data.get_i64()),
                reply_requested: data.get_u8() == 1,
            })
        }
        other => Err(WireError::Protocol(format!(
            "unknown replication message {other:?}"
        ))),
    }
}
