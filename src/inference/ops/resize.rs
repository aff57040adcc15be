//! tract's Resize with its per-axis plans made once and a row pass for the last axis.
//!
//! NanoDet upsamples and downsamples its feature maps with ONNX Resize (4 calls, up to
//! 128 x 52 x 52 out). tract builds the interpolation plan of every axis on every call and
//! resamples the last axis one element at a time through its general loop (an `inner`
//! run of length 1 per tap): 5.3 of NanoDet's 43 ms on the dev machine. [`PlannedResize`]
//! takes tract's plans (`Resize::plan_axis`, so the taps and weights are tract's) once the
//! shapes are known, and runs the last axis as one loop per row. The arithmetic per output
//! is tract's, in tract's order, so the result is the same bits (tested).

use std::sync::Arc;

use tract_onnx::prelude::*;
use tract_onnx::tract_core::ops::nn::resize::{resample_axis, AxisPlan, Resize};
use tract_onnx::tract_hir::internal::*;

/// A [`Resize`] on a fixed f32 input shape with constant scales or sizes.
#[derive(Debug, Clone)]
pub struct PlannedResize {
    input: TVec<usize>,
    output: TVec<usize>,
    /// The axes that change, in tract's order, with their plans.
    plans: Arc<Vec<(usize, AxisPlan)>>,
}

impl PartialEq for PlannedResize {
    fn eq(&self, other: &Self) -> bool {
        self.input == other.input
            && self.output == other.output
            && Arc::ptr_eq(&self.plans, &other.plans)
    }
}

impl Eq for PlannedResize {}

impl PlannedResize {
    /// For node `node` of an optimised model, when it is a [`Resize`] this can take.
    pub fn for_node(model: &TypedModel, node: &TypedNode) -> Option<PlannedResize> {
        let op = node.op_as::<Resize>()?;
        let fact = model.outlet_fact(node.inputs[0]).ok()?;
        if fact.datum_type != DatumType::F32 {
            return None;
        }
        let input: TVec<usize> = fact.shape.as_concrete()?.into();
        let konst = |ix: Option<usize>| -> Option<Option<Arc<Tensor>>> {
            match ix {
                None => Some(None),
                Some(ix) => Some(Some(
                    model
                        .outlet_fact(*node.inputs.get(ix)?)
                        .ok()?
                        .konst
                        .clone()?,
                )),
            }
        };
        let (scales, sizes) = (
            konst(op.optional_scales_input)?,
            konst(op.optional_sizes_input)?,
        );
        let output = op
            .compute_output_shape(&input, scales.as_deref(), sizes.as_deref())
            .ok()?;
        // The scale per axis as tract's eval takes it.
        let scales: TVec<f32> = match scales.filter(|s| s.len() == input.len()) {
            Some(s) => s.try_as_plain_ram().ok()?.as_slice::<f32>().ok()?.into(),
            None => output
                .iter()
                .zip(&input)
                .map(|(o, i)| *o as f32 / *i as f32)
                .collect(),
        };
        let plans = scales
            .iter()
            .enumerate()
            .filter(|&(axis, &scale)| !(input[axis] == output[axis] && scale == 1.0))
            .map(|(axis, &scale)| (axis, op.plan_axis(scale, input[axis], output[axis])))
            .collect();
        Some(PlannedResize {
            input,
            output,
            plans: Arc::new(plans),
        })
    }
}

/// Resample the last axis of `input` (rows of `plan`'s input length) into `output`:
/// tract's `resample_axis` with an inner run of 1, one row at a time.
pub fn resample_last_axis(input: &[f32], len_in: usize, plan: &AxisPlan, output: &mut [f32]) {
    let len_out = plan.extrapolated.len();
    let w = plan.window;
    for (src, dst) in input
        .chunks_exact(len_in)
        .zip(output.chunks_exact_mut(len_out))
    {
        for (x, d) in dst.iter_mut().enumerate() {
            if plan.extrapolated[x] {
                *d = 0.0;
                continue;
            }
            let mut acc = 0.0f32;
            for (&i, &wt) in plan.indices[x * w..][..w]
                .iter()
                .zip(&plan.weights[x * w..][..w])
            {
                if wt != 0.0 {
                    acc += wt * src[i];
                }
            }
            *d = acc;
        }
    }
}

impl Op for PlannedResize {
    fn name(&self) -> StaticName {
        "NvrResize".into()
    }
    fn info(&self) -> TractResult<Vec<String>> {
        Ok(vec![format!("{:?} -> {:?}", self.input, self.output)])
    }
    op_as_typed_op!();
}

impl EvalOp for PlannedResize {
    op_out_of_plan!();

    fn eval(&self, _ctx: &EvalContext, inputs: TVec<TValue>) -> TractResult<TVec<TValue>> {
        let x = &inputs[0];
        ensure!(
            x.datum_type() == DatumType::F32 && x.shape() == &*self.input,
            "resize planned for f32 {:?}, given {:?} {:?}",
            self.input,
            x.datum_type(),
            x.shape()
        );
        let x = x.try_as_plain_ram()?;
        let mut data: Option<Vec<f32>> = None;
        let mut shape = self.input.clone();
        for (axis, plan) in self.plans.iter() {
            let src = data.as_deref().unwrap_or(x.as_slice::<f32>()?);
            let (len_in, len_out) = (shape[*axis], self.output[*axis]);
            let mut out = vec![0f32; src.len() / len_in.max(1) * len_out];
            if *axis + 1 == shape.len() && len_in > 0 {
                resample_last_axis(src, len_in, plan, &mut out);
            } else {
                resample_axis(src, &shape, *axis, plan, 0.0, &mut out);
            }
            shape[*axis] = len_out;
            data = Some(out);
        }
        let data = match data {
            Some(d) => d,
            None => x.as_slice::<f32>()?.to_vec(),
        };
        // The last pass's buffer becomes the output as is.
        let out = tract_ndarray::ArrayD::from_shape_vec(&*self.output, data)?.into_tensor();
        Ok(tvec!(out.into_tvalue()))
    }
}

impl TypedOp for PlannedResize {
    fn output_facts(&self, _inputs: &[&TypedFact]) -> TractResult<TVec<TypedFact>> {
        Ok(tvec!(f32::fact(&*self.output)))
    }

    as_op!();
}

#[cfg(test)]
mod tests {
    use super::*;
    use tract_onnx::tract_core::ops::nn::resize::{CoordTransformer, Interpolator, Nearest};

    /// NanoDet's four resizes are all taken (the detector's parity tests then cover
    /// them against onnxruntime).
    #[test]
    fn takes_every_resize_of_nanodet() {
        let (_, count) =
            crate::inference::ops::tests::committed_plan("models/identity/nanodet.onnx");
        assert_eq!((count("NvrResize"), count("Resize")), (4, 0));
    }

    /// Same bits as tract's own op: linear, nearest and cubic, up and down, by several
    /// coordinate transforms.
    #[test]
    fn same_bits_as_tract() {
        let x: Vec<f32> = crate::inference::xclip::seeded_values(5, 2 * 3 * 13 * 10);
        let shape = [2usize, 3, 13, 10];
        let cases = [
            (
                Interpolator::Linear,
                CoordTransformer::HalfPixel,
                [1.0f32, 1.0, 2.0, 2.0],
            ),
            (
                Interpolator::Linear,
                CoordTransformer::AlignCorners,
                [1.0, 1.0, 2.0, 3.0],
            ),
            (
                Interpolator::Linear,
                CoordTransformer::Asymmetric,
                [1.0, 1.0, 0.5, 0.5],
            ),
            (
                Interpolator::Nearest,
                CoordTransformer::Asymmetric,
                [1.0, 1.0, 2.0, 2.0],
            ),
            (
                Interpolator::Linear,
                CoordTransformer::PytorchHalfPixel,
                [1.0, 1.0, 1.5, 0.7],
            ),
            (
                Interpolator::Cubic,
                CoordTransformer::HalfPixel,
                [1.0, 1.0, 2.0, 2.0],
            ),
        ];
        for (interpolator, coord, scales) in cases {
            let op = Resize {
                coord_transformer: coord.clone(),
                interpolator: interpolator.clone(),
                nearest: Nearest::Floor,
                optional_scales_input: Some(1),
                optional_sizes_input: None,
            };
            let mut model = TypedModel::default();
            let src = model.add_source("x", f32::fact(shape)).unwrap();
            let s = model.add_const("scales", tensor1(&scales)).unwrap();
            let y = model.wire_node("resize", op.clone(), &[src, s]).unwrap()[0];
            model.select_output_outlets(&[y]).unwrap();
            let node = &model.nodes[y.node];
            let planned = PlannedResize::for_node(&model, node).expect("takes it");
            let input = Tensor::from_shape(&shape, &x).unwrap().into_tvalue();
            let ctx = EvalContext::out_of_plan();
            let theirs = op
                .eval(&ctx, tvec!(input.clone(), tensor1(&scales).into_tvalue()))
                .unwrap();
            let ours = planned
                .eval(&ctx, tvec!(input, tensor1(&scales).into_tvalue()))
                .unwrap();
            assert_eq!(
                ours[0].shape(),
                theirs[0].shape(),
                "{interpolator:?} {coord:?}"
            );
            let (a, b) = (
                ours[0].try_as_plain_ram().unwrap(),
                theirs[0].try_as_plain_ram().unwrap(),
            );
            let (a, b) = (a.as_slice::<f32>().unwrap(), b.as_slice::<f32>().unwrap());
            assert!(
                a.iter().zip(b).all(|(p, q)| p.to_bits() == q.to_bits()),
                "{interpolator:?} {coord:?} {scales:?}"
            );
        }
    }
}
