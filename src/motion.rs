//! Motion gate: the cheap test that decides whether anything expensive runs at all.
//!
//! A frame is decoded at 1/8 scale (JPEG DCT scaling: 640x480 becomes 80x60 for the price
//! of reading the DC coefficients), turned into luma, and compared with a running-average
//! background. A frame "moves" when enough pixels differ (`min_changed_fraction`) and the
//! box around them is big enough (`min_area_fraction`); motion starts after `start_frames`
//! moving frames in a row and stops after `stop_frames` still ones. Masked regions (polygons
//! in frame-relative coordinates: a swaying tree, a busy street) never count.

use crate::config::MotionConfig;

#[derive(Debug, thiserror::Error)]
pub enum MotionError {
    #[error("frame does not decode: {0}")]
    Decode(String),
}

/// What one analysed frame did to the gate.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct MotionStep {
    pub changed_fraction: f64,
    pub moving_frame: bool,
    /// Motion (with hysteresis) after this frame.
    pub in_motion: bool,
    /// Motion began with this frame.
    pub started: bool,
    /// Motion ended with this frame.
    pub stopped: bool,
}

pub struct MotionGate {
    cfg: MotionConfig,
    w: usize,
    h: usize,
    background: Vec<f32>,
    mask: Vec<bool>,
    luma: Vec<u8>,
    moving_run: u32,
    still_run: u32,
    in_motion: bool,
}

fn inside(poly: &[[f64; 2]], x: f64, y: f64) -> bool {
    // Even-odd rule.
    let mut c = false;
    let n = poly.len();
    for i in 0..n {
        let (a, b) = (poly[i], poly[(i + n - 1) % n]);
        if (a[1] > y) != (b[1] > y) && x < (b[0] - a[0]) * (y - a[1]) / (b[1] - a[1]) + a[0] {
            c = !c;
        }
    }
    c
}

/// Decode `jpeg` at the smallest DCT scale that keeps at least `min_w` pixels across, into
/// 8-bit luma. Returns (width, height).
pub fn decode_luma_scaled(
    jpeg: &[u8],
    min_w: u16,
    out: &mut Vec<u8>,
) -> Result<(usize, usize), MotionError> {
    let mut d = jpeg_decoder::Decoder::new(jpeg);
    d.read_info()
        .map_err(|e| MotionError::Decode(e.to_string()))?;
    let info = d
        .info()
        .ok_or_else(|| MotionError::Decode("no header".into()))?;
    let (w, h) = (info.width, info.height);
    // scale() picks the smallest of 1/8, 2/8, ... that is at least the requested size.
    let (sw, sh) = d
        .scale(
            min_w.min(w),
            ((u32::from(min_w) * u32::from(h) / u32::from(w.max(1))) as u16).clamp(1, h),
        )
        .map_err(|e| MotionError::Decode(e.to_string()))?;
    let px = d.decode().map_err(|e| MotionError::Decode(e.to_string()))?;
    let info = d
        .info()
        .ok_or_else(|| MotionError::Decode("no header".into()))?;
    let n = usize::from(sw) * usize::from(sh);
    out.clear();
    match info.pixel_format {
        jpeg_decoder::PixelFormat::L8 => out.extend_from_slice(&px[..n]),
        jpeg_decoder::PixelFormat::RGB24 => out.extend(px.chunks_exact(3).take(n).map(|p| {
            ((u32::from(p[0]) * 77 + u32::from(p[1]) * 150 + u32::from(p[2]) * 29) >> 8) as u8
        })),
        other => {
            return Err(MotionError::Decode(format!(
                "unsupported pixel format {other:?}"
            )))
        }
    }
    Ok((usize::from(sw), usize::from(sh)))
}

impl MotionGate {
    pub fn new(cfg: MotionConfig) -> Self {
        Self {
            cfg,
            w: 0,
            h: 0,
            background: Vec::new(),
            mask: Vec::new(),
            luma: Vec::new(),
            moving_run: 0,
            still_run: 0,
            in_motion: false,
        }
    }

    pub fn in_motion(&self) -> bool {
        self.in_motion
    }

    fn reset_geometry(&mut self, w: usize, h: usize) {
        self.w = w;
        self.h = h;
        self.background = self.luma.iter().map(|&v| f32::from(v)).collect();
        self.mask = (0..w * h)
            .map(|i| {
                let (x, y) = ((i % w) as f64 + 0.5, (i / w) as f64 + 0.5);
                self.cfg
                    .masks
                    .iter()
                    .any(|p| inside(p, x / w as f64, y / h as f64))
            })
            .collect();
    }

    /// Feed one JPEG frame.
    pub fn feed(&mut self, jpeg: &[u8]) -> Result<MotionStep, MotionError> {
        let mut luma = std::mem::take(&mut self.luma);
        let r = decode_luma_scaled(jpeg, 64, &mut luma);
        self.luma = luma;
        let (w, h) = r?;
        if (w, h) != (self.w, self.h) {
            // First frame or a new resolution: it becomes the background.
            self.reset_geometry(w, h);
        }
        let th = f32::from(self.cfg.pixel_threshold);
        let (mut changed, mut counted) = (0usize, 0usize);
        let (mut x0, mut y0, mut x1, mut y1) = (w, h, 0, 0);
        let rate = self.cfg.background_rate as f32;
        for (i, (&l, bg)) in self.luma.iter().zip(self.background.iter_mut()).enumerate() {
            if self.mask[i] {
                continue;
            }
            counted += 1;
            let v = f32::from(l);
            if (v - *bg).abs() > th {
                changed += 1;
                let (x, y) = (i % w, i / w);
                x0 = x0.min(x);
                y0 = y0.min(y);
                x1 = x1.max(x);
                y1 = y1.max(y);
            }
            *bg += (v - *bg) * rate;
        }
        let fraction = changed as f64 / counted.max(1) as f64;
        let area = if changed > 0 {
            ((x1 - x0 + 1) * (y1 - y0 + 1)) as f64 / (w * h) as f64
        } else {
            0.0
        };
        let moving =
            fraction >= self.cfg.min_changed_fraction && area >= self.cfg.min_area_fraction;
        if moving {
            self.moving_run += 1;
            self.still_run = 0;
        } else {
            self.still_run += 1;
            self.moving_run = 0;
        }
        let was = self.in_motion;
        if !was && self.moving_run >= self.cfg.start_frames {
            self.in_motion = true;
        } else if was && self.still_run >= self.cfg.stop_frames {
            self.in_motion = false;
        }
        Ok(MotionStep {
            changed_fraction: fraction,
            moving_frame: moving,
            in_motion: self.in_motion,
            started: !was && self.in_motion,
            stopped: was && !self.in_motion,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn polygon_mask_contains_its_inside() {
        let square = [[0.0, 0.0], [0.5, 0.0], [0.5, 0.5], [0.0, 0.5]];
        assert!(inside(&square, 0.25, 0.25));
        assert!(!inside(&square, 0.75, 0.25));
    }
}
