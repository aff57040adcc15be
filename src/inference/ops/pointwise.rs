//! 1x1 convolutions in channels-first graphs (`out[o, p] = W[o, :] . x[:, p] + b[o]` for
//! every pixel `p`) as a tract op, on the AVX2+FMA and AVX-512 tiers (kernel: `nvr_linalg::pointwise`). tract multiplies them with the pixels as rows: it
//! moves the activations to channels-last, packs them, multiplies, and moves the result
//! back (MobileFaceNet: 64 moves and 33 packs, ~3.7 of its ~14 ms). Here the weights are
//! the rows, read where they are (`[O, I]`, row-major), and the activations the columns,
//! read in place as 32-pixel panels one channel apart: no move, no pack, the output
//! written channels-first. The same 12 x 32 register tile as [`super::dense`].

use std::sync::Arc;

use tract_onnx::prelude::*;
use tract_onnx::tract_core::ops::binary::TypedBinOp;
use tract_onnx::tract_core::ops::math::Add;
use tract_onnx::tract_hir::internal::*;

use nvr_linalg::dense::available;
use nvr_linalg::pointwise::pointwise;

use super::dense::split_rows;

/// The constant weights and bias of a product op, shared (`Arc`) between the op's copies
/// that tract makes while optimising: compared and hashed by identity, as comparing the
/// values would cost a pass over megabytes for every comparison.
#[derive(Debug, Clone)]
pub struct Params {
    pub weights: Arc<Vec<f32>>,
    pub bias: Arc<Vec<f32>>,
}

impl Params {
    pub fn new(weights: Vec<f32>, bias: Vec<f32>) -> Params {
        Params {
            weights: Arc::new(weights),
            bias: Arc::new(bias),
        }
    }
}

impl PartialEq for Params {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.weights, &other.weights) && Arc::ptr_eq(&self.bias, &other.bias)
    }
}

impl Eq for Params {}

impl std::hash::Hash for Params {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        (Arc::as_ptr(&self.weights) as usize).hash(state);
    }
}

/// `[N,] I, H, W` -> `[N,] O, H, W` with constant weights `[O, I]` and bias `[O]`; a
/// batch axis of one may be present on one side only (tract drops or adds it).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Pointwise {
    pub params: Params,
    pub inputs: usize,
    pub outputs: usize,
    /// Rank of the output, 3 or 4.
    pub out_rank: usize,
}

impl Op for Pointwise {
    fn name(&self) -> StaticName {
        "NvrPointwise".into()
    }
    fn info(&self) -> TractResult<Vec<String>> {
        Ok(vec![format!(
            "{} -> {} channels",
            self.inputs, self.outputs
        )])
    }
    op_as_typed_op!();
}

impl Pointwise {
    /// The output shape for input `shape` (`[N,] I, H, W`): channels replaced, the batch
    /// axis dropped or added (as one) to reach `out_rank`.
    fn out_shape<D: DimLike>(&self, shape: &[D]) -> TVec<D> {
        let r = shape.len();
        let mut out: TVec<D> = shape[r - 3..].iter().cloned().collect();
        out[0] = D::from(self.outputs);
        if self.out_rank == 4 {
            out.insert(0, if r == 4 { shape[0].clone() } else { D::one() });
        }
        out
    }

    /// The einsum `[N,] I, H, W` by constant `[O, I]` -> `[N,] O, H, W` at node `e` (a
    /// batch of one dropped or added on the way allowed), and the per-channel bias add
    /// after it when there is one: `(x, op, last node)`. Only where the CPU has the kernel.
    pub fn chain(model: &TypedModel, e: usize) -> Option<(OutletId, Pointwise, usize)> {
        let forms = [
            "nihw,oi->nohw",
            "ihw,oi->ohw",
            "nihw,oi->ohw",
            "ihw,oi->nohw",
        ];
        if !available() || !forms.iter().any(|f| super::pattern::einsum_is(model, e, f)) {
            return None;
        }
        let node = &model.nodes[e];
        let w = model.outlet_fact(node.inputs[1]).ok()?.konst.clone()?;
        let xf = model.outlet_fact(node.inputs[0]).ok()?;
        let out = &node.outputs[0].fact;
        let (o, i) = (w.shape()[0], w.shape()[1]);
        // "nihw,oi->ohw" sums over n: the same as dropping it only when it is 1.
        let dropped_batch = xf.rank() == 4 && out.rank() == 3;
        if w.datum_type() != DatumType::F32
            || xf.datum_type != DatumType::F32
            || xf.shape[xf.rank() - 3].to_usize().ok() != Some(i)
            || (dropped_batch && xf.shape[0].to_usize().ok() != Some(1))
        {
            return None;
        }
        let weights = w.try_as_plain_ram().ok()?.as_slice::<f32>().ok()?.to_vec();
        let (bias, last) = channel_bias_after(model, e, o, out.rank() - 3, &out.shape)
            .unwrap_or((vec![0.0; o], e));
        Some((
            node.inputs[0],
            Pointwise {
                params: Params::new(weights, bias),
                inputs: i,
                outputs: o,
                out_rank: out.rank(),
            },
            last,
        ))
    }
}

/// A constant with `n` values along axis `ch` (ones elsewhere) added to node `e`'s output
/// by its only consumer, keeping the shape: `(bias, add node)`.
fn channel_bias_after(
    model: &TypedModel,
    e: usize,
    n: usize,
    ch: usize,
    shape: &ShapeFact,
) -> Option<(Vec<f32>, usize)> {
    let o = OutletId::new(e, 0);
    if !super::pattern::used_once(model, o) {
        return None;
    }
    let succ = model.outlet_successors(o)[0];
    let add = &model.nodes[succ.node];
    if add
        .op_as::<TypedBinOp>()
        .is_none_or(|b| b.0.downcast_ref::<Add>().is_none() || b.1.is_some())
    {
        return None;
    }
    let b = model
        .outlet_fact(add.inputs[1 - succ.slot])
        .ok()?
        .konst
        .clone()?;
    let dims = b.shape();
    let lead = dims.len().checked_sub(shape.rank() - ch)?;
    if b.datum_type() != DatumType::F32
        || model.outlet_fact(add.id.into()).ok()?.shape != *shape
        || dims.len() > shape.rank()
        || dims
            .iter()
            .enumerate()
            .any(|(a, &d)| if a == lead { d != n } else { d != 1 })
    {
        return None;
    }
    Some((
        b.try_as_plain_ram().ok()?.as_slice::<f32>().ok()?.to_vec(),
        add.id,
    ))
}

impl EvalOp for Pointwise {
    op_out_of_plan!();

    fn eval(&self, _ctx: &EvalContext, inputs: TVec<TValue>) -> TractResult<TVec<TValue>> {
        let x = args_1!(inputs);
        let shape = x.shape().to_vec();
        let r = shape.len();
        ensure!(
            (r == 3 || r == 4) && shape[r - 3] == self.inputs,
            "pointwise convolution: input {shape:?} does not have {} channels",
            self.inputs
        );
        let pixels = shape[r - 2] * shape[r - 1];
        let out_shape = self.out_shape(&shape);
        ensure!(
            out_shape.iter().product::<usize>() / self.outputs == x.len() / self.inputs,
            "pointwise convolution: input {shape:?} has a batch that cannot be dropped"
        );
        // Zeroed, though every element is written below: an uninitialised tensor would be
        // `unsafe` here, outside the kernel crate (the zeroing is one pass over the
        // output, ~10 MB for PP-OCR's 32 x 240 x 320).
        let mut out = Tensor::zero::<f32>(&out_shape)?;
        let x = x.try_as_plain_ram()?;
        let x = x.as_slice::<f32>()?;
        let mut out_ram = out.try_as_plain_ram_mut()?;
        let data = out_ram.as_slice_mut::<f32>()?;
        if pixels > 0 {
            let (xi, xo) = (self.inputs * pixels, self.outputs * pixels);
            for (xb, ob) in x.chunks_exact(xi).zip(data.chunks_exact_mut(xo)) {
                split_rows(self.outputs, self.inputs, pixels, ob, |first, o| {
                    pointwise(
                        xb,
                        pixels,
                        &self.params.weights,
                        &self.params.bias,
                        first,
                        o,
                    )
                });
            }
        }
        Ok(tvec!(out.into_tvalue()))
    }
}

impl TypedOp for Pointwise {
    fn output_facts(&self, inputs: &[&TypedFact]) -> TractResult<TVec<TypedFact>> {
        let x = inputs[0];
        let r = x.rank();
        ensure!(x.datum_type == DatumType::F32 && (r == 3 || r == 4));
        Ok(tvec!(f32::fact(self.out_shape(&x.shape.to_tvec()))))
    }

    fn cost(&self, inputs: &[&TypedFact]) -> TractResult<TVec<(Cost, TDim)>> {
        let out = self.output_facts(inputs)?;
        Ok(tvec!((
            Cost::FMA(DatumType::F32),
            out[0].shape.volume() * self.inputs
        )))
    }

    as_op!();
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::inference::ops::tests::max_abs_diff;
    use crate::inference::xclip::seeded_values;
    use tract_onnx::tract_core::ops::einsum::EinSum;
    use tract_onnx::tract_core::ops::math;

    /// 1x1 convolutions as tract declutters them (`[N,] I, H, W` by `[O, I]`, then the
    /// per-channel bias), with output-channel and pixel tails: taken where the CPU has the
    /// kernel, tract's values within float rounding, and the same bits on two threads.
    #[test]
    fn pointwise_convolutions_agree_with_tract() {
        let cases: [(&str, &[usize], usize, bool); 6] = [
            ("nihw,oi->nohw", &[2, 10, 7, 7], 13, true),
            ("ihw,oi->ohw", &[24, 5, 9], 40, true),
            ("nihw,oi->nohw", &[1, 64, 28, 28], 37, false),
            ("ihw,oi->ohw", &[3, 2, 3], 2, true),
            ("nihw,oi->ohw", &[1, 8, 6, 6], 16, true),
            ("ihw,oi->nohw", &[8, 6, 6], 16, true),
        ];
        for (expr, xs, o, with_bias) in cases {
            let i = xs[xs.len() - 3];
            let mut model = TypedModel::default();
            let x = model.add_source("x", f32::fact(xs)).unwrap();
            let w = Tensor::from_shape(&[o, i], &seeded_values(31, o * i)).unwrap();
            let w = model.add_const("w", w).unwrap();
            let axes: AxesMapping = expr.parse().unwrap();
            let mut y = model
                .wire_node("conv", EinSum::new(axes, DatumType::F32), &[x, w])
                .unwrap()[0];
            if with_bias {
                let out_rank = expr.split("->").nth(1).unwrap().len();
                let mut bshape = vec![1; out_rank];
                bshape[out_rank - 3] = o;
                let b = Tensor::from_shape(&bshape, &seeded_values(32, o)).unwrap();
                let b = model.add_const("b", b).unwrap();
                y = model.wire_node("bias", math::add(), &[y, b]).unwrap()[0];
            }
            model.select_output_outlets(&[y]).unwrap();
            let input: usize = xs.iter().product();
            let input = Tensor::from_shape(xs, &seeded_values(33, input)).unwrap();
            let ours = crate::inference::onnx::optimise(model.clone()).unwrap();
            let theirs = model.into_optimized().unwrap().into_runnable().unwrap();
            let taken = ours.model().nodes.iter().any(|n| n.op_is::<Pointwise>());
            assert_eq!(taken, available(), "{expr} {xs:?}");
            let a = ours.run(tvec!(input.clone().into_tvalue())).unwrap();
            let b = theirs.run(tvec!(input.clone().into_tvalue())).unwrap();
            let d = max_abs_diff(&a[0], &b[0]);
            assert!(d < 1e-5, "{expr} {xs:?}: differs by {d}");
            let two = crate::inference::onnx::GraphThreads::new(2)
                .run(|| ours.run(tvec!(input.clone().into_tvalue())).unwrap());
            assert_eq!(
                max_abs_diff(&a[0], &two[0]),
                0.0,
                "{expr} {xs:?} on 2 threads"
            );
        }
    }
}
