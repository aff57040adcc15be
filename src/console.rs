//! Serial diagnostics console: a line-oriented prompt on a serial device (or stdio) for the
//! technician with a cable. It must survive any input: line noise, a wrong baud rate, NUL,
//! invalid UTF-8, terminal escape sequences, a cat'ed binary. Lines are bounded; an
//! over-long line is answered with an error and dropped up to its newline; control bytes
//! other than line ends and backspace, whole escape sequences (CSI, SS3, OSC and the other
//! string sequences, parsed to their end as ECMA-48 defines them) and non-ASCII bytes are
//! ignored; nothing here can panic on input. What goes out has its control characters
//! escaped, so a member's name cannot drive the technician's terminal.
//!
//! Read-only commands answer anyone, but without `unlock <pin>` they show counts, not
//! names or plates, and a log filter cannot be turned quieter than warnings. The PIN is
//! stored as an argon2id PHC string. Wrong PINs lock `unlock` out for a doubling time;
//! that state belongs to the console ([`Lockout`]), not to one session, so it survives
//! reopenings of the device and (through a small state file) restarts of the process.
//! A read that returns nothing after the tty's timeout is silence, not the end of the
//! stream: a session lasts while the line is quiet.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::config::ConsoleConfig;

/// Socket sessions served at once; one more is told so and closed.
pub const MAX_SOCKET_SESSIONS: usize = 2;

/// The argon2id PHC string for `pin` (random salt, the crate's default cost: ~19 MiB,
/// a few tens of ms), the form `console.pin_hash` takes.
pub fn hash_pin(pin: &str) -> String {
    crate::secret::hash(pin)
}

/// Whether `pin` matches a PHC string made by [`hash_pin`] (false for a malformed one).
pub fn verify_pin(phc: &str, pin: &str) -> bool {
    crate::secret::verify(phc, pin)
}

/// Control characters of `text` shown as `\x1b`-style escapes, so stored text (a member's
/// name, a plate) cannot move the cursor or retitle the technician's terminal. Newlines
/// stay: replies are multi-line.
pub fn escape_controls(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if c.is_control() && c != '\n' {
            out.push_str(&format!("\\x{:02x}", u32::from(c)));
        } else {
            out.push(c);
        }
    }
    out
}

/// The console's memory of wrong PINs: a doubling lock-out (1 s after the first, 15 min
/// at most), kept across sessions and reopenings of the device, and in `file` (when
/// given) across restarts.
#[derive(Debug)]
pub struct Lockout {
    failures: u32,
    until: Option<Instant>,
    file: Option<PathBuf>,
}

/// Longest lock-out after wrong PINs: with it, a guesser gets ~14 tries an hour.
pub const MAX_LOCKOUT: Duration = Duration::from_secs(900);

impl Lockout {
    pub fn new() -> Self {
        Self {
            failures: 0,
            until: None,
            file: None,
        }
    }

    /// A lock-out kept in `file`: its count of wrong PINs is read back, and the lock-out
    /// they earned starts again from now.
    pub fn persistent(file: PathBuf) -> Self {
        let failures = std::fs::read_to_string(&file)
            .ok()
            .and_then(|s| s.trim().parse::<u32>().ok())
            .unwrap_or(0);
        let mut l = Self {
            failures,
            until: None,
            file: Some(file),
        };
        if failures > 0 {
            l.until = Some(Instant::now() + l.penalty());
        }
        l
    }

    pub fn failures(&self) -> u32 {
        self.failures
    }

    /// Lock-out earned by the wrong PINs so far.
    pub fn penalty(&self) -> Duration {
        lockout_for(self.failures)
    }

    /// Time left before `unlock` is tried again.
    pub fn remaining(&self) -> Duration {
        self.until.map_or(Duration::ZERO, |u| {
            u.saturating_duration_since(Instant::now())
        })
    }

    fn failed(&mut self) {
        self.failures = self.failures.saturating_add(1);
        self.until = Some(Instant::now() + self.penalty());
        self.save();
    }

    fn succeeded(&mut self) {
        self.failures = 0;
        self.until = None;
        self.save();
    }

    fn save(&self) {
        if let Some(f) = &self.file {
            if let Err(e) = std::fs::write(f, format!("{}\n", self.failures)) {
                tracing::warn!(file = %f.display(), error = %e, "console lock-out state not saved");
            }
        }
    }
}

/// The lock-out after `failures` wrong PINs in a row: 1 s, doubling, at most
/// [`MAX_LOCKOUT`].
pub fn lockout_for(failures: u32) -> Duration {
    if failures == 0 {
        return Duration::ZERO;
    }
    Duration::from_secs(1u64 << (failures - 1).min(20)).min(MAX_LOCKOUT)
}

impl Default for Lockout {
    fn default() -> Self {
        Self::new()
    }
}

/// Whether a log filter would silence warnings (`off`, `error`, or a target set to one
/// of them): a locked console may turn logging up, not down.
pub fn silences_warnings(filter: &str) -> bool {
    filter.split(',').any(|directive| {
        let level = directive.rsplit('=').next().unwrap_or("").trim();
        level.eq_ignore_ascii_case("off") || level.eq_ignore_ascii_case("error")
    })
}

/// Turns a byte stream into bounded lines.
#[derive(Debug)]
pub struct LineReader {
    max: usize,
    buf: Vec<u8>,
    overflow: bool,
    esc: Esc,
    last_cr: bool,
}

/// Where the reader stands inside an escape sequence (ECMA-48).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Esc {
    None,
    /// After ESC.
    Start,
    /// ESC then intermediates (0x20-0x2F), until a final byte (nF sequences: `ESC ( B`).
    Intermediate,
    /// ESC [: parameters and intermediates, until a final byte 0x40-0x7E.
    Csi,
    /// ESC O: one more byte (keypad and F1-F4 keys).
    Ss3,
    /// ESC ], ESC P, ESC X, ESC ^, ESC _: a string, until BEL (OSC) or ST (ESC \).
    Str,
    /// ESC inside a string: `\` ends it.
    StringEscape,
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
            esc: Esc::None,
            last_cr: false,
        }
    }

    /// Feed bytes; returns lines, overflows and echoes in order.
    pub fn feed(&mut self, bytes: &[u8]) -> Vec<Input> {
        let mut out = Vec::new();
        let mut echo = Vec::new();
        for &b in bytes {
            if self.in_escape(b) {
                continue;
            }
            let cr_lf = self.last_cr && b == b'\n';
            self.last_cr = b == b'\r';
            match b {
                0x1B => self.esc = Esc::Start,
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

    /// Consume `b` if it belongs to an escape sequence. A line end (or CAN/SUB, which
    /// cancel a sequence) inside one ends the sequence and is then handled as itself, so a
    /// sequence cut short never eats the next line; a string sequence (OSC's window
    /// title, ...) is dropped to its terminator and never typed as text.
    fn in_escape(&mut self, b: u8) -> bool {
        let aborts = matches!(b, b'\r' | b'\n' | 0x18 | 0x1A);
        let (next, consumed) = match self.esc {
            Esc::None => return false,
            _ if aborts => (Esc::None, b != b'\r' && b != b'\n'),
            Esc::Start => match b {
                b'[' => (Esc::Csi, true),
                b'O' => (Esc::Ss3, true),
                b']' | b'P' | b'X' | b'^' | b'_' => (Esc::Str, true),
                0x1B => (Esc::Start, true),
                0x20..=0x2F => (Esc::Intermediate, true),
                // A two-byte sequence (ESC 7, ESC c, ...); a control byte ends it unused.
                0x30..=0x7E => (Esc::None, true),
                _ => (Esc::None, false),
            },
            Esc::Intermediate => match b {
                0x20..=0x2F => (Esc::Intermediate, true),
                0x30..=0x7E => (Esc::None, true),
                _ => (Esc::None, false),
            },
            Esc::Csi => match b {
                // Parameters and intermediates.
                0x20..=0x3F => (Esc::Csi, true),
                // The final byte.
                0x40..=0x7E => (Esc::None, true),
                0x1B => (Esc::Start, true),
                // Other controls are executed inside a sequence (VT100): drop them here.
                _ => (Esc::Csi, true),
            },
            Esc::Ss3 => (Esc::None, (0x20..=0x7E).contains(&b)),
            Esc::Str => match b {
                0x07 => (Esc::None, true),
                0x1B => (Esc::StringEscape, true),
                _ => (Esc::Str, true),
            },
            Esc::StringEscape => match b {
                b'\\' => (Esc::None, true),
                0x1B => (Esc::StringEscape, true),
                _ => (Esc::Str, true),
            },
        };
        self.esc = next;
        consumed
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
    /// The household: with `names`, members' names and plates; without, counts only.
    fn household(&self, names: bool) -> String;
    /// Run the self-test, calling `row` for each line of the table as it is produced.
    fn selftest(&self, row: &mut dyn FnMut(&str));
    fn set_log_filter(&self, filter: &str) -> Result<(), BackendError>;
    /// Remove a household member; returns what to tell the technician.
    fn remove_member(&self, id: i64) -> Result<String, BackendError>;
    /// Drop every frame of a camera's ring; returns what to tell the technician.
    fn clear_ring(&self, camera: &str) -> Result<String, BackendError>;
}

/// Why a console command that changes something did not.
#[derive(Debug, thiserror::Error)]
pub enum BackendError {
    #[error("no camera {0:?}")]
    NoCamera(String),
    /// The recorder's part failed; its error (and causes) say why.
    #[error("{what}")]
    Failed {
        what: &'static str,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
}

impl BackendError {
    pub fn failed(what: &'static str, e: impl std::error::Error + Send + Sync + 'static) -> Self {
        BackendError::Failed {
            what,
            source: Box::new(e),
        }
    }
}

const HELP: &str = "commands:
  help                 this text
  version              nvr-edge version
  status               uptime-style summary of every camera
  cams                 per-camera format, fps, frames, errors
  mem                  jemalloc memory per camera and in total
  events [n]           the newest n events (default 10)
  household            how many members and vehicles (names and plates when unlocked)
  selftest             run the self-test and stream its table
  log <filter>         change the log filter (e.g. debug, nvr_edge::capture=trace;
                       quieter than warn only when unlocked)
  unlock <pin>         allow the commands below; lock to end
  remove-member <id>   (unlocked) remove a household member
  clear-ring <camera>  (unlocked) drop a camera's buffered frames
  lock";

/// One console session: its unlock status. Wrong PINs are counted by the console's
/// [`Lockout`], which outlives the session.
pub struct Session<'a> {
    backend: &'a dyn Backend,
    cfg: &'a ConsoleConfig,
    lockout: &'a Mutex<Lockout>,
    unlocked: bool,
}

impl<'a> Session<'a> {
    pub fn new(
        backend: &'a dyn Backend,
        cfg: &'a ConsoleConfig,
        lockout: &'a Mutex<Lockout>,
    ) -> Self {
        Self {
            backend,
            cfg,
            lockout,
            unlocked: false,
        }
    }

    pub fn unlocked(&self) -> bool {
        self.unlocked
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
            ("household", None, false) => self.backend.household(self.unlocked),
            ("selftest", None, false) => {
                self.backend.selftest(&mut |row| out(row));
                return;
            }
            ("log", Some(f), false) if !self.unlocked && silences_warnings(f) => {
                "error: locked; a filter quieter than warn needs unlock <pin> first".into()
            }
            ("log", Some(f), false) => match self.backend.set_log_filter(f) {
                Ok(()) => format!("log filter now {f}"),
                Err(e) => format!("error: {}", crate::error_chain(&e)),
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
                    .unwrap_or_else(|e| format!("error: {}", crate::error_chain(&e))),
                Err(_) => "error: remove-member takes a member id".into(),
            },
            ("clear-ring", Some(cam), false) => self
                .backend
                .clear_ring(cam)
                .unwrap_or_else(|e| format!("error: {}", crate::error_chain(&e))),
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
        if self.cfg.pin_hash.is_empty() {
            return "error: no PIN is configured; mutating commands are disabled".into();
        }
        // One lock-out for every session (serial and socket): held while the PIN is
        // checked, so two sessions cannot guess in parallel.
        let mut lockout = self.lockout.lock().unwrap_or_else(|e| e.into_inner());
        let wait = lockout.remaining();
        if !wait.is_zero() {
            // Not even checked: a guesser learns nothing while locked out.
            return format!(
                "error: locked out for {} s after {} wrong PIN(s)",
                wait.as_secs().max(1),
                lockout.failures()
            );
        }
        if verify_pin(&self.cfg.pin_hash, pin) {
            self.unlocked = true;
            lockout.succeeded();
            tracing::info!("console unlocked");
            "unlocked".into()
        } else {
            lockout.failed();
            tracing::warn!(failures = lockout.failures(), "console: wrong PIN");
            format!(
                "error: wrong PIN; unlock is locked out for {} s",
                lockout.penalty().as_secs()
            )
        }
    }
}

/// A zero-byte read that took at least this long was the tty's read timeout (VTIME)
/// running out on a quiet line; a quicker one is a hangup or the end of a stream.
const QUIET_READ: Duration = Duration::from_millis(200);

/// Serve a console on a byte stream until it closes or `stop()` is true. Never panics on
/// input; returns on end of stream (a zero-byte read that comes back at once) or a read
/// error other than an interruption or timeout. `lockout` outlives the session.
pub fn serve(
    io: &mut (impl Read + Write),
    backend: &dyn Backend,
    cfg: &ConsoleConfig,
    lockout: &Mutex<Lockout>,
    stop: &dyn Fn() -> bool,
) -> std::io::Result<()> {
    let mut reader = LineReader::new(cfg.max_line);
    let mut session = Session::new(backend, cfg, lockout);
    let mut buf = [0u8; 512];
    io.write_all(b"nvr-edge console; type help\r\n> ")?;
    io.flush()?;
    while !stop() {
        let asked = Instant::now();
        let n = match io.read(&mut buf) {
            Ok(0) if asked.elapsed() >= QUIET_READ => continue,
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
                    let mut err = Ok(());
                    session.handle(&l, &mut |text| {
                        if err.is_ok() {
                            err = io
                                .write_all(escape_controls(text).replace('\n', "\r\n").as_bytes())
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
    // Return from read() at least every 0.5 s so a stop request is seen; such a return
    // with no bytes is silence (see QUIET_READ), and the session goes on.
    t.special_codes[rustix::termios::SpecialCodeIndex::VMIN] = 0;
    t.special_codes[rustix::termios::SpecialCodeIndex::VTIME] = 5;
    rustix::termios::tcsetattr(&f, rustix::termios::OptionalActions::Now, &t)?;
    Ok(f)
}

/// The console thread of `run`: reopen the device if it goes away. `lockout` is shared
/// with the socket sessions.
pub fn spawn(
    cfg: ConsoleConfig,
    backend: Arc<dyn Backend>,
    stop: Arc<AtomicBool>,
    lockout: Arc<Mutex<Lockout>>,
) -> std::thread::JoinHandle<()> {
    std::thread::Builder::new()
        .name("console".into())
        .spawn(move || {
            let stopped = || stop.load(Ordering::SeqCst);
            let mut last_error = String::new();
            while !stopped() {
                match open_serial(Path::new(&cfg.device), cfg.baud) {
                    Ok(mut f) => {
                        tracing::info!(device = %cfg.device, baud = cfg.baud, "console listening");
                        last_error.clear();
                        match serve(&mut f, &*backend, &cfg, &lockout, &stopped) {
                            Ok(()) if !stopped() => {
                                tracing::info!(device = %cfg.device, "console hung up; reopening")
                            }
                            Ok(()) => {}
                            Err(e) => {
                                tracing::warn!(device = %cfg.device, error = %e, "console stream ended")
                            }
                        }
                    }
                    // Said once per distinct error, not every 2 s into the journal.
                    Err(e) if e.to_string() != last_error => {
                        last_error = e.to_string();
                        tracing::warn!(device = %cfg.device, error = %e, "console device unavailable; retrying every 2 s");
                    }
                    Err(_) => {}
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

/// The socket `nvr-edge console` attaches to: bound at `cfg.socket` (a stale socket of a
/// killed process is replaced; any other file there is left alone and reported), mode
/// 0660, at most [`MAX_SOCKET_SESSIONS`] sessions at once, each the serial console's
/// `serve` with the shared `lockout`. `None` (logged) when it cannot listen.
pub fn spawn_socket(
    cfg: ConsoleConfig,
    backend: Arc<dyn Backend>,
    stop: Arc<AtomicBool>,
    lockout: Arc<Mutex<Lockout>>,
) -> Option<std::thread::JoinHandle<()>> {
    use std::os::unix::fs::{FileTypeExt, PermissionsExt};
    let path = PathBuf::from(&cfg.socket);
    if let Ok(md) = std::fs::symlink_metadata(&path) {
        if md.file_type().is_socket() {
            if std::os::unix::net::UnixStream::connect(&path).is_ok() {
                tracing::warn!(socket = %path.display(), "console socket: another nvr-edge answers there; no socket console");
                return None;
            }
            // Left by a process that was killed.
            let _ = std::fs::remove_file(&path);
        } else {
            tracing::warn!(socket = %path.display(), "console socket: a file that is not a socket is in the way; no socket console");
            return None;
        }
    }
    let listener = match std::os::unix::net::UnixListener::bind(&path) {
        Ok(l) => l,
        Err(e) => {
            tracing::warn!(socket = %path.display(), error = %e, "console socket unavailable");
            return None;
        }
    };
    if let Err(e) = std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o660))
        .and_then(|()| listener.set_nonblocking(true))
    {
        tracing::warn!(socket = %path.display(), error = %e, "console socket not set up; closed");
        let _ = std::fs::remove_file(&path);
        return None;
    }
    tracing::info!(socket = %path.display(), "console socket listening (nvr-edge console)");
    let spawned = std::thread::Builder::new()
        .name("console-socket".into())
        .spawn(move || {
            let active = Arc::new(AtomicUsize::new(0));
            let mut sessions: Vec<std::thread::JoinHandle<()>> = Vec::new();
            while !stop.load(Ordering::SeqCst) {
                sessions.retain(|h| !h.is_finished());
                let mut stream = match listener.accept() {
                    Ok((s, _)) => s,
                    Err(e) => {
                        if e.kind() != std::io::ErrorKind::WouldBlock {
                            tracing::warn!(error = %e, "console socket: accept failed");
                        }
                        std::thread::sleep(Duration::from_millis(100));
                        continue;
                    }
                };
                if active.load(Ordering::SeqCst) >= MAX_SOCKET_SESSIONS {
                    let _ = stream.write_all(b"error: console busy (too many sessions)\r\n");
                    continue;
                }
                // Reads return every 0.5 s so a stop request is seen, like the tty's VTIME.
                let ok = stream.set_nonblocking(false).is_ok()
                    && stream
                        .set_read_timeout(Some(Duration::from_millis(500)))
                        .is_ok();
                if !ok {
                    continue;
                }
                active.fetch_add(1, Ordering::SeqCst);
                tracing::info!("console session on the socket");
                let (backend, cfg, lockout, stop, counted) = (
                    backend.clone(),
                    cfg.clone(),
                    lockout.clone(),
                    stop.clone(),
                    active.clone(),
                );
                let session = std::thread::Builder::new()
                    .name("console-session".into())
                    .spawn(move || {
                        let stopped = || stop.load(Ordering::SeqCst);
                        let _ = serve(&mut stream, &*backend, &cfg, &lockout, &stopped);
                        counted.fetch_sub(1, Ordering::SeqCst);
                    });
                match session {
                    Ok(h) => sessions.push(h),
                    Err(_) => {
                        active.fetch_sub(1, Ordering::SeqCst);
                    }
                }
            }
            for h in sessions {
                let _ = h.join();
            }
            let _ = std::fs::remove_file(&path);
        });
    spawned.ok()
}

/// `nvr-edge console`: attach this terminal to a running recorder's console socket. The
/// terminal goes raw (the console echoes what is typed) and comes back as it was; Ctrl-]
/// or the end of standard input ends the session.
pub fn attach(path: &Path) -> std::io::Result<()> {
    use std::io::IsTerminal;
    let mut sock = std::os::unix::net::UnixStream::connect(path)?;
    let mut reader = sock.try_clone()?;
    let out = std::thread::spawn(move || {
        let mut buf = [0u8; 4096];
        let mut stdout = std::io::stdout();
        while let Ok(n) = reader.read(&mut buf) {
            if n == 0
                || stdout
                    .write_all(&buf[..n])
                    .and_then(|()| stdout.flush())
                    .is_err()
            {
                break;
            }
        }
    });
    let stdin = std::io::stdin();
    let saved = if stdin.is_terminal() {
        let t = rustix::termios::tcgetattr(&stdin).ok();
        if let Some(t) = &t {
            let mut raw = t.clone();
            raw.make_raw();
            let _ = rustix::termios::tcsetattr(&stdin, rustix::termios::OptionalActions::Now, &raw);
            eprint!("(attached to {}; Ctrl-] to leave)\r\n", path.display());
        }
        t
    } else {
        None
    };
    let mut buf = [0u8; 1024];
    let mut input = stdin.lock();
    let result = loop {
        match input.read(&mut buf) {
            Ok(0) => break Ok(()),
            Ok(n) => {
                // Ctrl-] ends the session, as in telnet.
                let (chunk, quit) = match buf[..n].iter().position(|&b| b == 0x1d) {
                    Some(i) => (&buf[..i], true),
                    None => (&buf[..n], false),
                };
                if let Err(e) = sock.write_all(chunk) {
                    break Err(e);
                }
                if quit {
                    break Ok(());
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => break Err(e),
        }
    };
    drop(input);
    if let Some(t) = saved {
        let _ = rustix::termios::tcsetattr(&stdin, rustix::termios::OptionalActions::Now, &t);
    }
    // The console answers what was sent, then sees the end of the stream and closes.
    let _ = sock.shutdown(std::net::Shutdown::Write);
    let _ = out.join();
    result
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
    fn pin_hash_is_argon2id_with_a_random_salt() {
        let a = hash_pin("1234");
        let b = hash_pin("1234");
        assert!(a.starts_with("$argon2id$"), "{a}");
        assert_ne!(a, b, "same salt twice");
        assert!(verify_pin(&a, "1234") && verify_pin(&b, "1234"));
        assert!(!verify_pin(&a, "1235") && !verify_pin("not a hash", "1234"));
    }

    /// The field probe's cases: a CSI cut short by CRLF ate the next line's first letter;
    /// an OSC (window title) was typed as text.
    #[test]
    fn escape_sequences_end_where_ecma48_says() {
        let lines = |bytes: &[u8]| -> Vec<String> {
            LineReader::new(64)
                .feed(bytes)
                .into_iter()
                .filter_map(|i| match i {
                    Input::Line(l) => Some(l),
                    _ => None,
                })
                .collect()
        };
        assert_eq!(lines(b"\x1b[\r\nstatus\n"), ["", "status"]);
        assert_eq!(lines(b"\x1b]0;evil title\x07help\n"), ["help"]);
        assert_eq!(lines(b"\x1b]2;t\x1b\\cams\n"), ["cams"]);
        assert_eq!(lines(b"\x1bOPmem\n"), ["mem"]);
        assert_eq!(lines(b"\x1b(Bversion\n"), ["version"]);
        assert_eq!(lines(b"\x1b[1;31mlo\x1b[0mck\n"), ["lock"]);
        // A string cut by a line end does not swallow the lines after it.
        assert_eq!(lines(b"\x1b]no end\nhelp\n"), ["", "help"]);
    }

    #[test]
    fn stored_text_cannot_drive_the_terminal() {
        assert_eq!(
            escape_controls("Eve\x1b]0;pwned\x07\r\nrow"),
            "Eve\\x1b]0;pwned\\x07\\x0d\nrow"
        );
    }

    #[test]
    fn locked_consoles_cannot_silence_warnings() {
        assert!(silences_warnings("off"));
        assert!(silences_warnings("info,nvr_edge=error"));
        assert!(silences_warnings("nvr_edge::capture=OFF"));
        assert!(!silences_warnings("debug"));
        assert!(!silences_warnings("nvr_edge::capture=trace,warn"));
    }
}
