//! LayerNormalization in two sweeps a row (tract expands it into five), installed by
//! overriding tract's ONNX builder; cases outside the fast path keep tract's expansion.

use std::sync::{Arc, OnceLock};

use tract_onnx::model::{OnnxOpRegister, ParsingContext};
use tract_onnx::pb::NodeProto;
use tract_onnx::prelude::*;
use tract_onnx::tract_hir::internal::*;
use tract_onnx::tract_hir::ops::expandable::Expansion;

use nvr_linalg::rows::layer_norm_rows;

use super::inplace::{like_input, row_axes_mapping, rows_in_place};

type Builder = fn(&ParsingContext, &NodeProto) -> TractResult<(Box<dyn InferenceOp>, Vec<String>)>;

static TRACT_LAYER_NORM: OnceLock<Builder> = OnceLock::new();

/// Put [`LayerNorm`]'s builder in front of tract's in `reg`.
pub(crate) fn install(reg: &mut OnnxOpRegister) {
    if let Some(original) = reg.0.get("LayerNormalization").copied() {
        TRACT_LAYER_NORM.get_or_init(|| original);
        reg.insert("LayerNormalization", layer_norm_builder);
    }
}

fn layer_norm_builder(
    ctx: &ParsingContext,
    node: &NodeProto,
) -> TractResult<(Box<dyn InferenceOp>, Vec<String>)> {
    let original = TRACT_LAYER_NORM
        .get()
        .context("tract's LayerNormalization builder was not recorded")?;
    let (fallback, extra) = original(ctx, node)?;
    // Only the plain form: one output, default stash type.
    let outputs = node.output.iter().filter(|o| !o.is_empty()).count();
    let stash_f32 = node
        .get_attr_opt::<DatumType>("stash_type")?
        .is_none_or(|dt| dt == DatumType::F32);
    if outputs != 1
        || !stash_f32
        || fallback
            .as_op()
            .downcast_ref::<Box<dyn Expansion>>()
            .is_none()
    {
        return Ok((fallback, extra));
    }
    let axis = node.get_attr_opt::<i64>("axis")?.unwrap_or(-1);
    let eps = node.get_attr_opt::<f32>("epsilon")?.unwrap_or(1e-5);
    Ok((
        tract_onnx::tract_hir::ops::expandable::expand(LayerNormExpansion {
            axis,
            eps,
            fallback: std::sync::Arc::new(fallback),
        }),
        extra,
    ))
}

#[derive(Debug, Clone)]
struct LayerNormExpansion {
    axis: i64,
    eps: f32,
    fallback: std::sync::Arc<Box<dyn InferenceOp>>,
}

impl LayerNormExpansion {
    fn original(&self) -> &dyn Expansion {
        // Checked in the builder.
        &**self
            .fallback
            .as_op()
            .downcast_ref::<Box<dyn Expansion>>()
            .expect("checked at parse time")
    }
}

impl Expansion for LayerNormExpansion {
    fn name(&self) -> StaticName {
        "LayerNorm".into()
    }

    fn rules<'r, 'p: 'r, 's: 'r>(
        &'s self,
        s: &mut Solver<'r>,
        inputs: &'p [TensorProxy],
        outputs: &'p [TensorProxy],
    ) -> InferenceResult {
        self.original().rules(s, inputs, outputs)
    }

    fn wire(
        &self,
        prefix: &str,
        model: &mut TypedModel,
        inputs: &[OutletId],
    ) -> TractResult<TVec<OutletId>> {
        let x = model.outlet_fact(inputs[0])?.clone();
        let rank = x.rank() as i64;
        let axis = if self.axis < 0 {
            self.axis + rank
        } else {
            self.axis
        };
        if axis < 0 || axis >= rank || x.datum_type != DatumType::F32 {
            return self.original().wire(prefix, model, inputs);
        }
        let axis = axis as usize;
        let row: Option<usize> = x.shape[axis..].iter().map(|d| d.to_usize().ok()).product();
        let Some(row) = row else {
            return self.original().wire(prefix, model, inputs);
        };
        // Scale and bias must be constants of `row` values (the normalised shape).
        let constant = |ix: usize| -> Option<Arc<Tensor>> {
            let fact = model.outlet_fact(*inputs.get(ix)?).ok()?;
            let t = fact.konst.clone()?;
            (t.datum_type() == DatumType::F32 && t.len() == row).then_some(t)
        };
        let Some(scale) = constant(1) else {
            return self.original().wire(prefix, model, inputs);
        };
        let bias = match inputs.len() {
            2 => Arc::new(Tensor::zero::<f32>(&[row])?),
            _ => match constant(2) {
                Some(b) => b,
                None => return self.original().wire(prefix, model, inputs),
            },
        };
        let op = LayerNorm {
            axis,
            eps: self.eps,
            scale: floats(&scale)?,
            bias: floats(&bias)?,
        };
        model.wire_node(prefix, op, &inputs[..1])
    }
}

fn floats(t: &Tensor) -> TractResult<Arc<[f32]>> {
    Ok(t.try_as_plain_ram()?.as_slice::<f32>()?.into())
}
/// `y = (x - mean) / sqrt(var + eps) * scale + bias` over the trailing axes from `axis`.
#[derive(Debug, Clone, PartialEq)]
pub struct LayerNorm {
    pub axis: usize,
    pub eps: f32,
    pub scale: Arc<[f32]>,
    pub bias: Arc<[f32]>,
}

impl std::hash::Hash for LayerNorm {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.axis.hash(state);
        self.eps.to_bits().hash(state);
        for v in self.scale.iter().chain(self.bias.iter()) {
            v.to_bits().hash(state);
        }
    }
}

impl Eq for LayerNorm {}

impl Op for LayerNorm {
    fn name(&self) -> StaticName {
        "NvrLayerNorm".into()
    }
    fn info(&self) -> TractResult<Vec<String>> {
        Ok(vec![format!("axis: {}, eps: {}", self.axis, self.eps)])
    }
    op_as_typed_op!();
}

impl EvalOp for LayerNorm {
    op_out_of_plan!();

    fn eval(&self, _ctx: &EvalContext, inputs: TVec<TValue>) -> TractResult<TVec<TValue>> {
        let input = args_1!(inputs);
        let (scale, bias) = (&*self.scale, &*self.bias);
        let row = scale.len();
        ensure!(
            input.shape()[self.axis..].iter().product::<usize>() == row,
            "LayerNorm: input {:?} does not end in rows of {row}",
            input.shape()
        );
        rows_in_place(input, row, |chunk| {
            layer_norm_rows(chunk, scale, bias, self.eps)
        })
    }
}

/// Axes before `axis` are independent rows: they map straight through, so tract may move,
/// merge or slice them around the op; the normalised axes stay put.
impl TypedOp for LayerNorm {
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
        // Only changes among the row axes, before the normalised ones.
        let axis = match change {
            AxisOp::Add(a) if *a <= self.axis => self.axis + 1,
            AxisOp::Rm(a) if *a < self.axis => self.axis - 1,
            AxisOp::Move(a, b) if *a < self.axis && *b < self.axis => self.axis,
            AxisOp::Reshape(at, from, to) if *at + from.len() <= self.axis => {
                self.axis + to.len() - from.len()
            }
            _ => return Ok(None),
        };
        let op = Some(Box::new(LayerNorm {
            axis,
            ..self.clone()
        }) as _);
        Ok(Some(AxisChangeConsequence::new(model, node, op, change)))
    }

    fn slice(
        &self,
        patch: &mut TypedModelPatch,
        _model: &TypedModel,
        node: &TypedNode,
        _prefix: &str,
        inputs: &[OutletId],
        output_axis: usize,
        _start: &TDim,
        _end: &TDim,
    ) -> TractResult<Option<TVec<OutletId>>> {
        if output_axis >= self.axis {
            return Ok(None);
        }
        patch.wire_node(&node.name, self.clone(), inputs).map(Some)
    }

    fn cost(&self, inputs: &[&TypedFact]) -> TractResult<TVec<(Cost, TDim)>> {
        let count: TDim = inputs[0].shape.iter().product();
        Ok(tvec!((Cost::FMA(DatumType::F32), count * 4)))
    }

    as_op!();
}
