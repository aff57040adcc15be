//! Household rows: the database's integrity and match latency on the gallery.

use super::*;

/// Match latency on the household gallery (a generated one, said so, when nobody is
/// enrolled), database integrity, and rows the matcher had to skip.
pub(super) fn household_checks(cfg: &Config, clock: Arc<dyn Clock>) -> Vec<Check> {
    let t = &cfg.targets;
    let h = &cfg.household;
    let hh = match Household::open_in(&cfg.storage.data_dir, h.clone(), clock) {
        Ok(hh) => hh,
        Err(e) => {
            let msg = format!("{}: {}", cfg.storage.data_dir.display(), error_chain(&e));
            return vec![Check::failed("household_db", Op::AtMost, 0.0, "problems").detail(msg)];
        }
    };
    let mut checks = Vec::new();
    let problems = match hh.integrity_check() {
        Ok(found) if found.is_empty() => {
            Check::new("household_db", None, 0.0, Op::AtMost, 0.0, "problems")
        }
        Ok(found) => Check::new("household_db", None, 1.0, Op::AtMost, 0.0, "problems")
            .detail(format!("PRAGMA integrity_check: {}", found.join("; "))),
        Err(e) => {
            Check::failed("household_db", Op::AtMost, 0.0, "problems").detail(error_chain(&e))
        }
    };
    checks.push(problems);
    let gallery = hh.gallery();
    checks.push(
        Check::new(
            "household_bad_rows",
            None,
            (gallery.corrupt_rows + gallery.unreadable_rows) as f64,
            Op::AtMost,
            0.0,
            "rows",
        )
        .detail("rows skipped as corrupt (bad length, NaN, zero vector) or unreadable: re-enrol those members"),
    );
    let enrolled = gallery
        .persons
        .iter()
        .max_by_key(|(_, m)| m.rows())
        .cloned();
    let (model_id, matrix, what) = match enrolled {
        Some((model, m)) => {
            let what = format!(
                "enrolled gallery: {} rows of model {model}, {}-d",
                m.rows(),
                m.dim()
            );
            (model, m, what)
        }
        None => {
            let (n, dim) = (h.selftest_members as usize, h.selftest_dim as usize);
            let mut m = Matrix::new(dim);
            let rows = vectors::random_unit_vectors(n, dim, 0x5E1F);
            for (i, row) in rows.chunks_exact(dim).enumerate() {
                m.push(i as i64, row);
            }
            let what = format!("generated gallery of {n} members, {dim}-d: nobody is enrolled");
            ("selftest".to_string(), m, what)
        }
    };
    let mut set = GallerySet::default();
    let dim = matrix.dim();
    let rows = matrix.rows();
    set.persons.push((model_id.clone(), matrix));
    let probes = vectors::random_unit_vectors(64, dim, 0xC0FFEE);
    let th = hh.thresholds();
    let mut lat_ns = Vec::with_capacity(1000);
    let budget = Instant::now();
    for i in 0..1000 {
        let p = &probes[(i % 64) * dim..(i % 64 + 1) * dim];
        let t0 = Instant::now();
        std::hint::black_box(set.match_person(p, Some(&model_id), th, 0, 0));
        lat_ns.push(t0.elapsed().as_nanos() as u64);
        if i >= 100 && budget.elapsed() > Duration::from_secs(2) {
            break;
        }
    }
    lat_ns.sort_unstable();
    let p99 = lat_ns[(lat_ns.len() * 99).div_ceil(100) - 1] as f64 / 1e6;
    checks.push(
        Check::new(
            "household_match_p99",
            None,
            p99,
            Op::AtMost,
            t.household_match_p99_ms,
            "ms",
        )
        .detail(format!(
            "{what}; {} matches, kernel {}, {rows} rows",
            lat_ns.len(),
            nvr_linalg::Kernel::best().name()
        )),
    );
    checks
}
