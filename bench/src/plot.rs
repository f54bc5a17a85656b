//! The plot: connection rate and time to publish against N, one line per datapath.
use std::{collections::BTreeMap, path::Path};

use anyhow::{anyhow, Result};

use crate::{
    cell::{med, Cell},
    dp::Dp,
};

pub fn plot(
    results: &BTreeMap<(usize, Dp), Cell>,
    ports: &[usize],
    dps: &[Dp],
    path: &Path,
) -> Result<()> {
    use plotters::prelude::*;
    let root = SVGBackend::new(path, (1100, 450)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| anyhow!("{e}"))?;
    let (left, right) = root.split_horizontally(550);
    let colors = [
        RED,
        BLUE,
        GREEN,
        MAGENTA,
        RGBColor(255, 140, 0),
        RGBColor(139, 69, 19),
        CYAN,
        RGBColor(128, 128, 0),
        RGBColor(0, 128, 128),
        BLACK,
    ];
    let xmax = *ports.iter().max().unwrap_or(&1) as f64;
    let xs = |n: usize| (n.max(1) as f64).log10();
    let draw = |area: &DrawingArea<SVGBackend, plotters::coord::Shift>,
                title: &str,
                f: &dyn Fn(&Cell) -> f64|
     -> Result<()> {
        let ymax = results
            .values()
            .map(f)
            .filter(|v| v.is_finite())
            .fold(1.0_f64, f64::max)
            * 1.15;
        let mut chart = ChartBuilder::on(area)
            .caption(title, ("sans-serif", 18))
            .margin(12)
            .x_label_area_size(36)
            .y_label_area_size(60)
            .build_cartesian_2d(0.0..xmax.log10().max(1.0), 0.0..ymax)
            .map_err(|e| anyhow!("{e}"))?;
        chart
            .configure_mesh()
            .x_desc("published ports (log10 N)")
            .draw()
            .map_err(|e| anyhow!("{e}"))?;
        for (i, dp) in dps.iter().enumerate() {
            let pts: Vec<(f64, f64)> = ports
                .iter()
                .filter_map(|&n| results.get(&(n, *dp)).map(|c| (xs(n), f(c))))
                .filter(|(_, y)| y.is_finite())
                .collect();
            if pts.is_empty() {
                continue;
            }
            let color = colors[i % colors.len()];
            chart
                .draw_series(LineSeries::new(pts.clone(), color.stroke_width(2)))
                .map_err(|e| anyhow!("{e}"))?
                .label(dp.name())
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 16, y)], color));
            chart
                .draw_series(pts.into_iter().map(|p| Circle::new(p, 3, color.filled())))
                .map_err(|e| anyhow!("{e}"))?;
        }
        chart
            .configure_series_labels()
            .background_style(WHITE)
            .border_style(BLACK)
            .draw()
            .map_err(|e| anyhow!("{e}"))?;
        Ok(())
    };
    draw(&left, "new connections per second", &|c| {
        med(c, |s| s.crr_rate)
    })?;
    // Publish times span 1 ms to a minute: a log scale keeps every datapath readable.
    draw(&right, "time to publish N ports (log10 ms)", &|c| {
        if c.publish_ms > 0.0 {
            c.publish_ms.log10().max(0.0)
        } else {
            f64::NAN
        }
    })?;
    root.present().map_err(|e| anyhow!("{e}"))?;
    Ok(())
}
