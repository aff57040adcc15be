//! Per-channel Add/Mul (a constant varying along one axis, as batch-norm biases and
//! scales in NCHW graphs are), a channel block at a time.

use tract_onnx::prelude::*;
use tract_onnx::tract_core::ops::binary::TypedBinOp;
use tract_onnx::tract_core::ops::math::{Add, Mul};
use tract_onnx::tract_hir::internal::*;

use nvr_linalg::rows::channel_op;

use super::inplace::{like_input, per_channel_in_place};

/// `x + v[c]` or `x * v[c]`, `c` the index along `axis` (`v` from the node's second input,
/// a constant of ones but along `axis`).
#[derive(Debug, Clone, Hash, PartialEq, Eq)]
pub struct ChannelOp {
    pub mul: bool,
    pub axis: usize,
    /// Which input is the constant (the other is `x`).
    pub konst: usize,
}

impl Op for ChannelOp {
    fn name(&self) -> StaticName {
        if self.mul {
            "NvrChannelMul".into()
        } else {
            "NvrChannelAdd".into()
        }
    }
    fn info(&self) -> TractResult<Vec<String>> {
        Ok(vec![format!("axis: {}", self.axis)])
    }
    op_as_typed_op!();
}

impl EvalOp for ChannelOp {
    op_out_of_plan!();

    fn eval(&self, _ctx: &EvalContext, mut inputs: TVec<TValue>) -> TractResult<TVec<TValue>> {
        let v = inputs.remove(self.konst);
        let x = inputs.remove(0);
        let v = v.try_as_plain_ram()?;
        per_channel_in_place(
            x,
            v.as_slice::<f32>()?,
            self.axis,
            "channel op",
            |d, v, i| channel_op(d, v, i, self.mul),
        )
    }
}

impl TypedOp for ChannelOp {
    fn output_facts(&self, inputs: &[&TypedFact]) -> TractResult<TVec<TypedFact>> {
        like_input(inputs, 1 - self.konst, false)
    }

    as_op!();
}

/// The per-channel form of a binary op node, if it is one: f32 `Add` or `Mul` of a full
/// tensor and a constant that varies along one axis only, the output shaped like the
/// tensor.
pub(crate) fn channel_op_for(model: &TypedModel, node: &TypedNode) -> Option<ChannelOp> {
    let bin = node.op_as::<TypedBinOp>()?;
    let mul = if bin.0.downcast_ref::<Mul>().is_some() {
        true
    } else if bin.0.downcast_ref::<Add>().is_some() {
        false
    } else {
        return None;
    };
    if node.inputs.len() != 2 || bin.1.is_some() {
        return None;
    }
    let out = &node.outputs[0].fact;
    for konst in [1, 0] {
        let (x, c) = (
            model.outlet_fact(node.inputs[1 - konst]).ok()?,
            model.outlet_fact(node.inputs[konst]).ok()?,
        );
        let Some(v) = &c.konst else { continue };
        let varying: Vec<usize> = (0..v.rank()).filter(|&a| v.shape()[a] > 1).collect();
        if x.datum_type != DatumType::F32
            || v.datum_type() != DatumType::F32
            || x.shape != out.shape
            || v.rank() != x.rank()
            || varying.len() != 1
            || x.shape[varying[0]].to_usize().ok() != Some(v.shape()[varying[0]])
        {
            continue;
        }
        return Some(ChannelOp {
            mul,
            axis: varying[0],
            konst,
        });
    }
    None
}
