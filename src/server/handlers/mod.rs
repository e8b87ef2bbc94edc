//! One handler per Kafka API. A handler translates between the protocol
//! structures and the subsystem below it (cluster metadata, partition logs);
//! it owns no state. Requests that touch partitions are split by owner shard,
//! run there through `runtime::submit_to`, and merged back in request order.

mod admin_configs;
mod admin_partitions;
mod admin_topics;
mod api_versions;
mod describe_cluster;
mod describe_log_dirs;
mod describe_quorum;
mod fetch;
mod groups;
mod init_producer_id;
mod list_offsets;
mod metadata;
mod offset_for_leader_epoch;
mod produce;
mod txn;

use std::collections::BTreeMap;

use bytes::Bytes;
use futures::future::LocalBoxFuture;
use kafka_protocol::messages::{ApiKey, TopicName};
use kafka_protocol::protocol::{Decodable, Encodable, HeaderVersion, StrBytes};

use crate::protocol::parts::{encode_response_parts, Part};
use crate::protocol::{
    decode_body, decode_request, encode_response, peek_key_version, FrameError, Request,
};

/// A request's answer: the response frame now (`None`: no response is due,
/// acks=0), or one that completes later (acks=all Produce waiting for its
/// fsync) and must still be sent in request order.
pub enum Reply {
    Now(Option<Bytes>),
    Later(LocalBoxFuture<'static, Result<Option<Bytes>, FrameError>>),
    /// A Fetch answer in parts: large records sent from their own buffers and
    /// file ranges to splice (`protocol::parts`).
    Parts(Vec<Part>),
}

/// Handles one request frame. Every effect of the request (appends, offset
/// commits, group changes) has happened when this returns; only the
/// durability wait of an acks=all Produce is left in [`Reply::Later`].
/// `Err`: the connection must be closed (the error says why).
/// `client_host` is the peer's IP address (reported for group members).
/// With the reply comes the error the request is counted under in the metrics: for
/// Produce and Fetch the first partition's error, for the others 0.
pub async fn handle(frame: Bytes, client_host: &str) -> Result<(Reply, i16), FrameError> {
    let (key, _) = peek_key_version(&frame);
    if key == ApiKey::Fetch as i16 {
        return fetch_reply(frame).await;
    }
    if key != ApiKey::Produce as i16 {
        return handle_now(frame, client_host)
            .await
            .map(|r| (Reply::Now(r), 0));
    }
    let req = decode_request(frame)?;
    let (correlation_id, version) = (req.header.correlation_id, req.version);
    let (produced, error) = produce::handle(&req, decode_body(&req)?).await;
    let reply = match produced {
        produce::Produced::Nothing => Reply::Now(None),
        produce::Produced::Ready(resp) => Reply::Now(respond(&req, resp)?),
        produce::Produced::WhenDurable(resp) => Reply::Later(Box::pin(async move {
            encode(correlation_id, version, ApiKey::Produce, &resp.await)
        })),
    };
    Ok((reply, error))
}

/// Fetch: a plain frame, or one in parts when records go out from their own
/// buffers or are spliced from files.
async fn fetch_reply(frame: Bytes) -> Result<(Reply, i16), FrameError> {
    let req = decode_request(frame)?;
    let (resp, pieces) = fetch::handle(&req, decode_body(&req)?).await;
    let error = resp
        .responses
        .iter()
        .flat_map(|t| t.partitions.iter())
        .map(|p| p.error_code)
        .find(|c| *c != 0)
        .unwrap_or(resp.error_code);
    if pieces.is_empty() {
        return respond(&req, resp).map(|r| (Reply::Now(r), error));
    }
    encode_response_parts(req.header.correlation_id, req.version, &resp, pieces)
        .map(|parts| (Reply::Parts(parts), error))
        .map_err(|e| FrameError::Malformed {
            what: "response",
            detail: format!("Fetch: {e}"),
        })
}

/// Every request but Produce and Fetch: answered in full before the next is read.
async fn handle_now(frame: Bytes, client_host: &str) -> Result<Option<Bytes>, FrameError> {
    let (key, version) = peek_key_version(&frame);
    if key == ApiKey::ApiVersions as i16 {
        if let Some(resp) = api_versions::unsupported_version_response(&frame, version) {
            return Ok(Some(resp));
        }
    }
    let req = decode_request(frame)?;
    match req.api_key {
        ApiKey::ApiVersions => respond(&req, api_versions::handle(decode_body(&req)?)),
        ApiKey::Metadata => {
            let body: kafka_protocol::messages::MetadataRequest = decode_body(&req)?;
            // Topic names are nullable only from v10 (topic ids); the decoder
            // accepts null in every version, Kafka refuses it before v10.
            if req.version < 10 && body.topics.iter().flatten().any(|t| t.name.is_none()) {
                return Err(FrameError::Malformed {
                    what: "request body",
                    detail: format!("Metadata v{}: null topic name", req.version),
                });
            }
            respond(&req, metadata::handle(&req, body).await)
        }
        ApiKey::ListOffsets => respond(&req, list_offsets::handle(&req, decode_body(&req)?).await),
        ApiKey::CreateTopics => respond(
            &req,
            admin_topics::create_topics(&req, decode_body(&req)?).await,
        ),
        ApiKey::DeleteTopics => respond(
            &req,
            admin_topics::delete_topics(&req, decode_body(&req)?).await,
        ),
        ApiKey::CreatePartitions => respond(
            &req,
            admin_topics::create_partitions(decode_body(&req)?).await,
        ),
        ApiKey::DescribeConfigs => respond(&req, admin_configs::describe(&req, decode_body(&req)?)),
        ApiKey::AlterConfigs => respond(&req, admin_configs::alter(decode_body(&req)?).await),
        ApiKey::IncrementalAlterConfigs => respond(
            &req,
            admin_configs::incremental_alter(decode_body(&req)?).await,
        ),
        ApiKey::DescribeCluster => {
            respond(&req, describe_cluster::handle(&req, decode_body(&req)?))
        }
        ApiKey::DescribeQuorum => respond(&req, describe_quorum::handle(&req, decode_body(&req)?)),
        ApiKey::OffsetForLeaderEpoch => respond(
            &req,
            offset_for_leader_epoch::handle(&req, decode_body(&req)?).await,
        ),
        ApiKey::ElectLeaders => respond(
            &req,
            admin_partitions::elect_leaders(&req, decode_body(&req)?).await,
        ),
        ApiKey::AlterPartitionReassignments => respond(
            &req,
            admin_partitions::alter_reassignments(&req, decode_body(&req)?).await,
        ),
        ApiKey::ListPartitionReassignments => respond(
            &req,
            admin_partitions::list_reassignments(decode_body(&req)?),
        ),
        ApiKey::AlterReplicaLogDirs => respond(&req, describe_log_dirs::alter(decode_body(&req)?)),
        ApiKey::DescribeLogDirs => respond(
            &req,
            describe_log_dirs::handle(&req, decode_body(&req)?).await,
        ),
        ApiKey::InitProducerId => respond(
            &req,
            init_producer_id::handle(&req, decode_body(&req)?).await,
        ),
        ApiKey::AddPartitionsToTxn => {
            respond(&req, txn::add_partitions(&req, decode_body(&req)?).await)
        }
        ApiKey::AddOffsetsToTxn => respond(&req, txn::add_offsets(&req, decode_body(&req)?).await),
        ApiKey::EndTxn => respond(&req, txn::end_txn(&req, decode_body(&req)?).await),
        ApiKey::TxnOffsetCommit => {
            respond(&req, txn::txn_offset_commit(&req, decode_body(&req)?).await)
        }
        ApiKey::DescribeTransactions => respond(&req, txn::describe(decode_body(&req)?).await),
        ApiKey::ListTransactions => respond(&req, txn::list(&req, decode_body(&req)?).await),
        ApiKey::DescribeProducers => {
            respond(&req, txn::describe_producers(decode_body(&req)?).await)
        }
        ApiKey::WriteTxnMarkers => respond(&req, txn::write_txn_markers(decode_body(&req)?).await),
        ApiKey::FindCoordinator => respond(
            &req,
            groups::find_coordinator(&req, decode_body(&req)?).await,
        ),
        ApiKey::JoinGroup => respond(
            &req,
            groups::join_group(&req, decode_body(&req)?, client_host).await,
        ),
        ApiKey::SyncGroup => respond(&req, groups::sync_group(&req, decode_body(&req)?).await),
        ApiKey::Heartbeat => respond(&req, groups::heartbeat(&req, decode_body(&req)?).await),
        ApiKey::LeaveGroup => respond(&req, groups::leave_group(&req, decode_body(&req)?).await),
        ApiKey::OffsetCommit => {
            respond(&req, groups::offset_commit(&req, decode_body(&req)?).await)
        }
        ApiKey::OffsetFetch => respond(&req, groups::offset_fetch(&req, decode_body(&req)?).await),
        ApiKey::ListGroups => respond(&req, groups::list_groups(&req, decode_body(&req)?).await),
        ApiKey::DescribeGroups => respond(
            &req,
            groups::describe_groups(&req, decode_body(&req)?).await,
        ),
        ApiKey::DeleteGroups => respond(&req, groups::delete_groups(decode_body(&req)?).await),
        ApiKey::OffsetDelete => respond(&req, groups::offset_delete(decode_body(&req)?).await),
        other => Err(FrameError::UnsupportedVersion {
            api: other,
            version: req.version,
            min: -1,
            max: -1,
        }),
    }
}

fn respond<R: Encodable + HeaderVersion>(
    req: &Request,
    body: R,
) -> Result<Option<Bytes>, FrameError> {
    encode(req.header.correlation_id, req.version, req.api_key, &body)
}

fn encode<R: Encodable + HeaderVersion>(
    correlation_id: i32,
    version: i16,
    api: ApiKey,
    body: &R,
) -> Result<Option<Bytes>, FrameError> {
    encode_response(correlation_id, version, body)
        .map(Some)
        .map_err(|e| FrameError::Malformed {
            what: "response",
            detail: format!("{api:?}: {e}"),
        })
}

/// Topic name as a String (names were validated UTF-8 by the codec).
pub(crate) fn topic_str(name: &TopicName) -> String {
    name.0.as_str().to_string()
}

pub(crate) fn topic_name(s: &str) -> TopicName {
    TopicName(StrBytes::from_string(s.to_string()))
}

pub(crate) fn str_bytes(s: &str) -> StrBytes {
    StrBytes::from_string(s.to_string())
}

/// Groups items by the shard that owns them, keeping request order within each.
/// Runs `on_owner` on each shard with the items it owns (`work`: (shard, item)) and puts
/// each (slot, answer) it returns into `answers`. A failed hop leaves its slots `None`
/// (logged, naming `what`).
pub(crate) async fn gather_on_owners<I, A, Fut>(
    work: Vec<(usize, I)>,
    answers: &mut [Option<A>],
    what: &str,
    on_owner: fn(Vec<I>) -> Fut,
) where
    I: Send + 'static,
    A: Send + 'static,
    Fut: std::future::Future<Output = Vec<(usize, A)>> + 'static,
{
    let calls = by_shard(work)
        .into_iter()
        .map(|(shard, items)| crate::runtime::submit_to(shard, move || on_owner(items)));
    for r in futures::future::join_all(calls).await {
        match r {
            Ok(v) => {
                for (slot, a) in v {
                    if let Some(at) = answers.get_mut(slot) {
                        *at = Some(a);
                    }
                }
            }
            Err(e) => tracing::error!(error = %e, "{what} hop failed"),
        }
    }
}

/// How long a coordinator request waits for its partition's state to load (a broker that
/// just took over, or a partition just created) before answering
/// COORDINATOR_LOAD_IN_PROGRESS.
const LOAD_WAIT: std::time::Duration = std::time::Duration::from_secs(2);

/// Waits (bounded by [`LOAD_WAIT`]) until `ready()`; false if it never was.
pub(crate) async fn wait_loaded(ready: impl Fn() -> bool) -> bool {
    let deadline = std::time::Instant::now() + LOAD_WAIT;
    while !ready() {
        if std::time::Instant::now() >= deadline {
            return false;
        }
        crate::runtime::sleep(std::time::Duration::from_millis(5)).await;
    }
    true
}

pub(crate) fn by_shard<T>(items: Vec<(usize, T)>) -> BTreeMap<usize, Vec<T>> {
    let mut out: BTreeMap<usize, Vec<T>> = BTreeMap::new();
    for (shard, item) in items {
        out.entry(shard).or_default().push(item);
    }
    out
}

/// Host and port clients should use to reach this broker.
/// NOT_COORDINATOR unless this broker leads the coordinator's internal partition (always
/// true on a single node).
pub(crate) fn check_coordinator(topic: &str, partition: i32) -> Result<(), i16> {
    if !crate::cluster::multi_node() {
        return Ok(());
    }
    let me = crate::cluster::partition_manager::broker_config().node_id;
    if crate::cluster::leader_of(&crate::cluster::image(), topic, partition) == me {
        Ok(())
    } else {
        Err(kafka_protocol::error::ResponseError::NotCoordinator.code())
    }
}

pub(crate) fn advertised() -> (String, i32) {
    let cfg = crate::cluster::partition_manager::broker_config();
    match cfg.advertised.rsplit_once(':') {
        Some((h, p)) => (
            h.trim_matches(['[', ']']).to_string(),
            p.parse().unwrap_or(9092),
        ),
        None => (cfg.advertised.clone(), 9092),
    }
}

#[allow(dead_code)]
fn _assert_decodable<T: Decodable>() {}
