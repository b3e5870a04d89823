//! Element-wise passes in f32: exp / tanh / erf, the activations, residual + norms, softmaxes
//! and log-softmax NLL, written as plain loops that LLVM vectorises and compiled once per tier
//! (AVX-512, AVX2 + FMA, baseline). Every build gives bit-identical results: `mul_add` is
//! always fused and reductions keep 16 independent partial sums in a fixed order.

use crate::tier::{self, Tier};

/// Defines `$name(args)` at the tier in force and `$at(tier, args)` at a given tier (falling
/// back to a lower build where the CPU lacks the one asked for).
macro_rules! dispatch {
    ($(#[$m:meta])* pub fn $name:ident / $at:ident ($($arg:ident: $ty:ty),*) $(-> $ret:ty)? $body:block) => {
        $(#[$m])*
        #[inline]
        pub fn $name($($arg: $ty),*) $(-> $ret)? {
            $at(tier::current(), $($arg),*)
        }

        #[doc = concat!("[`", stringify!($name), "`] compiled for `tier` (or the best build below it this CPU has).")]
        pub fn $at(tier: Tier, $($arg: $ty),*) $(-> $ret)? {
            #[inline(always)]
            fn inner($($arg: $ty),*) $(-> $ret)? $body
            #[cfg(target_arch = "x86_64")]
            {
                #[target_feature(enable = "avx512f,avx2,fma")]
                unsafe fn wide($($arg: $ty),*) $(-> $ret)? { inner($($arg),*) }
                #[target_feature(enable = "avx2,fma")]
                unsafe fn mid($($arg: $ty),*) $(-> $ret)? { inner($($arg),*) }
                match tier::math_tier(tier) {
                    // SAFETY: math_tier only returns a tier whose features were detected.
                    Tier::Avx512 => return unsafe { wide($($arg),*) },
                    // SAFETY: as above (avx2 and fma).
                    Tier::Avx2 => return unsafe { mid($($arg),*) },
                    _ => {}
                }
            }
            let _ = tier;
            inner($($arg),*)
        }
    };
}

const LOG2E: f32 = std::f32::consts::LOG2_E;

/// `e^x` to about 1 ulp (Cephes range reduction and polynomial), branch-free so that loops over
/// it vectorise. Inputs below -87.3 give ~1e-38 instead of 0 (harmless in softmax sums; masked
/// entries are never passed here).
#[inline(always)]
pub fn exp_f32(x: f32) -> f32 {
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
pub fn tanh_f32(x: f32) -> f32 {
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

/// `erf(x)` from `1 - erfc`, Numerical Recipes' erfc Chebyshev fit (relative error < 1.2e-7).
#[inline(always)]
pub fn erf_f32(x: f32) -> f32 {
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
    pub fn gelu_erf / gelu_erf_at (xs: &mut [f32]) {
        for x in xs.iter_mut() {
            let v = *x;
            *x = 0.5 * v * (1.0 + erf_f32(v * std::f32::consts::FRAC_1_SQRT_2));
        }
    }
}

dispatch! {
    /// GELU with the tanh approximation (`gelu_new`, `gelu_pytorch_tanh`), in place.
    pub fn gelu_tanh / gelu_tanh_at (xs: &mut [f32]) {
        const C: f32 = 0.797_884_6; // sqrt(2/pi)
        for x in xs.iter_mut() {
            let v = *x;
            let t = tanh_f32(C * (v + 0.044_715 * (v * v * v)));
            *x = 0.5 * v * (1.0 + t);
        }
    }
}

/// ReLU in place.
pub fn relu(xs: &mut [f32]) {
    for x in xs.iter_mut() {
        *x = x.max(0.0);
    }
}

dispatch! {
    /// `gate[i] = silu(gate[i]) · up[i]` (Llama's MLP), in place in `gate`.
    pub fn silu_mul / silu_mul_at (gate: &mut [f32], up: &[f32]) {
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
    /// LayerNorm of one row in place (two-pass mean and biased variance in f32, like PyTorch).
    pub fn layer_norm_row / layer_norm_row_at (row: &mut [f32], gamma: &[f32], beta: &[f32], eps: f32) {
        let n = row.len() as f32;
        let mean = sum16(row, |x| x) / n;
        let var = sum16(row, |x| (x - mean) * (x - mean)) / n;
        let inv = 1.0 / (var + eps).sqrt();
        for ((x, g), b) in row.iter_mut().zip(gamma).zip(beta) {
            *x = (*x - mean) * inv * *g + *b;
        }
    }
}

dispatch! {
    /// `row = weight · row / sqrt(mean(row²) + eps)` in place (Llama's RMSNorm, f32).
    pub fn rms_norm_row / rms_norm_row_at (row: &mut [f32], weight: &[f32], eps: f32) {
        let n = row.len() as f32;
        let ms = sum16(row, |x| x * x) / n;
        let inv = 1.0 / (ms + eps).sqrt();
        for (x, w) in row.iter_mut().zip(weight) {
            *x = *w * (*x * inv);
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

dispatch! {
    /// `row = softmax(scale · row)` in place, with 16 independent lanes for the reductions.
    pub fn softmax_row_scaled / softmax_row_scaled_at (row: &mut [f32], scale: f32) {
        let shift = max16(row) * scale;
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

/// Softmax of one row in place.
pub fn softmax_row(row: &mut [f32]) {
    softmax_row_scaled(row, 1.0);
}

/// Softmax of `row[..valid]` in place; `row[valid..]` (masked keys) is set to zero.
pub fn masked_softmax_row(row: &mut [f32], valid: usize) {
    let (live, dead) = row.split_at_mut(valid);
    dead.fill(0.0);
    softmax_row_scaled(live, 1.0);
}

dispatch! {
    /// `-log_softmax(logits)[target]`: max subtraction, f32 sum of exponentials (like PyTorch's
    /// CrossEntropyLoss on f32 logits).
    pub fn nll_row / nll_row_at (logits: &[f32], target: usize) -> f32 {
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
        let mut d = src;
        layer_norm_row(&mut d, &[1.0; 4], &[0.5; 4], 1e-12);
        assert!((d[0] - 0.5 + 1.341_640_8).abs() < 1e-5, "{d:?}");
        let mut d = src;
        rms_norm_row(&mut d, &[2.0; 4], 0.0);
        let rms = (30.0f32 / 4.0).sqrt();
        assert!((d[3] - 8.0 / rms).abs() < 1e-5, "{d:?}");
        let mut h = src;
        residual_layer_norm(&mut h, &[1.0; 4], 4, &[1.0; 4], &[0.0; 4], 1e-12);
        assert!((h[0] + 1.341_640_8).abs() < 1e-5, "{h:?}");
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

    /// Every build this CPU has (AVX-512, AVX2 + FMA, baseline) gives the same bits, so a
    /// kernel ceiling changes speed, never a decision.
    #[test]
    fn every_tier_gives_the_same_bits() {
        let mut seed = 0x9e37_79b9_7f4a_7c15u64;
        let xs: Vec<f32> = (0..1037)
            .map(|_| {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                ((seed >> 40) as f32 / (1u64 << 24) as f32 - 0.5) * 12.0
            })
            .collect();
        let w: Vec<f32> = xs.iter().map(|x| 1.0 + x / 40.0).collect();
        let run = |t: Tier| {
            let mut out = Vec::new();
            let mut a = xs.clone();
            gelu_erf_at(t, &mut a);
            out.extend(&a);
            let mut a = xs.clone();
            gelu_tanh_at(t, &mut a);
            out.extend(&a);
            let mut a = xs.clone();
            silu_mul_at(t, &mut a, &w);
            out.extend(&a);
            let mut a = xs.clone();
            layer_norm_row_at(t, &mut a, &w, &xs, 1e-5);
            out.extend(&a);
            let mut a = xs.clone();
            rms_norm_row_at(t, &mut a, &w, 1e-6);
            out.extend(&a);
            let mut a = xs.clone();
            softmax_row_scaled_at(t, &mut a, 0.125);
            out.extend(&a);
            out.push(nll_row_at(t, &xs, 17));
            out.iter().map(|v| v.to_bits()).collect::<Vec<_>>()
        };
        let portable = run(Tier::Portable);
        for t in Tier::ALL {
            if t.supported() {
                assert!(run(t) == portable, "{t:?} differs from the portable build");
            }
        }
    }
}
