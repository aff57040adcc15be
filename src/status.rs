//! The recorder's figures as one JSON document, for every front end that reports them
//! (`GET /api/stats`, MQTT's `<prefix>/stats`): per camera what the summary line and the
//! console's `status`, `cams` and `mem` know (capture, ring fill and budget, the camera's
//! memory, analysis), the process's memory, and the model; and an event as every front end shows it.

use std::sync::{Arc, Mutex};

use serde::Serialize;
use serde_json::json;

use crate::analysis::AnalysisStats;
use crate::clock::Clock;
use crate::events::Event;
use crate::inference::ModelInfo;
use crate::pipeline::CameraView;
use crate::stamp::Stamp;

/// Where the figures come from.
pub struct Sources<'a> {
    pub clock: &'a dyn Clock,
    pub cameras: &'a [CameraView],
    /// In camera order.
    pub analysis: &'a [Arc<Mutex<AnalysisStats>>],
    pub model: Option<&'a ModelInfo>,
    pub uptime_secs: f64,
}

/// The figures now.
pub fn stats(s: &Sources<'_>) -> serde_json::Value {
    let now_mono = s.clock.mono_us();
    let cameras: Vec<_> = s
        .cameras
        .iter()
        .enumerate()
        .map(|(i, c)| {
            let report = c.report(now_mono);
            let analysis = s
                .analysis
                .get(i)
                .map(|a| a.lock().unwrap_or_else(|e| e.into_inner()).clone());
            json!({
                "id": c.config.id,
                "capture": report.stats,
                "ring": report.ring,
                "ring_budget": report.ring_budget,
                "memory_bytes": report.memory_bytes,
                "analysis": analysis,
            })
        })
        .collect();
    let process = crate::memory::process_memory().ok();
    let os = crate::memory::os_resident().map(|(rss, peak)| json!({ "rss": rss, "peak": peak }));
    json!({
        "time": Stamp::from_wall_us(s.clock.wall_us()),
        "uptime_secs": s.uptime_secs,
        "model": s.model,
        "cameras": cameras,
        "process_memory": process,
        "os_memory": os,
    })
}

/// An event as every front end shows it (`GET /api/events`, MQTT's `<prefix>/events`): the
/// stored fields, its times as stamps, and the URLs of what it has, under `base` (empty for
/// the API's own relative URLs; the page's address for MQTT; no URLs where `base` is None,
/// that is, where the web page is off).
#[derive(Serialize)]
pub struct EventView<'a> {
    #[serde(flatten)]
    pub event: &'a Event,
    pub start: Stamp,
    pub end: Option<Stamp>,
    pub snapshot_url: Option<String>,
    pub clip_url: Option<String>,
    pub clip_mjpeg_url: Option<String>,
}

impl<'a> EventView<'a> {
    pub fn new(e: &'a Event, base: Option<&str>) -> Self {
        let video = e.video.as_ref().is_some_and(|v| v.state == "complete");
        let url = |has: bool, what: &str| {
            base.filter(|_| has)
                .map(|b| format!("{b}/api/events/{}/{what}", e.id))
        };
        EventView {
            start: Stamp::from_wall_us(e.start_us),
            end: e.end_us.map(Stamp::from_wall_us),
            snapshot_url: url(e.snapshot, "snapshot.jpg"),
            clip_url: url(video, "clip.avi"),
            clip_mjpeg_url: url(video, "clip.mjpeg"),
            event: e,
        }
    }
}
