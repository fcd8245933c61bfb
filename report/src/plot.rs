//! Figures, drawn with plotters into an RGB buffer and encoded as PNG bytes.
//!
//! Text uses DejaVu Sans embedded in the crate (`assets/`), registered once with plotters'
//! `ab_glyph` backend, so nothing depends on the system's fonts or fontconfig.

use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};
use plotters::style::FontTransform;
use std::sync::OnceLock;

const FONT_BYTES: &[u8] = include_bytes!("../assets/DejaVuSans.ttf");
pub(crate) const FONT: &str = "sans-serif";

pub(crate) const TRAIN: RGBColor = RGBColor(31, 119, 180);
pub(crate) const VAL: RGBColor = RGBColor(255, 127, 14);
pub(crate) const TEST: RGBColor = RGBColor(44, 160, 44);
const RED_INK: RGBColor = RGBColor(200, 30, 30);

pub(crate) type PResult<T = ()> = Result<T, Box<dyn std::error::Error>>;
pub(crate) type Area<'a> = DrawingArea<BitMapBackend<'a>, Shift>;

fn ensure_font() -> Result<(), String> {
    static REGISTERED: OnceLock<Result<(), String>> = OnceLock::new();
    REGISTERED
        .get_or_init(|| {
            for style in [FontStyle::Normal, FontStyle::Bold] {
                plotters::style::register_font(FONT, style, FONT_BYTES).map_err(|_| {
                    "the embedded font assets/DejaVuSans.ttf is not a valid font".to_string()
                })?;
            }
            Ok(())
        })
        .clone()
}

/// Draws with `f` on a `w`×`h` white canvas and returns the PNG bytes.
pub(crate) fn render(
    w: u32,
    h: u32,
    f: impl FnOnce(&Area<'_>) -> PResult,
) -> Result<Vec<u8>, String> {
    ensure_font()?;
    let mut rgb = vec![255u8; (w * h * 3) as usize];
    {
        let root = BitMapBackend::with_buffer(&mut rgb, (w, h)).into_drawing_area();
        root.fill(&WHITE).map_err(|e| e.to_string())?;
        f(&root).map_err(|e| e.to_string())?;
        root.present().map_err(|e| e.to_string())?;
    }
    encode_png(w, h, &rgb).map_err(|e| format!("encoding png: {e}"))
}

fn encode_png(w: u32, h: u32, rgb: &[u8]) -> Result<Vec<u8>, png::EncodingError> {
    let mut out = Vec::new();
    {
        let mut enc = png::Encoder::new(&mut out, w, h);
        enc.set_color(png::ColorType::Rgb);
        enc.set_depth(png::BitDepth::Eight);
        enc.set_compression(png::Compression::Default);
        let mut writer = enc.write_header()?;
        writer.write_image_data(rgb)?;
    }
    Ok(out)
}

/// One line of a line chart.
pub(crate) struct Series {
    pub name: &'static str,
    pub color: RGBColor,
    pub points: Vec<(i64, f64)>,
}

/// Sizes of a line panel's text, so a grid can use smaller ones.
#[derive(Clone, Copy)]
pub(crate) struct PanelStyle {
    pub title: u32,
    pub label: u32,
    pub desc: u32,
    pub legend: u32,
}

pub(crate) const BIG: PanelStyle = PanelStyle {
    title: 20,
    label: 14,
    desc: 16,
    legend: 14,
};
pub(crate) const SMALL: PanelStyle = PanelStyle {
    title: 13,
    label: 11,
    desc: 12,
    legend: 11,
};

/// A line chart of metric vs epoch, with legend, axis labels and title (the notebook's
/// `plot_results` panel).
pub(crate) fn line_panel(
    area: &Area<'_>,
    title: &str,
    y_desc: &str,
    series: &[Series],
    legend_pos: SeriesLabelPosition,
    st: PanelStyle,
) -> PResult {
    let all: Vec<(i64, f64)> = series
        .iter()
        .flat_map(|s| s.points.iter().copied())
        .collect();
    let (mut x0, mut x1) = (i64::MAX, i64::MIN);
    let (mut y0, mut y1) = (f64::INFINITY, f64::NEG_INFINITY);
    for &(x, y) in &all {
        x0 = x0.min(x);
        x1 = x1.max(x);
        y0 = y0.min(y);
        y1 = y1.max(y);
    }
    if all.is_empty() {
        (x0, x1, y0, y1) = (1, 2, 0.0, 1.0);
    }
    if x1 <= x0 {
        x1 = x0 + 1;
    }
    let pad = if y1 > y0 { (y1 - y0) * 0.08 } else { 0.05 };
    let (y0, y1) = (y0 - pad, y1 + pad);
    let mut chart = ChartBuilder::on(area)
        .caption(title, (FONT, st.title))
        .margin(8)
        .x_label_area_size(st.desc * 2 + 8)
        .y_label_area_size(st.desc * 3 + 16)
        .build_cartesian_2d(x0..x1, y0..y1)?;
    let n_x = (x1 - x0 + 1).clamp(2, 11) as usize;
    chart
        .configure_mesh()
        .x_labels(n_x)
        .y_labels(6)
        .x_desc("epoch")
        .y_desc(y_desc)
        .label_style((FONT, st.label))
        .axis_desc_style((FONT, st.desc))
        .light_line_style(RGBColor(235, 235, 235))
        .y_label_formatter(&|v| format!("{v:.3}"))
        .draw()?;
    for s in series.iter().filter(|s| !s.points.is_empty()) {
        let color = s.color;
        chart
            .draw_series(LineSeries::new(
                s.points.iter().copied(),
                color.stroke_width(2),
            ))?
            .label(s.name)
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2))
            });
        chart.draw_series(s.points.iter().map(|&p| Circle::new(p, 3, color.filled())))?;
    }
    if series.iter().any(|s| !s.points.is_empty()) {
        chart
            .configure_series_labels()
            .position(legend_pos)
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK.mix(0.4))
            .label_font((FONT, st.legend))
            .draw()?;
    } else {
        area.draw(&Text::new(
            "no epochs recorded",
            (
                area.dim_in_pixel().0 as i32 / 2,
                area.dim_in_pixel().1 as i32 / 2,
            ),
            TextStyle::from((FONT, st.desc).into_font()).pos(Pos::new(HPos::Center, VPos::Center)),
        ))?;
    }
    Ok(())
}

/// A trial's two panels, loss and accuracy, side by side.
pub(crate) fn curves(label: &str, loss: &[Series], acc: &[Series]) -> Result<Vec<u8>, String> {
    render(1400, 520, |root| {
        let root = root.titled(label, (FONT, 22))?;
        let (l, r) = root.split_horizontally(700);
        line_panel(
            &l,
            "loss",
            "loss (cross-entropy)",
            loss,
            SeriesLabelPosition::UpperRight,
            BIG,
        )?;
        line_panel(
            &r,
            "accuracy",
            "accuracy",
            acc,
            SeriesLabelPosition::LowerRight,
            BIG,
        )?;
        Ok(())
    })
}

/// One panel per trial (the notebook's `plot_results_grid`).
pub(crate) fn grid(
    title: &str,
    y_desc: &str,
    panels: &[(String, Vec<Series>)],
    legend_pos: SeriesLabelPosition,
) -> Result<Vec<u8>, String> {
    let cols = panels.len().clamp(1, 3);
    let rows = panels.len().div_ceil(cols).max(1);
    let (pw, ph) = (480u32, 340u32);
    render(pw * cols as u32, ph * rows as u32 + 40, |root| {
        let root = root.titled(title, (FONT, 20))?;
        for (area, (t, series)) in root.split_evenly((rows, cols)).iter().zip(panels) {
            line_panel(area, t, y_desc, series, legend_pos.clone(), SMALL)?;
        }
        Ok(())
    })
}

/// matplotlib's "Blues" from white to dark blue, `t` in [0, 1].
fn blues(t: f64) -> RGBColor {
    const STOPS: [(f64, (f64, f64, f64)); 5] = [
        (0.0, (247.0, 251.0, 255.0)),
        (0.25, (198.0, 219.0, 239.0)),
        (0.5, (107.0, 174.0, 214.0)),
        (0.75, (33.0, 113.0, 181.0)),
        (1.0, (8.0, 48.0, 107.0)),
    ];
    let t = t.clamp(0.0, 1.0);
    let i = STOPS
        .iter()
        .rposition(|s| s.0 <= t)
        .unwrap_or(0)
        .min(STOPS.len() - 2);
    let (a, b) = (STOPS[i], STOPS[i + 1]);
    let u = (t - a.0) / (b.0 - a.0);
    let mix = |x: f64, y: f64| (x + (y - x) * u).round() as u8;
    RGBColor(
        mix(a.1 .0, b.1 .0),
        mix(a.1 .1, b.1 .1),
        mix(a.1 .2, b.1 .2),
    )
}

fn centered(size: u32) -> TextStyle<'static> {
    TextStyle::from((FONT, size).into_font()).pos(Pos::new(HPos::Center, VPos::Center))
}

/// A labelled heat map of `counts[true][pred]` with a colour bar.
pub(crate) fn confusion(
    title: &str,
    counts: &[Vec<u64>],
    names: &[&str],
) -> Result<Vec<u8>, String> {
    let k = counts.len().max(1) as i32;
    let cell = 64i32;
    let (left, top, bottom, right) = (150i32, 60i32, 140i32, 130i32);
    let (w, h) = (left + k * cell + right, top + k * cell + bottom);
    let max = counts.iter().flatten().copied().max().unwrap_or(0).max(1) as f64;
    render(w as u32, h as u32, |root| {
        root.draw(&Text::new(title.to_string(), (w / 2, 28), centered(20)))?;
        for (t, row) in counts.iter().enumerate() {
            for (p, &c) in row.iter().enumerate() {
                let (x, y) = (left + p as i32 * cell, top + t as i32 * cell);
                let frac = c as f64 / max;
                root.draw(&Rectangle::new(
                    [(x, y), (x + cell, y + cell)],
                    blues(frac).filled(),
                ))?;
                let ink = if frac > 0.5 { WHITE } else { BLACK };
                root.draw(&Text::new(
                    c.to_string(),
                    (x + cell / 2, y + cell / 2),
                    centered(15).color(&ink),
                ))?;
            }
        }
        root.draw(&Rectangle::new(
            [(left, top), (left + k * cell, top + k * cell)],
            BLACK.stroke_width(1),
        ))?;
        for (i, n) in names.iter().enumerate() {
            let c = i as i32 * cell + cell / 2;
            root.draw(&Text::new(
                n.to_string(),
                (left - 8, top + c),
                TextStyle::from((FONT, 14).into_font()).pos(Pos::new(HPos::Right, VPos::Center)),
            ))?;
            root.draw(&Text::new(
                n.to_string(),
                (left + c, top + k * cell + 8),
                TextStyle::from((FONT, 14).into_font().transform(FontTransform::Rotate90))
                    .pos(Pos::new(HPos::Left, VPos::Center)),
            ))?;
        }
        root.draw(&Text::new(
            "predicted class",
            (left + k * cell / 2, h - 16),
            centered(16),
        ))?;
        root.draw(&Text::new(
            "true class",
            (18, top + k * cell / 2),
            TextStyle::from((FONT, 16).into_font().transform(FontTransform::Rotate270))
                .pos(Pos::new(HPos::Center, VPos::Center)),
        ))?;
        colour_bar(root, (left + k * cell + 30, top), k * cell, max)
    })
}

/// The colour scale of the confusion matrix: `height` pixels from `max` (top) to 0, at
/// `(x, top)`, with five ticks.
fn colour_bar(root: &Area<'_>, (bx, top): (i32, i32), bh: i32, max: f64) -> PResult {
    let bw = 22;
    for i in 0..bh {
        let frac = 1.0 - i as f64 / (bh - 1).max(1) as f64;
        root.draw(&Rectangle::new(
            [(bx, top + i), (bx + bw, top + i + 1)],
            blues(frac).filled(),
        ))?;
    }
    root.draw(&Rectangle::new(
        [(bx, top), (bx + bw, top + bh)],
        BLACK.stroke_width(1),
    ))?;
    for j in 0..=4 {
        let v = max * j as f64 / 4.0;
        let y = top + bh - (bh as f64 * j as f64 / 4.0).round() as i32;
        root.draw(&PathElement::new(
            vec![(bx + bw, y), (bx + bw + 5, y)],
            BLACK,
        ))?;
        root.draw(&Text::new(
            format!("{}", v.round() as u64),
            (bx + bw + 8, y),
            TextStyle::from((FONT, 13).into_font()).pos(Pos::new(HPos::Left, VPos::Center)),
        ))?;
    }
    Ok(())
}

/// One hard sample: 28×28 pixels and the lines of text above it.
pub(crate) struct Sample<'a> {
    pub pixels: &'a [u8],
    pub lines: Vec<String>,
    /// Draws the text in red (a wrong prediction).
    pub wrong: bool,
}

/// Images in a grid (3×3 for nine), each with its text above (red when the prediction is
/// wrong), in grey (0 black, 255 white).
pub(crate) fn samples(title: &str, items: &[Sample<'_>]) -> Result<Vec<u8>, String> {
    let side = dataset::SIDE as i32;
    let scale = 7i32;
    let cols = ((items.len() as f64).sqrt().ceil() as usize).max(1);
    let rows = items.len().div_ceil(cols).max(1);
    let (pw, ph) = (side * scale + 60, side * scale + 80);
    let (w, h) = (pw * cols as i32, ph * rows as i32 + 50);
    render(w as u32, h as u32, |root| {
        root.draw(&Text::new(title.to_string(), (w / 2, 25), centered(20)))?;
        for (i, s) in items.iter().enumerate() {
            let (c, r) = ((i % cols) as i32, (i / cols) as i32);
            let (x0, y0) = (c * pw + 30, 50 + r * ph);
            for (j, line) in s.lines.iter().enumerate() {
                root.draw(&Text::new(
                    line.clone(),
                    (c * pw + pw / 2, y0 + 8 + 18 * j as i32),
                    centered(14).color(if s.wrong { &RED_INK } else { &BLACK }),
                ))?;
            }
            let iy = y0 + 8 + 18 * s.lines.len() as i32;
            for (p, &v) in s.pixels.iter().enumerate().take(dataset::PIXELS) {
                let (px, py) = (
                    x0 + (p as i32 % side) * scale,
                    iy + (p as i32 / side) * scale,
                );
                root.draw(&Rectangle::new(
                    [(px, py), (px + scale, py + scale)],
                    RGBColor(v, v, v).filled(),
                ))?;
            }
        }
        Ok(())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blues_runs_from_white_to_dark_blue() {
        assert_eq!(blues(0.0), RGBColor(247, 251, 255));
        assert_eq!(blues(1.0), RGBColor(8, 48, 107));
        let mid = blues(0.5);
        assert_eq!(mid, RGBColor(107, 174, 214));
    }
}
