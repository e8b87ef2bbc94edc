//! The broker's request and topic counters, kept per shard and merged when scraped.
//!
//! Each shard counts into its own thread-locals (plain integers behind a `RefCell`, borrowed
//! only between two awaits), so the data path takes no lock and allocates nothing: a topic's
//! entry is allocated the first time the shard sees the topic, an API's table once per shard.
//! The admin listener's `GET /metrics` asks every shard for a copy (`runtime::submit_to`, as
//! `cluster::stats::gather` does) and adds them up (`collect.rs`), then writes the text
//! (`render.rs`).
//!
//! Label cardinality is bounded: at most `metrics.topics.max` topics get series of their own,
//! admitted first come, first served, through one process-wide registry that a shard consults
//! only the first time it sees a topic (so every shard makes the same choice); later topics are
//! counted together as `topic="__other"`. Entries of topics that no longer exist are dropped
//! when scraped, which frees their place.

pub mod collect;
pub mod render;

use std::cell::RefCell;
use std::collections::{BTreeSet, HashMap};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use crate::runtime::histogram::LatencyHistogram;

/// The label of the series that counts the topics past `metrics.topics.max`.
pub const OTHER_TOPIC: &str = "__other";

/// API keys with a table entry (Kafka's keys are below 100); others are not counted.
pub const API_KEYS: usize = 100;

/// One topic's counters on one shard (Kafka's `BrokerTopicMetrics` for that topic).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TopicCounters {
    /// Record-set bytes appended by producers (replication not included).
    pub bytes_in: u64,
    /// Record bytes sent to consumers (follower fetches not included).
    pub bytes_out: u64,
    /// Records appended by producers (retried duplicates not included).
    pub records_in: u64,
    /// Partitions named by Produce requests, and those answered with an error.
    pub produce_requests: u64,
    pub produce_failures: u64,
    /// Partitions named by consumer Fetch requests, and those answered with an error.
    pub fetch_requests: u64,
    pub fetch_failures: u64,
}

impl TopicCounters {
    pub fn add(&mut self, o: &TopicCounters) {
        self.bytes_in = self.bytes_in.saturating_add(o.bytes_in);
        self.bytes_out = self.bytes_out.saturating_add(o.bytes_out);
        self.records_in = self.records_in.saturating_add(o.records_in);
        self.produce_requests = self.produce_requests.saturating_add(o.produce_requests);
        self.produce_failures = self.produce_failures.saturating_add(o.produce_failures);
        self.fetch_requests = self.fetch_requests.saturating_add(o.fetch_requests);
        self.fetch_failures = self.fetch_failures.saturating_add(o.fetch_failures);
    }
}

/// One Kafka API's counters on one shard (Kafka's `RequestMetrics` for that request).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ApiCounters {
    /// Frame length read to answer written (or handled, when no answer is due).
    pub latency: LatencyHistogram,
    /// Summed seconds spent waiting for `queued.max.request.bytes` and reading the frame.
    pub queue_us: u64,
    /// Summed seconds spent in the handler.
    pub handle_us: u64,
    /// Summed seconds from handled to answer written (acks=all fsync and replication, the
    /// answer's turn behind earlier ones, sending).
    pub respond_us: u64,
    pub request_bytes: u64,
    pub response_bytes: u64,
    /// Requests by error code (0: none), few codes per API.
    pub by_error: Vec<(i16, u64)>,
}

impl ApiCounters {
    fn count_error(&mut self, code: i16) {
        match self.by_error.iter_mut().find(|(c, _)| *c == code) {
            Some((_, n)) => *n = n.saturating_add(1),
            None => self.by_error.push((code, 1)),
        }
    }

    pub fn add(&mut self, o: &ApiCounters) {
        self.latency.merge(&o.latency);
        self.queue_us = self.queue_us.saturating_add(o.queue_us);
        self.handle_us = self.handle_us.saturating_add(o.handle_us);
        self.respond_us = self.respond_us.saturating_add(o.respond_us);
        self.request_bytes = self.request_bytes.saturating_add(o.request_bytes);
        self.response_bytes = self.response_bytes.saturating_add(o.response_bytes);
        for &(code, n) in &o.by_error {
            match self.by_error.iter_mut().find(|(c, _)| *c == code) {
                Some((_, m)) => *m = m.saturating_add(n),
                None => self.by_error.push((code, n)),
            }
        }
    }

    pub fn requests(&self) -> u64 {
        self.by_error.iter().map(|(_, n)| n).sum()
    }
}

/// A topic's place in the shard's table.
enum Slot {
    Own(TopicCounters),
    /// Past `metrics.topics.max` when first seen: counted in the shard's `__other`.
    Other,
}

#[derive(Default)]
struct ShardTopics {
    by_name: HashMap<String, Slot>,
    other: TopicCounters,
}

thread_local! {
    static TOPICS: RefCell<ShardTopics> = RefCell::new(ShardTopics::default());
    static APIS: RefCell<Vec<ApiCounters>> = const { RefCell::new(Vec::new()) };
}

/// Topics with series of their own, all shards together.
static TRACKED: Mutex<BTreeSet<String>> = Mutex::new(BTreeSet::new());
static TOPICS_MAX: AtomicUsize = AtomicUsize::new(1000);

/// Sets `metrics.topics.max` (at start-up).
pub fn set_topics_max(n: usize) {
    TOPICS_MAX.store(n, Ordering::Relaxed);
}

/// Whether `topic` gets series of its own: already tracked, or room for one more.
fn admit(topic: &str) -> bool {
    let mut t = TRACKED.lock().unwrap_or_else(|p| p.into_inner());
    if t.contains(topic) {
        return true;
    }
    if t.len() < TOPICS_MAX.load(Ordering::Relaxed) {
        t.insert(topic.to_string());
        return true;
    }
    false
}

/// Counts into `topic`'s counters on this shard.
pub fn count_topic(topic: &str, f: impl FnOnce(&mut TopicCounters)) {
    TOPICS.with(|t| {
        let mut guard = t.borrow_mut();
        let t = &mut *guard;
        if !t.by_name.contains_key(topic) {
            let slot = if admit(topic) {
                Slot::Own(TopicCounters::default())
            } else {
                Slot::Other
            };
            t.by_name.insert(topic.to_string(), slot);
        }
        match t.by_name.get_mut(topic) {
            Some(Slot::Own(c)) => f(c),
            _ => f(&mut t.other),
        }
    });
}

/// How long one request spent in each phase (`connection.rs`).
#[derive(Debug, Clone, Copy)]
pub struct RequestTiming {
    pub api_key: i16,
    /// The error the request is counted under (0: none).
    pub error: i16,
    pub queue: Duration,
    pub handle: Duration,
    pub total: Duration,
    pub request_bytes: usize,
    pub response_bytes: usize,
}

fn us(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}

/// Counts one request that was handled (answered or not) on this shard.
pub fn count_request(t: &RequestTiming) {
    with_api(t.api_key, |a| {
        a.latency.record(t.total);
        a.queue_us = a.queue_us.saturating_add(us(t.queue));
        a.handle_us = a.handle_us.saturating_add(us(t.handle));
        let respond = t.total.saturating_sub(t.queue + t.handle);
        a.respond_us = a.respond_us.saturating_add(us(respond));
        a.request_bytes = a.request_bytes.saturating_add(t.request_bytes as u64);
        a.response_bytes = a.response_bytes.saturating_add(t.response_bytes as u64);
        a.count_error(t.error);
    });
}

/// Counts a request that closed its connection instead of being answered (malformed,
/// unsupported version) under `error`.
pub fn count_refused(api_key: i16, error: i16) {
    with_api(api_key, |a| a.count_error(error));
}

fn with_api(api_key: i16, f: impl FnOnce(&mut ApiCounters)) {
    let Ok(i) = usize::try_from(api_key) else {
        return;
    };
    if i >= API_KEYS {
        return;
    }
    APIS.with(|a| {
        let mut a = a.borrow_mut();
        if a.is_empty() {
            a.resize(API_KEYS, ApiCounters::default());
        }
        f(&mut a[i]);
    });
}

/// One shard's counters: topics by label (`__other` included when used), APIs by key.
pub type Snapshot = (Vec<(String, TopicCounters)>, Vec<(i16, ApiCounters)>);

/// A copy of this shard's counters, for a scrape. Drops the entries of topics `exists`
/// denies first.
pub fn shard_snapshot(exists: &dyn Fn(&str) -> bool) -> Snapshot {
    let topics = TOPICS.with(|t| {
        let mut t = t.borrow_mut();
        t.by_name.retain(|name, _| exists(name));
        let mut out: Vec<(String, TopicCounters)> = t
            .by_name
            .iter()
            .filter_map(|(name, slot)| match slot {
                Slot::Own(c) => Some((name.clone(), *c)),
                Slot::Other => None,
            })
            .collect();
        if t.other != TopicCounters::default() {
            out.push((OTHER_TOPIC.to_string(), t.other));
        }
        out
    });
    let apis = APIS.with(|a| {
        a.borrow()
            .iter()
            .enumerate()
            .filter(|(_, c)| c.requests() > 0)
            .map(|(k, c)| (k as i16, c.clone()))
            .collect()
    });
    (topics, apis)
}

/// Forgets tracked topics `exists` denies (deleted), freeing their places. Once per scrape.
pub fn forget_deleted_topics(exists: &dyn Fn(&str) -> bool) {
    let mut t = TRACKED.lock().unwrap_or_else(|p| p.into_inner());
    t.retain(|name| exists(name));
}

#[cfg(test)]
mod tests {
    use super::*;

    // One test touches the process-wide registry, so no two race on it.
    #[test]
    fn topics_past_the_limit_count_as_other_and_deleted_ones_free_their_place() {
        set_topics_max(2);
        for name in ["a", "b", "c"] {
            count_topic(name, |c| c.records_in += 1);
        }
        count_topic("c", |c| c.bytes_in += 5);
        count_topic("a", |c| c.records_in += 1);
        let all = |_: &str| true;
        let (mut topics, _) = shard_snapshot(&all);
        topics.sort_by(|x, y| x.0.cmp(&y.0));
        let get =
            |v: &[(String, TopicCounters)], n: &str| v.iter().find(|(t, _)| t == n).map(|x| x.1);
        assert_eq!(get(&topics, "a").map(|c| c.records_in), Some(2));
        assert_eq!(get(&topics, "b").map(|c| c.records_in), Some(1));
        assert_eq!(get(&topics, "c"), None, "third topic past a limit of 2");
        let other = get(&topics, OTHER_TOPIC).expect("__other series");
        assert_eq!((other.records_in, other.bytes_in), (1, 5));
        // "b" deleted: its place goes to the next new topic.
        let not_b = |n: &str| n != "b";
        forget_deleted_topics(&not_b);
        let _ = shard_snapshot(&not_b);
        count_topic("d", |c| c.records_in += 7);
        let (topics, _) = shard_snapshot(&all);
        assert_eq!(get(&topics, "d").map(|c| c.records_in), Some(7));
        assert_eq!(get(&topics, "b"), None);
        set_topics_max(1000);
    }

    #[test]
    fn requests_are_counted_per_api_and_error() {
        let t = RequestTiming {
            api_key: 0,
            error: 0,
            queue: Duration::from_micros(10),
            handle: Duration::from_micros(100),
            total: Duration::from_micros(1000),
            request_bytes: 1024,
            response_bytes: 64,
        };
        count_request(&t);
        count_request(&RequestTiming { error: 6, ..t });
        count_refused(0, 42);
        count_refused(-1, 42); // not an API: ignored
        count_refused(1000, 42);
        let (_, apis) = shard_snapshot(&|_| true);
        assert_eq!(apis.len(), 1);
        let (key, a) = &apis[0];
        assert_eq!(*key, 0);
        assert_eq!(a.requests(), 3);
        assert_eq!(a.by_error, vec![(0, 1), (6, 1), (42, 1)]);
        assert_eq!(a.latency.count(), 2, "refused requests have no latency");
        assert_eq!((a.queue_us, a.handle_us, a.respond_us), (20, 200, 1780));
        assert_eq!((a.request_bytes, a.response_bytes), (2048, 128));
        let mut sum = a.clone();
        sum.add(a);
        assert_eq!(sum.requests(), 6);
        assert_eq!(sum.by_error, vec![(0, 2), (6, 2), (42, 2)]);
    }
}
