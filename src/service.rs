//! `nvr-edge run`: the long-running job. Starts the cameras, logs one summary line per
//! camera at the configured interval, and stops cleanly on SIGINT or SIGTERM.
//!
//! tokio runs only this control plane; capture runs on its own threads and never waits
//! on it.

use std::sync::Arc;
use std::time::Duration;

use crate::clock::Clock;
use crate::config::Config;
use crate::memory::MIB;
use crate::pipeline::{Pipeline, PipelineError};

#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    #[error(transparent)]
    Pipeline(#[from] PipelineError),
    #[error("runtime")]
    Runtime(#[from] std::io::Error),
}

pub fn run(cfg: &Config, clock: Arc<dyn Clock>) -> Result<(), ServiceError> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let mut pipeline = Pipeline::start(cfg, clock)?;
    tracing::info!(cameras = pipeline.cameras().len(), "nvr-edge running");
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
                _ = tick.tick() => log_summary(&pipeline),
                _ = dog.tick(), if watchdog.is_some() => notify(&[sd_notify::NotifyState::Watchdog]),
                _ = tokio::signal::ctrl_c() => { tracing::info!("SIGINT: stopping"); break; }
                _ = term.recv() => { tracing::info!("SIGTERM: stopping"); break; }
            }
        }
        Ok::<_, std::io::Error>(())
    })?;
    notify(&[sd_notify::NotifyState::Stopping]);
    pipeline.stop();
    log_summary(&pipeline);
    Ok(())
}

fn notify(state: &[sd_notify::NotifyState<'_>]) {
    if let Err(e) = sd_notify::notify(state) {
        tracing::warn!(error = %e, "sd_notify failed");
    }
}

fn log_summary(pipeline: &Pipeline) {
    for r in pipeline.reports() {
        let s = &r.stats;
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
            "camera summary"
        );
    }
}
