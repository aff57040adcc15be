//! Per-camera analysis: watches the newest frames of a camera's ring through the motion
//! gate, opens an event when motion starts, sends an evenly sampled window of the ring to
//! X-CLIP while it lasts, and closes the event when it stops.
//!
//! An event's video (see `recording`) is written from the same thread, from the ring.
//!
//! It runs on its own thread and only reads the ring, so capture never waits for it; it
//! never waits for inference either (results are polled), and at most two clips per
//! camera are in flight: when the service is busy a clip is skipped and counted.
//!
//! The identity models (people, faces, plates: up to a second per window on a small board)
//! run on a second thread per camera, fed through a one-window slot: the motion gate keeps
//! looking meanwhile, and a window that arrives while one is still waiting replaces it
//! (counted), so the work stays bounded whatever the scene.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::capture::stats::{is_live, LIVE_MS};
use crate::capture::worker::CameraShared;
use crate::clock::Clock;
use crate::config::Config;
use crate::config::MotionConfig;
use crate::config::RecordingConfig;
use crate::events::{EventStore, Opened};
pub use crate::household::identity::IdentityDeps;
use crate::household::identity::{EventIdentity, Identified};
use crate::inference::identity::Observation;
use crate::inference::xclip::service::Ticket;
use crate::inference::{ClipRequest, Risk, XclipError, XclipService};
use crate::motion::MotionGate;
use crate::pipeline::Pipeline;
use crate::recording::{remove_videos, ClipDir, Recorder, RecorderStats};
use crate::ring::FrameBatch;

const MAX_IN_FLIGHT: usize = 2;
/// How often an open event's "still going on" time is written (one small UPDATE).
const TOUCH_EVERY_US: i64 = 1_000_000;
/// How often a better snapshot of an open event is written (and once more at its end).
const SNAPSHOT_EVERY_US: i64 = 10_000_000;
/// Snapshots are kept at most about this wide (a 1080p frame would be ~0.4 MB a row).
const SNAPSHOT_MAX_WIDTH: u16 = 640;

#[derive(Debug, Clone)]
pub struct AnalysisConfig {
    pub motion: MotionConfig,
    /// Seconds of ring history one clip is sampled from.
    pub window_secs: f64,
    /// Seconds between clips while motion lasts.
    pub rerun_secs: f64,
    /// With recording on, `recording.max_secs`: motion that lasts longer becomes
    /// consecutive events, each with its own video, so no stretch of it lacks footage.
    pub max_event_secs: Option<f64>,
    /// Where event videos live: the videos of events dropped to make room for a new one
    /// are removed from here (recording on or off, old videos may be there).
    pub clips_dir: PathBuf,
}

impl AnalysisConfig {
    pub fn from_config(cfg: &Config) -> Self {
        Self {
            motion: cfg.motion.clone(),
            window_secs: cfg.xclip.window_secs,
            rerun_secs: cfg.xclip.rerun_secs,
            max_event_secs: cfg.recording.enabled.then_some(cfg.recording.max_secs),
            clips_dir: cfg.storage.data_dir.join(crate::recording::CLIPS_DIR),
        }
    }
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct AnalysisStats {
    pub analysed: u64,
    /// Events closed because motion outlasted `recording.max_secs` (each continued by
    /// the next event).
    pub events_split: u64,
    pub undecodable: u64,
    pub moving_frames: u64,
    pub in_motion: bool,
    pub events: u64,
    /// Motion detection paused (MQTT `detect/set OFF`).
    pub paused: bool,
    /// Snapshots written (the first of each event, then better frames while it goes on).
    pub snapshots: u64,
    pub current_event: Option<i64>,
    /// Times the camera stopped delivering frames (each an outage event), and the outage
    /// event open now.
    pub camera_outages: u64,
    pub outage_event: Option<i64>,
    pub clips_submitted: u64,
    /// Clips not sent (service busy, or too many in flight) or replaced in its queue.
    pub clips_skipped: u64,
    pub clips_done: u64,
    pub clips_failed: u64,
    /// Sum of the done clips' preprocessing + inference times (mean = sum / clips_done).
    pub inference_ms_sum: f64,
    /// Identity model passes over clip windows, their last cost, and failures.
    pub identity_runs: u64,
    pub identity_ms_last: Option<f64>,
    pub identity_errors: u64,
    /// Faces (or frames) the identity models saw but could not use: too small, too
    /// blurry, undecodable.
    pub identity_skipped: u64,
    /// Clip windows the identity models never saw: a newer window replaced them while
    /// they waited for the models to finish the one before.
    pub identity_windows_replaced: u64,
    pub gate_ms_avg: f64,
    /// From the capture of the frame that confirmed motion to its event committed in the
    /// database: the last event's and the worst since start.
    pub event_latency_ms_last: Option<f64>,
    pub event_latency_ms_max: Option<f64>,
    /// None when recording is off.
    pub recording: Option<RecorderStats>,
    pub last_error: Option<String>,
}

pub struct Analyzer {
    stats: Arc<Mutex<AnalysisStats>>,
    stop: Arc<AtomicBool>,
    detect: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
    identity: Option<(Arc<IdentitySlot>, JoinHandle<()>)>,
}

/// The one clip window waiting for a camera's identity models.
#[derive(Default)]
struct IdentitySlot {
    job: Mutex<IdentityJob>,
    ready: std::sync::Condvar,
}

#[derive(Default)]
struct IdentityJob {
    event: i64,
    batch: FrameBatch,
    waiting: bool,
}

impl IdentitySlot {
    /// Hand a window over; replaces one still waiting.
    fn offer(&self, ctx: &Ctx, event: i64, batch: &FrameBatch) {
        let mut job = self.job.lock().unwrap_or_else(|e| e.into_inner());
        if job.waiting {
            ctx.stats().identity_windows_replaced += 1;
        }
        job.event = event;
        job.batch.copy_from(batch);
        job.waiting = true;
        self.ready.notify_one();
    }
}

struct Ctx {
    camera: Arc<CameraShared>,
    xclip: Option<Arc<XclipService>>,
    identity: Option<Arc<IdentityDeps>>,
    events: Arc<EventStore>,
    cfg: AnalysisConfig,
    clock: Arc<dyn Clock>,
    stats: Arc<Mutex<AnalysisStats>>,
    stop: Arc<AtomicBool>,
    /// Whether motion detection runs (paused from MQTT's `detect/set`; capture, the ring
    /// and live view go on).
    detect: Arc<AtomicBool>,
    /// Written by the identity thread, read when X-CLIP's results come in.
    tallies: Mutex<Tallies>,
}

/// What one camera's analysis needs besides its camera; shared by all cameras.
pub struct AnalysisDeps {
    pub xclip: Option<Arc<XclipService>>,
    /// None: events name nobody and their risk is X-CLIP's.
    pub identity: Option<Arc<IdentityDeps>>,
    pub events: Arc<EventStore>,
    pub cfg: AnalysisConfig,
    pub clock: Arc<dyn Clock>,
}

impl Ctx {
    fn stats(&self) -> MutexGuard<'_, AnalysisStats> {
        self.stats.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn tallies(&self) -> MutexGuard<'_, Tallies> {
        self.tallies.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn note_err(&self, e: impl std::fmt::Display) {
        let msg = e.to_string();
        tracing::warn!(camera = %self.camera.id, error = %msg, "analysis");
        self.stats().last_error = Some(msg);
    }
}

/// One analyzer per camera of `pipeline`, each recording into `clips` when given.
pub fn start_all(
    pipeline: &Pipeline,
    deps: &AnalysisDeps,
    recording: &RecordingConfig,
    clips: Option<&Arc<ClipDir>>,
) -> std::io::Result<Vec<Analyzer>> {
    pipeline
        .cameras()
        .iter()
        .map(|cam| {
            let recorder = clips.map(|dir| {
                Recorder::new(
                    recording.clone(),
                    cam.id(),
                    cam.config.fps,
                    dir.clone(),
                    deps.events.clone(),
                )
            });
            Analyzer::start(cam.shared.clone(), deps, recorder)
        })
        .collect()
}

impl Analyzer {
    /// Start analysing one camera. `xclip` None: events record motion only; `recorder`
    /// None: no video files.
    pub fn start(
        camera: Arc<CameraShared>,
        deps: &AnalysisDeps,
        recorder: Option<Recorder>,
    ) -> std::io::Result<Self> {
        let stats = Arc::new(Mutex::new(AnalysisStats {
            recording: recorder.as_ref().map(|r| r.stats.clone()),
            ..AnalysisStats::default()
        }));
        let stop = Arc::new(AtomicBool::new(false));
        let detect = Arc::new(AtomicBool::new(true));
        let name = format!("ana-{}", camera.id);
        let ctx = Arc::new(Ctx {
            camera,
            xclip: deps.xclip.clone(),
            identity: deps.identity.clone(),
            events: deps.events.clone(),
            cfg: deps.cfg.clone(),
            clock: deps.clock.clone(),
            stats: stats.clone(),
            stop: stop.clone(),
            detect: detect.clone(),
            tallies: Mutex::new(Tallies::default()),
        });
        let identity = match &ctx.identity {
            Some(idn) => {
                let slot = Arc::new(IdentitySlot::default());
                let (ctx, idn, s) = (ctx.clone(), idn.clone(), slot.clone());
                let t = std::thread::Builder::new()
                    .name(format!("idn-{}", ctx.camera.id))
                    .spawn(move || identity_thread(&ctx, &idn, &s))?;
                Some((slot, t))
            }
            None => None,
        };
        let slot = identity.as_ref().map(|(s, _)| s.clone());
        let thread = std::thread::Builder::new()
            .name(name)
            .spawn(move || run(&ctx, recorder, slot.as_deref()))?;
        Ok(Self {
            stats,
            stop,
            detect,
            thread: Some(thread),
            identity,
        })
    }

    pub fn stats(&self) -> AnalysisStats {
        self.stats.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// A shared handle on the live figures (for the console).
    pub fn stats_handle(&self) -> Arc<Mutex<AnalysisStats>> {
        self.stats.clone()
    }

    /// The switch of motion detection (true: on). Off closes the open event and opens
    /// none; capture and the ring go on.
    pub fn detect_handle(&self) -> Arc<AtomicBool> {
        self.detect.clone()
    }

    pub fn stop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        if let Some((slot, t)) = self.identity.take() {
            slot.ready.notify_all();
            let _ = t.join();
        }
    }
}

impl Drop for Analyzer {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Who the household recognised in the last events (the current one and the one before,
/// whose clips may still be in flight): bounded.
#[derive(Default)]
struct Tallies {
    current: Option<(i64, EventIdentity)>,
    previous: Option<(i64, EventIdentity)>,
}

impl Tallies {
    fn get(&self, event: i64) -> Option<&EventIdentity> {
        [&self.current, &self.previous]
            .into_iter()
            .flatten()
            .find(|(id, _)| *id == event)
            .map(|(_, t)| t)
    }

    fn get_mut(&mut self, event: i64) -> &mut EventIdentity {
        if self.current.as_ref().is_none_or(|(id, _)| *id != event) {
            self.previous = self.current.take();
            self.current = Some((event, EventIdentity::default()));
        }
        &mut self.current.as_mut().expect("just set").1
    }
}

/// The event's risk from X-CLIP's, through what the household recognised in it.
fn lowering<'a>(
    ctx: &'a Ctx,
    tallies: &'a Tallies,
    event: i64,
) -> impl Fn(Risk) -> (Risk, Option<String>) + 'a {
    move |r| match (&ctx.identity, tallies.get(event)) {
        (Some(idn), Some(t)) => t.lower(r, &idn.cfg),
        _ => (r, None),
    }
}

/// The identity models' thread: one window at a time from `slot`, until the analyzer stops.
fn identity_thread(ctx: &Ctx, idn: &IdentityDeps, slot: &IdentitySlot) {
    let mut batch = FrameBatch::default();
    let mut observations: Vec<Observation> = Vec::with_capacity(64);
    loop {
        let event = {
            let mut job = slot.job.lock().unwrap_or_else(|e| e.into_inner());
            while !job.waiting && !ctx.stop.load(Ordering::SeqCst) {
                job = slot
                    .ready
                    .wait_timeout(job, Duration::from_millis(200))
                    .unwrap_or_else(|e| e.into_inner())
                    .0;
            }
            if ctx.stop.load(Ordering::SeqCst) {
                return;
            }
            job.waiting = false;
            // Take the window, leave our old storage for the next one.
            std::mem::swap(&mut batch, &mut job.batch);
            job.event
        };
        identify(ctx, idn, event, &batch, &mut observations);
    }
}

/// Run the identity models on a clip window and update the event when that changes who
/// it names.
fn identify(
    ctx: &Ctx,
    idn: &IdentityDeps,
    event: i64,
    batch: &FrameBatch,
    observations: &mut Vec<Observation>,
) {
    observations.clear();
    let t0 = Instant::now();
    let result = idn.observer.observe(batch, observations);
    let ms = t0.elapsed().as_secs_f64() * 1e3;
    {
        let mut st = ctx.stats();
        st.identity_runs += 1;
        st.identity_ms_last = Some(ms);
        st.identity_skipped += observations
            .iter()
            .filter(|o| matches!(o, Observation::Skipped { .. }))
            .count() as u64;
    }
    if let Err(e) = result {
        ctx.stats().identity_errors += 1;
        ctx.note_err(format!("identity: {e}"));
        return;
    }
    let mut tallies = ctx.tallies();
    let tally = tallies.get_mut(event);
    let before = tally.confirmed(&idn.cfg).count();
    tally.add(&idn.household, observations);
    let confirmed: Vec<Identified> = tally.confirmed(&idn.cfg).cloned().collect();
    if confirmed.len() != before {
        let json = serde_json::json!({
            "identified": confirmed,
            "unknown_people": tally.unknown_people,
            "incomparable": tally.incomparable,
            "skipped": tally.skipped,
            "models": idn.observer.describe(),
        });
        let lower = lowering(ctx, &tallies, event);
        if let Err(e) = ctx.events.set_household(event, &json, &lower) {
            ctx.note_err(e);
        }
        tracing::info!(camera = %ctx.camera.id, event, identified = %json["identified"], "household recognised");
    }
}

fn poll(ctx: &Ctx, pending: &mut Vec<(i64, Ticket)>) {
    pending.retain(|(event, ticket)| match ticket.try_wait() {
        None => true,
        Some(Ok(r)) => {
            {
                let mut st = ctx.stats();
                st.clips_done += 1;
                st.inference_ms_sum += r.latency_ms;
            }
            let tallies = ctx.tallies();
            if let Err(e) = ctx
                .events
                .add_clip(*event, &r, &lowering(ctx, &tallies, *event))
            {
                ctx.note_err(e);
            }
            false
        }
        Some(Err(XclipError::Replaced | XclipError::Busy)) => {
            ctx.stats().clips_skipped += 1;
            false
        }
        Some(Err(e)) => {
            ctx.stats().clips_failed += 1;
            ctx.note_err(e);
            false
        }
    });
}

/// Copy new frames into the event's video, and publish the recorder's figures.
fn pump(ctx: &Ctx, recorder: &mut Option<Recorder>) {
    if let Some(r) = recorder.as_mut() {
        r.pump(&ctx.camera.ring);
        ctx.stats().recording = Some(r.stats.clone());
    }
}

/// The best frame of the open event not yet stored; one frame's bytes at most.
#[derive(Default)]
struct Snapshot {
    jpeg: Vec<u8>,
    score: f64,
    /// Whether `jpeg` is newer than what the event has stored.
    pending: bool,
    /// The best score the event has stored.
    stored: f64,
}

impl Snapshot {
    fn reset(&mut self) {
        self.pending = false;
        self.score = f64::NEG_INFINITY;
        self.stored = f64::NEG_INFINITY;
    }

    fn offer(&mut self, jpeg: &[u8], score: f64) {
        if score > self.score && score > self.stored {
            self.jpeg.clear();
            self.jpeg.extend_from_slice(jpeg);
            self.score = score;
            self.pending = true;
        }
    }

    fn store(&mut self, ctx: &Ctx, id: i64) {
        if !self.pending {
            return;
        }
        self.pending = false;
        self.stored = self.score;
        let small = match crate::capture::jpeg::shrink_jpeg(&self.jpeg, SNAPSHOT_MAX_WIDTH, 80) {
            Ok(s) => s,
            Err(e) => {
                ctx.note_err(format!("snapshot: {e}"));
                return;
            }
        };
        let jpeg = small.as_deref().unwrap_or(&self.jpeg);
        match ctx.events.offer_snapshot(id, jpeg, self.score) {
            Ok(_) => ctx.stats().snapshots += 1,
            Err(e) => ctx.note_err(e),
        }
    }
}

/// A camera that stops delivering frames (unplugged, broken, covered by a driver fault)
/// is an event of its own kind: someone may have unplugged it on purpose. It opens once
/// the last frame is older than the liveness rule allows (`capture::stats::is_live`, the
/// rule MQTT's connectivity and `/api/health` use; at start, counted from the analyzer's
/// start), and ends when frames come again. Detection being paused does not stop it.
struct Outage {
    started_mono: i64,
    open: Option<i64>,
}

impl Outage {
    fn new(ctx: &Ctx) -> Self {
        Self {
            started_mono: ctx.clock.mono_us(),
            open: None,
        }
    }

    /// Open or close the outage event as the camera's frames say; true when one opened.
    fn check(&mut self, ctx: &Ctx) -> bool {
        let now_mono = ctx.clock.mono_us();
        let age = ctx.camera.stats().last_frame_age_ms(now_mono);
        let since_start_ms = (now_mono - self.started_mono) as f64 / 1e3;
        let down = !is_live(age) && since_start_ms >= LIVE_MS;
        match (down, self.open) {
            (true, None) => {
                // It began with the last frame (or, with none yet, at the start).
                let gone_ms = age.unwrap_or(since_start_ms);
                let start = ctx.clock.wall_us() - (gone_ms * 1e3) as i64;
                match ctx.events.start_outage(&ctx.camera.id, start) {
                    Ok(Opened { id, dropped_videos }) => {
                        remove_videos(&ctx.cfg.clips_dir, &dropped_videos);
                        tracing::warn!(camera = %ctx.camera.id, event = id, last_frame_ms_ago = gone_ms,
                            "camera stopped delivering frames: outage event opened");
                        self.open = Some(id);
                        let mut st = ctx.stats();
                        st.camera_outages += 1;
                        st.outage_event = Some(id);
                        return true;
                    }
                    Err(e) => ctx.note_err(e),
                }
            }
            (false, Some(_)) => self.close(ctx),
            _ => {}
        }
        false
    }

    fn close(&mut self, ctx: &Ctx) {
        if let Some(id) = self.open.take() {
            if let Err(e) = ctx.events.end(id, ctx.clock.wall_us()) {
                ctx.note_err(e);
            }
            tracing::info!(camera = %ctx.camera.id, event = id, "camera delivers frames again: outage event closed");
            ctx.stats().outage_event = None;
        }
    }
}

/// Close motion event `id` at `end_wall_us`: its best frame stored, its end committed, its
/// video ended at the frame stamped `ts_us` (capture clock). Every way an event ends
/// (motion stopped, split, paused, the camera gone) goes through here.
fn close_event(
    ctx: &Ctx,
    id: i64,
    best: &mut Snapshot,
    recorder: &mut Option<Recorder>,
    end_wall_us: i64,
    ts_us: i64,
) {
    best.store(ctx, id);
    if let Err(e) = ctx.events.end(id, end_wall_us) {
        ctx.note_err(e);
    }
    if let Some(r) = recorder.as_mut() {
        r.end(id, ts_us);
    }
}

fn run(ctx: &Ctx, mut recorder: Option<Recorder>, identity: Option<&IdentitySlot>) {
    let period = Duration::from_secs_f64(1.0 / ctx.cfg.motion.analysis_fps.max(0.1));
    let window_us = (ctx.cfg.window_secs * 1e6) as i64;
    let rerun_us = (ctx.cfg.rerun_secs * 1e6) as i64;
    let frames_per_clip = ctx
        .xclip
        .as_ref()
        .map_or(8, |x| x.model().manifest.num_frames);
    let mut gate = MotionGate::new(ctx.cfg.motion.clone());
    let mut frame: Vec<u8> = Vec::new();
    let mut batch = FrameBatch::default();
    let mut last_seq = None;
    let mut event: Option<i64> = None;
    let mut event_started_mono = 0i64;
    let mut last_touch_mono = 0i64;
    let max_event_us = ctx.cfg.max_event_secs.map(|s| (s * 1e6) as i64);
    let mut next_clip_us = 0i64;
    let mut pending: Vec<(i64, Ticket)> = Vec::with_capacity(MAX_IN_FLIGHT);
    let mut gate_ns = 0u128;
    // The event's best frame so far (most of the picture moving) not yet stored: written
    // at the event's start, at most once per SNAPSHOT_EVERY_US while it goes on, and at
    // its end.
    let mut best = Snapshot::default();
    let mut last_snapshot_mono = 0i64;
    let mut paused = false;
    let mut outage = Outage::new(ctx);
    let mut last_frame_ts_us = 0i64;
    while !ctx.stop.load(Ordering::SeqCst) {
        ctx.clock.sleep(period);
        poll(ctx, &mut pending);
        pump(ctx, &mut recorder);
        if outage.check(ctx) {
            // Frames stopped: the motion event (if any) ends with them.
            if let Some(id) = event.take() {
                close_event(
                    ctx,
                    id,
                    &mut best,
                    &mut recorder,
                    ctx.clock.wall_us(),
                    last_frame_ts_us,
                );
                let mut st = ctx.stats();
                st.current_event = None;
                st.in_motion = false;
            }
            gate = MotionGate::new(ctx.cfg.motion.clone());
        }
        let newest = ctx.camera.ring.with_newest(|f| {
            (Some(f.meta.seq) != last_seq).then(|| {
                frame.clear();
                frame.extend_from_slice(f.bytes);
                *f.meta
            })
        });
        let Some(Some(meta)) = newest else { continue };
        last_seq = Some(meta.seq);
        last_frame_ts_us = meta.ts_us;
        if !ctx.detect.load(Ordering::Relaxed) {
            // Paused: the open event ends here; the gate starts afresh on resume (its
            // background would be stale).
            if let Some(id) = event.take() {
                close_event(
                    ctx,
                    id,
                    &mut best,
                    &mut recorder,
                    ctx.clock.wall_us(),
                    meta.ts_us,
                );
                tracing::info!(camera = %ctx.camera.id, event = id, "detection paused: event closed");
            }
            if !paused {
                paused = true;
                let mut st = ctx.stats();
                st.paused = true;
                st.in_motion = false;
                st.current_event = None;
            }
            continue;
        }
        if paused {
            paused = false;
            gate = MotionGate::new(ctx.cfg.motion.clone());
            ctx.stats().paused = false;
        }
        let t0 = Instant::now();
        let step = gate.feed(&frame);
        gate_ns += t0.elapsed().as_nanos();
        let step = match step {
            Ok(s) => s,
            Err(_) => {
                ctx.stats().undecodable += 1;
                continue;
            }
        };
        {
            let mut st = ctx.stats();
            st.analysed += 1;
            st.moving_frames += u64::from(step.moving_frame);
            st.in_motion = step.in_motion;
            st.gate_ms_avg = gate_ns as f64 / st.analysed as f64 / 1e6;
        }
        let (now_wall, now_mono) = (ctx.clock.wall_us(), ctx.clock.mono_us());
        // Motion longer than a video may be: close this event and open the next one at
        // the same frame (the recorder starts the new file where the old one stopped).
        let split = event.is_some()
            && step.in_motion
            && max_event_us.is_some_and(|m| now_mono - event_started_mono >= m);
        if split {
            if let Some(id) = event.take() {
                close_event(ctx, id, &mut best, &mut recorder, now_wall, meta.ts_us);
                ctx.stats().events_split += 1;
                tracing::info!(camera = %ctx.camera.id, event = id,
                    "motion goes on past recording.max_secs: event closed, the next one continues it");
            }
        }
        if step.started || split {
            match ctx.events.start(&ctx.camera.id, now_wall) {
                Ok(Opened { id, dropped_videos }) => {
                    remove_videos(&ctx.cfg.clips_dir, &dropped_videos);
                    let latency_ms = (ctx.clock.mono_us() - meta.ts_us) as f64 / 1e3;
                    tracing::info!(camera = %ctx.camera.id, event = id, latency_ms, "motion: event opened");
                    event = Some(id);
                    event_started_mono = now_mono;
                    // The frame that confirmed the motion is the snapshot until a better
                    // one comes: one exists as soon as the event does.
                    best.reset();
                    best.offer(&frame, step.changed_fraction);
                    best.store(ctx, id);
                    last_snapshot_mono = now_mono;
                    // Opening the event wrote its start as its last known time.
                    last_touch_mono = now_mono;
                    if let Some(r) = recorder.as_mut() {
                        if let Err(e) = r.begin(&ctx.camera.ring, id, meta.ts_us, now_wall) {
                            ctx.note_err(e);
                        }
                    }
                    let mut st = ctx.stats();
                    st.events += 1;
                    st.current_event = Some(id);
                    st.event_latency_ms_last = Some(latency_ms);
                    st.event_latency_ms_max =
                        Some(st.event_latency_ms_max.unwrap_or(0.0).max(latency_ms));
                    // Let the window fill with frames of the motion before the first clip.
                    next_clip_us = now_mono + rerun_us.min(window_us / 2);
                }
                Err(e) => ctx.note_err(e),
            }
        }
        if let (Some(id), true) = (event, step.in_motion) {
            best.offer(&frame, step.changed_fraction);
            if now_mono - last_snapshot_mono >= SNAPSHOT_EVERY_US {
                last_snapshot_mono = now_mono;
                best.store(ctx, id);
            }
            // What the event's end becomes if the process is killed before it closes.
            if now_mono - last_touch_mono >= TOUCH_EVERY_US {
                last_touch_mono = now_mono;
                if let Err(e) = ctx.events.touch(id, now_wall) {
                    ctx.note_err(e);
                }
            }
            if now_mono >= next_clip_us && (ctx.xclip.is_some() || ctx.identity.is_some()) {
                next_clip_us = now_mono + rerun_us;
                let n = ctx.camera.ring.sample_since_into(
                    frames_per_clip,
                    meta.ts_us - window_us,
                    &mut batch,
                );
                if n > 0 {
                    if let Some(svc) = &ctx.xclip {
                        if pending.len() >= MAX_IN_FLIGHT {
                            ctx.stats().clips_skipped += 1;
                        } else {
                            let req = ClipRequest {
                                camera: ctx.camera.id.clone(),
                                frames: batch.clone(),
                            };
                            match svc.submit(req) {
                                Ok(t) => {
                                    pending.push((id, t));
                                    ctx.stats().clips_submitted += 1;
                                }
                                Err(_) => ctx.stats().clips_skipped += 1,
                            }
                        }
                    }
                    if let Some(slot) = identity {
                        slot.offer(ctx, id, &batch);
                    }
                }
            }
        }
        if step.stopped {
            if let Some(id) = event.take() {
                close_event(ctx, id, &mut best, &mut recorder, now_wall, meta.ts_us);
                ctx.stats().current_event = None;
                tracing::info!(camera = %ctx.camera.id, event = id, "motion stopped: event closed");
            }
        }
    }
    // Shutting down: give clips in flight a moment, then close the open event.
    let deadline = Instant::now() + Duration::from_secs(3);
    while !pending.is_empty() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
        poll(ctx, &mut pending);
    }
    if let Some(id) = event {
        best.store(ctx, id);
        if let Err(e) = ctx.events.end(id, ctx.clock.wall_us()) {
            ctx.note_err(e);
        }
    }
    outage.close(ctx);
    // Shutting down: what the ring holds now goes in, without waiting for a post-roll.
    pump(ctx, &mut recorder);
    if let Some(r) = recorder.as_mut() {
        r.finish_active();
        ctx.stats().recording = Some(r.stats.clone());
    }
}
