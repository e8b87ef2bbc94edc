//! Sluice: a Kafka-wire-compatible broker, shard-per-core on io_uring (glommio).
//!
//! Module map (see ARCHITECTURE.md for the flow of a produce and a fetch):
//! - `runtime`: shard start-up, placement, cross-shard calls, timers.
//! - `config`: broker and topic settings (TOML, environment, `--set`).
//! - `protocol`: request framing and the ApiVersions table.
//! - `server`: listeners, connections, one handler per Kafka API.
//! - `cluster`: the metadata image (topics, partitions, owners) and its single writer.
//! - `group`: consumer group coordinator (classic protocol) and committed offsets.
//! - `txn`: transaction coordinator core (KIP-98): state machine, `__transaction_state` records, markers.
//! - `fuzzing` (only under `cargo fuzz` and in tests): the entry points of the `fuzz/` targets.
//! - `storage`: partition logs: segments, indexes, batch validation, recovery, retention.
//! - `cli`: the `sluice` command line (start, topic admin, produce, consume).
//! - `bench`: `sluice bench`, the load generator (librdkafka); not used by the broker.
pub mod bench;
pub mod cli;
pub mod cluster;
pub mod config;
#[cfg(any(fuzzing, test))]
pub mod fuzzing;
pub mod group;
pub mod protocol;
pub mod runtime;
pub mod server;
pub mod storage;
pub mod txn;
