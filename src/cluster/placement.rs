//! Replica placement, as Kafka places replicas: partition `i`'s replica `j` on
//! broker `(start + i + j) mod n` of the brokers in id order, from a random
//! `start`, so the preferred leaders (replica 0) spread evenly and the replicas
//! of one partition are on distinct brokers. When every broker has a
//! `broker.rack`, the list is first interleaved by rack (one broker of each
//! rack in turn, as Kafka's rack-alternated list), so consecutive brokers, and
//! so a partition's replicas, sit in different racks while there are racks
//! enough. Pure: the caller passes the brokers and the start.

use kafka_protocol::error::ResponseError;

use super::records::Refusal;
use super::BrokerMeta;

/// The order placement walks the brokers in: by id, or rack-alternated when every broker
/// has a rack.
pub fn broker_order(brokers: &[&BrokerMeta]) -> Vec<i32> {
    let mut sorted: Vec<&BrokerMeta> = brokers.to_vec();
    sorted.sort_by_key(|b| b.id);
    if sorted.is_empty() || sorted.iter().any(|b| b.rack.is_none()) {
        return sorted.iter().map(|b| b.id).collect();
    }
    let mut racks: std::collections::BTreeMap<&str, Vec<i32>> = Default::default();
    for b in &sorted {
        racks
            .entry(b.rack.as_deref().unwrap_or_default())
            .or_default()
            .push(b.id);
    }
    let mut out = Vec::with_capacity(sorted.len());
    for round in 0.. {
        let before = out.len();
        out.extend(racks.values().filter_map(|ids| ids.get(round)));
        if out.len() == before {
            break;
        }
    }
    out
}

/// Replica lists for partitions `first..first + count` over `order` (see [`broker_order`]).
/// Refuses a replication factor above the broker count with INVALID_REPLICATION_FACTOR.
pub fn place(
    order: &[i32],
    first: i32,
    count: i32,
    replication_factor: i16,
    start: usize,
) -> Result<Vec<Vec<i32>>, Refusal> {
    let n = order.len();
    let rf = usize::try_from(replication_factor).unwrap_or(0);
    if rf == 0 {
        return Err(Refusal::new(
            ResponseError::InvalidReplicationFactor,
            "Replication factor must be larger than 0.",
        ));
    }
    if rf > n {
        return Err(Refusal::new(
            ResponseError::InvalidReplicationFactor,
            format!(
                "Unable to replicate the partition {rf} time(s): The target replication factor of {rf} cannot be reached because only {n} broker(s) are registered."
            ),
        ));
    }
    Ok((first..first.saturating_add(count))
        .map(|i| {
            (0..rf)
                .map(|j| order[(start + i as usize + j) % n])
                .collect()
        })
        .collect())
}

/// A decommission plan: for every partition with a replica on `gone`, its new replica list,
/// with `gone` replaced (in place, so the preferred order is kept) by the broker among
/// `brokers` (not `gone`, not already a replica) holding the fewest replicas so far, ties
/// to the lowest id. `partitions`: (topic, partition, replicas). Refused when some partition
/// has no broker left to move to.
pub fn plan_decommission(
    partitions: &[(String, i32, Vec<i32>)],
    brokers: &[i32],
    gone: i32,
) -> Result<Vec<(String, i32, Vec<i32>)>, String> {
    let mut load: std::collections::BTreeMap<i32, usize> = brokers
        .iter()
        .filter(|b| **b != gone)
        .map(|b| (*b, 0))
        .collect();
    for (_, _, rs) in partitions {
        for r in rs {
            if let Some(n) = load.get_mut(r) {
                *n += 1;
            }
        }
    }
    let mut plan = Vec::new();
    for (topic, index, rs) in partitions.iter().filter(|(_, _, rs)| rs.contains(&gone)) {
        let to = load
            .iter()
            .filter(|(b, _)| !rs.contains(b))
            .min_by_key(|(b, n)| (**n, **b))
            .map(|(b, _)| *b)
            .ok_or_else(|| {
                format!("{topic}-{index} (replicas {rs:?}) has no broker left to move to: add a broker first")
            })?;
        *load.entry(to).or_default() += 1;
        let new = rs
            .iter()
            .map(|r| if *r == gone { to } else { *r })
            .collect();
        plan.push((topic.clone(), *index, new));
    }
    Ok(plan)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b(id: i32, rack: Option<&str>) -> BrokerMeta {
        BrokerMeta {
            id,
            incarnation: uuid::Uuid::nil(),
            host: String::new(),
            port: 0,
            rack: rack.map(str::to_string),
            fenced: false,
            leaving: false,
        }
    }

    #[test]
    fn round_robin_from_start_spreads_leaders() {
        let order = [1, 2, 3];
        let p = place(&order, 0, 6, 3, 1).unwrap();
        assert_eq!(p[0], vec![2, 3, 1]);
        assert_eq!(p[1], vec![3, 1, 2]);
        assert_eq!(p[2], vec![1, 2, 3]);
        for r in &p {
            let mut d = r.clone();
            d.sort();
            d.dedup();
            assert_eq!(d.len(), 3, "replicas must be distinct: {r:?}");
        }
        let mut leaders = [0; 4];
        for r in &p {
            leaders[r[0] as usize] += 1;
        }
        assert_eq!(&leaders[1..], &[2, 2, 2]);
    }

    #[test]
    fn too_many_replicas_is_refused() {
        let e = place(&[1, 2], 0, 1, 3, 0).unwrap_err();
        assert_eq!(e.code, ResponseError::InvalidReplicationFactor.code());
        assert!(e.message.contains("only 2 broker(s)"));
        assert!(place(&[1], 0, 1, 0, 0).is_err());
    }

    #[test]
    fn racks_alternate() {
        let bs = [
            b(1, Some("a")),
            b(2, Some("a")),
            b(3, Some("b")),
            b(4, Some("b")),
        ];
        let refs: Vec<&BrokerMeta> = bs.iter().collect();
        let order = broker_order(&refs);
        assert_eq!(order, vec![1, 3, 2, 4]);
        let rack = |id: i32| bs.iter().find(|x| x.id == id).unwrap().rack.clone();
        for r in place(&order, 0, 8, 2, 3).unwrap() {
            assert_ne!(rack(r[0]), rack(r[1]), "{r:?} in one rack");
        }
        let mixed = [b(2, Some("a")), b(1, None)];
        let refs: Vec<&BrokerMeta> = mixed.iter().collect();
        assert_eq!(broker_order(&refs), vec![1, 2]);
    }

    #[test]
    fn decommission_spreads_the_leaving_broker_replicas_over_the_least_loaded() {
        let parts = vec![
            ("a".to_string(), 0, vec![1, 2, 3]),
            ("a".to_string(), 1, vec![2, 3, 1]),
            ("a".to_string(), 2, vec![3, 4, 2]),
        ];
        let plan = plan_decommission(&parts, &[1, 2, 3, 4], 1).unwrap();
        // Broker 4 holds one replica, 2 and 3 three each: both of 1's go to 4 (then 4 has
        // three, still not more than the others), keeping their place in the list.
        assert_eq!(
            plan,
            vec![
                ("a".to_string(), 0, vec![4, 2, 3]),
                ("a".to_string(), 1, vec![2, 3, 4])
            ]
        );
        let err = plan_decommission(&parts, &[1, 2, 3], 1).unwrap_err();
        assert!(err.contains("a-0"), "{err}");
        assert!(plan_decommission(&parts, &[1, 2, 3, 4], 9)
            .unwrap()
            .is_empty());
    }
}
