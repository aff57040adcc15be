//! Memory accounting from jemalloc itself, not estimates.
//!
//! Each camera gets its own jemalloc arena: its ring is allocated inside
//! [`Arena::scope`] and its capture thread is bound to the arena, so the arena's
//! `small.allocated + large.allocated` is exactly that camera's heap. Everything else
//! (models, gallery, control plane) stays in the automatic arenas and is reported as
//! the process total minus the cameras.
//!
//! Arenas are never destroyed: `arena.<i>.destroy` would free a ring still in use, and
//! a camera's arena lives as long as the process, like the camera.

use nvr_jemalloc::SizeStat;
use serde::Serialize;
use tikv_jemalloc_ctl::{epoch, stats};

#[derive(Debug, thiserror::Error)]
pub enum MemoryError {
    #[error("jemalloc mallctl {name}: {message}")]
    Ctl { name: String, message: String },
}

fn ctl_err(name: &str) -> impl FnOnce(tikv_jemalloc_ctl::Error) -> MemoryError + '_ {
    move |e| MemoryError::Ctl {
        name: name.trim_end_matches('\0').to_string(),
        message: e.to_string(),
    }
}

/// Refresh jemalloc's cached statistics; every read below does this first.
pub fn advance_epoch() -> Result<(), MemoryError> {
    epoch::advance().map(drop).map_err(ctl_err("epoch"))
}

/// A dedicated jemalloc arena.
#[derive(Debug)]
pub struct Arena {
    index: u32,
    small: SizeStat,
    large: SizeStat,
}

impl Arena {
    pub fn create() -> Result<Self, MemoryError> {
        let index = nvr_jemalloc::create_arena().map_err(ctl_err("arenas.create"))?;
        // jemalloc only knows a new arena's statistics after the next epoch refresh.
        advance_epoch()?;
        let stat = |class: &str| -> Result<SizeStat, MemoryError> {
            let name = format!("stats.arenas.{index}.{class}.allocated");
            SizeStat::new(&name).map_err(ctl_err(&name))
        };
        Ok(Self {
            index,
            small: stat("small")?,
            large: stat("large")?,
        })
    }

    pub fn index(&self) -> u32 {
        self.index
    }

    /// Send every later allocation of the calling thread to this arena.
    pub fn bind_current_thread(&self) -> Result<(), MemoryError> {
        set_thread_arena(self.index)
    }

    /// Run `f` with the calling thread's allocations going to this arena, then restore
    /// the thread's previous arena (also when `f` panics).
    pub fn scope<R>(&self, f: impl FnOnce() -> R) -> Result<R, MemoryError> {
        struct Restore(u32);
        impl Drop for Restore {
            fn drop(&mut self) {
                // Nothing sensible to do if this fails: the thread keeps the camera's
                // arena, which only misattributes later allocations.
                let _ = set_thread_arena(self.0);
            }
        }
        let previous = nvr_jemalloc::thread_arena().map_err(ctl_err("thread.arena"))?;
        self.bind_current_thread()?;
        let _restore = Restore(previous);
        Ok(f())
    }

    /// Bytes currently allocated from this arena.
    pub fn allocated_bytes(&self) -> Result<u64, MemoryError> {
        advance_epoch()?;
        let small = self.small.read().map_err(ctl_err("small.allocated"))?;
        let large = self.large.read().map_err(ctl_err("large.allocated"))?;
        Ok((small + large) as u64)
    }
}

fn set_thread_arena(index: u32) -> Result<(), MemoryError> {
    nvr_jemalloc::set_thread_arena(index).map_err(ctl_err("thread.arena"))
}

/// Process-wide jemalloc figures, bytes.
#[derive(Debug, Clone, Copy, Serialize, PartialEq, Eq)]
pub struct ProcessMemory {
    /// Handed out to the program.
    pub allocated: u64,
    /// In pages jemalloc has in use (allocated plus fragmentation).
    pub active: u64,
    /// Physically resident pages jemalloc maps, including its metadata.
    pub resident: u64,
    /// Unmapped address space kept for reuse (not resident).
    pub retained: u64,
}

pub fn process_memory() -> Result<ProcessMemory, MemoryError> {
    advance_epoch()?;
    Ok(ProcessMemory {
        allocated: stats::allocated::read().map_err(ctl_err("stats.allocated"))? as u64,
        active: stats::active::read().map_err(ctl_err("stats.active"))? as u64,
        resident: stats::resident::read().map_err(ctl_err("stats.resident"))? as u64,
        retained: stats::retained::read().map_err(ctl_err("stats.retained"))? as u64,
    })
}

/// Bytes the current thread has allocated and not freed since it started (jemalloc's
/// per-thread counters). The difference around a call is what the call kept: loading a
/// model on this thread, for instance.
pub fn thread_net_allocated() -> Result<i64, MemoryError> {
    let a = tikv_jemalloc_ctl::thread::allocatedp::read()
        .map_err(ctl_err("thread.allocatedp"))?
        .get();
    let d = tikv_jemalloc_ctl::thread::deallocatedp::read()
        .map_err(ctl_err("thread.deallocatedp"))?
        .get();
    Ok(a as i64 - d as i64)
}

/// Run `f` and return its result with the bytes it left allocated on this thread.
pub fn kept_by<R>(f: impl FnOnce() -> R) -> (R, Option<i64>) {
    let before = thread_net_allocated().ok();
    let r = f();
    let after = thread_net_allocated().ok();
    (r, before.zip(after).map(|(b, a)| a - b))
}

/// The kernel's view of the process: resident now and its peak (`VmRSS`, `VmHWM` of
/// `/proc/self/status`), bytes. Includes what jemalloc does not see (file mappings, stacks,
/// page tables); `None` off Linux.
pub fn os_resident() -> Option<(u64, u64)> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let field = |key: &str| -> Option<u64> {
        let line = status.lines().find(|l| l.starts_with(key))?;
        let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
        Some(kib * 1024)
    };
    Some((field("VmRSS:")?, field("VmHWM:")?))
}

pub const MIB: f64 = 1024.0 * 1024.0;
