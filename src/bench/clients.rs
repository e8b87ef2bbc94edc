//! The librdkafka side of a run: topic creation and deletion (admin client),
//! one producer loop and one consumer loop, each on its own thread (plus
//! librdkafka's own threads). What they count goes to [`Shared`].
//!
//! Every payload starts with the message's send time (µs since the run's
//! start, little-endian u64): the intended time at a fixed rate, the moment
//! of `send` at max rate. The delivery report measures publish latency from
//! it (carried as the delivery opaque), the consumer end-to-end latency.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use hdrhistogram::Histogram;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::message::{DeliveryResult, Message};
use rdkafka::producer::{BaseRecord, ProducerContext, ThreadedProducer};
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::ClientContext;

use super::schedule::Schedule;
use super::stats::new_histogram;
use super::workload::{KeyDistributor, Workload, XorShift, ROUND_ROBIN_KEYS};

/// How long admin operations may take.
const ADMIN_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a producer's final flush may take before its unsent messages count as failed.
const FLUSH_TIMEOUT: Duration = Duration::from_secs(30);
/// Longest single sleep of a loop, so a stop request is seen promptly.
const MAX_NAP: Duration = Duration::from_millis(50);
/// Consumer errors printed before the rest are only counted.
const CONSUMER_ERRORS_PRINTED: u64 = 5;
/// How often a consumer publishes its assignment's size.
const ASSIGNMENT_CHECK: Duration = Duration::from_millis(200);

/// Counters and histograms the client threads write and the run reads.
pub struct Shared {
    /// Time zero of every stamp.
    pub t0: Instant,
    /// Latencies are recorded while this is set (the whole run; the histograms
    /// are emptied when the test window starts).
    pub recording: AtomicBool,
    pub stop_producers: AtomicBool,
    pub stop_consumers: AtomicBool,
    pub produced: AtomicU64,
    pub produced_bytes: AtomicU64,
    pub failed: AtomicU64,
    pub consumed: AtomicU64,
    pub consumed_bytes: AtomicU64,
    pub consumer_errors: AtomicU64,
    /// Phase label index for the progress line (see `run::PHASES`).
    pub phase: AtomicU8,
    /// Partitions assigned to each consumer (updated a few times a second).
    pub assigned: Vec<AtomicUsize>,
    pub publish_hist: Vec<Mutex<Histogram<u64>>>,
    pub e2e_hist: Vec<Mutex<Histogram<u64>>>,
}

impl Shared {
    pub fn new(producers: usize, consumers: usize) -> Shared {
        let hists = |n| (0..n).map(|_| Mutex::new(new_histogram())).collect();
        Shared {
            t0: Instant::now(),
            recording: AtomicBool::new(true),
            stop_producers: AtomicBool::new(false),
            stop_consumers: AtomicBool::new(false),
            produced: AtomicU64::new(0),
            produced_bytes: AtomicU64::new(0),
            failed: AtomicU64::new(0),
            consumed: AtomicU64::new(0),
            consumed_bytes: AtomicU64::new(0),
            consumer_errors: AtomicU64::new(0),
            phase: AtomicU8::new(0),
            assigned: (0..consumers).map(|_| AtomicUsize::new(0)).collect(),
            publish_hist: hists(producers),
            e2e_hist: hists(consumers),
        }
    }

    /// Microseconds since `t0`.
    pub fn now_us(&self) -> u64 {
        self.t0.elapsed().as_micros() as u64
    }

    /// All histograms of one kind merged.
    pub fn merged(hists: &[Mutex<Histogram<u64>>]) -> Histogram<u64> {
        let mut out = new_histogram();
        for h in hists {
            let h = h.lock().unwrap_or_else(|e| e.into_inner());
            // Same bounds everywhere, so adding cannot fail.
            let _ = out.add(&*h);
        }
        out
    }

    /// Empties histograms (start of a measured window).
    pub fn reset(hists: &[Mutex<Histogram<u64>>]) {
        for h in hists {
            h.lock().unwrap_or_else(|e| e.into_inner()).reset();
        }
    }
}

fn record(hist: &Mutex<Histogram<u64>>, latency_us: u64) {
    hist.lock()
        .unwrap_or_else(|e| e.into_inner())
        .saturating_record(latency_us.max(1));
}

/// Creates the run's topics; fails if any could not be created.
pub fn create_topics(bootstrap: &str, w: &Workload, names: &[String]) -> anyhow::Result<()> {
    let admin = admin(bootstrap)?;
    let opts = AdminOptions::new().operation_timeout(Some(ADMIN_TIMEOUT));
    let topics: Vec<NewTopic> = names
        .iter()
        .map(|n| {
            let mut t = NewTopic::new(
                n,
                w.partitions_per_topic,
                TopicReplication::Fixed(i32::from(w.replication_factor)),
            );
            for (k, v) in &w.topic_config {
                t = t.set(k, v);
            }
            t
        })
        .collect();
    let results =
        futures::executor::block_on(admin.create_topics(&topics, &opts)).context("CreateTopics")?;
    for r in results {
        if let Err((name, code)) = r {
            bail!("creating topic {name}: {code}");
        }
    }
    Ok(())
}

/// Deletes the run's topics, best effort (a failure is printed, not returned).
pub fn delete_topics(bootstrap: &str, names: &[String]) {
    let res = admin(bootstrap).and_then(|admin| {
        let opts = AdminOptions::new().operation_timeout(Some(ADMIN_TIMEOUT));
        let refs: Vec<&str> = names.iter().map(String::as_str).collect();
        Ok(futures::executor::block_on(
            admin.delete_topics(&refs, &opts),
        )?)
    });
    match res {
        Ok(results) => {
            for r in results {
                if let Err((name, code)) = r {
                    eprintln!("warning: deleting topic {name}: {code}");
                }
            }
        }
        Err(e) => eprintln!("warning: deleting the run's topics: {e:#}"),
    }
}

fn admin(bootstrap: &str) -> anyhow::Result<AdminClient<DefaultClientContext>> {
    ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .create()
        .context("creating the admin client")
}

/// Delivery reports of one producer: count, and record publish latency.
pub struct DeliveryCounter {
    shared: Arc<Shared>,
    index: usize,
}

impl ClientContext for DeliveryCounter {}

impl ProducerContext for DeliveryCounter {
    /// The message's stamp (µs since `t0`).
    type DeliveryOpaque = usize;

    fn delivery(&self, result: &DeliveryResult<'_>, stamp_us: usize) {
        let s = &self.shared;
        match result {
            Ok(m) => {
                s.produced.fetch_add(1, Ordering::Relaxed);
                s.produced_bytes
                    .fetch_add(m.payload_len() as u64, Ordering::Relaxed);
                if s.recording.load(Ordering::Relaxed) {
                    let latency = s.now_us().saturating_sub(stamp_us as u64);
                    record(&s.publish_hist[self.index], latency);
                }
            }
            Err(_) => {
                s.failed.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}

/// librdkafka producer settings from the workload (extra `producerConfig` last, so it wins).
pub fn producer_config(bootstrap: &str, w: &Workload) -> ClientConfig {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", bootstrap)
        .set("acks", if w.acks == "-1" { "all" } else { &w.acks })
        .set("batch.size", w.batch_size.to_string())
        .set("linger.ms", w.linger_ms.to_string())
        .set("compression.type", &w.compression)
        .set("message.max.bytes", "1048576");
    for (k, v) in &w.producer_config {
        c.set(k, v);
    }
    c
}

/// One producer thread's work.
pub struct ProducerJob {
    pub shared: Arc<Shared>,
    pub index: usize,
    pub topic: String,
    pub payload: Vec<u8>,
    pub keys: KeyDistributor,
    /// Messages per second for this producer; None = as fast as accepted.
    pub rate: Option<f64>,
}

impl ProducerJob {
    /// Creates the client (so configuration errors surface before the threads start).
    pub fn client(
        &self,
        config: &ClientConfig,
    ) -> anyhow::Result<ThreadedProducer<DeliveryCounter>> {
        config
            .create_with_context(DeliveryCounter {
                shared: self.shared.clone(),
                index: self.index,
            })
            .context("creating a producer")
    }

    /// Sends until `stop_producers`, then flushes.
    pub fn run(self, producer: ThreadedProducer<DeliveryCounter>) {
        let s = &*self.shared;
        let schedule = self.rate.map(Schedule::new);
        let start = Instant::now();
        let start_us = s.now_us();
        let mut buf = self.payload;
        let mut rng = XorShift::new(0x9E37_79B9 ^ (self.index as u64 + 1));
        let mut n: u64 = 0;
        'send: while !s.stop_producers.load(Ordering::Relaxed) {
            let stamp_us = match schedule {
                Some(sched) => {
                    let wait = sched.wait(n, start.elapsed());
                    if !wait.is_zero() {
                        std::thread::sleep(wait.min(MAX_NAP));
                        continue;
                    }
                    start_us + sched.intended(n).as_micros() as u64
                }
                None => s.now_us(),
            };
            buf[..8].copy_from_slice(&stamp_us.to_le_bytes());
            let key: Option<Vec<u8>> = match self.keys {
                KeyDistributor::NoKey => None,
                KeyDistributor::KeyRoundRobin => {
                    Some((n % ROUND_ROBIN_KEYS).to_string().into_bytes())
                }
                KeyDistributor::RandomNano => Some(rng.next_u64().to_le_bytes().to_vec()),
            };
            let mut rec = BaseRecord::with_opaque_to(&self.topic, stamp_us as usize).payload(&buf);
            if let Some(k) = &key {
                rec = rec.key(k);
            }
            loop {
                match producer.send(rec) {
                    Ok(()) => break,
                    Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back)) => {
                        // librdkafka's queue is full: wait for deliveries.
                        if s.stop_producers.load(Ordering::Relaxed) {
                            break 'send;
                        }
                        rec = back;
                        std::thread::sleep(Duration::from_micros(500));
                    }
                    Err((e, _)) => {
                        s.failed.fetch_add(1, Ordering::Relaxed);
                        if s.failed.load(Ordering::Relaxed) <= CONSUMER_ERRORS_PRINTED {
                            eprintln!("warning: producer {}: {e}", self.index);
                        }
                        break;
                    }
                }
            }
            n += 1;
        }
        flush(&producer, self.index);
    }
}

/// Waits up to `FLUSH_TIMEOUT` for every delivery report; what is still
/// queued then is purged, so its reports arrive as failures and are counted.
/// (The crate's own `flush` charges its whole poll interval per poll, so a
/// producer with many reports gives up long before the timeout.)
fn flush(producer: &ThreadedProducer<DeliveryCounter>, index: usize) {
    use rdkafka::producer::{Producer, PurgeConfig};
    let deadline = Instant::now() + FLUSH_TIMEOUT;
    while producer.in_flight_count() > 0 && Instant::now() < deadline {
        let _ = producer.flush(Duration::from_millis(100));
    }
    if producer.in_flight_count() > 0 {
        eprintln!(
            "warning: producer {index}: {} messages unacknowledged after {} s; purged",
            producer.in_flight_count(),
            FLUSH_TIMEOUT.as_secs()
        );
        producer.purge(PurgeConfig::default().queue().inflight());
        let _ = producer.flush(Duration::from_secs(1));
    }
}

/// One consumer thread's work.
pub struct ConsumerJob {
    pub shared: Arc<Shared>,
    pub index: usize,
    pub topic: String,
    pub group: String,
}

impl ConsumerJob {
    /// Creates the client and subscribes.
    pub fn client(&self, bootstrap: &str, w: &Workload) -> anyhow::Result<BaseConsumer> {
        let mut c = ClientConfig::new();
        c.set("bootstrap.servers", bootstrap)
            .set("group.id", &self.group)
            .set("auto.offset.reset", "earliest")
            .set("enable.auto.commit", "true")
            .set("session.timeout.ms", "10000");
        for (k, v) in &w.consumer_config {
            c.set(k, v);
        }
        let consumer: BaseConsumer = c.create().context("creating a consumer")?;
        consumer
            .subscribe(&[&self.topic])
            .context("subscribing the consumer")?;
        Ok(consumer)
    }

    /// Polls until `stop_consumers`.
    pub fn run(self, consumer: BaseConsumer) {
        let s = &*self.shared;
        let mut checked = Instant::now();
        while !s.stop_consumers.load(Ordering::Relaxed) {
            if checked.elapsed() >= ASSIGNMENT_CHECK {
                checked = Instant::now();
                let n = consumer.assignment().map(|l| l.count()).unwrap_or(0);
                s.assigned[self.index].store(n, Ordering::Relaxed);
            }
            match consumer.poll(Duration::from_millis(100)) {
                Some(Ok(m)) => {
                    let payload = m.payload().unwrap_or_default();
                    s.consumed.fetch_add(1, Ordering::Relaxed);
                    s.consumed_bytes
                        .fetch_add(payload.len() as u64, Ordering::Relaxed);
                    if s.recording.load(Ordering::Relaxed) {
                        if let Some(stamp) = payload.get(..8) {
                            let mut b = [0u8; 8];
                            b.copy_from_slice(stamp);
                            let latency = s.now_us().saturating_sub(u64::from_le_bytes(b));
                            record(&s.e2e_hist[self.index], latency);
                        }
                    }
                }
                Some(Err(e)) => {
                    let n = s.consumer_errors.fetch_add(1, Ordering::Relaxed);
                    if n < CONSUMER_ERRORS_PRINTED {
                        eprintln!("warning: consumer {}: {e}", self.index);
                    }
                }
                None => {}
            }
        }
    }
}
