//! CPU kernels of the encoder: f32 GEMM (the `gemm` crate), int8 GEMM with dynamically
//! quantized activations (AVX-512 VNNI with a portable fallback), and the element-wise parts
//! (exp, GELU, softmax, residual + layer-norm) written so that LLVM vectorises them.
#![allow(
    unsafe_code,
    reason = "GEMM over raw row pointers shared by worker threads; each call checks its shapes"
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

/// `out[m, n] = x[m, k] · w[n, k]ᵀ + bias[n]` in f32 (`w` in PyTorch's `[out, in]` layout).
///
/// `threads > 1` lets the `gemm` crate split the product over the current rayon pool.
#[expect(
    clippy::too_many_arguments,
    reason = "a GEMM call: shapes, strides and operands, as BLAS takes them"
)]
pub fn linear_f32(
    x: &[f32],
    m: usize,
    k: usize,
    w: &[f32],
    n: usize,
    bias: &[f32],
    out: &mut [f32],
    threads: usize,
) {
    assert!(x.len() >= m * k && w.len() >= n * k && out.len() >= m * n && bias.len() >= n);
    for row in out[..m * n].chunks_exact_mut(n) {
        row.copy_from_slice(&bias[..n]);
    }
    let par = if threads > 1 {
        gemm::Parallelism::Rayon(threads)
    } else {
        gemm::Parallelism::None
    };
    // SAFETY: the asserts above keep every access of the strided views in bounds:
    // dst is m×n row-major, lhs m×k row-major, rhs (k×n) is wᵀ read with column stride k.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            out.as_mut_ptr(),
            1,
            n as isize,
            true,
            x.as_ptr(),
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

/// Strided single-threaded f32 product used by attention:
/// `dst[m, n] = beta · lhs[m, k] · rhs[k, n]` with explicit (row, column) strides.
///
/// # Safety
/// Every strided access must stay inside the allocations the pointers come from.
#[expect(
    clippy::too_many_arguments,
    reason = "a GEMM call: shapes, strides and operands, as BLAS takes them"
)]
pub unsafe fn gemm_strided(
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

/// `e^x` to about 1e-7 relative error (Cephes polynomial), branch-free and integer-cast-free so
/// that loops over it vectorise. Inputs below -87.3 flush to ~1e-38.
#[inline(always)]
pub fn exp_f32(x: f32) -> f32 {
    const MAGIC: f32 = 12_582_912.0; // 1.5 · 2^23: adding it rounds to an integer in the low bits
    let x = x.clamp(-87.3, 88.0);
    let t = x.mul_add(LOG2E, MAGIC);
    let n = t - MAGIC;
    let r = n.mul_add(-0.693_359_4, x);
    let r = n.mul_add(2.121_944_4e-4, r);
    let z = r * r;
    let mut p = 1.987_569_1e-4f32;
    p = p.mul_add(r, 1.398_2e-3);
    p = p.mul_add(r, 8.333_452e-3);
    p = p.mul_add(r, 4.166_579_6e-2);
    p = p.mul_add(r, 1.666_666_5e-1);
    p = p.mul_add(r, 0.5);
    let y = p.mul_add(z, r) + 1.0;
    // 2^n from the integer sitting in t's mantissa: (n + 127) << 23.
    let bits = t
        .to_bits()
        .wrapping_sub(MAGIC.to_bits())
        .wrapping_add(127)
        .wrapping_shl(23);
    y * f32::from_bits(bits)
}

/// `erf(x)`, Abramowitz & Stegun 7.1.26 (absolute error below 1.5e-7).
#[inline(always)]
pub fn erf_f32(x: f32) -> f32 {
    let a = x.abs();
    let t = 1.0 / 0.327_591_1f32.mul_add(a, 1.0);
    let mut p = 1.061_405_4f32;
    p = p.mul_add(t, -1.453_152);
    p = p.mul_add(t, 1.421_413_8);
    p = p.mul_add(t, -0.284_496_73);
    p = p.mul_add(t, 0.254_829_6);
    let y = 1.0 - p * t * exp_f32(-a * a);
    y.copysign(x)
}

/// Runs `$body` compiled for AVX-512 when the CPU has it, else for the build's baseline.
macro_rules! multiversion {
    ($(#[$m:meta])* $vis:vis fn $name:ident($($arg:ident: $ty:ty),*) $(-> $ret:ty)? $body:block) => {
        $(#[$m])*
        $vis fn $name($($arg: $ty),*) $(-> $ret)? {
            #[inline(always)]
            fn inner($($arg: $ty),*) $(-> $ret)? $body
            #[cfg(target_arch = "x86_64")]
            {
                #[target_feature(enable = "avx512f")]
                unsafe fn wide($($arg: $ty),*) $(-> $ret)? { inner($($arg),*) }
                if std::arch::is_x86_feature_detected!("avx512f") {
                    // SAFETY: avx512f was just detected.
                    return unsafe { wide($($arg),*) };
                }
            }
            inner($($arg),*)
        }
    };
}

pub mod q8;

multiversion! {
    /// Exact (erf) GELU, in place.
    pub fn gelu_erf(xs: &mut [f32]) {
        for x in xs.iter_mut() {
            let v = *x;
            *x = 0.5 * v * (1.0 + erf_f32(v * std::f32::consts::FRAC_1_SQRT_2));
        }
    }
}

multiversion! {
    /// Tanh-approximated GELU, in place.
    pub fn gelu_tanh(xs: &mut [f32]) {
        const C: f32 = 0.797_884_6; // sqrt(2/pi)
        for x in xs.iter_mut() {
            let v = *x;
            let u = C * (0.044_715 * v * v * v + v);
            // tanh(u) = 1 - 2 / (e^{2u} + 1)
            let t = 1.0 - 2.0 / (exp_f32(2.0 * u) + 1.0);
            *x = 0.5 * v * (1.0 + t);
        }
    }
}

pub fn relu(xs: &mut [f32]) {
    for x in xs.iter_mut() {
        *x = x.max(0.0);
    }
}

/// Softmax of one row in place.
pub fn softmax_row(row: &mut [f32]) {
    softmax_row_scaled(row, 1.0);
}

multiversion! {
    /// `row = softmax(scale · row)` in place, with 16 independent lanes for the reductions so
    /// the loops vectorise.
    pub fn softmax_row_scaled(row: &mut [f32], scale: f32) {
        let mut m = [f32::NEG_INFINITY; 16];
        let mut chunks = row.chunks_exact(16);
        for c in &mut chunks {
            for j in 0..16 {
                m[j] = m[j].max(c[j]);
            }
        }
        let mut max = chunks.remainder().iter().copied().fold(f32::NEG_INFINITY, f32::max);
        for v in m {
            max = max.max(v);
        }
        let shift = max * scale;
        let mut s = [0.0f32; 16];
        let mut chunks = row.chunks_exact_mut(16);
        for c in &mut chunks {
            for j in 0..16 {
                let e = exp_f32(c[j].mul_add(scale, -shift));
                c[j] = e;
                s[j] += e;
            }
        }
        let mut sum = 0.0f32;
        for x in chunks.into_remainder() {
            let e = exp_f32(x.mul_add(scale, -shift));
            *x = e;
            sum += e;
        }
        sum += s.iter().sum::<f32>();
        let inv = 1.0 / sum;
        for x in row.iter_mut() {
            *x *= inv;
        }
    }
}

/// `h = LayerNorm(h + delta)` row by row (`delta` already carries its bias).
pub fn residual_layer_norm(
    h: &mut [f32],
    delta: &[f32],
    width: usize,
    gamma: &[f32],
    beta: &[f32],
    eps: f32,
) {
    for (hr, dr) in h.chunks_exact_mut(width).zip(delta.chunks_exact(width)) {
        for (a, b) in hr.iter_mut().zip(dr) {
            *a += *b;
        }
        layer_norm_row(hr, gamma, beta, eps);
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

multiversion! {
    /// LayerNorm of one row in place (two-pass mean/variance in f32, like PyTorch).
    pub fn layer_norm_row(row: &mut [f32], gamma: &[f32], beta: &[f32], eps: f32) {
        let n = row.len() as f32;
        let mean = sum16(row, |x| x) / n;
        let var = sum16(row, |x| (x - mean) * (x - mean)) / n;
        let inv = 1.0 / (var + eps).sqrt();
        for ((x, g), b) in row.iter_mut().zip(gamma).zip(beta) {
            *x = (*x - mean) * inv * g + b;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exp_and_erf_are_accurate() {
        let mut worst_exp = 0.0f64;
        let mut worst_erf = 0.0f64;
        for i in -8000..8000 {
            let x = i as f32 / 100.0;
            let e = exp_f32(x) as f64;
            let r = (x as f64).exp();
            if x > -80.0 {
                worst_exp = worst_exp.max(((e - r) / r).abs());
            }
            let x = i as f32 / 2000.0; // |x| <= 4
            let r = libm_erf(x as f64);
            worst_erf = worst_erf.max((erf_f32(x) as f64 - r).abs());
        }
        assert!(worst_exp < 5e-7, "exp rel err {worst_exp}");
        assert!(worst_erf < 5e-7, "erf abs err {worst_erf}");
    }

    // High-precision erf by series / continued fraction for the test only.
    fn libm_erf(x: f64) -> f64 {
        // erf(x) = 2/sqrt(pi) * sum_n (-1)^n x^(2n+1) / (n! (2n+1)); the f64 cancellation error
        // stays below 1e-9 for |x| <= 4.
        let mut sum = 0.0f64;
        let mut term = x;
        let mut n = 0.0;
        while term.abs() > 1e-17 * sum.abs().max(1e-300) || n < 5.0 {
            sum += term / (2.0 * n + 1.0);
            n += 1.0;
            term *= -x * x / n;
            if n > 200.0 {
                break;
            }
        }
        sum * 2.0 / std::f64::consts::PI.sqrt()
    }

    #[test]
    fn softmax_and_layer_norm() {
        let mut r = vec![1.0f32, 2.0, 3.0];
        softmax_row(&mut r);
        let s: f32 = r.iter().sum();
        assert!((s - 1.0).abs() < 1e-6);
        assert!((r[2] - 0.665_240_9).abs() < 1e-6);
        let mut h = vec![1.0f32, 2.0, 3.0, 4.0];
        residual_layer_norm(&mut h, &[0.0; 4], 4, &[1.0; 4], &[0.0; 4], 1e-12);
        assert!((h[0] + 1.341_640_8).abs() < 1e-5, "{h:?}");
    }
}

/// What this CPU offers the kernels, and which ones the encoder runs on it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CpuKernels {
    /// `avx512-vnni`, `avx512`, `avx2-fma` or `portable`.
    pub tier: &'static str,
    /// The instruction-set extensions detected that some kernel could use.
    pub features: Vec<&'static str>,
    /// f32 products: the `gemm` crate, dispatching at run time.
    pub f32_products: &'static str,
    /// Bias, activation, residual and layer-norm passes.
    pub elementwise: &'static str,
    /// `precision = "q8"` products.
    pub q8_products: &'static str,
}

impl CpuKernels {
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::json!({
            "tier": self.tier,
            "features": self.features,
            "encoder": {
                "f32_products": self.f32_products,
                "elementwise": self.elementwise,
                "q8_products": self.q8_products,
            },
        })
    }
}

/// Detects the CPU's features and names the kernels chosen for them.
pub fn cpu_kernels() -> CpuKernels {
    let mut features = Vec::new();
    #[cfg(target_arch = "x86_64")]
    {
        macro_rules! probe {
            ($($f:tt),*) => {$(
                if std::arch::is_x86_feature_detected!($f) {
                    features.push($f);
                }
            )*};
        }
        probe!(
            "fma",
            "avx2",
            "avxvnni",
            "avx512f",
            "avx512bw",
            "avx512vnni",
            "avx512bf16"
        );
    }
    let has = |f: &str| features.contains(&f);
    let tier = if has("avx512f") && has("avx512bw") && has("avx512vnni") {
        "avx512-vnni"
    } else if has("avx512f") {
        "avx512"
    } else if has("avx2") && has("fma") {
        "avx2-fma"
    } else {
        "portable"
    };
    let f32_products = if has("avx512f") {
        "gemm (AVX-512)"
    } else if has("avx2") && has("fma") {
        "gemm (AVX2+FMA)"
    } else {
        "gemm (scalar)"
    };
    let elementwise = if has("avx512f") { "avx512" } else { "baseline" };
    CpuKernels {
        tier,
        features,
        f32_products,
        elementwise,
        q8_products: match q8::Q8Kernel::detect() {
            q8::Q8Kernel::Vnni => "int8 AVX-512 VNNI",
            q8::Q8Kernel::Portable => "int8 portable",
        },
    }
}
