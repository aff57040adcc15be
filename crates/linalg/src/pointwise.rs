//! 1x1 convolutions in channels-first layout (`out[o, p] = W[o, :] . x[:, p] + b[o]` for
//! every pixel `p`) on the AVX-512, AVX2+FMA and NEON tiers: the weights are the rows, read
//! where they are (`[O, I]`, row-major), and the activations the columns, read as 32-pixel
//! panels one channel apart; the output written channels-first. The register tiles of
//! [`crate::dense`] (12 x 32 on AVX-512, 6 x 16 on AVX2 and NEON). Why: `inference::ops::pointwise`
//! (the tract op).

use crate::dense::tier_for;
use crate::tier::Tier;

/// `out[o, p] = w[o, :] . x[:, p] + bias[o]` for `x` `[i, p]`, `w` `[o, i]`, the output
/// rows `first..` that `out` holds, at the current tier.
///
/// Panics when the CPU has no tier with the kernel ([`crate::dense::tier_for`]) or the
/// sizes disagree.
pub fn pointwise(x: &[f32], pixels: usize, w: &[f32], bias: &[f32], first: usize, out: &mut [f32]) {
    pointwise_on(Tier::current(), x, pixels, w, bias, first, out)
}

/// [`pointwise`] at `tier` (tests and benches compare tiers).
pub fn pointwise_on(
    tier: Tier,
    x: &[f32],
    pixels: usize,
    w: &[f32],
    bias: &[f32],
    first: usize,
    out: &mut [f32],
) {
    tier.check();
    let t = tier_for(tier).expect("pointwise kernels need AVX2+FMA, AVX-512 or NEON");
    assert!(
        pixels > 0 && x.len().is_multiple_of(pixels),
        "input is not rows of {pixels}"
    );
    let i = x.len() / pixels;
    // SAFETY: the rows the kernels read, `x[kk * pixels..][..pixels]` for kk < i, lie
    // within x (checked above); the rest as `product_on` says.
    unsafe { product_on(t, x, i, pixels, |kk| kk * pixels, w, bias, first, out) }
}

/// 3x3 convolutions with stride 1, channels-first, as one product over the nine shifted
/// copies of every input channel: `out[o, q] = bias[o] + sum over c, ky, kx of
/// w[o, c, ky, kx] * xpad[c, q + ky * wp + kx]` for `q` over the `h * wp` positions of
/// the padded-width grid, where `xpad` is the input padded by one pixel on every side
/// (`channels` planes of `(h + 2) x wp`, `wp = width + 2`, zeros around, at least two
/// more values after the last plane). The last two columns of each output row are not
/// pixels (the caller drops them). The weights are ONNX's `[O, C, 3, 3]`, row-major: the
/// nine taps of a channel are consecutive, as the shifted rows are. Why: tract turns
/// these convolutions into an im2col product with the activations moved channels-last
/// (NanoDet's 24 are ~70 % of its time); here they read the padded planes where they lie,
/// through the 1x1 kernels' panels and register tiles.
///
/// Panics when the CPU has no tier with the kernel or the sizes disagree.
#[allow(clippy::too_many_arguments)]
pub fn conv3x3_on(
    tier: Tier,
    xpad: &[f32],
    channels: usize,
    h: usize,
    wp: usize,
    w: &[f32],
    bias: &[f32],
    first: usize,
    out: &mut [f32],
) {
    tier.check();
    let t = tier_for(tier).expect("3x3 kernels need AVX2+FMA, AVX-512 or NEON");
    let (plane, pixels) = ((h + 2) * wp, h * wp);
    assert!(
        channels > 0 && pixels > 0 && wp >= 3,
        "empty 3x3 convolution"
    );
    assert!(
        xpad.len() >= channels * plane + 2,
        "padded input holds {} values, not {channels} planes of {plane} and 2",
        xpad.len()
    );
    let k = 9 * channels;
    let start = |kk: usize| (kk / 9) * plane + (kk % 9 / 3) * wp + kk % 3;
    // SAFETY: row kk's reads, xpad[start(kk)..][..pixels], end at most at
    // (channels - 1) * plane + 2 * wp + 2 + h * wp = channels * plane + 2 <= xpad.len()
    // (checked above); the rest as `product_on` says.
    unsafe { product_on(t, xpad, k, pixels, start, w, bias, first, out) }
}

/// `out[..rows] = w[first..][..rows] . X + bias` where row `kk` of X (`k` rows of
/// `pixels`) starts at `x[start(kk)]`, on kernel tier `t`. Panics unless `out` is whole
/// rows of `pixels` and `w` and `bias` hold those rows.
///
/// # Safety
/// `t` must be a tier of this CPU with the kernels; `x[start(kk)..][..pixels]` must lie
/// within `x` for every kk < k.
#[allow(clippy::too_many_arguments)]
unsafe fn product_on(
    t: Tier,
    x: &[f32],
    k: usize,
    pixels: usize,
    start: impl Fn(usize) -> usize + Copy,
    w: &[f32],
    bias: &[f32],
    first: usize,
    out: &mut [f32],
) {
    let rows = out.len() / pixels;
    assert_eq!(out.len(), rows * pixels, "output is not rows of {pixels}");
    assert!(
        w.len() >= (first + rows) * k && bias.len() >= first + rows,
        "weights for rows {first}..{}",
        first + rows
    );
    #[cfg(target_arch = "x86_64")]
    // SAFETY: the CPU has `t`'s features; the kernels read w[first * k..][..rows * k],
    // bias[first..][..rows] (checked just above), X's rows where the caller vouched for
    // them (only within each row's length past the last column) and write
    // out[..rows * pixels] only.
    unsafe {
        let (wp, bp) = (w.as_ptr().add(first * k), bias.as_ptr().add(first));
        match t {
            Tier::Avx512 => {
                avx512::product(x.as_ptr(), k, pixels, start, wp, bp, rows, out.as_mut_ptr())
            }
            _ => avx2::product(x.as_ptr(), k, pixels, start, wp, bp, rows, out.as_mut_ptr()),
        }
    }
    #[cfg(target_arch = "aarch64")]
    // SAFETY: NEON is baseline on aarch64; the reads and writes as above.
    unsafe {
        let _ = t;
        neon::product(
            x.as_ptr(),
            k,
            pixels,
            start,
            w.as_ptr().add(first * k),
            bias.as_ptr().add(first),
            rows,
            out.as_mut_ptr(),
        )
    }
    #[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
    let _ = (t, x, k, start, w, bias, first, rows);
}

/// The AVX2 and NEON walk: each 32-pixel panel of the activations (row `kk` starting at
/// `x.add(start(kk))`) copied into `panel`
/// (`k` rows of [`NR`], zero past the last pixel), then every block of up to `mr` output
/// channels against its two 16-pixel halves: `f(half, first_row, rows, out, cols)` with
/// `half` the copied half-panel (rows [`NR`] apart) and `out` at the tile's first result.
///
/// # Safety
/// `x.add(start(kk))` must hold `p` pixels for every kk < k, and `out` `m` rows of `p`.
#[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
#[inline(always)]
#[allow(clippy::too_many_arguments)]
unsafe fn each_half_panel(
    x: *const f32,
    k: usize,
    p: usize,
    start: impl Fn(usize) -> usize,
    m: usize,
    mr: usize,
    out: *mut f32,
    mut f: impl FnMut(*const f32, usize, usize, *mut f32, usize),
) {
    use crate::dense::NR;
    const HALF: usize = NR / 2;
    let mut panel = vec![0f32; k * NR];
    let mut c0 = 0;
    while c0 < p {
        let cols = (p - c0).min(NR);
        for kk in 0..k {
            let dst = &mut panel[kk * NR..][..NR];
            // SAFETY: row kk's pixels c0..c0 + cols lie within x (the caller vouches
            // for x[start(kk)..][..p]).
            let src = unsafe { std::slice::from_raw_parts(x.add(start(kk) + c0), cols) };
            dst[..cols].copy_from_slice(src);
            dst[cols..].fill(0.0);
        }
        for h in 0..2 {
            if h * HALF >= cols {
                break;
            }
            let hcols = (cols - h * HALF).min(HALF);
            let mut r = 0;
            while r < m {
                let rows = (m - r).min(mr);
                // SAFETY: row r, pixel c0 + h * HALF lies within out (m rows of p).
                let o = unsafe { out.add(r * p + c0 + h * HALF) };
                f(panel[h * HALF..].as_ptr(), r, rows, o, hcols);
                r += rows;
            }
        }
        c0 += cols;
    }
}

#[cfg(target_arch = "x86_64")]
// Each fn's contract (AVX-512 F present, pointers within the sizes `pointwise` checked)
// covers its body.
#[allow(unsafe_op_in_unsafe_fn)]
mod avx512 {
    use crate::dense::avx512::{accumulate, by_rows};
    use crate::dense::{MR, NR};
    use std::arch::x86_64::*;

    /// Column panels outer, row blocks inner. Each 32-pixel panel of the activations is
    /// first copied into a contiguous buffer: read in place, its `k` rows lie a plane
    /// apart, and with planes a multiple of 4 KiB (PP-OCR's 240 x 320) they all fall in
    /// one L1 set. The copy reads the panel once; every row block then reuses it.
    #[target_feature(enable = "avx512f")]
    #[allow(clippy::too_many_arguments)]
    pub unsafe fn product(
        x: *const f32,
        k: usize,
        p: usize,
        start: impl Fn(usize) -> usize,
        w: *const f32,
        bias: *const f32,
        m: usize,
        out: *mut f32,
    ) {
        let mut panel = vec![0f32; k * NR];
        let mut c0 = 0;
        while c0 < p {
            let cols = (p - c0).min(NR);
            let m0: __mmask16 = ((1u32 << cols.min(16)) - 1) as u16;
            let m1: __mmask16 = ((1u32 << cols.saturating_sub(16)) - 1) as u16;
            for kk in 0..k {
                let src = x.add(start(kk) + c0);
                let dst = panel.as_mut_ptr().add(kk * NR);
                _mm512_storeu_ps(dst, _mm512_maskz_loadu_ps(m0, src));
                _mm512_storeu_ps(dst.add(16), _mm512_maskz_loadu_ps(m1, src.add(16)));
            }
            let xp = panel.as_ptr();
            let mut r = 0;
            while r < m {
                let rows = (m - r).min(MR);
                let (wr, br, o) = (w.add(r * k), bias.add(r), out.add(r * p + c0));
                by_rows!(rows, tile(xp, k, wr, br, o, p, cols));
                r += rows;
            }
            c0 += cols;
        }
    }

    /// `R` output channels x up to 32 pixels of the copied panel `x` (`k` rows of 32): one
    /// weight broadcast per channel and input channel, two loads of the panel per input
    /// channel; output rows `ldc` apart.
    #[target_feature(enable = "avx512f")]
    #[inline]
    unsafe fn tile<const R: usize>(
        x: *const f32,
        k: usize,
        w: *const f32,
        bias: *const f32,
        c: *mut f32,
        ldc: usize,
        cols: usize,
    ) {
        let a: [__m512; R] = std::array::from_fn(|r| _mm512_set1_ps(*bias.add(r)));
        accumulate(w, k, x, a, a, c, ldc, cols)
    }
}

#[cfg(target_arch = "x86_64")]
// Each fn's contract (AVX2 and FMA present, pointers within the sizes `pointwise_on`
// checked) covers its body.
#[allow(unsafe_op_in_unsafe_fn)]
mod avx2 {
    use super::each_half_panel;
    use crate::dense::avx2::{accumulate, by_rows6};
    use crate::dense::MR_AVX2;
    use std::arch::x86_64::*;

    /// As the AVX-512 product, in 16-pixel halves ([`each_half_panel`]).
    #[target_feature(enable = "avx2,fma")]
    #[allow(clippy::too_many_arguments)]
    pub unsafe fn product(
        x: *const f32,
        k: usize,
        p: usize,
        start: impl Fn(usize) -> usize,
        w: *const f32,
        bias: *const f32,
        m: usize,
        out: *mut f32,
    ) {
        each_half_panel(x, k, p, start, m, MR_AVX2, out, |xp, r, rows, o, cols| {
            by_rows6!(rows, tile(xp, k, w.add(r * k), bias.add(r), o, p, cols))
        })
    }

    /// `R` output channels x up to 16 pixels of the copied panel `x` (`k` rows, [`NR`]
    /// apart): one weight broadcast per channel and input channel.
    #[target_feature(enable = "avx2,fma")]
    #[inline]
    unsafe fn tile<const R: usize>(
        x: *const f32,
        k: usize,
        w: *const f32,
        bias: *const f32,
        c: *mut f32,
        ldc: usize,
        cols: usize,
    ) {
        let a: [__m256; R] = std::array::from_fn(|r| _mm256_set1_ps(*bias.add(r)));
        accumulate(w, k, x, a, a, c, ldc, cols)
    }
}

#[cfg(target_arch = "aarch64")]
// NEON is baseline; each fn's contract (pointers within the sizes `pointwise_on` checked)
// covers its body.
#[allow(unsafe_op_in_unsafe_fn)]
mod neon {
    use super::each_half_panel;
    use crate::dense::neon::{accumulate, by_rows6};
    use crate::dense::MR_NEON;
    use std::arch::aarch64::*;

    /// As the AVX2 product ([`each_half_panel`]).
    #[allow(clippy::too_many_arguments)]
    pub unsafe fn product(
        x: *const f32,
        k: usize,
        p: usize,
        start: impl Fn(usize) -> usize,
        w: *const f32,
        bias: *const f32,
        m: usize,
        out: *mut f32,
    ) {
        each_half_panel(x, k, p, start, m, MR_NEON, out, |xp, r, rows, o, cols| {
            by_rows6!(rows, tile(xp, k, w.add(r * k), bias.add(r), o, p, cols))
        })
    }

    #[inline]
    unsafe fn tile<const R: usize>(
        x: *const f32,
        k: usize,
        w: *const f32,
        bias: *const f32,
        c: *mut f32,
        ldc: usize,
        cols: usize,
    ) {
        let a: [[float32x4_t; 4]; R] = std::array::from_fn(|r| [vdupq_n_f32(*bias.add(r)); 4]);
        accumulate(w, k, x, a, c, ldc, cols)
    }
}
