//! MQTT: events, availability, motion and connectivity on a broker, with Home Assistant
//! discovery, from one task on the tokio runtime of `nvr-edge run`.
//!
//! Never in capture's way: the task only reads shared state (analysis figures, camera
//! stats) and the database; events reach it through the outbox the database keeps
//! (`outbox.rs`), so a broker that is down, slow or unreachable costs the recorder nothing
//! and loses nothing: every event committed is published, in order, at least once, when
//! the broker is back (bounded by the events' retention).
//!
//! One session at a time: connect (last will `offline`, retained), publish `online`,
//! the discovery configs and the current states, then the outbox in order with at most
//! [`IN_FLIGHT`] messages unacknowledged; a row leaves the outbox when the broker's PUBACK
//! for it arrives. Any error ends the session; the next starts after a back-off (1 s
//! doubling to 30 s) with a fresh client, and republishes whatever was not acknowledged.

mod outbox;
mod probe;
pub mod topics;

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rumqttc::{
    AsyncClient, Event, EventLoop, LastWill, MqttOptions, Outgoing, Packet, QoS, TlsConfiguration,
    Transport,
};
use serde_json::json;
use tokio_rustls::rustls;

use crate::analysis::AnalysisStats;
use crate::clock::Clock;
use crate::config::{MqttSection, MqttTls};
use crate::events::EventStore;
use crate::pipeline::CameraView;
use crate::status::EventView;
use crate::store::StoreError;
pub use outbox::{Outbox, Pending};
pub use probe::{round_trip, ProbeError};
use topics::Topics;

/// Event messages sent and not yet acknowledged, at most.
pub const IN_FLIGHT: usize = 16;
/// Requests the client queues for its event loop.
const CLIENT_QUEUE: usize = 64;
/// How often states and the outbox are looked at.
const TICK: Duration = Duration::from_millis(250);
/// Largest message sent: a snapshot (at most ~640 px wide, ~100 KB), the self-test report.
/// rumqttc's default (10 KiB) ended every session at the first snapshot.
const MAX_OUTGOING: usize = 1 << 20;
/// Largest message taken in: commands are a few bytes.
const MAX_INCOMING: usize = 16 * 1024;
/// Open events whose last published state is kept (for the `before` of the next message).
const MAX_REMEMBERED: usize = 64;

#[derive(Debug, thiserror::Error)]
pub enum MqttError {
    #[error("mqtt: outbox")]
    Store(#[from] StoreError),
    #[error("mqtt.password_file: {0}")]
    Password(String, #[source] crate::fsio::ReadError),
    #[error(transparent)]
    Pem(#[from] crate::tls::PemError),
    #[error("mqtt.tls: the CA, certificate or key is not usable")]
    Tls(#[source] rustls::Error),
}

/// What the MQTT side reads.
pub struct MqttDeps {
    pub cfg: MqttSection,
    pub clock: Arc<dyn Clock>,
    pub cameras: Vec<CameraView>,
    pub analysis: Vec<Arc<Mutex<AnalysisStats>>>,
    /// Each camera's motion detection switch (`<prefix>/<camera>/detect/set`).
    pub detect: Vec<Arc<std::sync::atomic::AtomicBool>>,
    pub events: Arc<EventStore>,
    pub outbox: Outbox,
    /// `http://host:port` when the web API is on (URLs in messages and discovery).
    pub http_base: Option<String>,
    pub model: Option<crate::inference::ModelInfo>,
    pub started: std::time::Instant,
    /// The boot self-test's report, published retained on `<prefix>/selftest`.
    pub selftest_report: std::path::PathBuf,
    /// Where the cameras last announced to Home Assistant are remembered, so the
    /// discovery of one removed from the config is cleared at the next start.
    pub data_dir: std::path::PathBuf,
}

/// The file under `data_dir` naming the cameras last announced.
const ANNOUNCED_FILE: &str = "mqtt-announced.json";

/// The running MQTT task; [`MqttHandle::stop`] says `offline` and disconnects.
pub struct MqttHandle {
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<()>,
}

impl MqttHandle {
    /// Publish `offline` (retained) and disconnect, waiting at most `within`.
    pub async fn stop(mut self, within: Duration) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        let _ = tokio::time::timeout(within, &mut self.task).await;
        self.task.abort();
    }
}

/// This box's id: the first 12 hex digits of `/etc/machine-id`, else the host name.
pub fn device_id() -> String {
    let id = std::fs::read_to_string("/etc/machine-id").unwrap_or_default();
    let hex: String = id
        .trim()
        .chars()
        .filter(char::is_ascii_hexdigit)
        .take(12)
        .collect();
    if hex.len() == 12 {
        return hex;
    }
    rustix::system::uname()
        .nodename()
        .to_string_lossy()
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || *c == '-')
        .take(32)
        .collect()
}

/// Start the MQTT task on the current runtime. The password and TLS files are read here,
/// so a missing or unusable one is said at start.
pub fn start(deps: MqttDeps) -> Result<MqttHandle, MqttError> {
    let secrets = Secrets::load(&deps.cfg)?;
    let topics = Topics::new(&deps.cfg, &device_id());
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel();
    let task = tokio::spawn(run(deps, topics, secrets, stop_rx));
    Ok(MqttHandle {
        stop: Some(stop_tx),
        task,
    })
}

/// What a connection needs from files: the password and the TLS client configuration.
struct Secrets {
    password: Option<String>,
    tls: Option<Arc<rustls::ClientConfig>>,
}

impl Secrets {
    fn load(cfg: &MqttSection) -> Result<Self, MqttError> {
        let password = match &cfg.password_file {
            Some(p) => {
                let text = crate::fsio::read_regular_string(p, 4096)
                    .map_err(|e| MqttError::Password(p.display().to_string(), e))?;
                Some(text.lines().next().unwrap_or("").to_string())
            }
            None => None,
        };
        let tls = cfg.tls.as_ref().map(client_config).transpose()?;
        Ok(Self { password, tls })
    }
}

/// The TLS client configuration of `[mqtt.tls]`: the broker checked against `ca`, a
/// client certificate when one is given.
fn client_config(tls: &MqttTls) -> Result<Arc<rustls::ClientConfig>, MqttError> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in crate::tls::certificates("mqtt.tls.ca", &tls.ca)? {
        roots.add(cert).map_err(MqttError::Tls)?;
    }
    let builder = rustls::ClientConfig::builder_with_provider(crate::tls::provider())
        .with_safe_default_protocol_versions()
        .map_err(MqttError::Tls)?
        .with_root_certificates(roots);
    let cfg = match (&tls.client_cert, &tls.client_key) {
        (Some(cert), Some(key)) => builder
            .with_client_auth_cert(
                crate::tls::certificates("mqtt.tls.client_cert", cert)?,
                crate::tls::private_key("mqtt.tls.client_key", key)?,
            )
            .map_err(MqttError::Tls)?,
        _ => builder.with_no_client_auth(),
    };
    Ok(Arc::new(cfg))
}

/// Connection options under `client_id`; `will`: the recorder's last will (`offline`).
fn options(
    cfg: &MqttSection,
    topics: &Topics,
    client_id: &str,
    secrets: &Secrets,
    will: bool,
) -> MqttOptions {
    let mut o = MqttOptions::new(client_id, cfg.host.clone(), cfg.port);
    o.set_keep_alive(Duration::from_secs(cfg.keepalive_secs));
    o.set_clean_session(true);
    o.set_max_packet_size(MAX_INCOMING, MAX_OUTGOING);
    if will {
        o.set_last_will(LastWill::new(
            topics.available(),
            "offline",
            QoS::AtLeastOnce,
            true,
        ));
    }
    if !cfg.username.is_empty() {
        o.set_credentials(
            cfg.username.clone(),
            secrets.password.as_deref().unwrap_or(""),
        );
    }
    if let Some(tls) = &secrets.tls {
        o.set_transport(Transport::tls_with_config(TlsConfiguration::Rustls(
            tls.clone(),
        )));
    }
    o
}

async fn run(
    deps: MqttDeps,
    topics: Topics,
    secrets: Secrets,
    mut stop: tokio::sync::oneshot::Receiver<()>,
) {
    let mut backoff = Duration::from_secs(1);
    let mut failures = 0u32;
    // Messages the client's queue had no room for, over every session.
    let dropped = AtomicU64::new(0);
    loop {
        let (client, eventloop) = AsyncClient::new(
            options(&deps.cfg, &topics, &topics.client_id, &secrets, true),
            CLIENT_QUEUE,
        );
        let mut session = Session::new(&deps, &topics, client, &dropped);
        match session.run(eventloop, &mut stop).await {
            Ended::Stopped => return,
            Ended::Failed { error, connected } => {
                if connected {
                    backoff = Duration::from_secs(1);
                    failures = 0;
                }
                failures += 1;
                // Said once per outage, then quietly retried.
                if failures == 1 {
                    tracing::warn!(broker = %format!("{}:{}", deps.cfg.host, deps.cfg.port), %error,
                        "mqtt: broker unreachable or refused; retrying (events wait in the outbox)");
                }
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(backoff) => {}
            _ = &mut stop => return,
        }
        backoff = (backoff * 2).min(Duration::from_secs(30));
    }
}

enum Ended {
    Stopped,
    Failed { error: String, connected: bool },
}

/// One connection: what was published and is waiting for its acknowledgement.
struct Session<'a> {
    deps: &'a MqttDeps,
    topics: &'a Topics,
    client: AsyncClient,
    connected: bool,
    /// For each publish handed to the client, in order: the outbox row it carries.
    sent: VecDeque<Option<i64>>,
    /// Packet id → outbox row, for the PUBACKs.
    awaiting: HashMap<u16, i64>,
    /// Outbox rows in flight (not to be sent twice in this session).
    in_flight: usize,
    last_seq: i64,
    motion: Vec<Option<bool>>,
    live: Vec<Option<bool>>,
    before: HashMap<i64, serde_json::Value>,
    next_stats: std::time::Instant,
    /// Messages not handed to the client because its queue ([`CLIENT_QUEUE`]) was full:
    /// dropped and counted, never waited for (states and event messages are offered
    /// again at the next tick; a stats message is simply skipped).
    dropped: &'a AtomicU64,
}

impl<'a> Session<'a> {
    fn new(
        deps: &'a MqttDeps,
        topics: &'a Topics,
        client: AsyncClient,
        dropped: &'a AtomicU64,
    ) -> Self {
        let n = deps.cameras.len();
        Self {
            deps,
            topics,
            client,
            connected: false,
            sent: VecDeque::new(),
            awaiting: HashMap::new(),
            in_flight: 0,
            last_seq: 0,
            motion: vec![None; n],
            live: vec![None; n],
            before: HashMap::new(),
            next_stats: std::time::Instant::now(),
            dropped,
        }
    }

    async fn run(
        &mut self,
        mut eventloop: EventLoop,
        stop: &mut tokio::sync::oneshot::Receiver<()>,
    ) -> Ended {
        let mut tick = tokio::time::interval(TICK);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        loop {
            tokio::select! {
                polled = eventloop.poll() => match polled {
                    Ok(e) => self.on_event(e),
                    Err(e) => return Ended::Failed { error: describe(&e), connected: self.connected },
                },
                _ = tick.tick(), if self.connected => self.publish_changes(),
                _ = &mut *stop => {
                    self.goodbye(&mut eventloop).await;
                    return Ended::Stopped;
                }
            }
        }
    }

    fn on_event(&mut self, e: Event) {
        match e {
            Event::Incoming(Packet::ConnAck(_)) => {
                self.connected = true;
                tracing::info!(broker = %format!("{}:{}", self.deps.cfg.host, self.deps.cfg.port),
                    prefix = %self.topics.prefix, "mqtt: connected");
                self.publish(self.topics.available(), true, "online".into(), None);
                self.clear_removed_cameras();
                for (topic, config) in self.topics.discovery(self.deps) {
                    self.publish(topic, true, config.to_string().into_bytes(), None);
                }
                // The boot self-test's report, as written (retained), when there is one.
                if let Ok(report) = crate::fsio::read_regular(
                    &self.deps.selftest_report,
                    crate::fsio::MAX_CONFIG_BYTES,
                ) {
                    self.publish(self.topics.selftest(), true, report, None);
                }
                // Commands: who may send them is the broker's ACL's say (README).
                let _ = self
                    .client
                    .try_subscribe(self.topics.camera("+", "detect/set"), QoS::AtLeastOnce);
                for i in 0..self.deps.cameras.len() {
                    self.detect_state(i);
                }
            }
            Event::Incoming(Packet::Publish(p)) => self.command(&p.topic, &p.payload),
            Event::Outgoing(Outgoing::Publish(pkid)) => {
                if let Some(Some(seq)) = self.sent.pop_front() {
                    if pkid == 0 {
                        // QoS 0: handed to the socket is all that is known.
                        self.acked(seq);
                    } else {
                        self.awaiting.insert(pkid, seq);
                    }
                }
            }
            Event::Incoming(Packet::PubAck(ack)) => {
                if let Some(seq) = self.awaiting.remove(&ack.pkid) {
                    self.acked(seq);
                }
            }
            _ => {}
        }
    }

    /// `<prefix>/<camera>/detect/set` `ON` or `OFF`: switch that camera's detection and
    /// echo the state. Anything else is logged and ignored.
    fn command(&mut self, topic: &str, payload: &[u8]) {
        let camera = topic
            .strip_prefix(&format!("{}/", self.topics.prefix))
            .and_then(|t| t.strip_suffix("/detect/set"));
        let Some(i) = camera.and_then(|c| self.deps.cameras.iter().position(|v| v.config.id == c))
        else {
            tracing::warn!(topic, "mqtt: command for no camera of this box: ignored");
            return;
        };
        let on = match std::str::from_utf8(payload).map(str::trim) {
            Ok(p) if p.eq_ignore_ascii_case("on") => true,
            Ok(p) if p.eq_ignore_ascii_case("off") => false,
            _ => {
                tracing::warn!(topic, "mqtt: detect/set takes ON or OFF: ignored");
                return;
            }
        };
        if let Some(flag) = self.deps.detect.get(i) {
            flag.store(on, Ordering::Relaxed);
        }
        tracing::info!(camera = %self.deps.cameras[i].config.id, on, "mqtt: motion detection switched");
        self.detect_state(i);
    }

    fn detect_state(&mut self, i: usize) {
        let on = self
            .deps
            .detect
            .get(i)
            .is_none_or(|f| f.load(Ordering::Relaxed));
        let topic = self
            .topics
            .camera(&self.deps.cameras[i].config.id, "detect/state");
        self.publish(topic, true, on_off(on), None);
    }

    fn acked(&mut self, seq: i64) {
        self.in_flight = self.in_flight.saturating_sub(1);
        if let Err(e) = self.deps.outbox.done(seq) {
            tracing::warn!(error = %e, "mqtt: outbox");
        }
    }

    /// Queue one publish; false when the client's queue is full (retried next tick).
    fn publish(&mut self, topic: String, retain: bool, payload: Vec<u8>, seq: Option<i64>) -> bool {
        if payload.len() + topic.len() + 16 > MAX_OUTGOING {
            // Would end the session (and the next, forever): said and skipped.
            tracing::warn!(
                topic,
                bytes = payload.len(),
                "mqtt: message too large to send: skipped"
            );
            if let Some(seq) = seq {
                let _ = self.deps.outbox.done(seq);
            }
            return true;
        }
        let qos = if seq.is_some() && self.deps.cfg.qos == 0 {
            QoS::AtMostOnce
        } else {
            QoS::AtLeastOnce
        };
        match self.client.try_publish(topic, qos, retain, payload) {
            Ok(()) => {
                self.sent.push_back(seq);
                if seq.is_some() {
                    self.in_flight += 1;
                }
                true
            }
            Err(_) => {
                self.dropped.fetch_add(1, Ordering::Relaxed);
                false
            }
        }
    }

    /// Clear the discovery configs of cameras announced before and no longer configured
    /// (an empty retained payload removes the entity from Home Assistant), then remember
    /// the cameras announced now.
    fn clear_removed_cameras(&mut self) {
        let path = self.deps.data_dir.join(ANNOUNCED_FILE);
        let before: Vec<String> = crate::fsio::read_regular_string(&path, 1 << 20)
            .ok()
            .and_then(|t| serde_json::from_str(&t).ok())
            .unwrap_or_default();
        let now: Vec<String> = self
            .deps
            .cameras
            .iter()
            .map(|c| c.config.id.clone())
            .collect();
        for gone in before.iter().filter(|c| !now.contains(c)) {
            for topic in self.topics.camera_config_topics(gone) {
                self.publish(topic, true, Vec::new(), None);
            }
            tracing::info!(camera = %gone, "mqtt: discovery of a removed camera cleared");
        }
        if before != now {
            if let Err(e) = std::fs::write(&path, serde_json::to_vec(&now).unwrap_or_default()) {
                tracing::warn!(path = %path.display(), error = %e, "mqtt: cannot remember the cameras announced");
            }
        }
    }

    /// Stats (and each camera's fps) every `stats_interval_secs`.
    fn publish_stats(&mut self) {
        if std::time::Instant::now() < self.next_stats {
            return;
        }
        self.next_stats =
            std::time::Instant::now() + Duration::from_secs(self.deps.cfg.stats_interval_secs);
        let mut stats = crate::status::stats(&crate::status::Sources {
            clock: &*self.deps.clock,
            cameras: &self.deps.cameras,
            analysis: &self.deps.analysis,
            model: self.deps.model.as_ref(),
            uptime_secs: self.deps.started.elapsed().as_secs_f64(),
        });
        // The publisher's own figures: what waits in the outbox, what found no room.
        stats["mqtt"] = json!({
            "outbox_pending": self.deps.outbox.len().ok(),
            "in_flight": self.in_flight,
            "dropped_queue_full": self.dropped.load(Ordering::Relaxed),
        });
        for (i, cam) in self.deps.cameras.iter().enumerate() {
            let fps = stats["cameras"][i]["capture"]["camera_fps"]
                .as_f64()
                .unwrap_or(0.0);
            let topic = self.topics.camera(&cam.config.id, "fps");
            self.publish(topic, true, format!("{fps:.1}").into_bytes(), None);
        }
        self.publish(
            self.topics.stats(),
            false,
            stats.to_string().into_bytes(),
            None,
        );
    }

    /// After an event message: the camera's last event (retained, for the action and risk
    /// sensors) and, once the event has one, its snapshot: never before the event exists.
    fn publish_event_states(&mut self, after: &serde_json::Value) {
        let (Some(camera), Some(id)) = (after["camera"].as_str(), after["id"].as_i64()) else {
            return;
        };
        let last = json!({
            "id": id,
            "action": after["action"],
            "category": after["category"],
            "risk": after["risk"],
            "confidence": after["confidence"],
            "start": after["start"],
            "end": after["end"],
        });
        self.publish(
            self.topics.camera(camera, "event"),
            true,
            last.to_string().into_bytes(),
            None,
        );
        if after["snapshot"] == true {
            if let Ok(Some(Some(jpeg))) = self.deps.events.snapshot(id) {
                self.publish(self.topics.camera(camera, "snapshot"), true, jpeg, None);
            }
        }
    }

    /// Motion and connectivity that changed, stats when due, then the outbox.
    fn publish_changes(&mut self) {
        self.publish_stats();
        let now = self.deps.clock.mono_us();
        for i in 0..self.deps.cameras.len() {
            let cam = &self.deps.cameras[i];
            let id = cam.config.id.clone();
            // The frame's age alone (a full snapshot computes quantiles, every tick).
            let live = crate::capture::stats::is_live(cam.shared.stats().last_frame_age_ms(now));
            let moving = self
                .deps
                .analysis
                .get(i)
                .is_some_and(|a| a.lock().unwrap_or_else(|e| e.into_inner()).in_motion);
            if self.live[i] != Some(live)
                && self.publish(
                    self.topics.camera(&id, "connectivity"),
                    true,
                    on_off(live),
                    None,
                )
            {
                self.live[i] = Some(live);
            }
            if self.motion[i] != Some(moving)
                && self.publish(
                    self.topics.camera(&id, "motion"),
                    true,
                    on_off(moving),
                    None,
                )
            {
                self.motion[i] = Some(moving);
            }
        }
        if self.in_flight >= IN_FLIGHT {
            return;
        }
        let want = (IN_FLIGHT - self.in_flight) as u32;
        let pending = match self.deps.outbox.pending(self.last_seq, want) {
            Ok(p) => p,
            Err(e) => {
                tracing::warn!(error = %e, "mqtt: outbox");
                return;
            }
        };
        for p in pending {
            let after = match self.deps.events.get(p.event_id) {
                Ok(Some(e)) => {
                    serde_json::to_value(EventView::new(&e, self.deps.http_base.as_deref()))
                        .unwrap_or_default()
                }
                // Gone (retention): nothing to say.
                Ok(None) => {
                    let _ = self.deps.outbox.done(p.seq);
                    self.last_seq = p.seq;
                    continue;
                }
                Err(e) => {
                    tracing::warn!(error = %e, "mqtt: events");
                    return;
                }
            };
            let before = if p.kind == "new" {
                serde_json::Value::Null
            } else {
                self.before
                    .get(&p.event_id)
                    .cloned()
                    .unwrap_or(serde_json::Value::Null)
            };
            let msg = json!({ "type": p.kind, "before": before, "after": after });
            if !self.publish(
                self.topics.events(),
                false,
                msg.to_string().into_bytes(),
                Some(p.seq),
            ) {
                return;
            }
            self.last_seq = p.seq;
            if p.kind != "update" || after["snapshot"] == true {
                self.publish_event_states(&after);
            }
            if p.kind == "end" {
                self.before.remove(&p.event_id);
            } else {
                if self.before.len() >= MAX_REMEMBERED && !self.before.contains_key(&p.event_id) {
                    if let Some(&oldest) = self.before.keys().min() {
                        self.before.remove(&oldest);
                    }
                }
                self.before.insert(p.event_id, after);
            }
        }
    }

    /// `offline` (retained) before a clean disconnect, waiting for the broker to have it.
    async fn goodbye(&mut self, eventloop: &mut EventLoop) {
        if !self.connected {
            return;
        }
        let _ = self
            .client
            .try_publish(self.topics.available(), QoS::AtLeastOnce, true, "offline");
        let _ = self.client.try_disconnect();
        let _ = tokio::time::timeout(Duration::from_secs(2), async {
            loop {
                match eventloop.poll().await {
                    Ok(Event::Outgoing(Outgoing::Disconnect)) | Err(_) => break,
                    Ok(_) => {}
                }
            }
        })
        .await;
    }
}

/// A connection error as the log says it: a refusal names what to check.
fn describe(e: &rumqttc::ConnectionError) -> String {
    use rumqttc::{ConnectReturnCode as C, ConnectionError as E};
    match e {
        E::ConnectionRefused(C::BadUserNamePassword | C::NotAuthorized) => {
            "the broker refused the user name or password (check mqtt.username and \
             mqtt.password_file)"
                .into()
        }
        E::ConnectionRefused(C::BadClientId) => {
            "the broker refused the client id (mqtt.client_id)".into()
        }
        E::ConnectionRefused(code) => format!("the broker refused the connection: {code:?}"),
        E::Tls(e) => format!(
            "TLS with the broker failed: {e} (mqtt.tls.ca must hold the CA that signed the \
             broker's certificate, the certificate must name mqtt.host, and a broker that asks \
             for a client certificate needs mqtt.tls.client_cert/client_key)"
        ),
        other => other.to_string(),
    }
}

fn on_off(b: bool) -> Vec<u8> {
    if b {
        b"ON".to_vec()
    } else {
        b"OFF".to_vec()
    }
}
