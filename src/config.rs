//! Broker and topic settings: TOML file, environment, `--set key=value`, flags.

use std::path::PathBuf;

/// Arguments of `sluice start`. Precedence, lowest to highest: embedded defaults,
/// the TOML file (`--config`), environment variables `SLUICE_<KEY>` (dots as
/// underscores, upper case), `--set key=value`, then the dedicated flags.
#[derive(clap::Args, Debug, Clone, Default)]
pub struct StartArgs {
    /// TOML config file with Kafka-named keys (`"log.dirs" = ["/data"]`).
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Address to listen on for Kafka clients (default 127.0.0.1:9092).
    #[arg(long)]
    pub listen: Option<String>,
    /// Data directory (shorthand for a single `log.dirs` entry; default ./data).
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// Number of shards (one pinned thread each; default: available cores).
    #[arg(long)]
    pub smp: Option<usize>,
    /// Any setting by its Kafka name, e.g. `--set log.segment.bytes=1048576`.
    #[arg(long = "set", value_name = "KEY=VALUE")]
    pub set: Vec<String>,
}
