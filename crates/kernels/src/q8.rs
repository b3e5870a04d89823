//! int8 × int8 → int32 matrix multiply with dynamically quantized activations, in blocks.
//!
//! Weights are quantized once at load, symmetric per output channel and block of `bs` inputs
//! (`w ≈ sw[c, b] · wq[c, k]`, `wq ∈ [-127, 127]`); activations per row and block at run time
//! (`x ≈ sa[r, b] · xq[r, k]`), stored as unsigned bytes `xq + 128`, which is what `vpdpbusd`
//! (u8 × i8) wants. Each block's integer sum `D[r, c, b] = Σ (xq + 128) · wq` is scaled and
//! added in f32, `acc += D · (sa · sw)`; the `+128` comes off at the end as one small product,
//! `Σ_b sa[r, b] · (128 · sw[c, b] · Σ_k wq[c, k])`. Blocks of 32 (GGML's Q8_0 granularity)
//! keep an outlier channel of the activations from flattening its neighbours (what a causal LM
//! needs); one block per row (`bs = 0`) is the fastest (what the encoder runs).
//!
//! One micro-kernel per tier: AVX-512 VNNI (`vpdpbusd` on 512 bits), AVX-VNNI (the same on 256
//! bits), AVX2 without VNNI (`vpmaddubsw` on `|xq|` and `sign(xq) · wq`, whose pair sums stay
//! within i16 because both factors are at most 127, then `vpmaddwd`, plus the block's `+128`
//! sums added back as integers), and portable Rust. All produce the same integer block sums
//! and apply the same f32 operations to them in the same order, so every tier gives
//! bit-identical results.
#![allow(
    unsafe_code,
    reason = "SIMD intrinsics (AVX-512, VNNI, AVX2) behind run-time CPU checks"
)]

use rayon::prelude::*;

use crate::tier::{self, Tier};

#[cfg(target_arch = "x86_64")]
pub(crate) mod amx;

/// Rows of activations per micro-kernel call.
pub const MR: usize = 6;
/// Output channels per packed panel (two 16-lane registers).
pub const NR: usize = 32;

/// The block layout shared by weights and activations of one product.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
struct Blocks {
    /// Inputs per block (a multiple of 4).
    bs: usize,
    /// Blocks per row.
    nb: usize,
}

impl Blocks {
    /// `bs == 0` or `bs >= k`: one block per row; else `bs` rounded up to a multiple of 4.
    fn new(k: usize, bs: usize) -> Self {
        let k4 = k.div_ceil(4) * 4;
        let bs = if bs == 0 || bs >= k4 {
            k4.max(4)
        } else {
            bs.div_ceil(4) * 4
        };
        Self {
            bs,
            nb: k4.div_ceil(bs).max(1),
        }
    }

    /// Padded row length.
    fn kpad(self) -> usize {
        self.bs * self.nb
    }
}

/// Weights of one linear layer, quantized and packed for the micro-kernels.
///
/// Layout: panel `p` (output channels `32p..32p+32`), then groups of four inputs, then 32
/// channels × 4 bytes. Channels past `n` and inputs past `k` are zero.
#[derive(Debug, Clone)]
pub struct PackedQ8 {
    pub n: usize,
    pub k: usize,
    blocks: Blocks,
    data: Vec<i8>,
    /// `sw[c, b]` as `[panel][block][NR]`.
    scales: Vec<f32>,
    /// `128 · Σ_{k ∈ b} wq[c, k]` as `[panel][block][NR]` (what the AVX2 kernel adds back).
    offsets: Vec<i32>,
    /// `sw[c, b] · offsets[c, b]` as `[n][block]`, the `+128` correction's right operand.
    correction: Vec<f32>,
}

impl PackedQ8 {
    /// Quantizes `w` (`[n, k]`, PyTorch's `[out, in]` layout) in blocks of `bs` inputs
    /// (0: one block per row).
    pub fn quantize(w: &[f32], n: usize, k: usize, bs: usize) -> Self {
        assert!(w.len() >= n * k);
        let blocks = Blocks::new(k, bs);
        let (kpad, nb) = (blocks.kpad(), blocks.nb);
        let panels = n.div_ceil(NR);
        let mut data = vec![0i8; panels * kpad * NR];
        let mut scales = vec![0.0f32; panels * nb * NR];
        let mut offsets = vec![0i32; panels * nb * NR];
        let mut correction = vec![0.0f32; n * nb];
        for c in 0..n {
            let row = &w[c * k..(c + 1) * k];
            let (p, lane) = (c / NR, c % NR);
            for b in 0..nb {
                let lo = (b * blocks.bs).min(k);
                let hi = ((b + 1) * blocks.bs).min(k);
                let amax = row[lo..hi].iter().fold(0.0f32, |m, x| m.max(x.abs()));
                let scale = if amax > 0.0 { amax / 127.0 } else { 1.0 };
                let mut sum = 0i32;
                for (kk, x) in row[lo..hi].iter().enumerate().map(|(i, x)| (lo + i, x)) {
                    let q = (x / scale).round().clamp(-127.0, 127.0) as i8;
                    sum += q as i32;
                    data[p * kpad * NR + (kk / 4) * NR * 4 + lane * 4 + kk % 4] = q;
                }
                let at = (p * nb + b) * NR + lane;
                scales[at] = scale;
                offsets[at] = 128 * sum;
                correction[c * nb + b] = scale * (128 * sum) as f32;
            }
        }
        Self {
            n,
            k,
            blocks,
            data,
            scales,
            offsets,
            correction,
        }
    }

    /// The block size this matrix was quantized with (what [`QuantRows::quantize`] needs).
    pub fn block_size(&self) -> usize {
        self.blocks.bs
    }

    fn panels(&self) -> usize {
        self.n.div_ceil(NR)
    }

    fn panel(&self, p: usize) -> (&[i8], &[f32], &[i32]) {
        let (kpad, nb) = (self.blocks.kpad(), self.blocks.nb);
        (
            &self.data[p * kpad * NR..(p + 1) * kpad * NR],
            &self.scales[p * nb * NR..(p + 1) * nb * NR],
            &self.offsets[p * nb * NR..(p + 1) * nb * NR],
        )
    }

    /// Bytes held (weights, scales, offsets, correction).
    pub fn bytes(&self) -> usize {
        self.data.len() + 4 * (self.scales.len() + self.offsets.len() + self.correction.len())
    }
}

/// Activations quantized per row and block: `MR`-padded rows of unsigned bytes plus scales.
#[derive(Debug, Default, Clone)]
pub struct QuantRows {
    m: usize,
    blocks: Blocks,
    data: Vec<u8>,
    /// `sa[r, b]` as `[row][block]`.
    scales: Vec<f32>,
}

impl QuantRows {
    /// Quantizes `x` (`[m, k]`) into `self` in blocks of `bs` inputs (use the weights'
    /// [`PackedQ8::block_size`]), reusing its buffers; rows are split over the current rayon
    /// pool when `threads > 1`.
    pub fn quantize(&mut self, x: &[f32], m: usize, k: usize, bs: usize, threads: usize) {
        let blocks = Blocks::new(k, bs);
        let (kpad, nb) = (blocks.kpad(), blocks.nb);
        let m_pad = m.div_ceil(MR) * MR;
        self.m = m;
        self.blocks = blocks;
        // Rows below m are rewritten whole (their padding columns set to 128, i.e. xq = 0);
        // only the padding rows are filled here, not the whole buffer.
        self.data.resize(m_pad * kpad, 128);
        self.data[m * kpad..].fill(128);
        self.scales.resize(m_pad * nb, 1.0);
        self.scales[m * nb..].fill(1.0);
        let wide = tier::math_tier(tier::current()) == Tier::Avx512;
        let job = |(dst, scales): (&mut [u8], &mut [f32]), row: &[f32]| {
            for (b, scale) in scales.iter_mut().enumerate() {
                let lo = (b * blocks.bs).min(k);
                let hi = ((b + 1) * blocks.bs).min(k);
                *scale = quantize_row(&row[lo..hi], &mut dst[lo..hi], wide);
            }
            dst[k..].fill(128);
        };
        let rows = self
            .data
            .chunks_exact_mut(kpad)
            .zip(self.scales.chunks_exact_mut(nb));
        if threads > 1 && m * k > 1 << 16 {
            rows.take(m)
                .zip(x.par_chunks_exact(k).take(m).collect::<Vec<_>>())
                .collect::<Vec<_>>()
                .into_par_iter()
                .for_each(|(d, r)| job(d, r));
        } else {
            rows.take(m)
                .zip(x.chunks_exact(k))
                .for_each(|(d, r)| job(d, r));
        }
    }
}

/// Symmetric quantization of one block to `q + 128` bytes; returns its scale. `wide`: the
/// AVX-512 build may run (same result).
fn quantize_row(row: &[f32], dst: &mut [u8], wide: bool) -> f32 {
    #[cfg(target_arch = "x86_64")]
    if wide && std::arch::is_x86_feature_detected!("avx512f") {
        // SAFETY: avx512f was just detected; the function reads `row` and writes `dst`
        // (same length) only.
        return unsafe { avx512::quantize_row(row, dst) };
    }
    let _ = wide;
    quantize_row_portable(row, dst)
}

fn quantize_row_portable(row: &[f32], dst: &mut [u8]) -> f32 {
    let amax = row.iter().fold(0.0f32, |a, v| a.max(v.abs()));
    let scale = if amax > 0.0 { amax / 127.0 } else { 1.0 };
    let inv = 1.0 / scale;
    for (d, v) in dst.iter_mut().zip(row) {
        let q = (v * inv).round_ties_even().clamp(-127.0, 127.0) as i32;
        *d = (q + 128) as u8;
    }
    scale
}

#[cfg(target_arch = "x86_64")]
mod avx512 {
    use std::arch::x86_64::*;

    /// Same result as the portable loop (round half to even, clamp to ±127, +128).
    ///
    /// # Safety
    /// Requires avx512f; `dst.len() == row.len()`.
    #[target_feature(enable = "avx512f")]
    pub unsafe fn quantize_row(row: &[f32], dst: &mut [u8]) -> f32 {
        debug_assert_eq!(row.len(), dst.len());
        let n = row.len();
        let full = n / 16 * 16;
        let p = row.as_ptr();
        // SAFETY: every 16-float load/16-byte store is inside `row` / `dst` (i + 16 <= full).
        unsafe {
            let mut m = _mm512_setzero_ps();
            let mut i = 0;
            while i < full {
                m = _mm512_max_ps(m, _mm512_abs_ps(_mm512_loadu_ps(p.add(i))));
                i += 16;
            }
            let mut amax = _mm512_reduce_max_ps(m);
            for v in &row[full..] {
                amax = amax.max(v.abs());
            }
            let scale = if amax > 0.0 { amax / 127.0 } else { 1.0 };
            let inv = 1.0 / scale;
            let vinv = _mm512_set1_ps(inv);
            let (lo, hi, off) = (
                _mm512_set1_epi32(-127),
                _mm512_set1_epi32(127),
                _mm512_set1_epi32(128),
            );
            let mut i = 0;
            while i < full {
                let y = _mm512_mul_ps(_mm512_loadu_ps(p.add(i)), vinv);
                let q = _mm512_cvt_roundps_epi32::<{ _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC }>(
                    y,
                );
                let q = _mm512_add_epi32(_mm512_min_epi32(_mm512_max_epi32(q, lo), hi), off);
                _mm512_mask_cvtepi32_storeu_epi8(dst.as_mut_ptr().add(i) as *mut i8, 0xFFFF, q);
                i += 16;
            }
            for (d, v) in dst[full..].iter_mut().zip(&row[full..]) {
                let q = (v * inv).round_ties_even().clamp(-127.0, 127.0) as i32;
                *d = (q + 128) as u8;
            }
            scale
        }
    }
}

/// Which integer kernel runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Q8Kernel {
    /// AMX tiles (`tdpbusd`, 32 rows × 32 channels per call).
    Amx,
    /// AVX-512 VNNI `vpdpbusd` on 512 bits.
    Avx512Vnni,
    /// AVX-VNNI `vpdpbusd` on 256 bits.
    AvxVnni,
    /// AVX2 `vpmaddubsw` + `vpmaddwd` (sign trick, exact).
    Avx2,
    /// Plain Rust, any CPU.
    Portable,
}

impl Q8Kernel {
    /// Every kernel, fastest first.
    pub const ALL: [Q8Kernel; 5] = [
        Q8Kernel::Amx,
        Q8Kernel::Avx512Vnni,
        Q8Kernel::AvxVnni,
        Q8Kernel::Avx2,
        Q8Kernel::Portable,
    ];

    /// The kernel for the tier in force (the CPU's best, capped by `LINGUA_KERNELS`).
    pub fn detect() -> Self {
        Self::for_tier(crate::tier::current())
    }

    /// The best kernel at or below `tier` that this CPU runs.
    pub fn for_tier(tier: Tier) -> Self {
        Self::ALL
            .into_iter()
            .find(|k| k.tier() <= tier && k.tier().supported())
            .unwrap_or(Q8Kernel::Portable)
    }

    /// The tier whose instructions the kernel needs.
    pub fn tier(self) -> Tier {
        match self {
            Q8Kernel::Amx => Tier::Amx,
            Q8Kernel::Avx512Vnni => Tier::Avx512Vnni,
            Q8Kernel::AvxVnni => Tier::AvxVnni,
            Q8Kernel::Avx2 => Tier::Avx2,
            Q8Kernel::Portable => Tier::Portable,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Q8Kernel::Amx => "int8 AMX tiles",
            Q8Kernel::Avx512Vnni => "int8 AVX-512 VNNI",
            Q8Kernel::AvxVnni => "int8 AVX-VNNI",
            Q8Kernel::Avx2 => "int8 AVX2",
            Q8Kernel::Portable => "int8 portable",
        }
    }
}

/// `out[m, n] = dequant(xq · wqᵀ) (+ bias)`, column panels split across the current rayon pool.
pub fn linear_q8(
    xq: &QuantRows,
    w: &PackedQ8,
    bias: Option<&[f32]>,
    out: &mut [f32],
    kernel: Q8Kernel,
    threads: usize,
) {
    assert_eq!(xq.blocks, w.blocks, "activation and weight blocks differ");
    let (m, n, nb) = (xq.m, w.n, w.blocks.nb);
    assert!(out.len() >= m * n && bias.is_none_or(|b| b.len() >= n));
    if m == 0 || n == 0 {
        return;
    }
    // A kernel the CPU cannot run falls back to the best one it can (same results).
    let kernel = if kernel.tier().supported() {
        kernel
    } else {
        Q8Kernel::for_tier(kernel.tier())
    };
    // The `+128` correction, `Σ_b sa[r, b] · correction[c, b]`: with several blocks one small
    // product written to `out` first (each tile then adds `bias - out` to its sums); with one
    // block per row a single multiply, done in the tile's epilogue (same rounding).
    if nb > 1 {
        crate::products::matmul_wt(
            &xq.scales[..m * nb],
            m,
            nb,
            &w.correction,
            n,
            out,
            false,
            threads,
        );
    }
    let out_ptr = crate::SendPtr(out.as_mut_ptr());
    let (kpad, bs) = (w.blocks.kpad(), w.blocks.bs);
    // Row `row` of panel `c0..c0 + cols` from its tile sums: the `+128` correction and bias.
    let finish = |row: usize, c0: usize, accr: &[f32]| {
        let cols = accr.len();
        // SAFETY: row < m and c0 + cols <= n; panels are disjoint column ranges, so no two
        // tasks touch the same element.
        let dst = unsafe { std::slice::from_raw_parts_mut(out_ptr.get().add(row * n + c0), cols) };
        // One pass over the output row (it is the largest memory traffic of the product).
        let sa = xq.scales[row * nb];
        let corr = &w.correction[c0..];
        let bias = bias.map(|b| &b[c0..c0 + cols]);
        match (nb > 1, bias) {
            (true, Some(bias)) => {
                for ((d, a), b) in dst.iter_mut().zip(accr).zip(bias) {
                    *d = (a - *d) + b;
                }
            }
            (true, None) => {
                for (d, a) in dst.iter_mut().zip(accr) {
                    *d = a - *d;
                }
            }
            (false, Some(bias)) => {
                for (((d, a), c), b) in dst.iter_mut().zip(accr).zip(corr).zip(bias) {
                    *d = (a - sa * c) + b;
                }
            }
            (false, None) => {
                for ((d, a), c) in dst.iter_mut().zip(accr).zip(corr) {
                    *d = a - sa * c;
                }
            }
        }
    };
    let run_panel = |p: usize| {
        let (bp, sw, offs) = w.panel(p);
        let c0 = p * NR;
        let cols = NR.min(n - c0);
        #[cfg(target_arch = "x86_64")]
        if kernel == Q8Kernel::Amx {
            let chunk = amx::chunk(bs);
            // SAFETY: the AMX tier was checked as supported above.
            let tiles = unsafe { amx::Tiles::load(&amx::TileConfig::new(chunk), chunk) };
            let mut acc = [0f32; amx::ROWS * NR];
            let mut tail = Vec::new();
            for r0 in (0..m).step_by(amx::ROWS) {
                let rows = amx::ROWS.min(m - r0);
                // The tiles read 32 rows: the last block's are copied out when the padded
                // activations end sooner.
                let a = match xq.data.get(r0 * kpad..(r0 + amx::ROWS) * kpad) {
                    Some(a) => a,
                    None => {
                        tail.clear();
                        tail.extend_from_slice(&xq.data[r0 * kpad..]);
                        tail.resize(amx::ROWS * kpad, 128);
                        &tail[..]
                    }
                };
                let sa = &xq.scales[r0 * nb..(r0 + rows) * nb];
                // SAFETY: AMX implies avx512f; the operands have the shapes `block` needs
                // (bs is a multiple of `chunk` by construction).
                unsafe { tiles.block(a, bp, sa, rows, sw, (kpad, bs, nb), &mut acc) };
                for r in 0..rows {
                    finish(r0 + r, c0, &acc[r * NR..r * NR + cols]);
                }
            }
            return;
        }
        let mut acc = [0f32; MR * NR];
        for rb in 0..m.div_ceil(MR) {
            let a = &xq.data[rb * MR * kpad..(rb + 1) * MR * kpad];
            let sa = &xq.scales[rb * MR * nb..(rb + 1) * MR * nb];
            let tile = Tile {
                a,
                b: bp,
                sa,
                sw,
                offs,
                kpad,
                bs,
                nb,
            };
            match kernel {
                // SAFETY (all three): the kernel's tier was checked as supported above; the
                // tile's slices have the shapes `Tile` documents.
                #[cfg(target_arch = "x86_64")]
                Q8Kernel::Avx512Vnni => unsafe { vnni::kernel(&tile, &mut acc) },
                #[cfg(target_arch = "x86_64")]
                Q8Kernel::AvxVnni => unsafe { ymm::kernel_vnni(&tile, &mut acc) },
                #[cfg(target_arch = "x86_64")]
                Q8Kernel::Avx2 => unsafe { ymm::kernel_avx2(&tile, &mut acc) },
                _ => portable_kernel(&tile, &mut acc),
            }
            for r in 0..MR.min(m - rb * MR) {
                finish(rb * MR + r, c0, &acc[r * NR..r * NR + cols]);
            }
        }
    };
    if threads > 1 {
        (0..w.panels()).into_par_iter().for_each(run_panel);
    } else {
        (0..w.panels()).for_each(run_panel);
    }
}

/// One micro-kernel call's operands.
struct Tile<'a> {
    /// `MR` rows of `kpad` activation bytes.
    a: &'a [u8],
    /// The panel: `kpad / 4` groups of `NR × 4` weight bytes.
    b: &'a [i8],
    /// `MR` rows of `nb` activation scales.
    sa: &'a [f32],
    /// `nb` blocks of `NR` weight scales.
    sw: &'a [f32],
    /// `nb` blocks of `NR` `+128` sums.
    offs: &'a [i32],
    kpad: usize,
    bs: usize,
    nb: usize,
}

/// `acc[r, c] = Σ_b D[r, c, b] · (sa[r, b] · sw[b, c])` over one MR × NR tile, in plain Rust;
/// the order of the f32 operations is what every SIMD kernel does too.
fn portable_kernel(t: &Tile, acc: &mut [f32; MR * NR]) {
    acc.fill(0.0);
    let mut d = [0i32; MR * NR];
    for blk in 0..t.nb {
        d.fill(0);
        for kq in blk * t.bs / 4..(blk + 1) * t.bs / 4 {
            let bq = &t.b[kq * NR * 4..(kq + 1) * NR * 4];
            for r in 0..MR {
                let ar = &t.a[r * t.kpad + kq * 4..r * t.kpad + kq * 4 + 4];
                for (c, d) in d[r * NR..(r + 1) * NR].iter_mut().enumerate() {
                    let bc = &bq[c * 4..c * 4 + 4];
                    *d += ar[0] as i32 * bc[0] as i32
                        + ar[1] as i32 * bc[1] as i32
                        + ar[2] as i32 * bc[2] as i32
                        + ar[3] as i32 * bc[3] as i32;
                }
            }
        }
        let sw = &t.sw[blk * NR..(blk + 1) * NR];
        for r in 0..MR {
            let sa = t.sa[r * t.nb + blk];
            for c in 0..NR {
                let a = &mut acc[r * NR + c];
                *a = (d[r * NR + c] as f32).mul_add(sa * sw[c], *a);
            }
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod vnni {
    use std::arch::x86_64::*;

    use super::{MR, NR, Tile};

    /// One MR × 32 tile: 12 integer and 12 f32 accumulators, two weight registers, two scale
    /// registers, one broadcast.
    ///
    /// # Safety
    /// The CPU must support avx512f, avx512bw and avx512vnni; `t` has the shapes `Tile` names.
    #[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
    pub unsafe fn kernel(t: &Tile, acc: &mut [f32; MR * NR]) {
        debug_assert!(t.a.len() >= MR * t.kpad && t.b.len() >= t.kpad * NR);
        debug_assert!(t.sa.len() >= MR * t.nb && t.sw.len() >= t.nb * NR);
        let (ap, bp) = (t.a.as_ptr(), t.b.as_ptr());
        let mut f = [[_mm512_setzero_ps(); 2]; MR];
        for blk in 0..t.nb {
            let mut c = [[_mm512_setzero_si512(); 2]; MR];
            for kq in blk * t.bs / 4..(blk + 1) * t.bs / 4 {
                // SAFETY: kq * 128 + 128 <= b.len() and r * kpad + kq * 4 + 4 <= a.len().
                unsafe {
                    let b0 = _mm512_loadu_si512(bp.add(kq * 128) as *const __m512i);
                    let b1 = _mm512_loadu_si512(bp.add(kq * 128 + 64) as *const __m512i);
                    for (r, cr) in c.iter_mut().enumerate() {
                        let av = _mm512_set1_epi32(
                            (ap.add(r * t.kpad + kq * 4) as *const i32).read_unaligned(),
                        );
                        cr[0] = _mm512_dpbusd_epi32(cr[0], av, b0);
                        cr[1] = _mm512_dpbusd_epi32(cr[1], av, b1);
                    }
                }
            }
            // SAFETY: blk * NR + 32 <= sw.len().
            let (s0, s1) = unsafe {
                (
                    _mm512_loadu_ps(t.sw.as_ptr().add(blk * NR)),
                    _mm512_loadu_ps(t.sw.as_ptr().add(blk * NR + 16)),
                )
            };
            for (r, (fr, cr)) in f.iter_mut().zip(&c).enumerate() {
                let sa = _mm512_set1_ps(t.sa[r * t.nb + blk]);
                fr[0] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(cr[0]), _mm512_mul_ps(sa, s0), fr[0]);
                fr[1] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(cr[1]), _mm512_mul_ps(sa, s1), fr[1]);
            }
        }
        for (r, fr) in f.iter().enumerate() {
            // SAFETY: acc has MR * NR elements; each row stores 32 of them.
            unsafe {
                let dst = acc.as_mut_ptr().add(r * NR);
                _mm512_storeu_ps(dst, fr[0]);
                _mm512_storeu_ps(dst.add(16), fr[1]);
            }
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod ymm {
    use std::arch::x86_64::*;

    use super::{MR, NR, Tile};

    /// One MR × 32 tile, one row at a time: 4 integer and 4 f32 accumulators of 8 channels,
    /// 4 weight registers and the broadcasts fit the 16 ymm registers. `SIGNED`: the AVX2
    /// kernel (sums of `xq · wq`, the block's `+128` sums added back as integers); else the
    /// AVX-VNNI kernel (sums of `(xq + 128) · wq`).
    ///
    /// # Safety
    /// The CPU must support avx2 and fma, plus avxvnni when `!SIGNED`; `t` has the shapes
    /// `Tile` names (activation bytes `xq + 128` are never 0, so `xq >= -127`).
    #[inline(always)]
    unsafe fn tile<const SIGNED: bool>(t: &Tile, acc: &mut [f32; MR * NR]) {
        let (ap, bp) = (t.a.as_ptr(), t.b.as_ptr());
        // SAFETY: the caller enabled the instructions; every load is in bounds:
        // kq * 128 + 128 <= b.len(), r * kpad + kq * 4 + 4 <= a.len(), blk * NR + 8 * j + 8 <=
        // sw.len() == offs.len(), and each store writes 8 lanes of row r < MR of `acc`.
        unsafe {
            let flip = _mm256_set1_epi8(i8::MIN);
            let ones = _mm256_set1_epi16(1);
            for r in 0..MR {
                let mut f = [_mm256_setzero_ps(); 4];
                for blk in 0..t.nb {
                    let mut c = [_mm256_setzero_si256(); 4];
                    for kq in blk * t.bs / 4..(blk + 1) * t.bs / 4 {
                        let av = _mm256_set1_epi32(
                            (ap.add(r * t.kpad + kq * 4) as *const i32).read_unaligned(),
                        );
                        let b = |j: usize| {
                            _mm256_loadu_si256(bp.add(kq * 128 + 32 * j) as *const __m256i)
                        };
                        if SIGNED {
                            // (xq + 128) ^ 0x80 is xq as a signed byte.
                            let sa = _mm256_xor_si256(av, flip);
                            let abs = _mm256_abs_epi8(sa);
                            for (j, cj) in c.iter_mut().enumerate() {
                                let p16 = _mm256_maddubs_epi16(abs, _mm256_sign_epi8(b(j), sa));
                                *cj = _mm256_add_epi32(*cj, _mm256_madd_epi16(p16, ones));
                            }
                        } else {
                            for (j, cj) in c.iter_mut().enumerate() {
                                *cj = _mm256_dpbusd_avx_epi32(*cj, av, b(j));
                            }
                        }
                    }
                    let sa = _mm256_set1_ps(t.sa[r * t.nb + blk]);
                    for (j, (fj, cj)) in f.iter_mut().zip(c).enumerate() {
                        let at = blk * NR + 8 * j;
                        let d = if SIGNED {
                            let o = _mm256_loadu_si256(t.offs.as_ptr().add(at) as *const __m256i);
                            _mm256_add_epi32(cj, o)
                        } else {
                            cj
                        };
                        let s = _mm256_mul_ps(sa, _mm256_loadu_ps(t.sw.as_ptr().add(at)));
                        *fj = _mm256_fmadd_ps(_mm256_cvtepi32_ps(d), s, *fj);
                    }
                }
                for (j, fj) in f.iter().enumerate() {
                    _mm256_storeu_ps(acc.as_mut_ptr().add(r * NR + 8 * j), *fj);
                }
            }
        }
    }

    /// # Safety
    /// As [`tile`] with avx2, fma and avxvnni.
    #[target_feature(enable = "avx2,fma,avxvnni")]
    pub unsafe fn kernel_vnni(t: &Tile, acc: &mut [f32; MR * NR]) {
        // SAFETY: forwarded.
        unsafe { tile::<false>(t, acc) }
    }

    /// # Safety
    /// As [`tile`] with avx2 and fma.
    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn kernel_avx2(t: &Tile, acc: &mut [f32; MR * NR]) {
        // SAFETY: forwarded.
        unsafe { tile::<true>(t, acc) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lcg(seed: &mut u64) -> f32 {
        *seed = seed
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        ((*seed >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
    }

    /// Every kernel this CPU runs gives the portable kernel's bits; the result is within
    /// int8's error of the f32 product. Returns the worst error.
    fn case(m: usize, k: usize, n: usize, bs: usize, outlier: bool) -> f32 {
        let mut s = 7u64;
        let mut x: Vec<f32> = (0..m * k).map(|_| lcg(&mut s)).collect();
        if outlier {
            // one input channel 50 times the others, as a causal LM's residual stream has
            for r in 0..m {
                x[r * k + k / 3] *= 50.0;
            }
        }
        let w: Vec<f32> = (0..n * k).map(|_| lcg(&mut s) * 0.1).collect();
        let bias: Vec<f32> = (0..n).map(|_| lcg(&mut s)).collect();
        let packed = PackedQ8::quantize(&w, n, k, bs);
        let mut q = QuantRows::default();
        q.quantize(&x, m, k, packed.block_size(), 2);
        let mut portable = vec![0.0; m * n];
        linear_q8(
            &q,
            &packed,
            Some(&bias),
            &mut portable,
            Q8Kernel::Portable,
            1,
        );
        for kernel in Q8Kernel::ALL {
            if kernel.tier().supported() {
                let mut fast = vec![0.0; m * n];
                linear_q8(&q, &packed, Some(&bias), &mut fast, kernel, 2);
                assert!(
                    portable
                        .iter()
                        .zip(&fast)
                        .all(|(a, b)| a.to_bits() == b.to_bits()),
                    "m={m} k={k} n={n} bs={bs}: {kernel:?} differs from portable"
                );
            }
        }
        let mut exact = vec![0.0; m * n];
        crate::products::linear_f32(&x, m, k, &w, n, &bias, &mut exact, 1);
        let worst = exact
            .iter()
            .zip(&portable)
            .fold(0.0f32, |w, (a, b)| w.max((a - b).abs()));
        if !outlier {
            // |x| <= 1, |w| <= 0.1: the product has spread ~0.06·sqrt(k); int8 error is ~1%.
            let tol = 0.02 * (k as f32).sqrt() * 0.06 + 1e-3;
            assert!(
                worst < tol,
                "m={m} k={k} n={n} bs={bs}: q8 error {worst} above {tol}"
            );
        }
        worst
    }

    #[test]
    fn quantize_paths_agree() {
        let mut s = 11u64;
        // Include exact halves (x · inv = k + 0.5) to pin the rounding mode.
        let mut row: Vec<f32> = (0..1000).map(|_| lcg(&mut s) * 3.0).collect();
        row[3] = 127.0;
        row[5] = 0.5;
        row[6] = 1.5;
        row[7] = -2.5;
        let mut a = vec![0u8; row.len()];
        let mut b = vec![0u8; row.len()];
        let sa = quantize_row(&row, &mut a, true);
        let sb = quantize_row_portable(&row, &mut b);
        assert_eq!(sa, sb);
        assert_eq!(a, b);
        assert_eq!((a[5], a[6], a[7]), (128, 130, 126));
    }

    /// Extreme values: every activation at ±127 and every weight at ±127 is where a 16-bit
    /// pair sum would saturate if the AVX2 kernel did not take `|xq|`.
    #[test]
    fn extremes_do_not_saturate() {
        let (m, k, n) = (13, 64, 40);
        let x: Vec<f32> = (0..m * k)
            .map(|i| if i % 3 == 0 { -1.0 } else { 1.0 })
            .collect();
        let w: Vec<f32> = (0..n * k)
            .map(|i| if i % 5 == 0 { -1.0 } else { 1.0 })
            .collect();
        let bias = vec![0.0; n];
        let mut exact = vec![0.0; m * n];
        crate::products::linear_f32(&x, m, k, &w, n, &bias, &mut exact, 1);
        for bs in [0, 32] {
            let packed = PackedQ8::quantize(&w, n, k, bs);
            let mut q = QuantRows::default();
            q.quantize(&x, m, k, packed.block_size(), 1);
            for kernel in Q8Kernel::ALL {
                if kernel.tier().supported() {
                    let mut out = vec![0.0; m * n];
                    linear_q8(&q, &packed, None, &mut out, kernel, 1);
                    for (a, b) in exact.iter().zip(&out) {
                        assert!((a - b).abs() < 1e-3, "{kernel:?} bs={bs}: {a} vs {b}");
                    }
                }
            }
        }
    }

    #[test]
    fn q8_matches_f32_and_kernels_agree() {
        for bs in [0, 32, 64] {
            case(1, 4, 32, bs, false);
            case(13, 70, 45, bs, false);
            case(30, 768, 96, bs, false);
            case(25, 257, 33, bs, false);
            // several 32-row blocks of the AMX kernel and a short last one
            case(70, 300, 70, bs, false);
        }
    }

    /// A reused buffer (larger, different shape before) quantizes as a fresh one does:
    /// padding rows and columns are reset, not left from the last call.
    #[test]
    fn reused_rows_match_fresh() {
        let mut s = 3u64;
        let big: Vec<f32> = (0..40 * 300).map(|_| lcg(&mut s) * 9.0).collect();
        let small: Vec<f32> = (0..13 * 70).map(|_| lcg(&mut s)).collect();
        for bs in [0, 32] {
            let mut reused = QuantRows::default();
            reused.quantize(&big, 40, 300, bs, 1);
            reused.quantize(&small, 13, 70, bs, 1);
            let mut fresh = QuantRows::default();
            fresh.quantize(&small, 13, 70, bs, 1);
            assert_eq!(reused.blocks, fresh.blocks);
            let len = fresh.data.len();
            assert_eq!(reused.data[..len], fresh.data[..], "bs={bs}");
            assert_eq!(reused.scales[..fresh.scales.len()], fresh.scales[..]);
        }
    }

    /// An outlier input channel costs a whole row of precision with one scale per row; blocks
    /// of 32 confine it to its block.
    #[test]
    fn blocks_contain_an_outlier_channel() {
        let per_row = case(12, 576, 64, 0, true);
        let blocked = case(12, 576, 64, 32, true);
        assert!(
            blocked * 4.0 < per_row,
            "blocks of 32: worst error {blocked}, one block per row: {per_row}"
        );
    }
}
