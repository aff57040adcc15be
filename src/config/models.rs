//! `[xclip]` and `[identity]`: the models, the prompt categories and their risk scale,
//! and how far a recognised member or vehicle lowers an event's risk.

use std::collections::HashSet;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::Problems;

/// How bad an action is, as the events and notifications downstream rank it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Risk {
    Low,
    Medium,
    High,
    Critical,
}

impl Risk {
    /// The name the config, the database and the API use.
    pub fn as_str(self) -> &'static str {
        match self {
            Risk::Low => "low",
            Risk::Medium => "medium",
            Risk::High => "high",
            Risk::Critical => "critical",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "low" => Some(Risk::Low),
            "medium" => Some(Risk::Medium),
            "high" => Some(Risk::High),
            "critical" => Some(Risk::Critical),
            _ => None,
        }
    }
}

/// One configured category (`[[xclip.categories]]`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Category {
    pub name: String,
    pub risk: Risk,
    /// Softmax probability (over all prompts) the best prompt needs for the category to count.
    pub threshold: f32,
    pub prompts: Vec<String>,
}

/// What the X-CLIP service does with a clip when its queue is full.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WhenFull {
    ReplaceOldest,
    Refuse,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct XclipSection {
    /// Directory with xclip_text.onnx, xclip_video.onnx and manifest.json; unset: the tiny
    /// random-weight placeholder built into the binary.
    pub models_dir: Option<PathBuf>,
    /// Inference worker threads (one clip each at a time).
    pub workers: u32,
    /// Clips waiting for a worker, at most.
    pub queue: u32,
    pub when_full: WhenFull,
    /// Best prompts listed in each result.
    pub top_k: u32,
    /// Threads one worker's graph runs on (see `inference::onnx::GraphThreads`).
    pub threads: u32,
    /// Seconds of ring history a clip is sampled from while motion lasts.
    pub window_secs: f64,
    /// Seconds between clips of one camera while motion lasts.
    pub rerun_secs: f64,
    pub categories: Vec<Category>,
}

impl Default for XclipSection {
    fn default() -> Self {
        Self {
            models_dir: None,
            workers: 1,
            queue: 4,
            when_full: WhenFull::ReplaceOldest,
            top_k: 3,
            threads: 1,
            window_secs: 4.0,
            rerun_secs: 5.0,
            categories: default_categories(),
        }
    }
}

/// The categories of the embedded default config: the product's default prompts.
pub fn default_categories() -> Vec<Category> {
    #[derive(Deserialize)]
    struct Doc {
        xclip: Inner,
    }
    #[derive(Deserialize)]
    struct Inner {
        categories: Vec<Category>,
    }
    toml::from_str::<Doc>(super::EMBEDDED_DEFAULT)
        .map(|d| d.xclip.categories)
        .unwrap_or_default()
}

impl XclipSection {
    pub(crate) fn validate(&self, p: &mut Problems) {
        let x = self;
        p.check(
            "xclip.workers",
            (1..=16).contains(&x.workers),
            "must be 1-16",
        );
        p.check("xclip.queue", (1..=256).contains(&x.queue), "must be 1-256");
        p.int("xclip.top_k", x.top_k.into(), 1, 100);
        p.above("xclip.window_secs", x.window_secs, 0.0, 600.0);
        p.above("xclip.rerun_secs", x.rerun_secs, 0.0, 3600.0);
        p.check(
            "xclip.threads",
            (1..=64).contains(&x.threads),
            "must be 1-64",
        );
        p.check(
            "xclip.categories",
            !x.categories.is_empty(),
            "needs at least one category",
        );
        let mut names = HashSet::new();
        let mut all_prompts = HashSet::new();
        for (i, c) in x.categories.iter().enumerate() {
            let at = format!("xclip.categories[{i}]");
            p.check(
                &format!("{at}.name"),
                !c.name.trim().is_empty(),
                "must not be empty",
            );
            if !names.insert(c.name.as_str()) {
                p.push(
                    format!("{at}.name"),
                    format!("duplicate category {:?}", c.name),
                );
            }
            p.check(
                &format!("{at}.threshold"),
                c.threshold.is_finite() && (0.0..=1.0).contains(&c.threshold),
                "must be a probability in [0, 1]",
            );
            p.check(
                &format!("{at}.prompts"),
                !c.prompts.is_empty(),
                "needs at least one prompt",
            );
            for (j, prompt) in c.prompts.iter().enumerate() {
                let key = format!("{at}.prompts[{j}]");
                if prompt.trim().is_empty() || prompt.len() > 300 {
                    p.push(key, "must be 1-300 bytes of text");
                } else if !all_prompts.insert(prompt.as_str()) {
                    p.push(key, format!("prompt {prompt:?} appears twice"));
                }
            }
        }
    }
}

/// `[identity]`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct IdentityConfig {
    /// Run the identity models on events (when they are installed).
    pub enabled: bool,
    /// Fail the self-test when the models are missing (devices that ship them).
    pub required: bool,
    /// Directory with mobilefacenet.onnx and mobilefacenet.json (models/identity/fetch.py);
    /// the face detector is built in.
    pub models_dir: PathBuf,
    /// Faces with eyes closer than this (frame pixels) are too small to embed.
    pub min_eye_distance_px: f32,
    /// Aligned faces less sharp than this (variance of the Laplacian) are skipped.
    pub min_sharpness: f32,
    pub max_faces_per_frame: u32,
    /// Find people and vehicles first (NanoDet, from models_dir): faces are searched only
    /// inside people, plates inside vehicles.
    pub detector: bool,
    /// Score a person or vehicle detection needs.
    pub min_object_score: f32,
    /// With the detector on and no vehicle found in a frame, read plates in the whole frame
    /// anyway (cameras aimed at a gate see plates of cars they cannot see whole).
    pub plates_without_vehicle: bool,
    /// Read licence plates (PP-OCRv4, from models_dir) for the vehicle matcher.
    pub plates: bool,
    /// Frames of each clip window the plate reader sees (evenly spaced).
    pub plate_frames_per_window: u32,
    /// Frames (of the event's clip windows) in which the same member or vehicle must match
    /// before the event names them.
    pub min_agreeing_frames: u32,
    /// Risk levels a matched member lowers an event by.
    pub member_lowers_by: u8,
    /// Risk levels a trusted vehicle lowers an event by.
    pub trusted_vehicle_lowers_by: u8,
}

impl Default for IdentityConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            required: false,
            models_dir: PathBuf::from("models/identity"),
            min_eye_distance_px: 12.0,
            min_sharpness: 20.0,
            max_faces_per_frame: 4,
            detector: true,
            min_object_score: 0.4,
            plates_without_vehicle: true,
            plates: true,
            plate_frames_per_window: 2,
            min_agreeing_frames: 2,
            member_lowers_by: 2,
            trusted_vehicle_lowers_by: 1,
        }
    }
}

impl IdentityConfig {
    pub(crate) fn validate(&self, p: &mut Problems) {
        let i = self;
        p.check(
            "identity.models_dir",
            !i.models_dir.as_os_str().is_empty(),
            "must not be empty",
        );
        p.check(
            "identity.min_eye_distance_px",
            i.min_eye_distance_px.is_finite() && (4.0..=1000.0).contains(&i.min_eye_distance_px),
            "must be 4-1000 pixels",
        );
        p.range(
            "identity.min_sharpness",
            f64::from(i.min_sharpness),
            0.0,
            1e6,
        );
        p.check(
            "identity.min_object_score",
            i.min_object_score.is_finite() && (0.0..=1.0).contains(&i.min_object_score),
            "must be a probability in [0, 1]",
        );
        p.check(
            "identity.plate_frames_per_window",
            (1..=64).contains(&i.plate_frames_per_window),
            "must be 1-64",
        );
        p.check(
            "identity.max_faces_per_frame",
            (1..=32).contains(&i.max_faces_per_frame),
            "must be 1-32",
        );
        p.check(
            "identity.min_agreeing_frames",
            (1..=64).contains(&i.min_agreeing_frames),
            "must be 1-64",
        );
        p.check(
            "identity.member_lowers_by",
            i.member_lowers_by <= 3,
            "must be 0-3 risk levels",
        );
        p.check(
            "identity.trusted_vehicle_lowers_by",
            i.trusted_vehicle_lowers_by <= 3,
            "must be 0-3 risk levels",
        );
    }
}
