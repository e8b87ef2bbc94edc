//! Bounded decompression of a batch's records section (gzip, snappy raw/xerial/framed, lz4 frame,
//! zstd). Output is capped so that a decompression bomb is refused instead of exhausting memory.

use std::io::Read;

use super::error::{Result, StorageError};

thread_local! {
    /// This thread's reusable zstd decoding context.
    static ZSTD_DCTX: std::cell::RefCell<Option<zstd::zstd_safe::DCtx<'static>>> =
        const { std::cell::RefCell::new(None) };
}

/// Hard cap on a decompressed records section.
const MAX_DECOMPRESSED: usize = 256 << 20;
/// Largest expansion ratio accepted above the floor.
const MAX_RATIO: usize = 64;
/// Output always allowed regardless of ratio (tiny, highly compressible batches are normal).
const FLOOR: usize = 1 << 20;
/// Header written by snappy-java's `SnappyOutputStream` (xerial framing).
const XERIAL_MAGIC: &[u8] = b"\x82SNAPPY\x00";
/// Stream identifier chunk of the official snappy framing format.
const FRAMED_MAGIC: &[u8] = b"\xff\x06\x00\x00sNaPpY";

/// The most bytes decompressing `input_len` compressed bytes may produce:
/// `MAX_RATIO` times the input, at least `FLOOR`, at most `MAX_DECOMPRESSED`.
pub(crate) fn limit_for(input_len: usize) -> usize {
    input_len
        .saturating_mul(MAX_RATIO)
        .clamp(FLOOR, MAX_DECOMPRESSED)
}

fn invalid(what: impl std::fmt::Display) -> StorageError {
    StorageError::InvalidRecord(what.to_string())
}

/// Reads all of `r` but refuses more than `limit` bytes.
fn read_bounded(r: impl Read, limit: usize, codec: &str) -> Result<Vec<u8>> {
    let mut out = Vec::new();
    r.take(limit as u64 + 1)
        .read_to_end(&mut out)
        .map_err(|e| invalid(format!("{codec} decompression failed: {e}")))?;
    if out.len() > limit {
        return Err(invalid(format!(
            "{codec} records expand beyond {limit} bytes"
        )));
    }
    Ok(out)
}

/// Decompresses a records section compressed with `codec` (the batch attributes' low 3 bits).
pub(crate) fn decompress_records(codec: i16, data: &[u8]) -> Result<Vec<u8>> {
    let limit = limit_for(data.len());
    match codec {
        1 => read_bounded(flate2::read::MultiGzDecoder::new(data), limit, "gzip"),
        2 => snappy(data, limit),
        3 => {
            let d = lz4::Decoder::new(data).map_err(|e| invalid(format!("lz4: {e}")))?;
            read_bounded(d, limit, "lz4")
        }
        4 => ZSTD_DCTX.with(|cell| {
            // One decoding context per thread (shard), reset per batch:
            // creating one costs ~10 µs, more than decoding a small batch.
            // The input is in memory, so it is read without a BufReader.
            let mut slot = cell.borrow_mut();
            let ctx = slot.get_or_insert_with(zstd::zstd_safe::DCtx::create);
            ctx.reset(zstd::zstd_safe::ResetDirective::SessionOnly)
                .map_err(|code| invalid(format!("zstd: reset failed ({code})")))?;
            let d = zstd::stream::read::Decoder::with_context(data, ctx);
            read_bounded(d, limit, "zstd")
        }),
        c => Err(invalid(format!("unknown compression codec {c}"))),
    }
}

/// Compresses a records section with `codec` the way Kafka's own writers do (gzip; snappy in
/// xerial framing; lz4 frame with independent blocks and no content checksum; zstd level 3), so
/// that a rewritten batch (log compaction) keeps its codec and every client can read it.
pub(crate) fn compress_records(codec: i16, plain: &[u8]) -> Result<Vec<u8>> {
    use std::io::Write;
    let fail = |what: &str, e: std::io::Error| invalid(format!("{what} compression failed: {e}"));
    match codec {
        1 => {
            let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
            e.write_all(plain).map_err(|e| fail("gzip", e))?;
            e.finish().map_err(|e| fail("gzip", e))
        }
        2 => {
            let mut out = XERIAL_MAGIC.to_vec();
            out.extend_from_slice(&1i32.to_be_bytes()); // version
            out.extend_from_slice(&1i32.to_be_bytes()); // minimum compatible version
            for chunk in plain.chunks(XERIAL_BLOCK) {
                let z = snap::raw::Encoder::new()
                    .compress_vec(chunk)
                    .map_err(|e| invalid(format!("snappy compression failed: {e}")))?;
                let n = u32::try_from(z.len()).map_err(|_| invalid("snappy block too large"))?;
                out.extend_from_slice(&n.to_be_bytes());
                out.extend_from_slice(&z);
            }
            Ok(out)
        }
        3 => {
            let mut e = lz4::EncoderBuilder::new()
                .block_mode(lz4::BlockMode::Independent)
                .checksum(lz4::ContentChecksum::NoChecksum)
                .build(Vec::new())
                .map_err(|e| fail("lz4", e))?;
            e.write_all(plain).map_err(|e| fail("lz4", e))?;
            let (out, r) = e.finish();
            r.map_err(|e| fail("lz4", e))?;
            Ok(out)
        }
        4 => zstd::encode_all(plain, ZSTD_LEVEL).map_err(|e| fail("zstd", e)),
        c => Err(invalid(format!("unknown compression codec {c}"))),
    }
}

/// Uncompressed block size of the xerial snappy framing (snappy-java's default).
const XERIAL_BLOCK: usize = 32 << 10;
/// zstd level used when re-compressing (Kafka's default level).
const ZSTD_LEVEL: i32 = 3;

fn snappy(data: &[u8], limit: usize) -> Result<Vec<u8>> {
    if data.starts_with(XERIAL_MAGIC) && data.len() >= 16 {
        return snappy_xerial(&data[16..], limit);
    }
    if data.starts_with(FRAMED_MAGIC) {
        return read_bounded(snap::read::FrameDecoder::new(data), limit, "snappy");
    }
    let mut out = Vec::new();
    snappy_raw_into(data, limit, &mut out)?;
    Ok(out)
}

/// xerial framing: after the 16-byte header, blocks of (u32 BE length, raw snappy block).
fn snappy_xerial(mut data: &[u8], limit: usize) -> Result<Vec<u8>> {
    let mut out = Vec::new();
    while !data.is_empty() {
        if data.len() < 4 {
            return Err(invalid("truncated xerial snappy block header"));
        }
        let n = u32::from_be_bytes([data[0], data[1], data[2], data[3]]) as usize;
        let block = data
            .get(4..4 + n)
            .ok_or_else(|| invalid("truncated xerial snappy block"))?;
        snappy_raw_into(block, limit, &mut out)?;
        data = &data[4 + n..];
    }
    Ok(out)
}

fn snappy_raw_into(block: &[u8], limit: usize, out: &mut Vec<u8>) -> Result<()> {
    let n = snap::raw::decompress_len(block).map_err(|e| invalid(format!("snappy: {e}")))?;
    if out.len().saturating_add(n) > limit {
        return Err(invalid(format!(
            "snappy records expand beyond {limit} bytes"
        )));
    }
    let start = out.len();
    out.resize(start + n, 0);
    let got = snap::raw::Decoder::new()
        .decompress(block, &mut out[start..])
        .map_err(|e| invalid(format!("snappy: {e}")))?;
    out.truncate(start + got);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::testutil::{compress, Codec};

    #[test]
    fn roundtrip_every_codec() {
        let plain: Vec<u8> = (0..5000u32).flat_map(|i| i.to_le_bytes()).collect();
        for (c, id) in [
            (Codec::Gzip, 1),
            (Codec::Snappy, 2),
            (Codec::SnappyXerial, 2),
            (Codec::Lz4, 3),
            (Codec::Zstd, 4),
        ] {
            let z = compress(c, &plain);
            assert_eq!(
                decompress_records(id, &z).expect("decompress"),
                plain,
                "{c:?}"
            );
        }
        let mut framed = Vec::new();
        {
            use std::io::Write;
            let mut w = snap::write::FrameEncoder::new(&mut framed);
            w.write_all(&plain).expect("write");
        }
        assert_eq!(decompress_records(2, &framed).expect("framed"), plain);
    }

    #[test]
    fn compress_roundtrips_every_codec() {
        let plain: Vec<u8> = (0..100_000u32)
            .flat_map(|i| (i % 251).to_le_bytes())
            .collect();
        for codec in 1..=4 {
            let z = compress_records(codec, &plain).expect("compress");
            assert!(z.len() < plain.len(), "codec {codec} compresses");
            assert_eq!(decompress_records(codec, &z).expect("decompress"), plain);
        }
        assert!(compress_records(5, &plain).is_err());
    }

    #[test]
    fn a_failed_zstd_batch_does_not_spoil_the_shared_context() {
        let plain: Vec<u8> = (0..20_000u32).flat_map(|i| i.to_be_bytes()).collect();
        let good = zstd::encode_all(&plain[..], 3).expect("compress");
        // Truncated mid-frame: an error, leaving the context mid-session.
        assert!(decompress_records(4, &good[..good.len() / 2]).is_err());
        assert!(decompress_records(4, b"\x28\xb5\x2f\xfdgarbage").is_err());
        for _ in 0..3 {
            assert_eq!(decompress_records(4, &good).expect("valid batch"), plain);
        }
    }

    #[test]
    fn garbage_and_bombs_are_invalid() {
        assert!(matches!(
            decompress_records(1, b"nope"),
            Err(StorageError::InvalidRecord(_))
        ));
        assert!(matches!(
            decompress_records(4, b"nope"),
            Err(StorageError::InvalidRecord(_))
        ));
        let zeros = vec![0u8; 8 << 20];
        for (c, id) in [(Codec::Gzip, 1), (Codec::Snappy, 2), (Codec::Zstd, 4)] {
            let z = compress(c, &zeros);
            assert!(z.len() * MAX_RATIO < 8 << 20 || id == 2);
            if z.len() * MAX_RATIO < 8 << 20 {
                let r = decompress_records(id, &z);
                assert!(matches!(r, Err(StorageError::InvalidRecord(_))), "{c:?}");
            }
        }
    }
}
