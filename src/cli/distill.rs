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
    /// Fine-tune a BERT or XLM-R token classifier on labelled chunks.
    Train(TrainArgs),
    /// Compare scorers against the LLM's labels on held-out chunks (F1, accuracy, AUC).
    Eval(EvalArgs),
    /// Fine-tune the causal LM of `llmlingua` / `longllmlingua` on the target LLM's answers.
    Align(AlignArgs),
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

#[derive(Debug, clap::Args)]
pub struct TrainArgs {
    /// `distill filter` (or `label`) output.
    #[arg(long)]
    pub input: PathBuf,
    /// The checkpoint to start from: a directory or Hugging Face id of a BERT or XLM-R model
    /// (a token classifier keeps its head; a bare encoder gets a fresh one).
    #[arg(long)]
    pub model: String,
    /// Where the distilled checkpoint, `heldout.jsonl` and `training_report.json` go.
    #[arg(long)]
    pub output: PathBuf,
    #[arg(long, default_value_t = 10)]
    pub epochs: usize,
    #[arg(long, default_value_t = 10)]
    pub batch_size: usize,
    /// AdamW learning rate (the paper: 1e-5, constant).
    #[arg(long, default_value_t = 1e-5)]
    pub lr: f64,
    #[arg(long, default_value_t = 0.0)]
    pub weight_decay: f64,
    /// Global gradient-norm clip (0: none).
    #[arg(long, default_value_t = 10.0)]
    pub max_grad_norm: f64,
    /// Dropout (default: the checkpoint's `hidden_dropout_prob`).
    #[arg(long)]
    pub dropout: Option<f32>,
    /// Share of source texts held out for validation (whole sources, never single chunks).
    #[arg(long, default_value_t = 0.1)]
    pub validation: f64,
    /// Stop after this many epochs without a lower validation loss.
    #[arg(long, default_value_t = 2)]
    pub patience: usize,
    /// Longest window in model tokens, `[CLS]` and `[SEP]` included.
    #[arg(long, default_value_t = 512)]
    pub max_len: usize,
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
    /// `cpu`, or `cuda:N` in a build with the `cuda` feature.
    #[arg(long, default_value = "cpu")]
    pub device: String,
    /// Continue from the checkpoint already in `--output` (weights; the optimiser restarts).
    #[arg(long)]
    pub resume: bool,
}

#[derive(Debug, clap::Args)]
pub struct EvalArgs {
    /// Labelled held-out chunks (`heldout.jsonl` from `distill train`, or `label` output).
    #[arg(long)]
    pub input: PathBuf,
    /// An LLMLingua-2 checkpoint to evaluate, `NAME=DIR` or `DIR` (repeatable).
    #[arg(long = "model")]
    pub models: Vec<String>,
    /// Evaluate the embedded heuristic scorer too.
    #[arg(long)]
    pub heuristic: bool,
    /// Write the table as a self-contained HTML page.
    #[arg(long)]
    pub html: Option<PathBuf>,
    /// Write the results as JSON.
    #[arg(long)]
    pub json: Option<PathBuf>,
    /// Also ask this OpenAI-compatible API the same question about each sampled chunk, raw and
    /// compressed by each scorer at the LLM's rate, and measure how the answers agree (exact
    /// match, token F1, ROUGE-L: the A/B agreement measures).
    #[arg(long)]
    pub judge_base_url: Option<String>,
    #[arg(long, default_value = "gpt-4o-mini")]
    pub judge_model: String,
    /// Environment variable holding the judge's API key.
    #[arg(long, default_value = "OPENAI_API_KEY")]
    pub judge_api_key_env: String,
    /// Chunks asked about (the first N held-out chunks).
    #[arg(long, default_value_t = 20)]
    pub judge_sample: usize,
    /// The question, `{text}` standing for the chunk.
    #[arg(
        long,
        default_value = "Answer in one sentence: what are the key facts of this text?\n\n{text}"
    )]
    pub judge_prompt: String,
}

#[derive(Debug, clap::Args)]
pub struct AlignArgs {
    /// JSON Lines of `{"prompt", "answer"}` or `distill collect` output; with `--from-events`
    /// an event log written with `log_content = true`.
    #[arg(long)]
    pub input: PathBuf,
    #[arg(long)]
    pub from_events: bool,
    /// The causal LM to align: a Llama or Qwen2 checkpoint directory.
    #[arg(long)]
    pub model: PathBuf,
    /// Where the aligned checkpoint and `alignment_report.json` go.
    #[arg(long)]
    pub output: PathBuf,
    #[arg(long, default_value_t = 3)]
    pub epochs: usize,
    #[arg(long, default_value_t = 4)]
    pub batch_size: usize,
    #[arg(long, default_value_t = 2e-5)]
    pub lr: f64,
    #[arg(long, default_value_t = 0.0)]
    pub weight_decay: f64,
    /// Global gradient-norm clip (0: none).
    #[arg(long, default_value_t = 1.0)]
    pub max_grad_norm: f64,
    /// Train low-rank adapters of this rank on the query and value projections instead of
    /// every weight (merged into the saved checkpoint).
    #[arg(long)]
    pub lora_rank: Option<usize>,
    /// LoRA scale numerator (default: twice the rank).
    #[arg(long)]
    pub lora_alpha: Option<f64>,
    /// Longest sequence in model tokens (prompt tail + answer).
    #[arg(long, default_value_t = 512)]
    pub max_len: usize,
    /// Share of pairs held out to measure perplexity (by prompt, never split).
    #[arg(long, default_value_t = 0.1)]
    pub validation: f64,
    /// Stop after this many epochs without a lower held-out perplexity.
    #[arg(long, default_value_t = 1)]
    pub patience: usize,
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
    /// Continue from the checkpoint already in `--output` (weights; the optimiser restarts).
    #[arg(long)]
    pub resume: bool,
    /// Lines with a `prompt` and no `answer` are answered by this OpenAI-compatible API (the
    /// target LLM) first; answers are kept in `--output`/answers.jsonl and reused on a rerun.
    #[arg(long)]
    pub answer_base_url: Option<String>,
    #[arg(long, default_value = "gpt-4o-mini")]
    pub answer_model: String,
    #[arg(long, default_value = "OPENAI_API_KEY")]
    pub answer_api_key_env: String,
}

pub fn run(args: DistillArgs) -> anyhow::Result<()> {
    match args.step {
        Step::Collect(a) => collect(a),
        Step::Label(a) => label(a),
        Step::Filter(a) => filter_step(a),
        Step::Train(a) => train(a),
        Step::Eval(a) => eval(a),
        Step::Align(a) => align_step(a),
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
    let (mut ok, mut failed, mut write_error) = (0usize, 0usize, None);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    crate::server::install_crypto_provider();
    let bar = progress(todo.len())?;
    bar.set_prefix("distill collect");
    let spent = runtime.block_on(run(&settings, todo, &prices, a.max_cost, |answer| {
        match answer {
            Answer::Ok { record, cost } => {
                ok += 1;
                // one line per answer, flushed: an interrupted run loses nothing it paid for
                if let Err(e) = writeln!(out, "{record}").and_then(|()| out.flush()) {
                    write_error.get_or_insert(e);
                }
                if let Some(c) = cost {
                    bar.set_message(format!("last call ${c:.5}"));
                }
            }
            Answer::Failed { id, error } => {
                failed += 1;
                bar.suspend(|| eprintln!("distill collect: chunk {id}: {error}"));
            }
        }
        bar.inc(1);
    }));
    bar.finish_and_clear();
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
            "source_id": r.get("source_id"),
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

/// Files of the starting checkpoint the distilled one needs beside its own weights and config.
const TOKENIZER_FILES: [&str; 6] = [
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "vocab.txt",
    "sentencepiece.bpe.model",
    "added_tokens.json",
];

/// Copies the `names` that exist in `from` into `to`. Resuming reads from the output itself,
/// and a copy onto itself would truncate the file, so a file is never copied onto itself.
fn copy_files(from: &std::path::Path, to: &std::path::Path, names: &[&str]) -> anyhow::Result<()> {
    for f in names {
        let (src, dst) = (from.join(f), to.join(f));
        if src.exists() && src != dst {
            std::fs::copy(&src, &dst).with_context(|| format!("{}", src.display()))?;
        }
    }
    Ok(())
}

/// The `origin` and word `labels` of a `distill label` line (`n` counts from 0).
fn labelled_record(r: &Value, n: usize) -> anyhow::Result<(&str, Vec<bool>)> {
    let origin = r
        .get("origin")
        .and_then(Value::as_str)
        .with_context(|| format!("line {}: `origin` must be a string", n + 1))?;
    let labels = r
        .get("labels")
        .and_then(Value::as_array)
        .and_then(|l| l.iter().map(Value::as_bool).collect::<Option<Vec<bool>>>())
        .with_context(|| {
            format!(
                "line {}: `labels` must be booleans (distill label output)",
                n + 1
            )
        })?;
    Ok((origin, labels))
}

fn train(a: TrainArgs) -> anyhow::Result<()> {
    use crate::distill::train::{Labelled, batches, counts, held_out_sources, windows};
    use crate::scorer::llmlingua2::tokenizer::Llmlingua2Tokenizer;
    use lingua_encoder::train::{EvalSums, TrainSettings, Trainer};

    anyhow::ensure!(
        a.epochs > 0 && a.batch_size > 0,
        "--epochs and --batch-size must be positive"
    );
    anyhow::ensure!(
        (0.0..1.0).contains(&a.validation),
        "--validation must be within 0 and 1"
    );
    let started = std::time::Instant::now();
    let resumed = a.resume && a.output.join("model.safetensors").exists();
    let start = if resumed {
        a.output.display().to_string()
    } else {
        a.model.clone()
    };
    let files = lingua_encoder::ModelFiles::resolve(&start)?;
    let tok = Llmlingua2Tokenizer::from_dir(&files.dir)?;
    let settings = TrainSettings {
        lr: a.lr,
        weight_decay: a.weight_decay,
        max_grad_norm: (a.max_grad_norm > 0.0).then_some(a.max_grad_norm),
        dropout: a.dropout,
        seed: a.seed,
    };
    let mut trainer = Trainer::from_checkpoint(&files, &a.device, settings.clone())?;
    anyhow::ensure!(
        tok.len_with_added() <= trainer.config().vocab_size,
        "the tokenizer has {} ids but the model's embedding table {} rows",
        tok.len_with_added(),
        trainer.config().vocab_size
    );
    let max_len = a.max_len.min(trainer.max_len());
    let records = lines(&a.input)?;
    let mut chunks = Vec::with_capacity(records.len());
    for (n, r) in records.iter().enumerate() {
        let (origin, labels) = labelled_record(r, n)?;
        let source = match r
            .get("source_id")
            .filter(|v| !v.is_null())
            .or_else(|| r.get("id"))
        {
            Some(Value::String(s)) => s.clone(),
            Some(v) => v.to_string(),
            None => n.to_string(),
        };
        chunks.push(Labelled {
            source,
            origin: origin.to_string(),
            labels,
        });
    }
    anyhow::ensure!(
        !chunks.is_empty(),
        "{}: no labelled chunks",
        a.input.display()
    );
    let sources: Vec<&str> = chunks.iter().map(|c| c.source.as_str()).collect();
    let held: std::collections::HashSet<String> = held_out_sources(&sources, a.validation, a.seed)
        .into_iter()
        .collect();
    let (mut train_c, mut val_c) = (Vec::new(), Vec::new());
    let (mut train_w, mut val_w) = (Vec::new(), Vec::new());
    std::fs::create_dir_all(&a.output).with_context(|| format!("{}", a.output.display()))?;
    let heldout_path = a.output.join("heldout.jsonl");
    let mut heldout = BufWriter::new(std::fs::File::create(&heldout_path)?);
    for (n, c) in chunks.iter().enumerate() {
        let w = windows(&tok, c, max_len).map_err(|e| anyhow::anyhow!("line {}: {e}", n + 1))?;
        if held.contains(&c.source) {
            writeln!(heldout, "{}", records[n])?;
            val_c.push(c);
            val_w.extend(w);
        } else {
            train_c.push(c);
            train_w.extend(w);
        }
    }
    heldout.flush()?;
    let train_counts = counts(&train_c, &train_w);
    let val_counts = counts(&val_c, &val_w);
    eprintln!(
        "distill train: {} parameters ({} fresh: {}), {} training windows from {} sources, {} \
         validation windows from {} sources",
        trainer.parameters(),
        trainer.fresh().len(),
        if trainer.fresh().is_empty() {
            "-".to_string()
        } else {
            trainer.fresh().join(", ")
        },
        train_w.len(),
        train_counts.sources,
        val_w.len(),
        val_counts.sources
    );
    // the same batches every epoch for validation: sorted by length, little padding
    val_w.sort_by_key(|w| w.ids.len());
    let val_batches = batches(&val_w, a.batch_size);
    let validate = |t: &mut Trainer| -> anyhow::Result<Option<EvalSums>> {
        if val_batches.is_empty() {
            return Ok(None);
        }
        let mut sums = EvalSums::default();
        for b in &val_batches {
            sums.add(t.evaluate(b)?);
        }
        Ok(Some(sums))
    };
    let save = |t: &Trainer| -> anyhow::Result<()> {
        t.save(&a.output)?;
        copy_files(&files.dir, &a.output, &TOKENIZER_FILES)
    };
    let initial = validate(&mut trainer)?;
    let mut epochs = Vec::new();
    let mut best: Option<(usize, f64)> = None;
    let mut since_best = 0;
    let mut rng = fastrand::Rng::with_seed(a.seed);
    let steps_per_epoch = train_w.len().div_ceil(a.batch_size);
    let bar = progress(steps_per_epoch * a.epochs)?;
    let (mut total_tokens, mut train_secs) = (0usize, 0f64);
    for epoch in 1..=a.epochs {
        bar.set_prefix(format!("epoch {epoch}/{}", a.epochs));
        let mut order: Vec<&crate::distill::train::Window> = train_w.iter().collect();
        rng.shuffle(&mut order);
        let t0 = std::time::Instant::now();
        let (mut loss_sum, mut tokens, mut clipped) = (0f64, 0usize, 0usize);
        for b in batches(order, a.batch_size) {
            let s = trainer.step(&b)?;
            loss_sum += f64::from(s.loss) * s.tokens as f64;
            tokens += s.tokens;
            clipped += usize::from(
                settings
                    .max_grad_norm
                    .is_some_and(|m| f64::from(s.grad_norm) > m),
            );
            let secs = t0.elapsed().as_secs_f64().max(1e-9);
            bar.set_message(format!(
                "loss {:.4}, {:.0} tokens/s",
                loss_sum / tokens.max(1) as f64,
                tokens as f64 / secs
            ));
            bar.inc(1);
        }
        let secs = t0.elapsed().as_secs_f64();
        total_tokens += tokens;
        train_secs += secs;
        let val = validate(&mut trainer)?;
        let train_loss = loss_sum / tokens.max(1) as f64;
        let line = match val {
            Some(v) => format!(
                "epoch {epoch}: train loss {train_loss:.4}, validation loss {:.4}, accuracy {:.4}",
                v.loss(),
                v.accuracy()
            ),
            None => format!("epoch {epoch}: train loss {train_loss:.4} (no validation split)"),
        };
        bar.suspend(|| eprintln!("distill train: {line}"));
        epochs.push(json!({
            "epoch": epoch,
            "train_loss": train_loss,
            "validation_loss": val.map(|v| v.loss()),
            "validation_accuracy": val.map(|v| v.accuracy()),
            "clipped_steps": clipped,
            "tokens_per_second": tokens as f64 / secs.max(1e-9),
            "seconds": secs,
        }));
        match val {
            Some(v) if best.is_none_or(|(_, b)| v.loss() < b) => {
                best = Some((epoch, v.loss()));
                since_best = 0;
                save(&trainer)?;
            }
            Some(_) => {
                since_best += 1;
                if since_best >= a.patience.max(1) {
                    bar.suspend(|| {
                        eprintln!(
                            "distill train: no lower validation loss for {since_best} epochs; stopping"
                        )
                    });
                    break;
                }
            }
            None => {
                best = Some((epoch, train_loss));
                save(&trainer)?;
            }
        }
    }
    bar.finish_and_clear();
    let report = json!({
        "base_model": a.model,
        "base_dir": files.dir,
        "resumed": resumed,
        "fresh_tensors": trainer.fresh(),
        "parameters": trainer.parameters(),
        "device": a.device,
        "settings": {
            "epochs": a.epochs, "batch_size": a.batch_size, "lr": a.lr,
            "weight_decay": a.weight_decay, "max_grad_norm": settings.max_grad_norm,
            "dropout": a.dropout, "validation": a.validation, "patience": a.patience,
            "max_len": max_len, "seed": a.seed, "optimizer": "AdamW (betas 0.9, 0.999; eps 1e-8)",
        },
        "train": train_counts,
        "validation": val_counts,
        "initial_validation_loss": initial.map(|v| v.loss()),
        "initial_validation_accuracy": initial.map(|v| v.accuracy()),
        "epochs": epochs,
        "best_epoch": best.map(|b| b.0),
        "best_validation_loss": best.filter(|_| initial.is_some()).map(|b| b.1),
        "training_tokens_per_second": total_tokens as f64 / train_secs.max(1e-9),
        "seconds": started.elapsed().as_secs_f64(),
    });
    let report_path = a.output.join("training_report.json");
    std::fs::write(&report_path, serde_json::to_string_pretty(&report)? + "\n")?;
    println!(
        "trained {} epochs; best epoch {} (validation loss {} from {}); checkpoint in {}, report \
         in {}",
        epochs.len(),
        best.map_or("-".to_string(), |b| b.0.to_string()),
        best.filter(|_| initial.is_some())
            .map_or("-".into(), |b| format!("{:.4}", b.1)),
        initial.map_or("-".into(), |v| format!("{:.4}", v.loss())),
        a.output.display(),
        report_path.display()
    );
    Ok(())
}

fn eval(a: EvalArgs) -> anyhow::Result<()> {
    use crate::distill::eval::{Scores, word_probs};
    use crate::scorer::Scorer;
    use std::sync::Arc;

    let records = lines(&a.input)?;
    let mut chunks = Vec::with_capacity(records.len());
    for (n, r) in records.iter().enumerate() {
        let (origin, labels) = labelled_record(r, n)?;
        chunks.push((origin.to_string(), labels));
    }
    let mut scorers: Vec<(String, Arc<dyn Scorer>)> = Vec::new();
    for m in &a.models {
        let (name, dir) = match m.split_once('=') {
            Some((n, d)) => (n.to_string(), d.to_string()),
            None => (m.clone(), m.clone()),
        };
        let loaded =
            crate::scorer::llmlingua2::scorer::load(&dir, &crate::model::ModelConfig::default())
                .map_err(|e| anyhow::anyhow!("{dir}: {e}"))?;
        scorers.push((name, loaded.scorer));
    }
    if a.heuristic {
        scorers.push((
            "heuristic".into(),
            Arc::new(crate::scorer::heuristic::HeuristicScorer::new()),
        ));
    }
    anyhow::ensure!(
        !scorers.is_empty(),
        "name at least one --model, or --heuristic"
    );
    let judge = match &a.judge_base_url {
        Some(base) => Some(Asker::new(
            base,
            &a.judge_api_key_env,
            &a.judge_model,
            &a.judge_prompt,
        )?),
        None => None,
    };
    let sample = a.judge_sample.min(chunks.len());
    // the raw answers, asked once
    let raw_answers = match &judge {
        Some(j) => {
            let mut answers = Vec::with_capacity(sample);
            for (origin, _) in &chunks[..sample] {
                answers.push(j.ask(origin)?);
            }
            answers
        }
        None => Vec::new(),
    };
    let mut rows = Vec::new();
    for (name, scorer) in &scorers {
        let t0 = std::time::Instant::now();
        let mut scores = Scores::default();
        let mut agree = (0usize, 0f64, 0f64);
        for (i, (origin, labels)) in chunks.iter().enumerate() {
            let probs = word_probs(scorer.as_ref(), origin)?;
            scores.add(origin, labels, &probs);
            if let (Some(j), Some(raw)) = (&judge, raw_answers.get(i)) {
                let k = labels.iter().filter(|l| **l).count();
                let answer = j.ask(&crate::distill::eval::kept_text(origin, &probs, k))?;
                let g = crate::telemetry::agreement::agreement(raw, &answer);
                agree.0 += usize::from(g.exact);
                agree.1 += g.f1;
                agree.2 += g.rouge_l;
            }
        }
        let secs = t0.elapsed().as_secs_f64();
        let judged = (judge.is_some() && sample > 0).then(|| {
            json!({
                "chunks": sample,
                "exact": agree.0 as f64 / sample as f64,
                "f1": agree.1 / sample as f64,
                "rouge_l": agree.2 / sample as f64,
            })
        });
        rows.push(json!({
            "judge": judged,
            "scorer": name,
            "chunks": chunks.len(),
            "words": scores.words,
            "keep_f1": scores.f1(),
            "accuracy": scores.accuracy(),
            "auc": scores.auc(),
            "words_per_second": scores.words as f64 / secs.max(1e-9),
            "counts": scores,
        }));
    }
    let f = |v: &Value| v.as_f64().map_or("-".to_string(), |x| format!("{x:.4}"));
    println!(
        "| scorer | chunks | words | keep F1 (LLM's rate) | accuracy | AUC | words/s | answers: \
         exact | F1 | ROUGE-L |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|");
    for r in &rows {
        println!(
            "| {} | {} | {} | {} | {} | {} | {:.0} | {} | {} | {} |",
            r["scorer"].as_str().unwrap_or_default(),
            r["chunks"],
            r["words"],
            f(&r["keep_f1"]),
            f(&r["accuracy"]),
            f(&r["auc"]),
            r["words_per_second"].as_f64().unwrap_or(0.0),
            f(&r["judge"]["exact"]),
            f(&r["judge"]["f1"]),
            f(&r["judge"]["rouge_l"]),
        );
    }
    if let Some(path) = &a.json {
        std::fs::write(
            path,
            serde_json::to_string_pretty(&json!({"input": a.input, "rows": rows}))? + "\n",
        )
        .with_context(|| format!("{}", path.display()))?;
    }
    if let Some(path) = &a.html {
        std::fs::write(path, eval_html(&a.input.display().to_string(), &rows))
            .with_context(|| format!("{}", path.display()))?;
    }
    Ok(())
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// A self-contained page: the table, with each score drawn as a bar.
fn eval_html(input: &str, rows: &[Value]) -> String {
    let bar = |v: &Value| match v.as_f64() {
        Some(x) => format!(
            "<td><div class=bar style=\"width:{:.1}%\"></div>{x:.4}</td>",
            (x * 100.0).clamp(0.0, 100.0)
        ),
        None => "<td>-</td>".into(),
    };
    let mut body = String::new();
    for r in rows {
        body.push_str(&format!(
            "<tr><th>{}</th><td>{}</td><td>{}</td>{}{}{}<td>{:.0}</td>{}{}{}</tr>\n",
            escape(r["scorer"].as_str().unwrap_or_default()),
            r["chunks"],
            r["words"],
            bar(&r["keep_f1"]),
            bar(&r["accuracy"]),
            bar(&r["auc"]),
            r["words_per_second"].as_f64().unwrap_or(0.0),
            bar(&r["judge"]["exact"]),
            bar(&r["judge"]["f1"]),
            bar(&r["judge"]["rouge_l"]),
        ));
    }
    format!(
        "<!doctype html>\n<html lang=en><head><meta charset=utf-8><title>lingua-proxy distill eval</title>\n\
         <style>body{{font:14px system-ui,sans-serif;margin:2em}}table{{border-collapse:collapse}}\
         td,th{{border:1px solid #ccc;padding:4px 8px;text-align:left;min-width:6em}}\
         .bar{{height:6px;background:#3b7;margin-bottom:2px}}</style></head><body>\n\
         <h1>Scorers against the LLM's labels</h1>\n<p>Held-out chunks: {}. Each scorer keeps as \
         many words as the LLM kept in each chunk; keep F1 and accuracy count word by word, AUC \
         ranks every word by its probability. Line breaks are not counted.</p>\n<table>\n\
         <tr><th>scorer</th><th>chunks</th><th>words</th><th>keep F1</th><th>accuracy</th>\
         <th>AUC</th><th>words/s</th><th>answers: exact</th><th>answer F1</th>\
         <th>answer ROUGE-L</th></tr>\n{body}</table>\n<p>Answer columns (with <code>--judge-base-url</code>): \
         the judge model's answer about each sampled chunk compressed by the scorer at the LLM's \
         rate, against its answer about the raw chunk.</p>\n</body></html>\n",
        escape(input)
    )
}

/// A progress bar on stderr (hidden when stderr is not a terminal).
fn progress(steps: usize) -> anyhow::Result<indicatif::ProgressBar> {
    let bar = indicatif::ProgressBar::new(steps as u64);
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "{prefix} [{bar:30}] {pos}/{len} {msg} ({elapsed}, eta {eta})",
        )?
        .progress_chars("=> "),
    );
    Ok(bar)
}

fn align_step(a: AlignArgs) -> anyhow::Result<()> {
    use crate::distill::align::{example, pair_of_record, pairs_from_events};
    use crate::distill::train::held_out_sources;
    use crate::scorer::causal::tokenizer::CausalTokenizer;
    use lingua_causal::train::{AlignSettings, Aligner, Lora, NllSums};

    anyhow::ensure!(
        a.epochs > 0 && a.batch_size > 0,
        "--epochs and --batch-size must be positive"
    );
    anyhow::ensure!(
        (0.0..1.0).contains(&a.validation),
        "--validation must be within 0 and 1"
    );
    let started = std::time::Instant::now();
    let start_dir = if a.resume && a.output.join("model.safetensors").exists() {
        a.output.clone()
    } else {
        a.model.clone()
    };
    let records = lines(&a.input)?;
    let pairs = if a.from_events {
        pairs_from_events(&records)
    } else {
        let mut pairs = Vec::with_capacity(records.len());
        let mut ask = Vec::new();
        for (n, r) in records.iter().enumerate() {
            match (pair_of_record(r), r.get("prompt").and_then(Value::as_str)) {
                (Some(p), _) => pairs.push(p),
                (None, Some(prompt)) if a.answer_base_url.is_some() => ask.push(prompt.to_string()),
                _ => anyhow::bail!(
                    "line {}: expected `prompt` and `answer` (or only `prompt` with \
                     --answer-base-url), or `origin` and `comp`",
                    n + 1
                ),
            }
        }
        if let Some(base) = &a.answer_base_url {
            pairs.extend(answered(&a, base, ask)?);
        }
        pairs
    };
    anyhow::ensure!(
        !pairs.is_empty(),
        "{}: no prompt and answer pairs",
        a.input.display()
    );
    let tok = CausalTokenizer::from_dir(&start_dir).map_err(|e| anyhow::anyhow!(e))?;
    let lora = a.lora_rank.map(|rank| Lora {
        rank: rank.max(1),
        alpha: a.lora_alpha.unwrap_or(2.0 * rank.max(1) as f64),
    });
    let settings = AlignSettings {
        lr: a.lr,
        weight_decay: a.weight_decay,
        max_grad_norm: (a.max_grad_norm > 0.0).then_some(a.max_grad_norm),
        lora,
        seed: a.seed,
    };
    let mut aligner = Aligner::from_dir(&start_dir, settings)?;
    let max_len = a.max_len.min(aligner.config().max_position_embeddings);
    let eos = aligner.config().eos_token_id;
    let keys: Vec<String> = pairs.iter().map(|p| p.prompt.clone()).collect();
    let key_refs: Vec<&str> = keys.iter().map(String::as_str).collect();
    let held: std::collections::HashSet<String> = held_out_sources(&key_refs, a.validation, a.seed)
        .into_iter()
        .collect();
    let (mut train_x, mut val_x) = (Vec::new(), Vec::new());
    for p in &pairs {
        if let Some(ex) = example(&tok, p, eos, max_len).map_err(|e| anyhow::anyhow!(e))? {
            if held.contains(&p.prompt) {
                val_x.push(ex);
            } else {
                train_x.push(ex);
            }
        }
    }
    anyhow::ensure!(
        !train_x.is_empty(),
        "no training sequences (every pair was held out or empty)"
    );
    eprintln!(
        "distill align: {} trainable parameters ({}), {} training and {} held-out sequences",
        aligner.trainable(),
        lora.map_or("full fine-tuning".to_string(), |l| format!(
            "LoRA rank {} alpha {}",
            l.rank, l.alpha
        )),
        train_x.len(),
        val_x.len()
    );
    let held_out = |al: &Aligner| -> anyhow::Result<Option<NllSums>> {
        if val_x.is_empty() {
            return Ok(None);
        }
        Ok(Some(al.evaluate(&val_x)?))
    };
    let save = |al: &Aligner| -> anyhow::Result<()> {
        al.save(&a.output)?;
        copy_files(
            &start_dir,
            &a.output,
            &[
                "config.json",
                "generation_config.json",
                "tokenizer.json",
                "tokenizer_config.json",
                "special_tokens_map.json",
            ],
        )
    };
    let initial = held_out(&aligner)?;
    let bar = progress(train_x.len().div_ceil(a.batch_size) * a.epochs)?;
    let mut rng = fastrand::Rng::with_seed(a.seed);
    let (mut epochs, mut best, mut since_best) = (Vec::new(), None::<(usize, f64)>, 0);
    let (mut total_tokens, mut train_secs) = (0usize, 0f64);
    for epoch in 1..=a.epochs {
        bar.set_prefix(format!("epoch {epoch}/{}", a.epochs));
        let mut order: Vec<usize> = (0..train_x.len()).collect();
        rng.shuffle(&mut order);
        let t0 = std::time::Instant::now();
        let (mut nll, mut tokens) = (0f64, 0usize);
        for group in order.chunks(a.batch_size) {
            let batch: Vec<_> = group.iter().map(|&i| train_x[i].clone()).collect();
            let s = aligner.step(&batch)?;
            nll += f64::from(s.loss) * s.tokens as f64;
            tokens += s.tokens;
            bar.set_message(format!(
                "loss {:.4}, {:.0} tokens/s",
                nll / tokens.max(1) as f64,
                tokens as f64 / t0.elapsed().as_secs_f64().max(1e-9)
            ));
            bar.inc(1);
        }
        let secs = t0.elapsed().as_secs_f64();
        total_tokens += tokens;
        train_secs += secs;
        let val = held_out(&aligner)?;
        let train_loss = nll / tokens.max(1) as f64;
        bar.suspend(|| {
            eprintln!(
                "distill align: epoch {epoch}: train loss {train_loss:.4}, held-out perplexity {}",
                val.map_or("-".to_string(), |v| format!("{:.3}", v.perplexity()))
            )
        });
        epochs.push(json!({
            "epoch": epoch,
            "train_loss": train_loss,
            "held_out_perplexity": val.map(|v| v.perplexity()),
            "answer_tokens_per_second": tokens as f64 / secs.max(1e-9),
            "seconds": secs,
        }));
        let score = val.map_or(train_loss, |v| v.mean());
        if best.is_none_or(|(_, b)| score < b) {
            best = Some((epoch, score));
            since_best = 0;
            save(&aligner)?;
        } else {
            since_best += 1;
            if since_best >= a.patience.max(1) {
                break;
            }
        }
    }
    bar.finish_and_clear();
    let best_ppl = best.filter(|_| initial.is_some()).map(|b| b.1.exp());
    let report = json!({
        "base_model": a.model,
        "started_from": start_dir,
        "resumed": start_dir == a.output,
        "trainable_parameters": aligner.trainable(),
        "method": lora.map_or("full".to_string(), |l| format!("lora rank {} alpha {}", l.rank, l.alpha)),
        "settings": {
            "epochs": a.epochs, "batch_size": a.batch_size, "lr": a.lr, "weight_decay": a.weight_decay,
            "max_grad_norm": a.max_grad_norm, "max_len": max_len, "validation": a.validation,
            "patience": a.patience, "seed": a.seed,
        },
        "pairs": pairs.len(),
        "training_sequences": train_x.len(),
        "held_out_sequences": val_x.len(),
        "initial_held_out_perplexity": initial.map(|v| v.perplexity()),
        "best_held_out_perplexity": best_ppl,
        "best_epoch": best.map(|b| b.0),
        "epochs": epochs,
        "answer_tokens_per_second": total_tokens as f64 / train_secs.max(1e-9),
        "seconds": started.elapsed().as_secs_f64(),
    });
    let path = a.output.join("alignment_report.json");
    std::fs::write(&path, serde_json::to_string_pretty(&report)? + "\n")?;
    println!(
        "aligned {} epochs; held-out perplexity {} -> {}; checkpoint in {}, report in {}",
        report["epochs"].as_array().map_or(0, Vec::len),
        initial.map_or("-".into(), |v| format!("{:.3}", v.perplexity())),
        best_ppl.map_or("-".into(), |p| format!("{p:.3}")),
        a.output.display(),
        path.display()
    );
    Ok(())
}

/// Asks an OpenAI-compatible API one question per text (`{text}` in the template stands for
/// it; temperature 0), retrying 429, 5xx and transport errors with doubling waits.
struct Asker {
    runtime: tokio::runtime::Runtime,
    client: reqwest::Client,
    url: String,
    key: Option<String>,
    model: String,
    prompt: String,
}

impl Asker {
    fn new(base: &str, api_key_env: &str, model: &str, template: &str) -> anyhow::Result<Self> {
        anyhow::ensure!(
            template.contains("{text}"),
            "the question template must contain {{text}}"
        );
        crate::server::install_crypto_provider();
        Ok(Self {
            runtime: tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?,
            client: reqwest::Client::new(),
            url: format!("{}/chat/completions", base.trim_end_matches('/')),
            key: std::env::var(api_key_env).ok().filter(|k| !k.is_empty()),
            model: model.to_string(),
            prompt: template.to_string(),
        })
    }

    fn ask(&self, text: &str) -> anyhow::Result<String> {
        let body = json!({
            "model": self.model,
            "temperature": 0,
            "max_tokens": 200,
            "messages": [{"role": "user", "content": self.prompt.replace("{text}", text)}],
        });
        let v = self
            .runtime
            .block_on(crate::distill::collect::chat(
                &self.client,
                &self.url,
                self.key.as_deref(),
                &body,
                3,
                Duration::from_millis(500),
            ))
            .map_err(|e| anyhow::anyhow!("{}: {e}", self.url))?;
        Ok(v.pointer("/choices/0/message/content")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string())
    }
}

/// Answers `prompts` through the target LLM, keeping every answer in `answers.jsonl` in the
/// output directory (appended as it comes, so an interrupted run resumes).
fn answered(
    a: &AlignArgs,
    base: &str,
    prompts: Vec<String>,
) -> anyhow::Result<Vec<crate::distill::align::Pair>> {
    use crate::distill::align::Pair;
    std::fs::create_dir_all(&a.output)?;
    let path = a.output.join("answers.jsonl");
    let mut known: std::collections::HashMap<String, String> = std::collections::HashMap::new();
    if path.exists() {
        for r in lines(&path)? {
            if let (Some(p), Some(ans)) = (
                r.get("prompt").and_then(Value::as_str),
                r.get("answer").and_then(Value::as_str),
            ) {
                known.insert(p.to_string(), ans.to_string());
            }
        }
    }
    let todo: Vec<&String> = prompts.iter().filter(|p| !known.contains_key(*p)).collect();
    if !todo.is_empty() {
        let asker = Asker::new(base, &a.answer_api_key_env, &a.answer_model, "{text}")?;
        let mut out = BufWriter::new(
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&path)
                .with_context(|| format!("{}", path.display()))?,
        );
        let bar = progress(todo.len())?;
        bar.set_prefix("distill align: answering");
        for p in todo {
            let answer = asker.ask(p)?;
            writeln!(
                out,
                "{}",
                json!({"prompt": p, "answer": answer, "model": a.answer_model})
            )?;
            out.flush()?;
            known.insert(p.clone(), answer);
            bar.inc(1);
        }
        bar.finish_and_clear();
    }
    Ok(prompts
        .into_iter()
        .filter_map(|p| {
            let answer = known.get(&p)?.clone();
            Some(Pair { prompt: p, answer })
        })
        .collect())
}
