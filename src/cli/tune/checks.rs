//! The host checks of `sluice tune`: each reads one setting under the host's
//! root, compares it with the profile, and says how to bring it there (files
//! to write, or a command for the operator). Reading never changes anything.
//! The CPU, network and disk checks live in their own files; the kernel
//! sysctls, memory and clock checks are here.

use serde::Serialize;

use super::host::{FileError, Host};
use super::parse;
use super::profile::{Profile, Want};

/// How a check's current value compares with the recommendation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    /// It meets the recommendation.
    Ok,
    /// It does not; `fix` says how to get there.
    Differs,
    /// This host has no such setting (no cpufreq on a VM, no NVMe queues ...).
    Absent,
    /// The recommended value is not one this host offers (no tsc on arm64 ...).
    Unsupported,
    /// The setting exists but could not be read (the note says why).
    Unreadable,
    /// It could not be determined (a tool is missing, the format was unexpected).
    Unknown,
    /// The profile says "any".
    NotChecked,
}

impl Status {
    /// Whether nothing needs doing: met, unchecked, or nothing on this host to tune.
    pub fn ok(self) -> bool {
        matches!(
            self,
            Status::Ok | Status::NotChecked | Status::Absent | Status::Unsupported
        )
    }
}

/// One file write that moves a setting toward the recommendation.
#[derive(Debug, Clone, Serialize)]
pub struct Write {
    pub path: String,
    pub value: String,
}

/// How a differing setting is brought to the recommendation.
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Fix {
    None,
    /// `sluice tune --apply` writes these files.
    Write {
        writes: Vec<Write>,
    },
    /// Not something `--apply` can do (a process limit, a daemon, a NIC's
    /// rings, a hypervisor device): the operator runs this.
    Manual {
        command: String,
    },
}

/// The result of one check.
#[derive(Debug, Clone, Serialize)]
pub struct Check {
    pub name: &'static str,
    pub current: String,
    pub recommended: String,
    pub ok: bool,
    pub status: Status,
    pub why: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
    pub fix: Fix,
}

/// What the checks read from.
pub struct Context<'a> {
    pub host: &'a Host,
    pub profile: &'a Profile,
    /// The broker's data dir: its block device is the one the disk checks tune.
    pub data_dir: &'a std::path::Path,
    /// Disks named on the command line (`--disk`), instead of the data dir's.
    pub disks: &'a [String],
}

impl Check {
    /// A check of `name` with the profile's recommendation and `why`, not yet read.
    pub fn new(ctx: &Context, name: &'static str, why: &'static str) -> Check {
        Check {
            name,
            current: String::new(),
            recommended: ctx.profile.want(name).to_string(),
            ok: false,
            status: Status::Unknown,
            why,
            note: None,
            fix: Fix::None,
        }
    }

    /// Sets the status (and `ok` with it).
    pub fn status(mut self, status: Status) -> Check {
        self.status = status;
        self.ok = status.ok();
        if !matches!(status, Status::Differs) {
            self.fix = Fix::None;
        }
        self
    }

    pub fn current(mut self, current: impl Into<String>) -> Check {
        self.current = current.into();
        self
    }

    pub fn note(mut self, note: impl Into<String>) -> Check {
        self.note = Some(note.into());
        self
    }

    /// Reports a read error: absent when the file is missing, unreadable otherwise.
    pub fn read_error(self, e: &FileError) -> Check {
        if e.missing() {
            self.current("not present")
                .status(Status::Absent)
                .note(format!("{} does not exist", e.path))
        } else {
            self.current("unreadable")
                .status(Status::Unreadable)
                .note(e.to_string())
        }
    }

    /// Ok or differs with these writes (ok when there is nothing to write),
    /// not checked when the profile says "any".
    pub fn writes(mut self, want: &Want, writes: Vec<Write>) -> Check {
        if *want == Want::Any {
            return self.status(Status::NotChecked);
        }
        if writes.is_empty() {
            return self.status(Status::Ok);
        }
        self.fix = Fix::Write { writes };
        self.status(Status::Differs)
    }

    /// Ok, or differs with a command for the operator.
    pub fn manual(mut self, want: &Want, ok: bool, command: String) -> Check {
        if *want == Want::Any {
            return self.status(Status::NotChecked);
        }
        if ok {
            return self.status(Status::Ok);
        }
        self.fix = Fix::Manual { command };
        self.status(Status::Differs)
    }
}

/// "v" when every item has value v, else "v1 (a, b), v2 (c)": many files, one line.
pub fn summarize(items: &[(String, String)]) -> String {
    let mut groups: Vec<(&str, Vec<&str>)> = Vec::new();
    for (label, value) in items {
        match groups.iter_mut().find(|(v, _)| v == value) {
            Some((_, labels)) => labels.push(label),
            None => groups.push((value, vec![label])),
        }
    }
    if groups.len() == 1 {
        return groups[0].0.to_string();
    }
    groups
        .iter()
        .map(|(v, labels)| format!("{v} ({})", labels.join(", ")))
        .collect::<Vec<_>>()
        .join("; ")
}

/// Every check, in the order of `profile::SETTINGS`.
pub fn all(ctx: &Context) -> Vec<Check> {
    let disks = super::checks_disk::data_disks(ctx);
    let checks = vec![
        super::checks_cpu::governor(ctx),
        super::checks_cpu::cstates(ctx),
        super::checks_cpu::irqbalance(ctx),
        super::checks_cpu::irq_affinity(ctx),
        super::checks_net::rps(ctx),
        super::checks_net::xps(ctx),
        super::checks_net::rings(ctx),
        super::checks_disk::scheduler(ctx, &disks),
        super::checks_disk::nomerges(ctx, &disks),
        super::checks_disk::write_cache(ctx, &disks),
        thp(ctx),
        sysctl(ctx, "swappiness", "/proc/sys/vm/swappiness", "vm.swappiness",
            "how eagerly the kernel swaps process memory out to keep page cache; a swapped-out broker page costs a disk read on the request path"),
        sysctl(ctx, "aio_max_nr", "/proc/sys/fs/aio-max-nr", "fs.aio-max-nr",
            "system-wide limit on in-flight Linux AIO requests; tools and storage engines that use AIO fail with EAGAIN when it runs out (Sluice's own rings are io_uring, which it does not bound)"),
        memlock(ctx),
        clocksource(ctx),
        sysctl(ctx, "somaxconn", "/proc/sys/net/core/somaxconn", "net.core.somaxconn",
            "longest accept queue a listener may ask for; a burst of client connections beyond it is dropped or delayed by a SYN retry (1 s)"),
        sysctl(ctx, "rmem_max", "/proc/sys/net/core/rmem_max", "net.core.rmem_max",
            "largest socket receive buffer a process may set; caps the TCP window of a replication or produce stream over a long, fast path"),
        sysctl(ctx, "wmem_max", "/proc/sys/net/core/wmem_max", "net.core.wmem_max",
            "largest socket send buffer a process may set; caps how much of a large fetch answer the kernel takes in one send"),
        ballooning(ctx),
    ];
    debug_assert_eq!(checks.len(), super::profile::SETTINGS.len());
    checks
}

/// A single-number sysctl file.
fn sysctl(ctx: &Context, name: &'static str, path: &str, key: &str, why: &'static str) -> Check {
    let check = Check::new(ctx, name, why).note(format!(
        "sysctl {key}; --apply does not persist it (add it to /etc/sysctl.d/ for that)"
    ));
    number_file(check, ctx, ctx.profile.want(name), path)
}

/// A file holding one number, checked against `want`.
pub fn number_file(check: Check, ctx: &Context, want: &Want, path: &str) -> Check {
    let text = match ctx.host.read(path) {
        Ok(t) => t,
        Err(e) => return check.read_error(&e),
    };
    let Some(n) = parse::number(&text) else {
        return check
            .current(text.trim())
            .status(Status::Unknown)
            .note(format!("{path}: not a number"));
    };
    let mut writes = Vec::new();
    if let Some(target) = want.target().filter(|_| !want.accepts(n)) {
        writes.push(Write {
            path: path.into(),
            value: format!("{target}\n"),
        });
    }
    check.current(n.to_string()).writes(want, writes)
}

fn thp(ctx: &Context) -> Check {
    const PATH: &str = "/sys/kernel/mm/transparent_hugepage/enabled";
    let check = Check::new(ctx, "transparent_hugepages",
        "'always' lets khugepaged compact memory behind the broker's back (stalls of milliseconds); 'madvise' gives huge pages only where asked; 'never' rules them out");
    let want = ctx.profile.want("transparent_hugepages");
    bracket_file(check, ctx, want, PATH)
}

/// A "[selected] other" file checked against an exact word.
pub fn bracket_file(check: Check, ctx: &Context, want: &Want, path: &str) -> Check {
    let text = match ctx.host.read(path) {
        Ok(t) => t,
        Err(e) => return check.read_error(&e),
    };
    let Some(current) = parse::selected(&text) else {
        return check
            .current(text.trim())
            .status(Status::Unknown)
            .note(format!("{path}: no [selected] value"));
    };
    let check = check.current(current);
    let mut writes = Vec::new();
    if let Want::Exact(w) = want {
        if current != w {
            if !parse::choices(&text).contains(&w.as_str()) {
                return check
                    .status(Status::Unsupported)
                    .note(format!("{path} offers {}", text.trim()));
            }
            writes.push(Write {
                path: path.into(),
                value: format!("{w}\n"),
            });
        }
    }
    check.writes(want, writes)
}

fn memlock(ctx: &Context) -> Check {
    let check = Check::new(ctx, "memlock",
        "each shard registers its I/O buffers with io_uring (about 3 x io_memory locked); below that, registration fails and I/O takes a slower path, and below 512 KiB the broker does not start");
    let want = ctx.profile.want("memlock");
    let limits = if ctx.host.is_live() {
        use nix::sys::resource::{getrlimit, Resource, RLIM_INFINITY};
        match getrlimit(Resource::RLIMIT_MEMLOCK) {
            Ok((soft, hard)) => {
                let f = |v: u64| (v != RLIM_INFINITY).then_some(v);
                Some((f(soft), f(hard)))
            }
            Err(e) => {
                return check
                    .current("unreadable")
                    .status(Status::Unreadable)
                    .note(format!("getrlimit(RLIMIT_MEMLOCK): {e}"))
            }
        }
    } else {
        match ctx.host.read("/proc/self/limits") {
            Ok(t) => parse::memlock_limits(&t),
            Err(e) => return check.read_error(&e),
        }
    };
    let Some((soft, hard)) = limits else {
        return check
            .current("unknown")
            .status(Status::Unknown)
            .note("/proc/self/limits has no 'Max locked memory' line");
    };
    let show = |v: Option<u64>| v.map_or("unlimited".to_string(), |n| n.to_string());
    let ok = match want {
        Want::Exact(w) if w == "unlimited" => soft.is_none(),
        w => soft.is_none_or(|n| w.accepts(n)),
    };
    check
        .current(format!("soft {}, hard {}", show(soft), show(hard)))
        .note("a limit of the process that starts the broker, not a kernel file: --apply cannot set it for the broker")
        .manual(want, ok, "ulimit -l unlimited in the shell that starts sluice, or LimitMEMLOCK=infinity in its systemd unit (or 'memlock' in /etc/security/limits.conf)".into())
}

fn clocksource(ctx: &Context) -> Check {
    const DIR: &str = "/sys/devices/system/clocksource/clocksource0";
    let check = Check::new(ctx, "clocksource",
        "every timestamp, timer and latency measurement reads the clock; tsc is read without leaving user space, while hpet, acpi_pm or xen cost a system call or a trap each");
    let want = ctx.profile.want("clocksource");
    let current = match ctx.host.read(&format!("{DIR}/current_clocksource")) {
        Ok(t) => t.trim().to_string(),
        Err(e) => return check.read_error(&e),
    };
    let check = check.current(current.clone());
    let mut writes = Vec::new();
    if let Want::Exact(w) = want {
        if &current != w {
            let available = ctx
                .host
                .read(&format!("{DIR}/available_clocksource"))
                .unwrap_or_default();
            if !available.split_whitespace().any(|s| s == w) {
                return check
                    .status(Status::Unsupported)
                    .note(format!("this kernel offers: {}", available.trim()));
            }
            writes.push(Write {
                path: format!("{DIR}/current_clocksource"),
                value: format!("{w}\n"),
            });
        }
    }
    check.writes(want, writes)
}

fn ballooning(ctx: &Context) -> Check {
    const DRIVER: &str = "/sys/bus/virtio/drivers/virtio_balloon";
    let check = Check::new(ctx, "ballooning",
        "a balloon device lets the hypervisor take guest memory back at run time: the page cache and the broker's buffers shrink under it without warning");
    let want = ctx.profile.want("ballooning");
    let devices = ctx.host.list(DRIVER, "virtio");
    let current = if devices.is_empty() {
        "absent".to_string()
    } else {
        format!("virtio_balloon ({})", devices.join(", "))
    };
    check.current(current).manual(
        want,
        devices.is_empty(),
        "remove the balloon device from the VM's definition, or unload it in the guest (rmmod virtio_balloon) where it is a module".into(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn summarize_groups_by_value() {
        let items = |v: &[(&str, &str)]| -> Vec<(String, String)> {
            v.iter()
                .map(|(a, b)| (a.to_string(), b.to_string()))
                .collect()
        };
        assert_eq!(
            summarize(&items(&[("cpu0", "performance"), ("cpu1", "performance")])),
            "performance"
        );
        assert_eq!(
            summarize(&items(&[
                ("cpu0", "powersave"),
                ("cpu1", "performance"),
                ("cpu2", "powersave")
            ])),
            "powersave (cpu0, cpu2); performance (cpu1)"
        );
    }
}
