//! `lingua-proxy compress --method llmlingua|longllmlingua` and `lingua-proxy recover`: the
//! reference's `compress_prompt(**params)` and `recover(...)` on the causal LM, with the
//! keyword arguments read from a JSON object (a file or `-` for stdin).

use std::io::Read;
use std::path::Path;
use std::time::Instant;

use anyhow::Context;
use serde_json::{Value, json};

use crate::compress::llmlingua::{self, Method, Params};
use crate::model::{ModelConfig, PrecisionSetting, WorkCtx};
use crate::scorer::causal::lm::load;
use crate::scorer::causal::{CausalModel, CausalScorer};

/// Reads the JSON object of `--params` (`-`: stdin).
pub fn read_params(path: &Path) -> anyhow::Result<Value> {
    let raw = if path == Path::new("-") {
        let mut s = String::new();
        std::io::stdin()
            .read_to_string(&mut s)
            .context("reading the parameters from stdin")?;
        s
    } else {
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?
    };
    let v: Value = serde_json::from_str(&raw).context("the parameters are not valid JSON")?;
    if !v.is_object() {
        anyhow::bail!("the parameters must be a JSON object of compress_prompt keyword arguments");
    }
    Ok(v)
}

/// Loads the causal LM (`--model`, `--precision`).
pub fn load_model(model: &str, precision: Option<PrecisionSetting>) -> anyhow::Result<CausalModel> {
    let cfg = ModelConfig {
        precision,
        ..ModelConfig::default()
    };
    let loaded = load(model, &cfg).map_err(|e| anyhow::anyhow!("loading {model}: {e}"))?;
    std::sync::Arc::try_unwrap(loaded.model)
        .map_err(|_| anyhow::anyhow!("the model is shared unexpectedly"))
}

/// `compress_prompt(**params)`; the JSON form adds `elapsed_ms` (model loading excluded).
pub fn compress_json(lm: &CausalModel, params: &Value, method: Method) -> anyhow::Result<Value> {
    let p = Params::from_json(params, method)?;
    // Load the cl100k tables first so that elapsed_ms measures compression alone.
    crate::compress::llmlingua2::cl100k_count("warm up");
    let start = Instant::now();
    let out = llmlingua::compress_prompt(lm, &p, &WorkCtx::none())?;
    let elapsed_ms = start.elapsed().as_secs_f64() * 1000.0;
    Ok(json!({
        "compressed_prompt": out.compressed_prompt,
        "origin_tokens": out.origin_tokens,
        "compressed_tokens": out.compressed_tokens,
        "ratio": out.ratio,
        "rate": out.rate,
        "saving": out.saving,
        "elapsed_ms": elapsed_ms,
    }))
}

/// `lingua-proxy compress --method llmlingua|longllmlingua`.
pub fn run_compress(
    model: &str,
    params: &Path,
    method: Method,
    precision: Option<PrecisionSetting>,
    as_json: bool,
) -> anyhow::Result<()> {
    let v = read_params(params)?;
    // Check the keywords before the (slow) model load.
    Params::from_json(&v, method)?;
    let lm = load_model(model, precision)?;
    let out = compress_json(&lm, &v, method)?;
    if as_json {
        println!("{out}");
    } else {
        println!("{}", out["compressed_prompt"].as_str().unwrap_or_default());
    }
    Ok(())
}

/// `recover(original_prompt, compressed_prompt, response)` from a JSON object with those keys.
#[derive(Debug, Clone, clap::Args)]
pub struct RecoverArgs {
    /// The causal LM whose tokenizer compressed the prompt: a local directory or a Hugging Face id.
    #[arg(long, value_name = "DIR|HF-ID")]
    pub model: String,
    /// JSON object with `original_prompt`, `compressed_prompt` and `response` (`-`: stdin).
    #[arg(long, value_name = "FILE|-")]
    pub params: std::path::PathBuf,
    /// Print `{"recovered": ...}` instead of the text.
    #[arg(long)]
    pub json: bool,
}

/// `recover(**params)` with the model's tokenizer.
pub fn recover_json(lm: &CausalModel, v: &Value) -> anyhow::Result<String> {
    let obj = v
        .as_object()
        .ok_or_else(|| anyhow::anyhow!("the parameters must be a JSON object"))?;
    for k in obj.keys() {
        if !matches!(
            k.as_str(),
            "original_prompt" | "compressed_prompt" | "response"
        ) {
            anyhow::bail!("recover() got an unexpected keyword argument {k:?}");
        }
    }
    let get = |k: &str| -> anyhow::Result<&str> {
        obj.get(k)
            .and_then(Value::as_str)
            .ok_or_else(|| anyhow::anyhow!("recover() needs the string argument {k:?}"))
    };
    Ok(llmlingua::recover(
        lm.tokenizer(),
        get("original_prompt")?,
        get("compressed_prompt")?,
        get("response")?,
    )?)
}

/// Entry point of `lingua-proxy recover`.
pub fn run_recover(args: RecoverArgs) -> anyhow::Result<()> {
    let v = read_params(&args.params)?;
    let lm = load_model(&args.model, None)?;
    let text = recover_json(&lm, &v)?;
    if args.json {
        println!("{}", json!({ "recovered": text }));
    } else {
        println!("{text}");
    }
    Ok(())
}
