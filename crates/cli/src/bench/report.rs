//! Figures and how they are printed: one line each as it is measured, or one
//! JSON document at the end.
use serde::Serialize;
use std::io::Write;

/// What a figure is checked against. Informational: a miss never changes the
/// exit status, since a shared machine can miss any target by noise alone.
#[derive(Clone, Copy, Debug)]
pub enum Target {
    /// The ratio to the reference figure must be at least this.
    RatioAtLeast(f64),
    /// The ratio to the reference figure must be at most this.
    RatioAtMost(f64),
    /// The value (in the figure's unit) must be at most this.
    AtMost(f64),
}

/// A figure's value divided by a reference figure's value.
#[derive(Debug, Serialize)]
pub struct Ratio {
    pub to: String,
    pub value: f64,
}

/// One measured figure.
#[derive(Debug, Serialize)]
pub struct Figure {
    /// Stable identifier, for scripts.
    pub name: String,
    /// What was measured, for people.
    pub label: String,
    /// "machine" (the physical limits), "daxfs", or "peer" (tmpfs via syscalls).
    pub group: &'static str,
    pub value: f64,
    /// "GB/s" (10^9 bytes per second), "us" or "ms".
    pub unit: &'static str,
    /// `value` divided by the value of the figure named by `ratio_to`: the
    /// first of `ratios`, the one a ratio target is checked against.
    pub ratio: Option<f64>,
    pub ratio_to: Option<String>,
    /// Every ratio to a reference figure, the primary one first.
    pub ratios: Vec<Ratio>,
    /// The target, written out ("ratio >= 0.80", "<= 1 us").
    pub target: Option<String>,
    /// Whether the target was met.
    pub pass: Option<bool>,
}

impl Figure {
    pub fn new(
        name: impl Into<String>,
        group: &'static str,
        label: impl Into<String>,
        value: f64,
        unit: &'static str,
    ) -> Figure {
        Figure {
            name: name.into(),
            label: label.into(),
            group,
            value,
            unit,
            ratio: None,
            ratio_to: None,
            ratios: vec![],
            target: None,
            pass: None,
        }
    }

    /// Adds the ratio of this figure's value to the reference figure `to`;
    /// the first one added is the primary ratio.
    pub fn ratio(mut self, to: &Figure) -> Figure {
        if to.value > 0.0 {
            let value = self.value / to.value;
            if self.ratios.is_empty() {
                self.ratio = Some(value);
                self.ratio_to = Some(to.name.clone());
            }
            self.ratios.push(Ratio {
                to: to.name.clone(),
                value,
            });
        }
        self
    }

    pub fn target(mut self, t: Target) -> Figure {
        let (text, pass) = match t {
            Target::RatioAtLeast(r) => (
                format!(
                    ">= {r:.2}x {}",
                    self.ratio_to.as_deref().unwrap_or("reference")
                ),
                self.ratio.map(|x| x >= r),
            ),
            Target::RatioAtMost(r) => (
                format!(
                    "<= {r:.2}x {}",
                    self.ratio_to.as_deref().unwrap_or("reference")
                ),
                self.ratio.map(|x| x <= r),
            ),
            Target::AtMost(v) => (format!("<= {v} {}", self.unit), Some(self.value <= v)),
        };
        self.target = Some(text);
        self.pass = pass;
        self
    }
}

fn show_unit(u: &str) -> &str {
    if u == "us" { "µs" } else { u }
}

/// Collects figures; in text mode prints each as soon as it is measured so a
/// long run shows progress.
pub struct Report {
    json: bool,
    /// What the peer is, for its heading.
    peer: String,
    figures: Vec<Figure>,
    last_group: &'static str,
}

impl Report {
    pub fn new(json: bool, peer: String) -> Report {
        Report {
            json,
            peer,
            figures: vec![],
            last_group: "",
        }
    }

    /// Prints a line of context (text mode only).
    pub fn note(&self, line: &str) {
        if !self.json {
            println!("{line}");
        }
    }

    /// Records `f`, prints it in text mode, and returns its index for
    /// [`Report::get`] (later figures take their ratios from earlier ones).
    pub fn add(&mut self, f: Figure) -> usize {
        if !self.json {
            if f.group != self.last_group {
                println!();
                match f.group {
                    "machine" => println!("machine limits (single thread)"),
                    "peer" => println!("peer: {}", self.peer),
                    g => println!("{g}"),
                }
                self.last_group = f.group;
            }
            let value = format!("{:.3} {}", f.value, show_unit(f.unit));
            let ratio = if f.ratios.is_empty() {
                "-".to_string()
            } else {
                f.ratios
                    .iter()
                    .map(|r| format!("{:.3}x {}", r.value, r.to))
                    .collect::<Vec<_>>()
                    .join(", ")
            };
            let target = match (&f.target, f.pass) {
                (Some(t), Some(p)) => format!("{t}: {}", if p { "PASS" } else { "MISS" }),
                (Some(t), None) => t.clone(),
                _ => String::new(),
            };
            println!("  {:<46} {:>13}  {:<50} {}", f.label, value, ratio, target);
            let _ = std::io::stdout().flush();
        }
        self.figures.push(f);
        self.figures.len() - 1
    }

    pub fn get(&self, i: usize) -> &Figure {
        &self.figures[i]
    }

    /// Prints the JSON document (json mode only).
    pub fn finish(&self, config: &serde_json::Value) {
        if self.json {
            let doc = serde_json::json!({ "config": config, "figures": self.figures });
            println!("{doc}");
        }
    }
}
