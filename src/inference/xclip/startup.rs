//! X-CLIP's start-up sequence, written once for `run` and the self-test: load the model
//! `[xclip]` names (or the built-in placeholder), embed the configured prompts through
//! the cache in the events database, start the bounded inference service. Each step's
//! failure says which step it was, so `run` logs it and the self-test reports the row.

use std::sync::Arc;
use std::time::Instant;

use super::text_cache::{configured_prompts, EmbedStats};
use super::{ModelInfo, PromptSet, ServiceConfig, XclipError, XclipModel, XclipService};
use crate::config::Config;

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("X-CLIP model not loaded")]
    Model(#[source] XclipError),
    #[error("prompt text embeddings failed")]
    Prompts(#[source] XclipError),
    #[error("X-CLIP service did not start")]
    Service(#[source] XclipError),
}

/// A loaded model.
pub struct Loaded {
    pub model: Arc<XclipModel>,
}

/// A loaded model with its prompts embedded: ready to serve.
pub struct Prepared {
    pub model: Arc<XclipModel>,
    pub prompts: Arc<PromptSet>,
    pub embeds: Arc<Vec<f32>>,
    /// How many embeddings came from the cache.
    pub stats: EmbedStats,
    /// Time the embedding step took.
    pub embed_ms: f64,
}

impl Loaded {
    /// Step 1: the model of `[xclip] models_dir`, or the built-in placeholder.
    pub fn load(cfg: &Config) -> Result<Self, StartError> {
        let model = XclipModel::load(cfg.xclip.models_dir.as_deref()).map_err(StartError::Model)?;
        Ok(Loaded {
            model: Arc::new(model),
        })
    }

    pub fn info(&self) -> &ModelInfo {
        &self.model.info
    }

    /// Step 2: the configured prompts' embeddings, through the cache (`now_secs` stamps
    /// the rows it adds).
    pub fn prepare(self, cfg: &Config, now_secs: i64) -> Result<Prepared, StartError> {
        let t0 = Instant::now();
        let (prompts, embeds, stats) =
            configured_prompts(cfg, &self.model, now_secs).map_err(StartError::Prompts)?;
        Ok(Prepared {
            model: self.model,
            prompts: Arc::new(prompts),
            embeds: Arc::new(embeds),
            stats,
            embed_ms: t0.elapsed().as_secs_f64() * 1e3,
        })
    }
}

impl Prepared {
    /// Step 3: a service over the prepared model and prompts (`run` passes the configured
    /// one; the self-test a larger queue).
    pub fn serve(&self, config: ServiceConfig) -> Result<XclipService, StartError> {
        XclipService::start(
            self.model.clone(),
            self.prompts.clone(),
            self.embeds.clone(),
            config,
        )
        .map_err(StartError::Service)
    }
}

/// The whole sequence as `run` uses it: the configured service and its model's info.
pub fn start(
    cfg: &Config,
    now_secs: i64,
) -> Result<(XclipService, ModelInfo, EmbedStats), StartError> {
    let loaded = Loaded::load(cfg)?;
    let info = loaded.info().clone();
    let prepared = loaded.prepare(cfg, now_secs)?;
    let svc = prepared.serve(ServiceConfig::from_section(&cfg.xclip))?;
    Ok((svc, info, prepared.stats))
}
