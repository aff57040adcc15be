//! The appliance end to end: a synthetic camera's walking figure sets off the motion gate,
//! an event opens, X-CLIP classifies clips sampled from the ring, the event is stored with
//! the model named (and flagged as a placeholder) and its video file players open; a still
//! scene records nothing; kill -9 loses no committed event and leaves no video that claims
//! to be complete.

use crate::common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use nvr_edge::clock::SystemClock;
use nvr_edge::config::Config;
use nvr_edge::config::Retention;
use nvr_edge::events::EventStore;
use nvr_edge::service::Appliance;

fn config(data: &std::path::Path, camera: &str) -> Config {
    Config::from_toml_str(
        &format!(
            r#"
            [storage]
            data_dir = {data:?}
            [xclip]
            window_secs = 2.0
            rerun_secs = 1.0
            [motion]
            analysis_fps = 10.0
            {camera}
            "#
        ),
        "test",
    )
    .unwrap()
}

const WALKER: &str = r#"
[[cameras]]
id = "porch"
source = "synthetic"
width = 320
height = 240
fps = 15
ring = { frames = 300, max_bytes = 16000000 }
"#;

#[test]
fn motion_opens_an_event_that_x_clip_classifies() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path(), WALKER);
    let mut app = Appliance::start(&cfg, Arc::new(SystemClock)).unwrap();
    assert!(app.model.as_ref().unwrap().placeholder);
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let events = app.events.list(10, None).unwrap();
        if events.iter().any(|e| e.clips >= 1) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no classified event: {events:?} {:?}",
            app.analysis()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let stats = app.analysis();
    assert!(
        stats[0].moving_frames > 0 && stats[0].events >= 1,
        "{stats:?}"
    );
    assert!(stats[0].gate_ms_avg > 0.0);
    app.stop();
    drop(app);

    // What was committed survives: reopen the database.
    let store = EventStore::open_in(dir.path(), Retention::default()).unwrap();
    let events = store.list(10, Some("porch")).unwrap();
    let e = events
        .iter()
        .find(|e| e.clips >= 1)
        .expect("a classified event");
    assert_eq!(e.camera, "porch");
    assert!(e.action.is_some() && e.confidence.is_some());
    assert_eq!(e.model.as_deref(), Some("xclip-tiny"));
    assert!(e.model_placeholder);
    assert!(e.end_us.is_some(), "stopping closes the open event");
    assert!(e.end_us.unwrap() >= e.start_us);
    // Stopping finishes the event's video: the pre-roll and everything since.
    let v = e.video.as_ref().expect("the event has a video");
    assert_eq!(v.state, "complete", "{v:?}");
    let path = dir.path().join("clips").join(&v.file);
    assert_eq!(
        std::fs::metadata(&path).unwrap().len(),
        v.bytes.unwrap(),
        "{v:?}"
    );
    if let Some(p) = common::ffprobe(&path) {
        assert_eq!((p.codec.as_str(), p.width, p.height), ("mjpeg", 320, 240));
        assert_eq!(p.frames_read, u64::from(v.frames.unwrap()));
        assert!((p.frame_rate - 15.0).abs() < 1.5, "{p:?}");
    }

    // The same through the CLI a technician uses.
    let conf = dir.path().join("c.toml");
    std::fs::write(&conf, format!("[storage]\ndata_dir = {:?}\n", dir.path())).unwrap();
    let cli = |args: &[&str]| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_nvr-edge"))
            .arg("--config")
            .arg(&conf)
            .arg("events")
            .args(args)
            .output()
            .unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
        )
    };
    let (code, list) = cli(&["list", "--limit", "5"]);
    assert_eq!(code, Some(0));
    let list: serde_json::Value = serde_json::from_str(&list).unwrap();
    assert!(list.as_array().unwrap().iter().any(|x| x["id"] == e.id));
    let (code, show) = cli(&["show", &e.id.to_string()]);
    assert_eq!(code, Some(0));
    let show: serde_json::Value = serde_json::from_str(&show).unwrap();
    assert_eq!(show["model_placeholder"], true);
    let (code, csv) = cli(&["export"]);
    assert_eq!(code, Some(0));
    assert!(csv.starts_with("id,camera,start_us"));
    assert!(csv.lines().count() >= 2);
    assert_eq!(cli(&["show", "999999"]).0, Some(2));
}

#[test]
fn a_still_scene_records_nothing() {
    let dir = tempfile::tempdir().unwrap();
    // One frame of the synthetic scene, replayed over and over: nothing moves.
    let frames = dir.path().join("still");
    std::fs::create_dir(&frames).unwrap();
    let c = Config::from_toml_str(WALKER, "t").unwrap();
    let mut src =
        nvr_edge::capture::open_source(&c.cameras[0], Arc::new(SystemClock), false).unwrap();
    let mut buf = Vec::new();
    src.next_frame(&mut buf).unwrap();
    std::fs::write(frames.join("a.jpg"), &buf).unwrap();
    let cam = format!(
        "[[cameras]]\nid = \"still\"\nsource = \"replay\"\npath = {frames:?}\nwidth = 320\nheight = 240\nfps = 15\nring = {{ frames = 100, max_bytes = 8000000 }}\n"
    );
    let cfg = config(dir.path(), &cam);
    let mut app = Appliance::start(&cfg, Arc::new(SystemClock)).unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while app.analysis()[0].analysed < 15 {
        assert!(Instant::now() < deadline, "analysis did not run");
        std::thread::sleep(Duration::from_millis(50));
    }
    let stats = app.analysis();
    app.stop();
    assert_eq!(stats[0].events, 0, "{stats:?}");
    assert_eq!(stats[0].moving_frames, 0, "{stats:?}");
    assert!(app.events.list(10, None).unwrap().is_empty());
}

#[test]
fn events_are_kept_within_the_retention_limits() {
    let dir = tempfile::tempdir().unwrap();
    let store = EventStore::open_in(
        dir.path(),
        Retention {
            max_rows: 5,
            max_age_days: 1,
        },
    )
    .unwrap();
    let day_us = 86_400_000_000i64;
    let t0 = 1_800_000_000_000_000i64;
    let old = store.start("a", t0).unwrap().id;
    for i in 1..=8 {
        store.start("a", t0 + 2 * day_us + i).unwrap();
    }
    let all = store.list(100, None).unwrap();
    assert_eq!(all.len(), 5, "row limit");
    assert!(store.get(old).unwrap().is_none(), "age limit");
    assert!(
        all.windows(2).all(|w| w[0].start_us >= w[1].start_us),
        "newest first"
    );
}

#[test]
fn kill_9_during_event_writes_loses_no_committed_event() {
    let dir = tempfile::tempdir().unwrap();
    let conf = dir.path().join("c.toml");
    std::fs::write(
        &conf,
        format!(
            "[storage]\ndata_dir = {:?}\n[xclip]\nwindow_secs = 1.0\nrerun_secs = 0.5\n[motion]\nanalysis_fps = 10.0\nstop_frames = 1\n{WALKER}",
            dir.path()
        ),
    )
    .unwrap();
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_nvr-edge"))
        .arg("--config")
        .arg(&conf)
        .arg("run")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    // Wait for committed, classified events, then kill -9 while writes go on.
    let store = EventStore::open_in(dir.path(), Retention::default()).unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    let before = loop {
        let e = store.list(1000, None).unwrap();
        if e.iter().filter(|e| e.clips >= 1).count() >= 1 {
            break e;
        }
        assert!(Instant::now() < deadline, "no events before the kill");
        std::thread::sleep(Duration::from_millis(100));
    };
    // Long enough for an open event to have been seen going on (written every second).
    std::thread::sleep(Duration::from_millis(2500));
    let recording_before: Vec<i64> = store
        .list(1000, None)
        .unwrap()
        .iter()
        .filter(|e| e.video.as_ref().is_some_and(|v| v.state == "recording"))
        .map(|e| e.id)
        .collect();
    let kill_wall_us = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_micros() as i64;
    child.kill().unwrap();
    child.wait().unwrap();
    drop(store);
    // Whatever was being written is a .part; every .avi is complete and plays.
    let clips = dir.path().join("clips");
    let names: Vec<String> = std::fs::read_dir(&clips)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(
        !recording_before.is_empty() && names.iter().any(|n| n.ends_with(".avi.part")),
        "a video was being written at the kill: {names:?}"
    );
    for n in names.iter().filter(|n| n.ends_with(".avi")) {
        if let Some(p) = common::ffprobe(&clips.join(n)) {
            assert!(p.frames_read > 0, "{n}: {p:?}");
        }
    }
    let conn = nvr_edge::store::open_in(dir.path()).unwrap();
    assert!(nvr_edge::store::integrity_check(&conn).unwrap().is_empty());
    let store = EventStore::open_in(dir.path(), Retention::default()).unwrap();
    let after = store.list(1000, None).unwrap();
    for e in &before {
        let kept = after
            .iter()
            .find(|a| a.id == e.id)
            .expect("a committed event survives kill -9");
        assert_eq!(kept.start_us, e.start_us);
        assert!(kept.clips >= e.clips);
    }
    // The next start removes the half-written files and marks their events.
    let cfg = Config::from_toml_str(&std::fs::read_to_string(&conf).unwrap(), "test").unwrap();
    let dir_handle = nvr_edge::recording::open_clips(&cfg.recording, dir.path(), &store).unwrap();
    let left: Vec<_> = std::fs::read_dir(dir_handle.dir())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".part"))
        .collect();
    assert!(left.is_empty(), "{left:?}");
    let after = store.list(1000, None).unwrap();
    for id in recording_before {
        let v = after.iter().find(|e| e.id == id).unwrap().video.clone();
        let state = v.unwrap().state;
        assert!(
            state == "interrupted" || state == "complete",
            "event {id}: {state}"
        );
    }
    assert!(after
        .iter()
        .all(|e| e.video.as_ref().is_none_or(|v| v.state != "recording")));
    // Events the kill left open are closed at the next start, at the last time they were
    // known to be going on, and marked interrupted (they stayed open forever before).
    let open_at_kill: Vec<_> = after
        .iter()
        .filter(|e| e.end_us.is_none())
        .cloned()
        .collect();
    assert!(
        !open_at_kill.is_empty(),
        "no event was open at the kill: {after:?}"
    );
    drop(store);
    let no_cameras = config(dir.path(), "");
    let mut app = Appliance::start(&no_cameras, Arc::new(SystemClock)).unwrap();
    for e in &open_at_kill {
        let closed = app.events.get(e.id).unwrap().unwrap();
        assert!(closed.interrupted, "{closed:?}");
        let end = closed.end_us.expect("closed at start");
        assert!(end >= closed.start_us, "{closed:?}");
    }
    // One open for over 1.5 s was seen going on: its end is past its start, not past the
    // kill.
    let long: Vec<_> = open_at_kill
        .iter()
        .filter(|e| kill_wall_us - e.start_us > 1_500_000)
        .collect();
    assert!(!long.is_empty(), "{open_at_kill:?}");
    for e in long {
        let end = app.events.get(e.id).unwrap().unwrap().end_us.unwrap();
        assert!(end > e.start_us && end <= kill_wall_us, "{e:?} ended {end}");
    }
    app.stop();
}

/// Motion that goes on past `recording.max_secs` (the walking figure never stops) becomes
/// consecutive events, each with a complete video: no stretch of it goes unrecorded.
#[test]
fn long_motion_becomes_consecutive_events_each_with_its_video() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = Config::from_toml_str(
        &format!(
            "[storage]\ndata_dir = {:?}\n[identity]\nenabled = false\n[xclip]\nwindow_secs = 1.0\nrerun_secs = 1.0\n[motion]\nanalysis_fps = 10.0\n[recording]\nmax_secs = 2.0\npre_secs = 0.5\npost_secs = 0.5\n{WALKER}",
            dir.path()
        ),
        "test",
    )
    .unwrap();
    let mut app = Appliance::start(&cfg, Arc::new(SystemClock)).unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    while app.analysis()[0].events_split < 3 {
        assert!(
            Instant::now() < deadline,
            "motion was not split: {:?}",
            app.analysis()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    app.stop();
    let mut events = app.events.list(100, None).unwrap();
    events.reverse();
    assert!(events.len() >= 4, "{events:?}");
    for w in events.windows(2) {
        let end = w[0].end_us.expect("closed");
        // The next event opens at the frame that closed this one.
        assert!(w[1].start_us - end < 500_000, "gap between {w:?}");
        assert!(
            end - w[0].start_us < 3_000_000,
            "event longer than max_secs: {w:?}"
        );
    }
    // The last one was closed by the stop, whenever that came.
    for e in &events[..events.len() - 1] {
        let v = e.video.as_ref().expect("each event has a video");
        assert_eq!(v.state, "complete", "{e:?}");
        assert!(v.frames.unwrap_or(0) > 10, "{e:?}");
    }
}

#[test]
fn run_logs_a_summary_line_per_camera_per_interval() {
    let dir = tempfile::tempdir().unwrap();
    let conf = dir.path().join("c.toml");
    std::fs::write(
        &conf,
        format!(
            "[storage]\ndata_dir = {:?}\n[log]\nsummary_interval_secs = 1\n[motion]\nanalysis_fps = 5.0\n{WALKER}",
            dir.path()
        ),
    )
    .unwrap();
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_nvr-edge"))
        .arg("--config")
        .arg(&conf)
        .arg("run")
        .env("NO_COLOR", "1")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let reader = std::thread::spawn(move || {
        use std::io::BufRead;
        std::io::BufReader::new(stderr)
            .lines()
            .map_while(Result::ok)
            .collect::<Vec<String>>()
    });
    std::thread::sleep(Duration::from_secs(5));
    std::process::Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(child.wait().unwrap().success());
    // tracing may colour its fields; drop the escape sequences before reading them.
    let strip = |l: &str| {
        let mut out = String::new();
        let mut esc = false;
        for c in l.chars() {
            match (esc, c) {
                (false, '\x1b') => esc = true,
                (true, 'm') => esc = false,
                (false, c) => out.push(c),
                _ => {}
            }
        }
        out
    };
    let lines: Vec<String> = reader
        .join()
        .unwrap()
        .iter()
        .map(|l| strip(l))
        .filter(|l| l.contains("camera summary") && l.contains("camera=porch"))
        .collect();
    // One per second while running (the first after ~1 s), plus the final one.
    assert!(lines.len() >= 3, "{lines:?}");
    let field = |l: &str, k: &str| -> f64 {
        let v = l
            .split(&format!("{k}="))
            .nth(1)
            .unwrap_or_else(|| panic!("{k} in {l}"));
        v.split_whitespace().next().unwrap().parse().unwrap()
    };
    let l = &lines[1];
    for k in [
        "camera_fps",
        "process_fps",
        "skipped_fps",
        "ring_frames",
        "memory_mib",
    ] {
        assert!(field(l, k) >= 0.0, "{k}: {l}");
    }
    // The camera runs at 15 fps; the gate looks at 5 of them a second, the rest go by.
    assert!(field(l, "camera_fps") > 5.0, "{l}");
    let (p, s) = (field(l, "process_fps"), field(l, "skipped_fps"));
    assert!(p > 1.0 && p < 8.0, "{l}");
    assert!(s > 3.0 && s < 16.0, "{l}");
    assert!(l.contains("inference_ms="), "{l}");
}
