//! From ring frames (JPEG) to X-CLIP's `pixel_values` [1, T, 3, S, S], as the reference
//! processor does it: decode, resize the shortest side to `shortest_edge` with the model's
//! filter, centre-crop, rescale, normalise with the model's mean and std. The parameters
//! come from the model's manifest, never from code: they differ between checkpoints.
//!
//! Resizing reproduces Pillow exactly (see `resample`); the tests check the result against
//! the Python processor. Decoding
//! uses `image` (zune-jpeg); against libjpeg-turbo it can differ by a level on some
//! pixels, which the JPEG parity test bounds.

use serde::{Deserialize, Serialize};

use super::resample::{resize_rgb8, Filter};
use crate::ring::linspace_indices;

/// The model's image processor parameters (manifest `preprocess`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PreprocessParams {
    pub shortest_edge: u32,
    /// `bilinear` or `bicubic` (Pillow's, i.e. Catmull-Rom a = -0.5).
    pub resample: String,
    pub crop: u32,
    pub rescale: f64,
    pub mean: [f32; 3],
    pub std: [f32; 3],
}

#[derive(Debug, thiserror::Error)]
pub enum PreprocessError {
    #[error("resample {0:?} is not supported (bilinear, bicubic)")]
    Resample(String),
    #[error("none of the {0} frames could be decoded")]
    NoFrames(usize),
}

/// Reusable preprocessing state: one per inference worker.
pub struct Preprocessor {
    params: PreprocessParams,
    filter: Filter,
}

/// Output of [`Preprocessor::clip`]: how many input frames were unusable.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
pub struct ClipStats {
    pub frames_in: usize,
    pub bad_frames: usize,
}

impl Preprocessor {
    pub fn new(params: PreprocessParams) -> Result<Self, PreprocessError> {
        let filter = match params.resample.as_str() {
            "bilinear" => Filter::Bilinear,
            "bicubic" => Filter::Bicubic,
            other => return Err(PreprocessError::Resample(other.to_string())),
        };
        Ok(Self { params, filter })
    }

    pub fn params(&self) -> &PreprocessParams {
        &self.params
    }

    /// Values per frame in the output (3 * crop * crop).
    pub fn frame_len(&self) -> usize {
        3 * (self.params.crop as usize).pow(2)
    }

    /// Size after resizing the shortest side, as Hugging Face computes it (the long side
    /// truncated, not rounded).
    pub fn resized_size(&self, w: u32, h: u32) -> (u32, u32) {
        let s = self.params.shortest_edge;
        if w <= h {
            (
                s,
                (u64::from(s) * u64::from(h) / u64::from(w.max(1))) as u32,
            )
        } else {
            (
                (u64::from(s) * u64::from(w) / u64::from(h.max(1))) as u32,
                s,
            )
        }
    }

    /// Resize, crop and normalise one RGB8 image into `out` (CHW, `frame_len` values).
    pub fn rgb_into(&mut self, rgb: &[u8], w: u32, h: u32, out: &mut [f32]) {
        let (rw, rh) = self.resized_size(w, h);
        let buf = resize_rgb8(
            rgb,
            w as usize,
            h as usize,
            rw as usize,
            rh as usize,
            self.filter,
        );
        let c = self.params.crop;
        // Centre crop as Hugging Face does: offsets rounded down; a crop larger than the
        // image would be padded there, which a shortest-edge resize to >= crop never needs.
        let top = rh.saturating_sub(c) / 2;
        let left = rw.saturating_sub(c) / 2;
        let plane = (c * c) as usize;
        let scale = self.params.rescale as f32;
        for y in 0..c.min(rh) {
            for x in 0..c.min(rw) {
                let p = (((top + y) * rw + left + x) * 3) as usize;
                let o = (y * c + x) as usize;
                for ch in 0..3 {
                    let v = f32::from(buf[p + ch]) * scale;
                    out[ch * plane + o] = (v - self.params.mean[ch]) / self.params.std[ch];
                }
            }
        }
    }

    /// Build `[T, 3, crop, crop]` (as one flat Vec) from JPEG frames: more frames than T are
    /// sampled evenly, fewer repeat the last. Frames that do not decode are dropped and
    /// counted; the clip fails only when none decodes.
    pub fn clip<'a>(
        &mut self,
        frames: impl IntoIterator<Item = &'a [u8]>,
        t: usize,
        out: &mut Vec<f32>,
    ) -> Result<ClipStats, PreprocessError> {
        let mut decoded: Vec<image::RgbImage> = Vec::new();
        let mut stats = ClipStats::default();
        for f in frames {
            stats.frames_in += 1;
            // The decoder fills a truncated scan with grey rather than failing; a frame
            // must be whole (SOI ... EOI) to count.
            let whole = crate::capture::jpeg::validate_jpeg(f).is_ok();
            match image::load_from_memory_with_format(f, image::ImageFormat::Jpeg) {
                Ok(img) if whole => decoded.push(img.to_rgb8()),
                _ => stats.bad_frames += 1,
            }
        }
        if decoded.is_empty() {
            return Err(PreprocessError::NoFrames(stats.frames_in));
        }
        let n = self.frame_len();
        out.clear();
        out.resize(t * n, 0.0);
        let picks: Vec<usize> = if decoded.len() >= t {
            linspace_indices(decoded.len(), t).collect()
        } else {
            (0..t).map(|i| i.min(decoded.len() - 1)).collect()
        };
        for (slot, &i) in picks.iter().enumerate() {
            let img = &decoded[i];
            self.rgb_into(
                img.as_raw(),
                img.width(),
                img.height(),
                &mut out[slot * n..(slot + 1) * n],
            );
        }
        Ok(stats)
    }
}
