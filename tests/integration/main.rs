//! nvr-edge's integration tests, one binary: each file is the tests of one part, through
//! the library's public API or the built `nvr-edge` binary. One binary links tract, SQLite
//! and jemalloc once instead of once per file (`tests/ring_alloc.rs` stays apart: it
//! counts the allocations of its own thread and wants nothing else running in its
//! process). Run one part with `cargo test --release --test integration <file>::`.

mod appliance;
mod browser;
mod capture;
mod common;
mod config_cli;
mod config_props;
mod console;
mod disk_full;
mod enroll;
mod faces;
mod household;
mod household_cli;
mod http;
mod identity;
mod memory;
mod motion;
mod mqtt;
mod plates;
mod recording;
mod ring;
mod selftest_cli;
mod xclip;
