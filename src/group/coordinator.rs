//! The group coordinator of one shard: the groups whose offsets partition
//! this shard owns, their persistence to `__consumer_offsets`, the start-up
//! load, and the timers (sessions, rebalance deadlines, offset expiry).
//! Every function here runs on the owning shard; results are plain data so
//! the handlers can carry them back across shards.

use std::cell::RefCell;
use std::collections::{BTreeMap, HashMap};
use std::rc::Rc;
use std::time::Duration;

use bytes::Bytes;
use kafka_protocol::error::ResponseError as E;

use super::records::{self, Entry, GroupValue, OffsetValue};
use super::state::{
    Group, GroupState, JoinRequest, JoinResult, Limits, PendingTxns, Reply, SyncRequest, SyncResult,
};
use super::{partition_for, OFFSETS_TOPIC};
use crate::cluster::{image, internal_topic, owner_shard, partition_manager};
use crate::runtime;
use crate::runtime::now_ms;

/// How often the timers run.
const TICK: Duration = Duration::from_millis(100);

thread_local! {
    static GROUPS: RefCell<HashMap<String, Rc<RefCell<Group>>>> = RefCell::new(HashMap::new());
    /// Set once this shard has rebuilt its groups; until then requests get
    /// COORDINATOR_LOAD_IN_PROGRESS (another shard may already be serving).
    static LOADED: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
    /// Offsets partitions led here whose groups are loaded on this shard.
    static LEADING: RefCell<std::collections::HashSet<i32>> = RefCell::new(std::collections::HashSet::new());
    /// Leadership changes seen before the start-up load finished, handled after it.
    static DEFERRED: RefCell<Vec<(i32, bool)>> = const { RefCell::new(Vec::new()) };
}

/// Whether this shard has finished loading its groups.
pub fn loaded() -> bool {
    LOADED.with(std::cell::Cell::get)
}

/// Whether the groups of offsets partition `partition` are loaded here: false while this
/// broker is taking over its leadership (COORDINATOR_LOAD_IN_PROGRESS).
pub fn loaded_partition(partition: i32) -> bool {
    loaded() && LEADING.with(|l| l.borrow().contains(&partition))
}

/// The `partition_manager` leadership hook: this broker started or stopped leading an
/// offsets partition, so its groups are loaded from it, or dropped (their new coordinator
/// loads them from its replica).
pub fn on_leadership_change(topic: &str, partition: i32, leading: bool) {
    if topic != OFFSETS_TOPIC {
        return;
    }
    if !loaded() {
        DEFERRED.with(|d| d.borrow_mut().push((partition, leading)));
        return;
    }
    runtime::spawn(take_over(partition, leading));
}

async fn take_over(partition: i32, leading: bool) {
    let n = image()
        .topic(OFFSETS_TOPIC)
        .map_or(1, |t| t.partitions.len() as i32);
    LEADING.with(|l| l.borrow_mut().remove(&partition));
    let dropped = GROUPS.with(|gs| {
        let mut gs = gs.borrow_mut();
        let before = gs.len();
        gs.retain(|name, _| crate::group::partition_for(name, n) != partition);
        before - gs.len()
    });
    if !leading {
        tracing::info!(
            partition,
            groups = dropped,
            "no longer coordinating the groups of this offsets partition"
        );
        return;
    }
    match load_partitions(&[partition]).await {
        Ok(loaded) => {
            // Still leading (the leadership may have moved on while the partition was read).
            let me = partition_manager::broker_config().node_id;
            let still = !crate::cluster::multi_node()
                || crate::cluster::leader_of(&image(), OFFSETS_TOPIC, partition) == me;
            if still {
                LEADING.with(|l| l.borrow_mut().insert(partition));
                tracing::info!(
                    partition,
                    groups = loaded,
                    "coordinating the groups of this offsets partition"
                );
            }
        }
        Err(e) => {
            tracing::error!(partition, error = %format!("{e:#}"), "cannot load the groups of an offsets partition");
        }
    }
}

fn limits() -> Limits {
    let g = &partition_manager::broker_config().groups;
    Limits {
        min_session_timeout_ms: g.min_session_timeout_ms,
        max_session_timeout_ms: g.max_session_timeout_ms,
        initial_rebalance_delay_ms: g.initial_rebalance_delay_ms,
        max_size: g.max_size,
    }
}

fn find(group: &str) -> Option<Rc<RefCell<Group>>> {
    GROUPS.with(|g| g.borrow().get(group).cloned())
}

fn find_or_create(group: &str) -> Rc<RefCell<Group>> {
    GROUPS.with(|g| {
        g.borrow_mut()
            .entry(group.to_string())
            .or_insert_with(|| Rc::new(RefCell::new(Group::new(group, now_ms()))))
            .clone()
    })
}

fn forget(group: &str) {
    GROUPS.with(|g| g.borrow_mut().remove(group));
}

fn offsets_partition(group: &str) -> i32 {
    let n = image()
        .topic(OFFSETS_TOPIC)
        .map(|t| t.partitions.len() as i32)
        .unwrap_or(1);
    partition_for(group, n)
}

/// Appends records to the group's offsets partition as one batch (a
/// transactional one with `producer`) and waits until they are durable.
async fn append(group: &str, recs: Vec<(Bytes, Option<Bytes>)>) -> Result<(), i16> {
    internal_topic::append(OFFSETS_TOPIC, offsets_partition(group), recs, None).await
}

/// Persists the group's metadata if the last change asked for it.
async fn store_if_needed(g: &Rc<RefCell<Group>>) -> Result<(), i16> {
    let rec = {
        let mut gb = g.borrow_mut();
        if !gb.take_store() {
            return Ok(());
        }
        (
            records::group_key(&gb.id),
            Some(records::group_value(&gb.value())),
        )
    };
    let id = g.borrow().id.clone();
    append(&id, vec![rec]).await
}

pub async fn join(group: String, req: JoinRequest) -> JoinResult {
    let g = if req.member_id.is_empty() {
        find_or_create(&group)
    } else {
        match find(&group) {
            Some(g) => g,
            None => {
                return JoinResult {
                    error: E::UnknownMemberId.code(),
                    generation: -1,
                    member_id: req.member_id,
                    ..JoinResult::default()
                }
            }
        }
    };
    let client_id = req.client_id.clone();
    let reply = g.borrow_mut().join(req, &limits(), now_ms(), || {
        format!("{client_id}-{}", uuid::Uuid::new_v4())
    });
    let stored = store_if_needed(&g).await;
    let mut out = match reply {
        Reply::Now(r) => r,
        Reply::Wait(rx) => rx.await.unwrap_or_else(|_| JoinResult {
            error: E::RebalanceInProgress.code(),
            generation: -1,
            ..JoinResult::default()
        }),
    };
    if let Err(code) = stored {
        out.error = code;
    }
    out
}

pub async fn sync(group: String, req: SyncRequest) -> SyncResult {
    let Some(g) = find(&group) else {
        return SyncResult {
            error: E::UnknownMemberId.code(),
            ..SyncResult::default()
        };
    };
    let reply = g.borrow_mut().sync(req, now_ms());
    let stored = store_if_needed(&g).await;
    let mut out = match reply {
        Reply::Now(r) => r,
        Reply::Wait(rx) => rx.await.unwrap_or_else(|_| SyncResult {
            error: E::RebalanceInProgress.code(),
            ..SyncResult::default()
        }),
    };
    if let Err(code) = stored {
        out.error = code;
    }
    out
}

pub fn heartbeat(group: String, member: String, instance: Option<String>, generation: i32) -> i16 {
    match find(&group) {
        None => E::UnknownMemberId.code(),
        Some(g) => g
            .borrow_mut()
            .heartbeat(&member, instance.as_deref(), generation, now_ms()),
    }
}

/// LeaveGroup: one error per member.
pub async fn leave(group: String, members: Vec<(String, Option<String>)>) -> Vec<i16> {
    let Some(g) = find(&group) else {
        return vec![E::UnknownMemberId.code(); members.len()];
    };
    let (lim, now) = (limits(), now_ms());
    let codes = members
        .iter()
        .map(|(m, i)| g.borrow_mut().leave(m, i.as_deref(), &lim, now))
        .collect();
    let _ = store_if_needed(&g).await;
    codes
}

/// One partition of an OffsetCommit.
pub struct CommitItem {
    pub topic: String,
    pub partition: i32,
    pub offset: i64,
    pub leader_epoch: i32,
    pub metadata: Option<String>,
}

/// The partitions of an OffsetCommit or TxnOffsetCommit, checked.
struct Checked {
    /// One per item: 0, or why the item is refused.
    codes: Vec<i16>,
    /// The records to write for the accepted items.
    recs: Vec<(Bytes, Option<Bytes>)>,
    accepted: Vec<((String, i32), OffsetValue)>,
}

/// Refuses unknown partitions (UNKNOWN_TOPIC_OR_PARTITION) and metadata
/// over `offset.metadata.max.bytes` (OFFSET_METADATA_TOO_LARGE); builds the
/// offset commit records of the rest.
fn check_commit(group: &str, items: Vec<CommitItem>, now: i64) -> Checked {
    let img = image();
    let max_meta = partition_manager::broker_config()
        .groups
        .offset_metadata_max_bytes;
    let mut out = Checked {
        codes: Vec::with_capacity(items.len()),
        recs: Vec::new(),
        accepted: Vec::new(),
    };
    for it in items {
        let code = if img.partition(&it.topic, it.partition).is_none() {
            E::UnknownTopicOrPartition.code()
        } else if it.metadata.as_ref().is_some_and(|m| m.len() > max_meta) {
            E::OffsetMetadataTooLarge.code()
        } else {
            let v = OffsetValue {
                offset: it.offset,
                leader_epoch: it.leader_epoch,
                metadata: it.metadata.unwrap_or_default(),
                commit_timestamp_ms: now,
            };
            out.recs.push((
                records::offset_key(group, &it.topic, it.partition),
                Some(records::offset_value(&v)),
            ));
            out.accepted.push(((it.topic, it.partition), v));
            0
        };
        out.codes.push(code);
    }
    out
}

/// OffsetCommit: Err is a group-level error (applies to every partition);
/// Ok has one error per item.
pub async fn commit(
    group: String,
    member: String,
    instance: Option<String>,
    generation: i32,
    items: Vec<CommitItem>,
) -> Result<Vec<i16>, i16> {
    let g = if generation < 0 && member.is_empty() {
        find_or_create(&group)
    } else {
        find(&group).ok_or(E::IllegalGeneration.code())?
    };
    let now = now_ms();
    g.borrow_mut()
        .validate_commit(&member, instance.as_deref(), generation, now)?;
    let Checked {
        mut codes,
        recs,
        accepted,
    } = check_commit(&group, items, now);
    if let Err(code) = append(&group, recs).await {
        for c in codes.iter_mut().filter(|c| **c == 0) {
            *c = code;
        }
        return Ok(codes);
    }
    let mut gb = g.borrow_mut();
    if gb.state != GroupState::Dead {
        gb.offsets.extend(accepted);
    }
    Ok(codes)
}

/// Committed offsets of `topics` (all the group has when None), in request
/// order: (partition, offset, error code).
pub type FetchedTopic = (String, Vec<(i32, Option<OffsetValue>, i16)>);

/// OffsetFetch. With `require_stable` (read_committed consumers), a
/// partition whose offset an unfinished transaction is committing answers
/// UNSTABLE_OFFSET_COMMIT, which the client retries.
pub fn fetch_offsets(
    group: String,
    topics: Option<Vec<(String, Vec<i32>)>>,
    require_stable: bool,
) -> Vec<FetchedTopic> {
    let g = find(&group);
    let gb = g.as_ref().map(|g| g.borrow());
    let entry = |t: &str, p: i32| -> (i32, Option<OffsetValue>, i16) {
        let Some(g) = gb.as_ref() else {
            return (p, None, 0);
        };
        if require_stable && g.has_pending_offset(t, p) {
            return (p, None, E::UnstableOffsetCommit.code());
        }
        (p, g.offsets.get(&(t.to_string(), p)).cloned(), 0)
    };
    match topics {
        Some(ts) => ts
            .into_iter()
            .map(|(t, parts)| {
                let ps = parts.into_iter().map(|p| entry(&t, p)).collect();
                (t, ps)
            })
            .collect(),
        None => {
            let mut by_topic: BTreeMap<String, Vec<(i32, Option<OffsetValue>, i16)>> =
                BTreeMap::new();
            if let Some(g) = gb.as_ref() {
                for (t, p) in g.offsets.keys() {
                    by_topic.entry(t.clone()).or_default().push(entry(t, *p));
                }
            }
            by_topic.into_iter().collect()
        }
    }
}

/// (group id, protocol type, state) of every group on this shard.
pub fn list() -> Vec<(String, String, String)> {
    GROUPS.with(|gs| {
        gs.borrow()
            .values()
            .map(|g| {
                let g = g.borrow();
                (
                    g.id.clone(),
                    g.protocol_type.clone().unwrap_or_default(),
                    g.state.name().to_string(),
                )
            })
            .collect()
    })
}

/// One group of this shard as the metrics endpoint shows it.
pub struct GroupFigures {
    pub id: String,
    pub state: &'static str,
    pub members: usize,
    /// (topic, partition, committed offset).
    pub offsets: Vec<(String, i32, i64)>,
}

/// Every group on this shard: state, member count and committed offsets (read only).
pub fn figures() -> Vec<GroupFigures> {
    GROUPS.with(|gs| {
        gs.borrow()
            .values()
            .map(|g| {
                let g = g.borrow();
                GroupFigures {
                    id: g.id.clone(),
                    state: g.state.name(),
                    members: g.members.len(),
                    offsets: g
                        .offsets
                        .iter()
                        .map(|((t, p), v)| (t.clone(), *p, v.offset))
                        .collect(),
                }
            })
            .collect()
    })
}

/// A member as DescribeGroups shows it.
pub struct MemberSummary {
    pub member_id: String,
    pub instance_id: Option<String>,
    pub client_id: String,
    pub client_host: String,
    pub metadata: Bytes,
    pub assignment: Bytes,
}

pub struct GroupSummary {
    pub state: String,
    pub protocol_type: String,
    pub protocol: String,
    pub members: Vec<MemberSummary>,
}

/// DescribeGroups: like Kafka, member metadata and assignments only when
/// Stable; an unknown group is reported as Dead.
pub fn describe(group: String) -> GroupSummary {
    let Some(g) = find(&group) else {
        return GroupSummary {
            state: GroupState::Dead.name().into(),
            protocol_type: String::new(),
            protocol: String::new(),
            members: Vec::new(),
        };
    };
    let g = g.borrow();
    let stable = g.state == GroupState::Stable;
    let protocol = g.protocol.clone().unwrap_or_default();
    GroupSummary {
        state: g.state.name().into(),
        protocol_type: g.protocol_type.clone().unwrap_or_default(),
        protocol: if stable {
            protocol.clone()
        } else {
            String::new()
        },
        members: g
            .members
            .iter()
            .map(|m| MemberSummary {
                member_id: m.id.clone(),
                instance_id: m.instance_id.clone(),
                client_id: m.client_id.clone(),
                client_host: m.client_host.clone(),
                metadata: if stable {
                    m.metadata(&protocol)
                } else {
                    Bytes::new()
                },
                assignment: if stable {
                    m.assignment.clone()
                } else {
                    Bytes::new()
                },
            })
            .collect(),
    }
}

/// Tombstones for a group's offsets and metadata.
fn tombstones(g: &Group) -> Vec<(Bytes, Option<Bytes>)> {
    let mut recs: Vec<(Bytes, Option<Bytes>)> = g
        .offsets
        .keys()
        .map(|(t, p)| (records::offset_key(&g.id, t, *p), None))
        .collect();
    recs.push((records::group_key(&g.id), None));
    recs
}

/// DeleteGroups for one group.
pub async fn delete(group: String) -> i16 {
    let Some(g) = find(&group) else {
        return E::GroupIdNotFound.code();
    };
    let recs = {
        let gb = g.borrow();
        match gb.state {
            GroupState::Dead => return E::GroupIdNotFound.code(),
            GroupState::Empty if gb.is_empty() => tombstones(&gb),
            _ => return E::NonEmptyGroup.code(),
        }
    };
    if let Err(code) = append(&group, recs).await {
        return code;
    }
    g.borrow_mut().kill(now_ms());
    forget(&group);
    0
}

/// OffsetDelete: Err is a group-level error; Ok has per-partition errors.
pub async fn delete_offsets(
    group: String,
    topics: Vec<(String, Vec<i32>)>,
) -> Result<Vec<(String, Vec<(i32, i16)>)>, i16> {
    let g = find(&group).ok_or(E::GroupIdNotFound.code())?;
    let (subscribed, recs, out) = {
        let gb = g.borrow();
        if gb.state == GroupState::Dead {
            return Err(E::GroupIdNotFound.code());
        }
        let consumer = gb.protocol_type.as_deref() == Some("consumer");
        if !consumer && !gb.members.is_empty() {
            return Err(E::NonEmptyGroup.code());
        }
        // Unreadable subscriptions: treat every topic as subscribed.
        let subscribed = if gb.members.is_empty() {
            Some(Default::default())
        } else {
            gb.subscribed_topics()
        };
        let mut recs = Vec::new();
        let mut out = Vec::new();
        for (t, parts) in topics {
            let busy = subscribed.as_ref().is_none_or(|s| s.contains(&t));
            let codes: Vec<(i32, i16)> = parts
                .into_iter()
                .map(|p| {
                    if busy {
                        (p, E::GroupSubscribedToTopic.code())
                    } else {
                        if gb.offsets.contains_key(&(t.clone(), p)) {
                            recs.push((records::offset_key(&group, &t, p), None));
                        }
                        (p, 0)
                    }
                })
                .collect();
            out.push((t, codes));
        }
        (subscribed, recs, out)
    };
    let _ = subscribed;
    let deleted: Vec<(String, i32)> = out
        .iter()
        .flat_map(|(t, ps)| {
            ps.iter()
                .filter(|(_, c)| *c == 0)
                .map(move |(p, _)| (t.clone(), *p))
        })
        .collect();
    append(&group, recs).await?;
    let mut gb = g.borrow_mut();
    for k in deleted {
        gb.offsets.remove(&k);
    }
    Ok(out)
}

/// Rebuilds the groups of every offsets partition this shard owns by
/// reading them from the start. Runs before the shard serves requests.
pub async fn load_owned() -> anyhow::Result<usize> {
    let img = image();
    let Some(t) = img.topic(OFFSETS_TOPIC) else {
        LOADED.with(|l| l.set(true));
        run_deferred();
        return Ok(0);
    };
    let (me, n) = (runtime::shard_id(), runtime::nr_shards());
    let node = partition_manager::broker_config().node_id;
    let owned: Vec<i32> = t
        .partitions
        .iter()
        .filter(|pm| owner_shard(OFFSETS_TOPIC, pm.index, n) == me)
        .filter(|pm| !crate::cluster::multi_node() || pm.leader == node)
        .map(|pm| pm.index)
        .collect();
    let loaded = load_partitions(&owned).await?;
    LEADING.with(|l| l.borrow_mut().extend(owned.iter().copied()));
    LOADED.with(|l| l.set(true));
    run_deferred();
    Ok(loaded)
}

/// Leadership changes that came while the start-up load ran.
fn run_deferred() {
    for (partition, leading) in DEFERRED.with(|d| std::mem::take(&mut *d.borrow_mut())) {
        let me = partition_manager::broker_config().node_id;
        let leads_now = !crate::cluster::multi_node()
            || crate::cluster::leader_of(&image(), OFFSETS_TOPIC, partition) == me;
        let loaded = LEADING.with(|l| l.borrow().contains(&partition));
        if leading != loaded || leads_now != loaded {
            runtime::spawn(take_over(partition, leads_now));
        }
    }
}

/// Reads the given offsets partitions (owned by this shard) from the start and adds their
/// groups; the number of groups added.
async fn load_partitions(indices: &[i32]) -> anyhow::Result<usize> {
    let mut offsets: HashMap<String, BTreeMap<(String, i32), OffsetValue>> = HashMap::new();
    let mut metas: HashMap<String, Option<GroupValue>> = HashMap::new();
    let mut pending: HashMap<String, PendingTxns> = HashMap::new();
    for &index in indices {
        let mut txn_pending: HashMap<i64, Vec<PendingOffset>> = HashMap::new();
        internal_topic::read_all(OFFSETS_TOPIC, index, |r| {
            apply_record(r, &mut offsets, &mut metas, &mut txn_pending)
        })
        .await?;
        // Transactions without a marker yet stay pending: their offsets
        // become visible when the transaction coordinator finishes them.
        for (pid, pend) in txn_pending {
            for (group, topic, partition, v) in pend {
                pending
                    .entry(group)
                    .or_default()
                    .entry(pid)
                    .or_default()
                    .insert((topic, partition), v);
            }
        }
    }
    let now = now_ms();
    let mut loaded = 0;
    let mut names: Vec<String> = metas
        .keys()
        .chain(offsets.keys())
        .chain(pending.keys())
        .cloned()
        .collect();
    names.sort();
    names.dedup();
    GROUPS.with(|gs| {
        let mut gs = gs.borrow_mut();
        for name in names {
            let mut g = match metas.remove(&name).flatten() {
                Some(v) => Group::restore(&name, v, now),
                None => Group::new(&name, now),
            };
            g.offsets = offsets.remove(&name).unwrap_or_default();
            g.pending_txn = pending.remove(&name).unwrap_or_default();
            if g.members.is_empty()
                && g.offsets.is_empty()
                && g.pending_txn.is_empty()
                && g.protocol_type.is_none()
            {
                continue;
            }
            gs.insert(name, Rc::new(RefCell::new(g)));
            loaded += 1;
        }
    });
    Ok(loaded)
}

/// An offset committed inside a transaction: (group, topic, partition, value).
type PendingOffset = (String, String, i32, OffsetValue);

/// Applies one record of the offsets topic read at start-up. Offsets written
/// by a transaction wait in `txn_pending` for its marker: COMMIT applies
/// them, ABORT drops them.
fn apply_record(
    r: internal_topic::ReadRecord,
    offsets: &mut HashMap<String, BTreeMap<(String, i32), OffsetValue>>,
    metas: &mut HashMap<String, Option<GroupValue>>,
    txn_pending: &mut HashMap<i64, Vec<PendingOffset>>,
) {
    let Some(key) = r.key else { return };
    if r.control {
        let committed = match crate::storage::markers::parse_control_key(&key) {
            Some(crate::storage::markers::ControlType::Commit) => true,
            Some(crate::storage::markers::ControlType::Abort) => false,
            _ => return,
        };
        for (group, topic, partition, v) in txn_pending.remove(&r.producer_id).unwrap_or_default() {
            if committed {
                offsets
                    .entry(group)
                    .or_default()
                    .insert((topic, partition), v);
            }
        }
        return;
    }
    match records::decode(key, r.value) {
        Ok(Entry::Offset {
            group,
            topic,
            partition,
            value,
        }) => match (value, r.transactional) {
            (Some(v), true) => txn_pending
                .entry(r.producer_id)
                .or_default()
                .push((group, topic, partition, v)),
            (Some(v), false) => {
                offsets
                    .entry(group)
                    .or_default()
                    .insert((topic, partition), v);
            }
            (None, _) => {
                offsets
                    .entry(group)
                    .or_default()
                    .remove(&(topic, partition));
            }
        },
        Ok(Entry::Group { group, value }) => {
            metas.insert(group, value);
        }
        Err(e) => tracing::warn!(offset = r.offset, error = %e, "skipping record"),
    }
}

/// Per-shard timers: sessions, rebalance and sync deadlines every 100 ms,
/// offset expiry every `offsets.retention.check.interval.ms`.
pub async fn timer_loop() {
    let cfg = partition_manager::broker_config();
    let expiry_every = cfg.groups.offsets_retention_check_interval_ms.max(100);
    let mut last_expiry = now_ms();
    loop {
        runtime::sleep(TICK).await;
        let now = now_ms();
        let lim = limits();
        let groups: Vec<Rc<RefCell<Group>>> =
            GROUPS.with(|g| g.borrow().values().cloned().collect());
        for g in &groups {
            g.borrow_mut().tick(&lim, now);
            if let Err(code) = store_if_needed(g).await {
                tracing::warn!(group = %g.borrow().id, code, "storing group metadata failed");
            }
        }
        if now - last_expiry >= expiry_every as i64 {
            last_expiry = now;
            expire_offsets(&groups, cfg.groups.offsets_retention_ms, now).await;
        }
    }
}

/// Deletes the offsets of groups that have been empty for the retention
/// time (per commit time for groups that never used the group protocol),
/// and drops groups left with nothing.
async fn expire_offsets(groups: &[Rc<RefCell<Group>>], retention_ms: i64, now: i64) {
    for g in groups {
        let (id, recs, expired, dead) = {
            let gb = g.borrow();
            if gb.state != GroupState::Empty || !gb.is_empty() {
                continue;
            }
            let expired: Vec<(String, i32)> = gb
                .offsets
                .iter()
                .filter(|(_, v)| {
                    let base = if gb.protocol_type.is_some() {
                        gb.state_timestamp_ms
                    } else {
                        v.commit_timestamp_ms
                    };
                    now - base >= retention_ms
                })
                .map(|(k, _)| k.clone())
                .collect();
            let dead = expired.len() == gb.offsets.len();
            if expired.is_empty() && !dead {
                continue;
            }
            let mut recs: Vec<(Bytes, Option<Bytes>)> = expired
                .iter()
                .map(|(t, p)| (records::offset_key(&gb.id, t, *p), None))
                .collect();
            if dead {
                recs.push((records::group_key(&gb.id), None));
            }
            (gb.id.clone(), recs, expired, dead)
        };
        if let Err(code) = append(&id, recs).await {
            tracing::warn!(group = %id, code, "expiring offsets failed");
            continue;
        }
        tracing::info!(group = %id, offsets = expired.len(), "expired committed offsets");
        let mut gb = g.borrow_mut();
        for k in &expired {
            gb.offsets.remove(k);
        }
        if dead && gb.state == GroupState::Empty && gb.is_empty() && gb.offsets.is_empty() {
            gb.kill(now);
            drop(gb);
            forget(&id);
        }
    }
}

/// A transaction's marker reached `__consumer_offsets` partition
/// `partition` (owned by this shard): the offsets its producer committed
/// there become visible (commit) or are dropped (abort).
pub fn complete_txn(partition: i32, producer_id: i64, commit: bool) {
    let groups: Vec<Rc<RefCell<Group>>> = GROUPS.with(|g| g.borrow().values().cloned().collect());
    for g in groups {
        if offsets_partition(&g.borrow().id) == partition {
            g.borrow_mut().complete_txn(producer_id, commit);
        }
    }
}

/// TxnOffsetCommit: offsets written inside the producer's transaction (a
/// transactional batch of `producer`), held pending until its marker.
/// Err: a group-level error; Ok: one code per item.
pub async fn txn_commit(
    group: String,
    producer: (i64, i16),
    member: String,
    instance: Option<String>,
    generation: i32,
    items: Vec<CommitItem>,
) -> Result<Vec<i16>, i16> {
    let g = find_or_create(&group);
    if generation >= 0 || !member.is_empty() {
        // v3+ carries the member's generation: checked as for OffsetCommit.
        g.borrow_mut()
            .validate_commit(&member, instance.as_deref(), generation, now_ms())?;
    }
    let now = now_ms();
    let Checked {
        mut codes,
        recs,
        accepted,
    } = check_commit(&group, items, now);
    if let Err(code) = internal_topic::append(
        OFFSETS_TOPIC,
        offsets_partition(&group),
        recs,
        Some(producer),
    )
    .await
    {
        for c in codes.iter_mut().filter(|c| **c == 0) {
            *c = code;
        }
        return Ok(codes);
    }
    g.borrow_mut()
        .pending_txn
        .entry(producer.0)
        .or_default()
        .extend(accepted);
    Ok(codes)
}
