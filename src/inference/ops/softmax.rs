//! Softmax over a last axis whose length is not a multiple of 4, one row at a time with a
//! vectorisable exp (tract calls its kernels once per row there).

use tract_onnx::prelude::*;
use tract_onnx::tract_hir::internal::*;

use tract_onnx::tract_core::ops::nn::{Softmax, SoftmaxKind};

use nvr_linalg::rows::softmax_rows;

use super::inplace::{like_input, row_axes_mapping, rows_in_place};

/// Softmax over the last axis, one row at a time, with a vectorisable exp.
#[derive(Debug, Clone, Hash, PartialEq, Eq)]
pub struct RowSoftmax;

impl Op for RowSoftmax {
    fn name(&self) -> StaticName {
        "NvrRowSoftmax".into()
    }
    op_as_typed_op!();
}

impl EvalOp for RowSoftmax {
    op_out_of_plan!();

    fn eval(&self, _ctx: &EvalContext, inputs: TVec<TValue>) -> TractResult<TVec<TValue>> {
        let input = args_1!(inputs);
        let row = *input.shape().last().context("softmax of a scalar")?;
        rows_in_place(input, row, |chunk| softmax_rows(chunk, row))
    }
}

impl TypedOp for RowSoftmax {
    fn output_facts(&self, inputs: &[&TypedFact]) -> TractResult<TVec<TypedFact>> {
        like_input(inputs, 0, false)
    }

    fn axes_mapping(
        &self,
        inputs: &[&TypedFact],
        _outputs: &[&TypedFact],
    ) -> TractResult<AxesMapping> {
        row_axes_mapping(inputs[0].rank(), inputs.len())
    }

    as_op!();
}

impl RowSoftmax {
    /// A softmax over a last axis of f32 whose length is not a multiple of 4, at `node`.
    pub(crate) fn for_node(
        model: &TypedModel,
        node: &TypedNode,
    ) -> TractResult<Option<RowSoftmax>> {
        let Some(sm) = node.op_as::<Softmax>() else {
            return Ok(None);
        };
        let fact = model.outlet_fact(node.inputs[0])?;
        let rank = fact.rank();
        let fits = sm.kind == SoftmaxKind::Softmax
            && sm.quant_output_dt.is_none()
            && fact.datum_type == DatumType::F32
            && rank > 0
            && sm.axes.as_slice() == [rank - 1]
            && fact.shape[rank - 1].to_usize().is_ok_and(|n| n % 4 != 0);
        Ok(fits.then_some(RowSoftmax))
    }
}
