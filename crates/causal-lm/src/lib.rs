//! Causal language models on the CPU for LLMLingua-style perplexity scoring: a Hugging Face
//! checkpoint directory in (GPT-2, Llama or Qwen2; safetensors or `pytorch_model.bin`), the
//! negative log-likelihood of each next token out, with a KV cache the caller can truncate or
//! cut windows out of. Numerics follow transformers 4.46.3 on CPU f32; `Precision::Q8`
//! quantizes the projection matrices to int8 at load, `Precision::Bf16` rounds them to bf16.
//!
//! `train`: distribution alignment, fine-tuning a Llama-family model on the target LLM's
//! answers (full or LoRA) with candle's autograd.
//!
//! Knows nothing of HTTP, tokenizers or compression.

mod cache;
mod config;
pub mod gguf;
mod model;
pub mod train;
mod weights;

use std::path::{Path, PathBuf};

pub use cache::KvCache;
pub use config::{Family, LmConfig};

/// Numeric precision of the projection matrices.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Precision {
    /// f32 everywhere (parity with PyTorch f32).
    #[default]
    F32,
    /// Linear layers (and the output projection) as int8 weights with a scale per output
    /// channel, activations quantized per row on the fly, products in int8 by the CPU tier's
    /// kernel (`lingua-kernels`); norms, attention and softmax stay f32.
    Q8,
    /// Linear layers (and the output projection) as bf16 weights, activations rounded to bf16
    /// on the fly, sums in f32 in one order on every tier (`lingua-kernels`' bf16 products);
    /// norms, attention and softmax stay f32.
    Bf16,
}

/// How to load a model.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct LoadOptions {
    pub precision: Precision,
    /// Worker threads for the f32 GEMMs and attention; 0 = rayon's global pool.
    pub threads: usize,
}

/// Why a model could not be loaded or run.
#[derive(Debug, thiserror::Error)]
pub enum LmError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: {msg}")]
    Config { path: PathBuf, msg: String },
    #[error("{path}: unsupported model: {what} (supported: gpt2, llama, qwen2)")]
    Unsupported { path: PathBuf, what: String },
    #[error(
        "{dir}: no weights (expected model.safetensors, model.safetensors.index.json, \
         pytorch_model.bin.index.json or pytorch_model.bin)"
    )]
    NoWeights { dir: PathBuf },
    #[error("{path}: {msg}")]
    Weights { path: PathBuf, msg: String },
    #[error("{path}: tensor {name} missing")]
    MissingTensor { path: PathBuf, name: String },
    #[error("{path}: tensor {name} has shape {got:?}, expected {expected:?}")]
    Shape {
        path: PathBuf,
        name: String,
        expected: Vec<usize>,
        got: Vec<usize>,
    },
    #[error("{len} positions (cache {cached} + {new} new) exceed max_position_embeddings {max}")]
    TooLong {
        len: usize,
        cached: usize,
        new: usize,
        max: usize,
    },
    #[error("token id {id} at index {index} is out of range (vocab_size {vocab})")]
    IdOutOfRange { id: u32, index: usize, vocab: usize },
    #[error("KV cache does not belong to this model ({layers} layers of width {width} expected)")]
    CacheMismatch { layers: usize, width: usize },
    #[error("cannot build a thread pool of {threads} threads: {msg}")]
    ThreadPool { threads: usize, msg: String },
    #[error("compute error: {0}")]
    Compute(String),
}

/// A loaded causal LM. `Send + Sync`: one model serves many threads, each with its own cache.
pub struct CausalLm {
    model: model::Model,
    digest: String,
    pool: Option<rayon::ThreadPool>,
}

impl std::fmt::Debug for CausalLm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CausalLm")
            .field("config", &self.model.cfg)
            .field("digest", &self.digest)
            .finish_non_exhaustive()
    }
}

impl CausalLm {
    /// Loads `dir`: `config.json` plus `model.safetensors`, sharded safetensors with
    /// `model.safetensors.index.json`, or `pytorch_model.bin`. The family comes from
    /// `model_type` ("gpt2", "llama", "qwen2"), else from `architectures`.
    ///
    /// `dir` may also be a `.gguf` file of a Llama-architecture model: its config comes from the
    /// metadata and each tensor is dequantised when the model takes it ([`gguf`]).
    pub fn load(dir: &Path, opts: &LoadOptions) -> Result<Self, LmError> {
        let (cfg, digest, w) = if gguf::is_gguf(dir) {
            let g = gguf::Gguf::open(dir)?;
            let bytes = g.config_json()?;
            let cfg = LmConfig::from_json(&bytes, dir)?;
            let digest = weights::digest(&bytes, &[dir.to_path_buf()])?;
            (cfg, digest, weights::Weights::gguf(g))
        } else {
            let cfg_path = dir.join("config.json");
            let bytes = std::fs::read(&cfg_path).map_err(|source| LmError::Io {
                path: cfg_path.clone(),
                source,
            })?;
            let cfg = LmConfig::from_json(&bytes, &cfg_path)?;
            let files = weights::weight_files(dir)?;
            let digest = weights::digest(&bytes, &files)?;
            (cfg, digest, weights::Weights::read(&files)?)
        };
        let model = model::Model::load(cfg, &w, opts.precision)?;
        drop(w);
        let pool = match opts.threads {
            0 => None,
            t => Some(
                rayon::ThreadPoolBuilder::new()
                    .num_threads(t)
                    .thread_name(|i| format!("lingua-causal-{i}"))
                    .build()
                    .map_err(|e| LmError::ThreadPool {
                        threads: t,
                        msg: e.to_string(),
                    })?,
            ),
        };
        Ok(Self {
            model,
            digest,
            pool,
        })
    }

    /// The model's hyper-parameters.
    pub fn config(&self) -> &LmConfig {
        &self.model.cfg
    }

    /// Identity of config + weights: the first 16 hex digits of a sha256 over config.json and
    /// the weight files.
    pub fn digest(&self) -> &str {
        &self.digest
    }

    /// Bytes one cached position takes (keys and values of every layer, f32); a cache never
    /// holds more than `max_position_embeddings` positions.
    pub fn kv_bytes_per_position(&self) -> usize {
        let c = &self.model.cfg;
        2 * c.layers * c.kv_heads * c.head_dim * std::mem::size_of::<f32>()
    }

    /// An empty KV cache for this model.
    pub fn new_cache(&self) -> KvCache {
        let c = &self.model.cfg;
        KvCache::new(c.layers, c.kv_heads * c.head_dim)
    }

    /// Feeds `ids` after the cached prefix (positions continue at `cache.len()`), appends them
    /// to the cache, and returns `out[j] = -ln p(ids[j+1] | cache, ids[..=j])` for
    /// `j in 0..ids.len()-1` (empty when `ids.len() <= 1`). Fails, leaving the cache as it was,
    /// when the positions would exceed `max_position_embeddings`, an id is out of the
    /// vocabulary, or the cache is another model's.
    pub fn nll(&self, cache: &mut KvCache, ids: &[u32]) -> Result<Vec<f32>, LmError> {
        let c = &self.model.cfg;
        let width = c.kv_heads * c.head_dim;
        if cache.k.len() != c.layers || cache.v.len() != c.layers || cache.width != width {
            return Err(LmError::CacheMismatch {
                layers: c.layers,
                width,
            });
        }
        if let Some((index, &id)) = ids
            .iter()
            .enumerate()
            .find(|(_, id)| **id as usize >= c.vocab_size)
        {
            return Err(LmError::IdOutOfRange {
                id,
                index,
                vocab: c.vocab_size,
            });
        }
        let total = cache.len().saturating_add(ids.len());
        if total > c.max_position_embeddings {
            return Err(LmError::TooLong {
                len: total,
                cached: cache.len(),
                new: ids.len(),
                max: c.max_position_embeddings,
            });
        }
        match &self.pool {
            Some(p) => p.install(|| self.model.forward(cache, ids)),
            None => self.model.forward(cache, ids),
        }
    }
}

#[cfg(test)]
mod send_sync {
    fn assert_send_sync<T: Send + Sync>() {}
    fn assert_send_clone<T: Send + Clone>() {}

    #[test]
    fn handles_cross_threads() {
        assert_send_sync::<super::CausalLm>();
        assert_send_clone::<super::KvCache>();
    }
}
