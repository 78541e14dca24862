//! The chart beside docs/benchmarks.md: for every workload, Keel's
//! throughput and peak RSS as a fraction of etcd's, one bar each, with the
//! line at 1 where the two systems are even.

use anyhow::{anyhow, Result};
use plotters::coord::ranged1d::SegmentValue;
use plotters::coord::Shift;
use plotters::prelude::*;

/// One workload's bars: Keel / etcd for throughput and for peak RSS.
pub struct Ratios {
    pub workload: String,
    pub throughput: f64,
    pub peak_rss: f64,
}

/// Keel / etcd, or 0 (no bar) when etcd measured nothing.
pub fn ratio(keel: f64, etcd: f64) -> f64 {
    let ratio = keel / etcd;
    if etcd > 0.0 && ratio.is_finite() {
        ratio
    } else {
        0.0
    }
}

const WIDTH: u32 = 980;
const ROW_HEIGHT: u32 = 26;
const BETTER: RGBColor = RGBColor(46, 139, 87);
const WORSE: RGBColor = RGBColor(205, 92, 92);

/// The chart as an SVG document.
pub fn svg(rows: &[Ratios], title: &str) -> Result<String> {
    let mut out = String::new();
    {
        let height = 90 + ROW_HEIGHT * rows.len().max(1) as u32;
        let root = SVGBackend::with_string(&mut out, (WIDTH, height)).into_drawing_area();
        root.fill(&WHITE).map_err(|e| anyhow!("{e}"))?;
        let root = root.titled(title, ("sans-serif", 18)).map_err(|e| anyhow!("{e}"))?;
        let (left, right) = root.split_horizontally(WIDTH * 3 / 5);
        let throughput: Vec<(&str, f64)> = rows.iter().map(|r| (r.workload.as_str(), r.throughput)).collect();
        let rss: Vec<(&str, f64)> = rows.iter().map(|r| (r.workload.as_str(), r.peak_rss)).collect();
        panel(&left, "throughput (higher is better)", &throughput, true, 170)?;
        panel(&right, "peak RSS (lower is better)", &rss, false, 10)?;
        root.present().map_err(|e| anyhow!("{e}"))?;
    }
    Ok(out)
}

/// Horizontal bars, first row at the top; green where Keel is ahead.
fn panel<DB: DrawingBackend>(
    area: &DrawingArea<DB, Shift>,
    caption: &str,
    rows: &[(&str, f64)],
    higher_is_better: bool,
    label_width: u32,
) -> Result<()> {
    let err = |e: DrawingAreaErrorKind<DB::ErrorType>| anyhow!("{e}");
    let n = rows.len();
    let top = |i: usize| n - 1 - i;
    let max = rows.iter().map(|r| r.1).filter(|v| v.is_finite()).fold(1.0, f64::max) * 1.2;
    let mut chart = ChartBuilder::on(area)
        .caption(caption, ("sans-serif", 14))
        .margin(8)
        .x_label_area_size(24)
        .y_label_area_size(label_width)
        .build_cartesian_2d(0f64..max, (0..n).into_segmented())
        .map_err(err)?;
    let label = |value: &SegmentValue<usize>| match value {
        SegmentValue::CenterOf(i) if *i < n && label_width > 20 => rows[top(*i)].0.to_owned(),
        _ => String::new(),
    };
    chart
        .configure_mesh()
        .disable_y_mesh()
        .y_labels(n.max(1))
        .y_label_formatter(&label)
        .x_label_formatter(&|x| format!("{x:.1}"))
        .draw()
        .map_err(err)?;
    chart
        .draw_series(rows.iter().enumerate().map(|(i, (_, value))| {
            let ahead = if higher_is_better { *value >= 1.0 } else { *value <= 1.0 };
            let colour = if ahead { BETTER } else { WORSE };
            let y = top(i);
            let mut bar =
                Rectangle::new([(0.0, SegmentValue::Exact(y)), (*value, SegmentValue::Exact(y + 1))], colour.filled());
            bar.set_margin(4, 4, 0, 0);
            bar
        }))
        .map_err(err)?;
    chart
        .draw_series(rows.iter().enumerate().map(|(i, (_, value))| {
            Text::new(format!("{value:.2}"), (*value + max * 0.01, SegmentValue::Exact(top(i))), ("sans-serif", 12))
        }))
        .map_err(err)?;
    chart
        .draw_series(std::iter::once(PathElement::new(
            vec![(1.0, SegmentValue::Exact(0)), (1.0, SegmentValue::Last)],
            BLACK.stroke_width(1),
        )))
        .map_err(err)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_workload_and_value_is_on_the_chart() {
        let rows = vec![
            Ratios { workload: "put-256".into(), throughput: 1.21, peak_rss: 0.55 },
            Ratios { workload: "range-s-256".into(), throughput: 0.8, peak_rss: 1.3 },
        ];
        let svg = svg(&rows, "Keel / etcd").unwrap();
        assert!(svg.starts_with("<svg"), "{}", &svg[..svg.len().min(80)]);
        for text in ["put-256", "range-s-256", "1.21", "0.55", "0.80", "1.30", "Keel / etcd"] {
            assert!(svg.contains(text), "{text} missing");
        }
        // Ahead and behind are told apart by colour.
        assert!(svg.contains("#2E8B57") && svg.contains("#CD5C5C"));
    }

    #[test]
    fn a_failed_etcd_run_draws_no_bar_rather_than_infinity() {
        assert_eq!(ratio(10.0, 5.0), 2.0);
        assert_eq!(ratio(10.0, 0.0), 0.0);
        assert_eq!(ratio(0.0, 0.0), 0.0);
    }
}
