//! Request decode and response encode through `sluice::protocol`, as the
//! connection does it: a Produce v9 frame holding one 16 x 1 KiB batch
//! (`decode_request` + `decode_body`), and Produce and Fetch v12 responses
//! (`encode_response`), the Fetch one carrying 256 KiB of records.
//!
//! Run: `cargo bench --bench protocol`.

use bytes::{Bytes, BytesMut};
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use kafka_protocol::messages::fetch_response::{FetchableTopicResponse, PartitionData};
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::produce_response::{PartitionProduceResponse, TopicProduceResponse};
use kafka_protocol::messages::{
    ApiKey, FetchResponse, ProduceRequest, ProduceResponse, RequestHeader, TopicName,
};
use kafka_protocol::protocol::{Encodable, StrBytes};
use sluice::protocol::{decode_body, decode_request, encode_response};

const PRODUCE_VERSION: i16 = 9;
const FETCH_VERSION: i16 = 12;

fn topic() -> TopicName {
    TopicName(StrBytes::from_static_str("bench-topic"))
}

/// A Produce request frame (without the length prefix) as a client sends it.
fn produce_frame(records: Bytes) -> Bytes {
    let req = ProduceRequest::default()
        .with_acks(-1)
        .with_timeout_ms(30_000)
        .with_topic_data(vec![TopicProduceData::default()
            .with_name(topic())
            .with_partition_data(vec![PartitionProduceData::default()
                .with_index(0)
                .with_records(Some(records))])]);
    let header = RequestHeader::default()
        .with_request_api_key(ApiKey::Produce as i16)
        .with_request_api_version(PRODUCE_VERSION)
        .with_correlation_id(7)
        .with_client_id(Some(StrBytes::from_static_str("bench")));
    let mut buf = BytesMut::new();
    header
        .encode(
            &mut buf,
            ApiKey::Produce.request_header_version(PRODUCE_VERSION),
        )
        .expect("header");
    req.encode(&mut buf, PRODUCE_VERSION).expect("body");
    buf.freeze()
}

fn bench(c: &mut Criterion) {
    // The record bytes are opaque to the request codec: any 16 KiB will do.
    let records = Bytes::from(vec![0x5a_u8; 16 * 1024]);
    let frame = produce_frame(records);
    let mut g = c.benchmark_group("protocol");
    g.throughput(Throughput::Bytes(frame.len() as u64));
    g.bench_function("decode_produce_v9_16KiB", |b| {
        b.iter(|| {
            let req = decode_request(frame.clone()).expect("header");
            decode_body::<ProduceRequest>(&req).expect("body")
        })
    });

    let produce_resp =
        ProduceResponse::default().with_responses(vec![TopicProduceResponse::default()
            .with_name(topic())
            .with_partition_responses(vec![PartitionProduceResponse::default()
                .with_index(0)
                .with_base_offset(123_456)])]);
    g.throughput(Throughput::Elements(1));
    g.bench_function("encode_produce_response_v9", |b| {
        b.iter(|| encode_response(7, PRODUCE_VERSION, &produce_resp).expect("encode"))
    });

    let fetched = Bytes::from(vec![0x5a_u8; 256 * 1024]);
    let mut pd = PartitionData::default();
    pd.partition_index = 0;
    pd.high_watermark = 1_000_000;
    pd.last_stable_offset = 1_000_000;
    pd.records = Some(fetched.clone());
    let mut t = FetchableTopicResponse::default();
    t.topic = topic();
    t.partitions = vec![pd];
    let mut fetch_resp = FetchResponse::default();
    fetch_resp.responses = vec![t];
    g.throughput(Throughput::Bytes(fetched.len() as u64));
    g.bench_function("encode_fetch_response_v12_256KiB", |b| {
        b.iter(|| encode_response(7, FETCH_VERSION, &fetch_resp).expect("encode"))
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
