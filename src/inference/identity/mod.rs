//! The identity models: people and vehicles (NanoDet), faces (BlazeFace, MobileFaceNet)
//! and plates (PP-OCRv4), and [`Observer`], the one face they show the analysis. What they
//! see is matched against the household in `household::identity`; the models know nothing
//! of the household.

pub mod detect;
pub mod face;
pub mod observer;
pub mod plates;

use std::path::{Path, PathBuf};

use serde::Deserialize;
use tract_onnx::prelude::*;

use crate::config::IdentityConfig;
use crate::inference::onnx::{sha256_hex, LoadError};
use crate::ring::FrameBatch;

use detect::ObjectDetector;
use face::{FaceDetector, FaceEmbedder, FaceFilter, FaceObserver};
use observer::ModelsObserver;
use plates::PlateReader;

/// What the identity models saw in one frame of a window.
#[derive(Debug, Clone, PartialEq)]
pub enum Observation {
    Person {
        /// Capture time of the frame: agreement counts distinct frames.
        ts_us: i64,
        /// The embedder's id (its sha256): only rows enrolled with the same model compare.
        model_id: String,
        embedding: Vec<f32>,
    },
    Vehicle {
        ts_us: i64,
        plate: Option<String>,
        embedding: Option<(String, Vec<f32>)>,
    },
    /// Something the models saw but could not use (a tiny or blurry face, a frame that
    /// does not decode): counted, never matched.
    Skipped { ts_us: i64, why: &'static str },
}

/// The identity models, as the analysis sees them.
pub trait Observer: Send + Sync {
    /// Models behind it, for events and reports (and whether their weights are real).
    fn describe(&self) -> String;
    /// Append what is seen in `frames` to `out`.
    fn observe(&self, frames: &FrameBatch, out: &mut Vec<Observation>) -> Result<(), ModelError>;
}

/// Errors of the identity models (faces, plates, people and vehicles).
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    #[error(transparent)]
    Load(#[from] LoadError),
    #[error("{path}: {message}")]
    Manifest { path: String, message: String },
    #[error("identity model: {0}")]
    Run(String),
    #[error("image: {0}")]
    Image(String),
    /// Neither faces nor plates could be loaded: what each lacked.
    #[error("no identity model loaded: {0}")]
    NoneLoaded(String),
}

/// What `models/identity/fetch.py` records about a model.
#[derive(Debug, Clone, Deserialize)]
pub struct IdentityManifest {
    pub name: String,
    pub weights: String,
    /// sha256 of the original (TFLite) weights: the model's id.
    pub weights_sha256: String,
    pub onnx_sha256: String,
    pub licence: String,
}

/// Read `<stem>.onnx` and its manifest `<stem>.json` from `dir` and check that the file is
/// the one the manifest describes (a truncated copy or a swapped file fails here, named).
pub(crate) fn read_verified(
    dir: &Path,
    stem: &str,
) -> Result<(PathBuf, Vec<u8>, IdentityManifest), ModelError> {
    let path = dir.join(format!("{stem}.onnx"));
    let mpath = dir.join(format!("{stem}.json"));
    let bytes = std::fs::read(&path).map_err(|e| LoadError {
        path: path.display().to_string(),
        message: format!("{e} (fetch it with models/identity/fetch.py)"),
    })?;
    let mtext = std::fs::read_to_string(&mpath).map_err(|e| ModelError::Manifest {
        path: mpath.display().to_string(),
        message: e.to_string(),
    })?;
    let manifest = manifest(&mpath.display().to_string(), &mtext)?;
    let sha = sha256_hex(&bytes);
    if sha != manifest.onnx_sha256 {
        return Err(LoadError {
            path: path.display().to_string(),
            message: format!(
                "sha256 {sha} differs from its manifest's {} (truncated or replaced?)",
                manifest.onnx_sha256
            ),
        }
        .into());
    }
    Ok((path, bytes, manifest))
}

/// A graph output as f32 values.
/// Time per kind of op of `plan` run on `input` shaped `shape`, `runs` times (the identity
/// bench prints it with `NVR_IDENTITY_PROFILE`: what to look at before optimising).
pub(crate) fn profile_plan(
    plan: &crate::inference::onnx::Plan,
    shape: &[usize],
    input: &[f32],
    runs: usize,
) -> Result<Vec<crate::inference::onnx::OpTime>, ModelError> {
    let t = Tensor::from_shape(shape, input).map_err(|e| ModelError::Run(e.to_string()))?;
    crate::inference::onnx::profile(plan, &[t], runs).map_err(|e| ModelError::Run(format!("{e:#}")))
}

pub(crate) fn as_f32(v: &TValue) -> Result<&[f32], ModelError> {
    v.try_as_plain_ram()
        .and_then(|t| t.as_slice::<f32>())
        .map_err(|e| ModelError::Run(e.to_string()))
}

fn manifest(path: &str, text: &str) -> Result<IdentityManifest, ModelError> {
    serde_json::from_str(text).map_err(|e| ModelError::Manifest {
        path: path.to_string(),
        message: e.to_string(),
    })
}

/// Intersection over union of two boxes (x0, y0, x1, y1).
pub(crate) fn iou(a: &[f32; 4], b: &[f32; 4]) -> f32 {
    let ix = (a[2].min(b[2]) - a[0].max(b[0])).max(0.0);
    let iy = (a[3].min(b[3]) - a[1].max(b[1])).max(0.0);
    let inter = ix * iy;
    let area = |r: &[f32; 4]| (r[2] - r[0]) * (r[3] - r[1]);
    inter / (area(a) + area(b) - inter).max(f32::EPSILON)
}

/// Each model `[identity]` asks for, loaded or why not, and what each keeps allocated:
/// `run` (through [`load_observer`]) and the self-test load them here alike.
pub struct IdentityModels {
    /// The built-in face detector and the installed embedder (the detector is loaded only
    /// with an embedder: alone it recognises nobody).
    pub faces: Result<(FaceDetector, FaceEmbedder), ModelError>,
    /// People and vehicles; `None` when `[identity] detector = false`.
    pub objects: Option<Result<ObjectDetector, ModelError>>,
    /// Plates; `None` when `[identity] plates = false`.
    pub plates: Option<Result<PlateReader, ModelError>>,
    /// jemalloc bytes each loaded model keeps (`None`: not measured), in load order.
    pub memory: Vec<(&'static str, Option<i64>)>,
}

impl IdentityModels {
    pub fn load(c: &IdentityConfig) -> Self {
        let mut memory = Vec::new();
        let (embedder, kept) = crate::memory::kept_by(|| FaceEmbedder::load(&c.models_dir));
        memory.push(("mobilefacenet", kept));
        let faces = embedder.and_then(|embedder| {
            let (detector, kept) = crate::memory::kept_by(FaceDetector::builtin);
            memory.push(("blazeface", kept));
            Ok((detector?, embedder))
        });
        let objects = c.detector.then(|| {
            let (d, kept) = crate::memory::kept_by(|| ObjectDetector::load(&c.models_dir));
            memory.push(("nanodet", kept));
            d.map(|mut d| {
                d.min_score = c.min_object_score;
                d
            })
        });
        let plates = c.plates.then(|| {
            let (r, kept) = crate::memory::kept_by(|| PlateReader::load(&c.models_dir));
            memory.push(("ppocr det+rec", kept));
            r
        });
        IdentityModels {
            faces,
            objects,
            plates,
            memory,
        }
    }

    /// The models as the recorder runs them. Models that are missing are logged and left
    /// out; an error only when neither faces nor plates loaded (it says what each lacked).
    pub fn into_observer(self, c: &IdentityConfig) -> Result<ModelsObserver, ModelError> {
        fn take<T>(
            missing: &mut Vec<String>,
            what: &str,
            r: Option<Result<T, ModelError>>,
        ) -> Option<T> {
            match r? {
                Ok(m) => Some(m),
                Err(e) => {
                    missing.push(format!("{what}: {e}"));
                    None
                }
            }
        }
        let mut missing = Vec::new();
        let faces = take(&mut missing, "faces", Some(self.faces))
            .map(|(d, e)| FaceObserver::new(d, e, FaceFilter::from_config(c)));
        let plates = take(&mut missing, "plates", self.plates);
        let objects = take(&mut missing, "people/vehicles", self.objects);
        if faces.is_none() && plates.is_none() {
            return Err(ModelError::NoneLoaded(missing.join("; ")));
        }
        for m in &missing {
            tracing::warn!(missing = %m, "identity model not loaded");
        }
        Ok(ModelsObserver {
            objects,
            plates_without_vehicle: c.plates_without_vehicle,
            faces,
            plates,
            plate_frames: c.plate_frames_per_window as usize,
        })
    }
}

/// Load the models `[identity]` asks for, as the recorder runs them (see
/// [`IdentityModels::into_observer`]).
pub fn load_observer(c: &IdentityConfig) -> Result<ModelsObserver, ModelError> {
    IdentityModels::load(c).into_observer(c)
}
