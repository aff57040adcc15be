//! Camera sources and the capture thread: synthetic frames, replay of directories and
//! MJPEG files with corrupt input, recovery when a device vanishes, and a camera's outage
//! recorded as an event of its own.

use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use nvr_edge::analysis::{AnalysisConfig, AnalysisDeps, Analyzer};
use nvr_edge::capture::jpeg::validate_jpeg;
use nvr_edge::capture::stats::CameraState;
use nvr_edge::capture::worker::Opener;
use nvr_edge::capture::{open_source, Captured, ErrorKind, FrameSource, SourceError, SourceInfo};
use nvr_edge::clock::{Clock, ManualClock, SystemClock};
use nvr_edge::config::{CameraConfig, Config};
use nvr_edge::events::{Event, EventStore, OUTAGE_ACTION, OUTAGE_CATEGORY};
use nvr_edge::pipeline::{Camera, Pipeline};
use nvr_edge::ring::{FrameFormat, FrameMeta, RingConfig};

fn camera(toml_fields: &str) -> CameraConfig {
    let cfg = Config::from_toml_str(&format!("[[cameras]]\nid = \"t\"\n{toml_fields}"), "test")
        .unwrap_or_else(|e| panic!("{e}"));
    cfg.cameras[0].clone()
}

fn synthetic(w: u32, h: u32) -> CameraConfig {
    camera(&format!(
        "source = \"synthetic\"\nwidth = {w}\nheight = {h}\nfps = 30"
    ))
}

/// Real JPEGs from the synthetic camera, for the replay tests.
fn jpegs(n: usize) -> Vec<Vec<u8>> {
    let mut src = open_source(&synthetic(160, 120), Arc::new(SystemClock), false).unwrap();
    (0..n)
        .map(|_| {
            let mut buf = Vec::new();
            src.next_frame(&mut buf).unwrap();
            buf
        })
        .collect()
}

fn wait_until(what: &str, secs: u64, mut ok: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while !ok() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn synthetic_frames_are_whole_jpegs_of_the_configured_size() {
    let mut src = open_source(&synthetic(640, 480), Arc::new(SystemClock), false).unwrap();
    assert_eq!(src.info().format, FrameFormat::Jpeg);
    let mut buf = Vec::new();
    let mut sizes = Vec::new();
    for i in 0..5 {
        let cap = src.next_frame(&mut buf).unwrap();
        assert_eq!(cap.meta.seq, i);
        assert_eq!((cap.meta.width, cap.meta.height), (640, 480));
        assert_eq!(validate_jpeg(&buf).unwrap(), (640, 480));
        let img = image::load_from_memory(&buf).unwrap();
        assert_eq!((img.width(), img.height()), (640, 480));
        sizes.push(buf.len());
    }
    // A textured scene compresses like a camera view, not like a flat colour.
    assert!(sizes.iter().all(|&s| s > 20_000), "{sizes:?}");
}

#[test]
fn synthetic_scene_is_deterministic_and_the_figure_moves() {
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    let mut a = open_source(&synthetic(320, 240), clock.clone(), false).unwrap();
    let mut b = open_source(&synthetic(320, 240), clock, false).unwrap();
    let (mut fa, mut fb) = (Vec::new(), Vec::new());
    let mut frames = Vec::new();
    for _ in 0..30 {
        a.next_frame(&mut fa).unwrap();
        b.next_frame(&mut fb).unwrap();
        assert_eq!(fa, fb, "same frame number, same bytes");
        frames.push(fa.clone());
    }
    // Decoded, the dark figure's column moves between frame 0 and frame 29.
    let dark_col = |jpeg: &[u8]| {
        let img = image::load_from_memory(jpeg).unwrap().to_luma8();
        let row = img.height() * 3 / 4;
        (0..img.width())
            .min_by_key(|&x| img.get_pixel(x, row)[0])
            .unwrap()
    };
    let (x0, x29) = (dark_col(&frames[0]), dark_col(&frames[29]));
    assert!(x29 > x0 + 10, "figure at {x0} then {x29}");
}

#[test]
fn paced_synthetic_camera_keeps_its_schedule() {
    let clock = Arc::new(ManualClock::new(5_000_000, 1_700_000_000_000_000));
    let mut src = open_source(&synthetic(160, 120), clock.clone(), true).unwrap();
    let mut buf = Vec::new();
    let ts: Vec<i64> = (0..10)
        .map(|_| src.next_frame(&mut buf).unwrap().meta.ts_us)
        .collect();
    let gaps: Vec<i64> = ts.windows(2).map(|w| w[1] - w[0]).collect();
    assert!(gaps.iter().all(|&g| g == 33_333), "{gaps:?}");
    // Falling behind by 100 ms: the slots at +33 and +67 ms are reported as dropped, not
    // delivered late in a burst; the one at +100 ms is served.
    clock.advance(Duration::from_millis(100));
    let cap = src.next_frame(&mut buf).unwrap();
    assert_eq!(cap.dropped_before, 2);
    assert_eq!(cap.meta.ts_us, ts[9] + 3 * 33_333);
}

fn write(dir: &Path, name: &str, bytes: &[u8]) {
    std::fs::write(dir.join(name), bytes).unwrap();
}

#[test]
fn replay_directory_skips_corrupt_files_and_loops() {
    let dir = tempfile::tempdir().unwrap();
    let good = jpegs(3);
    write(dir.path(), "a.jpg", &good[0]);
    write(dir.path(), "b.jpg", &good[1][..good[1].len() / 2]); // truncated
    write(dir.path(), "c.jpeg", b"not a jpeg at all");
    write(dir.path(), "d.JPG", &good[2]);
    write(dir.path(), "notes.txt", b"ignored");
    let cam = camera(&format!(
        "source = \"replay\"\npath = {:?}\nwidth = 160\nheight = 120\nfps = 30",
        dir.path()
    ));
    let mut src = open_source(&cam, Arc::new(SystemClock), false).unwrap();
    let mut buf = Vec::new();
    let mut outcomes = Vec::new();
    for _ in 0..8 {
        outcomes.push(match src.next_frame(&mut buf) {
            Ok(c) => {
                assert_eq!((c.meta.width, c.meta.height), (160, 120));
                format!("ok {}", buf.len())
            }
            Err(e) => {
                assert_eq!(e.kind(), ErrorKind::BadFrame);
                let msg = e.to_string();
                assert!(msg.contains("b.jpg") || msg.contains("c.jpeg"), "{msg}");
                "bad".to_string()
            }
        });
    }
    let a = format!("ok {}", good[0].len());
    let d = format!("ok {}", good[2].len());
    let expect = [&a, "bad", "bad", &d, &a, "bad", "bad", &d];
    assert_eq!(outcomes, expect);
}

#[test]
fn replay_mjpeg_file_splits_frames_skips_garbage_and_loops() {
    let dir = tempfile::tempdir().unwrap();
    let good = jpegs(3);
    let mut stream = b"garbage before".to_vec();
    stream.extend_from_slice(&good[0]);
    stream.extend_from_slice(&good[1]);
    stream.extend_from_slice(b"\x00\x00junk");
    stream.extend_from_slice(&good[2]);
    stream.extend_from_slice(&good[0][..100]); // recording cut short
    let path = dir.path().join("rec.mjpeg");
    std::fs::write(&path, &stream).unwrap();
    let cam = camera(&format!(
        "source = \"replay\"\npath = {path:?}\nwidth = 160\nheight = 120\nfps = 30"
    ));
    let mut src = open_source(&cam, Arc::new(SystemClock), false).unwrap();
    let mut buf = Vec::new();
    for round in 0..2 {
        for (i, want) in good.iter().enumerate() {
            src.next_frame(&mut buf)
                .unwrap_or_else(|e| panic!("round {round} frame {i}: {e}"));
            assert_eq!(&buf, want, "round {round} frame {i}");
        }
    }
}

#[test]
fn missing_replay_path_is_unavailable_and_named() {
    let cam = camera(
        "source = \"replay\"\npath = \"/nonexistent/rec\"\nwidth = 160\nheight = 120\nfps = 30",
    );
    let err = open_source(&cam, Arc::new(SystemClock), false)
        .err()
        .expect("must fail");
    assert_eq!(err.kind(), ErrorKind::Unavailable);
    assert!(err.to_string().contains("/nonexistent/rec"), "{err}");
}

#[test]
fn pipeline_counts_bad_frames_and_keeps_running() {
    let dir = tempfile::tempdir().unwrap();
    let good = jpegs(2);
    write(dir.path(), "1.jpg", &good[0]);
    write(dir.path(), "2.jpg", b"\xFF\xD8 broken");
    write(dir.path(), "3.jpg", &good[1]);
    let cfg = Config::from_toml_str(
        &format!(
            "[[cameras]]\nid = \"rep\"\nsource = \"replay\"\npath = {:?}\nwidth = 160\nheight = 120\nfps = 200\nring = {{ frames = 50, max_bytes = 4000000 }}\n\
             [[cameras]]\nid = \"gone\"\nsource = \"replay\"\npath = \"/nonexistent/x\"\nwidth = 160\nheight = 120\nfps = 30\nring = {{ frames = 5, max_bytes = 100000 }}",
            dir.path()
        ),
        "test",
    )
    .unwrap();
    let mut p = Pipeline::start(&cfg, Arc::new(SystemClock)).unwrap();
    wait_until("frames and bad frames", 20, || {
        let r = &p.reports()[0];
        r.stats.frames >= 20 && r.stats.bad_frames >= 10
    });
    let reports = p.reports();
    let rep = &reports[0];
    assert_eq!(rep.stats.state, CameraState::Streaming);
    assert!(rep.ring.len > 0 && rep.ring.len <= 50);
    let gone = &reports[1];
    assert_eq!(gone.stats.state, CameraState::Unavailable);
    assert!(gone
        .stats
        .last_error
        .as_deref()
        .unwrap_or("")
        .contains("/nonexistent/x"));
    assert_eq!(gone.stats.frames, 0);
    assert_eq!(gone.stats.camera_fps, 0.0);
    p.stop();
    assert_eq!(p.reports()[0].stats.state, CameraState::Stopped);
}

/// A camera that delivers `frames` frames, then vanishes like an unplugged USB device.
struct Unpluggable {
    info: SourceInfo,
    left: u32,
    clock: Arc<dyn Clock>,
    seq: u64,
}

impl FrameSource for Unpluggable {
    fn info(&self) -> &SourceInfo {
        &self.info
    }
    fn next_frame(&mut self, buf: &mut Vec<u8>) -> Result<Captured, SourceError> {
        if self.left == 0 {
            return Err(SourceError::from_io(
                "VIDIOC_DQBUF",
                &std::io::Error::from_raw_os_error(19),
            ));
        }
        self.left -= 1;
        self.clock.sleep(Duration::from_millis(2));
        buf.clear();
        buf.extend_from_slice(&[self.seq as u8; 64]);
        self.seq += 1;
        Ok(Captured {
            meta: FrameMeta {
                seq: self.seq,
                ts_us: self.clock.mono_us(),
                width: 8,
                height: 8,
                format: FrameFormat::Raw(*b"TEST"),
            },
            dropped_before: 0,
        })
    }
}

#[test]
fn vanished_device_is_reopened_and_the_ring_survives() {
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    let opens = Arc::new(AtomicU32::new(0));
    let opener: Opener = {
        let (opens, clock) = (opens.clone(), clock.clone());
        Box::new(move || {
            let n = opens.fetch_add(1, Ordering::SeqCst);
            if n == 1 {
                // Unplugged: the node is gone for one attempt.
                return Err(SourceError::Gone("/dev/video9: no such device".into()));
            }
            Ok(Box::new(Unpluggable {
                info: SourceInfo {
                    driver: "test".into(),
                    format: FrameFormat::Raw(*b"TEST"),
                    width: 8,
                    height: 8,
                    fps: 500.0,
                    detail: String::new(),
                },
                left: if n == 0 { 20 } else { u32::MAX },
                clock: clock.clone(),
                seq: u64::from(n) * 1000,
            }) as Box<dyn FrameSource>)
        })
    };
    let cfg = synthetic(160, 120);
    let cam = Camera::start(
        cfg,
        RingConfig {
            frames: 100,
            max_bytes: 100_000,
            max_age: Duration::from_secs(60),
        },
        clock,
        opener,
    )
    .unwrap();
    wait_until("first device loss", 10, || {
        cam.shared.stats().reconnects >= 1
    });
    wait_until("reconnect", 20, || {
        cam.shared.stats().state == CameraState::Streaming && opens.load(Ordering::SeqCst) >= 3
    });
    wait_until("frames after reconnect", 10, || {
        cam.shared.stats().frames >= 40
    });
    let st = cam.shared.stats().snapshot(SystemClock.mono_us());
    assert!(st.reconnects >= 1);
    assert!(st.last_error.unwrap().contains("device gone"));
    // Frames from before the loss are still in the ring next to the new ones.
    assert_eq!(cam.ring().with_frame(0, |f| f.meta.seq), Some(1));
    assert!(cam.ring().with_newest(|f| f.meta.seq).unwrap() > 2000);
}

/// A pipeline of one replay camera (160x120) playing `dir` at `fps`.
fn replay_pipeline(dir: &Path, fps: u32) -> Pipeline {
    let cfg = Config::from_toml_str(
        &format!(
            "[[cameras]]\nid = \"rep\"\nsource = \"replay\"\npath = {dir:?}\nwidth = 160\nheight = 120\nfps = {fps}\nring = {{ frames = 50, max_bytes = 4000000 }}\n"
        ),
        "test",
    )
    .unwrap();
    Pipeline::start(&cfg, Arc::new(SystemClock)).unwrap()
}

/// A FIFO at `path`: a plain open() of it for reading blocks until a writer comes.
fn mkfifo(path: &Path) {
    rustix::fs::mknodat(
        rustix::fs::CWD,
        path,
        rustix::fs::FileType::Fifo,
        rustix::fs::Mode::from_raw_mode(0o600),
        0,
    )
    .unwrap();
}

/// `jpeg` with the size in its frame header (SOF0/SOF2) replaced: what a pixel bomb looks
/// like (a few KB claiming gigapixels) to everything that reads headers.
fn claim_size(jpeg: &[u8], w: u16, h: u16) -> Vec<u8> {
    let mut out = jpeg.to_vec();
    let at = out
        .windows(2)
        .position(|m| m[0] == 0xFF && (m[1] == 0xC0 || m[1] == 0xC2))
        .expect("a frame header");
    out[at + 5..at + 7].copy_from_slice(&h.to_be_bytes());
    out[at + 7..at + 9].copy_from_slice(&w.to_be_bytes());
    out
}

/// A 65500x65500 header in a small file is a bad frame at the capture thread: counted,
/// never in the ring, so the motion gate never spends a decode on it.
#[test]
fn a_frame_claiming_another_size_is_a_bad_frame_not_a_ring_entry() {
    let dir = tempfile::tempdir().unwrap();
    let good = jpegs(2);
    let bomb = claim_size(&good[0], 65500, 65500);
    assert_eq!(validate_jpeg(&bomb).unwrap(), (65500, 65500));
    write(dir.path(), "1.jpg", &good[0]);
    write(dir.path(), "2.jpg", &bomb);
    write(dir.path(), "3.jpg", &claim_size(&good[1], 320, 240));
    let mut p = replay_pipeline(dir.path(), 200);
    wait_until("frames and bad frames", 20, || {
        let r = &p.reports()[0];
        r.stats.frames >= 10 && r.stats.bad_frames >= 20
    });
    let ring = p.cameras()[0].shared.ring.clone();
    p.stop();
    let mut sizes = std::collections::BTreeSet::new();
    let mut batch = nvr_edge::ring::FrameBatch::default();
    ring.sample_into(50, &mut batch);
    for (meta, _) in batch.iter() {
        sizes.insert((meta.width, meta.height));
    }
    assert_eq!(sizes.into_iter().collect::<Vec<_>>(), [(160, 120)]);
}

/// A replay directory whose *.jpg are a FIFO and a link to /dev/zero: bad frames, named,
/// and the capture thread neither blocks in open() nor reads without end; stop is prompt.
#[test]
fn replay_special_files_are_bad_frames_and_never_block() {
    let dir = tempfile::tempdir().unwrap();
    let good = jpegs(1);
    write(dir.path(), "1.jpg", &good[0]);
    mkfifo(&dir.path().join("2.jpg"));
    std::os::unix::fs::symlink("/dev/zero", dir.path().join("3.jpg")).unwrap();
    let mut p = replay_pipeline(dir.path(), 100);
    wait_until("good and bad frames", 20, || {
        let r = &p.reports()[0];
        r.stats.frames >= 5 && r.stats.bad_frames >= 10
    });
    let t0 = Instant::now();
    p.stop();
    assert!(
        t0.elapsed() < Duration::from_secs(5),
        "stop took {:?}",
        t0.elapsed()
    );
    // The MJPEG form: a FIFO as the recording is refused when the camera opens.
    let fifo = dir.path().join("rec.mjpeg");
    mkfifo(&fifo);
    let cam = camera(&format!(
        "source = \"replay\"\npath = {fifo:?}\nwidth = 160\nheight = 120\nfps = 30"
    ));
    let err = open_source(&cam, Arc::new(SystemClock), false)
        .err()
        .expect("a FIFO is not a recording");
    assert!(err.to_string().contains("FIFO"), "{err}");
}

/// A camera that delivers frames while `plugged`, and is gone (no device) while not.
struct Pluggable {
    info: SourceInfo,
    plugged: Arc<AtomicBool>,
    clock: Arc<dyn Clock>,
    seq: u64,
}

impl FrameSource for Pluggable {
    fn info(&self) -> &SourceInfo {
        &self.info
    }
    fn next_frame(&mut self, buf: &mut Vec<u8>) -> Result<Captured, SourceError> {
        if !self.plugged.load(Ordering::SeqCst) {
            return Err(SourceError::from_io(
                "VIDIOC_DQBUF",
                &std::io::Error::from_raw_os_error(19),
            ));
        }
        self.clock.sleep(Duration::from_millis(20));
        buf.clear();
        buf.extend_from_slice(&[self.seq as u8; 64]);
        self.seq += 1;
        Ok(Captured {
            meta: FrameMeta {
                seq: self.seq,
                ts_us: self.clock.mono_us(),
                width: 8,
                height: 8,
                format: FrameFormat::Raw(*b"TEST"),
            },
            dropped_before: 0,
        })
    }
}

#[test]
fn a_camera_that_stops_delivering_is_an_outage_event_until_its_frames_come_back() {
    let dir = tempfile::tempdir().unwrap();
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    let plugged = Arc::new(AtomicBool::new(true));
    let opener: Opener = {
        let (plugged, clock) = (plugged.clone(), clock.clone());
        let mut opens = 0u64;
        Box::new(move || {
            if !plugged.load(Ordering::SeqCst) {
                return Err(SourceError::Gone("/dev/video9: no such device".into()));
            }
            opens += 1;
            Ok(Box::new(Pluggable {
                info: SourceInfo {
                    driver: "test".into(),
                    format: FrameFormat::Raw(*b"TEST"),
                    width: 8,
                    height: 8,
                    fps: 50.0,
                    detail: String::new(),
                },
                plugged: plugged.clone(),
                clock: clock.clone(),
                seq: opens * 100_000,
            }) as Box<dyn FrameSource>)
        })
    };
    let cam = Camera::start(
        synthetic(160, 120),
        RingConfig {
            frames: 100,
            max_bytes: 100_000,
            max_age: Duration::from_secs(60),
        },
        clock.clone(),
        opener,
    )
    .unwrap();
    let cfg = Config::from_toml_str(
        &format!(
            "[storage]\ndata_dir = {:?}\n[[cameras]]\nid = \"t\"\nsource = \"synthetic\"\n\
             width = 160\nheight = 120\nfps = 30\n",
            dir.path()
        ),
        "test",
    )
    .unwrap();
    let events = Arc::new(EventStore::open_in(dir.path(), cfg.events.clone()).unwrap());
    let deps = AnalysisDeps {
        xclip: None,
        identity: None,
        events: events.clone(),
        cfg: AnalysisConfig::from_config(&cfg),
        clock: clock.clone(),
    };
    let mut analyzer = Analyzer::start(cam.shared.clone(), &deps, None).unwrap();
    let outages = || -> Vec<Event> {
        events
            .list(100, None)
            .unwrap()
            .into_iter()
            .filter(|e| e.category.as_deref() == Some(OUTAGE_CATEGORY))
            .collect()
    };
    // Streaming for longer than the liveness rule's 5 s: no outage.
    std::thread::sleep(Duration::from_secs(6));
    assert!(cam.shared.stats().frames > 50);
    assert!(outages().is_empty(), "{:?}", outages());

    // Unplugged: an outage event opens within a few seconds, starting with the last frame.
    let unplugged_wall = clock.wall_us();
    plugged.store(false, Ordering::SeqCst);
    wait_until("the outage event", 12, || !outages().is_empty());
    let opened_after_s = (clock.wall_us() - unplugged_wall) as f64 / 1e6;
    let o = &outages()[0];
    assert!(
        opened_after_s < 8.0,
        "opened {opened_after_s:.1} s after the camera went"
    );
    assert!(
        (o.start_us - unplugged_wall).abs() < 1_000_000,
        "starts {} µs from the unplugging",
        o.start_us - unplugged_wall
    );
    assert_eq!(o.end_us, None);
    assert_eq!(o.action.as_deref(), Some(OUTAGE_ACTION));
    assert_eq!(o.risk, Some(nvr_edge::inference::Risk::Medium));
    assert_eq!(analyzer.stats().outage_event, Some(o.id));

    // Plugged back: the event ends when frames come again; one outage, one event.
    std::thread::sleep(Duration::from_secs(1));
    plugged.store(true, Ordering::SeqCst);
    wait_until("the outage event's end", 40, || {
        outages().first().is_some_and(|e| e.end_us.is_some())
    });
    let list = outages();
    assert_eq!(list.len(), 1, "{list:?}");
    assert!(list[0].end_us.unwrap() > unplugged_wall + 1_000_000);
    let st = analyzer.stats();
    assert_eq!((st.camera_outages, st.outage_event), (1, None));
    analyzer.stop();
}
