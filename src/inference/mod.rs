//! The models, through tract: X-CLIP action recognition (tokenizer, frame preprocessing,
//! the two ONNX graphs, prompt categories, cached text embeddings, the start-up sequence
//! and the bounded inference service), the identity models (`identity/`), graph loading
//! and threads (`onnx.rs`) and nvr-edge's tract ops (`ops/`). Model contracts:
//! `models/README.md`; design notes: `docs/design/xclip.md`, `docs/design/identity.md`.

pub mod identity;
pub mod onnx;
pub mod ops;
pub mod xclip;

pub use xclip::{
    Category, Classification, ClipRequest, ClipResult, ClipTokenizer, Manifest, ModelInfo,
    PreprocessError, PreprocessParams, Preprocessor, PromptSet, Risk, ServiceConfig, ServiceStats,
    WhenFull, XclipError, XclipModel, XclipService,
};
