//! The broker process: start-up (config, data-dir locks, metadata, shards),
//! each shard's listener and connections, and clean shutdown on SIGINT/SIGTERM.
//! One handler per Kafka API lives in `handlers/`.

pub mod admin;
pub mod connection;
pub mod handlers;
pub mod limits;
pub mod metrics;

use std::cell::Cell;
use std::sync::Arc;

use anyhow::Context;
use nix::sys::signal::{SigSet, Signal};

use crate::cluster::{self, partition_manager, store};
use crate::config::{BrokerConfig, StartArgs};
use crate::runtime::{self, LocalNotify};

pub use crate::runtime::now_ms;

thread_local! {
    static STOPPING: Cell<bool> = const { Cell::new(false) };
    static STOP: std::rc::Rc<LocalNotify> = std::rc::Rc::new(LocalNotify::default());
}

/// Runs the broker until SIGINT/SIGTERM.
pub fn run_start(args: StartArgs) -> anyhow::Result<()> {
    let cfg = BrokerConfig::load(&args)?;
    let _locks = cfg
        .log_dirs
        .iter()
        .map(|d| store::lock_dir(d))
        .collect::<anyhow::Result<Vec<_>>>()?;
    if cfg.cluster.roles.broker {
        refuse_if_port_taken(&cfg.listen)?;
    }
    if let Some(addr) = cfg.admin_listen {
        admin::bind(addr)?;
    }
    metrics::set_topics_max(cfg.metrics_topics_max);
    tracing::info!(
        listen = %cfg.listen, log_dirs = ?cfg.log_dirs, smp = cfg.smp, node = cfg.node_id,
        roles = ?cfg.cluster.roles, voters = ?cfg.cluster.voters, "starting sluice"
    );
    // Signals are blocked before any thread starts (the quorum's included), so only the
    // signal thread receives them.
    let mut signals = SigSet::empty();
    signals.add(Signal::SIGINT);
    signals.add(Signal::SIGTERM);
    signals.thread_block().context("blocking signals")?;
    let shards = cfg.smp;
    std::thread::Builder::new()
        .name("signals".into())
        .spawn(move || {
            if let Ok(sig) = signals.wait() {
                tracing::info!(signal = ?sig, "shutting down");
            }
            admin::health::set_stopping();
            if !runtime::shards_started() {
                // Still joining the cluster: nothing to close yet.
                tracing::info!("stopped before serving");
                std::process::exit(0);
            }
            cluster::lifecycle::controlled_shutdown(&partition_manager::broker_config());
            for s in 0..shards {
                let _ = futures::executor::block_on(runtime::submit_to(s, || async {
                    STOPPING.with(|c| c.set(true));
                    STOP.with(|n| n.notify_all());
                }));
            }
        })
        .context("starting signal thread")?;
    let cfg = Arc::new(cfg);
    partition_manager::install_config(cfg.clone());
    partition_manager::on_leadership_change(crate::group::coordinator::on_leadership_change);
    partition_manager::on_leadership_change(crate::txn::coordinator::on_leadership_change);
    // Before anything looks at the partition dirs (the metadata state machine places each
    // hosted partition in the dir that holds it): finish or clear log dir moves a crash
    // interrupted (AlterReplicaLogDirs), so each partition has exactly one directory.
    cluster::dir_move::recover(&cfg.log_dirs);
    cluster::lifecycle::start(&cfg)?;
    let img = cluster::image();
    quarantine_strays(&cfg, &img);
    tracing::info!(topics = img.topics.len(), brokers = img.brokers.len(), cluster_id = %img.cluster_id, "metadata loaded");

    let opts = runtime::ShardOptions {
        io_memory: cfg.io_memory_bytes,
        spin_before_park: std::time::Duration::from_micros(cfg.spin_before_park_us),
    };
    let shard_cfg = cfg.clone();
    runtime::run_shards(cfg.smp, opts, move |id| shard_main(id, shard_cfg.clone()))?;
    cluster::lifecycle::leave(&cfg);
    if let Some(q) = cluster::quorum_handle() {
        q.shutdown();
    }
    tracing::info!("stopped");
    Ok(())
}

async fn shard_main(id: usize, cfg: Arc<BrokerConfig>) {
    runtime::stall::set_extra(crate::storage::read_figures);
    runtime::stall::start(
        id,
        std::time::Duration::from_millis(cfg.stall_interval_ms),
        std::time::Duration::from_micros(cfg.stall_threshold_us),
    );
    if id == 0 {
        admin::start();
        if let Some(wake) = cluster::lifecycle::take_listener_wake() {
            runtime::spawn(cluster::listener::run(wake, cluster::image()));
        }
        if cfg.cluster.roles.controller {
            runtime::spawn(cluster::lifecycle::controller_loop(cfg.clone()));
        }
    }
    match partition_manager::open_owned().await {
        Ok(n) => tracing::info!(shard = id, partitions = n, "partitions recovered"),
        Err(e) => {
            tracing::error!(shard = id, error = %format!("{e:#}"), "cannot open partitions; exiting");
            std::process::exit(1);
        }
    }
    match crate::group::coordinator::load_owned().await {
        Ok(n) => tracing::info!(shard = id, groups = n, "consumer groups loaded"),
        Err(e) => {
            tracing::error!(shard = id, error = %format!("{e:#}"), "cannot load consumer groups; exiting");
            std::process::exit(1);
        }
    }
    runtime::spawn(partition_manager::housekeeping_loop());
    runtime::spawn(cluster::leader::isr_loop());
    runtime::spawn(crate::group::coordinator::timer_loop());
    match crate::txn::coordinator::load_owned().await {
        Ok(n) => tracing::info!(shard = id, transactional_ids = n, "transactions loaded"),
        Err(e) => {
            tracing::error!(shard = id, error = %format!("{e:#}"), "cannot load transactions; exiting");
            std::process::exit(1);
        }
    }
    runtime::spawn(crate::txn::coordinator::timer_loop());
    if !cfg.cluster.roles.broker {
        // A controller-only node serves no clients: it waits for the signal to stop.
        let stop = STOP.with(|s| s.clone());
        admin::health::shard_up(cfg.smp);
        if !STOPPING.with(Cell::get) {
            stop.notified().await;
        }
        partition_manager::close_all().await;
        tracing::info!(shard = id, "shard stopped");
        return;
    }
    let listener = match glommio::net::TcpListener::bind(&cfg.listen) {
        Ok(l) => l,
        Err(e) => {
            tracing::error!(shard = id, listen = %cfg.listen, error = %e, "cannot listen; exiting");
            std::process::exit(1);
        }
    };
    tracing::info!(shard = id, listen = %cfg.listen, "listening");
    admin::health::shard_up(cfg.smp);
    loop {
        if STOPPING.with(Cell::get) {
            break;
        }
        let stop = STOP.with(|s| s.clone());
        let accepted = {
            let accept = std::pin::pin!(listener.accept());
            let stopped = std::pin::pin!(stop.notified());
            match futures::future::select(accept, stopped).await {
                futures::future::Either::Left((r, _)) => Some(r),
                futures::future::Either::Right(_) => None,
            }
        };
        match accepted {
            None => break,
            Some(Ok(stream)) => admit_connection(stream, &cfg).await,
            Some(Err(e)) => {
                tracing::warn!(shard = id, error = %e, "accept failed");
                runtime::sleep(std::time::Duration::from_millis(10)).await;
            }
        }
    }
    partition_manager::close_all().await;
    tracing::info!(shard = id, "shard stopped");
}

/// One refused-connection log line per this interval, all shards together.
static REFUSED_LOG: limits::LogLimiter = limits::LogLimiter::new(10_000);

/// Serves an accepted connection if `max.connections` and
/// `max.connections.per.ip` leave room, else closes it at once. Over
/// `max.connections` Kafka stops accepting until a slot frees; we accept and
/// close, so the client fails fast and retries instead of waiting in the
/// kernel's backlog (docs/limits.md).
async fn admit_connection(stream: glommio::net::TcpStream, cfg: &BrokerConfig) {
    let ip = match stream.peer_addr() {
        Ok(a) => a.ip(),
        Err(_) => std::net::Ipv4Addr::UNSPECIFIED.into(),
    };
    match limits::open_connection(ip, &cfg.limits) {
        Ok(slot) => runtime::spawn(connection::serve(stream, slot)),
        Err(why) => {
            if let Some(suppressed) = REFUSED_LOG.allow(now_ms()) {
                tracing::warn!(peer = %ip, reason = %why, refused_since_last_line = suppressed,
                    "refusing connection");
            }
            let _ = stream.shutdown(std::net::Shutdown::Both).await;
        }
    }
}

/// glommio binds with SO_REUSEPORT, so a second broker on the same port would
/// bind silently and steal connections; we refuse to start if something
/// answers there. A plain bind cannot tell: the TIME_WAIT sockets of a previous
/// run carry SO_REUSEPORT only. Also, after a kill -9 the kernel tears the dead
/// process's io_uring rings down asynchronously, and its listening socket keeps
/// accepting (but never answering) for a moment; binding then would let the
/// dead socket take part of the connections. So: connect; if a Kafka
/// ApiVersions request gets an answer, refuse; if it accepts but stays silent,
/// wait (bounded) until it disappears.
fn refuse_if_port_taken(listen: &str) -> anyhow::Result<()> {
    use std::io::{Read, Write};
    const WAIT_FOR_STALE_LISTENER: std::time::Duration = std::time::Duration::from_secs(15);
    let mut addr: std::net::SocketAddr = listen
        .parse()
        .with_context(|| format!("bad listen address {listen}"))?;
    if addr.ip().is_unspecified() {
        addr.set_ip(std::net::Ipv4Addr::LOCALHOST.into());
    }
    let deadline = std::time::Instant::now() + WAIT_FOR_STALE_LISTENER;
    let mut logged = false;
    loop {
        let Ok(mut s) =
            std::net::TcpStream::connect_timeout(&addr, std::time::Duration::from_millis(300))
        else {
            return Ok(());
        };
        // ApiVersions v0: api key 18, version 0, correlation id 1, null client id.
        let probe = [0u8, 0, 0, 10, 0, 18, 0, 0, 0, 0, 0, 1, 0xff, 0xff];
        let _ = s.set_read_timeout(Some(std::time::Duration::from_millis(500)));
        let answered =
            s.write_all(&probe).is_ok() && matches!(s.read(&mut [0u8; 4]), Ok(n) if n > 0);
        if answered {
            anyhow::bail!("cannot listen on {listen}: a Kafka broker is already serving there");
        }
        if std::time::Instant::now() >= deadline {
            anyhow::bail!("cannot listen on {listen}: something accepts connections there but does not answer");
        }
        if !logged {
            tracing::info!(
                listen,
                "waiting for a previous process's listening socket to go away"
            );
            logged = true;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
}

/// Partition directories that the metadata does not know (a crash between a
/// topic deletion's metadata write and its directory removal) are renamed
/// aside, never reused, so a new topic of the same name starts empty.
fn quarantine_strays(cfg: &BrokerConfig, img: &cluster::MetadataImage) {
    let node = cfg.node_id;
    for dir in &cfg.log_dirs {
        let Ok(entries) = std::fs::read_dir(dir) else {
            continue;
        };
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().to_string();
            if !e.path().is_dir()
                || name.ends_with("-stray")
                || name == cluster::lifecycle::METADATA_LOG_DIR
            {
                continue;
            }
            let Some((topic, part)) = name.rsplit_once('-') else {
                continue;
            };
            let Ok(index) = part.parse::<i32>() else {
                continue;
            };
            let hosted = img
                .partition(topic, index)
                .is_some_and(|(_, p)| p.replicas.contains(&node));
            if !hosted {
                let to = dir.join(format!("{name}.{}-stray", now_ms()));
                tracing::warn!(dir = %e.path().display(), to = %to.display(), "partition not in metadata; moving aside");
                if let Err(err) = std::fs::rename(e.path(), &to) {
                    tracing::error!(error = %err, "moving stray partition failed");
                }
            }
        }
    }
}
