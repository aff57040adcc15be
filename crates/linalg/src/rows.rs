//! Row and element kernels of the transformer and CNN ops: layer norm, softmax,
//! quick-GELU, per-channel add/multiply, PReLU and hard-swish, in place on slices.
//!
//! Each is one portable body, compiled twice on x86_64: as the baseline target and with
//! AVX2+FMA enabled, so the same loops vectorise eight wide where the tier allows
//! ([`Tier::avx2`]); aarch64's baseline already has NEON. The loops are written to
//! vectorise (sixteen partial sums, branch-free exp).

use crate::tier::Tier;

/// `pub fn $name(args)` on the current tier and `pub fn $with(tier, args)` on a given one:
/// `$body` compiled with AVX2+FMA when the tier allows, else as the baseline compiles it.
macro_rules! avx2_or_plain {
    ($(#[$doc:meta])* $name:ident, $with:ident, $body:ident($($arg:ident: $ty:ty),* $(,)?)) => {
        $(#[$doc])*
        pub fn $name($($arg: $ty),*) {
            $with(Tier::current(), $($arg),*)
        }

        /// As the function without `_with`, on the kernels of `tier` (which this CPU must
        /// have: it panics otherwise).
        pub fn $with(tier: Tier, $($arg: $ty),*) {
            tier.check();
            #[cfg(target_arch = "x86_64")]
            if tier.avx2() {
                #[target_feature(enable = "avx2,fma")]
                unsafe fn avx2($($arg: $ty),*) {
                    $body($($arg),*)
                }
                // SAFETY: the CPU has AVX2 and FMA (the tier is supported, checked above).
                return unsafe { avx2($($arg),*) };
            }
            $body($($arg),*)
        }
    };
}

avx2_or_plain!(
    /// Normalise each `scale.len()`-long row of `data` in place: `(x - mean) / sqrt(var +
    /// eps) * scale + bias`.
    layer_norm_rows,
    layer_norm_rows_with,
    layer_norm_rows_body(data: &mut [f32], scale: &[f32], bias: &[f32], eps: f32)
);

#[inline(always)]
fn layer_norm_rows_body(data: &mut [f32], scale: &[f32], bias: &[f32], eps: f32) {
    let row = scale.len();
    for x in data.chunks_exact_mut(row) {
        let mean = sum(x) / row as f32;
        let var = sum_sq_dev(x, mean) / row as f32;
        let inv = 1.0 / (var + eps).sqrt();
        for ((v, &g), &b) in x.iter_mut().zip(scale).zip(bias) {
            *v = (*v - mean) * inv * g + b;
        }
    }
}

// Sixteen partial sums so the loops vectorise (and round like a blocked sum, closer to the
// reference than one long serial chain).
#[inline(always)]
fn sum(x: &[f32]) -> f32 {
    let mut acc = [0f32; 16];
    let chunks = x.chunks_exact(16);
    let tail: f32 = chunks.remainder().iter().sum();
    for c in chunks {
        for (a, v) in acc.iter_mut().zip(c) {
            *a += v;
        }
    }
    acc.iter().sum::<f32>() + tail
}

#[inline(always)]
fn sum_sq_dev(x: &[f32], mean: f32) -> f32 {
    let mut acc = [0f32; 16];
    let chunks = x.chunks_exact(16);
    let tail: f32 = chunks
        .remainder()
        .iter()
        .map(|v| (v - mean) * (v - mean))
        .sum();
    for c in chunks {
        for (a, v) in acc.iter_mut().zip(c) {
            *a += (v - mean) * (v - mean);
        }
    }
    acc.iter().sum::<f32>() + tail
}

/// `exp(x)` for x <= 0 (softmax after the max is taken off), within 2 ulp of the libm
/// result, branch-free so the compiler vectorises it (Cephes' expf range reduction and
/// polynomial).
#[inline(always)]
pub(crate) fn exp_nonpositive(x: f32) -> f32 {
    const LOG2E: f32 = std::f32::consts::LOG2_E;
    const C1: f32 = 0.693_359_4;
    const C2: f32 = -2.121_944_4e-4;
    // 1.5 * 2^23: adding and subtracting it rounds to the nearest integer.
    const ROUND: f32 = 12_582_912.0;
    let x = x.max(-87.0);
    let n = (x * LOG2E + ROUND) - ROUND;
    let r = x - n * C1 - n * C2;
    let mut p = 1.987_569_1e-4f32;
    p = p * r + 1.398_199_9e-3;
    p = p * r + 8.333_452e-3;
    p = p * r + 4.166_579_6e-2;
    p = p * r + 1.666_666_5e-1;
    p = p * r + 0.5;
    let y = p * r * r + r + 1.0;
    // 2^n without a float-to-int conversion (which blocks vectorisation): n + 127 + 2^23
    // holds n + 127 in its low mantissa bits; shifting them into the exponent field drops
    // the rest.
    y * f32::from_bits((n + (127.0 + 8_388_608.0)).to_bits() << 23)
}

avx2_or_plain!(
    /// Softmax of each `row`-long slice of `data`, in place.
    softmax_rows,
    softmax_rows_with,
    softmax_rows_body(data: &mut [f32], row: usize)
);

// One body compiled twice: for the baseline target and, on x86_64, with AVX2 enabled so
// the same loops vectorise eight wide (aarch64's baseline already has NEON).
#[inline(always)]
pub(crate) fn softmax_rows_body(data: &mut [f32], row: usize) {
    for x in data.chunks_exact_mut(row) {
        let mut m = [f32::NEG_INFINITY; 16];
        let chunks = x.chunks_exact(16);
        let mut max = chunks
            .remainder()
            .iter()
            .copied()
            .fold(f32::NEG_INFINITY, f32::max);
        for c in chunks {
            for (a, &v) in m.iter_mut().zip(c) {
                *a = a.max(v);
            }
        }
        max = m.iter().copied().fold(max, f32::max);
        let mut acc = [0f32; 16];
        let mut chunks = x.chunks_exact_mut(16);
        for c in &mut chunks {
            for (a, v) in acc.iter_mut().zip(c.iter_mut()) {
                *v = exp_nonpositive(*v - max);
                *a += *v;
            }
        }
        let mut total: f32 = 0.0;
        for v in chunks.into_remainder() {
            *v = exp_nonpositive(*v - max);
            total += *v;
        }
        let inv = 1.0 / (acc.iter().sum::<f32>() + total);
        x.iter_mut().for_each(|v| *v *= inv);
    }
}

avx2_or_plain!(
    /// `x * sigmoid(alpha * x)` over `data`, in place.
    quick_gelu,
    quick_gelu_with,
    quick_gelu_body(data: &mut [f32], alpha: f32)
);

#[inline(always)]
fn quick_gelu_body(data: &mut [f32], alpha: f32) {
    for v in data.iter_mut() {
        let t = alpha * *v;
        // sigmoid(t) from exp(-|t|) <= 1, so nothing overflows whatever the sign.
        let e = exp_nonpositive(-t.abs());
        let sig = if t >= 0.0 {
            1.0 / (1.0 + e)
        } else {
            e / (1.0 + e)
        };
        *v *= sig;
    }
}

avx2_or_plain!(
    /// Apply `v` (one value per channel) to `data`, laid out as `[.., channels, inner]`:
    /// multiply when `mul`, else add.
    channel_op,
    channel_op_with,
    channel_op_body(data: &mut [f32], v: &[f32], inner: usize, mul: bool)
);

#[inline(always)]
fn channel_op_body(data: &mut [f32], v: &[f32], inner: usize, mul: bool) {
    each_channel(data, v, inner, |block, c| {
        if mul {
            block.iter_mut().for_each(|x| *x *= c);
        } else {
            block.iter_mut().for_each(|x| *x += c);
        }
    })
}

/// `f(block, v[c])` for each channel's block of `inner` values in `data`, laid out as
/// `[.., channels, inner]`.
#[inline(always)]
fn each_channel(data: &mut [f32], v: &[f32], inner: usize, f: impl Fn(&mut [f32], f32)) {
    for outer in data.chunks_exact_mut(v.len() * inner) {
        for (block, &c) in outer.chunks_exact_mut(inner).zip(v) {
            f(block, c)
        }
    }
}

avx2_or_plain!(
    /// PReLU as tflite2onnx writes it (`max(x, 0) + c * (x - |x|)`, `c` half the slope) in
    /// one pass: `x` where `x >= 0`, else `c * (x + x)`; `data` laid out as `[..,
    /// channels, inner]`, `c` one value per channel.
    channel_prelu,
    channel_prelu_with,
    channel_prelu_body(data: &mut [f32], c: &[f32], inner: usize)
);

#[inline(always)]
fn channel_prelu_body(data: &mut [f32], c: &[f32], inner: usize) {
    each_channel(data, c, inner, |block, c| {
        for x in block {
            *x = if *x >= 0.0 { *x } else { c * (*x + *x) };
        }
    })
}

avx2_or_plain!(
    /// `y = (x1 * min(max(x1 + 3, 0), 6)) * scale + shift` with `x1 = x * pre[0] + pre[1]`
    /// over `data`, in place; absent steps are not computed.
    hard_swish,
    hard_swish_with,
    hard_swish_body(
        data: &mut [f32],
        pre: Option<[f32; 2]>,
        scale: Option<f32>,
        shift: Option<f32>,
    )
);

#[inline(always)]
fn hard_swish_body(
    data: &mut [f32],
    pre: Option<[f32; 2]>,
    scale: Option<f32>,
    shift: Option<f32>,
) {
    // One loop per combination, so the vectorised loops carry no branches.
    match (pre, scale, shift) {
        (Some([a, b]), Some(s), Some(c)) => each(data, |x| swish(x * a + b) * s + c),
        (Some([a, b]), Some(s), None) => each(data, |x| swish(x * a + b) * s),
        (None, Some(s), Some(c)) => each(data, |x| swish(x) * s + c),
        (None, Some(s), None) => each(data, |x| swish(x) * s),
        (pre, scale, shift) => each(data, |x| {
            let x1 = pre.map_or(x, |[a, b]| x * a + b);
            let y = scale.map_or(swish(x1), |s| swish(x1) * s);
            shift.map_or(y, |c| y + c)
        }),
    }
}

// max then min, as the graph's ops do (`clamp` differs on NaN and panics on bad bounds).
#[allow(clippy::manual_clamp)]
#[inline(always)]
fn swish(x1: f32) -> f32 {
    x1 * (x1 + 3.0).max(0.0).min(6.0)
}

#[inline(always)]
fn each(data: &mut [f32], f: impl Fn(f32) -> f32) {
    for v in data {
        *v = f(*v);
    }
}
