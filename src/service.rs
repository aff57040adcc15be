//! `nvr-edge run`: the long-running job. Starts the cameras, the X-CLIP service and one
//! analysis thread per camera (motion -> clips -> events), logs one summary line per camera
//! at the configured interval, talks to systemd, and stops cleanly on SIGINT or SIGTERM.
//!
//! tokio runs only this control plane; capture, analysis and inference run on their own
//! threads. A model that does not load does not stop the recorder: it captures and
//! records motion events without classifying them, and says so in the log.

use std::sync::Arc;
use std::time::Duration;

use crate::analysis::{AnalysisConfig, AnalysisStats, Analyzer};
use crate::clock::Clock;
use crate::config::Config;
use crate::events::EventStore;
use crate::inference::text_cache::prompt_embeddings;
use crate::inference::{
    ClipTokenizer, ModelInfo, PromptSet, ServiceConfig, XclipModel, XclipService,
};
use crate::memory::MIB;
use crate::pipeline::{Pipeline, PipelineError};
use crate::store::StoreError;

#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    #[error(transparent)]
    Pipeline(#[from] PipelineError),
    #[error("events database")]
    Store(#[from] StoreError),
    #[error("runtime")]
    Runtime(#[from] std::io::Error),
}

/// Everything `run` starts, also usable from tests.
pub struct Appliance {
    pub pipeline: Pipeline,
    pub xclip: Option<Arc<XclipService>>,
    pub model: Option<ModelInfo>,
    pub events: Arc<EventStore>,
    analyzers: Vec<Analyzer>,
}

fn start_xclip(cfg: &Config, clock: &dyn Clock) -> Option<(Arc<XclipService>, ModelInfo)> {
    let x = &cfg.xclip;
    let model = match XclipModel::load(x.models_dir.as_deref()) {
        Ok(m) => Arc::new(m),
        Err(e) => {
            tracing::error!(error = %e, "X-CLIP model not loaded: recording motion events without classifying them");
            return None;
        }
    };
    let info = model.info.clone();
    if info.placeholder {
        tracing::warn!(model = %info.describe(), "X-CLIP model is a placeholder: event actions mean nothing");
    }
    let prompts = PromptSet::new(x.categories.clone());
    let conn = crate::store::open_in(&cfg.storage.data_dir).ok();
    let now = clock.wall_us() / 1_000_000;
    let embeds = match prompt_embeddings(
        &model,
        &ClipTokenizer::new(),
        &prompts.prompts,
        conn.as_ref(),
        now,
    ) {
        Ok((e, st)) => {
            tracing::info!(
                cached = st.cached,
                computed = st.computed,
                "prompt text embeddings ready"
            );
            e
        }
        Err(e) => {
            tracing::error!(error = %e, "prompt text embeddings failed: not classifying");
            return None;
        }
    };
    let svc = XclipService::start(
        model,
        Arc::new(prompts),
        Arc::new(embeds),
        ServiceConfig {
            workers: x.workers as usize,
            queue: x.queue as usize,
            when_full: x.when_full,
            top_k: x.top_k as usize,
            threads: x.threads as usize,
        },
    );
    match svc {
        Ok(s) => Some((Arc::new(s), info)),
        Err(e) => {
            tracing::error!(error = %e, "X-CLIP service did not start: not classifying");
            None
        }
    }
}

impl Appliance {
    pub fn start(cfg: &Config, clock: Arc<dyn Clock>) -> Result<Self, ServiceError> {
        let events = Arc::new(EventStore::open_in(
            &cfg.storage.data_dir,
            cfg.events.clone(),
        )?);
        let (xclip, model) = match start_xclip(cfg, &*clock) {
            Some((s, m)) => (Some(s), Some(m)),
            None => (None, None),
        };
        let pipeline = Pipeline::start(cfg, clock.clone())?;
        let analysis = AnalysisConfig {
            motion: cfg.motion.clone(),
            window_secs: cfg.xclip.window_secs,
            rerun_secs: cfg.xclip.rerun_secs,
        };
        let mut analyzers = Vec::new();
        for cam in pipeline.cameras() {
            analyzers.push(Analyzer::start(
                cam.shared.clone(),
                xclip.clone(),
                events.clone(),
                analysis.clone(),
                clock.clone(),
            )?);
        }
        Ok(Self {
            pipeline,
            xclip,
            model,
            events,
            analyzers,
        })
    }

    /// Analysis figures, in camera order.
    pub fn analysis(&self) -> Vec<AnalysisStats> {
        self.analyzers.iter().map(Analyzer::stats).collect()
    }

    /// Stop analysis first (closing open events), then capture, then inference.
    pub fn stop(&mut self) {
        for a in &mut self.analyzers {
            a.stop();
        }
        self.pipeline.stop();
        self.xclip = None;
    }
}

impl Drop for Appliance {
    fn drop(&mut self) {
        self.stop();
    }
}

pub fn run(cfg: &Config, clock: Arc<dyn Clock>) -> Result<(), ServiceError> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let mut app = Appliance::start(cfg, clock)?;
    tracing::info!(cameras = app.pipeline.cameras().len(), "nvr-edge running");
    // systemd (Type=notify): ready now; watchdog pings from this loop, so a hung control
    // plane gets the service restarted. Both are no-ops outside systemd.
    notify(&[sd_notify::NotifyState::Ready]);
    let watchdog = sd_notify::watchdog_enabled().map(|d| d / 2);
    let every = Duration::from_secs(cfg.log.summary_interval_secs);
    rt.block_on(async {
        let mut tick = tokio::time::interval(every);
        tick.tick().await;
        let mut dog = tokio::time::interval(watchdog.unwrap_or(Duration::from_secs(3600)));
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
        loop {
            tokio::select! {
                _ = tick.tick() => log_summary(&app),
                _ = dog.tick(), if watchdog.is_some() => notify(&[sd_notify::NotifyState::Watchdog]),
                _ = tokio::signal::ctrl_c() => { tracing::info!("SIGINT: stopping"); break; }
                _ = term.recv() => { tracing::info!("SIGTERM: stopping"); break; }
            }
        }
        Ok::<_, std::io::Error>(())
    })?;
    notify(&[sd_notify::NotifyState::Stopping]);
    app.stop();
    log_summary(&app);
    Ok(())
}

fn notify(state: &[sd_notify::NotifyState<'_>]) {
    if let Err(e) = sd_notify::notify(state) {
        tracing::warn!(error = %e, "sd_notify failed");
    }
}

fn log_summary(app: &Appliance) {
    let analysis = app.analysis();
    for (r, a) in app
        .pipeline
        .reports()
        .iter()
        .zip(analysis.iter().map(Some).chain(std::iter::repeat(None)))
    {
        let s = &r.stats;
        let a = a.cloned().unwrap_or_default();
        tracing::info!(
            camera = %r.id,
            state = ?s.state,
            camera_fps = format_args!("{:.1}", s.camera_fps),
            frames = s.frames,
            skipped = s.skipped,
            bad_frames = s.bad_frames,
            last_frame_age_ms = format_args!("{:.0}", s.last_frame_age_ms.unwrap_or(f64::INFINITY)),
            ring_frames = r.ring.len,
            ring_mib = format_args!("{:.1}", r.ring.bytes_used as f64 / MIB),
            memory_mib = format_args!("{:.1}", r.memory_bytes.unwrap_or(0) as f64 / MIB),
            push_ms_p99 = format_args!("{:.3}", s.push_ms_p99),
            in_motion = a.in_motion,
            events = a.events,
            clips = a.clips_done,
            clips_skipped = a.clips_skipped,
            gate_ms = format_args!("{:.2}", a.gate_ms_avg),
            "camera summary"
        );
    }
}
