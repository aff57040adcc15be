//! `[ring]` and `[[cameras]]`: what each camera is asked for and the ring budget its
//! frames live in.

use std::collections::HashSet;
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::Problems;

/// Upper bound for one ring's byte budget: far above any board we target, low enough that
/// a typo (an extra zero or two) is caught at load instead of by the OOM killer.
pub const MAX_RING_BYTES: u64 = 16 << 30;
/// Upper bound for one ring's frame slots (metadata is reserved up front for all of them).
pub const MAX_RING_FRAMES: u32 = 1_000_000;

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

impl RingSection {
    pub(crate) fn validate(&self, p: &mut Problems) {
        check_ring(
            p,
            "ring",
            Some(self.frames),
            Some(self.max_bytes),
            Some(self.max_age_secs),
        );
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

/// `cameras`: at most 16, ids unique, each camera valid.
pub(crate) fn validate_cameras(p: &mut Problems, cameras: &[CameraConfig]) {
    p.int("cameras", cameras.len() as u64, 0, 16);
    let mut seen = HashSet::new();
    for (i, cam) in cameras.iter().enumerate() {
        let at = format!("cameras[{i}]");
        cam.validate(p, &at);
        if !seen.insert(cam.id.as_str()) {
            p.push(
                format!("{at}.id"),
                format!("duplicate camera id {:?}", cam.id),
            );
        }
    }
}

impl CameraConfig {
    fn validate(&self, p: &mut Problems, at: &str) {
        let cam = self;
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
