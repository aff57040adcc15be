//! The web page in a real browser: Debian's headless chromium, driven through chromedriver
//! (the W3C WebDriver protocol, spoken here over a plain loopback socket), against a
//! running `nvr-edge run` on synthetic cameras with a user. It logs in through the page's
//! form on a phone-sized window and checks the rendered DOM: camera tiles playing their
//! streams with fps and liveness, events with snapshots and a video that plays, the
//! household and the stats and self-test tables. Screenshots and the DOM are written for
//! people to look at (their paths are printed).

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::http::{add_user, config, Server};

const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";

/// A chromedriver process and one browser session in it.
struct Browser {
    driver: Child,
    port: u16,
    session: String,
}

/// One WebDriver call: the response's `value` (or the error it names).
fn call(port: u16, method: &str, path: &str, body: Option<&Value>) -> Result<Value, String> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).map_err(|e| e.to_string())?;
    s.set_read_timeout(Some(Duration::from_secs(120))).unwrap();
    let body = body.map(Value::to_string).unwrap_or_default();
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .map_err(|e| e.to_string())?;
    // Read the head, then exactly Content-Length bytes (chromedriver may keep the
    // connection open).
    let mut raw = Vec::new();
    let mut buf = [0u8; 8192];
    let at = loop {
        if let Some(p) = raw.windows(4).position(|w| w == b"\r\n\r\n") {
            break p;
        }
        let n = s.read(&mut buf).map_err(|e| e.to_string())?;
        if n == 0 {
            return Err("closed before the head".into());
        }
        raw.extend_from_slice(&buf[..n]);
    };
    let head = String::from_utf8_lossy(&raw[..at]).to_ascii_lowercase();
    let len: usize = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .and_then(|v| v.trim().parse().ok())
        .ok_or("no content-length")?;
    while raw.len() < at + 4 + len {
        let n = s.read(&mut buf).map_err(|e| e.to_string())?;
        if n == 0 {
            return Err("closed before the body".into());
        }
        raw.extend_from_slice(&buf[..n]);
    }
    let v: Value = serde_json::from_slice(&raw[at + 4..]).map_err(|e| e.to_string())?;
    match v["value"].get("error") {
        Some(e) => Err(format!("{e}: {}", v["value"]["message"])),
        None => Ok(v["value"].clone()),
    }
}

impl Browser {
    fn start(profile: &std::path::Path) -> Browser {
        let port = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().port()
        };
        let driver = Command::new("chromedriver")
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("chromedriver (Debian's chromium-driver)");
        let deadline = Instant::now() + Duration::from_secs(30);
        while call(port, "GET", "/status", None).is_err() {
            assert!(Instant::now() < deadline, "chromedriver did not start");
            std::thread::sleep(Duration::from_millis(100));
        }
        // A phone's screen; --no-sandbox because CI runs as root.
        let caps = json!({ "capabilities": { "alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": "/usr/bin/chromium",
                "args": ["--headless=new", "--no-sandbox", "--disable-gpu",
                         "--disable-dev-shm-usage", "--window-size=390,844",
                         format!("--user-data-dir={}", profile.display())],
            },
        }}});
        let v = call(port, "POST", "/session", Some(&caps)).expect("a browser session");
        let session = v["sessionId"].as_str().unwrap().to_string();
        Browser {
            driver,
            port,
            session,
        }
    }

    fn call(&self, method: &str, path: &str, body: Option<&Value>) -> Value {
        let path = format!("/session/{}{path}", self.session);
        call(self.port, method, &path, body).unwrap_or_else(|e| panic!("{method} {path}: {e}"))
    }

    fn go(&self, url: &str) {
        self.call("POST", "/url", Some(&json!({ "url": url })));
    }

    /// Run `script` in the page and return its value.
    fn eval(&self, script: &str) -> Value {
        self.call(
            "POST",
            "/execute/sync",
            Some(&json!({ "script": script, "args": [] })),
        )
    }

    /// Wait until `script` returns true in the page.
    fn wait(&self, what: &str, secs: u64, script: &str) {
        let deadline = Instant::now() + Duration::from_secs(secs);
        while self.eval(script) != Value::Bool(true) {
            assert!(
                Instant::now() < deadline,
                "timed out waiting for {what}; page text: {}",
                self.eval("return document.body.innerText")
            );
            std::thread::sleep(Duration::from_millis(250));
        }
    }

    fn element(&self, css: &str) -> String {
        let v = self.call(
            "POST",
            "/element",
            Some(&json!({ "using": "css selector", "value": css })),
        );
        v[ELEMENT].as_str().unwrap().to_string()
    }

    fn type_into(&self, css: &str, text: &str) {
        let e = self.element(css);
        self.call(
            "POST",
            &format!("/element/{e}/value"),
            Some(&json!({ "text": text })),
        );
    }

    fn click(&self, css: &str) {
        let e = self.element(css);
        self.call("POST", &format!("/element/{e}/click"), Some(&json!({})));
    }

    /// A screenshot of the page, written where the test runner keeps its files.
    fn screenshot(&self, name: &str) -> std::path::PathBuf {
        use base64::Engine;
        let png = self.call("GET", "/screenshot", None);
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(png.as_str().unwrap())
            .unwrap();
        let path = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join(name);
        std::fs::write(&path, bytes).unwrap();
        println!("screenshot: {}", path.display());
        path
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = call(
            self.port,
            "DELETE",
            &format!("/session/{}", self.session),
            None,
        );
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}

#[test]
#[cfg_attr(
    not(nvr_browser),
    ignore = "needs Debian's chromium and chromium-driver (apt-get install chromium chromium-driver)"
)]
fn the_page_in_a_real_browser() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("c.toml"), config(dir.path(), "")).unwrap();
    assert_eq!(add_user(dir.path(), "ann", "admin", "ann's password").0, 0);
    // The boot self-test's report where the page reads it.
    std::fs::write(
        dir.path().join("selftest.json"),
        json!({ "verdict": "PASS", "version": "test", "checks": [
            { "name": "camera_fps", "camera": "door", "measured": 10.0, "target": 9.5,
              "unit": "fps", "pass": true, "op": ">=" } ] })
        .to_string(),
    )
    .unwrap();
    let s = Server::start(dir, "");
    // An event with its snapshot exists before the page looks for it.
    let basic = {
        use base64::Engine;
        format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode("ann:ann's password")
        )
    };
    crate::http::wait_for("an event with a finished video", 90, || {
        let r = s.request("GET", "/api/events?limit=20", Some(&basic));
        let v: Value = serde_json::from_slice(&r.body).unwrap_or_default();
        v["events"]
            .as_array()
            .is_some_and(|l| l.iter().any(|e| e["clip_mjpeg_url"].is_string()))
    });

    let profile = tempfile::tempdir().unwrap();
    let b = Browser::start(profile.path());
    let base = format!("http://127.0.0.1:{}", s.port);
    b.go(&format!("{base}/"));
    // Logged out: the page shows its form (no browser password dialog).
    b.wait(
        "the login form",
        30,
        "return !document.getElementById('login').hidden",
    );
    b.type_into("#login-form input[name=name]", "ann");
    b.type_into("#login-form input[name=password]", "wrong password");
    b.click("#login-form button");
    b.wait(
        "the refusal",
        30,
        "return document.getElementById('message').textContent.includes('wrong')",
    );
    b.eval("document.getElementById('login-form').reset()");
    b.type_into("#login-form input[name=name]", "ann");
    b.type_into("#login-form input[name=password]", "ann's password");
    b.click("#login-form button");

    // Cameras: a tile per camera, its stream playing, its fps and liveness shown.
    b.wait(
        "two camera tiles playing with live fps",
        60,
        "const t = [...document.querySelectorAll('#camera-grid figure.tile')];
         return t.length === 2 && t.every(f => f.querySelector('img').naturalWidth === 320
           && /live · [0-9.]+ fps/.test(f.querySelector('.cam-info').textContent))",
    );
    assert_eq!(
        b.eval("return document.getElementById('who').textContent"),
        "ann (admin)"
    );
    // Phone-sized: the tiles stack in one column within the screen.
    let widths = b.eval(
        "return [document.documentElement.scrollWidth, window.innerWidth,
                 document.querySelector('#camera-grid figure').getBoundingClientRect().width]",
    );
    let w: Vec<f64> = widths
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_f64().unwrap())
        .collect();
    assert!(
        w[0] <= w[1] && w[2] <= w[1],
        "page wider than the phone: {w:?}"
    );
    b.screenshot("browser-cameras.png");

    // Events: a list with snapshots; one plays its video inline.
    b.go(&format!("{base}/#events"));
    b.wait(
        "events with snapshots",
        30,
        "const i = [...document.querySelectorAll('#event-list li.event img')];
         return i.length > 0 && i.some(x => x.complete && x.naturalWidth === 320)",
    );
    b.eval("document.querySelector('#event-list li.event[data-clip]').click()");
    b.wait(
        "the event's video playing",
        30,
        "const v = document.getElementById('event-video');
         return !document.getElementById('event-player').hidden && v.naturalWidth === 320",
    );
    b.screenshot("browser-events.png");

    // Household: add a member through the form; the table shows them.
    b.go(&format!("{base}/#household"));
    b.type_into("#member-form input[name=name]", "Grandma");
    b.click("#member-form button");
    b.wait(
        "the new member in the table",
        30,
        "return document.getElementById('member-rows').textContent.includes('Grandma')",
    );

    // Status: the stats table (a row per camera) and the boot self-test's rows.
    b.go(&format!("{base}/#status"));
    b.wait(
        "the stats and self-test tables",
        30,
        "return document.querySelectorAll('#stats-rows tr').length === 2
           && document.getElementById('selftest-rows').textContent.includes('camera_fps')
           && document.getElementById('selftest-verdict').textContent.includes('PASS')",
    );
    b.screenshot("browser-status.png");
    let dom = b.call("GET", "/source", None);
    let path = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("browser-status.html");
    std::fs::write(&path, dom.as_str().unwrap()).unwrap();
    println!("DOM: {}", path.display());
    // What the page added is in the database.
    let api = s.request("GET", "/api/household", Some(&basic));
    assert!(String::from_utf8_lossy(&api.body).contains("Grandma"));
}
