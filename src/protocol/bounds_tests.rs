//! Tests of `bounds`: every request the broker decodes, encoded by the crate
//! (default and populated), is accepted and consumed exactly as the crate
//! decodes it; every array count in it, made huge, is refused; and mutated
//! bodies are accepted only where the crate decodes them.

use bytes::{Buf, Bytes, BytesMut};
use kafka_protocol::messages::*;
use kafka_protocol::protocol::{Decodable, Encodable, StrBytes};

use super::*;
use crate::protocol::versions::API_VERSIONS;

/// Calls `$f::<XRequest>($args)` for the request type of `$api`.
macro_rules! by_api {
    ($api:expr, $f:ident ( $($arg:expr),* )) => {
        match $api {
            ApiKey::Produce => $f::<ProduceRequest>($($arg),*),
            ApiKey::Fetch => $f::<FetchRequest>($($arg),*),
            ApiKey::ListOffsets => $f::<ListOffsetsRequest>($($arg),*),
            ApiKey::Metadata => $f::<MetadataRequest>($($arg),*),
            ApiKey::ApiVersions => $f::<ApiVersionsRequest>($($arg),*),
            ApiKey::CreateTopics => $f::<CreateTopicsRequest>($($arg),*),
            ApiKey::DeleteTopics => $f::<DeleteTopicsRequest>($($arg),*),
            ApiKey::DescribeConfigs => $f::<DescribeConfigsRequest>($($arg),*),
            ApiKey::AlterConfigs => $f::<AlterConfigsRequest>($($arg),*),
            ApiKey::CreatePartitions => $f::<CreatePartitionsRequest>($($arg),*),
            ApiKey::IncrementalAlterConfigs => $f::<IncrementalAlterConfigsRequest>($($arg),*),
            ApiKey::DescribeCluster => $f::<DescribeClusterRequest>($($arg),*),
            ApiKey::DescribeQuorum => $f::<DescribeQuorumRequest>($($arg),*),
            ApiKey::OffsetForLeaderEpoch => $f::<OffsetForLeaderEpochRequest>($($arg),*),
            ApiKey::FindCoordinator => $f::<FindCoordinatorRequest>($($arg),*),
            ApiKey::JoinGroup => $f::<JoinGroupRequest>($($arg),*),
            ApiKey::SyncGroup => $f::<SyncGroupRequest>($($arg),*),
            ApiKey::Heartbeat => $f::<HeartbeatRequest>($($arg),*),
            ApiKey::LeaveGroup => $f::<LeaveGroupRequest>($($arg),*),
            ApiKey::OffsetCommit => $f::<OffsetCommitRequest>($($arg),*),
            ApiKey::OffsetFetch => $f::<OffsetFetchRequest>($($arg),*),
            ApiKey::ListGroups => $f::<ListGroupsRequest>($($arg),*),
            ApiKey::DescribeGroups => $f::<DescribeGroupsRequest>($($arg),*),
            ApiKey::DeleteGroups => $f::<DeleteGroupsRequest>($($arg),*),
            ApiKey::OffsetDelete => $f::<OffsetDeleteRequest>($($arg),*),
            ApiKey::InitProducerId => $f::<InitProducerIdRequest>($($arg),*),
            ApiKey::AddPartitionsToTxn => $f::<AddPartitionsToTxnRequest>($($arg),*),
            ApiKey::AddOffsetsToTxn => $f::<AddOffsetsToTxnRequest>($($arg),*),
            ApiKey::EndTxn => $f::<EndTxnRequest>($($arg),*),
            ApiKey::TxnOffsetCommit => $f::<TxnOffsetCommitRequest>($($arg),*),
            ApiKey::DescribeTransactions => $f::<DescribeTransactionsRequest>($($arg),*),
            ApiKey::ListTransactions => $f::<ListTransactionsRequest>($($arg),*),
            ApiKey::DescribeProducers => $f::<DescribeProducersRequest>($($arg),*),
            ApiKey::WriteTxnMarkers => $f::<WriteTxnMarkersRequest>($($arg),*),
            ApiKey::DescribeLogDirs => $f::<DescribeLogDirsRequest>($($arg),*),
            ApiKey::ElectLeaders => $f::<ElectLeadersRequest>($($arg),*),
            ApiKey::AlterPartitionReassignments => $f::<AlterPartitionReassignmentsRequest>($($arg),*),
            ApiKey::ListPartitionReassignments => $f::<ListPartitionReassignmentsRequest>($($arg),*),
            ApiKey::AlterReplicaLogDirs => $f::<AlterReplicaLogDirsRequest>($($arg),*),
            other => panic!("no request type listed for {other:?}"),
        }
    };
}

fn default_body<T: Encodable + Default>(version: i16) -> Vec<u8> {
    enc(&T::default(), version)
}

fn enc<T: Encodable>(msg: &T, version: i16) -> Vec<u8> {
    let mut buf = BytesMut::new();
    msg.encode(&mut buf, version)
        .unwrap_or_else(|e| panic!("encode v{version}: {e}"));
    buf.to_vec()
}

/// The crate's own decode: bytes consumed, or its error.
fn crate_decode<T: Decodable>(version: i16, body: &[u8]) -> Result<usize, String> {
    let mut b = Bytes::copy_from_slice(body);
    T::decode(&mut b, version)
        .map(|_| body.len() - b.remaining())
        .map_err(|e| e.to_string())
}

fn schema(api: ApiKey) -> &'static StructSchema {
    schema_gen::request(api).expect("schema for every broker API")
}

fn flexible(api: ApiKey, version: i16) -> bool {
    schema(api).flexible_from.is_some_and(|f| version >= f)
}

/// A compact unsigned varint.
fn uvarint(mut v: u32) -> Vec<u8> {
    let mut out = Vec::new();
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
    out
}

fn varint_len(b: &[u8]) -> usize {
    b.iter()
        .take(5)
        .position(|x| x & 0x80 == 0)
        .map_or(5, |p| p + 1)
}

/// `body` with the array count at `at` replaced by 0x7fffffff elements.
fn bomb(body: &[u8], at: usize, compact: bool) -> Vec<u8> {
    let mut out = body[..at].to_vec();
    if compact {
        out.extend(uvarint(0x8000_0000));
        out.extend(&body[at + varint_len(&body[at..])..]);
    } else {
        out.extend(0x7fff_ffffi32.to_be_bytes());
        out.extend(&body[at + 4..]);
    }
    out
}

/// Accepted exactly as the crate decodes it, and every array count in it,
/// made huge, refused at that count.
fn assert_accepts_and_refuses_bombs(
    s: &'static StructSchema,
    api: Option<ApiKey>,
    v: i16,
    body: &[u8],
) -> usize {
    let used = check_struct(s, v, body).unwrap_or_else(|e| panic!("{} v{v} refused: {e}", s.name));
    assert_eq!(
        used,
        body.len(),
        "{} v{v}: check consumed {used} of {}",
        s.name,
        body.len()
    );
    if let Some(api) = api {
        let decoded = by_api!(api, crate_decode(v, body));
        assert_eq!(decoded, Ok(body.len()), "{api:?} v{v}: crate decode");
    }
    let arrays = array_counts(s, v, body);
    for &(at, compact) in &arrays {
        let bad = bomb(body, at, compact);
        let err = check_struct(s, v, &bad).expect_err("bomb refused");
        assert!(
            matches!(
                err.problem,
                Problem::ArrayTooLong {
                    count: 0x7fff_ffff,
                    ..
                }
            ),
            "{} v{v} bomb at {at}: {err}",
            s.name
        );
        assert_eq!(err.offset, at, "{err}");
        assert!(!err.path.is_empty());
    }
    arrays.len()
}

fn supported(api: ApiKey) -> (i16, i16) {
    let (_, lo, hi) = API_VERSIONS.iter().find(|(k, _, _)| *k == api).unwrap();
    (*lo, *hi)
}

#[test]
fn schema_covers_exactly_the_broker_apis() {
    let apis: Vec<ApiKey> = API_VERSIONS.iter().map(|(k, _, _)| *k).collect();
    assert_eq!(schema_gen::REQUEST_APIS, &apis[..]);
    for (api, lo, hi) in API_VERSIONS {
        let (min, max) = schema(*api).versions;
        assert!(min <= *lo && *hi <= max, "{api:?}: schema {min}..={max}");
    }
}

#[test]
fn default_requests_are_accepted_at_every_supported_version() {
    for (api, lo, hi) in API_VERSIONS {
        for v in *lo..=*hi {
            let body = by_api!(*api, default_body(v));
            assert_accepts_and_refuses_bombs(schema(*api), Some(*api), v, &body);
        }
    }
}

#[test]
fn versions_outside_the_struct_are_refused() {
    let err = check(ApiKey::Fetch, 3, &[]).unwrap_err();
    assert_eq!(err.problem, Problem::BadVersion { min: 4, max: 18 });
    let err = check(ApiKey::Metadata, -1, &[0; 8]).unwrap_err();
    assert!(matches!(err.problem, Problem::BadVersion { .. }));
    let err = check(ApiKey::SaslHandshake, 0, &[]).unwrap_err();
    assert_eq!(err.problem, Problem::UnknownApi);
}

#[test]
fn the_metadata_v0_bomb_is_refused_with_the_field_and_counts() {
    let err = check(ApiKey::Metadata, 0, &0x7fff_ffffi32.to_be_bytes()).unwrap_err();
    assert_eq!(
        err.to_string(),
        "MetadataRequest v0.topics at byte 0: array of 2147483647 elements, but only 0 bytes remain"
    );
    // Compact form (v9+): varint 0x80000000 = count 0x7fffffff.
    let err = check(ApiKey::Metadata, 12, &uvarint(0x8000_0000)).unwrap_err();
    assert!(matches!(
        err.problem,
        Problem::ArrayTooLong {
            count: 0x7fff_ffff,
            remaining: 0
        }
    ));
    // Null topics are allowed (the crate takes null at every version, the
    // handler reads it as "all topics"); other negatives are not.
    assert_eq!(check(ApiKey::Metadata, 1, &(-1i32).to_be_bytes()), Ok(4));
    assert_eq!(check(ApiKey::Metadata, 0, &(-1i32).to_be_bytes()), Ok(4));
    // Not nullable: CreateTopics' topics.
    let err = check(ApiKey::CreateTopics, 2, &[0xff; 9]).unwrap_err();
    assert_eq!(err.problem, Problem::NullNotAllowed);
    let err = check(ApiKey::Metadata, 1, &(-2i32).to_be_bytes()).unwrap_err();
    assert_eq!(err.problem, Problem::NegativeLength(-2));
}

fn s(x: &'static str) -> StrBytes {
    StrBytes::from_static_str(x)
}

fn tn(x: &'static str) -> TopicName {
    TopicName(s(x))
}

fn tagged<T>(flex: bool, msg: T, f: impl FnOnce(T) -> T) -> T {
    if flex {
        f(msg)
    } else {
        msg
    }
}

fn xtag() -> Bytes {
    Bytes::from_static(b"tagged")
}

fn produce(v: i16, flex: bool) -> ProduceRequest {
    use produce_request::*;
    let part = |i, r: Option<&'static [u8]>| {
        tagged(
            flex,
            PartitionProduceData::default()
                .with_index(i)
                .with_records(r.map(Bytes::from_static)),
            |p| p.with_unknown_tagged_field(3, xtag()),
        )
    };
    let topic = |n| {
        TopicProduceData::default()
            .with_name(tn(n))
            .with_partition_data(vec![
                part(0, Some(b"not really a batch")),
                part(1, None),
                part(2, Some(b"")),
            ])
    };
    let _ = v;
    tagged(
        flex,
        ProduceRequest::default()
            .with_transactional_id(Some(TransactionalId(s("tx"))))
            .with_acks(-1)
            .with_timeout_ms(1000)
            .with_topic_data(vec![topic("a"), topic("b")]),
        |r| r.with_unknown_tagged_field(5, xtag()),
    )
}

fn fetch(v: i16, flex: bool) -> FetchRequest {
    use fetch_request::*;
    let part = |i| {
        let mut p = FetchPartition::default()
            .with_partition(i)
            .with_fetch_offset(100)
            .with_partition_max_bytes(1 << 20);
        if v >= 9 {
            p = p.with_current_leader_epoch(3);
        }
        if v >= 5 {
            p = p.with_log_start_offset(7);
        }
        tagged(flex, p, |p| p.with_unknown_tagged_field(9, xtag()))
    };
    let topic = |n| {
        FetchTopic::default()
            .with_topic(tn(n))
            .with_partitions(vec![part(0), part(1)])
    };
    let mut r = FetchRequest::default()
        .with_max_wait_ms(500)
        .with_min_bytes(1)
        .with_max_bytes(1 << 24)
        .with_topics(vec![topic("a"), topic("b")]);
    if v >= 7 {
        r = r
            .with_session_id(1)
            .with_session_epoch(2)
            .with_forgotten_topics_data(vec![
                ForgottenTopic::default()
                    .with_topic(tn("c"))
                    .with_partitions(vec![1, 2, 3]),
                ForgottenTopic::default()
                    .with_topic(tn("d"))
                    .with_partitions(vec![]),
            ]);
    }
    if v >= 11 {
        r = r.with_rack_id(s("rack"));
    }
    tagged(flex, r, |r| {
        r.with_cluster_id(Some(s("cluster")))
            .with_unknown_tagged_field(4, xtag())
    })
}

fn metadata(v: i16, flex: bool) -> MetadataRequest {
    use metadata_request::*;
    let topic = |n| {
        tagged(
            flex,
            MetadataRequestTopic::default().with_name(Some(tn(n))),
            |t| t.with_unknown_tagged_field(2, xtag()),
        )
    };
    let mut r =
        MetadataRequest::default().with_topics(Some(vec![topic("a"), topic("b"), topic("c")]));
    if v >= 4 {
        r = r.with_allow_auto_topic_creation(false);
    }
    if v >= 8 {
        r = r.with_include_topic_authorized_operations(true);
    }
    tagged(flex, r, |r| r.with_unknown_tagged_field(1, xtag()))
}

fn create_topics(_v: i16, flex: bool) -> CreateTopicsRequest {
    use create_topics_request::*;
    let assign = |p| {
        CreatableReplicaAssignment::default()
            .with_partition_index(p)
            .with_broker_ids(vec![BrokerId(1), BrokerId(2)])
    };
    let conf = |n, val: Option<&'static str>| {
        CreatableTopicConfig::default()
            .with_name(s(n))
            .with_value(val.map(s))
    };
    let topic = |n| {
        tagged(
            flex,
            CreatableTopic::default()
                .with_name(tn(n))
                .with_num_partitions(-1)
                .with_replication_factor(-1)
                .with_assignments(vec![assign(0), assign(1)])
                .with_configs(vec![
                    conf("cleanup.policy", Some("compact")),
                    conf("retention.ms", None),
                ]),
            |t| t.with_unknown_tagged_field(8, xtag()),
        )
    };
    CreateTopicsRequest::default()
        .with_topics(vec![topic("a"), topic("b")])
        .with_timeout_ms(5000)
        .with_validate_only(true)
}

fn join_group(v: i16, flex: bool) -> JoinGroupRequest {
    use join_group_request::*;
    let proto = |n, m: &'static [u8]| {
        JoinGroupRequestProtocol::default()
            .with_name(s(n))
            .with_metadata(Bytes::from_static(m))
    };
    let mut r = JoinGroupRequest::default()
        .with_group_id(GroupId(s("g")))
        .with_session_timeout_ms(10_000)
        .with_member_id(s("m-1"))
        .with_protocol_type(s("consumer"))
        .with_protocols(vec![
            proto("range", b"\x00\x01meta"),
            proto("roundrobin", b""),
        ]);
    if v >= 1 {
        r = r.with_rebalance_timeout_ms(20_000);
    }
    if v >= 5 {
        r = r.with_group_instance_id(Some(s("i-1")));
    }
    if v >= 8 {
        r = r.with_reason(Some(s("why")));
    }
    tagged(flex, r, |r| r.with_unknown_tagged_field(0, xtag()))
}

fn offset_commit(v: i16, flex: bool) -> OffsetCommitRequest {
    use offset_commit_request::*;
    let part = |i, meta: Option<&'static str>| {
        let mut p = OffsetCommitRequestPartition::default()
            .with_partition_index(i)
            .with_committed_offset(42)
            .with_committed_metadata(meta.map(s));
        if v >= 6 {
            p = p.with_committed_leader_epoch(5);
        }
        p
    };
    let topic = |n| {
        OffsetCommitRequestTopic::default()
            .with_name(tn(n))
            .with_partitions(vec![part(0, Some("m")), part(1, None)])
    };
    let mut r = OffsetCommitRequest::default()
        .with_group_id(GroupId(s("g")))
        .with_generation_id_or_member_epoch(3)
        .with_member_id(s("m-1"))
        .with_topics(vec![topic("a"), topic("b")]);
    if (2..=4).contains(&v) {
        r = r.with_retention_time_ms(60_000);
    }
    if v >= 7 {
        r = r.with_group_instance_id(Some(s("i")));
    }
    tagged(flex, r, |r| r.with_unknown_tagged_field(0, xtag()))
}

fn offset_fetch(v: i16, flex: bool) -> OffsetFetchRequest {
    use offset_fetch_request::*;
    if v >= 8 {
        let topics = |n| {
            OffsetFetchRequestTopics::default()
                .with_name(tn(n))
                .with_partition_indexes(vec![0, 1, 2])
        };
        let groups = vec![
            OffsetFetchRequestGroup::default()
                .with_group_id(GroupId(s("g1")))
                .with_topics(Some(vec![topics("a"), topics("b")])),
            OffsetFetchRequestGroup::default()
                .with_group_id(GroupId(s("g2")))
                .with_topics(None),
        ];
        return OffsetFetchRequest::default()
            .with_groups(groups)
            .with_require_stable(true);
    }
    let topic = |n| {
        OffsetFetchRequestTopic::default()
            .with_name(tn(n))
            .with_partition_indexes(vec![0, 1])
    };
    let mut r = OffsetFetchRequest::default()
        .with_group_id(GroupId(s("g")))
        .with_topics(Some(vec![topic("a"), topic("b")]));
    if v >= 7 {
        r = r.with_require_stable(true);
    }
    tagged(flex, r, |r| r.with_unknown_tagged_field(0, xtag()))
}

fn find_coordinator(v: i16, flex: bool) -> FindCoordinatorRequest {
    let r = if v >= 4 {
        FindCoordinatorRequest::default()
            .with_key_type(1)
            .with_coordinator_keys(vec![s("tx-a"), s("tx-b"), s("")])
    } else if v >= 1 {
        FindCoordinatorRequest::default()
            .with_key(s("g"))
            .with_key_type(1)
    } else {
        FindCoordinatorRequest::default().with_key(s("g"))
    };
    tagged(flex, r, |r| r.with_unknown_tagged_field(0, xtag()))
}

fn add_partitions_to_txn(v: i16, flex: bool) -> AddPartitionsToTxnRequest {
    use add_partitions_to_txn_request::*;
    let topic = |n| {
        tagged(
            flex,
            AddPartitionsToTxnTopic::default()
                .with_name(tn(n))
                .with_partitions(vec![0, 1, 2]),
            |t| t.with_unknown_tagged_field(1, xtag()),
        )
    };
    if v >= 4 {
        let txn = |id| {
            AddPartitionsToTxnTransaction::default()
                .with_transactional_id(TransactionalId(s(id)))
                .with_producer_id(ProducerId(7))
                .with_producer_epoch(1)
                .with_topics(vec![topic("a"), topic("b")])
        };
        return AddPartitionsToTxnRequest::default().with_transactions(vec![txn("t1"), txn("t2")]);
    }
    AddPartitionsToTxnRequest::default()
        .with_v3_and_below_transactional_id(TransactionalId(s("t")))
        .with_v3_and_below_producer_id(ProducerId(7))
        .with_v3_and_below_producer_epoch(1)
        .with_v3_and_below_topics(vec![topic("a"), topic("b")])
}

fn describe_configs(v: i16, _flex: bool) -> DescribeConfigsRequest {
    use describe_configs_request::*;
    let res = |n, keys: Option<Vec<StrBytes>>| {
        DescribeConfigsResource::default()
            .with_resource_type(2)
            .with_resource_name(s(n))
            .with_configuration_keys(keys)
    };
    let mut r = DescribeConfigsRequest::default()
        .with_resources(vec![
            res("a", Some(vec![s("retention.ms"), s("segment.bytes")])),
            res("b", None),
        ])
        .with_include_synonyms(true);
    if v >= 3 {
        r = r.with_include_documentation(true);
    }
    r
}

fn incremental_alter_configs(_v: i16, flex: bool) -> IncrementalAlterConfigsRequest {
    use incremental_alter_configs_request::*;
    let conf = |n, op, val: Option<&'static str>| {
        AlterableConfig::default()
            .with_name(s(n))
            .with_config_operation(op)
            .with_value(val.map(s))
    };
    let res = |n| {
        tagged(
            flex,
            AlterConfigsResource::default()
                .with_resource_type(2)
                .with_resource_name(s(n))
                .with_configs(vec![
                    conf("retention.ms", 0, Some("1000")),
                    conf("cleanup.policy", 1, None),
                ]),
            |r| r.with_unknown_tagged_field(6, xtag()),
        )
    };
    IncrementalAlterConfigsRequest::default()
        .with_resources(vec![res("a"), res("b")])
        .with_validate_only(true)
}

fn list_offsets(v: i16, flex: bool) -> ListOffsetsRequest {
    use list_offsets_request::*;
    let part = |i| {
        let p = ListOffsetsPartition::default()
            .with_partition_index(i)
            .with_timestamp(-1);
        if v >= 4 {
            p.with_current_leader_epoch(2)
        } else {
            p
        }
    };
    let topic = |n| {
        ListOffsetsTopic::default()
            .with_name(tn(n))
            .with_partitions(vec![part(0), part(1)])
    };
    let mut r = ListOffsetsRequest::default()
        .with_replica_id(BrokerId(-1))
        .with_topics(vec![topic("a"), topic("b")]);
    if v >= 2 {
        r = r.with_isolation_level(1);
    }
    tagged(flex, r, |r| r.with_unknown_tagged_field(0, xtag()))
}

/// Populated requests (arrays of 2+ elements, nested arrays, null and empty
/// entries, tagged fields) at every version the broker supports.
#[test]
fn populated_requests_are_accepted_and_every_array_bomb_refused() {
    macro_rules! each {
        ($api:expr, $build:ident, $versions:expr) => {{
            let mut arrays = 0;
            for v in $versions {
                let body = enc(&$build(v, flexible($api, v)), v);
                arrays += assert_accepts_and_refuses_bombs(schema($api), Some($api), v, &body);
            }
            assert!(arrays > 0, "{:?}: no arrays walked", $api);
        }};
    }
    let r = |api| {
        let (lo, hi) = supported(api);
        lo..=hi
    };
    each!(ApiKey::Produce, produce, r(ApiKey::Produce));
    each!(ApiKey::Fetch, fetch, r(ApiKey::Fetch));
    each!(ApiKey::Metadata, metadata, r(ApiKey::Metadata));
    each!(ApiKey::CreateTopics, create_topics, r(ApiKey::CreateTopics));
    each!(ApiKey::JoinGroup, join_group, r(ApiKey::JoinGroup));
    each!(ApiKey::OffsetCommit, offset_commit, r(ApiKey::OffsetCommit));
    each!(ApiKey::OffsetFetch, offset_fetch, r(ApiKey::OffsetFetch));
    each!(
        ApiKey::FindCoordinator,
        find_coordinator,
        r(ApiKey::FindCoordinator)
    );
    // v4+ (batches) is refused before decoding by the broker's version
    // table; the schema covers it all the same.
    each!(ApiKey::AddPartitionsToTxn, add_partitions_to_txn, 0..=5);
    each!(
        ApiKey::DescribeConfigs,
        describe_configs,
        r(ApiKey::DescribeConfigs)
    );
    each!(
        ApiKey::IncrementalAlterConfigs,
        incremental_alter_configs,
        r(ApiKey::IncrementalAlterConfigs)
    );
    each!(ApiKey::ListOffsets, list_offsets, r(ApiKey::ListOffsets));
}

/// Requests carry no array-typed known tagged field: the only known tagged
/// fields in the broker's requests are Fetch's (cluster_id, a string, from
/// v12; replica_state, a struct, from v15). Their lengths are checked too.
#[test]
fn known_tagged_fields_are_walked_from_the_body() {
    let body = enc(&fetch(12, true), 12);
    assert_eq!(check(ApiKey::Fetch, 12, &body), Ok(body.len()));
    // The body ends with the top-level tagged fields: count 2, then
    // cluster_id (tag 0, size 8, compact "cluster") and the unknown tag 4.
    let tail = [&[2u8, 0, 8, 8][..], b"cluster", &[4, 6], b"tagged"].concat();
    assert!(body.ends_with(&tail));
    let head = &body[..body.len() - tail.len()];
    // cluster_id claiming 2^31 bytes.
    let bad = [head, &[1, 0, 8], &uvarint(0x8000_0000)[..], b"cluster"].concat();
    let err = check(ApiKey::Fetch, 12, &bad).unwrap_err();
    assert!(
        matches!(
            err.problem,
            Problem::Truncated {
                need: 0x7fff_ffff,
                ..
            }
        ),
        "{err}"
    );
    assert_eq!(err.path, vec![Step::Field("cluster_id")]);
    assert!(crate_decode::<FetchRequest>(12, &bad).is_err());
    // replica_state (tag 1) exists from v15 only: the crate refuses it at v12.
    let bad = [head, &[1, 1, 12], &[0u8; 12][..]].concat();
    let err = check(ApiKey::Fetch, 12, &bad).unwrap_err();
    assert_eq!(err.problem, Problem::TagNotValid { tag: 1 });
    assert!(crate_decode::<FetchRequest>(12, &bad).is_err());
    // An unknown tag whose size runs past the end.
    let bad = [head, &[1, 9], &uvarint(1000)[..], b"short"].concat();
    let err = check(ApiKey::Fetch, 12, &bad).unwrap_err();
    assert!(
        matches!(err.problem, Problem::Truncated { need: 1000, .. }),
        "{err}"
    );
    assert!(crate_decode::<FetchRequest>(12, &bad).is_err());
    // The crate ignores a known tag's size; so does the walk.
    let odd = [head, &[1, 0, 99, 2], b"c"].concat();
    assert_eq!(check(ApiKey::Fetch, 12, &odd), Ok(odd.len()));
    assert_eq!(crate_decode::<FetchRequest>(12, &odd), Ok(odd.len()));
}

#[test]
fn consumer_protocol_subscription_is_checked() {
    use consumer_protocol_subscription::TopicPartition;
    let schema = &schema_gen::CONSUMER_PROTOCOL_SUBSCRIPTION;
    for v in 0..=3 {
        let mut sub = ConsumerProtocolSubscription::default()
            .with_topics(vec![s("a"), s("b")])
            .with_user_data(Some(Bytes::from_static(b"ud")));
        if v >= 1 {
            sub = sub.with_owned_partitions(vec![
                TopicPartition::default()
                    .with_topic(tn("a"))
                    .with_partitions(vec![0, 1]),
                TopicPartition::default()
                    .with_topic(tn("b"))
                    .with_partitions(vec![]),
            ]);
        }
        if v >= 2 {
            sub = sub.with_generation_id(4);
        }
        if v >= 3 {
            sub = sub.with_rack_id(Some(s("r")));
        }
        let body = enc(&sub, v);
        assert_accepts_and_refuses_bombs(schema, None, v, &body);
        assert_eq!(
            crate_decode::<ConsumerProtocolSubscription>(v, &body),
            Ok(body.len())
        );
    }
    let err = check_struct(schema, 0, &0x7fff_ffffi32.to_be_bytes()).unwrap_err();
    assert_eq!(err.path, vec![Step::Field("topics")]);
}

#[test]
fn request_header_is_checked() {
    let schema = &schema_gen::REQUEST_HEADER;
    for hv in 1..=2 {
        let mut h = RequestHeader::default()
            .with_request_api_key(3)
            .with_correlation_id(9)
            .with_client_id(Some(s("c")));
        if hv == 2 {
            h = h.with_unknown_tagged_field(3, xtag());
        }
        let body = enc(&h, hv);
        assert_eq!(check_struct(schema, hv, &body), Ok(body.len()));
        // A client id longer than the frame; a tagged field count with nothing behind it.
        let mut bad = body.clone();
        bad[8..10].copy_from_slice(&1000i16.to_be_bytes());
        assert!(matches!(
            check_struct(schema, hv, &bad).unwrap_err().problem,
            Problem::Truncated { .. }
        ));
    }
    let bad = [
        &[0u8, 3, 0, 9, 0, 0, 0, 1, 0xff, 0xff][..],
        &uvarint(u32::MAX),
    ]
    .concat();
    assert!(check_struct(schema, 2, &bad).is_err());
    assert!(crate_decode::<RequestHeader>(2, &bad).is_err());
}

/// Mutates each byte of populated bodies: whatever `check` accepts, the crate
/// decodes, consuming the same bytes (or refuses for invalid UTF-8, which
/// `check` does not look at); whatever `check` refuses for a reason other
/// than a huge count, the crate refuses too (huge counts are not handed to
/// the crate here: that is the abort this module prevents).
#[test]
fn check_agrees_with_the_crate_on_mutated_bodies() {
    let cases: Vec<(ApiKey, i16, Vec<u8>)> = vec![
        (ApiKey::Produce, 3, enc(&produce(3, false), 3)),
        (ApiKey::Produce, 9, enc(&produce(9, true), 9)),
        (ApiKey::Fetch, 11, enc(&fetch(11, false), 11)),
        (ApiKey::Fetch, 12, enc(&fetch(12, true), 12)),
        (ApiKey::Metadata, 12, enc(&metadata(12, true), 12)),
        (ApiKey::CreateTopics, 5, enc(&create_topics(5, true), 5)),
        (ApiKey::JoinGroup, 6, enc(&join_group(6, true), 6)),
        (ApiKey::OffsetFetch, 8, enc(&offset_fetch(8, true), 8)),
        (ApiKey::ListOffsets, 6, enc(&list_offsets(6, true), 6)),
    ];
    let mut agreed = 0;
    for (api, v, body) in cases {
        for i in 0..body.len() {
            for x in [0x00, 0x01, 0x7f, 0x80, 0xff] {
                let mut m = body.clone();
                m[i] = x;
                match check(api, v, &m) {
                    Ok(used) => match by_api!(api, crate_decode(v, &m)) {
                        Ok(n) => assert_eq!(n, used, "{api:?} v{v} byte {i}={x:#x}"),
                        Err(e) => assert!(e.contains("utf-8"), "{api:?} v{v} byte {i}={x:#x}: {e}"),
                    },
                    Err(e) if matches!(e.problem, Problem::ArrayTooLong { .. }) => {}
                    Err(e) => {
                        let r = by_api!(api, crate_decode(v, &m));
                        assert!(
                            r.is_err(),
                            "{api:?} v{v} byte {i}={x:#x}: check refused ({e}), crate took it"
                        );
                    }
                }
                agreed += 1;
            }
        }
    }
    assert!(agreed > 1000);
}
