//! Event recordings: real JPEG frames through a real ring into MJPEG-in-AVI files that
//! FFmpeg (what players use) reads frame for frame; pre- and post-roll boundaries, the
//! length limit, the disk budget (oldest first, the event says so) and what a crash leaves.

use crate::common;

use std::path::Path;
use std::sync::Arc;

use nvr_edge::config::{RecordingConfig, Retention};
use nvr_edge::events::EventStore;
use nvr_edge::recording::{open_clips, remove_videos, AviReader, AviWriter, ClipDir, Recorder};
use nvr_edge::ring::{FrameFormat, FrameMeta, FrameRing, RingConfig};

const FPS: i64 = 10;
const STEP_US: i64 = 1_000_000 / FPS;

/// A real JPEG: a gradient with a bar whose position depends on `i`.
fn jpeg(i: u64, w: u16, h: u16) -> Vec<u8> {
    let mut px = vec![0u8; w as usize * h as usize * 3];
    for y in 0..h as usize {
        for x in 0..w as usize {
            let bar = (x as u64 / 8) % 16 == i % 16;
            let v = if bar {
                20
            } else {
                (x * 255 / w as usize) as u8
            };
            px[(y * w as usize + x) * 3..][..3].copy_from_slice(&[v, (y * 2) as u8, 128]);
        }
    }
    let mut out = Vec::new();
    jpeg_encoder::Encoder::new(&mut out, 75)
        .encode(&px, w, h, jpeg_encoder::ColorType::Rgb)
        .unwrap();
    out
}

fn ring() -> FrameRing {
    FrameRing::new(RingConfig {
        frames: 2000,
        max_bytes: 32 << 20,
        max_age: std::time::Duration::from_secs(600),
    })
    .unwrap()
}

fn push(ring: &FrameRing, seq: u64, payload: &[u8], w: u32, h: u32) {
    ring.push(
        FrameMeta {
            seq,
            ts_us: seq as i64 * STEP_US,
            width: w,
            height: h,
            format: FrameFormat::Jpeg,
        },
        payload,
    )
    .unwrap();
}

fn files(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

struct Setup {
    _tmp: tempfile::TempDir,
    events: Arc<EventStore>,
    clips: Arc<ClipDir>,
}

fn setup(cfg: &RecordingConfig) -> Setup {
    let tmp = tempfile::tempdir().unwrap();
    let events = Arc::new(EventStore::open_in(tmp.path(), Retention::default()).unwrap());
    let clips = open_clips(cfg, tmp.path(), &events).unwrap();
    Setup {
        _tmp: tmp,
        events,
        clips,
    }
}

#[test]
fn an_event_is_recorded_from_pre_roll_to_post_roll_and_players_read_every_frame() {
    let cfg = RecordingConfig {
        pre_secs: 2.0,
        post_secs: 1.0,
        ..RecordingConfig::default()
    };
    let s = setup(&cfg);
    let ring = ring();
    let mut rec = Recorder::new(cfg, "porch", FPS as f64, s.clips.clone(), s.events.clone());
    // 10 s of history, then motion confirmed by the frame at 10.0 s.
    for i in 0..=100 {
        push(&ring, i, &jpeg(i, 160, 120), 160, 120);
    }
    let id = s.events.start("porch", 1_700_000_000_000_000).unwrap().id;
    rec.begin(&ring, id, 100 * STEP_US, 1_700_000_000_000_000)
        .unwrap();
    rec.pump(&ring);
    // Until it is complete only a .part file exists: nothing claims to be a finished video.
    let during = files(s.clips.dir());
    assert_eq!(during.len(), 1, "{during:?}");
    assert!(during[0].ends_with(".avi.part"), "{during:?}");
    assert_eq!(
        s.events.get(id).unwrap().unwrap().video.unwrap().state,
        "recording"
    );
    // Motion for 2 more seconds, ended by the frame at 12.0 s; frames go on arriving.
    for i in 101..=140 {
        push(&ring, i, &jpeg(i, 160, 120), 160, 120);
        if i == 120 {
            rec.end(id, 120 * STEP_US);
        }
        if i % 5 == 0 {
            rec.pump(&ring);
        }
    }
    rec.pump(&ring);
    assert!(!rec.stats.recording, "{:?}", rec.stats);
    let fin = rec.stats.last.clone().expect("finished");
    // 8.0 s (10 - pre 2) through 13.0 s (12 + post 1): 51 frames.
    assert_eq!(fin.frames, 51, "{fin:?}");
    assert!((fin.fps - 10.0).abs() < 1e-9, "{fin:?}");
    let names = files(s.clips.dir());
    assert_eq!(names.len(), 1);
    assert!(names[0].ends_with(".avi") && names[0].starts_with("porch_"));
    let path = s.clips.dir().join(&names[0]);
    assert_eq!(std::fs::metadata(&path).unwrap().len(), fin.bytes);
    let v = s.events.get(id).unwrap().unwrap().video.unwrap();
    assert_eq!(
        (
            v.file.as_str(),
            v.state.as_str(),
            v.frames,
            v.bytes,
            v.error.as_deref()
        ),
        (
            names[0].as_str(),
            "complete",
            Some(51),
            Some(fin.bytes),
            None
        )
    );
    if let Some(p) = common::ffprobe(&path) {
        assert_eq!(p.codec, "mjpeg");
        assert_eq!((p.width, p.height), (160, 120));
        assert_eq!(p.frames_read, 51);
        assert!((p.frame_rate - 10.0).abs() < 0.01, "{p:?}");
    }
}

#[test]
fn a_new_event_during_the_post_roll_ends_the_previous_video_without_repeating_frames() {
    let cfg = RecordingConfig {
        pre_secs: 3.0,
        post_secs: 5.0,
        ..RecordingConfig::default()
    };
    let s = setup(&cfg);
    let ring = ring();
    let mut rec = Recorder::new(cfg, "gate", FPS as f64, s.clips.clone(), s.events.clone());
    for i in 0..=50 {
        push(&ring, i, &jpeg(i, 64, 48), 64, 48);
    }
    let a = s.events.start("gate", 1).unwrap().id;
    rec.begin(&ring, a, 50 * STEP_US, 1).unwrap();
    for i in 51..=60 {
        push(&ring, i, &jpeg(i, 64, 48), 64, 48);
    }
    rec.pump(&ring);
    rec.end(a, 60 * STEP_US);
    // New motion at 6.1 s, while the first video is in its post-roll.
    push(&ring, 61, &jpeg(61, 64, 48), 64, 48);
    let b = s.events.start("gate", 2).unwrap().id;
    rec.begin(&ring, b, 61 * STEP_US, 2).unwrap();
    let first = rec.stats.last.clone().unwrap();
    // 2.0 s .. 6.0 s: the pump before the new event copied up to frame 60.
    assert_eq!(first.frames, 41, "{first:?}");
    for i in 62..=70 {
        push(&ring, i, &jpeg(i, 64, 48), 64, 48);
    }
    rec.pump(&ring);
    rec.finish_active();
    let second = rec.stats.last.clone().unwrap();
    // Its pre-roll starts after the first video's last frame: 6.1 s .. 7.0 s.
    assert_eq!(second.frames, 10, "{second:?}");
    assert_eq!(rec.stats.finished, 2);
    for id in [a, b] {
        let v = s.events.get(id).unwrap().unwrap().video.unwrap();
        assert_eq!(v.state, "complete");
        if let Some(p) = common::ffprobe(&s.clips.dir().join(&v.file)) {
            assert_eq!(p.frames_read, u64::from(v.frames.unwrap()));
        }
    }
}

#[test]
fn a_long_event_is_recorded_up_to_max_secs() {
    let cfg = RecordingConfig {
        pre_secs: 0.0,
        post_secs: 0.0,
        max_secs: 2.0,
        ..RecordingConfig::default()
    };
    let s = setup(&cfg);
    let ring = ring();
    let mut rec = Recorder::new(cfg, "yard", FPS as f64, s.clips.clone(), s.events.clone());
    let frame = jpeg(0, 32, 32);
    push(&ring, 0, &frame, 32, 32);
    let id = s.events.start("yard", 1).unwrap().id;
    rec.begin(&ring, id, 0, 1).unwrap();
    for i in 1..=100 {
        push(&ring, i, &frame, 32, 32);
        rec.pump(&ring);
    }
    let fin = rec.stats.last.clone().expect("finished at the limit");
    assert_eq!(fin.frames, 21, "0.0 s through 2.0 s");
    assert!(!rec.stats.recording);
}

#[test]
fn the_disk_budget_deletes_the_oldest_videos_first_and_their_events_say_so() {
    let cfg = RecordingConfig {
        pre_secs: 0.0,
        post_secs: 0.0,
        disk_budget_mb: 1,
        ..RecordingConfig::default()
    };
    let s = setup(&cfg);
    let ring = ring();
    let mut rec = Recorder::new(cfg, "drive", FPS as f64, s.clips.clone(), s.events.clone());
    // ~400 KB per video: two fit in 1 MiB, three do not.
    let payload = vec![0xABu8; 80_000];
    let mut ids = Vec::new();
    let mut seq = 0;
    for n in 0..4 {
        push(&ring, seq, &payload, 64, 64);
        let id = s.events.start("drive", n).unwrap().id;
        rec.begin(&ring, id, seq as i64 * STEP_US, n).unwrap();
        for _ in 0..4 {
            seq += 1;
            push(&ring, seq, &payload, 64, 64);
        }
        rec.pump(&ring);
        rec.finish_active();
        seq += 1;
        ids.push(id);
    }
    let states: Vec<String> = ids
        .iter()
        .map(|id| s.events.get(*id).unwrap().unwrap().video.unwrap().state)
        .collect();
    assert_eq!(states, ["deleted", "deleted", "complete", "complete"]);
    assert_eq!(rec.stats.deleted_for_budget, 2);
    let names = files(s.clips.dir());
    assert_eq!(names.len(), 2, "{names:?}");
    let total: u64 = names
        .iter()
        .map(|n| std::fs::metadata(s.clips.dir().join(n)).unwrap().len())
        .sum();
    assert!(total <= 1 << 20, "{total}");
}

#[test]
fn what_a_crash_leaves_half_written_is_removed_at_start_and_its_event_marked() {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = RecordingConfig::default();
    let clips = tmp.path().join("clips");
    std::fs::create_dir_all(&clips).unwrap();
    let events = EventStore::open_in(tmp.path(), Retention::default()).unwrap();
    let id = events.start("porch", 5).unwrap().id;
    events.video_started(id, "porch_5_000001.avi").unwrap();
    // The process dies with frames written but no index and no rename.
    let mut w = AviWriter::create(&clips.join("porch_5_000001.avi"), 32, 32, 10).unwrap();
    let meta = FrameMeta {
        seq: 0,
        ts_us: 0,
        width: 32,
        height: 32,
        format: FrameFormat::Jpeg,
    };
    w.add(&meta, &jpeg(0, 32, 32)).unwrap();
    drop(w);
    assert_eq!(files(&clips), ["porch_5_000001.avi.part"]);
    // The next start cleans up and says what happened.
    let dir = open_clips(&cfg, tmp.path(), &events).unwrap();
    assert!(files(dir.dir()).is_empty());
    let v = events.get(id).unwrap().unwrap().video.unwrap();
    assert_eq!(v.state, "interrupted");
}

#[test]
fn an_unusable_clips_directory_turns_recording_off_instead_of_stopping() {
    let tmp = tempfile::tempdir().unwrap();
    std::fs::write(
        tmp.path().join("clips"),
        b"a file where the directory should be",
    )
    .unwrap();
    let events = EventStore::open_in(tmp.path(), Retention::default()).unwrap();
    assert!(open_clips(&RecordingConfig::default(), tmp.path(), &events).is_none());
    let off = RecordingConfig {
        enabled: false,
        ..RecordingConfig::default()
    };
    let ok = tempfile::tempdir().unwrap();
    assert!(open_clips(&off, ok.path(), &events).is_none());
    assert!(!ok.path().join("clips").exists());
}

/// Retention drops old events; their finished recordings go with them (the disk budget
/// would otherwise be the only thing to reclaim them), and one still being written stays.
#[test]
fn retention_removes_the_recordings_of_the_events_it_drops() {
    let tmp = tempfile::tempdir().unwrap();
    let clips = tmp.path().join(nvr_edge::recording::CLIPS_DIR);
    std::fs::create_dir_all(&clips).unwrap();
    let events = EventStore::open_in(
        tmp.path(),
        Retention {
            max_rows: 1,
            max_age_days: 30,
        },
    )
    .unwrap();
    let t0 = 1_800_000_000_000_000i64;
    let first = events.start("cam", t0).unwrap().id;
    std::fs::write(clips.join("first.avi"), b"RIFF").unwrap();
    events.video_started(first, "first.avi").unwrap();
    events.video_finished(first, 10, 4).unwrap();
    let second = events.start("cam", t0 + 1_000_000).unwrap();
    assert!(
        events.get(first).unwrap().is_none(),
        "retention kept one row"
    );
    // The store names the dropped videos; the recording side removes them.
    assert_eq!(second.dropped_videos, ["first.avi"]);
    remove_videos(&clips, &second.dropped_videos);
    assert!(
        !clips.join("first.avi").exists(),
        "the dropped event's recording is gone"
    );
    // A name that is not a plain file name is never followed out of the directory.
    std::fs::write(tmp.path().join("outside.avi"), b"RIFF").unwrap();
    remove_videos(&clips, &["../outside.avi".to_string()]);
    assert!(tmp.path().join("outside.avi").exists());
    // Still recording when its event is dropped: left for the disk budget.
    std::fs::write(clips.join("second.avi.part"), b"RIFF").unwrap();
    events.video_started(second.id, "second.avi").unwrap();
    let third = events.start("cam", t0 + 2_000_000).unwrap();
    assert!(events.get(second.id).unwrap().is_none());
    assert!(third.dropped_videos.is_empty());
    assert!(clips.join("second.avi.part").exists());
}

#[test]
fn the_reader_gives_back_every_frame_written_in_order_and_the_rate() {
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("cam_1_000001.avi");
    let mut w = AviWriter::create(&path, 32, 32, 100).unwrap();
    let mut written = Vec::new();
    for i in 0..7u64 {
        let meta = FrameMeta {
            seq: i,
            ts_us: i as i64 * 200_000,
            width: 32,
            height: 32,
            format: FrameFormat::Jpeg,
        };
        // Odd lengths too: chunks are padded to even sizes, and the reader skips the pad.
        let mut f = jpeg(i, 32, 32);
        f.extend(std::iter::repeat_n(0xD9u8, i as usize % 2));
        w.add(&meta, &f).unwrap();
        written.push(f);
    }
    let done = w.finish(5.0).unwrap();
    let mut r = AviReader::open(&done.path).unwrap();
    assert_eq!(r.us_per_frame, 200_000, "5 fps from the timestamps");
    let mut frame = Vec::new();
    let mut read = Vec::new();
    while r.next_frame(&mut frame).unwrap() {
        read.push(frame.clone());
    }
    assert_eq!(read, written);
    // Not an AVI: refused, saying so.
    std::fs::write(tmp.path().join("x.avi"), b"RIFF....WAVEfmt ").unwrap();
    assert!(AviReader::open(&tmp.path().join("x.avi")).is_err());
}
