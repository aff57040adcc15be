//! Registered vehicles: matched by licence plate first (exact, then tolerant of OCR
//! confusions and one edit), then by a visual embedding. Untrusted vehicles never match.

use serde::Serialize;

use super::gallery::{GallerySet, VehicleInfo};
use super::plates::{edit_distance, fold_confusions, normalize_plate};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum VehicleMatchKind {
    LicensePlate,
    LicensePlateFuzzy,
    VehicleVisual,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum VehicleMatch {
    Match {
        vehicle_id: i64,
        description: String,
        plate: Option<String>,
        kind: VehicleMatchKind,
        similarity: f32,
        /// Edits between the read plate and the registered one, after folding confusions.
        #[serde(skip_serializing_if = "Option::is_none")]
        distance: Option<usize>,
    },
    NoMatch {
        /// Why not, when there is a reason worth telling (ambiguous plate, ...).
        #[serde(skip_serializing_if = "Option::is_none")]
        note: Option<String>,
    },
}

/// What was observed of a vehicle.
#[derive(Debug, Clone, Copy, Default)]
pub struct VehicleProbe<'a> {
    pub plate: Option<&'a str>,
    /// (model_id, embedding)
    pub embedding: Option<(&'a str, &'a [f32])>,
    pub vehicle_type: Option<&'a str>,
    pub color: Option<&'a str>,
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct VehicleRules {
    /// Most edits (after folding) a fuzzy plate match allows.
    pub plate_max_distance: usize,
    /// Shorter plates are matched exactly only: one edit on a 3-character plate matches
    /// far too much.
    pub plate_fuzzy_min_len: usize,
    pub visual_threshold: f32,
}

fn conflicts(known: &Option<String>, seen: Option<&str>) -> bool {
    match (known, seen) {
        (Some(k), Some(s)) => !k.trim().eq_ignore_ascii_case(s.trim()),
        _ => false,
    }
}

fn matched(
    v: &VehicleInfo,
    kind: VehicleMatchKind,
    similarity: f32,
    distance: Option<usize>,
) -> VehicleMatch {
    VehicleMatch::Match {
        vehicle_id: v.id,
        description: v.description.clone(),
        plate: v.plate.clone(),
        kind,
        similarity,
        distance,
    }
}

impl GallerySet {
    pub fn match_vehicle(&self, probe: VehicleProbe<'_>, rules: VehicleRules) -> VehicleMatch {
        let trusted = || self.vehicles.iter().filter(|v| v.trusted);
        let mut note = None;
        let read = probe.plate.map(normalize_plate).filter(|p| !p.is_empty());
        if let Some(read) = &read {
            if let Some(v) = trusted().find(|v| v.plate_norm.as_deref() == Some(read.as_str())) {
                return matched(v, VehicleMatchKind::LicensePlate, 1.0, Some(0));
            }
            if read.chars().count() >= rules.plate_fuzzy_min_len {
                let folded = fold_confusions(read);
                let mut best: Option<(usize, &VehicleInfo)> = None;
                let mut tie = false;
                for v in trusted() {
                    let Some(f) = &v.plate_folded else { continue };
                    let d = edit_distance(&folded, f);
                    if d > rules.plate_max_distance {
                        continue;
                    }
                    match best {
                        Some((bd, _)) if d > bd => {}
                        Some((bd, _)) if d == bd => tie = true,
                        _ => {
                            best = Some((d, v));
                            tie = false;
                        }
                    }
                }
                match (best, tie) {
                    (Some((d, v)), false) => {
                        let len = read.chars().count().max(1) as f32;
                        // A folded confusion costs half an edit.
                        let similarity = (1.0 - (d as f32 + 0.5) / len).max(0.0);
                        return matched(
                            v,
                            VehicleMatchKind::LicensePlateFuzzy,
                            similarity,
                            Some(d),
                        );
                    }
                    (Some((d, _)), true) => {
                        note = Some(format!(
                            "plate {read} is within {d} edit(s) of more than one registered vehicle"
                        ));
                    }
                    _ => {}
                }
            }
        }
        if let Some((model_id, emb)) = probe.embedding {
            let mut best: Option<(f32, &VehicleInfo)> = None;
            for v in trusted() {
                let Some((m, e)) = &v.embedding else { continue };
                if m != model_id
                    || e.len() != emb.len()
                    || conflicts(&v.vehicle_type, probe.vehicle_type)
                    || conflicts(&v.color, probe.color)
                {
                    continue;
                }
                let s = nvr_linalg::cosine_similarity(e, emb);
                if best.is_none_or(|(b, _)| s > b) {
                    best = Some((s, v));
                }
            }
            if let Some((s, v)) = best {
                if s >= rules.visual_threshold {
                    return matched(v, VehicleMatchKind::VehicleVisual, s, None);
                }
            }
        }
        VehicleMatch::NoMatch { note }
    }
}
