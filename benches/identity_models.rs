//! Identity models: `cargo bench --bench identity_models`.
//!
//! Per-model latency on this machine (NanoDet people/vehicles, BlazeFace faces,
//! MobileFaceNet embeddings of two aligned faces, PP-OCRv4 plate read), the identity path's
//! frames per second (JPEG decode, people, faces, alignment, embedding, plates on two of
//! the frames, as the recorder runs a clip window), and the memory each loaded model
//! keeps, each printed against the embedded config's targets. Needs the face embedder
//! fetched (models/identity/fetch.py).

use std::path::PathBuf;
use std::time::Instant;

use criterion::{criterion_group, criterion_main, Criterion};
use nvr_edge::config::Config;
use nvr_edge::inference::identity::detect::ObjectDetector;
use nvr_edge::inference::identity::face::{
    align, FaceDetector, FaceEmbedder, FaceFilter, FaceObserver,
};
use nvr_edge::inference::identity::observer::ModelsObserver;
use nvr_edge::inference::identity::plates::PlateReader;
use nvr_edge::inference::identity::Observer;
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

fn bench(c: &mut Criterion) {
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
