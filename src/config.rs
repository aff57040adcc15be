//! Typed configuration: one serde struct tree, parsed with unknown keys refused and
//! validated once at load, so every later stage can trust what it is handed.
//!
//! Every error names the key path it is about (`cameras[1].ring.max_bytes: must be > 0`),
//! because the person reading it is usually a technician with a serial cable and a
//! config file, not the source code. The reference for every key is
//! `config/default.toml`, which is also the embedded default.

use std::collections::HashSet;
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::console::ConsoleConfig;
use crate::events::Retention;
use crate::household::identity::IdentityConfig;
use crate::inference::{Category, WhenFull};
use crate::motion::MotionConfig;
use crate::recording::RecordingConfig;
use crate::ring::RingConfig;

/// The configuration used when no `--config` is given.
pub const EMBEDDED_DEFAULT: &str = include_str!("../config/default.toml");

/// Upper bound for one ring's byte budget: far above any board we target, low enough that
/// a typo (an extra zero or two) is caught at load instead of by the OOM killer.
const MAX_RING_BYTES: u64 = 16 << 30;
/// Upper bound for one ring's frame slots (metadata is reserved up front for all of them).
const MAX_RING_FRAMES: u32 = 1_000_000;

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: crate::fsio::ReadError,
    },
    #[error("{origin}: {key}: {message}")]
    Parse {
        origin: String,
        key: String,
        message: String,
    },
    #[error("{origin}: {}", .problems.iter().map(|p| p.to_string()).collect::<Vec<_>>().join("; "))]
    Invalid {
        origin: String,
        problems: Vec<Problem>,
    },
}

/// One validation problem, anchored at a key path and, where the key is written in the
/// file, its line (a key left to its default has none; its nearest written parent's is
/// given instead).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub key: String,
    pub message: String,
    pub line: Option<usize>,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.key, self.message)?;
        if let Some(line) = self.line {
            write!(f, " (line {line})")?;
        }
        Ok(())
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Ring budget every camera gets unless it overrides a field.
    #[serde(default)]
    pub ring: RingSection,
    /// Figures the self-test measures against.
    #[serde(default)]
    pub targets: Targets,
    #[serde(default)]
    pub selftest: SelfTestSection,
    #[serde(default)]
    pub storage: Storage,
    #[serde(default)]
    pub household: HouseholdSection,
    #[serde(default)]
    pub xclip: XclipSection,
    /// Motion gate in front of the models.
    #[serde(default)]
    pub motion: MotionConfig,
    /// How much event history to keep.
    #[serde(default)]
    pub events: Retention,
    /// Video files of events.
    #[serde(default)]
    pub recording: RecordingConfig,
    /// Recognising household members and vehicles in events.
    #[serde(default)]
    pub identity: IdentityConfig,
    /// Serial diagnostics console of `nvr-edge run`.
    #[serde(default)]
    pub console: ConsoleConfig,
    #[serde(default)]
    pub log: LogSection,
    /// The cameras, in the order they are started and reported.
    #[serde(default)]
    pub cameras: Vec<CameraConfig>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct RingSection {
    /// Most frames a ring holds.
    pub frames: u32,
    /// Bytes reserved for frame payloads, once, at start.
    pub max_bytes: u64,
    /// Frames older than this, measured against the newest frame, are evicted.
    pub max_age_secs: f64,
}

impl Default for RingSection {
    fn default() -> Self {
        Self {
            frames: 1800,
            max_bytes: 256 << 20,
            max_age_secs: 60.0,
        }
    }
}

/// Per-camera overrides of `[ring]`; unset fields inherit.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RingOverride {
    pub frames: Option<u32>,
    pub max_bytes: Option<u64>,
    pub max_age_secs: Option<f64>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Targets {
    /// Frames per second each camera must deliver (capped at what the camera is set to).
    pub capture_fps: f64,
    /// Fraction below the fps target still counted as meeting it (pacing jitter).
    pub fps_tolerance: f64,
    /// jemalloc bytes per camera (its arena: ring + capture working memory), in MiB.
    pub memory_per_camera_mb: f64,
    /// Mean time to add one frame to a ring.
    pub frame_add_avg_ms: f64,
    /// Worst time to add one frame to a ring.
    pub frame_add_max_ms: f64,
    /// 99th percentile of one household match (probe against the whole gallery).
    pub household_match_p99_ms: f64,
    /// 99th percentile of one X-CLIP clip (preprocessing + video graph).
    pub xclip_clip_p99_ms: f64,
    /// Clips per second over a burst of 20 through the inference service.
    pub xclip_clips_per_sec: f64,
    /// Motion gate cost per analysed frame.
    pub motion_gate_ms: f64,
    /// From the capture of the frame that confirms motion to its event committed.
    pub frame_to_event_ms: f64,
    /// One face detection pass (BlazeFace on a 640x480 frame), p99.
    pub face_detect_ms: f64,
    /// One face embedding batch (two aligned faces), p99.
    pub face_embed_ms: f64,
    /// Frames per second through the identity path (decode, detect, align, embed).
    pub identity_fps: f64,
    /// One plate read (text detection + recognition on a 640x480 frame), p99.
    pub plate_read_ms: f64,
    /// One people/vehicle detection pass (NanoDet on a 640x480 frame), p99.
    pub object_detect_ms: f64,
    /// Memory the loaded identity models keep, MiB in all.
    pub identity_models_mb: f64,
}

impl Default for Targets {
    fn default() -> Self {
        Self {
            capture_fps: 30.0,
            fps_tolerance: 0.02,
            memory_per_camera_mb: 500.0,
            frame_add_avg_ms: 10.0,
            frame_add_max_ms: 33.0,
            household_match_p99_ms: 50.0,
            xclip_clip_p99_ms: 2000.0,
            xclip_clips_per_sec: 10.0,
            motion_gate_ms: 10.0,
            frame_to_event_ms: 500.0,
            face_detect_ms: 100.0,
            face_embed_ms: 150.0,
            identity_fps: 5.0,
            plate_read_ms: 1000.0,
            object_detect_ms: 300.0,
            identity_models_mb: 256.0,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct SelfTestSection {
    /// How long the cameras run when `--seconds` is not given.
    pub seconds: f64,
    /// The product spec's frame-buffer case: this many frames ...
    pub ring_stress_frames: u32,
    /// ... of this many bytes each, pushed into a ring with the `[ring]` budget.
    pub ring_stress_frame_bytes: u32,
}

impl Default for SelfTestSection {
    fn default() -> Self {
        Self {
            seconds: 5.0,
            ring_stress_frames: 1800,
            ring_stress_frame_bytes: 100_000,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Storage {
    /// Where the database and clips live (created when first needed).
    pub data_dir: PathBuf,
}

impl Default for Storage {
    fn default() -> Self {
        Self {
            data_dir: PathBuf::from("data"),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct HouseholdSection {
    /// Cosine similarity at or above which a person is named as a member.
    pub match_threshold: f32,
    /// At or above this (and below match_threshold) the outcome is "uncertain": similar
    /// to a member, not called by their name.
    pub unknown_threshold: f32,
    /// Cosine similarity at or above which a vehicle's visual embedding matches.
    pub vehicle_visual_threshold: f32,
    /// Most edits (after folding OCR confusions) a fuzzy plate match allows.
    pub plate_max_distance: u32,
    /// Plates shorter than this only match exactly.
    pub plate_fuzzy_min_len: u32,
    /// Local time for member schedules, minutes east of UTC (no DST rules applied).
    pub utc_offset_minutes: i32,
    /// Size of the gallery the self-test generates when nobody is enrolled.
    pub selftest_members: u32,
    pub selftest_dim: u32,
}

impl Default for HouseholdSection {
    fn default() -> Self {
        Self {
            match_threshold: 0.60,
            unknown_threshold: 0.45,
            vehicle_visual_threshold: 0.90,
            plate_max_distance: 1,
            plate_fuzzy_min_len: 4,
            utc_offset_minutes: 0,
            selftest_members: 500,
            selftest_dim: 512,
        }
    }
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
    toml::from_str::<Doc>(EMBEDDED_DEFAULT)
        .map(|d| d.xclip.categories)
        .unwrap_or_default()
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct LogSection {
    /// tracing filter directive (`info`, `nvr_edge::capture=debug`, ...); `RUST_LOG` wins.
    pub filter: String,
    /// Seconds between the per-camera summary lines of `nvr-edge run`.
    pub summary_interval_secs: u64,
}

impl Default for LogSection {
    fn default() -> Self {
        Self {
            filter: "info".into(),
            summary_interval_secs: 60,
        }
    }
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum SourceKind {
    V4l2,
    Synthetic,
    Replay,
}

/// Pixel format asked of a camera; what the driver grants is reported separately.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum PreferredFormat {
    #[default]
    Mjpeg,
    Yuyv,
    Nv12,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct CameraConfig {
    /// Short unique name used in logs, reports and the database.
    pub id: String,
    pub source: SourceKind,
    /// V4L2 device node (`/dev/video0` or a `/dev/v4l/by-id/...` link); v4l2 only.
    pub device: Option<PathBuf>,
    /// Directory of JPEGs or an MJPEG file (concatenated JPEGs); replay only.
    pub path: Option<PathBuf>,
    pub width: u32,
    pub height: u32,
    pub fps: f64,
    #[serde(default)]
    pub pixel_format: PreferredFormat,
    /// JPEG quality used where nvr-edge encodes frames itself (synthetic, YUYV, NV12).
    #[serde(default = "default_jpeg_quality")]
    pub jpeg_quality: u8,
    #[serde(default)]
    pub ring: RingOverride,
}

fn default_jpeg_quality() -> u8 {
    80
}

impl CameraConfig {
    /// Frame interval the camera is asked for.
    pub fn frame_interval(&self) -> Duration {
        Duration::from_secs_f64(1.0 / self.fps)
    }
}

impl Config {
    /// Parse and validate the embedded default configuration.
    pub fn embedded() -> Result<Self, ConfigError> {
        Self::from_toml_str(EMBEDDED_DEFAULT, "embedded default config")
    }

    /// Load from a file, or the embedded default when `path` is `None`.
    pub fn load(path: Option<&Path>) -> Result<Self, ConfigError> {
        match path {
            None => Self::embedded(),
            Some(p) => {
                let text = crate::fsio::read_regular_string(p, crate::fsio::MAX_CONFIG_BYTES)
                    .map_err(|source| ConfigError::Read {
                        path: p.to_path_buf(),
                        source,
                    })?;
                Self::from_toml_str(&text, &p.display().to_string())
            }
        }
    }

    /// Parse TOML text (`origin` names it in errors) and validate it.
    pub fn from_toml_str(text: &str, origin: &str) -> Result<Self, ConfigError> {
        let parse_err = |key: String, message: String| ConfigError::Parse {
            origin: origin.to_string(),
            key,
            message,
        };
        let de = toml::Deserializer::parse(text)
            .map_err(|e| parse_err("(document)".into(), describe(text, &e)))?;
        let cfg: Config = serde_path_to_error::deserialize(de).map_err(|e| {
            let key = e.path().to_string();
            let key = if key == "." { "(document)".into() } else { key };
            parse_err(key, describe(text, e.inner()))
        })?;
        let mut problems = cfg.problems();
        for p in &mut problems {
            p.line = line_of(text, &p.key);
        }
        if problems.is_empty() {
            Ok(cfg)
        } else {
            Err(ConfigError::Invalid {
                origin: origin.to_string(),
                problems,
            })
        }
    }

    /// The ring budget a camera ends up with after its overrides.
    pub fn ring_for(&self, cam: &CameraConfig) -> RingConfig {
        let o = &cam.ring;
        RingConfig {
            frames: o.frames.unwrap_or(self.ring.frames) as usize,
            max_bytes: o.max_bytes.unwrap_or(self.ring.max_bytes) as usize,
            max_age: Duration::from_secs_f64(o.max_age_secs.unwrap_or(self.ring.max_age_secs)),
        }
    }

    /// Every validation problem at once, so a technician fixes the file in one pass.
    pub fn problems(&self) -> Vec<Problem> {
        let mut p = Problems::default();
        check_ring(
            &mut p,
            "ring",
            Some(self.ring.frames),
            Some(self.ring.max_bytes),
            Some(self.ring.max_age_secs),
        );

        let t = &self.targets;
        p.positive("targets.capture_fps", t.capture_fps);
        p.check(
            "targets.fps_tolerance",
            (0.0..1.0).contains(&t.fps_tolerance),
            "must be in [0, 1)",
        );
        p.positive("targets.memory_per_camera_mb", t.memory_per_camera_mb);
        p.positive("targets.frame_add_avg_ms", t.frame_add_avg_ms);
        p.positive("targets.frame_add_max_ms", t.frame_add_max_ms);
        p.positive("targets.household_match_p99_ms", t.household_match_p99_ms);
        p.positive("targets.xclip_clip_p99_ms", t.xclip_clip_p99_ms);
        p.positive("targets.xclip_clips_per_sec", t.xclip_clips_per_sec);
        p.positive("targets.motion_gate_ms", t.motion_gate_ms);
        p.positive("targets.frame_to_event_ms", t.frame_to_event_ms);
        p.positive("targets.face_detect_ms", t.face_detect_ms);
        p.positive("targets.face_embed_ms", t.face_embed_ms);
        p.positive("targets.identity_fps", t.identity_fps);
        p.positive("targets.plate_read_ms", t.plate_read_ms);
        p.positive("targets.object_detect_ms", t.object_detect_ms);
        p.positive("targets.identity_models_mb", t.identity_models_mb);

        let x = &self.xclip;
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

        let h = &self.household;
        let unit = |v: f32| v.is_finite() && (-1.0..=1.0).contains(&v);
        p.check(
            "household.match_threshold",
            unit(h.match_threshold),
            "must be a cosine similarity in [-1, 1]",
        );
        p.check(
            "household.unknown_threshold",
            unit(h.unknown_threshold) && h.unknown_threshold <= h.match_threshold,
            "must be in [-1, 1] and <= household.match_threshold",
        );
        p.check(
            "household.vehicle_visual_threshold",
            unit(h.vehicle_visual_threshold),
            "must be a cosine similarity in [-1, 1]",
        );
        p.check(
            "household.plate_max_distance",
            h.plate_max_distance <= 3,
            "must be 0-3",
        );
        p.check(
            "household.utc_offset_minutes",
            (-14 * 60..=14 * 60).contains(&h.utc_offset_minutes),
            "must be within +-840 minutes",
        );
        p.int(
            "household.plate_fuzzy_min_len",
            h.plate_fuzzy_min_len.into(),
            0,
            20,
        );
        p.int(
            "household.selftest_members",
            h.selftest_members.into(),
            1,
            1_000_000,
        );
        p.int("household.selftest_dim", h.selftest_dim.into(), 1, 8192);
        // The generated gallery is members x dim floats: 64 Mi of them (256 MiB) at most,
        // so the self-test cannot ask for more memory than a board has.
        p.check(
            "household.selftest_members",
            u64::from(h.selftest_members) * u64::from(h.selftest_dim) <= 64 << 20,
            "times household.selftest_dim must be at most 67108864 (a 256 MiB gallery)",
        );

        let s = &self.selftest;
        p.check(
            "selftest.seconds",
            s.seconds.is_finite() && (0.5..=3600.0).contains(&s.seconds),
            "must be between 0.5 and 3600",
        );
        p.int(
            "selftest.ring_stress_frames",
            s.ring_stress_frames.into(),
            1,
            MAX_RING_FRAMES.into(),
        );
        p.check(
            "selftest.ring_stress_frame_bytes",
            (1..=16 << 20).contains(&s.ring_stress_frame_bytes)
                && u64::from(s.ring_stress_frame_bytes) <= self.ring.max_bytes,
            "must be 1-16777216 and fit in ring.max_bytes",
        );
        // The stress fill copies frames x bytes; past 4 GiB the boot check takes minutes.
        p.check(
            "selftest.ring_stress_frames",
            u64::from(s.ring_stress_frames) * u64::from(s.ring_stress_frame_bytes) <= 4 << 30,
            "times selftest.ring_stress_frame_bytes must be at most 4 GiB",
        );

        let i = &self.identity;
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

        let r = &self.recording;
        let secs = |v: f64, max: f64| v.is_finite() && (0.0..=max).contains(&v);
        p.check(
            "recording.pre_secs",
            secs(r.pre_secs, self.ring.max_age_secs),
            "must be between 0 and ring.max_age_secs (the ring holds no older frames)",
        );
        p.check(
            "recording.post_secs",
            secs(r.post_secs, 600.0),
            "must be between 0 and 600",
        );
        p.check(
            "recording.max_secs",
            secs(r.max_secs, 3600.0) && r.max_secs >= 1.0,
            "must be between 1 and 3600",
        );
        p.check(
            "recording.disk_budget_mb",
            (1..=16 << 20).contains(&r.disk_budget_mb),
            "must be 1-16777216 MiB",
        );
        p.int("recording.min_free_mb", r.min_free_mb, 0, 1 << 20);

        p.check(
            "storage.data_dir",
            !self.storage.data_dir.as_os_str().is_empty(),
            "must not be empty",
        );
        p.check(
            "log.filter",
            tracing_subscriber::EnvFilter::try_new(&self.log.filter).is_ok(),
            "is not a valid tracing filter",
        );
        p.int(
            "log.summary_interval_secs",
            self.log.summary_interval_secs,
            1,
            86_400,
        );

        let m = &self.motion;
        // inf once kept a core at 100 %; above the cameras' rate it only costs CPU.
        p.above("motion.analysis_fps", m.analysis_fps, 0.0, 60.0);
        p.int("motion.pixel_threshold", m.pixel_threshold.into(), 1, 255);
        p.range(
            "motion.min_changed_fraction",
            m.min_changed_fraction,
            0.0,
            1.0,
        );
        p.range("motion.min_area_fraction", m.min_area_fraction, 0.0, 1.0);
        // 0 with a NaN background rate once gave dozens of events a second.
        p.int("motion.start_frames", m.start_frames.into(), 1, 1000);
        p.int("motion.stop_frames", m.stop_frames.into(), 1, 10_000);
        p.above("motion.background_rate", m.background_rate, 0.0, 1.0);
        p.int("motion.masks", m.masks.len() as u64, 0, 64);
        for (i, poly) in m.masks.iter().enumerate() {
            let key = format!("motion.masks[{i}]");
            if !(3..=256).contains(&poly.len()) {
                p.push(key.clone(), "must have 3-256 points");
            }
            if !poly
                .iter()
                .flatten()
                .all(|c| c.is_finite() && (0.0..=1.0).contains(c))
            {
                p.push(key, "points must be [x, y] with x and y from 0 to 1");
            }
        }

        let e = &self.events;
        // 0 rows once deleted every event as it was created, its video orphaned.
        p.int("events.max_rows", e.max_rows.into(), 1, 10_000_000);
        p.int("events.max_age_days", e.max_age_days.into(), 1, 36_500);

        for (key, message) in self.console.problems() {
            p.push(format!("console.{key}"), message);
        }
        p.int("cameras", self.cameras.len() as u64, 0, 16);

        let mut seen = HashSet::new();
        for (i, cam) in self.cameras.iter().enumerate() {
            let at = format!("cameras[{i}]");
            check_camera(&mut p, &at, cam);
            if !seen.insert(cam.id.as_str()) {
                p.push(
                    format!("{at}.id"),
                    format!("duplicate camera id {:?}", cam.id),
                );
            }
        }
        p.0
    }
}

fn check_camera(p: &mut Problems, at: &str, cam: &CameraConfig) {
    let id_ok = !cam.id.is_empty()
        && cam.id.len() <= 32
        && cam
            .id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    p.check(
        &format!("{at}.id"),
        id_ok,
        "must be 1-32 characters of A-Z a-z 0-9 - _",
    );
    p.check(
        &format!("{at}.width"),
        (16..=7680).contains(&cam.width) && cam.width.is_multiple_of(2),
        "must be an even number from 16 to 7680",
    );
    p.check(
        &format!("{at}.height"),
        (16..=4320).contains(&cam.height) && cam.height.is_multiple_of(2),
        "must be an even number from 16 to 4320",
    );
    p.check(
        &format!("{at}.fps"),
        cam.fps.is_finite() && cam.fps > 0.0 && cam.fps <= 240.0,
        "must be > 0 and <= 240",
    );
    p.check(
        &format!("{at}.jpeg_quality"),
        (1..=100).contains(&cam.jpeg_quality),
        "must be 1-100",
    );
    let (needs_device, needs_path) = match cam.source {
        SourceKind::V4l2 => (true, false),
        SourceKind::Replay => (false, true),
        SourceKind::Synthetic => (false, false),
    };
    match (&cam.device, needs_device) {
        (None, true) => p.push(format!("{at}.device"), "required for source = \"v4l2\""),
        (Some(_), false) => p.push(format!("{at}.device"), "only used by source = \"v4l2\""),
        _ => {}
    }
    match (&cam.path, needs_path) {
        (None, true) => p.push(format!("{at}.path"), "required for source = \"replay\""),
        (Some(_), false) => p.push(format!("{at}.path"), "only used by source = \"replay\""),
        _ => {}
    }
    check_ring(
        p,
        &format!("{at}.ring"),
        cam.ring.frames,
        cam.ring.max_bytes,
        cam.ring.max_age_secs,
    );
}

fn check_ring(
    p: &mut Problems,
    at: &str,
    frames: Option<u32>,
    max_bytes: Option<u64>,
    max_age_secs: Option<f64>,
) {
    if let Some(f) = frames {
        p.check(
            &format!("{at}.frames"),
            f > 0 && f <= MAX_RING_FRAMES,
            &format!("must be > 0 and <= {MAX_RING_FRAMES}"),
        );
    }
    if let Some(b) = max_bytes {
        p.check(
            &format!("{at}.max_bytes"),
            b > 0 && b <= MAX_RING_BYTES,
            &format!("must be > 0 and <= {MAX_RING_BYTES} (16 GiB)"),
        );
    }
    if let Some(a) = max_age_secs {
        // A day of frames is far past any ring's byte budget; beyond it the figure is a
        // typo (1e20 once overflowed the Duration it becomes).
        p.above(&format!("{at}.max_age_secs"), a, 0.0, 86_400.0);
    }
}

#[derive(Default)]
struct Problems(Vec<Problem>);

impl Problems {
    fn push(&mut self, key: String, message: impl Into<String>) {
        self.0.push(Problem {
            key,
            message: message.into(),
            line: None,
        });
    }
    /// A finite number in `lo..=hi`.
    fn range(&mut self, key: &str, v: f64, lo: f64, hi: f64) {
        if !(v.is_finite() && (lo..=hi).contains(&v)) {
            self.push(
                key.to_string(),
                format!("must be a number from {lo} to {hi}"),
            );
        }
    }
    /// A finite number above `lo` and at most `hi`.
    fn above(&mut self, key: &str, v: f64, lo: f64, hi: f64) {
        if !(v.is_finite() && v > lo && v <= hi) {
            self.push(
                key.to_string(),
                format!("must be a number > {lo} and <= {hi}"),
            );
        }
    }
    /// A whole number in `lo..=hi`.
    fn int(&mut self, key: &str, v: u64, lo: u64, hi: u64) {
        if !(lo..=hi).contains(&v) {
            self.push(key.to_string(), format!("must be {lo}-{hi}"));
        }
    }
    fn check(&mut self, key: &str, ok: bool, message: &str) {
        if !ok {
            self.push(key.to_string(), message);
        }
    }
    /// A target or figure: finite, above 0, and short of absurd (a typo of a few zeros).
    fn positive(&mut self, key: &str, v: f64) {
        self.above(key, v, 0.0, 1e6);
    }
}

/// The 1-based line where `key` (`cameras[1].ring.max_bytes`) is written in `text`, or
/// where its nearest written parent is; `None` when nothing of it is written.
pub fn line_of(text: &str, key: &str) -> Option<usize> {
    use toml::de::{DeTable, DeValue};
    let doc = DeTable::parse(text).ok()?;
    let mut table: Option<&DeTable<'_>> = Some(doc.get_ref());
    let mut value: Option<&DeValue<'_>> = None;
    let mut at: Option<usize> = None;
    for segment in key.split('.') {
        let (name, index) = match segment.split_once('[') {
            Some((n, rest)) => (n, rest.trim_end_matches(']').parse::<usize>().ok()),
            None => (segment, None),
        };
        let t = match (table, value) {
            (Some(t), _) => t,
            (None, Some(DeValue::Table(t))) => t,
            _ => break,
        };
        let Some((k, v)) = t.iter().find(|(k, _)| k.get_ref().as_ref() == name) else {
            break;
        };
        at = Some(k.span().start);
        table = None;
        value = Some(v.get_ref());
        if let Some(i) = index {
            let Some(DeValue::Array(items)) = value else {
                break;
            };
            let Some(item) = items.get(i) else { break };
            if item.span().end > item.span().start {
                at = Some(item.span().start);
            }
            value = Some(item.get_ref());
        }
    }
    at.map(|pos| text[..pos.min(text.len())].matches('\n').count() + 1)
}

/// toml's own rendering is a multi-line excerpt; a serial console wants one line with
/// the message and where it is.
fn describe(text: &str, e: &toml::de::Error) -> String {
    let msg = e.message().trim().to_string();
    match e.span() {
        Some(span) => {
            let before = &text[..span.start.min(text.len())];
            let line = before.matches('\n').count() + 1;
            let col = before.len() - before.rfind('\n').map_or(0, |i| i + 1) + 1;
            format!("{msg} (line {line}, column {col})")
        }
        None => msg,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn embedded_default_is_valid_and_has_two_synthetic_cameras() {
        let cfg = Config::embedded().unwrap();
        assert_eq!(cfg.cameras.len(), 2);
        assert!(cfg
            .cameras
            .iter()
            .all(|c| c.source == SourceKind::Synthetic && c.width == 640 && c.fps == 30.0));
        let ring = cfg.ring_for(&cfg.cameras[0]);
        assert_eq!(ring.frames, 1800);
        assert_eq!(ring.max_bytes, 256 << 20);
    }

    #[test]
    fn camera_override_inherits_unset_fields() {
        let cfg = Config::from_toml_str(
            r#"
            [ring]
            frames = 100
            max_bytes = 1000000
            max_age_secs = 5
            [[cameras]]
            id = "a"
            source = "synthetic"
            width = 320
            height = 240
            fps = 10
            ring = { frames = 7 }
            "#,
            "t",
        )
        .unwrap();
        let r = cfg.ring_for(&cfg.cameras[0]);
        assert_eq!(
            (r.frames, r.max_bytes, r.max_age),
            (7, 1_000_000, Duration::from_secs(5))
        );
    }
}
