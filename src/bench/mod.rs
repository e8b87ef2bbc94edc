//! `sluice bench`: the load generator and its reports. It drives any
//! Kafka-protocol broker through librdkafka (the `rdkafka` crate), so Sluice,
//! Apache Kafka and Redpanda are measured with the same client. Nothing in the
//! broker uses this module. How to run it: docs/bench.md.
//!
//! - `workload`: the workload file (OMB field names) and `--set` overrides.
//! - `schedule`: fixed-rate send times (coordinated-omission correction).
//! - `clients`: topic admin, the producer and consumer loops.
//! - `run`: one run's phases and the progress line.
//! - `stats`, `report`, `plot`: HdrHistogram summaries, Markdown, SVG.
//! - `sweep`: an experiment file's variants, each against a fresh broker.

pub mod clients;
pub mod plot;
pub mod report;
pub mod run;
pub mod schedule;
pub mod stats;
pub mod sweep;
pub mod workload;

use std::path::{Path, PathBuf};

use anyhow::Context;
use clap::{Args, Subcommand};

use plot::Series;
use stats::RunResult;
use workload::Workload;

/// `sluice bench` options.
#[derive(Args, Debug)]
pub struct BenchArgs {
    #[command(subcommand)]
    pub command: BenchCommand,
}

#[derive(Subcommand, Debug)]
pub enum BenchCommand {
    /// Run one workload file against a broker; writes result.json, result.md, latency.svg.
    Run(RunArgs),
    /// Print results side by side (Markdown), with each one's ratio to the first.
    Compare(CompareArgs),
    /// Run every variant of an experiment file (tuning/*.toml); one table and plot.
    Sweep(sweep::SweepArgs),
}

#[derive(Args, Debug)]
pub struct RunArgs {
    /// Workload file (TOML; see workloads/ and docs/bench.md).
    pub workload: PathBuf,
    /// Broker to bootstrap from.
    #[arg(
        long,
        env = "SLUICE_BOOTSTRAP",
        default_value = "127.0.0.1:9092",
        value_name = "HOST:PORT"
    )]
    pub bootstrap: String,
    /// Folder for the results (default: bench-results/NAME-UNIXTIME).
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,
    /// Override a workload field, e.g. --set producerRate=5000 (repeatable).
    #[arg(long = "set", value_name = "FIELD=VALUE")]
    pub set: Vec<String>,
    /// Label in tables and plots (default: the workload's name).
    #[arg(long)]
    pub label: Option<String>,
    /// Keep the run's topics instead of deleting them at the end.
    #[arg(long)]
    pub keep_topics: bool,
}

#[derive(Args, Debug)]
pub struct CompareArgs {
    /// result.json files (or folders holding one), the first is the baseline.
    #[arg(required = true, num_args = 2..)]
    pub results: Vec<PathBuf>,
    /// Also write a plot of every run's latency distributions here.
    #[arg(long, value_name = "FILE.svg")]
    pub plot: Option<PathBuf>,
}

/// Entry point of `sluice bench`.
pub fn main(args: BenchArgs) -> anyhow::Result<()> {
    match args.command {
        BenchCommand::Run(a) => run_command(a),
        BenchCommand::Compare(a) => compare_command(a),
        BenchCommand::Sweep(a) => sweep::run(a),
    }
}

fn run_command(a: RunArgs) -> anyhow::Result<()> {
    let mut w = Workload::load(&a.workload)?;
    w.apply_overrides(&a.set)?;
    let out = a.out.unwrap_or_else(|| default_out_dir(&w.name));
    let opts = run::RunOptions {
        bootstrap: a.bootstrap,
        label: a.label.unwrap_or_else(|| w.name.clone()),
        keep_topics: a.keep_topics,
    };
    let result = run::run(&w, &opts)?;
    let md = write_run(&out, &result)?;
    println!("{md}");
    eprintln!("results in {}", out.display());
    Ok(())
}

/// `bench-results/NAME-UNIXTIME`.
pub fn default_out_dir(name: &str) -> PathBuf {
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    PathBuf::from("bench-results").join(format!("{name}-{t}"))
}

/// Writes `result.json`, `result.md` and `latency.svg` into `dir`; returns the Markdown.
pub fn write_run(dir: &Path, r: &RunResult) -> anyhow::Result<String> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let json = serde_json::to_string_pretty(r)?;
    write(&dir.join("result.json"), &json)?;
    let md = report::run_markdown(r);
    write(&dir.join("result.md"), &md)?;
    let svg = plot::latency_svg(
        &format!("{}: latency by percentile", r.label),
        &series(&[r]),
    );
    write(&dir.join("latency.svg"), &svg)?;
    Ok(md)
}

/// Plot lines of runs: publish and end-to-end of each (empty ones left out).
pub fn series(runs: &[&RunResult]) -> Vec<Series> {
    let mut out = Vec::new();
    for r in runs {
        for (kind, l) in [
            ("publish", &r.publish_latency),
            ("end-to-end", &r.end_to_end_latency),
        ] {
            if l.count > 0 {
                let name = if runs.len() == 1 {
                    kind.to_string()
                } else {
                    format!("{} {kind}", r.label)
                };
                out.push(Series {
                    name,
                    points: l.distribution.clone(),
                });
            }
        }
    }
    out
}

pub fn write(path: &Path, text: &str) -> anyhow::Result<()> {
    std::fs::write(path, text).with_context(|| format!("writing {}", path.display()))
}

/// Reads a result.json (or DIR/result.json).
pub fn read_result(path: &Path) -> anyhow::Result<RunResult> {
    let file = if path.is_dir() {
        path.join("result.json")
    } else {
        path.to_path_buf()
    };
    let text =
        std::fs::read_to_string(&file).with_context(|| format!("reading {}", file.display()))?;
    serde_json::from_str(&text).with_context(|| format!("parsing {}", file.display()))
}

fn compare_command(a: CompareArgs) -> anyhow::Result<()> {
    let mut runs = Vec::new();
    for p in &a.results {
        let mut r = read_result(p)?;
        if runs.iter().any(|x: &RunResult| x.label == r.label) {
            // Same workload twice: tell the columns apart by file.
            r.label = format!("{} ({})", r.label, p.display());
        }
        runs.push(r);
    }
    println!("{}", report::compare_markdown(&runs));
    if let Some(plot) = &a.plot {
        let refs: Vec<&RunResult> = runs.iter().collect();
        write(
            plot,
            &plot::latency_svg("latency by percentile", &series(&refs)),
        )?;
    }
    Ok(())
}
