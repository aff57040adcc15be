//! The graph rewrites: which patterns become nvr-edge's ops, in the decluttered graph
//! ([`fuse`], before tract's optimiser turns them into its own kernels) and in the
//! optimised plan ([`speed_up`]).

use tract_onnx::prelude::*;

use super::attention::attention_chain;
use super::channel_op::channel_op_for;
use super::conv3x3::Conv3x3;
use super::dense::{dense_chain, patch_embed_chain};
use super::hardswish::HardSwish;
use super::pad::RowPad;
use super::pointwise::Pointwise;
use super::prelu::prelu_chain;
use super::quick_gelu::{quick_gelu_chain, QuickGelu};
use super::resize::PlannedResize;
use super::softmax::RowSoftmax;

/// A chain of nodes to replace by one op: its inputs, the op, a name for it, and the last
/// node of the chain (whose output the op's takes over).
struct Fusion {
    inputs: TVec<OutletId>,
    op: Box<dyn TypedOp>,
    suffix: &'static str,
    last: usize,
}

/// The fusion whose chain ends at (or, for the dense forms, starts at) `node`, if any; the
/// first matcher that takes it wins.
fn fusion_at(model: &TypedModel, node: usize) -> Option<Fusion> {
    let one = |x: OutletId, op: Box<dyn TypedOp>, suffix, last| Fusion {
        inputs: tvec!(x),
        op,
        suffix,
        last,
    };
    if let Some((x, alpha)) = quick_gelu_chain(model, node) {
        return Some(one(x, Box::new(QuickGelu { alpha }), "quick_gelu", node));
    }
    if let Some((x, op, last)) = HardSwish::chain(model, node) {
        return Some(one(x, Box::new(op), "hard_swish", last));
    }
    if let Some((x, op)) = Conv3x3::chain(model, node) {
        return Some(one(x, Box::new(op), "conv3x3", node));
    }
    if let Some((x, op, last)) = Pointwise::chain(model, node) {
        return Some(one(x, Box::new(op), "pointwise", last));
    }
    // The dense forms also take the node after the match (bias add, axis move) with them.
    if let Some((x, op, last)) = dense_chain(model, node) {
        return Some(one(x, Box::new(op), "dense", last));
    }
    if let Some((x, op, last)) = patch_embed_chain(model, node) {
        return Some(one(x, Box::new(op), "patch_embed", last));
    }
    if let Some((x, c, op)) = prelu_chain(model, node) {
        return Some(Fusion {
            inputs: tvec!(x, c),
            op: Box::new(op),
            suffix: "prelu",
            last: node,
        });
    }
    if let Some((qkv, op)) = attention_chain(model, node) {
        return Some(Fusion {
            inputs: qkv.into_iter().collect(),
            op: Box::new(op),
            suffix: "attention",
            last: node,
        });
    }
    None
}

/// Fuse patterns in a decluttered model (before tract's optimiser, which would otherwise
/// turn them into its own kernels first); returns how many were fused.
pub fn fuse(model: &mut TypedModel) -> TractResult<usize> {
    let mut fused = 0;
    for node in model.eval_order()? {
        let Some(f) = fusion_at(model, node) else {
            continue;
        };
        let name = format!("{}.{}", model.nodes[node].name, f.suffix);
        let mut patch = TypedModelPatch::default();
        let mut inputs = tvec!();
        for x in f.inputs {
            inputs.push(patch.tap_model(model, x)?);
        }
        let out = patch.wire_node(name, f.op, &inputs)?;
        patch.shunt_outside(model, OutletId::new(f.last, 0), out[0])?;
        patch.apply(model)?;
        fused += 1;
    }
    Ok(fused)
}

/// Swap ops in an optimised model for faster equivalents, node for node (per-channel ops,
/// row softmax, Resize with its plans made once, constant padding of the innermost axes);
/// returns how many were swapped. Runs after tract's optimiser so its own passes (which
/// know nothing of our ops) are done.
pub fn speed_up(model: &mut TypedModel) -> TractResult<usize> {
    let mut swapped = 0;
    for id in 0..model.nodes.len() {
        if let Some(op) = swap_for(model, &model.nodes[id])? {
            model.nodes[id].op = op;
            swapped += 1;
        }
    }
    Ok(swapped)
}

/// The op that can stand in for `node`'s, if any.
fn swap_for(model: &TypedModel, node: &TypedNode) -> TractResult<Option<Box<dyn TypedOp>>> {
    if let Some(op) = channel_op_for(model, node) {
        return Ok(Some(Box::new(op)));
    }
    if let Some(op) = PlannedResize::for_node(model, node) {
        return Ok(Some(Box::new(op)));
    }
    if let Some(op) = RowPad::for_node(model, node) {
        return Ok(Some(Box::new(op)));
    }
    Ok(RowSoftmax::for_node(model, node)?.map(|op| Box::new(op) as _))
}
