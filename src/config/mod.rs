//! Typed configuration: one serde struct tree, parsed with unknown keys refused and
//! validated once at load, so every later stage can trust what it is handed.
//!
//! Every error names the key path it is about (`cameras[1].ring.max_bytes: must be > 0`)
//! and, where the key is written in the file, its line, because the person reading it is
//! usually a technician with a serial cable and a config file, not the source code. The
//! reference for every key is `config/default.toml`, which is also the embedded default.
//!
//! This module is the root (load, parse, the `Config` tree, the problem list); each group
//! of sections lives in its own file with its structs and their `validate` next to them.
//! Domain modules import their section from here; this module imports none of them.

mod cameras;
mod console;
mod events;
mod household;
mod http;
mod models;
mod mqtt;
mod targets;

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

pub use cameras::{
    CameraConfig, PreferredFormat, RingOverride, RingSection, SourceKind, MAX_RING_BYTES,
    MAX_RING_FRAMES,
};
pub use console::{ConsoleConfig, BAUDS, DEFAULT_SOCKET};
pub use events::{MotionConfig, RecordingConfig, Retention, Storage};
pub use household::HouseholdSection;
pub use http::HttpSection;
pub use models::{default_categories, Category, IdentityConfig, Risk, WhenFull, XclipSection};
pub use mqtt::{MqttSection, MqttTls};
pub use targets::{LogSection, SelfTestSection, Targets};

use crate::ring::RingConfig;

/// The configuration used when no `--config` is given.
pub const EMBEDDED_DEFAULT: &str = include_str!("../../config/default.toml");

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: crate::fsio::ReadError,
    },
    #[error("{origin}: {key}: {message}")]
    Parse {
        origin: String,
        key: String,
        message: String,
    },
    #[error("{origin}: {}", .problems.iter().map(|p| p.to_string()).collect::<Vec<_>>().join("; "))]
    Invalid {
        origin: String,
        problems: Vec<Problem>,
    },
}

/// One validation problem, anchored at a key path and, where the key is written in the
/// file, its line (a key left to its default has none; its nearest written parent's is
/// given instead).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub key: String,
    pub message: String,
    pub line: Option<usize>,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.key, self.message)?;
        if let Some(line) = self.line {
            write!(f, " (line {line})")?;
        }
        Ok(())
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Ring budget every camera gets unless it overrides a field.
    #[serde(default)]
    pub ring: RingSection,
    /// Figures the self-test measures against.
    #[serde(default)]
    pub targets: Targets,
    #[serde(default)]
    pub selftest: SelfTestSection,
    #[serde(default)]
    pub storage: Storage,
    #[serde(default)]
    pub household: HouseholdSection,
    #[serde(default)]
    pub xclip: XclipSection,
    /// Motion gate in front of the models.
    #[serde(default)]
    pub motion: MotionConfig,
    /// How much event history to keep.
    #[serde(default)]
    pub events: Retention,
    /// Video files of events.
    #[serde(default)]
    pub recording: RecordingConfig,
    /// Recognising household members and vehicles in events.
    #[serde(default)]
    pub identity: IdentityConfig,
    /// Serial diagnostics console of `nvr-edge run`.
    #[serde(default)]
    pub console: ConsoleConfig,
    /// The HTTP API and page of `nvr-edge run`.
    #[serde(default)]
    pub http: HttpSection,
    /// Events, availability, motion and Home Assistant discovery on an MQTT broker.
    #[serde(default)]
    pub mqtt: MqttSection,
    #[serde(default)]
    pub log: LogSection,
    /// The cameras, in the order they are started and reported.
    #[serde(default)]
    pub cameras: Vec<CameraConfig>,
}

impl Config {
    /// Parse and validate the embedded default configuration.
    pub fn embedded() -> Result<Self, ConfigError> {
        Self::from_toml_str(EMBEDDED_DEFAULT, "embedded default config")
    }

    /// Load from a file, or the embedded default when `path` is `None`.
    pub fn load(path: Option<&Path>) -> Result<Self, ConfigError> {
        match path {
            None => Self::embedded(),
            Some(p) => {
                let text = crate::fsio::read_regular_string(p, crate::fsio::MAX_CONFIG_BYTES)
                    .map_err(|source| ConfigError::Read {
                        path: p.to_path_buf(),
                        source,
                    })?;
                Self::from_toml_str(&text, &p.display().to_string())
            }
        }
    }

    /// Parse TOML text (`origin` names it in errors) and validate it.
    pub fn from_toml_str(text: &str, origin: &str) -> Result<Self, ConfigError> {
        let parse_err = |key: String, message: String| ConfigError::Parse {
            origin: origin.to_string(),
            key,
            message,
        };
        let de = toml::Deserializer::parse(text)
            .map_err(|e| parse_err("(document)".into(), describe(text, &e)))?;
        let cfg: Config = serde_path_to_error::deserialize(de).map_err(|e| {
            let key = e.path().to_string();
            let key = if key == "." { "(document)".into() } else { key };
            parse_err(key, describe(text, e.inner()))
        })?;
        let mut problems = cfg.problems();
        for p in &mut problems {
            p.line = line_of(text, &p.key);
        }
        if problems.is_empty() {
            Ok(cfg)
        } else {
            Err(ConfigError::Invalid {
                origin: origin.to_string(),
                problems,
            })
        }
    }

    /// The ring budget a camera ends up with after its overrides.
    pub fn ring_for(&self, cam: &CameraConfig) -> RingConfig {
        let o = &cam.ring;
        RingConfig {
            frames: o.frames.unwrap_or(self.ring.frames) as usize,
            max_bytes: o.max_bytes.unwrap_or(self.ring.max_bytes) as usize,
            max_age: Duration::from_secs_f64(o.max_age_secs.unwrap_or(self.ring.max_age_secs)),
        }
    }

    /// Every validation problem at once, so a technician fixes the file in one pass.
    pub fn problems(&self) -> Vec<Problem> {
        let mut p = Problems::default();
        self.ring.validate(&mut p);
        self.targets.validate(&mut p);
        self.xclip.validate(&mut p);
        self.household.validate(&mut p);
        self.selftest.validate(&mut p, self.ring.max_bytes);
        self.identity.validate(&mut p);
        self.recording.validate(&mut p, self.ring.max_age_secs);
        self.storage.validate(&mut p);
        self.log.validate(&mut p);
        self.motion.validate(&mut p);
        self.events.validate(&mut p);
        self.console.validate(&mut p);
        self.http.validate(&mut p);
        self.mqtt.validate(&mut p);
        cameras::validate_cameras(&mut p, &self.cameras);
        p.0
    }
}

/// The problems found so far; each section's `validate` adds to it.
#[derive(Default)]
pub(crate) struct Problems(Vec<Problem>);

impl Problems {
    pub(crate) fn push(&mut self, key: String, message: impl Into<String>) {
        self.0.push(Problem {
            key,
            message: message.into(),
            line: None,
        });
    }
    /// A finite number in `lo..=hi`.
    pub(crate) fn range(&mut self, key: &str, v: f64, lo: f64, hi: f64) {
        if !(v.is_finite() && (lo..=hi).contains(&v)) {
            self.push(
                key.to_string(),
                format!("must be a number from {lo} to {hi}"),
            );
        }
    }
    /// A finite number above `lo` and at most `hi`.
    pub(crate) fn above(&mut self, key: &str, v: f64, lo: f64, hi: f64) {
        if !(v.is_finite() && v > lo && v <= hi) {
            self.push(
                key.to_string(),
                format!("must be a number > {lo} and <= {hi}"),
            );
        }
    }
    /// A whole number in `lo..=hi`.
    pub(crate) fn int(&mut self, key: &str, v: u64, lo: u64, hi: u64) {
        if !(lo..=hi).contains(&v) {
            self.push(key.to_string(), format!("must be {lo}-{hi}"));
        }
    }
    pub(crate) fn check(&mut self, key: &str, ok: bool, message: &str) {
        if !ok {
            self.push(key.to_string(), message);
        }
    }
    /// A target or figure: finite, above 0, and short of absurd (a typo of a few zeros).
    pub(crate) fn positive(&mut self, key: &str, v: f64) {
        self.above(key, v, 0.0, 1e6);
    }
}

/// The 1-based line where `key` (`cameras[1].ring.max_bytes`) is written in `text`, or
/// where its nearest written parent is; `None` when nothing of it is written.
pub fn line_of(text: &str, key: &str) -> Option<usize> {
    use toml::de::{DeTable, DeValue};
    let doc = DeTable::parse(text).ok()?;
    let mut table: Option<&DeTable<'_>> = Some(doc.get_ref());
    let mut value: Option<&DeValue<'_>> = None;
    let mut at: Option<usize> = None;
    for segment in key.split('.') {
        let (name, index) = match segment.split_once('[') {
            Some((n, rest)) => (n, rest.trim_end_matches(']').parse::<usize>().ok()),
            None => (segment, None),
        };
        let t = match (table, value) {
            (Some(t), _) => t,
            (None, Some(DeValue::Table(t))) => t,
            _ => break,
        };
        let Some((k, v)) = t.iter().find(|(k, _)| k.get_ref().as_ref() == name) else {
            break;
        };
        at = Some(k.span().start);
        table = None;
        value = Some(v.get_ref());
        if let Some(i) = index {
            let Some(DeValue::Array(items)) = value else {
                break;
            };
            let Some(item) = items.get(i) else { break };
            if item.span().end > item.span().start {
                at = Some(item.span().start);
            }
            value = Some(item.get_ref());
        }
    }
    at.map(|pos| text[..pos.min(text.len())].matches('\n').count() + 1)
}

/// toml's own rendering is a multi-line excerpt; a serial console wants one line with
/// the message and where it is.
fn describe(text: &str, e: &toml::de::Error) -> String {
    let msg = e.message().trim().to_string();
    match e.span() {
        Some(span) => {
            let before = &text[..span.start.min(text.len())];
            let line = before.matches('\n').count() + 1;
            let col = before.len() - before.rfind('\n').map_or(0, |i| i + 1) + 1;
            format!("{msg} (line {line}, column {col})")
        }
        None => msg,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn embedded_default_is_valid_and_has_two_synthetic_cameras() {
        let cfg = Config::embedded().unwrap();
        assert_eq!(cfg.cameras.len(), 2);
        assert!(cfg
            .cameras
            .iter()
            .all(|c| c.source == SourceKind::Synthetic && c.width == 640 && c.fps == 30.0));
        let ring = cfg.ring_for(&cfg.cameras[0]);
        assert_eq!(ring.frames, 1800);
        assert_eq!(ring.max_bytes, 256 << 20);
    }

    #[test]
    fn camera_override_inherits_unset_fields() {
        let cfg = Config::from_toml_str(
            r#"
            [ring]
            frames = 100
            max_bytes = 1000000
            max_age_secs = 5
            [[cameras]]
            id = "a"
            source = "synthetic"
            width = 320
            height = 240
            fps = 10
            ring = { frames = 7 }
            "#,
            "t",
        )
        .unwrap();
        let r = cfg.ring_for(&cfg.cameras[0]);
        assert_eq!(
            (r.frames, r.max_bytes, r.max_age),
            (7, 1_000_000, Duration::from_secs(5))
        );
    }
}
