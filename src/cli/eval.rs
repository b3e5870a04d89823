//! `lingua-proxy eval facts`: the fact-retention benchmark ([`crate::eval::facts`]) run through
//! the real policy for every available scorer and budget, printed as text, Markdown or JSON.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use anyhow::Context;
use serde_json::json;

use crate::compress::{CompressionConfig, ModelUnavailable, Policy, PrecisionSetting, ScorerKind};
use crate::engine::build;
use crate::eval::facts::{Budgets, RunSummary, Suite, Totals, run};

/// The suite shipped with the repository (relative to its root).
pub const DEFAULT_SUITE: &str = "benches/data/facts";

/// The rates swept when neither `--rates` nor `--defaults` is given (with the defaults).
pub const SWEEP: &[f64] = &[0.3, 0.4, 0.5, 0.6, 0.7, 0.8];

/// Offline quality benchmarks.
#[derive(Debug, Clone, clap::Args)]
pub struct EvalArgs {
    #[command(subcommand)]
    pub command: EvalCommand,
}

#[derive(Debug, Clone, clap::Subcommand)]
pub enum EvalCommand {
    /// Fact retention: how many annotated facts survive compression, per scorer and budget.
    Facts(FactsArgs),
    /// Agent traffic: savings per content kind and every integrity violation on a corpus of
    /// agent tool outputs, at the configured defaults.
    Agent(AgentArgs),
}

/// `eval agent` options.
#[derive(Debug, Clone, clap::Args)]
pub struct AgentArgs {
    /// Configuration file (its `[compression]` table gives the budgets and settings).
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Corpus directory (one `NN-kind-name.json` per case).
    #[arg(long, value_name = "DIR", default_value = DEFAULT_AGENT_CORPUS)]
    pub suite: PathBuf,
    /// Where `file` cases are read from (the repository root).
    #[arg(long, value_name = "DIR", default_value = ".")]
    pub root: PathBuf,
    /// Scorer (default: the embedded heuristic one, or LLMLingua-2 with `--model`).
    #[arg(long)]
    pub scorer: Option<ScorerKind>,
    /// LLMLingua-2 model: a local directory or a Hugging Face id.
    #[arg(long, value_name = "DIR|HF-ID")]
    pub model: Option<String>,
    /// Print a JSON object.
    #[arg(long, conflicts_with = "markdown")]
    pub json: bool,
    /// Print the table of docs/benchmarks.md.
    #[arg(long)]
    pub markdown: bool,
}

/// The agent corpus shipped with the repository (relative to its root).
pub const DEFAULT_AGENT_CORPUS: &str = "benches/data/agent";

/// The agent benchmark's result.
#[derive(Debug, Clone, serde::Serialize)]
pub struct AgentRun {
    pub scorer: String,
    pub cases: Vec<crate::eval::agent::CaseOutcome>,
    pub kinds: std::collections::BTreeMap<String, crate::eval::agent::KindTotals>,
    /// Violations of the whole-request check (every case in one request, one tool result
    /// read twice).
    pub request_violations: Vec<crate::eval::agent::Violation>,
    /// Tokens of that request's texts before and after.
    pub request_tokens: (usize, usize),
}

/// Runs the agent benchmark.
pub fn evaluate_agent(args: &AgentArgs) -> anyhow::Result<AgentRun> {
    use crate::eval::agent::{load_corpus, run_case, run_request, totals};
    let cases = load_corpus(&args.suite, &args.root).map_err(anyhow::Error::msg)?;
    let base = crate::cli::compress::load_config(args.config.as_ref())?;
    let scorer = args.scorer.unwrap_or(if args.model.is_some() {
        ScorerKind::Llmlingua2
    } else {
        ScorerKind::Heuristic
    });
    let policy = policy_for(&base, scorer, args.model.as_deref())?;
    let tokenizer = base.default_tokenizer;
    let outcomes = cases
        .iter()
        .map(|c| run_case(&policy, c, tokenizer))
        .collect::<Result<Vec<_>, _>>()?;
    let (raw, forwarded, request_violations) = run_request(&policy, &cases)?;
    let count = |body: &[u8]| -> usize {
        serde_json::from_slice::<serde_json::Value>(body)
            .ok()
            .and_then(|v| v.get("messages").cloned())
            .and_then(|m| m.as_array().cloned())
            .unwrap_or_default()
            .iter()
            .filter_map(|m| m.get("content").and_then(serde_json::Value::as_str))
            .map(|t| tokenizer.count(t))
            .sum()
    };
    Ok(AgentRun {
        scorer: scorer_name(scorer, policy.config().model.as_deref()),
        kinds: totals(&outcomes),
        cases: outcomes,
        request_violations,
        request_tokens: (count(&raw), count(&forwarded)),
    })
}

/// The `eval agent` table: per corpus kind, then every violation.
pub fn agent_text(run: &AgentRun, markdown: bool) -> String {
    let mut s = String::new();
    if markdown {
        s.push_str("| content kind | cases | tokens before | after | saving | transforms | facts kept | integrity violations |\n|---|---|---|---|---|---|---|---|\n");
    } else {
        let _ = writeln!(s, "agent corpus, scorer {}", run.scorer);
        let _ = writeln!(
            s,
            "{:<13} {:>5} {:>8} {:>8} {:>7}  {:<40} {:>9} {:>10}",
            "kind", "cases", "before", "after", "saving", "transforms", "facts", "violations"
        );
    }
    for (kind, t) in &run.kinds {
        let transforms = t
            .transforms
            .iter()
            .map(|(k, n)| format!("{k} {n}"))
            .collect::<Vec<_>>()
            .join(", ");
        let facts = if t.facts == 0 {
            "-".to_string()
        } else {
            format!("{}/{}", t.facts_kept, t.facts)
        };
        if markdown {
            let _ = writeln!(
                s,
                "| {kind} | {} | {} | {} | {} | {} | {facts} | {} |",
                t.cases,
                t.tokens_before,
                t.tokens_after,
                pct(t.saving()),
                if transforms.is_empty() {
                    "-"
                } else {
                    &transforms
                },
                t.violations
            );
        } else {
            let _ = writeln!(
                s,
                "{kind:<13} {:>5} {:>8} {:>8} {:>7}  {transforms:<40} {facts:>9} {:>10}",
                t.cases,
                t.tokens_before,
                t.tokens_after,
                pct(t.saving()),
                t.violations
            );
        }
    }
    let (before, after) = run.request_tokens;
    let _ = writeln!(
        s,
        "{}whole request (every case, one tool result read twice): {before} -> {after} tokens, {} violations",
        if markdown { "\n" } else { "" },
        run.request_violations.len()
    );
    for c in &run.cases {
        for v in &c.violations {
            let _ = writeln!(s, "violation {} {} at {}: {}", c.id, v.rule, v.at, v.detail);
        }
    }
    for v in &run.request_violations {
        let _ = writeln!(s, "violation request {} at {}: {}", v.rule, v.at, v.detail);
    }
    s
}

/// `eval facts` options.
#[derive(Debug, Clone, clap::Args)]
pub struct FactsArgs {
    /// Configuration file (its `[compression]` table gives the budgets and settings).
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Suite directory (one `NN-name.json` per text).
    #[arg(long, value_name = "DIR", default_value = DEFAULT_SUITE)]
    pub suite: PathBuf,
    /// Only this scorer (default: the heuristic one, and LLMLingua-2 when `--model` is given).
    #[arg(long)]
    pub scorer: Option<ScorerKind>,
    /// LLMLingua-2 model: a local directory or a Hugging Face id.
    #[arg(long, value_name = "DIR|HF-ID")]
    pub model: Option<String>,
    /// Model precision: `f32`, `q8` or `bf16`.
    #[arg(long, value_name = "f32|q8|bf16")]
    pub precision: Option<PrecisionSetting>,
    /// Rates applied to every role, comma-separated (default: 0.3 to 0.8 and the defaults).
    #[arg(long, value_delimiter = ',', value_name = "R,R,...")]
    pub rates: Vec<f64>,
    /// Run the configured per-role budgets (alone, unless `--rates` is given too).
    #[arg(long)]
    pub defaults: bool,
    /// Print a JSON object.
    #[arg(long, conflicts_with = "markdown")]
    pub json: bool,
    /// Print the table of docs/benchmarks.md (one row per scorer and budget).
    #[arg(long)]
    pub markdown: bool,
    /// List every lost fact (text output).
    #[arg(long)]
    pub show_lost: bool,
}

/// The policy `eval facts` runs for one scorer: the configured budgets and settings, with no
/// cache, no fallback to another scorer, and no positional protection (each text is a lone
/// message).
pub fn policy_for(
    base: &CompressionConfig,
    scorer: ScorerKind,
    model: Option<&str>,
) -> anyhow::Result<Policy> {
    let mut config = base.clone();
    config.scorer = scorer;
    if let Some(m) = model {
        config.model = Some(m.to_string());
    }
    config.on_model_unavailable = ModelUnavailable::Fail;
    config.cache_bytes = 0;
    config.protect_last_user = false;
    config.protect_recent = 0;
    let built = build(&config)?;
    let compressor = built
        .compressor
        .ok_or_else(|| anyhow::anyhow!("no scorer is available"))?;
    Ok(Policy::new(config, compressor)?)
}

/// The configuration of a rate sweep: every role's prose is compressed, instructions included
/// (a sweep measures the selection at each rate; the defaults row measures the defaults).
pub fn sweep_config(base: &CompressionConfig) -> CompressionConfig {
    CompressionConfig {
        instructions: crate::compress::InstructionsMode::Compress,
        ..base.clone()
    }
}

/// The budgets the arguments ask for, in run order.
pub fn budgets(args: &FactsArgs) -> anyhow::Result<Vec<Budgets>> {
    for r in &args.rates {
        crate::compress::config::check_rate("rate", *r)
            .map_err(|e| anyhow::anyhow!("--rates: {}", e.reason))?;
    }
    let mut out: Vec<Budgets> = if args.rates.is_empty() && !args.defaults {
        SWEEP.iter().map(|r| Budgets::Rate(*r)).collect()
    } else {
        args.rates.iter().map(|r| Budgets::Rate(*r)).collect()
    };
    if args.defaults || args.rates.is_empty() {
        out.push(Budgets::Defaults);
    }
    Ok(out)
}

/// Every run of the command: one summary per scorer and budget.
pub fn evaluate(args: &FactsArgs) -> anyhow::Result<(Suite, Vec<RunSummary>, CompressionConfig)> {
    let suite = Suite::load(&args.suite).context("loading the fact suite")?;
    let mut base = crate::cli::compress::load_config(args.config.as_ref())?;
    if let Some(p) = args.precision {
        base.precision = Some(p);
    }
    let scorers: Vec<ScorerKind> = match args.scorer {
        Some(s) => vec![s],
        None if args.model.is_some() => vec![ScorerKind::Heuristic, ScorerKind::Llmlingua2],
        None => vec![ScorerKind::Heuristic],
    };
    let budgets = budgets(args)?;
    let tokenizer = base.default_tokenizer;
    let mut runs = Vec::new();
    for scorer in scorers {
        let defaults = policy_for(&base, scorer, args.model.as_deref())?;
        let sweep = policy_for(&sweep_config(&base), scorer, args.model.as_deref())?;
        let name = scorer_name(scorer, defaults.config().model.as_deref());
        for b in &budgets {
            let policy = match b {
                Budgets::Defaults => &defaults,
                Budgets::Rate(_) => &sweep,
            };
            let outcomes = run(policy, &suite, *b, tokenizer)?;
            runs.push(RunSummary::new(&name, *b, &suite, &outcomes));
        }
    }
    Ok((suite, runs, base))
}

fn scorer_name(scorer: ScorerKind, model: Option<&str>) -> String {
    match scorer {
        ScorerKind::Heuristic => "heuristic".into(),
        ScorerKind::Llmlingua2 => {
            let model = model.unwrap_or_default();
            let short = Path::new(model)
                .file_name()
                .map_or(model.into(), |n| n.to_string_lossy());
            format!("llmlingua2 ({short})")
        }
    }
}

fn pct(x: f64) -> String {
    format!("{:.1}%", x * 100.0)
}

/// The JSON object `--json` prints.
pub fn to_json(
    suite: &Suite,
    runs: &[RunSummary],
    config: &CompressionConfig,
) -> serde_json::Value {
    json!({
        "suite": suite.dir.display().to_string(),
        "texts": suite.texts.len(),
        "facts": suite.fact_count(),
        "tokenizer": config.default_tokenizer.name(),
        "runs": runs,
    })
}

/// The table of docs/benchmarks.md: retention and saving per scorer and budget, overall and per role.
pub fn to_markdown(runs: &[RunSummary]) -> String {
    let roles: Vec<&String> = runs
        .first()
        .map(|r| r.roles.keys().collect())
        .unwrap_or_default();
    let mut s = String::from("| scorer | budget | facts kept | retention | token ratio | saving |");
    for r in &roles {
        let _ = write!(s, " {r} retention / saving |");
    }
    s.push_str(" integrity violations |\n|---|---|---|---|---|---|");
    for _ in &roles {
        s.push_str("---|");
    }
    s.push_str("---|\n");
    for run in runs {
        let o = &run.overall;
        let _ = write!(
            s,
            "| {} | {} | {}/{} | {} | {:.3} | {} |",
            run.scorer,
            run.budget,
            o.kept,
            o.facts,
            pct(o.retention),
            o.token_ratio,
            pct(o.saving)
        );
        for r in &roles {
            match run.roles.get(*r) {
                Some(t) => {
                    let _ = write!(s, " {} / {} |", pct(t.retention), pct(t.saving));
                }
                None => s.push_str(" - |"),
            }
        }
        let _ = writeln!(s, " {} |", o.integrity_violations);
    }
    s
}

/// The human-readable report.
pub fn to_text(
    suite: &Suite,
    runs: &[RunSummary],
    config: &CompressionConfig,
    show_lost: bool,
) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "Fact retention on {} ({} texts, {} facts); tokens counted with {}",
        suite.dir.display(),
        suite.texts.len(),
        suite.fact_count(),
        config.default_tokenizer.name()
    );
    for run in runs {
        let rates: Vec<String> = run.rates.iter().map(|(k, v)| format!("{k} {v}")).collect();
        let _ = writeln!(
            s,
            "\nscorer {}, budget {} ({})",
            run.scorer,
            run.budget,
            rates.join(", ")
        );
        let _ = writeln!(
            s,
            "  {:<10} {:>5} {:>6} {:>5} {:>9} {:>8} {:>7} {:>6} {:>7}",
            "role", "texts", "facts", "kept", "retention", "before", "after", "ratio", "saving"
        );
        let line = |s: &mut String, name: &str, t: &Totals| {
            let _ = writeln!(
                s,
                "  {:<10} {:>5} {:>6} {:>5} {:>9} {:>8} {:>7} {:>6.3} {:>7}",
                name,
                t.texts,
                t.facts,
                t.kept,
                pct(t.retention),
                t.tokens_before,
                t.tokens_after,
                t.token_ratio,
                pct(t.saving)
            );
        };
        for (role, t) in &run.roles {
            line(&mut s, role, t);
        }
        line(&mut s, "all", &run.overall);
        let kinds: Vec<String> = run
            .lost_by_kind
            .iter()
            .map(|(k, c)| format!("{} {}/{}", k.as_str(), c.lost, c.facts))
            .collect();
        let _ = writeln!(s, "  lost by kind: {}", kinds.join(", "));
        if !run.skipped.is_empty() {
            let skipped: Vec<String> = run
                .skipped
                .iter()
                .map(|(id, why)| format!("{id} ({})", json!(why).as_str().unwrap_or_default()))
                .collect();
            let _ = writeln!(s, "  left unchanged: {}", skipped.join(", "));
        }
        if run.integrity_violations.is_empty() {
            let _ = writeln!(s, "  integrity: no invented words");
        } else {
            let _ = writeln!(
                s,
                "  integrity: {} invented words",
                run.integrity_violations.len()
            );
            for v in &run.integrity_violations {
                let _ = writeln!(
                    s,
                    "    {}: {:?} (word {}, after {:?})",
                    v.text,
                    v.violation.word,
                    v.violation.position,
                    v.violation.after.as_deref().unwrap_or("")
                );
            }
        }
        if show_lost {
            for l in &run.lost {
                let _ = writeln!(
                    s,
                    "    lost {}: {} [{}]",
                    l.text,
                    l.tokens.join(" "),
                    l.kind.as_str()
                );
            }
        }
    }
    s
}

/// Entry point of `lingua-proxy eval`.
pub fn run_command(args: EvalArgs) -> anyhow::Result<()> {
    match args.command {
        EvalCommand::Agent(args) => {
            let run = evaluate_agent(&args)?;
            if args.json {
                println!("{}", serde_json::to_string(&run)?);
            } else {
                print!("{}", agent_text(&run, args.markdown));
            }
            let violations =
                run.kinds.get("all").map_or(0, |t| t.violations) + run.request_violations.len();
            if violations > 0 {
                anyhow::bail!("{violations} integrity violations");
            }
            Ok(())
        }
        EvalCommand::Facts(args) => {
            let (suite, runs, config) = evaluate(&args)?;
            if args.json {
                println!("{}", to_json(&suite, &runs, &config));
            } else if args.markdown {
                print!("{}", to_markdown(&runs));
            } else {
                print!("{}", to_text(&suite, &runs, &config, args.show_lost));
            }
            Ok(())
        }
    }
}
