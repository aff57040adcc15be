//! Licence plates: PP-OCRv4 (PaddleOCR, Apache-2.0, as shipped in the `rapidocr-onnxruntime`
//! PyPI package) reads the text in a frame; what looks like a plate goes to the vehicle
//! matcher.
//!
//! * Detection (DBNet): a per-pixel text probability map of the frame letterboxed to
//!   640x480; connected regions above 0.3 whose mean probability is at least 0.5 become
//!   boxes, grown by the DB "unclip" distance (area x 1.6 / perimeter) as the reference
//!   post-processing does.
//! * Recognition (SVTR/CRNN): each box resized to 48 px high (at most 320 wide, padded
//!   grey), greedy CTC decoding over the model's character list (`ppocr_keys.txt`, from the
//!   model's own metadata) plus space.
//!
//! A read is a plate candidate when, uppercased with spaces and separators dropped, it is
//! 4-10 ASCII letters and digits with at least one digit. No vehicle detector runs in front
//! yet: text anywhere in the frame is read.

use std::path::Path;

use image::{imageops::FilterType, RgbImage};
use tract_onnx::prelude::*;

use super::{as_f32, ModelError};
use crate::inference::onnx::{build_fixed, sha256_hex, Expect, LoadError, OpTime, Plan};

const DET_W: usize = 640;
const DET_H: usize = 480;
const REC_H: usize = 48;
const REC_W: usize = 320;
const DET_FILE: &str = "ppocr_det.onnx";
const REC_FILE: &str = "ppocr_rec.onnx";
const KEYS_FILE: &str = "ppocr_keys.txt";

/// One piece of text read in an image.
#[derive(Debug, Clone, PartialEq)]
pub struct TextRead {
    /// x0, y0, x1, y1 in image pixels.
    pub bbox: [f32; 4],
    pub text: String,
    /// Mean probability of the decoded characters.
    pub confidence: f32,
}

impl TextRead {
    /// The read as a plate (uppercase letters and digits), when it looks like one.
    pub fn plate(&self) -> Option<String> {
        let p: String = self
            .text
            .chars()
            .filter(|c| c.is_ascii_alphanumeric())
            .map(|c| c.to_ascii_uppercase())
            .collect();
        let only_plate_chars = self
            .text
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, ' ' | '-' | '.' | '·'));
        (only_plate_chars && (4..=10).contains(&p.len()) && p.chars().any(|c| c.is_ascii_digit()))
            .then_some(p)
    }
}

pub struct PlateReader {
    det: Plan,
    rec: Plan,
    keys: Vec<String>,
    /// sha256 of the two graphs, for reports.
    pub det_sha256: String,
    pub rec_sha256: String,
    /// Mean text probability a detected region needs.
    pub box_threshold: f32,
    /// Confidence a read needs to be reported.
    pub min_confidence: f32,
}

fn read_file(path: &Path) -> Result<Vec<u8>, LoadError> {
    std::fs::read(path).map_err(|e| LoadError {
        path: path.display().to_string(),
        message: format!("{e} (fetch it with models/identity/fetch.py)"),
    })
}

impl PlateReader {
    /// Load `ppocr_det.onnx`, `ppocr_rec.onnx` and `ppocr_keys.txt` from `dir`.
    pub fn load(dir: &Path) -> Result<Self, ModelError> {
        let (dp, rp, kp) = (dir.join(DET_FILE), dir.join(REC_FILE), dir.join(KEYS_FILE));
        let (db, rb) = (read_file(&dp)?, read_file(&rp)?);
        let keys_text = String::from_utf8(read_file(&kp)?).map_err(|_| LoadError {
            path: kp.display().to_string(),
            message: "not UTF-8 text".into(),
        })?;
        let keys: Vec<String> = keys_text.lines().map(str::to_string).collect();
        let any_image = |name| Expect {
            name,
            dt: f32::datum_type(),
            shape: vec![None, Some(3), None, None],
        };
        let det = build_fixed(
            &dp.display().to_string(),
            &db,
            &[any_image("x")],
            1,
            &[&[1, 3, DET_H, DET_W]],
        )?;
        let rec = build_fixed(
            &rp.display().to_string(),
            &rb,
            &[any_image("x")],
            1,
            &[&[1, 3, REC_H, REC_W]],
        )?;
        let r = Self {
            det,
            rec,
            keys,
            det_sha256: sha256_hex(&db),
            rec_sha256: sha256_hex(&rb),
            box_threshold: 0.5,
            min_confidence: 0.5,
        };
        // The recogniser's classes are blank + the character list + space.
        let classes = r
            .run_rec(&RgbImage::from_pixel(8, 8, image::Rgb([127, 127, 127])))?
            .1;
        if classes != r.keys.len() + 2 {
            return Err(LoadError {
                path: kp.display().to_string(),
                message: format!(
                    "{} characters, but {} has {classes} classes (expected characters + 2)",
                    r.keys.len(),
                    rp.display()
                ),
            }
            .into());
        }
        Ok(r)
    }

    /// Raw text map for an input of `[1,3,480,640]` values (parity checks).
    pub fn raw_det(&self, input: &[f32]) -> Result<Vec<f32>, ModelError> {
        run1(&self.det, &[1, 3, DET_H, DET_W], input)
    }

    /// Time per kind of op of the detector on an input of `[1,3,480,640]` values.
    pub fn profile_det(&self, input: &[f32], runs: usize) -> Result<Vec<OpTime>, ModelError> {
        super::profile_plan(&self.det, &[1, 3, DET_H, DET_W], input, runs)
    }

    /// Raw class probabilities for an input of `[1,3,48,320]` values (parity checks).
    pub fn raw_rec(&self, input: &[f32]) -> Result<Vec<f32>, ModelError> {
        run1(&self.rec, &[1, 3, REC_H, REC_W], input)
    }

    /// Every piece of text in `img`, top to bottom.
    pub fn read(&self, img: &RgbImage) -> Result<Vec<TextRead>, ModelError> {
        let (w, h) = img.dimensions();
        if w == 0 || h == 0 {
            return Err(ModelError::Image("empty image".into()));
        }
        let scale = (DET_W as f32 / w as f32).min(DET_H as f32 / h as f32);
        let (nw, nh) = (
            ((w as f32 * scale).round() as u32).clamp(1, DET_W as u32),
            ((h as f32 * scale).round() as u32).clamp(1, DET_H as u32),
        );
        let small = if (nw, nh) == (w, h) {
            img.clone()
        } else {
            image::imageops::resize(img, nw, nh, FilterType::Triangle)
        };
        let plane = DET_W * DET_H;
        let mut input = vec![0.0f32; 3 * plane];
        for (x, y, p) in small.enumerate_pixels() {
            let i = y as usize * DET_W + x as usize;
            for c in 0..3 {
                input[c * plane + i] = f32::from(p[c]) / 127.5 - 1.0;
            }
        }
        let prob = run1(&self.det, &[1, 3, DET_H, DET_W], &input)?;
        if prob.len() != plane {
            return Err(ModelError::Run(format!(
                "text map of {} values, expected {plane}",
                prob.len()
            )));
        }
        let mut out = Vec::new();
        for [x0, y0, x1, y1] in regions(
            &prob,
            DET_W,
            DET_H,
            nw as usize,
            nh as usize,
            self.box_threshold,
        ) {
            // Back to image pixels, clamped.
            let to = |v: f32, max: u32| (v / scale).clamp(0.0, max as f32);
            let bbox = [to(x0, w), to(y0, h), to(x1, w), to(y1, h)];
            let (cx, cy) = (bbox[0] as u32, bbox[1] as u32);
            let (cw, ch) = (
                (bbox[2] as u32).saturating_sub(cx).max(1),
                (bbox[3] as u32).saturating_sub(cy).max(1),
            );
            let crop =
                image::imageops::crop_imm(img, cx, cy, cw.min(w - cx), ch.min(h - cy)).to_image();
            let (text, _, confidence) = self.decode(&crop)?;
            if !text.trim().is_empty() && confidence >= self.min_confidence {
                out.push(TextRead {
                    bbox,
                    text: text.trim().to_string(),
                    confidence,
                });
            }
        }
        Ok(out)
    }

    /// (text, classes, mean confidence) of one line of text.
    fn decode(&self, crop: &RgbImage) -> Result<(String, usize, f32), ModelError> {
        let (probs, classes) = self.run_rec(crop)?;
        let steps = probs.len() / classes.max(1);
        let mut text = String::new();
        let (mut last, mut conf_sum, mut n) = (0usize, 0.0f32, 0u32);
        for t in 0..steps {
            let row = &probs[t * classes..(t + 1) * classes];
            let (k, p) =
                row.iter()
                    .enumerate()
                    .fold((0, f32::MIN), |b, (i, &v)| if v > b.1 { (i, v) } else { b });
            if k != 0 && k != last {
                text.push_str(self.keys.get(k - 1).map_or(" ", String::as_str));
                conf_sum += p;
                n += 1;
            }
            last = k;
        }
        let conf = if n > 0 { conf_sum / n as f32 } else { 0.0 };
        Ok((text, classes, conf))
    }

    /// Raw recogniser output (steps x classes, flattened) and the class count.
    fn run_rec(&self, crop: &RgbImage) -> Result<(Vec<f32>, usize), ModelError> {
        let (w, h) = crop.dimensions();
        let rw =
            ((w as f32 * REC_H as f32 / h.max(1) as f32).round() as u32).clamp(1, REC_W as u32);
        let line = image::imageops::resize(crop, rw, REC_H as u32, FilterType::Triangle);
        let plane = REC_H * REC_W;
        // Padding is mid-grey, 0 after normalisation, as the reference pads.
        let mut input = vec![0.0f32; 3 * plane];
        for (x, y, p) in line.enumerate_pixels() {
            let i = y as usize * REC_W + x as usize;
            for c in 0..3 {
                input[c * plane + i] = f32::from(p[c]) / 127.5 - 1.0;
            }
        }
        let t = Tensor::from_shape(&[1, 3, REC_H, REC_W], &input)
            .map_err(|e| ModelError::Run(e.to_string()))?;
        let out = self
            .rec
            .run(tvec!(t.into_tvalue()))
            .map_err(|e| ModelError::Run(format!("{e:#}")))?;
        let classes = *out[0].shape().last().unwrap_or(&1);
        Ok((as_f32(&out[0])?.to_vec(), classes))
    }
}

fn run1(plan: &Plan, shape: &[usize], input: &[f32]) -> Result<Vec<f32>, ModelError> {
    let t = Tensor::from_shape(shape, input).map_err(|e| ModelError::Run(e.to_string()))?;
    let out = plan
        .run(tvec!(t.into_tvalue()))
        .map_err(|e| ModelError::Run(format!("{e:#}")))?;
    Ok(as_f32(&out[0])?.to_vec())
}

/// Text regions of a DB probability map (`w` x `h`, of which the top-left `vw` x `vh` is
/// image): boxes of 4-connected pixels above 0.3 whose mean probability is at least
/// `box_threshold`, grown by the unclip distance. Top to bottom.
fn regions(
    prob: &[f32],
    w: usize,
    h: usize,
    vw: usize,
    vh: usize,
    box_threshold: f32,
) -> Vec<[f32; 4]> {
    let mut seen = vec![false; w * h];
    let mut stack = Vec::new();
    let mut out = Vec::new();
    for start in 0..w * h {
        let (sx, sy) = (start % w, start / w);
        if seen[start] || prob[start] <= 0.3 || sx >= vw || sy >= vh {
            continue;
        }
        seen[start] = true;
        stack.push(start);
        let (mut x0, mut y0, mut x1, mut y1) = (sx, sy, sx, sy);
        let (mut sum, mut n) = (0.0f32, 0usize);
        while let Some(i) = stack.pop() {
            let (x, y) = (i % w, i / w);
            x0 = x0.min(x);
            x1 = x1.max(x);
            y0 = y0.min(y);
            y1 = y1.max(y);
            sum += prob[i];
            n += 1;
            let mut visit = |j: usize| {
                if !seen[j] && prob[j] > 0.3 && j % w < vw && j / w < vh {
                    seen[j] = true;
                    stack.push(j);
                }
            };
            if x > 0 {
                visit(i - 1);
            }
            if x + 1 < w {
                visit(i + 1);
            }
            if y > 0 {
                visit(i - w);
            }
            if y + 1 < h {
                visit(i + w);
            }
        }
        let (bw, bh) = ((x1 - x0 + 1) as f32, (y1 - y0 + 1) as f32);
        if bh < 3.0 || sum / (n as f32) < box_threshold {
            continue;
        }
        let d = bw * bh * 1.6 / (2.0 * (bw + bh));
        out.push([
            (x0 as f32 - d).max(0.0),
            (y0 as f32 - d).max(0.0),
            (x1 as f32 + 1.0 + d).min(vw as f32),
            (y1 as f32 + 1.0 + d).min(vh as f32),
        ]);
    }
    out.sort_by(|a, b| a[1].total_cmp(&b[1]));
    out
}
