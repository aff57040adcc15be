//! Fixed-capacity frame ring: one per camera, memory reserved once, no allocation per frame.
//!
//! Layout: one contiguous byte arena for payloads plus a fixed array of frame slots.
//! Payloads are written one after another and wrap to the start of the arena when the
//! next one would not fit before its end, so every payload stays contiguous (a reader can
//! hand it to a JPEG decoder as one slice). Each payload has a *logical* start offset that
//! only ever grows; a frame is still intact exactly while its logical start is no more
//! than one arena length behind the logical end of the newest frame. That makes
//! byte-budget eviction a pop from the oldest end, like the other two:
//!
//! * capacity: the slot array is full;
//! * bytes: the new payload's bytes reach into the oldest payloads;
//! * age: the oldest frame is more than `max_age` older than the frame being pushed.
//!
//! Age is measured against the newest frame rather than the wall clock, so a camera that
//! dies keeps its last minutes for the event that killed it.
//!
//! Timestamp policy: timestamps are monotonic microseconds (the V4L2 clock). A frame with
//! the same timestamp as the newest is accepted (coarse clocks repeat); an earlier one is
//! refused with [`RingError::OutOfOrder`] and left for the caller to count, because
//! reordering would break the even sampling and age eviction that rely on order.
//!
//! Concurrency: one writer, any number of readers, all through a short mutex. A push
//! holds it for one memcpy of the payload; readers either borrow a frame under the lock
//! ([`FrameRing::with_frame`]) or copy a sample out ([`FrameRing::sample_into`]). No
//! reader can observe a frame while it is overwritten, so frames are never torn.

use std::ops::Range;
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use serde::Serialize;

/// A ring's budget. Both limits are hard: the ring never holds more.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RingConfig {
    pub frames: usize,
    pub max_bytes: usize,
    pub max_age: Duration,
}

/// How a payload is encoded. Cameras store JPEG; other formats exist for tests and tools.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum FrameFormat {
    Jpeg,
    /// Uncompressed frame identified by its V4L2 fourcc.
    Raw([u8; 4]),
}

/// What is known about a frame besides its bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameMeta {
    /// Source sequence number (gaps mean the source dropped frames).
    pub seq: u64,
    /// Capture time, monotonic clock, microseconds.
    pub ts_us: i64,
    pub width: u32,
    pub height: u32,
    pub format: FrameFormat,
}

impl FrameMeta {
    const EMPTY: FrameMeta = FrameMeta {
        seq: 0,
        ts_us: 0,
        width: 0,
        height: 0,
        format: FrameFormat::Jpeg,
    };
}

/// A frame borrowed from the ring while its lock is held.
#[derive(Debug, Clone, Copy)]
pub struct FrameRef<'a> {
    pub meta: &'a FrameMeta,
    pub bytes: &'a [u8],
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RingError {
    #[error("ring budget invalid: {0}")]
    BadConfig(&'static str),
    #[error("cannot reserve {bytes} bytes for the ring")]
    Reserve { bytes: usize },
    #[error("empty frame refused")]
    Empty,
    #[error("frame of {len} bytes exceeds the ring's whole budget of {max} bytes")]
    TooLarge { len: usize, max: usize },
    #[error("frame timestamp {ts_us} us is earlier than the newest frame's {newest_us} us")]
    OutOfOrder { ts_us: i64, newest_us: i64 },
}

/// Counters and fill level, read in one lock.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct RingStats {
    pub len: usize,
    pub bytes_used: usize,
    pub capacity_frames: usize,
    pub capacity_bytes: usize,
    pub oldest_ts_us: Option<i64>,
    pub newest_ts_us: Option<i64>,
    pub pushed: u64,
    pub refused: u64,
    pub evicted_capacity: u64,
    pub evicted_bytes: u64,
    pub evicted_age: u64,
}

#[derive(Debug, Clone, Copy)]
struct Slot {
    meta: FrameMeta,
    /// Logical start of the payload; physical start is `lstart % capacity_bytes`.
    lstart: u64,
    len: usize,
}

impl Slot {
    const EMPTY: Slot = Slot {
        meta: FrameMeta::EMPTY,
        lstart: 0,
        len: 0,
    };
}

#[derive(Debug)]
struct Inner {
    data: Box<[u8]>,
    slots: Box<[Slot]>,
    head: usize,
    len: usize,
    /// Logical end of the newest payload.
    write_l: u64,
    bytes_used: usize,
    stats: RingStats,
}

#[derive(Clone, Copy)]
enum Eviction {
    Capacity,
    Bytes,
    Age,
}

impl Inner {
    fn slot(&self, i: usize) -> &Slot {
        &self.slots[(self.head + i) % self.slots.len()]
    }

    fn oldest(&self) -> Option<&Slot> {
        (self.len > 0).then(|| self.slot(0))
    }

    fn newest(&self) -> Option<&Slot> {
        (self.len > 0).then(|| self.slot(self.len - 1))
    }

    fn pop_oldest(&mut self, why: Eviction) {
        let len = self.slots[self.head].len;
        self.bytes_used -= len;
        self.head = (self.head + 1) % self.slots.len();
        self.len -= 1;
        match why {
            Eviction::Capacity => self.stats.evicted_capacity += 1,
            Eviction::Bytes => self.stats.evicted_bytes += 1,
            Eviction::Age => self.stats.evicted_age += 1,
        }
    }

    fn payload(&self, slot: &Slot) -> &[u8] {
        let start = (slot.lstart % self.data.len() as u64) as usize;
        &self.data[start..start + slot.len]
    }

    fn frame(&self, i: usize) -> FrameRef<'_> {
        let slot = self.slot(i);
        FrameRef {
            meta: &slot.meta,
            bytes: self.payload(slot),
        }
    }
}

/// A camera's bounded frame store. See the module docs for the eviction rules.
#[derive(Debug)]
pub struct FrameRing {
    cfg: RingConfig,
    inner: Mutex<Inner>,
}

impl FrameRing {
    /// Reserve the whole budget now. The payload arena is written once so its pages are
    /// committed at start: a board that cannot hold the configured rings finds out at
    /// boot, not an hour later from the OOM killer.
    pub fn new(cfg: RingConfig) -> Result<Self, RingError> {
        if cfg.frames == 0 {
            return Err(RingError::BadConfig("frames must be > 0"));
        }
        if cfg.max_bytes == 0 {
            return Err(RingError::BadConfig("max_bytes must be > 0"));
        }
        let mut data = Vec::new();
        data.try_reserve_exact(cfg.max_bytes)
            .map_err(|_| RingError::Reserve {
                bytes: cfg.max_bytes,
            })?;
        data.resize(cfg.max_bytes, 0u8);
        let mut slots = Vec::new();
        slots
            .try_reserve_exact(cfg.frames)
            .map_err(|_| RingError::Reserve {
                bytes: cfg.frames * std::mem::size_of::<Slot>(),
            })?;
        slots.resize(cfg.frames, Slot::EMPTY);
        Ok(Self {
            cfg,
            inner: Mutex::new(Inner {
                data: data.into_boxed_slice(),
                slots: slots.into_boxed_slice(),
                head: 0,
                len: 0,
                write_l: 0,
                bytes_used: 0,
                stats: RingStats {
                    capacity_frames: cfg.frames,
                    capacity_bytes: cfg.max_bytes,
                    ..RingStats::default()
                },
            }),
        })
    }

    pub fn config(&self) -> RingConfig {
        self.cfg
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // Every mutation completes before any code that can panic runs, so the state
        // behind a poisoned lock is still consistent.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Store a frame, evicting what the budget requires. Returns how many frames were
    /// evicted. No heap allocation happens here.
    pub fn push(&self, meta: FrameMeta, payload: &[u8]) -> Result<usize, RingError> {
        let len = payload.len();
        let cap = self.cfg.max_bytes;
        let mut inner = self.lock();
        let refused = if len == 0 {
            Some(RingError::Empty)
        } else if len > cap {
            Some(RingError::TooLarge { len, max: cap })
        } else {
            match inner.newest() {
                Some(n) if meta.ts_us < n.meta.ts_us => Some(RingError::OutOfOrder {
                    ts_us: meta.ts_us,
                    newest_us: n.meta.ts_us,
                }),
                _ => None,
            }
        };
        if let Some(e) = refused {
            inner.stats.refused += 1;
            return Err(e);
        }

        let before = inner.len;
        let max_age_us = i64::try_from(self.cfg.max_age.as_micros()).unwrap_or(i64::MAX);
        let cutoff = meta.ts_us.saturating_sub(max_age_us);
        while inner.oldest().is_some_and(|o| o.meta.ts_us < cutoff) {
            inner.pop_oldest(Eviction::Age);
        }
        if inner.len == inner.slots.len() {
            inner.pop_oldest(Eviction::Capacity);
        }

        let cap64 = cap as u64;
        let mut lstart = inner.write_l;
        let phys = (lstart % cap64) as usize;
        if phys + len > cap {
            // Does not fit before the end of the arena: skip the tail and wrap.
            lstart += (cap - phys) as u64;
        }
        let lend = lstart + len as u64;
        let floor = lend.saturating_sub(cap64);
        while inner.oldest().is_some_and(|o| o.lstart < floor) {
            inner.pop_oldest(Eviction::Bytes);
        }

        let start = (lstart % cap64) as usize;
        inner.data[start..start + len].copy_from_slice(payload);
        let idx = (inner.head + inner.len) % inner.slots.len();
        inner.slots[idx] = Slot { meta, lstart, len };
        inner.len += 1;
        inner.write_l = lend;
        inner.bytes_used += len;
        inner.stats.pushed += 1;
        Ok(before + 1 - inner.len)
    }

    pub fn len(&self) -> usize {
        self.lock().len
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Sum of the payload lengths held (not counting the tail skipped at a wrap).
    pub fn bytes_used(&self) -> usize {
        self.lock().bytes_used
    }

    pub fn oldest_ts(&self) -> Option<i64> {
        self.lock().oldest().map(|s| s.meta.ts_us)
    }

    pub fn newest_ts(&self) -> Option<i64> {
        self.lock().newest().map(|s| s.meta.ts_us)
    }

    pub fn stats(&self) -> RingStats {
        let inner = self.lock();
        RingStats {
            len: inner.len,
            bytes_used: inner.bytes_used,
            oldest_ts_us: inner.oldest().map(|s| s.meta.ts_us),
            newest_ts_us: inner.newest().map(|s| s.meta.ts_us),
            ..inner.stats
        }
    }

    /// Drop every frame; the reserved memory stays reserved.
    pub fn clear(&self) {
        let mut inner = self.lock();
        inner.len = 0;
        inner.head = 0;
        inner.bytes_used = 0;
    }

    /// Run `f` on frame `i` (0 = oldest) while the ring is locked. Keep `f` short: the
    /// capture thread waits for it.
    pub fn with_frame<R>(&self, i: usize, f: impl FnOnce(FrameRef<'_>) -> R) -> Option<R> {
        let inner = self.lock();
        (i < inner.len).then(|| f(inner.frame(i)))
    }

    /// Run `f` on the newest frame while the ring is locked.
    pub fn with_newest<R>(&self, f: impl FnOnce(FrameRef<'_>) -> R) -> Option<R> {
        let inner = self.lock();
        let n = inner.len;
        (n > 0).then(|| f(inner.frame(n - 1)))
    }

    /// Metadata of the frames `sample(n)` would return, oldest first.
    pub fn sample_meta(&self, n: usize) -> Vec<FrameMeta> {
        let inner = self.lock();
        linspace_indices(inner.len, n)
            .map(|i| inner.slot(i).meta)
            .collect()
    }

    /// As [`FrameRing::sample_into`], over only the frames at or after `since_ts_us`: the
    /// last few seconds before now, for a clip.
    pub fn sample_since_into(&self, n: usize, since_ts_us: i64, out: &mut FrameBatch) -> usize {
        out.clear();
        let inner = self.lock();
        // Timestamps are non-decreasing, so the window is a suffix: find its start.
        let (mut lo, mut hi) = (0, inner.len);
        while lo < hi {
            let mid = (lo + hi) / 2;
            if inner.slot(mid).meta.ts_us < since_ts_us {
                lo = mid + 1;
            } else {
                hi = mid;
            }
        }
        for i in linspace_indices(inner.len - lo, n) {
            let f = inner.frame(lo + i);
            out.push(*f.meta, f.bytes);
        }
        out.len()
    }

    /// Copy `n` evenly spaced frames (see [`linspace_indices`]) into `out`, replacing its
    /// contents, under one lock so they form a consistent window. Returns how many were
    /// copied (0 when the ring is empty). `out` keeps its capacity across calls, so a
    /// reader that reuses it does not allocate either.
    pub fn sample_into(&self, n: usize, out: &mut FrameBatch) -> usize {
        out.clear();
        let inner = self.lock();
        for i in linspace_indices(inner.len, n) {
            let f = inner.frame(i);
            out.push(*f.meta, f.bytes);
        }
        out.len()
    }

    /// Copy, oldest first, up to `max` consecutive frames for a reader that follows the
    /// ring (a recording): frames from history position `from` on (the n-th frame ever
    /// pushed has position n - 1; positions survive eviction and [`FrameRing::clear`]),
    /// skipping any earlier than `since_ts_us`. Returns the position to pass next time and
    /// how many frames were evicted before the reader got to them.
    pub fn copy_from_into(
        &self,
        from: u64,
        since_ts_us: i64,
        max: usize,
        out: &mut FrameBatch,
    ) -> (u64, u64) {
        out.clear();
        let inner = self.lock();
        let first = inner.stats.pushed - inner.len as u64;
        let lost = first.saturating_sub(from);
        let mut i = from.saturating_sub(first) as usize;
        while i < inner.len && inner.slot(i).meta.ts_us < since_ts_us {
            i += 1;
        }
        let end = inner.len.min(i + max);
        for j in i..end {
            let f = inner.frame(j);
            out.push(*f.meta, f.bytes);
        }
        (first + end.max(i) as u64, lost)
    }
}

/// Indices numpy's `linspace(0, len - 1, n).astype(int)` gives, computed the same way
/// (`i * step` in f64, the last one pinned to `len - 1`) so samples match the Python
/// reference frame for frame. Empty when `len` or `n` is 0; repeats when `n > len`.
pub fn linspace_indices(len: usize, n: usize) -> impl Iterator<Item = usize> {
    let n = if len == 0 { 0 } else { n };
    let step = if n > 1 {
        (len - 1) as f64 / (n - 1) as f64
    } else {
        0.0
    };
    (0..n).map(move |i| {
        if n > 1 && i == n - 1 {
            len - 1
        } else {
            (i as f64 * step) as usize
        }
    })
}

/// Frames copied out of a ring: reusable storage for readers.
#[derive(Debug, Default, Clone)]
pub struct FrameBatch {
    metas: Vec<FrameMeta>,
    ranges: Vec<Range<usize>>,
    data: Vec<u8>,
}

impl FrameBatch {
    /// Room for `frames` frames of `bytes` bytes in all before any reallocation.
    pub fn with_capacity(frames: usize, bytes: usize) -> Self {
        Self {
            metas: Vec::with_capacity(frames),
            ranges: Vec::with_capacity(frames),
            data: Vec::with_capacity(bytes),
        }
    }

    /// `frames` copies of one JPEG of `width` x `height`, 30 fps apart: a still scene as a
    /// clip window (self-test and benchmark inputs).
    pub fn still_jpeg(jpeg: &[u8], width: u32, height: u32, frames: u64) -> Self {
        let mut batch = Self::with_capacity(frames as usize, jpeg.len() * frames as usize);
        for seq in 0..frames {
            let meta = FrameMeta {
                seq,
                ts_us: seq as i64 * 33_333,
                width,
                height,
                format: FrameFormat::Jpeg,
            };
            batch.push(meta, jpeg);
        }
        batch
    }

    /// Make this a copy of `other`, reusing this batch's storage (no allocation once it
    /// has grown to the size of the batches it carries).
    pub fn copy_from(&mut self, other: &FrameBatch) {
        self.clear();
        self.metas.extend_from_slice(&other.metas);
        self.ranges.extend_from_slice(&other.ranges);
        self.data.extend_from_slice(&other.data);
    }

    pub fn clear(&mut self) {
        self.metas.clear();
        self.ranges.clear();
        self.data.clear();
    }

    pub fn push(&mut self, meta: FrameMeta, bytes: &[u8]) {
        let start = self.data.len();
        self.data.extend_from_slice(bytes);
        self.metas.push(meta);
        self.ranges.push(start..self.data.len());
    }

    pub fn len(&self) -> usize {
        self.metas.len()
    }

    pub fn is_empty(&self) -> bool {
        self.metas.is_empty()
    }

    pub fn get(&self, i: usize) -> Option<(&FrameMeta, &[u8])> {
        Some((self.metas.get(i)?, &self.data[self.ranges.get(i)?.clone()]))
    }

    pub fn iter(&self) -> impl Iterator<Item = (&FrameMeta, &[u8])> {
        self.metas
            .iter()
            .zip(&self.ranges)
            .map(|(m, r)| (m, &self.data[r.clone()]))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta(seq: u64, ts_us: i64) -> FrameMeta {
        FrameMeta {
            seq,
            ts_us,
            width: 1,
            height: 1,
            format: FrameFormat::Raw(*b"TEST"),
        }
    }

    #[test]
    fn wrap_keeps_payloads_contiguous_and_intact() {
        let ring = FrameRing::new(RingConfig {
            frames: 100,
            max_bytes: 1000,
            max_age: Duration::from_secs(3600),
        })
        .unwrap();
        for seq in 0..50u64 {
            let len = 100 + (seq as usize * 37) % 300;
            let payload = vec![seq as u8; len];
            ring.push(meta(seq, seq as i64), &payload).unwrap();
            assert!(ring.bytes_used() <= 1000);
            for i in 0..ring.len() {
                ring.with_frame(i, |f| {
                    assert!(f.bytes.iter().all(|&b| b == f.meta.seq as u8));
                })
                .unwrap();
            }
            assert_eq!(ring.with_newest(|f| f.meta.seq), Some(seq));
        }
    }

    #[test]
    fn sample_since_takes_the_window_suffix() {
        let ring = FrameRing::new(RingConfig {
            frames: 100,
            max_bytes: 10_000,
            max_age: Duration::from_secs(3600),
        })
        .unwrap();
        for seq in 0..20u64 {
            ring.push(meta(seq, seq as i64 * 100), &[seq as u8; 10])
                .unwrap();
        }
        let mut b = FrameBatch::default();
        assert_eq!(ring.sample_since_into(3, 1_500, &mut b), 3);
        let seqs: Vec<u64> = b.iter().map(|(m, _)| m.seq).collect();
        assert_eq!(seqs, [15, 17, 19]);
        assert_eq!(ring.sample_since_into(3, 99_999, &mut b), 0);
    }

    #[test]
    fn whole_budget_frame_evicts_everything_else() {
        let ring = FrameRing::new(RingConfig {
            frames: 10,
            max_bytes: 100,
            max_age: Duration::from_secs(10),
        })
        .unwrap();
        ring.push(meta(0, 0), &[1; 30]).unwrap();
        ring.push(meta(1, 1), &[2; 30]).unwrap();
        assert_eq!(ring.push(meta(2, 2), &[3; 100]), Ok(2));
        assert_eq!((ring.len(), ring.bytes_used()), (1, 100));
    }
}
