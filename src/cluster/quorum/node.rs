//! One quorum member on its thread: the `Raft` handle plus the logic of the handle's requests
//! (propose with forwarding to the leader, waits, resign) and of the two non-openraft RPCs
//! (`ClientWrite` from a follower, `Join` from a learner), and the start-up bootstrap
//! (initialize the static voters, or join as a learner).

use std::collections::BTreeMap;
use std::time::Duration;

use openraft::async_runtime::WatchReceiver;
use openraft::errors::{ClientWriteError, InitializeError, RaftError};
use openraft::BasicNode;
use tokio::time::Instant;

use super::network::{
    CallError, ClientWriteRequest, JoinRequest, Transport, WireError, KIND_CLIENT_WRITE, KIND_JOIN,
};
use super::types::{Metrics, Payload, Raft};
use super::{NodeId, ProposeError, QuorumConfig};

/// Longest wait any request accepts (longer timeouts are cut to this).
pub const MAX_WAIT: Duration = Duration::from_secs(600);
/// Pause before retrying a proposal whose leader was not reachable or not the leader.
pub const RETRY_DELAY: Duration = Duration::from_millis(50);
/// Longest a proposal waits at once for a leader to be known before re-checking.
pub const LEADER_POLL: Duration = Duration::from_millis(250);
/// Time kept back from a forwarded proposal's budget for the answer to travel.
pub const FORWARD_MARGIN: Duration = Duration::from_millis(100);
/// First and largest pause between a learner's join attempts.
pub const JOIN_BACKOFF_MIN: Duration = Duration::from_millis(100);
pub const JOIN_BACKOFF_MAX: Duration = Duration::from_secs(2);
/// Budget of one join attempt.
pub const JOIN_RPC_TIMEOUT: Duration = Duration::from_secs(5);

/// Why a write on this node (as the leader) did not produce a log index.
enum WriteFailure {
    NotLeader(Option<NodeId>),
    /// Not committed in time, or discarded on a leader change: it may still commit.
    Unknown,
    Fatal(ProposeError),
}

/// What to do after a failed forward.
enum Forward {
    /// Try again (`reached`: a leader answered, so the deadline means Timeout, not NoLeader).
    Retry {
        reached: bool,
    },
    Final(ProposeError),
}

/// The quorum member, shared by the thread's tasks.
pub struct Node {
    pub id: NodeId,
    pub raft: Raft,
    pub cfg: QuorumConfig,
    pub transport: Transport,
}

impl Node {
    fn metrics(&self) -> Metrics {
        self.raft.metrics().borrow_watched().clone()
    }

    fn leader(&self) -> Option<NodeId> {
        self.raft.metrics().borrow_watched().current_leader
    }

    /// The address of node `id`: from the membership, else from the configured voters.
    fn addr_of(&self, id: NodeId) -> Option<String> {
        let from_membership = {
            let m = self.raft.metrics();
            let m = m.borrow_watched();
            m.membership_config
                .membership()
                .get_node(&id)
                .map(|n| n.addr.clone())
        };
        from_membership.or_else(|| self.cfg.voters.get(&id).cloned())
    }

    /// Writes `payload` if this node is the leader; its index once applied here.
    async fn write_as_leader(
        &self,
        payload: Vec<u8>,
        limit: Duration,
    ) -> Result<u64, WriteFailure> {
        let write = self.raft.client_write(Payload(payload));
        match tokio::time::timeout(limit, write).await {
            Err(_) => Err(WriteFailure::Unknown),
            Ok(Ok(resp)) => Ok(resp.log_id.index),
            Ok(Err(RaftError::APIError(ClientWriteError::ForwardToLeader(f)))) => {
                Err(WriteFailure::NotLeader(f.leader_id))
            }
            Ok(Err(RaftError::APIError(ClientWriteError::LogEntryDiscarded(_)))) => {
                Err(WriteFailure::Unknown)
            }
            Ok(Err(RaftError::APIError(e))) => {
                Err(WriteFailure::Fatal(ProposeError::Storage(e.to_string())))
            }
            Ok(Err(RaftError::Fatal(f))) => Err(WriteFailure::Fatal(fatal_to_propose(&f))),
        }
    }

    /// `Quorum::propose`: writes here if leader, else forwards to the leader; retries while no
    /// leader is reachable, until the deadline.
    pub async fn propose(&self, payload: Vec<u8>, timeout: Duration) -> Result<u64, ProposeError> {
        let timeout = timeout.min(MAX_WAIT);
        let ms = timeout.as_millis() as u64;
        let deadline = Instant::now() + timeout;
        let mut reached_leader = false;
        let expired = |reached: bool| {
            if reached {
                ProposeError::Timeout(ms)
            } else {
                ProposeError::NoLeader(ms)
            }
        };
        // Each turn either returns or waits (a retry delay or a leader change), and the deadline
        // ends the loop.
        loop {
            let now = Instant::now();
            if now >= deadline {
                return Err(expired(reached_leader));
            }
            let remaining = deadline - now;
            match self.leader() {
                Some(leader) if leader == self.id => {
                    reached_leader = true;
                    match self.write_as_leader(payload.clone(), remaining).await {
                        Ok(index) => return Ok(index),
                        Err(WriteFailure::NotLeader(_)) => {}
                        Err(WriteFailure::Unknown) => return Err(ProposeError::Timeout(ms)),
                        Err(WriteFailure::Fatal(e)) => return Err(e),
                    }
                }
                Some(leader) => match self.forward(leader, &payload, remaining).await {
                    Ok(index) => {
                        let left = deadline.saturating_duration_since(Instant::now());
                        let applied = self.wait_applied(index, left).await;
                        return if applied {
                            Ok(index)
                        } else {
                            Err(ProposeError::Timeout(ms))
                        };
                    }
                    Err(Forward::Final(e)) => return Err(e),
                    Err(Forward::Retry { reached }) => reached_leader |= reached,
                },
                None => {
                    let wait = remaining.min(LEADER_POLL);
                    let _ = self
                        .raft
                        .wait(Some(wait))
                        .metrics(|m| m.current_leader.is_some(), "a leader")
                        .await;
                    continue;
                }
            }
            let left = deadline.saturating_duration_since(Instant::now());
            tokio::time::sleep(RETRY_DELAY.min(left)).await;
        }
    }

    /// Sends a proposal to `leader`: its index, a retry (not sent, or refused), or the final
    /// error (it may have been delivered: a timeout).
    async fn forward(
        &self,
        leader: NodeId,
        payload: &[u8],
        remaining: Duration,
    ) -> Result<u64, Forward> {
        let ms = remaining.as_millis() as u64;
        let Some(addr) = self.addr_of(leader) else {
            return Err(Forward::Retry { reached: false });
        };
        let req = ClientWriteRequest {
            payload: payload.to_vec(),
            timeout_ms: remaining.saturating_sub(FORWARD_MARGIN).as_millis() as u64,
        };
        let res = self
            .transport
            .call::<_, u64>(leader, &addr, KIND_CLIENT_WRITE, &req, remaining, false)
            .await;
        match res {
            Ok(index) => Ok(index),
            Err(CallError::Unreachable { .. }) => Err(Forward::Retry { reached: false }),
            Err(CallError::Remote(
                WireError::NotLeader { .. } | WireError::WrongNode { .. } | WireError::Shutdown,
            )) => Err(Forward::Retry { reached: false }),
            Err(CallError::Remote(WireError::Failed(msg))) => {
                tracing::debug!("quorum leader {leader} failed a forwarded proposal: {msg}");
                Err(Forward::Retry { reached: true })
            }
            Err(CallError::Remote(WireError::Timeout))
            | Err(CallError::Timeout { .. })
            | Err(CallError::Failed { .. }) => Err(Forward::Final(ProposeError::Timeout(ms))),
        }
    }

    /// Waits until this node applied `index`; true if it has.
    pub async fn wait_applied(&self, index: u64, timeout: Duration) -> bool {
        self.raft
            .wait(Some(timeout.min(MAX_WAIT)))
            .applied_index_at_least(Some(index), "applied")
            .await
            .is_ok()
    }

    /// Waits until a leader is known.
    pub async fn wait_leader(&self, timeout: Duration) -> Option<NodeId> {
        self.raft
            .wait(Some(timeout.min(MAX_WAIT)))
            .metrics(|m| m.current_leader.is_some(), "a leader")
            .await
            .ok()
            .and_then(|m| m.current_leader)
    }

    /// Hands leadership to the most up-to-date other voter, if this node leads.
    pub async fn resign(&self, timeout: Duration) -> Result<(), String> {
        let m = self.metrics();
        if m.current_leader != Some(self.id) {
            return Ok(());
        }
        let matched = |id: &NodeId| {
            m.replication
                .as_ref()
                .and_then(|r| r.get(id).cloned().flatten())
                .map(|l| l.index)
        };
        let target = m
            .membership_config
            .membership()
            .voter_ids()
            .filter(|v| *v != self.id)
            .max_by_key(|v| (matched(v), std::cmp::Reverse(*v)));
        let Some(target) = target else {
            return Err("no other voter to hand the leadership to".into());
        };
        self.raft
            .trigger()
            .transfer_leader(target)
            .await
            .map_err(|e| e.to_string())?;
        let me = self.id;
        self.raft
            .wait(Some(timeout.min(MAX_WAIT)))
            .metrics(
                move |m| m.current_leader.is_some_and(|l| l != me),
                "another leader",
            )
            .await
            .map(|_| ())
            .map_err(|e| format!("leadership not handed to node {target}: {e}"))
    }

    /// A follower's forwarded proposal, served on the leader.
    pub async fn handle_client_write(&self, req: ClientWriteRequest) -> Result<u64, WireError> {
        let leader = self.leader();
        if leader != Some(self.id) {
            return Err(WireError::NotLeader { leader });
        }
        let limit = Duration::from_millis(req.timeout_ms).min(MAX_WAIT);
        match self.write_as_leader(req.payload, limit).await {
            Ok(index) => Ok(index),
            Err(WriteFailure::NotLeader(leader)) => Err(WireError::NotLeader { leader }),
            Err(WriteFailure::Unknown) => Err(WireError::Timeout),
            Err(WriteFailure::Fatal(ProposeError::Shutdown)) => Err(WireError::Shutdown),
            Err(WriteFailure::Fatal(e)) => Err(WireError::Failed(e.to_string())),
        }
    }

    /// A learner's request to be added, served on the leader.
    pub async fn handle_join(&self, req: JoinRequest) -> Result<(), WireError> {
        let (leader, known) = {
            let m = self.raft.metrics();
            let m = m.borrow_watched();
            let membership = m.membership_config.membership();
            let is_voter = membership.voter_ids().any(|v| v == req.node_id);
            let same = membership
                .get_node(&req.node_id)
                .is_some_and(|n| n.addr == req.addr);
            (m.current_leader, is_voter || same)
        };
        if leader != Some(self.id) {
            return Err(WireError::NotLeader { leader });
        }
        if known {
            return Ok(());
        }
        tracing::info!(
            "quorum: adding learner {} at {} on its request",
            req.node_id,
            req.addr
        );
        match self
            .raft
            .add_learner(req.node_id, BasicNode::new(req.addr), false)
            .await
        {
            Ok(_) => Ok(()),
            Err(RaftError::APIError(ClientWriteError::ForwardToLeader(f))) => {
                Err(WireError::NotLeader {
                    leader: f.leader_id,
                })
            }
            Err(e) => Err(WireError::Failed(e.to_string())),
        }
    }

    /// At start: a pristine voter initializes the quorum with all the configured voters; a
    /// learner asks the voters to add it until one, the leader, has (or until the membership
    /// it has received lists it at its address).
    pub async fn bootstrap(&self) {
        if !self.cfg.voters.contains_key(&self.id) {
            // Also after a restart: a no-op when the membership has this node at this address.
            self.join().await;
            return;
        }
        match self.raft.is_initialized().await {
            Ok(false) => {}
            Ok(true) => return,
            Err(e) => {
                tracing::warn!("quorum: cannot read the raft state: {e}");
                return;
            }
        }
        let members: BTreeMap<NodeId, BasicNode> = self
            .cfg
            .voters
            .iter()
            .map(|(id, addr)| (*id, BasicNode::new(addr)))
            .collect();
        match self.raft.initialize(members).await {
            Ok(()) => tracing::info!("quorum: initialized with voters {:?}", self.cfg.voters),
            Err(RaftError::APIError(InitializeError::NotAllowed(_))) => {
                tracing::debug!("quorum: already initialized by a peer")
            }
            Err(e) => tracing::warn!("quorum: initialize failed: {e}"),
        }
    }

    async fn join(&self) {
        let Some(addr) = self.cfg.listen.clone() else {
            return;
        };
        let voters: Vec<(NodeId, String)> = self
            .cfg
            .voters
            .iter()
            .map(|(id, a)| (*id, a.clone()))
            .collect();
        let mut backoff = JOIN_BACKOFF_MIN;
        let mut hint: Option<NodeId> = None;
        // Ends once added (or the thread stops and drops this task); paced by the backoff.
        for attempt in 0usize.. {
            if self.in_membership(&addr) {
                return;
            }
            let hinted = hint
                .take()
                .and_then(|h| voters.iter().find(|(id, _)| *id == h));
            let Some((target, target_addr)) = hinted.or_else(|| voters.get(attempt % voters.len()))
            else {
                return;
            };
            let (target, target_addr) = (*target, target_addr.clone());
            let req = JoinRequest {
                node_id: self.id,
                addr: addr.clone(),
            };
            let res = self
                .transport
                .call::<_, ()>(
                    target,
                    &target_addr,
                    KIND_JOIN,
                    &req,
                    JOIN_RPC_TIMEOUT,
                    false,
                )
                .await;
            match res {
                Ok(()) => {
                    tracing::info!("quorum: learner {} added by leader {target}", self.id);
                    return;
                }
                Err(CallError::Remote(WireError::NotLeader { leader: Some(l) })) => {
                    hint = Some(l);
                    backoff = JOIN_BACKOFF_MIN;
                }
                Err(e) => tracing::debug!("quorum: join via node {target} failed: {e}"),
            }
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(JOIN_BACKOFF_MAX);
        }
    }

    /// Whether the membership this node knows lists it at `addr`.
    fn in_membership(&self, addr: &str) -> bool {
        let m = self.raft.metrics();
        let m = m.borrow_watched();
        m.membership_config
            .membership()
            .get_node(&self.id)
            .is_some_and(|n| n.addr == addr)
    }
}

/// A proposal's error for an openraft fatal error.
fn fatal_to_propose(f: &openraft::errors::Fatal<super::types::TypeConfig>) -> ProposeError {
    match f {
        openraft::errors::Fatal::Stopped => ProposeError::Shutdown,
        other => ProposeError::Storage(other.to_string()),
    }
}
