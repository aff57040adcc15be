//! `GET /api/cameras/{id}/stream.mjpeg`: the camera live, as `multipart/x-mixed-replace`
//! JPEGs straight from its ring (no re-encode), paced at `http.stream_fps`.
//!
//! Bounded everywhere: at most `max_streams` at once (the next gets 503), one frame in hand
//! per stream (a copy out of the ring under its lock, then the lock is gone), and a client
//! that has not taken a frame for [`STALL`] is dropped: its stream ends and its slot frees.

use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use tokio::sync::mpsc;

use super::api::{camera, error};
use super::{channel_body, HttpState};

/// A client that does not take the next frame within this long is dropped.
pub const STALL: Duration = Duration::from_secs(10);
pub const BOUNDARY: &str = "nvrframe";

/// One JPEG as a part of the multipart stream, appended to `out`.
pub fn part_into(out: &mut Vec<u8>, jpeg: &[u8]) {
    out.reserve(jpeg.len() + 96);
    out.extend_from_slice(
        format!(
            "--{BOUNDARY}\r\nContent-Type: image/jpeg\r\nContent-Length: {}\r\n\r\n",
            jpeg.len()
        )
        .as_bytes(),
    );
    out.extend_from_slice(jpeg);
    out.extend_from_slice(b"\r\n");
}

/// The headers of a multipart JPEG stream and its body.
pub fn multipart(rx: mpsc::Receiver<Bytes>) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            format!("multipart/x-mixed-replace; boundary={BOUNDARY}"),
        )],
        channel_body(rx),
    )
        .into_response()
}

/// A slot among `http.max_streams`, or the 503 that says they are taken.
pub fn stream_slot(s: &HttpState) -> Result<tokio::sync::OwnedSemaphorePermit, Response> {
    s.streams.clone().try_acquire_owned().map_err(|_| {
        error(
            StatusCode::SERVICE_UNAVAILABLE,
            &format!(
                "{} live streams or clip playbacks already (http.max_streams)",
                s.cfg.max_streams
            ),
        )
    })
}

pub async fn live(State(s): State<Arc<HttpState>>, Path(id): Path<String>) -> Response {
    let Some(cam) = camera(&s, &id) else {
        return error(StatusCode::NOT_FOUND, "no such camera");
    };
    let permit = match stream_slot(&s) {
        Ok(p) => p,
        Err(r) => return r,
    };
    let ring = cam.shared.ring.clone();
    let fps = s.cfg.stream_fps.min(cam.config.fps).max(0.1);
    let camera = id.clone();
    // One frame waits in the channel at most; the producer waits for the client, never
    // the other way round, and never while holding the ring.
    let (tx, rx) = mpsc::channel::<Bytes>(1);
    tokio::spawn(async move {
        let _slot = permit;
        let mut tick = tokio::time::interval(Duration::from_secs_f64(1.0 / fps));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        let mut last = None;
        loop {
            tick.tick().await;
            if tx.is_closed() {
                break;
            }
            let Some((seq, part)) = ring.with_newest(|f| {
                let mut part = Vec::new();
                part_into(&mut part, f.bytes);
                (f.meta.seq, part)
            }) else {
                continue;
            };
            if last == Some(seq) {
                continue;
            }
            last = Some(seq);
            match tx.send_timeout(Bytes::from(part), STALL).await {
                Ok(()) => {}
                Err(mpsc::error::SendTimeoutError::Timeout(_)) => {
                    tracing::info!(camera = %camera, "http: live stream client stopped reading: dropped");
                    break;
                }
                Err(mpsc::error::SendTimeoutError::Closed(_)) => break,
            }
        }
    });
    multipart(rx)
}
