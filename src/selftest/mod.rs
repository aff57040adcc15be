//! `--self-test`: run the configured cameras for a few seconds, measure, and print one
//! row per check (measured, target, PASS/FAIL). The boot-time health check of the device
//! and the first thing a technician runs over the serial cable.
//!
//! The JSON form (`--json`) is read by field tooling and the emulated-device tests (its
//! shape: `report.rs`). One file per group of rows: `cameras`, `probe` (frame to event),
//! `household`, `identity`, `xclip`, `http`, `mqtt`.

mod cameras;
mod household;
mod http;
mod identity;
mod mqtt;
mod probe;
mod report;
mod xclip;

pub use report::{Check, Op, Report, SystemInfo, Verdict};

use cameras::{camera_checks, disk_check, motion_check, ring_stress};
use household::household_checks;
use identity::identity_checks;
use probe::Probe;
use report::worst_of;
use xclip::{synthetic_clips, xclip_checks};

use std::fmt::Write as _;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Serialize;

use std::path::PathBuf;

use crate::analysis::{self, AnalysisConfig, AnalysisDeps, Analyzer};
use crate::capture::open_source;
use crate::clock::Clock;
use crate::config::CameraConfig;
use crate::config::Config;
use crate::config::RecordingConfig;
use crate::error_chain;
use crate::events::EventStore;
use crate::household::{vectors, GallerySet, Household, Matrix};
use crate::inference::{ClipRequest, ModelInfo, ServiceConfig, WhenFull, XclipService};
use crate::memory::{self, Arena, MemoryError, ProcessMemory, MIB};
use crate::pipeline::{CameraReport, Pipeline, PipelineError};
use crate::recording::ClipDir;
use crate::ring::FrameBatch;
use crate::ring::{FrameFormat, FrameMeta, FrameRing, RingConfig, RingError};

#[derive(Debug, thiserror::Error)]
pub enum SelfTestError {
    #[error(transparent)]
    Pipeline(#[from] PipelineError),
    #[error("memory accounting")]
    Memory(#[from] MemoryError),
    #[error("ring stress")]
    Ring(#[from] RingError),
}

/// Run the self-test: the product spec's ring case, then every configured camera for
/// `seconds`.
pub fn run(cfg: &Config, seconds: f64, clock: Arc<dyn Clock>) -> Result<Report, SelfTestError> {
    run_with(cfg, seconds, clock, None)
}

/// The self-test inside a running recorder (the console's `selftest`): the cameras are
/// already open, so their rows come from `live` reports instead of a fresh capture run.
pub fn run_live(
    cfg: &Config,
    clock: Arc<dyn Clock>,
    live: Vec<CameraReport>,
) -> Result<Report, SelfTestError> {
    run_with(cfg, 0.0, clock, Some(live))
}

fn run_with(
    cfg: &Config,
    seconds: f64,
    clock: Arc<dyn Clock>,
    live: Option<Vec<CameraReport>>,
) -> Result<Report, SelfTestError> {
    let mut checks = ring_stress(cfg)?;
    checks.extend(household_checks(cfg, clock.clone()));
    checks.push(motion_check(cfg));
    checks.push(disk_check(cfg));
    let (xclip, models, load) = xclip_checks(cfg, &*clock);
    checks.extend(xclip);
    let (identity_rows, identity) = identity_checks(cfg);
    checks.extend(identity_rows);
    if let Some(cameras) = live {
        for cam in &cameras {
            checks.extend(camera_checks(cfg, cam));
        }
        let mut report = Report::from_checks(checks, seconds, cameras);
        report.models = models;
        report.identity = identity;
        return Ok(report);
    }
    let mut pipeline = Pipeline::start(cfg, clock.clone())?;
    // Keep the X-CLIP workers busy the whole time the cameras run: capture must not notice.
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let loader = load.map(|(svc, clips)| {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let mut done = 0u64;
            let mut i = 0;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let req = ClipRequest {
                    camera: "load".into(),
                    frames: clips[i % clips.len()].clone(),
                };
                i += 1;
                if svc.classify(req).is_ok() {
                    done += 1;
                }
            }
            done
        })
    });
    clock.sleep(Duration::from_secs_f64(seconds));
    let cameras = pipeline.reports();
    checks.extend(http::http_checks(cfg, &pipeline, clock.clone()));
    checks.extend(mqtt::mqtt_checks(cfg));
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    pipeline.stop();
    // The probe runs after the cameras' window, so its own load does not colour their
    // fps rows.
    checks.extend(Probe::run(cfg, clock.clone()));
    if let Some(h) = loader {
        let done = h.join().unwrap_or(0);
        checks.push(
            Check::new("xclip_load_clips", None, done as f64, Op::AtLeast, 1.0, "clips").detail(
                "X-CLIP kept busy while the cameras ran; their fps rows are measured under that load",
            ),
        );
    }
    for cam in &cameras {
        checks.extend(camera_checks(cfg, cam));
    }
    let mut report = Report::from_checks(checks, seconds, cameras);
    report.models = models;
    report.identity = identity;
    Ok(report)
}
