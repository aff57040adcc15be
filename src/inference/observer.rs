//! The identity models as the analysis sees them (`household::identity::Observer`): each
//! frame of a clip window is decoded once and given to the face models (person embeddings)
//! and the plate reader (plate text), whichever are installed.

use image::RgbImage;

use super::face::FaceObserver;
use super::plates::PlateReader;
use crate::household::identity::{Observation, Observer};
use crate::ring::FrameBatch;

pub struct ModelsObserver {
    pub faces: Option<FaceObserver>,
    pub plates: Option<PlateReader>,
    /// Frames of a window the plate reader sees (evenly spaced): it costs ~10x a face pass.
    pub plate_frames: usize,
}

impl ModelsObserver {
    /// What one decoded frame shows.
    pub fn observe_image(
        &self,
        img: &RgbImage,
        ts_us: i64,
        read_plates: bool,
        out: &mut Vec<Observation>,
    ) -> Result<(), String> {
        if let Some(f) = &self.faces {
            f.observe_image(img, ts_us, out)
                .map_err(|e| e.to_string())?;
        }
        if let (Some(p), true) = (&self.plates, read_plates) {
            for read in p.read(img).map_err(|e| e.to_string())? {
                if let Some(plate) = read.plate() {
                    out.push(Observation::Vehicle {
                        ts_us,
                        plate: Some(plate),
                        embedding: None,
                    });
                }
            }
        }
        Ok(())
    }
}

impl Observer for ModelsObserver {
    fn describe(&self) -> String {
        let mut parts = Vec::new();
        if let Some(f) = &self.faces {
            parts.push(f.describe());
        }
        if let Some(p) = &self.plates {
            parts.push(format!(
                "plates: PP-OCRv4 (real weights, Apache-2.0, det {}, rec {})",
                &p.det_sha256[..12],
                &p.rec_sha256[..12]
            ));
        }
        parts.join("; ")
    }

    fn observe(&self, frames: &FrameBatch, out: &mut Vec<Observation>) -> Result<(), String> {
        let plate_at: Vec<usize> =
            crate::ring::linspace_indices(frames.len(), self.plate_frames).collect();
        for (i, (meta, bytes)) in frames.iter().enumerate() {
            match image::load_from_memory_with_format(bytes, image::ImageFormat::Jpeg) {
                Ok(img) => {
                    self.observe_image(&img.to_rgb8(), meta.ts_us, plate_at.contains(&i), out)?
                }
                Err(_) => out.push(Observation::Skipped {
                    ts_us: meta.ts_us,
                    why: "frame does not decode",
                }),
            }
        }
        Ok(())
    }
}
