//! Responses in pieces: encoded bytes, record sets sent from their own
//! buffers, and ranges of segment files that the connection sends with
//! splice (`runtime::splice`), so that large records are not copied into the
//! response.
//!
//! The handler lists those records ([`Piece`]) in the order the encoder will
//! meet them. For a file range it puts a stand-in in the records field: a
//! slice of a static zero region with the range's length ([`stand_in`]); for
//! records in memory, the records themselves. The crate's encoder writes the
//! length prefix and passes the slice to `put_slice`, where
//! [`encode_response_parts`]'s buffer recognises the next piece by its
//! address and length, cuts the output there and puts the piece in its place.
//! The stand-in's zeros are never written anywhere.

use std::collections::VecDeque;
use std::ops::Range;

use bytes::buf::UninitSlice;
use bytes::{BufMut, Bytes, BytesMut};
use kafka_protocol::messages::ResponseHeader;
use kafka_protocol::protocol::buf::ByteBufMut;
use kafka_protocol::protocol::{Encodable, HeaderVersion};

use crate::storage::FileRange;

/// Longest file range one stand-in can represent.
pub const MAX_SPLICE_LEN: usize = 16 << 20;

/// Zeros in `.bss`: never read or written, only pointed at.
static STAND_IN: [u8; MAX_SPLICE_LEN] = [0; MAX_SPLICE_LEN];

/// One piece of a response frame, sent in order.
pub enum Part {
    Mem(Bytes),
    File(FileRange),
}

/// Records that go out as their own part: a file range (behind a stand-in)
/// or bytes in memory (recognised by address, so never copied).
pub enum Piece {
    File(FileRange),
    Mem(Bytes),
}

impl Piece {
    fn len(&self) -> usize {
        match self {
            Piece::File(f) => f.len,
            Piece::Mem(b) => b.len(),
        }
    }

    /// Whether `s` is what the encoder passes for this piece.
    fn is(&self, s: &[u8]) -> bool {
        let at = match self {
            Piece::File(_) => STAND_IN.as_ptr(),
            Piece::Mem(b) => b.as_ptr(),
        };
        !s.is_empty() && std::ptr::eq(s.as_ptr(), at) && s.len() == self.len()
    }
}

/// The stand-in for a records field of `len` bytes to be spliced; None when
/// longer than [`MAX_SPLICE_LEN`].
pub fn stand_in(len: usize) -> Option<Bytes> {
    STAND_IN.get(..len).map(Bytes::from_static)
}

fn is_stand_in(s: &[u8]) -> bool {
    !s.is_empty() && std::ptr::eq(s.as_ptr(), STAND_IN.as_ptr())
}

/// A `BufMut` that cuts its output at each stand-in.
struct SplitBuf {
    parts: Vec<Part>,
    cur: BytesMut,
    /// Logical offset of `cur`'s first byte in the frame.
    base: usize,
    pieces: VecDeque<Piece>,
    error: Option<String>,
}

// SAFETY: every method forwards to `cur`, a `BytesMut`, whose own `BufMut`
// implementation upholds the trait's contract; `put_slice` only adds a
// check before forwarding or cutting.
unsafe impl BufMut for SplitBuf {
    fn remaining_mut(&self) -> usize {
        self.cur.remaining_mut()
    }

    unsafe fn advance_mut(&mut self, cnt: usize) {
        // SAFETY: the caller's guarantee (`cnt` bytes of `chunk_mut` written)
        // is passed on to the same buffer that gave out the chunk.
        unsafe { self.cur.advance_mut(cnt) }
    }

    fn chunk_mut(&mut self) -> &mut UninitSlice {
        self.cur.chunk_mut()
    }

    fn put_slice(&mut self, src: &[u8]) {
        if !self.pieces.front().is_some_and(|p| p.is(src)) {
            if is_stand_in(src) {
                self.error
                    .get_or_insert_with(|| "stand-in without its file range".into());
            } else {
                self.cur.put_slice(src);
            }
            return;
        }
        if let Some(piece) = self.pieces.pop_front() {
            self.base += self.cur.len() + piece.len();
            if !self.cur.is_empty() {
                self.parts.push(Part::Mem(self.cur.split().freeze()));
            }
            self.parts.push(match piece {
                Piece::File(f) => Part::File(f),
                Piece::Mem(b) => Part::Mem(b),
            });
        }
    }
}

impl ByteBufMut for SplitBuf {
    fn offset(&self) -> usize {
        self.base + self.cur.len()
    }

    // Gaps (seek/range) are used by the crate's record-batch and snappy
    // encoders, never by message encoding; they work within the bytes after
    // the last stand-in.
    fn seek(&mut self, offset: usize) {
        match offset.checked_sub(self.base) {
            Some(o) => self.cur.resize(o, 0),
            None => {
                self.error
                    .get_or_insert_with(|| "seek before a spliced range".into());
            }
        }
    }

    fn range(&mut self, r: Range<usize>) -> &mut [u8] {
        let start = r.start.checked_sub(self.base);
        let end = r.end.saturating_sub(self.base);
        match start {
            Some(s) if s <= end && end <= self.cur.len() => &mut self.cur[s..end],
            _ => {
                self.error
                    .get_or_insert_with(|| "range before a spliced range".into());
                &mut []
            }
        }
    }
}

/// Encodes a response frame (length, header, body) whose records fields hold
/// `pieces` (stand-ins for file ranges, or the very bytes of in-memory
/// pieces), in the order the encoder meets them (the order of topics and
/// partitions in the body).
pub fn encode_response_parts<R: Encodable + HeaderVersion>(
    correlation_id: i32,
    version: i16,
    body: &R,
    pieces: Vec<Piece>,
) -> anyhow::Result<Vec<Part>> {
    let mut header = ResponseHeader::default();
    header.correlation_id = correlation_id;
    let hv = R::header_version(version);
    let size = header.compute_size(hv)? + body.compute_size(version)?;
    let apart: usize = pieces.iter().map(Piece::len).sum();
    let mut buf = SplitBuf {
        parts: Vec::with_capacity(2 * pieces.len() + 1),
        cur: BytesMut::with_capacity((4 + size).saturating_sub(apart)),
        base: 0,
        pieces: pieces.into(),
        error: None,
    };
    buf.put_i32(i32::try_from(size)?);
    header.encode(&mut buf, hv)?;
    body.encode(&mut buf, version)?;
    if let Some(e) = buf.error {
        anyhow::bail!("{e}");
    }
    if !buf.pieces.is_empty() {
        anyhow::bail!("{} records not placed in the response", buf.pieces.len());
    }
    if !buf.cur.is_empty() {
        buf.parts.push(Part::Mem(buf.cur.freeze()));
    }
    Ok(buf.parts)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::encode_response;
    use kafka_protocol::messages::fetch_response::{FetchableTopicResponse, PartitionData};
    use kafka_protocol::messages::{FetchResponse, TopicName};
    use kafka_protocol::protocol::StrBytes;
    use std::io::Write;
    use std::os::unix::fs::FileExt;
    use std::sync::Arc;

    fn response(records: &[Bytes]) -> FetchResponse {
        let mut t = FetchableTopicResponse::default();
        t.topic = TopicName(StrBytes::from_static_str("t"));
        for (i, r) in records.iter().enumerate() {
            let mut p = PartitionData::default();
            p.partition_index = i as i32;
            p.high_watermark = 7;
            p.records = Some(r.clone());
            t.partitions.push(p);
        }
        let mut resp = FetchResponse::default();
        resp.responses.push(t);
        resp
    }

    /// Parts joined with their file bytes are the frame a plain encode gives.
    #[test]
    fn parts_rebuild_the_plain_frame() {
        let data: Vec<u8> = (0..200_000u32).map(|i| (i % 253) as u8).collect();
        let mut f = tempfile::tempfile().expect("tempfile");
        f.write_all(&data).expect("write");
        let fd = Arc::new(std::os::fd::OwnedFd::from(f.try_clone().expect("clone")));
        let ranges = [(100u64, 70_000usize), (90_000, 100_000)];
        let real: Vec<Bytes> = vec![
            Bytes::copy_from_slice(&data[100..70_100]),
            Bytes::from_static(b"in memory"),
            Bytes::copy_from_slice(&data[90_000..190_000]),
        ];
        for version in [4i16, 11, 12, 16] {
            let plain = encode_response(9, version, &response(&real)).expect("plain");
            let stand_ins = vec![
                stand_in(ranges[0].1).expect("stand-in"),
                real[1].clone(),
                stand_in(ranges[1].1).expect("stand-in"),
            ];
            let file = |(pos, len): (u64, usize)| {
                Piece::File(FileRange {
                    fd: Arc::clone(&fd),
                    pos,
                    len,
                    end_offset: 0,
                })
            };
            // The middle records go out from their own buffer too.
            let pieces = vec![
                file(ranges[0]),
                Piece::Mem(real[1].clone()),
                file(ranges[1]),
            ];
            let parts =
                encode_response_parts(9, version, &response(&stand_ins), pieces).expect("parts");
            let own = parts
                .iter()
                .any(|p| matches!(p, Part::Mem(b) if b.as_ptr() == real[1].as_ptr()));
            assert!(own, "in-memory records were copied");
            let mut joined = Vec::new();
            for p in parts {
                match p {
                    Part::Mem(b) => joined.extend_from_slice(&b),
                    Part::File(r) => {
                        let mut b = vec![0u8; r.len];
                        f.read_exact_at(&mut b, r.pos).expect("read");
                        joined.extend_from_slice(&b);
                    }
                }
            }
            assert_eq!(joined, plain.as_ref(), "version {version}");
        }
    }

    #[test]
    fn a_stand_in_without_its_range_is_an_error() {
        let resp = response(&[stand_in(10).expect("stand-in")]);
        assert!(encode_response_parts(1, 12, &resp, Vec::new()).is_err());
        assert!(stand_in(MAX_SPLICE_LEN + 1).is_none());
    }
}
