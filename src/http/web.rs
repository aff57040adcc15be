//! The web page: one HTML file, one script and one style sheet, compiled into the binary
//! (no Node toolchain; plain JavaScript over the JSON API). The CSP every response carries
//! runs only `/app.js`: the page has no inline script or style.

use axum::http::header;
use axum::response::{IntoResponse, Response};

const INDEX: &str = include_str!("web/index.html");
const SCRIPT: &str = include_str!("web/app.js");
const STYLE: &str = include_str!("web/app.css");

fn file(kind: &'static str, body: &'static str) -> Response {
    // Revalidated on every load: an updated box serves its new page at once.
    (
        [
            (header::CONTENT_TYPE, kind),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        body,
    )
        .into_response()
}

pub async fn index() -> Response {
    file("text/html; charset=utf-8", INDEX)
}

pub async fn script() -> Response {
    file("text/javascript; charset=utf-8", SCRIPT)
}

pub async fn style() -> Response {
    file("text/css; charset=utf-8", STYLE)
}
