//! One transactional id's state machine (Kafka's `TransactionMetadata` and
//! the decisions of its `TransactionCoordinator`). Pure logic: no I/O, time
//! passed in.
//!
//! States: Empty -> Ongoing (partitions added) -> PrepareCommit or
//! PrepareAbort (EndTxn; the markers are written next) -> CompleteCommit or
//! CompleteAbort (every partition has its marker) -> Ongoing again (the next
//! transaction) ... Every InitProducerId bumps the epoch (back to Empty). An
//! InitProducerId or a timeout that finds a transaction Ongoing fences the
//! producer: the epoch is bumped and the transaction aborted. Dead is a
//! transactional id being forgotten after `transactional.id.expiration.ms`
//! idle; PrepareEpochFence only ever exists as a pending state.
//!
//! Each operation either refuses (`TxnError`), answers at once
//! (`Outcome::Done`), or returns the `Transition` to persist and marks it
//! pending: further operations get CONCURRENT_TRANSACTIONS until the caller
//! has written `Transition::record()` and called `complete` (or
//! `abort_pending` if the write failed).

use std::collections::BTreeSet;

use super::records::TxnValue;
pub use super::transition::{
    epoch_exhausted, expected_producer, InitOutcome, MarkerPlan, Outcome, TopicPartition,
    Transition, TxnState, NO_PRODUCER_EPOCH, NO_PRODUCER_ID,
};
use super::{Limits, TxnError};
use crate::group::OFFSETS_TOPIC;

/// One transactional id. Fields change only through the operations below.
#[derive(Clone, Debug)]
pub struct Txn {
    pub(super) id: String,
    pub(super) state: TxnState,
    pub(super) producer_id: i64,
    pub(super) last_producer_id: i64,
    pub(super) producer_epoch: i16,
    pub(super) last_producer_epoch: i16,
    pub(super) txn_timeout_ms: i32,
    pub(super) partitions: BTreeSet<TopicPartition>,
    pub(super) txn_start_ms: i64,
    pub(super) last_update_ms: i64,
    /// The state a transition being written leads to.
    pub(super) pending: Option<TxnState>,
    /// A fence's write failed: its bumped epoch is already in force here, so
    /// the next fence does not bump again (the client never saw the epoch).
    failed_epoch_fence: bool,
}

impl Txn {
    /// A transactional id seen for the first time: no producer id yet (the
    /// first InitProducerId allocates one), nothing persisted.
    pub fn new(id: &str, now: i64) -> Txn {
        Txn {
            id: id.to_string(),
            state: TxnState::Empty,
            producer_id: NO_PRODUCER_ID,
            last_producer_id: NO_PRODUCER_ID,
            producer_epoch: NO_PRODUCER_EPOCH,
            last_producer_epoch: NO_PRODUCER_EPOCH,
            txn_timeout_ms: 0,
            partitions: BTreeSet::new(),
            txn_start_ms: -1,
            last_update_ms: now,
            pending: None,
            failed_epoch_fence: false,
        }
    }

    /// A transactional id as loaded from its last record. None for states
    /// Kafka never writes (Dead is a tombstone, PrepareEpochFence is only
    /// pending). After loading, a Prepare* state still owes its markers.
    pub fn restore(id: &str, v: &TxnValue) -> Option<Txn> {
        if matches!(v.state, TxnState::Dead | TxnState::PrepareEpochFence) {
            return None;
        }
        let mut t = Txn::new(id, v.last_update_ms);
        t.state = v.state;
        t.producer_id = v.producer_id;
        t.last_producer_id = v.previous_producer_id;
        t.producer_epoch = v.producer_epoch;
        t.txn_timeout_ms = v.txn_timeout_ms;
        t.txn_start_ms = v.start_ms;
        if v.state != TxnState::Empty {
            for (topic, ids) in v.partitions.iter().flatten() {
                t.partitions.extend(ids.iter().map(|p| (topic.clone(), *p)));
            }
        }
        Some(t)
    }

    pub fn id(&self) -> &str {
        &self.id
    }
    pub fn state(&self) -> TxnState {
        self.state
    }
    pub fn producer_id(&self) -> i64 {
        self.producer_id
    }
    pub fn producer_epoch(&self) -> i16 {
        self.producer_epoch
    }
    pub fn pending(&self) -> Option<TxnState> {
        self.pending
    }
    /// Never persisted and no producer id: the coordinator may drop it.
    pub fn is_placeholder(&self) -> bool {
        self.producer_id < 0 && self.pending.is_none()
    }

    /// The current state as a transition to `state`.
    fn next(&self, state: TxnState) -> Transition {
        Transition {
            state,
            producer_id: self.producer_id,
            last_producer_id: self.last_producer_id,
            producer_epoch: self.producer_epoch,
            last_producer_epoch: self.last_producer_epoch,
            txn_timeout_ms: self.txn_timeout_ms,
            partitions: self.partitions.clone(),
            txn_start_ms: self.txn_start_ms,
            last_update_ms: self.last_update_ms,
        }
    }

    /// Marks `t` pending (as `pending`, which differs from `t.state` only
    /// for a fence) after checking Kafka's table of valid transitions.
    fn prepare(&mut self, pending: TxnState, t: Transition) -> Result<Transition, TxnError> {
        if self.pending.is_some() {
            return Err(TxnError::ConcurrentTransactions);
        }
        if !pending.valid_previous().contains(&self.state) {
            return Err(TxnError::Internal("invalid state transition"));
        }
        if t.producer_id < 0 || (t.state != TxnState::Dead && t.producer_epoch < 0) {
            return Err(TxnError::Internal(
                "transition without a producer id or epoch",
            ));
        }
        self.pending = Some(pending);
        Ok(t)
    }

    /// InitProducerId with this transactional id. `expected`: the producer's
    /// current id and epoch (v3+, see `expected_producer`). `allocate_pid`
    /// is called for a new id, or when the epochs of the current one are
    /// exhausted.
    pub fn init_producer_id(
        &mut self,
        txn_timeout_ms: i32,
        expected: Option<(i64, i16)>,
        limits: &Limits,
        now: i64,
        allocate_pid: impl FnOnce() -> i64,
    ) -> Result<InitOutcome, TxnError> {
        if txn_timeout_ms <= 0 || txn_timeout_ms > limits.max_timeout_ms {
            return Err(TxnError::InvalidTransactionTimeout);
        }
        let mut allocate = Some(allocate_pid);
        let mut new_pid = || match allocate.take().map(|f| f()) {
            Some(pid) if pid >= 0 => Ok(pid),
            _ => Err(TxnError::Internal("no producer id allocated")),
        };
        if self.producer_id < 0 {
            // Like Kafka, the id gets its producer id in memory at once, with
            // epoch -1, and keeps it even if the first write fails.
            self.producer_id = new_pid()?;
            self.txn_timeout_ms = txn_timeout_ms;
        }
        if self.pending.is_some() {
            return Err(TxnError::ConcurrentTransactions);
        }
        if let Some((pid, epoch)) = expected {
            // KIP-360: a producer may resume with its current producer id, or
            // with the previous one if that one's epochs ran out (a retry
            // whose answer was lost); a fresh id (epoch -1) accepts anyone.
            let resumable = self.producer_epoch == NO_PRODUCER_EPOCH
                || pid == self.producer_id
                || (pid == self.last_producer_id && epoch_exhausted(epoch));
            if !resumable {
                return Err(TxnError::ProducerFenced);
            }
        }
        match self.state {
            TxnState::PrepareCommit | TxnState::PrepareAbort => {
                Err(TxnError::ConcurrentTransactions)
            }
            TxnState::Ongoing => Ok(InitOutcome::Fence(self.prepare_fence(now)?)),
            TxnState::Empty | TxnState::CompleteCommit | TxnState::CompleteAbort => {
                let t = if epoch_exhausted(self.producer_epoch) {
                    if expected.is_some_and(|(_, e)| e != self.producer_epoch) {
                        // Kafka fails this case with an internal error; the
                        // producer's epoch is older than the current one.
                        return Err(TxnError::ProducerFenced);
                    }
                    self.rotation(new_pid()?, txn_timeout_ms, expected.is_some(), now)
                } else {
                    self.epoch_bump(txn_timeout_ms, expected.map(|(_, e)| e), now)?
                };
                Ok(InitOutcome::Ready(self.prepare(TxnState::Empty, t)?))
            }
            TxnState::Dead | TxnState::PrepareEpochFence => {
                Err(TxnError::Internal("InitProducerId on a dead or fencing id"))
            }
        }
    }

    /// The next epoch of the same producer id (back to Empty).
    fn epoch_bump(
        &self,
        txn_timeout_ms: i32,
        expected_epoch: Option<i16>,
        now: i64,
    ) -> Result<Transition, TxnError> {
        let bumped = self.producer_epoch + 1; // not exhausted: no overflow
        let (epoch, last_epoch) = match expected_epoch {
            None => (bumped, NO_PRODUCER_EPOCH),
            Some(e) if self.producer_epoch == NO_PRODUCER_EPOCH || e == self.producer_epoch => {
                (bumped, self.producer_epoch)
            }
            // A retry of a bump whose answer was lost: answer it again.
            Some(e) if e == self.last_producer_epoch => {
                (self.producer_epoch, self.last_producer_epoch)
            }
            Some(_) => return Err(TxnError::ProducerFenced),
        };
        Ok(Transition {
            producer_epoch: epoch,
            last_producer_epoch: last_epoch,
            last_producer_id: self.producer_id,
            txn_timeout_ms,
            partitions: BTreeSet::new(),
            txn_start_ms: -1,
            last_update_ms: now,
            ..self.next(TxnState::Empty)
        })
    }

    /// A new producer id at epoch 0, when the current one's epochs ran out.
    fn rotation(&self, pid: i64, txn_timeout_ms: i32, record_last: bool, now: i64) -> Transition {
        Transition {
            producer_id: pid,
            last_producer_id: self.producer_id,
            producer_epoch: 0,
            last_producer_epoch: if record_last {
                self.producer_epoch
            } else {
                NO_PRODUCER_EPOCH
            },
            txn_timeout_ms,
            partitions: BTreeSet::new(),
            txn_start_ms: -1,
            last_update_ms: now,
            ..self.next(TxnState::Empty)
        }
    }

    /// Aborts the ongoing transaction with a bumped epoch, fencing its
    /// producer (Kafka's PrepareEpochFence followed by PrepareAbort).
    fn prepare_fence(&mut self, now: i64) -> Result<Transition, TxnError> {
        let epoch = if self.failed_epoch_fence {
            self.producer_epoch
        } else {
            self.producer_epoch
                .checked_add(1)
                .ok_or(TxnError::Internal(
                    "cannot fence: producer epoch at its maximum",
                ))?
        };
        let t = Transition {
            producer_epoch: epoch,
            last_producer_epoch: NO_PRODUCER_EPOCH,
            last_update_ms: now,
            ..self.next(TxnState::PrepareAbort)
        };
        self.prepare(TxnState::PrepareEpochFence, t)
    }

    /// The producer of a request must own the id: its producer id, then its
    /// exact epoch.
    fn check_producer(&self, producer_id: i64, producer_epoch: i16) -> Result<(), TxnError> {
        if self.producer_id < 0 || self.state == TxnState::Dead || producer_id != self.producer_id {
            return Err(TxnError::InvalidProducerIdMapping);
        }
        if producer_epoch != self.producer_epoch {
            return Err(TxnError::ProducerFenced);
        }
        Ok(())
    }

    /// AddPartitionsToTxn (v0-3; v4+ batches are this per transactional id).
    pub fn add_partitions(
        &mut self,
        producer_id: i64,
        producer_epoch: i16,
        partitions: &[TopicPartition],
        now: i64,
    ) -> Result<Outcome, TxnError> {
        self.check_producer(producer_id, producer_epoch)?;
        if self.pending.is_some() {
            return Err(TxnError::ConcurrentTransactions);
        }
        let start_ms = match self.state {
            TxnState::PrepareCommit | TxnState::PrepareAbort => {
                return Err(TxnError::ConcurrentTransactions)
            }
            TxnState::Ongoing if partitions.iter().all(|p| self.partitions.contains(p)) => {
                return Ok(Outcome::Done)
            }
            TxnState::Ongoing => self.txn_start_ms,
            // The first partition starts a transaction.
            TxnState::Empty | TxnState::CompleteCommit | TxnState::CompleteAbort => now,
            TxnState::Dead | TxnState::PrepareEpochFence => {
                return Err(TxnError::Internal("AddPartitions on a dead or fencing id"))
            }
        };
        let mut all = self.partitions.clone();
        all.extend(partitions.iter().cloned());
        let t = Transition {
            partitions: all,
            txn_start_ms: start_ms,
            last_update_ms: now,
            ..self.next(TxnState::Ongoing)
        };
        Ok(Outcome::Persist(self.prepare(TxnState::Ongoing, t)?))
    }

    /// AddOffsetsToTxn: adds the group's `__consumer_offsets` partition, where
    /// TxnOffsetCommit will write, given that topic's partition count.
    pub fn add_offsets(
        &mut self,
        producer_id: i64,
        producer_epoch: i16,
        group: &str,
        offsets_partitions: i32,
        now: i64,
    ) -> Result<Outcome, TxnError> {
        let p = crate::group::partition_for(group, offsets_partitions);
        self.add_partitions(
            producer_id,
            producer_epoch,
            &[(OFFSETS_TOPIC.to_string(), p)],
            now,
        )
    }

    /// EndTxn from the client: commit or abort the ongoing transaction. A
    /// retry after the same end completed succeeds; one still being
    /// completed gets CONCURRENT_TRANSACTIONS; the other end is refused.
    pub fn end_txn(
        &mut self,
        producer_id: i64,
        producer_epoch: i16,
        commit: bool,
        now: i64,
    ) -> Result<Outcome, TxnError> {
        self.check_producer(producer_id, producer_epoch)?;
        if self.pending.is_some() {
            return Err(TxnError::ConcurrentTransactions);
        }
        let prepare = if commit {
            TxnState::PrepareCommit
        } else {
            TxnState::PrepareAbort
        };
        match (self.state, commit) {
            (TxnState::Ongoing, _) => {
                let t = Transition {
                    last_update_ms: now,
                    ..self.next(prepare)
                };
                Ok(Outcome::Persist(self.prepare(prepare, t)?))
            }
            (TxnState::CompleteCommit, true) | (TxnState::CompleteAbort, false) => {
                Ok(Outcome::Done)
            }
            (TxnState::PrepareCommit, true) | (TxnState::PrepareAbort, false) => {
                Err(TxnError::ConcurrentTransactions)
            }
            (
                TxnState::Empty
                | TxnState::CompleteCommit
                | TxnState::CompleteAbort
                | TxnState::PrepareCommit
                | TxnState::PrepareAbort,
                _,
            ) => Err(TxnError::InvalidTxnState),
            (TxnState::Dead | TxnState::PrepareEpochFence, _) => {
                Err(TxnError::Internal("EndTxn on a dead or fencing id"))
            }
        }
    }

    /// The markers owed while PrepareCommit or PrepareAbort is persisted.
    pub fn markers(&self) -> Option<MarkerPlan<'_>> {
        let commit = match self.state {
            TxnState::PrepareCommit => true,
            TxnState::PrepareAbort => false,
            _ => return None,
        };
        Some(MarkerPlan {
            commit,
            producer_id: self.producer_id,
            producer_epoch: self.producer_epoch,
            partitions: &self.partitions,
        })
    }

    /// Every partition has its marker: CompleteCommit or CompleteAbort.
    pub fn prepare_complete(&mut self, now: i64) -> Result<Transition, TxnError> {
        let state = match self.state {
            TxnState::PrepareCommit => TxnState::CompleteCommit,
            TxnState::PrepareAbort => TxnState::CompleteAbort,
            _ => return Err(TxnError::InvalidTxnState),
        };
        let t = Transition {
            partitions: BTreeSet::new(),
            last_update_ms: now,
            ..self.next(state)
        };
        let t = self.prepare(state, t)?;
        // The fence (if any) is durable now.
        self.failed_epoch_fence = false;
        Ok(t)
    }

    /// A transaction Ongoing longer than its timeout is aborted, fencing its
    /// producer. Some: the PrepareAbort to persist (then markers, complete).
    pub fn abort_if_timed_out(&mut self, now: i64) -> Result<Option<Transition>, TxnError> {
        let overdue = self.state == TxnState::Ongoing
            && self.pending.is_none()
            && self
                .txn_start_ms
                .saturating_add(i64::from(self.txn_timeout_ms))
                < now;
        if !overdue {
            return Ok(None);
        }
        self.prepare_fence(now).map(Some)
    }

    /// An id with no transaction open, idle for `transactional.id.expiration.ms`,
    /// is forgotten. Some: the Dead transition whose record is a tombstone;
    /// once it is written and completed the caller drops the id.
    pub fn expire_if_idle(&mut self, now: i64, limits: &Limits) -> Option<Transition> {
        let idle = self.state.expiration_allowed()
            && self.pending.is_none()
            && self.last_update_ms <= now.saturating_sub(limits.id_expiration_ms);
        if !idle {
            return None;
        }
        let t = Transition {
            partitions: BTreeSet::new(),
            ..self.next(TxnState::Dead)
        };
        self.prepare(TxnState::Dead, t).ok()
    }

    /// Applies a persisted transition. Err: it is not the pending one or does
    /// not follow from the current state (a coordinator bug; the pending
    /// state is cleared so the id is not stuck).
    pub fn complete(&mut self, t: &Transition) -> Result<(), TxnError> {
        let pending = self.pending.take().ok_or(TxnError::Internal(
            "completing a transition that is not pending",
        ))?;
        let fence = pending == TxnState::PrepareEpochFence;
        let same_producer =
            t.producer_id == self.producer_id && t.producer_epoch == self.producer_epoch;
        let ok = match t.state {
            _ if t.state != pending && !(fence && t.state == TxnState::PrepareAbort) => false,
            TxnState::Empty => {
                let bumped = i32::from(t.producer_epoch) == i32::from(self.producer_epoch) + 1
                    || (t.producer_epoch == 0 && t.producer_id != self.producer_id);
                (t.producer_epoch == self.producer_epoch || bumped)
                    && t.partitions.is_empty()
                    && t.txn_start_ms == -1
            }
            TxnState::Ongoing => {
                same_producer
                    && self.partitions.is_subset(&t.partitions)
                    && t.txn_timeout_ms == self.txn_timeout_ms
            }
            TxnState::PrepareCommit | TxnState::PrepareAbort => {
                let epoch_ok = if fence {
                    t.producer_id == self.producer_id
                        && (t.producer_epoch == self.producer_epoch
                            || i32::from(t.producer_epoch) == i32::from(self.producer_epoch) + 1)
                } else {
                    same_producer
                };
                epoch_ok
                    && t.partitions == self.partitions
                    && t.txn_timeout_ms == self.txn_timeout_ms
                    && t.txn_start_ms == self.txn_start_ms
            }
            TxnState::CompleteCommit | TxnState::CompleteAbort => {
                same_producer && t.txn_timeout_ms == self.txn_timeout_ms && t.txn_start_ms != -1
            }
            TxnState::Dead => true,
            TxnState::PrepareEpochFence => false,
        };
        if !ok {
            return Err(TxnError::Internal(
                "transition does not follow the current state",
            ));
        }
        self.state = t.state;
        self.producer_id = t.producer_id;
        self.last_producer_id = t.last_producer_id;
        self.producer_epoch = t.producer_epoch;
        self.last_producer_epoch = t.last_producer_epoch;
        self.txn_timeout_ms = t.txn_timeout_ms;
        self.partitions = t.partitions.clone();
        self.txn_start_ms = t.txn_start_ms;
        self.last_update_ms = t.last_update_ms;
        Ok(())
    }

    /// The write of the pending transition failed: nothing changes, except
    /// that a fence's bumped epoch stays in force (as in Kafka, the old
    /// producer stays fenced; the next fence will not bump again).
    pub fn abort_pending(&mut self, t: &Transition) {
        if self.pending == Some(TxnState::PrepareEpochFence) {
            self.producer_epoch = t.producer_epoch;
            self.last_producer_epoch = NO_PRODUCER_EPOCH;
            self.failed_epoch_fence = true;
        }
        self.pending = None;
    }
}
