//! A bounds-checked reader of Kafka's big-endian wire types, for the
//! internal-topic record formats the coordinators decode
//! (`group::records`, `txn::records`). Every read checks the remaining bytes
//! first: a truncated or corrupt record is an error, never a panic, and no
//! length read from the input allocates more than the input holds.

use bytes::{Buf, Bytes};

/// Why bytes could not be read: what was being read and what was wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WireError(pub String);

pub struct WireReader {
    b: Bytes,
}

impl WireReader {
    pub fn new(b: Bytes) -> WireReader {
        WireReader { b }
    }

    fn need(&self, n: usize, what: &str) -> Result<(), WireError> {
        if self.b.remaining() < n {
            return Err(WireError(format!("truncated {what}")));
        }
        Ok(())
    }
    pub fn i8(&mut self, what: &str) -> Result<i8, WireError> {
        self.need(1, what)?;
        Ok(self.b.get_i8())
    }
    pub fn i16(&mut self, what: &str) -> Result<i16, WireError> {
        self.need(2, what)?;
        Ok(self.b.get_i16())
    }
    pub fn i32(&mut self, what: &str) -> Result<i32, WireError> {
        self.need(4, what)?;
        Ok(self.b.get_i32())
    }
    pub fn i64(&mut self, what: &str) -> Result<i64, WireError> {
        self.need(8, what)?;
        Ok(self.b.get_i64())
    }
    /// An unsigned varint of at most 5 bytes (lengths, counts, tags).
    pub fn uvarint(&mut self, what: &str) -> Result<u32, WireError> {
        let mut v: u32 = 0;
        for i in 0..5 {
            let byte = self.i8(what)? as u8;
            v |= u32::from(byte & 0x7f) << (7 * i);
            if byte & 0x80 == 0 {
                return Ok(v);
            }
        }
        Err(WireError(format!("{what}: varint too long")))
    }
    fn utf8(&mut self, n: usize, what: &str) -> Result<String, WireError> {
        self.need(n, what)?;
        let s = self.b.split_to(n);
        String::from_utf8(s.to_vec()).map_err(|_| WireError(format!("{what} is not UTF-8")))
    }
    /// An int16-length string; None when null (negative length).
    pub fn nullable_str(&mut self, what: &str) -> Result<Option<String>, WireError> {
        match usize::try_from(self.i16(what)?) {
            Ok(n) => self.utf8(n, what).map(Some),
            Err(_) => Ok(None),
        }
    }
    /// An int16-length string that may not be null.
    pub fn str(&mut self, what: &str) -> Result<String, WireError> {
        self.nullable_str(what)?
            .ok_or_else(|| WireError(format!("{what} is null")))
    }
    /// A compact (uvarint N+1) string that may not be null.
    pub fn compact_str(&mut self, what: &str) -> Result<String, WireError> {
        let n = self.uvarint(what)?;
        let n = n
            .checked_sub(1)
            .ok_or_else(|| WireError(format!("{what} is null")))?;
        self.utf8(n as usize, what)
    }
    /// int32-length bytes; empty when null.
    pub fn bytes(&mut self, what: &str) -> Result<Bytes, WireError> {
        let Ok(n) = usize::try_from(self.i32(what)?) else {
            return Ok(Bytes::new());
        };
        self.need(n, what)?;
        Ok(self.b.split_to(n))
    }
    /// An array length: None for null. `compact`: uvarint N+1, else int32.
    pub fn array_len(&mut self, compact: bool, what: &str) -> Result<Option<usize>, WireError> {
        if compact {
            Ok(self.uvarint(what)?.checked_sub(1).map(|n| n as usize))
        } else {
            Ok(usize::try_from(self.i32(what)?).ok())
        }
    }
    /// A count that cannot exceed the remaining bytes at `min_bytes` each:
    /// bounds the allocation a corrupt length could ask for.
    pub fn bounded(&self, n: usize, min_bytes: usize, what: &str) -> Result<usize, WireError> {
        if n.saturating_mul(min_bytes) > self.b.remaining() {
            return Err(WireError(format!("truncated {what}")));
        }
        Ok(n)
    }
    /// Reads a tagged-field section, calling `f(tag, field reader)` on each.
    pub fn tagged(
        &mut self,
        mut f: impl FnMut(u32, &mut WireReader) -> Result<(), WireError>,
    ) -> Result<(), WireError> {
        let n = self.uvarint("tagged field count")?;
        for _ in 0..n {
            let tag = self.uvarint("tag")?;
            let size = self.uvarint("tagged field size")? as usize;
            self.need(size, "tagged field")?;
            let mut field = WireReader::new(self.b.split_to(size));
            f(tag, &mut field)?;
        }
        Ok(())
    }
}
