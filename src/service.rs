//! `nvr-edge run`: the long-running job. Starts the cameras, the X-CLIP service and one
//! analysis thread per camera (motion -> clips -> events), logs one summary line per camera
//! at the configured interval, talks to systemd, and stops cleanly on SIGINT or SIGTERM.
//!
//! tokio runs only this control plane; capture, analysis and inference run on their own
//! threads. A model that does not load does not stop the recorder: it captures and
//! records motion events without classifying them, and says so in the log.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::analysis::{self, AnalysisConfig, AnalysisDeps, AnalysisStats, Analyzer, IdentityDeps};
use crate::clock::Clock;
use crate::config::Config;
use crate::console::{self, BackendError};
use crate::events::EventStore;
use crate::household::Household;
use crate::http::{HttpDeps, HttpError, HttpState};
use crate::inference::{ModelInfo, XclipService};
use crate::memory::MIB;
use crate::pipeline::CameraView;
use crate::pipeline::{Pipeline, PipelineError};
use crate::recording::open_clips;
use crate::selftest;
use crate::store::StoreError;
use crate::users::UserStore;

#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    #[error(transparent)]
    Http(#[from] HttpError),
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
    /// The identity models and household the analysis matches against, when loaded.
    pub identity: Option<Arc<IdentityDeps>>,
    analyzers: Vec<Analyzer>,
    /// The console threads (serial line, socket) and their stop flag.
    console: Option<(Arc<AtomicBool>, Vec<std::thread::JoinHandle<()>>)>,
    started: Instant,
}

/// The console's view of the running recorder.
struct Backend {
    cfg: Config,
    clock: Arc<dyn Clock>,
    cameras: Vec<CameraView>,
    analysis: Vec<Arc<Mutex<AnalysisStats>>>,
    events: Arc<EventStore>,
    model: Option<ModelInfo>,
    started: Instant,
}

impl Backend {
    fn reports(&self) -> Vec<crate::pipeline::CameraReport> {
        let now = self.clock.mono_us();
        self.cameras.iter().map(|c| c.report(now)).collect()
    }

    fn household(&self) -> Result<Household, crate::household::HouseholdError> {
        Household::open_in(
            &self.cfg.storage.data_dir,
            self.cfg.household.clone(),
            self.clock.clone(),
        )
    }
}

impl console::Backend for Backend {
    fn status(&self) -> String {
        let mut out = format!(
            "nvr-edge {} up {} s; model {}",
            env!("CARGO_PKG_VERSION"),
            self.started.elapsed().as_secs(),
            self.model
                .as_ref()
                .map_or("none (not classifying)".to_string(), ModelInfo::describe)
        );
        for (r, a) in self.reports().iter().zip(&self.analysis) {
            let a = a.lock().unwrap_or_else(|e| e.into_inner()).clone();
            let s = &r.stats;
            out.push_str(&format!(
                "\n{:<12} {:?} {:.1} fps, {} frames, last frame {} ms ago, motion {}, {} events, {}",
                r.id,
                s.state,
                s.camera_fps,
                s.frames,
                s.last_frame_age_ms
                    .map_or("-".to_string(), |v| format!("{v:.0}")),
                if a.in_motion { "yes" } else { "no" },
                a.events,
                a.recording.as_ref().map_or("recording off".to_string(), |v| format!(
                    "{} videos{}{}",
                    v.finished,
                    if v.recording { ", recording now" } else { "" },
                    if v.failed > 0 { format!(", {} failed", v.failed) } else { String::new() }
                ))
            ));
        }
        out
    }

    fn cams(&self) -> String {
        let mut out = Vec::new();
        for r in self.reports() {
            let s = &r.stats;
            out.push(format!(
                "{}: {}; skipped {}, bad {}, refused {}, reconnects {}; ring {}/{} frames, {:.1}/{:.1} MiB{}",
                r.id,
                s.source.as_ref().map_or("not open".to_string(), |src| src.detail.clone()),
                s.skipped,
                s.bad_frames,
                s.refused,
                s.reconnects,
                r.ring.len,
                r.ring_budget.frames,
                r.ring.bytes_used as f64 / MIB,
                r.ring_budget.max_bytes as f64 / MIB,
                s.last_error.as_deref().map(|e| format!("; last error: {e}")).unwrap_or_default()
            ));
        }
        out.join("\n")
    }

    fn mem(&self) -> String {
        let mut out: Vec<String> = self
            .reports()
            .iter()
            .map(|r| {
                format!(
                    "{}: {:.1} MiB (jemalloc arena)",
                    r.id,
                    r.memory_bytes.unwrap_or(0) as f64 / MIB
                )
            })
            .collect();
        if let Ok(m) = crate::memory::process_memory() {
            out.push(format!(
                "process: allocated {:.1} MiB, resident {:.1} MiB, retained {:.1} MiB",
                m.allocated as f64 / MIB,
                m.resident as f64 / MIB,
                m.retained as f64 / MIB
            ));
        }
        out.join("\n")
    }

    fn events(&self, n: u32) -> String {
        match self.events.list(n, None) {
            Ok(list) if list.is_empty() => "no events".into(),
            Ok(list) => list
                .iter()
                .map(|e| {
                    format!(
                        "#{} {} start {} {}: {} [{}] risk {} conf {}{}",
                        e.id,
                        e.camera,
                        e.start_us / 1_000_000,
                        if e.end_us.is_some() { "closed" } else { "open" },
                        e.action.as_deref().unwrap_or("-"),
                        e.category.as_deref().unwrap_or("-"),
                        e.risk
                            .map_or("-".to_string(), |r| format!("{r:?}").to_lowercase()),
                        e.confidence.map_or("-".to_string(), |c| format!("{c:.2}")),
                        if e.model_placeholder {
                            " (placeholder model)"
                        } else {
                            ""
                        }
                    )
                })
                .collect::<Vec<_>>()
                .join("\n"),
            Err(e) => format!("error: {e}"),
        }
    }

    fn household(&self, names: bool) -> String {
        let hh = match self.household() {
            Ok(h) => h,
            Err(e) => return format!("error: {e}"),
        };
        let members = hh.members().unwrap_or_default();
        let vehicles = hh.vehicles().unwrap_or_default();
        let mut out = vec![format!(
            "{} members, {} vehicles",
            members.len(),
            vehicles.len()
        )];
        if !names {
            // Names and trusted plates only after unlock: a plate read here could be
            // shown to a camera to lower an event's risk.
            out.push("(unlock <pin> to list names and plates)".into());
            return out.join("\n");
        }
        out.extend(members.iter().map(|m| {
            format!(
                "member {} {} ({}), {} embeddings",
                m.id,
                m.name,
                m.role,
                m.embeddings.values().sum::<u32>()
            )
        }));
        out.extend(vehicles.iter().map(|v| {
            format!(
                "vehicle {} {} {}{}",
                v.id,
                v.plate.as_deref().unwrap_or("-"),
                v.description,
                if v.trusted { "" } else { " (untrusted)" }
            )
        }));
        out.join("\n")
    }

    fn selftest(&self, row: &mut dyn FnMut(&str)) {
        row("running the self-test on the live cameras ...");
        match selftest::run_live(&self.cfg, self.clock.clone(), self.reports()) {
            Ok(r) => {
                for line in r.render_table().lines() {
                    row(line);
                }
            }
            Err(e) => row(&format!("error: {e}")),
        }
    }

    fn set_log_filter(&self, filter: &str) -> Result<(), BackendError> {
        crate::telemetry::set_filter(filter).map_err(|e| BackendError::failed("log", e))?;
        // Logged at warn so it shows under any filter: the log says who changed what.
        tracing::warn!(filter, "log filter changed from the console");
        Ok(())
    }

    fn remove_member(&self, id: i64) -> Result<String, BackendError> {
        self.household()
            .and_then(|hh| hh.remove_member(id))
            .map_err(|e| BackendError::failed("household", e))?;
        Ok(format!("member {id} removed"))
    }

    fn clear_ring(&self, camera: &str) -> Result<String, BackendError> {
        let cam = self
            .cameras
            .iter()
            .find(|c| c.config.id == camera)
            .ok_or_else(|| BackendError::NoCamera(camera.to_string()))?;
        cam.shared.ring.clear();
        Ok(format!("ring of {camera} cleared"))
    }
}

fn start_xclip(cfg: &Config, clock: &dyn Clock) -> Option<(Arc<XclipService>, ModelInfo)> {
    match crate::inference::xclip::startup::start(cfg, clock.wall_us() / 1_000_000) {
        Ok((svc, info, st)) => {
            if info.placeholder {
                tracing::warn!(model = %info.describe(), "X-CLIP model is a placeholder: event actions mean nothing");
            }
            tracing::info!(
                cached = st.cached,
                computed = st.computed,
                "prompt text embeddings ready"
            );
            Some((Arc::new(svc), info))
        }
        Err(e) => {
            tracing::error!(error = %crate::error_chain(&e), "not classifying: recording motion events without X-CLIP");
            None
        }
    }
}

/// Why identity is off although `[identity]` asks for it.
#[derive(Debug, thiserror::Error)]
pub enum IdentityLoadError {
    #[error(transparent)]
    Models(#[from] crate::inference::identity::ModelError),
    #[error("household")]
    Household(#[from] crate::household::HouseholdError),
}

/// The identity models of `[identity]` and the household they are matched against.
/// `Ok(None)`: identity is off in the config.
pub fn load_identity(
    cfg: &Config,
    clock: Arc<dyn Clock>,
) -> Result<Option<IdentityDeps>, IdentityLoadError> {
    if !cfg.identity.enabled {
        return Ok(None);
    }
    let observer = crate::inference::identity::load_observer(&cfg.identity)?;
    let household = Household::open_in(&cfg.storage.data_dir, cfg.household.clone(), clock)?;
    Ok(Some(IdentityDeps {
        observer: Arc::new(observer),
        household: Arc::new(household),
        cfg: cfg.identity.clone(),
    }))
}

impl Appliance {
    /// Start everything `cfg` asks for, the identity models included when installed.
    pub fn start(cfg: &Config, clock: Arc<dyn Clock>) -> Result<Self, ServiceError> {
        let identity = match load_identity(cfg, clock.clone()) {
            Ok(Some(i)) => {
                tracing::info!(models = %i.observer.describe(), "identity models loaded");
                Some(Arc::new(i))
            }
            Ok(None) => None,
            Err(e) => {
                tracing::warn!(error = %crate::error_chain(&e), "identity models not loaded: events name nobody");
                None
            }
        };
        Self::start_with_identity(cfg, clock, identity)
    }

    /// As [`Appliance::start`], recognising the household through `identity`.
    pub fn start_with_identity(
        cfg: &Config,
        clock: Arc<dyn Clock>,
        identity: Option<Arc<IdentityDeps>>,
    ) -> Result<Self, ServiceError> {
        let events = Arc::new(EventStore::open_in(
            &cfg.storage.data_dir,
            cfg.events.clone(),
        )?);
        // A previous process that was killed left its open events without an end.
        match events.close_interrupted() {
            Ok(0) => {}
            Ok(n) => tracing::warn!(
                events = n,
                "events left open by the last shutdown closed at their last known time, marked interrupted"
            ),
            Err(e) => tracing::error!(error = %e, "closing events left open by the last shutdown"),
        }
        let (xclip, model) = match start_xclip(cfg, &*clock) {
            Some((s, m)) => (Some(s), Some(m)),
            None => (None, None),
        };
        let pipeline = Pipeline::start(cfg, clock.clone())?;
        let deps = AnalysisDeps {
            xclip: xclip.clone(),
            identity: identity.clone(),
            events: events.clone(),
            cfg: AnalysisConfig::from_config(cfg),
            clock: clock.clone(),
        };
        let clips = open_clips(&cfg.recording, &cfg.storage.data_dir, &events);
        let analyzers = analysis::start_all(&pipeline, &deps, &cfg.recording, clips.as_ref())?;
        let console = if cfg.console.enabled || !cfg.console.socket.is_empty() {
            let backend = Arc::new(Backend {
                cfg: cfg.clone(),
                clock: clock.clone(),
                cameras: pipeline.cameras().iter().map(|c| c.view()).collect(),
                analysis: analyzers.iter().map(Analyzer::stats_handle).collect(),
                events: events.clone(),
                model: model.clone(),
                started: Instant::now(),
            });
            let stop = Arc::new(AtomicBool::new(false));
            // One lock-out for the serial line and the socket sessions; wrong PINs outlive
            // a restart (the data directory is the unit's StateDirectory, private to it).
            let lockout = Arc::new(std::sync::Mutex::new(console::Lockout::persistent(
                cfg.storage.data_dir.join("console-lockout"),
            )));
            let mut threads = Vec::new();
            if cfg.console.enabled {
                threads.push(console::spawn(
                    cfg.console.clone(),
                    backend.clone(),
                    stop.clone(),
                    lockout.clone(),
                ));
            }
            if !cfg.console.socket.is_empty() {
                threads.extend(console::spawn_socket(
                    cfg.console.clone(),
                    backend,
                    stop.clone(),
                    lockout,
                ));
            }
            Some((stop, threads))
        } else {
            None
        };
        Ok(Self {
            pipeline,
            xclip,
            model,
            events,
            identity,
            analyzers,
            console,
            started: Instant::now(),
        })
    }

    /// Analysis figures, in camera order.
    pub fn analysis(&self) -> Vec<AnalysisStats> {
        self.analyzers.iter().map(Analyzer::stats).collect()
    }

    /// Stop analysis first (closing open events), then capture, then inference.
    pub fn stop(&mut self) {
        if let Some((stop, handles)) = self.console.take() {
            stop.store(true, Ordering::SeqCst);
            for h in handles {
                let _ = h.join();
            }
        }
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
    // The HTTP address first: one the rules refuse (a LAN address with no user) stops the
    // start before any camera opens, with the reason; one already taken only turns the
    // API off, and the recorder records.
    let users = Arc::new(UserStore::open_in(&cfg.storage.data_dir).map_err(HttpError::Users)?);
    let listener = if cfg.http.enabled {
        match rt.block_on(crate::http::bind(&cfg.http, &users)) {
            Ok(l) => Some(l),
            // A port taken or a certificate that does not load: no API (never plain
            // HTTP where HTTPS was asked for), and the recorder records.
            Err(e @ (HttpError::Bind { .. } | HttpError::Tls(_))) => {
                tracing::error!(error = %crate::error_chain(&e), "http API off");
                None
            }
            Err(e) => return Err(e.into()),
        }
    } else {
        None
    };
    let mut app = Appliance::start(cfg, clock.clone())?;
    tracing::info!(cameras = app.pipeline.cameras().len(), "nvr-edge running");
    let (stop_http, http_stopped) = tokio::sync::oneshot::channel::<()>();
    let http_base = listener.as_ref().and_then(|l| {
        let scheme = if l.is_tls() { "https" } else { "http" };
        l.local_addr().ok().map(|a| format!("{scheme}://{a}"))
    });
    let server = listener.map(|listener| {
        let addr = listener.local_addr().ok();
        let anonymous = users.count().map(|n| n == 0).unwrap_or(false);
        tracing::info!(
            addr = %addr.map_or("?".into(), |a| a.to_string()),
            scheme = if listener.is_tls() { "https" } else { "http" },
            users = if anonymous { "none: every local request is an admin" } else { "required" },
            "http listening"
        );
        // The household the analysis matches against, so a change over HTTP is seen at
        // the next match; without identity models, one of the API's own.
        let household = match &app.identity {
            Some(i) => Some(i.household.clone()),
            None => match Household::open_in(&cfg.storage.data_dir, cfg.household.clone(), clock.clone()) {
                Ok(h) => Some(Arc::new(h)),
                Err(e) => {
                    tracing::error!(error = %crate::error_chain(&e), "http: household database not opened");
                    None
                }
            },
        };
        let state = Arc::new(HttpState::new(HttpDeps {
            cfg: cfg.http.clone(),
            clock: clock.clone(),
            cameras: app.pipeline.cameras().iter().map(|c| c.view()).collect(),
            analysis: app.analyzers.iter().map(Analyzer::stats_handle).collect(),
            events: app.events.clone(),
            users: users.clone(),
            household,
            identity: cfg.identity.clone(),
            model: app.model.clone(),
            clips_dir: cfg.storage.data_dir.join(crate::recording::CLIPS_DIR),
        }));
        let _guard = rt.enter();
        tokio::spawn(async move {
            let shutdown = async {
                let _ = http_stopped.await;
            };
            if let Err(e) = crate::http::serve(listener, state, shutdown).await {
                tracing::error!(error = %e, "http server stopped");
            }
        })
    });
    // MQTT: a password file that does not read, or an outbox that does not open, leaves
    // MQTT off with the reason; the recorder records.
    let mqtt = if cfg.mqtt.enabled {
        let _guard = rt.enter();
        let deps = crate::mqtt::Outbox::open_in(&cfg.storage.data_dir)
            .map_err(crate::mqtt::MqttError::from)
            .and_then(|outbox| {
                crate::mqtt::start(crate::mqtt::MqttDeps {
                    cfg: cfg.mqtt.clone(),
                    clock: clock.clone(),
                    cameras: app.pipeline.cameras().iter().map(|c| c.view()).collect(),
                    analysis: app.analyzers.iter().map(Analyzer::stats_handle).collect(),
                    detect: app.analyzers.iter().map(Analyzer::detect_handle).collect(),
                    events: app.events.clone(),
                    outbox,
                    http_base: http_base.clone(),
                    model: app.model.clone(),
                    started: std::time::Instant::now(),
                    selftest_report: cfg.http.selftest_report.clone(),
                    data_dir: cfg.storage.data_dir.clone(),
                })
            });
        match deps {
            Ok(h) => Some(h),
            Err(e) => {
                tracing::error!(error = %crate::error_chain(&e), "mqtt off");
                None
            }
        }
    } else {
        None
    };
    // systemd (Type=notify): ready now; watchdog pings from this loop, so a hung control
    // plane gets the service restarted. Both are no-ops outside systemd.
    notify(&[sd_notify::NotifyState::Ready]);
    let watchdog = sd_notify::watchdog_enabled().map(|d| d / 2);
    let every = Duration::from_secs(cfg.log.summary_interval_secs);
    rt.block_on(async {
        let mut tick = tokio::time::interval(every);
        let mut marks = Vec::new();
        tick.tick().await;
        let mut dog = tokio::time::interval(watchdog.unwrap_or(Duration::from_secs(3600)));
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
        loop {
            tokio::select! {
                _ = tick.tick() => log_summary(&app, &mut marks),
                _ = dog.tick(), if watchdog.is_some() => notify(&[sd_notify::NotifyState::Watchdog]),
                _ = tokio::signal::ctrl_c() => { tracing::info!("SIGINT: stopping"); break; }
                _ = term.recv() => { tracing::info!("SIGTERM: stopping"); break; }
            }
        }
        Ok::<_, std::io::Error>(())
    })?;
    notify(&[sd_notify::NotifyState::Stopping]);
    if let Some(m) = mqtt {
        // `offline` (retained) reaches the broker before the process goes.
        rt.block_on(m.stop(Duration::from_secs(3)));
    }
    let _ = stop_http.send(());
    if let Some(server) = server {
        // Live streams end with the runtime; requests in flight get a moment to finish.
        let _ = rt.block_on(async { tokio::time::timeout(Duration::from_secs(2), server).await });
    }
    app.stop();
    log_summary(&app, &mut Vec::new());
    Ok(())
}

fn notify(state: &[sd_notify::NotifyState<'_>]) {
    if let Err(e) = sd_notify::notify(state) {
        tracing::warn!(error = %e, "sd_notify failed");
    }
}

/// Counters at the previous summary, per camera, for the rates over the interval.
#[derive(Clone, Copy)]
struct Mark {
    at: Instant,
    frames: u64,
    analysed: u64,
    clips: u64,
    inference_ms: f64,
}

fn log_summary(app: &Appliance, marks: &mut Vec<Mark>) {
    let analysis = app.analysis();
    let reports = app.pipeline.reports();
    marks.resize(
        reports.len(),
        Mark {
            at: app.started,
            frames: 0,
            analysed: 0,
            clips: 0,
            inference_ms: 0.0,
        },
    );
    for ((r, a), mark) in reports
        .iter()
        .zip(analysis.iter().map(Some).chain(std::iter::repeat(None)))
        .zip(marks.iter_mut())
    {
        let s = &r.stats;
        let a = a.cloned().unwrap_or_default();
        let now = Mark {
            at: Instant::now(),
            frames: s.frames,
            analysed: a.analysed,
            clips: a.clips_done,
            inference_ms: a.inference_ms_sum,
        };
        let secs = now.at.duration_since(mark.at).as_secs_f64().max(1e-3);
        // Frames the analysis looked at, and those it let go by (the motion gate samples
        // motion.analysis_fps of them by design; the rest are recorded, not analysed).
        let analysed = now.analysed.saturating_sub(mark.analysed);
        let process_fps = analysed as f64 / secs;
        let skipped_fps = now
            .frames
            .saturating_sub(mark.frames)
            .saturating_sub(analysed) as f64
            / secs;
        let clips = now.clips.saturating_sub(mark.clips);
        let inference_ms = if clips > 0 {
            (now.inference_ms - mark.inference_ms) / clips as f64
        } else {
            f64::NAN
        };
        *mark = now;
        tracing::info!(
            camera = %r.id,
            state = ?s.state,
            camera_fps = format_args!("{:.1}", s.camera_fps),
            process_fps = format_args!("{process_fps:.1}"),
            skipped_fps = format_args!("{skipped_fps:.1}"),
            inference_ms = format_args!("{inference_ms:.0}"),
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
            event_latency_ms = format_args!("{:.1}", a.event_latency_ms_max.unwrap_or(f64::NAN)),
            videos = a.recording.as_ref().map_or(0, |v| v.finished),
            videos_failed = a.recording.as_ref().map_or(0, |v| v.failed),
            // Videos not started or cut short to keep recording.min_free_mb, and the free
            // space seen: a filling disk shows here before anything is lost.
            videos_low_disk = a.recording.as_ref().map_or(0, |v| v.low_disk),
            disk_free_mb = format_args!(
                "{:.0}",
                a.recording.as_ref().and_then(|v| v.disk_free_mb).unwrap_or(f64::NAN)
            ),
            events_split = a.events_split,
            "camera summary"
        );
    }
}
