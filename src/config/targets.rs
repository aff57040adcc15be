//! `[targets]`, `[selftest]` and `[log]`: what the self-test measures against, how it
//! runs, and what the service logs.

use serde::{Deserialize, Serialize};

use super::cameras::MAX_RING_FRAMES;
use super::Problems;

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

impl Targets {
    pub(crate) fn validate(&self, p: &mut Problems) {
        let t = self;
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

impl SelfTestSection {
    /// A stress frame must fit the `[ring]` budget it is pushed into.
    pub(crate) fn validate(&self, p: &mut Problems, ring_max_bytes: u64) {
        let s = self;
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
                && u64::from(s.ring_stress_frame_bytes) <= ring_max_bytes,
            "must be 1-16777216 and fit in ring.max_bytes",
        );
        // The stress fill copies frames x bytes; past 4 GiB the boot check takes minutes.
        p.check(
            "selftest.ring_stress_frames",
            u64::from(s.ring_stress_frames) * u64::from(s.ring_stress_frame_bytes) <= 4 << 30,
            "times selftest.ring_stress_frame_bytes must be at most 4 GiB",
        );
    }
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

impl LogSection {
    pub(crate) fn validate(&self, p: &mut Problems) {
        let l = self;
        p.check(
            "log.filter",
            tracing_subscriber::EnvFilter::try_new(&l.filter).is_ok(),
            "is not a valid tracing filter",
        );
        p.int(
            "log.summary_interval_secs",
            l.summary_interval_secs,
            1,
            86_400,
        );
    }
}
