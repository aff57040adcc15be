//! Starts and stops the cameras: for each one a jemalloc arena, a ring reserved inside it,
//! and a capture thread bound to it; and gathers what each camera reports.
//!
//! Later stages (motion, models, events) attach here, reading the rings; capture never
//! waits on them.

use std::sync::Arc;
use std::thread::JoinHandle;

use serde::Serialize;

use crate::capture::stats::StatsSnapshot;
use crate::capture::worker::{config_opener, run_capture, CameraShared, Opener};
use crate::clock::Clock;
use crate::config::{CameraConfig, Config};
use crate::memory::{Arena, MemoryError};
use crate::ring::{FrameRing, RingConfig, RingError, RingStats};

#[derive(Debug, thiserror::Error)]
pub enum PipelineError {
    #[error("camera {camera}")]
    Memory {
        camera: String,
        #[source]
        source: MemoryError,
    },
    #[error("camera {camera}: ring")]
    Ring {
        camera: String,
        #[source]
        source: RingError,
    },
    #[error("camera {camera}: cannot start capture thread")]
    Spawn {
        camera: String,
        #[source]
        source: std::io::Error,
    },
}

/// One running camera.
pub struct Camera {
    pub config: CameraConfig,
    pub ring_config: RingConfig,
    pub shared: Arc<CameraShared>,
    pub arena: Arc<Arena>,
    thread: Option<JoinHandle<()>>,
}

impl Camera {
    /// Reserve the camera's arena and ring and start its capture thread.
    pub fn start(
        config: CameraConfig,
        ring_config: RingConfig,
        clock: Arc<dyn Clock>,
        open: Opener,
    ) -> Result<Self, PipelineError> {
        let id = config.id.clone();
        let arena = Arc::new(Arena::create().map_err(|source| PipelineError::Memory {
            camera: id.clone(),
            source,
        })?);
        let ring = arena
            .scope(|| FrameRing::new(ring_config))
            .map_err(|source| PipelineError::Memory {
                camera: id.clone(),
                source,
            })?
            .map_err(|source| PipelineError::Ring {
                camera: id.clone(),
                source,
            })?;
        let shared = Arc::new(CameraShared::new(id.clone(), Arc::new(ring)));
        // Room for a raw 16-bit frame: any JPEG of the size fits without growing.
        let frame_capacity =
            (config.width as usize * config.height as usize * 2).min(ring_config.max_bytes);
        let thread = {
            let (shared, arena) = (shared.clone(), arena.clone());
            std::thread::Builder::new()
                .name(format!("cap-{id}"))
                .spawn(move || run_capture(&shared, Some(&arena), open, &*clock, frame_capacity))
                .map_err(|source| PipelineError::Spawn {
                    camera: id.clone(),
                    source,
                })?
        };
        Ok(Self {
            config,
            ring_config,
            shared,
            arena,
            thread: Some(thread),
        })
    }

    pub fn id(&self) -> &str {
        &self.config.id
    }

    pub fn ring(&self) -> &Arc<FrameRing> {
        &self.shared.ring
    }

    pub fn report(&self, now_mono_us: i64) -> CameraReport {
        self.view().report(now_mono_us)
    }

    /// A handle for reporting on this camera from elsewhere (the console).
    pub fn view(&self) -> CameraView {
        CameraView {
            config: self.config.clone(),
            ring_config: self.ring_config,
            shared: self.shared.clone(),
            arena: self.arena.clone(),
        }
    }

    fn stop(&mut self) {
        self.shared.request_stop();
        if let Some(t) = self.thread.take() {
            if t.join().is_err() {
                tracing::error!(camera = %self.config.id, "capture thread panicked");
            }
        }
    }
}

impl Drop for Camera {
    fn drop(&mut self) {
        self.stop();
    }
}

/// What it takes to report on a running camera, without owning it.
#[derive(Clone)]
pub struct CameraView {
    pub config: CameraConfig,
    pub ring_config: RingConfig,
    pub shared: Arc<CameraShared>,
    pub arena: Arc<Arena>,
}

impl CameraView {
    pub fn report(&self, now_mono_us: i64) -> CameraReport {
        CameraReport {
            id: self.config.id.clone(),
            memory_bytes: self.arena.allocated_bytes().ok(),
            ring_budget: RingBudget {
                frames: self.ring_config.frames,
                max_bytes: self.ring_config.max_bytes,
                max_age_secs: self.ring_config.max_age.as_secs_f64(),
            },
            ring: self.shared.ring.stats(),
            stats: self.shared.stats().snapshot(now_mono_us),
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct RingBudget {
    pub frames: usize,
    pub max_bytes: usize,
    pub max_age_secs: f64,
}

/// Everything known about one camera at an instant.
#[derive(Debug, Clone, Serialize)]
pub struct CameraReport {
    pub id: String,
    /// Bytes in the camera's jemalloc arena (ring + capture working memory).
    pub memory_bytes: Option<u64>,
    pub ring_budget: RingBudget,
    pub ring: RingStats,
    pub stats: StatsSnapshot,
}

/// All configured cameras, running.
pub struct Pipeline {
    cameras: Vec<Camera>,
    clock: Arc<dyn Clock>,
}

impl Pipeline {
    /// Start every configured camera, paced in real time.
    pub fn start(cfg: &Config, clock: Arc<dyn Clock>) -> Result<Self, PipelineError> {
        Self::start_with(cfg, clock, true)
    }

    /// As [`Pipeline::start`]; `paced` false runs synthetic and replay sources flat out.
    pub fn start_with(
        cfg: &Config,
        clock: Arc<dyn Clock>,
        paced: bool,
    ) -> Result<Self, PipelineError> {
        let mut cameras = Vec::with_capacity(cfg.cameras.len());
        for cam in &cfg.cameras {
            let opener = config_opener(cam.clone(), clock.clone(), paced);
            cameras.push(Camera::start(
                cam.clone(),
                cfg.ring_for(cam),
                clock.clone(),
                opener,
            )?);
        }
        Ok(Self { cameras, clock })
    }

    pub fn cameras(&self) -> &[Camera] {
        &self.cameras
    }

    pub fn reports(&self) -> Vec<CameraReport> {
        let now = self.clock.mono_us();
        self.cameras.iter().map(|c| c.report(now)).collect()
    }

    /// Stop every capture thread and wait for it.
    pub fn stop(&mut self) {
        for c in &self.cameras {
            c.shared.request_stop();
        }
        for c in &mut self.cameras {
            c.stop();
        }
    }
}

impl Drop for Pipeline {
    fn drop(&mut self) {
        self.stop();
    }
}
