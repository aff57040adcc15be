//! Every kernel against its definition (f64) and, on each tier this CPU has, against
//! the portable version. Run on x86_64 (portable, AVX2, AVX-512 where present) and on
//! aarch64 under qemu-user (portable, NEON). A kernel whose tier this CPU lacks says so
//! on stderr and checks nothing more.

use crate::attention::{attention_item_with, AttentionItem, AttentionScratch};
use crate::dense::{dense_on, patch_dense_on, tiers_here, PackedWeights};
use crate::pointwise::{conv3x3_on, pointwise_on};
use crate::quant::{self, Quant};
use crate::rows::*;
use crate::tier::Tier;

/// Deterministic values in [-1, 1) (this crate has no dependencies).
fn values(n: usize, seed: u64) -> Vec<f32> {
    let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..n)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            ((s >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
        })
        .collect()
}

fn tiers() -> Vec<Tier> {
    let t = Tier::supported();
    eprintln!("kernel tiers on this CPU: {t:?}");
    t
}

/// The tiers this CPU has that have dense (and pointwise) kernels: AVX-512, AVX2+FMA,
/// NEON.
fn dense_tiers() -> Vec<Tier> {
    let t = tiers_here();
    if t.is_empty() {
        eprintln!("no AVX2+FMA, AVX-512 or NEON on this CPU: the dense kernels are not used here");
    }
    t
}

/// Largest difference between `f` run on each tier and on the portable one.
fn worst_against_portable(f: impl Fn(Tier) -> Vec<f32>) -> f32 {
    let want = f(Tier::Portable);
    tiers()
        .into_iter()
        .map(|t| {
            f(t).iter()
                .zip(&want)
                .map(|(a, b)| (a - b).abs())
                .fold(0f32, f32::max)
        })
        .fold(0f32, f32::max)
}

#[test]
fn exp_matches_libm_over_the_softmax_range() {
    let mut worst = 0f32;
    let mut x = -87.0f32;
    while x <= 0.0 {
        let want = x.exp();
        let got = exp_nonpositive(x);
        worst = worst.max(((got - want) / want).abs());
        x += 0.001;
    }
    assert!(worst < 3e-7, "worst relative error {worst}");
}

#[test]
fn softmax_rows_match_the_definition_on_every_tier() {
    for tier in tiers() {
        for row in [1, 3, 17, 51, 64] {
            let x: Vec<f32> = values(row * 7, row as u64)
                .iter()
                .map(|v| v * 20.0)
                .collect();
            let mut got = x.clone();
            softmax_rows_with(tier, &mut got, row);
            for (r, g) in x.chunks(row).zip(got.chunks(row)) {
                let m = r.iter().copied().fold(f32::NEG_INFINITY, f32::max) as f64;
                let s: f64 = r.iter().map(|&v| (v as f64 - m).exp()).sum();
                for (&v, &o) in r.iter().zip(g) {
                    let want = (v as f64 - m).exp() / s;
                    assert!(
                        (o as f64 - want).abs() < 1e-6,
                        "{tier:?} row {row}: {o} vs {want}"
                    );
                }
            }
        }
    }
}

#[test]
fn quick_gelu_matches_the_definition_on_every_tier() {
    let x: Vec<f32> = values(1000, 3).iter().map(|v| v * 40.0).collect();
    for tier in tiers() {
        let mut got = x.clone();
        quick_gelu_with(tier, &mut got, 1.702);
        for (&v, &g) in x.iter().zip(&got) {
            let want = v as f64 / (1.0 + (-1.702 * v as f64).exp());
            assert!(
                (g as f64 - want).abs() <= 1e-6 * (1.0 + want.abs()),
                "{tier:?} {v}: {g} vs {want}"
            );
        }
    }
}

#[test]
fn layer_norm_rows_match_the_definition_on_every_tier() {
    for tier in tiers() {
        for row in [5, 16, 51, 768] {
            let x: Vec<f32> = values(row * 3, 7).iter().map(|v| v * 3.0 + 1.5).collect();
            let scale = values(row, 8);
            let bias = values(row, 9);
            let mut got = x.clone();
            layer_norm_rows_with(tier, &mut got, &scale, &bias, 1e-5);
            for (r, g) in x.chunks(row).zip(got.chunks(row)) {
                let mean = r.iter().map(|&v| v as f64).sum::<f64>() / row as f64;
                let var = r.iter().map(|&v| (v as f64 - mean).powi(2)).sum::<f64>() / row as f64;
                for i in 0..row {
                    let want = (r[i] as f64 - mean) / (var + 1e-5).sqrt() * scale[i] as f64
                        + bias[i] as f64;
                    assert!(
                        (g[i] as f64 - want).abs() < 1e-4,
                        "{tier:?} row {row}[{i}]: {} vs {want}",
                        g[i]
                    );
                }
            }
        }
    }
}

/// Per-channel add and multiply, PReLU and hard-swish: their definition on the portable
/// tier, and every other tier gives the same values (one body, compiled per tier).
#[test]
fn channel_ops_prelu_and_hard_swish_agree_on_every_tier() {
    // [2, 3, 5]: three channels of five; and a tail that fills no vector.
    let (x, v) = (values(30, 11), values(3, 12));
    for mul in [true, false] {
        let mut got = x.clone();
        channel_op_with(Tier::Portable, &mut got, &v, 5, mul);
        for (i, (&g, &xi)) in got.iter().zip(&x).enumerate() {
            let c = (i / 5) % 3;
            assert_eq!(g, if mul { xi * v[c] } else { xi + v[c] });
        }
        let worst = worst_against_portable(|t| {
            let mut d = x.clone();
            channel_op_with(t, &mut d, &v, 5, mul);
            d
        });
        assert_eq!(worst, 0.0, "channel op (mul {mul}) differs between tiers");
    }
    let mut got = x.clone();
    channel_prelu_with(Tier::Portable, &mut got, &v, 5);
    for (i, (&g, &xi)) in got.iter().zip(&x).enumerate() {
        let c = (i / 5) % 3;
        assert_eq!(g, if xi >= 0.0 { xi } else { v[c] * (xi + xi) });
    }
    let worst = worst_against_portable(|t| {
        let mut d = x.clone();
        channel_prelu_with(t, &mut d, &v, 5);
        d
    });
    assert_eq!(worst, 0.0, "PReLU differs between tiers");
    let wide: Vec<f32> = values(1001, 13).iter().map(|v| v * 8.0).collect();
    for (pre, scale, shift) in [
        (None, None, None),
        (Some([0.5, 0.25]), Some(1.0 / 6.0), Some(0.1)),
        (Some([2.0, -1.0]), Some(0.5), None),
        (None, Some(1.0 / 6.0), Some(-0.5)),
        (None, None, Some(1.0)),
    ] {
        let mut got = wide.clone();
        hard_swish_with(Tier::Portable, &mut got, pre, scale, shift);
        for (&x, &g) in wide.iter().zip(&got) {
            let x1 = pre.map_or(x, |[a, b]| x * a + b);
            let want =
                x1 * (x1 + 3.0).clamp(0.0, 6.0) * scale.unwrap_or(1.0) + shift.unwrap_or(0.0);
            assert!(
                (g - want).abs() <= 1e-5 * (1.0 + want.abs()),
                "{x}: {g} vs {want}"
            );
        }
        let worst = worst_against_portable(|t| {
            let mut d = wide.clone();
            hard_swish_with(t, &mut d, pre, scale, shift);
            d
        });
        assert_eq!(worst, 0.0, "hard-swish differs between tiers");
    }
}

/// Attention of one item, every tier against the f64 definition: block and tail paths for
/// rows, keys not a multiple of 8, value dims with and without tails, narrow heads.
#[test]
fn attention_matches_the_definition_on_every_tier() {
    let cases = [
        (51, 3, 51, 64, 64, 0..50),
        (8, 2, 8, 16, 64, 0..8),
        (11, 2, 5, 7, 20, 2..11),
        (51, 4, 51, 16, 16, 0..50),
        (19, 2, 19, 16, 24, 0..19),
    ];
    for tier in tiers() {
        for (m, h, n, kd, vd, rows) in cases.clone() {
            let (q, k, v) = (
                values(m * h * kd, 1),
                values(n * h * kd, 2),
                values(n * h * vd, 3),
            );
            let item = AttentionItem {
                q: &q,
                k: &k,
                v: &v,
                heads: h,
                key_dim: kd,
                value_dim: vd,
            };
            let scale = 1.0 / (kd as f32).sqrt();
            let mut got = vec![f32::NAN; rows.len() * h * vd];
            attention_item_with(
                tier,
                &item,
                rows.clone(),
                scale,
                &mut got,
                &mut AttentionScratch::default(),
            );
            for b in 0..h {
                for (r, i) in rows.clone().enumerate() {
                    let s: Vec<f64> = (0..n)
                        .map(|j| {
                            (0..kd)
                                .map(|d| {
                                    q[(i * h + b) * kd + d] as f64 * k[(j * h + b) * kd + d] as f64
                                })
                                .sum::<f64>()
                                * scale as f64
                        })
                        .collect();
                    let mx = s.iter().copied().fold(f64::NEG_INFINITY, f64::max);
                    let z: f64 = s.iter().map(|x| (x - mx).exp()).sum();
                    for d in 0..vd {
                        let want: f64 = (0..n)
                            .map(|j| (s[j] - mx).exp() / z * v[(j * h + b) * vd + d] as f64)
                            .sum();
                        let g = got[(r * h + b) * vd + d] as f64;
                        assert!(
                            (g - want).abs() < 1e-5,
                            "{tier:?} {m}x{h}x{n}: {g} vs {want}"
                        );
                    }
                }
            }
        }
    }
}

fn reference(x: &[f32], w: &[f32], b: Option<&[f32]>, k: usize, n: usize) -> Vec<f64> {
    let m = x.len() / k;
    let mut out = vec![0f64; m * n];
    for r in 0..m {
        for c in 0..n {
            let s: f64 = (0..k)
                .map(|i| x[r * k + i] as f64 * w[i * n + c] as f64)
                .sum();
            out[r * n + c] = s + b.map_or(0.0, |b| b[c] as f64);
        }
    }
    out
}

/// Every row tail (1..=12 rows left for the last block), column tails inside a panel
/// and across panels, depths from 1, with and without a bias.
#[test]
fn kernel_matches_the_definition_on_every_tail_and_tier() {
    for tier in dense_tiers() {
        dense_matches_on(tier);
    }
}

fn dense_matches_on(tier: Tier) {
    for (m, k, n) in [
        (1, 1, 1),
        (13, 7, 5),
        (25, 64, 33),
        (12, 9, 48),
        (30, 100, 17),
        (7, 3, 64),
        (5, 11, 16),
        (6, 4, 31),
        (19, 5, 8),
    ] {
        for with_bias in [false, true] {
            let x = values(m * k, m as u64);
            let w = values(k * n, n as u64 + 100);
            let b = values(n, 7);
            let b = with_bias.then_some(&b[..]);
            let pw = PackedWeights::new(&w, k, n, b);
            let mut got = vec![f32::NAN; m * n];
            dense_on(tier, &x, &pw, &mut got);
            for (i, (g, want)) in got.iter().zip(reference(&x, &w, b, k, n)).enumerate() {
                assert!(
                    (*g as f64 - want).abs() <= 1e-5 * (1.0 + want.abs()),
                    "{} {m}x{k}x{n} bias {with_bias}, element {i}: {g} vs {want}",
                    tier.name()
                );
            }
        }
    }
}

/// Copy the non-overlapping `ph x pw` patches of `x` (`[b, c, h, w]`) into rows of
/// `c * ph * pw` (channel, then patch row, then column: the kernel's OIHW order), patches
/// in row-major grid order from patch number `first` on, as many as `rows` holds.
fn patch_rows(
    x: &[f32],
    [b, c, h, w]: [usize; 4],
    [ph, pw]: [usize; 2],
    first: usize,
    rows: &mut [f32],
) {
    let (gh, gw) = (h / ph, w / pw);
    let k = c * ph * pw;
    let count = (b * gh * gw).saturating_sub(first);
    for (r, row) in (first..).zip(rows.chunks_exact_mut(k).take(count)) {
        let (bi, gy, gx) = (r / (gh * gw), r / gw % gh, r % gw);
        for ci in 0..c {
            for ky in 0..ph {
                let src = ((bi * c + ci) * h + gy * ph + ky) * w + gx * pw;
                row[(ci * ph + ky) * pw..][..pw].copy_from_slice(&x[src..][..pw]);
            }
        }
    }
}

/// Patches read where they lie give the bits of the copied rows through [`dense`]:
/// a range of patches starting mid-grid, a row tail, a column tail, non-square patches.
#[test]
fn patches_read_in_place_match_copied_rows() {
    for tier in dense_tiers() {
        patches_match_on(tier);
    }
}

fn patches_match_on(tier: Tier) {
    let ([b, c, h, w], [ph, pw]) = ([3, 3, 12, 20], [4, 5]);
    let (k, n) = (c * ph * pw, 37);
    let x = values(b * c * h * w, 7);
    let pw_ = PackedWeights::new(&values(k * n, 8), k, n, Some(&values(n, 9)));
    let patches = b * (h / ph) * (w / pw);
    for (first, count) in [(0, patches), (5, 17), (patches - 1, 1)] {
        let mut rows = vec![0f32; count * k];
        patch_rows(&x, [b, c, h, w], [ph, pw], first, &mut rows);
        let mut want = vec![0f32; count * n];
        dense_on(tier, &rows, &pw_, &mut want);
        let mut got = vec![f32::NAN; count * n];
        patch_dense_on(tier, &x, [b, c, h, w], [ph, pw], first, &pw_, &mut got);
        assert!(
            want.iter()
                .zip(&got)
                .all(|(a, b)| a.to_bits() == b.to_bits()),
            "{} patches {first}..{}",
            tier.name(),
            first + count
        );
    }
}

/// Each row is one patch in grid order, its values in the kernel's (channel, row,
/// column) order; non-square patches and grids.
#[test]
fn patch_rows_follow_the_kernel_layout() {
    let (b, c, h, w, ph, pw) = (2, 3, 6, 10, 3, 5);
    let x: Vec<f32> = (0..b * c * h * w).map(|i| i as f32).collect();
    let (gh, gw) = (h / ph, w / pw);
    let k = c * ph * pw;
    let mut rows = vec![f32::NAN; b * gh * gw * k];
    // In two parts, as two threads copy them.
    let (head, tail) = rows.split_at_mut(5 * k);
    patch_rows(&x, [b, c, h, w], [ph, pw], 0, head);
    patch_rows(&x, [b, c, h, w], [ph, pw], 5, tail);
    for bi in 0..b {
        for gy in 0..gh {
            for gx in 0..gw {
                let row = &rows[((bi * gh + gy) * gw + gx) * k..][..k];
                for ci in 0..c {
                    for ky in 0..ph {
                        for kx in 0..pw {
                            let want = x[((bi * c + ci) * h + gy * ph + ky) * w + gx * pw + kx];
                            assert_eq!(row[(ci * ph + ky) * pw + kx], want);
                        }
                    }
                }
            }
        }
    }
}

/// 1x1 convolution: `out[o, p] = w[o, :] . x[:, p] + bias[o]` for output rows from
/// `first`, pixel counts that fill no panel and several.
#[test]
fn pointwise_matches_the_definition_on_every_tier() {
    for tier in dense_tiers() {
        pointwise_matches_on(tier);
    }
}

fn pointwise_matches_on(tier: Tier) {
    for (i, o, pixels, first) in [
        (3, 5, 7, 0),
        (16, 13, 70, 2),
        (8, 40, 33, 12),
        (5, 7, 16, 0),
        (4, 9, 48, 3),
        (2, 6, 17, 0),
    ] {
        let (x, w, b) = (values(i * pixels, 1), values(o * i, 2), values(o, 3));
        let rows = o - first;
        let mut got = vec![f32::NAN; rows * pixels];
        pointwise_on(tier, &x, pixels, &w, &b, first, &mut got);
        for r in 0..rows {
            for p in 0..pixels {
                let want: f64 = (0..i)
                    .map(|c| w[(first + r) * i + c] as f64 * x[c * pixels + p] as f64)
                    .sum::<f64>()
                    + b[first + r] as f64;
                let g = got[r * pixels + p] as f64;
                assert!(
                    (g - want).abs() <= 1e-5 * (1.0 + want.abs()),
                    "{} {i}->{o} at {r},{p}: {g} vs {want}",
                    tier.name()
                );
            }
        }
    }
}

#[test]
fn the_i8_scan_is_exact_on_every_tier_tails_included() {
    // Rows 1..=9 cover the 4-row blocks and their tail; dims cover the 16/32-wide bodies
    // and their tails; the extreme values check that nothing saturates.
    for dim in [1usize, 15, 16, 31, 32, 33, 100, 512, 513] {
        for n in 1..=9usize {
            let mut rows: Vec<i8> = values(n * dim, (n * 1000 + dim) as u64)
                .iter()
                .map(|x| (x * 127.0).round() as i8)
                .collect();
            let mut probe: Vec<i8> = values(dim, dim as u64 + 5)
                .iter()
                .map(|x| (x * 127.0).round() as i8)
                .collect();
            if n == 9 {
                rows.fill(127);
                probe.fill(-127);
            }
            let want: Vec<i32> = rows
                .chunks_exact(dim)
                .map(|r| {
                    r.iter()
                        .zip(&probe)
                        .map(|(&a, &b)| a as i32 * b as i32)
                        .sum()
                })
                .collect();
            for t in tiers() {
                let mut got = vec![i32::MIN; n];
                quant::scan_on(t, &rows, &probe, dim, &mut got);
                assert_eq!(got, want, "{} n={n} dim={dim}", t.name());
            }
        }
    }
}

#[test]
fn the_quantised_estimate_stays_within_its_bound() {
    let dim = 512;
    let mut worst = 0f64;
    for seed in 0..200u64 {
        let (a, mut b) = (values(dim, seed), values(dim, seed + 7_000));
        if seed % 3 == 0 {
            // Close vectors: the case where the bound decides who is re-scored.
            for (x, y) in b.iter_mut().zip(&a) {
                *x = y + 0.01 * *x;
            }
        }
        let (mut qa, mut qb) = (vec![0i8; dim], vec![0i8; dim]);
        let (ka, kb): (Quant, Quant) = (quant::quantize(&a, &mut qa), quant::quantize(&b, &mut qb));
        assert!(qa.iter().chain(&qb).all(|&q| q != i8::MIN));
        let mut int = [0i32];
        quant::scan(&qb, &qa, dim, &mut int);
        let est = f64::from(ka.scale) * f64::from(kb.scale) * f64::from(int[0]);
        let exact: f64 = a.iter().zip(&b).map(|(&x, &y)| x as f64 * y as f64).sum();
        let bound = f64::from(Quant::bound(ka, quant::l1(&a), kb));
        assert!(
            (est - exact).abs() <= bound,
            "seed {seed}: |{est} - {exact}| > {bound}"
        );
        worst = worst.max((est - exact).abs() / bound);
    }
    // The bound is a worst case; typical errors are far inside it.
    eprintln!("largest error / bound: {worst:.3}");
    let mut z = [1i8; 4];
    assert_eq!(quant::quantize(&[0.0; 4], &mut z), Quant::default());
    assert_eq!(z, [0; 4]);
}

#[test]
fn conv3x3_matches_the_definition_on_every_tier() {
    for t in dense_tiers() {
        // (channels, outputs, height, width, first output row): panel tails (widths
        // whose padded grid is not a multiple of 32), one-pixel images, row-block tails.
        for (c, o, h, w, first) in [
            (1, 1, 1, 1, 0),
            (3, 5, 7, 9, 0),
            (16, 13, 10, 30, 2),
            (8, 40, 5, 33, 12),
            (17, 7, 13, 13, 0),
        ] {
            let wp = w + 2;
            let plane = (h + 2) * wp;
            let x = values(c * h * w, 11);
            let mut xpad = vec![0f32; c * plane + 2];
            for ch in 0..c {
                for y in 0..h {
                    xpad[ch * plane + (y + 1) * wp + 1..][..w]
                        .copy_from_slice(&x[(ch * h + y) * w..][..w]);
                }
            }
            let (wt, b) = (values(o * c * 9, 12), values(o, 13));
            let rows = o - first;
            let mut got = vec![f32::NAN; rows * h * wp];
            conv3x3_on(t, &xpad, c, h, wp, &wt, &b, first, &mut got);
            for r in 0..rows {
                for y in 0..h {
                    for xx in 0..w {
                        let mut want = b[first + r] as f64;
                        for ch in 0..c {
                            for ky in 0..3 {
                                for kx in 0..3 {
                                    let (iy, ix) = (y + ky, xx + kx);
                                    if iy < 1 || ix < 1 || iy > h || ix > w {
                                        continue;
                                    }
                                    want += wt[((first + r) * c + ch) * 9 + ky * 3 + kx] as f64
                                        * x[(ch * h + iy - 1) * w + ix - 1] as f64;
                                }
                            }
                        }
                        let g = got[r * h * wp + y * wp + xx] as f64;
                        assert!(
                            (g - want).abs() <= 1e-5 * (1.0 + want.abs()),
                            "{} c={c} o={o} {h}x{w} at {r},{y},{xx}: {g} vs {want}",
                            t.name()
                        );
                    }
                }
            }
        }
    }
}
