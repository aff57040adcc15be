//! `[motion]`, `[events]`, `[recording]` and `[storage]`: what makes an event, what is
//! kept of it and where.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::Problems;

/// Motion settings (`[motion]`, per camera overridable later).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MotionConfig {
    /// Frames per second the gate looks at (it skips the rest).
    pub analysis_fps: f64,
    /// Luma difference (0-255) from the background that counts as changed.
    pub pixel_threshold: u8,
    /// Fraction of (unmasked) pixels that must change.
    pub min_changed_fraction: f64,
    /// Fraction of the frame the changed pixels' bounding box must cover.
    pub min_area_fraction: f64,
    pub start_frames: u32,
    pub stop_frames: u32,
    /// Background adaptation per analysed frame (0-1): higher forgets faster.
    pub background_rate: f64,
    /// Polygons to ignore, each a list of [x, y] in 0..1 of the frame.
    pub masks: Vec<Vec<[f64; 2]>>,
}

impl Default for MotionConfig {
    fn default() -> Self {
        Self {
            analysis_fps: 5.0,
            pixel_threshold: 25,
            min_changed_fraction: 0.005,
            min_area_fraction: 0.002,
            start_frames: 2,
            stop_frames: 10,
            background_rate: 0.05,
            masks: Vec::new(),
        }
    }
}

impl MotionConfig {
    pub(crate) fn validate(&self, p: &mut Problems) {
        let m = self;
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
    }
}

/// `[events]`: how much history to keep.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Retention {
    pub max_rows: u32,
    pub max_age_days: u32,
}

impl Default for Retention {
    fn default() -> Self {
        Self {
            max_rows: 10_000,
            max_age_days: 30,
        }
    }
}

impl Retention {
    pub(crate) fn validate(&self, p: &mut Problems) {
        let e = self;
        // 0 rows once deleted every event as it was created, its video orphaned.
        p.int("events.max_rows", e.max_rows.into(), 1, 10_000_000);
        p.int("events.max_age_days", e.max_age_days.into(), 1, 36_500);
    }
}

/// `[recording]`: video files of events.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RecordingConfig {
    pub enabled: bool,
    /// Seconds of ring history before the event's start that go into its file.
    pub pre_secs: f64,
    /// Seconds after the event's end that go into its file.
    pub post_secs: f64,
    /// Longest recording (an event that lasts longer gets its first max_secs).
    pub max_secs: f64,
    /// Most MiB the clips directory may hold; the oldest recordings go first.
    pub disk_budget_mb: u64,
    /// MiB the data directory's filesystem keeps free: videos never eat into it (the
    /// database's room to grow); the oldest recordings go first to keep it.
    pub min_free_mb: u64,
}

impl Default for RecordingConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            pre_secs: 5.0,
            post_secs: 5.0,
            max_secs: 120.0,
            disk_budget_mb: 2048,
            min_free_mb: 256,
        }
    }
}

impl RecordingConfig {
    /// `pre_secs` cannot reach further back than the ring keeps frames.
    pub(crate) fn validate(&self, p: &mut Problems, ring_max_age_secs: f64) {
        let r = self;
        let secs = |v: f64, max: f64| v.is_finite() && (0.0..=max).contains(&v);
        p.check(
            "recording.pre_secs",
            secs(r.pre_secs, ring_max_age_secs),
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

impl Storage {
    pub(crate) fn validate(&self, p: &mut Problems) {
        let s = self;
        p.check(
            "storage.data_dir",
            !s.data_dir.as_os_str().is_empty(),
            "must not be empty",
        );
    }
}
