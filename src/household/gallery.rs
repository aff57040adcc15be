//! The in-memory gallery: every enrolled embedding, grouped by (model, dimension) into one
//! contiguous row-major matrix of unit rows, so a match is one SIMD pass over memory.
//!
//! A gallery is immutable once built; the household swaps in a new one after each change
//! (`arc-swap`), so matchers never wait on enrolment. Rows that cannot be trusted (wrong
//! blob length, NaN/inf, zero norm) are left out and counted, never scored.

use std::collections::HashMap;

use serde::Serialize;

use super::schedule::{self, Schedule, ScheduleStatus};
use super::Role;

/// Rows scanned per block; the scores of one block live on the stack.
const BLOCK: usize = 256;

/// One member as the matcher needs them.
#[derive(Debug, Clone)]
pub struct MemberInfo {
    pub id: i64,
    pub name: String,
    pub role: Role,
    pub schedules: Vec<Schedule>,
}

/// Unit rows of one (model, dimension).
#[derive(Debug, Clone, Default)]
pub struct Matrix {
    pub dim: usize,
    pub data: Vec<f32>,
    /// Member of each row.
    pub members: Vec<i64>,
}

impl Matrix {
    pub fn rows(&self) -> usize {
        self.members.len()
    }

    /// Add a row if it is usable; returns false (row not added) for a wrong length, a
    /// non-finite value or a zero vector.
    pub fn push(&mut self, member: i64, v: &[f32]) -> bool {
        if v.len() != self.dim || v.iter().any(|x| !x.is_finite()) {
            return false;
        }
        let start = self.data.len();
        self.data.extend_from_slice(v);
        if !nvr_linalg::normalize(&mut self.data[start..]) {
            self.data.truncate(start);
            return false;
        }
        self.members.push(member);
        true
    }

    /// Call `f(row, cosine)` for every row. `probe` need not be unit length: dividing by
    /// its norm once is cheaper than normalising a copy.
    fn for_each_score(&self, probe: &[f32], mut f: impl FnMut(usize, f32)) {
        // The SIMD dot is ~10x cheaper than the f64 reference norm and accurate enough
        // for one scale factor.
        let inv = 1.0 / nvr_linalg::dot(probe, probe).sqrt();
        let mut scores = [0f32; BLOCK];
        for (b, rows) in self.data.chunks(BLOCK * self.dim).enumerate() {
            let n = rows.len() / self.dim;
            nvr_linalg::scan(rows, probe, self.dim, &mut scores[..n]);
            for (i, &s) in scores[..n].iter().enumerate() {
                f(b * BLOCK + i, s * inv);
            }
        }
    }
}

/// A vehicle as the matcher needs it.
#[derive(Debug, Clone)]
pub struct VehicleInfo {
    pub id: i64,
    pub description: String,
    pub plate: Option<String>,
    pub plate_norm: Option<String>,
    pub plate_folded: Option<String>,
    pub vehicle_type: Option<String>,
    pub color: Option<String>,
    pub trusted: bool,
    /// (model_id, unit embedding)
    pub embedding: Option<(String, Vec<f32>)>,
}

/// Everything matching reads, built in one go.
#[derive(Debug, Default, Clone)]
pub struct GallerySet {
    /// One matrix per (model id, dimension); few enough that a linear lookup (which
    /// needs no key allocation) beats hashing.
    pub persons: Vec<(String, Matrix)>,
    /// Negative enrolments, laid out like `persons`: each row is someone who must never
    /// be taken for the row's member.
    pub negatives: Vec<(String, Matrix)>,
    pub members: HashMap<i64, MemberInfo>,
    pub vehicles: Vec<VehicleInfo>,
    /// Person embedding rows left out as corrupt.
    pub corrupt_rows: usize,
    /// Rows of any kind (members, vehicles) that could not be read at all.
    pub unreadable_rows: usize,
}

/// Thresholds that turn a similarity into an outcome.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Thresholds {
    /// At or above: the member.
    pub match_threshold: f32,
    /// At or above, below `match_threshold`: somebody like the member, not called by name.
    pub unknown_threshold: f32,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum PersonMatch {
    Match {
        member_id: i64,
        name: String,
        role: Role,
        similarity: f32,
        schedule_status: ScheduleStatus,
    },
    /// Close to a member, but not close enough to name them.
    Uncertain {
        member_id: i64,
        name: String,
        similarity: f32,
    },
    NoMatch {
        best_similarity: Option<f32>,
    },
    /// Like a member, but at least as close to someone enrolled as *not* them (negative
    /// enrolment): not named.
    Excluded {
        member_id: i64,
        name: String,
        similarity: f32,
        negative_similarity: f32,
    },
    /// Nothing comparable: the probe has no model id, or no enrolled embedding shares its
    /// model and dimension. The members need enrolling again with the current model.
    UnavailableReenroll {
        skipped: usize,
        reason: String,
    },
    /// Nobody is enrolled.
    NoGallery,
}

/// One member's best score, for top-k.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Candidate {
    pub member_id: i64,
    pub name: String,
    pub similarity: f32,
}

fn matrix_in<'a>(set: &'a mut Vec<(String, Matrix)>, model_id: &str, dim: usize) -> &'a mut Matrix {
    let i = match set.iter().position(|(m, x)| m == model_id && x.dim == dim) {
        Some(i) => i,
        None => {
            set.push((
                model_id.to_string(),
                Matrix {
                    dim,
                    ..Matrix::default()
                },
            ));
            set.len() - 1
        }
    };
    &mut set[i].1
}

impl GallerySet {
    pub fn person_rows(&self) -> usize {
        self.persons.iter().map(|(_, m)| m.rows()).sum()
    }

    /// The matrix of `model_id` with `dim` dimensions, if any.
    pub fn matrix(&self, model_id: &str, dim: usize) -> Option<&Matrix> {
        self.persons
            .iter()
            .find(|(m, x)| m == model_id && x.dim == dim)
            .map(|(_, x)| x)
    }

    /// The matrix of `model_id` with `dim` dimensions, created empty if missing.
    pub fn matrix_mut(&mut self, model_id: &str, dim: usize) -> &mut Matrix {
        matrix_in(&mut self.persons, model_id, dim)
    }

    /// As [`GallerySet::matrix_mut`], for negative enrolments.
    pub fn negatives_mut(&mut self, model_id: &str, dim: usize) -> &mut Matrix {
        matrix_in(&mut self.negatives, model_id, dim)
    }

    fn comparable(&self, probe: &[f32], model_id: Option<&str>) -> Result<&Matrix, PersonMatch> {
        let total = self.person_rows();
        if total == 0 {
            return Err(PersonMatch::NoGallery);
        }
        let Some(model_id) = model_id.filter(|m| !m.is_empty()) else {
            return Err(PersonMatch::UnavailableReenroll {
                skipped: total,
                reason: "probe has no model id".into(),
            });
        };
        // NaN or infinity anywhere makes the squared norm non-finite.
        let n2 = if probe.is_empty() {
            0.0
        } else {
            nvr_linalg::dot(probe, probe)
        };
        if !(n2.is_finite() && n2 > 0.0) {
            return Err(PersonMatch::UnavailableReenroll {
                skipped: total,
                reason: "probe is empty, zero or not finite".into(),
            });
        }
        match self.matrix(model_id, probe.len()) {
            Some(m) if m.rows() > 0 => Ok(m),
            _ => Err(PersonMatch::UnavailableReenroll {
                skipped: total,
                reason: format!(
                    "no enrolled embedding of model {model_id:?} with {} dimensions",
                    probe.len()
                ),
            }),
        }
    }

    /// Best member for `probe`, judged against `th`; schedules evaluated at `unix_secs`.
    pub fn match_person(
        &self,
        probe: &[f32],
        model_id: Option<&str>,
        th: Thresholds,
        unix_secs: i64,
        utc_offset_min: i32,
    ) -> PersonMatch {
        let m = match self.comparable(probe, model_id) {
            Ok(m) => m,
            Err(outcome) => return outcome,
        };
        let (mut best_row, mut best) = (0usize, f32::NEG_INFINITY);
        m.for_each_score(probe, |row, s| {
            if s > best {
                best = s;
                best_row = row;
            }
        });
        let member_id = m.members[best_row];
        let Some(member) = self.members.get(&member_id) else {
            // The member row was unreadable; never name someone we cannot describe.
            return PersonMatch::NoMatch {
                best_similarity: Some(best),
            };
        };
        if best >= th.unknown_threshold {
            let mut negative = f32::NEG_INFINITY;
            if let Some((_, n)) = self
                .negatives
                .iter()
                .find(|(m, x)| Some(m.as_str()) == model_id && x.dim == probe.len())
            {
                n.for_each_score(probe, |row, s| {
                    if n.members[row] == member_id {
                        negative = negative.max(s);
                    }
                });
            }
            if negative >= best {
                return PersonMatch::Excluded {
                    member_id,
                    name: member.name.clone(),
                    similarity: best,
                    negative_similarity: negative,
                };
            }
        }
        if best >= th.match_threshold {
            PersonMatch::Match {
                member_id,
                name: member.name.clone(),
                role: member.role,
                similarity: best,
                schedule_status: schedule::status(&member.schedules, unix_secs, utc_offset_min),
            }
        } else if best >= th.unknown_threshold {
            PersonMatch::Uncertain {
                member_id,
                name: member.name.clone(),
                similarity: best,
            }
        } else {
            PersonMatch::NoMatch {
                best_similarity: Some(best),
            }
        }
    }

    /// The `k` best members (each by their best embedding), best first.
    pub fn top_k(
        &self,
        probe: &[f32],
        model_id: Option<&str>,
        k: usize,
    ) -> Result<Vec<Candidate>, PersonMatch> {
        let m = self.comparable(probe, model_id)?;
        let mut best: HashMap<i64, f32> = HashMap::new();
        m.for_each_score(probe, |row, s| {
            let e = best.entry(m.members[row]).or_insert(f32::NEG_INFINITY);
            *e = e.max(s);
        });
        let mut out: Vec<Candidate> = best
            .into_iter()
            .filter_map(|(id, similarity)| {
                self.members.get(&id).map(|mi| Candidate {
                    member_id: id,
                    name: mi.name.clone(),
                    similarity,
                })
            })
            .collect();
        out.sort_by(|a, b| {
            b.similarity
                .total_cmp(&a.similarity)
                .then(a.member_id.cmp(&b.member_id))
        });
        out.truncate(k);
        Ok(out)
    }
}
