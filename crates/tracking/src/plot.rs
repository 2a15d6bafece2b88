//! Output files: `tracking.md`, `tracking.svg` and `tracking.png`.
//!
//! The plots are drawn with plotters' pure-Rust backends: SVG needs nothing,
//! PNG rasterises text with a TrueType font found at run time (the
//! `DAXFS_PLOT_FONT` environment variable, else DejaVu Sans or any `.ttf`
//! under the usual font directories). Without a font only the SVG is written,
//! and [`PlotFiles::note`] says why.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use plotters::coord::Shift;
use plotters::prelude::*;

use crate::bench::{Report, StrategyResult, WorkloadReport};
use crate::strategies::Strategy;

/// What [`write_plots`] wrote.
#[derive(Clone, Debug)]
pub struct PlotFiles {
    /// The SVG plot.
    pub svg: PathBuf,
    /// The PNG plot, unless no font was found.
    pub png: Option<PathBuf>,
    /// Why something was skipped, if it was.
    pub note: Option<String>,
}

/// What [`write_outputs`] wrote.
#[derive(Clone, Debug)]
pub struct OutputFiles {
    /// The markdown table.
    pub markdown: PathBuf,
    /// The plots.
    pub plots: PlotFiles,
}

impl OutputFiles {
    /// A short human-readable summary of the files written.
    pub fn message(&self) -> String {
        let mut m = format!(
            "wrote {} and {}",
            self.markdown.display(),
            self.plots.svg.display()
        );
        if let Some(png) = &self.plots.png {
            m.push_str(&format!(" and {}", png.display()));
        }
        if let Some(n) = &self.plots.note {
            m.push_str(&format!(" ({n})"));
        }
        m
    }
}

/// Writes `tracking.md`, `tracking.svg` and (font permitting) `tracking.png`
/// into `dir`, creating it if needed.
pub fn write_outputs(report: &Report, dir: &Path) -> std::io::Result<OutputFiles> {
    std::fs::create_dir_all(dir)?;
    let markdown = dir.join("tracking.md");
    std::fs::write(&markdown, report.to_markdown())?;
    let plots = write_plots(report, dir)?;
    Ok(OutputFiles { markdown, plots })
}

/// Writes `tracking.svg` and (font permitting) `tracking.png` into `dir`:
/// three log-scale panels of grouped bars (one group per workload, one bar
/// per strategy): time per event, bytes per mapped page, and the time to find
/// every owner of a shared page.
pub fn write_plots(report: &Report, dir: &Path) -> std::io::Result<PlotFiles> {
    std::fs::create_dir_all(dir)?;
    let font = font();
    let svg = dir.join("tracking.svg");
    {
        let root = SVGBackend::new(&svg, SIZE).into_drawing_area();
        draw(&root, report, font.is_ok()).map_err(std::io::Error::other)?;
    }
    let (png, note) = match font {
        Ok(_) => {
            let png = dir.join("tracking.png");
            {
                let root = BitMapBackend::new(&png, SIZE).into_drawing_area();
                draw(&root, report, true).map_err(std::io::Error::other)?;
            }
            (Some(png), None)
        }
        Err(e) => (
            None,
            Some(format!("PNG skipped: {e}; the SVG has the same content")),
        ),
    };
    Ok(PlotFiles { svg, png, note })
}

const SIZE: (u32, u32) = (1500, 1320);
const LEGEND_W: u32 = 430;
const COLORS: [RGBColor; 7] = [
    RGBColor(214, 39, 40),
    RGBColor(255, 127, 14),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
    RGBColor(227, 119, 194),
    RGBColor(23, 190, 207),
    RGBColor(44, 160, 44),
];

/// Finds and registers a TrueType font once; the result says which or why not.
fn font() -> Result<PathBuf, String> {
    static FONT: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    FONT.get_or_init(|| {
        let path = find_font().ok_or_else(|| {
            "no TrueType font found (set DAXFS_PLOT_FONT to a .ttf file)".to_string()
        })?;
        let bytes = std::fs::read(&path)
            .map_err(|e| format!("cannot read font {}: {e}", path.display()))?;
        let bytes: &'static [u8] = Box::leak(bytes.into_boxed_slice());
        for style in [FontStyle::Normal, FontStyle::Bold] {
            plotters::style::register_font("sans-serif", style, bytes)
                .map_err(|_| format!("{} is not a usable TrueType font", path.display()))?;
        }
        Ok(path)
    })
    .clone()
}

fn find_font() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("DAXFS_PLOT_FONT") {
        return Some(PathBuf::from(p));
    }
    let mut dirs = vec![
        PathBuf::from("/usr/share/fonts"),
        PathBuf::from("/usr/local/share/fonts"),
    ];
    if let Some(home) = std::env::var_os("HOME") {
        dirs.push(Path::new(&home).join(".local/share/fonts"));
        dirs.push(Path::new(&home).join(".fonts"));
    }
    let mut all = Vec::new();
    for d in dirs {
        collect_ttf(&d, 0, &mut all);
    }
    for want in [
        "DejaVuSans.ttf",
        "LiberationSans-Regular.ttf",
        "FreeSans.ttf",
        "NotoSans-Regular.ttf",
    ] {
        if let Some(p) = all
            .iter()
            .find(|p| p.file_name().is_some_and(|n| n == want))
        {
            return Some(p.clone());
        }
    }
    all.sort();
    all.into_iter().next()
}

fn collect_ttf(dir: &Path, depth: u32, out: &mut Vec<PathBuf>) {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return;
    };
    for e in rd.flatten() {
        let p = e.path();
        if p.is_dir() && depth < 6 {
            collect_ttf(&p, depth + 1, out);
        } else if p.extension().is_some_and(|x| x.eq_ignore_ascii_case("ttf")) {
            out.push(p);
        }
    }
}

struct Panel {
    title: &'static str,
    unit: &'static str,
    value: fn(&WorkloadReport, &StrategyResult) -> f64,
    /// The file system's reverse map on the same measure, when it applies.
    rmap: fn(&WorkloadReport) -> Option<f64>,
}

/// The colour of the file system's reverse map, drawn after the strategies.
const RMAP_COLOR: RGBColor = RGBColor(127, 127, 127);

/// Whether the report measured the file system's reverse map.
fn has_rmap(report: &Report) -> bool {
    report.workloads.iter().any(|w| w.rmap.is_some())
}

const PANELS: [Panel; 3] = [
    Panel {
        title: "Time per event when no error happens",
        unit: "ns / event",
        value: |_, r| r.ns_per_event,
        rmap: |w| w.rmap_ns_per_event(),
    },
    Panel {
        title: "Memory per mapped page",
        unit: "bytes / mapped page",
        value: |w, r| r.bytes_final as f64 / w.mapped_pages.max(1) as f64,
        rmap: |w| w.rmap_bytes_per_page(),
    },
    Panel {
        title: "Time to find every owner of a shared page",
        unit: "µs / lookup",
        value: |_, r| r.lookup_shared_ns / 1e3,
        rmap: |_| None,
    },
];

fn short(v: f64) -> String {
    let a = v.abs();
    let (x, suffix) = if a >= 1e9 {
        (v / 1e9, "G")
    } else if a >= 1e6 {
        (v / 1e6, "M")
    } else if a >= 1e3 {
        (v / 1e3, "k")
    } else {
        (v, "")
    };
    let s = if x.fract().abs() < 1e-9 {
        format!("{x:.0}")
    } else {
        format!("{x}")
    };
    format!("{s}{suffix}")
}

fn err<E: std::fmt::Display>(e: E) -> String {
    e.to_string()
}

fn draw<DB: DrawingBackend>(
    root: &DrawingArea<DB, Shift>,
    report: &Report,
    text: bool,
) -> Result<(), String> {
    root.fill(&WHITE).map_err(err)?;
    let (w, _) = root.dim_in_pixel();
    let (head, body) = root.split_vertically(56);
    let (charts, legend) = body.split_horizontally(w - LEGEND_W);
    if text {
        let title = format!(
            "Finding every owner of a failed DAX page: 7 designs x {} workloads on {} ({}, log scales)",
            report.workloads.len(),
            report.fs,
            if report.small {
                report.scale_label()
            } else {
                format!("scale {}", report.scale_label())
            }
        );
        head.draw(&Text::new(title, (20, 16), ("sans-serif", 24).into_font()))
            .map_err(err)?;
    }
    for (panel, spec) in charts
        .split_evenly((PANELS.len(), 1))
        .iter()
        .zip(PANELS.iter())
    {
        draw_panel(panel, report, spec, text)?;
    }
    draw_legend(&legend, report, text)?;
    root.present().map_err(err)
}

fn draw_panel<DB: DrawingBackend>(
    area: &DrawingArea<DB, Shift>,
    report: &Report,
    spec: &Panel,
    text: bool,
) -> Result<(), String> {
    let nw = report.workloads.len().max(1);
    // Slots 0..7 are the strategies, slot 7 the file system's reverse map.
    let values: Vec<Vec<(usize, f64)>> = report
        .workloads
        .iter()
        .map(|w| {
            w.results
                .iter()
                .map(|r| ((r.strategy.number() - 1) as usize, (spec.value)(w, r)))
                .chain((spec.rmap)(w).map(|v| (Strategy::ALL.len(), v)))
                .collect()
        })
        .collect();
    let pos: Vec<f64> = values
        .iter()
        .flatten()
        .map(|(_, v)| *v)
        .filter(|v| *v > 0.0)
        .collect();
    let lo = pos.iter().copied().fold(f64::INFINITY, f64::min);
    let hi = pos.iter().copied().fold(0.0, f64::max);
    let (lo, hi) = if pos.is_empty() { (0.1, 1.0) } else { (lo, hi) };
    let floor = 10f64.powf((lo.log10() - 0.5).floor());
    let top = 10f64.powf((hi.log10() + 0.3).ceil());
    let names: Vec<String> = report.workloads.iter().map(|w| w.name.clone()).collect();

    let mut builder = ChartBuilder::on(area);
    builder.margin(14);
    if text {
        builder
            .caption(spec.title, ("sans-serif", 20))
            .x_label_area_size(30)
            .y_label_area_size(70);
    }
    let mut chart = builder
        .build_cartesian_2d(0f64..nw as f64, (floor..top).log_scale())
        .map_err(err)?;
    if text {
        let fmt_x = |x: &f64| {
            let twice = (x * 2.0).round() as i64;
            if twice % 2 == 1 {
                names.get((twice / 2) as usize).cloned().unwrap_or_default()
            } else {
                String::new()
            }
        };
        chart
            .configure_mesh()
            .disable_x_mesh()
            .x_labels(2 * nw + 1)
            .x_label_formatter(&fmt_x)
            .y_label_formatter(&|v| short(*v))
            .y_desc(spec.unit)
            .label_style(("sans-serif", 15))
            .draw()
            .map_err(err)?;
    } else {
        chart
            .configure_mesh()
            .disable_x_mesh()
            .draw()
            .map_err(err)?;
    }
    let slots = Strategy::ALL.len() + usize::from(has_rmap(report));
    let slot = 0.84 / slots as f64;
    for (i, group) in values.iter().enumerate() {
        for &(s, v) in group {
            let j = s as f64;
            let x0 = i as f64 + 0.08 + j * slot;
            let x1 = x0 + slot * 0.86;
            let color = COLORS.get(s).copied().unwrap_or(RMAP_COLOR);
            if v > 0.0 {
                chart
                    .draw_series([Rectangle::new([(x0, floor), (x1, v)], color.filled())])
                    .map_err(err)?;
            } else if text {
                chart
                    .draw_series([Text::new(
                        "0",
                        ((x0 + x1) / 2.0 - 0.01, floor * 1.6),
                        ("sans-serif", 13).into_font().color(&color),
                    )])
                    .map_err(err)?;
            }
        }
    }
    Ok(())
}

fn draw_legend<DB: DrawingBackend>(
    area: &DrawingArea<DB, Shift>,
    report: &Report,
    text: bool,
) -> Result<(), String> {
    let mut y = 70;
    if text {
        area.draw(&Text::new(
            "strategy",
            (10, 40),
            ("sans-serif", 18).into_font(),
        ))
        .map_err(err)?;
    }
    for s in Strategy::ALL {
        let c = COLORS[(s.number() - 1) as usize];
        area.draw(&Rectangle::new([(10, y), (30, y + 16)], c.filled()))
            .map_err(err)?;
        if text {
            let label = format!("{} {}", s.number(), s.name());
            area.draw(&Text::new(label, (38, y), ("sans-serif", 16).into_font()))
                .map_err(err)?;
            area.draw(&Text::new(
                s.title().to_string(),
                (38, y + 19),
                ("sans-serif", 12).into_font().color(&RGBColor(90, 90, 90)),
            ))
            .map_err(err)?;
        }
        y += 48;
    }
    if has_rmap(report) {
        area.draw(&Rectangle::new(
            [(10, y), (30, y + 16)],
            RMAP_COLOR.filled(),
        ))
        .map_err(err)?;
        if text {
            area.draw(&Text::new(
                format!("{}'s reverse map", report.fs),
                (38, y),
                ("sans-serif", 16).into_font(),
            ))
            .map_err(err)?;
            area.draw(&Text::new(
                "what 7 asks; its cost per event is the run time",
                (38, y + 19),
                ("sans-serif", 12).into_font().color(&RGBColor(90, 90, 90)),
            ))
            .map_err(err)?;
            area.draw(&Text::new(
                "with it minus without it",
                (38, y + 33),
                ("sans-serif", 12).into_font().color(&RGBColor(90, 90, 90)),
            ))
            .map_err(err)?;
        }
        y += 56;
    }
    if text {
        let (mut exact, mut lossy) = (Vec::new(), Vec::new());
        for s in Strategy::ALL {
            let rs: Vec<_> = report
                .workloads
                .iter()
                .flat_map(|w| &w.results)
                .filter(|r| r.strategy == s)
                .collect();
            if rs.is_empty() {
                continue;
            }
            let ok = rs.iter().all(|r| r.pages.exact() && r.mappings.exact());
            (if ok { &mut exact } else { &mut lossy }).push(s.number().to_string());
        }
        let notes = [
            "A zero (no state) is written as 0".to_string(),
            "on the axis.".to_string(),
            format!("Exact owners on every page: {}", exact.join(", ")),
            format!(
                "Missed or wrong owners: {}",
                if lossy.is_empty() {
                    "none".to_string()
                } else {
                    lossy.join(", ")
                }
            ),
        ];
        for (k, line) in notes.iter().enumerate() {
            area.draw(&Text::new(
                line.as_str(),
                (10, y + 20 + 20 * k as i32),
                ("sans-serif", 14).into_font(),
            ))
            .map_err(err)?;
        }
    }
    Ok(())
}
