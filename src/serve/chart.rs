//! The capacity chart: a disk's used share over time as inline SVG, one point per sample
//! (the most used of each run of samples when there are more than the chart can show),
//! with the projected day it fills. Written by hand: a polyline, two axes and four labels
//! do not need a plotting library, and the output stays small and free of scripts.

use std::fmt::Write as _;

/// More points than a 600-pixel-wide chart can show are merged (the most used of each
/// run wins, so a spike never disappears).
pub const MAX_POINTS: usize = 600;

const WIDTH: f64 = 600.0;
const HEIGHT: f64 = 160.0;
/// Room for the labels left of and under the plot.
const LEFT: f64 = 40.0;
const BOTTOM: f64 = 20.0;

/// One disk's chart. `samples` are (Unix seconds, used bytes, free bytes), oldest first.
/// (The projected day it fills is the caption's, beside it.)
pub fn svg(path: &str, samples: &[(i64, u64, u64)]) -> String {
    let points = merge(samples);
    let (t0, t1) = match (points.first(), points.last()) {
        (Some(a), Some(b)) => (a.0, b.0.max(a.0 + 1)),
        _ => (0, 1),
    };
    let x = |t: i64| LEFT + (t - t0) as f64 * (WIDTH - LEFT - 4.0) / (t1 - t0) as f64;
    let y = |pct: f64| 4.0 + (100.0 - pct.clamp(0.0, 100.0)) * (HEIGHT - BOTTOM - 8.0) / 100.0;
    let mut line = String::new();
    for (t, pct) in &points {
        let _ = write!(line, "{:.1},{:.1} ", x(*t), y(*pct));
    }
    let mut out = String::new();
    let _ = write!(
        out,
        r#"<svg xmlns="http://www.w3.org/2000/svg" class="chart" viewBox="0 0 {WIDTH} {HEIGHT}" role="img" aria-label="{} used space over time">"#,
        escape(path)
    );
    for pct in [0.0, 50.0, 100.0] {
        let _ = write!(
            out,
            r##"<line x1="{LEFT}" x2="{w}" y1="{yy:.1}" y2="{yy:.1}" stroke="#ccc" stroke-width="1"/><text x="{lx}" y="{ty:.1}" font-size="10" text-anchor="end" fill="#555">{pct:.0} %</text>"##,
            w = WIDTH - 4.0,
            yy = y(pct),
            lx = LEFT - 4.0,
            ty = y(pct) + 3.0,
        );
    }
    if let (Some(a), Some(b)) = (points.first(), points.last()) {
        let _ = write!(
            out,
            r##"<text x="{LEFT}" y="{HEIGHT}" font-size="10" fill="#555">{}</text><text x="{}" y="{HEIGHT}" font-size="10" text-anchor="end" fill="#555">{}</text>"##,
            crate::clock::show(a.0, "%Y-%m-%d"),
            WIDTH - 4.0,
            crate::clock::show(b.0, "%Y-%m-%d"),
        );
    }
    let _ = write!(
        out,
        r##"<polyline class="used" data-samples="{}" fill="none" stroke="#2a6fdb" stroke-width="1.5" points="{}"/>"##,
        points.len(),
        line.trim_end()
    );
    out.push_str("</svg>");
    out
}

/// (time, used %) per point: every sample, or the most used of each run of samples when
/// there are more than [`MAX_POINTS`].
fn merge(samples: &[(i64, u64, u64)]) -> Vec<(i64, f64)> {
    let pct = |s: &(i64, u64, u64)| {
        let total = s.1.saturating_add(s.2).max(1);
        s.1 as f64 * 100.0 / total as f64
    };
    if samples.len() <= MAX_POINTS {
        return samples.iter().map(|s| (s.0, pct(s))).collect();
    }
    let per = samples.len().div_ceil(MAX_POINTS);
    samples
        .chunks(per)
        .map(|run| {
            let worst = run.iter().map(pct).fold(0.0, f64::max);
            (run[run.len() - 1].0, worst)
        })
        .collect()
}

/// Text safe inside SVG/HTML text and attributes.
fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
        .replace('\'', "&#39;")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_point_per_sample_and_merged_beyond_the_width() {
        let few: Vec<_> = (0..10).map(|i| (i * 300, 50 + i as u64, 50)).collect();
        let s = svg("/srv", &few);
        assert!(s.contains(r#"data-samples="10""#), "{s}");
        let many: Vec<_> = (0..100_000)
            .map(|i| (i * 300, if i == 5_000 { 99 } else { 10 }, 90))
            .collect();
        let pts = merge(&many);
        assert!(pts.len() <= MAX_POINTS);
        // The one spike survives the merge.
        assert!(pts.iter().any(|p| p.1 > 50.0));
    }

    #[test]
    fn a_hostile_path_is_escaped() {
        let s = svg("<script>\"", &[]);
        assert!(!s.contains("<script>"));
    }
}
