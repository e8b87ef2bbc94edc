//! Transaction APIs: AddPartitionsToTxn, AddOffsetsToTxn, EndTxn,
//! TxnOffsetCommit, DescribeTransactions, ListTransactions, DescribeProducers,
//! and WriteTxnMarkers, which a transaction coordinator sends to the leader of
//! its partitions (InitProducerId with a transactional id is in
//! `init_producer_id.rs`). Each transactional id's part runs on its
//! coordinator shard (`txn::coordinator`); TxnOffsetCommit runs on the group's
//! coordinator shard; a marker is written on its partition's owner shard
//! (`txn::marker_writer`).

use std::future::Future;

use kafka_protocol::error::ResponseError as E;
use kafka_protocol::messages::add_partitions_to_txn_response::{
    AddPartitionsToTxnPartitionResult, AddPartitionsToTxnResult, AddPartitionsToTxnTopicResult,
};
use kafka_protocol::messages::describe_transactions_response::{TopicData, TransactionState};
use kafka_protocol::messages::list_transactions_response::TransactionState as ListedState;
use kafka_protocol::messages::txn_offset_commit_response::{
    TxnOffsetCommitResponsePartition, TxnOffsetCommitResponseTopic,
};
use kafka_protocol::messages::*;
use kafka_protocol::protocol::StrBytes;

use super::{str_bytes, topic_name, topic_str};
use crate::group::coordinator::CommitItem;
use crate::protocol::Request;
use crate::runtime;
use crate::txn::coordinator;
use crate::txn::describe::ListFilter;
use crate::txn::marker_writer::{self, MarkerSpec};

fn s(v: &StrBytes) -> String {
    v.as_str().to_string()
}

/// Runs `f` on the coordinator shard of `transactional_id`. Err: a Kafka code.
pub(crate) async fn on_txn_coordinator<T, F, Fut>(transactional_id: &str, f: F) -> Result<T, i16>
where
    T: Send + 'static,
    F: FnOnce() -> Fut + Send + 'static,
    Fut: Future<Output = T> + 'static,
{
    coordinator::ensure_topic().await?;
    let shard = coordinator::locate(transactional_id).ok_or(E::CoordinatorNotAvailable.code())?;
    let partition = coordinator::partition_of(transactional_id);
    if let Some(p) = partition {
        super::check_coordinator(crate::txn::TXN_STATE_TOPIC, p)?;
    }
    runtime::submit_to(shard, move || async move {
        let ready = || partition.map_or(coordinator::loaded(), coordinator::loaded_partition);
        if !super::wait_loaded(ready).await {
            return Err(E::CoordinatorLoadInProgress.code());
        }
        Ok(f().await)
    })
    .await
    .map_err(|_| E::CoordinatorNotAvailable.code())?
}

type TopicParts = Vec<(String, Vec<i32>)>;

/// One transaction's AddPartitionsToTxn: the code for every partition (like
/// Kafka, unknown partitions fail the request and the others are reported
/// OPERATION_NOT_ATTEMPTED).
async fn add_one(
    id: String,
    pid: i64,
    epoch: i16,
    topics: TopicParts,
    version: i16,
) -> Vec<(String, Vec<(i32, i16)>)> {
    let img = crate::cluster::image();
    let unknown = topics
        .iter()
        .any(|(t, ps)| ps.iter().any(|p| img.partition(t, *p).is_none()));
    if unknown {
        return topics
            .into_iter()
            .map(|(t, ps)| {
                let codes = ps
                    .iter()
                    .map(|p| {
                        let c = if img.partition(&t, *p).is_none() {
                            E::UnknownTopicOrPartition.code()
                        } else {
                            E::OperationNotAttempted.code()
                        };
                        (*p, c)
                    })
                    .collect();
                (t, codes)
            })
            .collect();
    }
    let parts: Vec<(String, i32)> = topics
        .iter()
        .flat_map(|(t, ps)| ps.iter().map(move |p| (t.clone(), *p)))
        .collect();
    let code = on_txn_coordinator(&id.clone(), move || {
        coordinator::add_partitions(id, pid, epoch, parts, version)
    })
    .await
    .unwrap_or_else(|c| c);
    topics
        .into_iter()
        .map(|(t, ps)| (t, ps.into_iter().map(|p| (p, code)).collect()))
        .collect()
}

fn topic_results(r: Vec<(String, Vec<(i32, i16)>)>) -> Vec<AddPartitionsToTxnTopicResult> {
    r.into_iter()
        .map(|(t, ps)| {
            AddPartitionsToTxnTopicResult::default()
                .with_name(topic_name(&t))
                .with_results_by_partition(
                    ps.into_iter()
                        .map(|(p, c)| {
                            AddPartitionsToTxnPartitionResult::default()
                                .with_partition_index(p)
                                .with_partition_error_code(c)
                        })
                        .collect(),
                )
        })
        .collect()
}

pub async fn add_partitions(
    req: &Request,
    body: AddPartitionsToTxnRequest,
) -> AddPartitionsToTxnResponse {
    let v = req.version;
    let mut resp = AddPartitionsToTxnResponse::default();
    let parts = |topics: &[add_partitions_to_txn_request::AddPartitionsToTxnTopic]| -> TopicParts {
        topics
            .iter()
            .map(|t| (topic_str(&t.name), t.partitions.clone()))
            .collect()
    };
    if v <= 3 {
        let r = add_one(
            s(&body.v3_and_below_transactional_id.0),
            body.v3_and_below_producer_id.0,
            body.v3_and_below_producer_epoch,
            parts(&body.v3_and_below_topics),
            v,
        )
        .await;
        resp.results_by_topic_v3_and_below = topic_results(r);
        return resp;
    }
    for t in &body.transactions {
        if t.verify_only {
            // KIP-890 verification is not implemented: say so per partition.
            let r = parts(&t.topics)
                .into_iter()
                .map(|(n, ps)| {
                    (
                        n,
                        ps.into_iter()
                            .map(|p| (p, E::InvalidRequest.code()))
                            .collect(),
                    )
                })
                .collect();
            resp.results_by_transaction.push(
                AddPartitionsToTxnResult::default()
                    .with_transactional_id(t.transactional_id.clone())
                    .with_topic_results(topic_results(r)),
            );
            continue;
        }
        let r = add_one(
            s(&t.transactional_id.0),
            t.producer_id.0,
            t.producer_epoch,
            parts(&t.topics),
            v,
        )
        .await;
        resp.results_by_transaction.push(
            AddPartitionsToTxnResult::default()
                .with_transactional_id(t.transactional_id.clone())
                .with_topic_results(topic_results(r)),
        );
    }
    resp
}

pub async fn add_offsets(req: &Request, body: AddOffsetsToTxnRequest) -> AddOffsetsToTxnResponse {
    let v = req.version;
    let id = s(&body.transactional_id.0);
    let group = s(&body.group_id.0);
    let (pid, epoch) = (body.producer_id.0, body.producer_epoch);
    let code = match crate::group::ensure_offsets_topic().await {
        Err(c) => c,
        Ok(()) => on_txn_coordinator(&id.clone(), move || {
            coordinator::add_offsets(id, pid, epoch, group, v)
        })
        .await
        .unwrap_or_else(|c| c),
    };
    AddOffsetsToTxnResponse::default().with_error_code(code)
}

pub async fn end_txn(req: &Request, body: EndTxnRequest) -> EndTxnResponse {
    let v = req.version;
    let id = s(&body.transactional_id.0);
    let (pid, epoch, commit) = (body.producer_id.0, body.producer_epoch, body.committed);
    let code = on_txn_coordinator(&id.clone(), move || {
        coordinator::end_txn(id, pid, epoch, commit, v)
    })
    .await
    .unwrap_or_else(|c| c);
    let mut resp = EndTxnResponse::default().with_error_code(code);
    if v >= 5 {
        resp.producer_id = ProducerId(-1);
        resp.producer_epoch = -1;
    }
    resp
}

pub async fn txn_offset_commit(
    req: &Request,
    body: TxnOffsetCommitRequest,
) -> TxnOffsetCommitResponse {
    let v = req.version;
    let group = s(&body.group_id.0);
    let mut items = Vec::new();
    for t in &body.topics {
        for p in &t.partitions {
            items.push(CommitItem {
                topic: topic_str(&t.name),
                partition: p.partition_index,
                offset: p.committed_offset,
                leader_epoch: if v >= 2 { p.committed_leader_epoch } else { -1 },
                metadata: p.committed_metadata.as_ref().map(s),
            });
        }
    }
    let n = items.len();
    let producer = (body.producer_id.0, body.producer_epoch);
    let (member, inst, gen) = if v >= 3 {
        (
            s(&body.member_id),
            body.group_instance_id.as_ref().map(s),
            body.generation_id,
        )
    } else {
        (String::new(), None, -1)
    };
    let g = group.clone();
    let codes = match super::groups::on_group_coordinator(&group, move || {
        crate::group::coordinator::txn_commit(g, producer, member, inst, gen, items)
    })
    .await
    {
        Ok(Ok(c)) => c,
        Ok(Err(c)) | Err(c) => vec![c; n],
    };
    let mut codes = codes.into_iter();
    let topics = body
        .topics
        .iter()
        .map(|t| {
            TxnOffsetCommitResponseTopic::default()
                .with_name(t.name.clone())
                .with_partitions(
                    t.partitions
                        .iter()
                        .map(|p| {
                            TxnOffsetCommitResponsePartition::default()
                                .with_partition_index(p.partition_index)
                                .with_error_code(codes.next().unwrap_or(0))
                        })
                        .collect(),
                )
        })
        .collect();
    TxnOffsetCommitResponse::default().with_topics(topics)
}

pub async fn describe(body: DescribeTransactionsRequest) -> DescribeTransactionsResponse {
    let mut resp = DescribeTransactionsResponse::default();
    for tid in &body.transactional_ids {
        let id = s(&tid.0);
        let i = id.clone();
        let mut st = TransactionState::default()
            .with_transactional_id(tid.clone())
            .with_producer_id(ProducerId(-1))
            .with_producer_epoch(-1)
            .with_transaction_start_time_ms(-1);
        match on_txn_coordinator(&id, move || async move { coordinator::describe(i) }).await {
            Ok(Ok(d)) => {
                st.transaction_state = str_bytes(d.state);
                st.transaction_timeout_ms = d.txn_timeout_ms;
                st.transaction_start_time_ms = d.txn_start_ms;
                st.producer_id = ProducerId(d.producer_id);
                st.producer_epoch = d.producer_epoch;
                st.topics = d
                    .topics
                    .into_iter()
                    .map(|(t, ps)| {
                        TopicData::default()
                            .with_topic(topic_name(&t))
                            .with_partitions(ps)
                    })
                    .collect();
            }
            Ok(Err(c)) | Err(c) => st.error_code = c,
        }
        resp.transaction_states.push(st);
    }
    resp
}

pub async fn list(req: &Request, body: ListTransactionsRequest) -> ListTransactionsResponse {
    let filter = ListFilter {
        states: body.state_filters.iter().map(s).collect(),
        producer_ids: body.producer_id_filters.iter().map(|p| p.0).collect(),
        duration_filter_ms: if req.version >= 1 {
            body.duration_filter
        } else {
            -1
        },
    };
    let mut resp = ListTransactionsResponse::default();
    if let Err(c) = coordinator::ensure_topic().await {
        resp.error_code = c;
        return resp;
    }
    let mut all = Vec::new();
    let mut unknown = Vec::new();
    for shard in 0..runtime::nr_shards() {
        let f = filter.clone();
        let listed = runtime::submit_to(shard, move || async move {
            coordinator::loaded().then(|| coordinator::list(&f))
        })
        .await;
        match listed {
            Ok(Some(l)) => {
                all.extend(l.transactions);
                unknown = l.unknown_state_filters;
            }
            Ok(None) => resp.error_code = E::CoordinatorLoadInProgress.code(),
            Err(_) => resp.error_code = E::CoordinatorNotAvailable.code(),
        }
    }
    all.sort_by(|a, b| a.transactional_id.cmp(&b.transactional_id));
    resp.unknown_state_filters = unknown.iter().map(|u| str_bytes(u)).collect();
    resp.transaction_states = all
        .into_iter()
        .map(|l| {
            ListedState::default()
                .with_transactional_id(TransactionalId(str_bytes(&l.transactional_id)))
                .with_producer_id(ProducerId(l.producer_id))
                .with_transaction_state(str_bytes(l.state))
        })
        .collect();
    resp
}

/// DescribeProducers: the producer state of each partition (on its owner shard).
pub async fn describe_producers(body: DescribeProducersRequest) -> DescribeProducersResponse {
    use kafka_protocol::messages::describe_producers_response::{
        PartitionResponse, ProducerState, TopicResponse,
    };
    let shards = runtime::nr_shards();
    let img = crate::cluster::image();
    let mut resp = DescribeProducersResponse::default();
    for t in &body.topics {
        let topic = topic_str(&t.name);
        let mut out = TopicResponse::default().with_name(t.name.clone());
        for &p in &t.partition_indexes {
            let mut pr = PartitionResponse::default().with_partition_index(p);
            if img.partition(&topic, p).is_none() {
                pr.error_code = E::UnknownTopicOrPartition.code();
                out.partitions.push(pr);
                continue;
            }
            let tn = topic.clone();
            let owner = crate::cluster::owner_shard(&topic, p, shards);
            let listed = runtime::submit_to(owner, move || async move {
                match crate::cluster::partition_manager::get(&tn, p).await {
                    Ok(Some(part)) => Ok(part.log.producers()),
                    Ok(None) => Err(E::UnknownTopicOrPartition.code()),
                    Err(e) => Err(super::produce::storage_error(&e).code()),
                }
            })
            .await;
            match listed {
                Ok(Ok(ps)) => {
                    pr.active_producers = ps
                        .into_iter()
                        .map(|s| {
                            ProducerState::default()
                                .with_producer_id(ProducerId(s.producer_id))
                                .with_producer_epoch(i32::from(s.epoch))
                                .with_last_sequence(s.last_sequence)
                                .with_last_timestamp(s.last_timestamp)
                                .with_coordinator_epoch(s.coordinator_epoch)
                                .with_current_txn_start_offset(s.current_txn_start_offset)
                        })
                        .collect()
                }
                Ok(Err(c)) => pr.error_code = c,
                Err(_) => pr.error_code = E::NotLeaderOrFollower.code(),
            }
            out.partitions.push(pr);
        }
        resp.topics.push(out);
    }
    resp
}

/// One partition's marker, as sent to its owner shard: (answer slot, topic, partition, marker).
type MarkerWork = (usize, String, i32, MarkerSpec);

/// WriteTxnMarkers: a transaction coordinator (this broker's or another's) asks this broker,
/// as the partitions' leader, to write each marker on its partitions. Answers a code per
/// partition: UNKNOWN_TOPIC_OR_PARTITION, NOT_LEADER_OR_FOLLOWER (checked first, as Kafka's
/// replica manager does), else the outcome of the acks=all marker write
/// (`marker_writer::write_here`: NOT_ENOUGH_REPLICAS, KAFKA_STORAGE_ERROR,
/// INVALID_PRODUCER_EPOCH, REQUEST_TIMED_OUT, ...). Kafka restricts the API to brokers
/// (CLUSTER_ACTION); Sluice has no authorization, so any client may send it.
pub async fn write_txn_markers(body: WriteTxnMarkersRequest) -> WriteTxnMarkersResponse {
    use kafka_protocol::messages::write_txn_markers_response::{
        WritableTxnMarkerPartitionResult, WritableTxnMarkerResult, WritableTxnMarkerTopicResult,
    };
    let img = crate::cluster::image();
    let me = crate::cluster::partition_manager::broker_config().node_id;
    let multi = crate::cluster::multi_node();
    let shards = runtime::nr_shards();
    let mut answers: Vec<Option<i16>> = Vec::new();
    let mut work: Vec<(usize, MarkerWork)> = Vec::new();
    for m in &body.markers {
        let spec = MarkerSpec {
            producer_id: m.producer_id.0,
            producer_epoch: m.producer_epoch,
            commit: m.transaction_result,
            coordinator_epoch: m.coordinator_epoch,
        };
        for t in &m.topics {
            let topic = topic_str(&t.name);
            for &p in &t.partition_indexes {
                let slot = answers.len();
                let early = if img.partition(&topic, p).is_none() {
                    Some(E::UnknownTopicOrPartition.code())
                } else if multi && crate::cluster::leader_of(&img, &topic, p) != me {
                    Some(E::NotLeaderOrFollower.code())
                } else {
                    let shard = crate::cluster::owner_shard(&topic, p, shards);
                    work.push((shard, (slot, topic.clone(), p, spec)));
                    None
                };
                answers.push(early);
            }
        }
    }
    super::gather_on_owners(work, &mut answers, "WriteTxnMarkers", markers_on_owner).await;
    // A failed hop (the owner shard stopping) leaves its slots empty: retriable.
    let mut codes = answers
        .into_iter()
        .map(|a| a.unwrap_or(E::NotLeaderOrFollower.code()));
    let markers = body
        .markers
        .iter()
        .map(|m| {
            let topics = m
                .topics
                .iter()
                .map(|t| {
                    let partitions = t
                        .partition_indexes
                        .iter()
                        .map(|&p| {
                            WritableTxnMarkerPartitionResult::default()
                                .with_partition_index(p)
                                .with_error_code(
                                    codes.next().unwrap_or(E::UnknownServerError.code()),
                                )
                        })
                        .collect();
                    WritableTxnMarkerTopicResult::default()
                        .with_name(t.name.clone())
                        .with_partitions(partitions)
                })
                .collect();
            WritableTxnMarkerResult::default()
                .with_producer_id(m.producer_id)
                .with_topics(topics)
        })
        .collect();
    WriteTxnMarkersResponse::default().with_markers(markers)
}

/// On an owner shard: writes each marker (concurrently; one partition's appends stay in
/// order on its log).
async fn markers_on_owner(items: Vec<MarkerWork>) -> Vec<(usize, i16)> {
    let writes = items.into_iter().map(|(slot, topic, p, spec)| async move {
        (slot, marker_writer::write_here(&topic, p, &spec).await)
    });
    futures::future::join_all(writes).await
}
