//! The people who may use the HTTP API and page: a name, a role (`admin` changes things,
//! `viewer` reads) and an argon2id password hash, in the `users` table of the events
//! database. Passwords never appear in argv or logs: the CLI reads them from stdin.
//! Also how they stay signed in: browser sessions (from the login form) and API tokens
//! (`nvr-edge user token`), each a random token stored by its SHA-256 only.

use std::path::Path;
use std::str::FromStr;
use std::sync::{Mutex, MutexGuard};

use rusqlite::{params, Connection, OptionalExtension};
use serde::Serialize;

use crate::store::{self, StoreError};

/// Shortest password accepted: a household's box on a LAN, not a bank, but not `1234`.
pub const MIN_PASSWORD: usize = 8;
/// Longest password accepted (argon2 hashes anything; this bounds the work per request).
pub const MAX_PASSWORD: usize = 1024;
/// Sessions one user keeps at most (phones, laptops); a new login ends the oldest.
pub const MAX_SESSIONS_PER_USER: i64 = 16;
/// API tokens one user holds at most.
pub const MAX_TOKENS_PER_USER: i64 = 16;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Admin,
    Viewer,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Admin => "admin",
            Role::Viewer => "viewer",
        }
    }
}

impl FromStr for Role {
    type Err = UserError;
    fn from_str(s: &str) -> Result<Self, UserError> {
        match s {
            "admin" => Ok(Role::Admin),
            "viewer" => Ok(Role::Viewer),
            other => Err(UserError::Invalid(format!(
                "role {other:?}: admin or viewer"
            ))),
        }
    }
}

/// A user as listed (never with the hash).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct User {
    pub id: i64,
    pub name: String,
    pub role: Role,
    pub created_at: i64,
}

/// A signed-in browser: whose, the token its changes must carry, and until when.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Session {
    pub user: User,
    pub csrf: String,
    pub expires_at: i64,
}

#[derive(Debug, thiserror::Error)]
pub enum UserError {
    /// The caller's input is wrong; the message names what.
    #[error("{0}")]
    Invalid(String),
    #[error("no user {0:?}")]
    NoUser(String),
    #[error("user {0:?} exists")]
    Exists(String),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("database")]
    Sql(#[from] rusqlite::Error),
}

impl UserError {
    /// True when the caller's input was at fault (CLI exit status 2).
    pub fn is_input_error(&self) -> bool {
        matches!(
            self,
            UserError::Invalid(_) | UserError::NoUser(_) | UserError::Exists(_)
        )
    }
}

pub struct UserStore {
    conn: Mutex<Connection>,
}

fn check_name(name: &str) -> Result<(), UserError> {
    let ok = !name.is_empty()
        && name.len() <= 32
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
    if ok {
        Ok(())
    } else {
        Err(UserError::Invalid(format!(
            "user name {name:?}: 1-32 characters of A-Z a-z 0-9 . _ -"
        )))
    }
}

fn check_password(password: &str) -> Result<(), UserError> {
    let n = password.chars().count();
    if n < MIN_PASSWORD || password.len() > MAX_PASSWORD {
        return Err(UserError::Invalid(format!(
            "password: {MIN_PASSWORD} to {MAX_PASSWORD} characters"
        )));
    }
    if password.chars().any(char::is_control) {
        return Err(UserError::Invalid("password: no control characters".into()));
    }
    Ok(())
}

/// A user from its row; a role edited by hand to something else is a viewer, never more.
fn user_from(id: i64, name: String, role: &str, created_at: i64) -> User {
    User {
        id,
        name,
        role: role.parse().unwrap_or(Role::Viewer),
        created_at,
    }
}

impl UserStore {
    /// Open `<data_dir>/nvr-edge.db` (migrating it).
    pub fn open_in(data_dir: &Path) -> Result<Self, UserError> {
        Ok(Self {
            conn: Mutex::new(store::open_in(data_dir)?),
        })
    }

    fn conn(&self) -> MutexGuard<'_, Connection> {
        self.conn.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Add a user; the password is hashed here (argon2id) and never stored as given.
    pub fn add(
        &self,
        name: &str,
        role: Role,
        password: &str,
        now_secs: i64,
    ) -> Result<i64, UserError> {
        check_name(name)?;
        check_password(password)?;
        let hash = crate::secret::hash(password);
        let conn = self.conn();
        match conn.execute(
            "INSERT INTO users (name, role, password_hash, created_at) VALUES (?1, ?2, ?3, ?4)",
            params![name, role.as_str(), hash, now_secs],
        ) {
            Err(rusqlite::Error::SqliteFailure(e, _))
                if e.code == rusqlite::ErrorCode::ConstraintViolation =>
            {
                Err(UserError::Exists(name.to_string()))
            }
            r => {
                r?;
                Ok(conn.last_insert_rowid())
            }
        }
    }

    pub fn list(&self) -> Result<Vec<User>, UserError> {
        let conn = self.conn();
        let mut stmt = conn.prepare("SELECT id, name, role, created_at FROM users ORDER BY id")?;
        let rows = stmt.query_map([], |r| {
            Ok((
                r.get::<_, i64>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, String>(2)?,
                r.get::<_, i64>(3)?,
            ))
        })?;
        let mut out = Vec::new();
        for row in rows {
            let (id, name, role, created_at) = row?;
            // The CHECK constraint keeps roles to the two; a row edited by hand to another
            // is shown as a viewer, never as more.
            let role = role.parse().unwrap_or(Role::Viewer);
            out.push(User {
                id,
                name,
                role,
                created_at,
            });
        }
        Ok(out)
    }

    pub fn count(&self) -> Result<usize, UserError> {
        let n: i64 = self
            .conn()
            .query_row("SELECT COUNT(*) FROM users", [], |r| r.get(0))?;
        Ok(n as usize)
    }

    pub fn remove(&self, name: &str) -> Result<(), UserError> {
        let n = self
            .conn()
            .execute("DELETE FROM users WHERE name = ?1", [name])?;
        if n == 0 {
            return Err(UserError::NoUser(name.to_string()));
        }
        Ok(())
    }

    pub fn set_password(&self, name: &str, password: &str) -> Result<(), UserError> {
        check_password(password)?;
        let hash = crate::secret::hash(password);
        let conn = self.conn();
        let n = conn.execute(
            "UPDATE users SET password_hash = ?2 WHERE name = ?1",
            params![name, hash],
        )?;
        if n == 0 {
            return Err(UserError::NoUser(name.to_string()));
        }
        // A new password signs every browser out (someone else may have known the old one).
        conn.execute(
            "DELETE FROM sessions WHERE user_id = (SELECT id FROM users WHERE name = ?1)",
            [name],
        )?;
        Ok(())
    }

    /// Sign `user` in for `ttl_secs`: returns the session token (for the cookie) and the
    /// session. The user's oldest sessions beyond [`MAX_SESSIONS_PER_USER`] and every
    /// expired one are dropped, so the table stays bounded.
    pub fn start_session(
        &self,
        user: &User,
        now: i64,
        ttl_secs: i64,
    ) -> Result<(String, Session), UserError> {
        let token = crate::secret::random_token();
        let csrf = crate::secret::random_token();
        let expires_at = now.saturating_add(ttl_secs);
        let conn = self.conn();
        conn.execute("DELETE FROM sessions WHERE expires_at <= ?1", [now])?;
        conn.execute(
            "DELETE FROM sessions WHERE user_id = ?1 AND id NOT IN \
             (SELECT id FROM sessions WHERE user_id = ?1 ORDER BY id DESC LIMIT ?2)",
            params![user.id, MAX_SESSIONS_PER_USER - 1],
        )?;
        conn.execute(
            "INSERT INTO sessions (token_sha256, user_id, csrf, created_at, expires_at) \
             VALUES (?1, ?2, ?3, ?4, ?5)",
            params![
                &crate::secret::token_digest(&token)[..],
                user.id,
                csrf,
                now,
                expires_at
            ],
        )?;
        let session = Session {
            user: user.clone(),
            csrf,
            expires_at,
        };
        Ok((token, session))
    }

    /// The live session `token` names.
    pub fn session(&self, token: &str, now: i64) -> Result<Option<Session>, UserError> {
        let row = self
            .conn()
            .query_row(
                "SELECT u.id, u.name, u.role, u.created_at, s.csrf, s.expires_at \
                 FROM sessions s JOIN users u ON u.id = s.user_id \
                 WHERE s.token_sha256 = ?1 AND s.expires_at > ?2",
                params![&crate::secret::token_digest(token)[..], now],
                |r| {
                    Ok(Session {
                        user: user_from(r.get(0)?, r.get(1)?, &r.get::<_, String>(2)?, r.get(3)?),
                        csrf: r.get(4)?,
                        expires_at: r.get(5)?,
                    })
                },
            )
            .optional()?;
        Ok(row)
    }

    /// Sign a browser out.
    pub fn end_session(&self, token: &str) -> Result<(), UserError> {
        self.conn().execute(
            "DELETE FROM sessions WHERE token_sha256 = ?1",
            [&crate::secret::token_digest(token)[..]],
        )?;
        Ok(())
    }

    /// A new API token for `name`, shown once (only its digest is kept).
    pub fn add_token(&self, name: &str, label: &str, now: i64) -> Result<String, UserError> {
        if label.len() > 64 || label.chars().any(char::is_control) {
            return Err(UserError::Invalid(
                "token label: at most 64 characters, no control characters".into(),
            ));
        }
        let conn = self.conn();
        let user_id: i64 = conn
            .query_row("SELECT id FROM users WHERE name = ?1", [name], |r| r.get(0))
            .optional()?
            .ok_or_else(|| UserError::NoUser(name.to_string()))?;
        let held: i64 = conn.query_row(
            "SELECT COUNT(*) FROM api_tokens WHERE user_id = ?1",
            [user_id],
            |r| r.get(0),
        )?;
        if held >= MAX_TOKENS_PER_USER {
            return Err(UserError::Invalid(format!(
                "user {name:?} holds {held} tokens already; revoke them first \
                 (`nvr-edge user revoke-tokens {name}`)"
            )));
        }
        let token = crate::secret::random_token();
        conn.execute(
            "INSERT INTO api_tokens (token_sha256, user_id, label, created_at) VALUES (?1, ?2, ?3, ?4)",
            params![&crate::secret::token_digest(&token)[..], user_id, label, now],
        )?;
        Ok(token)
    }

    /// The user an API token belongs to.
    pub fn token_user(&self, token: &str) -> Result<Option<User>, UserError> {
        Ok(self
            .conn()
            .query_row(
                "SELECT u.id, u.name, u.role, u.created_at FROM api_tokens t \
                 JOIN users u ON u.id = t.user_id WHERE t.token_sha256 = ?1",
                [&crate::secret::token_digest(token)[..]],
                |r| {
                    Ok(user_from(
                        r.get(0)?,
                        r.get(1)?,
                        &r.get::<_, String>(2)?,
                        r.get(3)?,
                    ))
                },
            )
            .optional()?)
    }

    /// Revoke every API token of `name`; returns how many.
    pub fn revoke_tokens(&self, name: &str) -> Result<usize, UserError> {
        let conn = self.conn();
        let exists: Option<i64> = conn
            .query_row("SELECT id FROM users WHERE name = ?1", [name], |r| r.get(0))
            .optional()?;
        let id = exists.ok_or_else(|| UserError::NoUser(name.to_string()))?;
        Ok(conn.execute("DELETE FROM api_tokens WHERE user_id = ?1", [id])?)
    }

    /// The user `name` when `password` is theirs. Costs one argon2 verification (tens of
    /// milliseconds): callers run it off any latency-sensitive thread and bound how many run
    /// at once. An unknown name costs the same as a wrong password, so timing does not tell
    /// which names exist.
    pub fn verify(&self, name: &str, password: &str) -> Result<Option<User>, UserError> {
        let row = self
            .conn()
            .query_row(
                "SELECT id, role, created_at, password_hash FROM users WHERE name = ?1",
                [name],
                |r| {
                    Ok((
                        r.get::<_, i64>(0)?,
                        r.get::<_, String>(1)?,
                        r.get::<_, i64>(2)?,
                        r.get::<_, String>(3)?,
                    ))
                },
            )
            .optional()?;
        match row {
            Some((id, role, created_at, hash)) => {
                Ok(crate::secret::verify(&hash, password).then(|| User {
                    id,
                    name: name.to_string(),
                    role: role.parse().unwrap_or(Role::Viewer),
                    created_at,
                }))
            }
            None => {
                // Spend the same work on a name that does not exist.
                static DUMMY: std::sync::OnceLock<String> = std::sync::OnceLock::new();
                let dummy = DUMMY.get_or_init(|| crate::secret::hash("no such user"));
                let _ = crate::secret::verify(dummy, password);
                Ok(None)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sessions_expire_end_and_are_bounded_per_user() {
        let dir = tempfile::tempdir().unwrap();
        let users = UserStore::open_in(dir.path()).unwrap();
        users.add("ann", Role::Admin, "ann's password", 0).unwrap();
        let ann = users.verify("ann", "ann's password").unwrap().unwrap();
        let (token, s) = users.start_session(&ann, 1000, 60).unwrap();
        assert_eq!(s.expires_at, 1060);
        assert_eq!(users.session(&token, 1059).unwrap().unwrap().csrf, s.csrf);
        assert!(users.session(&token, 1060).unwrap().is_none(), "expired");
        assert!(users.session("forged", 1000).unwrap().is_none());
        // A user's oldest sessions make room for new ones.
        let first = users.start_session(&ann, 2000, 60).unwrap().0;
        let mut last = String::new();
        for _ in 0..MAX_SESSIONS_PER_USER {
            last = users.start_session(&ann, 2000, 60).unwrap().0;
        }
        assert!(users.session(&first, 2001).unwrap().is_none());
        assert!(users.session(&last, 2001).unwrap().is_some());
        let n: i64 = users
            .conn()
            .query_row("SELECT COUNT(*) FROM sessions", [], |r| r.get(0))
            .unwrap();
        assert_eq!(n, MAX_SESSIONS_PER_USER);
        users.end_session(&last).unwrap();
        assert!(users.session(&last, 2001).unwrap().is_none());
        // A new password signs every browser out; removing the user ends the rest.
        let kept = users.start_session(&ann, 3000, 60).unwrap().0;
        users.set_password("ann", "a new password").unwrap();
        assert!(users.session(&kept, 3001).unwrap().is_none());
    }

    #[test]
    fn tokens_name_their_user_until_revoked() {
        let dir = tempfile::tempdir().unwrap();
        let users = UserStore::open_in(dir.path()).unwrap();
        users.add("vic", Role::Viewer, "vic's password", 0).unwrap();
        let t = users.add_token("vic", "grafana", 5).unwrap();
        assert_eq!(users.token_user(&t).unwrap().unwrap().name, "vic");
        assert!(users.add_token("nobody", "", 5).is_err());
        assert!(users.add_token("vic", "bad\nlabel", 5).is_err());
        assert_eq!(users.revoke_tokens("vic").unwrap(), 1);
        assert!(users.token_user(&t).unwrap().is_none());
        for _ in 0..MAX_TOKENS_PER_USER {
            users.add_token("vic", "", 5).unwrap();
        }
        let e = users.add_token("vic", "", 5).unwrap_err();
        assert!(e.to_string().contains("revoke"), "{e}");
        // Removing the user removes their tokens with them.
        let t = {
            users.revoke_tokens("vic").unwrap();
            users.add_token("vic", "", 5).unwrap()
        };
        users.remove("vic").unwrap();
        assert!(users.token_user(&t).unwrap().is_none());
    }
}
