//! Runs the owner-tracking benchmark and writes `tracking.md`, `tracking.svg`
//! and `tracking.png`: what `daxfs bench tracking` does, with more knobs.
//!
//! ```text
//! cargo run --release -p daxfs-tracking --example bench_tracking -- [--out DIR] [--scale 1/128]
//!     [--seed N] [--workload NAME]... [--check-pages N] [--samples N] [--small] [--model]
//! ```
//! `--out` defaults to `docs`; run from the repository root to regenerate the
//! committed outputs. The workloads run on daxfs unless `--model` asks for
//! the in-memory model.

use std::path::PathBuf;

use daxfs_tracking::{BenchOptions, parse_scale, run_bench, run_bench_on_daxfs, write_outputs};

fn main() {
    let mut opts = BenchOptions {
        progress: true,
        ..BenchOptions::default()
    };
    let mut out = PathBuf::from("docs");
    let mut model = false;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let mut val = || {
            args.next()
                .unwrap_or_else(|| die(&format!("{a} needs a value")))
        };
        match a.as_str() {
            "--out" => out = PathBuf::from(val()),
            "--scale" => opts.scale = parse_scale(&val()).unwrap_or_else(|e| die(&e)),
            "--seed" => opts.seed = val().parse().unwrap_or_else(|_| die("bad --seed")),
            "--workload" => opts.workloads.push(val()),
            "--check-pages" => {
                opts.check_pages = val().parse().unwrap_or_else(|_| die("bad --check-pages"))
            }
            "--samples" => {
                opts.lookup_samples = val().parse().unwrap_or_else(|_| die("bad --samples"))
            }
            "--small" => opts.small = true,
            "--model" => model = true,
            "-h" | "--help" => {
                println!(
                    "usage: bench_tracking [--out DIR] [--scale 1/128] [--seed N] [--workload NAME]... \
                     [--check-pages N] [--samples N] [--small] [--model]"
                );
                return;
            }
            _ => die(&format!("unknown argument {a}")),
        }
    }
    let t = std::time::Instant::now();
    let report = if model {
        run_bench(&opts)
    } else {
        run_bench_on_daxfs(&opts).unwrap_or_else(|e| die(&e.to_string()))
    };
    let files =
        write_outputs(&report, &out).unwrap_or_else(|e| die(&format!("writing outputs: {e}")));
    eprintln!("{} in {:.1} s", files.message(), t.elapsed().as_secs_f64());
    println!("{}", report.conclusion());
}

fn die(msg: &str) -> ! {
    eprintln!("bench_tracking: {msg}");
    std::process::exit(2)
}
