//! The figures of a searched experiment (issue 12), as Optuna's dashboard and W&B draw them:
//! the optimization history (each trial's metric in the order the trials were made, and the
//! best so far) and one slice per hyperparameter (the metric against the value). Trials a
//! rule stopped early are drawn apart, hollow and red.

use crate::plot::{render, Area, PResult, FONT, TRAIN};
use plotters::prelude::*;

const STOPPED: RGBColor = RGBColor(200, 30, 30);
const BEST: RGBColor = RGBColor(255, 127, 14);

/// One trial in a search figure.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Point {
    pub x: f64,
    pub y: f64,
    /// A rule stopped it (its value is the metric at its best epoch before the stop).
    pub stopped: bool,
}

/// How a slice's x axis reads.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Axis {
    Linear,
    /// Points carry log10 of the value; labels show the value.
    Log10,
    /// Points carry an index into these names.
    Names(Vec<String>),
}

/// One hyperparameter's slice.
pub(crate) struct Slice {
    pub param: String,
    pub axis: Axis,
    pub points: Vec<Point>,
}

/// `[lo, hi]` of `values`, widened by 8% (or by 0.5 when they are all equal).
fn span(values: impl Iterator<Item = f64>) -> (f64, f64) {
    let (mut lo, mut hi) = (f64::INFINITY, f64::NEG_INFINITY);
    for v in values {
        lo = lo.min(v);
        hi = hi.max(v);
    }
    if !lo.is_finite() {
        return (0.0, 1.0);
    }
    let pad = if hi > lo { (hi - lo) * 0.08 } else { 0.5 };
    (lo - pad, hi + pad)
}

/// Where a legend stays clear of the best points: at the top when smaller is better.
pub(crate) fn legend_for(mode: results_format::Mode) -> SeriesLabelPosition {
    match mode {
        results_format::Mode::Max => SeriesLabelPosition::LowerRight,
        results_format::Mode::Min => SeriesLabelPosition::UpperRight,
    }
}

/// Draws `points` on `area` as dots: filled for finished trials, hollow red for stopped ones.
#[allow(clippy::too_many_arguments)] // one figure's parts, each used once
fn scatter(
    area: &Area<'_>,
    caption: &str,
    x_desc: &str,
    y_desc: &str,
    axis: &Axis,
    points: &[Point],
    best_so_far: &[(f64, f64)],
    legend: SeriesLabelPosition,
) -> PResult {
    let (x0, x1) = span(points.iter().map(|p| p.x));
    let (y0, y1) = span(
        points
            .iter()
            .map(|p| p.y)
            .chain(best_so_far.iter().map(|b| b.1)),
    );
    let mut chart = ChartBuilder::on(area)
        .caption(caption, (FONT, 15))
        .margin(8)
        .x_label_area_size(34)
        .y_label_area_size(56)
        .build_cartesian_2d(x0..x1, y0..y1)?;
    let label = |v: &f64| match axis {
        Axis::Linear => format!("{}", (v * 1000.0).round() / 1000.0),
        Axis::Log10 => format!("{:.3}", 10f64.powf(*v)),
        Axis::Names(names) => {
            let i = v.round();
            if (v - i).abs() < 0.05 && i >= 0.0 {
                names.get(i as usize).cloned().unwrap_or_default()
            } else {
                String::new()
            }
        }
    };
    let x_labels = match axis {
        Axis::Names(names) => (names.len() * 4 + 1).min(40),
        _ => 6,
    };
    chart
        .configure_mesh()
        .x_labels(x_labels)
        .y_labels(6)
        .x_desc(x_desc)
        .y_desc(y_desc)
        .label_style((FONT, 12))
        .axis_desc_style((FONT, 13))
        .light_line_style(RGBColor(235, 235, 235))
        .x_label_formatter(&label)
        .y_label_formatter(&|v| format!("{v:.3}"))
        .draw()?;
    if !best_so_far.is_empty() {
        chart
            .draw_series(LineSeries::new(
                best_so_far.iter().copied(),
                BEST.stroke_width(2),
            ))?
            .label("best so far")
            .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], BEST.stroke_width(2)));
    }
    let finished = points.iter().filter(|p| !p.stopped);
    chart
        .draw_series(finished.map(|p| Circle::new((p.x, p.y), 4, TRAIN.filled())))?
        .label("finished")
        .legend(|(x, y)| Circle::new((x + 10, y), 4, TRAIN.filled()));
    if points.iter().any(|p| p.stopped) {
        let stopped = points.iter().filter(|p| p.stopped);
        chart
            .draw_series(stopped.map(|p| Circle::new((p.x, p.y), 5, STOPPED.stroke_width(2))))?
            .label("stopped early")
            .legend(|(x, y)| Circle::new((x + 10, y), 5, STOPPED.stroke_width(2)));
    }
    chart
        .configure_series_labels()
        .position(legend)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK.mix(0.4))
        .label_font((FONT, 12))
        .draw()?;
    Ok(())
}

/// The optimization history: trial number against `metric`, with the best so far.
pub(crate) fn history(
    title: &str,
    metric: &str,
    points: &[Point],
    best_so_far: &[(f64, f64)],
    legend: SeriesLabelPosition,
) -> Result<Vec<u8>, String> {
    render(900, 480, |root| {
        scatter(
            root,
            title,
            "trial (in the order they were made)",
            metric,
            &Axis::Linear,
            points,
            best_so_far,
            legend,
        )
    })
}

/// One panel per hyperparameter: its value against `metric`.
pub(crate) fn slices(
    title: &str,
    metric: &str,
    slices: &[Slice],
    legend: SeriesLabelPosition,
) -> Result<Vec<u8>, String> {
    let cols = slices.len().clamp(1, 3);
    let rows = slices.len().div_ceil(cols).max(1);
    let (pw, ph) = (440u32, 340u32);
    render(pw * cols as u32, ph * rows as u32 + 40, |root| {
        let root = root.titled(title, (FONT, 20))?;
        for (area, s) in root.split_evenly((rows, cols)).iter().zip(slices) {
            let desc = match s.axis {
                Axis::Log10 => format!("{} (log scale)", s.param),
                _ => s.param.clone(),
            };
            let at = legend.clone();
            scatter(area, &s.param, &desc, metric, &s.axis, &s.points, &[], at)?;
        }
        Ok(())
    })
}
