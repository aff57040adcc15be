//! X-CLIP rows: the model, its parity with PyTorch, prompt embeddings, latency,
//! throughput and concurrent correctness, and the service kept busy while cameras run.

use super::*;
use crate::inference::xclip::startup::Loaded;

/// A service and clips to keep it busy with while the cameras run.
pub(super) type Load = (XclipService, Vec<FrameBatch>);

/// X-CLIP: the model loads (and says whether its weights are real), clip latency, burst
/// throughput, and ten concurrent clips that must each get exactly their own result.
pub(super) fn xclip_checks(
    cfg: &Config,
    clock: &dyn Clock,
) -> (Vec<Check>, Vec<ModelInfo>, Option<Load>) {
    let t = &cfg.targets;
    let x = &cfg.xclip;
    let fail =
        |name: &str, detail: String| Check::failed(name, Op::AtMost, 0.0, "errors").detail(detail);
    // The start-up sequence `run` uses (inference::xclip::startup), one row per step.
    let loaded = match Loaded::load(cfg) {
        Ok(l) => l,
        Err(e) => return (vec![fail("xclip_model", error_chain(&e))], Vec::new(), None),
    };
    let info = loaded.info().clone();
    let mut checks = vec![
        Check::new("xclip_model", None, 1.0, Op::AtLeast, 1.0, "loaded").detail(info.describe()),
        match crate::inference::xclip::builtin_parity(&loaded.model) {
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
    let prepared = match loaded.prepare(cfg, clock.wall_us() / 1_000_000) {
        Ok(p) => {
            let st = &p.stats;
            checks.push(
                Check::new(
                    "xclip_text_embeddings",
                    None,
                    p.embed_ms,
                    Op::AtMost,
                    t.xclip_clip_p99_ms.max(1000.0) * 10.0,
                    "ms",
                )
                .detail(format!(
                    "{} prompts: {} from the cache, {} computed{}",
                    p.prompts.len(),
                    st.cached,
                    st.computed,
                    if !st.cache_available {
                        " (no database: not cached)"
                    } else {
                        ""
                    }
                )),
            );
            p
        }
        Err(e) => {
            checks.push(fail("xclip_text_embeddings", error_chain(&e)));
            return (checks, vec![info], None);
        }
    };
    let model = prepared.model.clone();
    // Clips from the synthetic camera: real JPEG frames of the default size.
    let clips = match synthetic_clips(cfg, 12, model.manifest.num_frames) {
        Ok(c) => c,
        Err(e) => {
            checks.push(fail("xclip_clip_p99", error_chain(&e)));
            return (checks, vec![info], None);
        }
    };
    // The configured service, but with room for the whole burst and no replacing.
    let svc = match prepared.serve(ServiceConfig {
        queue: 32,
        when_full: WhenFull::Refuse,
        ..ServiceConfig::from_section(x)
    }) {
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
pub(super) fn synthetic_clips(
    cfg: &Config,
    n: usize,
    t: usize,
) -> Result<Vec<FrameBatch>, crate::capture::SourceError> {
    let mut cam = cfg.cameras.first().cloned().unwrap_or_else(|| {
        Config::embedded()
            .map(|c| c.cameras[0].clone())
            .expect("embedded config is valid")
    });
    cam.source = crate::config::SourceKind::Synthetic;
    cam.device = None;
    cam.path = None;
    let mut src = open_source(&cam, Arc::new(crate::clock::SystemClock), false)?;
    let mut buf = Vec::new();
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        let mut b = FrameBatch::default();
        for _ in 0..t {
            let c = src.next_frame(&mut buf)?;
            b.push(c.meta, &buf);
        }
        out.push(b);
    }
    Ok(out)
}
