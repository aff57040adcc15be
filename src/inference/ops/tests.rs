//! The ops against tract's own on random inputs and on the committed tiny X-CLIP.

use tract_onnx::prelude::*;
use tract_onnx::tract_hir::internal::*;

use super::*;

/// A committed model (`path` under the crate root) through this module's parser and
/// [`crate::inference::onnx::optimise`], and a counter of its plan's nodes by op name (tests checking
/// which ops were taken).
pub(crate) fn committed_plan(path: &str) -> (crate::inference::onnx::Plan, impl Fn(&str) -> usize) {
    let model = super::onnx()
        .model_for_path(format!("{}/{path}", env!("CARGO_MANIFEST_DIR")))
        .and_then(|m| m.into_typed())
        .unwrap();
    let plan = crate::inference::onnx::optimise(model).unwrap();
    let counted = plan.clone();
    let count = move |name: &str| {
        counted
            .model()
            .nodes
            .iter()
            .filter(|n| n.op.name() == name)
            .count()
    };
    (plan, count)
}

/// The largest absolute difference between two f32 tensors of the same length (tests
/// comparing a plan with ours against tract's own).
pub(crate) fn max_abs_diff(a: &Tensor, b: &Tensor) -> f32 {
    let (a, b) = (a.try_as_plain_ram().unwrap(), b.try_as_plain_ram().unwrap());
    let (a, b) = (a.as_slice::<f32>().unwrap(), b.as_slice::<f32>().unwrap());
    assert_eq!(a.len(), b.len(), "tensor lengths");
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0f32, f32::max)
}

fn values(n: usize, seed: u64) -> Vec<f32> {
    crate::inference::xclip::seeded_values(seed, n)
}

/// On the committed tiny X-CLIP: every op of this module fires, and the graph with them
/// agrees with tract's own (the parity tests compare both with PyTorch).
#[test]
fn ops_fire_on_the_tiny_model_and_agree_with_tract() {
    let bytes = include_bytes!("../../../models/xclip-tiny/xclip_video.onnx");
    let load = |parser: tract_onnx::Onnx| {
        parser
            .model_for_read(&mut &bytes[..])
            .and_then(|m| m.into_typed())
            .unwrap()
    };
    let ours = crate::inference::onnx::optimise(load(super::onnx())).unwrap();
    let theirs = load(tract_onnx::onnx())
        .into_optimized()
        .unwrap()
        .into_runnable()
        .unwrap();
    let count = |name: &str| {
        ours.model()
            .nodes
            .iter()
            .filter(|n| n.op.name() == name)
            .count()
    };
    for op in [
        "NvrLayerNorm",
        "NvrQuickGelu",
        "NvrAttention",
        "NvrRowSoftmax",
    ] {
        assert!(count(op) > 0, "{op} did not fire");
    }
    // The dense layers run on our kernel only where the CPU has it.
    for op in ["NvrDense", "NvrPatchEmbed"] {
        assert_eq!(
            count(op) > 0,
            nvr_linalg::dense::available(),
            "{op} on this CPU"
        );
    }
    let px = values(8 * 3 * 224 * 224, 1234);
    let te = values(5 * 64, 99);
    let inputs = || {
        tvec!(
            Tensor::from_shape(&[1, 8, 3, 224, 224], &px)
                .unwrap()
                .into_tvalue(),
            Tensor::from_shape(&[5, 64], &te).unwrap().into_tvalue()
        )
    };
    let (a, b) = (ours.run(inputs()).unwrap(), theirs.run(inputs()).unwrap());
    let diff = max_abs_diff(&a[0], &b[0]);
    assert!(diff < 1e-4, "logits differ by {diff}");
    // The per-op profile the benches print sees them too, once per layer.
    let inputs = [
        Tensor::from_shape(&[1, 8, 3, 224, 224], &px).unwrap(),
        Tensor::from_shape(&[5, 64], &te).unwrap(),
    ];
    let times = crate::inference::onnx::profile(&ours, &inputs, 1).unwrap();
    let attention = times.iter().find(|t| t.op == "NvrAttention").unwrap();
    assert_eq!(attention.calls, count("NvrAttention"));
    assert!(
        times.windows(2).all(|w| w[0].ms >= w[1].ms),
        "sorted by time"
    );
}

#[test]
fn attention_matches_the_definition() {
    // (batch, queries, heads, keys, key dim, value dim, query rows): block and tail
    // paths for rows, keys not a multiple of 8, value dims with and without tails.
    let cases = [
        (2, 51, 3, 51, 64, 64, Some((0, 50))),
        (1, 8, 2, 8, 16, 64, None),
        (3, 11, 2, 5, 7, 20, Some((2, 11))),
        (2, 51, 4, 51, 16, 16, Some((0, 50))),
    ];
    for (a, m, h, n, kd, vd, rows) in cases {
        let q = values(a * m * h * kd, 1);
        let k = values(a * n * h * kd, 2);
        let v = values(a * n * h * vd, 3);
        let (r0, r1) = rows.unwrap_or((0, m));
        let scale = 1.0 / (kd as f32).sqrt();
        let op = Attention { scale, rows };
        let t = |d: &[f32], shape: &[usize]| Tensor::from_shape(shape, d).unwrap().into_tvalue();
        let out = op
            .eval(
                &EvalContext::out_of_plan(),
                tvec!(
                    t(&q, &[a, m, h, kd]),
                    t(&k, &[a, n, h, kd]),
                    t(&v, &[a, n, h, vd])
                ),
            )
            .unwrap();
        assert_eq!(out[0].shape(), &[a, r1 - r0, h, vd]);
        let got = out[0].try_as_plain_ram().unwrap();
        let got = got.as_slice::<f32>().unwrap();
        for ai in 0..a {
            for b in 0..h {
                for (r, i) in (r0..r1).enumerate() {
                    let qi = |d: usize| q[((ai * m + i) * h + b) * kd + d] as f64;
                    let s: Vec<f64> = (0..n)
                        .map(|j| {
                            (0..kd)
                                .map(|d| qi(d) * k[((ai * n + j) * h + b) * kd + d] as f64)
                                .sum::<f64>()
                                * scale as f64
                        })
                        .collect();
                    let mx = s.iter().copied().fold(f64::NEG_INFINITY, f64::max);
                    let z: f64 = s.iter().map(|x| (x - mx).exp()).sum();
                    for d in 0..vd {
                        let want: f64 = (0..n)
                            .map(|j| {
                                (s[j] - mx).exp() / z * v[((ai * n + j) * h + b) * vd + d] as f64
                            })
                            .sum();
                        let g = got[((ai * (r1 - r0) + r) * h + b) * vd + d] as f64;
                        assert!((g - want).abs() < 1e-5, "case {a}x{m}x{h}: {g} vs {want}");
                    }
                }
            }
        }
    }
}

/// The PReLU chain as tflite2onnx writes it, fused, gives tract's own result on
/// values of both signs; with the chain's parts shared elsewhere it is left alone.
#[test]
fn prelu_chain_is_fused_with_tracts_result() {
    use tract_onnx::tract_core::ops::math;
    let build = |share_abs: bool| {
        let mut m = TypedModel::default();
        let x = m.add_source("x", f32::fact([2, 3, 4, 5])).unwrap();
        let zero = m.add_const("zero", tensor4(&[[[[0f32]]]])).unwrap();
        let c = Tensor::from_shape(&[1, 3, 1, 1], &[0.5f32, -1.25, 2.0]).unwrap();
        let c = m.add_const("c", c).unwrap();
        let wire = |m: &mut TypedModel, name: &str, op: Box<dyn TypedOp>, i: &[OutletId]| {
            m.wire_node(name, op, i).unwrap()[0]
        };
        let low = wire(&mut m, "low", Box::new(math::max()), &[x, zero]);
        let a = wire(&mut m, "abs", Box::new(math::abs()), &[x]);
        let d = wire(&mut m, "d", Box::new(math::sub()), &[x, a]);
        let mm = wire(&mut m, "m", Box::new(math::mul()), &[d, c]);
        let y = wire(&mut m, "y", Box::new(math::add()), &[low, mm]);
        let mut outputs = vec![y];
        if share_abs {
            outputs.push(a);
        }
        m.select_output_outlets(&outputs).unwrap();
        m
    };
    let x = Tensor::from_shape(&[2, 3, 4, 5], &values(120, 21)).unwrap();
    for share_abs in [false, true] {
        let m = build(share_abs);
        let ours = crate::inference::onnx::optimise(m.clone()).unwrap();
        let theirs = m.into_optimized().unwrap().into_runnable().unwrap();
        let fused = ours
            .model()
            .nodes
            .iter()
            .filter(|n| n.op.name() == "NvrChannelPrelu")
            .count();
        assert_eq!(fused, usize::from(!share_abs), "shared abs: {share_abs}");
        let a = ours.run(tvec!(x.clone().into_tvalue())).unwrap();
        let b = theirs.run(tvec!(x.clone().into_tvalue())).unwrap();
        assert_eq!(max_abs_diff(&a[0], &b[0]), 0.0, "shared abs: {share_abs}");
    }
}

#[test]
fn channel_ops_match_the_definition() {
    // [2, 3, 5] with the constant along axis 1, then along the last axis.
    let x = values(30, 11);
    let v = values(3, 12);
    for (mul, axis) in [(true, 1), (false, 1), (true, 2), (false, 2)] {
        let (shape, vshape) = if axis == 1 {
            ([2usize, 3, 5], [1usize, 3, 1])
        } else {
            ([2, 5, 3], [1, 1, 3])
        };
        let op = ChannelOp {
            mul,
            axis,
            konst: 1,
        };
        let out = op
            .eval(
                &EvalContext::out_of_plan(),
                tvec!(
                    Tensor::from_shape(&shape, &x).unwrap().into_tvalue(),
                    Tensor::from_shape(&vshape, &v).unwrap().into_tvalue()
                ),
            )
            .unwrap();
        let got = out[0].try_as_plain_ram().unwrap();
        let got = got.as_slice::<f32>().unwrap();
        for (i, (&g, &xi)) in got.iter().zip(&x).enumerate() {
            let c = if axis == 1 { (i / 5) % 3 } else { i % 3 };
            let want = if mul { xi * v[c] } else { xi + v[c] };
            assert_eq!(g, want, "mul {mul}, axis {axis}, element {i}");
        }
    }
}
