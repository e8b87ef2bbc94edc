//! Cost of `protocol::bounds::check` (walking a request body against its
//! schema before the kafka-protocol crate decodes it) next to the crate's own
//! decode of the same body: a Produce v9 of one partition with a 16 KiB
//! record set, one of 8 partitions, a Fetch v12 of 1 topic x 4 partitions and
//! one of 10 topics x 10 partitions.
//!
//! Run: `cargo bench --bench request_bounds`.

use bytes::{Bytes, BytesMut};
use criterion::{criterion_group, criterion_main, Criterion};
use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::{ApiKey, FetchRequest, ProduceRequest, TopicName};
use kafka_protocol::protocol::{Decodable, Encodable, StrBytes};
use sluice::protocol::bounds;

fn name(i: usize) -> TopicName {
    TopicName(StrBytes::from_string(format!("topic-{i}")))
}

fn produce(partitions: i32) -> Bytes {
    let records = Bytes::from(vec![7u8; 16 << 10]);
    let data = (0..partitions)
        .map(|p| {
            PartitionProduceData::default()
                .with_index(p)
                .with_records(Some(records.clone()))
        })
        .collect();
    let req = ProduceRequest::default()
        .with_acks(-1)
        .with_timeout_ms(30_000)
        .with_topic_data(vec![TopicProduceData::default()
            .with_name(name(0))
            .with_partition_data(data)]);
    let mut buf = BytesMut::new();
    req.encode(&mut buf, 9).expect("encodes");
    buf.freeze()
}

fn fetch(topics: usize, partitions: i32) -> Bytes {
    let topics = (0..topics)
        .map(|t| {
            FetchTopic::default().with_topic(name(t)).with_partitions(
                (0..partitions)
                    .map(|p| {
                        FetchPartition::default()
                            .with_partition(p)
                            .with_fetch_offset(1_000_000)
                            .with_partition_max_bytes(1 << 20)
                    })
                    .collect(),
            )
        })
        .collect();
    let req = FetchRequest::default()
        .with_max_wait_ms(500)
        .with_min_bytes(1)
        .with_max_bytes(50 << 20)
        .with_session_id(0)
        .with_session_epoch(-1)
        .with_topics(topics);
    let mut buf = BytesMut::new();
    req.encode(&mut buf, 12).expect("encodes");
    buf.freeze()
}

fn bench(c: &mut Criterion) {
    let cases = [
        ("produce_v9_1x1_16KiB", ApiKey::Produce, 9, produce(1)),
        ("produce_v9_1x8_16KiB", ApiKey::Produce, 9, produce(8)),
        ("fetch_v12_1x4", ApiKey::Fetch, 12, fetch(1, 4)),
        ("fetch_v12_10x10", ApiKey::Fetch, 12, fetch(10, 10)),
    ];
    let mut g = c.benchmark_group("request_bounds");
    for (label, api, version, body) in &cases {
        g.bench_function(format!("check/{label}"), |b| {
            b.iter(|| bounds::check(*api, *version, std::hint::black_box(body)).expect("valid"))
        });
        g.bench_function(format!("crate_decode/{label}"), |b| {
            b.iter(|| {
                let mut buf = body.clone();
                match api {
                    ApiKey::Produce => {
                        drop(ProduceRequest::decode(&mut buf, *version).expect("decodes"))
                    }
                    _ => drop(FetchRequest::decode(&mut buf, *version).expect("decodes")),
                }
            })
        });
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
