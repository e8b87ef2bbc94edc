//! Markdown tables: one run (`result.md`), and runs side by side (`compare`,
//! `sweep`), with each column's ratio to the first.

use std::fmt::Write;

use super::stats::{LatencySummary, RunResult};

/// A latency in µs as milliseconds with 3 decimals.
pub fn ms(us: u64) -> String {
    format!("{:.3}", us as f64 / 1000.0)
}

fn rate(x: f64) -> String {
    if x >= 100.0 {
        format!("{x:.0}")
    } else {
        format!("{x:.2}")
    }
}

/// The table of one run: rates, counts, and both latency distributions.
pub fn run_markdown(r: &RunResult) -> String {
    let w = &r.workload;
    let mut s = String::new();
    let _ = writeln!(s, "### {}\n", r.label);
    let _ = writeln!(
        s,
        "{} topic(s) x {} partition(s), {} B messages, {} producer(s)/topic, {} \
         subscription(s) x {} consumer(s), rate {}, acks={}, batch.size={}, linger.ms={}, \
         compression={}, test {:.1} s after {} s warm-up; bootstrap {}{}\n",
        w.topics,
        w.partitions_per_topic,
        w.message_size,
        w.producers_per_topic,
        w.subscriptions_per_topic,
        w.consumer_per_subscription,
        if w.producer_rate > 0.0 {
            format!("{} msg/s", w.producer_rate)
        } else {
            "max".into()
        },
        w.acks,
        w.batch_size,
        w.linger_ms,
        w.compression,
        r.test_duration_s,
        w.warmup_duration_seconds,
        r.bootstrap,
        if r.coordinated_omission_corrected {
            "; latencies from intended send times (coordinated omission corrected)"
        } else {
            ""
        }
    );
    s.push_str("| metric | value |\n|---|---|\n");
    let rows = [
        ("publish rate (msg/s)", rate(r.publish_rate_msg_s)),
        ("publish rate (MB/s)", rate(r.publish_rate_mb_s)),
        ("consume rate (msg/s)", rate(r.consume_rate_msg_s)),
        ("consume rate (MB/s)", rate(r.consume_rate_mb_s)),
        ("backlog max / end (msgs)", {
            format!("{} / {}", r.backlog_max_msgs, r.backlog_end_msgs)
        }),
        (
            "messages produced / failed / consumed (expected)",
            format!(
                "{} / {} / {} ({})",
                r.messages_produced, r.messages_failed, r.messages_consumed, r.messages_expected
            ),
        ),
    ];
    for (k, v) in rows {
        let _ = writeln!(s, "| {k} | {v} |");
    }
    s.push_str("\n| latency (ms) | p50 | p75 | p95 | p99 | p99.9 | p99.99 | max | count |\n");
    s.push_str("|---|---|---|---|---|---|---|---|---|\n");
    for (name, l) in [
        ("publish", &r.publish_latency),
        ("end-to-end", &r.end_to_end_latency),
    ] {
        let _ = write!(s, "| {name} ");
        for (_, v) in l.percentiles() {
            let _ = write!(s, "| {} ", ms(v));
        }
        let _ = writeln!(s, "| {} |", l.count);
    }
    s
}

/// Runs side by side: one column per run, `(x0.85)` after each value of the
/// second and later runs giving its ratio to the first.
pub fn compare_markdown(runs: &[RunResult]) -> String {
    let mut s = String::new();
    let _ = write!(s, "| metric ");
    for r in runs {
        let _ = write!(s, "| {} ", r.label.replace('|', "/"));
    }
    s.push_str("|\n|---");
    for _ in runs {
        s.push_str("|---");
    }
    s.push_str("|\n");
    // (row name, one value per run)
    let mut rows: Vec<(String, Vec<f64>)> = vec![
        (
            "publish rate (msg/s)".into(),
            runs.iter().map(|r| r.publish_rate_msg_s).collect(),
        ),
        (
            "publish rate (MB/s)".into(),
            runs.iter().map(|r| r.publish_rate_mb_s).collect(),
        ),
        (
            "consume rate (msg/s)".into(),
            runs.iter().map(|r| r.consume_rate_msg_s).collect(),
        ),
        (
            "consume rate (MB/s)".into(),
            runs.iter().map(|r| r.consume_rate_mb_s).collect(),
        ),
        (
            "backlog max (msgs)".into(),
            runs.iter().map(|r| r.backlog_max_msgs as f64).collect(),
        ),
    ];
    for kind in ["publish", "end-to-end"] {
        let lat = |r: &RunResult| -> LatencySummary {
            if kind == "publish" {
                r.publish_latency.clone()
            } else {
                r.end_to_end_latency.clone()
            }
        };
        let per_run: Vec<LatencySummary> = runs.iter().map(lat).collect();
        for (i, (p, _)) in LatencySummary::default().percentiles().iter().enumerate() {
            let values = per_run
                .iter()
                .map(|l| l.percentiles()[i].1 as f64 / 1000.0)
                .collect();
            rows.push((format!("{kind} latency {p} (ms)"), values));
        }
    }
    for (name, values) in rows {
        let _ = write!(s, "| {name} ");
        let base = values.first().copied().unwrap_or(0.0);
        let latency = name.ends_with("(ms)");
        for (i, &v) in values.iter().enumerate() {
            if latency {
                let _ = write!(s, "| {v:.3}");
            } else if name.ends_with("(msgs)") {
                let _ = write!(s, "| {v:.0}");
            } else {
                let _ = write!(s, "| {}", rate(v));
            }
            if i > 0 {
                if base > 0.0 {
                    let _ = write!(s, " (x{:.2})", v / base);
                } else {
                    s.push_str(" (-)");
                }
            }
            s.push(' ');
        }
        s.push_str("|\n");
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(label: &str, rate: f64, p99_us: u64) -> RunResult {
        RunResult {
            label: label.into(),
            publish_rate_msg_s: rate,
            publish_latency: LatencySummary {
                count: 10,
                p50_us: 1000,
                p99_us,
                max_us: p99_us * 2,
                ..LatencySummary::default()
            },
            ..RunResult::default()
        }
    }

    #[test]
    fn ms_has_three_decimals() {
        assert_eq!(ms(1234), "1.234");
        assert_eq!(ms(5), "0.005");
    }

    #[test]
    fn run_table_lists_rates_and_percentiles() {
        let md = run_markdown(&run("smoke", 1500.0, 2500));
        assert!(md.contains("| publish rate (msg/s) | 1500 |"), "{md}");
        assert!(
            md.contains("| publish | 1.000 | 0.000 | 0.000 | 2.500 | 0.000 | 0.000 | 5.000 | 10 |"),
            "{md}"
        );
        assert!(md.contains("| latency (ms) | p50 | p75 | p95 | p99 | p99.9 | p99.99 | max |"));
    }

    #[test]
    fn compare_table_has_one_column_per_run_and_ratios() {
        let md = compare_markdown(&[run("a", 1000.0, 2000), run("b|c", 1500.0, 1000)]);
        let lines: Vec<&str> = md.lines().collect();
        assert_eq!(lines[0], "| metric | a | b/c |");
        assert_eq!(lines[1], "|---|---|---|");
        assert!(
            md.contains("| publish rate (msg/s) | 1000 | 1500 (x1.50) |"),
            "{md}"
        );
        assert!(
            md.contains("| publish latency p99 (ms) | 2.000 | 1.000 (x0.50) |"),
            "{md}"
        );
        assert!(
            md.contains("| consume rate (msg/s) | 0.00 | 0.00 (-) |"),
            "{md}"
        );
        // Every row has the same number of cells.
        let cells = |l: &str| l.matches('|').count();
        assert!(lines.iter().all(|l| cells(l) == 4), "{md}");
    }
}
