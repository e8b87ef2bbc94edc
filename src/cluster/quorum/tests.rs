//! Quorum tests: one voter with restarts and snapshots, three voters in one process (forwarding,
//! failover, catch-up), a quorum that lost its majority, a learner that joins late, and a torn
//! log tail under a running quorum. The handle is driven with `futures::executor::block_on`: no
//! tokio runtime on the caller's side. Every wait is bounded.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

use futures::executor::block_on;

use super::tests_store::Recorder;
use super::{store, Quorum, QuorumConfig};

/// Generous bounds: the test machine has two busy cores.
const LEADER_WAIT_MS: u64 = 15_000;
const PROPOSE_MS: u64 = 10_000;
const CATCH_UP_MS: u64 = 20_000;

/// Logs to the test output when `RUST_LOG` is set (e.g. `RUST_LOG=sluice=debug,openraft=info`).
fn init_logs() {
    if std::env::var_os("RUST_LOG").is_some() {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .with_test_writer()
            .try_init();
    }
}

fn free_port() -> String {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().to_string()
}

fn config(
    id: u64,
    voters: &BTreeMap<u64, String>,
    listen: Option<String>,
    dir: &Path,
    snapshot_every: u64,
) -> QuorumConfig {
    init_logs();
    QuorumConfig {
        node_id: id,
        voters: voters.clone(),
        listen,
        dir: dir.to_path_buf(),
        heartbeat_interval_ms: 100,
        election_timeout_min_ms: 600,
        election_timeout_max_ms: 1200,
        snapshot_every_entries: snapshot_every,
    }
}

fn single(dir: &Path, snapshot_every: u64) -> QuorumConfig {
    let voters = BTreeMap::from([(1, "127.0.0.1:1".to_string())]);
    config(1, &voters, None, dir, snapshot_every)
}

/// Polls `cond` every 20 ms until it holds or `ms` pass.
fn eventually(ms: u64, mut cond: impl FnMut() -> bool) -> bool {
    let end = Instant::now() + Duration::from_millis(ms);
    while Instant::now() < end {
        if cond() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    cond()
}

#[test]
fn one_voter_applies_in_order_and_restores_after_restart() {
    let dir = tempfile::tempdir().unwrap();
    let rec = Recorder::default();
    let q = Quorum::start(single(dir.path(), 1000), Box::new(rec.clone())).unwrap();
    let mut indexes = Vec::new();
    block_on(async {
        assert_eq!(q.wait_leader(LEADER_WAIT_MS).await, Some(1));
        for i in 0..3 {
            let index = q
                .propose(format!("e{i}").into_bytes(), PROPOSE_MS)
                .await
                .unwrap();
            // Applied before propose returns.
            assert_eq!(
                rec.entries().last(),
                Some(&(index, format!("e{i}").into_bytes()))
            );
            indexes.push(index);
        }
    });
    assert!(indexes.windows(2).all(|w| w[0] < w[1]), "{indexes:?}");
    // The status follows openraft's metrics, a moment behind.
    assert!(eventually(5_000, || q.status().applied_index == indexes[2]));
    let status = q.status();
    assert_eq!(status.leader, Some(1));
    assert_eq!(status.committed_index, indexes[2]);
    assert_eq!(status.last_log_index, indexes[2]);
    assert_eq!(status.peers.len(), 1);
    assert!(status.peers[0].voter);
    q.shutdown();
    q.shutdown();
    assert_eq!(
        block_on(q.propose(b"late".to_vec(), 1000)),
        Err(super::ProposeError::Shutdown)
    );

    let rec2 = Recorder::default();
    let q = Quorum::start(single(dir.path(), 1000), Box::new(rec2.clone())).unwrap();
    block_on(async {
        assert!(q.wait_applied(indexes[2], PROPOSE_MS).await);
        assert_eq!(rec2.entries(), rec.entries());
        assert_eq!(q.wait_leader(LEADER_WAIT_MS).await, Some(1));
        let next = q.propose(b"e3".to_vec(), PROPOSE_MS).await.unwrap();
        assert!(next > indexes[2]);
    });
    assert_eq!(rec2.payloads().len(), 4);
    q.shutdown();
}

#[test]
fn snapshots_purge_the_log_and_restore_the_state() {
    let dir = tempfile::tempdir().unwrap();
    let rec = Recorder::default();
    let q = Quorum::start(single(dir.path(), 5), Box::new(rec.clone())).unwrap();
    block_on(async {
        assert_eq!(q.wait_leader(LEADER_WAIT_MS).await, Some(1));
        for i in 0..12 {
            q.propose(format!("s{i}").into_bytes(), PROPOSE_MS)
                .await
                .unwrap();
        }
    });
    let log = dir.path().join(store::LOG_FILE);
    // The snapshot and the purge run in the background.
    let purged = eventually(10_000, || {
        let bytes = std::fs::read(&log).unwrap();
        store::check_log_bytes(&bytes).is_ok_and(|n| n < 8)
    });
    assert!(purged, "log not purged");
    assert!(dir.path().join(super::machine::SNAPSHOT_FILE).exists());
    q.shutdown();

    let rec2 = Recorder::default();
    let q = Quorum::start(single(dir.path(), 5), Box::new(rec2.clone())).unwrap();
    assert_eq!(*rec2.restores.lock().unwrap(), 1);
    assert_eq!(rec2.payloads(), rec.payloads());
    assert_eq!(rec2.payloads().len(), 12);
    q.shutdown();
}

/// Three voters on loopback; returns their handles, recorders, dirs and voter map.
struct Cluster {
    voters: BTreeMap<u64, String>,
    dirs: BTreeMap<u64, tempfile::TempDir>,
    nodes: BTreeMap<u64, (Quorum, Recorder)>,
    snapshot_every: u64,
}

impl Cluster {
    fn new(snapshot_every: u64) -> Cluster {
        let voters: BTreeMap<u64, String> = (1..=3).map(|id| (id, free_port())).collect();
        let dirs = (1..=3)
            .map(|id| (id, tempfile::tempdir().unwrap()))
            .collect();
        let mut c = Cluster {
            voters,
            dirs,
            nodes: BTreeMap::new(),
            snapshot_every,
        };
        for id in 1..=3 {
            c.start(id);
        }
        c
    }

    fn start(&mut self, id: u64) {
        let rec = Recorder::default();
        let listen = Some(self.voters[&id].clone());
        let cfg = config(
            id,
            &self.voters,
            listen,
            self.dirs[&id].path(),
            self.snapshot_every,
        );
        let q = Quorum::start(cfg, Box::new(rec.clone())).unwrap();
        self.nodes.insert(id, (q, rec));
    }

    fn stop(&mut self, id: u64) {
        if let Some((q, _)) = self.nodes.remove(&id) {
            q.shutdown();
        }
    }

    fn q(&self, id: u64) -> &Quorum {
        &self.nodes[&id].0
    }

    /// The leader all running nodes agree on.
    fn leader(&self) -> u64 {
        self.leader_other_than(0)
    }

    /// The leader all running nodes agree on, once it is not `old`.
    fn leader_other_than(&self, old: u64) -> u64 {
        let mut leader = None;
        let agreed = eventually(LEADER_WAIT_MS, || {
            let seen: Vec<Option<u64>> = self
                .nodes
                .values()
                .map(|(q, _)| q.status().leader)
                .collect();
            leader = seen[0];
            leader.is_some_and(|l| l != old) && seen.iter().all(|l| *l == leader)
        });
        assert!(agreed, "no agreed leader");
        leader.unwrap()
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for (q, _) in self.nodes.values() {
            q.shutdown();
        }
    }
}

#[test]
fn three_voters_forward_fail_over_and_catch_up() {
    let mut c = Cluster::new(1000);
    let leader = c.leader();
    let follower = (1..=3).find(|id| *id != leader).unwrap();
    let index = block_on(c.q(follower).propose(b"one".to_vec(), PROPOSE_MS)).unwrap();
    // Applied on the proposer when propose returns, and soon everywhere.
    assert_eq!(
        c.nodes[&follower].1.entries().last(),
        Some(&(index, b"one".to_vec()))
    );
    for (q, rec) in c.nodes.values() {
        assert!(block_on(q.wait_applied(index, CATCH_UP_MS)));
        assert_eq!(rec.payloads(), vec![b"one".to_vec()]);
    }
    let st = c.q(leader).status();
    assert_eq!(st.peers.iter().filter(|p| p.voter).count(), 3);
    assert!(st.peers.iter().all(|p| p.match_index.is_some()), "{st:?}");
    assert!(eventually(5_000, || c.q(leader).status().peers.iter().all(
        |p| p.id == leader || p.last_ack_ms_ago.is_some_and(|ms| ms < 5_000)
    )));

    // The leader stops: another takes over within a few seconds.
    let t = Instant::now();
    c.stop(leader);
    let new_leader = c.leader_other_than(leader);
    assert!(t.elapsed() < Duration::from_secs(10), "{:?}", t.elapsed());
    assert!(c.nodes.contains_key(&new_leader));
    let two = block_on(c.q(follower).propose(b"two".to_vec(), PROPOSE_MS)).unwrap();
    assert!(two > index);

    // The old leader comes back on its dir and catches up.
    c.start(leader);
    assert!(block_on(c.q(leader).wait_applied(two, CATCH_UP_MS)));
    let payloads = c.nodes[&leader].1.payloads();
    assert_eq!(payloads, vec![b"one".to_vec(), b"two".to_vec()]);

    // A controlled resignation hands the leadership over.
    let current = c.leader();
    block_on(c.q(current).resign(LEADER_WAIT_MS)).unwrap();
    assert!(eventually(LEADER_WAIT_MS, || c
        .q(current)
        .status()
        .leader
        .is_some_and(|l| l != current)));
}

#[test]
fn without_a_majority_propose_fails_in_time() {
    // The survivor is the old leader (it keeps leading, but cannot commit), then a follower
    // (its leader is gone and no election can succeed).
    for survivor_leads in [true, false] {
        let mut c = Cluster::new(1000);
        let leader = c.leader();
        block_on(c.q(leader).propose(b"x".to_vec(), PROPOSE_MS)).unwrap();
        let survivor = if survivor_leads {
            leader
        } else {
            (1..=3).find(|id| *id != leader).unwrap()
        };
        for id in 1..=3 {
            if id != survivor {
                c.stop(id);
            }
        }
        let t = Instant::now();
        let res = block_on(c.q(survivor).propose(b"lost".to_vec(), 1500));
        let took = t.elapsed();
        assert!(
            matches!(
                res,
                Err(super::ProposeError::NoLeader(_) | super::ProposeError::Timeout(_))
            ),
            "{res:?}"
        );
        assert!(took < Duration::from_millis(3000), "{took:?}");
    }
}

#[test]
fn a_learner_joins_and_catches_up_through_a_snapshot() {
    let c = Cluster::new(5);
    let leader = c.leader();
    let mut last = 0;
    for i in 0..12 {
        last = block_on(
            c.q(leader)
                .propose(format!("l{i}").into_bytes(), PROPOSE_MS),
        )
        .unwrap();
    }
    // The leader's log is purged by its snapshots.
    let log = c.dirs[&leader].path().join(store::LOG_FILE);
    assert!(eventually(10_000, || store::check_log_bytes(
        &std::fs::read(&log).unwrap()
    )
    .is_ok_and(|n| n < 8)));

    let dir = tempfile::tempdir().unwrap();
    let rec = Recorder::default();
    let cfg = config(4, &c.voters, Some(free_port()), dir.path(), 5);
    let learner = Quorum::start(cfg, Box::new(rec.clone())).unwrap();
    assert!(block_on(learner.wait_applied(last, CATCH_UP_MS)));
    assert_eq!(rec.payloads(), c.nodes[&leader].1.payloads());
    assert!(
        *rec.restores.lock().unwrap() >= 1,
        "caught up without a snapshot"
    );

    // It follows new entries, and its own proposals go through the leader.
    let index = block_on(learner.propose(b"from-learner".to_vec(), PROPOSE_MS)).unwrap();
    assert_eq!(
        rec.entries().last(),
        Some(&(index, b"from-learner".to_vec()))
    );
    let st = c.q(leader).status();
    let me = st.peers.iter().find(|p| p.id == 4).expect("learner listed");
    assert!(!me.voter);

    // Restarted on its dir, it needs no second join and catches up on what it missed.
    learner.shutdown();
    let missed = block_on(c.q(leader).propose(b"missed".to_vec(), PROPOSE_MS)).unwrap();
    let rec = Recorder::default();
    let cfg = config(4, &c.voters, Some(me.addr.clone()), dir.path(), 5);
    let learner = Quorum::start(cfg, Box::new(rec.clone())).unwrap();
    assert!(block_on(learner.wait_applied(missed, CATCH_UP_MS)));
    assert_eq!(rec.payloads(), c.nodes[&leader].1.payloads());
    learner.shutdown();
}

#[test]
fn a_torn_log_tail_is_cut_when_the_quorum_starts() {
    let dir = tempfile::tempdir().unwrap();
    let rec = Recorder::default();
    let q = Quorum::start(single(dir.path(), 1000), Box::new(rec.clone())).unwrap();
    let last = block_on(async {
        assert_eq!(q.wait_leader(LEADER_WAIT_MS).await, Some(1));
        let mut last = 0;
        for i in 0..3 {
            last = q
                .propose(format!("t{i}").into_bytes(), PROPOSE_MS)
                .await
                .unwrap();
        }
        last
    });
    q.shutdown();
    let log = dir.path().join(store::LOG_FILE);
    let mut bytes = std::fs::read(&log).unwrap();
    bytes.extend_from_slice(&[200, 0, 0, 0, 9, 9, 9, 9, 1, 2, 3]);
    std::fs::write(&log, &bytes).unwrap();

    let rec2 = Recorder::default();
    let q = Quorum::start(single(dir.path(), 1000), Box::new(rec2.clone())).unwrap();
    assert!(block_on(q.wait_applied(last, PROPOSE_MS)));
    assert_eq!(rec2.payloads(), rec.payloads());
    q.shutdown();

    // Garbage in place of the magic number is not a torn tail: start-up fails, cleanly.
    std::fs::write(&log, b"garbage!garbage!").unwrap();
    assert!(Quorum::start(single(dir.path(), 1000), Box::new(Recorder::default())).is_err());
}
