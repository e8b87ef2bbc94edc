//! The broker's life cycle as `/v1/health`, `/v1/ready` and `sluice_broker_state` report
//! it: starting until every shard listens for clients, serving, stopping once a signal came.
//! Process-wide atomics: written a handful of times in the broker's life, read per probe.

use std::sync::atomic::{AtomicU8, AtomicUsize, Ordering};

/// Where the broker is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BrokerState {
    /// Recovering partitions and loading coordinators; not every shard listens yet.
    Starting,
    /// Every shard listens for clients (a controller-only node: every shard is up).
    Serving,
    /// A stop signal came: leadership moves away, shards close.
    Stopping,
}

impl BrokerState {
    pub const ALL: [BrokerState; 3] = [
        BrokerState::Starting,
        BrokerState::Serving,
        BrokerState::Stopping,
    ];

    pub fn name(self) -> &'static str {
        match self {
            BrokerState::Starting => "starting",
            BrokerState::Serving => "serving",
            BrokerState::Stopping => "stopping",
        }
    }
}

static STATE: AtomicU8 = AtomicU8::new(0);
static SHARDS_UP: AtomicUsize = AtomicUsize::new(0);

/// The broker's state now.
pub fn state() -> BrokerState {
    match STATE.load(Ordering::Acquire) {
        0 => BrokerState::Starting,
        1 => BrokerState::Serving,
        _ => BrokerState::Stopping,
    }
}

/// A shard is up (listening for clients); the last of `shards` makes the broker serving,
/// unless it is already stopping.
pub fn shard_up(shards: usize) {
    if SHARDS_UP.fetch_add(1, Ordering::AcqRel) + 1 >= shards {
        let _ = STATE.compare_exchange(0, 1, Ordering::AcqRel, Ordering::Acquire);
    }
}

/// The broker was asked to stop.
pub fn set_stopping() {
    STATE.store(2, Ordering::Release);
}
