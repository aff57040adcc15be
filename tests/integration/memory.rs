//! Per-camera memory comes from each camera's own jemalloc arena: two cameras with
//! different ring budgets each report their own budget, and neither counts the other's.

use std::sync::Arc;
use std::time::Duration;

use nvr_edge::clock::SystemClock;
use nvr_edge::config::Config;
use nvr_edge::memory::{process_memory, Arena};
use nvr_edge::pipeline::Pipeline;

const MIB: u64 = 1 << 20;

#[test]
fn two_cameras_each_report_their_own_ring_budget() {
    let cfg = Config::from_toml_str(
        r#"
        [[cameras]]
        id = "big"
        source = "synthetic"
        width = 320
        height = 240
        fps = 30
        ring = { frames = 600, max_bytes = 67108864 }

        [[cameras]]
        id = "small"
        source = "synthetic"
        width = 320
        height = 240
        fps = 30
        ring = { frames = 300, max_bytes = 16777216 }
        "#,
        "test",
    )
    .unwrap();
    let mut p = Pipeline::start(&cfg, Arc::new(SystemClock)).unwrap();
    // Let both capture threads run and allocate their working memory.
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while p.reports().iter().any(|r| r.stats.frames < 10) {
        assert!(
            std::time::Instant::now() < deadline,
            "cameras did not start"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let reports = p.reports();
    for (r, budget) in reports.iter().zip([64 * MIB, 16 * MIB]) {
        let bytes = r.memory_bytes.expect("arena statistics");
        let ratio = bytes as f64 / budget as f64;
        assert!(
            (0.95..=1.05).contains(&ratio),
            "camera {} reports {bytes} bytes for a budget of {budget} ({ratio:.3})",
            r.id
        );
    }
    let total = process_memory().unwrap();
    assert!(
        total.allocated >= 80 * MIB,
        "process total includes both rings"
    );
    p.stop();
}

#[test]
fn arena_scope_attributes_allocations_and_restores_the_thread() {
    let a = Arena::create().unwrap();
    let b = Arena::create().unwrap();
    let before = (a.allocated_bytes().unwrap(), b.allocated_bytes().unwrap());
    let v = a.scope(|| vec![1u8; 8 << 20]).unwrap();
    let after_a = a.allocated_bytes().unwrap();
    assert!(after_a >= before.0 + (8 << 20));
    // Back on the thread's own arena: this lands in neither.
    let w = vec![2u8; 4 << 20];
    assert_eq!(b.allocated_bytes().unwrap(), before.1);
    assert!(a.allocated_bytes().unwrap() < after_a + (1 << 20));
    drop((v, w));
    assert!(a.allocated_bytes().unwrap() < before.0 + (1 << 20));
}
