//! What the in-place ops share: running a kernel over an input's rows or channel blocks
//! on tract's threads, and the facts and axes of an op whose output is its input's shape.

use tract_onnx::prelude::*;
use tract_onnx::tract_hir::internal::*;

/// `input` with `f` applied to each `row`-long slice in place, the slices spread over the
/// tract executor's threads.
pub(crate) fn rows_in_place(
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

/// `x` with `f(rows, v, inner)` applied in place, `v` one value per index of `axis` (`what`
/// names the op in the error when they do not match), rows split over the threads.
pub(crate) fn per_channel_in_place(
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

/// One axis per input dimension, each the same in every input and the output: the
/// mapping of an op that keeps its input's layout.
pub(crate) fn row_axes_mapping(rank: usize, inputs: usize) -> TractResult<AxesMapping> {
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

/// The fact of input `i`, without its value: the output of an op shaped like its input.
/// `f32_only`: the op computes f32 only (the graph rewrite checked; this says so again).
pub(crate) fn like_input(
    inputs: &[&TypedFact],
    i: usize,
    f32_only: bool,
) -> TractResult<TVec<TypedFact>> {
    ensure!(!f32_only || inputs[i].datum_type == DatumType::F32);
    Ok(tvec!(inputs[i].without_value()))
}
