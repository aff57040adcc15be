//! An event's finished video: `GET /api/events/{id}/clip.avi` (MJPEG AVI, as recorded,
//! with one byte range `Range: bytes=a-b`, `a-`, `-n` for players that seek), streamed
//! from disk in 64 KiB pieces with at most two in hand (a video may be 1 GiB; none is read
//! whole); and `GET /api/events/{id}/clip.mjpeg`, its frames as a multipart stream paced
//! at the recorded rate, which any browser plays in an `<img>` (one frame in hand; it
//! takes one of `http.max_streams`).

use std::io::{Read, Seek, SeekFrom};
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use tokio::sync::mpsc;

use super::api::{error, load_event};
use super::stream::{multipart, part_into, stream_slot, STALL};
use super::{channel_body, HttpState};
use crate::recording::AviReader;

const PIECE: usize = 64 * 1024;

/// The byte range `header` asks of a `len`-byte file: `Ok(None)` for all of it, `Err` when
/// it cannot be served (416).
pub fn byte_range(header: Option<&str>, len: u64) -> Result<Option<(u64, u64)>, ()> {
    let Some(h) = header else { return Ok(None) };
    let spec = h.trim().strip_prefix("bytes=").ok_or(())?;
    if spec.contains(',') {
        return Err(()); // one range only
    }
    let (a, b) = spec.split_once('-').ok_or(())?;
    let (a, b) = (a.trim(), b.trim());
    let range = match (a.is_empty(), b.is_empty()) {
        (false, _) => {
            let start: u64 = a.parse().map_err(|_| ())?;
            let end = if b.is_empty() {
                len.saturating_sub(1)
            } else {
                b.parse::<u64>().map_err(|_| ())?.min(len.saturating_sub(1))
            };
            (start, end)
        }
        (true, false) => {
            let n: u64 = b.parse().map_err(|_| ())?;
            if n == 0 {
                return Err(());
            }
            (len.saturating_sub(n), len.saturating_sub(1))
        }
        (true, true) => return Err(()),
    };
    if len == 0 || range.0 > range.1 || range.0 >= len {
        return Err(());
    }
    Ok(Some(range))
}

/// The event `{id}` names and the path of its finished video; the error response otherwise.
async fn finished_video(s: &HttpState, id: &str) -> Result<(i64, std::path::PathBuf), Response> {
    let event = load_event(s, id).await?;
    event
        .video
        .filter(|v| v.state == "complete")
        .and_then(|v| crate::recording::video_path(&s.clips_dir, &v.file))
        .map(|p| (event.id, p))
        .ok_or_else(|| error(StatusCode::NOT_FOUND, "this event has no finished video"))
}

/// `GET /api/events/{id}/clip.mjpeg`: the video's frames, paced as recorded.
pub async fn clip_mjpeg(State(s): State<Arc<HttpState>>, Path(id): Path<String>) -> Response {
    let path = match finished_video(&s, &id).await {
        Ok((_, p)) => p,
        Err(r) => return r,
    };
    let mut reader = match tokio::task::spawn_blocking(move || AviReader::open(&path)).await {
        Ok(Ok(r)) => r,
        _ => {
            return error(
                StatusCode::NOT_FOUND,
                "the video file is gone or unreadable",
            )
        }
    };
    let slot = match stream_slot(&s) {
        Ok(p) => p,
        Err(r) => return r,
    };
    // The recorded rate, within reason (a header saying 0 or nonsense plays at 10 fps).
    let us = match reader.us_per_frame {
        16_000..=2_000_000 => reader.us_per_frame,
        _ => 100_000,
    };
    let period = std::time::Duration::from_micros(u64::from(us));
    let (tx, rx) = mpsc::channel::<Bytes>(1);
    tokio::task::spawn_blocking(move || {
        let _slot = slot;
        let mut frame = Vec::new();
        let mut next = std::time::Instant::now();
        while let Ok(true) = reader.next_frame(&mut frame) {
            let mut part = Vec::new();
            part_into(&mut part, &frame);
            let now = std::time::Instant::now();
            if next > now {
                std::thread::sleep(next - now);
            }
            next = std::time::Instant::now().max(next) + period;
            // A client that stops reading is dropped like a live one.
            let rt = tokio::runtime::Handle::current();
            if rt
                .block_on(tx.send_timeout(Bytes::from(part), STALL))
                .is_err()
            {
                break;
            }
        }
    });
    multipart(rx)
}

pub async fn clip(
    State(s): State<Arc<HttpState>>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Response {
    let (id, path) = match finished_video(&s, &id).await {
        Ok(v) => v,
        Err(r) => return r,
    };
    let Ok(mut file) = std::fs::File::open(&path) else {
        return error(
            StatusCode::NOT_FOUND,
            "the video file is gone (disk budget?)",
        );
    };
    let len = file.metadata().map(|m| m.len()).unwrap_or(0);
    let range = headers
        .get(header::RANGE)
        .map(|v| v.to_str().unwrap_or("invalid"));
    let (start, end, status) = match byte_range(range, len) {
        Ok(None) => (0, len.saturating_sub(1), StatusCode::OK),
        Ok(Some((a, b))) => (a, b, StatusCode::PARTIAL_CONTENT),
        Err(()) => {
            let mut r = error(
                StatusCode::RANGE_NOT_SATISFIABLE,
                "one byte range within the file",
            );
            if let Ok(v) = format!("bytes */{len}").parse() {
                r.headers_mut().insert(header::CONTENT_RANGE, v);
            }
            return r;
        }
    };
    let count = if len == 0 { 0 } else { end - start + 1 };
    let (tx, rx) = mpsc::channel::<Bytes>(2);
    tokio::task::spawn_blocking(move || {
        if file.seek(SeekFrom::Start(start)).is_err() {
            return;
        }
        let mut left = count;
        let mut buf = vec![0u8; PIECE];
        while left > 0 {
            let want = (left as usize).min(PIECE);
            match file.read(&mut buf[..want]) {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    left -= n as u64;
                    // A client gone (or not reading for long) ends the copy.
                    if tx.blocking_send(Bytes::copy_from_slice(&buf[..n])).is_err() {
                        break;
                    }
                }
            }
        }
    });
    let mut r = (status, channel_body(rx)).into_response();
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        "video/x-msvideo".parse().expect("static"),
    );
    h.insert(header::ACCEPT_RANGES, "bytes".parse().expect("static"));
    if let Ok(v) = count.to_string().parse() {
        h.insert(header::CONTENT_LENGTH, v);
    }
    if status == StatusCode::PARTIAL_CONTENT {
        if let Ok(v) = format!("bytes {start}-{end}/{len}").parse() {
            h.insert(header::CONTENT_RANGE, v);
        }
    }
    if let Ok(v) = format!("attachment; filename=\"event-{id}.avi\"").parse() {
        h.insert(header::CONTENT_DISPOSITION, v);
    }
    r
}

#[cfg(test)]
mod tests {
    use super::byte_range;

    #[test]
    fn ranges_as_rfc_9110_reads_them() {
        assert_eq!(byte_range(None, 100), Ok(None));
        assert_eq!(byte_range(Some("bytes=0-9"), 100), Ok(Some((0, 9))));
        assert_eq!(byte_range(Some("bytes=90-"), 100), Ok(Some((90, 99))));
        assert_eq!(byte_range(Some("bytes=-10"), 100), Ok(Some((90, 99))));
        assert_eq!(byte_range(Some("bytes=50-500"), 100), Ok(Some((50, 99))));
        for bad in [
            "bytes=100-",
            "bytes=9-0",
            "bytes=-0",
            "bytes=-",
            "items=0-1",
            "bytes=0-1,5-6",
            "bytes=x-1",
        ] {
            assert_eq!(byte_range(Some(bad), 100), Err(()), "{bad}");
        }
        assert_eq!(byte_range(Some("bytes=0-"), 0), Err(()));
    }
}
