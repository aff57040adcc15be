//! Who is in an event, and what that does to its risk.
//!
//! The identity models (person detector, face detector and embedder, plate OCR) sit behind
//! [`Observer`]: given the frames of a clip window they report what they saw of people
//! (an embedding with its model id) and vehicles (plate text, a visual embedding). This
//! module matches those observations against the household and only names someone after
//! `min_agreeing_frames` frames agree, because one frame's lucky similarity must not
//! lower the risk of a stranger at the door.
//!
//! Risk lowering, in the spirit of the system nvr-edge replaces: a matched member (within
//! their schedule, or without one) lowers an event by `member_lowers_by` levels, a trusted
//! vehicle by `trusted_vehicle_lowers_by`; never below `low`, and a `critical` event at most
//! to `high` (a resident's face does not make a forced door harmless). A member outside
//! their schedule, an uncertain match or an untrusted vehicle lowers nothing; the event
//! records them anyway.

use serde::Serialize;

use super::{
    Household, PersonMatch, Role, ScheduleStatus, VehicleMatch, VehicleMatchKind, VehicleProbe,
};
use crate::config::IdentityConfig;
use crate::inference::identity::{Observation, Observer};
use crate::inference::Risk;

/// Distinct identities one event tracks; more are counted, not kept (bounded memory).
const MAX_TRACKED: usize = 16;

/// The identity models and the household they are matched against, as the analysis
/// gets them.
pub struct IdentityDeps {
    pub observer: std::sync::Arc<dyn Observer>,
    pub household: std::sync::Arc<Household>,
    pub cfg: IdentityConfig,
}

/// Someone or something of the household, seen in an event.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Identified {
    Member {
        member_id: i64,
        name: String,
        role: Role,
        /// Best similarity over the agreeing frames.
        similarity: f32,
        frames: u32,
        schedule: ScheduleStatus,
    },
    Vehicle {
        vehicle_id: i64,
        description: String,
        plate: Option<String>,
        how: VehicleMatchKind,
        similarity: f32,
        frames: u32,
        trusted: bool,
    },
}

/// The identity side of one event: agreement counts per candidate, across its windows.
#[derive(Debug, Clone, Default, Serialize)]
pub struct EventIdentity {
    /// Candidates with their agreeing frames (named only at `min_agreeing_frames`).
    pub candidates: Vec<Identified>,
    /// Person observations that matched nobody (or only uncertainly).
    pub unknown_people: u32,
    /// Person observations no enrolled embedding could be compared with (re-enrol).
    pub incomparable: u32,
    /// Candidates beyond the bounded list.
    pub untracked: u32,
    /// Observations the models could not use, by reason (a handful of fixed reasons).
    pub skipped: Vec<(&'static str, u32)>,
    /// Capture time of the last frame counted for each candidate (same order).
    #[serde(skip)]
    last_ts: Vec<i64>,
}

impl EventIdentity {
    /// Match `observations` and add them to the tally. Frames count once per candidate.
    pub fn add(&mut self, household: &Household, observations: &[Observation]) {
        let gallery = household.gallery();
        for o in observations {
            match o {
                Observation::Person {
                    ts_us,
                    model_id,
                    embedding,
                } => match household.match_person(embedding, Some(model_id)) {
                    PersonMatch::Match {
                        member_id,
                        name,
                        role,
                        similarity,
                        schedule_status,
                    } => self.count(
                        Identified::Member {
                            member_id,
                            name,
                            role,
                            similarity,
                            frames: 1,
                            schedule: schedule_status,
                        },
                        *ts_us,
                    ),
                    PersonMatch::UnavailableReenroll { .. } => self.incomparable += 1,
                    _ => self.unknown_people += 1,
                },
                Observation::Skipped { why, .. } => {
                    match self.skipped.iter_mut().find(|(w, _)| w == why) {
                        Some((_, n)) => *n += 1,
                        None => self.skipped.push((why, 1)),
                    }
                }
                Observation::Vehicle {
                    ts_us,
                    plate,
                    embedding,
                } => {
                    let probe = VehicleProbe {
                        plate: plate.as_deref(),
                        embedding: embedding.as_ref().map(|(m, e)| (m.as_str(), e.as_slice())),
                        ..VehicleProbe::default()
                    };
                    if let VehicleMatch::Match {
                        vehicle_id,
                        description,
                        plate,
                        kind,
                        similarity,
                        ..
                    } = household.match_vehicle(probe)
                    {
                        let trusted = gallery
                            .vehicles
                            .iter()
                            .any(|v| v.id == vehicle_id && v.trusted);
                        self.count(
                            Identified::Vehicle {
                                vehicle_id,
                                description,
                                plate,
                                how: kind,
                                similarity,
                                frames: 1,
                                trusted,
                            },
                            *ts_us,
                        );
                    }
                }
            }
        }
    }

    fn count(&mut self, seen: Identified, ts_us: i64) {
        let wanted = key(&seen);
        if let Some(i) = self.candidates.iter().position(|c| key(c) == wanted) {
            if self.last_ts[i] == ts_us {
                // Two observations in one frame (two faces alike): one frame of agreement.
                return;
            }
            self.last_ts[i] = ts_us;
            match (&mut self.candidates[i], seen) {
                (
                    Identified::Member {
                        similarity, frames, ..
                    },
                    Identified::Member { similarity: s, .. },
                )
                | (
                    Identified::Vehicle {
                        similarity, frames, ..
                    },
                    Identified::Vehicle { similarity: s, .. },
                ) => {
                    *frames += 1;
                    *similarity = similarity.max(s);
                }
                _ => {}
            }
        } else if self.candidates.len() < MAX_TRACKED {
            self.candidates.push(seen);
            self.last_ts.push(ts_us);
        } else {
            self.untracked += 1;
        }
    }

    /// Candidates with enough agreeing frames to be named.
    pub fn confirmed(&self, cfg: &IdentityConfig) -> impl Iterator<Item = &Identified> {
        let need = cfg.min_agreeing_frames.max(1);
        self.candidates.iter().filter(move |c| match c {
            Identified::Member { frames, .. } | Identified::Vehicle { frames, .. } => {
                *frames >= need
            }
        })
    }

    /// The event's risk after what the household tells: `risk` lowered per the module's
    /// rules, with the reason.
    pub fn lower(&self, risk: Risk, cfg: &IdentityConfig) -> (Risk, Option<String>) {
        let mut by = 0u8;
        let mut why = Vec::new();
        for c in self.confirmed(cfg) {
            match c {
                Identified::Member { name, schedule, .. }
                    if *schedule != ScheduleStatus::Outside =>
                {
                    by = by.max(cfg.member_lowers_by);
                    why.push(format!("member {name}"));
                }
                Identified::Vehicle {
                    description,
                    trusted: true,
                    ..
                } => {
                    by = by.max(cfg.trusted_vehicle_lowers_by);
                    why.push(format!("trusted vehicle {description}"));
                }
                _ => {}
            }
        }
        if by == 0 {
            return (risk, None);
        }
        let floor = if risk == Risk::Critical {
            Risk::High
        } else {
            Risk::Low
        };
        let lowered = lower_by(risk, by).max(floor);
        (
            lowered,
            (lowered != risk).then(|| {
                format!(
                    "{} (was {})",
                    why.join(", "),
                    format!("{risk:?}").to_lowercase()
                )
            }),
        )
    }
}

fn lower_by(r: Risk, n: u8) -> Risk {
    const ORDER: [Risk; 4] = [Risk::Low, Risk::Medium, Risk::High, Risk::Critical];
    let i = ORDER.iter().position(|x| *x == r).unwrap_or(0);
    ORDER[i.saturating_sub(usize::from(n))]
}

/// (is a member, id): members and vehicles have ids of their own tables.
fn key(i: &Identified) -> (bool, i64) {
    match i {
        Identified::Member { member_id, .. } => (true, *member_id),
        Identified::Vehicle { vehicle_id, .. } => (false, *vehicle_id),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lowering_steps_and_floors() {
        assert_eq!(lower_by(Risk::High, 2), Risk::Low);
        assert_eq!(lower_by(Risk::Medium, 5), Risk::Low);
        assert_eq!(lower_by(Risk::Critical, 1), Risk::High);
    }
}
