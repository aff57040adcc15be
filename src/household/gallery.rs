//! The in-memory gallery: every enrolled embedding, grouped by (model, dimension) into one
//! contiguous row-major matrix of unit rows, so a match is one SIMD pass over memory.
//!
//! The best-match scan reads a compact copy of the rows (`i8` with one scale per row,
//! a quarter of the bytes: see `nvr_linalg::quant`) and re-scores in f32 only the rows
//! whose proven error bound leaves them a chance of being the best, so a match returns
//! exactly what a full f32 scan would (same row, same similarity) while reading a quarter
//! of the memory. Top-k and negative enrolments read the f32 rows.
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

/// Rescoring slack on top of the quantisation bound, in cosine units: covers the f32
/// rounding of the estimate and of the exact dot itself (both far below 1e-5 at 8192-d).
const RESCORE_SLACK: f32 = 1e-4;

/// Below this many rows the f32 rows are scanned directly: they fit the L1/L2 caches, and
/// quantising the probe and re-scoring the rows near the top would cost more than the
/// compact scan saves (measured: 10 rows 0.2 us f32 vs 1.1 us compact, 100 rows 1.7 vs
/// 2.1, 500 rows 8.7 vs 6.2; docs/design/store-and-household.md). On the portable tier
/// the f32 rows are always scanned (`quant::scan_is_fast`).
const COMPACT_FROM_ROWS: usize = BLOCK;

/// Unit rows of one (model, dimension), each also kept compact for the scan.
#[derive(Debug, Clone, Default)]
pub struct Matrix {
    dim: usize,
    data: Vec<f32>,
    /// Member of each row.
    members: Vec<i64>,
    /// The rows as `i8`, row-major like `data`, and how each was quantised.
    compact: Vec<i8>,
    quant: Vec<nvr_linalg::quant::Quant>,
}

impl Matrix {
    /// An empty matrix of `dim`-long rows (`dim` at most `nvr_linalg::quant::MAX_DIM`;
    /// longer rows are refused by [`Matrix::push`]).
    pub fn new(dim: usize) -> Matrix {
        Matrix {
            dim,
            ..Matrix::default()
        }
    }

    pub fn dim(&self) -> usize {
        self.dim
    }

    pub fn rows(&self) -> usize {
        self.members.len()
    }

    /// Add a row if it is usable; returns false (row not added) for a wrong length, a
    /// non-finite value, a zero vector or more than `quant::MAX_DIM` dimensions.
    pub fn push(&mut self, member: i64, v: &[f32]) -> bool {
        if v.len() != self.dim
            || self.dim > nvr_linalg::quant::MAX_DIM
            || v.iter().any(|x| !x.is_finite())
        {
            return false;
        }
        let start = self.data.len();
        self.data.extend_from_slice(v);
        if !nvr_linalg::normalize(&mut self.data[start..]) {
            self.data.truncate(start);
            return false;
        }
        self.compact.resize(self.data.len(), 0);
        let q = nvr_linalg::quant::quantize(&self.data[start..], &mut self.compact[start..]);
        self.quant.push(q);
        self.members.push(member);
        true
    }

    /// The row with the highest cosine to `probe` (the first such row on a tie) and that
    /// cosine, exactly as a full f32 scan finds them: the compact scan gives each row an
    /// estimate and a bound; a row is re-scored in f32 only if estimate + bound reaches
    /// the best lower bound seen so far, which no row can beat without being re-scored.
    /// `probe` need not be unit length; None for an empty matrix.
    fn best(&self, probe: &[f32]) -> Option<(usize, f32)> {
        use nvr_linalg::quant::{self, Quant};
        if self.rows() < COMPACT_FROM_ROWS || !quant::scan_is_fast() {
            let mut best = None::<(usize, f32)>;
            self.for_each_score(probe, |row, s| {
                if best.is_none_or(|(_, bs)| s > bs) {
                    best = Some((row, s));
                }
            });
            return best;
        }
        let inv = 1.0 / nvr_linalg::dot(probe, probe).sqrt();
        // One probe-sized buffer per match: bounded by the dimension.
        let mut qp = vec![0i8; self.dim];
        let pq = quant::quantize(probe, &mut qp);
        let p_l1 = quant::l1(probe);
        let mut ints = [0i32; BLOCK];
        let mut reach = [0f32; BLOCK];
        let (mut floor, mut best) = (f32::NEG_INFINITY, None::<(usize, f32)>);
        for (b, rows) in self.compact.chunks(BLOCK * self.dim).enumerate() {
            let n = rows.len() / self.dim;
            quant::scan(rows, &qp, self.dim, &mut ints[..n]);
            let quants = &self.quant[b * BLOCK..][..n];
            for ((r, &int), rq) in reach.iter_mut().zip(&ints[..n]).zip(quants) {
                let e = int as f32 * rq.scale * pq.scale * inv;
                let bound = Quant::bound(pq, p_l1, *rq) * inv + RESCORE_SLACK;
                *r = e + bound;
                floor = floor.max(e - bound);
            }
            for (i, &r) in reach[..n].iter().enumerate() {
                if r < floor {
                    continue;
                }
                let row = b * BLOCK + i;
                let s = nvr_linalg::dot(&self.data[row * self.dim..][..self.dim], probe) * inv;
                if best.is_none_or(|(_, bs)| s > bs) {
                    best = Some((row, s));
                }
                floor = floor.max(s);
            }
        }
        best
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
            set.push((model_id.to_string(), Matrix::new(dim)));
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
        let Some((best_row, best)) = m.best(probe) else {
            return PersonMatch::NoGallery;
        };
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::household::vectors::{perturbed, random_unit_vectors};

    const DIM: usize = 512;

    fn set_of(rows: &[f32]) -> GallerySet {
        let mut set = GallerySet::default();
        let m = set.matrix_mut("m", DIM);
        for (i, r) in rows.chunks_exact(DIM).enumerate() {
            assert!(m.push(i as i64, r));
        }
        for i in 0..rows.len() / DIM {
            set.members.insert(
                i as i64,
                MemberInfo {
                    id: i as i64,
                    name: format!("m{i}"),
                    role: Role::Family,
                    schedules: Vec::new(),
                },
            );
        }
        set
    }

    /// The f64 reference: every row's cosine to `probe`.
    fn reference(rows: &[f32], probe: &[f32]) -> Vec<f64> {
        let pn = nvr_linalg::norm(probe);
        rows.chunks_exact(DIM)
            .map(|r| nvr_linalg::dot_f64(r, probe) / (nvr_linalg::norm(r) * pn))
            .collect()
    }

    /// What the full f32 scan (every row scored in f32) finds: the first best row.
    fn full_scan(m: &Matrix, probe: &[f32]) -> (usize, f32) {
        let mut best = (0, f32::NEG_INFINITY);
        m.for_each_score(probe, |row, s| {
            if s > best.1 {
                best = (row, s);
            }
        });
        best
    }

    fn check(rows: &[f32], probe: &[f32], what: &str) -> (usize, f32) {
        let set = set_of(rows);
        let m = set.matrix("m", DIM).unwrap();
        let got = m.best(probe).unwrap();
        assert_eq!(
            got,
            full_scan(m, probe),
            "{what}: compact scan vs full f32 scan"
        );
        let want = reference(rows, probe);
        let top = want.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
        assert!(
            (f64::from(got.1) - top).abs() <= 1e-5,
            "{what}: {} vs {top}",
            got.1
        );
        assert!(
            (want[got.0] - top).abs() <= 1e-5,
            "{what}: row {} is not a best",
            got.0
        );
        got
    }

    #[test]
    fn the_compact_scan_returns_what_the_full_f32_scan_returns() {
        // Sizes on both sides of COMPACT_FROM_ROWS and of a block; random probes (the
        // top is crowded: many rows inside the bound) and noisy copies of a row.
        for n in [1, 255, 256, 257, 700, 3000] {
            let rows = random_unit_vectors(n, DIM, n as u64);
            for s in 0..20u64 {
                let probe = if s % 2 == 0 {
                    random_unit_vectors(1, DIM, 1000 + s)
                } else {
                    let target = (s as usize * 37) % n;
                    perturbed(&rows[target * DIM..][..DIM], 0.05, s)
                };
                check(&rows, &probe, &format!("n={n} probe {s}"));
            }
        }
    }

    /// Rows made `gap` apart in cosine around `base`: `cos(row_k, base) = c - k * gap`.
    fn fan(base: &[f32], c: f64, gap: f64, k: usize, seed: u64) -> Vec<f32> {
        let mut out = Vec::new();
        let noise = random_unit_vectors(k, DIM, seed);
        for (i, u) in noise.chunks_exact(DIM).enumerate() {
            // u minus its part along base: orthogonal, unit.
            let along = nvr_linalg::dot_f64(u, base);
            let mut o: Vec<f64> = u
                .iter()
                .zip(base)
                .map(|(&x, &b)| f64::from(x) - along * f64::from(b))
                .collect();
            let on = o.iter().map(|x| x * x).sum::<f64>().sqrt();
            o.iter_mut().for_each(|x| *x /= on);
            let ci = c - i as f64 * gap;
            let si = (1.0 - ci * ci).sqrt();
            out.extend(
                base.iter()
                    .zip(&o)
                    .map(|(&b, &x)| (ci * f64::from(b) + si * x) as f32),
            );
        }
        out
    }

    #[test]
    fn near_ties_and_the_threshold_are_decided_by_the_exact_score() {
        let base = random_unit_vectors(1, DIM, 5);
        let th = Thresholds {
            match_threshold: 0.85,
            unknown_threshold: 0.7,
        };
        for (gap, seed) in [(3e-6, 1u64), (3e-6, 2), (1e-5, 3), (1e-4, 4), (2e-3, 5)] {
            // 16 rows `gap` apart, the best 2e-5 above the match threshold (odd seeds) or
            // below it (even), shuffled into 600 random rows, the best one late. Their
            // compact estimates are ~1e-2 off the truth, so the estimates alone would
            // pick at random among them.
            let above = seed % 2 == 1;
            let top = 0.85 + if above { 2e-5 } else { -2e-5 };
            let mut rows = random_unit_vectors(600, DIM, seed + 100);
            let close = fan(&base, top, gap, 16, seed + 10);
            for (k, r) in close.chunks_exact(DIM).enumerate() {
                let at = 590 - k * 37;
                rows[at * DIM..][..DIM].copy_from_slice(r);
            }
            let (row, s) = check(&rows, &base, &format!("gap {gap}"));
            assert_eq!(row, 590, "gap {gap}: the closest row wins");
            let got = set_of(&rows).match_person(&base, Some("m"), th, 0, 0);
            match got {
                PersonMatch::Match {
                    member_id,
                    similarity,
                    ..
                } if above => assert_eq!((member_id, similarity), (590, s)),
                PersonMatch::Uncertain {
                    member_id,
                    similarity,
                    ..
                } if !above => assert_eq!((member_id, similarity), (590, s)),
                other => panic!("gap {gap}, best {top}: {other:?}"),
            }
        }
    }
}
