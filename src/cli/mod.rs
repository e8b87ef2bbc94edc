//! The `sluice` command line: `start` runs the broker; `topic`, `group`,
//! `produce` and `consume` are Kafka clients, `log verify` checks a stopped broker's data dir, (see `client`) that talk to any Kafka-protocol
//! broker, Sluice or not. Every command and option is documented in docs/cli.md.

mod client;
mod cluster;
mod consume;
mod format;
mod group;
mod log;
mod partitioner;
mod produce;
pub mod records;
mod topic;
mod tune;
mod txn;

use std::io::IsTerminal;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};

/// Sluice: a Kafka-wire-compatible message broker.
#[derive(Parser, Debug)]
#[command(name = "sluice", version, about, propagate_version = true)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run the broker until SIGINT/SIGTERM.
    Start(crate::config::StartArgs),
    /// Create, list, describe, delete and alter topics.
    Topic(topic::TopicArgs),
    /// The cluster: its id, brokers and metadata quorum (`info`, `brokers`, `quorum`).
    Cluster(cluster::ClusterArgs),
    /// List, describe and delete consumer groups; reset or delete their offsets.
    Group(group::GroupArgs),
    /// List and describe transactions; show a partition's producers.
    Txn(txn::TxnArgs),
    /// Write lines from stdin (or a file) to a topic, one record per line.
    Produce(produce::ProduceArgs),
    /// Print records of a topic, one per line.
    Consume(consume::ConsumeArgs),
    /// Offline tools for a stopped broker's data dir (`log verify DIR`).
    Log(log::LogArgs),
    /// Benchmark any Kafka-protocol broker with librdkafka (run, compare, sweep).
    Bench(crate::bench::BenchArgs),
    /// Check host settings (CPU, IRQs, disk, memory, network) against a profile; apply or revert them.
    Tune(tune::TuneArgs),
    /// Measure the disk under a data dir (sequential, random-read IOPS by queue depth, fdatasync).
    Iotune(tune::iotune::IotuneArgs),
}

/// Connection options shared by every client command.
#[derive(Args, Debug, Clone)]
pub struct ClientArgs {
    /// Broker to bootstrap from.
    #[arg(
        long,
        global = true,
        env = "SLUICE_BOOTSTRAP",
        default_value = "127.0.0.1:9092",
        value_name = "HOST:PORT"
    )]
    pub bootstrap: String,
    /// Timeout for connecting and for each request, in milliseconds.
    #[arg(long, global = true, default_value_t = 10_000,
          value_parser = clap::value_parser!(u64).range(1..=3_600_000))]
    pub timeout_ms: u64,
}

impl ClientArgs {
    /// The request timeout as a `Duration`.
    pub fn timeout(&self) -> Duration {
        Duration::from_millis(self.timeout_ms)
    }

    /// The timeout in milliseconds as Kafka request fields carry it.
    pub fn timeout_ms_i32(&self) -> i32 {
        i32::try_from(self.timeout_ms).unwrap_or(i32::MAX)
    }
}

/// Parses the command line, runs the command, and maps errors to exit status 1.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    init_tracing();
    let result = match cli.command {
        Command::Start(args) => crate::server::run_start(args),
        Command::Topic(args) => topic::run(args),
        Command::Cluster(args) => cluster::run(args),
        Command::Group(args) => group::run(args),
        Command::Txn(args) => txn::run(args),
        Command::Produce(args) => produce::run(args),
        Command::Consume(args) => consume::run(args),
        Command::Log(args) => log::run(args),
        Command::Bench(args) => crate::bench::main(args),
        Command::Tune(args) => tune::run(args),
        Command::Iotune(args) => tune::iotune::run(args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Logs go to stderr, filtered by `RUST_LOG` (default `info`), so stdout stays data.
fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| {
        tracing_subscriber::EnvFilter::new(
            "info,openraft=warn,openraft::core::heartbeat=error,openraft::replication=error",
        )
    });
    // A second initialisation (tests) is harmless, so its error is ignored.
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .try_init();
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_definition_is_valid() {
        Cli::command().debug_assert();
    }

    #[test]
    fn global_client_options_parse_after_subcommand() {
        let cli = Cli::try_parse_from([
            "sluice",
            "topic",
            "list",
            "--bootstrap",
            "10.0.0.1:9093",
            "--timeout-ms",
            "500",
        ])
        .expect("parses");
        let Command::Topic(args) = cli.command else {
            panic!("expected topic command");
        };
        assert_eq!(args.client.bootstrap, "10.0.0.1:9093");
        assert_eq!(args.client.timeout_ms, 500);
    }

    #[test]
    fn reset_offsets_takes_exactly_one_target() {
        let base = ["sluice", "group", "reset-offsets", "g", "--topic", "t"];
        let parse = |extra: &[&str]| {
            let mut argv = base.to_vec();
            argv.extend_from_slice(extra);
            Cli::try_parse_from(argv)
        };
        assert!(
            parse(&["--shift-by", "-5"]).is_ok(),
            "negative shift parses"
        );
        assert!(parse(&["--to-earliest", "--execute"]).is_ok());
        assert!(parse(&["--to-datetime", "2024-05-01T12:00:00Z"]).is_ok());
        assert!(parse(&[]).is_err(), "a target is required");
        assert!(
            parse(&["--to-earliest", "--to-latest"]).is_err(),
            "one target only"
        );
        assert!(parse(&["--to-datetime", "yesterday"]).is_err());
    }

    #[test]
    fn start_takes_broker_flags() {
        let cli =
            Cli::try_parse_from(["sluice", "start", "--listen", "0.0.0.0:9092"]).expect("parses");
        let Command::Start(args) = cli.command else {
            panic!("expected start command");
        };
        assert_eq!(args.listen.as_deref(), Some("0.0.0.0:9092"));
    }
}
