//! Synthetic camera: a deterministic scene, JPEG-encoded per frame at the configured size
//! and rate, so every machine can run the whole pipeline and the self-test without a
//! camera.
//!
//! The scene is a textured gradient (so frames compress like a real view, not like a flat
//! colour) with a person-sized dark figure walking across it every four seconds, which is
//! what the motion gate and the models downstream are meant to notice. The scene is
//! rendered straight into YCbCr, the encoder's native input, to keep the cost per frame
//! close to that of encoding a camera's YUYV.

use std::sync::Arc;

use super::jpeg::{self, Pixels};
use super::{Captured, FrameSource, Pacer, SourceError, SourceInfo};
use crate::clock::Clock;
use crate::config::CameraConfig;
use crate::ring::{FrameFormat, FrameMeta};

/// Seconds the figure takes to cross the frame.
const CROSSING_SECS: f64 = 4.0;

pub struct SyntheticSource {
    info: SourceInfo,
    quality: u8,
    background: Vec<u8>,
    frame: Vec<u8>,
    pacer: Pacer,
    clock: Arc<dyn Clock>,
    seq: u64,
}

impl SyntheticSource {
    pub fn new(
        cam: &CameraConfig,
        clock: Arc<dyn Clock>,
        paced: bool,
    ) -> Result<Self, SourceError> {
        let (w, h) = (cam.width, cam.height);
        if w > u32::from(u16::MAX) || h > u32::from(u16::MAX) {
            return Err(SourceError::Unavailable(format!(
                "{w}x{h} is larger than a JPEG can be"
            )));
        }
        let background = render_background(w as usize, h as usize);
        Ok(Self {
            info: SourceInfo {
                driver: "synthetic".into(),
                format: FrameFormat::Jpeg,
                width: w,
                height: h,
                fps: cam.fps,
                detail: format!(
                    "walking figure on textured scene, JPEG q{}{}",
                    cam.jpeg_quality,
                    if paced { "" } else { ", unpaced" }
                ),
            },
            quality: cam.jpeg_quality,
            frame: background.clone(),
            background,
            pacer: Pacer::new(cam.fps, paced),
            clock,
            seq: 0,
        })
    }

    /// Draw frame `seq` of the scene into `self.frame` (YCbCr, 3 bytes per pixel).
    fn render(&mut self, seq: u64) {
        let (w, h) = (self.info.width as usize, self.info.height as usize);
        self.frame.copy_from_slice(&self.background);
        let body_w = (w / 10).max(2);
        let body_h = (h * 2 / 5).max(4);
        let head = (body_w * 3 / 5).max(1);
        let frames_per_crossing = (CROSSING_SECS * self.info.fps).max(1.0);
        let phase = (seq as f64 % frames_per_crossing) / frames_per_crossing;
        let left = (phase * (w + body_w) as f64) as isize - body_w as isize;
        let top = (h - body_h) * 3 / 4;
        let stride = w * 3;
        let mut paint = |x0: isize, y0: usize, rw: usize, rh: usize, y: u8| {
            for row in y0..(y0 + rh).min(h) {
                for col in x0.max(0) as usize..((x0 + rw as isize).max(0) as usize).min(w) {
                    let p = row * stride + col * 3;
                    self.frame[p] = y;
                    self.frame[p + 1] = 120;
                    self.frame[p + 2] = 136;
                }
            }
        };
        paint(left, top, body_w, body_h, 40);
        let head_left = left + (body_w as isize - head as isize) / 2;
        paint(head_left, top.saturating_sub(head + 2), head, head, 60);
    }
}

/// Gradient plus deterministic noise: about the entropy of an indoor view.
fn render_background(w: usize, h: usize) -> Vec<u8> {
    let mut out = vec![0u8; w * h * 3];
    let mut state = 0x9E37_79B9_7F4A_7C15u64;
    for y in 0..h {
        for x in 0..w {
            // xorshift64: cheap, deterministic, good enough for texture.
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            let noise = (state >> 59) as i32 - 16;
            let luma = 70 + (120 * x / w.max(1)) as i32 + (40 * y / h.max(1)) as i32 + noise;
            let p = (y * w + x) * 3;
            out[p] = luma.clamp(16, 235) as u8;
            out[p + 1] = (128 + (x * 16 / w.max(1)) as i32 - 8) as u8;
            out[p + 2] = (128 - (y * 16 / h.max(1)) as i32 + 8) as u8;
        }
    }
    out
}

impl FrameSource for SyntheticSource {
    fn info(&self) -> &SourceInfo {
        &self.info
    }

    fn next_frame(&mut self, buf: &mut Vec<u8>) -> Result<Captured, SourceError> {
        let (ts_us, skipped) = self.pacer.wait(&*self.clock);
        // A skipped slot is a frame a camera would have delivered: keep the figure moving.
        self.seq += skipped;
        let seq = self.seq;
        self.seq += 1;
        self.render(seq);
        buf.clear();
        let (w, h) = (self.info.width as u16, self.info.height as u16);
        jpeg::encode(&self.frame, w, h, Pixels::Ycbcr, self.quality, buf)
            .map_err(|e| SourceError::BadFrame(e.to_string()))?;
        Ok(Captured {
            meta: FrameMeta {
                seq,
                ts_us,
                width: self.info.width,
                height: self.info.height,
                format: FrameFormat::Jpeg,
            },
            dropped_before: skipped,
        })
    }
}
