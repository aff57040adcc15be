//! The serial console of a running `nvr-edge run`, driven through a real pseudo-terminal,
//! and the line reader and command parser under arbitrary bytes.

use std::io::{Read, Write};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use nvr_edge::config::ConsoleConfig;
use nvr_edge::console::{
    hash_pin, serve, Backend, BackendError, Input, LineReader, Lockout, Session,
};
use proptest::prelude::*;

struct Pty {
    master: std::fs::File,
    seen: Arc<Mutex<Vec<u8>>>,
}

impl Pty {
    fn open() -> (Self, String) {
        use rustix::pty::{grantpt, openpt, ptsname, unlockpt, OpenptFlags};
        let master = openpt(OpenptFlags::RDWR | OpenptFlags::NOCTTY).unwrap();
        grantpt(&master).unwrap();
        unlockpt(&master).unwrap();
        let name = ptsname(&master, Vec::new()).unwrap().into_string().unwrap();
        let master = std::fs::File::from(master);
        let seen = Arc::new(Mutex::new(Vec::new()));
        let mut reader = master.try_clone().unwrap();
        let sink = seen.clone();
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n) = reader.read(&mut buf) {
                if n == 0 {
                    break;
                }
                sink.lock().unwrap().extend_from_slice(&buf[..n]);
            }
        });
        (Self { master, seen }, name)
    }

    fn text(&self) -> String {
        String::from_utf8_lossy(&self.seen.lock().unwrap()).into_owned()
    }

    /// Send a line and wait until `want` appears in what follows.
    fn ask(&mut self, line: &[u8], want: &str, secs: u64) -> String {
        let from = self.seen.lock().unwrap().len();
        self.master.write_all(line).unwrap();
        self.master.write_all(b"\r").unwrap();
        let deadline = Instant::now() + Duration::from_secs(secs);
        loop {
            let all = self.text();
            let reply = all.get(from..).unwrap_or("").to_string();
            if reply.contains(want) {
                return reply;
            }
            assert!(
                Instant::now() < deadline,
                "waiting for {want:?} after {:?}; got {reply:?}",
                String::from_utf8_lossy(line)
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

#[test]
fn the_console_of_a_running_recorder_answers_over_a_pty() {
    let dir = tempfile::tempdir().unwrap();
    let (mut pty, slave) = Pty::open();
    let cfg = format!(
        r#"
[storage]
data_dir = {data:?}
[console]
enabled = true
device = {slave:?}
pin_hash = "{hash}"
socket = {sock:?}
[[cameras]]
id = "porch"
source = "synthetic"
width = 320
height = 240
fps = 10
ring = {{ frames = 100, max_bytes = 8000000 }}
"#,
        data = dir.path().join("data"),
        hash = hash_pin("1234"),
        sock = dir.path().join("console.sock"),
    );
    let conf = dir.path().join("c.toml");
    std::fs::write(&conf, cfg).unwrap();
    // A member whose name carries a terminal escape (OSC: set the window title).
    let added = std::process::Command::new(env!("CARGO_BIN_EXE_nvr-edge"))
        .arg("--config")
        .arg(&conf)
        .args([
            "household",
            "add-member",
            "--name",
            "Eve\x1b]0;pwned\x07",
            "--role",
            "resident",
        ])
        .output()
        .unwrap();
    assert!(added.status.success(), "{added:?}");
    let log = dir.path().join("stderr.log");
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_nvr-edge"))
        .arg("--config")
        .arg(&conf)
        .arg("run")
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    while !pty.text().contains("nvr-edge console") {
        assert!(
            Instant::now() < deadline,
            "no console banner: {:?}",
            pty.text()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    pty.ask(b"help", "commands:", 10);
    pty.ask(
        b"version",
        &format!("nvr-edge {}", env!("CARGO_PKG_VERSION")),
        10,
    );
    pty.ask(b"status", "porch", 10);
    pty.ask(b"cams", "walking figure", 10);
    pty.ask(b"mem", "jemalloc arena", 10);
    pty.ask(b"events 3", "", 10);
    // Locked: counts, no names or plates.
    let hh = pty.ask(b"household", "1 members", 10);
    assert!(!hh.contains("Eve"), "{hh:?}");
    // Garbage: NUL, invalid UTF-8, escape sequences, then an over-long line.
    pty.ask(b"\x00\xff\xfe\x1b[A\x1b[31mhelp", "commands:", 10);
    let long = vec![b'A'; 2000];
    pty.ask(&long, "line longer than 256 bytes", 10);
    pty.ask(b"bogus command", "unknown command", 10);
    pty.ask(b"clear-ring porch", "locked", 10);
    // A locked console cannot turn logging quieter than warnings.
    pty.ask(b"log off", "needs unlock", 10);
    pty.ask(b"unlock 0000", "wrong PIN", 10);
    // Locked out for a second: even the right PIN is not tried.
    pty.ask(b"unlock 1234", "locked out", 10);
    std::thread::sleep(Duration::from_millis(1100));
    pty.ask(b"unlock 1234", "unlocked", 10);
    // Silence longer than the tty's read timeout (0.5 s) is not the end of the session.
    std::thread::sleep(Duration::from_millis(2500));
    pty.ask(b"clear-ring porch", "ring of porch cleared", 10);
    // Unlocked: names, with the escape shown as text, never sent raw.
    let hh = pty.ask(b"household", "Eve", 10);
    assert!(hh.contains("Eve\\x1b]0;pwned\\x07"), "{hh:?}");
    assert!(!hh.contains('\u{1b}'), "{hh:?}");
    pty.ask(b"remove-member 42", "no member with id 42", 10);
    pty.ask(b"lock", "locked", 10);
    pty.ask(b"log nvr_edge=debug", "log filter now nvr_edge=debug", 10);
    pty.ask(b"log [bad", "error", 10);
    pty.ask(b"selftest", "VERDICT", 120);
    pty.ask(b"version", "nvr-edge", 10);
    // The same console over the unix socket, for a technician with a shell on the box:
    // `nvr-edge console` with its input piped, 0660 so only root and the service's group.
    use std::os::unix::fs::PermissionsExt;
    let sock = dir.path().join("console.sock");
    let mode = std::fs::metadata(&sock).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o660);
    let mut attach = std::process::Command::new(env!("CARGO_BIN_EXE_nvr-edge"))
        .args(["console", "--socket"])
        .arg(&sock)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    attach
        .stdin
        .take()
        .unwrap()
        .write_all(b"version\rhousehold\r")
        .unwrap();
    let out = attach.wait_with_output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    assert!(
        text.contains(&format!("nvr-edge {}", env!("CARGO_PKG_VERSION"))),
        "{text}"
    );
    // A new session starts locked: counts only.
    assert!(
        text.contains("1 members") && !text.contains("Eve"),
        "{text}"
    );
    // SIGTERM: a clean stop.
    let killed = std::process::Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    let status = child.wait().unwrap();
    assert!(status.success(), "{status:?}");
    // One session from start to end: the device was opened once, not every 2.5 s.
    let log = std::fs::read_to_string(&log).unwrap();
    assert_eq!(log.matches("console listening").count(), 1, "{log}");
    assert!(log.contains("console: wrong PIN"), "{log}");
}

/// Wrong PINs are the console's memory, not a session's: a new session (a reopened
/// device) and a new process (through the state file) find the lock-out still running.
#[test]
fn wrong_pins_lock_out_across_sessions_and_restarts() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("console-lockout");
    let cfg = ConsoleConfig {
        pin_hash: hash_pin("4321"),
        ..ConsoleConfig::default()
    };
    let lockout = std::sync::Mutex::new(Lockout::persistent(file.clone()));
    let reply = |session: &mut Session<'_>, line: &str| {
        let mut out = String::new();
        session.handle(line, &mut |t| out.push_str(t));
        out
    };
    {
        let mut s = Session::new(&Quiet, &cfg, &lockout);
        assert!(reply(&mut s, "unlock 1111").contains("wrong PIN"));
    }
    {
        let mut s = Session::new(&Quiet, &cfg, &lockout);
        assert!(reply(&mut s, "unlock 4321").contains("locked out"));
        assert!(!s.unlocked());
    }
    std::thread::sleep(Duration::from_millis(1100));
    {
        let mut s = Session::new(&Quiet, &cfg, &lockout);
        assert!(reply(&mut s, "unlock 2222").contains("wrong PIN"));
    }
    assert_eq!(lockout.lock().unwrap().failures(), 2);
    // A restart reads the count back and the 2 s it earned start again.
    let again = std::sync::Mutex::new(Lockout::persistent(file.clone()));
    assert_eq!(again.lock().unwrap().failures(), 2);
    assert!(again.lock().unwrap().remaining() > Duration::from_millis(1500));
    let mut s = Session::new(&Quiet, &cfg, &again);
    assert!(reply(&mut s, "unlock 4321").contains("locked out"));
    // The doubling is capped, and an hour of guessing gets a handful of tries (each try
    // waits out the lock-out the ones before it earned).
    let mut tried = 0u32;
    let mut t = Duration::ZERO;
    while t < Duration::from_secs(3600) {
        tried += 1;
        t += nvr_edge::console::lockout_for(tried);
        assert!(nvr_edge::console::lockout_for(tried) <= nvr_edge::console::MAX_LOCKOUT);
    }
    assert!(tried <= 20, "{tried} tries in an hour");
}

/// A stream that ends (a hangup) ends the session; a quiet line does not (see the pty
/// test). Here: a unix socket whose peer closed returns 0 at once.
#[test]
fn a_hangup_ends_the_session() {
    let (mut a, b) = std::os::unix::net::UnixStream::pair().unwrap();
    drop(b);
    let cfg = ConsoleConfig::default();
    let lockout = std::sync::Mutex::new(Lockout::new());
    let t0 = Instant::now();
    serve(&mut a, &Quiet, &cfg, &lockout, &|| false).ok();
    assert!(t0.elapsed() < Duration::from_secs(2));
}

/// A backend that answers without a recorder: the session logic alone (the real backend
/// is exercised through the pty test above).
struct Quiet;

impl Backend for Quiet {
    fn status(&self) -> String {
        "ok".into()
    }
    fn cams(&self) -> String {
        "ok".into()
    }
    fn mem(&self) -> String {
        "ok".into()
    }
    fn events(&self, _: u32) -> String {
        "ok".into()
    }
    fn household(&self, _names: bool) -> String {
        "ok".into()
    }
    fn selftest(&self, row: &mut dyn FnMut(&str)) {
        row("ok")
    }
    fn set_log_filter(&self, _: &str) -> Result<(), BackendError> {
        Ok(())
    }
    fn remove_member(&self, _: i64) -> Result<String, BackendError> {
        Ok("ok".into())
    }
    fn clear_ring(&self, _: &str) -> Result<String, BackendError> {
        Ok("ok".into())
    }
}

/// One argon2 hash for every proptest case (each costs tens of ms).
static PIN_HASH: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| hash_pin("1"));

proptest! {
    #![proptest_config(ProptestConfig::with_cases(500))]

    #[test]
    fn any_bytes_give_bounded_lines_and_an_answer_for_each(
        chunks in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..300), 0..20),
    ) {
        let cfg = ConsoleConfig { pin_hash: PIN_HASH.clone(), ..ConsoleConfig::default() };
        let mut reader = LineReader::new(64);
        let lockout = std::sync::Mutex::new(Lockout::new());
        let mut session = Session::new(&Quiet, &cfg, &lockout);
        for c in &chunks {
            for input in reader.feed(c) {
                if let Input::Line(l) = input {
                    prop_assert!(l.len() <= 64, "line of {} bytes", l.len());
                    prop_assert!(l.is_ascii());
                    let mut replies = 0;
                    session.handle(&l, &mut |_| replies += 1);
                    prop_assert!(replies >= usize::from(!l.trim().is_empty()));
                }
            }
        }
        prop_assert!(lockout.lock().unwrap().penalty() <= nvr_edge::console::MAX_LOCKOUT);
    }
}
