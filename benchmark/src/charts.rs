//! Line charts of a measure against concurrency (log2 axis), as PNG files
//! beside `docs/performance.md`.

use std::path::Path;

use anyhow::{Context, Result};
use plotters::prelude::*;

/// One line: its legend and its points (concurrency, value).
pub(crate) struct Series {
    pub(crate) label: String,
    pub(crate) points: Vec<(usize, f64)>,
    pub(crate) color: RGBAColor,
    /// A thin line (a reference) rather than a thick one (what is measured).
    pub(crate) thin: bool,
}

/// The axes and size of one chart.
pub(crate) struct Chart<'a> {
    pub(crate) title: &'a str,
    pub(crate) x_label: &'a str,
    pub(crate) y_label: &'a str,
    pub(crate) size: (u32, u32),
}

/// Registers the font at `path` as the charts' "sans-serif", once per run.
pub(crate) fn use_font(path: &Path) -> Result<()> {
    let font = std::fs::read(path)
        .with_context(|| format!("reading the charts' font {}", path.display()))?;
    // plotters keeps the font for the rest of the process.
    let font: &'static [u8] = Box::leak(font.into_boxed_slice());
    plotters::style::register_font("sans-serif", FontStyle::Normal, font)
        .map_err(|_| anyhow::anyhow!("{} is not a usable TrueType font", path.display()))
}

/// Draws `series` on `chart` into the PNG file `path`.
pub(crate) fn draw(path: &Path, chart: &Chart<'_>, series: &[Series]) -> Result<()> {
    let to_x = |c: usize| (c.max(1) as f64).log2();
    let x_max = series
        .iter()
        .flat_map(|s| s.points.iter().map(|p| to_x(p.0)))
        .fold(0.0, f64::max);
    let y_max = series
        .iter()
        .flat_map(|s| s.points.iter().map(|p| p.1))
        .filter(|v| v.is_finite())
        .fold(0.0, f64::max)
        * 1.1;
    let root = BitMapBackend::new(path, chart.size).into_drawing_area();
    root.fill(&WHITE).map_err(|e| anyhow::anyhow!("{e}"))?;
    let mut plot = ChartBuilder::on(&root)
        .caption(chart.title, ("sans-serif", 26))
        .margin(20)
        .x_label_area_size(45)
        .y_label_area_size(80)
        .build_cartesian_2d(-0.2..x_max + 0.2, 0.0..y_max.max(1.0))
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    plot.configure_mesh()
        .x_desc(chart.x_label)
        .y_desc(chart.y_label)
        .x_label_formatter(&|x| format!("{:.0}", 2f64.powf(*x)))
        .x_labels(10)
        .draw()
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    for line in series {
        let color = line.color;
        let style = color.stroke_width(if line.thin { 1 } else { 3 });
        let data: Vec<(f64, f64)> = line.points.iter().map(|&(c, v)| (to_x(c), v)).collect();
        plot.draw_series(LineSeries::new(data.clone(), style))
            .map_err(|e| anyhow::anyhow!("{e}"))?
            .label(line.label.as_str())
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], style));
        plot.draw_series(
            data.iter()
                .map(|&(x, y)| Circle::new((x, y), 3, color.filled())),
        )
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    }
    plot.configure_series_labels()
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .position(SeriesLabelPosition::UpperLeft)
        .draw()
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    root.present().map_err(|e| anyhow::anyhow!("{e}"))?;
    Ok(())
}
