//! The few jemalloc `mallctl`s nvr-edge's memory accounting needs that
//! `tikv-jemalloc-ctl` only offers as `unsafe` raw reads and writes: creating an arena,
//! reading and setting the calling thread's arena, and reading a `size_t` statistic by
//! its MIB. Each is typed here once, so the application has no `unsafe`.
//!
//! The process must run jemalloc as its global allocator (nvr-edge does).

use tikv_jemalloc_ctl::raw;

pub use tikv_jemalloc_ctl::Error;

/// A statistic's name resolved once (`stats.arenas.<i>.small.allocated`): reads by MIB
/// skip the name lookup.
#[derive(Debug, Clone, Copy)]
pub struct SizeStat([usize; 5]);

impl SizeStat {
    /// Resolve `name` (without the trailing NUL), which must name a `size_t` statistic of
    /// five components (`stats.arenas.<i>.<class>.allocated`; a new arena's exist from the
    /// epoch after its creation).
    pub fn new(name: &str) -> Result<Self, Error> {
        let name = format!("{name}\0");
        let mut mib = [0usize; 5];
        raw::name_to_mib(name.as_bytes(), &mut mib)?;
        Ok(SizeStat(mib))
    }

    pub fn read(&self) -> Result<usize, Error> {
        // SAFETY: `new` resolved a `size_t` statistic; jemalloc writes exactly a usize.
        unsafe { raw::read_mib(&self.0) }
    }
}

/// Create a new arena; returns its index.
pub fn create_arena() -> Result<u32, Error> {
    // SAFETY: `arenas.create` reads back an `unsigned`, which is u32 on every target
    // jemalloc supports.
    unsafe { raw::read(b"arenas.create\0") }
}

/// The calling thread's arena.
pub fn thread_arena() -> Result<u32, Error> {
    // SAFETY: `thread.arena` is an `unsigned`.
    unsafe { raw::read(b"thread.arena\0") }
}

/// Send the calling thread's later allocations to arena `index` (jemalloc refuses an
/// index that does not exist).
pub fn set_thread_arena(index: u32) -> Result<(), Error> {
    // SAFETY: `thread.arena` takes an `unsigned`.
    unsafe { raw::write(b"thread.arena\0", index) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[global_allocator]
    static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

    #[test]
    fn a_new_arena_counts_what_the_thread_allocates_in_it() {
        let before = thread_arena().unwrap();
        let arena = create_arena().unwrap();
        assert_ne!(arena, before);
        // A new arena's statistics exist from the next epoch on.
        tikv_jemalloc_ctl::epoch::advance().unwrap();
        let stat = SizeStat::new(&format!("stats.arenas.{arena}.large.allocated")).unwrap();
        set_thread_arena(arena).unwrap();
        let big = vec![1u8; 4 << 20];
        set_thread_arena(before).unwrap();
        tikv_jemalloc_ctl::epoch::advance().unwrap();
        assert!(stat.read().unwrap() >= 4 << 20, "{}", stat.read().unwrap());
        drop(big);
        assert!(set_thread_arena(u32::MAX).is_err());
    }
}
