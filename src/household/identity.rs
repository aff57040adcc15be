//! Who is in an event, and what that does to its risk.
//!
//! The identity models (person detector, face detector and embedder, plate OCR) sit behind
//! [`Observer`]: given the frames of a clip window they report what they saw of people
//! (an embedding with its model id) and vehicles (plate text, a visual embedding). This
//! module matches those observations against the household and only names someone after
//! `min_agreeing_frames` frames agree, because one frame's lucky similarity must not
//! lower the risk of a stranger at the door.
//!
//! Risk lowering, in the spirit of the system nvr-edge replaces: a matched member (within
//! their schedule, or without one) lowers an event by `member_lowers_by` levels, a trusted
//! vehicle by `trusted_vehicle_lowers_by`; never below `low`, and a `critical` event at most
//! to `high` (a resident's face does not make a forced door harmless). A member outside
//! their schedule, an uncertain match or an untrusted vehicle lowers nothing; the event
//! records them anyway.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::{
    Household, PersonMatch, Role, ScheduleStatus, VehicleMatch, VehicleMatchKind, VehicleProbe,
};
use crate::inference::Risk;
use crate::ring::FrameBatch;

/// Distinct identities one event tracks; more are counted, not kept (bounded memory).
const MAX_TRACKED: usize = 16;

/// `[identity]`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct IdentityConfig {
    /// Run the identity models on events (when they are installed).
    pub enabled: bool,
    /// Fail the self-test when the models are missing (devices that ship them).
    pub required: bool,
    /// Directory with mobilefacenet.onnx and mobilefacenet.json (models/identity/fetch.py);
    /// the face detector is built in.
    pub models_dir: PathBuf,
    /// Faces with eyes closer than this (frame pixels) are too small to embed.
    pub min_eye_distance_px: f32,
    /// Aligned faces less sharp than this (variance of the Laplacian) are skipped.
    pub min_sharpness: f32,
    pub max_faces_per_frame: u32,
    /// Find people and vehicles first (NanoDet, from models_dir): faces are searched only
    /// inside people, plates inside vehicles.
    pub detector: bool,
    /// Score a person or vehicle detection needs.
    pub min_object_score: f32,
    /// With the detector on and no vehicle found in a frame, read plates in the whole frame
    /// anyway (cameras aimed at a gate see plates of cars they cannot see whole).
    pub plates_without_vehicle: bool,
    /// Read licence plates (PP-OCRv4, from models_dir) for the vehicle matcher.
    pub plates: bool,
    /// Frames of each clip window the plate reader sees (evenly spaced).
    pub plate_frames_per_window: u32,
    /// Frames (of the event's clip windows) in which the same member or vehicle must match
    /// before the event names them.
    pub min_agreeing_frames: u32,
    /// Risk levels a matched member lowers an event by.
    pub member_lowers_by: u8,
    /// Risk levels a trusted vehicle lowers an event by.
    pub trusted_vehicle_lowers_by: u8,
}

impl Default for IdentityConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            required: false,
            models_dir: PathBuf::from("models/identity"),
            min_eye_distance_px: 12.0,
            min_sharpness: 20.0,
            max_faces_per_frame: 4,
            detector: true,
            min_object_score: 0.4,
            plates_without_vehicle: true,
            plates: true,
            plate_frames_per_window: 2,
            min_agreeing_frames: 2,
            member_lowers_by: 2,
            trusted_vehicle_lowers_by: 1,
        }
    }
}

/// What the identity models saw in one frame of a window.
#[derive(Debug, Clone, PartialEq)]
pub enum Observation {
    Person {
        /// Capture time of the frame: agreement counts distinct frames.
        ts_us: i64,
        /// The embedder's id (its sha256): only rows enrolled with the same model compare.
        model_id: String,
        embedding: Vec<f32>,
    },
    Vehicle {
        ts_us: i64,
        plate: Option<String>,
        embedding: Option<(String, Vec<f32>)>,
    },
    /// Something the models saw but could not use (a tiny or blurry face, a frame that
    /// does not decode): counted, never matched.
    Skipped { ts_us: i64, why: &'static str },
}

/// The identity models, as the analysis sees them.
pub trait Observer: Send + Sync {
    /// Models behind it, for events and reports (and whether their weights are real).
    fn describe(&self) -> String;
    /// Append what is seen in `frames` to `out`.
    fn observe(&self, frames: &FrameBatch, out: &mut Vec<Observation>) -> Result<(), String>;
}

/// The identity models and the household they are matched against, as the analysis
/// gets them.
pub struct IdentityDeps {
    pub observer: std::sync::Arc<dyn Observer>,
    pub household: std::sync::Arc<Household>,
    pub cfg: IdentityConfig,
}

/// Load the face models of `[identity]` and open the household. `Ok(None)`: identity is
/// off in the config. An error says what is missing; the caller runs without identity.
pub fn load(
    cfg: &crate::config::Config,
    clock: std::sync::Arc<dyn crate::clock::Clock>,
) -> Result<Option<IdentityDeps>, String> {
    use crate::inference::detect::ObjectDetector;
    use crate::inference::face::{FaceDetector, FaceEmbedder, FaceFilter, FaceObserver};
    use crate::inference::observer::ModelsObserver;
    use crate::inference::plates::PlateReader;
    let c = &cfg.identity;
    if !c.enabled {
        return Ok(None);
    }
    let mut missing = Vec::new();
    let faces = match FaceEmbedder::load(&c.models_dir) {
        Ok(embedder) => {
            let detector = FaceDetector::builtin().map_err(|e| e.to_string())?;
            let filter = FaceFilter {
                min_eye_distance_px: c.min_eye_distance_px,
                min_sharpness: c.min_sharpness,
                max_faces_per_frame: c.max_faces_per_frame as usize,
            };
            Some(FaceObserver::new(detector, embedder, filter))
        }
        Err(e) => {
            missing.push(format!("faces: {e}"));
            None
        }
    };
    let plates = if c.plates {
        match PlateReader::load(&c.models_dir) {
            Ok(p) => Some(p),
            Err(e) => {
                missing.push(format!("plates: {e}"));
                None
            }
        }
    } else {
        None
    };
    let objects = if c.detector {
        match ObjectDetector::load(&c.models_dir) {
            Ok(mut d) => {
                d.min_score = c.min_object_score;
                Some(d)
            }
            Err(e) => {
                missing.push(format!("people/vehicles: {e}"));
                None
            }
        }
    } else {
        None
    };
    if faces.is_none() && plates.is_none() {
        return Err(missing.join("; "));
    }
    for m in &missing {
        tracing::warn!(missing = %m, "identity model not loaded");
    }
    let household = Household::open_in(&cfg.storage.data_dir, cfg.household.clone(), clock)
        .map_err(|e| crate::error_chain(&e))?;
    Ok(Some(IdentityDeps {
        observer: std::sync::Arc::new(ModelsObserver {
            objects,
            plates_without_vehicle: c.plates_without_vehicle,
            faces,
            plates,
            plate_frames: c.plate_frames_per_window as usize,
        }),
        household: std::sync::Arc::new(household),
        cfg: c.clone(),
    }))
}

/// Someone or something of the household, seen in an event.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Identified {
    Member {
        member_id: i64,
        name: String,
        role: Role,
        /// Best similarity over the agreeing frames.
        similarity: f32,
        frames: u32,
        schedule: ScheduleStatus,
    },
    Vehicle {
        vehicle_id: i64,
        description: String,
        plate: Option<String>,
        how: VehicleMatchKind,
        similarity: f32,
        frames: u32,
        trusted: bool,
    },
}

/// The identity side of one event: agreement counts per candidate, across its windows.
#[derive(Debug, Clone, Default, Serialize)]
pub struct EventIdentity {
    /// Candidates with their agreeing frames (named only at `min_agreeing_frames`).
    pub candidates: Vec<Identified>,
    /// Person observations that matched nobody (or only uncertainly).
    pub unknown_people: u32,
    /// Person observations no enrolled embedding could be compared with (re-enrol).
    pub incomparable: u32,
    /// Candidates beyond the bounded list.
    pub untracked: u32,
    /// Observations the models could not use, by reason (a handful of fixed reasons).
    pub skipped: Vec<(&'static str, u32)>,
    /// Capture time of the last frame counted for each candidate (same order).
    #[serde(skip)]
    last_ts: Vec<i64>,
}

impl EventIdentity {
    /// Match `observations` and add them to the tally. Frames count once per candidate.
    pub fn add(&mut self, household: &Household, observations: &[Observation]) {
        let gallery = household.gallery();
        for o in observations {
            match o {
                Observation::Person {
                    ts_us,
                    model_id,
                    embedding,
                } => match household.match_person(embedding, Some(model_id)) {
                    PersonMatch::Match {
                        member_id,
                        name,
                        role,
                        similarity,
                        schedule_status,
                    } => self.count(
                        Identified::Member {
                            member_id,
                            name,
                            role,
                            similarity,
                            frames: 1,
                            schedule: schedule_status,
                        },
                        *ts_us,
                    ),
                    PersonMatch::UnavailableReenroll { .. } => self.incomparable += 1,
                    _ => self.unknown_people += 1,
                },
                Observation::Skipped { why, .. } => {
                    match self.skipped.iter_mut().find(|(w, _)| w == why) {
                        Some((_, n)) => *n += 1,
                        None => self.skipped.push((why, 1)),
                    }
                }
                Observation::Vehicle {
                    ts_us,
                    plate,
                    embedding,
                } => {
                    let probe = VehicleProbe {
                        plate: plate.as_deref(),
                        embedding: embedding.as_ref().map(|(m, e)| (m.as_str(), e.as_slice())),
                        ..VehicleProbe::default()
                    };
                    if let VehicleMatch::Match {
                        vehicle_id,
                        description,
                        plate,
                        kind,
                        similarity,
                        ..
                    } = household.match_vehicle(probe)
                    {
                        let trusted = gallery
                            .vehicles
                            .iter()
                            .any(|v| v.id == vehicle_id && v.trusted);
                        self.count(
                            Identified::Vehicle {
                                vehicle_id,
                                description,
                                plate,
                                how: kind,
                                similarity,
                                frames: 1,
                                trusted,
                            },
                            *ts_us,
                        );
                    }
                }
            }
        }
    }

    fn count(&mut self, seen: Identified, ts_us: i64) {
        let wanted = key(&seen);
        if let Some(i) = self.candidates.iter().position(|c| key(c) == wanted) {
            if self.last_ts[i] == ts_us {
                // Two observations in one frame (two faces alike): one frame of agreement.
                return;
            }
            self.last_ts[i] = ts_us;
            match (&mut self.candidates[i], seen) {
                (
                    Identified::Member {
                        similarity, frames, ..
                    },
                    Identified::Member { similarity: s, .. },
                )
                | (
                    Identified::Vehicle {
                        similarity, frames, ..
                    },
                    Identified::Vehicle { similarity: s, .. },
                ) => {
                    *frames += 1;
                    *similarity = similarity.max(s);
                }
                _ => {}
            }
        } else if self.candidates.len() < MAX_TRACKED {
            self.candidates.push(seen);
            self.last_ts.push(ts_us);
        } else {
            self.untracked += 1;
        }
    }

    /// Candidates with enough agreeing frames to be named.
    pub fn confirmed(&self, cfg: &IdentityConfig) -> impl Iterator<Item = &Identified> {
        let need = cfg.min_agreeing_frames.max(1);
        self.candidates.iter().filter(move |c| match c {
            Identified::Member { frames, .. } | Identified::Vehicle { frames, .. } => {
                *frames >= need
            }
        })
    }

    /// The event's risk after what the household tells: `risk` lowered per the module's
    /// rules, with the reason.
    pub fn lower(&self, risk: Risk, cfg: &IdentityConfig) -> (Risk, Option<String>) {
        let mut by = 0u8;
        let mut why = Vec::new();
        for c in self.confirmed(cfg) {
            match c {
                Identified::Member { name, schedule, .. }
                    if *schedule != ScheduleStatus::Outside =>
                {
                    by = by.max(cfg.member_lowers_by);
                    why.push(format!("member {name}"));
                }
                Identified::Vehicle {
                    description,
                    trusted: true,
                    ..
                } => {
                    by = by.max(cfg.trusted_vehicle_lowers_by);
                    why.push(format!("trusted vehicle {description}"));
                }
                _ => {}
            }
        }
        if by == 0 {
            return (risk, None);
        }
        let floor = if risk == Risk::Critical {
            Risk::High
        } else {
            Risk::Low
        };
        let lowered = lower_by(risk, by).max(floor);
        (
            lowered,
            (lowered != risk).then(|| {
                format!(
                    "{} (was {})",
                    why.join(", "),
                    format!("{risk:?}").to_lowercase()
                )
            }),
        )
    }
}

fn lower_by(r: Risk, n: u8) -> Risk {
    const ORDER: [Risk; 4] = [Risk::Low, Risk::Medium, Risk::High, Risk::Critical];
    let i = ORDER.iter().position(|x| *x == r).unwrap_or(0);
    ORDER[i.saturating_sub(usize::from(n))]
}

/// (is a member, id): members and vehicles have ids of their own tables.
fn key(i: &Identified) -> (bool, i64) {
    match i {
        Identified::Member { member_id, .. } => (true, *member_id),
        Identified::Vehicle { vehicle_id, .. } => (false, *vehicle_id),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lowering_steps_and_floors() {
        assert_eq!(lower_by(Risk::High, 2), Risk::Low);
        assert_eq!(lower_by(Risk::Medium, 5), Risk::Low);
        assert_eq!(lower_by(Risk::Critical, 1), Risk::High);
    }
}
