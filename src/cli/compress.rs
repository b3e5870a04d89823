//! `lingua-proxy compress`: compress text from stdin or a file.

use std::io::Read;
use std::path::PathBuf;
use std::time::Instant;

use anyhow::Context;
use serde_json::json;

use crate::compress::llmlingua2::{Llmlingua2Options, TokenToWord, compress_prompt};
use crate::compress::{
    CompressionConfig, ModelUnavailable, Policy, PrecisionSetting, RequestOptions, ScorerKind,
    TokenizerKind,
};
use crate::engine::build;

/// Compress one text with the scorer and selection alone, or with a role's whole policy.
#[derive(Debug, Clone, clap::Args)]
pub struct CompressArgs {
    /// Configuration file (its `[compression]` table is used).
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Scorer: `heuristic` or `llmlingua2`.
    #[arg(long)]
    pub scorer: Option<ScorerKind>,
    /// LLMLingua-2 model: a local directory or a Hugging Face id.
    #[arg(long, value_name = "DIR|HF-ID")]
    pub model: Option<String>,
    /// Fraction of tokens to keep, in (0, 1].
    #[arg(long, conflicts_with = "target_tokens")]
    pub rate: Option<f64>,
    /// Token target (cl100k, as LLMLingua-2 counts).
    #[arg(long, value_name = "N")]
    pub target_tokens: Option<u64>,
    /// A string the selection always keeps (repeatable; `\n` means a newline).
    #[arg(long = "force-token", value_name = "T")]
    pub force_tokens: Vec<String>,
    /// Apply this role's whole policy from the config (protected spans, tags, min_tokens,
    /// min_savings) instead of the scorer and selection alone.
    #[arg(long, value_name = "ROLE")]
    pub role: Option<String>,
    /// Read the text from this file instead of stdin.
    #[arg(long, value_name = "FILE")]
    pub file: Option<PathBuf>,
    /// Print a JSON object instead of the compressed text.
    #[arg(long)]
    pub json: bool,
    /// List each piece of the text with its content kind, the transform applied and its tokens
    /// before and after (with `--json`: a `pieces` array with the texts).
    #[arg(long, requires = "role")]
    pub explain: bool,
    /// Suppress repeated force tokens with nothing kept in between (LLMLingua-2).
    #[arg(long)]
    pub drop_consecutive: bool,
    /// Always keep words containing a digit (LLMLingua-2).
    #[arg(long)]
    pub force_reserve_digit: bool,
    /// How sub-token probabilities make a word's: `mean` or `first` (LLMLingua-2).
    #[arg(long, value_name = "mean|first")]
    pub token_to_word: Option<TokenToWordArg>,
    /// Model precision: `f32` (parity), `q8` or `bf16`.
    #[arg(long, value_name = "f32|q8|bf16")]
    pub precision: Option<PrecisionSetting>,
    /// `llmlingua2` (the token classifier, the default), or the perplexity-based `llmlingua` /
    /// `longllmlingua` with a causal LM (`--model`), whose keyword arguments come from `--params`.
    #[arg(long, value_name = "llmlingua2|llmlingua|longllmlingua")]
    pub method: Option<String>,
    /// `--method llmlingua|longllmlingua`: a JSON object of the reference's `compress_prompt`
    /// keyword arguments, `context` included (`-`: stdin).
    #[arg(long, value_name = "FILE|-")]
    pub params: Option<PathBuf>,
}

/// `--token-to-word` values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum TokenToWordArg {
    Mean,
    First,
}

impl std::str::FromStr for PrecisionSetting {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "f32" => Ok(Self::F32),
            "q8" => Ok(Self::Q8),
            "bf16" => Ok(Self::Bf16),
            other => Err(format!(
                "unknown precision {other:?} (expected f32, q8 or bf16)"
            )),
        }
    }
}

/// `\n` in a `--force-token` means a newline (also `\t` and `\\`).
pub fn unescape_force_token(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('n') => out.push('\n'),
            Some('t') => out.push('\t'),
            Some('\\') => out.push('\\'),
            Some(other) => {
                out.push('\\');
                out.push(other);
            }
            None => out.push('\\'),
        }
    }
    out
}

/// Loads the `[compression]` table with the proxy's own layering (defaults, the file,
/// `LINGUA_PROXY_*` environment variables), validated.
pub fn load_config(path: Option<&PathBuf>) -> anyhow::Result<CompressionConfig> {
    let config = crate::config::Config::load(path.map(PathBuf::as_path), &Default::default())?;
    Ok(config.compression)
}

/// The result printed by the command.
#[derive(Debug, Clone, PartialEq)]
pub struct CompressResult {
    pub compressed_prompt: String,
    pub origin_tokens: usize,
    pub compressed_tokens: usize,
    pub elapsed_ms: f64,
    pub skipped: Option<String>,
    /// `--role` only: the role's semantic units alone exceeded its budget (all were kept).
    pub budget_exceeded_by_units: Option<bool>,
    /// `--explain`: what each piece is and what was done to it.
    pub pieces: Vec<crate::compress::PieceReport>,
}

/// Runs the command on `text` (no I/O).
pub fn compress_text(args: &CompressArgs, text: &str) -> anyhow::Result<CompressResult> {
    let mut config = load_config(args.config.as_ref())?;
    if let Some(s) = args.scorer {
        config.scorer = s;
    }
    if let Some(m) = &args.model {
        config.model = Some(m.clone());
    }
    if let Some(r) = args.rate {
        crate::compress::config::check_rate("rate", r)
            .map_err(|e| anyhow::anyhow!("--rate: {}", e.reason))?;
    }
    if args.target_tokens == Some(0) {
        anyhow::bail!("--target-tokens must be at least 1");
    }
    if let Some(p) = args.precision {
        config.precision = Some(p);
    }
    // The command line asks for a scorer explicitly: a model that cannot be loaded is an error
    // here, not a silent fallback.
    config.on_model_unavailable = ModelUnavailable::Fail;
    config.force_reserve_digit |= args.force_reserve_digit;
    let force: Vec<String> = args
        .force_tokens
        .iter()
        .map(|t| unescape_force_token(t))
        .collect();
    let built = build(&config)?;
    let (Some(scorer), Some(compressor)) = (built.scorer, built.compressor) else {
        anyhow::bail!("no scorer is available");
    };

    // Load the BPE tables now so `elapsed_ms` measures compression alone.
    for t in [TokenizerKind::Cl100kBase, config.default_tokenizer] {
        t.bpe();
    }
    match &args.role {
        None => {
            // Exactly the reference's `compress_prompt(text, rate=…, target_token=…, …)`.
            let opts = Llmlingua2Options {
                rate: args.rate.unwrap_or(0.5),
                target_token: args
                    .target_tokens
                    .map_or(-1, |t| i64::try_from(t).unwrap_or(i64::MAX)),
                force_tokens: force,
                force_reserve_digit: args.force_reserve_digit,
                drop_consecutive: args.drop_consecutive,
                token_to_word: match args.token_to_word {
                    Some(TokenToWordArg::First) => TokenToWord::First,
                    _ => TokenToWord::Mean,
                },
                ..Llmlingua2Options::default()
            };
            let start = Instant::now();
            let out = compress_prompt(scorer.as_ref(), &[text], &opts)?;
            Ok(CompressResult {
                compressed_prompt: out.compressed_prompt,
                origin_tokens: out.origin_tokens,
                compressed_tokens: out.compressed_tokens,
                elapsed_ms: start.elapsed().as_secs_f64() * 1000.0,
                skipped: None,
                budget_exceeded_by_units: None,
                pieces: Vec::new(),
            })
        }
        Some(role) => {
            let Some(role_cfg) = config.roles.get(role).cloned() else {
                anyhow::bail!(
                    "unknown role {role:?} (system, developer, user, assistant, tool, function)"
                );
            };
            let mut role_cfg = role_cfg;
            if args.target_tokens.is_some() {
                role_cfg.target_tokens = args.target_tokens;
            }
            set_role(&mut config, role, role_cfg);
            config.force_tokens.extend(force);
            let tokenizer = config.default_tokenizer;
            let policy = Policy::new(config, compressor)?;
            let opts = RequestOptions {
                rate_override: args.rate,
                explain: args.explain,
                ..RequestOptions::default()
            };
            let start = Instant::now();
            let r = policy.compress_message(role, &[text], tokenizer, &opts, None)?;
            let elapsed_ms = start.elapsed().as_secs_f64() * 1000.0;
            let compressed_prompt = r
                .texts
                .into_iter()
                .next()
                .flatten()
                .unwrap_or_else(|| text.to_string());
            Ok(CompressResult {
                pieces: r.pieces,
                budget_exceeded_by_units: Some(r.budget_exceeded_by_units),
                compressed_prompt,
                origin_tokens: r.tokens_before,
                compressed_tokens: r.tokens_after,
                elapsed_ms,
                skipped: r.skipped.map(|s| {
                    serde_json::to_value(s)
                        .ok()
                        .and_then(|v| v.as_str().map(String::from))
                        .unwrap_or_default()
                }),
            })
        }
    }
}

fn set_role(config: &mut CompressionConfig, role: &str, value: crate::compress::RoleConfig) {
    let r = &mut config.roles;
    let slot = match role {
        "system" => &mut r.system,
        "developer" => &mut r.developer,
        "user" => &mut r.user,
        "assistant" => &mut r.assistant,
        "tool" => &mut r.tool,
        _ => &mut r.function,
    };
    *slot = value;
}

/// Entry point of `lingua-proxy compress`.
pub fn run(args: CompressArgs) -> anyhow::Result<()> {
    match args.method.as_deref() {
        None | Some("llmlingua2") => {
            if args.params.is_some() {
                anyhow::bail!("--params goes with --method llmlingua or longllmlingua");
            }
        }
        Some(m) => {
            let method: crate::compress::llmlingua::Method = m
                .parse()
                .map_err(|e: String| anyhow::anyhow!("--method: {e}"))?;
            let (Some(model), Some(params)) = (&args.model, &args.params) else {
                anyhow::bail!("--method {m} needs --model DIR|HF-ID and --params FILE|-");
            };
            if args.rate.is_some()
                || args.target_tokens.is_some()
                || args.role.is_some()
                || args.file.is_some()
                || args.scorer.is_some()
                || !args.force_tokens.is_empty()
            {
                anyhow::bail!(
                    "--method {m} takes every keyword argument from --params (rate, target_token, \
                     context, ...); drop --rate, --target-tokens, --role, --file, --scorer and \
                     --force-token"
                );
            }
            return crate::cli::llmlingua::run_compress(
                model,
                params,
                method,
                args.precision,
                args.json,
            );
        }
    }
    let text = match &args.file {
        Some(p) => {
            std::fs::read_to_string(p).with_context(|| format!("reading {}", p.display()))?
        }
        None => {
            let mut s = String::new();
            std::io::stdin()
                .read_to_string(&mut s)
                .context("reading stdin")?;
            s
        }
    };
    let r = compress_text(&args, &text)?;
    if args.json {
        let mut v = json!({
            "compressed_prompt": r.compressed_prompt,
            "origin_tokens": r.origin_tokens,
            "compressed_tokens": r.compressed_tokens,
            "elapsed_ms": r.elapsed_ms,
            "ratio": if r.compressed_tokens == 0 { 1.0 } else { r.origin_tokens as f64 / r.compressed_tokens as f64 },
        });
        if let Some(b) = r.budget_exceeded_by_units {
            v["budget_exceeded_by_units"] = json!(b);
        }
        if let Some(s) = &r.skipped {
            v["skipped"] = json!(s);
        }
        if args.explain {
            v["pieces"] = json!(r.pieces);
        }
        println!("{v}");
    } else if args.explain {
        print!("{}", explain_table(&r));
    } else {
        println!("{}", r.compressed_prompt);
    }
    Ok(())
}

/// The `--explain` table: one row per piece, then totals and the compressed text.
pub fn explain_table(r: &CompressResult) -> String {
    use std::fmt::Write as _;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{:<4} {:<13} {:<18} {:>7} {:>7}  text",
        "part", "kind", "transform", "before", "after"
    );
    for p in &r.pieces {
        let first = p
            .before
            .lines()
            .find(|l| !l.trim().is_empty())
            .unwrap_or("");
        let preview: String = first.trim().chars().take(48).collect();
        let _ = writeln!(
            out,
            "{:<4} {:<13} {:<18} {:>7} {:>7}  {preview}",
            p.segment,
            p.kind.as_str(),
            p.transform.as_str(),
            p.tokens_before,
            p.tokens_after
        );
    }
    let _ = writeln!(
        out,
        "total: {} -> {} tokens{}",
        r.origin_tokens,
        r.compressed_tokens,
        r.skipped
            .as_deref()
            .map(|s| format!(" (forwarded unchanged: {s})"))
            .unwrap_or_default()
    );
    let _ = writeln!(out, "---");
    let _ = writeln!(out, "{}", r.compressed_prompt);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn force_token_escapes() {
        assert_eq!(unescape_force_token("\\n"), "\n");
        assert_eq!(unescape_force_token("a\\tb\\\\"), "a\tb\\");
        assert_eq!(unescape_force_token("\\x"), "\\x");
    }
}
