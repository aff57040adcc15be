//! The household over HTTP: list members and vehicles (never their embeddings), add and
//! remove them, and enrol a member from uploaded photos with the same checks as the CLI's
//! `household enroll` (`household::enrol`): every photo must show one usable face, or
//! nothing is stored and the answer says which photo and why.
//!
//! Uploads are bounded by `http.max_upload_mb` (the whole request), each photo's header by
//! `fsio`'s pixel cap before anything is decoded (a decompression bomb is refused unread),
//! and one enrolment runs at a time on the blocking pool (the face models are loaded at
//! the first and kept). Photos are checked to decode and the member to exist before any
//! model is loaded.

use std::path::Path as FsPath;
use std::sync::Arc;

use axum::extract::{Multipart, Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;
use serde_json::json;

use super::api::error;
use super::HttpState;
use crate::household::enrol::{self, EnrolError, EnrolFace};
use crate::household::{Household, HouseholdError, NewVehicle, Role, Schedule};
use crate::inference::identity::face::FaceObserver;

/// Photos one upload may carry.
pub const MAX_PHOTOS: usize = 8;

fn household(s: &HttpState) -> Result<Arc<Household>, Response> {
    s.household.clone().ok_or_else(|| {
        error(
            StatusCode::SERVICE_UNAVAILABLE,
            "the household database could not be opened (see the log)",
        )
    })
}

fn household_error(e: &HouseholdError) -> Response {
    match e {
        HouseholdError::NoMember(_) | HouseholdError::NoVehicle(_) => {
            error(StatusCode::NOT_FOUND, &e.to_string())
        }
        e if e.is_input_error() => error(StatusCode::BAD_REQUEST, &e.to_string()),
        _ => error(StatusCode::INTERNAL_SERVER_ERROR, "household database"),
    }
}

/// Run `f` on the household, on the blocking pool.
async fn with_household<T: Send + 'static>(
    s: &HttpState,
    f: impl FnOnce(&Household) -> Result<T, HouseholdError> + Send + 'static,
) -> Result<T, Response> {
    let hh = household(s)?;
    match tokio::task::spawn_blocking(move || f(&hh)).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(household_error(&e)),
        Err(_) => Err(error(StatusCode::INTERNAL_SERVER_ERROR, "household")),
    }
}

/// `GET /api/household`: members (with embedding counts per model) and vehicles.
pub async fn list(State(s): State<Arc<HttpState>>) -> Response {
    match with_household(&s, |hh| Ok((hh.members()?, hh.vehicles()?))).await {
        Ok((members, vehicles)) => {
            Json(json!({ "members": members, "vehicles": vehicles })).into_response()
        }
        Err(r) => r,
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewMember {
    name: String,
    /// resident, family, service_worker or frequent_visitor
    role: String,
    #[serde(default)]
    notes: String,
    /// e.g. "weekdays 08:00-17:00"
    #[serde(default)]
    schedules: Vec<String>,
}

type JsonBody<T> = Result<Json<T>, axum::extract::rejection::JsonRejection>;

/// `POST /api/household/members` `{"name", "role", "notes", "schedules"}` (admin).
pub async fn add_member(State(s): State<Arc<HttpState>>, body: JsonBody<NewMember>) -> Response {
    let Json(m) = match body {
        Ok(b) => b,
        Err(e) => return error(e.status(), &e.body_text()),
    };
    let role: Role = match m.role.parse() {
        Ok(r) => r,
        Err(e) => return error(StatusCode::BAD_REQUEST, &e),
    };
    if m.notes.len() > 1000 || m.schedules.len() > 16 {
        return error(
            StatusCode::BAD_REQUEST,
            "notes: at most 1000 characters; at most 16 schedules",
        );
    }
    let schedules: Vec<Schedule> = match m.schedules.iter().map(|x| x.parse()).collect() {
        Ok(v) => v,
        Err(e) => return error(StatusCode::BAD_REQUEST, &format!("schedules: {e}")),
    };
    match with_household(&s, move |hh| {
        hh.add_member(&m.name, role, &m.notes, &schedules)
    })
    .await
    {
        Ok(id) => (StatusCode::CREATED, Json(json!({ "member_id": id }))).into_response(),
        Err(r) => r,
    }
}

fn parse_id(id: &str, what: &str) -> Result<i64, Response> {
    id.parse()
        .map_err(|_| error(StatusCode::BAD_REQUEST, &format!("{what} id: a number")))
}

/// `DELETE /api/household/members/{id}` (admin): with their schedules and embeddings.
pub async fn remove_member(State(s): State<Arc<HttpState>>, Path(id): Path<String>) -> Response {
    let id = match parse_id(&id, "member") {
        Ok(i) => i,
        Err(r) => return r,
    };
    match with_household(&s, move |hh| hh.remove_member(id)).await {
        Ok(()) => Json(json!({ "removed_member": id })).into_response(),
        Err(r) => r,
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewVehicleBody {
    plate: Option<String>,
    #[serde(default)]
    description: String,
    #[serde(default = "yes")]
    trusted: bool,
    #[serde(rename = "type")]
    vehicle_type: Option<String>,
    color: Option<String>,
    member: Option<i64>,
}

fn yes() -> bool {
    true
}

/// `POST /api/household/vehicles` `{"plate", "description", "trusted", "type", "color",
/// "member"}` (admin). Visual embeddings are enrolled with the CLI.
pub async fn add_vehicle(
    State(s): State<Arc<HttpState>>,
    body: JsonBody<NewVehicleBody>,
) -> Response {
    let Json(v) = match body {
        Ok(b) => b,
        Err(e) => return error(e.status(), &e.body_text()),
    };
    if v.plate.as_deref().is_none_or(|p| p.trim().is_empty()) {
        return error(
            StatusCode::BAD_REQUEST,
            "plate: needed (vehicles by look are enrolled with `nvr-edge household add-vehicle`)",
        );
    }
    let new = NewVehicle {
        description: v.description,
        plate: v.plate,
        vehicle_type: v.vehicle_type,
        color: v.color,
        trusted: v.trusted,
        member_id: v.member,
        embedding: None,
    };
    match with_household(&s, move |hh| hh.add_vehicle(&new)).await {
        Ok(id) => (StatusCode::CREATED, Json(json!({ "vehicle_id": id }))).into_response(),
        Err(r) => r,
    }
}

/// `DELETE /api/household/vehicles/{id}` (admin).
pub async fn remove_vehicle(State(s): State<Arc<HttpState>>, Path(id): Path<String>) -> Response {
    let id = match parse_id(&id, "vehicle") {
        Ok(i) => i,
        Err(r) => return r,
    };
    match with_household(&s, move |hh| hh.remove_vehicle(id)).await {
        Ok(()) => Json(json!({ "removed_vehicle": id })).into_response(),
        Err(r) => r,
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PhotoParams {
    /// `1`: the photos show someone who must never be taken for the member.
    not: Option<u8>,
    /// Which face, counted from the left, when a photo shows several.
    face: Option<usize>,
}

/// `POST /api/household/members/{id}/photos?not=1&face=K` (admin), `multipart/form-data`
/// with one to [`MAX_PHOTOS`] JPEG or PNG files: every photo checked and embedded, then
/// all stored; any refusal stores nothing (422 with the photo and the reason).
pub async fn enrol_photos(
    State(s): State<Arc<HttpState>>,
    Path(id): Path<String>,
    params: Result<Query<PhotoParams>, axum::extract::rejection::QueryRejection>,
    multipart: Result<Multipart, axum::extract::multipart::MultipartRejection>,
) -> Response {
    let member = match parse_id(&id, "member") {
        Ok(i) => i,
        Err(r) => return r,
    };
    let Query(p) = match params {
        Ok(p) => p,
        Err(e) => return error(StatusCode::BAD_REQUEST, &e.body_text()),
    };
    let negative = match p.not {
        None | Some(0) => false,
        Some(1) => true,
        Some(_) => return error(StatusCode::BAD_REQUEST, "not: 0 or 1"),
    };
    let mut multipart = match multipart {
        Ok(m) => m,
        Err(e) => {
            return error(
                StatusCode::BAD_REQUEST,
                &format!(
                    "a multipart/form-data body with the photos: {}",
                    e.body_text()
                ),
            )
        }
    };
    let mut photos: Vec<(String, Vec<u8>)> = Vec::new();
    loop {
        match multipart.next_field().await {
            Ok(Some(field)) => {
                let name = field
                    .file_name()
                    .map(|n| n.chars().filter(|c| !c.is_control()).take(100).collect())
                    .unwrap_or_else(|| format!("photo {}", photos.len() + 1));
                if photos.len() == MAX_PHOTOS {
                    return error(
                        StatusCode::BAD_REQUEST,
                        &format!("at most {MAX_PHOTOS} photos per upload"),
                    );
                }
                match field.bytes().await {
                    Ok(b) => photos.push((name, b.to_vec())),
                    Err(e) => return upload_error(&s, &e),
                }
            }
            Ok(None) => break,
            Err(e) => return upload_error(&s, &e),
        }
    }
    if photos.is_empty() {
        return error(StatusCode::BAD_REQUEST, "no photo in the upload");
    }
    // One enrolment at a time (a decoded 50-megapixel photo is 150 MB); the lock also
    // guards the face models' loading.
    let mut faces = s.faces.lock().await;
    // Cheap refusals first, before any model is loaded: every photo must decode (within
    // the pixel cap) and the member must exist.
    let decoded = tokio::task::spawn_blocking(move || {
        photos
            .iter()
            .map(|(name, bytes)| {
                crate::fsio::decode_image(FsPath::new(name), bytes)
                    .map(|img| (name.clone(), img.to_rgb8()))
                    .map_err(|e| error(StatusCode::UNPROCESSABLE_ENTITY, &e.to_string()))
            })
            .collect::<Result<Vec<_>, Response>>()
    })
    .await;
    let images = match decoded {
        Ok(Ok(v)) => v,
        Ok(Err(r)) => return r,
        Err(_) => return error(StatusCode::INTERNAL_SERVER_ERROR, "decoding"),
    };
    match with_household(&s, move |hh| {
        Ok(hh.members()?.iter().any(|m| m.id == member))
    })
    .await
    {
        Ok(true) => {}
        Ok(false) => return household_error(&HouseholdError::NoMember(member)),
        Err(r) => return r,
    }
    let hh = match household(&s) {
        Ok(h) => h,
        Err(r) => return r,
    };
    let observer = match faces.as_ref() {
        Some(o) => o.clone(),
        None => {
            let cfg = s.identity.clone();
            match tokio::task::spawn_blocking(move || FaceObserver::for_photos(&cfg)).await {
                Ok(Ok(o)) => faces.insert(Arc::new(o)).clone(),
                Ok(Err(e)) => {
                    return error(
                        StatusCode::SERVICE_UNAVAILABLE,
                        &format!("face models: {}", crate::error_chain(&e)),
                    )
                }
                Err(_) => return error(StatusCode::INTERNAL_SERVER_ERROR, "face models"),
            }
        }
    };
    let pick = p.face;
    let done = tokio::task::spawn_blocking(move || {
        let mut checked: Vec<EnrolFace> = Vec::with_capacity(images.len());
        for (name, img) in &images {
            checked.push(enrol::face_for_enrolment(&observer, img, pick, name, name)?);
        }
        let model_id = observer.embedder.model_id();
        let stored = enrol::store_enrolment(&hh, member, negative, &model_id, &checked)?;
        Ok::<_, EnrolError>((model_id, stored))
    })
    .await;
    drop(faces);
    match done {
        Ok(Ok((model_id, stored))) => {
            tracing::info!(
                member,
                negative,
                photos = stored.len(),
                "http: member enrolled from photos"
            );
            Json(json!({
                "member_id": member, "negative": negative, "model_id": model_id,
                "stored": stored,
            }))
            .into_response()
        }
        Ok(Err(EnrolError::Household(e))) => household_error(&e),
        Ok(Err(e)) if e.is_input_error() => error(StatusCode::UNPROCESSABLE_ENTITY, &e.to_string()),
        Ok(Err(e)) => error(
            StatusCode::SERVICE_UNAVAILABLE,
            &crate::error_chain(&e).to_string(),
        ),
        Err(_) => error(StatusCode::INTERNAL_SERVER_ERROR, "enrolment"),
    }
}

/// A multipart body that could not be read: too large (413) or malformed (400).
fn upload_error(s: &HttpState, e: &axum::extract::multipart::MultipartError) -> Response {
    let status = e.status();
    if status == StatusCode::PAYLOAD_TOO_LARGE {
        error(
            status,
            &format!(
                "the upload is over {} MiB (http.max_upload_mb)",
                s.cfg.max_upload_mb
            ),
        )
    } else {
        error(StatusCode::BAD_REQUEST, &e.body_text())
    }
}
