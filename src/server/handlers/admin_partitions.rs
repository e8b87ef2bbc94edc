//! ElectLeaders, AlterPartitionReassignments and ListPartitionReassignments: the
//! operator's handles on partition leadership and placement, translated to the
//! controller's changes (`cluster/controller.rs`, `cluster/election.rs`) and its
//! refusals back to Kafka errors. Any broker answers them (each forwards its
//! proposals to the quorum's leader), as Kafka's brokers forward them to the
//! active controller.

use std::collections::{BTreeMap, HashSet};

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::alter_partition_reassignments_response::{
    ReassignablePartitionResponse, ReassignableTopicResponse,
};
use kafka_protocol::messages::elect_leaders_response::{PartitionResult, ReplicaElectionResult};
use kafka_protocol::messages::list_partition_reassignments_response::{
    OngoingPartitionReassignment, OngoingTopicReassignment,
};
use kafka_protocol::messages::{
    AlterPartitionReassignmentsRequest, AlterPartitionReassignmentsResponse, BrokerId,
    ElectLeadersRequest, ElectLeadersResponse, ListPartitionReassignmentsRequest,
    ListPartitionReassignmentsResponse,
};

use super::{str_bytes, topic_name, topic_str};
use crate::cluster::controller::{self, PartitionKey, Refusal};
use crate::cluster::election::ElectionType;
use crate::cluster::image;
use crate::protocol::Request;

fn refusal_parts(r: &Result<(), Refusal>) -> (i16, Option<String>) {
    match r {
        Ok(()) => (0, None),
        Err(e) => (e.code, Some(e.message.clone())),
    }
}

pub async fn elect_leaders(req: &Request, body: ElectLeadersRequest) -> ElectLeadersResponse {
    let mut resp = ElectLeadersResponse::default();
    let Some(kind) = ElectionType::from_code(body.election_type) else {
        // v0 has no top-level error: every named partition gets the error instead.
        let code = ResponseError::InvalidRequest.code();
        if req.version >= 1 {
            resp.error_code = code;
        }
        for t in body.topic_partitions.unwrap_or_default() {
            let mut r = ReplicaElectionResult::default();
            r.topic = t.topic.clone();
            r.partition_result = t
                .partitions
                .iter()
                .map(|p| {
                    let mut pr = PartitionResult::default();
                    pr.partition_id = *p;
                    pr.error_code = code;
                    pr.error_message = Some(str_bytes(&format!(
                        "unknown election type {}",
                        body.election_type
                    )));
                    pr
                })
                .collect();
            resp.replica_election_results.push(r);
        }
        return resp;
    };
    let keys: Option<Vec<PartitionKey>> = body.topic_partitions.map(|ts| {
        let mut seen = HashSet::new();
        ts.iter()
            .flat_map(|t| {
                let name = topic_str(&t.topic);
                t.partitions
                    .iter()
                    .map(move |p| (name.clone(), *p))
                    .collect::<Vec<_>>()
            })
            .filter(|k| seen.insert(k.clone()))
            .collect()
    });
    let results = controller::elect_leaders(kind, keys).await;
    let mut by_topic: BTreeMap<String, Vec<PartitionResult>> = BTreeMap::new();
    for ((topic, index), r) in results {
        let (code, message) = refusal_parts(&r);
        let mut pr = PartitionResult::default();
        pr.partition_id = index;
        pr.error_code = code;
        pr.error_message = message.map(|m| str_bytes(&m));
        by_topic.entry(topic).or_default().push(pr);
    }
    resp.replica_election_results = by_topic
        .into_iter()
        .map(|(topic, partition_result)| {
            let mut r = ReplicaElectionResult::default();
            r.topic = topic_name(&topic);
            r.partition_result = partition_result;
            r
        })
        .collect();
    resp
}

pub async fn alter_reassignments(
    req: &Request,
    body: AlterPartitionReassignmentsRequest,
) -> AlterPartitionReassignmentsResponse {
    let mut resp = AlterPartitionReassignmentsResponse::default();
    resp.allow_replication_factor_change = body.allow_replication_factor_change;
    // KIP-860: from v1 a client may forbid a change of the replica count.
    let fixed_rf = req.version >= 1 && !body.allow_replication_factor_change;
    let img = image();
    let mut items = Vec::new();
    // (topic, partition, early refusal) in request order.
    let mut order: Vec<(String, i32, Option<Refusal>)> = Vec::new();
    let mut seen = HashSet::new();
    for t in &body.topics {
        let name = topic_str(&t.name);
        for p in &t.partitions {
            let target: Option<Vec<i32>> = p
                .replicas
                .as_ref()
                .map(|rs| rs.iter().map(|b| b.0).collect());
            let early = if !seen.insert((name.clone(), p.partition_index)) {
                Some(Refusal::new(
                    ResponseError::InvalidRequest,
                    format!("{name}-{} is named twice in the request", p.partition_index),
                ))
            } else {
                match (img.partition(&name, p.partition_index), &target) {
                    (Some((_, pm)), Some(target))
                        if fixed_rf && target.len() != pm.target_replicas().len() =>
                    {
                        Some(Refusal::new(
                            ResponseError::InvalidReplicationFactor,
                            format!(
                                "{name}-{} has {} replicas; the request asks for {} and does not allow the replication factor to change",
                                p.partition_index,
                                pm.target_replicas().len(),
                                target.len()
                            ),
                        ))
                    }
                    _ => None,
                }
            };
            if early.is_none() {
                items.push(((name.clone(), p.partition_index), target));
            }
            order.push((name.clone(), p.partition_index, early));
        }
    }
    let mut results = controller::alter_reassignments(items).await.into_iter();
    let mut by_topic: Vec<(String, Vec<ReassignablePartitionResponse>)> = Vec::new();
    for (topic, index, early) in order {
        let r = match early {
            Some(e) => Err(e),
            None => results.next().unwrap_or_else(|| {
                Err(Refusal::new(
                    ResponseError::UnknownServerError,
                    "missing outcome",
                ))
            }),
        };
        let (code, message) = refusal_parts(&r);
        let mut pr = ReassignablePartitionResponse::default();
        pr.partition_index = index;
        pr.error_code = code;
        pr.error_message = message.map(|m| str_bytes(&m));
        match by_topic.iter_mut().find(|(t, _)| *t == topic) {
            Some((_, ps)) => ps.push(pr),
            None => by_topic.push((topic, vec![pr])),
        }
    }
    resp.responses = by_topic
        .into_iter()
        .map(|(topic, partitions)| {
            let mut r = ReassignableTopicResponse::default();
            r.name = topic_name(&topic);
            r.partitions = partitions;
            r
        })
        .collect();
    resp
}

pub fn list_reassignments(
    body: ListPartitionReassignmentsRequest,
) -> ListPartitionReassignmentsResponse {
    let keys: Option<Vec<PartitionKey>> = body.topics.map(|ts| {
        ts.iter()
            .flat_map(|t| {
                let name = topic_str(&t.name);
                t.partition_indexes
                    .iter()
                    .map(move |p| (name.clone(), *p))
                    .collect::<Vec<_>>()
            })
            .collect()
    });
    let ids = |v: &[i32]| v.iter().map(|b| BrokerId(*b)).collect::<Vec<_>>();
    let mut by_topic: BTreeMap<String, Vec<OngoingPartitionReassignment>> = BTreeMap::new();
    for r in controller::list_reassignments(keys.as_deref()) {
        let mut p = OngoingPartitionReassignment::default();
        p.partition_index = r.partition;
        p.replicas = ids(&r.replicas);
        p.adding_replicas = ids(&r.adding);
        p.removing_replicas = ids(&r.removing);
        by_topic.entry(r.topic).or_default().push(p);
    }
    let mut resp = ListPartitionReassignmentsResponse::default();
    resp.topics = by_topic
        .into_iter()
        .map(|(topic, partitions)| {
            let mut t = OngoingTopicReassignment::default();
            t.name = topic_name(&topic);
            t.partitions = partitions;
            t
        })
        .collect();
    resp
}
