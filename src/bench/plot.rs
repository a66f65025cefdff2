//! `--plot FILE.svg|.html`: two panels drawn by hand as SVG, so a person can look instead of
//! read. Top: latency over time (p50, p99 and max of each second). Bottom: the latency
//! distribution over percentiles on a "nines" axis (50%, 90%, 99%, 99.9%, ...), the usual
//! HdrHistogram picture. Both latency axes are logarithmic. `.html` wraps the same SVG in a page.

use std::fmt::Write as _;
use std::path::Path;

use super::report::Outcome;
use super::stats::Series;

const WIDTH: f64 = 900.0;
const PANEL_HEIGHT: f64 = 300.0;
const LEFT: f64 = 80.0;
const RIGHT: f64 = 130.0;
const TOP: f64 = 50.0;
const GAP: f64 = 90.0;

/// Log-scale y axis over whole decades of microseconds.
struct LogAxis {
    lo: f64,
    hi: f64,
}

impl LogAxis {
    fn new(values: impl Iterator<Item = u64>) -> LogAxis {
        let (mut min, mut max) = (u64::MAX, 0u64);
        for v in values {
            let v = v.max(1);
            min = min.min(v);
            max = max.max(v);
        }
        if max == 0 {
            (min, max) = (1, 10);
        }
        let lo = (min as f64).log10().floor();
        let hi = ((max as f64).log10().ceil()).max(lo + 1.0);
        LogAxis { lo, hi }
    }
    /// 0 at the bottom, 1 at the top.
    fn frac(&self, v: u64) -> f64 {
        (((v.max(1)) as f64).log10() - self.lo) / (self.hi - self.lo)
    }
    fn decades(&self) -> impl Iterator<Item = u64> {
        (self.lo as i32..=self.hi as i32).map(|d| 10u64.pow(d as u32))
    }
}

/// "100 us", "1 ms", "10 s".
fn decade_label(v: u64) -> String {
    match v {
        v if v >= 1_000_000 => format!("{} s", v / 1_000_000),
        v if v >= 1_000 => format!("{} ms", v / 1_000),
        v => format!("{v} us"),
    }
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

fn frame(svg: &mut String, top: f64, title: &str, axis: &LogAxis) {
    let w = WIDTH - LEFT - RIGHT;
    let _ = writeln!(
        svg,
        r##"<text x="{LEFT}" y="{:.1}" font-size="15" font-weight="bold">{}</text>"##,
        top - 12.0,
        escape(title)
    );
    let _ = writeln!(
        svg,
        r##"<rect x="{LEFT}" y="{top:.1}" width="{w:.1}" height="{PANEL_HEIGHT}" fill="none" stroke="#888"/>"##
    );
    for d in axis.decades() {
        let y = top + PANEL_HEIGHT * (1.0 - axis.frac(d));
        let _ = writeln!(
            svg,
            r##"<line x1="{LEFT}" y1="{y:.1}" x2="{:.1}" y2="{y:.1}" stroke="#ddd"/><text x="{:.1}" y="{:.1}" font-size="11" text-anchor="end">{}</text>"##,
            LEFT + w,
            LEFT - 6.0,
            y + 4.0,
            decade_label(d)
        );
    }
}

fn polyline(svg: &mut String, points: &[(f64, f64)], color: &str, label: &str, legend_y: f64) {
    if points.is_empty() {
        return;
    }
    let mut d = String::new();
    for (x, y) in points {
        let _ = write!(d, "{x:.1},{y:.1} ");
    }
    let _ = writeln!(
        svg,
        r##"<polyline points="{}" fill="none" stroke="{color}" stroke-width="1.6"/>"##,
        d.trim_end()
    );
    let lx = WIDTH - RIGHT + 15.0;
    let _ = writeln!(
        svg,
        r##"<line x1="{lx}" y1="{legend_y}" x2="{:.1}" y2="{legend_y}" stroke="{color}" stroke-width="3"/><text x="{:.1}" y="{:.1}" font-size="12">{label}</text>"##,
        lx + 20.0,
        lx + 26.0,
        legend_y + 4.0
    );
}

/// The SVG document.
pub fn svg(outcome: &Outcome, series: &Series) -> String {
    let height = TOP + 2.0 * PANEL_HEIGHT + GAP + 50.0;
    let w = WIDTH - LEFT - RIGHT;
    let mut svg = String::new();
    let _ = writeln!(
        svg,
        r##"<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{height}" viewBox="0 0 {WIDTH} {height}" font-family="sans-serif">"##
    );
    let _ = writeln!(svg, r##"<rect width="100%" height="100%" fill="white"/>"##);
    let _ = writeln!(
        svg,
        r##"<text x="{LEFT}" y="20" font-size="13">skein bench {} '{}': {:.0} records/s, {:.1} MB/s, {} errors; latency: {}</text>"##,
        outcome.mode.name(),
        escape(&outcome.topic),
        outcome.records_per_s,
        outcome.mb_per_s,
        outcome.errors,
        escape(outcome.latency)
    );

    // Panel 1: latency over time.
    let samples = &series.samples;
    let axis = LogAxis::new(samples.iter().flat_map(|s| [s.p50_us, s.p99_us, s.max_us]));
    let top = TOP;
    frame(&mut svg, top, "Latency over time (per second)", &axis);
    let t_max = samples.last().map_or(1.0, |s| s.t_s).max(1.0);
    let x_of = |t: f64| LEFT + w * t / t_max;
    let y_of = |v: u64| top + PANEL_HEIGHT * (1.0 - axis.frac(v));
    // Whole-second ticks, at most about ten.
    let step = (t_max / 10.0).ceil().max(1.0);
    let mut t = 0.0;
    while t <= t_max + 1e-9 {
        let _ = writeln!(
            svg,
            r##"<text x="{:.1}" y="{:.1}" font-size="11" text-anchor="middle">{t:.0}s</text>"##,
            x_of(t),
            top + PANEL_HEIGHT + 16.0
        );
        t += step;
    }
    // Only seconds that measured something.
    let measured: Vec<_> = samples.iter().filter(|s| s.max_us > 0).collect();
    for (i, (label, color, pick)) in [
        (
            "p50",
            "#1f77b4",
            (|s: &super::stats::Sample| s.p50_us) as fn(&_) -> u64,
        ),
        ("p99", "#ff7f0e", |s| s.p99_us),
        ("max", "#d62728", |s| s.max_us),
    ]
    .into_iter()
    .enumerate()
    {
        let points: Vec<(f64, f64)> = measured
            .iter()
            .map(|s| (x_of(s.t_s), y_of(pick(s))))
            .collect();
        polyline(
            &mut svg,
            &points,
            color,
            label,
            top + 20.0 + 20.0 * i as f64,
        );
    }

    // Panel 2: percentile distribution on a nines axis: x = log10(1 / (1 - q)).
    let top2 = TOP + PANEL_HEIGHT + GAP;
    let h = &series.total;
    let max_nines = if !h.is_empty() {
        (h.len() as f64).log10().clamp(1.0, 6.0).ceil()
    } else {
        1.0
    };
    let mut curve = Vec::new();
    let steps = 200;
    for i in 0..=steps {
        let nines = max_nines * f64::from(i) / f64::from(steps);
        let q = 1.0 - 10f64.powf(-nines);
        curve.push((
            nines,
            if h.is_empty() {
                0
            } else {
                h.value_at_quantile(q)
            },
        ));
    }
    if !h.is_empty() {
        curve.push((max_nines, h.max()));
    }
    let axis2 = LogAxis::new(curve.iter().map(|c| c.1));
    frame(&mut svg, top2, "Latency by percentile", &axis2);
    for n in 0..=max_nines as u32 {
        let x = LEFT + w * f64::from(n) / max_nines;
        let label = match n {
            0 => "0%".to_owned(),
            1 => "90%".to_owned(),
            _ => format!("99.{}%", "9".repeat(n as usize - 2)).replace("99.%", "99%"),
        };
        let _ = writeln!(
            svg,
            r##"<line x1="{x:.1}" y1="{top2}" x2="{x:.1}" y2="{:.1}" stroke="#eee"/><text x="{x:.1}" y="{:.1}" font-size="11" text-anchor="middle">{label}</text>"##,
            top2 + PANEL_HEIGHT,
            top2 + PANEL_HEIGHT + 16.0
        );
    }
    let points: Vec<(f64, f64)> = if h.is_empty() {
        Vec::new()
    } else {
        curve
            .iter()
            .map(|&(n, v)| {
                (
                    LEFT + w * n / max_nines,
                    top2 + PANEL_HEIGHT * (1.0 - axis2.frac(v)),
                )
            })
            .collect()
    };
    polyline(&mut svg, &points, "#2ca02c", "latency", top2 + 20.0);
    svg.push_str("</svg>\n");
    svg
}

/// Writes the SVG, or an HTML page around it if `path` ends in `.html`/`.htm`.
pub fn write(path: &Path, outcome: &Outcome, series: &Series) -> std::io::Result<()> {
    let svg = svg(outcome, series);
    let html = path
        .extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("html") || e.eq_ignore_ascii_case("htm"));
    let text = if html {
        format!(
            "<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>skein bench {}</title></head>\n<body>\n{svg}</body></html>\n",
            outcome.mode.name()
        )
    } else {
        svg
    };
    std::fs::write(path, text)
}
