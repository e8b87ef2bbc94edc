//! The controller quorum: a Raft log of metadata records (openraft), replicated between the
//! static voters of `controller.quorum.voters` and to learners (broker-only nodes), applied in
//! order to the broker's [`StateMachine`] on every node.
//!
//! The API is [`Quorum`]: start it on a directory with a state machine, propose entries, wait
//! for a leader or for an index to be applied, read the status. openraft runs on its own thread
//! ("sluice-quorum", a tokio current-thread runtime: `thread.rs`); the handle's async methods
//! only await channels, so a glommio shard can call them without blocking.
//!
//! Files: `types.rs` (openraft types), `codec.rs` + `files.rs` (on-disk records and files),
//! `store.rs` (log and vote), `machine.rs` (state machine adapter, snapshot file),
//! `network.rs` + `server.rs` (framed TCP), `node.rs` (proposals, join, bootstrap),
//! `thread.rs` (the thread and its command loop); tests in `tests.rs` (quorums) and
//! `tests_store.rs` (storage, decoders). [`check_log_bytes`] is the log decoder, for a fuzz
//! target.
//!
//! Directory layout: `log` (entries), `vote` (vote and committed id), `snapshot`,
//! `quorum.lock`; `*.tmp` only while a file is being replaced.

mod codec;
mod files;
mod machine;
mod network;
mod node;
mod server;
mod store;
mod thread;
mod types;

#[cfg(test)]
mod tests;
#[cfg(test)]
mod tests_store;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context;
use futures::channel::oneshot;

pub use store::{check_log_bytes, LogDecodeError};

use thread::{Command, Launch, Shared};

pub type NodeId = u64;

/// Longest `Quorum::start` waits for the raft node to be running (storage read, committed
/// entries re-applied).
pub const START_TIMEOUT: Duration = Duration::from_secs(120);
/// Longest `Quorum::shutdown` waits for the thread to end.
pub const SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(10);
/// Timeout of the snapshot transfer RPC, in milliseconds.
pub const SNAPSHOT_RPC_TIMEOUT_MS: u64 = 60_000;

#[derive(Clone, Debug)]
pub struct QuorumConfig {
    pub node_id: NodeId,
    /// controller.quorum.voters: voter id -> "host:port". Never empty.
    pub voters: std::collections::BTreeMap<NodeId, String>,
    /// Address this node's quorum listener binds ("host:port"). None only for a one-voter quorum of
    /// this node alone (no network at all then). Required for learners.
    pub listen: Option<String>,
    /// Directory for the log, vote, committed index and snapshots (created if missing).
    pub dir: std::path::PathBuf,
    pub heartbeat_interval_ms: u64,   // e.g. 200
    pub election_timeout_min_ms: u64, // e.g. 1000
    pub election_timeout_max_ms: u64, // e.g. 2000
    pub snapshot_every_entries: u64,  // e.g. 1000
}

/// The replicated state, owned by the broker; called only on the quorum thread, in log order.
pub trait StateMachine: Send + 'static {
    /// Applies one committed entry. Must be deterministic; must not fail (a payload it cannot
    /// decode is the broker's to log and skip).
    fn apply(&mut self, index: u64, payload: &[u8]);
    /// The whole state, to be written as a snapshot.
    fn snapshot(&self) -> Vec<u8>;
    /// Replaces the whole state with a snapshot's.
    fn restore(&mut self, snapshot: &[u8]) -> anyhow::Result<()>;
}

#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum ProposeError {
    #[error("no controller quorum: no leader could be reached within {0} ms")]
    NoLeader(u64),
    #[error("the proposal was not committed within {0} ms")]
    Timeout(u64),
    #[error("the quorum is shut down")]
    Shutdown,
    #[error("quorum storage failed: {0}")]
    Storage(String),
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PeerStatus {
    pub id: NodeId,
    pub addr: String,
    pub voter: bool,
    /// Highest log index known replicated to it (leader's view; None elsewhere or unknown).
    pub match_index: Option<u64>,
    /// Milliseconds since the leader last heard from it (leader's view).
    pub last_ack_ms_ago: Option<u64>,
}

#[derive(Clone, Debug, Default)]
pub struct QuorumStatus {
    pub node_id: NodeId,
    pub leader: Option<NodeId>,
    pub term: u64,
    pub last_log_index: u64,
    pub committed_index: u64,
    pub applied_index: u64,
    /// Voters and learners, self included.
    pub peers: Vec<PeerStatus>,
}

/// A handle on the quorum member of this process; clones share it (Send + Sync).
#[derive(Clone)]
pub struct Quorum {
    inner: Arc<Inner>,
}

struct Inner {
    node_id: NodeId,
    commands: tokio::sync::mpsc::Sender<Command>,
    shared: Arc<Shared>,
    stop: Mutex<Option<oneshot::Sender<()>>>,
    /// The thread, and a channel that disconnects when it ends.
    thread: Mutex<Option<(std::thread::JoinHandle<()>, std::sync::mpsc::Receiver<()>)>>,
    thread_id: std::thread::ThreadId,
}

impl Quorum {
    /// Opens storage (errors here: unreadable/corrupt files other than a torn tail, bind failure),
    /// starts the quorum thread and returns without waiting for a leader.
    pub fn start(cfg: QuorumConfig, machine: Box<dyn StateMachine>) -> anyhow::Result<Quorum> {
        let is_voter = cfg.voters.contains_key(&cfg.node_id);
        anyhow::ensure!(!cfg.voters.is_empty(), "controller.quorum.voters is empty");
        anyhow::ensure!(
            cfg.heartbeat_interval_ms > 0,
            "the quorum heartbeat interval must be positive"
        );
        if cfg.listen.is_none() {
            anyhow::ensure!(
                is_voter && cfg.voters.len() == 1,
                "node {}: a quorum listener address is required unless this node is the only voter",
                cfg.node_id
            );
        }
        let raft_config = raft_config(&cfg)?;
        let store = store::LogStore::open(&cfg.dir)?;
        let machine = machine::MachineAdapter::open(&cfg.dir, machine)?;
        let listener = match &cfg.listen {
            None => None,
            Some(addr) => {
                let l = std::net::TcpListener::bind(addr)
                    .with_context(|| format!("binding the quorum listener on {addr}"))?;
                l.set_nonblocking(true)?;
                Some(l)
            }
        };
        let (commands_tx, commands) = tokio::sync::mpsc::channel(thread::COMMAND_QUEUE);
        let (stop_tx, stop) = oneshot::channel();
        let (ready, ready_rx) = std::sync::mpsc::sync_channel(1);
        let (exit_tx, exit_rx) = std::sync::mpsc::channel::<()>();
        let shared = Arc::new(Shared::default());
        let node_id = cfg.node_id;
        let launch = Launch {
            cfg,
            raft_config,
            store,
            machine,
            listener,
            commands,
            stop,
            shared: shared.clone(),
            ready,
        };
        let handle = std::thread::Builder::new()
            .name("sluice-quorum".into())
            .spawn(move || {
                thread::run(launch);
                drop(exit_tx);
            })
            .context("spawning the quorum thread")?;
        let thread_id = handle.thread().id();
        let started = ready_rx.recv_timeout(START_TIMEOUT);
        let quorum = Quorum {
            inner: Arc::new(Inner {
                node_id,
                commands: commands_tx,
                shared,
                stop: Mutex::new(Some(stop_tx)),
                thread: Mutex::new(Some((handle, exit_rx))),
                thread_id,
            }),
        };
        match started {
            Ok(Ok(())) => Ok(quorum),
            Ok(Err(e)) => {
                quorum.shutdown();
                anyhow::bail!("quorum node {node_id}: {e}")
            }
            Err(_) => {
                quorum.shutdown();
                anyhow::bail!("quorum node {node_id} did not start within {START_TIMEOUT:?}")
            }
        }
    }

    /// This node's id.
    pub fn node_id(&self) -> NodeId {
        self.inner.node_id
    }

    /// Sends a command and awaits its answer; `None` once the thread is gone.
    async fn ask<T>(&self, command: impl FnOnce(oneshot::Sender<T>) -> Command) -> Option<T> {
        let (tx, rx) = oneshot::channel();
        self.inner.commands.send(command(tx)).await.ok()?;
        rx.await.ok()
    }

    /// Proposes an entry. On a follower or learner it is forwarded to the leader. Resolves with
    /// the entry's log index once it is committed AND applied on THIS node (so the caller's next
    /// read of its state sees it). Bounded by `timeout_ms`: NoLeader if no leader was reachable,
    /// Timeout if not committed in time (the entry may still commit later).
    pub async fn propose(&self, payload: Vec<u8>, timeout_ms: u64) -> Result<u64, ProposeError> {
        let timeout = Duration::from_millis(timeout_ms);
        self.ask(|reply| Command::Propose {
            payload,
            timeout,
            reply,
        })
        .await
        .unwrap_or(Err(ProposeError::Shutdown))
    }

    /// Waits (bounded) until a leader is known; returns it.
    pub async fn wait_leader(&self, timeout_ms: u64) -> Option<NodeId> {
        let timeout = Duration::from_millis(timeout_ms);
        self.ask(|reply| Command::WaitLeader { timeout, reply })
            .await
            .flatten()
    }

    /// Waits (bounded) until this node has applied `index`. True if it has.
    pub async fn wait_applied(&self, index: u64, timeout_ms: u64) -> bool {
        let timeout = Duration::from_millis(timeout_ms);
        self.ask(|reply| Command::WaitApplied {
            index,
            timeout,
            reply,
        })
        .await
        .unwrap_or(false)
    }

    /// Latest status (cheap, from openraft's metrics).
    pub fn status(&self) -> QuorumStatus {
        self.inner.shared.status()
    }

    /// Asks the leader to hand leadership to another voter (openraft's transfer_leader) if this
    /// node is the leader; used on controlled shutdown. Bounded; errors are returned, not panics.
    pub async fn resign(&self, timeout_ms: u64) -> anyhow::Result<()> {
        let timeout = Duration::from_millis(timeout_ms);
        match self.ask(|reply| Command::Resign { timeout, reply }).await {
            Some(Ok(())) => Ok(()),
            Some(Err(e)) => Err(anyhow::anyhow!("quorum resign: {e}")),
            None => Err(anyhow::anyhow!("quorum resign: the quorum is shut down")),
        }
    }

    /// Stops the raft node and the thread, closes the listener; idempotent; waits for the thread (bounded).
    pub fn shutdown(&self) {
        if let Ok(mut stop) = self.inner.stop.lock() {
            if let Some(tx) = stop.take() {
                let _ = tx.send(());
            }
        }
        if std::thread::current().id() == self.inner.thread_id {
            return;
        }
        let thread = self.inner.thread.lock().ok().and_then(|mut t| t.take());
        let Some((handle, exited)) = thread else {
            return;
        };
        match exited.recv_timeout(SHUTDOWN_TIMEOUT) {
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {
                tracing::error!(
                    "quorum node {}: thread still running {SHUTDOWN_TIMEOUT:?} after shutdown",
                    self.inner.node_id
                );
            }
            _ => {
                if handle.join().is_err() {
                    tracing::error!("quorum node {}: thread panicked", self.inner.node_id);
                }
            }
        }
    }
}

/// openraft's settings for `cfg`.
fn raft_config(cfg: &QuorumConfig) -> anyhow::Result<openraft::Config> {
    let config = openraft::Config {
        cluster_name: "sluice-quorum".into(),
        heartbeat_interval: cfg.heartbeat_interval_ms,
        election_timeout_min: cfg.election_timeout_min_ms,
        election_timeout_max: cfg.election_timeout_max_ms,
        install_snapshot_timeout: SNAPSHOT_RPC_TIMEOUT_MS,
        snapshot_policy: openraft::SnapshotPolicy::LogsSinceLast(cfg.snapshot_every_entries.max(1)),
        // Purge everything a snapshot covers: a follower further behind gets the snapshot.
        max_in_snapshot_log_to_keep: 0,
        // A restarted or partitioned voter must not disrupt a working leader.
        enable_pre_vote: Some(true),
        ..Default::default()
    };
    config
        .validate()
        .context("invalid controller quorum timing settings")
}
