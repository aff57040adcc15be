//! Identity models: `cargo bench --bench identity_models`.
//!
//! Per-model latency on this machine (NanoDet people/vehicles, BlazeFace faces,
//! MobileFaceNet embeddings of two aligned faces, PP-OCRv4 plate read), the identity path's
//! frames per second (JPEG decode, people, faces, alignment, embedding, plates on two of
//! the frames, as the recorder runs a clip window), and the memory each loaded model
//! keeps, each printed against the embedded config's targets. Needs the face embedder
//! fetched (models/identity/fetch.py).
//!
//! First, each graph alone next to onnxruntime in the same run: the product's own tract
//! plan and onnxruntime (benches/identity_peer.py, when `NVR_ORT_PYTHON` names a python
//! with onnxruntime) on the same seeded input, one thread each, p50 of 40 runs, and the
//! ratio tract/onnxruntime. The first line names the CPU and the kernel tiers. With
//! `NVR_IDENTITY_PROFILE` set, each graph's six costliest kinds of op follow its row.

use std::path::{Path, PathBuf};
use std::time::Instant;

use criterion::{criterion_group, criterion_main, Criterion};

mod common;
use common::{p50_p99, python_peer};
use nvr_edge::config::Config;
use nvr_edge::inference::identity::detect::ObjectDetector;
use nvr_edge::inference::identity::face::{
    align, FaceDetector, FaceEmbedder, FaceFilter, FaceObserver,
};
use nvr_edge::inference::identity::observer::ModelsObserver;
use nvr_edge::inference::identity::plates::PlateReader;
use nvr_edge::inference::identity::{ModelError, Observer};
use nvr_edge::inference::onnx::OpTime;
use nvr_edge::inference::xclip::model::seeded_values;
use nvr_edge::memory::{kept_by, MIB};
use nvr_edge::ring::FrameBatch;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn scene() -> image::RgbImage {
    let face = image::open(root().join("models/identity/selftest_face.jpg"))
        .unwrap()
        .to_rgb8();
    let mut s = image::RgbImage::from_pixel(640, 480, image::Rgb([96, 104, 112]));
    image::imageops::replace(&mut s, &face, 170, 90);
    s
}

/// Runs of each graph timed, on both sides.
const PEER_ITERS: usize = 40;
/// Runs averaged in each `NVR_IDENTITY_PROFILE` block.
const PROFILE_RUNS: usize = 10;
/// The seed of the inputs both sides generate.
const SEED: u64 = 77;

/// onnxruntime's p50 and p99 (ms) for `graph` on the seeded input of `shape`, one thread.
fn ort_peer(graph: &Path, shape: &[usize]) -> Option<(f64, f64)> {
    let dims: Vec<String> = shape.iter().map(usize::to_string).collect();
    python_peer(
        "NVR_ORT_PYTHON",
        "identity_peer.py",
        &[
            graph.display().to_string(),
            dims.join(","),
            "1".into(),
            PEER_ITERS.to_string(),
            SEED.to_string(),
        ],
    )
}

/// The `NVR_IDENTITY_PROFILE` block of one graph: its six costliest kinds of op.
fn print_profile(times: Result<Vec<OpTime>, ModelError>) {
    if std::env::var_os("NVR_IDENTITY_PROFILE").is_none() {
        return;
    }
    let times = times.expect("profile runs");
    let total: f64 = times.iter().map(|o| o.ms).sum();
    for o in times.iter().take(6) {
        println!(
            "    {:<32} {:7.2} ms {:5.1} % ({} calls)",
            o.op,
            o.ms,
            100.0 * o.ms / total,
            o.calls
        );
    }
}

/// One graph: the product's plan (`run`, one thread) against onnxruntime, printed, and
/// with `NVR_IDENTITY_PROFILE` set its time per kind of op (`profile`).
fn peer_row(
    name: &str,
    graph: &Path,
    shape: &[usize],
    run: impl Fn(&[f32]),
    profile: impl Fn(&[f32]) -> Result<Vec<OpTime>, ModelError>,
) {
    let input = seeded_values(SEED, shape.iter().product());
    for _ in 0..3 {
        run(&input);
    }
    let times: Vec<f64> = (0..PEER_ITERS)
        .map(|_| {
            let t = Instant::now();
            run(&input);
            t.elapsed().as_secs_f64() * 1e3
        })
        .collect();
    let (p50, p99) = p50_p99(times);
    match ort_peer(graph, shape) {
        Some((o50, o99)) => println!(
            "{name:<22} {shape:?}: tract p50 {p50:8.2} ms (p99 {p99:8.2}) | onnxruntime p50 {o50:8.2} ms (p99 {o99:8.2}) | tract/ort {:.2}",
            p50 / o50
        ),
        None => println!(
            "{name:<22} {shape:?}: tract p50 {p50:8.2} ms (p99 {p99:8.2}) | onnxruntime: not run (set NVR_ORT_PYTHON to a python with onnxruntime)"
        ),
    }
    print_profile(profile(&input));
}

fn bench(c: &mut Criterion) {
    println!("{}", nvr_edge::selftest::SystemInfo::current().bench_line());
    let cfg = Config::embedded().unwrap();
    let t = &cfg.targets;
    let dir = root().join("models/identity");
    let (objects, m_obj) = kept_by(|| ObjectDetector::load(&dir).unwrap());
    let (faces, m_face) = kept_by(|| FaceDetector::builtin().unwrap());
    let (embedder, m_emb) = kept_by(|| match FaceEmbedder::load(&dir) {
        Ok(e) => Some(e),
        Err(e) => {
            eprintln!("face embedder not installed ({e}): run models/identity/fetch.py");
            None
        }
    });
    let (plates, m_ocr) = kept_by(|| PlateReader::load(&dir).unwrap());
    let mib = |b: Option<i64>| b.map_or(f64::NAN, |b| b as f64 / MIB);
    println!(
        "memory kept after load: nanodet {:.1} MiB, blazeface {:.1} MiB, mobilefacenet {:.1} MiB, ppocr {:.1} MiB (target {} MiB in all)",
        mib(m_obj),
        mib(m_face),
        mib(m_emb),
        mib(m_ocr),
        t.identity_models_mb
    );
    println!("graphs alone, one thread, seeded input {SEED}, {PEER_ITERS} runs each side:");
    peer_row(
        "nanodet",
        &dir.join("nanodet.onnx"),
        &[1, 3, 416, 416],
        |x| {
            objects.raw_outputs(x).unwrap();
        },
        |x| objects.profile(x, PROFILE_RUNS),
    );
    peer_row(
        "blazeface",
        &dir.join("blazeface_full.onnx"),
        &[1, 3, 192, 192],
        |x| {
            faces.raw_outputs(x).unwrap();
        },
        |x| faces.profile(x, PROFILE_RUNS),
    );
    if let Some(e) = &embedder {
        peer_row(
            "mobilefacenet",
            &dir.join("mobilefacenet.onnx"),
            &[2, 3, 112, 112],
            |x| {
                e.raw_outputs(x).unwrap();
            },
            |x| e.profile(x, PROFILE_RUNS),
        );
    }
    peer_row(
        "ppocr detector",
        &dir.join("ppocr_det.onnx"),
        &[1, 3, 480, 640],
        |x| {
            plates.raw_det(x).unwrap();
        },
        |x| plates.profile_det(x, PROFILE_RUNS),
    );
    let img = scene();
    let plate_img = image::open(root().join("models/identity/selftest_plate.png"))
        .unwrap()
        .to_rgb8();
    let mut g = c.benchmark_group("identity");
    g.sample_size(20);
    g.bench_function("nanodet_640x480", |b| {
        b.iter(|| objects.detect(&img).unwrap())
    });
    g.bench_function("blazeface_640x480", |b| {
        b.iter(|| faces.detect(&img).unwrap())
    });
    let face = faces.detect(&img).unwrap().remove(0);
    let aligned = align(&img, &face);
    if let Some(e) = &embedder {
        g.bench_function("mobilefacenet_2_faces", |b| {
            b.iter(|| e.embed(&[aligned.clone(), aligned.clone()]).unwrap())
        });
    }
    g.bench_function("ppocr_read_640x480", |b| {
        b.iter(|| plates.read(&plate_img).unwrap())
    });
    g.finish();

    // The identity path on a clip window of 8 JPEG frames, timed by hand for frames/s.
    let mut jpeg = Vec::new();
    jpeg_encoder::Encoder::new(&mut jpeg, 80)
        .encode(img.as_raw(), 640, 480, jpeg_encoder::ColorType::Rgb)
        .unwrap();
    let batch = FrameBatch::still_jpeg(&jpeg, 640, 480, 8);
    let observer = ModelsObserver {
        objects: Some(objects),
        plates_without_vehicle: true,
        faces: embedder.map(|e| {
            FaceObserver::new(
                faces,
                e,
                FaceFilter {
                    min_eye_distance_px: cfg.identity.min_eye_distance_px,
                    min_sharpness: cfg.identity.min_sharpness,
                    max_faces_per_frame: cfg.identity.max_faces_per_frame as usize,
                },
            )
        }),
        plates: Some(plates),
        plate_frames: cfg.identity.plate_frames_per_window as usize,
    };
    let mut out = Vec::new();
    observer.observe(&batch, &mut out).unwrap();
    let runs = 5;
    let t0 = Instant::now();
    for _ in 0..runs {
        out.clear();
        observer.observe(&batch, &mut out).unwrap();
    }
    let fps = (runs * batch.len()) as f64 / t0.elapsed().as_secs_f64();
    println!(
        "identity path: {fps:.1} frames/s over windows of 8 frames ({} observations per window; target {} frames/s)",
        out.len(),
        t.identity_fps
    );
}

criterion_group!(benches, bench);
criterion_main!(benches);
