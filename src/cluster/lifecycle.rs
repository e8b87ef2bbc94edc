//! A node's life in the cluster: starting the metadata quorum on the data
//! dir, learning (or choosing) the cluster id, bringing a single-node data dir
//! of the JSON-file era into the metadata log, registering the broker, and,
//! on whichever node leads the quorum, the controller's duties: fencing
//! brokers that stopped answering, and electing leaders for partitions that
//! have none.
//!
//! Liveness (a deliberate difference from KRaft, which has brokers send
//! BrokerHeartbeat): every broker is a voter or a learner of the metadata
//! quorum, and the quorum's leader hears from each at every replication
//! heartbeat. A broker not heard from for `broker.session.timeout.ms` is
//! fenced; one heard from again is unfenced.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::Duration;

use anyhow::Context;

use super::quorum::{Quorum, QuorumConfig, QuorumStatus};
use super::records::MetadataRecord;
use super::{controller, image, meta_properties, publisher, store, MetadataImage, NO_LEADER};
use crate::config::BrokerConfig;
use crate::runtime;

/// Directory of the metadata log inside the first log dir (Kafka's name for it).
pub const METADATA_LOG_DIR: &str = "__cluster_metadata-0";
/// Longest one start-up proposal waits before it is retried.
const STARTUP_PROPOSE_TIMEOUT_MS: u64 = 5_000;
/// Longest a start-up waits for the quorum before it logs again (it keeps waiting).
const WAITING_LOG_EVERY: Duration = Duration::from_secs(5);
/// Entries between snapshots of the metadata log.
const SNAPSHOT_EVERY_ENTRIES: u64 = 1_000;

static LISTENER_WAKE: Mutex<Option<futures::channel::mpsc::Receiver<()>>> = Mutex::new(None);
/// This process's broker incarnation, once registered.
static INCARNATION: Mutex<Option<uuid::Uuid>> = Mutex::new(None);
/// Longest a clean shutdown spends telling the cluster it is leaving.
const LEAVE_TIMEOUT_MS: u64 = 3_000;

/// The image listener's wake-up receiver, for shard 0 to run `listener::run` with.
pub fn take_listener_wake() -> Option<futures::channel::mpsc::Receiver<()>> {
    LISTENER_WAKE.lock().ok().and_then(|mut g| g.take())
}

fn voters_text(cfg: &BrokerConfig) -> String {
    cfg.cluster
        .voters
        .iter()
        .map(|(id, a)| format!("{id}@{a}"))
        .collect::<Vec<_>>()
        .join(",")
}

/// Starts the quorum and waits until this node knows the cluster (id chosen, image caught
/// up, broker registered). Runs on the main thread before the shards start.
pub fn start(cfg: &BrokerConfig) -> anyhow::Result<()> {
    let voters = voters_text(cfg);
    meta_properties::check_dirs(&cfg.log_dirs, cfg.node_id, &voters)?;
    super::MULTI_NODE.store(
        !cfg.cluster.single_node(),
        std::sync::atomic::Ordering::Relaxed,
    );
    let (tx, rx) = futures::channel::mpsc::channel(1);
    publisher::install_wake(tx);
    if let Ok(mut g) = LISTENER_WAKE.lock() {
        *g = Some(rx);
    }
    let node = cfg.node_id;
    let quorum_voters: BTreeMap<u64, String> = if cfg.cluster.single_node() {
        [(node as u64, "local".to_string())].into()
    } else {
        cfg.cluster
            .voters
            .iter()
            .map(|(id, a)| (*id as u64, a.clone()))
            .collect()
    };
    let election = cfg.cluster.election_timeout_ms;
    let qcfg = QuorumConfig {
        node_id: node as u64,
        voters: quorum_voters,
        listen: cfg.cluster.controller_listen.clone(),
        dir: cfg.log_dirs[0].join(METADATA_LOG_DIR),
        heartbeat_interval_ms: (election / 5).max(20),
        election_timeout_min_ms: election,
        election_timeout_max_ms: election * 2,
        snapshot_every_entries: SNAPSHOT_EVERY_ENTRIES,
    };
    let machine = publisher::ImageMachine::new(node, cfg.log_dirs.clone());
    let q = Quorum::start(qcfg, Box::new(machine)).context("starting the metadata quorum")?;
    if super::QUORUM.set(q.clone()).is_err() {
        anyhow::bail!("the metadata quorum was already started in this process");
    }
    futures::executor::block_on(join(cfg, &q, &voters))
}

async fn join(cfg: &BrokerConfig, q: &Quorum, voters: &str) -> anyhow::Result<()> {
    let meta_dir = &cfg.log_dirs[0];
    let legacy = store::load(meta_dir)?;
    let mut last_log = std::time::Instant::now();
    // Catch up with what this node already has committed, then make sure a cluster id exists.
    let committed = q.status().committed_index;
    q.wait_applied(committed, STARTUP_PROPOSE_TIMEOUT_MS).await;
    while image().cluster_id.is_empty() {
        let records = vec![MetadataRecord::ClusterId {
            cluster_id: legacy
                .as_ref()
                .map(|l| l.cluster_id.clone())
                .filter(|c| !c.is_empty())
                .or_else(|| Some(cfg.cluster_id.clone()).filter(|c| !c.is_empty()))
                .unwrap_or_else(|| uuid::Uuid::new_v4().simple().to_string()[..22].to_string()),
        }];
        if let Err(r) = controller::propose_committed(records).await {
            if last_log.elapsed() >= WAITING_LOG_EVERY {
                tracing::info!(voters, reason = %r.message, "waiting for the controller quorum");
                last_log = std::time::Instant::now();
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }
    let cluster_id = image().cluster_id.clone();
    meta_properties::settle(&cfg.log_dirs, cfg.node_id, voters, &cluster_id)?;
    if cfg.cluster.roles.broker {
        // Registered first, so the partitions imported below have their leader at once.
        register(cfg).await?;
    }
    if let Some(old) = &legacy {
        import_legacy(cfg, old).await?;
    }
    tracing::info!(cluster_id = %cluster_id, node = cfg.node_id, leader = ?q.status().leader, "joined the cluster");
    Ok(())
}

fn advertised_host_port(cfg: &BrokerConfig) -> (String, i32) {
    match cfg.advertised.rsplit_once(':') {
        Some((h, p)) => (
            h.trim_matches(['[', ']']).to_string(),
            p.parse().unwrap_or(9092),
        ),
        None => (cfg.advertised.clone(), 9092),
    }
}

/// Writes a pre-quorum single-node image into the metadata log (topics with this node as
/// their one replica, the producer-id high mark), then renames the JSON file aside. Topics
/// that already exist (a crash before the rename last time) are refused and kept as they are.
async fn import_legacy(cfg: &BrokerConfig, old: &MetadataImage) -> anyhow::Result<()> {
    let records: Vec<MetadataRecord> = super::records::records_of_image(old, cfg.node_id)
        .into_iter()
        .filter(|r| !matches!(r, MetadataRecord::ClusterId { .. }))
        .collect();
    if !records.is_empty() {
        controller::propose_committed(records).await.map_err(|r| {
            anyhow::anyhow!("importing the single-node metadata file: {}", r.message)
        })?;
    }
    let meta_dir = &cfg.log_dirs[0];
    let from = meta_dir.join(store::METADATA_FILE);
    let to = meta_dir.join(format!("{}.imported", store::METADATA_FILE));
    std::fs::rename(&from, &to).with_context(|| format!("renaming {}", from.display()))?;
    tracing::info!(topics = old.topics.len(), file = %to.display(),
        "single-node metadata file imported into the metadata log");
    Ok(())
}

/// Registers this broker (a new incarnation at every start), retrying until the quorum
/// commits it.
async fn register(cfg: &BrokerConfig) -> anyhow::Result<()> {
    let (host, port) = advertised_host_port(cfg);
    let incarnation = uuid::Uuid::new_v4();
    if let Ok(mut g) = INCARNATION.lock() {
        *g = Some(incarnation);
    }
    let rec = MetadataRecord::RegisterBroker {
        id: cfg.node_id,
        incarnation,
        host,
        port,
        rack: cfg.cluster.rack.clone(),
    };
    let mut last_log = std::time::Instant::now();
    loop {
        match controller::propose_committed(vec![rec.clone()]).await {
            Ok(_) => return Ok(()),
            Err(r) => {
                if last_log.elapsed() >= WAITING_LOG_EVERY {
                    tracing::info!(reason = %r.message, "waiting to register with the controller quorum");
                    last_log = std::time::Instant::now();
                }
                std::thread::sleep(Duration::from_millis(200));
            }
        }
    }
}

/// How long ago the quorum leader heard from `node`: `Some(0)` for itself; for a member of
/// the quorum it has not heard from since it took over, the time it has led
/// (`leader_for_ms`); `None` for a node that is not a member (not tracked).
fn heard_ms_ago(st: &QuorumStatus, node: i32, leader_for_ms: u64) -> Option<u64> {
    if st.node_id == node as u64 {
        return Some(0);
    }
    st.peers
        .iter()
        .find(|p| p.id == node as u64)
        .map(|p| p.last_ack_ms_ago.unwrap_or(leader_for_ms))
}

/// The controller's decisions for one look at the cluster: fence brokers not heard from
/// within the session timeout (moving their partitions' leadership), unfence those heard
/// from again, and give leaderless partitions a live in-sync leader; where none is in sync
/// and the topic allows it (`unclean.leader.election.enable`, asked through `unclean`), a
/// live out-of-sync replica leads with an ISR of itself. Pure.
pub fn decide(
    img: &MetadataImage,
    st: &QuorumStatus,
    leader_for_ms: u64,
    session_timeout_ms: u64,
    unclean: &dyn Fn(&super::TopicMeta) -> bool,
) -> Vec<MetadataRecord> {
    let heard = |id: i32| heard_ms_ago(st, id, leader_for_ms);
    let alive = |id: i32| heard(id).is_some_and(|ms| ms < session_timeout_ms);
    let dead = |id: i32| heard(id).is_some_and(|ms| ms >= session_timeout_ms);
    let mut out = Vec::new();
    let (mut fenced_now, mut unfenced_now) = (Vec::new(), Vec::new());
    for b in img.brokers.values() {
        if !b.fenced && dead(b.id) {
            out.push(MetadataRecord::FenceBroker {
                id: b.id,
                incarnation: b.incarnation,
            });
            fenced_now.push(b.id);
        } else if b.fenced && !b.leaving && alive(b.id) {
            out.push(MetadataRecord::UnfenceBroker {
                id: b.id,
                incarnation: b.incarnation,
            });
            unfenced_now.push(b.id);
        }
    }
    // A replica may lead if it is being unfenced now, or is unfenced and not silent.
    let usable = |id: i32| {
        unfenced_now.contains(&id)
            || (!fenced_now.contains(&id)
                && img.brokers.get(&id).is_some_and(|b| !b.fenced && !dead(id)))
    };
    let fenced =
        |id: i32| fenced_now.contains(&id) || img.brokers.get(&id).is_none_or(|b| b.fenced);
    for t in img.topics.values() {
        for p in &t.partitions {
            // Fenced brokers leave every ISR, as KRaft's controller removes them, except
            // the last member: Kafka keeps it so the partition knows whom to wait for.
            let mut isr: Vec<i32> = p.isr.iter().copied().filter(|r| !fenced(*r)).collect();
            if isr.is_empty() {
                isr = p.isr.clone();
            }
            let leader_lost = p.leader == NO_LEADER || fenced(p.leader);
            let leader = if leader_lost {
                match isr.iter().copied().find(|r| usable(*r)) {
                    Some(l) => l,
                    None if unclean(t) => match p.replicas.iter().copied().find(|r| usable(*r)) {
                        Some(l) => {
                            tracing::warn!(topic = %t.name, partition = p.index, leader = l, isr = ?p.isr,
                                "unclean leader election: no in-sync replica is live, an out-of-sync one leads; records only the old ISR held are lost");
                            isr = vec![l];
                            l
                        }
                        None => NO_LEADER,
                    },
                    None => NO_LEADER,
                }
            } else {
                p.leader
            };
            if leader == p.leader && isr == p.isr {
                continue;
            }
            out.push(super::election::change(t, p, leader, isr));
        }
    }
    out
}

/// The controller's loop, on shard 0 of every controller node; acts only while this node
/// leads the quorum.
pub async fn controller_loop(cfg: std::sync::Arc<BrokerConfig>) {
    let tick = Duration::from_millis((cfg.cluster.heartbeat_interval_ms / 2).clamp(50, 1000));
    let me = cfg.node_id as u64;
    let mut leading_since: Option<std::time::Instant> = None;
    let mut last_balance_check = std::time::Instant::now();
    loop {
        runtime::sleep(tick).await;
        let Some(q) = super::quorum_handle() else {
            continue;
        };
        let st = q.status();
        if st.leader != Some(me) {
            leading_since = None;
            continue;
        }
        let since = *leading_since.get_or_insert_with(std::time::Instant::now);
        let leader_for_ms = since.elapsed().as_millis() as u64;
        let img = image();
        let unclean = |t: &super::TopicMeta| {
            cfg.topic_value(&t.configs, "unclean.leader.election.enable")
                .is_some_and(|v| v == "true")
        };
        let mut records = decide(
            &img,
            &st,
            leader_for_ms,
            cfg.cluster.session_timeout_ms,
            &unclean,
        );
        if records.is_empty()
            && cfg.cluster.auto_leader_rebalance
            && last_balance_check.elapsed().as_millis() as u64
                >= cfg.cluster.leader_imbalance_check_interval_ms
        {
            last_balance_check = std::time::Instant::now();
            records = super::election::rebalance(&img, cfg.cluster.leader_imbalance_per_broker_pct);
        }
        if records.is_empty() {
            continue;
        }
        for r in &records {
            tracing::info!(record = ?r, "controller decision");
        }
        if let Err(r) = controller::propose_committed(records).await {
            tracing::warn!(reason = %r.message, "controller decision not committed");
        }
    }
}

/// A clean stop in a cluster of several nodes (after the shards closed their logs): the
/// broker fences itself, so clients see its partitions without a leader at once instead of
/// after `broker.session.timeout.ms`, and a quorum leader hands leadership to another voter,
/// so admin requests wait for no election. Bounded; failures are logged. (Partition
/// leadership moved before the shards stopped: [`controlled_shutdown`].)
pub fn leave(cfg: &BrokerConfig) {
    let Some(q) = super::quorum_handle() else {
        return;
    };
    if cfg.cluster.single_node() {
        return;
    }
    fence_self(cfg);
    let st = q.status();
    let (others, _) = quorum_within_reach(&st, cfg.cluster.voters.len(), fresh_ms(cfg));
    if st.leader == Some(cfg.node_id as u64) && others > 0 {
        match futures::executor::block_on(q.resign(LEAVE_TIMEOUT_MS)) {
            Ok(()) => tracing::info!("handed the quorum's leadership to another voter"),
            Err(e) => {
                tracing::warn!(error = %format!("{e:#}"), "could not hand over the quorum's leadership")
            }
        }
    }
}

/// Set once this broker's clean stop fenced it.
static LEFT: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);
/// Set once a clean stop found the quorum out of reach, so the stop does not wait for it
/// again (fence, hand-over).
static QUORUM_GONE: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Other voters heard from within `fresh_ms` (the quorum leader's view), and whether that
/// with this node makes a majority of `voters`. A follower that knows a leader assumes it
/// can reach it; one that knows none cannot commit anything. Pure.
pub fn quorum_within_reach(st: &QuorumStatus, voters: usize, fresh_ms: u64) -> (usize, bool) {
    let me = st.node_id;
    let others = st
        .peers
        .iter()
        .filter(|p| p.voter && p.id != me && p.last_ack_ms_ago.is_some_and(|ms| ms < fresh_ms))
        .count();
    let reachable = match st.leader {
        None => false,
        Some(l) if l == me => (others + 1) * 2 > voters,
        Some(_) => true,
    };
    (others, reachable)
}

/// How recent a voter's answer must be for a stopping broker to count on it.
fn fresh_ms(cfg: &BrokerConfig) -> u64 {
    cfg.cluster.election_timeout_ms.saturating_mul(2)
}

/// Fences this broker for its clean stop (`BrokerLeaving`), once. Blocking; bounded. True
/// when this broker is fenced (now or before).
fn fence_self(cfg: &BrokerConfig) -> bool {
    let Some(q) = super::quorum_handle() else {
        return false;
    };
    if LEFT.load(std::sync::atomic::Ordering::Acquire) {
        return true;
    }
    if QUORUM_GONE.load(std::sync::atomic::Ordering::Acquire) {
        return false;
    }
    let (_, reachable) = quorum_within_reach(&q.status(), cfg.cluster.voters.len(), fresh_ms(cfg));
    if !reachable {
        // No majority answers (the rest of the cluster is stopping too): a proposal would
        // only time out.
        QUORUM_GONE.store(true, std::sync::atomic::Ordering::Release);
        tracing::info!("the metadata quorum is out of reach; stopping without fencing first");
        return false;
    }
    let Some(incarnation) = INCARNATION.lock().ok().and_then(|g| *g) else {
        return false;
    };
    let fence = MetadataRecord::BrokerLeaving {
        id: cfg.node_id,
        incarnation,
    };
    let entry = super::records::encode_entry(&[fence]);
    match futures::executor::block_on(q.propose(entry, LEAVE_TIMEOUT_MS)) {
        Ok(_) => {
            LEFT.store(true, std::sync::atomic::Ordering::Release);
            tracing::info!("fenced this broker before stopping");
            true
        }
        Err(e) => {
            QUORUM_GONE.store(true, std::sync::atomic::Ordering::Release);
            tracing::warn!(error = %e, "could not fence this broker before stopping");
            false
        }
    }
}

/// Partitions this broker leads that another live in-sync replica could take over.
fn movable_leaderships(node: i32) -> usize {
    let img = image();
    img.topics
        .values()
        .flat_map(|t| t.partitions.iter())
        .filter(|p| p.leader == node && p.isr.iter().any(|r| *r != node && img.is_live(*r)))
        .count()
}

/// Controlled shutdown, before the shards stop serving (Kafka's
/// `controlled.shutdown.enable`): this broker fences itself, the controller moves the
/// leadership of its partitions to other in-sync replicas, and the stop waits (up to
/// `broker.session.timeout.ms`) until the image shows none left here, so clients move to
/// the new leaders while this broker still answers NOT_LEADER_OR_FOLLOWER. Blocking; on
/// the signal thread. Partitions with no other in-sync replica go offline.
pub fn controlled_shutdown(cfg: &BrokerConfig) {
    if cfg.cluster.single_node() || !cfg.cluster.roles.broker || super::quorum_handle().is_none() {
        return;
    }
    let before = movable_leaderships(cfg.node_id);
    if !fence_self(cfg) || before == 0 {
        // Not fenced (no quorum): the controller will not move anything; do not wait.
        return;
    }
    let deadline =
        std::time::Instant::now() + Duration::from_millis(cfg.cluster.session_timeout_ms);
    loop {
        let left = movable_leaderships(cfg.node_id);
        if left == 0 {
            tracing::info!(
                partitions = before,
                "controlled shutdown: leadership moved to other in-sync replicas"
            );
            return;
        }
        if std::time::Instant::now() >= deadline {
            tracing::warn!(
                left,
                "controlled shutdown: some leaderships did not move in time; stopping anyway"
            );
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// This node's quorum, for status and shutdown.
pub fn quorum() -> Option<&'static Quorum> {
    super::quorum_handle()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::quorum::PeerStatus;
    use crate::cluster::records::{apply_all, MetadataRecord as R};

    fn status(me: u64, acks: &[(u64, Option<u64>)]) -> QuorumStatus {
        QuorumStatus {
            node_id: me,
            leader: Some(me),
            peers: acks
                .iter()
                .map(|(id, ms)| PeerStatus {
                    id: *id,
                    last_ack_ms_ago: *ms,
                    voter: true,
                    ..Default::default()
                })
                .collect(),
            ..Default::default()
        }
    }

    fn cluster() -> MetadataImage {
        let mut img = MetadataImage::default();
        let reg = |id: i32| R::RegisterBroker {
            id,
            incarnation: uuid::Uuid::from_u128(id as u128),
            host: "h".into(),
            port: id,
            rack: None,
        };
        apply_all(
            &mut img,
            &[
                reg(1),
                reg(2),
                reg(3),
                R::CreateTopic {
                    name: "t".into(),
                    id: uuid::Uuid::from_u128(9),
                    replicas: vec![vec![2], vec![3], vec![2, 3]],
                    configs: Default::default(),
                },
            ],
        );
        img
    }

    #[test]
    fn silent_broker_is_fenced_and_its_partitions_move_or_go_offline() {
        let mut img = cluster();
        let st = status(1, &[(2, Some(20_000)), (3, Some(100))]);
        let d = decide(&img, &st, 0, 9_000, &|_| false);
        let out = apply_all(&mut img, &d);
        assert!(out.iter().all(Result::is_ok), "{out:?}");
        assert!(img.brokers[&2].fenced);
        let t = img.topic("t").unwrap();
        assert_eq!(t.partitions[0].leader, NO_LEADER, "RF=1 goes offline");
        assert_eq!(t.partitions[0].isr, vec![2], "the last ISR member stays");
        assert_eq!(t.partitions[1].leader, 3);
        assert_eq!(
            (t.partitions[2].leader, t.partitions[2].isr.clone()),
            (3, vec![3])
        );
        // Steady: nothing more to decide.
        assert!(decide(&img, &st, 0, 9_000, &|_| false).is_empty());
        // Broker 2 answers again: unfenced, then its partition gets its leader back.
        let st = status(1, &[(2, Some(50)), (3, Some(100))]);
        let d = decide(&img, &st, 0, 9_000, &|_| false);
        apply_all(&mut img, &d);
        assert!(!img.brokers[&2].fenced);
        let t = img.topic("t").unwrap();
        assert_eq!(t.partitions[0].leader, 2);
        assert!(t.partitions[0].leader_epoch >= 1);
    }

    #[test]
    fn a_stopping_leader_counts_only_voters_it_heard_from() {
        // Leader 1 of 3 voters; 2 answered 100 ms ago, 3 is silent.
        let st = status(1, &[(1, Some(0)), (2, Some(100)), (3, Some(20_000))]);
        assert_eq!(quorum_within_reach(&st, 3, 2_000), (1, true));
        let st = status(1, &[(1, Some(0)), (2, Some(9_000)), (3, Some(20_000))]);
        assert_eq!(quorum_within_reach(&st, 3, 2_000), (0, false));
        // A follower that knows a leader counts on it; one that knows none cannot.
        let mut st = status(2, &[]);
        st.leader = Some(1);
        assert!(quorum_within_reach(&st, 3, 2_000).1);
        st.leader = None;
        assert!(!quorum_within_reach(&st, 3, 2_000).1);
    }

    #[test]
    fn unclean_election_only_where_the_topic_allows_it() {
        let mut img = cluster();
        // Partition 2 ([2, 3], led by 2) shrinks to ISR [2]; then broker 2 dies.
        let st = status(1, &[(2, Some(100)), (3, Some(20_000))]);
        let shrink = decide(&img, &st, 0, 9_000, &|_| false);
        apply_all(&mut img, &shrink);
        let st = status(1, &[(2, Some(20_000)), (3, Some(100))]);
        let clean = decide(&img, &st, 0, 9_000, &|_| false);
        let mut clean_img = img.clone();
        apply_all(&mut clean_img, &clean);
        let p = &clean_img.topic("t").unwrap().partitions[2];
        assert_eq!(
            (p.leader, p.isr.clone()),
            (NO_LEADER, vec![2]),
            "offline, waiting for 2"
        );
        let unclean = decide(&img, &st, 0, 9_000, &|t| t.name == "t");
        let out = apply_all(&mut img, &unclean);
        assert!(out.iter().all(Result::is_ok), "{out:?}");
        let p = &img.topic("t").unwrap().partitions[2];
        assert_eq!(
            (p.leader, p.isr.clone()),
            (3, vec![3]),
            "out-of-sync 3 leads"
        );
    }

    #[test]
    fn a_fenced_follower_leaves_the_isr_and_the_leader_stays() {
        let mut img = cluster();
        // Partition 2 has replicas [2, 3], led by 2; broker 3 goes silent.
        let st = status(1, &[(2, Some(100)), (3, Some(20_000))]);
        let d = decide(&img, &st, 0, 9_000, &|_| false);
        let out = apply_all(&mut img, &d);
        assert!(out.iter().all(Result::is_ok), "{out:?}");
        let p = &img.topic("t").unwrap().partitions[2];
        assert_eq!((p.leader, p.isr.clone(), p.leader_epoch), (2, vec![2], 0));
        // A fenced broker cannot be added back by its leader until it is unfenced.
        let t = img.topic("t").unwrap().clone();
        let back = R::ChangePartition {
            name: "t".into(),
            id: t.id,
            partition: 2,
            partition_epoch: t.partitions[2].partition_epoch,
            leader: 2,
            isr: vec![2, 3],
        };
        assert!(apply_all(&mut img, std::slice::from_ref(&back))[0].is_err());
    }

    #[test]
    fn a_leaving_broker_stays_fenced_while_still_heard_and_returns_on_register() {
        let mut img = cluster();
        let inc = img.brokers[&2].incarnation;
        apply_all(
            &mut img,
            &[R::BrokerLeaving {
                id: 2,
                incarnation: inc,
            }],
        );
        let st = status(1, &[(2, Some(10)), (3, Some(10))]);
        let d = decide(&img, &st, 0, 9_000, &|_| false);
        let out = apply_all(&mut img, &d);
        assert!(img.brokers[&2].fenced, "heard from, but leaving");
        assert!(out.iter().all(Result::is_ok), "{d:?} {out:?}");
        let t = img.topic("t").unwrap();
        assert_eq!(
            t.partitions[0].leader, NO_LEADER,
            "its RF=1 partition goes offline at once"
        );
        assert_eq!(t.partitions[2].leader, 3, "an in-sync follower takes over");
        apply_all(
            &mut img,
            &[R::RegisterBroker {
                id: 2,
                incarnation: uuid::Uuid::new_v4(),
                host: "h".into(),
                port: 2,
                rack: None,
            }],
        );
        let d = decide(&img, &st, 0, 9_000, &|_| false);
        apply_all(&mut img, &d);
        assert_eq!(img.topic("t").unwrap().partitions[0].leader, 2);
    }

    #[test]
    fn unknown_liveness_fences_no_one_until_a_new_leader_has_waited_a_session() {
        let img = cluster();
        assert!(
            decide(&img, &status(1, &[]), 60_000, 9_000, &|_| false).is_empty(),
            "not members"
        );
        let silent = status(1, &[(2, None), (3, Some(10))]);
        assert!(decide(&img, &silent, 1_000, 9_000, &|_| false).is_empty());
        let d = decide(&img, &silent, 9_500, 9_000, &|_| false);
        assert!(matches!(d[0], R::FenceBroker { id: 2, .. }), "{d:?}");
    }
}
