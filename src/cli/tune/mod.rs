//! `sluice tune`: reads the host settings a broker cares about (CPU governor
//! and idle states, interrupt placement, packet steering, NIC rings, the data
//! disk's scheduler, merging and write cache, THP, swappiness, AIO and socket
//! limits, memlock, clocksource, ballooning), compares them with a profile,
//! and with `--apply` writes the recommended values, recording what it
//! changed so that `--revert` restores it. As `rpk redpanda tune` does for
//! Redpanda. Top layer only: nothing below `cli` imports it.
//! Docs: docs/tuning.md.

mod checks;
mod checks_cpu;
mod checks_disk;
mod checks_net;
pub mod host;
pub mod iotune;
mod iotune_engine;
mod parse;
mod profile;
mod state;

use std::path::{Path, PathBuf};

use anyhow::{bail, Result};
use clap::{ArgGroup, Args, ValueEnum};

use checks::{Check, Context, Fix};
use host::Host;
use state::{Change, State};

/// Arguments of `sluice tune`.
#[derive(Args, Debug)]
#[command(group(ArgGroup::new("mode").args(["check", "apply", "revert"])))]
pub struct TuneArgs {
    /// List every host setting with its current and recommended value; changes nothing (the default).
    #[arg(long)]
    check: bool,
    /// Write the recommended values (of the NAMEs given, else of every setting
    /// `--apply` can write), recording the previous ones in the state file.
    #[arg(long)]
    apply: bool,
    /// Restore every value the state file records, and remove it.
    #[arg(long)]
    revert: bool,
    /// Settings to apply (see `--check`); default: all.
    #[arg(value_name = "NAME", requires = "apply")]
    names: Vec<String>,
    /// Output of `--check`.
    #[arg(long, value_enum, default_value_t = Output::Text)]
    output: Output,
    /// Built-in profile giving the recommended values (tuning/profiles/).
    #[arg(long, default_value = "production",
          value_parser = ["production", "latency", "benchmark"])]
    profile: String,
    /// A profile file of your own (same format as tuning/profiles/*.toml), instead of --profile.
    #[arg(long, value_name = "FILE")]
    profile_file: Option<PathBuf>,
    /// Read and write /proc and /sys under this directory instead of / (a fake tree for tests).
    #[arg(long, default_value = "/", value_name = "DIR")]
    root: PathBuf,
    /// The broker's data dir: the disk checks look at the block device holding it
    /// (a path on this machine, not under --root; the nearest existing parent if absent).
    #[arg(long, default_value = "data", value_name = "DIR")]
    data_dir: PathBuf,
    /// Check this disk (a name under /sys/block, e.g. nvme0n1) instead of the data dir's; repeatable.
    #[arg(long = "disk", value_name = "NAME")]
    disks: Vec<String>,
    /// Where --apply records previous values and --revert reads them
    /// [default: ROOT/var/lib/sluice/tune-state.json].
    #[arg(long, value_name = "FILE")]
    state_file: Option<PathBuf>,
}

#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
enum Output {
    Text,
    Json,
}

pub fn run(args: TuneArgs) -> Result<()> {
    let host = Host::new(&args.root);
    let state_path = args
        .state_file
        .clone()
        .unwrap_or_else(|| host.path("/var/lib/sluice/tune-state.json"));
    if args.revert {
        return revert(&host, &state_path);
    }
    let profile = profile::load(&args.profile, args.profile_file.as_deref())?;
    let ctx = Context {
        host: &host,
        profile: &profile,
        data_dir: &args.data_dir,
        disks: &args.disks,
    };
    if args.apply {
        return apply(&ctx, &args.names, &state_path);
    }
    let checks = checks::all(&ctx);
    match args.output {
        Output::Json => println!(
            "{}",
            serde_json::to_string_pretty(&Report {
                profile: &profile.name,
                root: &args.root,
                data_dir: &args.data_dir,
                checks: &checks,
            })?
        ),
        Output::Text => print_text(&profile.name, &args.root, &checks),
    }
    Ok(())
}

/// What `--check --output json` prints.
#[derive(serde::Serialize)]
struct Report<'a> {
    profile: &'a str,
    root: &'a Path,
    data_dir: &'a Path,
    checks: &'a [Check],
}

/// Longest current value shown in the text table (JSON has all of it).
const CURRENT_CHARS_MAX: usize = 40;

fn print_text(profile: &str, root: &Path, checks: &[Check]) {
    println!("profile {profile}, root {}", root.display());
    let name_w = checks
        .iter()
        .map(|c| c.name.len())
        .max()
        .unwrap_or(4)
        .max(4);
    println!(
        "{:name_w$}  {:3}  {:12}  {:CURRENT_CHARS_MAX$}  RECOMMENDED",
        "NAME", "OK", "STATUS", "CURRENT"
    );
    for c in checks {
        let mut cur: String = c.current.chars().take(CURRENT_CHARS_MAX).collect();
        if cur.len() < c.current.len() {
            cur.pop();
            cur.push('…');
        }
        let status = serde_json::to_value(c.status)
            .ok()
            .and_then(|v| v.as_str().map(String::from))
            .unwrap_or_default();
        println!(
            "{:name_w$}  {:3}  {:12}  {:CURRENT_CHARS_MAX$}  {}",
            c.name,
            if c.ok { "yes" } else { "no" },
            status,
            cur,
            c.recommended
        );
    }
    println!();
    for c in checks {
        println!("{}: {}", c.name, c.why);
        if let Some(n) = &c.note {
            println!("    note: {n}");
        }
        match &c.fix {
            Fix::Write { writes } => {
                for w in writes {
                    println!("    --apply writes {} = {}", w.path, w.value.trim_end());
                }
            }
            Fix::Manual { command } => println!("    to fix: {command}"),
            Fix::None => {}
        }
    }
}

/// Writes the recommended values of the named settings (all when none are named).
fn apply(ctx: &Context, names: &[String], state_path: &Path) -> Result<()> {
    let known: Vec<&str> = profile::SETTINGS.iter().map(|s| s.name).collect();
    for n in names {
        if !known.contains(&n.as_str()) {
            bail!("no setting '{n}' (known: {})", known.join(", "));
        }
    }
    let checks: Vec<Check> = checks::all(ctx)
        .into_iter()
        .filter(|c| names.is_empty() || names.iter().any(|n| n == c.name))
        .collect();
    let mut state = State::load(state_path)?.unwrap_or_else(|| State::new(ctx.host.root()));
    if state.root != ctx.host.root() {
        bail!("{} records changes under root {}, not {}: revert those first or use another --state-file", state_path.display(), state.root.display(), ctx.host.root().display());
    }
    // Plan: read every file's current bytes, record them before touching anything.
    let mut plan: Vec<(&Check, Vec<(Change, String)>)> = Vec::new();
    for c in &checks {
        match &c.fix {
            Fix::Write { writes } => {
                let mut steps = Vec::new();
                for w in writes {
                    let before = ctx
                        .host
                        .read(&w.path)
                        .map_err(|e| anyhow::anyhow!("{}: cannot read {e}", c.name))?;
                    steps.push((Change::new(c.name, &w.path, &before, &w.value), before));
                }
                plan.push((c, steps));
            }
            Fix::Manual { command } => {
                println!("{}: not applied, needs the operator: {command}", c.name)
            }
            Fix::None if !c.ok => println!(
                "{}: not applied ({:?}{})",
                c.name,
                c.status,
                c.note.as_ref().map_or(String::new(), |n| format!(": {n}"))
            ),
            Fix::None => {}
        }
    }
    if plan.is_empty() {
        println!("nothing to apply: every selected setting is at its recommendation or needs the operator");
        return Ok(());
    }
    let recorded_before: Vec<String> = state.changes.iter().map(|c| c.path.clone()).collect();
    for (_, steps) in &plan {
        for (change, _) in steps {
            state.record(change.clone());
        }
    }
    state.save(state_path)?;
    let mut failures = Vec::new();
    let mut applied = Vec::new();
    for (c, steps) in &plan {
        let mut done: Vec<&(Change, String)> = Vec::new();
        let mut failed = None;
        for step in steps {
            match ctx.host.write(&step.0.path, &step.0.applied) {
                Ok(()) => done.push(step),
                Err(e) => {
                    failed = Some(e);
                    break;
                }
            }
        }
        match failed {
            None => applied.push(c.name),
            Some(e) => {
                // All of a setting or none of it: put back what this run wrote.
                for (change, before) in done.iter().rev() {
                    let undo = Change::new(c.name, &change.path, before, "").restore;
                    if let Err(u) = ctx.host.write(&change.path, &undo) {
                        failures.push(format!("{}: could not undo {u}", c.name));
                    }
                }
                state
                    .changes
                    .retain(|ch| ch.setting != c.name || recorded_before.contains(&ch.path));
                failures.push(format!("{}: cannot write {e}", c.name));
            }
        }
    }
    state.save(state_path)?;
    // Read back what the kernel now shows.
    let after = checks::all(ctx);
    for name in &applied {
        if let Some(c) = after.iter().find(|c| c.name == *name) {
            println!(
                "{name}: applied, now {} ({})",
                c.current,
                if c.ok { "ok" } else { "still differs" }
            );
        }
    }
    if !applied.is_empty() {
        println!(
            "previous values recorded in {}; undo with: sluice tune --revert{}",
            state_path.display(),
            revert_flags(ctx.host, state_path)
        );
    }
    if !failures.is_empty() {
        for f in &failures {
            eprintln!("{f}");
        }
        let denied = failures
            .iter()
            .any(|f| f.contains("(EACCES)") || f.contains("(EPERM)") || f.contains("(EROFS)"));
        bail!(
            "{} setting(s) not applied{}",
            failures.len(),
            if denied {
                ": not permitted (run as root, on a writable /proc and /sys)"
            } else {
                ""
            }
        );
    }
    Ok(())
}

/// The flags a `--revert` needs to find this state file.
fn revert_flags(host: &Host, state_path: &Path) -> String {
    let mut s = String::new();
    if !host.is_live() {
        s.push_str(&format!(" --root {}", host.root().display()));
    }
    if state_path != host.path("/var/lib/sluice/tune-state.json") {
        s.push_str(&format!(" --state-file {}", state_path.display()));
    }
    s
}

/// Restores every recorded value, newest change first.
fn revert(host: &Host, state_path: &Path) -> Result<()> {
    let Some(mut state) = State::load(state_path)? else {
        println!(
            "nothing to revert: no state file at {}",
            state_path.display()
        );
        return Ok(());
    };
    if state.root != host.root() {
        bail!(
            "{} records changes under root {}; run --revert with --root {}",
            state_path.display(),
            state.root.display(),
            state.root.display()
        );
    }
    let mut kept = Vec::new();
    let mut failures = Vec::new();
    for change in state.changes.iter().rev() {
        if let Ok(now) = host.read(&change.path) {
            let applied_shows = Change::new("", &change.path, &now, "").restore;
            if applied_shows.trim() != change.applied.trim() {
                println!(
                    "{}: {} changed since --apply ({} now, {} applied); restoring anyway",
                    change.setting,
                    change.path,
                    now.trim(),
                    change.applied.trim()
                );
            }
        }
        match host.write(&change.path, &change.restore) {
            Ok(()) => println!(
                "{}: restored {} = {}",
                change.setting,
                change.path,
                change.restore.trim_end()
            ),
            Err(e) => {
                failures.push(format!("{}: cannot write {e}", change.setting));
                kept.push(change.clone());
            }
        }
    }
    kept.reverse();
    state.changes = kept;
    state.save(state_path)?;
    if !failures.is_empty() {
        for f in &failures {
            eprintln!("{f}");
        }
        bail!(
            "{} value(s) not restored; they stay in {}",
            failures.len(),
            state_path.display()
        );
    }
    Ok(())
}
