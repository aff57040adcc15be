//! 3x3 convolutions with stride 1 and one pixel of zero padding, channels-first, as a
//! tract op on the AVX2+FMA and AVX-512 tiers (kernel: `nvr_linalg::pointwise::conv3x3_on`).
//! tract runs them as an im2col product with the activations moved channels-last and
//! packed (NanoDet's 24 such convolutions were ~70 % of its time, `OptMatMul` in the
//! per-op profile). Here the input is copied once into a zero-bordered buffer and the
//! product reads its nine shifted views where they lie, through the 1x1 kernels' panels
//! and register tiles; the weights are ONNX's `[O, C, 3, 3]` as they come.

use tract_onnx::prelude::*;
use tract_onnx::tract_core::ops::cnn::conv::{Conv, KernelFormat};
use tract_onnx::tract_core::ops::cnn::PaddingSpec;
use tract_onnx::tract_core::ops::nn::DataFormat;
use tract_onnx::tract_hir::internal::*;

use nvr_linalg::dense::available;
use nvr_linalg::pointwise::conv3x3_on;
use nvr_linalg::Tier;

use super::dense::split_rows;
use super::pointwise::Params;

/// `[N,] C, H, W` -> `[N,] O, H, W` with constant weights `[O, C, 3, 3]` and bias `[O]`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Conv3x3 {
    pub params: Params,
    pub inputs: usize,
    pub outputs: usize,
}

impl Op for Conv3x3 {
    fn name(&self) -> StaticName {
        "NvrConv3x3".into()
    }
    fn info(&self) -> TractResult<Vec<String>> {
        Ok(vec![format!(
            "{} -> {} channels",
            self.inputs, self.outputs
        )])
    }
    op_as_typed_op!();
}

impl Conv3x3 {
    /// tract's `Conv` at node `e` if it is one this op runs: f32, NCHW or CHW, 3x3, stride
    /// and dilation 1, one pixel of zero padding on every side, no groups, constant
    /// weights `[O, C, 3, 3]` and bias (`[O]`, one value, or none). Only where the CPU has
    /// the kernel.
    pub fn chain(model: &TypedModel, e: usize) -> Option<(OutletId, Conv3x3)> {
        if !available() {
            return None;
        }
        let node = &model.nodes[e];
        let conv = node.op_as::<Conv>()?;
        let spec = &conv.pool_spec;
        let ones = |v: &Option<TVec<usize>>| v.as_ref().is_none_or(|v| v.iter().all(|&d| d == 1));
        let padded = match &spec.padding {
            PaddingSpec::Explicit(b, a) => b[..] == [1, 1] && a[..] == [1, 1],
            // For an odd kernel and stride 1, "same" is one pixel on every side.
            PaddingSpec::SameUpper | PaddingSpec::SameLower => true,
            _ => false,
        };
        if conv.q_params.is_some()
            || conv.group != 1
            || conv.kernel_fmt != KernelFormat::OIHW
            || !matches!(spec.data_format, DataFormat::NCHW | DataFormat::CHW)
            || spec.kernel_shape[..] != [3, 3]
            || !ones(&spec.strides)
            || !ones(&spec.dilations)
            || !padded
            || node.inputs.len() != 3
        {
            return None;
        }
        let x = model.outlet_fact(node.inputs[0]).ok()?;
        let w = model.outlet_fact(node.inputs[1]).ok()?.konst.clone()?;
        let b = model.outlet_fact(node.inputs[2]).ok()?.konst.clone()?;
        let (o, c) = (spec.output_channels, spec.input_channels);
        if x.datum_type != DatumType::F32
            || w.datum_type() != DatumType::F32
            || b.datum_type() != DatumType::F32
            || w.shape() != [o, c, 3, 3]
        {
            return None;
        }
        let weights = w.try_as_plain_ram().ok()?.as_slice::<f32>().ok()?.to_vec();
        let b = b.try_as_plain_ram().ok()?.as_slice::<f32>().ok()?.to_vec();
        let bias = match b.len() {
            n if n == o => b,
            1 => vec![b[0]; o],
            _ => return None,
        };
        Some((
            node.inputs[0],
            Conv3x3 {
                params: Params::new(weights, bias),
                inputs: c,
                outputs: o,
            },
        ))
    }
}

impl EvalOp for Conv3x3 {
    op_out_of_plan!();

    fn eval(&self, _ctx: &EvalContext, inputs: TVec<TValue>) -> TractResult<TVec<TValue>> {
        let x = args_1!(inputs);
        let shape = x.shape().to_vec();
        let r = shape.len();
        ensure!(
            (r == 3 || r == 4) && shape[r - 3] == self.inputs,
            "3x3 convolution: input {shape:?} does not have {} channels",
            self.inputs
        );
        let (h, w) = (shape[r - 2], shape[r - 1]);
        let mut out_shape = shape.clone();
        out_shape[r - 3] = self.outputs;
        let mut out = Tensor::zero::<f32>(&out_shape)?;
        if h * w == 0 {
            return Ok(tvec!(out.into_tvalue()));
        }
        let x = x.try_as_plain_ram()?;
        let x = x.as_slice::<f32>()?;
        let mut out_ram = out.try_as_plain_ram_mut()?;
        let data = out_ram.as_slice_mut::<f32>()?;
        // The input with a zero border (and two values after the last plane, which the
        // last taps' reads reach), and the output over the padded width: both per call,
        // sized by this input (tract allocates its im2col buffers the same way).
        let (wp, plane) = (w + 2, (h + 2) * (w + 2));
        let mut xpad = vec![0f32; self.inputs * plane + 2];
        let mut wide = vec![0f32; self.outputs * h * wp];
        let tier = Tier::current();
        for (xb, ob) in x
            .chunks_exact(self.inputs * h * w)
            .zip(data.chunks_exact_mut(self.outputs * h * w))
        {
            for (src, dst) in xb.chunks_exact(h * w).zip(xpad.chunks_exact_mut(plane)) {
                for (row, d) in src.chunks_exact(w).zip(dst[wp + 1..].chunks_mut(wp)) {
                    d[..w].copy_from_slice(row);
                }
            }
            split_rows(
                self.outputs,
                9 * self.inputs,
                h * wp,
                &mut wide,
                |first, o| {
                    conv3x3_on(
                        tier,
                        &xpad,
                        self.inputs,
                        h,
                        wp,
                        &self.params.weights,
                        &self.params.bias,
                        first,
                        o,
                    )
                },
            );
            for (src, dst) in wide.chunks_exact(wp).zip(ob.chunks_exact_mut(w)) {
                dst.copy_from_slice(&src[..w]);
            }
        }
        Ok(tvec!(out.into_tvalue()))
    }
}

impl TypedOp for Conv3x3 {
    fn output_facts(&self, inputs: &[&TypedFact]) -> TractResult<TVec<TypedFact>> {
        let x = inputs[0];
        let r = x.rank();
        ensure!(x.datum_type == DatumType::F32 && (r == 3 || r == 4));
        let mut shape = x.shape.to_tvec();
        shape[r - 3] = self.outputs.into();
        Ok(tvec!(f32::fact(shape)))
    }

    fn cost(&self, inputs: &[&TypedFact]) -> TractResult<TVec<(Cost, TDim)>> {
        let out = self.output_facts(inputs)?;
        Ok(tvec!((
            Cost::FMA(DatumType::F32),
            out[0].shape.volume() * (9 * self.inputs)
        )))
    }

    as_op!();
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::inference::ops::tests::max_abs_diff;
    use crate::inference::xclip::seeded_values;
    use tract_onnx::tract_core::ops::cnn::PoolSpec;

    fn conv(o: usize, c: usize, padding: PaddingSpec, strides: usize, fmt: DataFormat) -> Conv {
        Conv {
            pool_spec: PoolSpec {
                data_format: fmt,
                kernel_shape: tvec!(3, 3),
                padding,
                dilations: None,
                strides: Some(tvec!(strides, strides)),
                input_channels: c,
                output_channels: o,
            },
            kernel_fmt: KernelFormat::OIHW,
            group: 1,
            q_params: None,
        }
    }

    /// 3x3 convolutions as tract declutters them, with channel, row and panel tails, a
    /// batch of two, CHW, scalar and per-channel bias: taken where the CPU has the kernel
    /// (and not for stride 2 or no padding), tract's values within float rounding, and the
    /// same bits on two threads.
    #[test]
    fn three_by_three_convolutions_agree_with_tract() {
        let same = || PaddingSpec::Explicit(tvec!(1, 1), tvec!(1, 1));
        let cases: Vec<(Vec<usize>, usize, PaddingSpec, usize, bool, bool)> = vec![
            (vec![1, 16, 13, 13], 24, same(), 1, true, true),
            (vec![2, 3, 7, 30], 5, PaddingSpec::SameUpper, 1, false, true),
            (vec![1, 32, 52, 52], 32, same(), 1, true, true),
            (vec![1, 1, 1, 1], 1, same(), 1, true, true),
            (vec![8, 9, 17], 13, same(), 1, true, true),
            (vec![1, 8, 12, 12], 8, same(), 2, true, false),
            (vec![1, 8, 12, 12], 8, PaddingSpec::Valid, 1, true, false),
        ];
        for (xs, o, padding, stride, per_channel, ours_expected) in cases {
            let fmt = if xs.len() == 4 {
                DataFormat::NCHW
            } else {
                DataFormat::CHW
            };
            let c = xs[xs.len() - 3];
            let mut model = TypedModel::default();
            let x = model.add_source("x", f32::fact(&xs)).unwrap();
            let k = Tensor::from_shape(&[o, c, 3, 3], &seeded_values(41, o * c * 9)).unwrap();
            let k = model.add_const("k", k).unwrap();
            let b = if per_channel {
                Tensor::from_shape(&[o], &seeded_values(42, o)).unwrap()
            } else {
                tensor0(0.25f32)
            };
            let b = model.add_const("b", b).unwrap();
            let y = model
                .wire_node("conv", conv(o, c, padding, stride, fmt), &[x, k, b])
                .unwrap()[0];
            model.select_output_outlets(&[y]).unwrap();
            let n: usize = xs.iter().product();
            let input = Tensor::from_shape(&xs, &seeded_values(43, n)).unwrap();
            let ours = crate::inference::onnx::optimise(model.clone()).unwrap();
            let theirs = model.into_optimized().unwrap().into_runnable().unwrap();
            let taken = ours.model().nodes.iter().any(|n| n.op_is::<Conv3x3>());
            assert_eq!(
                taken,
                ours_expected && available(),
                "{xs:?} stride {stride}"
            );
            let a = ours.run(tvec!(input.clone().into_tvalue())).unwrap();
            let b = theirs.run(tvec!(input.clone().into_tvalue())).unwrap();
            let d = max_abs_diff(&a[0], &b[0]);
            assert!(d < 1e-4, "{xs:?}: differs by {d}");
            let two = crate::inference::onnx::GraphThreads::new(2)
                .run(|| ours.run(tvec!(input.clone().into_tvalue())).unwrap());
            assert_eq!(max_abs_diff(&a[0], &two[0]), 0.0, "{xs:?} on 2 threads");
        }
    }
}
