//! `[mqtt]`: events, availability, motion and Home Assistant discovery on an MQTT broker.

use serde::{Deserialize, Serialize};

use super::Problems;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MqttSection {
    pub enabled: bool,
    pub host: String,
    pub port: u16,
    /// Empty: `nvr-edge-<device id>` (unique per box: two clients with one id knock each
    /// other off the broker).
    pub client_id: String,
    /// Empty: `nvr-edge/<device id>`.
    pub topic_prefix: String,
    /// Empty: no authentication.
    pub username: String,
    /// A file holding the password (first line), readable by the service: never in the
    /// config itself or argv.
    pub password_file: Option<std::path::PathBuf>,
    pub keepalive_secs: u64,
    /// QoS of events (0 or 1; the outbox needs 1 to know what the broker has).
    pub qos: u8,
    pub discovery_prefix: String,
    /// `[mqtt.tls]`: TLS to the broker (its port is then usually 8883). Unset: plain TCP.
    pub tls: Option<MqttTls>,
    /// Seconds between `<prefix>/stats` messages (and the cameras' fps states).
    pub stats_interval_secs: u64,
}

impl Default for MqttSection {
    fn default() -> Self {
        Self {
            enabled: false,
            host: "127.0.0.1".into(),
            port: 1883,
            client_id: String::new(),
            topic_prefix: String::new(),
            username: String::new(),
            password_file: None,
            keepalive_secs: 30,
            qos: 1,
            discovery_prefix: "homeassistant".into(),
            tls: None,
            stats_interval_secs: 60,
        }
    }
}

/// `[mqtt.tls]`: the broker's certificate is checked against `ca` (a PEM file of one or
/// more CA certificates; for a broker with a public certificate, the system's bundle such
/// as `/etc/ssl/certs/ca-certificates.crt`) and must name `mqtt.host`. `client_cert` and
/// `client_key` (PEM, both or neither): a client certificate for brokers that ask for one.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MqttTls {
    pub ca: std::path::PathBuf,
    pub client_cert: Option<std::path::PathBuf>,
    pub client_key: Option<std::path::PathBuf>,
}

/// Topic levels a user names: no wildcards, no empty level, printable.
fn topic_ok(t: &str) -> bool {
    !t.is_empty()
        && t.len() <= 200
        && !t.contains(['+', '#', '\0'])
        && !t.starts_with('/')
        && !t.ends_with('/')
        && !t.contains("//")
        && !t.chars().any(char::is_control)
}

impl MqttSection {
    pub(crate) fn validate(&self, p: &mut Problems) {
        p.check(
            "mqtt.host",
            !self.host.is_empty()
                && self.host.len() <= 253
                && !self.host.contains(char::is_whitespace),
            "must be a host name or address",
        );
        p.int("mqtt.port", self.port.into(), 1, 65535);
        p.int("mqtt.keepalive_secs", self.keepalive_secs, 5, 3600);
        p.int("mqtt.qos", self.qos.into(), 0, 1);
        p.int(
            "mqtt.stats_interval_secs",
            self.stats_interval_secs,
            5,
            86_400,
        );
        p.check(
            "mqtt.client_id",
            self.client_id.len() <= 64 && !self.client_id.chars().any(char::is_control),
            "at most 64 characters, no control characters",
        );
        p.check(
            "mqtt.topic_prefix",
            self.topic_prefix.is_empty() || topic_ok(&self.topic_prefix),
            "topic levels without + # or empty levels, not starting or ending with /",
        );
        p.check(
            "mqtt.discovery_prefix",
            topic_ok(&self.discovery_prefix),
            "topic levels without + # or empty levels, not starting or ending with /",
        );
        if let Some(tls) = &self.tls {
            p.check(
                "mqtt.tls.client_key",
                tls.client_cert.is_some() == tls.client_key.is_some(),
                "client_cert and client_key go together: both or neither",
            );
            p.check(
                "mqtt.host",
                tokio_rustls::rustls::pki_types::ServerName::try_from(self.host.as_str()).is_ok(),
                "with mqtt.tls, a DNS name or IP address the broker's certificate names",
            );
        }
        p.check(
            "mqtt.password_file",
            self.password_file.is_none() || !self.username.is_empty(),
            "a password needs mqtt.username",
        );
    }
}
