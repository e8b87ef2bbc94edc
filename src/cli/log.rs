//! `sluice log verify DIR`: offline check of a broker's data dir (the broker must be stopped).
//! Takes the dir's `.lock` for the length of the check (so a running broker is detected and
//! none starts meanwhile), checks the metadata image, then every partition directory with
//! `storage::verify`. Prints each problem with file and position and a summary; exits 0 when no
//! error was found (warnings: states that recovery repairs), 1 otherwise.

use std::fs::{File, OpenOptions};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use clap::{Args, Subcommand};

use crate::cluster::store::{self, LOCK_FILE, METADATA_FILE};
use crate::storage::verify::{verify_partition, Report};

/// Arguments of `sluice log`.
#[derive(Args, Debug)]
pub struct LogArgs {
    #[command(subcommand)]
    command: LogCommand,
}

#[derive(Subcommand, Debug)]
enum LogCommand {
    /// Check every segment, index, snapshot and checkpoint of a stopped broker's data dir.
    Verify {
        /// The data dir (one entry of `log.dirs`).
        dir: PathBuf,
        /// Print only problems and the summary (not one line per partition).
        #[arg(long)]
        quiet: bool,
    },
}

pub fn run(args: LogArgs) -> Result<()> {
    match args.command {
        LogCommand::Verify { dir, quiet } => {
            let report = verify_dir(&dir, quiet)?;
            println!(
                "partitions {}, segments {}, batches {}, records {}, errors {}, warnings {}",
                report.partitions,
                report.segments,
                report.batches,
                report.records,
                report.errors(),
                report.warnings()
            );
            if report.errors() > 0 {
                bail!("{} problem(s) found in {}", report.errors(), dir.display());
            }
            Ok(())
        }
    }
}

/// Holds the data dir's lock while the check runs.
fn lock(dir: &Path) -> Result<Option<nix::fcntl::Flock<File>>> {
    let path = dir.join(LOCK_FILE);
    let f = match OpenOptions::new().read(true).open(&path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e).with_context(|| format!("opening {}", path.display())),
    };
    match nix::fcntl::Flock::lock(f, nix::fcntl::FlockArg::LockExclusiveNonblock) {
        Ok(l) => Ok(Some(l)),
        Err(_) => {
            let pid = std::fs::read_to_string(&path).unwrap_or_default();
            bail!(
                "data dir {} is in use by a running broker (pid {}); stop it before verifying",
                dir.display(),
                pid.trim()
            )
        }
    }
}

/// `topic-N` -> Some((topic, N)).
fn partition_of(name: &str) -> Option<(&str, i32)> {
    let (t, p) = name.rsplit_once('-')?;
    if t.is_empty() || p.is_empty() || !p.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some((t, p.parse().ok()?))
}

/// The metadata quorum's log file: its frames and CRCs. A bad last frame is what a crash
/// mid-append leaves (the broker cuts it at start-up): a warning; anything else an error.
fn verify_metadata_log(dir: &Path, report: &mut Report) {
    use crate::cluster::quorum::{check_log_bytes, LogDecodeError};
    let path = dir.join("log");
    match std::fs::read(&path) {
        Ok(bytes) => match check_log_bytes(&bytes) {
            Ok(_) => {}
            Err(e @ LogDecodeError::Tail { .. }) => {
                report.warn(&path, None, format!("torn tail, cut at start-up: {e}"))
            }
            Err(e) => report.error(&path, None, e.to_string()),
        },
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => report.error(&path, None, format!("cannot read: {e}")),
    }
}

/// Checks the whole data dir. Partitions are checked against the metadata image only
/// where the dir still holds a pre-quorum JSON image; the quorum's own log is checked for
/// framing and checksums, not replayed.
pub fn verify_dir(dir: &Path, quiet: bool) -> Result<Report> {
    if !dir.is_dir() {
        bail!("{} is not a directory", dir.display());
    }
    let _lock = lock(dir)?;
    let mut report = Report::default();
    let meta_path = dir.join(METADATA_FILE);
    let image = match store::load(dir) {
        Ok(img) => img,
        Err(e) => {
            report.error(&meta_path, None, format!("{e:#}"));
            None
        }
    };
    let mut found = Vec::new();
    let mut names: Vec<_> = std::fs::read_dir(dir)
        .with_context(|| format!("listing {}", dir.display()))?
        .flatten()
        .filter(|e| e.path().is_dir())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    for name in names {
        let path = dir.join(&name);
        if name == crate::cluster::lifecycle::METADATA_LOG_DIR {
            verify_metadata_log(&path, &mut report);
            if !quiet {
                println!("{name}: metadata log checked");
            }
            continue;
        }
        let Some((topic, index)) = partition_of(&name) else {
            if !name.ends_with("-stray") {
                report.warn(&path, None, "not a partition directory; skipped");
            }
            continue;
        };
        if let Some(img) = &image {
            if img.partition(topic, index).is_none() {
                report.warn(
                    &path,
                    None,
                    "partition unknown to the metadata image (moved aside as stray on start)",
                );
            }
        }
        let before = report.problems.len();
        verify_partition(&path, &mut report);
        if !quiet {
            let errors = report.problems[before..]
                .iter()
                .filter(|p| !p.warning)
                .count();
            println!("{name}: {}", if errors == 0 { "ok" } else { "PROBLEMS" });
        }
        found.push((topic.to_string(), index));
    }
    if let Some(img) = &image {
        // This dir holds the image, so it is the first of `log.dirs` (index 0).
        for t in img.topics.values() {
            for p in t.partitions.iter().filter(|p| p.log_dir == 0) {
                if !found.iter().any(|(n, i)| *n == t.name && *i == p.index) {
                    report.warn(
                        &dir.join(format!("{}-{}", t.name, p.index)),
                        None,
                        "partition of the metadata image has no directory (created on open)",
                    );
                }
            }
        }
    }
    for p in &report.problems {
        println!("{p}");
    }
    Ok(report)
}
