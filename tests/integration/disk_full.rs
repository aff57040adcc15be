//! A data directory on a small filesystem that the event videos fill several times over a
//! run: no event is lost. Once, a disk that filled before `recording.disk_budget_mb` was
//! reached made every later event fail with "database or disk is full", with nothing
//! deleted; now `recording.min_free_mb` is kept free (oldest videos first) so the database
//! always has room.
//!
//! The filesystem is a private 12 MiB tmpfs (the database with each event's snapshot,
//! ~65 KB an event here, shares it with the videos) mounted in a user and mount namespace of the
//! test's own (`unshare`, util-linux), so it needs no root and leaves nothing mounted.

use std::process::Command;

#[test]
fn a_filesystem_filled_several_times_over_loses_no_event() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    std::fs::create_dir(&data).unwrap();
    let cfg = dir.path().join("c.toml");
    std::fs::write(
        &cfg,
        format!(
            r#"
[storage]
data_dir = {data:?}
[identity]
enabled = false
[motion]
analysis_fps = 10.0
[recording]
max_secs = 1.0
pre_secs = 0.5
post_secs = 0.5
# Far above the filesystem: only the free-space floor can keep it from filling.
disk_budget_mb = 1000
min_free_mb = 3
[[cameras]]
id = "porch"
source = "synthetic"
width = 640
height = 480
fps = 15
ring = {{ frames = 200, max_bytes = 16000000 }}
"#
        ),
    )
    .unwrap();
    let bin = env!("CARGO_BIN_EXE_nvr-edge");
    let out = dir.path();
    // Inside the namespace: mount, run the recorder for 30 s (the walking figure never
    // stops, so events follow each other every max_secs, each with a video), stop it with
    // SIGINT, and export the events before the tmpfs goes away with the namespace.
    let script = format!(
        "set -e; mount -t tmpfs -o size=12m tmpfs {data:?}; \
         timeout -s INT 30 {bin:?} --config {cfg:?} run 2> {log:?} || true; \
         {bin:?} --config {cfg:?} events export --format json > {events:?}; \
         df -k {data:?} > {df:?}",
        log = out.join("run.log"),
        events = out.join("events.json"),
        df = out.join("df.txt"),
    );
    let status = Command::new("unshare")
        .args(["--user", "--map-root-user", "--mount", "sh", "-c", &script])
        .status()
        .expect("unshare (util-linux) runs");
    assert!(
        status.success(),
        "could not run the recorder on a private tmpfs (user namespaces off?): {status:?}"
    );
    let log = std::fs::read_to_string(out.join("run.log")).unwrap();
    let events: Vec<serde_json::Value> =
        serde_json::from_str(&std::fs::read_to_string(out.join("events.json")).unwrap()).unwrap();
    assert!(
        !log.contains("disk is full") && !log.contains("No space left"),
        "{log}"
    );
    // Every event opened during the run is there: ids 1..=n, none missing.
    let mut ids: Vec<i64> = events.iter().map(|e| e["id"].as_i64().unwrap()).collect();
    ids.sort_unstable();
    assert!(ids.len() >= 12, "{} events: {log}", ids.len());
    assert_eq!(ids, (1..=ids.len() as i64).collect::<Vec<_>>(), "{log}");
    // The videos written add up to several times the filesystem: it was filled and
    // emptied (oldest first) over and over.
    let written: i64 = events
        .iter()
        .filter_map(|e| e["video"]["bytes"].as_i64())
        .sum();
    assert!(
        written > 5 * (12 << 20) / 2,
        "only {written} bytes of video written"
    );
    let state = |e: &serde_json::Value| e["video"]["state"].as_str().unwrap_or("").to_string();
    assert!(events.iter().any(|e| state(e) == "deleted"), "{events:?}");
    // Recent events kept their videos (all but the one the stop cut short).
    let newest: Vec<_> = events.iter().filter(|e| state(e) == "complete").collect();
    assert!(newest.len() >= 2, "{events:?}");
    let df = std::fs::read_to_string(out.join("df.txt")).unwrap();
    println!(
        "{} events, {written} bytes of video; at the end: {df}",
        ids.len()
    );
}
