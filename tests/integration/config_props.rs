//! Any config `check-config` accepts must start: generated configs, their numeric keys
//! drawn from each range's edges, just past them and from values that once crashed the
//! recorder (1e20, inf, nan, 0, huge counts), go through validation; every accepted one
//! runs `--self-test` and must not panic or abort (exit 0 or 1, or still running when
//! the test's time for it is up), and every refused one names a key.

use std::io::Read;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use nvr_edge::config::{Config, ConfigError};
use proptest::prelude::*;

/// (section, key, values to draw from: in range, at its edges, past them, hostile).
const KEYS: &[(&str, &str, &[&str])] = &[
    ("ring", "frames", &["1", "30", "1000000", "1000001", "0"]),
    (
        "ring",
        "max_bytes",
        // 1 GB is accepted; 16 GiB + 1 is refused. (16 GiB itself is accepted and
        // reserved at start: more than a small board has. See the closing note.)
        &["1000000", "1000000000", "17179869185", "0"],
    ),
    (
        "ring",
        "max_age_secs",
        &["0.001", "86400", "86401", "1e20", "inf", "nan", "0"],
    ),
    (
        "selftest",
        "ring_stress_frames",
        &["1", "150", "0", "1000001"],
    ),
    (
        "selftest",
        "ring_stress_frame_bytes",
        &["1", "100000", "16777216", "16777217"],
    ),
    (
        "household",
        "selftest_members",
        &["1", "500", "1000000", "0"],
    ),
    ("household", "selftest_dim", &["1", "64", "8192", "8193"]),
    (
        "motion",
        "analysis_fps",
        &["0.001", "5", "60", "61", "inf", "0"],
    ),
    ("motion", "start_frames", &["1", "3", "1000", "0"]),
    ("motion", "stop_frames", &["1", "10000", "10001", "0"]),
    (
        "motion",
        "background_rate",
        &["0.0001", "1", "1.5", "nan", "0"],
    ),
    ("motion", "min_changed_fraction", &["0", "1", "1.1", "nan"]),
    ("events", "max_rows", &["1", "10000000", "0", "10000001"]),
    ("events", "max_age_days", &["1", "36500", "0"]),
    (
        "console",
        "max_line",
        &["16", "4096", "15", "1000000000000000"],
    ),
    ("recording", "max_secs", &["1", "3600", "0.5", "inf"]),
    ("recording", "min_free_mb", &["0", "1048576", "1048577"]),
    ("xclip", "window_secs", &["0.1", "600", "601", "nan"]),
    ("xclip", "top_k", &["1", "100", "0", "101"]),
    (
        "log",
        "summary_interval_secs",
        &["1", "86400", "0", "86401"],
    ),
    ("http", "max_streams", &["1", "64", "0", "65"]),
    ("http", "stream_fps", &["0.1", "30", "0", "31", "nan"]),
    ("http", "session_hours", &["1", "8760", "0", "8761"]),
    ("http", "max_upload_mb", &["1", "32", "0", "33"]),
    ("mqtt", "keepalive_secs", &["5", "3600", "4", "3601"]),
    ("mqtt", "qos", &["0", "1", "2"]),
    ("mqtt", "stats_interval_secs", &["5", "86400", "4", "86401"]),
    ("mqtt", "port", &["1", "65535", "0"]),
];

/// What `--self-test` does with `toml`: its exit status, or None when it was still
/// running (without a crash) after `secs`.
fn self_test(toml: &str, secs: u64) -> (Option<i32>, String) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("c.toml");
    std::fs::write(&path, toml).unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_nvr-edge"))
        .arg("--config")
        .arg(&path)
        .args(["--self-test", "--seconds", "0.5"])
        .current_dir(dir.path())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            let mut err = String::new();
            child.stderr.take().unwrap().read_to_string(&mut err).ok();
            let code = status.code();
            // A signal (abort, OOM kill) has no code.
            return (Some(code.unwrap_or(-1)), err);
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            return (None, String::new());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn config(picks: &[(usize, usize)]) -> String {
    let mut sections: std::collections::BTreeMap<&str, Vec<String>> = Default::default();
    for &(k, v) in picks {
        let (section, key, values) = KEYS[k % KEYS.len()];
        let lines = sections.entry(section).or_default();
        if !lines.iter().any(|l| l.starts_with(&format!("{key} ="))) {
            lines.push(format!("{key} = {}", values[v % values.len()]));
        }
    }
    let mut toml = String::from(
        "[storage]\ndata_dir = \"data\"\n[identity]\nenabled = false\n\
         [[cameras]]\nid = \"a\"\nsource = \"synthetic\"\nwidth = 160\nheight = 120\nfps = 10\n\
         ring = { frames = 50, max_bytes = 4000000 }\n",
    );
    for (section, lines) in sections {
        toml.push_str(&format!("[{section}]\n{}\n", lines.join("\n")));
    }
    toml
}

proptest! {
    // Each accepted case runs the real binary for up to 8 s.
    #![proptest_config(ProptestConfig { cases: 12, ..ProptestConfig::default() })]

    #[test]
    fn every_config_check_config_accepts_starts_its_self_test(
        picks in proptest::collection::vec((0usize..100, 0usize..100), 1..6),
    ) {
        let toml = config(&picks);
        match Config::from_toml_str(&toml, "generated") {
            // Refused: every problem names its key.
            Err(ConfigError::Invalid { problems, .. }) => {
                prop_assert!(!problems.is_empty());
                for p in problems {
                    prop_assert!(p.key.contains('.'), "{p}\n{toml}");
                }
            }
            Err(ConfigError::Parse { key, message, .. }) => {
                prop_assert!(!key.is_empty(), "{message}\n{toml}");
            }
            Err(e) => prop_assert!(false, "{e}\n{toml}"),
            Ok(_) => {
                let (code, err) = self_test(&toml, 8);
                prop_assert!(
                    matches!(code, None | Some(0) | Some(1)),
                    "accepted config crashed the self-test (exit {code:?}):\n{toml}\n{err}"
                );
            }
        }
    }
}

/// The accepted edges themselves, every key at once: the lowest and the highest values a
/// key takes (within what this 2-core CI machine can run in seconds) start the self-test.
#[test]
fn the_edges_of_the_ranges_start_the_self_test() {
    let low = "[storage]\ndata_dir = \"data\"\n[identity]\nenabled = false\n\
        [ring]\nframes = 1\nmax_bytes = 1000000\nmax_age_secs = 0.001\n\
        [selftest]\nring_stress_frames = 1\nring_stress_frame_bytes = 1\n\
        [household]\nselftest_members = 1\nselftest_dim = 1\n\
        [motion]\nanalysis_fps = 0.001\nstart_frames = 1\nstop_frames = 1\nbackground_rate = 0.0001\n\
        [events]\nmax_rows = 1\nmax_age_days = 1\n\
        [recording]\npre_secs = 0\nmax_secs = 1\nmin_free_mb = 0\n\
        [xclip]\nwindow_secs = 0.1\nrerun_secs = 0.1\ntop_k = 1\n\
        [log]\nsummary_interval_secs = 1\n\
        [[cameras]]\nid = \"a\"\nsource = \"synthetic\"\nwidth = 16\nheight = 16\nfps = 0.1\n";
    let high = "[storage]\ndata_dir = \"data\"\n[identity]\nenabled = false\n\
        [ring]\nframes = 1000000\nmax_bytes = 1000000000\nmax_age_secs = 86400\n\
        [selftest]\nring_stress_frames = 20\nring_stress_frame_bytes = 16777216\n\
        [household]\nselftest_members = 8192\nselftest_dim = 8192\n\
        [motion]\nanalysis_fps = 60\nstart_frames = 1000\nstop_frames = 10000\nbackground_rate = 1\n\
        [events]\nmax_rows = 10000000\nmax_age_days = 36500\n\
        [recording]\nmax_secs = 3600\npost_secs = 600\nmin_free_mb = 0\n\
        [xclip]\nwindow_secs = 600\nrerun_secs = 3600\ntop_k = 100\n\
        [console]\nmax_line = 4096\n\
        [log]\nsummary_interval_secs = 86400\n\
        [[cameras]]\nid = \"a\"\nsource = \"synthetic\"\nwidth = 160\nheight = 120\nfps = 240\n";
    for (name, toml) in [("low", low), ("high", high)] {
        Config::from_toml_str(toml, name).unwrap_or_else(|e| panic!("{name}: {e}"));
        let (code, err) = self_test(toml, 20);
        assert!(
            matches!(code, None | Some(0) | Some(1)),
            "{name} edges crashed the self-test (exit {code:?}): {err}"
        );
    }
}
