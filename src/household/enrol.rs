//! Enrolment from photos, as every front end does it (the CLI's `household enroll`, an
//! upload): find the one face a photo shows, refuse it when it is too small or too blurry
//! to be worth an embedding, embed it, and only once every photo passed store them all.
//! Also `identify`: every face of a photo matched against the household.

use image::RgbImage;
use serde::Serialize;

use super::{Household, HouseholdError, PersonMatch};
use crate::inference::identity::face::{align, sharpness, Face, FaceObserver};
use crate::inference::identity::ModelError;

#[derive(Debug, thiserror::Error)]
pub enum EnrolError {
    /// The photo is not usable; the message says why (exit 2 / HTTP 422: the input's fault).
    #[error("{photo}: {why}")]
    Photo { photo: String, why: String },
    /// The face models failed (not the input's fault).
    #[error("face models")]
    Models(#[from] ModelError),
    #[error(transparent)]
    Household(#[from] HouseholdError),
}

impl EnrolError {
    /// True when the caller's input was at fault.
    pub fn is_input_error(&self) -> bool {
        match self {
            EnrolError::Photo { .. } => true,
            EnrolError::Models(_) => false,
            EnrolError::Household(e) => e.is_input_error(),
        }
    }
}

/// One checked, embedded face of one photo.
#[derive(Debug, Clone)]
pub struct EnrolFace {
    /// The photo as the user named it (a path, an upload's file name).
    pub photo: String,
    /// Which face, counted from the left.
    pub face: usize,
    pub bbox: [f32; 4],
    pub sharpness: f32,
    pub embedding: Vec<f32>,
    /// What the stored row says it came from.
    pub source: String,
}

/// Faces numbered as a person reading the photo would: from the left.
pub fn left_to_right(mut faces: Vec<Face>) -> Vec<Face> {
    faces.sort_by(|a, b| a.bbox[0].total_cmp(&b.bbox[0]));
    faces
}

/// The face of `img` to enrol: exactly one found (or `pick`, counted from the left), big
/// and sharp enough for `obs`'s filter; embedded. `photo` names it in errors; `name` (a
/// file name) goes into the stored row's source.
pub fn face_for_enrolment(
    obs: &FaceObserver,
    img: &RgbImage,
    pick: Option<usize>,
    photo: &str,
    name: &str,
) -> Result<EnrolFace, EnrolError> {
    let refuse = |why: String| EnrolError::Photo {
        photo: photo.to_string(),
        why,
    };
    let faces = left_to_right(obs.detector.detect(img)?);
    let i = match (faces.len(), pick) {
        (0, _) => return Err(refuse("no face found".into())),
        (1, None) => 0,
        (n, None) => {
            return Err(refuse(format!(
                "{n} faces; choose one with --face 0..{} (counted from the left)",
                n - 1
            )))
        }
        (n, Some(k)) if k >= n => {
            return Err(refuse(format!("--face {k}, but the photo has {n} face(s)")))
        }
        (_, Some(k)) => k,
    };
    let f = &faces[i];
    if f.eye_distance() < obs.filter.min_eye_distance_px {
        return Err(refuse(format!(
            "face {i} too small (eyes {:.0} px apart, at least {:.0} needed)",
            f.eye_distance(),
            obs.filter.min_eye_distance_px
        )));
    }
    let aligned = align(img, f);
    let sharp = sharpness(&aligned);
    if sharp < obs.filter.min_sharpness {
        return Err(refuse(format!(
            "face {i} too blurry (sharpness {sharp:.1}, at least {:.1} needed)",
            obs.filter.min_sharpness
        )));
    }
    let embedding = obs.embedder.embed(&[aligned])?.remove(0);
    Ok(EnrolFace {
        photo: photo.to_string(),
        face: i,
        bbox: f.bbox,
        sharpness: sharp,
        embedding,
        source: format!("enroll:{name}#face{i}"),
    })
}

/// One stored embedding of an enrolment.
#[derive(Debug, Clone, Serialize)]
pub struct Stored {
    pub embedding_id: i64,
    pub image: String,
    pub face: usize,
    #[serde(rename = "box")]
    pub bbox: [f32; 4],
    pub sharpness: f32,
}

/// Store checked faces for `member` (`negative`: photos of someone who must never be taken
/// for them). The member is checked first, so bad input stores nothing.
pub fn store_enrolment(
    hh: &Household,
    member: i64,
    negative: bool,
    model_id: &str,
    faces: &[EnrolFace],
) -> Result<Vec<Stored>, EnrolError> {
    if !hh.members()?.iter().any(|m| m.id == member) {
        return Err(HouseholdError::NoMember(member).into());
    }
    let mut stored = Vec::with_capacity(faces.len());
    for f in faces {
        let embedding_id = if negative {
            hh.add_negative_embedding(member, model_id, &f.embedding, &f.source)?
        } else {
            hh.add_embedding(member, model_id, &f.embedding, &f.source)?
        };
        stored.push(Stored {
            embedding_id,
            image: f.photo.clone(),
            face: f.face,
            bbox: f.bbox,
            sharpness: f.sharpness,
        });
    }
    Ok(stored)
}

/// One face of a photo and whom it matches.
#[derive(Debug, Clone, Serialize)]
pub struct IdentifiedFace {
    pub face: usize,
    #[serde(rename = "box")]
    pub bbox: [f32; 4],
    pub eye_distance_px: f32,
    pub sharpness: f32,
    #[serde(rename = "match")]
    pub matched: PersonMatch,
}

/// Every face of `img`, from the left, matched against the household.
pub fn identify(
    obs: &FaceObserver,
    hh: &Household,
    img: &RgbImage,
) -> Result<Vec<IdentifiedFace>, EnrolError> {
    let model_id = obs.embedder.model_id();
    let mut out = Vec::new();
    for (i, f) in left_to_right(obs.detector.detect(img)?).iter().enumerate() {
        let aligned = align(img, f);
        let sharp = sharpness(&aligned);
        let e = obs.embedder.embed(&[aligned])?.remove(0);
        out.push(IdentifiedFace {
            face: i,
            bbox: f.bbox,
            eye_distance_px: f.eye_distance(),
            sharpness: sharp,
            matched: hh.match_person(&e, Some(&model_id)),
        });
    }
    Ok(out)
}
