//! Identity: observations matched against a real household database, agreement over
//! frames before anyone is named, and what a recognised member or trusted vehicle does to
//! an event's risk (in the event store, and end to end through `Appliance` with an observer
//! at the seam the real identity models fill).

use std::sync::Arc;
use std::time::{Duration, Instant};

use nvr_edge::clock::{ManualClock, SystemClock};
use nvr_edge::config::IdentityConfig;
use nvr_edge::config::{Config, HouseholdSection};
use nvr_edge::household::identity::{EventIdentity, Identified};
use nvr_edge::household::{Household, NewVehicle, Role, Schedule};
use nvr_edge::inference::identity::{ModelError, Observation, Observer};
use nvr_edge::inference::Risk;
use nvr_edge::ring::FrameBatch;

const MODEL: &str = "test-embedder";

fn unit(seed: u64, dim: usize) -> Vec<f32> {
    let mut v = nvr_edge::inference::xclip::seeded_values(seed, dim);
    let n = v.iter().map(|x| x * x).sum::<f32>().sqrt();
    v.iter_mut().for_each(|x| *x /= n);
    v
}

fn household(dir: &std::path::Path) -> Household {
    // Wall clock at 1970-01-01 00:00 UTC (a Thursday).
    Household::open_in(
        dir,
        HouseholdSection::default(),
        Arc::new(ManualClock::new(0, 0)),
    )
    .unwrap()
}

fn person(ts_us: i64, embedding: Vec<f32>) -> Observation {
    Observation::Person {
        ts_us,
        model_id: MODEL.into(),
        embedding,
    }
}

#[test]
fn a_member_is_named_after_agreeing_frames_and_lowers_the_risk() {
    let dir = tempfile::tempdir().unwrap();
    let h = household(dir.path());
    let ann = h.add_member("Ann", Role::Resident, "", &[]).unwrap();
    h.add_embedding(ann, MODEL, &unit(1, 192), "test").unwrap();
    let cfg = IdentityConfig::default();
    let mut t = EventIdentity::default();
    // One frame, seen twice (two faces alike in one frame): one frame of agreement.
    t.add(&h, &[person(100, unit(1, 192)), person(100, unit(1, 192))]);
    assert_eq!(t.confirmed(&cfg).count(), 0);
    assert_eq!(t.lower(Risk::High, &cfg), (Risk::High, None));
    // A stranger in the next frame is counted, not named.
    t.add(&h, &[person(200, unit(99, 192))]);
    assert_eq!(t.unknown_people, 1);
    // Ann again in another frame: named.
    t.add(&h, &[person(300, unit(1, 192))]);
    let named: Vec<_> = t.confirmed(&cfg).collect();
    assert!(
        matches!(named[..], [Identified::Member { member_id, frames: 2, .. }] if *member_id == ann),
        "{named:?}"
    );
    let (r, why) = t.lower(Risk::High, &cfg);
    assert_eq!(r, Risk::Low);
    assert_eq!(why.as_deref(), Some("member Ann (was high)"));
    // Critical goes at most to high.
    assert_eq!(t.lower(Risk::Critical, &cfg).0, Risk::High);
    assert_eq!(t.lower(Risk::Low, &cfg), (Risk::Low, None));
    // Embeddings of another model are never compared.
    let mut other = EventIdentity::default();
    other.add(
        &h,
        &[Observation::Person {
            ts_us: 1,
            model_id: "other-model".into(),
            embedding: unit(1, 192),
        }],
    );
    assert_eq!((other.incomparable, other.candidates.len()), (1, 0));
}

#[test]
fn a_member_outside_their_schedule_and_an_untrusted_vehicle_lower_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let h = household(dir.path());
    // Expected 10:00-11:00 only; the clock says midnight.
    let bob = h
        .add_member(
            "Bob",
            Role::ServiceWorker,
            "",
            &[Schedule {
                days: 0x7f,
                start_min: 600,
                end_min: 660,
            }],
        )
        .unwrap();
    h.add_embedding(bob, MODEL, &unit(2, 192), "test").unwrap();
    h.add_vehicle(&NewVehicle {
        description: "van".into(),
        plate: Some("AB 123 CD".into()),
        trusted: false,
        ..NewVehicle::default()
    })
    .unwrap();
    h.add_vehicle(&NewVehicle {
        description: "family car".into(),
        plate: Some("XY 987 ZW".into()),
        trusted: true,
        ..NewVehicle::default()
    })
    .unwrap();
    let cfg = IdentityConfig::default();
    let mut t = EventIdentity::default();
    let car = |ts, plate: &str| Observation::Vehicle {
        ts_us: ts,
        plate: Some(plate.into()),
        embedding: None,
    };
    for ts in [1, 2] {
        t.add(&h, &[person(ts, unit(2, 192)), car(ts, "AB123CD")]);
    }
    // Bob is named (outside his hours); the van is not: only trusted vehicles match, as in
    // the spec's matcher.
    assert_eq!(t.confirmed(&cfg).count(), 1, "{:?}", t.candidates);
    assert_eq!(t.lower(Risk::Medium, &cfg), (Risk::Medium, None));
    // The trusted car, its plate read with one OCR confusion (Z/2): one level.
    for ts in [3, 4] {
        t.add(&h, &[car(ts, "XY 987 2W")]);
    }
    let (r, why) = t.lower(Risk::Medium, &cfg);
    assert_eq!(r, Risk::Low);
    assert!(why.unwrap().contains("trusted vehicle family car"));
}

/// The synthetic "porch" camera (a moving scene, 320x240 at 15 fps) analysed at 10 frames/s,
/// with `xclip` as the body of the `[xclip]` section; data under `data`.
fn porch(data: &std::path::Path, xclip: &str) -> Config {
    Config::from_toml_str(
        &format!(
            r#"
            [storage]
            data_dir = {data:?}
            [xclip]
            {xclip}
            [motion]
            analysis_fps = 10.0
            [[cameras]]
            id = "porch"
            source = "synthetic"
            width = 320
            height = 240
            fps = 15
            ring = {{ frames = 300, max_bytes = 16000000 }}
            "#
        ),
        "test",
    )
    .unwrap()
}

/// The appliance on `cfg` with `observer` at the identity seam, naming `household`'s people.
fn start_observed(
    cfg: &Config,
    observer: Arc<dyn Observer>,
    household: Arc<Household>,
) -> nvr_edge::service::Appliance {
    let identity = nvr_edge::analysis::IdentityDeps {
        observer,
        household,
        cfg: cfg.identity.clone(),
    };
    nvr_edge::service::Appliance::start_with_identity(
        cfg,
        Arc::new(SystemClock),
        Some(Arc::new(identity)),
    )
    .unwrap()
}

/// The first event `want` accepts, polling the running recorder for up to `secs` seconds.
fn wait_for_event(
    app: &nvr_edge::service::Appliance,
    secs: u64,
    what: &str,
    want: impl Fn(&nvr_edge::events::Event) -> bool,
) -> nvr_edge::events::Event {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        let events = app.events.list(10, None).unwrap();
        if let Some(e) = events.into_iter().find(|e| want(e)) {
            return e;
        }
        assert!(Instant::now() < deadline, "{what}: {:?}", app.analysis());
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// An observer at the seam the real identity models fill: it reports `embedding` for every
/// frame it is shown.
struct Shows(Vec<f32>);

impl Observer for Shows {
    fn describe(&self) -> String {
        "test observer (fixed embedding)".into()
    }
    fn observe(&self, frames: &FrameBatch, out: &mut Vec<Observation>) -> Result<(), ModelError> {
        for (m, _) in frames.iter() {
            out.push(person(m.ts_us, self.0.clone()));
        }
        Ok(())
    }
}

#[test]
fn the_recorder_names_a_member_in_an_event_and_lowers_its_risk() {
    let dir = tempfile::tempdir().unwrap();
    // Every prompt counts, so each event gets a risk to lower.
    let cfg = porch(
        dir.path(),
        r#"window_secs = 2.0
        rerun_secs = 1.0
        [[xclip.categories]]
        name = "suspicious"
        risk = "high"
        threshold = 0.0
        prompts = ["a person loitering", "a person looking into windows"]"#,
    );
    let h = Arc::new(
        Household::open_in(dir.path(), cfg.household.clone(), Arc::new(SystemClock)).unwrap(),
    );
    let ann = h.add_member("Ann", Role::Resident, "", &[]).unwrap();
    h.add_embedding(ann, MODEL, &unit(1, 192), "test").unwrap();
    let mut app = start_observed(&cfg, Arc::new(Shows(unit(1, 192))), h);
    let e = wait_for_event(&app, 60, "no event naming Ann", |e| {
        e.clips >= 1 && e.household.is_some()
    });
    app.stop();
    assert_eq!(e.model_risk, Some(Risk::High), "{e:?}");
    assert_eq!(e.risk, Some(Risk::Low), "{e:?}");
    assert_eq!(e.risk_note.as_deref(), Some("member Ann (was high)"));
    let named = &e.household.as_ref().unwrap()["identified"][0];
    assert_eq!(named["kind"], "member");
    assert_eq!(named["name"], "Ann");
    assert!(app.analysis()[0].identity_runs >= 1);
}

/// A replay camera (`id`, 640x480 at 10 fps) showing `frames` rendered scenes, with the
/// real identity models and one X-CLIP category (`category`, `risk`, two prompts) that
/// always fires: the config of the end-to-end tests, data under `data`.
fn replay_scene(
    data: &std::path::Path,
    id: &str,
    (category, risk, prompts): (&str, &str, [&str; 2]),
    frames: u32,
    render: impl Fn(u32) -> image::RgbImage,
) -> Config {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let dir = data.join("frames");
    std::fs::create_dir_all(&dir).unwrap();
    for i in 0..frames {
        render(i).save(dir.join(format!("{i:03}.jpg"))).unwrap();
    }
    Config::from_toml_str(
        &format!(
            r#"
            [storage]
            data_dir = {data:?}
            [identity]
            models_dir = {models:?}
            [xclip]
            window_secs = 2.0
            rerun_secs = 1.0
            [[xclip.categories]]
            name = {category:?}
            risk = {risk:?}
            threshold = 0.0
            prompts = {prompts:?}
            [motion]
            analysis_fps = 10.0
            [[cameras]]
            id = {id:?}
            source = "replay"
            path = {dir:?}
            width = 640
            height = 480
            fps = 10
            ring = {{ frames = 200, max_bytes = 16000000 }}
            "#,
            models = root.join("models/identity"),
        ),
        "test",
    )
    .unwrap()
}

/// A replay camera whose frames are a real photo of a man walking across a grey scene: the
/// real face models find and embed him, the household (enrolled from another photo of him)
/// names him, and the event's risk is lowered. Everything real from camera to database.
#[test]
#[cfg_attr(
    not(nvr_face_embedder),
    ignore = "needs the face embedder: run models/identity/fetch.py"
)]
fn a_member_walking_past_a_camera_is_recognised_with_the_real_face_models() {
    let dir = tempfile::tempdir().unwrap();
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let face = image::open(root.join("tests/data/photos/obama2.jpg"))
        .unwrap()
        .to_rgb8();
    // Head and shoulders, ~200 px tall, sliding across a 640x480 frame.
    let face = image::imageops::resize(&face, 160, 307, image::imageops::FilterType::Triangle);
    let suspicious = (
        "suspicious",
        "high",
        ["a person loitering", "a person looking into windows"],
    );
    let cfg = replay_scene(dir.path(), "door", suspicious, 40, |i| {
        let mut f = image::RgbImage::from_pixel(640, 480, image::Rgb([110, 110, 110]));
        image::imageops::replace(&mut f, &face, i64::from(20 + i * 11), 120);
        f
    });
    let h = Household::open_in(dir.path(), cfg.household.clone(), Arc::new(SystemClock)).unwrap();
    let id = h.add_member("Barack", Role::Resident, "", &[]).unwrap();
    // Enrol from a different photo of him, through the same models the recorder uses.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_nvr-edge"))
        .arg("--config")
        .arg({
            let c = dir.path().join("c.toml");
            std::fs::write(
                &c,
                format!(
                    "[storage]\ndata_dir = {:?}\n[identity]\nmodels_dir = {:?}\n",
                    dir.path(),
                    root.join("models/identity")
                ),
            )
            .unwrap();
            c
        })
        .args([
            "household",
            "enroll",
            "--member",
            &id.to_string(),
            "--image",
        ])
        .arg(root.join("tests/data/photos/obama.jpg"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    drop(h);

    let mut app = nvr_edge::service::Appliance::start(&cfg, Arc::new(SystemClock)).unwrap();
    let e = wait_for_event(&app, 90, "nobody recognised", |e| {
        e.household.is_some() && e.model_risk.is_some()
    });
    app.stop();
    let named = &e.household.as_ref().unwrap()["identified"][0];
    assert_eq!(named["name"], "Barack", "{e:?}");
    assert!(named["similarity"].as_f64().unwrap() > 0.6, "{named}");
    // Faces the models could not use are counted in the event (none here: sharp, large).
    assert!(e.household.as_ref().unwrap()["skipped"].is_array(), "{e:?}");
    assert!(e.household.as_ref().unwrap()["models"]
        .as_str()
        .unwrap()
        .contains("real weights"));
    assert_eq!(e.model_risk, Some(Risk::High));
    assert_eq!(e.risk, Some(Risk::Low), "{e:?}");
}

/// A replay camera watching a car with a registered plate pull past: the real plate reader
/// reads it in the clip windows, the trusted vehicle is named and the risk lowered by one.
#[test]
fn a_trusted_car_driving_past_is_recognised_by_its_plate() {
    let dir = tempfile::tempdir().unwrap();
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let car = image::open(root.join("tests/data/plates/car_AB123CD.png"))
        .unwrap()
        .to_rgb8();
    // The car's rear (with its plate) creeping right across a dark street.
    let crop = image::imageops::crop_imm(&car, 100, 140, 440, 270).to_image();
    let approaching = (
        "approaching",
        "medium",
        ["a car parking", "a car driving by"],
    );
    let cfg = replay_scene(dir.path(), "drive", approaching, 30, |i| {
        let mut f = image::RgbImage::from_pixel(640, 480, image::Rgb([40, 44, 48]));
        image::imageops::replace(&mut f, &crop, i64::from(i * 6), 150);
        f
    });
    let h = Household::open_in(dir.path(), cfg.household.clone(), Arc::new(SystemClock)).unwrap();
    h.add_vehicle(&NewVehicle {
        description: "red hatchback".into(),
        plate: Some("AB 123 CD".into()),
        trusted: true,
        ..NewVehicle::default()
    })
    .unwrap();
    drop(h);
    let mut app = nvr_edge::service::Appliance::start(&cfg, Arc::new(SystemClock)).unwrap();
    let e = wait_for_event(&app, 90, "no vehicle recognised", |e| {
        e.household.is_some() && e.model_risk.is_some()
    });
    app.stop();
    let named = &e.household.as_ref().unwrap()["identified"][0];
    assert_eq!(named["kind"], "vehicle", "{e:?}");
    assert_eq!(named["description"], "red hatchback");
    assert_eq!(named["how"], "license_plate");
    assert_eq!(e.model_risk, Some(Risk::Medium));
    assert_eq!(e.risk, Some(Risk::Low), "{e:?}");
    assert_eq!(
        e.risk_note.as_deref(),
        Some("trusted vehicle red hatchback (was medium)")
    );
}

/// Identity models slower than the clip windows come (1.5 s a window, one every 0.5 s): they
/// run beside the analysis, so the motion gate keeps looking at its rate, and a window that
/// arrives while another waits replaces it instead of queueing.
struct Slow;

impl Observer for Slow {
    fn describe(&self) -> String {
        "test observer (1.5 s per window)".into()
    }
    fn observe(&self, _: &FrameBatch, _: &mut Vec<Observation>) -> Result<(), ModelError> {
        std::thread::sleep(Duration::from_millis(1500));
        Ok(())
    }
}

#[test]
fn slow_identity_models_do_not_hold_up_the_motion_gate() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = porch(dir.path(), "window_secs = 1.0\nrerun_secs = 0.5");
    let household =
        Household::open_in(dir.path(), cfg.household.clone(), Arc::new(SystemClock)).unwrap();
    let mut app = start_observed(&cfg, Arc::new(Slow), Arc::new(household));
    let deadline = Instant::now() + Duration::from_secs(30);
    while app.analysis()[0].identity_windows_replaced == 0 {
        assert!(
            Instant::now() < deadline,
            "no window replaced: {:?}",
            app.analysis()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let before = app.analysis()[0].clone();
    std::thread::sleep(Duration::from_secs(3));
    let after = app.analysis()[0].clone();
    app.stop();
    // 3 s at 10 frames/s; had the gate waited for the models it would have seen a few.
    let analysed = after.analysed - before.analysed;
    assert!(
        analysed >= 15,
        "the gate analysed {analysed} frames in 3 s: {after:?}"
    );
    let runs = after.identity_runs - before.identity_runs;
    assert!(runs <= 3, "{runs} windows in 3 s at 1.5 s each");
}
