//! Household matching against a real SQLite file: the product spec's cases (seeded
//! galleries of 10/100/500 members, noisy probes, orthogonal galleries, zero vectors,
//! concurrent matching during enrolment), provenance rules, plates, persistence,
//! migration and corrupt rows.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;

use nvr_edge::clock::{Clock, ManualClock, SystemClock};
use nvr_edge::config::HouseholdSection;
use nvr_edge::household::vectors::{perturbed, random_unit_vectors};
use nvr_edge::household::{
    Household, HouseholdError, NewVehicle, PersonMatch, Role, Schedule, ScheduleStatus,
    VehicleMatch, VehicleMatchKind, VehicleProbe,
};
use nvr_edge::store;

const DIM: usize = 512;
const MODEL: &str = "reid-test-v1";

fn open(dir: &tempfile::TempDir) -> Household {
    open_with(dir, Arc::new(SystemClock))
}

/// The thresholds of the spec's matcher (its re-ID embeddings): the spec's cases are
/// written against them. nvr-edge's own defaults suit its face embedder (see config).
fn spec_thresholds() -> HouseholdSection {
    HouseholdSection {
        match_threshold: 0.85,
        unknown_threshold: 0.70,
        ..HouseholdSection::default()
    }
}

fn open_with(dir: &tempfile::TempDir, clock: Arc<dyn Clock>) -> Household {
    Household::open_in(dir.path(), spec_thresholds(), clock).unwrap()
}

/// `n` members with one seeded random unit embedding each; returns (ids, vectors).
fn enrol(hh: &Household, n: usize, seed: u64) -> (Vec<i64>, Vec<f32>) {
    let v = random_unit_vectors(n, DIM, seed);
    let ids = (0..n)
        .map(|i| {
            let id = hh
                .add_member(&format!("member {i}"), Role::Resident, "", &[])
                .unwrap();
            hh.add_embedding(id, MODEL, &v[i * DIM..(i + 1) * DIM], "test")
                .unwrap();
            id
        })
        .collect();
    (ids, v)
}

#[test]
fn noisy_probe_of_member_5_matches_member_5_at_10_100_500() {
    for n in [10, 100, 500] {
        let dir = tempfile::tempdir().unwrap();
        let hh = open(&dir);
        let (ids, v) = enrol(&hh, n, n as u64);
        let probe = perturbed(&v[5 * DIM..6 * DIM], 0.01, 42);
        match hh.match_person(&probe, Some(MODEL)) {
            PersonMatch::Match {
                member_id,
                similarity,
                schedule_status,
                ..
            } => {
                assert_eq!(member_id, ids[5], "gallery of {n}");
                assert!(similarity > 0.95, "{similarity}");
                assert_eq!(schedule_status, ScheduleStatus::None);
            }
            other => panic!("gallery of {n}: {other:?}"),
        }
        // A random stranger is no one.
        let stranger = random_unit_vectors(1, DIM, 1_000_000 + n as u64);
        assert!(matches!(
            hh.match_person(&stranger, Some(MODEL)),
            PersonMatch::NoMatch { .. }
        ));
    }
}

#[test]
fn orthogonal_gallery_and_negative_probe_do_not_match() {
    let dir = tempfile::tempdir().unwrap();
    let hh = open(&dir);
    for i in 0..DIM {
        let id = hh
            .add_member(&format!("axis {i}"), Role::Family, "", &[])
            .unwrap();
        let mut e = vec![0f32; DIM];
        e[i] = 1.0;
        hh.add_embedding(id, MODEL, &e, "identity").unwrap();
    }
    let probe = vec![-1.0 / (DIM as f32).sqrt(); DIM];
    match hh.match_person(&probe, Some(MODEL)) {
        PersonMatch::NoMatch { best_similarity } => {
            let b = best_similarity.unwrap();
            assert!((b + 1.0 / (DIM as f32).sqrt()).abs() < 1e-5, "{b}");
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn zero_vectors_give_zero_similarity_and_are_refused_for_enrolment() {
    assert_eq!(nvr_linalg::cosine_similarity(&[0.0; DIM], &[0.5; DIM]), 0.0);
    assert_eq!(nvr_linalg::cosine_similarity(&[0.0; DIM], &[0.0; DIM]), 0.0);
    let dir = tempfile::tempdir().unwrap();
    let hh = open(&dir);
    let (ids, _) = enrol(&hh, 3, 1);
    let err = hh
        .add_embedding(ids[0], MODEL, &[0.0; DIM], "zero")
        .unwrap_err();
    assert!(
        matches!(err, HouseholdError::Invalid(ref m) if m.contains("zeros")),
        "{err}"
    );
    assert!(matches!(
        hh.match_person(&[0.0; DIM], Some(MODEL)),
        PersonMatch::UnavailableReenroll { .. }
    ));
}

#[test]
fn uncertain_band_between_thresholds_is_not_called_by_name() {
    let dir = tempfile::tempdir().unwrap();
    let hh = open(&dir);
    let (ids, v) = enrol(&hh, 10, 3);
    // Mix member 2 with a stranger: similarity lands between 0.70 and 0.85.
    let stranger = random_unit_vectors(1, DIM, 777);
    let probe: Vec<f32> = v[2 * DIM..3 * DIM]
        .iter()
        .zip(&stranger)
        .map(|(a, b)| 0.8 * a + 0.6 * b)
        .collect();
    match hh.match_person(&probe, Some(MODEL)) {
        PersonMatch::Uncertain {
            member_id,
            similarity,
            ..
        } => {
            assert_eq!(member_id, ids[2]);
            assert!((0.70..0.85).contains(&similarity), "{similarity}");
        }
        other => panic!("{other:?}"),
    }
    let top = hh.top_k(&probe, Some(MODEL), 3).unwrap();
    assert_eq!(top.len(), 3);
    assert_eq!(top[0].member_id, ids[2]);
    assert!(top[0].similarity >= top[1].similarity && top[1].similarity >= top[2].similarity);
}

#[test]
fn provenance_other_model_other_dimension_missing_model_empty_gallery() {
    let dir = tempfile::tempdir().unwrap();
    let hh = open(&dir);
    let probe = random_unit_vectors(1, DIM, 5);
    assert_eq!(hh.match_person(&probe, Some(MODEL)), PersonMatch::NoGallery);
    let (ids, v) = enrol(&hh, 4, 9);
    let own = &v[..DIM];
    // Same vector under another model id: never compared.
    match hh.match_person(own, Some("other-model")) {
        PersonMatch::UnavailableReenroll { skipped, reason } => {
            assert_eq!(skipped, 4);
            assert!(reason.contains("other-model"), "{reason}");
        }
        other => panic!("{other:?}"),
    }
    // Another dimension under the same model id: never compared.
    assert!(matches!(
        hh.match_person(&own[..256], Some(MODEL)),
        PersonMatch::UnavailableReenroll { skipped: 4, .. }
    ));
    // A probe without a model id.
    assert!(matches!(
        hh.match_person(own, None),
        PersonMatch::UnavailableReenroll { skipped: 4, .. }
    ));
    assert!(matches!(
        hh.match_person(own, Some("")),
        PersonMatch::UnavailableReenroll { .. }
    ));
    // Rows of another dimension for the same member do not disturb the 512-d matrix.
    hh.add_embedding(ids[0], MODEL, &random_unit_vectors(1, 128, 1), "small")
        .unwrap();
    assert!(matches!(
        hh.match_person(own, Some(MODEL)),
        PersonMatch::Match { member_id, .. } if member_id == ids[0]
    ));
}

#[test]
fn schedules_follow_the_injected_clock() {
    // Monday 2026-11-23 09:00 UTC.
    let clock = Arc::new(ManualClock::new(0, (1_795_392_000 + 9 * 3600) * 1_000_000));
    let dir = tempfile::tempdir().unwrap();
    let hh = open_with(&dir, clock.clone());
    let cleaner: Schedule = "mon-fri 08:00-12:00".parse().unwrap();
    let id = hh
        .add_member("Cleaner", Role::ServiceWorker, "", &[cleaner])
        .unwrap();
    let v = random_unit_vectors(1, DIM, 11);
    hh.add_embedding(id, MODEL, &v, "t").unwrap();
    let status = |hh: &Household| match hh.match_person(&v, Some(MODEL)) {
        PersonMatch::Match {
            schedule_status, ..
        } => schedule_status,
        other => panic!("{other:?}"),
    };
    assert_eq!(status(&hh), ScheduleStatus::Within);
    clock.advance(std::time::Duration::from_secs(4 * 3600));
    assert_eq!(status(&hh), ScheduleStatus::Outside);
}

#[test]
fn twenty_matchers_stay_valid_while_members_come_and_go() {
    let dir = tempfile::tempdir().unwrap();
    let hh = Arc::new(open(&dir));
    let (ids, v) = enrol(&hh, 50, 21);
    let v = Arc::new(v);
    let stop = Arc::new(AtomicBool::new(false));
    let matchers: Vec<_> = (0..20)
        .map(|t| {
            let (hh, v, stop, ids) = (hh.clone(), v.clone(), stop.clone(), ids.clone());
            thread::spawn(move || {
                let mut n = 0u32;
                while !stop.load(Ordering::Relaxed) || n < 50 {
                    let i = (t * 7 + n as usize) % 50;
                    let probe = perturbed(&v[i * DIM..(i + 1) * DIM], 0.01, u64::from(n));
                    match hh.match_person(&probe, Some(MODEL)) {
                        // Stable members (the first 50) are always found as themselves.
                        PersonMatch::Match { member_id, .. } => assert_eq!(member_id, ids[i]),
                        other => panic!("thread {t}: member {i}: {other:?}"),
                    }
                    n += 1;
                }
                n
            })
        })
        .collect();
    // Meanwhile: enrol and remove other members.
    for round in 0..30 {
        let extra = random_unit_vectors(1, DIM, 10_000 + round);
        let id = hh
            .add_member("visitor", Role::FrequentVisitor, "", &[])
            .unwrap();
        hh.add_embedding(id, MODEL, &extra, "t").unwrap();
        if round % 2 == 0 {
            hh.remove_member(id).unwrap();
        }
    }
    stop.store(true, Ordering::Relaxed);
    for m in matchers {
        assert!(m.join().expect("a matcher saw an invalid result") >= 50);
    }
    assert_eq!(hh.members().unwrap().len(), 50 + 15);
}

#[test]
fn data_survives_a_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let (ids, v) = {
        let hh = open(&dir);
        let sched: Schedule = "daily 22:00-06:00".parse().unwrap();
        let r = enrol(&hh, 5, 77);
        hh.add_member("Night nurse", Role::ServiceWorker, "agency", &[sched])
            .unwrap();
        hh.add_vehicle(&NewVehicle {
            description: "blue estate".into(),
            plate: Some("AB12 CDE".into()),
            trusted: true,
            ..NewVehicle::default()
        })
        .unwrap();
        r
    };
    let hh = open(&dir);
    assert!(matches!(
        hh.match_person(&v[3 * DIM..4 * DIM], Some(MODEL)),
        PersonMatch::Match { member_id, .. } if member_id == ids[3]
    ));
    let members = hh.members().unwrap();
    assert_eq!(members.len(), 6);
    let nurse = members.iter().find(|m| m.name == "Night nurse").unwrap();
    assert_eq!(nurse.schedules, ["mon,tue,wed,thu,fri,sat,sun 22:00-06:00"]);
    assert_eq!(nurse.notes, "agency");
    assert_eq!(members[0].embeddings.get(MODEL), Some(&1));
    assert_eq!(hh.vehicles().unwrap()[0].plate.as_deref(), Some("AB12 CDE"));
    assert!(hh.integrity_check().unwrap().is_empty());
}

#[test]
fn removing_a_member_removes_their_embeddings() {
    let dir = tempfile::tempdir().unwrap();
    let hh = open(&dir);
    let (ids, v) = enrol(&hh, 3, 8);
    hh.remove_member(ids[1]).unwrap();
    assert!(matches!(
        hh.match_person(&v[DIM..2 * DIM], Some(MODEL)),
        PersonMatch::NoMatch { .. }
    ));
    assert!(matches!(
        hh.remove_member(ids[1]),
        Err(HouseholdError::NoMember(_))
    ));
    assert!(matches!(
        hh.add_embedding(9999, MODEL, &v[..DIM], "t"),
        Err(HouseholdError::NoMember(9999))
    ));
}

#[test]
fn corrupt_rows_are_skipped_counted_and_never_scored() {
    let dir = tempfile::tempdir().unwrap();
    let (ids, v) = {
        let hh = open(&dir);
        enrol(&hh, 3, 12)
    };
    // Damage the database behind the application's back, as a bad disk or a hand edit would.
    let conn = store::open(&dir.path().join(store::DB_FILE)).unwrap();
    let nan = nvr_edge::household::vectors::to_blob(&[f32::NAN; DIM]);
    conn.execute(
        "INSERT INTO person_embeddings (member_id, model_id, dim, vector, created_at) VALUES (?1, ?2, 512, ?3, 0)",
        rusqlite::params![ids[0], MODEL, nan],
    )
    .unwrap();
    conn.execute(
        "INSERT INTO person_embeddings (member_id, model_id, dim, vector, created_at) VALUES (?1, ?2, 512, x'00010203', 0)",
        rusqlite::params![ids[1], MODEL],
    )
    .unwrap();
    conn.execute(
        "INSERT INTO person_embeddings (member_id, model_id, dim, vector, created_at) VALUES (?1, ?2, 512, zeroblob(2048), 0)",
        rusqlite::params![ids[2], MODEL],
    )
    .unwrap();
    drop(conn);
    let hh = open(&dir);
    let g = hh.gallery();
    assert_eq!(g.corrupt_rows, 3);
    assert_eq!(g.person_rows(), 3);
    for (i, id) in ids.iter().enumerate() {
        match hh.match_person(&v[i * DIM..(i + 1) * DIM], Some(MODEL)) {
            PersonMatch::Match {
                member_id,
                similarity,
                ..
            } => {
                assert_eq!(member_id, *id);
                assert!(similarity.is_finite() && similarity > 0.999);
            }
            other => panic!("{other:?}"),
        }
    }
}

#[test]
fn migration_upgrades_a_v1_database_and_keeps_its_data() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(store::DB_FILE);
    {
        let conn = store::open_unmigrated(&path).unwrap();
        store::migrate(&conn, 1).unwrap();
        assert_eq!(store::schema_version(&conn).unwrap(), 1);
        conn.execute(
            "INSERT INTO members (name, role, created_at) VALUES ('Ada', 'resident', 0)",
            [],
        )
        .unwrap();
        let v = nvr_edge::household::vectors::to_blob(&random_unit_vectors(1, DIM, 1));
        conn.execute(
            "INSERT INTO person_embeddings (member_id, model_id, dim, vector, created_at) VALUES (1, ?1, 512, ?2, 0)",
            rusqlite::params![MODEL, v],
        )
        .unwrap();
        let has_vehicles: i64 = conn
            .query_row(
                "SELECT count(*) FROM sqlite_master WHERE name = 'vehicles'",
                [],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(has_vehicles, 0);
    }
    let hh = open(&dir);
    let conn = store::open(&path).unwrap();
    assert_eq!(store::schema_version(&conn).unwrap(), store::SCHEMA_VERSION);
    assert_eq!(hh.members().unwrap()[0].name, "Ada");
    assert!(matches!(
        hh.match_person(&random_unit_vectors(1, DIM, 1), Some(MODEL)),
        PersonMatch::Match { member_id: 1, .. }
    ));
    hh.add_vehicle(&NewVehicle {
        plate: Some("XY1".into()),
        trusted: true,
        ..NewVehicle::default()
    })
    .unwrap();
    let mode: String = conn
        .query_row("PRAGMA journal_mode", [], |r| r.get(0))
        .unwrap();
    assert_eq!(mode, "wal");
    let fk: i64 = conn
        .query_row("PRAGMA foreign_keys", [], |r| r.get(0))
        .unwrap();
    assert_eq!(fk, 1);
}

#[test]
fn a_database_from_a_newer_build_is_left_alone() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(store::DB_FILE);
    let conn = store::open_unmigrated(&path).unwrap();
    conn.pragma_update(None, "user_version", 99).unwrap();
    drop(conn);
    let err = Household::open_in(
        dir.path(),
        HouseholdSection::default(),
        Arc::new(SystemClock),
    )
    .err()
    .unwrap();
    assert!(err.to_string().contains("99"), "{err}");
}

fn plate(hh: &Household, p: &str) -> VehicleMatch {
    hh.match_vehicle(VehicleProbe {
        plate: Some(p),
        ..VehicleProbe::default()
    })
}

#[test]
fn plates_match_exactly_through_case_separators_and_confusions() {
    let dir = tempfile::tempdir().unwrap();
    let hh = open(&dir);
    let car = hh
        .add_vehicle(&NewVehicle {
            description: "family car".into(),
            plate: Some("AB12 CDE".into()),
            trusted: true,
            ..NewVehicle::default()
        })
        .unwrap();
    hh.add_vehicle(&NewVehicle {
        description: "neighbour's van".into(),
        plate: Some("XY99 ZZZ".into()),
        trusted: false,
        ..NewVehicle::default()
    })
    .unwrap();
    for read in ["AB12 CDE", "ab12cde", "AB-12.CDE", " a b 1 2 c d e "] {
        match plate(&hh, read) {
            VehicleMatch::Match {
                vehicle_id,
                kind,
                similarity,
                ..
            } => {
                assert_eq!(
                    (vehicle_id, kind, similarity),
                    (car, VehicleMatchKind::LicensePlate, 1.0),
                    "{read}"
                );
            }
            other => panic!("{read}: {other:?}"),
        }
    }
    // OCR confusions (B->8, 1->I, D->0): folded, distance 0.
    match plate(&hh, "A8I2 C0E") {
        VehicleMatch::Match {
            vehicle_id,
            kind,
            distance,
            similarity,
            ..
        } => {
            assert_eq!(
                (vehicle_id, kind, distance),
                (car, VehicleMatchKind::LicensePlateFuzzy, Some(0))
            );
            assert!(similarity < 1.0 && similarity > 0.9);
        }
        other => panic!("{other:?}"),
    }
    // One character wrong: distance 1.
    assert!(matches!(
        plate(&hh, "AB12 CDF"),
        VehicleMatch::Match {
            kind: VehicleMatchKind::LicensePlateFuzzy,
            distance: Some(1),
            ..
        }
    ));
    // Two wrong: no match.
    assert!(matches!(
        plate(&hh, "AB12 CFF"),
        VehicleMatch::NoMatch { .. }
    ));
    // Untrusted vehicles never match, even exactly.
    assert!(matches!(
        plate(&hh, "XY99ZZZ"),
        VehicleMatch::NoMatch { .. }
    ));
}

#[test]
fn ambiguous_fuzzy_plate_and_short_plates_do_not_match() {
    let dir = tempfile::tempdir().unwrap();
    let hh = open(&dir);
    for p in ["KL55 ABC", "KL55 ABD", "A1"] {
        hh.add_vehicle(&NewVehicle {
            plate: Some(p.into()),
            trusted: true,
            ..NewVehicle::default()
        })
        .unwrap();
    }
    match plate(&hh, "KL55 ABX") {
        VehicleMatch::NoMatch { note } => assert!(note.unwrap().contains("more than one")),
        other => panic!("{other:?}"),
    }
    assert!(matches!(
        plate(&hh, "A1"),
        VehicleMatch::Match {
            kind: VehicleMatchKind::LicensePlate,
            ..
        }
    ));
    assert!(matches!(plate(&hh, "AI"), VehicleMatch::NoMatch { .. }));
}

#[test]
fn vehicles_match_visually_with_their_own_threshold_and_attributes() {
    let dir = tempfile::tempdir().unwrap();
    let hh = open(&dir);
    let e = random_unit_vectors(2, 256, 4);
    let van = hh
        .add_vehicle(&NewVehicle {
            description: "white van".into(),
            vehicle_type: Some("van".into()),
            color: Some("white".into()),
            trusted: true,
            embedding: Some(("veh-v1".into(), e[..256].to_vec())),
            ..NewVehicle::default()
        })
        .unwrap();
    let probe = perturbed(&e[..256], 0.01, 1);
    let visual = |t: Option<&str>, c: Option<&str>, m: &str, p: &[f32]| {
        hh.match_vehicle(VehicleProbe {
            embedding: Some((m, p)),
            vehicle_type: t,
            color: c,
            ..VehicleProbe::default()
        })
    };
    assert!(matches!(
        visual(Some("van"), Some("White"), "veh-v1", &probe),
        VehicleMatch::Match { vehicle_id, kind: VehicleMatchKind::VehicleVisual, .. } if vehicle_id == van
    ));
    assert!(matches!(
        visual(Some("car"), None, "veh-v1", &probe),
        VehicleMatch::NoMatch { .. }
    ));
    assert!(matches!(
        visual(None, None, "veh-v2", &probe),
        VehicleMatch::NoMatch { .. }
    ));
    assert!(matches!(
        visual(None, None, "veh-v1", &e[256..]),
        VehicleMatch::NoMatch { .. }
    ));
    // Registration needs a plate or an embedding.
    assert!(matches!(
        hh.add_vehicle(&NewVehicle {
            trusted: true,
            ..NewVehicle::default()
        }),
        Err(HouseholdError::Invalid(_))
    ));
}

#[test]
fn two_processes_opening_a_new_database_at_once_both_succeed() {
    // The service and a CLI command starting together must not both apply a migration.
    for _ in 0..5 {
        let dir = tempfile::tempdir().unwrap();
        let path = Arc::new(dir.path().join(store::DB_FILE));
        let openers: Vec<_> = (0..4)
            .map(|_| {
                let path = path.clone();
                thread::spawn(move || {
                    store::open(&path).map(|c| store::schema_version(&c).unwrap())
                })
            })
            .collect();
        for o in openers {
            assert_eq!(o.join().unwrap().unwrap(), store::SCHEMA_VERSION);
        }
    }
}
