//! `lingua-proxy report`: the offline A/B report over event logs.

use std::io::Write as _;
use std::path::PathBuf;

use anyhow::Context;

use crate::telemetry::PriceTable;
use crate::telemetry::report::{Report, load};

/// Read event logs (JSONL) and report what compression saved, per arm and model, with 95%
/// bootstrap confidence intervals.
#[derive(Debug, Clone, clap::Args)]
pub struct ReportArgs {
    /// Event log files (JSON lines), read in order.
    #[arg(value_name = "EVENTS", required = true, num_args = 1..)]
    pub events: Vec<PathBuf>,
    /// Prices in US dollars per million tokens (TOML: `["<model>"] input = .., cached_input =
    /// .., output = ..`), on top of the built-in table.
    #[arg(long, value_name = "FILE")]
    pub prices: Option<PathBuf>,
    /// Also write the report as one self-contained HTML page to this file.
    #[arg(long, value_name = "OUT")]
    pub html: Option<PathBuf>,
    /// Print the report as JSON instead of text.
    #[arg(long)]
    pub json: bool,
}

/// Runs the subcommand: prints the report to stdout and writes the HTML page if asked.
pub fn run(args: ReportArgs) -> anyhow::Result<()> {
    let prices = match &args.prices {
        Some(path) => PriceTable::from_toml_file(path).map_err(anyhow::Error::msg)?,
        None => PriceTable::default(),
    };
    let loaded = load(&args.events)?;
    for example in &loaded.malformed_examples {
        eprintln!("lingua-proxy report: skipped malformed line {example}");
    }
    let report =
        Report::compute(&loaded.events, &prices).with_malformed_lines(loaded.malformed_lines);
    if let Some(path) = &args.html {
        std::fs::write(path, report.render_html())
            .with_context(|| format!("cannot write {}", path.display()))?;
    }
    let text = if args.json {
        let mut json =
            serde_json::to_string_pretty(&report).context("cannot serialise the report")?;
        json.push('\n');
        json
    } else {
        report.render_text()
    };
    let mut stdout = std::io::stdout().lock();
    stdout
        .write_all(text.as_bytes())
        .and_then(|()| stdout.flush())
        .context("cannot write to stdout")
}
