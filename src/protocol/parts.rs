//! Responses in pieces: encoded bytes, and ranges of segment files that the
//! connection sends with splice (`runtime::splice`) instead of copying them.
//!
//! The handler puts a stand-in in each records field to be spliced: a slice
//! of a static zero region with the range's length ([`stand_in`]). The crate's
//! encoder then writes the right length prefix and passes the slice to
//! `put_slice`, where [`encode_response_parts`]'s buffer recognises it by its
//! address, cuts the output there and puts the file range in its place. The
//! zeros are never written anywhere.

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
    files: VecDeque<FileRange>,
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
        if !is_stand_in(src) {
            self.cur.put_slice(src);
            return;
        }
        match self.files.pop_front() {
            Some(f) if f.len == src.len() => {
                self.base += self.cur.len() + f.len;
                self.parts.push(Part::Mem(self.cur.split().freeze()));
                self.parts.push(Part::File(f));
            }
            _ => {
                self.error
                    .get_or_insert_with(|| "stand-in without its file range".into());
            }
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
/// stand-ins for `files`, in the order the encoder meets them (the order of
/// topics and partitions in the body).
pub fn encode_response_parts<R: Encodable + HeaderVersion>(
    correlation_id: i32,
    version: i16,
    body: &R,
    files: Vec<FileRange>,
) -> anyhow::Result<Vec<Part>> {
    let mut header = ResponseHeader::default();
    header.correlation_id = correlation_id;
    let hv = R::header_version(version);
    let size = header.compute_size(hv)? + body.compute_size(version)?;
    let spliced: usize = files.iter().map(|f| f.len).sum();
    let mut buf = SplitBuf {
        parts: Vec::with_capacity(2 * files.len() + 1),
        cur: BytesMut::with_capacity((4 + size).saturating_sub(spliced)),
        base: 0,
        files: files.into(),
        error: None,
    };
    buf.put_i32(i32::try_from(size)?);
    header.encode(&mut buf, hv)?;
    body.encode(&mut buf, version)?;
    if let Some(e) = buf.error {
        anyhow::bail!("{e}");
    }
    if !buf.files.is_empty() {
        anyhow::bail!("{} file ranges not placed in the response", buf.files.len());
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
            let files = ranges
                .iter()
                .map(|&(pos, len)| FileRange {
                    fd: Arc::clone(&fd),
                    pos,
                    len,
                    end_offset: 0,
                })
                .collect();
            let parts =
                encode_response_parts(9, version, &response(&stand_ins), files).expect("parts");
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
