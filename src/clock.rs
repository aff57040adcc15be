//! Time, injected: the capture loop, pacing and liveness figures read the clock through
//! [`Clock`], so tests drive them deterministically instead of sleeping.
//!
//! Frame timestamps use the monotonic clock in microseconds, the same base V4L2 drivers
//! stamp buffers with, so frames from real and synthetic cameras order the same way and
//! a wall-clock step (NTP, RTC battery) never reorders a ring.

use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

pub trait Clock: Send + Sync + 'static {
    /// Monotonic time, microseconds (CLOCK_MONOTONIC on the real clock).
    fn mono_us(&self) -> i64;
    /// Wall time, microseconds since the Unix epoch.
    fn wall_us(&self) -> i64;
    fn sleep(&self, d: Duration);
}

/// The operating system's clocks.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

fn timespec_us(ts: rustix::time::Timespec) -> i64 {
    ts.tv_sec.saturating_mul(1_000_000) + ts.tv_nsec / 1_000
}

impl Clock for SystemClock {
    fn mono_us(&self) -> i64 {
        timespec_us(rustix::time::clock_gettime(
            rustix::time::ClockId::Monotonic,
        ))
    }
    fn wall_us(&self) -> i64 {
        timespec_us(rustix::time::clock_gettime(rustix::time::ClockId::Realtime))
    }
    fn sleep(&self, d: Duration) {
        std::thread::sleep(d)
    }
}

/// A clock that only moves when told to (or when something sleeps on it).
#[derive(Debug, Default)]
pub struct ManualClock {
    mono: AtomicI64,
    wall: AtomicI64,
}

impl ManualClock {
    pub fn new(mono_us: i64, wall_us: i64) -> Self {
        Self {
            mono: AtomicI64::new(mono_us),
            wall: AtomicI64::new(wall_us),
        }
    }
    pub fn advance(&self, d: Duration) {
        let us = d.as_micros() as i64;
        self.mono.fetch_add(us, Ordering::SeqCst);
        self.wall.fetch_add(us, Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    fn mono_us(&self) -> i64 {
        self.mono.load(Ordering::SeqCst)
    }
    fn wall_us(&self) -> i64 {
        self.wall.load(Ordering::SeqCst)
    }
    fn sleep(&self, d: Duration) {
        self.advance(d)
    }
}
