//! Graph-matching helpers the rewrites share: what a node is, and whether an outlet feeds
//! exactly one node (so a chain can be fused without changing anything else).

use tract_onnx::prelude::*;
use tract_onnx::tract_core::ops::binary::TypedBinOp;
use tract_onnx::tract_core::ops::einsum::EinSum;
use tract_onnx::tract_core::ops::math::Mul;

/// An einsum whose axes read as `pattern` up to the letters' names.
pub(crate) fn einsum_is(model: &TypedModel, node: usize, pattern: &str) -> bool {
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

/// Whether `o` feeds exactly one node and is not a graph output: a fused chain may drop
/// it then.
pub(crate) fn used_once(model: &TypedModel, o: OutletId) -> bool {
    model.outlet_successors(o).len() == 1
        && model.output_outlets().is_ok_and(|outs| !outs.contains(&o))
}

pub(crate) fn is_mul(model: &TypedModel, node: usize) -> bool {
    model.nodes[node]
        .op_as::<TypedBinOp>()
        .is_some_and(|b| b.0.downcast_ref::<Mul>().is_some())
}
