//! Dense layers (`y = x W + b`, weights constant) on x86_64 CPUs with AVX-512.
//!
//! Why a product of our own: X-CLIP's video graph is 90% dense layers (400 token rows
//! against 768 x 768 and 768 x 3072 weights), and tract runs them by packing the
//! activations into its kernel's panel layout before every product (~11 ms a clip) and
//! with a kernel its cost model picks per shape, which on AMD Zen picks a shape ~6% slower
//! for the q/k/v projections. Here the weights are packed once at load into 32-column
//! panels and the activations are read where they lie: each kernel call holds a block of
//! up to [`MR`] rows x 32 columns in 24 of the 32 vector registers and walks the full
//! depth once, broadcasting one activation per row and step (the layout onnxruntime's MLAS
//! uses, which is what the benchmark compares against).
//!
//! Only on AVX-512 (checked at run time): on AVX2 and on the aarch64 device tract's own
//! kernels run, which is where they are at their best. The graph rewrite that puts
//! [`Dense`] in place of tract's einsum is in `ops::fuse`.

use std::sync::Arc;

/// Rows per kernel call: 12 x 2 accumulators, 2 weight registers, broadcasts in the rest.
pub const MR: usize = 12;
/// Columns per weight panel: two 16-lane registers.
pub const NR: usize = 32;

/// One 64-byte-aligned block of 16 floats, so every weight load is one cache line.
#[derive(Clone, Copy)]
#[repr(C, align(64))]
struct Line([f32; 16]);

/// Weights `[k, n]` packed as `ceil(n / 32)` panels of `k x 32` (zero padded), with the
/// bias padded alike.
#[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
pub struct PackedWeights {
    k: usize,
    n: usize,
    panels: Vec<Line>,
    bias: Vec<Line>,
}

impl std::fmt::Debug for PackedWeights {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "PackedWeights({}x{})", self.k, self.n)
    }
}

impl PackedWeights {
    /// Pack `w` (`k` rows of `n`, row-major) and `bias` (`n` values, or none).
    pub fn new(w: &[f32], k: usize, n: usize, bias: Option<&[f32]>) -> Arc<Self> {
        assert_eq!(w.len(), k * n, "weights are not {k} x {n}");
        let np = n.div_ceil(NR);
        let mut panels = vec![Line([0.0; 16]); np * k * 2];
        for p in 0..np {
            let cols = (n - p * NR).min(NR);
            for kk in 0..k {
                let base = (p * k + kk) * 2;
                for c in 0..cols {
                    panels[base + c / 16].0[c % 16] = w[kk * n + p * NR + c];
                }
            }
        }
        let mut padded = vec![Line([0.0; 16]); np * 2];
        if let Some(b) = bias {
            assert_eq!(b.len(), n, "bias is not {n} long");
            for (i, v) in b.iter().enumerate() {
                padded[i / 16].0[i % 16] = *v;
            }
        }
        Arc::new(PackedWeights {
            k,
            n,
            panels,
            bias: padded,
        })
    }

    pub fn depth(&self) -> usize {
        self.k
    }

    pub fn width(&self) -> usize {
        self.n
    }

    /// Bytes held (the model's resident figure counts them).
    pub fn bytes(&self) -> usize {
        (self.panels.len() + self.bias.len()) * std::mem::size_of::<Line>()
    }
}

/// Whether this CPU runs the kernel (AVX-512 F).
pub fn available() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        static YES: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
        *YES.get_or_init(|| is_x86_feature_detected!("avx512f"))
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// `out[m, n] = x[m, k] * W + b` for rows `x` (row-major, `m * k`), single-threaded.
///
/// Panics when the CPU lacks AVX-512 ([`available`]) or the sizes disagree; the graph
/// rewrite checks both before it puts a [`Dense`] in a plan.
pub fn dense(x: &[f32], w: &PackedWeights, out: &mut [f32]) {
    assert!(available(), "dense kernel needs AVX-512");
    let (k, n) = (w.k, w.n);
    assert!(k > 0 && x.len().is_multiple_of(k), "rows of {k} expected");
    let m = x.len() / k;
    assert_eq!(out.len(), m * n, "output is not {m} x {n}");
    #[cfg(target_arch = "x86_64")]
    // SAFETY: AVX-512 F is present (asserted above); the slices' lengths were checked
    // against m, k and n, and the kernel reads x[..m*k], the padded panels and writes
    // out[..m*n] only.
    unsafe {
        avx512::product(x.as_ptr(), m, w, out.as_mut_ptr())
    }
}

/// The patch embedding's product read in place: `out[r, :] = patch(first + r) W + b` for
/// the non-overlapping `ph x pw` patches of `x` (`[b, c, h, w]`), patches in row-major
/// grid order, each patch's values in the kernel's (channel, row, column) order. The same
/// sums in the same order as [`dense`] over the patches copied into rows, without the
/// copy (4.8 MB a clip at 8 frames: ~0.1 ms, and ~8% of the tiny test model's clip).
///
/// Panics when the CPU lacks AVX-512 ([`available`]) or the sizes disagree.
pub fn patch_dense(
    x: &[f32],
    shape: [usize; 4],
    patch: [usize; 2],
    first: usize,
    w: &PackedWeights,
    out: &mut [f32],
) {
    assert!(available(), "dense kernel needs AVX-512");
    let [b, c, h, wd] = shape;
    let [ph, pw] = patch;
    assert!(
        ph > 0 && pw > 0 && h % ph == 0 && wd % pw == 0,
        "{patch:?} does not tile {shape:?}"
    );
    assert_eq!(w.k, c * ph * pw, "patches of {} values expected", w.k);
    assert_eq!(x.len(), b * c * h * wd, "input is not {shape:?}");
    let m = out.len() / w.n;
    assert_eq!(out.len(), m * w.n, "output is not rows of {}", w.n);
    assert!(
        first + m <= b * (h / ph) * (wd / pw),
        "patches {first}..{} of {shape:?}",
        first + m
    );
    #[cfg(target_arch = "x86_64")]
    // SAFETY: AVX-512 F is present (asserted above); every patch read lies in x (the
    // patch numbers were checked against the grid, the grid against x's length), and the
    // kernel writes out[..m*n] only.
    unsafe {
        avx512::patch_product(x.as_ptr(), shape, patch, first, m, w, out.as_mut_ptr())
    }
}

#[cfg(target_arch = "x86_64")]
pub(crate) mod avx512 {
    use super::{PackedWeights, MR, NR};
    use std::arch::x86_64::*;

    /// `$tile::<R>(args)` for the `R` (1 to [`MR`]) that `$rows` holds: the tiles are
    /// compiled per row count so their accumulators stay in registers.
    macro_rules! by_rows {
        ($rows:expr, $tile:ident($($arg:expr),*)) => {
            match $rows {
                12 => $tile::<12>($($arg),*),
                11 => $tile::<11>($($arg),*),
                10 => $tile::<10>($($arg),*),
                9 => $tile::<9>($($arg),*),
                8 => $tile::<8>($($arg),*),
                7 => $tile::<7>($($arg),*),
                6 => $tile::<6>($($arg),*),
                5 => $tile::<5>($($arg),*),
                4 => $tile::<4>($($arg),*),
                3 => $tile::<3>($($arg),*),
                2 => $tile::<2>($($arg),*),
                _ => $tile::<1>($($arg),*),
            }
        };
    }
    pub(crate) use by_rows;

    /// Every tile of an `m`-row product by `w`: `f(first_row, rows, panel, bias, out,
    /// cols)`, `out` at the tile's first result. Panel outer, so one panel (k x 128
    /// bytes) stays in L2 while the row blocks stream past it.
    #[inline(always)]
    unsafe fn each_tile(
        m: usize,
        w: &PackedWeights,
        out: *mut f32,
        mut f: impl FnMut(usize, usize, *const f32, *const f32, *mut f32, usize),
    ) {
        let (k, n) = (w.k, w.n);
        for p in 0..n.div_ceil(NR) {
            let cols = (n - p * NR).min(NR);
            let panel = w.panels.as_ptr().add(p * k * 2) as *const f32;
            let bias = w.bias.as_ptr().add(p * 2) as *const f32;
            let mut r = 0;
            while r < m {
                let rows = (m - r).min(MR);
                f(r, rows, panel, bias, out.add(r * n + p * NR), cols);
                r += rows;
            }
        }
    }

    #[target_feature(enable = "avx512f")]
    pub unsafe fn product(x: *const f32, m: usize, w: &PackedWeights, out: *mut f32) {
        let (k, n) = (w.k, w.n);
        each_tile(m, w, out, |r, rows, panel, bias, c, cols| {
            by_rows!(rows, tile(x.add(r * k), k, panel, bias, c, n, cols))
        })
    }

    #[target_feature(enable = "avx512f")]
    #[inline]
    unsafe fn tile<const R: usize>(
        x: *const f32,
        k: usize,
        w: *const f32,
        bias: *const f32,
        c: *mut f32,
        ldc: usize,
        cols: usize,
    ) {
        let (a0, a1) = ([_mm512_load_ps(bias); R], [_mm512_load_ps(bias.add(16)); R]);
        accumulate(x, k, w, a0, a1, c, ldc, cols)
    }

    /// `a0`/`a1` (columns 0-15 / 16-31 of `R` rows) plus `R` rows of `k` values (`k`
    /// apart, one broadcast per row and step) times a 32-column panel (`k` rows of 32),
    /// stored into `c`: the register tile every product here runs.
    #[target_feature(enable = "avx512f")]
    #[inline]
    #[allow(clippy::too_many_arguments)]
    pub(crate) unsafe fn accumulate<const R: usize>(
        rows: *const f32,
        k: usize,
        panel: *const f32,
        mut a0: [__m512; R],
        mut a1: [__m512; R],
        c: *mut f32,
        ldc: usize,
        cols: usize,
    ) {
        for kk in 0..k {
            let p0 = _mm512_loadu_ps(panel.add(kk * NR));
            let p1 = _mm512_loadu_ps(panel.add(kk * NR + 16));
            for r in 0..R {
                let v = _mm512_set1_ps(*rows.add(r * k + kk));
                a0[r] = _mm512_fmadd_ps(v, p0, a0[r]);
                a1[r] = _mm512_fmadd_ps(v, p1, a1[r]);
            }
        }
        store(&a0, &a1, c, ldc, cols)
    }

    /// A tile's `R` rows of `cols` (<= 32) results into `c`, rows `ldc` apart.
    #[target_feature(enable = "avx512f")]
    #[inline]
    pub(crate) unsafe fn store<const R: usize>(
        a0: &[__m512; R],
        a1: &[__m512; R],
        c: *mut f32,
        ldc: usize,
        cols: usize,
    ) {
        if cols == NR {
            for r in 0..R {
                _mm512_storeu_ps(c.add(r * ldc), a0[r]);
                _mm512_storeu_ps(c.add(r * ldc + 16), a1[r]);
            }
        } else {
            let m0: __mmask16 = ((1u32 << cols.min(16)) - 1) as u16;
            let m1: __mmask16 = ((1u32 << cols.saturating_sub(16)) - 1) as u16;
            for r in 0..R {
                _mm512_mask_storeu_ps(c.add(r * ldc), m0, a0[r]);
                _mm512_mask_storeu_ps(c.add(r * ldc + 16), m1, a1[r]);
            }
        }
    }

    /// Where patches lie in a `[b, c, h, w]` image.
    struct Grid {
        c: usize,
        ph: usize,
        pw: usize,
        h: usize,
        w: usize,
        gh: usize,
        gw: usize,
    }

    impl Grid {
        /// Offset of patch `p`'s first value (channel 0, top-left).
        fn start(&self, p: usize) -> usize {
            let (bi, gy, gx) = (p / (self.gh * self.gw), p / self.gw % self.gh, p % self.gw);
            ((bi * self.c * self.h) + gy * self.ph) * self.w + gx * self.pw
        }
    }

    /// [`product`] with row `first + r` read as patch `first + r` of the image `x`.
    #[target_feature(enable = "avx512f")]
    pub unsafe fn patch_product(
        x: *const f32,
        [_, c, h, w]: [usize; 4],
        [ph, pw]: [usize; 2],
        first: usize,
        m: usize,
        wt: &PackedWeights,
        out: *mut f32,
    ) {
        let g = Grid {
            c,
            ph,
            pw,
            h,
            w,
            gh: h / ph,
            gw: w / pw,
        };
        let n = wt.n;
        each_tile(m, wt, out, |r, rows, panel, bias, c, cols| {
            let at = |i: usize| x.add(g.start(first + r + i));
            by_rows!(
                rows,
                patch_tile(std::array::from_fn(at), &g, panel, bias, c, n, cols)
            )
        })
    }

    /// [`tile`] with each row a patch: `c * ph` runs of `pw` contiguous values, run
    /// (channel, row) one image plane or one image row from the last.
    #[target_feature(enable = "avx512f")]
    #[inline]
    unsafe fn patch_tile<const R: usize>(
        rows: [*const f32; R],
        g: &Grid,
        w: *const f32,
        bias: *const f32,
        c: *mut f32,
        ldc: usize,
        cols: usize,
    ) {
        let mut a0 = [_mm512_load_ps(bias); R];
        let mut a1 = [_mm512_load_ps(bias.add(16)); R];
        let mut kk = 0;
        for ci in 0..g.c {
            for ky in 0..g.ph {
                let off = (ci * g.h + ky) * g.w;
                for kx in 0..g.pw {
                    let w0 = _mm512_load_ps(w.add(kk * NR));
                    let w1 = _mm512_load_ps(w.add(kk * NR + 16));
                    for r in 0..R {
                        let xv = _mm512_set1_ps(*rows[r].add(off + kx));
                        a0[r] = _mm512_fmadd_ps(xv, w0, a0[r]);
                        a1[r] = _mm512_fmadd_ps(xv, w1, a1[r]);
                    }
                    kk += 1;
                }
            }
        }
        store(&a0, &a1, c, ldc, cols)
    }
}

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
            self.weights.k, self.weights.n, self.out_axes
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
                OutAxis::Columns => D::from(self.weights.n),
            })
            .collect()
    }
}

impl EvalOp for Dense {
    op_out_of_plan!();

    fn eval(&self, _ctx: &EvalContext, inputs: TVec<TValue>) -> TractResult<TVec<TValue>> {
        let x = args_1!(inputs);
        let (k, n) = (self.weights.k, self.weights.n);
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
    let k = w.k;
    split_rows(x.len() / k, k, w.n, out, |first, o| {
        dense(&x[first * k..][..o.len() / w.n * k], w, o)
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
        let rows: TDim = inputs[0].shape.iter().product::<TDim>() / self.weights.k as i64;
        let macs = rows * (self.weights.k * self.weights.n) as i64;
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
            self.patch, self.weights.k, self.weights.n
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
            c * ph * pw == self.weights.k && h % ph == 0 && w % pw == 0,
            "patch embedding: input {shape:?} does not tile into {ph}x{pw} patches of {} values",
            self.weights.k
        );
        let rows = b * (h / ph) * (w / pw);
        let mut out = Tensor::zero::<f32>(&[b, rows / b, self.weights.n])?;
        let x = x.try_as_plain_ram()?;
        let x = x.as_slice::<f32>()?;
        let mut out_ram = out.try_as_plain_ram_mut()?;
        split_rows(
            rows,
            self.weights.k,
            self.weights.n,
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
            self.weights.n.to_dim()
        ])))
    }

    fn cost(&self, inputs: &[&TypedFact]) -> TractResult<TVec<(Cost, TDim)>> {
        let s = &inputs[0].shape;
        let pixels: TDim = s.iter().product();
        Ok(tvec!((
            Cost::FMA(DatumType::F32),
            pixels * self.weights.n as i64
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
    let single_use = |o: OutletId| super::used_once(model, o);
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

    fn reference(x: &[f32], w: &[f32], b: Option<&[f32]>, k: usize, n: usize) -> Vec<f64> {
        let m = x.len() / k;
        let mut out = vec![0f64; m * n];
        for r in 0..m {
            for c in 0..n {
                let s: f64 = (0..k)
                    .map(|i| x[r * k + i] as f64 * w[i * n + c] as f64)
                    .sum();
                out[r * n + c] = s + b.map_or(0.0, |b| b[c] as f64);
            }
        }
        out
    }

    /// Every row tail (1..=12 rows left for the last block), column tails inside a panel
    /// and across panels, depths from 1, with and without a bias.
    #[test]
    fn kernel_matches_the_definition_on_every_tail() {
        if !available() {
            eprintln!("no AVX-512 on this CPU: the kernel is not used here");
            return;
        }
        for (m, k, n) in [
            (1, 1, 1),
            (13, 7, 5),
            (25, 64, 33),
            (12, 9, 48),
            (30, 100, 17),
            (7, 3, 64),
        ] {
            for with_bias in [false, true] {
                let x = values(m * k, m as u64);
                let w = values(k * n, n as u64 + 100);
                let b = values(n, 7);
                let b = with_bias.then_some(&b[..]);
                let pw = PackedWeights::new(&w, k, n, b);
                let mut got = vec![f32::NAN; m * n];
                dense(&x, &pw, &mut got);
                for (i, (g, want)) in got.iter().zip(reference(&x, &w, b, k, n)).enumerate() {
                    assert!(
                        (*g as f64 - want).abs() <= 1e-5 * (1.0 + want.abs()),
                        "{m}x{k}x{n} bias {with_bias}, element {i}: {g} vs {want}"
                    );
                }
            }
        }
    }

    /// Split over threads, each element is still computed by one kernel call in the same
    /// order: the same bits as on one thread.
    #[test]
    fn threads_do_not_change_the_result() {
        if !available() {
            eprintln!("no AVX-512 on this CPU: the kernel is not used here");
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

    /// Copy the non-overlapping `ph x pw` patches of `x` (`[b, c, h, w]`) into rows of
    /// `c * ph * pw` (channel, then patch row, then column: the kernel's OIHW order), patches
    /// in row-major grid order from patch number `first` on, as many as `rows` holds.
    fn patch_rows(
        x: &[f32],
        [b, c, h, w]: [usize; 4],
        [ph, pw]: [usize; 2],
        first: usize,
        rows: &mut [f32],
    ) {
        let (gh, gw) = (h / ph, w / pw);
        let k = c * ph * pw;
        let count = (b * gh * gw).saturating_sub(first);
        for (r, row) in (first..).zip(rows.chunks_exact_mut(k).take(count)) {
            let (bi, gy, gx) = (r / (gh * gw), r / gw % gh, r % gw);
            for ci in 0..c {
                for ky in 0..ph {
                    let src = ((bi * c + ci) * h + gy * ph + ky) * w + gx * pw;
                    row[(ci * ph + ky) * pw..][..pw].copy_from_slice(&x[src..][..pw]);
                }
            }
        }
    }

    /// Patches read where they lie give the bits of the copied rows through [`dense`]:
    /// a range of patches starting mid-grid, a row tail, a column tail, non-square patches.
    #[test]
    fn patches_read_in_place_match_copied_rows() {
        if !available() {
            eprintln!("no AVX-512 on this CPU: the kernel is not used here");
            return;
        }
        let ([b, c, h, w], [ph, pw]) = ([3, 3, 12, 20], [4, 5]);
        let (k, n) = (c * ph * pw, 37);
        let x = values(b * c * h * w, 7);
        let pw_ = PackedWeights::new(&values(k * n, 8), k, n, Some(&values(n, 9)));
        let patches = b * (h / ph) * (w / pw);
        for (first, count) in [(0, patches), (5, 17), (patches - 1, 1)] {
            let mut rows = vec![0f32; count * k];
            patch_rows(&x, [b, c, h, w], [ph, pw], first, &mut rows);
            let mut want = vec![0f32; count * n];
            dense(&rows, &pw_, &mut want);
            let mut got = vec![f32::NAN; count * n];
            patch_dense(&x, [b, c, h, w], [ph, pw], first, &pw_, &mut got);
            assert!(
                want.iter()
                    .zip(&got)
                    .all(|(a, b)| a.to_bits() == b.to_bits()),
                "patches {first}..{}",
                first + count
            );
        }
    }

    /// Each row is one patch in grid order, its values in the kernel's (channel, row,
    /// column) order; non-square patches and grids.
    #[test]
    fn patch_rows_follow_the_kernel_layout() {
        let (b, c, h, w, ph, pw) = (2, 3, 6, 10, 3, 5);
        let x: Vec<f32> = (0..b * c * h * w).map(|i| i as f32).collect();
        let (gh, gw) = (h / ph, w / pw);
        let k = c * ph * pw;
        let mut rows = vec![f32::NAN; b * gh * gw * k];
        // In two parts, as two threads copy them.
        let (head, tail) = rows.split_at_mut(5 * k);
        patch_rows(&x, [b, c, h, w], [ph, pw], 0, head);
        patch_rows(&x, [b, c, h, w], [ph, pw], 5, tail);
        for bi in 0..b {
            for gy in 0..gh {
                for gx in 0..gw {
                    let row = &rows[((bi * gh + gy) * gw + gx) * k..][..k];
                    for ci in 0..c {
                        for ky in 0..ph {
                            for kx in 0..pw {
                                let want = x[((bi * c + ci) * h + gy * ph + ky) * w + gx * pw + kx];
                                assert_eq!(row[(ci * ph + ky) * pw + kx], want);
                            }
                        }
                    }
                }
            }
        }
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
            let diff = crate::inference::ops::max_abs_diff(&a[0], &b[0]);
            assert!(diff < 1e-5, "{expr}: differs from tract by {diff}");
        }
    }
}
