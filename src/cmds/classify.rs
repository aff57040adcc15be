//! `nvr-edge classify`: run X-CLIP on a handful of JPEG files and print the full result as
//! JSON (raw logits included), for field diagnostics and for checking a model against its
//! reference.

use std::path::PathBuf;
use std::sync::Arc;

use clap::Args;
use serde_json::json;

use nvr_edge::config::Config;
use nvr_edge::inference::xclip::text_cache::prompt_embeddings;
use nvr_edge::inference::{
    ClipRequest, ClipTokenizer, PromptSet, ServiceConfig, WhenFull, XclipError, XclipModel,
    XclipService,
};
use nvr_edge::ring::{FrameBatch, FrameFormat, FrameMeta};

#[derive(Debug, Args)]
pub struct ClassifyArgs {
    /// Model directory (xclip_text.onnx, xclip_video.onnx, manifest.json); default: the
    /// config's xclip.models_dir, else the built-in placeholder.
    #[arg(long)]
    models: Option<PathBuf>,
    /// JPEG frames, oldest first (sampled or repeated to the model's frame count).
    #[arg(long, num_args = 1.., required = true)]
    frames: Vec<PathBuf>,
    /// A file of prompts, one per line, instead of the configured categories.
    #[arg(long)]
    prompts: Option<PathBuf>,
    #[arg(long)]
    top_k: Option<usize>,
}

#[derive(Debug, thiserror::Error)]
pub enum ClassifyError {
    #[error("{path}: {message}")]
    Input { path: String, message: String },
    #[error(transparent)]
    Xclip(#[from] XclipError),
}

impl ClassifyError {
    pub fn exit_code(&self) -> u8 {
        match self {
            ClassifyError::Input { .. }
            | ClassifyError::Xclip(XclipError::Load { .. } | XclipError::Manifest { .. }) => 2,
            _ => 1,
        }
    }
}

pub fn run(args: &ClassifyArgs, cfg: &Config) -> Result<serde_json::Value, ClassifyError> {
    let input = |path: &PathBuf, message: String| ClassifyError::Input {
        path: path.display().to_string(),
        message,
    };
    let mut batch = FrameBatch::default();
    for (i, f) in args.frames.iter().enumerate() {
        let bytes = nvr_edge::fsio::read_regular(f, nvr_edge::fsio::MAX_IMAGE_BYTES)
            .map_err(|e| input(f, e.to_string()))?;
        // A header that claims more pixels than any frame is refused before decoding.
        nvr_edge::fsio::image_size_checked(f, &bytes).map_err(|e| input(f, e.to_string()))?;
        let meta = FrameMeta {
            seq: i as u64,
            ts_us: i as i64,
            width: 0,
            height: 0,
            format: FrameFormat::Jpeg,
        };
        batch.push(meta, &bytes);
    }
    let prompts = match &args.prompts {
        Some(p) => {
            let text = nvr_edge::fsio::read_regular_string(p, nvr_edge::fsio::MAX_CONFIG_BYTES)
                .map_err(|e| input(p, e.to_string()))?;
            let lines: Vec<String> = text
                .lines()
                .map(str::trim)
                .filter(|l| !l.is_empty() && !l.starts_with('#'))
                .map(String::from)
                .collect();
            if lines.is_empty() {
                return Err(input(p, "no prompts (one per line)".into()));
            }
            PromptSet::uncategorised(lines)
        }
        None => PromptSet::new(cfg.xclip.categories.clone()),
    };
    let dir = args.models.as_deref().or(cfg.xclip.models_dir.as_deref());
    let model = Arc::new(XclipModel::load(dir)?);
    let (embeds, _) = prompt_embeddings(&model, &ClipTokenizer::new(), &prompts.prompts, None, 0)?;
    let top_k = args.top_k.unwrap_or(cfg.xclip.top_k as usize).max(1);
    let svc = XclipService::start(
        model.clone(),
        Arc::new(prompts),
        Arc::new(embeds),
        ServiceConfig {
            workers: 1,
            queue: 1,
            when_full: WhenFull::Refuse,
            top_k,
            threads: cfg.xclip.threads as usize,
        },
    )?;
    let r = svc.classify(ClipRequest {
        camera: "cli".into(),
        frames: batch,
    })?;
    Ok(json!({ "result": r, "model": model.info }))
}
