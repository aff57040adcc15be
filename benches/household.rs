//! Household matching speed: `cargo bench --bench household`.
//!
//! Prints a table of match latency (p50/p99 over many probes) for galleries of 10 to
//! 100,000 members of 512-d embeddings, against the goals (p99 <= 10 us at 500 members,
//! <= 0.5x faiss at 100k; the spec's p99 < 50 ms; cosine < 100 us). From 256 rows a match
//! scans the compact i8 rows and re-scores the few that could win in f32. When `NVR_FAISS_PYTHON` names a Python with
//! faiss-cpu installed (see benches/faiss_peer.py), the same galleries and probes are run
//! through faiss IndexFlatIP on one thread in the same run and the ratio is printed.

use std::hint::black_box;
use std::io::Write as _;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};

mod common;
use common::python_peer;
use nvr_edge::household::{vectors, GallerySet, Matrix, Thresholds};

const DIM: usize = 512;
const SIZES: [usize; 5] = [10, 100, 500, 10_000, 100_000];
const TH: Thresholds = Thresholds {
    match_threshold: 0.85,
    unknown_threshold: 0.7,
};

fn gallery(n: usize) -> (GallerySet, Vec<f32>) {
    let rows = vectors::random_unit_vectors(n, DIM, n as u64);
    let mut m = Matrix::new(DIM);
    for (i, r) in rows.chunks_exact(DIM).enumerate() {
        m.push(i as i64, r);
    }
    let mut g = GallerySet::default();
    g.persons.push(("bench".into(), m));
    (g, rows)
}

fn percentiles(mut ns: Vec<u64>) -> (f64, f64) {
    ns.sort_unstable();
    let q = |p: f64| ns[((ns.len() - 1) as f64 * p).round() as usize] as f64 / 1e3;
    (q(0.5), q(0.99))
}

/// faiss on the same rows and probes, if a Python with faiss is configured.
fn faiss_peer(n: usize, rows: &[f32], probes: &[f32], iters: usize) -> Option<(f64, f64)> {
    // Unset: no files written for nothing.
    std::env::var_os("NVR_FAISS_PYTHON")?;
    let dir = std::env::temp_dir().join(format!("nvr-faiss-{}-{n}", std::process::id()));
    std::fs::create_dir_all(&dir).ok()?;
    let write = |name: &str, v: &[f32]| {
        let mut f = std::fs::File::create(dir.join(name)).unwrap();
        f.write_all(&vectors::to_blob(v)).unwrap();
    };
    write("rows.f32", rows);
    write("probes.f32", probes);
    let got = python_peer(
        "NVR_FAISS_PYTHON",
        "faiss_peer.py",
        &[
            dir.display().to_string(),
            DIM.to_string(),
            iters.to_string(),
        ],
    );
    let _ = std::fs::remove_dir_all(&dir);
    got
}

fn latency_table() {
    println!(
        "household match, {DIM}-d: i8 scan on tier {} from 256 rows, f32 re-score ({}); \
         faiss IndexFlatIP f32, one thread:",
        nvr_linalg::Tier::current().name(),
        nvr_linalg::Kernel::best().name()
    );
    println!(
        "{:>8} {:>12} {:>12} {:>14} {:>14} {:>10}",
        "members", "p50 us", "p99 us", "faiss p50 us", "faiss p99 us", "ratio p50"
    );
    for n in SIZES {
        let (g, rows) = gallery(n);
        let probes = vectors::random_unit_vectors(256, DIM, 7);
        let iters = if n >= 100_000 {
            300
        } else if n >= 10_000 {
            2_000
        } else {
            20_000
        };
        for i in 0..iters.min(200) {
            black_box(g.match_person(&probes[(i % 256) * DIM..][..DIM], Some("bench"), TH, 0, 0));
        }
        let ns: Vec<u64> = (0..iters)
            .map(|i| {
                let p = &probes[(i % 256) * DIM..][..DIM];
                let t = Instant::now();
                black_box(g.match_person(p, Some("bench"), TH, 0, 0));
                t.elapsed().as_nanos() as u64
            })
            .collect();
        let (p50, p99) = percentiles(ns);
        let peer = faiss_peer(n, &rows, &probes, iters);
        let (f50, f99, ratio) = match peer {
            Some((a, b)) => (
                format!("{a:.2}"),
                format!("{b:.2}"),
                format!("{:.2}", p50 / a),
            ),
            None => ("-".into(), "-".into(), "-".into()),
        };
        println!("{n:>8} {p50:>12.2} {p99:>12.2} {f50:>14} {f99:>14} {ratio:>10}");
        if let (100_000, Some((f50, _))) = (n, peer) {
            println!(
                "         goal <= 0.5x faiss at 100k: {}",
                if p50 <= 0.5 * f50 { "met" } else { "MISSED" }
            );
        }
        if n == 500 {
            println!(
                "         goal p99 <= 10 us at 500: {}; spec p99 < 50 ms: {}",
                if p99 <= 10.0 { "met" } else { "MISSED" },
                if p99 < 50_000.0 { "met" } else { "MISSED" }
            );
        }
    }
    if std::env::var("NVR_FAISS_PYTHON").is_err() {
        println!(
            "(set NVR_FAISS_PYTHON to a python with faiss-cpu to compare with faiss IndexFlatIP)"
        );
    }
}

fn bench_household(c: &mut Criterion) {
    println!("{}", nvr_edge::selftest::SystemInfo::current().bench_line());
    latency_table();
    let mut g = c.benchmark_group("household_match_512d");
    for n in [10, 100, 500, 10_000] {
        let (gal, _) = gallery(n);
        let probe = vectors::random_unit_vectors(1, DIM, 99);
        g.bench_with_input(BenchmarkId::from_parameter(n), &n, |b, _| {
            b.iter(|| gal.match_person(black_box(&probe), Some("bench"), TH, 0, 0))
        });
    }
    g.finish();
    let v = vectors::random_unit_vectors(2, DIM, 3);
    let (a, b) = v.split_at(DIM);
    c.bench_function("cosine_similarity_512d", |bch| {
        bch.iter(|| nvr_linalg::cosine_similarity(black_box(a), black_box(b)))
    });
    let t = Instant::now();
    let n = 1_000_000;
    for _ in 0..n {
        black_box(nvr_linalg::cosine_similarity(black_box(a), black_box(b)));
    }
    let avg_us = t.elapsed().as_secs_f64() * 1e6 / n as f64;
    println!(
        "cosine_similarity 512-d: avg {avg_us:.3} us over {n} calls (spec < 100 us: {})",
        if avg_us < 100.0 { "met" } else { "MISSED" }
    );
}

criterion_group! {
    name = benches;
    config = Criterion::default().measurement_time(Duration::from_secs(2)).warm_up_time(Duration::from_millis(500));
    targets = bench_household
}
criterion_main!(benches);
