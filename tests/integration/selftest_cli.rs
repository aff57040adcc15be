//! `nvr-edge --self-test`: the report's JSON shape (read by field tooling), and the exit
//! status following the verdict. Whether the embedded defaults PASS on this machine is
//! checked by `.ci/run` running the README's quick-start command itself, outside the
//! parallel test run where timing figures would be noisy.

use std::process::Command;

use serde_json::Value;

fn self_test(config: &str, extra: &[&str]) -> (i32, String, String) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("c.toml");
    let config = format!(
        "{config}\n[storage]\ndata_dir = {:?}\n",
        dir.path().join("data")
    );
    std::fs::write(&path, config).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_nvr-edge"))
        .arg("--self-test")
        .arg("--config")
        .arg(&path)
        .args(extra)
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into(),
        String::from_utf8_lossy(&out.stderr).into(),
    )
}

const LIGHT: &str = r#"
[ring]
frames = 100
max_bytes = 20000000
max_age_secs = 60
[targets]
capture_fps = 10
[selftest]
ring_stress_frames = 100
ring_stress_frame_bytes = 100000
[[cameras]]
id = "c0"
source = "synthetic"
width = 160
height = 120
fps = 10
"#;

#[test]
fn json_report_has_the_stable_shape_and_exit_status_follows_the_verdict() {
    let (code, stdout, stderr) = self_test(LIGHT, &["--json", "--seconds", "1.5"]);
    let v: Value =
        serde_json::from_str(stdout.trim()).unwrap_or_else(|e| panic!("{e}: {stdout} {stderr}"));
    let checks = v["checks"].as_array().expect("checks array");
    let names: Vec<&str> = checks.iter().map(|c| c["name"].as_str().unwrap()).collect();
    for want in [
        "ring_stress_memory",
        "ring_stress_len",
        "ring_stress_add_avg",
        "ring_stress_add_max",
        "camera_fps",
        "camera_frames",
        "camera_reconnects",
        "last_frame_age",
        "camera_memory",
        "frame_add_avg",
        "frame_add_max",
        "ring_within_budget",
        "household_db",
        "household_match_p99",
        "xclip_model",
        "xclip_clip_p99",
        "xclip_clips_per_sec",
        "xclip_concurrent_errors",
    ] {
        assert!(names.contains(&want), "{want} missing from {names:?}");
    }
    for c in checks {
        assert!(c["measured"].is_number() || c["measured"].is_null(), "{c}");
        assert!(c["target"].is_number(), "{c}");
        assert!(c["unit"].is_string() && c["pass"].is_boolean(), "{c}");
        assert!(c["camera"].is_null() || c["camera"] == "c0", "{c}");
    }
    let fps = checks.iter().find(|c| c["name"] == "camera_fps").unwrap();
    assert_eq!(fps["camera"], "c0");
    assert!(fps["measured"].as_f64().unwrap() > 0.0, "{fps}");
    let all_pass = checks.iter().all(|c| c["pass"] == true);
    assert_eq!(v["verdict"], if all_pass { "PASS" } else { "FAIL" });
    assert_eq!(code, if all_pass { 0 } else { 1 }, "{stdout}");
    assert_eq!(v["cameras"][0]["id"], "c0");
    assert!(v["cameras"][0]["memory_bytes"].as_u64().unwrap() >= 20_000_000);
}

#[test]
fn a_missed_target_fails_the_run_with_status_1() {
    let cfg = LIGHT.replace(
        "capture_fps = 10",
        "capture_fps = 10\nmemory_per_camera_mb = 1",
    );
    let (code, stdout, _) = self_test(&cfg, &["--seconds", "1"]);
    assert_eq!(code, 1, "{stdout}");
    assert!(stdout.contains("VERDICT: FAIL"), "{stdout}");
    let mem_row = stdout
        .lines()
        .find(|l| l.starts_with("camera_memory"))
        .expect("camera_memory row");
    assert!(mem_row.ends_with("FAIL"), "{mem_row}");
}

#[test]
fn bad_config_exits_2_before_running() {
    let (code, _, stderr) = self_test(&LIGHT.replace("fps = 10\n", "fps = -1\n"), &[]);
    assert_eq!(code, 2);
    assert!(stderr.contains("cameras[0].fps"), "{stderr}");
}

#[test]
fn a_missing_model_fails_its_row_and_the_rest_still_runs() {
    let cfg = format!("{LIGHT}\n[xclip]\nmodels_dir = \"/nonexistent/xclip\"\n");
    let (code, stdout, _) = self_test(&cfg, &["--json", "--seconds", "1"]);
    assert_eq!(code, 1, "{stdout}");
    let v: Value = serde_json::from_str(stdout.trim()).unwrap();
    let checks = v["checks"].as_array().unwrap();
    let model = checks.iter().find(|c| c["name"] == "xclip_model").unwrap();
    assert_eq!(model["pass"], false);
    assert!(
        model["detail"]
            .as_str()
            .unwrap()
            .contains("/nonexistent/xclip"),
        "{model}"
    );
    assert!(
        checks.iter().any(|c| c["name"] == "camera_fps"),
        "cameras still measured"
    );
}

#[test]
fn the_placeholder_model_is_reported_as_such() {
    let (_, stdout, _) = self_test(LIGHT, &["--seconds", "1"]);
    assert!(
        stdout.contains("model: xclip-tiny (built-in), random weights - PLACEHOLDER"),
        "{stdout}"
    );
    let (_, json, _) = self_test(LIGHT, &["--json", "--seconds", "1"]);
    let v: Value = serde_json::from_str(json.trim()).unwrap();
    assert_eq!(v["models"][0]["placeholder"], true);
    assert_eq!(v["models"][0]["weights"], "random");
}
