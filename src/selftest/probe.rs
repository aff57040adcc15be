//! The end-to-end probe: a camera of the self-test's own, from frame to committed event
//! and finished video.

use super::*;

/// The end-to-end path on a probe camera of the self-test's own (a small synthetic camera
/// with its walking figure), so the figures do not depend on what the real cameras happen
/// to see at boot: frame captured -> motion gate -> event committed in SQLite -> the
/// event's video finished. It writes to a scratch database under `data_dir` (the disk the
/// events live on), removed afterwards.
pub(super) struct Probe {
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
    pub(super) fn run(cfg: &Config, clock: Arc<dyn Clock>) -> Vec<Check> {
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
