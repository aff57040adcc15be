//! Identity rows: the models load (real weights), their cost and memory, and the whole
//! identity path on the built-in portrait and plate.

use super::*;
use crate::capture::jpeg::{self, Pixels};
use crate::inference::identity::detect::ObjectDetector;
use crate::inference::identity::face::{FaceDetector, FaceEmbedder, FaceFilter, FaceObserver};
use crate::inference::identity::{IdentityModels, ModelError};

/// A public-domain portrait (NASA's Eileen Collins, 300x300) the identity rows run the
/// people and face models on.
const SELFTEST_FACE: &[u8] = include_bytes!("../../models/identity/selftest_face.jpg");

/// A rendered number plate on a car's rear (our own drawing) the plate rows read.
const SELFTEST_PLATE: &[u8] = include_bytes!("../../models/identity/selftest_plate.png");
const SELFTEST_PLATE_TEXT: &str = "AB123CD";

/// The identity models: loaded (real weights), their cost, the identity path's frame rate
/// on frames showing a face, and a plate read back. Models that are not installed give no
/// rows unless `identity.required`: the header line says what is off and why.
pub(super) fn identity_checks(cfg: &Config) -> (Vec<Check>, Option<String>) {
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
    // Loaded as `run` loads them, with what each keeps allocated (jemalloc, this
    // thread's net allocation).
    let IdentityModels {
        faces,
        objects,
        plates,
        memory,
    } = IdentityModels::load(c);
    match faces {
        Ok((detector, embedder)) => {
            let (r, d) = face_checks(cfg, detector, embedder, objects);
            rows.extend(r);
            notes.push(d);
        }
        Err(e) => missing(&mut rows, &mut notes, "identity_models", error_chain(&e)),
    }
    match plates {
        Some(Ok(reader)) => {
            rows.extend(plate_checks(cfg, &reader));
            notes.push(format!(
                "plates: PP-OCRv4 (real weights, Apache-2.0) from {}",
                c.models_dir.display()
            ));
        }
        Some(Err(e)) => missing(&mut rows, &mut notes, "plate_models", error_chain(&e)),
        None => {}
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

/// Face rows: the detector on a test scene, the embedder, the people detector (when
/// configured) and the identity path's rate.
fn face_checks(
    cfg: &Config,
    detector: FaceDetector,
    embedder: FaceEmbedder,
    objects: Option<Result<ObjectDetector, ModelError>>,
) -> (Vec<Check>, String) {
    let c = &cfg.identity;
    let t = &cfg.targets;
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
    let objects = match objects {
        Some(Ok(d)) => {
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
        Some(Err(e)) => {
            rows.push(
                Check::failed("object_detect_ms", Op::AtMost, t.object_detect_ms, "ms")
                    .detail(error_chain(&e)),
            );
            None
        }
        None => None,
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
    if let Err(e) = jpeg::encode(scene.as_raw(), 640, 480, Pixels::Rgb, 80, &mut jpeg) {
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
