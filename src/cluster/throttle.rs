//! Replication throttles: Kafka's replication quotas (KIP-73), which bound the bandwidth a
//! reassignment's catching-up replicas take from clients.
//!
//! - Which replicas: the topic settings `leader.replication.throttled.replicas` (read by the
//!   leader) and `follower.replication.throttled.replicas` (read by the follower), lists of
//!   `partition:broker` or `*`. A broker throttles a partition when the list names the
//!   partition with its own id, and only while the follower is outside the ISR: an in-sync
//!   replica is never slowed down, as in Kafka.
//! - How fast: the broker settings `leader.replication.throttled.rate` and
//!   `follower.replication.throttled.rate` (bytes per second; unlimited by default), set
//!   statically or, as Kafka operators do, as dynamic broker configs (AlterConfigs on a
//!   BROKER resource, kept in the metadata log: per broker id, or the cluster default).
//! - Measured as Kafka does: a rate over `replication.quota.window.num` windows of
//!   `replication.quota.window.size.seconds`; while the measured rate is above the bound the
//!   leader answers a throttled partition with no records and the follower leaves it out of
//!   its fetches. Each shard meters its own traffic against its share of the rate (rate /
//!   shards), so nothing is shared between shards on the data path.

use std::cell::RefCell;

use super::MetadataImage;
use crate::config::BrokerConfig;

/// A rate no traffic reaches (Kafka's default, `Long.MAX_VALUE`).
pub const UNLIMITED: u64 = i64::MAX as u64;

pub const LEADER_REPLICAS: &str = "leader.replication.throttled.replicas";
pub const FOLLOWER_REPLICAS: &str = "follower.replication.throttled.replicas";
pub const LEADER_RATE: &str = "leader.replication.throttled.rate";
pub const FOLLOWER_RATE: &str = "follower.replication.throttled.rate";

/// Broker settings that can be changed at run time through AlterConfigs on a BROKER
/// resource (Kafka's dynamic broker configs, the subset Sluice applies without a restart).
pub const DYNAMIC_BROKER_CONFIGS: &[&str] = &[LEADER_RATE, FOLLOWER_RATE];

/// Whether a throttled-replicas list names replica `broker` of `partition`.
pub fn names(list: &str, partition: i32, broker: i32) -> bool {
    let list = list.trim();
    if list == "*" {
        return true;
    }
    list.split(',').any(|e| {
        e.trim().split_once(':').is_some_and(|(p, b)| {
            p.trim().parse() == Ok(partition) && b.trim().parse() == Ok(broker)
        })
    })
}

/// Checks a throttle rate: a non-negative number of bytes per second.
pub fn validate_rate(name: &str, value: &str) -> Result<(), String> {
    match value.trim().parse::<i64>() {
        Ok(n) if n >= 0 => Ok(()),
        _ => Err(format!(
            "Invalid value {value} for configuration {name}: must be a number of bytes per second >= 0"
        )),
    }
}

/// The rate `key` in effect on broker `node`: its dynamic value, else the cluster-wide
/// dynamic default, else the static setting.
pub fn rate(img: &MetadataImage, cfg: &BrokerConfig, key: &str) -> u64 {
    let dynamic = |scope: &str| img.broker_configs.get(scope).and_then(|m| m.get(key));
    let value = dynamic(&cfg.node_id.to_string()).or_else(|| dynamic(""));
    if let Some(n) = value.and_then(|v| v.trim().parse::<i64>().ok()) {
        return u64::try_from(n).unwrap_or(0);
    }
    let r = &cfg.cluster.replication;
    if key == LEADER_RATE {
        r.leader_throttled_rate
    } else {
        r.follower_throttled_rate
    }
}

/// A token bucket of bytes: it fills at `bound` bytes per second up to a burst of
/// `replication.quota.window.num - 1` windows of `replication.quota.window.size.seconds`
/// (the burst Kafka's windowed rate lets through after a quiet spell), and every byte
/// passed takes a token. Traffic waits while the bucket is empty; a read sized by the
/// tokens left overshoots by at most one batch, which the next refill repays.
#[derive(Debug, Clone)]
pub struct RateMeter {
    burst_ms: u64,
    /// Tokens (bytes) left; negative after an overshoot. None until first used.
    tokens: Option<f64>,
    last_ms: u64,
    bound: u64,
}

impl RateMeter {
    pub fn new(num: usize, window_ms: u64) -> RateMeter {
        RateMeter {
            burst_ms: window_ms
                .max(1)
                .saturating_mul((num as u64).saturating_sub(1).max(1)),
            tokens: None,
            last_ms: 0,
            bound: 0,
        }
    }

    /// Refills for the time since the last call, at `bound` bytes per second.
    fn refill(&mut self, now_ms: u64, bound: u64) -> f64 {
        let cap = bound as f64 * self.burst_ms as f64 / 1000.0;
        let t = match self.tokens {
            // A changed bound starts a full bucket, as a fresh quota would.
            Some(t) if self.bound == bound => {
                let dt = now_ms.saturating_sub(self.last_ms) as f64;
                (t + bound as f64 * dt / 1000.0).min(cap)
            }
            _ => cap,
        };
        self.tokens = Some(t);
        self.last_ms = now_ms;
        self.bound = bound;
        t
    }

    /// Counts `bytes` passed now under `bound`.
    pub fn record(&mut self, now_ms: u64, bound: u64, bytes: u64) {
        if bound == UNLIMITED {
            return;
        }
        let t = self.refill(now_ms, bound);
        self.tokens = Some(t - bytes as f64);
    }

    /// Bytes that may pass now under `bound` (0 while the bucket is empty or owes an
    /// overshoot; `u64::MAX` when unlimited).
    pub fn allowance(&mut self, now_ms: u64, bound: u64) -> u64 {
        if bound == UNLIMITED {
            return u64::MAX;
        }
        let t = self.refill(now_ms, bound);
        if t < 1.0 {
            0
        } else {
            t as u64
        }
    }
}

thread_local! {
    /// This shard's (leader, follower) meters, made on first use.
    static METERS: RefCell<Option<(RateMeter, RateMeter)>> = const { RefCell::new(None) };
}

fn with_meter<T>(cfg: &BrokerConfig, leader: bool, f: impl FnOnce(&mut RateMeter) -> T) -> T {
    METERS.with(|m| {
        let mut m = m.borrow_mut();
        let r = &cfg.cluster.replication;
        let (l, fo) = m.get_or_insert_with(|| {
            let meter = RateMeter::new(r.quota_window_num, r.quota_window_ms);
            (meter.clone(), meter)
        });
        f(if leader { l } else { fo })
    })
}

/// This shard's share of a broker-wide rate.
fn shard_share(rate: u64) -> u64 {
    if rate == UNLIMITED {
        return UNLIMITED;
    }
    rate / crate::runtime::nr_shards().max(1) as u64
}

/// Bytes this shard's throttled traffic as `leader` (or follower) may take now within its
/// share of `rate` (0: over it; `u64::MAX` when unlimited).
pub fn allowance(cfg: &BrokerConfig, leader: bool, rate: u64, now_ms: i64) -> u64 {
    if rate == UNLIMITED {
        return u64::MAX;
    }
    let now = u64::try_from(now_ms).unwrap_or(0);
    with_meter(cfg, leader, |m| m.allowance(now, shard_share(rate)))
}

/// Counts bytes of throttled replication traffic on this shard, under `rate`.
pub fn record(cfg: &BrokerConfig, leader: bool, rate: u64, bytes: u64, now_ms: i64) {
    if bytes > 0 && rate != UNLIMITED {
        let now = u64::try_from(now_ms).unwrap_or(0);
        with_meter(cfg, leader, |m| m.record(now, shard_share(rate), bytes));
    }
}

/// Whether the topic's throttled-replicas list `key` names (`partition`, `broker`).
pub fn listed(img: &MetadataImage, topic: &str, key: &str, partition: i32, broker: i32) -> bool {
    img.topic(topic)
        .and_then(|t| t.configs.get(key))
        .is_some_and(|list| names(list, partition, broker))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lists_name_replicas() {
        assert!(names("*", 3, 7));
        assert!(names("0:1, 1:2,2:3", 1, 2));
        assert!(!names("0:1,1:2", 1, 1));
        assert!(!names("", 0, 0));
        assert!(!names("junk", 0, 0));
        use crate::config::validate_throttled_replicas as validate_list;
        assert!(validate_list("x", "").is_ok());
        assert!(validate_list("x", "*").is_ok());
        assert!(validate_list("x", "0:1,12:3").is_ok());
        assert!(validate_list("x", "0:1,a:3").is_err());
        assert!(validate_list("x", "0-1").is_err());
        assert!(validate_list("x", "-1:2").is_err());
        assert!(validate_rate("r", "1024").is_ok());
        assert!(validate_rate("r", "-5").is_err());
        assert!(validate_rate("r", "fast").is_err());
    }

    #[test]
    fn rate_is_the_brokers_dynamic_value_then_the_cluster_default_then_static() {
        use crate::config::StartArgs;
        let args = StartArgs {
            set: vec![
                "node.id=2".into(),
                "leader.replication.throttled.rate=5000".into(),
            ],
            ..Default::default()
        };
        let cfg = BrokerConfig::load_from(&args, &[]).unwrap();
        let mut img = MetadataImage::default();
        assert_eq!(rate(&img, &cfg, LEADER_RATE), 5000);
        assert_eq!(rate(&img, &cfg, FOLLOWER_RATE), UNLIMITED);
        let set = |k: &str, v: &str| [(k.to_string(), v.to_string())].into_iter().collect();
        img.broker_configs
            .insert("".into(), set(LEADER_RATE, "700"));
        assert_eq!(rate(&img, &cfg, LEADER_RATE), 700);
        img.broker_configs.insert("3".into(), set(LEADER_RATE, "9"));
        assert_eq!(rate(&img, &cfg, LEADER_RATE), 700, "another broker's value");
        img.broker_configs
            .insert("2".into(), set(LEADER_RATE, "80"));
        assert_eq!(rate(&img, &cfg, LEADER_RATE), 80);
        assert_eq!(rate(&img, &cfg, FOLLOWER_RATE), UNLIMITED);
    }

    #[test]
    fn bucket_passes_the_rate_after_one_burst() {
        // 1000 B/s, a burst of 10 windows of 1 s.
        let mut m = RateMeter::new(11, 1000);
        assert_eq!(m.allowance(0, 1000), 10_000);
        assert_eq!(m.allowance(0, UNLIMITED), u64::MAX);
        m.record(0, 1000, 4000);
        assert_eq!(m.allowance(0, 1000), 6000);
        // An overshoot (a whole batch past the allowance) is repaid before more passes.
        m.record(100, 1000, 7000);
        assert_eq!(m.allowance(200, 1000), 0);
        assert_eq!(m.allowance(1000, 1000), 0);
        assert_eq!(m.allowance(1500, 1000), 500);
        // Long quiet: back to the burst, not more.
        assert_eq!(m.allowance(100_000, 1000), 10_000);
        // Steady traffic taking all it may averages the bound.
        let mut m = RateMeter::new(2, 1000);
        let mut passed = 0u64;
        for step in 0..=200u64 {
            let now = step * 50;
            let a = m.allowance(now, 4096).min(16_384);
            m.record(now, 4096, a);
            passed += a;
        }
        // 10 s at 4096 B/s plus the one-second burst.
        assert!((45_000..=46_000).contains(&passed), "{passed}");
    }
}
