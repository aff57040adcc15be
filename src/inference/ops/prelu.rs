//! PReLU as tflite2onnx writes it (`max(x, 0) + c * (x - |x|)`, four passes in tract) in
//! one pass, and the chain it replaces.

use tract_onnx::prelude::*;
use tract_onnx::tract_core::ops::binary::TypedBinOp;
use tract_onnx::tract_core::ops::element_wise::ElementWiseOp;
use tract_onnx::tract_core::ops::math::{Abs, Add, Max, Mul, Sub};
use tract_onnx::tract_hir::internal::*;

use nvr_linalg::rows::channel_prelu;

use super::inplace::{like_input, per_channel_in_place};
use super::pattern::used_once;

/// PReLU with one slope per channel as TFLite graphs converted to ONNX spell it:
/// `max(x, 0) + c * (x - |x|)` (`c` is half the slope), four passes over the activations
/// in tract (`Abs`, `Sub`, a per-channel `Mul`, `Max` + `Add`; ~19% of MobileFaceNet's
/// graph). One pass here: `x` where `x >= 0`, else `c * (x + x)` (`x - |x|` is exactly
/// `x + x` there), the same values as the chain.
#[derive(Debug, Clone, Hash, PartialEq, Eq)]
pub struct ChannelPrelu {
    pub axis: usize,
}

impl Op for ChannelPrelu {
    fn name(&self) -> StaticName {
        "NvrChannelPrelu".into()
    }
    fn info(&self) -> TractResult<Vec<String>> {
        Ok(vec![format!("axis: {}", self.axis)])
    }
    op_as_typed_op!();
}

impl EvalOp for ChannelPrelu {
    op_out_of_plan!();

    fn eval(&self, _ctx: &EvalContext, inputs: TVec<TValue>) -> TractResult<TVec<TValue>> {
        let (x, c) = args_2!(inputs);
        let c = c.try_as_plain_ram()?;
        per_channel_in_place(x, c.as_slice::<f32>()?, self.axis, "prelu", channel_prelu)
    }
}

impl TypedOp for ChannelPrelu {
    fn output_facts(&self, inputs: &[&TypedFact]) -> TractResult<TVec<TypedFact>> {
        like_input(inputs, 0, false)
    }

    as_op!();
}

/// The chain `y = max(x, 0) + c * (x - |x|)` ending at the `Add` node `y`, each
/// intermediate used only by the next (and `x`'s `Abs` only by the `Sub`), `c` a constant
/// varying along one axis of `x` with one value per channel: `(x, c, op)`.
pub(crate) fn prelu_chain(
    model: &TypedModel,
    y: usize,
) -> Option<(OutletId, OutletId, ChannelPrelu)> {
    let bin_is = |n: usize, f: &dyn Fn(&TypedBinOp) -> bool| {
        model.nodes[n]
            .op_as::<TypedBinOp>()
            .is_some_and(|b| b.1.is_none() && f(b))
    };
    let single_use = |o: OutletId| used_once(model, o);
    if !bin_is(y, &|b| b.0.downcast_ref::<Add>().is_some()) {
        return None;
    }
    let yn = &model.nodes[y];
    for (low, m) in [(yn.inputs[0], yn.inputs[1]), (yn.inputs[1], yn.inputs[0])] {
        if !single_use(low) || !single_use(m) {
            continue;
        }
        // low = max(x, 0)
        if !bin_is(low.node, &|b| b.0.downcast_ref::<Max>().is_some()) {
            continue;
        }
        let ln = &model.nodes[low.node];
        let is_zero = |o: OutletId| {
            model
                .outlet_fact(o)
                .ok()
                .and_then(|f| f.konst.clone())
                .is_some_and(|k| {
                    k.datum_type() == DatumType::F32
                        && k.len() == 1
                        && k.try_as_plain_ram()
                            .ok()
                            .and_then(|r| r.as_slice::<f32>().ok().map(|s| s[0] == 0.0))
                            == Some(true)
                })
        };
        let x = match (is_zero(ln.inputs[0]), is_zero(ln.inputs[1])) {
            (false, true) => ln.inputs[0],
            (true, false) => ln.inputs[1],
            _ => continue,
        };
        // m = c * d (either order), d = x - |x|
        if !bin_is(m.node, &|b| b.0.downcast_ref::<Mul>().is_some()) {
            continue;
        }
        let mn = &model.nodes[m.node];
        for (d, c) in [(mn.inputs[0], mn.inputs[1]), (mn.inputs[1], mn.inputs[0])] {
            if !single_use(d) || !bin_is(d.node, &|b| b.0.downcast_ref::<Sub>().is_some()) {
                continue;
            }
            let dn = &model.nodes[d.node];
            let a = dn.inputs[1];
            let is_abs = model.nodes[a.node]
                .op_as::<ElementWiseOp>()
                .is_some_and(|e| e.0.downcast_ref::<Abs>().is_some() && e.1.is_none());
            if dn.inputs[0] != x || !is_abs || !single_use(a) || model.nodes[a.node].inputs[0] != x
            {
                continue;
            }
            let (xf, cf) = (model.outlet_fact(x).ok()?, model.outlet_fact(c).ok()?);
            let Some(cv) = &cf.konst else { continue };
            let varying: Vec<usize> = (0..cv.rank()).filter(|&i| cv.shape()[i] > 1).collect();
            if xf.datum_type != DatumType::F32
                || cv.datum_type() != DatumType::F32
                || cv.rank() != xf.rank()
                || varying.len() != 1
                || xf.shape[varying[0]].to_usize().ok() != Some(cv.shape()[varying[0]])
                || model.outlet_fact(OutletId::new(y, 0)).ok()?.shape != xf.shape
            {
                continue;
            }
            return Some((x, c, ChannelPrelu { axis: varying[0] }));
        }
    }
    None
}
