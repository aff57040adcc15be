//! The self-test's look at the broker: connect with the configured credentials (under a
//! client id of its own, so a running recorder is not knocked off), subscribe to a topic
//! under the prefix, publish to it and time the message's way back.

use std::time::{Duration, Instant};

use rumqttc::{AsyncClient, Event, Packet, QoS};

use super::{describe, options, MqttError, Secrets, Topics};
use crate::config::MqttSection;

/// The whole probe's time limit.
const LIMIT: Duration = Duration::from_secs(10);

#[derive(Debug, thiserror::Error)]
pub enum ProbeError {
    #[error(transparent)]
    Config(#[from] MqttError),
    #[error("broker {broker}: {why}")]
    Broker { broker: String, why: String },
    #[error("broker {0}: no answer within 10 s")]
    Timeout(String),
    #[error("runtime")]
    Runtime(#[from] std::io::Error),
}

/// Milliseconds from publishing to receiving our own message back through the broker.
pub fn round_trip(cfg: &MqttSection) -> Result<f64, ProbeError> {
    let secrets = Secrets::load(cfg)?;
    let topics = Topics::new(cfg, &super::device_id());
    // No last will: this client's going says nothing about the recorder.
    let opts = options(
        cfg,
        &topics,
        &format!("{}-selftest", topics.client_id),
        &secrets,
        false,
    );
    let broker = format!("{}:{}", cfg.host, cfg.port);
    let topic = format!("{}/selftest/ping", topics.prefix);
    let nonce = format!("{}-{}", std::process::id(), crate::secret::random_token());
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(async {
        let (client, mut eventloop) = AsyncClient::new(opts, 8);
        let work = async {
            let mut sent_at = None;
            loop {
                match eventloop.poll().await {
                    Ok(Event::Incoming(Packet::ConnAck(_))) => {
                        let _ = client.try_subscribe(topic.clone(), QoS::AtLeastOnce);
                    }
                    Ok(Event::Incoming(Packet::SubAck(_))) => {
                        sent_at = Some(Instant::now());
                        let _ = client.try_publish(
                            topic.clone(),
                            QoS::AtLeastOnce,
                            false,
                            nonce.clone(),
                        );
                    }
                    Ok(Event::Incoming(Packet::Publish(p))) if p.payload == nonce.as_bytes() => {
                        let ms = sent_at.map_or(0.0, |t| t.elapsed().as_secs_f64() * 1e3);
                        let _ = client.try_disconnect();
                        return Ok(ms);
                    }
                    Ok(_) => {}
                    Err(e) => {
                        return Err(ProbeError::Broker {
                            broker: broker.clone(),
                            why: describe(&e),
                        })
                    }
                }
            }
        };
        match tokio::time::timeout(LIMIT, work).await {
            Ok(r) => r,
            Err(_) => Err(ProbeError::Timeout(broker.clone())),
        }
    })
}
