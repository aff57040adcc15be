//! The HTTP rows (when `[http] enabled`): the configured address exists on this box and
//! can be listened on (a port of the kernel's choosing on it, so a recorder already
//! serving the real port does not fail the row), and the server, over the self-test's own
//! cameras, answers `/api/health` over that address within the target.

use super::*;

use crate::http::{Bound, HttpDeps, HttpState};
use crate::users::{UserError, UserStore};

/// Round trips measured; the row reports their median.
const ROUND_TRIPS: usize = 5;
/// A health answer slower than this on the box itself means the control plane is stuck.
const HEALTH_TARGET_MS: f64 = 200.0;

#[derive(Debug, thiserror::Error)]
enum HttpProbeError {
    #[error("http.bind is not an address")]
    Address,
    #[error("cannot listen on {0}")]
    Listen(String, #[source] std::io::Error),
    #[error("scratch database {0}")]
    Store(String, #[source] crate::store::StoreError),
    #[error("scratch users table")]
    Users(#[from] UserError),
    #[error("request")]
    Io(#[from] std::io::Error),
    #[error("answer: {0}")]
    Answer(String),
}

pub(super) fn http_checks(cfg: &Config, pipeline: &Pipeline, clock: Arc<dyn Clock>) -> Vec<Check> {
    if !cfg.http.enabled {
        return Vec::new();
    }
    let scratch = cfg
        .storage
        .data_dir
        .join(format!("selftest-http-{}", std::process::id()));
    let result = round_trips(cfg, pipeline, clock, &scratch);
    let _ = std::fs::remove_dir_all(&scratch);
    let mut rows = Vec::new();
    // HTTPS asked for: the certificate and key load and go together (the round trip
    // itself is plain, on a port of its own).
    if let (Some(cert), Some(key)) = (&cfg.http.tls_cert, &cfg.http.tls_key) {
        rows.push(match crate::http::tls::acceptor(cert, key) {
            Ok(_) => Check::new("http_tls_cert", None, 0.0, Op::AtMost, 0.0, "problems"),
            Err(e) => {
                Check::failed("http_tls_cert", Op::AtMost, 0.0, "problems").detail(error_chain(&e))
            }
        });
    }
    rows.extend(match result {
        Ok((addr, ms)) => vec![
            Check::new("http_listen", None, 0.0, Op::AtMost, 0.0, "problems")
                .detail(format!("listened on {addr}")),
            Check::new(
                "http_health_ms",
                None,
                ms,
                Op::AtMost,
                HEALTH_TARGET_MS,
                "ms",
            )
            .detail(format!(
                "GET /api/health over {addr}, median of {ROUND_TRIPS}"
            )),
        ],
        Err(e @ (HttpProbeError::Address | HttpProbeError::Listen(..))) => vec![
            Check::failed("http_listen", Op::AtMost, 0.0, "problems").detail(error_chain(&e)),
            Check::failed("http_health_ms", Op::AtMost, HEALTH_TARGET_MS, "ms")
                .detail("not listening"),
        ],
        Err(e) => vec![
            Check::new("http_listen", None, 0.0, Op::AtMost, 0.0, "problems"),
            Check::failed("http_health_ms", Op::AtMost, HEALTH_TARGET_MS, "ms")
                .detail(error_chain(&e)),
        ],
    });
    rows
}

fn round_trips(
    cfg: &Config,
    pipeline: &Pipeline,
    clock: Arc<dyn Clock>,
    scratch: &std::path::Path,
) -> Result<(std::net::SocketAddr, f64), HttpProbeError> {
    let ip = cfg.http.addr().ok_or(HttpProbeError::Address)?.ip();
    let events = EventStore::open_in(scratch, cfg.events.clone())
        .map_err(|e| HttpProbeError::Store(scratch.display().to_string(), e))?;
    let users = UserStore::open_in(scratch)?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let listener = rt
        .block_on(tokio::net::TcpListener::bind((ip, 0)))
        .map_err(|e| HttpProbeError::Listen(format!("{ip}"), e))?;
    let mut addr = listener.local_addr()?;
    if addr.ip().is_unspecified() {
        // "All addresses": ask over loopback.
        addr.set_ip(match addr.ip() {
            std::net::IpAddr::V4(_) => std::net::Ipv4Addr::LOCALHOST.into(),
            std::net::IpAddr::V6(_) => std::net::Ipv6Addr::LOCALHOST.into(),
        });
    }
    let state = Arc::new(HttpState::new(HttpDeps {
        cfg: cfg.http.clone(),
        clock,
        cameras: pipeline.cameras().iter().map(|c| c.view()).collect(),
        analysis: Vec::new(),
        events: Arc::new(events),
        users: Arc::new(users),
        household: None,
        identity: cfg.identity.clone(),
        model: None,
        clips_dir: scratch.join("clips"),
    }));
    rt.block_on(async move {
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(crate::http::serve(Bound::plain(listener), state, async {
            let _ = stopped.await;
        }));
        let mut times = Vec::with_capacity(ROUND_TRIPS);
        let mut outcome = Ok(());
        for _ in 0..ROUND_TRIPS {
            let t0 = Instant::now();
            match health(addr).await {
                Ok(()) => times.push(t0.elapsed().as_secs_f64() * 1e3),
                Err(e) => {
                    outcome = Err(e);
                    break;
                }
            }
        }
        let _ = stop.send(());
        let _ = tokio::time::timeout(Duration::from_secs(2), server).await;
        outcome?;
        times.sort_by(f64::total_cmp);
        Ok((addr, times[times.len() / 2]))
    })
}

/// One `GET /api/health` answered 200 with `"alive":true` (a plain blocking client on
/// the blocking pool, while the runtime serves).
async fn health(addr: std::net::SocketAddr) -> Result<(), HttpProbeError> {
    let raw = tokio::task::spawn_blocking(move || {
        use std::io::{Read, Write};
        let mut s = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(5))?;
        s.set_read_timeout(Some(Duration::from_secs(5)))?;
        s.write_all(b"GET /api/health HTTP/1.0\r\nHost: selftest\r\n\r\n")?;
        let mut raw = Vec::with_capacity(4096);
        s.take(1 << 20).read_to_end(&mut raw)?;
        Ok::<_, std::io::Error>(raw)
    })
    .await
    .map_err(|_| HttpProbeError::Answer("client thread".into()))??;
    let text = String::from_utf8_lossy(&raw);
    if text.split(' ').nth(1) == Some("200") && text.contains("\"alive\":true") {
        Ok(())
    } else {
        Err(HttpProbeError::Answer(
            text.lines().next().unwrap_or("nothing").to_string(),
        ))
    }
}
