//! The decoder stack: weights laid out for the kernels (fused q/k/v and gate/up projections,
//! every matrix in `[out, in]` order, optionally Q8_0-quantized) and the batched forward pass
//! over the new positions with the KV cache, ending in per-token NLL.
#![allow(
    unsafe_code,
    reason = "strided GEMM calls into the kernels over checked slices"
)]

use rayon::prelude::*;

use crate::cache::KvCache;
use crate::config::{Activation, Family, LmConfig, RopeScaling};
use crate::weights::{Raw, Weights};
use crate::{LmError, Precision};
use lingua_kernels::{SendPtr, bf16, math, products, q8};

/// Rows of a task in attention and in the element-wise passes.
const ROW_BLOCK: usize = 32;
/// Logits computed per lm_head pass (rows · vocab), bounding that buffer to ~32 MiB.
const LOGIT_FLOATS: usize = 8 << 20;

/// Inputs per int8 scale in `q8`: blocks of 32, GGML Q8_0's granularity, so that an outlier
/// channel of the residual stream costs only its own block precision.
const Q8_BLOCK: usize = 32;

enum Matrix {
    F32(Vec<f32>),
    /// int8 weights per output channel, packed for the shared int8 kernels.
    Q8(q8::PackedQ8),
    /// bf16 weights, packed for the shared bf16 kernels.
    Bf16(bf16::PackedBf16),
}

/// `y = x · Wᵀ + b` with `W` as `[n, k]`.
struct Linear {
    w: Matrix,
    bias: Option<Vec<f32>>,
    n: usize,
    k: usize,
}

impl Linear {
    fn new(w: Vec<f32>, n: usize, k: usize, bias: Option<Vec<f32>>, p: Precision) -> Self {
        let w = match p {
            Precision::F32 => Matrix::F32(w),
            Precision::Q8 => Matrix::Q8(q8::PackedQ8::quantize(&w, n, k, Q8_BLOCK)),
            Precision::Bf16 => Matrix::Bf16(bf16::PackedBf16::pack(&w, n, k)),
        };
        Self { w, bias, n, k }
    }

    /// `out[m, n] = x[m, k] · Wᵀ + b`.
    fn forward(&self, x: &[f32], m: usize, out: &mut [f32]) {
        let (n, k) = (self.n, self.k);
        let out = &mut out[..m * n];
        let threads = rayon::current_num_threads();
        match &self.w {
            Matrix::F32(w) => {
                if let Some(b) = &self.bias {
                    for row in out.chunks_exact_mut(n) {
                        row.copy_from_slice(b);
                    }
                }
                products::matmul_wt(&x[..m * k], m, k, w, n, out, self.bias.is_some(), threads);
            }
            Matrix::Q8(w) => {
                let mut rows = q8::QuantRows::default();
                rows.quantize(&x[..m * k], m, k, w.block_size(), threads);
                let bias = self.bias.as_deref();
                q8::linear_q8(&rows, w, bias, out, q8::Q8Kernel::detect(), threads);
            }
            Matrix::Bf16(w) => {
                let kernel = bf16::Bf16Kernel::detect();
                let mut rows = bf16::Bf16Rows::default();
                rows.convert(&x[..m * k], m, k, kernel, threads);
                let bias = self.bias.as_deref();
                bf16::linear_bf16(&rows, w, bias, out, kernel, threads);
            }
        }
    }
}

/// LayerNorm (with bias) or RMSNorm (without).
struct Norm {
    w: Vec<f32>,
    b: Option<Vec<f32>>,
    eps: f32,
}

impl Norm {
    fn apply(&self, src: &[f32], dst: &mut [f32], width: usize) {
        let rows = |(s, d): (&[f32], &mut [f32])| {
            d.copy_from_slice(s);
            match &self.b {
                Some(b) => math::layer_norm_row(d, &self.w, b, self.eps),
                None => math::rms_norm_row(d, &self.w, self.eps),
            }
        };
        src.par_chunks(width)
            .zip(dst.par_chunks_mut(width))
            .with_min_len(ROW_BLOCK)
            .for_each(rows);
    }
}

struct Block {
    norm1: Norm,
    norm2: Norm,
    /// Fused q, k, v projection: `[(heads + 2 · kv_heads) · head_dim, hidden]`.
    qkv: Linear,
    o: Linear,
    /// GPT-2's c_fc, or Llama's fused gate and up projections (`[2 · intermediate, hidden]`).
    up: Linear,
    down: Linear,
}

pub(crate) struct Model {
    pub(crate) cfg: LmConfig,
    embed: Vec<f32>,
    positions: Option<Vec<f32>>,
    blocks: Vec<Block>,
    final_norm: Norm,
    /// None: tied to `embed` (f32).
    lm_head: Option<Linear>,
    inv_freq: Vec<f32>,
}

fn transpose(raw: Raw) -> Vec<f32> {
    let (r, c) = (raw.shape[0], raw.shape[1]);
    let mut out = vec![0.0f32; r * c];
    for i in 0..r {
        for j in 0..c {
            out[j * r + i] = raw.data[i * c + j];
        }
    }
    out
}

fn cat(parts: Vec<Raw>) -> Vec<f32> {
    let mut out = Vec::with_capacity(parts.iter().map(|p| p.data.len()).sum());
    for p in parts {
        out.extend_from_slice(&p.data);
    }
    out
}

pub(crate) fn inv_freq(cfg: &LmConfig) -> Vec<f32> {
    let dim = cfg.head_dim;
    let mut f: Vec<f32> = (0..dim / 2)
        .map(|i| 1.0f32 / cfg.rope_theta.powf((2 * i) as f32 / dim as f32))
        .collect();
    match cfg.rope_scaling {
        RopeScaling::None => {}
        RopeScaling::Linear(factor) => f.iter_mut().for_each(|x| *x /= factor),
        RopeScaling::Llama3 {
            factor,
            low_freq_factor,
            high_freq_factor,
            original_max_position_embeddings: old,
        } => {
            let low_wavelen = old / low_freq_factor;
            let high_wavelen = old / high_freq_factor;
            for x in f.iter_mut() {
                let wavelen = 2.0 * std::f32::consts::PI / *x;
                let scaled = if wavelen > low_wavelen {
                    *x / factor
                } else {
                    *x
                };
                let smooth =
                    (old / wavelen - low_freq_factor) / (high_freq_factor - low_freq_factor);
                let smoothed = (1.0 - smooth) * scaled / factor + smooth * scaled;
                let medium = wavelen >= high_wavelen && wavelen <= low_wavelen;
                *x = if medium { smoothed } else { scaled };
            }
        }
    }
    f
}

impl Model {
    pub(crate) fn load(cfg: LmConfig, w: &Weights, p: Precision) -> Result<Self, LmError> {
        match cfg.family {
            Family::Gpt2 => Self::load_gpt2(cfg, w, p),
            Family::Llama | Family::Qwen2 => Self::load_llama(cfg, w, p),
        }
    }

    fn lm_head(
        cfg: &LmConfig,
        w: &Weights,
        embed: &[f32],
        p: Precision,
        px: &[&str],
    ) -> Result<Option<Linear>, LmError> {
        let (v, d) = (cfg.vocab_size, cfg.hidden);
        if !cfg.tie_word_embeddings {
            let head = w.take(px, "lm_head.weight", &[v, d])?;
            return Ok(Some(Linear::new(head.data, v, d, None, p)));
        }
        match p {
            Precision::F32 => Ok(None),
            Precision::Q8 | Precision::Bf16 => Ok(Some(Linear::new(embed.to_vec(), v, d, None, p))),
        }
    }

    fn load_gpt2(cfg: LmConfig, w: &Weights, p: Precision) -> Result<Self, LmError> {
        const PX: &[&str] = &["", "transformer."];
        let (d, i, v) = (cfg.hidden, cfg.intermediate, cfg.vocab_size);
        let embed = w.take(PX, "wte.weight", &[v, d])?.data;
        let positions = w
            .take(PX, "wpe.weight", &[cfg.max_position_embeddings, d])?
            .data;
        let ln = |name: &str| -> Result<Norm, LmError> {
            Ok(Norm {
                w: w.take(PX, &format!("{name}.weight"), &[d])?.data,
                b: Some(w.take(PX, &format!("{name}.bias"), &[d])?.data),
                eps: cfg.norm_eps,
            })
        };
        let conv = |name: &str, k: usize, n: usize| -> Result<Linear, LmError> {
            let wt = transpose(w.take(PX, &format!("{name}.weight"), &[k, n])?);
            let b = w.take(PX, &format!("{name}.bias"), &[n])?.data;
            Ok(Linear::new(wt, n, k, Some(b), p))
        };
        let mut blocks = Vec::with_capacity(cfg.layers);
        for l in 0..cfg.layers {
            let h = format!("h.{l}");
            blocks.push(Block {
                norm1: ln(&format!("{h}.ln_1"))?,
                norm2: ln(&format!("{h}.ln_2"))?,
                qkv: conv(&format!("{h}.attn.c_attn"), d, 3 * d)?,
                o: conv(&format!("{h}.attn.c_proj"), d, d)?,
                up: conv(&format!("{h}.mlp.c_fc"), d, i)?,
                down: conv(&format!("{h}.mlp.c_proj"), i, d)?,
            });
        }
        let final_norm = ln("ln_f")?;
        let lm_head = Self::lm_head(&cfg, w, &embed, p, &[""])?;
        Ok(Self {
            cfg,
            embed,
            positions: Some(positions),
            blocks,
            final_norm,
            lm_head,
            inv_freq: Vec::new(),
        })
    }

    fn load_llama(cfg: LmConfig, w: &Weights, p: Precision) -> Result<Self, LmError> {
        const PX: &[&str] = &["model.", ""];
        let (d, i, v) = (cfg.hidden, cfg.intermediate, cfg.vocab_size);
        let (hq, hkv) = (cfg.heads * cfg.head_dim, cfg.kv_heads * cfg.head_dim);
        let embed = w.take(PX, "embed_tokens.weight", &[v, d])?.data;
        let rms = |name: &str| -> Result<Norm, LmError> {
            Ok(Norm {
                w: w.take(PX, &format!("{name}.weight"), &[d])?.data,
                b: None,
                eps: cfg.norm_eps,
            })
        };
        let bias = |name: &str, n: usize, on: bool| -> Result<Option<Raw>, LmError> {
            if on {
                w.take(PX, &format!("{name}.bias"), &[n]).map(Some)
            } else {
                w.take_opt(PX, &format!("{name}.bias"), &[n])
            }
        };
        let mut blocks = Vec::with_capacity(cfg.layers);
        for l in 0..cfg.layers {
            let a = format!("layers.{l}.self_attn");
            let m = format!("layers.{l}.mlp");
            let mut qkv_w = Vec::new();
            let mut qkv_b = Vec::new();
            for (proj, n) in [("q_proj", hq), ("k_proj", hkv), ("v_proj", hkv)] {
                qkv_w.push(w.take(PX, &format!("{a}.{proj}.weight"), &[n, d])?);
                qkv_b.push(bias(&format!("{a}.{proj}"), n, cfg.attention_bias)?);
            }
            let qkv_bias = if qkv_b.iter().any(Option::is_some) {
                let mut b = Vec::with_capacity(hq + 2 * hkv);
                for (part, n) in qkv_b.into_iter().zip([hq, hkv, hkv]) {
                    match part {
                        Some(r) => b.extend_from_slice(&r.data),
                        None => b.extend(std::iter::repeat_n(0.0, n)),
                    }
                }
                Some(b)
            } else {
                None
            };
            let o_w = w.take(PX, &format!("{a}.o_proj.weight"), &[d, hq])?;
            let o_b = bias(&format!("{a}.o_proj"), d, cfg.o_bias)?.map(|r| r.data);
            let gate = w.take(PX, &format!("{m}.gate_proj.weight"), &[i, d])?;
            let up = w.take(PX, &format!("{m}.up_proj.weight"), &[i, d])?;
            let gate_b = bias(&format!("{m}.gate_proj"), i, cfg.mlp_bias)?;
            let up_b = bias(&format!("{m}.up_proj"), i, cfg.mlp_bias)?;
            let gu_b = match (gate_b, up_b) {
                (None, None) => None,
                (g, u) => {
                    let mut b = g.map(|r| r.data).unwrap_or_else(|| vec![0.0; i]);
                    b.extend(u.map(|r| r.data).unwrap_or_else(|| vec![0.0; i]));
                    Some(b)
                }
            };
            let down = w.take(PX, &format!("{m}.down_proj.weight"), &[d, i])?;
            let down_b = bias(&format!("{m}.down_proj"), d, cfg.mlp_bias)?.map(|r| r.data);
            blocks.push(Block {
                norm1: rms(&format!("layers.{l}.input_layernorm"))?,
                norm2: rms(&format!("layers.{l}.post_attention_layernorm"))?,
                qkv: Linear::new(cat(qkv_w), hq + 2 * hkv, d, qkv_bias, p),
                o: Linear::new(o_w.data, d, hq, o_b, p),
                up: Linear::new(cat(vec![gate, up]), 2 * i, d, gu_b, p),
                down: Linear::new(down.data, d, i, down_b, p),
            });
        }
        let final_norm = rms("norm")?;
        let lm_head = Self::lm_head(&cfg, w, &embed, p, &[""])?;
        let inv_freq = inv_freq(&cfg);
        Ok(Self {
            cfg,
            embed,
            positions: None,
            blocks,
            final_norm,
            lm_head,
            inv_freq,
        })
    }

    /// Applies RoPE ("rotate_half" convention) to the q and k parts of `qkv` rows.
    fn rope(&self, qkv: &mut [f32], width: usize, past: usize) {
        let hd = self.cfg.head_dim;
        let half = hd / 2;
        let heads = self.cfg.heads + self.cfg.kv_heads;
        qkv.par_chunks_mut(width)
            .enumerate()
            .with_min_len(ROW_BLOCK)
            .for_each(|(i, row)| {
                let pos = (past + i) as f32;
                let (cos, sin): (Vec<f32>, Vec<f32>) = self
                    .inv_freq
                    .iter()
                    .map(|f| {
                        let a = pos * *f;
                        (a.cos(), a.sin())
                    })
                    .unzip();
                for h in row[..heads * hd].chunks_exact_mut(hd) {
                    let (x1, x2) = h.split_at_mut(half);
                    for j in 0..half {
                        let (a, b) = (x1[j], x2[j]);
                        x1[j] = a * cos[j] - b * sin[j];
                        x2[j] = b * cos[j] + a * sin[j];
                    }
                }
            });
    }

    /// Causal attention of the `n` new queries (in `qkv`, row width `qkv_w`) over the cached
    /// keys/values of one layer (`past + n` rows), into `out[n, heads · head_dim]`.
    #[expect(
        clippy::too_many_arguments,
        reason = "one attention step: the layer, its inputs and the KV cache slots"
    )]
    fn attention(
        &self,
        qkv: &[f32],
        qkv_w: usize,
        kc: &[f32],
        vc: &[f32],
        past: usize,
        n: usize,
        scale: f32,
        out: &mut [f32],
    ) {
        let (h, hd) = (self.cfg.heads, self.cfg.head_dim);
        let group = h / self.cfg.kv_heads;
        let kvw = self.cfg.kv_heads * hd;
        let ow = h * hd;
        assert!(qkv.len() >= n * qkv_w && out.len() >= n * ow);
        assert!(kc.len() >= (past + n) * kvw && vc.len() >= (past + n) * kvw);
        let blocks = n.div_ceil(ROW_BLOCK);
        let out_ptr = SendPtr(out.as_mut_ptr());
        (0..h * blocks)
            .into_par_iter()
            .for_each_init(Vec::new, |scores: &mut Vec<f32>, task| {
                let (head, blk) = (task % h, task / h);
                let g = head / group;
                let r0 = blk * ROW_BLOCK;
                let rows = ROW_BLOCK.min(n - r0);
                let keys = past + r0 + rows;
                scores.clear();
                scores.resize(rows * keys, 0.0);
                // SAFETY: the asserts above bound every access: q rows r0..r0+rows at column
                // head·hd (+hd) of qkv, cache rows 0..keys at column g·hd (+hd), and this task's
                // own out rows and columns, which no other task writes.
                unsafe {
                    products::gemm_strided(
                        rows,
                        keys,
                        hd,
                        scores.as_mut_ptr(),
                        keys as isize,
                        qkv.as_ptr().add(r0 * qkv_w + head * hd),
                        qkv_w as isize,
                        1,
                        kc.as_ptr().add(g * hd),
                        1,
                        kvw as isize,
                        scale,
                    );
                }
                for (i, row) in scores.chunks_exact_mut(keys).enumerate() {
                    math::masked_softmax_row(row, past + r0 + i + 1);
                }
                // SAFETY: as above.
                unsafe {
                    products::gemm_strided(
                        rows,
                        hd,
                        keys,
                        out_ptr.get().add(r0 * ow + head * hd),
                        ow as isize,
                        scores.as_ptr(),
                        keys as isize,
                        1,
                        vc.as_ptr().add(g * hd),
                        kvw as isize,
                        1,
                        1.0,
                    );
                }
            });
    }

    fn activate(&self, u: &mut [f32], width: usize) {
        let i = self.cfg.intermediate;
        match self.cfg.family {
            Family::Gpt2 => {
                let f = match self.cfg.activation {
                    Activation::GeluTanh => math::gelu_tanh,
                    Activation::GeluErf => math::gelu_erf,
                    Activation::Relu => math::relu,
                    Activation::Silu => silu_in_place,
                };
                u.par_chunks_mut(width).with_min_len(ROW_BLOCK).for_each(f);
            }
            Family::Llama | Family::Qwen2 => {
                u.par_chunks_mut(width)
                    .with_min_len(ROW_BLOCK)
                    .for_each(|row| {
                        let (g, up) = row.split_at_mut(i);
                        math::silu_mul(g, up);
                    });
                // Compact the activated halves into `[rows, intermediate]` for down_proj
                // (row r moves to r · i <= r · width, so a forward pass never overwrites
                // a row it has yet to move).
                let rows = u.len() / width;
                for r in 1..rows {
                    u.copy_within(r * width..r * width + i, r * i);
                }
            }
        }
    }

    /// Runs `ids` after the cached prefix; appends their keys/values to the cache and returns
    /// the NLL of each next token. The caller has validated ids, lengths and the cache shape.
    pub(crate) fn forward(&self, cache: &mut KvCache, ids: &[u32]) -> Result<Vec<f32>, LmError> {
        let r = self.forward_inner(cache, ids);
        if r.is_err() {
            cache.rollback();
        }
        r
    }

    fn forward_inner(&self, cache: &mut KvCache, ids: &[u32]) -> Result<Vec<f32>, LmError> {
        let c = &self.cfg;
        let (n, d, past) = (ids.len(), c.hidden, cache.len);
        if n == 0 {
            return Ok(Vec::new());
        }
        let hd = c.head_dim;
        let (hq, hkv) = (c.heads * hd, c.kv_heads * hd);
        let qkv_w = hq + 2 * hkv;
        let up_w = self.blocks.first().map_or(0, |b| b.up.n);

        let mut x = vec![0.0f32; n * d];
        for (row, &id) in x.chunks_exact_mut(d).zip(ids) {
            let id = id as usize;
            row.copy_from_slice(&self.embed[id * d..(id + 1) * d]);
        }
        if let Some(wpe) = &self.positions {
            for (i, row) in x.chunks_exact_mut(d).enumerate() {
                let p = past + i;
                for (a, b) in row.iter_mut().zip(&wpe[p * d..(p + 1) * d]) {
                    *a += *b;
                }
            }
        }
        let mut h = vec![0.0f32; n * d];
        let mut qkv = vec![0.0f32; n * qkv_w];
        let mut att = vec![0.0f32; n * hq];
        let mut delta = vec![0.0f32; n * d];
        let mut u = vec![0.0f32; n * up_w];
        let base_scale = if c.scale_attn_weights {
            1.0 / (hd as f32).sqrt()
        } else {
            1.0
        };

        for (l, b) in self.blocks.iter().enumerate() {
            b.norm1.apply(&x, &mut h, d);
            b.qkv.forward(&h, n, &mut qkv);
            if c.family != Family::Gpt2 {
                self.rope(&mut qkv, qkv_w, past);
            }
            let (kc, vc) = (&mut cache.k[l], &mut cache.v[l]);
            kc.reserve(n * hkv);
            vc.reserve(n * hkv);
            for row in qkv.chunks_exact(qkv_w) {
                kc.extend_from_slice(&row[hq..hq + hkv]);
                vc.extend_from_slice(&row[hq + hkv..]);
            }
            let scale = if c.scale_by_layer {
                base_scale / (l + 1) as f32
            } else {
                base_scale
            };
            self.attention(&qkv, qkv_w, kc, vc, past, n, scale, &mut att);
            b.o.forward(&att, n, &mut delta);
            add_assign(&mut x, &delta);
            b.norm2.apply(&x, &mut h, d);
            b.up.forward(&h, n, &mut u);
            self.activate(&mut u, up_w);
            b.down.forward(&u[..n * c.intermediate], n, &mut delta);
            add_assign(&mut x, &delta);
        }
        cache.len = past + n;
        if n == 1 {
            return Ok(Vec::new());
        }
        let rows = n - 1;
        self.final_norm.apply(&x[..rows * d], &mut h[..rows * d], d);
        self.nll_rows(&h[..rows * d], &ids[1..])
    }

    /// NLL of `targets[j]` under the logits of normalised hidden row `j`.
    fn nll_rows(&self, h: &[f32], targets: &[u32]) -> Result<Vec<f32>, LmError> {
        let (d, v) = (self.cfg.hidden, self.cfg.vocab_size);
        let rows = targets.len();
        let chunk = (LOGIT_FLOATS / v).clamp(1, rows);
        let mut logits = vec![0.0f32; chunk * v];
        let mut out = Vec::with_capacity(rows);
        for (hc, tc) in h.chunks(chunk * d).zip(targets.chunks(chunk)) {
            let m = tc.len();
            match &self.lm_head {
                Some(head) => head.forward(hc, m, &mut logits),
                None => products::matmul_wt(
                    hc,
                    m,
                    d,
                    &self.embed,
                    v,
                    &mut logits,
                    false,
                    rayon::current_num_threads(),
                ),
            }
            let part: Vec<f32> = logits[..m * v]
                .par_chunks(v)
                .zip(tc.par_iter())
                .map(|(row, &t)| math::nll_row(row, t as usize))
                .collect();
            out.extend(part);
        }
        Ok(out)
    }
}

fn silu_in_place(xs: &mut [f32]) {
    for x in xs.iter_mut() {
        *x /= 1.0 + (-*x).exp();
    }
}

fn add_assign(x: &mut [f32], d: &[f32]) {
    for (a, b) in x.iter_mut().zip(d) {
        *a += *b;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Q8 products stay within int8's error of the f32 product, with and without a bias.
    #[test]
    fn q8_linear_tracks_f32() {
        let (m, n, k) = (5, 37, 96);
        let mut s = 1u64;
        let mut rnd = |_| {
            s = s.wrapping_mul(6364136223846793005).wrapping_add(1);
            ((s >> 40) as f32 / (1u64 << 24) as f32) - 0.5
        };
        let w: Vec<f32> = (0..n * k).map(&mut rnd).collect();
        let x: Vec<f32> = (0..m * k).map(&mut rnd).collect();
        let b: Vec<f32> = (0..n).map(&mut rnd).collect();
        for bias in [Some(b), None] {
            let f = Linear::new(w.clone(), n, k, bias.clone(), Precision::F32);
            let mut want = vec![0.0; m * n];
            f.forward(&x, m, &mut want);
            let q = Linear::new(w.clone(), n, k, bias.clone(), Precision::Q8);
            assert!(matches!(q.w, Matrix::Q8(_)));
            let mut got = vec![0.0; m * n];
            q.forward(&x, m, &mut got);
            let err = got
                .iter()
                .zip(&want)
                .map(|(a, b)| (a - b).abs())
                .fold(0.0, f32::max);
            assert!(
                err < 0.02 && err > 0.0,
                "bias {}: max err {err}",
                bias.is_some()
            );
        }
    }
}
