//! Cluster settings, with Kafka's KRaft names: `node.id`, `process.roles`,
//! `listeners` (named, `NAME://host:port`), `controller.listener.names`,
//! `controller.quorum.voters`, `broker.rack`, heartbeat and session timeouts.
//!
//! With none of them set, a broker is what it always was: node 0, both roles,
//! a one-voter quorum of itself with no controller listener.

use std::collections::BTreeMap;

use anyhow::{bail, Context};

/// One entry of `listeners` / `advertised.listeners`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listener {
    /// Listener name (`PLAINTEXT` when the entry has no `NAME://`).
    pub name: String,
    /// `host:port`.
    pub addr: String,
}

/// Parses `NAME://host:port,...` (a bare `host:port` is `PLAINTEXT`).
pub fn parse_listeners(key: &str, s: &str) -> anyhow::Result<Vec<Listener>> {
    let mut out: Vec<Listener> = Vec::new();
    for entry in s.split(',').map(str::trim).filter(|e| !e.is_empty()) {
        let (name, addr) = match entry.split_once("://") {
            Some((n, a)) => (n.trim().to_ascii_uppercase(), a.trim().to_string()),
            None => ("PLAINTEXT".to_string(), entry.to_string()),
        };
        if name.is_empty() || addr.rsplit_once(':').is_none() {
            bail!("{key}: {entry:?} is not NAME://host:port");
        }
        if out.iter().any(|l| l.name == name) {
            bail!("{key}: listener name {name} appears twice");
        }
        out.push(Listener { name, addr });
    }
    Ok(out)
}

/// Which roles this process runs (`process.roles`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Roles {
    pub broker: bool,
    pub controller: bool,
}

/// The settings that make a node part of a cluster.
#[derive(Debug, Clone)]
pub struct ClusterSettings {
    pub node_id: i32,
    pub roles: Roles,
    /// `controller.quorum.voters`: id -> host:port. Empty: a one-voter quorum of this node
    /// with no network (the single-node default).
    pub voters: BTreeMap<i32, String>,
    /// The address the quorum listener binds (the CONTROLLER listener), if any.
    pub controller_listen: Option<String>,
    pub rack: Option<String>,
    pub heartbeat_interval_ms: u64,
    pub session_timeout_ms: u64,
    pub election_timeout_ms: u64,
    pub replication: ReplicationSettings,
    /// `auto.leader.rebalance.enable`.
    pub auto_leader_rebalance: bool,
    /// `leader.imbalance.check.interval.seconds`, in ms.
    pub leader_imbalance_check_interval_ms: u64,
    /// `leader.imbalance.per.broker.percentage`.
    pub leader_imbalance_per_broker_pct: u64,
}

/// How followers fetch from leaders and when a leader drops them from the ISR (Kafka's
/// `replica.*` settings, same names and defaults).
#[derive(Debug, Clone)]
pub struct ReplicationSettings {
    /// `replica.lag.time.max.ms`: an ISR member not caught up for this long is dropped.
    pub lag_time_max_ms: u64,
    /// `replica.fetch.max.bytes`: per partition in one follower fetch (at least one batch).
    pub fetch_max_bytes: u64,
    /// `replica.fetch.response.max.bytes`: per follower fetch response.
    pub fetch_response_max_bytes: u64,
    /// `replica.fetch.wait.max.ms`: how long a follower fetch long-polls at the leader.
    pub fetch_wait_max_ms: u64,
    /// `replica.fetch.min.bytes`.
    pub fetch_min_bytes: u64,
    /// `replica.fetch.backoff.ms`: pause after a failed follower fetch.
    pub fetch_backoff_ms: u64,
    /// `num.replica.fetchers`: accepted for compatibility; Sluice runs one fetcher per
    /// (leader broker, shard), which is what this number tunes in Kafka.
    pub num_fetchers: u64,
    /// `leader.replication.throttled.rate` (static; a dynamic broker config overrides it).
    pub leader_throttled_rate: u64,
    /// `follower.replication.throttled.rate` (static; a dynamic broker config overrides it).
    pub follower_throttled_rate: u64,
    /// `replication.quota.window.num`.
    pub quota_window_num: usize,
    /// `replication.quota.window.size.seconds`, in ms.
    pub quota_window_ms: u64,
}

impl ClusterSettings {
    /// True when this node runs alone: no voters configured.
    pub fn single_node(&self) -> bool {
        self.voters.is_empty()
    }
}

/// Parses `id@host:port,...`.
pub fn parse_voters(s: &str) -> anyhow::Result<BTreeMap<i32, String>> {
    let mut out = BTreeMap::new();
    for entry in s.split(',').map(str::trim).filter(|e| !e.is_empty()) {
        let (id, addr) = entry
            .split_once('@')
            .with_context(|| format!("controller.quorum.voters: {entry:?} is not id@host:port"))?;
        let id: i32 = id
            .trim()
            .parse()
            .ok()
            .filter(|i| *i >= 0)
            .with_context(|| format!("controller.quorum.voters: bad node id in {entry:?}"))?;
        if addr.rsplit_once(':').is_none() {
            bail!("controller.quorum.voters: {entry:?} is not id@host:port");
        }
        if out.insert(id, addr.trim().to_string()).is_some() {
            bail!("controller.quorum.voters: node {id} appears twice");
        }
    }
    Ok(out)
}

/// Reads and cross-checks the cluster settings. `listeners` are already parsed; returns the
/// settings and the client (non-controller) listener's address.
pub fn from_values(
    values: &BTreeMap<String, String>,
    listeners: &[Listener],
) -> anyhow::Result<(ClusterSettings, Listener)> {
    let get = |k: &str| {
        values
            .get(k)
            .map(|v| v.trim().to_string())
            .unwrap_or_default()
    };
    let num = |k: &str| -> anyhow::Result<u64> {
        get(k)
            .parse::<u64>()
            .ok()
            .filter(|n| *n > 0)
            .with_context(|| format!("{k} must be a positive number"))
    };
    let node_id: i32 = get("node.id")
        .parse()
        .ok()
        .filter(|n| *n >= 0)
        .with_context(|| {
            format!(
                "node.id must be a non-negative integer, got {:?}",
                get("node.id")
            )
        })?;
    let mut roles = Roles {
        broker: false,
        controller: false,
    };
    for r in get("process.roles").split(',').map(str::trim) {
        match r {
            "broker" => roles.broker = true,
            "controller" => roles.controller = true,
            "" => {}
            other => bail!("process.roles: unknown role {other:?} (broker, controller)"),
        }
    }
    if !roles.broker && !roles.controller {
        bail!("process.roles must name broker, controller or both");
    }
    let voters = parse_voters(&get("controller.quorum.voters"))?;
    let controller_names: Vec<String> = get("controller.listener.names")
        .split(',')
        .map(|n| n.trim().to_ascii_uppercase())
        .filter(|n| !n.is_empty())
        .collect();
    let controller_listen = listeners
        .iter()
        .find(|l| controller_names.contains(&l.name))
        .map(|l| l.addr.clone());
    let client = listeners
        .iter()
        .find(|l| !controller_names.contains(&l.name))
        .cloned();
    let rack = Some(get("broker.rack")).filter(|r| !r.is_empty());
    let settings = ClusterSettings {
        node_id,
        roles,
        voters,
        controller_listen,
        rack,
        heartbeat_interval_ms: num("broker.heartbeat.interval.ms")?,
        session_timeout_ms: num("broker.session.timeout.ms")?,
        election_timeout_ms: num("controller.quorum.election.timeout.ms")?,
        replication: ReplicationSettings {
            lag_time_max_ms: num("replica.lag.time.max.ms")?,
            fetch_max_bytes: num("replica.fetch.max.bytes")?,
            fetch_response_max_bytes: num("replica.fetch.response.max.bytes")?,
            fetch_wait_max_ms: num("replica.fetch.wait.max.ms")?,
            fetch_min_bytes: num("replica.fetch.min.bytes")?,
            fetch_backoff_ms: num("replica.fetch.backoff.ms")?,
            num_fetchers: num("num.replica.fetchers")?,
            leader_throttled_rate: num("leader.replication.throttled.rate")?,
            follower_throttled_rate: num("follower.replication.throttled.rate")?,
            quota_window_num: usize::try_from(num("replication.quota.window.num")?.max(1))
                .unwrap_or(11),
            quota_window_ms: num("replication.quota.window.size.seconds")?
                .max(1)
                .saturating_mul(1000),
        },
        auto_leader_rebalance: match get("auto.leader.rebalance.enable").as_str() {
            "true" | "" => true,
            "false" => false,
            other => bail!("auto.leader.rebalance.enable must be true or false, got {other:?}"),
        },
        leader_imbalance_check_interval_ms: match get("leader.imbalance.check.interval.seconds")
            .as_str()
        {
            "" => 300_000,
            _ => num("leader.imbalance.check.interval.seconds")?.saturating_mul(1000),
        },
        leader_imbalance_per_broker_pct: match get("leader.imbalance.per.broker.percentage")
            .as_str()
        {
            "" => 10,
            v => v
                .parse::<u64>()
                .ok()
                .filter(|p| *p <= 100)
                .with_context(|| {
                    format!("leader.imbalance.per.broker.percentage must be 0..=100, got {v:?}")
                })?,
        },
    };
    if settings.session_timeout_ms <= settings.heartbeat_interval_ms {
        bail!("broker.session.timeout.ms must be longer than broker.heartbeat.interval.ms");
    }
    let in_voters = settings.voters.contains_key(&node_id);
    if settings.voters.is_empty() {
        if !(roles.broker && roles.controller) {
            bail!("process.roles={} needs controller.quorum.voters (id@host:port,...): without voters a node runs alone, with both roles", get("process.roles"));
        }
    } else {
        if roles.controller && !in_voters {
            bail!("node.id {node_id} runs the controller role but is not in controller.quorum.voters {}", get("controller.quorum.voters"));
        }
        if !roles.controller && in_voters {
            bail!("node.id {node_id} is in controller.quorum.voters but process.roles={} has no controller role", get("process.roles"));
        }
        if settings.controller_listen.is_none() {
            bail!(
                "with controller.quorum.voters set, listeners needs a {} listener (NAME://host:port named in controller.listener.names); a broker-only node needs one too: it receives the metadata log there",
                controller_names.first().map(String::as_str).unwrap_or("CONTROLLER")
            );
        }
    }
    let client = match (client, roles.broker) {
        (Some(c), _) => c,
        (None, false) => Listener {
            name: String::new(),
            addr: String::new(),
        },
        (None, true) => bail!("listeners has no listener for clients (every listener is named in controller.listener.names)"),
    };
    Ok((settings, client))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn values(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        let mut v: BTreeMap<String, String> = [
            ("node.id", "0"),
            ("process.roles", "broker,controller"),
            ("controller.quorum.voters", ""),
            ("controller.listener.names", "CONTROLLER"),
            ("broker.rack", ""),
            ("broker.heartbeat.interval.ms", "2000"),
            ("broker.session.timeout.ms", "9000"),
            ("controller.quorum.election.timeout.ms", "1000"),
            ("replica.lag.time.max.ms", "30000"),
            ("replica.fetch.max.bytes", "1048576"),
            ("replica.fetch.response.max.bytes", "10485760"),
            ("replica.fetch.wait.max.ms", "500"),
            ("replica.fetch.min.bytes", "1"),
            ("replica.fetch.backoff.ms", "1000"),
            ("num.replica.fetchers", "1"),
            ("leader.replication.throttled.rate", "9223372036854775807"),
            ("follower.replication.throttled.rate", "9223372036854775807"),
            ("replication.quota.window.num", "11"),
            ("replication.quota.window.size.seconds", "1"),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        for (k, val) in pairs {
            v.insert(k.to_string(), val.to_string());
        }
        v
    }

    #[test]
    fn listeners_and_voters_parse() {
        let l = parse_listeners(
            "listeners",
            "PLAINTEXT://127.0.0.1:9092, controller://127.0.0.1:9093",
        )
        .unwrap();
        assert_eq!(l[1].name, "CONTROLLER");
        assert_eq!(
            parse_listeners("listeners", "127.0.0.1:1").unwrap()[0].name,
            "PLAINTEXT"
        );
        assert!(parse_listeners("listeners", "A://x:1,A://y:2").is_err());
        let v = parse_voters("1@127.0.0.1:9093,2@h:9193").unwrap();
        assert_eq!(v[&2], "h:9193");
        assert!(parse_voters("x@h:1").is_err());
        assert!(parse_voters("1@h").is_err());
        assert!(parse_voters("1@h:1,1@h:2").is_err());
    }

    #[test]
    fn defaults_are_a_single_node() {
        let l = parse_listeners("listeners", "127.0.0.1:9092").unwrap();
        let (s, client) = from_values(&values(&[]), &l).unwrap();
        assert!(s.single_node());
        assert_eq!(client.addr, "127.0.0.1:9092");
        assert!(s.controller_listen.is_none());
    }

    #[test]
    fn cluster_settings_are_cross_checked() {
        let l = parse_listeners(
            "listeners",
            "PLAINTEXT://127.0.0.1:9092,CONTROLLER://127.0.0.1:9093",
        )
        .unwrap();
        let voters = (
            "controller.quorum.voters",
            "1@127.0.0.1:9093,2@127.0.0.1:9193",
        );
        let (s, client) = from_values(&values(&[("node.id", "1"), voters]), &l).unwrap();
        assert_eq!(s.controller_listen.as_deref(), Some("127.0.0.1:9093"));
        assert_eq!(client.name, "PLAINTEXT");
        let err = |pairs: &[(&str, &str)]| from_values(&values(pairs), &l).unwrap_err().to_string();
        assert!(err(&[("node.id", "3"), voters]).contains("not in controller.quorum.voters"));
        assert!(
            err(&[("node.id", "1"), ("process.roles", "broker"), voters])
                .contains("no controller role")
        );
        assert!(err(&[("process.roles", "controller")]).contains("needs controller.quorum.voters"));
        assert!(err(&[("process.roles", "router")]).contains("unknown role"));
        let plain = parse_listeners("listeners", "127.0.0.1:9092").unwrap();
        let e = from_values(&values(&[("node.id", "1"), voters]), &plain).unwrap_err();
        assert!(e.to_string().contains("CONTROLLER listener"), "{e}");
        let (s, _) = from_values(
            &values(&[("node.id", "4"), ("process.roles", "broker"), voters]),
            &l,
        )
        .unwrap();
        assert!(s.roles.broker && !s.roles.controller);
    }
}
