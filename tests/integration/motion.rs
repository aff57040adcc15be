//! The motion gate on real frames: the synthetic camera's walking figure moves, a repeated
//! frame does not, a mask over the figure's path hides it, and a corrupt frame is an error
//! rather than motion.

use std::sync::Arc;

use nvr_edge::capture::open_source;
use nvr_edge::clock::SystemClock;
use nvr_edge::config::Config;
use nvr_edge::config::MotionConfig;
use nvr_edge::motion::MotionGate;

fn frames(n: usize) -> Vec<Vec<u8>> {
    let cfg = Config::from_toml_str(
        "[[cameras]]\nid = \"m\"\nsource = \"synthetic\"\nwidth = 640\nheight = 480\nfps = 10",
        "t",
    )
    .unwrap();
    let mut src = open_source(&cfg.cameras[0], Arc::new(SystemClock), false).unwrap();
    (0..n)
        .map(|_| {
            let mut b = Vec::new();
            src.next_frame(&mut b).unwrap();
            b
        })
        .collect()
}

#[test]
fn the_walking_figure_starts_motion_and_a_still_frame_does_not() {
    let f = frames(12);
    let mut gate = MotionGate::new(MotionConfig::default());
    let steps: Vec<_> = f.iter().map(|j| gate.feed(j).unwrap()).collect();
    assert!(!steps[0].moving_frame, "the first frame is the background");
    let started = steps.iter().position(|s| s.started).expect("motion starts");
    assert!(started <= 3, "after start_frames moving frames: {started}");
    assert!(steps.last().unwrap().in_motion);

    let mut still = MotionGate::new(MotionConfig::default());
    for _ in 0..12 {
        let s = still.feed(&f[0]).unwrap();
        assert!(!s.moving_frame && !s.in_motion);
    }
}

#[test]
fn motion_stops_after_stop_frames_still_frames() {
    let f = frames(6);
    let cfg = MotionConfig {
        stop_frames: 3,
        ..MotionConfig::default()
    };
    let mut gate = MotionGate::new(cfg);
    for j in &f {
        gate.feed(j).unwrap();
    }
    assert!(gate.in_motion());
    // A figure that stops is still "moving" until the background absorbs it; motion ends
    // stop_frames still frames after the last moving one.
    let last = f.last().unwrap();
    let steps: Vec<_> = (0..120).map(|_| gate.feed(last).unwrap()).collect();
    let stopped = steps.iter().position(|s| s.stopped).expect("motion stops");
    let last_moving = steps[..stopped].iter().rposition(|s| s.moving_frame);
    // Still frames before the one that stopped it, plus that one.
    let still_run = stopped - last_moving.map_or(0, |i| i + 1) + 1;
    assert_eq!(still_run, 3, "stops on the third still frame in a row");
    assert!(steps[stopped..].iter().all(|s| !s.in_motion));
}

#[test]
fn a_mask_over_the_scene_hides_the_figure() {
    let f = frames(12);
    let cfg = MotionConfig {
        masks: vec![vec![[0.0, 0.0], [1.0, 0.0], [1.0, 1.0], [0.0, 1.0]]],
        ..MotionConfig::default()
    };
    let mut gate = MotionGate::new(cfg);
    assert!(f.iter().all(|j| !gate.feed(j).unwrap().in_motion));
}

#[test]
fn a_corrupt_frame_is_an_error_not_motion() {
    let mut gate = MotionGate::new(MotionConfig::default());
    assert!(gate.feed(b"not a jpeg").is_err());
    assert!(gate.feed(&[0xFF, 0xD8, 0xFF]).is_err());
    let f = frames(1);
    assert!(!gate.feed(&f[0]).unwrap().in_motion);
}
