//! The HTTP API of `nvr-edge run`, on the tokio runtime the service already has: it only
//! reads shared state (camera stats, rings by copy, analysis figures) and the database;
//! capture, analysis and inference stay on their own threads and never wait for it.
//!
//! Safe on a LAN from the first boot: loopback only until a user exists (see `auth.rs`),
//! a bound on requests in flight, a time limit on each (live streams excepted: they are
//! bounded by `max_streams` and drop a client that stops reading), no request body is
//! accepted yet, and every response says `nosniff` and a CSP that runs no script.

mod api;
pub mod auth;
mod clip;
mod metrics;
mod stream;
pub mod time;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::{ConnectInfo, Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;

use crate::analysis::AnalysisStats;
use crate::clock::Clock;
use crate::config::HttpSection;
use crate::events::EventStore;
use crate::inference::ModelInfo;
use crate::pipeline::CameraView;
use crate::users::{UserError, UserStore};
use auth::{Auth, Caller, Refusal};

/// How long a request (other than a live stream) may take.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    #[error("http: cannot listen on {addr}")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "http: refusing to serve {addr} with no user: anyone on that network could watch the \
         cameras. Add one first (`nvr-edge user add NAME --role admin`), bind 127.0.0.1, or \
         set http.allow_anonymous_lan = true"
    )]
    NoUsers { addr: SocketAddr },
    #[error("http: users")]
    Users(#[from] UserError),
}

/// What the server reads.
pub struct HttpState {
    pub cfg: HttpSection,
    pub clock: Arc<dyn Clock>,
    pub cameras: Vec<CameraView>,
    pub analysis: Vec<Arc<Mutex<AnalysisStats>>>,
    pub events: Arc<EventStore>,
    pub model: Option<ModelInfo>,
    pub started: Instant,
    /// Where event videos are (`<data_dir>/clips`).
    pub clips_dir: std::path::PathBuf,
    auth: Auth,
    in_flight: Semaphore,
    streams: Arc<Semaphore>,
}

impl HttpState {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        cfg: HttpSection,
        clock: Arc<dyn Clock>,
        cameras: Vec<CameraView>,
        analysis: Vec<Arc<Mutex<AnalysisStats>>>,
        events: Arc<EventStore>,
        users: Arc<UserStore>,
        model: Option<ModelInfo>,
        clips_dir: std::path::PathBuf,
    ) -> Self {
        Self {
            in_flight: Semaphore::new(cfg.max_requests as usize),
            streams: Arc::new(Semaphore::new(cfg.max_streams as usize)),
            cfg,
            clock,
            cameras,
            analysis,
            events,
            model,
            clips_dir,
            started: Instant::now(),
            auth: Auth::new(users),
        }
    }
}

/// A response body fed by a bounded channel: a producer that waits for the client (live
/// streams, video files) and never holds more than the channel's capacity.
fn channel_body(rx: tokio::sync::mpsc::Receiver<axum::body::Bytes>) -> axum::body::Body {
    let stream = futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv()
            .await
            .map(|b| (Ok::<_, std::convert::Infallible>(b), rx))
    });
    axum::body::Body::from_stream(stream)
}

/// Listen on `[http] bind`. A non-loopback address with no user is refused (unless
/// `allow_anonymous_lan`): the box must not show its cameras to a network by default.
pub async fn bind(cfg: &HttpSection, users: &UserStore) -> Result<TcpListener, HttpError> {
    let addr = cfg.addr().ok_or(HttpError::Bind {
        addr: SocketAddr::from(([127, 0, 0, 1], 0)),
        source: std::io::Error::new(std::io::ErrorKind::InvalidInput, "http.bind"),
    })?;
    if !addr.ip().is_loopback() && !cfg.allow_anonymous_lan && users.count()? == 0 {
        return Err(HttpError::NoUsers { addr });
    }
    TcpListener::bind(addr)
        .await
        .map_err(|source| HttpError::Bind { addr, source })
}

/// Every route, behind the request bound, the time limit and authentication.
pub fn router(state: Arc<HttpState>) -> Router {
    Router::new()
        .route("/api/health", get(api::health))
        .route("/api/stats", get(api::stats))
        .route("/api/cameras", get(api::cameras))
        .route("/api/cameras/{id}/latest.jpg", get(api::latest_jpeg))
        .route("/api/cameras/{id}/stream.mjpeg", get(stream::live))
        .route("/api/events", get(api::events))
        .route("/api/events/{id}", get(api::event))
        .route("/api/events/{id}/clip.avi", get(clip::clip))
        .route("/metrics", get(metrics::metrics))
        .fallback(api::not_found)
        .layer(middleware::from_fn_with_state(state.clone(), guard))
        .with_state(state)
}

/// Serve until `shutdown` resolves.
pub async fn serve(
    listener: TcpListener,
    state: Arc<HttpState>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(
        listener,
        router(state).into_make_service_with_connect_info::<SocketAddr>(),
    )
    .with_graceful_shutdown(shutdown)
    .await
}

/// The request bound, authentication, the time limit and the headers every response
/// carries.
async fn guard(
    State(s): State<Arc<HttpState>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    mut req: Request,
    next: Next,
) -> Response {
    let Ok(_permit) = s.in_flight.try_acquire() else {
        return api::error(
            StatusCode::SERVICE_UNAVAILABLE,
            "too many requests in flight",
        );
    };
    let header = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let caller = match s.auth.caller(peer.ip(), header.as_deref()).await {
        Ok(c) => c,
        Err(Refusal::Unauthorized) => {
            let mut r = api::error(StatusCode::UNAUTHORIZED, "user name and password needed");
            r.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Basic realm=\"nvr-edge\", charset=\"UTF-8\""),
            );
            return r;
        }
        Err(Refusal::Unavailable) => {
            return api::error(
                StatusCode::SERVICE_UNAVAILABLE,
                "users database unavailable",
            )
        }
    };
    if req.method() != axum::http::Method::GET && req.method() != axum::http::Method::HEAD {
        return api::error(StatusCode::METHOD_NOT_ALLOWED, "only GET is served");
    }
    req.extensions_mut().insert::<Caller>(caller);
    let streaming = req.uri().path().ends_with("/stream.mjpeg");
    let mut r = if streaming {
        next.run(req).await
    } else {
        match tokio::time::timeout(REQUEST_TIMEOUT, next.run(req)).await {
            Ok(r) => r,
            Err(_) => api::error(StatusCode::SERVICE_UNAVAILABLE, "request took too long"),
        }
    };
    let h = r.headers_mut();
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static("default-src 'none'; img-src 'self'; frame-ancestors 'none'"),
    );
    h.entry(header::CACHE_CONTROL)
        .or_insert(HeaderValue::from_static("no-store"));
    r.into_response()
}
