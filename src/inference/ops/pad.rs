//! Constant padding of the two innermost axes (what tract puts before its im2col
//! convolutions), as a row copy.
//!
//! PP-OCR's detector pads five feature maps by one pixel (up to 96 x 120 x 160) before
//! 3x3 convolutions; tract's generic `Pad` spent 15 of the detector's 127 ms on them on
//! the dev machine, ~3 ns an element, for what is a copy. [`RowPad`] writes each output
//! row as left fill, input row, right fill. Swapped in by `ops::speed_up`.

use tract_onnx::prelude::*;
use tract_onnx::tract_core::ops::array::{Pad, PadMode};
use tract_onnx::tract_hir::internal::*;

/// `Pad` with a constant `value`, `rows` / `cols` = (before, after) on the last two axes
/// and nothing on the others.
#[derive(Debug, Clone, PartialEq)]
pub struct RowPad {
    pub rows: (usize, usize),
    pub cols: (usize, usize),
    pub value: f32,
}

impl Eq for RowPad {}

impl RowPad {
    /// For a node of an optimised model, when it is an f32 constant `Pad` of this kind.
    pub fn for_node(model: &TypedModel, node: &TypedNode) -> Option<RowPad> {
        let pad = node.op_as::<Pad>()?;
        let PadMode::Constant(value) = &pad.mode else {
            return None;
        };
        let fact = model.outlet_fact(node.inputs[0]).ok()?;
        let rank = pad.pads.len();
        if fact.datum_type != DatumType::F32
            || rank < 2
            || fact.rank() != rank
            || pad.pads[..rank - 2].iter().any(|p| *p != (0, 0))
        {
            return None;
        }
        let value = value.cast_to_scalar::<f32>().ok()?;
        Some(RowPad {
            rows: pad.pads[rank - 2],
            cols: pad.pads[rank - 1],
            value,
        })
    }
}

/// Pad `input` (`planes` of `h` rows of `w`) into `out` (`planes` of `h + rows.0 + rows.1`
/// rows of `w + cols.0 + cols.1`).
pub fn pad_planes(
    input: &[f32],
    [h, w]: [usize; 2],
    rows: (usize, usize),
    cols: (usize, usize),
    value: f32,
    out: &mut [f32],
) {
    let ow = w + cols.0 + cols.1;
    let plane_out = (h + rows.0 + rows.1) * ow;
    if h * w == 0 || plane_out == 0 {
        // Nothing to copy (and no rows to chunk by): all fill.
        out.fill(value);
        return;
    }
    for (src, dst) in input
        .chunks_exact(h * w)
        .zip(out.chunks_exact_mut(plane_out))
    {
        let (top, rest) = dst.split_at_mut(rows.0 * ow);
        top.fill(value);
        let (middle, bottom) = rest.split_at_mut(h * ow);
        bottom.fill(value);
        for (s, d) in src.chunks_exact(w).zip(middle.chunks_exact_mut(ow)) {
            d[..cols.0].fill(value);
            d[cols.0..cols.0 + w].copy_from_slice(s);
            d[cols.0 + w..].fill(value);
        }
    }
}

impl Op for RowPad {
    fn name(&self) -> StaticName {
        "NvrRowPad".into()
    }
    fn info(&self) -> TractResult<Vec<String>> {
        Ok(vec![format!(
            "rows {:?}, columns {:?}, value {}",
            self.rows, self.cols, self.value
        )])
    }
    op_as_typed_op!();
}

impl RowPad {
    fn out_shape<D: DimLike>(&self, input: &[D]) -> TVec<D> {
        let mut shape: TVec<D> = input.into();
        let r = shape.len();
        shape[r - 2] = shape[r - 2].clone() + D::from(self.rows.0 + self.rows.1);
        shape[r - 1] = shape[r - 1].clone() + D::from(self.cols.0 + self.cols.1);
        shape
    }
}

impl EvalOp for RowPad {
    op_out_of_plan!();

    fn eval(&self, _ctx: &EvalContext, inputs: TVec<TValue>) -> TractResult<TVec<TValue>> {
        let x = args_1!(inputs);
        let shape = x.shape();
        ensure!(
            x.datum_type() == DatumType::F32 && shape.len() >= 2,
            "row pad: input {:?} {shape:?}",
            x.datum_type()
        );
        let (h, w) = (shape[shape.len() - 2], shape[shape.len() - 1]);
        let mut out = Tensor::zero::<f32>(&self.out_shape(shape))?;
        let x = x.try_as_plain_ram()?;
        let mut o = out.try_as_plain_ram_mut()?;
        pad_planes(
            x.as_slice::<f32>()?,
            [h, w],
            self.rows,
            self.cols,
            self.value,
            o.as_slice_mut::<f32>()?,
        );
        Ok(tvec!(out.into_tvalue()))
    }
}

impl TypedOp for RowPad {
    fn output_facts(&self, inputs: &[&TypedFact]) -> TractResult<TVec<TypedFact>> {
        ensure!(inputs[0].datum_type == DatumType::F32 && inputs[0].rank() >= 2);
        Ok(tvec!(f32::fact(self.out_shape(&inputs[0].shape))))
    }

    as_op!();
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every pad tract leaves in NanoDet's plan is taken (the detector's parity tests then
    /// cover them against onnxruntime).
    #[test]
    fn takes_the_pads_of_nanodet() {
        let (_, count) =
            crate::inference::ops::tests::committed_plan("models/identity/nanodet.onnx");
        assert!(count("NvrRowPad") > 0);
        assert_eq!(count("Pad"), 0);
    }

    /// The same tensor as tract's `Pad`, for uneven pads, a non-zero value and empty
    /// planes.
    #[test]
    fn same_as_tracts_pad() {
        let cases: [(&[usize], _, _, f32); 4] = [
            (&[2, 3, 5, 7], (1, 1), (1, 1), 0.0),
            (&[1, 2, 4, 3], (0, 2), (3, 0), -1.5),
            (&[3, 1, 6], (2, 0), (0, 0), 7.0),
            (&[2, 0, 4], (1, 1), (1, 1), 0.0),
        ];
        for (shape, rows, cols, value) in cases {
            let n: usize = shape.iter().product();
            let x =
                Tensor::from_shape(shape, &crate::inference::xclip::seeded_values(3, n)).unwrap();
            let mut pads = vec![(0, 0); shape.len()];
            pads[shape.len() - 2] = rows;
            pads[shape.len() - 1] = cols;
            let theirs = Pad {
                pads,
                mode: PadMode::Constant(std::sync::Arc::new(value.into())),
            };
            let ours = RowPad { rows, cols, value };
            let ctx = EvalContext::out_of_plan();
            let a = ours.eval(&ctx, tvec!(x.clone().into_tvalue())).unwrap();
            let b = theirs.eval(&ctx, tvec!(x.into_tvalue())).unwrap();
            assert_eq!(a[0], b[0], "{shape:?} rows {rows:?} cols {cols:?}");
        }
    }
}
