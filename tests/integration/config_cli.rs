//! `nvr-edge check-config`: bad files are refused with the key path named and status 2.

use std::process::Command;

fn check(toml: &str) -> (i32, String) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("c.toml");
    std::fs::write(&path, toml).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_nvr-edge"))
        .arg("check-config")
        .arg(&path)
        .output()
        .unwrap();
    let text =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    (out.status.code().unwrap_or(-1), text)
}

const CAM: &str = r#"
[[cameras]]
id = "a"
source = "synthetic"
width = 320
height = 240
fps = 10
"#;

#[test]
fn the_shipped_default_config_checks_ok() {
    let (code, text) = check(nvr_edge::config::EMBEDDED_DEFAULT);
    assert_eq!(code, 0, "{text}");
    assert!(text.contains("ok (2 camera(s))"), "{text}");
}

#[test]
fn unknown_key_is_named_with_its_path() {
    let (code, text) = check(&format!("{CAM}bogus_key = 1\n"));
    assert_eq!(code, 2, "{text}");
    assert!(text.contains("cameras[0]"), "{text}");
    assert!(text.contains("bogus_key"), "{text}");
}

#[test]
fn unknown_key_in_a_nested_table_is_named() {
    let (code, text) = check(&format!("{CAM}ring = {{ frames = 10, typo = 3 }}\n"));
    assert_eq!(code, 2, "{text}");
    assert!(text.contains("cameras[0].ring"), "{text}");
    assert!(text.contains("typo"), "{text}");
}

#[test]
fn negative_budget_is_named_with_its_path() {
    let (code, text) = check(&format!(
        "{CAM}\n[[cameras]]\nid = \"b\"\nsource = \"synthetic\"\nwidth = 320\nheight = 240\nfps = 10\nring = {{ max_bytes = -5 }}\n"
    ));
    assert_eq!(code, 2, "{text}");
    assert!(text.contains("cameras[1].ring.max_bytes"), "{text}");
}

#[test]
fn zero_budget_is_named_with_its_path() {
    let (code, text) = check(&format!(
        "[ring]\nmax_bytes = 0\nframes = 10\nmax_age_secs = 1\n{CAM}"
    ));
    assert_eq!(code, 2, "{text}");
    assert!(text.contains("ring.max_bytes: must be > 0"), "{text}");
}

#[test]
fn duplicate_camera_id_is_named() {
    let (code, text) = check(&format!("{CAM}{CAM}"));
    assert_eq!(code, 2, "{text}");
    assert!(
        text.contains("cameras[1].id: duplicate camera id \"a\""),
        "{text}"
    );
}

#[test]
fn every_problem_is_listed_at_once() {
    let toml = r#"
[targets]
capture_fps = 0
[[cameras]]
id = "bad id!"
source = "replay"
width = 321
height = 240
fps = 0
"#;
    let (code, text) = check(toml);
    assert_eq!(code, 2, "{text}");
    for key in [
        "targets.capture_fps",
        "cameras[0].id",
        "cameras[0].width",
        "cameras[0].fps",
        "cameras[0].path: required",
    ] {
        assert!(text.contains(key), "{key} missing from: {text}");
    }
}

#[test]
fn wrong_type_and_bad_enum_are_named() {
    let (code, text) = check(&CAM.replace("fps = 10", "fps = \"fast\""));
    assert_eq!(code, 2, "{text}");
    assert!(text.contains("cameras[0].fps"), "{text}");
    let (code, text) = check(&CAM.replace("\"synthetic\"", "\"webcam\""));
    assert_eq!(code, 2, "{text}");
    assert!(text.contains("cameras[0].source"), "{text}");
}

#[test]
fn missing_file_and_broken_toml_exit_2() {
    let out = Command::new(env!("CARGO_BIN_EXE_nvr-edge"))
        .args(["check-config", "/nonexistent/nvr.toml"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("/nonexistent/nvr.toml"));
    let (code, text) = check("[[cameras]\nid = ");
    assert_eq!(code, 2, "{text}");
}

/// The field probe's configs that `check-config` accepted and that then panicked, aborted,
/// allocated 32 GB, deleted every event or spun a core: each is now refused, naming its key
/// and the line it is on.
#[test]
fn configs_that_crashed_or_lost_data_are_refused_with_key_and_line() {
    let cases = [
        ("[ring]\nmax_age_secs = 1e20\n", "ring.max_age_secs", 2),
        (
            "[console]\nmax_line = 1000000000000000\n",
            "console.max_line",
            2,
        ),
        (
            "[household]\nselftest_members = 1000000\nselftest_dim = 8192\n",
            "household.selftest_members",
            2,
        ),
        ("[events]\nmax_rows = 0\n", "events.max_rows", 2),
        ("[motion]\nanalysis_fps = inf\n", "motion.analysis_fps", 2),
        (
            "[motion]\nstart_frames = 0\nbackground_rate = nan\n",
            "motion.start_frames",
            2,
        ),
        (
            "[motion]\nstart_frames = 0\nbackground_rate = nan\n",
            "motion.background_rate",
            3,
        ),
        (
            "[console]\npin_sha256 = \"ab\"\npin_salt = \"s\"\n",
            "console.pin_sha256",
            2,
        ),
    ];
    for (toml, key, line) in cases {
        let (code, text) = check(&format!("{CAM}\n{toml}"));
        assert_eq!(code, 2, "{toml}: {text}");
        // CAM is 8 lines, then a blank one.
        let want = format!("(line {})", line + 8);
        let row = text
            .lines()
            .find(|r| r.contains(key))
            .unwrap_or_else(|| panic!("{key} not named for {toml:?}: {text}"));
        assert!(row.contains(&want), "{key}: want {want} in {row:?}");
    }
}

/// A key left to its default has no line of its own; a problem there names its section's.
#[test]
fn a_problem_in_a_defaulted_key_names_its_section() {
    let (code, text) = check(&format!(
        "{CAM}\n[selftest]\nring_stress_frame_bytes = 20000000\n"
    ));
    assert_eq!(code, 2, "{text}");
    let row = |key: &str| {
        text.lines()
            .find(|l| l.contains(&format!("{key}:")))
            .unwrap_or_else(|| panic!("{key} not named: {text}"))
            .to_string()
    };
    // Written: its own line. Left to its default: the line of its section.
    assert!(
        row("selftest.ring_stress_frame_bytes").ends_with("(line 10)"),
        "{text}"
    );
    assert!(
        row("selftest.ring_stress_frames").ends_with("(line 9)"),
        "{text}"
    );
}

/// A config path that is a device or a FIFO is refused at once, named, without reading
/// it until memory runs out or blocking.
#[test]
fn a_config_path_that_is_not_a_file_is_refused() {
    let (code, text) = {
        let out = Command::new(env!("CARGO_BIN_EXE_nvr-edge"))
            .args(["check-config", "/dev/zero"])
            .output()
            .unwrap();
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stderr).to_string(),
        )
    };
    assert_eq!(code, 2, "{text}");
    assert!(text.contains("not a regular file"), "{text}");
}

/// Logs to a pipe or journald carry no colour codes.
#[test]
fn logs_to_a_non_terminal_have_no_ansi_codes() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_nvr-edge"))
        .args(["--config", "/nonexistent/c.toml", "events", "list"])
        .env_remove("NO_COLOR")
        .current_dir(dir.path())
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!err.is_empty());
    assert!(!err.contains('\u{1b}'), "{err:?}");
    // A running recorder's tracing lines (what journald stores).
    let cfg = dir.path().join("c.toml");
    std::fs::write(
        &cfg,
        format!(
            "[storage]\ndata_dir = {:?}\n[identity]\nenabled = false\n{CAM}ring = {{ frames = 20, max_bytes = 2000000 }}\n",
            dir.path().join("d")
        ),
    )
    .unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_nvr-edge"))
        .arg("--config")
        .arg(&cfg)
        .arg("run")
        .env_remove("NO_COLOR")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let mut seen = String::new();
    for line in std::io::BufRead::lines(std::io::BufReader::new(stderr)) {
        let Ok(line) = line else { break };
        seen.push_str(&line);
        seen.push('\n');
        if line.contains("camera streaming") {
            break;
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    assert!(
        seen.contains("INFO") && seen.contains("camera streaming"),
        "{seen}"
    );
    assert!(!seen.contains('\u{1b}'), "{seen:?}");
}
