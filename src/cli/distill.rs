//! `lingua-proxy distill`: the model-free steps of LLMLingua-2's data distillation over JSON
//! Lines files ([`crate::distill`]).
//!
//! - `collect`: reads `{"id", "text"}` per line, cuts each text into chunks of at most 512
//!   cl100k tokens ending at `.` or a line break, and asks an OpenAI-compatible model to compress
//!   each with the paper's instruction; appends `{"id", "origin", "comp", ...}` per chunk and
//!   skips chunks already in the output, so an interrupted run resumes.
//! - `label`: reads `{"id", "origin", "comp"}` per line (an original chunk and the LLM's
//!   compression of it), writes per line `id`, `origin`, `comp`, `words` (surface forms),
//!   `labels` (true: kept), `retrieval` (the kept words) and the five metrics. An empty original
//!   is reported and skipped.
//! - `filter`: reads `label`'s output, writes the lines the two-stage filter keeps, and prints
//!   both thresholds and the counts.

use std::io::{BufRead, BufWriter, Write};
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use serde_json::{Value, json};

use crate::distill::filter::{Ties, filter};
use crate::distill::label::{DEFAULT_WINDOW, align};
use crate::distill::words::split;

#[derive(Debug, clap::Args)]
pub struct DistillArgs {
    #[command(subcommand)]
    pub step: Step,
}

#[derive(Debug, clap::Subcommand)]
pub enum Step {
    /// Ask an LLM to compress every chunk of the input texts with the paper's instruction.
    Collect(CollectArgs),
    /// Align compressions to their originals and label every original word keep or drop.
    Label(LabelArgs),
    /// Drop the chunks whose variation rate, then alignment gap, reach the 90th percentile.
    Filter(FilterArgs),
}

#[derive(Debug, clap::Args)]
pub struct CollectArgs {
    /// JSON Lines of `{"id", "text"}`, or with `--from-events` an event log.
    #[arg(long)]
    pub input: PathBuf,
    /// The input is an event log written with `[telemetry] log_content = true`: its system,
    /// tool and earlier user messages, prose only, deduplicated.
    #[arg(long)]
    pub from_events: bool,
    /// JSON Lines the answers are appended to (chunks already there are skipped).
    #[arg(long)]
    pub output: PathBuf,
    /// The OpenAI-compatible API, e.g. `https://api.openai.com/v1`.
    #[arg(long)]
    pub base_url: String,
    #[arg(long, default_value = "gpt-4o")]
    pub model: String,
    /// Environment variable holding the API key (none: no Authorization header).
    #[arg(long, default_value = "OPENAI_API_KEY")]
    pub api_key_env: String,
    #[arg(long, default_value_t = crate::distill::chunk::DEFAULT_CHUNK_TOKENS)]
    pub chunk_tokens: usize,
    #[arg(long, default_value_t = 4)]
    pub concurrency: usize,
    #[arg(long, default_value_t = 0.3)]
    pub temperature: f64,
    #[arg(long, default_value_t = 4000)]
    pub max_tokens: u64,
    /// Retries of a call that got 429, 5xx or no answer, with doubling waits.
    #[arg(long, default_value_t = 6)]
    pub retries: u32,
    /// Refuse to start when the estimate exceeds this many US dollars, and stop sending once
    /// the billed usage reaches it.
    #[arg(long)]
    pub max_cost: Option<f64>,
}

#[derive(Debug, clap::Args)]
pub struct LabelArgs {
    /// JSON Lines of `{"id", "origin", "comp"}`.
    #[arg(long)]
    pub input: PathBuf,
    /// Where the labelled chunks go (JSON Lines).
    #[arg(long)]
    pub output: PathBuf,
    /// How far (in words) a compressed word is looked for around the cursor.
    #[arg(long, default_value_t = DEFAULT_WINDOW)]
    pub window: usize,
    /// Fold plural, -ed and -ing endings in match keys (the reference compares spaCy lemmas).
    #[arg(long)]
    pub normalise: bool,
}

#[derive(Debug, clap::Args)]
pub struct FilterArgs {
    /// `distill label` output.
    #[arg(long)]
    pub input: PathBuf,
    /// The chunks kept (JSON Lines).
    #[arg(long)]
    pub output: PathBuf,
    #[arg(long, default_value_t = 90.0)]
    pub percentile: f64,
    /// Drop chunks exactly at a threshold, as the reference does (which drops every chunk of a
    /// stage when 90% of them share its minimum).
    #[arg(long)]
    pub drop_ties: bool,
}

pub fn run(args: DistillArgs) -> anyhow::Result<()> {
    match args.step {
        Step::Collect(a) => collect(a),
        Step::Label(a) => label(a),
        Step::Filter(a) => filter_step(a),
    }
}

fn lines(path: &PathBuf) -> anyhow::Result<Vec<Value>> {
    let file = std::fs::File::open(path).with_context(|| format!("{}", path.display()))?;
    let mut out = Vec::new();
    for (n, line) in std::io::BufReader::new(file).lines().enumerate() {
        let line = line.with_context(|| format!("{} line {}", path.display(), n + 1))?;
        if line.trim().is_empty() {
            continue;
        }
        out.push(
            serde_json::from_str(&line)
                .with_context(|| format!("{} line {}: not JSON", path.display(), n + 1))?,
        );
    }
    Ok(out)
}

fn collect(a: CollectArgs) -> anyhow::Result<()> {
    use crate::distill::collect::{Answer, Settings, estimate, jobs, run};
    let records = lines(&a.input)?;
    let texts = if a.from_events {
        crate::distill::collect::texts_from_events(&records)
    } else {
        let mut texts = Vec::with_capacity(records.len());
        for (n, r) in records.into_iter().enumerate() {
            let text = r
                .get("text")
                .and_then(Value::as_str)
                .with_context(|| format!("line {}: `text` must be a string", n + 1))?
                .to_string();
            texts.push((r.get("id").cloned().unwrap_or(json!(n)), text));
        }
        texts
    };
    let done: std::collections::HashSet<String> = if a.output.exists() {
        lines(&a.output)?
            .iter()
            .filter_map(|r| r.get("id").and_then(Value::as_str).map(str::to_owned))
            .collect()
    } else {
        Default::default()
    };
    let todo = jobs(&texts, a.chunk_tokens, &done);
    let prices = crate::telemetry::PriceTable::default();
    let (prompt, completion, cost) = estimate(&todo, &a.model, &prices);
    let shown = cost.map_or("unknown (no price for the model)".to_string(), |c| {
        format!("${c:.4}")
    });
    eprintln!(
        "distill collect: {} chunks to send ({} already answered), about {prompt} prompt and \
         {completion} completion tokens, estimated cost {shown}",
        todo.len(),
        done.len()
    );
    if let (Some(max), Some(c)) = (a.max_cost, cost) {
        anyhow::ensure!(
            c <= max,
            "the estimate ${c:.4} is over --max-cost ${max:.4}; nothing sent"
        );
    }
    let settings = Settings {
        base_url: a.base_url,
        api_key: std::env::var(&a.api_key_env).ok().filter(|k| !k.is_empty()),
        model: a.model,
        temperature: a.temperature,
        max_tokens: a.max_tokens,
        concurrency: a.concurrency,
        retries: a.retries,
        backoff: Duration::from_millis(500),
    };
    let file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&a.output)
        .with_context(|| format!("{}", a.output.display()))?;
    let mut out = BufWriter::new(file);
    let total = todo.len();
    let (mut ok, mut failed, mut write_error) = (0usize, 0usize, None);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    crate::server::install_crypto_provider();
    let spent = runtime.block_on(run(&settings, todo, &prices, a.max_cost, |answer| {
        match answer {
            Answer::Ok { record, .. } => {
                ok += 1;
                // one line per answer, flushed: an interrupted run loses nothing it paid for
                if let Err(e) = writeln!(out, "{record}").and_then(|()| out.flush()) {
                    write_error.get_or_insert(e);
                }
            }
            Answer::Failed { id, error } => {
                failed += 1;
                eprintln!("distill collect: chunk {id}: {error}");
            }
        }
        eprint!("\rdistill collect: {}/{total} chunks", ok + failed);
    }));
    eprintln!();
    if let Some(e) = write_error {
        return Err(e).context(format!("{}", a.output.display()));
    }
    println!(
        "collected {ok} chunks, {failed} failed or not sent; billed cost ${spent:.4} \
         (from the answers' usage and the price table)"
    );
    Ok(())
}

fn label(a: LabelArgs) -> anyhow::Result<()> {
    anyhow::ensure!(a.window > 0, "--window must be positive");
    let records = lines(&a.input)?;
    let mut out = BufWriter::new(
        std::fs::File::create(&a.output).with_context(|| format!("{}", a.output.display()))?,
    );
    let (mut written, mut skipped) = (0usize, 0usize);
    let mut sums = [0.0f64; 5];
    for (n, r) in records.iter().enumerate() {
        let text = |k: &str| {
            r.get(k)
                .and_then(Value::as_str)
                .with_context(|| format!("line {}: `{k}` must be a string", n + 1))
        };
        let (origin, comp) = (text("origin")?, text("comp")?);
        let id = r.get("id").cloned().unwrap_or(json!(n));
        let ow = split(origin, a.normalise);
        let cw = split(comp, a.normalise);
        let okeys: Vec<&str> = ow.iter().map(|w| w.key.as_str()).collect();
        let ckeys: Vec<&str> = cw.iter().map(|w| w.key.as_str()).collect();
        let Some(al) = align(&okeys, &ckeys, a.window) else {
            eprintln!("distill label: chunk {id}: the original has no words; skipped");
            skipped += 1;
            continue;
        };
        let m = al.metrics;
        for (s, v) in sums.iter_mut().zip([
            m.comp_rate,
            m.variation_rate,
            m.hitting_rate,
            m.matching_rate,
            m.alignment_gap,
        ]) {
            *s += v;
        }
        let retrieval: Vec<&str> = ow
            .iter()
            .zip(&al.labels)
            .filter(|(_, l)| **l)
            .map(|(w, _)| w.surface.as_str())
            .collect();
        let line = json!({
            "id": id,
            "origin": origin,
            "comp": comp,
            "words": ow.iter().map(|w| &w.surface).collect::<Vec<_>>(),
            "labels": al.labels,
            "retrieval": retrieval.join(" "),
            "comp_rate": m.comp_rate,
            "variation_rate": m.variation_rate,
            "hitting_rate": m.hitting_rate,
            "matching_rate": m.matching_rate,
            "alignment_gap": m.alignment_gap,
        });
        writeln!(out, "{line}")?;
        written += 1;
    }
    out.flush()?;
    let avg = |i: usize| sums[i] / written.max(1) as f64;
    println!(
        "labelled {written} chunks ({skipped} skipped); mean comp_rate {:.4}, variation_rate {:.4}, \
         hitting_rate {:.4}, matching_rate {:.4}, alignment_gap {:.4}",
        avg(0),
        avg(1),
        avg(2),
        avg(3),
        avg(4)
    );
    Ok(())
}

fn filter_step(a: FilterArgs) -> anyhow::Result<()> {
    anyhow::ensure!(
        (0.0..=100.0).contains(&a.percentile),
        "--percentile must be within 0 and 100"
    );
    let records = lines(&a.input)?;
    let mut chunks = Vec::with_capacity(records.len());
    for (n, r) in records.iter().enumerate() {
        let get = |k: &str| {
            r.get(k).and_then(Value::as_f64).with_context(|| {
                format!(
                    "line {}: `{k}` must be a number (distill label output)",
                    n + 1
                )
            })
        };
        chunks.push((get("variation_rate")?, get("alignment_gap")?));
    }
    let ties = if a.drop_ties { Ties::Drop } else { Ties::Keep };
    let f = filter(&chunks, a.percentile, ties);
    let mut out = BufWriter::new(
        std::fs::File::create(&a.output).with_context(|| format!("{}", a.output.display()))?,
    );
    for &i in &f.kept {
        writeln!(out, "{}", records[i])?;
    }
    out.flush()?;
    let show = |t: Option<f64>| t.map_or("-".to_string(), |t| format!("{t:.4}"));
    println!(
        "kept {} of {} chunks (variation_rate threshold {}, alignment_gap threshold {}, ties {})",
        f.kept.len(),
        chunks.len(),
        show(f.thresholds.0),
        show(f.thresholds.1),
        if a.drop_ties { "dropped" } else { "kept" }
    );
    Ok(())
}
