//! CPU checks: frequency governor, idle states (C-states), irqbalance, and
//! the affinity of NIC and NVMe queue interrupts.

use super::checks::{summarize, Check, Context, Status, Write};
use super::parse;
use super::profile::Want;

const CPU_DIR: &str = "/sys/devices/system/cpu";

/// The CPU directories (`cpu0`, `cpu1` ...), not `cpufreq`, `cpuidle` and the like.
fn cpu_dirs(ctx: &Context) -> Vec<String> {
    ctx.host
        .list(CPU_DIR, "cpu")
        .into_iter()
        .filter(|n| n.len() > 3 && n[3..].bytes().all(|b| b.is_ascii_digit()))
        .collect()
}

/// The online CPUs (`/sys/devices/system/cpu/online`), else every cpuN directory.
pub fn online_cpus(ctx: &Context) -> Vec<usize> {
    if let Some(cpus) = ctx
        .host
        .read(&format!("{CPU_DIR}/online"))
        .ok()
        .and_then(|t| parse::cpu_list(&t))
        .filter(|c| !c.is_empty())
    {
        return cpus;
    }
    cpu_dirs(ctx)
        .iter()
        .filter_map(|n| n[3..].parse().ok())
        .collect()
}

pub fn governor(ctx: &Context) -> Check {
    let check = Check::new(ctx, "cpu_governor",
        "a power-saving governor lowers the clock between bursts; the next request then runs slower and waits for the ramp-up (tens of µs to ms of added latency)");
    let want = ctx.profile.want("cpu_governor");
    let mut items = Vec::new();
    let mut writes = Vec::new();
    let mut available = String::new();
    for cpu in cpu_dirs(ctx) {
        let path = format!("{CPU_DIR}/{cpu}/cpufreq/scaling_governor");
        let gov = match ctx.host.read(&path) {
            Ok(t) => t.trim().to_string(),
            Err(e) if e.missing() => continue,
            Err(e) => return check.read_error(&e),
        };
        if available.is_empty() {
            available = ctx
                .host
                .read(&format!(
                    "{CPU_DIR}/{cpu}/cpufreq/scaling_available_governors"
                ))
                .unwrap_or_default();
        }
        if let Want::Exact(w) = want {
            if &gov != w {
                writes.push(Write {
                    path,
                    value: format!("{w}\n"),
                });
            }
        }
        items.push((cpu, gov));
    }
    if items.is_empty() {
        return check
            .current("not present")
            .status(Status::Absent)
            .note("no cpufreq/scaling_governor: the CPU's frequency is not under the kernel's control (typical of a VM)");
    }
    let check = check.current(summarize(&items));
    if let Want::Exact(w) = want {
        if !writes.is_empty()
            && !available.is_empty()
            && !available.split_whitespace().any(|g| g == w)
        {
            return check
                .status(Status::Unsupported)
                .note(format!("governors offered: {}", available.trim()));
        }
    }
    check.writes(want, writes)
}

/// An idle state of one CPU.
struct IdleState {
    name: String,
    latency_us: u64,
    disabled: bool,
    disable_path: String,
}

fn idle_states(ctx: &Context, cpu: &str) -> Vec<IdleState> {
    let dir = format!("{CPU_DIR}/{cpu}/cpuidle");
    let mut out = Vec::new();
    for state in ctx.host.list(&dir, "state") {
        let read = |f: &str| ctx.host.read(&format!("{dir}/{state}/{f}")).ok();
        let (Some(name), Some(latency)) = (
            read("name"),
            read("latency").and_then(|t| parse::number(&t)),
        ) else {
            continue;
        };
        out.push(IdleState {
            name: name.trim().to_string(),
            latency_us: latency,
            disabled: read("disable").and_then(|t| parse::number(&t)).unwrap_or(0) != 0,
            disable_path: format!("{dir}/{state}/disable"),
        });
    }
    out
}

pub fn cstates(ctx: &Context) -> Check {
    let check = Check::new(ctx, "cstates",
        "a core in a deep idle state takes its exit latency (µs to hundreds of µs) to wake for the next packet or completion; the profile's number is the longest exit latency left enabled");
    let want = ctx.profile.want("cstates");
    let limit = match want {
        Want::AtMost(n) | Want::AtLeast(n) => Some(*n),
        Want::Exact(s) => s.parse().ok(),
        Want::Any => None,
    };
    let mut items = Vec::new();
    let mut writes = Vec::new();
    for cpu in cpu_dirs(ctx) {
        let states = idle_states(ctx, &cpu);
        if states.is_empty() {
            continue;
        }
        let enabled: Vec<&IdleState> = states.iter().filter(|s| !s.disabled).collect();
        let deepest = enabled.iter().max_by_key(|s| s.latency_us);
        items.push((
            cpu,
            deepest.map_or("all disabled".into(), |s| {
                format!("{} µs ({})", s.latency_us, s.name)
            }),
        ));
        if let Some(limit) = limit {
            for s in enabled.iter().filter(|s| s.latency_us > limit) {
                writes.push(Write {
                    path: s.disable_path.clone(),
                    value: "1\n".into(),
                });
            }
        }
    }
    if items.is_empty() {
        return check
            .current("not present")
            .status(Status::Absent)
            .note("no cpuidle states exposed");
    }
    check
        .current(summarize(&items))
        .note("current: the longest exit latency among enabled idle states")
        .writes(want, writes)
}

pub fn irqbalance(ctx: &Context) -> Check {
    let check = Check::new(ctx, "irqbalance",
        "irqbalance moves interrupts between cores every 10 s: it undoes irq_affinity and moves a queue's interrupt away from the shard that serves it");
    let want = ctx.profile.want("irqbalance");
    // Bounded scan of /proc/<pid>/comm.
    const PROCESSES_MAX: usize = 1 << 20;
    let pids: Vec<String> = ctx
        .host
        .list("/proc", "")
        .into_iter()
        .filter(|n| n.bytes().all(|b| b.is_ascii_digit()))
        .take(PROCESSES_MAX)
        .collect();
    if pids.is_empty() {
        return check
            .current("unknown")
            .status(Status::Unknown)
            .note("no processes listed under /proc");
    }
    let running: Vec<String> = pids
        .into_iter()
        .filter(|p| {
            ctx.host
                .read(&format!("/proc/{p}/comm"))
                .is_ok_and(|c| c.trim() == "irqbalance")
        })
        .collect();
    let current = if running.is_empty() {
        "stopped".to_string()
    } else {
        format!("running (pid {})", running.join(", "))
    };
    let ok = match want {
        Want::Exact(w) if w == "stopped" => running.is_empty(),
        Want::Exact(_) => !running.is_empty(),
        _ => true,
    };
    let command = if running.is_empty() {
        "systemctl enable --now irqbalance"
    } else {
        "systemctl disable --now irqbalance (or ban the tuned IRQs with IRQBALANCE_BANNED_CPULIST / --banirq)"
    };
    check.current(current).manual(want, ok, command.into())
}

/// NIC names with a device behind them (not lo, bridges, veth, ifb).
pub fn physical_nics(ctx: &Context) -> Vec<String> {
    ctx.host
        .list("/sys/class/net", "")
        .into_iter()
        .filter(|n| ctx.host.exists(&format!("/sys/class/net/{n}/device")))
        .collect()
}

/// virtio devices bound to the block or network driver ("virtio1", ...).
fn virtio_data_devices(ctx: &Context) -> Vec<String> {
    ctx.host
        .list("/sys/bus/virtio/devices", "virtio")
        .into_iter()
        .filter(|d| {
            ctx.host
                .link(&format!("/sys/bus/virtio/devices/{d}/driver"))
                .is_some_and(|l| l.ends_with("/virtio_blk") || l.ends_with("/virtio_net"))
        })
        .collect()
}

pub fn irq_affinity(ctx: &Context) -> Check {
    let check = Check::new(ctx, "irq_affinity",
        "each NIC and NVMe queue interrupt should land on its own core, spread evenly, so one core is not both the interrupt sink for every queue and a busy shard");
    let want = ctx.profile.want("irq_affinity");
    let text = match ctx.host.read("/proc/interrupts") {
        Ok(t) => t,
        Err(e) => return check.read_error(&e),
    };
    let nics = physical_nics(ctx);
    let virtio = virtio_data_devices(ctx);
    let queues: Vec<parse::IrqLine> = parse::interrupts(&text)
        .into_iter()
        .filter(|l| parse::is_queue_irq(&l.name, &nics, &virtio))
        .collect();
    if queues.is_empty() {
        return check
            .current("no NIC or NVMe queue interrupts")
            .status(Status::Absent);
    }
    let cpus = online_cpus(ctx);
    if cpus.is_empty() {
        return check
            .current("unknown")
            .status(Status::Unknown)
            .note("no online CPUs listed");
    }
    let mut items = Vec::new();
    let mut writes = Vec::new();
    for (k, q) in queues.iter().enumerate() {
        let path = format!("/proc/irq/{}/smp_affinity", q.irq);
        let mask = match ctx.host.read(&path) {
            Ok(t) => t,
            Err(e) => return check.read_error(&e),
        };
        let Some(current) = parse::cpu_mask(&mask) else {
            return check
                .current(mask.trim())
                .status(Status::Unknown)
                .note(format!("{path}: not a CPU mask"));
        };
        let target = cpus[k % cpus.len()];
        if *want == Want::Exact("spread".into()) && current != [target] {
            writes.push(Write {
                path,
                value: format!("{}\n", parse::format_cpu_mask(&[target])),
            });
        }
        items.push(format!(
            "{} {}→{}",
            q.irq,
            q.name,
            parse::format_cpu_list(&current)
        ));
    }
    check
        .current(items.join(" "))
        .note("spread: queue interrupt k (in IRQ order) goes to online CPU k mod n; kernel-managed NVMe IRQs refuse the write (EIO) and are spread by the kernel already")
        .writes(want, writes)
}
