//! MQTT against Debian's mosquitto on loopback (a broker of the test's own on a free port):
//! availability with its last will, Home Assistant discovery, motion and connectivity
//! states, events new → update → end in order, and no event lost across a broker outage.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::http::{nvr, nvr_json};

fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

/// A mosquitto of the test's own; killed when dropped.
struct Broker {
    child: Child,
    port: u16,
}

impl Broker {
    /// Anyone may connect.
    fn start(dir: &Path, port: u16) -> Broker {
        Broker::with(dir, port, "allow_anonymous true\n")
    }

    /// A listener on `port` with `settings` (mosquitto.conf lines) under it.
    fn with(dir: &Path, port: u16, settings: &str) -> Broker {
        let conf = dir.join(format!("mosquitto-{port}.conf"));
        std::fs::write(
            &conf,
            format!("listener {port} 127.0.0.1\n{settings}persistence false\n"),
        )
        .unwrap();
        let child = Command::new("mosquitto")
            .arg("-c")
            .arg(&conf)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("mosquitto (Debian's mosquitto package)");
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "mosquitto did not listen");
            std::thread::sleep(Duration::from_millis(50));
        }
        Broker { child, port }
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Everything published on the broker, as (topic, payload), from `mosquitto_sub`.
struct Subscriber {
    child: Child,
    seen: Arc<Mutex<Vec<(String, String)>>>,
}

impl Subscriber {
    fn start(port: u16) -> Subscriber {
        Subscriber::start_with::<&str>(port, &[])
    }

    /// With `extra` arguments for `mosquitto_sub` (credentials, TLS files).
    fn start_with<S: AsRef<std::ffi::OsStr>>(port: u16, extra: &[S]) -> Subscriber {
        let mut child = Command::new("mosquitto_sub")
            .args(["-h", "127.0.0.1", "-p", &port.to_string(), "-t", "#"])
            .args(["-F", "%t %p"])
            .args(extra)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("mosquitto_sub (Debian's mosquitto-clients)");
        let seen = Arc::new(Mutex::new(Vec::new()));
        let out = child.stdout.take().unwrap();
        let s = seen.clone();
        std::thread::spawn(move || {
            // Bytes, not lines of UTF-8: a snapshot's JPEG comes through too (its pieces
            // after a newline byte show as odd extra "topics", which no check looks for).
            for line in BufReader::new(out).split(b'\n').map_while(Result::ok) {
                let line = String::from_utf8_lossy(&line).into_owned();
                let (t, p) = line.split_once(' ').unwrap_or((line.as_str(), ""));
                s.lock().unwrap().push((t.to_string(), p.to_string()));
            }
        });
        // Subscribed before anything it must see is published.
        std::thread::sleep(Duration::from_millis(300));
        Subscriber { child, seen }
    }

    fn all(&self) -> Vec<(String, String)> {
        self.seen.lock().unwrap().clone()
    }

    fn wait(&self, what: &str, secs: u64, f: impl Fn(&[(String, String)]) -> bool) {
        let deadline = Instant::now() + Duration::from_secs(secs);
        while !f(&self.all()) {
            assert!(
                Instant::now() < deadline,
                "timed out waiting for {what}; saw {:?}",
                self.all().iter().map(|(t, _)| t).collect::<Vec<_>>()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Subscriber {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn has(seen: &[(String, String)], topic: &str, payload: &str) -> bool {
    seen.iter().any(|(t, p)| t == topic && p == payload)
}

/// `nvr-edge run` on two synthetic cameras, publishing to `port` under `prefix`.
fn recorder(dir: &Path, port: u16, prefix: &str) -> Recorder {
    recorder_of(dir, port, prefix, &["door", "yard"])
}

/// A running recorder, killed when dropped: a failing test must not leave it running
/// (orphans once took the CPU of a whole CI run).
struct Recorder(Child);

impl Recorder {
    fn id(&self) -> u32 {
        self.0.id()
    }

    fn wait(&mut self) -> std::io::Result<std::process::ExitStatus> {
        self.0.wait()
    }

    fn try_wait(&mut self) -> std::io::Result<Option<std::process::ExitStatus>> {
        self.0.try_wait()
    }
}

impl Drop for Recorder {
    fn drop(&mut self) {
        if let Ok(None) = self.0.try_wait() {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

/// The config of a recorder on two synthetic cameras publishing to `port` under `prefix`.
fn write_config(dir: &Path, port: u16, prefix: &str, cameras: &[&str]) {
    let mut cfg = format!(
        "[storage]\ndata_dir = {:?}\n[identity]\nenabled = false\n[http]\nenabled = false\n\
         selftest_report = {:?}\n\
         [recording]\nmax_secs = 3.0\npost_secs = 0.5\n\
         [mqtt]\nenabled = true\nhost = \"127.0.0.1\"\nport = {port}\ntopic_prefix = \"{prefix}\"\n\
         client_id = \"{prefix}\"\nkeepalive_secs = 5\nstats_interval_secs = 5\n",
        dir,
        dir.join("selftest.json")
    );
    for c in cameras {
        cfg.push_str(&format!(
            "[[cameras]]\nid = \"{c}\"\nsource = \"synthetic\"\nwidth = 320\nheight = 240\nfps = 10.0\n"
        ));
    }
    std::fs::write(dir.join("c.toml"), cfg).unwrap();
}

fn recorder_of(dir: &Path, port: u16, prefix: &str, cameras: &[&str]) -> Recorder {
    write_config(dir, port, prefix, cameras);
    run_in(dir)
}

/// `nvr-edge run` on the config already in `dir`, its log in `dir/run.log`.
fn run_in(dir: &Path) -> Recorder {
    let log = std::fs::File::create(dir.join("run.log")).unwrap();
    Recorder(
        nvr(dir)
            .arg("run")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap(),
    )
}

fn signal(pid: u32, sig: &str) {
    let _ = Command::new("kill").args([sig, &pid.to_string()]).status();
}

/// The event messages seen, parsed: (type, event id).
fn event_messages(seen: &[(String, String)], prefix: &str) -> Vec<(String, i64, Value)> {
    let topic = format!("{prefix}/events");
    seen.iter()
        .filter(|(t, _)| *t == topic)
        .map(|(_, p)| {
            let v: Value = serde_json::from_str(p).unwrap_or_else(|_| panic!("not JSON: {p}"));
            (
                v["type"].as_str().unwrap().to_string(),
                v["after"]["id"].as_i64().unwrap(),
                v,
            )
        })
        .collect()
}

#[test]
fn discovery_availability_states_and_events_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let broker = Broker::start(dir.path(), free_port());
    let sub = Subscriber::start(broker.port);
    // A second box on the same broker, under its own prefix.
    std::fs::write(
        dir.path().join("selftest.json"),
        r#"{"verdict": "PASS", "checks": []}"#,
    )
    .unwrap();
    let other_dir = tempfile::tempdir().unwrap();
    let mut other = recorder(other_dir.path(), broker.port, "test/other");
    let mut rec = recorder(dir.path(), broker.port, "test/box1");
    sub.wait("both boxes online", 60, |s| {
        has(s, "test/box1/available", "online") && has(s, "test/other/available", "online")
    });

    // Discovery: every entity, each complete, its state topic fed.
    let mut expected: Vec<String> = ["sensor/test_box1/memory", "sensor/test_box1/selftest"]
        .iter()
        .map(|t| format!("homeassistant/{t}/config"))
        .collect();
    expected.push("homeassistant/binary_sensor/test_box1/online/config".into());
    for cam in ["door", "yard"] {
        for (component, object) in [
            ("switch", "detect"),
            ("binary_sensor", "motion"),
            ("binary_sensor", "connectivity"),
            ("sensor", "action"),
            ("sensor", "risk"),
            ("sensor", "fps"),
            ("image", "snapshot"),
        ] {
            expected.push(format!(
                "homeassistant/{component}/test_box1/{cam}_{object}/config"
            ));
        }
    }
    sub.wait("every discovery config", 30, |s| {
        expected
            .iter()
            .all(|t| s.iter().any(|(topic, _)| topic == t))
    });
    for topic in &expected {
        let payload = last(&sub.all(), topic).unwrap();
        let c: Value = serde_json::from_str(&payload).unwrap();
        assert!(
            c["unique_id"].as_str().unwrap().starts_with("test_box1_"),
            "{c}"
        );
        assert_eq!(c["availability_topic"], "test/box1/available");
        assert_eq!(c["device"]["identifiers"][0], "test_box1");
        let state = c["state_topic"]
            .as_str()
            .or(c["image_topic"].as_str())
            .unwrap()
            .to_string();
        // (The snapshot and last-event states come with the first event, below.)
        if !state.ends_with("/snapshot") && !state.ends_with("/event") {
            sub.wait(&format!("a state on {state}"), 30, |s| {
                s.iter().any(|(t, p)| *t == state && !p.is_empty())
            });
        }
    }
    let stats: Value = serde_json::from_str(&last(&sub.all(), "test/box1/stats").unwrap()).unwrap();
    assert!(
        stats["cameras"][0]["capture"]["frames"].as_u64().is_some(),
        "{stats}"
    );
    assert_eq!(
        last(&sub.all(), "test/box1/selftest").as_deref(),
        Some(r#"{"verdict": "PASS", "checks": []}"#)
    );
    sub.wait("the cameras connected", 30, |s| {
        has(s, "test/box1/door/connectivity", "ON") && has(s, "test/box1/yard/connectivity", "ON")
    });

    // Events: the walking figure's motion gives new, then end, for the same id in order.
    sub.wait("an event's new and end", 90, |s| {
        let m = event_messages(s, "test/box1");
        m.iter()
            .any(|(k, id, _)| k == "end" && m.iter().any(|(k2, id2, _)| k2 == "new" && id2 == id))
    });
    let msgs = event_messages(&sub.all(), "test/box1");
    let (_, id, end) = msgs.iter().find(|(k, _, _)| k == "end").unwrap().clone();
    let order: Vec<&str> = msgs
        .iter()
        .filter(|(_, i, _)| *i == id)
        .map(|(k, _, _)| k.as_str())
        .collect();
    assert_eq!(order.first(), Some(&"new"), "{order:?}");
    assert_eq!(order.last(), Some(&"end"), "{order:?}");
    assert!(order.iter().all(|k| ["new", "update", "end"].contains(k)));
    let after = &end["after"];
    assert!(
        after["camera"] == "door" || after["camera"] == "yard",
        "{after}"
    );
    assert!(after["start"]["iso"].as_str().unwrap().ends_with("+00:00"));
    assert!(after["end"]["epoch"].as_f64().is_some(), "{after}");
    assert_eq!(after["snapshot"], true, "{after}");
    assert!(!end["before"].is_null(), "an end says what it ended: {end}");
    // The camera's last event (its sensors), and its snapshot only after its event.
    let seen = sub.all();
    let cam = after["camera"].as_str().unwrap();
    let first_new = seen
        .iter()
        .position(|(t, p)| {
            t == "test/box1/events"
                && p.contains("\"type\":\"new\"")
                && p.contains(&format!("\"camera\":\"{cam}\""))
        })
        .unwrap();
    let snapshot_topic = format!("test/box1/{cam}/snapshot");
    sub.wait("a snapshot", 30, |s| {
        s.iter().any(|(t, _)| *t == snapshot_topic)
    });
    let first_snapshot = sub
        .all()
        .iter()
        .position(|(t, _)| *t == snapshot_topic)
        .unwrap();
    assert!(first_snapshot > first_new, "a snapshot before its event");
    let last_event: Value =
        serde_json::from_str(&last(&sub.all(), &format!("test/box1/{cam}/event")).unwrap())
            .unwrap();
    assert!(last_event["id"].as_i64().is_some(), "{last_event}");
    // The other box's events are its own.
    assert!(event_messages(&sub.all(), "test/other")
        .iter()
        .all(|(_, _, v)| v["after"]["camera"].is_string()));

    // A clean stop says offline; the other box stays online.
    signal(rec.id(), "-TERM");
    let _ = rec.wait();
    sub.wait("offline on SIGTERM", 20, |s| {
        has(s, "test/box1/available", "offline")
    });
    assert!(!has(&sub.all(), "test/other/available", "offline"));
    // kill -9: the broker says offline for it (the last will).
    signal(other.id(), "-KILL");
    let _ = other.wait();
    sub.wait("the last will of a killed box", 30, |s| {
        has(s, "test/other/available", "offline")
    });
}

#[test]
fn no_event_is_lost_while_the_broker_is_down() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let broker = Broker::start(dir.path(), port);
    let first = Subscriber::start(port);
    let mut rec = recorder(dir.path(), port, "test/outage");
    first.wait("the first event", 60, |s| {
        event_messages(s, "test/outage")
            .iter()
            .any(|(k, _, _)| k == "new")
    });
    first.wait("a stats message", 30, |s| {
        !stats_messages(s, "test/outage").is_empty()
    });
    // The broker goes away for 20 s while the figure keeps walking (events every ~3 s).
    let before_outage = event_messages(&first.all(), "test/outage");
    let stats_before = stats_messages(&first.all(), "test/outage");
    drop(first);
    drop(broker);
    std::thread::sleep(Duration::from_secs(20));
    let _broker = Broker::start(dir.path(), port);
    let second = Subscriber::start(port);
    second.wait("back online, and its figures", 60, |s| {
        has(s, "test/outage/available", "online") && !stats_messages(s, "test/outage").is_empty()
    });
    // The cameras kept their rate while the broker was away: frames counted by the box
    // itself, from its last figures before the outage to its first after.
    let (t0, f0) = stats_before.last().unwrap().clone();
    let (t1, f1) = stats_messages(&second.all(), "test/outage")[0].clone();
    assert!(t1 - t0 >= 20.0, "{t0} → {t1}");
    for (cam, (a, b)) in f0.iter().zip(&f1).enumerate() {
        let fps = (b - a) as f64 / (t1 - t0);
        eprintln!(
            "camera {cam}: {fps:.2} fps over {:.1} s with the broker down",
            t1 - t0
        );
        assert!(
            fps >= 8.0,
            "camera {cam}: {fps:.2} of 10 fps while the broker was down"
        );
    }
    // Every event committed so far is published once the broker is back.
    std::thread::sleep(Duration::from_secs(3));
    let listed = nvr_json(dir.path(), &["events", "list", "--limit", "1000"]);
    let ids: Vec<i64> = listed
        .as_array()
        .or_else(|| listed["events"].as_array())
        .unwrap()
        .iter()
        .map(|e| e["id"].as_i64().unwrap())
        .collect();
    assert!(ids.len() >= 3, "{listed}");
    let missing = || -> Vec<i64> {
        let seen: Vec<(String, i64)> = before_outage
            .iter()
            .chain(event_messages(&second.all(), "test/outage").iter())
            .map(|(k, id, _)| (k.clone(), *id))
            .collect();
        ids.iter()
            .copied()
            .filter(|id| !seen.contains(&("new".to_string(), *id)))
            .collect()
    };
    let deadline = Instant::now() + Duration::from_secs(60);
    while !missing().is_empty() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(200));
    }
    assert!(
        missing().is_empty(),
        "events committed but never published: {:?} of {ids:?}; before the outage {:?}, after {:?}",
        missing(),
        before_outage
            .iter()
            .map(|(k, id, _)| format!("{k}{id}"))
            .collect::<Vec<_>>(),
        event_messages(&second.all(), "test/outage")
            .iter()
            .map(|(k, id, _)| format!("{k}{id}"))
            .collect::<Vec<_>>()
    );
    // Within a session, no message twice.
    let msgs = event_messages(&second.all(), "test/outage");
    let mut keys: Vec<(String, i64)> = msgs.iter().map(|(k, id, _)| (k.clone(), *id)).collect();
    let n = keys.len();
    keys.sort();
    keys.dedup();
    assert_eq!(keys.len(), n, "a message twice in one session: {msgs:?}");
    signal(rec.id(), "-TERM");
    let _ = rec.wait();
}

/// The `<prefix>/stats` messages seen: (time in epoch seconds, frames per camera).
fn stats_messages(seen: &[(String, String)], prefix: &str) -> Vec<(f64, Vec<u64>)> {
    let topic = format!("{prefix}/stats");
    seen.iter()
        .filter(|(t, _)| *t == topic)
        .map(|(_, p)| {
            let v: Value = serde_json::from_str(p).unwrap_or_else(|_| panic!("not JSON: {p}"));
            let frames = v["cameras"]
                .as_array()
                .unwrap()
                .iter()
                .map(|c| c["capture"]["frames"].as_u64().unwrap())
                .collect();
            (v["time"]["epoch"].as_f64().unwrap(), frames)
        })
        .collect()
}

fn last(seen: &[(String, String)], topic: &str) -> Option<String> {
    seen.iter()
        .rev()
        .find(|(t, _)| t == topic)
        .map(|(_, p)| p.clone())
}

fn news(seen: &[(String, String)], prefix: &str, camera: &str) -> usize {
    event_messages(seen, prefix)
        .iter()
        .filter(|(k, _, v)| k == "new" && v["after"]["camera"] == camera)
        .count()
}

fn publish(port: u16, topic: &str, payload: &str) {
    let ok = Command::new("mosquitto_pub")
        .args(["-h", "127.0.0.1", "-p", &port.to_string(), "-q", "1"])
        .args(["-t", topic, "-m", payload])
        .status()
        .unwrap()
        .success();
    assert!(ok, "mosquitto_pub {topic}");
}

#[test]
fn detection_is_switched_from_the_broker() {
    let dir = tempfile::tempdir().unwrap();
    let broker = Broker::start(dir.path(), free_port());
    let sub = Subscriber::start(broker.port);
    let mut rec = recorder(dir.path(), broker.port, "test/sw");
    sub.wait("door's detection on, and a door event", 90, |s| {
        last(s, "test/sw/door/detect/state").as_deref() == Some("ON")
            && news(s, "test/sw", "door") > 0
    });
    let config = sub
        .all()
        .into_iter()
        .find(|(t, _)| t == "homeassistant/switch/test_sw/door_detect/config")
        .expect("the switch's discovery config");
    let c: Value = serde_json::from_str(&config.1).unwrap();
    assert_eq!(c["command_topic"], "test/sw/door/detect/set");

    publish(broker.port, "test/sw/door/detect/set", "OFF");
    sub.wait("door's detection off", 20, |s| {
        last(s, "test/sw/door/detect/state").as_deref() == Some("OFF")
    });
    // Garbage is ignored: the state stays.
    publish(broker.port, "test/sw/door/detect/set", "maybe");
    std::thread::sleep(Duration::from_secs(2));
    let (door, yard) = (
        news(&sub.all(), "test/sw", "door"),
        news(&sub.all(), "test/sw", "yard"),
    );
    // The figure keeps walking in both: events go on for the yard only.
    sub.wait("a yard event while the door is paused", 30, |s| {
        news(s, "test/sw", "yard") > yard
    });
    std::thread::sleep(Duration::from_secs(4));
    assert_eq!(
        news(&sub.all(), "test/sw", "door"),
        door,
        "a door event while paused"
    );
    assert_eq!(
        last(&sub.all(), "test/sw/door/detect/state").as_deref(),
        Some("OFF")
    );

    publish(broker.port, "test/sw/door/detect/set", "ON");
    sub.wait("door's detection on again, and a door event", 60, |s| {
        last(s, "test/sw/door/detect/state").as_deref() == Some("ON")
            && news(s, "test/sw", "door") > door
    });
    signal(rec.id(), "-TERM");
    let _ = rec.wait();
}

#[test]
fn a_removed_camera_leaves_home_assistant_at_the_next_start() {
    let dir = tempfile::tempdir().unwrap();
    let broker = Broker::start(dir.path(), free_port());
    let sub = Subscriber::start(broker.port);
    let yard = "homeassistant/binary_sensor/test_rm/yard_motion/config";
    let mut rec = recorder(dir.path(), broker.port, "test/rm");
    sub.wait("the yard announced", 60, |s| {
        s.iter().any(|(t, p)| t == yard && !p.is_empty())
    });
    signal(rec.id(), "-TERM");
    let _ = rec.wait();
    let mut rec = recorder_of(dir.path(), broker.port, "test/rm", &["door"]);
    sub.wait("the yard's configs cleared", 60, |s| {
        last(s, yard).as_deref() == Some("")
            && last(s, "homeassistant/image/test_rm/yard_snapshot/config").as_deref() == Some("")
    });
    assert!(last(
        &sub.all(),
        "homeassistant/binary_sensor/test_rm/door_motion/config"
    )
    .is_some_and(|p| !p.is_empty()));
    signal(rec.id(), "-TERM");
    let _ = rec.wait();
}

#[test]
fn a_broker_with_passwords_takes_the_right_one_and_refuses_a_wrong_one_clearly() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let passwords = dir.path().join("passwd");
    let made = Command::new("mosquitto_passwd")
        .arg("-c")
        .arg("-b")
        .arg(&passwords)
        .args(["box", "right horse battery"])
        .status()
        .unwrap();
    assert!(made.success());
    let _broker = Broker::with(
        dir.path(),
        port,
        &format!(
            "allow_anonymous false\npassword_file {}\n",
            passwords.display()
        ),
    );
    let sub = Subscriber::start_with(port, &["-u", "box", "-P", "right horse battery"]);
    for (name, password, works) in [
        ("right", "right horse battery", true),
        ("wrong", "wrong", false),
    ] {
        let d = dir.path().join(name);
        std::fs::create_dir(&d).unwrap();
        std::fs::write(d.join("mqtt-password"), format!("{password}\n")).unwrap();
        write_config(&d, port, &format!("test/{name}"), &["door", "yard"]);
        // With the credentials added.
        let cfg = std::fs::read_to_string(d.join("c.toml")).unwrap().replace(
            "[mqtt]\n",
            &format!(
                "[mqtt]\nusername = \"box\"\npassword_file = {:?}\n",
                d.join("mqtt-password")
            ),
        );
        std::fs::write(d.join("c.toml"), cfg).unwrap();
        let mut rec = run_in(&d);
        if works {
            sub.wait("online with the right password", 60, |s| {
                has(s, "test/right/available", "online")
            });
        } else {
            let deadline = Instant::now() + Duration::from_secs(60);
            let said = || {
                std::fs::read_to_string(d.join("run.log"))
                    .unwrap_or_default()
                    .contains("refused the user name or password")
            };
            while !said() {
                assert!(
                    Instant::now() < deadline,
                    "no clear log line for a wrong password"
                );
                std::thread::sleep(Duration::from_millis(200));
            }
            // The appliance records on: events are committed meanwhile.
            std::thread::sleep(Duration::from_secs(5));
            let events = nvr_json(&d, &["events", "list"]);
            assert!(!events.as_array().unwrap().is_empty(), "{events}");
            assert!(rec.try_wait().unwrap().is_none(), "the recorder stopped");
            assert!(!has(&sub.all(), "test/wrong/available", "online"));
        }
        signal(rec.id(), "-TERM");
        let _ = rec.wait();
    }
}

#[test]
fn the_self_test_reaches_the_broker_or_says_why_not() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    write_config(dir.path(), port, "test/st", &["door"]);
    let rows = |dir: &Path| -> Vec<Value> {
        let out = nvr(dir)
            .args(["--self-test", "--json", "--seconds", "1"])
            .output()
            .unwrap();
        let report: Value = serde_json::from_slice(&out.stdout)
            .unwrap_or_else(|_| panic!("no report: {}", String::from_utf8_lossy(&out.stderr)));
        report["checks"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|c| c["name"].as_str().unwrap().starts_with("mqtt_"))
            .cloned()
            .collect()
    };
    // No broker yet: both rows fail, saying where they looked.
    let down = rows(dir.path());
    assert_eq!(down.len(), 2, "{down:?}");
    assert!(down.iter().all(|c| c["pass"] == false), "{down:?}");
    assert!(
        down[0]["detail"]
            .as_str()
            .unwrap()
            .contains(&format!("127.0.0.1:{port}")),
        "{down:?}"
    );
    let _broker = Broker::start(dir.path(), port);
    let up = rows(dir.path());
    assert!(up.iter().all(|c| c["pass"] == true), "{up:?}");
    assert!(up[1]["measured"].as_f64().unwrap() < 1000.0, "{up:?}");
}

/// `openssl` with `args`, which must succeed.
fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl")
        .current_dir(dir)
        .args(args)
        .output()
        .expect("openssl (Debian's openssl package, which ca-certificates pulls in)");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

const EC: [&str; 5] = [
    "-newkey",
    "ec",
    "-pkeyopt",
    "ec_paramgen_curve:prime256v1",
    "-nodes",
];

/// A CA named `name`: `<name>.pem`, `<name>.key`.
fn make_ca(dir: &Path, name: &str) {
    let (key, pem) = (format!("{name}.key"), format!("{name}.pem"));
    let subj = format!("/CN=nvr-edge test CA {name}");
    let mut a = vec!["req", "-x509"];
    a.extend(EC);
    a.extend(["-days", "2", "-subj", &subj, "-keyout", &key, "-out", &pem]);
    a.extend(["-addext", "basicConstraints=critical,CA:TRUE"]);
    openssl(dir, &a);
}

/// A certificate for 127.0.0.1 signed by the CA `ca`: `<leaf>.pem`, `<leaf>.key`.
fn make_leaf(dir: &Path, ca: &str, leaf: &str) {
    let (key, csr, pem) = (
        format!("{leaf}.key"),
        format!("{leaf}.csr"),
        format!("{leaf}.pem"),
    );
    let subj = format!("/CN={leaf}");
    let mut b = vec!["req"];
    b.extend(EC);
    b.extend(["-subj", &subj, "-keyout", &key, "-out", &csr]);
    openssl(dir, &b);
    let ext = format!("{leaf}.ext");
    std::fs::write(dir.join(&ext), "subjectAltName=IP:127.0.0.1\n").unwrap();
    let (ca_pem, ca_key) = (format!("{ca}.pem"), format!("{ca}.key"));
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-in",
            &csr,
            "-CA",
            &ca_pem,
            "-CAkey",
            &ca_key,
            "-CAcreateserial",
            "-days",
            "2",
            "-extfile",
            &ext,
            "-out",
            &pem,
        ],
    );
}

#[test]
fn tls_to_the_broker_with_its_ca_and_a_client_certificate_and_a_clear_refusal_of_a_wrong_ca() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    // The broker's CA signs its certificate and the clients'; another CA signs nothing
    // the broker knows.
    make_ca(d, "ca");
    make_leaf(d, "ca", "broker");
    make_leaf(d, "ca", "client");
    make_ca(d, "stranger");
    // mosquitto started as root (CI) drops to its own user before it reads the files:
    // the test's directory and its PEM files must be readable by it.
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(d, std::fs::Permissions::from_mode(0o755)).unwrap();
    for f in ["ca.pem", "broker.pem", "broker.key"] {
        std::fs::set_permissions(d.join(f), std::fs::Permissions::from_mode(0o644)).unwrap();
    }
    let port = free_port();
    let _broker = Broker::with(
        d,
        port,
        &format!(
            "allow_anonymous true\ncafile {0}/ca.pem\ncertfile {0}/broker.pem\nkeyfile {0}/broker.key\n\
             require_certificate true\n",
            d.display()
        ),
    );
    let files = |f: &str| d.join(f).display().to_string();
    let sub = Subscriber::start_with(
        port,
        &[
            "--cafile".to_string(),
            files("ca.pem"),
            "--cert".into(),
            files("client.pem"),
            "--key".into(),
            files("client.key"),
        ],
    );
    for (name, ca, works) in [("right", "ca.pem", true), ("wrong", "stranger.pem", false)] {
        let rd = d.join(name);
        std::fs::create_dir(&rd).unwrap();
        write_config(&rd, port, &format!("test/{name}"), &["door"]);
        let cfg = std::fs::read_to_string(rd.join("c.toml")).unwrap()
            + &format!(
                "[mqtt.tls]\nca = {:?}\nclient_cert = {:?}\nclient_key = {:?}\n",
                d.join(ca),
                d.join("client.pem"),
                d.join("client.key")
            );
        std::fs::write(rd.join("c.toml"), cfg).unwrap();
        let mut rec = run_in(&rd);
        if works {
            sub.wait("online over TLS, discovery and an event", 90, |s| {
                has(s, "test/right/available", "online")
                    && s.iter()
                        .any(|(t, _)| t == "homeassistant/switch/test_right/door_detect/config")
                    && event_messages(s, "test/right")
                        .iter()
                        .any(|(k, _, _)| k == "new")
            });
        } else {
            let said = || {
                std::fs::read_to_string(rd.join("run.log"))
                    .unwrap_or_default()
                    .contains("TLS with the broker failed")
            };
            let deadline = Instant::now() + Duration::from_secs(60);
            while !said() {
                assert!(
                    Instant::now() < deadline,
                    "no clear log line for a broker the CA does not vouch for: {}",
                    std::fs::read_to_string(rd.join("run.log")).unwrap_or_default()
                );
                std::thread::sleep(Duration::from_millis(200));
            }
            assert!(rec.try_wait().unwrap().is_none(), "the recorder stopped");
            assert!(!has(&sub.all(), "test/wrong/available", "online"));
        }
        signal(rec.id(), "-TERM");
        let _ = rec.wait();
    }
    // A CA file that holds no certificate: MQTT off, said with the key, the recorder on.
    let rd = d.join("nofile");
    std::fs::create_dir(&rd).unwrap();
    write_config(&rd, port, "test/nofile", &["door"]);
    std::fs::write(rd.join("empty.pem"), "").unwrap();
    let cfg = std::fs::read_to_string(rd.join("c.toml")).unwrap()
        + &format!("[mqtt.tls]\nca = {:?}\n", rd.join("empty.pem"));
    std::fs::write(rd.join("c.toml"), cfg).unwrap();
    let mut rec = run_in(&rd);
    let deadline = Instant::now() + Duration::from_secs(30);
    let text = || std::fs::read_to_string(rd.join("run.log")).unwrap_or_default();
    while !text().contains("mqtt.tls.ca") {
        assert!(
            Instant::now() < deadline,
            "no line naming mqtt.tls.ca: {}",
            text()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    assert!(text().contains("no PEM certificate"), "{}", text());
    assert!(rec.try_wait().unwrap().is_none(), "the recorder stopped");
    signal(rec.id(), "-TERM");
    let _ = rec.wait();
}

#[test]
fn a_camera_that_stops_delivering_goes_offline_and_its_outage_is_an_event() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    // A replay camera playing JPEGs of the synthetic camera's; moving its directory away
    // stops its frames (every read fails) as an unplugged camera would.
    let frames = d.join("frames");
    std::fs::create_dir(&frames).unwrap();
    let cam = nvr_edge::config::Config::from_toml_str(
        "[[cameras]]\nid = \"s\"\nsource = \"synthetic\"\nwidth = 320\nheight = 240\nfps = 10\n",
        "test",
    )
    .unwrap()
    .cameras[0]
        .clone();
    let mut src =
        nvr_edge::capture::open_source(&cam, Arc::new(nvr_edge::clock::SystemClock), false)
            .unwrap();
    for i in 0..20 {
        let mut buf = Vec::new();
        src.next_frame(&mut buf).unwrap();
        std::fs::write(frames.join(format!("{i:03}.jpg")), &buf).unwrap();
    }
    let broker = Broker::start(d, free_port());
    let sub = Subscriber::start(broker.port);
    write_config(d, broker.port, "test/cam", &["door"]);
    let cfg = std::fs::read_to_string(d.join("c.toml")).unwrap()
        + &format!(
            "[[cameras]]\nid = \"porch\"\nsource = \"replay\"\npath = {frames:?}\nwidth = 320\nheight = 240\nfps = 10.0\n"
        );
    std::fs::write(d.join("c.toml"), cfg).unwrap();
    let mut rec = run_in(d);
    let conn = "test/cam/porch/connectivity";
    sub.wait("the porch camera connected", 60, |s| {
        last(s, conn).as_deref() == Some("ON")
    });
    let outages = |s: &[(String, String)]| -> Vec<(String, i64, Value)> {
        event_messages(s, "test/cam")
            .into_iter()
            .filter(|(_, _, v)| v["after"]["category"] == "camera_outage")
            .collect()
    };
    assert!(outages(&sub.all()).is_empty());
    let gone = d.join("frames-unplugged");
    std::fs::rename(&frames, &gone).unwrap();
    let unplugged = Instant::now();
    sub.wait("the porch camera offline, and an outage event", 20, |s| {
        last(s, conn).as_deref() == Some("OFF") && !outages(s).is_empty()
    });
    let took = unplugged.elapsed().as_secs_f64();
    assert!(took < 12.0, "offline {took:.1} s after its frames stopped");
    let o = &outages(&sub.all())[0];
    assert_eq!(o.0, "new");
    assert_eq!(o.2["after"]["camera"], "porch");
    assert_eq!(o.2["after"]["action"], "camera stopped delivering frames");
    // The door camera goes on, connected.
    assert_eq!(
        last(&sub.all(), "test/cam/door/connectivity").as_deref(),
        Some("ON")
    );
    std::fs::rename(&gone, &frames).unwrap();
    sub.wait("the porch camera back, and its outage ended", 30, |s| {
        last(s, conn).as_deref() == Some("ON")
            && outages(s).iter().any(|(k, id, _)| k == "end" && *id == o.1)
    });
    // The box's own list has it, ended.
    let listed = nvr_json(d, &["events", "list", "--limit", "100"]);
    let stored = listed
        .as_array()
        .or_else(|| listed["events"].as_array())
        .unwrap()
        .iter()
        .find(|e| e["id"] == o.1)
        .cloned()
        .unwrap_or_else(|| panic!("outage {} not listed: {listed}", o.1));
    assert_eq!(stored["category"], "camera_outage");
    assert!(!stored["end_us"].is_null(), "{stored}");
    signal(rec.id(), "-TERM");
    let _ = rec.wait();
}
