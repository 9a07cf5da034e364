//! The charts of `docs/bench/`: SVG drawn with plotters' SVG backend.
//!
//! Text is laid out with plotters' built-in size estimate (no `ttf` or
//! `ab_glyph` feature), so drawing needs no font file, no fontconfig and no
//! system library; the viewer's own sans-serif renders the `<text>`.

use anyhow::{Result, anyhow};
use plotters::prelude::*;

use super::results::Bound;

/// Pixels per bar, and the chart's width.
const ROW: u32 = 26;
const WIDTH: u32 = 960;

/// Pixels of label column per character of the longest label.
const CHAR: u32 = 7;

/// One bar of a ratio chart: the median, the quartiles and the target.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct RatioBar {
    /// The row's label.
    pub(crate) label: String,
    /// The first quartile, median and third quartile.
    pub(crate) q1: f64,
    /// The median.
    pub(crate) median: f64,
    /// The third quartile.
    pub(crate) q3: f64,
    /// The target, drawn as a red tick.
    pub(crate) target: Option<Bound>,
}

/// The label column's width for these labels.
fn label_width(labels: impl Iterator<Item = usize>) -> u32 {
    let longest = labels.max().unwrap_or(0) as u32;
    (longest * CHAR + 16).clamp(80, WIDTH * 3 / 5)
}

/// The segment of row `i` of `n`: the first row at the top.
fn slot(i: usize, n: usize) -> usize {
    n - 1 - i
}

/// The chart's height for `rows` bars.
fn height(rows: usize) -> u32 {
    ROW * rows.max(1) as u32 + 90
}

/// A horizontal bar per `(label, value)`, values in `unit`.
pub(crate) fn bars(title: &str, unit: &str, rows: &[(String, f64)]) -> Result<String> {
    let mut svg = String::new();
    {
        let root =
            SVGBackend::with_string(&mut svg, (WIDTH, height(rows.len()))).into_drawing_area();
        root.fill(&WHITE).map_err(draw)?;
        let max = rows.iter().map(|(_, v)| *v).fold(0.0, f64::max).max(1e-9);
        let labels: Vec<&str> = rows.iter().map(|(l, _)| l.as_str()).collect();
        let mut chart = ChartBuilder::on(&root)
            .caption(title, ("sans-serif", 18))
            .margin(10)
            .x_label_area_size(36)
            .y_label_area_size(label_width(labels.iter().map(|l| l.len())))
            .build_cartesian_2d(0.0..max * 1.15, (0..rows.len()).into_segmented())
            .map_err(draw)?;
        chart
            .configure_mesh()
            .disable_y_mesh()
            .y_labels(rows.len().max(1))
            .y_label_formatter(&|v| label_of(&labels, v))
            .x_desc(unit)
            .x_label_formatter(&|x| short(*x))
            .draw()
            .map_err(draw)?;
        let n = rows.len();
        chart
            .draw_series(rows.iter().enumerate().map(|(i, (_, v))| {
                let y = slot(i, n);
                let mut bar = Rectangle::new(
                    [
                        (0.0, SegmentValue::Exact(y)),
                        (*v, SegmentValue::Exact(y + 1)),
                    ],
                    BLUE.mix(0.6).filled(),
                );
                bar.set_margin(4, 4, 0, 0);
                bar
            }))
            .map_err(draw)?;
        chart
            .draw_series(rows.iter().enumerate().map(|(i, (_, v))| {
                EmptyElement::at((*v, SegmentValue::CenterOf(slot(i, n))))
                    + Text::new(short(*v), (4, -6), ("sans-serif", 11).into_font())
            }))
            .map_err(draw)?;
        root.present().map_err(draw)?;
    }
    Ok(svg)
}

/// A bar per ratio at its median, whiskers from the first to the third
/// quartile, a red tick at the target and a grey line at 1 ×.
pub(crate) fn ratios(title: &str, rows: &[RatioBar]) -> Result<String> {
    let mut svg = String::new();
    {
        let root =
            SVGBackend::with_string(&mut svg, (WIDTH, height(rows.len()))).into_drawing_area();
        root.fill(&WHITE).map_err(draw)?;
        let bound = |b: &Option<Bound>| match b {
            Some(Bound::AtMost(v) | Bound::AtLeast(v)) => *v,
            None => 0.0,
        };
        let max = rows
            .iter()
            .map(|r| r.q3.max(bound(&r.target)))
            .fold(1.0, f64::max);
        let labels: Vec<&str> = rows.iter().map(|r| r.label.as_str()).collect();
        let mut chart = ChartBuilder::on(&root)
            .caption(title, ("sans-serif", 18))
            .margin(10)
            .x_label_area_size(36)
            .y_label_area_size(label_width(labels.iter().map(|l| l.len())))
            .build_cartesian_2d(0.0..max * 1.15, (0..rows.len()).into_segmented())
            .map_err(draw)?;
        chart
            .configure_mesh()
            .disable_y_mesh()
            .y_labels(rows.len().max(1))
            .y_label_formatter(&|v| label_of(&labels, v))
            .x_desc("ratio (×), whiskers: quartiles, red: target")
            .draw()
            .map_err(draw)?;
        let n = rows.len();
        chart
            .draw_series(rows.iter().enumerate().map(|(i, r)| {
                let met = r.target.is_none_or(|t| t.met(r.median));
                let color = if met { BLUE.mix(0.6) } else { RED.mix(0.45) };
                let y = slot(i, n);
                let mut bar = Rectangle::new(
                    [
                        (0.0, SegmentValue::Exact(y)),
                        (r.median, SegmentValue::Exact(y + 1)),
                    ],
                    color.filled(),
                );
                bar.set_margin(5, 5, 0, 0);
                bar
            }))
            .map_err(draw)?;
        chart
            .draw_series(rows.iter().enumerate().map(|(i, r)| {
                ErrorBar::new_horizontal(
                    SegmentValue::CenterOf(slot(i, n)),
                    r.q1,
                    r.median,
                    r.q3,
                    BLACK.stroke_width(1),
                    8,
                )
            }))
            .map_err(draw)?;
        chart
            .draw_series(rows.iter().enumerate().map(|(i, r)| {
                EmptyElement::at((r.q3, SegmentValue::CenterOf(slot(i, n))))
                    + Text::new(
                        format!("{:.2} ×", r.median),
                        (8, -6),
                        ("sans-serif", 11).into_font(),
                    )
            }))
            .map_err(draw)?;
        let ticks = rows.iter().enumerate().filter_map(|(i, r)| {
            r.target.map(|t| {
                let x = bound(&Some(t));
                let y = slot(i, n);
                PathElement::new(
                    vec![(x, SegmentValue::Exact(y)), (x, SegmentValue::Exact(y + 1))],
                    RED.stroke_width(3),
                )
            })
        });
        chart.draw_series(ticks).map_err(draw)?;
        let one = PathElement::new(
            vec![
                (1.0, SegmentValue::Exact(0)),
                (1.0, SegmentValue::Exact(rows.len())),
            ],
            BLACK.mix(0.4).stroke_width(1),
        );
        chart.draw_series(std::iter::once(one)).map_err(draw)?;
        root.present().map_err(draw)?;
    }
    Ok(svg)
}

/// The label of the row a segment value points at.
fn label_of(labels: &[&str], value: &SegmentValue<usize>) -> String {
    match value {
        SegmentValue::CenterOf(y) | SegmentValue::Exact(y) if *y < labels.len() => {
            labels[slot(*y, labels.len())].to_owned()
        }
        _ => String::new(),
    }
}

/// A value with three significant digits and no trailing zeros: `0.2`,
/// `12.5`, `640`.
fn short(value: f64) -> String {
    let text = if value >= 100.0 {
        format!("{value:.0}")
    } else if value >= 10.0 {
        format!("{value:.1}")
    } else {
        format!("{value:.2}")
    };
    if text.contains('.') {
        text.trim_end_matches('0').trim_end_matches('.').to_owned()
    } else {
        text
    }
}

/// Plotters' drawing errors hold the backend's error type; keep its message.
fn draw(error: impl std::fmt::Display) -> anyhow::Error {
    anyhow!("could not draw the chart: {error}")
}

/// Unit tests for the charts.
#[cfg(test)]
mod tests {
    use super::*;

    /// A bar chart is an SVG document with a bar and a label per row.
    #[test]
    fn draws_a_bar_per_row() {
        let svg = bars(
            "routing",
            "ns",
            &[("hot/nerve".into(), 231.6), ("hot/naive".into(), 134_570.0)],
        )
        .unwrap();
        assert!(svg.starts_with("<svg"), "{}", &svg[..60]);
        assert!(svg.contains("hot/nerve") && svg.contains("hot/naive"));
        assert!(svg.contains("routing"), "{svg}");
        // Drawing the same data again gives the same file.
        let again = bars(
            "routing",
            "ns",
            &[("hot/nerve".into(), 231.6), ("hot/naive".into(), 134_570.0)],
        )
        .unwrap();
        assert_eq!(svg, again);
    }

    /// A ratio chart marks targets; a missed one is drawn red.
    #[test]
    fn draws_ratios_with_targets() {
        let bar = |label: &str, median, target| RatioBar {
            label: label.into(),
            q1: median * 0.95,
            median,
            q3: median * 1.05,
            target,
        };
        let svg = ratios(
            "emit",
            &[
                bar("emit_json", 6.1, Some(Bound::AtMost(2.5))),
                bar("emit_threads 2/1", 1.6, Some(Bound::AtLeast(1.5))),
                bar("closure", 8.0, None),
            ],
        )
        .unwrap();
        assert!(svg.contains("emit_json") && svg.contains("closure"));
        assert!(svg.contains("#FF0000"), "target ticks are red");
    }

    /// No rows still gives a valid (empty) chart rather than an error.
    #[test]
    fn draws_an_empty_chart() {
        assert!(bars("empty", "ns", &[]).unwrap().starts_with("<svg"));
    }
}
