//! One consumer group's classic-protocol state machine (Kafka's
//! `GroupCoordinator` / `GroupMetadata`): members, generations, the join and
//! sync barriers, heartbeats and session expiry, static membership, and the
//! group's committed offsets. Pure logic: no I/O, time passed in. What must be
//! persisted is flagged (`take_store`) for the caller to write.
//!
//! States: Empty -> PreparingRebalance (a member joined or left) ->
//! CompletingRebalance (every member rejoined, or the rebalance timeout ran
//! out: the generation is bumped and the leader gets the members) -> Stable
//! (the leader's SyncGroup brought the assignment) ... -> Dead (deleted).

use std::collections::{BTreeMap, HashMap, HashSet};

use bytes::Bytes;
use futures::channel::oneshot;
use kafka_protocol::error::ResponseError as E;

use super::records::{GroupValue, MemberValue, OffsetValue};

/// Offsets of unfinished transactions: producer id -> (topic, partition) -> offset.
pub type PendingTxns = HashMap<i64, BTreeMap<(String, i32), OffsetValue>>;

/// How long a new member waiting in a join may go without rejoining before it
/// is dropped (Kafka's NewMemberJoinTimeoutMs).
const NEW_MEMBER_JOIN_TIMEOUT_MS: i64 = 5 * 60 * 1000;

const NONE: i16 = 0;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GroupState {
    Empty,
    PreparingRebalance,
    CompletingRebalance,
    Stable,
    Dead,
}

impl GroupState {
    /// The name Kafka reports in DescribeGroups and ListGroups.
    pub fn name(self) -> &'static str {
        match self {
            GroupState::Empty => "Empty",
            GroupState::PreparingRebalance => "PreparingRebalance",
            GroupState::CompletingRebalance => "CompletingRebalance",
            GroupState::Stable => "Stable",
            GroupState::Dead => "Dead",
        }
    }
}

/// Coordinator limits (from the broker settings).
#[derive(Clone, Debug)]
pub struct Limits {
    pub min_session_timeout_ms: i32,
    pub max_session_timeout_ms: i32,
    pub initial_rebalance_delay_ms: i64,
    pub max_size: usize,
}

/// A JoinGroup, as the state machine needs it.
#[derive(Clone, Debug)]
pub struct JoinRequest {
    pub member_id: String,
    pub instance_id: Option<String>,
    pub client_id: String,
    pub client_host: String,
    pub session_timeout_ms: i32,
    pub rebalance_timeout_ms: i32,
    pub protocol_type: String,
    pub protocols: Vec<(String, Bytes)>,
    /// JoinGroup v4+: a new dynamic member first gets MEMBER_ID_REQUIRED.
    pub require_known_member_id: bool,
}

#[derive(Clone, Debug, Default)]
pub struct JoinResult {
    pub error: i16,
    pub generation: i32,
    pub protocol_type: Option<String>,
    pub protocol_name: Option<String>,
    pub leader: String,
    pub member_id: String,
    /// (member id, instance id, metadata), for the leader only.
    pub members: Vec<(String, Option<String>, Bytes)>,
}

impl JoinResult {
    fn error(err: E, member_id: &str) -> JoinResult {
        JoinResult {
            error: err.code(),
            generation: -1,
            member_id: member_id.to_string(),
            ..JoinResult::default()
        }
    }
}

#[derive(Clone, Debug, Default)]
pub struct SyncResult {
    pub error: i16,
    pub protocol_type: Option<String>,
    pub protocol_name: Option<String>,
    pub assignment: Bytes,
}

impl SyncResult {
    fn error(err: E) -> SyncResult {
        SyncResult {
            error: err.code(),
            ..SyncResult::default()
        }
    }
}

/// An answer now, or one that comes when the barrier completes.
pub enum Reply<T> {
    Now(T),
    Wait(oneshot::Receiver<T>),
}

/// A SyncGroup, as the state machine needs it.
pub struct SyncRequest {
    pub member_id: String,
    pub instance_id: Option<String>,
    pub generation: i32,
    pub protocol_type: Option<String>,
    pub protocol_name: Option<String>,
    pub assignments: Vec<(String, Bytes)>,
}

pub struct Member {
    pub id: String,
    pub instance_id: Option<String>,
    pub client_id: String,
    pub client_host: String,
    pub session_timeout_ms: i32,
    pub rebalance_timeout_ms: i32,
    pub protocol_type: String,
    pub protocols: Vec<(String, Bytes)>,
    pub assignment: Bytes,
    join_waiter: Option<oneshot::Sender<JoinResult>>,
    sync_waiter: Option<oneshot::Sender<SyncResult>>,
    last_heartbeat_ms: i64,
    is_new: bool,
}

impl Member {
    /// Subscription metadata for `protocol`.
    pub fn metadata(&self, protocol: &str) -> Bytes {
        self.protocols
            .iter()
            .find(|(n, _)| n == protocol)
            .map(|(_, m)| m.clone())
            .unwrap_or_default()
    }

    fn awaiting_join(&self) -> bool {
        self.join_waiter.is_some()
    }

    /// Kafka's `shouldKeepAlive`: members waiting in a barrier do not expire
    /// (new ones only for NEW_MEMBER_JOIN_TIMEOUT_MS).
    fn expired(&self, now: i64) -> bool {
        if self.join_waiter.is_some() {
            return self.is_new && now - self.last_heartbeat_ms > NEW_MEMBER_JOIN_TIMEOUT_MS;
        }
        if self.sync_waiter.is_some() {
            return false;
        }
        now - self.last_heartbeat_ms > i64::from(self.session_timeout_ms)
    }

    fn fail_waiters(&mut self, err: E) {
        if let Some(w) = self.join_waiter.take() {
            let _ = w.send(JoinResult::error(err, &self.id));
        }
        if let Some(w) = self.sync_waiter.take() {
            let _ = w.send(SyncResult::error(err));
        }
    }
}

pub struct Group {
    pub id: String,
    pub state: GroupState,
    pub generation: i32,
    pub protocol_type: Option<String>,
    pub protocol: Option<String>,
    pub leader: Option<String>,
    /// In join order: the first is the default leader.
    pub members: Vec<Member>,
    /// Member ids handed out with MEMBER_ID_REQUIRED, and when they lapse.
    pending: HashMap<String, i64>,
    /// Members of the new generation that have not sent SyncGroup yet.
    pending_sync: HashSet<String>,
    sync_deadline_ms: i64,
    join_deadline_ms: i64,
    /// The initial delay of an empty group's first rebalance ends here.
    join_not_before_ms: i64,
    delay_cap_ms: i64,
    pub state_timestamp_ms: i64,
    pub offsets: BTreeMap<(String, i32), OffsetValue>,
    /// Offsets committed by transactions not finished yet, by producer id.
    pub pending_txn: PendingTxns,
    /// The group metadata must be written to the offsets topic.
    store: bool,
}

impl Group {
    pub fn new(id: &str, now: i64) -> Group {
        Group {
            id: id.to_string(),
            state: GroupState::Empty,
            generation: 0,
            protocol_type: None,
            protocol: None,
            leader: None,
            members: Vec::new(),
            pending: HashMap::new(),
            pending_sync: HashSet::new(),
            sync_deadline_ms: 0,
            join_deadline_ms: 0,
            join_not_before_ms: 0,
            delay_cap_ms: 0,
            state_timestamp_ms: now,
            offsets: BTreeMap::new(),
            pending_txn: HashMap::new(),
            store: false,
        }
    }

    /// A group as loaded from its last metadata record: Stable with its
    /// members (each gets a fresh session), or Empty.
    pub fn restore(id: &str, v: GroupValue, now: i64) -> Group {
        let mut g = Group::new(id, now);
        g.generation = v.generation;
        g.protocol_type = (!v.protocol_type.is_empty()).then_some(v.protocol_type.clone());
        g.protocol = v.protocol.clone();
        g.state_timestamp_ms = if v.state_timestamp_ms >= 0 {
            v.state_timestamp_ms
        } else {
            now
        };
        let protocol = v.protocol.unwrap_or_default();
        for m in v.members {
            g.members.push(Member {
                id: m.member_id,
                instance_id: m.group_instance_id,
                client_id: m.client_id,
                client_host: m.client_host,
                session_timeout_ms: m.session_timeout_ms,
                rebalance_timeout_ms: m.rebalance_timeout_ms,
                protocol_type: v.protocol_type.clone(),
                protocols: vec![(protocol.clone(), m.subscription)],
                assignment: m.assignment,
                join_waiter: None,
                sync_waiter: None,
                last_heartbeat_ms: now,
                is_new: false,
            });
        }
        if g.members.is_empty() {
            g.protocol = None;
        } else {
            g.state = GroupState::Stable;
            g.leader = v
                .leader
                .filter(|l| g.members.iter().any(|m| &m.id == l))
                .or_else(|| g.members.first().map(|m| m.id.clone()));
        }
        g
    }

    /// The metadata record of the group as it is now.
    pub fn value(&self) -> GroupValue {
        let protocol = self.protocol.clone().unwrap_or_default();
        GroupValue {
            protocol_type: self.protocol_type.clone().unwrap_or_default(),
            generation: self.generation,
            protocol: self.protocol.clone(),
            leader: self.leader.clone(),
            state_timestamp_ms: self.state_timestamp_ms,
            members: self
                .members
                .iter()
                .map(|m| MemberValue {
                    member_id: m.id.clone(),
                    group_instance_id: m.instance_id.clone(),
                    client_id: m.client_id.clone(),
                    client_host: m.client_host.clone(),
                    rebalance_timeout_ms: m.rebalance_timeout_ms,
                    session_timeout_ms: m.session_timeout_ms,
                    subscription: m.metadata(&protocol),
                    assignment: m.assignment.clone(),
                })
                .collect(),
        }
    }

    /// Whether the group metadata changed in a way that must be persisted
    /// (and clears the flag).
    pub fn take_store(&mut self) -> bool {
        std::mem::take(&mut self.store)
    }

    pub fn is_empty(&self) -> bool {
        self.members.is_empty() && self.pending.is_empty()
    }

    /// Applies (commit) or drops (abort) the offsets producer `producer_id`
    /// committed inside its transaction.
    pub fn complete_txn(&mut self, producer_id: i64, commit: bool) {
        if let Some(pend) = self.pending_txn.remove(&producer_id) {
            if commit {
                self.offsets.extend(pend);
            }
        }
    }

    /// Whether a transaction holds an uncommitted offset for the partition.
    pub fn has_pending_offset(&self, topic: &str, partition: i32) -> bool {
        self.pending_txn
            .values()
            .any(|m| m.contains_key(&(topic.to_string(), partition)))
    }

    fn idx(&self, member_id: &str) -> Option<usize> {
        self.members.iter().position(|m| m.id == member_id)
    }

    fn static_idx(&self, instance_id: &str) -> Option<usize> {
        self.members
            .iter()
            .position(|m| m.instance_id.as_deref() == Some(instance_id))
    }

    /// A static member whose instance id now belongs to another member id.
    fn fenced(&self, member_id: &str, instance_id: Option<&str>) -> bool {
        instance_id
            .and_then(|i| self.static_idx(i))
            .is_some_and(|ix| self.members[ix].id != member_id)
    }

    fn is_leader(&self, member_id: &str) -> bool {
        self.leader.as_deref() == Some(member_id)
    }

    /// Protocols every member supports.
    fn candidate_protocols(&self) -> HashSet<&str> {
        let mut it = self.members.iter();
        let Some(first) = it.next() else {
            return HashSet::new();
        };
        let mut set: HashSet<&str> = first.protocols.iter().map(|(n, _)| n.as_str()).collect();
        for m in it {
            set.retain(|p| m.protocols.iter().any(|(n, _)| n == p));
        }
        set
    }

    fn supports(&self, protocol_type: &str, protocols: &[(String, Bytes)]) -> bool {
        if protocol_type.is_empty() || protocols.is_empty() {
            return false;
        }
        if self.members.is_empty() {
            return true;
        }
        if self.protocol_type.as_deref() != Some(protocol_type) {
            return false;
        }
        let cands = self.candidate_protocols();
        protocols.iter().any(|(n, _)| cands.contains(n.as_str()))
    }

    /// Each member votes for the first protocol it lists among those all
    /// support; the most votes wins (ties: the first candidate listed by the
    /// first member).
    fn select_protocol(&self) -> Option<String> {
        let cands = self.candidate_protocols();
        let mut votes: Vec<(&str, usize)> = Vec::new();
        if let Some(first) = self.members.first() {
            for (n, _) in &first.protocols {
                if cands.contains(n.as_str()) {
                    votes.push((n.as_str(), 0));
                }
            }
        }
        for m in &self.members {
            if let Some((n, _)) = m.protocols.iter().find(|(n, _)| cands.contains(n.as_str())) {
                if let Some(v) = votes.iter_mut().find(|(c, _)| c == n) {
                    v.1 += 1;
                }
            }
        }
        let best = votes.iter().map(|(_, c)| *c).max()?;
        votes
            .iter()
            .find(|(_, c)| *c == best)
            .map(|(n, _)| n.to_string())
    }

    fn max_rebalance_timeout(&self) -> i64 {
        self.members
            .iter()
            .map(|m| i64::from(m.rebalance_timeout_ms))
            .max()
            .unwrap_or(0)
    }

    fn all_joined(&self) -> bool {
        self.pending.is_empty() && self.members.iter().all(Member::awaiting_join)
    }

    fn transition(&mut self, to: GroupState, now: i64) {
        self.state = to;
        self.state_timestamp_ms = now;
    }

    /// Any state but PreparingRebalance and Dead may start a rebalance.
    fn maybe_prepare_rebalance(&mut self, limits: &Limits, now: i64) {
        if matches!(
            self.state,
            GroupState::Empty | GroupState::Stable | GroupState::CompletingRebalance
        ) {
            self.prepare_rebalance(limits, now);
        }
    }

    fn prepare_rebalance(&mut self, limits: &Limits, now: i64) {
        if self.state == GroupState::CompletingRebalance {
            for m in &mut self.members {
                m.assignment = Bytes::new();
                if let Some(w) = m.sync_waiter.take() {
                    let _ = w.send(SyncResult::error(E::RebalanceInProgress));
                }
            }
        }
        let was_empty = self.state == GroupState::Empty;
        self.pending_sync.clear();
        self.transition(GroupState::PreparingRebalance, now);
        let rt = self.max_rebalance_timeout();
        self.join_deadline_ms = now + rt;
        if was_empty && limits.initial_rebalance_delay_ms > 0 {
            self.delay_cap_ms = now + rt;
            self.join_not_before_ms =
                (now + limits.initial_rebalance_delay_ms).min(self.delay_cap_ms);
        } else {
            self.join_not_before_ms = now;
        }
    }

    fn try_complete_join(&mut self, now: i64) {
        if self.state != GroupState::PreparingRebalance {
            return;
        }
        let ready = self.all_joined() && now >= self.join_not_before_ms;
        if ready || now >= self.join_deadline_ms.max(self.join_not_before_ms) {
            self.complete_join(now);
        }
    }

    fn complete_join(&mut self, now: i64) {
        // Dynamic members that did not rejoin in time leave the group; static
        // ones stay until their session runs out.
        let gone: Vec<String> = self
            .members
            .iter()
            .filter(|m| !m.awaiting_join() && m.instance_id.is_none())
            .map(|m| m.id.clone())
            .collect();
        for id in gone {
            self.remove(&id);
        }
        self.generation += 1;
        if self.members.is_empty() {
            self.protocol = None;
            self.leader = None;
            self.transition(GroupState::Empty, now);
            self.store = true;
            return;
        }
        self.protocol = self.select_protocol();
        self.protocol_type = self.members.first().map(|m| m.protocol_type.clone());
        let leader_joined = self
            .leader
            .as_deref()
            .and_then(|l| self.idx(l))
            .is_some_and(|ix| self.members[ix].awaiting_join());
        if !leader_joined {
            if let Some(m) = self.members.iter().find(|m| m.awaiting_join()) {
                self.leader = Some(m.id.clone());
            }
        }
        self.transition(GroupState::CompletingRebalance, now);
        tracing::info!(group = %self.id, generation = self.generation, members = self.members.len(),
            leader = self.leader.as_deref().unwrap_or(""), protocol = self.protocol.as_deref().unwrap_or(""),
            "rebalance: new generation");
        self.pending_sync = self.members.iter().map(|m| m.id.clone()).collect();
        self.sync_deadline_ms = now + self.max_rebalance_timeout();
        let protocol = self.protocol.clone().unwrap_or_default();
        let all: Vec<(String, Option<String>, Bytes)> = self
            .members
            .iter()
            .map(|m| (m.id.clone(), m.instance_id.clone(), m.metadata(&protocol)))
            .collect();
        let leader = self.leader.clone().unwrap_or_default();
        for m in &mut self.members {
            if let Some(w) = m.join_waiter.take() {
                let _ = w.send(JoinResult {
                    error: NONE,
                    generation: self.generation,
                    protocol_type: self.protocol_type.clone(),
                    protocol_name: self.protocol.clone(),
                    leader: leader.clone(),
                    member_id: m.id.clone(),
                    members: if m.id == leader {
                        all.clone()
                    } else {
                        Vec::new()
                    },
                });
                m.is_new = false;
                m.last_heartbeat_ms = now;
            }
        }
    }

    /// The current generation as a join response for `member_id`.
    fn current_generation(&self, member_id: &str) -> JoinResult {
        let protocol = self.protocol.clone().unwrap_or_default();
        JoinResult {
            error: NONE,
            generation: self.generation,
            protocol_type: self.protocol_type.clone(),
            protocol_name: self.protocol.clone(),
            leader: self.leader.clone().unwrap_or_default(),
            member_id: member_id.to_string(),
            members: if self.is_leader(member_id) {
                self.members
                    .iter()
                    .map(|m| (m.id.clone(), m.instance_id.clone(), m.metadata(&protocol)))
                    .collect()
            } else {
                Vec::new()
            },
        }
    }

    /// Removes a member (failing anything it waits for) and hands the
    /// leadership on.
    fn remove(&mut self, member_id: &str) {
        let Some(ix) = self.idx(member_id) else {
            return;
        };
        let mut m = self.members.remove(ix);
        m.fail_waiters(E::UnknownMemberId);
        self.pending_sync.remove(member_id);
        if self.is_leader(member_id) {
            self.leader = self.members.first().map(|m| m.id.clone());
        }
    }

    fn remove_and_update(&mut self, member_id: &str, limits: &Limits, now: i64) {
        self.remove(member_id);
        match self.state {
            GroupState::Stable | GroupState::CompletingRebalance => {
                self.prepare_rebalance(limits, now);
                self.try_complete_join(now);
            }
            GroupState::PreparingRebalance => self.try_complete_join(now),
            GroupState::Empty | GroupState::Dead => {}
        }
    }

    fn new_member(req: &JoinRequest, id: String, now: i64) -> Member {
        Member {
            id,
            instance_id: req.instance_id.clone(),
            client_id: req.client_id.clone(),
            client_host: req.client_host.clone(),
            session_timeout_ms: req.session_timeout_ms,
            rebalance_timeout_ms: req.rebalance_timeout_ms,
            protocol_type: req.protocol_type.clone(),
            protocols: req.protocols.clone(),
            assignment: Bytes::new(),
            join_waiter: None,
            sync_waiter: None,
            last_heartbeat_ms: now,
            is_new: true,
        }
    }

    fn add_and_rebalance(
        &mut self,
        req: &JoinRequest,
        id: String,
        limits: &Limits,
        now: i64,
    ) -> Reply<JoinResult> {
        let (tx, rx) = oneshot::channel();
        let mut m = Group::new_member(req, id.clone(), now);
        m.join_waiter = Some(tx);
        if self.leader.is_none() {
            self.leader = Some(id);
        }
        if self.members.is_empty() {
            // The first member sets the protocol type (as Kafka's
            // GroupMetadata.add does), so that members joining before the
            // first round completes are checked against it, not against none.
            self.protocol_type = Some(req.protocol_type.clone());
        }
        self.members.push(m);
        if self.state == GroupState::PreparingRebalance && self.join_not_before_ms > now {
            // An empty group's initial delay restarts with every new member.
            self.join_not_before_ms =
                (now + limits.initial_rebalance_delay_ms).min(self.delay_cap_ms);
        }
        self.maybe_prepare_rebalance(limits, now);
        self.try_complete_join(now);
        Reply::Wait(rx)
    }

    fn update_and_rebalance(
        &mut self,
        ix: usize,
        req: &JoinRequest,
        limits: &Limits,
        now: i64,
    ) -> Reply<JoinResult> {
        let (tx, rx) = oneshot::channel();
        let m = &mut self.members[ix];
        m.protocols = req.protocols.clone();
        m.rebalance_timeout_ms = req.rebalance_timeout_ms;
        m.session_timeout_ms = req.session_timeout_ms;
        m.last_heartbeat_ms = now;
        if let Some(old) = m.join_waiter.replace(tx) {
            let _ = old.send(JoinResult::error(E::RebalanceInProgress, &m.id));
        }
        self.maybe_prepare_rebalance(limits, now);
        self.try_complete_join(now);
        Reply::Wait(rx)
    }

    /// JoinGroup. `new_id` makes a member id for a member joining without one.
    pub fn join(
        &mut self,
        req: JoinRequest,
        limits: &Limits,
        now: i64,
        new_id: impl FnOnce() -> String,
    ) -> Reply<JoinResult> {
        let err = |e: E| Reply::Now(JoinResult::error(e, &req.member_id));
        if req.session_timeout_ms < limits.min_session_timeout_ms
            || req.session_timeout_ms > limits.max_session_timeout_ms
        {
            return err(E::InvalidSessionTimeout);
        }
        if self.state == GroupState::Dead {
            return err(E::CoordinatorNotAvailable);
        }
        if !self.supports(&req.protocol_type, &req.protocols) {
            return err(E::InconsistentGroupProtocol);
        }
        if req.member_id.is_empty() {
            self.join_unknown(req, limits, now, new_id)
        } else {
            self.join_known(req, limits, now)
        }
    }

    fn join_unknown(
        &mut self,
        req: JoinRequest,
        limits: &Limits,
        now: i64,
        new_id: impl FnOnce() -> String,
    ) -> Reply<JoinResult> {
        let static_ix = req.instance_id.as_deref().and_then(|i| self.static_idx(i));
        if static_ix.is_none() && self.members.len() + self.pending.len() >= limits.max_size {
            return Reply::Now(JoinResult::error(E::GroupMaxSizeReached, ""));
        }
        let id = new_id();
        if let Some(ix) = static_ix {
            return self.replace_static(ix, req, id, limits, now);
        }
        if req.instance_id.is_none() && req.require_known_member_id {
            self.pending
                .insert(id.clone(), now + i64::from(req.session_timeout_ms));
            return Reply::Now(JoinResult::error(E::MemberIdRequired, &id));
        }
        self.add_and_rebalance(&req, id, limits, now)
    }

    /// A static member rejoining without its member id (a restarted
    /// process): it takes over the old member's place under a new id. In a
    /// Stable group whose protocol choice does not change, no rebalance
    /// follows: the member gets the current generation back (KIP-345).
    fn replace_static(
        &mut self,
        ix: usize,
        req: JoinRequest,
        id: String,
        limits: &Limits,
        now: i64,
    ) -> Reply<JoinResult> {
        let old_leader = self.leader.clone().unwrap_or_default();
        let m = &mut self.members[ix];
        let old_id = std::mem::replace(&mut m.id, id.clone());
        m.fail_waiters(E::FencedInstanceId);
        m.client_id = req.client_id.clone();
        m.client_host = req.client_host.clone();
        m.session_timeout_ms = req.session_timeout_ms;
        m.rebalance_timeout_ms = req.rebalance_timeout_ms;
        m.last_heartbeat_ms = now;
        let old_protocols = std::mem::replace(&mut m.protocols, req.protocols.clone());
        if self.leader.as_deref() == Some(old_id.as_str()) {
            self.leader = Some(id.clone());
        }
        if self.pending_sync.remove(&old_id) {
            self.pending_sync.insert(id.clone());
        }
        match self.state {
            GroupState::Stable if self.select_protocol() == self.protocol => {
                self.store = true;
                let mut r = self.current_generation(&id);
                // The old leader id is returned so the rejoined member does
                // not compute an assignment a Stable group would not spread.
                r.leader = old_leader;
                r.members = Vec::new();
                Reply::Now(r)
            }
            GroupState::PreparingRebalance => {
                let (tx, rx) = oneshot::channel();
                self.members[ix].join_waiter = Some(tx);
                self.try_complete_join(now);
                Reply::Wait(rx)
            }
            _ => {
                self.members[ix].protocols = old_protocols;
                self.update_and_rebalance(ix, &req, limits, now)
            }
        }
    }

    fn join_known(&mut self, req: JoinRequest, limits: &Limits, now: i64) -> Reply<JoinResult> {
        let member_id = req.member_id.clone();
        if self.pending.remove(&member_id).is_some() {
            return self.add_and_rebalance(&req, member_id, limits, now);
        }
        if self.fenced(&member_id, req.instance_id.as_deref()) {
            return Reply::Now(JoinResult::error(E::FencedInstanceId, &member_id));
        }
        let Some(ix) = self.idx(&member_id) else {
            return Reply::Now(JoinResult::error(E::UnknownMemberId, &member_id));
        };
        match self.state {
            GroupState::PreparingRebalance => self.update_and_rebalance(ix, &req, limits, now),
            GroupState::CompletingRebalance => {
                if self.members[ix].protocols == req.protocols {
                    // The join response was lost: send it again.
                    self.members[ix].last_heartbeat_ms = now;
                    Reply::Now(self.current_generation(&member_id))
                } else {
                    self.update_and_rebalance(ix, &req, limits, now)
                }
            }
            GroupState::Stable => {
                if self.is_leader(&member_id) || self.members[ix].protocols != req.protocols {
                    // The leader rejoins to force a rebalance (e.g. partitions
                    // were added); a changed subscription needs one too.
                    self.update_and_rebalance(ix, &req, limits, now)
                } else {
                    self.members[ix].last_heartbeat_ms = now;
                    Reply::Now(self.current_generation(&member_id))
                }
            }
            GroupState::Empty | GroupState::Dead => {
                Reply::Now(JoinResult::error(E::UnknownMemberId, &member_id))
            }
        }
    }

    /// SyncGroup.
    pub fn sync(&mut self, req: SyncRequest, now: i64) -> Reply<SyncResult> {
        let err = |e: E| Reply::Now(SyncResult::error(e));
        if self.state == GroupState::Dead {
            return err(E::CoordinatorNotAvailable);
        }
        if self.fenced(&req.member_id, req.instance_id.as_deref()) {
            return err(E::FencedInstanceId);
        }
        let Some(ix) = self.idx(&req.member_id) else {
            return err(E::UnknownMemberId);
        };
        if req.generation != self.generation {
            return err(E::IllegalGeneration);
        }
        if req.protocol_type.is_some() && req.protocol_type != self.protocol_type
            || req.protocol_name.is_some() && req.protocol_name != self.protocol
        {
            return err(E::InconsistentGroupProtocol);
        }
        match self.state {
            GroupState::Empty | GroupState::Dead => err(E::UnknownMemberId),
            GroupState::PreparingRebalance => err(E::RebalanceInProgress),
            GroupState::Stable => {
                self.pending_sync.remove(&req.member_id);
                let m = &mut self.members[ix];
                m.last_heartbeat_ms = now;
                Reply::Now(SyncResult {
                    error: NONE,
                    protocol_type: self.protocol_type.clone(),
                    protocol_name: self.protocol.clone(),
                    assignment: m.assignment.clone(),
                })
            }
            GroupState::CompletingRebalance => {
                let (tx, rx) = oneshot::channel();
                self.pending_sync.remove(&req.member_id);
                let m = &mut self.members[ix];
                m.last_heartbeat_ms = now;
                if let Some(old) = m.sync_waiter.replace(tx) {
                    let _ = old.send(SyncResult::error(E::RebalanceInProgress));
                }
                if self.is_leader(&req.member_id) {
                    let mut given: HashMap<String, Bytes> = req.assignments.into_iter().collect();
                    for m in &mut self.members {
                        m.assignment = given.remove(&m.id).unwrap_or_default();
                    }
                    self.transition(GroupState::Stable, now);
                    self.store = true;
                    for m in &mut self.members {
                        if let Some(w) = m.sync_waiter.take() {
                            let _ = w.send(SyncResult {
                                error: NONE,
                                protocol_type: self.protocol_type.clone(),
                                protocol_name: self.protocol.clone(),
                                assignment: m.assignment.clone(),
                            });
                        }
                    }
                }
                Reply::Wait(rx)
            }
        }
    }

    /// Heartbeat: an error code (REBALANCE_IN_PROGRESS tells the member to rejoin).
    pub fn heartbeat(
        &mut self,
        member_id: &str,
        instance_id: Option<&str>,
        generation: i32,
        now: i64,
    ) -> i16 {
        match self.state {
            GroupState::Dead => return E::CoordinatorNotAvailable.code(),
            GroupState::Empty => return E::UnknownMemberId.code(),
            _ => {}
        }
        if self.fenced(member_id, instance_id) {
            return E::FencedInstanceId.code();
        }
        let Some(ix) = self.idx(member_id) else {
            return E::UnknownMemberId.code();
        };
        if generation != self.generation {
            return E::IllegalGeneration.code();
        }
        self.members[ix].last_heartbeat_ms = now;
        if self.state == GroupState::PreparingRebalance {
            E::RebalanceInProgress.code()
        } else {
            NONE
        }
    }

    /// LeaveGroup for one member (by member id, or by instance id for a
    /// static member).
    pub fn leave(
        &mut self,
        member_id: &str,
        instance_id: Option<&str>,
        limits: &Limits,
        now: i64,
    ) -> i16 {
        if self.state == GroupState::Dead {
            return E::CoordinatorNotAvailable.code();
        }
        if let Some(inst) = instance_id {
            let Some(ix) = self.static_idx(inst) else {
                return E::UnknownMemberId.code();
            };
            if !member_id.is_empty() && self.members[ix].id != member_id {
                return E::FencedInstanceId.code();
            }
            let id = self.members[ix].id.clone();
            self.remove_and_update(&id, limits, now);
            return NONE;
        }
        if self.pending.remove(member_id).is_some() {
            self.try_complete_join(now);
            return NONE;
        }
        if self.idx(member_id).is_none() {
            return E::UnknownMemberId.code();
        }
        self.remove_and_update(member_id, limits, now);
        NONE
    }

    /// Timers: expired sessions and pending member ids, the rebalance
    /// deadline and a leader that never sent SyncGroup.
    pub fn tick(&mut self, limits: &Limits, now: i64) {
        let lapsed: Vec<String> = self
            .pending
            .iter()
            .filter(|(_, &deadline)| now > deadline)
            .map(|(id, _)| id.clone())
            .collect();
        for id in lapsed {
            self.pending.remove(&id);
        }
        let expired: Vec<String> = self
            .members
            .iter()
            .filter(|m| m.expired(now))
            .map(|m| m.id.clone())
            .collect();
        for id in expired {
            tracing::info!(group = %self.id, member = %id, "member session expired");
            self.remove_and_update(&id, limits, now);
        }
        if self.state == GroupState::CompletingRebalance
            && now > self.sync_deadline_ms
            && !self.pending_sync.is_empty()
        {
            let late: Vec<String> = self.pending_sync.drain().collect();
            for id in &late {
                tracing::info!(group = %self.id, member = %id, "member did not sync in time");
                self.remove(id);
            }
            self.prepare_rebalance(limits, now);
        }
        self.try_complete_join(now);
    }

    /// May an OffsetCommit with these credentials commit? `Ok` also counts as
    /// a heartbeat of the member.
    pub fn validate_commit(
        &mut self,
        member_id: &str,
        instance_id: Option<&str>,
        generation: i32,
        now: i64,
    ) -> Result<(), i16> {
        if self.state == GroupState::Dead {
            return Err(E::CoordinatorNotAvailable.code());
        }
        if member_id.is_empty() && generation < 0 {
            // Offsets committed outside the group protocol (admin tools, or
            // consumers that assign partitions themselves): only while no
            // member is active.
            return if self.members.is_empty() {
                Ok(())
            } else {
                Err(E::UnknownMemberId.code())
            };
        }
        if self.fenced(member_id, instance_id) {
            return Err(E::FencedInstanceId.code());
        }
        let Some(ix) = self.idx(member_id) else {
            return Err(E::UnknownMemberId.code());
        };
        if generation != self.generation {
            return Err(E::IllegalGeneration.code());
        }
        if self.state == GroupState::CompletingRebalance {
            return Err(E::RebalanceInProgress.code());
        }
        self.members[ix].last_heartbeat_ms = now;
        Ok(())
    }

    /// Topics the members subscribe to (consumer protocol), None when some
    /// subscription cannot be read.
    pub fn subscribed_topics(&self) -> Option<HashSet<String>> {
        use kafka_protocol::messages::ConsumerProtocolSubscription;
        use kafka_protocol::protocol::Decodable;
        let protocol = self.protocol.clone()?;
        let mut out = HashSet::new();
        for m in &self.members {
            let mut b = m.metadata(&protocol);
            if b.len() < 2 {
                return None;
            }
            let version = i16::from_be_bytes([b[0], b[1]]);
            let _ = bytes::Buf::get_i16(&mut b);
            let v = version.clamp(0, 3);
            // Client bytes: counts are checked before the crate allocates.
            let schema = &crate::protocol::schema_gen::CONSUMER_PROTOCOL_SUBSCRIPTION;
            if let Err(e) = crate::protocol::bounds::check_struct(schema, v, &b) {
                tracing::warn!(group = %self.id, member = %m.id,
                    "unreadable consumer protocol subscription: {e}");
                return None;
            }
            let sub = ConsumerProtocolSubscription::decode(&mut b, v).ok()?;
            out.extend(sub.topics.iter().map(|t| t.to_string()));
        }
        Some(out)
    }

    /// Marks the group deleted (DeleteGroups).
    pub fn kill(&mut self, now: i64) {
        for m in &mut self.members {
            m.fail_waiters(E::CoordinatorNotAvailable);
        }
        self.members.clear();
        self.pending.clear();
        self.offsets.clear();
        self.transition(GroupState::Dead, now);
    }
}

#[cfg(test)]
#[path = "state_tests.rs"]
mod tests;
