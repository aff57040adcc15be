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
