//! int8 × int8 → int32 matrix multiply with dynamically quantized activations.
//!
//! Weights are quantized once at load, symmetric per output channel (`w ≈ sw[c] · wq[c, k]`,
//! `wq ∈ [-127, 127]`). Activations are quantized per row at run time (`x ≈ sa[r] · xq[r, k]`)
//! and stored as unsigned bytes `xq + 128`, which is what `vpdpbusd` (u8 × i8) wants; the
//! `+128` is removed afterwards with the per-channel weight sums.
//!
//! One micro-kernel per tier, all computing the very same integer sums, so every tier gives
//! bit-identical results: AVX-512 VNNI (`vpdpbusd` on 512 bits), AVX-VNNI (the same on 256
//! bits), AVX2 without VNNI (`vpmaddubsw` on `|xq|` and `sign(xq) · wq`, whose pair sums stay
//! within i16 because both factors are at most 127, then `vpmaddwd`), and portable Rust.

use rayon::prelude::*;

use crate::tier::Tier;

/// Rows of activations per micro-kernel call.
pub const MR: usize = 12;
/// Output channels per packed panel (two 16-lane registers).
pub const NR: usize = 32;

/// Weights of one linear layer, quantized and packed for the micro-kernel.
///
/// Layout: panel `p` (output channels `32p..32p+32`), then groups of four inputs `kq`, then
/// 32 channels × 4 bytes. Channels past `n` and inputs past `k` are zero.
#[derive(Debug, Clone)]
pub struct PackedQ8 {
    pub n: usize,
    pub k: usize,
    k4: usize,
    data: Vec<i8>,
    scales: Vec<f32>,
    /// `128 · Σ_k wq[c, k]`, the correction for the unsigned activation encoding.
    offsets: Vec<i32>,
}

impl PackedQ8 {
    /// Quantizes `w` (`[n, k]`, PyTorch's `[out, in]` layout).
    pub fn quantize(w: &[f32], n: usize, k: usize) -> Self {
        assert!(w.len() >= n * k);
        let k4 = k.div_ceil(4) * 4;
        let panels = n.div_ceil(NR);
        let mut data = vec![0i8; panels * k4 * NR];
        let mut scales = vec![0.0f32; n];
        let mut offsets = vec![0i32; n];
        for c in 0..n {
            let row = &w[c * k..(c + 1) * k];
            let amax = row.iter().fold(0.0f32, |m, x| m.max(x.abs()));
            let scale = if amax > 0.0 { amax / 127.0 } else { 1.0 };
            scales[c] = scale;
            let (p, lane) = (c / NR, c % NR);
            let mut sum = 0i32;
            for (kk, x) in row.iter().enumerate() {
                let q = (x / scale).round().clamp(-127.0, 127.0) as i8;
                sum += q as i32;
                let idx = p * k4 * NR + (kk / 4) * NR * 4 + lane * 4 + kk % 4;
                data[idx] = q;
            }
            offsets[c] = 128 * sum;
        }
        Self {
            n,
            k,
            k4,
            data,
            scales,
            offsets,
        }
    }

    fn panels(&self) -> usize {
        self.n.div_ceil(NR)
    }

    fn panel(&self, p: usize) -> &[i8] {
        &self.data[p * self.k4 * NR..(p + 1) * self.k4 * NR]
    }
}

/// Activations quantized per row: `MR`-padded rows of `k4` unsigned bytes plus row scales.
#[derive(Debug, Default, Clone)]
pub struct QuantRows {
    m: usize,
    k4: usize,
    data: Vec<u8>,
    scales: Vec<f32>,
}

impl QuantRows {
    /// Quantizes `x` (`[m, k]`) into `self`, reusing its buffers; rows are split over the
    /// current rayon pool when `threads > 1`.
    pub fn quantize(&mut self, x: &[f32], m: usize, k: usize, threads: usize) {
        let k4 = k.div_ceil(4) * 4;
        let m_pad = m.div_ceil(MR) * MR;
        self.m = m;
        self.k4 = k4;
        self.data.clear();
        self.data.resize(m_pad * k4, 128);
        self.scales.clear();
        self.scales.resize(m_pad, 0.0);
        let rows = self.data.chunks_exact_mut(k4).zip(self.scales.iter_mut());
        let job = |(dst, scale): (&mut [u8], &mut f32), row: &[f32]| {
            *scale = quantize_row(row, &mut dst[..k]);
        };
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

/// Symmetric per-row quantization to `q + 128` bytes; returns the row scale.
fn quantize_row(row: &[f32], dst: &mut [u8]) -> f32 {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx512f") {
        // SAFETY: avx512f was just detected; the function reads `row` and writes `dst`
        // (same length) only.
        return unsafe { avx512::quantize_row(row, dst) };
    }
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
    pub const ALL: [Q8Kernel; 4] = [
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
            Q8Kernel::Avx512Vnni => Tier::Avx512Vnni,
            Q8Kernel::AvxVnni => Tier::AvxVnni,
            Q8Kernel::Avx2 => Tier::Avx2,
            Q8Kernel::Portable => Tier::Portable,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Q8Kernel::Avx512Vnni => "int8 AVX-512 VNNI",
            Q8Kernel::AvxVnni => "int8 AVX-VNNI",
            Q8Kernel::Avx2 => "int8 AVX2",
            Q8Kernel::Portable => "int8 portable",
        }
    }
}

/// `out[m, n] = dequant(xq · wqᵀ) + bias`, columns split across the current rayon pool.
pub fn linear_q8(
    xq: &QuantRows,
    w: &PackedQ8,
    bias: &[f32],
    out: &mut [f32],
    kernel: Q8Kernel,
    threads: usize,
) {
    assert_eq!(xq.k4, w.k4, "activation and weight inner sizes differ");
    let (m, n) = (xq.m, w.n);
    assert!(out.len() >= m * n && bias.len() >= n);
    // A kernel the CPU cannot run falls back to the best one it can (same sums).
    let kernel = if kernel.tier().supported() {
        kernel
    } else {
        Q8Kernel::for_tier(kernel.tier())
    };
    // The AVX2 kernel sums `xq · wq` itself; the others sum `(xq + 128) · wq`.
    let zeros = vec![0i32; if kernel == Q8Kernel::Avx2 { n } else { 0 }];
    let offsets = if kernel == Q8Kernel::Avx2 {
        &zeros[..]
    } else {
        &w.offsets[..]
    };
    let out_ptr = crate::SendPtr(out.as_mut_ptr());
    let run_panel = |p: usize| {
        let mut acc = [0i32; MR * NR];
        let bp = w.panel(p);
        let c0 = p * NR;
        let cols = NR.min(n - c0);
        for rb in 0..m.div_ceil(MR) {
            let a = &xq.data[rb * MR * xq.k4..(rb + 1) * MR * xq.k4];
            match kernel {
                // SAFETY (all three): the kernel's tier was checked as supported above; slices
                // are exactly MR rows × k4 and k4 × NR bytes.
                #[cfg(target_arch = "x86_64")]
                Q8Kernel::Avx512Vnni => unsafe { vnni::kernel(a, bp, xq.k4, &mut acc) },
                #[cfg(target_arch = "x86_64")]
                Q8Kernel::AvxVnni => unsafe { ymm::kernel_vnni(a, bp, xq.k4, &mut acc) },
                #[cfg(target_arch = "x86_64")]
                Q8Kernel::Avx2 => unsafe { ymm::kernel_avx2(a, bp, xq.k4, &mut acc) },
                _ => portable_kernel(a, bp, xq.k4, &mut acc),
            }
            let rows = MR.min(m - rb * MR);
            for r in 0..rows {
                let row = rb * MR + r;
                let sa = xq.scales[row];
                // SAFETY: rows < m and c0 + cols <= n; panels are disjoint column ranges, so
                // no two tasks write the same element.
                let dst = unsafe {
                    std::slice::from_raw_parts_mut(out_ptr.get().add(row * n + c0), cols)
                };
                let accr = &acc[r * NR..r * NR + cols];
                let offs = &offsets[c0..c0 + cols];
                let scales = &w.scales[c0..c0 + cols];
                let bs = &bias[c0..c0 + cols];
                for ((((d, a), o), s), b) in dst.iter_mut().zip(accr).zip(offs).zip(scales).zip(bs)
                {
                    *d = (a - o) as f32 * (sa * s) + b;
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

/// `acc[r, c] = Σ_k a[r, k] · b[c, k]` over one MR × NR tile, in plain Rust.
fn portable_kernel(a: &[u8], b: &[i8], k4: usize, acc: &mut [i32; MR * NR]) {
    acc.fill(0);
    for kq in 0..k4 / 4 {
        let bq = &b[kq * NR * 4..(kq + 1) * NR * 4];
        for r in 0..MR {
            let ar = &a[r * k4 + kq * 4..r * k4 + kq * 4 + 4];
            let accr = &mut acc[r * NR..(r + 1) * NR];
            for (c, acc_c) in accr.iter_mut().enumerate() {
                let bc = &bq[c * 4..c * 4 + 4];
                *acc_c += ar[0] as i32 * bc[0] as i32
                    + ar[1] as i32 * bc[1] as i32
                    + ar[2] as i32 * bc[2] as i32
                    + ar[3] as i32 * bc[3] as i32;
            }
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod vnni {
    use std::arch::x86_64::*;

    use super::{MR, NR};

    /// One MR × 32 tile: 24 zmm accumulators, two weight registers, one broadcast.
    ///
    /// # Safety
    /// The CPU must support avx512f, avx512bw and avx512vnni; `a` holds MR rows of `k4` bytes
    /// and `b` holds `k4 / 4` groups of 128 bytes.
    #[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
    pub unsafe fn kernel(a: &[u8], b: &[i8], k4: usize, acc: &mut [i32; MR * NR]) {
        debug_assert!(a.len() >= MR * k4 && b.len() >= k4 * NR);
        let mut c = [[_mm512_setzero_si512(); 2]; MR];
        let ap = a.as_ptr();
        let bp = b.as_ptr();
        for kq in 0..k4 / 4 {
            // SAFETY: kq * 128 + 128 <= b.len() and r * k4 + kq * 4 + 4 <= a.len().
            unsafe {
                let b0 = _mm512_loadu_si512(bp.add(kq * 128) as *const __m512i);
                let b1 = _mm512_loadu_si512(bp.add(kq * 128 + 64) as *const __m512i);
                for (r, cr) in c.iter_mut().enumerate() {
                    let av =
                        _mm512_set1_epi32((ap.add(r * k4 + kq * 4) as *const i32).read_unaligned());
                    cr[0] = _mm512_dpbusd_epi32(cr[0], av, b0);
                    cr[1] = _mm512_dpbusd_epi32(cr[1], av, b1);
                }
            }
        }
        for (r, cr) in c.iter().enumerate() {
            // SAFETY: acc has MR * NR elements; each row stores 32 of them.
            unsafe {
                let dst = acc.as_mut_ptr().add(r * NR);
                _mm512_storeu_si512(dst as *mut __m512i, cr[0]);
                _mm512_storeu_si512(dst.add(16) as *mut __m512i, cr[1]);
            }
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod ymm {
    use std::arch::x86_64::*;

    use super::{MR, NR};

    /// Rows per pass over the panel: 2 rows × 4 registers of 8 channels = 8 accumulators, plus
    /// 4 weight registers and the broadcasts, within the 16 ymm registers.
    const RG: usize = 2;

    /// One MR × 32 tile with 256-bit `vpdpbusd` (sums of `(xq + 128) · wq`).
    ///
    /// # Safety
    /// The CPU must support avx2 and avxvnni; `a` holds MR rows of `k4` bytes and `b` holds
    /// `k4 / 4` groups of 128 bytes.
    #[target_feature(enable = "avx2,avxvnni")]
    pub unsafe fn kernel_vnni(a: &[u8], b: &[i8], k4: usize, acc: &mut [i32; MR * NR]) {
        debug_assert!(a.len() >= MR * k4 && b.len() >= k4 * NR);
        let (ap, bp) = (a.as_ptr(), b.as_ptr());
        for r0 in (0..MR).step_by(RG) {
            let mut c = [[_mm256_setzero_si256(); 4]; RG];
            for kq in 0..k4 / 4 {
                // SAFETY: kq * 128 + 128 <= b.len() and (r0 + r) * k4 + kq * 4 + 4 <= a.len().
                unsafe {
                    let bv: [__m256i; 4] = std::array::from_fn(|j| {
                        _mm256_loadu_si256(bp.add(kq * 128 + 32 * j) as *const __m256i)
                    });
                    for (r, cr) in c.iter_mut().enumerate() {
                        let av = _mm256_set1_epi32(
                            (ap.add((r0 + r) * k4 + kq * 4) as *const i32).read_unaligned(),
                        );
                        for (cj, bj) in cr.iter_mut().zip(bv) {
                            *cj = _mm256_dpbusd_avx_epi32(*cj, av, bj);
                        }
                    }
                }
            }
            store(&c, r0, acc);
        }
    }

    /// One MR × 32 tile with AVX2 only (sums of `xq · wq`): `vpmaddubsw(|xq|, sign(xq) · wq)`
    /// adds two products of at most 127 · 127 per i16 lane, so nothing saturates, and
    /// `vpmaddwd` by ones widens the pairs to i32.
    ///
    /// # Safety
    /// The CPU must support avx2; `a` holds MR rows of `k4` bytes (`xq + 128`, never 0, so
    /// `xq >= -127`) and `b` holds `k4 / 4` groups of 128 bytes.
    #[target_feature(enable = "avx2")]
    pub unsafe fn kernel_avx2(a: &[u8], b: &[i8], k4: usize, acc: &mut [i32; MR * NR]) {
        debug_assert!(a.len() >= MR * k4 && b.len() >= k4 * NR);
        let (ap, bp) = (a.as_ptr(), b.as_ptr());
        let flip = _mm256_set1_epi8(i8::MIN);
        let ones = _mm256_set1_epi16(1);
        for r0 in (0..MR).step_by(RG) {
            let mut c = [[_mm256_setzero_si256(); 4]; RG];
            for kq in 0..k4 / 4 {
                // SAFETY: as in `kernel_vnni`.
                unsafe {
                    let bv: [__m256i; 4] = std::array::from_fn(|j| {
                        _mm256_loadu_si256(bp.add(kq * 128 + 32 * j) as *const __m256i)
                    });
                    for (r, cr) in c.iter_mut().enumerate() {
                        let av = _mm256_set1_epi32(
                            (ap.add((r0 + r) * k4 + kq * 4) as *const i32).read_unaligned(),
                        );
                        // (xq + 128) ^ 0x80 is xq as a signed byte.
                        let sa = _mm256_xor_si256(av, flip);
                        let abs = _mm256_abs_epi8(sa);
                        for (cj, bj) in cr.iter_mut().zip(bv) {
                            let p16 = _mm256_maddubs_epi16(abs, _mm256_sign_epi8(bj, sa));
                            *cj = _mm256_add_epi32(*cj, _mm256_madd_epi16(p16, ones));
                        }
                    }
                }
            }
            store(&c, r0, acc);
        }
    }

    #[inline(always)]
    fn store(c: &[[__m256i; 4]; RG], r0: usize, acc: &mut [i32; MR * NR]) {
        for (r, cr) in c.iter().enumerate() {
            for (j, cj) in cr.iter().enumerate() {
                let at = (r0 + r) * NR + 8 * j;
                // SAFETY: r0 + r < MR and 8 * j + 8 <= NR, so 8 lanes fit in `acc`.
                unsafe { _mm256_storeu_si256(acc.as_mut_ptr().add(at) as *mut __m256i, *cj) };
            }
        }
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

    fn case(m: usize, k: usize, n: usize) {
        let mut s = 7u64;
        let x: Vec<f32> = (0..m * k).map(|_| lcg(&mut s)).collect();
        let w: Vec<f32> = (0..n * k).map(|_| lcg(&mut s) * 0.1).collect();
        let bias: Vec<f32> = (0..n).map(|_| lcg(&mut s)).collect();
        let packed = PackedQ8::quantize(&w, n, k);
        let mut q = QuantRows::default();
        q.quantize(&x, m, k, 2);
        let mut portable = vec![0.0; m * n];
        linear_q8(&q, &packed, &bias, &mut portable, Q8Kernel::Portable, 1);
        for kernel in Q8Kernel::ALL {
            if kernel.tier().supported() {
                let mut fast = vec![0.0; m * n];
                linear_q8(&q, &packed, &bias, &mut fast, kernel, 2);
                assert_eq!(
                    portable, fast,
                    "{kernel:?} must agree exactly with portable"
                );
            }
        }
        let mut exact = vec![0.0; m * n];
        crate::products::linear_f32(&x, m, k, &w, n, &bias, &mut exact, 1);
        let mut worst = 0.0f32;
        for (a, b) in exact.iter().zip(&portable) {
            worst = worst.max((a - b).abs());
        }
        // |x| <= 1, |w| <= 0.1: the product has spread ~0.06·sqrt(k); int8 error is ~1%.
        let tol = 0.02 * (k as f32).sqrt() * 0.06 + 1e-3;
        assert!(
            worst < tol,
            "m={m} k={k} n={n}: q8 error {worst} above {tol}"
        );
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
        let sa = quantize_row(&row, &mut a);
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
        let packed = PackedQ8::quantize(&w, n, k);
        let mut q = QuantRows::default();
        q.quantize(&x, m, k, 1);
        let bias = vec![0.0; n];
        let mut exact = vec![0.0; m * n];
        crate::products::linear_f32(&x, m, k, &w, n, &bias, &mut exact, 1);
        for kernel in Q8Kernel::ALL {
            if kernel.tier().supported() {
                let mut out = vec![0.0; m * n];
                linear_q8(&q, &packed, &bias, &mut out, kernel, 1);
                for (a, b) in exact.iter().zip(&out) {
                    assert!((a - b).abs() < 1e-3, "{kernel:?}: {a} vs {b}");
                }
            }
        }
    }

    #[test]
    fn q8_matches_f32_and_kernels_agree() {
        case(1, 4, 32);
        case(13, 70, 45);
        case(30, 768, 96);
        case(25, 257, 33);
    }
}
