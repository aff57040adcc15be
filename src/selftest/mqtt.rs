//! The MQTT rows (when `[mqtt] enabled`): the broker accepts the configured credentials,
//! and a message published under the prefix comes back through it within the target.

use super::*;

/// A round trip slower than this on the home network means the broker is in trouble.
const ROUND_TRIP_TARGET_MS: f64 = 1000.0;

pub(super) fn mqtt_checks(cfg: &Config) -> Vec<Check> {
    if !cfg.mqtt.enabled {
        return Vec::new();
    }
    let broker = format!("{}:{}", cfg.mqtt.host, cfg.mqtt.port);
    match crate::mqtt::round_trip(&cfg.mqtt) {
        Ok(ms) => vec![
            Check::new("mqtt_broker", None, 0.0, Op::AtMost, 0.0, "problems")
                .detail(format!("connected to {broker}")),
            Check::new(
                "mqtt_round_trip_ms",
                None,
                ms,
                Op::AtMost,
                ROUND_TRIP_TARGET_MS,
                "ms",
            )
            .detail("publish -> own subscription, QoS 1"),
        ],
        Err(e) => vec![
            Check::failed("mqtt_broker", Op::AtMost, 0.0, "problems").detail(error_chain(&e)),
            Check::failed("mqtt_round_trip_ms", Op::AtMost, ROUND_TRIP_TARGET_MS, "ms")
                .detail("no broker"),
        ],
    }
}
