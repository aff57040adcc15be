//! `push` performs no heap allocation after construction, measured by jemalloc's own
//! per-thread counter of bytes allocated (the allocator every nvr-edge build uses).

use std::time::Duration;

use nvr_edge::ring::{FrameFormat, FrameMeta, FrameRing, RingConfig};

fn thread_allocated_bytes() -> u64 {
    tikv_jemalloc_ctl::thread::allocatedp::read()
        .expect("jemalloc thread.allocatedp")
        .get()
}

#[test]
fn push_allocates_nothing_across_10_000_frames() {
    let ring = FrameRing::new(RingConfig {
        frames: 300,
        max_bytes: 8 << 20,
        max_age: Duration::from_secs(5),
    })
    .unwrap();
    let frames: Vec<Vec<u8>> = (0..16).map(|i| vec![i as u8; 20_000 + i * 3_001]).collect();
    let meta = |seq: u64| FrameMeta {
        seq,
        ts_us: seq as i64 * 33_333,
        width: 640,
        height: 480,
        format: FrameFormat::Jpeg,
    };
    // Warm-up: wrap the arena a few times and exercise every eviction reason.
    for seq in 0..1_000u64 {
        ring.push(meta(seq), &frames[seq as usize % 16]).unwrap();
    }
    let before = thread_allocated_bytes();
    let mut evicted = 0;
    for seq in 1_000..11_000u64 {
        evicted += ring.push(meta(seq), &frames[seq as usize % 16]).unwrap();
    }
    let after = thread_allocated_bytes();
    assert_eq!(after - before, 0, "push allocated {} bytes", after - before);
    assert!(evicted > 9_000, "the measured pushes did evict ({evicted})");
    // And the counter is live: an allocation on this thread moves it.
    let v = std::hint::black_box(vec![0u8; 4096]);
    assert!(thread_allocated_bytes() >= after + 4096);
    drop(v);
}
