//! Scaled dot-product attention, one batch item at a time: softmax(q kᵀ · scale) v per
//! head, for the transformer layers of X-CLIP.
//!
//! The portable body scores a block of query rows against keys transposed once per head,
//! so one key load feeds eight rows; the AVX-512 kernel (`avx512.rs`) does the same sixteen
//! lanes wide with the softmax's exp in registers.

#[cfg(target_arch = "x86_64")]
mod avx512;

use crate::tier::Tier;

/// One batch item of an attention op: `q` `[M, B, K]`, `k` `[N, B, K]`, `v` `[N, B, D]`,
/// `out` `[rows, B, D]`.
pub struct AttentionItem<'a> {
    pub q: &'a [f32],
    pub k: &'a [f32],
    pub v: &'a [f32],
    pub heads: usize,
    pub key_dim: usize,
    pub value_dim: usize,
}

impl AttentionItem<'_> {
    /// Panics unless the slices hold what the shape says for query `rows` and `out`: the
    /// kernels index by it.
    fn check(&self, rows: std::ops::Range<usize>, out: &[f32]) {
        let (h, kd, vd) = (self.heads, self.key_dim, self.value_dim);
        assert!(h > 0 && kd > 0 && vd > 0, "attention: empty heads");
        assert!(
            self.k.len().is_multiple_of(h * kd),
            "attention: keys are not [N, {h}, {kd}]"
        );
        let n = self.k.len() / (h * kd);
        assert_eq!(
            self.v.len(),
            n * h * vd,
            "attention: values are not [{n}, {h}, {vd}]"
        );
        assert!(
            rows.start <= rows.end && rows.end * h * kd <= self.q.len(),
            "attention: query rows {rows:?} past the queries"
        );
        assert_eq!(
            out.len(),
            rows.len() * h * vd,
            "attention: output is not [{}, {h}, {vd}]",
            rows.len()
        );
    }
}

/// Scratch for [`attention_item`], reused across heads and items.
#[derive(Default)]
pub struct AttentionScratch {
    kt: Vec<f32>,
    s: Vec<f32>,
    o: Vec<f32>,
}

pub fn attention_item(
    item: &AttentionItem,
    rows: std::ops::Range<usize>,
    scale: f32,
    out: &mut [f32],
    scratch: &mut AttentionScratch,
) {
    attention_item_with(Tier::current(), item, rows, scale, out, scratch)
}

/// [`attention_item`] on the kernels of `tier` (which this CPU must have).
pub fn attention_item_with(
    tier: Tier,
    item: &AttentionItem,
    rows: std::ops::Range<usize>,
    scale: f32,
    out: &mut [f32],
    scratch: &mut AttentionScratch,
) {
    tier.check();
    item.check(rows.clone(), out);
    #[cfg(target_arch = "x86_64")]
    if tier.avx512() {
        // SAFETY: the CPU has AVX-512 F (the tier is supported, checked above); the item's
        // and `out`'s lengths were checked against its shape.
        return unsafe { avx512::attention_item(item, rows, scale, out, scratch) };
    }
    #[cfg(target_arch = "x86_64")]
    if tier.avx2() {
        // SAFETY: the CPU has AVX2 and FMA (the tier is supported, checked above).
        return unsafe { attention_item_avx2(item, rows, scale, out, scratch) };
    }
    // aarch64's multiply-add is one instruction (NEON); elsewhere without FMA a libm call.
    if tier == Tier::Neon {
        attention_item_body::<true>(item, rows, scale, out, scratch)
    } else {
        attention_item_body::<false>(item, rows, scale, out, scratch)
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn attention_item_avx2(
    item: &AttentionItem,
    rows: std::ops::Range<usize>,
    scale: f32,
    out: &mut [f32],
    scratch: &mut AttentionScratch,
) {
    attention_item_body::<true>(item, rows, scale, out, scratch)
}

/// `a * b + c`, fused where the target has FMA (a libm call where it does not, so only
/// then).
#[inline(always)]
fn madd<const FMA: bool>(a: f32, b: f32, c: f32) -> f32 {
    if FMA {
        a.mul_add(b, c)
    } else {
        a * b + c
    }
}

#[inline(always)]
fn attention_item_body<const FMA: bool>(
    item: &AttentionItem,
    rows: std::ops::Range<usize>,
    scale: f32,
    out: &mut [f32],
    scratch: &mut AttentionScratch,
) {
    let (h, kd, vd) = (item.heads, item.key_dim, item.value_dim);
    let n = item.k.len() / (h * kd);
    // Keys transposed to [K, N] per head, N padded to a multiple of 8 with zeros, so a
    // block of scores is a sum of K broadcast-multiply-adds over contiguous keys.
    let np = n.div_ceil(8) * 8;
    scratch.kt.resize(kd * np, 0.0);
    scratch.s.resize(SCORE_ROWS * np, 0.0);
    scratch.o.resize(SCORE_ROWS * kd.max(vd), 0.0);
    let rows: Vec<usize> = rows.collect();
    for b in 0..h {
        for (j, keys) in item.k.chunks_exact(h * kd).enumerate() {
            let key = &keys[b * kd..][..kd];
            for (t, &x) in scratch.kt[j..].iter_mut().step_by(np).zip(key) {
                *t = x;
            }
        }
        let mut done = 0;
        while done < rows.len() {
            let take = (rows.len() - done).min(SCORE_ROWS);
            let block = &rows[done..done + take];
            let query = |i: usize| &item.q[(i * h + b) * kd..][..kd];
            if take == SCORE_ROWS {
                // The block's query rows, scaled and interleaved ([K, rows]): one load
                // of keys then feeds every row.
                for (r, &i) in block.iter().enumerate() {
                    let column = scratch.o[r..].iter_mut().step_by(SCORE_ROWS);
                    for (t, &x) in column.zip(query(i)) {
                        *t = x * scale;
                    }
                }
                scores::<SCORE_ROWS, FMA>(&scratch.o, &scratch.kt, np, &mut scratch.s);
            } else {
                for (r, &i) in block.iter().enumerate() {
                    for (o, &x) in scratch.o[..kd].iter_mut().zip(query(i)) {
                        *o = x * scale;
                    }
                    scores::<1, FMA>(&scratch.o, &scratch.kt, np, &mut scratch.s[r * np..]);
                }
            }
            for r in 0..take {
                crate::rows::softmax_rows_body(&mut scratch.s[r * np..][..n], n);
            }
            let value = |j: usize| &item.v[(j * h + b) * vd..][..vd];
            if take == SCORE_ROWS && vd < 64 && vd % 8 == 0 {
                // Narrow heads: one row's sums are too few chains to hide the
                // multiply-add latency, so the block's rows share each value load.
                for db in (0..vd).step_by(8) {
                    let acc = weighted_rows::<SCORE_ROWS, FMA>(&scratch.s, np, n, &value, db);
                    for (r, a) in acc.iter().enumerate() {
                        out[((done + r) * h + b) * vd + db..][..8].copy_from_slice(a);
                    }
                }
            } else {
                for r in 0..take {
                    let p = &scratch.s[r * np..][..n];
                    let o = &mut out[((done + r) * h + b) * vd..][..vd];
                    weighted_sum::<FMA>(p, &value, o);
                }
            }
            done += take;
        }
    }
}

/// Query rows scored together: eight 8-key accumulators stay in registers.
const SCORE_ROWS: usize = 8;

/// `s[r][j] = q[r] . kt[:, j]` for `R` query rows given interleaved (`qt` = `[K, R]`) and
/// the `np` columns of `kt` (`[K, np]`), eight columns at a time.
#[inline(always)]
fn scores<const R: usize, const FMA: bool>(qt: &[f32], kt: &[f32], np: usize, s: &mut [f32]) {
    let kd = kt.len() / np;
    for jb in (0..np).step_by(8) {
        let mut acc = [[0f32; 8]; R];
        for (krow, qd) in kt.chunks_exact(np).zip(qt[..kd * R].chunks_exact(R)) {
            let k: &[f32; 8] = krow[jb..jb + 8].try_into().expect("8 keys");
            for (a, &q) in acc.iter_mut().zip(qd) {
                for (x, &kv) in a.iter_mut().zip(k) {
                    *x = madd::<FMA>(q, kv, *x);
                }
            }
        }
        for (r, a) in acc.iter().enumerate() {
            s[r * np + jb..][..8].copy_from_slice(a);
        }
    }
}

/// `o[r] = sum_j p[r][j] * value(j)[db..db + 8]` for `R` rows of probabilities (`p` rows
/// `np` apart, `n` keys): `R` independent 8-wide chains.
#[inline(always)]
fn weighted_rows<'v, const R: usize, const FMA: bool>(
    p: &[f32],
    np: usize,
    n: usize,
    value: &impl Fn(usize) -> &'v [f32],
    db: usize,
) -> [[f32; 8]; R] {
    let mut acc = [[0f32; 8]; R];
    for j in 0..n {
        let v: &[f32; 8] = value(j)[db..][..8].try_into().expect("8 values");
        for (r, a) in acc.iter_mut().enumerate() {
            let pj = p[r * np + j];
            for (x, &vv) in a.iter_mut().zip(v) {
                *x = madd::<FMA>(pj, vv, *x);
            }
        }
    }
    acc
}

/// `o = sum_j p[j] * value(j)`, 64 output values at a time where it can (eight
/// independent 8-wide accumulators: enough to cover the multiply-add latency), then 8.
#[inline(always)]
fn weighted_sum<'v, const FMA: bool>(
    p: &[f32],
    value: &impl Fn(usize) -> &'v [f32],
    o: &mut [f32],
) {
    let vd = o.len();
    let mut db = 0;
    while db + 64 <= vd {
        weighted_block::<64, FMA>(p, value, db, &mut o[db..db + 64]);
        db += 64;
    }
    while db + 8 <= vd {
        weighted_block::<8, FMA>(p, value, db, &mut o[db..db + 8]);
        db += 8;
    }
    if db < vd {
        let o = &mut o[db..];
        o.fill(0.0);
        for (j, &pj) in p.iter().enumerate() {
            for (x, &vv) in o.iter_mut().zip(&value(j)[db..]) {
                *x = madd::<FMA>(pj, vv, *x);
            }
        }
    }
}

#[inline(always)]
fn weighted_block<'v, const W: usize, const FMA: bool>(
    p: &[f32],
    value: &impl Fn(usize) -> &'v [f32],
    db: usize,
    o: &mut [f32],
) {
    let mut acc = [0f32; W];
    for (j, &pj) in p.iter().enumerate() {
        let v: &[f32; W] = value(j)[db..][..W].try_into().expect("W values");
        for (x, &vv) in acc.iter_mut().zip(v) {
            *x = madd::<FMA>(pj, vv, *x);
        }
    }
    o.copy_from_slice(&acc);
}
