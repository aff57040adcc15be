//! Events: one per period of motion on a camera, with the most serious thing X-CLIP saw
//! during it. Stored in SQLite, each write its own transaction, so a crash loses at most
//! the event being written; retention by row count and age keeps the table bounded.

use std::path::Path;
use std::sync::{Mutex, MutexGuard};

use rusqlite::{params, Connection, OptionalExtension, Row};
use serde::Serialize;

use crate::config::Retention;
use crate::inference::{ClipResult, Risk};
use crate::store::{self, StoreError};

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Event {
    pub id: i64,
    pub camera: String,
    pub start_us: i64,
    pub end_us: Option<i64>,
    pub action: Option<String>,
    pub category: Option<String>,
    /// What the event is ranked by: X-CLIP's risk, lowered when the household says so.
    pub risk: Option<Risk>,
    /// X-CLIP's risk before the household was taken into account.
    pub model_risk: Option<Risk>,
    /// Why `risk` differs from `model_risk` (who was recognised).
    pub risk_note: Option<String>,
    pub confidence: Option<f32>,
    pub clips: u32,
    pub household: Option<serde_json::Value>,
    pub model: Option<String>,
    pub model_placeholder: bool,
    /// The event's video file under `<data_dir>/clips/`, when one was started.
    pub video: Option<Video>,
    /// Closed at a start after the process died with the event open: `end_us` is the
    /// last time it was known to be going on.
    pub interrupted: bool,
    /// Whether a snapshot (the event's best frame) is stored.
    pub snapshot: bool,
}

/// Where an event's recording stands (see `recording`).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Video {
    pub file: String,
    /// recording | complete | interrupted | deleted | failed
    pub state: String,
    pub frames: Option<u32>,
    pub bytes: Option<u64>,
    pub error: Option<String>,
}

fn row_to_event(r: &Row<'_>) -> rusqlite::Result<Event> {
    Ok(Event {
        id: r.get(0)?,
        camera: r.get(1)?,
        start_us: r.get(2)?,
        end_us: r.get(3)?,
        action: r.get(4)?,
        category: r.get(5)?,
        risk: r
            .get::<_, Option<String>>(6)?
            .as_deref()
            .and_then(Risk::parse),
        confidence: r.get::<_, Option<f64>>(7)?.map(|c| c as f32),
        clips: r.get(8)?,
        household: r
            .get::<_, Option<String>>(9)?
            .and_then(|s| serde_json::from_str(&s).ok()),
        model: r.get(10)?,
        model_placeholder: r.get(11)?,
        video: match r.get::<_, Option<String>>(12)? {
            Some(file) => Some(Video {
                file,
                state: r
                    .get::<_, Option<String>>(13)?
                    .unwrap_or_else(|| "recording".into()),
                frames: r.get(14)?,
                bytes: r.get::<_, Option<i64>>(15)?.map(|b| b as u64),
                error: r.get(16)?,
            }),
            None => None,
        },
        model_risk: r
            .get::<_, Option<String>>(17)?
            .as_deref()
            .and_then(Risk::parse),
        risk_note: r.get(18)?,
        interrupted: r.get(19)?,
        snapshot: r.get(20)?,
    })
}

const COLUMNS: &str = "id, camera, start_us, end_us, action, category, risk, confidence, clips, household, model, model_placeholder, video, video_state, video_frames, video_bytes, video_error, model_risk, risk_note, interrupted, snapshot IS NOT NULL";

/// Turns X-CLIP's risk into the event's, with the reason when it changes it.
pub type Lowering<'a> = dyn Fn(Risk) -> (Risk, Option<String>) + 'a;

/// No household information: the event's risk is X-CLIP's.
pub fn unchanged(r: Risk) -> (Risk, Option<String>) {
    (r, None)
}

/// What [`EventStore::query`] selects; `None` fields do not filter.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct EventQuery {
    pub camera: Option<String>,
    /// Started at or after (wall µs).
    pub since_us: Option<i64>,
    /// Started before (wall µs).
    pub until_us: Option<i64>,
    /// Ranked at least this risky (events without a risk never match).
    pub min_risk: Option<Risk>,
    /// Older than this event (the previous page's last id).
    pub before_id: Option<i64>,
    /// The household recognised this member in the event.
    pub member: Option<i64>,
    pub limit: u32,
}

/// The category of a camera-outage event (a camera that stopped delivering frames).
pub const OUTAGE_CATEGORY: &str = "camera_outage";
/// Its action.
pub const OUTAGE_ACTION: &str = "camera stopped delivering frames";
/// Why its risk is not X-CLIP's.
const OUTAGE_NOTE: &str = "camera outage: no model's judgement";

/// Events dropped, oldest first, when the database cannot grow to store a new one.
const ROWS_FREED_WHEN_FULL: u32 = 32;

pub struct EventStore {
    conn: Mutex<Connection>,
    retention: Retention,
}

/// An event just opened, and the finished videos of the events dropped to make room for it
/// (retention, or a full database). The store knows video files only by name: the
/// recording side deletes them (`recording::remove_videos`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Opened {
    pub id: i64,
    pub dropped_videos: Vec<String>,
}

/// What [`EventStore::delete`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Deleted {
    Done { videos: Vec<String> },
    NoSuchEvent,
    StillOpen,
}

impl EventStore {
    pub fn open_in(data_dir: &Path, retention: Retention) -> Result<Self, StoreError> {
        Ok(Self {
            conn: Mutex::new(store::open_in(data_dir)?),
            retention,
        })
    }

    fn conn(&self) -> MutexGuard<'_, Connection> {
        self.conn.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Open an event; returns its id and the videos of the events dropped for it.
    pub fn start(&self, camera: &str, start_us: i64) -> Result<Opened, StoreError> {
        self.open(camera, start_us, false)
    }

    /// Open a camera-outage event: `camera` stopped delivering frames at `start_us` (it
    /// ends when frames come again). Its own kind ([`OUTAGE_CATEGORY`]), ranked medium:
    /// a camera unplugged may be someone's doing, and may be on purpose.
    pub fn start_outage(&self, camera: &str, start_us: i64) -> Result<Opened, StoreError> {
        self.open(camera, start_us, true)
    }

    fn open(&self, camera: &str, start_us: i64, outage: bool) -> Result<Opened, StoreError> {
        let conn = self.conn();
        // A motion event's description comes from its clips later (NULL until then); an
        // outage's is known at once.
        let (action, category, risk, note) = if outage {
            (
                Some(OUTAGE_ACTION),
                Some(OUTAGE_CATEGORY),
                Some(Risk::Medium.as_str()),
                Some(OUTAGE_NOTE),
            )
        } else {
            (None, None, None, None)
        };
        let insert =
            || {
                conn.execute(
                "INSERT INTO events (camera, start_us, created_at, updated_us, action, category, \
                 risk, risk_note) VALUES (?1, ?2, ?3, ?2, ?4, ?5, ?6, ?7)",
                params![camera, start_us, start_us / 1_000_000, action, category, risk, note],
            )
            };
        let mut dropped_videos = Vec::new();
        match insert() {
            // The disk filled (recording.min_free_mb keeps room for the database, but
            // something else may take it): the oldest events make room for the new one,
            // as retention would, rather than the new one being lost.
            Err(rusqlite::Error::SqliteFailure(e, _))
                if e.code == rusqlite::ErrorCode::DiskFull =>
            {
                let dropped = self.drop_oldest(&conn, ROWS_FREED_WHEN_FULL, &mut dropped_videos)?;
                tracing::warn!(
                    dropped,
                    "database full: the oldest events were dropped to store a new one"
                );
                insert()?;
            }
            r => {
                r?;
            }
        }
        let id = conn.last_insert_rowid();
        self.prune(&conn, start_us, &mut dropped_videos)?;
        Ok(Opened { id, dropped_videos })
    }

    /// Record a clip's result: the event keeps the most serious result (X-CLIP's risk,
    /// then confidence) of all its clips; `lower` turns that risk into the event's (see
    /// `household::identity`).
    pub fn add_clip(
        &self,
        id: i64,
        r: &ClipResult,
        lower: &Lowering<'_>,
    ) -> Result<(), StoreError> {
        let conn = self.conn();
        let current: Option<(Option<String>, Option<f64>)> = conn
            .query_row(
                "SELECT model_risk, confidence FROM events WHERE id = ?1",
                [id],
                |row| Ok((row.get(0)?, row.get(1)?)),
            )
            .optional()?;
        let Some((risk, conf)) = current else {
            return Ok(());
        };
        let c = &r.classification;
        let old = (
            risk.as_deref().and_then(Risk::parse),
            conf.unwrap_or(-1.0) as f32,
        );
        let new = (c.risk, c.confidence);
        let better = match (new.0, old.0) {
            (Some(n), Some(o)) if n != o => n > o,
            (Some(_), None) => true,
            (None, Some(_)) => false,
            _ => new.1 > old.1,
        };
        if better || conf.is_none() {
            let (risk, note) = match c.risk.map(lower) {
                Some((r, n)) => (Some(r), n),
                None => (None, None),
            };
            conn.execute(
                "UPDATE events SET action = ?2, category = ?3, risk = ?4, confidence = ?5, \
                 model = ?6, model_placeholder = ?7, clips = clips + 1, model_risk = ?8, \
                 risk_note = ?9 WHERE id = ?1",
                params![
                    id,
                    c.detected_action,
                    c.category,
                    risk.map(Risk::as_str),
                    f64::from(c.confidence),
                    r.model,
                    r.placeholder_model,
                    c.risk.map(Risk::as_str),
                    note
                ],
            )?;
        } else {
            conn.execute("UPDATE events SET clips = clips + 1 WHERE id = ?1", [id])?;
        }
        Ok(())
    }

    /// Record who the household recognised in event `id` (JSON), and rank the event again
    /// from X-CLIP's risk through `lower`.
    pub fn set_household(
        &self,
        id: i64,
        household: &serde_json::Value,
        lower: &Lowering<'_>,
    ) -> Result<(), StoreError> {
        let conn = self.conn();
        let model_risk: Option<Option<String>> = conn
            .query_row("SELECT model_risk FROM events WHERE id = ?1", [id], |r| {
                r.get(0)
            })
            .optional()?;
        let Some(model_risk) = model_risk else {
            return Ok(());
        };
        let (risk, note) = match model_risk.as_deref().and_then(Risk::parse).map(lower) {
            Some((r, n)) => (Some(r), n),
            None => (None, None),
        };
        conn.execute(
            "UPDATE events SET household = ?2, risk = COALESCE(?3, risk), risk_note = ?4 WHERE id = ?1",
            params![id, household.to_string(), risk.map(Risk::as_str), note],
        )?;
        Ok(())
    }

    /// Event `id` is still going on at `now_us`: what its end becomes if the process dies
    /// before it closes the event.
    pub fn touch(&self, id: i64, now_us: i64) -> Result<(), StoreError> {
        self.conn().execute(
            "UPDATE events SET updated_us = MAX(COALESCE(updated_us, start_us), ?2) \
             WHERE id = ?1 AND end_us IS NULL",
            params![id, now_us],
        )?;
        Ok(())
    }

    /// At start: events a previous process left open (killed, power cut) are closed at
    /// the last time they were known to be going on, and marked interrupted. Returns how
    /// many.
    pub fn close_interrupted(&self) -> Result<usize, StoreError> {
        Ok(self.conn().execute(
            "UPDATE events SET end_us = MAX(start_us, COALESCE(updated_us, start_us)), \
             interrupted = 1 WHERE end_us IS NULL",
            [],
        )?)
    }

    pub fn end(&self, id: i64, end_us: i64) -> Result<(), StoreError> {
        self.conn().execute(
            "UPDATE events SET end_us = ?2 WHERE id = ?1 AND end_us IS NULL",
            params![id, end_us],
        )?;
        Ok(())
    }

    /// A recording of event `id` is being written to `file`.
    pub fn video_started(&self, id: i64, file: &str) -> Result<(), StoreError> {
        self.conn().execute(
            "UPDATE events SET video = ?2, video_state = 'recording', video_frames = NULL, \
             video_bytes = NULL, video_error = NULL WHERE id = ?1",
            params![id, file],
        )?;
        Ok(())
    }

    pub fn video_finished(&self, id: i64, frames: u32, bytes: u64) -> Result<(), StoreError> {
        self.conn().execute(
            "UPDATE events SET video_state = 'complete', video_frames = ?2, video_bytes = ?3 \
             WHERE id = ?1",
            params![id, frames, bytes as i64],
        )?;
        Ok(())
    }

    pub fn video_failed(&self, id: i64, error: &str) -> Result<(), StoreError> {
        self.conn().execute(
            "UPDATE events SET video_state = 'failed', video_error = ?2 WHERE id = ?1",
            params![id, error],
        )?;
        Ok(())
    }

    /// The recording `file` was deleted to keep the clips directory within its budget.
    pub fn video_deleted(&self, file: &str) -> Result<(), StoreError> {
        self.conn().execute(
            "UPDATE events SET video_state = 'deleted' WHERE video = ?1",
            [file],
        )?;
        Ok(())
    }

    /// At start: recordings a previous process was writing when it died. Their `.part`
    /// files are gone (see `recording::ClipDir::open`); say so. Returns how many.
    pub fn video_interrupted(&self) -> Result<usize, StoreError> {
        Ok(self.conn().execute(
            "UPDATE events SET video_state = 'interrupted' WHERE video_state = 'recording'",
            [],
        )?)
    }

    /// Newest first.
    pub fn list(&self, limit: u32, camera: Option<&str>) -> Result<Vec<Event>, StoreError> {
        let conn = self.conn();
        let mut stmt = conn.prepare(&format!(
            "SELECT {COLUMNS} FROM events WHERE (?1 IS NULL OR camera = ?1) ORDER BY start_us DESC, id DESC LIMIT ?2"
        ))?;
        let rows = stmt.query_map(params![camera, limit], row_to_event)?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Events matching `q`, newest (highest id) first; `q.before_id` pages on.
    pub fn query(&self, q: &EventQuery) -> Result<Vec<Event>, StoreError> {
        let conn = self.conn();
        let mut stmt = conn.prepare(&format!(
            "SELECT {COLUMNS} FROM events WHERE (?1 IS NULL OR camera = ?1) \
             AND (?2 IS NULL OR start_us >= ?2) AND (?3 IS NULL OR start_us < ?3) \
             AND (?4 IS NULL OR id < ?4) \
             AND (?5 IS NULL OR (CASE risk WHEN 'low' THEN 0 WHEN 'medium' THEN 1 \
                  WHEN 'high' THEN 2 WHEN 'critical' THEN 3 ELSE -1 END) >= ?5) \
             AND (?7 IS NULL OR EXISTS (SELECT 1 FROM json_each(household, '$.identified') \
                  WHERE json_extract(value, '$.kind') = 'member' \
                  AND json_extract(value, '$.member_id') = ?7)) \
             ORDER BY id DESC LIMIT ?6"
        ))?;
        let min_risk = q.min_risk.map(|r| r as i64);
        let rows = stmt.query_map(
            params![
                q.camera,
                q.since_us,
                q.until_us,
                q.before_id,
                min_risk,
                q.limit,
                q.member
            ],
            row_to_event,
        )?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    pub fn get(&self, id: i64) -> Result<Option<Event>, StoreError> {
        Ok(self
            .conn()
            .query_row(
                &format!("SELECT {COLUMNS} FROM events WHERE id = ?1"),
                [id],
                row_to_event,
            )
            .optional()?)
    }

    /// Keep `jpeg` as event `id`'s snapshot when it shows more motion (`score`, the share
    /// of the picture that changed) than the one stored, or none is. Returns whether it was
    /// stored.
    pub fn offer_snapshot(&self, id: i64, jpeg: &[u8], score: f64) -> Result<bool, StoreError> {
        let n = self.conn().execute(
            "UPDATE events SET snapshot = ?2, snapshot_score = ?3 \
             WHERE id = ?1 AND (snapshot IS NULL OR snapshot_score < ?3)",
            params![id, jpeg, score],
        )?;
        Ok(n > 0)
    }

    /// Event `id`'s snapshot: `None` for no such event, `Some(None)` when it has none.
    pub fn snapshot(&self, id: i64) -> Result<Option<Option<Vec<u8>>>, StoreError> {
        Ok(self
            .conn()
            .query_row("SELECT snapshot FROM events WHERE id = ?1", [id], |r| {
                r.get(0)
            })
            .optional()?)
    }

    /// Delete a finished event; returns its finished video's file name for the caller to
    /// remove (`recording::remove_videos`). An event still going on is not deleted.
    pub fn delete(&self, id: i64) -> Result<Deleted, StoreError> {
        let conn = self.conn();
        let open: Option<bool> = conn
            .query_row(
                "SELECT end_us IS NULL FROM events WHERE id = ?1",
                [id],
                |r| r.get(0),
            )
            .optional()?;
        match open {
            None => Ok(Deleted::NoSuchEvent),
            Some(true) => Ok(Deleted::StillOpen),
            Some(false) => {
                let mut videos = Vec::new();
                delete_returning_videos(
                    &conn,
                    "DELETE FROM events WHERE id = ?1 RETURNING video, video_state",
                    [id],
                    &mut videos,
                )?;
                Ok(Deleted::Done { videos })
            }
        }
    }

    /// Delete the `n` oldest events; returns how many went, their videos added to `videos`.
    fn drop_oldest(
        &self,
        conn: &Connection,
        n: u32,
        videos: &mut Vec<String>,
    ) -> Result<usize, StoreError> {
        delete_returning_videos(
            conn,
            "DELETE FROM events WHERE id IN (SELECT id FROM events ORDER BY id LIMIT ?1) \
             RETURNING video, video_state",
            params![n],
            videos,
        )
    }

    fn prune(
        &self,
        conn: &Connection,
        now_us: i64,
        videos: &mut Vec<String>,
    ) -> Result<(), StoreError> {
        let max_age_us = i64::from(self.retention.max_age_days) * 86_400 * 1_000_000;
        delete_returning_videos(
            conn,
            "DELETE FROM events WHERE start_us < ?1 OR id NOT IN (SELECT id FROM events ORDER BY id DESC LIMIT ?2) \
             RETURNING video, video_state",
            params![now_us - max_age_us, self.retention.max_rows],
            videos,
        )?;
        Ok(())
    }
}

/// Run a `DELETE ... RETURNING video, video_state`; returns how many rows went, and adds
/// to `videos` the finished videos of those rows (a video still being written is not under
/// its final name yet: the disk budget takes it later).
fn delete_returning_videos(
    conn: &Connection,
    sql: &str,
    args: impl rusqlite::Params,
    videos: &mut Vec<String>,
) -> Result<usize, StoreError> {
    let mut stmt = conn.prepare(sql)?;
    let dropped = stmt
        .query_map(args, |r| {
            Ok((
                r.get::<_, Option<String>>(0)?,
                r.get::<_, Option<String>>(1)?,
            ))
        })?
        .collect::<Result<Vec<_>, _>>()?;
    let count = dropped.len();
    for (file, state) in dropped {
        if let (Some(file), Some("complete" | "failed" | "interrupted")) = (file, state.as_deref())
        {
            videos.push(file);
        }
    }
    Ok(count)
}
