//! Builds the scorer, the model scheduler, the policy's compressor and the compression hook
//! from the `[compression]` and `[model]` tables: the one place where configuration meets
//! models. `main` (the proxy), the CLI and the tests call it; `compress/`, `scorer/` and
//! `hook/` know nothing of it.

use std::sync::Arc;
use std::time::Duration;

use crate::compress::config::{
    CompressionConfig, DEFAULT_MODEL, MethodKind, ModelUnavailable, ScorerKind,
};
use crate::compress::llmlingua::Method;
use crate::compress::llmlingua_compressor::LlmlinguaCompressor;
use crate::compress::redis_cache::RedisCache;
use crate::compress::{CompressError, Compressor, MeaningCompressor};
use crate::config::{CacheBackend, CacheConfig, Config};
use crate::hook::{ArmsHook, CompressionHook, HookBuilder, Named, RequestHook};
use crate::model::SchedulerStats;
use crate::model::{ModelConfig, ModelQueue};
use crate::scorer::causal::CausalModel;
use crate::scorer::heuristic::HeuristicScorer;
use crate::scorer::{ActiveScorer, Scorer};

/// The result of [`build`].
pub struct Built {
    /// `None` when compression is off because the model is unavailable.
    pub compressor: Option<Arc<dyn Compressor>>,
    pub scorer: Option<Arc<dyn Scorer>>,
    pub active: ActiveScorer,
    /// The neural scorer's model scheduler (queue depth for metrics, shutdown); with a causal
    /// LM loaded as well, both schedulers behind one [`ModelQueue`].
    pub model_queue: Option<Arc<dyn ModelQueue>>,
    /// Roles whose `method` differs from `[compression] method`, with their compressor.
    pub role_compressors: Vec<(String, Arc<dyn Compressor>)>,
    /// The causal LM of the LLMLingua methods, when one is loaded.
    pub causal: Option<Arc<CausalModel>>,
}

impl std::fmt::Debug for Built {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Built")
            .field("active", &self.active)
            .finish()
    }
}

/// [`build_with`] with the default `[model]` table (plus the deprecated `[compression]`
/// `device`/`precision` keys).
pub fn build(config: &CompressionConfig) -> Result<Built, CompressError> {
    build_with(config, &ModelConfig::default())
}

/// Builds the scorer and the policy's compressor (the meaning-keeping selection over that
/// scorer) a configuration asks for, the model as `model` says. When the LLMLingua-2 model
/// cannot be loaded, `on_model_unavailable` decides: fall back to the
/// heuristic scorer (logged as an error), run without compression, or fail.
pub fn build_with(config: &CompressionConfig, model: &ModelConfig) -> Result<Built, CompressError> {
    let base = build_base(config, model)?;
    with_methods(config, model, base)
}

/// Both schedulers' counters and shutdown behind one handle.
struct Queues(Vec<Arc<dyn ModelQueue>>);

impl ModelQueue for Queues {
    fn stats(&self) -> SchedulerStats {
        let mut s = SchedulerStats::default();
        for q in &self.0 {
            let t = q.stats();
            s.batches += t.batches;
            s.windows_run += t.windows_run;
            s.windows_dropped += t.windows_dropped;
            s.refused += t.refused;
            s.max_batch_tokens_seen = s.max_batch_tokens_seen.max(t.max_batch_tokens_seen);
            s.queued_windows += t.queued_windows;
            s.queued_tokens += t.queued_tokens;
        }
        s
    }

    fn close(&self) {
        for q in &self.0 {
            q.close();
        }
    }
}

/// Adds the LLMLingua / LongLLMLingua compressors the `method` keys ask for: loads the causal
/// LM of `[model] causal_model` once and gives each role its method's compressor. When the LM
/// cannot be loaded, `on_model_unavailable` decides as for the LLMLingua-2 model (the causal
/// roles fall back to the `llmlingua2` compressor, or compression is off, or startup fails).
fn with_methods(
    config: &CompressionConfig,
    model: &ModelConfig,
    mut built: Built,
) -> Result<Built, CompressError> {
    if !config.needs_causal() || !config.enabled && !config.allow_request_overrides {
        return Ok(built);
    }
    let unavailable = |problem: String| -> Result<Option<Arc<CausalModel>>, CompressError> {
        match config.on_model_unavailable {
            ModelUnavailable::Fail => Err(CompressError::Scorer(
                crate::scorer::ScorerError::Unavailable(problem),
            )),
            _ => {
                tracing::error!(%problem, "causal LM unavailable: the llmlingua/longllmlingua \
                    roles FALL BACK to the llmlingua2 method");
                Ok(None)
            }
        }
    };
    let lm = match &model.causal_model {
        None => unavailable(
            "method llmlingua/longllmlingua needs [model] causal_model (a directory or a \
             Hugging Face id)"
                .into(),
        )?,
        Some(id) => match crate::scorer::causal::lm::load(id, model) {
            Ok(l) => {
                tracing::info!(
                    model = %id,
                    dir = %l.dir.display(),
                    kv_cache_max_mib = l.model.kv_cache_max_bytes() >> 20,
                    "causal LM loaded (the KV cache of one request is bounded by kv_cache_max_mib)"
                );
                Some(l.model)
            }
            Err(problem) => unavailable(format!("causal model {id}: {problem}"))?,
        },
    };
    let Some(lm) = lm else {
        return Ok(built);
    };
    let make = |m: MethodKind| -> Option<Arc<dyn Compressor>> {
        let method = match m {
            MethodKind::Llmlingua2 => return None,
            MethodKind::Llmlingua => Method::Llmlingua,
            MethodKind::Longllmlingua => Method::Longllmlingua,
        };
        Some(Arc::new(LlmlinguaCompressor::new(
            lm.clone(),
            method,
            &config.document_separator,
        )))
    };
    let base = built.compressor.clone();
    if let Some(c) = make(config.method) {
        built.compressor = Some(c);
    }
    for (role, r) in config.roles.iter() {
        let Some(m) = r.method.filter(|m| *m != config.method) else {
            continue;
        };
        if let Some(c) = make(m).or_else(|| base.clone()) {
            built.role_compressors.push((role.to_string(), c));
        }
    }
    let causal_queue: Arc<dyn ModelQueue> = lm.scheduler();
    built.model_queue = Some(match built.model_queue.take() {
        Some(q) => Arc::new(Queues(vec![q, causal_queue])),
        None => causal_queue,
    });
    built.causal = Some(lm);
    Ok(built)
}

/// The `scorer` part of [`build_with`]: the LLMLingua-2 or heuristic compressor.
fn build_base(config: &CompressionConfig, model: &ModelConfig) -> Result<Built, CompressError> {
    let heuristic = |fallback_reason: Option<String>| {
        let scorer: Arc<dyn Scorer> = Arc::new(HeuristicScorer::new());
        Built {
            compressor: Some(Arc::new(MeaningCompressor::new(scorer.clone()))),
            scorer: Some(scorer),
            active: ActiveScorer::Heuristic { fallback_reason },
            model_queue: None,
            role_compressors: Vec::new(),
            causal: None,
        }
    };
    match config.scorer {
        ScorerKind::Heuristic => Ok(heuristic(None)),
        ScorerKind::Llmlingua2 => {
            let model_cfg = model
                .clone()
                .with_legacy(config.device.as_deref(), config.precision);
            let model = config
                .model
                .clone()
                .unwrap_or_else(|| DEFAULT_MODEL.to_string());
            match crate::scorer::llmlingua2::scorer::load(&model, &model_cfg) {
                Ok(loaded) => {
                    let precision = loaded.precision;
                    tracing::info!(model = %model, dir = %loaded.files.dir.display(),
                        precision = precision.as_str(), "LLMLingua-2 scorer loaded");
                    let scorer = loaded.scorer.clone();
                    Ok(Built {
                        compressor: Some(Arc::new(MeaningCompressor::new(scorer.clone()))),
                        active: ActiveScorer::Llmlingua2 {
                            model,
                            dir: loaded.files.dir.display().to_string(),
                            precision: precision.as_str().to_string(),
                            id: scorer.id().to_string(),
                        },
                        scorer: Some(scorer),
                        model_queue: Some(loaded.scheduler),
                        role_compressors: Vec::new(),
                        causal: None,
                    })
                }
                Err(problem) => match config.on_model_unavailable {
                    ModelUnavailable::Heuristic => {
                        tracing::error!(model = %model, %problem,
                            "LLMLingua-2 model unavailable: FALLING BACK to the embedded \
                             heuristic scorer (on_model_unavailable = \"heuristic\")");
                        Ok(heuristic(Some(format!(
                            "model {model} unavailable: {problem}"
                        ))))
                    }
                    ModelUnavailable::Passthrough => {
                        tracing::error!(model = %model, %problem,
                            "LLMLingua-2 model unavailable: compression is OFF, every request \
                             is forwarded unchanged (on_model_unavailable = \"passthrough\")");
                        Ok(Built {
                            compressor: None,
                            scorer: None,
                            active: ActiveScorer::None {
                                reason: format!("model {model} unavailable: {problem}"),
                            },
                            model_queue: None,
                            role_compressors: Vec::new(),
                            causal: None,
                        })
                    }
                    ModelUnavailable::Fail => Err(CompressError::Scorer(
                        crate::scorer::ScorerError::Unavailable(format!(
                            "model {model}: {problem}"
                        )),
                    )),
                },
            }
        }
    }
}

/// The compressor a configuration asks for (see [`build`]); an error when the configuration
/// leaves compression off.
pub fn build_compressor(config: &CompressionConfig) -> Result<Arc<dyn Compressor>, CompressError> {
    let built = build(config)?;
    built.compressor.ok_or_else(|| {
        CompressError::Scorer(crate::scorer::ScorerError::Unavailable(format!(
            "no scorer: {:?}",
            built.active
        )))
    })
}

/// The compression hook a configuration asks for: the scorer and models loaded
/// ([`build_with`]), the policy with its per-role compressors. With no scorer
/// (`on_model_unavailable = "passthrough"`) the hook forwards every request unchanged and
/// ignores `x-lingua-compress: on`.
pub fn hook(config: &CompressionConfig, model: &ModelConfig) -> anyhow::Result<HookBuilder> {
    hook_with(config, model, &CacheConfig::default())
}

/// [`hook`] with the `[cache]` table: with `backend = "redis"`, the shared cache goes behind
/// the in-process one.
pub fn hook_with(
    config: &CompressionConfig,
    model: &ModelConfig,
    cache: &CacheConfig,
) -> anyhow::Result<HookBuilder> {
    let built = build_with(config, model)?;
    let policy = match built.compressor {
        Some(compressor) => {
            let mut policy = crate::compress::Policy::new(config.clone(), compressor)?;
            for (role, c) in &built.role_compressors {
                policy = policy.with_role_compressor(role, c.clone());
            }
            policy
        }
        None => {
            let mut off = config.clone();
            off.enabled = false;
            off.allow_request_overrides = false;
            let scorer: Arc<dyn Scorer> = Arc::new(HeuristicScorer::new());
            crate::compress::Policy::new(off, Arc::new(MeaningCompressor::new(scorer)))?
        }
    };
    let policy = match (cache.backend, &cache.redis_url) {
        (CacheBackend::Redis, Some(url)) => {
            let shared = RedisCache::connect(
                url,
                &cache.key_prefix,
                Duration::from_secs(cache.ttl_s),
                Duration::from_millis(cache.timeout_ms),
            )
            .map_err(|e| anyhow::anyhow!("[cache] {e}"))?;
            tracing::info!(prefix = %cache.key_prefix, "shared compression cache: Redis");
            policy.with_shared_cache(Arc::new(shared))
        }
        _ => policy,
    };
    Ok(CompressionHook::builder(Arc::new(policy)).scorer(built.active, built.model_queue))
}

/// The hook `lingua-proxy serve` runs: [`hook`] from `[compression]` and `[model]`, explaining
/// each piece in the event log when `[telemetry] log_content` is on. With `[ab]` on and an
/// `[ab.control]` table, one hook per arm ([`ArmsHook`]): the raw arm compresses with
/// `[compression]` overlaid by `[ab.control]`.
pub fn serve_hook(config: &Config) -> anyhow::Result<Arc<dyn RequestHook>> {
    let build = |c: &CompressionConfig| -> anyhow::Result<Named> {
        let hook = hook_with(c, &config.model, &config.cache)?
            .explain(config.telemetry.log_content)
            .build();
        let name = hook
            .active_scorer()
            .map_or_else(|| "off".to_string(), ActiveScorer::label);
        Ok(Named {
            name,
            hook: Arc::new(hook),
        })
    };
    let treatment = build(&config.compression)?;
    let Some(control) = config.ab.control.as_ref().filter(|_| config.ab.enabled) else {
        return Ok(treatment.hook);
    };
    let control_cfg = crate::ab::control_compression(&config.compression, control)
        .map_err(|e| anyhow::anyhow!("[ab.control] {e}"))?;
    let (mut treatment, mut control) = (treatment, build(&control_cfg)?);
    if treatment.name == control.name {
        treatment.name = format!("{} (compressed arm)", treatment.name);
        control.name = format!("{} (raw arm)", control.name);
    }
    Ok(Arc::new(ArmsHook::new(treatment, control)))
}
