//! `[household]`: how close a face or vehicle must be to be named, and the self-test's
//! generated gallery.

use serde::{Deserialize, Serialize};

use super::Problems;

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct HouseholdSection {
    /// Cosine similarity at or above which a person is named as a member.
    pub match_threshold: f32,
    /// At or above this (and below match_threshold) the outcome is "uncertain": similar
    /// to a member, not called by their name.
    pub unknown_threshold: f32,
    /// Cosine similarity at or above which a vehicle's visual embedding matches.
    pub vehicle_visual_threshold: f32,
    /// Most edits (after folding OCR confusions) a fuzzy plate match allows.
    pub plate_max_distance: u32,
    /// Plates shorter than this only match exactly.
    pub plate_fuzzy_min_len: u32,
    /// Local time for member schedules, minutes east of UTC (no DST rules applied).
    pub utc_offset_minutes: i32,
    /// Size of the gallery the self-test generates when nobody is enrolled.
    pub selftest_members: u32,
    pub selftest_dim: u32,
}

impl Default for HouseholdSection {
    fn default() -> Self {
        Self {
            match_threshold: 0.60,
            unknown_threshold: 0.45,
            vehicle_visual_threshold: 0.90,
            plate_max_distance: 1,
            plate_fuzzy_min_len: 4,
            utc_offset_minutes: 0,
            selftest_members: 500,
            selftest_dim: 512,
        }
    }
}

impl HouseholdSection {
    pub(crate) fn validate(&self, p: &mut Problems) {
        let h = self;
        let unit = |v: f32| v.is_finite() && (-1.0..=1.0).contains(&v);
        p.check(
            "household.match_threshold",
            unit(h.match_threshold),
            "must be a cosine similarity in [-1, 1]",
        );
        p.check(
            "household.unknown_threshold",
            unit(h.unknown_threshold) && h.unknown_threshold <= h.match_threshold,
            "must be in [-1, 1] and <= household.match_threshold",
        );
        p.check(
            "household.vehicle_visual_threshold",
            unit(h.vehicle_visual_threshold),
            "must be a cosine similarity in [-1, 1]",
        );
        p.check(
            "household.plate_max_distance",
            h.plate_max_distance <= 3,
            "must be 0-3",
        );
        p.check(
            "household.utc_offset_minutes",
            (-14 * 60..=14 * 60).contains(&h.utc_offset_minutes),
            "must be within +-840 minutes",
        );
        p.int(
            "household.plate_fuzzy_min_len",
            h.plate_fuzzy_min_len.into(),
            0,
            20,
        );
        p.int(
            "household.selftest_members",
            h.selftest_members.into(),
            1,
            1_000_000,
        );
        p.int("household.selftest_dim", h.selftest_dim.into(), 1, 8192);
        // The generated gallery is members x dim floats: 64 Mi of them (256 MiB) at most,
        // so the self-test cannot ask for more memory than a board has.
        p.check(
            "household.selftest_members",
            u64::from(h.selftest_members) * u64::from(h.selftest_dim) <= 64 << 20,
            "times household.selftest_dim must be at most 67108864 (a 256 MiB gallery)",
        );
    }
}
