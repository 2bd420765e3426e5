//! The latency chart: an SVG of latency by percentile, one line per step, in the
//! usual HdrHistogram layout (percentiles spread as 90 %, 99 %, 99.9 %, … and
//! latency on a log scale), written by hand.

use std::fmt::Write as _;

use hdrhistogram::Histogram;

const WIDTH: f64 = 860.0;
const HEIGHT: f64 = 500.0;
const LEFT: f64 = 70.0;
const RIGHT: f64 = 200.0;
const TOP: f64 = 50.0;
const BOTTOM: f64 = 55.0;
/// Points per line.
const POINTS: usize = 240;
const COLORS: [&str; 8] = [
    "#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#17becf",
];

/// One line of the chart.
pub struct Series<'a> {
    /// Legend text.
    pub label: String,
    /// Latencies in microseconds.
    pub histogram: &'a Histogram<u64>,
}

/// The chart as an SVG document; empty histograms are left out.
pub fn svg(title: &str, series: &[Series<'_>]) -> String {
    let series: Vec<&Series<'_>> = series.iter().filter(|s| !s.histogram.is_empty()).collect();
    // x = log10(1 / (1 - percentile)): 0 is the median's left end, 2 is 99 %, ….
    let x_max = series
        .iter()
        .map(|s| (s.histogram.len() as f64).log10().ceil())
        .fold(2.0, f64::max)
        .min(6.0);
    let ms = |us: u64| (us as f64 / 1000.0).max(0.001);
    let lowest = series
        .iter()
        .map(|s| ms(s.histogram.min()))
        .fold(f64::INFINITY, f64::min);
    let highest = series
        .iter()
        .map(|s| ms(s.histogram.max()))
        .fold(0.0, f64::max);
    let (y_lo, y_hi) = if series.is_empty() {
        (-1.0, 3.0)
    } else {
        let lo = lowest.log10().floor();
        (lo, highest.log10().ceil().max(lo + 1.0))
    };
    let (plot_w, plot_h) = (WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM);
    let px = |x: f64| LEFT + x / x_max * plot_w;
    let py = |ms: f64| TOP + plot_h - (ms.log10() - y_lo) / (y_hi - y_lo) * plot_h;

    let mut out = String::new();
    let _ = writeln!(
        out,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{HEIGHT}" viewBox="0 0 {WIDTH} {HEIGHT}" font-family="sans-serif" font-size="12">"#
    );
    let _ = writeln!(
        out,
        r#"<rect width="100%" height="100%" fill="white"/><text x="{}" y="24" text-anchor="middle" font-size="14">{}</text>"#,
        LEFT + plot_w / 2.0,
        escape(title)
    );
    for decade in 0..=(x_max as u32) {
        let x = px(f64::from(decade));
        let label = percentile_label(decade);
        let _ = writeln!(
            out,
            r##"<line x1="{x:.1}" y1="{TOP}" x2="{x:.1}" y2="{:.1}" stroke="#ddd"/><text x="{x:.1}" y="{:.1}" text-anchor="middle">{label}</text>"##,
            TOP + plot_h,
            TOP + plot_h + 18.0
        );
    }
    for decade in (y_lo as i32)..=(y_hi as i32) {
        let value = 10f64.powi(decade);
        let y = py(value);
        let _ = writeln!(
            out,
            r##"<line x1="{LEFT}" y1="{y:.1}" x2="{:.1}" y2="{y:.1}" stroke="#ddd"/><text x="{:.1}" y="{:.1}" text-anchor="end">{}</text>"##,
            LEFT + plot_w,
            LEFT - 6.0,
            y + 4.0,
            ms_label(decade)
        );
    }
    let _ = writeln!(
        out,
        r#"<rect x="{LEFT}" y="{TOP}" width="{plot_w}" height="{plot_h}" fill="none" stroke="black"/><text x="{:.1}" y="{:.1}" text-anchor="middle">percentile</text><text transform="translate(18 {:.1}) rotate(-90)" text-anchor="middle">latency (ms, log scale)</text>"#,
        LEFT + plot_w / 2.0,
        HEIGHT - 12.0,
        TOP + plot_h / 2.0
    );
    for (k, series) in series.iter().enumerate() {
        let color = COLORS[k % COLORS.len()];
        let points: Vec<String> = (0..=POINTS)
            .map(|i| {
                let x = x_max * i as f64 / POINTS as f64;
                let quantile = 1.0 - 10f64.powf(-x);
                let value = ms(series.histogram.value_at_quantile(quantile));
                format!("{:.1},{:.1}", px(x), py(value))
            })
            .collect();
        let _ = writeln!(
            out,
            r#"<polyline fill="none" stroke="{color}" stroke-width="2" points="{}"/>"#,
            points.join(" ")
        );
        let y = TOP + 10.0 + 20.0 * k as f64;
        let _ = writeln!(
            out,
            r#"<line x1="{:.1}" y1="{y:.1}" x2="{:.1}" y2="{y:.1}" stroke="{color}" stroke-width="3"/><text x="{:.1}" y="{:.1}">{}</text>"#,
            WIDTH - RIGHT + 12.0,
            WIDTH - RIGHT + 36.0,
            WIDTH - RIGHT + 42.0,
            y + 4.0,
            escape(&series.label)
        );
    }
    out.push_str("</svg>\n");
    out
}

/// `0%`, `90%`, `99%`, `99.9%`, … for decade `d` of the percentile axis.
fn percentile_label(decade: u32) -> String {
    match decade {
        0 => "0%".into(),
        1 => "90%".into(),
        2 => "99%".into(),
        d => format!("99.{}%", "9".repeat(d as usize - 2)),
    }
}

/// The latency tick of `10^decade` ms: `0.01 ms`, `1 ms`, `10 s`.
fn ms_label(decade: i32) -> String {
    match decade {
        ..0 => format!("0.{}1 ms", "0".repeat((-decade - 1) as usize)),
        0..3 => format!("1{} ms", "0".repeat(decade as usize)),
        _ => format!("1{} s", "0".repeat(decade as usize - 3)),
    }
}

/// Text safe inside SVG elements and attributes.
fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn draws_one_line_per_step() {
        let mut fast = crate::latency::histogram();
        let mut slow = crate::latency::histogram();
        for us in 1..=10_000 {
            fast.record(200 + us / 100).unwrap();
            slow.record(2_000 + us * 10).unwrap();
        }
        let empty = crate::latency::histogram();
        let series = [
            Series {
                label: "100/s".into(),
                histogram: &fast,
            },
            Series {
                label: "1000/s".into(),
                histogram: &slow,
            },
            Series {
                label: "none".into(),
                histogram: &empty,
            },
        ];
        let svg = svg("fanout <a&b>", &series);
        assert!(svg.starts_with("<svg") && svg.ends_with("</svg>\n"));
        assert_eq!(svg.matches("<polyline").count(), 2);
        assert!(svg.contains("fanout &lt;a&amp;b&gt;"));
        assert!(svg.contains(">99.99%<") && !svg.contains(">99.999%<"));
        assert!(svg.contains(">0.1 ms<") && svg.contains(">1 s<"));
        assert!(!svg.contains("NaN") && !svg.contains("inf"));
        assert_eq!(percentile_label(5), "99.999%");
        assert_eq!(ms_label(-2), "0.01 ms");
        assert_eq!(ms_label(2), "100 ms");
        assert_eq!(ms_label(4), "10 s");
    }
}
