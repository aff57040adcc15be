//! The identity models as the analysis sees them (an [`Observer`]): each
//! frame of a clip window is decoded once; NanoDet finds the people and vehicles in it;
//! faces are searched inside the people (and embedded), plates inside the vehicles (or in
//! the whole frame when none is found and `plates_without_vehicle` says so: cameras aimed
//! at a gate see plates of cars they cannot see whole).

use image::RgbImage;

use super::detect::{Detection, ObjectDetector};
use super::face::FaceObserver;
use super::plates::PlateReader;
use super::{ModelError, Observation, Observer};
use crate::ring::FrameBatch;

/// People and vehicles searched per frame, at most (strongest first).
const MAX_BOXES: usize = 8;

pub struct ModelsObserver {
    /// None: faces and plates are searched in the whole frame.
    pub objects: Option<ObjectDetector>,
    pub plates_without_vehicle: bool,
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
    ) -> Result<(), ModelError> {
        let boxes: Option<Vec<Detection>> = match &self.objects {
            Some(d) if self.faces.is_some() || (self.plates.is_some() && read_plates) => {
                Some(d.detect(img)?)
            }
            _ => None,
        };
        let regions = |want: fn(&Detection) -> bool| -> Option<Vec<RgbImage>> {
            boxes.as_ref().map(|b| {
                b.iter()
                    .filter(|d| want(d))
                    .take(MAX_BOXES)
                    .map(|d| crop(img, &d.bbox))
                    .collect()
            })
        };
        if let Some(f) = &self.faces {
            match regions(Detection::is_person) {
                Some(people) => {
                    for p in &people {
                        f.observe_image(p, ts_us, out)?;
                    }
                }
                None => f.observe_image(img, ts_us, out)?,
            }
        }
        if let (Some(p), true) = (&self.plates, read_plates) {
            let vehicles = regions(Detection::is_vehicle);
            let areas: Vec<&RgbImage> = match &vehicles {
                Some(v) if !v.is_empty() => v.iter().collect(),
                Some(_) if !self.plates_without_vehicle => Vec::new(),
                _ => vec![img],
            };
            for area in areas {
                for read in p.read(area)? {
                    if let Some(plate) = read.plate() {
                        out.push(Observation::Vehicle {
                            ts_us,
                            plate: Some(plate),
                            embedding: None,
                        });
                    }
                }
            }
        }
        Ok(())
    }
}

/// `bbox` of `img`, grown by a tenth on each side (a face at the edge of a person box keeps
/// its chin and forehead), clamped.
fn crop(img: &RgbImage, bbox: &[f32; 4]) -> RgbImage {
    let (w, h) = img.dimensions();
    let (mx, my) = ((bbox[2] - bbox[0]) * 0.1, (bbox[3] - bbox[1]) * 0.1);
    let x0 = (bbox[0] - mx).clamp(0.0, w as f32 - 1.0) as u32;
    let y0 = (bbox[1] - my).clamp(0.0, h as f32 - 1.0) as u32;
    let x1 = ((bbox[2] + mx).clamp(0.0, w as f32) as u32).max(x0 + 1);
    let y1 = ((bbox[3] + my).clamp(0.0, h as f32) as u32).max(y0 + 1);
    image::imageops::crop_imm(img, x0, y0, x1 - x0, y1 - y0).to_image()
}

impl Observer for ModelsObserver {
    fn describe(&self) -> String {
        let mut parts = Vec::new();
        if let Some(d) = &self.objects {
            parts.push(format!(
                "people/vehicles: {} ({} weights, {})",
                d.manifest.name, d.manifest.weights, d.manifest.licence
            ));
        }
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

    fn observe(&self, frames: &FrameBatch, out: &mut Vec<Observation>) -> Result<(), ModelError> {
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
