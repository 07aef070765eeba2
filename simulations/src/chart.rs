//! The PNG chart: job response time against load, one line per policy, median and p99, one
//! column per duration distribution. Text uses an embedded font, so no system font library is
//! needed.

use std::path::Path;
use std::sync::Once;

use plotters::prelude::*;
use plotters::style::FontStyle;

use crate::error::SimError;
use crate::stats::Report;

/// DejaVu Sans cut down to ASCII (see `assets/LICENSE-DejaVu.txt`).
static FONT: &[u8] = include_bytes!("../assets/DejaVuSans-ascii.ttf");

const COLOURS: [RGBColor; 6] = [
    RGBColor(213, 94, 0),
    RGBColor(230, 159, 0),
    RGBColor(0, 114, 178),
    RGBColor(0, 158, 115),
    RGBColor(204, 121, 167),
    RGBColor(0, 0, 0),
];

fn register_font() -> Result<(), String> {
    static ONCE: Once = Once::new();
    let mut result = Ok(());
    ONCE.call_once(|| {
        result = plotters::style::register_font("sans-serif", FontStyle::Normal, FONT)
            .map_err(|_| "the embedded font does not parse".to_owned());
    });
    result
}

/// Draws `reports` (a load sweep) to `path` as a PNG of `width`×`height` pixels.
pub fn draw(path: &Path, reports: &[Report], width: u32, height: u32) -> Result<(), SimError> {
    let fail = |why: String| SimError::Chart {
        path: path.to_owned(),
        why,
    };
    register_font().map_err(fail)?;
    let mut durations: Vec<String> = Vec::new();
    let mut policies: Vec<&str> = Vec::new();
    for r in reports {
        if !durations.contains(&r.duration) {
            durations.push(r.duration.clone());
        }
        if !policies.contains(&r.policy) {
            policies.push(r.policy);
        }
    }
    if durations.is_empty() {
        return Err(fail("no results to draw".into()));
    }
    let root = BitMapBackend::new(path, (width, height)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| fail(e.to_string()))?;
    let panels = root.split_evenly((2, durations.len()));
    for (i, panel) in panels.iter().enumerate() {
        let (row, col) = (i / durations.len(), i % durations.len());
        let duration = &durations[col];
        let quantile = if row == 0 { "median" } else { "p99" };
        let value = |r: &Report| if row == 0 { r.job.p50 } else { r.job.p99 };
        let rows: Vec<&Report> = reports.iter().filter(|r| &r.duration == duration).collect();
        let (lo, hi) = rows.iter().fold((f64::MAX, 0.0f64), |(lo, hi), r| {
            (lo.min(r.load), hi.max(r.load))
        });
        let top = rows.iter().map(|r| value(r)).fold(0.0f64, f64::max) * 1.05;
        let bottom = rows.iter().map(|r| value(r)).fold(f64::MAX, f64::min) * 0.9;
        let mut chart = ChartBuilder::on(panel)
            .caption(
                format!("{duration} durations: {quantile} job response"),
                ("sans-serif", 20),
            )
            .margin(10)
            .x_label_area_size(35)
            .y_label_area_size(55)
            .build_cartesian_2d(
                lo * 100.0 - 2.0..hi * 100.0 + 2.0,
                bottom.min(top)..top.max(1.0),
            )
            .map_err(|e| fail(e.to_string()))?;
        chart
            .configure_mesh()
            .x_desc("offered load (%)")
            .y_desc("ms")
            .x_label_formatter(&|x| format!("{x:.0}"))
            .y_label_formatter(&|y| format!("{y:.0}"))
            .light_line_style(WHITE)
            .label_style(("sans-serif", 13))
            .draw()
            .map_err(|e| fail(e.to_string()))?;
        for (k, policy) in policies.iter().enumerate() {
            let colour = COLOURS[k % COLOURS.len()];
            let points: Vec<(f64, f64)> = rows
                .iter()
                .filter(|r| r.policy == *policy)
                .map(|r| (r.load * 100.0, value(r)))
                .collect();
            chart
                .draw_series(LineSeries::new(
                    points.iter().copied(),
                    colour.stroke_width(2),
                ))
                .map_err(|e| fail(e.to_string()))?
                .label(*policy)
                .legend(move |(x, y)| {
                    PathElement::new([(x, y), (x + 18, y)], colour.stroke_width(2))
                });
            chart
                .draw_series(points.iter().map(|&p| Circle::new(p, 3, colour.filled())))
                .map_err(|e| fail(e.to_string()))?;
        }
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::UpperLeft)
            .label_font(("sans-serif", 13))
            .background_style(WHITE.mix(0.8))
            .border_style(BLACK)
            .draw()
            .map_err(|e| fail(e.to_string()))?;
    }
    root.present().map_err(|e| fail(e.to_string()))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stats::Summary;

    fn report(policy: &'static str, load: f64, p50: f64) -> Report {
        Report {
            policy,
            duration: "exp".into(),
            load,
            peers: 1,
            tasks: 1,
            measured_jobs: 1,
            gossip_period_ms: 200.0,
            job: Summary {
                p50,
                p99: 2.0 * p50,
                ..Summary::default()
            },
            wait: Summary::default(),
            messages_per_task: 0.0,
            gossip_per_task: 0.0,
            utilisation: Summary::default(),
            max_queue: 0,
            simulated_s: 0.0,
            events: 0,
            wall_s: 0.0,
        }
    }

    #[test]
    fn draws_a_png_with_the_embedded_font() {
        let reports = [
            report("random", 0.5, 100.0),
            report("random", 0.9, 300.0),
            report("omniscient", 0.5, 90.0),
        ];
        let dir = std::env::temp_dir().join(format!("peer-sim-chart-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("c.png");
        draw(&path, &reports, 400, 300).unwrap();
        let bytes = std::fs::read(&path).unwrap();
        assert_eq!(&bytes[1..4], b"PNG");
        assert!(
            draw(&path, &[], 400, 300).is_err(),
            "nothing to draw is an error, not a panic"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
