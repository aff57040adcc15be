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
//!   through `nvr_linalg::attention`).
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
//! - **3x3 convolutions** with stride 1 and one pixel of padding (NanoDet's, PP-OCR's) on
//!   AVX2 and AVX-512 CPUs: [`conv3x3::Conv3x3`], the 1x1 kernels' tiles over nine shifted
//!   views of a zero-bordered copy of the input, fused in the decluttered graph.
//!
//! - **Resize** with its plans made once ([`resize`]) and **constant padding** of the two
//!   innermost axes ([`pad`]), swapped in the optimised plan: NanoDet's and PP-OCR's.
//!
//! One op per file (its tract `Op`, its chain matcher); the rewrites that put them in a
//! graph are `fuse.rs`, the helpers the in-place ops share `inplace.rs`, the graph-matching
//! helpers `pattern.rs`. The kernels they run are `nvr_linalg`'s: no `unsafe` here.
//!
//! All compute in f32 with the same formula as PyTorch; the parity tests against the
//! PyTorch fixtures (1e-4) cover them, and the unit tests (`tests.rs` and each op's file)
//! compare them with tract's own ops on random inputs.

mod attention;
mod channel_op;
pub mod conv3x3;
pub mod dense;
mod fuse;
pub mod hardswish;
mod inplace;
mod layer_norm;
pub mod pad;
mod pattern;
pub mod pointwise;
mod prelu;
mod quick_gelu;
pub mod resize;
mod softmax;

pub use attention::Attention;
pub use channel_op::ChannelOp;
pub use fuse::{fuse, speed_up};
pub use layer_norm::LayerNorm;
pub use prelu::ChannelPrelu;
pub use quick_gelu::QuickGelu;
pub use softmax::RowSoftmax;

/// tract's ONNX parser with nvr-edge's fused ops in place of tract's expansions.
pub fn onnx() -> tract_onnx::Onnx {
    let mut onnx = tract_onnx::onnx();
    layer_norm::install(&mut onnx.op_register);
    onnx
}

#[cfg(test)]
mod tests;
