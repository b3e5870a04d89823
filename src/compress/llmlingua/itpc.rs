//! Iterative token-level prompt compression (`iterative_compress_prompt`,
//! `get_dynamic_compression_ratio`, `get_compressed_input`,
//! `get_estimate_threshold_base_distribution`): windows of `iterative_size` tokens, each scored
//! with the causal LM conditioned on the already-compressed text through the KV cache, pruned
//! against a threshold taken over the whole loss vector. Ported operation by operation, with
//! Python's slice semantics and the reference's quirks ([BUG-COMPAT]: the uncompressed tail, the
//! next-token off-by-one, the sliding KV window that keeps the first `10 + start` positions, the
//! loss vector that is not shifted when the window slides). Where the reference itself would
//! raise (shape mismatches, an exhausted window plan), this returns
//! [`LlmlinguaError::Reference`].

use super::{LlmlinguaError, py};
use crate::model::WorkCtx;
use crate::scorer::causal::CausalScorer;

/// `cache_bos_num`: cached positions the sliding window always keeps (plus `start`).
pub const CACHE_BOS_NUM: i64 = 10;

/// One window's plan: `(piece length, keep ratio)` pairs.
pub type Window = Vec<(i64, f64)>;

/// `max(min(1, base + delta), 0)` with Python's `min`/`max` argument rules.
fn get_ratio(base: f64, delta: f64) -> f64 {
    let x = base + delta;
    let m = if x < 1.0 { x } else { 1.0 };
    if 0.0 > m { 0.0 } else { m }
}

/// `get_dynamic_compression_ratio`: `lengths` are `len_tok_nospecial(c) + 2` of the contexts
/// (prefix already dropped).
pub fn plan(
    lengths: &[i64],
    target_token: f64,
    w: i64,
    dynamic_ratio: &[f64],
) -> Result<Vec<Window>, LlmlinguaError> {
    let tau = target_token / (lengths.iter().sum::<i64>() + 1) as f64;
    let mut res: Vec<Window> = Vec::new();
    let mut last: i64 = 1;
    let mut cur: Window = Vec::new();
    for (idx, &len) in lengths.iter().enumerate() {
        let d = *dynamic_ratio.get(idx).ok_or_else(|| {
            LlmlinguaError::Reference("IndexError: dynamic ratio list shorter than contexts".into())
        })?;
        let r = get_ratio(tau, d);
        if last + len >= w {
            cur.push((w - last, r));
            res.push(std::mem::take(&mut cur));
            last = last + len - w;
            if last > w {
                let k = last.div_euclid(w);
                for _ in 0..k {
                    res.push(vec![(w, r)]);
                }
                last -= k * w;
            }
            if last != 0 {
                cur = vec![(last, r)];
            }
        } else {
            last += len;
            cur.push((len, r));
        }
    }
    if !cur.is_empty() {
        res.push(cur);
    }
    Ok(res)
}

/// `get_estimate_threshold_base_distribution(ppl, ratio)`: the value at index
/// `max(0, min(n-1, int(n*ratio) - 1))` of the losses (≠ 10000) sorted descending.
pub fn threshold(ppl: &[f32], ratio: f64) -> Result<f32, LlmlinguaError> {
    if ratio == 1.0 {
        return Ok(f32::NEG_INFINITY);
    }
    let mut v: Vec<f32> = ppl.iter().copied().filter(|&x| x != 10000.0).collect();
    if v.is_empty() {
        return Err(LlmlinguaError::Reference(
            "IndexError: threshold over an empty loss vector".into(),
        ));
    }
    let n = v.len() as i64;
    let k = ((n as f64 * ratio).trunc() as i64 - 1).min(n - 1).max(0) as usize;
    // The k-th value of torch.sort(descending=True), where NaN counts as the largest: a
    // selection, not a full sort, per piece.
    let desc = |a: &f32, b: &f32| match (a.is_nan(), b.is_nan()) {
        (true, true) => std::cmp::Ordering::Equal,
        (true, false) => std::cmp::Ordering::Less,
        (false, true) => std::cmp::Ordering::Greater,
        (false, false) => b.total_cmp(a),
    };
    let (_, kth, _) = v.select_nth_unstable_by(k, desc);
    Ok(*kth)
}

/// `a - b` for 1-d float32 tensors, with torch's broadcasting of length-1 operands.
fn sub(a: &[f32], b: &[f32]) -> Result<Vec<f32>, LlmlinguaError> {
    match (a.len(), b.len()) {
        (x, y) if x == y => Ok(a.iter().zip(b).map(|(x, y)| x - y).collect()),
        (1, _) => Ok(b.iter().map(|y| a[0] - y).collect()),
        (_, 1) => Ok(a.iter().map(|x| x - b[0]).collect()),
        (x, y) => Err(LlmlinguaError::Reference(format!(
            "RuntimeError: loss vectors of {x} and {y} positions do not broadcast"
        ))),
    }
}

/// The contrastive score of `condition_compare`: `self_loss[:len(loss[start:])] - loss[start:]`.
fn contrast(loss: &[f32], self_loss: &[f32], start: usize) -> Result<Vec<f32>, LlmlinguaError> {
    let tail = &loss[py::range(Some(start as i64), None, loss.len())];
    let head = &self_loss[py::range(None, Some(tail.len() as i64), self_loss.len())];
    sub(head, tail)
}

fn filter<T: Copy>(v: &[T], mask: &[bool], what: &str) -> Result<Vec<T>, LlmlinguaError> {
    if v.len() != mask.len() {
        return Err(LlmlinguaError::Reference(format!(
            "IndexError: {what} has {} positions but the mask {}",
            v.len(),
            mask.len()
        )));
    }
    Ok(v.iter()
        .zip(mask)
        .filter(|(_, k)| **k)
        .map(|(x, _)| *x)
        .collect())
}

struct Selected {
    /// The final keep mask over the ids passed in.
    need: Vec<bool>,
    ids: Vec<u32>,
    keep: Option<Vec<u8>>,
    end: i64,
    loss: Vec<f32>,
    self_loss: Option<Vec<f32>>,
    self_ids: Option<Vec<u32>>,
}

/// `get_compressed_input`: drops, inside `[end - piece, end)`, the positions whose *next*
/// token's loss is not above the threshold ([BUG-COMPAT] off-by-one).
#[expect(
    clippy::too_many_arguments,
    reason = "the reference's selection step takes each of these values"
)]
fn select(
    loss: &[f32],
    ids: &[u32],
    end: i64,
    piece: i64,
    thr: f32,
    keep: Option<&[u8]>,
    split_id: u32,
    start: usize,
    self_loss: Option<&[f32]>,
    self_ids: Option<&[u32]>,
) -> Result<Selected, LlmlinguaError> {
    let mut need: Vec<bool> = match self_loss {
        Some(sl) => {
            let mut v: Vec<bool> = loss[..start.min(loss.len())]
                .iter()
                .map(|&l| l > 0.0)
                .collect();
            v.extend(contrast(loss, sl, start)?.iter().map(|&d| d > thr));
            v.extend(loss.first().map(|&l| l > 0.0));
            v
        }
        None => loss
            .iter()
            .map(|&l| l > thr)
            .chain(loss.first().map(|&l| l > 0.0))
            .collect(),
    };
    for i in py::range(Some(end), None, need.len()) {
        need[i] = true;
    }
    for i in py::range(None, Some(end - piece), need.len()) {
        need[i] = true;
    }
    let head = py::range(None, Some(-1), need.len());
    let new_loss = filter(loss, &need[head], "the loss vector")?;
    let mut new_self_loss = None;
    if let Some(sl) = self_loss {
        if need.len() < sl.len() + start + 1 {
            need.resize(sl.len() + start + 1, true);
        }
        let r = py::range(Some(start as i64), Some(-1), need.len());
        new_self_loss = Some(filter(sl, &need[r], "the unconditioned loss vector")?);
    }
    need.resize(ids.len(), true);
    if let Some(k) = keep {
        if k.len() != need.len() {
            return Err(LlmlinguaError::Reference(
                "IndexError: keep flags and ids differ in length".into(),
            ));
        }
        for (n, &f) in need.iter_mut().zip(k) {
            if f == 1 {
                *n = true;
            }
        }
        let mut last: i64 = -1;
        for ii in (end - piece).max(0)..end {
            let ii = ii as usize;
            if ii >= need.len() {
                return Err(LlmlinguaError::Reference(
                    "IndexError: selection window past the end of the ids".into(),
                ));
            }
            if !need[ii] {
                continue;
            }
            let now = ids[ii] as i64;
            if now == split_id as i64 && last == split_id as i64 && k[ii] == 0 {
                need[ii] = false;
            } else {
                last = now;
            }
        }
    }
    let new_ids = filter(ids, &need, "the ids")?;
    let new_self_ids = match self_ids {
        Some(s) => {
            let r = py::range(Some(start as i64), None, need.len());
            Some(filter(s, &need[r], "the unconditioned ids")?)
        }
        None => None,
    };
    let new_keep = match keep {
        Some(k) => Some(filter(k, &need, "the keep flags")?),
        None => None,
    };
    let removed = need[py::range(None, Some(end), need.len())]
        .iter()
        .filter(|k| !**k)
        .count() as i64;
    Ok(Selected {
        need,
        ids: new_ids,
        keep: new_keep,
        end: end - removed,
        loss: new_loss,
        self_loss: new_self_loss,
        self_ids: new_self_ids,
    })
}

/// `past_loss[a:b] = loss` (torch: the slice must match, or `loss` has one element).
fn assign(dst: &mut [f32], a: i64, b: i64, src: &[f32]) -> Result<(), LlmlinguaError> {
    let r = py::range(Some(a), Some(b), dst.len());
    if r.len() == src.len() {
        dst[r].copy_from_slice(src);
        Ok(())
    } else if src.len() == 1 {
        dst[r].fill(src[0]);
        Ok(())
    } else {
        Err(LlmlinguaError::Reference(format!(
            "RuntimeError: cannot write {} losses into a slice of {}",
            src.len(),
            r.len()
        )))
    }
}

/// `past_loss = cat([past_loss, zeros_like(loss)[: want - len(past_loss)]])` when `want` is larger.
fn pad(dst: &mut Vec<f32>, want: i64, loss_len: usize) {
    if want > dst.len() as i64 {
        let k = ((want - dst.len() as i64) as usize).min(loss_len);
        dst.resize(dst.len() + k, 0.0);
    }
}

/// One side (conditioned or the `condition_compare` "self" copy) of the model state.
struct Side<C> {
    ids: Vec<u32>,
    kv: Option<C>,
    past_loss: Option<Vec<f32>>,
    ready_end: i64,
}

/// `get_ppl(..., input_ids, past_key_values, end)` inside the loop: feeds
/// `ids[past_len:min(end, past_len + max_pos)]` and returns the losses and the grown cache.
fn step<L: CausalScorer>(
    lm: &L,
    ids: &[u32],
    kv: Option<L::Cache>,
    end: Option<i64>,
    ctx: &WorkCtx,
) -> Result<(Vec<f32>, L::Cache), LlmlinguaError> {
    let mut cache = kv.unwrap_or_else(|| lm.new_cache());
    let past = lm.cache_len(&cache) as i64;
    let e = end
        .unwrap_or(ids.len() as i64)
        .min(past + lm.max_positions() as i64);
    let r = py::range(Some(past), Some(e), ids.len());
    if r.is_empty() {
        return Ok((Vec::new(), cache));
    }
    let loss = lm.nll(&mut cache, &ids[r], ctx)?;
    Ok((loss, cache))
}

/// `[:n]` on the cache's sequence axis, Python semantics.
fn truncate_py<L: CausalScorer>(lm: &L, cache: &mut L::Cache, n: i64) {
    let len = lm.cache_len(cache);
    lm.truncate(cache, py::bound(n, len));
}

/// `cat([k[..., :s, :], k[..., s + e:, :]])` on the cache, Python semantics.
fn slide_py<L: CausalScorer>(
    lm: &L,
    cache: &mut L::Cache,
    s: i64,
    e: i64,
) -> Result<(), LlmlinguaError> {
    let len = lm.cache_len(cache);
    let a = py::bound(s, len);
    let b = py::bound(s + e, len);
    if b < a {
        return Err(LlmlinguaError::Reference(
            "the sliding window would duplicate cached positions".into(),
        ));
    }
    lm.remove(cache, a, b - a);
    Ok(())
}

/// What the iterative compression needs besides the contexts.
pub struct ItpcArgs<'a> {
    pub target_token: f64,
    pub iterative_size: i64,
    pub keep_split: bool,
    pub split_token_id: u32,
    pub start: usize,
    pub dynamic_ratio: &'a [f64],
    pub condition_compare: bool,
}

/// The result of [`iterative_compress`].
#[derive(Debug, Clone, PartialEq)]
pub struct Compressed {
    /// The compressed ids, the condition prefix's `start` ids removed.
    pub ids: Vec<u32>,
    /// For each of `ids`, its index in the ids of `"\n\n".join(contexts)` (no special tokens).
    pub origin: Vec<usize>,
}

/// `iterative_compress_prompt(context, ...)`.
pub fn iterative_compress<L: CausalScorer>(
    lm: &L,
    contexts: &[String],
    a: &ItpcArgs<'_>,
    ctx: &WorkCtx,
) -> Result<Compressed, LlmlinguaError> {
    let tok = lm.tokenizer();
    let w = a.iterative_size;
    let start = a.start;
    let max_pos = lm.max_positions() as i64;
    let mut lengths = Vec::with_capacity(contexts.len());
    for c in contexts {
        lengths.push(tok.len(c, false)? as i64 + 2);
    }
    if start > 0 && !lengths.is_empty() {
        lengths.remove(0);
    }
    let windows = plan(&lengths, a.target_token, w, a.dynamic_ratio)?;
    let ids = tok.encode(&contexts.join("\n\n"), false)?;

    let mut keep: Option<Vec<u8>> = None;
    if a.keep_split {
        let s = a.split_token_id;
        let n = ids.len();
        keep = Some(
            (0..n)
                .map(|i| {
                    u8::from(
                        (i > 0 && ids[i] == s && ids[i - 1] == s)
                            || (i + 1 < n && ids[i] == s && ids[i + 1] == s),
                    )
                })
                .collect(),
        );
    }
    let mut me: Side<L::Cache> = Side {
        ids: ids.clone(),
        kv: None,
        past_loss: None,
        ready_end: 0,
    };
    let mut other: Option<Side<L::Cache>> = a.condition_compare.then(|| Side {
        ids: ids[start.min(ids.len())..].to_vec(),
        kv: None,
        past_loss: None,
        ready_end: 0,
    });
    let mut popped: Vec<u32> = Vec::new();
    let mut origin: Vec<usize> = (0..ids.len()).collect();
    let mut popped_origin: Vec<usize> = Vec::new();
    let st = start as i64;
    let mut end = (w + st).min(me.ids.len() as i64);
    let mut idx: usize = 0;
    while end <= me.ids.len() as i64 {
        ctx.check()?;
        if end > max_pos && me.kv.is_some() {
            // KV-cache compression: keep the first 10 + start positions, drop the next e.
            let e = end - max_pos;
            let s = (CACHE_BOS_NUM + st).min(max_pos);
            let cut = py::range(None, Some(e), me.ids.len());
            popped.extend_from_slice(&me.ids[cut.clone()]);
            popped_origin.extend(origin.drain(cut.clone()));
            me.ids.drain(cut);
            if let Some(kv) = me.kv.as_mut() {
                slide_py(lm, kv, s, e)?;
            }
            if let Some(k) = keep.as_mut() {
                let cut = py::range(None, Some(e), k.len());
                k.drain(cut);
            }
            end -= e;
            me.ready_end -= e;
            if let Some(o) = other.as_mut() {
                let kv_len = o.kv.as_ref().map_or(0, |kv| lm.cache_len(kv)) as i64;
                let s2 = s.min(kv_len - e);
                o.ready_end -= e;
                let cut = py::range(None, Some(e), o.ids.len());
                o.ids.drain(cut);
                if let Some(kv) = o.kv.as_mut() {
                    slide_py(lm, kv, s2, e)?;
                }
            }
        }
        let (loss, mut cache) = step(lm, &me.ids, me.kv.take(), (idx > 0).then_some(end), ctx)?;
        if loss.is_empty() {
            break;
        }
        match me.past_loss.as_mut() {
            Some(pl) => {
                pad(pl, end - 1, loss.len());
                assign(pl, me.ready_end, end - 1, &loss)?;
            }
            None => me.past_loss = Some(loss),
        }
        me.kv = if idx > 0 {
            truncate_py(lm, &mut cache, end - w);
            Some(cache)
        } else {
            None
        };
        let first_with_prefix = start > 0 && idx == 0;
        if let Some(o) = other.as_mut() {
            let (sloss, mut scache) =
                step(lm, &o.ids, o.kv.take(), (idx > 0).then_some(end - st), ctx)?;
            match o.past_loss.as_mut() {
                Some(pl) => {
                    pad(pl, end - st - 1, sloss.len());
                    assign(pl, o.ready_end, end - st - 1, &sloss)?;
                }
                None => o.past_loss = Some(sloss),
            }
            o.kv = if idx > 0 {
                truncate_py(lm, &mut scache, end - w - st);
                Some(scache)
            } else {
                None
            };
            o.ready_end = if first_with_prefix { 0 } else { end - st - w };
        }
        me.ready_end = if first_with_prefix { 0 } else { end - w };

        let pieces = windows.get(idx).ok_or_else(|| {
            LlmlinguaError::Reference(
                "IndexError: the text needs more windows than the plan has".into(),
            )
        })?;
        for &(delta, ratio) in pieces {
            let loss = me.past_loss.take().unwrap_or_default();
            let self_loss = other.as_mut().and_then(|o| o.past_loss.take());
            let thr = match &self_loss {
                Some(sl) => threshold(&contrast(&loss, sl, start)?, ratio)?,
                None => threshold(&loss, ratio)?,
            };
            let sel = select(
                &loss,
                &me.ids,
                end - w + delta,
                delta,
                thr,
                keep.as_deref(),
                a.split_token_id,
                start,
                self_loss.as_deref(),
                other.as_ref().map(|o| o.ids.as_slice()),
            )?;
            origin = filter(&origin, &sel.need, "the origin map")?;
            me.ids = sel.ids;
            keep = sel.keep;
            me.past_loss = Some(sel.loss);
            if let Some(o) = other.as_mut() {
                o.past_loss = sel.self_loss;
                if let Some(s) = sel.self_ids {
                    o.ids = s;
                }
            }
            end = sel.end + w;
        }
        idx += 1;
    }
    popped.extend_from_slice(&me.ids);
    popped_origin.extend_from_slice(&origin);
    let r = py::range(Some(st), None, popped.len());
    Ok(Compressed {
        ids: popped[r.clone()].to_vec(),
        origin: popped_origin[r].to_vec(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plan_matches_the_reference_walk() {
        // One context of 450 (+2) tokens, W = 200: [(199, r)], [(200, r)], [(53, r)].
        let p = plan(&[452], 226.0, 200, &[0.0]).unwrap();
        let r = 226.0 / 453.0;
        assert_eq!(p, vec![vec![(199, r)], vec![(200, r)], vec![(53, r)]]);
        // Two short contexts share the first window.
        let p = plan(&[50, 60], 55.0, 200, &[0.1, -0.1]).unwrap();
        let tau = 55.0 / 111.0;
        assert_eq!(p, vec![vec![(50, tau + 0.1), (60, tau - 0.1)]]);
        // Ratios are clamped to [0, 1].
        let p = plan(&[10], 100.0, 200, &[0.0]).unwrap();
        assert_eq!(p, vec![vec![(10, 1.0)]]);
        assert!(plan(&[10, 10], 5.0, 200, &[0.0]).is_err());
    }

    #[test]
    fn threshold_takes_the_kth_largest() {
        let v = [0.5f32, 3.0, 1.0, 2.0];
        // Sorted descending [3, 2, 1, 0.5]; int(4 * 0.5) - 1 = 1.
        assert_eq!(threshold(&v, 0.5).unwrap(), 2.0);
        assert_eq!(threshold(&v, 1.0).unwrap(), f32::NEG_INFINITY);
        assert_eq!(threshold(&v, 0.0).unwrap(), 3.0);
        assert_eq!(threshold(&[10000.0, 1.0], 0.9).unwrap(), 1.0);
        assert!(threshold(&[], 0.5).is_err());
    }

    #[test]
    fn select_reproduces_short_prompt_slicing() {
        // Issue #196: a window that ends past the loss vector leaves only Python-slice positions.
        let loss = vec![1.0f32; 9];
        let ids: Vec<u32> = (0..10).collect();
        let s = select(&loss, &ids, 20, 12, 0.5, None, 13, 0, None, None).unwrap();
        assert_eq!(s.ids, ids);
        // Everything below the threshold inside [2, 6) goes; the rest stays.
        let loss = vec![0.1f32; 9];
        let s = select(&loss, &ids, 6, 4, 0.5, None, 13, 0, None, None).unwrap();
        assert_eq!(s.ids, vec![0, 1, 6, 7, 8, 9]);
        assert_eq!(s.end, 2);
        assert_eq!(s.loss.len(), 5);
    }
}
