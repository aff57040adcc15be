//! Per-camera figures a user can trust: every fps figure comes with the time of the last
//! frame, so a dead camera can never look healthy, and dropped or bad frames are counted
//! where they happen.

use hdrhistogram::Histogram;
use serde::Serialize;

use super::SourceInfo;

/// Frame times kept for the sliding fps window (enough for 60 fps over 8 s).
const WINDOW_CAP: usize = 512;
/// Push latencies above this (ns) are clamped into the top bucket.
const PUSH_NS_MAX: u64 = 60_000_000_000;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum CameraState {
    Starting,
    Streaming,
    /// The device vanished or failed; the capture thread is retrying with backoff.
    Disconnected,
    /// The source cannot run as configured; retried slowly.
    Unavailable,
    Stopped,
}

/// Mutable counters, owned by the camera's capture thread behind a mutex.
#[derive(Debug)]
pub struct CameraStats {
    pub state: CameraState,
    pub last_error: Option<String>,
    pub source: Option<SourceInfo>,
    pub frames: u64,
    /// Frames the source lost (sequence gaps, pacing fell behind).
    pub skipped: u64,
    /// Frames that arrived unusable (corrupt JPEG, short buffer).
    pub bad_frames: u64,
    /// Frames the ring refused (out of order, larger than the ring).
    pub refused: u64,
    pub reconnects: u64,
    first_frame_mono_us: Option<i64>,
    last_frame_mono_us: Option<i64>,
    last_frame_wall_us: Option<i64>,
    window: heapless::Deque<i64, WINDOW_CAP>,
    push_ns: Histogram<u64>,
    push_ns_sum: u64,
    push_ns_max: u64,
}

impl Default for CameraStats {
    fn default() -> Self {
        Self::new()
    }
}

/// A camera whose last frame is older than this is not live: the web page, `/api/health`,
/// MQTT's connectivity and the camera-outage event all say so by this one rule.
pub const LIVE_MS: f64 = 5000.0;

/// Whether a camera counts as delivering frames, from its last frame's age (None: it has
/// delivered none yet).
pub fn is_live(last_frame_age_ms: Option<f64>) -> bool {
    last_frame_age_ms.is_some_and(|a| a < LIVE_MS)
}

impl CameraStats {
    /// The age of the last frame at `now_mono_us` (cheap: no quantiles, unlike
    /// [`CameraStats::snapshot`]).
    pub fn last_frame_age_ms(&self, now_mono_us: i64) -> Option<f64> {
        self.last_frame_mono_us
            .map(|t| (now_mono_us - t).max(0) as f64 / 1e3)
    }

    pub fn new() -> Self {
        Self {
            state: CameraState::Starting,
            last_error: None,
            source: None,
            frames: 0,
            skipped: 0,
            bad_frames: 0,
            refused: 0,
            reconnects: 0,
            first_frame_mono_us: None,
            last_frame_mono_us: None,
            last_frame_wall_us: None,
            window: heapless::Deque::new(),
            // Two significant digits keep the histogram at tens of KiB; the exact mean and
            // max are tracked beside it.
            push_ns: Histogram::new_with_bounds(1, PUSH_NS_MAX, 2)
                .expect("static histogram bounds are valid"),
            push_ns_sum: 0,
            push_ns_max: 0,
        }
    }

    /// Account one frame stored in the ring. Allocation-free.
    pub fn record_frame(&mut self, mono_us: i64, wall_us: i64, push_ns: u64) {
        self.frames += 1;
        self.first_frame_mono_us.get_or_insert(mono_us);
        self.last_frame_mono_us = Some(mono_us);
        self.last_frame_wall_us = Some(wall_us);
        if self.window.is_full() {
            self.window.pop_front();
        }
        // Cannot fail: there is room after the pop above.
        let _ = self.window.push_back(mono_us);
        self.push_ns
            .saturating_record(push_ns.clamp(1, PUSH_NS_MAX));
        self.push_ns_sum += push_ns;
        self.push_ns_max = self.push_ns_max.max(push_ns);
    }

    /// Frames per second over the last `window_us`, ending now. Zero when the newest
    /// frame is older than the window: a camera that stopped reads as stopped.
    pub fn window_fps(&self, now_us: i64, window_us: i64) -> f64 {
        let from = now_us - window_us;
        let mut recent = self.window.iter().filter(|&&t| t > from);
        let (Some(first), Some(last)) = (recent.next().copied(), self.window.back().copied())
        else {
            return 0.0;
        };
        let n = 1 + recent.count();
        if n < 2 || last <= first || last <= from {
            return 0.0;
        }
        (n - 1) as f64 * 1e6 / (last - first) as f64
    }

    /// Mean rate from the first frame to the last (the self-test's figure).
    pub fn average_fps(&self) -> f64 {
        match (self.first_frame_mono_us, self.last_frame_mono_us) {
            (Some(a), Some(b)) if b > a && self.frames > 1 => {
                (self.frames - 1) as f64 * 1e6 / (b - a) as f64
            }
            _ => 0.0,
        }
    }

    pub fn snapshot(&self, now_mono_us: i64) -> StatsSnapshot {
        let n = self.push_ns.len();
        StatsSnapshot {
            state: self.state,
            last_error: self.last_error.clone(),
            source: self.source.clone(),
            frames: self.frames,
            skipped: self.skipped,
            bad_frames: self.bad_frames,
            refused: self.refused,
            reconnects: self.reconnects,
            camera_fps: self.window_fps(now_mono_us, 5_000_000),
            average_fps: self.average_fps(),
            last_frame_wall_us: self.last_frame_wall_us,
            // A frame stamped after `now` was read (the driver's stamp races the report)
            // is as fresh as a frame gets: 0, not a negative age.
            last_frame_age_ms: self.last_frame_age_ms(now_mono_us),
            push_ms_avg: if n > 0 {
                self.push_ns_sum as f64 / n as f64 / 1e6
            } else {
                0.0
            },
            push_ms_p50: self.push_ns.value_at_quantile(0.5) as f64 / 1e6,
            push_ms_p99: self.push_ns.value_at_quantile(0.99) as f64 / 1e6,
            push_ms_max: self.push_ns_max as f64 / 1e6,
        }
    }
}

/// A copy of a camera's figures at one instant, for reports.
#[derive(Debug, Clone, Serialize)]
pub struct StatsSnapshot {
    pub state: CameraState,
    pub last_error: Option<String>,
    pub source: Option<SourceInfo>,
    pub frames: u64,
    pub skipped: u64,
    pub bad_frames: u64,
    pub refused: u64,
    pub reconnects: u64,
    /// Over the last 5 s; 0 when no frame arrived in that time.
    pub camera_fps: f64,
    /// From the first frame to the last.
    pub average_fps: f64,
    pub last_frame_wall_us: Option<i64>,
    pub last_frame_age_ms: Option<f64>,
    pub push_ms_avg: f64,
    pub push_ms_p50: f64,
    pub push_ms_p99: f64,
    pub push_ms_max: f64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn window_fps_drops_to_zero_when_frames_stop() {
        let mut s = CameraStats::new();
        for i in 0..100 {
            s.record_frame(i * 40_000, 0, 1000);
        }
        let last = 99 * 40_000;
        assert!((s.window_fps(last, 2_000_000) - 25.0).abs() < 1e-9);
        assert!((s.average_fps() - 25.0).abs() < 1e-9);
        assert_eq!(s.window_fps(last + 3_000_000, 2_000_000), 0.0);
        assert_eq!(s.frames, 100);
    }
}
