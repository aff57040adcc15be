//! Topic names and Home Assistant discovery configs, from `[mqtt]` and the device id.

use serde_json::json;

use super::MqttDeps;
use crate::config::MqttSection;

/// Each camera's entities: (component, object id suffix).
const CAMERA_ENTITIES: &[(&str, &str)] = &[
    ("switch", "detect"),
    ("binary_sensor", "motion"),
    ("binary_sensor", "connectivity"),
    ("sensor", "action"),
    ("sensor", "risk"),
    ("sensor", "fps"),
    ("image", "snapshot"),
];

pub struct Topics {
    pub prefix: String,
    pub client_id: String,
    pub discovery_prefix: String,
    /// The device id Home Assistant groups the entities under.
    pub node: String,
}

impl Topics {
    pub fn new(cfg: &MqttSection, device_id: &str) -> Self {
        let prefix = if cfg.topic_prefix.is_empty() {
            format!("nvr-edge/{device_id}")
        } else {
            cfg.topic_prefix.clone()
        };
        let client_id = if cfg.client_id.is_empty() {
            format!("nvr-edge-{device_id}")
        } else {
            cfg.client_id.clone()
        };
        // A node id Home Assistant accepts ([a-zA-Z0-9_-]), unique per prefix.
        let node: String = prefix
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '-' {
                    c
                } else {
                    '_'
                }
            })
            .collect();
        Self {
            prefix,
            client_id,
            discovery_prefix: cfg.discovery_prefix.clone(),
            node,
        }
    }

    pub fn available(&self) -> String {
        format!("{}/available", self.prefix)
    }

    pub fn events(&self) -> String {
        format!("{}/events", self.prefix)
    }

    pub fn stats(&self) -> String {
        format!("{}/stats", self.prefix)
    }

    pub fn selftest(&self) -> String {
        format!("{}/selftest", self.prefix)
    }

    /// The discovery config topics of one camera's entities.
    pub fn camera_config_topics(&self, camera: &str) -> Vec<String> {
        CAMERA_ENTITIES
            .iter()
            .map(|(component, object)| {
                format!(
                    "{}/{component}/{}/{camera}_{object}/config",
                    self.discovery_prefix, self.node
                )
            })
            .collect()
    }

    pub fn camera(&self, camera: &str, what: &str) -> String {
        format!("{}/{camera}/{what}", self.prefix)
    }

    /// Every discovery config (topic, retained payload), under one device block for this
    /// box: per camera the detection switch, motion and connectivity, the last action and
    /// risk, fps and the last event's snapshot (an `image`); for the box its memory, the
    /// boot self-test's verdict and whether it is online.
    pub fn discovery(&self, deps: &MqttDeps) -> Vec<(String, serde_json::Value)> {
        let mut device = json!({
            "identifiers": [self.node],
            "name": format!("nvr-edge {}", self.prefix),
            "manufacturer": "nvr-edge",
            "model": "nvr-edge",
            "sw_version": env!("CARGO_PKG_VERSION"),
        });
        if let Some(base) = &deps.http_base {
            device["configuration_url"] = json!(base);
        }
        let entity = |component: &str, object: &str, mut cfg: serde_json::Value| {
            cfg["unique_id"] = json!(format!("{}_{object}", self.node));
            cfg["availability_topic"] = json!(self.available());
            cfg["device"] = device.clone();
            (
                format!(
                    "{}/{component}/{}/{object}/config",
                    self.discovery_prefix, self.node
                ),
                cfg,
            )
        };
        let mut out = vec![
            entity(
                "sensor",
                "memory",
                json!({
                    "name": "memory",
                    "state_topic": self.stats(),
                    "value_template":
                        "{{ (value_json.process_memory.resident / 1048576) | round(1) }}",
                    "unit_of_measurement": "MiB",
                    "state_class": "measurement",
                }),
            ),
            entity(
                "sensor",
                "selftest",
                json!({
                    "name": "self-test",
                    "state_topic": self.selftest(),
                    "value_template": "{{ value_json.verdict }}",
                }),
            ),
            entity(
                "binary_sensor",
                "online",
                json!({
                    "name": "online",
                    "device_class": "connectivity",
                    "state_topic": self.available(),
                    "payload_on": "online",
                    "payload_off": "offline",
                }),
            ),
        ];
        for cam in &deps.cameras {
            let id = &cam.config.id;
            for (object, name, template) in [
                (
                    "action",
                    "last action",
                    "{{ value_json.action or 'motion' }}",
                ),
                ("risk", "last risk", "{{ value_json.risk or 'unrated' }}"),
            ] {
                out.push(entity(
                    "sensor",
                    &format!("{id}_{object}"),
                    json!({
                        "name": format!("{id} {name}"),
                        "state_topic": self.camera(id, "event"),
                        "value_template": template,
                        "json_attributes_topic": self.camera(id, "event"),
                    }),
                ));
            }
            out.push(entity(
                "sensor",
                &format!("{id}_fps"),
                json!({
                    "name": format!("{id} fps"),
                    "state_topic": self.camera(id, "fps"),
                    "unit_of_measurement": "fps",
                    "state_class": "measurement",
                }),
            ));
            out.push(entity(
                "image",
                &format!("{id}_snapshot"),
                json!({
                    "name": format!("{id} snapshot"),
                    "image_topic": self.camera(id, "snapshot"),
                    "content_type": "image/jpeg",
                }),
            ));
            out.push(entity(
                "switch",
                &format!("{id}_detect"),
                json!({
                    "name": format!("{id} detection"),
                    "command_topic": self.camera(id, "detect/set"),
                    "state_topic": self.camera(id, "detect/state"),
                    "payload_on": "ON",
                    "payload_off": "OFF",
                }),
            ));
            for what in ["motion", "connectivity"] {
                out.push(entity(
                    "binary_sensor",
                    &format!("{id}_{what}"),
                    json!({
                        "name": format!("{id} {what}"),
                        "device_class": what,
                        "state_topic": self.camera(id, what),
                        "payload_on": "ON",
                        "payload_off": "OFF",
                    }),
                ));
            }
        }
        out
    }
}
