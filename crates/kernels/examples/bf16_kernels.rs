//! What decided the bf16 kernels, measured on this CPU:
//!
//! 1. each bf16 kernel it runs (and the f32 `gemm` product beside them) on one bert-base-sized
//!    product, 510 rows × 768 inputs × 2,304 outputs, best of five, one thread;
//! 2. where the CPU has AMX-BF16: how many of 16 × 16 random 32-term sums of AMX's `tdpbf16ps`
//!    differ from the order every other bf16 kernel keeps (the odd element of each pair first,
//!    one rounding per sum), over 200 tiles. Any difference means AMX-BF16 cannot be a tier.
//!
//! ```text
//! cargo run --release -p lingua-kernels --example bf16_kernels
//! ```
#![allow(
    unsafe_code,
    reason = "AMX tile instructions as inline assembly, as in the kernels"
)]

use std::time::Instant;

use lingua_kernels::bf16::{self, Bf16Kernel, Bf16Rows, PackedBf16};
use lingua_kernels::{Tier, products};

fn lcg(seed: &mut u64) -> f32 {
    *seed = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    ((*seed >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
}

fn best_of_five(mut f: impl FnMut()) -> f64 {
    (0..5)
        .map(|_| {
            let t = Instant::now();
            f();
            t.elapsed().as_secs_f64() * 1e3
        })
        .fold(f64::INFINITY, f64::min)
}

fn main() {
    let (m, k, n) = (510, 768, 2304);
    let mut seed = 1u64;
    let w: Vec<f32> = (0..n * k).map(|_| lcg(&mut seed) * 0.05).collect();
    let x: Vec<f32> = (0..m * k).map(|_| lcg(&mut seed)).collect();
    let mut out = vec![0.0f32; m * n];
    println!("product {m} × {k} × {n}, one thread, best of five");
    let ms = best_of_five(|| products::matmul_wt(&x, m, k, &w, n, &mut out, false, 1));
    println!("  f32 (gemm crate): {ms:.1} ms");
    let packed = PackedBf16::pack(&w, n, k);
    for kernel in Bf16Kernel::ALL {
        if !kernel.tier().supported() {
            println!("  {}: not on this CPU", kernel.name());
            continue;
        }
        let mut rows = Bf16Rows::default();
        rows.convert(&x, m, k, kernel, 1);
        let ms = best_of_five(|| bf16::linear_bf16(&rows, &packed, None, &mut out, kernel, 1));
        println!("  {}: {ms:.1} ms", kernel.name());
    }
    println!(
        "  chosen at the best tier: {}",
        Bf16Kernel::for_tier(Tier::detect()).name()
    );

    #[cfg(target_arch = "x86_64")]
    amx_order();
}

/// `tdpbf16ps` on 16 × 32 by 32 × 16 random bf16 tiles against the odd-first sequential sums.
#[cfg(target_arch = "x86_64")]
fn amx_order() {
    use std::arch::asm;
    let leaf7 = std::arch::x86_64::__cpuid_count(7, 0);
    // AMX-BF16 is CPUID.7.0:EDX bit 22; `Tier::Amx.supported()` asks Linux for the tile state.
    if leaf7.edx & (1 << 22) == 0 || !Tier::Amx.supported() {
        println!("AMX-BF16: not on this CPU (or not granted)");
        return;
    }
    let mut cfg = [0u8; 64];
    cfg[0] = 1;
    for t in 0..3 {
        cfg[16 + 2 * t..18 + 2 * t].copy_from_slice(&64u16.to_le_bytes());
        cfg[48 + t] = 16;
    }
    let mut seed = 7u64;
    // A wide range of magnitudes, so that the order of the sums shows.
    let mut wide = || bf16::to_bf16(lcg(&mut seed) * 2f32.powi((lcg(&mut seed) * 20.0) as i32));
    let (mut differ, mut total) = (0usize, 0usize);
    for _ in 0..200 {
        let a: Vec<u16> = (0..16 * 32).map(|_| wide()).collect(); // 16 rows × 32 inputs
        let b: Vec<u16> = (0..16 * 32).map(|_| wide()).collect(); // 16 outputs × 32 inputs
        // B in the pair layout: row q holds, for each output, inputs 2q and 2q + 1.
        let mut bt = vec![0u16; 16 * 32];
        for q in 0..16 {
            for c in 0..16 {
                bt[q * 32 + 2 * c] = b[c * 32 + 2 * q];
                bt[q * 32 + 2 * c + 1] = b[c * 32 + 2 * q + 1];
            }
        }
        let mut c = [0f32; 256];
        // SAFETY: AMX-BF16 is present and granted (checked above); the configuration is 64
        // bytes; each tile reads or writes 16 rows of 64 bytes inside `a`, `bt` and `c`.
        unsafe {
            asm!(
                "ldtilecfg [{cfg}]",
                "tileloadd tmm0, [{c} + {s}]",
                "tileloadd tmm1, [{a} + {s}]",
                "tileloadd tmm2, [{b} + {s}]",
                "tdpbf16ps tmm0, tmm1, tmm2",
                "tilestored [{c} + {s}], tmm0",
                "tilerelease",
                cfg = in(reg) cfg.as_ptr(),
                a = in(reg) a.as_ptr(),
                b = in(reg) bt.as_ptr(),
                c = in(reg) c.as_mut_ptr(),
                s = in(reg) 64usize,
                options(nostack),
            );
        }
        for r in 0..16 {
            for o in 0..16 {
                let mut s = 0.0f32;
                for q in 0..16 {
                    for i in [2 * q + 1, 2 * q] {
                        s += bf16::from_bf16(a[r * 32 + i]) * bf16::from_bf16(b[o * 32 + i]);
                    }
                }
                total += 1;
                differ += usize::from(s.to_bits() != c[r * 16 + o].to_bits());
            }
        }
    }
    println!(
        "AMX-BF16 tdpbf16ps: {differ} of {total} sums differ from the odd-first sequential order"
    );
}
