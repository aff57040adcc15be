//! Cameras: every frame source behind one trait, and the capture thread that moves their
//! frames into the camera's ring.
//!
//! A source fills a caller-owned buffer (`next_frame`), blocking until the next frame is
//! due, so the V4L2 source can copy straight from a driver buffer and synthetic or replay
//! sources pace themselves the same way. Errors say what the capture loop should do
//! about them (see [`ErrorKind`]): skip a bad frame, reconnect to a vanished device,
//! or wait for a fix to a source that cannot work as configured.

pub mod jpeg;
mod pacer;
pub mod replay;
pub mod stats;
pub mod synthetic;
pub mod v4l2;
pub mod worker;

use std::sync::Arc;

use serde::Serialize;

use crate::clock::Clock;
use crate::config::{CameraConfig, SourceKind};
use crate::ring::{FrameFormat, FrameMeta};

pub use pacer::Pacer;

/// What a source delivers, as granted (which may differ from what was asked).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SourceInfo {
    /// `synthetic`, `replay`, or the V4L2 driver name.
    pub driver: String,
    pub format: FrameFormat,
    pub width: u32,
    pub height: u32,
    pub fps: f64,
    /// Human-readable detail: device path, file, encoder settings.
    pub detail: String,
}

/// One frame written into the caller's buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Captured {
    pub meta: FrameMeta,
    /// Frames lost since the previous one (sequence gaps, or pacing fell behind).
    pub dropped_before: u64,
}

/// How the capture loop reacts to an error.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorKind {
    /// This frame is unusable; count it and carry on.
    BadFrame,
    /// The device vanished or stopped answering; reopen it with backoff.
    Gone,
    /// The source cannot run as configured (missing file, unsupported format); retry
    /// slowly in case someone fixes it in place.
    Unavailable,
}

#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    #[error("bad frame: {0}")]
    BadFrame(String),
    #[error("device gone: {0}")]
    Gone(String),
    #[error("unavailable: {0}")]
    Unavailable(String),
}

impl SourceError {
    pub fn kind(&self) -> ErrorKind {
        match self {
            SourceError::BadFrame(_) => ErrorKind::BadFrame,
            SourceError::Gone(_) => ErrorKind::Gone,
            SourceError::Unavailable(_) => ErrorKind::Unavailable,
        }
    }

    /// Map an OS error once, here, so callers branch on the kind and never on strings.
    pub fn from_io(what: &str, e: &std::io::Error) -> Self {
        const ENOENT: i32 = 2;
        const EIO: i32 = 5;
        const ENXIO: i32 = 6;
        const ENODEV: i32 = 19;
        let msg = format!("{what}: {e}");
        match e.raw_os_error() {
            Some(ENODEV | ENXIO | EIO) => SourceError::Gone(msg),
            Some(ENOENT) => SourceError::Unavailable(msg),
            _ => SourceError::Unavailable(msg),
        }
    }
}

/// A camera: something that yields one frame at a time into a buffer the caller owns.
pub trait FrameSource: Send {
    fn info(&self) -> &SourceInfo;
    /// Block until the next frame is due and write it into `buf` (cleared first). The
    /// buffer is reused across calls, so a source that stays within its capacity does
    /// not allocate.
    fn next_frame(&mut self, buf: &mut Vec<u8>) -> Result<Captured, SourceError>;
}

/// Open the source a camera's config names. `paced` false makes synthetic and replay
/// sources run as fast as they can (benchmarks, tests).
pub fn open_source(
    cam: &CameraConfig,
    clock: Arc<dyn Clock>,
    paced: bool,
) -> Result<Box<dyn FrameSource>, SourceError> {
    match cam.source {
        SourceKind::Synthetic => Ok(Box::new(synthetic::SyntheticSource::new(
            cam, clock, paced,
        )?)),
        SourceKind::Replay => Ok(Box::new(replay::ReplaySource::open(cam, clock, paced)?)),
        SourceKind::V4l2 => Ok(Box::new(v4l2::V4l2Source::open(cam, clock)?)),
    }
}
