//! Serial diagnostics console: a line-oriented prompt on a serial device (or stdio) for the
//! technician with a cable. It must survive any input: line noise, a wrong baud rate, NUL,
//! invalid UTF-8, terminal escape sequences, a cat'ed binary. Lines are bounded; an
//! over-long line is answered with an error and dropped up to its newline; control bytes
//! other than line ends and backspace, escape sequences and non-ASCII bytes are ignored;
//! nothing here can panic on input.
//!
//! Read-only commands answer anyone. Commands that change state (remove a household
//! member, clear a ring) need `unlock <pin>` first; the PIN is stored as a salted SHA-256
//! in the config, and each failed attempt doubles a delay before the next answer.

use std::io::{Read, Write};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// `[console]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ConsoleConfig {
    pub enabled: bool,
    /// Serial device (`/dev/ttyS1`, `/dev/ttyAMA0`, `/dev/hvc0`, a pty).
    pub device: String,
    pub baud: u32,
    /// Longest accepted line, bytes.
    pub max_line: usize,
    /// Hex SHA-256 of `salt + PIN`; empty disables mutating commands.
    pub pin_sha256: String,
    pub pin_salt: String,
}

impl Default for ConsoleConfig {
    fn default() -> Self {
        Self {
            enabled: false,
            device: "/dev/ttyS0".into(),
            baud: 115_200,
            max_line: 256,
            pin_sha256: String::new(),
            pin_salt: String::new(),
        }
    }
}

/// Hex SHA-256 of `salt + pin`, the form `pin_sha256` takes.
pub fn hash_pin(salt: &str, pin: &str) -> String {
    Sha256::digest(format!("{salt}{pin}").as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Turns a byte stream into bounded lines.
#[derive(Debug)]
pub struct LineReader {
    max: usize,
    buf: Vec<u8>,
    overflow: bool,
    esc: u8,
    last_cr: bool,
}

/// What a chunk of input produced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Input {
    Line(String),
    /// A line longer than the limit was dropped.
    TooLong,
    /// Bytes to echo back so the technician sees what they type.
    Echo(Vec<u8>),
}

impl LineReader {
    pub fn new(max: usize) -> Self {
        Self {
            max: max.max(1),
            buf: Vec::with_capacity(max),
            overflow: false,
            esc: 0,
            last_cr: false,
        }
    }

    /// Feed bytes; returns lines, overflows and echoes in order.
    pub fn feed(&mut self, bytes: &[u8]) -> Vec<Input> {
        let mut out = Vec::new();
        let mut echo = Vec::new();
        for &b in bytes {
            // Escape sequences (arrow keys, ...): ESC, optionally '[' or 'O', then bytes up
            // to a final byte in 0x40..=0x7E.
            match self.esc {
                1 => {
                    self.esc = if b == b'[' || b == b'O' { 2 } else { 0 };
                    continue;
                }
                2 => {
                    if (0x40..=0x7E).contains(&b) {
                        self.esc = 0;
                    }
                    continue;
                }
                _ => {}
            }
            let cr_lf = self.last_cr && b == b'\n';
            self.last_cr = b == b'\r';
            match b {
                0x1B => self.esc = 1,
                b'\r' | b'\n' => {
                    if cr_lf {
                        continue;
                    }
                    echo.extend_from_slice(b"\r\n");
                    out.push(Input::Echo(std::mem::take(&mut echo)));
                    if self.overflow {
                        out.push(Input::TooLong);
                    } else {
                        out.push(Input::Line(
                            String::from_utf8_lossy(&self.buf).trim().to_string(),
                        ));
                    }
                    self.buf.clear();
                    self.overflow = false;
                }
                0x08 | 0x7F => {
                    if self.buf.pop().is_some() && !self.overflow {
                        echo.extend_from_slice(b"\x08 \x08");
                    }
                }
                b'\t' => self.push(b' ', &mut echo),
                // Control bytes and anything outside ASCII (line noise, a wrong baud
                // rate, invalid UTF-8): the console speaks ASCII, the rest is dropped.
                0x00..=0x1F | 0x80..=0xFF => {}
                _ => self.push(b, &mut echo),
            }
        }
        if !echo.is_empty() {
            out.push(Input::Echo(echo));
        }
        out
    }

    fn push(&mut self, b: u8, echo: &mut Vec<u8>) {
        if self.buf.len() >= self.max {
            self.overflow = true;
            return;
        }
        self.buf.push(b);
        if b.is_ascii_graphic() || b == b' ' {
            echo.push(b);
        }
    }
}

/// What the console can ask of the running recorder. The seam lets the parser and the
/// session logic be tested alone; `run` provides the real one.
pub trait Backend: Send + Sync {
    fn status(&self) -> String;
    fn cams(&self) -> String;
    fn mem(&self) -> String;
    fn events(&self, n: u32) -> String;
    fn household(&self) -> String;
    /// Run the self-test, calling `row` for each line of the table as it is produced.
    fn selftest(&self, row: &mut dyn FnMut(&str));
    fn set_log_filter(&self, filter: &str) -> Result<(), String>;
    fn remove_member(&self, id: i64) -> Result<String, String>;
    fn clear_ring(&self, camera: &str) -> Result<String, String>;
}

const HELP: &str = "commands:
  help                 this text
  version              nvr-edge version
  status               uptime-style summary of every camera
  cams                 per-camera format, fps, frames, errors
  mem                  jemalloc memory per camera and in total
  events [n]           the newest n events (default 10)
  household            enrolled members and vehicles
  selftest             run the self-test and stream its table
  log <filter>         change the log filter (e.g. debug, nvr_edge::capture=trace)
  unlock <pin>         allow the commands below; lock to end
  remove-member <id>   (unlocked) remove a household member
  clear-ring <camera>  (unlocked) drop a camera's buffered frames
  lock";

/// One console session's state: unlock status and the failed-attempt backoff.
pub struct Session<'a> {
    backend: &'a dyn Backend,
    cfg: &'a ConsoleConfig,
    unlocked: bool,
    failures: u32,
}

impl<'a> Session<'a> {
    pub fn new(backend: &'a dyn Backend, cfg: &'a ConsoleConfig) -> Self {
        Self {
            backend,
            cfg,
            unlocked: false,
            failures: 0,
        }
    }

    /// Delay owed before answering after failed unlock attempts.
    pub fn penalty(&self) -> Duration {
        if self.failures == 0 {
            Duration::ZERO
        } else {
            Duration::from_millis(250u64 << self.failures.min(7))
        }
    }

    /// Answer one line. `out` receives the reply (streamed for `selftest`).
    pub fn handle(&mut self, line: &str, out: &mut dyn FnMut(&str)) {
        let mut words = line.split_whitespace();
        let Some(cmd) = words.next() else { return };
        let arg = words.next();
        let extra = words.next().is_some();
        let cmd = cmd.to_ascii_lowercase();
        let reply = match (cmd.as_str(), arg, extra) {
            ("help" | "?", None, false) => HELP.to_string(),
            ("version", None, false) => format!("nvr-edge {}", env!("CARGO_PKG_VERSION")),
            ("status", None, false) => self.backend.status(),
            ("cams", None, false) => self.backend.cams(),
            ("mem", None, false) => self.backend.mem(),
            ("events", n, false) => match n.map(str::parse::<u32>) {
                None => self.backend.events(10),
                Some(Ok(n)) if (1..=1000).contains(&n) => self.backend.events(n),
                _ => "error: events takes a count from 1 to 1000".into(),
            },
            ("household", None, false) => self.backend.household(),
            ("selftest", None, false) => {
                self.backend.selftest(&mut |row| out(row));
                return;
            }
            ("log", Some(f), false) => match self.backend.set_log_filter(f) {
                Ok(()) => format!("log filter now {f}"),
                Err(e) => format!("error: {e}"),
            },
            ("unlock", Some(pin), false) => self.unlock(pin),
            ("lock", None, false) => {
                self.unlocked = false;
                "locked".into()
            }
            ("remove-member" | "clear-ring", Some(_), false) if !self.unlocked => {
                "error: locked; unlock <pin> first".into()
            }
            ("remove-member", Some(id), false) => match id.parse::<i64>() {
                Ok(id) => self
                    .backend
                    .remove_member(id)
                    .unwrap_or_else(|e| format!("error: {e}")),
                Err(_) => "error: remove-member takes a member id".into(),
            },
            ("clear-ring", Some(cam), false) => self
                .backend
                .clear_ring(cam)
                .unwrap_or_else(|e| format!("error: {e}")),
            (
                "help" | "version" | "status" | "cams" | "mem" | "household" | "selftest" | "lock"
                | "log" | "unlock" | "remove-member" | "clear-ring" | "events",
                _,
                _,
            ) => format!("error: wrong arguments for {cmd}; try help"),
            _ => {
                let shown: String = cmd.chars().take(32).collect();
                format!("error: unknown command {shown:?}; try help")
            }
        };
        out(&reply);
    }

    fn unlock(&mut self, pin: &str) -> String {
        if self.cfg.pin_sha256.is_empty() {
            return "error: no PIN is configured; mutating commands are disabled".into();
        }
        if hash_pin(&self.cfg.pin_salt, pin).eq_ignore_ascii_case(&self.cfg.pin_sha256) {
            self.unlocked = true;
            self.failures = 0;
            "unlocked".into()
        } else {
            self.failures += 1;
            format!(
                "error: wrong PIN (next answer delayed {} ms)",
                self.penalty().as_millis()
            )
        }
    }
}

/// Serve a console on a byte stream until it closes or `stop()` is true. Never panics on
/// input; returns on end of stream or a read error other than an interruption.
pub fn serve(
    io: &mut (impl Read + Write),
    backend: &dyn Backend,
    cfg: &ConsoleConfig,
    stop: &dyn Fn() -> bool,
) -> std::io::Result<()> {
    let mut reader = LineReader::new(cfg.max_line);
    let mut session = Session::new(backend, cfg);
    let mut buf = [0u8; 512];
    io.write_all(b"nvr-edge console; type help\r\n> ")?;
    io.flush()?;
    while !stop() {
        let n = match io.read(&mut buf) {
            Ok(0) => return Ok(()),
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e)
                if e.kind() == std::io::ErrorKind::WouldBlock
                    || e.kind() == std::io::ErrorKind::TimedOut =>
            {
                continue
            }
            Err(e) => return Err(e),
        };
        for input in reader.feed(&buf[..n]) {
            match input {
                Input::Echo(e) => io.write_all(&e)?,
                Input::TooLong => io.write_all(
                    format!(
                        "error: line longer than {} bytes, ignored\r\n> ",
                        cfg.max_line
                    )
                    .as_bytes(),
                )?,
                Input::Line(l) => {
                    std::thread::sleep(session.penalty());
                    let mut err = Ok(());
                    session.handle(&l, &mut |text| {
                        if err.is_ok() {
                            err = io
                                .write_all(text.replace('\n', "\r\n").as_bytes())
                                .and_then(|()| io.write_all(b"\r\n"));
                        }
                    });
                    err?;
                    io.write_all(b"> ")?;
                }
            }
        }
        io.flush()?;
    }
    Ok(())
}

/// Open a serial device in raw mode at `baud` for the console.
pub fn open_serial(path: &Path, baud: u32) -> std::io::Result<std::fs::File> {
    use std::os::unix::fs::OpenOptionsExt;
    let f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(rustix::fs::OFlags::NOCTTY.bits() as i32)
        .open(path)?;
    let mut t = rustix::termios::tcgetattr(&f)?;
    t.make_raw();
    t.set_speed(baud)?;
    // Return from read() at least every 0.5 s so a stop request is seen.
    t.special_codes[rustix::termios::SpecialCodeIndex::VMIN] = 0;
    t.special_codes[rustix::termios::SpecialCodeIndex::VTIME] = 5;
    rustix::termios::tcsetattr(&f, rustix::termios::OptionalActions::Now, &t)?;
    Ok(f)
}

/// The console thread of `run`: reopen the device if it goes away.
pub fn spawn(
    cfg: ConsoleConfig,
    backend: Arc<dyn Backend>,
    stop: Arc<std::sync::atomic::AtomicBool>,
) -> std::thread::JoinHandle<()> {
    std::thread::Builder::new()
        .name("console".into())
        .spawn(move || {
            let stopped = || stop.load(std::sync::atomic::Ordering::SeqCst);
            while !stopped() {
                match open_serial(Path::new(&cfg.device), cfg.baud) {
                    Ok(mut f) => {
                        tracing::info!(device = %cfg.device, baud = cfg.baud, "console listening");
                        if let Err(e) = serve(&mut f, &*backend, &cfg, &stopped) {
                            tracing::warn!(device = %cfg.device, error = %e, "console stream ended");
                        }
                    }
                    Err(e) => tracing::warn!(device = %cfg.device, error = %e, "console device unavailable"),
                }
                for _ in 0..20 {
                    if stopped() {
                        break;
                    }
                    std::thread::sleep(Duration::from_millis(100));
                }
            }
        })
        .expect("spawning the console thread")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_backspace_escapes_and_overflow() {
        let mut r = LineReader::new(8);
        let got = r.feed(b"he\x7fello\x1b[A\r\nstatus\n");
        let lines: Vec<_> = got
            .iter()
            .filter_map(|i| match i {
                Input::Line(l) => Some(l.clone()),
                _ => None,
            })
            .collect();
        assert_eq!(lines, ["hello", "status"]);
        let got = r.feed(b"0123456789abc\nok\n");
        assert!(got.contains(&Input::TooLong));
        assert!(got.contains(&Input::Line("ok".into())));
    }

    #[test]
    fn pin_hash_is_salted_sha256() {
        assert_eq!(hash_pin("", "abc").len(), 64);
        assert_ne!(hash_pin("s1", "1234"), hash_pin("s2", "1234"));
    }
}
