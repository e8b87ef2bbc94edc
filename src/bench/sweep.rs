//! `sluice bench sweep`: one experiment file (`tuning/*.toml`) names a base
//! workload and variants of it (workload overrides and broker `--set`
//! settings). Each variant runs against a fresh `sluice start` on its own
//! data dir and free port (or against `--bootstrap`, when no variant changes a
//! broker setting), and the sweep writes one table, one plot and one JSON.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use clap::Args;
use serde::Deserialize;

use super::run::{self, RunOptions};
use super::stats::RunResult;
use super::workload::Workload;
use super::{plot, report, write, write_run};

/// How long a started broker may take to answer.
const BROKER_READY_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a broker may take to stop after SIGTERM before it is killed.
const BROKER_STOP_TIMEOUT: Duration = Duration::from_secs(15);
/// Most variants in one experiment.
const MAX_VARIANTS: usize = 64;

#[derive(Args, Debug)]
pub struct SweepArgs {
    /// Experiment file (TOML; see tuning/README.md).
    pub experiment: PathBuf,
    /// Run every variant against this broker instead of starting one per
    /// variant (only for experiments that change no broker setting).
    #[arg(long, value_name = "HOST:PORT")]
    pub bootstrap: Option<String>,
    /// Folder for the results (default: bench-results/NAME-UNIXTIME).
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,
    /// Override a workload field in every variant (repeatable).
    #[arg(long = "set", value_name = "FIELD=VALUE")]
    pub set: Vec<String>,
    /// Parent folder of the started brokers' data dirs (default: the results
    /// folder; use a real disk: O_DIRECT does not work on tmpfs).
    #[arg(long, value_name = "DIR")]
    pub data_parent: Option<PathBuf>,
}

/// An experiment file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Experiment {
    pub name: String,
    /// The base workload file, relative to the experiment file.
    pub workload: String,
    /// Workload overrides for every variant (`field=value`).
    #[serde(default)]
    pub set: Vec<String>,
    /// Broker settings for every variant (`sluice start --set key=value`).
    #[serde(default)]
    pub broker: BTreeMap<String, String>,
    #[serde(rename = "variant")]
    pub variants: Vec<Variant>,
}

/// One variant: a name, workload overrides and broker settings on top of the base.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Variant {
    pub name: String,
    #[serde(default)]
    pub set: Vec<String>,
    #[serde(default)]
    pub broker: BTreeMap<String, String>,
}

impl Experiment {
    pub fn parse(text: &str) -> anyhow::Result<Experiment> {
        let e: Experiment = toml::from_str(text)?;
        if e.variants.is_empty() || e.variants.len() > MAX_VARIANTS {
            bail!("an experiment needs 1..={MAX_VARIANTS} [[variant]] tables");
        }
        let mut names: Vec<&str> = e.variants.iter().map(|v| v.name.as_str()).collect();
        names.sort_unstable();
        if names.windows(2).any(|w| w[0] == w[1]) {
            bail!("variant names must be unique");
        }
        Ok(e)
    }

    /// The workload of one variant: base file, then experiment `set`, the
    /// variant's `set`, and the command line's `--set`.
    pub fn workload_for(
        &self,
        base: &Workload,
        v: &Variant,
        cli: &[String],
    ) -> anyhow::Result<Workload> {
        let mut w = base.clone();
        let all: Vec<String> = self.set.iter().chain(&v.set).chain(cli).cloned().collect();
        w.apply_overrides(&all)
            .with_context(|| format!("variant {:?}", v.name))?;
        Ok(w)
    }

    /// The broker settings of one variant (the variant's win).
    pub fn broker_for(&self, v: &Variant) -> BTreeMap<String, String> {
        let mut b = self.broker.clone();
        b.extend(v.broker.clone());
        b
    }
}

/// Runs an experiment.
pub fn run(a: SweepArgs) -> anyhow::Result<()> {
    let text = std::fs::read_to_string(&a.experiment)
        .with_context(|| format!("reading {}", a.experiment.display()))?;
    let exp = Experiment::parse(&text).with_context(|| a.experiment.display().to_string())?;
    let base_path = a
        .experiment
        .parent()
        .unwrap_or(Path::new("."))
        .join(&exp.workload);
    let base = Workload::load(&base_path)?;
    // Check every variant before the first one runs.
    let mut plan = Vec::new();
    for v in &exp.variants {
        let w = exp.workload_for(&base, v, &a.set)?;
        let broker = exp.broker_for(v);
        if a.bootstrap.is_some() && !broker.is_empty() {
            bail!(
                "variant {:?} sets broker settings; run without --bootstrap so the sweep starts \
                 its own brokers",
                v.name
            );
        }
        plan.push((v.name.clone(), w, broker));
    }
    let out = a.out.unwrap_or_else(|| super::default_out_dir(&exp.name));
    std::fs::create_dir_all(&out).with_context(|| format!("creating {}", out.display()))?;
    let data_parent = a.data_parent.unwrap_or_else(|| out.clone());

    let mut results: Vec<RunResult> = Vec::new();
    for (i, (name, w, broker)) in plan.into_iter().enumerate() {
        eprintln!("== variant {}/{}: {name}", i + 1, exp.variants.len());
        let dir = out.join(format!("{i:02}-{}", file_name(&name)));
        std::fs::create_dir_all(&dir)?;
        let result = match &a.bootstrap {
            Some(b) => run::run(&w, &options(b.clone(), &name))?,
            None => {
                let data = data_parent.join(format!("data-{i:02}"));
                let broker = BrokerProcess::start(&broker, &data, &dir.join("broker.log"))?;
                let r = run::run(&w, &options(broker.bootstrap(), &name));
                broker.stop();
                let _ = std::fs::remove_dir_all(&data);
                r?
            }
        };
        write_run(&dir, &result)?;
        results.push(result);
    }
    let md = format!("## {}\n\n{}", exp.name, report::compare_markdown(&results));
    write(&out.join("sweep.md"), &md)?;
    write(
        &out.join("sweep.json"),
        &serde_json::to_string_pretty(&results)?,
    )?;
    let refs: Vec<&RunResult> = results.iter().collect();
    write(
        &out.join("latency.svg"),
        &plot::latency_svg(
            &format!("{}: latency by percentile", exp.name),
            &super::series(&refs),
        ),
    )?;
    println!("{md}");
    eprintln!("results in {}", out.display());
    Ok(())
}

fn options(bootstrap: String, label: &str) -> RunOptions {
    RunOptions {
        bootstrap,
        label: label.to_string(),
        keep_topics: false,
    }
}

fn file_name(s: &str) -> String {
    s.chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect()
}

/// A `sluice start` child on 127.0.0.1 and a free port, stopped by PID.
struct BrokerProcess {
    child: Child,
    port: u16,
}

impl BrokerProcess {
    fn start(
        settings: &BTreeMap<String, String>,
        data_dir: &Path,
        log: &Path,
    ) -> anyhow::Result<BrokerProcess> {
        let exe = std::env::current_exe().context("finding the sluice binary")?;
        let port = free_port()?;
        std::fs::create_dir_all(data_dir)?;
        let log_file =
            std::fs::File::create(log).with_context(|| format!("creating {}", log.display()))?;
        let mut cmd = Command::new(exe);
        cmd.arg("start")
            .arg("--listen")
            .arg(format!("127.0.0.1:{port}"))
            .arg("--data-dir")
            .arg(data_dir)
            // No admin HTTP listener unless the settings ask for one: brokers a sweep
            // starts (several at once for a cluster) must not race for its default port.
            .arg("--set")
            .arg("admin.listeners=");
        for (k, v) in settings {
            cmd.arg("--set").arg(format!("{k}={v}"));
        }
        let child = cmd
            .stdin(Stdio::null())
            .stdout(log_file.try_clone()?)
            .stderr(log_file)
            .spawn()
            .context("starting sluice start")?;
        let mut b = BrokerProcess { child, port };
        let deadline = Instant::now() + BROKER_READY_TIMEOUT;
        loop {
            if let Ok(Some(status)) = b.child.try_wait() {
                bail!("the broker exited with {status}; see {}", log.display());
            }
            if answers_api_versions(port) {
                return Ok(b);
            }
            if Instant::now() >= deadline {
                b.stop();
                bail!(
                    "the broker did not answer within {BROKER_READY_TIMEOUT:?}; see {}",
                    log.display()
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn bootstrap(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// SIGTERM, then SIGKILL after `BROKER_STOP_TIMEOUT`.
    fn stop(mut self) {
        use nix::sys::signal::{kill, Signal};
        use nix::unistd::Pid;
        if let Ok(pid) = i32::try_from(self.child.id()) {
            let _ = kill(Pid::from_raw(pid), Signal::SIGTERM);
        }
        let deadline = Instant::now() + BROKER_STOP_TIMEOUT;
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> anyhow::Result<u16> {
    let l = TcpListener::bind("127.0.0.1:0").context("finding a free port")?;
    Ok(l.local_addr()?.port())
}

/// True once a broker on the port answers an ApiVersions v0 request.
fn answers_api_versions(port: u16) -> bool {
    // length 10: api key 18, version 0, correlation id 1, null client id.
    const PROBE: [u8; 14] = [0, 0, 0, 10, 0, 18, 0, 0, 0, 0, 0, 1, 0xFF, 0xFF];
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let Ok(mut s) = TcpStream::connect_timeout(&addr, Duration::from_millis(500)) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_millis(500)));
    let mut len = [0u8; 4];
    s.write_all(&PROBE).is_ok() && s.read_exact(&mut len).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    const EXP: &str = r#"
        name = "io"
        workload = "../workloads/smoke.toml"
        set = ["testDurationSeconds=2"]
        broker = { smp = "1", io_mode = "direct" }
        [[variant]]
        name = "direct"
        [[variant]]
        name = "buffered"
        set = ["batchSize=16384"]
        broker = { io_mode = "buffered" }
    "#;

    #[test]
    fn variants_layer_over_the_base() {
        let e = Experiment::parse(EXP).expect("parses");
        let base = Workload::default();
        let w = e
            .workload_for(&base, &e.variants[1], &["lingerMs=7".into()])
            .expect("applies");
        assert_eq!(w.test_duration_seconds, 2.0);
        assert_eq!(w.batch_size, 16384);
        assert_eq!(w.linger_ms, 7.0);
        let b = e.broker_for(&e.variants[1]);
        assert_eq!(b["io_mode"], "buffered");
        assert_eq!(b["smp"], "1");
        assert_eq!(e.broker_for(&e.variants[0])["io_mode"], "direct");
    }

    #[test]
    fn refuses_duplicate_or_missing_variants() {
        assert!(Experiment::parse("name = \"x\"\nworkload = \"w\"\nvariant = []").is_err());
        let dup =
            "name = \"x\"\nworkload = \"w\"\n[[variant]]\nname = \"a\"\n[[variant]]\nname = \"a\"";
        assert!(Experiment::parse(dup).is_err());
    }

    #[test]
    fn shipped_experiments_parse_and_apply() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR"));
        let mut files: Vec<_> = std::fs::read_dir(root.join("tuning"))
            .expect("tuning/")
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "toml"))
            .collect();
        files.sort();
        assert!(files.len() >= 5, "{files:?}");
        for path in files {
            let f = path.display().to_string();
            let text = std::fs::read_to_string(&path).expect("readable");
            let e = Experiment::parse(&text).expect(&f);
            let base = Workload::load(&path.parent().expect("dir").join(&e.workload)).expect(&f);
            for v in &e.variants {
                e.workload_for(&base, v, &[]).expect(&f);
                // Every broker setting is one `sluice start` accepts.
                let args = crate::config::StartArgs {
                    set: e
                        .broker_for(v)
                        .iter()
                        .map(|(k, v)| format!("{k}={v}"))
                        .collect(),
                    ..Default::default()
                };
                if let Err(err) = crate::config::BrokerConfig::load_from(&args, &[]) {
                    panic!("{f}, variant {}: {err:#}", v.name);
                }
            }
        }
    }
}
