//! The HTTP API of `nvr-edge run`, on the tokio runtime the service already has: it only
//! reads shared state (camera stats, rings by copy, analysis figures) and the database;
//! capture, analysis and inference stay on their own threads and never wait for it.
//!
//! Safe on a LAN from the first boot: loopback only until a user exists (see `auth.rs`),
//! a bound on requests in flight, a time limit on each (streams excepted: they are
//! bounded by `max_streams` and drop a client that stops reading), bodies of at most
//! 64 KiB (a photo upload: `max_upload_mb`), changes only by an admin and, from a
//! browser, with the session's CSRF token; every response says `nosniff` and a CSP that
//! runs only the page's own script file.

mod api;
pub mod auth;
mod clip;
mod household;
mod metrics;
mod session;
mod stream;
pub mod tls;
mod web;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::{ConnectInfo, DefaultBodyLimit, Request, State};
use axum::http::{header, HeaderValue, Method, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;

use crate::analysis::AnalysisStats;
use crate::clock::Clock;
use crate::config::HttpSection;
use crate::config::IdentityConfig;
use crate::events::EventStore;
use crate::household::Household;
use crate::inference::identity::face::FaceObserver;
use crate::inference::ModelInfo;
use crate::pipeline::CameraView;
use crate::users::{Role, UserError, UserStore};
use auth::{Auth, Caller, Credentials, Refusal};

/// How long a request (other than a stream) may take.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// Largest body of a request other than a photo upload.
pub const MAX_BODY: usize = 64 * 1024;
/// The header a page's change carries its CSRF token in.
pub const CSRF_HEADER: &str = "x-csrf-token";

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
    #[error("https")]
    Tls(#[from] tls::TlsError),
}

/// A bound listening socket and, for HTTPS, its acceptor.
pub struct Bound {
    pub listener: TcpListener,
    tls: Option<tokio_rustls::TlsAcceptor>,
}

impl Bound {
    /// A plain-HTTP listener already bound (the self-test's own).
    pub fn plain(listener: TcpListener) -> Self {
        Self {
            listener,
            tls: None,
        }
    }

    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    pub fn is_tls(&self) -> bool {
        self.tls.is_some()
    }
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
    /// The household the recorder matches against (`None`: its database did not open).
    pub household: Option<Arc<Household>>,
    /// Which face models enrolment by upload loads.
    pub identity: IdentityConfig,
    /// The face models for uploads, loaded at the first; the lock makes enrolments one at
    /// a time.
    faces: tokio::sync::Mutex<Option<Arc<FaceObserver>>>,
    auth: Auth,
    in_flight: Semaphore,
    streams: Arc<Semaphore>,
}

/// What the server is given to read, gathered where the service composes it.
pub struct HttpDeps {
    pub cfg: HttpSection,
    pub clock: Arc<dyn Clock>,
    pub cameras: Vec<CameraView>,
    pub analysis: Vec<Arc<Mutex<AnalysisStats>>>,
    pub events: Arc<EventStore>,
    pub users: Arc<UserStore>,
    pub household: Option<Arc<Household>>,
    pub identity: IdentityConfig,
    pub model: Option<ModelInfo>,
    pub clips_dir: std::path::PathBuf,
}

impl HttpState {
    pub fn new(d: HttpDeps) -> Self {
        Self {
            in_flight: Semaphore::new(d.cfg.max_requests as usize),
            streams: Arc::new(Semaphore::new(d.cfg.max_streams as usize)),
            cfg: d.cfg,
            clock: d.clock,
            cameras: d.cameras,
            analysis: d.analysis,
            events: d.events,
            model: d.model,
            clips_dir: d.clips_dir,
            household: d.household,
            identity: d.identity,
            faces: tokio::sync::Mutex::new(None),
            started: Instant::now(),
            auth: Auth::new(d.users),
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

/// Listen on `[http] bind`, with the certificate of `tls_cert`/`tls_key` when set. A
/// non-loopback address with no user is refused (unless `allow_anonymous_lan`): the box
/// must not show its cameras to a network by default.
pub async fn bind(cfg: &HttpSection, users: &UserStore) -> Result<Bound, HttpError> {
    let addr = cfg.addr().ok_or(HttpError::Bind {
        addr: SocketAddr::from(([127, 0, 0, 1], 0)),
        source: std::io::Error::new(std::io::ErrorKind::InvalidInput, "http.bind"),
    })?;
    if !addr.ip().is_loopback() && !cfg.allow_anonymous_lan && users.count()? == 0 {
        return Err(HttpError::NoUsers { addr });
    }
    let tls = match (&cfg.tls_cert, &cfg.tls_key) {
        (Some(cert), Some(key)) => Some(tls::acceptor(cert, key)?),
        _ => None,
    };
    let listener = TcpListener::bind(addr)
        .await
        .map_err(|source| HttpError::Bind { addr, source })?;
    Ok(Bound { listener, tls })
}

/// Every route, behind the request bound, the time limit and authentication.
pub fn router(state: Arc<HttpState>) -> Router {
    let upload = state.cfg.max_upload_mb as usize * 1024 * 1024;
    Router::new()
        .route("/", get(web::index))
        .route("/app.js", get(web::script))
        .route("/app.css", get(web::style))
        .route("/api/login", post(session::login))
        .route("/api/logout", post(session::logout))
        .route("/api/session", get(session::session))
        .route("/api/health", get(api::health))
        .route("/api/stats", get(api::stats))
        .route("/api/selftest", get(api::selftest))
        .route("/api/cameras", get(api::cameras))
        .route("/api/cameras/{id}/latest.jpg", get(api::latest_jpeg))
        .route("/api/cameras/{id}/stream.mjpeg", get(stream::live))
        .route("/api/events", get(api::events))
        .route(
            "/api/events/{id}",
            get(api::event).delete(api::delete_event),
        )
        .route("/api/events/{id}/snapshot.jpg", get(api::snapshot))
        .route("/api/events/{id}/clip.avi", get(clip::clip))
        .route("/api/events/{id}/clip.mjpeg", get(clip::clip_mjpeg))
        .route("/api/household", get(household::list))
        .route("/api/household/members", post(household::add_member))
        .route(
            "/api/household/members/{id}",
            axum::routing::delete(household::remove_member),
        )
        .route(
            "/api/household/members/{id}/photos",
            post(household::enrol_photos).layer(DefaultBodyLimit::max(upload)),
        )
        .route("/api/household/vehicles", post(household::add_vehicle))
        .route(
            "/api/household/vehicles/{id}",
            axum::routing::delete(household::remove_vehicle),
        )
        .route("/metrics", get(metrics::metrics))
        .fallback(api::not_found)
        .layer(DefaultBodyLimit::max(MAX_BODY))
        .layer(middleware::from_fn_with_state(state.clone(), guard))
        .with_state(state)
}

/// Served without credentials: the page (it shows its login form) and signing in.
fn is_public(method: &Method, path: &str) -> bool {
    match *method {
        Method::GET | Method::HEAD => matches!(path, "/" | "/app.js" | "/app.css" | "/api/session"),
        Method::POST => path == "/api/login",
        _ => false,
    }
}

/// Why a change is refused, if it is: it needs an admin, and a browser's change must carry
/// its session's CSRF token (another site's page cannot read it, nor send the header
/// without a CORS preflight this server never answers). Basic credentials only read: a
/// browser would attach them to any site's form post.
fn refuse_change(s: &HttpState, caller: &Caller, req: &Request) -> Option<Response> {
    let path = req.uri().path();
    if path == "/api/logout" {
        return None;
    }
    if caller.role() != Role::Admin {
        return Some(api::error(StatusCode::FORBIDDEN, "changes need an admin"));
    }
    let token = req
        .headers()
        .get(CSRF_HEADER)
        .map(|v| v.as_bytes())
        .unwrap_or_default();
    let expected = match caller {
        Caller::Token(_) => return None,
        Caller::Basic(_) => return Some(api::error(
            StatusCode::FORBIDDEN,
            "HTTP Basic only reads: log in on the page, or use an API token (nvr-edge user token)",
        )),
        Caller::Session { csrf, .. } => csrf.as_bytes(),
        Caller::Local => s.auth.local_csrf.as_bytes(),
    };
    if crate::secret::same(token, expected) {
        None
    } else {
        Some(api::error(
            StatusCode::FORBIDDEN,
            "missing or wrong X-CSRF-Token (the page sends the one /api/session gives)",
        ))
    }
}

/// Serve until `shutdown` resolves.
pub async fn serve(
    bound: Bound,
    state: Arc<HttpState>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    use axum::serve::ListenerExt;
    let app = router(state).into_make_service_with_connect_info::<SocketAddr>();
    match bound.tls {
        None => {
            axum::serve(bound.listener, app)
                .with_graceful_shutdown(shutdown)
                .await
        }
        Some(acceptor) => {
            // (`tap_io` gives the TLS listener axum's connect-info for its address type.)
            let listener = tls::TlsListener::new(bound.listener, acceptor)?.tap_io(|_| {});
            axum::serve(listener, app)
                .with_graceful_shutdown(shutdown)
                .await
        }
    }
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
    let public = is_public(req.method(), req.uri().path());
    let authorization = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let session = session::cookie(req.headers(), session::COOKIE).map(str::to_owned);
    let creds = Credentials {
        authorization: authorization.as_deref(),
        session: session.as_deref(),
    };
    let caller = match s.auth.caller(peer.ip(), creds).await {
        Ok(c) => Some(c),
        Err(Refusal::Unauthorized) if public => None,
        Err(Refusal::Unauthorized) => {
            let mut r = api::error(StatusCode::UNAUTHORIZED, "log in, or send credentials");
            // The page's own requests say so: a 401 to them shows its login form, not
            // the browser's password dialog.
            if !req.headers().contains_key("x-requested-with") {
                r.headers_mut().insert(
                    header::WWW_AUTHENTICATE,
                    HeaderValue::from_static("Basic realm=\"nvr-edge\", charset=\"UTF-8\""),
                );
            }
            return r;
        }
        Err(Refusal::Unavailable) => {
            return api::error(
                StatusCode::SERVICE_UNAVAILABLE,
                "users database unavailable",
            )
        }
    };
    let change = !matches!(*req.method(), Method::GET | Method::HEAD);
    if let Some(c) = caller {
        if change {
            if let Some(r) = refuse_change(&s, &c, &req) {
                return r;
            }
        }
        req.extensions_mut().insert::<Caller>(c);
    }
    let streaming = req.uri().path().ends_with(".mjpeg");
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
        HeaderValue::from_static(
            "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' blob:; \
             connect-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'",
        ),
    );
    h.entry(header::CACHE_CONTROL)
        .or_insert(HeaderValue::from_static("no-store"));
    r.into_response()
}
