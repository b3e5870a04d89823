//! CPU kernels of the causal LM forward pass: f32 GEMM through the `gemm` crate (its own
//! run-time AVX-512 / AVX2 dispatch), and the element-wise parts (exp, tanh-GELU, SiLU, norms,
//! masked softmax, log-softmax NLL) written as plain loops that LLVM vectorises, compiled once
//! per instruction-set tier and picked at run time.
#![allow(
    unsafe_code,
    reason = "SIMD code paths behind run-time CPU checks and GEMM over raw row pointers"
)]

/// A raw output pointer handed to rayon tasks that write disjoint regions.
#[derive(Clone, Copy)]
pub(crate) struct SendPtr(pub(crate) *mut f32);
// SAFETY: only used to hand disjoint output regions to rayon tasks.
unsafe impl Send for SendPtr {}
// SAFETY: as above.
unsafe impl Sync for SendPtr {}
impl SendPtr {
    pub(crate) fn get(self) -> *mut f32 {
        self.0
    }
}

/// Runs `$body` compiled for AVX-512 or AVX2+FMA when the CPU has them, else for the build's
/// baseline.
macro_rules! dispatch {
    ($(#[$m:meta])* $vis:vis fn $name:ident($($arg:ident: $ty:ty),*) $(-> $ret:ty)? $body:block) => {
        $(#[$m])*
        $vis fn $name($($arg: $ty),*) $(-> $ret)? {
            #[inline(always)]
            fn inner($($arg: $ty),*) $(-> $ret)? $body
            #[cfg(target_arch = "x86_64")]
            {
                #[target_feature(enable = "avx512f,avx2,fma")]
                unsafe fn wide($($arg: $ty),*) $(-> $ret)? { inner($($arg),*) }
                #[target_feature(enable = "avx2,fma")]
                unsafe fn mid($($arg: $ty),*) $(-> $ret)? { inner($($arg),*) }
                if std::arch::is_x86_feature_detected!("avx512f") {
                    // SAFETY: avx512f (which implies avx2 and fma on every such CPU) was detected.
                    return unsafe { wide($($arg),*) };
                }
                if std::arch::is_x86_feature_detected!("avx2")
                    && std::arch::is_x86_feature_detected!("fma")
                {
                    // SAFETY: avx2 and fma were just detected.
                    return unsafe { mid($($arg),*) };
                }
            }
            inner($($arg),*)
        }
    };
}

/// `dst[m, n] (+)= lhs[m, k] · w[n, k]ᵀ`, `w` in PyTorch's `[out, in]` layout; `accumulate`
/// adds to what `dst` holds (a bias the caller wrote). `threads > 1` splits the product over
/// the current rayon pool.
#[expect(
    clippy::too_many_arguments,
    reason = "a GEMM call: shapes, strides and operands, as BLAS takes them"
)]
pub(crate) fn matmul_wt(
    lhs: &[f32],
    m: usize,
    k: usize,
    w: &[f32],
    n: usize,
    dst: &mut [f32],
    accumulate: bool,
    threads: usize,
) {
    assert!(lhs.len() >= m * k && w.len() >= n * k && dst.len() >= m * n);
    if m == 0 || n == 0 {
        return;
    }
    let par = if threads > 1 {
        gemm::Parallelism::Rayon(threads)
    } else {
        gemm::Parallelism::None
    };
    // SAFETY: the assert keeps every strided access in bounds: dst is m×n row-major, lhs m×k
    // row-major, rhs (k×n) is wᵀ read with column stride k.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst.as_mut_ptr(),
            1,
            n as isize,
            accumulate,
            lhs.as_ptr(),
            1,
            k as isize,
            w.as_ptr(),
            k as isize,
            1,
            1.0f32,
            1.0f32,
            false,
            false,
            false,
            par,
        );
    }
}

/// Single-threaded strided product `dst[m, n] = beta · lhs[m, k] · rhs[k, n]`, strides given as
/// (row, column) pairs in elements.
///
/// # Safety
/// Every strided access must stay inside the allocations the pointers come from.
#[expect(
    clippy::too_many_arguments,
    reason = "a GEMM call: shapes, strides and operands, as BLAS takes them"
)]
pub(crate) unsafe fn gemm_strided(
    m: usize,
    n: usize,
    k: usize,
    dst: *mut f32,
    dst_rs: isize,
    lhs: *const f32,
    lhs_rs: isize,
    lhs_cs: isize,
    rhs: *const f32,
    rhs_rs: isize,
    rhs_cs: isize,
    beta: f32,
) {
    // SAFETY: forwarded to the caller's contract.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst,
            1,
            dst_rs,
            false,
            lhs,
            lhs_cs,
            lhs_rs,
            rhs,
            rhs_cs,
            rhs_rs,
            0.0f32,
            beta,
            false,
            false,
            false,
            gemm::Parallelism::None,
        );
    }
}

const LOG2E: f32 = std::f32::consts::LOG2_E;

/// `e^x` to about 1 ulp (Cephes range reduction and polynomial), branch-free so that loops over
/// it vectorise. Inputs below -87.3 give ~1e-38 instead of 0 (harmless in softmax sums; masked
/// entries are never passed here).
#[inline(always)]
pub(crate) fn exp_f32(x: f32) -> f32 {
    const ROUND: f32 = 12_582_912.0; // 1.5 · 2^23: adding it rounds to an integer in the low bits
    let x = x.clamp(-87.3, 88.3);
    let t = x.mul_add(LOG2E, ROUND);
    let n = t - ROUND;
    // x - n·ln2 in two steps (ln2 = C1 + C2) to keep the reduced argument exact.
    let r = n.mul_add(-0.693_359_4, x);
    let r = n.mul_add(2.121_944_4e-4, r);
    let z = r * r;
    let mut p = 1.987_569_1e-4f32;
    p = p.mul_add(r, 1.398_199_9e-3);
    p = p.mul_add(r, 8.333_452e-3);
    p = p.mul_add(r, 4.166_579_6e-2);
    p = p.mul_add(r, 1.666_666_5e-1);
    p = p.mul_add(r, 0.5);
    let y = p.mul_add(z, r) + 1.0;
    // 2^n from the integer in t's low mantissa bits: (n + 127) << 23.
    let bits = t
        .to_bits()
        .wrapping_sub(ROUND.to_bits())
        .wrapping_add(127)
        .wrapping_shl(23);
    y * f32::from_bits(bits)
}

/// `tanh(x)` to a few ulp: `1 - 2 / (e^{2x} + 1)` away from zero, an odd polynomial near it
/// (where the subtraction would cancel).
#[inline(always)]
fn tanh_f32(x: f32) -> f32 {
    let a = x.abs().min(9.0);
    let far = 1.0 - 2.0 / (exp_f32(2.0 * a) + 1.0);
    // Taylor series to x^9 for |x| < 0.125 (truncation error below 1e-10).
    let z = a * a;
    let mut p = 62.0f32 / 2835.0;
    p = p.mul_add(z, -17.0 / 315.0);
    p = p.mul_add(z, 2.0 / 15.0);
    p = p.mul_add(z, -1.0 / 3.0);
    let near = (p * z).mul_add(a, a);
    let t = if a < 0.125 { near } else { far };
    t.copysign(x)
}

dispatch! {
    /// GELU with the tanh approximation (`gelu_new`, `gelu_pytorch_tanh`), in place.
    pub(crate) fn gelu_tanh(xs: &mut [f32]) {
        const C: f32 = 0.797_884_6; // sqrt(2/pi)
        for x in xs.iter_mut() {
            let v = *x;
            let t = tanh_f32(C * (v + 0.044_715 * (v * v * v)));
            *x = 0.5 * v * (1.0 + t);
        }
    }
}

/// `erf(x)` from `1 - erfc`, Numerical Recipes' erfc Chebyshev fit (relative error < 1.2e-7).
#[inline(always)]
fn erf_f32(x: f32) -> f32 {
    let z = x.abs();
    let t = 1.0 / (0.5f32).mul_add(z, 1.0);
    let mut p = 0.170_872_77f32;
    for c in [
        -0.822_152_23f32,
        1.488_515_9,
        -1.135_204,
        0.278_868_07,
        -0.186_288_06,
        0.096_784_18,
        0.374_091_96,
        1.000_023_7,
    ] {
        p = p.mul_add(t, c);
    }
    let ans = t * exp_f32(p.mul_add(t, -z * z - 1.265_512_2));
    let ans = if z > 9.0 { 0.0 } else { ans };
    (1.0 - ans).copysign(x)
}

dispatch! {
    /// Exact (erf) GELU, in place.
    pub(crate) fn gelu_erf(xs: &mut [f32]) {
        for x in xs.iter_mut() {
            let v = *x;
            *x = 0.5 * v * (1.0 + erf_f32(v * std::f32::consts::FRAC_1_SQRT_2));
        }
    }
}

/// ReLU in place.
pub(crate) fn relu(xs: &mut [f32]) {
    for x in xs.iter_mut() {
        *x = x.max(0.0);
    }
}

dispatch! {
    /// `gate[i] = silu(gate[i]) · up[i]` (Llama's MLP), in place in `gate`.
    pub(crate) fn silu_mul(gate: &mut [f32], up: &[f32]) {
        for (g, u) in gate.iter_mut().zip(up) {
            let v = *g;
            *g = v / (1.0 + exp_f32(-v)) * *u;
        }
    }
}

/// Sum with 16 independent partial sums (vectorises; f32 like PyTorch's reductions).
#[inline(always)]
fn sum16(xs: &[f32], f: impl Fn(f32) -> f32) -> f32 {
    let mut s = [0.0f32; 16];
    let mut chunks = xs.chunks_exact(16);
    for c in &mut chunks {
        for j in 0..16 {
            s[j] += f(c[j]);
        }
    }
    chunks.remainder().iter().map(|x| f(*x)).sum::<f32>() + s.iter().sum::<f32>()
}

#[inline(always)]
fn max16(xs: &[f32]) -> f32 {
    let mut m = [f32::NEG_INFINITY; 16];
    let mut chunks = xs.chunks_exact(16);
    for c in &mut chunks {
        for j in 0..16 {
            m[j] = m[j].max(c[j]);
        }
    }
    let mut max = chunks
        .remainder()
        .iter()
        .copied()
        .fold(f32::NEG_INFINITY, f32::max);
    for v in m {
        max = max.max(v);
    }
    max
}

dispatch! {
    /// `dst = LayerNorm(src)` for one row (two-pass mean and biased variance in f32).
    pub(crate) fn layer_norm_row(src: &[f32], dst: &mut [f32], gamma: &[f32], beta: &[f32], eps: f32) {
        let n = src.len() as f32;
        let mean = sum16(src, |x| x) / n;
        let var = sum16(src, |x| (x - mean) * (x - mean)) / n;
        let inv = 1.0 / (var + eps).sqrt();
        for (((d, x), g), b) in dst.iter_mut().zip(src).zip(gamma).zip(beta) {
            *d = (*x - mean) * inv * *g + *b;
        }
    }
}

dispatch! {
    /// `dst = weight · x / sqrt(mean(x²) + eps)` for one row (Llama's RMSNorm, f32).
    pub(crate) fn rms_norm_row(src: &[f32], dst: &mut [f32], weight: &[f32], eps: f32) {
        let n = src.len() as f32;
        let ms = sum16(src, |x| x * x) / n;
        let inv = 1.0 / (ms + eps).sqrt();
        for ((d, x), w) in dst.iter_mut().zip(src).zip(weight) {
            *d = *w * (*x * inv);
        }
    }
}

dispatch! {
    /// Softmax of `row[..valid]` in place; `row[valid..]` (masked keys) is set to zero.
    pub(crate) fn masked_softmax_row(row: &mut [f32], valid: usize) {
        let (live, dead) = row.split_at_mut(valid);
        dead.fill(0.0);
        let max = max16(live);
        let mut s = [0.0f32; 16];
        let mut chunks = live.chunks_exact_mut(16);
        for c in &mut chunks {
            for j in 0..16 {
                let e = exp_f32(c[j] - max);
                c[j] = e;
                s[j] += e;
            }
        }
        let mut sum = 0.0f32;
        for x in chunks.into_remainder() {
            let e = exp_f32(*x - max);
            *x = e;
            sum += e;
        }
        sum += s.iter().sum::<f32>();
        let inv = 1.0 / sum;
        for x in live.iter_mut() {
            *x *= inv;
        }
    }
}

dispatch! {
    /// `-log_softmax(logits)[target]`: max subtraction, f32 sum of exponentials (like PyTorch's
    /// CrossEntropyLoss on f32 logits).
    pub(crate) fn nll_row(logits: &[f32], target: usize) -> f32 {
        let max = max16(logits);
        let sum = sum16(logits, |x| exp_f32(x - max));
        (max - logits[target]) + sum.ln()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exp_tanh_erf_are_accurate() {
        let mut worst_exp = 0.0f64;
        let mut worst_tanh = 0.0f64;
        let mut worst_erf = 0.0f64;
        for i in -80_000..80_000 {
            let x = i as f32 / 1000.0;
            let r = (x as f64).exp();
            worst_exp = worst_exp.max(((exp_f32(x) as f64 - r) / r).abs());
            let x = i as f32 / 10_000.0; // |x| <= 8
            let r = (x as f64).tanh();
            let e = (tanh_f32(x) as f64 - r).abs() / r.abs().max(1e-30);
            if x != 0.0 {
                worst_tanh = worst_tanh.max(e);
            }
            let r = erf_ref(x as f64);
            worst_erf = worst_erf.max((erf_f32(x) as f64 - r).abs());
        }
        assert!(worst_exp < 3e-7, "exp rel err {worst_exp}");
        assert!(worst_tanh < 1e-6, "tanh rel err {worst_tanh}");
        assert!(worst_erf < 5e-7, "erf abs err {worst_erf}");
    }

    // erf by its Taylor series (|x| <= 3) or 1 - erfc continued fraction, in f64, test only.
    fn erf_ref(x: f64) -> f64 {
        let a = x.abs();
        if a > 3.0 {
            // erfc(a) = exp(-a²)/sqrt(pi) · 1/(a + 1/2/(a + 1/(a + 3/2/(a + ...))))
            let mut f = a;
            for k in (1..60).rev() {
                f = a + (k as f64 / 2.0) / f;
            }
            let erfc = (-a * a).exp() / std::f64::consts::PI.sqrt() / f;
            return (1.0 - erfc).copysign(x);
        }
        let mut sum = 0.0f64;
        let mut term = x;
        let mut n = 0.0;
        while n < 200.0 {
            sum += term / (2.0 * n + 1.0);
            n += 1.0;
            term *= -x * x / n;
        }
        sum * 2.0 / std::f64::consts::PI.sqrt()
    }

    #[test]
    fn softmax_norms_and_nll() {
        let mut r = vec![1.0f32, 2.0, 3.0, 7.0];
        masked_softmax_row(&mut r, 3);
        assert!((r.iter().sum::<f32>() - 1.0).abs() < 1e-6);
        assert!((r[2] - 0.665_240_9).abs() < 1e-6);
        assert_eq!(r[3], 0.0);
        let src = [1.0f32, 2.0, 3.0, 4.0];
        let mut d = [0.0f32; 4];
        layer_norm_row(&src, &mut d, &[1.0; 4], &[0.5; 4], 1e-12);
        assert!((d[0] - 0.5 + 1.341_640_8).abs() < 1e-5, "{d:?}");
        rms_norm_row(&src, &mut d, &[2.0; 4], 0.0);
        let rms = (30.0f32 / 4.0).sqrt();
        assert!((d[3] - 8.0 / rms).abs() < 1e-5, "{d:?}");
        let logits = [0.5f32, -1.0, 2.0];
        let lse = (0.5f64.exp() + (-1.0f64).exp() + 2.0f64.exp()).ln();
        assert!((nll_row(&logits, 1) as f64 - (lse + 1.0)).abs() < 1e-6);
    }

    #[test]
    fn activations() {
        let mut g = vec![-3.0f32, -0.5, 0.0, 0.05, 1.0, 4.0];
        let src = g.clone();
        gelu_tanh(&mut g);
        for (y, x) in g.iter().zip(&src) {
            let x = *x as f64;
            let r = 0.5
                * x
                * (1.0 + ((2.0 / std::f64::consts::PI).sqrt() * (x + 0.044715 * x * x * x)).tanh());
            assert!((*y as f64 - r).abs() < 1e-6, "{x}: {y} vs {r}");
        }
        let mut s = src.clone();
        silu_mul(&mut s, &[2.0; 6]);
        for (y, x) in s.iter().zip(&src) {
            let x = *x as f64;
            assert!((*y as f64 - 2.0 * x / (1.0 + (-x).exp())).abs() < 1e-6);
        }
        let mut e = src.clone();
        gelu_erf(&mut e);
        assert!((e[4] - 0.841_344_7).abs() < 1e-6, "{e:?}");
        let mut r = src;
        relu(&mut r);
        assert_eq!(r[0], 0.0);
        assert_eq!(r[5], 4.0);
    }
}
