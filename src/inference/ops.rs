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
//! All compute in f32 with the same formula as PyTorch; the parity tests against the
//! PyTorch fixtures (1e-4) cover them, and the unit tests below compare them with tract's own
//! ops on random inputs.

use std::sync::OnceLock;

use tract_onnx::model::{OnnxOpRegister, ParsingContext};
use tract_onnx::pb::NodeProto;
use tract_onnx::prelude::*;
use tract_onnx::tract_core::ops::binary::TypedBinOp;
use tract_onnx::tract_core::ops::element_wise::ElementWiseOp;
use tract_onnx::tract_core::ops::math::Mul;
use tract_onnx::tract_core::ops::nn::{Sigmoid, Softmax, SoftmaxKind};
use tract_onnx::tract_hir::internal::*;
use tract_onnx::tract_hir::ops::expandable::Expansion;

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

/// Normalise each `row`-long slice of `data` in place.
pub fn layer_norm_rows(data: &mut [f32], scale: &[f32], bias: &[f32], eps: f32) {
    #[cfg(target_arch = "x86_64")]
    if avx2() {
        // SAFETY: the CPU has AVX2 and FMA (checked at run time just above).
        return unsafe { layer_norm_rows_avx2(data, scale, bias, eps) };
    }
    layer_norm_rows_body(data, scale, bias, eps)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn layer_norm_rows_avx2(data: &mut [f32], scale: &[f32], bias: &[f32], eps: f32) {
    layer_norm_rows_body(data, scale, bias, eps)
}

#[inline(always)]
fn layer_norm_rows_body(data: &mut [f32], scale: &[f32], bias: &[f32], eps: f32) {
    let row = scale.len();
    for x in data.chunks_exact_mut(row) {
        let mean = sum(x) / row as f32;
        let var = sum_sq_dev(x, mean) / row as f32;
        let inv = 1.0 / (var + eps).sqrt();
        for ((v, &g), &b) in x.iter_mut().zip(scale).zip(bias) {
            *v = (*v - mean) * inv * g + b;
        }
    }
}

// Sixteen partial sums so the loops vectorise (and round like a blocked sum, closer to the
// reference than one long serial chain).
#[inline(always)]
fn sum(x: &[f32]) -> f32 {
    let mut acc = [0f32; 16];
    let chunks = x.chunks_exact(16);
    let tail: f32 = chunks.remainder().iter().sum();
    for c in chunks {
        for (a, v) in acc.iter_mut().zip(c) {
            *a += v;
        }
    }
    acc.iter().sum::<f32>() + tail
}

#[inline(always)]
fn sum_sq_dev(x: &[f32], mean: f32) -> f32 {
    let mut acc = [0f32; 16];
    let chunks = x.chunks_exact(16);
    let tail: f32 = chunks
        .remainder()
        .iter()
        .map(|v| (v - mean) * (v - mean))
        .sum();
    for c in chunks {
        for (a, v) in acc.iter_mut().zip(c) {
            *a += (v - mean) * (v - mean);
        }
    }
    acc.iter().sum::<f32>() + tail
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
        let _ = model;
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

/// `exp(x)` for x <= 0 (softmax after the max is taken off), within 2 ulp of the libm
/// result, branch-free so the compiler vectorises it (Cephes' expf range reduction and
/// polynomial).
#[inline(always)]
fn exp_nonpositive(x: f32) -> f32 {
    const LOG2E: f32 = std::f32::consts::LOG2_E;
    const C1: f32 = 0.693_359_4;
    const C2: f32 = -2.121_944_4e-4;
    // 1.5 * 2^23: adding and subtracting it rounds to the nearest integer.
    const ROUND: f32 = 12_582_912.0;
    let x = x.max(-87.0);
    let n = (x * LOG2E + ROUND) - ROUND;
    let r = x - n * C1 - n * C2;
    let mut p = 1.987_569_1e-4f32;
    p = p * r + 1.398_199_9e-3;
    p = p * r + 8.333_452e-3;
    p = p * r + 4.166_579_6e-2;
    p = p * r + 1.666_666_5e-1;
    p = p * r + 0.5;
    let y = p * r * r + r + 1.0;
    // 2^n without a float-to-int conversion (which blocks vectorisation): n + 127 + 2^23
    // holds n + 127 in its low mantissa bits; shifting them into the exponent field drops
    // the rest.
    y * f32::from_bits((n + (127.0 + 8_388_608.0)).to_bits() << 23)
}

/// Softmax of each `row`-long slice of `data`, in place.
pub fn softmax_rows(data: &mut [f32], row: usize) {
    #[cfg(target_arch = "x86_64")]
    if avx2() {
        // SAFETY: the CPU has AVX2 and FMA (checked at run time just above).
        return unsafe { softmax_rows_avx2(data, row) };
    }
    softmax_rows_body(data, row)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn softmax_rows_avx2(data: &mut [f32], row: usize) {
    softmax_rows_body(data, row)
}

// One body compiled twice: for the baseline target and, on x86_64, with AVX2 enabled so
// the same loops vectorise eight wide (aarch64's baseline already has NEON).
#[inline(always)]
fn softmax_rows_body(data: &mut [f32], row: usize) {
    for x in data.chunks_exact_mut(row) {
        let mut m = [f32::NEG_INFINITY; 16];
        let chunks = x.chunks_exact(16);
        let mut max = chunks
            .remainder()
            .iter()
            .copied()
            .fold(f32::NEG_INFINITY, f32::max);
        for c in chunks {
            for (a, &v) in m.iter_mut().zip(c) {
                *a = a.max(v);
            }
        }
        max = m.iter().copied().fold(max, f32::max);
        let mut acc = [0f32; 16];
        let mut chunks = x.chunks_exact_mut(16);
        for c in &mut chunks {
            for (a, v) in acc.iter_mut().zip(c.iter_mut()) {
                *v = exp_nonpositive(*v - max);
                *a += *v;
            }
        }
        let mut total: f32 = 0.0;
        for v in chunks.into_remainder() {
            *v = exp_nonpositive(*v - max);
            total += *v;
        }
        let inv = 1.0 / (acc.iter().sum::<f32>() + total);
        x.iter_mut().for_each(|v| *v *= inv);
    }
}

#[cfg(target_arch = "x86_64")]
fn avx2() -> bool {
    static YES: OnceLock<bool> = OnceLock::new();
    *YES.get_or_init(|| is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma"))
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

/// `x * sigmoid(alpha * x)` over `data`, in place.
pub fn quick_gelu(data: &mut [f32], alpha: f32) {
    #[cfg(target_arch = "x86_64")]
    if avx2() {
        // SAFETY: the CPU has AVX2 and FMA (checked at run time just above).
        return unsafe { quick_gelu_avx2(data, alpha) };
    }
    quick_gelu_body(data, alpha)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn quick_gelu_avx2(data: &mut [f32], alpha: f32) {
    quick_gelu_body(data, alpha)
}

#[inline(always)]
fn quick_gelu_body(data: &mut [f32], alpha: f32) {
    for v in data.iter_mut() {
        let t = alpha * *v;
        // sigmoid(t) from exp(-|t|) <= 1, so nothing overflows whatever the sign.
        let e = exp_nonpositive(-t.abs());
        let sig = if t >= 0.0 {
            1.0 / (1.0 + e)
        } else {
            e / (1.0 + e)
        };
        *v *= sig;
    }
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
    let single_use = |o: OutletId| model.outlet_successors(o).len() == 1;
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

/// Fuse patterns in a decluttered model (before tract's optimiser, which would otherwise
/// turn them into its own kernels first); returns how many were fused.
pub fn fuse(model: &mut TypedModel) -> TractResult<usize> {
    let mut fused = 0;
    for g in model.eval_order()? {
        let Some((x, alpha)) = quick_gelu_chain(model, g) else {
            continue;
        };
        let name = model.nodes[g].name.clone();
        let mut patch = TypedModelPatch::default();
        let tapped = patch.tap_model(model, x)?;
        let out = patch.wire_node(format!("{name}.quick_gelu"), QuickGelu { alpha }, &[tapped])?;
        patch.shunt_outside(model, OutletId::new(g, 0), out[0])?;
        patch.apply(model)?;
        fused += 1;
    }
    Ok(fused)
}

/// Swap ops in an optimised model for faster equivalents; returns how many were swapped.
/// Runs after tract's optimiser so its own passes (which know nothing of our ops) are done.
pub fn speed_up(model: &mut TypedModel) -> TractResult<usize> {
    let mut swapped = 0;
    for id in 0..model.nodes.len() {
        let node = &model.nodes[id];
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

    #[test]
    fn exp_matches_libm_over_the_softmax_range() {
        let mut worst = 0f32;
        let mut x = -87.0f32;
        while x <= 0.0 {
            let want = x.exp();
            let got = exp_nonpositive(x);
            worst = worst.max(((got - want) / want).abs());
            x += 0.001;
        }
        assert!(worst < 3e-7, "worst relative error {worst}");
    }

    #[test]
    fn softmax_rows_match_the_definition() {
        for row in [1, 3, 17, 51, 64] {
            let x: Vec<f32> = values(row * 7, row as u64)
                .iter()
                .map(|v| v * 20.0)
                .collect();
            let mut got = x.clone();
            softmax_rows(&mut got, row);
            for (r, g) in x.chunks(row).zip(got.chunks(row)) {
                let m = r.iter().copied().fold(f32::NEG_INFINITY, f32::max) as f64;
                let s: f64 = r.iter().map(|&v| (v as f64 - m).exp()).sum();
                for (&v, &o) in r.iter().zip(g) {
                    let want = (v as f64 - m).exp() / s;
                    assert!((o as f64 - want).abs() < 1e-6, "row {row}: {o} vs {want}");
                }
            }
        }
    }

    #[test]
    fn quick_gelu_matches_the_definition() {
        let x: Vec<f32> = values(1000, 3).iter().map(|v| v * 40.0).collect();
        let mut got = x.clone();
        quick_gelu(&mut got, 1.702);
        for (&v, &g) in x.iter().zip(&got) {
            let want = v as f64 / (1.0 + (-1.702 * v as f64).exp());
            assert!(
                (g as f64 - want).abs() <= 1e-6 * (1.0 + want.abs()),
                "{v}: {g} vs {want}"
            );
        }
    }

    #[test]
    fn layer_norm_rows_match_the_definition() {
        for row in [5, 16, 51, 768] {
            let x: Vec<f32> = values(row * 3, 7).iter().map(|v| v * 3.0 + 1.5).collect();
            let scale = values(row, 8);
            let bias = values(row, 9);
            let mut got = x.clone();
            layer_norm_rows(&mut got, &scale, &bias, 1e-5);
            for (r, g) in x.chunks(row).zip(got.chunks(row)) {
                let mean = r.iter().map(|&v| v as f64).sum::<f64>() / row as f64;
                let var = r.iter().map(|&v| (v as f64 - mean).powi(2)).sum::<f64>() / row as f64;
                for i in 0..row {
                    let want = (r[i] as f64 - mean) / (var + 1e-5).sqrt() * scale[i] as f64
                        + bias[i] as f64;
                    assert!(
                        (g[i] as f64 - want).abs() < 1e-4,
                        "row {row}[{i}]: {} vs {want}",
                        g[i]
                    );
                }
            }
        }
    }
}
