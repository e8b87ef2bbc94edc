//! Leader elections asked for by an operator (ElectLeaders) or by the controller's
//! leadership balance check (`auto.leader.rebalance.enable`), as Kafka's controller makes
//! them. Pure: each decision is a `ChangePartition` record made against the image, its
//! partition epoch the compare-and-set token, so an election that raced another change is
//! refused at apply time and can be made again on the newer image.
//!
//! - Preferred: the first listed replica leads again, if it is live and in the ISR.
//! - Unclean: a partition with no live leader gets one from its live ISR members if any,
//!   else from any live replica (the records it lacks are lost; the ISR becomes that
//!   replica alone).

use std::collections::BTreeMap;

use kafka_protocol::error::ResponseError;

use super::records::{MetadataRecord, Refusal};
use super::{MetadataImage, PartitionMeta, TopicMeta, NO_LEADER};

/// Kafka's election types (ElectLeaders' `election_type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ElectionType {
    Preferred,
    Unclean,
}

impl ElectionType {
    pub fn from_code(code: i8) -> Option<ElectionType> {
        match code {
            0 => Some(ElectionType::Preferred),
            1 => Some(ElectionType::Unclean),
            _ => None,
        }
    }
}

/// The record that gives partition `p` of `t` this leader and ISR, decided on its current
/// partition epoch.
pub fn change(t: &TopicMeta, p: &PartitionMeta, leader: i32, isr: Vec<i32>) -> MetadataRecord {
    MetadataRecord::ChangePartition {
        name: t.name.clone(),
        id: t.id,
        partition: p.index,
        partition_epoch: p.partition_epoch,
        leader,
        isr,
    }
}

/// The record that makes the partition's preferred replica its leader, or why not.
pub fn elect_preferred(
    img: &MetadataImage,
    t: &TopicMeta,
    p: &PartitionMeta,
) -> Result<MetadataRecord, Refusal> {
    let name = format!("{}-{}", t.name, p.index);
    let Some(&preferred) = p.replicas.first() else {
        return Err(Refusal::new(
            ResponseError::PreferredLeaderNotAvailable,
            format!("{name} has no replicas"),
        ));
    };
    if p.leader == preferred {
        return Err(Refusal::new(
            ResponseError::ElectionNotNeeded,
            format!("{name} is already led by its preferred replica {preferred}"),
        ));
    }
    if !p.isr.contains(&preferred) || !img.is_live(preferred) {
        return Err(Refusal::new(
            ResponseError::PreferredLeaderNotAvailable,
            format!(
                "the preferred replica {preferred} of {name} is {} (ISR {:?})",
                if img.is_live(preferred) {
                    "not in sync"
                } else {
                    "not live"
                },
                p.isr
            ),
        ));
    }
    Ok(change(t, p, preferred, p.isr.clone()))
}

/// The record that gives a leaderless partition a leader, in sync if one is live, else any
/// live replica (an unclean election: the ISR restarts from it), or why not. `Err` with
/// `ElectionNotNeeded` while a live leader leads.
pub fn elect_unclean(
    img: &MetadataImage,
    t: &TopicMeta,
    p: &PartitionMeta,
) -> Result<MetadataRecord, Refusal> {
    let name = format!("{}-{}", t.name, p.index);
    if p.leader != NO_LEADER && img.is_live(p.leader) {
        return Err(Refusal::new(
            ResponseError::ElectionNotNeeded,
            format!("{name} has a live leader, {}", p.leader),
        ));
    }
    if let Some(l) = p.isr.iter().copied().find(|r| img.is_live(*r)) {
        let isr = p.isr.iter().copied().filter(|r| img.is_live(*r)).collect();
        return Ok(change(t, p, l, isr));
    }
    match p.replicas.iter().copied().find(|r| img.is_live(*r)) {
        Some(l) => {
            tracing::warn!(partition = %name, leader = l, isr = ?p.isr,
                "unclean leader election: an out-of-sync replica leads; records only the old ISR held are lost");
            Ok(change(t, p, l, vec![l]))
        }
        None => Err(Refusal::new(
            ResponseError::EligibleLeadersNotAvailable,
            format!("no replica of {name} is live (replicas {:?})", p.replicas),
        )),
    }
}

/// The controller's leadership balance check (Kafka's `auto.leader.rebalance.enable`): for
/// each broker whose share of preferred partitions led elsewhere exceeds `pct` percent,
/// the elections that move those partitions back to it, where it is live and in sync.
/// Partitions being reassigned are left alone.
pub fn rebalance(img: &MetadataImage, pct: u64) -> Vec<MetadataRecord> {
    let mut counts: BTreeMap<i32, (u64, u64)> = BTreeMap::new();
    for t in img.topics.values() {
        for p in t.partitions.iter().filter(|p| !p.reassigning()) {
            if let Some(&pref) = p.replicas.first() {
                let c = counts.entry(pref).or_default();
                c.0 += 1;
                if p.leader != pref {
                    c.1 += 1;
                }
            }
        }
    }
    let over = |b: i32| {
        counts
            .get(&b)
            .is_some_and(|(total, off)| off * 100 > pct * total)
    };
    let mut out = Vec::new();
    for t in img.topics.values() {
        for p in t.partitions.iter().filter(|p| !p.reassigning()) {
            if p.replicas.first().is_some_and(|b| over(*b)) {
                if let Ok(r) = elect_preferred(img, t, p) {
                    out.push(r);
                }
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::records::{apply, apply_all};

    fn setup() -> MetadataImage {
        let mut img = MetadataImage::default();
        let mut recs: Vec<MetadataRecord> = (1..=3)
            .map(|id| MetadataRecord::RegisterBroker {
                id,
                incarnation: uuid::Uuid::from_u128(id as u128),
                host: "127.0.0.1".into(),
                port: 9092 + id,
                rack: None,
            })
            .collect();
        recs.push(MetadataRecord::CreateTopic {
            name: "t".into(),
            id: uuid::Uuid::from_u128(7),
            replicas: vec![vec![1, 2, 3], vec![2, 3, 1], vec![3, 1, 2]],
            configs: Default::default(),
        });
        apply_all(&mut img, &recs);
        img
    }

    fn fence(img: &mut MetadataImage, id: i32) {
        let incarnation = img.brokers[&id].incarnation;
        apply(img, &MetadataRecord::FenceBroker { id, incarnation }).unwrap();
    }

    fn move_leader(img: &mut MetadataImage, partition: usize, leader: i32, isr: Vec<i32>) {
        let t = img.topic("t").unwrap().clone();
        let p = &t.partitions[partition];
        apply(img, &change(&t, p, leader, isr)).unwrap();
    }

    #[test]
    fn preferred_election_moves_leadership_back_only_when_it_can() {
        let mut img = setup();
        let t = img.topic("t").unwrap().clone();
        let code = |r: Result<MetadataRecord, Refusal>| r.unwrap_err().code;
        assert_eq!(
            code(elect_preferred(&img, &t, &t.partitions[0])),
            ResponseError::ElectionNotNeeded.code()
        );
        move_leader(&mut img, 0, 2, vec![2, 3]);
        let t = img.topic("t").unwrap().clone();
        assert_eq!(
            code(elect_preferred(&img, &t, &t.partitions[0])),
            ResponseError::PreferredLeaderNotAvailable.code(),
            "broker 1 is out of the ISR"
        );
        move_leader(&mut img, 0, 2, vec![2, 3, 1]);
        let t = img.topic("t").unwrap().clone();
        let r = elect_preferred(&img, &t, &t.partitions[0]).unwrap();
        apply(&mut img, &r).unwrap();
        let p = &img.topic("t").unwrap().partitions[0];
        assert_eq!(p.leader, 1);
        assert_eq!(p.leader_epoch, 2);
    }

    #[test]
    fn rebalance_moves_back_only_past_the_imbalance_threshold() {
        let mut img = setup();
        assert!(rebalance(&img, 10).is_empty());
        move_leader(&mut img, 0, 2, vec![1, 2, 3]);
        // Broker 1 prefers one partition and leads none of it: 100% > 10%.
        let out = rebalance(&img, 10);
        assert_eq!(out.len(), 1);
        assert!(matches!(
            &out[0],
            MetadataRecord::ChangePartition {
                leader: 1,
                partition: 0,
                ..
            }
        ));
        assert!(
            rebalance(&img, 100).is_empty(),
            "100% tolerates any imbalance"
        );
        fence(&mut img, 1);
        assert!(
            rebalance(&img, 10).is_empty(),
            "a fenced preferred replica cannot lead"
        );
    }

    #[test]
    fn unclean_election_prefers_in_sync_then_any_live_replica() {
        let mut img = setup();
        let t = img.topic("t").unwrap().clone();
        assert_eq!(
            elect_unclean(&img, &t, &t.partitions[0]).unwrap_err().code,
            ResponseError::ElectionNotNeeded.code()
        );
        // Only broker 1 in sync, and it dies: broker 2 may lead, out of sync.
        move_leader(&mut img, 0, 1, vec![1]);
        fence(&mut img, 1);
        let t = img.topic("t").unwrap().clone();
        let r = elect_unclean(&img, &t, &t.partitions[0]).unwrap();
        assert!(
            matches!(&r, MetadataRecord::ChangePartition { leader: 2, isr, .. } if isr == &vec![2])
        );
        apply(&mut img, &r).unwrap();
        fence(&mut img, 2);
        fence(&mut img, 3);
        let t = img.topic("t").unwrap().clone();
        assert_eq!(
            elect_unclean(&img, &t, &t.partitions[0]).unwrap_err().code,
            ResponseError::EligibleLeadersNotAvailable.code()
        );
    }
}
