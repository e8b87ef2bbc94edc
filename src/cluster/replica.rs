//! A partition's replica state on its owner shard, as Kafka's `Partition` keeps it: whether
//! this broker leads or follows it, and, on the leader, each follower's progress, the
//! high watermark, and the ISR changes the leader asks the controller for (Kafka's
//! AlterPartition, here a `ChangePartition` record proposed to the metadata quorum).
//!
//! Pure: every input (a follower's fetch, the leader's log end, the clock, the image's
//! partition) comes in as an argument, so the rules are tested without I/O. The I/O lives
//! in `partition_manager.rs` (the `Partition` holding this), `fetcher.rs` (the follower's
//! side) and the Fetch and Produce handlers (the leader's side).
//!
//! The rules, Kafka's:
//! - a follower's log end offset is the offset it fetches from;
//! - it is caught up at time t when it fetched at t from at least the leader's log end then,
//!   or from at least the leader's log end at its previous fetch (it had everything the
//!   leader had then);
//! - the high watermark is the smallest log end offset among the leader and the members of
//!   the ISR (the maximal ISR while an expansion is pending), never moves back, and, as
//!   KIP-966's strict min-ISR asks, does not move while the ISR has fewer than
//!   `min.insync.replicas` members;
//! - an ISR member not caught up for `replica.lag.time.max.ms` is dropped; a replica that
//!   has reached the high watermark and the start of the leader's epoch is added back.

use std::collections::BTreeMap;

/// What the leader knows about one follower.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Follower {
    /// Offset the follower fetched from last (its log end offset); -1 before its first fetch
    /// in this leader epoch.
    pub log_end: i64,
    /// When it was last known to be caught up (ms); the leader's start in its epoch before.
    pub caught_up_ms: i64,
    /// When it fetched last (ms), and the leader's log end then.
    pub last_fetch_ms: i64,
    pub leader_end_at_last_fetch: i64,
}

/// This broker's role for a partition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Role {
    /// Not a replica of any live leader (leader -1, or not hosted).
    None,
    Leader {
        /// Log end offset when this leader epoch began: a follower must reach it to join the
        /// ISR (it then holds this leader's epoch start).
        epoch_start: i64,
        followers: BTreeMap<i32, Follower>,
        /// An ISR change proposed and not yet seen in the image, with the partition epoch it
        /// was proposed against.
        pending: Option<(Vec<i32>, i32)>,
    },
    Follower {
        leader: i32,
    },
}

/// The replica state of one partition on its owner shard.
#[derive(Debug, Clone)]
pub struct Replica {
    pub node: i32,
    pub role: Role,
    pub leader_epoch: i32,
    pub partition_epoch: i32,
    pub replicas: Vec<i32>,
    /// The ISR as the image has it.
    pub isr: Vec<i32>,
    pub high_watermark: i64,
    pub min_isr: usize,
}

/// The image's view of a partition, as the replica state needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Assignment {
    pub leader: i32,
    pub leader_epoch: i32,
    pub partition_epoch: i32,
    pub replicas: Vec<i32>,
    pub isr: Vec<i32>,
    pub min_isr: usize,
}

/// What changed when an assignment was applied.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transition {
    /// Same role and epoch (the ISR or the config may have changed).
    Same,
    /// This broker leads now, from this leader epoch on.
    BecameLeader,
    /// This broker follows `leader` now (a new leader, or a new epoch).
    BecameFollower { leader: i32 },
    /// Neither: no leader, or not a replica any more.
    Stopped,
}

impl Replica {
    /// A replica of a partition with no role yet; `log_end` doubles as the high watermark a
    /// single-copy partition has.
    pub fn new(node: i32, high_watermark: i64) -> Replica {
        Replica {
            node,
            role: Role::None,
            leader_epoch: -1,
            partition_epoch: -1,
            replicas: Vec::new(),
            isr: Vec::new(),
            high_watermark,
            min_isr: 1,
        }
    }

    /// True when the partition has copies on other brokers.
    pub fn replicated(&self) -> bool {
        self.replicas.len() > 1
    }

    pub fn is_leader(&self) -> bool {
        matches!(self.role, Role::Leader { .. })
    }

    /// Applies the image's view of the partition; `log_end` is the local log end offset
    /// (the start of a new leader epoch), `now_ms` the clock.
    pub fn apply(&mut self, a: &Assignment, log_end: i64, now_ms: i64) -> Transition {
        let epoch_changed = a.leader_epoch != self.leader_epoch;
        if self.partition_epoch < 0 && a.replicas.len() > 1 {
            // Just opened: what this replica holds past the high watermark is not known to
            // be committed (the high watermark is not checkpointed), so it starts from the
            // log start and is learned again from the leader or the ISR.
            self.high_watermark = 0;
        }
        self.partition_epoch = a.partition_epoch;
        self.replicas = a.replicas.clone();
        self.isr = a.isr.clone();
        self.min_isr = a.min_isr.max(1);
        self.leader_epoch = a.leader_epoch;
        let hosted = a.replicas.contains(&self.node);
        if !hosted || a.leader < 0 {
            let was = !matches!(self.role, Role::None);
            self.role = Role::None;
            return if was {
                Transition::Stopped
            } else {
                Transition::Same
            };
        }
        if a.leader == self.node {
            if let (
                false,
                Role::Leader {
                    pending, followers, ..
                },
            ) = (epoch_changed, &mut self.role)
            {
                // Same epoch: an ISR change landed (or another one won); forget what is settled.
                if pending
                    .as_ref()
                    .is_some_and(|(_, at)| *at < a.partition_epoch)
                {
                    *pending = None;
                }
                followers.retain(|id, _| a.replicas.contains(id));
                for &r in a.replicas.iter().filter(|r| **r != self.node) {
                    followers.entry(r).or_insert_with(|| fresh(log_end, now_ms));
                }
                return Transition::Same;
            }
            let followers = a
                .replicas
                .iter()
                .filter(|r| **r != self.node)
                .map(|r| (*r, fresh(log_end, now_ms)))
                .collect();
            self.role = Role::Leader {
                epoch_start: log_end,
                followers,
                pending: None,
            };
            // Not above the log end: a follower's high watermark may run ahead of what it holds.
            self.high_watermark = self.high_watermark.min(log_end);
            return Transition::BecameLeader;
        }
        let same = matches!(self.role, Role::Follower { leader } if leader == a.leader);
        self.role = Role::Follower { leader: a.leader };
        if same && !epoch_changed {
            Transition::Same
        } else {
            Transition::BecameFollower { leader: a.leader }
        }
    }

    /// The ISR the high watermark waits for: the image's, and the members of a pending
    /// expansion (Kafka's maximal ISR), so a record is never acknowledged without a replica
    /// about to become in-sync.
    pub fn maximal_isr(&self) -> Vec<i32> {
        let mut isr = self.isr.clone();
        if let Role::Leader {
            pending: Some((p, _)),
            ..
        } = &self.role
        {
            for r in p {
                if !isr.contains(r) {
                    isr.push(*r);
                }
            }
        }
        isr
    }

    /// Records a follower's fetch from `fetch_offset` at `now_ms`, the leader's log end being
    /// `leader_end`. True when the high watermark moved.
    pub fn on_follower_fetch(
        &mut self,
        id: i32,
        fetch_offset: i64,
        leader_end: i64,
        now_ms: i64,
    ) -> bool {
        let Role::Leader { followers, .. } = &mut self.role else {
            return false;
        };
        let Some(f) = followers.get_mut(&id) else {
            return false;
        };
        if fetch_offset >= leader_end {
            f.caught_up_ms = now_ms;
        } else if fetch_offset >= f.leader_end_at_last_fetch && f.last_fetch_ms > 0 {
            f.caught_up_ms = f.caught_up_ms.max(f.last_fetch_ms);
        }
        f.log_end = fetch_offset;
        f.last_fetch_ms = now_ms;
        f.leader_end_at_last_fetch = leader_end;
        self.advance(leader_end)
    }

    /// Moves the high watermark as far as the ISR allows, given the leader's log end. True
    /// when it moved. A follower's high watermark only comes from its leader
    /// ([`Replica::follower_high_watermark`]).
    pub fn advance(&mut self, leader_end: i64) -> bool {
        let Role::Leader { followers, .. } = &self.role else {
            return false;
        };
        let isr = self.maximal_isr();
        if self.isr.len() < self.min_isr {
            return false; // strict min-ISR (KIP-966)
        }
        let mut hw = leader_end;
        for r in isr.iter().filter(|r| **r != self.node) {
            match followers.get(r) {
                Some(f) => hw = hw.min(f.log_end),
                None => return false,
            }
        }
        if hw > self.high_watermark {
            self.high_watermark = hw;
            return true;
        }
        false
    }

    /// The high watermark a follower learned from its leader, bounded by what it holds.
    pub fn follower_high_watermark(&mut self, leader_hw: i64, log_end: i64) {
        self.high_watermark = leader_hw.min(log_end).max(self.high_watermark.min(log_end));
    }

    /// The ISR this leader should ask for now, if it differs from the image's and nothing is
    /// pending: members not caught up within `lag_max_ms` dropped, caught-up replicas
    /// (at or past the high watermark and the start of this epoch) added, members fenced
    /// by the controller left to it. Never drops the leader itself.
    pub fn wanted_isr(&self, now_ms: i64, lag_max_ms: i64) -> Option<Vec<i32>> {
        let Role::Leader {
            followers,
            pending,
            epoch_start,
        } = &self.role
        else {
            return None;
        };
        if pending.is_some() {
            return None;
        }
        let mut isr: Vec<i32> = self
            .isr
            .iter()
            .copied()
            .filter(|r| {
                *r == self.node
                    || followers
                        .get(r)
                        .is_some_and(|f| now_ms - f.caught_up_ms <= lag_max_ms)
            })
            .collect();
        if !isr.contains(&self.node) {
            isr.insert(0, self.node);
        }
        for (id, f) in followers {
            let joins = f.log_end >= self.high_watermark
                && f.log_end >= *epoch_start
                && now_ms - f.caught_up_ms <= lag_max_ms;
            if joins && !isr.contains(id) {
                isr.push(*id);
            }
        }
        // Keep the replica order, as Kafka lists the ISR.
        isr.sort_by_key(|r| {
            self.replicas
                .iter()
                .position(|x| x == r)
                .unwrap_or(usize::MAX)
        });
        let mut current = self.isr.clone();
        current.sort_by_key(|r| {
            self.replicas
                .iter()
                .position(|x| x == r)
                .unwrap_or(usize::MAX)
        });
        (isr != current).then_some(isr)
    }

    /// Notes that `isr` was proposed against the current partition epoch.
    pub fn set_pending(&mut self, isr: Vec<i32>) {
        let at = self.partition_epoch;
        if let Role::Leader { pending, .. } = &mut self.role {
            *pending = Some((isr, at));
        }
    }

    /// Forgets a pending change the controller refused (the next image settles the rest).
    pub fn clear_pending(&mut self) {
        if let Role::Leader { pending, .. } = &mut self.role {
            *pending = None;
        }
    }

    /// Members of the ISR counted for `min.insync.replicas` (the image's ISR: an expansion
    /// counts once committed, as Kafka's).
    pub fn isr_size(&self) -> usize {
        self.isr.len()
    }

    /// Replicas outside the ISR (for the under-replicated count).
    pub fn under_replicated(&self) -> bool {
        self.is_leader() && self.isr.len() < self.replicas.len()
    }

    /// On the leader: how many offsets each follower is behind `leader_end` (its whole log
    /// before its first fetch in this epoch). Empty elsewhere.
    pub fn follower_lag(&self, leader_end: i64) -> Vec<(i32, i64)> {
        match &self.role {
            Role::Leader { followers, .. } => followers
                .iter()
                .map(|(id, f)| (*id, (leader_end - f.log_end.max(0)).max(0)))
                .collect(),
            _ => Vec::new(),
        }
    }
}

fn fresh(leader_end: i64, now_ms: i64) -> Follower {
    Follower {
        log_end: -1,
        caught_up_ms: now_ms,
        last_fetch_ms: 0,
        leader_end_at_last_fetch: leader_end,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn assign(leader: i32, epoch: i32, isr: &[i32]) -> Assignment {
        Assignment {
            leader,
            leader_epoch: epoch,
            partition_epoch: epoch,
            replicas: vec![1, 2, 3],
            isr: isr.to_vec(),
            min_isr: 1,
        }
    }

    #[test]
    fn leader_high_watermark_is_the_slowest_isr_member() {
        let mut r = Replica::new(1, 0);
        assert_eq!(
            r.apply(&assign(1, 0, &[1, 2, 3]), 0, 1000),
            Transition::BecameLeader
        );
        // Leader wrote 10; followers have not fetched: nothing is committed.
        assert!(!r.advance(10));
        assert!(!r.on_follower_fetch(2, 10, 10, 1001));
        assert_eq!(r.high_watermark, 0);
        assert!(r.on_follower_fetch(3, 4, 10, 1002));
        assert_eq!(r.high_watermark, 4);
        assert!(r.on_follower_fetch(3, 10, 10, 1003));
        assert_eq!(r.high_watermark, 10);
        // A follower fetching from an older offset again never moves it back.
        assert!(!r.on_follower_fetch(3, 7, 12, 1004));
        assert_eq!(r.high_watermark, 10);
    }

    #[test]
    fn strict_min_isr_holds_the_high_watermark() {
        let mut r = Replica::new(1, 0);
        let mut a = assign(1, 0, &[1]);
        a.min_isr = 2;
        r.apply(&a, 0, 0);
        assert!(!r.advance(5), "one in-sync replica of two required");
        a.isr = vec![1, 2];
        a.partition_epoch = 1;
        r.apply(&a, 5, 10);
        assert!(r.on_follower_fetch(2, 5, 5, 11));
        assert_eq!(r.high_watermark, 5);
    }

    #[test]
    fn lagging_followers_leave_and_caught_up_ones_join() {
        let mut r = Replica::new(1, 0);
        r.apply(&assign(1, 0, &[1, 2, 3]), 0, 0);
        r.on_follower_fetch(2, 0, 0, 100);
        r.on_follower_fetch(3, 0, 0, 100);
        // The leader appends; follower 2 keeps up, follower 3 stops fetching.
        r.on_follower_fetch(2, 50, 50, 20_000);
        assert_eq!(r.wanted_isr(20_000, 30_000), None);
        assert_eq!(r.wanted_isr(31_000, 30_000), Some(vec![1, 2]));
        r.set_pending(vec![1, 2]);
        assert_eq!(r.wanted_isr(31_000, 30_000), None, "one change at a time");
        let mut a = assign(1, 0, &[1, 2]);
        a.partition_epoch = 1;
        assert_eq!(r.apply(&a, 50, 31_001), Transition::Same);
        assert_eq!(r.wanted_isr(31_001, 30_000), None);
        // Follower 3 comes back and catches up to the high watermark: it joins.
        r.on_follower_fetch(2, 60, 60, 32_000);
        assert_eq!(r.high_watermark, 60);
        r.on_follower_fetch(3, 60, 60, 32_001);
        assert_eq!(r.wanted_isr(32_001, 30_000), Some(vec![1, 2, 3]));
    }

    #[test]
    fn pending_expansion_counts_for_the_high_watermark() {
        let mut r = Replica::new(1, 0);
        r.apply(&assign(1, 0, &[1, 2]), 0, 0);
        r.on_follower_fetch(2, 10, 10, 1);
        r.on_follower_fetch(3, 10, 10, 1);
        assert_eq!(r.high_watermark, 10);
        let want = r.wanted_isr(2, 30_000).expect("3 joins");
        r.set_pending(want);
        // Until the expansion lands, 3 must have a record before it is committed.
        r.on_follower_fetch(2, 20, 20, 3);
        assert_eq!(r.high_watermark, 10);
        r.on_follower_fetch(3, 20, 20, 4);
        assert_eq!(r.high_watermark, 20);
    }

    #[test]
    fn roles_follow_the_image() {
        let mut r = Replica::new(2, 0);
        assert_eq!(
            r.apply(&assign(1, 0, &[1, 2, 3]), 0, 0),
            Transition::BecameFollower { leader: 1 }
        );
        assert_eq!(r.apply(&assign(1, 0, &[1, 2]), 0, 0), Transition::Same);
        r.follower_high_watermark(40, 30);
        assert_eq!(r.high_watermark, 30, "bounded by the local log");
        assert_eq!(
            r.apply(&assign(2, 1, &[2, 3]), 30, 5),
            Transition::BecameLeader
        );
        assert!(r.is_leader());
        assert_eq!(r.apply(&assign(-1, 2, &[2]), 30, 6), Transition::Stopped);
        assert_eq!(
            r.apply(&assign(3, 3, &[3]), 30, 7),
            Transition::BecameFollower { leader: 3 }
        );
    }

    #[test]
    fn follower_lag_is_counted_on_the_leader_only() {
        let mut r = Replica::new(1, 0);
        r.apply(&assign(1, 1, &[1, 2, 3]), 100, 0);
        assert_eq!(
            r.follower_lag(100),
            vec![(2, 100), (3, 100)],
            "before any fetch: all of it"
        );
        r.on_follower_fetch(2, 60, 100, 5);
        assert_eq!(r.follower_lag(100), vec![(2, 40), (3, 100)]);
        r.apply(&assign(2, 2, &[1, 2, 3]), 100, 10);
        assert!(r.follower_lag(100).is_empty());
    }
}
