//! The one CPU-feature dispatch: which tier of kernels this process runs, decided once.
//!
//! Tiers, lowest first: `portable` (plain Rust, whatever the target's baseline vectorises
//! it to), `avx2` (x86_64 with AVX2 and FMA: the same bodies compiled with them enabled,
//! and the similarity scan in intrinsics), `avx512` (x86_64 with AVX-512 F: the dense,
//! pointwise and attention kernels in intrinsics), `neon` (aarch64, where NEON is
//! baseline). Every kernel in this crate asks [`Tier::current`]; nothing else detects CPU
//! features.
//!
//! `NVR_KERNEL_TIER=portable|avx2|avx512|neon` caps the tier (never raises it past what
//! the CPU has), so an AVX-512 machine can measure and test the AVX2 and portable paths.

use std::sync::OnceLock;

/// A kernel tier; ordered, so `tier >= Tier::Avx2` reads as "AVX2 kernels may run".
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Tier {
    Portable,
    Neon,
    Avx2,
    Avx512,
}

/// The environment variable that caps the tier.
pub const TIER_ENV: &str = "NVR_KERNEL_TIER";

impl Tier {
    pub fn name(self) -> &'static str {
        match self {
            Tier::Portable => "portable",
            Tier::Neon => "neon",
            Tier::Avx2 => "avx2+fma",
            Tier::Avx512 => "avx512",
        }
    }

    /// Parse a tier name (`avx2` and `avx2+fma` both name the AVX2 tier).
    pub fn parse(s: &str) -> Option<Tier> {
        match s.trim().to_ascii_lowercase().as_str() {
            "portable" => Some(Tier::Portable),
            "neon" => Some(Tier::Neon),
            "avx2" | "avx2+fma" => Some(Tier::Avx2),
            "avx512" | "avx-512" => Some(Tier::Avx512),
            _ => None,
        }
    }

    /// Every tier this CPU can run, best first (portable always, last).
    pub fn supported() -> Vec<Tier> {
        static SUPPORTED: OnceLock<Vec<Tier>> = OnceLock::new();
        SUPPORTED.get_or_init(Tier::detect).clone()
    }

    // The pushes differ per architecture (on aarch64 they are all unconditional).
    #[allow(clippy::vec_init_then_push)]
    fn detect() -> Vec<Tier> {
        let mut v = Vec::new();
        #[cfg(target_arch = "x86_64")]
        {
            if std::is_x86_feature_detected!("avx512f")
                && std::is_x86_feature_detected!("avx2")
                && std::is_x86_feature_detected!("fma")
            {
                v.push(Tier::Avx512);
            }
            if std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma") {
                v.push(Tier::Avx2);
            }
        }
        #[cfg(target_arch = "aarch64")]
        v.push(Tier::Neon);
        v.push(Tier::Portable);
        v
    }

    /// Whether this CPU can run kernels of `self`.
    pub fn is_supported(self) -> bool {
        static SUPPORTED: OnceLock<Vec<Tier>> = OnceLock::new();
        SUPPORTED.get_or_init(Tier::detect).contains(&self)
    }

    /// The best tier of this CPU, capped by `NVR_KERNEL_TIER` when set; decided once.
    pub fn current() -> Tier {
        static CURRENT: OnceLock<Tier> = OnceLock::new();
        *CURRENT.get_or_init(|| {
            let cap = std::env::var(TIER_ENV).ok().and_then(|v| Tier::parse(&v));
            Tier::capped(cap)
        })
    }

    /// The best supported tier at or below `cap` (the best of all without one).
    pub fn capped(cap: Option<Tier>) -> Tier {
        let supported = Tier::supported();
        match cap {
            None => supported[0],
            Some(c) => supported
                .into_iter()
                .find(|&t| t <= c)
                .unwrap_or(Tier::Portable),
        }
    }

    /// AVX2+FMA bodies may run (x86_64 only).
    pub fn avx2(self) -> bool {
        cfg!(target_arch = "x86_64") && self >= Tier::Avx2
    }

    /// AVX-512 kernels may run (x86_64 only).
    pub fn avx512(self) -> bool {
        cfg!(target_arch = "x86_64") && self >= Tier::Avx512
    }

    /// Panics unless this CPU can run `self`: a kernel asked for a tier explicitly (tests,
    /// benches) must not execute instructions the CPU lacks.
    pub(crate) fn check(self) {
        assert!(
            self.is_supported(),
            "kernel tier {} requested on a CPU without it",
            self.name()
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cap_never_raises_the_tier_and_portable_is_always_there() {
        let best = Tier::capped(None);
        assert_eq!(best, Tier::supported()[0]);
        assert_eq!(Tier::capped(Some(Tier::Portable)), Tier::Portable);
        assert!(Tier::capped(Some(Tier::Avx512)) <= best);
        assert_eq!(*Tier::supported().last().unwrap(), Tier::Portable);
        #[cfg(target_arch = "aarch64")]
        assert_eq!(best, Tier::Neon);
        for t in [Tier::Portable, Tier::Neon, Tier::Avx2, Tier::Avx512] {
            assert_eq!(Tier::parse(t.name()), Some(t));
        }
        assert_eq!(Tier::parse("avx2"), Some(Tier::Avx2));
        assert_eq!(Tier::parse("sse9"), None);
    }
}
