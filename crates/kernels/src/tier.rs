//! Instruction-set tiers: what this CPU offers, the ceiling an operator or a test sets
//! (`LINGUA_KERNELS=portable|avx2-fma|avx-vnni|avx512|avx512-vnni|avx512-bf16|amx`, read once), and
//! the kernels that run under both. A ceiling above what the CPU has changes nothing; below it,
//! the kernels of the lower tier run (that is how CI tests every path on one machine).

use std::sync::OnceLock;

/// Instruction-set tiers, lowest first. Each kernel family picks the best tier at or below the
/// ceiling that the CPU supports: int8 products use VNNI (512- or 256-bit) or AVX2, the f32
/// element-wise passes AVX-512 or AVX2 + FMA, bf16 products AVX512_BF16 or widened FMAs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
#[repr(u8)]
pub enum Tier {
    /// Plain Rust for the build's baseline (SSE2 on x86-64), any CPU.
    Portable = 0,
    /// AVX2 + FMA (Haswell, Zen 1 and later).
    Avx2 = 1,
    /// AVX2 + FMA + AVX-VNNI: 256-bit int8 dot products (Alder Lake, Sapphire Rapids, Zen 5).
    AvxVnni = 2,
    /// AVX-512 F + BW without VNNI (Skylake-X).
    Avx512 = 3,
    /// AVX-512 F + BW + VNNI: 512-bit int8 dot products (Cascade Lake, Ice Lake, Zen 4 and later).
    Avx512Vnni = 4,
    /// AVX-512 VNNI + AVX512_BF16: `vdpbf16ps` (Cooper Lake, Zen 4, Sapphire Rapids and later).
    Avx512Bf16 = 5,
    /// AVX-512 VNNI plus AMX-INT8 tiles, granted by the OS (Sapphire Rapids and later).
    Amx = 6,
}

impl Tier {
    pub const ALL: [Tier; 7] = [
        Tier::Portable,
        Tier::Avx2,
        Tier::AvxVnni,
        Tier::Avx512,
        Tier::Avx512Vnni,
        Tier::Avx512Bf16,
        Tier::Amx,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Tier::Portable => "portable",
            Tier::Avx2 => "avx2-fma",
            Tier::AvxVnni => "avx-vnni",
            Tier::Avx512 => "avx512",
            Tier::Avx512Vnni => "avx512-vnni",
            Tier::Avx512Bf16 => "avx512-bf16",
            Tier::Amx => "amx",
        }
    }

    pub fn parse(s: &str) -> Option<Tier> {
        Tier::ALL.into_iter().find(|t| t.name() == s.trim())
    }

    /// Whether this CPU has every instruction the tier's kernels use.
    pub fn supported(self) -> bool {
        #[cfg(target_arch = "x86_64")]
        {
            use std::arch::is_x86_feature_detected as has;
            let avx2 = || has!("avx2") && has!("fma");
            let avx512 = || has!("avx512f") && has!("avx512bw") && avx2();
            match self {
                Tier::Portable => true,
                Tier::Avx2 => avx2(),
                Tier::AvxVnni => avx2() && has!("avxvnni"),
                Tier::Avx512 => avx512(),
                Tier::Avx512Vnni => avx512() && has!("avx512vnni"),
                Tier::Avx512Bf16 => avx512() && has!("avx512vnni") && has!("avx512bf16"),
                Tier::Amx => avx512() && has!("avx512vnni") && crate::q8::amx::available(),
            }
        }
        #[cfg(not(target_arch = "x86_64"))]
        {
            self == Tier::Portable
        }
    }

    /// The best tier this CPU supports.
    pub fn detect() -> Tier {
        static BEST: OnceLock<Tier> = OnceLock::new();
        *BEST.get_or_init(|| {
            Tier::ALL
                .into_iter()
                .rev()
                .find(|t| t.supported())
                .unwrap_or(Tier::Portable)
        })
    }
}

/// The tier `LINGUA_KERNELS` names; an error names the bad value and the choices.
pub fn env_ceiling() -> Result<Option<Tier>, String> {
    match std::env::var("LINGUA_KERNELS") {
        Err(_) => Ok(None),
        Ok(v) if v.trim().is_empty() => Ok(None),
        Ok(v) => Tier::parse(&v).map(Some).ok_or_else(|| {
            let names: Vec<_> = Tier::ALL.iter().map(|t| t.name()).collect();
            format!(
                "LINGUA_KERNELS = {v:?} is not a kernel tier (one of: {})",
                names.join(", ")
            )
        }),
    }
}

/// The ceiling in force: `LINGUA_KERNELS`, read once (an invalid value sets none; the binary
/// refuses it at startup through [`env_ceiling`]), else none (the best tier).
pub fn ceiling() -> Tier {
    static CEILING: OnceLock<Tier> = OnceLock::new();
    *CEILING.get_or_init(|| env_ceiling().ok().flatten().unwrap_or(Tier::Amx))
}

/// The tier in force: the best the CPU supports, capped by the ceiling.
pub fn current() -> Tier {
    Tier::detect().min(ceiling())
}

/// Which f32 element-wise build runs at `tier`: AVX-512, AVX2 + FMA or the baseline.
pub fn math_tier(tier: Tier) -> Tier {
    [Tier::Avx512, Tier::Avx2]
        .into_iter()
        .find(|t| *t <= tier && t.supported())
        .unwrap_or(Tier::Portable)
}

/// The CPU, the tier in force and the kernels both model runtimes run on it, for `/readyz`
/// and the startup log.
pub fn report() -> serde_json::Value {
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
        // AMX detection is not stable in `std`; CPUID leaf 7 says it (EDX bits 22, 24, 25).
        let leaf7 = std::arch::x86_64::__cpuid_count(7, 0);
        for (bit, name) in [(24, "amx-tile"), (25, "amx-int8"), (22, "amx-bf16")] {
            if leaf7.edx & (1 << bit) != 0 {
                features.push(name);
            }
        }
    }
    #[cfg(target_arch = "x86_64")]
    let amx_granted = crate::q8::amx::available();
    #[cfg(not(target_arch = "x86_64"))]
    let amx_granted = false;
    let tier = current();
    let f32_products = if features.contains(&"avx512f") {
        "gemm crate (AVX-512, its own dispatch)"
    } else if features.contains(&"avx2") && features.contains(&"fma") {
        "gemm crate (AVX2+FMA, its own dispatch)"
    } else {
        "gemm crate (scalar)"
    };
    serde_json::json!({
        "tier": tier.name(),
        "detected": Tier::detect().name(),
        "ceiling": (ceiling() < Tier::detect()).then(|| ceiling().name()),
        "features": features,
        // whether Linux granted this process the AMX tile state (only asked where the CPU has it)
        "amx_granted": amx_granted,
        "kernels": {
            "f32_products": f32_products,
            "elementwise": math_tier(tier).name(),
            "q8_products": crate::q8::Q8Kernel::for_tier(tier).name(),
            "bf16_products": crate::bf16::Bf16Kernel::for_tier(tier).name(),
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_order() {
        for t in Tier::ALL {
            assert_eq!(Tier::parse(t.name()), Some(t));
        }
        assert_eq!(Tier::parse("sse9"), None);
        assert!(Tier::Portable < Tier::Avx2 && Tier::AvxVnni < Tier::Avx512Vnni);
        assert!(Tier::Portable.supported());
        assert!(Tier::detect().supported());
        assert_eq!(math_tier(Tier::Portable), Tier::Portable);
    }
}
