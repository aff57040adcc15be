//! `[console]`: the serial diagnostics console and its unix socket.

use serde::{Deserialize, Serialize};

use super::Problems;

/// `[console]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ConsoleConfig {
    pub enabled: bool,
    /// Serial device (`/dev/ttyS1`, `/dev/ttyAMA0`, `/dev/hvc0`, a pty).
    pub device: String,
    pub baud: u32,
    /// Longest accepted line, bytes.
    pub max_line: usize,
    /// argon2id PHC string of the PIN (`nvr-edge hash-pin`); empty disables mutating
    /// commands.
    pub pin_hash: String,
    /// Refused: the salted SHA-256 of earlier versions (an offline search finds a 6-digit
    /// PIN in under a second). Kept as a key only to say so by name.
    pub pin_sha256: String,
    /// Refused with `pin_sha256`.
    pub pin_salt: String,
    /// Unix socket `nvr-edge console` attaches to (the same console, for a technician with
    /// a shell on the box), mode 0660: root and the service's group only. Empty: none.
    pub socket: String,
}

impl Default for ConsoleConfig {
    fn default() -> Self {
        Self {
            enabled: false,
            device: "/dev/ttyS0".into(),
            baud: 115_200,
            max_line: 256,
            pin_hash: String::new(),
            pin_sha256: String::new(),
            pin_salt: String::new(),
            socket: DEFAULT_SOCKET.into(),
        }
    }
}

/// Where `nvr-edge run` listens for `nvr-edge console` by default: the unit's
/// RuntimeDirectory (0750, group nvr-edge).
pub const DEFAULT_SOCKET: &str = "/run/nvr-edge/console.sock";

/// Baud rates a serial console can be set to (termios' standard speeds).
pub const BAUDS: [u32; 12] = [
    1200, 2400, 4800, 9600, 19_200, 38_400, 57_600, 115_200, 230_400, 460_800, 921_600, 1_500_000,
];

impl ConsoleConfig {
    pub(crate) fn validate(&self, p: &mut Problems) {
        if !BAUDS.contains(&self.baud) {
            p.push("console.baud".into(), format!("must be one of {BAUDS:?}"));
        }
        if !(16..=4096).contains(&self.max_line) {
            p.push("console.max_line".into(), "must be 16-4096 bytes");
        }
        if !self.pin_hash.is_empty() && !crate::secret::is_phc(&self.pin_hash) {
            p.push(
                "console.pin_hash".into(),
                "is not an argon2 PHC string (make one with `nvr-edge hash-pin`)",
            );
        }
        if self.socket.len() > 100 {
            // sun_path holds 108 bytes.
            p.push(
                "console.socket".into(),
                "must be a path of at most 100 bytes",
            );
        }
        if !self.pin_sha256.is_empty() || !self.pin_salt.is_empty() {
            p.push(
                "console.pin_sha256".into(),
                "is no longer accepted: a salted SHA-256 of a PIN falls to an offline search; \
                 set console.pin_hash from `nvr-edge hash-pin` and remove pin_sha256/pin_salt",
            );
        }
        if self.enabled && self.device.trim().is_empty() {
            p.push("console.device".into(), "must name a serial device");
        }
    }
}
