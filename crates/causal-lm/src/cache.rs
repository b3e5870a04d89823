//! The key/value cache of one sequence: per layer, the keys (after RoPE for Llama) and values
//! of every cached position, token-major so that appending, truncating and cutting a window
//! out are plain vector operations.

/// Keys and values of the positions fed so far, for every layer.
///
/// Layout: per layer, `k` and `v` hold `len` rows of `kv_heads · head_dim` floats (position
/// major; head `h` of position `t` starts at `t · width + h · head_dim`).
#[derive(Debug, Clone, PartialEq)]
pub struct KvCache {
    pub(crate) k: Vec<Vec<f32>>,
    pub(crate) v: Vec<Vec<f32>>,
    pub(crate) width: usize,
    pub(crate) len: usize,
}

impl KvCache {
    pub(crate) fn new(layers: usize, width: usize) -> Self {
        Self {
            k: vec![Vec::new(); layers],
            v: vec![Vec::new(); layers],
            width,
            len: 0,
        }
    }

    /// Number of cached positions.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether no position is cached.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Keeps the first `len` positions (no-op when `len >= self.len()`).
    pub fn truncate(&mut self, len: usize) {
        if len >= self.len {
            return;
        }
        for t in self.k.iter_mut().chain(self.v.iter_mut()) {
            t.truncate(len * self.width);
        }
        self.len = len;
    }

    /// Drops positions `[start, start + count)`, clamped to the cache like a Python slice
    /// (`cat(k[:start], k[start + count:])`); later positions move down.
    pub fn remove(&mut self, start: usize, count: usize) {
        let s = start.min(self.len);
        let e = start.saturating_add(count).min(self.len);
        if s >= e {
            return;
        }
        for t in self.k.iter_mut().chain(self.v.iter_mut()) {
            t.drain(s * self.width..e * self.width);
        }
        self.len -= e - s;
    }

    /// Bytes of memory held by the cached keys and values (allocated capacity).
    pub fn bytes(&self) -> usize {
        let floats: usize = self.k.iter().chain(self.v.iter()).map(Vec::capacity).sum();
        floats * std::mem::size_of::<f32>()
    }

    /// Releases spare capacity (after a large truncate or remove).
    pub fn shrink_to_fit(&mut self) {
        for t in self.k.iter_mut().chain(self.v.iter_mut()) {
            t.shrink_to_fit();
        }
    }

    /// Drops layer rows past `len` after a failed forward pass (all layers back to `len`).
    pub(crate) fn rollback(&mut self) {
        let keep = self.len * self.width;
        for t in self.k.iter_mut().chain(self.v.iter_mut()) {
            t.truncate(keep);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn filled(len: usize) -> KvCache {
        let mut c = KvCache::new(2, 3);
        for l in 0..2 {
            for t in 0..len {
                for j in 0..3 {
                    c.k[l].push((100 * l + 10 * t + j) as f32);
                    c.v[l].push(-((100 * l + 10 * t + j) as f32));
                }
            }
        }
        c.len = len;
        c
    }

    #[test]
    fn truncate_and_remove_follow_slices() {
        let mut c = filled(5);
        c.remove(1, 2);
        assert_eq!(c.len(), 3);
        assert_eq!(c.k[1][3..6], [100.0, 101.0, 102.0].map(|x| x + 30.0));
        assert_eq!(c.v[0][..3], [0.0, -1.0, -2.0]);
        c.remove(2, usize::MAX);
        assert_eq!(c.len(), 2);
        c.remove(7, 1);
        assert_eq!(c.len(), 2);
        c.truncate(5);
        assert_eq!(c.len(), 2);
        c.truncate(0);
        assert!(c.is_empty());
        assert!(c.k.iter().all(Vec::is_empty));
    }

    #[test]
    fn bytes_counts_capacity() {
        let mut c = filled(4);
        assert!(c.bytes() >= 2 * 2 * 4 * 3 * 4);
        c.truncate(0);
        c.shrink_to_fit();
        assert_eq!(c.bytes(), 0);
    }
}
