//! nvr-edge: a smart video recorder for small aarch64 boards.
//!
//! The map (data flow, threads, ownership, invariants, one room per concern) is
//! `docs/architecture.md`. Composition happens in [`service`]; the command line lives in
//! the binary (`src/cmds/`), so nothing here knows clap. Architecture-specific kernels
//! are in `crates/linalg`.

pub mod analysis;
pub mod capture;
pub mod clock;
pub mod config;
pub mod console;
pub mod events;
pub mod fsio;
pub mod household;
pub mod http;
pub mod inference;
pub mod memory;
pub mod motion;
pub mod mqtt;
pub mod pipeline;
pub mod recording;
pub mod ring;
pub mod secret;
pub mod selftest;
pub mod service;
pub mod stamp;
pub mod status;
pub mod store;
pub mod telemetry;
pub mod tls;
pub mod users;

/// An error and its causes on one line (`a: b: c`), the form logs and the console show.
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut msg = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        msg = format!("{msg}: {c}");
        cause = c.source();
    }
    msg
}

// jemalloc everywhere (binary, tests, benches): musl's allocator is slow, and the
// per-camera memory figures come from jemalloc's own statistics.
#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;
