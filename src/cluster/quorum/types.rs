//! The openraft type configuration of the controller quorum, and short aliases for the openraft
//! types the other files of this module use.
//!
//! A log entry's application data is opaque bytes (`Payload`): the broker's metadata records,
//! already encoded by the broker. The state machine answers nothing (`R = ()`): a proposal's
//! result is its log index.

use std::fmt;

use openraft::BasicNode;
use serde::{Deserialize, Serialize};

/// One proposal's bytes, as the broker gave them to `Quorum::propose`.
#[derive(Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Payload(pub Vec<u8>);

impl fmt::Debug for Payload {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Payload({} bytes)", self.0.len())
    }
}

impl fmt::Display for Payload {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} bytes", self.0.len())
    }
}

openraft::declare_raft_types!(
    /// The quorum's openraft types: u64 node ids, "host:port" nodes, opaque payloads, tokio.
    pub TypeConfig:
        D = Payload,
        R = (),
        NodeId = u64,
        Node = BasicNode,
);

/// The default (advanced) leader id: a term and the node elected in it.
pub type LeaderId = openraft::impls::leader_id_adv::LeaderId<u64, u64>;
pub type LogId = openraft::LogId<LeaderId>;
pub type Vote = openraft::Vote<LeaderId>;
pub type Entry = openraft::Entry<LeaderId, openraft::EntryPayload<Payload, u64, BasicNode>>;
pub type Membership = openraft::Membership<u64, BasicNode>;
pub type StoredMembership = openraft::StoredMembership<LeaderId, u64, BasicNode>;
pub type SnapshotMeta = openraft::SnapshotMeta<LeaderId, u64, BasicNode>;
/// A snapshot as openraft moves it: metadata and the broker state machine's bytes.
pub type Snapshot = openraft::Snapshot<LeaderId, u64, BasicNode, Vec<u8>>;
pub type Raft = openraft::Raft<TypeConfig, super::machine::MachineAdapter>;
pub type Metrics = openraft::RaftMetrics<TypeConfig>;

/// The log id of an index written by the leader of `term` that is node `node_id`.
pub fn log_id(term: u64, node_id: u64, index: u64) -> LogId {
    openraft::LogId::new(openraft::vote::RaftLeaderId::new(term, node_id), index)
}
