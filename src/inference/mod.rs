//! The models, through tract: X-CLIP action recognition (tokenizer, frame preprocessing,
//! the two ONNX graphs, prompt categories, cached text embeddings, the start-up sequence
//! and the bounded inference service), the identity models (`identity/`), graph loading
//! and threads (`onnx.rs`) and nvr-edge's tract ops (`ops/`). Model contracts:
//! `models/README.md`; design notes: `docs/design/xclip.md`, `docs/design/identity.md`.

pub mod identity;
pub mod onnx;
pub mod ops;
pub mod preprocess;
pub mod prompts;
pub mod resample;
pub mod service;
pub mod startup;
pub mod text_cache;
pub mod tokenizer;
pub mod xclip;

pub use preprocess::{PreprocessError, PreprocessParams, Preprocessor};
pub use prompts::{Category, Classification, PromptSet, Risk};
pub use service::{ClipRequest, ClipResult, ServiceConfig, ServiceStats, WhenFull, XclipService};
pub use tokenizer::ClipTokenizer;
pub use xclip::{Manifest, ModelInfo, XclipModel};

impl From<onnx::LoadError> for XclipError {
    fn from(e: onnx::LoadError) -> Self {
        XclipError::Load {
            path: e.path,
            message: e.message,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum XclipError {
    /// A model file is missing, unreadable, not ONNX, or not the expected graph.
    #[error("{path}: {message}")]
    Load { path: String, message: String },
    #[error("{path}: {message}")]
    Manifest { path: String, message: String },
    #[error("inference: {0}")]
    Run(String),
    #[error("bad request: {0}")]
    BadRequest(String),
    #[error(transparent)]
    Preprocess(#[from] PreprocessError),
    #[error("inference queue is full")]
    Busy,
    #[error("replaced by a newer clip of the same camera")]
    Replaced,
    #[error("inference service stopped")]
    Stopped,
}
