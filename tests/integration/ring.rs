//! Frame ring behaviour: the product spec's frame-buffer cases, the eviction and
//! timestamp policies, even sampling against numpy, torn-read safety, and invariants
//! over random push sequences.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use nvr_edge::ring::{
    linspace_indices, FrameBatch, FrameFormat, FrameMeta, FrameRing, RingConfig, RingError,
};
use proptest::prelude::*;

const MB: usize = 1024 * 1024;

fn ring(frames: usize, max_bytes: usize, max_age_secs: f64) -> FrameRing {
    FrameRing::new(RingConfig {
        frames,
        max_bytes,
        max_age: Duration::from_secs_f64(max_age_secs),
    })
    .unwrap()
}

fn meta(seq: u64, ts_us: i64) -> FrameMeta {
    FrameMeta {
        seq,
        ts_us,
        width: 640,
        height: 480,
        format: FrameFormat::Jpeg,
    }
}

/// numpy 2.4 `linspace(0, len - 1, n).astype(int)`, generated once with numpy.
const NUMPY_LINSPACE: &[(usize, usize, &[usize])] = &[
    (1, 1, &[0]),
    (1, 8, &[0, 0, 0, 0, 0, 0, 0, 0]),
    (2, 8, &[0, 0, 0, 0, 0, 0, 0, 1]),
    (3, 8, &[0, 0, 0, 0, 1, 1, 1, 2]),
    (7, 3, &[0, 3, 6]),
    (10, 8, &[0, 1, 2, 3, 5, 6, 7, 9]),
    (100, 8, &[0, 14, 28, 42, 56, 70, 84, 99]),
    (1800, 8, &[0, 257, 514, 771, 1028, 1285, 1542, 1799]),
    (
        1799,
        16,
        &[
            0, 119, 239, 359, 479, 599, 719, 839, 958, 1078, 1198, 1318, 1438, 1558, 1678, 1798,
        ],
    ),
    (31, 7, &[0, 5, 10, 15, 20, 25, 30]),
    (5, 5, &[0, 1, 2, 3, 4]),
    (49, 7, &[0, 8, 16, 24, 32, 40, 48]),
    (97, 13, &[0, 8, 16, 24, 32, 40, 48, 56, 64, 72, 80, 88, 96]),
    (
        1000,
        37,
        &[
            0, 27, 55, 83, 111, 138, 166, 194, 222, 249, 277, 305, 333, 360, 388, 416, 444, 471,
            499, 527, 555, 582, 610, 638, 666, 693, 721, 749, 777, 804, 832, 860, 888, 915, 943,
            971, 999,
        ],
    ),
    (
        12345,
        101,
        &[
            0, 123, 246, 370, 493, 617, 740, 864, 987, 1110, 1234, 1357, 1481, 1604, 1728, 1851,
            1975, 2098, 2221, 2345, 2468, 2592, 2715, 2839, 2962, 3086, 3209, 3332, 3456, 3579,
            3703, 3826, 3950, 4073, 4196, 4320, 4443, 4567, 4690, 4814, 4937, 5061, 5184, 5307,
            5431, 5554, 5678, 5801, 5925, 6048, 6172, 6295, 6418, 6542, 6665, 6789, 6912, 7036,
            7159, 7282, 7406, 7529, 7653, 7776, 7900, 8023, 8147, 8270, 8393, 8517, 8640, 8764,
            8887, 9011, 9134, 9258, 9381, 9504, 9628, 9751, 9875, 9998, 10122, 10245, 10368, 10492,
            10615, 10739, 10862, 10986, 11109, 11233, 11356, 11479, 11603, 11726, 11850, 11973,
            12097, 12220, 12344,
        ],
    ),
];

#[test]
fn sample_indices_match_numpy_linspace() {
    for &(len, n, want) in NUMPY_LINSPACE {
        let got: Vec<usize> = linspace_indices(len, n).collect();
        assert_eq!(got, want, "len {len}, n {n}");
    }
    assert_eq!(linspace_indices(0, 8).count(), 0);
    assert_eq!(linspace_indices(10, 0).count(), 0);
}

#[test]
fn sample_returns_the_linspace_frames_oldest_first() {
    let r = ring(100, MB, 3600.0);
    for i in 0..10 {
        r.push(meta(i, i as i64 * 1000), &[i as u8; 10]).unwrap();
    }
    let seqs: Vec<u64> = r.sample_meta(8).iter().map(|m| m.seq).collect();
    assert_eq!(seqs, [0, 1, 2, 3, 5, 6, 7, 9]);
    let mut batch = FrameBatch::with_capacity(8, 1000);
    assert_eq!(r.sample_into(8, &mut batch), 8);
    for (m, bytes) in batch.iter() {
        assert_eq!(bytes, &[m.seq as u8; 10]);
    }
    r.clear();
    assert_eq!(r.sample_into(8, &mut batch), 0);
    assert!(batch.is_empty());
}

// ---- the product spec's frame-buffer cases ----

#[test]
fn spec_1800_frames_of_100kb_fit_under_500mb() {
    let r = ring(1800, 256 * MB, 120.0);
    let frame = vec![0xAB; 100_000];
    for i in 0..1800u64 {
        r.push(meta(i, i as i64 * 33_333), &frame).unwrap();
    }
    assert_eq!(r.len(), 1800);
    assert_eq!(r.bytes_used(), 1800 * 100_000);
    assert!(r.bytes_used() < 500 * MB);
    // The reservation itself, which is what the process really holds, is also < 500 MB.
    assert!(r.config().max_bytes < 500 * MB);
}

#[test]
fn spec_four_cameras_of_900_frames_hold_3600_in_all() {
    let rings: Vec<FrameRing> = (0..4).map(|_| ring(900, 100 * MB, 60.0)).collect();
    let frame = vec![1u8; 100_000];
    for r in &rings {
        for i in 0..900u64 {
            r.push(meta(i, i as i64 * 33_333), &frame).unwrap();
        }
    }
    let total: usize = rings.iter().map(FrameRing::len).sum();
    assert_eq!(total, 3600);
    assert!(rings.iter().all(|r| r.bytes_used() < 500 * MB));
}

#[test]
fn spec_age_eviction_keeps_only_recent_frames() {
    let r = ring(1000, 16 * MB, 10.0);
    let now = 100_000_000i64;
    for i in 0..50 {
        r.push(meta(i, now - 15_000_000), &[0; 100]).unwrap();
    }
    for i in 50..100 {
        r.push(meta(i, now - 5_000_000), &[0; 100]).unwrap();
    }
    r.push(meta(100, now), &[0; 100]).unwrap();
    assert!(r.len() <= 51, "len {}", r.len());
    assert_eq!(r.len(), 51);
    assert_eq!(r.oldest_ts(), Some(now - 5_000_000));
    assert_eq!(r.stats().evicted_age, 50);
}

#[test]
fn spec_capacity_10_keeps_the_newest_10_of_20() {
    let r = ring(10, MB, 3600.0);
    for i in 0..20 {
        r.push(meta(i, i as i64), &[i as u8; 100]).unwrap();
    }
    assert_eq!(r.len(), 10);
    assert_eq!(r.with_frame(0, |f| f.meta.seq), Some(10));
    assert_eq!(r.with_newest(|f| f.meta.seq), Some(19));
    assert_eq!(r.stats().evicted_capacity, 10);
}

#[test]
fn spec_300_frames_33ms_apart_capacity_100_age_5s() {
    let r = ring(100, 64 * MB, 5.0);
    for i in 0..300 {
        r.push(meta(i, i as i64 * 33_000), &[0; 1000]).unwrap();
    }
    let (oldest, newest) = (r.oldest_ts().unwrap(), r.newest_ts().unwrap());
    assert!(r.len() <= 100);
    assert!(newest - oldest <= 5_000_000, "span {} us", newest - oldest);
}

#[test]
fn spec_50_frames_of_50kb_use_exactly_2_500_000_bytes() {
    let r = ring(1800, 256 * MB, 60.0);
    for i in 0..50 {
        r.push(meta(i, i as i64 * 33_333), &vec![7u8; 50_000])
            .unwrap();
    }
    assert_eq!(r.bytes_used(), 2_500_000);
}

// ---- budget and policy ----

#[test]
fn byte_budget_evicts_oldest_first() {
    let r = ring(1000, 10_000, 3600.0);
    for i in 0..25 {
        r.push(meta(i, i as i64), &[i as u8; 1000]).unwrap();
        assert!(r.bytes_used() <= 10_000);
    }
    assert_eq!(r.len(), 10);
    assert_eq!(r.with_frame(0, |f| f.meta.seq), Some(15));
    assert!(r.stats().evicted_bytes > 0);
}

#[test]
fn frame_larger_than_the_budget_is_refused_not_a_panic() {
    let r = ring(10, 1000, 60.0);
    r.push(meta(0, 0), &[1; 10]).unwrap();
    assert_eq!(
        r.push(meta(1, 1), &[0; 1001]),
        Err(RingError::TooLarge {
            len: 1001,
            max: 1000
        })
    );
    assert_eq!(r.push(meta(1, 1), &[]), Err(RingError::Empty));
    // The ring is untouched and still works.
    assert_eq!(r.len(), 1);
    assert_eq!(r.push(meta(2, 2), &[0; 1000]), Ok(1));
    assert_eq!(r.stats().refused, 2);
}

#[test]
fn zero_budget_is_a_typed_error() {
    let bad = |frames, max_bytes| {
        FrameRing::new(RingConfig {
            frames,
            max_bytes,
            max_age: Duration::from_secs(1),
        })
        .unwrap_err()
    };
    assert!(matches!(bad(0, 100), RingError::BadConfig(_)));
    assert!(matches!(bad(10, 0), RingError::BadConfig(_)));
}

#[test]
fn duplicate_timestamps_are_kept_earlier_ones_refused() {
    let r = ring(10, 10_000, 60.0);
    r.push(meta(0, 1_000), &[0; 10]).unwrap();
    r.push(meta(1, 1_000), &[1; 10]).unwrap();
    assert_eq!(r.len(), 2);
    assert_eq!(
        r.push(meta(2, 999), &[2; 10]),
        Err(RingError::OutOfOrder {
            ts_us: 999,
            newest_us: 1_000
        })
    );
    assert_eq!(r.len(), 2);
    assert_eq!(r.newest_ts(), Some(1_000));
    // After a clear there is no newest frame to be out of order with.
    r.clear();
    assert_eq!(r.push(meta(3, 5), &[3; 10]), Ok(0));
}

#[test]
fn a_dead_camera_keeps_its_last_frames() {
    // Age is measured against the newest frame, not the clock: nothing expires while no
    // frames arrive.
    let r = ring(100, 100_000, 1.0);
    for i in 0..10 {
        r.push(meta(i, i as i64 * 100_000), &[0; 10]).unwrap();
    }
    std::thread::sleep(Duration::from_millis(20));
    assert_eq!(r.len(), 10);
}

// ---- concurrency ----

fn checksum(bytes: &[u8]) -> u32 {
    bytes.iter().fold(0x811C_9DC5u32, |h, &b| {
        (h ^ u32::from(b)).wrapping_mul(0x0100_0193)
    })
}

/// A frame whose first 4 bytes are the checksum of the rest, with contents and length
/// derived from `seq`.
fn checked_len(seq: u64) -> usize {
    4 + 2_000 + (seq as usize * 7919) % 30_000
}

fn checked_frame(seq: u64, out: &mut Vec<u8>) {
    let len = checked_len(seq);
    out.clear();
    out.resize(len, 0);
    let mut x = seq.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    for b in &mut out[4..] {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        *b = x as u8;
    }
    let c = checksum(&out[4..]);
    out[..4].copy_from_slice(&c.to_le_bytes());
}

fn verify(meta: &FrameMeta, bytes: &[u8]) {
    let c = u32::from_le_bytes(bytes[..4].try_into().unwrap());
    assert_eq!(c, checksum(&bytes[4..]), "torn frame seq {}", meta.seq);
    assert_eq!(
        bytes.len(),
        checked_len(meta.seq),
        "frame seq {} has the wrong length",
        meta.seq
    );
}

#[test]
fn readers_never_see_a_torn_frame_while_the_writer_pushes() {
    let r = Arc::new(ring(64, 400_000, 3600.0));
    let done = Arc::new(AtomicBool::new(false));
    let readers: Vec<_> = (0..3)
        .map(|k| {
            let (r, done) = (r.clone(), done.clone());
            std::thread::spawn(move || {
                let mut batch = FrameBatch::with_capacity(8, 300_000);
                let mut checked = 0u64;
                while !done.load(Ordering::Relaxed) {
                    if k == 0 {
                        r.with_newest(|f| verify(f.meta, f.bytes));
                        checked += 1;
                    } else {
                        r.sample_into(8, &mut batch);
                        for (m, b) in batch.iter() {
                            verify(m, b);
                            checked += 1;
                        }
                        let seqs: Vec<u64> = batch.iter().map(|(m, _)| m.seq).collect();
                        assert!(seqs.windows(2).all(|w| w[0] <= w[1]), "sample out of order");
                    }
                }
                checked
            })
        })
        .collect();
    let mut frame = Vec::new();
    for seq in 0..5_000u64 {
        checked_frame(seq, &mut frame);
        r.push(meta(seq, seq as i64 * 1000), &frame).unwrap();
    }
    done.store(true, Ordering::Relaxed);
    for h in readers {
        assert!(
            h.join()
                .expect("reader panicked: torn or inconsistent frame")
                > 0
        );
    }
    // Whatever is left is intact too.
    for i in 0..r.len() {
        r.with_frame(i, |f| verify(f.meta, f.bytes));
    }
}

// ---- invariants over random push sequences ----

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    #[test]
    fn invariants_hold_for_any_push_sequence(
        frames in 1usize..40,
        max_bytes in 1usize..5_000,
        max_age_ms in 1u64..2_000,
        pushes in proptest::collection::vec((0usize..1_500, 0i64..300_000, any::<bool>()), 1..200),
    ) {
        let r = ring(frames, max_bytes, max_age_ms as f64 / 1000.0);
        let max_age_us = max_age_ms as i64 * 1000;
        let mut ts = 0i64;
        let mut accepted: Vec<(u64, i64, usize)> = Vec::new();
        for (seq, (len, dt, go_back)) in pushes.into_iter().enumerate() {
            let seq = seq as u64;
            let t = if go_back && ts > 0 { ts - 1 } else { ts + dt };
            let payload = vec![seq as u8; len];
            match r.push(meta(seq, t), &payload) {
                Ok(_) => { accepted.push((seq, t, len)); ts = t; }
                Err(RingError::Empty) => prop_assert_eq!(len, 0),
                Err(RingError::TooLarge { .. }) => prop_assert!(len > max_bytes),
                Err(RingError::OutOfOrder { .. }) => prop_assert!(t < ts),
                Err(e) => prop_assert!(false, "unexpected {e}"),
            }
            // Budgets hold after every push.
            prop_assert!(r.len() <= frames);
            prop_assert!(r.bytes_used() <= max_bytes);
            let n = r.len();
            let mut sum = 0;
            let mut prev: Option<(u64, i64)> = None;
            for i in 0..n {
                let (s, fts, ok) = r.with_frame(i, |f| {
                    (f.meta.seq, f.meta.ts_us, f.bytes.iter().all(|&b| b == f.meta.seq as u8))
                }).unwrap();
                prop_assert!(ok, "frame {s} corrupted");
                if let Some((ps, pts)) = prev { prop_assert!(s > ps && fts >= pts); }
                prev = Some((s, fts));
                sum += r.with_frame(i, |f| f.bytes.len()).unwrap();
            }
            prop_assert_eq!(sum, r.bytes_used());
            if let (Some(o), Some(nw)) = (r.oldest_ts(), r.newest_ts()) {
                prop_assert!(nw - o <= max_age_us);
            }
            // The ring holds a suffix of what was accepted: the newest frame is always
            // kept, and nothing newer than a kept frame is missing.
            if let Some(&(last, _, _)) = accepted.last() {
                prop_assert_eq!(r.with_newest(|f| f.meta.seq), Some(last));
                let kept: Vec<u64> = (0..n).map(|i| r.with_frame(i, |f| f.meta.seq).unwrap()).collect();
                let tail: Vec<u64> = accepted[accepted.len() - n..].iter().map(|a| a.0).collect();
                prop_assert_eq!(kept, tail);
            }
        }
    }

    #[test]
    fn equal_frames_fill_exactly_what_the_budget_allows(
        frames in 1usize..50, len in 1usize..500, cap in 1usize..5_000, n in 1usize..300,
    ) {
        prop_assume!(len <= cap);
        let r = ring(frames, cap, 3600.0);
        for i in 0..n {
            r.push(meta(i as u64, i as i64), &vec![1; len]).unwrap();
        }
        prop_assert_eq!(r.len(), n.min(frames).min(cap / len));
    }
}

#[test]
fn a_follower_copies_every_frame_once_in_order_and_counts_what_it_missed() {
    let r = ring(10, 1 << 20, 60.0);
    let mut b = FrameBatch::default();
    for i in 0..6 {
        r.push(meta(i, i as i64 * 100), &[i as u8; 10]).unwrap();
    }
    // From the start, skipping frames before ts 200, three at a time.
    let (next, lost) = r.copy_from_into(0, 200, 3, &mut b);
    let seqs: Vec<u64> = b.iter().map(|(m, _)| m.seq).collect();
    assert_eq!((seqs, next, lost), (vec![2, 3, 4], 5, 0));
    let (next, lost) = r.copy_from_into(next, 200, 3, &mut b);
    assert_eq!(
        (
            b.iter().map(|(m, p)| (m.seq, p[0])).collect::<Vec<_>>(),
            next,
            lost
        ),
        (vec![(5, 5)], 6, 0)
    );
    // Nothing new: nothing copied, same position.
    assert_eq!(r.copy_from_into(next, 0, 3, &mut b), (6, 0));
    assert!(b.is_empty());
    // The reader falls 12 frames behind a 10-frame ring: 2 were evicted unseen.
    for i in 6..18 {
        r.push(meta(i, i as i64 * 100), &[i as u8; 10]).unwrap();
    }
    let (next, lost) = r.copy_from_into(6, 0, 100, &mut b);
    assert_eq!(lost, 2);
    assert_eq!(next, 18);
    assert_eq!(
        b.iter().map(|(m, _)| m.seq).collect::<Vec<_>>(),
        (8..18).collect::<Vec<_>>()
    );
    // Positions survive clear(): the follower does not re-read or stall.
    r.clear();
    r.push(meta(18, 1800), &[1; 10]).unwrap();
    let (next, _) = r.copy_from_into(next, 0, 100, &mut b);
    assert_eq!((b.len(), next), (1, 19));
}
