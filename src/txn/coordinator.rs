//! The transaction coordinator of one shard: the transactional ids whose
//! `__transaction_state` partition this shard owns, their persistence, the
//! start-up load, the markers that finish a transaction, and the timers
//! (transaction timeouts, id expiry). Like `group::coordinator`, everything
//! here runs on the owning shard and returns plain data.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::rc::Rc;
use std::time::Duration;

use kafka_protocol::error::ResponseError as E;

use super::describe::{self, Description, ListFilter, Listing};
use super::marker_writer::{self, MarkerSpec};
use super::records;
use super::state::Txn;
use super::transition::{
    epoch_exhausted, InitOutcome, Outcome, TopicPartition, Transition, TxnState,
};
use super::{partition_for, Limits, TxnError, TXN_STATE_TOPIC};
use crate::cluster::{image, internal_topic, owner_shard, partition_manager, producer_ids};
use crate::runtime;
use crate::runtime::now_ms;

thread_local! {
    static TXNS: RefCell<HashMap<String, Rc<RefCell<Txn>>>> = RefCell::new(HashMap::new());
    static LOADED: Cell<bool> = const { Cell::new(false) };
    /// `__transaction_state` partitions led here whose ids are loaded on this shard.
    static LEADING: RefCell<std::collections::HashSet<i32>> = RefCell::new(std::collections::HashSet::new());
    /// Leadership changes seen before the start-up load finished, handled after it.
    static DEFERRED: RefCell<Vec<i32>> = const { RefCell::new(Vec::new()) };
}

/// Whether this shard has finished loading its transactional ids.
pub fn loaded() -> bool {
    LOADED.with(Cell::get)
}

/// Whether the ids of `__transaction_state` partition `partition` are loaded here: false
/// while this broker takes over its leadership (COORDINATOR_LOAD_IN_PROGRESS).
pub fn loaded_partition(partition: i32) -> bool {
    loaded() && LEADING.with(|l| l.borrow().contains(&partition))
}

fn leads(partition: i32) -> bool {
    let me = partition_manager::broker_config().node_id;
    !crate::cluster::multi_node()
        || crate::cluster::leader_of(&image(), TXN_STATE_TOPIC, partition) == me
}

/// The `partition_manager` leadership hook: this broker started or stopped leading a
/// `__transaction_state` partition, so its transactional ids are loaded from it (and the
/// transactions caught completing are finished), or dropped.
pub fn on_leadership_change(topic: &str, partition: i32, _leading: bool) {
    if topic != TXN_STATE_TOPIC {
        return;
    }
    if !loaded() {
        DEFERRED.with(|d| d.borrow_mut().push(partition));
        return;
    }
    runtime::spawn(take_over(partition));
}

async fn take_over(partition: i32) {
    let n = image()
        .topic(TXN_STATE_TOPIC)
        .map_or(1, |t| t.partitions.len() as i32);
    LEADING.with(|l| l.borrow_mut().remove(&partition));
    TXNS.with(|t| {
        t.borrow_mut()
            .retain(|id, _| crate::txn::partition_for(id, n) != partition)
    });
    if !leads(partition) {
        tracing::info!(
            partition,
            "no longer coordinating the transactions of this partition"
        );
        return;
    }
    match load_partitions(&[partition]).await {
        Ok(count) if leads(partition) => {
            LEADING.with(|l| l.borrow_mut().insert(partition));
            tracing::info!(
                partition,
                transactional_ids = count,
                "coordinating the transactions of this partition"
            );
        }
        Ok(_) => {}
        Err(e) => {
            tracing::error!(partition, error = %format!("{e:#}"), "cannot load the transactions of a partition")
        }
    }
}

pub fn limits() -> Limits {
    let t = &partition_manager::broker_config().txns;
    Limits {
        max_timeout_ms: t.max_timeout_ms,
        id_expiration_ms: t.id_expiration_ms,
    }
}

/// Creates `__transaction_state` if needed. Err: a Kafka code.
pub async fn ensure_topic() -> Result<(), i16> {
    let t = &partition_manager::broker_config().txns;
    internal_topic::ensure(internal_topic::InternalTopic {
        name: TXN_STATE_TOPIC,
        partitions: t.state_partitions,
        segment_bytes: t.state_segment_bytes,
        replication_factor: t.state_replication_factor,
        min_isr: Some(t.state_min_isr),
    })
    .await
}

/// The shard coordinating `transactional_id`; None until the topic exists.
pub fn locate(transactional_id: &str) -> Option<usize> {
    let img = image();
    let t = img.topic(TXN_STATE_TOPIC)?;
    let p = partition_for(transactional_id, t.partitions.len() as i32);
    Some(owner_shard(TXN_STATE_TOPIC, p, runtime::nr_shards()))
}

/// The `__transaction_state` partition of a transactional id; None until the topic exists.
pub fn partition_of(transactional_id: &str) -> Option<i32> {
    let img = image();
    let t = img.topic(TXN_STATE_TOPIC)?;
    Some(partition_for(transactional_id, t.partitions.len() as i32))
}

fn state_partition(id: &str) -> i32 {
    let n = image()
        .topic(TXN_STATE_TOPIC)
        .map(|t| t.partitions.len() as i32)
        .unwrap_or(1);
    partition_for(id, n)
}

fn find(id: &str) -> Option<Rc<RefCell<Txn>>> {
    TXNS.with(|t| t.borrow().get(id).cloned())
}

fn find_or_create(id: &str) -> Rc<RefCell<Txn>> {
    TXNS.with(|t| {
        t.borrow_mut()
            .entry(id.to_string())
            .or_insert_with(|| Rc::new(RefCell::new(Txn::new(id, now_ms()))))
            .clone()
    })
}

/// Writes a transition, then applies it (or rolls the pending state back).
async fn persist(txn: &Rc<RefCell<Txn>>, t: &Transition) -> Result<(), i16> {
    let id = txn.borrow().id().to_string();
    let rec = t.record(&id);
    match internal_topic::append(TXN_STATE_TOPIC, state_partition(&id), vec![rec], None).await {
        Ok(()) => txn.borrow_mut().complete(t).map_err(|e| {
            tracing::error!(transactional_id = %id, error = %e, "completing a transition");
            e.code()
        }),
        Err(code) => {
            txn.borrow_mut().abort_pending(t);
            Err(code)
        }
    }
}

/// InitProducerId with a transactional id: Ok((producer id, epoch)).
pub async fn init_producer_id(
    id: String,
    timeout_ms: i32,
    expected: Option<(i64, i16)>,
    version: i16,
) -> Result<(i64, i16), i16> {
    let txn = find_or_create(&id);
    // A new id, or one whose epochs ran out, gets a new producer id: fetch it
    // before the (synchronous) state machine runs, and only then.
    let needs_pid = {
        let t = txn.borrow();
        t.producer_id() < 0 || epoch_exhausted(t.producer_epoch())
    };
    let spare = if needs_pid {
        producer_ids::next_producer_id()
            .await
            .map_err(|_| E::CoordinatorNotAvailable.code())?
    } else {
        -1
    };
    let outcome =
        txn.borrow_mut()
            .init_producer_id(timeout_ms, expected, &limits(), now_ms(), || spare);
    let code =
        |e: TxnError| e.code_for_version(version, super::PRODUCER_FENCED_SINCE_INIT_PRODUCER_ID);
    match outcome {
        Err(e) => {
            if txn.borrow().is_placeholder() {
                TXNS.with(|t| t.borrow_mut().remove(&id));
            }
            Err(code(e))
        }
        Ok(InitOutcome::Ready(t)) => {
            persist(&txn, &t).await?;
            let b = txn.borrow();
            Ok((b.producer_id(), b.producer_epoch()))
        }
        Ok(InitOutcome::Fence(t)) => {
            persist(&txn, &t).await?;
            runtime::spawn(finish(txn.clone()));
            Err(E::ConcurrentTransactions.code())
        }
    }
}

async fn apply_outcome(
    txn: &Rc<RefCell<Txn>>,
    outcome: Result<Outcome, TxnError>,
    version: i16,
    since: i16,
) -> Result<(), i16> {
    match outcome {
        Err(e) => Err(e.code_for_version(version, since)),
        Ok(Outcome::Done) => Ok(()),
        Ok(Outcome::Persist(t)) => persist(txn, &t).await,
    }
}

/// AddPartitionsToTxn for one transactional id: one code for all partitions.
pub async fn add_partitions(
    id: String,
    producer_id: i64,
    epoch: i16,
    partitions: Vec<TopicPartition>,
    version: i16,
) -> i16 {
    let Some(txn) = find(&id) else {
        return E::InvalidProducerIdMapping.code();
    };
    let outcome = txn
        .borrow_mut()
        .add_partitions(producer_id, epoch, &partitions, now_ms());
    apply_outcome(
        &txn,
        outcome,
        version,
        super::PRODUCER_FENCED_SINCE_ADD_PARTITIONS,
    )
    .await
    .err()
    .unwrap_or(0)
}

/// AddOffsetsToTxn: adds the group's `__consumer_offsets` partition.
pub async fn add_offsets(
    id: String,
    producer_id: i64,
    epoch: i16,
    group: String,
    version: i16,
) -> i16 {
    let Some(txn) = find(&id) else {
        return E::InvalidProducerIdMapping.code();
    };
    let n = image()
        .topic(crate::group::OFFSETS_TOPIC)
        .map(|t| t.partitions.len() as i32)
        .unwrap_or(partition_manager::broker_config().groups.offsets_partitions);
    let outcome = txn
        .borrow_mut()
        .add_offsets(producer_id, epoch, &group, n, now_ms());
    apply_outcome(
        &txn,
        outcome,
        version,
        super::PRODUCER_FENCED_SINCE_ADD_OFFSETS,
    )
    .await
    .err()
    .unwrap_or(0)
}

/// EndTxn: answered once PrepareCommit/PrepareAbort is durable; the markers
/// and the Complete state follow in the background, as in Kafka.
pub async fn end_txn(id: String, producer_id: i64, epoch: i16, commit: bool, version: i16) -> i16 {
    let Some(txn) = find(&id) else {
        return E::InvalidProducerIdMapping.code();
    };
    let outcome = txn
        .borrow_mut()
        .end_txn(producer_id, epoch, commit, now_ms());
    let persisted = matches!(outcome, Ok(Outcome::Persist(_)));
    match apply_outcome(&txn, outcome, version, super::PRODUCER_FENCED_SINCE_END_TXN).await {
        Ok(()) => {
            if persisted {
                runtime::spawn(finish(txn.clone()));
            }
            0
        }
        Err(code) => code,
    }
}

/// Writes the markers of a transaction in PrepareCommit/PrepareAbort to all
/// its partitions, then records it complete. Retries until it gets there: each
/// round writes the markers still missing (`marker_writer`: here on the
/// partitions this broker leads, through WriteTxnMarkers on those other brokers
/// lead; a partition being deleted counts as done), with a growing backoff.
/// Stops when this broker no longer coordinates the id (the new coordinator
/// loads the transaction and finishes it).
async fn finish(txn: Rc<RefCell<Txn>>) {
    let mut backoff = Duration::from_millis(50);
    // The partitions still without their marker; None: all of them (the first round).
    let mut missing: Option<Vec<TopicPartition>> = None;
    loop {
        let id = txn.borrow().id().to_string();
        if !coordinating(&id, &txn) {
            tracing::info!(transactional_id = %id,
                "no longer the transaction's coordinator: leaving its markers to the new one");
            return;
        }
        let plan = {
            let b = txn.borrow();
            b.markers().map(|m| {
                (
                    MarkerSpec {
                        producer_id: m.producer_id,
                        producer_epoch: m.producer_epoch,
                        commit: m.commit,
                        coordinator_epoch: coordinator_epoch(&id),
                    },
                    m.partitions.iter().cloned().collect::<Vec<_>>(),
                )
            })
        };
        let Some((marker, parts)) = plan else {
            return;
        };
        let left = marker_writer::write_all(marker, missing.take().unwrap_or(parts)).await;
        let done = left.is_empty();
        missing = Some(left);
        if done {
            let t = txn.borrow_mut().prepare_complete(now_ms());
            match t {
                Ok(t) => {
                    if persist(&txn, &t).await.is_ok() {
                        return;
                    }
                }
                Err(TxnError::ConcurrentTransactions) => {}
                Err(e) => {
                    tracing::error!(error = %e, "completing a transaction");
                    return;
                }
            }
        }
        runtime::sleep(backoff).await;
        backoff = (backoff * 2).min(Duration::from_secs(5));
    }
}

/// Whether `txn` is still the state of `id` this broker coordinates: false once the
/// leadership of its `__transaction_state` partition moved (`take_over` drops the ids).
fn coordinating(id: &str, txn: &Rc<RefCell<Txn>>) -> bool {
    leads(state_partition(id)) && find(id).is_some_and(|t| Rc::ptr_eq(&t, txn))
}

/// Kafka's coordinator epoch of `id`: the leader epoch of its `__transaction_state`
/// partition (0 on a single node's unreplicated partition).
fn coordinator_epoch(id: &str) -> i32 {
    image()
        .partition(TXN_STATE_TOPIC, state_partition(id))
        .map_or(0, |(_, p)| p.leader_epoch.max(0))
}

pub fn describe(id: String) -> Result<Description, i16> {
    match find(&id) {
        None => Err(E::TransactionalIdNotFound.code()),
        Some(t) => describe::describe(&t.borrow()).map_err(TxnError::code),
    }
}

pub fn list(filter: &ListFilter) -> Listing {
    let txns: Vec<Rc<RefCell<Txn>>> = TXNS.with(|t| t.borrow().values().cloned().collect());
    let borrowed: Vec<std::cell::Ref<'_, Txn>> = txns.iter().map(|t| t.borrow()).collect();
    describe::list(borrowed.iter().map(|b| &**b), filter, now_ms())
}

/// Rebuilds this shard's transactional ids from `__transaction_state`, and
/// resumes the markers of transactions caught in PrepareCommit/PrepareAbort.
pub async fn load_owned() -> anyhow::Result<usize> {
    let img = image();
    let owned: Vec<i32> = match img.topic(TXN_STATE_TOPIC) {
        None => Vec::new(),
        Some(t) => {
            let (me, n) = (runtime::shard_id(), runtime::nr_shards());
            t.partitions
                .iter()
                .filter(|pm| owner_shard(TXN_STATE_TOPIC, pm.index, n) == me)
                .map(|pm| pm.index)
                .filter(|i| leads(*i))
                .collect()
        }
    };
    let count = load_partitions(&owned).await?;
    LEADING.with(|l| l.borrow_mut().extend(owned.iter().copied()));
    LOADED.with(|l| l.set(true));
    for partition in DEFERRED.with(|d| std::mem::take(&mut *d.borrow_mut())) {
        if leads(partition) != LEADING.with(|l| l.borrow().contains(&partition)) {
            runtime::spawn(take_over(partition));
        }
    }
    Ok(count)
}

/// Reads the given `__transaction_state` partitions (owned by this shard) and adds their
/// transactional ids, resuming the markers of transactions caught completing.
async fn load_partitions(indices: &[i32]) -> anyhow::Result<usize> {
    let mut last: HashMap<String, Option<records::TxnValue>> = HashMap::new();
    for &index in indices {
        internal_topic::read_all(TXN_STATE_TOPIC, index, |r| {
            let Some(key) = r.key else { return };
            match records::decode(key, r.value) {
                Ok((id, v)) => {
                    last.insert(id, v);
                }
                Err(e) => tracing::warn!(offset = r.offset, error = %e, "skipping record"),
            }
        })
        .await?;
    }
    let mut resume = Vec::new();
    let count = TXNS.with(|txns| {
        let mut txns = txns.borrow_mut();
        let mut added = 0;
        for (id, v) in last {
            let Some(v) = v else { continue };
            let Some(txn) = Txn::restore(&id, &v) else {
                continue;
            };
            let prepared = matches!(
                txn.state(),
                TxnState::PrepareCommit | TxnState::PrepareAbort
            );
            let rc = Rc::new(RefCell::new(txn));
            if prepared {
                tracing::info!(transactional_id = %id, state = %rc.borrow().state().name(),
                    "transaction was being completed: writing its markers again");
                resume.push(rc.clone());
            }
            txns.insert(id, rc);
            added += 1;
        }
        added
    });
    for t in resume {
        runtime::spawn(finish(t));
    }
    Ok(count)
}

/// Aborts transactions open past their timeout and forgets idle ids.
pub async fn timer_loop() {
    let cfg = partition_manager::broker_config();
    let every = Duration::from_millis(cfg.txns.abort_check_interval_ms.max(100));
    let expire_every = cfg.txns.expire_check_interval_ms.max(100) as i64;
    let mut last_expiry = now_ms();
    loop {
        runtime::sleep(every).await;
        let now = now_ms();
        let txns: Vec<Rc<RefCell<Txn>>> = TXNS.with(|t| t.borrow().values().cloned().collect());
        for txn in &txns {
            let fence = txn.borrow_mut().abort_if_timed_out(now);
            if let Ok(Some(t)) = fence {
                let id = txn.borrow().id().to_string();
                tracing::info!(transactional_id = %id, "transaction timed out: aborting it");
                if persist(txn, &t).await.is_ok() {
                    runtime::spawn(finish(txn.clone()));
                }
            }
        }
        if now - last_expiry >= expire_every {
            last_expiry = now;
            let lim = limits();
            for txn in &txns {
                let dead = txn.borrow_mut().expire_if_idle(now, &lim);
                if let Some(t) = dead {
                    let id = txn.borrow().id().to_string();
                    if persist(txn, &t).await.is_ok() {
                        TXNS.with(|m| m.borrow_mut().remove(&id));
                    }
                }
            }
        }
    }
}
