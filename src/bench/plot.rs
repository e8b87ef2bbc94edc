//! The latency plot, hand-written SVG: latency (ms) against percentile on
//! HdrHistogram's log scale (x = log10(1 / (1 - p)), so 90%, 99%, 99.9% ...
//! are equally spaced), one line per series. The latency axis is linear,
//! or logarithmic (decades equally spaced) when the largest latency is more
//! than [`LOG_Y_RATIO`] times the smallest: a tail 50 times the median
//! would otherwise flatten everything below p99 onto the floor.

use std::fmt::Write;

/// One line of the plot: (percentile 0..100, latency µs) points.
#[derive(Debug, Clone)]
pub struct Series {
    pub name: String,
    pub points: Vec<(f64, u64)>,
}

const WIDTH: f64 = 900.0;
const HEIGHT: f64 = 520.0;
const LEFT: f64 = 70.0;
const RIGHT: f64 = 230.0;
const TOP: f64 = 40.0;
const BOTTOM: f64 = 50.0;
/// Where a legend entry's colour swatch (20 px) starts, right of the plot's edge.
const LEGEND_LINE_X: f64 = 15.0;
/// Where its text starts.
const LEGEND_TEXT_X: f64 = LEGEND_LINE_X + 26.0;
/// A generous average advance of one 12 px sans-serif character.
const CHAR_PX: f64 = 7.5;
/// Rightmost percentile shown: 1 - 10^-NINES.
const NINES: f64 = 5.0;
const COLOURS: [&str; 8] = [
    "#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#17becf",
];

/// Largest-to-smallest latency ratio above which the latency axis is logarithmic.
const LOG_Y_RATIO: f64 = 20.0;

/// How latencies map onto the plot's height.
#[derive(Debug, Clone, Copy, PartialEq)]
enum YScale {
    /// 0 to `max` ms.
    Linear { max: f64 },
    /// `lo` to `hi` ms, both powers of ten.
    Log { lo: f64, hi: f64 },
}

impl YScale {
    /// Linear from 0 to a round ceiling, or log over whole decades when the
    /// positive latencies span more than [`LOG_Y_RATIO`].
    fn for_latencies_ms(values: impl Iterator<Item = f64>) -> YScale {
        let (mut min, mut max) = (f64::INFINITY, 0.0f64);
        for v in values.filter(|v| *v > 0.0 && v.is_finite()) {
            min = min.min(v);
            max = max.max(v);
        }
        if max > 0.0 && max / min > LOG_Y_RATIO {
            YScale::Log {
                lo: 10f64.powf(min.log10().floor()),
                hi: 10f64.powf(max.log10().ceil()),
            }
        } else {
            YScale::Linear {
                max: nice_ceiling(max),
            }
        }
    }

    /// Height fraction 0..=1 of a latency in ms (clamped to the axis).
    fn frac(self, ms: f64) -> f64 {
        match self {
            YScale::Linear { max } => (ms / max).clamp(0.0, 1.0),
            YScale::Log { lo, hi } => {
                let ms = ms.max(lo);
                ((ms / lo).log10() / (hi / lo).log10()).clamp(0.0, 1.0)
            }
        }
    }

    /// Gridline values in ms: six steps on a linear axis; 1, 2 and 5 of
    /// every decade on a log axis.
    fn ticks(self) -> Vec<f64> {
        match self {
            YScale::Linear { max } => (0..=5).map(|k| max * k as f64 / 5.0).collect(),
            YScale::Log { lo, hi } => {
                let mut out = Vec::new();
                let mut decade = lo;
                while decade < hi * 0.999 {
                    out.extend([decade, 2.0 * decade, 5.0 * decade]);
                    decade *= 10.0;
                }
                out.push(hi);
                out
            }
        }
    }
}

/// x position in 0..=NINES of a percentile.
fn nines(pct: f64) -> f64 {
    let rest = (1.0 - pct / 100.0).max(10f64.powf(-NINES));
    (-rest.log10()).clamp(0.0, NINES)
}

/// A round upper bound for the y axis (1, 2 or 5 times a power of ten).
fn nice_ceiling(v: f64) -> f64 {
    if v <= 0.0 || !v.is_finite() {
        return 1.0;
    }
    let p = 10f64.powf(v.log10().floor());
    for m in [1.0, 2.0, 5.0, 10.0] {
        if v <= m * p {
            return m * p;
        }
    }
    10.0 * p
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// The whole SVG document.
pub fn latency_svg(title: &str, series: &[Series]) -> String {
    let plot_w = WIDTH - LEFT - RIGHT;
    let plot_h = HEIGHT - TOP - BOTTOM;
    let scale = YScale::for_latencies_ms(
        series
            .iter()
            .flat_map(|s| s.points.iter().map(|p| p.1 as f64 / 1000.0)),
    );
    let x = |pct: f64| LEFT + nines(pct) / NINES * plot_w;
    let y = |us: u64| TOP + plot_h - scale.frac(us as f64 / 1000.0) * plot_h;

    // The legend sits right of the plot; long names (a `compare` of two
    // result paths) widen the picture instead of running off its edge.
    let longest = series
        .iter()
        .map(|s| s.name.chars().count())
        .max()
        .unwrap_or(0);
    let width = WIDTH.max(LEFT + plot_w + LEGEND_TEXT_X + longest as f64 * CHAR_PX + 10.0);
    let mut s = String::new();
    let _ = writeln!(
        s,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{HEIGHT}" viewBox="0 0 {width} {HEIGHT}" font-family="sans-serif" font-size="12">"#
    );
    let _ = writeln!(s, r#"<rect width="100%" height="100%" fill="white"/>"#);
    let _ = writeln!(
        s,
        r#"<text x="{}" y="22" text-anchor="middle" font-size="15">{}</text>"#,
        LEFT + plot_w / 2.0,
        escape(title)
    );
    // Grid and axis labels.
    for k in 0..=NINES as usize {
        let gx = LEFT + k as f64 / NINES * plot_w;
        let label = match k {
            0 => "0%".to_string(),
            1 => "90%".to_string(),
            _ => format!("99.{}%", "9".repeat(k - 2)).replace("99.%", "99%"),
        };
        let _ = writeln!(
            s,
            r##"<line x1="{gx:.1}" y1="{TOP}" x2="{gx:.1}" y2="{:.1}" stroke="#ddd"/><text x="{gx:.1}" y="{:.1}" text-anchor="middle">{label}</text>"##,
            TOP + plot_h,
            TOP + plot_h + 18.0
        );
    }
    for v in scale.ticks() {
        let gy = TOP + plot_h - scale.frac(v) * plot_h;
        let _ = writeln!(
            s,
            r##"<line x1="{LEFT}" y1="{gy:.1}" x2="{:.1}" y2="{gy:.1}" stroke="#ddd"/><text x="{:.1}" y="{:.1}" text-anchor="end">{}</text>"##,
            LEFT + plot_w,
            LEFT - 6.0,
            gy + 4.0,
            trim_float(v)
        );
    }
    let _ = writeln!(
        s,
        r##"<rect x="{LEFT}" y="{TOP}" width="{plot_w}" height="{plot_h}" fill="none" stroke="#333"/>"##
    );
    let _ = writeln!(
        s,
        r#"<text x="{:.1}" y="{:.1}" text-anchor="middle">percentile</text>"#,
        LEFT + plot_w / 2.0,
        HEIGHT - 10.0
    );
    let _ = writeln!(
        s,
        r#"<text x="16" y="{:.1}" text-anchor="middle" transform="rotate(-90 16 {:.1})">latency (ms{})</text>"#,
        TOP + plot_h / 2.0,
        TOP + plot_h / 2.0,
        match scale {
            YScale::Linear { .. } => "",
            YScale::Log { .. } => ", log scale",
        }
    );
    // Lines and legend.
    for (i, ser) in series.iter().enumerate() {
        let colour = COLOURS[i % COLOURS.len()];
        if !ser.points.is_empty() {
            let pts: Vec<String> = ser
                .points
                .iter()
                .map(|&(p, us)| format!("{:.1},{:.1}", x(p), y(us)))
                .collect();
            let _ = writeln!(
                s,
                r#"<polyline fill="none" stroke="{colour}" stroke-width="2" points="{}"/>"#,
                pts.join(" ")
            );
        }
        let ly = TOP + 10.0 + i as f64 * 20.0;
        let lx = LEFT + plot_w + LEGEND_LINE_X;
        let _ = writeln!(
            s,
            r#"<line x1="{lx:.1}" y1="{ly:.1}" x2="{:.1}" y2="{ly:.1}" stroke="{colour}" stroke-width="3"/><text x="{:.1}" y="{:.1}">{}</text>"#,
            lx + 20.0,
            LEFT + plot_w + LEGEND_TEXT_X,
            ly + 4.0,
            escape(&ser.name)
        );
    }
    s.push_str("</svg>\n");
    s
}

fn trim_float(v: f64) -> String {
    let t = format!("{v:.3}");
    t.trim_end_matches('0').trim_end_matches('.').to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_map_to_equal_steps() {
        assert_eq!(nines(0.0), 0.0);
        assert!((nines(90.0) - 1.0).abs() < 1e-9);
        assert!((nines(99.9) - 3.0).abs() < 1e-9);
        assert_eq!(nines(100.0), NINES, "100% is clamped to the right edge");
    }

    #[test]
    fn nice_ceiling_rounds_up() {
        assert_eq!(nice_ceiling(0.0), 1.0);
        assert_eq!(nice_ceiling(3.2), 5.0);
        assert_eq!(nice_ceiling(12.0), 20.0);
        assert_eq!(nice_ceiling(0.07), 0.1);
    }

    #[test]
    fn latency_axis_turns_logarithmic_for_long_tails() {
        // 2 to 30 ms: within the ratio, linear from 0 to a round ceiling.
        let lin = YScale::for_latencies_ms([2.0, 30.0].into_iter());
        assert_eq!(lin, YScale::Linear { max: 50.0 });
        assert_eq!(lin.ticks().len(), 6);
        // 0.3 to 150 ms: log over whole decades, each decade the same height.
        let log = YScale::for_latencies_ms([0.0, 0.3, 2.0, 150.0].into_iter());
        assert_eq!(
            log,
            YScale::Log {
                lo: 0.1,
                hi: 1000.0
            }
        );
        let step = log.frac(10.0) - log.frac(1.0);
        assert!((log.frac(100.0) - log.frac(10.0) - step).abs() < 1e-9);
        assert!((step - 1.0 / 4.0).abs() < 1e-9);
        assert_eq!(log.frac(0.0), 0.0, "zero sits on the floor");
        assert_eq!(log.ticks().first(), Some(&0.1));
        assert_eq!(log.ticks().last(), Some(&1000.0));
        let svg = latency_svg(
            "tail",
            &[Series {
                name: "publish".into(),
                points: vec![(50.0, 2_000), (99.9, 150_000)],
            }],
        );
        assert!(svg.contains("latency (ms, log scale)"));
        assert!(svg.contains(">1<") && svg.contains(">10<") && svg.contains(">100<"));
    }

    #[test]
    fn svg_has_one_polyline_per_series_and_escapes_names() {
        let svg = latency_svg(
            "t <1>",
            &[
                Series {
                    name: "publish & co".into(),
                    points: vec![(0.0, 100), (99.0, 2000)],
                },
                Series {
                    name: "e2e".into(),
                    points: vec![(50.0, 300)],
                },
            ],
        );
        assert!(svg.starts_with("<svg xmlns=\"http://www.w3.org/2000/svg\""));
        assert!(svg.trim_end().ends_with("</svg>"));
        assert_eq!(svg.matches("<polyline").count(), 2);
        assert!(svg.contains("publish &amp; co"));
        assert!(svg.contains("t &lt;1&gt;"));
        assert!(svg.contains(">99.9%<") && svg.contains(">99%<") && svg.contains(">90%<"));
        assert!(
            svg.contains(r#"width="900""#),
            "short names keep the usual width"
        );
    }

    #[test]
    fn long_legend_names_widen_the_picture() {
        let name = "/tmp/sweep/io_mode=buffered,fetch.splice.enable=true/result.json publish";
        let svg = latency_svg(
            "compare",
            &[Series {
                name: name.into(),
                points: vec![(50.0, 300)],
            }],
        );
        assert!(
            svg.contains(&format!(">{name}<")),
            "the name is written whole"
        );
        let width: f64 = svg
            .split("width=\"")
            .nth(1)
            .and_then(|w| w.split('"').next())
            .and_then(|w| w.parse().ok())
            .expect("width attribute");
        let text_x = LEFT + (WIDTH - LEFT - RIGHT) + LEGEND_TEXT_X;
        assert!(width >= text_x + name.len() as f64 * CHAR_PX, "{width}");
    }
}
