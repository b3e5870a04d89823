//! `lingua-proxy compress`: compress text from stdin or a file.

use std::io::Read;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use anyhow::Context;
use serde_json::json;

use crate::compress::{
    Budget, CompressionConfig, Compressor, Policy, RequestOptions, ScorerKind, TokenizerKind,
    build_compressor,
};

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
    let force: Vec<String> = args
        .force_tokens
        .iter()
        .map(|t| unescape_force_token(t))
        .collect();
    config.force_tokens.extend(force.iter().cloned());
    let compressor: Arc<dyn Compressor> = build_compressor(&config)?;
    // Loading the BPE tables is set-up, like loading a model: keep it out of `elapsed_ms`.
    for t in [TokenizerKind::Cl100kBase, config.default_tokenizer] {
        t.bpe();
    }

    match &args.role {
        None => {
            let budget = Budget {
                rate: args.rate.unwrap_or(0.5),
                target_tokens: args.target_tokens,
                force_tokens: config.force_tokens.clone(),
                force_reserve_digit: config.force_reserve_digit,
            };
            let start = Instant::now();
            let out = compressor.compress(text, &budget)?;
            Ok(CompressResult {
                compressed_prompt: out.text,
                origin_tokens: out.origin_tokens,
                compressed_tokens: out.compressed_tokens,
                elapsed_ms: start.elapsed().as_secs_f64() * 1000.0,
                skipped: None,
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
            let tokenizer = config.default_tokenizer;
            let policy = Policy::new(config, compressor)?;
            let opts = RequestOptions {
                rate_override: args.rate,
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
        if let Some(s) = r.skipped {
            v["skipped"] = json!(s);
        }
        println!("{v}");
    } else {
        println!("{}", r.compressed_prompt);
    }
    Ok(())
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
