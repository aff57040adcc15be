//! Helpers shared by the integration tests that include this module.
// Each test binary uses a subset of these.
#![allow(dead_code)]

use std::path::Path;
use std::process::Command;

/// What ffprobe (FFmpeg's reader: what common players use) makes of a video file.
#[derive(Debug)]
pub struct Probe {
    pub codec: String,
    pub width: u64,
    pub height: u64,
    /// Frames FFmpeg actually decoded from the file's packets.
    pub frames_read: u64,
    pub frame_rate: f64,
}

/// Probe `path` with ffprobe. Without ffprobe: None off CI (the caller skips, saying so),
/// a failure on CI, which installs it.
pub fn ffprobe(path: &Path) -> Option<Probe> {
    let out = Command::new("ffprobe")
        .args(["-v", "error", "-count_frames", "-select_streams", "v:0"])
        .args([
            "-show_entries",
            "stream=codec_name,width,height,nb_read_frames,avg_frame_rate",
            "-of",
            "json",
        ])
        .arg(path)
        .output();
    let out = match out {
        Ok(o) => o,
        Err(e) if std::env::var_os("CI").is_none() => {
            eprintln!(
                "SKIPPED the player check: ffprobe not runnable ({e}); apt-get install ffmpeg"
            );
            return None;
        }
        Err(e) => panic!("ffprobe is needed on CI: {e}"),
    };
    assert!(
        out.status.success() && out.stderr.is_empty(),
        "ffprobe {}: {}",
        path.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let s = &v["streams"][0];
    let rate = s["avg_frame_rate"].as_str().unwrap_or("0/1");
    let (n, d) = rate.split_once('/').unwrap_or((rate, "1"));
    Some(Probe {
        codec: s["codec_name"].as_str().unwrap_or_default().to_string(),
        width: s["width"].as_u64().unwrap_or(0),
        height: s["height"].as_u64().unwrap_or(0),
        frames_read: s["nb_read_frames"]
            .as_str()
            .and_then(|x| x.parse().ok())
            .unwrap_or(0),
        frame_rate: n.parse::<f64>().unwrap_or(0.0) / d.parse::<f64>().unwrap_or(1.0),
    })
}

/// `nvr-edge --config <its dir>/c.toml household ...` through the binary, in a temporary
/// directory of its own; `config(dir)` writes the config's text.
pub struct HouseholdCli {
    pub dir: tempfile::TempDir,
}

impl HouseholdCli {
    pub fn new(config: impl FnOnce(&Path) -> String) -> Self {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("c.toml"), config(dir.path())).unwrap();
        Self { dir }
    }

    /// Exit status, stdout as JSON (Null when it is not), stderr.
    pub fn run(&self, args: &[&str]) -> (i32, serde_json::Value, String) {
        let out = Command::new(env!("CARGO_BIN_EXE_nvr-edge"))
            .arg("--config")
            .arg(self.dir.path().join("c.toml"))
            .arg("household")
            .args(args)
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        (
            out.status.code().unwrap_or(-1),
            serde_json::from_str(stdout.trim()).unwrap_or(serde_json::Value::Null),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }

    /// The JSON of a run that must succeed.
    pub fn ok(&self, args: &[&str]) -> serde_json::Value {
        let (code, v, err) = self.run(args);
        assert_eq!(code, 0, "{args:?}: {err}");
        v
    }
}
