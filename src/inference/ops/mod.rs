//! tract extensions for the transformer graphs (X-CLIP), where profiling showed tract
//! spending several passes over memory on what is one pass of arithmetic:
//!
//! - **LayerNormalization**: tract expands it into reduce, scale, subtract, RMS norm and a
//!   multiply-add chain (five sweeps over the activations, ~0.45 ms per layer at 8 x 51 x 768
//!   on the dev machine). [`LayerNorm`] does it per row in two sweeps, rows spread over the
//!   tract executor's threads. Installed by overriding the ONNX op builder ([`onnx`]); any
//!   case outside its fast path (non-f32, symbolic row, extra outputs) is wired by tract's own
//!   expansion, so the override never refuses a graph tract would load.
//! - **Softmax** over a last axis whose length is not a multiple of 4 (X-CLIP's 51 tokens:
//!   49 patches, the class token and the message token): tract calls its vector kernels once
//!   per row there, and the per-call cost dominates 51-element rows. [`RowSoftmax`] replaces
//!   such nodes in the optimised plan ([`speed_up`]).
//!
//! - **QuickGELU** (`x * sigmoid(1.702 x)`, CLIP's activation): three element-wise ops and
//!   three sweeps over the 400 x 3072 MLP activations in tract; [`QuickGelu`] is one,
//!   fused in the decluttered graph ([`fuse`]).
//!
//! - **Attention** (`softmax(scale * Q K^T) V` per head, as Hugging Face's eager attention
//!   exports it): tract runs it as two batched matmuls with the operands packed, moved and
//!   packed again around a softmax (~2.4 ms per X-CLIP layer, most of it data movement).
//!   [`Attention`] reads Q, K and V where the projections left them (`[batch, token, head,
//!   dim]`) and writes the output in the layout the output projection reads, one head
//!   at a time, heads of different batch items on different threads (on AVX-512 CPUs
//!   through `attention512`).
//!
//! - **Per-channel Add/Mul** (`x + b[c]`, `x * a[c]` with the constant varying along one
//!   axis, as batch-norm biases and PReLU slopes in NCHW graphs are): tract leaves these on
//!   its generic broadcasting path (~0.7 ns an element; 40 of MobileFaceNet's 62 ms).
//!   [`ChannelOp`] runs them a channel block at a time; swapped in the optimised plan.
//!   Whole PReLUs as tflite2onnx writes them (`max(x, 0) + c * (x - |x|)`, four passes)
//!   are one: [`ChannelPrelu`], fused in the decluttered graph.
//!
//! - **Hard-swish** between scalar affine steps (PP-OCR's PP-LCNet blocks):
//!   [`hardswish::HardSwish`], one pass where tract makes two or three.
//!
//! - **Dense layers** (an einsum of rows by a constant matrix, and the bias add after it)
//!   and **patch embeddings** (a convolution whose stride is its kernel) on AVX-512 CPUs:
//!   [`dense::Dense`], [`dense::PatchEmbed`], fused in the decluttered graph
//!   ([`fuse`]).
//!
//! - **Resize** with its plans made once ([`resize`]) and **constant padding** of the two
//!   innermost axes ([`pad`]), swapped in the optimised plan: NanoDet's and PP-OCR's.
//!
//! All compute in f32 with the same formula as PyTorch; the parity tests against the
//! PyTorch fixtures (1e-4) cover them, and the unit tests below compare them with tract's own
//! ops on random inputs.

pub mod dense;
pub mod hardswish;
pub mod pad;
pub mod pointwise;
pub mod resize;

use std::sync::OnceLock;

use tract_onnx::model::{OnnxOpRegister, ParsingContext};
use tract_onnx::pb::NodeProto;
use tract_onnx::prelude::*;
use tract_onnx::tract_core::ops::array::Slice;
use tract_onnx::tract_core::ops::binary::TypedBinOp;
use tract_onnx::tract_core::ops::einsum::EinSum;
use tract_onnx::tract_core::ops::element_wise::ElementWiseOp;
use tract_onnx::tract_core::ops::math::{Abs, Add, Max, Mul, Sub};
use tract_onnx::tract_core::ops::nn::{Sigmoid, Softmax, SoftmaxKind};
use tract_onnx::tract_hir::internal::*;
use tract_onnx::tract_hir::ops::expandable::Expansion;

use nvr_linalg::attention::{attention_item, AttentionItem, AttentionScratch};
use nvr_linalg::rows::{channel_op, channel_prelu, layer_norm_rows, quick_gelu, softmax_rows};

type Builder = fn(&ParsingContext, &NodeProto) -> TractResult<(Box<dyn InferenceOp>, Vec<String>)>;

static TRACT_LAYER_NORM: OnceLock<Builder> = OnceLock::new();

/// tract's ONNX parser with nvr-edge's fused ops in place of tract's expansions.
pub fn onnx() -> tract_onnx::Onnx {
    let mut onnx = tract_onnx::onnx();
    install(&mut onnx.op_register);
    onnx
}

fn install(reg: &mut OnnxOpRegister) {
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

fn rows_in_place(
    input: TValue,
    row: usize,
    f: impl Fn(&mut [f32]) + Sync + Send,
) -> TractResult<TVec<TValue>> {
    let mut t = input.into_tensor();
    if row > 0 {
        let mut data = t.try_as_plain_ram_mut()?;
        let data = data.as_slice_mut::<f32>()?;
        let total = data.len();
        tract_linalg::multithread::par_chunks_mut(data, row, total, |_, chunk| {
            f(chunk);
            Ok(())
        })?;
    }
    Ok(tvec!(t.into_tvalue()))
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
fn row_axes_mapping(rank: usize, inputs: usize) -> TractResult<AxesMapping> {
    let mut letters = 'a'..;
    let axes = (0..rank)
        .map(|ix| {
            Axis::new(letters.next().unwrap(), inputs, 1)
                .input(0, ix)
                .output(0, ix)
        })
        .collect::<Vec<_>>();
    AxesMapping::new(inputs, 1, axes)
}

impl TypedOp for LayerNorm {
    fn output_facts(&self, inputs: &[&TypedFact]) -> TractResult<TVec<TypedFact>> {
        ensure!(inputs[0].datum_type == DatumType::F32);
        Ok(tvec!(inputs[0].without_value()))
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
        Ok(tvec!(inputs[0].without_value()))
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
        ensure!(inputs[0].datum_type == DatumType::F32);
        Ok(tvec!(inputs[0].without_value()))
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

/// `O[a, i, b, :] = softmax_j(scale * Q[a, i, b, :] . K[a, j, b, :]) V[a, j, b, :]` for the
/// query rows `rows` (all when `None`): inputs Q `[A, M, B, K]`, K `[A, N, B, K]`,
/// V `[A, N, B, D]`; output `[A, rows, B, D]`.
#[derive(Debug, Clone, PartialEq)]
pub struct Attention {
    pub scale: f32,
    pub rows: Option<(usize, usize)>,
}

impl std::hash::Hash for Attention {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.scale.to_bits().hash(state);
        self.rows.hash(state);
    }
}

impl Eq for Attention {}

impl Op for Attention {
    fn name(&self) -> StaticName {
        "NvrAttention".into()
    }
    fn info(&self) -> TractResult<Vec<String>> {
        Ok(vec![format!(
            "scale: {}, query rows: {:?}",
            self.scale, self.rows
        )])
    }
    op_as_typed_op!();
}

impl EvalOp for Attention {
    op_out_of_plan!();

    fn eval(&self, _ctx: &EvalContext, inputs: TVec<TValue>) -> TractResult<TVec<TValue>> {
        let (q, k, v) = args_3!(inputs);
        let (qs, ks, vs) = (q.shape(), k.shape(), v.shape());
        ensure!(
            qs.len() == 4
                && ks.len() == 4
                && vs.len() == 4
                && qs[0] == ks[0]
                && ks[0] == vs[0]
                && qs[2] == ks[2]
                && ks[2] == vs[2]
                && qs[3] == ks[3]
                && ks[1] == vs[1],
            "attention: Q {qs:?}, K {ks:?}, V {vs:?} are not [A,M,B,K], [A,N,B,K], [A,N,B,D]"
        );
        let (a, m, h, kd, vd) = (qs[0], qs[1], qs[2], qs[3], vs[3]);
        let rows = self.rows.map_or(0..m, |(s, e)| s..e);
        ensure!(rows.end <= m, "attention: query rows {rows:?} of {m}");
        let mut out = Tensor::zero::<f32>(&[a, rows.len(), h, vd])?;
        let (q, k, v) = (
            q.try_as_plain_ram()?,
            k.try_as_plain_ram()?,
            v.try_as_plain_ram()?,
        );
        let (q, k, v) = (
            q.as_slice::<f32>()?,
            k.as_slice::<f32>()?,
            v.as_slice::<f32>()?,
        );
        let item_out = rows.len() * h * vd;
        if item_out > 0 {
            let mut out_ram = out.try_as_plain_ram_mut()?;
            let data = out_ram.as_slice_mut::<f32>()?;
            let total = data.len() * kd;
            tract_linalg::multithread::par_chunks_mut(data, item_out, total, |first, chunk| {
                let mut scratch = AttentionScratch::default();
                for (ix, o) in chunk.chunks_exact_mut(item_out).enumerate() {
                    let i = first + ix;
                    let item = AttentionItem {
                        q: &q[i * m * h * kd..][..m * h * kd],
                        k: &k[i * ks[1] * h * kd..][..ks[1] * h * kd],
                        v: &v[i * vs[1] * h * vd..][..vs[1] * h * vd],
                        heads: h,
                        key_dim: kd,
                        value_dim: vd,
                    };
                    attention_item(&item, rows.clone(), self.scale, o, &mut scratch);
                }
                Ok(())
            })?;
        }
        Ok(tvec!(out.into_tvalue()))
    }
}

impl TypedOp for Attention {
    fn output_facts(&self, inputs: &[&TypedFact]) -> TractResult<TVec<TypedFact>> {
        ensure!(inputs
            .iter()
            .all(|f| f.datum_type == DatumType::F32 && f.rank() == 4));
        let (q, v) = (&inputs[0].shape, &inputs[2].shape);
        let m = self
            .rows
            .map_or(q[1].clone(), |(s, e)| ((e - s) as i64).to_dim());
        Ok(tvec!(f32::fact([
            q[0].clone(),
            m,
            q[2].clone(),
            v[3].clone()
        ])))
    }

    fn cost(&self, inputs: &[&TypedFact]) -> TractResult<TVec<(Cost, TDim)>> {
        let (q, k, v) = (&inputs[0].shape, &inputs[1].shape, &inputs[2].shape);
        let macs = q[0].clone() * &q[1] * &q[2] * &k[1] * (q[3].clone() + &v[3]);
        Ok(tvec!((Cost::FMA(DatumType::F32), macs)))
    }

    as_op!();
}

/// An einsum whose axes read as `pattern` up to the letters' names.
fn einsum_is(model: &TypedModel, node: usize, pattern: &str) -> bool {
    fn shape_of(s: &str) -> String {
        let mut seen: Vec<char> = Vec::new();
        s.chars()
            .map(|c| {
                if !c.is_ascii_alphabetic() {
                    return c;
                }
                let ix = seen.iter().position(|&x| x == c).unwrap_or_else(|| {
                    seen.push(c);
                    seen.len() - 1
                });
                (b'a' + ix as u8) as char
            })
            .collect()
    }
    model.nodes[node].op_as::<EinSum>().is_some_and(|e| {
        e.q_params.is_none()
            && e.operating_dt == DatumType::F32
            && shape_of(&e.axes.to_string()) == shape_of(pattern)
    })
}

/// `O = einsum(abmk,akbn->ambn)(P, V)`, `P` = [slice of] `softmax(scale * einsum(ambk,anbk->abmn)(Q, K))`
/// ending at node `o`: its inputs `[q, k, v]` and the op.
fn attention_chain(model: &TypedModel, o: usize) -> Option<([OutletId; 3], Attention)> {
    if !einsum_is(model, o, "abmk,akbn->ambn") {
        return None;
    }
    let single_use = |o: OutletId| used_once(model, o);
    let on = &model.nodes[o];
    let (mut p, v) = (on.inputs[0], on.inputs[1]);
    let mut rows = None;
    if let Some(sl) = model.nodes[p.node].op_as::<Slice>() {
        if sl.axis != 2 || !single_use(p) {
            return None;
        }
        rows = Some((sl.start.to_usize().ok()?, sl.end.to_usize().ok()?));
        p = model.nodes[p.node].inputs[0];
    }
    let sm = model.nodes[p.node].op_as::<Softmax>()?;
    if sm.axes.as_slice() != [3] || sm.kind != SoftmaxKind::Softmax || !single_use(p) {
        return None;
    }
    let scaled = model.nodes[p.node].inputs[0];
    if !is_mul(model, scaled.node) || !single_use(scaled) {
        return None;
    }
    let mn = &model.nodes[scaled.node];
    let (scores, scale) = [(mn.inputs[0], mn.inputs[1]), (mn.inputs[1], mn.inputs[0])]
        .into_iter()
        .find_map(|(x, c)| {
            let c = model.outlet_fact(c).ok()?.konst.clone()?;
            (c.len() == 1 && c.datum_type() == DatumType::F32).then_some((x, c))
        })?;
    let scale = scale.try_as_plain_ram().ok()?.as_slice::<f32>().ok()?[0];
    if !einsum_is(model, scores.node, "ambk,anbk->abmn") || !single_use(scores) {
        return None;
    }
    let sn = &model.nodes[scores.node];
    let (q, k) = (sn.inputs[0], sn.inputs[1]);
    let f32_rank4 = |x: OutletId| {
        model
            .outlet_fact(x)
            .is_ok_and(|f| f.datum_type == DatumType::F32 && f.rank() == 4)
    };
    (f32_rank4(q) && f32_rank4(k) && f32_rank4(v)).then_some(([q, k, v], Attention { scale, rows }))
}

/// Whether `o` feeds exactly one node and is not a graph output: a fused chain may drop
/// it then.
pub(crate) fn used_once(model: &TypedModel, o: OutletId) -> bool {
    model.outlet_successors(o).len() == 1
        && model.output_outlets().is_ok_and(|outs| !outs.contains(&o))
}

fn is_mul(model: &TypedModel, node: usize) -> bool {
    model.nodes[node]
        .op_as::<TypedBinOp>()
        .is_some_and(|b| b.0.downcast_ref::<Mul>().is_some())
}

/// The chain `g = x * s`, `s = sigmoid(m)`, `m = x * alpha` ending at node `g`, each
/// intermediate used only by the next: `(x, alpha)`.
fn quick_gelu_chain(model: &TypedModel, g: usize) -> Option<(OutletId, f32)> {
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

/// A committed model (`path` under the crate root) through this module's parser and
/// [`super::onnx::optimise`], and a counter of its plan's nodes by op name (tests checking
/// which ops were taken).
#[cfg(test)]
pub(crate) fn committed_plan(path: &str) -> (super::onnx::Plan, impl Fn(&str) -> usize) {
    let model = onnx()
        .model_for_path(format!("{}/{path}", env!("CARGO_MANIFEST_DIR")))
        .and_then(|m| m.into_typed())
        .unwrap();
    let plan = super::onnx::optimise(model).unwrap();
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
#[cfg(test)]
pub(crate) fn max_abs_diff(a: &Tensor, b: &Tensor) -> f32 {
    let (a, b) = (a.try_as_plain_ram().unwrap(), b.try_as_plain_ram().unwrap());
    let (a, b) = (a.as_slice::<f32>().unwrap(), b.as_slice::<f32>().unwrap());
    assert_eq!(a.len(), b.len(), "tensor lengths");
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0f32, f32::max)
}

/// A dense layer or patch embedding at node `node`: `(input, op, last node replaced)`.
fn dense_like(model: &TypedModel, node: usize) -> Option<(OutletId, Box<dyn TypedOp>, usize)> {
    use dense::{dense_chain, patch_embed_chain};
    if let Some((x, op, last)) = dense_chain(model, node) {
        return Some((x, Box::new(op), last));
    }
    let (x, op, last) = patch_embed_chain(model, node)?;
    Some((x, Box::new(op), last))
}

/// Fuse patterns in a decluttered model (before tract's optimiser, which would otherwise
/// turn them into its own kernels first); returns how many were fused.
pub fn fuse(model: &mut TypedModel) -> TractResult<usize> {
    let mut fused = 0;
    for node in model.eval_order()? {
        let name = model.nodes[node].name.clone();
        let mut patch = TypedModelPatch::default();
        let out = if let Some((x, alpha)) = quick_gelu_chain(model, node) {
            let x = patch.tap_model(model, x)?;
            patch.wire_node(format!("{name}.quick_gelu"), QuickGelu { alpha }, &[x])?
        } else if let Some((x, op, last)) = hardswish::HardSwish::chain(model, node) {
            let x = patch.tap_model(model, x)?;
            let out = patch.wire_node(format!("{name}.hard_swish"), op, &[x])?;
            patch.shunt_outside(model, OutletId::new(last, 0), out[0])?;
            patch.apply(model)?;
            fused += 1;
            continue;
        } else if let Some((x, op, last)) = pointwise::Pointwise::chain(model, node) {
            let x = patch.tap_model(model, x)?;
            let out = patch.wire_node(format!("{name}.pointwise"), op, &[x])?;
            patch.shunt_outside(model, OutletId::new(last, 0), out[0])?;
            patch.apply(model)?;
            fused += 1;
            continue;
        } else if let Some((x, op, last)) = dense_like(model, node) {
            // These also take the node after the match (bias add, axis move) with them.
            let x = patch.tap_model(model, x)?;
            let out = patch.wire_node(format!("{name}.{}", op.name()), op, &[x])?;
            patch.shunt_outside(model, OutletId::new(last, 0), out[0])?;
            patch.apply(model)?;
            fused += 1;
            continue;
        } else if let Some((x, c, op)) = prelu_chain(model, node) {
            let x = patch.tap_model(model, x)?;
            let c = patch.tap_model(model, c)?;
            patch.wire_node(format!("{name}.prelu"), op, &[x, c])?
        } else if let Some((qkv, op)) = attention_chain(model, node) {
            let mut inputs = tvec!();
            for x in qkv {
                inputs.push(patch.tap_model(model, x)?);
            }
            patch.wire_node(format!("{name}.attention"), op, &inputs)?
        } else {
            continue;
        };
        patch.shunt_outside(model, OutletId::new(node, 0), out[0])?;
        patch.apply(model)?;
        fused += 1;
    }
    Ok(fused)
}

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

/// `x` with `f(rows, v, inner)` applied in place, `v` one value per index of `axis` (`what`
/// names the op in the error when they do not match), rows split over the threads.
fn per_channel_in_place(
    x: TValue,
    v: &[f32],
    axis: usize,
    what: &str,
    f: impl Fn(&mut [f32], &[f32], usize) + Sync + Send,
) -> TractResult<TVec<TValue>> {
    let shape = x.shape();
    ensure!(
        axis < shape.len() && shape[axis] == v.len(),
        "{what}: {} values along axis {axis} of {shape:?}",
        v.len()
    );
    let inner: usize = shape[axis + 1..].iter().product();
    rows_in_place(x, (v.len() * inner).max(1), |chunk| f(chunk, v, inner))
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
        Ok(tvec!(inputs[1 - self.konst].without_value()))
    }

    as_op!();
}

/// The per-channel form of a binary op node, if it is one: f32 `Add` or `Mul` of a full
/// tensor and a constant that varies along one axis only, the output shaped like the
/// tensor.
fn channel_op_for(model: &TypedModel, node: &TypedNode) -> Option<ChannelOp> {
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
        Ok(tvec!(inputs[0].without_value()))
    }

    as_op!();
}

/// The chain `y = max(x, 0) + c * (x - |x|)` ending at the `Add` node `y`, each
/// intermediate used only by the next (and `x`'s `Abs` only by the `Sub`), `c` a constant
/// varying along one axis of `x` with one value per channel: `(x, c, op)`.
fn prelu_chain(model: &TypedModel, y: usize) -> Option<(OutletId, OutletId, ChannelPrelu)> {
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

/// Swap ops in an optimised model for faster equivalents (per-channel ops, row softmax,
/// Resize with its plans made once: [`resize`], constant padding of the innermost
/// axes: [`pad`]); returns how many were swapped.
/// Runs after tract's optimiser so its own passes (which know nothing of our ops) are done.
pub fn speed_up(model: &mut TypedModel) -> TractResult<usize> {
    let mut swapped = 0;
    for id in 0..model.nodes.len() {
        let node = &model.nodes[id];
        if let Some(op) = channel_op_for(model, node) {
            model.nodes[id].op = Box::new(op);
            swapped += 1;
            continue;
        }
        if let Some(op) = resize::PlannedResize::for_node(model, node) {
            model.nodes[id].op = Box::new(op);
            swapped += 1;
            continue;
        }
        if let Some(op) = pad::RowPad::for_node(model, node) {
            model.nodes[id].op = Box::new(op);
            swapped += 1;
            continue;
        }
        let Some(sm) = node.op_as::<Softmax>() else {
            continue;
        };
        let fact = model.outlet_fact(node.inputs[0])?;
        let rank = fact.rank();
        let fits = sm.kind == SoftmaxKind::Softmax
            && sm.quant_output_dt.is_none()
            && fact.datum_type == DatumType::F32
            && rank > 0
            && sm.axes.as_slice() == [rank - 1]
            && fact.shape[rank - 1].to_usize().is_ok_and(|n| n % 4 != 0);
        if fits {
            model.nodes[id].op = Box::new(RowSoftmax);
            swapped += 1;
        }
    }
    Ok(swapped)
}

#[cfg(test)]
mod tests {
    use super::*;

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
        let ours = crate::inference::onnx::optimise(load(onnx())).unwrap();
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
            let t =
                |d: &[f32], shape: &[usize]| Tensor::from_shape(shape, d).unwrap().into_tvalue();
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
                                    (s[j] - mx).exp() / z
                                        * v[((ai * n + j) * h + b) * vd + d] as f64
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
}
