//! f32 GEMM against weights packed once at load, with an AVX-512 micro-kernel (runtime
//! detected) and the `gemm` crate as the fallback.
//!
//! `out[m, n] = x[m, k] · w[n, k]ᵀ + bias`. Weights are packed in panels of 32 output channels
//! (`[panel][k][32]`), so the micro-kernel streams them with two aligned-size loads per input
//! and broadcasts one activation per row: 12 rows × 32 channels = 24 accumulator registers.
//! The inner dimension is blocked by `KC` so that one panel slice stays in L1.

use rayon::prelude::*;

const MR: usize = 12;
const NR: usize = 32;
const KC: usize = 256;

/// Weights of one linear layer packed for the AVX-512 kernel (or kept plain for `gemm`).
#[derive(Debug, Clone)]
pub struct PackedF32 {
    pub n: usize,
    pub k: usize,
    /// `[panel][k][32]`, channels past `n` zero. Empty when the AVX-512 kernel is unavailable.
    packed: Vec<f32>,
    /// The original `[n, k]` weights, kept only for the fallback.
    plain: Vec<f32>,
}

pub fn avx512_available() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::arch::is_x86_feature_detected!("avx512f")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

impl PackedF32 {
    pub fn new(w: Vec<f32>, n: usize, k: usize) -> Self {
        assert!(w.len() >= n * k);
        // LINGUA_ENCODER_F32_GEMM=1 forces the `gemm` crate path (for comparisons).
        let force_gemm = std::env::var("LINGUA_ENCODER_F32_GEMM").is_ok_and(|v| v == "1");
        if force_gemm || !avx512_available() {
            return Self {
                n,
                k,
                packed: Vec::new(),
                plain: w,
            };
        }
        let panels = n.div_ceil(NR);
        let mut packed = vec![0.0f32; panels * k * NR];
        for c in 0..n {
            let (p, lane) = (c / NR, c % NR);
            let base = p * k * NR + lane;
            for (kk, v) in w[c * k..(c + 1) * k].iter().enumerate() {
                packed[base + kk * NR] = *v;
            }
        }
        Self {
            n,
            k,
            packed,
            plain: Vec::new(),
        }
    }

    pub fn forward(&self, x: &[f32], m: usize, bias: &[f32], out: &mut [f32], threads: usize) {
        if self.packed.is_empty() {
            super::linear_f32(x, m, self.k, &self.plain, self.n, bias, out, threads);
            return;
        }
        #[cfg(target_arch = "x86_64")]
        self.forward_avx512(x, m, bias, out, threads);
    }

    #[cfg(target_arch = "x86_64")]
    fn forward_avx512(&self, x: &[f32], m: usize, bias: &[f32], out: &mut [f32], threads: usize) {
        let (n, k) = (self.n, self.k);
        assert!(x.len() >= m * k && out.len() >= m * n && bias.len() >= n);
        let out_ptr = super::SendPtr(out.as_mut_ptr());
        let full_blocks = m / MR;
        // Rows of the last, partial block, zero-padded to MR rows.
        let tail_rows = m - full_blocks * MR;
        let mut tail = Vec::new();
        if tail_rows > 0 {
            tail = vec![0.0f32; MR * k];
            tail[..tail_rows * k].copy_from_slice(&x[full_blocks * MR * k..m * k]);
        }
        let run_panel = |p: usize| {
            let c0 = p * NR;
            let cols = NR.min(n - c0);
            let bp = &self.packed[p * k * NR..(p + 1) * k * NR];
            let mut acc = [0.0f32; MR * NR];
            let blocks = full_blocks + usize::from(tail_rows > 0);
            for rb in 0..blocks {
                let (a, rows) = if rb < full_blocks {
                    (&x[rb * MR * k..(rb + 1) * MR * k], MR)
                } else {
                    (&tail[..], tail_rows)
                };
                for (r, accr) in acc.chunks_exact_mut(NR).enumerate().take(MR) {
                    let _ = r;
                    accr[..cols].copy_from_slice(&bias[c0..c0 + cols]);
                    accr[cols..].fill(0.0);
                }
                let mut k0 = 0;
                while k0 < k {
                    let kc = KC.min(k - k0);
                    // SAFETY: avx512f was detected when the weights were packed; `a` has MR
                    // rows of k floats, `bp` has k rows of NR floats, k0 + kc <= k.
                    unsafe { kernel(a, k, k0, kc, bp, &mut acc) };
                    k0 += kc;
                }
                for r in 0..rows {
                    let row = rb * MR + r;
                    // SAFETY: row < m, c0 + cols <= n; panels are disjoint column ranges.
                    let dst = unsafe {
                        std::slice::from_raw_parts_mut(out_ptr.get().add(row * n + c0), cols)
                    };
                    dst.copy_from_slice(&acc[r * NR..r * NR + cols]);
                }
            }
        };
        let panels = n.div_ceil(NR);
        if threads > 1 {
            (0..panels).into_par_iter().for_each(run_panel);
        } else {
            (0..panels).for_each(run_panel);
        }
    }
}

/// `acc[r, 0..32] += Σ_{kk in k0..k0+kc} a[r, kk] · b[kk, 0..32]` for MR rows.
///
/// # Safety
/// Requires avx512f; `a` holds MR rows of `lda` floats, `b` at least `(k0 + kc) · 32` floats.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn kernel(a: &[f32], lda: usize, k0: usize, kc: usize, b: &[f32], acc: &mut [f32; MR * NR]) {
    use std::arch::x86_64::*;
    debug_assert!(a.len() >= MR * lda && b.len() >= (k0 + kc) * NR);
    // SAFETY: bounds as documented above; acc has MR * NR floats.
    unsafe {
        let mut c = [[_mm512_setzero_ps(); 2]; MR];
        for (r, cr) in c.iter_mut().enumerate() {
            cr[0] = _mm512_loadu_ps(acc.as_ptr().add(r * NR));
            cr[1] = _mm512_loadu_ps(acc.as_ptr().add(r * NR + 16));
        }
        let ap = a.as_ptr().add(k0);
        let mut bp = b.as_ptr().add(k0 * NR);
        for kk in 0..kc {
            let b0 = _mm512_loadu_ps(bp);
            let b1 = _mm512_loadu_ps(bp.add(16));
            for (r, cr) in c.iter_mut().enumerate() {
                let av = _mm512_set1_ps(*ap.add(r * lda + kk));
                cr[0] = _mm512_fmadd_ps(av, b0, cr[0]);
                cr[1] = _mm512_fmadd_ps(av, b1, cr[1]);
            }
            bp = bp.add(NR);
        }
        for (r, cr) in c.iter().enumerate() {
            _mm512_storeu_ps(acc.as_mut_ptr().add(r * NR), cr[0]);
            _mm512_storeu_ps(acc.as_mut_ptr().add(r * NR + 16), cr[1]);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn packed_matches_gemm() {
        let mut s = 3u64;
        let mut next = || {
            s = s.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
            ((s >> 40) as f32 / (1u64 << 24) as f32) - 0.5
        };
        for (m, k, n) in [(1, 3, 5), (13, 300, 64), (30, 768, 96), (25, 257, 33)] {
            let x: Vec<f32> = (0..m * k).map(|_| next()).collect();
            let w: Vec<f32> = (0..n * k).map(|_| next()).collect();
            let bias: Vec<f32> = (0..n).map(|_| next()).collect();
            let mut want = vec![0.0; m * n];
            super::super::linear_f32(&x, m, k, &w, n, &bias, &mut want, 1);
            let mut got = vec![0.0; m * n];
            PackedF32::new(w, n, k).forward(&x, m, &bias, &mut got, 2);
            for (a, b) in want.iter().zip(&got) {
                assert!((a - b).abs() < 1e-4, "m={m} k={k} n={n}: {a} vs {b}");
            }
        }
    }
}
