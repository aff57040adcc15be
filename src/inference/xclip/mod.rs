//! X-CLIP action recognition: the two graphs and the built-in placeholder (`model.rs`),
//! the tokenizer, Pillow-exact frame preprocessing (`preprocess.rs`, `resample.rs`),
//! prompt categories and results (`prompts.rs`), cached text embeddings
//! (`text_cache.rs`), the start-up sequence `run` and the self-test share (`startup.rs`)
//! and the bounded inference service (`service.rs`).

pub mod model;
pub mod preprocess;
pub mod prompts;
pub mod resample;
pub mod service;
pub mod startup;
pub mod text_cache;
pub mod tokenizer;

pub use model::{builtin_parity, seeded_values, Manifest, ModelInfo, XclipModel};
pub use preprocess::{PreprocessError, PreprocessParams, Preprocessor};
pub use prompts::{Category, Classification, PromptSet, Risk};
pub use service::{ClipRequest, ClipResult, ServiceConfig, ServiceStats, WhenFull, XclipService};
pub use tokenizer::ClipTokenizer;

use crate::inference::onnx;

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
