//! `nvr-edge run`: the recorder, until SIGINT/SIGTERM.

use std::process::ExitCode;
use std::sync::Arc;

use nvr_edge::clock::SystemClock;
use nvr_edge::config::Config;

pub fn run(cfg: &Config) -> ExitCode {
    match nvr_edge::service::run(cfg, Arc::new(SystemClock)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: nvr-edge run: {}", nvr_edge::error_chain(&e));
            ExitCode::FAILURE
        }
    }
}
