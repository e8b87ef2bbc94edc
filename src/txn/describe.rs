//! What DescribeTransactions (v0) and ListTransactions (v0-1) report about
//! transactional ids, computed from their state machines.

use super::state::{Txn, TxnState};
use super::TxnError;

/// One transactional id as DescribeTransactions reports it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Description {
    /// Kafka's state name ("Ongoing", "CompleteCommit" ...).
    pub state: &'static str,
    pub producer_id: i64,
    pub producer_epoch: i16,
    pub txn_timeout_ms: i32,
    /// -1 before the first transaction.
    pub txn_start_ms: i64,
    /// The transaction's partitions by topic, sorted.
    pub topics: Vec<(String, Vec<i32>)>,
}

/// Whether an id exists as far as clients can tell: not being forgotten, and
/// not a placeholder that never got a producer id.
fn visible(t: &Txn) -> bool {
    t.state != TxnState::Dead && t.producer_id >= 0
}

/// DescribeTransactions of one id (the caller answers
/// TRANSACTIONAL_ID_NOT_FOUND for ids it does not hold at all).
pub fn describe(t: &Txn) -> Result<Description, TxnError> {
    if !visible(t) {
        return Err(TxnError::TransactionalIdNotFound);
    }
    let mut topics: Vec<(String, Vec<i32>)> = Vec::new();
    for (topic, p) in &t.partitions {
        match topics.last_mut() {
            Some((name, ids)) if name == topic => ids.push(*p),
            _ => topics.push((topic.clone(), vec![*p])),
        }
    }
    Ok(Description {
        state: t.state.name(),
        producer_id: t.producer_id,
        producer_epoch: t.producer_epoch,
        txn_timeout_ms: t.txn_timeout_ms,
        txn_start_ms: t.txn_start_ms,
        topics,
    })
}

/// ListTransactions filters; empty lists (and the default) match everything.
#[derive(Clone, Debug)]
pub struct ListFilter {
    /// State names as Kafka spells them.
    pub states: Vec<String>,
    pub producer_ids: Vec<i64>,
    /// v1: only transactions running longer than this; -1 for all.
    pub duration_filter_ms: i64,
}

impl Default for ListFilter {
    fn default() -> ListFilter {
        ListFilter {
            states: Vec::new(),
            producer_ids: Vec::new(),
            duration_filter_ms: -1,
        }
    }
}

/// One row of ListTransactions.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Listed {
    pub transactional_id: String,
    pub producer_id: i64,
    pub state: &'static str,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Listing {
    pub transactions: Vec<Listed>,
    /// State filters that name no state (Kafka reports them back).
    pub unknown_state_filters: Vec<String>,
}

/// ListTransactions over the ids of one coordinator, sorted by id.
pub fn list<'a>(txns: impl IntoIterator<Item = &'a Txn>, f: &ListFilter, now: i64) -> Listing {
    let mut out = Listing::default();
    let mut states = Vec::new();
    for name in &f.states {
        match TxnState::from_name(name) {
            Some(s) => states.push(s),
            None => out.unknown_state_filters.push(name.clone()),
        }
    }
    for t in txns {
        // Kafka: with state filters given, only known states can match (so
        // all-unknown filters match nothing).
        let keep = visible(t)
            && (f.producer_ids.is_empty() || f.producer_ids.contains(&t.producer_id))
            && (f.states.is_empty() || states.contains(&t.state))
            && (f.duration_filter_ms < 0
                || now.saturating_sub(t.txn_start_ms) > f.duration_filter_ms);
        if keep {
            out.transactions.push(Listed {
                transactional_id: t.id.clone(),
                producer_id: t.producer_id,
                state: t.state.name(),
            });
        }
    }
    out.transactions
        .sort_by(|a, b| a.transactional_id.cmp(&b.transactional_id));
    out
}
