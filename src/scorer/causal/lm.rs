//! A loaded causal LM as a [`CausalScorer`]: the `lingua-causal` model on its own scheduler
//! thread ([`crate::model::Scheduler`]). A window is one `get_ppl` step of one request — the
//! request's KV cache travels with it to the model thread and back — so steps of different
//! requests share the thread in deadline order, a request past its deadline or cancelled stops
//! between steps, and admission refuses work beyond `max_queued_tokens`.

use std::path::Path;
use std::sync::{Arc, Mutex};

use lingua_causal::{CausalLm, KvCache, LoadOptions, Precision};

use super::{CausalScorer, CausalTokenizer};
use crate::model::{Backend, ModelConfig, PrecisionSetting, Scheduler, SchedulerConfig, WorkCtx};
use crate::scorer::ScorerError;
use lingua_encoder::ModelFiles;

/// One step: the ids to feed after the cached prefix. The cache is moved to the model thread
/// and back (never copied: a GPT-2-small cache of 1,024 positions is 75 MB).
pub struct Step {
    cache: Mutex<Option<KvCache>>,
    ids: Vec<u32>,
}

/// The result of one step: the losses (or why the model refused) and the grown cache.
pub struct StepOut {
    pub loss: Result<Vec<f32>, String>,
    pub cache: KvCache,
}

/// The model, forwarded by the scheduler's thread.
pub struct CausalBackend {
    model: Arc<CausalLm>,
}

impl Backend for CausalBackend {
    type Window = Step;
    type Output = StepOut;
    type Error = ScorerError;

    fn tokens(window: &Step) -> usize {
        window.ids.len().max(1)
    }

    fn forward(&mut self, batch: &[Step]) -> Result<Vec<StepOut>, ScorerError> {
        // Each step carries its own cache; they run one after another on this thread.
        Ok(batch
            .iter()
            .map(|s| {
                let taken = s.cache.lock().ok().and_then(|mut c| c.take());
                let mut cache = taken.unwrap_or_else(|| self.model.new_cache());
                let loss = self
                    .model
                    .nll(&mut cache, &s.ids)
                    .map_err(|e| e.to_string());
                StepOut { loss, cache }
            })
            .collect())
    }
}

/// A causal LM ready to score, with its tokenizer and scheduler.
pub struct CausalModel {
    model: Arc<CausalLm>,
    tokenizer: CausalTokenizer,
    scheduler: Arc<Scheduler<CausalBackend>>,
    id: String,
    max_positions: usize,
}

impl std::fmt::Debug for CausalModel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CausalModel").field("id", &self.id).finish()
    }
}

/// What [`load`] returns.
#[derive(Debug)]
pub struct LoadedCausal {
    pub model: Arc<CausalModel>,
    pub dir: std::path::PathBuf,
    pub precision: PrecisionSetting,
}

/// Resolves `model` (a local directory or a Hugging Face id), loads weights and tokenizer as
/// `[model]` says and starts the model thread.
pub fn load(model: &str, cfg: &ModelConfig) -> Result<LoadedCausal, String> {
    let path = Path::new(model);
    let dir = if lingua_causal::gguf::is_gguf(path) {
        path.to_path_buf()
    } else {
        ModelFiles::resolve(model).map_err(|e| e.to_string())?.dir
    };
    let m = CausalModel::from_dir(&dir, cfg)?;
    Ok(LoadedCausal {
        model: Arc::new(m),
        dir,
        precision: cfg.precision(),
    })
}

impl CausalModel {
    pub fn from_dir(dir: &Path, cfg: &ModelConfig) -> Result<Self, String> {
        if cfg.device() != "cpu" {
            return Err(format!(
                "the causal LM runs on the CPU only (device {:?} was asked for)",
                cfg.device()
            ));
        }
        let tokenizer = if lingua_causal::gguf::is_gguf(dir) {
            CausalTokenizer::from_gguf(dir)?
        } else {
            CausalTokenizer::from_dir(dir)?
        };
        let precision = match cfg.precision() {
            PrecisionSetting::F32 => Precision::F32,
            PrecisionSetting::Q8 => Precision::Q8,
            PrecisionSetting::Bf16 => Precision::Bf16,
        };
        let model = CausalLm::load(
            dir,
            &LoadOptions {
                precision,
                threads: cfg.threads,
            },
        )
        .map_err(|e| e.to_string())?;
        let vocab = model.config().vocab_size;
        if tokenizer.vocab_size() > vocab {
            return Err(format!(
                "{}: the tokenizer has {} ids but the model's embedding table has {vocab} rows",
                dir.display(),
                tokenizer.vocab_size()
            ));
        }
        let max_positions = model.config().max_position_embeddings;
        let id = format!(
            "causal:{}:{}:{}",
            model.digest(),
            tokenizer.id(),
            match precision {
                Precision::F32 => "f32",
                // "-2": blockwise int8 on the shared kernels (numerics differ from before)
                Precision::Q8 => "q8-2",
                Precision::Bf16 => "bf16",
            }
        );
        let model = Arc::new(model);
        let scheduler = Scheduler::new(
            CausalBackend {
                model: model.clone(),
            },
            SchedulerConfig {
                max_batch_tokens: cfg.max_batch_tokens,
                max_queued_tokens: cfg.max_queued_tokens,
                thread_name: "lingua-causal".into(),
            },
        )
        .map_err(|e| format!("cannot start the model thread: {e}"))?;
        Ok(Self {
            model,
            tokenizer,
            scheduler: Arc::new(scheduler),
            id,
            max_positions,
        })
    }

    /// The scheduler (queue depth for metrics, shutdown).
    pub fn scheduler(&self) -> Arc<Scheduler<CausalBackend>> {
        self.scheduler.clone()
    }

    pub fn lm(&self) -> &CausalLm {
        &self.model
    }

    /// The most a request's KV cache can hold: `max_position_embeddings` positions.
    pub fn kv_cache_max_bytes(&self) -> usize {
        self.max_positions * self.model.kv_bytes_per_position()
    }
}

impl CausalScorer for CausalModel {
    type Cache = KvCache;

    fn tokenizer(&self) -> &CausalTokenizer {
        &self.tokenizer
    }

    fn max_positions(&self) -> usize {
        self.max_positions
    }

    fn new_cache(&self) -> KvCache {
        self.model.new_cache()
    }

    fn cache_len(&self, cache: &KvCache) -> usize {
        cache.len()
    }

    fn truncate(&self, cache: &mut KvCache, len: usize) {
        cache.truncate(len);
    }

    fn remove(&self, cache: &mut KvCache, start: usize, count: usize) {
        cache.remove(start, count);
    }

    fn nll(
        &self,
        cache: &mut KvCache,
        ids: &[u32],
        ctx: &WorkCtx,
    ) -> Result<Vec<f32>, ScorerError> {
        ctx.check()?;
        let vocab = self.model.config().vocab_size;
        if let Some(bad) = ids.iter().find(|&&i| i as usize >= vocab) {
            return Err(ScorerError::Model(format!(
                "token id {bad} is outside the vocabulary ({vocab})"
            )));
        }
        if cache.len() + ids.len() > self.max_positions {
            return Err(ScorerError::Model(format!(
                "{} positions exceed max_position_embeddings ({})",
                cache.len() + ids.len(),
                self.max_positions
            )));
        }
        let step = Step {
            cache: Mutex::new(Some(std::mem::replace(cache, self.model.new_cache()))),
            ids: ids.to_vec(),
        };
        let mut out = self.scheduler.submit(ctx, vec![step])?.wait()?;
        let r = out
            .pop()
            .ok_or_else(|| ScorerError::Model("the model returned no output".into()))?;
        crate::telemetry::metrics::record_kv_cache(r.cache.bytes());
        *cache = r.cache;
        r.loss.map_err(ScorerError::Model)
    }

    fn id(&self) -> &str {
        &self.id
    }
}
