//! The dense layer op (`y = x W + b`, weights constant) and the graph rewrite that puts it
//! in place of tract's einsum, on CPUs with the AVX2+FMA or AVX-512 tier; the kernel itself is
//! `nvr_linalg::dense` (why a product of our own: see there).

use std::sync::Arc;

use nvr_linalg::dense::{available, dense, patch_dense, PackedWeights, MR};

use tract_onnx::prelude::*;
use tract_onnx::tract_core::ops::binary::TypedBinOp;
use tract_onnx::tract_core::ops::einsum::EinSum;
use tract_onnx::tract_core::ops::math::Add;
use tract_onnx::tract_hir::internal::*;

/// Where an output axis of a [`Dense`] takes its length from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutAxis {
    /// The input's axis at this position (a row axis).
    Input(usize),
    /// A unit axis the einsum introduced.
    One,
    /// The product's columns (always the last axis).
    Columns,
}

/// `x W + b` over the trailing `k` elements of each row of its single input, in place of
/// an einsum with constant weights (and the bias add after it).
#[derive(Debug, Clone)]
pub struct Dense {
    pub weights: Arc<PackedWeights>,
    /// How many trailing input axes make up a row of `k`.
    pub row_axes: usize,
    pub out_axes: TVec<OutAxis>,
}

impl PartialEq for Dense {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.weights, &other.weights)
            && self.row_axes == other.row_axes
            && self.out_axes == other.out_axes
    }
}

impl Eq for Dense {}

impl Op for Dense {
    fn name(&self) -> StaticName {
        "NvrDense".into()
    }
    fn info(&self) -> TractResult<Vec<String>> {
        Ok(vec![format!(
            "{} x {}, output axes {:?}",
            self.weights.depth(),
            self.weights.width(),
            self.out_axes
        )])
    }
    op_as_typed_op!();
}

impl Dense {
    fn out_shape<D: DimLike>(&self, input: &[D]) -> TVec<D> {
        self.out_axes
            .iter()
            .map(|a| match a {
                OutAxis::Input(i) => input[*i].clone(),
                OutAxis::One => D::one(),
                OutAxis::Columns => D::from(self.weights.width()),
            })
            .collect()
    }
}

impl EvalOp for Dense {
    op_out_of_plan!();

    fn eval(&self, _ctx: &EvalContext, inputs: TVec<TValue>) -> TractResult<TVec<TValue>> {
        let x = args_1!(inputs);
        let (k, n) = (self.weights.depth(), self.weights.width());
        let shape = x.shape();
        ensure!(
            x.datum_type() == DatumType::F32
                && shape.len() >= self.row_axes
                && shape[shape.len() - self.row_axes..]
                    .iter()
                    .product::<usize>()
                    == k,
            "dense: input {:?} {:?} does not end in rows of {k}",
            x.datum_type(),
            x.shape()
        );
        let mut out = Tensor::zero::<f32>(&self.out_shape(x.shape()))?;
        let x = x.try_as_plain_ram()?;
        let x = x.as_slice::<f32>()?;
        let mut out_ram = out.try_as_plain_ram_mut()?;
        let o = out_ram.as_slice_mut::<f32>()?;
        ensure!(
            o.len() == x.len() / k * n,
            "dense: output {} for {} rows",
            o.len(),
            x.len() / k
        );
        par_dense(x, &self.weights, o);
        Ok(tvec!(out.into_tvalue()))
    }
}

/// Products smaller than this many multiply-adds (~8 µs on one core) stay on one thread.
/// Graphs run through `onnx::GraphThreads`, whose helpers spin during a run, so a share
/// is taken within microseconds; measured on the tiny X-CLIP at 2 threads, interleaved:
/// 0.83-0.85 ms at 128K-1M, 0.89 at 2M, 0.94 at 4M-8M (the full-size model's products are
/// all far above it). From a sleeping pool (tract's scope alone) a hand-off costs tens of
/// microseconds, and 8M was the break-even.
const PAR_MIN_MACS: usize = 1 << 20;

/// [`dense`] with the rows split over the tract executor's threads in blocks of [`MR`]
/// when the product is big enough (the result does not depend on the thread count).
pub fn par_dense(x: &[f32], w: &PackedWeights, out: &mut [f32]) {
    let k = w.depth();
    split_rows(x.len() / k, k, w.width(), out, |first, o| {
        dense(&x[first * k..][..o.len() / w.width() * k], w, o)
    })
}

/// `f(first_row, out_rows)` over the `m` output rows of a product by `w`, split over the
/// tract executor's threads in blocks of [`MR`] when the product is big enough (each
/// output element is then computed by one thread in the same order, so the result does
/// not depend on the thread count). Rows, not panels: each thread then reads the weights
/// once and its rows once per panel; split by panels every thread streams all the rows
/// (measured slower, as was the calling thread taking a share from outside the pool:
/// three threads on two cores).
pub(crate) fn split_rows(
    m: usize,
    k: usize,
    n: usize,
    out: &mut [f32],
    f: impl Fn(usize, &mut [f32]) + Sync,
) {
    use tract_linalg::multithread::{current_tract_executor, Executor};
    let blocks = m.div_ceil(MR);
    if let Executor::MultiThread(pool) = current_tract_executor() {
        let threads = pool.current_num_threads();
        if threads > 1 && blocks > 1 && m * k * n >= PAR_MIN_MACS {
            let rows = blocks.div_ceil(threads) * MR;
            pool.install(|| {
                use rayon::prelude::*;
                out.par_chunks_mut(rows * n)
                    .enumerate()
                    .for_each(|(i, o)| f(i * rows, o));
            });
            return;
        }
    }
    f(0, out)
}

impl TypedOp for Dense {
    fn output_facts(&self, inputs: &[&TypedFact]) -> TractResult<TVec<TypedFact>> {
        ensure!(inputs[0].datum_type == DatumType::F32);
        Ok(tvec!(f32::fact(self.out_shape(&inputs[0].shape))))
    }

    fn cost(&self, inputs: &[&TypedFact]) -> TractResult<TVec<(Cost, TDim)>> {
        let rows: TDim = inputs[0].shape.iter().product::<TDim>() / self.weights.depth() as i64;
        let macs = rows * (self.weights.depth() * self.weights.width()) as i64;
        Ok(tvec!((Cost::FMA(DatumType::F32), macs)))
    }

    as_op!();
}

/// The [`Dense`] that computes node `e` of `model` (an f32 einsum of rows by a constant
/// matrix) and, when its only consumer adds a constant bias along the columns, that add
/// too: `(input, op, last node replaced)`. `None` when the node is anything else, or the
/// CPU lacks the kernel.
pub fn dense_chain(model: &TypedModel, e: usize) -> Option<(OutletId, Dense, usize)> {
    if !available() {
        return None;
    }
    let node = &model.nodes[e];
    let es = node.op_as::<EinSum>()?;
    if es.q_params.is_some() || es.operating_dt != DatumType::F32 || node.inputs.len() != 2 {
        return None;
    }
    let x = node.inputs[0];
    let xf = model.outlet_fact(x).ok()?;
    let wt = model.outlet_fact(node.inputs[1]).ok()?.konst.clone()?;
    let of = model.outlet_fact(e.into()).ok()?;
    if xf.datum_type != DatumType::F32 || wt.datum_type() != DatumType::F32 {
        return None;
    }
    let (ins, outs) = es.axes.to_strs();
    let (s0, s1, so): (Vec<char>, Vec<char>, Vec<char>) = (
        ins[0].chars().collect(),
        ins[1].chars().collect(),
        outs[0].chars().collect(),
    );
    let unit = |d: &TDim| d.to_i64().ok() == Some(1);
    // Contracted axes: the trailing ones of the input, all in the weights.
    let contracted: Vec<char> = s0
        .iter()
        .copied()
        .filter(|c| s1.contains(c) && !so.contains(c))
        .collect();
    let cols: Vec<char> = s1
        .iter()
        .copied()
        .filter(|c| so.contains(c) && !s0.contains(c))
        .collect();
    if contracted.is_empty()
        || cols.len() != 1
        || s0[s0.len() - contracted.len()..] != contracted[..]
        || s1.len() != contracted.len() + 1
        || so.last() != Some(&cols[0])
    {
        return None;
    }
    // Row axes: in input order in the output; input axes dropped must be units.
    let lead = &s0[..s0.len() - contracted.len()];
    let mut out_axes = tvec!();
    let mut next = 0;
    for (pos, c) in so[..so.len() - 1].iter().enumerate() {
        if let Some(i) = lead.iter().position(|l| l == c) {
            if i < next {
                return None;
            }
            if lead[next..i]
                .iter()
                .enumerate()
                .any(|(j, _)| !unit(&xf.shape[next + j]))
            {
                return None;
            }
            next = i + 1;
            out_axes.push(OutAxis::Input(i));
        } else if !s1.contains(c) && unit(&of.shape[pos]) {
            out_axes.push(OutAxis::One);
        } else {
            return None;
        }
    }
    if (next..lead.len()).any(|j| !unit(&xf.shape[j])) {
        return None;
    }
    out_axes.push(OutAxis::Columns);
    // Weights as [k (input's order), n].
    let perm: Vec<usize> = contracted
        .iter()
        .chain(cols.iter())
        .map(|c| s1.iter().position(|x| x == c).unwrap())
        .collect();
    let k: usize = contracted
        .iter()
        .map(|c| {
            xf.shape[s0.iter().position(|x| x == c).unwrap()]
                .to_usize()
                .ok()
        })
        .product::<Option<usize>>()?;
    let n = wt.shape()[perm[perm.len() - 1]];
    if wt.len() != k * n {
        return None;
    }
    // Weights already laid out [k..., n] (the usual case) are read where they are; only
    // others are copied into that order. The packer makes the one copy kept.
    let permuted = if perm.iter().enumerate().all(|(i, p)| i == *p) {
        None
    } else {
        Some((*wt).clone().permute_axes(&perm).ok()?)
    };
    let w = permuted.as_ref().unwrap_or(&wt).try_as_plain_ram().ok()?;
    let w = w.as_slice::<f32>().ok()?;
    let (bias, last) = bias_after(model, e, n, &of.shape).unzip();
    let weights = PackedWeights::new(w, k, n, bias.as_deref());
    let op = Dense {
        weights,
        row_axes: contracted.len(),
        out_axes,
    };
    Some((x, op, last.unwrap_or(e)))
}

/// The constant `[1, .., 1, n]` added to node `e`'s output by its only consumer (which
/// keeps the shape): `(bias, add node)`.
fn bias_after(
    model: &TypedModel,
    e: usize,
    n: usize,
    shape: &ShapeFact,
) -> Option<(Vec<f32>, usize)> {
    let succ = model.outlet_successors(e.into());
    if succ.len() != 1 {
        return None;
    }
    let add = &model.nodes[succ[0].node];
    if add
        .op_as::<TypedBinOp>()
        .is_none_or(|b| b.0.downcast_ref::<Add>().is_none())
    {
        return None;
    }
    let other = add.inputs[1 - succ[0].slot];
    let b = model.outlet_fact(other).ok()?.konst.clone()?;
    let af = model.outlet_fact(add.id.into()).ok()?;
    let dims = b.shape();
    if b.datum_type() != DatumType::F32
        || af.shape != *shape
        || dims.last() != Some(&n)
        || dims[..dims.len() - 1].iter().any(|d| *d != 1)
    {
        return None;
    }
    let b = b.try_as_plain_ram().ok()?.as_slice::<f32>().ok()?.to_vec();
    Some((b, add.id))
}

/// A convolution whose stride is its kernel (a vision transformer's patch embedding),
/// followed by flattening the patch grid and moving channels last: `[B, C, H, W]` ->
/// `[B, (H/ph)(W/pw), O]`. The patches do not overlap, so this is one [`Dense`] product
/// with each patch read as a row where it lies in the image ([`patch_dense`]); tract runs
/// it as an im2col pass and its own matmul (~9.5 ms of X-CLIP base's clip, 7.1 ms here).
#[derive(Debug, Clone)]
pub struct PatchEmbed {
    pub weights: Arc<PackedWeights>,
    pub patch: [usize; 2],
}

impl PartialEq for PatchEmbed {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.weights, &other.weights) && self.patch == other.patch
    }
}

impl Eq for PatchEmbed {}

impl Op for PatchEmbed {
    fn name(&self) -> StaticName {
        "NvrPatchEmbed".into()
    }
    fn info(&self) -> TractResult<Vec<String>> {
        Ok(vec![format!(
            "patch {:?}, {} x {}",
            self.patch,
            self.weights.depth(),
            self.weights.width()
        )])
    }
    op_as_typed_op!();
}

impl EvalOp for PatchEmbed {
    op_out_of_plan!();

    fn eval(&self, _ctx: &EvalContext, inputs: TVec<TValue>) -> TractResult<TVec<TValue>> {
        let x = args_1!(inputs);
        let [ph, pw] = self.patch;
        let shape: [usize; 4] = x
            .shape()
            .try_into()
            .map_err(|_| format_err!("patch embedding: input {:?} is not 4-d", x.shape()))?;
        let [b, c, h, w] = shape;
        ensure!(
            c * ph * pw == self.weights.depth() && h % ph == 0 && w % pw == 0,
            "patch embedding: input {shape:?} does not tile into {ph}x{pw} patches of {} values",
            self.weights.depth()
        );
        let rows = b * (h / ph) * (w / pw);
        let mut out = Tensor::zero::<f32>(&[b, rows / b, self.weights.width()])?;
        let x = x.try_as_plain_ram()?;
        let x = x.as_slice::<f32>()?;
        let mut out_ram = out.try_as_plain_ram_mut()?;
        split_rows(
            rows,
            self.weights.depth(),
            self.weights.width(),
            out_ram.as_slice_mut::<f32>()?,
            |first, o| patch_dense(x, shape, self.patch, first, &self.weights, o),
        );
        Ok(tvec!(out.into_tvalue()))
    }
}

impl TypedOp for PatchEmbed {
    fn output_facts(&self, inputs: &[&TypedFact]) -> TractResult<TVec<TypedFact>> {
        let s = &inputs[0].shape;
        ensure!(inputs[0].datum_type == DatumType::F32 && s.rank() == 4);
        let grid = s[2].clone() / self.patch[0] as i64 * (s[3].clone() / self.patch[1] as i64);
        Ok(tvec!(f32::fact([
            s[0].clone(),
            grid,
            self.weights.width().to_dim()
        ])))
    }

    fn cost(&self, inputs: &[&TypedFact]) -> TractResult<TVec<(Cost, TDim)>> {
        let s = &inputs[0].shape;
        let pixels: TDim = s.iter().product();
        Ok(tvec!((
            Cost::FMA(DatumType::F32),
            pixels * self.weights.width() as i64
        )))
    }

    as_op!();
}

/// `MoveAxis(1 -> 2)` of `Reshape(grid -> patches)` of a convolution whose stride is its
/// kernel, ending at node `mv`: `(input, op, mv)`.
pub fn patch_embed_chain(model: &TypedModel, mv: usize) -> Option<(OutletId, PatchEmbed, usize)> {
    use tract_onnx::tract_core::ops::cnn::{Conv, KernelFormat, PaddingSpec};
    use tract_onnx::tract_core::ops::nn::DataFormat;
    if !available() || model.nodes[mv].op_as::<AxisOp>() != Some(&AxisOp::Move(1, 2)) {
        return None;
    }
    let single_use = |o: OutletId| super::pattern::used_once(model, o);
    let reshape = model.nodes[mv].inputs[0];
    let rn = &model.nodes[reshape.node];
    let AxisOp::Reshape(2, from, to) = rn.op_as::<AxisOp>()? else {
        return None;
    };
    if !single_use(reshape) || from.len() != 2 || to.len() != 1 {
        return None;
    }
    let conv = rn.inputs[0];
    let cn = &model.nodes[conv.node];
    let op = cn.op_as::<Conv>()?;
    let spec = &op.pool_spec;
    let ks = &spec.kernel_shape;
    let no_padding = match &spec.padding {
        PaddingSpec::Valid => true,
        PaddingSpec::Explicit(a, b) => a.iter().chain(b).all(|p| *p == 0),
        _ => false,
    };
    if !single_use(conv)
        || op.q_params.is_some()
        || op.group != 1
        || op.kernel_fmt != KernelFormat::OIHW
        || spec.data_format != DataFormat::NCHW
        || ks.len() != 2
        || spec.strides.as_deref() != Some(&ks[..])
        || spec
            .dilations
            .as_ref()
            .is_some_and(|d| d.iter().any(|d| *d != 1))
        || !no_padding
        || cn.inputs.len() != 3
    {
        return None;
    }
    let xf = model.outlet_fact(cn.inputs[0]).ok()?;
    let kernel = model.outlet_fact(cn.inputs[1]).ok()?.konst.clone()?;
    let bias = model.outlet_fact(cn.inputs[2]).ok()?.konst.clone()?;
    let (h, w) = (xf.shape[2].to_usize().ok()?, xf.shape[3].to_usize().ok()?);
    if xf.datum_type != DatumType::F32
        || kernel.datum_type() != DatumType::F32
        || bias.datum_type() != DatumType::F32
        || h % ks[0] != 0
        || w % ks[1] != 0
    {
        return None;
    }
    let (o, k) = (kernel.shape()[0], kernel.len() / kernel.shape()[0]);
    let kt = kernel.try_as_plain_ram().ok()?;
    let kv = kt.as_slice::<f32>().ok()?;
    // OIHW is [n, k]; the packer wants [k, n].
    let wkn: Vec<f32> = (0..k * o).map(|i| kv[(i % o) * k + i / o]).collect();
    let bt = bias.try_as_plain_ram().ok()?;
    let bv = bt.as_slice::<f32>().ok()?;
    let bias = match bv.len() {
        1 => vec![bv[0]; o],
        l if l == o => bv.to_vec(),
        _ => return None,
    };
    let weights = PackedWeights::new(&wkn, k, o, Some(&bias));
    let patch = [ks[0], ks[1]];
    Some((cn.inputs[0], PatchEmbed { weights, patch }, mv))
}

#[cfg(test)]
mod tests {
    use super::*;
    use tract_onnx::tract_core::ops::binary::TypedBinOp;

    fn values(n: usize, seed: u64) -> Vec<f32> {
        crate::inference::xclip::seeded_values(seed, n)
    }

    /// Split over threads, each element is still computed by one kernel call in the same
    /// order: the same bits as on one thread.
    #[test]
    fn threads_do_not_change_the_result() {
        if !available() {
            eprintln!("no AVX2+FMA or AVX-512 on this CPU: the kernel is not used here");
            return;
        }
        // Above PAR_MIN_MACS, so the pool does take it.
        let (m, k, n) = (101, 400, 224);
        assert!(m * k * n >= PAR_MIN_MACS);
        let (x, w, b) = (values(m * k, 1), values(k * n, 2), values(n, 3));
        let pw = PackedWeights::new(&w, k, n, Some(&b));
        let mut one = vec![0f32; m * n];
        par_dense(&x, &pw, &mut one);
        let mut two = vec![0f32; m * n];
        crate::inference::onnx::GraphThreads::new(2).run(|| par_dense(&x, &pw, &mut two));
        assert!(one
            .iter()
            .zip(&two)
            .all(|(a, b)| a.to_bits() == b.to_bits()));
    }

    /// The einsum forms ONNX MatMul and Gemm take in tract's decluttered graphs (rows by
    /// `[k, n]`, unit axes dropped or added, transposed weights, a contraction over two
    /// axes, a bias after it): with the rewrite the graph gives tract's own result, and the
    /// rewrite happens exactly where the CPU has the kernel and for no other form.
    #[test]
    fn rewritten_einsums_agree_with_tract() {
        // The last three are forms the kernel does not cover (weights with a batch axis,
        // a contraction that is not the input's trailing axis, columns not last), left
        // to tract.
        struct Case {
            expr: &'static str,
            x: &'static [usize],
            w: &'static [usize],
            bias: bool,
            ours: bool,
        }
        let case = |expr, x, w, bias, ours| Case {
            expr,
            x,
            w,
            bias,
            ours,
        };
        let cases = [
            case("amk,kn->amn", &[2, 5, 24], &[24, 40], true, true),
            case("mak,kn->mn", &[6, 1, 24], &[24, 40], true, true),
            case("mk,nk->man", &[6, 24], &[40, 24], false, true),
            case("ambk,bkn->amn", &[2, 3, 4, 6], &[4, 6, 40], true, true),
            case("mk,kn->mn", &[13, 24], &[24, 70], false, true),
            case("bmk,bkn->bmn", &[3, 5, 24], &[3, 24, 40], true, false),
            case("km,kn->mn", &[24, 6], &[24, 40], true, false),
            case("mk,kn->nm", &[13, 24], &[24, 40], false, false),
        ];
        for Case {
            expr,
            x: xs,
            w: ws,
            bias: with_bias,
            ours: fused,
        } in cases
        {
            let mut model = TypedModel::default();
            let x = model.add_source("x", f32::fact(xs)).unwrap();
            let wlen: usize = ws.iter().product();
            let w = model
                .add_const("w", Tensor::from_shape(ws, &values(wlen, 5)).unwrap())
                .unwrap();
            let axes: AxesMapping = expr.parse().unwrap();
            let mut y = model
                .wire_node("mm", EinSum::new(axes, DatumType::F32), &[x, w])
                .unwrap()[0];
            if with_bias {
                let rank = model.outlet_fact(y).unwrap().rank();
                let mut bs = vec![1usize; rank];
                bs[rank - 1] = 40;
                let b = model
                    .add_const("b", Tensor::from_shape(&bs, &values(40, 6)).unwrap())
                    .unwrap();
                y = model
                    .wire_node("bias", TypedBinOp(Box::new(Add), None), &[y, b])
                    .unwrap()[0];
            }
            model.select_output_outlets(&[y]).unwrap();
            let theirs = model
                .clone()
                .into_optimized()
                .unwrap()
                .into_runnable()
                .unwrap();
            let ours = crate::inference::onnx::optimise(model).unwrap();
            let dense = ours
                .model()
                .nodes
                .iter()
                .filter(|n| n.op.name() == "NvrDense")
                .count();
            assert_eq!(
                dense,
                usize::from(available() && fused),
                "{expr}: NvrDense nodes"
            );
            let input = Tensor::from_shape(xs, &values(xs.iter().product(), 4)).unwrap();
            let a = ours.run(tvec!(input.clone().into_tvalue())).unwrap();
            let b = theirs.run(tvec!(input.into_tvalue())).unwrap();
            assert_eq!(a[0].shape(), b[0].shape(), "{expr}: shape");
            let diff = crate::inference::ops::tests::max_abs_diff(&a[0], &b[0]);
            assert!(diff < 1e-5, "{expr}: differs from tract by {diff}");
        }
    }
}
