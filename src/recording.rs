//! Event recordings: the frames of an event, from `pre_secs` before it started until
//! `post_secs` after it ended, copied from the camera's ring into an MJPEG-in-AVI file
//! under `<data_dir>/clips/`. The JPEG frames go in as they are (no re-encoding, no
//! decoding), and MJPEG AVI is the one container every common player and NVR tool opens.
//!
//! Crash safety: a recording is written as `NAME.avi.part` and renamed to `NAME.avi` only
//! once its index and headers are complete and synced, so a crash leaves a `.part` file
//! (removed at the next start, its event marked `interrupted`) and never a file that claims
//! to be complete. The directory stays within a disk budget: the oldest finished
//! recordings are deleted first, and their events say so. The budget also respects the
//! filesystem: `min_free_mb` is kept free (statvfs), so a disk that fills before the budget
//! is reached (a small SD card, other files) never leaves the database without room to
//! store the next event; when even deleting every finished video cannot keep the floor,
//! new videos are not started (their events are stored, marked why) and a video being
//! written is ended early, complete.
//!
//! Memory: one recording at a time per camera; its frame index is reserved up front for
//! the longest recording allowed, and frames are copied through a reused batch.

use std::fs::{self, File};
use std::io::{self, BufWriter, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use serde::Serialize;

use crate::config::RecordingConfig;
use crate::events::EventStore;
use crate::ring::{FrameBatch, FrameFormat, FrameMeta, FrameRing};

/// Largest frame [`AviReader`] hands out (a 4K MJPEG frame is well under).
pub const MAX_READ_FRAME: u32 = 16 << 20;
/// Legacy AVI readers stop at 1 GiB per RIFF; a recording ends there at the latest.
const MAX_FILE_BYTES: u64 = 1 << 30;
/// Frames copied from the ring per lock, so capture never waits long behind a recording.
const FRAMES_PER_COPY: usize = 8;
/// Offsets in the fixed header written by [`AviWriter`] (see `write_header`).
const MOVI_LIST_AT: u64 = 212;
const FIRST_CHUNK_AT: u64 = MOVI_LIST_AT + 12;

#[derive(Debug, thiserror::Error)]
pub enum RecordingError {
    #[error("recording {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("recording {path}: frame of {len} bytes does not fit an AVI chunk")]
    FrameTooLarge { path: PathBuf, len: usize },
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> RecordingError + '_ {
    move |source| RecordingError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// What a finished recording holds.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Finished {
    pub path: PathBuf,
    pub frames: u32,
    pub bytes: u64,
    /// Frame rate written in the header: measured over the recording's timestamps.
    pub fps: f64,
    pub duration_secs: f64,
}

/// Writes JPEG frames into an AVI 1.0 file (RIFF `AVI `, one `vids`/`MJPG` stream, `idx1`
/// index), as `.part` until [`AviWriter::finish`].
pub struct AviWriter {
    file: BufWriter<File>,
    part: PathBuf,
    path: PathBuf,
    width: u32,
    height: u32,
    /// (offset from the `movi` fourcc, length) of each frame chunk.
    index: Vec<(u32, u32)>,
    pos: u64,
    max_chunk: u32,
    first_ts_us: Option<i64>,
    last_ts_us: i64,
}

impl AviWriter {
    /// Create `path` + `.part`, with room in the index for `max_frames` frames.
    pub fn create(
        path: &Path,
        width: u32,
        height: u32,
        max_frames: usize,
    ) -> Result<Self, RecordingError> {
        let mut part = path.as_os_str().to_owned();
        part.push(".part");
        let part = PathBuf::from(part);
        let file = File::create(&part).map_err(io_err(&part))?;
        let mut w = Self {
            file: BufWriter::with_capacity(256 << 10, file),
            part,
            path: path.to_path_buf(),
            width,
            height,
            index: Vec::with_capacity(max_frames),
            pos: 0,
            max_chunk: 0,
            first_ts_us: None,
            last_ts_us: 0,
        };
        w.pos = FIRST_CHUNK_AT;
        w.write_header(0, 0.0).map_err(io_err(&w.part))?;
        Ok(w)
    }

    pub fn frames(&self) -> usize {
        self.index.len()
    }

    /// Bytes the file will have once finished, so far.
    pub fn bytes(&self) -> u64 {
        self.pos + 8 + 16 * self.index.len() as u64
    }

    /// Whether another frame of `len` bytes still fits the index and the file size limit.
    pub fn has_room(&self, len: usize) -> bool {
        self.index.len() < self.index.capacity()
            && self.bytes() + 8 + 16 + (len as u64) < MAX_FILE_BYTES
    }

    pub fn first_ts_us(&self) -> Option<i64> {
        self.first_ts_us
    }

    pub fn add(&mut self, meta: &FrameMeta, jpeg: &[u8]) -> Result<(), RecordingError> {
        let len = u32::try_from(jpeg.len()).map_err(|_| RecordingError::FrameTooLarge {
            path: self.part.clone(),
            len: jpeg.len(),
        })?;
        let offset = (self.pos - (MOVI_LIST_AT + 8)) as u32;
        let pad = jpeg.len() % 2;
        let r = (|| {
            self.file.write_all(b"00dc")?;
            self.file.write_all(&len.to_le_bytes())?;
            self.file.write_all(jpeg)?;
            if pad == 1 {
                self.file.write_all(&[0])?;
            }
            Ok(())
        })();
        r.map_err(io_err(&self.part))?;
        self.index.push((offset, len));
        self.pos += 8 + u64::from(len) + pad as u64;
        self.max_chunk = self.max_chunk.max(len);
        self.first_ts_us.get_or_insert(meta.ts_us);
        self.last_ts_us = meta.ts_us;
        Ok(())
    }

    /// Write the index and final headers, sync, and rename to the final name. Until this
    /// returns, only the `.part` file exists.
    pub fn finish(mut self, nominal_fps: f64) -> Result<Finished, RecordingError> {
        let n = self.index.len();
        let duration_us = self.last_ts_us - self.first_ts_us.unwrap_or(self.last_ts_us);
        // n frames spanning (n - 1) intervals; a single frame gets the camera's rate.
        let fps = if n > 1 && duration_us > 0 {
            (n - 1) as f64 * 1e6 / duration_us as f64
        } else {
            nominal_fps
        };
        let fps = if fps.is_finite() && fps > 0.0 {
            fps
        } else {
            30.0
        };
        let r = (|| {
            self.file.write_all(b"idx1")?;
            self.file.write_all(&((16 * n) as u32).to_le_bytes())?;
            for &(offset, len) in &self.index {
                self.file.write_all(b"00dc")?;
                self.file.write_all(&0x10u32.to_le_bytes())?; // AVIIF_KEYFRAME
                self.file.write_all(&offset.to_le_bytes())?;
                self.file.write_all(&len.to_le_bytes())?;
            }
            self.write_header(n, fps)?;
            self.file.flush()?;
            self.file.get_ref().sync_all()
        })();
        r.map_err(io_err(&self.part))?;
        let bytes = self.bytes();
        fs::rename(&self.part, &self.path).map_err(io_err(&self.path))?;
        if let Some(dir) = self.path.parent() {
            // The rename is durable only once the directory is.
            if let Ok(d) = File::open(dir) {
                let _ = d.sync_all();
            }
        }
        Ok(Finished {
            path: self.path.clone(),
            frames: n as u32,
            bytes,
            fps,
            duration_secs: n as f64 / fps,
        })
    }

    /// Remove the unfinished file (a recording that failed half way).
    pub fn abandon(self) {
        let part = self.part.clone();
        drop(self);
        let _ = fs::remove_file(part);
    }

    /// The fixed-size header: RIFF, hdrl (avih, strl with strh and strf), the movi list
    /// header. Written once at creation with zero counts and again with the real ones.
    fn write_header(&mut self, frames: usize, fps: f64) -> io::Result<()> {
        let total = self.bytes();
        let movi_size = (self.pos - (MOVI_LIST_AT + 8)) as u32;
        let (w, h) = (self.width, self.height);
        let frames = frames as u32;
        let us_per_frame = if fps > 0.0 {
            (1e6 / fps).round() as u32
        } else {
            0
        };
        let rate = (fps * 1000.0).round() as u32;
        let mut hd = Vec::with_capacity(FIRST_CHUNK_AT as usize);
        let u32le = |v: &mut Vec<u8>, x: u32| v.extend_from_slice(&x.to_le_bytes());
        hd.extend_from_slice(b"RIFF");
        u32le(&mut hd, (total.saturating_sub(8)) as u32);
        hd.extend_from_slice(b"AVI LIST");
        u32le(&mut hd, 192); // hdrl: 4 + avih (8 + 56) + strl list (12 + 64 + 48)
        hd.extend_from_slice(b"hdrlavih");
        u32le(&mut hd, 56);
        for v in [
            us_per_frame,
            0,    // max bytes per second: unknown, optional
            0,    // padding granularity
            0x10, // AVIF_HASINDEX
            frames,
            0, // initial frames
            1, // streams
            self.max_chunk,
            w,
            h,
            0,
            0,
            0,
            0,
        ] {
            u32le(&mut hd, v);
        }
        hd.extend_from_slice(b"LIST");
        u32le(&mut hd, 116);
        hd.extend_from_slice(b"strlstrh");
        u32le(&mut hd, 56);
        hd.extend_from_slice(b"vidsMJPG");
        for v in [
            0u32,
            0,
            0,
            1000,
            rate,
            0,
            frames,
            self.max_chunk,
            u32::MAX,
            0,
        ] {
            // flags, priority+language, initial frames, scale, rate, start, length,
            // suggested buffer, quality (-1: default), sample size (0: varies)
            u32le(&mut hd, v);
        }
        for v in [0u16, 0, w.min(0xffff) as u16, h.min(0xffff) as u16] {
            hd.extend_from_slice(&v.to_le_bytes());
        }
        hd.extend_from_slice(b"strf");
        u32le(&mut hd, 40);
        u32le(&mut hd, 40); // BITMAPINFOHEADER size
        u32le(&mut hd, w);
        u32le(&mut hd, h);
        hd.extend_from_slice(&1u16.to_le_bytes()); // planes
        hd.extend_from_slice(&24u16.to_le_bytes()); // bits per pixel once decoded
        hd.extend_from_slice(b"MJPG");
        u32le(&mut hd, w * h * 3);
        for _ in 0..4 {
            u32le(&mut hd, 0);
        }
        hd.extend_from_slice(b"LIST");
        u32le(&mut hd, movi_size);
        hd.extend_from_slice(b"movi");
        debug_assert_eq!(hd.len() as u64, FIRST_CHUNK_AT);
        self.file.seek(SeekFrom::Start(0))?;
        self.file.write_all(&hd)
    }
}

/// The clips directory and its disk budget, shared by every camera's recorder.
pub struct ClipDir {
    dir: PathBuf,
    budget_bytes: u64,
    min_free_bytes: u64,
    /// Serialises budget passes of several cameras.
    lock: Mutex<()>,
}

impl ClipDir {
    /// Create the directory if needed and remove what a crash left half written. Returns
    /// the directory and the names of the removed `.part` files.
    pub fn open(
        dir: &Path,
        budget_mb: u64,
        min_free_mb: u64,
    ) -> Result<(Self, Vec<String>), RecordingError> {
        fs::create_dir_all(dir).map_err(io_err(dir))?;
        let mut removed = Vec::new();
        for entry in fs::read_dir(dir).map_err(io_err(dir))?.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.ends_with(".part") && fs::remove_file(entry.path()).is_ok() {
                removed.push(name);
            }
        }
        Ok((
            Self {
                dir: dir.to_path_buf(),
                budget_bytes: budget_mb.saturating_mul(1 << 20),
                min_free_bytes: min_free_mb.saturating_mul(1 << 20),
                lock: Mutex::new(()),
            },
            removed,
        ))
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Bytes free to unprivileged users on the directory's filesystem (statvfs), `None`
    /// when it cannot be asked.
    pub fn free_bytes(&self) -> Option<u64> {
        free_bytes(&self.dir)
    }

    /// Whether the filesystem is below its `min_free_mb` floor.
    pub fn below_floor(&self) -> bool {
        self.free_bytes().is_some_and(|f| f < self.min_free_bytes)
    }

    /// Delete the oldest finished recordings until the directory fits its budget and the
    /// filesystem keeps its free-space floor. Files being written count against the budget
    /// but are never deleted. Returns the deleted names.
    pub fn enforce_budget(&self) -> Result<Vec<String>, RecordingError> {
        let _guard = self.lock.lock().unwrap_or_else(|e| e.into_inner());
        let mut total = 0u64;
        let mut finished = Vec::new();
        for entry in fs::read_dir(&self.dir)
            .map_err(io_err(&self.dir))?
            .flatten()
        {
            let Ok(md) = entry.metadata() else { continue };
            if !md.is_file() {
                continue;
            }
            total += md.len();
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.ends_with(".avi") {
                let mtime = md.modified().unwrap_or(std::time::UNIX_EPOCH);
                finished.push((mtime, name, md.len()));
            }
        }
        finished.sort();
        let mut deleted = Vec::new();
        for (_, name, len) in finished {
            if total <= self.budget_bytes && !self.below_floor() {
                break;
            }
            match fs::remove_file(self.dir.join(&name)) {
                Ok(()) => {
                    total -= len;
                    deleted.push(name);
                }
                // Another camera's pass got there first.
                Err(e) if e.kind() == io::ErrorKind::NotFound => total -= len,
                Err(e) => return Err(io_err(&self.dir)(e)),
            }
        }
        Ok(deleted)
    }
}

/// Bytes free to unprivileged users on the filesystem holding `path` (statvfs).
pub fn free_bytes(path: &Path) -> Option<u64> {
    let st = rustix::fs::statvfs(path).ok()?;
    Some(st.f_bavail.saturating_mul(st.f_frsize))
}

/// Where recordings live, under the data directory.
pub const CLIPS_DIR: &str = "clips";

/// Reads back the frames of a video [`AviWriter`] wrote, in order (for playback over
/// HTTP): chunk by chunk from the `movi` list, never more than one frame in memory.
pub struct AviReader {
    file: io::BufReader<File>,
    /// Microseconds per frame, from the header (0 when it says none).
    pub us_per_frame: u32,
}

impl AviReader {
    pub fn open(path: &Path) -> Result<Self, RecordingError> {
        use io::Read;
        let file = File::open(path).map_err(io_err(path))?;
        let mut file = io::BufReader::with_capacity(64 * 1024, file);
        let mut head = [0u8; FIRST_CHUNK_AT as usize];
        file.read_exact(&mut head).map_err(io_err(path))?;
        let bad = |what: &str| RecordingError::Io {
            path: path.to_path_buf(),
            source: io::Error::new(io::ErrorKind::InvalidData, what.to_string()),
        };
        if &head[0..4] != b"RIFF" || &head[8..12] != b"AVI " || &head[24..28] != b"avih" {
            return Err(bad("not an AVI of nvr-edge"));
        }
        if &head[MOVI_LIST_AT as usize + 8..FIRST_CHUNK_AT as usize] != b"movi" {
            return Err(bad("no movi list where nvr-edge writes it"));
        }
        let us_per_frame = u32::from_le_bytes([head[32], head[33], head[34], head[35]]);
        Ok(Self { file, us_per_frame })
    }

    /// The next frame into `buf`; false at the end of the frames (the index, or the end
    /// of a file cut short).
    pub fn next_frame(&mut self, buf: &mut Vec<u8>) -> io::Result<bool> {
        use io::Read;
        let mut hd = [0u8; 8];
        match self.file.read_exact(&mut hd) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(false),
            Err(e) => return Err(e),
        }
        let len = u32::from_le_bytes([hd[4], hd[5], hd[6], hd[7]]);
        if &hd[0..4] != b"00dc" {
            return Ok(false);
        }
        if len > MAX_READ_FRAME {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("frame chunk of {len} bytes"),
            ));
        }
        buf.clear();
        buf.resize(len as usize, 0);
        match self.file.read_exact(buf) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(false),
            Err(e) => return Err(e),
        }
        if len % 2 == 1 {
            let mut pad = [0u8; 1];
            let _ = self.file.read_exact(&mut pad);
        }
        Ok(true)
    }
}

/// Where the video named `name` (from the database) lives in the clips directory `dir`;
/// `None` for anything but a plain file name, so a name can never reach outside it.
pub fn video_path(dir: &Path, name: &str) -> Option<PathBuf> {
    let plain = !name.is_empty() && name != "." && name != ".." && !name.contains(['/', '\\']);
    plain.then(|| dir.join(name))
}

/// Remove the videos of events the store dropped (`events::Opened::dropped_videos`) from
/// the clips directory `dir`. Names come from the database: anything that is not a plain
/// file name is left alone, so nothing outside the directory can be touched.
pub fn remove_videos(dir: &Path, names: &[String]) {
    for file in names {
        let file = file.as_str();
        let Some(path) = video_path(dir, file) else {
            tracing::warn!(
                file,
                "event's recording name is not a plain file name: left alone"
            );
            continue;
        };
        match fs::remove_file(path) {
            Ok(()) => tracing::info!(file, "recording removed with its event (retention)"),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => tracing::warn!(file, error = %e, "recording of a dropped event not removed"),
        }
    }
}

/// The clips directory of `data_dir` when recording is enabled, after cleaning up what a
/// previous process left half written. A directory that cannot be used turns recording
/// off with an error in the log: the recorder keeps detecting and classifying.
pub fn open_clips(
    cfg: &RecordingConfig,
    data_dir: &Path,
    events: &EventStore,
) -> Option<Arc<ClipDir>> {
    if !cfg.enabled {
        return None;
    }
    match ClipDir::open(
        &data_dir.join(CLIPS_DIR),
        cfg.disk_budget_mb,
        cfg.min_free_mb,
    ) {
        Ok((dir, removed)) => {
            let interrupted = events.video_interrupted().unwrap_or(0);
            if !removed.is_empty() || interrupted > 0 {
                tracing::warn!(files = ?removed, events = interrupted,
                    "recordings interrupted by the last shutdown removed");
            }
            Some(Arc::new(dir))
        }
        Err(e) => {
            tracing::error!(error = %e, "recording disabled");
            None
        }
    }
}

/// Figures of one camera's recorder.
#[derive(Debug, Clone, Default, Serialize)]
pub struct RecorderStats {
    pub started: u64,
    pub finished: u64,
    pub failed: u64,
    /// Frames evicted from the ring before the recorder copied them (it fell behind).
    pub frames_lost: u64,
    pub deleted_for_budget: u64,
    /// Videos not started, or ended early, because the filesystem was below
    /// `recording.min_free_mb` with no finished video left to delete.
    pub low_disk: u64,
    /// Free MiB on the data directory's filesystem at the last check.
    pub disk_free_mb: Option<f64>,
    pub recording: bool,
    pub last: Option<Finished>,
    pub last_error: Option<String>,
}

struct Active {
    writer: AviWriter,
    event: i64,
    next_pos: u64,
    since_ts_us: i64,
    /// Set when the event has ended: the last frame time that goes in.
    until_ts_us: Option<i64>,
    /// Past this frame time the recording stops growing (max_secs).
    limit_ts_us: i64,
}

/// One camera's recorder, driven by its analysis thread: [`Recorder::begin`] at an event's
/// start, [`Recorder::end`] at its end, [`Recorder::pump`] on every tick to copy the new
/// frames from the ring.
pub struct Recorder {
    cfg: RecordingConfig,
    camera: String,
    fps: f64,
    dir: Arc<ClipDir>,
    events: Arc<EventStore>,
    active: Option<Active>,
    batch: FrameBatch,
    pub stats: RecorderStats,
}

impl Recorder {
    pub fn new(
        cfg: RecordingConfig,
        camera: &str,
        fps: f64,
        dir: Arc<ClipDir>,
        events: Arc<EventStore>,
    ) -> Self {
        Self {
            cfg,
            camera: camera.to_string(),
            fps,
            dir,
            events,
            active: None,
            batch: FrameBatch::default(),
            stats: RecorderStats::default(),
        }
    }

    fn max_frames(&self) -> usize {
        let secs = self.cfg.pre_secs + self.cfg.max_secs + self.cfg.post_secs;
        // Headroom over the nominal rate: cameras deliver a little faster at times.
        ((secs * self.fps.max(1.0) * 1.1) as usize + 16).min(1_000_000)
    }

    /// Start recording `event`, which began with the frame captured at `start_ts_us`
    /// (monotonic) and `start_wall_us`. A recording still in its post-roll ends here.
    pub fn begin(
        &mut self,
        ring: &FrameRing,
        event: i64,
        start_ts_us: i64,
        start_wall_us: i64,
    ) -> Result<(), RecordingError> {
        let mut since = start_ts_us - (self.cfg.pre_secs * 1e6) as i64;
        if let Some(prev) = &self.active {
            // Do not write the same frames twice.
            since = since.max(prev.writer.last_ts_us + 1);
        }
        // Room for the new recording: finishing one enforces the budget already.
        if self.active.is_some() {
            self.finish_active();
        } else {
            let _ = self.enforce_budget();
        }
        let Some((width, height)) = ring.with_newest(|f| (f.meta.width, f.meta.height)) else {
            return Ok(());
        };
        if self.dir.below_floor() {
            // Every finished video is gone and the floor still does not hold: the event
            // is stored without a video rather than the database losing its room.
            self.stats.low_disk += 1;
            tracing::warn!(camera = %self.camera, event, free_mb = ?self.stats.disk_free_mb,
                "recording: filesystem below recording.min_free_mb; event stored without a video");
            let _ = self.events.video_failed(
                event,
                "not recorded: filesystem below recording.min_free_mb",
            );
            return Ok(());
        }
        let name = format!(
            "{}_{}_{:06}.avi",
            self.camera,
            start_wall_us.div_euclid(1_000_000),
            event
        );
        let path = self.dir.dir().join(&name);
        let writer = AviWriter::create(&path, width, height, self.max_frames())
            .inspect_err(|e| self.failed(event, e))?;
        if let Err(e) = self.events.video_started(event, &name) {
            tracing::warn!(camera = %self.camera, error = %e, "recording: event row not updated");
        }
        self.stats.started += 1;
        self.stats.recording = true;
        self.active = Some(Active {
            writer,
            event,
            next_pos: 0,
            since_ts_us: since,
            until_ts_us: None,
            limit_ts_us: start_ts_us + (self.cfg.max_secs * 1e6) as i64,
        });
        Ok(())
    }

    /// The event ended with the frame captured at `end_ts_us`: record `post_secs` more.
    pub fn end(&mut self, event: i64, end_ts_us: i64) {
        if let Some(a) = self.active.as_mut().filter(|a| a.event == event) {
            a.until_ts_us = Some(end_ts_us + (self.cfg.post_secs * 1e6) as i64);
        }
    }

    /// Copy the frames captured since the last call; finish the file when its event and
    /// post-roll are over or a limit is reached.
    pub fn pump(&mut self, ring: &FrameRing) {
        let Some(mut a) = self.active.take() else {
            return;
        };
        let mut done = false;
        let mut failed = None;
        'copy: loop {
            let (next, lost) =
                ring.copy_from_into(a.next_pos, a.since_ts_us, FRAMES_PER_COPY, &mut self.batch);
            a.next_pos = next;
            self.stats.frames_lost += lost;
            if self.batch.is_empty() {
                break;
            }
            for (meta, bytes) in self.batch.iter() {
                if a.until_ts_us.is_some_and(|u| meta.ts_us > u) || meta.ts_us > a.limit_ts_us {
                    done = true;
                    break 'copy;
                }
                if meta.format != FrameFormat::Jpeg {
                    continue;
                }
                if !a.writer.has_room(bytes.len()) {
                    done = true;
                    break 'copy;
                }
                if let Err(e) = a.writer.add(meta, bytes) {
                    failed = Some(e);
                    break 'copy;
                }
            }
        }
        if let Some(e) = failed {
            self.failed(a.event, &e);
            a.writer.abandon();
            self.stats.recording = false;
            return;
        }
        // Post-roll over even if the camera stopped delivering: judge by the ring's clock.
        if let (Some(u), Some(newest)) = (a.until_ts_us, ring.newest_ts()) {
            done |= newest > u;
        }
        // The filesystem fills while the video grows: older videos go first; when none is
        // left to delete, this one ends here, complete, and the floor holds.
        if !done && self.dir.below_floor() {
            let _ = self.enforce_budget();
            if self.dir.below_floor() {
                self.stats.low_disk += 1;
                tracing::warn!(camera = %self.camera, event = a.event,
                    "recording ended early: filesystem below recording.min_free_mb");
                done = true;
            }
        }
        self.active = Some(a);
        if done {
            self.finish_active();
        }
    }

    /// Finish what is being written now (shutdown: no waiting for the post-roll).
    pub fn finish_active(&mut self) {
        let Some(a) = self.active.take() else {
            return;
        };
        self.stats.recording = false;
        if a.writer.frames() == 0 {
            a.writer.abandon();
            let _ = self.events.video_failed(a.event, "no frames");
            return;
        }
        match a.writer.finish(self.fps) {
            Ok(f) => {
                tracing::info!(camera = %self.camera, event = a.event, file = %f.path.display(),
                    frames = f.frames, bytes = f.bytes, "recording finished");
                if let Err(e) = self.events.video_finished(a.event, f.frames, f.bytes) {
                    tracing::warn!(camera = %self.camera, error = %e, "recording: event row not updated");
                }
                self.stats.finished += 1;
                self.stats.last = Some(f);
            }
            Err(e) => self.failed(a.event, &e),
        }
        let _ = self.enforce_budget();
    }

    fn failed(&mut self, event: i64, e: &RecordingError) {
        tracing::warn!(camera = %self.camera, event, error = %e, "recording failed");
        self.stats.failed += 1;
        self.stats.last_error = Some(e.to_string());
        let _ = self.events.video_failed(event, &e.to_string());
    }

    fn enforce_budget(&mut self) -> Result<(), RecordingError> {
        let deleted = self.dir.enforce_budget().inspect_err(|e| {
            self.stats.last_error = Some(e.to_string());
        });
        self.stats.disk_free_mb = self.dir.free_bytes().map(|b| b as f64 / f64::from(1 << 20));
        let deleted = deleted?;
        for name in deleted {
            tracing::info!(file = %name, "recording deleted: clips over their disk budget");
            self.stats.deleted_for_budget += 1;
            let _ = self.events.video_deleted(&name);
        }
        Ok(())
    }
}

impl Drop for Recorder {
    fn drop(&mut self) {
        self.finish_active();
    }
}
