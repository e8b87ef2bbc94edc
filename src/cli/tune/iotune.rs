//! `sluice iotune DIR`: measures the device under a data dir as `rpk iotune`
//! does for Redpanda, with the same tests as the `ceilings` tool
//! (BENCHMARKS.md): O_DIRECT sequential write and read (1 MiB blocks, queue
//! depth 16), random 4 KiB reads at queue depths 1 to 64, and fdatasync
//! latency after a 4 KiB write. Writes the numbers to a properties file.
//! The whole run is bounded by `--duration`; the scratch file is removed.
//! Docs: docs/tuning.md.

use std::fs::{File, OpenOptions};
use std::io::Write as _;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use clap::Args;

use super::host::Host;
use super::iotune_engine::{xorshift, Buffers, Engine, Moved, Op, ALIGN};

/// Arguments of `sluice iotune`.
#[derive(Args, Debug)]
pub struct IotuneArgs {
    /// A directory on the device to measure (the broker's data dir).
    dir: PathBuf,
    /// Seconds the whole measurement may take.
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u64).range(2..=3600))]
    duration: u64,
    /// Properties file to write (key=value lines).
    #[arg(long, default_value = "iotune.properties", value_name = "FILE")]
    output: PathBuf,
}

/// Largest scratch file, and the share of the free space it may take.
const SCRATCH_BYTES_MAX: u64 = 1 << 30;
const SCRATCH_FREE_FRACTION: u64 = 10;
/// Smallest scratch file worth measuring on.
const SCRATCH_BYTES_MIN: u64 = 16 << 20;
/// Sequential tests: block size and queue depth (as the ceilings tool's fio runs).
const SEQ_BLOCK_BYTES: usize = 1 << 20;
const SEQ_DEPTH: usize = 16;
/// Random reads: block size and the queue depths measured.
const RAND_BLOCK_BYTES: usize = 4096;
const RAND_DEPTHS: [usize; 7] = [1, 2, 4, 8, 16, 32, 64];
/// The saturation depth: the smallest whose IOPS reach this share (percent) of the best.
const SATURATION_PERCENT: u64 = 90;
/// Most fdatasync samples kept (the histogram is fixed-size anyway).
const SYNC_OPS_MAX: u64 = 1_000_000;

/// Removes the scratch file however the run ends.
struct Scratch(PathBuf);

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

pub fn run(args: IotuneArgs) -> Result<()> {
    let meta = std::fs::metadata(&args.dir).with_context(|| format!("{}", args.dir.display()))?;
    if !meta.is_dir() {
        bail!("{}: not a directory", args.dir.display());
    }
    let budget = Duration::from_secs(args.duration);
    let started = Instant::now();
    let vfs = nix::sys::statvfs::statvfs(&args.dir)
        .with_context(|| format!("statvfs {}", args.dir.display()))?;
    let free = vfs.blocks_available() as u64 * vfs.fragment_size() as u64;
    let size = (free / SCRATCH_FREE_FRACTION).min(SCRATCH_BYTES_MAX) / SEQ_BLOCK_BYTES as u64
        * SEQ_BLOCK_BYTES as u64;
    if size < SCRATCH_BYTES_MIN {
        bail!(
            "{}: {} MiB free; iotune needs {} MiB for its scratch file",
            args.dir.display(),
            free >> 20,
            (SCRATCH_BYTES_MIN * SCRATCH_FREE_FRACTION) >> 20
        );
    }
    let path = args
        .dir
        .join(format!(".sluice-iotune-{}.tmp", std::process::id()));
    let mut notes = Vec::new();
    let (file, direct) = open_scratch(&path, &mut notes)?;
    let _scratch = Scratch(path.clone());
    let (mut engine, why) = Engine::new();
    notes.extend(why);
    let device = device_of(&args.dir);
    if device.starts_with("unknown (0:") {
        notes.push("no block device under this dir (tmpfs or similar): the figures measure memory, not a disk".into());
    }

    // Time shares of the budget: write 25 %, read 20 %, random reads 35 %, fdatasync 20 %.
    let share = |pct: u32| budget * pct / 100;

    // Sequential write, wrapping over the scratch file; the final fdatasync is part of it.
    let blocks = size / SEQ_BLOCK_BYTES as u64;
    let mut bufs = Buffers::new(SEQ_DEPTH, SEQ_BLOCK_BYTES);
    let mut i = 0u64;
    let t0 = Instant::now();
    let mut wrote = engine.run(
        &file,
        Op::Write,
        SEQ_DEPTH,
        &mut bufs,
        t0 + share(25),
        || {
            let off = (i % blocks) * SEQ_BLOCK_BYTES as u64;
            i += 1;
            off
        },
    )?;
    file.sync_data()
        .context("fdatasync after the sequential write")?;
    wrote.elapsed = t0.elapsed();
    // Only what was written is read back (a hole reads as zeroes without touching the device).
    let extent_blocks = wrote.ops.min(blocks).max(1);

    let mut i = 0u64;
    let read = engine.run(
        &file,
        Op::Read,
        SEQ_DEPTH,
        &mut bufs,
        Instant::now() + share(20),
        || {
            let off = (i % extent_blocks) * SEQ_BLOCK_BYTES as u64;
            i += 1;
            off
        },
    )?;

    let pages = extent_blocks * (SEQ_BLOCK_BYTES / RAND_BLOCK_BYTES) as u64;
    let mut seed = 0x2545_f491_4f6c_dd1du64;
    let mut rand = Vec::new();
    let step = share(35) / RAND_DEPTHS.len() as u32;
    for depth in RAND_DEPTHS {
        if matches!(engine, Engine::Sync) && depth > 1 {
            break;
        }
        let mut bufs = Buffers::new(depth, RAND_BLOCK_BYTES);
        let moved = engine.run(
            &file,
            Op::Read,
            depth,
            &mut bufs,
            Instant::now() + step,
            || {
                seed = xorshift(seed);
                (seed % pages) * RAND_BLOCK_BYTES as u64
            },
        )?;
        rand.push((depth, moved.per_second(moved.ops)));
    }
    drop(file);

    let sync_until = (started + budget).max(Instant::now() + share(5));
    let sync = fdatasync_latency(&path, sync_until)?;
    if !direct {
        notes.push(
            "reads went through the page cache: the read figures measure memory, not the device"
                .into(),
        );
    }

    let props = Properties {
        dir: &args.dir,
        device,
        direct,
        engine: engine.name(),
        size,
        wrote,
        read,
        rand,
        sync,
        notes,
        budget,
    };
    let text = props.render();
    write_file(&args.output, &text)?;
    print!("{}", props.summary());
    println!(
        "wrote {} in {:.1} s",
        args.output.display(),
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

/// Opens the scratch file with O_DIRECT, or buffered (with a note) where the
/// filesystem refuses O_DIRECT (tmpfs, some FUSE filesystems).
fn open_scratch(path: &Path, notes: &mut Vec<String>) -> Result<(File, bool)> {
    let open = |flags: i32| {
        OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .custom_flags(flags)
            .mode(0o600)
            .open(path)
    };
    match open(nix::libc::O_DIRECT) {
        Ok(f) => Ok((f, true)),
        Err(e) if e.raw_os_error() == Some(nix::libc::EINVAL) => {
            let _ = std::fs::remove_file(path);
            notes.push(format!(
                "O_DIRECT unsupported on {} (EINVAL): measured through the page cache",
                path.parent().unwrap_or(path).display()
            ));
            Ok((
                open(0).with_context(|| format!("creating {}", path.display()))?,
                false,
            ))
        }
        Err(e) => Err(e).with_context(|| format!("creating {}", path.display())),
    }
}

/// fdatasync latency after each 4 KiB buffered write, as fio's `--fdatasync=1` measures it.
fn fdatasync_latency(path: &Path, until: Instant) -> Result<hdrhistogram::Histogram<u64>> {
    let file = OpenOptions::new()
        .write(true)
        .open(path)
        .with_context(|| format!("opening {}", path.display()))?;
    let mut hist =
        hdrhistogram::Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).context("histogram")?;
    let block = [0x5au8; RAND_BLOCK_BYTES];
    let mut off = 0u64;
    use std::os::unix::fs::FileExt;
    while Instant::now() < until && hist.len() < SYNC_OPS_MAX {
        file.write_all_at(&block, off)
            .context("write before fdatasync")?;
        let t = Instant::now();
        file.sync_data().context("fdatasync")?;
        hist.saturating_record(t.elapsed().as_micros().max(1) as u64);
        off = (off + RAND_BLOCK_BYTES as u64) % (64 << 20);
    }
    Ok(hist)
}

/// The disk under `dir` ("vda", "nvme0n1"), or "unknown".
fn device_of(dir: &Path) -> String {
    let Ok(st) = nix::sys::stat::stat(dir) else {
        return "unknown".into();
    };
    let (major, minor) = (
        nix::sys::stat::major(st.st_dev),
        nix::sys::stat::minor(st.st_dev),
    );
    match super::checks_disk::disks_of(&Host::new(Path::new("/")), major, minor) {
        Ok(d) => d.join(","),
        Err(_) => format!("unknown ({major}:{minor})"),
    }
}

fn write_file(path: &Path, text: &str) -> Result<()> {
    let mut f = File::create(path).with_context(|| format!("creating {}", path.display()))?;
    f.write_all(text.as_bytes())
        .with_context(|| format!("writing {}", path.display()))
}

/// The measurements, and how they are written out.
struct Properties<'a> {
    dir: &'a Path,
    device: String,
    direct: bool,
    engine: &'static str,
    size: u64,
    wrote: Moved,
    read: Moved,
    /// (queue depth, IOPS).
    rand: Vec<(usize, u64)>,
    sync: hdrhistogram::Histogram<u64>,
    notes: Vec<String>,
    budget: Duration,
}

impl Properties<'_> {
    fn best_iops(&self) -> u64 {
        self.rand.iter().map(|r| r.1).max().unwrap_or(0)
    }

    /// The smallest queue depth within SATURATION_PERCENT of the best IOPS.
    fn saturation_depth(&self) -> usize {
        let best = self.best_iops();
        self.rand
            .iter()
            .find(|r| r.1 * 100 >= best * SATURATION_PERCENT)
            .map_or(1, |r| r.0)
    }

    fn render(&self) -> String {
        let mut out = format!(
            "# sluice iotune: {} s on {}\n# informational: the broker reads no I/O concurrency setting yet (docs/tuning.md)\n",
            self.budget.as_secs(),
            self.dir.display()
        );
        let mut kv = |k: &str, v: String| out.push_str(&format!("{k}={v}\n"));
        kv("iotune.dir", self.dir.display().to_string());
        kv("iotune.device", self.device.clone());
        kv("iotune.direct_io", self.direct.to_string());
        kv("iotune.engine", self.engine.into());
        kv("iotune.duration_seconds", self.budget.as_secs().to_string());
        kv("iotune.scratch_bytes", self.size.to_string());
        kv("seq_write.block_bytes", SEQ_BLOCK_BYTES.to_string());
        kv("seq_write.queue_depth", SEQ_DEPTH.to_string());
        kv(
            "seq_write.bytes_per_second",
            self.wrote.per_second(self.wrote.bytes).to_string(),
        );
        kv("seq_read.block_bytes", SEQ_BLOCK_BYTES.to_string());
        kv("seq_read.queue_depth", SEQ_DEPTH.to_string());
        kv(
            "seq_read.bytes_per_second",
            self.read.per_second(self.read.bytes).to_string(),
        );
        for (depth, iops) in &self.rand {
            kv(&format!("rand_read_4k.qd{depth}.iops"), iops.to_string());
        }
        kv("rand_read_4k.max_iops", self.best_iops().to_string());
        kv(
            "rand_read_4k.saturation_queue_depth",
            self.saturation_depth().to_string(),
        );
        kv("fdatasync.count", self.sync.len().to_string());
        for (name, q) in [("p50", 0.5), ("p99", 0.99), ("p999", 0.999)] {
            kv(
                &format!("fdatasync.latency_us.{name}"),
                self.sync.value_at_quantile(q).to_string(),
            );
        }
        kv("fdatasync.latency_us.max", self.sync.max().to_string());
        for (i, n) in self.notes.iter().enumerate() {
            kv(&format!("iotune.note.{i}"), n.replace('\n', " "));
        }
        out
    }

    fn summary(&self) -> String {
        let mb = |m: &Moved| m.per_second(m.bytes) / 1_000_000;
        let mut s = format!(
            "device {} ({}, {})\nsequential write, 1 MiB, QD{SEQ_DEPTH}: {} MB/s\nsequential read, 1 MiB, QD{SEQ_DEPTH}: {} MB/s\n",
            self.device,
            if self.direct { "O_DIRECT" } else { "buffered" },
            self.engine,
            mb(&self.wrote),
            mb(&self.read)
        );
        for (depth, iops) in &self.rand {
            s.push_str(&format!("4 KiB random read, QD{depth}: {iops} IOPS\n"));
        }
        s.push_str(&format!(
            "fdatasync after 4 KiB write: p50 {} µs, p99 {} µs, max {} µs ({} samples)\n",
            self.sync.value_at_quantile(0.5),
            self.sync.value_at_quantile(0.99),
            self.sync.max(),
            self.sync.len()
        ));
        for n in &self.notes {
            s.push_str(&format!("note: {n}\n"));
        }
        s
    }
}

// The scratch file's offsets and lengths must stay aligned for O_DIRECT.
const _: () =
    assert!(SEQ_BLOCK_BYTES.is_multiple_of(ALIGN) && RAND_BLOCK_BYTES.is_multiple_of(ALIGN));
