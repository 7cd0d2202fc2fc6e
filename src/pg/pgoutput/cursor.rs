//! A bounds-checked reader over one pgoutput message: every read either yields a value or an
//! error naming the message and the field, never a panic.

use bytes::{Buf, Bytes};

use super::DecodeError;
use crate::pg::{Lsn, PgTimestamp, RelationId, TypeOid, Xid};

/// Reads fields from the front of a message.
#[derive(Debug)]
pub(super) struct Cursor {
    buf: Bytes,
    /// The message being decoded, for error messages.
    message: &'static str,
}

impl Cursor {
    pub(super) fn new(buf: Bytes, message: &'static str) -> Self {
        Self { buf, message }
    }

    /// Names the message being decoded from now on (after its tag was read).
    pub(super) fn set_message(&mut self, message: &'static str) {
        self.message = message;
    }

    fn need(&self, n: usize, field: &'static str) -> Result<(), DecodeError> {
        if self.buf.remaining() < n {
            return Err(DecodeError::UnexpectedEnd {
                message: self.message,
                field,
            });
        }
        Ok(())
    }

    pub(super) fn u8(&mut self, field: &'static str) -> Result<u8, DecodeError> {
        self.need(1, field)?;
        Ok(self.buf.get_u8())
    }

    pub(super) fn i16(&mut self, field: &'static str) -> Result<i16, DecodeError> {
        self.need(2, field)?;
        Ok(self.buf.get_i16())
    }

    pub(super) fn i32(&mut self, field: &'static str) -> Result<i32, DecodeError> {
        self.need(4, field)?;
        Ok(self.buf.get_i32())
    }

    pub(super) fn u32(&mut self, field: &'static str) -> Result<u32, DecodeError> {
        self.need(4, field)?;
        Ok(self.buf.get_u32())
    }

    pub(super) fn i64(&mut self, field: &'static str) -> Result<i64, DecodeError> {
        self.need(8, field)?;
        Ok(self.buf.get_i64())
    }

    pub(super) fn lsn(&mut self, field: &'static str) -> Result<Lsn, DecodeError> {
        self.need(8, field)?;
        Ok(Lsn(self.buf.get_u64()))
    }

    pub(super) fn xid(&mut self, field: &'static str) -> Result<Xid, DecodeError> {
        self.u32(field).map(Xid)
    }

    pub(super) fn relation_id(&mut self, field: &'static str) -> Result<RelationId, DecodeError> {
        self.u32(field).map(RelationId)
    }

    pub(super) fn type_oid(&mut self, field: &'static str) -> Result<TypeOid, DecodeError> {
        self.u32(field).map(TypeOid)
    }

    pub(super) fn timestamp(&mut self, field: &'static str) -> Result<PgTimestamp, DecodeError> {
        self.i64(field).map(PgTimestamp)
    }

    /// A NUL-terminated UTF-8 string.
    pub(super) fn cstr(&mut self, field: &'static str) -> Result<String, DecodeError> {
        let end = self
            .buf
            .iter()
            .position(|&b| b == 0)
            .ok_or(DecodeError::UnterminatedString {
                message: self.message,
                field,
            })?;
        let bytes = self.buf.split_to(end);
        self.buf.advance(1);
        String::from_utf8(bytes.to_vec()).map_err(|_| DecodeError::InvalidUtf8 {
            message: self.message,
            field,
        })
    }

    /// `n` bytes as a slice of the message buffer (no copy).
    pub(super) fn bytes(&mut self, n: usize, field: &'static str) -> Result<Bytes, DecodeError> {
        self.need(n, field)?;
        Ok(self.buf.split_to(n))
    }

    /// A length that counts items of at least `min_item_size` bytes each, checked against what
    /// is left so that a corrupt count cannot make the decoder allocate without bound.
    pub(super) fn count(
        &mut self,
        declared: i64,
        min_item_size: usize,
        field: &'static str,
    ) -> Result<usize, DecodeError> {
        let count = usize::try_from(declared).map_err(|_| DecodeError::InvalidLength {
            message: self.message,
            field,
            length: declared,
        })?;
        if count.saturating_mul(min_item_size) > self.buf.remaining() {
            return Err(DecodeError::UnexpectedEnd {
                message: self.message,
                field,
            });
        }
        Ok(count)
    }

    /// Fails unless the whole message was read.
    pub(super) fn finish(&self) -> Result<(), DecodeError> {
        if self.buf.has_remaining() {
            return Err(DecodeError::TrailingBytes {
                message: self.message,
                count: self.buf.remaining(),
            });
        }
        Ok(())
    }

    /// The message being decoded.
    pub(super) fn message(&self) -> &'static str {
        self.message
    }
}
