//! bf16 × bf16 → f32 products (`precision = "bf16"`): weights rounded to bf16 once at load,
//! activations at each product, sums in f32, in one order that every tier reproduces bit for
//! bit.
//!
//! The order is what AVX512_BF16's `vdpbf16ps` does (checked against it on random data): one
//! f32 accumulator per output, starting at +0; for each pair of inputs `(2i, 2i + 1)` first
//! `acc += x[2i+1] · w[2i+1]`, then `acc += x[2i] · w[2i]`, each sum rounded to nearest even.
//! A product of two bf16 values has at most 16 significant bits, so it is exact in f32: a fused
//! multiply-add (AVX-512F, AVX2) and a multiply then an add (portable) give the same sums as
//! `vdpbf16ps`. That instruction flushes denormals to zero; values below 2^-50 are flushed on
//! the way in ([`to_bf16`]), so every product is at least 2^-100, every sum a multiple of
//! 2^-123, and no value ever reaches the denormal range where the flush would act.
//!
//! AMX-BF16 (`tdpbf16ps`) is not used: on a Sapphire Rapids its tile sums matched no sequential
//! order (a third of random 32-term sums differed from each candidate), so no other tier could
//! reproduce it, and a replica on another CPU would compress differently.
#![allow(
    unsafe_code,
    reason = "SIMD intrinsics (AVX512_BF16, AVX-512F, AVX2) behind run-time CPU checks"
)]

use rayon::prelude::*;

use crate::tier::Tier;

/// Rows of activations per micro-kernel call.
pub const MR: usize = 12;
/// Output channels per packed panel (two 16-lane registers).
pub const NR: usize = 32;

/// Magnitudes below 2^-50 become zero (see the module header).
const FLUSH_BELOW: u32 = (127 - 50) << 23;

/// `x` rounded to bf16 (nearest, ties to even), with magnitudes below 2^-50 flushed to +0 and
/// NaN kept a (quiet) NaN.
#[inline(always)]
pub fn to_bf16(x: f32) -> u16 {
    let b = x.to_bits();
    let a = b & 0x7fff_ffff;
    let rounded = (b.wrapping_add(0x7fff + ((b >> 16) & 1)) >> 16) as u16;
    if a > 0x7f80_0000 {
        ((b >> 16) | 0x40) as u16
    } else if a < FLUSH_BELOW {
        0
    } else {
        rounded
    }
}

/// The f32 value of a bf16.
#[inline(always)]
pub fn from_bf16(h: u16) -> f32 {
    f32::from_bits((h as u32) << 16)
}

/// Pairs `(x[2i], x[2i + 1])` as one word each, the low half first (what `vdpbf16ps` reads);
/// a missing last element is zero.
#[inline(always)]
fn pack_pairs(src: &[f32], dst: &mut [u32]) {
    let pairs = src.chunks_exact(2);
    let last = pairs.remainder().first().map(|x| to_bf16(*x) as u32);
    let (full, rest) = dst.split_at_mut(src.len() / 2);
    for (p, x) in full.iter_mut().zip(pairs) {
        *p = to_bf16(x[0]) as u32 | (to_bf16(x[1]) as u32) << 16;
    }
    if let (Some(p), Some(x)) = (rest.first_mut(), last) {
        *p = x;
    }
}

/// Weights of one linear layer in bf16, packed for the micro-kernels.
///
/// Layout: panel `p` (output channels `32p..32p+32`), then pairs of inputs, then 32 channels ×
/// one word (two bf16). Channels past `n` and inputs past `k` are zero.
#[derive(Debug, Clone)]
pub struct PackedBf16 {
    pub n: usize,
    pub k: usize,
    data: Vec<u32>,
}

impl PackedBf16 {
    /// Rounds `w` (`[n, k]`, PyTorch's `[out, in]` layout) to bf16 and packs it.
    pub fn pack(w: &[f32], n: usize, k: usize) -> Self {
        assert!(w.len() >= n * k);
        let kp = k.div_ceil(2);
        let panels = n.div_ceil(NR);
        let mut data = vec![0u32; panels * kp * NR];
        let mut pairs = vec![0u32; kp];
        for c in 0..n {
            pack_pairs(&w[c * k..(c + 1) * k], &mut pairs);
            let (p, lane) = (c / NR, c % NR);
            for (q, v) in pairs.iter().enumerate() {
                data[(p * kp + q) * NR + lane] = *v;
            }
        }
        Self { n, k, data }
    }

    fn pairs(&self) -> usize {
        self.k.div_ceil(2)
    }

    fn panels(&self) -> usize {
        self.n.div_ceil(NR)
    }

    fn panel(&self, p: usize) -> &[u32] {
        let kp = self.pairs();
        &self.data[p * kp * NR..(p + 1) * kp * NR]
    }

    /// Bytes held.
    pub fn bytes(&self) -> usize {
        4 * self.data.len()
    }
}

/// Activations rounded to bf16, `MR`-padded rows: as packed pairs for `vdpbf16ps`, or widened
/// back to f32 (the same values) for the kernels that multiply in f32, which then broadcast
/// straight from memory.
#[derive(Debug, Default, Clone)]
pub struct Bf16Rows {
    m: usize,
    kp: usize,
    /// Whether `data` holds packed pairs (one word each) rather than widened values (two).
    packed: bool,
    data: Vec<u32>,
}

impl Bf16Rows {
    /// Rounds `x` (`[m, k]`) into `self` in the form `kernel` reads, reusing its buffers; rows
    /// are split over the current rayon pool when `threads > 1`.
    pub fn convert(&mut self, x: &[f32], m: usize, k: usize, kernel: Bf16Kernel, threads: usize) {
        let kp = k.div_ceil(2);
        let packed = kernel.resolve() == Bf16Kernel::Avx512Bf16;
        let width = if packed { kp } else { 2 * kp };
        let m_pad = m.div_ceil(MR) * MR;
        self.m = m;
        self.kp = kp;
        self.packed = packed;
        self.data.resize(m_pad * width, 0);
        self.data[m * width..].fill(0);
        // (the AVX-512 tier implies avx512f and avx512bw)
        let wide = crate::tier::math_tier(crate::tier::current()) == Tier::Avx512;
        let job = |(dst, row): (&mut [u32], &[f32])| {
            #[cfg(target_arch = "x86_64")]
            if wide {
                // SAFETY: the AVX-512 tier is supported, so avx512f and avx512bw are present.
                unsafe { round_row_avx512(row, dst, packed) };
                return;
            }
            #[cfg(not(target_arch = "x86_64"))]
            let _ = wide;
            round_row(row, dst, packed)
        };
        let rows = self
            .data
            .chunks_exact_mut(width)
            .zip(x.chunks_exact(k))
            .take(m);
        if threads > 1 && m * k > 1 << 16 {
            rows.collect::<Vec<_>>().into_par_iter().for_each(job);
        } else {
            rows.for_each(job);
        }
    }
}

/// One row of activations in the form [`Bf16Rows`] holds (padding included).
#[inline(always)]
fn round_row(src: &[f32], dst: &mut [u32], packed: bool) {
    if packed {
        return pack_pairs(src, dst);
    }
    let (vals, pad) = dst.split_at_mut(src.len());
    for (d, x) in vals.iter_mut().zip(src) {
        *d = (to_bf16(*x) as u32) << 16;
    }
    pad.fill(0);
}

/// [`round_row`] compiled for AVX-512 (the same integer operations, 16 lanes at a time).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bw")]
fn round_row_avx512(src: &[f32], dst: &mut [u32], packed: bool) {
    round_row(src, dst, packed)
}

/// Which bf16 kernel runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Bf16Kernel {
    /// AVX512_BF16 `vdpbf16ps`.
    Avx512Bf16,
    /// AVX-512F fused multiply-adds on the widened pairs.
    Avx512,
    /// AVX2 + FMA, the same on 256 bits.
    Avx2,
    /// Plain Rust, any CPU.
    Portable,
}

impl Bf16Kernel {
    /// Every kernel, fastest first.
    pub const ALL: [Bf16Kernel; 4] = [
        Bf16Kernel::Avx512Bf16,
        Bf16Kernel::Avx512,
        Bf16Kernel::Avx2,
        Bf16Kernel::Portable,
    ];

    /// The kernel for the tier in force (the CPU's best, capped by `LINGUA_KERNELS`).
    pub fn detect() -> Self {
        Self::for_tier(crate::tier::current())
    }

    /// The best kernel at or below `tier` that this CPU runs. Where both `vdpbf16ps` and the
    /// widened AVX-512F kernel run, the faster on a small product, timed once per process:
    /// Sapphire Rapids issues `vdpbf16ps` at half the rate of an f32 FMA (so the widened
    /// kernel wins there), Zen 4 at the full rate on twice the work. Both give the same bits.
    pub fn for_tier(tier: Tier) -> Self {
        let best = Self::ALL
            .into_iter()
            .find(|k| k.tier() <= tier && k.tier().supported())
            .unwrap_or(Bf16Kernel::Portable);
        if best == Bf16Kernel::Avx512Bf16 && Bf16Kernel::Avx512.tier().supported() {
            static FASTER: std::sync::OnceLock<Bf16Kernel> = std::sync::OnceLock::new();
            return *FASTER.get_or_init(|| faster(Bf16Kernel::Avx512Bf16, Bf16Kernel::Avx512));
        }
        best
    }

    /// This kernel if the CPU runs it, else the best one it does (same results).
    pub fn resolve(self) -> Self {
        if self.tier().supported() {
            self
        } else {
            Self::for_tier(self.tier())
        }
    }

    /// The tier whose instructions the kernel needs.
    pub fn tier(self) -> Tier {
        match self {
            Bf16Kernel::Avx512Bf16 => Tier::Avx512Bf16,
            Bf16Kernel::Avx512 => Tier::Avx512,
            Bf16Kernel::Avx2 => Tier::Avx2,
            Bf16Kernel::Portable => Tier::Portable,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Bf16Kernel::Avx512Bf16 => "bf16 AVX512_BF16",
            Bf16Kernel::Avx512 => "bf16 AVX-512F (widened)",
            Bf16Kernel::Avx2 => "bf16 AVX2+FMA (widened)",
            Bf16Kernel::Portable => "bf16 portable",
        }
    }
}

/// `out[m, n] = x · wᵀ (+ bias)` in bf16 with f32 sums, column panels split across the current
/// rayon pool.
pub fn linear_bf16(
    x: &Bf16Rows,
    w: &PackedBf16,
    bias: Option<&[f32]>,
    out: &mut [f32],
    kernel: Bf16Kernel,
    threads: usize,
) {
    assert_eq!(x.kp, w.pairs(), "activation and weight widths differ");
    let (m, n, kp) = (x.m, w.n, x.kp);
    assert!(out.len() >= m * n && bias.is_none_or(|b| b.len() >= n));
    if m == 0 || n == 0 {
        return;
    }
    let kernel = kernel.resolve();
    assert_eq!(
        x.packed,
        kernel == Bf16Kernel::Avx512Bf16,
        "activations converted for another kernel"
    );
    let width = if x.packed { kp } else { 2 * kp };
    let out_ptr = crate::SendPtr(out.as_mut_ptr());
    let run_panel = |p: usize| {
        let b = w.panel(p);
        let c0 = p * NR;
        let cols = NR.min(n - c0);
        let bias = bias.map(|b| &b[c0..c0 + cols]);
        let mut acc = [0f32; MR * NR];
        for rb in 0..m.div_ceil(MR) {
            let a = &x.data[rb * MR * width..(rb + 1) * MR * width];
            match kernel {
                // SAFETY (all three): the kernel's tier was checked as supported above; `a`
                // holds MR rows of `kp` pairs (packed) or `2 kp` values (widened, the others)
                // and `b` kp groups of NR pairs.
                #[cfg(target_arch = "x86_64")]
                Bf16Kernel::Avx512Bf16 => unsafe { x86::kernel_bf16(a, b, kp, &mut acc) },
                #[cfg(target_arch = "x86_64")]
                Bf16Kernel::Avx512 => unsafe { x86::kernel_avx512(a, b, kp, &mut acc) },
                #[cfg(target_arch = "x86_64")]
                Bf16Kernel::Avx2 => unsafe { x86::kernel_avx2(a, b, kp, &mut acc) },
                _ => portable_kernel(a, b, kp, &mut acc),
            }
            for r in 0..MR.min(m - rb * MR) {
                let row = rb * MR + r;
                // SAFETY: row < m and c0 + cols <= n; panels are disjoint column ranges, so
                // no two tasks touch the same element.
                let dst = unsafe {
                    std::slice::from_raw_parts_mut(out_ptr.get().add(row * n + c0), cols)
                };
                let sums = &acc[r * NR..r * NR + cols];
                match bias {
                    Some(bias) => {
                        for ((d, s), b) in dst.iter_mut().zip(sums).zip(bias) {
                            *d = s + b;
                        }
                    }
                    None => dst.copy_from_slice(sums),
                }
            }
        }
    };
    if threads > 1 {
        (0..w.panels()).into_par_iter().for_each(run_panel);
    } else {
        (0..w.panels()).for_each(run_panel);
    }
}

/// The odd (high) and even (low) element of a pair, widened to f32.
#[inline(always)]
fn halves(p: u32) -> (f32, f32) {
    (f32::from_bits(p & 0xffff_0000), f32::from_bits(p << 16))
}

/// Which of two kernels runs a small product faster here (best of five runs each).
fn faster(a: Bf16Kernel, b: Bf16Kernel) -> Bf16Kernel {
    let (m, n, k) = (48, 128, 512);
    let w: Vec<f32> = (0..n * k)
        .map(|i| ((i % 97) as f32 - 48.0) / 64.0)
        .collect();
    let x: Vec<f32> = (0..m * k)
        .map(|i| ((i % 89) as f32 - 44.0) / 32.0)
        .collect();
    let packed = PackedBf16::pack(&w, n, k);
    let mut out = vec![0.0f32; m * n];
    let mut time = |kernel: Bf16Kernel| {
        let mut rows = Bf16Rows::default();
        rows.convert(&x, m, k, kernel, 1);
        (0..5)
            .map(|_| {
                let t = std::time::Instant::now();
                linear_bf16(&rows, &packed, None, &mut out, kernel, 1);
                t.elapsed()
            })
            .min()
            .unwrap_or_default()
    };
    let (ta, tb) = (time(a), time(b));
    if ta <= tb { a } else { b }
}

/// `acc[r, c] = Σ` over pairs, odd element first, in plain Rust: the order every kernel keeps.
fn portable_kernel(a: &[u32], b: &[u32], kp: usize, acc: &mut [f32; MR * NR]) {
    acc.fill(0.0);
    for q in 0..kp {
        let bq = &b[q * NR..(q + 1) * NR];
        for r in 0..MR {
            let (xo, xe) = (
                f32::from_bits(a[r * 2 * kp + 2 * q + 1]),
                f32::from_bits(a[r * 2 * kp + 2 * q]),
            );
            for (s, w) in acc[r * NR..(r + 1) * NR].iter_mut().zip(bq) {
                let (wo, we) = halves(*w);
                // Each product is exact (see the module header): one rounding per sum.
                *s += xo * wo;
                *s += xe * we;
            }
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use super::{MR, NR};
    use std::arch::x86_64::*;

    /// `vdpbf16ps`: MR rows × 32 channels.
    ///
    /// # Safety
    /// Requires avx512f and avx512bf16; `a` holds MR rows of `kp` pairs, `b` `kp` × NR pairs.
    #[target_feature(enable = "avx512f,avx512bf16")]
    pub unsafe fn kernel_bf16(a: &[u32], b: &[u32], kp: usize, acc: &mut [f32; MR * NR]) {
        debug_assert!(a.len() >= MR * kp && b.len() >= kp * NR);
        let mut s = [[_mm512_setzero_ps(); 2]; MR];
        let (ap, bp) = (a.as_ptr(), b.as_ptr());
        for q in 0..kp {
            // SAFETY: q < kp, so the loads stay inside `b` and `a` (checked above).
            unsafe {
                let w0: __m512bh = std::mem::transmute(_mm512_loadu_si512(bp.add(q * NR) as _));
                let w1: __m512bh =
                    std::mem::transmute(_mm512_loadu_si512(bp.add(q * NR + 16) as _));
                for (r, s) in s.iter_mut().enumerate() {
                    let x: __m512bh =
                        std::mem::transmute(_mm512_set1_epi32(*ap.add(r * kp + q) as i32));
                    s[0] = _mm512_dpbf16_ps(s[0], x, w0);
                    s[1] = _mm512_dpbf16_ps(s[1], x, w1);
                }
            }
        }
        for (r, s) in s.iter().enumerate() {
            // SAFETY: acc has MR × NR floats.
            unsafe {
                _mm512_storeu_ps(acc.as_mut_ptr().add(r * NR), s[0]);
                _mm512_storeu_ps(acc.as_mut_ptr().add(r * NR + 16), s[1]);
            }
        }
    }

    /// The pairs widened to f32 and summed with fused multiply-adds, odd element first.
    ///
    /// # Safety
    /// Requires avx512f; `a` holds MR rows of `2 kp` widened values, `b` `kp` × NR pairs.
    #[target_feature(enable = "avx512f")]
    pub unsafe fn kernel_avx512(a: &[u32], b: &[u32], kp: usize, acc: &mut [f32; MR * NR]) {
        debug_assert!(a.len() >= MR * 2 * kp && b.len() >= kp * NR);
        let mut s = [[_mm512_setzero_ps(); 2]; MR];
        let (ap, bp) = (a.as_ptr(), b.as_ptr());
        let hi = _mm512_set1_epi32(0xffff_0000u32 as i32);
        for q in 0..kp {
            // SAFETY: as in `kernel_bf16`.
            unsafe {
                let w0 = _mm512_loadu_si512(bp.add(q * NR) as _);
                let w1 = _mm512_loadu_si512(bp.add(q * NR + 16) as _);
                let (w0o, w0e) = (
                    _mm512_castsi512_ps(_mm512_and_si512(w0, hi)),
                    _mm512_castsi512_ps(_mm512_slli_epi32::<16>(w0)),
                );
                let (w1o, w1e) = (
                    _mm512_castsi512_ps(_mm512_and_si512(w1, hi)),
                    _mm512_castsi512_ps(_mm512_slli_epi32::<16>(w1)),
                );
                for (r, s) in s.iter_mut().enumerate() {
                    let x = ap.add(r * 2 * kp + 2 * q) as *const f32;
                    let (xo, xe) = (_mm512_set1_ps(*x.add(1)), _mm512_set1_ps(*x));
                    s[0] = _mm512_fmadd_ps(xo, w0o, s[0]);
                    s[1] = _mm512_fmadd_ps(xo, w1o, s[1]);
                    s[0] = _mm512_fmadd_ps(xe, w0e, s[0]);
                    s[1] = _mm512_fmadd_ps(xe, w1e, s[1]);
                }
            }
        }
        for (r, s) in s.iter().enumerate() {
            // SAFETY: acc has MR × NR floats.
            unsafe {
                _mm512_storeu_ps(acc.as_mut_ptr().add(r * NR), s[0]);
                _mm512_storeu_ps(acc.as_mut_ptr().add(r * NR + 16), s[1]);
            }
        }
    }

    /// As [`kernel_avx512`] on 256 bits, eight channels at a time.
    ///
    /// # Safety
    /// Requires avx2 and fma; shapes as [`kernel_avx512`].
    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn kernel_avx2(a: &[u32], b: &[u32], kp: usize, acc: &mut [f32; MR * NR]) {
        debug_assert!(a.len() >= MR * 2 * kp && b.len() >= kp * NR);
        let (ap, bp) = (a.as_ptr(), b.as_ptr());
        let hi = _mm256_set1_epi32(0xffff_0000u32 as i32);
        for g in 0..NR / 8 {
            let mut s = [_mm256_setzero_ps(); MR];
            for q in 0..kp {
                // SAFETY: as in `kernel_bf16` (g * 8 + 8 <= NR).
                unsafe {
                    let w = _mm256_loadu_si256(bp.add(q * NR + g * 8) as _);
                    let wo = _mm256_castsi256_ps(_mm256_and_si256(w, hi));
                    let we = _mm256_castsi256_ps(_mm256_slli_epi32::<16>(w));
                    for (r, s) in s.iter_mut().enumerate() {
                        let x = ap.add(r * 2 * kp + 2 * q) as *const f32;
                        *s = _mm256_fmadd_ps(_mm256_set1_ps(*x.add(1)), wo, *s);
                        *s = _mm256_fmadd_ps(_mm256_set1_ps(*x), we, *s);
                    }
                }
            }
            for (r, s) in s.iter().enumerate() {
                // SAFETY: acc has MR × NR floats; g * 8 + 8 <= NR.
                unsafe { _mm256_storeu_ps(acc.as_mut_ptr().add(r * NR + g * 8), *s) };
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lcg(seed: &mut u64) -> f32 {
        *seed = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        ((*seed >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
    }

    #[test]
    fn rounding_is_nearest_even_with_flush_and_nan() {
        assert_eq!(to_bf16(1.0), 0x3f80);
        // 1 + 2^-8 is halfway between two bf16 values: ties to the even one (1.0).
        assert_eq!(to_bf16(1.0 + 2f32.powi(-8)), 0x3f80);
        // 1 + 3·2^-8 is halfway too: the even neighbour is above.
        assert_eq!(to_bf16(1.0 + 3.0 * 2f32.powi(-8)), 0x3f82);
        assert_eq!(to_bf16(-2.5), 0xc020);
        assert_eq!(to_bf16(2f32.powi(-51)), 0);
        assert_eq!(to_bf16(-(2f32.powi(-51))), 0);
        assert_eq!(from_bf16(to_bf16(2f32.powi(-50))), 2f32.powi(-50));
        assert!(from_bf16(to_bf16(f32::NAN)).is_nan());
        assert_eq!(to_bf16(f32::INFINITY), 0x7f80);
        assert_eq!(to_bf16(f32::MAX), 0x7f80);
    }

    /// The product: every kernel this CPU runs gives the same bits as the portable one, and
    /// all stay close to the f32 product of the rounded operands.
    #[test]
    fn every_kernel_matches_portable_bit_for_bit() {
        let mut seed = 7u64;
        for &(m, n, k) in &[(1, 1, 1), (7, 33, 65), (13, 70, 300), (6, 32, 768)] {
            // Wide exponent range, so that a different order of the sums shows.
            let wide = |s: &mut u64| lcg(s) * 2f32.powi((lcg(s) * 20.0) as i32);
            let w: Vec<f32> = (0..n * k).map(|_| wide(&mut seed)).collect();
            let x: Vec<f32> = (0..m * k).map(|_| wide(&mut seed)).collect();
            let bias: Vec<f32> = (0..n).map(|_| lcg(&mut seed)).collect();
            let packed = PackedBf16::pack(&w, n, k);
            let mut rows = Bf16Rows::default();
            rows.convert(&x, m, k, Bf16Kernel::Portable, 1);
            let mut want = vec![0.0; m * n];
            linear_bf16(
                &rows,
                &packed,
                Some(&bias),
                &mut want,
                Bf16Kernel::Portable,
                1,
            );
            // Reference: the documented order, in plain scalar code.
            for r in 0..m {
                for c in 0..n {
                    let mut s = 0.0f32;
                    for i in (0..k).step_by(2) {
                        let xw = |j: usize| {
                            if j < k {
                                from_bf16(to_bf16(x[r * k + j])) * from_bf16(to_bf16(w[c * k + j]))
                            } else {
                                0.0
                            }
                        };
                        s += xw(i + 1);
                        s += xw(i);
                    }
                    assert_eq!(
                        (s + bias[c]).to_bits(),
                        want[r * n + c].to_bits(),
                        "{r},{c}"
                    );
                }
            }
            for kernel in Bf16Kernel::ALL {
                if !kernel.tier().supported() {
                    continue;
                }
                rows.convert(&x, m, k, kernel, 2);
                for threads in [1, 2] {
                    let mut got = vec![0.0; m * n];
                    linear_bf16(&rows, &packed, Some(&bias), &mut got, kernel, threads);
                    let same = got
                        .iter()
                        .zip(&want)
                        .all(|(a, b)| a.to_bits() == b.to_bits());
                    assert!(same, "{} differs at m={m} n={n} k={k}", kernel.name());
                }
            }
        }
    }

    /// A reused buffer of rows converts like a fresh one (shorter, then longer inputs).
    #[test]
    fn reused_rows_match_fresh() {
        let mut seed = 3u64;
        let x: Vec<f32> = (0..20 * 9).map(|_| lcg(&mut seed)).collect();
        for kernel in Bf16Kernel::ALL {
            let mut reused = Bf16Rows::default();
            reused.convert(&x, 20, 9, kernel, 1);
            for (m, k) in [(3, 9), (11, 5)] {
                reused.convert(&x[..m * k], m, k, kernel, 1);
                let mut fresh = Bf16Rows::default();
                fresh.convert(&x[..m * k], m, k, kernel, 1);
                assert_eq!((reused.m, reused.kp), (fresh.m, fresh.kp));
                assert_eq!(reused.data, fresh.data);
            }
        }
    }
}
