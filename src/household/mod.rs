//! Household matching: who lives here and which vehicles belong here, so that events
//! involving them carry less risk.
//!
//! Members, schedules, person embeddings and vehicles live in SQLite (see `store`); the
//! matcher reads an immutable in-memory [`GallerySet`] that is rebuilt from the database
//! after every change and swapped in atomically, so a match never waits on enrolment and
//! never sees half of one. Every write is one transaction, validated before it starts:
//! bad input leaves the database as it was.

pub mod enrol;
pub mod gallery;
pub mod identity;
pub mod plates;
pub mod schedule;
pub mod vectors;
pub mod vehicles;

use std::collections::HashMap;
use std::fmt;
use std::path::Path;
use std::str::FromStr;
use std::sync::{Arc, Mutex, MutexGuard};

use arc_swap::ArcSwap;
use rusqlite::{params, Connection, OptionalExtension};
use serde::{Deserialize, Serialize};

use crate::clock::Clock;
use crate::config::HouseholdSection;
use crate::store::{self, StoreError};
pub use gallery::{
    Candidate, GallerySet, Matrix, MemberInfo, PersonMatch, Thresholds, VehicleInfo,
};
use plates::{fold_confusions, normalize_plate};
pub use schedule::{Schedule, ScheduleStatus};
pub use vehicles::{VehicleMatch, VehicleMatchKind, VehicleProbe, VehicleRules};

/// Longest embedding accepted (dimensions).
pub const MAX_DIM: usize = 8192;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    Resident,
    Family,
    ServiceWorker,
    FrequentVisitor,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Resident => "resident",
            Role::Family => "family",
            Role::ServiceWorker => "service_worker",
            Role::FrequentVisitor => "frequent_visitor",
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Role {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "resident" => Ok(Role::Resident),
            "family" => Ok(Role::Family),
            "service_worker" => Ok(Role::ServiceWorker),
            "frequent_visitor" => Ok(Role::FrequentVisitor),
            other => Err(format!(
                "role {other:?}: expected resident, family, service_worker or frequent_visitor"
            )),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum HouseholdError {
    /// The caller's input is wrong; the message names what.
    #[error("{0}")]
    Invalid(String),
    #[error("no member with id {0}")]
    NoMember(i64),
    #[error("no vehicle with id {0}")]
    NoVehicle(i64),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("database")]
    Sql(#[from] rusqlite::Error),
}

impl HouseholdError {
    /// True when the caller's input was at fault (CLI exit status 2), not the system.
    pub fn is_input_error(&self) -> bool {
        matches!(
            self,
            HouseholdError::Invalid(_) | HouseholdError::NoMember(_) | HouseholdError::NoVehicle(_)
        )
    }
}

fn invalid(msg: impl Into<String>) -> HouseholdError {
    HouseholdError::Invalid(msg.into())
}

/// A vehicle to register.
#[derive(Debug, Clone, Default)]
pub struct NewVehicle {
    pub description: String,
    pub plate: Option<String>,
    pub vehicle_type: Option<String>,
    pub color: Option<String>,
    pub trusted: bool,
    pub member_id: Option<i64>,
    /// (model_id, embedding)
    pub embedding: Option<(String, Vec<f32>)>,
}

/// A member as listed.
#[derive(Debug, Clone, Serialize)]
pub struct MemberSummary {
    pub id: i64,
    pub name: String,
    pub role: Role,
    pub notes: String,
    pub schedules: Vec<String>,
    /// Embeddings per model id.
    pub embeddings: HashMap<String, u32>,
}

#[derive(Debug, Clone, Serialize)]
pub struct VehicleSummary {
    pub id: i64,
    pub description: String,
    pub plate: Option<String>,
    pub vehicle_type: Option<String>,
    pub color: Option<String>,
    pub trusted: bool,
    pub embedding_model: Option<String>,
}

/// The household: database plus the gallery matchers read.
pub struct Household {
    conn: Mutex<Connection>,
    gallery: ArcSwap<GallerySet>,
    cfg: HouseholdSection,
    clock: Arc<dyn Clock>,
}

impl Household {
    /// Open `<data_dir>/nvr-edge.db` (migrating it) and build the gallery.
    pub fn open_in(
        data_dir: &Path,
        cfg: HouseholdSection,
        clock: Arc<dyn Clock>,
    ) -> Result<Self, HouseholdError> {
        Self::from_connection(store::open_in(data_dir)?, cfg, clock)
    }

    /// Open a database file (migrating it) and build the gallery.
    pub fn open(
        path: &Path,
        cfg: HouseholdSection,
        clock: Arc<dyn Clock>,
    ) -> Result<Self, HouseholdError> {
        Self::from_connection(store::open(path)?, cfg, clock)
    }

    fn from_connection(
        conn: Connection,
        cfg: HouseholdSection,
        clock: Arc<dyn Clock>,
    ) -> Result<Self, HouseholdError> {
        let gallery = load_gallery(&conn)?;
        if gallery.corrupt_rows + gallery.unreadable_rows > 0 {
            tracing::warn!(
                corrupt_embeddings = gallery.corrupt_rows,
                unreadable_rows = gallery.unreadable_rows,
                "household database has rows that are skipped"
            );
        }
        Ok(Self {
            conn: Mutex::new(conn),
            gallery: ArcSwap::from_pointee(gallery),
            cfg,
            clock,
        })
    }

    fn conn(&self) -> MutexGuard<'_, Connection> {
        self.conn.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The gallery as it is now; cheap, never blocks.
    pub fn gallery(&self) -> Arc<GallerySet> {
        self.gallery.load_full()
    }

    pub fn thresholds(&self) -> Thresholds {
        Thresholds {
            match_threshold: self.cfg.match_threshold,
            unknown_threshold: self.cfg.unknown_threshold,
        }
    }

    pub fn vehicle_rules(&self) -> VehicleRules {
        VehicleRules {
            plate_max_distance: self.cfg.plate_max_distance as usize,
            plate_fuzzy_min_len: self.cfg.plate_fuzzy_min_len as usize,
            visual_threshold: self.cfg.vehicle_visual_threshold,
        }
    }

    pub fn match_person(&self, probe: &[f32], model_id: Option<&str>) -> PersonMatch {
        let now = self.clock.wall_us().div_euclid(1_000_000);
        self.gallery.load().match_person(
            probe,
            model_id,
            self.thresholds(),
            now,
            self.cfg.utc_offset_minutes,
        )
    }

    pub fn top_k(
        &self,
        probe: &[f32],
        model_id: Option<&str>,
        k: usize,
    ) -> Result<Vec<Candidate>, PersonMatch> {
        self.gallery.load().top_k(probe, model_id, k)
    }

    pub fn match_vehicle(&self, probe: VehicleProbe<'_>) -> VehicleMatch {
        self.gallery
            .load()
            .match_vehicle(probe, self.vehicle_rules())
    }

    /// Run `f` in one transaction, then rebuild and publish the gallery.
    fn write<R>(
        &self,
        f: impl FnOnce(&rusqlite::Transaction<'_>) -> Result<R, HouseholdError>,
    ) -> Result<R, HouseholdError> {
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        let r = f(&tx)?;
        tx.commit()?;
        // Rebuilt under the connection lock, so galleries are published in commit order.
        self.gallery.store(Arc::new(load_gallery(&conn)?));
        Ok(r)
    }

    fn now_secs(&self) -> i64 {
        self.clock.wall_us().div_euclid(1_000_000)
    }

    /// Add a member with their schedules, in one transaction.
    pub fn add_member(
        &self,
        name: &str,
        role: Role,
        notes: &str,
        schedules: &[Schedule],
    ) -> Result<i64, HouseholdError> {
        let name = name.trim();
        if name.is_empty() || name.chars().count() > 200 {
            return Err(invalid("member name must be 1-200 characters"));
        }
        let now = self.now_secs();
        self.write(|tx| {
            tx.execute(
                "INSERT INTO members (name, role, notes, created_at) VALUES (?1, ?2, ?3, ?4)",
                params![name, role.as_str(), notes, now],
            )?;
            let id = tx.last_insert_rowid();
            for s in schedules {
                insert_schedule(tx, id, s)?;
            }
            Ok(id)
        })
    }

    pub fn add_schedule(&self, member_id: i64, s: Schedule) -> Result<i64, HouseholdError> {
        self.write(|tx| {
            require_member(tx, member_id)?;
            insert_schedule(tx, member_id, &s)
        })
    }

    /// Remove a member with their schedules and embeddings.
    pub fn remove_member(&self, member_id: i64) -> Result<(), HouseholdError> {
        self.write(|tx| {
            if tx.execute("DELETE FROM members WHERE id = ?1", [member_id])? == 0 {
                return Err(HouseholdError::NoMember(member_id));
            }
            Ok(())
        })
    }

    pub fn add_embedding(
        &self,
        member_id: i64,
        model_id: &str,
        vector: &[f32],
        source: &str,
    ) -> Result<i64, HouseholdError> {
        self.insert_embedding(member_id, model_id, vector, source, false)
    }

    /// Negative enrolment: `vector` is someone who must never be taken for `member_id`.
    pub fn add_negative_embedding(
        &self,
        member_id: i64,
        model_id: &str,
        vector: &[f32],
        source: &str,
    ) -> Result<i64, HouseholdError> {
        self.insert_embedding(member_id, model_id, vector, source, true)
    }

    fn insert_embedding(
        &self,
        member_id: i64,
        model_id: &str,
        vector: &[f32],
        source: &str,
        negative: bool,
    ) -> Result<i64, HouseholdError> {
        check_embedding(model_id, vector)?;
        let now = self.now_secs();
        self.write(|tx| {
            require_member(tx, member_id)?;
            tx.execute(
                "INSERT INTO person_embeddings (member_id, model_id, dim, vector, source, created_at, negative) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                params![member_id, model_id, vector.len() as i64, vectors::to_blob(vector), source, now, negative],
            )?;
            Ok(tx.last_insert_rowid())
        })
    }

    pub fn add_vehicle(&self, v: &NewVehicle) -> Result<i64, HouseholdError> {
        let plate = v.plate.as_deref().map(str::trim).filter(|p| !p.is_empty());
        let plate_norm = plate.map(normalize_plate);
        if plate.is_some() && plate_norm.as_deref() == Some("") {
            return Err(invalid("plate has no letters or digits"));
        }
        if plate.is_none() && v.embedding.is_none() {
            return Err(invalid("a vehicle needs a plate or a visual embedding"));
        }
        if let Some((m, e)) = &v.embedding {
            check_embedding(m, e)?;
        }
        let now = self.now_secs();
        self.write(|tx| {
            if let Some(m) = v.member_id {
                require_member(tx, m)?;
            }
            let (model, dim, blob) = match &v.embedding {
                Some((m, e)) => (Some(m.as_str()), Some(e.len() as i64), Some(vectors::to_blob(e))),
                None => (None, None, None),
            };
            tx.execute(
                "INSERT INTO vehicles (description, plate, plate_norm, vehicle_type, color, trusted, \
                 member_id, model_id, dim, embedding, created_at) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)",
                params![
                    v.description,
                    plate,
                    plate_norm,
                    v.vehicle_type,
                    v.color,
                    v.trusted,
                    v.member_id,
                    model,
                    dim,
                    blob,
                    now
                ],
            )?;
            Ok(tx.last_insert_rowid())
        })
    }

    pub fn remove_vehicle(&self, id: i64) -> Result<(), HouseholdError> {
        self.write(|tx| {
            if tx.execute("DELETE FROM vehicles WHERE id = ?1", [id])? == 0 {
                return Err(HouseholdError::NoVehicle(id));
            }
            Ok(())
        })
    }

    pub fn members(&self) -> Result<Vec<MemberSummary>, HouseholdError> {
        let conn = self.conn();
        let mut counts: HashMap<i64, HashMap<String, u32>> = HashMap::new();
        let mut stmt = conn.prepare(
            "SELECT member_id, model_id || CASE negative WHEN 1 THEN ' (negative)' ELSE '' END, count(*) \
             FROM person_embeddings GROUP BY member_id, model_id, negative",
        )?;
        for row in stmt.query_map([], |r| {
            Ok((
                r.get::<_, i64>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, u32>(2)?,
            ))
        })? {
            let (m, model, n) = row?;
            counts.entry(m).or_default().insert(model, n);
        }
        let schedules = load_schedules(&conn)?;
        let mut stmt = conn.prepare("SELECT id, name, role, notes FROM members ORDER BY id")?;
        let rows = stmt.query_map([], |r| {
            Ok((
                r.get::<_, i64>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, String>(2)?,
                r.get::<_, String>(3)?,
            ))
        })?;
        let mut out = Vec::new();
        for row in rows {
            let (id, name, role, notes) = row?;
            let Ok(role) = role.parse() else { continue };
            out.push(MemberSummary {
                id,
                name,
                role,
                notes,
                schedules: schedules
                    .get(&id)
                    .map(|v| v.iter().map(ToString::to_string).collect())
                    .unwrap_or_default(),
                embeddings: counts.remove(&id).unwrap_or_default(),
            });
        }
        Ok(out)
    }

    pub fn vehicles(&self) -> Result<Vec<VehicleSummary>, HouseholdError> {
        let conn = self.conn();
        let mut stmt = conn.prepare(
            "SELECT id, description, plate, vehicle_type, color, trusted, model_id FROM vehicles ORDER BY id",
        )?;
        let rows = stmt.query_map([], |r| {
            Ok(VehicleSummary {
                id: r.get(0)?,
                description: r.get(1)?,
                plate: r.get(2)?,
                vehicle_type: r.get(3)?,
                color: r.get(4)?,
                trusted: r.get(5)?,
                embedding_model: r.get(6)?,
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// `PRAGMA integrity_check` of the database: what it found wrong, none when sound.
    pub fn integrity_check(&self) -> Result<Vec<String>, HouseholdError> {
        Ok(store::integrity_check(&self.conn())?)
    }

    /// Rebuild the gallery from the database (after an outside change).
    pub fn reload(&self) -> Result<(), HouseholdError> {
        let conn = self.conn();
        self.gallery.store(Arc::new(load_gallery(&conn)?));
        Ok(())
    }
}

fn insert_schedule(tx: &Connection, member_id: i64, s: &Schedule) -> Result<i64, HouseholdError> {
    tx.execute(
        "INSERT INTO member_schedules (member_id, days, start_min, end_min) VALUES (?1, ?2, ?3, ?4)",
        params![member_id, s.days, s.start_min, s.end_min],
    )?;
    Ok(tx.last_insert_rowid())
}

fn require_member(tx: &Connection, id: i64) -> Result<(), HouseholdError> {
    let found: Option<i64> = tx
        .query_row("SELECT id FROM members WHERE id = ?1", [id], |r| r.get(0))
        .optional()?;
    found.map(drop).ok_or(HouseholdError::NoMember(id))
}

fn check_embedding(model_id: &str, v: &[f32]) -> Result<(), HouseholdError> {
    if model_id.trim().is_empty() {
        return Err(invalid("model id must not be empty"));
    }
    if v.is_empty() || v.len() > MAX_DIM {
        return Err(invalid(format!(
            "embedding has {} values; expected 1-{MAX_DIM}",
            v.len()
        )));
    }
    if let Some(i) = v.iter().position(|x| !x.is_finite()) {
        return Err(invalid(format!(
            "embedding value {i} is not a finite number"
        )));
    }
    if nvr_linalg::norm(v) == 0.0 {
        return Err(invalid("embedding is all zeros"));
    }
    Ok(())
}

fn load_schedules(conn: &Connection) -> Result<HashMap<i64, Vec<Schedule>>, HouseholdError> {
    let mut out: HashMap<i64, Vec<Schedule>> = HashMap::new();
    let mut stmt = conn
        .prepare("SELECT member_id, days, start_min, end_min FROM member_schedules ORDER BY id")?;
    let rows = stmt.query_map([], |r| {
        Ok((
            r.get::<_, i64>(0)?,
            Schedule {
                days: r.get(1)?,
                start_min: r.get(2)?,
                end_min: r.get(3)?,
            },
        ))
    })?;
    for (m, s) in rows.flatten() {
        out.entry(m).or_default().push(s);
    }
    Ok(out)
}

/// Build a gallery from the database. Rows that cannot be read or trusted are skipped
/// and counted: one bad row must not take the household offline.
pub fn load_gallery(conn: &Connection) -> Result<GallerySet, HouseholdError> {
    let mut g = GallerySet::default();
    let mut schedules = load_schedules(conn)?;

    let mut stmt = conn.prepare("SELECT id, name, role FROM members")?;
    let rows = stmt.query_map([], |r| {
        Ok((
            r.get::<_, i64>(0)?,
            r.get::<_, String>(1)?,
            r.get::<_, String>(2)?,
        ))
    })?;
    for row in rows {
        match row.map(|(id, name, role)| (id, name, role.parse::<Role>())) {
            Ok((id, name, Ok(role))) => {
                let schedules = schedules.remove(&id).unwrap_or_default();
                g.members.insert(
                    id,
                    MemberInfo {
                        id,
                        name,
                        role,
                        schedules,
                    },
                );
            }
            _ => g.unreadable_rows += 1,
        }
    }

    let mut stmt =
        conn.prepare("SELECT member_id, model_id, dim, vector, negative FROM person_embeddings")?;
    let rows = stmt.query_map([], |r| {
        Ok((
            r.get::<_, i64>(0)?,
            r.get::<_, String>(1)?,
            r.get::<_, i64>(2)?,
            r.get::<_, Vec<u8>>(3)?,
            r.get::<_, bool>(4)?,
        ))
    })?;
    for row in rows {
        let Ok((member, model, dim, blob, negative)) = row else {
            g.unreadable_rows += 1;
            continue;
        };
        let usable = (1..=MAX_DIM as i64).contains(&dim) && blob.len() == dim as usize * 4;
        let v = if usable {
            vectors::from_blob(&blob)
        } else {
            Vec::new()
        };
        let dim = dim.max(0) as usize;
        let m = if negative {
            g.negatives_mut(&model, dim)
        } else {
            g.matrix_mut(&model, dim)
        };
        if !usable || !m.push(member, &v) {
            g.corrupt_rows += 1;
        }
    }
    g.persons.retain(|(_, m)| m.rows() > 0);
    g.negatives.retain(|(_, m)| m.rows() > 0);

    let mut stmt = conn.prepare(
        "SELECT id, description, plate, plate_norm, vehicle_type, color, trusted, model_id, dim, embedding FROM vehicles",
    )?;
    let rows = stmt.query_map([], |r| {
        Ok((
            VehicleInfo {
                id: r.get(0)?,
                description: r.get(1)?,
                plate: r.get(2)?,
                plate_norm: r.get(3)?,
                plate_folded: None,
                vehicle_type: r.get(4)?,
                color: r.get(5)?,
                trusted: r.get(6)?,
                embedding: None,
            },
            r.get::<_, Option<String>>(7)?,
            r.get::<_, Option<i64>>(8)?,
            r.get::<_, Option<Vec<u8>>>(9)?,
        ))
    })?;
    for row in rows {
        let Ok((mut v, model, dim, blob)) = row else {
            g.unreadable_rows += 1;
            continue;
        };
        v.plate_folded = v.plate_norm.as_deref().map(fold_confusions);
        if let (Some(model), Some(dim), Some(blob)) = (model, dim, blob) {
            let mut e = vectors::from_blob(&blob);
            if blob.len() == dim.max(0) as usize * 4
                && e.iter().all(|x| x.is_finite())
                && nvr_linalg::normalize(&mut e)
            {
                v.embedding = Some((model, e));
            } else {
                g.unreadable_rows += 1;
            }
        }
        g.vehicles.push(v);
    }
    Ok(g)
}
