//! Prompt text embeddings, computed once per (text graph, prompt) and kept in SQLite, so
//! a restart or a config reload only runs the text graph for prompts it has not seen.

use rusqlite::{params, Connection, OptionalExtension};
use serde::Serialize;

use super::model::XclipModel;
use super::prompts::PromptSet;
use super::tokenizer::ClipTokenizer;
use super::XclipError;
use crate::store::{from_blob, to_blob};

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct EmbedStats {
    pub cached: usize,
    pub computed: usize,
    pub truncated: usize,
    /// False when the database could not be opened: nothing was cached or stored.
    pub cache_available: bool,
}

fn db_err(e: rusqlite::Error) -> XclipError {
    XclipError::Run(format!("text embedding cache: {e}"))
}

/// Embeddings [P, D] of `prompts`, from the cache where present (when `conn` is given),
/// computed by the text graph otherwise and then stored.
pub fn prompt_embeddings(
    model: &XclipModel,
    tokenizer: &ClipTokenizer,
    prompts: &[String],
    conn: Option<&Connection>,
    now_secs: i64,
) -> Result<(Vec<f32>, EmbedStats), XclipError> {
    let d = model.manifest.embed_dim;
    let key = &model.info.text_sha256;
    let mut out = vec![0f32; prompts.len() * d];
    let mut missing = Vec::new();
    let mut stats = EmbedStats {
        cache_available: conn.is_some(),
        ..EmbedStats::default()
    };
    for (i, p) in prompts.iter().enumerate() {
        let hit: Option<Vec<u8>> = match conn {
            Some(c) => c
                .query_row(
                    "SELECT vector FROM text_embedding_cache WHERE model_sha256 = ?1 AND prompt = ?2 AND dim = ?3",
                    params![key, p, d as i64],
                    |r| r.get(0),
                )
                .optional()
                .map_err(db_err)?,
            None => None,
        };
        match hit.filter(|b| b.len() == d * 4) {
            Some(b) => {
                out[i * d..(i + 1) * d].copy_from_slice(&from_blob(&b));
                stats.cached += 1;
            }
            None => missing.push(i),
        }
    }
    if !missing.is_empty() {
        let texts: Vec<&str> = missing.iter().map(|&i| prompts[i].as_str()).collect();
        let enc = tokenizer.encode(&texts);
        stats.truncated = enc.truncated;
        let emb = model.text_embeddings(&enc)?;
        for (k, &i) in missing.iter().enumerate() {
            out[i * d..(i + 1) * d].copy_from_slice(&emb[k * d..(k + 1) * d]);
        }
        stats.computed = missing.len();
        if let Some(c) = conn {
            let tx = c.unchecked_transaction().map_err(db_err)?;
            for (k, &i) in missing.iter().enumerate() {
                tx.execute(
                    "INSERT OR REPLACE INTO text_embedding_cache (model_sha256, prompt, dim, vector, created_at) \
                     VALUES (?1, ?2, ?3, ?4, ?5)",
                    params![key, prompts[i], d as i64, to_blob(&emb[k * d..(k + 1) * d]), now_secs],
                )
                .map_err(db_err)?;
            }
            tx.commit().map_err(db_err)?;
        }
    }
    Ok((out, stats))
}

/// The configured prompt set and its embeddings, through the cache in the configured
/// database (when it opens): what `run` and the self-test both start from.
pub fn configured_prompts(
    cfg: &crate::config::Config,
    model: &XclipModel,
    now_secs: i64,
) -> Result<(PromptSet, Vec<f32>, EmbedStats), XclipError> {
    let prompts = PromptSet::new(cfg.xclip.categories.clone());
    let conn = crate::store::open_in(&cfg.storage.data_dir).ok();
    let (embeds, stats) = prompt_embeddings(
        model,
        &ClipTokenizer::new(),
        &prompts.prompts,
        conn.as_ref(),
        now_secs,
    )?;
    Ok((prompts, embeds, stats))
}
