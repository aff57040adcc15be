//! The JSON endpoints of cameras, events and status, `latest.jpg` and event snapshots.
//! Every handler reads state the recorder already keeps (camera stats, rings by copy,
//! analysis figures, the events table); database work runs on the blocking pool.

use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;
use serde_json::json;

use super::HttpState;
use crate::events::{Deleted, Event, EventQuery};
use crate::inference::Risk;
use crate::pipeline::CameraView;
use crate::stamp::Stamp;
use crate::status::EventView;

/// Most events one page returns.
pub const MAX_PAGE: u32 = 500;

/// A JSON error: `{"error": "..."}` with its status.
pub fn error(status: StatusCode, message: &str) -> Response {
    (status, Json(json!({ "error": message }))).into_response()
}

pub async fn not_found() -> Response {
    error(StatusCode::NOT_FOUND, "no such endpoint")
}

pub(super) fn camera<'a>(s: &'a HttpState, id: &str) -> Option<&'a CameraView> {
    s.cameras.iter().find(|c| c.config.id == id)
}

fn now(s: &HttpState) -> Stamp {
    Stamp::from_wall_us(s.clock.wall_us())
}

/// `GET /api/health`: alive, and whether each camera delivers frames.
pub async fn health(State(s): State<Arc<HttpState>>) -> Response {
    let now_mono = s.clock.mono_us();
    let cameras: Vec<_> = s
        .cameras
        .iter()
        .map(|c| {
            let st = c.shared.stats().snapshot(now_mono);
            let live = crate::capture::stats::is_live(st.last_frame_age_ms);
            json!({
                "id": c.config.id,
                "live": live,
                "state": st.state,
                "last_frame": st.last_frame_wall_us.map(Stamp::from_wall_us),
                "last_frame_age_ms": st.last_frame_age_ms,
            })
        })
        .collect();
    let all_live = !cameras.is_empty() && cameras.iter().all(|c| c["live"] == true);
    Json(json!({
        "alive": true,
        "all_cameras_live": all_live,
        "version": env!("CARGO_PKG_VERSION"),
        "uptime_secs": s.started.elapsed().as_secs_f64(),
        "time": now(&s),
        "cameras": cameras,
    }))
    .into_response()
}

/// `GET /api/stats`: what the summary line and the console's `status`, `cams` and `mem`
/// know, per camera and for the process.
pub async fn stats(State(s): State<Arc<HttpState>>) -> Response {
    Json(crate::status::stats(&crate::status::Sources {
        clock: &*s.clock,
        cameras: &s.cameras,
        analysis: &s.analysis,
        model: s.model.as_ref(),
        uptime_secs: s.started.elapsed().as_secs_f64(),
    }))
    .into_response()
}

/// `GET /api/cameras`: each camera as configured and as the driver granted it.
pub async fn cameras(State(s): State<Arc<HttpState>>) -> Response {
    let now_mono = s.clock.mono_us();
    let list: Vec<_> = s
        .cameras
        .iter()
        .map(|c| {
            let st = c.shared.stats().snapshot(now_mono);
            json!({
                "id": c.config.id,
                "source": c.config.source,
                "width": c.config.width,
                "height": c.config.height,
                "fps": c.config.fps,
                "granted": st.source,
                "state": st.state,
                "latest": format!("/api/cameras/{}/latest.jpg", c.config.id),
                "stream": format!("/api/cameras/{}/stream.mjpeg", c.config.id),
            })
        })
        .collect();
    Json(json!({ "cameras": list })).into_response()
}

/// `GET /api/cameras/{id}/latest.jpg`: the newest frame in the ring, as captured.
pub async fn latest_jpeg(State(s): State<Arc<HttpState>>, Path(id): Path<String>) -> Response {
    let Some(cam) = camera(&s, &id) else {
        return error(StatusCode::NOT_FOUND, "no such camera");
    };
    // One copy under the ring's lock (a memcpy); capture waits for nothing longer.
    match cam.shared.ring.with_newest(|f| f.bytes.to_vec()) {
        Some(jpeg) => ([(header::CONTENT_TYPE, "image/jpeg")], jpeg).into_response(),
        None => error(StatusCode::SERVICE_UNAVAILABLE, "no frame yet"),
    }
}

/// The query of `GET /api/events`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EventsParams {
    camera: Option<String>,
    /// Epoch seconds.
    since: Option<f64>,
    until: Option<f64>,
    min_risk: Option<String>,
    limit: Option<u32>,
    /// The `next_cursor` of the previous page.
    cursor: Option<i64>,
    /// Only events in which the household recognised this member (id).
    member: Option<i64>,
}

fn epoch_us(v: f64, key: &str) -> Result<i64, Response> {
    if v.is_finite() && (0.0..=1e11).contains(&v) {
        Ok((v * 1e6) as i64)
    } else {
        Err(error(
            StatusCode::BAD_REQUEST,
            &format!("{key}: epoch seconds from 0 to 1e11"),
        ))
    }
}

/// `GET /api/events?camera=&since=&until=&min_risk=&limit=&cursor=`: newest first.
pub async fn events(
    State(s): State<Arc<HttpState>>,
    params: Result<Query<EventsParams>, axum::extract::rejection::QueryRejection>,
) -> Response {
    let Query(p) = match params {
        Ok(p) => p,
        Err(e) => return error(StatusCode::BAD_REQUEST, &e.body_text()),
    };
    let limit = p.limit.unwrap_or(50);
    if !(1..=MAX_PAGE).contains(&limit) {
        return error(StatusCode::BAD_REQUEST, "limit: 1 to 500");
    }
    let min_risk = match p.min_risk.as_deref().map(Risk::parse) {
        None => None,
        Some(Some(r)) => Some(r),
        Some(None) => {
            return error(
                StatusCode::BAD_REQUEST,
                "min_risk: low, medium, high or critical",
            )
        }
    };
    let since_us = match p.since.map(|v| epoch_us(v, "since")).transpose() {
        Ok(v) => v,
        Err(r) => return r,
    };
    let until_us = match p.until.map(|v| epoch_us(v, "until")).transpose() {
        Ok(v) => v,
        Err(r) => return r,
    };
    let q = EventQuery {
        camera: p.camera,
        since_us,
        until_us,
        min_risk,
        before_id: p.cursor,
        member: p.member,
        limit,
    };
    let store = s.events.clone();
    match tokio::task::spawn_blocking(move || store.query(&q)).await {
        Ok(Ok(list)) => {
            let next = (list.len() == limit as usize)
                .then(|| list.last().map(|e| e.id))
                .flatten();
            let list: Vec<EventView> = list.iter().map(|e| EventView::new(e, Some(""))).collect();
            Json(json!({ "events": list, "next_cursor": next })).into_response()
        }
        _ => error(StatusCode::INTERNAL_SERVER_ERROR, "events database"),
    }
}

/// `GET /api/events/{id}`.
pub async fn event(State(s): State<Arc<HttpState>>, Path(id): Path<String>) -> Response {
    match load_event(&s, &id).await {
        Ok(e) => Json(EventView::new(&e, Some(""))).into_response(),
        Err(r) => r,
    }
}

/// `GET /api/events/{id}/snapshot.jpg`: the event's best frame, as captured.
pub async fn snapshot(State(s): State<Arc<HttpState>>, Path(id): Path<String>) -> Response {
    let Ok(id) = id.parse::<i64>() else {
        return error(StatusCode::BAD_REQUEST, "event id: a number");
    };
    let store = s.events.clone();
    match tokio::task::spawn_blocking(move || store.snapshot(id)).await {
        Ok(Ok(Some(Some(jpeg)))) => {
            // An event's snapshot only gets better while it goes on; a minute's caching
            // spares a list of thumbnails being fetched again on every refresh.
            (
                [
                    (header::CONTENT_TYPE, "image/jpeg"),
                    (header::CACHE_CONTROL, "private, max-age=60"),
                ],
                jpeg,
            )
                .into_response()
        }
        Ok(Ok(Some(None))) => error(StatusCode::NOT_FOUND, "this event has no snapshot"),
        Ok(Ok(None)) => error(StatusCode::NOT_FOUND, "no such event"),
        _ => error(StatusCode::INTERNAL_SERVER_ERROR, "events database"),
    }
}

/// `DELETE /api/events/{id}` (admin): the event, its snapshot and its video.
pub async fn delete_event(State(s): State<Arc<HttpState>>, Path(id): Path<String>) -> Response {
    let Ok(id) = id.parse::<i64>() else {
        return error(StatusCode::BAD_REQUEST, "event id: a number");
    };
    let store = s.events.clone();
    let dir = s.clips_dir.clone();
    let done = tokio::task::spawn_blocking(move || {
        let r = store.delete(id);
        if let Ok(Deleted::Done { videos }) = &r {
            crate::recording::remove_videos(&dir, videos);
        }
        r
    })
    .await;
    match done {
        Ok(Ok(Deleted::Done { .. })) => {
            tracing::info!(event = id, "http: event deleted");
            Json(json!({ "deleted": id })).into_response()
        }
        Ok(Ok(Deleted::NoSuchEvent)) => error(StatusCode::NOT_FOUND, "no such event"),
        Ok(Ok(Deleted::StillOpen)) => error(
            StatusCode::CONFLICT,
            "the event is still going on; delete it once it has ended",
        ),
        _ => error(StatusCode::INTERNAL_SERVER_ERROR, "events database"),
    }
}

/// `GET /api/selftest`: the boot self-test's report (`http.selftest_report`), as written.
pub async fn selftest(State(s): State<Arc<HttpState>>) -> Response {
    let path = s.cfg.selftest_report.clone();
    let read = tokio::task::spawn_blocking(move || {
        crate::fsio::read_regular(&path, crate::fsio::MAX_CONFIG_BYTES)
    })
    .await;
    match read {
        Ok(Ok(bytes)) => match serde_json::from_slice::<serde_json::Value>(&bytes) {
            Ok(v) => Json(v).into_response(),
            Err(_) => error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "the self-test report is not JSON",
            ),
        },
        _ => error(
            StatusCode::NOT_FOUND,
            &format!(
                "no self-test report at {} (the boot self-test writes it: nvr-edge-selftest.service)",
                s.cfg.selftest_report.display()
            ),
        ),
    }
}

/// The event `{id}` names, read on the blocking pool; the error response otherwise.
pub(super) async fn load_event(s: &HttpState, id: &str) -> Result<Event, Response> {
    let Ok(id) = id.parse::<i64>() else {
        return Err(error(StatusCode::BAD_REQUEST, "event id: a number"));
    };
    let store = s.events.clone();
    match tokio::task::spawn_blocking(move || store.get(id)).await {
        Ok(Ok(Some(e))) => Ok(e),
        Ok(Ok(None)) => Err(error(StatusCode::NOT_FOUND, "no such event")),
        _ => Err(error(StatusCode::INTERNAL_SERVER_ERROR, "events database")),
    }
}
