//! The benchmark's outputs are produced and non-trivial.

use daxfs_tracking::{BenchOptions, Strategy, parse_scale, run_bench, write_outputs};

#[test]
fn small_bench_writes_markdown_svg_and_png() {
    let report = run_bench(&BenchOptions {
        small: true,
        lookup_samples: 50,
        ..BenchOptions::default()
    });
    assert_eq!(report.workloads.len(), 4);
    for w in &report.workloads {
        assert_eq!(w.results.len(), 7);
        assert!(w.events > 0 && w.shared_pages > 0 && w.mapped_pages > w.shared_pages);
        for r in &w.results {
            let exact = r.pages.exact() && r.mappings.exact();
            assert_eq!(
                exact,
                r.strategy != Strategy::PerPageSingle,
                "{} {}",
                w.name,
                r.strategy.name()
            );
            assert!(r.pages.truth > 0 && r.pages.found > 0);
            assert!(r.lookup_shared_ns > 0.0, "{} {}", w.name, r.strategy.name());
        }
    }

    let dir = std::env::temp_dir().join(format!("daxfs-tracking-outputs-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let files = write_outputs(&report, &dir).unwrap();

    let md = std::fs::read_to_string(&files.markdown).unwrap();
    assert!(md.contains("| workload | strategy | ns / event"));
    assert!(md.contains("## At a media error"));
    for w in &report.workloads {
        for s in Strategy::ALL {
            assert!(
                md.contains(&format!("| {} | {} `{}` |", w.name, s.number(), s.name())),
                "row {} {}",
                w.name,
                s.name()
            );
        }
    }

    let svg = std::fs::read_to_string(&files.plots.svg).unwrap();
    assert!(svg.starts_with("<svg") || svg.contains("<svg"));
    assert!(
        svg.matches("<rect").count() >= 4 * 6,
        "too few bars in the SVG"
    );
    assert!(svg.len() > 10_000);

    match &files.plots.png {
        Some(png) => {
            let bytes = std::fs::read(png).unwrap();
            assert_eq!(&bytes[..8], b"\x89PNG\r\n\x1a\n");
            assert!(bytes.len() > 20_000, "PNG only {} bytes", bytes.len());
        }
        None => assert!(
            files
                .plots
                .note
                .as_deref()
                .is_some_and(|n| n.contains("font"))
        ),
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn scales_parse() {
    assert_eq!(parse_scale("1/64").unwrap(), 1.0 / 64.0);
    assert_eq!(parse_scale("0.5").unwrap(), 0.5);
    assert!(parse_scale("2").is_err());
    assert!(parse_scale("1/0").is_err());
    assert!(parse_scale("x").is_err());
}
