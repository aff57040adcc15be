//! Faces: detection, alignment and embedding, with real pretrained weights (see
//! `models/identity/`).
//!
//! * BlazeFace full range (MediaPipe, Apache-2.0; compiled into the binary) finds faces and
//!   six landmarks in a frame letterboxed to 192x192.
//! * Each face is aligned to the 112x112 ArcFace template by the least-squares similarity
//!   transform from its eyes, nose tip and mouth centre: the embedder was trained on faces
//!   aligned that way, and an unaligned crop costs most of its accuracy.
//! * MobileFaceNet (192-d, fetched at setup: its weights have no licence we could
//!   redistribute under) turns an aligned face into an embedding; its model id is the
//!   sha256 of the original weights, so the household never compares embeddings of
//!   different models.
//!
//! Faces too small (eye distance) or too blurry (variance of the Laplacian) to be worth
//! embedding are skipped and counted: a match from a 20-pixel face is a guess.

use std::path::{Path, PathBuf};

use image::{imageops::FilterType, RgbImage};
use tract_onnx::prelude::*;

use super::{as_f32, iou, manifest, read_verified, IdentityManifest, ModelError, Observation};
use crate::inference::onnx::{build, Expect, OpTime, Plan};

const DETECTOR_ONNX: &[u8] = include_bytes!("../../../models/identity/blazeface_full.onnx");
const DETECTOR_MANIFEST: &str = include_str!("../../../models/identity/blazeface_full.json");
const DET_SIZE: usize = 192;
const DET_GRID: usize = 48;
const ALIGNED: usize = 112;
/// ArcFace's 112x112 template: (image-left) eye, (image-right) eye, nose tip, and the mouth
/// centre (the midpoint of its two mouth corners).
const TEMPLATE: [[f32; 2]; 4] = [
    [38.2946, 51.6963],
    [73.5318, 51.5014],
    [56.0252, 71.7366],
    [56.1396, 92.2848],
];
/// The embedder's batch is fixed by its graph.
const EMBED_BATCH: usize = 2;

/// One face in image pixels.
#[derive(Debug, Clone, PartialEq)]
pub struct Face {
    pub score: f32,
    /// x0, y0, x1, y1
    pub bbox: [f32; 4],
    /// Subject's right eye, left eye, nose tip, mouth centre, right ear, left ear.
    pub keypoints: [[f32; 2]; 6],
}

impl Face {
    pub fn eye_distance(&self) -> f32 {
        let [a, b] = [self.keypoints[0], self.keypoints[1]];
        ((a[0] - b[0]).powi(2) + (a[1] - b[1]).powi(2)).sqrt()
    }

    pub fn width(&self) -> f32 {
        self.bbox[2] - self.bbox[0]
    }
}

pub struct FaceDetector {
    plan: Plan,
    pub manifest: IdentityManifest,
    /// Sigmoid score a detection needs (MediaPipe's full-range setting: 0.6).
    pub min_score: f32,
    /// Overlap above which the weaker of two detections is dropped.
    pub nms_iou: f32,
}

impl FaceDetector {
    /// BlazeFace full range, as compiled into the binary.
    pub fn builtin() -> Result<Self, ModelError> {
        let plan = build(
            "built-in blazeface_full.onnx",
            DETECTOR_ONNX,
            &[Expect {
                name: "input",
                dt: f32::datum_type(),
                shape: vec![
                    Some(1),
                    Some(3),
                    Some(DET_SIZE as i64),
                    Some(DET_SIZE as i64),
                ],
            }],
            2,
        )?;
        Ok(Self {
            plan,
            manifest: manifest("built-in blazeface_full.json", DETECTOR_MANIFEST)?,
            min_score: 0.6,
            nms_iou: 0.3,
        })
    }

    /// Faces in `img`, strongest first.
    pub fn detect(&self, img: &RgbImage) -> Result<Vec<Face>, ModelError> {
        let (w, h) = img.dimensions();
        if w == 0 || h == 0 {
            return Err(ModelError::Image("empty image".into()));
        }
        // Letterbox: scale the longer side to 192, centre, pad with black.
        let scale = DET_SIZE as f32 / w.max(h) as f32;
        let (nw, nh) = (
            ((w as f32 * scale).round() as u32).clamp(1, DET_SIZE as u32),
            ((h as f32 * scale).round() as u32).clamp(1, DET_SIZE as u32),
        );
        let small = image::imageops::resize(img, nw, nh, FilterType::Triangle);
        let (px, py) = ((DET_SIZE as u32 - nw) / 2, (DET_SIZE as u32 - nh) / 2);
        let plane = DET_SIZE * DET_SIZE;
        let mut input = vec![-1.0f32; 3 * plane];
        for (x, y, p) in small.enumerate_pixels() {
            let i = (y + py) as usize * DET_SIZE + (x + px) as usize;
            for c in 0..3 {
                input[c * plane + i] = f32::from(p[c]) / 127.5 - 1.0;
            }
        }
        let input = Tensor::from_shape(&[1, 3, DET_SIZE, DET_SIZE], &input)
            .map_err(|e| ModelError::Run(e.to_string()))?;
        let out = self
            .plan
            .run(tvec!(input.into_tvalue()))
            .map_err(|e| ModelError::Run(format!("{e:#}")))?;
        let (reg, cls) = (as_f32(&out[0])?, as_f32(&out[1])?);
        let anchors = DET_GRID * DET_GRID;
        if reg.len() != anchors * 16 || cls.len() != anchors {
            return Err(ModelError::Run(format!(
                "outputs of {} and {} values; expected {} and {anchors}",
                reg.len(),
                cls.len(),
                anchors * 16
            )));
        }
        let mut cands: Vec<(f32, usize)> = cls
            .iter()
            .enumerate()
            .map(|(i, &logit)| (1.0 / (1.0 + (-logit.clamp(-100.0, 100.0)).exp()), i))
            .filter(|(s, _)| *s >= self.min_score)
            .collect();
        cands.sort_by(|a, b| b.0.total_cmp(&a.0));
        // Model units (0..1 of the letterboxed square) back to image pixels.
        let s = DET_SIZE as f32;
        let to_px = |x: f32, y: f32| [(x * s - px as f32) / scale, (y * s - py as f32) / scale];
        let mut faces: Vec<Face> = Vec::new();
        for (score, i) in cands {
            let r = &reg[i * 16..i * 16 + 16];
            let (ax, ay) = (
                ((i % DET_GRID) as f32 + 0.5) / DET_GRID as f32,
                ((i / DET_GRID) as f32 + 0.5) / DET_GRID as f32,
            );
            let (cx, cy) = (r[0] / s + ax, r[1] / s + ay);
            let (bw, bh) = (r[2] / s, r[3] / s);
            let p0 = to_px(cx - bw / 2.0, cy - bh / 2.0);
            let p1 = to_px(cx + bw / 2.0, cy + bh / 2.0);
            let bbox = [p0[0], p0[1], p1[0], p1[1]];
            if faces.iter().any(|f| iou(&f.bbox, &bbox) > self.nms_iou) {
                continue;
            }
            let mut keypoints = [[0.0; 2]; 6];
            for (k, kp) in keypoints.iter_mut().enumerate() {
                *kp = to_px(r[4 + 2 * k] / s + ax, r[5 + 2 * k] / s + ay);
            }
            faces.push(Face {
                score,
                bbox,
                keypoints,
            });
        }
        Ok(faces)
    }
}

/// Run `plan` on one f32 input of `shape` and return every output value, outputs
/// concatenated in graph order (for parity checks against another runtime).
fn run_raw(plan: &Plan, shape: &[usize], input: &[f32]) -> Result<Vec<f32>, ModelError> {
    let t = Tensor::from_shape(shape, input).map_err(|e| ModelError::Run(e.to_string()))?;
    let out = plan
        .run(tvec!(t.into_tvalue()))
        .map_err(|e| ModelError::Run(format!("{e:#}")))?;
    let mut all = Vec::new();
    for o in out.iter() {
        all.extend_from_slice(as_f32(o)?);
    }
    Ok(all)
}

impl FaceDetector {
    /// The raw graph outputs for an input of `[1,3,192,192]` values.
    pub fn raw_outputs(&self, input: &[f32]) -> Result<Vec<f32>, ModelError> {
        run_raw(&self.plan, &[1, 3, DET_SIZE, DET_SIZE], input)
    }

    /// Time per kind of op on an input of `[1,3,192,192]` values.
    pub fn profile(&self, input: &[f32], runs: usize) -> Result<Vec<OpTime>, ModelError> {
        super::profile_plan(&self.plan, &[1, 3, DET_SIZE, DET_SIZE], input, runs)
    }
}

/// The face cut out and warped onto the 112x112 template (bilinear; outside the image is
/// black).
pub fn align(img: &RgbImage, face: &Face) -> RgbImage {
    // Least-squares similarity (rotation, uniform scale, translation) from the landmarks to
    // the template, as complex numbers: dst = a * src + t.
    let src = &face.keypoints[..4];
    let n = src.len() as f32;
    let mean = |p: &[[f32; 2]]| {
        let (x, y) = p.iter().fold((0.0, 0.0), |(x, y), q| (x + q[0], y + q[1]));
        [x / n, y / n]
    };
    let (ms, md) = (mean(src), mean(&TEMPLATE));
    let (mut num_re, mut num_im, mut den) = (0.0f32, 0.0f32, 0.0f32);
    for (s, d) in src.iter().zip(&TEMPLATE) {
        let (sx, sy) = (s[0] - ms[0], s[1] - ms[1]);
        let (dx, dy) = (d[0] - md[0], d[1] - md[1]);
        // (d) * conj(s)
        num_re += dx * sx + dy * sy;
        num_im += dy * sx - dx * sy;
        den += sx * sx + sy * sy;
    }
    let (a_re, a_im) = if den > 0.0 {
        (num_re / den, num_im / den)
    } else {
        (1.0, 0.0)
    };
    // Inverse map: src = (dst - t) / a.
    let t = [
        md[0] - (a_re * ms[0] - a_im * ms[1]),
        md[1] - (a_im * ms[0] + a_re * ms[1]),
    ];
    let mag = (a_re * a_re + a_im * a_im).max(f32::EPSILON);
    let (i_re, i_im) = (a_re / mag, -a_im / mag);
    let (w, h) = img.dimensions();
    let mut out = RgbImage::new(ALIGNED as u32, ALIGNED as u32);
    for (ox, oy, px) in out.enumerate_pixels_mut() {
        let (dx, dy) = (ox as f32 - t[0], oy as f32 - t[1]);
        let sx = i_re * dx - i_im * dy;
        let sy = i_im * dx + i_re * dy;
        *px = bilinear(img, w, h, sx, sy);
    }
    out
}

fn bilinear(img: &RgbImage, w: u32, h: u32, x: f32, y: f32) -> image::Rgb<u8> {
    if !(x > -1.0 && y > -1.0 && x < w as f32 && y < h as f32) {
        return image::Rgb([0, 0, 0]);
    }
    let (x0, y0) = (x.floor(), y.floor());
    let (fx, fy) = (x - x0, y - y0);
    let get = |xi: f32, yi: f32| -> [f32; 3] {
        if xi < 0.0 || yi < 0.0 || xi >= w as f32 || yi >= h as f32 {
            return [0.0; 3];
        }
        let p = img.get_pixel(xi as u32, yi as u32);
        [f32::from(p[0]), f32::from(p[1]), f32::from(p[2])]
    };
    let (a, b, c, d) = (
        get(x0, y0),
        get(x0 + 1.0, y0),
        get(x0, y0 + 1.0),
        get(x0 + 1.0, y0 + 1.0),
    );
    let mut o = [0u8; 3];
    for k in 0..3 {
        let top = a[k] + (b[k] - a[k]) * fx;
        let bot = c[k] + (d[k] - c[k]) * fx;
        o[k] = (top + (bot - top) * fy).round().clamp(0.0, 255.0) as u8;
    }
    image::Rgb(o)
}

/// Variance of the Laplacian of the luma: low on blurred or featureless faces.
pub fn sharpness(face: &RgbImage) -> f32 {
    let (w, h) = face.dimensions();
    if w < 3 || h < 3 {
        return 0.0;
    }
    let luma = |x: u32, y: u32| {
        let p = face.get_pixel(x, y);
        0.299 * f32::from(p[0]) + 0.587 * f32::from(p[1]) + 0.114 * f32::from(p[2])
    };
    let (mut sum, mut sq, mut n) = (0.0f64, 0.0f64, 0.0f64);
    for y in 1..h - 1 {
        for x in 1..w - 1 {
            let l = luma(x - 1, y) + luma(x + 1, y) + luma(x, y - 1) + luma(x, y + 1)
                - 4.0 * luma(x, y);
            sum += f64::from(l);
            sq += f64::from(l) * f64::from(l);
            n += 1.0;
        }
    }
    ((sq / n) - (sum / n).powi(2)) as f32
}

pub struct FaceEmbedder {
    plan: Plan,
    pub manifest: IdentityManifest,
    pub path: PathBuf,
    pub dim: usize,
}

impl FaceEmbedder {
    /// Load `mobilefacenet.onnx` and its manifest `mobilefacenet.json` from `dir`; the file
    /// must be the one the manifest describes.
    pub fn load(dir: &Path) -> Result<Self, ModelError> {
        let (path, bytes, manifest) = read_verified(dir, "mobilefacenet")?;
        let shown = path.display().to_string();
        let plan = build(
            &shown,
            &bytes,
            &[Expect {
                name: "input",
                dt: f32::datum_type(),
                shape: vec![
                    Some(EMBED_BATCH as i64),
                    Some(3),
                    Some(ALIGNED as i64),
                    Some(ALIGNED as i64),
                ],
            }],
            1,
        )?;
        let mut e = Self {
            plan,
            manifest,
            path,
            dim: 0,
        };
        let probe = e.embed(&[RgbImage::new(ALIGNED as u32, ALIGNED as u32)])?;
        e.dim = probe[0].len();
        Ok(e)
    }

    /// The raw graph outputs for an input of `[2,3,112,112]` values.
    pub fn raw_outputs(&self, input: &[f32]) -> Result<Vec<f32>, ModelError> {
        run_raw(&self.plan, &[EMBED_BATCH, 3, ALIGNED, ALIGNED], input)
    }

    /// Time per kind of op on an input of `[2,3,112,112]` values.
    pub fn profile(&self, input: &[f32], runs: usize) -> Result<Vec<OpTime>, ModelError> {
        super::profile_plan(&self.plan, &[EMBED_BATCH, 3, ALIGNED, ALIGNED], input, runs)
    }

    /// The household's model id for this embedder's vectors.
    pub fn model_id(&self) -> String {
        format!("{}:{}", self.manifest.name, self.manifest.weights_sha256)
    }

    /// Unit-length embeddings of aligned 112x112 faces, in order.
    pub fn embed(&self, faces: &[RgbImage]) -> Result<Vec<Vec<f32>>, ModelError> {
        let plane = ALIGNED * ALIGNED;
        let mut out = Vec::with_capacity(faces.len());
        for chunk in faces.chunks(EMBED_BATCH) {
            let mut input = vec![0.0f32; EMBED_BATCH * 3 * plane];
            for b in 0..EMBED_BATCH {
                // A short last batch repeats its first face; that result is dropped.
                let f = chunk.get(b).unwrap_or(&chunk[0]);
                if f.dimensions() != (ALIGNED as u32, ALIGNED as u32) {
                    return Err(ModelError::Image(format!(
                        "aligned face is {:?}, expected 112x112",
                        f.dimensions()
                    )));
                }
                for (x, y, p) in f.enumerate_pixels() {
                    let i = y as usize * ALIGNED + x as usize;
                    for c in 0..3 {
                        input[(b * 3 + c) * plane + i] = (f32::from(p[c]) - 127.5) / 128.0;
                    }
                }
            }
            let t = Tensor::from_shape(&[EMBED_BATCH, 3, ALIGNED, ALIGNED], &input)
                .map_err(|e| ModelError::Run(e.to_string()))?;
            let res = self
                .plan
                .run(tvec!(t.into_tvalue()))
                .map_err(|e| ModelError::Run(format!("{e:#}")))?;
            let v = as_f32(&res[0])?;
            let dim = v.len() / EMBED_BATCH;
            for b in 0..chunk.len() {
                let mut e = v[b * dim..(b + 1) * dim].to_vec();
                let n = e
                    .iter()
                    .map(|x| x * x)
                    .sum::<f32>()
                    .sqrt()
                    .max(f32::EPSILON);
                e.iter_mut().for_each(|x| *x /= n);
                out.push(e);
            }
        }
        Ok(out)
    }
}

/// Thresholds for the faces worth embedding.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct FaceFilter {
    /// Smallest distance between the eyes, in frame pixels.
    pub min_eye_distance_px: f32,
    /// Smallest variance of the Laplacian of the aligned face (see [`sharpness`]).
    pub min_sharpness: f32,
    /// Faces embedded per frame at most (strongest first); the rest are skipped.
    pub max_faces_per_frame: usize,
}

impl FaceFilter {
    /// The filter `[identity]` sets.
    pub fn from_config(c: &crate::config::IdentityConfig) -> Self {
        Self {
            min_eye_distance_px: c.min_eye_distance_px,
            min_sharpness: c.min_sharpness,
            max_faces_per_frame: c.max_faces_per_frame as usize,
        }
    }
}

/// The identity models as the analysis uses them: faces in the frames of a clip window,
/// each embedded, as observations for the household matcher. Frames are JPEG (as the ring
/// holds them); one that does not decode is skipped, counted.
pub struct FaceObserver {
    pub detector: FaceDetector,
    pub embedder: FaceEmbedder,
    pub filter: FaceFilter,
    model_id: String,
}

impl FaceObserver {
    pub fn new(detector: FaceDetector, embedder: FaceEmbedder, filter: FaceFilter) -> Self {
        let model_id = embedder.model_id();
        Self {
            detector,
            embedder,
            filter,
            model_id,
        }
    }

    /// The face models `[identity]` names, for enrolment and photo matching (the CLI, an
    /// upload): the built-in detector and the installed embedder; every face of a photo is
    /// considered (the per-frame cap is the recorder's).
    pub fn for_photos(cfg: &crate::config::IdentityConfig) -> Result<Self, ModelError> {
        Ok(Self::new(
            FaceDetector::builtin()?,
            FaceEmbedder::load(&cfg.models_dir)?,
            FaceFilter {
                max_faces_per_frame: usize::MAX,
                ..FaceFilter::from_config(cfg)
            },
        ))
    }

    /// Faces in `img` that pass the filter, aligned, with the reason for each one skipped.
    pub fn faces(&self, img: &RgbImage) -> Result<(Vec<RgbImage>, Vec<&'static str>), ModelError> {
        let mut kept = Vec::new();
        let mut skipped = Vec::new();
        for (i, f) in self.detector.detect(img)?.iter().enumerate() {
            if i >= self.filter.max_faces_per_frame {
                skipped.push("too many faces in the frame");
            } else if f.eye_distance() < self.filter.min_eye_distance_px {
                skipped.push("face too small");
            } else {
                let a = align(img, f);
                if sharpness(&a) < self.filter.min_sharpness {
                    skipped.push("face too blurry");
                } else {
                    kept.push(a);
                }
            }
        }
        Ok((kept, skipped))
    }
}

impl FaceObserver {
    /// The faces of one decoded frame as observations (embeddings, or why each was skipped).
    pub fn observe_image(
        &self,
        img: &RgbImage,
        ts_us: i64,
        out: &mut Vec<Observation>,
    ) -> Result<(), ModelError> {
        let (faces, skipped) = self.faces(img)?;
        out.extend(
            skipped
                .into_iter()
                .map(|why| Observation::Skipped { ts_us, why }),
        );
        if faces.is_empty() {
            return Ok(());
        }
        for embedding in self.embedder.embed(&faces)? {
            out.push(Observation::Person {
                ts_us,
                model_id: self.model_id.clone(),
                embedding,
            });
        }
        Ok(())
    }

    pub fn describe(&self) -> String {
        format!(
            "faces: {} ({} weights, {}) + {} ({} weights, {})",
            self.detector.manifest.name,
            self.detector.manifest.weights,
            self.detector.manifest.licence,
            self.embedder.manifest.name,
            self.embedder.manifest.weights,
            self.embedder.path.display()
        )
    }
}
