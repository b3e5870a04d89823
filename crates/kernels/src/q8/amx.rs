//! The int8 product on AMX tiles (Sapphire Rapids and later): `tdpbusd` multiplies a 16 × K
//! tile of activation bytes (`xq + 128`) by a K × 16 tile of weights in the VNNI layout the
//! panels already have, into 16 × 16 exact i32 sums. Each call covers 32 rows × one 32-channel
//! panel: four accumulator tiles, two activation tiles, two weight tiles (all eight). The
//! block sums are the same integers every other kernel computes; they are scaled in f32 with
//! the same operations in the same order, so the result is bit-identical.
//!
//! Linux hands AMX's 8 KiB of tile state to a process only on request
//! (`arch_prctl(ARCH_REQ_XCOMP_PERM, XFEATURE_XTILEDATA)`), made once in [`available`]; where
//! the CPU or the kernel says no, the tier is unsupported and VNNI runs instead. Rust has no
//! stable AMX intrinsics, so the tile instructions are inline assembly.

use std::arch::asm;
use std::arch::x86_64::*;
use std::sync::OnceLock;

use super::NR;

/// Activation rows per call: two tiles of 16.
pub const ROWS: usize = 32;

const ARCH_REQ_XCOMP_PERM: libc::c_long = 0x1023;
const XFEATURE_XTILEDATA: libc::c_long = 18;

/// Whether the CPU has AMX-TILE and AMX-INT8 and Linux granted this process the tile state.
pub fn available() -> bool {
    static OK: OnceLock<bool> = OnceLock::new();
    *OK.get_or_init(|| {
        let leaf7 = __cpuid_count(7, 0);
        let cpu = leaf7.edx & (1 << 24) != 0 && leaf7.edx & (1 << 25) != 0;
        // SAFETY: arch_prctl with two integer arguments changes only this process's permission
        // to use the tile state; it fails cleanly where the kernel does not know the request.
        cpu && unsafe {
            libc::syscall(
                libc::SYS_arch_prctl,
                ARCH_REQ_XCOMP_PERM,
                XFEATURE_XTILEDATA,
            ) == 0
        }
    })
}

/// K bytes per tile product: the largest multiple of 4 up to 64 that divides the block size
/// (a multiple of 4), so that no product straddles two blocks.
pub fn chunk(bs: usize) -> usize {
    (1..=16)
        .rev()
        .map(|g| 4 * g)
        .find(|c| bs.is_multiple_of(*c))
        .unwrap_or(4)
}

/// The 64-byte tile configuration (`ldtilecfg`, palette 1): tiles 0-3 the 16 × 16 i32
/// accumulators, 4-5 activations (16 rows × `chunk` bytes), 6-7 weights (`chunk / 4` rows ×
/// 16 channels × 4 bytes).
#[repr(C, align(64))]
pub struct TileConfig([u8; 64]);

impl TileConfig {
    pub fn new(chunk: usize) -> Self {
        debug_assert!(chunk.is_multiple_of(4) && (4..=64).contains(&chunk));
        let mut c = [0u8; 64];
        c[0] = 1;
        let mut set = |t: usize, rows: usize, colsb: usize| {
            c[16 + 2 * t..18 + 2 * t].copy_from_slice(&(colsb as u16).to_le_bytes());
            c[48 + t] = rows as u8;
        };
        for t in 0..4 {
            set(t, 16, 64);
        }
        set(4, 16, chunk);
        set(5, 16, chunk);
        set(6, chunk / 4, 64);
        set(7, chunk / 4, 64);
        Self(c)
    }
}

/// The tile configuration loaded on this thread; released (tiles back to their initial, cheap
/// to save state) when dropped.
pub struct Tiles {
    chunk: usize,
}

impl Tiles {
    /// # Safety
    /// [`available`] returned true.
    pub unsafe fn load(cfg: &TileConfig, chunk: usize) -> Self {
        // SAFETY: AMX is available (caller); the configuration is 64 aligned bytes.
        unsafe { asm!("ldtilecfg [{}]", in(reg) cfg.0.as_ptr(), options(nostack, readonly)) };
        Self { chunk }
    }

    /// `acc[r, c] = Σ_b D[r, c, b] · (sa[r, b] · sw[b, c])` for `rows` (≤ 32) rows of one
    /// panel, as the portable kernel computes it.
    ///
    /// # Safety
    /// The CPU supports avx512f; `a` holds 32 rows of `kpad` bytes, `b` the panel (`kpad / 4`
    /// groups of 128 bytes), `sa` at least `rows` rows of `nb` scales, `sw` `nb` blocks of
    /// `NR` scales; `bs` is a multiple of the configured chunk and `kpad = bs · nb`.
    #[target_feature(enable = "avx512f")]
    #[allow(clippy::too_many_arguments, reason = "one call's operands")]
    pub unsafe fn block(
        &self,
        a: &[u8],
        b: &[i8],
        sa: &[f32],
        rows: usize,
        sw: &[f32],
        (kpad, bs, nb): (usize, usize, usize),
        acc: &mut [f32; ROWS * NR],
    ) {
        debug_assert!(a.len() >= ROWS * kpad && b.len() >= kpad / 4 * 128);
        debug_assert!(
            sa.len() >= rows * nb && sw.len() >= nb * NR && bs.is_multiple_of(self.chunk)
        );
        acc.fill(0.0);
        let mut d = [0i32; ROWS * NR];
        let (ap, bp, dp) = (a.as_ptr(), b.as_ptr(), d.as_mut_ptr());
        for blk in 0..nb {
            // SAFETY (all tile instructions): the tiles are configured (`load`); every
            // activation row read is `a[r * kpad + k .. + chunk]` with r < 32 and
            // k + chunk <= kpad, every weight row `b[(k / 4 + i) * 128 .. + 128]` with
            // k / 4 + i < kpad / 4, every store a 16 × 16 quarter of `d`.
            unsafe {
                asm!(
                    "tilezero tmm0",
                    "tilezero tmm1",
                    "tilezero tmm2",
                    "tilezero tmm3",
                    options(nostack, nomem)
                );
                let mut k = blk * bs;
                while k < (blk + 1) * bs {
                    asm!(
                        "tileloadd tmm4, [{a0} + {sa}*1]",
                        "tileloadd tmm5, [{a1} + {sa}*1]",
                        "tileloadd tmm6, [{b0} + {sb}*1]",
                        "tileloadd tmm7, [{b1} + {sb}*1]",
                        "tdpbusd tmm0, tmm4, tmm6",
                        "tdpbusd tmm1, tmm4, tmm7",
                        "tdpbusd tmm2, tmm5, tmm6",
                        "tdpbusd tmm3, tmm5, tmm7",
                        a0 = in(reg) ap.add(k),
                        a1 = in(reg) ap.add(16 * kpad + k),
                        sa = in(reg) kpad,
                        b0 = in(reg) bp.add(k / 4 * 128),
                        b1 = in(reg) bp.add(k / 4 * 128 + 64),
                        sb = in(reg) 128usize,
                        options(nostack, readonly)
                    );
                    k += self.chunk;
                }
                asm!(
                    "tilestored [{d0} + {s}*1], tmm0",
                    "tilestored [{d1} + {s}*1], tmm1",
                    "tilestored [{d2} + {s}*1], tmm2",
                    "tilestored [{d3} + {s}*1], tmm3",
                    d0 = in(reg) dp,
                    d1 = in(reg) dp.add(16),
                    d2 = in(reg) dp.add(16 * NR),
                    d3 = in(reg) dp.add(16 * NR + 16),
                    s = in(reg) NR * 4,
                    options(nostack)
                );
            }
            // SAFETY: blk * NR + 32 <= sw.len(); row r < rows <= 32 of `d` and `acc`.
            unsafe {
                let s0 = _mm512_loadu_ps(sw.as_ptr().add(blk * NR));
                let s1 = _mm512_loadu_ps(sw.as_ptr().add(blk * NR + 16));
                for r in 0..rows {
                    let s = _mm512_set1_ps(sa[r * nb + blk]);
                    let f = acc.as_mut_ptr().add(r * NR);
                    let dr = d.as_ptr().add(r * NR);
                    for (h, sh) in [(0, s0), (16, s1)] {
                        let di =
                            _mm512_cvtepi32_ps(_mm512_loadu_si512(dr.add(h) as *const __m512i));
                        let v =
                            _mm512_fmadd_ps(di, _mm512_mul_ps(s, sh), _mm512_loadu_ps(f.add(h)));
                        _mm512_storeu_ps(f.add(h), v);
                    }
                }
            }
        }
    }
}

impl Drop for Tiles {
    fn drop(&mut self) {
        // SAFETY: the tiles were configured by `load`; releasing them touches no memory.
        unsafe { asm!("tilerelease", options(nostack, nomem)) };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunks_divide_the_block() {
        assert_eq!(chunk(32), 32);
        assert_eq!(chunk(768), 64);
        assert_eq!(chunk(260), 52);
        assert_eq!(chunk(4), 4);
        for bs in (4..2000).step_by(4) {
            let c = chunk(bs);
            assert!(bs.is_multiple_of(c) && c.is_multiple_of(4) && c <= 64);
        }
    }
}
