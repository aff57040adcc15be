//! nvr-edge's own kernels: every piece of architecture-specific code and every `unsafe`
//! of the product lives in this crate, behind one CPU-feature dispatch ([`Tier`]).
//!
//! - [`tier`]: which kernels run (portable, AVX2+FMA, AVX-512, NEON), decided once.
//! - similarity (this file): dot products and gallery scans for household matching.
//! - [`rows`]: layer norm, softmax, quick-GELU, per-channel ops, PReLU, hard-swish.
//! - [`attention`]: scaled dot-product attention per batch item.
//! - [`quant`]: `i8` rows with one scale each, their exact integer scan and the bound
//!   that lets household matching re-score only the rows that could still win.
//! - [`dense`], [`pointwise`]: the AVX-512 products of X-CLIP's dense layers and of 1x1
//!   convolutions.
//!
//! The kernels are plain slice functions; the tract ops that call them, and the graph
//! rewrites that put those ops in a plan, are the application's (`inference::ops`). Each
//! kernel is tested against its portable version or its definition on every tier the CPU
//! has, and on aarch64 under qemu-user.
//!
//! Similarity: every kernel agrees with the scalar f64 reference in [`dot_f64`] within
//! 1e-5 for unit vectors. Rows are scanned four at a time so each probe load feeds four
//! rows, with two accumulators per row to hide the FMA latency.

#![deny(unsafe_op_in_unsafe_fn)]

pub mod attention;
pub mod dense;
pub mod pointwise;
pub mod quant;
pub mod rows;
pub mod tier;

pub use tier::Tier;

/// Which kernel the dispatcher picked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kernel {
    Avx2Fma,
    Neon,
    Portable,
}

impl Kernel {
    pub fn name(self) -> &'static str {
        match self {
            Kernel::Avx2Fma => "avx2+fma",
            Kernel::Neon => "neon",
            Kernel::Portable => "portable",
        }
    }

    /// Kernels this CPU can run, best first (the portable one always).
    pub fn available() -> Vec<Kernel> {
        let mut v = Vec::new();
        for t in Tier::supported() {
            let k = match t {
                Tier::Avx512 | Tier::Avx2 => Kernel::Avx2Fma,
                Tier::Neon => Kernel::Neon,
                Tier::Portable => Kernel::Portable,
            };
            if !v.contains(&k) {
                v.push(k);
            }
        }
        v
    }

    /// The kernel of the current tier ([`Tier::current`]).
    pub fn best() -> Kernel {
        match Tier::current() {
            Tier::Avx512 | Tier::Avx2 => Kernel::Avx2Fma,
            Tier::Neon => Kernel::Neon,
            Tier::Portable => Kernel::Portable,
        }
    }

    /// Dot product of two equal-length slices.
    ///
    /// # Panics
    /// If the lengths differ.
    pub fn dot(self, a: &[f32], b: &[f32]) -> f32 {
        assert_eq!(a.len(), b.len(), "dot of vectors of different lengths");
        let mut out = [0f32; 1];
        self.scan(b, a, a.len(), &mut out);
        out[0]
    }

    /// Dot product of `probe` with each `dim`-long row of the row-major `rows`, written to
    /// `out` (one value per row).
    ///
    /// # Panics
    /// If `probe.len() != dim`, `rows.len() != out.len() * dim`, or `dim == 0`.
    pub fn scan(self, rows: &[f32], probe: &[f32], dim: usize, out: &mut [f32]) {
        assert!(dim > 0, "dimension must be > 0");
        assert_eq!(probe.len(), dim, "probe length");
        assert_eq!(rows.len(), out.len() * dim, "rows length");
        match self {
            #[cfg(target_arch = "x86_64")]
            Kernel::Avx2Fma => {
                Tier::Avx2.check();
                // SAFETY: the CPU supports AVX2 and FMA (checked just above); lengths were
                // checked above too, and the kernel reads only within them.
                unsafe { x86::scan(rows, probe, dim, out) }
            }
            #[cfg(target_arch = "aarch64")]
            // SAFETY: NEON is part of the aarch64 baseline; lengths were checked above.
            Kernel::Neon => unsafe { neon::scan(rows, probe, dim, out) },
            Kernel::Portable => portable::scan(rows, probe, dim, out),
            #[allow(unreachable_patterns)]
            other => panic!("kernel {} is not built for this architecture", other.name()),
        }
    }
}

/// Dot product with the best kernel.
pub fn dot(a: &[f32], b: &[f32]) -> f32 {
    Kernel::best().dot(a, b)
}

/// Scan rows with the best kernel (see [`Kernel::scan`]).
pub fn scan(rows: &[f32], probe: &[f32], dim: usize, out: &mut [f32]) {
    Kernel::best().scan(rows, probe, dim, out)
}

/// The reference: a plain dot product accumulated in f64.
pub fn dot_f64(a: &[f32], b: &[f32]) -> f64 {
    a.iter()
        .zip(b)
        .map(|(&x, &y)| f64::from(x) * f64::from(y))
        .sum()
}

/// Euclidean norm, accumulated in f64.
pub fn norm(a: &[f32]) -> f64 {
    dot_f64(a, a).sqrt()
}

/// Scale `v` to unit length in place. Returns false (and leaves `v` alone) when its norm
/// is zero or not finite.
pub fn normalize(v: &mut [f32]) -> bool {
    let n = norm(v);
    if !(n.is_finite() && n > 0.0) {
        return false;
    }
    let inv = (1.0 / n) as f32;
    v.iter_mut().for_each(|x| *x *= inv);
    true
}

/// Cosine similarity; 0 when either vector is zero (or not finite), never NaN.
pub fn cosine_similarity(a: &[f32], b: &[f32]) -> f32 {
    if a.len() != b.len() || a.is_empty() {
        return 0.0;
    }
    let (na, nb) = (norm(a), norm(b));
    if !(na.is_finite() && nb.is_finite() && na > 0.0 && nb > 0.0) {
        return 0.0;
    }
    let c = f64::from(dot(a, b)) / (na * nb);
    if c.is_finite() {
        c.clamp(-1.0, 1.0) as f32
    } else {
        0.0
    }
}

mod portable {
    /// Eight independent lanes that the compiler maps onto whatever vector unit exists.
    pub fn scan(rows: &[f32], probe: &[f32], dim: usize, out: &mut [f32]) {
        for (row, o) in rows.chunks_exact(dim).zip(out.iter_mut()) {
            let mut acc = [0f32; 8];
            let mut rc = row.chunks_exact(8);
            let mut pc = probe.chunks_exact(8);
            for (r, p) in (&mut rc).zip(&mut pc) {
                for i in 0..8 {
                    acc[i] += r[i] * p[i];
                }
            }
            let mut s: f32 = acc.iter().sum();
            for (r, p) in rc.remainder().iter().zip(pc.remainder()) {
                s += r * p;
            }
            *o = s;
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use std::arch::x86_64::*;

    #[target_feature(enable = "avx2,fma")]
    fn hsum(v: __m256) -> f32 {
        let hi = _mm256_extractf128_ps(v, 1);
        let lo = _mm256_castps256_ps128(v);
        let s = _mm_add_ps(hi, lo);
        let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
        let s = _mm_add_ss(s, _mm_shuffle_ps(s, s, 1));
        _mm_cvtss_f32(s)
    }

    /// # Safety
    /// The CPU must support AVX2 and FMA; `probe.len() == dim` and
    /// `rows.len() == out.len() * dim`.
    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn scan(rows: &[f32], probe: &[f32], dim: usize, out: &mut [f32]) {
        let n = out.len();
        let body = dim - dim % 16;
        let p = probe.as_ptr();
        let mut r = 0;
        while r + 4 <= n {
            let base = rows.as_ptr().wrapping_add(r * dim);
            let (r0, r1, r2, r3) = (
                base,
                base.wrapping_add(dim),
                base.wrapping_add(2 * dim),
                base.wrapping_add(3 * dim),
            );
            let mut a = [_mm256_setzero_ps(); 8];
            let mut k = 0;
            while k < body {
                // SAFETY: k + 16 <= body <= dim, so every load is inside the probe and
                // inside rows r..r+4, which exist because r + 4 <= n.
                unsafe {
                    let p0 = _mm256_loadu_ps(p.add(k));
                    let p1 = _mm256_loadu_ps(p.add(k + 8));
                    a[0] = _mm256_fmadd_ps(_mm256_loadu_ps(r0.add(k)), p0, a[0]);
                    a[1] = _mm256_fmadd_ps(_mm256_loadu_ps(r0.add(k + 8)), p1, a[1]);
                    a[2] = _mm256_fmadd_ps(_mm256_loadu_ps(r1.add(k)), p0, a[2]);
                    a[3] = _mm256_fmadd_ps(_mm256_loadu_ps(r1.add(k + 8)), p1, a[3]);
                    a[4] = _mm256_fmadd_ps(_mm256_loadu_ps(r2.add(k)), p0, a[4]);
                    a[5] = _mm256_fmadd_ps(_mm256_loadu_ps(r2.add(k + 8)), p1, a[5]);
                    a[6] = _mm256_fmadd_ps(_mm256_loadu_ps(r3.add(k)), p0, a[6]);
                    a[7] = _mm256_fmadd_ps(_mm256_loadu_ps(r3.add(k + 8)), p1, a[7]);
                }
                k += 16;
            }
            for j in 0..4 {
                let mut s = hsum(_mm256_add_ps(a[2 * j], a[2 * j + 1]));
                let row = &rows[(r + j) * dim..(r + j + 1) * dim];
                for t in body..dim {
                    s += row[t] * probe[t];
                }
                out[r + j] = s;
            }
            r += 4;
        }
        while r < n {
            let row = &rows[r * dim..(r + 1) * dim];
            let (mut a0, mut a1) = (_mm256_setzero_ps(), _mm256_setzero_ps());
            let mut k = 0;
            while k < body {
                // SAFETY: k + 16 <= body <= dim = row.len() = probe.len().
                unsafe {
                    a0 = _mm256_fmadd_ps(
                        _mm256_loadu_ps(row.as_ptr().add(k)),
                        _mm256_loadu_ps(p.add(k)),
                        a0,
                    );
                    a1 = _mm256_fmadd_ps(
                        _mm256_loadu_ps(row.as_ptr().add(k + 8)),
                        _mm256_loadu_ps(p.add(k + 8)),
                        a1,
                    );
                }
                k += 16;
            }
            let mut s = hsum(_mm256_add_ps(a0, a1));
            for t in body..dim {
                s += row[t] * probe[t];
            }
            out[r] = s;
            r += 1;
        }
    }
}

#[cfg(target_arch = "aarch64")]
mod neon {
    use std::arch::aarch64::*;

    /// # Safety
    /// `probe.len() == dim` and `rows.len() == out.len() * dim`.
    pub unsafe fn scan(rows: &[f32], probe: &[f32], dim: usize, out: &mut [f32]) {
        let n = out.len();
        let body = dim - dim % 8;
        let p = probe.as_ptr();
        let mut r = 0;
        while r + 4 <= n {
            let base = rows.as_ptr().wrapping_add(r * dim);
            // SAFETY: rows r..r+4 exist (r + 4 <= n) and k + 8 <= body <= dim keeps every
            // load inside them and inside the probe.
            unsafe {
                let mut a = [vdupq_n_f32(0.0); 8];
                let mut k = 0;
                while k < body {
                    let p0 = vld1q_f32(p.add(k));
                    let p1 = vld1q_f32(p.add(k + 4));
                    for j in 0..4 {
                        let row = base.add(j * dim + k);
                        a[2 * j] = vfmaq_f32(a[2 * j], vld1q_f32(row), p0);
                        a[2 * j + 1] = vfmaq_f32(a[2 * j + 1], vld1q_f32(row.add(4)), p1);
                    }
                    k += 8;
                }
                for j in 0..4 {
                    let mut s = vaddvq_f32(vaddq_f32(a[2 * j], a[2 * j + 1]));
                    let row = &rows[(r + j) * dim..(r + j + 1) * dim];
                    for t in body..dim {
                        s += row[t] * probe[t];
                    }
                    out[r + j] = s;
                }
            }
            r += 4;
        }
        while r < n {
            let row = &rows[r * dim..(r + 1) * dim];
            // SAFETY: k + 8 <= body <= dim = row.len() = probe.len().
            let mut s = unsafe {
                let (mut a0, mut a1) = (vdupq_n_f32(0.0), vdupq_n_f32(0.0));
                let mut k = 0;
                while k < body {
                    a0 = vfmaq_f32(a0, vld1q_f32(row.as_ptr().add(k)), vld1q_f32(p.add(k)));
                    a1 = vfmaq_f32(
                        a1,
                        vld1q_f32(row.as_ptr().add(k + 4)),
                        vld1q_f32(p.add(k + 4)),
                    );
                    k += 8;
                }
                vaddvq_f32(vaddq_f32(a0, a1))
            };
            for t in body..dim {
                s += row[t] * probe[t];
            }
            out[r] = s;
            r += 1;
        }
    }
}

#[cfg(test)]
mod kernel_tests;

#[cfg(test)]
mod tests {
    use super::*;

    /// Deterministic pseudo-random unit vectors (no dependencies in this crate).
    fn unit_vectors(n: usize, dim: usize, seed: u64) -> Vec<f32> {
        let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
        let mut v: Vec<f32> = (0..n * dim)
            .map(|_| {
                s ^= s << 13;
                s ^= s >> 7;
                s ^= s << 17;
                ((s >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
            })
            .collect();
        for row in v.chunks_exact_mut(dim) {
            assert!(normalize(row));
        }
        v
    }

    #[test]
    fn every_kernel_agrees_with_the_f64_reference() {
        let kernels = Kernel::available();
        #[cfg(target_arch = "aarch64")]
        assert!(kernels.contains(&Kernel::Neon));
        eprintln!("testing kernels {kernels:?}");
        // Odd sizes exercise the row tail (n % 4) and the element tail (dim % 16).
        for &(n, dim) in &[
            (1, 1),
            (3, 7),
            (4, 16),
            (5, 17),
            (10, 512),
            (33, 128),
            (7, 513),
            (100, 768),
        ] {
            let rows = unit_vectors(n, dim, n as u64 * 31 + dim as u64);
            let probe = unit_vectors(1, dim, 99);
            for &k in &kernels {
                let mut out = vec![0f32; n];
                k.scan(&rows, &probe, dim, &mut out);
                for (i, row) in rows.chunks_exact(dim).enumerate() {
                    let want = dot_f64(row, &probe);
                    assert!(
                        (f64::from(out[i]) - want).abs() <= 1e-5,
                        "{} n={n} dim={dim} row {i}: {} vs {want}",
                        k.name(),
                        out[i]
                    );
                    assert!((f64::from(k.dot(row, &probe)) - want).abs() <= 1e-5);
                }
            }
        }
    }

    #[test]
    fn cosine_of_zero_or_mismatched_vectors_is_zero() {
        let a = [1.0f32, 2.0, 3.0];
        assert_eq!(cosine_similarity(&a, &[0.0; 3]), 0.0);
        assert_eq!(cosine_similarity(&[0.0; 3], &[0.0; 3]), 0.0);
        assert_eq!(cosine_similarity(&a, &[1.0, 2.0]), 0.0);
        assert_eq!(cosine_similarity(&a, &[f32::NAN, 1.0, 1.0]), 0.0);
        assert!((cosine_similarity(&a, &a) - 1.0).abs() < 1e-6);
        assert!((cosine_similarity(&a, &[-1.0, -2.0, -3.0]) + 1.0).abs() < 1e-6);
        let mut z = [0.0f32; 4];
        assert!(!normalize(&mut z));
    }
}
