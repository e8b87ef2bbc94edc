//! DescribeQuorum (KIP-595, KIP-853): the metadata quorum as this node sees it:
//! its leader and epoch (the Raft term), the committed index as the high
//! watermark, each voter and observer (broker-only learners) with how far its
//! log is known to reach and when the leader last heard from it, and (v2) the
//! voters' CONTROLLER endpoints. Offsets here are metadata-log indexes, not
//! Kafka record offsets. Only the leader knows the other replicas' progress:
//! another node answers -1 for them (Kafka forwards the request to the active
//! controller instead).

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::describe_quorum_response::{
    Listener, Node, PartitionData, ReplicaState, TopicData,
};
use kafka_protocol::messages::{DescribeQuorumRequest, DescribeQuorumResponse};

use super::str_bytes;
use crate::cluster::quorum::{PeerStatus, QuorumStatus};
use crate::protocol::Request;

/// The metadata log's topic name, as Kafka's.
pub const METADATA_TOPIC: &str = "__cluster_metadata";

pub fn handle(req: &Request, body: DescribeQuorumRequest) -> DescribeQuorumResponse {
    let mut resp = DescribeQuorumResponse::default();
    let Some(q) = crate::cluster::quorum_handle() else {
        resp.error_code = ResponseError::NotController.code();
        return resp;
    };
    let st = q.status();
    let now = crate::runtime::now_ms();
    for t in &body.topics {
        let mut td = TopicData::default();
        td.topic_name = t.topic_name.clone();
        for p in &t.partitions {
            let mut pd = if t.topic_name.as_str() == METADATA_TOPIC && p.partition_index == 0 {
                partition(&st, now, req.version)
            } else {
                let mut pd = PartitionData::default();
                pd.error_code = ResponseError::UnknownTopicOrPartition.code();
                pd
            };
            pd.partition_index = p.partition_index;
            td.partitions.push(pd);
        }
        resp.topics.push(td);
    }
    if req.version >= 2 {
        resp.nodes = st
            .peers
            .iter()
            .filter(|p| p.voter)
            .filter_map(|p| {
                let (host, port) = p.addr.rsplit_once(':')?;
                let mut l = Listener::default();
                l.name = str_bytes("CONTROLLER");
                l.host = str_bytes(host.trim_matches(['[', ']']));
                l.port = port.parse().ok()?;
                let mut n = Node::default();
                n.node_id = (p.id as i32).into();
                n.listeners = vec![l];
                Some(n)
            })
            .collect();
    }

    resp
}

fn replica(st: &QuorumStatus, p: &PeerStatus, now: i64) -> ReplicaState {
    let mut r = ReplicaState::default();
    r.replica_id = (p.id as i32).into();
    let me = p.id == st.node_id;
    r.log_end_offset = if me {
        st.last_log_index as i64
    } else {
        p.match_index.map_or(-1, |m| m as i64)
    };
    let heard = if me && st.leader == Some(st.node_id) {
        Some(now)
    } else {
        p.last_ack_ms_ago.map(|ms| now - ms as i64)
    };
    r.last_fetch_timestamp = heard.unwrap_or(-1);
    r.last_caught_up_timestamp = heard.unwrap_or(-1);
    r
}

fn partition(st: &QuorumStatus, now: i64, _version: i16) -> PartitionData {
    let mut pd = PartitionData::default();
    pd.leader_id = st.leader.map_or(-1, |l| l as i32).into();
    pd.leader_epoch = st.term as i32;
    pd.high_watermark = st.committed_index as i64;
    pd.current_voters = st
        .peers
        .iter()
        .filter(|p| p.voter)
        .map(|p| replica(st, p, now))
        .collect();
    pd.observers = st
        .peers
        .iter()
        .filter(|p| !p.voter)
        .map(|p| replica(st, p, now))
        .collect();
    pd
}
