//! Listeners, connections and one handler per Kafka API.

/// Runs the broker until SIGINT/SIGTERM.
pub fn run_start(args: crate::config::StartArgs) -> anyhow::Result<()> {
    anyhow::bail!("broker not wired yet: {args:?}")
}
