//! The attention item kernel on AVX-512 CPUs: the computation of
//! `attention_item_body`, sixteen keys or values to a register and the softmax's exp in
//! registers too. On the committed tiny X-CLIP (16-wide heads, 50 keys) the portable
//! body, compiled for AVX2, spent ~23 µs a frame and layer on what is ~3 µs of arithmetic:
//! 8-wide blocks, the exp in a second pass over memory, rows normalised before the
//! weighted sum. Here a block of [`R`] query rows is scored against all keys, the row's
//! softmax numerators are written once, and the 1 / sum is applied to the output rows.

use std::arch::x86_64::*;
use std::ops::Range;

use super::{AttentionItem, AttentionScratch};

/// Query rows per block: eight accumulators per 16 keys or values, enough independent
/// chains to cover the multiply-add latency, while the weights of one value load are
/// shared by the rows.
const R: usize = 8;

/// Lanes of a 16-wide register that hold `len - start` valid values (all when more).
fn lanes(start: usize, len: usize) -> __mmask16 {
    let valid = len.saturating_sub(start).min(16);
    ((1u32 << valid) - 1) as __mmask16
}

/// `exp(x)` for x <= 0: `exp_nonpositive` (Cephes' range reduction and polynomial) on 16
/// lanes.
#[inline]
#[target_feature(enable = "avx512f")]
fn exp_nonpositive(x: __m512) -> __m512 {
    let x = _mm512_max_ps(x, _mm512_set1_ps(-87.0));
    let round = _mm512_set1_ps(12_582_912.0);
    let n = _mm512_sub_ps(
        _mm512_fmadd_ps(x, _mm512_set1_ps(std::f32::consts::LOG2_E), round),
        round,
    );
    let r = _mm512_fnmadd_ps(n, _mm512_set1_ps(0.693_359_4), x);
    let r = _mm512_fnmadd_ps(n, _mm512_set1_ps(-2.121_944_4e-4), r);
    let mut p = _mm512_set1_ps(1.987_569_1e-4);
    for c in [
        1.398_199_9e-3,
        8.333_452e-3,
        4.166_579_6e-2,
        1.666_666_5e-1,
        0.5,
    ] {
        p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(c));
    }
    let y = _mm512_fmadd_ps(
        _mm512_mul_ps(p, r),
        r,
        _mm512_add_ps(r, _mm512_set1_ps(1.0)),
    );
    // 2^n: n + 127 + 2^23 holds n + 127 in its low mantissa bits.
    let two_n = _mm512_slli_epi32::<23>(_mm512_castps_si512(_mm512_add_ps(
        n,
        _mm512_set1_ps(127.0 + 8_388_608.0),
    )));
    _mm512_mul_ps(y, _mm512_castsi512_ps(two_n))
}

/// One batch item: `out[r, b, :] = softmax_j(scale * q[rows[r], b, :] . k[j, b, :]) v[j, b, :]`.
///
/// # Safety
/// The CPU must have AVX-512 F. Slices are as [`AttentionItem`] documents them and `out`
/// holds `rows.len() * heads * value_dim` values (the caller, `attention_item`, gets them
/// from the op's checked shapes).
#[target_feature(enable = "avx512f")]
pub unsafe fn attention_item(
    item: &AttentionItem,
    rows: Range<usize>,
    scale: f32,
    out: &mut [f32],
    scratch: &mut AttentionScratch,
) {
    let (h, kd, vd) = (item.heads, item.key_dim, item.value_dim);
    let n = item.k.len() / (h * kd);
    let count = rows.len();
    if n == 0 || count == 0 {
        return;
    }
    assert!(out.len() >= count * h * vd && item.v.len() >= n * h * vd);
    // Keys transposed to [K, np], np a multiple of 16: a block of scores is K broadcast
    // multiply-adds over contiguous keys. Columns past n stay 0 and are masked out below.
    let np = n.div_ceil(16) * 16;
    scratch.kt.clear();
    scratch.kt.resize(kd * np, 0.0);
    scratch.s.resize(R * np, 0.0);
    // The block's query rows, scaled and interleaved ([K, R]).
    scratch.o.resize(R * kd, 0.0);
    let (kt, s, qt) = (&mut scratch.kt, &mut scratch.s, &mut scratch.o);
    for b in 0..h {
        for j in 0..n {
            for (d, &x) in item.k[(j * h + b) * kd..][..kd].iter().enumerate() {
                kt[d * np + j] = x;
            }
        }
        let mut done = 0;
        while done < count {
            let take = (count - done).min(R);
            // A short last block repeats its last row: computed, never stored.
            for r in 0..R {
                let i = rows.start + done + r.min(take - 1);
                for (d, &x) in item.q[(i * h + b) * kd..][..kd].iter().enumerate() {
                    qt[d * R + r] = x * scale;
                }
            }
            for cb in (0..np).step_by(16) {
                let mut acc = [_mm512_setzero_ps(); R];
                for d in 0..kd {
                    // SAFETY: d * np + cb + 16 <= kd * np = kt.len().
                    let kv = unsafe { _mm512_loadu_ps(kt.as_ptr().add(d * np + cb)) };
                    let q = &qt[d * R..][..R];
                    for (a, &qr) in acc.iter_mut().zip(q) {
                        *a = _mm512_fmadd_ps(_mm512_set1_ps(qr), kv, *a);
                    }
                }
                for (r, a) in acc.iter().enumerate() {
                    // SAFETY: r * np + cb + 16 <= R * np = s.len().
                    unsafe { _mm512_storeu_ps(s.as_mut_ptr().add(r * np + cb), *a) };
                }
            }
            let mut inv = [0f32; R];
            for (r, inv) in inv.iter_mut().enumerate().take(take) {
                let row = &mut s[r * np..][..np];
                let mut mx = _mm512_set1_ps(f32::NEG_INFINITY);
                for cb in (0..np).step_by(16) {
                    // SAFETY: cb + 16 <= np = row.len().
                    let x = unsafe { _mm512_loadu_ps(row.as_ptr().add(cb)) };
                    mx = _mm512_mask_max_ps(mx, lanes(cb, n), mx, x);
                }
                let mx = _mm512_set1_ps(_mm512_reduce_max_ps(mx));
                let mut sum = _mm512_setzero_ps();
                for cb in (0..np).step_by(16) {
                    let p = row.as_mut_ptr().wrapping_add(cb);
                    // SAFETY: cb + 16 <= np = row.len().
                    let x = unsafe { _mm512_loadu_ps(p) };
                    let e =
                        _mm512_maskz_mov_ps(lanes(cb, n), exp_nonpositive(_mm512_sub_ps(x, mx)));
                    // SAFETY: as the load.
                    unsafe { _mm512_storeu_ps(p, e) };
                    sum = _mm512_add_ps(sum, e);
                }
                *inv = 1.0 / _mm512_reduce_add_ps(sum);
            }
            for vb in (0..vd).step_by(16) {
                let m = lanes(vb, vd);
                let mut acc = [_mm512_setzero_ps(); R];
                for j in 0..n {
                    // SAFETY: lanes past vd are masked off and not read; the rest lie in
                    // v[(j * h + b) * vd..][..vd], within v.
                    let v = unsafe {
                        _mm512_maskz_loadu_ps(m, item.v.as_ptr().add((j * h + b) * vd + vb))
                    };
                    for (r, a) in acc.iter_mut().enumerate() {
                        *a = _mm512_fmadd_ps(_mm512_set1_ps(s[r * np + j]), v, *a);
                    }
                }
                for (r, a) in acc.iter().enumerate().take(take) {
                    let o = ((done + r) * h + b) * vd + vb;
                    // SAFETY: lanes past vd are masked off and not written; the rest lie
                    // in out[((done + r) * h + b) * vd..][..vd], within out (asserted).
                    unsafe {
                        _mm512_mask_storeu_ps(
                            out.as_mut_ptr().add(o),
                            m,
                            _mm512_mul_ps(*a, _mm512_set1_ps(inv[r])),
                        )
                    };
                }
            }
            done += take;
        }
    }
}
