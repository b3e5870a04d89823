//! Content-addressed cache of compressed texts.
//!
//! Keys hash everything that changes the output (compressor id, budget, force tokens, text), so
//! a hit returns exactly the bytes a fresh compression would produce. A fleet puts a shared
//! cache ([`super::redis_cache::RedisCache`]) behind the local one with [`TieredCache`].

use std::sync::Arc;

use sha2::{Digest, Sha256};

use super::compressor::{Budget, CompressOutput};

/// A SHA-256 content address.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct CacheKey(pub [u8; 32]);

impl CacheKey {
    /// The key of compressing `text` with `compressor_id` under `budget`.
    pub fn new(compressor_id: &str, budget: &Budget, text: &str) -> Self {
        let mut h = Sha256::new();
        let mut field = |b: &[u8]| {
            h.update((b.len() as u64).to_le_bytes());
            h.update(b);
        };
        field(b"lingua-proxy/compress/v1");
        field(compressor_id.as_bytes());
        field(&budget.rate.to_bits().to_le_bytes());
        field(
            &budget
                .target_tokens
                .map_or(-1i64, |t| t as i64)
                .to_le_bytes(),
        );
        field(&[u8::from(budget.force_reserve_digit)]);
        field(&(budget.force_tokens.len() as u64).to_le_bytes());
        for t in &budget.force_tokens {
            field(t.as_bytes());
        }
        field(&[u8::from(budget.keep.units), u8::from(budget.keep.negations)]);
        field(&(budget.keep.must_keep.len() as u64).to_le_bytes());
        for t in &budget.keep.must_keep {
            field(t.as_bytes());
        }
        if let Some(q) = &budget.question {
            field(b"question");
            field(q.as_bytes());
        }
        field(text.as_bytes());
        let digest = h.finalize();
        let mut out = [0u8; 32];
        out.copy_from_slice(&digest);
        CacheKey(out)
    }
}

/// A cache of compression results.
pub trait CompressionCache: Send + Sync {
    fn get(&self, key: &CacheKey) -> Option<Arc<CompressOutput>>;
    fn insert(&self, key: CacheKey, value: Arc<CompressOutput>);
}

/// What one entry costs besides its text: the key, the `Arc<CompressOutput>`, and moka's
/// bookkeeping (its entry, access-order and write-order nodes, hash table slot and frequency
/// sketch). Measured with a counting allocator in `tests/proxy/cache_bound.rs` (about 320 bytes on
/// x86_64 with moka 0.12), rounded up so that many tiny entries stay within `cache_bytes`.
const ENTRY_OVERHEAD: usize = 384;

/// The in-process cache: moka, bounded by what its entries really hold.
pub struct MokaCache {
    inner: moka::sync::Cache<CacheKey, Arc<CompressOutput>>,
}

impl MokaCache {
    pub fn new(max_bytes: u64) -> Self {
        let inner = moka::sync::Cache::builder()
            .max_capacity(max_bytes)
            .weigher(|_k: &CacheKey, v: &Arc<CompressOutput>| {
                u32::try_from(v.text.capacity() + ENTRY_OVERHEAD).unwrap_or(u32::MAX)
            })
            .build();
        Self { inner }
    }
}

impl MokaCache {
    /// Applies pending evictions now (moka applies them lazily): tests and benchmarks that
    /// measure the bound call it.
    pub fn settle(&self) {
        self.inner.run_pending_tasks();
    }
}

impl CompressionCache for MokaCache {
    fn get(&self, key: &CacheKey) -> Option<Arc<CompressOutput>> {
        self.inner.get(key)
    }
    fn insert(&self, key: CacheKey, value: Arc<CompressOutput>) {
        self.inner.insert(key, value);
    }
}

/// The in-process cache in front of a shared one: a local hit never leaves the process, a
/// shared hit is kept locally too, and every new entry goes to both.
pub struct TieredCache {
    local: Arc<dyn CompressionCache>,
    shared: Arc<dyn CompressionCache>,
}

impl TieredCache {
    pub fn new(local: Arc<dyn CompressionCache>, shared: Arc<dyn CompressionCache>) -> Self {
        Self { local, shared }
    }
}

impl CompressionCache for TieredCache {
    fn get(&self, key: &CacheKey) -> Option<Arc<CompressOutput>> {
        if let Some(hit) = self.local.get(key) {
            return Some(hit);
        }
        let hit = self.shared.get(key)?;
        self.local.insert(*key, hit.clone());
        Some(hit)
    }
    fn insert(&self, key: CacheKey, value: Arc<CompressOutput>) {
        self.local.insert(key, value.clone());
        self.shared.insert(key, value);
    }
}

/// No caching (`cache_bytes = 0`).
#[derive(Debug, Default, Clone, Copy)]
pub struct NoCache;

impl CompressionCache for NoCache {
    fn get(&self, _key: &CacheKey) -> Option<Arc<CompressOutput>> {
        None
    }
    fn insert(&self, _key: CacheKey, _value: Arc<CompressOutput>) {}
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_separate_every_input() {
        let b = Budget::rate(0.5);
        let k = CacheKey::new("c", &b, "text");
        assert_eq!(k, CacheKey::new("c", &b, "text"));
        assert_ne!(k, CacheKey::new("d", &b, "text"));
        assert_ne!(k, CacheKey::new("c", &Budget::rate(0.4), "text"));
        assert_ne!(k, CacheKey::new("c", &b, "text "));
        // LongLLMLingua's question is part of the key; no question is not an empty one.
        let mut q = b.clone();
        q.question = Some("which river?".into());
        assert_ne!(k, CacheKey::new("c", &q, "text"));
        let mut q2 = b.clone();
        q2.question = Some("which city?".into());
        assert_ne!(
            CacheKey::new("c", &q, "text"),
            CacheKey::new("c", &q2, "text")
        );
        let mut f = b.clone();
        f.force_tokens.push("x".into());
        assert_ne!(k, CacheKey::new("c", &f, "text"));
        let mut u = b.clone();
        u.keep.negations = false;
        assert_ne!(k, CacheKey::new("c", &u, "text"));
        let mut m = b.clone();
        m.keep.must_keep.push("x".into());
        assert_ne!(k, CacheKey::new("c", &m, "text"));
    }

    #[test]
    fn moka_roundtrip() {
        let c = MokaCache::new(1 << 20);
        let k = CacheKey::new("c", &Budget::rate(0.5), "t");
        assert!(c.get(&k).is_none());
        c.insert(
            k,
            Arc::new(CompressOutput {
                text: "x".into(),
                origin_tokens: 2,
                compressed_tokens: 1,
                budget_exceeded_by_units: false,
            }),
        );
        assert_eq!(c.get(&k).map(|v| v.text.clone()), Some("x".into()));
    }
}
