//! Loading and running the two X-CLIP graphs with tract.
//!
//! A model directory holds `xclip_text.onnx`, `xclip_video.onnx` and `manifest.json`
//! (written by `models/export_xclip.py`). Without a directory, the tiny random-weight model
//! compiled into the binary is used: a placeholder that runs the real graphs end to end
//! but recognises nothing, and says so wherever it is reported.
//!
//! Loading checks each graph's input names, element types and shapes against the contract
//! (see `docs/design/xclip.md`) and names the file and the expectation when they differ,
//! so a wrong export fails at start with a sentence, not mid-run with a shape panic.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use tract_onnx::prelude::*;

use super::preprocess::PreprocessParams;
use super::tokenizer::{Encoded, CONTEXT};
use super::XclipError;
use crate::inference::onnx::{build, build_read, sha256_hex, Expect, Plan, Sha256Reader};

const TEXT_FILE: &str = "xclip_text.onnx";
const VIDEO_FILE: &str = "xclip_video.onnx";
const MANIFEST_FILE: &str = "manifest.json";

const BUILTIN_TEXT: &[u8] = include_bytes!("../../../models/xclip-tiny/xclip_text.onnx");
const BUILTIN_VIDEO: &[u8] = include_bytes!("../../../models/xclip-tiny/xclip_video.onnx");
/// `ModelInfo::source` of the model compiled into the binary.
pub const BUILTIN_SOURCE: &str = "built-in";
const BUILTIN_MANIFEST: &str = include_str!("../../../models/xclip-tiny/manifest.json");
// PyTorch's outputs for the built-in model (models/export_xclip.py): text embeddings of
// the default prompts and the video logits on `seeded_values(1234)`.
const BUILTIN_TEXT_EMBEDS: &[u8] =
    include_bytes!("../../../models/xclip-tiny/fixtures/text_embeds.npy");
const BUILTIN_LOGITS: &[u8] =
    include_bytes!("../../../models/xclip-tiny/fixtures/video_logits_seed1234.npy");

/// What `models/export_xclip.py` records about a model.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Manifest {
    pub name: String,
    /// `random` or `real`.
    pub weights: String,
    #[serde(default)]
    pub weights_source: String,
    #[serde(default)]
    pub source: String,
    pub num_frames: usize,
    pub image_size: usize,
    pub context_length: usize,
    pub embed_dim: usize,
    #[serde(default)]
    pub vocabulary: String,
    pub preprocess: PreprocessParams,
}

/// How a loaded model is described in reports.
#[derive(Debug, Clone, Serialize)]
pub struct ModelInfo {
    pub name: String,
    /// `built-in` or the directory it was loaded from.
    pub source: String,
    pub weights: String,
    /// True unless the weights are real: results mean nothing.
    pub placeholder: bool,
    /// sha256 of the text and video graphs, hex; keys the text-embedding cache.
    pub text_sha256: String,
    pub video_sha256: String,
    pub num_frames: usize,
    pub embed_dim: usize,
}

impl ModelInfo {
    /// One line for tables and logs.
    pub fn describe(&self) -> String {
        format!(
            "{} ({}), {} weights{}",
            self.name,
            self.source,
            self.weights,
            if self.placeholder {
                " - PLACEHOLDER, recognises nothing"
            } else {
                ""
            }
        )
    }
}

/// The seeded inputs of `models/seeded.py`, bit for bit (splitmix64 of 1..=n offset by
/// `seed`, mapped to [-2, 2)): golden fixtures are computed on them without committing
/// megabytes of pixel values.
pub fn seeded_values(seed: u64, n: usize) -> Vec<f32> {
    (1..=n as u64)
        .map(|i| {
            let mut z = seed.wrapping_add(i.wrapping_mul(0x9E37_79B9_7F4A_7C15));
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            z ^= z >> 31;
            (z >> 40) as f32 / 16_777_216.0 * 4.0 - 2.0
        })
        .collect()
}

/// How far this CPU's run of the built-in model is from PyTorch's: the largest absolute
/// difference of the video logits on the seeded input and PyTorch's text embeddings. It
/// checks the arithmetic where it runs (tract's kernels and nvr-edge's own ops, NEON on the
/// board, AVX2 or not on a PC): the export's parity is 1e-4 or better. `loaded` is used
/// when it is the built-in model already (no second load).
pub fn builtin_parity(loaded: &XclipModel) -> Result<f32, XclipError> {
    let npy = |name: &str, bytes: &[u8]| -> Result<Vec<f32>, XclipError> {
        npyz::NpyFile::new(bytes)
            .and_then(|f| f.into_vec::<f32>())
            .map_err(|e| XclipError::Manifest {
                path: format!("built-in {name}"),
                message: e.to_string(),
            })
    };
    let builtin;
    let model = if loaded.info.source == BUILTIN_SOURCE {
        loaded
    } else {
        builtin = XclipModel::load(None)?;
        &builtin
    };
    let m = &model.manifest;
    let px = seeded_values(1234, m.num_frames * 3 * m.image_size * m.image_size);
    let logits = model.logits(&px, &npy("text_embeds.npy", BUILTIN_TEXT_EMBEDS)?)?;
    let want = npy("video_logits_seed1234.npy", BUILTIN_LOGITS)?;
    if logits.len() != want.len() {
        return Err(XclipError::Run(format!(
            "{} logits for PyTorch's {}",
            logits.len(),
            want.len()
        )));
    }
    Ok(logits
        .iter()
        .zip(&want)
        .map(|(a, b)| (a - b).abs())
        .fold(0.0, f32::max))
}

/// Where a graph comes from: compiled in, or a file read straight into tract.
enum Graph {
    Static(&'static str, &'static [u8]),
    File(PathBuf),
}

impl Graph {
    /// The optimised graph and the sha256 of its file.
    fn build(&self, expect: &[Expect], outputs: usize) -> Result<(Plan, String), XclipError> {
        match self {
            Graph::Static(name, bytes) => {
                Ok((build(name, bytes, expect, outputs)?, sha256_hex(bytes)))
            }
            Graph::File(path) => {
                let shown = path.display().to_string();
                let io = |e: std::io::Error| XclipError::Load {
                    path: shown.clone(),
                    message: e.to_string(),
                };
                let file = std::fs::File::open(path).map_err(io)?;
                let mut file = Sha256Reader::new(std::io::BufReader::new(file));
                let plan = build_read(&shown, &mut file, expect, outputs)?;
                Ok((plan, file.hex()))
            }
        }
    }
}

/// Both graphs, optimised and ready; shareable across worker threads.
pub struct XclipModel {
    pub info: ModelInfo,
    pub manifest: Manifest,
    text: Plan,
    video: Plan,
}

impl XclipModel {
    /// Load from `dir`, or the built-in placeholder when `None`.
    ///
    /// One file at a time: each file's bytes are dropped once its graph is built, so a
    /// full-size model's peak while loading is one graph's worth of copies (file bytes,
    /// decoded protobuf, tract's tensors), not both graphs' at once.
    pub fn load(dir: Option<&Path>) -> Result<Self, XclipError> {
        match dir {
            None => Self::from_parts(BUILTIN_SOURCE, BUILTIN_MANIFEST, &|file| {
                Ok(match file {
                    TEXT_FILE => Graph::Static("built-in xclip_text.onnx", BUILTIN_TEXT),
                    _ => Graph::Static("built-in xclip_video.onnx", BUILTIN_VIDEO),
                })
            }),
            Some(dir) => {
                let mpath = dir.join(MANIFEST_FILE);
                let load_err = |p: &Path, message: String| XclipError::Load {
                    path: p.display().to_string(),
                    message,
                };
                let manifest = std::fs::read(&mpath)
                    .map_err(|e| load_err(&mpath, e.to_string()))
                    .and_then(|b| {
                        String::from_utf8(b).map_err(|_| load_err(&mpath, "not UTF-8 text".into()))
                    })?;
                Self::from_parts(&dir.display().to_string(), &manifest, &|file| {
                    Ok(Graph::File(dir.join(file)))
                })
            }
        }
    }

    fn from_parts(
        source: &str,
        manifest_text: &str,
        graph: &dyn Fn(&str) -> Result<Graph, XclipError>,
    ) -> Result<Self, XclipError> {
        let manifest: Manifest =
            serde_json::from_str(manifest_text).map_err(|e| XclipError::Manifest {
                path: format!("{source}/{MANIFEST_FILE}"),
                message: e.to_string(),
            })?;
        if manifest.context_length != CONTEXT {
            return Err(XclipError::Manifest {
                path: format!("{source}/{MANIFEST_FILE}"),
                message: format!(
                    "context_length {} (expected {CONTEXT})",
                    manifest.context_length
                ),
            });
        }
        let (t, s, d) = (
            manifest.num_frames as i64,
            manifest.image_size as i64,
            manifest.embed_dim as i64,
        );
        let (text, text_sha256) = graph(TEXT_FILE)?.build(
            &[
                Expect {
                    name: "input_ids",
                    dt: i64::datum_type(),
                    shape: vec![None, Some(CONTEXT as i64)],
                },
                Expect {
                    name: "attention_mask",
                    dt: i64::datum_type(),
                    shape: vec![None, Some(CONTEXT as i64)],
                },
            ],
            1,
        )?;
        let (video, video_sha256) = graph(VIDEO_FILE)?.build(
            &[
                Expect {
                    name: "pixel_values",
                    dt: f32::datum_type(),
                    shape: vec![Some(1), Some(t), Some(3), Some(s), Some(s)],
                },
                Expect {
                    name: "text_embeds",
                    dt: f32::datum_type(),
                    shape: vec![None, Some(d)],
                },
            ],
            1,
        )?;
        Ok(Self {
            info: ModelInfo {
                name: manifest.name.clone(),
                source: source.to_string(),
                weights: manifest.weights.clone(),
                placeholder: manifest.weights != "real",
                text_sha256,
                video_sha256,
                num_frames: manifest.num_frames,
                embed_dim: manifest.embed_dim,
            },
            manifest,
            text,
            video,
        })
    }

    /// Text embeddings [P, D] for tokenized prompts.
    pub fn text_embeddings(&self, enc: &Encoded) -> Result<Vec<f32>, XclipError> {
        let shape = [enc.prompts, CONTEXT];
        let run = || -> TractResult<Vec<f32>> {
            let ids = Tensor::from_shape(&shape, &enc.input_ids)?;
            let mask = Tensor::from_shape(&shape, &enc.attention_mask)?;
            let out = self
                .text
                .run(tvec!(ids.into_tvalue(), mask.into_tvalue()))?;
            Ok(out[0].try_as_plain_ram()?.as_slice::<f32>()?.to_vec())
        };
        let v = run().map_err(|e| XclipError::Run(format!("text graph: {e:#}")))?;
        if v.len() != enc.prompts * self.manifest.embed_dim {
            return Err(XclipError::Run(format!(
                "text graph returned {} values for {} prompts of {} dimensions",
                v.len(),
                enc.prompts,
                self.manifest.embed_dim
            )));
        }
        Ok(v)
    }

    /// Per-op times of the video graph on `pixel_values` and `text_embeds` (see
    /// [`crate::inference::onnx::profile`]).
    pub fn profile_video(
        &self,
        pixel_values: &[f32],
        text_embeds: &[f32],
        runs: usize,
    ) -> Result<Vec<crate::inference::onnx::OpTime>, XclipError> {
        let (px, te) = self.video_inputs(pixel_values, text_embeds)?;
        let inputs = [Arc::unwrap_or_clone(px), Arc::unwrap_or_clone(te)];
        crate::inference::onnx::profile(&self.video, &inputs, runs)
            .map_err(|e| XclipError::Run(format!("video graph: {e:#}")))
    }

    /// `logits_per_video` `[P]` for one clip (`pixel_values` = T*3*S*S values).
    pub fn logits(
        &self,
        pixel_values: &[f32],
        text_embeds: &[f32],
    ) -> Result<Vec<f32>, XclipError> {
        let (px, te) = self.video_inputs(pixel_values, text_embeds)?;
        self.run_video(&px, &te)
    }

    /// `pixel_values` and `text_embeds` as the video graph's input tensors, checked.
    pub fn video_inputs(
        &self,
        pixel_values: &[f32],
        text_embeds: &[f32],
    ) -> Result<(Arc<Tensor>, Arc<Tensor>), XclipError> {
        let m = &self.manifest;
        let want = m.num_frames * 3 * m.image_size * m.image_size;
        if pixel_values.len() != want
            || text_embeds.is_empty()
            || !text_embeds.len().is_multiple_of(m.embed_dim)
        {
            return Err(XclipError::BadRequest(format!(
                "pixel_values has {} values (expected {want}), text_embeds {} (a multiple of {})",
                pixel_values.len(),
                text_embeds.len(),
                m.embed_dim
            )));
        }
        let p = text_embeds.len() / m.embed_dim;
        let tensors = || -> TractResult<(Arc<Tensor>, Arc<Tensor>)> {
            let px = Tensor::from_shape(
                &[1, m.num_frames, 3, m.image_size, m.image_size],
                pixel_values,
            )?;
            let te = Tensor::from_shape(&[p, m.embed_dim], text_embeds)?;
            Ok((Arc::new(px), Arc::new(te)))
        };
        tensors().map_err(|e| XclipError::Run(format!("video inputs: {e:#}")))
    }

    /// [`Self::logits`] on inputs already in tensors (from [`Self::video_inputs`]): the
    /// graph reads them where they are, so a caller that runs the same inputs again (the
    /// benchmark, like its onnxruntime peer) copies nothing per run.
    pub fn run_video(&self, px: &Arc<Tensor>, te: &Arc<Tensor>) -> Result<Vec<f32>, XclipError> {
        let run = || -> TractResult<Vec<f32>> {
            let out = self.video.run(tvec!(
                TValue::from_const(Arc::clone(px)),
                TValue::from_const(Arc::clone(te))
            ))?;
            Ok(out[0].try_as_plain_ram()?.as_slice::<f32>()?.to_vec())
        };
        run().map_err(|e| XclipError::Run(format!("video graph: {e:#}")))
    }
}
