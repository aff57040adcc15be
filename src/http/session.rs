//! Browser sign-in: `POST /api/login` checks a name and password (with `auth`'s back-off)
//! and sets the session cookie; `POST /api/logout` ends the session; `GET /api/session`
//! tells the page who it is, whether it must log in, and the CSRF token its changes carry.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::{ConnectInfo, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use serde::Deserialize;
use serde_json::json;

use super::api::error;
use super::auth::{Caller, Refusal};
use super::HttpState;
use crate::stamp::{now_secs, Stamp};
use crate::users::MAX_PASSWORD;

/// The session cookie's name.
pub const COOKIE: &str = "nvr_session";

/// The value of cookie `name` in a request's `Cookie` headers.
pub fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.trim())
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Login {
    name: String,
    password: String,
}

/// The session cookie: HttpOnly (page scripts never see it), SameSite=Strict (no other
/// site's page sends it), and Secure when the server speaks HTTPS (never sent in clear).
pub fn set_cookie(value: &str, max_age: i64, secure: bool) -> Option<HeaderValue> {
    let secure = if secure { "; Secure" } else { "" };
    HeaderValue::from_str(&format!(
        "{COOKIE}={value}; Path=/; HttpOnly; SameSite=Strict; Max-Age={max_age}{secure}"
    ))
    .ok()
}

/// `POST /api/login` `{"name", "password"}` → the session cookie and the CSRF token.
pub async fn login(
    State(s): State<Arc<HttpState>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    body: Result<Json<Login>, axum::extract::rejection::JsonRejection>,
) -> Response {
    let Json(l) = match body {
        Ok(b) => b,
        Err(e) => return error(e.status(), &e.body_text()),
    };
    if l.name.is_empty() || l.name.len() > 64 || l.password.len() > MAX_PASSWORD {
        return error(
            StatusCode::BAD_REQUEST,
            "name: 1-64 characters; password: at most 1024",
        );
    }
    match s.auth.users_exist() {
        Ok(true) => {}
        Ok(false) => {
            return error(
                StatusCode::CONFLICT,
                "no users yet: the page is open on loopback without a login \
                 (add one with `nvr-edge user add NAME --role admin`)",
            )
        }
        Err(_) => {
            return error(
                StatusCode::SERVICE_UNAVAILABLE,
                "users database unavailable",
            )
        }
    }
    let user = match s.auth.password(peer.ip(), &l.name, l.password).await {
        Ok(u) => u,
        Err(Refusal::Unauthorized) => {
            return error(StatusCode::UNAUTHORIZED, "wrong user name or password")
        }
        Err(Refusal::Unavailable) => {
            return error(
                StatusCode::SERVICE_UNAVAILABLE,
                "users database unavailable",
            )
        }
    };
    let ttl = i64::from(s.cfg.session_hours) * 3600;
    let users = s.auth.users.clone();
    let started = {
        let user = user.clone();
        tokio::task::spawn_blocking(move || users.start_session(&user, now_secs(), ttl)).await
    };
    let Ok(Ok((token, session))) = started else {
        return error(
            StatusCode::SERVICE_UNAVAILABLE,
            "users database unavailable",
        );
    };
    tracing::info!(addr = %peer.ip(), user = %user.name, "http: logged in");
    let mut r = Json(json!({
        "user": user.name,
        "role": user.role,
        "csrf": session.csrf,
        "expires": Stamp::from_wall_us(session.expires_at.saturating_mul(1_000_000)),
    }))
    .into_response();
    if let Some(v) = set_cookie(&token, ttl, s.cfg.tls()) {
        r.headers_mut().insert(header::SET_COOKIE, v);
    }
    r
}

/// `POST /api/logout`: the session ends here and in the browser.
pub async fn logout(State(s): State<Arc<HttpState>>, headers: HeaderMap) -> Response {
    if let Some(token) = cookie(&headers, COOKIE).map(str::to_owned) {
        let users = s.auth.users.clone();
        let _ = tokio::task::spawn_blocking(move || users.end_session(&token)).await;
    }
    let mut r = Json(json!({ "logged_out": true })).into_response();
    if let Some(v) = set_cookie("", 0, s.cfg.tls()) {
        r.headers_mut().insert(header::SET_COOKIE, v);
    }
    r
}

/// `GET /api/session`: `{"user", "role", "csrf", "login_required"}`; `user` is null when
/// the page must show its login form.
pub async fn session(
    State(s): State<Arc<HttpState>>,
    caller: Option<Extension<Caller>>,
) -> Response {
    let body = match caller.as_deref() {
        Some(Caller::Local) => json!({
            "user": null, "role": "admin", "csrf": s.auth.local_csrf,
            "login_required": false,
        }),
        Some(c @ Caller::Session { csrf, .. }) => json!({
            "user": c.user().map(|u| &u.name), "role": c.role(), "csrf": csrf,
            "login_required": false,
        }),
        Some(c) => json!({
            "user": c.user().map(|u| &u.name), "role": c.role(), "csrf": null,
            "login_required": false,
        }),
        None => json!({ "user": null, "role": null, "csrf": null, "login_required": true }),
    };
    Json(body).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cookies_are_secure_exactly_when_tls_is_on() {
        let plain = set_cookie("t", 60, false).unwrap();
        let tls = set_cookie("t", 60, true).unwrap();
        assert!(!plain.to_str().unwrap().contains("Secure"));
        assert!(tls.to_str().unwrap().ends_with("; Secure"));
        for c in [plain, tls] {
            let c = c.to_str().unwrap();
            assert!(
                c.contains("HttpOnly") && c.contains("SameSite=Strict"),
                "{c}"
            );
        }
    }

    #[test]
    fn the_session_cookie_is_found_among_others() {
        let mut h = HeaderMap::new();
        h.append(
            header::COOKIE,
            HeaderValue::from_static("a=1; nvr_session=abc"),
        );
        h.append(header::COOKIE, HeaderValue::from_static("b=2"));
        assert_eq!(cookie(&h, COOKIE), Some("abc"));
        assert_eq!(cookie(&h, "b"), Some("2"));
        assert_eq!(cookie(&h, "nvr"), None);
    }
}
