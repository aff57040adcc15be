//! `--self-test`: run the configured cameras for a few seconds, measure, and print one
//! row per check (measured, target, PASS/FAIL). The boot-time health check of the device
//! and the first thing a technician runs over the serial cable.
//!
//! The JSON form (`--json`) is read by field tooling and the emulated-device tests; its
//! shape is stable: `{"verdict", "checks": [{"name", "camera", "measured", "target",
//! "unit", "pass", "op", "detail"}], ...}`. New checks add rows, never fields.

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
use crate::inference::text_cache::configured_prompts;
use crate::inference::{ClipRequest, ModelInfo, ServiceConfig, WhenFull, XclipModel, XclipService};
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

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum Op {
    #[serde(rename = ">=")]
    AtLeast,
    #[serde(rename = "<=")]
    AtMost,
}

impl Op {
    fn holds(self, measured: f64, target: f64) -> bool {
        // NaN never passes.
        match self {
            Op::AtLeast => measured >= target,
            Op::AtMost => measured <= target,
        }
    }
    fn symbol(self) -> &'static str {
        match self {
            Op::AtLeast => ">=",
            Op::AtMost => "<=",
        }
    }
}

/// One row of the report.
#[derive(Debug, Clone, Serialize)]
pub struct Check {
    pub name: String,
    pub camera: Option<String>,
    pub measured: f64,
    pub target: f64,
    pub unit: String,
    pub pass: bool,
    pub op: Op,
    /// What a technician needs to make sense of a FAIL.
    pub detail: Option<String>,
}

impl Check {
    pub fn new(
        name: &str,
        camera: Option<&str>,
        measured: f64,
        op: Op,
        target: f64,
        unit: &str,
    ) -> Self {
        Self {
            name: name.into(),
            camera: camera.map(Into::into),
            measured,
            target,
            unit: unit.into(),
            pass: op.holds(measured, target),
            op,
            detail: None,
        }
    }

    /// A check that could not be measured (the detail says why): it never passes.
    fn failed(name: &str, op: Op, target: f64, unit: &str) -> Self {
        Self::new(name, None, f64::NAN, op, target, unit)
    }

    fn detail(mut self, d: impl Into<String>) -> Self {
        self.detail = Some(d.into());
        self
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum Verdict {
    #[serde(rename = "PASS")]
    Pass,
    #[serde(rename = "FAIL")]
    Fail,
}

#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub verdict: Verdict,
    pub checks: Vec<Check>,
    pub version: &'static str,
    pub seconds: f64,
    pub cameras: Vec<CameraReport>,
    pub process_memory: Option<ProcessMemory>,
    /// Every model the run loaded; `placeholder` true means its results mean nothing.
    pub models: Vec<ModelInfo>,
    /// The identity (face) models, or why they are off.
    pub identity: Option<String>,
    pub system: SystemInfo,
}

/// What the report ran on: the first questions of any support call.
#[derive(Debug, Clone, Serialize)]
pub struct SystemInfo {
    pub arch: &'static str,
    pub kernel: String,
    pub page_size: usize,
    pub cpus: usize,
    /// The household matcher's vector kernel.
    pub simd_kernel: &'static str,
    /// Whose kernels run the dense layers (X-CLIP) and 1x1 convolutions (identity models):
    /// nvr-edge's AVX-512 ones or tract's.
    pub dense_kernel: &'static str,
    /// The instruction-set rung tract's own kernels run at (`fma` for AVX2+FMA, `avx512`,
    /// `neon`, `sve2`): emulated checks assert the tier of the boards they stand for.
    pub tract_isa: &'static str,
    /// nvr-edge's own kernel tier (`portable`, `avx2+fma`, `avx512`, `neon`; capped by
    /// `NVR_KERNEL_TIER`).
    pub kernel_tier: &'static str,
}

impl SystemInfo {
    pub fn current() -> Self {
        let u = rustix::system::uname();
        Self {
            arch: std::env::consts::ARCH,
            kernel: u.release().to_string_lossy().into_owned(),
            page_size: rustix::param::page_size(),
            cpus: std::thread::available_parallelism().map_or(1, usize::from),
            simd_kernel: nvr_linalg::Kernel::best().name(),
            dense_kernel: if nvr_linalg::dense::available() {
                "avx512f (nvr-edge)"
            } else {
                "tract"
            },
            tract_isa: tract_linalg::isa::native().nickname(),
            kernel_tier: nvr_linalg::Tier::current().name(),
        }
    }
}

impl Report {
    pub fn from_checks(checks: Vec<Check>, seconds: f64, cameras: Vec<CameraReport>) -> Report {
        let verdict = if !checks.is_empty() && checks.iter().all(|c| c.pass) {
            Verdict::Pass
        } else {
            Verdict::Fail
        };
        Report {
            verdict,
            checks,
            version: env!("CARGO_PKG_VERSION"),
            seconds,
            cameras,
            process_memory: memory::process_memory().ok(),
            models: Vec::new(),
            identity: None,
            system: SystemInfo::current(),
        }
    }

    pub fn passed(&self) -> bool {
        self.verdict == Verdict::Pass
    }

    /// The human table: fixed columns, one check per line, fits an 80-column console.
    pub fn render_table(&self) -> String {
        let mut s = String::new();
        let _ = writeln!(
            s,
            "nvr-edge {} self-test: {} camera(s), {:.1} s",
            self.version,
            self.cameras.len(),
            self.seconds
        );
        let sys = &self.system;
        let _ = writeln!(
            s,
            "system: {} {}, {} CPUs, {} KiB pages, nvr-edge kernels {} (matching {}, dense and 1x1 {}), tract kernels {}",
            sys.arch,
            sys.kernel,
            sys.cpus,
            sys.page_size / 1024,
            sys.kernel_tier,
            sys.simd_kernel,
            sys.dense_kernel,
            sys.tract_isa
        );
        for m in &self.models {
            let _ = writeln!(s, "model: {}", m.describe());
        }
        if let Some(i) = &self.identity {
            let _ = writeln!(s, "identity: {i}");
        }
        for c in &self.cameras {
            let _ = match &c.stats.source {
                Some(src) => writeln!(
                    s,
                    "camera {}: {} {}x{} @ {:.2} fps granted ({})",
                    c.id, src.driver, src.width, src.height, src.fps, src.detail
                ),
                None => writeln!(s, "camera {}: not opened", c.id),
            };
        }
        let _ = writeln!(
            s,
            "{:<24} {:<8} {:>14} {:>16}  RESULT",
            "CHECK", "CAMERA", "MEASURED", "TARGET"
        );
        for c in &self.checks {
            let _ = writeln!(
                s,
                "{:<24} {:<8} {:>14} {:>16}  {}",
                c.name,
                c.camera.as_deref().unwrap_or("-"),
                format!("{} {}", fmt_num(c.measured), c.unit),
                format!("{} {} {}", c.op.symbol(), fmt_num(c.target), c.unit),
                if c.pass { "PASS" } else { "FAIL" }
            );
            if let Some(d) = &c.detail {
                if !c.pass {
                    let _ = writeln!(s, "    {d}");
                }
            }
        }
        if let Some(m) = &self.process_memory {
            let _ = writeln!(
                s,
                "process memory (jemalloc): allocated {:.1} MiB, resident {:.1} MiB, retained {:.1} MiB",
                m.allocated as f64 / MIB,
                m.resident as f64 / MIB,
                m.retained as f64 / MIB
            );
        }
        let passed = self.checks.iter().filter(|c| c.pass).count();
        let _ = writeln!(
            s,
            "VERDICT: {} ({passed}/{} checks passed)",
            if self.passed() { "PASS" } else { "FAIL" },
            self.checks.len()
        );
        s
    }
}

fn fmt_num(v: f64) -> String {
    if !v.is_finite() {
        return format!("{v}");
    }
    let a = v.abs();
    if a >= 100.0 {
        format!("{v:.0}")
    } else if a >= 1.0 {
        format!("{v:.1}")
    } else if a == 0.0 {
        "0".into()
    } else if a >= 0.01 {
        format!("{v:.3}")
    } else {
        // Differences of results (1e-4 targets) would otherwise all read 0.000.
        format!("{v:.1e}")
    }
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

/// The end-to-end path on a probe camera of the self-test's own (a small synthetic camera
/// with its walking figure), so the figures do not depend on what the real cameras happen
/// to see at boot: frame captured -> motion gate -> event committed in SQLite -> the
/// event's video finished. It writes to a scratch database under `data_dir` (the disk the
/// events live on), removed afterwards.
struct Probe {
    pipeline: Pipeline,
    analyzer: Analyzer,
    scratch: PathBuf,
}

const PROBE_CAMERA: &str = r#"
id = "selftest-probe"
source = "synthetic"
width = 320
height = 240
fps = 15.0
ring = { frames = 300, max_bytes = 16000000 }
"#;

/// Why the probe camera did not run.
#[derive(Debug, thiserror::Error)]
enum ProbeError {
    #[error("probe camera config")]
    Config(#[from] toml::de::Error),
    #[error("{0}")]
    Events(String, #[source] crate::store::StoreError),
    #[error(transparent)]
    Pipeline(#[from] crate::pipeline::PipelineError),
    #[error(transparent)]
    Recording(#[from] crate::recording::RecordingError),
    #[error("analysis thread")]
    Analysis(#[from] std::io::Error),
}

impl Probe {
    fn start(cfg: &Config, clock: Arc<dyn Clock>) -> Result<Self, ProbeError> {
        let scratch = cfg
            .storage
            .data_dir
            .join(format!("selftest-probe-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&scratch);
        let cam: CameraConfig = toml::from_str(PROBE_CAMERA)?;
        let mut probe_cfg = cfg.clone();
        probe_cfg.cameras = vec![cam];
        // The probe's figure walks wherever the real cameras' masks are.
        probe_cfg.motion.masks.clear();
        probe_cfg.recording.pre_secs = cfg.recording.pre_secs.min(10.0);
        let events = EventStore::open_in(&scratch, probe_cfg.events.clone())
            .map_err(|e| ProbeError::Events(scratch.display().to_string(), e))?;
        let events = Arc::new(events);
        let pipeline = Pipeline::start(&probe_cfg, clock.clone())?;
        let clips = ClipDir::open(
            &scratch.join("clips"),
            probe_cfg.recording.disk_budget_mb,
            probe_cfg.recording.min_free_mb,
        )?
        .0;
        let deps = AnalysisDeps {
            xclip: None,
            identity: None,
            events,
            cfg: AnalysisConfig::from_config(&probe_cfg),
            clock,
        };
        let recording = RecordingConfig {
            enabled: true,
            ..probe_cfg.recording.clone()
        };
        let mut analyzers =
            analysis::start_all(&pipeline, &deps, &recording, Some(&Arc::new(clips)))?;
        Ok(Self {
            pipeline,
            analyzer: analyzers.remove(0),
            scratch,
        })
    }

    /// Start the probe, wait until it has an event and a couple of seconds of video (or
    /// give up after 15 s of its clock), and report.
    fn run(cfg: &Config, clock: Arc<dyn Clock>) -> Vec<Check> {
        let probe = Self::start(cfg, clock.clone());
        if let Ok(p) = &probe {
            let mut since_event = 0;
            for _ in 0..150 {
                clock.sleep(Duration::from_millis(100));
                if p.analyzer.stats().events > 0 {
                    since_event += 1;
                    if since_event >= 15 {
                        break;
                    }
                }
            }
        }
        Self::finish(cfg, probe)
    }

    fn finish(cfg: &Config, probe: Result<Self, ProbeError>) -> Vec<Check> {
        let target = cfg.targets.frame_to_event_ms;
        let failed = |e: &str| {
            vec![
                Check::failed("frame_to_event_ms", Op::AtMost, target, "ms")
                    .detail(format!("probe camera did not run: {e}")),
                Check::failed("event_video_frames", Op::AtLeast, 1.0, "frames")
                    .detail(format!("probe camera did not run: {e}")),
            ]
        };
        let mut p = match probe {
            Ok(p) => p,
            Err(e) => return failed(&error_chain(&e)),
        };
        // Analysis first: it closes the event and finishes the video from the ring.
        p.analyzer.stop();
        p.pipeline.stop();
        let st = p.analyzer.stats();
        let _ = std::fs::remove_dir_all(&p.scratch);
        let latency = Check::new(
            "frame_to_event_ms",
            None,
            st.event_latency_ms_max.unwrap_or(f64::NAN),
            Op::AtMost,
            target,
            "ms",
        )
        .detail(match st.event_latency_ms_max {
            Some(_) => format!(
                "probe camera: capture of the frame confirming motion -> event in SQLite, worst of {} event(s); gate {:.2} ms/frame",
                st.events, st.gate_ms_avg
            ),
            None => format!(
                "probe camera opened no event in {} analysed frames ({} moving){}",
                st.analysed,
                st.moving_frames,
                st.last_error.map(|e| format!(": {e}")).unwrap_or_default()
            ),
        });
        let rec = st.recording.unwrap_or_default();
        let video = match &rec.last {
            Some(f) => Check::new("event_video_frames", None, f64::from(f.frames), Op::AtLeast, 1.0, "frames")
                .detail(format!(
                    "probe event's MJPEG AVI: {} bytes, {:.1} fps, {:.1} s, written from the ring and renamed complete",
                    f.bytes, f.fps, f.duration_secs
                )),
            None => Check::new("event_video_frames", None, 0.0, Op::AtLeast, 1.0, "frames").detail(
                format!(
                    "no finished video ({} started, {} failed){}",
                    rec.started,
                    rec.failed,
                    rec.last_error.map(|e| format!(": {e}")).unwrap_or_default()
                ),
            ),
        };
        vec![latency, video]
    }
}

fn camera_checks(cfg: &Config, cam: &CameraReport) -> Vec<Check> {
    let t = &cfg.targets;
    let id = Some(cam.id.as_str());
    let st = &cam.stats;
    let asked_fps = cfg
        .cameras
        .iter()
        .find(|c| c.id == cam.id)
        .map_or(t.capture_fps, |c| c.fps);
    let granted_fps = st.source.as_ref().map_or(asked_fps, |s| s.fps);
    let fps_target = t.capture_fps.min(granted_fps) * (1.0 - t.fps_tolerance);
    let health = format!(
        "state {:?}, frames {}, skipped {}, bad {}, refused {}, reconnects {}{}",
        st.state,
        st.frames,
        st.skipped,
        st.bad_frames,
        st.refused,
        st.reconnects,
        st.last_error
            .as_deref()
            .map(|e| format!(", last error: {e}"))
            .unwrap_or_default()
    );
    let mem_mb = cam.memory_bytes.map_or(f64::NAN, |b| b as f64 / MIB);
    let period_ms = 1000.0 / granted_fps.max(0.001);
    vec![
        Check::new(
            "camera_fps",
            id,
            st.average_fps,
            Op::AtLeast,
            fps_target,
            "fps",
        )
        .detail(health.clone()),
        Check::new(
            "camera_frames",
            id,
            st.frames as f64,
            Op::AtLeast,
            1.0,
            "frames",
        )
        .detail(
            st.source
                .as_ref()
                .map_or_else(|| "camera never opened".to_string(), |s| s.detail.clone()),
        ),
        Check::new(
            "camera_reconnects",
            id,
            st.reconnects as f64,
            Op::AtMost,
            0.0,
            "reconnects",
        )
        .detail(health.clone()),
        Check::new(
            "last_frame_age",
            id,
            st.last_frame_age_ms.unwrap_or(f64::INFINITY),
            Op::AtMost,
            (3.0 * period_ms).max(500.0),
            "ms",
        )
        .detail(health),
        Check::new(
            "camera_memory",
            id,
            mem_mb,
            Op::AtMost,
            t.memory_per_camera_mb,
            "MiB",
        )
        .detail("jemalloc arena of the camera: ring reservation + capture working memory"),
        Check::new(
            "frame_add_avg",
            id,
            st.push_ms_avg,
            Op::AtMost,
            t.frame_add_avg_ms,
            "ms",
        ),
        Check::new(
            "frame_add_max",
            id,
            st.push_ms_max,
            Op::AtMost,
            t.frame_add_max_ms,
            "ms",
        ),
        Check::new(
            "ring_within_budget",
            id,
            cam.ring.bytes_used as f64 / MIB,
            Op::AtMost,
            cam.ring_budget.max_bytes as f64 / MIB,
            "MiB",
        )
        .detail(format!(
            "{} of {} frames",
            cam.ring.len, cam.ring_budget.frames
        )),
    ]
}

/// Match latency on the household gallery (a generated one, said so, when nobody is
/// enrolled), database integrity, and rows the matcher had to skip.
fn household_checks(cfg: &Config, clock: Arc<dyn Clock>) -> Vec<Check> {
    let t = &cfg.targets;
    let h = &cfg.household;
    let hh = match Household::open_in(&cfg.storage.data_dir, h.clone(), clock) {
        Ok(hh) => hh,
        Err(e) => {
            let msg = format!("{}: {}", cfg.storage.data_dir.display(), error_chain(&e));
            return vec![Check::failed("household_db", Op::AtMost, 0.0, "problems").detail(msg)];
        }
    };
    let mut checks = Vec::new();
    let problems = match hh.integrity_check() {
        Ok(found) if found.is_empty() => {
            Check::new("household_db", None, 0.0, Op::AtMost, 0.0, "problems")
        }
        Ok(found) => Check::new("household_db", None, 1.0, Op::AtMost, 0.0, "problems")
            .detail(format!("PRAGMA integrity_check: {}", found.join("; "))),
        Err(e) => {
            Check::failed("household_db", Op::AtMost, 0.0, "problems").detail(error_chain(&e))
        }
    };
    checks.push(problems);
    let gallery = hh.gallery();
    checks.push(
        Check::new(
            "household_bad_rows",
            None,
            (gallery.corrupt_rows + gallery.unreadable_rows) as f64,
            Op::AtMost,
            0.0,
            "rows",
        )
        .detail("rows skipped as corrupt (bad length, NaN, zero vector) or unreadable: re-enrol those members"),
    );
    let enrolled = gallery
        .persons
        .iter()
        .max_by_key(|(_, m)| m.rows())
        .cloned();
    let (model_id, matrix, what) = match enrolled {
        Some((model, m)) => {
            let what = format!(
                "enrolled gallery: {} rows of model {model}, {}-d",
                m.rows(),
                m.dim
            );
            (model, m, what)
        }
        None => {
            let (n, dim) = (h.selftest_members as usize, h.selftest_dim as usize);
            let mut m = Matrix {
                dim,
                ..Matrix::default()
            };
            let rows = vectors::random_unit_vectors(n, dim, 0x5E1F);
            for (i, row) in rows.chunks_exact(dim).enumerate() {
                m.push(i as i64, row);
            }
            let what = format!("generated gallery of {n} members, {dim}-d: nobody is enrolled");
            ("selftest".to_string(), m, what)
        }
    };
    let mut set = GallerySet::default();
    let dim = matrix.dim;
    let rows = matrix.rows();
    set.persons.push((model_id.clone(), matrix));
    let probes = vectors::random_unit_vectors(64, dim, 0xC0FFEE);
    let th = hh.thresholds();
    let mut lat_ns = Vec::with_capacity(1000);
    let budget = Instant::now();
    for i in 0..1000 {
        let p = &probes[(i % 64) * dim..(i % 64 + 1) * dim];
        let t0 = Instant::now();
        std::hint::black_box(set.match_person(p, Some(&model_id), th, 0, 0));
        lat_ns.push(t0.elapsed().as_nanos() as u64);
        if i >= 100 && budget.elapsed() > Duration::from_secs(2) {
            break;
        }
    }
    lat_ns.sort_unstable();
    let p99 = lat_ns[(lat_ns.len() * 99).div_ceil(100) - 1] as f64 / 1e6;
    checks.push(
        Check::new(
            "household_match_p99",
            None,
            p99,
            Op::AtMost,
            t.household_match_p99_ms,
            "ms",
        )
        .detail(format!(
            "{what}; {} matches, kernel {}, {rows} rows",
            lat_ns.len(),
            nvr_linalg::Kernel::best().name()
        )),
    );
    checks
}

/// X-CLIP: the model loads (and says whether its weights are real), clip latency, burst
/// throughput, and ten concurrent clips that must each get exactly their own result.
/// The motion gate's cost per analysed frame, on frames of the first camera's size.
/// Free space on the data directory's filesystem against `recording.min_free_mb`: below
/// it, videos are no longer started (events still are).
fn disk_check(cfg: &Config) -> Check {
    let dir = &cfg.storage.data_dir;
    // The directory may not exist before the first run: ask about its nearest ancestor.
    let at = dir
        .ancestors()
        .find(|p| p.exists() || p.as_os_str().is_empty())
        .map(|p| {
            if p.as_os_str().is_empty() {
                std::path::Path::new(".")
            } else {
                p
            }
        })
        .unwrap_or(dir);
    let target = cfg.recording.min_free_mb as f64;
    match crate::recording::free_bytes(at) {
        Some(b) => Check::new(
            "disk_free",
            None,
            b as f64 / f64::from(1 << 20),
            Op::AtLeast,
            target,
            "MiB",
        )
        .detail(format!(
            "free on the filesystem of {} (recording.min_free_mb is kept for the database)",
            dir.display()
        )),
        None => Check::failed("disk_free", Op::AtLeast, target, "MiB")
            .detail(format!("cannot ask the filesystem of {}", dir.display())),
    }
}

fn motion_check(cfg: &Config) -> Check {
    let frames = match synthetic_clips(cfg, 1, 30) {
        Ok(mut c) => c.remove(0),
        Err(e) => return Check::failed("motion_gate_ms", Op::AtMost, 0.0, "ms").detail(e),
    };
    let mut gate = crate::motion::MotionGate::new(cfg.motion.clone());
    let t0 = Instant::now();
    let mut errors = 0;
    for (_, jpeg) in frames.iter() {
        errors += usize::from(gate.feed(jpeg).is_err());
    }
    let ms = t0.elapsed().as_secs_f64() * 1e3 / frames.len().max(1) as f64;
    let ms = if errors > 0 { f64::NAN } else { ms };
    Check::new(
        "motion_gate_ms",
        None,
        ms,
        Op::AtMost,
        cfg.targets.motion_gate_ms,
        "ms",
    )
    .detail(format!("{} frames, {errors} did not decode", frames.len()))
}

/// A service and clips to keep it busy with while the cameras run.
type Load = (XclipService, Vec<FrameBatch>);

/// A public-domain portrait (NASA's Eileen Collins, 300x300) the identity rows run the
/// people and face models on.
const SELFTEST_FACE: &[u8] = include_bytes!("../models/identity/selftest_face.jpg");

/// A rendered number plate on a car's rear (our own drawing) the plate rows read.
const SELFTEST_PLATE: &[u8] = include_bytes!("../models/identity/selftest_plate.png");
const SELFTEST_PLATE_TEXT: &str = "AB123CD";

/// Run `f` once (a plan's first run allocates its scratch space: not what a clip window
/// costs), then `n` times timed. The worst time in ms and the last result, or the first
/// error.
fn worst_of<R, E>(n: usize, mut f: impl FnMut() -> Result<R, E>) -> Result<(f64, R), E> {
    let mut last = f()?;
    let mut worst = 0.0f64;
    for _ in 0..n {
        let t0 = Instant::now();
        last = f()?;
        worst = worst.max(t0.elapsed().as_secs_f64() * 1e3);
    }
    Ok((worst, last))
}

/// The identity models: loaded (real weights), their cost, the identity path's frame rate
/// on frames showing a face, and a plate read back. Models that are not installed give no
/// rows unless `identity.required`: the header line says what is off and why.
fn identity_checks(cfg: &Config) -> (Vec<Check>, Option<String>) {
    use crate::inference::identity::face::FaceEmbedder;
    use crate::inference::identity::plates::PlateReader;
    let c = &cfg.identity;
    if !c.enabled {
        return (Vec::new(), Some("off ([identity] enabled = false)".into()));
    }
    let mut rows = Vec::new();
    let mut notes = Vec::new();
    let missing = |rows: &mut Vec<Check>, notes: &mut Vec<String>, name: &str, e: String| {
        if c.required {
            rows.push(Check::new(name, None, 0.0, Op::AtLeast, 1.0, "loaded").detail(e.clone()));
        }
        notes.push(format!("{name} off: {e}"));
    };
    // What each loaded model keeps allocated (jemalloc, this thread's net allocation).
    let mut memory: Vec<(&str, Option<i64>)> = Vec::new();
    let (embedder, kept) = memory::kept_by(|| FaceEmbedder::load(&c.models_dir));
    memory.push(("mobilefacenet", kept));
    match embedder {
        Ok(embedder) => {
            let (r, d) = face_checks(cfg, embedder, &mut memory);
            rows.extend(r);
            notes.push(d);
        }
        Err(e) => missing(&mut rows, &mut notes, "identity_models", error_chain(&e)),
    }
    if c.plates {
        let (reader, kept) = memory::kept_by(|| PlateReader::load(&c.models_dir));
        memory.push(("ppocr det+rec", kept));
        match reader {
            Ok(reader) => {
                rows.extend(plate_checks(cfg, &reader));
                notes.push(format!(
                    "plates: PP-OCRv4 (real weights, Apache-2.0) from {}",
                    c.models_dir.display()
                ));
            }
            Err(e) => missing(&mut rows, &mut notes, "plate_models", error_chain(&e)),
        }
    }
    if !rows.is_empty() {
        let total: i64 = memory.iter().filter_map(|(_, b)| *b).sum();
        rows.push(
            Check::new(
                "identity_models_memory",
                None,
                total as f64 / MIB,
                Op::AtMost,
                cfg.targets.identity_models_mb,
                "MiB",
            )
            .detail(
                memory
                    .iter()
                    .map(|(n, b)| match b {
                        Some(b) => format!("{n} {:.1} MiB", *b as f64 / MIB),
                        None => format!("{n} not measured"),
                    })
                    .collect::<Vec<_>>()
                    .join(", "),
            ),
        );
    }
    (rows, Some(notes.join("; ")))
}

/// Read the built-in plate picture a few times: cost, and whether the text comes back.
fn plate_checks(
    cfg: &Config,
    reader: &crate::inference::identity::plates::PlateReader,
) -> Vec<Check> {
    let t = &cfg.targets;
    let failed = |e: String| {
        vec![Check::failed("plate_read_ms", Op::AtMost, t.plate_read_ms, "ms").detail(e)]
    };
    let img = match image::load_from_memory(SELFTEST_PLATE) {
        Ok(i) => i.to_rgb8(),
        Err(e) => return failed(format!("built-in plate picture: {e}")),
    };
    let (ms, reads) = match worst_of(3, || reader.read(&img)) {
        Ok(r) => r,
        Err(e) => return failed(error_chain(&e)),
    };
    let plates: Vec<String> = reads.iter().filter_map(|r| r.plate()).collect();
    let right = plates.iter().any(|p| p == SELFTEST_PLATE_TEXT);
    vec![
        Check::new("plate_read_ms", None, ms, Op::AtMost, t.plate_read_ms, "ms").detail(
            "worst of 3 reads (text detection + recognition) of a 640x480 picture (after one warm-up)",
        ),
        Check::new(
            "plate_read_correct",
            None,
            f64::from(u8::from(right)),
            Op::AtLeast,
            1.0,
            "plates",
        )
        .detail(format!("expected {SELFTEST_PLATE_TEXT}, read {plates:?}")),
    ]
}

/// Face rows: the detector on a test scene, the embedder, and the identity path's rate.
fn face_checks(
    cfg: &Config,
    embedder: crate::inference::identity::face::FaceEmbedder,
    memory: &mut Vec<(&'static str, Option<i64>)>,
) -> (Vec<Check>, String) {
    use crate::inference::identity::face::{FaceDetector, FaceFilter, FaceObserver};
    let c = &cfg.identity;
    let t = &cfg.targets;
    let (detector, kept) = memory::kept_by(FaceDetector::builtin);
    memory.push(("blazeface", kept));
    let detector = match detector {
        Ok(d) => d,
        Err(e) => {
            let e = error_chain(&e);
            return (
                vec![
                    Check::new("identity_models", None, 0.0, Op::AtLeast, 1.0, "loaded")
                        .detail(e.clone()),
                ],
                e,
            );
        }
    };
    let mut describe = format!(
        "faces: {} ({} weights, {}) + {} ({} weights, model id {})",
        detector.manifest.name,
        detector.manifest.weights,
        detector.manifest.licence,
        embedder.manifest.name,
        embedder.manifest.weights,
        embedder.model_id()
    );
    let mut rows = vec![
        Check::new("identity_models", None, 1.0, Op::AtLeast, 1.0, "loaded")
            .detail(describe.clone()),
    ];
    let face = match image::load_from_memory(SELFTEST_FACE) {
        Ok(i) => i.to_rgb8(),
        Err(e) => return (rows, format!("{describe}; built-in test face: {e}")),
    };
    // The face in a 640x480 scene, as a camera would frame a person at the door.
    let mut scene = image::RgbImage::from_pixel(640, 480, image::Rgb([96, 104, 112]));
    image::imageops::replace(&mut scene, &face, 170, 90);
    let faces = match worst_of(3, || detector.detect(&scene)) {
        Ok((ms, faces)) => {
            rows.push(
                Check::new(
                    "face_detect_ms",
                    None,
                    ms,
                    Op::AtMost,
                    t.face_detect_ms,
                    "ms",
                )
                .detail("worst of 3 BlazeFace passes on a 640x480 frame (after one warm-up)"),
            );
            faces
        }
        Err(e) => {
            rows.push(
                Check::failed("face_detect_ms", Op::AtMost, t.face_detect_ms, "ms")
                    .detail(error_chain(&e)),
            );
            return (rows, describe);
        }
    };
    rows.push(
        Check::new(
            "identity_faces_found",
            None,
            faces.len() as f64,
            Op::AtLeast,
            1.0,
            "faces",
        )
        .detail("faces BlazeFace finds in the built-in test scene (one portrait)"),
    );
    let Some(f) = faces.first() else {
        return (rows, describe);
    };
    let aligned = crate::inference::identity::face::align(&scene, f);
    match worst_of(3, || embedder.embed(&[aligned.clone(), aligned.clone()])) {
        Ok((ms, _)) => rows.push(
            Check::new("face_embed_ms", None, ms, Op::AtMost, t.face_embed_ms, "ms")
                .detail("worst of 3 MobileFaceNet batches of 2 aligned faces (after one warm-up)"),
        ),
        Err(e) => {
            rows.push(
                Check::failed("face_embed_ms", Op::AtMost, t.face_embed_ms, "ms")
                    .detail(error_chain(&e)),
            );
            return (rows, describe);
        }
    }
    // People first, as the recorder runs them: the detector's cost on the same scene.
    let objects = if c.detector {
        let (objects, kept) = memory::kept_by(|| {
            crate::inference::identity::detect::ObjectDetector::load(&c.models_dir)
        });
        memory.push(("nanodet", kept));
        match objects {
            Ok(mut d) => {
                d.min_score = c.min_object_score;
                rows.push(match worst_of(3, || d.detect(&scene)) {
                    Ok((ms, found)) => {
                        let people = found.iter().filter(|x| x.is_person()).count();
                        Check::new("object_detect_ms", None, ms, Op::AtMost, t.object_detect_ms, "ms")
                            .detail(format!(
                                "worst of 3 NanoDet passes on a 640x480 frame (after one warm-up): {people} person(s) found"
                            ))
                    }
                    Err(e) => Check::failed("object_detect_ms", Op::AtMost, t.object_detect_ms, "ms")
                        .detail(error_chain(&e)),
                });
                describe = format!(
                    "{describe}; people/vehicles: {} ({} weights, {})",
                    d.manifest.name, d.manifest.weights, d.manifest.licence
                );
                Some(d)
            }
            Err(e) => {
                rows.push(
                    Check::failed("object_detect_ms", Op::AtMost, t.object_detect_ms, "ms")
                        .detail(error_chain(&e)),
                );
                None
            }
        }
    } else {
        None
    };
    // The whole identity path on JPEG frames, as the recorder runs it on a clip window.
    let observer = crate::inference::identity::observer::ModelsObserver {
        objects,
        plates_without_vehicle: true,
        faces: Some(FaceObserver::new(
            detector,
            embedder,
            FaceFilter::from_config(c),
        )),
        plates: None,
        plate_frames: 0,
    };
    let mut jpeg = Vec::new();
    if let Err(e) = jpeg_encoder::Encoder::new(&mut jpeg, 80).encode(
        scene.as_raw(),
        640,
        480,
        jpeg_encoder::ColorType::Rgb,
    ) {
        return (rows, format!("{describe}; test frame: {e}"));
    }
    const IDENTITY_FRAMES: u64 = 4;
    let batch = FrameBatch::still_jpeg(&jpeg, 640, 480, IDENTITY_FRAMES);
    let mut obs = Vec::new();
    let t0 = Instant::now();
    let r = crate::inference::identity::Observer::observe(&observer, &batch, &mut obs);
    let secs = t0.elapsed().as_secs_f64();
    let persons = obs
        .iter()
        .filter(|o| matches!(o, crate::inference::identity::Observation::Person { .. }))
        .count();
    rows.push(match r {
        Ok(()) => Check::new("identity_fps", None, IDENTITY_FRAMES as f64 / secs, Op::AtLeast, t.identity_fps, "fps").detail(format!(
            "{IDENTITY_FRAMES} JPEG frames through decode, people detection, face detection, alignment and embedding: {persons} face embeddings"
        )),
        Err(e) => Check::failed("identity_fps", Op::AtLeast, t.identity_fps, "fps").detail(crate::error_chain(&e)),
    });
    (rows, describe)
}

fn xclip_checks(cfg: &Config, clock: &dyn Clock) -> (Vec<Check>, Vec<ModelInfo>, Option<Load>) {
    let t = &cfg.targets;
    let x = &cfg.xclip;
    let fail =
        |name: &str, detail: String| Check::failed(name, Op::AtMost, 0.0, "errors").detail(detail);
    let model = match XclipModel::load(x.models_dir.as_deref()) {
        Ok(m) => Arc::new(m),
        Err(e) => return (vec![fail("xclip_model", error_chain(&e))], Vec::new(), None),
    };
    let info = model.info.clone();
    let mut checks = vec![
        Check::new("xclip_model", None, 1.0, Op::AtLeast, 1.0, "loaded").detail(info.describe()),
        match crate::inference::xclip::builtin_parity(&model) {
            Ok(d) => Check::new(
                "xclip_parity",
                None,
                d as f64,
                Op::AtMost,
                1e-4,
                "max abs diff",
            )
            .detail("built-in model's logits vs PyTorch's, computed on this CPU".to_string()),
            Err(e) => fail("xclip_parity", error_chain(&e)),
        },
    ];
    let t0 = Instant::now();
    let (prompts, embeds) = match configured_prompts(cfg, &model, clock.wall_us() / 1_000_000) {
        Ok((prompts, e, st)) => {
            checks.push(
                Check::new(
                    "xclip_text_embeddings",
                    None,
                    t0.elapsed().as_secs_f64() * 1e3,
                    Op::AtMost,
                    t.xclip_clip_p99_ms.max(1000.0) * 10.0,
                    "ms",
                )
                .detail(format!(
                    "{} prompts: {} from the cache, {} computed{}",
                    prompts.len(),
                    st.cached,
                    st.computed,
                    if !st.cache_available {
                        " (no database: not cached)"
                    } else {
                        ""
                    }
                )),
            );
            (prompts, Arc::new(e))
        }
        Err(e) => {
            checks.push(fail("xclip_text_embeddings", error_chain(&e)));
            return (checks, vec![info], None);
        }
    };
    // Clips from the synthetic camera: real JPEG frames of the default size.
    let clips = match synthetic_clips(cfg, 12, model.manifest.num_frames) {
        Ok(c) => c,
        Err(e) => {
            checks.push(fail("xclip_clip_p99", e));
            return (checks, vec![info], None);
        }
    };
    let prompts = Arc::new(prompts);
    let service = |queue: usize| {
        XclipService::start(
            model.clone(),
            prompts.clone(),
            embeds.clone(),
            // The configured service, but with room for the whole burst and no replacing.
            ServiceConfig {
                queue,
                when_full: WhenFull::Refuse,
                ..ServiceConfig::from_section(x)
            },
        )
    };
    let svc = match service(32) {
        Ok(s) => s,
        Err(e) => {
            checks.push(fail("xclip_clip_p99", error_chain(&e)));
            return (checks, vec![info], None);
        }
    };
    // Sequential: latency, and each clip's reference result.
    let mut lat = Vec::new();
    let mut reference = Vec::new();
    let mut errors = 0usize;
    for (i, c) in clips.iter().enumerate() {
        match svc.classify(ClipRequest {
            camera: format!("st{i}"),
            frames: c.clone(),
        }) {
            Ok(r) => {
                lat.push(r.latency_ms);
                reference.push(Some(r.classification.all_scores));
            }
            Err(_) => {
                errors += 1;
                reference.push(None);
            }
        }
    }
    lat.sort_by(f64::total_cmp);
    let p = |q: f64| {
        lat.get(((lat.len().max(1) - 1) as f64 * q).round() as usize)
            .copied()
            .unwrap_or(f64::NAN)
    };
    checks.push(
        Check::new(
            "xclip_clip_p99",
            None,
            p(0.99),
            Op::AtMost,
            t.xclip_clip_p99_ms,
            "ms",
        )
        .detail(format!(
            "{} clips of {} frames, p50 {:.1} ms, {} errors",
            clips.len(),
            model.manifest.num_frames,
            p(0.5),
            errors
        )),
    );
    // Burst of 20, all submitted at once; throughput from first submission to last result.
    let start = Instant::now();
    let tickets: Vec<_> = (0..20)
        .map(|i| {
            svc.submit(ClipRequest {
                camera: format!("burst{i}"),
                frames: clips[i % clips.len()].clone(),
            })
        })
        .collect();
    let done = tickets
        .into_iter()
        .filter_map(Result::ok)
        .map(|t| t.wait())
        .filter(Result::is_ok)
        .count();
    let rate = done as f64 / start.elapsed().as_secs_f64();
    checks.push(
        Check::new(
            "xclip_clips_per_sec",
            None,
            rate,
            Op::AtLeast,
            t.xclip_clips_per_sec,
            "clips/s",
        )
        .detail(format!(
            "burst of 20: {done} completed, {} workers",
            x.workers
        )),
    );
    // Ten concurrent distinct clips: no errors, each result identical to its sequential one.
    let tickets: Vec<_> = (0..10)
        .map(|i| {
            svc.submit(ClipRequest {
                camera: format!("st{i}"),
                frames: clips[i].clone(),
            })
        })
        .collect();
    let mut bad = 0;
    for (i, tk) in tickets.into_iter().enumerate() {
        match tk.and_then(|t| t.wait()) {
            Ok(r) if reference[i].as_ref() == Some(&r.classification.all_scores) => {}
            _ => bad += 1,
        }
    }
    checks.push(
        Check::new("xclip_concurrent_errors", None, bad as f64, Op::AtMost, 0.0, "errors")
            .detail("10 concurrent distinct clips: an error or a result that differs from the same clip run alone"),
    );
    (checks, vec![info], Some((svc, clips)))
}

/// `n` clips of `t` frames each from a synthetic camera with the first camera's size.
fn synthetic_clips(cfg: &Config, n: usize, t: usize) -> Result<Vec<FrameBatch>, String> {
    let mut cam = cfg.cameras.first().cloned().unwrap_or_else(|| {
        Config::embedded()
            .map(|c| c.cameras[0].clone())
            .expect("embedded config is valid")
    });
    cam.source = crate::config::SourceKind::Synthetic;
    cam.device = None;
    cam.path = None;
    let mut src =
        open_source(&cam, Arc::new(crate::clock::SystemClock), false).map_err(|e| e.to_string())?;
    let mut buf = Vec::new();
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        let mut b = FrameBatch::default();
        for _ in 0..t {
            let c = src.next_frame(&mut buf).map_err(|e| e.to_string())?;
            b.push(c.meta, &buf);
        }
        out.push(b);
    }
    Ok(out)
}

/// The product spec's frame-buffer case, measured for real: N frames of S bytes pushed
/// into a ring with the configured budget, in an arena of its own.
fn ring_stress(cfg: &Config) -> Result<Vec<Check>, SelfTestError> {
    let s = &cfg.selftest;
    let t = &cfg.targets;
    let ring_cfg = RingConfig {
        frames: s.ring_stress_frames as usize,
        max_bytes: cfg.ring.max_bytes as usize,
        max_age: Duration::from_secs_f64(cfg.ring.max_age_secs),
    };
    let frame_bytes = s.ring_stress_frame_bytes as usize;
    let arena = Arena::create()?;
    let before = arena.allocated_bytes()?;
    let (ring, payload) = arena.scope(|| {
        let payload: Vec<u8> = (0..frame_bytes).map(|i| (i * 31 % 251) as u8).collect();
        FrameRing::new(ring_cfg).map(|r| (r, payload))
    })??;
    let (mut sum_ns, mut max_ns) = (0u128, 0u128);
    // 30 fps spacing, as a camera would deliver them.
    for i in 0..s.ring_stress_frames {
        let meta = FrameMeta {
            seq: u64::from(i),
            ts_us: i64::from(i) * 33_333,
            width: 640,
            height: 480,
            format: FrameFormat::Jpeg,
        };
        let t0 = Instant::now();
        ring.push(meta, &payload)?;
        let ns = t0.elapsed().as_nanos();
        sum_ns += ns;
        max_ns = max_ns.max(ns);
    }
    let used = arena.allocated_bytes()?.saturating_sub(before);
    let expected_len = (ring_cfg.frames).min(ring_cfg.max_bytes / frame_bytes);
    let n = f64::from(s.ring_stress_frames.max(1));
    let what = format!(
        "{} frames of {} bytes into a ring of {} frames / {:.0} MiB",
        s.ring_stress_frames,
        frame_bytes,
        ring_cfg.frames,
        ring_cfg.max_bytes as f64 / MIB
    );
    let checks = vec![
        Check::new(
            "ring_stress_memory",
            None,
            used as f64 / MIB,
            Op::AtMost,
            t.memory_per_camera_mb,
            "MiB",
        )
        .detail(format!("{what}; jemalloc arena bytes")),
        Check::new(
            "ring_stress_len",
            None,
            ring.len() as f64,
            Op::AtLeast,
            expected_len as f64,
            "frames",
        )
        .detail(what),
        Check::new(
            "ring_stress_add_avg",
            None,
            sum_ns as f64 / n / 1e6,
            Op::AtMost,
            t.frame_add_avg_ms,
            "ms",
        ),
        Check::new(
            "ring_stress_add_max",
            None,
            max_ns as f64 / 1e6,
            Op::AtMost,
            t.frame_add_max_ms,
            "ms",
        ),
    ];
    Ok(checks)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verdict_needs_every_check_and_at_least_one() {
        let ok = Check::new("a", None, 2.0, Op::AtLeast, 1.0, "x");
        let bad = Check::new("b", None, 2.0, Op::AtMost, 1.0, "x");
        let nan = Check::new("c", None, f64::NAN, Op::AtMost, 1.0, "x");
        assert!(ok.pass && !bad.pass && !nan.pass);
        assert!(Report::from_checks(vec![ok.clone()], 1.0, vec![]).passed());
        assert!(!Report::from_checks(vec![ok, bad], 1.0, vec![]).passed());
        assert!(!Report::from_checks(vec![], 1.0, vec![]).passed());
    }
}
