//! SVG charts with plotters (its SVG backend alone: no fonts are loaded,
//! text is left to the viewer): latency histograms, client requests
//! against upstream calls over time, fan-out latency against connections.

use hdrhistogram::Histogram;
use plotters::prelude::*;

use super::engine::Sample;

const SIZE: (u32, u32) = (800, 460);
const COLORS: [RGBColor; 3] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
];
const BUCKETS: u64 = 50;

/// A line of a chart: its name, and its value at a point.
type Line<T, V> = (&'static str, fn(&T) -> V);

fn text(e: impl std::fmt::Display) -> String {
    format!("chart: {e}")
}

/// Latency histograms of one or more series, as a share of each series'
/// answers per bucket, up to the largest p99.9 (the tail beyond it is
/// left out, and said so in the axis label).
pub(crate) fn latency(title: &str, series: &[(&str, &Histogram<u64>)]) -> Result<String, String> {
    let upper_us = series
        .iter()
        .filter(|(_, h)| !h.is_empty())
        .map(|(_, h)| h.value_at_quantile(0.999))
        .max()
        .unwrap_or(1000)
        .max(BUCKETS);
    let width = upper_us.div_ceil(BUCKETS);
    let bars: Vec<Vec<(f64, f64, f64)>> = series
        .iter()
        .map(|(_, h)| {
            (0..BUCKETS)
                .map(|i| {
                    let (lo, hi) = (i * width, (i + 1) * width - 1);
                    let share = if h.is_empty() {
                        0.0
                    } else {
                        100.0 * h.count_between(lo, hi) as f64 / h.len() as f64
                    };
                    (lo as f64 / 1000.0, (hi + 1) as f64 / 1000.0, share)
                })
                .collect()
        })
        .collect();
    let top = bars.iter().flatten().map(|b| b.2).fold(1.0f64, f64::max) * 1.1;
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, SIZE).into_drawing_area();
        root.fill(&WHITE).map_err(text)?;
        let mut chart = ChartBuilder::on(&root)
            .caption(title, ("sans-serif", 20))
            .margin(12)
            .x_label_area_size(40)
            .y_label_area_size(56)
            .build_cartesian_2d(0f64..(upper_us + width) as f64 / 1000.0, 0f64..top)
            .map_err(text)?;
        chart
            .configure_mesh()
            .light_line_style(WHITE)
            .x_desc("latency, ms (up to the largest p99.9)")
            .y_desc("% of answers")
            .draw()
            .map_err(text)?;
        for (i, ((name, _), bars)) in series.iter().zip(&bars).enumerate() {
            let color = COLORS[i % COLORS.len()];
            chart
                .draw_series(bars.iter().map(|&(x0, x1, y)| {
                    Rectangle::new([(x0, 0.0), (x1, y)], color.mix(0.55).filled())
                }))
                .map_err(text)?
                .label(*name)
                .legend(move |(x, y)| {
                    Rectangle::new([(x, y - 5), (x + 12, y + 5)], color.filled())
                });
        }
        legend(&mut chart)?;
        root.present().map_err(text)?;
    }
    Ok(svg)
}

/// Client requests and upstream calls so far, against time, on a log
/// scale (a saving of 99.9 % leaves the upstream's line flat at zero on a
/// linear one).
pub(crate) fn requests_and_upstream(title: &str, samples: &[Sample]) -> Result<String, String> {
    let end = samples.last().map_or(1.0, |s| s.at.max(1.0));
    let top = samples
        .iter()
        .map(|s| s.requests.max(s.upstream))
        .max()
        .unwrap_or(1)
        .max(10) as f64
        * 2.0;
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, SIZE).into_drawing_area();
        root.fill(&WHITE).map_err(text)?;
        let mut chart = ChartBuilder::on(&root)
            .caption(title, ("sans-serif", 20))
            .margin(12)
            .x_label_area_size(40)
            .y_label_area_size(64)
            .build_cartesian_2d(0f64..end, (1f64..top).log_scale())
            .map_err(text)?;
        chart
            .configure_mesh()
            .light_line_style(WHITE)
            .x_desc("seconds since the load started")
            .y_desc("so far (log scale)")
            .draw()
            .map_err(text)?;
        let lines: [Line<Sample, u64>; 2] = [
            ("client requests", |s| s.requests),
            ("upstream calls", |s| s.upstream),
        ];
        for (i, (name, value)) in lines.into_iter().enumerate() {
            let color = COLORS[i];
            chart
                .draw_series(LineSeries::new(
                    samples.iter().map(|s| (s.at, value(s).max(1) as f64)),
                    color.stroke_width(2),
                ))
                .map_err(text)?
                .label(name)
                .legend(move |(x, y)| {
                    PathElement::new([(x, y), (x + 16, y)], color.stroke_width(2))
                });
        }
        legend(&mut chart)?;
        root.present().map_err(text)?;
    }
    Ok(svg)
}

/// One step of an SSE load: its connections and the fan-out latency of
/// the change made at that step, in ms.
#[derive(Debug, Clone, Copy)]
pub(crate) struct FanOutPoint {
    pub(crate) connections: u64,
    /// The streams the change reached within the wait.
    pub(crate) reached: u64,
    pub(crate) p50: f64,
    pub(crate) p99: f64,
    pub(crate) max: f64,
}

/// Fan-out latency (p50, p99, max) against the connections open.
pub(crate) fn fan_out(title: &str, points: &[FanOutPoint]) -> Result<String, String> {
    let right = points.iter().map(|p| p.connections).max().unwrap_or(1) as f64 * 1.05;
    let top = points.iter().map(|p| p.max).fold(1.0f64, f64::max) * 1.15;
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, SIZE).into_drawing_area();
        root.fill(&WHITE).map_err(text)?;
        let mut chart = ChartBuilder::on(&root)
            .caption(title, ("sans-serif", 20))
            .margin(12)
            .x_label_area_size(40)
            .y_label_area_size(56)
            .build_cartesian_2d(0f64..right, 0f64..top)
            .map_err(text)?;
        chart
            .configure_mesh()
            .light_line_style(WHITE)
            .x_desc("open event streams")
            .y_desc("fan-out latency, ms")
            .draw()
            .map_err(text)?;
        let lines: [Line<FanOutPoint, f64>; 3] =
            [("p50", |p| p.p50), ("p99", |p| p.p99), ("max", |p| p.max)];
        for (i, (name, value)) in lines.into_iter().enumerate() {
            let color = COLORS[i];
            let at = |p: &FanOutPoint| (p.connections as f64, value(p));
            // The line joins the steps (more streams each); changes made
            // while the streams are held are dots at the last step.
            let mut most = 0;
            let steps = points.iter().filter(|p| {
                let more = p.connections > most;
                most = most.max(p.connections);
                more
            });
            chart
                .draw_series(LineSeries::new(steps.map(at), color.stroke_width(2)))
                .map_err(text)?
                .label(name)
                .legend(move |(x, y)| {
                    PathElement::new([(x, y), (x + 16, y)], color.stroke_width(2))
                });
            chart
                .draw_series(points.iter().map(|p| Circle::new(at(p), 3, color.filled())))
                .map_err(text)?;
        }
        legend(&mut chart)?;
        root.present().map_err(text)?;
    }
    Ok(svg)
}

fn legend<'a, DB: DrawingBackend + 'a, CT: CoordTranslate>(
    chart: &mut ChartContext<'a, DB, CT>,
) -> Result<(), String> {
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperRight)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .draw()
        .map_err(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn charts_are_svg_documents_with_their_titles_and_series() {
        let mut h = crate::load::engine::histogram();
        for us in [800, 900, 1200, 5000] {
            h.record(us).unwrap();
        }
        let svg = latency("latency of /x", &[("/x", &h)]).unwrap();
        assert!(
            svg.starts_with("<svg") && svg.contains("latency of /x"),
            "{svg}"
        );
        let samples = [
            Sample {
                at: 0.0,
                requests: 0,
                upstream: 0,
            },
            Sample {
                at: 1.0,
                requests: 200,
                upstream: 1,
            },
        ];
        let svg = requests_and_upstream("tabs", &samples).unwrap();
        assert!(svg.contains("client requests") && svg.contains("upstream calls"));
        let points = [FanOutPoint {
            connections: 100,
            reached: 100,
            p50: 1.0,
            p99: 3.0,
            max: 4.0,
        }];
        let svg = fan_out("sse", &points).unwrap();
        assert!(svg.contains("p99") && svg.contains("<circle"), "{svg}");
    }
}
