//! Network checks: receive packet steering (RPS), transmit packet steering
//! (XPS) and NIC ring sizes, for NICs with a device behind them.

use std::time::{Duration, Instant};

use super::checks::{summarize, Check, Context, Status, Write};
use super::checks_cpu::{online_cpus, physical_nics};
use super::parse;
use super::profile::Want;

/// The `queues/<prefix>*/<file>` paths of every physical NIC that has them.
fn queue_files(ctx: &Context, prefix: &str, file: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for nic in physical_nics(ctx) {
        let dir = format!("/sys/class/net/{nic}/queues");
        for q in ctx.host.list(&dir, prefix) {
            let path = format!("{dir}/{q}/{file}");
            if ctx.host.exists(&path) {
                out.push((format!("{nic}/{q}"), path));
            }
        }
    }
    out
}

/// Checks mask files against the mask `target(k, count)` wants for the k-th of them.
fn masks(
    check: Check,
    ctx: &Context,
    want: &Want,
    files: &[(String, String)],
    target: impl Fn(usize, usize) -> Option<Vec<usize>>,
) -> Check {
    if files.is_empty() {
        return check.current("not present").status(Status::Absent);
    }
    let mut items = Vec::new();
    let mut writes = Vec::new();
    for (k, (label, path)) in files.iter().enumerate() {
        let text = match ctx.host.read(path) {
            Ok(t) => t,
            Err(e) => return check.read_error(&e),
        };
        let Some(current) = parse::cpu_mask(&text) else {
            return check
                .current(text.trim())
                .status(Status::Unknown)
                .note(format!("{path}: not a CPU mask"));
        };
        if let Some(t) = target(k, files.len()) {
            if current != t {
                writes.push(Write {
                    path: path.clone(),
                    value: format!("{}\n", parse::format_cpu_mask(&t)),
                });
            }
        }
        let shown = if current.is_empty() {
            "off".into()
        } else {
            parse::format_cpu_list(&current)
        };
        items.push((label.clone(), shown));
    }
    check.current(summarize(&items)).writes(want, writes)
}

pub fn rps(ctx: &Context) -> Check {
    let check = Check::new(ctx, "rps",
        "with fewer receive queues than cores, one core does every packet's protocol work; RPS hands it to the other cores by flow hash");
    let want = ctx.profile.want("rps");
    let cpus = online_cpus(ctx);
    let files = queue_files(ctx, "rx-", "rps_cpus");
    masks(check, ctx, want, &files, |_, _| match want {
        Want::Exact(w) if w == "all" => Some(cpus.clone()),
        Want::Exact(w) if w == "off" => Some(Vec::new()),
        _ => None,
    })
}

pub fn xps(ctx: &Context) -> Check {
    let check = Check::new(ctx, "xps",
        "XPS ties each transmit queue to a set of cores, so a shard sends on a queue of its own and does not contend for another core's queue lock");
    let want = ctx.profile.want("xps");
    let cpus = online_cpus(ctx);
    let files = queue_files(ctx, "tx-", "xps_cpus");
    masks(check, ctx, want, &files, |k, n| match want {
        // Queue k gets every CPU whose index is k modulo the queue count.
        Want::Exact(w) if w == "spread" && !cpus.is_empty() => Some(
            cpus.iter()
                .enumerate()
                .filter(|(i, _)| i % n == k)
                .map(|(_, c)| *c)
                .collect(),
        ),
        _ => None,
    })
    .note("xps_cpus exists only on kernels built with XPS and NICs with transmit queues")
}

/// How long one `ethtool -g` may take.
const ETHTOOL_TIMEOUT: Duration = Duration::from_secs(2);

/// `ethtool -g nic`'s output, or why there is none.
fn ethtool_g(nic: &str) -> Result<String, String> {
    use std::process::{Command, Stdio};
    let mut child = Command::new("ethtool")
        .args(["-g", nic])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => "ethtool is not installed".to_string(),
            _ => format!("ethtool: {e}"),
        })?;
    let start = Instant::now();
    loop {
        match child.try_wait() {
            Ok(Some(_)) => break,
            Ok(None) if start.elapsed() < ETHTOOL_TIMEOUT => {
                std::thread::sleep(Duration::from_millis(10))
            }
            Ok(None) => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!(
                    "ethtool -g {nic} took over {} s",
                    ETHTOOL_TIMEOUT.as_secs()
                ));
            }
            Err(e) => return Err(format!("ethtool: {e}")),
        }
    }
    let out = child
        .wait_with_output()
        .map_err(|e| format!("ethtool: {e}"))?;
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    if !out.status.success() {
        return Err(format!(
            "ethtool -g {nic}: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    Ok(text)
}

pub fn rings(ctx: &Context) -> Check {
    let check = Check::new(ctx, "nic_rings",
        "small NIC rings drop packets in a burst (a fetch storm, a replica catching up) before the kernel drains them; the maximum the NIC offers absorbs the burst");
    let want = ctx.profile.want("nic_rings");
    let nics = physical_nics(ctx);
    if nics.is_empty() {
        return check.current("no NIC").status(Status::Absent);
    }
    if !ctx.host.is_live() {
        return check
            .current("unknown")
            .status(Status::Unknown)
            .note("ring sizes come from ethtool, which is not run against a --root tree");
    }
    let show = |v: Option<u64>| v.map_or("?".to_string(), |n| n.to_string());
    let mut items = Vec::new();
    let mut commands = Vec::new();
    let mut unknown = Vec::new();
    for nic in nics {
        let rings = ethtool_g(&nic).and_then(|t| {
            parse::ethtool_rings(&t)
                .ok_or_else(|| format!("ethtool -g {nic}: no ring sizes in its output"))
        });
        match rings {
            Ok(((max_rx, max_tx), (rx, tx))) => {
                items.push((
                    nic.clone(),
                    format!(
                        "rx {}/{} tx {}/{}",
                        show(rx),
                        show(max_rx),
                        show(tx),
                        show(max_tx)
                    ),
                ));
                let short = |cur: Option<u64>, max: Option<u64>| matches!((cur, max), (Some(c), Some(m)) if c < m);
                if short(rx, max_rx) || short(tx, max_tx) {
                    commands.push(format!(
                        "ethtool -G {nic} rx {} tx {}",
                        show(max_rx),
                        show(max_tx)
                    ));
                }
            }
            Err(why) => unknown.push(why),
        }
    }
    if items.is_empty() {
        return check
            .current("unknown")
            .status(Status::Unknown)
            .note(unknown.join("; "));
    }
    let mut check = check.current(summarize(&items)).note("current/maximum entries; --apply leaves rings to the operator (a ring resize resets the NIC link)");
    if !unknown.is_empty() {
        check = check.note(format!(
            "current/maximum entries; not read: {}",
            unknown.join("; ")
        ));
    }
    let ok = commands.is_empty();
    check.manual(want, ok, commands.join(" && "))
}
