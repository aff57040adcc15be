//! The capture thread of one camera: bound to the camera's jemalloc arena, it opens the
//! source, moves each frame into the ring, keeps the counters, and reopens the source
//! with capped backoff when it fails. It never waits on anything downstream.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use super::stats::{CameraState, CameraStats};
use super::{open_source, ErrorKind, FrameSource, SourceError};
use crate::clock::Clock;
use crate::config::CameraConfig;
use crate::memory::Arena;
use crate::ring::FrameRing;

const BACKOFF_START: Duration = Duration::from_millis(200);
const BACKOFF_MAX: Duration = Duration::from_secs(30);

/// What a camera's capture thread shares with the rest of the process.
#[derive(Debug)]
pub struct CameraShared {
    pub id: String,
    pub ring: Arc<FrameRing>,
    stats: Mutex<CameraStats>,
    stop: AtomicBool,
}

impl CameraShared {
    pub fn new(id: String, ring: Arc<FrameRing>) -> Self {
        Self {
            id,
            ring,
            stats: Mutex::new(CameraStats::new()),
            stop: AtomicBool::new(false),
        }
    }

    pub fn stats(&self) -> MutexGuard<'_, CameraStats> {
        // The counters stay meaningful even if a holder panicked mid-read.
        self.stats.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn request_stop(&self) {
        self.stop.store(true, Ordering::SeqCst);
    }

    pub fn stopping(&self) -> bool {
        self.stop.load(Ordering::SeqCst)
    }
}

/// How to open a camera's source; a seam so tests can hand in a source that fails on
/// cue while the real one is tested through [`open_source`].
pub type Opener = Box<dyn FnMut() -> Result<Box<dyn FrameSource>, SourceError> + Send>;

/// The opener for a configured camera.
pub fn config_opener(cam: CameraConfig, clock: Arc<dyn Clock>, paced: bool) -> Opener {
    Box::new(move || open_source(&cam, clock.clone(), paced))
}

/// Body of the capture thread. Returns when [`CameraShared::request_stop`] is called.
pub fn run_capture(
    shared: &CameraShared,
    arena: Option<&Arena>,
    mut open: Opener,
    clock: &dyn Clock,
    frame_capacity: usize,
) {
    if let Some(arena) = arena {
        if let Err(e) = arena.bind_current_thread() {
            tracing::warn!(camera = %shared.id, error = %e, "cannot bind capture thread to its arena; its memory is counted as shared");
        }
    }
    let mut buf = Vec::with_capacity(frame_capacity);
    let mut backoff = BACKOFF_START;
    while !shared.stopping() {
        let mut source = match open() {
            Ok(s) => s,
            Err(e) => {
                set_down(shared, &e);
                sleep_unless_stopped(shared, clock, backoff);
                backoff = (backoff * 2).min(BACKOFF_MAX);
                continue;
            }
        };
        {
            let mut st = shared.stats();
            st.state = CameraState::Streaming;
            st.source = Some(source.info().clone());
        }
        tracing::info!(camera = %shared.id, source = ?source.info(), "camera streaming");
        while !shared.stopping() {
            match source
                .next_frame(&mut buf)
                .and_then(|cap| sized(source.info(), cap))
            {
                Ok(cap) => {
                    let t0 = Instant::now();
                    let pushed = shared.ring.push(cap.meta, &buf);
                    let push_ns = t0.elapsed().as_nanos() as u64;
                    let mut st = shared.stats();
                    st.skipped += cap.dropped_before;
                    match pushed {
                        Ok(_) => {
                            // Liveness and fps count when nvr-edge received the frame; the
                            // driver's capture timestamp (kept in the ring) can run ahead of
                            // our clock by a fraction of a frame.
                            st.record_frame(clock.mono_us(), clock.wall_us(), push_ns);
                            backoff = BACKOFF_START;
                        }
                        Err(e) => {
                            st.refused += 1;
                            drop(st);
                            tracing::debug!(camera = %shared.id, error = %e, "ring refused frame");
                        }
                    }
                }
                Err(e) if e.kind() == ErrorKind::BadFrame => {
                    shared.stats().bad_frames += 1;
                    tracing::debug!(camera = %shared.id, error = %e, "bad frame skipped");
                }
                Err(e) => {
                    set_down(shared, &e);
                    shared.stats().reconnects += 1;
                    break;
                }
            }
        }
        // Close the device before sleeping so it can be re-enumerated.
        drop(source);
        if !shared.stopping() {
            sleep_unless_stopped(shared, clock, backoff);
            backoff = (backoff * 2).min(BACKOFF_MAX);
        }
    }
    shared.stats().state = CameraState::Stopped;
}

/// A frame whose header claims another size than the camera streams at is a bad frame:
/// nothing downstream decodes it, so a 17 KB JPEG that claims 65500x65500 pixels (a
/// pixel bomb, or a corrupt header) costs no decoder time or memory.
fn sized(info: &super::SourceInfo, cap: super::Captured) -> Result<super::Captured, SourceError> {
    if (cap.meta.width, cap.meta.height) == (info.width, info.height) {
        Ok(cap)
    } else {
        Err(SourceError::BadFrame(format!(
            "frame of {}x{} from a camera streaming {}x{}",
            cap.meta.width, cap.meta.height, info.width, info.height
        )))
    }
}

fn set_down(shared: &CameraShared, e: &SourceError) {
    let state = match e.kind() {
        ErrorKind::Gone => CameraState::Disconnected,
        _ => CameraState::Unavailable,
    };
    let mut st = shared.stats();
    let changed = st.state != state;
    st.state = state;
    st.last_error = Some(e.to_string());
    drop(st);
    if changed {
        tracing::warn!(camera = %shared.id, error = %e, "camera down, retrying with backoff");
    }
}

fn sleep_unless_stopped(shared: &CameraShared, clock: &dyn Clock, d: Duration) {
    let step = Duration::from_millis(50);
    let mut left = d;
    while !shared.stopping() && !left.is_zero() {
        let s = left.min(step);
        clock.sleep(s);
        left -= s;
    }
}
