//! Tests of the transaction state machine: every transition and every error.

use super::describe::{describe, list, ListFilter};
use super::records;
use super::state::*;
use super::*;

const TIMEOUT_MS: i32 = 60_000;
const PID: i64 = 1000;

fn limits() -> Limits {
    Limits::default()
}

fn persist(o: Outcome) -> Transition {
    match o {
        Outcome::Persist(t) => t,
        Outcome::Done => panic!("expected a transition to persist"),
    }
}

fn ready(o: InitOutcome) -> Transition {
    match o {
        InitOutcome::Ready(t) => t,
        InitOutcome::Fence(t) => panic!("expected Ready, got a fence {t:?}"),
    }
}

fn fence(o: InitOutcome) -> Transition {
    match o {
        InitOutcome::Fence(t) => t,
        InitOutcome::Ready(t) => panic!("expected a fence, got {t:?}"),
    }
}

fn tp(topic: &str, p: i32) -> TopicPartition {
    (topic.to_string(), p)
}

fn init(t: &mut Txn, expected: Option<(i64, i16)>, now: i64) -> Result<InitOutcome, TxnError> {
    t.init_producer_id(TIMEOUT_MS, expected, &limits(), now, || {
        panic!("no new producer id expected")
    })
}

/// A new id through its first InitProducerId: producer id 1000, epoch 0.
fn initialized(now: i64) -> Txn {
    let mut t = Txn::new("tx", now);
    let tr = ready(
        t.init_producer_id(TIMEOUT_MS, None, &limits(), now, || PID)
            .unwrap(),
    );
    t.complete(&tr).unwrap();
    t
}

/// An id with a transaction open on t-0 and t-1 since `now`.
fn ongoing(now: i64) -> Txn {
    let mut t = initialized(now);
    let tr = persist(
        t.add_partitions(PID, 0, &[tp("t", 0), tp("t", 1)], now)
            .unwrap(),
    );
    t.complete(&tr).unwrap();
    t
}

/// Ends the transaction: EndTxn, the markers, the completion.
fn end(t: &mut Txn, commit: bool, now: i64) {
    let (pid, epoch) = (t.producer_id(), t.producer_epoch());
    let tr = persist(t.end_txn(pid, epoch, commit, now).unwrap());
    t.complete(&tr).unwrap();
    assert_eq!(t.markers().map(|m| m.commit), Some(commit));
    let done = t.prepare_complete(now + 1).unwrap();
    t.complete(&done).unwrap();
}

#[test]
fn state_ids_and_names_are_kafkas() {
    let names = [
        "Empty",
        "Ongoing",
        "PrepareCommit",
        "PrepareAbort",
        "CompleteCommit",
        "CompleteAbort",
        "Dead",
        "PrepareEpochFence",
    ];
    for (i, s) in TxnState::ALL.iter().enumerate() {
        assert_eq!(s.id(), i as i8);
        assert_eq!(s.name(), names[i]);
        assert_eq!(TxnState::from_id(i as i8), Some(*s));
        assert_eq!(TxnState::from_name(names[i]), Some(*s));
    }
    assert_eq!(TxnState::from_id(8), None);
    assert_eq!(TxnState::from_name("ongoing"), None);
}

#[test]
fn new_id_gets_a_producer_id_at_epoch_zero() {
    let mut t = Txn::new("tx", 5);
    assert!(t.is_placeholder());
    let tr = ready(
        t.init_producer_id(TIMEOUT_MS, None, &limits(), 5, || PID)
            .unwrap(),
    );
    assert_eq!(tr.state, TxnState::Empty);
    assert_eq!((tr.producer_id, tr.producer_epoch), (PID, 0));
    assert_eq!((tr.txn_timeout_ms, tr.txn_start_ms), (TIMEOUT_MS, -1));
    assert_eq!(t.pending(), Some(TxnState::Empty));
    // The record: Kafka's key, an Empty value with null partitions.
    let (key, value) = tr.record("tx");
    let (id, v) = records::decode(key, value).unwrap();
    let v = v.expect("not a tombstone");
    assert_eq!(id, "tx");
    assert_eq!(
        (v.producer_id, v.producer_epoch, v.state),
        (PID, 0, TxnState::Empty)
    );
    assert_eq!(v.partitions, None);
    t.complete(&tr).unwrap();
    assert_eq!(
        (t.state(), t.producer_epoch(), t.pending()),
        (TxnState::Empty, 0, None)
    );
}

#[test]
fn timeout_out_of_range_is_refused_before_anything_changes() {
    let mut t = Txn::new("tx", 0);
    let max = limits().max_timeout_ms;
    for bad in [0, -1, max + 1] {
        let r = t.init_producer_id(bad, None, &limits(), 0, || PID);
        assert_eq!(r, Err(TxnError::InvalidTransactionTimeout));
    }
    assert!(t.is_placeholder());
    assert!(t.init_producer_id(max, None, &limits(), 0, || PID).is_ok());
}

#[test]
fn reinit_bumps_the_epoch_from_empty_and_complete_states() {
    let mut t = initialized(0);
    let tr = ready(init(&mut t, None, 1).unwrap());
    assert_eq!(
        (tr.producer_id, tr.producer_epoch, tr.last_producer_epoch),
        (PID, 1, -1)
    );
    t.complete(&tr).unwrap();
    let tr = persist(t.add_partitions(PID, 1, &[tp("t", 0)], 2).unwrap());
    t.complete(&tr).unwrap();
    end(&mut t, true, 3);
    assert_eq!(t.state(), TxnState::CompleteCommit);
    let tr = ready(init(&mut t, None, 5).unwrap());
    assert_eq!(tr.producer_epoch, 2);
    assert!(tr.partitions.is_empty());
    t.complete(&tr).unwrap();
    assert_eq!(t.state(), TxnState::Empty);
}

#[test]
fn pending_write_makes_others_retry() {
    let mut t = initialized(0);
    let tr = ready(init(&mut t, None, 1).unwrap());
    assert_eq!(init(&mut t, None, 1), Err(TxnError::ConcurrentTransactions));
    assert_eq!(
        t.add_partitions(PID, 0, &[tp("t", 0)], 1),
        Err(TxnError::ConcurrentTransactions)
    );
    assert_eq!(
        t.end_txn(PID, 0, true, 1),
        Err(TxnError::ConcurrentTransactions)
    );
    // The write failed: nothing changed, the next attempt goes through.
    t.abort_pending(&tr);
    assert_eq!((t.producer_epoch(), t.pending()), (0, None));
    let tr = ready(init(&mut t, None, 2).unwrap());
    assert_eq!(tr.producer_epoch, 1);
}

#[test]
fn init_while_completing_is_concurrent() {
    for commit in [true, false] {
        let mut t = ongoing(0);
        let tr = persist(t.end_txn(PID, 0, commit, 1).unwrap());
        t.complete(&tr).unwrap();
        assert_eq!(init(&mut t, None, 2), Err(TxnError::ConcurrentTransactions));
    }
}

#[test]
fn init_on_an_ongoing_transaction_fences_and_aborts_it() {
    let mut t = ongoing(0);
    let f = fence(init(&mut t, None, 10).unwrap());
    assert_eq!(f.state, TxnState::PrepareAbort);
    assert_eq!((f.producer_epoch, f.last_producer_epoch), (1, -1));
    assert_eq!(f.partitions.len(), 2);
    assert_eq!(t.pending(), Some(TxnState::PrepareEpochFence));
    assert_eq!(
        t.end_txn(PID, 0, true, 10),
        Err(TxnError::ConcurrentTransactions)
    );
    t.complete(&f).unwrap();
    assert_eq!((t.state(), t.producer_epoch()), (TxnState::PrepareAbort, 1));
    // The old producer is fenced.
    assert_eq!(t.end_txn(PID, 0, true, 11), Err(TxnError::ProducerFenced));
    assert_eq!(
        t.add_partitions(PID, 0, &[tp("t", 5)], 11),
        Err(TxnError::ProducerFenced)
    );
    // Abort markers with the bumped epoch on every partition.
    let m = t.markers().expect("markers owed");
    assert!(!m.commit);
    assert_eq!(
        (m.producer_id, m.producer_epoch, m.partitions.len()),
        (PID, 1, 2)
    );
    // The new producer retries while the markers are written ...
    assert_eq!(
        init(&mut t, None, 12),
        Err(TxnError::ConcurrentTransactions)
    );
    let done = t.prepare_complete(13).unwrap();
    assert_eq!(done.state, TxnState::CompleteAbort);
    t.complete(&done).unwrap();
    // ... and then gets the next epoch.
    let tr = ready(init(&mut t, None, 14).unwrap());
    assert_eq!(tr.producer_epoch, 2);
}

#[test]
fn a_failed_fence_keeps_its_epoch_and_is_not_bumped_again() {
    let mut t = ongoing(0);
    let f = fence(init(&mut t, None, 10).unwrap());
    t.abort_pending(&f);
    // As in Kafka: the bumped epoch is in force, the transaction still open.
    assert_eq!(
        (t.state(), t.producer_epoch(), t.pending()),
        (TxnState::Ongoing, 1, None)
    );
    assert_eq!(t.end_txn(PID, 0, true, 11), Err(TxnError::ProducerFenced));
    let again = fence(init(&mut t, None, 12).unwrap());
    assert_eq!(again.producer_epoch, 1);
    t.complete(&again).unwrap();
    let done = t.prepare_complete(13).unwrap();
    t.complete(&done).unwrap();
    // Fenced durably now: the next fence bumps again.
    let tr = persist(t.add_partitions(PID, 1, &[tp("t", 0)], 14).unwrap());
    t.complete(&tr).unwrap();
    assert_eq!(fence(init(&mut t, None, 15).unwrap()).producer_epoch, 2);
}

/// An id restored at `epoch` in `state`.
fn restored(state: TxnState, epoch: i16) -> Txn {
    let v = records::TxnValue {
        producer_id: PID,
        producer_epoch: epoch,
        txn_timeout_ms: TIMEOUT_MS,
        state,
        partitions: Some(vec![("t".into(), vec![0])]),
        last_update_ms: 0,
        start_ms: if state == TxnState::Empty { -1 } else { 0 },
        previous_producer_id: -1,
        next_producer_id: -1,
        client_transaction_version: 0,
    };
    Txn::restore("tx", &v).expect("restorable")
}

#[test]
fn exhausted_epochs_rotate_the_producer_id() {
    let mut t = restored(TxnState::CompleteCommit, i16::MAX - 2);
    let tr = ready(init(&mut t, None, 1).unwrap());
    assert_eq!(tr.producer_epoch, i16::MAX - 1);
    t.complete(&tr).unwrap();
    assert!(epoch_exhausted(t.producer_epoch()));
    // The next InitProducerId allocates a new producer id at epoch 0.
    let mut t2 = t.clone();
    let tr = ready(
        t2.init_producer_id(TIMEOUT_MS, None, &limits(), 2, || 2000)
            .unwrap(),
    );
    assert_eq!((tr.producer_id, tr.producer_epoch), (2000, 0));
    assert_eq!((tr.last_producer_id, tr.last_producer_epoch), (PID, -1));
    // With KIP-360's expected id and epoch, the last epoch is recorded ...
    let expected = Some((PID, i16::MAX - 1));
    let tr = ready(
        t.init_producer_id(TIMEOUT_MS, expected, &limits(), 2, || 2000)
            .unwrap(),
    );
    assert_eq!((tr.producer_id, tr.producer_epoch), (2000, 0));
    assert_eq!(
        (tr.last_producer_id, tr.last_producer_epoch),
        (PID, i16::MAX - 1)
    );
    t.complete(&tr).unwrap();
    // ... so a retry with the old id and exhausted epoch gets the same answer.
    let retry = ready(init(&mut t, expected, 3).unwrap());
    assert_eq!((retry.producer_id, retry.producer_epoch), (2000, 0));
}

#[test]
fn fencing_at_the_last_epoch_then_rotates() {
    let mut t = restored(TxnState::Ongoing, i16::MAX - 1);
    let f = fence(init(&mut t, None, 1).unwrap());
    assert_eq!(f.producer_epoch, i16::MAX);
    t.complete(&f).unwrap();
    let done = t.prepare_complete(2).unwrap();
    t.complete(&done).unwrap();
    let tr = ready(
        t.init_producer_id(TIMEOUT_MS, None, &limits(), 3, || 2000)
            .unwrap(),
    );
    assert_eq!((tr.producer_id, tr.producer_epoch), (2000, 0));
    // An exhausted id whose producer asks with an older epoch is fenced.
    let mut t = restored(TxnState::CompleteAbort, i16::MAX);
    assert_eq!(
        init(&mut t, Some((PID, i16::MAX - 1)), 4),
        Err(TxnError::ProducerFenced)
    );
}

#[test]
fn kip_360_expected_producer_checks() {
    assert_eq!(expected_producer(-1, -1), Ok(None));
    assert_eq!(expected_producer(-1, 3), Err(TxnError::InvalidRequest));
    assert_eq!(expected_producer(5, -1), Err(TxnError::InvalidRequest));
    assert_eq!(expected_producer(5, 3), Ok(Some((5, 3))));

    let mut t = initialized(0);
    // The current producer resumes: bumped, its epoch remembered.
    let tr = ready(init(&mut t, Some((PID, 0)), 1).unwrap());
    assert_eq!((tr.producer_epoch, tr.last_producer_epoch), (1, 0));
    t.complete(&tr).unwrap();
    // Its retry (answer lost) gets the same epoch again, no bump.
    let retry = ready(init(&mut t, Some((PID, 0)), 2).unwrap());
    assert_eq!((retry.producer_epoch, retry.last_producer_epoch), (1, 0));
    t.complete(&retry).unwrap();
    // Another producer id, or an older epoch, is fenced.
    assert_eq!(init(&mut t, Some((7, 1)), 3), Err(TxnError::ProducerFenced));
    let tr = ready(init(&mut t, None, 3).unwrap());
    t.complete(&tr).unwrap();
    assert_eq!(t.producer_epoch(), 2);
    assert_eq!(
        init(&mut t, Some((PID, 0)), 4),
        Err(TxnError::ProducerFenced)
    );
    assert_eq!(
        init(&mut t, Some((PID, 1)), 4),
        Err(TxnError::ProducerFenced)
    );
    // A new id accepts whatever the producer had (the coordinator forgot it).
    let mut fresh = Txn::new("tx2", 0);
    let tr = ready(
        fresh
            .init_producer_id(TIMEOUT_MS, Some((77, 9)), &limits(), 0, || PID)
            .unwrap(),
    );
    assert_eq!((tr.producer_id, tr.producer_epoch), (PID, 0));
}

#[test]
fn add_partitions_opens_and_extends_a_transaction() {
    let mut t = initialized(0);
    let tr = persist(t.add_partitions(PID, 0, &[tp("t", 0)], 100).unwrap());
    assert_eq!(
        (tr.state, tr.txn_start_ms, tr.last_update_ms),
        (TxnState::Ongoing, 100, 100)
    );
    t.complete(&tr).unwrap();
    // Already in: nothing to write.
    assert_eq!(
        t.add_partitions(PID, 0, &[tp("t", 0)], 150),
        Ok(Outcome::Done)
    );
    assert_eq!(t.add_partitions(PID, 0, &[], 150), Ok(Outcome::Done));
    // More: the union, the start time kept.
    let tr = persist(
        t.add_partitions(PID, 0, &[tp("t", 0), tp("u", 3)], 200)
            .unwrap(),
    );
    assert_eq!(tr.partitions.len(), 2);
    assert_eq!((tr.txn_start_ms, tr.last_update_ms), (100, 200));
    let v = tr.value().unwrap();
    assert_eq!(
        v.partitions,
        Some(vec![("t".into(), vec![0]), ("u".into(), vec![3])])
    );
    t.complete(&tr).unwrap();
}

#[test]
fn add_partitions_errors() {
    let mut t = ongoing(0);
    let p = [tp("t", 9)];
    assert_eq!(
        t.add_partitions(7, 0, &p, 1),
        Err(TxnError::InvalidProducerIdMapping)
    );
    assert_eq!(
        t.add_partitions(PID, 1, &p, 1),
        Err(TxnError::ProducerFenced)
    );
    let tr = persist(t.end_txn(PID, 0, true, 1).unwrap());
    assert_eq!(
        t.add_partitions(PID, 0, &p, 1),
        Err(TxnError::ConcurrentTransactions)
    );
    t.complete(&tr).unwrap();
    assert_eq!(
        t.add_partitions(PID, 0, &p, 2),
        Err(TxnError::ConcurrentTransactions)
    );
    // An id that never got a producer id.
    let mut fresh = Txn::new("tx2", 0);
    assert_eq!(
        fresh.add_partitions(-1, -1, &p, 1),
        Err(TxnError::InvalidProducerIdMapping)
    );
}

#[test]
fn a_new_transaction_after_completion_restarts_the_clock() {
    let mut t = ongoing(0);
    end(&mut t, false, 10);
    assert_eq!(t.state(), TxnState::CompleteAbort);
    let tr = persist(t.add_partitions(PID, 0, &[tp("t", 2)], 50).unwrap());
    assert_eq!(tr.txn_start_ms, 50);
    assert_eq!(tr.partitions.len(), 1);
}

#[test]
fn add_offsets_adds_the_groups_offsets_partition() {
    let mut t = initialized(0);
    let tr = persist(t.add_offsets(PID, 0, "my-group", 50, 1).unwrap());
    let want = tp(crate::group::OFFSETS_TOPIC, 1_906_497_762 % 50);
    assert!(tr.partitions.contains(&want));
    assert_eq!(tr.partitions.len(), 1);
    t.complete(&tr).unwrap();
    assert_eq!(
        t.add_offsets(PID, 1, "my-group", 50, 2),
        Err(TxnError::ProducerFenced)
    );
}

#[test]
fn end_txn_commit_and_abort_paths() {
    for commit in [true, false] {
        let mut t = ongoing(0);
        let tr = persist(t.end_txn(PID, 0, commit, 5).unwrap());
        let prepare = if commit {
            TxnState::PrepareCommit
        } else {
            TxnState::PrepareAbort
        };
        assert_eq!(
            (tr.state, tr.last_update_ms, tr.partitions.len()),
            (prepare, 5, 2)
        );
        t.complete(&tr).unwrap();
        // Retry of the same end while markers are written: retry later.
        assert_eq!(
            t.end_txn(PID, 0, commit, 6),
            Err(TxnError::ConcurrentTransactions)
        );
        // The other end: refused.
        assert_eq!(
            t.end_txn(PID, 0, !commit, 6),
            Err(TxnError::InvalidTxnState)
        );
        let done = t.prepare_complete(7).unwrap();
        assert!(done.partitions.is_empty());
        assert_eq!(done.txn_start_ms, 0);
        // Complete* persists an empty (not null) partition list.
        assert_eq!(done.value().unwrap().partitions, Some(vec![]));
        t.complete(&done).unwrap();
        assert_eq!(t.markers(), None);
        // Retry after completion: success; the other end: refused.
        assert_eq!(t.end_txn(PID, 0, commit, 8), Ok(Outcome::Done));
        assert_eq!(
            t.end_txn(PID, 0, !commit, 8),
            Err(TxnError::InvalidTxnState)
        );
    }
}

#[test]
fn end_txn_errors() {
    let mut t = initialized(0);
    assert_eq!(t.end_txn(PID, 0, true, 1), Err(TxnError::InvalidTxnState));
    assert_eq!(t.end_txn(PID, 0, false, 1), Err(TxnError::InvalidTxnState));
    assert_eq!(
        t.end_txn(8, 0, true, 1),
        Err(TxnError::InvalidProducerIdMapping)
    );
    assert_eq!(t.end_txn(PID, 3, true, 1), Err(TxnError::ProducerFenced));
    assert_eq!(t.prepare_complete(1), Err(TxnError::InvalidTxnState));
}

#[test]
fn a_transaction_past_its_timeout_is_aborted_with_a_fence() {
    let mut t = ongoing(1000);
    let deadline = 1000 + i64::from(TIMEOUT_MS);
    assert_eq!(t.abort_if_timed_out(deadline), Ok(None));
    let f = t.abort_if_timed_out(deadline + 1).unwrap().expect("aborts");
    assert_eq!((f.state, f.producer_epoch), (TxnState::PrepareAbort, 1));
    // Pending: not aborted twice.
    assert_eq!(t.abort_if_timed_out(deadline + 2), Ok(None));
    t.complete(&f).unwrap();
    assert_eq!(
        t.end_txn(PID, 0, true, deadline + 3),
        Err(TxnError::ProducerFenced)
    );
    let done = t.prepare_complete(deadline + 4).unwrap();
    t.complete(&done).unwrap();
    // Only Ongoing times out.
    assert_eq!(t.abort_if_timed_out(i64::MAX), Ok(None));
    assert_eq!(initialized(0).abort_if_timed_out(i64::MAX), Ok(None));
}

#[test]
fn idle_ids_expire_with_a_tombstone() {
    let exp = limits().id_expiration_ms;
    let mut t = initialized(0);
    assert_eq!(t.expire_if_idle(exp - 1, &limits()), None);
    let dead = t.expire_if_idle(exp, &limits()).expect("expires");
    assert_eq!(dead.state, TxnState::Dead);
    let (key, value) = dead.record("tx");
    assert_eq!(value, None);
    assert_eq!(
        records::decode(key, value).unwrap(),
        ("tx".to_string(), None)
    );
    assert_eq!(
        t.init_producer_id(TIMEOUT_MS, None, &limits(), exp, || PID),
        Err(TxnError::ConcurrentTransactions)
    );
    t.complete(&dead).unwrap();
    assert_eq!(t.state(), TxnState::Dead);
    assert_eq!(describe(&t), Err(TxnError::TransactionalIdNotFound));
    assert_eq!(
        t.add_partitions(PID, 0, &[tp("t", 0)], exp),
        Err(TxnError::InvalidProducerIdMapping)
    );
    // A transaction open or completing never expires; completed ones do.
    let mut t = ongoing(0);
    assert_eq!(t.expire_if_idle(i64::MAX, &limits()), None);
    end(&mut t, true, 0);
    assert!(t.expire_if_idle(exp + 1, &limits()).is_some());
}

#[test]
fn restore_reads_back_what_a_transition_wrote() {
    let mut t = ongoing(3);
    let tr = persist(t.end_txn(PID, 0, true, 9).unwrap());
    let v = tr.value().unwrap();
    let back = Txn::restore("tx", &records::decode_value(records::value(&v)).unwrap())
        .expect("restorable");
    assert_eq!(back.state(), TxnState::PrepareCommit);
    let m = back.markers().expect("markers still owed after a restart");
    assert!(m.commit);
    assert_eq!(m.partitions, &tr.partitions);
    assert_eq!(describe(&back).unwrap().txn_start_ms, 3);
    // Empty ignores stray partitions; Dead and PrepareEpochFence are never written.
    assert!(restored(TxnState::Empty, 0).markers().is_none());
    assert_eq!(
        describe(&restored(TxnState::Empty, 0)).unwrap().topics,
        vec![]
    );
    let mut v = v.clone();
    v.state = TxnState::Dead;
    assert!(Txn::restore("tx", &v).is_none());
    v.state = TxnState::PrepareEpochFence;
    assert!(Txn::restore("tx", &v).is_none());
}

#[test]
fn complete_refuses_what_is_not_pending() {
    let mut t = ongoing(0);
    let stray = Transition {
        state: TxnState::PrepareCommit,
        producer_id: PID,
        last_producer_id: -1,
        producer_epoch: 0,
        last_producer_epoch: -1,
        txn_timeout_ms: TIMEOUT_MS,
        partitions: Default::default(),
        txn_start_ms: 0,
        last_update_ms: 0,
    };
    assert!(matches!(t.complete(&stray), Err(TxnError::Internal(_))));
    let tr = persist(t.end_txn(PID, 0, false, 1).unwrap());
    // Not the pending state: refused, and the id is not left stuck.
    assert!(matches!(t.complete(&stray), Err(TxnError::Internal(_))));
    assert_eq!((t.state(), t.pending()), (TxnState::Ongoing, None));
    let mut wrong = tr.clone();
    wrong.producer_epoch = 5;
    let tr = persist(t.end_txn(PID, 0, false, 1).unwrap());
    assert!(matches!(t.complete(&wrong), Err(TxnError::Internal(_))));
    assert_eq!(t.state(), TxnState::Ongoing);
    let _ = tr;
}

#[test]
fn describe_reports_what_describe_transactions_needs() {
    let mut t = ongoing(40);
    let tr = persist(t.add_partitions(PID, 0, &[tp("a", 2)], 41).unwrap());
    t.complete(&tr).unwrap();
    let d = describe(&t).unwrap();
    assert_eq!(d.state, "Ongoing");
    assert_eq!((d.producer_id, d.producer_epoch), (PID, 0));
    assert_eq!((d.txn_timeout_ms, d.txn_start_ms), (TIMEOUT_MS, 40));
    assert_eq!(
        d.topics,
        vec![("a".into(), vec![2]), ("t".into(), vec![0, 1])]
    );
    assert_eq!(
        describe(&Txn::new("x", 0)),
        Err(TxnError::TransactionalIdNotFound)
    );
    let fresh = initialized(0);
    assert_eq!(describe(&fresh).unwrap().state, "Empty");
    assert_eq!(describe(&fresh).unwrap().txn_start_ms, -1);
}

#[test]
fn list_filters_by_state_producer_id_and_duration() {
    let a = ongoing(100); // "tx", producer 1000, Ongoing since 100
    let mut b = Txn::new("b", 0);
    let tr = ready(
        b.init_producer_id(TIMEOUT_MS, None, &limits(), 0, || 2000)
            .unwrap(),
    );
    b.complete(&tr).unwrap();
    let placeholder = Txn::new("c", 0);
    let all = [a, b, placeholder];
    let ids = |l: &describe::Listing| {
        l.transactions
            .iter()
            .map(|t| t.transactional_id.clone())
            .collect::<Vec<_>>()
    };
    let l = list(&all, &ListFilter::default(), 200);
    assert_eq!(ids(&l), ["b", "tx"]);
    assert_eq!(l.transactions[1].state, "Ongoing");
    assert_eq!(l.transactions[1].producer_id, PID);
    let f = ListFilter {
        states: vec!["Ongoing".into(), "Bogus".into()],
        ..ListFilter::default()
    };
    let l = list(&all, &f, 200);
    assert_eq!(ids(&l), ["tx"]);
    assert_eq!(l.unknown_state_filters, ["Bogus"]);
    let f = ListFilter {
        states: vec!["Bogus".into()],
        ..ListFilter::default()
    };
    assert!(list(&all, &f, 200).transactions.is_empty());
    let f = ListFilter {
        producer_ids: vec![2000],
        ..ListFilter::default()
    };
    assert_eq!(ids(&list(&all, &f, 200)), ["b"]);
    // Running longer than 100 ms: "tx" at 201, not at 200. "b" never started
    // (start -1), which Kafka counts as running since the epoch.
    let f = ListFilter {
        duration_filter_ms: 100,
        ..ListFilter::default()
    };
    assert_eq!(ids(&list(&all, &f, 200)), ["b"]);
    assert_eq!(ids(&list(&all, &f, 201)), ["b", "tx"]);
}
