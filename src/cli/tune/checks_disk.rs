//! Disk checks for the device under the data dir: I/O scheduler, nomerges
//! and write cache. The data dir's device is found as `stat` sees it
//! (st_dev -> /sys/dev/block/MAJ:MIN), a partition is traced to its disk, and
//! a device-mapper or md device to the disks under it.

use std::path::Path;

use super::checks::{bracket_file, number_file, summarize, Check, Context, Status, Write};
use super::host::Host;
use super::profile::Want;

/// How deep `slaves/` is followed (dm on md on disk ...).
const STACK_DEPTH_MAX: usize = 4;

/// The disks (names under /sys/block) holding the data dir, or why there are none.
pub type Disks = Result<Vec<String>, String>;

pub fn data_disks(ctx: &Context) -> Disks {
    if !ctx.disks.is_empty() {
        return Ok(ctx.disks.to_vec());
    }
    let dir = existing_ancestor(ctx.data_dir)
        .ok_or_else(|| format!("{}: no such directory", ctx.data_dir.display()))?;
    let st = nix::sys::stat::stat(&dir).map_err(|e| format!("stat {}: {e}", dir.display()))?;
    let (major, minor) = (
        nix::sys::stat::major(st.st_dev),
        nix::sys::stat::minor(st.st_dev),
    );
    disks_of(ctx.host, major, minor)
        .map_err(|e| format!("{} (device {major}:{minor}): {e}", dir.display()))
}

/// `path`, or its nearest ancestor that exists (the dir the broker will create it in).
fn existing_ancestor(path: &Path) -> Option<std::path::PathBuf> {
    let abs = std::path::absolute(path).ok()?;
    abs.ancestors().find(|p| p.is_dir()).map(Path::to_path_buf)
}

/// The whole disks behind block device MAJ:MIN.
pub fn disks_of(host: &Host, major: u64, minor: u64) -> Result<Vec<String>, String> {
    if major == 0 {
        return Err("a filesystem with no block device (tmpfs, overlayfs, a btrfs subvolume): name the disk with --disk".into());
    }
    let dev = host
        .link(&format!("/sys/dev/block/{major}:{minor}"))
        .ok_or_else(|| format!("/sys/dev/block/{major}:{minor} is not there"))?;
    let mut out = Vec::new();
    stack(host, &dev, 0, &mut out);
    if out.is_empty() {
        return Err(format!("{dev}: no disk found under it"));
    }
    out.sort();
    out.dedup();
    Ok(out)
}

/// Adds the disk of sysfs device dir `dev` (a partition's parent), or the
/// disks under it when it is stacked on others.
fn stack(host: &Host, dev: &str, depth: usize, out: &mut Vec<String>) {
    let disk_dir = if host.exists(&format!("{dev}/partition")) {
        match dev.rsplit_once('/') {
            Some((parent, _)) => parent.to_string(),
            None => return,
        }
    } else {
        dev.to_string()
    };
    let Some(name) = disk_dir.rsplit('/').next().filter(|n| !n.is_empty()) else {
        return;
    };
    // The links in slaves/ are relative to the device's own directory.
    let under = host.list(&format!("{disk_dir}/slaves"), "");
    if under.is_empty() || depth >= STACK_DEPTH_MAX {
        out.push(name.to_string());
        return;
    }
    for s in under {
        if let Some(target) = host.link(&format!("{disk_dir}/slaves/{s}")) {
            stack(host, &target, depth + 1, out);
        }
    }
}

/// Runs `per_disk` over the data disks, or reports why there are none.
fn over_disks(check: Check, disks: &Disks, per_disk: impl Fn(Check, &str) -> Check) -> Check {
    let names = match disks {
        Ok(d) => d,
        Err(why) => {
            return check
                .current("unknown")
                .status(Status::Unknown)
                .note(why.clone())
        }
    };
    let mut results: Vec<(String, Check)> = names
        .iter()
        .map(|d| (d.clone(), per_disk(check.clone(), d)))
        .collect();
    if results.len() == 1 {
        let (disk, c) = results.remove(0);
        let note = c
            .note
            .clone()
            .map_or(format!("disk {disk}"), |n| format!("disk {disk}; {n}"));
        return c.note(note);
    }
    // Several disks: the worst status, every write, each disk's value.
    let items: Vec<(String, String)> = results
        .iter()
        .map(|(d, c)| (d.clone(), c.current.clone()))
        .collect();
    let mut writes = Vec::new();
    let mut status = Status::Ok;
    for (_, c) in &results {
        if let super::checks::Fix::Write { writes: w } = &c.fix {
            writes.extend(w.iter().cloned());
        }
        if !c.status.ok() || status == Status::Ok {
            status = c.status;
        }
    }
    let mut out = check.current(summarize(&items));
    if status == Status::Differs {
        out.fix = super::checks::Fix::Write { writes };
    }
    out.status(status)
        .note(format!("disks {}", names.join(", ")))
}

pub fn scheduler(ctx: &Context, disks: &Disks) -> Check {
    let check = Check::new(ctx, "disk_scheduler",
        "an NVMe or virtual disk reorders requests itself; a kernel I/O scheduler in front of it adds CPU per request and can delay a log append behind reads");
    let want = ctx.profile.want("disk_scheduler");
    over_disks(check, disks, |c, d| {
        bracket_file(c, ctx, want, &format!("/sys/block/{d}/queue/scheduler"))
    })
}

pub fn nomerges(ctx: &Context, disks: &Disks) -> Check {
    let check = Check::new(ctx, "disk_nomerges",
        "the broker already writes large sequential blocks; 2 stops the block layer looking for requests to merge (CPU per request on a fast disk)");
    let want = ctx.profile.want("disk_nomerges");
    over_disks(check, disks, |c, d| {
        number_file(c, ctx, want, &format!("/sys/block/{d}/queue/nomerges"))
    })
}

pub fn write_cache(ctx: &Context, disks: &Disks) -> Check {
    let check = Check::new(ctx, "disk_write_cache",
        "'write back' makes the kernel send a cache flush with every fdatasync (safe); 'write through' skips the flush, which is only safe on a disk with power-loss protection");
    let want = ctx.profile.want("disk_write_cache");
    over_disks(check, disks, |c, d| {
        let path = format!("/sys/block/{d}/queue/write_cache");
        let text = match ctx.host.read(&path) {
            Ok(t) => t.trim().to_string(),
            Err(e) => return c.read_error(&e),
        };
        let mut writes = Vec::new();
        if let Want::Exact(w) = want {
            if &text != w {
                writes.push(Write {
                    path,
                    value: format!("{w}\n"),
                });
            }
        }
        c.current(text).writes(want, writes)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn link(root: &Path, at: &str, to: &str) {
        let at = root.join(at);
        std::fs::create_dir_all(at.parent().expect("parent")).expect("mkdir");
        std::os::unix::fs::symlink(to, at).expect("symlink");
    }

    #[test]
    fn partitions_and_stacked_devices_resolve_to_disks() {
        let dir = tempfile::tempdir().expect("tempdir");
        let root = dir.path();
        let host = Host::new(root);
        for d in [
            "sys/devices/pci0/nvme0n1/nvme0n1p2",
            "sys/devices/virtual/block/dm-0",
            "sys/devices/pci0/sdb",
            "sys/devices/pci0/sdc",
        ] {
            std::fs::create_dir_all(root.join(d)).expect("mkdir");
        }
        std::fs::write(
            root.join("sys/devices/pci0/nvme0n1/nvme0n1p2/partition"),
            "2\n",
        )
        .expect("write");
        link(
            root,
            "sys/dev/block/259:2",
            "../../devices/pci0/nvme0n1/nvme0n1p2",
        );
        link(
            root,
            "sys/dev/block/253:0",
            "../../devices/virtual/block/dm-0",
        );
        link(
            root,
            "sys/devices/virtual/block/dm-0/slaves/sdb",
            "../../../pci0/sdb",
        );
        link(
            root,
            "sys/devices/virtual/block/dm-0/slaves/sdc",
            "../../../pci0/sdc",
        );
        assert_eq!(disks_of(&host, 259, 2), Ok(vec!["nvme0n1".to_string()]));
        assert_eq!(
            disks_of(&host, 253, 0),
            Ok(vec!["sdb".to_string(), "sdc".to_string()])
        );
        assert!(disks_of(&host, 0, 45)
            .expect_err("tmpfs")
            .contains("--disk"));
        assert!(disks_of(&host, 8, 99)
            .expect_err("missing")
            .contains("/sys/dev/block/8:99"));
    }
}
