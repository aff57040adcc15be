//! X-CLIP speed and memory: `cargo bench --bench xclip`.
//!
//! Prints, for the committed tiny model and (when `NVR_XCLIP_FULL` names a directory made
//! by models/export_xclip.py) a full-size export:
//! - video-graph latency p50/p99 at 1 and 2 threads, and onnxruntime's on the same graph
//!   and inputs when `NVR_ORT_PYTHON` names a python with onnxruntime (benches/ort_peer.py),
//!   with the tract/ORT ratio (goal <= 0.9, issue 18; it was 1.0);
//! - memory of the loaded model (jemalloc bytes) against its weight bytes (goal <= 1.2x);
//! - for the tiny model, whole-clip latency (8 JPEG frames preprocessed + graph) and a
//!   burst of 20 through the service (the spec: > 10 clips/s);
//! - X-CLIP's dense layer shapes alone, single-threaded: nvr-edge's kernel on each tier
//!   this CPU has (AVX2+FMA, AVX-512) next to tract's own plan of the same einsum, at
//!   whatever tier tract runs (`TRACT_CPU_ISA=-avx512f` holds tract to its AVX2+FMA
//!   kernels, as on an N100-class box);
//! - with `NVR_XCLIP_PROFILE` set, the time per kind of op in the video graph (what to look
//!   at before optimising anything).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion};

mod common;
use common::{p50_p99, python_peer};
use nvr_edge::capture::open_source;
use nvr_edge::clock::SystemClock;
use nvr_edge::config::Config;
use nvr_edge::inference::onnx::GraphThreads;
use nvr_edge::inference::xclip::seeded_values;
use nvr_edge::inference::xclip::text_cache::prompt_embeddings;
use nvr_edge::inference::{
    ClipRequest, ClipTokenizer, PromptSet, ServiceConfig, WhenFull, XclipModel, XclipService,
};
use nvr_edge::memory::{os_resident, process_memory};
use nvr_edge::ring::FrameBatch;

const PROMPTS: usize = 19;

fn ort_peer(dir: &Path, threads: usize, iters: usize) -> Option<(f64, f64)> {
    python_peer(
        "NVR_ORT_PYTHON",
        "ort_peer.py",
        &[
            dir.display().to_string(),
            threads.to_string(),
            iters.to_string(),
            PROMPTS.to_string(),
        ],
    )
}

fn graph_table(label: &str, dir: &Path, iters: usize) {
    let before = process_memory().map(|m| m.allocated).unwrap_or(0);
    let rss_before = os_resident().map_or(0, |(now, _)| now);
    let model = XclipModel::load(Some(dir)).expect("model loads");
    let after = process_memory().map(|m| m.allocated).unwrap_or(0);
    let (rss_after, rss_peak) = os_resident().unwrap_or((0, 0));
    let weights = std::fs::metadata(dir.join("xclip_video.onnx"))
        .map(|m| m.len())
        .unwrap_or(0)
        + std::fs::metadata(dir.join("xclip_text.onnx"))
            .map(|m| m.len())
            .unwrap_or(0);
    let mem = after.saturating_sub(before);
    let rss = rss_after.saturating_sub(rss_before);
    let mib = |b: u64| b as f64 / 1048576.0;
    let of = |b: u64| b as f64 / weights.max(1) as f64;
    if weights < 100 << 20 {
        // Small models: fixed overheads dominate, and pages freed earlier are reused, so
        // only jemalloc's figure means anything.
        println!(
            "{label}: {} ({}); {:.1} MiB of ONNX loaded: {:.1} MiB jemalloc = {:.2}x",
            model.info.name,
            model.info.weights,
            mib(weights),
            mib(mem),
            of(mem)
        );
    } else {
        println!(
            "{label}: {} ({}); {:.1} MiB of ONNX loaded: {:.1} MiB jemalloc = {:.2}x, resident {:.1} MiB = {:.2}x (goal <= 1.2x: {}); process peak while loading {:.1} MiB = {:.2}x",
            model.info.name,
            model.info.weights,
            mib(weights),
            mib(mem),
            of(mem),
            mib(rss),
            of(rss),
            if of(rss) <= 1.2 { "met" } else { "MISSED" },
            mib(rss_peak),
            of(rss_peak),
        );
    }
    let m = &model.manifest;
    let px = seeded_values(1234, m.num_frames * 3 * m.image_size * m.image_size);
    let te: Vec<f32> = seeded_values(99, PROMPTS * m.embed_dim)
        .iter()
        .map(|x| x * 0.1)
        .collect();
    if std::env::var_os("NVR_XCLIP_PROFILE").is_some() {
        // Where the time goes, per kind of op (1 thread), before anything is optimised.
        for t in model
            .profile_video(&px, &te, 5)
            .expect("profile runs")
            .iter()
            .take(15)
        {
            println!("  {:>9.2} ms {:>5} calls  {}", t.ms, t.calls, t.op);
        }
    }
    // Inputs made once, as the onnxruntime peer makes its arrays once: both sides time
    // the graph on inputs already in place.
    let (px, te) = model.video_inputs(&px, &te).expect("inputs");
    for threads in [1usize, 2] {
        let pool = GraphThreads::new(threads);
        let run = || {
            pool.run(|| {
                let t = Instant::now();
                model.run_video(&px, &te).expect("runs");
                t.elapsed().as_secs_f64() * 1e3
            })
        };
        run();
        // Two blocks each, alternating, so a slow spell of a shared machine falls on both
        // runtimes rather than on whichever ran during it.
        let mut lat = Vec::new();
        let mut peer_p50s = Vec::new();
        for _ in 0..2 {
            lat.extend((0..iters / 2).map(|_| run()));
            peer_p50s.extend(ort_peer(dir, threads, iters / 2).map(|(p50, _)| p50));
        }
        let (p50, p99) = p50_p99(lat);
        let peer = (peer_p50s.len() == 2).then(|| (peer_p50s.iter().sum::<f64>() / 2.0, 0.0));
        let (o50, ratio) = match peer {
            Some((a, _)) => (format!("{a:.2}"), format!("{:.2}", p50 / a)),
            None => ("-".into(), "-".into()),
        };
        println!(
            "  video graph, {threads} thread(s): tract p50 {p50:.2} ms, p99 {p99:.2} ms; onnxruntime p50 {o50} ms (mean of two blocks); tract/ORT {ratio}{}",
            match peer {
                Some((a, _)) if p50 <= 0.9 * a => " (goal <= 0.9: met)",
                Some((a, _)) if p50 <= a => " (goal <= 0.9: MISSED; <= 1.0)",
                Some(_) => " (goal <= 0.9: MISSED)",
                None => "",
            }
        );
    }
}

fn clips(n: usize, t: usize) -> Vec<FrameBatch> {
    let cfg = Config::embedded().unwrap();
    let mut src = open_source(&cfg.cameras[0], Arc::new(SystemClock), false).unwrap();
    let mut buf = Vec::new();
    (0..n)
        .map(|_| {
            let mut b = FrameBatch::default();
            for _ in 0..t {
                let c = src.next_frame(&mut buf).unwrap();
                b.push(c.meta, &buf);
            }
            b
        })
        .collect()
}

fn service_table() {
    let cfg = Config::embedded().unwrap();
    let model = Arc::new(XclipModel::load(None).unwrap());
    let prompts = PromptSet::new(cfg.xclip.categories.clone());
    let t0 = Instant::now();
    let (e, _) =
        prompt_embeddings(&model, &ClipTokenizer::new(), &prompts.prompts, None, 0).unwrap();
    println!(
        "tiny model: {} prompt text embeddings computed in {:.1} ms (cached in SQLite after the first start)",
        prompts.len(),
        t0.elapsed().as_secs_f64() * 1e3
    );
    let (prompts, e) = (Arc::new(prompts), Arc::new(e));
    let cl = clips(20, model.manifest.num_frames);
    for workers in [1usize, 2] {
        let svc = XclipService::start(
            model.clone(),
            prompts.clone(),
            e.clone(),
            ServiceConfig {
                workers,
                queue: 20,
                when_full: WhenFull::Refuse,
                top_k: 3,
                threads: 1,
            },
        )
        .unwrap();
        let lat: Vec<f64> = cl
            .iter()
            .map(|c| {
                svc.classify(ClipRequest {
                    camera: "b".into(),
                    frames: c.clone(),
                })
                .unwrap()
                .latency_ms
            })
            .collect();
        let (p50, p99) = p50_p99(lat);
        let t = Instant::now();
        let tickets: Vec<_> = cl
            .iter()
            .map(|c| {
                svc.submit(ClipRequest {
                    camera: "b".into(),
                    frames: c.clone(),
                })
                .unwrap()
            })
            .collect();
        for tk in tickets {
            tk.wait().unwrap();
        }
        let rate = 20.0 / t.elapsed().as_secs_f64();
        println!(
            "tiny model, {workers} worker(s): clip (8 x 640x480 JPEG + graph) p50 {p50:.1} ms, p99 {p99:.1} ms; burst of 20: {rate:.1} clips/s (spec > 10: {})",
            if rate > 10.0 { "met" } else { "MISSED" }
        );
    }
}

fn bench_xclip(c: &mut Criterion) {
    println!("{}", nvr_edge::selftest::SystemInfo::current().bench_line());
    service_table();
    dense_table();
    let tiny = PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/models/xclip-tiny"));
    graph_table("committed tiny model", &tiny, 50);
    match std::env::var("NVR_XCLIP_FULL") {
        Ok(dir) => graph_table("full-size export", Path::new(&dir), 20),
        Err(_) => println!(
            "(set NVR_XCLIP_FULL to a directory from `models/export_xclip.py --config base-patch32` for full-size figures)"
        ),
    }
    let model = XclipModel::load(Some(&tiny)).unwrap();
    let m = &model.manifest;
    let px = seeded_values(1234, m.num_frames * 3 * m.image_size * m.image_size);
    let te = seeded_values(99, PROMPTS * m.embed_dim);
    let (px, te) = model.video_inputs(&px, &te).unwrap();
    c.bench_function("xclip_tiny_video_graph", |b| {
        b.iter(|| model.run_video(&px, &te).unwrap())
    });
}

/// X-CLIP's dense shapes (400 token rows: 8 frames x 50; base-patch32's widths) through
/// nvr-edge's kernel at each tier and through tract's own plan of `mk,kn->mn`, one
/// thread, p50 of 20 runs each.
fn dense_table() {
    use nvr_linalg::dense::{dense_on, tiers_here, PackedWeights};
    use tract_onnx::prelude::*;
    use tract_onnx::tract_core::ops::einsum::EinSum;
    let tiers = tiers_here();
    println!(
        "dense layers, one thread, p50 of 20 (tract's kernels: {}):",
        tract_linalg::isa::native().nickname()
    );
    for (m, k, n) in [(400, 768, 768), (400, 768, 3072), (400, 3072, 768)] {
        let (x, w) = (seeded_values(5, m * k), seeded_values(6, k * n));
        let time = |f: &mut dyn FnMut()| {
            f();
            let mut v: Vec<f64> = (0..20)
                .map(|_| {
                    let t = Instant::now();
                    f();
                    t.elapsed().as_secs_f64() * 1e3
                })
                .collect();
            p50_p99(std::mem::take(&mut v)).0
        };
        let mut model = TypedModel::default();
        let xs = model.add_source("x", f32::fact([m, k])).unwrap();
        let wc = model
            .add_const("w", Tensor::from_shape(&[k, n], &w).unwrap())
            .unwrap();
        let y = model
            .wire_node(
                "mm",
                EinSum::new("mk,kn->mn".parse().unwrap(), DatumType::F32),
                &[xs, wc],
            )
            .unwrap()[0];
        model.select_output_outlets(&[y]).unwrap();
        let plan = model.into_optimized().unwrap().into_runnable().unwrap();
        let input = Tensor::from_shape(&[m, k], &x).unwrap();
        let theirs = time(&mut || {
            plan.run(tvec!(input.clone().into_tvalue())).unwrap();
        });
        let pw = PackedWeights::new(&w, k, n, None);
        let mut out = vec![0f32; m * n];
        let mut line = format!("  {m}x{k}x{n}: tract {theirs:.2} ms");
        for &t in &tiers {
            let ours = time(&mut || dense_on(t, &x, &pw, &mut out));
            line += &format!(
                " | nvr-edge {} {ours:.2} ms ({:.2}x tract)",
                t.name(),
                ours / theirs
            );
        }
        println!("{line}");
    }
}

criterion_group! {
    name = benches;
    config = Criterion::default().measurement_time(Duration::from_secs(3)).warm_up_time(Duration::from_secs(1)).sample_size(20);
    targets = bench_xclip
}
criterion_main!(benches);
