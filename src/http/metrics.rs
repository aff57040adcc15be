//! `GET /metrics`: the figures Prometheus scrapes, per camera (label `camera`) and for the
//! process, read at scrape time from what the recorder already keeps (no second set of
//! counters to drift from the summary line and the API).

use std::sync::Arc;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::registry::Registry;

use super::api::error;
use super::HttpState;

/// One scrape's view of the state.
#[derive(Clone)]
struct Scrape(Arc<HttpState>);

impl std::fmt::Debug for Scrape {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Scrape")
    }
}

/// One value of a labelled family: a gauge or a counter.
enum Value {
    Gauge(f64),
    Counter(u64),
}

impl Collector for Scrape {
    fn encode(&self, mut encoder: DescriptorEncoder<'_>) -> Result<(), std::fmt::Error> {
        let s = &self.0;
        let now = s.clock.mono_us();
        // (camera, capture snapshot, ring stats, arena bytes, analysis)
        let rows: Vec<_> = s
            .cameras
            .iter()
            .enumerate()
            .map(|(i, c)| {
                let r = c.report(now);
                let a = s
                    .analysis
                    .get(i)
                    .map(|a| a.lock().unwrap_or_else(|e| e.into_inner()).clone())
                    .unwrap_or_default();
                (c.config.id.clone(), r, a)
            })
            .collect();
        type Pick = fn(&crate::pipeline::CameraReport, &crate::analysis::AnalysisStats) -> Value;
        let families: [(&str, &str, Pick); 14] = [
            (
                "camera_fps",
                "Frames per second over the last 5 s",
                |r, _| Value::Gauge(r.stats.camera_fps),
            ),
            ("camera_frames", "Frames received", |r, _| {
                Value::Counter(r.stats.frames)
            }),
            (
                "camera_skipped_frames",
                "Frames the camera or pacing skipped",
                |r, _| Value::Counter(r.stats.skipped),
            ),
            (
                "camera_bad_frames",
                "Frames refused as corrupt or mis-sized",
                |r, _| Value::Counter(r.stats.bad_frames),
            ),
            (
                "camera_reconnects",
                "Reopenings of a vanished device",
                |r, _| Value::Counter(r.stats.reconnects),
            ),
            (
                "camera_last_frame_age_seconds",
                "Time since the newest frame (-1: none yet)",
                |r, _| Value::Gauge(r.stats.last_frame_age_ms.map_or(-1.0, |ms| ms / 1e3)),
            ),
            ("ring_frames", "Frames the ring holds", |r, _| {
                Value::Gauge(r.ring.len as f64)
            }),
            ("ring_bytes", "Payload bytes the ring holds", |r, _| {
                Value::Gauge(r.ring.bytes_used as f64)
            }),
            (
                "camera_arena_bytes",
                "jemalloc bytes of the camera's arena (ring and capture)",
                |r, _| Value::Gauge(r.memory_bytes.map_or(0.0, |b| b as f64)),
            ),
            ("motion_events", "Events opened on motion", |_, a| {
                Value::Counter(a.events)
            }),
            ("clips_done", "X-CLIP clips classified", |_, a| {
                Value::Counter(a.clips_done)
            }),
            ("clips_failed", "X-CLIP clips that failed", |_, a| {
                Value::Counter(a.clips_failed)
            }),
            (
                "inference_seconds",
                "Preprocessing and inference time of the classified clips",
                |_, a| Value::Gauge(a.inference_ms_sum / 1e3),
            ),
            (
                "identity_runs",
                "Identity model passes over clip windows",
                |_, a| Value::Counter(a.identity_runs),
            ),
        ];
        for (name, help, pick) in families {
            let values: Vec<Value> = rows.iter().map(|(_, r, a)| pick(r, a)).collect();
            let Some(first) = values.first() else {
                continue;
            };
            let kind = match first {
                Value::Gauge(_) => ConstGauge::new(0.0f64).metric_type(),
                Value::Counter(_) => ConstCounter::new(0u64).metric_type(),
            };
            let name = format!("nvr_{name}");
            let mut family = encoder.encode_descriptor(&name, help, None, kind)?;
            for ((camera, _, _), v) in rows.iter().zip(values) {
                let labels = [("camera", camera.as_str())];
                let m = family.encode_family(&labels)?;
                match v {
                    Value::Gauge(v) => ConstGauge::new(v).encode(m)?,
                    Value::Counter(v) => ConstCounter::new(v).encode(m)?,
                }
            }
        }
        if let Ok(p) = crate::memory::process_memory() {
            for (name, help, v) in [
                (
                    "process_allocated_bytes",
                    "jemalloc bytes handed out",
                    p.allocated,
                ),
                (
                    "process_resident_bytes",
                    "jemalloc resident bytes",
                    p.resident,
                ),
            ] {
                let g = ConstGauge::new(v as f64);
                g.encode(encoder.encode_descriptor(
                    &format!("nvr_{name}"),
                    help,
                    None,
                    g.metric_type(),
                )?)?;
            }
        }
        Ok(())
    }
}

pub async fn metrics(State(s): State<Arc<HttpState>>) -> Response {
    let mut registry = Registry::default();
    registry.register_collector(Box::new(Scrape(s)));
    let mut out = String::new();
    if prometheus_client::encoding::text::encode(&mut out, &registry).is_err() {
        return error(StatusCode::INTERNAL_SERVER_ERROR, "metrics encoding");
    }
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        out,
    )
        .into_response()
}
