//! Attention (`softmax(scale * Q K^T) V` per head, as Hugging Face's eager attention
//! exports it) read where the projections left Q, K and V, and the chain it replaces.

use tract_onnx::prelude::*;
use tract_onnx::tract_core::ops::array::Slice;
use tract_onnx::tract_core::ops::nn::{Softmax, SoftmaxKind};
use tract_onnx::tract_hir::internal::*;

use nvr_linalg::attention::{attention_item, AttentionItem, AttentionScratch};

use super::pattern::{einsum_is, is_mul, used_once};

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

/// `O = einsum(abmk,akbn->ambn)(P, V)`, `P` = [slice of] `softmax(scale * einsum(ambk,anbk->abmn)(Q, K))`
/// ending at node `o`: its inputs `[q, k, v]` and the op.
pub(crate) fn attention_chain(model: &TypedModel, o: usize) -> Option<([OutletId; 3], Attention)> {
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
