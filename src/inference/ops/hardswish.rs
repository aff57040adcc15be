//! Hard-swish (`x * clip(x + 3, 0, 6)`, scaled) between scalar affine steps, as Paddle's
//! PP-LCNet blocks export it (PP-OCR's plate detector and reader): `x1 = x * a + b`, then
//! `(x1 * clip(x1 + 3, 0, 6)) * s + c` (`s` holds the 1/6). tract runs it as two or
//! three element-wise passes with an intermediate tensor between them, since `x1` feeds two
//! branches (~16 of the detector's ~115 ms a frame). [`HardSwish`] is one pass, fused in
//! the decluttered graph, computing each step as the graph does (no fused multiply-adds),
//! so the values are the same.

use tract_onnx::prelude::*;
use tract_onnx::tract_core::ops::binary::{BinMiniOp, TypedBinOp};
use tract_onnx::tract_core::ops::math::{Add, Max, Min, Mul};
use tract_onnx::tract_hir::internal::*;

use super::inplace::{like_input, rows_in_place};
use super::pattern::used_once;

/// `y = (x1 * min(max(x1 + 3, 0), 6)) * s + c` with `x1 = x * a + b`; absent steps are
/// `a = s = 1`, `b = c = 0` and are not computed.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct HardSwish {
    pub pre: Option<[f32; 2]>,
    pub scale: Option<f32>,
    pub shift: Option<f32>,
}

impl std::hash::Hash for HardSwish {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        let bits = |v: Option<f32>| v.map(f32::to_bits);
        (
            self.pre.map(|p| p.map(f32::to_bits)),
            bits(self.scale),
            bits(self.shift),
        )
            .hash(state);
    }
}

impl Eq for HardSwish {}

impl Op for HardSwish {
    fn name(&self) -> StaticName {
        "NvrHardSwish".into()
    }
    fn info(&self) -> TractResult<Vec<String>> {
        Ok(vec![format!(
            "x * {:?} then hard-swish * {:?} + {:?}",
            self.pre, self.scale, self.shift
        )])
    }
    op_as_typed_op!();
}

impl HardSwish {
    /// The op over `data`, in place.
    pub fn apply(&self, data: &mut [f32]) {
        nvr_linalg::rows::hard_swish(data, self.pre, self.scale, self.shift)
    }

    /// The chain ending in the hard-swish product node `m` (with the scalar steps around
    /// it, each intermediate used only by the next): `(x, op, last node)`.
    pub fn chain(model: &TypedModel, m: usize) -> Option<(OutletId, HardSwish, usize)> {
        let (x1, _) = core(model, m)?;
        let mut op = HardSwish::default();
        let mut x = x1;
        // x1 = x0 + b, x0 = x * a: only when x1 feeds nothing but the hard-swish (its
        // `+ 3` and the product).
        if model.outlet_successors(x1).len() == 2
            && model.output_outlets().is_ok_and(|o| !o.contains(&x1))
        {
            if let Some((x0, b)) = scalar_step::<Add>(model, x1.node) {
                if let Some((xin, a)) = scalar_step::<Mul>(model, x0.node) {
                    if used_once(model, x0) {
                        op.pre = Some([a, b]);
                        x = xin;
                    }
                }
            }
        }
        let mut last = m;
        let next = |n: usize| -> Option<usize> {
            let o = OutletId::new(n, 0);
            if !used_once(model, o) {
                return None;
            }
            Some(model.outlet_successors(o)[0].node)
        };
        if let Some(n) = next(last) {
            if let Some((_, s)) = scalar_step::<Mul>(model, n) {
                op.scale = Some(s);
                last = n;
                if let Some(n2) = next(last) {
                    if let Some((_, c)) = scalar_step::<Add>(model, n2) {
                        op.shift = Some(c);
                        last = n2;
                    }
                }
            }
        }
        Some((x, op, last))
    }
}

/// The f32 scalar constant at `o`, if it is one.
fn scalar(model: &TypedModel, o: OutletId) -> Option<f32> {
    let k = model.outlet_fact(o).ok()?.konst.clone()?;
    if k.datum_type() != DatumType::F32 || k.len() != 1 {
        return None;
    }
    Some(k.try_as_plain_ram().ok()?.as_slice::<f32>().ok()?[0])
}

/// Node `n` as `x op k` (either order) with `k` a scalar constant and the output shaped
/// like `x`: `(x, k)`.
fn scalar_step<T: BinMiniOp>(model: &TypedModel, n: usize) -> Option<(OutletId, f32)> {
    let node = &model.nodes[n];
    let bin = node.op_as::<TypedBinOp>()?;
    if bin.0.downcast_ref::<T>().is_none() || bin.1.is_some() || node.inputs.len() != 2 {
        return None;
    }
    for (x, k) in [
        (node.inputs[0], node.inputs[1]),
        (node.inputs[1], node.inputs[0]),
    ] {
        let (Some(k), Ok(xf)) = (scalar(model, k), model.outlet_fact(x)) else {
            continue;
        };
        if xf.datum_type == DatumType::F32 && xf.shape == node.outputs[0].fact.shape {
            return Some((x, k));
        }
    }
    None
}

/// Node `m` as `x1 * min(max(x1 + 3, 0), 6)`, the clip's steps each used only by the
/// next: `(x1, m)`.
fn core(model: &TypedModel, m: usize) -> Option<(OutletId, usize)> {
    let node = &model.nodes[m];
    let bin = node.op_as::<TypedBinOp>()?;
    if bin.0.downcast_ref::<Mul>().is_none() || node.inputs.len() != 2 {
        return None;
    }
    for (x1, t) in [
        (node.inputs[0], node.inputs[1]),
        (node.inputs[1], node.inputs[0]),
    ] {
        let step =
            |o: OutletId, want: f32, op: fn(&TypedModel, usize) -> Option<(OutletId, f32)>| {
                let (inner, k) = op(model, o.node)?;
                (used_once(model, o) && k == want).then_some(inner)
            };
        let Some(mx) = step(t, 6.0, scalar_step::<Min>) else {
            continue;
        };
        let Some(add) = step(mx, 0.0, scalar_step::<Max>) else {
            continue;
        };
        let Some(inner) = step(add, 3.0, scalar_step::<Add>) else {
            continue;
        };
        if inner == x1 && model.outlet_fact(x1).ok()?.shape == node.outputs[0].fact.shape {
            return Some((x1, m));
        }
    }
    None
}

impl EvalOp for HardSwish {
    op_out_of_plan!();

    fn eval(&self, _ctx: &EvalContext, inputs: TVec<TValue>) -> TractResult<TVec<TValue>> {
        let x = args_1!(inputs);
        let row = x.shape().last().copied().unwrap_or(1).max(1);
        rows_in_place(x, row, |chunk| self.apply(chunk))
    }
}

impl TypedOp for HardSwish {
    fn output_facts(&self, inputs: &[&TypedFact]) -> TractResult<TVec<TypedFact>> {
        like_input(inputs, 0, true)
    }

    as_op!();
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::inference::ops::tests::max_abs_diff;
    use tract_onnx::tract_core::ops::math;

    /// `x * a + b` (when `pre`), hard-swish, `* s + c`, as PP-LCNet exports it; `x1`
    /// also a graph output when `share`.
    fn graph(pre: bool, share: bool) -> TypedModel {
        let mut m = TypedModel::default();
        let x = m.add_source("x", f32::fact([2, 3, 4, 5])).unwrap();
        let k = |m: &mut TypedModel, name: &str, v: f32| {
            m.add_const(name, tensor4(&[[[[v]]]])).unwrap()
        };
        let consts: Vec<OutletId> = [0.94, 0.5, 3.0, 0.0, 6.0, 0.079, -0.0076]
            .iter()
            .enumerate()
            .map(|(i, &v)| k(&mut m, &format!("k{i}"), v))
            .collect();
        let wire = |m: &mut TypedModel, name: &str, op: Box<dyn TypedOp>, i: &[OutletId]| {
            m.wire_node(name, op, i).unwrap()[0]
        };
        let x1 = if pre {
            let x0 = wire(&mut m, "x0", Box::new(math::mul()), &[x, consts[0]]);
            wire(&mut m, "x1", Box::new(math::add()), &[x0, consts[1]])
        } else {
            x
        };
        let a = wire(&mut m, "plus3", Box::new(math::add()), &[x1, consts[2]]);
        let lo = wire(&mut m, "lo", Box::new(math::max()), &[a, consts[3]]);
        let hi = wire(&mut m, "hi", Box::new(math::min()), &[lo, consts[4]]);
        let p = wire(&mut m, "p", Box::new(math::mul()), &[x1, hi]);
        let s = wire(&mut m, "s", Box::new(math::mul()), &[p, consts[5]]);
        let y = wire(&mut m, "y", Box::new(math::add()), &[s, consts[6]]);
        let mut outputs = vec![y];
        if share {
            outputs.push(x1);
        }
        m.select_output_outlets(&outputs).unwrap();
        m
    }

    /// Fused, with or without the affine step before it (and not absorbing that step when
    /// its result is needed elsewhere): tract's own values, on inputs either side of the
    /// clip's corners, to the bit.
    #[test]
    fn hard_swish_chains_are_fused_with_tracts_values() {
        let x: Vec<f32> = crate::inference::xclip::seeded_values(5, 120)
            .iter()
            .map(|v| v * 8.0)
            .collect();
        let x = Tensor::from_shape(&[2, 3, 4, 5], &x).unwrap();
        for (pre, share) in [(true, false), (false, false), (true, true)] {
            let m = graph(pre, share);
            let ours = crate::inference::onnx::optimise(m.clone()).unwrap();
            let theirs = m.into_optimized().unwrap().into_runnable().unwrap();
            let swish: Vec<&HardSwish> = ours
                .model()
                .nodes
                .iter()
                .filter_map(|n| n.op_as::<HardSwish>())
                .collect();
            assert_eq!(swish.len(), 1, "pre {pre}, shared {share}");
            assert_eq!(
                swish[0].pre.is_some(),
                pre && !share,
                "pre {pre}, shared {share}"
            );
            assert!(swish[0].scale.is_some() && swish[0].shift.is_some());
            let a = ours.run(tvec!(x.clone().into_tvalue())).unwrap();
            let b = theirs.run(tvec!(x.clone().into_tvalue())).unwrap();
            for (a, b) in a.iter().zip(&b) {
                let d = max_abs_diff(a, b);
                assert_eq!(d, 0.0, "pre {pre}, shared {share}");
            }
        }
    }
}
