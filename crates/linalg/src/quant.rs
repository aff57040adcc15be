//! Compact rows for the household scan: each row stored as `i8` with one scale, and the
//! integer dot products of such rows with a quantised probe.
//!
//! Why: a gallery scan reads every row once, so at 100k members it is bound by memory
//! (205 MB of f32 for 512-d rows) and at 500 members by how much fits in L2. `i8` rows are
//! a quarter of that. The integer dot is exact (no rounding, the same on every tier), and
//! [`Quant::bound`] gives a proven bound on how far the compact score can be from the f32
//! one, so the caller can re-score in f32 exactly the rows that could still be the best
//! and return the same member and similarity as a full f32 scan.
//!
//! Values are quantised to [-127, 127] (never -128): then a pair of `i8 * i8` products
//! fits an `i16` (2 * 127 * 127 = 32258), which the AVX2 (`maddubs`) and NEON (`mlal`)
//! kernels rely on.

use crate::tier::Tier;

/// Largest dimension [`scan_on`] takes: 127 * 127 * dim must fit an `i32`.
pub const MAX_DIM: usize = 1 << 16;

/// How one vector was quantised: `v[i] ~= scale * q[i]`, with `|v[i] - scale * q[i]| <=
/// scale / 2`, and `l1 = scale * sum |q[i]|` (the L1 norm of the quantised vector).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Quant {
    pub scale: f32,
    pub l1: f32,
}

impl Quant {
    /// Largest possible difference between `a . b` (the f32 vectors) and the compact
    /// estimate `a.scale * b.scale * (qa . qb)`, given `a_l1`, the L1 norm of the original
    /// `a`. With `e` the rounding error of each side, `a.b - â.b̂ = a.e_b + e_a.b̂`, so
    /// `|a.b - â.b̂| <= (b.scale / 2) |a|_1 + (a.scale / 2) |b̂|_1`, and `|b̂|_1` is `b.l1`:
    /// only `b`'s compact form is needed (a gallery keeps no L1 of its f32 rows).
    pub fn bound(a: Quant, a_l1: f32, b: Quant) -> f32 {
        0.5 * (b.scale * a_l1 + a.scale * b.l1)
    }
}

/// Quantise `v` into `out` (same length) with one scale: `max |v| / 127`. A zero (or
/// empty) vector gets scale 0 and zeros. `v` must be finite.
///
/// # Panics
/// If the lengths differ.
pub fn quantize(v: &[f32], out: &mut [i8]) -> Quant {
    assert_eq!(v.len(), out.len(), "quantize: lengths differ");
    let max = v.iter().fold(0f32, |m, x| m.max(x.abs()));
    if max == 0.0 {
        out.fill(0);
        return Quant::default();
    }
    let scale = max / 127.0;
    let inv = 127.0 / max;
    let mut sum = 0u64;
    for (o, &x) in out.iter_mut().zip(v) {
        // Half away from zero, by truncation: `round()` is a libm call on baseline x86_64
        // and this runs once per probe. |x * inv| <= 127, so the cast cannot saturate
        // (the error of adding 0.5 is ~1e-8 of a step, inside the callers' slack).
        let q = (x * inv + 0.5f32.copysign(x)) as i8;
        sum += u64::from(q.unsigned_abs());
        *o = q;
    }
    Quant {
        scale,
        l1: (f64::from(scale) * sum as f64) as f32,
    }
}

/// The L1 norm of `v`, accumulated in f64.
pub fn l1(v: &[f32]) -> f32 {
    v.iter().map(|x| f64::from(x.abs())).sum::<f64>() as f32
}

/// Whether the current tier has a vector kernel for [`scan`] (AVX2, AVX-512, NEON). The
/// portable one is correct but slower than an f32 scan of four times the bytes (measured
/// on x86_64's SSE2 baseline: 51 us vs ~25 us for 500 x 512), so callers scan f32 there.
pub fn scan_is_fast() -> bool {
    Tier::current() > Tier::Portable
}

/// Integer dot products of `probe` with each `dim`-long row of `rows`, with the kernel of
/// the current tier. Exact: every tier returns the same values.
pub fn scan(rows: &[i8], probe: &[i8], dim: usize, out: &mut [i32]) {
    scan_on(Tier::current(), rows, probe, dim, out)
}

/// As [`scan`], on tier `tier` (which the CPU must have; NEON and portable rows use the
/// same code on every aarch64, AVX-512 uses the AVX2 kernel).
///
/// # Panics
/// If `probe.len() != dim`, `rows.len() != out.len() * dim`, `dim == 0`, `dim >
/// MAX_DIM`, or the CPU lacks `tier`.
pub fn scan_on(tier: Tier, rows: &[i8], probe: &[i8], dim: usize, out: &mut [i32]) {
    assert!(
        dim > 0 && dim <= MAX_DIM,
        "dimension {dim} outside 1..={MAX_DIM}"
    );
    assert_eq!(probe.len(), dim, "probe length");
    assert_eq!(rows.len(), out.len() * dim, "rows length");
    tier.check();
    #[cfg(target_arch = "x86_64")]
    if tier.avx2() {
        // SAFETY: the CPU has AVX2 (checked above); the lengths were checked above and the
        // kernel reads only within them.
        return unsafe { x86::scan(rows, probe, dim, out) };
    }
    #[cfg(target_arch = "aarch64")]
    if tier == Tier::Neon {
        // SAFETY: NEON is aarch64's baseline; the lengths were checked above.
        return unsafe { neon::scan(rows, probe, dim, out) };
    }
    portable::scan(rows, probe, dim, out)
}

/// The plain integer dot product: the portable kernel's element tail and the vector
/// kernels' tails past their last full register.
fn dot_i8(a: &[i8], b: &[i8]) -> i32 {
    a.iter()
        .zip(b)
        .map(|(&x, &y)| i32::from(x) * i32::from(y))
        .sum()
}

mod portable {
    use super::dot_i8;

    pub fn scan(rows: &[i8], probe: &[i8], dim: usize, out: &mut [i32]) {
        for (row, o) in rows.chunks_exact(dim).zip(out.iter_mut()) {
            let mut acc = [0i32; 16];
            let mut rc = row.chunks_exact(16);
            let mut pc = probe.chunks_exact(16);
            for (r, p) in (&mut rc).zip(&mut pc) {
                for i in 0..16 {
                    acc[i] += i32::from(r[i]) * i32::from(p[i]);
                }
            }
            *o = acc.iter().sum::<i32>() + dot_i8(rc.remainder(), pc.remainder());
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use super::dot_i8;
    use std::arch::x86_64::*;

    #[target_feature(enable = "avx2")]
    fn hsum(v: __m256i) -> i32 {
        let s = _mm_add_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256(v, 1));
        let s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0b01_00_11_10));
        let s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0b10_11_00_01));
        _mm_cvtsi128_si32(s)
    }

    /// `|p| * (r with p's sign)` summed in pairs (no saturation: both sides are within
    /// 127), then in fours into `acc`.
    #[target_feature(enable = "avx2")]
    fn step(acc: __m256i, abs_p: __m256i, p: __m256i, r: __m256i, ones: __m256i) -> __m256i {
        let pairs = _mm256_maddubs_epi16(abs_p, _mm256_sign_epi8(r, p));
        _mm256_add_epi32(acc, _mm256_madd_epi16(pairs, ones))
    }

    /// # Safety
    /// The CPU must support AVX2; `probe.len() == dim` and `rows.len() == out.len() * dim`.
    #[target_feature(enable = "avx2")]
    pub unsafe fn scan(rows: &[i8], probe: &[i8], dim: usize, out: &mut [i32]) {
        let n = out.len();
        let body = dim - dim % 32;
        let ones = _mm256_set1_epi16(1);
        let p = probe.as_ptr();
        let tail = |row: &[i8]| dot_i8(&row[body..], &probe[body..]);
        let mut r = 0;
        while r + 4 <= n {
            let base = rows.as_ptr().wrapping_add(r * dim);
            let mut a = [_mm256_setzero_si256(); 4];
            let mut k = 0;
            while k < body {
                // SAFETY: k + 32 <= body <= dim, so every load is inside the probe and
                // inside rows r..r+4, which exist because r + 4 <= n.
                unsafe {
                    let pv = _mm256_loadu_si256(p.add(k).cast());
                    let ap = _mm256_abs_epi8(pv);
                    for (j, acc) in a.iter_mut().enumerate() {
                        let rv = _mm256_loadu_si256(base.add(j * dim + k).cast());
                        *acc = step(*acc, ap, pv, rv, ones);
                    }
                }
                k += 32;
            }
            for (j, acc) in a.iter().enumerate() {
                out[r + j] = hsum(*acc) + tail(&rows[(r + j) * dim..(r + j + 1) * dim]);
            }
            r += 4;
        }
        while r < n {
            let row = &rows[r * dim..(r + 1) * dim];
            let mut acc = _mm256_setzero_si256();
            let mut k = 0;
            while k < body {
                // SAFETY: k + 32 <= body <= dim = row.len() = probe.len().
                unsafe {
                    let pv = _mm256_loadu_si256(p.add(k).cast());
                    let rv = _mm256_loadu_si256(row.as_ptr().add(k).cast());
                    acc = step(acc, _mm256_abs_epi8(pv), pv, rv, ones);
                }
                k += 32;
            }
            out[r] = hsum(acc) + tail(row);
            r += 1;
        }
    }
}

#[cfg(target_arch = "aarch64")]
mod neon {
    use super::dot_i8;
    use std::arch::aarch64::*;

    /// # Safety
    /// `probe.len() == dim` and `rows.len() == out.len() * dim`.
    pub unsafe fn scan(rows: &[i8], probe: &[i8], dim: usize, out: &mut [i32]) {
        let n = out.len();
        let body = dim - dim % 16;
        let p = probe.as_ptr();
        let tail = |row: &[i8]| dot_i8(&row[body..], &probe[body..]);
        let mut r = 0;
        while r < n {
            let rows_here = (n - r).min(4);
            let base = rows.as_ptr().wrapping_add(r * dim);
            // SAFETY: rows r..r+rows_here exist and k + 16 <= body <= dim keeps every
            // load inside them and inside the probe.
            unsafe {
                let mut a = [vdupq_n_s32(0); 4];
                let mut k = 0;
                while k < body {
                    let pv = vld1q_s8(p.add(k));
                    for (j, acc) in a.iter_mut().enumerate().take(rows_here) {
                        let rv = vld1q_s8(base.add(j * dim + k));
                        // Two products per i16 lane: within 2 * 127 * 127.
                        let pair =
                            vmlal_high_s8(vmull_s8(vget_low_s8(rv), vget_low_s8(pv)), rv, pv);
                        *acc = vpadalq_s16(*acc, pair);
                    }
                    k += 16;
                }
                for (j, acc) in a.iter().enumerate().take(rows_here) {
                    out[r + j] = vaddvq_s32(*acc) + tail(&rows[(r + j) * dim..(r + j + 1) * dim]);
                }
            }
            r += rows_here;
        }
    }
}
