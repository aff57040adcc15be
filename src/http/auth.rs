//! Who is asking, and how they proved it, against the users table; with what an appliance
//! on a LAN needs around it.
//!
//! - With no user at all, the server only listens on loopback (see `bind`) and every
//!   request is the local admin: the quick start works, nothing is exposed.
//! - Browsers log in with the page's form (`POST /api/login`) and get a session cookie
//!   (HttpOnly, SameSite=Strict); API clients send `Authorization: Bearer` with a token of
//!   `nvr-edge user token`; HTTP Basic is accepted for reading (Home Assistant's MJPEG
//!   camera needs it). Changes (POST, DELETE) need an admin, and from a browser the
//!   session's CSRF token in `X-CSRF-Token` (see `mod.rs`'s guard).
//! - A password check costs one argon2 verification (tens of milliseconds, ~19 MiB): at most
//!   [`MAX_VERIFYING`] run at once, on the blocking pool, never on the runtime's thread.
//! - A verified Basic header is remembered for [`REMEMBER`] (by its SHA-256, in a map of at
//!   most [`MAX_REMEMBERED`]), so a live stream or a poll every second does not pay argon2
//!   each time. Removing a user or changing a password takes effect within that time.
//! - Failed logins are slowed per client address and per user name (OpenSSH-style back-off:
//!   1 s doubling to 30 s before the 401 is sent), in maps of bounded size; a wrong bearer
//!   token is slowed per address.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::Engine;
use sha2::{Digest, Sha256};
use tokio::sync::Semaphore;

use crate::users::{Role, User, UserStore};

/// argon2 verifications at once (each ~19 MiB and a core for tens of milliseconds).
pub const MAX_VERIFYING: usize = 2;
/// How long a verified header is remembered.
pub const REMEMBER: Duration = Duration::from_secs(60);
/// Headers remembered at most.
pub const MAX_REMEMBERED: usize = 256;
/// Clients (addresses, names) whose failures are tracked at most.
pub const MAX_TRACKED: usize = 1024;
/// Longest wait before a 401.
pub const MAX_DELAY: Duration = Duration::from_secs(30);

/// Who a request is from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Caller {
    /// No user exists and the server is on loopback (or anonymous LAN was allowed).
    Local,
    /// A browser's login session; changes must carry its CSRF token.
    Session { user: User, csrf: String },
    /// `Authorization: Bearer` with an API token.
    Token(User),
    /// HTTP Basic: reading only (a browser would send it to any site's form post).
    Basic(User),
}

impl Caller {
    pub fn role(&self) -> Role {
        match self {
            Caller::Local => Role::Admin,
            Caller::Session { user, .. } | Caller::Token(user) | Caller::Basic(user) => user.role,
        }
    }

    pub fn user(&self) -> Option<&User> {
        match self {
            Caller::Local => None,
            Caller::Session { user, .. } | Caller::Token(user) | Caller::Basic(user) => Some(user),
        }
    }
}

/// What a request brings to prove who it is.
#[derive(Debug, Default, Clone, Copy)]
pub struct Credentials<'a> {
    /// The `Authorization` header.
    pub authorization: Option<&'a str>,
    /// The session cookie's value.
    pub session: Option<&'a str>,
}

/// Why a request is refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// No or wrong credentials (after the back-off).
    Unauthorized,
    /// The users table could not be read.
    Unavailable,
}

struct Failures {
    count: u32,
    last: Instant,
}

pub struct Auth {
    pub(super) users: Arc<UserStore>,
    /// The CSRF token of the local admin (no users): changes from a page on loopback carry
    /// it, so another site open in the same browser cannot post to the box.
    pub local_csrf: String,
    verifying: Semaphore,
    remembered: Mutex<HashMap<[u8; 32], (User, Instant)>>,
    failures: Mutex<HashMap<String, Failures>>,
}

/// The back-off before answering the `n`th failure in a row: 1 s doubling, at most 30 s.
pub fn delay_for(n: u32) -> Duration {
    if n == 0 {
        return Duration::ZERO;
    }
    Duration::from_secs(1u64 << (n - 1).min(5)).min(MAX_DELAY)
}

/// Insert into a map that holds at most `cap` entries, dropping the oldest by `age`.
fn insert_bounded<K: std::hash::Hash + Eq + Clone, V>(
    map: &mut HashMap<K, V>,
    cap: usize,
    key: K,
    value: V,
    age: impl Fn(&V) -> Instant,
) {
    if map.len() >= cap && !map.contains_key(&key) {
        if let Some(oldest) = map
            .iter()
            .min_by_key(|(_, v)| age(v))
            .map(|(k, _)| k.clone())
        {
            map.remove(&oldest);
        }
    }
    map.insert(key, value);
}

impl Auth {
    pub fn new(users: Arc<UserStore>) -> Self {
        Self {
            users,
            local_csrf: crate::secret::random_token(),
            verifying: Semaphore::new(MAX_VERIFYING),
            remembered: Mutex::new(HashMap::new()),
            failures: Mutex::new(HashMap::new()),
        }
    }

    /// Whether any user exists (then every request needs credentials).
    pub fn users_exist(&self) -> Result<bool, Refusal> {
        self.users
            .count()
            .map(|n| n > 0)
            .map_err(|_| Refusal::Unavailable)
    }

    fn failures_of(&self, key: &str) -> u32 {
        let map = self.failures.lock().unwrap_or_else(|e| e.into_inner());
        map.get(key)
            // Forgotten after a quiet quarter of an hour.
            .filter(|f| f.last.elapsed() < Duration::from_secs(900))
            .map_or(0, |f| f.count)
    }

    fn fail(&self, keys: &[String]) -> u32 {
        let mut map = self.failures.lock().unwrap_or_else(|e| e.into_inner());
        let mut worst = 0;
        for k in keys {
            let n = map.get(k).map_or(0, |f| f.count).saturating_add(1);
            worst = worst.max(n);
            insert_bounded(
                &mut map,
                MAX_TRACKED,
                k.clone(),
                Failures {
                    count: n,
                    last: Instant::now(),
                },
                |f| f.last,
            );
        }
        worst
    }

    fn succeed(&self, keys: &[String]) {
        let mut map = self.failures.lock().unwrap_or_else(|e| e.into_inner());
        for k in keys {
            map.remove(k);
        }
    }

    /// The caller of a request from `addr` with these credentials.
    pub async fn caller(&self, addr: IpAddr, creds: Credentials<'_>) -> Result<Caller, Refusal> {
        if !self.users_exist()? {
            return Ok(Caller::Local);
        }
        let now = crate::stamp::now_secs();
        if let Some(header) = creds.authorization {
            if let Some(token) = strip_scheme(header, "bearer") {
                return match self.users.token_user(token) {
                    Ok(Some(user)) => Ok(Caller::Token(user)),
                    Ok(None) => {
                        tracing::warn!(%addr, "http: unknown API token");
                        self.slow_down(&[format!("addr {addr}")]).await;
                        Err(Refusal::Unauthorized)
                    }
                    Err(_) => Err(Refusal::Unavailable),
                };
            }
            return self.basic(addr, header).await.map(Caller::Basic);
        }
        if let Some(token) = creds.session {
            return match self.users.session(token, now) {
                Ok(Some(s)) => Ok(Caller::Session {
                    user: s.user,
                    csrf: s.csrf,
                }),
                // Expired or signed out: the page shows its login form again.
                Ok(None) => Err(Refusal::Unauthorized),
                Err(_) => Err(Refusal::Unavailable),
            };
        }
        Err(Refusal::Unauthorized)
    }

    /// HTTP Basic, remembered for [`REMEMBER`] once verified.
    async fn basic(&self, addr: IpAddr, header: &str) -> Result<User, Refusal> {
        let digest: [u8; 32] = Sha256::digest(header.as_bytes()).into();
        {
            let mut map = self.remembered.lock().unwrap_or_else(|e| e.into_inner());
            match map.get(&digest) {
                Some((user, at)) if at.elapsed() < REMEMBER => return Ok(user.clone()),
                Some(_) => {
                    map.remove(&digest);
                }
                None => {}
            }
        }
        let Some((name, password)) = parse_basic(header) else {
            self.slow_down(&[format!("addr {addr}")]).await;
            return Err(Refusal::Unauthorized);
        };
        let user = self.password(addr, &name, password).await?;
        let mut map = self.remembered.lock().unwrap_or_else(|e| e.into_inner());
        insert_bounded(
            &mut map,
            MAX_REMEMBERED,
            digest,
            (user.clone(), Instant::now()),
            |(_, at)| *at,
        );
        Ok(user)
    }

    /// Check a name and password (Basic, the login form), with the back-off.
    pub async fn password(
        &self,
        addr: IpAddr,
        name: &str,
        password: String,
    ) -> Result<User, Refusal> {
        let keys = [format!("addr {addr}"), format!("user {name}")];
        // A client already failing waits before its next try is even checked.
        let before = keys.iter().map(|k| self.failures_of(k)).max().unwrap_or(0);
        tokio::time::sleep(delay_for(before)).await;
        let permit = self
            .verifying
            .acquire()
            .await
            .map_err(|_| Refusal::Unavailable)?;
        let users = self.users.clone();
        let checked = {
            let name = name.to_string();
            tokio::task::spawn_blocking(move || users.verify(&name, &password))
                .await
                .map_err(|_| Refusal::Unavailable)?
        };
        drop(permit);
        match checked {
            Ok(Some(user)) => {
                self.succeed(&keys);
                Ok(user)
            }
            Ok(None) => {
                let n = self.fail(&keys);
                tracing::warn!(%addr, user = %name, failures = n, "http: wrong user name or password");
                tokio::time::sleep(delay_for(n).saturating_sub(delay_for(before))).await;
                Err(Refusal::Unauthorized)
            }
            Err(_) => Err(Refusal::Unavailable),
        }
    }

    async fn slow_down(&self, keys: &[String]) {
        let n = self.fail(keys);
        tokio::time::sleep(delay_for(n)).await;
    }
}

/// The credentials of an `Authorization` header of `scheme` (any case).
fn strip_scheme<'a>(header: &'a str, scheme: &str) -> Option<&'a str> {
    let (s, rest) = header.trim().split_once(' ')?;
    (s.eq_ignore_ascii_case(scheme) && rest.len() <= 4096).then(|| rest.trim())
}

/// `Basic base64(name:password)` → (name, password).
pub fn parse_basic(header: &str) -> Option<(String, String)> {
    let rest = strip_scheme(header, "basic")?;
    let raw = base64::engine::general_purpose::STANDARD
        .decode(rest)
        .ok()?;
    let text = String::from_utf8(raw).ok()?;
    let (name, password) = text.split_once(':')?;
    Some((name.to_string(), password.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn back_off_doubles_to_its_cap() {
        let d: Vec<u64> = (0..9).map(|n| delay_for(n).as_secs()).collect();
        assert_eq!(d, [0, 1, 2, 4, 8, 16, 30, 30, 30]);
    }

    #[test]
    fn basic_headers_parse_and_garbage_does_not() {
        assert_eq!(
            parse_basic("Basic YWxpY2U6czNjcmV0OnRvbw=="),
            Some(("alice".into(), "s3cret:too".into()))
        );
        assert_eq!(parse_basic("Bearer abc"), None);
        assert_eq!(parse_basic("Basic !!!"), None);
        assert_eq!(parse_basic("Basic"), None);
        assert_eq!(parse_basic("Basic bm9jb2xvbg=="), None);
    }

    #[test]
    fn bounded_maps_drop_their_oldest() {
        let mut m = HashMap::new();
        let t0 = Instant::now();
        for i in 0..10u32 {
            insert_bounded(&mut m, 4, i, t0 + Duration::from_secs(u64::from(i)), |t| *t);
        }
        assert_eq!(m.len(), 4);
        assert!(m.contains_key(&9) && !m.contains_key(&5));
    }
}
