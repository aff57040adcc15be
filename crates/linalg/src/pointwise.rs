//! 1x1 convolutions in channels-first layout (`out[o, p] = W[o, :] . x[:, p] + b[o]` for
//! every pixel `p`) on the AVX-512 tier: the weights are the rows, read where they are
//! (`[O, I]`, row-major), and the activations the columns, read as 32-pixel panels one
//! channel apart; the output written channels-first. The same 12 x 32 register tile as
//! [`crate::dense`]. Why: `inference::ops::pointwise` (the tract op).

use crate::dense::available;

/// `out[o, p] = w[o, :] . x[:, p] + bias[o]` for `x` `[i, p]`, `w` `[o, i]`, the output
/// rows `first..` that `out` holds.
///
/// Panics when the CPU lacks AVX-512 ([`available`]) or the sizes disagree.
pub fn pointwise(x: &[f32], pixels: usize, w: &[f32], bias: &[f32], first: usize, out: &mut [f32]) {
    assert!(available(), "pointwise kernel needs AVX-512");
    assert!(
        pixels > 0 && x.len().is_multiple_of(pixels),
        "input is not rows of {pixels}"
    );
    let i = x.len() / pixels;
    let rows = out.len() / pixels;
    assert_eq!(out.len(), rows * pixels, "output is not rows of {pixels}");
    assert!(
        w.len() >= (first + rows) * i && bias.len() >= first + rows,
        "weights for rows {first}..{}",
        first + rows
    );
    #[cfg(target_arch = "x86_64")]
    // SAFETY: AVX-512 F is present (asserted above); the kernel reads w[first * i..][..rows
    // * i], bias[first..][..rows], x's i rows of `pixels` (masked past the last column) and
    // writes out[..rows * pixels] only, all checked just above.
    unsafe {
        avx512::product(
            x.as_ptr(),
            i,
            pixels,
            w.as_ptr().add(first * i),
            bias.as_ptr().add(first),
            rows,
            out.as_mut_ptr(),
        )
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
    pub unsafe fn product(
        x: *const f32,
        k: usize,
        p: usize,
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
                let src = x.add(kk * p + c0);
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
