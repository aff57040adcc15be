//! `nvr-edge console`: attach this terminal to the running recorder's console over its
//! unix socket.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use nvr_edge::config::Config;

pub fn run(cfg: &Config, socket: Option<&Path>) -> ExitCode {
    let path = socket.map_or_else(|| PathBuf::from(&cfg.console.socket), Path::to_path_buf);
    match nvr_edge::console::attach(&path) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!(
                "error: console socket {}: {e} (is `nvr-edge run` running, and are you root or in its group?)",
                path.display()
            );
            ExitCode::FAILURE
        }
    }
}
