//! The causal-LM scorer behind LLMLingua and LongLLMLingua: per-token negative log-likelihoods
//! from a small causal language model with a KV cache the iterative compression can truncate and
//! slide, and the tokenizer glue of the reference's v1 path ([`tokenizer`]). The model itself
//! (GPT-2, Llama, weights, kernels) lives in the `lingua-causal` crate; [`lm`] runs it on its own
//! scheduler thread, off the async runtime, with the request's deadline and cancellation.

pub mod lm;
pub mod tokenizer;

pub use lm::{CausalModel, LoadedCausal};
pub use tokenizer::CausalTokenizer;

use crate::model::WorkCtx;
use crate::scorer::ScorerError;

/// What the LLMLingua algorithms need from a causal LM. `Cache` is the model's KV cache of one
/// sequence; positions of new tokens continue at its length.
pub trait CausalScorer: Send + Sync {
    type Cache: Send;

    fn tokenizer(&self) -> &CausalTokenizer;
    /// `config.max_position_embeddings`.
    fn max_positions(&self) -> usize;
    fn new_cache(&self) -> Self::Cache;
    fn cache_len(&self, cache: &Self::Cache) -> usize;
    /// Keeps the first `len` cached positions.
    fn truncate(&self, cache: &mut Self::Cache, len: usize);
    /// Drops the cached positions `[start, start + count)`.
    fn remove(&self, cache: &mut Self::Cache, start: usize, count: usize);
    /// Feeds `ids` after the cached prefix and appends them to the cache; returns
    /// `out[j] = -ln p(ids[j+1] | cache, ids[..=j])` (`ids.len() - 1` values, as the reference's
    /// `get_ppl` computes them).
    fn nll(
        &self,
        cache: &mut Self::Cache,
        ids: &[u32],
        ctx: &WorkCtx,
    ) -> Result<Vec<f32>, ScorerError>;
    /// Identifies the model and tokenizer (part of cache keys).
    fn id(&self) -> &str;
}
