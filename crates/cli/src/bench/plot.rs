//! `hsync bench --plot FILE.png`: latency percentiles (left, log scale) and throughput
//! (right) of every row of the run, one colour per row.

use std::path::Path;

use plotters::prelude::*;

use super::Figures;

/// Where a TrueType font is looked for; `HSYNC_PLOT_FONT` names another.
const FONT_CANDIDATES: &[&str] = &[
    "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/TTF/DejaVuSans.ttf",
    "/usr/share/fonts/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/truetype/liberation/LiberationSans-Regular.ttf",
];

const PERCENTILES: [&str; 5] = ["p50", "p95", "p99", "p99.9", "max"];

/// Plotters draws text with a font it is given (no system font lookup, so no fontconfig
/// dependency): register one for "sans-serif".
fn register_font() -> anyhow::Result<()> {
    let from_env = std::env::var("HSYNC_PLOT_FONT").ok();
    let path = from_env
        .as_deref()
        .into_iter()
        .chain(FONT_CANDIDATES.iter().copied())
        .find(|p| Path::new(p).is_file())
        .ok_or_else(|| {
            anyhow::anyhow!(
                "--plot needs a TrueType font and found none ({}); install Debian's fonts-dejavu-core or set HSYNC_PLOT_FONT",
                FONT_CANDIDATES.join(", ")
            )
        })?;
    let bytes = std::fs::read(path).map_err(|e| anyhow::anyhow!("reading font {path}: {e}"))?;
    // Registered once per process for the rest of its life.
    let bytes: &'static [u8] = Box::leak(bytes.into_boxed_slice());
    plotters::style::register_font("sans-serif", FontStyle::Normal, bytes)
        .map_err(|_| anyhow::anyhow!("{path} is not a usable TrueType font"))
}

fn label(f: &Figures) -> String {
    format!("{} / {}", f.scenario, f.variant)
}

/// Draws `rows` into the PNG at `path`.
pub fn draw(path: &Path, rows: &[Figures]) -> anyhow::Result<()> {
    anyhow::ensure!(!rows.is_empty(), "nothing to plot");
    register_font()?;
    let plot_err = |e: &dyn std::fmt::Display| anyhow::anyhow!("drawing {}: {e}", path.display());
    let root = BitMapBackend::new(path, (1600, 700)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| plot_err(&e))?;
    let (left, right) = root.split_horizontally(900);

    let latencies = |f: &Figures| [f.p50_ms, f.p95_ms, f.p99_ms, f.p999_ms, f.max_ms];
    let positive = rows.iter().flat_map(&latencies).filter(|v| *v > 0.0);
    let lo = positive.clone().fold(f64::INFINITY, f64::min).min(1.0) / 2.0;
    let hi = positive.fold(0.0, f64::max).max(lo * 4.0) * 2.0;
    let mut chart = ChartBuilder::on(&left)
        .caption("Latency percentiles (ms, log scale)", ("sans-serif", 22))
        .margin(15)
        .x_label_area_size(35)
        .y_label_area_size(60)
        .build_cartesian_2d(-0.2f64..4.2f64, (lo..hi).log_scale())
        .map_err(|e| plot_err(&e))?;
    chart
        .configure_mesh()
        .x_labels(5)
        .x_label_formatter(&|x| {
            let i = x.round();
            if (x - i).abs() < 1e-6 && (0.0..=4.0).contains(&i) {
                PERCENTILES[i as usize].to_string()
            } else {
                String::new()
            }
        })
        .y_desc("ms")
        .draw()
        .map_err(|e| plot_err(&e))?;
    for (i, f) in rows.iter().enumerate() {
        let colour = Palette99::pick(i).to_rgba();
        let points: Vec<(f64, f64)> = latencies(f).iter().enumerate().map(|(x, y)| (x as f64, y.max(lo))).collect();
        chart
            .draw_series(LineSeries::new(points.clone(), colour.stroke_width(2)))
            .map_err(|e| plot_err(&e))?
            .label(label(f))
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], colour.stroke_width(2)));
        chart
            .draw_series(points.into_iter().map(|p| Circle::new(p, 3, colour.filled())))
            .map_err(|e| plot_err(&e))?;
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .label_font(("sans-serif", 13))
        .draw()
        .map_err(|e| plot_err(&e))?;

    // The echo baseline is two orders of magnitude above any job rate: it goes in the
    // caption, not among the bars.
    let echo = rows.iter().find(|f| f.scenario == "baseline").map(|f| f.jobs_per_second);
    let mut bars: Vec<(usize, &Figures)> = rows.iter().enumerate().filter(|(_, f)| f.scenario != "baseline").collect();
    if bars.is_empty() {
        bars = rows.iter().enumerate().collect();
    }
    let top = bars.iter().map(|(_, f)| f.jobs_per_second).fold(0.0, f64::max).max(1.0) * 1.15;
    let (first, last) = (bars[0].0 as f64, bars[bars.len() - 1].0 as f64);
    let caption = match echo {
        Some(e) => format!("Jobs per second (NATS echo: {e:.0} round trips/s)"),
        None => "Jobs per second".to_string(),
    };
    let mut chart = ChartBuilder::on(&right)
        .caption(caption, ("sans-serif", 20))
        .margin(15)
        .x_label_area_size(35)
        .y_label_area_size(70)
        .build_cartesian_2d(first - 0.5..last + 0.5, 0f64..top)
        .map_err(|e| plot_err(&e))?;
    chart
        .configure_mesh()
        .disable_x_mesh()
        .x_labels(rows.len())
        .x_label_formatter(&|x| {
            let i = x.round();
            if (x - i).abs() < 1e-6 && i >= 0.0 {
                format!("{}", i as usize + 1)
            } else {
                String::new()
            }
        })
        .y_label_formatter(&|y| format!("{y:.0}"))
        .x_desc("row, in the legend's order")
        .draw()
        .map_err(|e| plot_err(&e))?;
    chart
        .draw_series(bars.iter().map(|&(i, f)| {
            let x = i as f64;
            Rectangle::new([(x - 0.35, 0.0), (x + 0.35, f.jobs_per_second)], Palette99::pick(i).filled())
        }))
        .map_err(|e| plot_err(&e))?;
    chart
        .draw_series(bars.iter().map(|&(i, f)| {
            Text::new(format!("{:.0}", f.jobs_per_second), (i as f64 - 0.3, f.jobs_per_second + top * 0.01), ("sans-serif", 12))
        }))
        .map_err(|e| plot_err(&e))?;
    root.present().map_err(|e| plot_err(&e))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn draws_a_png_of_every_row() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("bench.png");
        let mut rows = Vec::new();
        for (i, variant) in ["on", "off"].iter().enumerate() {
            let mut f = super::super::figures("cache", variant, super::super::Load::Closed(4), std::time::Duration::from_secs(1), &[]);
            f.jobs_per_second = 1000.0 * (i + 1) as f64;
            (f.p50_ms, f.p95_ms, f.p99_ms, f.p999_ms, f.max_ms) = (1.0, 2.0, 4.0, 8.0, 16.0);
            rows.push(f);
        }
        draw(&path, &rows).unwrap();
        let png = std::fs::read(&path).unwrap();
        assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n");
        // 1600 × 700 pixels, as drawn (width and height are the IHDR's first fields).
        assert_eq!(u32::from_be_bytes(png[16..20].try_into().unwrap()), 1600);
        assert_eq!(u32::from_be_bytes(png[20..24].try_into().unwrap()), 700);
        assert!(draw(&path, &[]).is_err());
    }
}
