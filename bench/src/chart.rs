//! SVG chart: latency percentiles (left) and server memory (right) against
//! connection count, one colour per server.

use std::path::Path;

use plotters::prelude::*;

use crate::run::StepResult;

#[derive(Debug, thiserror::Error)]
#[error("cannot draw {path}: {message}")]
pub struct ChartError {
    path: String,
    message: String,
}

const COLOURS: [RGBColor; 6] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(214, 39, 40),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
];

/// Draws `results` (any mix of steps and servers) to an SVG file.
pub fn draw(results: &[StepResult], path: &Path) -> Result<(), ChartError> {
    let err = |e: &dyn std::fmt::Display| ChartError {
        path: path.display().to_string(),
        message: e.to_string(),
    };
    let root = SVGBackend::new(path, (1200, 480)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| err(&e))?;
    let (left, right) = root.split_horizontally(600);

    let mut targets: Vec<&str> = results.iter().map(|r| r.target.as_str()).collect();
    targets.dedup();
    targets.sort_unstable();
    targets.dedup();
    let workload = results.first().map_or("", |r| r.workload.as_str());
    let latency_of = |r: &StepResult| {
        if r.workload == "connect" {
            r.connect_latency
        } else {
            r.latency
        }
    };

    // Left: p50, p99, p99.9 per server; both axes log, as sweeps grow
    // by factors (100, 1000, 10000) and tails span decades.
    let min_conns = results
        .iter()
        .map(|r| r.connections)
        .min()
        .unwrap_or(1)
        .max(1) as f64;
    let max_conns = results
        .iter()
        .map(|r| r.connections)
        .max()
        .unwrap_or(1)
        .max(1) as f64;
    let max_us = results
        .iter()
        .map(|r| latency_of(r).p999_us)
        .fold(10.0, f64::max);
    let min_us = results
        .iter()
        .map(|r| latency_of(r).p50_us)
        .filter(|v| *v > 0.0)
        .fold(max_us, f64::min)
        .max(1.0);
    let title = if workload == "connect" {
        "upgrade latency (µs)"
    } else {
        "delivery latency (µs)"
    };
    let mut chart = ChartBuilder::on(&left)
        .caption(format!("{workload}: {title}"), ("sans-serif", 18))
        .margin(12)
        .x_label_area_size(36)
        .y_label_area_size(60)
        .build_cartesian_2d(
            // At least a factor of 10 wide, so a single step still gets labels.
            (min_conns.min(max_conns / 10.0).max(0.5)..max_conns * 2.0).log_scale(),
            (min_us / 2.0..max_us * 2.0).log_scale(),
        )
        .map_err(|e| err(&e))?;
    chart
        .configure_mesh()
        .x_desc("connections")
        .y_desc("µs")
        .x_label_formatter(&|x| format!("{x:.0}"))
        .y_label_formatter(&|y| format!("{y:.0}"))
        .draw()
        .map_err(|e| err(&e))?;
    for (i, target) in targets.iter().enumerate() {
        let colour = COLOURS[i % COLOURS.len()];
        let steps: Vec<&StepResult> = results.iter().filter(|r| r.target == *target).collect();
        for (name, pick, width) in [
            (
                "p50",
                (|p: crate::stats::Percentiles| p.p50_us) as fn(_) -> f64,
                1,
            ),
            ("p99", |p: crate::stats::Percentiles| p.p99_us, 2),
            ("p99.9", |p: crate::stats::Percentiles| p.p999_us, 3),
        ] {
            let points: Vec<(f64, f64)> = steps
                .iter()
                .map(|r| (r.connections as f64, pick(latency_of(r)).max(min_us / 2.0)))
                .collect();
            let style = colour.stroke_width(width);
            chart
                .draw_series(LineSeries::new(points.clone(), style))
                .map_err(|e| err(&e))?
                .label(format!("{target} {name}"))
                .legend(move |(x, y)| {
                    PathElement::new(vec![(x, y), (x + 16, y)], colour.stroke_width(width))
                });
            chart
                .draw_series(
                    points
                        .into_iter()
                        .map(|p| Circle::new(p, 3, colour.filled())),
                )
                .map_err(|e| err(&e))?;
        }
    }
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .label_font(("sans-serif", 11))
        .draw()
        .map_err(|e| err(&e))?;

    // Right: server RSS against established connections.
    let series: Vec<(&str, Vec<(f64, f64)>)> = targets
        .iter()
        .map(|target| {
            let mut points: Vec<(f64, f64)> = results
                .iter()
                .filter(|r| r.target == *target)
                .flat_map(|r| {
                    r.memory
                        .iter()
                        .map(|m| (m.connections as f64, m.rss_bytes as f64 / 1048576.0))
                })
                .collect();
            points.sort_by(|a, b| a.0.total_cmp(&b.0));
            (*target, points)
        })
        .collect();
    let max_mib = series
        .iter()
        .flat_map(|s| s.1.iter().map(|p| p.1))
        .fold(1.0, f64::max);
    let max_x = series
        .iter()
        .flat_map(|s| s.1.iter().map(|p| p.0))
        .fold(max_conns, f64::max);
    let mut chart = ChartBuilder::on(&right)
        .caption("server RSS (MiB)", ("sans-serif", 18))
        .margin(12)
        .x_label_area_size(36)
        .y_label_area_size(60)
        .build_cartesian_2d(0.0..max_x * 1.05, 0.0..max_mib * 1.1)
        .map_err(|e| err(&e))?;
    chart
        .configure_mesh()
        .x_desc("established connections")
        .y_desc("MiB")
        .x_label_formatter(&|x| format!("{x:.0}"))
        .draw()
        .map_err(|e| err(&e))?;
    if series.iter().all(|s| s.1.is_empty()) {
        right
            .draw_text(
                "no samples: pass --server-pid",
                &("sans-serif", 16).into(),
                (180, 220),
            )
            .map_err(|e| err(&e))?;
    }
    for (i, (target, points)) in series.into_iter().enumerate() {
        let colour = COLOURS[i % COLOURS.len()];
        chart
            .draw_series(LineSeries::new(points, colour.stroke_width(2)))
            .map_err(|e| err(&e))?
            .label(target)
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 16, y)], colour.stroke_width(2))
            });
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .label_font(("sans-serif", 11))
        .draw()
        .map_err(|e| err(&e))?;
    root.present().map_err(|e| err(&e))?;
    Ok(())
}
