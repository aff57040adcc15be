//! The HTTP API of a running `nvr-edge run` on synthetic cameras, over loopback with a
//! plain socket client: every endpoint's shape, live streams that parse into JPEGs and
//! their bound, credentials once a user exists, and the refusal of a LAN address without
//! users.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::Engine;

const CAMERAS: &str = r#"
[[cameras]]
id = "door"
source = "synthetic"
width = 320
height = 240
fps = 10.0
[[cameras]]
id = "yard"
source = "synthetic"
width = 320
height = 240
fps = 10.0
"#;

pub(crate) struct Server {
    child: Child,
    pub(crate) port: u16,
    pub(crate) log: Arc<Mutex<Vec<String>>>,
    pub(crate) dir: tempfile::TempDir,
}

pub(crate) fn config(dir: &Path, http: &str) -> String {
    let models = Path::new(env!("CARGO_MANIFEST_DIR")).join("models/identity");
    format!(
        "[storage]\ndata_dir = {:?}\n[identity]\nenabled = false\nmodels_dir = {models:?}\n[xclip]\nwindow_secs = 1.0\nrerun_secs = 1.0\n[recording]\nmax_secs = 3.0\npost_secs = 0.5\n[http]\nbind = \"127.0.0.1:0\"\nselftest_report = {:?}\n{http}\n{CAMERAS}",
        dir,
        dir.join("selftest.json")
    )
}

pub(crate) fn nvr(dir: &Path) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_nvr-edge"));
    c.arg("--config").arg(dir.join("c.toml"));
    c
}

/// `nvr-edge user add NAME --role ROLE` with the password on stdin.
pub(crate) fn add_user(dir: &Path, name: &str, role: &str, password: &str) -> (i32, String) {
    let mut child = nvr(dir)
        .args(["user", "add", name, "--role", role])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    writeln!(child.stdin.take().unwrap(), "{password}").unwrap();
    let out = child.wait_with_output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// `nvr-edge ARGS...` on `dir`'s config, which must succeed; its stdout as JSON.
pub(crate) fn nvr_json<S: AsRef<std::ffi::OsStr>>(dir: &Path, args: &[S]) -> serde_json::Value {
    let out = nvr(dir).args(args).output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

impl Server {
    pub(crate) fn start(dir: tempfile::TempDir, http: &str) -> Server {
        std::fs::write(dir.path().join("c.toml"), config(dir.path(), http)).unwrap();
        let mut child = nvr(dir.path())
            .arg("run")
            .env("NO_COLOR", "1")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let log = Arc::new(Mutex::new(Vec::new()));
        let (tx, rx) = std::sync::mpsc::channel();
        let stderr = child.stderr.take().unwrap();
        let lines = log.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                let port = line.contains("http listening").then(|| {
                    line.split("addr=127.0.0.1:")
                        .nth(1)
                        .and_then(|r| r.split(|c: char| !c.is_ascii_digit()).next())
                        .and_then(|p| p.parse::<u16>().ok())
                });
                // Logged before the port is handed over: a test that looks at the log
                // as soon as `start` returns must find the line (it once raced).
                lines.lock().unwrap().push(line);
                if let Some(port) = port {
                    let _ = tx.send(port);
                }
            }
        });
        let port = rx
            .recv_timeout(Duration::from_secs(60))
            .ok()
            .flatten()
            .unwrap_or_else(|| panic!("no `http listening` line: {:?}", log.lock().unwrap()));
        Server {
            child,
            port,
            log,
            dir,
        }
    }

    pub(crate) fn connect(&self) -> TcpStream {
        let s = TcpStream::connect(("127.0.0.1", self.port)).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        s
    }

    /// An HTTP/1.0 request (the server closes after the body): status, headers, body.
    pub(crate) fn request(&self, method: &str, path: &str, auth: Option<&str>) -> Response {
        let auth = auth.map_or(String::new(), |a| format!("Authorization: {a}\r\n"));
        self.request_with(method, path, &auth)
    }

    /// As `request`, with `extra` header lines (each ending in CRLF).
    pub(crate) fn request_with(&self, method: &str, path: &str, extra: &str) -> Response {
        self.send(method, path, extra, &[])
    }

    /// A request with `extra` header lines and a body.
    pub(crate) fn send(&self, method: &str, path: &str, extra: &str, body: &[u8]) -> Response {
        let mut s = self.connect();
        let length = if body.is_empty() && matches!(method, "GET" | "HEAD") {
            String::new()
        } else {
            format!("Content-Length: {}\r\n", body.len())
        };
        write!(
            s,
            "{method} {path} HTTP/1.0\r\nHost: localhost\r\n{extra}{length}\r\n"
        )
        .unwrap();
        // A refusal may close the connection before a large body is all sent.
        let _ = s.write_all(body);
        let mut raw = Vec::new();
        // (A reset after the answer arrived still leaves the answer read.)
        let _ = s.read_to_end(&mut raw);
        Response::parse(&raw)
    }

    /// A JSON body sent with `extra` header lines.
    pub(crate) fn send_json(
        &self,
        method: &str,
        path: &str,
        extra: &str,
        v: &serde_json::Value,
    ) -> Response {
        self.send(
            method,
            path,
            &format!("{extra}Content-Type: application/json\r\n"),
            v.to_string().as_bytes(),
        )
    }

    pub(crate) fn get(&self, path: &str) -> Response {
        self.request("GET", path, None)
    }

    pub(crate) fn json(&self, path: &str) -> serde_json::Value {
        let r = self.get(path);
        assert_eq!(r.status, 200, "{path}: {}", r.text());
        serde_json::from_slice(&r.body).unwrap()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = terminate(self.child.id());
        let _ = self.child.wait();
    }
}

/// SIGTERM, as systemd stops the service.
fn terminate(pid: u32) -> std::io::Result<()> {
    Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .map(drop)
}

pub(crate) struct Response {
    pub(crate) status: u16,
    headers: Vec<(String, String)>,
    pub(crate) body: Vec<u8>,
}

impl Response {
    fn parse(raw: &[u8]) -> Response {
        let end = raw
            .windows(4)
            .position(|w| w == b"\r\n\r\n")
            .expect("a header block");
        let head = String::from_utf8_lossy(&raw[..end]);
        let mut lines = head.split("\r\n");
        let status = lines
            .next()
            .and_then(|l| l.split(' ').nth(1))
            .and_then(|c| c.parse().ok())
            .expect("a status line");
        let headers = lines
            .filter_map(|l| l.split_once(':'))
            .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
            .collect();
        Response {
            status,
            headers,
            body: raw[end + 4..].to_vec(),
        }
    }

    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|_| panic!("not JSON ({}): {}", self.status, self.text()))
    }
}

/// A `multipart/form-data` body of `files` (name, bytes) and its Content-Type header line.
fn multipart(files: &[(&str, &[u8])]) -> (String, Vec<u8>) {
    let boundary = "nvrtestboundary7MA4YWxk";
    let mut body = Vec::new();
    for (name, bytes) in files {
        body.extend_from_slice(
            format!(
                "--{boundary}\r\nContent-Disposition: form-data; name=\"photo\"; filename=\"{name}\"\r\nContent-Type: application/octet-stream\r\n\r\n"
            )
            .as_bytes(),
        );
        body.extend_from_slice(bytes);
        body.extend_from_slice(b"\r\n");
    }
    body.extend_from_slice(format!("--{boundary}--\r\n").as_bytes());
    (
        format!("Content-Type: multipart/form-data; boundary={boundary}\r\n"),
        body,
    )
}

/// Read `n` parts of a live stream (HTTP/1.0: the body is the raw multipart stream).
fn stream_parts(stream: &mut TcpStream, n: usize) -> (String, Vec<Vec<u8>>) {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 16384];
    let head_end = loop {
        let k = stream.read(&mut chunk).unwrap();
        assert!(k > 0, "stream closed before its headers");
        buf.extend_from_slice(&chunk[..k]);
        if let Some(p) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break p;
        }
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
    let mut body = buf[head_end + 4..].to_vec();
    let mut parts = Vec::new();
    while parts.len() < n {
        // --nvrframe\r\nContent-Type: image/jpeg\r\nContent-Length: N\r\n\r\n<N bytes>\r\n
        if let Some(h) = body.windows(4).position(|w| w == b"\r\n\r\n") {
            let part_head = String::from_utf8_lossy(&body[..h]).into_owned();
            assert!(part_head.starts_with("--nvrframe"), "{part_head:?}");
            let len: usize = part_head
                .lines()
                .find_map(|l| l.strip_prefix("Content-Length: "))
                .and_then(|v| v.trim().parse().ok())
                .expect("a part length");
            if body.len() >= h + 4 + len + 2 {
                parts.push(body[h + 4..h + 4 + len].to_vec());
                body.drain(..h + 4 + len + 2);
                continue;
            }
        }
        let k = stream.read(&mut chunk).unwrap();
        assert!(k > 0, "stream ended after {} parts", parts.len());
        body.extend_from_slice(&chunk[..k]);
    }
    (head, parts)
}

pub(crate) fn wait_for(what: &str, secs: u64, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn without_users_loopback_serves_every_endpoint() {
    let s = Server::start(
        tempfile::tempdir().unwrap(),
        "max_streams = 2\nstream_fps = 10.0",
    );
    // Health: alive, and both cameras live once frames flow.
    wait_for("live cameras", 30, || {
        s.json("/api/health")["all_cameras_live"] == true
    });
    let h = s.json("/api/health");
    assert_eq!(h["alive"], true);
    assert_eq!(h["cameras"].as_array().unwrap().len(), 2);
    let iso = h["time"]["iso"].as_str().unwrap();
    assert!(iso.ends_with("+00:00") && iso.len() == 29, "{iso}");
    assert!(h["time"]["epoch"].as_f64().unwrap() > 1.7e9);

    let st = s.json("/api/stats");
    let door = &st["cameras"][0];
    assert_eq!(door["id"], "door");
    assert!(door["capture"]["frames"].as_u64().unwrap() > 0, "{door}");
    assert!(door["capture"]["camera_fps"].as_f64().is_some());
    assert!(door["ring"]["len"].as_u64().unwrap() > 0);
    assert!(door["memory_bytes"].as_u64().unwrap() > 0);
    assert!(st["process_memory"]["allocated"].as_u64().unwrap() > 0);

    // Prometheus: per-camera families with the camera label, and the process's memory.
    let m = s.get("/metrics");
    assert_eq!(m.status, 200);
    let text = m.text();
    for want in [
        "# TYPE nvr_camera_frames counter",
        "nvr_camera_frames_total{camera=\"door\"} ",
        "nvr_camera_fps{camera=\"yard\"} ",
        "nvr_ring_bytes{camera=\"door\"} ",
        "nvr_process_allocated_bytes ",
        "# EOF",
    ] {
        assert!(text.contains(want), "{want:?} not in\n{text}");
    }

    let cams = s.json("/api/cameras");
    assert_eq!(cams["cameras"][1]["id"], "yard");
    assert_eq!(
        cams["cameras"][1]["stream"],
        "/api/cameras/yard/stream.mjpeg"
    );

    // The newest frame, as captured: a JPEG of the camera's size, and a newer one later.
    let a = s.get("/api/cameras/door/latest.jpg");
    assert_eq!(a.status, 200);
    assert_eq!(a.header("content-type"), Some("image/jpeg"));
    assert_eq!(a.header("x-content-type-options"), Some("nosniff"));
    let img = image::load_from_memory(&a.body).unwrap();
    assert_eq!((img.width(), img.height()), (320, 240));
    std::thread::sleep(Duration::from_millis(500));
    let b = s.get("/api/cameras/door/latest.jpg");
    assert_ne!(a.body, b.body, "latest.jpg follows the camera");

    // Live streams parse into JPEGs; the third at once is refused.
    let mut one = s.connect();
    write!(one, "GET /api/cameras/door/stream.mjpeg HTTP/1.0\r\n\r\n").unwrap();
    let (head, parts) = stream_parts(&mut one, 3);
    assert!(
        head.contains("multipart/x-mixed-replace; boundary=nvrframe"),
        "{head}"
    );
    for p in &parts {
        let img = image::load_from_memory(p).unwrap();
        assert_eq!(img.width(), 320);
    }
    assert!(parts[0] != parts[2], "the stream moves");
    let mut two = s.connect();
    write!(two, "GET /api/cameras/yard/stream.mjpeg HTTP/1.0\r\n\r\n").unwrap();
    let _ = stream_parts(&mut two, 1);
    let third = s.get("/api/cameras/yard/stream.mjpeg");
    assert_eq!(third.status, 503, "{}", third.text());
    assert!(third.text().contains("max_streams"));
    drop((one, two));
    // Their slots free once the clients are gone.
    wait_for("a stream slot", 20, || {
        let mut c = s.connect();
        write!(c, "GET /api/cameras/yard/stream.mjpeg HTTP/1.0\r\n\r\n").unwrap();
        let mut first = [0u8; 12];
        c.read_exact(&mut first).is_ok() && first.ends_with(b" 200")
    });

    // Events from the walking figure, with their times as stamps; pages and filters.
    wait_for("an event", 60, || {
        !s.json("/api/events?limit=10")["events"]
            .as_array()
            .unwrap()
            .is_empty()
    });
    let ev = s.json("/api/events?camera=door&limit=1");
    let first = &ev["events"][0];
    let id = first["id"].as_i64().unwrap();
    assert!(first["start"]["iso"].as_str().unwrap().contains('T'));
    assert_eq!(
        first["start"]["epoch"].as_f64().unwrap(),
        first["start_us"].as_i64().unwrap() as f64 / 1e6
    );
    assert_eq!(ev["next_cursor"].as_i64(), Some(id));
    let one_ev = s.json(&format!("/api/events/{id}"));
    assert_eq!(one_ev["id"].as_i64(), Some(id));
    // An event's finished video: whole, as a range, and refused past its end.
    let mut with_video = None;
    // (Events are split at recording.max_secs = 3 s, each video finished at its split.)
    wait_for("an event with a finished video", 60, || {
        with_video = s.json("/api/events?limit=50")["events"]
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["video"]["state"] == "complete")
            .and_then(|e| e["id"].as_i64());
        with_video.is_some()
    });
    let vid = with_video.unwrap();
    let avi = s.get(&format!("/api/events/{vid}/clip.avi"));
    assert_eq!(avi.status, 200, "{}", avi.text());
    assert_eq!(avi.header("content-type"), Some("video/x-msvideo"));
    assert_eq!(avi.header("accept-ranges"), Some("bytes"));
    assert_eq!(
        avi.header("content-length"),
        Some(avi.body.len().to_string().as_str())
    );
    assert!(avi.body.starts_with(b"RIFF") && &avi.body[8..12] == b"AVI ");
    let file = s.dir.path().join("downloaded.avi");
    std::fs::write(&file, &avi.body).unwrap();
    if let Some(p) = crate::common::ffprobe(&file) {
        assert!(p.frames_read > 0, "{p:?}");
    }
    let part = s.request_with(
        "GET",
        &format!("/api/events/{vid}/clip.avi"),
        "Range: bytes=4-11\r\n",
    );
    assert_eq!(part.status, 206);
    assert_eq!(part.body, avi.body[4..12]);
    assert_eq!(
        part.header("content-range"),
        Some(format!("bytes 4-11/{}", avi.body.len()).as_str())
    );
    let past = s.request_with(
        "GET",
        &format!("/api/events/{vid}/clip.avi"),
        &format!("Range: bytes={}-\r\n", avi.body.len()),
    );
    assert_eq!(past.status, 416);

    let none = s.json("/api/events?min_risk=critical&since=1&until=2");
    assert!(none["events"].as_array().unwrap().is_empty());

    // Bad requests say what was wrong; nothing else answers.
    for (path, status) in [
        ("/api/events?limit=0", 400),
        ("/api/events?min_risk=bogus", 400),
        ("/api/events?since=-5", 400),
        ("/api/events?nope=1", 400),
        ("/api/events/abc", 400),
        ("/api/events/999999", 404),
        ("/api/events/999999/clip.avi", 404),
        ("/api/cameras/nope/latest.jpg", 404),
        ("/etc/passwd", 404),
        ("/api/../../etc/passwd", 404),
    ] {
        let r = s.get(path);
        assert_eq!(r.status, status, "{path}: {}", r.text());
        let v: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
        assert!(v["error"].is_string(), "{path}");
    }
    // A change without the page's CSRF token is refused, even from the local admin (another
    // site open in the same browser could post to loopback); with it, the method is checked.
    let r = s.request("POST", "/api/events", None);
    assert_eq!(r.status, 403, "{}", r.text());
    assert!(r.text().contains("X-CSRF-Token"));
    let csrf = s.json("/api/session")["csrf"].as_str().unwrap().to_string();
    let token = format!("X-CSRF-Token: {csrf}\r\n");
    assert_eq!(s.request_with("POST", "/api/events", &token).status, 405);
    // Arbitrary paths and queries: a 4xx that says so, never a 5xx, and the server lives.
    let mut seed = 0x9E37_79B9_7F4A_7C15u64;
    let pieces = [
        "/api",
        "/events",
        "/cameras",
        "/door",
        "/latest.jpg",
        "/stream.mjpeg",
        "?",
        "&",
        "limit=",
        "cursor=",
        "since=",
        "min_risk=",
        "camera=",
        "%00",
        "%ff",
        "%2e%2e/",
        "..",
        "//",
        "9223372036854775807",
        "-1",
        "1e308",
        "NaN",
        "'",
        "\"",
        "<script>",
        ";",
        "~",
        "%20",
        "=",
        "é",
        "\\",
    ];
    for _ in 0..300 {
        let mut path = String::from("/");
        for _ in 0..1 + (seed % 6) as usize {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            path.push_str(pieces[(seed % pieces.len() as u64) as usize]);
        }
        let path: String = path
            .chars()
            .map(|c| {
                if c.is_ascii_graphic() {
                    c.to_string()
                } else {
                    format!("%{:02X}", c as u32 & 0xFF)
                }
            })
            .collect();
        if path.contains("stream.mjpeg") {
            continue; // a live stream does not end; streams are tested above
        }
        let r = s.get(&path);
        assert!(
            (200..500).contains(&r.status),
            "{path}: {} {}",
            r.status,
            r.text()
        );
    }
    // Arbitrary bodies, content types and ids to everything that takes a change: a 4xx
    // (or a success), never a 5xx, and the server lives.
    let bodies: [&[u8]; 12] = [
        b"",
        b"{",
        b"null",
        b"[]",
        b"{\"name\": 1}",
        b"{\"name\": \"x\", \"role\": \"family\", \"schedules\": [\"someday 25:00-99:00\"]}",
        b"{\"plate\": \"\", \"trusted\": \"yes\"}",
        b"{\"name\": \"a\", \"password\": \"b\"}",
        b"\xff\xfe\x00",
        b"--x\r\nContent-Disposition: form-data; name=\"photo\"\r\n\r\nabc\r\n--x--\r\n",
        b"--x\r\n\r\n",
        b"\x89PNG\r\n\x1a\n",
    ];
    let types = [
        "Content-Type: application/json\r\n",
        "Content-Type: multipart/form-data; boundary=x\r\n",
        "Content-Type: text/plain\r\n",
        "",
    ];
    let targets = [
        ("POST", "/api/login"),
        ("POST", "/api/household/members"),
        ("POST", "/api/household/vehicles"),
        ("POST", "/api/household/members/1/photos"),
        ("POST", "/api/household/members/x/photos?not=7"),
        ("DELETE", "/api/household/members/-1"),
        ("DELETE", "/api/household/vehicles/abc"),
        ("DELETE", "/api/events/9223372036854775807"),
        ("POST", "/api/logout"),
    ];
    for (method, path) in targets {
        for body in bodies {
            for ct in types {
                let r = s.send(method, path, &format!("{token}{ct}"), body);
                assert!(
                    (200..500).contains(&r.status),
                    "{method} {path} {ct:?} {:?}: {} {}",
                    String::from_utf8_lossy(body),
                    r.status,
                    r.text()
                );
            }
        }
    }
    // Each event has a snapshot from the moment motion confirmed it: a camera frame.
    let ev = s.json(&format!("/api/events/{vid}"));
    let snap_url = ev["snapshot_url"].as_str().expect("a snapshot");
    let snap = s.get(snap_url);
    assert_eq!(snap.status, 200);
    assert_eq!(snap.header("content-type"), Some("image/jpeg"));
    let img = image::load_from_memory(&snap.body).unwrap();
    assert_eq!((img.width(), img.height()), (320, 240));
    // The video as a paced multipart stream of its frames (what the page plays).
    assert_eq!(
        ev["clip_mjpeg_url"],
        format!("/api/events/{vid}/clip.mjpeg")
    );
    let mut c = s.connect();
    write!(c, "GET /api/events/{vid}/clip.mjpeg HTTP/1.0\r\n\r\n").unwrap();
    let (head, frames) = stream_parts(&mut c, 2);
    assert!(head.contains("multipart/x-mixed-replace"), "{head}");
    for f in &frames {
        assert_eq!(image::load_from_memory(f).unwrap().width(), 320);
    }
    drop(c);
    // Deleting an event takes its video with it; it needs the CSRF token.
    let video = s
        .dir
        .path()
        .join("clips")
        .join(ev["video"]["file"].as_str().unwrap());
    assert!(video.exists(), "{video:?}");
    let path = format!("/api/events/{vid}");
    assert_eq!(s.request("DELETE", &path, None).status, 403);
    let del = s.request_with("DELETE", &path, &token);
    assert_eq!(del.status, 200, "{}", del.text());
    assert_eq!(s.get(&path).status, 404);
    assert!(!video.exists(), "the video went with its event");
    assert_eq!(s.request_with("DELETE", &path, &token).status, 404);
    // The page and its files, under a CSP that runs only the page's own script.
    let page = s.get("/");
    assert_eq!(page.status, 200);
    assert!(page.text().contains("<script src=\"/app.js\""));
    let csp = page.header("content-security-policy").unwrap();
    assert!(
        csp.contains("script-src 'self'") && !csp.contains("unsafe-inline"),
        "{csp}"
    );
    assert_eq!(s.get("/app.js").status, 200);
    assert_eq!(s.get("/app.css").status, 200);
    // The boot self-test's report, once it exists where http.selftest_report says.
    let st = s.get("/api/selftest");
    assert_eq!(st.status, 404);
    assert!(st.text().contains("selftest.json"), "{}", st.text());
    std::fs::write(
        s.dir.path().join("selftest.json"),
        r#"{"verdict": "PASS", "checks": []}"#,
    )
    .unwrap();
    assert_eq!(s.json("/api/selftest")["verdict"], "PASS");
    assert_eq!(s.json("/api/health")["alive"], true);
    assert!(s
        .log
        .lock()
        .unwrap()
        .iter()
        .any(|l| l.contains("every local request is an admin")));
}

#[test]
fn a_user_makes_credentials_required() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("c.toml"), config(dir.path(), "")).unwrap();
    // Passwords are checked, and never taken from argv.
    let (code, err) = add_user(dir.path(), "alice", "viewer", "short");
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("password"), "{err}");
    let (code, err) = add_user(dir.path(), "alice", "overlord", "long enough pw");
    assert_eq!(code, 2, "{err}");
    assert_eq!(
        add_user(dir.path(), "alice", "viewer", "correct horse").0,
        0
    );
    assert_eq!(add_user(dir.path(), "alice", "admin", "another one!").0, 2);
    let out = nvr(dir.path()).args(["user", "list"]).output().unwrap();
    let list: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(list["users"][0]["name"], "alice");
    assert_eq!(list["users"][0]["role"], "viewer");
    assert!(!String::from_utf8_lossy(&out.stdout).contains("argon2"));

    let s = Server::start(dir, "");
    let r = s.get("/api/health");
    assert_eq!(r.status, 401);
    assert!(r.header("www-authenticate").unwrap().starts_with("Basic"));
    let basic = |user: &str, pw: &str| {
        format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(format!("{user}:{pw}"))
        )
    };
    let t0 = Instant::now();
    let wrong = s.request("GET", "/api/health", Some(&basic("alice", "wrong guess")));
    assert_eq!(wrong.status, 401);
    assert!(
        t0.elapsed() >= Duration::from_millis(900),
        "a wrong password is answered after a back-off"
    );
    assert_eq!(
        s.request("GET", "/api/health", Some(&basic("mallory", "x")))
            .status,
        401
    );
    assert_eq!(
        s.request("GET", "/api/health", Some("Basic %%%")).status,
        401
    );
    let ok = s.request("GET", "/api/stats", Some(&basic("alice", "correct horse")));
    assert_eq!(ok.status, 200, "{}", ok.text());
    // Remembered: the next request does not wait for argon2 or the back-off.
    let t1 = Instant::now();
    let again = s.request(
        "GET",
        "/api/cameras",
        Some(&basic("alice", "correct horse")),
    );
    assert_eq!(again.status, 200);
    assert!(t1.elapsed() < Duration::from_millis(900));
    // With users, nothing is anonymous: removing one does not open the server while
    // another exists.
    assert_eq!(add_user(s.dir.path(), "bob", "admin", "bobs password").0, 0);
    let rm = nvr(s.dir.path())
        .args(["user", "remove", "alice"])
        .output()
        .unwrap();
    assert!(rm.status.success());
    assert_eq!(s.get("/api/health").status, 401);
}

#[test]
fn a_lan_address_without_users_is_refused_at_start() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("c.toml"),
        config(dir.path(), "").replace("127.0.0.1:0", "0.0.0.0:0"),
    )
    .unwrap();
    let out = nvr(dir.path())
        .arg("run")
        .stderr(Stdio::piped())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("refusing to serve 0.0.0.0:0 with no user") && err.contains("user add"),
        "{err}"
    );
}

/// The value of `name` in a response's Set-Cookie.
fn set_cookie<'a>(r: &'a Response, name: &str) -> Option<&'a str> {
    r.header("set-cookie")?
        .split(';')
        .next()?
        .trim()
        .strip_prefix(name)?
        .strip_prefix('=')
}

#[test]
fn logins_tokens_and_roles() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("c.toml"), config(dir.path(), "")).unwrap();
    assert_eq!(add_user(dir.path(), "ann", "admin", "ann's password").0, 0);
    assert_eq!(add_user(dir.path(), "vic", "viewer", "vic's password").0, 0);
    // An API token is printed once; only its digest is stored.
    let printed = nvr_json(
        dir.path(),
        &["user", "token", "ann", "--label", "home-assistant"],
    );
    let ann_token = printed["token"].as_str().unwrap().to_string();
    assert_eq!(ann_token.len(), 43);
    let db = std::fs::read(dir.path().join("nvr-edge.db")).unwrap();
    assert!(
        !db.windows(ann_token.len())
            .any(|w| w == ann_token.as_bytes()),
        "the token itself is not in the database"
    );
    let s = Server::start(dir, "");

    // The page is served to anyone (it shows its login form); the API is not, and the
    // page's own requests get no Basic challenge (no browser password dialog).
    assert_eq!(s.get("/").status, 200);
    assert_eq!(s.json("/api/session")["login_required"], true);
    let r = s.request_with("GET", "/api/stats", "X-Requested-With: nvr-edge\r\n");
    assert_eq!(r.status, 401);
    assert!(r.header("www-authenticate").is_none());

    // Log in: a wrong password waits and fails; the right one sets an HttpOnly,
    // SameSite=Strict session cookie and gives the CSRF token.
    let login = |name: &str, pw: &str| {
        s.send_json(
            "POST",
            "/api/login",
            "",
            &serde_json::json!({ "name": name, "password": pw }),
        )
    };
    let t0 = Instant::now();
    assert_eq!(login("ann", "not her password").status, 401);
    assert!(t0.elapsed() >= Duration::from_millis(900));
    let ok = login("ann", "ann's password");
    assert_eq!(ok.status, 200, "{}", ok.text());
    let cookie_line = ok.header("set-cookie").unwrap();
    assert!(
        cookie_line.contains("HttpOnly") && cookie_line.contains("SameSite=Strict"),
        "{cookie_line}"
    );
    let session = set_cookie(&ok, "nvr_session").unwrap().to_string();
    let csrf = ok.json()["csrf"].as_str().unwrap().to_string();
    let cookie = format!("Cookie: nvr_session={session}\r\n");
    assert_eq!(s.request_with("GET", "/api/stats", &cookie).status, 200);
    let me = s.request_with("GET", "/api/session", &cookie).json();
    assert_eq!(me["user"], "ann");
    assert_eq!(me["csrf"], csrf);

    // A change from the browser needs the CSRF token as well as the cookie.
    let member = serde_json::json!({ "name": "Grandma", "role": "family", "schedules": ["weekends 10:00-18:00"] });
    let r = s.send_json("POST", "/api/household/members", &cookie, &member);
    assert_eq!(r.status, 403, "{}", r.text());
    let with_csrf = format!("{cookie}X-CSRF-Token: {csrf}\r\n");
    let r = s.send_json("POST", "/api/household/members", &with_csrf, &member);
    assert_eq!(r.status, 201, "{}", r.text());
    let grandma = r.json()["member_id"].as_i64().unwrap();
    let bad = s.send_json(
        "POST",
        "/api/household/members",
        &with_csrf,
        &serde_json::json!({ "name": "X", "role": "overlord" }),
    );
    assert_eq!(bad.status, 400);
    assert!(bad.text().contains("role"), "{}", bad.text());

    // A viewer reads and may not change anything.
    let vic = login("vic", "vic's password");
    let vic_cookie = format!(
        "Cookie: nvr_session={}\r\nX-CSRF-Token: {}\r\n",
        set_cookie(&vic, "nvr_session").unwrap(),
        vic.json()["csrf"].as_str().unwrap()
    );
    let h = s.request_with("GET", "/api/household", &vic_cookie).json();
    assert_eq!(h["members"][0]["name"], "Grandma");
    assert!(
        !h.to_string().contains("embedding\":["),
        "no embeddings in the list"
    );
    let r = s.request_with(
        "DELETE",
        &format!("/api/household/members/{grandma}"),
        &vic_cookie,
    );
    assert_eq!(r.status, 403);

    // Bearer tokens: reads and changes, no CSRF (a browser never adds one by itself).
    let bearer = format!("Authorization: Bearer {ann_token}\r\n");
    assert_eq!(s.request_with("GET", "/api/stats", &bearer).status, 200);
    let v = s.send_json(
        "POST",
        "/api/household/vehicles",
        &bearer,
        &serde_json::json!({ "plate": "AB-123", "description": "blue estate" }),
    );
    assert_eq!(v.status, 201, "{}", v.text());
    let wrong = s.request_with("GET", "/api/stats", "Authorization: Bearer nope\r\n");
    assert_eq!(wrong.status, 401);
    // HTTP Basic reads (Home Assistant's MJPEG camera) but changes nothing.
    let basic = format!(
        "Authorization: Basic {}\r\n",
        base64::engine::general_purpose::STANDARD.encode("ann:ann's password")
    );
    assert_eq!(s.request_with("GET", "/api/cameras", &basic).status, 200);
    let r = s.request_with(
        "DELETE",
        &format!("/api/household/members/{grandma}"),
        &basic,
    );
    assert_eq!(r.status, 403);
    assert!(r.text().contains("Basic only reads"), "{}", r.text());
    let r = s.request_with(
        "DELETE",
        &format!("/api/household/members/{grandma}"),
        &bearer,
    );
    assert_eq!(r.status, 200, "{}", r.text());

    // Bodies are bounded: 64 KiB for JSON.
    let big = serde_json::json!({ "name": "x".repeat(70_000), "role": "family" });
    assert_eq!(
        s.send_json("POST", "/api/household/members", &bearer, &big)
            .status,
        413
    );

    // Logging out ends the session on the server, not only in the browser.
    let out = s.request_with("POST", "/api/logout", &with_csrf);
    assert_eq!(out.status, 200);
    assert_eq!(set_cookie(&out, "nvr_session"), Some(""));
    assert_eq!(s.request_with("GET", "/api/stats", &cookie).status, 401);
    // Revoked tokens stop working.
    let rv = nvr(s.dir.path())
        .args(["user", "revoke-tokens", "ann"])
        .output()
        .unwrap();
    assert!(rv.status.success());
    assert_eq!(s.request_with("GET", "/api/stats", &bearer).status, 401);
}

fn photo(name: &str) -> Vec<u8> {
    std::fs::read(
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/data/photos")
            .join(name),
    )
    .unwrap()
}

/// A PNG whose header claims 100000 x 100000 pixels: a decompression bomb to a naive
/// decoder.
fn png_bomb() -> Vec<u8> {
    let mut ihdr = Vec::new();
    ihdr.extend_from_slice(b"IHDR");
    ihdr.extend_from_slice(&100_000u32.to_be_bytes());
    ihdr.extend_from_slice(&100_000u32.to_be_bytes());
    ihdr.extend_from_slice(&[8, 2, 0, 0, 0]);
    let mut png = b"\x89PNG\r\n\x1a\n".to_vec();
    // The header, a first data chunk (an empty zlib stream) and the end.
    for chunk in [
        ihdr,
        b"IDAT\x78\x9c\x03\x00\x00\x00\x00\x01".to_vec(),
        b"IEND".to_vec(),
    ] {
        png.extend_from_slice(&(chunk.len() as u32 - 4).to_be_bytes());
        png.extend_from_slice(&chunk);
        png.extend_from_slice(&crc32(&chunk).to_be_bytes());
    }
    png
}

fn crc32(data: &[u8]) -> u32 {
    let mut c = 0xFFFF_FFFFu32;
    for &b in data {
        c ^= u32::from(b);
        for _ in 0..8 {
            c = if c & 1 != 0 {
                0xEDB8_8320 ^ (c >> 1)
            } else {
                c >> 1
            };
        }
    }
    !c
}

#[test]
#[cfg_attr(
    not(nvr_face_embedder),
    ignore = "needs the face embedder: run models/identity/fetch.py"
)]
fn enrolment_by_photo_upload() {
    let s = Server::start(tempfile::tempdir().unwrap(), "max_upload_mb = 2");
    let csrf = s.json("/api/session")["csrf"].as_str().unwrap().to_string();
    let token = format!("X-CSRF-Token: {csrf}\r\n");
    let r = s.send_json(
        "POST",
        "/api/household/members",
        &token,
        &serde_json::json!({ "name": "Barack", "role": "resident" }),
    );
    assert_eq!(r.status, 201, "{}", r.text());
    let id = r.json()["member_id"].as_i64().unwrap();
    let url = format!("/api/household/members/{id}/photos");
    let faces = || -> u64 {
        s.json("/api/household")["members"][0]["embeddings"]
            .as_object()
            .unwrap()
            .values()
            .map(|n| n.as_u64().unwrap())
            .sum()
    };
    // Refusals say why and store nothing, even when other photos of the upload are fine.
    let obama = photo("obama.jpg");
    for (files, status, why) in [
        (
            vec![("rocket.jpg", photo("rocket.jpg"))],
            422,
            "no face found",
        ),
        (
            vec![("notes.txt", b"hello, not a photo".to_vec())],
            422,
            "not a readable image",
        ),
        (
            vec![("obama.jpg", obama.clone()), ("bomb.png", png_bomb())],
            422,
            "pixel limit",
        ),
    ] {
        let parts: Vec<(&str, &[u8])> = files.iter().map(|(n, b)| (*n, b.as_slice())).collect();
        let (ct, body) = multipart(&parts);
        let r = s.send("POST", &url, &format!("{token}{ct}"), &body);
        assert_eq!(r.status, status, "{}", r.text());
        assert!(r.text().contains(why), "{why}: {}", r.text());
    }
    // Past http.max_upload_mb: 413, nothing read into the database.
    let (ct, body) = multipart(&[("big.jpg", &vec![0u8; 3 << 20])]);
    let r = s.send("POST", &url, &format!("{token}{ct}"), &body);
    assert_eq!(r.status, 413, "{}", r.text());
    assert_eq!(faces(), 0);

    // A real photo: one face stored, with its box.
    let (ct, body) = multipart(&[("obama.jpg", &obama)]);
    let r = s.send("POST", &url, &format!("{token}{ct}"), &body);
    assert_eq!(r.status, 200, "{}", r.text());
    let stored = r.json()["stored"].clone();
    assert_eq!(stored.as_array().unwrap().len(), 1, "{stored}");
    assert_eq!(stored[0]["box"].as_array().unwrap().len(), 4);
    assert_eq!(faces(), 1);

    // The same man in another photo is recognised as the member (the CLI's matcher reads
    // the same database).
    let second = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/photos/obama2.jpg");
    let v = nvr_json(
        s.dir.path(),
        &[
            "household".as_ref(),
            "identify".as_ref(),
            "--image".as_ref(),
            second.as_os_str(),
        ],
    );
    let m = &v["faces"][0]["match"];
    assert_eq!(m["outcome"], "match", "{v}");
    assert_eq!(m["member_id"].as_i64(), Some(id), "{v}");
}

#[test]
fn capture_keeps_its_rate_while_four_streams_run() {
    let s = Server::start(
        tempfile::tempdir().unwrap(),
        "max_streams = 4\nstream_fps = 10.0",
    );
    wait_for("live cameras", 30, || {
        s.json("/api/health")["all_cameras_live"] == true
    });
    let frames_before: Vec<u64> = s.json("/api/stats")["cameras"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["capture"]["frames"].as_u64().unwrap())
        .collect();
    let t0 = Instant::now();
    // Four clients reading as fast as the server sends, two per camera, for 4 s.
    let readers: Vec<_> = ["door", "yard", "door", "yard"]
        .into_iter()
        .map(|cam| {
            let mut c = s.connect();
            write!(c, "GET /api/cameras/{cam}/stream.mjpeg HTTP/1.0\r\n\r\n").unwrap();
            std::thread::spawn(move || {
                let (_, first) = stream_parts(&mut c, 1);
                let mut n = first.len();
                let deadline = Instant::now() + Duration::from_secs(4);
                while Instant::now() < deadline {
                    n += stream_parts_more(&mut c);
                }
                n
            })
        })
        .collect();
    let received: Vec<usize> = readers.into_iter().map(|h| h.join().unwrap()).collect();
    let secs = t0.elapsed().as_secs_f64();
    let after = s.json("/api/stats");
    for (i, cam) in after["cameras"].as_array().unwrap().iter().enumerate() {
        let frames = cam["capture"]["frames"].as_u64().unwrap() - frames_before[i];
        let fps = frames as f64 / secs;
        // 10 fps cameras: a stream must not slow capture (0.8: a loaded 2-core CI host).
        assert!(
            fps >= 8.0,
            "{}: {fps:.1} fps captured while streaming",
            cam["id"]
        );
    }
    for n in &received {
        assert!(
            *n >= 10,
            "a stream delivered {n} frames in 4 s: {received:?}"
        );
    }
}

/// Read what has arrived of a stream (after its headers); returns how many part headers
/// went by.
fn stream_parts_more(stream: &mut TcpStream) -> usize {
    let mut chunk = [0u8; 65536];
    match stream.read(&mut chunk) {
        Ok(k) => chunk[..k]
            .windows(10)
            .filter(|w| w == b"--nvrframe")
            .count(),
        Err(_) => 0,
    }
}

#[test]
fn https_with_a_certificate_and_never_plain_where_it_was_asked_for() {
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
    // A self-signed certificate for 127.0.0.1, made and checked with Debian's openssl.
    let made = Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
        ])
        .args(["-nodes", "-days", "2", "-subj", "/CN=nvr-edge test"])
        .args(["-addext", "subjectAltName=IP:127.0.0.1"])
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .output()
        .expect("openssl (Debian's openssl package, which ca-certificates pulls in)");
    assert!(
        made.status.success(),
        "{}",
        String::from_utf8_lossy(&made.stderr)
    );
    let tls = format!("tls_cert = {cert:?}\ntls_key = {key:?}");
    let s = Server::start(dir, &tls);
    assert!(s
        .log
        .lock()
        .unwrap()
        .iter()
        .any(
            |l| l.contains("http listening") && l.contains("scheme=\"https\"")
                || l.contains("http listening") && l.contains("scheme=https")
        ));
    // A TLS client that verifies the certificate gets the API.
    let mut client = Command::new("openssl")
        .args(["s_client", "-quiet", "-verify_return_error", "-CAfile"])
        .arg(&cert)
        .args(["-connect", &format!("127.0.0.1:{}", s.port)])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    client
        .stdin
        .take()
        .unwrap()
        .write_all(b"GET /api/health HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")
        .unwrap();
    let out = client.wait_with_output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains(" 200 ") && text.contains("\"alive\":true"),
        "{text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Plain HTTP on that port gets no answer in clear.
    let mut c = s.connect();
    write!(c, "GET /api/health HTTP/1.0\r\n\r\n").unwrap();
    let mut raw = Vec::new();
    let _ = c.read_to_end(&mut raw);
    assert!(
        !raw.starts_with(b"HTTP/"),
        "{}",
        String::from_utf8_lossy(&raw)
    );
    drop(s);

    // A certificate that does not load: no API at all (not plain HTTP instead), a log line
    // that says why, and the recorder records.
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("cert.pem"), "not a certificate").unwrap();
    std::fs::write(dir.path().join("key.pem"), "not a key").unwrap();
    let bad = format!(
        "tls_cert = {:?}\ntls_key = {:?}",
        dir.path().join("cert.pem"),
        dir.path().join("key.pem")
    );
    std::fs::write(dir.path().join("c.toml"), config(dir.path(), &bad)).unwrap();
    let mut child = nvr(dir.path())
        .arg("run")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let mut seen = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    while Instant::now() < deadline {
        let Some(Ok(line)) = lines.next() else { break };
        let done = line.contains("nvr-edge running");
        seen.push(line);
        if done {
            break;
        }
    }
    let _ = terminate(child.id());
    let _ = child.wait();
    let log = seen.join("\n");
    assert!(
        log.contains("http API off") && log.contains("no PEM certificate"),
        "{log}"
    );
    assert!(log.contains("nvr-edge running"), "{log}");
    assert!(!log.contains("http listening"), "{log}");
}
