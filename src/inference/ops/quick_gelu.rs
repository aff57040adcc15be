//! QuickGELU (`x * sigmoid(1.702 x)`, CLIP's activation) in one pass, and the chain of
//! three element-wise ops it replaces.

use tract_onnx::prelude::*;
use tract_onnx::tract_core::ops::element_wise::ElementWiseOp;
use tract_onnx::tract_core::ops::nn::Sigmoid;
use tract_onnx::tract_hir::internal::*;

use nvr_linalg::rows::quick_gelu;

use super::inplace::{like_input, row_axes_mapping, rows_in_place};
use super::pattern::{is_mul, used_once};

/// `x * sigmoid(alpha * x)`.
#[derive(Debug, Clone, PartialEq)]
pub struct QuickGelu {
    pub alpha: f32,
}

impl std::hash::Hash for QuickGelu {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.alpha.to_bits().hash(state);
    }
}

impl Eq for QuickGelu {}

impl Op for QuickGelu {
    fn name(&self) -> StaticName {
        "NvrQuickGelu".into()
    }
    fn info(&self) -> TractResult<Vec<String>> {
        Ok(vec![format!("alpha: {}", self.alpha)])
    }
    op_as_typed_op!();
}

impl EvalOp for QuickGelu {
    op_out_of_plan!();

    fn eval(&self, _ctx: &EvalContext, inputs: TVec<TValue>) -> TractResult<TVec<TValue>> {
        let input = args_1!(inputs);
        let row = input.shape().last().copied().unwrap_or(1).max(1);
        rows_in_place(input, row, |chunk| quick_gelu(chunk, self.alpha))
    }
}

impl TypedOp for QuickGelu {
    fn output_facts(&self, inputs: &[&TypedFact]) -> TractResult<TVec<TypedFact>> {
        like_input(inputs, 0, true)
    }

    fn axes_mapping(
        &self,
        inputs: &[&TypedFact],
        _outputs: &[&TypedFact],
    ) -> TractResult<AxesMapping> {
        row_axes_mapping(inputs[0].rank(), inputs.len())
    }

    fn change_axes(
        &self,
        model: &TypedModel,
        node: &TypedNode,
        _io: InOut,
        change: &AxisOp,
    ) -> TractResult<Option<AxisChangeConsequence>> {
        // Element-wise: any layout will do.
        Ok(Some(AxisChangeConsequence::new(
            model,
            node,
            Some(Box::new(self.clone())),
            change,
        )))
    }

    fn slice(
        &self,
        patch: &mut TypedModelPatch,
        _model: &TypedModel,
        node: &TypedNode,
        _prefix: &str,
        inputs: &[OutletId],
        _output_axis: usize,
        _start: &TDim,
        _end: &TDim,
    ) -> TractResult<Option<TVec<OutletId>>> {
        patch.wire_node(&node.name, self.clone(), inputs).map(Some)
    }

    as_op!();
}

/// The chain `g = x * s`, `s = sigmoid(m)`, `m = x * alpha` ending at node `g`, each
/// intermediate used only by the next: `(x, alpha)`.
pub(crate) fn quick_gelu_chain(model: &TypedModel, g: usize) -> Option<(OutletId, f32)> {
    if !is_mul(model, g) {
        return None;
    }
    let gn = &model.nodes[g];
    let single_use = |o: OutletId| used_once(model, o);
    for (x, s) in [(gn.inputs[0], gn.inputs[1]), (gn.inputs[1], gn.inputs[0])] {
        let sn = &model.nodes[s.node];
        let is_sigmoid = sn
            .op_as::<ElementWiseOp>()
            .is_some_and(|e| e.0.downcast_ref::<Sigmoid>().is_some() && e.1.is_none());
        if !is_sigmoid || !single_use(s) {
            continue;
        }
        let m = sn.inputs[0];
        if !is_mul(model, m.node) || !single_use(m) {
            continue;
        }
        let mn = &model.nodes[m.node];
        let other = match (mn.inputs[0] == x, mn.inputs[1] == x) {
            (true, false) => mn.inputs[1],
            (false, true) => mn.inputs[0],
            _ => continue,
        };
        let alpha = model.outlet_fact(other).ok()?.konst.clone()?;
        let xf = model.outlet_fact(x).ok()?;
        let gf = model.outlet_fact(gn.id.into()).ok()?;
        if alpha.len() != 1
            || alpha.datum_type() != DatumType::F32
            || xf.datum_type != DatumType::F32
            || xf.shape != gf.shape
        {
            continue;
        }
        let alpha = alpha.try_as_plain_ram().ok()?.as_slice::<f32>().ok()?[0];
        return Some((x, alpha));
    }
    None
}
