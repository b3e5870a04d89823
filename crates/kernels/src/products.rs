//! f32 products through the `gemm` crate, which picks its own AVX-512 / AVX2+FMA / scalar
//! micro-kernels at run time (the `LINGUA_KERNELS` ceiling does not reach inside it).

/// `dst[m, n] (+)= lhs[m, k] · w[n, k]ᵀ`, `w` in PyTorch's `[out, in]` layout; `accumulate`
/// adds to what `dst` holds (a bias the caller wrote). `threads > 1` splits the product over
/// the current rayon pool.
#[expect(
    clippy::too_many_arguments,
    reason = "a GEMM call: shapes, strides and operands, as BLAS takes them"
)]
pub fn matmul_wt(
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

/// `out[m, n] = x[m, k] · w[n, k]ᵀ + bias[n]`.
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
    assert!(out.len() >= m * n && bias.len() >= n);
    for row in out[..m * n].chunks_exact_mut(n) {
        row.copy_from_slice(&bias[..n]);
    }
    matmul_wt(x, m, k, w, n, out, true, threads);
}

/// Single-threaded strided product `dst[m, n] = beta · lhs[m, k] · rhs[k, n]`, strides given as
/// (row, column) pairs in elements (attention's score and context products).
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
