//! The "sluice-quorum" thread: a tokio current-thread runtime that runs openraft, the listener,
//! the bootstrap and the handle's commands, and publishes the status the handle reads.
//!
//! The handle reaches the thread through a bounded command queue (tokio's mpsc, whose `send`
//! works from any executor) and gets each answer on a `futures` oneshot; every wait is timed on
//! this thread, so a caller only awaits a channel and never needs a tokio runtime. A dropped
//! answer (the thread stopped) reads as "shut down".

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::channel::oneshot;
use openraft::async_runtime::WatchReceiver;
use openraft::Instant as _;
use tokio::sync::{mpsc, Semaphore};

use super::machine::MachineAdapter;
use super::network::{NetworkFactory, Transport};
use super::node::Node;
use super::store::LogStore;
use super::types::{Metrics, Raft};
use super::{NodeId, PeerStatus, ProposeError, QuorumConfig, QuorumStatus};

/// Commands queued from the handle to the thread.
pub const COMMAND_QUEUE: usize = 1024;
/// Commands served at once (each is a task on the thread).
pub const MAX_INFLIGHT_COMMANDS: usize = 1024;
/// Longest the raft node takes to stop before the runtime is dropped anyway.
pub const RAFT_SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(5);
/// Longest the runtime waits for its tasks when dropped.
pub const RUNTIME_SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(1);

/// A request of the handle, with where to send its answer.
pub enum Command {
    Propose {
        payload: Vec<u8>,
        timeout: Duration,
        reply: oneshot::Sender<Result<u64, ProposeError>>,
    },
    WaitLeader {
        timeout: Duration,
        reply: oneshot::Sender<Option<NodeId>>,
    },
    WaitApplied {
        index: u64,
        timeout: Duration,
        reply: oneshot::Sender<bool>,
    },
    Resign {
        timeout: Duration,
        reply: oneshot::Sender<Result<(), String>>,
    },
}

/// The status as last published by the thread, with the leader's last-ack instants.
#[derive(Default)]
pub struct Shared {
    cell: Mutex<StatusCell>,
}

#[derive(Default)]
struct StatusCell {
    status: QuorumStatus,
    acks: BTreeMap<NodeId, std::time::Instant>,
}

impl Shared {
    /// The latest status, with `last_ack_ms_ago` as of now.
    pub fn status(&self) -> QuorumStatus {
        let Ok(cell) = self.cell.lock() else {
            return QuorumStatus::default();
        };
        let mut status = cell.status.clone();
        for peer in &mut status.peers {
            peer.last_ack_ms_ago = cell
                .acks
                .get(&peer.id)
                .map(|at| at.elapsed().as_millis() as u64);
        }
        status
    }

    fn publish(&self, m: &Metrics, cfg: &QuorumConfig) {
        let now = std::time::Instant::now();
        let leading = m.current_leader == Some(m.id);
        let last_log_index = m.last_log_index.unwrap_or(0);
        let membership = m.membership_config.membership();
        let mut nodes: BTreeMap<NodeId, (String, bool)> = membership
            .nodes()
            .map(|(id, n)| (*id, (n.addr.clone(), false)))
            .collect();
        for v in membership.voter_ids() {
            if let Some(n) = nodes.get_mut(&v) {
                n.1 = true;
            }
        }
        if nodes.is_empty() {
            // Not initialized yet: the configured voters.
            nodes = cfg
                .voters
                .iter()
                .map(|(id, a)| (*id, (a.clone(), true)))
                .collect();
        }
        let peers = nodes
            .into_iter()
            .map(|(id, (addr, voter))| {
                let matched = m
                    .replication
                    .as_ref()
                    .and_then(|r| r.get(&id).cloned().flatten())
                    .map(|l| l.index);
                let match_index = if leading && id == m.id {
                    Some(last_log_index)
                } else {
                    matched
                };
                PeerStatus {
                    id,
                    addr,
                    voter,
                    match_index,
                    last_ack_ms_ago: None,
                }
            })
            .collect();
        let acks = m
            .heartbeat
            .iter()
            .flatten()
            .filter_map(|(id, at)| Some((*id, now.checked_sub(at.as_ref()?.elapsed())?)))
            .collect();
        let status = QuorumStatus {
            node_id: m.id,
            leader: m.current_leader,
            term: m.current_term,
            last_log_index,
            committed_index: m.local_committed.as_ref().map_or(0, |l| l.index),
            applied_index: m.last_applied.as_ref().map_or(0, |l| l.index),
            peers,
        };
        if let Ok(mut cell) = self.cell.lock() {
            *cell = StatusCell { status, acks };
        }
    }

    fn stopped(&self) {
        if let Ok(mut cell) = self.cell.lock() {
            cell.status.leader = None;
            cell.acks.clear();
        }
    }
}

/// What the thread needs, prepared by `Quorum::start` on the caller's thread.
pub struct Launch {
    pub cfg: QuorumConfig,
    pub raft_config: openraft::Config,
    pub store: LogStore,
    pub machine: MachineAdapter,
    pub listener: Option<std::net::TcpListener>,
    pub commands: mpsc::Receiver<Command>,
    pub stop: oneshot::Receiver<()>,
    pub shared: Arc<Shared>,
    /// Told once the raft node runs (or why it could not start).
    pub ready: std::sync::mpsc::SyncSender<Result<(), String>>,
}

/// The thread's body: runs until stopped, then drops everything it holds (the listener, the
/// storage and its lock).
pub fn run(launch: Launch) {
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            let _ = launch
                .ready
                .send(Err(format!("cannot build the tokio runtime: {e}")));
            return;
        }
    };
    let shared = launch.shared.clone();
    rt.block_on(main(launch));
    shared.stopped();
    rt.shutdown_timeout(RUNTIME_SHUTDOWN_TIMEOUT);
}

async fn main(launch: Launch) {
    let Launch {
        cfg,
        raft_config,
        store,
        machine,
        listener,
        mut commands,
        mut stop,
        shared,
        ready,
    } = launch;
    let transport = Transport::new(cfg.node_id);
    let network = NetworkFactory {
        transport: transport.clone(),
    };
    let raft = match Raft::new(cfg.node_id, Arc::new(raft_config), network, store, machine).await {
        Ok(raft) => raft,
        Err(e) => {
            let _ = ready.send(Err(format!("cannot start the raft node: {e}")));
            return;
        }
    };
    let listener = match listener.map(tokio::net::TcpListener::from_std).transpose() {
        Ok(l) => l,
        Err(e) => {
            let _ = ready.send(Err(format!("cannot use the quorum listener: {e}")));
            let _ = raft.shutdown().await;
            return;
        }
    };
    let node = Arc::new(Node {
        id: cfg.node_id,
        raft: raft.clone(),
        cfg,
        transport,
    });
    let _ = ready.send(Ok(()));

    let mut tasks = Vec::new();
    if let Some(listener) = listener {
        tasks.push(tokio::spawn(super::server::serve(listener, node.clone())));
    }
    let n = node.clone();
    tasks.push(tokio::spawn(async move { n.bootstrap().await }));
    let n = node.clone();
    let s = shared.clone();
    tasks.push(tokio::spawn(async move { publish_status(&n, &s).await }));

    let permits = Arc::new(Semaphore::new(MAX_INFLIGHT_COMMANDS));
    // Ends on the stop signal, or when every handle is gone.
    loop {
        let permit = tokio::select! {
            _ = &mut stop => break,
            p = permits.clone().acquire_owned() => match p {
                Ok(p) => p,
                Err(_) => break,
            },
        };
        let command = tokio::select! {
            _ = &mut stop => break,
            c = commands.recv() => match c {
                Some(c) => c,
                None => break,
            },
        };
        let node = node.clone();
        tokio::spawn(async move {
            execute(&node, command).await;
            drop(permit);
        });
    }

    for task in &tasks {
        task.abort();
    }
    match tokio::time::timeout(RAFT_SHUTDOWN_TIMEOUT, raft.shutdown()).await {
        Ok(Ok(())) => tracing::info!("quorum node {} stopped", node.id),
        Ok(Err(e)) => tracing::warn!("quorum node {} stopped with an error: {e}", node.id),
        Err(_) => tracing::warn!("quorum node {} did not stop in time", node.id),
    }
}

async fn execute(node: &Node, command: Command) {
    match command {
        Command::Propose {
            payload,
            timeout,
            reply,
        } => {
            let _ = reply.send(node.propose(payload, timeout).await);
        }
        Command::WaitLeader { timeout, reply } => {
            let _ = reply.send(node.wait_leader(timeout).await);
        }
        Command::WaitApplied {
            index,
            timeout,
            reply,
        } => {
            let _ = reply.send(node.wait_applied(index, timeout).await);
        }
        Command::Resign { timeout, reply } => {
            let _ = reply.send(node.resign(timeout).await);
        }
    }
}

/// Republishes the status on every change of openraft's metrics.
async fn publish_status(node: &Node, shared: &Shared) {
    let mut rx = node.raft.metrics();
    loop {
        {
            let m = rx.borrow_watched();
            shared.publish(&m, &node.cfg);
        }
        if rx.changed().await.is_err() {
            return;
        }
    }
}
