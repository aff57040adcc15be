//! The SQLite database: opening it the same way everywhere (WAL, foreign keys, busy
//! timeout), versioned migrations, and integrity checks. Tables belong to the modules
//! that use them (`household`, `events`, ...); their schema lives in `migrations/`.
//!
//! Each migration runs in its own transaction together with the `user_version` bump, so
//! a power cut mid-upgrade leaves the database at the previous version, never between.

use std::path::{Path, PathBuf};
use std::time::Duration;

use rusqlite::Connection;

/// Migrations in order; index + 1 is the schema version each one produces.
const MIGRATIONS: &[&str] = &[
    include_str!("migrations/0001_household.sql"),
    include_str!("migrations/0002_vehicles.sql"),
    include_str!("migrations/0003_text_embeddings.sql"),
    include_str!("migrations/0004_events.sql"),
    include_str!("migrations/0005_event_video.sql"),
    include_str!("migrations/0006_event_identity.sql"),
    include_str!("migrations/0007_negative_embeddings.sql"),
    include_str!("migrations/0008_event_interrupted.sql"),
    include_str!("migrations/0009_users.sql"),
    include_str!("migrations/0010_sessions.sql"),
    include_str!("migrations/0011_event_snapshot.sql"),
    include_str!("migrations/0012_mqtt_outbox.sql"),
];

/// Schema version this build writes.
pub const SCHEMA_VERSION: u32 = MIGRATIONS.len() as u32;

/// File name inside `storage.data_dir`.
pub const DB_FILE: &str = "nvr-edge.db";

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database {path}")]
    Open {
        path: PathBuf,
        #[source]
        source: rusqlite::Error,
    },
    #[error("cannot create data directory {path}")]
    DataDir {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("database schema version {found} is newer than this build's {supported}; refusing to touch it")]
    TooNew { found: u32, supported: u32 },
    #[error("migration to schema version {version}")]
    Migration {
        version: u32,
        #[source]
        source: rusqlite::Error,
    },
    #[error(transparent)]
    Sql(#[from] rusqlite::Error),
}

/// Open (creating if needed) `<data_dir>/nvr-edge.db` and bring it to the latest schema.
pub fn open_in(data_dir: &Path) -> Result<Connection, StoreError> {
    std::fs::create_dir_all(data_dir).map_err(|source| StoreError::DataDir {
        path: data_dir.to_path_buf(),
        source,
    })?;
    open(&data_dir.join(DB_FILE))
}

/// Open a database file and bring it to the latest schema.
pub fn open(path: &Path) -> Result<Connection, StoreError> {
    let conn = open_unmigrated(path)?;
    migrate(&conn, SCHEMA_VERSION)?;
    Ok(conn)
}

/// Open with the connection settings but without migrating (tests build old versions).
pub fn open_unmigrated(path: &Path) -> Result<Connection, StoreError> {
    let wrap = |source| StoreError::Open {
        path: path.to_path_buf(),
        source,
    };
    let conn = Connection::open(path).map_err(wrap)?;
    conn.busy_timeout(Duration::from_secs(5)).map_err(wrap)?;
    conn.pragma_update(None, "foreign_keys", "ON")
        .map_err(wrap)?;
    // WAL: readers never block the writer; NORMAL sync is durable across process
    // crashes and loses at most the last commits on power loss.
    // Switching a new database to WAL takes an exclusive lock and does not wait on the
    // busy handler: when another process opens the same new file at that moment, retry.
    let mut tries = 0;
    let mode: String = loop {
        match conn.query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0)) {
            Err(rusqlite::Error::SqliteFailure(e, _))
                if e.code == rusqlite::ErrorCode::DatabaseBusy && tries < 100 =>
            {
                tries += 1;
                std::thread::sleep(Duration::from_millis(50));
            }
            other => break other.map_err(wrap)?,
        }
    };
    if !mode.eq_ignore_ascii_case("wal") && !mode.eq_ignore_ascii_case("memory") {
        tracing::warn!(path = %path.display(), mode, "database not in WAL mode");
    }
    conn.pragma_update(None, "synchronous", "NORMAL")
        .map_err(wrap)?;
    // The WAL file keeps its largest size between checkpoints unless told otherwise; on a
    // small disk (event snapshots are written as blobs) 4 MiB of stale log is room a video
    // or the next event needs. Truncated back to 1 MiB after each checkpoint.
    conn.pragma_update(None, "journal_size_limit", 1_048_576)
        .map_err(wrap)?;
    Ok(conn)
}

pub fn schema_version(conn: &Connection) -> Result<u32, StoreError> {
    Ok(conn.query_row("PRAGMA user_version", [], |r| r.get(0))?)
}

/// Apply migrations up to `target`, each in its own transaction.
pub fn migrate(conn: &Connection, target: u32) -> Result<(), StoreError> {
    let found = schema_version(conn)?;
    if found > SCHEMA_VERSION {
        return Err(StoreError::TooNew {
            found,
            supported: SCHEMA_VERSION,
        });
    }
    for version in found + 1..=target.min(SCHEMA_VERSION) {
        let sql = MIGRATIONS[version as usize - 1];
        let apply = || -> rusqlite::Result<()> {
            conn.execute_batch("BEGIN IMMEDIATE")?;
            // Another process (the CLI while the service starts) may have applied this
            // step while we waited for the write lock: read the version again under it.
            let now: u32 = conn.query_row("PRAGMA user_version", [], |r| r.get(0))?;
            let r = if now >= version {
                Ok(())
            } else {
                conn.execute_batch(sql)
                    .and_then(|()| conn.pragma_update(None, "user_version", version))
            };
            match r {
                Ok(()) => conn.execute_batch("COMMIT"),
                Err(e) => {
                    let _ = conn.execute_batch("ROLLBACK");
                    Err(e)
                }
            }
        };
        apply().map_err(|source| StoreError::Migration { version, source })?;
        tracing::info!(version, "database migrated");
    }
    Ok(())
}

/// `PRAGMA integrity_check`: what SQLite found wrong, none when it answers "ok".
pub fn integrity_check(conn: &Connection) -> Result<Vec<String>, StoreError> {
    let mut stmt = conn.prepare("PRAGMA integrity_check")?;
    let rows: Vec<String> = stmt
        .query_map([], |r| r.get(0))?
        .collect::<Result<_, _>>()?;
    Ok(if rows.len() == 1 && rows[0] == "ok" {
        Vec::new()
    } else {
        rows
    })
}

/// Little-endian f32 bytes, the blob format of every embedding column.
pub fn to_blob(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

/// Inverse of [`to_blob`]; a trailing partial value is ignored (callers check lengths).
pub fn from_blob(b: &[u8]) -> Vec<f32> {
    b.chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect()
}
