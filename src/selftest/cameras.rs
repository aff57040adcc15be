//! Camera rows (fps, frames, memory, reconnects), the product spec's ring stress case, the
//! motion gate's cost and the free space the events live on.

use super::*;

pub(super) fn camera_checks(cfg: &Config, cam: &CameraReport) -> Vec<Check> {
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

/// The product spec's frame-buffer case, measured for real: N frames of S bytes pushed
/// into a ring with the configured budget, in an arena of its own.
pub(super) fn ring_stress(cfg: &Config) -> Result<Vec<Check>, SelfTestError> {
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

/// The motion gate's cost per analysed frame, on frames of the first camera's size.
pub(super) fn motion_check(cfg: &Config) -> Check {
    let frames = match synthetic_clips(cfg, 1, 30) {
        Ok(mut c) => c.remove(0),
        Err(e) => {
            return Check::failed("motion_gate_ms", Op::AtMost, 0.0, "ms").detail(error_chain(&e))
        }
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

/// Free space on the data directory's filesystem against `recording.min_free_mb`: below
/// it, videos are no longer started (events still are).
pub(super) fn disk_check(cfg: &Config) -> Check {
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
