//! Writes metric families in the Prometheus text format 0.0.4, or in OpenMetrics 1.0 text
//! when the scraper asks for it (`Accept: application/openmetrics-text`). The two differ in
//! little that matters here: OpenMetrics names a counter family without its `_total` suffix
//! (its samples keep it) and ends with `# EOF`.
//!
//! Written by hand: the format is a few lines of rules, and no exposition crate would spare
//! the per-shard merge that keeps counting off the data path.

use std::fmt::Write;

use crate::runtime::histogram::LatencyHistogram;

/// `Content-Type` of the Prometheus text format.
pub const PROMETHEUS_CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";
/// `Content-Type` of OpenMetrics text.
pub const OPENMETRICS_CONTENT_TYPE: &str =
    "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// A metric family's type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Counter,
    Gauge,
    Histogram,
}

/// The text being written, one family after another.
pub struct Exposition {
    out: String,
    openmetrics: bool,
}

impl Exposition {
    pub fn new(openmetrics: bool) -> Exposition {
        Exposition {
            out: String::with_capacity(16 * 1024),
            openmetrics,
        }
    }

    /// Starts a family: its `# HELP` and `# TYPE` lines. A counter's `name` ends in `_total`
    /// (its samples' name); OpenMetrics names the family without it.
    pub fn family(&mut self, name: &str, kind: Kind, help: &str) {
        debug_assert!(valid_name(name), "{name}");
        debug_assert!(kind != Kind::Counter || name.ends_with("_total"), "{name}");
        let family = match kind {
            Kind::Counter if self.openmetrics => name.trim_end_matches("_total"),
            _ => name,
        };
        let kind = match kind {
            Kind::Counter => "counter",
            Kind::Gauge => "gauge",
            Kind::Histogram => "histogram",
        };
        let _ = writeln!(self.out, "# HELP {family} {}", escape_help(help));
        let _ = writeln!(self.out, "# TYPE {family} {kind}");
    }

    /// One sample line: `name{labels} value`.
    pub fn sample(&mut self, name: &str, labels: &[(&str, &str)], value: f64) {
        self.out.push_str(name);
        self.labels(labels, None);
        self.out.push(' ');
        self.value(value);
        self.out.push('\n');
    }

    /// A histogram's sample lines: cumulative `_bucket`s with `le`, `+Inf`, `_sum`, `_count`.
    pub fn histogram(&mut self, name: &str, labels: &[(&str, &str)], h: &LatencyHistogram) {
        let mut le = String::new();
        for (bound, n) in h.cumulative() {
            le.clear();
            let _ = write!(le, "{bound}");
            self.bucket(name, labels, &le, n);
        }
        self.bucket(name, labels, "+Inf", h.count());
        let _ = write!(self.out, "{name}_sum");
        self.labels(labels, None);
        self.out.push(' ');
        self.value(h.sum_seconds());
        let _ = write!(self.out, "\n{name}_count");
        self.labels(labels, None);
        let _ = writeln!(self.out, " {}", h.count());
    }

    fn bucket(&mut self, name: &str, labels: &[(&str, &str)], le: &str, n: u64) {
        let _ = write!(self.out, "{name}_bucket");
        self.labels(labels, Some(le));
        let _ = writeln!(self.out, " {n}");
    }

    fn labels(&mut self, labels: &[(&str, &str)], le: Option<&str>) {
        if labels.is_empty() && le.is_none() {
            return;
        }
        self.out.push('{');
        let mut first = true;
        for (k, v) in labels.iter().copied().chain(le.map(|le| ("le", le))) {
            debug_assert!(valid_name(k), "{k}");
            if !first {
                self.out.push(',');
            }
            first = false;
            self.out.push_str(k);
            self.out.push_str("=\"");
            escape_label_into(&mut self.out, v);
            self.out.push('"');
        }
        self.out.push('}');
    }

    fn value(&mut self, v: f64) {
        if v.is_nan() {
            self.out.push_str("NaN");
        } else if v.is_infinite() {
            self.out.push_str(if v > 0.0 { "+Inf" } else { "-Inf" });
        } else {
            let _ = write!(self.out, "{v}");
        }
    }

    /// The finished text (with `# EOF` in OpenMetrics).
    pub fn finish(mut self) -> String {
        if self.openmetrics {
            self.out.push_str("# EOF\n");
        }
        self.out
    }
}

/// `[a-zA-Z_:][a-zA-Z0-9_:]*`, as metric and label names must be.
fn valid_name(s: &str) -> bool {
    let mut chars = s.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_' || c == ':')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
}

/// A label value with `\`, `"` and newline escaped.
fn escape_label_into(out: &mut String, v: &str) {
    for c in v.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
}

/// HELP text with `\` and newline escaped.
fn escape_help(v: &str) -> String {
    v.replace('\\', "\\\\").replace('\n', "\\n")
}

/// A Kafka error code as the name Kafka gives it (`NOT_LEADER_OR_FOLLOWER`); `NONE` for 0,
/// `UNKNOWN_<code>` for a code the protocol crate does not know.
pub fn error_name(code: i16) -> String {
    if code == 0 {
        return "NONE".into();
    }
    use kafka_protocol::error::ResponseError;
    match ResponseError::try_from_code(code) {
        Some(ResponseError::Unknown(_)) | None => format!("UNKNOWN_{code}"),
        Some(e) => screaming_snake(&format!("{e:?}")),
    }
}

/// `NotLeaderOrFollower` -> `NOT_LEADER_OR_FOLLOWER`.
fn screaming_snake(camel: &str) -> String {
    let mut out = String::with_capacity(camel.len() + 8);
    for (i, c) in camel.chars().enumerate() {
        if c.is_ascii_uppercase() && i > 0 {
            out.push('_');
        }
        out.push(c.to_ascii_uppercase());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn prometheus_text_has_help_type_escaped_labels_and_histogram_lines() {
        let mut e = Exposition::new(false);
        e.family("sluice_x_total", Kind::Counter, "a \\ b\nc");
        e.sample("sluice_x_total", &[("topic", "a\"b\\c\nd")], 5.0);
        e.family("sluice_g", Kind::Gauge, "g");
        e.sample("sluice_g", &[], 0.25);
        e.sample("sluice_g", &[("a", "1"), ("b", "2")], f64::INFINITY);
        let mut h = LatencyHistogram::new();
        h.record(Duration::from_micros(200));
        h.record(Duration::from_secs(20));
        e.family("sluice_h_seconds", Kind::Histogram, "h");
        e.histogram("sluice_h_seconds", &[("api", "Produce")], &h);
        let text = e.finish();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines[0], "# HELP sluice_x_total a \\\\ b\\nc");
        assert_eq!(lines[1], "# TYPE sluice_x_total counter");
        assert_eq!(lines[2], "sluice_x_total{topic=\"a\\\"b\\\\c\\nd\"} 5");
        assert_eq!(lines[5], "sluice_g 0.25");
        assert_eq!(lines[6], "sluice_g{a=\"1\",b=\"2\"} +Inf");
        assert_eq!(
            lines[9],
            "sluice_h_seconds_bucket{api=\"Produce\",le=\"0.0001\"} 0"
        );
        assert_eq!(
            lines[10],
            "sluice_h_seconds_bucket{api=\"Produce\",le=\"0.00025\"} 1"
        );
        assert_eq!(
            lines[24],
            "sluice_h_seconds_bucket{api=\"Produce\",le=\"10\"} 1"
        );
        assert_eq!(
            lines[25],
            "sluice_h_seconds_bucket{api=\"Produce\",le=\"+Inf\"} 2"
        );
        assert_eq!(lines[26], "sluice_h_seconds_sum{api=\"Produce\"} 20.0002");
        assert_eq!(lines[27], "sluice_h_seconds_count{api=\"Produce\"} 2");
        assert_eq!(lines.len(), 28);
        assert!(!text.contains("# EOF"));
    }

    #[test]
    fn openmetrics_names_counter_families_without_total_and_ends_with_eof() {
        let mut e = Exposition::new(true);
        e.family("sluice_x_total", Kind::Counter, "x");
        e.sample("sluice_x_total", &[], 1.0);
        let text = e.finish();
        assert_eq!(
            text,
            "# HELP sluice_x x\n# TYPE sluice_x counter\nsluice_x_total 1\n# EOF\n"
        );
    }

    #[test]
    fn names_are_checked_and_errors_named_as_kafka_does() {
        assert!(valid_name("sluice_a:b_1"));
        assert!(!valid_name("1a"));
        assert!(!valid_name("a-b"));
        assert!(!valid_name(""));
        assert_eq!(error_name(0), "NONE");
        assert_eq!(error_name(6), "NOT_LEADER_OR_FOLLOWER");
        assert_eq!(error_name(56), "KAFKA_STORAGE_ERROR");
        assert_eq!(error_name(-30000), "UNKNOWN_-30000");
    }
}
