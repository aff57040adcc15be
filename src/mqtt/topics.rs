//! Topic names and Home Assistant discovery configs, from `[mqtt]` and the device id.

use serde_json::json;

use super::MqttDeps;
use crate::config::MqttSection;

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

    pub fn camera(&self, camera: &str, what: &str) -> String {
        format!("{}/{camera}/{what}", self.prefix)
    }

    /// Every discovery config (topic, retained payload): per camera, motion and
    /// connectivity binary sensors and the detection switch, under one device block for
    /// this box.
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
        let mut out = Vec::new();
        for cam in &deps.cameras {
            let id = &cam.config.id;
            let object = format!("{id}_detect");
            out.push((
                format!(
                    "{}/switch/{}/{object}/config",
                    self.discovery_prefix, self.node
                ),
                json!({
                    "name": format!("{id} detection"),
                    "unique_id": format!("{}_{object}", self.node),
                    "command_topic": self.camera(id, "detect/set"),
                    "state_topic": self.camera(id, "detect/state"),
                    "payload_on": "ON",
                    "payload_off": "OFF",
                    "availability_topic": self.available(),
                    "device": device,
                }),
            ));
            for (what, class) in [("motion", "motion"), ("connectivity", "connectivity")] {
                let object = format!("{id}_{what}");
                out.push((
                    format!(
                        "{}/binary_sensor/{}/{object}/config",
                        self.discovery_prefix, self.node
                    ),
                    json!({
                        "name": format!("{id} {what}"),
                        "unique_id": format!("{}_{object}", self.node),
                        "device_class": class,
                        "state_topic": self.camera(id, what),
                        "payload_on": "ON",
                        "payload_off": "OFF",
                        "availability_topic": self.available(),
                        "device": device,
                    }),
                ));
            }
        }
        out
    }
}
