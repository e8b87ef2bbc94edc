//! Test-only helpers: a tiny record batch v2 encoder (all codecs) and an executor runner.

use std::io::Write;

use super::batch::{batch_crc, HEADER_LEN, OFF_CRC};

/// Compression used by the test encoder.
#[derive(Clone, Copy, Debug)]
pub enum Codec {
    None,
    Gzip,
    Snappy,
    SnappyXerial,
    Lz4,
    Zstd,
}

/// One record to encode.
#[derive(Clone, Debug)]
pub struct Rec {
    pub ts: i64,
    pub key: Vec<u8>,
    pub value: Vec<u8>,
}

impl Rec {
    pub fn new(ts: i64, key: &[u8], value: &[u8]) -> Rec {
        Rec {
            ts,
            key: key.to_vec(),
            value: value.to_vec(),
        }
    }
}

pub fn put_varlong(b: &mut Vec<u8>, v: i64) {
    let mut z = ((v << 1) ^ (v >> 63)) as u64;
    loop {
        if z < 0x80 {
            b.push(z as u8);
            return;
        }
        b.push((z as u8 & 0x7f) | 0x80);
        z >>= 7;
    }
}

pub fn compress(c: Codec, plain: &[u8]) -> Vec<u8> {
    match c {
        Codec::None => plain.to_vec(),
        Codec::Gzip => {
            let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
            e.write_all(plain).expect("gzip");
            e.finish().expect("gzip")
        }
        Codec::Snappy => snap::raw::Encoder::new()
            .compress_vec(plain)
            .expect("snappy"),
        Codec::SnappyXerial => {
            let mut out = b"\x82SNAPPY\x00".to_vec();
            out.extend_from_slice(&1i32.to_be_bytes());
            out.extend_from_slice(&1i32.to_be_bytes());
            for chunk in plain.chunks(32 << 10) {
                let z = snap::raw::Encoder::new()
                    .compress_vec(chunk)
                    .expect("snappy");
                out.extend_from_slice(&(z.len() as u32).to_be_bytes());
                out.extend_from_slice(&z);
            }
            out
        }
        Codec::Lz4 => {
            let mut e = lz4::EncoderBuilder::new().build(Vec::new()).expect("lz4");
            e.write_all(plain).expect("lz4");
            let (out, r) = e.finish();
            r.expect("lz4");
            out
        }
        Codec::Zstd => zstd::encode_all(plain, 3).expect("zstd"),
    }
}

fn codec_id(c: Codec) -> i16 {
    match c {
        Codec::None => 0,
        Codec::Gzip => 1,
        Codec::Snappy | Codec::SnappyXerial => 2,
        Codec::Lz4 => 3,
        Codec::Zstd => 4,
    }
}

/// (timestamp, key, value) of a record to encode; None encodes a null key or value.
pub type OptRec<'a> = (i64, Option<&'a [u8]>, Option<&'a [u8]>);

/// Encodes a v2 batch (base offset 0) holding `recs`.
pub fn batch(c: Codec, recs: &[Rec]) -> Vec<u8> {
    let opt: Vec<OptRec<'_>> = recs
        .iter()
        .map(|r| (r.ts, Some(&r.key[..]), Some(&r.value[..])))
        .collect();
    batch_opt(c, &opt)
}

fn put_bytes_field(b: &mut Vec<u8>, f: Option<&[u8]>) {
    match f {
        None => put_varlong(b, -1),
        Some(f) => {
            put_varlong(b, f.len() as i64);
            b.extend_from_slice(f);
        }
    }
}

/// Encodes a v2 batch (base offset 0) of (timestamp, key, value) records where a key or value
/// may be null (tombstones, keyless records).
pub fn batch_opt(c: Codec, recs: &[OptRec<'_>]) -> Vec<u8> {
    let base_ts = recs.first().map_or(0, |r| r.0);
    let max_ts = recs.iter().map(|r| r.0).max().unwrap_or(-1);
    let mut body = Vec::new();
    for (i, (ts, key, value)) in recs.iter().enumerate() {
        let mut rec = vec![0u8];
        put_varlong(&mut rec, ts - base_ts);
        put_varlong(&mut rec, i as i64);
        put_bytes_field(&mut rec, *key);
        put_bytes_field(&mut rec, *value);
        put_varlong(&mut rec, 0);
        put_varlong(&mut body, rec.len() as i64);
        body.extend_from_slice(&rec);
    }
    let body = compress(c, &body);
    let mut b = Vec::with_capacity(HEADER_LEN + body.len());
    b.extend_from_slice(&0i64.to_be_bytes());
    b.extend_from_slice(&((HEADER_LEN - 12 + body.len()) as i32).to_be_bytes());
    b.extend_from_slice(&(-1i32).to_be_bytes());
    b.push(2);
    b.extend_from_slice(&0u32.to_be_bytes());
    b.extend_from_slice(&codec_id(c).to_be_bytes());
    b.extend_from_slice(&(recs.len() as i32 - 1).to_be_bytes());
    b.extend_from_slice(&base_ts.to_be_bytes());
    b.extend_from_slice(&max_ts.to_be_bytes());
    b.extend_from_slice(&(-1i64).to_be_bytes());
    b.extend_from_slice(&(-1i16).to_be_bytes());
    b.extend_from_slice(&(-1i32).to_be_bytes());
    b.extend_from_slice(&(recs.len() as i32).to_be_bytes());
    b.extend_from_slice(&body);
    fix_crc(&mut b);
    b
}

/// Recomputes the CRC of a whole batch after a test tampered with it.
pub fn fix_crc(b: &mut [u8]) {
    let crc = batch_crc(b);
    b[OFF_CRC..OFF_CRC + 4].copy_from_slice(&crc.to_be_bytes());
}

/// `n` uncompressed records with timestamps `ts0..`, values of `vlen` bytes.
pub fn simple_batch(n: usize, ts0: i64, vlen: usize) -> Vec<u8> {
    let recs: Vec<Rec> = (0..n)
        .map(|i| Rec::new(ts0 + i as i64, b"key", &vec![b'v'; vlen]))
        .collect();
    batch(Codec::None, &recs)
}

/// Fds of this process naming deleted files under `dir`.
pub fn held_deleted(dir: &std::path::Path) -> usize {
    let prefix = dir.to_string_lossy().into_owned();
    std::fs::read_dir("/proc/self/fd")
        .expect("/proc/self/fd")
        .filter_map(|e| std::fs::read_link(e.ok()?.path()).ok())
        .map(|t| t.to_string_lossy().into_owned())
        .filter(|t| t.starts_with(&prefix) && t.ends_with(" (deleted)"))
        .count()
}

/// Runs an async test body on a fresh glommio executor.
pub fn run<F, Fut>(f: F)
where
    F: FnOnce() -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()> + 'static,
{
    glommio::LocalExecutorBuilder::new(glommio::Placement::Unbound)
        .io_memory(1 << 20)
        .spawn(move || async move { f().await })
        .expect("spawn executor")
        .join()
        .expect("executor join");
}
