//! Pure parsers for the procfs and sysfs formats `sluice tune` reads. Each
//! takes the file's text and returns what it means, or `None` when the text
//! is not in the format the kernel writes (the caller reports it as
//! unreadable rather than guessing).

/// A "[selected] other other" list (I/O scheduler, THP, ...): the bracketed word.
/// A file that holds one bare word (a fake tree, or an older kernel) selects it.
pub fn selected(text: &str) -> Option<&str> {
    let words: Vec<&str> = text.split_whitespace().collect();
    for w in &words {
        if let Some(inner) = w.strip_prefix('[').and_then(|w| w.strip_suffix(']')) {
            return (!inner.is_empty()).then_some(inner);
        }
    }
    match words.as_slice() {
        [one] => Some(one),
        _ => None,
    }
}

/// The words of a "[selected] other" list, brackets removed.
pub fn choices(text: &str) -> Vec<&str> {
    text.split_whitespace()
        .map(|w| w.trim_start_matches('[').trim_end_matches(']'))
        .filter(|w| !w.is_empty())
        .collect()
}

/// `text` with the brackets moved to `word`, every other byte kept; `None` when
/// `text` is not a bracketed list or does not offer `word`. What a plain file
/// standing in for a kernel one (under `--root`) should read after `word` is
/// written to it.
pub fn reselect(text: &str, word: &str) -> Option<String> {
    selected(text)?;
    if !text.contains('[') || !choices(text).contains(&word) {
        return None;
    }
    let mut out = String::with_capacity(text.len() + 2);
    let mut rest = text;
    while !rest.is_empty() {
        let start = rest.len() - rest.trim_start().len();
        out.push_str(&rest[..start]);
        rest = &rest[start..];
        let end = rest.find(char::is_whitespace).unwrap_or(rest.len());
        let tok = rest[..end].trim_start_matches('[').trim_end_matches(']');
        if tok == word {
            out.push('[');
            out.push_str(tok);
            out.push(']');
        } else {
            out.push_str(tok);
        }
        rest = &rest[end..];
    }
    Some(out)
}

/// A single unsigned number (sysctl files: `vm.swappiness`, `fs.aio-max-nr`, ...).
pub fn number(text: &str) -> Option<u64> {
    text.trim().parse().ok()
}

/// A CPU list as in `/sys/devices/system/cpu/online`: "0-3,8,10-11".
/// Bounded: at most `CPUS_MAX` CPUs, so a corrupt file cannot allocate much.
pub fn cpu_list(text: &str) -> Option<Vec<usize>> {
    const CPUS_MAX: usize = 1 << 16;
    let text = text.trim();
    let mut cpus = Vec::new();
    if text.is_empty() {
        return Some(cpus);
    }
    for part in text.split(',') {
        let (lo, hi) = match part.split_once('-') {
            Some((a, b)) => (a.trim().parse().ok()?, b.trim().parse().ok()?),
            None => {
                let n: usize = part.trim().parse().ok()?;
                (n, n)
            }
        };
        if lo > hi || hi >= CPUS_MAX {
            return None;
        }
        cpus.extend(lo..=hi);
    }
    cpus.sort_unstable();
    cpus.dedup();
    Some(cpus)
}

/// A hex CPU mask as in `smp_affinity`, `rps_cpus`, `xps_cpus`:
/// "00000000,00000003" (32-bit words, most significant first) -> CPUs {0, 1}.
pub fn cpu_mask(text: &str) -> Option<Vec<usize>> {
    let text = text.trim();
    if text.is_empty() {
        return None;
    }
    let mut cpus = Vec::new();
    let words: Vec<&str> = text.split(',').collect();
    for (i, word) in words.iter().rev().enumerate() {
        if word.is_empty() || word.len() > 8 {
            return None;
        }
        let bits = u32::from_str_radix(word, 16).ok()?;
        for b in 0..32 {
            if bits & (1 << b) != 0 {
                cpus.push(i * 32 + b);
            }
        }
    }
    Some(cpus)
}

/// The mask text for `cpus`, in the kernel's format (32-bit hex words joined
/// by commas, most significant first, no leading zero words).
pub fn format_cpu_mask(cpus: &[usize]) -> String {
    let top = cpus.iter().max().map_or(0, |m| m / 32);
    let mut words = vec![0u32; top + 1];
    for &c in cpus {
        words[c / 32] |= 1 << (c % 32);
    }
    let mut out: Vec<String> = Vec::with_capacity(words.len());
    for (i, w) in words.iter().rev().enumerate() {
        out.push(if i == 0 {
            format!("{w:x}")
        } else {
            format!("{w:08x}")
        });
    }
    out.join(",")
}

/// CPUs as a short list: "0-3,6".
pub fn format_cpu_list(cpus: &[usize]) -> String {
    let mut out: Vec<String> = Vec::new();
    let mut i = 0;
    while i < cpus.len() {
        let mut j = i;
        while j + 1 < cpus.len() && cpus[j + 1] == cpus[j] + 1 {
            j += 1;
        }
        out.push(if i == j {
            cpus[i].to_string()
        } else {
            format!("{}-{}", cpus[i], cpus[j])
        });
        i = j + 1;
    }
    if out.is_empty() {
        "none".into()
    } else {
        out.join(",")
    }
}

/// One line of `/proc/interrupts` that names a device IRQ.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IrqLine {
    pub irq: u32,
    /// The last column: the action names ("nvme0q1", "virtio2-input.0", "eth0-TxRx-3").
    pub name: String,
}

/// The numbered IRQs of `/proc/interrupts` (NMI, LOC and the other
/// architecture rows have no number and are skipped).
pub fn interrupts(text: &str) -> Vec<IrqLine> {
    let mut lines = text.lines();
    let cpus = lines.next().map_or(0, |h| h.split_whitespace().count());
    let mut out = Vec::new();
    for line in lines {
        let Some((num, rest)) = line.trim_start().split_once(':') else {
            continue;
        };
        let Ok(irq) = num.trim().parse::<u32>() else {
            continue;
        };
        // After the per-CPU counts: the chip, the hw irq and trigger, then the name(s).
        let fields: Vec<&str> = rest.split_whitespace().collect();
        let Some(name) = fields.get(cpus..).and_then(|f| f.last()) else {
            continue;
        };
        out.push(IrqLine {
            irq,
            name: (*name).to_string(),
        });
    }
    out
}

/// Whether an IRQ name is a data-path queue of an NVMe disk or of one of
/// `nics`: "nvme0q3", "eth0-TxRx-1", "mlx5_comp2@pci:...", or a virtio queue
/// of a device in `virtio_devs` ("virtio2-input.0", "virtio1-req.0").
pub fn is_queue_irq(name: &str, nics: &[String], virtio_devs: &[String]) -> bool {
    if let Some(q) = name.strip_prefix("nvme") {
        // nvme<ctrl>q<queue>; q0 is the admin queue.
        return q.split_once('q').is_some_and(|(c, n)| {
            c.parse::<u32>().is_ok() && n.parse::<u32>().is_ok_and(|n| n > 0)
        });
    }
    if let Some((dev, queue)) = name.split_once('-') {
        if dev.starts_with("virtio") {
            return virtio_devs.iter().any(|d| d == dev) && !queue.starts_with("config");
        }
        if nics.iter().any(|n| n == dev) {
            return true;
        }
    }
    name.starts_with("mlx5_comp") || name.starts_with("mlx4-")
}

/// Soft and hard "Max locked memory" of `/proc/<pid>/limits`, in bytes;
/// `None` inside is "unlimited".
pub fn memlock_limits(text: &str) -> Option<(Option<u64>, Option<u64>)> {
    let line = text.lines().find(|l| l.starts_with("Max locked memory"))?;
    let fields: Vec<&str> = line["Max locked memory".len()..]
        .split_whitespace()
        .collect();
    let one = |s: &str| -> Option<Option<u64>> {
        if s == "unlimited" {
            Some(None)
        } else {
            s.parse().ok().map(Some)
        }
    };
    Some((one(fields.first()?)?, one(fields.get(1)?)?))
}

/// `ethtool -g IFACE` output: ((rx max, tx max), (rx current, tx current)).
/// A value the driver does not report is `None`.
pub type Rings = ((Option<u64>, Option<u64>), (Option<u64>, Option<u64>));

pub fn ethtool_rings(text: &str) -> Option<Rings> {
    let mut max = (None, None);
    let mut cur = (None, None);
    let mut section = 0; // 1: maximums, 2: current
    for line in text.lines() {
        let l = line.trim();
        if l.starts_with("Pre-set maximums") {
            section = 1;
        } else if l.starts_with("Current hardware settings") {
            section = 2;
        } else if let Some((k, v)) = l.split_once(':') {
            let v = v.trim().parse::<u64>().ok();
            let slot = match section {
                1 => &mut max,
                2 => &mut cur,
                _ => continue,
            };
            match k.trim() {
                "RX" => slot.0 = v,
                "TX" => slot.1 = v,
                _ => {}
            }
        }
    }
    (section == 2).then_some((max, cur))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn selected_word_of_a_bracket_list() {
        assert_eq!(selected("[none] mq-deadline kyber \n"), Some("none"));
        assert_eq!(selected("always [madvise] never\n"), Some("madvise"));
        assert_eq!(selected("mq-deadline\n"), Some("mq-deadline"));
        assert_eq!(
            selected("none mq-deadline\n"),
            None,
            "two bare words: no selection"
        );
        assert_eq!(selected(""), None);
        assert_eq!(
            choices("none [mq-deadline] kyber "),
            ["none", "mq-deadline", "kyber"]
        );
    }

    #[test]
    fn reselect_moves_only_the_brackets() {
        let before = "none [mq-deadline] kyber \n";
        let after = reselect(before, "none").expect("offered");
        assert_eq!(after, "[none] mq-deadline kyber \n");
        assert_eq!(reselect(&after, "mq-deadline").as_deref(), Some(before));
        assert_eq!(reselect(before, "bfq"), None, "not offered");
        assert_eq!(reselect("60\n", "1"), None, "not a list");
    }

    #[test]
    fn cpu_lists_and_masks() {
        assert_eq!(cpu_list("0-3,8,10-11\n"), Some(vec![0, 1, 2, 3, 8, 10, 11]));
        assert_eq!(cpu_list("0\n"), Some(vec![0]));
        assert_eq!(cpu_list("3-1"), None);
        assert_eq!(cpu_list("x"), None);
        assert_eq!(cpu_mask("3\n"), Some(vec![0, 1]));
        assert_eq!(cpu_mask("00000000,00000003\n"), Some(vec![0, 1]));
        assert_eq!(cpu_mask("1,00000000\n"), Some(vec![32]));
        assert_eq!(cpu_mask("0\n"), Some(vec![]));
        assert_eq!(cpu_mask("zz"), None);
        assert_eq!(cpu_mask("123456789"), None, "a word is at most 32 bits");
        assert_eq!(format_cpu_mask(&[0, 1]), "3");
        assert_eq!(format_cpu_mask(&[32]), "1,00000000");
        assert_eq!(format_cpu_mask(&[]), "0");
        for cpus in [vec![0usize], vec![1, 5, 40], vec![63, 64]] {
            assert_eq!(cpu_mask(&format_cpu_mask(&cpus)), Some(cpus));
        }
        assert_eq!(format_cpu_list(&[0, 1, 2, 5, 7, 8]), "0-2,5,7-8");
        assert_eq!(format_cpu_list(&[]), "none");
    }

    const INTERRUPTS: &str = "\
           CPU0       CPU1
 24:          1          0  IO-APIC   5-edge      ACPI:Ged
 28:          0          0 PCI-MSIX-0000:00:01.0   0-edge      virtio0-config
 36:          0    6136704 PCI-MSIX-0000:00:02.0   1-edge      virtio1-req.0
 38:          0       5314 PCI-MSIX-0000:00:03.0   1-edge      virtio2-input.0
 39:       3543          0 PCI-MSIX-0000:00:03.0   2-edge      virtio2-output.0
 40:          0          0 PCI-MSIX-0000:00:04.0   0-edge      virtio3-config
 41:       6356          0 PCI-MSIX-0000:00:04.0   1-edge      virtio3-rx
 50:         10         20 PCI-MSI 524288-edge      nvme0q0
 51:         10         20 PCI-MSI 524289-edge      nvme0q1
 60:          1          2 PCI-MSI 1-edge      eth1-TxRx-0
NMI:          0          0   Non-maskable interrupts
LOC:    6793587    6746329   Local timer interrupts
";

    #[test]
    fn interrupts_and_queue_irqs() {
        let lines = interrupts(INTERRUPTS);
        assert_eq!(lines.len(), 10, "numbered rows only: {lines:?}");
        assert_eq!(
            lines[2],
            IrqLine {
                irq: 36,
                name: "virtio1-req.0".into()
            }
        );
        let nics = vec!["eth1".to_string()];
        let virtio = vec!["virtio1".to_string(), "virtio2".to_string()];
        let queues: Vec<u32> = lines
            .iter()
            .filter(|l| is_queue_irq(&l.name, &nics, &virtio))
            .map(|l| l.irq)
            .collect();
        // Not: ACPI, config vectors, the vsock device (virtio3), the NVMe admin queue.
        assert_eq!(queues, [36, 38, 39, 51, 60]);
    }

    #[test]
    fn memlock_from_proc_limits() {
        let text = "Limit                     Soft Limit           Hard Limit           Units     \n\
                    Max open files            1024                 524288               files     \n\
                    Max locked memory         8388608              unlimited            bytes     \n";
        assert_eq!(memlock_limits(text), Some((Some(8_388_608), None)));
        assert_eq!(memlock_limits("Max open files 1 2 files\n"), None);
    }

    #[test]
    fn ethtool_ring_sizes() {
        let text = "Ring parameters for eth0:\nPre-set maximums:\nRX:\t\t4096\nRX Mini:\tn/a\n\
                    RX Jumbo:\tn/a\nTX:\t\t4096\nCurrent hardware settings:\nRX:\t\t512\n\
                    RX Mini:\tn/a\nRX Jumbo:\tn/a\nTX:\t\t1024\n";
        assert_eq!(
            ethtool_rings(text),
            Some(((Some(4096), Some(4096)), (Some(512), Some(1024))))
        );
        assert_eq!(
            ethtool_rings("netlink error: Operation not supported\n"),
            None
        );
    }

    #[test]
    fn numbers() {
        assert_eq!(number("60\n"), Some(60));
        assert_eq!(number(" 65536 "), Some(65536));
        assert_eq!(number("-1"), None);
    }
}
