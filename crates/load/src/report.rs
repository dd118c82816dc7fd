//! `orders-load report`: a load run's summary (`run --summary`) as the benchmark
//! report's section: the percentiles of each measure beside the end-to-end targets, in
//! Markdown on standard output, and three SVG charts (drawn with plotters): latency
//! over the run, throughput over the run, the services' backlogs over the run.

use std::path::{Path, PathBuf};

use anyhow::Context as _;
use plotters::prelude::*;
use serde::Deserialize;

use crate::{
    record::{Measure, Percentiles, Second},
    sample::Sample,
};

/// The settings of a report.
#[derive(Debug, Clone, clap::Args)]
pub struct ReportArgs {
    /// The run's summary (`orders-load run --summary`).
    #[arg(long)]
    summary: PathBuf,
    /// Where the charts go (`<prefix>-latency.svg`, `-throughput.svg`, `-backlog.svg`).
    #[arg(long)]
    charts: PathBuf,
    /// The charts' file-name prefix.
    #[arg(long, default_value = "e2e")]
    prefix: String,
    /// The charts' directory as the Markdown links it (relative to the report).
    #[arg(long, default_value = ".")]
    link: String,
}

/// What the report reads of a summary.
#[derive(Debug, Deserialize)]
struct Loaded {
    rate: f64,
    orders: u64,
    elapsed_s: f64,
    counts: serde_json::Map<String, serde_json::Value>,
    percentiles: Vec<(String, Measure, Percentiles)>,
    seconds: Vec<Second>,
    #[serde(default)]
    samples: Vec<Sample>,
}

/// The p99 target of a measure on this machine, in ms (issue 14).
fn target_p99_ms(measure: Measure) -> Option<f64> {
    match measure {
        Measure::HttpCreate | Measure::HttpPay | Measure::HttpCancel => Some(20.0),
        Measure::VisibleCreate | Measure::VisiblePay | Measure::VisibleCancel => Some(50.0),
        Measure::PaidToShipped => Some(250.0),
        Measure::CreateToStats => None,
    }
}

/// Writes the charts and prints the section.
///
/// # Errors
/// When the summary cannot be read or a chart not written.
pub fn run(args: &ReportArgs) -> anyhow::Result<()> {
    let bytes =
        std::fs::read(&args.summary).with_context(|| format!("reading {}", args.summary.display()))?;
    let loaded: Loaded = serde_json::from_slice(&bytes).context("the summary")?;
    std::fs::create_dir_all(&args.charts)?;
    let chart = |kind: &str| args.charts.join(format!("{}-{kind}.svg", args.prefix));
    latency(&loaded, &chart("latency"))?;
    throughput(&loaded, &chart("throughput"))?;
    backlog(&loaded, &chart("backlog"))?;

    let count = |name: &str| loaded.counts.get(name).and_then(serde_json::Value::as_u64).unwrap_or(0);
    let late = count("not_visible") + count("not_shipped") + count("not_in_windows");
    println!(
        "{} orders at {} orders/s, the last script done after {:.1} s: {} commands accepted ({:.0}/s over the whole run), {} conflicts (the saga moved first), {} retries, {} commands failed for good; {} steps not seen within the driver's wait (commands in the read model, paid orders shipped, probes in their windows).",
        loaded.orders,
        loaded.rate,
        loaded.elapsed_s,
        count("accepted"),
        count("accepted") as f64 / loaded.elapsed_s.max(0.001),
        count("conflicts"),
        count("retries"),
        count("failed"),
        late
    );
    println!();
    println!("| measure, ms | count | p50 | p90 | p99 | p99.9 | max | p99 target |");
    println!("|---|---:|---:|---:|---:|---:|---:|---|");
    for (label, measure, p) in &loaded.percentiles {
        let target = target_p99_ms(*measure).map_or_else(
            || "none".to_string(),
            |t| format!("< {t} ms: {}", if p.p99_ms < t { "met" } else { "missed" }),
        );
        println!(
            "| {label} | {} | {:.1} | {:.1} | {:.1} | {:.1} | {:.1} | {target} |",
            p.count, p.p50_ms, p.p90_ms, p.p99_ms, p.p999_ms, p.max_ms
        );
    }
    println!();
    for kind in ["latency", "throughput", "backlog"] {
        println!("![{kind}]({}/{}-{kind}.svg)", args.link.trim_end_matches('/'), args.prefix);
    }
    Ok(())
}

type Series = (String, RGBColor, Vec<(f64, f64)>);

const COLORS: [RGBColor; 6] = [
    RGBColor(31, 119, 180),
    RGBColor(214, 39, 40),
    RGBColor(44, 160, 44),
    RGBColor(255, 127, 14),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
];

/// A line chart of `series` over the run's seconds.
fn lines(path: &Path, caption: &str, y_desc: &str, series: &[Series]) -> anyhow::Result<()> {
    let max_x = series.iter().flat_map(|(_, _, p)| p.iter().map(|(x, _)| *x)).fold(1.0, f64::max);
    let max_y = series.iter().flat_map(|(_, _, p)| p.iter().map(|(_, y)| *y)).fold(1.0, f64::max) * 1.05;
    let root = SVGBackend::new(path, (960, 380)).into_drawing_area();
    root.fill(&WHITE)?;
    let mut chart = ChartBuilder::on(&root)
        .caption(caption, ("sans-serif", 18))
        .margin(12)
        .x_label_area_size(36)
        .y_label_area_size(64)
        .build_cartesian_2d(0.0..max_x, 0.0..max_y)?;
    chart.configure_mesh().x_desc("seconds into the run").y_desc(y_desc).light_line_style(WHITE).draw()?;
    for (name, color, points) in series {
        let color = *color;
        chart
            .draw_series(LineSeries::new(points.iter().copied(), color.stroke_width(2)))?
            .label(name.as_str())
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 18, y)], color.stroke_width(2)));
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .draw()?;
    root.present().with_context(|| format!("writing {}", path.display()))?;
    Ok(())
}

fn per_second(loaded: &Loaded, f: impl Fn(&Second) -> Option<f64>) -> Vec<(f64, f64)> {
    loaded.seconds.iter().filter_map(|s| f(s).map(|v| (s.t as f64, v))).collect()
}

fn latency(loaded: &Loaded, path: &Path) -> anyhow::Result<()> {
    let http = |s: &Second| (s.http.count > 0).then_some(s.http.p99_ms);
    let http50 = |s: &Second| (s.http.count > 0).then_some(s.http.p50_ms);
    let visible = |s: &Second| (s.visible.count > 0).then_some(s.visible.p99_ms);
    let visible50 = |s: &Second| (s.visible.count > 0).then_some(s.visible.p50_ms);
    let series = [
        ("HTTP p99".to_string(), COLORS[1], per_second(loaded, http)),
        ("HTTP p50".to_string(), COLORS[3], per_second(loaded, http50)),
        ("to read model p99".to_string(), COLORS[0], per_second(loaded, visible)),
        ("to read model p50".to_string(), COLORS[2], per_second(loaded, visible50)),
    ];
    lines(path, "Latency per second of the run (commands answered, commands visible)", "ms", &series)
}

fn throughput(loaded: &Loaded, path: &Path) -> anyhow::Result<()> {
    let series =
        [("commands accepted".to_string(), COLORS[0], per_second(loaded, |s| Some(s.accepted as f64)))];
    lines(path, "Commands accepted per second", "commands/s", &series)
}

fn backlog(loaded: &Loaded, path: &Path) -> anyhow::Result<()> {
    let mut names: Vec<&String> = loaded.samples.iter().flat_map(|s| s.backlog.keys()).collect();
    names.sort();
    names.dedup();
    let series: Vec<Series> = names
        .iter()
        .enumerate()
        .map(|(i, name)| {
            let points =
                loaded.samples.iter().filter_map(|s| s.backlog.get(*name).map(|v| (s.t, *v))).collect();
            ((*name).clone(), COLORS[i % COLORS.len()], points)
        })
        .collect();
    lines(path, "Backlogs: consumer lag per service, outbox rows unpublished (relay)", "records", &series)
}
