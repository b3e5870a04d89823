//! CPU kernels shared by the encoder (LLMLingua-2) and the causal LM (LLMLingua): every product
//! and element-wise pass both runtimes do, written once.
//!
//! - [`tier`]: what the CPU offers, the tier the kernels run at (the best the CPU has, capped by
//!   `LINGUA_KERNELS`) and the description `/readyz` shows.
//! - [`products`]: f32 products through the `gemm` crate (its own AVX-512 / AVX2 dispatch).
//! - [`q8`]: int8 × int8 → int32 products, one micro-kernel per tier (AVX-512 VNNI, AVX-VNNI,
//!   AVX2, portable), all giving bit-identical integer sums.
//! - [`bf16`]: bf16 × bf16 → f32 products in the order AVX512_BF16's `vdpbf16ps` sums (that
//!   instruction, or widened fused multiply-adds on AVX-512F / AVX2, or portable Rust), all
//!   bit-identical.
//! - [`math`]: exp / tanh / erf, activations, norms, softmaxes and log-softmax, compiled once
//!   per tier; every tier gives bit-identical results (fused multiply-adds and fixed
//!   16-lane reduction orders), so the cap changes speed, never output.
#![allow(
    unsafe_code,
    reason = "SIMD intrinsics behind run-time CPU checks and GEMM over raw row pointers"
)]

pub mod bf16;
pub mod math;
pub mod products;
pub mod q8;
pub mod tier;

pub use tier::Tier;

/// A raw output pointer handed to rayon tasks that write disjoint regions.
#[derive(Clone, Copy)]
pub struct SendPtr(pub *mut f32);
// SAFETY: only used to hand disjoint output regions to rayon tasks.
unsafe impl Send for SendPtr {}
// SAFETY: as above.
unsafe impl Sync for SendPtr {}
impl SendPtr {
    pub fn get(self) -> *mut f32 {
        self.0
    }
}
