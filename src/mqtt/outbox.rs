//! The outbox of event messages (`mqtt_outbox`, written by triggers on `events`; see
//! migration 0012): what is pending, in order, and removing what the broker acknowledged.

use std::path::Path;
use std::sync::{Mutex, MutexGuard};

use rusqlite::{params, Connection};

use crate::store::{self, StoreError};

/// One message to publish: event `event_id` became `kind` (new, update, end).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pending {
    pub seq: i64,
    pub event_id: i64,
    pub kind: String,
}

pub struct Outbox {
    conn: Mutex<Connection>,
}

impl Outbox {
    pub fn open_in(data_dir: &Path) -> Result<Self, StoreError> {
        Ok(Self {
            conn: Mutex::new(store::open_in(data_dir)?),
        })
    }

    fn conn(&self) -> MutexGuard<'_, Connection> {
        self.conn.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The oldest pending messages after `after_seq`, at most `limit`.
    pub fn pending(&self, after_seq: i64, limit: u32) -> Result<Vec<Pending>, StoreError> {
        let conn = self.conn();
        let mut stmt = conn.prepare(
            "SELECT seq, event_id, kind FROM mqtt_outbox WHERE seq > ?1 ORDER BY seq LIMIT ?2",
        )?;
        let rows = stmt.query_map(params![after_seq, limit], |r| {
            Ok(Pending {
                seq: r.get(0)?,
                event_id: r.get(1)?,
                kind: r.get(2)?,
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// The broker has message `seq`.
    pub fn done(&self, seq: i64) -> Result<(), StoreError> {
        self.conn()
            .execute("DELETE FROM mqtt_outbox WHERE seq = ?1", [seq])?;
        Ok(())
    }

    /// Messages waiting (for stats and logs).
    pub fn len(&self) -> Result<u64, StoreError> {
        Ok(self
            .conn()
            .query_row("SELECT COUNT(*) FROM mqtt_outbox", [], |r| {
                r.get::<_, i64>(0)
            })? as u64)
    }

    pub fn is_empty(&self) -> Result<bool, StoreError> {
        Ok(self.len()? == 0)
    }
}
